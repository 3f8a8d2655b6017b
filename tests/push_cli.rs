//! `server-manager push` as people run it by hand: prints the reference and the
//! registry's digest, and fails with a clear message and a non-zero status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::http_tools::{registry_digest, tags};
use support::images::{docker_save, layered_images, scratch, unique};
use support::registry::TestRegistry;

fn server_manager() -> Command {
    Command::new(env!("CARGO_BIN_EXE_server-manager"))
}

#[test]
fn push_subcommand_prints_reference_and_digest() {
    let registry = TestRegistry::start();
    let images = layered_images("cli");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("cli-{}", unique());

    let out = server_manager()
        .arg("push")
        .arg(&save)
        .args(["--registry", &registry.addr, "--image-id", &id])
        .args([
            "--image-type",
            "controller",
            "--version",
            "5.0-214",
            "--insecure",
        ])
        .output()
        .expect("run server-manager push");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = format!("{id}-controller");
    let digest = registry_digest(&registry.addr, &repo, "5.0-214").expect("tag pushed");
    assert!(
        stdout.contains(&format!("reference: {}/{repo}:5.0-214", registry.addr)),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("digest: {digest}")), "{stdout}");

    // Without --insecure nothing is sent in clear text; bad names are refused.
    for (args, words) in [
        (
            vec!["--image-type", "controller", "--version", "1"],
            "failed to reach the registry",
        ),
        (
            vec!["--image-type", "controller", "--version=.bad", "--insecure"],
            "invalid version",
        ),
        (
            vec!["--image-type", "router", "--version", "1", "--insecure"],
            "unknown image type",
        ),
    ] {
        let out = server_manager()
            .arg("push")
            .arg(&save)
            .args(["--registry", &registry.addr, "--image-id", &id])
            .args(&args)
            .output()
            .expect("run server-manager push");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    assert_eq!(tags(&registry.addr, &repo), vec!["5.0-214"]);
}
