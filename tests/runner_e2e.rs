//! End-to-end tests of the playbook runner: the real `server-manager
//! playbook-runner` binary, real `ansible-playbook`, real `sshd` targets on
//! loopback, the machine's Docker engine and a real `docker-registry`.
//!
//! Every name (containers, images, directories, ports) carries a random
//! suffix: other tests use the same Docker engine at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use server_manager::runner::RunnerClient;
use server_manager::runner::api::{
    HostLogsRequest, Playbook, ProvisionVars, RoleSpec, RunRequest, RunState, RunStatus, Secret,
    Target,
};
use support::host_lock;
use support::registry::TestRegistry;
use support::sshd::TestSshd;
use support::{docker_import_busybox, free_port, require, run};

const TOKEN: &str = "runner-test-token";

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// The runner binary as a child process, killed on drop.
struct RunnerProcess {
    child: Child,
    url: String,
}

impl RunnerProcess {
    async fn start(data_dir: &Path, max_concurrent: usize) -> RunnerProcess {
        require("ansible-playbook", "ansible");
        let port = free_port();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("runner.stderr"))
            .expect("runner stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_server-manager"))
            .arg("playbook-runner")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--playbooks")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"))
            .arg("--max-concurrent")
            .arg(max_concurrent.to_string())
            .env("SM_RUNNER_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start server-manager playbook-runner");
        Self::when_up(child, port, &data_dir.join("runner.stderr")).await
    }

    /// Waits until the runner on `port` answers /healthz; panics with its
    /// stderr otherwise.
    async fn when_up(child: Child, port: u16, stderr: &Path) -> RunnerProcess {
        let runner = RunnerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = runner.client();
        for _ in 0..200 {
            if client.healthy().await {
                return runner;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(stderr).unwrap_or_default();
        panic!("the playbook runner did not start: {log}");
    }

    /// The runner as the chart's StatefulSet runs it: its container args
    /// (paths mapped to `dirs`), user 10001 with no capabilities and no new
    /// privileges, and only PATH and the chart's env (HOME=/tmp, mapped to
    /// `dirs.home`, the chart's writable emptyDir).
    async fn start_as_chart(dirs: &ChartDirs) -> RunnerProcess {
        require("setpriv", "util-linux");
        let home = tempfile::tempdir().unwrap();
        let objects = support::chart::render(&serde_json::json!({}), home.path());
        let deployment = objects
            .iter()
            .find(|o| {
                o["kind"] == "StatefulSet"
                    && o["metadata"]["name"].as_str().unwrap().ends_with("-runner")
            })
            .expect("runner StatefulSet");
        let pod = &deployment["spec"]["template"]["spec"];
        let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
        let container = &pod["containers"][0];
        let port = free_port();
        let mut args = Vec::new();
        for a in container["args"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            let (flag, _) = a.split_once('=').unwrap_or((a, ""));
            args.push(match flag {
                "playbook-runner" | "--max-concurrent" | "--run-timeout" => a.to_string(),
                "--listen" => format!("--listen=127.0.0.1:{port}"),
                "--data-dir" => format!("--data-dir={}", dirs.data.display()),
                "--token-file" => format!("--token-file={}", dirs.token.display()),
                "--playbooks" => format!(
                    "--playbooks={}",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks")
                ),
                other => panic!("the chart's runner argument {other} is unknown to this test"),
            });
        }
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--no-new-privs", "--inh-caps=-all", "--"])
            .arg(env!("CARGO_BIN_EXE_server-manager"))
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for e in container["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            assert_eq!((name, e["value"].as_str()), ("HOME", Some("/tmp")));
            cmd.env("HOME", &dirs.home);
        }
        let stderr_path = dirs.root.path().join("runner.stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the runner under setpriv");
        Self::when_up(child, port, &stderr_path).await
    }

    fn client(&self) -> RunnerClient {
        RunnerClient::new(&self.url, TOKEN).expect("client")
    }

    /// SIGKILL, as a crash would.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The writable places the chart gives the runner, owned by its user: the
/// data volume, HOME (/tmp, an emptyDir) and the token file.
struct ChartDirs {
    root: tempfile::TempDir,
    data: PathBuf,
    home: PathBuf,
    token: PathBuf,
}

impl ChartDirs {
    fn new(uid: u32) -> ChartDirs {
        // The image has this user (Dockerfile: useradd --uid 10001); ssh
        // refuses to run for a uid without a passwd entry, so the machine
        // needs it too, made the same way.
        let known = Command::new("getent")
            .args(["passwd", &uid.to_string()])
            .output()
            .unwrap();
        if !known.status.success() {
            let _ = Command::new("groupadd")
                .args(["--gid", &uid.to_string(), "sm-runner"])
                .output();
            run(Command::new("useradd").args([
                "--uid",
                &uid.to_string(),
                "--gid",
                &uid.to_string(),
                "--no-create-home",
                "--home-dir",
                "/tmp",
                "sm-runner",
            ]));
        }
        let root = tempfile::tempdir().unwrap();
        let (data, home, token) = (
            root.path().join("data"),
            root.path().join("home"),
            root.path().join("token"),
        );
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&home).unwrap();
        std::fs::write(&token, TOKEN).unwrap();
        for p in [&data, &home, &token] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        }
        // The temp dir itself: traversable by the user, as /var/lib is.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        ChartDirs {
            root,
            data,
            home,
            token,
        }
    }
}

