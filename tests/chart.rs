//! The Helm chart, checked with Helm's own code (PyPI `helm-python-sdk`):
//! it lints (strict) and renders for the default values and for every
//! documented toggle; every rendered object round-trips through its
//! `k8s-openapi` type with no field lost; the pods meet Pod Security
//! "restricted"; the values schema rejects bad values naming the field; the
//! README documents every value; `helm install` into the embedded API server
//! creates every object, an upgrade keeps the runner's token, and
//! `helm uninstall` removes them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use support::apiserver::TestApi;
use support::chart::{chart_dir, chart_tool, helm, render, require_sdk};

/// Every documented toggle (README "Values"), each with what it must change.
fn toggles() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "external registry",
            json!({"registry": {"enabled": false, "address": "registry.example.com:5000", "insecure": false}}),
        ),
        (
            "registry NodePort, no persistence",
            json!({"registry": {"service": {"type": "NodePort", "nodePort": 30500},
                                "persistence": {"enabled": false}}}),
        ),
        (
            "runner persistence",
            json!({"runner": {"replicas": 3,
                              "persistence": {"enabled": true, "storageClass": "fast", "size": "2Gi"}}}),
        ),
        (
            "existing runner token",
            json!({"runner": {"existingTokenSecret": "my-runner-token"}}),
        ),
        (
            "no NetworkPolicy",
            json!({"networkPolicy": {"enabled": false}}),
        ),
        (
            "ServiceMonitor",
            json!({"metrics": {"serviceMonitor": {"enabled": true, "interval": "15s",
                                                   "labels": {"release": "prom"}}}}),
        ),
        (
            "Secrets of other namespaces, by name",
            json!({"rbac": {"secretNamespaces": ["lab", "infra"], "secretNames": ["lab-ssh"]}}),
        ),
        (
            "no RBAC, existing ServiceAccount",
            json!({"rbac": {"create": false}, "serviceAccount": {"create": false, "name": "ops"}}),
        ),
        (
            "image volume, replicas, scheduling",
            json!({"operator": {"replicas": 2,
                                "imageVolume": {"persistentVolumeClaim": {"claimName": "images"}},
                                "nodeSelector": {"role": "infra"},
                                "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}]},
                   "imagePullSecrets": [{"name": "pull"}],
                   "nameOverride": "sm2"}),
        ),
    ]
}

/// Numbers compare by value (YAML `1000.0` and a typed `1000.0` alike).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {}: not a valid {}: {e}",
            v["kind"],
            v["metadata"]["name"],
            std::any::type_name::<T>()
        )
    });
    serde_json::to_value(&typed).expect("serialize")
}

/// Round-trips `v` through its k8s-openapi type; panics when a field is lost
/// or changed. Returns the kind.
fn assert_roundtrips(v: &Value) -> String {
    let kind = v["kind"].as_str().expect("kind").to_string();
    let api = v["apiVersion"].as_str().expect("apiVersion");
    let back = match (api, kind.as_str()) {
        ("v1", "ServiceAccount") => roundtrip::<ServiceAccount>(v),
        ("v1", "Secret") => roundtrip::<Secret>(v),
        ("v1", "Service") => roundtrip::<Service>(v),
        ("v1", "PersistentVolumeClaim") => roundtrip::<PersistentVolumeClaim>(v),
        ("apps/v1", "Deployment") => roundtrip::<Deployment>(v),
        ("apps/v1", "StatefulSet") => roundtrip::<StatefulSet>(v),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<ClusterRole>(v),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            roundtrip::<ClusterRoleBinding>(v)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip::<Role>(v),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => roundtrip::<RoleBinding>(v),
        ("networking.k8s.io/v1", "NetworkPolicy") => roundtrip::<NetworkPolicy>(v),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            roundtrip::<CustomResourceDefinition>(v)
        }
        // prometheus-operator's kind has no k8s-openapi type: its metadata
        // goes through ObjectMeta and its fields are checked one by one.
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            let mut back = v.clone();
            back["metadata"] =
                serde_json::to_value(
                    serde_json::from_value::<
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    >(v["metadata"].clone())
                    .expect("ObjectMeta"),
                )
                .unwrap();
            let spec = &v["spec"];
            assert!(spec["selector"]["matchLabels"].is_object(), "{v}");
            assert_eq!(spec["endpoints"][0]["port"], "http-metrics", "{v}");
            assert_eq!(spec["endpoints"][0]["path"], "/metrics", "{v}");
            back
        }
        other => panic!("the chart renders {other:?}, which this test does not know"),
    };
    assert!(
        same(v, &back),
        "{kind} {} loses or changes fields through its k8s-openapi type:\nrendered: {v:#}\ntyped:    {back:#}",
        v["metadata"]["name"]
    );
    kind
}

