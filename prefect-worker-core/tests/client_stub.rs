//! The REST client against a scripted stub server: headers, CSRF, retries, error mapping,
//! secrets, and the exact request shapes of API_CALLS.md §A.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_stub_support;

use std::time::{Duration, Instant};

use chrono::Utc;
use client_stub_support::{Reply, Stub};
use prefect_worker_core::client::models::{JsonMap, LogCreate, StateCreate, WorkPoolCreate};
use prefect_worker_core::client::{ClientError, ClientOptions, PrefectClient, TransportKind};
use prefect_worker_core::job_config::{LookupError, TemplateLookups};
use serde_json::{Value, json};
use uuid::Uuid;

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn work_pool(name: &str) -> Value {
    json!({"id": Uuid::new_v4(), "name": name, "type": "kubernetes", "base_job_template": {}, "is_paused": false})
}

fn flow_run(id: Uuid) -> Value {
    json!({"id": id, "name": "scrupulous-muskrat", "flow_id": Uuid::new_v4(), "state": {"type": "SCHEDULED", "name": "Scheduled"}})
}

// ---------------------------------------------------------------- headers and auth

#[tokio::test]
async fn every_request_carries_identity_auth_and_attribution_headers() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(200, work_pool("p"))],
    );
    stub.on(
        "POST",
        "/api/work_pools/p/workers/heartbeat",
        vec![Reply::empty(204)],
    );
    let client = PrefectClient::new(
        stub.options()
            .with_api_key("pnu_key")
            .with_auth_string("user:pass")
            .with_custom_header("X-Team", "data"),
    )
    .unwrap();
    client.set_worker_name(Some(" \tmy-worker \t".into()));
    client.read_work_pool("p").await.unwrap();
    client
        .send_worker_heartbeat("p", "my-worker", 30)
        .await
        .unwrap();
    client.set_worker_name(None);
    client.read_work_pool("p").await.unwrap();

    let reqs = stub.requests_to("GET", "/api/work_pools/p");
    let get = &reqs[0];
    assert_eq!(get.header("user-agent"), Some("prefect/3.9.1 (API 0.8.4)"));
    assert_eq!(get.header("x-prefect-api-version"), Some("0.8.4"));
    assert_eq!(
        get.header("authorization"),
        Some("Basic dXNlcjpwYXNz"),
        "basic auth wins over the key"
    );
    assert_eq!(get.header("x-team"), Some("data"));
    assert_eq!(get.header("x-prefect-worker-name"), Some("my-worker"));
    assert!(
        get.header("content-type").is_none(),
        "no body, no content type"
    );
    assert!(
        reqs[1].header("x-prefect-worker-name").is_none(),
        "cleared name sends no header"
    );

    let post = &stub.requests_to("POST", "/api/work_pools/p/workers/heartbeat")[0];
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(
        post.json(),
        data("worker_heartbeat.request.json")
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("name".into(), json!("my-worker"));
                Value::Object(o)
            })
            .unwrap()
    );
}

#[tokio::test]
async fn bearer_key_when_no_auth_string_and_no_header_without_either() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(200, work_pool("p"))],
    );
    PrefectClient::new(stub.options().with_api_key("pnu_key"))
        .unwrap()
        .read_work_pool("p")
        .await
        .unwrap();
    stub.client().read_work_pool("p").await.unwrap();
    let reqs = stub.requests_to("GET", "/api/work_pools/p");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer pnu_key"));
    assert!(reqs[1].header("authorization").is_none());
}

#[tokio::test]
async fn custom_headers_cannot_override_user_agent_or_csrf() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/csrf-token",
        vec![Reply::json(
            200,
            json!({"token": "real", "expiration": "2999-01-01T00:00:00Z"}),
        )],
    );
    stub.on(
        "POST",
        "/api/flow_runs/filter",
        vec![
            Reply::json(403, json!({"detail": "Missing CSRF token."})),
            Reply::json(200, json!([])),
        ],
    );
    let client = PrefectClient::new(
        stub.options()
            .with_custom_header("User-Agent", "curl/8")
            .with_custom_header("Prefect-Csrf-Token", "forged")
            .with_custom_header("X-PREFECT-API-VERSION", "0.8.4"),
    )
    .unwrap();
    client.filter_flow_runs(&json!({})).await.unwrap();
    let posts = stub.requests_to("POST", "/api/flow_runs/filter");
    assert_eq!(
        posts[0].header("user-agent"),
        Some("prefect/3.9.1 (API 0.8.4)")
    );
    assert!(
        posts[0].header("prefect-csrf-token").is_none(),
        "forged is never sent"
    );
    assert_eq!(posts[1].header("prefect-csrf-token"), Some("real"));
}

