//! The official Kubernetes Python client (PyPI `kubernetes`, installed by
//! scripts/test.sh) against the embedded API server: ConfigMap and Secret
//! validation, DELETE answers, propagation policies, ownerReference garbage
//! collection, remainingItemCount and duplicate fields, as kube-apiserver
//! answers them. The checks are in tests/fixtures/python/apiserver_client.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::apiserver::TestApi;

#[test]
fn python_client_sees_kube_validation_deletion_and_garbage_collection() {
    support::require("python3", "python3");
    let probe = Command::new(support::python())
        .args(["-c", "import kubernetes"])
        .output()
        .expect("run python3");
    assert!(
        probe.status.success(),
        "the Python package kubernetes is missing: scripts/test.sh installs it"
    );
    let api = TestApi::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/python/apiserver_client.py"
    );
    let out = Command::new(support::python())
        .arg(script)
        .arg(&api.kubeconfig)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
