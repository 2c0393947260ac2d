//! `sources:`: who may POST to `/hooks/{name}` and how they are verified.

use super::reader::{self, MapReader};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::yaml::{Node, Pos};
use crate::transform::jsonpath::JsonPath;
use crate::verify::{
    Encoding, Field, IdentityRule, Scheme, Secret, Verifier, standard_webhooks_key,
};
use std::collections::BTreeMap;

/// Polling of ClickUp's webhook health for a team (SPEC section 3, `watch:`).
#[derive(Debug, Clone)]
pub struct Watch {
    /// The ClickUp team (workspace) id.
    pub team_id: String,
    /// The clickup target whose token is used.
    pub via: String,
    /// Whether a suspended webhook is set back to active.
    pub auto_reactivate: bool,
    /// Time between polls (`interval`, seconds; default 60).
    pub interval: std::time::Duration,
}

/// A compiled source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name, the `{source}` of `/hooks/{source}`.
    pub name: String,
    /// Signature scheme and secrets.
    pub verifier: Verifier,
    /// How its events get a type and a dedupe id.
    pub identity: IdentityRule,
    /// Optional webhook health watch (clickup sources).
    pub watch: Option<Watch>,
    /// Where it is defined, for later diagnostics.
    pub pos: Pos,
}

impl Source {
    /// The `verify:` kind, as written.
    pub fn kind(&self) -> &'static str {
        match self.verifier.scheme {
            Scheme::ClickUp => "clickup",
            Scheme::Stripe { .. } => "stripe",
            Scheme::Hmac { .. } => "hmac",
            Scheme::StandardWebhooks { .. } => "standard-webhooks",
            Scheme::Header { .. } => "header",
        }
    }
}

const KINDS: &[&str] = &["clickup", "stripe", "hmac", "standard-webhooks", "header"];

/// Compiles the `sources:` mapping.
pub fn compile(node: Option<&Node>, d: &mut Diagnostics) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let Some(node) = node else {
        return out;
    };
    for (name, key, value) in reader::entries(node, "sources", d) {
        if !reader::check_name(name, key.pos, "source name", d) {
            continue;
        }
        if let Some(s) = compile_one(name, value, d) {
            out.insert(name.to_owned(), s);
        }
    }
    out
}

/// The secrets, each checked where it is written: none may be empty, and a
/// Standard Webhooks secret must decode to its key.
fn secrets(list: Vec<(String, Pos)>, standard_webhooks: bool, d: &mut Diagnostics) -> Vec<Secret> {
    let mut out = Vec::new();
    for (s, pos) in list {
        if s.is_empty() {
            d.error(
                pos,
                "secret is empty: set it to the webhook's signing secret",
            );
        } else if let Some(e) = standard_webhooks
            .then(|| standard_webhooks_key(&s).err())
            .flatten()
        {
            // An unset ${VAR} is already reported here: its text is no key.
            if !d.has_error_at(pos) {
                d.error(pos, e.to_string());
            }
        } else {
            out.push(Secret::new(s));
        }
    }
    out
}

/// A header name, checked as HTTP defines one.
fn header_name(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let name = reader::string(node, what, d)?;
    match actix_web::http::header::HeaderName::from_bytes(name.as_bytes()) {
        Ok(_) => Some(name),
        Err(_) => {
            d.error(
                node.pos,
                format!(
                    "{what} \"{name}\" is not a valid HTTP header name: use letters, digits and '-'"
                ),
            );
            None
        }
    }
}

/// One identity field: the JSONPath form (`event`, `id`) or the header form
/// (`event_header`, `id_header`), not both.
fn field(
    r: &mut MapReader<'_>,
    path_key: &'static str,
    header_key: &'static str,
    d: &mut Diagnostics,
) -> Option<Field> {
    let by_path = r.take(path_key);
    let by_header = r.take(header_key);
    match (by_path, by_header) {
        (Some(_), Some(h)) => {
            let pos = r.key_pos(header_key).unwrap_or(h.pos);
            d.error(
                pos,
                format!(
                    "{path_key} and {header_key} are both given: keep one ({path_key} is a JSONPath in the body, {header_key} a request header)"
                ),
            );
            None
        }
        (Some(p), None) => path(p, d).map(Field::Path),
        (None, Some(h)) => header_name(h, header_key, d).map(Field::Header),
        (None, None) => None,
    }
}

/// ClickUp and Stripe name and identify their events by fixed rules: the
/// identity keys are mistakes there.
fn refuse_identity_keys(r: &mut MapReader<'_>, kind: &str, rule: &str, d: &mut Diagnostics) {
    for key in ["event", "id", "event_header", "id_header"] {
        if let Some(n) = r.take(key) {
            let pos = r.key_pos(key).unwrap_or(n.pos);
            d.error(
                pos,
                format!(
                    "{key} does not apply to verify: {kind} sources, whose rule is fixed ({rule}): remove it"
                ),
            );
        }
    }
}

fn tolerance(r: &mut MapReader<'_>, d: &mut Diagnostics) -> u64 {
    r.take("tolerance")
        .and_then(|n| reader::whole(n, "tolerance", 1, d))
        .unwrap_or(300)
}

