//! The HTTP(S) API server: accept loop, TLS, and the per-request pipeline
//! (pause → latency → auth → injected errors → routing), plus the request log.

mod admin;
mod discovery;
pub(crate) mod handlers;
mod pod_log;
mod response;
pub(crate) mod route;
mod table;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::observe::RequestRecord;
use route::Route;

/// Per-server settings the pipeline needs.
#[derive(Debug)]
pub(crate) struct ServerCtx {
    pub cluster: Arc<Cluster>,
    pub token: Option<String>,
    pub address: String,
}

/// Run the accept loop until the cluster shuts down.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Arc<ServerCtx>) {
    let shutdown = ctx.cluster.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // Watches stream small events; Nagle would delay them by 40ms.
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let shutdown = ctx.cluster.shutdown.clone();
            let conn = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => serve_connection(TokioIo::new(stream), ctx, peer).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    },
                    None => serve_connection(TokioIo::new(tcp), ctx, peer).await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = conn => {}
            }
        });
    }
}

async fn serve_connection<I>(io: I, ctx: Arc<ServerCtx>, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn handle(ctx: Arc<ServerCtx>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return admin::handle(&ctx.cluster, &method, &path, &query, &body);
    }
    let resp = api(&ctx, req, &method, &path, &query).await;
    tracing::debug!(%method, %path, %query, status = resp.status().as_u16(), "request");
    ctx.cluster.observer.record(RequestRecord {
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
    });
    resp
}

fn authorized(ctx: &ServerCtx, req: &Request<Incoming>) -> bool {
    let Some(token) = &ctx.token else { return true };
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

/// The injected-error decision for one request, if any.
fn injected_error(cluster: &Cluster) -> Option<ApiError> {
    let f = cluster.faults();
    if f.error_rate_500 <= 0.0 && f.error_rate_503 <= 0.0 && f.throttle_rate <= 0.0 {
        return None;
    }
    let r: f64 = rand::rng().random();
    if r < f.error_rate_500 {
        Some(ApiError::internal("kubesim: injected internal error"))
    } else if r < f.error_rate_500 + f.error_rate_503 {
        Some(ApiError::unavailable(
            "kubesim: injected service unavailable",
        ))
    } else if r < f.error_rate_500 + f.error_rate_503 + f.throttle_rate {
        Some(ApiError::too_many_requests(f.retry_after_seconds.max(1)))
    } else {
        None
    }
}

async fn api(
    ctx: &ServerCtx,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    query: &str,
) -> Response<Body> {
    let cluster = &ctx.cluster;
    cluster.wait_unpaused().await;
    let latency = cluster.faults().latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !authorized(ctx, &req) {
        return response::error(&ApiError::unauthorized());
    }
    if let Some(e) = injected_error(cluster) {
        return response::error(&e);
    }
    match route::parse(path) {
        Route::Version => response::json(200, &discovery::version()),
        Route::Health => response::text(200, "ok"),
        Route::Api => response::json(200, &discovery::api_versions(&ctx.address)),
        Route::CoreV1 => response::json(200, &discovery::resource_list("")),
        Route::Apis => response::json(200, &discovery::api_groups()),
        Route::BatchGroup => response::json(200, &discovery::batch_group_doc()),
        Route::BatchV1 => response::json(200, &discovery::resource_list("batch")),
        Route::OpenApiRoot => response::json(200, &discovery::openapi_v3_root()),
        Route::OpenApiGroup(g) => response::json(200, &discovery::openapi_v3_group(g)),
        Route::NotFound => response::error(&ApiError::path_not_found()),
        Route::Resource {
            kind,
            namespace,
            name,
            subresource,
        } => {
            let content_type = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return response::error(&ApiError::bad_request(format!("reading body: {e}")));
                }
            };
            handlers::handle(
                cluster,
                handlers::ResourceRequest {
                    method: method.clone(),
                    kind,
                    namespace,
                    name,
                    subresource,
                    query: handlers::parse_query(query),
                    content_type,
                    accept,
                    body,
                },
            )
            .await
        }
    }
}
