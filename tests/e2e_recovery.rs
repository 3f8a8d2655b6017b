//! End to end, what goes wrong: a missing Image, a missing Secret, a host that
//! refuses SSH and a failing playbook task each show `Ready=False` with a reason
//! and message that say which, back off, and recover by themselves once the
//! cause is fixed; and `kill -9` of the operator or of the playbook runner in
//! the middle of a run converges without duplicate work. A playbook runner
//! that accepts connections and never answers is reported within the call
//! deadline, as a transient failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use support::free_port;
use support::lab::{
    Host, Standalone, condition, image_tarball, ready, run_records, server_manifest, suffix,
};
use support::registry::TestRegistry;

fn cluster(name: &str, registry: &str, max_unavailable: u32) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "registry": {"address": registry, "insecure": true},
            "images": {"agent": format!("{name}-agent")},
            "rollout": {"minReadySeconds": 2, "maxUnavailable": {"default": max_unavailable}},
            "parameters": {"GLOBAL": {"log_level": "SYS_NOTICE"}}
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

fn external_controller(cluster: &str, address: &str) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": format!("{cluster}-ext")},
        "spec": {"clusterRef": {"name": cluster}, "host": address, "provisioning": "External", "roles": ["controller"]}
    })
}

fn ready_reason(s: &Standalone, name: &str) -> (String, String) {
    let v = s.get("server", name).unwrap_or(Value::Null);
    let c = condition(&v, "Ready").unwrap_or(Value::Null);
    (
        c["reason"].as_str().unwrap_or("").to_string(),
        c["message"].as_str().unwrap_or("").to_string(),
    )
}

fn wait_reason(s: &Standalone, name: &str, reason: &str, message_part: &str) {
    s.wait_until(
        &format!("{name} Ready=False {reason} ({message_part})"),
        Duration::from_secs(240),
        |s| {
            let (r, m) = ready_reason(s, name);
            r == reason && m.contains(message_part)
        },
    );
}

fn wait_ready(s: &Standalone, name: &str) {
    s.wait_until(&format!("{name} Ready"), Duration::from_secs(300), |s| {
        s.get("server", name).is_some_and(|v| ready(&v))
    });
}

