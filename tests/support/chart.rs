//! The Helm chart (`charts/server-manager`) in tests, through Helm's own Go
//! code (PyPI `helm-python-sdk`): lint and render offline, install into an
//! API server, and the operator run exactly as the chart's Deployment runs it,
//! with the chart's ServiceAccount, against an API server enforcing RBAC.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/server-manager")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helm")
}

/// Panics with the way to get it when helm-python-sdk is missing.
pub fn require_sdk() {
    let ok = Command::new(super::python())
        .args(["-c", "import helm_python"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 module helm_python is missing: scripts/test.sh installs it (pip install helm-python-sdk)"
    );
}

fn python(script: &str, args: &[&str], home: &Path) -> std::process::Output {
    std::fs::create_dir_all(home).expect("helm home");
    Command::new(super::python())
        .arg(fixtures().join(script))
        .args(args)
        .env("HOME", home)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run python3")
}

/// One action of `helm_action.py` (install, upgrade, uninstall, list,
/// status) against `kubeconfig`; panics on failure; returns its JSON.
pub fn helm(kubeconfig: &Path, home: &Path, args: &[&str]) -> Value {
    let mut all = vec![kubeconfig.to_str().expect("path")];
    all.extend_from_slice(args);
    let out = python("helm_action.py", &all, home);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from helm_action.py")
}

/// `chart_tool.py lint|render` of the chart with `values`: `Ok(JSON)` or
/// `Err(Helm's error message)`.
pub fn chart_tool(action: &str, values: &Value, home: &Path) -> Result<Value, String> {
    let dir = chart_dir();
    let values = values.to_string();
    let out = python(
        "chart_tool.py",
        &[action, dir.to_str().expect("path"), &values],
        home,
    );
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON from chart_tool.py"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every object the chart renders with `values` (templates, then `crds/`).
pub fn render(values: &Value, home: &Path) -> Vec<Value> {
    let rendered = chart_tool("render", values, home)
        .unwrap_or_else(|e| panic!("helm render with {values} failed: {e}"));
    let mut objects = Vec::new();
    for (path, text) in rendered["templates"]
        .as_object()
        .expect("templates")
        .iter()
        .chain(rendered["crds"].as_object().expect("crds"))
    {
        if !path.ends_with(".yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text.as_str().expect("text")) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: not YAML: {e}\n{text}"));
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    objects
}

/// Writes a copy of `admin_kubeconfig` whose user is `token`.
pub fn token_kubeconfig(admin_kubeconfig: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(admin_kubeconfig).expect("kubeconfig");
    let mut v: Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for u in v["users"].as_array_mut().expect("users") {
        u["user"] = json!({ "token": token });
    }
    std::fs::write(out, serde_yaml::to_string(&v).expect("yaml")).expect("write kubeconfig");
}

/// The token of a new `kubernetes.io/service-account-token` Secret for the
/// ServiceAccount `sa` in `namespace`, as the legacy token controller fills it.
pub fn service_account_token(
    kubectl: impl Fn(&[&str]) -> String,
    namespace: &str,
    sa: &str,
) -> String {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{sa}-token"), "namespace": namespace,
                     "annotations": {"kubernetes.io/service-account.name": sa}},
        "type": "kubernetes.io/service-account-token"
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token.json");
    std::fs::write(&path, secret.to_string()).expect("write");
    kubectl(&["apply", "-f", path.to_str().expect("path")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b64 = kubectl(&[
            "get",
            "secret",
            "-n",
            namespace,
            &format!("{sa}-token"),
            "-o",
            "jsonpath={.data.token}",
        ]);
        if !b64.trim().is_empty() {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .expect("base64 token");
            return String::from_utf8(raw).expect("token");
        }
        assert!(Instant::now() < deadline, "no token filled in for {sa}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the operator's container paths are found on this machine, and the
/// endpoints it reaches instead of the chart's in-cluster Services.
pub struct Substitutes {
    /// The runner's token file (standalone's DATA_DIR/runner-token).
    pub runner_token_file: PathBuf,
    /// The runner's URL.
    pub runner_url: String,
    /// Where /healthz, /readyz and /metrics listen.
    pub health_listen: String,
    /// The directory standing for the `operator.imageVolume` mount.
    pub image_dir: PathBuf,
    /// The Pod's namespace and name (the Downward API's fieldRefs).
    pub namespace: String,
    pub pod_name: String,
}

/// The EndpointSlice Kubernetes' EndpointSlice controller keeps for the
/// runner Service `service` when its Pod `pod` is ready at `address:port`:
/// what the operator started with `--runner-service` watches. The embedded
/// API server runs no Pods, so the tests write it.
pub fn runner_endpoint_slice(
    service: &str,
    namespace: &str,
    pod: &str,
    address: &str,
    port: u16,
) -> Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{
            "addresses": [address],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
        }],
    })
}

/// `server-manager operator` started with the container args and env of the
/// chart's operator Deployment, as it is stored in the API server.
pub struct ChartOperator {
    child: Child,
    /// The arguments it was started with.
    pub args: Vec<String>,
    /// `http://HEALTH_LISTEN` + the paths of the Deployment's liveness and
    /// readiness probes.
    pub probe_urls: Vec<String>,
}

impl ChartOperator {
    /// `deployment` is the chart's operator Deployment (JSON), `kubeconfig`
    /// the identity to run with, `log` the file its output is appended to.
    /// Every argument is taken as rendered except those naming a container
    /// path or an in-cluster address, which `subs` maps; an argument this
    /// does not know fails the test (the chart changed: teach it here).
    pub fn start(deployment: &Value, kubeconfig: &Path, subs: &Substitutes, log: &Path) -> Self {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["name"], "operator", "{deployment}");
        let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let mut args = Vec::new();
        for a in container["args"].as_array().expect("args") {
            let a = a.as_str().expect("arg");
            let (flag, value) = a.split_once('=').unwrap_or((a, ""));
            let mapped = match flag {
                "operator"
                | "--registry"
                | "--registry-insecure"
                | "--drift-interval"
                | "--max-backoff"
                | "--concurrency"
                | "--leader-elect" => a.to_string(),
                "--runner-url" => {
                    assert!(value.starts_with("http://"), "{a}");
                    format!("--runner-url={}", subs.runner_url)
                }
                // The runner Service: its EndpointSlices (written by the
                // test, see `runner_endpoint_slice`) name the runners.
                "--runner-service" => {
                    assert!(value.ends_with("-runner"), "{a}");
                    a.to_string()
                }
                "--runner-token-file" => {
                    // The chart mounts the token Secret at this directory.
                    let mounts = container["volumeMounts"].as_array().expect("mounts");
                    assert!(
                        mounts.iter().any(|m| m["name"] == "runner-token"
                            && value.starts_with(m["mountPath"].as_str().unwrap())),
                        "{a} is not in the runner-token mount"
                    );
                    format!("--runner-token-file={}", subs.runner_token_file.display())
                }
                "--playbooks" => {
                    assert_eq!(
                        value, "/usr/share/server-manager/playbooks",
                        "see Dockerfile"
                    );
                    format!("--playbooks={}", playbooks.display())
                }
                "--image-dir" => {
                    assert_eq!(value, "/var/lib/server-manager/images", "{a}");
                    format!("--image-dir={}", subs.image_dir.display())
                }
                "--health-listen" => {
                    assert!(value.ends_with(":8080"), "{a}");
                    format!("--health-listen={}", subs.health_listen)
                }
                other => panic!("the chart's operator argument {other} is unknown to this test"),
            };
            args.push(mapped);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server-manager"));
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig);
        for e in container["env"].as_array().expect("env") {
            let name = e["name"].as_str().expect("env name");
            let value = match &e["value"] {
                Value::String(s) => s.clone(),
                _ => match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.namespace") => subs.namespace.clone(),
                    Some("metadata.name") => subs.pod_name.clone(),
                    other => panic!("env {name}: fieldRef {other:?} unknown to this test"),
                },
            };
            cmd.env(name, value);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("operator log");
        let child = cmd
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start server-manager operator");
        let probe_urls = ["livenessProbe", "readinessProbe"]
            .iter()
            .map(|p| {
                let path = container[p]["httpGet"]["path"]
                    .as_str()
                    .expect("probe path");
                format!("http://{}{path}", subs.health_listen)
            })
            .collect();
        ChartOperator {
            child,
            args,
            probe_urls,
        }
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One grant: (namespace or "" for cluster-wide, apiGroup, resource[/sub],
/// verb, resourceName or "" for any).
pub type Grant = (String, String, String, String, String);

/// Every grant of `roles` (Roles and ClusterRoles as JSON), one per
/// combination of a rule's groups, resources, verbs and names.
pub fn grants(roles: &[Value]) -> BTreeSet<Grant> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for role in roles {
        let ns = if role["kind"] == "Role" {
            role["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        for rule in role["rules"].as_array().expect("rules") {
            let mut names = strs(&rule["resourceNames"]);
            if names.is_empty() {
                names.push(String::new());
            }
            for g in strs(&rule["apiGroups"]) {
                for r in strs(&rule["resources"]) {
                    for v in strs(&rule["verbs"]) {
                        for n in &names {
                            out.insert((ns.clone(), g.clone(), r.clone(), v.clone(), n.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The requests `user` made, from the API server's audit log (JSON lines).
pub fn audited_requests(audit_log: &Path, user: &str) -> Vec<Value> {
    std::fs::read_to_string(audit_log)
        .expect("audit log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["user"] == user)
        .collect()
}

/// Whether audit record `r` is a use of `grant`.
pub fn uses(r: &Value, grant: &Grant) -> bool {
    let (ns, group, resource, verb, name) = grant;
    let res = match r["subresource"].as_str().unwrap_or("") {
        "" => r["resource"].as_str().unwrap_or("").to_string(),
        sub => format!("{}/{sub}", r["resource"].as_str().unwrap_or("")),
    };
    r["apiGroup"].as_str().unwrap_or("") == group
        && res == *resource
        && r["verb"].as_str().unwrap_or("") == verb
        && (ns.is_empty() || r["namespace"].as_str().unwrap_or("") == ns)
        && (name.is_empty() || r["name"].as_str().unwrap_or("") == name)
}

/// The chart's RBAC against what the operator did: no request of `user` was
/// refused (a missing permission), and every grant of `roles` was used by
/// at least one request (an unused grant is not least privilege).
pub fn assert_grants_used(audit_log: &Path, user: &str, roles: &[Value]) {
    let requests = audited_requests(audit_log, user);
    assert!(
        !requests.is_empty(),
        "no request of {user} in the audit log"
    );
    let refused: Vec<&Value> = requests.iter().filter(|r| r["code"] == 403).collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC is missing permissions the operator needs: {refused:#?}"
    );
    let grants = grants(roles);
    assert!(!grants.is_empty(), "no grants in {roles:?}");
    let unused: Vec<&Grant> = grants
        .iter()
        .filter(|g| !requests.iter().any(|r| uses(r, g)))
        .collect();
    assert!(
        unused.is_empty(),
        "grants of the chart that the operator never used (namespace, group, resource, verb, name): {unused:#?}"
    );
}