/// Pod Security "restricted", probes and resources on every Deployment and
/// StatefulSet.
fn assert_restricted(v: &Value) {
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(v["spec"]["template"].clone()).unwrap();
    let pod = template.spec.unwrap();
    let psc = pod.security_context.expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true), "{name}");
    assert!(psc.run_as_user.is_some_and(|u| u > 0), "{name}");
    assert_eq!(
        psc.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".into()),
        "{name}"
    );
    assert_ne!(pod.host_network, Some(true), "{name}");
    for vol in pod.volumes.unwrap_or_default() {
        assert!(vol.host_path.is_none(), "{name}: hostPath volume");
    }
    for c in pod.containers {
        let sc = c.security_context.expect("container securityContext");
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{name}/{}",
            c.name
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{name}/{}",
            c.name
        );
        assert_ne!(sc.privileged, Some(true), "{name}/{}", c.name);
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()]),
            "{name}/{}",
            c.name
        );
        assert!(c.liveness_probe.is_some(), "{name}/{}: liveness", c.name);
        assert!(c.readiness_probe.is_some(), "{name}/{}: readiness", c.name);
        let res = c.resources.expect("resources");
        assert!(
            res.requests
                .as_ref()
                .is_some_and(|r| r.contains_key("memory") && r.contains_key("cpu")),
            "{name}/{}: requests",
            c.name
        );
        assert!(
            res.limits
                .as_ref()
                .is_some_and(|r| r.contains_key("memory")),
            "{name}/{}: memory limit",
            c.name
        );
    }
}

fn by_kind(objects: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut m: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for o in objects {
        m.entry(o["kind"].as_str().unwrap().to_string())
            .or_default()
            .push(o);
    }
    m
}

fn arg_of<'a>(deployment: &'a Value, flag: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| {
            a.strip_prefix(&format!("{flag}="))
                .or((a == flag).then_some(""))
        })
}

#[test]
fn chart_crds_are_the_committed_crds() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let chart = chart_dir().join("crds");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&ours), names(&chart));
    for n in names(&ours) {
        assert_eq!(
            std::fs::read_to_string(ours.join(&n)).unwrap(),
            std::fs::read_to_string(chart.join(&n)).unwrap(),
            "charts/server-manager/crds/{n} differs from crds/{n}: cp crds/*.yaml charts/server-manager/crds/"
        );
    }
}

