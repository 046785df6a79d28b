//! The "base settings env" every job inherits (spec §3.6 step 1): each core Prefect
//! setting that is set in the worker's environment, under its canonical name, in the
//! settings model's order, with its value re-rendered the way Python renders the parsed
//! setting.
//!
//! The list of settings, their order, aliases and types is data
//! (`data/settings_env_order.tsv`, generated from Prefect 3.9.1).

use indexmap::IndexMap;
use serde_json::Value;

use super::Environment;
use crate::templating::py_float_repr;

const SETTINGS_TSV: &str = include_str!("../../data/settings_env_order.tsv");

/// One core setting: its canonical env var, accepted aliases and Python type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingSpec {
    /// The name emitted into job environments, e.g. `PREFECT_API_URL`.
    pub name: &'static str,
    /// Older names also read from the environment, e.g. `PREFECT_CLIENT_ENABLE_METRICS`.
    pub aliases: Vec<&'static str>,
    /// The Python annotation as text, e.g. `Optional[str]`, `bool`, `float`.
    pub python_type: &'static str,
}

/// All core settings in the order Python emits them.
#[must_use]
pub fn core_settings() -> Vec<SettingSpec> {
    SETTINGS_TSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let _index = cols.next()?;
            let name = cols.next()?;
            let aliases = cols.next().unwrap_or("");
            let python_type = cols.next().unwrap_or("str");
            Some(SettingSpec {
                name,
                aliases: aliases
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .collect(),
                python_type,
            })
        })
        .collect()
}

/// The settings env for a worker whose environment is `env`. Settings whose value would
/// not parse as their type are left out (Python would refuse to start).
#[must_use]
pub fn settings_environment(env: &Environment) -> IndexMap<String, String> {
    // pydantic-settings matches names case-insensitively; the last spelling wins.
    let mut lowered: IndexMap<String, &str> = IndexMap::new();
    for (k, v) in env {
        lowered.insert(k.to_ascii_lowercase(), v.as_str());
    }
    let mut out = IndexMap::new();
    for spec in core_settings() {
        let raw = std::iter::once(spec.name)
            .chain(spec.aliases.iter().copied())
            .find_map(|n| lowered.get(&n.to_ascii_lowercase()).copied());
        if let Some(raw) = raw
            && let Some(rendered) = render_setting(&spec, raw, env)
        {
            out.insert(spec.name.to_owned(), rendered);
        }
    }
    out
}

/// Renders one setting value the way `to_environment_variables` prints the parsed value.
fn render_setting(spec: &SettingSpec, raw: &str, env: &Environment) -> Option<String> {
    let t = spec.python_type;
    match t {
        "bool" | "Optional[bool]" => {
            parse_bool(raw).map(|b| if b { "True" } else { "False" }.to_owned())
        }
        "int" | "Optional[int]" => parse_int(raw).map(|i| i.to_string()),
        "float" | "Optional[float]" | "float | None" => parse_float(raw).map(py_float_repr),
        "Path" => Some(render_path(spec.name, raw, env)),
        "Dict[str, str]" => render_json_dict(raw),
        _ if t.starts_with("Literal['DEBUG'") => Some(raw.to_uppercase()),
        "Union[str, int, set[int], NoneType]" => {
            render_delimited_set(raw, |s| parse_int(s).map(|i| i.to_string()))
        }
        "Union[str, list[str], NoneType]" | "Optional[set[str]]" => {
            render_delimited_set(raw, |s| Some(s.to_owned()))
        }
        // Strings, secrets, URLs (a trailing `/` is kept), durations and the rest are
        // forwarded as given.
        _ => Some(raw.to_owned()),
    }
}

/// pydantic's lax bool parsing of strings.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
        "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
        _ => None,
    }
}

fn parse_int(raw: &str) -> Option<i64> {
    crate::templating::path::py_int(raw)
}

