//! The embedded API server driven by the real kube-rs 5 client and runtime:
//! a Controller with the finalizer helper, status patches (merge and apply) and
//! a Recorder; reflector; watch ordering, resume and `410 Expired` recovery of
//! the real watcher; optimistic concurrency; authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use server_manager::crd::Server;
use support::apiserver::TestApi;

const FINALIZER: &str = "servermanager.contrail.io/test-cleanup";

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
    reconciles: AtomicUsize,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fail(String);

async fn reconcile(
    obj: Arc<Server>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<Fail>> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Server> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(s) => {
                let name = s.name_any();
                api.patch_status(&name, &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"appliedHash": "abc"}})))
                    .await.map_err(|e| Fail(e.to_string()))?;
                let applied = json!({
                    "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
                    "status": {"progress": "2/2", "observedGeneration": s.metadata.generation,
                        "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned",
                            "message": "all containers run", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
                });
                api.patch_status(&name, &PatchParams::apply("test-controller").force(), &Patch::Apply(applied))
                    .await.map_err(|e| Fail(e.to_string()))?;
                ctx.recorder.publish(&KEvent {
                    type_: EventType::Normal, reason: "Provisioned".into(),
                    note: Some("containers started".into()), action: "Provision".into(), secondary: None,
                }, &s.object_ref(&())).await.map_err(|e| Fail(e.to_string()))?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    }).await
}

fn error_policy(_: Arc<Server>, _: &kube::runtime::finalizer::Error<Fail>, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_with_finalizer_status_patches_and_recorder() {
    let api = TestApi::start();
    server_manager::standalone::install_crds(api.handle())
        .await
        .expect("crds");
    let client = api.client();
    let servers: Api<Server> = Api::namespaced(client.clone(), "default");

    // A reflector sees what the controller sees.
    let (reader, writer) = reflector::store::<Server>();
    let refl = reflector::reflector(
        writer,
        watcher(
            Api::<Server>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .applied_objects();
    let refl_task = tokio::spawn(async move { refl.for_each(|_| async {}).await });

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "test-controller".into(),
                instance: None,
            },
        ),
        reconciles: AtomicUsize::new(0),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(
        Api::<Server>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let ctl_task = tokio::spawn(controller);

    let server: Server = serde_json::from_value(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": "node1"},
        "spec": {"clusterRef": {"name": "lab"}, "host": "10.0.0.1", "roles": ["controller"],
                 "ssh": {"secretRef": {"name": "ssh"}}}
    }))
    .expect("server");
    servers
        .create(&PostParams::default(), &server)
        .await
        .expect("create");

    eventually("Ready status and finalizer", || async {
        let Ok(s) = servers.get("node1").await else {
            return false;
        };
        let ready = s.status.as_ref().is_some_and(|st| {
            st.progress.as_deref() == Some("2/2")
                && st.applied_hash.as_deref() == Some("abc")
                && st.conditions.iter().any(|c| c.type_ == "Ready")
        });
        ready && s.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    eventually("the reflector store", || async {
        reader
            .get(&kube::runtime::reflector::ObjectRef::new("node1").within("default"))
            .is_some()
    })
    .await;

    // No-op writes produce no events: the controller settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ctx.reconciles.load(Ordering::SeqCst),
        settled,
        "reconcile loop did not settle"
    );

    // kubectl describe reads the Recorder's events through core/v1.
    let out = api.ok(&["describe", "server", "node1"]);
    assert!(
        out.contains("Provisioned") && out.contains("containers started"),
        "{out}"
    );
    let out = api.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=node1",
        "-o",
        "name",
    ]);
    assert!(!out.trim().is_empty(), "events listed by field selector");

    // Deletion runs the cleanup, the finalizer goes, the object goes.
    servers
        .delete("node1", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("deletion", || async {
        matches!(servers.get_opt("node1").await, Ok(None))
    })
    .await;
    assert!(ctx.cleanups.load(Ordering::SeqCst) >= 1);
    ctl_task.abort();
    refl_task.abort();
}

