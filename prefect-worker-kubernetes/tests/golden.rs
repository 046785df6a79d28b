//! The golden vectors: every case in `tests/golden/` was produced by the real Python worker
//! (Prefect 3.9.1, prefect-kubernetes 0.8.0). Each must prepare to exactly the recorded
//! configuration, or fail with the recorded error text.
//!
//! Comparison: objects ignore key order, lists keep it, ints and floats are distinct.
//! `configuration.env` as a dict is compared by content; its order is pinned by the
//! container env in the manifest, which is a list.

use std::path::{Path, PathBuf};

use serde_json::Value;

use prefect_worker_kubernetes::configuration::preview_from_golden_input;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Every difference between `got` and `want`, as `path: got vs want` lines.
fn diff(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}.{k}"), gv, wv, out),
                    None => out.push(format!("{path}.{k}: missing, want {wv}")),
                }
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{path}.{k}: unexpected {}", g[k]));
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                out.push(format!(
                    "{path}: list length {} vs {}\n    got:  {}\n    want: {}",
                    g.len(),
                    w.len(),
                    got,
                    want
                ));
                return;
            }
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                diff(&format!("{path}[{i}]"), gv, wv, out);
            }
        }
        (Value::Number(g), Value::Number(w)) => {
            if g.is_f64() != w.is_f64() || g.as_f64() != w.as_f64() {
                out.push(format!(
                    "{path}: got {g} ({}), want {w} ({})",
                    kind(g),
                    kind(w)
                ));
            }
        }
        _ if got == want => {}
        _ => out.push(format!("{path}: got {got}, want {want}")),
    }
}

fn kind(n: &serde_json::Number) -> &'static str {
    if n.is_f64() { "float" } else { "int" }
}

#[test]
fn golden_cases() {
    let files = cases();
    assert_eq!(files.len(), 46, "expected the 46 public golden cases");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let result = preview_from_golden_input(&case["input"]);
        match (case.get("expected_error").and_then(Value::as_str), result) {
            (Some(want), Err(e)) => {
                if !e.to_string().contains(want) {
                    failures.push(format!("{name}: error {e:?} does not contain {want:?}"));
                }
            }
            (Some(want), Ok(got)) => {
                failures.push(format!(
                    "{name}: expected an error containing {want:?}, got {got}"
                ));
            }
            (None, Err(e)) => {
                failures.push(format!("{name}: unexpected error {}: {e}", e.type_name()))
            }
            (None, Ok(got)) => {
                let want = &case["expected"]["configuration"];
                let mut out = Vec::new();
                diff("configuration", &got, want, &mut out);
                if !out.is_empty() {
                    failures.push(format!("{name}:\n  {}", out.join("\n  ")));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The README's second kind of error (pydantic/runtime failures): the message must name
/// the field. Each starts from a passing golden input and breaks one thing.
#[test]
fn invalid_inputs_fail_naming_the_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/default-template-no-job-variables.json");
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: [(&str, Value, Value, &str); 7] = [
        (
            "null namespace",
            serde_json::json!({"namespace": null}),
            serde_json::json!({}),
            "namespace",
        ),
        (
            "non-string label",
            serde_json::json!({"labels": {"a": 5}}),
            serde_json::json!({}),
            "labels.a",
        ),
        (
            "list command",
            serde_json::json!({"command": ["a", "b"]}),
            serde_json::json!({}),
            "command",
        ),
        (
            "null env",
            serde_json::json!({"env": null}),
            serde_json::json!({}),
            "env",
        ),
        (
            "null run env",
            serde_json::json!({"env": {"A": "1"}}),
            serde_json::json!({"env": null}),
            "env",
        ),
        (
            "unterminated quote",
            serde_json::json!({"command": "echo 'x"}),
            serde_json::json!({}),
            "No closing quotation",
        ),
        (
            "args object",
            serde_json::json!({"command": {"a": 1}}),
            serde_json::json!({}),
            "command",
        ),
    ];
    for (what, dep_vars, run_vars, needle) in cases {
        let mut input = case["input"].clone();
        input["deployment"]["job_variables"] = dep_vars;
        input["flow_run"]["job_variables"] = run_vars;
        match preview_from_golden_input(&input) {
            Ok(got) => panic!("{what}: expected an error, got {got}"),
            Err(e) => assert!(
                e.to_string().contains(needle),
                "{what}: {e} does not mention {needle:?}"
            ),
        }
    }
}
