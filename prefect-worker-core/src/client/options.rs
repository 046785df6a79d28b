//! How to reach the Prefect API: [`ClientOptions`], its defaults (spec §1/§7) and the
//! mapping from `PREFECT_*` settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use super::error::ClientError;
use super::maintenance::MaintenanceTracker;
use super::secret::Secret;

/// How to reach the API. Build with [`ClientOptions::new`] and the `with_*` methods, or
/// from settings with [`ClientOptions::from_env`].
///
/// `Default` is Prefect's defaults with an empty `api_url`:
/// no credentials, no custom headers, CSRF support on, TLS verified against the built-in
/// roots, 60 s timeouts, 5 retries (6 attempts), jitter factor 0.2, no extra retry codes,
/// HTTP/1.1 only, a 1 s back-off base (`2^attempt` × base), and Prefect Cloud at
/// `https://api.prefect.cloud/api`.
#[derive(Clone)]
pub struct ClientOptions {
    /// `PREFECT_API_URL`, for example `http://host:4200/api`.
    pub api_url: String,
    /// `PREFECT_API_KEY`, sent as `Authorization: Bearer` unless an auth string is set.
    pub api_key: Option<Secret>,
    /// `PREFECT_API_AUTH_STRING` (`user:pass`), sent as `Authorization: Basic`; wins over the key.
    pub auth_string: Option<Secret>,
    /// `PREFECT_CLIENT_CUSTOM_HEADERS`. `User-Agent` and the CSRF headers are ignored.
    pub custom_headers: IndexMap<String, String>,
    /// `PREFECT_CLIENT_CSRF_SUPPORT_ENABLED`.
    pub csrf_support_enabled: bool,
    /// `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`.
    pub tls_insecure_skip_verify: bool,
    /// `PREFECT_API_SSL_CERT_FILE` (or `SSL_CERT_FILE`): a PEM bundle that replaces the
    /// built-in roots, as it replaces certifi in Python.
    pub ssl_cert_file: Option<PathBuf>,
    /// `PREFECT_API_REQUEST_TIMEOUT`: the connect timeout and the read (idle) timeout.
    pub request_timeout: Duration,
    /// `PREFECT_CLIENT_MAX_RETRIES`: retries after the first attempt.
    pub max_retries: u32,
    /// `PREFECT_CLIENT_RETRY_JITTER_FACTOR`; `0` disables jitter.
    pub retry_jitter_factor: f64,
    /// `PREFECT_CLIENT_RETRY_EXTRA_CODES`: statuses retried besides 408/429/502/503.
    pub retry_extra_codes: Vec<u16>,
    /// `PREFECT_API_ENABLE_HTTP2`.
    pub enable_http2: bool,
    /// The exponential back-off unit: attempt `n` waits `2^n × retry_base_delay` (jittered)
    /// when the server sent no `Retry-After`. One second in production; tests shrink it.
    pub retry_base_delay: Duration,
    /// Where maintenance back-offs are recorded; share it with the health check.
    pub maintenance: MaintenanceTracker,
    /// `PREFECT_CLOUD_API_URL`: an API URL starting with it is Prefect Cloud.
    pub cloud_api_url: String,
}

