//! Server-side apply precision with the real kubectl: a field dropped from an
//! applied manifest is removed, another manager's conflicting apply gets 409
//! unless `--force-conflicts`, and non-apply writes (`kubectl patch`) own the
//! fields they change (`Update` entries), so a later apply conflicts with them
//! as on kube-apiserver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::apiserver::{TestApi, crds_dir};

const FULL: &str = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: s1, labels: {a: "1", b: "2"}}
spec:
  clusterRef: {name: lab}
  host: 10.0.0.1
  roles: [agent]
  provisioning: External
  ssh: {user: root, secretRef: {name: ssh}}
"#;

const FEWER: &str = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: s1, labels: {a: "1"}}
spec:
  clusterRef: {name: lab}
  host: 10.0.0.1
  roles: [agent]
  ssh: {user: root, secretRef: {name: ssh}}
"#;

const OTHER: &str = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: s1}
spec:
  host: 10.9.9.9
"#;

#[test]
fn kubectl_server_side_apply_removes_dropped_fields_and_reports_conflicts() {
    let api = TestApi::start();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);
    api.ok_in(&["apply", "--server-side", "-f", "-"], Some(FULL));
    let get = |jp: &str| api.ok(&["get", "server", "s1", "-o", &format!("jsonpath={jp}")]);
    assert_eq!(get("{.spec.provisioning}"), "External");
    // Dropping provisioning and label b removes them (provisioning falls back
    // to its schema default).
    api.ok_in(&["apply", "--server-side", "-f", "-"], Some(FEWER));
    assert_eq!(get("{.spec.provisioning}"), "Managed");
    assert_eq!(get("{.metadata.labels}"), r#"{"a":"1"}"#);

    // A second manager changing spec.host conflicts unless forced.
    let err = api.fails_in(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        Some(OTHER),
    );
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.host"#),
        "{err}"
    );
    assert_eq!(get("{.spec.host}"), "10.0.0.1");
    api.ok_in(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(OTHER),
    );
    assert_eq!(get("{.spec.host}"), "10.9.9.9");
    // "kubectl" lost spec.host: applying FEWER again conflicts with "other".
    let err = api.fails_in(&["apply", "--server-side", "-f", "-"], Some(FEWER));
    assert!(
        err.contains(r#"conflict with "other": .spec.host"#),
        "{err}"
    );

    // A non-apply write owns what it changed: kubectl patch, then apply.
    api.ok(&[
        "patch",
        "server",
        "s1",
        "--type=merge",
        "-p",
        r#"{"spec":{"roles":["agent","controller"]}}"#,
    ]);
    let mf = get("{.metadata.managedFields[*].manager}");
    assert!(mf.contains("kubectl-patch"), "{mf}");
    let err = api.fails_in(
        &[
            "apply",
            "--server-side",
            "--force-conflicts=false",
            "-f",
            "-",
        ],
        Some(FEWER),
    );
    assert!(
        err.contains(
            r#"conflict with "kubectl-patch" using servermanager.contrail.io/v1alpha1: .spec.roles"#
        ),
        "{err}"
    );
    api.ok_in(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(FEWER),
    );
    assert_eq!(get("{.spec.roles}"), r#"["agent"]"#);
    // An identical apply is a no-op: the resourceVersion stays.
    let rv = get("{.metadata.resourceVersion}");
    api.ok_in(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(FEWER),
    );
    assert_eq!(get("{.metadata.resourceVersion}"), rv);
}
