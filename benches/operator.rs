//! Benchmark of the operator itself: the real controllers
//! (`server_manager::controller::operator::run`) against the embedded API
//! server started in-process, with the playbook runner's execution replaced by
//! an instant executor and the image push by an instant engine — ONLY here —
//! so that what is measured is the operator and its API traffic.
//!
//! Measures, for N Servers (default 1,000; `cargo bench --bench operator -- 250`):
//! - time from the operator's start to every Server `Ready` (all N created
//!   beforehand: first installs, which no rollout budget limits);
//! - API requests per Server during convergence, counted client-side by a
//!   tower layer on the operator's kube client, by verb and resource;
//! - requests in 10 s of idleness afterwards (the target is zero writes);
//! - the latency from creating one more Server to its first status write and
//!   to `Ready`, while N exist (5 samples);
//! - the operator's RSS (`VmRSS`) as its own process: the operator runs in a
//!   child process (this benchmark re-executed with `SM_BENCH_OPERATOR_KUBECONFIG`
//!   set), which talks to the API server over HTTP exactly as `server-manager
//!   operator` does; the parent reads the child's counters over a pipe and its
//!   RSS from `/proc/<pid>/status`.
//!
//! Figures in `benches/RESULTS.md` (`## Operator`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use server_manager::apiserver::{ApiServer, ApiServerConfig};
use server_manager::controller::Settings;
use server_manager::controller::image::{EngineError, ImageEngine, ProgressFn, Pushed};
use server_manager::controller::operator::{self, OperatorConfig};
use server_manager::controller::server::provisioner::{ProvisionError, Provisioner, RunHandle};
use server_manager::crd::{ConditionStatus, Image, ImageSpec, Server};
use server_manager::runner::api::{ContainerState, Playbook, RunRequest, RunState, RunStatus};

const LATENCY_SAMPLES: usize = 5;
const IDLE: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(2);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(280);
/// Set in the child process that runs the operator: the kubeconfig's path.
const CHILD_ENV: &str = "SM_BENCH_OPERATOR_KUBECONFIG";

/// What the operator's child process reports on request.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Report {
    total: u64,
    writes: u64,
    kinds: BTreeMap<String, u64>,
    runs_started: u64,
    distinct_keys: usize,
}

/// The child: the operator on a counted client, with the instant executor and
/// engine. Reads commands from stdin (`report`: one JSON line on stdout;
/// `stop` or end of input: stops the operator and exits).
async fn child(kubeconfig: String) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("client config");
    let counters = Arc::new(Counters::default());
    let counted = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&CountLayer(counters.clone()))
        .build();
    let runner = Arc::new(InstantRunner::default());
    let config = OperatorConfig {
        settings: Settings {
            registry: server_manager::registry::RegistryConfig {
                address: "127.0.0.1:5000".into(),
                insecure: true,
                ..Default::default()
            },
            drift_interval: None,
            backoff: Default::default(),
            playbook_version: "bench".into(),
        },
        health_addr: None,
        leader: None,
        concurrency: 16,
        instance: "bench".into(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(operator::run(
        counted,
        config,
        Arc::new(InstantEngine),
        runner.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() != "report" {
            break;
        }
        let (total, writes, kinds) = counters.snapshot();
        let report = Report {
            total,
            writes,
            kinds,
            runs_started: runner.started.load(Ordering::Relaxed),
            distinct_keys: runner.keys.lock().map(|k| k.len()).unwrap_or(0),
        };
        let mut json = serde_json::to_string(&report).expect("report");
        json.push('\n');
        out.write_all(json.as_bytes()).await.expect("stdout");
        out.flush().await.expect("stdout");
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), op).await;
}

/// The parent's end of the child: asks for reports, reads its RSS.
struct OperatorProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pid: String,
}

