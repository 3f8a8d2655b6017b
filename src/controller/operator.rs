//! Runs the three controllers side by side: shared caches, leader election,
//! health and metrics endpoints, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::cluster::summarize;
use super::image::{self, ImageEngine, PushBackoff};
use super::leader::{LeaderConfig, LeaderElector};
use super::metrics::{Health, Metrics};
use super::server::reconcile::{
    self as server_reconcile, Provisioner, RolloutGate, ServerState, Stores,
};
use super::{Context, Error, Settings, write_status};

/// Events buffered per subscriber of a shared store.
const BUFFER: usize = 4096;
use crate::crd::{Cluster, Image, Server};

/// How to run the operator.
pub struct OperatorConfig {
    /// Settings shared by the reconcilers.
    pub settings: Settings,
    /// Where `/healthz`, `/readyz` and `/metrics` listen (`None`: not served).
    pub health_addr: Option<SocketAddr>,
    /// Leader election (`None`: this is the only replica, e.g. standalone).
    pub leader: Option<LeaderConfig>,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    /// Name reported in events.
    pub instance: String,
}

/// Drives a shared reflector: one watch per kind, its store updated before
/// any subscriber sees an event, so a trigger never reads a stale cache.
fn drive<K>(api: Api<K>, writer: reflector::store::Writer<K>) -> impl Future<Output = ()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| async {})
}

