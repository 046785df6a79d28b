//! `GET pods/{name}/log`: `container`, `follow`, `tailLines`, `timestamps`,
//! `previous`, `sinceSeconds`, `limitBytes`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use http::{HeaderValue, Response, header};
use k8s_openapi::jiff::Timestamp;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::logs::{ContainerLog, LogLine};
use crate::object::Object;

use super::handlers::flag;

fn format_line(line: &LogLine, timestamps: bool) -> String {
    if timestamps {
        // RFC 3339 with nanoseconds, as the kubelet prefixes lines.
        format!("{:.9} {}", line.time, line.text)
    } else {
        line.text.clone()
    }
}

/// Serve a pod's log.
pub fn serve(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let pod = cluster
        .with_store(|s| s.get(Kind::Pod, namespace, name))
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let Object::Pod(p) = &*pod else {
        return Err(ApiError::not_found(Kind::Pod, name));
    };
    let names: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let previous = flag(q, "previous");
    let Some(log) = cluster.logs.get(pod.uid(), &container, previous) else {
        if previous {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        let reason = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .unwrap_or_else(|| "ContainerCreating".into());
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    };
    let timestamps = flag(q, "timestamps");
    let since: Option<Timestamp> = q
        .get("sinceSeconds")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| {
            crate::clock::now()
                .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .ok()
        });
    let limit_bytes: Option<usize> = q.get("limitBytes").and_then(|l| l.parse().ok());
    let start = match q.get("tailLines").and_then(|t| t.parse::<u64>().ok()) {
        Some(n) => log.tail_start(n),
        None => 0,
    };
    let follow = flag(q, "follow") && !previous;
    let render = move |lines: Vec<LogLine>| -> String {
        lines
            .into_iter()
            .filter(|l| since.is_none_or(|s| l.time >= s))
            .map(|l| format_line(&l, timestamps))
            .collect()
    };
    let mut resp = if follow {
        follow_body(cluster.clone(), log, start, render, limit_bytes)
    } else {
        let mut text = render(log.read_from(start).0);
        if let Some(l) = limit_bytes {
            // Cut on a char boundary at or below the limit.
            let mut cut = l.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Response::new(Body::from(text))
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn follow_body(
    cluster: Arc<Cluster>,
    log: Arc<ContainerLog>,
    start: u64,
    render: impl Fn(Vec<LogLine>) -> String + Send + 'static,
    limit_bytes: Option<usize>,
) -> Response<Body> {
    let rx = log.subscribe();
    let state = (
        cluster,
        log,
        rx,
        start,
        render,
        limit_bytes.unwrap_or(usize::MAX),
        false,
    );
    let stream = futures::stream::unfold(state, |mut st| async move {
        let (cluster, log, rx, pos, render, budget, finished) = &mut st;
        if *finished || *budget == 0 {
            return None;
        }
        loop {
            let (lines, next) = log.read_from(*pos);
            *pos = next;
            if !lines.is_empty() {
                let mut text = render(lines);
                if text.len() > *budget {
                    text.truncate(*budget);
                }
                *budget -= text.len();
                return Some((Ok::<_, Infallible>(Bytes::from(text)), st));
            }
            if log.is_closed() {
                // Drain once more: lines may have landed between read and close.
                let (rest, _) = log.read_from(*pos);
                if rest.is_empty() {
                    return None;
                }
                *finished = true;
                let text = render(rest);
                return Some((Ok(Bytes::from(text)), st));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                () = cluster.shutdown.cancelled() => return None,
            }
        }
    });
    Response::new(Body::from_stream(stream))
}
