//! The Server reconciler (DESIGN.md §4): resolve the Cluster, Images and
//! Secret, compute the effective configuration, compare hashes, start or poll
//! runs on the playbook runner, record progress and conditions; on deletion,
//! deprovision (finalizer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::decide::{Next, Situation, decide, in_flight};
pub use super::provisioner::{ProvisionError, Provisioner, RunHandle};
use crate::config::{self, EffectiveConfig};
use crate::controller::conditions::{
    DRIFTED, PROVISIONED, READY, RECONCILING, STALLED, mark_settled, mark_unsettled, reason,
};
use crate::controller::{Context, Error, publish, write_status};
use crate::crd::{
    Cluster, Condition, ConditionStatus, ContainerStatus, Image, Role, RunStatus, Server,
    ServerStatus, set_condition,
};
use crate::image_ref::ImageReference;
use crate::runner::api::{
    Playbook, ProvisionVars, RegistryAuth, RoleSpec, RunRequest, RunState, Secret as Sensitive,
    Target,
};

/// Finalizer: the Server's containers and files are removed before it goes.
pub const FINALIZER: &str = "servermanager.contrail.io/deprovision";
/// Annotation: set to a new value to retry at once, skipping the backoff.
pub const RETRY_ANNOTATION: &str = "servermanager.contrail.io/retry";
/// Annotation: `"true"` removes the finalizer without deprovisioning.
pub const FORCE_DELETE_ANNOTATION: &str = "servermanager.contrail.io/force-delete";
/// How often a run in flight is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

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

/// At most `rollout.maxParallel` Servers of a Cluster provisioning at once.
/// Runs in flight are known from status (survives restarts); reservations
/// cover the moment between starting a run and seeing its status.
#[derive(Default)]
pub struct RolloutGate {
    reserved: Mutex<HashMap<String, HashSet<String>>>,
}

impl RolloutGate {
    /// Takes a slot of `cluster` for `server` if one is free.
    pub fn try_acquire(
        &self,
        cluster: &str,
        server: &str,
        max: usize,
        in_flight: &[String],
    ) -> bool {
        let Ok(mut map) = self.reserved.lock() else {
            return false;
        };
        let set = map.entry(cluster.to_string()).or_default();
        if set.contains(server) || in_flight.iter().any(|s| s == server) {
            set.insert(server.to_string());
            return true;
        }
        let busy: HashSet<&str> = set
            .iter()
            .map(String::as_str)
            .chain(in_flight.iter().map(String::as_str))
            .collect();
        if busy.len() < max {
            set.insert(server.to_string());
            true
        } else {
            false
        }
    }

