//! prefect-kubernetes worker settings (`PREFECT_INTEGRATIONS_KUBERNETES_*`, spec §7).

use std::time::Duration;

use prefect_worker_core::settings::{SettingsError, SettingsSources, parse_bool};

/// How the Kubernetes worker handles secrets, Job creation retries and pending pods.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// `WORKER_API_KEY_SECRET_NAME` / `_KEY`: take `PREFECT_API_KEY` from this existing Secret.
    pub api_key_secret: Option<(String, Option<String>)>,
    /// `WORKER_API_AUTH_STRING_SECRET_NAME` / `_KEY`: take `PREFECT_API_AUTH_STRING` from it.
    pub auth_string_secret: Option<(String, String)>,
    /// `WORKER_CREATE_SECRET_FOR_API_KEY`: upsert `prefect-<worker>-api-key` and reference it.
    pub create_secret_for_api_key: bool,
    /// `WORKER_STORE_ENV_AS_SECRET`: move the Job's plain env into a Secret owned by the Job.
    pub store_env_as_secret: bool,
    /// `WORKER_CREATE_JOB_RETRY_MAX_RETRIES` (3): attempts in total.
    pub create_job_attempts: u32,
    /// `WORKER_CREATE_JOB_RETRY_DELAY_SECONDS` (1).
    pub create_job_retry_delay: Duration,
    /// `WORKER_CREATE_JOB_RETRY_JITTER_MIN_SECONDS` / `_MAX_SECONDS` (0, 3).
    pub create_job_retry_jitter: (Duration, Duration),
    /// `WORKER_PENDING_TIMEOUT_SECONDS` (unset): crash runs whose pod waits on scheduling
    /// (Unschedulable, quota) this long. Unset: wait, since autoscalers take minutes.
    pub pending_timeout: Option<Duration>,
    /// `OBSERVER_FORWARD_CRASHED_RUN_LOGS` (true): forward the tail of a crashed run's
    /// pod logs to the flow run's logs.
    pub forward_crashed_run_logs: bool,
    /// `OBSERVER_FORWARD_CRASHED_RUN_LOGS_TAIL_LINES` (500): how many lines of that tail.
    pub crashed_run_log_tail_lines: i64,
    /// Extra namespaces to look in for Jobs to adopt at startup (`WORKER_ADOPT_NAMESPACES`,
    /// comma-separated), besides the pool's default namespace.
    pub adopt_namespaces: Vec<String>,
    /// `WORKER_MAX_LOG_STREAMS` (50): most `stream_output` pod log streams open at once.
    /// Each is a connection to the API server; runs beyond it are tracked as usual but
    /// their output is not copied to stdout (one warning says so). `0`: none.
    pub max_log_streams: usize,
    /// `OBSERVER_REPLICATE_POD_EVENTS` (true): emit `prefect.kubernetes.pod.*` events.
    /// `OBSERVER_ENABLED=false` turns them off too (in Python it turns the whole observer
    /// off; run outcomes here do not depend on it).
    pub replicate_pod_events: bool,
    /// `OBSERVER_STARTUP_EVENT_CONCURRENCY` (5): most server lookups at once for pods first
    /// seen in a list.
    pub startup_event_concurrency: usize,
}

impl Default for KubernetesSettings {
    /// prefect-kubernetes 0.8.0's defaults.
    fn default() -> Self {
        Self {
            api_key_secret: None,
            auth_string_secret: None,
            create_secret_for_api_key: false,
            store_env_as_secret: false,
            create_job_attempts: 3,
            create_job_retry_delay: Duration::from_secs(1),
            create_job_retry_jitter: (Duration::ZERO, Duration::from_secs(3)),
            pending_timeout: None,
            forward_crashed_run_logs: true,
            crashed_run_log_tail_lines: 500,
            adopt_namespaces: Vec::new(),
            max_log_streams: DEFAULT_MAX_LOG_STREAMS,
            replicate_pod_events: true,
            startup_event_concurrency: 5,
        }
    }
}

/// Enough for following a few dozen runs live; a log collector reads pods' logs itself.
pub const DEFAULT_MAX_LOG_STREAMS: usize = 50;

const P: &str = "PREFECT_INTEGRATIONS_KUBERNETES_";

fn key(suffix: &str) -> String {
    format!("{P}{suffix}")
}

fn get<'a>(s: &'a SettingsSources, suffix: &str) -> Option<&'a str> {
    s.get(&key(suffix)).filter(|v| !v.is_empty())
}

fn boolean(s: &SettingsSources, names: &[String], default: bool) -> Result<bool, SettingsError> {
    for n in names {
        if let Some(v) = s.get(n) {
            return parse_bool(v).ok_or_else(|| SettingsError::InvalidValue {
                key: n.clone(),
                expected: "a boolean (true/false)",
            });
        }
    }
    Ok(default)
}

fn seconds(s: &SettingsSources, suffix: &str) -> Result<Option<Duration>, SettingsError> {
    let k = key(suffix);
    match s.parse::<f64>(&k, "a number of seconds")? {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(_) => Err(SettingsError::InvalidValue {
            key: k,
            expected: "a number of seconds ≥ 0",
        }),
        None => Ok(None),
    }
}

