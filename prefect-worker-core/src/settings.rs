//! Where the worker's `PREFECT_*` settings come from, and the worker's own settings.
//!
//! Precedence, as Prefect's: command-line flag > process environment > active profile >
//! default. Flags are the binary's business; this module merges the environment over the
//! profile ([`SettingsSources`]) and parses the settings the runner needs
//! ([`WorkerSettings`]). Nothing here reads the process environment except
//! [`SettingsSources::from_process`], so every rule is testable with plain maps.

pub mod events;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;

/// The worker process's view of its environment (env vars over the active profile), in the
/// order they should be considered. Only `PREFECT_*` core settings from it reach jobs
/// (see `settings_env_order.tsv`), and `{{ $NAME }}` placeholders read it.
pub type Environment = IndexMap<String, String>;

/// A setting could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The profiles file exists but is not valid TOML of the expected shape.
    #[error(
        "cannot read Prefect profiles file {path}: {reason}. Fix the file or point PREFECT_PROFILES_PATH elsewhere"
    )]
    ReadProfiles {
        /// The profiles file.
        path: PathBuf,
        /// Why it could not be read or parsed.
        reason: String,
    },
    /// `PREFECT_PROFILE` names a profile the file does not have.
    #[error(
        "profile {name:?} (from PREFECT_PROFILE) is not in {path}; create it with `prefect profile create` or unset PREFECT_PROFILE"
    )]
    UnknownProfile {
        /// The profile asked for.
        name: String,
        /// The profiles file searched.
        path: PathBuf,
    },
    /// A setting has a value of the wrong type. The value itself is not repeated, since
    /// it may be a secret.
    #[error("setting {key} has an invalid value: expected {expected}")]
    InvalidValue {
        /// The setting's name, e.g. `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`.
        key: String,
        /// What kind of value it takes, e.g. `a boolean`.
        expected: &'static str,
    },
}

/// The environment and the active profile, merged with the environment winning.
#[derive(Debug, Clone, Default)]
pub struct SettingsSources {
    env: IndexMap<String, String>,
    profile: IndexMap<String, String>,
    profile_name: Option<String>,
}

impl SettingsSources {
    /// Sources from explicit maps (tests, embedding applications).
    #[must_use]
    pub fn new(env: IndexMap<String, String>, profile: IndexMap<String, String>) -> Self {
        Self {
            env,
            profile,
            profile_name: None,
        }
    }

    /// The process environment and the active profile of `PREFECT_PROFILES_PATH`
    /// (default `~/.prefect/profiles.toml`). A missing profiles file is no error.
    pub fn from_process() -> Result<Self, SettingsError> {
        let env: IndexMap<String, String> = std::env::vars().collect();
        let path = env
            .get("PREFECT_PROFILES_PATH")
            .map(PathBuf::from)
            .or_else(|| {
                let home = env
                    .get("PREFECT_HOME")
                    .map(PathBuf::from)
                    .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".prefect")))?;
                Some(home.join("profiles.toml"))
            });
        let (profile_name, profile) = match path {
            Some(p) => load_profile(&p, env.get("PREFECT_PROFILE").map(String::as_str))?,
            None => (None, IndexMap::new()),
        };
        Ok(Self {
            env,
            profile,
            profile_name,
        })
    }

    /// The name of the active profile, when one was loaded.
    #[must_use]
    pub fn profile_name(&self) -> Option<&str> {
        self.profile_name.as_deref()
    }

    /// The value of `key`: the environment's, else the profile's. Empty values count as set,
    /// as in pydantic-settings.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .or_else(|| self.profile.get(key))
            .map(String::as_str)
    }

    /// The first of `keys` that is set (a setting and its aliases).
    #[must_use]
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// Parses `key` with [`FromStr`]; `None` when unset.
    pub fn parse<T: FromStr>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, SettingsError> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|_| SettingsError::InvalidValue {
                        key: key.to_owned(),
                        expected,
                    })
            })
            .transpose()
    }

    /// Parses a boolean the way pydantic does (`true/false`, `1/0`, `yes/no`, `on/off`, any case).
    pub fn parse_bool(&self, key: &str) -> Result<Option<bool>, SettingsError> {
        self.get(key)
            .map(|v| parse_bool(v).ok_or_else(|| invalid(key, "a boolean (true/false)")))
            .transpose()
    }

    /// What jobs and `{{ $NAME }}` placeholders see: the profile's values under the
    /// environment's (environment wins, profile-only keys come after).
    #[must_use]
    pub fn environment(&self) -> Environment {
        let mut out: Environment = self.env.clone();
        for (k, v) in &self.profile {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out
    }
}

