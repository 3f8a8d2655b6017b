//! Fleet rollouts end to end, on real components (standalone driven by
//! kubectl, Debian's docker-registry, sshd "hosts" on loopback, Ansible, the
//! machine's Docker engine): a lab of 6 hosts — 2 controllers, 1 analyticsdb,
//! 3 agents.
//!
//! - The first install starts runs on every host without waiting for one
//!   another (the run records overlap, up to the runner's capacity).
//! - An image change with `maxUnavailable: {default: 1, agent: 2}` and the
//!   order analyticsdb → controller → analytics → agent: the run records show
//!   the roles in order and never more than a role's budget at once; the
//!   Cluster's status follows the rollout role by role.
//! - An image whose container exits after two seconds: its Server never
//!   becomes Ready (ContainerNotReady, exit code and log tail in the
//!   message); with `maxFailures: 1` the rollout pauses after it, the other
//!   agents keep their previous containers running (checked with docker),
//!   the Cluster is Stalled/RolloutPaused; a fixed image resumes the rollout
//!   to completion.
//! - `docker kill` of a role container: the next drift check marks the
//!   Server not Ready naming the container, and repairs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use support::lab::{Host, Standalone, condition, ready, run_records, server_manifest, suffix};
use support::registry::TestRegistry;
use support::{docker_import_busybox, run};

/// (name, address, roles)
const HOSTS: [(&str, &str, &[&str]); 6] = [
    ("ro-ctrl-1", "127.0.0.61", &["controller", "analytics"]),
    ("ro-ctrl-2", "127.0.0.62", &["controller"]),
    ("ro-db-1", "127.0.0.63", &["analyticsdb"]),
    ("ro-agent-1", "127.0.0.64", &["agent"]),
    ("ro-agent-2", "127.0.0.65", &["agent"]),
    ("ro-agent-3", "127.0.0.66", &["agent"]),
];
const ROLES: [&str; 4] = ["analyticsdb", "controller", "analytics", "agent"];

/// A `docker save` tarball of a busybox image running `cmd`, in `dir`.
fn tarball(dir: &Path, run_id: &str, name: &str, cmd: &str) -> PathBuf {
    let tag = format!("sm-rollout-{run_id}-{name}:1");
    docker_import_busybox(&tag, cmd);
    let path = dir.join(format!("{name}.tar"));
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&path)
        .arg(&tag));
    run(Command::new("docker").args(["rmi", &tag]));
    path
}

fn image(name: &str, role: &str, version: &str, tarball: &Path) -> Value {
    json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Image",
        "metadata": {"name": name},
        "spec": {"imageId": "rollout", "imageType": role, "version": version,
                 "source": {"path": tarball.display().to_string()}}
    })
}

/// Images `<version>-<role>` for `roles`, all from `tarball`.
fn images(version: &str, roles: &[&str], tarball: &Path) -> Vec<Value> {
    roles
        .iter()
        .map(|r| image(&format!("{version}-{r}"), r, version, tarball))
        .collect()
}

