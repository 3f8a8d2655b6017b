//! Test harness shared by the integration tests: starts the real components
//! (Debian's `docker-registry`, images built with `docker import`) on loopback.
//! Each helper fails loudly when its component is missing: tests never skip.
#![allow(dead_code)]

pub mod apiserver;
pub mod chart;
pub mod host_lock;
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
/// The Python the tests drive PyPI packages with: the test command's virtual
/// environment (`target/venv`, see scripts/test.sh) when it exists, so a single
/// test run with `cargo test --test NAME` finds them too; else `python3`.
#[allow(dead_code)]
pub fn python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

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
/// `dir`, for `docker import` — the product's, which the demo lab uses.
pub fn busybox_rootfs(dir: &Path) {
    require("busybox", "busybox-static");
    server_manager::lab::demo_image::busybox_rootfs(dir).expect("busybox root filesystem");
}

/// Runs `f` against the local Docker engine on a runtime of its own (in a
/// thread of its own, so sync and `#[tokio::test]` tests can both call it).
pub fn with_docker<T: Send + 'static>(
    f: impl AsyncFnOnce(&bollard::Docker) -> anyhow::Result<T> + Send + 'static,
) -> T {
    require("docker", "docker.io");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let docker = bollard::Docker::connect_with_local_defaults().expect("Docker engine");
            f(&docker).await
        })
    })
    .join()
    .expect("docker thread")
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Imports a busybox root filesystem as `tag` into the local Docker engine,
/// with `cmd` as its command (shell form). The image has one layer.
pub fn docker_import_busybox(tag: &str, cmd: &str) {
    require("busybox", "busybox-static");
    let (tag, cmd) = (tag.to_string(), cmd.to_string());
    with_docker(async move |docker| {
        server_manager::lab::demo_image::import_busybox(docker, &tag, &cmd).await
    });
}