fn invalid(key: &str, expected: &'static str) -> SettingsError {
    SettingsError::InvalidValue {
        key: key.to_owned(),
        expected,
    }
}

/// pydantic's lenient boolean parsing.
#[must_use]
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Reads the active profile (`selected`, else the file's `active`) of a Prefect
/// `profiles.toml`. Returns its name and its `PREFECT_*` values as strings.
pub fn load_profile(
    path: &Path,
    selected: Option<&str>,
) -> Result<(Option<String>, IndexMap<String, String>), SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, IndexMap::new())),
        Err(e) => {
            return Err(SettingsError::ReadProfiles {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let doc: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| SettingsError::ReadProfiles {
                path: path.to_owned(),
                reason: e.message().to_owned(),
            })?;
    let active = selected.map(str::to_owned).or_else(|| {
        doc.get("active")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    let Some(name) = active else {
        return Ok((None, IndexMap::new()));
    };
    let profiles = doc.get("profiles").and_then(|p| p.as_table());
    let Some(table) = profiles
        .and_then(|p| p.get(&name))
        .and_then(|t| t.as_table())
    else {
        if selected.is_some() {
            return Err(SettingsError::UnknownProfile {
                name,
                path: path.to_owned(),
            });
        }
        return Ok((Some(name), IndexMap::new()));
    };
    let values = table
        .iter()
        .map(|(k, v)| {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Boolean(b) => if *b { "true" } else { "false" }.to_owned(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect();
    Ok((Some(name), values))
}

/// The settings of the worker process itself (spec §7), with Prefect's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// `PREFECT_API_URL`.
    pub api_url: Option<String>,
    /// `PREFECT_WORKER_HEARTBEAT_SECONDS` (30): sync and heartbeat interval.
    pub heartbeat_interval: Duration,
    /// `PREFECT_WORKER_QUERY_SECONDS` (10): poll interval; the health window is 30 × this.
    pub query_interval: Duration,
    /// `PREFECT_WORKER_PREFETCH_SECONDS` (10), truncated to whole seconds like Python.
    pub prefetch_seconds: u64,
    /// `PREFECT_WORKER_CANCELLATION_POLL_SECONDS` (120 in Python; see docs/compatibility.md).
    pub cancellation_poll_interval: Duration,
    /// `PREFECT_WORKER_WEBSERVER_HOST` (`0.0.0.0`).
    pub webserver_host: String,
    /// `PREFECT_WORKER_WEBSERVER_PORT` (8080).
    pub webserver_port: u16,
    /// `PREFECT_LOGGING_TO_API_ENABLED` (true).
    pub logging_to_api_enabled: bool,
    /// `PREFECT_LOGGING_TO_API_BATCH_INTERVAL` (2 s).
    pub logging_to_api_batch_interval: Duration,
    /// `PREFECT_LOGGING_TO_API_MAX_LOG_SIZE` (1,000,000 bytes).
    pub logging_to_api_max_log_size: usize,
    /// `PREFECT_WORKER_DEBUG_MODE` (false).
    pub debug_mode: bool,
    /// `PREFECT_WORKER_ENABLE_CANCELLATION`: the runner's own cancellation loop (kill the
    /// infrastructure of CANCELLING runs it started, then set Cancelled). Unset means on
    /// here (Python's default is off and its loop only covers runs still being submitted;
    /// see docs/compatibility.md); `false` turns it off, leaving Job teardown to the
    /// server's cancelling-timeout cleanup delivered over the worker channel.
    pub enable_cancellation: bool,
    /// `PREFECT_WORKER_CHANNEL_ENABLED` (true): use the 3.9 worker channel websocket when the
    /// server offers it. Upstream has no such setting (the channel is opportunistic there);
    /// `false` keeps the worker on REST heartbeats and pool reads, without cleanup delivery.
    pub channel_enabled: bool,
    /// `PREFECT_WORKER_EVENTS_ENABLED` (true), `PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE`,
    /// `PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED` (true).
    pub events: events::EventsOptions,
}

impl Default for WorkerSettings {
    /// Prefect 3.9.1's defaults, except the cancellation poll (see the field).
    fn default() -> Self {
        Self {
            api_url: None,
            heartbeat_interval: Duration::from_secs(30),
            query_interval: Duration::from_secs(10),
            prefetch_seconds: 10,
            cancellation_poll_interval: Duration::from_secs(10),
            webserver_host: "0.0.0.0".to_owned(),
            webserver_port: 8080,
            logging_to_api_enabled: true,
            logging_to_api_batch_interval: Duration::from_secs(2),
            logging_to_api_max_log_size: 1_000_000,
            debug_mode: false,
            enable_cancellation: true,
            channel_enabled: true,
            events: events::EventsOptions::default(),
        }
    }
}

impl WorkerSettings {
    /// Reads every setting from `sources`, falling back to the defaults.
    pub fn from_sources(sources: &SettingsSources) -> Result<Self, SettingsError> {
        let d = Self::default();
        let secs = |key: &str, default: Duration| -> Result<Duration, SettingsError> {
            match sources.parse::<f64>(key, "a number of seconds")? {
                Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
                Some(_) => Err(invalid(key, "a positive number of seconds")),
                None => Ok(default),
            }
        };
        Ok(Self {
            api_url: sources
                .get("PREFECT_API_URL")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            heartbeat_interval: secs("PREFECT_WORKER_HEARTBEAT_SECONDS", d.heartbeat_interval)?,
            query_interval: secs("PREFECT_WORKER_QUERY_SECONDS", d.query_interval)?,
            prefetch_seconds: match sources
                .parse::<f64>("PREFECT_WORKER_PREFETCH_SECONDS", "a number of seconds")?
            {
                // Python truncates with int(); negative look-ahead makes no sense.
                Some(s) if s.is_finite() && s >= 0.0 => s.trunc() as u64,
                Some(_) => {
                    return Err(invalid(
                        "PREFECT_WORKER_PREFETCH_SECONDS",
                        "a number of seconds ≥ 0",
                    ));
                }
                None => d.prefetch_seconds,
            },
            cancellation_poll_interval: secs(
                "PREFECT_WORKER_CANCELLATION_POLL_SECONDS",
                d.cancellation_poll_interval,
            )?,
            webserver_host: sources
                .get("PREFECT_WORKER_WEBSERVER_HOST")
                .map_or(d.webserver_host, str::to_owned),
            webserver_port: sources
                .parse("PREFECT_WORKER_WEBSERVER_PORT", "a port number")?
                .unwrap_or(d.webserver_port),
            logging_to_api_enabled: sources
                .parse_bool("PREFECT_LOGGING_TO_API_ENABLED")?
                .unwrap_or(true),
            logging_to_api_batch_interval: secs(
                "PREFECT_LOGGING_TO_API_BATCH_INTERVAL",
                d.logging_to_api_batch_interval,
            )?,
            logging_to_api_max_log_size: sources
                .parse("PREFECT_LOGGING_TO_API_MAX_LOG_SIZE", "a size in bytes")?
                .unwrap_or(d.logging_to_api_max_log_size),
            debug_mode: sources
                .parse_bool("PREFECT_WORKER_DEBUG_MODE")?
                .unwrap_or(false),
            enable_cancellation: sources
                .parse_bool("PREFECT_WORKER_ENABLE_CANCELLATION")?
                .unwrap_or(d.enable_cancellation),
            channel_enabled: sources
                .parse_bool("PREFECT_WORKER_CHANNEL_ENABLED")?
                .unwrap_or(d.channel_enabled),
            events: events::EventsOptions::from_sources(sources)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_wins_over_profile_and_profile_over_default() {
        let s = SettingsSources::new(
            map(&[("PREFECT_WORKER_QUERY_SECONDS", "3")]),
            map(&[
                ("PREFECT_WORKER_QUERY_SECONDS", "7"),
                ("PREFECT_WORKER_HEARTBEAT_SECONDS", "9"),
            ]),
        );
        let w = WorkerSettings::from_sources(&s).unwrap();
        assert_eq!(w.query_interval, Duration::from_secs(3));
        assert_eq!(w.heartbeat_interval, Duration::from_secs(9));
        assert_eq!(w.prefetch_seconds, 10);
    }

    #[test]
    fn invalid_values_name_the_setting_but_not_the_value() {
        let s = SettingsSources::new(
            map(&[("PREFECT_WORKER_QUERY_SECONDS", "sekrit")]),
            IndexMap::new(),
        );
        let e = WorkerSettings::from_sources(&s).unwrap_err().to_string();
        assert!(e.contains("PREFECT_WORKER_QUERY_SECONDS"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
    }

    #[test]
    fn cancellation_loop_and_channel_are_on_unless_turned_off() {
        let w = WorkerSettings::from_sources(&SettingsSources::default()).unwrap();
        assert!(w.enable_cancellation && w.channel_enabled);
        let s = SettingsSources::new(
            map(&[
                ("PREFECT_WORKER_ENABLE_CANCELLATION", "false"),
                ("PREFECT_WORKER_CHANNEL_ENABLED", "0"),
            ]),
            IndexMap::new(),
        );
        let w = WorkerSettings::from_sources(&s).unwrap();
        assert!(!w.enable_cancellation && !w.channel_enabled);
        let s = SettingsSources::new(
            map(&[("PREFECT_WORKER_CHANNEL_ENABLED", "maybe")]),
            IndexMap::new(),
        );
        let e = WorkerSettings::from_sources(&s).unwrap_err().to_string();
        assert!(e.contains("PREFECT_WORKER_CHANNEL_ENABLED"), "{e}");
    }

    #[test]
    fn prefetch_is_truncated_like_python_int() {
        let s = SettingsSources::new(
            map(&[("PREFECT_WORKER_PREFETCH_SECONDS", "12.9")]),
            IndexMap::new(),
        );
        assert_eq!(
            WorkerSettings::from_sources(&s).unwrap().prefetch_seconds,
            12
        );
    }

    #[test]
    fn profiles_file_active_and_selected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profiles.toml");
        std::fs::write(
            &p,
            "active = \"a\"\n[profiles.a]\nPREFECT_API_URL = \"http://a/api\"\nPREFECT_WORKER_DEBUG_MODE = true\n[profiles.b]\nPREFECT_API_URL = \"http://b/api\"\n",
        )
        .unwrap();
        let (name, vals) = load_profile(&p, None).unwrap();
        assert_eq!(name.as_deref(), Some("a"));
        assert_eq!(vals["PREFECT_API_URL"], "http://a/api");
        assert_eq!(vals["PREFECT_WORKER_DEBUG_MODE"], "true");
        let (_, vals) = load_profile(&p, Some("b")).unwrap();
        assert_eq!(vals["PREFECT_API_URL"], "http://b/api");
        assert!(matches!(
            load_profile(&p, Some("zz")),
            Err(SettingsError::UnknownProfile { .. })
        ));
        assert!(
            load_profile(&dir.path().join("none.toml"), None)
                .unwrap()
                .1
                .is_empty()
        );
    }

    #[test]
    fn environment_merges_profile_under_env() {
        let s = SettingsSources::new(map(&[("A", "env")]), map(&[("A", "prof"), ("B", "prof")]));
        let e = s.environment();
        assert_eq!(e["A"], "env");
        assert_eq!(e["B"], "prof");
    }
}