/// Prefect's default `PREFECT_CLOUD_API_URL`.
pub const DEFAULT_CLOUD_API_URL: &str = "https://api.prefect.cloud/api";

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            api_url: String::new(),
            api_key: None,
            auth_string: None,
            custom_headers: IndexMap::new(),
            csrf_support_enabled: true,
            tls_insecure_skip_verify: false,
            ssl_cert_file: None,
            request_timeout: Duration::from_secs(60),
            max_retries: 5,
            retry_jitter_factor: 0.2,
            retry_extra_codes: Vec::new(),
            enable_http2: false,
            retry_base_delay: Duration::from_secs(1),
            maintenance: MaintenanceTracker::new(),
            cloud_api_url: DEFAULT_CLOUD_API_URL.to_owned(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    // Hand-written so custom header values (which may carry proxy tokens) never print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key)
            .field("auth_string", &self.auth_string)
            .field(
                "custom_headers",
                &self.custom_headers.keys().collect::<Vec<_>>(),
            )
            .field("csrf_support_enabled", &self.csrf_support_enabled)
            .field("tls_insecure_skip_verify", &self.tls_insecure_skip_verify)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_jitter_factor", &self.retry_jitter_factor)
            .field("retry_extra_codes", &self.retry_extra_codes)
            .field("enable_http2", &self.enable_http2)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("cloud_api_url", &self.cloud_api_url)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// Defaults for `api_url`.
    #[must_use]
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            ..Self::default()
        }
    }

    /// Sets the API key (Bearer auth).
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the basic-auth string (`user:pass`); it wins over the key.
    #[must_use]
    pub fn with_auth_string(mut self, auth: impl Into<Secret>) -> Self {
        self.auth_string = Some(auth.into());
        self
    }

    /// Adds one custom header.
    #[must_use]
    pub fn with_custom_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.custom_headers.insert(name.into(), value.into());
        self
    }

    /// Turns CSRF token support on or off.
    #[must_use]
    pub fn with_csrf_support(mut self, enabled: bool) -> Self {
        self.csrf_support_enabled = enabled;
        self
    }

    /// Skips TLS certificate verification.
    #[must_use]
    pub fn with_tls_insecure_skip_verify(mut self, skip: bool) -> Self {
        self.tls_insecure_skip_verify = skip;
        self
    }

    /// Trusts the CAs of this PEM file instead of the built-in roots.
    #[must_use]
    pub fn with_ssl_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_cert_file = Some(path.into());
        self
    }

    /// Sets the connect and read timeouts.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the jitter factor (`0` = none).
    #[must_use]
    pub fn with_retry_jitter_factor(mut self, factor: f64) -> Self {
        self.retry_jitter_factor = factor;
        self
    }

    /// Sets the extra retried status codes.
    #[must_use]
    pub fn with_retry_extra_codes(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.retry_extra_codes = codes.into_iter().collect();
        self
    }

    /// Allows HTTP/2 (negotiated by ALPN over TLS).
    #[must_use]
    pub fn with_http2(mut self, enabled: bool) -> Self {
        self.enable_http2 = enabled;
        self
    }

    /// Sets the exponential back-off unit (tests use milliseconds).
    #[must_use]
    pub fn with_retry_base_delay(mut self, base: Duration) -> Self {
        self.retry_base_delay = base;
        self
    }

    /// Sets `PREFECT_CLOUD_API_URL` (tests point it at a stub that answers as Cloud).
    #[must_use]
    pub fn with_cloud_api_url(mut self, url: impl Into<String>) -> Self {
        self.cloud_api_url = url.into();
        self
    }

    /// Records maintenance back-offs in `tracker` (shared with the health check).
    #[must_use]
    pub fn with_maintenance_tracker(mut self, tracker: MaintenanceTracker) -> Self {
        self.maintenance = tracker;
        self
    }

    /// Reads the `PREFECT_*` settings of spec §7 through `env` (a pure lookup: pass the
    /// process env, a profile merged over it, or a map in tests). Unset or empty values
    /// keep their defaults; `PREFECT_API_URL` unset leaves `api_url` empty.
    ///
    /// # Errors
    /// [`ClientError::Config`] naming the setting when a value does not parse. Values of
    /// secrets and custom headers are never echoed.
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, ClientError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut o = Self::default();
        if let Some(url) = get("PREFECT_API_URL") {
            o.api_url = url.trim().to_owned();
        }
        o.api_key = get("PREFECT_API_KEY").map(Secret::from);
        o.auth_string = get("PREFECT_API_AUTH_STRING").map(Secret::from);
        if let Some(v) = get("PREFECT_CLIENT_CUSTOM_HEADERS") {
            o.custom_headers = parse_custom_headers(&v)?;
        }
        if let Some(v) = get("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED") {
            o.csrf_support_enabled = parse_bool("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", &v)?;
        }
        if let Some(v) = get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY") {
            o.tls_insecure_skip_verify = parse_bool("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", &v)?;
        }
        o.ssl_cert_file = get("PREFECT_API_SSL_CERT_FILE")
            .or_else(|| get("SSL_CERT_FILE"))
            .map(PathBuf::from);
        if let Some(v) = get("PREFECT_API_REQUEST_TIMEOUT") {
            o.request_timeout = parse_seconds("PREFECT_API_REQUEST_TIMEOUT", &v)?;
        }
        if let Some(v) = get("PREFECT_CLIENT_MAX_RETRIES") {
            o.max_retries = v
                .trim()
                .parse()
                .map_err(|_| invalid("PREFECT_CLIENT_MAX_RETRIES", &v))?;
        }
        if let Some(v) = get("PREFECT_CLIENT_RETRY_JITTER_FACTOR") {
            o.retry_jitter_factor = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| invalid("PREFECT_CLIENT_RETRY_JITTER_FACTOR", &v))?;
        }
        if let Some(v) = get("PREFECT_CLIENT_RETRY_EXTRA_CODES") {
            o.retry_extra_codes = parse_codes(&v)?;
        }
        if let Some(v) = get("PREFECT_API_ENABLE_HTTP2") {
            o.enable_http2 = parse_bool("PREFECT_API_ENABLE_HTTP2", &v)?;
        }
        if let Some(v) = get("PREFECT_CLOUD_API_URL") {
            o.cloud_api_url = v.trim().to_owned();
        }
        Ok(o)
    }
}

fn invalid(name: &str, value: &str) -> ClientError {
    ClientError::Config(format!("{name}: cannot parse {value:?}"))
}

/// Pydantic's lenient booleans.
fn parse_bool(name: &str, value: &str) -> Result<bool, ClientError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err(invalid(name, value)),
    }
}

fn parse_seconds(name: &str, value: &str) -> Result<Duration, ClientError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| invalid(name, value))
}

