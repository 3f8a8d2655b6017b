//! The bearer token flow (401 `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
//! → token from the realm with basic credentials → retry with the token) against
//! the real `docker-registry` in token mode, which verifies every token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use server_manager::crd::Role;
use server_manager::registry::{
    self, Credentials, PushRequest, RegistryConfig, RetryPolicy, Source,
};
use support::images::{docker_save, layered_images, scratch, unique};
use support::token_auth::TokenRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_push_mount_and_delete() {
    let registry = TokenRegistry::start("pusher", "t0ken-pw");
    let images = layered_images("token");
    let (_dir, dir) = scratch();
    let save = dir.join("app.tar");
    docker_save(&[&images.app], &save);
    let id = format!("tok-{}", unique());
    let good = RegistryConfig {
        address: registry.addr.clone(),
        insecure: true,
        ca_bundle: None,
        credentials: Some(Credentials {
            username: "pusher".into(),
            password: "t0ken-pw".into(),
        }),
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        },
        timeout: None,
    };
    let req = |config: &RegistryConfig, role: Role| {
        PushRequest::new(Source::Path(save.clone()), config.clone(), &id, role, "1")
    };

    let report = registry::push(&req(&good, Role::Controller), |_| {})
        .await
        .unwrap_or_else(|e| panic!("token push: {e}\n{}", registry.log()));
    assert_eq!(report.bytes_uploaded, report.size);
    assert!(registry.tokens_issued.load(Ordering::SeqCst) >= 1);

    // Another role: the layers are mounted from `<id>-controller` (the token
    // must grant pull on that repository too).
    let second = registry::push(&req(&good, Role::Analytics), |_| {})
        .await
        .unwrap_or_else(|e| panic!("token push with mounts: {e}\n{}", registry.log()));
    assert_eq!(second.blobs_mounted, 4, "{second:?}");
    assert_eq!(second.bytes_uploaded, 0);
    assert_eq!(second.digest, report.digest);

    let mut wrong = good.clone();
    wrong.credentials = Some(Credentials {
        username: "pusher".into(),
        password: "nope".into(),
    });
    let err = registry::push(&req(&wrong, Role::Agent), |_| {})
        .await
        .expect_err("wrong password");
    assert_eq!(err.reason(), "RegistryDenied", "{err}");
    assert!(
        err.is_permanent() && err.to_string().contains("failed to reach"),
        "{err}"
    );
    assert!(err.to_string().contains("failed to get a token"), "{err}");

    let deleted = registry::delete_tag(&good, &id, Role::Controller, "1")
        .await
        .expect("delete with a token");
    assert_eq!(deleted.as_deref(), Some(report.digest.as_str()));
    assert!(registry.data().exists());
}
