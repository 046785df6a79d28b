//! Starting, pausing and stopping a real Prefect server through
//! `scripts/prefect-server.sh`.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::api::PrefectApi;

/// Which database the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite file in the server's throw-away `PREFECT_HOME`.
    Sqlite,
    /// A private PostgreSQL cluster (initdb into a temp dir) on a free port.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// How to start a server. `ServerOptions::new(Backend::Sqlite)` gives the defaults.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Database backend.
    pub backend: Backend,
    /// Fixed port; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra environment for the server process, e.g.
    /// `("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false")` or
    /// `("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "5")`.
    /// Also applied when the server is started again after [`PrefectServer::pause`].
    pub env: Vec<(String, String)>,
    /// Upper bound for one start (health check included).
    pub startup_timeout: Duration,
}

impl ServerOptions {
    /// Defaults for `backend`: free port, no extra env, 180 s startup bound.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            port: None,
            env: Vec::new(),
            startup_timeout: Duration::from_secs(180),
        }
    }

    /// Adds one environment variable for the server process.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Uses a fixed port.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// A running (or paused) Prefect server owned by this test process.
///
/// Dropping it stops the server and its database and removes its temp dirs.
/// If the test process dies without dropping it (statics, `SIGKILL`), a
/// watchdog started by the script notices within about half a second and
/// stops everything, so no server outlives `cargo test`.
///
/// All methods are blocking (plain `std::process`), so they work from any
/// thread and any tokio runtime; the `*_async` variants run them on tokio's
/// blocking pool and return `'static` futures that can be `tokio::spawn`ed.
pub struct PrefectServer {
    inner: Arc<Inner>,
}

struct Inner {
    script: PathBuf,
    state_dir: PathBuf,
    api_url: String,
    port: u16,
    backend: Backend,
    home: PathBuf,
    env: Vec<(String, String)>,
    startup_timeout: Duration,
    /// Serialises control operations; `true` once fully stopped.
    control: Mutex<bool>,
}

impl fmt::Debug for PrefectServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefectServer")
            .field("api_url", &self.inner.api_url)
            .field("backend", &self.inner.backend)
            .field("state_dir", &self.inner.state_dir)
            .finish_non_exhaustive()
    }
}

/// Repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Path of `scripts/prefect-server.sh`.
pub fn script_path() -> PathBuf {
    repo_root().join("scripts/prefect-server.sh")
}

