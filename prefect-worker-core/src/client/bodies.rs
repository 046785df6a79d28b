//! The JSON bodies the endpoints send (spec §3.3, API_CALLS.md §A), as pure functions so
//! their exact shape is unit-tested against the captured examples.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::models::{JsonMap, StateCreate};

/// Every `state_details` field Python sends, in its order, with its default. The server
/// needs only `flow_run_id` and `transition_id`, but sending the full set keeps the wire
/// identical to the Python worker.
fn state_details_defaults() -> JsonMap {
    let mut m = JsonMap::new();
    for (k, v) in [
        ("flow_run_id", Value::Null),
        ("task_run_id", Value::Null),
        ("child_flow_run_id", Value::Null),
        ("scheduled_time", Value::Null),
        ("cache_key", Value::Null),
        ("cache_expiration", Value::Null),
        ("deferred", Value::Null),
        ("untrackable_result", Value::Bool(false)),
        ("pause_timeout", Value::Null),
        ("pause_reschedule", Value::Bool(false)),
        ("pause_key", Value::Null),
        ("run_input_keyset", Value::Null),
        ("refresh_cache", Value::Null),
        ("retriable", Value::Null),
        ("transition_id", Value::Null),
        ("task_parameters_id", Value::Null),
        ("traceparent", Value::Null),
        ("deployment_concurrency_lease_id", Value::Null),
    ] {
        m.insert(k.to_owned(), v);
    }
    m
}

/// `POST /flow_runs/{id}/set_state`: the proposed state with the defaults filled in, the
/// caller's details over them, and this run's id plus `transition_id` set last.
pub(crate) fn set_state(
    flow_run_id: Uuid,
    state: &StateCreate,
    force: bool,
    transition_id: Uuid,
) -> Value {
    let mut details = state_details_defaults();
    for (k, v) in &state.state_details {
        details.insert(k.clone(), v.clone());
    }
    details.insert("flow_run_id".to_owned(), json!(flow_run_id));
    details.insert("transition_id".to_owned(), json!(transition_id));
    json!({
        "state": {
            "type": state.state_type.as_str(),
            "name": state.name,
            "message": state.message,
            "state_details": details,
            "data": state.data,
        },
        "force": force,
    })
}

/// `POST /work_pools/{pool}/get_scheduled_flow_runs`. No `limit`/`scheduled_after`, as
/// Python sends none; an empty queue list means all queues.
pub(crate) fn scheduled_flow_runs(
    work_queue_names: &[String],
    scheduled_before: DateTime<Utc>,
) -> Value {
    json!({
        "work_queue_names": work_queue_names,
        "scheduled_before": scheduled_before.to_rfc3339_opts(SecondsFormat::Micros, true),
    })
}

/// `POST /work_pools/{pool}/queues/filter`: all queues, or those named.
pub(crate) fn work_queue_filter(names: Option<&[String]>) -> Value {
    let work_queues = names.map_or(Value::Null, |n| json!({"name": {"any_": n}}));
    json!({"work_queues": work_queues, "limit": null, "offset": null})
}

/// `POST /work_pools/{pool}/workers/heartbeat`, in Python's key order: `metadata` and
/// `return_id` only when set (Prefect Cloud, spec §2.2C).
pub(crate) fn heartbeat(
    worker_name: &str,
    heartbeat_interval_seconds: u64,
    metadata: Option<&Value>,
    return_id: bool,
) -> Value {
    let mut body =
        json!({"name": worker_name, "heartbeat_interval_seconds": heartbeat_interval_seconds});
    if let Some(m) = metadata {
        body["metadata"] = m.clone();
    }
    if return_id {
        body["return_id"] = Value::Bool(true);
    }
    body
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn example(name: &str) -> Value {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn set_state_matches_the_captured_pending_body() {
        let want = example("set_state_pending.request.json");
        let run: Uuid = want["state"]["state_details"]["flow_run_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let tid: Uuid = want["state"]["state_details"]["transition_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let got = set_state(run, &StateCreate::pending(), false, tid);
        assert_eq!(got, want);
        // Key order too, since the Python worker's body is the reference.
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
    }

    #[test]
    fn set_state_matches_the_captured_crashed_body() {
        let want = example("set_state_crashed.request.json");
        let d = &want["state"]["state_details"];
        let run: Uuid = d["flow_run_id"].as_str().unwrap().parse().unwrap();
        let tid: Uuid = d["transition_id"].as_str().unwrap().parse().unwrap();
        let msg = want["state"]["message"].as_str().unwrap();
        let got = set_state(
            run,
            &StateCreate::crashed(msg),
            want["force"].as_bool().unwrap(),
            tid,
        );
        assert_eq!(got, want);
    }

    #[test]
    fn caller_details_are_kept_but_ids_are_ours() {
        let mut s = StateCreate::pending();
        s.state_details
            .insert("scheduled_time".into(), json!("2026-01-01T00:00:00Z"));
        s.state_details.insert(
            "flow_run_id".into(),
            json!("00000000-0000-0000-0000-000000000000"),
        );
        let run = Uuid::new_v4();
        let b = set_state(run, &s, true, Uuid::new_v4());
        assert_eq!(
            b["state"]["state_details"]["scheduled_time"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(b["state"]["state_details"]["flow_run_id"], json!(run));
        assert_eq!(b["force"], true);
    }

    #[test]
    fn scheduled_runs_body() {
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 2, 32, 46).unwrap();
        let b = scheduled_flow_runs(&["a".into()], at);
        assert_eq!(
            b,
            json!({"work_queue_names": ["a"], "scheduled_before": "2026-11-29T02:32:46.000000Z"})
        );
        assert_eq!(scheduled_flow_runs(&[], at)["work_queue_names"], json!([]));
    }

    #[test]
    fn queue_filter_and_heartbeat_bodies() {
        assert_eq!(
            work_queue_filter(None),
            json!({"work_queues": null, "limit": null, "offset": null})
        );
        assert_eq!(
            work_queue_filter(Some(&["q".into()]))["work_queues"],
            json!({"name": {"any_": ["q"]}})
        );
        assert_eq!(
            heartbeat("rest-worker", 30, None, false),
            example("worker_heartbeat.request.json")
        );
        // Cloud: metadata, then return_id, after Python's two keys.
        let metadata =
            json!({"integrations": [{"name": "prefect-kubernetes", "version": "0.8.0"}]});
        let body = heartbeat("w", 30, Some(&metadata), true);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"name":"w","heartbeat_interval_seconds":30,"metadata":{"integrations":[{"name":"prefect-kubernetes","version":"0.8.0"}]},"return_id":true}"#
        );
    }
}