#[test]
fn failures_are_reported_back_off_and_recover() {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let tarball = image_tarball(work.path(), &run_id);
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--image-dir".into(),
            work.path().display().to_string(),
            "--runner-listen".into(),
            "127.0.0.1:0".into(),
            "--max-backoff".into(),
            "15".into(),
        ],
    );
    let host = Host::new("127.0.0.31", "f", &run_id, None);
    let key = host.sshd.private_key();
    s.apply_ssh_secret(work.path(), "f-ssh", &key, &host.sshd.known_hosts());

    let layout = |n: &str| {
        let mut l = host.layout();
        l["containerPrefix"] = json!(format!("{}{n}-", host.prefix));
        l["configDir"] = json!(host.root.path().join(n).join("etc").display().to_string());
        l
    };
    let refused_port = free_port();
    let mut no_image = server_manifest(
        "f-noimage",
        "f",
        "127.0.0.31",
        host.sshd.port,
        "f-ssh",
        &["agent"],
        layout("noimage"),
    );
    no_image["spec"]["images"] = json!({"agent": "f-agent-later"});
    let no_secret = server_manifest(
        "f-nosecret",
        "f",
        "127.0.0.31",
        host.sshd.port,
        "f-ssh-later",
        &["agent"],
        layout("nosecret"),
    );
    let refused = server_manifest(
        "f-refused",
        "f",
        "127.0.0.32",
        refused_port,
        "f-ssh",
        &["agent"],
        layout("refused"),
    );
    // A configuration directory below a regular file: the task creating it
    // fails on the host.
    let mut bad = layout("badtask");
    let not_a_dir = host.root.path().join("not-a-directory");
    std::fs::write(&not_a_dir, "a file").unwrap();
    bad["configDir"] = json!(not_a_dir.join("etc").display().to_string());
    let bad_task = server_manifest(
        "f-badtask",
        "f",
        "127.0.0.31",
        host.sshd.port,
        "f-ssh",
        &["agent"],
        bad,
    );
    s.apply(
        work.path(),
        "f.yaml",
        &[
            cluster("f", &registry.addr, 4),
            image("f-agent", &tarball),
            external_controller("f", "127.0.0.30"),
            no_image,
            no_secret,
            refused,
            bad_task,
        ],
    );

    wait_reason(&s, "f-noimage", "ImageNotFound", "f-agent-later");
    wait_reason(&s, "f-nosecret", "SecretNotFound", "f-ssh-later");
    wait_reason(&s, "f-refused", "ProvisioningFailed", "unreachable");
    wait_reason(
        &s,
        "f-badtask",
        "ProvisioningFailed",
        "Create the configuration directory",
    );
    // Failed runs back off, visibly.
    let refused_status = s.get("server", "f-refused").unwrap()["status"].clone();
    assert!(
        refused_status["failures"].as_u64().unwrap_or(0) >= 1,
        "{refused_status}"
    );
    assert!(
        refused_status["nextRetryTime"].is_string(),
        "{refused_status}"
    );
    // Nothing was left on the host by the failed runs.
    assert!(!host.root.path().join("refused").join("etc").exists());

    // Fix every cause; each Server recovers on its own.
    s.apply(
        work.path(),
        "f-fix-image.yaml",
        &[image("f-agent-later", &tarball)],
    );
    s.apply_ssh_secret(work.path(), "f-ssh-later", &key, &host.sshd.known_hosts());
    let late = Host::new_at_port(
        "127.0.0.32",
        refused_port,
        "f2",
        &run_id,
        Some(&host.sshd.client_public_key()),
    );
    s.apply_ssh_secret(
        work.path(),
        "f-ssh",
        &key,
        &format!("{}{}", host.sshd.known_hosts(), late.sshd.known_hosts()),
    );
    s.patch("server", "f-badtask", &json!({"spec": {"layout": {"configDir": host.root.path().join("badtask").join("etc").display().to_string()}}}));
    for name in ["f-noimage", "f-nosecret", "f-refused", "f-badtask"] {
        wait_ready(&s, name);
    }
    drop(late);
}

/// A playbook runner process of our own, so the operator and the runner can be
/// killed separately.
struct RunnerProcess {
    args: Vec<String>,
    child: Option<Child>,
}

impl RunnerProcess {
    fn start(dir: &Path, port: u16) -> RunnerProcess {
        std::fs::write(dir.join("token"), "e2e-runner-token").unwrap();
        let args = vec![
            "playbook-runner".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.join("runner").display().to_string(),
            "--token-file".into(),
            dir.join("token").display().to_string(),
            "--playbooks".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks").into(),
        ];
        let mut r = RunnerProcess { args, child: None };
        r.spawn(port);
        r
    }

