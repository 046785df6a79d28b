//! Opening websockets to the Prefect API with the REST client's URL, TLS and header rules:
//! the events stream (`/events/in`, spec §4.6) and the worker channel
//! (`/work_pools/{pool}/workers/connect`, spec §2.2A).
//!
//! This module only opens the connection (URL `http→ws`/`https→wss`, `User-Agent`, custom
//! headers, the `Authorization` the endpoint wants, the subprotocol, TLS from
//! `PREFECT_API_TLS_INSECURE_SKIP_VERIFY` / `PREFECT_API_SSL_CERT_FILE`). What is said over
//! it (auth messages, frames) belongs to the protocol that uses it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use url::Url;

use super::options::ClientOptions;
use super::secret::Redactor;

/// The initial read buffer of a websocket (it grows for larger frames).
const WS_READ_BUFFER: usize = 16 * 1024;

pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// An open websocket to the API.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which `Authorization` header the upgrade request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketAuth {
    /// None: the protocol authenticates with a message after the upgrade (the worker
    /// channel, and the self-hosted events stream without an auth string).
    None,
    /// `Basic base64(PREFECT_API_AUTH_STRING)` when an auth string is set, else none
    /// (self-hosted events stream).
    BasicIfAuthString,
    /// `bearer <PREFECT_API_KEY>` when a key is set, else none (Prefect Cloud events).
    BearerApiKey,
}

/// What to open: the path below the API URL, the subprotocol and the authorization.
#[derive(Debug, Clone)]
pub struct WebSocketRequest {
    /// Unencoded path segments below the API URL, e.g. `["events", "in"]`.
    pub segments: Vec<String>,
    /// `Sec-WebSocket-Protocol` to ask for (`prefect` on self-hosted servers).
    pub subprotocol: Option<String>,
    /// The `Authorization` header to send with the upgrade.
    pub auth: WebSocketAuth,
    /// Bound on TCP connect + TLS + upgrade.
    pub timeout: Duration,
}

