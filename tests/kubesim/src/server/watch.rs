//! Watch streams: newline-delimited JSON watch events fed from the kind's
//! broadcast channel, with resume from the bounded history, bookmarks,
//! timeouts, 410 Gone and the fault knobs that cut streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{HeaderValue, Response, header};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::object::Object;
use crate::observe::WatchGuard;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeType, ListParams};

use super::handlers::{flag, list_params};

/// Real servers cap watches at a random 30-60 minutes when the client
/// gives no `timeoutSeconds`; one hour keeps the same order of magnitude.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, o: &Object) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o.namespace() == ns)
            && self.labels.matches(o.meta().labels.as_ref())
            && self.fields.matches(o)
    }

    /// The event type this watcher sees for `c`, if any. An object that
    /// stops matching the selectors is reported DELETED and one that starts
    /// matching ADDED, as the real watch cache does.
    fn event_type(&self, c: &Change) -> Option<ChangeType> {
        let now = self.matches(&c.object);
        let before = c.old.as_deref().is_some_and(|o| self.matches(o));
        match c.ty {
            ChangeType::Added => now.then_some(ChangeType::Added),
            ChangeType::Deleted => (now || before).then_some(ChangeType::Deleted),
            ChangeType::Modified => match (before, now) {
                (true, true) => Some(ChangeType::Modified),
                (false, true) => Some(ChangeType::Added),
                (true, false) => Some(ChangeType::Deleted),
                (false, false) => None,
            },
        }
    }
}

fn event_line(ty: &str, object_json: &str) -> Bytes {
    let mut s = String::with_capacity(object_json.len() + 32);
    s.push_str("{\"type\":\"");
    s.push_str(ty);
    s.push_str("\",\"object\":");
    s.push_str(object_json);
    s.push_str("}\n");
    Bytes::from(s)
}

fn error_line(e: &ApiError) -> Bytes {
    event_line("ERROR", &e.to_json().to_string())
}

fn bookmark_line(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = serde_json::json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = serde_json::json!({"kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": meta});
    event_line("BOOKMARK", &obj.to_string())
}

/// Where the stream is.
struct WatchState {
    cluster: Arc<Cluster>,
    kind: Kind,
    filter: Filter,
    /// Lines ready to send before reading the channel (initial state, history).
    queued: std::collections::VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Arc<Change>>>,
    /// Last resourceVersion of this kind the stream has passed (for bookmarks).
    last_rv: u64,
    bookmarks: bool,
    next_bookmark: Instant,
    deadline: Instant,
    events_left: Option<u64>,
    done: bool,
    _guard: WatchGuard,
}

fn stream_response(state: WatchState) -> Response<Body> {
    let stream = futures::stream::unfold(state, |mut st| async move {
        let line = next_line(&mut st).await?;
        Some((Ok::<_, Infallible>(line), st))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    r
}

async fn next_line(st: &mut WatchState) -> Option<Bytes> {
    if let Some(line) = st.queued.pop_front() {
        return Some(line);
    }
    if st.done || st.events_left == Some(0) {
        return None;
    }
    loop {
        let rx = st.rx.as_mut()?;
        let bookmark_at = if st.bookmarks {
            st.next_bookmark
        } else {
            st.deadline
        };
        tokio::select! {
            biased;
            () = st.cluster.shutdown.cancelled() => return None,
            () = tokio::time::sleep_until(st.deadline) => return None,
            r = rx.recv() => match r {
                Ok(change) => {
                    st.last_rv = change.rv;
                    if let Some(ty) = st.filter.event_type(&change) {
                        if let Some(n) = st.events_left.as_mut() {
                            *n = n.saturating_sub(1);
                        }
                        return Some(event_line(ty.as_str(), &change.object_json()));
                    }
                }
                // A watcher that fell behind the channel is closed, as the real
                // server drops slow watchers; the client re-watches from its
                // last resourceVersion (and relists on 410).
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep_until(bookmark_at), if st.bookmarks => {
                st.next_bookmark = Instant::now() + st.cluster.config.bookmark_interval;
                return Some(bookmark_line(st.kind, st.last_rv, false));
            }
        }
    }
}

/// Serve a watch request.
pub fn serve(
    cluster: &Arc<Cluster>,
    kind: Kind,
    namespace: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let params: ListParams = list_params(kind, namespace.map(str::to_string), q)?;
    let faults = cluster.faults();
    let guard = cluster.observer.watch_opened(kind.plural(), namespace);
    let now = Instant::now();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let cut = faults.watch_cut_after_seconds.map(Duration::from_secs);
    let deadline = now + cut.map_or(timeout, |c| c.min(timeout));
    let mut state = WatchState {
        cluster: cluster.clone(),
        kind,
        filter: Filter {
            namespace: params.namespace.clone(),
            labels: params.labels.clone(),
            fields: params.fields.clone(),
        },
        queued: Default::default(),
        rx: None,
        last_rv: 0,
        bookmarks: flag(q, "allowWatchBookmarks"),
        next_bookmark: now + cluster.config.bookmark_interval,
        deadline,
        events_left: faults.watch_cut_after_events,
        done: false,
        _guard: guard,
    };

    if cluster.take_forced_gone() {
        let rv: u64 = q
            .get("resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let current = cluster.with_store(|s| s.resource_version());
        state
            .queued
            .push_back(error_line(&ApiError::gone(rv, current)));
        state.done = true;
        return Ok(stream_response(state));
    }

    let requested_rv = q
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0");
    let send_initial = flag(q, "sendInitialEvents");
    let setup = cluster.with_store(|s| -> Result<(), ApiError> {
        match requested_rv {
            Some(rv) if !send_initial => {
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?;
                match s.changes_since(kind, rv) {
                    Ok(changes) => {
                        state.last_rv = rv;
                        for c in changes {
                            state.last_rv = c.rv;
                            if let Some(ty) = state.filter.event_type(&c) {
                                state
                                    .queued
                                    .push_back(event_line(ty.as_str(), &c.object_json()));
                            }
                        }
                    }
                    Err(gone) => {
                        state.queued.push_back(error_line(&gone));
                        state.done = true;
                        return Ok(());
                    }
                }
            }
            _ => {
                // No resourceVersion (or "0"): the current state as ADDED events first.
                let list = s.list(
                    kind,
                    &ListParams {
                        limit: None,
                        continue_token: None,
                        ..params.clone()
                    },
                )?;
                for o in &list.items {
                    state
                        .queued
                        .push_back(event_line("ADDED", &o.to_value().to_string()));
                }
                state.last_rv = list.resource_version;
                if send_initial {
                    state
                        .queued
                        .push_back(bookmark_line(kind, list.resource_version, true));
                }
            }
        }
        state.rx = cluster.subscribe(kind);
        Ok(())
    });
    setup?;
    Ok(stream_response(state))
}
