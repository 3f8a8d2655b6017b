//! Direct push (OCI distribution API) against the real Debian `docker-registry`,
//! checked with the real Docker engine: pushed images pull and run, digests match
//! the registry's, re-pushes upload nothing, shared layers are mounted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Instant;

use server_manager::crd::Role;
use server_manager::registry::{self, Compression, PushRequest, RegistryConfig, Source};
use support::http_tools::{FileServer, registry_digest, tags};
use support::images::{
    TagGuard, docker_save, gzip_file, layered_images, oci_layout_from_docker_save, scratch, unique,
};
use support::registry::TestRegistry;
use support::run;

fn request(registry: &TestRegistry, source: Source, image_id: &str, role: Role) -> PushRequest {
    PushRequest::new(
        source,
        RegistryConfig {
            address: registry.addr.clone(),
            insecure: true,
            ..Default::default()
        },
        image_id,
        role,
        "1.0-1",
    )
}

/// `docker pull` then `docker run` of a pushed reference; returns its output.
fn pull_and_run(reference: &str, guard: &mut TagGuard) -> String {
    guard.add(reference);
    run(Command::new("docker").args(["pull", "-q", reference]));
    run(Command::new("docker").args(["run", "--rm", reference]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_tarball_is_pushed_mounted_repushed_and_deleted() {
    let registry = TestRegistry::start();
    let mut images = layered_images("direct");
    let (_dir, dir) = scratch();
    let base_tar = dir.join("base.tar");
    let app_tar = dir.join("app.tar");
    docker_save(&[&images.base], &base_tar);
    docker_save(&[&images.app], &app_tar);
    let id = format!("pt-{}", unique());

    // The base alone, under another role of the same image id.
    let base = registry::push(
        &request(&registry, Source::Path(base_tar), &id, Role::Lb),
        |_| {},
    )
    .await
    .expect("push base");
    assert_eq!(base.blobs_mounted, 0);

    // The app shares the base layer: it is mounted from `<id>-lb`, not uploaded.
    let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = progress.clone();
    let first = registry::push(
        &request(
            &registry,
            Source::Path(app_tar.clone()),
            &id,
            Role::Controller,
        ),
        move |p| seen.lock().unwrap().push(p),
    )
    .await
    .expect("push app");
    assert_eq!(first.blobs_mounted, 1, "{first:?}");
    assert_eq!(
        first.blobs_uploaded, 3,
        "two new layers and the config: {first:?}"
    );
    assert!(first.bytes_uploaded > 0 && first.bytes_uploaded < first.size);
    let last = *progress.lock().unwrap().last().expect("progress reported");
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!(last.bytes_total, first.size);

    let repo = format!("{id}-controller");
    assert_eq!(
        registry_digest(&registry.addr, &repo, "1.0-1").as_deref(),
        Some(first.digest.as_str()),
        "the reported digest is the registry's"
    );
    let reference = first.reference.to_string();
    assert_eq!(reference, format!("{}/{repo}:1.0-1", registry.addr));
    let out = pull_and_run(&reference, &mut images.guard);
    assert_eq!(out.trim(), images.greeting);

    // Re-push: nothing uploaded, same digest.
    let started = Instant::now();
    let again = registry::push(
        &request(&registry, Source::Path(app_tar), &id, Role::Controller),
        |_| {},
    )
    .await
    .expect("re-push");
    eprintln!("re-push took {:?}", started.elapsed());
    assert_eq!(again.bytes_uploaded, 0, "{again:?}");
    assert_eq!(again.blobs_skipped, 4);
    assert_eq!(again.digest, first.digest);

    // The finalizer's clean-up.
    let config = RegistryConfig {
        address: registry.addr.clone(),
        insecure: true,
        ..Default::default()
    };
    let deleted = registry::delete_tag(&config, &id, Role::Controller, "1.0-1")
        .await
        .expect("delete tag");
    assert_eq!(deleted.as_deref(), Some(first.digest.as_str()));
    assert!(tags(&registry.addr, &repo).is_empty());
    let again = registry::delete_tag(&config, &id, Role::Controller, "1.0-1")
        .await
        .expect("delete missing tag");
    assert_eq!(again, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_tarball_plain_and_gzip_is_pushed_and_runs() {
    let registry = TestRegistry::start();
    let mut images = layered_images("oci");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let oci = dir.join("app-oci.tar");
    let expected = oci_layout_from_docker_save(&save, &oci, "1.0-1");
    let id = format!("pt-{}", unique());

    let report = registry::push(
        &request(&registry, Source::Path(oci.clone()), &id, Role::Analytics),
        |_| {},
    )
    .await
    .expect("push OCI layout");
    assert_eq!(report.digest, expected, "pushed byte for byte");
    assert_eq!(
        registry_digest(&registry.addr, &format!("{id}-analytics"), "1.0-1").as_deref(),
        Some(expected.as_str())
    );
    let out = pull_and_run(&report.reference.to_string(), &mut images.guard);
    assert_eq!(out.trim(), images.greeting);

    // The same layout gzipped, into another registry: read sequentially.
    let other = TestRegistry::start();
    let gz = dir.join("app-oci.tar.gz");
    gzip_file(&oci, &gz);
    let report = registry::push(
        &request(&other, Source::Path(gz), &id, Role::Analytics),
        |_| {},
    )
    .await
    .expect("push gzipped OCI layout");
    assert_eq!(report.digest, expected);
    assert_eq!(report.bytes_uploaded, report.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_a_url_with_and_without_ranges_and_from_gzip() {
    let images = layered_images("url");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let gz = dir.join("app.tar.gz");
    gzip_file(&save, &gz);
    let id = format!("pt-{}", unique());

    let mut digests = Vec::new();
    for (name, path, ranges) in [
        ("plain file", Some(save.clone()), None),
        ("gzip file", Some(gz.clone()), None),
        ("plain URL with ranges", None, Some((save.clone(), true))),
        ("gzip URL", None, Some((gz.clone(), false))),
        ("gzip URL with ranges", None, Some((gz.clone(), true))),
        (
            "plain URL without ranges",
            None,
            Some((save.clone(), false)),
        ),
    ] {
        let registry = TestRegistry::start();
        let server = ranges.clone().map(|(p, r)| FileServer::start(p, r));
        let source = match (&path, &server) {
            (Some(p), _) => Source::Path(p.clone()),
            (None, Some(s)) => Source::Url(s.url.clone()),
            _ => unreachable!(),
        };
        let report = registry::push(&request(&registry, source, &id, Role::Agent), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.bytes_uploaded, report.size, "{name}: {report:?}");
        assert_eq!(
            registry_digest(&registry.addr, &format!("{id}-agent"), "1.0-1").as_deref(),
            Some(report.digest.as_str()),
            "{name}"
        );
        if let Some(s) = &server {
            eprintln!("{name}: {} HTTP requests", s.requests.lock().unwrap());
            // A re-push from a URL: with ranges, only headers and small files are
            // fetched; without, one pass reads the tarball through.
            let before = s.bytes_served.load(std::sync::atomic::Ordering::SeqCst);
            let source = Source::Url(s.url.clone());
            let again = registry::push(&request(&registry, source, &id, Role::Agent), |_| {})
                .await
                .unwrap_or_else(|e| panic!("{name} re-push: {e}"));
            assert_eq!(again.bytes_uploaded, 0);
            let fetched = s.bytes_served.load(std::sync::atomic::Ordering::SeqCst) - before;
            eprintln!("{name}: re-push fetched {fetched} bytes of {}", report.size);
            if ranges.as_ref().is_some_and(|(p, r)| *r && *p == save) {
                assert!(fetched < report.size / 4, "{name}: fetched {fetched}");
            }
        }
        digests.push(report.digest);
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compression_pushes_runs_and_repushes_for_free() {
    let registry = TestRegistry::start();
    let mut images = layered_images("gzip");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("pt-{}", unique());
    let memo = dir.join("memo").join("gzip-layers.json");
    let gzip = |role| {
        let mut req = request(&registry, Source::Path(save.clone()), &id, role);
        req.compression = Compression::Gzip;
        req.layer_memo = Some(memo.clone());
        req
    };

    let plain = registry::push(
        &request(&registry, Source::Path(save.clone()), &id, Role::Lb),
        |_| {},
    )
    .await
    .expect("uncompressed push");
    let first = registry::push(&gzip(Role::Controller), |_| {})
        .await
        .expect("gzip push");
    assert_ne!(
        first.digest, plain.digest,
        "other layer blobs, other manifest"
    );
    assert!(
        first.size < plain.size * 3 / 4,
        "busybox compresses: {} vs {}",
        first.size,
        plain.size
    );
    // Three compressed layers uploaded; the config is the uncompressed push's,
    // mounted from `<id>-lb`.
    assert_eq!(
        (first.blobs_uploaded, first.blobs_mounted),
        (3, 1),
        "{first:?}"
    );
    let repo = format!("{id}-controller");
    assert_eq!(
        registry_digest(&registry.addr, &repo, "1.0-1").as_deref(),
        Some(first.digest.as_str())
    );
    let out = pull_and_run(&first.reference.to_string(), &mut images.guard);
    assert_eq!(out.trim(), images.greeting);

    // Re-push: the tag already holds this image, nothing is compressed or sent.
    let started = Instant::now();
    let again = registry::push(&gzip(Role::Controller), |_| {})
        .await
        .expect("gzip re-push");
    eprintln!("gzip re-push took {:?}", started.elapsed());
    assert_eq!(again.digest, first.digest);
    assert_eq!(again.bytes_uploaded, 0);

    // Another role: no tag to learn the compressed digests from, but the memo
    // of layers pushed has them: mounted, nothing compressed or sent.
    let remembered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&memo).expect("the memo is written")).unwrap();
    assert_eq!(
        remembered.as_object().map(|m| m.len()),
        Some(3),
        "{remembered}"
    );
    let other = registry::push(&gzip(Role::Analytics), |_| {})
        .await
        .expect("gzip push, other role");
    assert_eq!(other.digest, first.digest);
    assert_eq!(other.bytes_uploaded, 0, "{other:?}");
    assert_eq!(other.blobs_mounted + other.blobs_skipped, 4, "{other:?}");

    // Without a memo, another role compresses and uploads again, in one pass,
    // to the same blobs: the compression is deterministic.
    let mut req = gzip(Role::Agent);
    req.layer_memo = None;
    let fresh = registry::push(&req, |_| {})
        .await
        .expect("gzip push without memo");
    assert_eq!(fresh.digest, first.digest, "compression is deterministic");
    assert_eq!(fresh.blobs_uploaded, 3, "{fresh:?}");
    assert_eq!(fresh.bytes_uploaded, first.bytes_uploaded, "{fresh:?}");
}