fn image_map(version: &str) -> Value {
    ROLES
        .iter()
        .map(|r| (r.to_string(), json!(format!("{version}-{r}"))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The examples' Cluster (its parameters make every role file valid),
/// pointed at the lab's registry and images, with a fast rollout policy.
fn cluster(registry: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster.yaml"
    ))
    .unwrap();
    let mut c: Value = serde_yaml::from_str(&text).unwrap();
    c["metadata"]["name"] = json!("ro");
    c["spec"]["registry"] = json!({"address": registry, "insecure": true});
    c["spec"]["images"] = image_map("v1");
    c["spec"]["rollout"] = json!({
        "minReadySeconds": 8,
        "maxUnavailable": {"default": 1, "agent": 2},
        "order": ROLES,
        "maxFailures": 1
    });
    c
}

struct Span {
    host: String,
    start: Timestamp,
    end: Timestamp,
}

/// Provision runs started after `since`, by host and time.
fn provision_runs(data: &Path, since: Timestamp) -> Vec<Span> {
    let mut out: Vec<Span> = run_records(&data.join("runner"))
        .into_iter()
        .filter(|r| r["playbook"] == "provision")
        .filter_map(|r| {
            Some(Span {
                host: r["host"].as_str()?.to_string(),
                start: r["started"].as_str()?.parse().ok()?,
                end: r["finished"].as_str()?.parse().ok()?,
            })
        })
        .filter(|s| s.start >= since)
        .collect();
    out.sort_by_key(|s| s.start);
    out
}

/// The most spans running at one moment.
fn max_overlap(spans: &[&Span]) -> usize {
    spans
        .iter()
        .map(|s| {
            spans
                .iter()
                .filter(|o| o.start <= s.start && s.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn roles_of(address: &str) -> &'static [&'static str] {
    HOSTS.iter().find(|h| h.1 == address).map(|h| h.2).unwrap()
}

fn all_ready(s: &Standalone) -> bool {
    let list: Value = serde_json::from_str(&s.kubectl(&["get", "servers", "-o", "json"])).unwrap();
    list["items"]
        .as_array()
        .is_some_and(|i| i.len() == HOSTS.len() && i.iter().all(ready))
}

fn cluster_status(s: &Standalone) -> Value {
    s.get("cluster", "ro")
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null)
}

/// What a failed assertion needs: every Server's run, update and Ready, the
/// Cluster's rollout, the run records and the operator's log.
fn dump(s: &Standalone, data: &Path) -> String {
    let list: Value = serde_json::from_str(&s.kubectl(&["get", "servers", "-o", "json"])).unwrap();
    let mut out = String::new();
    for v in list["items"].as_array().unwrap() {
        out.push_str(&format!(
            "{}: run={} update={} ready={} containers={}\n",
            v["metadata"]["name"],
            v["status"]["run"],
            v["status"]["update"],
            condition(v, "Ready").unwrap_or(Value::Null),
            v["status"]["containers"]
        ));
    }
    out.push_str(&format!("cluster: {:#}\n", cluster_status(s)));
    let mut runs = run_records(&data.join("runner"));
    runs.sort_by(|a, b| a["created"].as_str().cmp(&b["created"].as_str()));
    for r in runs {
        out.push_str(&format!(
            "run {} {} {} {}..{} {}\n",
            r["host"], r["playbook"], r["state"], r["started"], r["finished"], r["message"]
        ));
    }
    out.push_str(&support::lab::tail(&s.log(), 60));
    out
}

fn container_image(container: &str) -> (String, String) {
    let out = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{.State.Status}} {{.Config.Image}}",
        container,
    ]));
    let mut parts = out.split_whitespace();
    (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    )
}

