//! Runs the three controllers side by side: shared caches, leader election,
//! health and metrics endpoints, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::cluster::summarize;
use super::fleet::{Fleet, key_of};
use super::image::{self, ImageEngine, PushBackoff};
use super::leader::{LeaderConfig, LeaderElector};
use super::metrics::{Health, Metrics};
use super::server::reconcile::{self as server_reconcile, Provisioner, ServerState, Stores};
use super::server::rollout::Decision;
use super::{Context, Error, Settings, publish, write_status};

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

/// Where the operator finds its playbook runners.
#[derive(Clone, Debug)]
pub enum Runners {
    /// The ready endpoints of a Kubernetes Service, followed as they change.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// Fixed URLs: one runner, or a pool probed every 2 seconds.
    Urls(Vec<String>),
}

/// Everything `server-manager operator` and `server-manager standalone`
/// choose about the operator: [`Wiring::build`] is the one place the
/// controllers, the image engine and the runner client are put together.
#[derive(Clone, Debug)]
pub struct Wiring {
    /// Registry Images are pushed to and hosts pull from (`host:port`).
    pub registry: String,
    /// Plain HTTP to the registry.
    pub registry_insecure: bool,
    /// The only directory Image tarballs are read from.
    pub image_dir: std::path::PathBuf,
    /// The playbooks directory (its hash is part of every desired state).
    pub playbooks: std::path::PathBuf,
    /// How often provisioned Servers are checked for drift (`None`: never).
    pub drift_interval: Option<Duration>,
    /// Backoff between attempts after failures.
    pub backoff: super::server::decide::Backoff,
    /// The runners.
    pub runners: Runners,
    /// The runners' bearer token.
    pub runner_token: String,
    /// With several runners: how long one that stopped answering is waited
    /// for before its runs are started again on another.
    pub runner_gone_after: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub health_addr: Option<SocketAddr>,
    /// Leader election (`None`: the only replica).
    pub leader: Option<LeaderConfig>,
    /// Reconciles at once per controller.
    pub concurrency: u16,
    /// Name reported in events.
    pub instance: String,
}

/// An operator ready to [`run`](Operator::run).
pub struct Operator {
    client: Client,
    config: OperatorConfig,
    images: Arc<dyn ImageEngine>,
    runner: Arc<dyn Provisioner>,
}

impl Wiring {
    /// Builds the operator's parts (inside a Tokio runtime: a runner pool
    /// starts its watch or probe task here).
    pub fn build(self, client: Client) -> anyhow::Result<Operator> {
        use crate::runner::{RunnerClient, RunnerPool};
        let token = self.runner_token.trim();
        let runner: Arc<dyn Provisioner> = match &self.runners {
            Runners::Service { namespace, name } => {
                let pool = RunnerPool::new(token).with_gone_after(self.runner_gone_after);
                crate::runner::pool::follow_endpoint_slices(
                    pool.clone(),
                    client.clone(),
                    namespace,
                    name,
                );
                pool
            }
            Runners::Urls(urls) => match urls.as_slice() {
                [one] => Arc::new(RunnerClient::new(one, token)?),
                urls => {
                    let pool =
                        RunnerPool::from_urls(urls, token)?.with_gone_after(self.runner_gone_after);
                    pool.spawn_probe(Duration::from_secs(2));
                    pool
                }
            },
        };
        // One registry model: the engine pushes to it, Servers pull from it.
        let registry = crate::registry::RegistryConfig {
            address: self.registry,
            insecure: self.registry_insecure,
            ..Default::default()
        };
        let images = Arc::new(image::RegistryEngine {
            registry: registry.clone(),
            image_dir: self.image_dir,
        });
        let config = OperatorConfig {
            settings: Settings {
                registry,
                drift_interval: self.drift_interval,
                backoff: self.backoff,
                playbook_version: crate::standalone::playbook_version(&self.playbooks),
            },
            health_addr: self.health_addr,
            leader: self.leader,
            concurrency: self.concurrency,
            instance: self.instance,
        };
        Ok(Operator {
            client,
            config,
            images,
            runner,
        })
    }
}

impl Operator {
    /// Runs the controllers until `shutdown` completes ([`run`]).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        run(self.client, self.config, self.images, self.runner, shutdown).await
    }
}

/// Drives a shared reflector: one watch per kind, its store updated before
/// any subscriber sees an event, so a trigger never reads a stale cache.
/// `observe` sees every event (deletions and relists included) before the
/// store does.
fn drive<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    observe: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl Future<Output = ()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // The cache holds what the controllers read: not the managedFields
    // (often larger than the rest of the object) nor kubectl's
    // last-applied-configuration annotation.
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map_ok(|mut event| {
            strip(&mut event);
            event
        })
        .inspect_ok(move |event| observe(event))
        .reflect_shared(writer)
        .for_each(|_| async {})
}