/// Runs the controllers until `shutdown` resolves (in-flight reconciles
/// finish) or leadership is lost.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    images: Arc<dyn ImageEngine>,
    runner: Arc<dyn Provisioner>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Health {
        metrics: metrics.clone(),
        ..Default::default()
    };
    if let Some(addr) = config.health_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "health and metrics endpoints listening");
        let router = super::metrics::router(health.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
    }
    let elector = config
        .leader
        .clone()
        .map(|l| LeaderElector::new(client.clone(), l));
    let mut shutdown = std::pin::pin!(shutdown);
    if let Some(e) = &elector {
        // A standby is healthy and ready to take over: ready, so a rolling
        // update of the Deployment can replace the leader (whose Lease is
        // released when it stops); a stop while waiting is a clean exit.
        health.ready.store(true, Ordering::Relaxed);
        tokio::select! {
            r = e.acquire() => r?,
            _ = &mut shutdown => return Ok(()),
        }
    }

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "server-manager".into(),
            instance: Some(config.instance.clone()),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics: metrics.clone(),
        settings: config.settings.clone(),
        images,
    });

    let (server_store, server_writer) = reflector::store_shared::<Server>(BUFFER);
    let (cluster_store, cluster_writer) = reflector::store_shared::<Cluster>(BUFFER);
    let (image_store, image_writer) = reflector::store_shared::<Image>(BUFFER);
    let subscribe = "a shared store can be subscribed to";
    let servers_main = server_writer.subscribe().context(subscribe)?;
    let servers_siblings = server_writer.subscribe().context(subscribe)?;
    let servers_clusters = server_writer.subscribe().context(subscribe)?;
    let clusters_main = cluster_writer.subscribe().context(subscribe)?;
    let clusters_servers = cluster_writer.subscribe().context(subscribe)?;
    let images_main = image_writer.subscribe().context(subscribe)?;
    let images_servers = image_writer.subscribe().context(subscribe)?;
    tokio::spawn(drive(Api::<Server>::all(client.clone()), server_writer));
    tokio::spawn(drive(Api::<Cluster>::all(client.clone()), cluster_writer));
    tokio::spawn(drive(Api::<Image>::all(client.clone()), image_writer));
    let controller_config = ControllerConfig::default().concurrency(config.concurrency);
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let signal = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    // Server controller, triggered by its Cluster, its Images, and siblings
    // whose membership (host, roles, provisioning, deletion) changed.
    let stores = Stores {
        servers: server_store.clone(),
        clusters: cluster_store.clone(),
        images: image_store.clone(),
    };
    let state = Arc::new(ServerState {
        runner,
        stores: stores.clone(),
        rollout: RolloutGate::default(),
        blocked: Default::default(),
    });
    let by_cluster = {
        let store = server_store.clone();
        move |c: Arc<Cluster>| {
            let (ns, name) = (c.namespace(), c.name_any());
            store
                .state()
                .iter()
                .filter(|s| s.namespace() == ns && s.spec.cluster_ref.name == name)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_image = {
        let (store, clusters) = (server_store.clone(), cluster_store.clone());
        move |i: Arc<Image>| {
            let (ns, name) = (i.namespace(), i.name_any());
            store
                .state()
                .iter()
                .filter(|s| s.namespace() == ns)
                .filter(|s| {
                    s.spec.images.values().any(|v| *v == name)
                        || clusters
                            .get(
                                &ObjectRef::new(&s.spec.cluster_ref.name)
                                    .within(ns.as_deref().unwrap_or_default()),
                            )
                            .is_some_and(|c| c.spec.images.values().any(|v| *v == name))
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_sibling = {
        let store = server_store.clone();
        let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        move |s: Arc<Server>| {
            let membership = format!(
                "{}|{:?}|{:?}|{}|{}",
                s.spec.host,
                s.spec.roles,
                s.spec.provisioning,
                s.spec.cluster_ref.name,
                s.metadata.deletion_timestamp.is_some()
            );
            let key = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            let changed = seen
                .lock()
                .map(|mut m| m.insert(key, membership.clone()) != Some(membership))
                .unwrap_or(true);
            if !changed {
                return Vec::new();
            }
            let (ns, cluster, me) = (s.namespace(), s.spec.cluster_ref.name.clone(), s.name_any());
            store
                .state()
                .iter()
                .filter(|o| {
                    o.namespace() == ns && o.spec.cluster_ref.name == cluster && o.name_any() != me
                })
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let server_task = {
        let (ctx, state) = (ctx.clone(), state.clone());
        Controller::for_shared_stream(servers_main, server_store.clone())
            .with_config(controller_config.clone())
            .watches_shared_stream(clusters_servers, by_cluster)
            .watches_shared_stream(images_servers, by_image)
            .watches_shared_stream(servers_siblings, by_sibling)
            .graceful_shutdown_on(signal(&shutdown_tx))
            .run(
                move |s, ctx| {
                    let state = state.clone();
                    async move { server_reconcile::reconcile(s, ctx, state).await }
                },
                error_policy,
                ctx,
            )
            .for_each(log_result("server"))
    };

    let backoff = Arc::new(PushBackoff::default());
    let image_task = Controller::for_shared_stream(images_main, image_store.clone())
        .with_config(controller_config.clone())
        .graceful_shutdown_on(signal(&shutdown_tx))
        .run(
            move |i, ctx| {
                let backoff = backoff.clone();
                async move { image::reconcile(i, ctx, backoff).await }
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result("image"));

    let cluster_task = {
        let store = server_store.clone();
        Controller::for_shared_stream(clusters_main, cluster_store.clone())
            .with_config(controller_config)
            .watches_shared_stream(servers_clusters, |s: Arc<Server>| {
                Some(
                    ObjectRef::<Cluster>::new(&s.spec.cluster_ref.name)
                        .within(&s.namespace().unwrap_or_default()),
                )
            })
            .graceful_shutdown_on(signal(&shutdown_tx))
            .run(
                move |c, ctx| {
                    let store = store.clone();
                    async move { reconcile_cluster(c, ctx, store).await }
                },
                error_policy,
                ctx.clone(),
            )
            .for_each(log_result("cluster"))
    };

    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("operator running");
    let mut controllers = tokio::spawn(async move {
        tokio::join!(server_task, image_task, cluster_task);
    });
    let lost = async {
        match &elector {
            Some(e) => Some(e.hold().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("shutting down: letting in-flight reconciles finish");
            let _ = shutdown_tx.send(());
            let _ = controllers.await;
            if let Some(e) = &elector
                && let Err(err) = e.release().await
            {
                tracing::warn!(error = %err, "could not release the Lease; it expires on its own");
            }
            Ok(())
        }
        lost = lost => {
            health.ready.store(false, Ordering::Relaxed);
            let _ = shutdown_tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut controllers).await;
            Err(anyhow::anyhow!("lost leadership: {}", lost.map(|e| e.to_string()).unwrap_or_default()))
        }
        _ = &mut controllers => Ok(()),
    }
}

async fn reconcile_cluster(
    cluster: Arc<Cluster>,
    ctx: Arc<Context>,
    servers: Store<Server>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let all: Vec<Server> = servers.state().iter().map(|s| (**s).clone()).collect();
    let status = summarize(&cluster, &all);
    write_status(
        &ctx.client,
        cluster.as_ref(),
        cluster.status.as_ref(),
        &status,
    )
    .await?;
    ctx.metrics.reconciled("cluster", started.elapsed());
    Ok(Action::await_change())
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = match error.category() {
        // Clean-up in progress: poll it.
        "pending" => {
            tracing::debug!(error = %error, "clean-up in progress");
            return Action::requeue(super::server::reconcile::POLL_INTERVAL);
        }
        // A finalizer patch built from a cache one event behind fails its
        // JSON-patch test; the next event brings the cache up to date.
        "finalizer" => 1,
        _ => 5,
    };
    tracing::warn!(error = %error, category = error.category(), "reconcile failed");
    ctx.metrics.error("any", error.category());
    Action::requeue(Duration::from_secs(wait))
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<T, E>) -> futures::future::Ready<()> {
    move |r| {
        if let Err(e) = r {
            tracing::debug!(controller, error = %e, "controller event");
        }
        futures::future::ready(())
    }
}
