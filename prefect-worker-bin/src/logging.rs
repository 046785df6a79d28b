//! Worker logs on stderr: text by default, one JSON object per line with
//! `--log-format json` (`json_log.rs`). Colour only when stderr is a terminal and
//! `NO_COLOR` is unset or empty, so `kubectl logs` and log collectors get plain text.

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::JsonFields;

use crate::args::LogFormat;

/// Level from `RUST_LOG`, else `PREFECT_LOGGING_LEVEL`, else debug with
/// `PREFECT_WORKER_DEBUG_MODE`, else info.
pub fn init(format: LogFormat) {
    let default = if std::env::var("PREFECT_WORKER_DEBUG_MODE")
        .is_ok_and(|v| prefect_worker_core::settings::parse_bool(&v) == Some(true))
    {
        "debug".to_owned()
    } else {
        std::env::var("PREFECT_LOGGING_LEVEL")
            .map_or_else(|_| "info".to_owned(), |l| l.to_lowercase())
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default},hyper=warn,reqwest=warn,kube_client=warn,kube_runtime=warn,tower=warn,h2=warn,rustls=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(crate::json_log::JsonLines)
            .init(),
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set to anything but "" (no-color.org).
#[must_use]
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsString::new())));
        assert!(!colour_wanted(true, Some(OsString::from("1"))));
        assert!(!colour_wanted(false, None), "a pipe or file: no escapes");
    }
}