    /// Gives `server`'s slot back.
    pub fn release(&self, cluster: &str, server: &str) {
        if let Ok(mut map) = self.reserved.lock()
            && let Some(set) = map.get_mut(cluster)
        {
            set.remove(server);
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

/// Server controller state beyond the shared Context.
pub struct ServerState {
    /// The runner.
    pub runner: Arc<dyn Provisioner>,
    /// Caches.
    pub stores: Stores,
    /// Rollout slots.
    pub rollout: RolloutGate,
    /// Blocked-attempt counts.
    pub blocked: BlockedCounts,
}

/// Why a Server cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Condition reason.
    pub reason: &'static str,
    /// Explanation.
    pub message: String,
    /// Only an outside change can help (kstatus `Stalled`).
    pub stalled: bool,
}

impl Blocked {
    fn new(reason: &'static str, message: impl Into<String>, stalled: bool) -> Self {
        Blocked {
            reason,
            message: message.into(),
            stalled,
        }
    }
}

/// Everything a provisioning run needs, except credentials.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The Cluster.
    pub cluster: Arc<Cluster>,
    /// Role files.
    pub config: EffectiveConfig,
    /// Per role: (image reference, digest).
    pub images: BTreeMap<Role, (String, Option<String>)>,
    /// Registry the host pulls from.
    pub registry: String,
    /// Whether it is plain HTTP.
    pub insecure: bool,
    /// Hash of all of it.
    pub hash: String,
}

/// Resolves the Cluster and Images of `server` and computes its desired state
/// from the caches (no API request).
pub fn desired(server: &Server, stores: &Stores, ctx: &Context) -> Result<Desired, Blocked> {
    let ns = server.namespace().unwrap_or_default();
    let cluster_name = &server.spec.cluster_ref.name;
    let cluster = stores
        .clusters
        .get(&ObjectRef::new(cluster_name).within(&ns))
        .ok_or_else(|| {
            Blocked::new(
                reason::CLUSTER_NOT_FOUND,
                format!("Cluster {ns}/{cluster_name} not found"),
                true,
            )
        })?;
    let (registry, insecure) = match &cluster.spec.registry {
        Some(r) => (r.address.clone(), r.insecure),
        None => (
            ctx.settings.registry.address.clone(),
            ctx.settings.registry.insecure,
        ),
    };
    let mut images = BTreeMap::new();
    let mut roles = server.spec.roles.clone();
    roles.sort();
    roles.dedup();
    for role in &roles {
        let name = server
            .spec
            .images
            .get(role.as_str())
            .or_else(|| cluster.spec.images.get(role.as_str()))
            .ok_or_else(|| {
                Blocked::new(
                    reason::NO_IMAGE_FOR_ROLE,
                    format!("no Image for role {role}: set spec.images.{role} in the Server or Cluster {cluster_name}"),
                    true,
                )
            })?;
        let image = stores
            .images
            .get(&ObjectRef::new(name).within(&ns))
            .ok_or_else(|| {
                Blocked::new(
                    reason::IMAGE_NOT_FOUND,
                    format!("Image {ns}/{name} (role {role}) not found"),
                    true,
                )
            })?;
        if image.spec.image_type != *role {
            return Err(Blocked::new(
                reason::IMAGE_NOT_FOUND,
                format!(
                    "Image {name} is for role {}, not {role}",
                    image.spec.image_type
                ),
                true,
            ));
        }
        if !crate::controller::image::is_done(&image) {
            // An Image that cannot be pushed without a change (a bad
            // tarball) stalls its Servers too, so kstatus readers (Flux's
            // wait, Argo CD) report failure instead of waiting forever; the
            // Image's next change wakes the Server (it watches Images).
            return Err(match crate::controller::image::stalled(&image) {
                Some(why) => Blocked::new(
                    reason::IMAGE_NOT_READY,
                    format!("Image {name} (role {role}) cannot be pushed: {why}"),
                    true,
                ),
                None => Blocked::new(
                    reason::IMAGE_NOT_READY,
                    format!("Image {name} (role {role}) is not pushed yet"),
                    false,
                ),
            });
        }
        let reference =
            ImageReference::new(&registry, &image.spec.image_id, *role, &image.spec.version)
                .map_err(|e| Blocked::new(reason::IMAGE_NOT_FOUND, e.to_string(), true))?;
        let digest = image.status.as_ref().and_then(|s| s.digest.clone());
        images.insert(*role, (reference.to_string(), digest));
    }
    // Borrow the cached Servers: cloning every sibling on every reconcile made
    // the work grow with the square of the cluster's size.
    let servers = stores.servers.state();
    let config = config::for_server(&cluster, servers.iter().map(|s| s.as_ref()), server)
        .map_err(|e| Blocked::new(reason::INVALID_CONFIGURATION, e.to_string(), true))?;
    let mut h = Sha256::new();
    h.update(config.hash.as_bytes());
    for (role, (reference, digest)) in &images {
        h.update(format!("\0{role}\0{reference}\0{}", digest.as_deref().unwrap_or("")).as_bytes());
    }
    let layout = server.spec.layout();
    // The runner refuses these too; judged here, a Server created before
    // admission checked them is Stalled instead of retried forever.
    for (field, dir) in [
        ("configDir", &layout.config_dir),
        ("logDir", &layout.log_dir),
        ("dataDir", &layout.data_dir),
    ] {
        if let Some(why) = crate::validation::host_directory_error(dir) {
            return Err(Blocked::new(
                reason::INVALID_LAYOUT,
                format!("spec.layout.{field} {dir:?}: {why}"),
                true,
            ));
        }
    }
    let ssh = server.spec.ssh.as_ref();
    h.update(
        format!(
            "\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            ctx.settings.playbook_version,
            server.spec.host,
            ssh.map(|s| s.port).unwrap_or(22),
            ssh.map(|s| s.user.as_str()).unwrap_or(""),
            layout.config_dir,
            layout.log_dir,
            layout.data_dir,
            layout.container_prefix,
            insecure
        )
        .as_bytes(),
    );
    Ok(Desired {
        cluster,
        config,
        images,
        registry,
        insecure,
        hash: format!("sha256:{}", hex::encode(h.finalize())),
    })
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
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ctx, &state).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx, &state).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled("server", started.elapsed());
    if let Err(e) = &result {
        ctx.metrics.error("server", e.category());
    }
    result
}