impl WebSocketRequest {
    /// A request for `segments` with the `prefect` subprotocol, no `Authorization` header
    /// and a 10 s bound (the channel's setup timeout).
    #[must_use]
    pub fn new<S: Into<String>>(segments: impl IntoIterator<Item = S>) -> Self {
        Self {
            segments: segments.into_iter().map(Into::into).collect(),
            subprotocol: Some("prefect".to_owned()),
            auth: WebSocketAuth::None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the subprotocol (`None`: ask for none).
    #[must_use]
    pub fn with_subprotocol(mut self, subprotocol: Option<&str>) -> Self {
        self.subprotocol = subprotocol.map(str::to_owned);
        self
    }

    /// Sets the upgrade's `Authorization`.
    #[must_use]
    pub fn with_auth(mut self, auth: WebSocketAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the bound on connect + upgrade.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why a websocket could not be opened. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    /// The URL, a header or the TLS settings cannot be used.
    #[error("cannot open the websocket {path}: {message}")]
    Config {
        /// The path below the API URL.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The server answered the upgrade with a non-101 HTTP status (401/403: credentials;
    /// 404/405: a server without this endpoint; 5xx: try again later).
    #[error("the server refused the websocket upgrade of {path} with HTTP {status}")]
    Rejected {
        /// The path below the API URL.
        path: String,
        /// The HTTP status of the refusal.
        status: u16,
    },
    /// TCP, TLS or the websocket handshake failed.
    #[error("cannot connect the websocket {path}: {message}")]
    Connect {
        /// The path below the API URL.
        path: String,
        /// The failure, with credentials redacted.
        message: String,
    },
    /// Connect + upgrade took longer than [`WebSocketRequest::timeout`].
    #[error("opening the websocket {path} timed out after {timeout:?}")]
    Timeout {
        /// The path below the API URL.
        path: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },
}

/// What the transport keeps to open websockets: headers computed once, TLS built on the
/// first `wss` connection.
pub(crate) struct WebSocketSettings {
    /// `User-Agent` and custom headers, from the REST base headers (no `Authorization`:
    /// that depends on the endpoint).
    headers: HeaderMap,
    basic: Option<HeaderValue>,
    bearer: Option<HeaderValue>,
    /// The token of an `auth` message: the auth string, else the API key.
    auth_message_token: Option<super::secret::Secret>,
    tls_insecure_skip_verify: bool,
    ssl_cert_file: Option<std::path::PathBuf>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    redactor: Redactor,
    /// `PREFECT_API_AUTH_STRING`: the token of the events stream's auth message.
    auth_string: Option<super::secret::Secret>,
}

impl std::fmt::Debug for WebSocketSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketSettings")
            .field("tls_insecure_skip_verify", &self.tls_insecure_skip_verify)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .finish_non_exhaustive()
    }
}

impl WebSocketSettings {
    /// `rest_headers` are the REST base headers; only `User-Agent` and the custom headers
    /// are kept from them.
    pub(crate) fn new(o: &ClientOptions, rest_headers: &HeaderMap) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in rest_headers {
            // Accept-Encoding is for REST replies; a websocket negotiates its own extensions.
            if name == AUTHORIZATION
                || name == ACCEPT_ENCODING
                || name.as_str() == super::headers::API_VERSION_HEADER
            {
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
        let sensitive = |raw: String| {
            HeaderValue::from_str(&raw).ok().map(|mut v| {
                v.set_sensitive(true);
                v
            })
        };
        let basic = o.auth_string.as_ref().and_then(|a| {
            sensitive(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a.expose())
            ))
        });
        // Python's events client sends the key with a lower-case scheme (`bearer`).
        let bearer = o
            .api_key
            .as_ref()
            .and_then(|k| sensitive(format!("bearer {}", k.expose())));
        Self {
            headers,
            basic,
            bearer,
            auth_message_token: o.auth_string.clone().or_else(|| o.api_key.clone()),
            tls_insecure_skip_verify: o.tls_insecure_skip_verify,
            ssl_cert_file: o.ssl_cert_file.clone(),
            tls: OnceLock::new(),
            redactor: Redactor::new(o.api_key.as_ref(), o.auth_string.as_ref()),
            auth_string: o.auth_string.clone(),
        }
    }

    /// The token of the self-hosted events stream's `{"type":"auth"}` message: the auth
    /// string (the API key is not used there, spec §4.6).
    pub(crate) fn events_auth_token(&self) -> Option<&str> {
        self.auth_string.as_ref().map(super::secret::Secret::expose)
    }

    /// `text` with every credential replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Opens `req` below `base` (the API URL).
    pub(crate) async fn connect(
        &self,
        base: &Url,
        req: &WebSocketRequest,
    ) -> Result<WebSocket, WebSocketError> {
        let (url, path) =
            websocket_url(base, &req.segments).map_err(|message| WebSocketError::Config {
                path: req.segments.join("/"),
                message,
            })?;
        let config = |message: String| WebSocketError::Config {
            path: path.clone(),
            message,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| config(e.to_string()))?;
        let h = request.headers_mut();
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        let auth = match req.auth {
            WebSocketAuth::None => None,
            WebSocketAuth::BasicIfAuthString => self.basic.clone(),
            WebSocketAuth::BearerApiKey => self.bearer.clone(),
        };
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a);
        }
        if let Some(p) = &req.subprotocol {
            let v = HeaderValue::from_str(p)
                .map_err(|_| config(format!("invalid subprotocol {p:?}")))?;
            h.insert(SEC_WEBSOCKET_PROTOCOL, v);
        }
        let connector = if url.scheme() == "wss" {
            let tls = self
                .tls
                .get_or_init(|| self.build_tls())
                .clone()
                .map_err(config)?;
            Some(tokio_tungstenite::Connector::Rustls(tls))
        } else {
            Some(tokio_tungstenite::Connector::Plain)
        };
        // tungstenite preallocates a 128 KiB read buffer per socket; the worker's frames
        // (event acknowledgements, channel frames, pool snapshots) are a few KiB, and the
        // buffer still grows for a larger one. Two sockets at idle: 0.25 MB of heap saved.
        let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER);
        let open = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            connector,
        );
        match tokio::time::timeout(req.timeout, open).await {
            Err(_) => Err(WebSocketError::Timeout {
                path,
                timeout: req.timeout,
            }),
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                Err(WebSocketError::Rejected {
                    path,
                    status: response.status().as_u16(),
                })
            }
            Ok(Err(e)) => Err(WebSocketError::Connect {
                path,
                message: self.redactor.redact(&e.to_string()),
            }),
        }
    }

    /// The REST client's TLS rules: no verification when asked; otherwise the CA file
    /// replaces the built-in (webpki) roots, as it replaces certifi in Python.
    fn build_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let config = if self.tls_insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ssl_cert_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        format!(
                            "cannot read the CA file {} (PREFECT_API_SSL_CERT_FILE): {e}",
                            path.display()
                        )
                    })?;
                    for cert in CertificateDer::pem_slice_iter(&pem) {
                        let cert = cert.map_err(|e| {
                            format!("the CA file {} is not a PEM bundle: {e}", path.display())
                        })?;
                        roots.add(cert).map_err(|e| {
                            format!(
                                "the CA file {} holds an unusable certificate: {e}",
                                path.display()
                            )
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

impl super::PrefectClient {
    /// The token a websocket protocol sends in its `{"type": "auth", "token": ...}` message
    /// after the upgrade (the worker channel, spec §2.2A): `PREFECT_API_AUTH_STRING`, else
    /// `PREFECT_API_KEY`, raw (not base64). `None` when neither is set.
    #[must_use]
    pub fn auth_message_token(&self) -> Option<&super::secret::Secret> {
        self.inner.websocket.auth_message_token.as_ref()
    }
}

/// `http://h/api` + `[a, b]` → `ws://h/api/a/b` (segments percent-encoded), and the path
/// below the API URL for messages.
pub(crate) fn websocket_url(base: &Url, segments: &[String]) -> Result<(Url, String), String> {
    let mut url = base.clone();
    let scheme = match base.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => return Err(format!("the API URL scheme {other:?} is not http(s)")),
    };
    url.set_scheme(scheme)
        .map_err(|()| "the API URL cannot take a websocket scheme".to_owned())?;
    url.path_segments_mut()
        .map_err(|()| "the API URL cannot have a path".to_owned())?
        .pop_if_empty()
        .extend(segments);
    let base_path = base.path().trim_end_matches('/');
    let path = url
        .path()
        .strip_prefix(base_path)
        .unwrap_or(url.path())
        .to_owned();
    Ok((url, path))
}

/// `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`: accept any certificate, still checking that the
/// handshake signatures are well formed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::USER_AGENT;

    #[test]
    fn urls_follow_the_api_url() {
        let base = Url::parse("http://h:4200/api").unwrap();
        let (url, path) = websocket_url(&base, &["events".into(), "in".into()]).unwrap();
        assert_eq!(url.as_str(), "ws://h:4200/api/events/in");
        assert_eq!(path, "/events/in");
        let base = Url::parse("https://api.prefect.cloud/api/accounts/a/workspaces/w/").unwrap();
        let (url, _) = websocket_url(
            &base,
            &[
                "work_pools".into(),
                "my pool/x".into(),
                "workers".into(),
                "connect".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "wss://api.prefect.cloud/api/accounts/a/workspaces/w/work_pools/my%20pool%2Fx/workers/connect"
        );
    }

    #[test]
    fn authorization_depends_on_the_endpoint_and_is_sensitive() {
        let o = ClientOptions::new("http://h/api")
            .with_api_key("pnu_key")
            .with_auth_string("user:pass");
        let s = WebSocketSettings::new(&o, &super::super::headers::base_headers(&o).unwrap());
        assert!(s.headers.get(AUTHORIZATION).is_none());
        assert!(s.headers.get(USER_AGENT).is_some());
        assert_eq!(s.basic.as_ref().unwrap(), "Basic dXNlcjpwYXNz");
        assert_eq!(s.bearer.as_ref().unwrap(), "bearer pnu_key");
        assert!(s.basic.as_ref().unwrap().is_sensitive());
        assert!(!format!("{s:?}").contains("pnu_key"));
        assert_eq!(s.auth_message_token.as_ref().unwrap().expose(), "user:pass");
        let o = ClientOptions::new("http://h/api").with_api_key("pnu_key");
        let s = WebSocketSettings::new(&o, &super::super::headers::base_headers(&o).unwrap());
        assert_eq!(s.auth_message_token.as_ref().unwrap().expose(), "pnu_key");
    }
}
