//! Why a worker channel connection ended, and what follows from it (spec §2.2A step 7):
//! a *terminal* failure turns the channel off for the life of the process (REST from then
//! on); a *retryable* one falls back to REST while the channel reconnects with back-off.

use std::time::Duration;

use crate::client::websocket::WebSocketError;

use super::frames::CLOSE_POLICIES;

/// Why a channel connection could not be set up or ended. Messages never carry credentials
/// (the auth message is never part of one).
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The websocket could not be opened: refused upgrade (with its HTTP status), TCP/TLS
    /// failure, or a client configuration that cannot open it.
    #[error("opening the worker channel failed: {0}")]
    Open(#[source] WebSocketError),
    /// Connect + auth + hello + ready took longer than the setup timeout.
    #[error("the worker channel setup timed out after {0:?}")]
    SetupTimeout(Duration),
    /// The server did not answer the auth message with `auth_success`.
    #[error("the server refused the worker channel's authentication ({reason})")]
    Authentication {
        /// The close reason it gave, or `protocol_error`.
        reason: String,
    },
    /// The server closed the connection.
    #[error("the server closed the worker channel (code {code:?}, reason {reason:?})")]
    Closed {
        /// The close code, when a close frame came.
        code: Option<u16>,
        /// The close reason (`authorization_failed`, `transient_server_error`, ...).
        reason: String,
    },
    /// The server sent something the protocol does not allow (or a ready frame that breaks
    /// the contract).
    #[error("worker channel protocol error: {0}")]
    Protocol(String),
    /// The connection broke without a close frame, or stopped answering pings.
    #[error("the worker channel connection was lost: {0}")]
    ConnectionLost(String),
}

/// What a failure means for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// `false`: terminal (REST for the life of the process).
    pub retryable: bool,
    /// The protocol's reason (`authorization_failed`, `endpoint_unavailable`, ...).
    pub reason: String,
}

impl Disposition {
    fn terminal(reason: &str) -> Self {
        Self {
            retryable: false,
            reason: reason.to_owned(),
        }
    }

    fn retryable(reason: &str) -> Self {
        Self {
            retryable: true,
            reason: reason.to_owned(),
        }
    }
}

/// A close code and reason → terminal or retryable (`classify_closed_connection`): a known
/// reason follows its policy; otherwise 1008 and 1002 are terminal, the rest retryable.
#[must_use]
pub fn classify_close(code: Option<u16>, reason: &str) -> Disposition {
    if let Some((r, _, retryable)) = CLOSE_POLICIES.iter().find(|(r, _, _)| *r == reason) {
        return Disposition {
            retryable: *retryable,
            reason: (*r).to_owned(),
        };
    }
    match code {
        Some(1008) => Disposition::terminal("authorization_failed"),
        Some(1002) => Disposition::terminal("protocol_error"),
        Some(1011) => Disposition::retryable("transient_server_error"),
        _ => Disposition::retryable("connection_lost"),
    }
}

impl ChannelError {
    /// Terminal or retryable, and the reason.
    ///
    /// Upgrade answers follow Python: 401/403 terminal, 404/405 terminal
    /// (`endpoint_unavailable`: a server without the channel), ≥ 500 retryable, any other
    /// status terminal. One deliberate difference: a connection that cannot be made at all
    /// (refused, reset, TLS) is retryable even before the channel was ever healthy, where
    /// Python turns the channel off for good; a worker started during an API outage gets
    /// its channel once the API is back (docs/compatibility.md).
    #[must_use]
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Open(WebSocketError::Rejected { status, .. }) => match status {
                401 => Disposition::terminal("authentication_failed"),
                403 => Disposition::terminal("authorization_failed"),
                500.. => Disposition::retryable("transient_server_error"),
                _ => Disposition::terminal("endpoint_unavailable"),
            },
            Self::Open(WebSocketError::Config { .. }) => {
                Disposition::terminal("endpoint_unavailable")
            }
            Self::Open(WebSocketError::Connect { .. }) | Self::ConnectionLost(_) => {
                Disposition::retryable("connection_lost")
            }
            Self::Open(WebSocketError::Timeout { .. }) | Self::SetupTimeout(_) => {
                Disposition::retryable("setup_timeout")
            }
            Self::Authentication { reason } => Disposition::terminal(reason),
            Self::Closed { code, reason } => classify_close(*code, reason),
            Self::Protocol(_) => Disposition::terminal("protocol_error"),
        }
    }
}

/// The wait before reconnect attempt `attempt` (1-based): `min(base · 2^(attempt-1), max)`,
/// no jitter (Python's `reconnect_delay`).
#[must_use]
pub fn reconnect_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    base.saturating_mul(1u32.checked_shl(exponent).unwrap_or(u32::MAX))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16) -> ChannelError {
        ChannelError::Open(WebSocketError::Rejected {
            path: "/x".into(),
            status,
        })
    }

    #[test]
    fn close_reasons_follow_the_policy_table() {
        for (reason, code, retryable) in CLOSE_POLICIES {
            let d = classify_close(Some(code), reason);
            assert_eq!(d.retryable, retryable, "{reason}");
            assert_eq!(d.reason, reason);
            // The reason wins over the code.
            assert_eq!(classify_close(Some(1000), reason).retryable, retryable);
        }
        assert_eq!(
            classify_close(Some(1008), "other"),
            Disposition::terminal("authorization_failed")
        );
        assert_eq!(
            classify_close(Some(1002), ""),
            Disposition::terminal("protocol_error")
        );
        assert_eq!(
            classify_close(Some(1011), ""),
            Disposition::retryable("transient_server_error")
        );
        assert_eq!(
            classify_close(Some(1000), ""),
            Disposition::retryable("connection_lost")
        );
        assert_eq!(
            classify_close(None, ""),
            Disposition::retryable("connection_lost")
        );
    }

    #[test]
    fn upgrade_statuses() {
        assert_eq!(rejected(401).disposition().reason, "authentication_failed");
        assert_eq!(rejected(403).disposition().reason, "authorization_failed");
        for s in [404, 405, 400, 426] {
            assert_eq!(
                rejected(s).disposition(),
                Disposition::terminal("endpoint_unavailable"),
                "{s}"
            );
        }
        for s in [500, 502, 503] {
            assert!(rejected(s).disposition().retryable, "{s}");
        }
    }

    #[test]
    fn other_failures() {
        assert!(
            ChannelError::SetupTimeout(Duration::from_secs(10))
                .disposition()
                .retryable
        );
        assert!(
            ChannelError::Open(WebSocketError::Connect {
                path: "/x".into(),
                message: "refused".into()
            })
            .disposition()
            .retryable
        );
        assert!(
            !ChannelError::Open(WebSocketError::Config {
                path: "/x".into(),
                message: "bad".into()
            })
            .disposition()
            .retryable
        );
        assert_eq!(
            ChannelError::Protocol("x".into()).disposition(),
            Disposition::terminal("protocol_error")
        );
        assert_eq!(
            ChannelError::Authentication {
                reason: "authentication_failed".into()
            }
            .disposition(),
            Disposition::terminal("authentication_failed")
        );
        assert!(
            ChannelError::ConnectionLost("eof".into())
                .disposition()
                .retryable
        );
    }

    #[test]
    fn reconnect_back_off_doubles_to_30s_without_jitter() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<u64> = (1..=7)
            .map(|a| reconnect_delay(a, b, m).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(reconnect_delay(1000, b, m), m);
        assert_eq!(reconnect_delay(0, b, m), b);
    }
}
