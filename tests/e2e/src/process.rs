//! Helpers for the process-worker example (`prefect-worker-core/examples/process_worker.rs`):
//! the example program itself, run as a newcomer would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use prefect_test_harness::repo_root;

/// `target/debug/examples/process_worker`, built on first use (`cargo test` builds
/// examples, so it is normally there).
pub fn example_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> → target/debug/examples/process_worker
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("examples/process_worker");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "prefect-worker-core",
                "--example",
                "process_worker",
            ])
            .current_dir(repo_root())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "building the process_worker example failed"
        );
    }
    Ok(bin)
}

/// The running example. Dropping it while it runs (a failed test) stops it as Ctrl-C
/// would, so its flow-run processes are stopped too, then kills it if it lingers.
#[derive(Debug)]
pub struct ExampleWorker {
    child: Child,
}

impl ExampleWorker {
    /// The example's process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn terminate(&self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for ExampleWorker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.terminate();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the example on `pool` as `name` against `api_url`, with fast intervals; its
/// output (and its flow runs' output) goes to `log`. Flow runs find `prefect` in the
/// repo's venv and keep their Prefect home under `home`.
pub fn spawn_process_worker(
    api_url: &str,
    pool: &str,
    name: &str,
    log: &Path,
    home: &Path,
) -> Result<ExampleWorker> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let venv_bin = repo_root().join(".venv/bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    );
    let child = Command::new(example_binary()?)
        .args([pool, name])
        .env("PATH", path)
        .env("PREFECT_API_URL", api_url)
        .env("PREFECT_HOME", home)
        .env("PREFECT_PROFILES_PATH", home.join("profiles.toml"))
        .env("PREFECT_WORKER_QUERY_SECONDS", "0.5")
        .env("PREFECT_WORKER_CANCELLATION_POLL_SECONDS", "0.5")
        .env("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.2")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?;
    Ok(ExampleWorker { child })
}

/// Whether process `pid` exists and is not a zombie.
#[must_use]
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    })
}
