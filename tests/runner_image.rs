//! The container images, checked where no base image can be pulled (this
//! machine reaches no image registry, so `docker build` cannot run here).
//!
//! The runner image is Debian (the release of this machine) plus the
//! packages its Dockerfile stage installs; this test proves those are exactly
//! the packages the runner's tests (tests/runner_*.rs, tests/e2e_*.rs) run
//! `ansible-playbook`, the community.docker collection and `ssh` from, and
//! that they work the way the image runs them (HOME=/tmp, no other
//! environment). It also holds the Dockerfile and the chart to each other:
//! users, paths and subcommands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile")
}

/// The lines of stage `name` (after its FROM, up to the next FROM), with
/// continuation lines joined.
fn stage(name: &str) -> (String, Vec<String>) {
    let text = dockerfile().replace("\\\n", " ");
    let mut from = None;
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            if from.is_some() {
                break;
            }
            if line.ends_with(&format!(" AS {name}")) {
                from = Some(line.to_string());
            }
            continue;
        }
        if from.is_some() && !line.is_empty() && !line.starts_with('#') {
            lines.push(line.to_string());
        }
    }
    (
        from.unwrap_or_else(|| panic!("no stage {name} in the Dockerfile")),
        lines,
    )
}

fn arg_default(name: &str) -> String {
    dockerfile()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
        .unwrap_or_else(|| panic!("ARG {name} has no default"))
        .trim()
        .to_string()
}

fn sh(cmd: &str) -> String {
    support::run(Command::new("sh").arg("-c").arg(cmd))
        .trim()
        .to_string()
}

fn owner_package(path: &str) -> String {
    let out = sh(&format!("dpkg -S {path}"));
    out.split(':').next().unwrap_or("").to_string()
}

#[test]
fn runner_image_has_what_the_runner_tests_run_with() {
    let (from, lines) = stage("runner");
    // Debian, the release this machine runs (so: the same package versions).
    let release = arg_default("DEBIAN_RELEASE");
    assert!(
        from.contains("debian:${DEBIAN_RELEASE}-slim"),
        "runner base: {from}"
    );
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    assert!(
        os.lines()
            .any(|l| l == format!("VERSION_CODENAME={release}")),
        "the runner image is Debian {release}, this machine is not:\n{os}"
    );

    // The packages the image installs.
    let install = lines
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("an apt-get install in the runner stage");
    let after = install.split("apt-get install").nth(1).unwrap();
    let packages: BTreeSet<&str> = after
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(
        packages,
        BTreeSet::from(["ansible", "openssh-client"]),
        "{install}"
    );
    for p in &packages {
        let status = sh(&format!("dpkg-query -W -f='${{Status}}' {p}"));
        assert_eq!(status, "install ok installed", "{p} is not installed here");
    }

    // ansible-playbook (what the runner executes) comes from ansible-core,
    // which the ansible package depends on.
    let playbook = sh("readlink -f \"$(command -v ansible-playbook)\"");
    let core = owner_package(&playbook);
    assert_eq!(core, "ansible-core", "{playbook}");
    let depends = sh("dpkg-query -W -f='${Depends}' ansible");
    assert!(depends.contains("ansible-core"), "{depends}");

    // The community.docker collection the playbooks use is the one inside
    // the ansible package (not a separate ansible-galaxy install the image
    // would lack).
    let list = sh("ansible-galaxy collection list community.docker --format json 2>/dev/null");
    let list: Value = serde_json::from_str(&list).expect("collection list JSON");
    let (dir, found) = list
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("community.docker is not installed");
    assert!(found.get("community.docker").is_some(), "{list}");
    assert_eq!(
        owner_package(&format!("{dir}/community/docker")),
        "ansible",
        "community.docker at {dir}"
    );
    let used = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/provision.yml"),
    )
    .unwrap();
    assert!(used.contains("community.docker."), "the playbooks use it");

    // ssh from openssh-client.
    assert_eq!(
        owner_package(&sh("readlink -f \"$(command -v ssh)\"")),
        "openssh-client"
    );

    // As the image runs them: HOME=/tmp (an empty directory here), nothing
    // else in the environment but PATH.
    let home = tempfile::tempdir().unwrap();
    for cmd in [
        "ansible-playbook --version",
        "ansible-doc -t module community.docker.docker_container",
        "ssh -V",
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dockerfile_and_chart_agree() {
    support::chart::require_sdk();
    let home = tempfile::tempdir().unwrap();
    let objects = support::chart::render(&json!({}), home.path());
    let deployment = |suffix: &str| {
        objects
            .iter()
            .find(|o| {
                (o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
                    && o["metadata"]["name"].as_str().unwrap().ends_with(suffix)
            })
            .unwrap()
            .clone()
    };
    for (stage_name, suffix, subcommand) in [
        ("operator", "-operator", "operator"),
        ("runner", "-runner", "playbook-runner"),
    ] {
        let (_, lines) = stage(stage_name);
        let d = deployment(suffix);
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        // The image's user is the one the chart runs as.
        let user = lines
            .iter()
            .find_map(|l| l.strip_prefix("USER "))
            .expect("USER");
        let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
        assert_eq!(user, format!("{uid}:{uid}"), "{stage_name}");
        // The entrypoint is the binary; the chart gives the subcommand.
        assert!(
            lines
                .iter()
                .any(|l| l == "ENTRYPOINT [\"/usr/local/bin/server-manager\"]"),
            "{stage_name}"
        );
        assert_eq!(c["args"][0], subcommand, "{stage_name}");
        // The playbooks are where the chart says.
        assert!(
            lines
                .iter()
                .any(|l| l == "COPY playbooks /usr/share/server-manager/playbooks"),
            "{stage_name}"
        );
        assert!(
            c["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--playbooks=/usr/share/server-manager/playbooks"),
            "{stage_name}"
        );
    }
    // The runner's HOME is the writable /tmp the chart mounts.
    let (_, lines) = stage("runner");
    assert!(lines.iter().any(|l| l == "ENV HOME=/tmp"));
    let runner = deployment("-runner");
    let c = &runner["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/tmp")
    );
    // The operator image is distroless (glibc only): the binary needs no
    // more than that.
    let ldd = sh(&format!("ldd {}", env!("CARGO_BIN_EXE_server-manager")));
    for line in ldd.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        assert!(
            [
                "linux-vdso",
                "libgcc_s",
                "libm.",
                "libc.",
                "/lib64/ld-linux",
                "libpthread",
                "libdl",
                "librt"
            ]
            .iter()
            .any(|ok| lib.starts_with(ok)),
            "server-manager links {lib}, which gcr.io/distroless/cc-debian12 may lack:\n{ldd}"
        );
    }
}
