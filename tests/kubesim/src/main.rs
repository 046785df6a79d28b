//! `kubesim`: run the simulated cluster until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A simulated Kubernetes API server, Job controller and process-running kubelet.
#[derive(Debug, Parser)]
#[command(name = "kubesim", version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, env = "KUBESIM_PORT", default_value_t = 6443)]
    port: u16,
    /// Write a kubeconfig for the cluster here.
    #[arg(long, env = "KUBESIM_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
    /// Context (and cluster/user) name in the written kubeconfig.
    #[arg(long, env = "KUBESIM_CONTEXT", default_value = "kubesim")]
    context: String,
    /// Serve HTTPS with a generated certificate.
    #[arg(long, env = "KUBESIM_TLS")]
    tls: bool,
    /// Require this bearer token.
    #[arg(long, env = "KUBESIM_TOKEN")]
    token: Option<String>,
    /// Root of per-pod working directories (default: a temp dir).
    #[arg(long, env = "KUBESIM_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// PATH for container processes (e.g. a venv's bin first).
    #[arg(long, env = "KUBESIM_KUBELET_PATH")]
    kubelet_path: Option<String>,
    /// Extra KEY=VALUE environment for container processes (repeatable).
    #[arg(
        long = "kubelet-env",
        env = "KUBESIM_KUBELET_ENV",
        value_delimiter = ','
    )]
    kubelet_env: Vec<String>,
    /// Base delay before a failed Job pod is replaced, in seconds.
    #[arg(long, env = "KUBESIM_POD_FAILURE_BACKOFF", default_value_t = 0.0)]
    pod_failure_backoff: f64,
    /// Fraction of requests answered 500.
    #[arg(long, env = "KUBESIM_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction of requests answered 503.
    #[arg(long, env = "KUBESIM_UNAVAILABLE_RATE", default_value_t = 0.0)]
    unavailable_rate: f64,
    /// Fraction of requests answered 429.
    #[arg(long, env = "KUBESIM_THROTTLE_RATE", default_value_t = 0.0)]
    throttle_rate: f64,
    /// Retry-After seconds for 429 answers.
    #[arg(long, env = "KUBESIM_RETRY_AFTER", default_value_t = 1)]
    retry_after: u64,
    /// Latency added to every API request, in milliseconds.
    #[arg(long, env = "KUBESIM_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Cut watch streams after this many seconds.
    #[arg(long, env = "KUBESIM_WATCH_CUT_SECONDS")]
    watch_cut_seconds: Option<u64>,
    /// Cut watch streams after this many events.
    #[arg(long, env = "KUBESIM_WATCH_CUT_EVENTS")]
    watch_cut_events: Option<u64>,
    /// Namespaces answered 403 Forbidden (repeatable / comma-separated).
    #[arg(
        long = "forbid-namespace",
        env = "KUBESIM_FORBIDDEN_NAMESPACES",
        value_delimiter = ','
    )]
    forbidden_namespaces: Vec<String>,
    /// Namespaces whose pod creation fails with `exceeded quota`.
    #[arg(
        long = "quota-exceeded",
        env = "KUBESIM_QUOTA_EXCEEDED",
        value_delimiter = ','
    )]
    quota_exceeded: Vec<String>,
    /// Enforce RBAC with the Roles and ClusterRoles of this YAML file (e.g. a rendered
    /// chart or deploy/rbac.yaml): requests they do not grant are answered 403.
    #[arg(long, env = "KUBESIM_RBAC")]
    rbac: Option<PathBuf>,
    /// The user named in RBAC 403 messages.
    #[arg(long, env = "KUBESIM_RBAC_USER")]
    rbac_user: Option<String>,
    /// Namespaces to create at start (repeatable / comma-separated).
    #[arg(long = "namespace", env = "KUBESIM_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Write the CA certificate (PEM) here, with --tls: what a pod's service account
    /// mount holds as `ca.crt`.
    #[arg(long, env = "KUBESIM_CA_OUT", requires = "tls")]
    ca_out: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "KUBESIM_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    let mut b = kubesim::SimCluster::builder()
        .port(args.port)
        .tls(args.tls)
        .token(args.token.clone())
        .pod_failure_backoff(Duration::from_secs_f64(args.pod_failure_backoff.max(0.0)));
    if let Some(d) = &args.work_dir {
        b = b.work_dir(d);
    }
    if let Some(p) = &args.kubelet_path {
        b = b.kubelet_path(p);
    }
    for kv in &args.kubelet_env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("--kubelet-env expects KEY=VALUE, got {kv:?}").into());
        };
        b = b.kubelet_env(k, v);
    }
    let rbac = match &args.rbac {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--rbac: cannot read {}: {e}", path.display()))?;
            let rbac = kubesim::Rbac::from_yaml(&text)
                .map_err(|e| format!("--rbac {}: {e}", path.display()))?;
            Some(match &args.rbac_user {
                Some(u) => rbac.with_user(u),
                None => rbac,
            })
        }
        None => None,
    };
    let sim = b.build().start().await?;
    for ns in &args.namespaces {
        sim.create(k8s_openapi::api::core::v1::Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        })?;
    }
    sim.set_rbac(rbac);
    if let (Some(path), Some(ca)) = (&args.ca_out, sim.ca_pem()) {
        std::fs::write(path, ca)?;
    }
    sim.update_faults(|f| {
        f.error_rate_500 = args.error_rate;
        f.error_rate_503 = args.unavailable_rate;
        f.throttle_rate = args.throttle_rate;
        f.retry_after_seconds = args.retry_after;
        f.latency_ms = args.latency_ms;
        f.watch_cut_after_seconds = args.watch_cut_seconds;
        f.watch_cut_after_events = args.watch_cut_events;
        f.forbidden_namespaces = args.forbidden_namespaces.iter().cloned().collect();
    });
    for ns in &args.quota_exceeded {
        sim.set_quota_exceeded(ns, true);
    }
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path, &args.context)?;
    }
    #[allow(clippy::print_stdout)] // The binary reports where it listens.
    {
        println!("kubesim listening on {}", sim.url());
        if let Some(path) = &args.kubeconfig_out {
            println!(
                "kubeconfig written to {} (context {})",
                path.display(),
                args.context
            );
        }
        println!("admin endpoint: {}/_sim/faults", sim.url());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}
