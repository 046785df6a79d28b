//! The four events a worker emits about itself and the runs it submits, built exactly as
//! Python's `BaseWorker` builds them (spec §4.6, `examples/event_prefect.worker.*.json`).
//! Pure: the runner decides when to emit them.

use std::collections::BTreeSet;

use super::model::{Event, Resource};
use crate::client::models::{Deployment, Flow, FlowRun, WorkPool};
use crate::slug::slugify_default;

/// `prefect.worker.started`: after setup, when the loops run.
pub const WORKER_STARTED: &str = "prefect.worker.started";
/// `prefect.worker.stopped`: at teardown.
pub const WORKER_STOPPED: &str = "prefect.worker.stopped";
/// `prefect.worker.submitted-flow-run`: once the run's configuration is built.
pub const SUBMITTED_FLOW_RUN: &str = "prefect.worker.submitted-flow-run";
/// `prefect.worker.executed-flow-run`: once the infrastructure exists (see
/// [`WorkerEvents::executed`]).
pub const EXECUTED_FLOW_RUN: &str = "prefect.worker.executed-flow-run";

/// Builds this worker's events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerEvents {
    resource: Resource,
}

impl WorkerEvents {
    /// Events of a worker of `worker_type` named `worker_name`, speaking as Prefect
    /// `prefect_version`.
    #[must_use]
    pub fn new(worker_type: &str, worker_name: &str, prefect_version: &str) -> Self {
        Self {
            resource: worker_resource(worker_type, worker_name, prefect_version),
        }
    }

    /// The worker resource every worker event is about.
    #[must_use]
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// `prefect.worker.started`, related to the pool when it is known.
    #[must_use]
    pub fn started(&self, pool: Option<&WorkPool>) -> Event {
        Event::new(WORKER_STARTED, self.resource.clone()).with_related(pool_related(pool))
    }

    /// `prefect.worker.stopped`, following the started event (when it is recent).
    #[must_use]
    pub fn stopped(&self, pool: Option<&WorkPool>, started: Option<&Event>) -> Event {
        Event::new(WORKER_STOPPED, self.resource.clone())
            .with_related(pool_related(pool))
            .following(started.map(Event::anchor))
    }

    /// `prefect.worker.submitted-flow-run`. Related, in Python's order: deployment, flow,
    /// flow run, one tag resource per tag of the sorted union of their tags, work pool.
    #[must_use]
    pub fn submitted(
        &self,
        flow_run: &FlowRun,
        deployment: Option<&Deployment>,
        flow: Option<&Flow>,
        pool: Option<&WorkPool>,
    ) -> Event {
        let mut tags: BTreeSet<&str> = BTreeSet::new();
        let mut related = Vec::new();
        if let Some(d) = deployment {
            tags.extend(d.tags.iter().map(String::as_str));
            related.push(deployment_related(d));
        }
        if let Some(f) = flow {
            tags.extend(f.tags.iter().map(String::as_str));
            related.push(Resource::related(
                format!("prefect.flow.{}", f.id),
                "flow",
                Some(&f.name),
            ));
        }
        tags.extend(flow_run.tags.iter().map(String::as_str));
        related.push(Resource::related(
            format!("prefect.flow-run.{}", flow_run.id),
            "flow-run",
            Some(&flow_run.name),
        ));
        related.extend(
            tags.into_iter()
                .map(|t| Resource::related(format!("prefect.tag.{t}"), "tag", None)),
        );
        related.extend(pool_related(pool));
        Event::new(SUBMITTED_FLOW_RUN, self.resource.clone()).with_related(related)
    }

    /// `prefect.worker.executed-flow-run`: the submitted event's related resources, the
    /// flow-run entry carrying `prefect.infrastructure.identifier` and
    /// `prefect.infrastructure.status-code`, following the submitted event.
    ///
    /// Python emits it when `run` returns, which for the Kubernetes worker is right after
    /// the Job is created, with status code 0. This worker's `run` waits for the Job to
    /// finish, so the runner emits it at the same moment Python does — when the
    /// infrastructure is reported started — with status code 0; the outcome is reported
    /// through the flow run's state (and the pod events), as with Python.
    #[must_use]
    pub fn executed(&self, submitted: &Event, identifier: &str, status_code: i64) -> Event {
        let mut related = submitted.related.clone();
        for r in &mut related {
            if r.role() == Some("flow-run") {
                r.set("prefect.infrastructure.identifier", identifier);
                r.set(
                    "prefect.infrastructure.status-code",
                    status_code.to_string(),
                );
            }
        }
        Event::new(EXECUTED_FLOW_RUN, self.resource.clone())
            .with_related(related)
            .following(Some(submitted.anchor()))
    }
}

/// `prefect.worker.<type>.<slugify(name)>` with name, version and type labels.
#[must_use]
pub fn worker_resource(worker_type: &str, worker_name: &str, prefect_version: &str) -> Resource {
    Resource::new(format!(
        "prefect.worker.{worker_type}.{}",
        slugify_default(worker_name)
    ))
    .with("prefect.resource.name", worker_name)
    .with("prefect.version", prefect_version)
    .with("prefect.worker-type", worker_type)
}

fn pool_related(pool: Option<&WorkPool>) -> Vec<Resource> {
    pool.map(|p| {
        Resource::related(
            format!("prefect.work-pool.{}", p.id),
            "work-pool",
            Some(&p.name),
        )
    })
    .into_iter()
    .collect()
}

