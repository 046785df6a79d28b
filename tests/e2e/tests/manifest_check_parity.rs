//! `check_job_manifest` and the JSON-patch diff under it, against their reference: the
//! jsonpatch that Prefect 3.9.1 installs and prefect-kubernetes' validation built on it
//! (run in the repo's venv by `tests/e2e/parity/jsonpatch_reference.py`).
//!
//! - Every layout of up to three containers drawn from the kinds that matter to list
//!   matching (the bare `prefect-job`, a full main container, sidecars, nameless and
//!   non-object items), plus manifests that are wrong elsewhere, gets the same verdict and
//!   the same message, byte for byte.
//! - Random pairs of documents (lists of scalars and objects, nested) give the same
//!   operations, paths and move sources.

// Fixtures: unreadable cases or a reference that cannot run are failed tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use prefect_test_harness::{Backend, provision, venv_python};
use prefect_worker_kubernetes::configuration::json_diff::{OpKind, diff};
use prefect_worker_kubernetes::configuration::{base_job_manifest, check_job_manifest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Container kinds that matter to jsonpatch's list matching.
fn container_kinds() -> Vec<Value> {
    vec![
        json!({"name": "prefect-job"}),
        json!({"name": "prefect-job", "image": "repo/flow:1", "env": [{"name": "A", "value": "1"}],
               "args": ["prefect", "flow-run", "execute"]}),
        json!({"name": "sidecar", "image": "envoy:1"}),
        json!({"name": "log-shipper"}),
        json!({"image": "busybox"}),
        json!({}),
        json!("prefect-job"),
        json!(5),
        json!([{"name": "prefect-job"}]),
        json!({"name": "Prefect-Job"}),
    ]
}

fn with_containers(containers: Vec<Value>) -> Value {
    let mut m = base_job_manifest();
    m["metadata"]["namespace"] = json!("default");
    m["spec"]["template"]["spec"]["containers"] = Value::Array(containers);
    m
}

fn manifests() -> Vec<Value> {
    let kinds = container_kinds();
    let mut layouts: Vec<Vec<Value>> = vec![Vec::new()];
    let mut last = vec![Vec::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for prefix in &last {
            for k in &kinds {
                let mut l: Vec<Value> = prefix.clone();
                l.push(k.clone());
                next.push(l);
            }
        }
        layouts.extend(next.iter().cloned());
        last = next;
    }
    let mut out: Vec<Value> = layouts.into_iter().map(with_containers).collect();
    // Wrong elsewhere too, with sidecars around the main container.
    let around = vec![
        json!({"name": "a"}),
        json!({"name": "prefect-job", "image": "x"}),
        json!({"name": "b"}),
    ];
    let mut m = with_containers(around.clone());
    m["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    m["spec"]["template"]["spec"]["completions"] = json!(1.0);
    out.push(m);
    let mut m = with_containers(vec![
        json!({"name": "sidecar"}),
        json!({"name": "prefect-job"}),
    ]);
    m["spec"]["template"]["spec"]["parallelism"] = json!(true);
    out.push(m);
    let mut m = with_containers(around);
    m["metadata"].as_object_mut().unwrap().remove("labels");
    m["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    out.push(m);
    let mut m = with_containers(vec![json!({"name": "prefect-job"})]);
    m["spec"]["template"]["spec"]["containers"] = json!({"name": "prefect-job"});
    out.push(m);
    out
}

/// A small random JSON value: scalars that collide often, short lists, small objects.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 4 } else { 7 }) {
        0 => json!(rng.random_range(0..4)),
        1 => json!(["a", "b", "c"][rng.random_range(0..3)]),
        2 => json!(rng.random_bool(0.5)),
        3 => json!(f64::from(rng.random_range(0..3u8))),
        4 | 5 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| {
                    (
                        ["k", "l", "m", "n/o", "p~"][rng.random_range(0..5)].to_owned(),
                        random_value(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

/// `v` with a few random edits (so the pair shares structure, as real diffs do).
fn mutated(rng: &mut StdRng, v: &Value, depth: u32) -> Value {
    match v {
        Value::Array(items) => {
            let mut out: Vec<Value> = Vec::new();
            for i in items {
                if !rng.random_bool(0.8) {
                    continue;
                }
                let kept = if rng.random_bool(0.3) {
                    mutated(rng, i, depth.saturating_sub(1))
                } else {
                    i.clone()
                };
                out.push(kept);
            }
            for _ in 0..rng.random_range(0..3) {
                let at = rng.random_range(0..=out.len());
                let new = if rng.random_bool(0.5) && !items.is_empty() {
                    items[rng.random_range(0..items.len())].clone()
                } else {
                    random_value(rng, depth.saturating_sub(1))
                };
                out.insert(at, new);
            }
            Value::Array(out)
        }
        Value::Object(members) => {
            let mut out = serde_json::Map::new();
            for (k, m) in members {
                if rng.random_bool(0.8) {
                    let m = if rng.random_bool(0.4) {
                        mutated(rng, m, depth.saturating_sub(1))
                    } else {
                        m.clone()
                    };
                    out.insert(k.clone(), m);
                }
            }
            if rng.random_bool(0.4) {
                out.insert("q".to_owned(), random_value(rng, depth.saturating_sub(1)));
            }
            Value::Object(out)
        }
        _ if rng.random_bool(0.5) => random_value(rng, depth),
        other => other.clone(),
    }
}

fn pairs() -> Vec<(Value, Value)> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..400)
        .map(|_| {
            let src = Value::Array(
                (0..rng.random_range(0..6))
                    .map(|_| random_value(&mut rng, 2))
                    .collect(),
            );
            let dst = mutated(&mut rng, &src, 2);
            (src, dst)
        })
        .collect()
}

/// Asks the reference for the verdicts on `manifests` and the operations of `pairs`.
fn reference(manifests: &[Value], pairs: &[(Value, Value)]) -> Value {
    provision(Backend::Sqlite).expect("provision the venv (scripts/prefect-server.sh provision)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/jsonpatch_reference.py");
    let mut child = Command::new(venv_python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the venv's python");
    let pairs: Vec<[&Value; 2]> = pairs.iter().map(|(a, b)| [a, b]).collect();
    let input = serde_json::to_vec(&json!({"manifests": manifests, "pairs": pairs})).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_manifest_check_and_the_diff_match_python_s_jsonpatch() {
    let manifests = manifests();
    let pairs = pairs();
    let want = reference(&manifests, &pairs);
    let mut differences = Vec::new();
    let verdicts = want["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), manifests.len());
    for (m, want) in manifests.iter().zip(verdicts) {
        let got = match check_job_manifest(m) {
            Ok(()) => "OK".to_owned(),
            Err(e) => e,
        };
        if got != want.as_str().unwrap() {
            differences.push(format!(
                "containers {}\n  python: {want}\n  rust:   {got}",
                m["spec"]["template"]["spec"]["containers"]
            ));
        }
    }
    let diffs = want["diffs"].as_array().unwrap();
    assert_eq!(diffs.len(), pairs.len());
    for ((src, dst), want) in pairs.iter().zip(diffs) {
        let got: Vec<Value> = diff(src, dst)
            .into_iter()
            .map(|o| {
                let op = match o.op {
                    OpKind::Add => "add",
                    OpKind::Remove => "remove",
                    OpKind::Replace => "replace",
                    OpKind::Move => "move",
                };
                json!([op, o.path, o.from])
            })
            .collect();
        if &Value::Array(got.clone()) != want {
            differences.push(format!(
                "diff {src} → {dst}\n  python: {want}\n  rust:   {}",
                Value::Array(got)
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        manifests.len() + pairs.len(),
        differences.join("\n")
    );
}