/// `"500,504"`, `"[500, 504]"` or `"{500,504}"` (a comma-separated list or a set).
fn parse_codes(value: &str) -> Result<Vec<u16>, ClientError> {
    let inner = value
        .trim()
        .trim_start_matches(['[', '{'])
        .trim_end_matches([']', '}']);
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_matches(['"', '\''])
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| invalid("PREFECT_CLIENT_RETRY_EXTRA_CODES", value))
        })
        .collect()
}

/// A JSON object of string values. The value is not echoed: headers may carry tokens.
fn parse_custom_headers(value: &str) -> Result<IndexMap<String, String>, ClientError> {
    let bad = |why: &str| ClientError::Config(format!("PREFECT_CLIENT_CUSTOM_HEADERS: {why}"));
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|_| bad("not valid JSON"))?;
    let obj = parsed.as_object().ok_or_else(|| bad("not a JSON object"))?;
    obj.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad(&format!("the value of header {k:?} is not a string"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_match_prefect() {
        let o = ClientOptions::from_env(&lookup(&[])).unwrap();
        assert_eq!(o.request_timeout, Duration::from_secs(60));
        assert_eq!(o.max_retries, 5);
        assert!((o.retry_jitter_factor - 0.2).abs() < f64::EPSILON);
        assert!(o.csrf_support_enabled && !o.enable_http2 && !o.tls_insecure_skip_verify);
        assert!(o.api_key.is_none() && o.auth_string.is_none() && o.custom_headers.is_empty());
    }

    #[test]
    fn reads_every_setting() {
        let o = ClientOptions::from_env(&lookup(&[
            ("PREFECT_API_URL", "http://h:4200/api"),
            ("PREFECT_API_KEY", "k"),
            ("PREFECT_API_AUTH_STRING", "u:p"),
            (
                "PREFECT_CLIENT_CUSTOM_HEADERS",
                r#"{"X-A": "1", "X-B": "2"}"#,
            ),
            ("PREFECT_CLIENT_CSRF_SUPPORT_ENABLED", "False"),
            ("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "yes"),
            ("SSL_CERT_FILE", "/etc/ca.pem"),
            ("PREFECT_API_REQUEST_TIMEOUT", "2.5"),
            ("PREFECT_CLIENT_MAX_RETRIES", "2"),
            ("PREFECT_CLIENT_RETRY_JITTER_FACTOR", "0"),
            ("PREFECT_CLIENT_RETRY_EXTRA_CODES", "{500, 504}"),
            ("PREFECT_API_ENABLE_HTTP2", "1"),
        ]))
        .unwrap();
        assert_eq!(o.api_url, "http://h:4200/api");
        assert_eq!(o.api_key.as_ref().map(Secret::expose), Some("k"));
        assert_eq!(o.auth_string.as_ref().map(Secret::expose), Some("u:p"));
        assert_eq!(o.custom_headers.get("X-B").map(String::as_str), Some("2"));
        assert!(!o.csrf_support_enabled && o.tls_insecure_skip_verify && o.enable_http2);
        assert_eq!(o.ssl_cert_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.request_timeout, Duration::from_millis(2500));
        assert_eq!(o.max_retries, 2);
        assert_eq!(o.retry_extra_codes, vec![500, 504]);
    }

    #[test]
    fn prefect_cert_file_wins_over_ssl_cert_file() {
        let o = ClientOptions::from_env(&lookup(&[
            ("PREFECT_API_SSL_CERT_FILE", "/a.pem"),
            ("SSL_CERT_FILE", "/b.pem"),
        ]))
        .unwrap();
        assert_eq!(o.ssl_cert_file, Some(PathBuf::from("/a.pem")));
    }

    #[test]
    fn bad_values_name_the_setting_but_not_header_values() {
        let e = ClientOptions::from_env(&lookup(&[("PREFECT_CLIENT_MAX_RETRIES", "many")]))
            .unwrap_err();
        assert!(e.to_string().contains("PREFECT_CLIENT_MAX_RETRIES"));
        let e = ClientOptions::from_env(&lookup(&[(
            "PREFECT_CLIENT_CUSTOM_HEADERS",
            r#"{"X": "tok", "Y": 1}"#,
        )]))
        .unwrap_err();
        assert!(!e.to_string().contains("tok"));
        assert!(
            ClientOptions::from_env(&lookup(&[("PREFECT_CLIENT_RETRY_EXTRA_CODES", "5000")]))
                .is_err()
        );
    }

    #[test]
    fn debug_hides_secrets_and_header_values() {
        let o = ClientOptions::new("http://h/api")
            .with_api_key("pnu_secret")
            .with_auth_string("user:hunter2")
            .with_custom_header("X-Proxy", "proxy-token");
        let dbg = format!("{o:?}");
        for s in ["pnu_secret", "hunter2", "proxy-token"] {
            assert!(!dbg.contains(s), "{s} leaked into {dbg}");
        }
        assert!(dbg.contains("X-Proxy"));
    }
}
