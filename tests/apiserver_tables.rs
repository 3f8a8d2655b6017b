//! Table output of the embedded API server, read by the real kubectl: CRD
//! printer columns (JSONPath filters, arrays, priorities, ages), built-in
//! printers, `-A`/`--show-labels` from the row metadata, and `get -w` keeping
//! its columns (each watch event a one-row Table).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::apiserver::{SAMPLE_MANIFESTS, TestApi, crds_dir};

fn setup() -> TestApi {
    let api = TestApi::start();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);
    let m = api.file("all.yaml", SAMPLE_MANIFESTS);
    api.ok(&["apply", "-f", m.to_str().expect("path")]);
    api
}

/// The header line's columns and the row starting with `name`.
fn header_and_row(out: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = out.lines();
    let header = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    (header, row)
}

#[test]
fn kubectl_get_prints_the_crd_printer_columns() {
    let api = setup();
    api.ok(&[
        "patch",
        "server",
        "node1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"progress":"3/7","containersReady":"1/2","conditions":[
            {"type":"Synced","status":"False","reason":"Other","message":"x","lastTransitionTime":"2025-01-01T00:00:00Z"},
            {"type":"Ready","status":"True","reason":"Provisioned","message":"ok","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#,
    ]);

    let out = api.ok(&["get", "servers"]);
    let (h, row) = header_and_row(&out, "node1");
    assert_eq!(
        h,
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
        "{out}"
    );
    assert_eq!(
        row[..7],
        [
            "node1",
            "lab",
            "10.0.0.11",
            r#"["controller"]"#,
            "True",
            "1/2",
            "3/7"
        ]
    );
    assert!(
        row[7].ends_with('s') || row[7].ends_with('m'),
        "age cell: {out}"
    );

    // -o wide adds the priority-1 columns (Provisioning, Reason).
    let out = api.ok(&["get", "servers", "-o", "wide"]);
    let (h, row) = header_and_row(&out, "node1");
    assert_eq!(
        h,
        [
            "NAME",
            "CLUSTER",
            "HOST",
            "ROLES",
            "READY",
            "CONTAINERS",
            "PROGRESS",
            "PROVISIONING",
            "REASON",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(row[7..9], ["Managed", "Provisioned"], "{out}");

    // Several kinds at once.
    let out = api.ok(&["get", "servers,clusters,images"]);
    assert!(
        out.contains("SERVERS   READY-SERVERS   UPDATED   ROLLOUT   ROLE   READY   AGE"),
        "cluster columns: {out}"
    );
    assert!(
        out.contains("TYPE         VERSION   READY   AGE")
            || out.contains("TYPE ")
                && out.contains("VERSION")
                && out.contains("image.servermanager.contrail.io/controller-5-0"),
        "image columns: {out}"
    );
    let img = out
        .lines()
        .find(|l| l.starts_with("image.servermanager.contrail.io/controller-5-0"))
        .expect("image row");
    assert!(
        img.contains("controller") && img.contains("5.0-214"),
        "{img}"
    );
    let out = api.ok(&["get", "clusters", "-o", "wide"]);
    let (h, row) = header_and_row(&out, "lab");
    assert_eq!(
        h,
        [
            "NAME",
            "SERVERS",
            "READY-SERVERS",
            "UPDATED",
            "ROLLOUT",
            "ROLE",
            "READY",
            "REVISION",
            "REASON",
            "AGE"
        ],
        "{out}"
    );
    // Cells without a value (no status yet) print empty, as on a real cluster.
    assert_eq!(row.len(), 2, "{out}");

    // -A takes the namespace from the row's PartialObjectMetadata, and
    // --show-labels its labels.
    api.ok(&["label", "server", "node1", "tier=control"]);
    let out = api.ok(&["get", "servers", "-A", "--show-labels"]);
    let (h, row) = header_and_row(&out, "default");
    assert_eq!(h.first().map(String::as_str), Some("NAMESPACE"), "{out}");
    assert_eq!(h.last().map(String::as_str), Some("LABELS"), "{out}");
    assert_eq!(row[1], "node1", "{out}");
    assert_eq!(
        row.last().map(String::as_str),
        Some("tier=control"),
        "{out}"
    );

    // Machine-readable outputs are unaffected.
    let out = api.ok(&["get", "server", "node1", "-o", "jsonpath={.spec.host}"]);
    assert_eq!(out, "10.0.0.11");
}

#[test]
fn builtin_kinds_and_crds_without_columns_get_default_printers() {
    let api = setup();
    api.ok(&[
        "create",
        "configmap",
        "cm1",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    api.ok(&["create", "secret", "generic", "s1", "--from-literal=a=1"]);
    api.ok_in(
        &["apply", "-f", "-"],
        Some(
            r#"apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader}
spec: {holderIdentity: op-1}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#,
        ),
    );
    let out = api.ok(&["get", "configmap", "cm1"]);
    let (h, row) = header_and_row(&out, "cm1");
    assert_eq!(h, ["NAME", "DATA", "AGE"], "{out}");
    assert_eq!(row[1], "2", "{out}");
    let out = api.ok(&["get", "secret", "s1"]);
    let (h, row) = header_and_row(&out, "s1");
    assert_eq!(h, ["NAME", "TYPE", "DATA", "AGE"], "{out}");
    assert_eq!(row[1..3], ["Opaque", "1"], "{out}");
    let out = api.ok(&["get", "namespaces"]);
    let (h, row) = header_and_row(&out, "default");
    assert_eq!(h, ["NAME", "STATUS", "AGE"], "{out}");
    assert_eq!(row[1], "Active", "{out}");
    let out = api.ok(&["get", "lease", "leader"]);
    let (h, row) = header_and_row(&out, "leader");
    assert_eq!(h, ["NAME", "HOLDER", "AGE"], "{out}");
    assert_eq!(row[1], "op-1", "{out}");
    let out = api.ok(&["get", "crd", "servers.servermanager.contrail.io"]);
    let (h, row) = header_and_row(&out, "servers.servermanager.contrail.io");
    assert_eq!(h, ["NAME", "CREATED", "AT"], "{out}");
    assert!(row[1].ends_with('Z') && row[1].contains('T'), "{out}");
    api.ok_in(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Event\nmetadata: {name: e1}\ninvolvedObject: {kind: Server, name: node1, namespace: default}\nreason: Testing\nmessage: hello\ntype: Normal\nlastTimestamp: \"2025-01-01T00:00:00Z\"\n",
        ),
    );
    let out = api.ok(&["get", "events"]);
    assert_eq!(
        out.lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[1..],
        ["Normal", "Testing", "server/node1", "hello"],
        "{out}"
    );
    assert!(row[0].ends_with('d'), "an age in days: {out}");
    api.ok_in(
        &["apply", "-f", "-"],
        Some("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"),
    );
    let out = api.ok(&["get", "widgets"]);
    let (h, _) = header_and_row(&out, "w1");
    assert_eq!(h, ["NAME", "AGE"], "{out}");
}

#[test]
fn table_json_carries_partial_object_metadata_and_both_versions() {
    let api = setup();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = rt.enter();
    let client = api.client();
    let get = |path: &str, accept: &str| -> serde_json::Value {
        let req = hyper::Request::get(path)
            .header("Accept", accept)
            .body(Vec::new())
            .expect("request");
        rt.block_on(client.request::<serde_json::Value>(req))
            .expect("table request")
    };
    let path = "/apis/servermanager.contrail.io/v1alpha1/namespaces/default/servers";
    let t = get(
        path,
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert!(t["metadata"]["resourceVersion"].as_str().is_some(), "{t}");
    let cols: Vec<(&str, i64)> = t["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        cols,
        [
            ("Name", 0),
            ("Cluster", 0),
            ("Host", 0),
            ("Roles", 0),
            ("Ready", 0),
            ("Containers", 0),
            ("Progress", 0),
            ("Provisioning", 1),
            ("Reason", 1),
            ("Age", 0)
        ]
    );
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "node1");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    assert!(row["object"]["metadata"]["uid"].is_string());
    // One object.
    let t = get(
        &format!("{path}/node1"),
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    );
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
    // Plain JSON when Table is not asked for first.
    let o = get(&format!("{path}/node1"), "application/json");
    assert_eq!(o["kind"], "Server");
}

#[test]
fn kubectl_get_watch_keeps_the_columns() {
    let api = setup();
    let mut child = Command::new("kubectl")
        .args(["get", "-w", "servers", "--request-timeout=60s"])
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HOME", api.dir.path().join("home"))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |lines: &mut Vec<String>, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                let hit = pred(&l);
                lines.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    assert!(
        wait_for(&mut lines, &|l| l.starts_with("node1")),
        "initial row: {lines:?}"
    );
    for (progress, ready) in [("1/7", "False"), ("7/7", "True")] {
        api.ok(&[
            "patch",
            "server",
            "node1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(
                r#"{{"status":{{"progress":"{progress}","containersReady":"0/1","conditions":[{{"type":"Ready","status":"{ready}","reason":"R","message":"m","lastTransitionTime":"2025-01-01T00:00:00Z"}}]}}}}"#
            ),
        ]);
        assert!(
            wait_for(&mut lines, &|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.len() == 8 && c[0] == "node1" && c[4] == ready && c[6] == progress
            }),
            "a column row for {progress}: {lines:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "CLUSTER",
            "HOST",
            "ROLES",
            "READY",
            "CONTAINERS",
            "PROGRESS",
            "AGE"
        ]
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header: {lines:?}"
    );
}
