//! The public entry points: [`SimCluster`] (builder) and [`SimHandle`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, ClusterConfig};
use crate::error::SimError;
use crate::faults::FaultConfig;
use crate::kinds::Kind;
use crate::object::{Object, SimObject};
use crate::observe::{RequestRecord, WatchCounters};
use crate::server::{self, ServerCtx};
use crate::store::{DeleteOptions, ListParams, Propagation};
use crate::{kubeconfig, tls};

/// A simulated cluster, configured but not started.
#[derive(Clone, Debug, Default)]
pub struct SimCluster {
    config: ClusterConfig,
    tls: bool,
    token: Option<String>,
    port: u16,
    work_dir_set: bool,
}

/// Builder for [`SimCluster`].
#[derive(Clone, Debug, Default)]
pub struct SimClusterBuilder {
    inner: SimCluster,
}

impl SimClusterBuilder {
    /// Serve HTTPS with a generated CA (default: plain HTTP).
    pub fn tls(mut self, on: bool) -> Self {
        self.inner.tls = on;
        self
    }

    /// Require `Authorization: Bearer <token>` (default: no auth).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.inner.token = token;
        self
    }

    /// Port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.inner.port = port;
        self
    }

    /// PATH for container processes, e.g. a venv's `bin` first (default: ours).
    pub fn kubelet_path(mut self, path: impl Into<OsString>) -> Self {
        self.inner.config.kubelet_path = Some(path.into());
        self
    }

    /// An extra environment variable for every container process.
    pub fn kubelet_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner
            .config
            .kubelet_env
            .push((key.into(), value.into()));
        self
    }

    /// Root of per-pod working directories (default: a fresh temp dir,
    /// removed at shutdown).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inner.config.work_dir = dir.into();
        self.inner.work_dir_set = true;
        self
    }

    /// How often watches that allow bookmarks get one (default 1s; real ~1 min).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.inner.config.bookmark_interval = d;
        self
    }

    /// Base delay before a failed Job pod is replaced (default 0; real 10s doubling).
    pub fn pod_failure_backoff(mut self, d: Duration) -> Self {
        self.inner.config.pod_failure_backoff = d;
        self
    }

    /// Delay before a crashed container restarts (default 500ms; real 10s doubling).
    pub fn crash_loop_backoff(mut self, d: Duration) -> Self {
        self.inner.config.crash_loop_backoff = d;
        self
    }

    /// Delay between `sim/pull-error` pull attempts (default 1s, doubling).
    pub fn image_pull_backoff(mut self, d: Duration) -> Self {
        self.inner.config.image_pull_backoff = d;
        self
    }

    /// Changes kept per kind for watch resumption (default 10,000).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.inner.config.history_limit = n;
        self
    }

    /// The node's name (default `kubesim-node`).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.inner.config.node_name = name.into();
        self
    }

    /// Finish building.
    pub fn build(self) -> SimCluster {
        self.inner
    }
}

impl SimCluster {
    /// Start configuring a cluster.
    pub fn builder() -> SimClusterBuilder {
        SimClusterBuilder::default()
    }

    /// Bind, start the API server, the Job controller and the kubelet.
    pub async fn start(self) -> Result<SimHandle, SimError> {
        let mut config = self.config;
        let owned_work_dir = !self.work_dir_set;
        if owned_work_dir {
            config.work_dir =
                std::env::temp_dir().join(format!("kubesim-{}", uuid::Uuid::new_v4().simple()));
        }
        std::fs::create_dir_all(&config.work_dir)?;
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        let addr = listener.local_addr()?;
        let material = if self.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if self.tls { "https" } else { "http" };
        let cluster = Cluster::new(config);
        let ctx = Arc::new(ServerCtx {
            cluster: cluster.clone(),
            token: self.token.clone(),
            address: addr.to_string(),
        });
        let acceptor = material
            .as_ref()
            .map(|m| tokio_rustls::TlsAcceptor::from(m.server_config.clone()));
        let tasks = vec![
            tokio::spawn(server::serve(listener, acceptor, ctx)),
            crate::controller::spawn(cluster.clone()),
            crate::kubelet::spawn(cluster.clone()),
        ];
        tracing::info!(url = %format!("{scheme}://{addr}"), "kubesim started");
        Ok(SimHandle {
            cluster,
            addr,
            url: format!("{scheme}://{addr}"),
            token: self.token,
            ca_pem: material.map(|m| m.ca_pem),
            tasks,
            owned_work_dir,
        })
    }
}