    fn spawn(&mut self, port: u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/dev/null")
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_server-manager"))
                .args(&self.args)
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

fn run_state(s: &Standalone, name: &str) -> (String, String) {
    let v = s.get("server", name).unwrap_or(Value::Null);
    let run = &v["status"]["run"];
    (
        run["id"].as_str().unwrap_or("").to_string(),
        run["state"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn operator_and_runner_restarts_converge_without_duplicate_runs() {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let tarball = image_tarball(work.path(), &run_id);
    let runner_port = free_port();
    let mut runner = RunnerProcess::start(work.path(), runner_port);
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--image-dir".into(),
            work.path().display().to_string(),
            "--runner-url".into(),
            format!("http://127.0.0.1:{runner_port}"),
            "--runner-token-file".into(),
            work.path().join("token").display().to_string(),
            "--max-backoff".into(),
            "10".into(),
        ],
    );
    let host = Host::new("127.0.0.41", "r", &run_id, None);
    s.apply_ssh_secret(
        work.path(),
        "r-ssh",
        &host.sshd.private_key(),
        &host.sshd.known_hosts(),
    );
    let server = server_manifest(
        "r-1",
        "r",
        "127.0.0.41",
        host.sshd.port,
        "r-ssh",
        &["agent"],
        host.layout(),
    );
    s.apply(
        work.path(),
        "r.yaml",
        &[
            cluster("r", &registry.addr, 1),
            image("r-agent", &tarball),
            external_controller("r", "127.0.0.40"),
            server,
        ],
    );

    // kill -9 the operator (standalone) while its run is queued or running.
    s.wait_until("a run in flight", Duration::from_secs(120), |s| {
        matches!(run_state(s, "r-1").1.as_str(), "queued" | "running")
    });
    let (first_id, _) = run_state(&s, "r-1");
    s.kill9();
    s.restart();
    wait_ready(&s, "r-1");
    let runs: Vec<Value> = run_records(&work.path().join("runner"))
        .into_iter()
        .filter(|r| r["playbook"] == "provision")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "a second run started after the operator restart: {runs:#?}"
    );
    assert_eq!(runs[0]["id"], first_id.as_str());
    assert_eq!(run_state(&s, "r-1"), (first_id.clone(), "succeeded".into()));

    // kill -9 the runner during the next run: the lost run is detected and redone.
    s.patch(
        "server",
        "r-1",
        &json!({"spec": {"parameters": {"GLOBAL": {"log_level": "SYS_DEBUG"}}}}),
    );
    s.wait_until("a second run in flight", Duration::from_secs(120), |s| {
        let (id, state) = run_state(s, "r-1");
        id != first_id && matches!(state.as_str(), "queued" | "running")
    });
    let (lost_id, _) = run_state(&s, "r-1");
    runner.kill9();
    runner.spawn(runner_port);
    s.wait_until(
        "converged after the runner restart",
        Duration::from_secs(300),
        |s| {
            let v = s.get("server", "r-1").unwrap();
            ready(&v) && v["status"]["run"]["id"] != lost_id.as_str()
        },
    );
    let runs: Vec<Value> = run_records(&work.path().join("runner"))
        .into_iter()
        .filter(|r| r["playbook"] == "provision")
        .collect();
    let lost = runs
        .iter()
        .find(|r| r["id"] == lost_id.as_str())
        .expect("lost run record");
    assert_eq!(lost["state"], "failed");
    assert!(
        lost["message"].as_str().unwrap_or("").contains("lost"),
        "{lost}"
    );
    assert_eq!(runs.len(), 3, "first run, lost run, redo: {runs:#?}");
    let conf = std::fs::read_to_string(host.config_path("agent")).unwrap();
    assert!(conf.contains("log_level = SYS_DEBUG"), "{conf}");
}

#[test]
fn a_runner_that_never_answers_is_reported_within_the_deadline() {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let tarball = image_tarball(work.path(), &run_id);
    // The runner: accepts every connection, reads nothing, answers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let token_file = work.path().join("runner-token");
    std::fs::write(&token_file, "silent-token\n").unwrap();
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
            format!("http://{silent_addr}"),
            "--runner-token-file".into(),
            token_file.display().to_string(),
        ],
    );
    let host = Host::new("127.0.0.36", "h", &run_id, None);
    s.apply_ssh_secret(
        work.path(),
        "h-ssh",
        &host.sshd.private_key(),
        &host.sshd.known_hosts(),
    );
    s.apply(
        work.path(),
        "h.yaml",
        &[
            cluster("h", &registry.addr, 1),
            image("h-agent", &tarball),
            external_controller("h", "127.0.0.37"),
            server_manifest(
                "h-1",
                "h",
                "127.0.0.36",
                host.sshd.port,
                "h-ssh",
                &["agent"],
                host.layout(),
            ),
        ],
    );
    let applied = std::time::Instant::now();
    wait_reason(&s, "h-1", "RunnerUnavailable", "within its deadline (30 s)");
    // The Image push and the first attempt come first; the report follows
    // one call deadline after the attempt, with margin for a loaded machine.
    assert!(
        applied.elapsed() < Duration::from_secs(150),
        "reported after {:?}",
        applied.elapsed()
    );
    let v = s.get("server", "h-1").unwrap();
    let (_, message) = ready_reason(&s, "h-1");
    assert!(message.contains(&silent_addr.to_string()), "{message}");
    // Transient: retried with backoff, not stalled.
    assert_eq!(
        condition(&v, "Reconciling").unwrap()["status"],
        "True",
        "{v:#}"
    );
    assert_ne!(
        condition(&v, "Stalled").map(|c| c["status"].clone()),
        Some(json!("True")),
        "{v:#}"
    );
}
