//! Benchmark of the embedded API server, run against the real
//! `server-manager standalone` binary over HTTPS with the kube-rs client:
//! creates/s, updates/s, watch delivery latency (p50/p99) with 10 watchers, and
//! the server's RSS with 10,000 objects stored.
//!
//! `cargo bench --bench apiserver` (figures in `benches/RESULTS.md`).
//! `APISERVER_BENCH_BIN=PATH` runs another `server-manager` binary (an older
//! build, for a before/after comparison driven by the same client).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// `APISERVER_BENCH_OBJECTS=N` stores N objects instead (a quicker run).
const OBJECTS_DEFAULT: usize = 10_000;
const CONCURRENCY: usize = 8;
const UPDATES_MAX: usize = 2_000;
const LATENCY_SAMPLES: usize = 300;
const WATCHERS: usize = 10;

fn config(kubeconfig: &Path) -> kube::Config {
    use base64::Engine;
    let doc: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).expect("kubeconfig"))
            .expect("yaml");
    let cluster = &doc["clusters"][0]["cluster"];
    let mut config = kube::Config::new(
        cluster["server"]
            .as_str()
            .expect("server")
            .parse()
            .expect("url"),
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().expect("ca"))
        .expect("b64");
    let b64: String = String::from_utf8(pem)
        .expect("pem")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    config.root_cert = Some(vec![
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("der"),
    ]);
    config.auth_info.token = Some(
        doc["users"][0]["user"]["token"]
            .as_str()
            .expect("token")
            .to_string()
            .into(),
    );
    config
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn cm(name: &str, i: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "shard": (i % 16).to_string()}},
        "data": {"i": i.to_string(), "payload": "x".repeat(200)}
    }))
    .expect("cm")
}

async fn run_parallel<F, Fut>(n: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                f(i).await;
                i += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let objects: usize = std::env::var("APISERVER_BENCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(OBJECTS_DEFAULT);
    let updates = UPDATES_MAX.min(objects);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let bin = std::env::var_os("APISERVER_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_server-manager").into());
    let mut child: Child = Command::new(bin)
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--runner-listen",
            "127.0.0.1:0",
        ])
        .args(["--registry-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("standalone");
    while !kubeconfig.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = kube::Client::try_from(config(&kubeconfig)).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rss_empty = rss_kib(child.id());

    // Creates.
    let api = cms.clone();
    let took = run_parallel(objects, move |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &cm(&format!("cm-{i}"), i))
                .await
                .expect("create");
        }
    })
    .await;
    let creates_per_s = objects as f64 / took.as_secs_f64();
    let rss_full = rss_kib(child.id());

    // Updates (read-free replaces of distinct objects via merge patch).
    let api = cms.clone();
    let took = run_parallel(updates, move |i| {
        let api = api.clone();
        async move {
            let patch = json!({"data": {"i": format!("u{i}")}});
            api.patch(
                &format!("cm-{i}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .expect("update");
        }
    })
    .await;
    let updates_per_s = updates as f64 / took.as_secs_f64();

    // Watch latency: 10 watchers, one write at a time, stamped with the send time.
    let origin = Instant::now();
    let rv = cms
        .get("cm-0")
        .await
        .expect("get")
        .resource_version()
        .expect("rv");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let cms = cms.clone();
        let tx = tx.clone();
        let rv = rv.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = cms
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .expect("watch")
                .boxed();
            while let Some(Ok(WatchEvent::Modified(o))) = stream.next().await {
                if let Some(t) = o
                    .data
                    .as_ref()
                    .and_then(|d| d.get("sent"))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let now = origin.elapsed();
                    let _ = tx.send(now.saturating_sub(Duration::from_nanos(t)));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let sent = origin.elapsed().as_nanos() as u64;
        let patch = json!({"data": {"sent": sent.to_string()}});
        cms.patch(
            &format!("cm-{}", i % 100),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .expect("patch");
        for _ in 0..WATCHERS {
            let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("delivery")
                .expect("sample");
            samples.push(d);
        }
    }
    for w in watchers {
        w.abort();
    }
    samples.sort();

    // Listing every object: plain JSON, then as a meta.k8s.io Table (what
    // `kubectl get configmaps` asks for), each the mean of 5 lists.
    let path = "/api/v1/namespaces/default/configmaps";
    let mut list_ms = Vec::new();
    for accept in [
        "application/json",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    ] {
        let t0 = Instant::now();
        for _ in 0..5 {
            let req = hyper::Request::get(path)
                .header("Accept", accept)
                .body(Vec::new())
                .expect("request");
            let body = client.request_text(req).await.expect("list");
            assert!(body.len() > 1000);
        }
        list_ms.push(t0.elapsed().as_secs_f64() * 1e3 / 5.0);
    }
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);

    println!("| measure | value |");
    println!("|---|---|");
    println!("| creates/s ({objects} ConfigMaps, {CONCURRENCY} clients) | {creates_per_s:.0} |");
    println!("| updates/s ({updates} merge patches, {CONCURRENCY} clients) | {updates_per_s:.0} |");
    println!(
        "| watch delivery p50 ({WATCHERS} watchers, {} deliveries) | {:.2} ms |",
        samples.len(),
        p50.as_secs_f64() * 1e3
    );
    println!("| watch delivery p99 | {:.2} ms |", p99.as_secs_f64() * 1e3);
    println!("| list {objects} ConfigMaps, JSON | {:.0} ms |", list_ms[0]);
    println!(
        "| list {objects} ConfigMaps, Table | {:.0} ms |",
        list_ms[1]
    );
    println!(
        "| server RSS, empty (CRDs only) | {:.1} MiB |",
        rss_empty as f64 / 1024.0
    );
    println!(
        "| server RSS with {objects} objects | {:.1} MiB |",
        rss_full as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
