//! Kubernetes clients, built once per distinct cluster configuration and reused.
//!
//! Order as prefect-kubernetes (spec §4.1): the run's `cluster_config` (a kubeconfig dict
//! plus a context name), else in-cluster configuration, else `KUBECONFIG` /
//! `~/.kube/config` with its current context. (kube-rs' `Config::infer` tries the
//! kubeconfig first; Python tries in-cluster first, and so do we.)

use std::collections::HashMap;
use std::sync::Arc;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::metrics::{KubernetesMetrics, RequestMetricsLayer};

/// A Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// `cluster_config` is not `{config: <kubeconfig>, context_name: <str>}`.
    #[error(
        "cluster_config is invalid: {0}. It must be a kubernetes-cluster-config block: {{\"config\": <kubeconfig as a dict>, \"context_name\": \"<context>\"}}"
    )]
    InvalidClusterConfig(String),
    /// No usable configuration was found.
    #[error(
        "no Kubernetes configuration found: not in a cluster ({in_cluster}) and no kubeconfig ({kubeconfig}). Set KUBECONFIG or run the worker in a pod"
    )]
    NotFound {
        /// Why the in-cluster configuration could not be used.
        in_cluster: String,
        /// Why no kubeconfig could be used.
        kubeconfig: String,
    },
    /// The configuration was found but the client could not be built from it.
    #[error("cannot build a Kubernetes client: {0}")]
    Build(String),
}

/// The cache key of a cluster configuration: "" for the default, else its canonical JSON.
#[must_use]
pub(crate) fn cluster_key(cluster_config: Option<&Value>) -> String {
    match cluster_config {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

/// Clients by cluster key. Cheap to clone.
#[derive(Clone, Default)]
pub struct ClientCache {
    clients: Arc<Mutex<HashMap<String, Client>>>,
    default_override: Option<Config>,
    /// Every request of the clients built from now on is counted here.
    metrics: Option<KubernetesMetrics>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache")
            .field("default_override", &self.default_override.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientCache {
    /// A cache whose default cluster is `config` instead of in-cluster/kubeconfig discovery
    /// (embedding applications, tests).
    #[must_use]
    pub fn with_default_config(config: Config) -> Self {
        Self {
            clients: Arc::default(),
            default_override: Some(config),
            metrics: None,
        }
    }

    /// Counts the requests of the clients this cache builds from now on (the Kubernetes
    /// worker sets it from its options).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<KubernetesMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The client for `cluster_config` (the run's), building it on first use.
    pub async fn client(
        &self,
        cluster_config: Option<&Value>,
    ) -> Result<Client, ClientConfigError> {
        let key = cluster_key(cluster_config);
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = match cluster_config {
            None | Some(Value::Null) => match &self.default_override {
                Some(c) => c.clone(),
                None => default_config().await?,
            },
            Some(v) => config_from_block(v).await?,
        };
        let from_block = !matches!(cluster_config, None | Some(Value::Null));
        let builder = ClientBuilder::try_from(config).map_err(|e| {
            if from_block {
                ClientConfigError::InvalidClusterConfig(format!(
                    "no Kubernetes client can be built from it ({e}); check its certificates and credentials"
                ))
            } else {
                ClientConfigError::Build(e.to_string())
            }
        })?;
        let client = match &self.metrics {
            Some(m) => builder
                .with_layer(&RequestMetricsLayer::new(m.clone()))
                .build(),
            None => builder.build(),
        };
        clients.insert(key, client.clone());
        Ok(client)
    }
}

async fn default_config() -> Result<Config, ClientConfigError> {
    let in_cluster = match Config::incluster() {
        Ok(c) => return Ok(c),
        Err(e) => e.to_string(),
    };
    match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
        Ok(c) => Ok(c),
        Err(e) => Err(ClientConfigError::NotFound {
            in_cluster,
            kubeconfig: e.to_string(),
        }),
    }
}

async fn config_from_block(block: &Value) -> Result<Config, ClientConfigError> {
    let config = block
        .get("config")
        .ok_or_else(|| ClientConfigError::InvalidClusterConfig("missing `config`".into()))?;
    let kubeconfig: Kubeconfig = serde_json::from_value(config.clone()).map_err(|e| {
        ClientConfigError::InvalidClusterConfig(format!("`config` is not a kubeconfig: {e}"))
    })?;
    let context = block
        .get("context_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            ClientConfigError::InvalidClusterConfig(format!(
                "its kubeconfig cannot be used ({e}); check that `context_name` names one of its contexts and that the context's cluster has a `server` URL"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_distinguish_configs() {
        assert_eq!(cluster_key(None), "");
        assert_eq!(cluster_key(Some(&Value::Null)), "");
        assert_ne!(
            cluster_key(Some(&json!({"context_name": "a"}))),
            cluster_key(Some(&json!({"context_name": "b"})))
        );
    }

    #[tokio::test]
    async fn invalid_block_names_the_field() {
        let e = config_from_block(&json!({"context_name": "x"}))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster_config") && e.contains("config"), "{e}");
    }
}
