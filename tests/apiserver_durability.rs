//! Durability of the real `server-manager standalone` binary: `kill -9` during a
//! stream of creates loses no create that was answered 201, resourceVersions
//! keep increasing after the restart, and SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::apiserver::config_from_kubeconfig;

/// Starts standalone; the receiver gets a message once it has printed its
/// banner (everything started, SIGTERM handled from then on).
fn start(dir: &Path) -> (Child, kube::Client, std::sync::mpsc::Receiver<()>) {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut child = Command::new(env!("CARGO_BIN_EXE_server-manager"))
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--runner-listen",
            "127.0.0.1:0",
        ])
        .args(["--registry-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start standalone");
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("kubectl get clusters,servers,images") {
                let _ = ready_tx.send(());
            }
        }
    });
    for _ in 0..300 {
        if kubeconfig.exists() {
            let client =
                kube::Client::try_from(config_from_kubeconfig(&kubeconfig)).expect("client");
            return (child, client, ready);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("standalone did not write its kubeconfig");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_creates_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, client, _ready) = start(dir.path());
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let cms = cms.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("c-{w}-{i}");
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                )
                .expect("cm");
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(o) => {
                        let rv: u64 = o.resource_version().expect("rv").parse().expect("rv");
                        acked.lock().expect("lock").push((name, rv));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 20,
        "the stream of creates ran ({} acknowledged)",
        acked.len()
    );
    let max_rv = acked.iter().map(|(_, rv)| *rv).max().unwrap_or(0);

    let (mut child, client, ready) = start(dir.path());
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let names: std::collections::HashSet<String> =
        list.items.iter().map(|c| c.name_any()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged creates lost after kill -9: {lost:?}"
    );
    let list_rv: u64 = list
        .metadata
        .resource_version
        .expect("list rv")
        .parse()
        .expect("rv");
    assert!(list_rv >= max_rv);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-restart"}})).expect("cm");
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create after restart");
    let rv: u64 = created.resource_version().expect("rv").parse().expect("rv");
    assert!(
        rv > max_rv,
        "resourceVersion {rv} after restart must exceed {max_rv}"
    );

    // SIGTERM: a clean stop with exit status 0 (once standalone is fully up:
    // a SIGTERM during its start-up still has the default disposition).
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("standalone printed its banner");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().expect("try_wait") {
            exited = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exited = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("standalone did not stop on SIGTERM");
    });
    assert!(exited.success(), "clean exit on SIGTERM: {exited:?}");
}
