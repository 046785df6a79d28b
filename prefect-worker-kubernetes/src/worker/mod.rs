//! `KubernetesWorker`: the core `Worker` trait on Kubernetes Jobs.

mod create;
mod logs;
mod permissions;
mod secrets;
pub mod settings;
mod wait;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use prefect_worker_core::client::models::{FlowRun, WorkPool};
use prefect_worker_core::events::EventEmitter;
use prefect_worker_core::metrics::Metrics;
use prefect_worker_core::runner::{CLAIM_EXPIRED, RunContext};
use prefect_worker_core::worker::{FoundInfrastructure, KillError, RunError, Worker, WorkerResult};
use serde_json::Value;

pub use logs::{LogStreamLimit, OutputSink, stdout_sink};
pub use settings::KubernetesSettings;

use crate::clients::{ClientCache, cluster_key};
use crate::configuration::KubernetesWorkerJobConfiguration;
use crate::metrics::KubernetesMetrics;
use crate::pod_replicator::PodEventReplicator;
use crate::run_watch::Limits;
use crate::tracker::{Subscription, Tracker, WatchKey};
use wait::JobRef;

/// Options of a [`KubernetesWorker`].
#[derive(Clone)]
pub struct KubernetesWorkerOptions {
    /// The worker's name; its slug selects this worker's Jobs in shared namespaces.
    pub worker_name: String,
    /// Secret handling, Job-creation retries, pending timeout, crash-log forwarding.
    pub settings: KubernetesSettings,
    /// Kubernetes clients (default: in-cluster, else kubeconfig).
    pub clients: ClientCache,
    /// Where `stream_output` lines go (default: stdout).
    pub output: OutputSink,
    /// The registry this worker's metric families go into (default: none; see
    /// [`crate::metrics`]).
    pub metrics: Option<Metrics>,
}

