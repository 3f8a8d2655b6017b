//! TLS with a CA bundle and basic credentials, against the real
//! `docker-registry` configured with TLS and htpasswd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{
    self, Credentials, PushRequest, RegistryConfig, RetryPolicy, Source,
};
use support::images::{docker_save, layered_images, scratch, unique};
use support::secure_registry::SecureRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_bundle_and_basic_credentials() {
    let registry = SecureRegistry::start("pusher", "s3cret-pw");
    let images = layered_images("tls");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("tls-{}", unique());
    let good = RegistryConfig {
        address: registry.addr.clone(),
        insecure: false,
        ca_bundle: Some(registry.ca.clone()),
        credentials: Some(Credentials {
            username: "pusher".into(),
            password: "s3cret-pw".into(),
        }),
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        },
        timeout: None,
    };
    let req = |config: &RegistryConfig| {
        PushRequest::new(
            Source::Path(save.clone()),
            config.clone(),
            &id,
            Role::Controller,
            "1",
        )
    };

    let report = registry::push(&req(&good), |_| {})
        .await
        .expect("TLS + basic push");
    assert_eq!(report.bytes_uploaded, report.size);
    let again = registry::push(&req(&good), |_| {}).await.expect("re-push");
    assert_eq!(again.bytes_uploaded, 0);
    assert_eq!(again.digest, report.digest);

    let mut anonymous = good.clone();
    anonymous.credentials = None;
    let err = registry::push(&req(&anonymous), |_| {})
        .await
        .expect_err("no credentials");
    // Refused credentials are permanent: not retried, the cause named.
    assert_eq!(err.reason(), "RegistryDenied", "{err}");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("requires credentials"), "{err}");

    let mut wrong = good.clone();
    wrong.credentials = Some(Credentials {
        username: "pusher".into(),
        password: "wrong".into(),
    });
    let err = registry::push(&req(&wrong), |_| {})
        .await
        .expect_err("wrong password");
    assert_eq!(err.reason(), "RegistryDenied", "{err}");
    assert!(
        err.is_permanent() && err.to_string().contains("failed to reach"),
        "{err}"
    );
    assert!(err.to_string().contains("401"), "{err}");

    let mut untrusted = good.clone();
    untrusted.ca_bundle = None;
    let err = registry::push(&req(&untrusted), |_| {})
        .await
        .expect_err("unknown CA");
    assert_eq!(err.reason(), "ConnectRegistry", "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let deleted = registry::delete_tag(&good, &id, Role::Controller, "1")
        .await
        .expect("delete tag over TLS");
    assert_eq!(deleted.as_deref(), Some(report.digest.as_str()));
}
