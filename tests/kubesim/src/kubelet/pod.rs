//! One pod's life on the node: scheduling, sandbox, containers, phase and
//! conditions, termination.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};

use super::behaviour::{Behaviour, from_image};
use super::container::{self, ContainerCtx, ContainerUpdate};
use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::object::Object;

/// The simulated node's IP.
pub const HOST_IP: &str = "10.0.0.10";

/// Everything a pod worker needs.
#[derive(Debug)]
pub struct PodWorker {
    /// Shared cluster.
    pub cluster: Arc<Cluster>,
    /// The pod as first seen.
    pub pod: Pod,
    /// The pod's IP (allocated by the kubelet loop).
    pub pod_ip: String,
    /// Stop requests: `Some(grace)` once the pod is being deleted.
    pub stop: watch::Receiver<Option<Duration>>,
}

fn cond(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    prev: &[PodCondition],
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status does not change.
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(crate::clock::now()));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

struct Snapshot<'a> {
    statuses: &'a [ContainerStatus],
    finished: &'a [bool],
    evicted: Option<&'a str>,
}

fn phase(s: &Snapshot<'_>) -> &'static str {
    let all_finished = s.finished.iter().all(|f| *f);
    if all_finished {
        let all_ok = s.statuses.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        });
        return if all_ok && s.evicted.is_none() {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let any_started = s.statuses.iter().any(|c| {
        c.restart_count > 0
            || c.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    });
    if any_started { "Running" } else { "Pending" }
}

impl PodWorker {
    fn names(&self) -> (String, String, String) {
        let m = &self.pod.metadata;
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
        )
    }

    fn update(&self, f: impl FnOnce(&mut Pod)) -> bool {
        let (ns, name, uid) = self.names();
        self.cluster
            .with_store(|s| {
                s.update_with(Kind::Pod, &ns, &name, &uid, |o| {
                    if let Object::Pod(p) = o {
                        f(p);
                    }
                })
            })
            .is_some()
    }

    fn event(&self, type_: &str, reason: &str, message: &str, component: &str) {
        let (ns, name, _) = self.names();
        self.cluster.with_store(|s| {
            if let Some(p) = s.get(Kind::Pod, &ns, &name) {
                s.record_event(&p, type_, reason, message, component);
            }
        });
    }

    async fn wait_stop(&mut self) -> Duration {
        loop {
            if let Some(g) = *self.stop.borrow() {
                return g;
            }
            if self.stop.changed().await.is_err() {
                return Duration::ZERO;
            }
        }
    }

    fn finalize(&self) {
        let (ns, name, uid) = self.names();
        self.cluster
            .with_store(|s| s.finalize_pod(&ns, &name, &uid));
    }

    /// Drive the pod until it is terminal or deleted.
    pub async fn run(mut self) {
        let (ns, name, uid) = self.names();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let node = self.cluster.config.node_name.clone();

        if spec
            .containers
            .iter()
            .any(|c| from_image(c.image.as_deref().unwrap_or_default()) == Behaviour::Unschedulable)
        {
            let msg = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
            self.update(|p| {
                let st = p.status.get_or_insert_with(Default::default);
                st.phase = Some("Pending".into());
                st.conditions = Some(vec![cond(
                    "PodScheduled",
                    false,
                    Some("Unschedulable"),
                    Some(msg.into()),
                    &[],
                )]);
            });
            self.event("Warning", "FailedScheduling", msg, "default-scheduler");
            self.wait_stop().await;
            self.finalize();
            return;
        }

        // Bind to the node and set up the "sandbox".
        let pod_ip = self.pod_ip.clone();
        let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        let bound = self.update(|p| {
            p.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
            let st = p.status.get_or_insert_with(PodStatus::default);
            st.phase = Some("Pending".into());
            st.conditions = Some(vec![cond("PodScheduled", true, None, None, &[])]);
        });
        if !bound {
            return;
        }
        self.event(
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {node}"),
            "default-scheduler",
        );
        let mut bound_pod = self.pod.clone();
        bound_pod
            .spec
            .get_or_insert_with(Default::default)
            .node_name = Some(node.clone());
        let st = bound_pod.status.get_or_insert_with(Default::default);
        st.pod_ip = Some(pod_ip.clone());
        st.host_ip = Some(HOST_IP.into());

        let n = spec.containers.len();
        let mut statuses: Vec<ContainerStatus> = vec![ContainerStatus::default(); n];
        let mut finished = vec![false; n];
        let (tx, mut rx) = mpsc::unbounded_channel::<ContainerUpdate>();
        let (kill_tx, kill_rx) = watch::channel::<Option<Duration>>(None);
        let work_dir = self
            .cluster
            .config
            .work_dir
            .join(&ns)
            .join(format!("{name}-{}", uid.get(..8).unwrap_or(&uid)));
        let mut tasks = Vec::new();
        for (i, cname) in names.iter().enumerate() {
            let ctx = ContainerCtx {
                cluster: self.cluster.clone(),
                pod: bound_pod.clone(),
                index: i,
                work_dir: work_dir.join(cname),
            };
            tasks.push(tokio::spawn(container::run(
                ctx,
                tx.clone(),
                kill_rx.clone(),
            )));
        }
        drop(tx);

        let start_time = Time(crate::clock::now());
        let mut evicted: Option<String> = None;
        let mut stopping = false;
        loop {
            tokio::select! {
                upd = rx.recv() => {
                    let Some(u) = upd else { break };
                    if let Some(i) = statuses.get_mut(u.index) {
                        *i = u.status;
                    }
                    if let Some(f) = finished.get_mut(u.index) {
                        *f |= u.finished;
                    }
                    if let Some(msg) = u.evict {
                        evicted = Some(msg);
                        self.event("Warning", "Evicted", evicted.as_deref().unwrap_or_default(), "kubelet");
                        let _ = kill_tx.send(Some(Duration::ZERO));
                    }
                }
                grace = self.wait_stop(), if !stopping => {
                    stopping = true;
                    let _ = kill_tx.send(Some(grace));
                    continue;
                }
            }
            let snap = Snapshot {
                statuses: &statuses,
                finished: &finished,
                evicted: evicted.as_deref(),
            };
            let ph = phase(&snap);
            let all_ready = statuses.iter().all(|c| c.ready);
            let terminal = matches!(ph, "Succeeded" | "Failed");
            let unready: Vec<&str> = statuses
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.as_str())
                .collect();
            let exists = self.update(|p| {
                let st = p.status.get_or_insert_with(PodStatus::default);
                let prev = st.conditions.clone().unwrap_or_default();
                let (reason, message) = if terminal {
                    (Some("PodCompleted"), None)
                } else if all_ready {
                    (None, None)
                } else {
                    (
                        Some("ContainersNotReady"),
                        Some(format!(
                            "containers with unready status: [{}]",
                            unready.join(" ")
                        )),
                    )
                };
                let ready = all_ready && !terminal;
                let mut conds = vec![
                    cond("PodReadyToStartContainers", !terminal, None, None, &prev),
                    cond(
                        "Initialized",
                        true,
                        terminal.then_some("PodCompleted"),
                        None,
                        &prev,
                    ),
                    cond("Ready", ready, reason, message.clone(), &prev),
                    cond("ContainersReady", ready, reason, message, &prev),
                    cond("PodScheduled", true, None, None, &prev),
                ];
                if evicted.is_some() {
                    conds.push(cond(
                        "DisruptionTarget",
                        true,
                        Some("TerminationByKubelet"),
                        Some("The node was low on resource: memory. ".into()),
                        &prev,
                    ));
                }
                st.conditions = Some(conds);
                st.phase = Some(ph.into());
                st.host_ip = Some(HOST_IP.into());
                st.host_ips = Some(vec![HostIP { ip: HOST_IP.into() }]);
                st.pod_ip = Some(pod_ip.clone());
                st.pod_ips = Some(vec![PodIP { ip: pod_ip.clone() }]);
                st.start_time.get_or_insert_with(|| start_time.clone());
                st.container_statuses = Some(statuses.clone());
                if let Some(msg) = &evicted {
                    st.reason = Some("Evicted".into());
                    st.message = Some(msg.clone());
                }
            });
            if !exists {
                // Deleted without grace: containers were told to die; just wait for them.
                let _ = kill_tx.send(Some(Duration::ZERO));
            }
            if finished.iter().all(|f| *f) {
                break;
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        if stopping {
            self.finalize();
        }
    }
}
