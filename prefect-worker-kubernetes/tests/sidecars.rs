//! Sidecars before, after and around the flow-run container. The worker accepts exactly
//! the templates prefect-kubernetes accepts (its JSON-patch check matches list items up,
//! see `tests/e2e/tests/manifest_check_parity.rs`) and fills the container named `prefect-job` with the
//! image, command and env, wherever it is. (prefect-kubernetes fills the first container,
//! which is the sidecar when one comes first: `docs/compatibility.md`.)
//!
//! The cases start from the golden case with a Cloud SQL proxy after the main container.

// Fixtures: unreadable cases or a reference that cannot run are failed tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use prefect_worker_kubernetes::configuration::preview_from_golden_input;
use serde_json::{Value, json};

fn golden() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/extra-sidecar-container-after-prefect-job.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn template_containers(input: &mut Value) -> &mut Value {
    &mut input["base_job_template"]["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        ["containers"]
}

fn prepared_containers(out: &Value) -> Vec<Value> {
    out["job_manifest"]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone()
}

/// The prepared configuration of the golden input with `containers` as the template's
/// containers; `main` and `proxy` stand for the golden template's two containers.
fn prepare(containers: impl FnOnce(Value, Value) -> Value) -> Result<Value, String> {
    let mut input = golden()["input"].clone();
    let golden_containers = template_containers(&mut input).as_array().unwrap().clone();
    let (main, proxy) = (golden_containers[0].clone(), golden_containers[1].clone());
    *template_containers(&mut input) = containers(main, proxy);
    preview_from_golden_input(&input).map_err(|e| e.to_string())
}

/// The golden case's prepared flow-run container: env and args filled by the worker.
fn golden_main() -> Value {
    golden()["expected"]["configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
        [0]
    .clone()
}

const DEFAULT_IMAGE: &str = "prefecthq/prefect:3.9.1-python3.11";

#[test]
fn a_sidecar_after_the_main_container_is_left_alone() {
    let out = prepare(|main, proxy| json!([main, proxy])).unwrap();
    assert_eq!(out, golden()["expected"]["configuration"]);
}

#[test]
fn a_sidecar_before_a_bare_main_container_is_accepted_and_the_main_container_filled() {
    let bare = json!({"name": "prefect-job"});
    let out = prepare(|_, proxy| json!([proxy, bare])).unwrap();
    let containers = prepared_containers(&out);
    let want = golden_main();
    let proxy = &golden()["input"]["base_job_template"]["job_configuration"]["job_manifest"]["spec"]
        ["template"]["spec"]["containers"][1];
    assert_eq!(&containers[0], proxy, "the sidecar is not touched");
    assert_eq!(containers[1]["name"], "prefect-job");
    assert_eq!(containers[1]["env"], want["env"]);
    assert_eq!(containers[1]["args"], want["args"]);
    // No `{{ image }}` placeholder in a bare container: the default image, as Python.
    assert_eq!(containers[1]["image"], DEFAULT_IMAGE);
}

#[test]
fn sidecars_around_a_bare_main_container_are_accepted_and_the_main_container_filled() {
    let bare = json!({"name": "prefect-job"});
    let log_shipper = json!({"name": "log-shipper", "image": "fluent-bit:3"});
    let out = prepare(|_, proxy| json!([proxy, bare, log_shipper])).unwrap();
    let containers = prepared_containers(&out);
    assert_eq!(containers.len(), 3);
    assert_eq!(containers[0]["name"], "cloud-sql-proxy");
    assert!(containers[0].get("env").is_none(), "{}", containers[0]);
    assert_eq!(containers[2], log_shipper);
    assert_eq!(containers[1]["env"], golden_main()["env"]);
    assert_eq!(
        containers[1]["args"],
        json!(["prefect", "flow-run", "execute"])
    );
}

#[test]
fn a_sidecar_before_a_templated_main_container_is_rejected_as_python_rejects_it() {
    // The rendered main container has more than its name, so jsonpatch cannot match it
    // up and compares the first container by position.
    let want = "job_manifest: Value error, Job has incompatible values for the following \
                attributes: /spec/template/spec/containers/0/name must have value \
                'prefect-job' (fix the work pool's base job template)";
    assert_eq!(
        prepare(|main, proxy| json!([proxy, main])),
        Err(want.into())
    );
    let log_shipper = json!({"name": "log-shipper"});
    assert_eq!(
        prepare(|main, proxy| json!([proxy, main, log_shipper])),
        Err(want.into())
    );
}