#[test]
fn chart_lints_renders_and_round_trips_for_every_toggle() {
    require_sdk();
    let home = tempfile::tempdir().unwrap();
    for (what, values) in toggles() {
        let lint = chart_tool("lint", &values, home.path())
            .unwrap_or_else(|e| panic!("lint ({what}) failed: {e}"));
        let findings: Vec<&Value> = lint["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(0) >= 2)
            .collect();
        assert!(
            findings.is_empty() && lint["errors"].as_array().is_none_or(|e| e.is_empty()),
            "helm lint --strict ({what}): {lint:#}"
        );

        let objects = render(&values, home.path());
        for o in &objects {
            assert_roundtrips(o);
            if o["kind"] == "Deployment" || o["kind"] == "StatefulSet" {
                assert_restricted(o);
            }
        }
        let kinds = by_kind(&objects);
        let count = |k: &str| kinds.get(k).map_or(0, Vec::len);
        assert_eq!(count("CustomResourceDefinition"), 3, "{what}");
        let deployments = &kinds["Deployment"];
        let deploy = |suffix: &str| {
            deployments
                .iter()
                .find(|d| d["metadata"]["name"].as_str().unwrap().ends_with(suffix))
                .copied()
        };
        let operator = deploy("-operator").expect("operator Deployment");
        assert!(
            deploy("-runner").is_none(),
            "{what}: the runner is a StatefulSet"
        );
        let runner = kinds["StatefulSet"]
            .iter()
            .find(|d| d["metadata"]["name"].as_str().unwrap().ends_with("-runner"))
            .copied()
            .expect("runner StatefulSet");
        // The operator finds the runners from the runner Service's endpoints.
        let runner_name = runner["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            arg_of(operator, "--runner-service"),
            Some(runner_name),
            "{what}"
        );
        assert_eq!(runner["spec"]["serviceName"], runner_name);
        let services: Vec<&str> = kinds["Service"]
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap())
            .collect();
        let runner_svc = kinds["Service"]
            .iter()
            .find(|s| s["metadata"]["name"].as_str().unwrap().ends_with("-runner"))
            .expect("runner Service");
        assert_eq!(runner_svc["spec"]["ports"][0]["port"], 9003, "{what}");

        match what {
            "defaults" => {
                assert!(deploy("-registry").is_some());
                assert_eq!(count("PersistentVolumeClaim"), 1, "registry PVC only");
                assert_eq!(count("NetworkPolicy"), 1);
                assert_eq!(count("Secret"), 1, "the runner token");
                assert_eq!(count("ServiceMonitor"), 0);
                assert_eq!(count("ClusterRole"), 1);
                assert_eq!(count("Role"), 3, "leases + secrets + runner endpoints");
                assert_eq!(runner["spec"]["replicas"], 1);
                assert_eq!(
                    arg_of(operator, "--registry"),
                    Some("sm-server-manager-registry.sm.svc:5000")
                );
                // Only the operator's pods reach the runner's port.
                let np = &kinds["NetworkPolicy"][0];
                assert_eq!(
                    np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
                    "runner"
                );
                let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
                assert_eq!(from.len(), 1);
                assert_eq!(
                    from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
                    "operator"
                );
                assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 9003);
                // The runner and the registry have no API credentials.
                for d in [runner, deploy("-registry").unwrap()] {
                    assert_eq!(
                        d["spec"]["template"]["spec"]["automountServiceAccountToken"],
                        false
                    );
                }
            }
            "external registry" => {
                assert!(deploy("-registry").is_none());
                assert!(!services.iter().any(|s| s.ends_with("-registry")));
                assert_eq!(count("PersistentVolumeClaim"), 0);
                assert_eq!(
                    arg_of(operator, "--registry"),
                    Some("registry.example.com:5000")
                );
                assert_eq!(arg_of(operator, "--registry-insecure"), None);
            }
            "registry NodePort, no persistence" => {
                assert_eq!(count("PersistentVolumeClaim"), 0);
                let svc = kinds["Service"]
                    .iter()
                    .find(|s| {
                        s["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .ends_with("-registry")
                    })
                    .unwrap();
                assert_eq!(svc["spec"]["type"], "NodePort");
                assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30500);
            }
            "runner persistence" => {
                // One volume per replica, from the StatefulSet's template.
                assert_eq!(count("PersistentVolumeClaim"), 1, "registry PVC only");
                let pvc = &runner["spec"]["volumeClaimTemplates"][0];
                assert_eq!(pvc["metadata"]["name"], "data");
                assert_eq!(pvc["spec"]["storageClassName"], "fast");
                assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "2Gi");
                assert_eq!(runner["spec"]["replicas"], 3);
            }
            "existing runner token" => {
                assert_eq!(count("Secret"), 0);
                let vols = &operator["spec"]["template"]["spec"]["volumes"];
                assert!(vols.to_string().contains("my-runner-token"), "{vols}");
            }
            "no NetworkPolicy" => assert_eq!(count("NetworkPolicy"), 0),
            "ServiceMonitor" => {
                assert_eq!(count("ServiceMonitor"), 1);
                assert!(services.iter().any(|s| s.ends_with("-operator-metrics")));
                let sm = &kinds["ServiceMonitor"][0];
                assert_eq!(sm["metadata"]["labels"]["release"], "prom");
                assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
            }
            "Secrets of other namespaces, by name" => {
                let roles: Vec<&&Value> = kinds["Role"]
                    .iter()
                    .filter(|r| {
                        r["metadata"]["name"]
                            .as_str()
                            .unwrap()
                            .ends_with("-secrets")
                    })
                    .collect();
                let ns: Vec<&str> = roles
                    .iter()
                    .map(|r| r["metadata"]["namespace"].as_str().unwrap())
                    .collect();
                assert_eq!(ns, ["lab", "infra"]);
                for r in roles {
                    assert_eq!(r["rules"][0]["resourceNames"], json!(["lab-ssh"]));
                    assert_eq!(r["rules"][0]["verbs"], json!(["get"]));
                }
                // Leases, runner endpoints, and Secrets of the two namespaces.
                assert_eq!(count("RoleBinding"), 4);
            }
            "no RBAC, existing ServiceAccount" => {
                for k in [
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Role",
                    "RoleBinding",
                    "ServiceAccount",
                ] {
                    assert_eq!(count(k), 0, "{k}");
                }
                assert_eq!(
                    operator["spec"]["template"]["spec"]["serviceAccountName"],
                    "ops"
                );
            }
            "image volume, replicas, scheduling" => {
                let pod = &operator["spec"]["template"]["spec"];
                assert_eq!(operator["spec"]["replicas"], 2);
                assert!(
                    pod["volumes"]
                        .to_string()
                        .contains("\"claimName\":\"images\"")
                );
                assert!(
                    pod["containers"][0]["volumeMounts"]
                        .to_string()
                        .contains("/var/lib/server-manager/images")
                );
                assert_eq!(pod["nodeSelector"]["role"], "infra");
                assert_eq!(pod["imagePullSecrets"][0]["name"], "pull");
                assert_eq!(
                    operator["metadata"]["labels"]["app.kubernetes.io/name"],
                    "sm2"
                );
            }
            other => panic!("toggle {other} has no expectations"),
        }
    }
}