fn cm(name: &str, n: u64) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"n": n.to_string()}}))
        .expect("cm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_resume_and_expired_recovery_of_the_real_watcher() {
    // Small window, no bookmarks: an idle watcher's resourceVersion expires.
    let api = TestApi::start_custom(20, Duration::from_secs(3600));
    let client = api.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("w0", 0))
        .await
        .expect("create");
    let rv0 = first.resource_version().expect("rv");
    for i in 1..5 {
        cms.create(&PostParams::default(), &cm(&format!("w{i}"), i))
            .await
            .expect("create");
    }
    // Resume from rv0: the four later creates, in resourceVersion order.
    let stream = cms
        .watch(&WatchParams::default().timeout(2), &rv0)
        .await
        .expect("watch");
    let events: Vec<_> = stream.take(4).collect().await;
    let mut last = rv0.parse::<u64>().expect("rv");
    for (i, e) in events.into_iter().enumerate() {
        match e.expect("event") {
            WatchEvent::Added(o) => {
                assert_eq!(o.name_any(), format!("w{}", i + 1));
                let rv: u64 = o.resource_version().expect("rv").parse().expect("rv");
                assert!(rv > last, "events in resourceVersion order");
                last = rv;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Pages report the first page's resourceVersion.
    let page1 = cms
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let token = page1.metadata.continue_.clone().expect("continue");
    cms.create(&PostParams::default(), &cm("between", 7))
        .await
        .expect("create");
    let page2 = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        page2.metadata.resource_version,
        page1.metadata.resource_version
    );

    // The real watcher: list, watch with a 1 s timeout, go stale, recover.
    let inits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (i2, s2) = (inits.clone(), seen.clone());
    let w = watcher(cms.clone(), watcher::Config::default().timeout(1));
    let task = tokio::spawn(async move {
        w.for_each(|e| {
            let (i2, s2) = (i2.clone(), s2.clone());
            async move {
                match e {
                    Ok(watcher::Event::Init) => {
                        i2.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                        s2.lock().expect("lock").push(o.name_any());
                    }
                    _ => {}
                }
            }
        })
        .await
    });
    eventually("the first list", || async {
        inits.load(Ordering::SeqCst) >= 1
    })
    .await;
    // 40 changes elsewhere push the watcher's resourceVersion out of the window.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for i in 0..40 {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).expect("secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }
    // A raw watch from the old version gets a 410 ERROR event (HTTP 200).
    let mut stale = cms
        .watch(&WatchParams::default().timeout(2), &rv0)
        .await
        .expect("watch starts with 200")
        .boxed();
    match stale.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    eventually("a relist after 410", || async {
        inits.load(Ordering::SeqCst) >= 2
    })
    .await;
    cms.create(&PostParams::default(), &cm("after", 9))
        .await
        .expect("create");
    eventually("the watcher to see new objects", || async {
        seen.lock().expect("lock").iter().any(|n| n == "after")
    })
    .await;
    task.abort();

    // Streaming lists end with the initial-events-end bookmark.
    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut got_init_done = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        if let Ok(watcher::Event::InitDone) = e {
            got_init_done = true;
            break;
        }
    }
    assert!(got_init_done, "streaming list completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_updates_conflict_and_concurrent_increments_are_not_lost() {
    let api = TestApi::start();
    let client = api.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("counter", 0))
        .await
        .expect("create");
    let a = cms.get("counter").await.expect("get");
    let b = cms.get("counter").await.expect("get");
    let mut a2 = a.clone();
    a2.data = Some([("n".to_string(), "1".to_string())].into());
    cms.replace("counter", &PostParams::default(), &a2)
        .await
        .expect("first replace");
    let mut b2 = b.clone();
    b2.data = Some([("n".to_string(), "2".to_string())].into());
    match cms.replace("counter", &PostParams::default(), &b2).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
    // A stale merge patch carrying the old resourceVersion conflicts too.
    let stale = json!({"metadata": {"resourceVersion": b.resource_version()}, "data": {"n": "3"}});
    let err = cms
        .patch("counter", &PatchParams::default(), &Patch::Merge(stale))
        .await
        .expect_err("stale patch");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.reason == "Conflict"),
        "{err}"
    );

    // 20 writers, 5 read-modify-write increments each, retrying on Conflict.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..5 {
                loop {
                    let mut cur = cms.get("counter").await.expect("get");
                    let n: u64 = cur
                        .data
                        .as_ref()
                        .and_then(|d| d.get("n"))
                        .and_then(|n| n.parse().ok())
                        .expect("n");
                    cur.data = Some([("n".to_string(), (n + 1).to_string())].into());
                    match cms.replace("counter", &PostParams::default(), &cur).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.reason == "Conflict" => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("task");
    }
    let end = cms.get("counter").await.expect("get");
    assert_eq!(
        end.data.expect("data")["n"],
        "101",
        "no increment lost ({conflicts} conflicts retried)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_401_except_health_and_version() {
    let api = TestApi::start();
    let mut config = api.handle().client_config();
    config.auth_info.token = None;
    let anon = kube::Client::try_from(config.clone()).expect("client");
    config.auth_info.token = Some("wrong".to_string().into());
    let wrong = kube::Client::try_from(config).expect("client");
    for client in [&anon, &wrong] {
        for path in ["/healthz", "/readyz", "/livez", "/version"] {
            let req = hyper::Request::get(path).body(Vec::new()).expect("req");
            client
                .request_text(req)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        for path in [
            "/api",
            "/apis",
            "/api/v1",
            "/openapi/v3",
            "/api/v1/namespaces",
            "/api/v1/namespaces/default/secrets",
            "/api/v1/namespaces/default/configmaps?watch=true",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        ] {
            let req = hyper::Request::get(path).body(Vec::new()).expect("req");
            match client.request_text(req).await {
                Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{path}"),
                other => panic!("{path}: expected 401, got {other:?}"),
            }
        }
    }
    let ns: Api<Namespace> = Api::all(api.client());
    let list = ns
        .list(&ListParams::default())
        .await
        .expect("authorized list");
    assert!(list.items.len() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_in_both_modes_sees_new_crds_at_once() {
    let api = TestApi::start();
    let client = api.client();
    let before = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("legacy discovery");
    assert!(!before.has_group("servermanager.contrail.io"));
    server_manager::standalone::install_crds(api.handle())
        .await
        .expect("crds");
    for discovery in [
        kube::Discovery::new(client.clone())
            .run()
            .await
            .expect("legacy discovery"),
        kube::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery"),
    ] {
        let group = discovery
            .get("servermanager.contrail.io")
            .expect("CRD group served");
        let (ar, caps) = group.recommended_kind("Server").expect("Server kind");
        assert_eq!(ar.plural, "servers");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "servers/status" || s.plural == "status"),
            "status subresource listed: {:?}",
            caps.subresources
        );
        assert!(discovery.get("events.k8s.io").is_some());
        assert!(discovery.get("coordination.k8s.io").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_mode_and_a_persistent_ca_and_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = server_manager::apiserver::ApiServerConfig::new(dir.path());
    config.tls = false;
    let handle = server_manager::apiserver::ApiServer::start(config).expect("start");
    assert!(handle.url.starts_with("http://127.0.0.1:"));
    assert!(handle.ca_pem.is_none());
    let client = kube::Client::try_from(handle.client_config()).expect("client");
    let ns: Api<Namespace> = Api::all(client);
    assert!(ns.get("kube-system").await.is_ok());
    let token = handle.admin_token.clone();
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .expect("shutdown");

    // With TLS, the CA and the token persist across restarts.
    let first = server_manager::apiserver::ApiServer::start(
        server_manager::apiserver::ApiServerConfig::new(dir.path()),
    )
    .expect("start");
    let ca = first.ca_pem.clone().expect("ca");
    assert_eq!(first.admin_token, token);
    tokio::task::spawn_blocking(move || first.shutdown())
        .await
        .expect("shutdown");
    let second = server_manager::apiserver::ApiServer::start(
        server_manager::apiserver::ApiServerConfig::new(dir.path()),
    )
    .expect("start");
    assert_eq!(second.ca_pem.as_deref(), Some(ca.as_str()));
    let client = kube::Client::try_from(second.client_config()).expect("client");
    let ns: Api<Namespace> = Api::all(client);
    assert!(
        ns.get("default").await.is_ok(),
        "the new serving certificate chains to the persisted CA"
    );
    tokio::task::spawn_blocking(move || second.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_with_a_status() {
    let api = TestApi::start();
    let client = api.client();
    let cases = [
        (
            "/api/v1/namespaces/default/secrets",
            r#"{"metadata":{"name":"s"},"data":"oops"}"#,
            400,
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            r#"{"metadata":{"name":"c","labels":"oops"}}"#,
            400,
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            r#"{"metadata":{"name":"Bad_Name"}}"#,
            422,
        ),
        ("/api/v1/namespaces/default/configmaps", "not json", 400),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            r#"{"metadata":{"name":"x"},"spec":"oops"}"#,
            400,
        ),
        (
            "/api/v1/namespaces/missing/configmaps",
            r#"{"metadata":{"name":"c"}}"#,
            404,
        ),
    ];
    for (path, body, code) in cases {
        let req = hyper::Request::post(path)
            .header("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
            .expect("req");
        match client.request_text(req).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, code, "{path} {body}: {s:?}"),
            other => panic!("{path} {body}: expected {code}, got {other:?}"),
        }
    }
    // The server is still healthy.
    let ns: Api<Namespace> = Api::all(client);
    assert!(ns.get("default").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_apply_owns_fields_and_generation_follows_the_spec() {
    let api = TestApi::start();
    server_manager::standalone::install_crds(api.handle())
        .await
        .expect("crds");
    let servers: Api<Server> = Api::namespaced(api.client(), "default");
    let server: Server = serde_json::from_value(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "metadata": {"name": "s1"},
        "spec": {"clusterRef": {"name": "lab"}, "host": "10.0.0.2", "roles": ["agent"],
                 "ssh": {"secretRef": {"name": "ssh"}}},
        "status": {"progress": "dropped on create"}
    }))
    .expect("server");
    let created = servers
        .create(&PostParams::default(), &server)
        .await
        .expect("create");
    assert!(created.status.is_none(), "create drops status");
    assert_eq!(created.metadata.generation, Some(1));
    let pp = PatchParams::apply("status-owner").force();
    let first = json!({"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "status": {"progress": "1/2", "appliedHash": "h1"}});
    let s = servers
        .patch_status("s1", &pp, &Patch::Apply(first))
        .await
        .expect("apply status");
    let rv1 = s.resource_version();
    assert_eq!(
        s.status.as_ref().and_then(|s| s.applied_hash.as_deref()),
        Some("h1")
    );
    // The same apply again is a no-op: same resourceVersion.
    let again = json!({"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "status": {"progress": "1/2", "appliedHash": "h1"}});
    let s = servers
        .patch_status("s1", &pp, &Patch::Apply(again))
        .await
        .expect("apply status");
    assert_eq!(s.resource_version(), rv1, "a no-op apply changes nothing");
    // Omitting appliedHash removes it; generation does not move for status.
    let second = json!({"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
        "status": {"progress": "2/2"}});
    let s = servers
        .patch_status("s1", &pp, &Patch::Apply(second))
        .await
        .expect("apply status");
    let st = s.status.expect("status");
    assert_eq!(st.progress.as_deref(), Some("2/2"));
    assert_eq!(st.applied_hash, None);
    assert_eq!(s.metadata.generation, Some(1));
    // Labels sent through /status are ignored; a spec change bumps generation.
    let s = servers
        .patch_status(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("status merge");
    assert!(s.metadata.labels.is_none());
    let s = servers
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("spec merge");
    assert_eq!(s.metadata.generation, Some(2));
    assert_eq!(
        s.status.and_then(|s| s.progress).as_deref(),
        Some("2/2"),
        "status kept by spec writes"
    );
}
