//! CSRF token handling (spec §1 "CSRF"): fetched only once the server asks for one (a 403
//! "Missing CSRF token." / "Invalid CSRF token ..." to a change request), then sent on every
//! change request, refreshed when expired or rejected, and turned off for a server that
//! answers that CSRF protection is disabled.
//!
//! Python fetches a token before its first change request whatever the server; a server
//! without CSRF protection (the default) then costs a request, and a start-up round trip
//! before the first poll. Asking only when told costs a CSRF-protected server one refused
//! request per client instead, and it was not processed, so resending it is safe.

use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ClientError;
use super::transport::{ApiRequest, Transport};

/// The `Prefect-Csrf-Token` / `Prefect-Csrf-Client` values for one request.
#[derive(Debug, Clone)]
pub(crate) struct CsrfHeaders {
    pub token: HeaderValue,
    pub client: HeaderValue,
}

#[derive(Debug)]
struct CsrfState {
    /// Starts as `PREFECT_CLIENT_CSRF_SUPPORT_ENABLED`; a server without CSRF turns it off.
    enabled: bool,
    /// Set once the server refused a change request for want of a token.
    required: bool,
    token: Option<CsrfHeaders>,
    expiration: Option<DateTime<Utc>>,
}

/// The CSRF state of one client (shared by its clones).
#[derive(Debug)]
pub(crate) struct Csrf {
    /// A random id per client, as the server keys tokens by client.
    client_id: Uuid,
    // A tokio mutex held across the token fetch, so concurrent first requests fetch once.
    state: tokio::sync::Mutex<CsrfState>,
}

#[derive(Deserialize)]
struct CsrfTokenReply {
    token: String,
    #[serde(default)]
    expiration: Option<DateTime<Utc>>,
}

impl Csrf {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            client_id: Uuid::new_v4(),
            state: tokio::sync::Mutex::new(CsrfState {
                enabled,
                required: false,
                token: None,
                expiration: None,
            }),
        }
    }

    /// The server refused a change request for want of a (valid) token: forget ours, and
    /// from now on send one. Returns whether CSRF support is on (else there is nothing to
    /// fetch and the refusal stands).
    pub(crate) async fn refused(&self) -> bool {
        let mut st = self.state.lock().await;
        st.token = None;
        st.required = true;
        st.enabled
    }

    /// The headers for a change request, fetching a token first when the server requires
    /// one and there is none or it expired. `None` while the server has not asked for one,
    /// or when CSRF is off for this client.
    pub(crate) async fn headers(
        &self,
        transport: &Transport,
    ) -> Result<Option<CsrfHeaders>, ClientError> {
        let mut st = self.state.lock().await;
        if !st.enabled || !st.required {
            return Ok(None);
        }
        let expired = st.expiration.is_some_and(|exp| Utc::now() > exp);
        if let (Some(h), false) = (&st.token, expired) {
            return Ok(Some(h.clone()));
        }
        let req = ApiRequest::new(Method::GET, ["csrf-token"])
            .query("client", self.client_id.to_string());
        // Boxed: this is the only place the retry loop re-enters itself (through CSRF).
        let resp = Box::pin(transport.send_with_retries(&req, false)).await?;
        let unconfigured =
            resp.status == 422 && resp.text().contains("CSRF protection is disabled.");
        if resp.status == 404 || unconfigured {
            // An old server without the endpoint, or CSRF protection disabled on the server.
            tracing::debug!(
                status = resp.status,
                "CSRF protection is off on this server"
            );
            st.enabled = false;
            return Ok(None);
        }
        let reply: CsrfTokenReply = transport.check(&req, resp)?.json()?;
        let token = HeaderValue::from_str(&reply.token).map_err(|_| ClientError::Decode {
            method: req.method.to_string(),
            path: "/csrf-token".into(),
            message: "the CSRF token is not a valid header value".into(),
        })?;
        let client = HeaderValue::from_str(&self.client_id.to_string())
            .map_err(|_| ClientError::Config("invalid CSRF client id".into()))?;
        let headers = CsrfHeaders { token, client };
        st.token = Some(headers.clone());
        st.expiration = reply.expiration;
        Ok(Some(headers))
    }
}

/// Whether a 403 body is the server's CSRF middleware asking for a (valid) token: its
/// three refusals are "Missing CSRF token.", "Missing client identifier." and
/// "Invalid CSRF token or client identifier.".
pub(crate) fn is_csrf_refusal(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    [
        "Missing CSRF token",
        "Missing client identifier",
        "Invalid CSRF token",
    ]
    .iter()
    .any(|m| text.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_refusals_are_recognised() {
        for body in [
            r#"{"detail":"Missing CSRF token."}"#,
            r#"{"detail":"Missing client identifier."}"#,
            r#"{"detail":"Invalid CSRF token or client identifier."}"#,
        ] {
            assert!(is_csrf_refusal(body.as_bytes()), "{body}");
        }
        assert!(!is_csrf_refusal(br#"{"detail":"Forbidden"}"#));
    }
}