/// Removes what a test created on the Docker engine, also when it fails.
#[derive(Default)]
struct DockerCleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for i in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// A registry with the test image pushed.
struct Fixture {
    registry: TestRegistry,
    image: String,
    suffix: String,
    cleanup: DockerCleanup,
}

impl Fixture {
    fn new() -> Fixture {
        let registry = TestRegistry::start();
        let suffix = suffix();
        let image = format!("{}/sm-runner-test-{suffix}:1", registry.addr);
        let mut cleanup = DockerCleanup::default();
        cleanup.images.push(image.clone());
        // The container shows its role file, then stays up.
        docker_import_busybox(
            &image,
            "/bin/sh -c 'cat /etc/contrailctl/*.conf; exec sleep 3600'",
        );
        run(Command::new("docker").args(["push", &image]));
        // Pulled back by the playbook, through the registry.
        run(Command::new("docker").args(["rmi", &image]));
        Fixture {
            registry,
            image,
            suffix,
            cleanup,
        }
    }
}

/// A test "server": its own config/log/data directories and container prefix.
struct Host {
    dirs: tempfile::TempDir,
    prefix: String,
}

impl Host {
    fn new(fixture: &mut Fixture, roles: &[&str]) -> Host {
        let prefix = format!("smt-{}-{}-", fixture.suffix, &suffix()[..4]);
        for role in roles {
            fixture.cleanup.containers.push(format!("{prefix}{role}"));
        }
        Host {
            dirs: tempfile::tempdir().expect("host dirs"),
            prefix,
        }
    }

    fn vars(&self, roles: Vec<RoleSpec>) -> ProvisionVars {
        let d = self.dirs.path();
        ProvisionVars {
            config_dir: d.join("etc").display().to_string(),
            log_dir: d.join("log").display().to_string(),
            data_dir: d.join("lib").display().to_string(),
            container_prefix: self.prefix.clone(),
            registry: None,
            roles,
        }
    }

    fn config_path(&self, role: &str) -> PathBuf {
        self.dirs.path().join("etc").join(format!("{role}.conf"))
    }
}

fn target(sshd: &TestSshd) -> Target {
    Target {
        host: sshd.host.clone(),
        port: sshd.port,
        user: "root".into(),
        private_key: Secret::new(sshd.private_key()),
        known_hosts: sshd.known_hosts(),
    }
}

fn request(playbook: Playbook, target: Target, vars: ProvisionVars) -> RunRequest {
    RunRequest {
        playbook,
        target,
        vars,
        idempotency_key: None,
        timeout_seconds: Some(300),
    }
}

/// Everything a test saw from the API, for the key-material check.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn status(&mut self, s: &RunStatus) {
        self.0.push(serde_json::to_string(s).expect("json"));
    }
}

async fn finish(client: &RunnerClient, id: &str, seen: &mut Seen) -> RunStatus {
    let status = tokio::time::timeout(
        Duration::from_secs(240),
        client.wait(id, Duration::from_millis(200)),
    )
    .await
    .unwrap_or_else(|_| panic!("run {id} did not finish in time"))
    .expect("status");
    seen.status(&status);
    seen.0.push(client.logs(id).await.expect("logs"));
    status
}

async fn run_to_end(client: &RunnerClient, req: &RunRequest, seen: &mut Seen) -> RunStatus {
    let accepted = client.run(req).await.expect("run accepted");
    seen.0.push(serde_json::to_string(&accepted).expect("json"));
    finish(client, &accepted.id, seen).await
}

