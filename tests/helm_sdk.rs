//! Helm against the embedded API server, through Helm's own Go code (PyPI
//! `helm-python-sdk`, installed by scripts/test.sh): install, upgrade and
//! uninstall of `tests/fixtures/helm/demo` (a CRD, a custom resource, a
//! Deployment, a Service, a ServiceAccount, a Role, a RoleBinding and a
//! ConfigMap), with the release Secrets Helm keeps and the deletion of
//! everything the release owns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::apiserver::TestApi;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/helm"))
}

fn helm(api: &TestApi, args: &[&str]) -> serde_json::Value {
    support::chart::helm(&api.kubeconfig, &api.dir.path().join("home"), args)
}

const OWNED: &[&str] = &[
    "deployment/demo-web",
    "service/demo-web",
    "serviceaccount/demo-sa",
    "role/demo-role",
    "rolebinding/demo-binding",
    "configmap/demo-config",
    "gadget/demo-gadget",
];

fn get_owned<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["get"];
    v.extend_from_slice(OWNED);
    v.extend_from_slice(extra);
    v
}

#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart() {
    support::chart::require_sdk();
    let api = TestApi::start();
    let chart = fixtures().join("demo");
    let chart = chart.to_str().expect("path");

    let r = helm(&api, &["install", "demo", chart, r#"{"message":"hi"}"#]);
    assert_eq!(r["status"], "deployed", "{r}");
    assert_eq!(r["revision"], 1);
    // Everything the chart renders exists, the CRD first (from crds/).
    api.ok(&["get", "crd", "gadgets.demo.example.com"]);
    let names = api.ok(&get_owned(&["-o", "name"]));
    assert_eq!(names.lines().count(), 7, "{names}");
    assert_eq!(
        api.ok(&[
            "get",
            "configmap",
            "demo-config",
            "-o",
            "jsonpath={.data.message}"
        ]),
        "hi"
    );
    // The release is kept in a Secret, as Helm's default storage driver does.
    let secrets = api.ok(&["get", "secrets", "-l", "owner=helm,name=demo", "-o", "name"]);
    assert_eq!(secrets.trim(), "secret/sh.helm.release.v1.demo.v1");

    let r = helm(
        &api,
        &[
            "upgrade",
            "demo",
            chart,
            r#"{"message":"bye","replicas":2}"#,
        ],
    );
    assert_eq!(r["revision"], 2, "{r}");
    assert_eq!(
        api.ok(&[
            "get",
            "configmap",
            "demo-config",
            "-o",
            "jsonpath={.data.message}"
        ]),
        "bye"
    );
    assert_eq!(
        api.ok(&[
            "get",
            "deployment",
            "demo-web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
    assert_eq!(
        api.ok(&[
            "get",
            "gadget",
            "demo-gadget",
            "-o",
            "jsonpath={.spec.size}"
        ]),
        "2"
    );
    let list = helm(&api, &["list", "demo"]);
    assert_eq!(list[0]["revision"], 2, "{list}");
    assert_eq!(list[0]["status"], "deployed", "{list}");
    let secrets = api.ok(&["get", "secrets", "-l", "owner=helm,name=demo", "-o", "name"]);
    assert_eq!(secrets.lines().count(), 2, "{secrets}");

    let r = helm(&api, &["uninstall", "demo"]);
    assert_eq!(r["release"]["status"], "uninstalled", "{r}");
    // Everything the release owned is gone, and so is its history; the CRD
    // stays (Helm never deletes CRDs).
    let out = api.kubectl(&get_owned(&["-o", "name", "--ignore-not-found"]));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    let secrets = api.ok(&["get", "secrets", "-l", "owner=helm", "-o", "name"]);
    assert_eq!(secrets.trim(), "");
    api.ok(&["get", "crd", "gadgets.demo.example.com"]);
    assert_eq!(helm(&api, &["list", "demo"]), serde_json::json!([]));
}