#[tokio::test]
async fn path_segments_are_url_encoded() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/my%20pool",
        vec![Reply::json(200, work_pool("my pool"))],
    );
    let pool = stub.client().read_work_pool("my pool").await.unwrap();
    assert_eq!(pool.name, "my pool");
}

// ---------------------------------------------------------------- CSRF

#[tokio::test]
async fn a_server_without_csrf_is_never_asked_for_a_token() {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        "/api/work_pools/p/workers/heartbeat",
        vec![Reply::empty(204)],
    );
    let client = stub.client();
    client.read_work_pool("p").await.ok();
    client.send_worker_heartbeat("p", "w", 30).await.unwrap();
    client.send_worker_heartbeat("p", "w", 30).await.unwrap();
    assert!(
        stub.requests_to("GET", "/api/csrf-token").is_empty(),
        "no token until the server asks for one: the first change request goes out at once"
    );
    for p in stub.requests_to("POST", "/api/work_pools/p/workers/heartbeat") {
        assert!(
            p.header("prefect-csrf-token").is_none() && p.header("prefect-csrf-client").is_none()
        );
    }
}

#[tokio::test]
async fn csrf_disabled_on_the_server_after_all_turns_csrf_off() {
    // A 403 asking for a token, then a token endpoint saying CSRF is disabled (422) or
    // missing (404, an old server): the refusal stands and no token is asked for again.
    for (status, body) in [
        (422, json!({"detail": "CSRF protection is disabled."})),
        (404, json!({"detail": "Not Found"})),
    ] {
        let stub = Stub::start().await;
        stub.on("GET", "/api/csrf-token", vec![Reply::json(status, body)]);
        stub.on(
            "POST",
            "/api/logs/",
            vec![Reply::json(403, json!({"detail": "Missing CSRF token."}))],
        );
        let client = stub.client();
        assert!(matches!(
            client.create_logs(&[]).await,
            Err(ClientError::Forbidden(_))
        ));
        assert!(client.create_logs(&[]).await.is_err());
        assert_eq!(
            stub.requests_to("GET", "/api/csrf-token").len(),
            1,
            "{status}"
        );
        assert_eq!(stub.requests_to("POST", "/api/logs/").len(), 3, "{status}");
    }
}

#[tokio::test]
async fn csrf_disabled_by_option_never_fetches() {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        "/api/logs/",
        vec![
            Reply::empty(201),
            Reply::json(403, json!({"detail": "Missing CSRF token."})),
        ],
    );
    let client = PrefectClient::new(stub.options().with_csrf_support(false)).unwrap();
    client.create_logs(&[]).await.unwrap();
    assert!(matches!(
        client.create_logs(&[]).await,
        Err(ClientError::Forbidden(_))
    ));
    assert!(stub.requests_to("GET", "/api/csrf-token").is_empty());
}

