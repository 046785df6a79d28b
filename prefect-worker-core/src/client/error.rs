//! The typed errors of the REST client.
//!
//! Every message names the method, the path (relative to the API URL) and, for HTTP
//! errors, the status and the server's `detail`. The transport redacts the API key and
//! auth string out of every text it puts in here, so neither can leak into logs.

use std::fmt;

/// Which request failed and how the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path relative to the API URL, URL-encoded (`/work_pools/my%20pool`).
    pub path: String,
    /// The HTTP status code.
    pub status: u16,
    /// The server's `detail` (or a short excerpt of a non-JSON body), when it sent one.
    pub detail: Option<String>,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(
            f,
            "{} {} returned {} {}",
            self.method, self.path, self.status, reason
        )?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// What kind of transport failure happened (decides whether it is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The TCP/TLS connection could not be established.
    Connect,
    /// A connect or read timed out.
    Timeout,
    /// The connection broke while sending or receiving, or the peer spoke bad HTTP.
    Io,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect error",
            Self::Timeout => "timeout",
            Self::Io => "I/O error",
        })
    }
}

/// A request that got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// The request's HTTP method.
    pub method: String,
    /// The request's API path (no host, no query).
    pub path: String,
    /// What went wrong.
    pub kind: TransportKind,
    /// The underlying error chain, without the URL.
    pub message: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed ({}): {}",
            self.method, self.path, self.kind, self.message
        )
    }
}

/// A failed API call. Messages never contain the API key or auth string.
///
/// The HTTP variants follow spec §1 "Error mapping": which 404s become
/// [`ClientError::NotFound`] depends on the endpoint; a 404 elsewhere (for example
/// `GET /flows/{id}`) is a plain [`ClientError::Status`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A 404 on an endpoint that maps it to "ObjectNotFound".
    #[error("not found: {0}")]
    NotFound(HttpError),
    /// A 409 from `POST /work_pools/` ("ObjectAlreadyExists").
    #[error("already exists: {0}")]
    AlreadyExists(HttpError),
    /// 401: the API key or auth string is missing or wrong.
    #[error("unauthorized: {0}")]
    Unauthorized(HttpError),
    /// 403 (after CSRF refreshes): not allowed.
    #[error("forbidden: {0}")]
    Forbidden(HttpError),
    /// Any other 4xx (including 408/429 once retries ran out, and unmapped 404s).
    #[error("HTTP error: {0}")]
    Status(HttpError),
    /// A 5xx (after retries, where retried).
    #[error("server error: {0}")]
    Server(HttpError),
    /// No response: connect error, timeout, broken connection.
    #[error("transport error: {0}")]
    Transport(TransportError),
    /// The response body was not what the endpoint promises.
    #[error("invalid response from {method} {path}: {message}")]
    Decode {
        /// The request's HTTP method.
        method: String,
        /// The request's API path.
        path: String,
        /// What did not decode, and why.
        message: String,
    },
    /// The client could not be built from its options (bad URL, CA file, header, setting).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Maps a non-success HTTP answer to a variant; `not_found_maps` says whether this
    /// endpoint turns 404 into [`ClientError::NotFound`], `conflict_maps` the same for 409.
    pub(crate) fn from_status(err: HttpError, not_found_maps: bool, conflict_maps: bool) -> Self {
        match err.status {
            404 if not_found_maps => Self::NotFound(err),
            409 if conflict_maps => Self::AlreadyExists(err),
            401 => Self::Unauthorized(err),
            403 => Self::Forbidden(err),
            500..=599 => Self::Server(err),
            _ => Self::Status(err),
        }
    }

    /// The HTTP status, when the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.http().map(|e| e.status)
    }

    /// The HTTP details, when the server answered.
    #[must_use]
    pub fn http(&self) -> Option<&HttpError> {
        match self {
            Self::NotFound(e)
            | Self::AlreadyExists(e)
            | Self::Unauthorized(e)
            | Self::Forbidden(e)
            | Self::Status(e)
            | Self::Server(e) => Some(e),
            Self::Transport(_) | Self::Decode { .. } | Self::Config(_) => None,
        }
    }

    /// Whether the caller's loop should tolerate this error and try again later
    /// (spec §2.2/§0.11: 5xx, 408, 429 and transport errors are transient; any other
    /// 4xx stops the worker).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Server(_) | Self::Transport(_) => true,
            Self::Status(e) => matches!(e.status, 408 | 429),
            Self::NotFound(_)
            | Self::AlreadyExists(_)
            | Self::Unauthorized(_)
            | Self::Forbidden(_)
            | Self::Decode { .. }
            | Self::Config(_) => false,
        }
    }

    /// Whether this is the endpoint-mapped "ObjectNotFound".
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> HttpError {
        HttpError {
            method: "GET".into(),
            path: "/x".into(),
            status,
            detail: Some("nope".into()),
        }
    }

    #[test]
    fn mapping_depends_on_endpoint() {
        assert!(matches!(
            ClientError::from_status(http(404), true, false),
            ClientError::NotFound(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(404), false, false),
            ClientError::Status(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(409), false, true),
            ClientError::AlreadyExists(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(409), false, false),
            ClientError::Status(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(401), true, true),
            ClientError::Unauthorized(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(403), true, true),
            ClientError::Forbidden(_)
        ));
        assert!(matches!(
            ClientError::from_status(http(504), true, true),
            ClientError::Server(_)
        ));
    }

    #[test]
    fn transient_classification() {
        assert!(ClientError::from_status(http(500), false, false).is_transient());
        assert!(ClientError::from_status(http(429), false, false).is_transient());
        assert!(ClientError::from_status(http(408), false, false).is_transient());
        assert!(!ClientError::from_status(http(400), false, false).is_transient());
        assert!(!ClientError::from_status(http(404), true, false).is_transient());
        assert!(!ClientError::from_status(http(403), false, false).is_transient());
    }

    #[test]
    fn message_names_method_path_status_detail() {
        let msg = ClientError::from_status(http(422), false, false).to_string();
        assert_eq!(
            msg,
            "HTTP error: GET /x returned 422 Unprocessable Entity: nope"
        );
    }
}
