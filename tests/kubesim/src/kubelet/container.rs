//! One container's life on the node: pull, config, start, run, stop, restart.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::behaviour::{Behaviour, SHORT_RUN, from_image};
use super::process::{self, Launch};
use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::object::Object;

/// Sent by a container task to its pod worker.
#[derive(Debug)]
pub struct ContainerUpdate {
    /// Index in `spec.containers`.
    pub index: usize,
    /// The new status.
    pub status: ContainerStatus,
    /// The container will not run again (pod phase may become terminal).
    pub finished: bool,
    /// Set by `sim/evict`: the pod must be evicted with this message.
    pub evict: Option<String>,
}

/// What a container task knows about its pod.
#[derive(Debug)]
pub struct ContainerCtx {
    /// Shared cluster.
    pub cluster: Arc<Cluster>,
    /// The pod as bound to the node.
    pub pod: Pod,
    /// Index of this container.
    pub index: usize,
    /// Working directory for its process.
    pub work_dir: std::path::PathBuf,
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

enum Ending {
    Exited(i32, Option<&'static str>),
    Stopped(i32),
    Evicted(String),
}

impl ContainerCtx {
    fn container(&self) -> Container {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.get(self.index).cloned())
            .unwrap_or_default()
    }

    fn pod_ref(&self) -> (String, String, String) {
        let m = &self.pod.metadata;
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
        )
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        let (ns, name, _) = self.pod_ref();
        self.cluster.with_store(|s| {
            if let Some(p) = s.get(Kind::Pod, &ns, &name) {
                s.record_event(&p, type_, reason, message, "kubelet");
            }
        });
    }
}