#[tokio::test]
async fn csrf_token_is_fetched_when_asked_for_sent_on_change_requests_and_refreshed_when_rejected()
{
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/csrf-token",
        vec![
            Reply::json(
                200,
                json!({"token": "t1", "expiration": "2999-01-01T00:00:00Z"}),
            ),
            Reply::json(
                200,
                json!({"token": "t2", "expiration": "2999-01-01T00:00:00Z"}),
            ),
        ],
    );
    stub.on(
        "PATCH",
        "/api/flow_runs/00000000-0000-0000-0000-000000000001",
        vec![
            Reply::json(403, json!({"detail": "Missing CSRF token."})),
            Reply::empty(204),
            Reply::json(
                403,
                json!({"detail": "Invalid CSRF token or client identifier."}),
            ),
            Reply::empty(204),
        ],
    );
    let client = stub.client();
    let id = Uuid::from_u128(1);
    let t = Instant::now();
    client.set_infrastructure_pid(id, "ns:job").await.unwrap();
    client.set_infrastructure_pid(id, "ns:job").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a token refusal is answered at once, without a retry back-off"
    );

    let fetches = stub.requests_to("GET", "/api/csrf-token");
    assert_eq!(
        fetches.len(),
        2,
        "one fetch when asked, one refresh after the rejection"
    );
    let client_id = fetches[0]
        .query
        .clone()
        .unwrap()
        .trim_start_matches("client=")
        .to_owned();
    assert!(Uuid::parse_str(&client_id).is_ok(), "{client_id}");
    let patches = stub.requests_to(
        "PATCH",
        "/api/flow_runs/00000000-0000-0000-0000-000000000001",
    );
    let tokens: Vec<_> = patches
        .iter()
        .map(|p| p.header("prefect-csrf-token").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(tokens, ["-", "t1", "t1", "t2"]);
    assert!(
        patches[1..]
            .iter()
            .all(|p| p.header("prefect-csrf-client") == Some(client_id.as_str()))
    );
    assert_eq!(patches[1].json(), json!({"infrastructure_pid": "ns:job"}));
}

#[tokio::test]
async fn expired_csrf_token_is_refetched() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/csrf-token",
        vec![Reply::json(
            200,
            json!({"token": "old", "expiration": "2000-01-01T00:00:00Z"}),
        )],
    );
    stub.on(
        "POST",
        "/api/logs/",
        vec![
            Reply::json(403, json!({"detail": "Missing CSRF token."})),
            Reply::empty(201),
        ],
    );
    let client = stub.client();
    client.create_logs(&[]).await.unwrap();
    client.create_logs(&[]).await.unwrap();
    assert_eq!(stub.requests_to("GET", "/api/csrf-token").len(), 2);
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn retries_503_then_succeeds() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![
            Reply::empty(503),
            Reply::empty(502),
            Reply::json(200, work_pool("p")),
        ],
    );
    stub.client().read_work_pool("p").await.unwrap();
    assert_eq!(stub.requests_to("GET", "/api/work_pools/p").len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![
            Reply::empty(429).header("Retry-After", "0.3"),
            Reply::json(200, work_pool("p")),
        ],
    );
    let started = Instant::now();
    stub.client().read_work_pool("p").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(stub.requests_to("GET", "/api/work_pools/p").len(), 2);
}

#[tokio::test]
async fn retries_run_out_after_max_retries() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(503, json!({"detail": "busy"}))],
    );
    let err = PrefectClient::new(stub.options().with_max_retries(2))
        .unwrap()
        .read_work_pool("p")
        .await
        .unwrap_err();
    assert_eq!(
        stub.requests_to("GET", "/api/work_pools/p").len(),
        3,
        "1 attempt + 2 retries"
    );
    assert!(matches!(err, ClientError::Server(_)) && err.is_transient());
    assert_eq!(
        err.to_string(),
        "server error: GET /work_pools/p returned 503 Service Unavailable: busy"
    );
}

#[tokio::test]
async fn status_500_is_not_retried_unless_configured() {
    let stub = Stub::start().await;
    stub.on("GET", "/api/work_pools/p", vec![Reply::empty(500)]);
    let err = stub.client().read_work_pool("p").await.unwrap_err();
    assert!(matches!(err, ClientError::Server(_)));
    assert_eq!(stub.requests_to("GET", "/api/work_pools/p").len(), 1);

    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::empty(500), Reply::json(200, work_pool("p"))],
    );
    PrefectClient::new(stub.options().with_retry_extra_codes([500]))
        .unwrap()
        .read_work_pool("p")
        .await
        .unwrap();
    assert_eq!(stub.requests_to("GET", "/api/work_pools/p").len(), 2);
}

