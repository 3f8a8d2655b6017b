//! The Server reconciler: gathers its inputs from the caches (Cluster,
//! Images, the membership index, the rollout planner), runs one
//! [`step`], computes the conditions from the step's outcome
//! ([`outcome::apply`]), writes the status only when it changed and
//! publishes Events for what changed. On deletion, deprovisions first
//! (finalizer).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use super::availability::Availability;
use super::desired::{Blocked, Desired, DesiredMemo, Sources};
use super::outcome::{self, Outcome};
pub use super::provisioner::{ProvisionError, Provisioner, RunHandle};
use super::rollout::{self, MemberState, Plan};
pub use super::step::POLL_INTERVAL;
use super::step::{self, Credentials, Inputs, Note, member_state};
use crate::controller::conditions::{READY, reason};
use crate::controller::fleet::{Fleet, Key, cluster_key_of, key_of};
use crate::controller::{Context, Error, publish};
use crate::crd::{
    Cluster, ConditionStatus, Image, RolloutSpec, RunStatus, Server, ServerStatus, SshTargetError,
};
use crate::runner::api::{
    Playbook, RegistryAuth, RunRequest, RunState, Secret as Sensitive, Target,
};

/// Finalizer: the Server's containers and files are removed before it goes.
pub const FINALIZER: &str = "servermanager.contrail.io/deprovision";
/// Annotation: set to a new value to retry at once, skipping the backoff and
/// making a failed update stop counting towards the rollout's `maxFailures`.
pub const RETRY_ANNOTATION: &str = "servermanager.contrail.io/retry";
/// Annotation: `"true"` removes the finalizer without deprovisioning.
pub const FORCE_DELETE_ANNOTATION: &str = "servermanager.contrail.io/force-delete";

/// Caches the Server controller reads instead of the API server.
#[derive(Clone)]
pub struct Stores {
    /// Servers.
    pub servers: Store<Server>,
    /// Clusters.
    pub clusters: Store<Cluster>,
    /// Images.
    pub images: Store<Image>,
}

/// The statuses this operator wrote that the cache may not show yet: a
/// reconcile (or the planner) woken before the watch delivers a write reads
/// the write, not the older cached status — no run is started twice from a
/// stale cache. An entry goes once the cache has caught up.
#[derive(Default)]
pub struct Written(Mutex<HashMap<Key, (Option<String>, ServerStatus)>>);

impl Written {
    /// The newest status of `server`: the cache's, or the one written since.
    pub fn effective(&self, server: &Server) -> Option<ServerStatus> {
        let key = key_of(server);
        let Ok(mut map) = self.0.lock() else {
            return server.status.clone();
        };
        match map.get(&key) {
            Some((uid, written)) if *uid == server.metadata.uid => {
                if server.status.as_ref() == Some(written) {
                    map.remove(&key);
                    server.status.clone()
                } else {
                    Some(written.clone())
                }
            }
            Some(_) => {
                map.remove(&key);
                server.status.clone()
            }
            None => server.status.clone(),
        }
    }

    fn record(&self, server: &Server, status: ServerStatus) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key_of(server), (server.metadata.uid.clone(), status));
        }
    }

    fn forget(&self, server: &Server) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&key_of(server));
        }
    }
}

/// In-memory counts of consecutive blocked attempts (missing Secret, runner
/// down), for backoff between them.
#[derive(Default)]
pub struct BlockedCounts(Mutex<HashMap<String, u32>>);

