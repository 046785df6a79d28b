//! Worker logs on stderr: text by default, JSON with `--log-format json`.

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Directives applied over any filter, `RUST_LOG` included.
const SECRET_SAFE_CAPS: [&str; 2] = ["tungstenite=info", "tokio_tungstenite=info"];

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
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
