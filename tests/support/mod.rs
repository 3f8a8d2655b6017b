//! Test harness shared by the integration tests: starts the real components
//! (Debian's `docker-registry`, images built with `docker import`) on loopback.
//! Each helper fails loudly when its component is missing: tests never skip.
#![allow(dead_code)]

pub mod apiserver;
pub mod chart;
pub mod http_tools;
pub mod images;
pub mod lab;
pub mod registry;
pub mod secure_registry;
pub mod sshd;
pub mod token_auth;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Panics with a clear message when `program` is not installed.
pub fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: the test command (scripts/test.sh) installs Debian package {package}"
    );
}

/// Runs a command, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a minimal root filesystem (busybox-static and its applet links) into
/// `dir`, for `docker import`.
pub fn busybox_rootfs(dir: &Path) {
    require("busybox", "busybox-static");
    let busybox = Path::new("/bin/busybox");
    for sub in ["bin", "etc", "tmp", "var/log", "etc/contrailctl"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir rootfs");
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh",
        "cat",
        "ls",
        "sleep",
        "echo",
        "id",
        "tail",
        "sha256sum",
    ] {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).expect("applet link");
        }
    }
}

/// Imports a busybox root filesystem as `tag` into the local Docker engine,
/// with `cmd` as its command. The image has one layer.
pub fn docker_import_busybox(tag: &str, cmd: &str) {
    require("docker", "docker.io");
    let dir = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(dir.path());
    let tar = dir.path().with_extension("tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(Command::new("docker")
        .arg("import")
        .arg("--change")
        .arg(format!("CMD {cmd}"))
        .arg(&tar)
        .arg(tag));
    let _ = std::fs::remove_file(tar);
}
