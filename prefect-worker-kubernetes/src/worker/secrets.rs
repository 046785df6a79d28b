//! Secrets handled before a Job is created (spec §4.2): the API key and auth string as
//! `secretKeyRef`s, and optionally the whole plain env in a Secret owned by the Job.
//!
//! The Secret options are optional features: where RBAC refuses them (the Helm chart's
//! Role grants no `secrets` unless asked to), the worker warns once per namespace,
//! naming the permission and what it would add, then runs Jobs as Prefect does without
//! the option (plain env values) and never makes the refused request again
//! (`permissions.rs`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use super::permissions::{MissingPermissions, Permission, is_rbac_denial};
use super::settings::KubernetesSettings;
use crate::configuration::main_container_mut;

/// Where a run's Secrets go: the cluster (its client, and its key for remembering what
/// RBAC refused there) and the namespace.
#[derive(Clone, Copy)]
pub struct SecretTarget<'a> {
    pub client: &'a Client,
    pub cluster: &'a str,
    pub namespace: &'a str,
}

/// Secret handling failed; the run is crashed with this message.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cannot store the Prefect API key in Secret '{name}' in namespace '{namespace}': {source}. The worker needs get/create/update on secrets in that namespace"
    )]
    ApiKeySecret {
        name: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot create the env Secret '{name}' in namespace '{namespace}': {source}. The worker needs create on secrets in that namespace"
    )]
    EnvSecret {
        name: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// The flow-run container's env list in a Job manifest, if it has one.
pub fn container_env(manifest: &mut Map<String, Value>) -> Option<&mut Vec<Value>> {
    main_container_mut(manifest)?.get_mut("env")?.as_array_mut()
}

/// The plain value of env var `name` in the flow-run container, if any.
pub fn env_value(manifest: &mut Map<String, Value>, name: &str) -> Option<String> {
    container_env(manifest)?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Replaces the env entry `name` (if present) with a `secretKeyRef`. Returns whether it did.
pub fn reference_secret(
    manifest: &mut Map<String, Value>,
    name: &str,
    secret: &str,
    key: &str,
) -> bool {
    let Some(env) = container_env(manifest) else {
        return false;
    };
    let Some(entry) = env
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
    else {
        return false;
    };
    *entry = json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
    true
}

/// The name of the shared API-key Secret of a worker.
#[must_use]
pub fn api_key_secret_name(worker_name: &str) -> String {
    let slug =
        prefect_worker_core::slug::slug_name(worker_name).unwrap_or_else(|| "worker".to_owned());
    format!("prefect-{slug}-api-key")
}

/// What [`apply_before_create`] did that must be followed up.
#[derive(Debug, Default)]
pub struct SecretPlan {
    /// The API-key Secret upserted (namespace, name): deleted at worker teardown.
    pub api_key_secret: Option<(String, String)>,
    /// The per-Job env Secret created: owned by the Job once it exists, deleted if the Job
    /// cannot be created.
    pub env_secret: Option<(String, String)>,
    /// Warnings for the flow run's log.
    pub warnings: Vec<String>,
}

/// Steps 1–3 of spec §4.2, in order, on `manifest`.
pub async fn apply_before_create(
    target: SecretTarget<'_>,
    settings: &KubernetesSettings,
    worker_name: &str,
    flow_run_id: &str,
    manifest: &mut Map<String, Value>,
    missing: &MissingPermissions,
) -> Result<SecretPlan, SecretError> {
    let mut plan = SecretPlan::default();
    let SecretTarget {
        client,
        cluster,
        namespace,
    } = target;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);

    // 1. API key.
    if let Some((name, key)) = &settings.api_key_secret {
        if let Some(key) = key {
            reference_secret(manifest, "PREFECT_API_KEY", name, key);
        }
    } else if settings.create_secret_for_api_key
        && !missing.is_missing(cluster, namespace, Permission::ApiKeySecret)
        && let Some(api_key) = env_value(manifest, "PREFECT_API_KEY")
    {
        let name = api_key_secret_name(worker_name);
        match upsert_api_key_secret(&secrets, &name, namespace, &api_key).await {
            Ok(()) => {
                reference_secret(manifest, "PREFECT_API_KEY", &name, "value");
                plan.api_key_secret = Some((namespace.to_owned(), name));
            }
            Err(e) if is_rbac_denial(&e) => {
                if missing.record(cluster, namespace, Permission::ApiKeySecret) {
                    plan.warnings.push(format!(
                        "Cannot keep PREFECT_API_KEY in the Secret '{name}': the worker's service account may not get, create and update secrets in namespace '{namespace}' ({e}). Until the worker restarts with that permission, Jobs in namespace '{namespace}' get PREFECT_API_KEY as a plain environment value, as without PREFECT_INTEGRATIONS_KUBERNETES_WORKER_CREATE_SECRET_FOR_API_KEY. Grant get, create, update and delete on secrets there (deploy/rbac-secrets.yaml) to keep the key out of Job specs."
                    ));
                }
            }
            Err(source) => {
                return Err(SecretError::ApiKeySecret {
                    name,
                    namespace: namespace.to_owned(),
                    source,
                });
            }
        }
    }

    // 2. Auth string.
    if let Some((name, key)) = &settings.auth_string_secret {
        reference_secret(manifest, "PREFECT_API_AUTH_STRING", name, key);
    } else if env_value(manifest, "PREFECT_API_AUTH_STRING").is_some() {
        plan.warnings.push(
            "PREFECT_API_AUTH_STRING will be stored in plain text in the Job manifest. Set PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_NAME and _KEY to read it from a Secret instead.".to_owned(),
        );
    }

    // 3. The whole plain env as a Secret.
    if settings.store_env_as_secret
        && !missing.is_missing(cluster, namespace, Permission::EnvSecret)
    {
        match store_env_as_secret(&secrets, flow_run_id, namespace, manifest).await {
            Ok(Some(name)) => plan.env_secret = Some((namespace.to_owned(), name)),
            Ok(None) => {}
            Err(SecretError::EnvSecret { source, name, .. }) if is_rbac_denial(&source) => {
                if missing.record(cluster, namespace, Permission::EnvSecret) {
                    plan.warnings.push(format!(
                        "Cannot store the Job's environment in the Secret '{name}': the worker's service account may not create secrets in namespace '{namespace}' ({source}). Until the worker restarts with that permission, Jobs in namespace '{namespace}' get their environment as plain values, as without PREFECT_INTEGRATIONS_KUBERNETES_WORKER_STORE_ENV_AS_SECRET. Grant create, patch and delete on secrets there (deploy/rbac-secrets.yaml) to keep it out of Job specs."
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(plan)
}

async fn upsert_api_key_secret(
    secrets: &Api<Secret>,
    name: &str,
    namespace: &str,
    api_key: &str,
) -> Result<(), kube::Error> {
    let data = BTreeMap::from([("value".to_owned(), ByteString(api_key.as_bytes().to_vec()))]);
    match secrets.get_opt(name).await? {
        Some(mut existing) => {
            existing.data = Some(data);
            secrets
                .replace(name, &PostParams::default(), &existing)
                .await?;
        }
        None => {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            secrets.create(&PostParams::default(), &secret).await?;
        }
    }
    Ok(())
}

async fn store_env_as_secret(
    secrets: &Api<Secret>,
    flow_run_id: &str,
    namespace: &str,
    manifest: &mut Map<String, Value>,
) -> Result<Option<String>, SecretError> {
    // A copy: the manifest keeps its env until the Secret exists (a refused Secret
    // leaves the Job with its plain env).
    let env = container_env(manifest)
        .map(|e| e.clone())
        .unwrap_or_default();
    let mut plain = BTreeMap::new();
    let mut keep = Vec::new();
    for entry in env {
        match (
            entry.get("name").and_then(Value::as_str),
            entry.get("value").and_then(Value::as_str),
        ) {
            (Some(n), Some(v)) => {
                plain.insert(n.to_owned(), v.to_owned());
            }
            _ => keep.push(entry),
        }
    }
    if plain.is_empty() {
        return Ok(None);
    }
    let generate = manifest
        .get("metadata")
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
        .unwrap_or("prefect-job-")
        .trim_end_matches('-')
        .to_owned();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{generate}-env-{}", &suffix[..8]);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "prefect".to_owned(),
                ),
                ("prefect.io/flow-run-id".to_owned(), flow_run_id.to_owned()),
            ])),
            ..Default::default()
        },
        string_data: Some(plain),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|source| SecretError::EnvSecret {
            name: name.clone(),
            namespace: namespace.to_owned(),
            source,
        })?;
    if let Some(c) = main_container_mut(manifest) {
        c.insert("env".into(), Value::Array(keep));
        let mut env_from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        env_from.push(json!({"secretRef": {"name": name}}));
        c.insert("envFrom".into(), Value::Array(env_from));
    }
    Ok(Some(name))
}

/// Makes the env Secret owned by its Job, so it is garbage-collected with it. A failure is
/// only a warning, returned for the run's log: the Secret then outlives the Job. Where
/// RBAC refuses the patch, that is said once per namespace and not tried again.
pub async fn own_env_secret(
    target: SecretTarget<'_>,
    secret: &str,
    job: &k8s_openapi::api::batch::v1::Job,
    missing: &MissingPermissions,
) -> Option<String> {
    let SecretTarget {
        client,
        cluster,
        namespace,
    } = target;
    if missing.is_missing(cluster, namespace, Permission::EnvSecretOwner) {
        return None;
    }
    let job_name = job.name_any();
    match adopt_env_secret(client, namespace, secret, job).await {
        Ok(()) => None,
        Err(e) if is_rbac_denial(&e) => missing
            .record(cluster, namespace, Permission::EnvSecretOwner)
            .then(|| format!(
                "Could not make Secret '{secret}' owned by Job '{job_name}': the worker's service account may not patch secrets in namespace '{namespace}' ({e}). Env Secrets in namespace '{namespace}' outlive their Jobs until the worker restarts with that permission; grant patch on secrets there (deploy/rbac-secrets.yaml) so that Kubernetes deletes them with their Jobs."
            )),
        Err(e) => Some(format!(
            "Could not make Secret '{secret}' owned by Job '{job_name}'; it will outlive the Job: {e}"
        )),
    }
}

async fn adopt_env_secret(
    client: &Client,
    namespace: &str,
    secret: &str,
    job: &k8s_openapi::api::batch::v1::Job,
) -> Result<(), kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(), "uid": job.uid().unwrap_or_default()
    }]}});
    secrets
        .patch(secret, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(|_| ())
}

/// Deletes a Secret; a Secret already gone is fine.
pub async fn delete_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets
        .delete(name, &kube::api::DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Map<String, Value> {
        json!({"metadata": {"generateName": "x-"}, "spec": {"template": {"spec": {"containers": [{"name": "prefect-job",
            "env": [{"name": "PREFECT_API_KEY", "value": "k"}, {"name": "A", "value": "1"}]}]}}}})
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn references_replace_the_plain_value() {
        let mut m = manifest();
        assert_eq!(env_value(&mut m, "PREFECT_API_KEY").as_deref(), Some("k"));
        assert!(reference_secret(&mut m, "PREFECT_API_KEY", "s", "value"));
        assert_eq!(env_value(&mut m, "PREFECT_API_KEY"), None);
        let env = container_env(&mut m).unwrap();
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "s");
        assert!(!reference_secret(&mut m, "MISSING", "s", "k"));
    }

    #[test]
    fn api_key_secret_is_named_after_the_worker() {
        assert_eq!(
            api_key_secret_name("rest worker"),
            "prefect-rest-worker-api-key"
        );
    }
}
