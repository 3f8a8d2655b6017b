//! GitOps readiness, as a GitOps tool sees it: `kubectl apply -f examples/`
//! (unchanged, as committed) against a running `server-manager standalone`;
//! every object gets a kstatus status (observedGeneration, Ready,
//! Reconciling, Stalled); a second apply reports `unchanged`; no controller
//! owns a spec field; and the Argo CD health check of `docs/argocd-health.lua`,
//! run by a real Lua 5.1 interpreter (Argo CD runs gopher-lua, Lua 5.1) on the
//! live objects, agrees with kstatus.
//!
//! The examples' tarballs do not exist here: the container Images stall on
//! them, and so do the managed Servers that need them and their Cluster
//! (Degraded); the External Server and the package Image are Ready
//! (Healthy); an unobserved generation is Progressing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::lab::Standalone;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is_true(o: &Value, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c["status"] == "True")
}

/// kstatus's reading of an object (sigs.k8s.io/cli-utils/pkg/kstatus):
/// InProgress, Failed or Current, in Argo CD's words.
fn kstatus(o: &Value) -> &'static str {
    if o["status"]["observedGeneration"] != o["metadata"]["generation"] {
        "Progressing"
    } else if is_true(o, "Stalled") {
        "Degraded"
    } else if is_true(o, "Reconciling") {
        "Progressing"
    } else if is_true(o, "Ready") {
        "Healthy"
    } else {
        "Progressing"
    }
}

/// Argo CD's health of `o` by docs/argocd-health.lua: (status, message).
fn argocd_health(o: &Value) -> (String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/argocd-health.lua");
    // As Argo CD calls it: the object in the global `obj`, the result returned.
    let driver = format!(
        r#"local cjson = require "cjson"
obj = cjson.decode(io.read("*a"))
local check = assert(loadfile({script:?}))
local hs = check()
io.write(hs.status, "\n", hs.message or "", "\n")"#,
        script = script.display().to_string()
    );
    let mut child = Command::new("lua5.1")
        .args(["-e", &driver])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lua5.1 (scripts/test.sh installs Debian packages lua5.1, lua-cjson)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(o.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the health check failed on {}: {}",
        o["metadata"]["name"],
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap_or("").to_string(),
        lines.next().unwrap_or("").to_string(),
    )
}

/// Every object observed at its generation, with the three kstatus
/// conditions, and done: Current or Failed, as `flux`'s wait sees it.
fn settled(s: &Standalone) -> bool {
    let all = s.contrail_objects();
    all.len() == 10
        && all.iter().all(|o| {
            o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && ["Ready", "Reconciling", "Stalled"]
                    .iter()
                    .all(|t| condition(o, t).is_some())
                && kstatus(o) != "Progressing"
        })
}

#[test]
fn examples_apply_idempotently_and_report_kstatus_and_argocd_health() {
    support::require("lua5.1", "lua5.1");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = Standalone::start(
        &data,
        &[
            "--runner-listen".into(),
            format!("127.0.0.1:{}", support::free_port()),
            "--registry-listen".into(),
            format!("127.0.0.1:{}", support::free_port()),
        ],
    );
    let examples = examples();
    let first = s.kubectl(&["apply", "-f", examples.to_str().unwrap()]);
    assert_eq!(first.lines().count(), 10, "{first}");
    assert!(first.lines().all(|l| l.ends_with(" created")), "{first}");
    s.wait_until(
        "kstatus conditions on every object",
        Duration::from_secs(60),
        settled,
    );

    // A GitOps tool re-applies the same manifests: nothing changes.
    let second = s.kubectl(&["apply", "-f", examples.to_str().unwrap()]);
    assert_eq!(second.lines().count(), 10, "{second}");
    assert!(
        second.lines().all(|l| l.ends_with(" unchanged")),
        "a second kubectl apply of examples/ changed something:\n{second}"
    );
    let diff = Command::new("kubectl")
        .env("KUBECONFIG", &s.kubeconfig)
        .args(["diff", "-f", examples.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff shows differences:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );

    let all = s.contrail_objects();
    let mut seen = std::collections::BTreeSet::new();
    for o in &all {
        let name = format!("{}/{}", o["kind"], o["metadata"]["name"]);
        // The spec is the user's: only kubectl owns spec fields, and the
        // generation is still the first.
        assert_eq!(o["metadata"]["generation"], 1, "{name}");
        for m in o["metadata"]["managedFields"].as_array().unwrap() {
            if m["fieldsV1"].get("f:spec").is_some() {
                assert_eq!(m["manager"], "kubectl-client-side-apply", "{name}: {m:#}");
            }
        }
        // Argo CD's health agrees with kstatus.
        let (health, message) = argocd_health(o);
        assert_eq!(health, kstatus(o), "{name}: {message}\n{o:#}");
        assert!(!message.is_empty(), "{name}: no message");
        seen.insert(health);
    }
    // The lab shows both ends: Ready objects and stalled ones.
    assert!(
        seen.contains("Healthy") && seen.contains("Degraded"),
        "{seen:?}"
    );
    let ext = all
        .iter()
        .find(|o| o["metadata"]["name"] == "lab-ext-ctrl")
        .unwrap();
    assert_eq!(argocd_health(ext).0, "Healthy");
    // A container Image whose tarball is missing is Degraded, and so are the
    // Servers that need it (they cannot progress without a change) and
    // their Cluster.
    let by_name = |n: &str| all.iter().find(|o| o["metadata"]["name"] == n).unwrap();
    let (health, message) = argocd_health(by_name("controller-5.0-214"));
    assert_eq!(health, "Degraded");
    assert!(message.contains("tarball"), "{message}");
    let ctrl = by_name("lab-ctrl-1");
    let (health, message) = argocd_health(ctrl);
    assert_eq!(health, "Degraded");
    assert!(
        message.contains("ImageNotReady") && message.contains("cannot be pushed"),
        "{message}"
    );
    let (health, message) = argocd_health(by_name("lab"));
    assert_eq!(health, "Degraded");
    assert!(message.contains("ServersStalled"), "{message}");
    // A spec change not yet observed is Progressing, whatever the conditions.
    let mut newer = ctrl.clone();
    newer["metadata"]["generation"] = Value::from(2);
    assert_eq!(argocd_health(&newer).0, "Progressing");
}
