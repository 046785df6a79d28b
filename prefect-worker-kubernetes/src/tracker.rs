//! One shared watch per (cluster, namespace) that decides every run's outcome.
//!
//! For each namespace the worker has Jobs in, the tracker runs exactly two watches (Jobs
//! and Pods), filtered on the server by a label selector (`prefect.io/flow-run-id` and this
//! worker's `prefect.io/worker-name`), built on `kube::runtime::watcher` (relist on 410,
//! back-off, bookmarks). It keeps the latest version of every matching object and forwards
//! changes to the run waiting on that Job through a channel: N runs, still two watches.
//! Watches start with the first run in a namespace and stay up while the worker lives.
//! A third, the namespace's `FailedCreate` events (`job_events`), runs only while some run
//! there waits without a pod.
//! The same pod watch feeds the pod events ([`PodEventReplicator`]), when they are on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as K8sEvent, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::index_objects::{IndexedJob, IndexedPod, pod_job_name};
use crate::job_events::{self, Change, EventsSource};
use crate::metrics::KubernetesMetrics;
use crate::pod_replicator::PodEventReplicator;

/// A change to a tracked Job or one of its pods.
#[derive(Debug, Clone)]
pub enum Observation {
    Job(Arc<IndexedJob>),
    JobDeleted,
    Pod(Arc<IndexedPod>),
    PodDeleted(String),
    /// A `FailedCreate` event about the Job (only while the run asked for events).
    JobEvent(Arc<K8sEvent>),
}

/// Pure index of one namespace: latest objects (as the compact types of `index_objects`)
/// and who waits on which Job.
#[derive(Debug, Default)]
pub(crate) struct NamespaceIndex {
    jobs: HashMap<String, Arc<IndexedJob>>,
    pods: HashMap<String, Arc<IndexedPod>>,
    subscribers: HashMap<String, mpsc::UnboundedSender<Observation>>,
    /// Names seen during a relist, to find what vanished while the watch was down.
    relist_jobs: Option<HashSet<String>>,
    relist_pods: Option<HashSet<String>>,
    /// The namespace's shared FailedCreate events source.
    pub(crate) events: EventsSource,
}

impl NamespaceIndex {
    pub(crate) fn notify(&mut self, job_name: &str, obs: Observation) {
        if let Some(tx) = self.subscribers.get(job_name)
            && tx.send(obs).is_err()
        {
            self.subscribers.remove(job_name);
        }
    }

    fn apply_job(&mut self, job: &Job, relisting: bool) {
        let Some(name) = job.metadata.name.clone() else {
            return;
        };
        if relisting && let Some(s) = self.relist_jobs.as_mut() {
            s.insert(name.clone());
        }
        let job = Arc::new(IndexedJob::from(job));
        if !self.subscribers.contains_key(&name) && job.finished() {
            // Nobody waits on a finished Job: forget it and its pods, so the index holds
            // only live Jobs however long the worker runs.
            self.jobs.remove(&name);
            self.forget_pods_of(&name);
            return;
        }
        self.jobs.insert(name.clone(), job.clone());
        self.notify(&name, Observation::Job(job));
    }

    /// The last waiter on `name` is gone: a finished Job, and its pods, leave the index. A
    /// finished Job may never change again (no `ttlSecondsAfterFinished`: Prefect's default
    /// template sets none), so no later event would remove it, and the index would grow by
    /// a Job and its pods with every run for the worker's lifetime.
    fn unsubscribe(&mut self, name: &str) {
        self.subscribers.remove(name);
        if self.jobs.get(name).is_some_and(|j| j.finished()) {
            self.jobs.remove(name);
            self.forget_pods_of(name);
        }
    }

    fn forget_pods_of(&mut self, job: &str) {
        self.pods.retain(|_, p| p.job_name.as_deref() != Some(job));
    }

    fn delete_job(&mut self, name: &str) {
        if self.jobs.remove(name).is_some() {
            self.notify(name, Observation::JobDeleted);
        }
    }

