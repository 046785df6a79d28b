//! Running a container as a local process group, capturing its output, and
//! stopping it the way the kubelet does (SIGTERM, then SIGKILL after the grace).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::logs::ContainerLog;

/// A running container process (the leader of its own process group).
#[derive(Debug)]
pub struct Process {
    child: Child,
    pgid: Option<Pid>,
    readers: Vec<JoinHandle<()>>,
    running: Arc<AtomicUsize>,
    finished: bool,
}

/// What to run and how.
#[derive(Debug)]
pub struct Launch<'a> {
    /// argv; `argv[0]` is looked up on `path`.
    pub argv: &'a [String],
    /// Environment (the process gets nothing else).
    pub env: &'a [(String, String)],
    /// Working directory.
    pub cwd: &'a Path,
    /// PATH used both for the lookup and inside the process.
    pub path: OsString,
}

/// Spawn the process; stdout and stderr lines go to `log`.
pub fn spawn(
    l: &Launch<'_>,
    log: &Arc<ContainerLog>,
    running: &Arc<AtomicUsize>,
) -> std::io::Result<Process> {
    let Some((prog, args)) = l.argv.split_first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no command",
        ));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", &l.path)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .current_dir(l.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so stopping the container stops everything it started.
        .process_group(0)
        // A dropped simulator must not leave processes behind.
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, log.clone())));
    }
    running.fetch_add(1, Ordering::SeqCst);
    Ok(Process {
        child,
        pgid,
        readers,
        running: running.clone(),
        finished: false,
    })
}

async fn pump(r: impl AsyncRead + Unpin, log: Arc<ContainerLog>) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => log.push(String::from_utf8_lossy(&buf).into_owned()),
        }
    }
}

/// The exit code as a container runtime reports it (128 + signal when killed).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

impl Process {
    /// Send `sig` to the whole group.
    pub fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid
            && !self.finished
        {
            // ESRCH just means the group is already gone.
            let _ = killpg(pgid, sig);
        }
    }

    /// Wait for the leader to exit and collect its output.
    pub async fn wait(&mut self) -> i32 {
        let code = match self.child.wait().await {
            Ok(s) => exit_code(s),
            Err(_) => 255,
        };
        self.reap().await;
        code
    }

    /// SIGTERM, then SIGKILL if still alive after `grace`; returns the exit code.
    pub async fn stop(&mut self, grace: Duration) -> i32 {
        if grace.is_zero() {
            self.signal(Signal::SIGKILL);
        } else {
            self.signal(Signal::SIGTERM);
        }
        let code = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(s)) => exit_code(s),
            Ok(Err(_)) => 255,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await.map_or(137, exit_code)
            }
        };
        self.reap().await;
        code
    }

    /// After the leader exits: kill what is left of the group (the runtime
    /// tears the whole container down) and let the log pumps drain.
    async fn reap(&mut self) {
        self.signal(Signal::SIGKILL);
        for r in self.readers.drain(..) {
            // Pumps end when the pipes close; a stray holder was just killed.
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        if !self.finished {
            self.finished = true;
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.finished {
            self.signal(Signal::SIGKILL);
            self.finished = true;
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
