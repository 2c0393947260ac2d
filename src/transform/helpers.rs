//! The template helpers of SPEC section 5: json, default, upper, lower,
//! truncate, join, date, money, slack_escape.
//!
//! Helpers are strict like the templates: a missing value is a render error
//! naming it, except in `default`, whose whole point is the fallback.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

fn err(msg: String) -> RenderError {
    RenderErrorReason::Other(msg).into()
}

/// The value of parameter `i`, or an error naming what is missing.
fn param<'a>(h: &'a Helper<'_>, i: usize, helper: &str) -> Result<&'a Value, RenderError> {
    let p = h
        .param(i)
        .ok_or_else(|| err(format!("helper {helper} needs parameter {}", i + 1)))?;
    if p.is_value_missing() {
        let name = p
            .relative_path()
            .cloned()
            .unwrap_or_else(|| format!("parameter {}", i + 1));
        return Err(err(format!("{helper}: missing value \"{name}\"")));
    }
    Ok(p.value())
}

fn optional<'a>(h: &'a Helper<'_>, i: usize) -> Option<&'a Value> {
    h.param(i)
        .filter(|p| !p.is_value_missing())
        .map(|p| p.value())
}

/// Text of a scalar as a template shows it (strings without quotes).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The body of a value helper.
type HelperFn = fn(&Helper<'_>) -> Result<Value, RenderError>;

/// A helper computing a value from its parameters (composable in
/// subexpressions).
struct ValueHelper(HelperFn);

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }
}

/// `{{json value}}`: the value as JSON text, written as is (never escaped,
/// so it is valid JSON inside a template file too).
struct Json;

impl HelperDef for Json {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = param(h, 0, "json")?;
        out.write(&v.to_string())?;
        Ok(())
    }
}

fn default(h: &Helper<'_>) -> Result<Value, RenderError> {
    let fallback = h.param(1).map(|p| p.value().clone()).ok_or_else(|| {
        err("helper default needs a fallback: {{default value \"fallback\"}}".into())
    })?;
    Ok(match optional(h, 0) {
        None | Some(Value::Null) => fallback,
        Some(Value::String(s)) if s.is_empty() => fallback,
        Some(v) => v.clone(),
    })
}

fn upper(h: &Helper<'_>) -> Result<Value, RenderError> {
    Ok(Value::String(text(param(h, 0, "upper")?).to_uppercase()))
}

fn lower(h: &Helper<'_>) -> Result<Value, RenderError> {
    Ok(Value::String(text(param(h, 0, "lower")?).to_lowercase()))
}

/// Shortens `s` to at most `max` characters, the last being "…" when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn truncate(h: &Helper<'_>) -> Result<Value, RenderError> {
    let s = text(param(h, 0, "truncate")?);
    let n = param(h, 1, "truncate")?;
    let max = number(n).filter(|n| *n >= 1.0).ok_or_else(|| {
        err(format!(
            "truncate: length must be a positive number, found {n}"
        ))
    })?;
    Ok(Value::String(truncate_chars(&s, max as usize)))
}

fn join(h: &Helper<'_>) -> Result<Value, RenderError> {
    let v = param(h, 0, "join")?;
    let sep = optional(h, 1).map(text).unwrap_or_else(|| ", ".to_owned());
    let items: Vec<String> = match v {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    };
    Ok(Value::String(items.join(&sep)))
}

/// Parses ClickUp millisecond timestamps (numbers or numeric strings) and
/// RFC 3339 strings.
pub fn parse_date(v: &Value) -> Option<time::OffsetDateTime> {
    if let Some(ms) = number(v) {
        let nanos = (ms as i128).checked_mul(1_000_000)?;
        return time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok();
    }
    let s = v.as_str()?;
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn date(h: &Helper<'_>) -> Result<Value, RenderError> {
    let v = param(h, 0, "date")?;
    let d = parse_date(v).ok_or_else(|| {
        err(format!(
            "date: {v} is not a millisecond timestamp or an RFC 3339 date"
        ))
    })?;
    let out = match optional(h, 1) {
        None => d.format(&time::format_description::well_known::Rfc3339),
        Some(f) => {
            let f = text(f);
            let desc = time::format_description::parse_borrowed::<2>(&f)
                .map_err(|e| err(format!("date: bad format \"{f}\": {e}")))?;
            d.format(&desc)
        }
    }
    .map_err(|e| err(format!("date: {e}")))?;
    Ok(Value::String(out))
}

/// Currencies without minor units (Stripe's list).
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// Currencies with three decimals.
const THREE_DECIMAL: &[&str] = &["BHD", "JOD", "KWD", "OMR", "TND"];

/// Formats an amount in minor units: `money(12345, "usd")` is "123.45 USD".
pub fn format_money(minor: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let decimals: u32 = if ZERO_DECIMAL.contains(&code.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&code.as_str()) {
        3
    } else {
        2
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{abs} {code}");
    }
    let unit = 10u64.pow(decimals);
    format!(
        "{sign}{}.{:0width$} {code}",
        abs / unit,
        abs % unit,
        width = decimals as usize
    )
}

fn money(h: &Helper<'_>) -> Result<Value, RenderError> {
    let amount = param(h, 0, "money")?;
    let currency = text(param(h, 1, "money")?);
    let minor = match amount {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        err(format!(
            "money: amount must be whole minor units, found {amount}"
        ))
    })?;
    Ok(Value::String(format_money(minor, &currency)))
}