/// Wait for `d` unless a stop arrives first; returns the stop grace if stopped.
async fn sleep_or_stop(
    d: Duration,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Option<Duration> {
    if let Some(g) = *stop.borrow() {
        return Some(g);
    }
    tokio::select! {
        () = tokio::time::sleep(d) => None,
        r = stop.changed() => match r {
            Ok(()) => *stop.borrow(),
            Err(_) => Some(Duration::ZERO),
        },
    }
}

async fn wait_stop(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(g) = *stop.borrow() {
            return g;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Run the container until it finishes for good or the pod is stopped.
pub async fn run(
    ctx: ContainerCtx,
    tx: mpsc::UnboundedSender<ContainerUpdate>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let c = ctx.container();
    let image = c.image.clone().unwrap_or_default();
    let behaviour = from_image(&image);
    let (ns, pod_name, pod_uid) = ctx.pod_ref();
    let mut status = ContainerStatus {
        name: c.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        ready: false,
        started: Some(false),
        restart_count: 0,
        state: Some(waiting("ContainerCreating", None)),
        ..Default::default()
    };
    let send = |status: &ContainerStatus, finished: bool, evict: Option<String>| {
        let _ = tx.send(ContainerUpdate {
            index: ctx.index,
            status: status.clone(),
            finished,
            evict,
        });
    };
    send(&status, false, None);

    // Image "pull".
    match &behaviour {
        Behaviour::InvalidImage(msg) => {
            ctx.event("Warning", "InspectFailed", msg);
            ctx.event("Warning", "Failed", "Error: InvalidImageName");
            status.state = Some(waiting("InvalidImageName", Some(msg.clone())));
            send(&status, false, None);
            wait_stop(&mut stop).await;
            send(&status, true, None);
            return;
        }
        Behaviour::PullError => {
            let mut backoff = ctx.cluster.config.image_pull_backoff;
            loop {
                ctx.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
                let msg = format!(
                    "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/{image}:latest\": failed to resolve reference \"docker.io/{image}:latest\": docker.io/{image}:latest: not found"
                );
                ctx.event("Warning", "Failed", &msg);
                ctx.event("Warning", "Failed", "Error: ErrImagePull");
                status.state = Some(waiting("ErrImagePull", Some(msg)));
                send(&status, false, None);
                if sleep_or_stop(backoff, &mut stop).await.is_some() {
                    break;
                }
                let msg = format!("Back-off pulling image \"{image}\"");
                ctx.event("Normal", "BackOff", &msg);
                ctx.event("Warning", "Failed", "Error: ImagePullBackOff");
                status.state = Some(waiting("ImagePullBackOff", Some(msg)));
                send(&status, false, None);
                if sleep_or_stop(backoff, &mut stop).await.is_some() {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
            send(&status, true, None);
            return;
        }
        _ => {
            ctx.event("Normal", "Pulling", &format!("Pulling image \"{image}\""));
            ctx.event(
                "Normal",
                "Pulled",
                &format!("Successfully pulled image \"{image}\" in 1ms (1ms including waiting). Image size: 0 bytes."),
            );
        }
    }
    status.image_id = format!("kubesim://{image}");

    loop {
        // Configuration (env / secrets), retried like the kubelet's sync loop.
        let env = loop {
            let resolved = if behaviour == Behaviour::ConfigError {
                Err("configmap \"kubesim-config-error\" not found".to_string())
            } else {
                ctx.cluster.with_store(|s| {
                    let p = s.get(Kind::Pod, &ns, &pod_name);
                    let pod = match p.as_deref() {
                        Some(Object::Pod(p)) => (**p).clone(),
                        _ => ctx.pod.clone(),
                    };
                    super::env::resolve(s, &pod, &c)
                })
            };
            match resolved {
                Ok(env) => break env,
                Err(msg) => {
                    let first = status
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        != Some("CreateContainerConfigError");
                    if first {
                        ctx.event("Warning", "Failed", &format!("Error: {msg}"));
                    }
                    status.state = Some(waiting("CreateContainerConfigError", Some(msg)));
                    send(&status, false, None);
                    if sleep_or_stop(Duration::from_secs(1), &mut stop)
                        .await
                        .is_some()
                    {
                        send(&status, true, None);
                        return;
                    }
                }
            }
        };

        let log = ctx.cluster.logs.new_instance(&pod_uid, &c.name);
        let container_id = format!("kubesim://{}", uuid::Uuid::new_v4().simple());
        ctx.event(
            "Normal",
            "Created",
            &format!("Created container: {}", c.name),
        );
        let started_at = Time(crate::clock::now());

        let mut proc = None;
        if behaviour == Behaviour::Process {
            let argv: Vec<String> = match (&c.command, &c.args) {
                (Some(cmd), args) if !cmd.is_empty() => {
                    cmd.iter().chain(args.iter().flatten()).cloned().collect()
                }
                (_, Some(args)) => args.clone(),
                _ => Vec::new(),
            };
            // The kubelet expands $(VAR) in command and args from the container env.
            let vars: std::collections::BTreeMap<String, String> = env.iter().cloned().collect();
            let argv: Vec<String> = argv.iter().map(|a| super::env::expand(a, &vars)).collect();
            let mut full_env = vec![
                ("HOSTNAME".to_string(), pod_name.clone()),
                ("HOME".to_string(), ctx.work_dir.display().to_string()),
            ];
            full_env.extend(ctx.cluster.config.kubelet_env.iter().cloned());
            full_env.extend(env);
            let path = ctx
                .cluster
                .config
                .kubelet_path
                .clone()
                .or_else(|| std::env::var_os("PATH"))
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            let _ = std::fs::create_dir_all(&ctx.work_dir);
            let launch = Launch {
                argv: &argv,
                env: &full_env,
                cwd: &ctx.work_dir,
                path,
            };
            match process::spawn(&launch, &log, &ctx.cluster.running_processes) {
                Ok(p) => proc = Some(p),
                Err(e) => {
                    let what = argv.first().cloned().unwrap_or_default();
                    let msg = if argv.is_empty() {
                        "failed to create containerd task: kubesim runs command/args as a local process, and this container has neither".to_string()
                    } else {
                        format!(
                            "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{what}\": {e}: unknown"
                        )
                    };
                    log.close();
                    ctx.event("Warning", "Failed", &format!("Error: {msg}"));
                    let now = Time(crate::clock::now());
                    status.state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 128,
                            reason: Some("StartError".into()),
                            message: Some(msg),
                            started_at: Some(Time(Timestamp::UNIX_EPOCH)),
                            finished_at: Some(now),
                            container_id: Some(container_id.clone()),
                            signal: None,
                        }),
                        ..Default::default()
                    });
                    status.container_id = Some(container_id);
                    status.ready = false;
                    status.started = Some(false);
                    if !restart_after(&ctx, &c, &mut status, 128, &mut stop, &send).await {
                        return;
                    }
                    continue;
                }
            }
        }
        ctx.event(
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        status.container_id = Some(container_id.clone());
        status.ready = true;
        status.started = Some(true);
        status.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..Default::default()
        });
        send(&status, false, None);

        let ending = match (&behaviour, proc.as_mut()) {
            (_, Some(p)) => {
                tokio::select! {
                    code = p.wait() => Ending::Exited(code, None),
                    grace = wait_stop(&mut stop) => {
                        ctx.event("Normal", "Killing", &format!("Stopping container {}", c.name));
                        Ending::Stopped(p.stop(grace).await)
                    }
                }
            }
            (b, None) => {
                let (run_for, end) = match b {
                    Behaviour::Exit(code) => {
                        log.push(format!("kubesim: exiting with code {code}\n"));
                        (SHORT_RUN, Ending::Exited(*code, None))
                    }
                    Behaviour::Sleep(d) => {
                        log.push(format!("kubesim: sleeping {}s\n", d.as_secs_f64()));
                        (*d, Ending::Exited(0, None))
                    }
                    Behaviour::Oom => (SHORT_RUN, Ending::Exited(137, Some("OOMKilled"))),
                    Behaviour::Evict(d) => (
                        *d,
                        Ending::Evicted(format!(
                            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container {} was using 1Gi, request is 0, has larger consumption of memory. ",
                            c.name
                        )),
                    ),
                    _ => (SHORT_RUN, Ending::Exited(0, None)),
                };
                match sleep_or_stop(run_for, &mut stop).await {
                    None => end,
                    Some(_) => {
                        ctx.event(
                            "Normal",
                            "Killing",
                            &format!("Stopping container {}", c.name),
                        );
                        // A scripted container dies on SIGTERM like `sleep` would.
                        Ending::Stopped(143)
                    }
                }
            }
        };
        log.close();
        let (code, reason, evict) = match ending {
            Ending::Exited(code, reason) => (code, reason, None),
            Ending::Stopped(code) => (code, None, None),
            Ending::Evicted(msg) => (137, None, Some(msg)),
        };
        let reason = reason.unwrap_or(if code == 0 { "Completed" } else { "Error" });
        status.ready = false;
        status.started = Some(false);
        status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                message: None,
                started_at: Some(started_at),
                finished_at: Some(Time(crate::clock::now())),
                container_id: Some(container_id),
                signal: None,
            }),
            ..Default::default()
        });
        if evict.is_some() {
            send(&status, true, evict);
            return;
        }
        if stop.borrow().is_some() {
            send(&status, true, None);
            return;
        }
        if !restart_after(&ctx, &c, &mut status, code, &mut stop, &send).await {
            return;
        }
    }
}

