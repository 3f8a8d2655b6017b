//! The README's main job, exactly as written there: `server-manager standalone
//! --data-dir DIR --lab 3` on a new data directory, checked as a user would
//! look at it — every managed Server Ready, the demo containers running, each
//! demo log holding every value of the role file its container read,
//! `server-manager logs` printing it; a second command on the same directory
//! refused while the first runs; a crash (`kill -9`) resumed by running the
//! command again; then stopped (SIGTERM, as Ctrl-C) and nothing left: no
//! process, container, image, file or listening sshd port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::lab::{ready, tail};
use support::run;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-manager")
}

/// The arguments of the README's main-job command (after `cargo run
/// --release --`), with its data directory.
fn readme_main_job() -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = &readme[readme.find("## The two commands").expect("section")..];
    let line = section
        .lines()
        .find(|l| l.starts_with("cargo run --release -- standalone"))
        .expect("the main-job command in \"The two commands\"");
    let args: Vec<String> = line["cargo run --release -- ".len()..]
        .split_whitespace()
        .map(String::from)
        .collect();
    let i = args
        .iter()
        .position(|a| a == "--data-dir")
        .expect("--data-dir");
    assert!(args.iter().any(|a| a == "--lab"), "{line}");
    let data_dir = args[i + 1].clone();
    (args, data_dir)
}

/// The README's command with `data_dir` for its data directory.
fn main_job(data_dir: &Path) -> Vec<String> {
    let (mut args, readme_dir) = readme_main_job();
    for a in &mut args {
        if *a == readme_dir {
            *a = data_dir.display().to_string();
        }
    }
    args
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(args: &[String], log: &Path) -> Running {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start the main job");
        Running {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the command did not stop:\n{}",
                tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.wait_exit(Duration::from_secs(120));
        }
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    run(Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args))
}

/// A managed Server of the lab, as its manifest says.
struct LabServer {
    name: String,
    address: String,
    port: u16,
    roles: Vec<String>,
    config_dir: PathBuf,
    log_dir: PathBuf,
    prefix: String,
}