#[test]
fn values_schema_rejects_bad_values_naming_the_field() {
    require_sdk();
    let home = tempfile::tempdir().unwrap();
    for (values, field) in [
        (json!({"registry": {"enabled": "yes"}}), "/registry/enabled"),
        (json!({"registry": {"enabled": false}}), "/registry/address"),
        (json!({"operator": {"replicas": 0}}), "/operator/replicas"),
        (
            json!({"runner": {"persistence": {"size": "lots"}}}),
            "/runner/persistence/size",
        ),
        (
            json!({"registry": {"service": {"type": "Ingress"}}}),
            "/registry/service/type",
        ),
        (
            json!({"rbac": {"secretNamespaces": ["Not_A_Namespace"]}}),
            "/rbac/secretNamespaces/0",
        ),
        (json!({"operatorr": {}}), "operatorr"),
    ] {
        let err = chart_tool("render", &values, home.path())
            .expect_err(&format!("{values} was accepted"));
        assert!(
            err.contains(field),
            "{values}: the error does not name {field}: {err}"
        );
    }
}

/// Leaf paths of values.yaml (maps recursed; lists and empty maps are leaves).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // resources.requests.cpu & co are one documented value.
                if k == "resources" {
                    out.push(p);
                } else {
                    leaves(v, &p, out);
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn readme_documents_every_value() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let mut paths = Vec::new();
    leaves(&values, "", &mut paths);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("| `{p}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's values table lacks {missing:?}"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for p in &paths {
        let mut s = &schema;
        for part in p.split('.') {
            s = &s["properties"][part];
        }
        assert!(s.is_object(), "values.schema.json does not describe {p}");
    }
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart() {
    require_sdk();
    let api = TestApi::start();
    let home = api.dir.path().join("home");
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let r = helm(&api.kubeconfig, &home, &["install", "sm", chart, "{}"]);
    assert_eq!(r["status"], "deployed", "{r}");
    // Helm keeps the release in a Secret, as its default driver does.
    assert_eq!(
        api.ok(&["get", "secrets", "-l", "owner=helm,name=sm", "-o", "name"])
            .trim(),
        "secret/sh.helm.release.v1.sm.v1"
    );
    // Every object of the release exists.
    let manifest = r["manifest"].as_str().expect("release manifest");
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            objects.push(v);
        }
    }
    assert!(objects.len() >= 13, "{} objects", objects.len());
    let refs: Vec<String> = objects
        .iter()
        .map(|o| {
            let group = o["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            format!(
                "{}{group}/{}",
                o["kind"].as_str().unwrap().to_lowercase(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let mut get = vec!["get", "-o", "name"];
    get.extend(refs.iter().map(String::as_str));
    let out = api.ok(&get);
    assert_eq!(out.lines().count(), objects.len(), "{out}");
    for crd in ["clusters", "servers", "images"] {
        api.ok(&["get", "crd", &format!("{crd}.servermanager.contrail.io")]);
    }
    let token = api.ok(&[
        "get",
        "secret",
        "sm-server-manager-runner-token",
        "-o",
        "jsonpath={.data.token}",
    ]);
    assert!(token.len() > 40, "{token}");

    // An upgrade keeps the generated token (lookup) and applies the change.
    let r = helm(
        &api.kubeconfig,
        &home,
        &["upgrade", "sm", chart, r#"{"operator": {"replicas": 2}}"#],
    );
    assert_eq!(r["revision"], 2, "{r}");
    assert_eq!(
        api.ok(&[
            "get",
            "secret",
            "sm-server-manager-runner-token",
            "-o",
            "jsonpath={.data.token}",
        ]),
        token,
        "the upgrade changed the runner's token"
    );
    assert_eq!(
        api.ok(&[
            "get",
            "deployment",
            "sm-server-manager-operator",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );

    let r = helm(&api.kubeconfig, &home, &["uninstall", "sm"]);
    assert_eq!(r["release"]["status"], "uninstalled", "{r}");
    let mut get = vec!["get", "-o", "name", "--ignore-not-found"];
    get.extend(refs.iter().map(String::as_str));
    assert_eq!(api.ok(&get).trim(), "", "objects left after uninstall");
    assert_eq!(
        api.ok(&["get", "secrets", "-l", "owner=helm,name=sm", "-o", "name"])
            .trim(),
        ""
    );
    // Helm never deletes CRDs (nor the resources users made of them).
    api.ok(&["get", "crd", "servers.servermanager.contrail.io"]);
}

/// The audit comparison the end-to-end test makes (support::chart), on a
/// made-up audit log: it fails on a refused request and on an unused grant.
#[test]
fn rbac_audit_comparison_fails_on_refusals_and_unused_grants() {
    use support::chart::assert_grants_used;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let user = "system:serviceaccount:default:op";
    let record =
        |verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str, code: u16| {
            json!({"user": user, "verb": verb, "apiGroup": group, "resource": resource,
               "subresource": sub, "namespace": ns, "name": name, "code": code})
            .to_string()
        };
    let role = json!({"kind": "Role", "metadata": {"name": "r", "namespace": "default"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "resourceNames": ["server-manager"], "verbs": ["get", "update"]}]});
    let cluster_role = json!({"kind": "ClusterRole", "metadata": {"name": "c"},
        "rules": [{"apiGroups": ["servermanager.contrail.io"],
                   "resources": ["servers/status"], "verbs": ["patch"]}]});
    let roles = [role, cluster_role];
    let used = [
        record(
            "get",
            "coordination.k8s.io",
            "leases",
            "",
            "default",
            "server-manager",
            200,
        ),
        record(
            "update",
            "coordination.k8s.io",
            "leases",
            "",
            "default",
            "server-manager",
            200,
        ),
        record(
            "patch",
            "servermanager.contrail.io",
            "servers",
            "status",
            "lab",
            "a",
            200,
        ),
    ];
    std::fs::write(&log, used.join("\n")).unwrap();
    assert_grants_used(&log, user, &roles);

    let fails = |lines: &[String]| {
        std::fs::write(&log, lines.join("\n")).unwrap();
        std::panic::catch_unwind(|| assert_grants_used(&log, user, &roles)).is_err()
    };
    // A grant nothing used: the update of the Lease.
    assert!(fails(&[used[0].clone(), used[2].clone()]));
    // Used only in another namespace than the Role's.
    let elsewhere = record(
        "update",
        "coordination.k8s.io",
        "leases",
        "",
        "other",
        "server-manager",
        200,
    );
    assert!(fails(&[used[0].clone(), elsewhere, used[2].clone()]));
    // A refused request: a missing permission.
    let mut refused = used.to_vec();
    refused.push(record("list", "", "secrets", "", "default", "", 403));
    assert!(fails(&refused));
}
