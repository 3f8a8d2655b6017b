//! RBAC and the audit log of the embedded API server, driven by the real
//! kubectl and kube-rs: a ServiceAccount token (from a token Secret) bound to
//! a Role without `patch` on `servers/status` is refused exactly that request
//! (403 worded like kube-apiserver), everything else the Role grants works, a
//! ClusterRoleBinding to a Group widens it, `resourceNames` narrow it, the
//! admin token stays all-powerful, and the audit log lists every request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use server_manager::apiserver::AuditRecord;
use support::apiserver::{SAMPLE_MANIFESTS, TestApi, crds_dir};

const RBAC: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: operator}
---
apiVersion: v1
kind: Secret
metadata:
  name: operator-token
  annotations: {kubernetes.io/service-account.name: operator}
type: kubernetes.io/service-account-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: operator}
rules:
- apiGroups: [servermanager.contrail.io]
  resources: [servers, clusters]
  verbs: [get, list, watch, patch, update]
- apiGroups: [servermanager.contrail.io]
  resources: [servers/status]
  verbs: [get, update]
- apiGroups: [servermanager.contrail.io]
  resources: [images]
  resourceNames: [some-other-image]
  verbs: [get, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: operator}
subjects:
- {kind: ServiceAccount, name: operator, namespace: default}
"#;

const SA_USER: &str = "system:serviceaccount:default:operator";

fn token(api: &TestApi) -> String {
    let b64 = api.ok(&[
        "get",
        "secret",
        "operator-token",
        "-o",
        "jsonpath={.data.token}",
    ]);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("base64 token");
    String::from_utf8(raw).expect("utf-8 token")
}

