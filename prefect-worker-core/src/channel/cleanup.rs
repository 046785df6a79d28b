//! Cleanup delivery (spec §5.3, Python's `WorkerCleanupExecutor`): the server hands the
//! worker a *reservation* of a cleanup message (`cleanup.message.v1`); the worker runs the
//! handler while renewing the lease, then acks or releases it, and reads the server's
//! answer (`cleanup.operation_result.v1`) to each of those frames.
//!
//! Rules: an expired lease is skipped; a reservation already being worked on is ignored;
//! no free slot → release `concurrency_limit_reached`; the lease is renewed 5 s before it
//! ends, and a lost reservation cancels the handler and sends nothing; each ack, release or
//! renew is tried up to 3 times (1 s apart, 30 s each) while the server answers `error`.
//! Operation frames wait for a connected session that accepted cleanup delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::frames::{
    CANCELLING_TIMEOUT_TEARDOWN, CleanupMessage, CleanupTarget, Operation, OperationResult,
    operation_frame,
};

/// What a handler decided about one cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// Done, or nothing to do (`cleanup.ack.v1`).
    Ack,
    /// Give the message back for another attempt or worker, with a reason
    /// (`cleanup.release.v1`), e.g. `infrastructure_not_available`.
    Release(String),
}

/// Tears down infrastructure for the cleanup kinds this worker handles.
#[async_trait]
pub trait CleanupHandler: Send + Sync + 'static {
    /// `cancelling_timeout_teardown.v1`: the server gave up waiting for a CANCELLING run and
    /// marked it Cancelled; stop its infrastructure. Must be idempotent and must never change
    /// the flow run's state. The future is dropped if the reservation is lost meanwhile.
    async fn cancelling_timeout_teardown(&self, target: &CleanupTarget) -> CleanupOutcome;
}

/// Timings of the executor; `Default` is Python's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupTiming {
    /// Renew this long before the lease ends (5 s).
    pub renewal_buffer: Duration,
    /// Wait this long for the answer to one operation frame (30 s).
    pub operation_timeout: Duration,
    /// Pause between attempts of one operation (1 s).
    pub retry_delay: Duration,
    /// Attempts per operation (3).
    pub attempts: u32,
}

impl Default for CleanupTiming {
    fn default() -> Self {
        Self {
            renewal_buffer: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            attempts: 3,
        }
    }
}

/// The live session operation frames go to.
#[derive(Debug, Clone)]
pub(crate) struct SessionLink {
    pub(crate) frames: mpsc::Sender<String>,
    /// The server accepted `cleanup_delivery.v1` on this session.
    pub(crate) cleanup: bool,
}

#[derive(Debug, Default)]
struct State {
    /// `min(ours, the server's effective_max_cleanup_concurrency)` on the current session.
    effective_max: usize,
    in_flight: usize,
    /// Reservation token → cancels its handler.
    active: HashMap<String, CancellationToken>,
    /// Operation frame id → who waits for its result.
    pending: HashMap<Uuid, oneshot::Sender<OperationResult>>,
}

/// One reservation being worked on.
#[derive(Debug)]
struct Reservation {
    message_id: Uuid,
    token: String,
    lease_expires_at: Mutex<DateTime<Utc>>,
}

impl Reservation {
    fn lease(&self) -> DateTime<Utc> {
        *self
            .lease_expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self) -> bool {
        Utc::now() >= self.lease()
    }
}

