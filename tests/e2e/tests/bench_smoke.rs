//! The scale benchmark (`scripts/bench.sh`, `bench/bench.py`) at smoke sizes, so that it
//! cannot rot: every scenario runs end to end (ours and the limit client; the Python
//! contender too with `BENCH_SMOKE_PYTHON=1` and the benchmark's venv `bench/.venv`,
//! which `scripts/bench.sh` creates: it adds minutes, Python takes ~10 s to start) and
//! writes its report.
//! Nothing is timed or compared here: the benchmark measures, the test only runs it.

// Fixtures: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use anyhow::{Context, Result};
use prefect_test_harness::{repo_root, venv_python};

#[test]
fn every_benchmark_scenario_runs_at_smoke_size() -> Result<()> {
    let root = repo_root();
    let worker = e2e::k8s::worker_binary()?;
    let kubesim = worker.with_file_name("kubesim");
    if !kubesim.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kubesim", "--bin", "kubesim"])
            .current_dir(&root)
            .status()?;
        anyhow::ensure!(status.success(), "building kubesim failed");
    }
    prefect_test_harness::provision(prefect_test_harness::Backend::Postgres)?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("benchmarks.md");
    let with_python = std::env::var_os("BENCH_SMOKE_PYTHON").is_some_and(|v| v == "1");
    let contenders = if with_python && root.join("bench/.venv/bin/prefect").exists() {
        "ours,python,limit"
    } else {
        "ours,limit"
    };
    let run = Command::new(venv_python())
        .arg(root.join("bench/bench.py"))
        .args(["--smoke", "--contenders", contenders, "--timeout", "300"])
        .arg("--worker-bin")
        .arg(&worker)
        .arg("--kubesim-bin")
        .arg(&kubesim)
        .arg("--results")
        .arg(dir.path().join("results"))
        .arg("--out")
        .arg(&out)
        .output()
        .context("running bench/bench.py")?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "bench.py --smoke failed:\n{log}");
    let report = std::fs::read_to_string(&out)?;
    for section in [
        "## 1. Start-up and idle",
        "## 2. Burst",
        "## 3. Held load",
        "## 4. Churn",
        "## 5. Cancellation and crash latency",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
    assert!(
        !report.contains("Failed: `") && !report.contains("failed: `"),
        "{report}"
    );
    assert!(report.contains("server-bound limit client"), "{report}");
    assert!(
        dir.path().join("benchmarks-burst.svg").exists(),
        "the burst chart is drawn"
    );
    Ok(())
}
