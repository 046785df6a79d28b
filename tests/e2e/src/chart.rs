//! The prefect-worker Helm chart as a test fixture (`tests/e2e/fixtures/prefect-worker-chart`,
//! what the chart renders), and its containers run as local processes the way the
//! kubelet runs them: the container's command and args, its env, its working directory,
//! and — when the tests run as root, as CI does — its `runAsUser: 1001`.
//!
//! A [`Pod`] is a directory standing in for the image and the pod's volumes: `bin/`
//! (on PATH: the image's `/opt/prefect/entrypoint.sh`, `prefect-worker` and the
//! `prefect` link), `home/` (HOME: the chart's emptyDir, the only place the worker may
//! write) and `work/` (the working directory, read-only, holding `baseJobTemplate.json`
//! as the chart's ConfigMap mount does).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use prefect_test_harness::repo_root;
use serde::Deserialize;

/// The chart's `runAsUser`.
pub const CHART_UID: u32 = 1001;

/// Where the rendered chart lives.
#[must_use]
pub fn fixture_dir() -> PathBuf {
    repo_root().join("tests/e2e/fixtures/prefect-worker-chart")
}

/// The rendered chart: its documents and its worker Deployment.
#[derive(Debug)]
pub struct ChartFixture {
    /// `rendered.yaml`, as text (kubesim's RBAC reads the Role from it).
    pub rendered: String,
    /// The worker Deployment.
    pub deployment: Deployment,
    /// The ConfigMap's `baseJobTemplate.json`.
    pub base_job_template: String,
}

impl ChartFixture {
    /// Loads and parses the fixture.
    pub fn load() -> Result<Self> {
        let rendered = std::fs::read_to_string(fixture_dir().join("rendered.yaml"))?;
        let mut deployment = None;
        let mut base_job_template = None;
        for doc in serde_yaml::Deserializer::from_str(&rendered) {
            let value = serde_yaml::Value::deserialize(doc)?;
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("Deployment") => deployment = Some(serde_yaml::from_value(value)?),
                Some("ConfigMap") => {
                    base_job_template = value
                        .get("data")
                        .and_then(|d| d.get("baseJobTemplate.json"))
                        .and_then(|t| t.as_str())
                        .map(str::to_owned);
                }
                _ => {}
            }
        }
        Ok(Self {
            rendered,
            deployment: deployment.context("no Deployment in rendered.yaml")?,
            base_job_template: base_job_template.context("no baseJobTemplate.json ConfigMap")?,
        })
    }

    fn pod_spec(&self) -> Result<&k8s_openapi::api::core::v1::PodSpec> {
        self.deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .context("the Deployment has no pod spec")
    }

    /// The `prefect-worker` container.
    pub fn worker_container(&self) -> Result<&Container> {
        self.pod_spec()?
            .containers
            .iter()
            .find(|c| c.name == "prefect-worker")
            .context("no prefect-worker container")
    }

    /// The `sync-base-job-template` init container.
    pub fn init_container(&self) -> Result<&Container> {
        self.pod_spec()?
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "sync-base-job-template")
            .context("no sync-base-job-template init container")
    }

    /// The pod's `runAsUser`.
    pub fn run_as_user(&self) -> Option<i64> {
        self.pod_spec().ok()?.security_context.as_ref()?.run_as_user
    }
}

/// Whether this process runs as root (then the pod's processes run as [`CHART_UID`]).
#[must_use]
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The directories standing in for the image and the pod's volumes.
#[derive(Debug)]
pub struct Pod {
    root: tempfile::TempDir,
    /// On PATH: `entrypoint.sh`, `prefect-worker`, `prefect` → `prefect-worker`.
    pub bin: PathBuf,
    /// HOME, writable by the pod's user.
    pub home: PathBuf,
    /// The working directory, read-only for the pod's user.
    pub work: PathBuf,
    /// The uid the processes run as, when the tests run as root.
    pub run_as: Option<u32>,
    /// When the pod was made (files written after it are the pod's).
    pub started: SystemTime,
}

