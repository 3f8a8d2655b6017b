//! End to end, as a user runs it: `server-manager standalone`, `kubectl apply -f
//! examples/` (adapted to loopback hosts), real sshd hosts, real ansible, the
//! machine's Docker engine, a real registry.
//!
//! The operator runs as the Helm chart runs it: the chart is installed with
//! Helm's own code into standalone's API server, which enforces RBAC; the
//! operator gets the container arguments and environment of the chart's
//! Deployment and a token of the chart's ServiceAccount. At the end the
//! API server's audit of the operator's requests is held against the chart's
//! Roles: a refused request (a missing permission) or a grant nothing used
//! fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::chart::{ChartOperator, Substitutes};
use support::lab::{
    Host, Standalone, container_exists, docker_cat, image_tarball, registry_writes, run_records,
    suffix,
};
use support::registry::TestRegistry;

const MANAGED: [(&str, &str, &[&str]); 3] = [
    ("lab-ctrl-1", "127.0.0.11", &["controller", "analytics"]),
    ("lab-db-1", "127.0.0.12", &["analyticsdb"]),
    ("lab-compute-1", "127.0.0.21", &["agent"]),
];

/// The chart's release (namespace default).
const RELEASE: &str = "sm";

struct Lab {
    // Dropped first: the operator stops before the API server does.
    operator: ChartOperator,
    /// `system:serviceaccount:default:<the chart's ServiceAccount>`.
    operator_user: String,
    standalone: Standalone,
    registry: TestRegistry,
    hosts: BTreeMap<String, Host>,
    manifests: PathBuf,
    work: tempfile::TempDir,
    run_id: String,
}

impl Lab {
    fn secret_files(&self) -> (PathBuf, PathBuf) {
        let key = self.work.path().join("id_lab");
        let kh = self.work.path().join("known_hosts");
        // Every host accepts the key of the first one (see `setup`).
        let first = &self.hosts[MANAGED[0].0];
        std::fs::write(&key, first.sshd.private_key()).unwrap();
        let lines: String = self.hosts.values().map(|h| h.sshd.known_hosts()).collect();
        std::fs::write(&kh, lines).unwrap();
        (key, kh)
    }

