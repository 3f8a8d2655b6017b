//! The embedded API server driven by the real kubectl (default flags): CRDs,
//! custom resources, apply (client- and server-side), label, patch, status,
//! wait, finalizers, validation, protobuf-created Secrets, events, restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::apiserver::{SAMPLE_MANIFESTS, TestApi, crds_dir};

#[test]
fn kubectl_lifecycle_of_custom_resources_survives_a_restart() {
    let mut api = TestApi::start();
    let crds = crds_dir().to_str().expect("path").to_string();
    api.ok(&["apply", "-f", &crds]);
    let manifests = api.file("examples/all.yaml", SAMPLE_MANIFESTS);
    let m = manifests.to_str().expect("path");
    let out = api.ok(&["apply", "-f", m]);
    assert!(
        out.contains("cluster.servermanager.contrail.io/lab created"),
        "{out}"
    );
    assert!(
        out.contains("server.servermanager.contrail.io/node1 created"),
        "{out}"
    );

    let out = api.ok(&["get", "servers"]);
    assert!(out.contains("node1"), "{out}");
    let yaml = api.ok(&["get", "server", "node1", "-o", "yaml"]);
    // Defaults from the schema are applied; generation starts at 1.
    assert!(
        yaml.contains("configDir: /etc/contrail") || yaml.contains("provisioning: Managed"),
        "{yaml}"
    );
    assert!(yaml.contains("generation: 1"), "{yaml}");

    // Applying the same manifests again changes nothing.
    let out = api.ok(&["apply", "-f", m]);
    assert!(
        out.contains("server.servermanager.contrail.io/node1 unchanged"),
        "{out}"
    );
    assert!(
        out.contains("cluster.servermanager.contrail.io/lab unchanged"),
        "{out}"
    );

    // Server-side apply.
    let out = api.ok(&["apply", "--server-side", "-f", m]);
    assert!(out.contains("serverside-applied"), "{out}");

    // label, merge patch, status patch, wait.
    api.ok(&["label", "server", "node1", "tier=control"]);
    let out = api.ok(&["get", "servers", "-l", "tier=control", "-o", "name"]);
    assert_eq!(out.trim(), "server.servermanager.contrail.io/node1");
    let err = api.fails_in(
        &[
            "patch",
            "server",
            "node1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"bad":"has space"}}}"#,
        ],
        None,
    );
    assert!(err.contains("metadata.labels: Invalid value"), "{err}");
    let out = api.ok(&["get", "servers", "-l", "tier in (data)", "-o", "name"]);
    assert_eq!(out.trim(), "");
    api.ok(&[
        "patch",
        "server",
        "node1",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    let generation = api.ok(&[
        "get",
        "server",
        "node1",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2", "a spec change bumps generation");
    api.ok(&["patch", "server", "node1", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Provisioned","message":"ok","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#]);
    let generation = api.ok(&[
        "get",
        "server",
        "node1",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2", "a status change does not bump generation");
    api.ok(&[
        "wait",
        "--for=condition=Ready",
        "server/node1",
        "--timeout=20s",
    ]);

    // Status sent to the main resource is ignored.
    api.ok(&[
        "patch",
        "server",
        "node1",
        "--type=merge",
        "-p",
        r#"{"status":{"progress":"x"}}"#,
    ]);
    let p = api.ok(&[
        "get",
        "server",
        "node1",
        "-o",
        "jsonpath={.status.progress}",
    ]);
    assert_eq!(p, "");

    // A finalizer keeps a deleted object until it is removed.
    api.ok(&[
        "patch",
        "image",
        "controller-5-0",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["servermanager.contrail.io/cleanup"]}}"#,
    ]);
    api.ok(&["delete", "image", "controller-5-0", "--wait=false"]);
    let ts = api.ok(&[
        "get",
        "image",
        "controller-5-0",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !ts.is_empty(),
        "deletionTimestamp set while the finalizer is present"
    );
    let err = api.fails_in(
        &[
            "patch",
            "image",
            "controller-5-0",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["servermanager.contrail.io/cleanup","other"]}}"#,
        ],
        None,
    );
    assert!(err.contains("no new finalizers"), "{err}");
    let waiter = {
        let kubeconfig = api.kubeconfig.clone();
        let home = api.dir.path().join("home");
        std::process::Command::new("kubectl")
            .args([
                "wait",
                "--for=delete",
                "image/controller-5-0",
                "--timeout=30s",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .spawn()
            .expect("kubectl wait")
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    api.ok(&[
        "patch",
        "image",
        "controller-5-0",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let status = waiter.wait_with_output().expect("wait").status;
    assert!(status.success(), "kubectl wait --for=delete");
    let err = api.fails_in(&["get", "image", "controller-5-0"], None);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // Everything survives a restart.
    let uid = api.ok(&["get", "server", "node1", "-o", "jsonpath={.metadata.uid}"]);
    let rv: u64 = api
        .ok(&[
            "get",
            "server",
            "node1",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    api.restart();
    assert_eq!(
        api.ok(&["get", "server", "node1", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );
    let labels = api.ok(&[
        "get",
        "server",
        "node1",
        "-o",
        "jsonpath={.metadata.labels.tier}",
    ]);
    assert_eq!(labels, "control");
    api.ok(&[
        "wait",
        "--for=condition=Ready",
        "server/node1",
        "--timeout=20s",
    ]);
    api.ok(&["label", "server", "node1", "tier=edge", "--overwrite"]);
    let rv2: u64 = api
        .ok(&[
            "get",
            "server",
            "node1",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    assert!(
        rv2 > rv,
        "resourceVersions keep increasing across a restart"
    );
    let out = api.ok(&["apply", "-f", m]);
    assert!(
        out.contains("cluster.servermanager.contrail.io/lab unchanged"),
        "{out}"
    );
}

#[test]
fn kubectl_apply_rejects_invalid_objects_naming_the_field() {
    let api = TestApi::start();
    api.ok(&["apply", "-f", crds_dir().to_str().expect("path")]);
    let bad_port = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: bad1}
spec:
  clusterRef: {name: lab}
  host: 10.0.0.12
  roles: [controller]
  ssh: {port: "twenty-two", secretRef: {name: ssh}}
"#;
    let err = api.fails_in(&["apply", "-f", "-"], Some(bad_port));
    assert!(err.contains("spec.ssh.port"), "{err}");
    assert!(err.contains("must be of type integer"), "{err}");

    let missing = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: bad2}
spec:
  clusterRef: {name: lab}
  roles: [controller]
  ssh: {secretRef: {name: ssh}}
"#;
    let err = api.fails_in(&["apply", "-f", "-"], Some(missing));
    assert!(err.contains("spec.host: Required value"), "{err}");

    let bad_image = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Image
metadata: {name: bad3}
spec:
  imageId: Contrail-Container
  imageType: controller
  version: "5.0"
  source: {reference: registry.example.com/busybox}
"#;
    let err = api.fails_in(&["apply", "-f", "-"], Some(bad_image));
    assert!(err.contains("spec.imageId"), "{err}");
    assert!(err.contains("should match"), "{err}");

    // CEL: exactly one source.
    let two_sources = bad_image
        .replace("Contrail-Container", "contrail-container")
        .replace(
            "{reference: registry.example.com/busybox}",
            "{reference: registry.example.com/busybox, path: /tmp/x.tar}",
        );
    let err = api.fails_in(&["apply", "-f", "-"], Some(&two_sources));
    assert!(err.contains("spec.source"), "{err}");

    // An unknown field: rejected under --validate=strict (kubectl's default
    // sends Strict too), pruned with --validate=false.
    let unknown = r#"apiVersion: servermanager.contrail.io/v1alpha1
kind: Server
metadata: {name: extra}
spec:
  clusterRef: {name: lab}
  host: 10.0.0.13
  roles: [controller]
  ssh: {secretRef: {name: ssh}}
  colour: blue
"#;
    let err = api.fails_in(&["apply", "--validate=strict", "-f", "-"], Some(unknown));
    assert!(err.contains("unknown field \"spec.colour\""), "{err}");
    let dry = api.ok_in(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&unknown.replace("colour: blue\n", "")),
    );
    assert!(dry.contains("(server dry run)"), "{dry}");
    let err = api.fails_in(&["get", "server", "extra"], None);
    assert!(
        err.contains("not found"),
        "a server dry run stores nothing: {err}"
    );
    let out = api.kubectl_in(&["apply", "--validate=warn", "-f", "-"], Some(unknown));
    assert!(out.status.success());
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("unknown field \"spec.colour\""), "{warned}");
    api.ok(&["delete", "server", "extra"]);
    api.ok_in(&["apply", "--validate=false", "-f", "-"], Some(unknown));
    let spec = api.ok(&["get", "server", "extra", "-o", "jsonpath={.spec}"]);
    assert!(!spec.contains("colour"), "unknown field pruned: {spec}");
    assert!(spec.contains("10.0.0.13"), "{spec}");
}

#[test]
fn kubectl_create_secret_from_file_reads_back_byte_identical() {
    let api = TestApi::start();
    let key: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let path = api.dir.path().join("id_ed25519");
    std::fs::write(&path, &key).expect("key");
    let arg = format!("--from-file=ssh-privatekey={}", path.display());
    api.ok(&["create", "secret", "generic", "ssh", &arg]);
    let b64 = api.ok(&[
        "get",
        "secret",
        "ssh",
        "-o",
        "jsonpath={.data.ssh-privatekey}",
    ]);
    use base64::Engine;
    let back = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("base64");
    assert_eq!(back, key);
    let t = api.ok(&["get", "secret", "ssh", "-o", "jsonpath={.type}"]);
    assert_eq!(t, "Opaque");
    api.ok(&["create", "configmap", "c1", "--from-literal=a=b"]);
    assert_eq!(
        api.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    for i in 0..5 {
        api.ok(&[
            "create",
            "configmap",
            &format!("page{i}"),
            "--from-literal=a=b",
        ]);
    }
    // Pagination (limit/continue) as kubectl drives it.
    let out = api.ok(&[
        "get",
        "cm",
        "--chunk-size=2",
        "-o",
        "name",
        "-l",
        "!nothing",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.contains("page")).count(),
        5,
        "{out}"
    );
    let out = api.ok(&["get", "cm", "-A", "--chunk-size=2", "-o", "name"]);
    assert_eq!(out.lines().count(), 6, "{out}");
    api.ok(&["create", "serviceaccount", "builder"]);
    api.ok(&["get", "sa", "builder"]);
    api.ok(&["create", "namespace", "lab"]);
    api.ok(&[
        "create",
        "configmap",
        "c2",
        "-n",
        "lab",
        "--from-literal=x=y",
    ]);
    // Deleting a namespace deletes its contents.
    api.ok(&["delete", "namespace", "lab", "--timeout=30s"]);
    let err = api.fails_in(&["get", "ns", "lab"], None);
    assert!(err.contains("not found"), "{err}");
    let err = api.fails_in(
        &[
            "create",
            "configmap",
            "c3",
            "-n",
            "nowhere",
            "--from-literal=x=y",
        ],
        None,
    );
    assert!(err.contains("not found"), "{err}");
}