/// A running simulated cluster. Dropping it stops everything (processes
/// are killed); [`SimHandle::shutdown`] does so and waits.
#[derive(Debug)]
pub struct SimHandle {
    cluster: Arc<Cluster>,
    addr: SocketAddr,
    url: String,
    token: Option<String>,
    ca_pem: Option<String>,
    tasks: Vec<JoinHandle<()>>,
    owned_work_dir: bool,
}

impl SimHandle {
    /// `http(s)://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token, if auth is on.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The CA certificate (PEM), when TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Root of the per-pod working directories.
    pub fn work_dir(&self) -> &Path {
        &self.cluster.config.work_dir
    }

    /// A kubeconfig for this cluster whose context (and cluster and user) is `context_name`.
    pub fn kubeconfig_yaml(&self, context_name: &str) -> Result<String, SimError> {
        kubeconfig::render(
            &self.url,
            context_name,
            self.ca_pem.as_deref(),
            self.token.as_deref(),
        )
    }

    /// Write [`SimHandle::kubeconfig_yaml`] to `path` (mode 0600: it may hold the token).
    pub fn write_kubeconfig(
        &self,
        path: impl AsRef<Path>,
        context_name: &str,
    ) -> Result<(), SimError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let yaml = self.kubeconfig_yaml(context_name)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(yaml.as_bytes())?;
        Ok(())
    }

    // ---- fault knobs -------------------------------------------------

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.cluster.faults()
    }

    /// Replace the whole fault configuration.
    pub fn set_faults(&self, cfg: FaultConfig) {
        self.cluster.update_faults(|f| *f = cfg);
    }

    /// Change the fault configuration in place.
    pub fn update_faults(&self, f: impl FnOnce(&mut FaultConfig)) {
        self.cluster.update_faults(f);
    }

    /// Clear every fault (quota flags are separate: see [`SimHandle::set_quota_exceeded`]).
    pub fn clear_faults(&self) {
        self.set_faults(FaultConfig::default());
    }

    /// Fraction of requests answered 500.
    pub fn set_error_rate(&self, rate: f64) {
        self.update_faults(|f| f.error_rate_500 = rate);
    }

    /// Fraction of requests answered 503.
    pub fn set_unavailable_rate(&self, rate: f64) {
        self.update_faults(|f| f.error_rate_503 = rate);
    }

    /// Fraction of requests answered 429 with `Retry-After: retry_after_seconds`.
    pub fn set_throttle(&self, rate: f64, retry_after_seconds: u64) {
        self.update_faults(|f| {
            f.throttle_rate = rate;
            f.retry_after_seconds = retry_after_seconds;
        });
    }

    /// Latency added to every API request.
    pub fn set_latency(&self, d: Duration) {
        self.update_faults(|f| f.latency_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    /// Cut every watch this long after it opens (`None`: never).
    pub fn cut_watches_after(&self, d: Option<Duration>) {
        self.update_faults(|f| f.watch_cut_after_seconds = d.map(|d| d.as_secs().max(1)));
    }

    /// Cut every watch after it sent `n` events (`None`: never).
    pub fn cut_watches_after_events(&self, n: Option<u64>) {
        self.update_faults(|f| f.watch_cut_after_events = n);
    }

    /// The next `n` watch requests get a 410 Gone `ERROR` event.
    pub fn force_watch_gone(&self, n: u32) {
        self.update_faults(|f| f.force_gone_watches += n);
    }

    /// Hold every API request (they hang) until [`SimHandle::resume`].
    pub fn pause(&self) {
        self.update_faults(|f| f.paused = true);
    }

    /// Release held requests.
    pub fn resume(&self) {
        self.update_faults(|f| f.paused = false);
    }

    /// Answer 403 for everything in `namespace`.
    pub fn forbid_namespace(&self, namespace: &str) {
        self.update_faults(|f| {
            f.forbidden_namespaces.insert(namespace.to_string());
        });
    }

    /// Stop answering 403 for `namespace`.
    pub fn allow_namespace(&self, namespace: &str) {
        self.update_faults(|f| {
            f.forbidden_namespaces.remove(namespace);
        });
    }

    /// Enforce RBAC: from now on, resource requests that no rule of `rbac` grants are
    /// answered 403 as a real API server does (`None`: allow everything again).
    pub fn set_rbac(&self, rbac: Option<crate::rbac::Rbac>) {
        self.update_faults(|f| f.rbac = rbac);
    }

    /// Make pod creation in `namespace` fail with `exceeded quota` (the Job
    /// controller then records FailedCreate events on its Jobs).
    pub fn set_quota_exceeded(&self, namespace: &str, exceeded: bool) {
        self.cluster
            .with_store(|s| s.set_quota_exceeded(namespace, exceeded));
    }

    // ---- observation -------------------------------------------------

    /// Every API request answered so far (admin `/_sim` requests excluded).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.cluster.observer.requests()
    }

    /// Empty the request log.
    pub fn clear_requests(&self) {
        self.cluster.observer.clear_requests();
    }

    /// Open and total watch counts per resource and namespace.
    pub fn watch_counters(&self) -> WatchCounters {
        self.cluster.observer.counters()
    }

    /// Every Job ever created through the API or [`SimHandle::create`], oldest first,
    /// deleted ones included: how tests count "exactly one Job per run".
    pub fn created_jobs(&self) -> Vec<crate::store::CreatedRecord> {
        self.cluster.with_store(|s| s.created_jobs().to_vec())
    }

    /// Container processes alive right now.
    pub fn running_processes(&self) -> usize {
        self.cluster.running_processes.load(Ordering::SeqCst)
    }

    /// API requests held by [`SimHandle::pause`] right now.
    pub fn held_requests(&self) -> usize {
        self.cluster.held_requests.load(Ordering::SeqCst)
    }

    // ---- direct store access -----------------------------------------

    /// Get an object (`namespace` is ignored for cluster-scoped kinds).
    pub fn get<K: SimObject>(&self, namespace: &str, name: &str) -> Option<K> {
        self.cluster
            .with_store(|s| s.get(K::KIND, namespace, name))
            .and_then(|o| K::from_object(&o))
    }

    /// List objects, in one namespace or all.
    pub fn list<K: SimObject>(&self, namespace: Option<&str>) -> Vec<K> {
        let params = ListParams {
            namespace: namespace.map(str::to_string),
            ..Default::default()
        };
        self.cluster
            .with_store(|s| s.list(K::KIND, &params))
            .map(|r| r.items.iter().filter_map(|o| K::from_object(o)).collect())
            .unwrap_or_default()
    }

    /// Create an object as an API client would (defaulting, validation).
    pub fn create<K: SimObject>(&self, obj: K) -> Result<K, SimError> {
        let created = self.cluster.with_store(|s| s.create(obj.into_object()))?;
        K::from_object(&created).ok_or_else(|| SimError::Api(crate::ApiError::path_not_found()))
    }

    /// Delete an object with Background propagation.
    pub fn delete<K: SimObject>(&self, namespace: &str, name: &str) -> Result<(), SimError> {
        let opts = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        self.cluster
            .with_store(|s| s.delete(K::KIND, namespace, name, &opts))?;
        Ok(())
    }

    /// Events whose involved object is `kind`/`name` in `namespace`.
    pub fn events_for(&self, kind: Kind, namespace: &str, name: &str) -> Vec<Event> {
        self.list::<Event>(Some(namespace))
            .into_iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some(kind.kind())
                    && e.involved_object.name.as_deref() == Some(name)
            })
            .collect()
    }

    /// The current log of a pod's container (`None` container: the first).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: Option<&str>) -> Option<String> {
        let obj = self
            .cluster
            .with_store(|s| s.get(Kind::Pod, namespace, pod))?;
        let Object::Pod(p) = &*obj else { return None };
        let name = match container {
            Some(c) => c.to_string(),
            None => p.spec.as_ref()?.containers.first()?.name.clone(),
        };
        self.cluster
            .logs
            .get(obj.uid(), &name, false)
            .map(|l| l.text())
    }

    /// Stop everything: API server, controller, kubelet (killing processes),
    /// and remove the working directory if the simulator created it.
    pub async fn shutdown(mut self) {
        self.cluster.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // Container tasks SIGKILL their process groups as their pod workers
        // go away; give them a moment so no process outlives shutdown().
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.running_processes() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.owned_work_dir {
            let _ = std::fs::remove_dir_all(&self.cluster.config.work_dir);
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cluster.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}