fn key(server: &Server) -> String {
    format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    )
}

fn cluster_key(server: &Server) -> String {
    format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.spec.cluster_ref.name
    )
}

/// Names of the Servers of `server`'s cluster with a provision or deprovision
/// run in flight, per their status.
fn in_flight_siblings(server: &Server, stores: &Stores) -> Vec<String> {
    stores
        .servers
        .state()
        .iter()
        .filter(|s| {
            s.namespace() == server.namespace()
                && s.spec.cluster_ref.name == server.spec.cluster_ref.name
        })
        .filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.run.as_ref())
                .is_some_and(|r| in_flight(r) && r.playbook != "check")
        })
        .map(|s| s.name_any())
        .collect()
}

async fn apply(server: &Server, ctx: &Context, state: &ServerState) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let current = server.status.clone();
    let mut st = current.clone().unwrap_or_default();
    st.observed_generation = generation;

    if !server.spec.is_managed() {
        let msg = "External server: counted for derived parameters, never provisioned";
        set_condition(
            &mut st.conditions,
            Condition::new(
                READY,
                ConditionStatus::True,
                reason::EXTERNAL,
                msg,
                generation,
            ),
        );
        set_condition(
            &mut st.conditions,
            Condition::new(
                RECONCILING,
                ConditionStatus::False,
                reason::EXTERNAL,
                "",
                generation,
            ),
        );
        set_condition(
            &mut st.conditions,
            Condition::new(
                STALLED,
                ConditionStatus::False,
                reason::EXTERNAL,
                "",
                generation,
            ),
        );
        write_status(&ctx.client, server, current.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }

    let poll_first = st.run.as_ref().is_some_and(in_flight);
    if server.spec.suspend && !poll_first {
        set_condition(
            &mut st.conditions,
            Condition::new(
                RECONCILING,
                ConditionStatus::False,
                reason::SUSPENDED,
                "spec.suspend is true",
                generation,
            ),
        );
        write_status(&ctx.client, server, current.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }

    let desired = match desired(server, &state.stores, ctx) {
        Ok(d) => d,
        Err(blocked) if !poll_first => return block(server, ctx, state, st, blocked).await,
        // A run is in flight for an older state: follow it to its end first.
        Err(_) => return poll(server, ctx, state, st, None).await,
    };
    let retry_token = server.annotations().get(RETRY_ANNOTATION).cloned();
    let retry_now = retry_token.is_some() && retry_token != st.retry_token;
    let next = decide(
        &st,
        Situation {
            desired: &desired.hash,
            now: Timestamp::now(),
            retry_now,
            drift_interval: ctx.settings.drift_interval,
        },
    );
    match next {
        Next::Poll { .. } => poll(server, ctx, state, st, Some(&desired)).await,
        Next::Idle => {
            state.blocked.clear(&key(server));
            steady(&mut st, generation);
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            Ok(match ctx.settings.drift_interval {
                Some(d) => Action::requeue(d),
                None => Action::await_change(),
            })
        }
        Next::Backoff { until } => {
            let wait = until.duration_since(Timestamp::now()).unsigned_abs();
            Ok(Action::requeue(wait.max(Duration::from_secs(1))))
        }
        Next::CheckDrift => start(server, ctx, state, st, &desired, Playbook::Check, None).await,
        Next::Provision => {
            start(
                server,
                ctx,
                state,
                st,
                &desired,
                Playbook::Provision,
                retry_token,
            )
            .await
        }
    }
}

/// Conditions of a Server whose applied hash is the desired one.
fn steady(st: &mut ServerStatus, generation: Option<i64>) {
    set_condition(
        &mut st.conditions,
        Condition::new(
            READY,
            ConditionStatus::True,
            reason::PROVISIONED,
            "containers provisioned",
            generation,
        ),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            PROVISIONED,
            ConditionStatus::True,
            reason::PROVISIONED,
            "",
            generation,
        ),
    );
    mark_settled(&mut st.conditions, generation);
    st.progress = None;
    st.failures = 0;
    st.next_retry_time = None;
}

