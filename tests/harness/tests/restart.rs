//! Server control for fault tests: outage and restart keep port and data;
//! stop and the watchdog leave nothing running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prefect_test_harness::{Backend, PrefectApi, PrefectServer, ServerOptions, poll, script_path};

#[tokio::test]
async fn outage_then_restart_keeps_port_and_data() -> anyhow::Result<()> {
    let server = PrefectServer::start_with(
        ServerOptions::new(Backend::Sqlite)
            .env("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false"),
    )?;
    let api = server.api();
    let flow = api.create_flow("survivor").await?;
    let url = server.api_url().to_owned();

    let started = Instant::now();
    let outage = tokio::spawn(server.stop_for_async(Duration::from_secs(3)));
    // Down while the outage lasts...
    poll("server down", Duration::from_secs(30), || async {
        Ok((
            api.get("/health").await.is_err().then_some(()),
            "still up".into(),
        ))
    })
    .await?;
    // ...and back afterwards, with the same URL and data.
    outage.await??;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(server.api_url(), url);
    let api = server.api();
    assert!(api.healthy().await);
    assert_eq!(
        api.get(&format!("/flows/{flow}")).await?["name"],
        "survivor"
    );

    server.restart()?;
    assert_eq!(
        api.get(&format!("/flows/{flow}")).await?["name"],
        "survivor"
    );

    let state_dir = server.state_dir().to_owned();
    let home = server.home().to_owned();
    server.stop()?;
    server.stop()?; // idempotent
    assert!(!api.healthy().await);
    assert!(!state_dir.exists());
    assert!(!home.exists());
    assert!(server.resume().is_err());
    Ok(())
}

/// What keeps `cargo test` from leaving servers behind when a test process
/// dies without running destructors: the script's watchdog.
#[tokio::test]
async fn watchdog_stops_server_when_owner_dies() -> anyhow::Result<()> {
    prefect_test_harness::provision(Backend::Sqlite)?;
    let mut owner = Command::new("sleep").arg("600").spawn()?;
    let state = tempfile::tempdir()?;
    let out = Command::new("bash")
        .arg(script_path())
        .arg("start")
        .arg("--state-dir")
        .arg(state.path())
        .arg("--watch-pid")
        .arg(owner.id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    assert!(out.status.success());
    let api = PrefectApi::new(String::from_utf8(out.stdout)?.trim());
    assert!(api.healthy().await);

    owner.kill()?;
    owner.wait()?;
    let state_file = state.path().join("server.env");
    poll("watchdog stop", Duration::from_secs(60), || async {
        let gone = !api.healthy().await && !state_file.exists();
        Ok((gone.then_some(()), "server still up".into()))
    })
    .await
}
