//! The binary's web server: `/health` with `--with-healthcheck`, `/metrics` with
//! `--with-metrics` (or `PREFECT_WORKER_WITH_METRICS`), each a 404 without its switch, as
//! Python's server answers unknown paths. The worker is pointed at a closed port: it
//! serves before any API call and keeps retrying, so no Prefect server is needed.

// Fixtures: a binary that cannot run is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str], env: &[(&str, &str)]) -> (Worker, u16) {
    let port = free_port();
    let mut c = Command::new(env!("CARGO_BIN_EXE_prefect-worker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PREFECT_") {
            c.env_remove(k);
        }
    }
    c.args(["start", "--pool", "web-test", "--type", "kubernetes"])
        .args(args)
        .env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml")
        .env("PREFECT_API_URL", "http://127.0.0.1:1/api")
        .env("PREFECT_WORKER_WEBSERVER_HOST", "127.0.0.1")
        .env("PREFECT_WORKER_WEBSERVER_PORT", port.to_string())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let worker = Worker(c.spawn().unwrap());
    // Wait for the server to listen (a condition, with a generous deadline).
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the web server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (worker, port)
}

/// `GET path` → (status, body), HTTP/1.1 with `Connection: close`.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

const NOT_FOUND: &str = r#"{"detail":"Not Found"}"#;

#[test]
fn metrics_and_health_follow_their_switches() {
    // Both, metrics through the environment.
    let (_w, port) = start(
        &["--with-healthcheck"],
        &[("PREFECT_WORKER_WITH_METRICS", "true")],
    );
    assert_eq!(get(port, "/health").0, 200);
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    for family in [
        "prefect_worker_flow_runs_claimed_total 0",
        "prefect_worker_flow_runs_in_flight 0",
        "prefect_worker_kubernetes_watched_namespaces 0",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.contains(family), "{family} missing from\n{body}");
    }
    assert_eq!(get(port, "/other"), (404, NOT_FOUND.to_owned()));
    // The unreachable API's attempts are counted, with the route template.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = get(port, "/metrics").1;
        if body.contains(r#"endpoint="/work_pools/{name}",status="connect_error""#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt counted:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Metrics alone: no /health.
    let (_w, port) = start(&["--with-metrics"], &[]);
    assert_eq!(get(port, "/metrics").0, 200);
    assert_eq!(get(port, "/health"), (404, NOT_FOUND.to_owned()));

    // The health check alone, as Python's worker: /metrics is a 404.
    let (_w, port) = start(&["--with-healthcheck"], &[]);
    assert_eq!(get(port, "/health").0, 200);
    assert_eq!(get(port, "/metrics"), (404, NOT_FOUND.to_owned()));
}
