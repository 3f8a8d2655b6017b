//! Several playbook runners sharing the hosts, end to end: `server-manager
//! standalone` with two `--runner-url`s (two real runner processes), Servers
//! on loopback hosts (real sshd, Ansible, Docker, registry). Each host's runs
//! go to the runner rendezvous hashing names for it (shown in
//! `status.run.runner`); when a runner is killed during a rollout, its hosts
//! move to the other, its lost runs are redone there, everything converges,
//! and no two runs of one host overlap (the host lock's history on the host).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use server_manager::runner::pool::{host_key, weight};
use support::lab::{Host, Standalone, image_tarball, ready, run_records, server_manifest, suffix};
use support::registry::TestRegistry;
use support::{free_port, host_lock};

/// A playbook runner process, killed on drop.
struct RunnerProcess {
    child: Option<Child>,
    url: String,
}

impl RunnerProcess {
    fn start(dir: &Path, token: &Path) -> RunnerProcess {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_server-manager"))
            .arg("playbook-runner")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir)
            .arg("--token-file")
            .arg(token)
            .arg("--playbooks")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runner");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return RunnerProcess {
                    child: Some(child),
                    url: format!("http://127.0.0.1:{port}"),
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("runner did not start");
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn cluster(name: &str, registry: &str, log_level: &str) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "registry": {"address": registry, "insecure": true},
            "images": {"agent": format!("{name}-agent")},
            "rollout": {"minReadySeconds": 1, "maxUnavailable": {"default": 8}},
            "parameters": {"GLOBAL": {"log_level": log_level}}
        }
    })
}

fn image(name: &str, tarball: &Path) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Image",
        "metadata": {"name": name},
        "spec": {"imageId": "e2e", "imageType": "agent", "version": "1",
                 "source": {"path": tarball.display().to_string()}}
    })
}

/// The runner rendezvous hashing names for `key` among `urls`.
fn owner<'a>(urls: &[&'a str], key: &str) -> &'a str {
    urls.iter()
        .max_by_key(|u| (weight(u, key), u.to_string()))
        .copied()
        .expect("a runner")
}

#[test]
fn two_runners_share_the_hosts_and_take_over_when_one_goes() {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let tarball = image_tarball(work.path(), &run_id);
    let token = work.path().join("token");
    std::fs::write(&token, "pool-runner-token").unwrap();
    let (da, db) = (work.path().join("ra"), work.path().join("rb"));
    let mut ra = RunnerProcess::start(&da, &token);
    let rb = RunnerProcess::start(&db, &token);
    let (url_a, url_b) = (ra.url.clone(), rb.url.clone());
    let urls = [url_a.as_str(), url_b.as_str()];
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--image-dir".into(),
            work.path().display().to_string(),
            "--runner-url".into(),
            ra.url.clone(),
            "--runner-url".into(),
            rb.url.clone(),
            "--runner-token-file".into(),
            token.display().to_string(),
            "--runner-gone-after".into(),
            "5".into(),
            "--max-backoff".into(),
            "5".into(),
        ],
    );

    // Hosts until both runners serve at least one (at most 8).
    let mut hosts: Vec<(String, Host)> = Vec::new();
    for i in 0..8 {
        let address = format!("127.0.0.{}", 71 + i);
        let name = format!("p{i}");
        let host = Host::new(&address, &name, &run_id, None);
        hosts.push((address, host));
        let owners: Vec<&str> = hosts
            .iter()
            .map(|(a, h)| owner(&urls, &host_key(a, h.sshd.port)))
            .collect();
        if hosts.len() >= 4 && owners.contains(&urls[0]) && owners.contains(&urls[1]) {
            break;
        }
    }
    let mut objects = vec![
        cluster("p", &registry.addr, "SYS_NOTICE"),
        image("p-agent", &tarball),
        // The agents' controller: a host the operator does not provision.
        json!({
            "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
            "metadata": {"name": "p-ext"},
            "spec": {"clusterRef": {"name": "p"}, "host": "127.0.0.70",
                     "provisioning": "External", "roles": ["controller"]}
        }),
    ];
    for (i, (address, host)) in hosts.iter().enumerate() {
        let secret = format!("p{i}-ssh");
        s.apply_ssh_secret(
            work.path(),
            &secret,
            &host.sshd.private_key(),
            &host.sshd.known_hosts(),
        );
        objects.push(server_manifest(
            &format!("p-{i}"),
            "p",
            address,
            host.sshd.port,
            &secret,
            &["agent"],
            host.layout(),
        ));
    }
    s.apply(work.path(), "p.yaml", &objects);
    let all_ready = |s: &Standalone| {
        (0..hosts.len()).all(|i| {
            s.get("server", &format!("p-{i}"))
                .is_some_and(|v| ready(&v))
        })
    };
    s.wait_until("every Server ready", Duration::from_secs(400), all_ready);

    // Each host's run went to its runner, and says so.
    for (i, (address, host)) in hosts.iter().enumerate() {
        let v = s.get("server", &format!("p-{i}")).unwrap();
        let expected = owner(&urls, &host_key(address, host.sshd.port));
        assert_eq!(
            v["status"]["run"]["runner"], expected,
            "p-{i}: {}",
            v["status"]["run"]
        );
    }
    let (on_a, on_b) = (run_records(&da), run_records(&db));
    assert!(!on_a.is_empty() && !on_b.is_empty(), "both runners worked");
    for (records, url) in [(&on_a, urls[0]), (&on_b, urls[1])] {
        for r in records.iter() {
            let key = host_key(
                r["host"].as_str().unwrap(),
                r["port"].as_u64().unwrap() as u16,
            );
            assert_eq!(owner(&urls, &key), url, "a run went to another runner: {r}");
        }
    }

    // A rollout; runner A is killed while it runs some of it.
    s.patch(
        "cluster",
        "p",
        &json!({"spec": {"parameters": {"GLOBAL": {"log_level": "SYS_DEBUG"}}}}),
    );
    s.wait_until(
        "a run in flight on runner A",
        Duration::from_secs(120),
        |s| {
            (0..hosts.len()).any(|i| {
                let v = s.get("server", &format!("p-{i}")).unwrap_or(Value::Null);
                let run = &v["status"]["run"];
                run["runner"] == urls[0]
                    && matches!(run["state"].as_str(), Some("queued" | "running"))
            })
        },
    );
    ra.kill9();
    s.wait_until(
        "every Server ready with the new parameters",
        Duration::from_secs(400),
        |s| {
            all_ready(s)
                && hosts.iter().all(|(_, h)| {
                    std::fs::read_to_string(h.config_path("agent"))
                        .is_ok_and(|c| c.contains("log_level = SYS_DEBUG"))
                })
        },
    );
    // Runner A's hosts moved to B; nothing overlapped on any host.
    for (i, (_, host)) in hosts.iter().enumerate() {
        let v = s.get("server", &format!("p-{i}")).unwrap();
        assert_eq!(
            v["status"]["run"]["runner"], urls[1],
            "p-{i}: {}",
            v["status"]["run"]
        );
        let held = host_lock::intervals(&host.prefix);
        assert!(held.len() >= 2, "p-{i}: {held:?}");
        host_lock::remove(&host.prefix);
    }
}
