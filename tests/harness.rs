//! Smoke test of the shared harness: a real registry starts and answers the
//! distribution API, and a busybox image can be imported, pushed and pulled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::{docker_import_busybox, registry::TestRegistry, run};

#[test]
fn registry_serves_pushed_busybox_image() {
    let registry = TestRegistry::start();
    let tag = format!("{}/harness-smoke:1", registry.addr);
    docker_import_busybox(&tag, "/bin/sleep 3600");
    run(Command::new("docker").args(["push", &tag]));
    run(Command::new("docker").args(["rmi", &tag]));
    run(Command::new("docker").args(["pull", &tag]));
    let out = run(Command::new("docker").args(["run", "--rm", &tag, "/bin/echo", "hello"]));
    assert_eq!(out.trim(), "hello");
    run(Command::new("docker").args(["rmi", &tag]));
}
