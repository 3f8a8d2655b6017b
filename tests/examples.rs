//! `examples/` is a realistic lab and stays valid: it parses into the resource
//! types with no field lost, every managed Server renders, and `render --out`
//! writes exactly the files the engine computes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use kube::ResourceExt;
use serde_json::Value;
use server_manager::crd::{ImageCategory, Provisioning, Role};
use server_manager::manifests::Manifests;

fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

#[test]
fn the_lab_is_complete() {
    let m = Manifests::load(&[examples()]).unwrap();
    assert_eq!(m.clusters.len(), 1);
    let managed: Vec<_> = m
        .servers
        .iter()
        .filter(|s| s.spec.provisioning == Provisioning::Managed)
        .collect();
    let external: Vec<_> = m
        .servers
        .iter()
        .filter(|s| s.spec.provisioning == Provisioning::External)
        .collect();
    assert_eq!(managed.len(), 3);
    assert_eq!(external.len(), 1);
    assert!(external[0].spec.roles.contains(&Role::Controller));
    let roles_of = |r: Role| managed.iter().any(|s| s.spec.roles.contains(&r));
    assert!(
        roles_of(Role::Controller)
            && roles_of(Role::Analytics)
            && roles_of(Role::Analyticsdb)
            && roles_of(Role::Agent)
    );

    // Every role a managed server runs has a container Image, via the cluster's defaults.
    let cluster = &m.clusters[0];
    for s in &managed {
        for role in &s.spec.roles {
            let image_name = s
                .spec
                .images
                .get(role.as_str())
                .or(cluster.spec.images.get(role.as_str()))
                .unwrap_or_else(|| panic!("{} has no image for {role}", s.name_any()));
            let image = m
                .images
                .iter()
                .find(|i| &i.name_any() == image_name)
                .expect("image exists");
            assert_eq!(image.spec.image_type, *role);
            assert_eq!(image.spec.category, ImageCategory::Container);
        }
    }
    for s in &managed {
        let cfg = m.effective_config("default", &s.name_any()).unwrap();
        assert_eq!(cfg.roles.len(), s.spec.roles.len());
        // The External controller is counted in controller_nodes.
        let global = &cfg.roles[0].values;
        let nodes = global.iter().find(|v| v.key == "controller_nodes").unwrap();
        assert!(
            nodes.value.contains(&external[0].spec.host),
            "{}",
            nodes.value
        );
    }
}

/// Every leaf of `input` is present, equal, in `output`.
fn assert_no_field_lost(input: &Value, output: &Value, path: &str) {
    match input {
        Value::Object(map) => {
            for (k, v) in map {
                let out = output
                    .get(k)
                    .unwrap_or_else(|| panic!("field {path}.{k} lost"));
                assert_no_field_lost(v, out, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            let out = output
                .as_array()
                .unwrap_or_else(|| panic!("{path} is no longer a list"));
            assert_eq!(items.len(), out.len(), "{path}");
            for (i, (a, b)) in items.iter().zip(out).enumerate() {
                assert_no_field_lost(a, b, &format!("{path}[{i}]"));
            }
        }
        // YAML numbers may come back as the same number of another width.
        Value::Number(n) => assert_eq!(n.as_f64(), output.as_f64(), "{path}"),
        other => assert_eq!(other, output, "{path}"),
    }
}

#[test]
fn no_field_is_lost_by_the_types() {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let input: Value = serde::Deserialize::deserialize(doc).unwrap();
            let output = match input["kind"].as_str().unwrap() {
                "Cluster" => serde_json::to_value(
                    serde_json::from_value::<server_manager::crd::Cluster>(input.clone()).unwrap(),
                ),
                "Server" => serde_json::to_value(
                    serde_json::from_value::<server_manager::crd::Server>(input.clone()).unwrap(),
                ),
                "Image" => serde_json::to_value(
                    serde_json::from_value::<server_manager::crd::Image>(input.clone()).unwrap(),
                ),
                other => panic!("unexpected kind {other} in {}", path.display()),
            }
            .unwrap();
            assert_no_field_lost(&input, &output, &format!("{}:", path.display()));
        }
    }
}

#[test]
fn render_out_writes_the_engine_files_byte_for_byte() {
    let m = Manifests::load(&[examples()]).unwrap();
    let cfg = m.effective_config("default", "lab-ctrl-1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_server-manager"))
        .args(["render", "-f"])
        .arg(examples())
        .args(["--server", "lab-ctrl-1", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["analytics.conf", "controller.conf"]);
    for role in &cfg.roles {
        let on_disk = std::fs::read(dir.path().join(format!("{}.conf", role.role))).unwrap();
        assert_eq!(on_disk, role.content.as_bytes());
    }

    // The preview shows each file and the provenance of each value.
    let out = Command::new(env!("CARGO_BIN_EXE_server-manager"))
        .args(["render", "-f"])
        .arg(examples())
        .args(["--server", "lab-ctrl-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&cfg.roles[0].content), "{text}");
    assert!(text.contains("GLOBAL.controller_nodes"), "{text}");
    assert!(
        text.contains(
            "derived from the hosts of Servers with role controller (lab-ctrl-1, lab-ext-ctrl)"
        ),
        "{text}"
    );
}

#[test]
fn render_reports_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cluster.yaml", "servers.yaml", "images.yaml"] {
        std::fs::copy(examples().join(f), dir.path().join(f)).unwrap();
    }
    let servers = std::fs::read_to_string(dir.path().join("servers.yaml")).unwrap();
    std::fs::write(
        dir.path().join("servers.yaml"),
        servers.replace(
            "vrouter_physical_interface: eth1",
            "vrouter_physical_interface: eth1\n      no_such_option: 1",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_server-manager"))
        .args(["render", "-f"])
        .arg(dir.path())
        .args(["--server", "lab-compute-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("[AGENT] no_such_option (from server lab-compute-1)"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("servers.yaml"),
        servers.replace("port: 22", "port: ssh"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_server-manager"))
        .args(["render", "-f"])
        .arg(dir.path())
        .args(["--server", "lab-ctrl-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("servers.yaml, document 1: spec.ssh.port"),
        "{err}"
    );
}