impl BlockedCounts {
    fn bump(&self, key: &str) -> u32 {
        let Ok(mut m) = self.0.lock() else { return 1 };
        let n = m.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }
    fn clear(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// Secrets read recently: every run start needs its Server's SSH Secret
/// (and its Cluster's registry Secret), often the same one for a whole
/// fleet; reading it once per [`SECRET_TTL`] instead of once per run keeps
/// API requests per Server flat. A changed Secret is seen within the TTL;
/// a missing one is never cached.
#[derive(Default)]
pub struct SecretCache(Mutex<HashMap<(String, String), ReadSecret>>);

/// A Secret and when it was read.
type ReadSecret = (Instant, Arc<Secret>);

/// How long a Secret read is reused.
pub const SECRET_TTL: Duration = Duration::from_secs(10);

impl SecretCache {
    async fn get(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        let key = (ns.to_string(), name.to_string());
        if let Ok(map) = self.0.lock()
            && let Some((at, secret)) = map.get(&key)
            && at.elapsed() < SECRET_TTL
        {
            return Ok(Some(secret.clone()));
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let found = api.get_opt(name).await?.map(Arc::new);
        if let (Some(secret), Ok(mut map)) = (&found, self.0.lock()) {
            map.insert(key, (Instant::now(), secret.clone()));
        }
        Ok(found)
    }
}

/// Server controller state beyond the shared Context.
pub struct ServerState {
    /// The runners.
    pub runner: Arc<dyn Provisioner>,
    /// Caches.
    pub stores: Stores,
    /// Cluster membership and derived parameters.
    pub fleet: Arc<Fleet>,
    /// Every Server's desired hash.
    pub memo: DesiredMemo,
    /// Statuses written that the cache may not show yet.
    pub written: Written,
    /// Blocked-attempt counts.
    pub blocked: BlockedCounts,
    /// Secrets read recently.
    pub secrets: SecretCache,
    /// Servers (by uid) whose finalizer this operator added and whose cache
    /// entry does not show it yet: a reconcile of the stale entry would add it
    /// again (a second PATCH, refused by the patch's test).
    pub finalizing: Mutex<HashSet<String>>,
}

impl ServerState {
    /// The Cluster of `server`, from the cache.
    fn cluster(&self, server: &Server) -> Option<Arc<Cluster>> {
        self.stores.clusters.get(
            &ObjectRef::new(&server.spec.cluster_ref.name)
                .within(&server.namespace().unwrap_or_default()),
        )
    }

    /// The planner's view of every member of `cluster` (`namespace/name`),
    /// `me` (name, status) standing for the Server being reconciled.
    pub fn members(
        &self,
        ctx: &Context,
        cluster: &Key,
        cluster_obj: Option<&Cluster>,
        me: Option<(&str, &ServerStatus)>,
    ) -> Vec<MemberState> {
        let snapshot = self.fleet.snapshot(cluster);
        let ns = cluster.split_once('/').map(|(n, _)| n).unwrap_or_default();
        let policy = policy(cluster_obj);
        let min_ready = Duration::from_secs(u64::from(policy.min_ready_seconds));
        let generation = cluster_obj.and_then(|c| c.metadata.generation);
        let sources = self.sources(ctx);
        snapshot
            .members
            .iter()
            .filter_map(|name| self.stores.servers.get(&ObjectRef::new(name).within(ns)))
            .map(|s| {
                let status = match me {
                    Some((n, st)) if n == s.name_any() => Some(st.clone()),
                    _ => self.written.effective(&s),
                };
                let desired = if s.spec.is_managed() {
                    self.memo
                        .hash(&s, sources, &snapshot.derived, snapshot.version)
                        .ok()
                } else {
                    None
                };
                member_state(
                    &s,
                    status.as_ref(),
                    desired.as_deref(),
                    generation,
                    min_ready,
                )
            })
            .collect()
    }

    fn sources<'a>(&'a self, ctx: &'a Context) -> Sources<'a> {
        Sources {
            clusters: &self.stores.clusters,
            images: &self.stores.images,
            settings: &ctx.settings,
        }
    }

    /// The rollout plan of `cluster`.
    pub fn plan(&self, ctx: &Context, cluster: &Cluster) -> Plan {
        let key = key_of(cluster);
        rollout::plan(
            &policy(Some(cluster)),
            &self.members(ctx, &key, Some(cluster), None),
        )
    }
}

/// The rollout policy of a Cluster (defaults when it has none).
pub fn policy(cluster: Option<&Cluster>) -> RolloutSpec {
    cluster
        .and_then(|c| c.spec.rollout.clone())
        .unwrap_or_default()
}

/// Reads SSH and registry credentials from Secrets.
struct SecretCredentials<'a> {
    client: &'a Client,
    cache: &'a SecretCache,
}

#[async_trait::async_trait]
impl Credentials for SecretCredentials<'_> {
    async fn target(&self, server: &Server) -> Result<Target, Blocked> {
        secret_target(server, self.client, self.cache).await
    }
    async fn registry(&self, desired: &Desired) -> Result<RegistryAuth, Blocked> {
        registry_auth(desired, self.client, self.cache).await
    }
}

/// Reconciles one Server (with the finalizer helper).
pub async fn reconcile(
    server: Arc<Server>,
    ctx: Arc<Context>,
    state: Arc<ServerState>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<Server> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let uid = server.metadata.uid.clone().unwrap_or_default();
    let adding = server.metadata.deletion_timestamp.is_none()
        && !server.finalizers().iter().any(|f| f == FINALIZER);
    if let Ok(mut set) = state.finalizing.lock() {
        if !adding {
            set.remove(&uid);
        } else if set.contains(&uid) {
            // The finalizer is on its way: its watch event reconciles again
            // (the requeue only guards against a lost event).
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ctx, &state).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx, &state).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if adding
        && result.is_ok()
        && let Ok(mut set) = state.finalizing.lock()
    {
        set.insert(uid);
    }
    ctx.metrics.reconciled("server", started.elapsed());
    if let Err(e) = &result {
        ctx.metrics.error("server", e.category());
    }
    result
}

async fn apply(server: &Server, ctx: &Context, state: &ServerState) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let current = state.written.effective(server);
    let cluster = state.cluster(server);
    let policy = policy(cluster.as_deref());
    let min_ready = Duration::from_secs(u64::from(policy.min_ready_seconds));