/// Escapes the three characters Slack's mrkdwn reserves.
pub fn slack_escape_str(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack_escape(h: &Helper<'_>) -> Result<Value, RenderError> {
    Ok(Value::String(slack_escape_str(&text(param(
        h,
        0,
        "slack_escape",
    )?))))
}

/// Registers every helper on `registry`.
pub fn register(registry: &mut Handlebars<'static>) {
    registry.register_helper("json", Box::new(Json));
    let value_helpers: [(&str, HelperFn); 8] = [
        ("default", default),
        ("upper", upper),
        ("lower", lower),
        ("truncate", truncate),
        ("join", join),
        ("date", date),
        ("money", money),
        ("slack_escape", slack_escape),
    ];
    for (name, f) in value_helpers {
        registry.register_helper(name, Box::new(ValueHelper(f)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(tpl: &str, data: Value) -> Result<String, String> {
        let mut r = Handlebars::new();
        r.set_strict_mode(true);
        r.register_escape_fn(handlebars::no_escape);
        register(&mut r);
        r.render_template(tpl, &data).map_err(|e| e.to_string())
    }

    #[test]
    fn helpers_render_as_documented() {
        let data = json!({
            "s": "Mixed Case", "n": 12345, "ns": "12345", "cur": "usd", "jpy": "JPY", "kwd": "kwd",
            "list": ["a", "b", 3], "ms": "1642736073330", "iso": "2022-01-21T03:34:33Z",
            "html": "<b>&</b>", "long": "abcdefghij", "empty": "", "nul": null, "obj": {"k": "v \"q\""}
        });
        let cases: &[(&str, &str)] = &[
            ("{{upper s}}", "MIXED CASE"),
            ("{{lower s}}", "mixed case"),
            ("{{money n cur}}", "123.45 USD"),
            ("{{money ns cur}}", "123.45 USD"),
            ("{{money n jpy}}", "12345 JPY"),
            ("{{money n kwd}}", "12.345 KWD"),
            ("{{money -150 cur}}", "-1.50 USD"),
            ("{{money 5 cur}}", "0.05 USD"),
            ("{{join list}}", "a, b, 3"),
            ("{{join list \" | \"}}", "a | b | 3"),
            ("{{date ms}}", "2022-01-21T03:34:33.33Z"),
            ("{{date iso \"[year]-[month]-[day]\"}}", "2022-01-21"),
            ("{{slack_escape html}}", "&lt;b&gt;&amp;&lt;/b&gt;"),
            ("{{truncate long 5}}", "abcd…"),
            ("{{truncate long 50}}", "abcdefghij"),
            ("{{default missing \"n/a\"}}", "n/a"),
            ("{{default empty \"n/a\"}}", "n/a"),
            ("{{default nul \"n/a\"}}", "n/a"),
            ("{{default s \"n/a\"}}", "Mixed Case"),
            ("{{json obj}}", "{\"k\":\"v \\\"q\\\"\"}"),
            ("{{json s}}", "\"Mixed Case\""),
            ("{{upper (default missing \"x\")}}", "X"),
        ];
        for (tpl, want) in cases {
            assert_eq!(render(tpl, data.clone()).as_deref(), Ok(*want), "{tpl}");
        }
    }

    #[test]
    fn missing_values_are_errors_except_in_default() {
        for tpl in [
            "{{upper missing}}",
            "{{json missing}}",
            "{{money missing \"usd\"}}",
            "{{missing}}",
            "{{a.b.c}}",
        ] {
            let e = render(tpl, json!({"a": {}})).unwrap_err();
            assert!(e.contains("missing") || e.contains("strict"), "{tpl}: {e}");
        }
        assert!(render("{{money \"12.5\" \"usd\"}}", json!({})).is_err());
        assert!(render("{{date \"yesterday\"}}", json!({})).is_err());
    }
}