impl Pod {
    /// Lays out a pod: `home_files` are written under HOME (e.g. `.kube/config`),
    /// `work_files` in the read-only working directory.
    pub fn new(
        worker_binary: &Path,
        home_files: &[(&str, &str)],
        work_files: &[(&str, &str)],
    ) -> Result<Self> {
        let started = SystemTime::now();
        let root = tempfile::Builder::new().prefix("e2e-pod-").tempdir()?;
        let run_as = running_as_root().then_some(CHART_UID);
        // Everyone may traverse the pod's root; only bin/ and work/ are readable, and
        // only home/ is writable by the pod's user.
        chmod(root.path(), 0o755)?;
        let bin = root.path().join("bin");
        let home = root.path().join("home");
        let work = root.path().join("work");
        for d in [&bin, &home, &work] {
            std::fs::create_dir(d)?;
        }
        std::fs::copy(worker_binary, bin.join("prefect-worker"))?;
        chmod(&bin.join("prefect-worker"), 0o755)?;
        std::os::unix::fs::symlink("prefect-worker", bin.join("prefect"))?;
        let entrypoint = repo_root().join("deploy/image/entrypoint.sh");
        std::fs::copy(&entrypoint, bin.join("entrypoint.sh"))
            .with_context(|| format!("copying {}", entrypoint.display()))?;
        chmod(&bin.join("entrypoint.sh"), 0o755)?;
        chmod(&bin, 0o755)?;
        for (rel, text) in work_files {
            let p = work.join(rel);
            std::fs::write(&p, text)?;
            chmod(&p, 0o444)?;
        }
        chmod(&work, 0o555)?;
        for (rel, text) in home_files {
            let p = home.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, text)?;
            chmod(&p, 0o600)?;
        }
        chmod(&home, 0o700)?;
        if let Some(uid) = run_as {
            chown_tree(&home, uid)?;
        }
        Ok(Self {
            root,
            bin,
            home,
            work,
            run_as,
            started,
        })
    }

    /// The pod's root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A command running `container` as the kubelet would: command + args (the image's
    /// paths mapped into `bin/`), exactly the container's env with `overrides` replacing
    /// values (e.g. HOME, PREFECT_API_URL) and `extra` appended (the chart's extraEnvVars),
    /// the working directory, the pod's user, its own process group.
    pub fn command(
        &self,
        container: &Container,
        overrides: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Result<Command> {
        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        let mut mapped = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            match argv[i].as_str() {
                // PID 1 of the chart's command; without it installed, the entrypoint runs
                // directly (tini only reaps and forwards signals).
                "/usr/bin/tini" if !Path::new("/usr/bin/tini").exists() => {
                    while i < argv.len() && argv[i] != "--" {
                        i += 1;
                    }
                }
                "/opt/prefect/entrypoint.sh" => {
                    mapped.push(self.bin.join("entrypoint.sh").display().to_string());
                }
                a => mapped.push(a.to_owned()),
            }
            i += 1;
        }
        let (program, args) = mapped
            .split_first()
            .context("the container has no command")?;
        let mut cmd = Command::new(program);
        cmd.args(args).env_clear();
        // The image's PATH, with bin/ standing in for /usr/bin's worker binaries.
        cmd.env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.display()),
        );
        let overrides: BTreeMap<&str, &str> = overrides.iter().copied().collect();
        for e in container.env.iter().flatten() {
            if e.value_from.is_some() {
                bail!(
                    "env {} uses valueFrom, which this test cannot resolve",
                    e.name
                );
            }
            let value = overrides
                .get(e.name.as_str())
                .copied()
                .unwrap_or_else(|| e.value.as_deref().unwrap_or(""));
            cmd.env(&e.name, value);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let dir = match container.working_dir.as_deref() {
            Some("/home/prefect") | None => &self.work,
            Some(other) => bail!("unexpected workingDir {other}"),
        };
        cmd.current_dir(dir).stdin(Stdio::null()).process_group(0);
        if let Some(uid) = self.run_as {
            cmd.uid(uid).gid(uid);
        }
        Ok(cmd)
    }

    /// Files below the working directory (relative path → size and mtime).
    pub fn work_listing(&self) -> Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
        listing(&self.work)
    }

    /// Entries owned by the pod's user, modified since the pod was made, in the
    /// places that user could write to outside HOME: the world-writable directories
    /// (`/tmp`, `/var/tmp`, `/dev/shm`) and what they hold. Other pods' roots (each
    /// one's HOME is the pod user's) are skipped. Empty when not running as root (then
    /// the processes run as this user, and only the working directory is checked).
    pub fn written_outside_home(&self) -> Vec<PathBuf> {
        let Some(uid) = self.run_as else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for top in ["/tmp", "/var/tmp", "/dev/shm"] {
            scan_writable(Path::new(top), uid, self.started, &mut found);
        }
        found
    }
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", p.display()))
}

fn chown_tree(p: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))
        .with_context(|| format!("chown {uid} {}", p.display()))?;
    if std::fs::symlink_metadata(p)?.is_dir() {
        for entry in std::fs::read_dir(p)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

fn listing(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path.strip_prefix(dir).unwrap_or(&path).to_path_buf(),
                (meta.len(), meta.modified()?),
            );
        }
    }
    Ok(out)
}

/// Collects entries owned by `uid` and modified since `since`, descending only into
/// directories that `uid` can write to (world-writable ones, or its own).
fn scan_writable(dir: &Path, uid: u32, since: SystemTime, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("e2e-pod-"))
        {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() == uid && meta.modified().is_ok_and(|m| m >= since) {
            found.push(path.clone());
        }
        let writable = meta.uid() == uid || meta.mode() & 0o002 != 0;
        if meta.is_dir() && writable {
            scan_writable(&path, uid, since, found);
        }
    }
}

/// A pod process: killed with its process group when dropped (a failed test leaves
/// nothing running).
#[derive(Debug)]
pub struct PodProcess {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl PodProcess {
    /// Starts `cmd` with stdout and stderr in files under `dir`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Result<Self> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        cmd.stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let child = cmd.spawn().context("starting the pod's process")?;
        Ok(Self {
            child: Some(child),
            stdout,
            stderr,
        })
    }

    /// What it wrote on stderr so far.
    #[must_use]
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it wrote on stdout so far.
    #[must_use]
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn signal_group(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{}", c.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGTERM to the process group, as the kubelet stops a container; its exit status,
    /// or an error if it has not exited within `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        self.signal_group("-TERM");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("still running {grace:?} after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Let the temporary directory go: a non-root owner cannot empty a 0555 directory.
        let _ = chmod(&self.work, 0o755);
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        // SIGTERM first: tini forwards it to the worker, which runs in tini's child's own
        // process group (a SIGKILL would end tini alone and orphan the worker).
        self.signal_group("-TERM");
        if let Some(mut c) = self.child.take() {
            for _ in 0..100 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Still running: its children (the worker under tini) first, then the group.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            self.child = Some(c);
            self.signal_group("-KILL");
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
    }
}