    fn apply_pod(&mut self, pod: &Pod, relisting: bool) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        if relisting && let Some(s) = self.relist_pods.as_mut() {
            s.insert(name.clone());
        }
        let job = pod_job_name(pod).map(str::to_owned);
        let watched = job
            .as_ref()
            .is_some_and(|j| self.subscribers.contains_key(j));
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if !watched && terminal {
            self.pods.remove(&name);
            return;
        }
        let pod = Arc::new(IndexedPod::from(pod));
        self.pods.insert(name, pod.clone());
        if let Some(job) = job {
            self.notify(&job, Observation::Pod(pod));
        }
    }

    fn delete_pod(&mut self, name: &str) {
        if let Some(pod) = self.pods.remove(name)
            && let Some(job) = pod.job_name.as_deref()
        {
            self.notify(job, Observation::PodDeleted(name.to_owned()));
        }
    }

    fn finish_job_relist(&mut self) {
        if let Some(seen) = self.relist_jobs.take() {
            let gone: Vec<String> = self
                .jobs
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for name in gone {
                self.delete_job(&name);
            }
        }
    }

    fn finish_pod_relist(&mut self) {
        if let Some(seen) = self.relist_pods.take() {
            let gone: Vec<String> = self
                .pods
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for name in gone {
                self.delete_pod(&name);
            }
        }
    }

    /// Subscribes to `job`, replaying what is already known about it.
    fn subscribe(&mut self, job: &str) -> mpsc::UnboundedReceiver<Observation> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(j) = self.jobs.get(job) {
            let _ = tx.send(Observation::Job(j.clone()));
        }
        for p in self
            .pods
            .values()
            .filter(|p| p.job_name.as_deref() == Some(job))
        {
            let _ = tx.send(Observation::Pod(p.clone()));
        }
        self.subscribers.insert(job.to_owned(), tx);
        rx
    }
}

/// Identifies one namespace of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// Which cluster ("" for the worker's default one; else a digest of `cluster_config`).
    pub cluster: String,
    pub namespace: String,
}

#[derive(Debug)]
struct Watched {
    index: Arc<Mutex<NamespaceIndex>>,
}

/// What a subscription needs to start its namespace's events source.
#[derive(Clone)]
struct EventsContext {
    client: Client,
    namespace: String,
    stop: CancellationToken,
}

/// The shared tracker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracker {
    selector: String,
    namespaces: Arc<Mutex<HashMap<WatchKey, Watched>>>,
    stop: CancellationToken,
    pod_events: Arc<OnceLock<PodEventReplicator>>,
    metrics: Option<KubernetesMetrics>,
}

/// Waiting on one Job. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub observations: mpsc::UnboundedReceiver<Observation>,
    index: Arc<Mutex<NamespaceIndex>>,
    job: String,
    events: EventsContext,
    wants_events: bool,
}

impl std::fmt::Debug for EventsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsContext")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Asks for (or gives up) the Job's `FailedCreate` events, delivered as
    /// [`Observation::JobEvent`]: the namespace's one events watch runs while any run
    /// there wants them (see `job_events`). Returns `false` when the API already refused
    /// events in this namespace (RBAC), so none will come.
    pub fn want_events(&mut self, wanted: bool) -> bool {
        if wanted == self.wants_events {
            return true;
        }
        self.wants_events = wanted;
        let (change, forbidden) = {
            let mut idx = lock(&self.index);
            let change = idx.events.want(&self.job, wanted, &self.events.stop);
            (change, idx.events.is_forbidden())
        };
        if let Change::Start(token) = change {
            tokio::spawn(job_events::run(
                self.events.client.clone(),
                self.events.namespace.clone(),
                self.index.clone(),
                token,
            ));
        }
        !forbidden
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.want_events(false);
        if let Ok(mut idx) = self.index.lock() {
            idx.unsubscribe(&self.job);
        }
    }
}

