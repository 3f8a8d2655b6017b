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

/// A small deterministic generator (xorshift64*), so a failure is replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, inserts (structural bytes, runs of brackets), cuts.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.below(8) {
        let pos = rng.below(b.len() + 1).min(b.len());
        match rng.below(5) {
            0 if !b.is_empty() => {
                let at = pos.min(b.len() - 1);
                b[at] = rng.next() as u8;
            }
            1 => b.insert(pos, b"[{]}:,\"'-|#\n 0"[rng.below(14)]),
            2 => b.truncate(pos),
            3 => {
                let run = vec![b"[{"[rng.below(2)]; rng.below(3000)];
                b.splice(pos..pos, run);
            }
            _ => {
                let from = rng.below(b.len() + 1).min(b.len());
                let piece = b[from..].to_vec();
                b.splice(pos..pos, piece);
            }
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_bodies_get_a_status_never_a_5xx_or_a_hang() {
    let api = TestApi::start();
    let client = api.client();
    let cms = "/api/v1/namespaces/default/configmaps";
    let one = "/api/v1/namespaces/default/configmaps/base";
    let (code, _, s) = send(
        &client,
        "POST",
        cms,
        "application/json",
        br#"{"metadata":{"name":"base","labels":{"a":"b"}},"data":{"k":"v"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 201, "{s}");
    let mut proto_cm = b"k8s\0".to_vec();
    let type_meta = [b"\x0a\x02v1".as_slice(), b"\x12\x09ConfigMap"].concat();
    proto_cm.extend([0x0a, type_meta.len() as u8]);
    proto_cm.extend(&type_meta);
    let raw = b"\x0a\x03\x0a\x01p";
    proto_cm.extend([0x12, raw.len() as u8]);
    proto_cm.extend(raw);
    let seeds: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        ("POST", cms, "application/json",
         br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j","labels":{"a":"b"}},"data":{"k":"v"}}"#.to_vec()),
        ("POST", cms, "application/yaml",
         b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: |\n    text [\n  l: '[1]'\n".to_vec()),
        ("POST", cms, "application/vnd.kubernetes.protobuf", proto_cm),
        ("PATCH", one, "application/json-patch+json",
         br#"[{"op":"add","path":"/data/x","value":"1"},{"op":"test","path":"/data/k","value":"v"}]"#.to_vec()),
        ("PATCH", one, "application/merge-patch+json", br#"{"data":{"k":null,"m":"2"}}"#.to_vec()),
        ("PATCH", one, "application/strategic-merge-patch+json",
         br#"{"metadata":{"labels":{"$patch":"replace","c":"d"}},"data":{"n":"3"}}"#.to_vec()),
        ("PATCH", &format!("{one}?fieldManager=fuzz&force=true"), "application/apply-patch+yaml",
         b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\ndata:\n  a: x\n".to_vec()),
    ]
    .into_iter()
    .map(|(m, p, c, b)| (m, p.to_string().leak() as &str, c, b))
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..210 {
        let (method, path, ct, seed) = &seeds[case % seeds.len()];
        let body = if case < seeds.len() {
            seed.clone()
        } else {
            mutate(&mut rng, seed)
        };
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let (code, _, status) = send(&client, method, path, ct, body).await;
        *seen.entry(code).or_default() += 1;
        assert!(
            (200..300).contains(&code) || (400..500).contains(&code),
            "case {case}: {method} {ct} answered {code}: {status}\nbody: {shown:?}"
        );
        if code >= 400 {
            assert_eq!(status["kind"], "Status", "case {case}: {status}");
        }
    }
    // Both kinds of answer happened: the mutations are neither all harmless
    // nor all fatal.
    assert!(seen.keys().any(|c| *c < 300), "{seen:?}");
    assert!(seen.keys().any(|c| *c >= 400), "{seen:?}");
    // And the server still answers.
    let (code, _, _) = send(&client, "GET", one, "application/json", Vec::new()).await;
    assert_eq!(code, 200);
}
