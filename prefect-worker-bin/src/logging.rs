//! Worker logs on stderr: text by default, one JSON object per line with
//! `--log-format json` (`json_log.rs`). Colour only when stderr is a terminal and
//! `NO_COLOR` is unset or empty, so `kubectl logs` and log collectors get plain text.

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::JsonFields;

use crate::args::LogFormat;

/// Directives applied over any filter, `RUST_LOG` included.
const SECRET_SAFE_CAPS: [&str; 2] = ["tungstenite=info", "tokio_tungstenite=info"];

/// Level from `RUST_LOG`, else debug with `PREFECT_DEBUG_MODE` (what the Helm chart's
/// `worker.image.debug` sets; Prefect then logs at DEBUG) or `PREFECT_WORKER_DEBUG_MODE`,
/// else `PREFECT_LOGGING_LEVEL`, else info.
pub fn init(format: LogFormat) {
    let default = default_level(&|k: &str| std::env::var(k).ok());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default},hyper=warn,reqwest=warn,kube_client=warn,kube_runtime=warn,tower=warn,h2=warn,rustls=warn"))
    });
    // Whatever was asked for: the websocket library's debug and trace logs print whole
    // frames and upgrade requests, and those carry the API key or auth string.
    for cap in SECRET_SAFE_CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
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

/// The level when `RUST_LOG` is not set.
#[must_use]
pub fn default_level(env: &dyn Fn(&str) -> Option<String>) -> String {
    let on = |k: &str| {
        env(k).is_some_and(|v| prefect_worker_core::settings::parse_bool(&v) == Some(true))
    };
    if on("PREFECT_DEBUG_MODE") || on("PREFECT_WORKER_DEBUG_MODE") {
        return "debug".to_owned();
    }
    // Python's level names (and numbers) as tracing's: an unknown word would otherwise
    // be read as a target name and silence every line.
    let level = match env("PREFECT_LOGGING_LEVEL")
        .map(|l| l.trim().to_uppercase())
        .as_deref()
    {
        Some("CRITICAL" | "FATAL" | "ERROR" | "50" | "40") => "error",
        Some("WARNING" | "WARN" | "30") => "warn",
        Some("DEBUG" | "10") => "debug",
        Some("NOTSET" | "TRACE" | "0") => "trace",
        _ => "info",
    };
    level.to_owned()
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
    fn debug_mode_then_prefect_logging_level_then_info() {
        let level = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            default_level(&move |k: &str| {
                pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
        };
        assert_eq!(level(&[]), "info");
        assert_eq!(level(&[("PREFECT_LOGGING_LEVEL", "WARNING")]), "warn");
        assert_eq!(level(&[("PREFECT_LOGGING_LEVEL", "CRITICAL")]), "error");
        assert_eq!(level(&[("PREFECT_LOGGING_LEVEL", "debug")]), "debug");
        assert_eq!(level(&[("PREFECT_LOGGING_LEVEL", "30")]), "warn");
        assert_eq!(
            level(&[
                ("PREFECT_DEBUG_MODE", "false"),
                ("PREFECT_LOGGING_LEVEL", "ERROR")
            ]),
            "error",
            "the chart's PREFECT_DEBUG_MODE=\"false\""
        );
        assert_eq!(
            level(&[
                ("PREFECT_DEBUG_MODE", "true"),
                ("PREFECT_LOGGING_LEVEL", "ERROR")
            ]),
            "debug"
        );
        assert_eq!(level(&[("PREFECT_WORKER_DEBUG_MODE", "1")]), "debug");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsString::new())));
        assert!(!colour_wanted(true, Some(OsString::from("1"))));
        assert!(!colour_wanted(false, None), "a pipe or file: no escapes");
    }
}
