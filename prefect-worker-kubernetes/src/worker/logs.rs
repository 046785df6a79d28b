//! Pod logs: the tail of a crashed run's container forwarded to its flow-run logs (spec §6.2
//! step 5), and `stream_output` (the live log on the worker's stdout).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, LogParams};
use prefect_worker_core::runner::{FlowRunLogger, Level};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::index_objects::{IndexedPod, PodPhase};
use crate::metrics::KubernetesMetrics;
use crate::run_watch::PRIMARY_CONTAINER;

/// Where `stream_output` lines go: `(flow run name, line)`. Defaults to the process's stdout.
pub type OutputSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The default sink: `<flow run name> | <line>` on stdout.
#[must_use]
pub fn stdout_sink() -> OutputSink {
    Arc::new(|run, line| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the worker down.
        let _ = writeln!(out, "{run} | {line}");
    })
}

/// Sends the last `tail_lines` lines of the primary container of the newest failed pod to
/// the flow run's logs: the previous container instance first (it is the one that crashed
/// when Kubernetes restarted it), then the current one.
pub async fn forward_crash_logs(
    client: &Client,
    namespace: &str,
    pods: &[&IndexedPod],
    tail_lines: i64,
    logger: &FlowRunLogger,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let observer = logger.named("prefect.flow_runs.observer");
    for pod in pods.iter().filter(|p| p.state.phase != PodPhase::Succeeded) {
        let name = &*pod.name;
        if name.is_empty() {
            continue;
        }
        let mut any = false;
        for previous in [true, false] {
            let params = LogParams {
                container: Some(PRIMARY_CONTAINER.to_owned()),
                previous,
                tail_lines: Some(tail_lines),
                ..LogParams::default()
            };
            let text = match api.logs(name, &params).await {
                Ok(text) => text,
                // Without `get pods/log` there is nothing to forward; say why, once, and
                // do not ask for the other container instance too.
                Err(e) if super::permissions::is_rbac_denial(&e) => {
                    logger.warning(format!(
                        "Cannot forward the crashed container's logs: the worker's service account may not get pods/log in namespace '{namespace}' ({e}). Grant get on pods/log to see a crashed container's last lines here."
                    ));
                    return;
                }
                Err(_) => continue,
            };
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                continue;
            }
            any = true;
            observer.log(
                Level::Error,
                format!("Container logs from container '{PRIMARY_CONTAINER}' in pod '{name}':"),
            );
            for line in lines {
                observer.log(Level::Error, line);
            }
        }
        if any {
            // The newest pod with output explains the crash; older attempts are noise.
            return;
        }
    }
}

/// Bounds the `stream_output` log streams open at once (each is a connection to the API
/// server and a task): runs beyond the bound are not streamed, with one warning.
#[derive(Debug, Clone)]
pub struct LogStreamLimit {
    permits: Arc<Semaphore>,
    max: usize,
    warned: Arc<AtomicBool>,
}

impl LogStreamLimit {
    /// At most `max` streams at once (`0`: none).
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A slot for one stream, or `None` (warned about once per process) when all are taken.
    pub fn try_open(&self, run_name: &str) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max = self.max,
                "{} pod log streams are open (PREFECT_INTEGRATIONS_KUBERNETES_WORKER_MAX_LOG_STREAMS); \
                 the output of further runs is not streamed to the worker's stdout until some end \
                 (this is said once; skipped runs are logged at debug level). Runs are tracked as usual.",
                self.max
            );
        }
        tracing::debug!(run = %run_name, "log stream limit reached; stream_output skipped for this run");
        None
    }

    /// Streams open now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// Follows the primary container's log of whichever pod `pods` names, writing each line to
