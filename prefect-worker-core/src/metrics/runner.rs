//! The runner's families: what happened to the flow runs this worker took on.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `prefect_worker_flow_runs_claimed_total` | counter | |
//! | `prefect_worker_flow_runs_submitted_total` | counter | |
//! | `prefect_worker_flow_runs_finished_total` | counter | `outcome` ([`RunOutcome`]) |
//! | `prefect_worker_flow_runs_crashed_total` | counter | `reason` ([`CrashReason`]) |
//! | `prefect_worker_submission_duration_seconds` | histogram | |
//! | `prefect_worker_flow_runs_in_flight` | gauge | |
//! | `prefect_worker_submissions_in_progress` | gauge | |
//! | `prefect_worker_last_poll_timestamp_seconds` | gauge | |

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Metrics;

/// How a claimed flow run ended for this worker (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    /// The infrastructure exited 0: the flow's engine reported the final state itself.
    Completed,
    /// The infrastructure failed after the flow run had already reached a final state or
    /// moved on (typically a flow that raised: its engine reported Failed); the worker
    /// reported nothing.
    Failed,
    /// The worker reported the run Crashed (see [`CrashReason`]).
    Crashed,
    /// The worker cancelled the run: its infrastructure was stopped.
    Cancelled,
    /// Another worker got the run after this one's Pending proposal was accepted.
    ClaimLost,
    /// The flow run was deleted while its infrastructure ran.
    Deleted,
    /// The claim was given back to the queue before any infrastructure existed (the claim
    /// timeout passed, or a worker recovered the abandoned claim).
    Rescheduled,
}

impl RunOutcome {
    /// Every value, for pre-created series.
    pub const ALL: [Self; 7] = [
        Self::Completed,
        Self::Failed,
        Self::Crashed,
        Self::Cancelled,
        Self::ClaimLost,
        Self::Deleted,
        Self::Rescheduled,
    ];

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Crashed => "crashed",
            Self::Cancelled => "cancelled",
            Self::ClaimLost => "claim_lost",
            Self::Deleted => "deleted",
            Self::Rescheduled => "rescheduled",
        }
    }
}

/// Why the worker reported a run Crashed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashReason {
    /// The run never got infrastructure: its configuration could not be built, or the
    /// infrastructure could not be created (`Failed to submit flow run to infrastructure`).
    SubmissionFailed,
    /// The infrastructure exited with a non-zero exit code.
    ExitCode,
    /// The infrastructure ended without an exit code: deleted, never started (an image
    /// that cannot be pulled), or given up on after a timeout.
    NoExitCode,
    /// The worker lost track of the infrastructure after creating it.
    InfrastructureError,
}

impl CrashReason {
    /// Every value, for pre-created series.
    pub const ALL: [Self; 4] = [
        Self::SubmissionFailed,
        Self::ExitCode,
        Self::NoExitCode,
        Self::InfrastructureError,
    ];

    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubmissionFailed => "submission_failed",
            Self::ExitCode => "exit_code",
            Self::NoExitCode => "no_exit_code",
            Self::InfrastructureError => "infrastructure_error",
        }
    }
}

impl EncodeLabelValue for RunOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl EncodeLabelValue for CrashReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: RunOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CrashLabels {
    reason: CrashReason,
}

/// Submission latency buckets: tens of milliseconds on a quiet API to minutes when a burst
/// waits on the API or the cluster.
const SUBMISSION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The registered families (created once per [`Metrics`]).
#[derive(Debug)]
pub(crate) struct RunnerFamilies {
    claimed: Counter,
    submitted: Counter,
    finished: Family<OutcomeLabels, Counter>,
    crashed: Family<CrashLabels, Counter>,
    submission_duration: Histogram,
    last_poll: Gauge<f64, AtomicU64>,
}

