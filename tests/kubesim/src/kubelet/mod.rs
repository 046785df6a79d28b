//! The kubelet: watches pods, runs one worker per pod, forwards deletions.

mod behaviour;
mod container;
mod env;
mod pod;
mod process;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::object::Object;
use crate::store::{Change, ChangeType};

/// Start the kubelet.
pub fn spawn(cluster: Arc<Cluster>) -> JoinHandle<()> {
    let rx = cluster.subscribe_internal();
    tokio::spawn(run(cluster, rx))
}

fn pod_ip(n: u32) -> String {
    // 10.244.0.0/16: the usual flannel range, 65k addresses before reuse.
    let n = n % 65_000 + 2;
    format!("10.244.{}.{}", n / 256, n % 256)
}

fn grace_of(obj: &Object) -> Duration {
    let secs = obj.meta().deletion_grace_period_seconds.unwrap_or(0).max(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

async fn run(cluster: Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<Arc<Change>>) {
    let mut workers: HashMap<String, watch::Sender<Option<Duration>>> = HashMap::new();
    let mut purge_when_done: HashMap<String, Arc<Object>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut next_ip = 0u32;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = cluster.shutdown.cancelled() => break,
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                if let Some(obj) = purge_when_done.remove(&uid) {
                    purge(&cluster, &uid, Some(&obj));
                }
            }
            msg = rx.recv() => {
                let Some(c) = msg else { break };
                if c.kind != Kind::Pod {
                    continue;
                }
                let uid = c.object.uid().to_string();
                match c.ty {
                    ChangeType::Added => {
                        let Object::Pod(p) = &*c.object else { continue };
                        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
                        if workers.contains_key(&uid) || bound || matches!(phase, "Succeeded" | "Failed") {
                            continue;
                        }
                        let (tx, stop) = watch::channel(None);
                        workers.insert(uid.clone(), tx);
                        next_ip = next_ip.wrapping_add(1);
                        let worker = pod::PodWorker { cluster: cluster.clone(), pod: (**p).clone(), pod_ip: pod_ip(next_ip), stop };
                        let done = done_tx.clone();
                        tasks.spawn(async move {
                            worker.run().await;
                            let _ = done.send(uid);
                        });
                    }
                    ChangeType::Modified => {
                        if c.object.meta().deletion_timestamp.is_some()
                            && let Some(tx) = workers.get(&uid)
                        {
                            let grace = grace_of(&c.object);
                            tx.send_if_modified(|cur| match cur {
                                Some(g) if *g <= grace => false,
                                _ => {
                                    *cur = Some(grace);
                                    true
                                }
                            });
                        }
                    }
                    ChangeType::Deleted => {
                        if let Some(tx) = workers.get(&uid) {
                            let _ = tx.send(Some(Duration::ZERO));
                            purge_when_done.insert(uid, c.object.clone());
                        } else {
                            purge(&cluster, &uid, Some(&c.object));
                        }
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Shutdown: kill every container now. Dropping the tasks drops their
    // processes, whose Drop sends SIGKILL to each process group.
    tasks.shutdown().await;
}

/// Forget a deleted pod's logs and working directory.
fn purge(cluster: &Cluster, uid: &str, obj: Option<&Object>) {
    cluster.logs.remove_pod(uid);
    if let Some(o) = obj {
        let dir = cluster.config.work_dir.join(o.namespace()).join(format!(
            "{}-{}",
            o.name(),
            uid.get(..8).unwrap_or(uid)
        ));
        // Best effort: the directory may never have been created.
        let _ = std::fs::remove_dir_all(dir);
    }
}
