//! Leader election against the embedded API server, as the chart's operator
//! Deployment relies on it: one replica leads; a standby waits and is ready
//! (so a rolling update can replace the leader); the leader releases the
//! Lease when it stops cleanly and the standby takes over at once instead of
//! after the Lease expires; a standby told to stop while waiting exits cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use server_manager::controller::image::ImageEngine;
use server_manager::controller::leader::{LeaderConfig, LeaderElector};
use server_manager::controller::operator::{OperatorConfig, run};
use server_manager::controller::server::provisioner::Provisioner;
use support::apiserver::TestApi;

fn config(identity: &str) -> LeaderConfig {
    LeaderConfig {
        namespace: "default".into(),
        name: "server-manager".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_millis(200),
    }
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get("server-manager")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_over_at_once() {
    let api = TestApi::start();
    let client = api.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let a = LeaderElector::new(client.clone(), config("a"));
    let b = Arc::new(LeaderElector::new(client.clone(), config("b")));
    a.acquire().await.expect("a leads");
    assert_eq!(holder(&leases).await.as_deref(), Some("a"));

    // b waits while a holds the Lease (15 s, renewed).
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire().await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "b took a held Lease");

    // a stops cleanly: b leads within a retry or two, long before expiry.
    let released = Instant::now();
    a.release().await.expect("release");
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("b did not take over a released Lease within 5 s")
        .expect("join")
        .expect("b acquires");
    assert!(released.elapsed() < Duration::from_secs(5));
    assert_eq!(holder(&leases).await.as_deref(), Some("b"));
    // Releasing a Lease one does not hold changes nothing.
    a.release().await.expect("release by a non-holder");
    assert_eq!(holder(&leases).await.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_operator_is_ready_and_stops_cleanly() {
    let api = TestApi::start();
    let client = api.client();
    let other = LeaderElector::new(client.clone(), config("leader-elsewhere"));
    other.acquire().await.expect("the other replica leads");

    let port = support::free_port();
    // A standby reaches neither the registry nor the runner.
    let settings = server_manager::controller::Settings {
        registry: server_manager::registry::RegistryConfig {
            address: "127.0.0.1:9".into(),
            insecure: true,
            ..Default::default()
        },
        drift_interval: None,
        backoff: Default::default(),
        playbook_version: "test".into(),
    };
    let engine: Arc<dyn ImageEngine> =
        Arc::new(server_manager::controller::image::RegistryEngine {
            registry: server_manager::registry::RegistryConfig {
                address: "127.0.0.1:9".into(),
                insecure: true,
                ..Default::default()
            },
            image_dir: std::env::temp_dir(),
        });
    let config = OperatorConfig {
        settings,
        health_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        leader: Some(config("standby")),
        concurrency: 1,
        instance: "standby".into(),
    };
    let runner: Arc<dyn Provisioner> = Arc::new(
        server_manager::runner::RunnerClient::new("http://127.0.0.1:9", "unused").unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run(client, config, engine, runner, async move {
        let _ = stopped.await;
    }));
    // Ready while standing by.
    let url = format!("http://127.0.0.1:{port}/readyz");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "a standby is not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!operator.is_finished());
    // Stopped while waiting: a clean exit, the other replica still leads.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), operator)
        .await
        .expect("a standby did not stop")
        .expect("join")
        .expect("clean exit");
    let leases: Api<Lease> = Api::namespaced(api.client(), "default");
    assert_eq!(holder(&leases).await.as_deref(), Some("leader-elsewhere"));
}
