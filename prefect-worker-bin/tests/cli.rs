//! The binary's own commands: `preview --input` over every golden case, settings
//! precedence through `config`, and clear errors for bad input.

// Fixtures: a binary that cannot run is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prefect-worker"));
    // A clean slate: no inherited Prefect settings or profile.
    for (k, _) in std::env::vars() {
        if k.starts_with("PREFECT_") {
            c.env_remove(k);
        }
    }
    c.env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml");
    c
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../prefect-worker-kubernetes/tests/golden")
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run prefect-worker")
}

#[test]
fn preview_reproduces_every_golden_case() {
    let mut cases = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.json");
        std::fs::write(&input, serde_json::to_string(&case["input"]).unwrap()).unwrap();
        let out = run(bin().args(["preview", "--input"]).arg(&input));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Some(expected) = case["expected"].get("configuration") {
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(&got, expected, "{name}");
        } else {
            // The wording is checked by the golden test; here: a clean failure on stderr.
            assert!(case["expected_error"].is_string(), "{name}");
            assert!(!out.status.success(), "{name} should fail");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
            assert!(
                stderr.contains("Error"),
                "{name}: the error on stderr: {stderr}"
            );
        }
        cases += 1;
    }
    assert_eq!(cases, 46);
}

#[test]
fn preview_rejects_a_missing_or_invalid_file_clearly() {
    let out = run(bin().args(["preview", "--input", "/nonexistent/case.json"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--input: cannot read /nonexistent/case.json")
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let out = run(bin().args(["preview", "--input"]).arg(&bad));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid JSON"));
}

fn config(c: &mut Command) -> Value {
    let out = run(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn settings_precedence_is_flag_then_env_then_profile_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        "active = \"p\"\n[profiles.p]\nPREFECT_WORKER_PREFETCH_SECONDS = \"20\"\nPREFECT_WORKER_QUERY_SECONDS = \"7\"\nPREFECT_API_KEY = \"pnu_profile-secret\"\nPREFECT_WORKER_POOL = \"from-profile\"\n",
    )
    .unwrap();
    let base = || {
        let mut c = bin();
        c.env("PREFECT_PROFILES_PATH", &profiles).arg("config");
        c
    };
    // Default only (no profile file).
    let d = config(bin().args(["config", "--pool", "x"]));
    assert_eq!(d["prefetch_seconds"], 10);
    assert_eq!(d["query_seconds"], 10.0);
    assert_eq!(d["enable_cancellation"], true);
    assert_eq!(d["channel_enabled"], true);
    let off_channel = config(
        bin()
            .args(["config", "--pool", "x"])
            .env("PREFECT_WORKER_ENABLE_CANCELLATION", "false")
            .env("PREFECT_WORKER_CHANNEL_ENABLED", "false"),
    );
    assert_eq!(off_channel["enable_cancellation"], false);
    assert_eq!(off_channel["channel_enabled"], false);
    assert_eq!(d["events_enabled"], true);
    assert_eq!(d["events_max_queue_size"], 5000);
    assert_eq!(d["replicate_pod_events"], true);
    let off = config(
        bin()
            .args(["config", "--pool", "x"])
            .env("PREFECT_WORKER_EVENTS_ENABLED", "false")
            .env("PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE", "100")
            .env(
                "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_REPLICATE_POD_EVENTS",
                "false",
            ),
    );
    assert_eq!(off["events_enabled"], false);
    assert_eq!(off["events_max_queue_size"], 100);
    assert_eq!(off["replicate_pod_events"], false);
    // Profile.
    let p = config(&mut base());
    assert_eq!(p["profile"], "p");
    assert_eq!(p["pool"], "from-profile");
    assert_eq!(p["prefetch_seconds"], 20);
    assert_eq!(p["query_seconds"], 7.0);
    assert_eq!(p["api_key"], "********", "secrets are redacted");
    // Environment over profile.
    let e = config(
        base()
            .env("PREFECT_WORKER_PREFETCH_SECONDS", "15")
            .env("PREFECT_WORKER_POOL", "from-env"),
    );
    assert_eq!(e["prefetch_seconds"], 15);
    assert_eq!(e["pool"], "from-env");
    assert_eq!(e["query_seconds"], 7.0, "unset in env: the profile's");
    // Flag over environment.
    let f = config(base().env("PREFECT_WORKER_PREFETCH_SECONDS", "15").args([
        "--prefetch-seconds",
        "12",
        "--pool",
        "from-flag",
    ]));
    assert_eq!(f["prefetch_seconds"], 12);
    assert_eq!(f["pool"], "from-flag");
    let all = String::from_utf8_lossy(&run(&mut base()).stdout).to_string();
    assert!(!all.contains("pnu_profile-secret"));
}

#[test]
fn bad_settings_name_the_setting_and_never_print_secrets() {
    let out = run(bin()
        .args(["start", "--pool", "p"])
        .env("PREFECT_WORKER_QUERY_SECONDS", "soon")
        .env("PREFECT_API_KEY", "pnu_secret-value"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PREFECT_WORKER_QUERY_SECONDS"), "{stderr}");
    assert!(!stderr.contains("pnu_secret-value"), "{stderr}");
    let out = run(bin().args(["start", "--pool", "p"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PREFECT_API_URL"),
        "API URL required"
    );
    let out = run(bin()
        .args(["start"])
        .env("PREFECT_API_URL", "http://127.0.0.1:9/api"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pool"),
        "pool required"
    );
    let out = run(bin()
        .args(["start", "--pool", "p", "--name", "a/b"])
        .env("PREFECT_API_URL", "http://127.0.0.1:9/api"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot contain '/' or '%'"));
}

#[test]
fn version_names_the_prefect_and_prefect_kubernetes_versions_it_stands_in_for() {
    for flag in ["--version", "-V"] {
        let out = run(bin().arg(flag));
        assert!(out.status.success(), "{flag}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "prefect-worker {} (compatible with prefect 3.9.1 and prefect-kubernetes 0.8.0)\n",
                env!("CARGO_PKG_VERSION")
            ),
            "{flag}"
        );
    }
}

/// Even at `RUST_LOG=trace` the worker channel's auth message (it carries the auth string)
/// reaches no log line: the websocket library's trace logs, which print whole frames, are
/// capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_show_the_channel_auth_message() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    const SECRET: &str = "cli-user:cli-secret-auth-42";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got_auth = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = got_auth.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // REST requests get FastAPI's 404 at once.
                let mut head = [0u8; 4096];
                let mut n = 0;
                // Peek until the request's headers are complete.
                while !head[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < head.len() {
                    match tcp.peek(&mut head).await {
                        Ok(m) if m > n => n = m,
                        Ok(0) | Err(_) => return,
                        Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    }
                }
                if !String::from_utf8_lossy(&head[..n])
                    .to_ascii_lowercase()
                    .contains("upgrade: websocket")
                {
                    use tokio::io::AsyncWriteExt as _;
                    let mut tcp = tcp;
                    let _ = tcp
                        .write_all(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 22\r\n\r\n{\"detail\":\"Not Found\"}")
                        .await;
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(
                    tcp,
                    |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", "prefect".parse().unwrap());
                        Ok(resp)
                    },
                )
                .await
                else {
                    return;
                };
                if let Some(Ok(Message::Text(t))) = ws.next().await
                    && t.contains(SECRET)
                {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let close = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "authentication_failed".into(),
                };
                let _ = ws.send(Message::Close(Some(close))).await;
                let _ = ws.next().await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = bin()
        .args(["start", "--pool", "p", "--type", "kubernetes"])
        .env("RUST_LOG", "trace")
        .env("PREFECT_API_URL", format!("http://127.0.0.1:{port}/api"))
        .env("PREFECT_API_AUTH_STRING", SECRET)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("worker channel disabled") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the channel never gave up: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        got_auth.load(std::sync::atomic::Ordering::SeqCst),
        "the auth message was sent"
    );
    assert!(text.contains("authentication_failed"), "{text}");
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(SECRET), "the auth string was logged");
    assert!(
        !text.contains("cli-secret-auth"),
        "part of the auth string was logged"
    );
    assert!(!text.contains(&hex), "the auth string was logged in hex");
}
