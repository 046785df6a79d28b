//! `--log-format json`: one JSON object per line, with stable field names that log
//! pipelines can index (docs/operations.md, "Logs"):
//!
//! - `timestamp` (RFC 3339, UTC, microseconds), `level` (`ERROR`, `WARN`, `INFO`,
//!   `DEBUG`, `TRACE`), `target` (the Rust module), `message` — on every line;
//! - `flow_run_id` — on every line about a flow run: the runner runs each flow run's
//!   work inside a `flow_run` span carrying it, and its fields are copied onto each line;
//! - then the event's own fields (`pool`, `namespace`, `job`, `error`, ...).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON-lines event format. Span fields must be recorded as JSON
/// (`fmt_fields(JsonFields::new())`) to be copied onto the lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;

        // Span fields, outermost first; the event's own fields win over them.
        let mut context = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields.as_str())
                {
                    context.extend(m);
                }
            }
        }
        let mut own = Fields(Map::new());
        event.record(&mut own);
        context.extend(own.0);

        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert(
            "level".into(),
            Value::String(meta.level().as_str().to_owned()),
        );
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        line.insert(
            "message".into(),
            context
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        if let Some(id) = context.remove("flow_run_id") {
            line.insert("flow_run_id".into(), id);
        }
        line.extend(context);
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        // `log` crate records bridged by tracing-log carry these; they are not ours.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;

    /// The fields every line starts with, in this order.
    const FIXED_FIELDS: [&str; 4] = ["timestamp", "level", "target", "message"];

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn one_object_per_line_with_stable_fields_and_the_run_id_from_the_span() {
        let out = lines(|| {
            tracing::info!(pool = "p", "worker started");
            let span = tracing::error_span!("flow_run", flow_run_id = "0c6f-run");
            let _in = span.enter();
            tracing::warn!(
                namespace = "prefect",
                attempts = 3_u64,
                ok = false,
                "multi\nline \"quoted\""
            );
            tracing::debug!(flow_run_id = "0c6f-run", "the event's own field wins, once");
        });
        assert_eq!(out.len(), 3);
        for line in &out {
            let keys: Vec<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(&keys[..4], FIXED_FIELDS, "{line}");
            assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(out[0]["level"], "INFO");
        assert_eq!(out[0]["message"], "worker started");
        assert_eq!(out[0]["pool"], "p");
        assert!(out[0].get("flow_run_id").is_none());
        assert_eq!(out[1]["level"], "WARN");
        assert_eq!(out[1]["flow_run_id"], "0c6f-run");
        assert_eq!(out[1]["message"], "multi\nline \"quoted\"");
        assert_eq!(out[1]["attempts"], 3);
        assert_eq!(out[1]["ok"], false);
        assert_eq!(out[1]["namespace"], "prefect");
        assert_eq!(out[2]["flow_run_id"], "0c6f-run");
        assert_eq!(out[2]["target"], module_path!());
    }
}
