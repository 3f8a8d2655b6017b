//! Starts the embedded API server for a test and drives the real `kubectl` and
//! kube-rs clients against it. Each server gets its own data directory and an
//! ephemeral port; kubectl gets its own HOME (discovery cache) and no proxy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use server_manager::apiserver::{ApiServer, ApiServerConfig, Handle};

/// A running API server with its data directory and kubeconfig.
pub struct TestApi {
    /// The data directory (kept across [`TestApi::restart`]).
    pub dir: tempfile::TempDir,
    /// The running server.
    pub handle: Option<Handle>,
    /// `DIR/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The change window given to the server.
    pub watch_window: usize,
    /// Interval between watch bookmarks.
    pub bookmark_interval: std::time::Duration,
    /// RBAC enforced for ServiceAccount tokens.
    pub rbac: bool,
    /// Where the audit log goes, if anywhere.
    pub audit_log: Option<PathBuf>,
}

impl TestApi {
    /// Starts a server in a fresh directory.
    pub fn start() -> Self {
        Self::start_with_window(10_000)
    }

    /// Starts a server whose watch window holds only `window` changes.
    pub fn start_with_window(window: usize) -> Self {
        Self::start_custom(window, std::time::Duration::from_secs(1))
    }

    /// Starts a server with a given change window and bookmark interval.
    pub fn start_custom(window: usize, bookmark_interval: std::time::Duration) -> Self {
        Self::start_full(window, bookmark_interval, false, false)
    }

    /// Starts a server with RBAC on and the audit log in `DIR/audit.log`.
    pub fn start_rbac() -> Self {
        Self::start_full(10_000, std::time::Duration::from_secs(1), true, true)
    }

    fn start_full(
        window: usize,
        bookmark_interval: std::time::Duration,
        rbac: bool,
        audit: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let audit_log = audit.then(|| dir.path().join("audit.log"));
        let mut api = Self {
            dir,
            handle: None,
            kubeconfig,
            watch_window: window,
            bookmark_interval,
            rbac,
            audit_log,
        };
        api.boot();
        api
    }

    fn boot(&mut self) {
        let mut config = ApiServerConfig::new(self.dir.path().join("data"));
        config.watch_window = self.watch_window;
        config.bookmark_interval = self.bookmark_interval;
        config.rbac = self.rbac;
        config.audit_log = self.audit_log.clone();
        let handle = ApiServer::start(config).expect("start the API server");
        std::fs::write(&self.kubeconfig, handle.kubeconfig()).expect("write kubeconfig");
        self.handle = Some(handle);
    }

    /// The running server's handle.
    pub fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("server running")
    }

    /// Stops the server and starts it again from the same directory.
    pub fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.boot();
    }

    /// A kube-rs client (configuration built from the handle: no proxy env).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.handle().client_config()).expect("kube client")
    }

    /// `kubectl ARGS` with this server's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None)
    }

    /// `kubectl ARGS` with `stdin` piped in.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        crate::support::require("kubectl", "kubernetes-client");
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &home)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// `kubectl ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    /// `kubectl ARGS` with stdin, which must succeed; returns stdout.
    pub fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_in(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl ARGS` with stdin, which must fail; returns stderr.
    pub fn fails_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_in(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes `content` to `DIR/name` and returns the path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write file");
        p
    }
}

/// The repository's `crds/` directory.
pub fn crds_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
}

/// A valid Cluster, Server (with its SSH Secret) and Image, matching `crds/`.
pub const SAMPLE_MANIFESTS: &str = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Cluster
metadata:
  name: lab
spec:
  parameters:
    GLOBAL:
      cloud_orchestrator: kubernetes
  rollout:
    maxUnavailable: {default: 2}
---
apiVersion: servermanager.contrail.io/v1alpha1
kind: Image
metadata:
  name: controller-5-0
spec:
  imageId: contrail-container
  imageType: controller
  version: "5.0-214"
  source:
    reference: registry.example.com/contrail/controller:5.0-214
---
apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata:
  name: node1
spec:
  clusterRef:
    name: lab
  host: 10.0.0.11
  roles: [controller]
  ssh:
    user: root
    port: 22
    secretRef:
      name: ssh
"#;

/// A kube-rs configuration read from a kubeconfig written by the API server
/// (server, CA data, token), without the proxy variables a kubeconfig-derived
/// `Config` would read.
pub fn config_from_kubeconfig(path: &Path) -> kube::Config {
    use base64::Engine;
    let text = std::fs::read_to_string(path).expect("read kubeconfig");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("kubeconfig yaml");
    let cluster = &doc["clusters"][0]["cluster"];
    let url = cluster["server"].as_str().expect("server");
    let mut config = kube::Config::new(url.parse().expect("url"));
    if let Some(ca) = cluster["certificate-authority-data"].as_str() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("ca base64");
        let pem = String::from_utf8(pem).expect("ca pem");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("ca der");
        config.root_cert = Some(vec![der]);
    }
    let token = doc["users"][0]["user"]["token"].as_str().expect("token");
    config.auth_info.token = Some(token.to_string().into());
    config
}