impl KubernetesSettings {
    /// Reads the settings from `sources`, with the defaults for what is unset.
    pub fn from_sources(s: &SettingsSources) -> Result<Self, SettingsError> {
        let d = Self::default();
        let attempts = match s.parse::<u32>(
            &key("WORKER_CREATE_JOB_RETRY_MAX_RETRIES"),
            "a whole number ≥ 1",
        )? {
            Some(0) => {
                return Err(SettingsError::InvalidValue {
                    key: key("WORKER_CREATE_JOB_RETRY_MAX_RETRIES"),
                    expected: "a whole number ≥ 1",
                });
            }
            Some(n) => n,
            None => d.create_job_attempts,
        };
        let tail = match s.parse::<i64>(
            &key("OBSERVER_FORWARD_CRASHED_RUN_LOGS_TAIL_LINES"),
            "a whole number ≥ 1",
        )? {
            Some(n) if n >= 1 => n,
            Some(_) => {
                return Err(SettingsError::InvalidValue {
                    key: key("OBSERVER_FORWARD_CRASHED_RUN_LOGS_TAIL_LINES"),
                    expected: "a whole number ≥ 1",
                });
            }
            None => d.crashed_run_log_tail_lines,
        };
        let concurrency = match s.parse::<usize>(
            &key("OBSERVER_STARTUP_EVENT_CONCURRENCY"),
            "a whole number ≥ 1",
        )? {
            Some(0) => {
                return Err(SettingsError::InvalidValue {
                    key: key("OBSERVER_STARTUP_EVENT_CONCURRENCY"),
                    expected: "a whole number ≥ 1",
                });
            }
            Some(n) => n,
            None => d.startup_event_concurrency,
        };
        Ok(Self {
            replicate_pod_events: boolean(s, &[key("OBSERVER_ENABLED")], true)?
                && boolean(s, &[key("OBSERVER_REPLICATE_POD_EVENTS")], true)?,
            startup_event_concurrency: concurrency,
            api_key_secret: get(s, "WORKER_API_KEY_SECRET_NAME").map(|n| {
                (
                    n.to_owned(),
                    get(s, "WORKER_API_KEY_SECRET_KEY").map(str::to_owned),
                )
            }),
            auth_string_secret: match (
                get(s, "WORKER_API_AUTH_STRING_SECRET_NAME"),
                get(s, "WORKER_API_AUTH_STRING_SECRET_KEY"),
            ) {
                (Some(n), Some(k)) => Some((n.to_owned(), k.to_owned())),
                _ => None,
            },
            create_secret_for_api_key: boolean(
                s,
                &[
                    key("WORKER_CREATE_SECRET_FOR_API_KEY"),
                    "PREFECT_KUBERNETES_WORKER_STORE_PREFECT_API_IN_SECRET".into(),
                ],
                false,
            )?,
            store_env_as_secret: boolean(s, &[key("WORKER_STORE_ENV_AS_SECRET")], false)?,
            create_job_attempts: attempts,
            create_job_retry_delay: seconds(s, "WORKER_CREATE_JOB_RETRY_DELAY_SECONDS")?
                .unwrap_or(d.create_job_retry_delay),
            create_job_retry_jitter: (
                seconds(s, "WORKER_CREATE_JOB_RETRY_JITTER_MIN_SECONDS")?
                    .unwrap_or(d.create_job_retry_jitter.0),
                seconds(s, "WORKER_CREATE_JOB_RETRY_JITTER_MAX_SECONDS")?
                    .unwrap_or(d.create_job_retry_jitter.1),
            ),
            pending_timeout: seconds(s, "WORKER_PENDING_TIMEOUT_SECONDS")?.filter(|d| !d.is_zero()),
            forward_crashed_run_logs: boolean(
                s,
                &[key("OBSERVER_FORWARD_CRASHED_RUN_LOGS")],
                true,
            )?,
            crashed_run_log_tail_lines: tail,
            adopt_namespaces: get(s, "WORKER_ADOPT_NAMESPACES")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            max_log_streams: s
                .parse::<usize>(&key("WORKER_MAX_LOG_STREAMS"), "a whole number ≥ 0")?
                .unwrap_or(d.max_log_streams),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn sources(pairs: &[(&str, &str)]) -> SettingsSources {
        SettingsSources::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            IndexMap::new(),
        )
    }

    #[test]
    fn defaults_and_aliases() {
        let s = KubernetesSettings::from_sources(&sources(&[])).unwrap();
        assert_eq!(s, KubernetesSettings::default());
        let s = KubernetesSettings::from_sources(&sources(&[
            (
                "PREFECT_KUBERNETES_WORKER_STORE_PREFECT_API_IN_SECRET",
                "true",
            ),
            (
                "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_PENDING_TIMEOUT_SECONDS",
                "90",
            ),
            (
                "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_NAME",
                "only-name",
            ),
        ]))
        .unwrap();
        assert!(s.create_secret_for_api_key);
        assert_eq!(s.max_log_streams, DEFAULT_MAX_LOG_STREAMS);
        assert_eq!(s.pending_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.auth_string_secret, None, "both name and key are needed");
        for (k, v) in [
            (
                "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_REPLICATE_POD_EVENTS",
                "false",
            ),
            ("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED", "0"),
        ] {
            let s = KubernetesSettings::from_sources(&sources(&[(k, v)])).unwrap();
            assert!(!s.replicate_pod_events, "{k}");
        }
        let s = KubernetesSettings::from_sources(&sources(&[(
            "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_STARTUP_EVENT_CONCURRENCY",
            "2",
        )]))
        .unwrap();
        assert_eq!(s.startup_event_concurrency, 2);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = KubernetesSettings::from_sources(&sources(&[(
            "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_CREATE_JOB_RETRY_MAX_RETRIES",
            "0",
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("WORKER_CREATE_JOB_RETRY_MAX_RETRIES"), "{e}");
    }
}
