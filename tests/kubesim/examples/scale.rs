//! Scale measurement: 2,000 Jobs with their pods, then 200 concurrently
//! running container processes (`sleep`), against one simulator through
//! kube-rs. Prints time to create, time to complete, RSS and CPU.
//!
//! `cargo run --release -p kubesim --example scale [-- JOBS PROCS]`
// A measurement tool: panicking on a failed step is the right answer, and it prints its report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

fn proc_stat() -> (u64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (rss_kb / 1024, ticks as f64 / 100.0)
}

fn job(name: &str, image: &str, command: Option<Vec<String>>) -> Job {
    let mut v = serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "scale"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image}]
        }}}
    });
    if let Some(c) = command {
        v["spec"]["template"]["spec"]["containers"][0]["command"] = serde_json::json!(c);
    }
    serde_json::from_value(v).unwrap()
}

fn complete(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

async fn create_all(api: &Api<Job>, jobs: Vec<Job>) -> Duration {
    let t = Instant::now();
    // 16 requests in flight: a busy client, not a flood.
    futures::stream::iter(jobs)
        .for_each_concurrent(16, |j| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &j).await.unwrap();
            }
        })
        .await;
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_jobs = args.first().copied().unwrap_or(2000);
    let n_procs = args.get(1).copied().unwrap_or(200);
    let sim = kubesim::SimCluster::builder()
        .build()
        .start()
        .await
        .unwrap();
    let yaml = sim.kubeconfig_yaml("scale").unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&yaml).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (rss0, cpu0) = proc_stat();
    println!("start: rss {rss0} MiB");

    // Phase 1: N Jobs with scripted 2s containers (no processes).
    let specs = (0..n_jobs)
        .map(|i| job(&format!("scripted-{i}"), "sim/sleep:2", None))
        .collect();
    let created = create_all(&jobs, specs).await;
    let t = Instant::now();
    loop {
        let done = sim
            .list::<Job>(Some("default"))
            .iter()
            .filter(|j| complete(j))
            .count();
        if done == n_jobs {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {done}/{n_jobs} complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let completed = t.elapsed();
    let t = Instant::now();
    let listed = jobs.list(&Default::default()).await.unwrap().items.len();
    let list_time = t.elapsed();
    let t = Instant::now();
    let listed_pods = pods.list(&Default::default()).await.unwrap().items.len();
    let pod_list_time = t.elapsed();
    let (rss1, cpu1) = proc_stat();
    println!(
        "{n_jobs} scripted jobs: create {:.2}s ({:.0}/s), all Complete {:.2}s after; list {listed} jobs {:.0}ms, {listed_pods} pods {:.0}ms; rss {rss1} MiB; cpu {:.1}s",
        created.as_secs_f64(),
        n_jobs as f64 / created.as_secs_f64(),
        completed.as_secs_f64(),
        list_time.as_secs_f64() * 1000.0,
        pod_list_time.as_secs_f64() * 1000.0,
        cpu1 - cpu0
    );

    // Phase 2: M Jobs running a real `sleep` concurrently.
    let specs = (0..n_procs)
        .map(|i| {
            job(
                &format!("proc-{i}"),
                "busybox",
                Some(vec!["sleep".into(), "8".into()]),
            )
        })
        .collect();
    let t = Instant::now();
    let created = create_all(&jobs, specs).await;
    let mut peak = 0;
    while peak < n_procs {
        peak = peak.max(sim.running_processes());
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "only {peak}/{n_procs} processes running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_running = t.elapsed();
    let (rss2, cpu2) = proc_stat();
    loop {
        let done = sim
            .list::<Job>(Some("default"))
            .iter()
            .filter(|j| complete(j))
            .count();
        if done == n_jobs + n_procs {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "only {done} complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (rss3, cpu3) = proc_stat();
    println!(
        "{n_procs} process jobs: create {:.2}s, all {n_procs} processes running {:.2}s after start; all Complete {:.2}s; rss {rss2} MiB while running, {rss3} MiB after; cpu {:.1}s (phase), {:.1}s total",
        created.as_secs_f64(),
        all_running.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        cpu3 - cpu1,
        cpu3 - cpu0
    );
    let _ = cpu2;

    // Cleanup through the API: Background deletion of everything.
    let t = Instant::now();
    jobs.delete_collection(&DeleteParams::background(), &Default::default())
        .await
        .unwrap();
    while !sim.list::<Pod>(Some("default")).is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "delete all jobs + pods: {:.2}s; store holds {} events",
        t.elapsed().as_secs_f64(),
        sim.list::<k8s_openapi::api::core::v1::Event>(None).len()
    );
    sim.shutdown().await;
}