/// Time from now until `at` (zero when past).
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// Runs cleanup work for the channel. One per worker process, across reconnects.
pub(crate) struct CleanupExecutor {
    handler: Arc<dyn CleanupHandler>,
    max_concurrency: usize,
    timing: CleanupTiming,
    state: Mutex<State>,
    session: watch::Sender<Option<SessionLink>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for CleanupExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupExecutor")
            .field("max_concurrency", &self.max_concurrency)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl CleanupExecutor {
    pub(crate) fn new(
        handler: Arc<dyn CleanupHandler>,
        max_concurrency: usize,
        timing: CleanupTiming,
    ) -> Arc<Self> {
        Arc::new(Self {
            handler,
            max_concurrency,
            timing,
            state: Mutex::new(State::default()),
            session: watch::Sender::new(None),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kinds announced in the hello.
    pub(crate) fn handled_kinds() -> Vec<String> {
        vec![CANCELLING_TIMEOUT_TEARDOWN.to_owned()]
    }

    pub(crate) fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// A session became healthy. Without cleanup on it, work in flight is abandoned (the
    /// server will hand it out again when its lease ends).
    pub(crate) fn attach(&self, link: SessionLink, server_max: usize) {
        let cleanup = link.cleanup;
        {
            let mut st = self.lock();
            st.effective_max = if cleanup {
                server_max.min(self.max_concurrency)
            } else {
                0
            };
            if !cleanup {
                for cancel in st.active.values() {
                    cancel.cancel();
                }
            }
        }
        self.session.send_replace(Some(link));
    }

    /// The session ended; operation frames wait for the next one.
    pub(crate) fn detach(&self) {
        self.session.send_replace(None);
    }

    /// A `cleanup.message.v1` arrived.
    pub(crate) fn submit(self: &Arc<Self>, message: CleanupMessage) {
        let me = self.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = me.execute(message) => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// A `cleanup.operation_result.v1` arrived: hand it to the operation waiting for it.
    pub(crate) fn operation_result(&self, result: OperationResult) {
        let waiter = self.lock().pending.remove(&result.request_frame_id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => tracing::debug!(
                request_frame_id = %result.request_frame_id,
                "cleanup operation result for no pending operation; ignored"
            ),
        }
    }

    /// Stops all cleanup work (worker shutdown).
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn execute(self: Arc<Self>, message: CleanupMessage) {
        let message_id = message.message_id;
        if message.kind != CANCELLING_TIMEOUT_TEARDOWN {
            tracing::info!(%message_id, kind = %message.kind, "cleanup kind not handled by this worker; released");
            self.release(&message, "unsupported_cleanup_kind").await;
            return;
        }
        if Utc::now() >= message.lease_expires_at {
            tracing::debug!(%message_id, "cleanup message skipped: its reservation lease has expired");
            return;
        }
        let cancel = CancellationToken::new();
        let refusal = {
            let mut st = self.lock();
            if st.effective_max == 0 {
                Some(Some("cleanup_delivery_unavailable"))
            } else if st.active.contains_key(&message.reservation_token) {
                tracing::debug!(%message_id, "duplicate delivery of a reservation being worked on; ignored");
                Some(None)
            } else if st.in_flight >= st.effective_max {
                tracing::debug!(%message_id, "no free cleanup slot; released");
                Some(Some("concurrency_limit_reached"))
            } else {
                st.in_flight += 1;
                st.active
                    .insert(message.reservation_token.clone(), cancel.clone());
                None
            }
        };
        match refusal {
            Some(Some(reason)) => return self.release(&message, reason).await,
            Some(None) => return,
            None => {}
        }
        tracing::info!(
            %message_id,
            flow_run_id = %message.target.flow_run_id,
            infrastructure_pid = message.target.infrastructure_pid.as_deref().unwrap_or(""),
            delivery_count = message.delivery_count,
            "cleanup delivery: tearing down the infrastructure of a flow run the server cancelled after its cancelling timeout"
        );
        let reservation = Arc::new(Reservation {
            message_id,
            token: message.reservation_token.clone(),
            lease_expires_at: Mutex::new(message.lease_expires_at),
        });
        let lost = CancellationToken::new();
        let renewal_done = CancellationToken::new();
        {
            let (me, r, lost, done) = (
                self.clone(),
                reservation.clone(),
                lost.clone(),
                renewal_done.clone(),
            );
            self.tasks.spawn(async move {
                tokio::select! {
                    () = me.renew_until_lost(&r) => lost.cancel(),
                    () = done.cancelled() => {}
                    () = me.stop.cancelled() => {}
                }
            });
        }
        let outcome = tokio::select! {
            o = self.handler.cancelling_timeout_teardown(&message.target) => Some(o),
            () = lost.cancelled() => None,
            () = cancel.cancelled() => None,
        };
        match outcome {
            Some(o) if !lost.is_cancelled() && !cancel.is_cancelled() => {
                let (op, outcome_name) = match o {
                    CleanupOutcome::Ack => (Operation::Ack, "acked".to_owned()),
                    CleanupOutcome::Release(reason) => {
                        let name = format!("released ({reason})");
                        (Operation::Release(reason), name)
                    }
                };
                let result = self
                    .send_until_resolved(&op, message_id, &message.reservation_token, None)
                    .await;
                match result {
                    Some(r) if r.status == "accepted" => tracing::info!(
                        %message_id, flow_run_id = %message.target.flow_run_id,
                        "cleanup {outcome_name}"
                    ),
                    Some(r) => tracing::warn!(
                        %message_id, status = %r.status, reason = r.reason.as_deref().unwrap_or(""),
                        "cleanup {outcome_name}, but the server did not accept it"
                    ),
                    None => tracing::warn!(
                        %message_id,
                        "cleanup {outcome_name}, but the server did not answer; it will deliver the message again when the lease ends"
                    ),
                }
            }
            _ => tracing::info!(
                %message_id,
                "cleanup reservation no longer current; its result is not reported"
            ),
        }
        renewal_done.cancel();
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.active.remove(&message.reservation_token);
    }

    async fn release(&self, message: &CleanupMessage, reason: &str) {
        let _ = self
            .send_until_resolved(
                &Operation::Release(reason.to_owned()),
                message.message_id,
                &message.reservation_token,
                None,
            )
            .await;
    }

    /// Renews the lease before it ends; returns when the reservation is lost.
    async fn renew_until_lost(&self, r: &Reservation) {
        loop {
            let wake = until(r.lease()).saturating_sub(self.timing.renewal_buffer);
            tokio::time::sleep(wake).await;
            if r.expired() {
                return;
            }
            let result = self
                .send_until_resolved(&Operation::Renew, r.message_id, &r.token, Some(r.lease()))
                .await;
            match result {
                Some(res) if res.status == "accepted" => {
                    if let Some(lease) = res.lease_expires_at {
                        *r.lease_expires_at
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = lease;
                    }
                    // An accepted renew without a new lease would spin: wait one retry delay.
                    if res.lease_expires_at.is_none() {
                        tokio::time::sleep(self.timing.retry_delay).await;
                    }
                }
                None => {
                    if !self.pause_before_retry(Some(r.lease())).await {
                        return;
                    }
                }
                Some(res) if res.status == "error" => {
                    if !self.pause_before_retry(Some(r.lease())).await {
                        return;
                    }
                }
                Some(res) => {
                    tracing::info!(message_id = %r.message_id, status = %res.status, "cleanup reservation lost on renewal");
                    return;
                }
            }
        }
    }

    /// Sleeps the retry delay, bounded by `deadline`; `false` when the deadline passed.
    async fn pause_before_retry(&self, deadline: Option<DateTime<Utc>>) -> bool {
        let mut pause = self.timing.retry_delay;
        if let Some(d) = deadline {
            let left = until(d);
            if left.is_zero() {
                return false;
            }
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
        deadline.is_none_or(|d| !until(d).is_zero())
    }

    /// Sends `op` until the server answers something other than `error`, up to the attempt
    /// limit. `None`: no answer at all.
    async fn send_until_resolved(
        &self,
        op: &Operation,
        message_id: Uuid,
        token: &str,
        deadline: Option<DateTime<Utc>>,
    ) -> Option<OperationResult> {
        let mut last = None;
        for attempt in 1..=self.timing.attempts.max(1) {
            let mut timeout = self.timing.operation_timeout;
            if let Some(d) = deadline {
                timeout = timeout.min(until(d));
            }
            if timeout.is_zero() {
                break;
            }
            let frame_id = Uuid::now_v7();
            let (tx, rx) = oneshot::channel();
            self.lock().pending.insert(frame_id, tx);
            let frame = operation_frame(frame_id, Utc::now(), op, message_id, token);
            let answer = tokio::time::timeout(timeout, async {
                self.send_frame(frame).await;
                rx.await.ok()
            })
            .await;
            self.lock().pending.remove(&frame_id);
            let is_last = attempt == self.timing.attempts.max(1);
            match answer {
                Ok(Some(result)) if result.status == "error" => {
                    tracing::debug!(%message_id, operation = op.name(), attempt, "cleanup operation answered 'error'; retrying");
                    last = Some(result);
                }
                Ok(Some(result)) => return Some(result),
                _ => {
                    tracing::debug!(%message_id, operation = op.name(), attempt, "no answer to a cleanup operation");
                }
            }
            if is_last || !self.pause_before_retry(deadline).await {
                break;
            }
        }
        last
    }

    /// Queues `frame` on a session that accepted cleanup delivery, waiting for one.
    async fn send_frame(&self, frame: String) {
        let mut rx = self.session.subscribe();
        loop {
            let link = rx.borrow_and_update().clone();
            if let Some(link) = link
                && link.cleanup
                && link.frames.send(frame.clone()).await.is_ok()
            {
                return;
            }
            if rx.changed().await.is_err() {
                // The executor is gone: nothing will ever send it.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A handler that waits until released, and counts its calls.
    #[derive(Default)]
    struct Gate {
        calls: Mutex<Vec<Uuid>>,
        open: tokio::sync::Notify,
        outcome: Mutex<Option<CleanupOutcome>>,
    }

    #[async_trait]
    impl CleanupHandler for Gate {
        async fn cancelling_timeout_teardown(&self, target: &CleanupTarget) -> CleanupOutcome {
            self.calls.lock().unwrap().push(target.flow_run_id);
            self.open.notified().await;
            self.outcome
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(CleanupOutcome::Ack)
        }
    }

    fn message(token: &str, lease_in: chrono::Duration, kind: &str) -> CleanupMessage {
        CleanupMessage {
            message_id: Uuid::now_v7(),
            kind: kind.into(),
            reservation_token: token.into(),
            lease_expires_at: Utc::now() + lease_in,
            delivery_count: 1,
            work_queue_id: None,
            target: CleanupTarget {
                flow_run_id: Uuid::from_u128(42),
                infrastructure_pid: Some("ns:job".into()),
                extra: serde_json::Map::new(),
            },
            data: serde_json::Map::new(),
        }
    }

    fn timing() -> CleanupTiming {
        CleanupTiming {
            renewal_buffer: Duration::from_millis(200),
            operation_timeout: Duration::from_millis(500),
            retry_delay: Duration::from_millis(20),
            attempts: 3,
        }
    }

    /// The next frame the executor sent, as JSON.
    async fn next(rx: &mut mpsc::Receiver<String>) -> Value {
        let text = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a frame")
            .expect("open");
        serde_json::from_str(&text).unwrap()
    }

    fn answer(exec: &CleanupExecutor, frame: &Value, status: &str, lease: Option<DateTime<Utc>>) {
        exec.operation_result(OperationResult {
            request_frame_id: frame["id"].as_str().unwrap().parse().unwrap(),
            message_id: frame["payload"]["message_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            operation: "x".into(),
            status: status.into(),
            lease_expires_at: lease,
            reason: None,
            detail: None,
        });
    }

    fn attached(gate: Arc<Gate>, max: usize) -> (Arc<CleanupExecutor>, mpsc::Receiver<String>) {
        let exec = CleanupExecutor::new(gate, 1, timing());
        let (tx, rx) = mpsc::channel(16);
        exec.attach(
            SessionLink {
                frames: tx,
                cleanup: true,
            },
            max,
        );
        (exec, rx)
    }

    #[tokio::test]
    async fn a_handled_message_is_acked_and_a_second_one_finds_no_slot() {
        let gate = Arc::new(Gate::default());
        let (exec, mut rx) = attached(gate.clone(), 4);
        exec.submit(message(
            "t1",
            chrono::Duration::seconds(60),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        // Wait for the handler to be entered.
        while gate.calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Ours is 1, whatever the server allows.
        exec.submit(message(
            "t2",
            chrono::Duration::seconds(60),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        let release = next(&mut rx).await;
        assert_eq!(release["type"], "cleanup.release.v1");
        assert_eq!(release["payload"]["reason"], "concurrency_limit_reached");
        assert_eq!(release["payload"]["reservation_token"], "t2");
        answer(&exec, &release, "accepted", None);
        // The same reservation delivered again while in flight: ignored.
        exec.submit(message(
            "t1",
            chrono::Duration::seconds(60),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        gate.open.notify_one();
        let ack = next(&mut rx).await;
        assert_eq!(ack["type"], "cleanup.ack.v1");
        assert_eq!(ack["payload"]["reservation_token"], "t1");
        answer(&exec, &ack, "accepted", None);
        exec.shutdown().await;
        assert_eq!(gate.calls.lock().unwrap().len(), 1);
        assert!(rx.try_recv().is_err(), "nothing else was sent");
    }

    #[tokio::test]
    async fn unknown_kinds_are_released_and_expired_leases_skipped() {
        let gate = Arc::new(Gate::default());
        let (exec, mut rx) = attached(gate.clone(), 1);
        exec.submit(message(
            "old",
            chrono::Duration::seconds(-1),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        exec.submit(message(
            "claim",
            chrono::Duration::seconds(60),
            super::super::frames::PENDING_CLAIM_TEARDOWN,
        ));
        let release = next(&mut rx).await;
        assert_eq!(release["payload"]["reason"], "unsupported_cleanup_kind");
        assert_eq!(release["payload"]["reservation_token"], "claim");
        answer(&exec, &release, "accepted", None);
        exec.shutdown().await;
        assert!(gate.calls.lock().unwrap().is_empty());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_lease_is_renewed_and_an_error_answer_retried() {
        let gate = Arc::new(Gate::default());
        *gate.outcome.lock().unwrap() = Some(CleanupOutcome::Release(
            "infrastructure_not_available".into(),
        ));
        let (exec, mut rx) = attached(gate.clone(), 1);
        exec.submit(message(
            "t",
            chrono::Duration::milliseconds(600),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        let renew = next(&mut rx).await;
        assert_eq!(renew["type"], "cleanup.renew.v1");
        // `error` is retried...
        answer(&exec, &renew, "error", None);
        let renew = next(&mut rx).await;
        assert_eq!(renew["type"], "cleanup.renew.v1");
        answer(
            &exec,
            &renew,
            "accepted",
            Some(Utc::now() + chrono::Duration::seconds(60)),
        );
        gate.open.notify_one();
        let release = next(&mut rx).await;
        assert_eq!(release["type"], "cleanup.release.v1");
        assert_eq!(release["payload"]["reason"], "infrastructure_not_available");
        answer(&exec, &release, "accepted", None);
        exec.shutdown().await;
    }

    #[tokio::test]
    async fn a_lost_reservation_cancels_the_handler_and_reports_nothing() {
        let gate = Arc::new(Gate::default());
        let (exec, mut rx) = attached(gate.clone(), 1);
        exec.submit(message(
            "t",
            chrono::Duration::milliseconds(400),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        let renew = next(&mut rx).await;
        answer(&exec, &renew, "not_current", None);
        // The slot is freed: a new message is worked on, not released for lack of a slot.
        let mut freed = false;
        for _ in 0..200 {
            if exec.lock().in_flight == 0 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed);
        gate.open.notify_one();
        exec.shutdown().await;
        assert!(rx.try_recv().is_err(), "no ack after a lost reservation");
    }

    #[tokio::test]
    async fn frames_wait_for_a_session_that_accepted_cleanup() {
        let gate = Arc::new(Gate::default());
        let exec = CleanupExecutor::new(gate.clone(), 1, timing());
        let (tx, mut rx) = mpsc::channel(16);
        exec.attach(
            SessionLink {
                frames: tx.clone(),
                cleanup: true,
            },
            1,
        );
        exec.submit(message(
            "t",
            chrono::Duration::seconds(60),
            CANCELLING_TIMEOUT_TEARDOWN,
        ));
        while gate.calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        exec.detach();
        gate.open.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "no session: the ack waits");
        exec.attach(
            SessionLink {
                frames: tx,
                cleanup: true,
            },
            1,
        );
        let ack = next(&mut rx).await;
        assert_eq!(ack["type"], "cleanup.ack.v1");
        answer(&exec, &ack, "accepted", None);
        exec.shutdown().await;
    }
}