fn compile_one(name: &str, node: &Node, d: &mut Diagnostics) -> Option<Source> {
    let mut r = MapReader::new(node, &format!("source \"{name}\""), d)?;
    let kind_node = r.require("verify", d);
    let secret_node = r.require("secret", d);
    let secret_list = secret_node
        .map(|n| reader::string_or_list(n, "secret", d))
        .unwrap_or_default();
    let kind = kind_node.and_then(|n| reader::string(n, "verify", d).map(|s| (s, n.pos)));
    let mut source = None;
    match kind.as_ref().map(|(k, p)| (k.as_str(), *p)) {
        Some(("clickup", _)) => {
            refuse_identity_keys(
                &mut r,
                "clickup",
                "type $.event; id from webhook_id, event and the history item ids",
                d,
            );
            let watch = r.take("watch").and_then(|w| compile_watch(w, d));
            source = Some((Scheme::ClickUp, IdentityRule::ClickUp, watch));
        }
        Some(("stripe", _)) => {
            refuse_identity_keys(&mut r, "stripe", "type $.type, id $.id", d);
            let tolerance_secs = tolerance(&mut r, d);
            source = Some((
                Scheme::Stripe { tolerance_secs },
                IdentityRule::Stripe,
                None,
            ));
        }
        Some(("hmac", _)) => {
            let header = r
                .require("header", d)
                .and_then(|n| header_name(n, "header", d));
            let prefix = r
                .take("prefix")
                .and_then(|n| reader::string(n, "prefix", d))
                .unwrap_or_default();
            let encoding = match r.take("encoding") {
                None => Some(Encoding::Hex),
                Some(n) => match reader::string(n, "encoding", d).as_deref() {
                    Some("hex") => Some(Encoding::Hex),
                    Some("base64") => Some(Encoding::Base64),
                    Some(other) => {
                        d.error(
                            n.pos,
                            format!("unknown encoding \"{other}\"; use hex or base64"),
                        );
                        None
                    }
                    None => None,
                },
            };
            let event = field(&mut r, "event", "event_header", d);
            let id = field(&mut r, "id", "id_header", d);
            if let (Some(header), Some(encoding)) = (header, encoding) {
                source = Some((
                    Scheme::Hmac {
                        header,
                        prefix,
                        encoding,
                    },
                    IdentityRule::Generic { event, id },
                    None,
                ));
            }
        }
        Some(("standard-webhooks", _)) => {
            let tolerance_secs = tolerance(&mut r, d);
            let event = field(&mut r, "event", "event_header", d);
            let id = field(&mut r, "id", "id_header", d);
            let event = match event {
                Some(f) => f,
                None => match JsonPath::compile("$.type") {
                    Ok(p) => Field::Path(p),
                    Err(e) => unreachable!("$.type is a JSONPath: {e}"),
                },
            };
            source = Some((
                Scheme::StandardWebhooks { tolerance_secs },
                IdentityRule::StandardWebhooks { event, id },
                None,
            ));
        }
        Some(("header", _)) => {
            let header = r
                .require("header", d)
                .and_then(|n| header_name(n, "header", d));
            let event = field(&mut r, "event", "event_header", d);
            let id = field(&mut r, "id", "id_header", d);
            if let Some(header) = header {
                source = Some((
                    Scheme::Header { header },
                    IdentityRule::Generic { event, id },
                    None,
                ));
            }
        }
        Some((other, pos)) => {
            let hint = crate::routes_file::diag::suggestion(other, KINDS, "kinds");
            d.error(
                pos,
                format!(
                    "unknown verify kind \"{other}\"{hint} (clickup, stripe, hmac, standard-webhooks or header)"
                ),
            );
        }
        None => {}
    }
    r.finish(d);
    let standard_webhooks = matches!(source, Some((Scheme::StandardWebhooks { .. }, _, _)));
    let secrets = secrets(secret_list, standard_webhooks, d);
    let (scheme, identity, watch) = source?;
    if secrets.is_empty() {
        return None;
    }
    Some(Source {
        name: name.to_owned(),
        verifier: Verifier { scheme, secrets },
        identity,
        watch,
        pos: node.pos,
    })
}

/// Compiles a JSONPath node, recording a diagnostic when it does not parse.
pub fn path(node: &Node, d: &mut Diagnostics) -> Option<JsonPath> {
    let text = reader::string(node, "a JSONPath", d)?;
    match JsonPath::compile(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            d.error(node.pos, e.to_string());
            None
        }
    }
}

fn compile_watch(node: &Node, d: &mut Diagnostics) -> Option<Watch> {
    let mut r = MapReader::new(node, "watch", d)?;
    let team_id = r
        .require("team_id", d)
        .and_then(|n| reader::string(n, "team_id", d));
    let via = r
        .require("via", d)
        .and_then(|n| reader::string(n, "via", d));
    let auto_reactivate = r
        .take("auto_reactivate")
        .and_then(|n| reader::boolean(n, "auto_reactivate", d))
        .unwrap_or(false);
    let interval = r
        .take("interval")
        .and_then(|n| reader::number(n, "interval", d))
        .map(|s| std::time::Duration::from_secs_f64(s.max(1.0)))
        .unwrap_or(std::time::Duration::from_secs(60));
    r.finish(d);
    Some(Watch {
        team_id: team_id?,
        via: via?,
        auto_reactivate,
        interval,
    })
}
