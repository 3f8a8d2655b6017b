//! Registry faults mid-push: a fault-injecting proxy in front of the real
//! `docker-registry` answers chosen requests with 500/401, never answers them,
//! or corrupts a byte of an upload; bare loopback sockets play a registry that
//! accepts connections and never answers, and one that answers 401 to all.
//! Transient faults are retried and the push succeeds; persistent ones are
//! reported within the deadline, permanent ones (credentials, digests) at
//! once, and no tag is created (checked on the registry itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{self, PushRequest, RegistryConfig, RetryPolicy, Source};
use support::http_tools::{Fault, FaultyProxy, registry_digest, tags};
use support::images::{docker_save, layered_images, scratch, unique};
use support::registry::TestRegistry;

/// Bound on a whole faulty push, far above the deadlines involved: a push that
/// hangs fails the test instead of hanging it.
const HANG_GUARD: Duration = Duration::from_secs(120);

async fn push_err(req: &PushRequest) -> registry::PushError {
    tokio::time::timeout(HANG_GUARD, registry::push(req, |_| {}))
        .await
        .expect("the push hung: no deadline")
        .expect_err("the push must fail")
}

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
            timeout: Some(Duration::from_secs(1)),
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

    // Persistent 500 on blob uploads, or no answer at all: reported after the
    // retries, no tag.
    for (status, words) in [
        (500, "500 Internal Server Error"),
        // No answer: our deadline (the stall watchdog or the request's own
        // timeout, whichever notices first) says 1s.
        (0, "1s"),
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
        let err = push_err(&request(&proxy.addr, &save, &id)).await;
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

/// A registry that refuses our credentials, and one that corrupts what it
/// receives: both permanent (no retries), each named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_corruption_are_permanent() {
    let registry = TestRegistry::start();
    let images = layered_images("refusals");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);

    // 401 on blob uploads (no challenge to answer): denied, not retried.
    let proxy = FaultyProxy::start(
        &registry.addr,
        vec![Fault {
            method: "PUT",
            path_contains: "/blobs/uploads/",
            status: 401,
            times: usize::MAX,
        }],
    );
    let id = format!("flt-{}", unique());
    let err = push_err(&request(&proxy.addr, &save, &id)).await;
    let message = err.to_string();
    assert_eq!(err.reason(), "RegistryDenied", "{message}");
    assert!(err.is_permanent(), "{message}");
    assert!(message.contains("401 Unauthorized"), "{message}");
    assert!(!message.contains("attempts"), "not retried: {message}");
    assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());

    // A registry answering 401 to everything, credentials sent: denied at once.
    let denier = TcpListener::bind("127.0.0.1:0").unwrap();
    let denier_addr = denier.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in denier.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let mut req = request(&denier_addr, &save, "flt-denied");
    req.registry.credentials = Some(registry::Credentials {
        username: "u".into(),
        password: "wrong".into(),
    });
    let err = push_err(&req).await;
    let message = err.to_string();
    assert_eq!(err.reason(), "RegistryDenied", "{message}");
    assert!(err.is_permanent() && message.contains("401"), "{message}");
    assert!(!message.contains("wrong"), "no secret in errors: {message}");

    // One byte flipped on the way: the registry's digest differs from ours.
    let proxy = FaultyProxy::corrupting(&registry.addr);
    let id = format!("flt-{}", unique());
    let err = push_err(&request(&proxy.addr, &save, &id)).await;
    let message = err.to_string();
    assert_eq!(err.reason(), "DigestMismatch", "{message}");
    assert!(err.is_permanent(), "{message}");
    assert!(!message.contains("attempts"), "not retried: {message}");
    assert!(tags(&registry.addr, &format!("{id}-controller")).is_empty());
}

/// A registry that accepts connections and never answers: a clear, retried
/// error within the deadline; a tarball URL that refuses connections is a
/// transient failure too (the Image controller retries, never `Stalled`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_registry_and_refused_url_are_transient() {
    let (_dir, dir) = scratch();
    let images = layered_images("silent");
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let err = push_err(&request(&silent_addr, &save, "flt-silent")).await;
    let message = err.to_string();
    eprintln!("{message}");
    assert_eq!(err.reason(), "ConnectRegistry", "{message}");
    assert!(!err.is_permanent(), "{message}");
    assert!(
        message.contains("did not answer within 1s") && message.contains("after 4 attempts"),
        "{message}"
    );

    let refused = format!("http://127.0.0.1:{}/image.tar", support::free_port());
    let mut req = request(&silent_addr, &save, "flt-url");
    req.source = Source::Url(refused.clone());
    let err = push_err(&req).await;
    let message = err.to_string();
    assert_eq!(err.reason(), "FetchSource", "{message}");
    assert!(!err.is_permanent(), "{message}");
    assert!(message.contains(&refused), "{message}");
}
