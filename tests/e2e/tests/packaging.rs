//! The three published crates package for crates.io: `cargo package` of
//! prefect-worker-core, prefect-worker-kubernetes and prefect-worker-bin together (each
//! depends on the one before), with the metadata crates.io and docs.rs show, every
//! dependency resolvable from the registry, and no workspace-only test crate left in a
//! manifest.
//!
//! `--no-verify`: packaging checks the manifests, the dependencies and the file lists in
//! about two seconds; verification would also compile the three crates from their
//! packages, as standalone crates with their own features and profile, which took over
//! 20 minutes on the loaded 2-core development machine. What verification adds (that the
//! packaged sources compile) the suite already proves on the same sources, except for a
//! file missing from a package, which the file checks below catch.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use prefect_test_harness::repo_root;

const CRATES: [&str; 3] = [
    "prefect-worker-core",
    "prefect-worker-kubernetes",
    "prefect-worker-bin",
];

/// Test and simulation crates of this workspace, never published.
const UNPUBLISHED: [&str; 3] = ["prefect-test-harness", "kubesim", "e2e"];

fn unpack(crate_file: &Path, into: &Path) -> Result<PathBuf> {
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(crate_file)
        .arg("-C")
        .arg(into)
        .status()?;
    ensure!(status.success(), "tar -xzf {}", crate_file.display());
    let stem = crate_file
        .file_stem()
        .context("crate file name")?
        .to_string_lossy()
        .into_owned();
    Ok(into.join(stem))
}

fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, base, out)?;
        } else {
            out.push(path.strip_prefix(base)?.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[test]
fn the_published_crates_package_with_their_metadata() -> Result<()> {
    let target = tempfile::tempdir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["package", "--offline", "--no-verify", "--allow-dirty"])
        // Its own target dir: the cargo running this test may hold the workspace's.
        .env("CARGO_TARGET_DIR", target.path())
        .current_dir(repo_root());
    for c in CRATES {
        command.args(["-p", c]);
    }
    let out = command.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "cargo package failed:\n{stderr}");
    // Missing metadata, or a file that cannot be packaged, is a warning.
    ensure!(
        !stderr.contains("warning"),
        "cargo package warned:\n{stderr}"
    );

    let unpacked = tempfile::tempdir()?;
    let version = env!("CARGO_PKG_VERSION");
    for c in CRATES {
        let dir = unpack(
            &target.path().join(format!("package/{c}-{version}.crate")),
            unpacked.path(),
        )?;
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))?.parse()?;
        let package = manifest["package"].as_table().context("[package]")?;
        for field in [
            "description",
            "license",
            "readme",
            "repository",
            "documentation",
            "keywords",
            "categories",
            "rust-version",
        ] {
            ensure!(package.contains_key(field), "{c}: no `{field}`");
        }
        // The README is the crate's documentation (`#![doc = include_str!(...)]`).
        let readme = package["readme"].as_str().context("readme")?;
        ensure!(dir.join(readme).is_file(), "{c}: {readme} not packaged");
        let text = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        for name in UNPUBLISHED {
            ensure!(
                !text.contains(&format!("[dev-dependencies.{name}]"))
                    && !text.contains(&format!("[dependencies.{name}]")),
                "{c} depends on the unpublished {name}"
            );
        }
        // Every file the sources embed is in the package.
        let mut files = Vec::new();
        files_under(&dir, &dir, &mut files)?;
        for source in files.iter().filter(|f| f.ends_with(".rs")) {
            let code = std::fs::read_to_string(dir.join(source))?;
            for piece in code.split("include_str!(").skip(1) {
                let Some(arg) = piece.split(')').next() else {
                    continue;
                };
                let arg = arg.trim().trim_matches('"');
                if arg.contains('"') || arg.starts_with("concat!") {
                    continue;
                }
                let embedded = dir.join(source).parent().context("source dir")?.join(arg);
                ensure!(
                    embedded.is_file(),
                    "{c}: {source} embeds {arg}, which is not in the package"
                );
            }
        }
        // Tests that need the unpublished crates are left out.
        for file in files
            .iter()
            .filter(|f| f.starts_with("tests/") && f.ends_with(".rs"))
        {
            let code = std::fs::read_to_string(dir.join(file))?;
            for name in UNPUBLISHED {
                ensure!(
                    !code.contains(&format!("{}::", name.replace('-', "_"))),
                    "{c}: packaged {file} uses the unpublished {name}"
                );
            }
        }
    }
    Ok(())
}
