//! The embedded API server as the real kubectl sees kube-apiserver 1.32:
//! `/openapi/v2` (client-side validation, `kubectl explain` of core kinds),
//! `kubectl auth can-i|whoami`, `kubectl create role|rolebinding|clusterrole|
//! clusterrolebinding|configmap|secret|token` (protobuf bodies), bound tokens,
//! and impersonation (`--as`), allowed and refused, with RBAC on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use server_manager::apiserver::AuditRecord;
use support::apiserver::{SAMPLE_MANIFESTS, TestApi, crds_dir};

/// `kubectl ARGS` run with `token`, which must succeed.
fn ok_as(api: &TestApi, token: &str, args: &[&str]) -> String {
    let mut a = vec!["--token", token];
    a.extend_from_slice(args);
    api.ok(&a)
}

/// `kubectl ARGS` run with `token`: (success, stdout, stderr).
fn run_as(api: &TestApi, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["--token", token];
    a.extend_from_slice(args);
    let out = api.kubectl(&a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
fn openapi_v2_lets_kubectl_validate_and_explain_core_kinds() {
    let api = TestApi::start();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);

    // An unknown kind: kubectl's own mapping error, after validation
    // downloaded /openapi/v2 (protobuf) without trouble.
    let manifest = |kind: &str| {
        format!(
            "apiVersion: servermanager.contrail.io/v1alpha1\nkind: {kind}\nmetadata: {{name: n1}}\nspec: {{host: 10.0.0.1}}\n"
        )
    };
    for verb in ["apply", "create"] {
        let err = api.fails_in(&[verb, "-f", "-"], Some(&manifest("Srever")));
        assert!(
            err.contains(
                r#"no matches for kind "Srever" in version "servermanager.contrail.io/v1alpha1""#
            ),
            "{verb}: {err}"
        );
        assert!(!err.contains("openapi"), "{verb}: {err}");
        // kubectl maps a lower-case kind to the resource; kube-apiserver
        // then refuses the body's kind.
        let err = api.fails_in(&[verb, "-f", "-"], Some(&manifest("server")));
        assert!(
            err.contains(
                r#"Server "n1" is invalid: kind: Invalid value: "server": must be Server"#
            ),
            "{verb}: {err}"
        );
    }
    let err = api.fails_in(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: configmap\nmetadata: {name: c0}\n"),
    );
    assert!(
        err.contains(r#"configmap in version "v1" cannot be handled as a ConfigMap: no kind "configmap" is registered for version "v1""#),
        "{err}"
    );
    // Valid objects still pass client-side validation, built-in and custom.
    api.ok_in(
        &["apply", "--validate=strict", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: b}\n"),
    );

    // The JSON form, with the core kinds' schemas and the CRDs'.
    let doc: serde_json::Value =
        serde_json::from_str(&api.ok(&["get", "--raw", "/openapi/v2"])).expect("json");
    assert_eq!(doc["swagger"], "2.0");
    let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
    assert_eq!(
        cm["x-kubernetes-group-version-kind"][0],
        serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert!(
        doc["definitions"]["io.contrail.servermanager.v1alpha1.Server"]["properties"]["spec"]
            .is_object(),
        "{}",
        doc["definitions"].as_object().map(|d| d.len()).unwrap_or(0)
    );

    // kubectl explain on core kinds reads kube's own descriptions.
    let out = api.ok(&["explain", "configmap.data"]);
    assert!(out.contains("KIND:       ConfigMap"), "{out}");
    assert!(
        out.contains("Data contains the configuration data"),
        "{out}"
    );
    let out = api.ok(&["explain", "secret.type"]);
    assert!(
        out.contains("Used to facilitate programmatic handling"),
        "{out}"
    );
    let out = api.ok(&["explain", "roles.rules.verbs"]);
    assert!(out.contains("Verbs is a list of Verbs"), "{out}");
    let out = api.ok(&["explain", "servers.spec.host"]);
    assert!(out.contains("FIELD: host"), "{out}");
}

/// The acceptance scenario: a ServiceAccount granted `list servers` through
/// `kubectl create role/rolebinding` can list but not delete servers.
#[test]
fn kubectl_create_role_binding_and_token_then_auth_can_i() {
    let api = TestApi::start_rbac();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);
    api.ok_in(&["apply", "-f", "-"], Some(SAMPLE_MANIFESTS));
    api.ok(&["create", "serviceaccount", "robot"]);
    api.ok(&[
        "create",
        "role",
        "server-reader",
        "--verb=list",
        "--verb=get",
        "--resource=servers",
    ]);
    api.ok(&[
        "create",
        "rolebinding",
        "robot-reads",
        "--role=server-reader",
        "--serviceaccount=default:robot",
    ]);
    let role = api.ok(&["get", "role", "server-reader", "-o", "json"]);
    let role: serde_json::Value = serde_json::from_str(&role).expect("json");
    assert_eq!(
        role["rules"][0],
        serde_json::json!({"apiGroups": ["servermanager.contrail.io"],
                           "resources": ["servers"], "verbs": ["list", "get"]})
    );
    let token = api.ok(&["create", "token", "robot"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");

    assert_eq!(
        ok_as(&api, &token, &["auth", "can-i", "list", "servers"]).trim(),
        "yes"
    );
    let (ok, out, _) = run_as(&api, &token, &["auth", "can-i", "delete", "servers"]);
    assert!(!ok);
    assert_eq!(out.trim(), "no");
    let (ok, out, _) = run_as(
        &api,
        &token,
        &["auth", "can-i", "list", "servers", "-n", "kube-system"],
    );
    assert!(!ok, "{out}");
    // The token really lists servers and really cannot delete them.
    ok_as(&api, &token, &["get", "servers"]);
    let (ok, _, err) = run_as(&api, &token, &["delete", "server", "node1"]);
    assert!(!ok);
    assert!(
        err.contains(r#"servers.servermanager.contrail.io "node1" is forbidden: User "system:serviceaccount:default:robot" cannot delete resource "servers" in API group "servermanager.contrail.io" in the namespace "default""#),
        "{err}"
    );

    // --list shows the Role's rules and the ones every user has.
    let out = ok_as(&api, &token, &["auth", "can-i", "--list"]);
    assert!(out.contains("servers.servermanager.contrail.io"), "{out}");
    assert!(out.contains("[list get]"), "{out}");
    assert!(
        out.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{out}"
    );
    let out = ok_as(&api, &token, &["auth", "whoami"]);
    assert!(out.contains("system:serviceaccount:default:robot"), "{out}");
    assert!(out.contains("system:serviceaccounts:default"), "{out}");

    // A review asks exactly one question.
    let err = api.fails_in(
        &["create", "-f", "-"],
        Some("apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec: {}\n"),
    );
    assert!(
        err.contains(r#"spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must be specified"#),
        "{err}"
    );

    // The admin may do anything.
    assert_eq!(api.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    let out = api.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(out.trim(), "admin");

    // A ClusterRole through a ClusterRoleBinding widens it.
    api.ok(&[
        "create",
        "clusterrole",
        "image-deleter",
        "--verb=delete",
        "--resource=images",
    ]);
    api.ok(&[
        "create",
        "clusterrolebinding",
        "robot-deletes-images",
        "--clusterrole=image-deleter",
        "--serviceaccount=default:robot",
    ]);
    assert_eq!(
        ok_as(&api, &token, &["auth", "can-i", "delete", "images", "-A"]).trim(),
        "yes"
    );
    // ConfigMaps and Secrets from kubectl create (protobuf bodies).
    api.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    api.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    assert_eq!(
        api.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.b}"]),
        "2"
    );
}

#[test]
fn bound_tokens_expire_with_what_they_are_bound_to() {
    let api = TestApi::start_rbac();
    api.ok(&["create", "serviceaccount", "robot"]);
    api.ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=list",
        "--resource=configmaps",
    ]);
    api.ok(&[
        "create",
        "rolebinding",
        "robot-cm",
        "--role=cm-reader",
        "--serviceaccount=default:robot",
    ]);
    let unauthorized = |token: &str| {
        let (ok, _, err) = run_as(&api, token, &["get", "configmaps"]);
        assert!(!ok);
        assert!(
            err.contains("You must be logged in to the server (Unauthorized)"),
            "{err}"
        );
    };

    // Too short a duration is refused as kube refuses it.
    let err = api.fails_in(&["create", "token", "robot", "--duration=5m"], None);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = api.fails_in(&["create", "token", "nobody"], None);
    assert!(
        err.contains(r#"serviceaccounts "nobody" not found"#),
        "{err}"
    );

    // Another audience: a valid token, but not for this server.
    let other = api.ok(&["create", "token", "robot", "--audience=vault"]);
    unauthorized(other.trim());
    // A tampered token is refused.
    let good = api
        .ok(&["create", "token", "robot", "--duration=20m"])
        .trim()
        .to_string();
    ok_as(&api, &good, &["get", "configmaps"]);
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    unauthorized(&parts.join("."));

    // Bound to a Secret: valid until the Secret goes.
    api.ok(&[
        "create",
        "secret",
        "generic",
        "anchor",
        "--from-literal=x=y",
    ]);
    let bound = api
        .ok(&[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Secret",
            "--bound-object-name=anchor",
        ])
        .trim()
        .to_string();
    ok_as(&api, &bound, &["get", "configmaps"]);
    api.ok(&["delete", "secret", "anchor"]);
    unauthorized(&bound);

    // Every token of a ServiceAccount dies with it (even if it is recreated).
    ok_as(&api, &good, &["get", "configmaps"]);
    api.ok(&["delete", "serviceaccount", "robot"]);
    api.ok(&["create", "serviceaccount", "robot"]);
    unauthorized(&good);
}

const IMPERSONATOR: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-alice}
rules:
- apiGroups: [""]
  resources: [users]
  resourceNames: [alice]
  verbs: [impersonate]
- apiGroups: [""]
  resources: [groups]
  resourceNames: [ops]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: robot-impersonates-alice}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-alice}
subjects:
- {kind: ServiceAccount, name: robot, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ops-read-configmaps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects:
- {kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}
"#;

#[test]
fn impersonation_is_checked_under_rbac_and_audited_with_both_users() {
    let api = TestApi::start_rbac();
    api.ok(&["create", "serviceaccount", "robot"]);
    api.ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=list",
        "--resource=configmaps",
    ]);
    api.ok(&["create", "configmap", "c1", "--from-literal=a=b"]);
    let token = api.ok(&["create", "token", "robot"]).trim().to_string();

    // Not allowed yet: kube's 403 for impersonation.
    let (ok, _, err) = run_as(&api, &token, &["--as", "alice", "get", "configmaps"]);
    assert!(!ok);
    assert!(
        err.contains(r#"users "alice" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );
    api.ok_in(&["apply", "-f", "-"], Some(IMPERSONATOR));

    // Allowed: the request runs as alice (who may list nothing) …
    let out = ok_as(&api, &token, &["--as", "alice", "auth", "whoami"]);
    assert!(out.contains("alice"), "{out}");
    assert!(out.contains("system:authenticated"), "{out}");
    let (ok, _, err) = run_as(&api, &token, &["--as", "alice", "get", "configmaps"]);
    assert!(!ok);
    assert!(
        err.contains(r#"configmaps is forbidden: User "alice" cannot list resource "configmaps" in API group "" in the namespace "default""#),
        "{err}"
    );
    // … and as alice in group ops, who may list configmaps.
    let out = ok_as(
        &api,
        &token,
        &[
            "--as",
            "alice",
            "--as-group",
            "ops",
            "get",
            "configmaps",
            "-o",
            "name",
        ],
    );
    assert_eq!(out.trim(), "configmap/c1");
    // Other users and groups stay refused.
    let (ok, _, err) = run_as(&api, &token, &["--as", "bob", "get", "configmaps"]);
    assert!(!ok);
    assert!(err.contains(r#"users "bob" is forbidden"#), "{err}");
    let (ok, _, err) = run_as(
        &api,
        &token,
        &[
            "--as",
            "alice",
            "--as-group",
            "system:masters",
            "get",
            "configmaps",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(r#"groups "system:masters" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "groups" in API group "" at the cluster scope"#),
        "{err}"
    );
    let (ok, _, err) = run_as(
        &api,
        &token,
        &[
            "--as",
            "system:serviceaccount:kube-system:default",
            "get",
            "configmaps",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(r#"serviceaccounts "default" is forbidden: User "system:serviceaccount:default:robot" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "kube-system""#),
        "{err}"
    );

    // The admin may impersonate anyone, and loses its own rights doing so.
    let out = api.kubectl(&[
        "--as",
        "system:serviceaccount:default:robot",
        "auth",
        "can-i",
        "list",
        "configmaps",
    ]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let out = api.ok(&[
        "--as",
        "alice",
        "--as-group",
        "ops",
        "auth",
        "can-i",
        "list",
        "configmaps",
    ]);
    assert_eq!(out.trim(), "yes");

    // The audit log names both: who asked and whom they acted as.
    let recs = records(&api);
    assert!(
        recs.iter()
            .any(|r| r.user == "system:serviceaccount:default:robot"
                && r.impersonated_user.as_deref() == Some("alice")
                && r.attributes.resource == "configmaps"
                && r.code == 200),
        "{recs:?}"
    );
    assert!(
        recs.iter()
            .any(|r| r.user == "system:serviceaccount:default:robot"
                && r.impersonated_user.is_none()
                && r.code == 403),
        "refusals name only the requester"
    );
}

/// `kubectl get -w`: each watched row is aged when it is sent, so an object
/// created after the watch began is seconds old, not `<invalid>`.
#[test]
fn kubectl_get_watch_rows_have_live_ages() {
    use std::process::{Command, Stdio};
    let api = TestApi::start();
    api.ok(&["create", "configmap", "first"]);
    let home = api.dir.path().join("home");
    let out_path = api.dir.path().join("watch.out");
    let mut child = Command::new("kubectl")
        .args(["get", "configmaps", "-w"])
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", &home)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdout(std::fs::File::create(&out_path).expect("watch output"))
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    // Wait for the initial list, then let the watch grow older.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&out_path)
        .unwrap_or_default()
        .contains("first")
    {
        assert!(std::time::Instant::now() < deadline, "no initial rows");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    api.ok(&["create", "configmap", "second"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("second") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let row = text
        .lines()
        .find(|l| l.starts_with("second"))
        .unwrap_or_else(|| panic!("no row for the new ConfigMap:\n{text}"));
    let age = row.split_whitespace().last().expect("age cell");
    assert!(
        age.ends_with('s')
            && age
                .trim_end_matches('s')
                .parse::<u64>()
                .is_ok_and(|s| s < 10),
        "{text}"
    );
}

/// ConfigMap and Secret validation, DELETE, cascading deletion and chunked
/// lists, through kubectl (the Python client checks the same in
/// tests/apiserver_python.rs).
#[test]
fn kubectl_sees_kube_validation_and_cascading_deletion() {
    let api = TestApi::start();
    let err = api.fails_in(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {\"a b\": x}\n"),
    );
    assert!(
        err.contains(r#"The ConfigMap "bad" is invalid: data[a b]: Invalid value: "a b": a valid config key must consist of alphanumeric characters"#),
        "{err}"
    );
    let err = api.fails_in(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/tls\ndata: {tls.crt: eA==}\n"),
    );
    assert!(
        err.contains(r#"The Secret "t" is invalid: data[tls.key]: Required value"#),
        "{err}"
    );
    api.ok_in(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: \"1\"}\n"),
    );
    let err = api.fails_in(
        &["patch", "cm", "frozen", "-p", r#"{"data":{"a":"2"}}"#],
        None,
    );
    assert!(
        err.contains("The ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"),
        "{err}"
    );

    // Cascading deletion by ownerReferences, each policy.
    let child_of = |owner: &str, child: &str| {
        api.ok(&["create", "configmap", owner]);
        let uid = api.ok(&["get", "cm", owner, "-o", "jsonpath={.metadata.uid}"]);
        api.ok_in(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {child}\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}}}]\n"
            )),
        );
    };
    let gone = |name: &str| {
        let out = api.kubectl(&["get", "cm", name]);
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains(&format!(r#"configmaps "{name}" not found"#))
    };
    child_of("o1", "c1");
    let out = api.ok(&["delete", "cm", "o1"]);
    assert_eq!(out.trim(), r#"configmap "o1" deleted"#);
    assert!(gone("o1") && gone("c1"), "background deletion collects c1");
    child_of("o2", "c2");
    api.ok(&["delete", "cm", "o2", "--cascade=foreground"]);
    assert!(gone("o2") && gone("c2"), "foreground deletion");
    child_of("o3", "c3");
    api.ok(&["delete", "cm", "o3", "--cascade=orphan"]);
    assert!(gone("o3") && !gone("c3"), "orphaned c3 stays");
    assert_eq!(
        api.ok(&[
            "get",
            "cm",
            "c3",
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );

    // Chunked lists (limit/continue, remainingItemCount) list everything.
    let all = api.ok(&["get", "cm", "-o", "name"]);
    let chunked = api.ok(&["get", "cm", "-o", "name", "--chunk-size=1"]);
    assert_eq!(all, chunked);
    assert_eq!(all.lines().count(), 2, "{all}");
}