    if !server.spec.is_managed() {
        let mut st = current.clone().unwrap_or_default();
        st.observed_generation = generation;
        outcome::apply(&mut st, &Outcome::External, generation, min_ready);
        write(server, ctx, state, current.as_ref(), st, &Outcome::External).await?;
        return Ok(Action::await_change());
    }

    let cluster_key = cluster_key_of(server);
    let snapshot = state.fleet.snapshot(&cluster_key);
    let desired = state.memo.resolve(
        server,
        state.sources(ctx),
        &snapshot.derived,
        snapshot.version,
    );
    let me = server.name_any();
    let plan = |st: &ServerStatus| {
        // Most decisions need only this Server's own state; only an update
        // needs every member's (budgets, order, failures).
        let mine = member_state(
            server,
            Some(st),
            state
                .memo
                .hash(
                    server,
                    state.sources(ctx),
                    &snapshot.derived,
                    snapshot.version,
                )
                .ok()
                .as_deref(),
            cluster.as_ref().and_then(|c| c.metadata.generation),
            min_ready,
        );
        if let Some(d) = rollout::own_decision(&mine) {
            return d;
        }
        let members = state.members(ctx, &cluster_key, cluster.as_deref(), Some((&me, st)));
        rollout::plan(&policy, &members).decision(&me)
    };
    let retry_token = server.annotations().get(RETRY_ANNOTATION).cloned();
    let inputs = Inputs {
        server,
        desired: desired.as_ref(),
        policy: &policy,
        cluster_generation: cluster.as_ref().and_then(|c| c.metadata.generation),
        retry_token: retry_token.as_deref(),
        drift_interval: ctx.settings.drift_interval,
        backoff: ctx.settings.backoff,
        now: Timestamp::now(),
        plan: &plan,
        settling: snapshot.settling,
    };
    let credentials = SecretCredentials {
        client: &ctx.client,
        cache: &state.secrets,
    };
    let st = current.clone().unwrap_or_default();
    let mut step = step::step(&inputs, st, state.runner.as_ref(), &credentials).await;
    outcome::apply(&mut step.status, &step.outcome, generation, min_ready);
    let key = key_of(server);
    let requeue = match &step.outcome {
        // Blocked again and again: back off in memory (nothing to record).
        Outcome::Blocked(b) => {
            let n = state.blocked.bump(&key);
            let wait = ctx.settings.backoff.delay(n);
            Some(if b.stalled {
                wait
            } else {
                wait.min(Duration::from_secs(10))
            })
        }
        _ => {
            state.blocked.clear(&key);
            step.requeue
        }
    };
    for note in &step.notes {
        match note {
            Note::Started(p) => ctx.metrics.run(p.as_str(), "started"),
            Note::Finished(p, s) => ctx.metrics.run(p.as_str(), s.as_str()),
            Note::DriftDetected(m) => {
                publish(
                    &ctx.recorder,
                    server,
                    EventType::Warning,
                    reason::DRIFT_DETECTED,
                    "CheckDrift",
                    m.clone(),
                )
                .await
            }
            Note::RunLost(id) => {
                publish(
                    &ctx.recorder,
                    server,
                    EventType::Warning,
                    reason::RUN_LOST,
                    "Provision",
                    format!("run {id} lost by the runner"),
                )
                .await
            }
        }
    }
    write(
        server,
        ctx,
        state,
        current.as_ref(),
        step.status,
        &step.outcome,
    )
    .await?;
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Writes `new` when it differs from `current`, remembers it, and publishes
/// an Event when the `Ready` reason changed.
async fn write(
    server: &Server,
    ctx: &Context,
    state: &ServerState,
    current: Option<&ServerStatus>,
    new: ServerStatus,
    outcome: &Outcome,
) -> Result<(), Error> {
    let Some(patch) = crate::controller::patch::status_patch(current, &new) else {
        return Ok(());
    };
    let ns = server.namespace().unwrap_or_default();
    let api: Api<Server> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &server.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::UpdateStatus {
        what: format!("{ns}/{}", server.name_any()),
        source,
    })?;
    let ready = |st: Option<&ServerStatus>| {
        st.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| (c.status, c.reason.clone(), c.message.clone()))
    };
    let before = ready(current);
    let after = ready(Some(&new));
    state.written.record(server, new);
    // Events when Ready changes to something worth telling: provisioned
    // (Normal), or a failure (Warning). Progress in between (provisioning,
    // waiting for the rollout, containers starting) is in the conditions;
    // an Event for each step would cost a request per step per Server.
    if let Some((status, why, message)) = after
        && before.as_ref().map(|b| &b.1) != Some(&why)
    {
        let warning = matches!(
            outcome,
            Outcome::Failed { .. }
                | Outcome::Current(Availability::NotReady { .. })
                | Outcome::Repairing { .. }
                | Outcome::DeprovisionFailed(_)
        ) || matches!(outcome, Outcome::Blocked(b) if b.stalled);
        let provisioned = status == ConditionStatus::True && why == reason::PROVISIONED;
        if warning || provisioned {
            let (kind, action) = if warning {
                (EventType::Warning, "Reconcile")
            } else {
                (EventType::Normal, "Provision")
            };
            // Repeats of an event within minutes are one Event with a series
            // (see `publish`); the note says what the condition says.
            publish(&ctx.recorder, server, kind, &why, action, message).await;
        }
    }
    Ok(())
}

