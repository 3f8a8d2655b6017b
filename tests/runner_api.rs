//! The runner's HTTP surface through the router itself (`app(state)`, no
//! listener): authentication, validation before anything runs, unknown ids.
//! These requests never reach `ansible-playbook`: each is refused first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use server_manager::runner::api::ErrorBody;
use server_manager::runner::{AppState, Runner, RunnerConfig, app};
use tower::ServiceExt;

fn state(data: &std::path::Path) -> AppState {
    let config = RunnerConfig::new(
        data.to_path_buf(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks").into(),
    );
    AppState {
        runner: Runner::open(config).expect("open runner"),
        token: Arc::new("t0ken".to_string()),
    }
}

async fn call(state: &AppState, req: Request<Body>) -> (StatusCode, String) {
    let response = app(state.clone()).oneshot(req).await.expect("response");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).expect("request")
}

const VALID: &str = r#"{"playbook":"provision",
  "target":{"host":"127.0.0.1","port":1,"private_key":"k","known_hosts":"[127.0.0.1]:1 ssh-ed25519 AAAA"},
  "vars":{"roles":[{"name":"controller","config":"","image":"r/c:1"}]}}"#;

#[tokio::test]
async fn health_is_open_everything_else_needs_the_token() {
    let data = tempfile::tempdir().expect("tmp");
    let s = state(data.path());
    let (status, body) = call(
        &s,
        Request::get("/healthz").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    for token in [None, Some("wrong"), Some("t0ke"), Some("t0ken ")] {
        let (status, body) = call(&s, post("/run_playbook", token, VALID)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        let err: ErrorBody = serde_json::from_str(&body).expect("error body");
        assert!(err.error.contains("bearer token"));
    }
    let (status, _) = call(
        &s,
        Request::get("/metrics").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing was accepted: no record written.
    let records = std::fs::read_dir(data.path().join("runs"))
        .expect("runs dir")
        .count();
    assert_eq!(records, 0);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_runs() {
    let data = tempfile::tempdir().expect("tmp");
    let s = state(data.path());
    let cases = [
        (
            VALID.replace("\"127.0.0.1\",\"port\"", "\"-oProxyCommand=id\",\"port\""),
            "target.host",
        ),
        (
            VALID.replace("\"controller\"", "\"../../etc\""),
            "vars.roles[0].name",
        ),
        (
            VALID.replace(
                "\"known_hosts\":\"[127.0.0.1]:1 ssh-ed25519 AAAA\"",
                "\"known_hosts\":\"\"",
            ),
            "target.known_hosts",
        ),
        (
            VALID.replace("\"vars\":{", "\"vars\":{\"config_dir\":\"relative\","),
            "vars.config_dir",
        ),
        ("{not json".to_string(), "invalid request body"),
    ];
    for (body, expected) in cases {
        let (status, answer) = call(&s, post("/run_playbook", Some("t0ken"), &body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.contains(expected), "{expected}: {answer}");
    }
    let records = std::fs::read_dir(data.path().join("runs"))
        .expect("runs dir")
        .count();
    assert_eq!(records, 0, "an invalid request left a record");

    let logs = r#"{"target":{"host":"127.0.0.1","port":1,"private_key":"k","known_hosts":"x"},
                   "log_dir":"/var/log/contrail","file":"../../etc/shadow"}"#;
    let (status, answer) = call(&s, post("/host_logs/read", Some("t0ken"), logs)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("invalid file"), "{answer}");
    let logs = logs.replace("/var/log/contrail", "/var/log/../../root");
    let (status, _) = call(&s, post("/host_logs/list", Some("t0ken"), &logs)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_runs_are_not_found() {
    let data = tempfile::tempdir().expect("tmp");
    let s = state(data.path());
    let auth = |r: axum::http::request::Builder| {
        r.header(header::AUTHORIZATION, "Bearer t0ken")
            .body(Body::empty())
            .expect("req")
    };
    let id = uuid::Uuid::new_v4();
    for req in [
        auth(Request::get(format!("/playbook_status/{id}"))),
        auth(Request::get(format!("/playbook_logs/{id}"))),
        auth(Request::post(format!("/cancel/{id}"))),
        auth(Request::get("/playbook_status/..%2F..%2Fetc%2Fpasswd")),
    ] {
        let (status, body) = call(&s, req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}

/// An idempotency key finds its run whatever its state: while it waits, once
/// it has finished, and after the runner restarted. So an operator that
/// restarts after a run ended but before it recorded the result reads that
/// result instead of running again. (`ansible-playbook` is a program that
/// does not exist here: the run fails at once, without any host.)
#[tokio::test]
async fn an_idempotency_key_finds_a_finished_run_also_after_a_restart() {
    use server_manager::runner::api::{RunRequest, RunState};
    let data = tempfile::tempdir().expect("tmp");
    let config = || {
        let mut c = RunnerConfig::new(
            data.path().to_path_buf(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks").into(),
        );
        c.ansible_playbook = data.path().join("no-such-ansible-playbook");
        c
    };
    let runner = Runner::open(config()).expect("open");
    let mut request: RunRequest = serde_json::from_str(VALID).expect("request");
    request.idempotency_key = Some("server-uid/provision/abc/0".into());
    let first = runner.submit(request.clone()).expect("accepted");
    assert!(!first.existing);
    let mut finished = None;
    for _ in 0..200 {
        let s = runner.status(&first.id).expect("status");
        if s.state.is_terminal() {
            finished = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let finished = finished.expect("the run did not finish");
    assert_eq!(finished.state, RunState::Failed, "{finished:?}");

    let again = runner.submit(request.clone()).expect("accepted");
    assert_eq!(
        (again.id.as_str(), again.existing),
        (first.id.as_str(), true)
    );
    drop(runner);

    let restarted = Runner::open(config()).expect("reopen");
    let after = restarted.submit(request.clone()).expect("accepted");
    assert_eq!(
        (after.id.as_str(), after.existing),
        (first.id.as_str(), true)
    );
    assert_eq!(restarted.status(&first.id), Some(finished));

    // A new attempt (a new key) runs again.
    request.idempotency_key = Some("server-uid/provision/abc/2026-12-06T08:00:00Z".into());
    let next = restarted.submit(request).expect("accepted");
    assert!(!next.existing);
    assert_ne!(next.id, first.id);
    let runs = std::fs::read_dir(data.path().join("runs"))
        .expect("runs dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    assert_eq!(runs, 2, "one record per attempt");
}