impl std::fmt::Debug for KubernetesWorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesWorkerOptions")
            .field("worker_name", &self.worker_name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesWorkerOptions {
    /// Options for a worker named `worker_name`, with prefect-kubernetes' default settings.
    #[must_use]
    pub fn new(worker_name: impl Into<String>) -> Self {
        Self {
            worker_name: worker_name.into(),
            settings: KubernetesSettings::default(),
            clients: ClientCache::default(),
            output: stdout_sink(),
            metrics: None,
        }
    }

    /// Records this worker's metrics (Kubernetes requests, watches, log streams, pod
    /// start latency, diagnoses) into `metrics`, the registry the runner was given.
    #[must_use]
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Sets the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: KubernetesSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the client cache (e.g. one with a fixed default cluster).
    #[must_use]
    pub fn with_clients(mut self, clients: ClientCache) -> Self {
        self.clients = clients;
        self
    }

    /// Sets where `stream_output` lines go.
    #[must_use]
    pub fn with_output(mut self, output: OutputSink) -> Self {
        self.output = output;
        self
    }
}

/// A Prefect worker that runs flow runs as Kubernetes Jobs and waits for them to finish.
pub struct KubernetesWorker {
    worker_name: String,
    settings: KubernetesSettings,
    clients: ClientCache,
    tracker: Tracker,
    output: OutputSink,
    metrics: Option<KubernetesMetrics>,
    /// Bounds the `stream_output` streams open at once.
    log_streams: LogStreamLimit,
    /// API-key Secrets this worker upserted: (client, namespace, name), deleted at teardown.
    created_secrets: Mutex<Vec<(kube::Client, String, String)>>,
    /// Secret permissions RBAC refused, so that each is warned about once.
    missing_permissions: permissions::MissingPermissions,
}

impl std::fmt::Debug for KubernetesWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesWorker")
            .field("worker_name", &self.worker_name)
            .field("settings", &self.settings)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl KubernetesWorker {
    /// A worker with `options`. Watches start with the first run in each namespace.
    #[must_use]
    pub fn new(options: KubernetesWorkerOptions) -> Self {
        let selector = label_selector(&options.worker_name);
        let metrics = options.metrics.as_ref().map(KubernetesMetrics::register);
        Self {
            worker_name: options.worker_name,
            log_streams: LogStreamLimit::new(options.settings.max_log_streams),
            settings: options.settings,
            clients: options.clients.with_metrics(metrics.clone()),
            tracker: Tracker::new(selector).with_metrics(metrics.clone()),
            output: options.output,
            metrics,
            created_secrets: Mutex::new(Vec::new()),
            missing_permissions: permissions::MissingPermissions::default(),
        }
    }

    /// How many pods the pod-event replication remembers now (0 when pod events are off).
    #[must_use]
    pub fn pod_events_remembered(&self) -> usize {
        self.tracker
            .pod_events()
            .map_or(0, PodEventReplicator::remembered)
    }

    /// How many start-up look-ups (is this pod event already stored on the server?) are in
    /// flight now (0 when pod events are off). A restarted worker emits a relisted pod's
    /// events only once these have answered.
    #[must_use]
    pub fn pod_event_lookups_in_flight(&self) -> usize {
        self.tracker
            .pod_events()
            .map_or(0, PodEventReplicator::lookups_in_flight)
    }

    /// The `stream_output` log streams open now.
    #[must_use]
    pub fn log_streams_open(&self) -> usize {
        self.log_streams.open()
    }

    fn limits(&self, configuration: &KubernetesWorkerJobConfiguration) -> Limits {
        let secs = |s: i64| u64::try_from(s).ok().map(Duration::from_secs);
        Limits {
            pod_start: secs(configuration.pod_watch_timeout_seconds),
            job_run: configuration.job_watch_timeout_seconds.and_then(secs),
            pending: self.settings.pending_timeout,
        }
    }

    async fn client_for(
        &self,
        configuration: &KubernetesWorkerJobConfiguration,
    ) -> Result<kube::Client, crate::clients::ClientConfigError> {
        self.clients
            .client(cluster_value(configuration).as_ref())
            .await
    }
}

/// The server-side selector for this worker's Jobs and pods: Prefect's run label plus the
/// worker's own name label, so several workers can share a namespace.
#[must_use]
pub(crate) fn label_selector(worker_name: &str) -> String {
    format!(
        "prefect.io/flow-run-id,prefect.io/worker-name={}",
        prefect_worker_core::slug::slug_label_value(worker_name)
    )
}

/// Splits `namespace:job-name`.
fn parse_pid(pid: &str) -> Result<(&str, &str), String> {
    let parts: Vec<&str> = pid.split(':').collect();
    match parts[..] {
        [ns, name] if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => Err(format!(
            "Invalid infrastructure_pid format: '{pid}'. Expected format: 'namespace:job_name'"
        )),
    }
}

#[async_trait]
impl Worker for KubernetesWorker {
    type Configuration = KubernetesWorkerJobConfiguration;

    fn worker_type(&self) -> &'static str {
        "kubernetes"
    }

    fn default_base_job_template(&self) -> Value {
        crate::configuration::default_base_job_template()
    }

    /// Reported as the worker's metadata: the Python package this worker stands in for, at
    /// the version whose behaviour it matches.
    fn integrations(&self) -> Vec<prefect_worker_core::Integration> {
        vec![prefect_worker_core::Integration {
            name: "prefect-kubernetes".to_owned(),
            version: crate::PREFECT_KUBERNETES_VERSION.to_owned(),
        }]
    }

    async fn run(
        &self,
        flow_run: &FlowRun,
        configuration: KubernetesWorkerJobConfiguration,
        mut ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        // Boxed, and everything it built (configuration, manifest, the created Job) dropped
        // before the wait: a run is tracked for as long as its pod runs, thousands at once,
        // and the wait needs only where the Job is.
        let (job_ref, subscription) =
            Box::pin(self.create_for_run(flow_run, configuration, &mut ctx)).await?;
        Ok(self
            .wait_for_job(flow_run, job_ref, subscription, &ctx)
            .await)
    }

    /// Killing a Job needs only where it is: its cluster (the pid names the namespace and
    /// the Job). The manifest, env, labels and annotations (most of a configuration's
    /// memory) are not kept while the run waits.
    fn configuration_to_keep(
        &self,
        configuration: &KubernetesWorkerJobConfiguration,
    ) -> Option<KubernetesWorkerJobConfiguration> {
        Some(KubernetesWorkerJobConfiguration {
            name: configuration.name.clone(),
            command: None,
            env: crate::configuration::KubernetesEnv::default(),
            labels: indexmap::IndexMap::new(),
            namespace: configuration.namespace.clone(),
            annotations: indexmap::IndexMap::new(),
            job_manifest: serde_json::Map::new(),
            cluster_config: configuration.cluster_config.clone(),
            job_watch_timeout_seconds: configuration.job_watch_timeout_seconds,
            pod_watch_timeout_seconds: configuration.pod_watch_timeout_seconds,
            stream_output: configuration.stream_output,
        })
    }

    async fn kill_infrastructure(
        &self,
        infrastructure_pid: &str,
        configuration: &KubernetesWorkerJobConfiguration,
        grace: Duration,
    ) -> Result<(), KillError> {
        let (namespace, name) = parse_pid(infrastructure_pid).map_err(KillError::Other)?;
        let client = self
            .client_for(configuration)
            .await
            .map_err(|e| KillError::NotAvailable(e.to_string()))?;
        let jobs: Api<Job> = Api::namespaced(client, namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        match jobs.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    job = name,
                    "Deleted Kubernetes job '{name}' in namespace '{namespace}'"
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Err(KillError::NotFound(format!(
                "Kubernetes job '{name}' not found in namespace '{namespace}'"
            ))),
            Err(kube::Error::Api(e)) if e.code >= 500 || e.code == 429 => {
                Err(KillError::NotAvailable(e.to_string()))
            }
            Err(kube::Error::Api(e)) => Err(KillError::Other(e.to_string())),
            Err(e) => Err(KillError::NotAvailable(e.to_string())),
        }
    }

    async fn running_infrastructure(
        &self,
        work_pool: &WorkPool,
    ) -> Result<Vec<(uuid::Uuid, String)>, RunError> {
        let client = self
            .clients
            .client(None)
            .await
            .map_err(|e| RunError::new("InfrastructureError", e.to_string()))?;
        let mut namespaces = vec![pool_namespace(work_pool)];
        for n in &self.settings.adopt_namespaces {
            if !namespaces.contains(n) {
                namespaces.push(n.clone());
            }
        }
        let mut found = Vec::new();
        for ns in namespaces {
            let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
            let list = jobs
                .list(&ListParams::default().labels(self.tracker.selector()))
                .await
                .map_err(|e| {
                    RunError::new(
                        "InfrastructureError",
                        format!("cannot list Jobs in namespace '{ns}': {e}"),
                    )
                })?;
            for job in list.items {
                let labels = job.metadata.labels.as_ref();
                let Some(id) = labels
                    .and_then(|l| l.get("prefect.io/flow-run-id"))
                    .and_then(|v| uuid::Uuid::parse_str(v).ok())
                else {
                    continue;
                };
                let Some(name) = job.metadata.name.as_deref() else {
                    continue;
                };
                found.push((id, format!("{ns}:{name}")));
            }
        }
        Ok(found)
    }

    async fn find_infrastructure(
        &self,
        flow_run: &FlowRun,
        configuration: &KubernetesWorkerJobConfiguration,
    ) -> Result<FoundInfrastructure, RunError> {
        let client = self
            .client_for(configuration)
            .await
            .map_err(|e| RunError::new("InfrastructureError", e.to_string()))?;
        let ns = &configuration.namespace;
        let jobs: Api<Job> = Api::namespaced(client, ns);
        // Any worker's Job for this run, not only this worker's.
        let selector = format!("prefect.io/flow-run-id={}", flow_run.id);
        let list = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                RunError::new(
                    "InfrastructureError",
                    format!("cannot list Jobs in namespace '{ns}': {e}"),
                )
            })?;
        let newest = list
            .items
            .iter()
            .filter_map(|j| {
                let name = j.metadata.name.as_deref()?;
                Some((j.metadata.creation_timestamp.as_ref().map(|t| t.0), name))
            })
            .max();
        Ok(match newest {
            Some((_, name)) => FoundInfrastructure::Exists(format!("{ns}:{name}")),
            None => FoundInfrastructure::Absent,
        })
    }

    async fn resume(
        &self,
        flow_run: &FlowRun,
        identifier: &str,
        configuration: KubernetesWorkerJobConfiguration,
        ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        let (namespace, name) =
            parse_pid(identifier).map_err(|e| RunError::new("ValueError", e))?;
        let client = self
            .client_for(&configuration)
            .await
            .map_err(|e| RunError::new("InfrastructureError", e.to_string()))?;
        let key = WatchKey {
            cluster: cluster_key(cluster_value(&configuration).as_ref()),
            namespace: namespace.to_owned(),
        };
        let job_ref = JobRef {
            client,
            key,
            name: name.to_owned(),
            stream_output: configuration.stream_output,
            limits: self.limits(&configuration),
            created: None,
        };
        // Not needed while waiting (see `run`).
        drop(configuration);
        let subscription = job_ref.subscribe(&self.tracker);
        Ok(self
            .wait_for_job(flow_run, job_ref, subscription, &ctx)
            .await)
    }

    /// Pod events (`prefect.kubernetes.pod.*`) from the shared tracker's pod watch, unless
    /// `OBSERVER_REPLICATE_POD_EVENTS` (or `OBSERVER_ENABLED`) is off or events are.
    fn attach_events(&self, events: &EventEmitter) {
        if self.settings.replicate_pod_events && events.is_enabled() {
            self.tracker.replicate_pod_events(PodEventReplicator::new(
                events.clone(),
                self.settings.startup_event_concurrency,
            ));
        }
    }

    async fn teardown(&self) {
        let created = self
            .created_secrets
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for (client, ns, name) in created {
            match secrets::delete_secret(&client, &ns, &name).await {
                Ok(()) => tracing::info!(namespace = %ns, secret = %name, "deleted API key secret"),
                Err(e) => {
                    tracing::warn!(namespace = %ns, secret = %name, error = %e, "could not delete API key secret")
                }
            }
        }
        self.tracker.shutdown();
    }
}

