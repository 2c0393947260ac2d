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
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::io::IsTerminal;
use std::ops::Range;
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

/// Collects an event's fields as JSON text: each value written once into
/// `values`, its key and where it lies kept in `entries`. Cheaper than a
/// `serde_json::Map` of `Value`s (one allocation per line instead of
/// several per field: this runs for every line at info level, two per
/// delivered event).
struct Fields {
    entries: Vec<(Cow<'static, str>, Range<usize>)>,
    values: Vec<u8>,
}

impl Fields {
    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    /// Adds `name` (made unique by appending `_`) with what `write` writes.
    fn put(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let key = if self.has(name) {
            let mut key = name.to_owned();
            while self.has(&key) {
                key.push('_');
            }
            Cow::Owned(key)
        } else {
            Cow::Borrowed(name)
        };
        let start = self.values.len();
        write(&mut self.values);
        self.entries.push((key, start..self.values.len()));
    }

    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Vec<u8>)) {
        // `log.*` fields repeat, for records bridged from the `log` crate,
        // what the metadata already says.
        if !field.name().starts_with("log.") {
            self.put(field.name(), write);
        }
    }

    fn json(&mut self, field: &Field, value: &(impl serde::Serialize + ?Sized)) {
        self.field(field, |out| {
            if serde_json::to_writer(&mut *out, value).is_err() {
                out.extend_from_slice(b"null");
            }
        });
    }

    /// The line: keys in sorted order (as a `serde_json::Map` writes them).
    fn line(mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut line = Vec::with_capacity(self.values.len() + 16 * self.entries.len() + 3);
        line.push(b'{');
        for (i, (key, at)) in self.entries.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            if serde_json::to_writer(&mut line, key.as_ref()).is_err() {
                line.extend_from_slice(b"\"\"");
            }
            line.push(b':');
            line.extend_from_slice(&self.values[at.clone()]);
        }
        line.extend_from_slice(b"}\n");
        line
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.json(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.json(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.json(field, &value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.json(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.json(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // `list` writes a JSON array; keep it one.
        if field.name() != "message"
            && text.starts_with('[')
            && let Ok(v @ Value::Array(_)) = serde_json::from_str::<Value>(&text)
        {
            return self.json(field, &v);
        }
        self.json(field, text.as_str());
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
        let mut fields = Fields {
            entries: Vec::with_capacity(12),
            values: Vec::with_capacity(256),
        };
        fields.put("timestamp", |out| {
            out.push(b'"');
            let _ = time::OffsetDateTime::now_utc()
                .format_into(out, &time::format_description::well_known::Rfc3339);
            out.push(b'"');
        });
        fields.put("level", |out| {
            let _ = serde_json::to_writer(out, meta.level().as_str());
        });
        event.record(&mut fields);
        fields.put("module", |out| {
            let _ = serde_json::to_writer(out, meta.target());
        });
        let line = fields.line();
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the formatter writes for one event, through a real subscriber.
    fn line_of(log: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_json_line_has_sorted_unique_keys_typed_values_and_escapes() {
        let routes = ["a", "b\"c"];
        let line = line_of(|| {
            tracing::info!(
                target = "sink",
                level = "mine",
                n = 3u64,
                ok = true,
                routes = %list(&routes),
                text = "tab\there \"quoted\"",
                "event {} happened",
                "x"
            )
        });
        assert!(
            line.ends_with("}\n") && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort_unstable();
        let at: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.is_sorted(), "keys in sorted order: {line}");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["level_"], "mine", "a field named like ours gets a _");
        assert_eq!(v["target"], "sink");
        assert_eq!(v["module"], module_path!());
        assert_eq!(v["message"], "event x happened");
        assert_eq!(v["n"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["routes"], serde_json::json!(["a", "b\"c"]));
        assert_eq!(v["text"], "tab\there \"quoted\"");
        assert!(
            time::OffsetDateTime::parse(
                v["timestamp"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "{line}"
        );
        assert_eq!(v.as_object().unwrap().len(), 10, "{line}");
    }

    #[test]
    fn a_list_is_written_as_a_json_array() {
        assert_eq!(list(&["a", "b\"c"]).to_string(), r#"["a","b\"c"]"#);
        assert_eq!(list::<&str>(&[]).to_string(), "[]");
    }
}