#[tokio::test]
async fn maintenance_responses_do_not_count_as_attempts_and_are_recorded() {
    let stub = Stub::start().await;
    let maint = Reply::empty(503)
        .header("Prefect-Maintenance", "true")
        .header("Retry-After", "0");
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![
            maint.clone(),
            maint.clone(),
            maint.clone(),
            maint,
            Reply::json(200, work_pool("p")),
        ],
    );
    let client = PrefectClient::new(stub.options().with_max_retries(1)).unwrap();
    assert!(client.maintenance_until().is_none());
    client.read_work_pool("p").await.unwrap();
    assert_eq!(
        stub.requests_to("GET", "/api/work_pools/p").len(),
        5,
        "4 maintenance answers beyond max_retries=1"
    );
    assert!(client.maintenance_until().is_some());
}

#[tokio::test]
async fn connect_error_fails_fast_before_the_first_response() {
    // A port nobody listens on: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A back-off would sleep an hour: the bound below cannot be reached by a slow machine,
    // only by a retry.
    let client = PrefectClient::new(
        ClientOptions::new(format!("http://{addr}/api"))
            .with_retry_base_delay(Duration::from_secs(3600))
            .with_retry_jitter_factor(0.0),
    )
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(120), client.read_work_pool("p"))
        .await
        .expect("no back-off before the first success")
        .unwrap_err();
    match &err {
        ClientError::Transport(t) => assert_eq!(t.kind, TransportKind::Connect),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn connect_error_is_retried_after_a_first_success() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(200, work_pool("p"))],
    );
    // 50 ms base, no jitter, 2 retries: the retries sleep 100 ms + 200 ms.
    let client = PrefectClient::new(
        stub.options()
            .with_retry_base_delay(Duration::from_millis(50))
            .with_max_retries(2),
    )
    .unwrap();
    client.read_work_pool("p").await.unwrap();
    // Connections are pooled; a fresh client on a dead port cannot tell us anything, so
    // stop the stub and wait until its port refuses connections.
    stub.stop();
    let dead = PrefectClient::new(ClientOptions::new(stub.api_url()).with_max_retries(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while dead.read_work_pool("p").await.is_ok() {
        assert!(Instant::now() < deadline, "stub did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let err = client.read_work_pool("p").await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "retried with back-off: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- compression

#[tokio::test]
async fn responses_are_asked_for_compressed_as_httpx_does_and_decoded() {
    for encoding in ["gzip", "deflate"] {
        let stub = Stub::start().await;
        stub.compress(encoding);
        let id = Uuid::new_v4();
        // Long enough that a compressing server would compress it.
        let mut run = flow_run(id);
        run["tags"] = json!(vec!["a-tag-that-repeats"; 200]);
        stub.on(
            "GET",
            &format!("/api/flow_runs/{id}"),
            vec![Reply::json(200, run)],
        );
        stub.on(
            "GET",
            "/api/work_pools/missing",
            vec![Reply::json(404, json!({"detail": "Work pool not found."}))],
        );
        let c = stub.client();
        let read = c.read_flow_run(id).await.unwrap();
        assert_eq!(read.id, id, "{encoding}");
        assert_eq!(read.name, "scrupulous-muskrat");
        // Error bodies are decoded too: the detail reaches the error.
        let err = c.read_work_pool("missing").await.unwrap_err();
        assert!(err.is_not_found(), "{encoding}: {err:?}");
        assert!(
            err.to_string().contains("Work pool not found."),
            "{encoding}: {err}"
        );
        for r in stub.requests() {
            assert_eq!(
                r.header("accept-encoding"),
                Some("gzip, deflate"),
                "{}",
                r.path
            );
        }
    }
}

// ---------------------------------------------------------------- error mapping

#[tokio::test]
async fn not_found_is_mapped_on_the_listed_endpoints() {
    let stub = Stub::start().await; // every unscripted route answers 404
    let c = stub.client();
    let id = Uuid::new_v4();
    assert!(c.read_work_pool("p").await.unwrap_err().is_not_found());
    assert!(
        c.update_work_pool_base_job_template("p", &json!({}))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        c.get_scheduled_flow_runs("p", &[], Utc::now())
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(c.read_flow_run(id).await.unwrap_err().is_not_found());
    assert!(
        c.set_flow_run_state(id, &StateCreate::pending(), false)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(c.read_deployment(id).await.unwrap_err().is_not_found());
    assert!(c.read_block_document("b").await.unwrap_err().is_not_found());
    assert!(
        c.read_block_document_by_name("secret", "s")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(c.read_variable_by_name("v").await.unwrap(), None);

    let flow = c.read_flow(id).await.unwrap_err();
    assert!(
        matches!(&flow, ClientError::Status(e) if e.status == 404),
        "read_flow has no 404 mapping: {flow:?}"
    );
    assert!(!flow.is_transient());
    let heartbeat = c.send_worker_heartbeat("p", "w", 30).await.unwrap_err();
    assert!(matches!(heartbeat, ClientError::Status(_)));
}

#[tokio::test]
async fn conflict_on_create_is_already_exists_and_401_is_unauthorized() {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        "/api/work_pools/",
        vec![Reply::json(
            409,
            json!({"detail": "Work pool already exists."}),
        )],
    );
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(401, json!({"detail": "Unauthorized"}))],
    );
    stub.on(
        "POST",
        "/api/logs/",
        vec![Reply::json(403, json!({"detail": "Forbidden"}))],
    );
    let c = stub.client();
    let body = WorkPoolCreate {
        name: "p".into(),
        pool_type: "kubernetes".into(),
        base_job_template: None,
    };
    let err = c.create_work_pool(&body).await.unwrap_err();
    assert!(matches!(err, ClientError::AlreadyExists(_)), "{err:?}");
    assert!(err.to_string().contains("Work pool already exists."));
    assert_eq!(
        stub.requests_to("POST", "/api/work_pools/")[0].json(),
        data("create_work_pool.request.json")
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("name".into(), json!("p"));
                Value::Object(o)
            })
            .unwrap()
    );
    let err = c.read_work_pool("p").await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized(_)) && !err.is_transient());
    assert!(matches!(
        c.create_logs(&[]).await.unwrap_err(),
        ClientError::Forbidden(_)
    ));
}