pub(crate) fn lock(index: &Mutex<NamespaceIndex>) -> std::sync::MutexGuard<'_, NamespaceIndex> {
    // Every mutation is a single map operation; a panic elsewhere cannot leave it half-done.
    index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tracker {
    /// A tracker whose watches select `label_selector`.
    #[must_use]
    pub fn new(label_selector: String) -> Self {
        Self {
            selector: label_selector,
            namespaces: Arc::default(),
            stop: CancellationToken::new(),
            pod_events: Arc::default(),
            metrics: None,
        }
    }

    /// Counts the watches' restarts and relists, by namespace, in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<KubernetesMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Feeds every pod the watches see to `replicator` (set once, before the first
    /// watch starts; later calls are ignored).
    pub fn replicate_pod_events(&self, replicator: PodEventReplicator) {
        let _ = self.pod_events.set(replicator);
    }

    /// The pod-event replicator, when pod events are on.
    #[must_use]
    pub fn pod_events(&self) -> Option<&PodEventReplicator> {
        self.pod_events.get()
    }

    /// The label selector the watches use.
    #[must_use]
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Subscribes to the Job `job` in `key`'s namespace, starting that namespace's watches
    /// with `client` when it is the first.
    pub fn subscribe(&self, key: &WatchKey, client: &Client, job: &str) -> Subscription {
        let index = {
            let mut namespaces = self
                .namespaces
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            namespaces
                .entry(key.clone())
                .or_insert_with(|| {
                    let index = Arc::new(Mutex::new(NamespaceIndex::default()));
                    self.start_watches(key, client.clone(), index.clone());
                    Watched { index }
                })
                .index
                .clone()
        };
        let observations = lock(&index).subscribe(job);
        Subscription {
            observations,
            index,
            job: job.to_owned(),
            events: EventsContext {
                client: client.clone(),
                namespace: key.namespace.clone(),
                stop: self.stop.clone(),
            },
            wants_events: false,
        }
    }

    fn start_watches(&self, key: &WatchKey, client: Client, index: Arc<Mutex<NamespaceIndex>>) {
        let config = watcher::Config::default().labels(&self.selector);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &key.namespace);
        let pods: Api<Pod> = Api::namespaced(client, &key.namespace);
        tracing::info!(namespace = %key.namespace, selector = %self.selector, "watching Jobs and Pods");
        if let Some(m) = &self.metrics {
            m.watching(&key.namespace);
        }
        let counts = |resource| WatchCounts {
            metrics: self.metrics.clone(),
            namespace: key.namespace.clone(),
            resource,
        };
        tokio::spawn(run_watch(
            jobs,
            config.clone(),
            index.clone(),
            self.stop.clone(),
            JobSide,
            counts("jobs"),
        ));
        let side = PodSide {
            events: self.pod_events.get().cloned(),
        };
        tokio::spawn(run_watch(
            pods,
            config,
            index,
            self.stop.clone(),
            side,
            counts("pods"),
        ));
    }

    /// Stops every watch.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// How one kind of object updates the index.
trait Side<K>: Send + 'static {
    fn apply(&self, idx: &mut NamespaceIndex, obj: K, relisting: bool);
    fn delete(&self, idx: &mut NamespaceIndex, obj: &K);
    fn start_relist(&self, idx: &mut NamespaceIndex);
    fn finish_relist(&self, idx: &mut NamespaceIndex);
}

struct JobSide;
struct PodSide {
    events: Option<PodEventReplicator>,
}

impl Side<Job> for JobSide {
    fn apply(&self, idx: &mut NamespaceIndex, obj: Job, relisting: bool) {
        idx.apply_job(&obj, relisting);
    }
    fn delete(&self, idx: &mut NamespaceIndex, obj: &Job) {
        if let Some(n) = obj.metadata.name.as_deref() {
            // The deleted object is the Job's last version: its waiter sees how it ended
            // (Complete, say) before the deletion, should no earlier event have shown it.
            idx.apply_job(obj, false);
            idx.delete_job(n);
        }
    }
    fn start_relist(&self, idx: &mut NamespaceIndex) {
        idx.relist_jobs = Some(HashSet::new());
    }
    fn finish_relist(&self, idx: &mut NamespaceIndex) {
        idx.finish_job_relist();
    }
}

impl Side<Pod> for PodSide {
    fn apply(&self, idx: &mut NamespaceIndex, obj: Pod, relisting: bool) {
        if let Some(r) = &self.events {
            r.observe(&obj, relisting);
        }
        idx.apply_pod(&obj, relisting);
    }
    fn delete(&self, idx: &mut NamespaceIndex, obj: &Pod) {
        if let (Some(r), Some(uid)) = (&self.events, obj.metadata.uid.as_deref()) {
            r.forget(uid);
        }
        if let Some(n) = obj.metadata.name.as_deref() {
            idx.delete_pod(n);
        }
    }
    fn start_relist(&self, idx: &mut NamespaceIndex) {
        idx.relist_pods = Some(HashSet::new());
    }
    fn finish_relist(&self, idx: &mut NamespaceIndex) {
        idx.finish_pod_relist();
    }
}

/// Where one watch's restarts and relists are counted.
struct WatchCounts {
    metrics: Option<KubernetesMetrics>,
    namespace: String,
    resource: &'static str,
}

