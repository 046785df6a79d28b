//! The Job controller's event loop: turns store changes and timers into
//! reconciles of individual Jobs.

pub mod job;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::store::{Change, ChangeType, Key};
use job::{JobSettings, Tracking};

/// Start the Job controller.
pub fn spawn(cluster: Arc<Cluster>) -> JoinHandle<()> {
    let rx = cluster.subscribe_internal();
    tokio::spawn(run(cluster, rx))
}

fn job_key(change: &Change) -> Option<Key> {
    match change.kind {
        Kind::Job => Some((
            change.object.namespace().to_string(),
            change.object.name().to_string(),
        )),
        Kind::Pod => change
            .object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true) && r.kind == "Job")
            .map(|r| (change.object.namespace().to_string(), r.name.clone())),
        _ => None,
    }
}

async fn run(cluster: Arc<Cluster>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<Change>>) {
    let settings = JobSettings {
        pod_failure_backoff: cluster.config.pod_failure_backoff,
    };
    let mut tracking: HashMap<String, Tracking> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, Key)>> = BinaryHeap::new();
    let mut dirty: BTreeSet<Key> = BTreeSet::new();
    loop {
        let next_timer = timers.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            () = cluster.shutdown.cancelled() => return,
            msg = rx.recv() => {
                let Some(first) = msg else { return };
                // Drain the burst so each Job is reconciled once per batch.
                let mut batch = vec![first];
                while let Ok(c) = rx.try_recv() {
                    batch.push(c);
                }
                for c in batch {
                    if c.kind == Kind::Job && c.ty == ChangeType::Deleted {
                        tracking.remove(c.object.uid());
                        continue;
                    }
                    if let Some(k) = job_key(&c) {
                        dirty.insert(k);
                    }
                }
            }
            () = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                while let Some(Reverse((t, _))) = timers.peek() {
                    if *t > now {
                        break;
                    }
                    if let Some(Reverse((_, k))) = timers.pop() {
                        dirty.insert(k);
                    }
                }
            }
        }
        for key in std::mem::take(&mut dirty) {
            let requeue =
                cluster.with_store(|s| job::reconcile(s, &key.0, &key.1, &mut tracking, settings));
            if let Some(d) = requeue {
                timers.push(Reverse((Instant::now() + d, key)));
            }
        }
    }
}
