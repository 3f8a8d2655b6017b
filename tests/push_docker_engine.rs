//! The Docker-engine path (bollard: load, tag, push) against the real engine and
//! the real Debian `docker-registry`; an error the engine reports inside its
//! `200 OK` push stream must come back as an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use server_manager::crd::Role;
use server_manager::registry::{PushRequest, RegistryConfig, Source, docker_engine};
use support::http_tools::{registry_digest, tags};
use support::images::{docker_save, layered_images, scratch, unique};
use support::registry::TestRegistry;
use support::run;

fn request(addr: &str, tarball: &std::path::Path, id: &str) -> PushRequest {
    PushRequest::new(
        Source::Path(tarball.to_path_buf()),
        RegistryConfig {
            address: addr.to_string(),
            insecure: true,
            ..Default::default()
        },
        id,
        Role::Controller,
        "1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_push_works_and_stream_errors_are_reported() {
    let registry = TestRegistry::start();
    let mut images = layered_images("engine");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("eng-{}", unique());

    let report = docker_engine::push(&request(&registry.addr, &save, &id), |_| {})
        .await
        .expect("push through the engine");
    let repo = format!("{id}-controller");
    assert_eq!(
        registry_digest(&registry.addr, &repo, "1").as_deref(),
        Some(report.digest.as_str())
    );
    assert!(report.blobs_uploaded >= 3, "{report:?}");
    assert!(
        report.size > 1_000_000,
        "the image size from the engine: {report:?}"
    );
    let reference = report.reference.to_string();
    images.guard.add(&reference);
    run(Command::new("docker").args(["pull", "-q", &reference]));
    let out = run(Command::new("docker").args(["run", "--rm", &reference]));
    assert_eq!(out.trim(), images.greeting);

    // Nothing listens there: the engine answers 200 and reports the failure in
    // the stream.
    let refused = format!("127.0.0.1:{}", support::free_port());
    let id = format!("eng-{}", unique());
    let err = docker_engine::push(&request(&refused, &save, &id), |_| {})
        .await
        .expect_err("push to a refusing address");
    let message = err.to_string();
    eprintln!("{message}");
    assert_eq!(err.reason(), "DockerEngine", "{message}");
    assert!(message.starts_with("failed to push the image"), "{message}");
    assert!(message.contains("connection refused"), "{message}");
    assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());
    // The push tag is removed afterwards, success or not.
    let leftover = Command::new("docker")
        .args(["image", "inspect", &format!("{refused}/{id}-controller:1")])
        .output()
        .unwrap();
    assert!(!leftover.status.success(), "the push tag was left behind");
}
