//! The binary's own log output: plain text on a pipe (what `kubectl logs` and log
//! collectors read), colour only on a terminal and never with `NO_COLOR`, and one JSON
//! object per line with `--log-format json`.

// Fixtures: a binary that cannot run is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

const ESC: char = '\u{1b}';

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prefect-worker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PREFECT_") || k == "NO_COLOR" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml");
    c
}

/// `start` without PREFECT_API_URL: one ERROR line, then exit 1.
fn failing_start(c: &mut Command) -> Output {
    c.args(["start", "--pool", "p"]).output().unwrap()
}

#[test]
fn a_pipe_gets_plain_text() {
    let out = failing_start(&mut bin());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR") && stderr.contains("PREFECT_API_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains(ESC), "escape codes on a pipe: {stderr:?}");
}

#[test]
fn python_level_names_keep_the_errors() {
    // Prefect's names: WARNING and CRITICAL are not tracing's words.
    for level in ["WARNING", "CRITICAL", "ERROR"] {
        let out = failing_start(bin().env("PREFECT_LOGGING_LEVEL", level));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("PREFECT_API_URL"), "{level}: {stderr:?}");
    }
}

/// Runs the command under `script`, which gives it a terminal (util-linux, as in CI).
fn on_a_terminal(no_color: Option<&str>) -> Option<String> {
    let exe = env!("CARGO_BIN_EXE_prefect-worker");
    let mut c = Command::new("script");
    c.args(["-qec", &format!("{exe} start --pool p"), "/dev/null"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("PREFECT_") || k == "NO_COLOR" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let Some(coloured) = on_a_terminal(None) else {
        // No `script` (util-linux) here: nothing to give the binary a terminal with.
        return;
    };
    assert!(coloured.contains("PREFECT_API_URL"), "{coloured}");
    assert!(
        coloured.contains(ESC),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = on_a_terminal(Some("1")).unwrap();
    assert!(plain.contains("PREFECT_API_URL"), "{plain}");
    assert!(!plain.contains(ESC), "NO_COLOR=1: {plain:?}");
    let empty = on_a_terminal(Some("")).unwrap();
    assert!(
        empty.contains(ESC),
        "NO_COLOR set but empty does not count (no-color.org)"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    for cmd in [
        bin().args(["--log-format", "json"]),
        bin().env("PREFECT_WORKER_LOG_FORMAT", "json"),
    ] {
        let out = failing_start(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let l = &lines[0];
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["timestamp", "level", "target", "message"], "{l}");
        assert_eq!(l["level"], "ERROR");
        assert!(l["message"].as_str().unwrap().contains("PREFECT_API_URL"));
    }
}