impl RunnerFamilies {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let f = Self {
            claimed: Counter::default(),
            submitted: Counter::default(),
            finished: Family::default(),
            crashed: Family::default(),
            submission_duration: Histogram::new(SUBMISSION_BUCKETS),
            last_poll: Gauge::default(),
        };
        // Every bounded series exists from the start, so rate() and alerts see the first
        // increment.
        for outcome in RunOutcome::ALL {
            let _ = f.finished.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in CrashReason::ALL {
            let _ = f.crashed.get_or_create(&CrashLabels { reason });
        }
        registry.register(
            "prefect_worker_flow_runs_claimed",
            "Flow runs this worker claimed (its Pending proposal was accepted).",
            f.claimed.clone(),
        );
        registry.register(
            "prefect_worker_flow_runs_submitted",
            "Flow runs whose infrastructure this worker created.",
            f.submitted.clone(),
        );
        registry.register(
            "prefect_worker_flow_runs_finished",
            "Claimed flow runs this worker is done with, by outcome.",
            f.finished.clone(),
        );
        registry.register(
            "prefect_worker_flow_runs_crashed",
            "Flow runs this worker reported Crashed, by reason.",
            f.crashed.clone(),
        );
        registry.register(
            "prefect_worker_submission_duration_seconds",
            "Seconds from the start of a flow run's claim until its infrastructure exists.",
            f.submission_duration.clone(),
        );
        registry.register(
            "prefect_worker_last_poll_timestamp_seconds",
            "Unix time of the last successful poll for scheduled flow runs.",
            f.last_poll.clone(),
        );
        f
    }
}

/// The runner's recorder: one call per event, nothing when metrics are off.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunRecorder {
    metrics: Option<Metrics>,
}

impl RunRecorder {
    pub(crate) fn new(metrics: Option<Metrics>) -> Self {
        Self { metrics }
    }

    fn families(&self) -> Option<&RunnerFamilies> {
        self.metrics.as_ref().map(Metrics::runner)
    }

    /// The server accepted this worker's Pending proposal.
    pub(crate) fn claimed(&self) {
        if let Some(f) = self.families() {
            f.claimed.inc();
        }
    }

    /// The infrastructure exists, `since_claim` after the claim started.
    pub(crate) fn submitted(&self, since_claim: Duration) {
        if let Some(f) = self.families() {
            f.submitted.inc();
            f.submission_duration.observe(since_claim.as_secs_f64());
        }
    }

    /// The worker is done with a claimed run.
    pub(crate) fn finished(&self, outcome: RunOutcome) {
        if let Some(f) = self.families() {
            f.finished.get_or_create(&OutcomeLabels { outcome }).inc();
        }
    }

    /// The worker reported the run Crashed.
    pub(crate) fn crashed(&self, reason: CrashReason) {
        if let Some(f) = self.families() {
            f.crashed.get_or_create(&CrashLabels { reason }).inc();
            f.finished
                .get_or_create(&OutcomeLabels {
                    outcome: RunOutcome::Crashed,
                })
                .inc();
        }
    }

    /// A poll for scheduled runs succeeded.
    pub(crate) fn polled(&self) {
        if let Some(f) = self.families() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            f.last_poll.set(now.as_secs_f64());
        }
    }

    /// Registers the gauges computed from the runner's state at scrape time.
    pub(crate) fn register_gauges(
        &self,
        in_flight: impl Fn() -> i64 + Send + Sync + 'static,
        submissions: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        if let Some(m) = &self.metrics {
            m.register_gauge_fn(
                "prefect_worker_flow_runs_in_flight",
                "Flow runs this worker handles now, from the poll that took them until their infrastructure has finished.",
                in_flight,
            );
            m.register_gauge_fn(
                "prefect_worker_submissions_in_progress",
                "Submissions in progress (claim until the infrastructure exists).",
                submissions,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;

    #[test]
    fn outcomes_and_reasons_are_counted_and_pre_created() {
        let m = Metrics::new();
        let text = m.encode(Format::PrometheusText);
        for outcome in RunOutcome::ALL {
            assert!(
                text.contains(&format!(
                    "prefect_worker_flow_runs_finished_total{{outcome=\"{}\"}} 0\n",
                    outcome.as_str()
                )),
                "{text}"
            );
        }
        let r = RunRecorder::new(Some(m.clone()));
        r.claimed();
        r.submitted(Duration::from_millis(300));
        r.crashed(CrashReason::ExitCode);
        r.finished(RunOutcome::Completed);
        let text = m.encode(Format::PrometheusText);
        assert!(text.contains("prefect_worker_flow_runs_claimed_total 1\n"));
        assert!(text.contains("prefect_worker_flow_runs_crashed_total{reason=\"exit_code\"} 1\n"));
        assert!(text.contains("prefect_worker_flow_runs_finished_total{outcome=\"crashed\"} 1\n"));
        assert!(
            text.contains("prefect_worker_flow_runs_finished_total{outcome=\"completed\"} 1\n")
        );
        assert!(text.contains("prefect_worker_submission_duration_seconds_count 1\n"));
        assert!(text.contains("prefect_worker_submission_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        // Off: nothing recorded, nothing fails.
        RunRecorder::default().claimed();
    }
}
