//! Rendering a kubeconfig that points kube-rs or kubectl at the simulator.

use base64::Engine as _;
use serde_json::json;

use crate::error::SimError;

/// Render a kubeconfig with one cluster, user and context, all named
/// `context_name`, and that context current.
pub fn render(
    server_url: &str,
    context_name: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> Result<String, SimError> {
    let mut cluster = json!({"server": server_url});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = base64::engine::general_purpose::STANDARD
            .encode(ca.as_bytes())
            .into();
    }
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context_name, "cluster": cluster}],
        "users": [{"name": context_name, "user": user}],
        "contexts": [{"name": context_name, "context": {"cluster": context_name, "user": context_name, "namespace": "default"}}],
        "current-context": context_name,
    });
    Ok(serde_yaml::to_string(&doc)?)
}
