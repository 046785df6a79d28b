//! Parsing a `/metrics` exposition with the official Prometheus Python client's parsers
//! (`prometheus_client`, installed in the repo's venv as a Prefect dependency): the strict
//! OpenMetrics parser, or the Prometheus text format 0.0.4 parser. A real parser, so a
//! test that reads values also proves the exposition is well-formed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Which parser to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

/// One sample: its full name (`x_total`, `x_bucket`, ...), labels and value.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family as the parser sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub samples: Vec<Sample>,
}

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
families = [
    {"name": f.name, "type": f.type,
     "samples": [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in f.samples]}
    for f in parse(sys.stdin.read())
]
json.dump(families, sys.stdout, allow_nan=False)
"#;

/// Parses `text` with the Python client's parser for `format`; a malformed exposition
/// is an error carrying the parser's message.
pub fn parse(text: &str, format: Format) -> Result<Vec<Family>> {
    let python = prefect_test_harness::venv_python();
    let arg = match format {
        Format::OpenMetrics => "openmetrics",
        Format::PrometheusText => "prometheus",
    };
    let mut child = Command::new(&python)
        .args(["-c", PARSER, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    child
        .stdin
        .take()
        .context("parser stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the {arg} parser rejected the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The parsed families, with look-ups by sample name and labels.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub families: Vec<Family>,
}

impl Exposition {
    pub fn parse(text: &str, format: Format) -> Result<Self> {
        Ok(Self {
            families: parse(text, format)?,
        })
    }

    /// Every sample.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The sum of the samples named `name` whose labels include every `(key, value)`;
    /// `None` when there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples().filter(|s| s.name == name) {
            if labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// [`Exposition::value`], 0 when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether a family (by its family name) or a sample of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.families
            .iter()
            .any(|f| f.name == name || f.samples.iter().any(|s| s.name == name))
    }
}
