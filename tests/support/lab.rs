//! An end-to-end lab: `server-manager standalone` (embedded API server,
//! operator, playbook runner) driven by the real `kubectl`, a real registry,
//! real `sshd` "hosts" on distinct loopback addresses, and the machine's
//! Docker engine. The manifests are `examples/`, adapted to those hosts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::TestRegistry;
use super::sshd::TestSshd;
use super::{free_port, run};

/// A random suffix so concurrent tests never share names.
pub fn suffix() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// A running `server-manager standalone`.
pub struct Standalone {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `DATA_DIR/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// Arguments it was started with (for restarts).
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Standalone {
    /// Starts standalone with `extra` arguments and waits until kubectl works.
    pub fn start(data_dir: &Path, extra: &[String]) -> Standalone {
        let mut args: Vec<String> = vec![
            "standalone".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        args.extend(extra.iter().cloned());
        let mut s = Standalone {
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("kubeconfig"),
            args,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("standalone.log"))
            .expect("standalone log");
        let child = Command::new(env!("CARGO_BIN_EXE_server-manager"))
            .args(&self.args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start server-manager standalone");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig.exists()
                && Command::new("kubectl")
                    .env("KUBECONFIG", &self.kubeconfig)
                    .args(["get", "crd", "servers.servermanager.contrail.io"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "standalone did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the process with SIGKILL (no clean-up of any kind).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same arguments and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The combined log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("standalone.log")).unwrap_or_default()
    }

    /// Runs kubectl against it; panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        run(Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args))
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub fn kubectl_try(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `kubectl get KIND NAME -o json`, or `None` when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let (ok, out, _) = self.kubectl_try(&["get", kind, name, "-o", "json"]);
        ok.then(|| serde_json::from_str(&out).expect("json"))
    }

    /// Every Cluster, Server and Image, with managedFields.
    pub fn contrail_objects(&self) -> Vec<Value> {
        let list: Value = serde_json::from_str(&self.kubectl(&[
            "get",
            "clusters,servers,images",
            "-o",
            "json",
            "--show-managed-fields",
        ]))
        .expect("json");
        list["items"].as_array().expect("items").clone()
    }

    /// The global resourceVersion: a list's, which the API server sets to its
    /// latest (kubectl's own `-o json` lists leave it empty, so ask raw).
    pub fn resource_version(&self) -> u64 {
        let raw = self.kubectl(&[
            "get",
            "--raw",
            "/apis/servermanager.contrail.io/v1alpha1/servers",
        ]);
        let v: Value = serde_json::from_str(&raw).expect("json");
        v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("list resourceVersion")
    }

    /// Waits until `check` holds, polling; panics with the operator log otherwise.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Standalone) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            if Instant::now() > deadline {
                let servers = self.kubectl_try(&["get", "servers", "-o", "yaml"]).1;
                panic!(
                    "timed out waiting for {what}\n--- servers ---\n{servers}\n--- log ---\n{}",
                    tail(&self.log(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM for a clean stop, then make sure.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One test host: an sshd on its own loopback address, and its layout.
pub struct Host {
    /// The sshd.
    pub sshd: TestSshd,
    /// Root of its directories.
    pub root: tempfile::TempDir,
    /// Container name prefix.
    pub prefix: String,
}

impl Host {
    /// A host on `address` accepting `key` (an authorized_keys line), with
    /// directories of its own and containers named `sm-e2e-<run>-<name>-<role>`.
    pub fn new(address: &str, name: &str, run_id: &str, key: Option<&str>) -> Host {
        Self::start(address, None, name, run_id, key)
    }

    /// Like [`Host::new`], on a given port.
    pub fn new_at_port(
        address: &str,
        port: u16,
        name: &str,
        run_id: &str,
        key: Option<&str>,
    ) -> Host {
        Self::start(address, Some(port), name, run_id, key)
    }

    fn start(
        address: &str,
        port: Option<u16>,
        name: &str,
        run_id: &str,
        key: Option<&str>,
    ) -> Host {
        let sshd = TestSshd::start_at(address, port);
        if let Some(k) = key {
            sshd.authorize(k);
        }
        Host {
            sshd,
            root: tempfile::tempdir().expect("tempdir"),
            prefix: format!("sm-e2e-{run_id}-{name}-"),
        }
    }

    /// `spec.layout` for this host.
    pub fn layout(&self) -> Value {
        let r = self.root.path();
        serde_json::json!({
            "configDir": r.join("etc").display().to_string(),
            "logDir": r.join("log").display().to_string(),
            "dataDir": r.join("data").display().to_string(),
            "containerPrefix": self.prefix,
        })
    }

    /// Path of a role file on the host.
    pub fn config_path(&self, role: &str) -> PathBuf {
        self.root.path().join("etc").join(format!("{role}.conf"))
    }

    /// The container of a role.
    pub fn container(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// Removes every container of this host (clean-up after a failed test).
    pub fn remove_containers(&self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{}", self.prefix)])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.remove_containers();
    }
}

/// A `docker save` tarball of a busybox image whose command keeps running.
pub fn image_tarball(dir: &Path, run_id: &str) -> PathBuf {
    use server_manager::lab::demo_image;
    let tag = format!("sm-e2e-base-{run_id}:1");
    let path = dir.join("image.tar");
    let out = path.clone();
    super::with_docker(async move |docker| {
        demo_image::import_busybox(docker, &tag, "/bin/sleep 3600").await?;
        demo_image::save(docker, &tag, &out).await?;
        demo_image::remove_image(docker, &tag).await
    });
    path
}

/// `docker exec NAME cat PATH`.
pub fn docker_cat(container: &str, path: &str) -> String {
    run(Command::new("docker").args(["exec", container, "cat", path]))
}

/// Whether a container exists.
pub fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Run records of the runner (`DATA_DIR/runner/runs/*.json`).
pub fn run_records(runner_dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(runner_dir.join("runs")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "json")
                && let Ok(text) = std::fs::read_to_string(e.path())
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                out.push(v);
            }
        }
    }
    out
}

/// Write requests in a registry's access log (PUT, POST, PATCH, DELETE).
pub fn registry_writes(registry: &TestRegistry) -> usize {
    let log = std::fs::read_to_string(registry.dir.path().join("access.log")).unwrap_or_default();
    log.lines()
        .filter(|l| {
            ["\"PUT ", "\"POST ", "\"PATCH ", "\"DELETE "]
                .iter()
                .any(|m| l.contains(m))
        })
        .count()
}

/// Whether an object's `Ready` condition is True for its current generation.
pub fn ready(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }) && v["status"]["observedGeneration"] == v["metadata"]["generation"]
}

/// The condition `type_` of an object, if set.
pub fn condition(v: &Value, type_: &str) -> Option<Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

impl Standalone {
    /// `kubectl patch KIND NAME --type=merge -p PATCH`.
    pub fn patch(&self, kind: &str, name: &str, patch: &Value) {
        self.kubectl(&[
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Writes `objects` as one YAML file in `dir` and `kubectl apply`s it.
    pub fn apply(&self, dir: &Path, file: &str, objects: &[Value]) {
        let docs: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("yaml"))
            .collect();
        let path = dir.join(file);
        std::fs::write(&path, docs.join("---\n")).expect("write manifest");
        self.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    /// Creates or updates an SSH Secret from a key and known_hosts lines.
    pub fn apply_ssh_secret(&self, dir: &Path, name: &str, private_key: &str, known_hosts: &str) {
        let key = dir.join(format!("{name}.key"));
        let kh = dir.join(format!("{name}.known_hosts"));
        std::fs::write(&key, private_key).expect("key");
        std::fs::write(&kh, known_hosts).expect("known_hosts");
        let yaml = self.kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-file=ssh-privatekey={}", key.display()),
            &format!("--from-file=known_hosts={}", kh.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("secret manifest");
        self.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }
}

/// A Server manifest on `host` for the lab's cluster.
pub fn server_manifest(
    name: &str,
    cluster: &str,
    address: &str,
    port: u16,
    secret: &str,
    roles: &[&str],
    layout: Value,
) -> Value {
    serde_json::json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Server",
        "metadata": {"name": name},
        "spec": {
            "clusterRef": {"name": cluster},
            "host": address,
            "roles": roles,
            "ssh": {"port": port, "secretRef": {"name": secret}},
            "layout": layout,
        }
    })
}

/// No controller writes to spec: in every object's managedFields, only a
/// kubectl manager owns `f:spec` fields.
pub fn assert_only_kubectl_owns_spec(objects: &[Value]) {
    for o in objects {
        for m in o["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields")
        {
            let manager = m["manager"].as_str().unwrap_or("");
            if m["fieldsV1"].get("f:spec").is_some() {
                assert!(
                    manager.starts_with("kubectl"),
                    "{} {}: {manager} owns spec fields: {m:#}",
                    o["kind"],
                    o["metadata"]["name"]
                );
            }
        }
    }
}