/// `sink`. Survives stream breaks (resumes after the last line seen, by timestamp) and new
/// pods (retries). Returns when `pods` is closed. A broken stream never affects the run.
pub async fn stream_output(
    client: Client,
    namespace: String,
    run_name: String,
    mut pods: watch::Receiver<Option<String>>,
    sink: OutputSink,
    limit: LogStreamLimit,
    metrics: Option<KubernetesMetrics>,
) {
    // Take a slot only once there is a pod to follow: Jobs waiting for pods hold none.
    if pods.wait_for(Option::is_some).await.is_err() {
        return;
    }
    let Some(_slot) = limit.try_open(&run_name) else {
        if let Some(m) = &metrics {
            m.log_stream_skipped();
        }
        return;
    };
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let mut last: Option<(String, DateTime<Utc>)> = None;
    loop {
        let current = pods.borrow_and_update().clone();
        let Some(pod) = current else {
            if pods.changed().await.is_err() {
                return;
            }
            continue;
        };
        let since = last.as_ref().filter(|(p, _)| *p == pod).map(|(_, t)| *t);
        let params = LogParams {
            container: Some(PRIMARY_CONTAINER.to_owned()),
            follow: true,
            timestamps: true,
            since_time: since
                .and_then(|t| t.timestamp_nanos_opt())
                .and_then(|n| k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(n)).ok()),
            ..LogParams::default()
        };
        match api.log_stream(&pod, &params).await {
            Ok(stream) => {
                let _open = metrics.as_ref().map(KubernetesMetrics::log_stream_opened);
                let mut lines = stream.lines();
                loop {
                    let next = tokio::select! {
                        l = lines.try_next() => l,
                        changed = pods.changed() => {
                            if changed.is_err() { return; }
                            if pods.borrow().as_deref() != Some(pod.as_str()) { break; }
                            continue;
                        }
                    };
                    match next {
                        Ok(Some(raw)) => {
                            let (ts, text) = split_timestamp(&raw);
                            if let (Some(ts), Some((_, seen))) =
                                (ts, since.map(|s| (pod.clone(), s)))
                                && ts <= seen
                            {
                                continue;
                            }
                            if let Some(ts) = ts {
                                last = Some((pod.clone(), ts));
                            }
                            sink(&run_name, text);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            // Retrying cannot help without `get pods/log`: say so once and stop streaming.
            Err(e) if super::permissions::is_rbac_denial(&e) => {
                tracing::warn!(error = %e, pod = %pod, namespace = %namespace, flow_run_name = %run_name,
                    "stream_output is on, but the worker's service account may not get pods/log in namespace '{namespace}': this flow run's output is not streamed. Grant get on pods/log to stream it.");
                return;
            }
            Err(e) => tracing::debug!(error = %e, pod = %pod, "log stream not available yet"),
        }
        // The stream ended: the container ended, or the connection broke. Wait for a change
        // (a new pod) or a short pause before resuming.
        tokio::select! {
            changed = pods.changed() => if changed.is_err() { return; },
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Splits `2026-01-01T00:00:00.123456789Z text` into its timestamp and text.
fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => (Some(t.with_timezone(&Utc)), rest),
            Err(_) => (None, line),
        },
        None => match DateTime::parse_from_rfc3339(line) {
            Ok(t) => (Some(t.with_timezone(&Utc)), ""),
            Err(_) => (None, line),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_beyond_the_limit_are_skipped() {
        let limit = LogStreamLimit::new(2);
        let a = limit.try_open("a");
        let b = limit.try_open("b");
        assert!(a.is_some() && b.is_some());
        assert_eq!(limit.open(), 2);
        assert!(limit.try_open("c").is_none());
        assert!(limit.warned.load(Ordering::Relaxed));
        drop(a);
        assert!(
            limit.try_open("d").is_some(),
            "a slot frees when a stream ends"
        );
        assert!(LogStreamLimit::new(0).try_open("x").is_none());
    }

    #[test]
    fn timestamps_are_split_off() {
        let (ts, text) = split_timestamp("2026-01-01T00:00:00.5Z hello world");
        assert!(ts.is_some());
        assert_eq!(text, "hello world");
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
    }
}