fn records(api: &TestApi) -> Vec<AuditRecord> {
    let path = api.audit_log.as_ref().expect("audit log configured");
    std::fs::read_to_string(path)
        .expect("read audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

#[test]
fn a_role_without_patch_on_status_forbids_exactly_that() {
    let api = TestApi::start_rbac();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);
    let m = api.file("all.yaml", SAMPLE_MANIFESTS);
    api.ok(&["apply", "-f", m.to_str().expect("path")]);
    api.ok_in(&["apply", "-f", "-"], Some(RBAC));
    let tok = token(&api);
    assert!(!tok.is_empty());
    let before = api.handle().request_counts();
    let lines_before = records(&api).len();
    let sa = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--token".to_string(), tok.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run_ok = |args: &[&str]| {
        let a = sa(args);
        api.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_err = |args: &[&str]| {
        let a = sa(args);
        api.fails_in(&a.iter().map(String::as_str).collect::<Vec<_>>(), None)
    };

    // What the Role grants works.
    let out = run_ok(&["get", "servers"]);
    assert!(out.contains("node1"), "{out}");
    run_ok(&["get", "server", "node1", "-o", "yaml"]);
    run_ok(&["label", "server", "node1", "tier=control"]);
    run_ok(&[
        "patch",
        "server",
        "node1",
        "--type=merge",
        "-p",
        r#"{"spec":{"host":"10.0.0.12"}}"#,
    ]);
    let json = run_ok(&[
        "get",
        "server",
        "node1",
        "--subresource=status",
        "-o",
        "json",
    ]);
    let mut obj: serde_json::Value = serde_json::from_str(&json).expect("json");
    obj["status"] = serde_json::json!({"progress": "1/7"});
    run_ok(&[
        "replace",
        "--subresource=status",
        "-f",
        api.file("status.json", &obj.to_string())
            .to_str()
            .expect("path"),
    ]);

    // patch on servers/status is the one thing refused.
    let err = run_err(&[
        "patch",
        "server",
        "node1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"progress":"2/7"}}"#,
    ]);
    assert!(
        err.contains(&format!(
            r#"servers.servermanager.contrail.io "node1" is forbidden: User "{SA_USER}" cannot patch resource "servers/status" in API group "servermanager.contrail.io" in the namespace "default""#
        )),
        "{err}"
    );
    // kube-rs sees a Forbidden Status.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let mut config = api.handle().client_config();
    config.auth_info.token = Some(tok.clone().into());
    let client = kube::Client::try_from(config).expect("client");
    let ar = ApiResource {
        group: "servermanager.contrail.io".into(),
        version: "v1alpha1".into(),
        api_version: "servermanager.contrail.io/v1alpha1".into(),
        kind: "Server".into(),
        plural: "servers".into(),
    };
    let servers: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let e = rt
        .block_on(servers.patch_status(
            "node1",
            &PatchParams::apply("op").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "servermanager.contrail.io/v1alpha1",
                "kind": "Server", "status": {"progress": "3/7"}})),
        ))
        .expect_err("forbidden");
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(rt.block_on(servers.get("node1")).is_ok());

    // Outside the Role: other resources, the cluster scope, other names.
    let err = run_err(&["get", "configmaps"]);
    assert!(
        err.contains(&format!(
            r#"configmaps is forbidden: User "{SA_USER}" cannot list resource "configmaps" in API group "" in the namespace "default""#
        )),
        "{err}"
    );
    let err = run_err(&["get", "servers", "-A"]);
    assert!(
        err.contains(r#"cannot list resource "servers" in API group "servermanager.contrail.io" at the cluster scope"#),
        "{err}"
    );
    let err = run_err(&["delete", "image", "controller-5-0", "--wait=false"]);
    assert!(
        err.contains(&format!(
            r#"images.servermanager.contrail.io "controller-5-0" is forbidden: User "{SA_USER}" cannot delete resource "images""#
        )),
        "{err}"
    );
    // An unknown token is not authenticated at all.
    let out = api.kubectl(&["--token", "nope", "get", "servers"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A ClusterRoleBinding to the ServiceAccounts' group widens the grant.
    api.ok_in(
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: server-reader}
rules:
- apiGroups: ["*"]
  resources: [servers, "*/status"]
  verbs: [list, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: server-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: server-reader}
subjects:
- {kind: Group, name: "system:serviceaccounts:default", apiGroup: rbac.authorization.k8s.io}
"#,
        ),
    );
    let out = run_ok(&["get", "servers", "-A"]);
    assert!(out.contains("node1"), "{out}");
    run_ok(&[
        "patch",
        "server",
        "node1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"progress":"4/7"}}"#,
    ]);
    // The admin token is never refused.
    api.ok(&["get", "configmaps", "-A"]);
    api.ok(&["delete", "image", "controller-5-0", "--wait=false"]);

    // The audit log lists every request, and the counters agree with it.
    let recs = records(&api);
    let counts = api.handle().request_counts();
    let total: u64 = counts.by_verb_resource.values().sum();
    assert_eq!(total as usize, recs.len(), "every request is in the log");
    let since = counts.since(&before);
    let new: Vec<&AuditRecord> = recs[lines_before..].iter().collect();
    assert_eq!(
        since.by_verb_resource.values().sum::<u64>() as usize,
        new.len()
    );
    let forbidden: Vec<&&AuditRecord> = new.iter().filter(|r| r.code == 403).collect();
    assert_eq!(forbidden.len(), 5, "{forbidden:#?}");
    let status_patches: Vec<&&AuditRecord> = forbidden
        .iter()
        .filter(|r| r.attributes.subresource == "status")
        .copied()
        .collect();
    assert_eq!(status_patches.len(), 2, "kubectl's and kube-rs's");
    for r in &status_patches {
        assert_eq!(r.user, SA_USER);
        assert_eq!(r.attributes.verb, "patch");
        assert_eq!(r.attributes.resource, "servers");
        assert_eq!(r.attributes.namespace, "default");
        assert_eq!(r.attributes.name, "node1");
    }
    // Nothing else the ServiceAccount did was refused.
    assert!(
        new.iter()
            .filter(|r| r.user == SA_USER && r.code >= 400)
            .all(|r| r.code == 403 || r.code == 404),
        "{new:#?}"
    );
    assert!(new.iter().any(|r| r.user == "admin"
        && r.attributes.verb == "delete"
        && r.attributes.name == "controller-5-0"
        && r.code == 200));
    assert!(since.get("patch", "servers.servermanager.contrail.io/status") >= 3);
    assert!(since.writes_to("images.servermanager.contrail.io") >= 2);
    assert!(since.writes() >= 8);
}

#[test]
fn without_rbac_only_the_admin_token_is_accepted() {
    let api = TestApi::start();
    api.ok_in(&["apply", "-f", "-"], Some(RBAC));
    let tok = token(&api);
    let out = api.kubectl(&["--token", &tok, "get", "configmaps"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"));
    // Counting works without an audit file.
    assert!(api.handle().request_counts().get("create", "secrets") >= 1);
}
