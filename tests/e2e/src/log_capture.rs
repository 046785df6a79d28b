//! Captures what the test process logs (every `tracing` event, and `log` records from
//! libraries, down to TRACE) so a test can wait for a worker log line and check that no
//! secret was ever logged. One capture per test binary: [`capture`] installs it once.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The filter: everything at TRACE, except the websocket library, whose trace logs print
/// whole frames and upgrade requests (the binary caps it the same way, for the same reason)
/// and the HTTP internals, which only make the capture large.
pub const FILTER: &str = "trace,tungstenite=info,tokio_tungstenite=info,hyper=debug,hyper_util=debug,h2=info,rustls=info,tower=info";

/// The captured text of the whole test process.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

/// One write of the formatter.
#[derive(Debug)]
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.buf.clone())
    }
}

/// Installs the capture as the process's subscriber (once) and returns it.
pub fn capture() -> &'static LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = LogCapture::default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(FILTER))
            .with_ansi(false)
            .with_writer(capture.clone())
            .try_init();
        capture
    })
}

impl LogCapture {
    /// Everything captured so far.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits until a captured line satisfies `line_matches`, up to `timeout`.
    pub async fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        line_matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.text().lines().find(|l| line_matches(l)) {
                return Ok(line.to_owned());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("timed out after {timeout:?} waiting for the log line: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
