//! Robustness of the embedded API server against hostile or broken requests
//! (real server over HTTPS, raw requests through the kube-rs client):
//! bodies too large or too deeply nested are refused quickly without stalling
//! other requests, `Warning` headers are bounded, the bearer scheme is
//! case-insensitive, and mutated bodies of every content type and patch type
//! get a `Status` (2xx or 4xx), never a 5xx or a hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::apiserver::TestApi;

/// A hang check, not a performance claim.
const HANG: Duration = Duration::from_secs(20);

/// Sends one raw request; returns the status, the `Warning` headers and the body.
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Vec<String>, Value) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(kube::client::Body::from(body))
        .expect("request");
    let resp = tokio::time::timeout(HANG, client.send(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} ({content_type}): no answer within {HANG:?}"))
        .expect("send");
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("Warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let bytes = tokio::time::timeout(HANG, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, warnings, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_large_bodies_are_refused_quickly_without_stalling_others() {
    let api = TestApi::start();
    let client = api.client();
    let cms = "/api/v1/namespaces/default/configmaps";
    let hostile: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            "application/yaml",
            "[".repeat(250_000).into_bytes(),
            400,
        ),
        (
            "POST",
            "application/yaml",
            "{a: ".repeat(62_500).into_bytes(),
            400,
        ),
        (
            "PATCH",
            "application/apply-patch+yaml",
            format!(
                "kind: ConfigMap\napiVersion: v1\ndata: {}",
                "{a: ".repeat(62_500)
            )
            .into_bytes(),
            400,
        ),
        (
            "POST",
            "application/json",
            "[".repeat(250_000).into_bytes(),
            400,
        ),
        (
            "POST",
            "application/yaml",
            "a: b\n".repeat(400_000).into_bytes(),
            413,
        ),
        (
            "POST",
            "application/json",
            format!("{{\"data\": \"{}\"}}", "x".repeat(4 << 20)).into_bytes(),
            413,
        ),
    ];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (method, ct, body, code) in hostile {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = if method == "PATCH" {
                "/api/v1/namespaces/default/configmaps/c?fieldManager=t"
            } else {
                cms
            };
            let (got, _, status) = send(&client, method, path, ct, body).await;
            assert_eq!(got, code, "{method} {ct}: {status}");
            assert_eq!(status["kind"], "Status", "{method} {ct}: {status}");
            if code == 400 {
                let m = status["message"].as_str().unwrap_or_default();
                assert!(m.contains("nested") || m.contains("recursion limit"), "{m}");
            }
        }));
    }
    // Meanwhile ordinary requests are answered.
    for i in 0..20 {
        let body = json!({"metadata": {"name": format!("ok-{i}")}});
        let (code, _, s) = send(
            &client,
            "POST",
            cms,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(code, 201, "{s}");
    }
    for t in tasks {
        t.await.expect("hostile request");
    }
    assert!(started.elapsed() < HANG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_bounded() {
    let api = TestApi::start();
    server_manager::standalone::install_crds(api.handle())
        .await
        .expect("crds");
    let client = api.client();
    let mut spec = json!({"clusterRef": {"name": "lab"}, "host": "10.0.0.2",
        "roles": ["agent"], "ssh": {"secretRef": {"name": "ssh"}}});
    for i in 0..80 {
        spec[format!("junk{i}")] = json!(i);
    }
    let body = json!({"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": "s1"}, "spec": spec});
    let (code, warnings, s) = send(
        &client,
        "POST",
        "/apis/servermanager.contrail.io/v1alpha1/namespaces/default/servers",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(warnings.len(), 51, "{warnings:?}");
    assert!(warnings[0].contains("unknown field"), "{}", warnings[0]);
    assert_eq!(warnings[50], "299 - \"30 more warnings were dropped\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_tokens_must_match() {
    let api = TestApi::start();
    let mut config = api.handle().client_config();
    let token = api.handle().admin_token.clone();
    config.auth_info.token = None;
    let client = kube::Client::try_from(config).expect("client");
    for (header, code) in [
        (format!("Bearer {token}"), 200),
        (format!("bearer {token}"), 200),
        (format!("BEARER  {token}"), 200),
        (format!("Bearer {token}x"), 401),
        (format!("Bearer {}", &token[..token.len() - 1]), 401),
        (format!("Basic {token}"), 401),
        ("Bearer".to_string(), 401),
    ] {
        let req = hyper::Request::get("/api/v1/namespaces/default")
            .header("Authorization", header.as_str())
            .body(kube::client::Body::empty())
            .expect("request");
        let resp = client.send(req).await.expect("send");
        assert_eq!(resp.status().as_u16(), code, "{header}");
    }
}