/// `DeploymentResponse.as_related_resource`: id, role, name, then the branch and
/// version labels when the deployment has them.
fn deployment_related(d: &Deployment) -> Resource {
    let mut r = Resource::related(
        format!("prefect.deployment.{}", d.id),
        "deployment",
        Some(&d.name),
    );
    let text = |key: &str| {
        d.extra
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(branch) = text("branch") {
        r.set("prefect.deployment.branch", branch);
    }
    if let Some(base) = text("base") {
        r.set(
            "prefect.deployment.base",
            format!("prefect.deployment.{base}"),
        );
    }
    if let Some(root) = text("root") {
        r.set(
            "prefect.deployment.root",
            format!("prefect.deployment.{root}"),
        );
    }
    let info = d.extra.get("version_info").and_then(|v| v.as_object());
    if let (Some(version_id), Some(info)) = (text("version_id"), info) {
        r.set("prefect.deployment.version-id", version_id);
        let field = |k: &str| info.get(k).and_then(serde_json::Value::as_str);
        if let Some(t) = field("type") {
            r.set("prefect.deployment.version-type", t);
        }
        if let Some(v) = field("version") {
            r.set("prefect.deployment.version", v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn example(name: &str) -> Value {
        let text = match name {
            "prefect.worker.started" => {
                include_str!("../../tests/data/event_prefect.worker.started.json")
            }
            "prefect.worker.stopped" => {
                include_str!("../../tests/data/event_prefect.worker.stopped.json")
            }
            "prefect.worker.submitted-flow-run" => {
                include_str!("../../tests/data/event_prefect.worker.submitted-flow-run.json")
            }
            _ => include_str!("../../tests/data/event_prefect.worker.executed-flow-run.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    fn objects() -> (FlowRun, Deployment, Flow, WorkPool) {
        let flow_run: FlowRun = serde_json::from_value(json!({
            "id": "6e1d43e4-cd49-4040-95f7-50ae7be06196", "name": "scrupulous-muskrat",
            "flow_id": "6e1b5c2c-c4bc-4410-8d63-1cb54778ddf2", "tags": ["t2", "runtag"]
        }))
        .unwrap();
        let deployment: Deployment = serde_json::from_value(json!({
            "id": "ec987eee-55a1-4b59-ad3b-b5b4e77cf0f6", "name": "my-deploy", "tags": ["t1"],
            "branch": null, "base": null, "root": null, "version_id": null, "version_info": null
        }))
        .unwrap();
        let flow: Flow = serde_json::from_value(json!({
            "id": "6e1b5c2c-c4bc-4410-8d63-1cb54778ddf2", "name": "My Flow_Name", "tags": ["t2"]
        }))
        .unwrap();
        let pool: WorkPool = serde_json::from_value(json!({
            "id": "3783ef14-e097-4921-a327-4634e7c24be2", "name": "k8s-pool", "type": "kubernetes"
        }))
        .unwrap();
        (flow_run, deployment, flow, pool)
    }

    /// The event as JSON, without what differs per emission (id, time, follows).
    fn shape(e: &Event) -> Value {
        let mut v = serde_json::to_value(e).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["id", "occurred", "follows"] {
            o.remove(k);
        }
        v
    }

    fn example_shape(name: &str) -> Value {
        let mut v = example(name);
        let o = v.as_object_mut().unwrap();
        for k in ["id", "occurred", "follows"] {
            o.remove(k);
        }
        v
    }

    #[test]
    fn worker_events_match_the_traced_examples() {
        let (flow_run, deployment, flow, pool) = objects();
        let w = WorkerEvents::new("kubernetes", "trace-worker", "3.9.1");
        let started = w.started(Some(&pool));
        assert_eq!(shape(&started), example_shape("prefect.worker.started"));
        assert_eq!(started.follows, None);
        let stopped = w.stopped(Some(&pool), Some(&started));
        assert_eq!(shape(&stopped), example_shape("prefect.worker.stopped"));
        assert_eq!(stopped.follows, Some(started.id));
        let submitted = w.submitted(&flow_run, Some(&deployment), Some(&flow), Some(&pool));
        assert_eq!(
            shape(&submitted),
            example_shape("prefect.worker.submitted-flow-run")
        );
        let executed = w.executed(&submitted, "prefect-ns:scrupulous-muskrat-fcbon", 0);
        assert_eq!(
            shape(&executed),
            example_shape("prefect.worker.executed-flow-run")
        );
        assert_eq!(executed.follows, Some(submitted.id));
        // Key order, not just content, as the server and the examples show it.
        assert_eq!(
            serde_json::to_string(&shape(&executed)).unwrap(),
            serde_json::to_string(&example_shape("prefect.worker.executed-flow-run")).unwrap()
        );
    }

    #[test]
    fn runs_without_deployment_and_versioned_deployments() {
        let (flow_run, mut deployment, flow, _) = objects();
        let w = WorkerEvents::new("kubernetes", "Rest Worker", "3.9.1");
        assert_eq!(w.resource().id(), "prefect.worker.kubernetes.rest-worker");
        let e = w.submitted(&flow_run, None, Some(&flow), None);
        let roles: Vec<_> = e.related.iter().map(|r| r.role().unwrap()).collect();
        assert_eq!(roles, ["flow", "flow-run", "tag", "tag"]);
        deployment.extra.insert("branch".into(), json!("dev"));
        deployment.extra.insert(
            "version_id".into(),
            json!("11111111-2222-3333-4444-555555555555"),
        );
        deployment.extra.insert(
            "version_info".into(),
            json!({"type": "git", "version": "abc"}),
        );
        let r = deployment_related(&deployment);
        let labels: Vec<_> = r.labels().map(|(k, _)| k).collect();
        assert_eq!(
            labels,
            [
                "prefect.resource.id",
                "prefect.resource.role",
                "prefect.resource.name",
                "prefect.deployment.branch",
                "prefect.deployment.version-id",
                "prefect.deployment.version-type",
                "prefect.deployment.version"
            ]
        );
    }
}
