//! Bad input: each case fails with a clear error, and the registry (the real
//! Debian `docker-registry`) never gets the tag.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{
    self, Compression, PushError, PushReport, PushRequest, RegistryConfig, RetryPolicy, Source,
};
use support::http_tools::tags;
use support::images::{
    docker_save, gzip_file, layered_images, scratch, tar_files, unique, write_tar,
    write_tar_raw_names,
};
use support::registry::TestRegistry;

fn config(addr: &str) -> RegistryConfig {
    RegistryConfig {
        address: addr.to_string(),
        insecure: true,
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        ..Default::default()
    }
}

async fn push(
    registry: &TestRegistry,
    path: &Path,
    id: &str,
    select: Option<&str>,
) -> Result<PushReport, PushError> {
    let mut req = PushRequest::new(
        Source::Path(path.to_path_buf()),
        config(&registry.addr),
        id,
        Role::Controller,
        "1",
    );
    req.select = select.map(String::from);
    registry::push(&req, |_| {}).await
}

/// Asserts a failure with `reason` whose message contains `words`, and no tag.
async fn assert_fails(
    registry: &TestRegistry,
    path: &Path,
    reason: &str,
    words: &str,
) -> PushError {
    let id = format!("bad-{}", unique());
    let err = push(registry, path, &id, None)
        .await
        .expect_err("the push must fail");
    let message = err.to_string();
    eprintln!("{reason}: {message}");
    assert_eq!(err.reason(), reason, "{message}");
    assert!(message.starts_with("failed to "), "{message}");
    assert!(err.is_permanent(), "bad input is not retried: {message}");
    assert!(
        message.contains(words),
        "{message:?} should mention {words:?}"
    );
    assert!(
        tags(&registry.addr, &format!("{id}-controller")).is_empty(),
        "no tag after: {message}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_tarballs_fail_clearly() {
    let registry = TestRegistry::start();
    let (_dir, dir) = scratch();

    let text = dir.join("not-a-tar.tar");
    std::fs::write(&text, "this is not a tarball, just some text\n".repeat(40)).unwrap();
    assert_fails(&registry, &text, "ReadTarball", "not a valid tar archive").await;

    let missing = dir.join("missing.tar");
    assert_fails(&registry, &missing, "ReadTarball", "missing.tar").await;

    let no_manifest = dir.join("no-manifest.tar");
    write_tar(
        &no_manifest,
        &[
            ("abc/layer.tar".into(), vec![0u8; 1024]),
            ("abc/json".into(), b"{}".to_vec()),
        ],
    );
    assert_fails(
        &registry,
        &no_manifest,
        "InvalidImage",
        "missing manifest.json",
    )
    .await;

    let traversal = dir.join("traversal.tar");
    write_tar_raw_names(
        &traversal,
        &[("../../etc/evil", b"x"), ("manifest.json", b"[]")],
    );
    assert_fails(&registry, &traversal, "ReadTarball", "path traversal").await;

    let absolute = dir.join("absolute.tar");
    write_tar_raw_names(&absolute, &[("/etc/evil", b"x"), ("manifest.json", b"[]")]);
    assert_fails(&registry, &absolute, "ReadTarball", "path traversal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_images_fail_and_leave_no_tag() {
    let registry = TestRegistry::start();
    let images = layered_images("bad");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let bytes = std::fs::read(&save).unwrap();
    let files = tar_files(&save);
    let manifest: serde_json::Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "manifest.json").unwrap().1)
            .unwrap();
    let first_layer = manifest[0]["Layers"][0].as_str().unwrap().to_string();

    // Cut in the middle of the big (busybox) layer.
    let truncated = dir.join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(&registry, &truncated, "ReadTarball", "truncated").await;
    let truncated_gz = dir.join("truncated.tar.gz");
    gzip_file(&save, &truncated_gz);
    let gz = std::fs::read(&truncated_gz).unwrap();
    std::fs::write(&truncated_gz, &gz[..gz.len() / 2]).unwrap();
    assert_fails(&registry, &truncated_gz, "ReadTarball", "truncated").await;

    // The first layer's content changed, its size kept: caught while streaming.
    let tampered = dir.join("tampered.tar");
    let changed: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, d)| {
            let mut d = d.clone();
            if *n == first_layer {
                let mid = d.len() / 2;
                d[mid] ^= 0xff;
            }
            (n.clone(), d)
        })
        .collect();
    write_tar(&tampered, &changed);
    assert_fails(&registry, &tampered, "VerifyBlob", "hashes to").await;
    // Compressed, the check happens while compressing, before any upload.
    let id = format!("bad-{}", unique());
    let mut req = PushRequest::new(
        Source::Path(tampered.clone()),
        config(&registry.addr),
        &id,
        Role::Controller,
        "1",
    );
    req.compression = Compression::Gzip;
    let err = registry::push(&req, |_| {})
        .await
        .expect_err("tampered, gzip");
    assert_eq!(err.reason(), "VerifyBlob", "{err}");
    assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());

    // manifest.json pointing outside the archive.
    let escaping = dir.join("escaping.tar");
    let mut m = manifest.clone();
    m[0]["Layers"][0] = serde_json::Value::String("../../etc/passwd".into());
    let redirected: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, d)| {
            if n == "manifest.json" {
                (n.clone(), serde_json::to_vec(&m).unwrap())
            } else {
                (n.clone(), d.clone())
            }
        })
        .collect();
    write_tar(&escaping, &redirected);
    assert_fails(&registry, &escaping, "InvalidImage", "not in the tarball").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_images_need_a_choice() {
    let registry = TestRegistry::start();
    let images = layered_images("multi");
    let (_dir, dir) = scratch();
    let both = dir.join("both.tar");
    docker_save(&[&images.base, &images.app], &both);
    let err = assert_fails(&registry, &both, "SelectImage", "holds 2 images").await;
    assert!(err.to_string().contains(&images.app), "{err}");

    let id = format!("bad-{}", unique());
    let err = push(&registry, &both, &id, Some("nope:1"))
        .await
        .expect_err("unknown choice");
    assert_eq!(err.reason(), "SelectImage", "{err}");

    let report = push(&registry, &both, &id, Some(&images.app))
        .await
        .expect("push the chosen image");
    assert_eq!(report.blobs_uploaded, 4, "{report:?}");
    assert_eq!(tags(&registry.addr, &format!("{id}-controller")), vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_is_reported_after_retries() {
    let registry = TestRegistry::start();
    let images = layered_images("down");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let down = format!("127.0.0.1:{}", support::free_port());
    let req = PushRequest::new(
        Source::Path(save.clone()),
        config(&down),
        "bad-down",
        Role::Controller,
        "1",
    );
    let err = registry::push(&req, |_| {})
        .await
        .expect_err("registry down");
    let message = err.to_string();
    assert_eq!(err.reason(), "ConnectRegistry", "{message}");
    assert!(!err.is_permanent(), "a registry may come back");
    assert!(
        message.contains(&down) && message.contains("after 3 attempts"),
        "{message}"
    );

    // Plain HTTP is never implied: without `insecure` the client speaks TLS and
    // the plain-HTTP registry cannot answer.
    let mut req = PushRequest::new(
        Source::Path(save),
        config(&registry.addr),
        "bad-tls",
        Role::Controller,
        "1",
    );
    req.registry.insecure = false;
    let err = registry::push(&req, |_| {})
        .await
        .expect_err("TLS to plain HTTP");
    // Said at once, and why: no retries, no "corrupt message".
    let message = err.to_string();
    assert_eq!(err.reason(), "PlainHttpRegistry", "{message}");
    assert!(err.is_permanent(), "{message}");
    assert!(
        message.contains("plain HTTP") && message.contains("insecure"),
        "{message}"
    );
    assert!(!message.contains("attempts"), "{message}");
    assert!(tags(&registry.addr, "bad-tls-controller").is_empty());
}
