//! `prepare_for_flow_run` for Kubernetes (spec §3.7), in prefect-kubernetes' order:
//! list env, base preparation, list env restored, eviction behaviour, container env,
//! labels, annotations, image, args, generateName, pod labels, pod annotations.

use serde_json::{Map, Value};

use prefect_worker_core::client::models::JsonMap;
use prefect_worker_core::job_config::base::{
    LabelSources, prepare_command, prepare_environment, prepare_name,
};
use prefect_worker_core::job_config::shlex;
use prefect_worker_core::job_config::{
    ConfigurationError, DEFAULT_COMMAND, EnvMap, IndexMap, PrepareContext,
};
use prefect_worker_core::slug::{slug_image_tag, slug_label_key, slug_label_value, slug_name};
use prefect_worker_core::templating::{find_placeholders, py_str};

use super::{KubernetesEnv, KubernetesWorkerJobConfiguration};
use crate::run_watch::PRIMARY_CONTAINER;

/// The env var that tells the flow-run process how to react to SIGTERM.
const SIGTERM_BEHAVIOR: &str = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR";

fn invalid(msg: impl Into<String>) -> ConfigurationError {
    ConfigurationError::Value(msg.into())
}

fn containers(manifest: &JsonMap) -> Option<&Vec<Value>> {
    manifest
        .get("spec")?
        .get("template")?
        .get("spec")?
        .get("containers")?
        .as_array()
}

/// Which container of `spec.template.spec.containers` runs the flow: the one named
/// `prefect-job`, wherever it is (sidecars may come before it), else the first one, as
/// prefect-kubernetes (which always fills the first).
#[must_use]
pub fn main_container_index(manifest: &JsonMap) -> Option<usize> {
    let containers = containers(manifest)?;
    let named = containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(PRIMARY_CONTAINER));
    named.or((!containers.is_empty()).then_some(0))
}

/// The container that runs the flow (see [`main_container_index`]).
#[must_use]
pub fn main_container(manifest: &JsonMap) -> Option<&JsonMap> {
    containers(manifest)?
        .get(main_container_index(manifest)?)?
        .as_object()
}

/// The container that runs the flow, to fill in (see [`main_container_index`]).
#[must_use]
pub fn main_container_mut(manifest: &mut JsonMap) -> Option<&mut JsonMap> {
    let index = main_container_index(manifest)?;
    manifest
        .get_mut("spec")?
        .get_mut("template")?
        .get_mut("spec")?
        .get_mut("containers")?
        .get_mut(index)?
        .as_object_mut()
}

fn main_container_or_error(manifest: &mut JsonMap) -> Result<&mut JsonMap, ConfigurationError> {
    let index = main_container_index(manifest).unwrap_or(0);
    main_container_mut(manifest).ok_or_else(|| {
        invalid(format!(
            "job_manifest.spec.template.spec.containers[{index}] must be an object (the flow-run \
             container, named '{PRIMARY_CONTAINER}'); fix the work pool's base job template"
        ))
    })
}

fn pod_template_mut(manifest: &mut JsonMap) -> Result<&mut JsonMap, ConfigurationError> {
    manifest.get_mut("spec").and_then(|s| s.get_mut("template")).and_then(Value::as_object_mut).ok_or_else(|| {
        invalid("job_manifest.spec.template must be an object; fix the work pool's base job template")
    })
}

fn metadata_mut(manifest: &mut JsonMap) -> Result<&mut JsonMap, ConfigurationError> {
    manifest
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            invalid(
                "job_manifest.metadata must be an object; fix the work pool's base job template",
            )
        })
}

/// The default image for these versions, as `get_prefect_image_name()`.
#[must_use]
pub fn default_image(prefect_version: &str, python_version: &str) -> String {
    let public = prefect_version.split('+').next().unwrap_or(prefect_version);
    format!(
        "prefecthq/prefect:{}",
        slug_image_tag(&format!("{public}-python{python_version}"))
    )
}

