//! Registry faults mid-push: a fault-injecting proxy in front of the real
//! `docker-registry` answers chosen requests with 500/401. Transient faults are
//! retried and the push succeeds; persistent ones are reported, and no tag is
//! created (checked on the registry itself, behind the proxy).

mod support;

use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{self, PushRequest, RegistryConfig, RetryPolicy, Source};
use support::http_tools::{Fault, FaultyProxy, registry_digest, tags};
use support::images::{docker_save, layered_images, scratch, unique};
use support::registry::TestRegistry;

fn request(addr: &str, tarball: &std::path::Path, id: &str) -> PushRequest {
    PushRequest::new(
        Source::Path(tarball.to_path_buf()),
        RegistryConfig {
            address: addr.to_string(),
            insecure: true,
            retry: RetryPolicy {
                attempts: 4,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
            },
            ..Default::default()
        },
        id,
        Role::Controller,
        "1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_mid_upload_are_retried_then_reported() {
    let registry = TestRegistry::start();
    let images = layered_images("faults");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);

    // Transient: two blob uploads and the first manifest PUT fail, then succeed.
    let proxy = FaultyProxy::start(
        &registry.addr,
        vec![
            Fault {
                method: "PUT",
                path_contains: "/blobs/uploads/",
                status: 500,
                times: 2,
            },
            Fault {
                method: "PUT",
                path_contains: "/manifests/",
                status: 503,
                times: 1,
            },
        ],
    );
    let id = format!("flt-{}", unique());
    let report = registry::push(&request(&proxy.addr, &save, &id), |_| {})
        .await
        .expect("transient faults are retried");
    assert_eq!(proxy.injected(), 3);
    assert_eq!(
        report.bytes_uploaded, report.size,
        "counted once: {report:?}"
    );
    let repo = format!("{id}-controller");
    assert_eq!(
        registry_digest(&registry.addr, &repo, "1").as_deref(),
        Some(report.digest.as_str())
    );

    // Persistent 500 on blob uploads: reported after the retries, no tag.
    for (status, words) in [
        (500, "500 Internal Server Error"),
        (401, "401 Unauthorized"),
    ] {
        let proxy = FaultyProxy::start(
            &registry.addr,
            vec![Fault {
                method: "PUT",
                path_contains: "/blobs/uploads/",
                status,
                times: usize::MAX,
            }],
        );
        let id = format!("flt-{}", unique());
        let err = registry::push(&request(&proxy.addr, &save, &id), |_| {})
            .await
            .expect_err("persistent fault");
        let message = err.to_string();
        eprintln!("{message}");
        assert_eq!(err.reason(), "UploadBlob", "{message}");
        assert!(!err.is_permanent());
        assert!(message.contains(words), "{message}");
        assert!(message.contains("after 4 attempts"), "{message}");
        assert!(proxy.injected() >= 4);
        assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());
    }

    // Blobs all in, manifest refused: still no tag.
    let proxy = FaultyProxy::start(
        &registry.addr,
        vec![Fault {
            method: "PUT",
            path_contains: "/manifests/",
            status: 500,
            times: usize::MAX,
        }],
    );
    let id = format!("flt-{}", unique());
    let err = registry::push(&request(&proxy.addr, &save, &id), |_| {})
        .await
        .expect_err("manifest refused");
    assert_eq!(err.reason(), "PushManifest", "{err}");
    assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());
}