/// Runs `prefect-server.sh provision [--postgres]` at most once per backend
/// per process (the script itself is idempotent and takes a lock).
pub fn provision(backend: Backend) -> Result<()> {
    static SQLITE: OnceLock<Result<(), String>> = OnceLock::new();
    static POSTGRES: OnceLock<Result<(), String>> = OnceLock::new();
    let (cell, args): (_, &[&str]) = match backend {
        Backend::Sqlite => (&SQLITE, &["provision"]),
        Backend::Postgres => (&POSTGRES, &["provision", "--postgres"]),
    };
    cell.get_or_init(|| {
        run_script(&script_path(), args, &[], Duration::from_secs(1800))
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn lock(m: &Mutex<bool>) -> MutexGuard<'_, bool> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PrefectServer {
    /// Provisions if needed and starts a fresh server with default options.
    pub fn start(backend: Backend) -> Result<Self> {
        Self::start_with(ServerOptions::new(backend))
    }

    /// Provisions if needed and starts a fresh server.
    pub fn start_with(opts: ServerOptions) -> Result<Self> {
        provision(opts.backend)?;
        let script = script_path();
        let state_dir = tempfile::Builder::new()
            .prefix("prefect-test-state.")
            .tempdir()
            .context("creating a state dir")?
            .keep();
        let pid = std::process::id().to_string();
        let state = state_dir.to_string_lossy().into_owned();
        let mut args = vec!["start", "--state-dir", state.as_str(), "--watch-pid", &pid];
        if opts.backend == Backend::Postgres {
            args.push("--postgres");
        }
        let port_s;
        if let Some(p) = opts.port {
            port_s = p.to_string();
            args.extend(["--port", port_s.as_str()]);
        }
        let env = with_timeout_env(&opts.env, opts.startup_timeout);
        let started = run_script(
            &script,
            &args,
            &env,
            opts.startup_timeout + Duration::from_secs(60),
        );
        let out = match started {
            Ok(out) => out,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                return Err(e.context(format!("starting a {} Prefect server", opts.backend)));
            }
        };
        let api_url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let kv = read_state(&state_dir)?;
        let port = kv
            .iter()
            .find(|(k, _)| k == "PORT")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| anyhow!("no PORT in state file"))?;
        let home = kv
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v))
            .ok_or_else(|| anyhow!("no HOME in state file"))?;
        if !api_url.starts_with("http://127.0.0.1:") {
            bail!("unexpected output from start: {api_url:?}");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                script,
                state_dir,
                api_url,
                port,
                backend: opts.backend,
                home,
                env: opts.env,
                startup_timeout: opts.startup_timeout,
                control: Mutex::new(false),
            }),
        })
    }

    /// One server per backend per test binary, started on first use and never
    /// stopped explicitly (the watchdog stops it when the process exits).
    ///
    /// Do not pause or restart the shared server: other tests use it. Fault
    /// tests start their own with [`PrefectServer::start`].
    ///
    /// # Panics
    /// If the server cannot be started (the error is repeated for every caller).
    pub fn shared(backend: Backend) -> &'static PrefectServer {
        match Self::try_shared(backend) {
            Ok(s) => s,
            Err(e) => panic!("shared {backend} Prefect server unavailable: {e}"),
        }
    }

    /// Like [`PrefectServer::shared`], returning the start error instead of panicking.
    pub fn try_shared(backend: Backend) -> Result<&'static PrefectServer> {
        static SQLITE: OnceLock<Result<PrefectServer, String>> = OnceLock::new();
        static POSTGRES: OnceLock<Result<PrefectServer, String>> = OnceLock::new();
        let cell = match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        cell.get_or_init(|| Self::start(backend).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// `http://127.0.0.1:<port>/api`
    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    /// The server's port (kept across pause/restart).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The database backend.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The server's `PREFECT_HOME` (SQLite database and `server.log` live here).
    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    /// Where the script keeps `server.env`.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// Last `lines` lines of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.inner.home.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A fresh API client for this server (no connection pool, so it stays
    /// valid across restarts and tokio runtimes).
    pub fn api(&self) -> PrefectApi {
        PrefectApi::new(self.inner.api_url.clone())
    }

    /// Stops the Prefect server process only; port, `PREFECT_HOME` and the
    /// database (SQLite file or PostgreSQL cluster) stay. Requests get
    /// "connection refused" until [`PrefectServer::resume`].
    pub fn pause(&self) -> Result<()> {
        self.inner.pause()
    }

    /// Starts the Prefect server again after [`PrefectServer::pause`], on the
    /// same port with the same database; returns once `/api/health` answers.
    pub fn resume(&self) -> Result<()> {
        self.inner.resume()
    }

    /// Like [`PrefectServer::pause`], but a crash: SIGKILL, no graceful shutdown. The
    /// database stays; [`PrefectServer::resume`] starts the server again.
    pub fn kill(&self) -> Result<()> {
        self.inner.kill()
    }

    /// [`PrefectServer::kill`] on tokio's blocking pool.
    pub fn kill_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(Inner::kill)
    }

    /// `pause` then `resume`.
    pub fn restart(&self) -> Result<()> {
        self.inner.pause()?;
        self.inner.resume()
    }

    /// The server is down for (at least) `outage`, then up again. Blocks for
    /// the whole time; from async code use [`PrefectServer::stop_for_async`].
    pub fn stop_for(&self, outage: Duration) -> Result<()> {
        self.inner.stop_for(outage)
    }

    /// Stops the server, then its database; removes temp dirs. Idempotent.
    pub fn stop(&self) -> Result<()> {
        self.inner.stop()
    }

    /// [`PrefectServer::pause`] on tokio's blocking pool.
    pub fn pause_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(Inner::pause)
    }

    /// [`PrefectServer::resume`] on tokio's blocking pool.
    pub fn resume_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(Inner::resume)
    }

    /// [`PrefectServer::restart`] on tokio's blocking pool.
    pub fn restart_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(|i| {
            i.pause()?;
            i.resume()
        })
    }

    /// [`PrefectServer::stop_for`] that does not block the runtime; `'static`,
    /// so it can run beside the code under test:
    /// `let outage = tokio::spawn(server.stop_for_async(Duration::from_secs(20)));`
    pub fn stop_for_async(
        &self,
        outage: Duration,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            let i = Arc::clone(&inner);
            join(tokio::task::spawn_blocking(move || i.pause())).await?;
            tokio::time::sleep(outage).await;
            join(tokio::task::spawn_blocking(move || inner.resume())).await
        }
    }

    /// [`PrefectServer::stop`] on tokio's blocking pool.
    pub fn stop_async(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(Inner::stop)
    }

    fn blocking(
        &self,
        f: fn(&Inner) -> Result<()>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move { join(tokio::task::spawn_blocking(move || f(&inner))).await }
    }
}