#[tokio::test]
async fn undecodable_bodies_are_decode_errors() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::text(200, "<html>proxy</html>")],
    );
    let err = stub.client().read_work_pool("p").await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let key = "pnu_SuperSecretKey123";
    let auth = "admin:Hunter2Password";
    let stub = Stub::start().await;
    // A server (or proxy) that echoes the credentials back in its error detail.
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(
            401,
            json!({"detail": format!("bad credentials {key} {auth} YWRtaW46SHVudGVyMlBhc3N3b3Jk")}),
        )],
    );
    stub.on(
        "GET",
        "/api/flows/00000000-0000-0000-0000-000000000000",
        vec![Reply::text(400, &format!("Bearer {key}"))],
    );
    let options = stub.options().with_api_key(key).with_auth_string(auth);
    let client = PrefectClient::new(options.clone()).unwrap();
    let mut texts = vec![format!("{options:?}"), format!("{client:?}")];
    for err in [
        client.read_work_pool("p").await.unwrap_err(),
        client.read_flow(Uuid::nil()).await.unwrap_err(),
    ] {
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = PrefectClient::new(
        ClientOptions::new(format!("http://{addr}/api"))
            .with_api_key(key)
            .with_auth_string(auth),
    )
    .unwrap();
    let err = dead.read_work_pool("p").await.unwrap_err();
    texts.push(err.to_string());
    texts.push(format!("{err:?}"));
    for t in &texts {
        for secret in [key, auth, "Hunter2Password", "YWRtaW46SHVudGVyMlBhc3N3b3Jk"] {
            assert!(!t.contains(secret), "{secret} leaked into: {t}");
        }
    }
    assert!(
        texts[2].contains("***"),
        "the echoed secret is redacted: {}",
        texts[2]
    );
}

// ---------------------------------------------------------------- request shapes

