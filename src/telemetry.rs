//! Logging through `tracing`: pretty on a terminal, JSON otherwise.
//!
//! JSON lines are written by [`JsonLines`], our own event formatter, rather
//! than tracing-subscriber's: that one names the module path `target`, which
//! collides with our `target` field (the delivery target's name), and writes
//! lists as Rust `Debug` strings. Each line here is one JSON object whose keys
//! are unique: `timestamp`, `level`, `message`, `module`, then the event's
//! fields; a field logged with [`list`] is a JSON array.
//!
//! Architecture Invariant: secrets, tokens and signature headers are never
//! given to a log macro; request logs carry ids, sources and reasons only.

use crate::settings::LogFormat;
use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. `RUST_LOG` sets the level (default `info`).
pub fn init(format: Option<LogFormat>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// A list of names for a log field: `routes = %telemetry::list(&names)`
/// writes `"routes":["a","b"]` in JSON lines and `routes=["a","b"]` when pretty.
pub fn list<S: AsRef<str>>(items: &[S]) -> List<'_, S> {
    List(items)
}

/// See [`list`].
pub struct List<'a, S>(&'a [S]);

impl<S: AsRef<str>> fmt::Display for List<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<&str> = self.0.iter().map(AsRef::as_ref).collect();
        match serde_json::to_string(&items) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

/// The JSON line formatter (see the module documentation).
pub struct JsonLines;

/// Collects an event's fields into a JSON object.
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        // `log.*` fields repeat, for records bridged from the `log` crate,
        // what the metadata already says.
        if name.starts_with("log.") {
            return;
        }
        let mut key = name.to_owned();
        while self.0.contains_key(&key) {
            key.push('_');
        }
        self.0.insert(key, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // `list` writes a JSON array; keep it one.
        let value = match field.name() != "message" && text.starts_with('[') {
            true => match serde_json::from_str::<Value>(&text) {
                Ok(v @ Value::Array(_)) => v,
                _ => Value::from(text),
            },
            false => Value::from(text),
        };
        self.put(field, value);
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields(Map::new());
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        fields.0.insert("timestamp".into(), Value::from(timestamp));
        fields
            .0
            .insert("level".into(), Value::from(meta.level().as_str()));
        event.record(&mut fields);
        let mut key = String::from("module");
        while fields.0.contains_key(&key) {
            key.push('_');
        }
        fields.0.insert(key, Value::from(meta.target().to_owned()));
        let line = serde_json::to_string(&fields.0).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_written_as_a_json_array() {
        assert_eq!(list(&["a", "b\"c"]).to_string(), r#"["a","b\"c"]"#);
        assert_eq!(list::<&str>(&[]).to_string(), "[]");
    }
}
