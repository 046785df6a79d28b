//! Worker logs on stderr: text by default, JSON with `--log-format json`.

use tracing_subscriber::EnvFilter;

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
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