#[tokio::test]
async fn set_state_body_matches_the_python_worker() {
    let stub = Stub::start().await;
    let want = data("set_state_pending.request.json");
    let id: Uuid = want["state"]["state_details"]["flow_run_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!("/api/flow_runs/{id}/set_state");
    stub.on(
        "POST",
        &path,
        vec![Reply::json(201, data("set_state_pending.response.json"))],
    );
    let c = stub.client();
    let result = c
        .set_flow_run_state(id, &StateCreate::pending(), false)
        .await
        .unwrap();
    assert_eq!(
        result.status,
        prefect_worker_core::client::models::SetStateStatus::Accept
    );
    c.set_flow_run_state(id, &StateCreate::pending(), false)
        .await
        .unwrap();

    let sent = stub.requests_to("POST", &path);
    let tids: Vec<Uuid> = sent
        .iter()
        .map(|r| {
            r.json()["state"]["state_details"]["transition_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_ne!(tids[0], tids[1], "a fresh transition id per call");
    assert_eq!(tids[0].get_version_num(), 4);
    let mut got = sent[0].json();
    got["state"]["state_details"]["transition_id"] =
        want["state"]["state_details"]["transition_id"].clone();
    assert_eq!(got, want);
}

#[tokio::test]
async fn scheduled_runs_queues_labels_logs_and_filters_are_shaped_as_python_sends_them() {
    let stub = Stub::start().await;
    let id = Uuid::from_u128(7);
    stub.on(
        "POST",
        "/api/work_pools/p/get_scheduled_flow_runs",
        vec![Reply::json(
            200,
            data("get_scheduled_flow_runs.response.json"),
        )],
    );
    stub.on(
        "POST",
        "/api/work_pools/p/queues/filter",
        vec![Reply::json(
            200,
            json!([{"id": Uuid::new_v4(), "name": "q", "is_paused": true}]),
        )],
    );
    stub.on(
        "PATCH",
        &format!("/api/flow_runs/{id}/labels"),
        vec![Reply::empty(204)],
    );
    stub.on("POST", "/api/logs/", vec![Reply::empty(201)]);
    stub.on(
        "POST",
        "/api/flow_runs/filter",
        vec![Reply::json(200, json!([flow_run(id)]))],
    );
    stub.on(
        "GET",
        &format!("/api/flow_runs/{id}"),
        vec![Reply::json(200, flow_run(id))],
    );
    let c = stub.client();

    let runs = c
        .get_scheduled_flow_runs("p", &["q".into()], Utc::now())
        .await
        .unwrap();
    assert!(!runs.is_empty());
    let body = stub.requests_to("POST", "/api/work_pools/p/get_scheduled_flow_runs")[0].json();
    assert_eq!(body["work_queue_names"], json!(["q"]));
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["scheduled_before"].as_str().unwrap()).is_ok()
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "no limit or scheduled_after: {body}"
    );

    let queues = c.read_work_queues("p", Some(&["q".into()])).await.unwrap();
    assert!(queues[0].is_paused);
    assert_eq!(
        stub.requests_to("POST", "/api/work_pools/p/queues/filter")[0].json(),
        json!({"work_queues": {"name": {"any_": ["q"]}}, "limit": null, "offset": null})
    );

    let labels: JsonMap = data("flow_run_labels.request.json")
        .as_object()
        .unwrap()
        .clone();
    c.update_flow_run_labels(id, &labels).await.unwrap();
    assert_eq!(
        stub.requests_to("PATCH", &format!("/api/flow_runs/{id}/labels"))[0].json(),
        Value::Object(labels)
    );

    let logs: Vec<LogCreate> = serde_json::from_value(data("logs.request.json")).unwrap();
    c.create_logs(&logs).await.unwrap();
    assert_eq!(
        stub.requests_to("POST", "/api/logs/")[0].json(),
        data("logs.request.json")
    );

    let filter = json!({"flow_runs": {"id": {"any_": [id]}}});
    assert_eq!(c.filter_flow_runs(&filter).await.unwrap()[0].id, id);
    assert_eq!(
        stub.requests_to("POST", "/api/flow_runs/filter")[0].json(),
        filter
    );
    assert_eq!(
        c.read_flow_run(id).await.unwrap().name,
        "scrupulous-muskrat"
    );
}

#[tokio::test]
async fn pool_sync_calls() {
    let stub = Stub::start().await;
    stub.on(
        "POST",
        "/api/work_pools/",
        vec![Reply::json(201, work_pool("p"))],
    );
    stub.on("PATCH", "/api/work_pools/p", vec![Reply::empty(204)]);
    let c = stub.client();
    let template = json!({"job_configuration": {}, "variables": {}});
    let body = WorkPoolCreate {
        name: "p".into(),
        pool_type: "kubernetes".into(),
        base_job_template: Some(template.clone()),
    };
    assert_eq!(c.create_work_pool(&body).await.unwrap().name, "p");
    assert_eq!(
        stub.requests_to("POST", "/api/work_pools/")[0].json()["base_job_template"],
        template
    );
    c.update_work_pool_base_job_template("p", &template)
        .await
        .unwrap();
    assert_eq!(
        stub.requests_to("PATCH", "/api/work_pools/p")[0].json(),
        json!({"base_job_template": template})
    );
}

#[tokio::test]
async fn variables_and_blocks_serve_templating() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/variables/name/image",
        vec![Reply::json(
            200,
            json!({"id": Uuid::new_v4(), "name": "image", "value": "repo/img:1"}),
        )],
    );
    stub.on(
        "GET",
        "/api/block_documents/abc",
        vec![Reply::json(
            200,
            json!({"id": "abc", "data": {"config": {"a": 1}}}),
        )],
    );
    stub.on(
        "GET",
        "/api/block_types/slug/secret/block_documents/name/my%20secret",
        vec![Reply::json(
            200,
            json!({"name": "my secret", "data": {"value": "s3cr3t"}}),
        )],
    );
    stub.on(
        "GET",
        "/api/variables/name/broken",
        vec![Reply::json(500, json!({"detail": "boom"}))],
    );
    let c = stub.client();
    let lookups: &dyn TemplateLookups = &c;
    assert_eq!(
        lookups.variable("image").await.unwrap(),
        Some(json!("repo/img:1"))
    );
    assert_eq!(lookups.variable("missing").await.unwrap(), None);
    assert_eq!(
        lookups.block_document("abc").await.unwrap(),
        json!({"config": {"a": 1}})
    );
    assert_eq!(
        lookups
            .block_document_by_name("secret", "my secret")
            .await
            .unwrap(),
        json!({"value": "s3cr3t"})
    );
    assert!(matches!(
        lookups.block_document("nope").await,
        Err(LookupError::NotFound(_))
    ));
    assert!(matches!(
        lookups.variable("broken").await,
        Err(LookupError::Api(_))
    ));
    let reqs = stub.requests_to("GET", "/api/block_documents/abc");
    assert_eq!(reqs[0].query.as_deref(), Some("include_secrets=true"));
}