fn lab_servers(data_dir: &Path) -> Vec<LabServer> {
    let text =
        std::fs::read_to_string(data_dir.join("lab/manifests/servers.yaml")).expect("servers.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("yaml"))
        .filter(|s| s["spec"]["provisioning"] != "External")
        .map(|s| {
            let spec = &s["spec"];
            let layout = &spec["layout"];
            LabServer {
                name: s["metadata"]["name"].as_str().unwrap().into(),
                address: spec["host"].as_str().unwrap().into(),
                port: spec["ssh"]["port"].as_u64().unwrap() as u16,
                roles: spec["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().into())
                    .collect(),
                config_dir: layout["configDir"].as_str().unwrap().into(),
                log_dir: layout["logDir"].as_str().unwrap().into(),
                prefix: layout["containerPrefix"].as_str().unwrap().into(),
            }
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, running: &Running, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- log ---\n{}",
            tail(&running.log(), 80)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the lab's manifests are applied and every managed Server is
/// Ready; returns the Servers.
fn wait_lab_ready(data_dir: &Path, running: &Running) -> Vec<LabServer> {
    let kubeconfig = data_dir.join("kubeconfig");
    wait_until("the lab applied", Duration::from_secs(180), running, || {
        running.log().contains("demo lab: applied the manifests")
    });
    let servers = lab_servers(data_dir);
    assert_eq!(servers.len(), 3, "--lab 3");
    wait_until(
        "every managed Server Ready",
        Duration::from_secs(600),
        running,
        || {
            servers.iter().all(|s| {
                Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .args(["get", "server", &s.name, "-o", "json"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                    .is_some_and(|v| ready(&v))
            })
        },
    );
    servers
}

fn container_running(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Every `key = value` of the role file appears in the demo log as read.
fn assert_log_shows_role_file(server: &LabServer, role: &str, log: &str) {
    let conf =
        std::fs::read_to_string(server.config_dir.join(format!("{role}.conf"))).expect("role file");
    assert!(log.contains("not Contrail"), "{log}");
    let mut section = String::new();
    let mut values = 0;
    for line in conf.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((key, value)) = line.split_once(" = ") {
            let read = format!("demo-{role}: read {section}.{key} = {value}\n");
            assert!(
                log.contains(&read),
                "{}/{role}: no {read:?} in\n{log}",
                server.name
            );
            values += 1;
        }
    }
    assert!(values >= 5, "{}/{role}: {conf}", server.name);
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The process and its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    tree.extend(server_manager::lab::procs::descendants(root));
    tree
}

/// The peer addresses of every TCP connection of `pids` (`ss`), with the
/// line each comes from.
fn tcp_peers(pids: &[u32]) -> Vec<(std::net::IpAddr, String)> {
    let out = run(Command::new("ss").args(["-Htnap"]));
    out.lines()
        .filter(|l| pids.iter().any(|p| l.contains(&format!("pid={p},"))))
        .filter_map(|l| {
            let peer = l.split_whitespace().nth(4)?;
            let host = peer.rsplit_once(':')?.0.trim_matches(['[', ']']);
            let host = host.split('%').next()?;
            Some((host.parse().ok()?, l.to_string()))
        })
        .collect()
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    run(Command::new("docker").args(args))
        .lines()
        .map(String::from)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn the_readme_main_job_provisions_real_containers_and_leaves_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let data_dir = work.path().join("sm");
    let log = work.path().join("main-job.log");
    let args = main_job(&data_dir);
    let kubeconfig = data_dir.join("kubeconfig");

    let mut first = Running::start(&args, &log);
    let servers = wait_lab_ready(&data_dir, &first);
    let data = std::fs::canonicalize(&data_dir).expect("data dir");
    let lab_id = {
        let state: Value =
            serde_json::from_slice(&std::fs::read(data.join("lab/lab.json")).expect("lab.json"))
                .expect("json");
        state["id"].as_str().expect("id").to_string()
    };
    let table = kubectl(&kubeconfig, &["get", "servers"]);
    assert!(table.contains("demo-ext-ctrl"), "{table}");
    assert!(servers.iter().any(|s| s.roles.len() > 1));

    // Containers running; each demo log holds what its container read, and
    // `server-manager logs` prints it.
    for s in &servers {
        for role in &s.roles {
            let container = format!("{}{role}", s.prefix);
            assert!(container_running(&container), "{container} is not running");
            let on_host =
                std::fs::read_to_string(s.log_dir.join(format!("{role}.log"))).expect("demo log");
            assert_log_shows_role_file(s, role, &on_host);
            let out = Command::new(bin())
                .args(["logs", &s.name, "--file", &format!("{role}.log")])
                .env("KUBECONFIG", &kubeconfig)
                .env("SM_RUNNER_TOKEN_FILE", data_dir.join("runner-token"))
                .output()
                .expect("server-manager logs");
            assert!(
                out.status.success(),
                "logs {} {role}: {}",
                s.name,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_log_shows_role_file(s, role, &String::from_utf8_lossy(&out.stdout));
        }
    }

    // Only loopback: every TCP connection of the command's processes (API
    // server, runner, registry, sshd hosts, playbook runs) has a loopback
    // peer (or none: a listener), and so does every address it applied.
    for (peer, line) in tcp_peers(&process_tree(first.child.id())) {
        assert!(peer.is_loopback() || peer.is_unspecified(), "{line}");
    }
    let applied = kubectl(
        &kubeconfig,
        &["get", "clusters,servers,images", "-o", "yaml"],
    );
    let ip = regex::Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").unwrap();
    for m in ip.find_iter(&applied) {
        let addr: std::net::Ipv4Addr = m.as_str().parse().unwrap();
        assert!(addr.is_loopback(), "{addr} in the applied objects");
    }

    // Twice at once on one directory: refused, the first lab untouched.
    let second = Command::new(bin()).args(&args).output().expect("second");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another `server-manager standalone --lab` runs on"),
        "{err}"
    );
    assert!(
        servers
            .iter()
            .all(|s| container_running(&format!("{}{}", s.prefix, s.roles[0])))
    );
    assert!(data.join("lab/manifests/servers.yaml").is_file());

    // A crash: its sshd hosts go with it; the same command resumes the lab.
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reap");
    wait_until(
        "the crashed lab's sshd gone",
        Duration::from_secs(30),
        &first,
        || processes_mentioning(&format!("{}/lab/hosts", data.display())).is_empty(),
    );
    let mut again = Running::start(&args, &work.path().join("resumed.log"));
    let resumed = wait_lab_ready(&data_dir, &again);
    for s in &resumed {
        assert!(
            std::net::TcpStream::connect((s.address.as_str(), s.port)).is_ok(),
            "{} has no sshd",
            s.name
        );
        for role in &s.roles {
            assert!(container_running(&format!("{}{role}", s.prefix)));
        }
    }
    let ports: Vec<(String, u16)> = resumed
        .iter()
        .map(|s| (s.address.clone(), s.port))
        .collect();

    // Stopped as Ctrl-C stops it: nothing is left.
    run(Command::new("kill").args(["-INT", &again.child.id().to_string()]));
    let status = again.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "{status}\n{}", tail(&again.log(), 40));
    assert!(
        again.log().contains("the demo lab is removed"),
        "{}",
        tail(&again.log(), 40)
    );
    assert!(!data_dir.exists(), "{} is left", data_dir.display());
    let left = processes_mentioning(&data.display().to_string());
    assert!(left.is_empty(), "processes left: {left:#?}");
    let containers = docker_lines(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=smdemo-{lab_id}-"),
    ]);
    assert!(containers.is_empty(), "containers left: {containers:?}");
    let images: Vec<String> = docker_lines(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .into_iter()
        .filter(|i| {
            i.starts_with("127.0.0.1:5000/server-manager-demo-")
                || i.starts_with(&format!("server-manager-demo-build-{lab_id}-"))
        })
        .collect();
    assert!(images.is_empty(), "images left: {images:?}");
    for (address, port) in ports {
        assert!(
            std::net::TcpStream::connect((address.as_str(), port)).is_err(),
            "something still listens on {address}:{port}"
        );
    }
}