async fn block(
    server: &Server,
    ctx: &Context,
    state: &ServerState,
    mut st: ServerStatus,
    b: Blocked,
) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let attempts = state.blocked.bump(&key(server));
    // Waiting on something in progress (an Image being pushed) is retried
    // soon; only what needs an outside change backs off to the cap.
    let wait = if b.stalled {
        ctx.settings.backoff.delay(attempts)
    } else {
        ctx.settings
            .backoff
            .delay(attempts)
            .min(Duration::from_secs(10))
    };
    let was = st
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone());
    set_condition(
        &mut st.conditions,
        Condition::new(
            READY,
            ConditionStatus::False,
            b.reason,
            b.message.clone(),
            generation,
        ),
    );
    mark_unsettled(
        &mut st.conditions,
        b.stalled,
        (b.reason, b.message.clone()),
        (b.reason, b.message.clone()),
        generation,
    );
    let current = server.status.clone();
    write_status(&ctx.client, server, current.as_ref(), &st).await?;
    if was.as_deref() != Some(b.reason) {
        let kind = if b.stalled {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(&ctx.recorder, server, kind, b.reason, "Resolve", b.message).await;
    }
    Ok(Action::requeue(wait))
}

async fn secret_target(server: &Server, ctx: &Context) -> Result<Target, Blocked> {
    let ns = server.namespace().unwrap_or_default();
    let Some(ssh) = server.spec.ssh.as_ref() else {
        return Err(Blocked::new(
            reason::SECRET_NOT_FOUND,
            "spec.ssh is not set",
            true,
        ));
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = &ssh.secret_ref.name;
    let secret = api
        .get_opt(name)
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
                format!("Secret {ns}/{name} not found"),
                true,
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| {
                Blocked::new(
                    reason::SECRET_NOT_FOUND,
                    format!("Secret {ns}/{name} has no key {k}"),
                    true,
                )
            })
    };
    Ok(Target {
        host: server.spec.host.clone(),
        port: ssh.port,
        user: ssh.user.clone(),
        private_key: Sensitive::new(field("ssh-privatekey")?),
        known_hosts: field("known_hosts")?,
    })
}

async fn registry_auth(desired: &Desired, ctx: &Context) -> Result<RegistryAuth, Blocked> {
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
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = &secret_ref.name;
    let secret = api
        .get_opt(name)
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
                format!("registry Secret {ns}/{name} not found"),
                true,
            )
        })?;
    let data = secret.data.unwrap_or_default();
    auth.username = data
        .get("username")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    auth.password = data
        .get("password")
        .map(|b| Sensitive::new(String::from_utf8_lossy(&b.0).into_owned()));
    Ok(auth)
}