#[tokio::test]
async fn clones_share_the_worker_name() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/work_pools/p",
        vec![Reply::json(200, work_pool("p"))],
    );
    let a = stub.client();
    let b = a.clone();
    a.set_worker_name(Some("w1".into()));
    b.read_work_pool("p").await.unwrap();
    assert_eq!(
        stub.requests_to("GET", "/api/work_pools/p")[0].header("x-prefect-worker-name"),
        Some("w1")
    );
}

#[tokio::test]
async fn server_version_and_api_url() {
    let stub = Stub::start().await;
    stub.on(
        "GET",
        "/api/admin/version",
        vec![Reply::json(200, json!("3.9.1"))],
    );
    let c = stub.client();
    assert_eq!(c.read_server_version().await.unwrap(), "3.9.1");
    assert_eq!(c.api_url().as_str(), stub.api_url());
}

#[test]
fn invalid_configuration_is_rejected_at_construction() {
    for options in [
        ClientOptions::default(),
        ClientOptions::new("not a url"),
        ClientOptions::new("ftp://host/api"),
        ClientOptions::new("http://host/api").with_ssl_cert_file("/nonexistent/ca.pem"),
        ClientOptions::new("http://host/api").with_custom_header("Bad Header", "x"),
    ] {
        let err = PrefectClient::new(options).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    }
}
