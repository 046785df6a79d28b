//! The Job events the FailedCreate/quota diagnosis needs, shared per namespace.
//!
//! A Job whose pod cannot be created (quota, admission webhooks, pod security) has no pod
//! to watch: only its `FailedCreate` events say why. Rather than every such run listing
//! events on a timer, each namespace has at most one events watch, filtered on the server
//! to `FailedCreate` events of Jobs. It starts when the first run in the namespace has
//! waited a while without a pod and stops when no run needs it, so a namespace whose pods
//! start normally only ever has its two shared watches (Jobs, Pods).
//!
//! Reading events is an extra permission: the prefect-helm chart's Role, for example,
//! grants none. A 403 ends the namespace's events watch for good with ONE warning naming
//! the missing permission and what it would add; runs are still tracked, they only lose
//! the FailedCreate diagnosis. Nothing is asked again until the worker restarts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::tracker::{NamespaceIndex, Observation, lock};

/// The server-side filter: only the events the diagnosis reads.
pub const FIELD_SELECTOR: &str = "involvedObject.kind=Job,reason=FailedCreate";

/// The events source of one namespace: who needs it, and its watch while it runs.
#[derive(Debug, Default)]
pub(crate) struct EventsSource {
    /// Jobs (by name) whose runs wait for a diagnosis from events.
    wanted: HashSet<String>,
    /// Stops the running watch; `None` while no watch runs.
    running: Option<CancellationToken>,
    /// Set once the API refused to list or watch events here (RBAC): never asked again.
    forbidden: bool,
}

/// What a change of interest asks the caller to do (pure decision, so it is unit-tested).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Nothing,
    /// Start the watch with this token.
    Start(CancellationToken),
}

impl EventsSource {
    /// `job` needs (or no longer needs) its events.
    pub(crate) fn want(&mut self, job: &str, wanted: bool, parent: &CancellationToken) -> Change {
        if wanted {
            self.wanted.insert(job.to_owned());
        } else {
            self.wanted.remove(job);
        }
        if self.forbidden {
            return Change::Nothing;
        }
        match (&self.running, self.wanted.is_empty()) {
            (None, false) => {
                let token = parent.child_token();
                self.running = Some(token.clone());
                Change::Start(token)
            }
            (Some(token), true) => {
                token.cancel();
                self.running = None;
                Change::Nothing
            }
            _ => Change::Nothing,
        }
    }

    /// Whether the API refused events in this namespace.
    pub(crate) fn is_forbidden(&self) -> bool {
        self.forbidden
    }

    /// Whether the events watch of this namespace is running.
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The API refused events here: stop for good.
    fn forbid(&mut self) {
        self.forbidden = true;
        if let Some(t) = self.running.take() {
            t.cancel();
        }
    }

    /// The watch of `token` ended. Unless it was stopped (then whoever stopped it already
    /// cleared it, and a newer watch may run), it was the current one: none runs now.
    fn ended(&mut self, token: &CancellationToken) {
        if !token.is_cancelled() {
            self.running = None;
        }
    }
}

/// The Job an event is about, when it is a FailedCreate event of a Job.
pub(crate) fn job_of(event: &Event) -> Option<&str> {
    let o = &event.involved_object;
    (o.kind.as_deref() == Some("Job") && event.reason.as_deref() == Some("FailedCreate"))
        .then_some(o.name.as_deref())
        .flatten()
}

/// Whether a watch error is the API refusing the permission (RBAC): then asking again is
/// pointless.
fn is_forbidden(e: &watcher::Error) -> bool {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(a))
        | watcher::Error::WatchStartFailed(kube::Error::Api(a))
        | watcher::Error::WatchError(a) => Some(a),
        _ => None,
    };
    api.is_some_and(|a| a.code == 403 || a.code == 401)
}

/// Runs the events watch of `namespace` until `stop`, delivering FailedCreate events to the
/// runs waiting on their Jobs through `index`.
pub(crate) async fn run(
    client: Client,
    namespace: String,
    index: Arc<Mutex<NamespaceIndex>>,
    stop: CancellationToken,
) {
    let api: Api<Event> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(FIELD_SELECTOR);
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    tracing::debug!(namespace = %namespace, "watching FailedCreate events of Jobs");
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = stop.cancelled() => break,
        };
        let Some(event) = next else { break };
        match event {
            Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => {
                let mut idx = lock(&index);
                if let Some(job) = job_of(&e).map(str::to_owned) {
                    idx.notify(&job, Observation::JobEvent(Arc::new(e)));
                }
            }
            Ok(_) => {}
            Err(e) if is_forbidden(&e) => {
                tracing::warn!(
                    namespace = %namespace,
                    error = %e,
                    "The worker may not list or watch events in namespace '{namespace}' (RBAC: grant `list` and `watch` on `events` in API group \"\" to its service account). \
                     Without it, runs whose pod cannot be created (exceeded quota, admission webhooks, pod security) wait without the FailedCreate diagnosis in their logs; everything else works. Events are not asked for again in this namespace."
                );
                lock(&index).events.forbid();
                return;
            }
            Err(e) => {
                tracing::debug!(namespace = %namespace, error = %e, "events watch error; retrying")
            }
        }
    }
    lock(&index).events.ended(&stop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn starts_with_the_first_need_and_stops_with_the_last() {
        let parent = CancellationToken::new();
        let mut s = EventsSource::default();
        let Change::Start(token) = s.want("a", true, &parent) else {
            panic!("first need starts the watch")
        };
        assert_eq!(s.want("b", true, &parent), Change::Nothing, "one watch");
        assert_eq!(s.want("a", false, &parent), Change::Nothing);
        assert!(!token.is_cancelled() && s.is_running());
        s.want("b", false, &parent);
        assert!(token.is_cancelled() && !s.is_running(), "last need gone");
        assert!(matches!(s.want("c", true, &parent), Change::Start(_)));
    }

    #[test]
    fn forbidden_is_never_asked_again() {
        let parent = CancellationToken::new();
        let mut s = EventsSource::default();
        let Change::Start(token) = s.want("a", true, &parent) else {
            panic!()
        };
        s.forbid();
        assert!(token.is_cancelled() && !s.is_running());
        assert_eq!(s.want("b", true, &parent), Change::Nothing);
        s.want("a", false, &parent);
        s.want("b", false, &parent);
        assert_eq!(s.want("c", true, &parent), Change::Nothing);
    }

    #[test]
    fn only_failed_create_events_of_jobs_are_delivered() {
        let ev = |kind: &str, reason: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {"kind": kind, "name": "j"}, "reason": reason})).unwrap()
        };
        assert_eq!(job_of(&ev("Job", "FailedCreate")), Some("j"));
        assert_eq!(job_of(&ev("Pod", "FailedCreate")), None);
        assert_eq!(job_of(&ev("Job", "SuccessfulCreate")), None);
    }

    #[test]
    fn rbac_refusals_are_told_apart_from_outages() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(is_forbidden(&watcher::Error::InitialListFailed(api(403))));
        assert!(!is_forbidden(&watcher::Error::InitialListFailed(api(503))));
    }
}