fn parse_float(raw: &str) -> Option<f64> {
    let t = raw.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if t.contains('_') {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Python `str(Path(raw))`, with `~` expanded for `PREFECT_HOME` (its validator calls
/// `expanduser`): repeated and trailing slashes and `.` components disappear.
fn render_path(name: &str, raw: &str, env: &Environment) -> String {
    let mut raw = raw.to_owned();
    if name == "PREFECT_HOME"
        && (raw == "~" || raw.starts_with("~/"))
        && let Some(home) = env.get("HOME")
    {
        raw = format!("{}{}", home.trim_end_matches('/'), &raw[1..]);
    }
    if raw.is_empty() {
        return ".".to_owned();
    }
    let leading = raw.chars().take_while(|c| *c == '/').count();
    let root = match leading {
        0 => "",
        2 => "//",
        _ => "/",
    };
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if root.is_empty() && joined.is_empty() {
        ".".to_owned()
    } else {
        format!("{root}{joined}")
    }
}

/// `json.dumps` of a dict setting (Python's default separators and ASCII escaping).
fn render_json_dict(raw: &str) -> Option<String> {
    let v: Value = serde_json::from_str(raw).ok()?;
    v.is_object().then(|| python_json_dumps(&v))
}

/// A comma-separated set setting: items stripped, parsed, de-duplicated, then sorted by
/// their text and comma-joined.
fn render_delimited_set(raw: &str, parse: impl Fn(&str) -> Option<String>) -> Option<String> {
    if raw.is_empty() {
        return Some(String::new());
    }
    let mut items = raw
        .split(',')
        .map(|s| parse(s.trim()))
        .collect::<Option<Vec<_>>>()?;
    items.sort();
    items.dedup();
    Some(items.join(","))
}

/// Python `json.dumps(value)` with its defaults: `", "` and `": "` separators and
/// non-ASCII escaped as `\uXXXX`.
#[must_use]
pub fn python_json_dumps(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match py_float_repr(f).as_str() {
                    "inf" => "Infinity".to_owned(),
                    "-inf" => "-Infinity".to_owned(),
                    "nan" => "NaN".to_owned(),
                    s => s.to_owned(),
                }
            }
        },
        Value::String(s) => json_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_json_dumps)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", json_str(k), python_json_dumps(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn table_is_complete_and_ordered() {
        let all = core_settings();
        assert_eq!(all.len(), 227);
        assert_eq!(all[0].name, "PREFECT_HOME");
        assert_eq!(all[3].name, "PREFECT_API_URL");
    }

    #[test]
    fn only_core_settings_in_model_order_with_canonical_names() {
        let e = env(&[
            ("PREFECT_LOGGING_LEVEL", "debug"),
            ("PREFECT_API_KEY", "k"),
            ("PREFECT_API_URL", "http://x/api/"),
            ("PREFECT_CLIENT_ENABLE_METRICS", "yes"),
            ("PREFECT_INTEGRATIONS_KUBERNETES_CLUSTER_UID", "u"),
            ("PREFECT__FLOW_RUN_ID", "x"),
            ("PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR", "reschedule"),
            ("PREFECT_API_REQUEST_TIMEOUT", "5"),
            ("PREFECT_CLIENT_RETRY_EXTRA_CODES", "503, 429,429"),
            ("PREFECT_CLIENT_CUSTOM_HEADERS", r#"{"X-A":"é","b":1}"#),
            ("HOME", "/root"),
        ]);
        let out: Vec<(String, String)> = settings_environment(&e).into_iter().collect();
        let want = [
            ("PREFECT_API_URL", "http://x/api/"),
            ("PREFECT_API_KEY", "k"),
            ("PREFECT_API_REQUEST_TIMEOUT", "5.0"),
            ("PREFECT_CLIENT_RETRY_EXTRA_CODES", "429,503"),
            (
                "PREFECT_CLIENT_CUSTOM_HEADERS",
                r#"{"X-A": "\u00e9", "b": 1}"#,
            ),
            ("PREFECT_CLIENT_METRICS_ENABLED", "True"),
            ("PREFECT_LOGGING_LEVEL", "DEBUG"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn paths_normalise_like_pathlib() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            render_path("PREFECT_HOME", "~/.prefect/", &e),
            "/home/u/.prefect"
        );
        assert_eq!(render_path("X", "a//b/./c/", &e), "a/b/c");
        assert_eq!(render_path("X", "///x", &e), "/x");
        assert_eq!(render_path("X", "//x", &e), "//x");
    }
}