/// After an exit: either report the container finished (returns false) or
/// back off and prepare the restart (returns true).
async fn restart_after(
    ctx: &ContainerCtx,
    c: &Container,
    status: &mut ContainerStatus,
    code: i32,
    stop: &mut watch::Receiver<Option<Duration>>,
    send: &impl Fn(&ContainerStatus, bool, Option<String>),
) -> bool {
    let policy = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let restart = match policy {
        "Always" => true,
        "OnFailure" => code != 0,
        _ => false,
    };
    if !restart {
        send(status, true, None);
        return false;
    }
    let (ns, pod_name, pod_uid) = ctx.pod_ref();
    let backoff = ctx.cluster.config.crash_loop_backoff;
    let last = status.state.take();
    status.last_state = last;
    status.restart_count += 1;
    let msg = format!(
        "back-off {}s restarting failed container={} pod={pod_name}_{ns}({pod_uid})",
        backoff.as_secs(),
        c.name
    );
    status.state = Some(waiting("CrashLoopBackOff", Some(msg)));
    send(status, false, None);
    ctx.event(
        "Warning",
        "BackOff",
        &format!(
            "Back-off restarting failed container {} in pod {pod_name}_{ns}({pod_uid})",
            c.name
        ),
    );
    if sleep_or_stop(backoff, stop).await.is_some() {
        send(status, true, None);
        return false;
    }
    true
}