async fn run_watch<K, S>(
    api: Api<K>,
    config: watcher::Config,
    index: Arc<Mutex<NamespaceIndex>>,
    stop: CancellationToken,
    side: S,
    counts: WatchCounts,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    S: Side<K>,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut relisting = false;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = stop.cancelled() => return,
        };
        let Some(event) = next else { return };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // The back-off wrapper retries; the index keeps its last known state.
                tracing::warn!(error = %e, "watch error; retrying");
                if let Some(m) = &counts.metrics {
                    m.watch_restarted(&counts.namespace, counts.resource);
                }
                continue;
            }
        };
        let mut idx = lock(&index);
        match event {
            Event::Init => {
                if let Some(m) = &counts.metrics {
                    m.watch_relisted(&counts.namespace, counts.resource);
                }
                relisting = true;
                side.start_relist(&mut idx);
            }
            Event::InitApply(obj) => side.apply(&mut idx, obj, relisting),
            Event::InitDone => {
                relisting = false;
                side.finish_relist(&mut idx);
            }
            Event::Apply(obj) => side.apply(&mut idx, obj, false),
            Event::Delete(obj) => side.delete(&mut idx, &obj),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str) -> Job {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})).unwrap()
    }

    fn pod(name: &str, job: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"job-name": job}}}))
            .unwrap()
    }

    #[test]
    fn subscribers_get_replay_then_changes_and_relist_deletions() {
        let mut idx = NamespaceIndex::default();
        idx.apply_job(&job("a"), false);
        idx.apply_pod(&pod("a-1", "a"), false);
        idx.apply_pod(&pod("b-1", "b"), false);
        let mut rx = idx.subscribe("a");
        assert!(matches!(rx.try_recv(), Ok(Observation::Job(_))));
        assert!(matches!(rx.try_recv(), Ok(Observation::Pod(p)) if &*p.name == "a-1"));
        assert!(
            rx.try_recv().is_err(),
            "pods of other jobs are not replayed"
        );
        // A relist that no longer has job a nor its pod.
        idx.relist_jobs = Some(HashSet::new());
        idx.relist_pods = Some(HashSet::new());
        idx.apply_pod(&pod("b-1", "b"), true);
        idx.finish_pod_relist();
        idx.finish_job_relist();
        assert!(matches!(rx.try_recv(), Ok(Observation::PodDeleted(n)) if n == "a-1"));
        assert!(matches!(rx.try_recv(), Ok(Observation::JobDeleted)));
        assert!(idx.jobs.is_empty());
    }

    #[test]
    fn finished_jobs_nobody_waits_on_are_forgotten() {
        let mut idx = NamespaceIndex::default();
        let mut done = job("old");
        done.status =
            serde_json::from_value(json!({"conditions": [{"type": "Complete", "status": "True"}]}))
                .unwrap();
        idx.apply_job(&job("old"), false);
        idx.apply_pod(&pod("old-1", "old"), false);
        idx.apply_job(&done, false);
        assert!(
            idx.jobs.is_empty() && idx.pods.is_empty(),
            "index holds live Jobs only"
        );
        // A subscriber still gets the finished Job.
        let mut rx = idx.subscribe("old");
        idx.apply_job(&done, false);
        assert!(matches!(rx.try_recv(), Ok(Observation::Job(_))));
    }

    #[test]
    fn a_job_that_finished_while_watched_is_forgotten_with_its_pods_when_the_wait_ends() {
        let mut idx = NamespaceIndex::default();
        let _rx = idx.subscribe("run");
        let mut done = job("run");
        done.status =
            serde_json::from_value(json!({"conditions": [{"type": "Complete", "status": "True"}]}))
                .unwrap();
        idx.apply_job(&done, false);
        idx.apply_pod(&pod("run-1", "run"), false);
        idx.apply_job(&job("live"), false);
        idx.apply_pod(&pod("live-1", "live"), false);
        assert_eq!((idx.jobs.len(), idx.pods.len()), (2, 2));
        idx.unsubscribe("run");
        assert!(idx.jobs.contains_key("live") && !idx.jobs.contains_key("run"));
        assert!(idx.pods.contains_key("live-1") && !idx.pods.contains_key("run-1"));
        // A Job still running stays when its waiter leaves (its events keep it current).
        let _rx = idx.subscribe("live");
        idx.unsubscribe("live");
        assert!(idx.jobs.contains_key("live"));
    }

    #[test]
    fn a_pod_labelled_only_with_the_prefixed_job_name_reaches_its_job() {
        let mut idx = NamespaceIndex::default();
        let mut rx = idx.subscribe("a");
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "a-1", "labels": {"batch.kubernetes.io/job-name": "a"}}}),
        )
        .unwrap();
        idx.apply_pod(&pod, false);
        assert!(
            matches!(rx.try_recv(), Ok(Observation::Pod(p)) if p.job_name.as_deref() == Some("a"))
        );
        idx.delete_pod("a-1");
        assert!(matches!(rx.try_recv(), Ok(Observation::PodDeleted(n)) if n == "a-1"));
    }
}