/// A string map under `what` (labels or annotations) of the manifest, as key/value text.
fn string_map(
    v: Option<&Value>,
    what: &str,
) -> Result<IndexMap<String, String>, ConfigurationError> {
    match v {
        None => Ok(IndexMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(invalid(format!(
                    "{what}.{k}: expected a string, got {}; quote the value in the base job template",
                    super::describe(other)
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "{what}: expected an object, got {}; fix the work pool's base job template",
            super::describe(other)
        ))),
    }
}

fn to_object(m: &IndexMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn slug_labels(all: &IndexMap<String, String>) -> Value {
    Value::Object(
        all.iter()
            .map(|(k, v)| (slug_label_key(k), Value::String(slug_label_value(v))))
            .collect(),
    )
}

fn merged(a: IndexMap<String, String>, b: &IndexMap<String, String>) -> IndexMap<String, String> {
    let mut out = a;
    for (k, v) in b {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Python `== 0` on the manifest's `backoffLimit` (so `0.0` and `false` count).
fn is_zero(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Bool(false)) => true,
        _ => false,
    }
}

pub(super) fn prepare_for_flow_run(
    c: &mut KubernetesWorkerJobConfiguration,
    ctx: &PrepareContext<'_>,
) -> Result<(), ConfigurationError> {
    // 1. A list env: `valueFrom` entries are set aside, name/value entries become a dict.
    let (own_env, special) = match &c.env {
        KubernetesEnv::Dict(m) => (m.clone(), Vec::new()),
        KubernetesEnv::List(items) => {
            let special: Vec<JsonMap> = items
                .iter()
                .filter(|i| i.contains_key("valueFrom"))
                .cloned()
                .collect();
            let mut dict = EnvMap::new();
            for item in items {
                if let (Some(name), Some(value)) = (item.get("name"), item.get("value")) {
                    let value = if value.is_null() {
                        None
                    } else {
                        Some(py_str(value))
                    };
                    dict.insert(py_str(name), value);
                }
            }
            (dict, special)
        }
    };

    // 2. Base preparation (the Kubernetes label set replaces the base version label).
    let env = prepare_environment(ctx, &own_env);
    let version = slug_label_value(
        ctx.versions
            .prefect_version
            .split('+')
            .next()
            .unwrap_or_default(),
    );
    let mut sources = LabelSources::for_context(ctx);
    sources
        .flow_run
        .insert("prefect.io/version".to_owned(), version.clone());
    sources.flow_run.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "prefect".to_owned(),
    );
    sources
        .flow_run
        .insert("app.kubernetes.io/part-of".to_owned(), "prefect".to_owned());
    sources
        .flow_run
        .insert("app.kubernetes.io/version".to_owned(), version);
    if let Some(flow) = ctx.flow {
        sources.flow.insert(
            "app.kubernetes.io/name".to_owned(),
            slug_label_value(&flow.name),
        );
    }
    if let Some(dep) = ctx.deployment {
        sources.deployment.insert(
            "app.kubernetes.io/name".to_owned(),
            slug_label_value(&dep.name),
        );
    }
    c.labels = sources.merge(&c.labels);
    c.name = Some(prepare_name(c.name.as_deref(), ctx));
    c.command = Some(prepare_command(c.command.as_deref()));

    // 3. A list env with `valueFrom` entries is rebuilt as a list; otherwise it stays a dict.
    c.env = if special.is_empty() {
        KubernetesEnv::Dict(env.into_iter().map(|(k, v)| (k, Some(v))).collect())
    } else {
        let mut list: Vec<JsonMap> = env
            .into_iter()
            .map(|(k, v)| name_value(&k, Value::String(v)))
            .collect();
        list.extend(special);
        KubernetesEnv::List(list)
    };

    // 4. Eviction: reschedule when Kubernetes will not retry, else relinquish.
    configure_eviction_handling(c);
    // 5. The container env.
    populate_env_in_manifest(c)?;
    // 6-7. Job labels and annotations.
    let metadata = metadata_mut(&mut c.job_manifest)?;
    let job_labels = merged(
        string_map(metadata.get("labels"), "job_manifest.metadata.labels")?,
        &c.labels,
    );
    metadata.insert("labels".to_owned(), slug_labels(&job_labels));
    let job_annotations = merged(
        string_map(
            metadata.get("annotations"),
            "job_manifest.metadata.annotations",
        )?,
        &c.annotations,
    );
    let job_annotations: IndexMap<String, String> = job_annotations
        .iter()
        .map(|(k, v)| (slug_label_key(k), v.clone()))
        .collect();
    metadata.insert("annotations".to_owned(), to_object(&job_annotations));
    // 8-9. Image and args.
    let container = main_container_or_error(&mut c.job_manifest)?;
    if !container.contains_key("image") {
        let image = default_image(&ctx.versions.prefect_version, &ctx.versions.python_version);
        container.insert("image".to_owned(), Value::String(image));
    }
    let args = match container.get("args") {
        None | Some(Value::Null) => Some(split_command(DEFAULT_COMMAND)?),
        Some(Value::String(s)) => Some(split_command(s)?),
        Some(Value::Array(_)) => None,
        Some(_) => {
            return Err(invalid(
                "Invalid job manifest template: 'command' must be a string or list.",
            ));
        }
    };
    if let Some(args) = args {
        container.insert(
            "args".to_owned(),
            Value::Array(args.into_iter().map(Value::String).collect()),
        );
    }
    // 10. generateName.
    populate_generate_name(c)?;
    // 11-12. Pod labels and annotations.
    let labels = c.labels.clone();
    let template = pod_template_mut(&mut c.job_manifest)?;
    let pod_metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let Value::Object(mut pod_metadata) = pod_metadata else {
        return Err(invalid(
            "job_manifest.spec.template.metadata must be an object; fix the base job template",
        ));
    };
    let pod_labels = merged(
        string_map(
            pod_metadata.get("labels"),
            "job_manifest.spec.template.metadata.labels",
        )?,
        &labels,
    );
    pod_metadata.insert("labels".to_owned(), slug_labels(&pod_labels));
    if !job_annotations.is_empty() {
        let pod_annotations = merged(
            string_map(
                pod_metadata.get("annotations"),
                "job_manifest.spec.template.metadata.annotations",
            )?,
            &job_annotations,
        );
        pod_metadata.insert("annotations".to_owned(), to_object(&pod_annotations));
    }
    template.insert("metadata".to_owned(), Value::Object(pod_metadata));
    Ok(())
}

fn split_command(command: &str) -> Result<Vec<String>, ConfigurationError> {
    shlex::split(command).map_err(|e| {
        invalid(format!(
            "{e}: the command {command:?} could not be split into arguments; balance its quotes"
        ))
    })
}

fn name_value(name: &str, value: Value) -> JsonMap {
    let mut m = Map::new();
    m.insert("name".to_owned(), Value::String(name.to_owned()));
    m.insert("value".to_owned(), value);
    m
}

fn configure_eviction_handling(c: &mut KubernetesWorkerJobConfiguration) {
    let backoff_zero = is_zero(
        c.job_manifest
            .get("spec")
            .and_then(|s| s.get("backoffLimit")),
    );
    match &mut c.env {
        KubernetesEnv::Dict(env) => {
            if !backoff_zero {
                env.insert(SIGTERM_BEHAVIOR.to_owned(), Some("relinquish".to_owned()));
            } else if env
                .get(SIGTERM_BEHAVIOR)
                .and_then(Option::as_deref)
                .is_none_or(str::is_empty)
            {
                env.insert(SIGTERM_BEHAVIOR.to_owned(), Some("reschedule".to_owned()));
            }
        }
        KubernetesEnv::List(list) => {
            let named =
                |e: &JsonMap| e.get("name").and_then(Value::as_str) == Some(SIGTERM_BEHAVIOR);
            if !backoff_zero {
                list.retain(|e| !named(e));
                list.push(name_value(
                    SIGTERM_BEHAVIOR,
                    Value::String("relinquish".to_owned()),
                ));
            } else if !list.iter().any(named) {
                list.push(name_value(
                    SIGTERM_BEHAVIOR,
                    Value::String("reschedule".to_owned()),
                ));
            }
        }
    }
}

fn populate_env_in_manifest(
    c: &mut KubernetesWorkerJobConfiguration,
) -> Result<(), ConfigurationError> {
    let transformed: Vec<JsonMap> = match &c.env {
        KubernetesEnv::Dict(env) => env
            .iter()
            .map(|(k, v)| name_value(k, v.clone().map_or(Value::Null, Value::String)))
            .collect(),
        KubernetesEnv::List(list) => list.clone(),
    };
    let index = main_container_index(&c.job_manifest).unwrap_or(0);
    let container = main_container_or_error(&mut c.job_manifest)?;
    let env = match container.get("env") {
        // A hard-coded template env: the worker's entries first, then the template's
        // entries whose names the worker did not set.
        Some(Value::Array(template_env)) => {
            let mut names = Vec::with_capacity(transformed.len());
            for e in &transformed {
                match e.get("name") {
                    Some(n) => names.push(n.clone()),
                    None => return Err(invalid("env: every Kubernetes env entry needs a `name`")),
                }
            }
            let mut out: Vec<Value> = transformed.into_iter().map(Value::Object).collect();
            for e in template_env {
                let Value::Object(entry) = e else {
                    return Err(invalid(format!(
                        "job_manifest.spec.template.spec.containers[{index}].env: every entry must be an object"
                    )));
                };
                if !entry.get("name").is_some_and(|n| names.contains(n)) {
                    out.push(e.clone());
                }
            }
            out
        }
        _ => transformed.into_iter().map(Value::Object).collect(),
    };
    container.insert("env".to_owned(), Value::Array(env));
    Ok(())
}

fn populate_generate_name(
    c: &mut KubernetesWorkerJobConfiguration,
) -> Result<(), ConfigurationError> {
    let name = c.name.clone();
    let metadata = metadata_mut(&mut c.job_manifest)?;
    let rebuild = match metadata.get("generateName") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::String(g)) => {
            g.is_empty() || g == "-" || g == "None-" || !find_placeholders(g).is_empty()
        }
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Bool(true)) => false,
    };
    if rebuild {
        let slug = name
            .as_deref()
            .filter(|n| !n.is_empty())
            .and_then(slug_name);
        let base = slug.unwrap_or_else(|| "prefect-job".to_owned());
        metadata.insert("generateName".to_owned(), Value::String(format!("{base}-")));
    }
    Ok(())
}