/// The run's `cluster_config` block as the client cache keys and reads it.
fn cluster_value(configuration: &KubernetesWorkerJobConfiguration) -> Option<Value> {
    configuration
        .cluster_config
        .as_ref()
        .map(|c| serde_json::json!({"config": c.config, "context_name": c.context_name}))
}

/// The namespace new Jobs of `pool` go to by default: the `namespace` variable's default.
fn pool_namespace(pool: &WorkPool) -> String {
    pool.base_job_template
        .get("variables")
        .and_then(|v| v.get("properties"))
        .and_then(|p| p.get("namespace"))
        .and_then(|n| n.get("default"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

impl KubernetesWorker {
    /// The part of [`Worker::run`] before the wait: checks, Secrets, the Job create.
    async fn create_for_run(
        &self,
        flow_run: &FlowRun,
        configuration: KubernetesWorkerJobConfiguration,
        ctx: &mut RunContext,
    ) -> Result<(JobRef, Subscription), RunError> {
        ctx.check_claim()?;
        crate::configuration::check_field_types(&Value::Object(configuration.job_manifest.clone()))
            .map_err(|m| RunError::new("ValidationError", m))?;
        let client = self
            .client_for(&configuration)
            .await
            .map_err(|e| RunError::new("InfrastructureError", e.to_string()))?;
        let namespace = configuration.namespace.clone();
        let mut manifest = configuration.job_manifest.clone();
        ctx.logger().info("Creating Kubernetes job...");
        let cluster = cluster_key(cluster_value(&configuration).as_ref());
        let target = secrets::SecretTarget {
            client: &client,
            cluster: &cluster,
            namespace: &namespace,
        };
        let plan = secrets::apply_before_create(
            target,
            &self.settings,
            &self.worker_name,
            &flow_run.id.to_string(),
            &mut manifest,
            &self.missing_permissions,
        )
        .await
        .map_err(|e| RunError::new("InfrastructureError", e.to_string()))?;
        for w in &plan.warnings {
            ctx.logger().warning(w.clone());
        }
        if let Some((ns, name)) = &plan.api_key_secret
            && let Ok(mut created) = self.created_secrets.lock()
            && !created.iter().any(|(_, n, s)| n == ns && s == name)
        {
            created.push((client.clone(), ns.clone(), name.clone()));
        }
        let deadline = ctx.claim_deadline();
        let job = match create::create_job(&client, &self.settings, &namespace, &manifest, deadline)
            .await
        {
            Ok(j) => j,
            Err(e) => {
                if let Some((ns, name)) = &plan.env_secret
                    && let Err(de) = secrets::delete_secret(&client, ns, name).await
                {
                    ctx.logger().warning(format!(
                        "Could not delete env Secret '{name}' after the Job failed: {de}"
                    ));
                }
                let type_name = if e.claim_expired {
                    CLAIM_EXPIRED
                } else {
                    "InfrastructureError"
                };
                return Err(RunError::new(type_name, e.message));
            }
        };
        let job_ns = job
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let pid = format!("{job_ns}:{job_name}");
        let job_ref = JobRef {
            key: WatchKey {
                cluster: cluster.clone(),
                namespace: job_ns.clone(),
            },
            name: job_name.clone(),
            stream_output: configuration.stream_output,
            limits: self.limits(&configuration),
            created: Some(std::time::Instant::now()),
            client: client.clone(),
        };
        // Subscribed at once, before anything else is awaited (the env Secret's owner
        // reference) or the runner told: the index forgets a finished Job nobody waits on,
        // so a short Job could otherwise end, and even be deleted by a short
        // `finished_job_ttl`, before the wait looked. Subscribed, its changes queue.
        let subscription = job_ref.subscribe(&self.tracker);
        if let Some((_, name)) = &plan.env_secret
            && let Some(w) =
                secrets::own_env_secret(target, name, &job, &self.missing_permissions).await
        {
            ctx.logger().warning(w);
        }
        ctx.logger().info(format!(
            "Kubernetes job '{job_name}' created in namespace '{job_ns}'"
        ));
        ctx.started(pid);
        Ok((job_ref, subscription))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_strictly() {
        assert_eq!(parse_pid("ns:job").unwrap(), ("ns", "job"));
        for bad in ["nojob", "a:b:c", ":x", "x:"] {
            assert!(
                parse_pid(bad)
                    .unwrap_err()
                    .contains("Expected format: 'namespace:job_name'"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_kept_configuration_still_says_where_the_job_is() {
        let worker = KubernetesWorker::new(KubernetesWorkerOptions::new("w"));
        let cluster = crate::configuration::KubernetesClusterConfig {
            config: serde_json::Map::from_iter([("clusters".to_owned(), serde_json::json!([]))]),
            context_name: "second".into(),
        };
        let full = KubernetesWorkerJobConfiguration {
            name: Some("n".into()),
            command: Some("python flow.py".into()),
            env: crate::configuration::KubernetesEnv::default(),
            labels: indexmap::IndexMap::from([("a".to_owned(), "b".to_owned())]),
            namespace: "ns".into(),
            annotations: indexmap::IndexMap::new(),
            job_manifest: serde_json::Map::from_iter([(
                "kind".to_owned(),
                serde_json::json!("Job"),
            )]),
            cluster_config: Some(cluster),
            job_watch_timeout_seconds: Some(5),
            pod_watch_timeout_seconds: 60,
            stream_output: true,
        };
        let kept = worker.configuration_to_keep(&full).unwrap();
        // What kill_infrastructure reads: the cluster to reach.
        assert_eq!(cluster_value(&kept), cluster_value(&full));
        assert_eq!(kept.namespace, full.namespace);
        assert!(kept.job_manifest.is_empty() && kept.labels.is_empty() && kept.command.is_none());
    }

    #[test]
    fn selector_includes_worker_identity() {
        assert_eq!(
            label_selector("My Worker"),
            "prefect.io/flow-run-id,prefect.io/worker-name=My-Worker"
        );
    }
}
