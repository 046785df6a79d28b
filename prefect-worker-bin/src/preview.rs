//! `prefect-worker preview`: the job configuration the worker would build, without
//! creating anything. Offline from a golden-case input; online from the server.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use prefect_worker_core::client::models::{FlowRun, RawFields};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::job_config::{
    JobConfiguration, PrepareContext, Versions, resolve_for_flow_run,
};
use prefect_worker_core::settings::SettingsSources;
use prefect_worker_kubernetes::configuration::default_base_job_template;
use prefect_worker_kubernetes::{KubernetesWorkerJobConfiguration, preview_from_golden_input};
use serde_json::Value;

use crate::args::PreviewArgs;
use crate::start::write_stdout;

pub async fn preview(args: PreviewArgs) -> Result<ExitCode> {
    if let Some(path) = &args.input {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--input: cannot read {}", path.display()))?;
        let input: Value = serde_json::from_str(&text)
            .with_context(|| format!("--input: {} is not valid JSON", path.display()))?;
        let configuration = preview_from_golden_input(&input)
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.type_name()))?;
        write_stdout(&serde_json::to_string_pretty(&configuration)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(pool), Some(deployment)) = (&args.pool, &args.deployment) else {
        bail!("preview needs --input FILE (offline), or --pool and --deployment (online)");
    };
    let sources = SettingsSources::from_process()?;
    let client = PrefectClient::new(ClientOptions::from_env(&|k: &str| {
        sources.get(k).map(str::to_owned)
    })?)?;
    let mut work_pool = client
        .read_work_pool(pool)
        .await
        .with_context(|| format!("reading work pool '{pool}'"))?;
    if work_pool.base_job_template.is_empty()
        && let Value::Object(m) = default_base_job_template()
    {
        work_pool.base_job_template = m;
    }
    let dep = match uuid::Uuid::parse_str(deployment) {
        Ok(id) => client.read_deployment(id).await,
        Err(_) => {
            let Some((flow, name)) = deployment.split_once('/') else {
                bail!("--deployment must be a deployment id or 'flow-name/deployment-name'");
            };
            client.read_deployment_by_name(flow, name).await
        }
    }
    .with_context(|| format!("reading deployment '{deployment}'"))?;
    let flow_id = dep.flow_id.context("the deployment has no flow_id")?;
    let flow = client
        .read_flow(flow_id)
        .await
        .context("reading the deployment's flow")?;
    let job_variables = match &args.job_variables {
        Some(s) => {
            match serde_json::from_str::<Value>(s).context("--job-variables is not valid JSON")? {
                Value::Object(m) => Some(m),
                _ => bail!(
                    "--job-variables must be a JSON object, e.g. '{{\"image\": \"repo/img:tag\"}}'"
                ),
            }
        }
        None => None,
    };
    let flow_run = FlowRun {
        id: uuid::Uuid::new_v4(),
        name: "preview-run".to_owned(),
        flow_id,
        deployment_id: Some(dep.id),
        work_queue_id: None,
        work_queue_name: None,
        job_variables,
        tags: Vec::new(),
        state: None,
        start_time: None,
        infrastructure_pid: None,
        extra: RawFields::new(),
    };
    let environment = sources.environment();
    let versions = Versions::default();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| "preview-worker".to_owned());
    let ctx = PrepareContext {
        flow_run: &flow_run,
        deployment: Some(&dep),
        flow: Some(&flow),
        work_pool: &work_pool,
        worker_name: &name,
        worker_id: None,
        environment: &environment,
        versions: &versions,
    };
    let configuration: KubernetesWorkerJobConfiguration =
        resolve_for_flow_run(&work_pool.base_job_template, &ctx, &client)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.type_name()))?;
    let manifest = configuration
        .to_json()
        .get("job_manifest")
        .cloned()
        .unwrap_or(Value::Null);
    write_stdout(&serde_json::to_string_pretty(&manifest)?)?;
    Ok(ExitCode::SUCCESS)
}