async fn cleanup(server: &Server, ctx: &Context, state: &ServerState) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let current = state.written.effective(server);
    let mut st = current.clone().unwrap_or_default();
    let min_ready = Duration::from_secs(u64::from(
        policy(state.cluster(server).as_deref()).min_ready_seconds,
    ));
    let force = server
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let touched = st.applied_hash.is_some() || st.run.is_some() || !st.containers.is_empty();
    let done = |state: &ServerState| {
        state.memo.forget(&key_of(server));
        state.written.forget(server);
        state.blocked.clear(&key_of(server));
        Ok(Action::await_change())
    };
    if !server.spec.is_managed() || force || !touched {
        return done(state);
    }
    let pending = || Err(Error::Pending("deprovisioning".into()));
    let deprovision_run = |st: &ServerStatus| {
        st.run
            .as_ref()
            .filter(|r| r.playbook == Playbook::Deprovision)
            .cloned()
    };

    // A run in flight (provision or deprovision): follow it to its end.
    if let Some(mut run) = st.run.clone().filter(RunStatus::in_flight) {
        let handle = RunHandle {
            id: run.id.clone(),
            runner: run.runner.clone().unwrap_or_default(),
        };
        match state.runner.status(&handle).await {
            Ok(Some(report)) => {
                run.state = report.state;
                run.tasks_done = report.tasks_done;
                run.tasks_total = report.tasks_total;
                run.failed_task = report.failed_task.clone();
                run.message = report.message.clone();
                run.completion_time = report.finished.clone();
            }
            Ok(None) => {
                run.state = RunState::Failed;
                run.completion_time = Some(crate::crd::now_rfc3339());
                run.message = Some("the playbook runner lost this run".into());
            }
            Err(e) => {
                tracing::warn!(server = %key_of(server), error = %e, "cannot poll a run during deletion");
                return pending();
            }
        }
        let finished = !run.in_flight();
        let is_deprovision = run.playbook == Playbook::Deprovision;
        let failed = finished && run.state != RunState::Succeeded;
        st.run = Some(run.clone());
        let outcome = if !finished {
            Outcome::Running {
                playbook: run.playbook,
                id: run.id.clone(),
            }
        } else if is_deprovision && failed {
            st.failures = st.failures.saturating_add(1);
            let wait = ctx.settings.backoff.delay(st.failures);
            st.next_retry_time = Some(
                Timestamp::now()
                    .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                    .unwrap_or(Timestamp::now())
                    .round(jiff::Unit::Second)
                    .unwrap_or(Timestamp::now())
                    .to_string(),
            );
            Outcome::DeprovisionFailed(format!(
                "run {} failed: {}",
                run.id,
                run.message.clone().unwrap_or_default()
            ))
        } else if is_deprovision {
            st.containers.clear();
            st.applied_hash = None;
            st.containers_observed_time = None;
            Outcome::Running {
                playbook: Playbook::Deprovision,
                id: run.id.clone(),
            }
        } else {
            // A provision run ended: deprovision next.
            Outcome::Running {
                playbook: Playbook::Deprovision,
                id: String::new(),
            }
        };
        st.observed_generation = generation;
        outcome::apply(&mut st, &outcome, generation, min_ready);
        write(server, ctx, state, current.as_ref(), st, &outcome).await?;
        return pending();
    }
    if let Some(run) = deprovision_run(&st) {
        if run.state == RunState::Succeeded && st.applied_hash.is_none() {
            publish(
                &ctx.recorder,
                server,
                EventType::Normal,
                "Deprovisioned",
                "Deprovision",
                "containers and files removed".into(),
            )
            .await;
            return done(state);
        }
        let retry_at = st
            .next_retry_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if retry_at.is_some_and(|u| u > Timestamp::now()) {
            return pending();
        }
    }
    let target = match secret_target(server, &ctx.client, &state.secrets).await {
        Ok(t) => t,
        Err(b) => {
            let msg = format!(
                "cannot deprovision: {}; annotate {FORCE_DELETE_ANNOTATION}=true to remove the Server without deprovisioning",
                b.message
            );
            let outcome = Outcome::DeprovisionFailed(msg);
            outcome::apply(&mut st, &outcome, generation, min_ready);
            write(server, ctx, state, current.as_ref(), st, &outcome).await?;
            state.blocked.bump(&key_of(server));
            return pending();
        }
    };
    let mut roles: Vec<String> = server.spec.roles.iter().map(|r| r.to_string()).collect();
    for c in &st.containers {
        if !roles.contains(&c.role) {
            roles.push(c.role.clone());
        }
    }
    roles.sort();
    roles.dedup();
    let attempt = st.failures;
    let request = RunRequest {
        playbook: Playbook::Deprovision,
        target,
        vars: step::vars(server, None, &roles),
        idempotency_key: Some(format!(
            "{}/deprovision/{attempt}",
            server.uid().unwrap_or_default()
        )),
        timeout_seconds: None,
    };
    let handle = match state.runner.start(&request).await {
        Ok(h) => h,
        Err(e) => {
            let outcome =
                Outcome::DeprovisionFailed(format!("failed to start the deprovision run: {e}"));
            outcome::apply(&mut st, &outcome, generation, min_ready);
            write(server, ctx, state, current.as_ref(), st, &outcome).await?;
            state.blocked.bump(&key_of(server));
            return pending();
        }
    };
    ctx.metrics.run("deprovision", "started");
    let id = handle.id.clone();
    st.run = Some(RunStatus {
        id: handle.id,
        runner: Some(handle.runner),
        playbook: Playbook::Deprovision,
        hash: None,
        state: RunState::Queued,
        start_time: Some(crate::crd::now_rfc3339()),
        completion_time: None,
        tasks_done: 0,
        tasks_total: 0,
        failed_task: None,
        message: None,
    });
    let outcome = Outcome::Running {
        playbook: Playbook::Deprovision,
        id,
    };
    outcome::apply(&mut st, &outcome, generation, min_ready);
    write(server, ctx, state, current.as_ref(), st, &outcome).await?;
    pending()
}