fn docker_inspect(name: &str) -> serde_json::Value {
    let out = run(Command::new("docker").args(["inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    v[0].clone()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Live (not zombie) processes of a process group, from `/proc`.
fn group_members_alive(pgid: i64) -> Vec<String> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            alive.push(stat);
        }
    }
    alive
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// No line of the private key, nor its armour, in any file under `dirs` nor
/// in any response seen.
fn assert_no_key_material(key: &str, dirs: &[&Path], seen: &Seen) {
    assert_no_secrets(key, &[], dirs, seen);
}

/// [`assert_no_key_material`], and none of `others` either.
fn assert_no_secrets(key: &str, others: &[&str], dirs: &[&Path], seen: &Seen) {
    let mut body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    body.extend_from_slice(others);
    assert!(!body.is_empty(), "the test key has no body lines");
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    assert!(!files.is_empty(), "no files to check");
    let mut texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    texts.extend(seen.0.iter().map(|s| ("response".to_string(), s.clone())));
    for (name, text) in &texts {
        assert!(!text.contains("PRIVATE KEY"), "key armour found in {name}");
        for line in &body {
            assert!(!text.contains(line), "secret material found in {name}");
        }
    }
}

fn nasty_config() -> String {
    // Templating, shell syntax, a continuation line, non-ASCII, no trailing newline.
    "[GLOBAL]\ncontroller_nodes = 127.0.0.1\nnote = {{ lookup('pipe','id') }}; rm -rf / $(id) `id`\n  continued {% raw %} line\nname = Zürich ✓ 日本 \u{1F600}\npct = %(x)s 100%\ntail without newline"
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_is_exact_idempotent_detects_drift_and_deprovisions() {
    let mut fx = Fixture::new();
    let sshd = TestSshd::start();
    let data = tempfile::tempdir().expect("data dir");
    let runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let host = Host::new(&mut fx, &["controller", "analytics"]);
    let mut seen = Seen::default();
    let pwned = std::env::temp_dir().join(format!("sm-pwned-{}", fx.suffix));
    let controller_conf = format!(
        "{}\nx = {{{{ lookup('pipe','touch {}') }}}}\n",
        nasty_config(),
        pwned.display()
    );
    let analytics_conf = "[GLOBAL]\nanalytics_nodes = 127.0.0.1\n".to_string();
    let roles = vec![
        RoleSpec {
            name: "controller".into(),
            config: controller_conf.clone(),
            image: fx.image.clone(),
        },
        RoleSpec {
            name: "analytics".into(),
            config: analytics_conf.clone(),
            image: fx.image.clone(),
        },
    ];
    let provision = request(Playbook::Provision, target(&sshd), host.vars(roles.clone()));

    // First run, with its log followed live.
    let accepted = client.run(&provision).await.expect("accepted");
    let follow_client = runner.client();
    let follow_id = accepted.id.clone();
    let follower = tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = follow_client.follow_logs(&follow_id).await.expect("follow");
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.expect("chunk"));
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let first = finish(&client, &accepted.id, &mut seen).await;
    assert_eq!(first.state, RunState::Succeeded, "{first:?}");
    assert!(first.changed > 0, "{first:?}");
    assert_eq!(first.tasks_done, first.tasks_total, "{first:?}");
    assert_eq!(first.return_code, Some(0));
    assert!(first.recap.is_some());
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("follow ends with the run")
        .expect("follower");
    assert!(
        followed.contains("TASK [Run the role containers]"),
        "{followed}"
    );
    assert!(followed.contains("RECAP"), "{followed}");
    seen.0.push(followed);

    // The files hold exactly what was sent, mode 0600, nothing templated.
    for (role, content) in [
        ("controller", &controller_conf),
        ("analytics", &analytics_conf),
    ] {
        let path = host.config_path(role);
        assert_eq!(
            std::fs::read(&path).expect("role file"),
            content.as_bytes(),
            "{role}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{role}");
    }
    assert!(!pwned.exists(), "a lookup in a parameter was executed");

    // Both containers run with the mounts, the restart policy, host network.
    for (role, content) in [
        ("controller", &controller_conf),
        ("analytics", &analytics_conf),
    ] {
        let name = format!("{}{role}", host.prefix);
        let c = docker_inspect(&name);
        assert_eq!(c["State"]["Running"], true, "{name}");
        assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(c["HostConfig"]["NetworkMode"], "host");
        let mounts = c["Mounts"].as_array().expect("mounts");
        let conf_mount = mounts
            .iter()
            .find(|m| m["Destination"] == format!("/etc/contrailctl/{role}.conf"))
            .unwrap_or_else(|| panic!("no role file mount: {mounts:?}"));
        assert_eq!(conf_mount["RW"], false);
        assert_eq!(
            conf_mount["Source"],
            host.config_path(role).display().to_string()
        );
        let log_mount = mounts
            .iter()
            .find(|m| m["Destination"] == "/var/log")
            .expect("log mount");
        assert_eq!(
            log_mount["Source"],
            host.dirs.path().join("log").display().to_string()
        );
        let inside = run(Command::new("docker").args([
            "exec",
            &name,
            "cat",
            &format!("/etc/contrailctl/{role}.conf"),
        ]));
        assert_eq!(inside.as_bytes(), content.as_bytes());
    }

    // Second identical run: nothing changes.
    let second = run_to_end(&client, &provision, &mut seen).await;
    assert_eq!(second.state, RunState::Succeeded, "{second:?}");
    assert_eq!(
        second.changed, 0,
        "second run changed something: {second:?}"
    );

    // Check mode: no drift now; drift once the file is edited on the host,
    // and the check leaves the edit in place.
    let check = request(Playbook::Check, target(&sshd), host.vars(roles.clone()));
    let clean = run_to_end(&client, &check, &mut seen).await;
    assert_eq!(clean.state, RunState::Succeeded, "{clean:?}");
    assert_eq!(clean.changed, 0, "{clean:?}");
    let edited = format!("{analytics_conf}edited = yes\n");
    std::fs::write(host.config_path("analytics"), &edited).expect("edit");
    let drift = run_to_end(&client, &check, &mut seen).await;
    assert_eq!(drift.state, RunState::Succeeded, "{drift:?}");
    assert!(drift.changed > 0, "drift not reported: {drift:?}");
    assert!(drift.message.as_deref().unwrap_or("").starts_with("drift"));
    assert_eq!(
        std::fs::read_to_string(host.config_path("analytics")).expect("file"),
        edited
    );

    // Log access for `server-manager logs`.
    let log_dir = host.dirs.path().join("log");
    std::fs::write(log_dir.join("contrail-test.log"), "line 1\nline 2\n").expect("log file");
    let mut logs_req = HostLogsRequest {
        target: target(&sshd),
        log_dir: log_dir.display().to_string(),
        file: None,
    };
    let list = client.list_log_files(&logs_req).await.expect("list");
    seen.0.push(serde_json::to_string(&list).expect("json"));
    assert!(
        list.files
            .iter()
            .any(|f| f.name == "contrail-test.log" && f.size == 14),
        "{list:?}"
    );
    logs_req.file = Some("contrail-test.log".into());
    let content = client.read_log_file(&logs_req).await.expect("read");
    assert_eq!(content, b"line 1\nline 2\n");
    for bad in ["../etc/passwd", "/etc/passwd", "..", "a/b"] {
        logs_req.file = Some(bad.into());
        let err = client.read_log_file(&logs_req).await.expect_err(bad);
        assert!(
            matches!(
                err,
                server_manager::runner::ClientError::Api { status: 400, .. }
            ),
            "{bad}: {err}"
        );
    }

    // Deprovision removes the containers and the role files.
    let deprovision = request(Playbook::Deprovision, target(&sshd), host.vars(roles));
    let gone = run_to_end(&client, &deprovision, &mut seen).await;
    assert_eq!(gone.state, RunState::Succeeded, "{gone:?}");
    for role in ["controller", "analytics"] {
        assert!(!container_exists(&format!("{}{role}", host.prefix)));
        assert!(!host.config_path(role).exists());
    }

    // Metrics and authentication.
    let metrics = client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("server_manager_runner_runs_finished_total{playbook=\"provision\",state=\"succeeded\"} 2"),
        "{metrics}"
    );
    let anonymous = RunnerClient::new(&runner.url, "wrong").expect("client");
    let err = anonymous
        .status(&first.id)
        .await
        .expect_err("unauthenticated");
    assert!(matches!(
        err,
        server_manager::runner::ClientError::Api { status: 401, .. }
    ));

    assert_no_key_material(&sshd.private_key(), &[data.path()], &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_host_at_a_time_while_hosts_overlap() {
    let mut fx = Fixture::new();
    let a = TestSshd::start();
    let b = TestSshd::start();
    let data = tempfile::tempdir().expect("data dir");
    let runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let mut seen = Seen::default();
    let ha = Host::new(&mut fx, &["one"]);
    let hb = Host::new(&mut fx, &["one"]);
    let image = fx.image.clone();
    let role = |name: &str| RoleSpec {
        name: name.into(),
        config: format!("[GLOBAL]\nrole = {name}\n"),
        image: image.clone(),
    };
    let a1 = request(Playbook::Provision, target(&a), ha.vars(vec![role("one")]));
    let a2 = request(Playbook::Check, target(&a), ha.vars(vec![role("one")]));
    let b1 = request(Playbook::Provision, target(&b), hb.vars(vec![role("one")]));
    let (ra1, ra2, rb1) = tokio::join!(client.run(&a1), client.run(&a2), client.run(&b1));
    let (ra1, ra2, rb1) = (ra1.expect("a1"), ra2.expect("a2"), rb1.expect("b1"));

    // While host A is busy, an idempotent request returns the same queued run,
    // and a queued run can be cancelled before it starts.
    let mut keyed = request(Playbook::Check, target(&a), ha.vars(vec![role("one")]));
    keyed.idempotency_key = Some(format!("key-{}", fx.suffix));
    let k1 = client.run(&keyed).await.expect("keyed");
    let k2 = client.run(&keyed).await.expect("keyed again");
    assert_eq!(k1.id, k2.id);
    assert!(!k1.existing && k2.existing);
    let queued = client.status(&k1.id).await.expect("status");
    assert_eq!(queued.state, RunState::Queued, "{queued:?}");
    let cancelled = client.cancel(&k1.id).await.expect("cancel");
    assert_eq!(cancelled.state, RunState::Cancelled);
    let k3 = client.run(&keyed).await.expect("keyed after cancel");
    assert_eq!(
        (k3.id.as_str(), k3.existing),
        (k1.id.as_str(), true),
        "a finished run's key returns that run"
    );

    let sa1 = finish(&client, &ra1.id, &mut seen).await;
    let sa2 = finish(&client, &ra2.id, &mut seen).await;
    let sb1 = finish(&client, &rb1.id, &mut seen).await;
    for s in [&sa1, &sa2, &sb1] {
        assert_eq!(s.state, RunState::Succeeded, "{s:?}");
    }
    let span = |s: &RunStatus| {
        let start: jiff::Timestamp = s.started.as_deref().expect("started").parse().expect("ts");
        let end: jiff::Timestamp = s
            .finished
            .as_deref()
            .expect("finished")
            .parse()
            .expect("ts");
        (start, end)
    };
    let (a1s, a1e) = span(&sa1);
    let (a2s, a2e) = span(&sa2);
    let (b1s, b1e) = span(&sb1);
    assert!(
        a1e <= a2s || a2e <= a1s,
        "runs on the same host overlapped: {sa1:?} {sa2:?}"
    );
    // a1 and a2 were submitted together: either may take host A first;
    // that one runs while b1 runs on host B.
    let (first, fs, fe) = if a1s <= a2s {
        (&sa1, a1s, a1e)
    } else {
        (&sa2, a2s, a2e)
    };
    assert!(
        fs < b1e && b1s < fe,
        "runs on different hosts did not overlap: {first:?} {sb1:?}"
    );
    let never = client.status(&k1.id).await.expect("status");
    assert_eq!(never.state, RunState::Cancelled);
    assert!(never.started.is_none(), "{never:?}");

    // The global limit: with --max-concurrent 1, runs for different hosts
    // do not overlap either.
    let data1 = tempfile::tempdir().expect("data dir");
    let single = RunnerProcess::start(data1.path(), 1).await;
    let client1 = single.client();
    let ca = request(Playbook::Check, target(&a), ha.vars(vec![role("one")]));
    let cb = request(Playbook::Check, target(&b), hb.vars(vec![role("one")]));
    let (rca, rcb) = tokio::join!(client1.run(&ca), client1.run(&cb));
    let sca = finish(&client1, &rca.expect("ca").id, &mut seen).await;
    let scb = finish(&client1, &rcb.expect("cb").id, &mut seen).await;
    let ((cas, cae), (cbs, cbe)) = (span(&sca), span(&scb));
    assert!(
        cae <= cbs || cbe <= cas,
        "runs overlapped beyond --max-concurrent 1: {sca:?} {scb:?}"
    );

    assert_no_key_material(&a.private_key(), &[data.path(), data1.path()], &seen);
    assert_no_key_material(&b.private_key(), &[data.path(), data1.path()], &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_their_cause_and_change_nothing() {
    let mut fx = Fixture::new();
    let sshd = TestSshd::start();
    let data = tempfile::tempdir().expect("data dir");
    let runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let mut seen = Seen::default();
    let host = Host::new(&mut fx, &["one"]);
    let role = RoleSpec {
        name: "one".into(),
        config: "[GLOBAL]\n".into(),
        image: fx.image.clone(),
    };
    let unchanged = |h: &Host| {
        assert!(!container_exists(&format!("{}one", h.prefix)));
        assert!(!h.config_path("one").exists());
        assert!(!h.dirs.path().join("log").exists());
    };

    // Wrong host key.
    let mut t = target(&sshd);
    t.known_hosts = sshd.wrong_known_hosts();
    let wrong_key = request(Playbook::Provision, t, host.vars(vec![role.clone()]));
    // Unreachable host: nothing listens on that port (of an address no test
    // listens on, so no concurrent test can take the port meanwhile).
    let mut t = target(&sshd);
    t.host = "127.0.0.254".into();
    t.port = free_port();
    t.known_hosts = format!(
        "[127.0.0.254]:{} {}",
        t.port,
        sshd.known_hosts()
            .split_once(' ')
            .map(|x| x.1)
            .unwrap_or("")
    );
    let unreachable = request(Playbook::Provision, t, host.vars(vec![role.clone()]));
    // Missing image.
    let mut missing = role.clone();
    missing.image = format!("{}/sm-runner-missing-{}:1", fx.registry.addr, fx.suffix);
    let missing_image = request(Playbook::Provision, target(&sshd), host.vars(vec![missing]));
    // A failing task: the configuration directory is a regular file.
    let blocker = tempfile::NamedTempFile::new().expect("file");
    let mut vars = host.vars(vec![role.clone()]);
    vars.config_dir = blocker.path().display().to_string();
    let failing_task = request(Playbook::Provision, target(&sshd), vars);

    // A run that outlives its timeout (on its own host dirs: it may have
    // started changing things when it is killed).
    let slow_host = Host::new(&mut fx, &["one"]);
    let mut too_slow = request(
        Playbook::Provision,
        target(&sshd),
        slow_host.vars(vec![role.clone()]),
    );
    too_slow.timeout_seconds = Some(1);
    let (mut s1, mut s2, mut s3, mut s4) = (
        Seen::default(),
        Seen::default(),
        Seen::default(),
        Seen::default(),
    );
    let (r1, r2, r3, r4) = tokio::join!(
        run_to_end(&client, &wrong_key, &mut s1),
        run_to_end(&client, &unreachable, &mut s2),
        run_to_end(&client, &missing_image, &mut s3),
        run_to_end(&client, &failing_task, &mut s4),
    );
    for s in [s1, s2, s3, s4] {
        seen.0.extend(s.0);
    }
    // An unknown host key: known_hosts only knows this key for another port.
    let mut t = target(&sshd);
    t.known_hosts = sshd.known_hosts().replacen(
        &format!("]:{} ", sshd.port),
        &format!("]:{} ", sshd.port.wrapping_add(1)),
        1,
    );
    let unknown = run_to_end(
        &client,
        &request(Playbook::Provision, t, host.vars(vec![role.clone()])),
        &mut seen,
    )
    .await;
    assert_eq!(unknown.state, RunState::Failed, "{unknown:?}");
    assert!(
        unknown
            .message
            .as_deref()
            .unwrap_or("")
            .contains("host key verification failed"),
        "{unknown:?}"
    );
    unchanged(&host);
    let r5 = run_to_end(&client, &too_slow, &mut seen).await;
    assert_eq!(r5.state, RunState::Failed, "{r5:?}");
    assert!(
        r5.message
            .as_deref()
            .unwrap_or("")
            .starts_with("timed out after 1s"),
        "{r5:?}"
    );
    for s in [&r1, &r2, &r3, &r4] {
        seen.status(s);
        assert_eq!(s.state, RunState::Failed, "{s:?}");
    }
    let msg = |s: &RunStatus| s.message.clone().unwrap_or_default();
    assert!(msg(&r1).contains("host key verification failed"), "{r1:?}");
    assert!(
        msg(&r2).contains("unreachable") && msg(&r2).contains("Connection refused"),
        "{r2:?}"
    );
    assert_eq!(
        r3.failed_task.as_deref(),
        Some("Pull the role images"),
        "{r3:?}"
    );
    assert!(msg(&r3).contains("sm-runner-missing"), "{r3:?}");
    assert!(
        msg(&r3).contains("not found") || msg(&r3).contains("manifest unknown"),
        "{r3:?}"
    );
    assert_eq!(
        r4.failed_task.as_deref(),
        Some("Create the configuration directory"),
        "{r4:?}"
    );
    assert!(
        msg(&r4).starts_with("task 'Create the configuration directory' failed"),
        "{r4:?}"
    );
    unchanged(&host);
    assert_eq!(
        std::fs::read(blocker.path()).expect("blocker"),
        b"",
        "the blocking file was modified"
    );
    for id in [&r1.id, &r2.id, &r3.id, &r4.id] {
        seen.0.push(client.logs(id).await.expect("logs"));
    }
    assert_no_key_material(&sshd.private_key(), &[data.path()], &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_restart_keeps_finished_runs_and_fails_the_lost_one() {
    let mut fx = Fixture::new();
    let sshd = TestSshd::start();
    let data = tempfile::tempdir().expect("data dir");
    let mut runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let mut seen = Seen::default();
    let host = Host::new(&mut fx, &["one"]);
    let vars = host.vars(vec![RoleSpec {
        name: "one".into(),
        config: "[GLOBAL]\n".into(),
        image: fx.image.clone(),
    }]);
    let provision = request(Playbook::Provision, target(&sshd), vars.clone());
    let done = run_to_end(&client, &provision, &mut seen).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:?}");

    // Kill the runner while a run is in flight.
    let deprovision = request(Playbook::Deprovision, target(&sshd), vars.clone());
    let lost = client.run(&deprovision).await.expect("accepted");
    let record_path = data.path().join("runs").join(format!("{}.json", lost.id));
    let mut in_flight = serde_json::Value::Null;
    for _ in 0..600 {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
        if record["pgid"].is_number() {
            in_flight = record;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight["state"], "running", "the run never started");
    runner.kill9();
    let work_dir = PathBuf::from(in_flight["work_dir"].as_str().expect("work dir"));
    let pgid = in_flight["pgid"].as_i64().expect("pgid");

    let runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let still = client.status(&done.id).await.expect("finished run answers");
    assert_eq!(still, done);
    let failed = client.status(&lost.id).await.expect("lost run answers");
    seen.status(&failed);
    assert_eq!(failed.state, RunState::Failed, "{failed:?}");
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("runner restarted"),
        "{failed:?}"
    );
    assert!(
        !work_dir.exists(),
        "the lost run's work directory (with its key) remains"
    );
    let mut alive = group_members_alive(pgid);
    for _ in 0..50 {
        if alive.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive = group_members_alive(pgid);
    }
    assert!(
        alive.is_empty(),
        "the lost run's ansible-playbook still runs: {alive:?}"
    );

    // The host is usable again: a new run works.
    let again = run_to_end(&client, &provision, &mut seen).await;
    assert_eq!(again.state, RunState::Succeeded, "{again:?}");
    assert!(container_exists(&format!("{}one", host.prefix)));

    // Cancelling a running run kills it.
    let check = request(Playbook::Check, target(&sshd), vars.clone());
    let c = client.run(&check).await.expect("accepted");
    let record_path = data.path().join("runs").join(format!("{}.json", c.id));
    let mut cancel_work_dir = None;
    for _ in 0..600 {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
        if let Some(dir) = record["work_dir"].as_str() {
            cancel_work_dir = Some(PathBuf::from(dir));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel_work_dir = cancel_work_dir.expect("the run never started");
    assert!(
        cancel_work_dir.join("id").exists(),
        "no key file while running"
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(cancel_work_dir.join("id"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    client.cancel(&c.id).await.expect("cancel");
    let cancelled = finish(&client, &c.id, &mut seen).await;
    assert_eq!(cancelled.state, RunState::Cancelled, "{cancelled:?}");
    assert!(
        !cancel_work_dir.exists(),
        "the cancelled run's work directory (with its key) remains"
    );

    let gone = run_to_end(
        &client,
        &request(Playbook::Deprovision, target(&sshd), vars),
        &mut seen,
    )
    .await;
    assert_eq!(gone.state, RunState::Succeeded, "{gone:?}");
    assert_no_key_material(&sshd.private_key(), &[data.path()], &seen);
}

/// Waits until the lock history of `prefix` shows `token` holding the host.
async fn until_held_by(prefix: &str, token: &str) {
    for _ in 0..1200 {
        if host_lock::intervals(prefix)
            .iter()
            .any(|h| h.token == token && h.released.is_none())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{token} never took the host lock of {prefix}");
}

/// The lock history must show each run holding the host inside its run
/// record's span (taken after it started, released before it finished).
fn assert_held_within(prefix: &str, run: &RunStatus) {
    let secs = |t: &str| t.parse::<jiff::Timestamp>().expect("ts").as_nanosecond() as f64 / 1e9;
    let history = host_lock::intervals(prefix);
    let held: Vec<_> = history.iter().filter(|h| h.token == run.id).collect();
    assert_eq!(
        held.len(),
        1,
        "run {} held the host {} times: {history:?}",
        run.id,
        held.len()
    );
    let (start, end) = (
        secs(run.started.as_deref().expect("started")),
        secs(run.finished.as_deref().expect("finished")),
    );
    assert!(
        start <= held[0].acquired && held[0].released.expect("released") <= end,
        "the lock of {} was held outside its run ({start}..{end}): {:?}",
        run.id,
        held[0]
    );
}

/// Every run holds the lock on its host for its whole duration, so runs of
/// one host never overlap whichever runner (or person) starts them: two
/// runner processes given the same host at once, a run started by hand over
/// SSH, and the orphaned `ansible-playbook` of a runner killed mid-run all
/// take turns. A holder that is gone (its SSH connection closed) frees the
/// lock; a run that cannot get it in time fails naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lock_keeps_runs_of_one_host_apart_across_runners() {
    let mut fx = Fixture::new();
    let sshd = TestSshd::start();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let ra = RunnerProcess::start(da.path(), 4).await;
    let rb = RunnerProcess::start(db.path(), 4).await;
    let (ca, cb) = (ra.client(), rb.client());
    let mut seen = Seen::default();
    let host = Host::new(&mut fx, &["one"]);
    let prefix = host.prefix.clone();
    struct Unlock(String);
    impl Drop for Unlock {
        fn drop(&mut self) {
            host_lock::remove(&self.0);
        }
    }
    let _unlock = Unlock(prefix.clone());
    let vars = host.vars(vec![RoleSpec {
        name: "one".into(),
        config: "[GLOBAL]\n".into(),
        image: fx.image.clone(),
    }]);
    let provision = request(Playbook::Provision, target(&sshd), vars.clone());

    // A hand-started holder: the playbooks' own lock script over an SSH
    // session that stays open for 3 seconds.
    let known_hosts = sshd.dir.path().join("test_known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts()).unwrap();
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/files/host_lock.sh"
    ))
    .unwrap();
    let quoted = format!("'{}'", script.replace('\'', "'\\''"));
    let mut by_hand = Command::new("ssh")
        .arg("-i")
        .arg(sshd.dir.path().join("client_key"))
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg(format!("root@{}", sshd.host))
        .arg(format!(
            "sh -c {quoted} sh acquire /run/lock server-manager.{prefix} by-hand 60 && sleep 3"
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh");
    until_held_by(&prefix, "by-hand").await;

    // Two runners given the same host at once, while it is held by hand.
    let (a, b) = tokio::join!(ca.run(&provision), cb.run(&provision));
    let (a, b) = (a.expect("a"), b.expect("b"));
    let sa = finish(&ca, &a.id, &mut seen).await;
    let sb = finish(&cb, &b.id, &mut seen).await;
    assert!(by_hand.wait().expect("ssh").success());
    for s in [&sa, &sb] {
        assert_eq!(s.state, RunState::Succeeded, "{s:?}");
        assert_held_within(&prefix, s);
    }
    let history = host_lock::intervals(&prefix);
    assert_eq!(history[0].token, "by-hand", "{history:?}");
    assert_eq!(history[0].why.as_deref(), Some("connection-closed"));

    // A runner killed mid-run leaves its ansible-playbook behind for a
    // while; a run of the same host from another runner waits for it.
    let mut rc = RunnerProcess::start(dc.path(), 4).await;
    let orphan = rc.client().run(&provision).await.expect("c");
    until_held_by(&prefix, &orphan.id).await;
    rc.kill9();
    let next = run_to_end(&ca, &provision, &mut seen).await;
    assert_eq!(next.state, RunState::Succeeded, "{next:?}");
    assert_held_within(&prefix, &next);
    let history = host_lock::intervals(&prefix);
    let o = history
        .iter()
        .position(|h| h.token == orphan.id)
        .expect("orphan");
    let n = history
        .iter()
        .position(|h| h.token == next.id)
        .expect("next");
    assert!(o < n, "{history:?}");

    // A holder that stays: a run that cannot get the lock in time fails and
    // names it.
    let mut held = Command::new("flock")
        .arg(format!("/run/lock/server-manager.{prefix}.lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let mut short = provision.clone();
    short.timeout_seconds = Some(3);
    let refused = run_to_end(&ca, &short, &mut seen).await;
    let _ = held.kill();
    let _ = held.wait();
    assert_eq!(refused.state, RunState::Failed, "{refused:?}");
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.contains("Take the host lock") || message.contains("timed out"),
        "{refused:?}"
    );
    assert!(
        !host_lock::intervals(&prefix)
            .iter()
            .any(|h| h.token == refused.id),
        "a run that never got the lock acted on the host"
    );
    assert_no_key_material(&sshd.private_key(), &[da.path(), db.path()], &seen);
}

/// A second registry process serving the fixture registry's storage, with
/// htpasswd authentication; stopped (and the engine logged out) on drop.
struct AuthRegistry {
    addr: String,
    child: Child,
}

impl AuthRegistry {
    fn start(storage: &Path, user: &str, password: &str) -> AuthRegistry {
        let dir = storage.parent().expect("registry dir");
        let hash = run(Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import crypt, sys, warnings; warnings.simplefilter('ignore'); \
             print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            )
            .arg(password));
        std::fs::write(dir.join("htpasswd"), format!("{user}:{}\n", hash.trim()))
            .expect("htpasswd");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             auth:\n  htpasswd:\n    realm: sm-test\n    path: {}/htpasswd\nhttp:\n  addr: {addr}\n",
            storage.display(),
            dir.display()
        );
        std::fs::write(dir.join("auth-config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("auth-config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = AuthRegistry { addr, child };
        for _ in 0..400 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the authenticating registry did not start on {}",
            registry.addr
        );
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["logout", &self.addr]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_log_in_and_never_leak() {
    let mut fx = Fixture::new();
    let password = format!("pw-{}-{{{{ lookup('pipe','id') }}}}", suffix());
    let auth = AuthRegistry::start(&fx.registry.dir.path().join("data"), "smuser", &password);
    let image = fx.image.replacen(&fx.registry.addr, &auth.addr, 1);
    fx.cleanup.images.push(image.clone());
    let sshd = TestSshd::start();
    let data = tempfile::tempdir().expect("data dir");
    let runner = RunnerProcess::start(data.path(), 4).await;
    let client = runner.client();
    let mut seen = Seen::default();
    let host = Host::new(&mut fx, &["one"]);
    let mut vars = host.vars(vec![RoleSpec {
        name: "one".into(),
        config: "[GLOBAL]\n".into(),
        image: image.clone(),
    }]);

    // A wrong password: the login fails and says so; nothing is written.
    vars.registry = Some(server_manager::runner::api::RegistryAuth {
        address: auth.addr.clone(),
        insecure: true,
        username: Some("smuser".into()),
        password: Some(Secret::new(format!("{password}-wrong"))),
    });
    let refused = run_to_end(
        &client,
        &request(Playbook::Provision, target(&sshd), vars.clone()),
        &mut seen,
    )
    .await;
    assert_eq!(refused.state, RunState::Failed, "{refused:?}");
    assert_eq!(
        refused.failed_task.as_deref(),
        Some("Log in to the registry")
    );
    let msg = refused.message.clone().unwrap_or_default();
    assert!(
        msg.contains("401") || msg.contains("nauthorized"),
        "{refused:?}"
    );
    assert!(!host.config_path("one").exists());

    // The right one: pulled through the authenticating registry; idempotent.
    if let Some(r) = vars.registry.as_mut() {
        r.password = Some(Secret::new(password.clone()));
    }
    let provision = request(Playbook::Provision, target(&sshd), vars.clone());
    let ok = run_to_end(&client, &provision, &mut seen).await;
    assert_eq!(ok.state, RunState::Succeeded, "{ok:?}");
    let c = docker_inspect(&format!("{}one", host.prefix));
    assert_eq!(c["Config"]["Image"], image);
    let again = run_to_end(&client, &provision, &mut seen).await;
    assert_eq!(again.changed, 0, "{again:?}");
    let gone = run_to_end(
        &client,
        &request(Playbook::Deprovision, target(&sshd), vars),
        &mut seen,
    )
    .await;
    assert_eq!(gone.state, RunState::Succeeded, "{gone:?}");
    assert_no_secrets(
        &sshd.private_key(),
        &[password.as_str()],
        &[data.path()],
        &seen,
    );
}

/// The runner as the chart runs it (non-root, no capabilities, HOME=/tmp, a
/// read-only root filesystem but for its volumes) provisions a host: what
/// it writes is under its data volume and HOME only.
#[tokio::test(flavor = "multi_thread")]
async fn runner_provisions_unprivileged_as_the_chart_runs_it() {
    const UID: u32 = 10001;
    let mut fx = Fixture::new();
    let sshd = TestSshd::start();
    let dirs = ChartDirs::new(UID);
    let runner = RunnerProcess::start_as_chart(&dirs).await;
    let client = runner.client();
    let host = Host::new(&mut fx, &["controller"]);
    let roles = vec![RoleSpec {
        name: "controller".into(),
        config: "[GLOBAL]\ncontroller_nodes = 127.0.0.1\n".into(),
        image: fx.image.clone(),
    }];
    let req = request(Playbook::Provision, target(&sshd), host.vars(roles));
    let mut seen = Seen::default();
    let status = run_to_end(&client, &req, &mut seen).await;
    assert_eq!(
        status.state,
        RunState::Succeeded,
        "{status:?}\n{}",
        seen.0.join("\n")
    );
    assert!(host.config_path("controller").exists());
    // A second run changes nothing.
    let again = run_to_end(&client, &req, &mut seen).await;
    assert_eq!(again.state, RunState::Succeeded, "{again:?}");
    assert_eq!(again.changed, 0, "{again:?}");

    // Nothing of the runner's user anywhere else it could write (the
    // world-writable places but /tmp, which the chart mounts writable;
    // everything else is root's): on the chart's read-only root filesystem
    // all of it fits in the volumes.
    let strays = run(Command::new("find").args([
        "/var/tmp",
        "/dev/shm",
        "-xdev",
        "-user",
        &UID.to_string(),
    ]));
    assert!(
        strays.trim().is_empty(),
        "the runner wrote outside its volumes: {strays}"
    );
    let in_home = run(Command::new("find").arg(&dirs.home));
    assert!(in_home.lines().count() >= 1, "{in_home}");
}