/// Drops from a watched object what no controller reads.
fn strip<K: kube::Resource>(event: &mut watcher::Event<K>) {
    let meta = match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => {
            o.meta_mut()
        }
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
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
    let servers_clusters = server_writer.subscribe().context(subscribe)?;
    let clusters_main = cluster_writer.subscribe().context(subscribe)?;
    let clusters_servers = cluster_writer.subscribe().context(subscribe)?;
    let images_main = image_writer.subscribe().context(subscribe)?;
    let images_servers = image_writer.subscribe().context(subscribe)?;
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let fleet = Arc::new(Fleet::new(cluster_store.clone(), wake_tx.clone()));
    {
        let fleet = fleet.clone();
        tokio::spawn(drive(
            Api::<Server>::all(client.clone()),
            server_writer,
            move |e| fleet.observe(e),
        ));
    }
    tokio::spawn(drive(
        Api::<Cluster>::all(client.clone()),
        cluster_writer,
        |_| {},
    ));
    tokio::spawn(drive(
        Api::<Image>::all(client.clone()),
        image_writer,
        |_| {},
    ));
    let controller_config = ControllerConfig::default().concurrency(config.concurrency);
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let signal = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    // Server controller, triggered by its Cluster, its Images, and the
    // membership index when a derived value it renders changed (or the
    // Cluster controller when its turn in the rollout came).
    let stores = Stores {
        servers: server_store.clone(),
        clusters: cluster_store.clone(),
        images: image_store.clone(),
    };
    let state = Arc::new(ServerState {
        runner,
        stores: stores.clone(),
        fleet: fleet.clone(),
        memo: Default::default(),
        written: Default::default(),
        blocked: Default::default(),
        secrets: Default::default(),
        finalizing: Default::default(),
    });
    let by_cluster = {
        let fleet = fleet.clone();
        move |c: Arc<Cluster>| {
            let ns = c.namespace().unwrap_or_default();
            fleet
                .members(&key_of(c.as_ref()))
                .into_iter()
                .map(|name| ObjectRef::new(&name).within(&ns))
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
    let server_task = {
        let (ctx, state) = (ctx.clone(), state.clone());
        Controller::for_shared_stream(servers_main, server_store.clone())
            .with_config(controller_config.clone())
            .watches_shared_stream(clusters_servers, by_cluster)
            .watches_shared_stream(images_servers, by_image)
            .reconcile_on(wake_rx)
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
        let (state, wake) = (state.clone(), wake_tx.clone());
        let last = Arc::new(ClusterPace::default());
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
                    let (state, wake, last) = (state.clone(), wake.clone(), last.clone());
                    async move { reconcile_cluster(c, ctx, state, wake, last).await }
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

/// When each Cluster was last summarized: a Cluster is woken by every status
/// write of its Servers, so it is summarized at most once per
/// [`CLUSTER_PACE`] (the rest are cheap re-schedules), keeping the work per
/// Server event constant during a rollout of thousands.
#[derive(Default)]
struct ClusterPace(Mutex<HashMap<String, std::time::Instant>>);

/// The shortest time between two summaries of one Cluster.
const CLUSTER_PACE: Duration = Duration::from_millis(500);

async fn reconcile_cluster(
    cluster: Arc<Cluster>,
    ctx: Arc<Context>,
    state: Arc<ServerState>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Server>>,
    pace: Arc<ClusterPace>,
) -> Result<Action, Error> {
    let key = key_of(cluster.as_ref());
    if let Ok(mut last) = pace.0.lock() {
        if let Some(at) = last.get(&key)
            && let Some(wait) = CLUSTER_PACE.checked_sub(at.elapsed())
        {
            return Ok(Action::requeue(wait));
        }
        last.insert(key.clone(), std::time::Instant::now());
    }
    let started = std::time::Instant::now();
    let plan = state.plan(&ctx, &cluster);
    let members: Vec<Arc<Server>> = state
        .fleet
        .members(&key)
        .iter()
        .filter_map(|name| {
            state
                .stores
                .servers
                .get(&ObjectRef::new(name).within(&cluster.namespace().unwrap_or_default()))
        })
        .collect();
    let statuses: Vec<(Arc<Server>, Option<crate::crd::ServerStatus>)> = members
        .into_iter()
        .map(|s| {
            let st = state.written.effective(&s);
            (s, st)
        })
        .collect();
    let revision = super::cluster::revision(&cluster, &state.stores.images);
    let status = summarize(&cluster, &statuses, &plan, revision);
    // Servers whose turn came: wake them now rather than at their next poll.
    for (s, st) in &statuses {
        let running = st
            .as_ref()
            .and_then(|st| st.run.as_ref())
            .is_some_and(crate::crd::RunStatus::in_flight);
        if !running
            && matches!(
                plan.decision(&s.name_any()),
                Decision::Install | Decision::Update
            )
            && let Some(ns) = s.namespace()
        {
            let _ = wake.unbounded_send(ObjectRef::new(&s.name_any()).within(&ns));
        }
    }
    for (kind, reason, note) in super::cluster::transitions(cluster.status.as_ref(), &status) {
        publish(
            &ctx.recorder,
            cluster.as_ref(),
            kind,
            reason,
            "Rollout",
            note,
        )
        .await;
    }
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
