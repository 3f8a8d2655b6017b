//! Copy from a registry reference (an Image's `source.reference`) between real
//! `docker-registry` instances: by tag and by digest, the copy has the source's
//! manifest digest, pulls and runs; a re-copy uploads nothing; a source behind
//! the bearer token flow is read with credentials, and wrong ones are refused
//! for good.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{
    self, Credentials, PushRequest, ReferenceSource, RegistryConfig, RetryPolicy, Source,
};
use support::http_tools::registry_digest;
use support::images::{docker_save, layered_images, scratch, unique};
use support::registry::TestRegistry;
use support::run;
use support::token_auth::TokenRegistry;

fn config(addr: &str, credentials: Option<Credentials>) -> RegistryConfig {
    RegistryConfig {
        address: addr.to_string(),
        insecure: true,
        credentials,
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        },
        ..Default::default()
    }
}

fn copy_request(
    reference: &str,
    to: &str,
    id: &str,
    credentials: Option<Credentials>,
) -> PushRequest {
    PushRequest::new(
        Source::Reference(ReferenceSource {
            reference: reference.to_string(),
            insecure: true,
            credentials,
        }),
        config(to, None),
        id,
        Role::Analytics,
        "2",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_registries_by_tag_and_digest() {
    let a = TestRegistry::start();
    let b = TestRegistry::start();
    let mut images = layered_images("copy");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("cp-{}", unique());
    let mut push = PushRequest::new(
        Source::Path(save.clone()),
        config(&a.addr, None),
        &id,
        Role::Controller,
        "1",
    );
    push.layer_memo = None;
    let pushed = registry::push(&push, |_| {}).await.expect("push to A");

    let source = format!("{}/{id}-controller:1", a.addr);
    let copied = registry::push(&copy_request(&source, &b.addr, &id, None), |_| {})
        .await
        .expect("copy A -> B");
    assert_eq!(
        copied.digest, pushed.digest,
        "the manifest is copied byte for byte"
    );
    assert_eq!(copied.bytes_uploaded, copied.size, "{copied:?}");
    assert_eq!(
        registry_digest(&b.addr, &format!("{id}-analytics"), "2").as_deref(),
        Some(pushed.digest.as_str())
    );
    let again = registry::push(&copy_request(&source, &b.addr, &id, None), |_| {})
        .await
        .expect("re-copy");
    assert_eq!(again.bytes_uploaded, 0, "{again:?}");

    // By digest.
    let by_digest = format!("{}/{id}-controller@{}", a.addr, pushed.digest);
    let mut req = copy_request(&by_digest, &b.addr, &id, None);
    req.image_type = Role::Agent;
    let copied = registry::push(&req, |_| {}).await.expect("copy by digest");
    assert_eq!(copied.digest, pushed.digest);

    // What B holds runs.
    let reference = format!("{}/{id}-analytics:2", b.addr);
    images.guard.add(&reference);
    run(Command::new("docker").args(["pull", "-q", &reference]));
    let out = run(Command::new("docker").args(["run", "--rm", &reference]));
    assert_eq!(out.trim(), images.greeting);

    // A tag the source lacks: a clear error naming the source.
    let missing = format!("{}/{id}-controller:nope", a.addr);
    let err = registry::push(&copy_request(&missing, &b.addr, &id, None), |_| {})
        .await
        .expect_err("no such tag");
    assert!(
        err.to_string().contains(&missing) && err.to_string().contains("no such manifest"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_from_a_registry_with_credentials() {
    let a = TokenRegistry::start("reader", "r3ad-pw");
    let b = TestRegistry::start();
    let images = layered_images("copyauth");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("cpa-{}", unique());
    let good = Credentials {
        username: "reader".into(),
        password: "r3ad-pw".into(),
    };
    let mut push = PushRequest::new(
        Source::Path(save),
        config(&a.addr, Some(good.clone())),
        &id,
        Role::Controller,
        "1",
    );
    push.layer_memo = None;
    let pushed = registry::push(&push, |_| {})
        .await
        .unwrap_or_else(|e| panic!("push to A: {e}\n{}", a.log()));

    let source = format!("{}/{id}-controller:1", a.addr);
    let copied = registry::push(&copy_request(&source, &b.addr, &id, Some(good)), |_| {})
        .await
        .unwrap_or_else(|e| panic!("copy with credentials: {e}\n{}", a.log()));
    assert_eq!(copied.digest, pushed.digest);

    let wrong = Credentials {
        username: "reader".into(),
        password: "wrong-pw".into(),
    };
    let mut req = copy_request(&source, &b.addr, &id, Some(wrong));
    req.image_type = Role::Agent;
    let err = registry::push(&req, |_| {})
        .await
        .expect_err("wrong password");
    assert_eq!(err.reason(), "RegistryDenied", "{err}");
    assert!(err.is_permanent(), "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
}