fn vars(server: &Server, desired: Option<&Desired>, roles: &[String]) -> ProvisionVars {
    let layout = server.spec.layout();
    let role_specs = roles
        .iter()
        .map(|name| {
            let role = Role::parse(name);
            let config = desired
                .and_then(|d| d.config.roles.iter().find(|r| Some(r.role) == role))
                .map(|r| r.content.clone())
                .unwrap_or_default();
            let image = desired
                .zip(role)
                .and_then(|(d, r)| d.images.get(&r))
                .map(|(reference, _)| reference.clone())
                .unwrap_or_default();
            RoleSpec {
                name: name.clone(),
                config,
                image,
            }
        })
        .collect();
    ProvisionVars {
        config_dir: layout.config_dir,
        log_dir: layout.log_dir,
        data_dir: layout.data_dir,
        container_prefix: layout.container_prefix,
        registry: None,
        roles: role_specs,
    }
}

#[allow(clippy::too_many_arguments)]
async fn start(
    server: &Server,
    ctx: &Context,
    state: &ServerState,
    mut st: ServerStatus,
    desired: &Desired,
    playbook: Playbook,
    retry_token: Option<String>,
) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let cluster = cluster_key(server);
    let name = server.name_any();
    let current = server.status.clone();
    let provisioning = playbook != Playbook::Check;
    if provisioning {
        let max = desired
            .cluster
            .spec
            .rollout
            .as_ref()
            .map(|r| r.max_parallel)
            .unwrap_or(1)
            .max(1) as usize;
        let busy = in_flight_siblings(server, &state.stores);
        if !state.rollout.try_acquire(&cluster, &name, max, &busy) {
            let msg =
                format!("waiting for a rollout slot ({max} Server(s) of the cluster at a time)");
            set_condition(
                &mut st.conditions,
                Condition::new(
                    RECONCILING,
                    ConditionStatus::True,
                    reason::WAITING_FOR_ROLLOUT,
                    msg,
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            return Ok(Action::requeue(Duration::from_secs(3)));
        }
    }
    let target = match secret_target(server, ctx).await {
        Ok(t) => t,
        Err(b) => {
            state.rollout.release(&cluster, &name);
            return block(server, ctx, state, st, b).await;
        }
    };
    let mut role_names: Vec<String> = desired
        .config
        .roles
        .iter()
        .map(|r| r.role.to_string())
        .collect();
    role_names.sort();
    let mut vars = vars(server, Some(desired), &role_names);
    vars.registry = match registry_auth(desired, ctx).await {
        Ok(a) => Some(a),
        Err(b) => {
            state.rollout.release(&cluster, &name);
            return block(server, ctx, state, st, b).await;
        }
    };
    let short = desired
        .hash
        .trim_start_matches("sha256:")
        .get(..16)
        .unwrap_or("");
    let request = RunRequest {
        playbook,
        target,
        vars,
        idempotency_key: Some(format!(
            "{}/{}/{short}",
            server.uid().unwrap_or_default(),
            playbook.as_str()
        )),
        timeout_seconds: None,
    };
    let handle = match state.runner.start(&request).await {
        Ok(h) => h,
        Err(e) => {
            state.rollout.release(&cluster, &name);
            let b = match e {
                ProvisionError::Rejected(m) => Blocked::new(
                    reason::RUN_REJECTED,
                    format!("the playbook runner refused the run: {m}"),
                    true,
                ),
                ProvisionError::Unavailable(m) => Blocked::new(
                    reason::RUNNER_UNAVAILABLE,
                    format!("failed to start a run: {m}"),
                    false,
                ),
            };
            return block(server, ctx, state, st, b).await;
        }
    };
    let id = handle.id.clone();
    state.blocked.clear(&key(server));
    ctx.metrics.run(playbook.as_str(), "started");
    st.run = Some(RunStatus {
        id: id.clone(),
        runner: Some(handle.runner),
        playbook: playbook.as_str().to_string(),
        hash: Some(desired.hash.clone()),
        state: "queued".into(),
        start_time: Some(crate::crd::now_rfc3339()),
        ..Default::default()
    });
    if retry_token.is_some() {
        st.retry_token = retry_token;
    }
    if provisioning {
        st.progress = Some("0/?".into());
        let msg = format!("run {id} applies configuration {}", &desired.hash);
        set_condition(
            &mut st.conditions,
            Condition::new(
                RECONCILING,
                ConditionStatus::True,
                reason::PROVISIONING,
                msg.clone(),
                generation,
            ),
        );
        set_condition(
            &mut st.conditions,
            Condition::new(
                READY,
                ConditionStatus::False,
                reason::PROVISIONING,
                msg,
                generation,
            ),
        );
        set_condition(
            &mut st.conditions,
            Condition::new(
                STALLED,
                ConditionStatus::False,
                reason::AS_EXPECTED,
                "",
                generation,
            ),
        );
    }
    write_status(&ctx.client, server, current.as_ref(), &st).await?;
    Ok(Action::requeue(POLL_INTERVAL))
}

async fn poll(
    server: &Server,
    ctx: &Context,
    state: &ServerState,
    mut st: ServerStatus,
    desired: Option<&Desired>,
) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let current = server.status.clone();
    let Some(mut run) = st.run.clone() else {
        return Ok(Action::requeue(POLL_INTERVAL));
    };
    let handle = RunHandle {
        id: run.id.clone(),
        runner: run.runner.clone().unwrap_or_default(),
    };
    let report = match state.runner.status(&handle).await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("failed to poll run {}: {e}", run.id);
            set_condition(
                &mut st.conditions,
                Condition::new(
                    RECONCILING,
                    ConditionStatus::True,
                    reason::RUNNER_UNAVAILABLE,
                    msg,
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            return Ok(Action::requeue(
                ctx.settings.backoff.delay(state.blocked.bump(&key(server))),
            ));
        }
    };
    let cluster = cluster_key(server);
    let name = server.name_any();
    let Some(report) = report else {
        // The runner lost the run (restart with lost data): redo it.
        run.state = "failed".into();
        run.completion_time = Some(crate::crd::now_rfc3339());
        run.message = Some("the playbook runner lost this run; it is started again".into());
        st.run = Some(run.clone());
        st.next_retry_time = None;
        st.progress = None;
        set_condition(
            &mut st.conditions,
            Condition::new(
                RECONCILING,
                ConditionStatus::True,
                reason::RUN_LOST,
                "run lost by the playbook runner; starting it again",
                generation,
            ),
        );
        write_status(&ctx.client, server, current.as_ref(), &st).await?;
        state.rollout.release(&cluster, &name);
        ctx.metrics.run(&run.playbook, "lost");
        publish(
            &ctx.recorder,
            server,
            EventType::Warning,
            reason::RUN_LOST,
            "Provision",
            format!("run {} lost by the runner", run.id),
        )
        .await;
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    run.state = report.state.as_str().to_string();
    run.tasks_done = report.tasks_done;
    run.tasks_total = report.tasks_total;
    run.failed_task = report.failed_task.clone();
    run.message = report.message.clone();
    if let Some(started) = &report.started {
        run.start_time = Some(started.clone());
    }
    run.completion_time = report.finished.clone();
    let check = run.playbook == "check";
    if !report.state.is_terminal() {
        if !check {
            st.progress = Some(format!("{}/{}", report.tasks_done, report.tasks_total));
        }
        st.run = Some(run);
        write_status(&ctx.client, server, current.as_ref(), &st).await?;
        return Ok(Action::requeue(POLL_INTERVAL));
    }
    st.run = Some(run.clone());
    if run.playbook != "check" {
        state.rollout.release(&cluster, &name);
    }
    ctx.metrics.run(&run.playbook, report.state.as_str());
    let succeeded = report.state == RunState::Succeeded;
    match (run.playbook.as_str(), succeeded) {
        ("check", true) => {
            if report.changed > 0 {
                let msg = format!(
                    "{} task(s) would change the host: repairing",
                    report.changed
                );
                set_condition(
                    &mut st.conditions,
                    Condition::new(
                        DRIFTED,
                        ConditionStatus::True,
                        reason::DRIFT_DETECTED,
                        msg.clone(),
                        generation,
                    ),
                );
                st.applied_hash = None;
                publish(
                    &ctx.recorder,
                    server,
                    EventType::Warning,
                    reason::DRIFT_DETECTED,
                    "CheckDrift",
                    msg,
                )
                .await;
            } else {
                set_condition(
                    &mut st.conditions,
                    Condition::new(
                        DRIFTED,
                        ConditionStatus::False,
                        reason::NO_DRIFT,
                        "",
                        generation,
                    ),
                );
            }
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        ("check", false) => {
            let msg = format!("drift check failed: {}", report.message.unwrap_or_default());
            set_condition(
                &mut st.conditions,
                Condition::new(
                    DRIFTED,
                    ConditionStatus::Unknown,
                    reason::PROVISIONING_FAILED,
                    msg,
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            Ok(Action::requeue(
                ctx.settings
                    .drift_interval
                    .unwrap_or(Duration::from_secs(600)),
            ))
        }
        ("provision", true) => {
            st.applied_hash = run.hash.clone();
            if let Some(d) = desired.filter(|d| Some(&d.hash) == run.hash.as_ref()) {
                st.containers = d
                    .config
                    .roles
                    .iter()
                    .map(|r| {
                        let (image, digest) = d.images.get(&r.role).cloned().unwrap_or_default();
                        ContainerStatus {
                            role: r.role.to_string(),
                            name: format!("{}{}", server.spec.layout().container_prefix, r.role),
                            image,
                            digest,
                            config_hash: r.hash.clone(),
                            state: "Running".into(),
                        }
                    })
                    .collect();
            }
            let was_drifted = st
                .conditions
                .iter()
                .any(|c| c.type_ == DRIFTED && c.status == ConditionStatus::True);
            if was_drifted {
                set_condition(
                    &mut st.conditions,
                    Condition::new(
                        DRIFTED,
                        ConditionStatus::False,
                        reason::NO_DRIFT,
                        "repaired",
                        generation,
                    ),
                );
            }
            steady(&mut st, generation);
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            // Repeats of this event within minutes are one Event with a
            // series (see `publish`), so the note says nothing run-specific;
            // status.run names the run.
            let note = "the host runs the Server's desired configuration".to_string();
            publish(
                &ctx.recorder,
                server,
                EventType::Normal,
                reason::PROVISIONED,
                "Provision",
                note,
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        ("deprovision", true) => {
            st.progress = None;
            st.containers.clear();
            st.applied_hash = None;
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        (playbook, _) => {
            let deprovision = playbook == "deprovision";
            st.failures = st.failures.saturating_add(1);
            let wait = ctx.settings.backoff.delay(st.failures);
            let until = Timestamp::now()
                .checked_add(
                    jiff::SignedDuration::try_from(wait)
                        .unwrap_or(jiff::SignedDuration::from_secs(300)),
                )
                .unwrap_or(Timestamp::now());
            st.next_retry_time = Some(until.round(jiff::Unit::Second).unwrap_or(until).to_string());
            st.progress = None;
            let task = report
                .failed_task
                .as_deref()
                .map(|t| format!("task {t:?} failed: "))
                .unwrap_or_default();
            let msg = format!(
                "run {} {}: {task}{}",
                run.id,
                report.state.as_str(),
                report.message.unwrap_or_default()
            );
            let r = if deprovision {
                reason::DEPROVISIONING_FAILED
            } else {
                reason::PROVISIONING_FAILED
            };
            set_condition(
                &mut st.conditions,
                Condition::new(READY, ConditionStatus::False, r, msg.clone(), generation),
            );
            set_condition(
                &mut st.conditions,
                Condition::new(
                    RECONCILING,
                    ConditionStatus::True,
                    reason::BACKING_OFF,
                    format!("retrying in {}s", wait.as_secs()),
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            publish(
                &ctx.recorder,
                server,
                EventType::Warning,
                r,
                "Provision",
                msg,
            )
            .await;
            Ok(Action::requeue(wait))
        }
    }
}

async fn cleanup(server: &Server, ctx: &Context, state: &ServerState) -> Result<Action, Error> {
    let generation = server.meta().generation;
    let current = server.status.clone();
    let mut st = current.clone().unwrap_or_default();
    let force = server
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let touched = st.applied_hash.is_some() || st.run.is_some() || !st.containers.is_empty();
    if !server.spec.is_managed() || force || !touched {
        state
            .rollout
            .release(&cluster_key(server), &server.name_any());
        return Ok(Action::await_change());
    }
    let pending = || Err(Error::Pending("deprovisioning".into()));
    if st.run.as_ref().is_some_and(in_flight) {
        poll(server, ctx, state, st, None).await?;
        return pending();
    }
    if let Some(run) = &st.run {
        if run.playbook == "deprovision" && run.state == "succeeded" {
            publish(
                &ctx.recorder,
                server,
                EventType::Normal,
                "Deprovisioned",
                "Deprovision",
                "containers and files removed".into(),
            )
            .await;
            return Ok(Action::await_change());
        }
        let retry_at = st
            .next_retry_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if retry_at.is_some_and(|u| run.playbook == "deprovision" && u > Timestamp::now()) {
            return pending();
        }
    }
    let target = match secret_target(server, ctx).await {
        Ok(t) => t,
        Err(b) => {
            let msg = format!(
                "cannot deprovision: {}; annotate {FORCE_DELETE_ANNOTATION}=true to remove the Server without deprovisioning",
                b.message
            );
            set_condition(
                &mut st.conditions,
                Condition::new(
                    READY,
                    ConditionStatus::False,
                    reason::DEPROVISIONING_FAILED,
                    msg,
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            state.blocked.bump(&key(server));
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
    let request = RunRequest {
        playbook: Playbook::Deprovision,
        target,
        vars: vars(server, None, &roles),
        idempotency_key: Some(format!("{}/deprovision", server.uid().unwrap_or_default())),
        timeout_seconds: None,
    };
    let handle = match state.runner.start(&request).await {
        Ok(h) => h,
        Err(e) => {
            let msg = format!("failed to start the deprovision run: {e}");
            set_condition(
                &mut st.conditions,
                Condition::new(
                    READY,
                    ConditionStatus::False,
                    reason::RUNNER_UNAVAILABLE,
                    msg,
                    generation,
                ),
            );
            write_status(&ctx.client, server, current.as_ref(), &st).await?;
            state.blocked.bump(&key(server));
            return pending();
        }
    };
    ctx.metrics.run("deprovision", "started");
    st.run = Some(RunStatus {
        id: handle.id,
        runner: Some(handle.runner),
        playbook: "deprovision".into(),
        hash: None,
        state: "queued".into(),
        start_time: Some(crate::crd::now_rfc3339()),
        ..Default::default()
    });
    let msg = "removing containers and files";
    set_condition(
        &mut st.conditions,
        Condition::new(
            READY,
            ConditionStatus::False,
            reason::DEPROVISIONING,
            msg,
            generation,
        ),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            RECONCILING,
            ConditionStatus::True,
            reason::DEPROVISIONING,
            msg,
            generation,
        ),
    );
    write_status(&ctx.client, server, current.as_ref(), &st).await?;
    pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_gate_limits_per_cluster() {
        let g = RolloutGate::default();
        assert!(g.try_acquire("ns/lab", "a", 2, &[]));
        assert!(g.try_acquire("ns/lab", "a", 2, &[]));
        assert!(g.try_acquire("ns/lab", "b", 2, &[]));
        assert!(!g.try_acquire("ns/lab", "c", 2, &[]));
        assert!(g.try_acquire("ns/other", "c", 2, &[]));
        g.release("ns/lab", "a");
        assert!(g.try_acquire("ns/lab", "c", 2, &[]));
        // Runs in flight per status count even without a reservation (restart).
        let g = RolloutGate::default();
        assert!(!g.try_acquire("ns/lab", "x", 1, &["y".to_string()]));
        assert!(g.try_acquire("ns/lab", "y", 1, &["y".to_string()]));
    }
}