/// A Secret the Server needs, or why the Server is blocked (`what` names it
/// in the message: `Secret`, `registry Secret`).
async fn read_secret(
    client: &Client,
    cache: &SecretCache,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<Arc<Secret>, Blocked> {
    cache
        .get(client, ns, name)
        .await
        .map_err(|e| {
            Blocked::new(
                reason::SECRET_NOT_FOUND,
                format!("failed to read Secret {ns}/{name}: {e}"),
                false,
            )
        })?
        .ok_or_else(|| {
            Blocked::new(
                reason::SECRET_NOT_FOUND,
                format!("{what} {ns}/{name} not found"),
                true,
            )
        })
}

async fn secret_target(
    server: &Server,
    client: &Client,
    cache: &SecretCache,
) -> Result<Target, Blocked> {
    let ns = server.namespace().unwrap_or_default();
    let Some(ssh) = server.spec.ssh.as_ref() else {
        return Err(Blocked::new(
            reason::SECRET_NOT_FOUND,
            "spec.ssh is not set",
            true,
        ));
    };
    let name = &ssh.secret_ref.name;
    let secret = read_secret(client, cache, &ns, name, "Secret").await?;
    server.spec.ssh_target(&secret).map_err(|e| {
        Blocked::new(
            reason::SECRET_NOT_FOUND,
            match e {
                SshTargetError::NoSsh => e.to_string(),
                SshTargetError::MissingKey(_) => format!("Secret {ns}/{name} {e}"),
            },
            true,
        )
    })
}

async fn registry_auth(
    desired: &Desired,
    client: &Client,
    cache: &SecretCache,
) -> Result<RegistryAuth, Blocked> {
    let mut auth = RegistryAuth {
        address: desired.registry.clone(),
        insecure: desired.insecure,
        username: None,
        password: None,
    };
    let Some(secret_ref) = desired
        .cluster
        .spec
        .registry
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref())
    else {
        return Ok(auth);
    };
    let ns = desired.cluster.namespace().unwrap_or_default();
    let name = &secret_ref.name;
    let secret = read_secret(client, cache, &ns, name, "registry Secret").await?;
    let data = secret.data.clone().unwrap_or_default();
    auth.username = data
        .get("username")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    auth.password = data
        .get("password")
        .map(|b| Sensitive::new(String::from_utf8_lossy(&b.0).into_owned()));
    Ok(auth)
}