/// Waits for the rollout to complete, recording the current roles the
/// Cluster's status named on the way.
fn wait_complete(s: &Standalone, what: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let st = cluster_status(s);
        if let Some(role) = st["rollout"]["currentRole"].as_str()
            && seen.last().map(String::as_str) != Some(role)
        {
            seen.push(role.to_string());
        }
        if st["rollout"]["phase"] == "Complete" && all_ready(s) {
            let c = s.get("cluster", "ro").unwrap();
            if ready(&c) {
                return seen;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not complete in {timeout:?}; cluster status: {st:#}\n{}",
            s.kubectl_try(&["get", "servers", "-o", "wide"]).1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn rollouts_install_at_once_update_by_role_and_stop_on_failure() {
    let run_id = suffix();
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--runner-listen".into(),
            format!("127.0.0.1:{}", support::free_port()),
            "--image-dir".into(),
            work.path().display().to_string(),
            "--drift-interval".into(),
            "0".into(),
            "--max-backoff".into(),
            "10".into(),
        ],
    );
    let mut hosts: BTreeMap<&str, Host> = BTreeMap::new();
    let mut key: Option<String> = None;
    for (name, address, _) in HOSTS {
        let h = Host::new(address, name, &run_id, key.as_deref());
        key.get_or_insert_with(|| h.sshd.client_public_key());
        hosts.insert(name, h);
    }
    let first = &hosts[HOSTS[0].0];
    let known: String = hosts.values().map(|h| h.sshd.known_hosts()).collect();
    s.apply_ssh_secret(work.path(), "ro-ssh", &first.sshd.private_key(), &known);

    let v1 = tarball(work.path(), &run_id, "v1", "/bin/sleep 3600");
    let v2 = tarball(work.path(), &run_id, "v2", "/bin/sleep 3601");
    let crash = tarball(
        work.path(),
        &run_id,
        "crash",
        "/bin/sh -c 'echo agent: bad parameter vrouter_physical_interface; sleep 2; exit 3'",
    );
    let v3 = tarball(work.path(), &run_id, "v3", "/bin/sleep 3602");

    // 1. First install: every host at once, up to the runner's capacity (4).
    let mut objects = vec![cluster(&registry.addr)];
    objects.extend(images("v1", &ROLES, &v1));
    for (name, address, roles) in HOSTS {
        let h = &hosts[name];
        objects.push(server_manifest(
            name,
            "ro",
            address,
            h.sshd.port,
            "ro-ssh",
            roles,
            h.layout(),
        ));
    }
    let t0 = Timestamp::now();
    s.apply(work.path(), "lab.yaml", &objects);
    wait_complete(&s, "first install", Duration::from_secs(600));
    let runs = provision_runs(&data, t0);
    assert_eq!(runs.len(), HOSTS.len(), "one install run per host");
    let all: Vec<&Span> = runs.iter().collect();
    assert_eq!(
        max_overlap(&all),
        4,
        "installs did not run side by side up to the runner's 4 slots"
    );
    let servers = s.kubectl(&["get", "servers"]);
    assert!(servers.contains("CONTAINERS"), "{servers}");
    assert!(
        servers.contains("2/2") && servers.contains("1/1"),
        "{servers}"
    );
    let st = s.get("server", "ro-ctrl-1").unwrap()["status"].clone();
    let containers = st["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{st:#}");
    for c in containers {
        assert_eq!(c["state"], "Running", "{c}");
        assert_eq!(c["ready"], true, "{c}");
        assert!(c["imageId"].as_str().unwrap().starts_with("sha256:"), "{c}");
        assert!(c["startedAt"].is_string(), "{c}");
    }

    // 2. An image change rolls role by role within the budgets.
    let mut v2_images = images("v2", &ROLES, &v2);
    s.apply(work.path(), "v2-images.yaml", &v2_images);
    s.wait_until("v2 images pushed", Duration::from_secs(120), |s| {
        ROLES.iter().all(|r| {
            s.get("image", &format!("v2-{r}"))
                .is_some_and(|i| ready(&i))
        })
    });
    let t1 = Timestamp::now();
    s.patch(
        "cluster",
        "ro",
        &json!({"spec": {"images": image_map("v2")}}),
    );
    let phases = wait_complete(&s, "v2 rollout", Duration::from_secs(900));
    assert_eq!(
        phases,
        ["analyticsdb", "controller", "agent"],
        "the Cluster's status should follow the rollout role by role"
    );
    let runs = provision_runs(&data, t1);
    assert_eq!(runs.len(), HOSTS.len(), "one update run per host");
    let of_role = |role: &str| -> Vec<&Span> {
        runs.iter()
            .filter(|r| {
                roles_of(&r.host)
                    .iter()
                    .min_by_key(|x| ROLES.iter().position(|y| y == *x))
                    == Some(&role)
            })
            .collect()
    };
    let (db, ctrl, agents) = (
        of_role("analyticsdb"),
        of_role("controller"),
        of_role("agent"),
    );
    assert_eq!((db.len(), ctrl.len(), agents.len()), (1, 2, 3));
    let last_end = |spans: &[&Span]| spans.iter().map(|s| s.end).max().unwrap();
    let first_start = |spans: &[&Span]| spans.iter().map(|s| s.start).min().unwrap();
    assert!(
        first_start(&ctrl) > last_end(&db),
        "controllers started before the database was updated"
    );
    assert!(
        first_start(&agents) > last_end(&ctrl),
        "agents started before the controllers were updated"
    );
    assert_eq!(max_overlap(&ctrl), 1, "more than one controller at once");
    assert_eq!(
        max_overlap(&agents),
        2,
        "the agents' budget of 2 was not used, or exceeded"
    );
    let rollout = cluster_status(&s)["rollout"].clone();
    assert_eq!(rollout["phase"], "Complete", "{rollout:#}");
    let agent_counts = rollout["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "agent")
        .cloned()
        .unwrap();
    assert_eq!(agent_counts["total"], 3, "{rollout:#}");
    assert_eq!(agent_counts["updated"], 3, "{rollout:#}");
    assert_eq!(agent_counts["maxUnavailable"], 2, "{rollout:#}");
    let events = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Cluster",
    ]);
    for reason in ["RolloutStarted", "RolloutRoleStarted", "RolloutComplete"] {
        assert!(events.contains(reason), "no {reason} event: {events}");
    }

    // 3. A crashing agent image pauses the rollout after one failure.
    s.patch(
        "cluster",
        "ro",
        &json!({"spec": {"rollout": {"maxUnavailable": {"agent": 1}}}}),
    );
    v2_images.clear();
    s.apply(
        work.path(),
        "crash.yaml",
        &[image("crash-agent", "agent", "crash", &crash)],
    );
    s.wait_until("crash image pushed", Duration::from_secs(120), |s| {
        s.get("image", "crash-agent").is_some_and(|i| ready(&i))
    });
    let t2 = Timestamp::now();
    s.patch(
        "cluster",
        "ro",
        &json!({"spec": {"images": {"agent": "crash-agent"}}}),
    );
    s.wait_until("the rollout paused", Duration::from_secs(300), |s| {
        cluster_status(s)["rollout"]["phase"] == "Paused"
    });
    let failed = cluster_status(&s)["rollout"]["failedServers"].clone();
    assert_eq!(failed, json!(["ro-agent-1"]), "{}", dump(&s, &data));
    let v = s.get("server", "ro-agent-1").unwrap();
    let r = condition(&v, "Ready").unwrap();
    assert_eq!(r["status"], "False", "{r}");
    assert_eq!(r["reason"], "ContainerNotReady", "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains(&hosts["ro-agent-1"].container("agent")),
        "{message}"
    );
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.contains("bad parameter vrouter_physical_interface"),
        "{message}"
    );
    let c = s.get("cluster", "ro").unwrap();
    let stalled = condition(&c, "Stalled").unwrap();
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("RolloutPaused")),
        "{stalled}"
    );
    // Nothing else moves: the other agents keep their v2 containers.
    std::thread::sleep(Duration::from_secs(15));
    let runs = provision_runs(&data, t2);
    assert_eq!(runs.len(), 1, "updates went on after the failure");
    for name in ["ro-agent-2", "ro-agent-3"] {
        let (state, img) = container_image(&hosts[name].container("agent"));
        assert_eq!(state, "running", "{name}");
        assert!(img.contains("rollout-agent:v2"), "{name} runs {img}");
    }
    let events = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Cluster",
    ]);
    assert!(events.contains("RolloutPaused"), "{events}");

    // A fixed image (a new generation of the Cluster) resumes the rollout.
    s.apply(
        work.path(),
        "v3.yaml",
        &[image("v3-agent", "agent", "v3", &v3)],
    );
    s.wait_until("v3 image pushed", Duration::from_secs(120), |s| {
        s.get("image", "v3-agent").is_some_and(|i| ready(&i))
    });
    let t3 = Timestamp::now();
    s.patch(
        "cluster",
        "ro",
        &json!({"spec": {"images": {"agent": "v3-agent"}}}),
    );
    wait_complete(&s, "the fixed rollout", Duration::from_secs(600));
    let runs = provision_runs(&data, t3);
    let agents: Vec<&Span> = runs.iter().collect();
    assert_eq!(agents.len(), 3, "every agent updated once");
    assert_eq!(max_overlap(&agents), 1);
    for (name, _, roles) in HOSTS {
        if roles == ["agent"] {
            let (state, img) = container_image(&hosts[name].container("agent"));
            assert_eq!(state, "running");
            assert!(img.contains("rollout-agent:v3"), "{name} runs {img}");
        }
    }

    // 4. `docker kill`: the next drift check names the container, repairs it.
    let at = s.args.iter().position(|a| a == "--drift-interval").unwrap();
    s.args[at + 1] = "5".into();
    s.restart();
    let victim = hosts["ro-agent-2"].container("agent");
    run(Command::new("docker").args(["kill", &victim]));
    s.wait_until("the drift check noticed", Duration::from_secs(120), |s| {
        s.get("server", "ro-agent-2")
            .and_then(|v| condition(&v, "Ready"))
            .is_some_and(|r| {
                r["reason"] == "ContainerNotReady"
                    && r["message"].as_str().unwrap_or("").contains(&victim)
            })
            || s.get("server", "ro-agent-2")
                .and_then(|v| condition(&v, "Drifted"))
                .is_some_and(|d| d["status"] == "True")
    });
    s.wait_until("repaired", Duration::from_secs(300), |s| {
        s.get("server", "ro-agent-2").is_some_and(|v| ready(&v))
            && container_image(&victim).0 == "running"
    });
    let events = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ro-agent-2",
    ]);
    assert!(events.contains("DriftDetected"), "{events}");
}
