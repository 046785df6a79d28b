//! The core crate's layering, checked: each module's code names only the modules below it
//! (`docs/architecture.md`), so the `Worker` contract never depends on the runner that
//! drives it and the client never depends on what is built on it. Comments may mention
//! anything; `use` and paths in code may not.

// Fixtures: unreadable cases or a reference that cannot run are failed tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module and the modules its code may name (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    ("slug", &[]),
    ("templating", &[]),
    ("settings", &[]),
    ("client", &[]),
    ("events", &["client", "settings", "slug"]),
    ("job_config", &["client", "settings", "templating", "slug"]),
    (
        "worker",
        &[
            "client",
            "events",
            "job_config",
            "settings",
            "templating",
            "slug",
        ],
    ),
    (
        "runner",
        &[
            "client",
            "events",
            "job_config",
            "settings",
            "templating",
            "slug",
            "worker",
        ],
    ),
];

fn source_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let p = entry.expect("directory entry").path();
        if p.is_dir() {
            files.extend(source_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    files
}

/// The `crate::<module>` names in the code (not the comments) of `text`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, allowed) in ALLOWED {
        let dir = src.join(module);
        let path = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{module}.rs"))
        };
        for file in source_files(&path) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for named in named_modules(&text) {
                let is_module = ALLOWED.iter().any(|(m, _)| *m == named);
                if is_module && named != *module && !allowed.contains(&named.as_str()) {
                    violations.push(format!("{} names crate::{named}", file.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "arrows back up the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_code_and_ignores_comments() {
    let found = named_modules(
        "use crate::runner::RunContext; // crate::client in a comment\n/// [`crate::worker::Worker`]",
    );
    assert_eq!(found, BTreeSet::from(["runner".to_owned()]));
}