    /// Creates or updates Secret lab-ssh from the hosts' keys, as a user would.
    fn apply_secret(&self) {
        let (key, kh) = self.secret_files();
        let yaml = self.standalone.kubectl(&[
            "create",
            "secret",
            "generic",
            "lab-ssh",
            &format!("--from-file=ssh-privatekey={}", key.display()),
            &format!("--from-file=known_hosts={}", kh.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        let path = self.work.path().join("secret.yaml");
        std::fs::write(&path, yaml).unwrap();
        self.standalone
            .kubectl(&["apply", "-f", path.to_str().unwrap()]);
    }

    fn add_host(&mut self, name: &str, address: &str) {
        let key = self.hosts[MANAGED[0].0].sshd.client_public_key();
        let host = Host::new(address, name, &self.run_id, Some(&key));
        self.hosts.insert(name.to_string(), host);
    }

    fn server(&self, name: &str) -> Value {
        self.standalone
            .get("server", name)
            .unwrap_or_else(|| panic!("server {name} missing"))
    }

    fn applied_hash(&self, name: &str) -> Option<String> {
        self.server(name)["status"]["appliedHash"]
            .as_str()
            .map(str::to_string)
    }

    fn provision_runs_since(&self, since: &str) -> Vec<Value> {
        let mut runs: Vec<Value> = run_records(&self.standalone.data_dir.join("runner"))
            .into_iter()
            .filter(|r| {
                r["playbook"] == "provision" && r["created"].as_str().unwrap_or("") >= since
            })
            .collect();
        runs.sort_by(|a, b| a["started"].as_str().cmp(&b["started"].as_str()));
        runs
    }
}

fn ready(s: &Value) -> bool {
    s["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }) && s["status"]["observedGeneration"] == s["metadata"]["generation"]
}

/// Write requests (create, update, patch, delete) in the API server's audit
/// log: (to the leader-election Lease, to anything else).
fn audited_writes(lab: &Lab) -> (usize, usize) {
    let log = std::fs::read_to_string(lab.work.path().join("audit.log")).unwrap_or_default();
    assert!(!log.is_empty(), "the audit log is empty");
    let (mut lease, mut other) = (0, 0);
    for r in log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            matches!(
                r["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
    {
        if r["resource"] == "leases" && r["user"] == lab.operator_user {
            lease += 1;
        } else {
            other += 1;
        }
    }
    (lease, other)
}

/// The resourceVersion of every Cluster, Server and Image.
fn object_versions(lab: &Lab) -> Vec<String> {
    lab.standalone
        .kubectl(&[
            "get",
            "clusters,servers,images",
            "-o",
            "jsonpath={range .items[*]}{.metadata.resourceVersion} {end}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Copies `examples/` into `dir`, adapted to the lab: loopback hosts, SSH ports,
/// per-host directories and container names, the test registry and tarball.
fn adapt_examples(lab_hosts: &BTreeMap<String, Host>, registry: &str, tarball: &Path, dir: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("10.84.0.", "127.0.0.");
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            match v["kind"].as_str() {
                Some("Cluster") => {
                    v["spec"]["registry"] = json!({"address": registry, "insecure": true})
                }
                Some("Image") if v["spec"]["category"] == "container" => {
                    v["spec"]["source"] = json!({"path": tarball.display().to_string()})
                }
                Some("Server") => {
                    if let Some(h) = lab_hosts.get(&name) {
                        v["spec"]["ssh"]["port"] = json!(h.sshd.port);
                        v["spec"]["layout"] = h.layout();
                    }
                }
                _ => {}
            }
            docs.push(serde_yaml::to_string(&v).unwrap());
        }
        std::fs::write(dir.join(path.file_name().unwrap()), docs.join("---\n")).unwrap();
    }
}

fn setup(extra_args: &[String]) -> Lab {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let mut hosts = BTreeMap::new();
    let mut key: Option<String> = None;
    for (name, addr, _) in MANAGED {
        let h = Host::new(addr, name, &run_id, key.as_deref());
        key.get_or_insert_with(|| h.sshd.client_public_key());
        hosts.insert(name.to_string(), h);
    }
    let tarball = image_tarball(work.path(), &run_id);
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    adapt_examples(&hosts, &registry.addr, &tarball, &manifests);
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let runner_listen = format!("127.0.0.1:{}", support::free_port());
    let mut args = vec![
        "--registry".to_string(),
        registry.addr.clone(),
        "--runner-listen".into(),
        runner_listen.clone(),
        "--audit-log".into(),
        work.path().join("audit.log").display().to_string(),
        "--rbac".into(),
        "--no-operator".into(),
    ];
    args.extend(extra_args.iter().cloned());
    let standalone = Standalone::start(&data, &args);
    let (operator, operator_user) =
        chart_operator(&standalone, &registry.addr, &runner_listen, work.path());
    Lab {
        operator,
        operator_user,
        standalone,
        registry,
        hosts,
        manifests,
        work,
        run_id,
    }
}

/// Installs the chart (its registry off: the operator pushes to the lab's)
/// and starts the operator as the chart's Deployment runs it, with a token
/// of the chart's ServiceAccount.
fn chart_operator(
    standalone: &Standalone,
    registry: &str,
    runner_listen: &str,
    work: &Path,
) -> (ChartOperator, String) {
    use support::chart::{chart_dir, helm, service_account_token, token_kubeconfig};
    let values = json!({"registry": {"enabled": false, "address": registry, "insecure": true}});
    let r = helm(
        &standalone.kubeconfig,
        &work.join("helm-home"),
        &[
            "install",
            RELEASE,
            chart_dir().to_str().unwrap(),
            &values.to_string(),
        ],
    );
    assert_eq!(r["status"], "deployed", "{r}");
    let deployment: Value = serde_json::from_str(&standalone.kubectl(&[
        "get",
        "deployment",
        &format!("{RELEASE}-server-manager-operator"),
        "-o",
        "json",
    ]))
    .unwrap();
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    // The runner, as the runner Service's EndpointSlice names it.
    let (address, port) = runner_listen.rsplit_once(':').expect("host:port");
    let slice = support::chart::runner_endpoint_slice(
        &format!("{RELEASE}-server-manager-runner"),
        "default",
        &format!("{RELEASE}-server-manager-runner-0"),
        address,
        port.parse().expect("port"),
    );
    let slice_file = work.join("runner-endpointslice.json");
    std::fs::write(&slice_file, slice.to_string()).unwrap();
    standalone.kubectl(&["apply", "-f", slice_file.to_str().unwrap()]);
    let token = service_account_token(|a| standalone.kubectl(a), "default", &sa);
    let kubeconfig = work.join("operator-kubeconfig");
    token_kubeconfig(&standalone.kubeconfig, &token, &kubeconfig);
    let subs = Substitutes {
        runner_token_file: standalone.data_dir.join("runner-token"),
        runner_url: format!("http://{runner_listen}"),
        health_listen: format!("127.0.0.1:{}", support::free_port()),
        image_dir: work.to_path_buf(),
        namespace: "default".into(),
        pod_name: format!("{RELEASE}-server-manager-operator-0"),
    };
    let operator = ChartOperator::start(
        &deployment,
        &kubeconfig,
        &subs,
        &standalone.data_dir.join("standalone.log"),
    );
    (operator, format!("system:serviceaccount:default:{sa}"))
}

/// The chart's ClusterRole and Roles, as installed.
fn chart_roles(lab: &Lab) -> Vec<Value> {
    let list: Value = serde_json::from_str(&lab.standalone.kubectl(&[
        "get",
        "clusterroles,roles",
        "-A",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "json",
    ]))
    .unwrap();
    let roles = list["items"].as_array().unwrap().clone();
    assert!(roles.len() >= 3, "{roles:#?}");
    roles
}

fn wait_all_ready(lab: &Lab, timeout: Duration) {
    lab.standalone
        .wait_until("every Server Ready", timeout, |s| {
            let list: Value =
                serde_json::from_str(&s.kubectl(&["get", "servers", "-o", "json"])).unwrap();
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty() && items.iter().all(ready))
        });
}

/// Files on the "hosts" equal `server-manager render --out`, and so does what
/// each container reads at /etc/contrailctl/<role>.conf.
fn assert_files_match_render(lab: &Lab) {
    // Render from what the API server holds now (the manifests were patched).
    let live = lab.work.path().join("live.yaml");
    std::fs::write(
        &live,
        lab.standalone
            .kubectl(&["get", "clusters,servers,images", "-o", "yaml"]),
    )
    .unwrap();
    for (name, host) in &lab.hosts {
        let out = lab.work.path().join(format!("render-{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_server-manager"))
            .args(["render", "-f"])
            .arg(&live)
            .args(["--server", name, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "render {name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let roles: Vec<String> = lab.server(name)["spec"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        for role in roles {
            let expected = std::fs::read_to_string(out.join(format!("{role}.conf"))).unwrap();
            let on_host = std::fs::read_to_string(host.config_path(&role)).unwrap();
            assert_eq!(
                on_host, expected,
                "{name}/{role}.conf on the host differs from render"
            );
            let in_container = docker_cat(
                &host.container(&role),
                &format!("/etc/contrailctl/{role}.conf"),
            );
            assert_eq!(
                in_container, expected,
                "{name}/{role}.conf in the container differs from render"
            );
        }
    }
}

fn patch(lab: &Lab, kind: &str, name: &str, patch: Value) {
    lab.standalone.kubectl(&[
        "patch",
        kind,
        name,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

/// Waits until the Servers in `names` have an applied hash other than `before`
/// and are Ready.
fn wait_reprovisioned(lab: &Lab, names: &[&str], before: &BTreeMap<String, Option<String>>) {
    lab.standalone.wait_until(
        &format!("{names:?} re-provisioned"),
        Duration::from_secs(300),
        |s| {
            names.iter().all(|n| {
                let v = s.get("server", n).unwrap();
                ready(&v) && v["status"]["appliedHash"].as_str().map(str::to_string) != before[*n]
            })
        },
    );
}

fn hashes(lab: &Lab) -> BTreeMap<String, Option<String>> {
    lab.hosts
        .keys()
        .map(|n| (n.clone(), lab.applied_hash(n)))
        .collect()
}

#[test]
fn lab_converges_idles_and_follows_changes() {
    let mut lab = setup(&[]);
    lab.apply_secret();
    lab.standalone
        .kubectl(&["apply", "-f", lab.manifests.to_str().unwrap()]);
    wait_all_ready(&lab, Duration::from_secs(600));
    for image in [
        "controller-5.0-214",
        "analytics-5.0-214",
        "analyticsdb-5.0-214",
        "agent-5.0-214",
    ] {
        let v = lab.standalone.get("image", image).unwrap();
        assert!(
            v["status"]["digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{v}"
        );
    }
    // The chart's probes pass on the operator.
    for url in &lab.operator.probe_urls {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--noproxy", "*", url])
            .output()
            .unwrap();
        assert!(out.status.success(), "probe {url} failed");
    }
    // As a user checks it: kubectl wait, the printer columns, describe.
    lab.standalone.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "servers",
        "--all",
        "--timeout=120s",
    ]);
    let table = lab.standalone.kubectl(&["get", "servers"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CLUSTER",
            "HOST",
            "ROLES",
            "READY",
            "CONTAINERS",
            "PROGRESS",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("lab-ctrl-1")
            && l.contains("127.0.0.11")
            && l.contains("True")
            && l.contains("2/2")),
        "{table}"
    );
    assert_files_match_render(&lab);
    let describe = lab
        .standalone
        .kubectl(&["describe", "server", "lab-ctrl-1"]);
    assert!(
        describe.contains("Provisioned"),
        "describe shows no Provisioned event:\n{describe}"
    );

    // Idle: nothing is written anywhere.
    // Only the leader's Lease renewals (every 5 s) are written.
    let (versions, runs, reg) = (
        object_versions(&lab),
        run_records(&lab.standalone.data_dir.join("runner")).len(),
        registry_writes(&lab.registry),
    );
    let (lease0, writes0) = audited_writes(&lab);
    assert!(reg > 0, "the registry access log counts writes");
    std::thread::sleep(Duration::from_secs(60));
    let (lease1, writes1) = audited_writes(&lab);
    assert_eq!(writes1, writes0, "API write requests while idle");
    assert!(
        (8..=16).contains(&(lease1 - lease0)),
        "{} Lease renewals in 60 s",
        lease1 - lease0
    );
    assert_eq!(object_versions(&lab), versions, "API writes while idle");
    assert_eq!(
        run_records(&lab.standalone.data_dir.join("runner")).len(),
        runs,
        "runs while idle"
    );
    assert_eq!(
        registry_writes(&lab.registry),
        reg,
        "registry writes while idle"
    );

    // GitOps: applying the same manifests again changes nothing.
    let again = lab
        .standalone
        .kubectl(&["apply", "-f", lab.manifests.to_str().unwrap()]);
    let lines: Vec<&str> = again.lines().collect();
    assert_eq!(lines.len(), 10, "{again}");
    assert!(
        lines.iter().all(|l| l.ends_with(" unchanged")),
        "a second kubectl apply of the same manifests changed something:\n{again}"
    );

    // A cluster parameter every role file has: every managed Server, one at
    // a time (one per role, roles in order: the database, the controller, the
    // agent).
    let before = hashes(&lab);
    let t = now();
    patch(
        &lab,
        "cluster",
        "lab",
        json!({"spec": {"parameters": {"GLOBAL": {"log_level": "SYS_DEBUG"}}}}),
    );
    wait_reprovisioned(&lab, &["lab-ctrl-1", "lab-db-1", "lab-compute-1"], &before);
    let runs = lab.provision_runs_since(&t);
    let mut hosts: Vec<&str> = runs.iter().map(|r| r["host"].as_str().unwrap()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        ["127.0.0.11", "127.0.0.12", "127.0.0.21"],
        "exactly one run per Server: {runs:#?}"
    );
    for pair in runs.windows(2) {
        assert!(
            pair[1]["started"].as_str() >= pair[0]["finished"].as_str(),
            "two updates overlapped although the roles go in order: {pair:#?}"
        );
    }
    for (name, host) in &lab.hosts {
        let role = MANAGED.iter().find(|m| m.0 == name).unwrap().2[0];
        assert!(
            std::fs::read_to_string(host.config_path(role))
                .unwrap()
                .contains("log_level = SYS_DEBUG")
        );
    }

    // A parameter only the controller file has: only lab-ctrl-1.
    let before = hashes(&lab);
    let t = now();
    patch(
        &lab,
        "cluster",
        "lab",
        json!({"spec": {"parameters": {"CONTROLLER": {"bgp_asn": "64513"}}}}),
    );
    wait_reprovisioned(&lab, &["lab-ctrl-1"], &before);
    std::thread::sleep(Duration::from_secs(5));
    let runs = lab.provision_runs_since(&t);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["host"], "127.0.0.11");
    assert_eq!(lab.applied_hash("lab-db-1"), before["lab-db-1"]);

    // A server override: only that Server.
    let before = hashes(&lab);
    let t = now();
    patch(
        &lab,
        "server",
        "lab-compute-1",
        json!({"spec": {"parameters": {"AGENT": {"vrouter_physical_interface": "eth2"}}}}),
    );
    wait_reprovisioned(&lab, &["lab-compute-1"], &before);
    std::thread::sleep(Duration::from_secs(5));
    let runs = lab.provision_runs_since(&t);
    assert_eq!(
        runs.iter()
            .map(|r| r["host"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["127.0.0.21"]
    );
    assert!(
        std::fs::read_to_string(lab.hosts["lab-compute-1"].config_path("agent"))
            .unwrap()
            .contains("vrouter_physical_interface = eth2")
    );
    assert_files_match_render(&lab);

    // A new controller changes controller_nodes everywhere.
    lab.add_host("lab-ctrl-2", "127.0.0.13");
    lab.apply_secret();
    let h = &lab.hosts["lab-ctrl-2"];
    let manifest = json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": "lab-ctrl-2"},
        "spec": {"clusterRef": {"name": "lab"}, "host": "127.0.0.13", "roles": ["controller"],
                 "ssh": {"port": h.sshd.port, "secretRef": {"name": "lab-ssh"}}, "layout": h.layout()}
    });
    std::fs::write(
        lab.manifests.join("ctrl-2.yaml"),
        serde_yaml::to_string(&manifest).unwrap(),
    )
    .unwrap();
    lab.standalone.kubectl(&[
        "apply",
        "-f",
        lab.manifests.join("ctrl-2.yaml").to_str().unwrap(),
    ]);
    let nodes = "controller_nodes = 127.0.0.11,127.0.0.13,127.0.0.10\n";
    lab.standalone.wait_until(
        "controller_nodes updated everywhere",
        Duration::from_secs(400),
        |_| {
            lab.hosts.iter().all(|(name, host)| {
                let role = if name == "lab-ctrl-2" {
                    "controller"
                } else {
                    MANAGED.iter().find(|m| m.0 == name).unwrap().2[0]
                };
                std::fs::read_to_string(host.config_path(role)).is_ok_and(|t| t.contains(nodes))
            })
        },
    );
    wait_all_ready(&lab, Duration::from_secs(300));
    assert_files_match_render(&lab);

    // Deleting a Server removes its containers and files, then the resource.
    let (ok, _, err) =
        lab.standalone
            .kubectl_try(&["delete", "server", "lab-ctrl-2", "--timeout=300s"]);
    assert!(ok, "{err}");
    assert!(lab.standalone.get("server", "lab-ctrl-2").is_none());
    let gone = &lab.hosts["lab-ctrl-2"];
    assert!(!container_exists(&gone.container("controller")));
    assert!(!gone.config_path("controller").exists());
    std::fs::remove_file(lab.manifests.join("ctrl-2.yaml")).unwrap();
    lab.hosts.remove("lab-ctrl-2");
    lab.standalone
        .wait_until("controller_nodes shrunk", Duration::from_secs(400), |_| {
            std::fs::read_to_string(lab.hosts["lab-compute-1"].config_path("agent"))
                .is_ok_and(|t| t.contains("controller_nodes = 127.0.0.11,127.0.0.10\n"))
        });
    wait_all_ready(&lab, Duration::from_secs(300));

    // No controller writes to spec: only the user's kubectl owns spec fields.
    support::lab::assert_only_kubectl_owns_spec(&lab.standalone.contrail_objects());

    // The chart's RBAC is exactly what the operator used.
    support::chart::assert_grants_used(
        &lab.work.path().join("audit.log"),
        &lab.operator_user,
        &chart_roles(&lab),
    );
}
