//! `/_sim/...`: the admin endpoint for fault knobs and observation. It is
//! never subject to auth, faults or pause (so a paused API can be resumed),
//! and its requests are not written to the request log.
//!
//! | method | path | effect |
//! |---|---|---|
//! | GET | `/_sim/faults` | current [`FaultConfig`] (its `rbac` holds the RBAC rules, if any) |
//! | PUT | `/_sim/faults` | replace it (JSON body, camelCase fields) |
//! | PATCH | `/_sim/faults` | merge-patch it |
//! | POST | `/_sim/pause`, `/_sim/resume` | hold / release API requests |
//! | POST | `/_sim/force-gone?count=N` | next N watches get 410 Gone |
//! | PUT/DELETE | `/_sim/quota/{ns}` | pod creation in ns fails with `exceeded quota` / stops failing |
//! | PUT/DELETE | `/_sim/forbidden/{ns}` | ns answers 403 / stops |
//! | GET/DELETE | `/_sim/requests` | request log / clear it |
//! | GET | `/_sim/counters` | watch counters |

use std::sync::Arc;

use axum::body::{Body, Bytes};
use http::{Method, Response};

use crate::cluster::Cluster;
use crate::faults::FaultConfig;
use crate::patch;

use super::handlers::parse_query;
use super::response;

/// Handle an admin request.
pub fn handle(
    cluster: &Arc<Cluster>,
    method: &Method,
    path: &str,
    query: &str,
    body: &Bytes,
) -> Response<Body> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').skip(1).collect();
    let ok = || response::json(200, &serde_json::json!({"ok": true}));
    let faults_json = |c: &Cluster| serde_json::to_value(c.faults()).unwrap_or_default();
    match (method, segs.as_slice()) {
        (&Method::GET, ["faults"]) => response::json(200, &faults_json(cluster)),
        (&Method::PUT | &Method::POST, ["faults"]) => {
            match serde_json::from_slice::<FaultConfig>(body) {
                Ok(cfg) => {
                    cluster.update_faults(|f| *f = cfg);
                    response::json(200, &faults_json(cluster))
                }
                Err(e) => response::text(400, format!("invalid fault config: {e}\n")),
            }
        }
        (&Method::PATCH, ["faults"]) => {
            let Ok(p) = serde_json::from_slice::<serde_json::Value>(body) else {
                return response::text(400, "body must be JSON\n");
            };
            let mut cur = faults_json(cluster);
            patch::merge(&mut cur, &p);
            match serde_json::from_value::<FaultConfig>(cur) {
                Ok(cfg) => {
                    cluster.update_faults(|f| *f = cfg);
                    response::json(200, &faults_json(cluster))
                }
                Err(e) => response::text(400, format!("invalid fault config: {e}\n")),
            }
        }
        (&Method::POST, ["pause"]) => {
            cluster.update_faults(|f| f.paused = true);
            ok()
        }
        (&Method::POST, ["resume"]) => {
            cluster.update_faults(|f| f.paused = false);
            ok()
        }
        (&Method::POST, ["force-gone"]) => {
            let n: u32 = parse_query(query)
                .get("count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            cluster.update_faults(|f| f.force_gone_watches += n);
            ok()
        }
        (&Method::PUT | &Method::POST, ["quota", ns]) => {
            cluster.with_store(|s| s.set_quota_exceeded(ns, true));
            ok()
        }
        (&Method::DELETE, ["quota", ns]) => {
            cluster.with_store(|s| s.set_quota_exceeded(ns, false));
            ok()
        }
        (&Method::PUT | &Method::POST, ["forbidden", ns]) => {
            cluster.update_faults(|f| {
                f.forbidden_namespaces.insert((*ns).to_string());
            });
            ok()
        }
        (&Method::DELETE, ["forbidden", ns]) => {
            cluster.update_faults(|f| {
                f.forbidden_namespaces.remove(*ns);
            });
            ok()
        }
        (&Method::GET, ["requests"]) => response::json(
            200,
            &serde_json::to_value(cluster.observer.requests()).unwrap_or_default(),
        ),
        (&Method::DELETE, ["requests"]) => {
            cluster.observer.clear_requests();
            ok()
        }
        (&Method::GET, ["counters"]) => response::json(
            200,
            &serde_json::to_value(cluster.observer.counters()).unwrap_or_default(),
        ),
        _ => response::text(404, "unknown /_sim endpoint\n"),
    }
}
