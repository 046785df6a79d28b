//! `meta.k8s.io/v1` Table answers for kubectl's `get` (what the real
//! server's printers produce, for the columns kubectl shows by default).

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::object::Object;

/// Whether the client asked for a Table (`Accept: ...;as=Table;...`).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Go's `duration.HumanDuration`, which the AGE column uses.
fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        28_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn age(o: &Object) -> String {
    let now = crate::clock::now();
    o.meta().creation_timestamp.as_ref().map_or_else(
        || "<unknown>".into(),
        |t| human(now.duration_since(t.0).as_secs()),
    )
}

fn col(name: &str, ty: &str, priority: i32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn pod_cells(o: &Object) -> Vec<Value> {
    let Object::Pod(p) = o else { return vec![] };
    let st = p.status.clone().unwrap_or_default();
    let cs = st.container_statuses.clone().unwrap_or_default();
    let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = cs.iter().filter(|c| c.ready).count();
    let restarts: i32 = cs.iter().map(|c| c.restart_count).sum();
    let mut status = st
        .reason
        .clone()
        .unwrap_or_else(|| st.phase.clone().unwrap_or_else(|| "Pending".into()));
    for c in &cs {
        if let Some(s) = &c.state {
            if let Some(w) = s.waiting.as_ref().and_then(|w| w.reason.clone()) {
                status = w;
            } else if let Some(t) = s.terminated.as_ref() {
                status = t
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
            }
        }
    }
    if p.metadata.deletion_timestamp.is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(o.name()),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(o)),
        json!(st.pod_ip.unwrap_or_else(|| "<none>".into())),
        json!(
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "<none>".into())
        ),
    ]
}

fn job_cells(o: &Object) -> Vec<Value> {
    let Object::Job(j) = o else { return vec![] };
    let st = j.status.clone().unwrap_or_default();
    let has = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let status = if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let completions = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    let duration = match (&st.start_time, &st.completion_time) {
        (Some(s), Some(c)) => human(c.0.duration_since(s.0).as_secs()),
        (Some(s), None) => human(crate::clock::now().duration_since(s.0).as_secs()),
        _ => String::new(),
    };
    vec![
        json!(o.name()),
        json!(status),
        json!(format!("{}/{completions}", st.succeeded.unwrap_or(0))),
        json!(duration),
        json!(age(o)),
    ]
}

fn event_cells(o: &Object) -> Vec<Value> {
    let Object::Event(e) = o else { return vec![] };
    let last = e.last_timestamp.as_ref().map_or_else(
        || age(o),
        |t| human(crate::clock::now().duration_since(t.0).as_secs()),
    );
    let io = &e.involved_object;
    vec![
        json!(last),
        json!(e.type_.clone().unwrap_or_default()),
        json!(e.reason.clone().unwrap_or_default()),
        json!(format!(
            "{}/{}",
            io.kind.clone().unwrap_or_default().to_lowercase(),
            io.name.clone().unwrap_or_default()
        )),
        json!(e.message.clone().unwrap_or_default()),
    ]
}

/// Renders one object's cells.
type CellsFn = fn(&Object) -> Vec<Value>;

/// Render `items` as a Table.
pub fn render(
    kind: Kind,
    items: &[std::sync::Arc<Object>],
    resource_version: u64,
    continue_token: Option<String>,
) -> Value {
    let (columns, cells): (Vec<Value>, CellsFn) = match kind {
        Kind::Pod => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "integer", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
            ],
            pod_cells,
        ),
        Kind::Job => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
            ],
            job_cells,
        ),
        Kind::Event => (
            vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Message", "string", 0),
            ],
            event_cells,
        ),
        Kind::Namespace => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            |o| {
                vec![
                    json!(o.name()),
                    json!(o.phase().unwrap_or("Active")),
                    json!(age(o)),
                ]
            },
        ),
        Kind::Secret => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "string", 0),
                col("Age", "string", 0),
            ],
            |o| {
                let Object::Secret(s) = o else { return vec![] };
                vec![
                    json!(o.name()),
                    json!(s.type_.clone().unwrap_or_default()),
                    json!(s.data.as_ref().map_or(0, |d| d.len())),
                    json!(age(o)),
                ]
            },
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": serde_json::to_value(o.meta()).unwrap_or_default()
                }
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}