impl OperatorProcess {
    fn spawn(kubeconfig: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD_ENV, kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("operator process");
        let pid = child.id().expect("pid").to_string();
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        use tokio::io::AsyncBufReadExt;
        Self {
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout).lines(),
            pid,
        }
    }

    async fn report(&mut self) -> Report {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(b"report\n").await.expect("ask");
        self.stdin.flush().await.expect("ask");
        let line = self.stdout.next_line().await.expect("read").expect("line");
        serde_json::from_str(&line).expect("report json")
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(&self.pid)
    }

    async fn stop(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stdin.write_all(b"stop\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

// ---------------------------------------------------------------------------
// Request counting: a tower layer on the operator's client.

#[derive(Default)]
struct Counters {
    by_kind: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
    writes: AtomicU64,
}

impl Counters {
    fn record(&self, method: &hyper::Method, uri: &hyper::Uri) {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let resource = segments
            .iter()
            .find(|s| {
                [
                    "servers", "clusters", "images", "secrets", "events", "leases",
                ]
                .contains(s)
            })
            .copied()
            .unwrap_or("other");
        let sub = if segments.last() == Some(&"status") {
            "/status"
        } else {
            ""
        };
        let query = uri.query().unwrap_or("");
        let verb = if *method == hyper::Method::GET {
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1")
            {
                "WATCH"
            } else {
                "GET"
            }
        } else {
            self.writes.fetch_add(1, Ordering::Relaxed);
            method.as_str()
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(format!("{verb} {resource}{sub}")).or_default() += 1;
        }
    }

    fn snapshot(&self) -> (u64, u64, BTreeMap<String, u64>) {
        (
            self.total.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.by_kind.lock().map(|m| m.clone()).unwrap_or_default(),
        )
    }
}

#[derive(Clone)]
struct CountLayer(Arc<Counters>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counters: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S, B> tower::Service<hyper::Request<B>> for Counted<S>
where
    S: tower::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        self.counters.record(req.method(), req.uri());
        self.inner.call(req)
    }
}

// ---------------------------------------------------------------------------
// The instant executor and image engine (this benchmark only).

#[derive(Default)]
struct InstantRunner {
    started: AtomicU64,
    polled: AtomicU64,
    /// Idempotency keys seen: the real runner returns the run already queued
    /// or running for a key; an instant run is never either, so every start
    /// here is a new run.
    keys: Mutex<std::collections::HashSet<String>>,
    /// Per run id, the containers its request names: an instant run reports
    /// them running since long ago (available at once).
    containers: Mutex<HashMap<String, Vec<String>>>,
}

#[async_trait::async_trait]
impl Provisioner for InstantRunner {
    async fn start(&self, request: &RunRequest) -> Result<RunHandle, ProvisionError> {
        if let (Ok(mut keys), Some(k)) = (self.keys.lock(), &request.idempotency_key) {
            keys.insert(k.clone());
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let id = format!("instant-{n}");
        let names = request
            .vars
            .roles
            .iter()
            .map(|r| format!("{}{}", request.vars.container_prefix, r.name))
            .collect();
        if let Ok(mut c) = self.containers.lock() {
            c.insert(id.clone(), names);
        }
        Ok(RunHandle {
            id,
            runner: "instant".into(),
        })
    }
    async fn status(&self, run: &RunHandle) -> Result<Option<RunStatus>, ProvisionError> {
        self.polled.fetch_add(1, Ordering::Relaxed);
        let now = jiff::Timestamp::now().to_string();
        Ok(Some(RunStatus {
            id: run.id.clone(),
            playbook: Playbook::Provision,
            host: "bench".into(),
            port: 22,
            state: RunState::Succeeded,
            return_code: Some(0),
            created: now.clone(),
            started: Some(now.clone()),
            finished: Some(now),
            tasks_done: 1,
            tasks_total: 1,
            current_task: None,
            failed_task: None,
            message: None,
            changed: 1,
            recap: None,
            lost: false,
            containers: Some(
                self.containers
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&run.id).cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|name| ContainerState {
                        name,
                        image_id: "sha256:bench".into(),
                        status: "running".into(),
                        started_at: Some("2026-01-01T00:00:00Z".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }))
    }
}

struct InstantEngine;

#[async_trait::async_trait]
impl ImageEngine for InstantEngine {
    async fn push(
        &self,
        spec: &ImageSpec,
        _source_credentials: Option<server_manager::registry::Credentials>,
        _progress: ProgressFn,
    ) -> Result<Pushed, EngineError> {
        Ok(Pushed {
            reference: format!(
                "127.0.0.1:5000/{}-{}:{}",
                spec.image_id, spec.image_type, spec.version
            ),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 1,
            bytes_uploaded: 0,
        })
    }
    async fn remove(&self, _spec: &ImageSpec) -> Result<(), EngineError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn server_manifest(i: usize) -> Server {
    serde_json::from_value(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Server",
        "metadata": { "name": format!("bench-{i:05}"), "namespace": "default" },
        "spec": {
            "clusterRef": { "name": "bench" },
            "host": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
            "ssh": { "secretRef": { "name": "bench-ssh" } },
            "roles": ["agent"],
        }
    }))
    .expect("server manifest")
}

fn is_ready(s: &Server) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

/// What the observer's watch saw, per Server name.
#[derive(Default)]
struct Seen {
    first_status: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

fn main() {
    if let Ok(kubeconfig) = std::env::var(CHILD_ENV) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(child(kubeconfig));
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(n));
}

async fn bench(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = ApiServer::start(ApiServerConfig::new(dir.path())).expect("API server");
    let kubeconfig = dir.path().join("bench-kubeconfig");
    std::fs::write(&kubeconfig, handle.kubeconfig()).expect("kubeconfig");
    server_manager::standalone::install_crds(&handle)
        .await
        .expect("CRDs");
    // The harness's own client (not counted).
    let plain = Client::try_from(handle.client_config()).expect("client");

    let secrets: Api<Secret> = Api::namespaced(plain.clone(), "default");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("bench-ssh".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "ssh-privatekey".to_string(),
                k8s_openapi::ByteString(
                    b"-----BEGIN OPENSSH PRIVATE KEY-----\nbench\n-----END OPENSSH PRIVATE KEY-----\n"
                        .to_vec(),
                ),
            ),
            (
                "known_hosts".to_string(),
                k8s_openapi::ByteString(b"10.0.0.1 ssh-ed25519 AAAAbench\n".to_vec()),
            ),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let clusters: Api<server_manager::crd::Cluster> = Api::namespaced(plain.clone(), "default");
    // compute_nodes is set explicitly: otherwise each added agent changes the
    // role file of every other agent (that cost is the rollout's, measured by
    // the convergence, not by the first-reconcile latency).
    let cluster = serde_json::from_value(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Cluster",
        "metadata": { "name": "bench" },
        "spec": {
            "images": { "agent": "agent-bench", "controller": "controller-bench" },
            "parameters": { "GLOBAL": { "compute_nodes": "10.255.0.1" } }
        }
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    let images: Api<Image> = Api::namespaced(plain.clone(), "default");
    for role in ["agent", "controller"] {
        let image: Image = serde_json::from_value(json!({
            "apiVersion": "servermanager.contrail.io/v1alpha1",
            "kind": "Image",
            "metadata": { "name": format!("{role}-bench") },
            "spec": {
                "category": "container",
                "imageId": "contrail-container",
                "imageType": role,
                "version": "1",
                "source": { "path": "/nonexistent/bench.tar" }
            }
        }))
        .expect("image");
        images
            .create(&PostParams::default(), &image)
            .await
            .expect("create image");
    }
    let servers: Api<Server> = Api::namespaced(plain.clone(), "default");
    let external: Server = serde_json::from_value(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Server",
        "metadata": { "name": "bench-ext-ctrl" },
        "spec": {
            "clusterRef": { "name": "bench" },
            "host": "10.0.0.10",
            "provisioning": "External",
            "roles": ["controller"]
        }
    }))
    .expect("external");
    servers
        .create(&PostParams::default(), &external)
        .await
        .expect("create external");

    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let servers = servers.clone();
            async move {
                servers
                    .create(&PostParams::default(), &server_manifest(i))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create servers");
    let create_time = created.elapsed();

    // The observer: one watch, recording when each Server first got a status
    // and when it became Ready.
    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let seen = seen.clone();
        let api = servers.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(s)) = stream.next().await {
                let now = Instant::now();
                let name = s.name_any();
                if let Ok(mut seen) = seen.lock() {
                    if s.status.is_some() {
                        seen.first_status.entry(name.clone()).or_insert(now);
                    }
                    if is_ready(&s) {
                        seen.ready.entry(name).or_insert(now);
                    }
                }
            }
        });
    }

    // The operator, in its own process.
    let started = Instant::now();
    let mut op = OperatorProcess::spawn(&kubeconfig);

    let bench_names = |seen: &Seen| {
        seen.ready
            .keys()
            .filter(|k| k.starts_with("bench-0"))
            .count()
    };
    let mut halfway = None;
    loop {
        let ready = seen.lock().map(|s| bench_names(&s)).unwrap_or(0);
        if halfway.is_none() && ready >= n / 2 {
            halfway = Some(started.elapsed());
        }
        if ready >= n {
            break;
        }
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "only {ready}/{n} Servers Ready after {CONVERGE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_ready = seen
        .lock()
        .ok()
        .and_then(|s| s.ready.values().max().copied())
        .unwrap_or_else(Instant::now);
    let converge = last_ready.duration_since(started);
    let conv = op.report().await;
    let (conv_total, conv_writes, conv_kinds) = (conv.total, conv.writes, conv.kinds.clone());
    let (runs_started, distinct_keys) = (conv.runs_started, conv.distinct_keys);
    let rss_after = op.rss_kib();

    // Idle: nothing changes, nothing should be written. The window opens
    // SETTLE after the last Server is Ready: the Cluster's summary follows its
    // Servers at most every 500 ms, and its last write belongs to convergence.
    tokio::time::sleep(SETTLE).await;
    let settled = op.report().await;
    tokio::time::sleep(IDLE).await;
    let idle = op.report().await;
    let (idle_total, idle_writes, idle_kinds) = (idle.total, idle.writes, idle.kinds.clone());
    let idle_detail: Vec<String> = idle_kinds
        .iter()
        .filter_map(|(k, v)| {
            let d = v - settled.kinds.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k} ×{d}"))
        })
        .collect();
    let (idle_total, idle_writes) = (idle_total - settled.total, idle_writes - settled.writes);
    let idle_runs = idle.runs_started - settled.runs_started;

    // One more Server, while N exist: first status write and Ready.
    let mut samples = Vec::new();
    for k in 0..LATENCY_SAMPLES {
        let i = n + k;
        let name = format!("bench-{i:05}");
        let t0 = Instant::now();
        servers
            .create(&PostParams::default(), &server_manifest(i))
            .await
            .expect("create extra server");
        loop {
            let got = seen
                .lock()
                .ok()
                .and_then(|s| Some((*s.first_status.get(&name)?, *s.ready.get(&name)?)));
            if let Some((first, ready)) = got {
                samples.push((first.duration_since(t0), ready.duration_since(t0)));
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} not Ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let rss_end = op.rss_kib();
    op.stop().await;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .expect("API server shutdown");

    // Report.
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!("\n## Operator benchmark: {n} Servers (instant executor and image engine)\n");
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| creating {n} Servers (16 at a time, before the operator starts) | {:.2} s |",
        create_time.as_secs_f64()
    );
    println!(
        "| operator start → all {n} Ready | **{:.2} s** ({:.0} Servers/s; half Ready at {:.2} s) |",
        converge.as_secs_f64(),
        n as f64 / converge.as_secs_f64().max(1e-9),
        halfway.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| runs started during convergence (distinct idempotency keys) | {runs_started} ({distinct_keys}) |"
    );
    println!(
        "| API requests during convergence (operator client) | {conv_total} total, {conv_writes} writes |"
    );
    println!(
        "| API requests per Server | **{:.2}** ({:.2} writes) |",
        conv_total as f64 / n as f64,
        conv_writes as f64 / n as f64
    );
    println!(
        "| idle {} s, from {} s after the last Server Ready | {idle_total} requests, {idle_writes} writes, {idle_runs} runs ({}) |",
        IDLE.as_secs(),
        SETTLE.as_secs(),
        idle_detail.join(", ")
    );
    let mut firsts: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut readys: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    firsts.sort();
    readys.sort();
    println!(
        "| new Server while {n} exist: create → first status write (median, max of {LATENCY_SAMPLES}) | **{}**, {} |",
        ms(firsts[firsts.len() / 2]),
        ms(firsts[firsts.len() - 1])
    );
    println!(
        "| new Server while {n} exist: create → Ready (median, max of {LATENCY_SAMPLES}) | {}, {} |",
        ms(readys[readys.len() / 2]),
        ms(readys[readys.len() - 1])
    );
    println!(
        "| operator RSS as its own process: after convergence / end | **{:.1} MiB** / {:.1} MiB |",
        rss_after as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!("\nRequests during convergence, by verb and resource:\n");
    println!("| request | count | per Server |");
    println!("|---|---|---|");
    for (k, v) in &conv_kinds {
        println!("| {k} | {v} | {:.2} |", *v as f64 / n as f64);
    }
}