async fn join(h: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    h.await.map_err(|e| anyhow!("blocking task failed: {e}"))?
}

impl Drop for PrefectServer {
    fn drop(&mut self) {
        let _ = self.inner.stop();
    }
}

impl Inner {
    fn state_arg(&self) -> String {
        self.state_dir.to_string_lossy().into_owned()
    }

    fn env(&self) -> Vec<(String, String)> {
        with_timeout_env(&self.env, self.startup_timeout)
    }

    fn pause(&self) -> Result<()> {
        self.stop_with("server-stop")
    }

    fn kill(&self) -> Result<()> {
        self.stop_with("server-kill")
    }

    /// Stops the running server with the script's `command` (`server-stop` or `server-kill`).
    fn stop_with(&self, command: &str) -> Result<()> {
        let stopped = lock(&self.control);
        if *stopped {
            bail!("server already stopped");
        }
        let state = self.state_arg();
        run_script(
            &self.script,
            &[command, "--state-dir", &state],
            &[],
            Duration::from_secs(60),
        )
        .map(drop)
    }

    fn resume(&self) -> Result<()> {
        let stopped = lock(&self.control);
        if *stopped {
            bail!("server already stopped");
        }
        let state = self.state_arg();
        run_script(
            &self.script,
            &["server-start", "--state-dir", &state],
            &self.env(),
            self.startup_timeout + Duration::from_secs(60),
        )
        .map(drop)
    }

    fn stop_for(&self, outage: Duration) -> Result<()> {
        self.pause()?;
        std::thread::sleep(outage);
        self.resume()
    }

    fn stop(&self) -> Result<()> {
        let mut stopped = lock(&self.control);
        if *stopped {
            return Ok(());
        }
        let state = self.state_arg();
        run_script(
            &self.script,
            &["stop", "--state-dir", &state],
            &[],
            Duration::from_secs(120),
        )?;
        *stopped = true;
        let _ = std::fs::remove_dir_all(&self.state_dir);
        Ok(())
    }
}

fn with_timeout_env(env: &[(String, String)], timeout: Duration) -> Vec<(String, String)> {
    let mut v = env.to_vec();
    v.push((
        "PREFECT_TEST_STARTUP_TIMEOUT".to_owned(),
        timeout.as_secs().max(1).to_string(),
    ));
    v
}

fn read_state(dir: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dir.join("server.env"))
        .with_context(|| format!("reading {}/server.env", dir.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Runs the script with a deadline; stdout is returned, stderr goes into the
/// error on failure.
fn run_script(
    script: &Path,
    args: &[&str],
    env: &[(String, String)],
    deadline: Duration,
) -> Result<Output> {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(OsString::from(k), OsString::from(v));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {} {}", script.display(), args.join(" ")))?;
    // Wait on a helper thread so a hung script cannot hang the test forever.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(deadline) {
        Ok(r) => r.context("waiting for prefect-server.sh")?,
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            bail!(
                "prefect-server.sh {} did not finish within {:?}",
                args.join(" "),
                deadline
            );
        }
    };
    if !out.status.success() {
        bail!(
            "prefect-server.sh {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
