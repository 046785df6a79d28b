//! `PrefectClient::connect_websocket` against local websocket servers: URL, headers,
//! subprotocol, authorization per endpoint, refused upgrades and the REST client's TLS
//! rules (CA file, insecure skip-verify).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use prefect_worker_core::client::websocket::{
    Message, WebSocketAuth, WebSocketError, WebSocketRequest,
};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// Accepts websocket upgrades on `listener` (through `wrap`, for TLS), records each
/// request's path and headers, answers the `prefect` subprotocol and echoes one message.
async fn serve<S, F, Fut>(listener: TcpListener, seen: Seen, wrap: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<S>> + Send + 'static,
{
    let wrap = Arc::new(wrap);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (seen, wrap) = (seen.clone(), wrap.clone());
        tokio::spawn(async move {
            let Some(stream) = wrap(tcp).await else {
                return;
            };
            let callback = |req: &Request, mut resp: Response| {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                seen.lock()
                    .unwrap()
                    .push((req.uri().path().to_owned(), headers));
                if req.headers().contains_key("sec-websocket-protocol") {
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static("prefect"),
                    );
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            if let Some(Ok(m)) = ws.next().await {
                let _ = ws.send(m).await;
            }
        });
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn opens_with_the_rest_clients_headers_and_the_endpoints_authorization() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    tokio::spawn(serve(
        listener,
        seen.clone(),
        |tcp| async move { Some(tcp) },
    ));

    let client = PrefectClient::new(
        ClientOptions::new(format!("http://127.0.0.1:{port}/api"))
            .with_api_key("pnu_websocket_key")
            .with_auth_string("user:websocket-pass")
            .with_custom_header("X-Team", "data"),
    )
    .unwrap();
    assert!(!client.is_cloud());

    // Self-hosted events: Basic auth string, `prefect` subprotocol.
    let req = WebSocketRequest::new(["events", "in"]).with_auth(WebSocketAuth::BasicIfAuthString);
    let mut ws = client.connect_websocket(&req).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Worker channel: no Authorization on the upgrade; pool names are percent-encoded.
    let req = WebSocketRequest::new(["work_pools", "my pool", "workers", "connect"]);
    let _ws = client.connect_websocket(&req).await.unwrap();
    // Cloud events: bearer key, no subprotocol.
    let req = WebSocketRequest::new(["events", "in"])
        .with_subprotocol(None)
        .with_auth(WebSocketAuth::BearerApiKey);
    let _ws = client.connect_websocket(&req).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (path, h) = &seen[0];
    assert_eq!(path, "/api/events/in");
    assert_eq!(header(h, "user-agent"), Some("prefect/3.9.1 (API 0.8.4)"));
    assert_eq!(header(h, "x-team"), Some("data"));
    assert_eq!(header(h, "sec-websocket-protocol"), Some("prefect"));
    assert_eq!(
        header(h, "authorization"),
        Some("Basic dXNlcjp3ZWJzb2NrZXQtcGFzcw==")
    );
    let (path, h) = &seen[1];
    assert_eq!(path, "/api/work_pools/my%20pool/workers/connect");
    assert_eq!(header(h, "authorization"), None);
    assert_eq!(header(h, "sec-websocket-protocol"), Some("prefect"));
    let (_, h) = &seen[2];
    assert_eq!(header(h, "authorization"), Some("bearer pnu_websocket_key"));
    assert_eq!(header(h, "sec-websocket-protocol"), None);
}

#[tokio::test]
async fn a_refused_upgrade_keeps_its_status_and_a_dead_port_is_a_connect_error() {
    // A server without the endpoint: an old Prefect answers 404.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 22\r\n\r\n{\"detail\":\"Not Found\"}")
                .await;
        }
    });
    let client = PrefectClient::new(
        ClientOptions::new(format!("http://127.0.0.1:{port}/api")).with_api_key("pnu_secret_404"),
    )
    .unwrap();
    let err = client
        .connect_websocket(&WebSocketRequest::new([
            "work_pools",
            "p",
            "workers",
            "connect",
        ]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WebSocketError::Rejected { status: 404, path } if path == "/work_pools/p/workers/connect"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("pnu_secret_404"));

    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = free.local_addr().unwrap().port();
    drop(free);
    let client =
        PrefectClient::new(ClientOptions::new(format!("http://127.0.0.1:{dead}/api"))).unwrap();
    let err = client
        .connect_websocket(&WebSocketRequest::new(["events", "in"]))
        .await
        .unwrap_err();
    assert!(matches!(err, WebSocketError::Connect { .. }), "{err:?}");
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn tls_material() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let chain = vec![
        rustls::pki_types::CertificateDer::from(leaf.der().to_vec()),
        rustls::pki_types::CertificateDer::from(ca.der().to_vec()),
    ];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (ca.pem(), Arc::new(config))
}

#[tokio::test]
async fn wss_follows_the_rest_clients_tls_settings() {
    let (ca_pem, server_config) = tls_material();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    tokio::spawn(serve(listener, Seen::default(), move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await.ok() }
    }));
    let url = format!("https://127.0.0.1:{port}/api");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let req = WebSocketRequest::new(["events", "in"]).with_timeout(Duration::from_secs(30));

    // PREFECT_API_SSL_CERT_FILE: trusted.
    let client = PrefectClient::new(ClientOptions::new(&url).with_ssl_cert_file(&ca_file)).unwrap();
    let mut ws = client.connect_websocket(&req).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
    // Built-in roots only: an unknown CA is refused.
    let client = PrefectClient::new(ClientOptions::new(&url)).unwrap();
    let err = client.connect_websocket(&req).await.unwrap_err();
    assert!(matches!(err, WebSocketError::Connect { .. }), "{err:?}");
    // PREFECT_API_TLS_INSECURE_SKIP_VERIFY: accepted.
    let client =
        PrefectClient::new(ClientOptions::new(&url).with_tls_insecure_skip_verify(true)).unwrap();
    client.connect_websocket(&req).await.unwrap();
    // A CA file that cannot be read is a configuration error naming the setting.
    let client = PrefectClient::new(
        ClientOptions::new(&url).with_ssl_cert_file(dir.path().join("missing.pem")),
    );
    if let Ok(client) = client {
        let err = client.connect_websocket(&req).await.unwrap_err();
        assert!(
            err.to_string().contains("PREFECT_API_SSL_CERT_FILE"),
            "{err}"
        );
    }
}

#[test]
fn cloud_is_recognised_by_the_cloud_api_url() {
    let cloud = PrefectClient::new(ClientOptions::new(
        "https://api.prefect.cloud/api/accounts/a/workspaces/w",
    ))
    .unwrap();
    assert!(cloud.is_cloud());
    let stub = PrefectClient::new(
        ClientOptions::new("http://127.0.0.1:9/api/accounts/a/workspaces/w")
            .with_cloud_api_url("http://127.0.0.1:9/api"),
    )
    .unwrap();
    assert!(stub.is_cloud());
    let oss = PrefectClient::new(ClientOptions::new("http://127.0.0.1:4200/api")).unwrap();
    assert!(!oss.is_cloud());
}
