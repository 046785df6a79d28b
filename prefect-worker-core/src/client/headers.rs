//! The headers of spec §1 "Headers on every REST request": identity, API version,
//! authorization, custom headers and the worker attribution headers.

use base64::Engine as _;
use reqwest::header::{
    ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};

use super::error::ClientError;
use super::options::ClientOptions;

pub(crate) const API_VERSION_HEADER: &str = "x-prefect-api-version";
pub(crate) const WORKER_NAME_HEADER: &str = "x-prefect-worker-name";
pub(crate) const WORKER_ID_HEADER: &str = "x-prefect-worker-id";
pub(crate) const CSRF_TOKEN_HEADER: &str = "prefect-csrf-token";
pub(crate) const CSRF_CLIENT_HEADER: &str = "prefect-csrf-client";
pub(crate) const MAINTENANCE_HEADER: &str = "prefect-maintenance";

/// Headers custom headers may not replace: the server reads the client version out of
/// the User-Agent, and the CSRF pair is managed by the client.
const PROTECTED: [&str; 3] = ["user-agent", CSRF_TOKEN_HEADER, CSRF_CLIENT_HEADER];

/// `prefect/3.9.1 (API 0.8.4)`: the server parses the client version out of this.
#[must_use]
pub fn user_agent() -> String {
    format!(
        "prefect/{} (API {})",
        crate::PREFECT_VERSION,
        crate::API_VERSION
    )
}

/// What Prefect's client (httpx) asks for; the HTTP client decodes both (reqwest's `gzip`
/// and `deflate` features), whatever sets the header.
const ACCEPTED_ENCODINGS: &str = "gzip, deflate";

/// The headers sent on every request, in Python's precedence: httpx's Accept-Encoding,
/// API version and authorization first, then custom headers (which may replace them),
/// and the User-Agent last so nothing can replace it.
pub(crate) fn base_headers(o: &ClientOptions) -> Result<HeaderMap, ClientError> {
    let mut h = HeaderMap::new();
    h.insert(
        ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    h.insert(
        HeaderName::from_static(API_VERSION_HEADER),
        HeaderValue::from_static(crate::API_VERSION),
    );
    if let Some(auth) = authorization(o)? {
        h.insert(AUTHORIZATION, auth);
    }
    for (name, value) in &o.custom_headers {
        if PROTECTED.contains(&name.to_ascii_lowercase().as_str()) {
            tracing::warn!(
                header = %name,
                "Custom header is ignored because it conflicts with a protected header managed by Prefect \
                 (User-Agent, Prefect-Csrf-Token, Prefect-Csrf-Client)"
            );
            continue;
        }
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ClientError::Config(format!(
                "custom header name {name:?} is not a valid header name"
            ))
        })?;
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            ClientError::Config(format!(
                "the value of custom header {name:?} is not a valid header value"
            ))
        })?;
        // Custom headers may carry tokens; keep them out of any debug dump of a request.
        v.set_sensitive(true);
        h.insert(n, v);
    }
    let ua = HeaderValue::from_str(&user_agent())
        .map_err(|_| ClientError::Config("invalid User-Agent".into()))?;
    h.insert(USER_AGENT, ua);
    Ok(h)
}

/// `Basic base64(auth string)` wins over `Bearer <key>`; neither → no header.
fn authorization(o: &ClientOptions) -> Result<Option<HeaderValue>, ClientError> {
    let raw = match (&o.auth_string, &o.api_key) {
        (Some(auth), _) => {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(auth.expose())
            )
        }
        (None, Some(key)) => format!("Bearer {}", key.expose()),
        (None, None) => return Ok(None),
    };
    // The error deliberately does not say which character is wrong: that would leak the secret.
    let mut v = HeaderValue::from_str(&raw).map_err(|_| {
        ClientError::Config(
            "the API key or auth string contains characters not allowed in a header".into(),
        )
    })?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// An attribution header value: leading and trailing spaces and tabs removed; an empty
/// (or unencodable) value means no header.
pub(crate) fn attribution_value(raw: String) -> Option<HeaderValue> {
    let trimmed = raw.trim_matches([' ', '\t']);
    if trimmed.is_empty() {
        return None;
    }
    // Reuse the allocation when there was nothing to trim.
    let owned = if trimmed.len() == raw.len() {
        raw
    } else {
        trimmed.to_owned()
    };
    HeaderValue::try_from(owned).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn identity_headers() {
        let h = base_headers(&ClientOptions::new("http://x/api")).unwrap();
        assert_eq!(get(&h, "user-agent"), Some("prefect/3.9.1 (API 0.8.4)"));
        assert_eq!(get(&h, "x-prefect-api-version"), Some("0.8.4"));
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn basic_wins_over_bearer() {
        let o = ClientOptions::new("http://x/api").with_api_key("key");
        assert_eq!(
            get(&base_headers(&o).unwrap(), "authorization"),
            Some("Bearer key")
        );
        let o = o.with_auth_string("user:pass");
        assert_eq!(
            get(&base_headers(&o).unwrap(), "authorization"),
            Some("Basic dXNlcjpwYXNz")
        );
    }

    #[test]
    fn custom_headers_cannot_replace_protected_ones() {
        let o = ClientOptions::new("http://x/api")
            .with_custom_header("User-Agent", "evil")
            .with_custom_header("Prefect-Csrf-Token", "evil")
            .with_custom_header("X-Team", "data");
        let h = base_headers(&o).unwrap();
        assert_eq!(get(&h, "user-agent"), Some("prefect/3.9.1 (API 0.8.4)"));
        assert!(h.get("prefect-csrf-token").is_none());
        assert_eq!(get(&h, "x-team"), Some("data"));
    }

    #[test]
    fn bad_secret_error_does_not_echo_it() {
        let o = ClientOptions::new("http://x/api").with_api_key("bad\nsecret");
        let e = base_headers(&o).unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn attribution_values_are_trimmed() {
        assert_eq!(attribution_value(" \tw1 \t".into()).unwrap(), "w1");
        assert_eq!(attribution_value("w 1".into()).unwrap(), "w 1");
        assert!(attribution_value(" \t ".into()).is_none());
        assert!(attribution_value(String::new()).is_none());
    }
}
