//! One reconcile of a managed Server that is not being deleted, as a state
//! machine over its status: follow the run in flight, fold its result in,
//! then decide the next step — nothing, wait (backoff, the rollout, the
//! containers' `minReadySeconds`), or start a run (provision, drift check,
//! container inspection). The runner and the credentials are reached through
//! traits, so every transition is unit-tested with fakes; the caller writes
//! the status and publishes events.

use std::time::Duration;

use jiff::Timestamp;

use super::availability::{self, Availability, Expected};
use super::decide::Backoff;
use super::desired::{Blocked, Desired};
use super::outcome::{Outcome, short};
use super::provisioner::{ProvisionError, Provisioner, RunHandle};
use super::rollout::{Decision, MemberState};
use crate::controller::conditions::{DRIFTED, reason};
use crate::crd::{
    Condition, ConditionStatus, RolloutSpec, RunStatus, Server, ServerStatus, UpdateStatus,
    set_condition,
};
use crate::runner::api::{
    Playbook, ProvisionVars, RegistryAuth, RoleSpec, RunRequest, RunState, RunStatus as RunReport,
    Target,
};

/// How often a run in flight is polled, at most.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The first poll of a run: a short run (an inspection, an idempotent
/// provision) is seen finished soon; longer ones are polled less and less
/// often, up to [`POLL_INTERVAL`].
pub const FIRST_POLL: Duration = Duration::from_millis(250);

/// When to poll a run started at `started` again.
fn poll_after(started: Option<&str>, now: Timestamp) -> Duration {
    let elapsed = parse(started).map_or(Duration::ZERO, |t| until(t, now));
    (elapsed / 4).clamp(FIRST_POLL, POLL_INTERVAL)
}
/// How long an update waiting for the rollout sleeps before looking again
/// (the Cluster controller wakes it earlier when its turn comes).
pub const WAIT_INTERVAL: Duration = Duration::from_secs(10);

/// Where SSH and registry credentials come from (Secrets, in the operator).
#[async_trait::async_trait]
pub trait Credentials: Send + Sync {
    /// How to reach `server` over SSH.
    async fn target(&self, server: &Server) -> Result<Target, Blocked>;
    /// The registry the host pulls from, with its credentials.
    async fn registry(&self, desired: &Desired) -> Result<RegistryAuth, Blocked>;
}

/// What the step needs besides the Server and its status.
pub struct Inputs<'a> {
    /// The Server.
    pub server: &'a Server,
    /// Its desired state, or why there is none.
    pub desired: Result<&'a Desired, &'a Blocked>,
    /// The cluster's rollout policy.
    pub policy: &'a RolloutSpec,
    /// The Cluster's `metadata.generation`.
    pub cluster_generation: Option<i64>,
    /// The retry annotation's value.
    pub retry_token: Option<&'a str>,
    /// How often to check for drift.
    pub drift_interval: Option<Duration>,
    /// Backoff between failed attempts.
    pub backoff: Backoff,
    /// Now.
    pub now: Timestamp,
    /// The rollout planner's decision for this Server, given its status.
    pub plan: &'a (dyn Fn(&ServerStatus) -> Decision + Send + Sync),
    /// The cluster's membership changed a moment ago: how long until its
    /// derived values count as settled (no provisioning before).
    pub settling: Option<Duration>,
}

/// Something worth an Event besides a change of the `Ready` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A drift check found differences.
    DriftDetected(String),
    /// The runner lost a run.
    RunLost(String),
    /// A run started.
    Started(Playbook),
    /// A run ended.
    Finished(Playbook, RunState),
}

/// What the step decided.
#[derive(Debug, Clone)]
pub struct Step {
    /// The new status.
    pub status: ServerStatus,
    /// The outcome its conditions come from.
    pub outcome: Outcome,
    /// When to reconcile again (`None`: on the next change).
    pub requeue: Option<Duration>,
    /// Events beyond `Ready` transitions, and metrics.
    pub notes: Vec<Note>,
}

/// The planner's view of a Server from its status.
pub fn member_state(
    server: &Server,
    st: Option<&ServerStatus>,
    desired: Option<&str>,
    cluster_generation: Option<i64>,
    min_ready: Duration,
) -> MemberState {
    let st_default = ServerStatus::default();
    let st = st.unwrap_or(&st_default);
    let observed = st
        .containers_observed_time
        .as_deref()
        .and_then(|t| t.parse().ok());
    let failed = st.update.as_ref().is_some_and(|u| {
        u.failed_time.is_some()
            && Some(u.hash.as_str()) == desired
            && u.cluster_generation == cluster_generation
            && u.generation == server.metadata.generation
    });
    MemberState {
        name: server.metadata.name.clone().unwrap_or_default(),
        roles: server.spec.roles.clone(),
        managed: server.spec.is_managed(),
        deleting: server.metadata.deletion_timestamp.is_some(),
        suspended: server.spec.suspend,
        provisioned: st.applied_hash.is_some(),
        desired: desired.map(str::to_string),
        applied: st.applied_hash.clone(),
        available: availability::availability(&st.containers, observed, min_ready)
            == Availability::Available,
        in_flight: st
            .run
            .as_ref()
            .is_some_and(|r| r.in_flight() && r.playbook == Playbook::Provision),
        updating: st.update.as_ref().is_some_and(|u| u.failed_time.is_none()),
        failed,
    }
}

/// The containers `desired` declares.
pub fn expected(server: &Server, desired: &Desired) -> Vec<Expected> {
    let prefix = server.spec.layout().container_prefix;
    desired
        .config
        .roles
        .iter()
        .map(|r| {
            let (image, digest) = desired.images.get(&r.role).cloned().unwrap_or_default();
            Expected {
                role: r.role.to_string(),
                name: format!("{prefix}{}", r.role),
                image,
                digest,
                config_hash: r.hash.clone(),
            }
        })
        .collect()
}

/// The containers the status knows about, when the desired state is not the
/// one on the host (or not known): keep what was recorded, per role.
fn expected_from_status(server: &Server, st: &ServerStatus) -> Vec<Expected> {
    let prefix = server.spec.layout().container_prefix;
    let mut roles: Vec<String> = server.spec.roles.iter().map(|r| r.to_string()).collect();
    roles.sort();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| {
            let name = format!("{prefix}{role}");
            let known = st.containers.iter().find(|c| c.name == name);
            Expected {
                role,
                image: known.map(|c| c.image.clone()).unwrap_or_default(),
                digest: known.and_then(|c| c.digest.clone()),
                config_hash: known.map(|c| c.config_hash.clone()).unwrap_or_default(),
                name,
            }
        })
        .collect()
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

fn after(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add(signed(d)).unwrap_or(now)
}

fn stamp(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

fn parse(t: Option<&str>) -> Option<Timestamp> {
    t.and_then(|t| t.parse().ok())
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    if t <= now {
        Duration::ZERO
    } else {
        t.duration_since(now).unsigned_abs()
    }
}

/// Runs one step (see the module header).
pub async fn step(
    inputs: &Inputs<'_>,
    mut st: ServerStatus,
    runner: &dyn Provisioner,
    credentials: &dyn Credentials,
) -> Step {
    let server = inputs.server;
    let now = inputs.now;
    let min_ready = Duration::from_secs(u64::from(inputs.policy.min_ready_seconds));
    st.observed_generation = server.metadata.generation;
    let mut notes = Vec::new();

    // 1. Follow the run in flight.
    if let Some(mut run) = st.run.clone().filter(RunStatus::in_flight) {
        let handle = RunHandle {
            id: run.id.clone(),
            runner: run.runner.clone().unwrap_or_default(),
        };
        match runner.status(&handle).await {
            Err(e) => {
                let b = Blocked::new(
                    reason::RUNNER_UNAVAILABLE,
                    format!("failed to poll run {}: {e}", run.id),
                    false,
                );
                return Step {
                    status: st,
                    outcome: Outcome::Blocked(b),
                    requeue: Some(POLL_INTERVAL * 5),
                    notes,
                };
            }
            Ok(None) => {
                run.state = RunState::Failed;
                run.completion_time = Some(stamp(now));
                run.message = Some("the playbook runner lost this run; it is started again".into());
                notes.push(Note::RunLost(run.id.clone()));
                notes.push(Note::Finished(run.playbook, RunState::Failed));
                st.run = Some(run);
                st.next_retry_time = None;
            }
            Ok(Some(report)) if !report.state.is_terminal() => {
                copy_progress(&mut run, &report);
                let playbook = run.playbook;
                let id = run.id.clone();
                let next = poll_after(run.start_time.as_deref(), now);
                st.run = Some(run);
                let outcome = match playbook {
                    Playbook::Provision | Playbook::Deprovision => running(&st, playbook, id),
                    // A drift check or an inspection changes nothing: the
                    // Server is what it was.
                    Playbook::Check | Playbook::Inspect => current(&st, inputs, min_ready),
                };
                return Step {
                    status: st,
                    outcome,
                    requeue: Some(next),
                    notes,
                };
            }
            Ok(Some(report)) if report.lost => {
                // Lost by a runner restart: not a verdict on the change.
                copy_progress(&mut run, &report);
                notes.push(Note::RunLost(run.id.clone()));
                notes.push(Note::Finished(run.playbook, RunState::Failed));
                st.run = Some(run);
                st.next_retry_time = None;
            }
            Ok(Some(report)) => {
                copy_progress(&mut run, &report);
                notes.push(Note::Finished(run.playbook, report.state));
                st.run = Some(run.clone());
                fold(inputs, &mut st, &run, &report, min_ready, &mut notes);
            }
        }
    }

    // 2. Suspended: nothing starts.
    if server.spec.suspend {
        return Step {
            status: st,
            outcome: Outcome::Suspended,
            requeue: None,
            notes,
        };
    }

    // 3. The desired state.
    let desired = match inputs.desired {
        Ok(d) => d,
        Err(b) => {
            return Step {
                status: st,
                outcome: Outcome::Blocked(b.clone()),
                requeue: Some(if b.stalled {
                    inputs.backoff.cap
                } else {
                    Duration::from_secs(10)
                }),
                notes,
            };
        }
    };
    let retry_now = inputs.retry_token.is_some() && inputs.retry_token != st.retry_token.as_deref();
    if retry_now {
        st.retry_token = inputs.retry_token.map(str::to_string);
        st.next_retry_time = None;
        st.failures = 0;
        if let Some(u) = st.update.as_mut() {
            // A new attempt: only what is observed from now on counts.
            u.failed_time = None;
            u.failure = None;
            u.start_time = stamp(now);
        }
    }
    let retry_at = parse(st.next_retry_time.as_deref()).filter(|t| *t > now);

    // 4. Applied: look after the containers.
    if st.applied_hash.as_deref() == Some(desired.hash.as_str()) {
        let observed = parse(st.containers_observed_time.as_deref());
        let avail = availability::availability(&st.containers, observed, min_ready);
        track_update(inputs, &mut st, &desired.hash, &avail, now);
        let drifted = st
            .conditions
            .iter()
            .any(|c| c.type_ == DRIFTED && c.status == ConditionStatus::True);
        if drifted {
            // Repair at once: the host is not what was applied; no budget.
            return start(
                inputs,
                st,
                desired,
                Playbook::Provision,
                runner,
                credentials,
                notes,
            )
            .await;
        }
        let deadline = update_deadline(inputs, &st);
        return match avail {
            Availability::Unknown => {
                start(
                    inputs,
                    st,
                    desired,
                    Playbook::Inspect,
                    runner,
                    credentials,
                    notes,
                )
                .await
            }
            Availability::Starting { ready_at } if ready_at <= now => {
                start(
                    inputs,
                    st,
                    desired,
                    Playbook::Inspect,
                    runner,
                    credentials,
                    notes,
                )
                .await
            }
            Availability::Starting { ready_at } => {
                let wait = until(now, ready_at).max(Duration::from_millis(100));
                let wait = deadline.map_or(wait, |d| {
                    wait.min(until(now, d).max(Duration::from_secs(1)))
                });
                Step {
                    status: st,
                    outcome: Outcome::Current(avail),
                    requeue: Some(wait),
                    notes,
                }
            }
            Availability::NotReady { .. } => match retry_at {
                Some(t) => Step {
                    status: st,
                    outcome: Outcome::Current(avail),
                    requeue: Some(until(now, t).max(Duration::from_secs(1))),
                    notes,
                },
                None => {
                    start(
                        inputs,
                        st,
                        desired,
                        Playbook::Inspect,
                        runner,
                        credentials,
                        notes,
                    )
                    .await
                }
            },
            Availability::Available => {
                st.failures = 0;
                st.next_retry_time = None;
                match inputs.drift_interval {
                    Some(interval) if drift_due(&st, now, interval) => {
                        start(
                            inputs,
                            st,
                            desired,
                            Playbook::Check,
                            runner,
                            credentials,
                            notes,
                        )
                        .await
                    }
                    interval => Step {
                        status: st,
                        outcome: Outcome::Current(Availability::Available),
                        requeue: interval,
                        notes,
                    },
                }
            }
        };
    }

    // 5. Not applied: install or update, within the rollout.
    let failed_here = st.run.as_ref().is_some_and(|r| {
        r.playbook == Playbook::Provision
            && r.state != RunState::Succeeded
            && !r.in_flight()
            && r.hash.as_deref() == Some(desired.hash.as_str())
    });
    let decision = (inputs.plan)(&st);
    let paused = matches!(
        decision,
        Decision::Wait(super::rollout::Wait::Paused { .. })
    );
    if failed_here && let Some(t) = retry_at {
        let message = failure_message(&st);
        return Step {
            status: st,
            outcome: Outcome::Failed {
                message,
                retry_in: (!paused).then(|| until(now, t)),
                paused,
            },
            requeue: Some(until(now, t).max(Duration::from_secs(1))),
            notes,
        };
    }
    if let (Decision::Install | Decision::Update, Some(wait)) = (&decision, inputs.settling) {
        return Step {
            status: st,
            outcome: Outcome::Waiting(super::rollout::Wait::Settling),
            requeue: Some(wait.max(Duration::from_millis(100))),
            notes,
        };
    }
    match decision {
        Decision::Install | Decision::Update => {
            if decision == Decision::Update
                && st
                    .update
                    .as_ref()
                    .is_none_or(|u| u.hash != desired.hash || u.failed_time.is_some())
            {
                st.update = Some(UpdateStatus {
                    hash: desired.hash.clone(),
                    start_time: stamp(now),
                    cluster_generation: inputs.cluster_generation,
                    generation: server.metadata.generation,
                    failed_time: None,
                    failure: None,
                });
            }
            start(
                inputs,
                st,
                desired,
                Playbook::Provision,
                runner,
                credentials,
                notes,
            )
            .await
        }
        Decision::Wait(w) if failed_here => {
            let message = failure_message(&st);
            Step {
                status: st,
                outcome: Outcome::Failed {
                    message,
                    retry_in: None,
                    paused: matches!(w, super::rollout::Wait::Paused { .. }),
                },
                requeue: Some(WAIT_INTERVAL),
                notes,
            }
        }
        Decision::Wait(w) => Step {
            status: st,
            outcome: Outcome::Waiting(w),
            requeue: Some(WAIT_INTERVAL),
            notes,
        },
        Decision::Running | Decision::Idle => Step {
            status: st,
            outcome: Outcome::Current(Availability::Unknown),
            requeue: Some(WAIT_INTERVAL),
            notes,
        },
    }
}

/// The outcome of a provision or deprovision run in flight: a repair when
/// a drift check asked for it.
fn running(st: &ServerStatus, playbook: Playbook, id: String) -> Outcome {
    let drift = st
        .conditions
        .iter()
        .find(|c| c.type_ == DRIFTED && c.status == ConditionStatus::True);
    match drift {
        Some(d) if playbook == Playbook::Provision => {
            let broken = st.containers.iter().find_map(|c| c.message.clone());
            Outcome::Repairing {
                id,
                container: broken.is_some(),
                why: broken.unwrap_or_else(|| d.message.clone()),
            }
        }
        _ => Outcome::Running { playbook, id },
    }
}

/// The outcome of a Server whose desired state is applied, from its status.
fn current(st: &ServerStatus, inputs: &Inputs<'_>, min_ready: Duration) -> Outcome {
    match inputs.desired {
        Ok(d) if st.applied_hash.as_deref() == Some(d.hash.as_str()) => {
            let observed = parse(st.containers_observed_time.as_deref());
            Outcome::Current(availability::availability(
                &st.containers,
                observed,
                min_ready,
            ))
        }
        Ok(_) => Outcome::Running {
            playbook: st.run.as_ref().map_or(Playbook::Inspect, |r| r.playbook),
            id: st.run.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        },
        Err(b) => Outcome::Blocked(b.clone()),
    }
}

fn copy_progress(run: &mut RunStatus, report: &RunReport) {
    run.state = report.state;
    run.tasks_done = report.tasks_done;
    run.tasks_total = report.tasks_total;
    run.failed_task = report.failed_task.clone();
    run.message = report.message.clone();
    if let Some(started) = &report.started {
        run.start_time = Some(started.clone());
    }
    run.completion_time = report.finished.clone();
}

/// Folds a finished run into the status.
fn fold(
    inputs: &Inputs<'_>,
    st: &mut ServerStatus,
    run: &RunStatus,
    report: &RunReport,
    min_ready: Duration,
    notes: &mut Vec<Note>,
) {
    let server = inputs.server;
    let now = inputs.now;
    let generation = server.metadata.generation;
    let succeeded = report.state == RunState::Succeeded;
    // The containers as the run read them.
    if let Some(seen) = report.containers.as_deref()
        && (succeeded || run.playbook != Playbook::Provision)
    {
        let expected = match inputs.desired {
            Ok(d) if Some(d.hash.as_str()) == run.hash.as_deref() => expected(server, d),
            _ => expected_from_status(server, st),
        };
        let observed_at = parse(report.finished.as_deref()).unwrap_or(now);
        st.containers =
            availability::observe(&expected, &st.containers, seen, observed_at, min_ready);
        st.containers_observed_time = Some(stamp(observed_at));
        if let Availability::NotReady { .. } =
            availability::availability(&st.containers, Some(observed_at), min_ready)
        {
            st.failures = st.failures.saturating_add(1);
            st.next_retry_time = Some(stamp(after(now, inputs.backoff.delay(st.failures))));
        }
    }
    match (run.playbook, succeeded) {
        (Playbook::Provision, true) => {
            st.applied_hash = run.hash.clone();
            if !st.containers.iter().any(|c| c.message.is_some()) {
                st.failures = 0;
                st.next_retry_time = None;
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
        }
        (Playbook::Provision, false) => {
            st.failures = st.failures.saturating_add(1);
            st.next_retry_time = Some(stamp(after(now, inputs.backoff.delay(st.failures))));
            let message = failure_message(st);
            if let Some(u) = st
                .update
                .as_mut()
                .filter(|u| Some(u.hash.as_str()) == run.hash.as_deref() && u.failed_time.is_none())
            {
                u.failed_time = Some(stamp(now));
                u.failure = Some(format!("{}: {message}", reason::PROVISIONING_FAILED));
            }
        }
        (Playbook::Check, true) => {
            if report.changed > 0 {
                let msg = format!(
                    "{} task(s) would change the host: repairing",
                    report.changed
                );
                notes.push(Note::DriftDetected(msg.clone()));
                set_condition(
                    &mut st.conditions,
                    Condition::new(
                        DRIFTED,
                        ConditionStatus::True,
                        reason::DRIFT_DETECTED,
                        msg,
                        generation,
                    ),
                );
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
        }
        (Playbook::Check, false) => {
            set_condition(
                &mut st.conditions,
                Condition::new(
                    DRIFTED,
                    ConditionStatus::Unknown,
                    reason::PROVISIONING_FAILED,
                    format!(
                        "drift check failed: {}",
                        report.message.clone().unwrap_or_default()
                    ),
                    generation,
                ),
            );
            st.next_retry_time = Some(stamp(after(now, inputs.backoff.delay(1))));
        }
        (Playbook::Inspect, false) => {
            st.next_retry_time = Some(stamp(after(now, inputs.backoff.delay(1))));
        }
        (Playbook::Inspect, true) | (Playbook::Deprovision, _) => {}
    }
}

/// Marks the update in progress failed or done from the containers.
fn track_update(
    inputs: &Inputs<'_>,
    st: &mut ServerStatus,
    hash: &str,
    avail: &Availability,
    now: Timestamp,
) {
    let deadline = update_deadline(inputs, st);
    let observed = parse(st.containers_observed_time.as_deref());
    let Some(u) = st
        .update
        .as_mut()
        .filter(|u| u.hash == hash && u.failed_time.is_none())
    else {
        return;
    };
    // Only what was read since the update (re)started judges it.
    let fresh = observed.is_some_and(|o| parse(Some(&u.start_time)).is_none_or(|s| o >= s));
    match avail {
        Availability::Available if fresh => st.update = None,
        Availability::NotReady { message, .. } if fresh => {
            u.failed_time = Some(stamp(now));
            u.failure = Some(format!("{}: {message}", reason::CONTAINER_NOT_READY));
        }
        _ => {
            if deadline.is_some_and(|d| d <= now) {
                u.failed_time = Some(stamp(now));
                u.failure = Some(format!(
                    "{}: not available within {}s",
                    reason::PROGRESS_DEADLINE_EXCEEDED,
                    inputs.policy.progress_deadline_seconds
                ));
            }
        }
    }
}

/// When the update in progress runs out of time.
fn update_deadline(inputs: &Inputs<'_>, st: &ServerStatus) -> Option<Timestamp> {
    let u = st.update.as_ref().filter(|u| u.failed_time.is_none())?;
    let started = parse(Some(&u.start_time))?;
    Some(after(
        started,
        Duration::from_secs(u64::from(inputs.policy.progress_deadline_seconds)),
    ))
}

fn drift_due(st: &ServerStatus, now: Timestamp, interval: Duration) -> bool {
    let last = st
        .run
        .as_ref()
        .and_then(|r| parse(r.completion_time.as_deref()));
    last.is_some_and(|t| after(t, interval) <= now)
}

fn failure_message(st: &ServerStatus) -> String {
    let Some(run) = &st.run else {
        return String::new();
    };
    let task = run
        .failed_task
        .as_deref()
        .map(|t| format!("task {t:?} failed: "))
        .unwrap_or_default();
    format!(
        "run {} {}: {task}{}",
        run.id,
        run.state.as_str(),
        run.message.clone().unwrap_or_default()
    )
}

/// The playbook variables of `server` for `playbook`.
pub fn vars(server: &Server, desired: Option<&Desired>, roles: &[String]) -> ProvisionVars {
    let layout = server.spec.layout();
    let role_specs = roles
        .iter()
        .map(|name| {
            let role = crate::crd::Role::parse(name);
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

/// A run's idempotency key: the same for a retried request of the same
/// attempt (an operator restarting before it recorded the run gets that run
/// back), different for the next attempt (the last run's end time changes).
fn idempotency_key(server: &Server, st: &ServerStatus, playbook: Playbook, hash: &str) -> String {
    let attempt = st
        .run
        .as_ref()
        .and_then(|r| r.completion_time.clone())
        .unwrap_or_else(|| "0".into());
    format!(
        "{}/{}/{}/{attempt}",
        server.metadata.uid.as_deref().unwrap_or_default(),
        playbook.as_str(),
        short(hash)
    )
}

async fn start(
    inputs: &Inputs<'_>,
    mut st: ServerStatus,
    desired: &Desired,
    playbook: Playbook,
    runner: &dyn Provisioner,
    credentials: &dyn Credentials,
    mut notes: Vec<Note>,
) -> Step {
    let server = inputs.server;
    let blocked = |st: ServerStatus, b: Blocked, notes: Vec<Note>| Step {
        requeue: Some(if b.stalled {
            inputs.backoff.cap
        } else {
            Duration::from_secs(10)
        }),
        status: st,
        outcome: Outcome::Blocked(b),
        notes,
    };
    let target = match credentials.target(server).await {
        Ok(t) => t,
        Err(b) => return blocked(st, b, notes),
    };
    let mut roles: Vec<String> = desired
        .config
        .roles
        .iter()
        .map(|r| r.role.to_string())
        .collect();
    roles.sort();
    let mut vars = vars(server, Some(desired), &roles);
    if playbook.needs_images() {
        vars.registry = match credentials.registry(desired).await {
            Ok(a) => Some(a),
            Err(b) => return blocked(st, b, notes),
        };
    }
    let request = RunRequest {
        playbook,
        target,
        vars,
        idempotency_key: Some(idempotency_key(server, &st, playbook, &desired.hash)),
        timeout_seconds: None,
    };
    let handle = match runner.start(&request).await {
        Ok(h) => h,
        Err(ProvisionError::Rejected(m)) => {
            let b = Blocked::new(
                reason::RUN_REJECTED,
                format!("the playbook runner refused the run: {m}"),
                true,
            );
            return blocked(st, b, notes);
        }
        Err(ProvisionError::Unavailable(m)) => {
            let b = Blocked::new(
                reason::RUNNER_UNAVAILABLE,
                format!("failed to start a run: {m}"),
                false,
            );
            return blocked(st, b, notes);
        }
    };
    notes.push(Note::Started(playbook));
    let id = handle.id.clone();
    st.run = Some(RunStatus {
        id: handle.id,
        runner: Some(handle.runner),
        playbook,
        hash: Some(desired.hash.clone()),
        state: RunState::Queued,
        start_time: Some(stamp(inputs.now)),
        completion_time: None,
        tasks_done: 0,
        tasks_total: 0,
        failed_task: None,
        message: None,
    });
    let min_ready = Duration::from_secs(u64::from(inputs.policy.min_ready_seconds));
    let outcome = match playbook {
        Playbook::Provision | Playbook::Deprovision => running(&st, playbook, id),
        Playbook::Check | Playbook::Inspect => current(&st, inputs, min_ready),
    };
    Step {
        status: st,
        outcome,
        requeue: Some(FIRST_POLL),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::{ClusterInput, Derived, Member};
    use crate::controller::conditions::{AVAILABLE, READY, STALLED};
    use crate::controller::server::outcome;
    use crate::controller::server::rollout::Wait;
    use crate::crd::{Cluster, ClusterSpec, Role};
    use crate::runner::api::{ContainerState, Secret};

    /// A runner whose runs end as the test says; it records every request.
    #[derive(Default)]
    struct FakeRunner {
        requests: Mutex<Vec<RunRequest>>,
        reports: Mutex<HashMap<String, RunReport>>,
        refuse: Mutex<Option<ProvisionError>>,
        /// When runs end.
        clock: Mutex<String>,
    }

    impl FakeRunner {
        fn last(&self) -> RunRequest {
            self.requests
                .lock()
                .unwrap()
                .last()
                .cloned()
                .expect("a request")
        }
        fn count(&self, playbook: Playbook) -> usize {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.playbook == playbook)
                .count()
        }
        /// Makes run `id` end in `state`, having read `containers`.
        fn finish(&self, id: &str, state: RunState, containers: Option<Vec<ContainerState>>) {
            let mut reports = self.reports.lock().unwrap();
            let r = reports.get_mut(id).expect("known run");
            r.state = state;
            r.finished = Some(self.clock.lock().unwrap().clone());
            r.containers = containers;
            if state == RunState::Failed {
                r.failed_task = Some("Pull the role images".into());
                r.message = Some("manifest unknown".into());
            }
        }
        fn changed(&self, id: &str, n: u32) {
            self.reports.lock().unwrap().get_mut(id).unwrap().changed = n;
        }
    }

    #[async_trait::async_trait]
    impl Provisioner for FakeRunner {
        async fn start(&self, request: &RunRequest) -> Result<RunHandle, ProvisionError> {
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
            }
            let mut requests = self.requests.lock().unwrap();
            requests.push(request.clone());
            let id = format!("run-{}", requests.len());
            self.reports.lock().unwrap().insert(
                id.clone(),
                RunReport {
                    id: id.clone(),
                    playbook: request.playbook,
                    host: request.target.host.clone(),
                    port: 22,
                    state: RunState::Running,
                    return_code: None,
                    created: "2026-01-01T00:00:00Z".into(),
                    started: Some("2026-01-01T00:00:00Z".into()),
                    finished: None,
                    tasks_done: 3,
                    tasks_total: 9,
                    current_task: None,
                    failed_task: None,
                    message: None,
                    changed: 0,
                    recap: None,
                    lost: false,
                    containers: None,
                },
            );
            Ok(RunHandle {
                id,
                runner: "fake".into(),
            })
        }
        async fn status(&self, run: &RunHandle) -> Result<Option<RunReport>, ProvisionError> {
            Ok(self.reports.lock().unwrap().get(&run.id).cloned())
        }
    }

    struct FakeCredentials;

    #[async_trait::async_trait]
    impl Credentials for FakeCredentials {
        async fn target(&self, server: &Server) -> Result<Target, Blocked> {
            Ok(Target {
                host: server.spec.host.clone(),
                port: 22,
                user: "root".into(),
                private_key: Secret::new("key"),
                known_hosts: "h k".into(),
            })
        }
        async fn registry(&self, desired: &Desired) -> Result<RegistryAuth, Blocked> {
            Ok(RegistryAuth {
                address: desired.registry.clone(),
                ..Default::default()
            })
        }
    }

    fn server() -> Server {
        let mut s: Server = serde_json::from_value(serde_json::json!({
            "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
            "metadata": {"name": "s1", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"clusterRef": {"name": "lab"}, "host": "10.0.0.1", "roles": ["agent"],
                     "ssh": {"secretRef": {"name": "k"}},
                     "parameters": {"GLOBAL": {"controller_nodes": "10.0.0.9"}}}
        }))
        .unwrap();
        s.metadata.generation = Some(1);
        s
    }

    fn desired(server: &Server, hash: &str) -> Desired {
        let cluster = Cluster::new("lab", ClusterSpec::default());
        let config = crate::config::effective_config_with(
            ClusterInput {
                name: "lab",
                spec: &cluster.spec,
            },
            &Derived::default(),
            Member {
                name: "s1",
                spec: &server.spec,
            },
        )
        .expect("config");
        Desired {
            cluster: Arc::new(cluster),
            config,
            images: BTreeMap::from([(Role::Agent, ("r:5000/c-agent:1".to_string(), None))]),
            registry: "r:5000".into(),
            insecure: true,
            hash: hash.into(),
        }
    }

    fn container(started: &str, status: &str, restarts: u32) -> ContainerState {
        ContainerState {
            name: "contrail-agent".into(),
            image_id: "sha256:i".into(),
            status: status.into(),
            restart_count: restarts,
            started_at: Some(started.into()),
            exit_code: Some(if status == "running" { 0 } else { 3 }),
            exit_codes: if restarts > 0 { vec![3] } else { vec![] },
            log_tail: vec!["bad parameter foo".into()],
            ..Default::default()
        }
    }

    /// Drives the step like the reconciler does (conditions from the
    /// outcome), with a fixed plan decision.
    struct Harness {
        server: Server,
        desired: Desired,
        policy: RolloutSpec,
        runner: FakeRunner,
        decision: Decision,
        now: Timestamp,
        retry: Option<String>,
    }

    impl Harness {
        fn new(hash: &str) -> Harness {
            let server = server();
            Harness {
                desired: desired(&server, hash),
                server,
                policy: RolloutSpec::default(),
                runner: FakeRunner::default(),
                decision: Decision::Install,
                now: "2026-01-01T00:10:00Z".parse().unwrap(),
                retry: None,
            }
        }

        async fn step(&self, st: ServerStatus) -> Step {
            *self.runner.clock.lock().unwrap() = self.now.to_string();
            let decision = self.decision.clone();
            let plan = move |_: &ServerStatus| decision.clone();
            let inputs = Inputs {
                server: &self.server,
                desired: Ok(&self.desired),
                policy: &self.policy,
                cluster_generation: Some(7),
                retry_token: self.retry.as_deref(),
                drift_interval: Some(Duration::from_secs(600)),
                backoff: Backoff::default(),
                now: self.now,
                plan: &plan,
                settling: None,
            };
            let mut out = step(&inputs, st, &self.runner, &FakeCredentials).await;
            outcome::apply(
                &mut out.status,
                &out.outcome,
                Some(1),
                Duration::from_secs(u64::from(self.policy.min_ready_seconds)),
            );
            out
        }
    }

    fn cond(st: &ServerStatus, t: &str) -> (ConditionStatus, String) {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason.clone()))
            .unwrap_or((ConditionStatus::Unknown, String::new()))
    }

    fn run_id(st: &ServerStatus) -> String {
        st.run.as_ref().unwrap().id.clone()
    }

    #[tokio::test]
    async fn install_then_ready_once_the_containers_have_run_min_ready_seconds() {
        let mut h = Harness::new("sha256:h1");
        // Never provisioned: the plan says install; the run starts.
        let s = h.step(ServerStatus::default()).await;
        assert_eq!(h.runner.count(Playbook::Provision), 1);
        let req = h.runner.last();
        assert_eq!(req.vars.roles[0].image, "r:5000/c-agent:1");
        assert!(req.idempotency_key.unwrap().starts_with("u1/provision/h1/"));
        assert_eq!(s.requeue, Some(FIRST_POLL));
        assert_eq!(cond(&s.status, READY).1, reason::PROVISIONING);
        assert_eq!(
            s.status.run.as_ref().unwrap().runner.as_deref(),
            Some("fake")
        );
        // Polled while running: progress.
        let s = h.step(s.status).await;
        assert_eq!(s.status.progress.as_deref(), Some("3/9"));
        // Done, the container started 4 s before the run ended: wait 6 s more.
        let id = run_id(&s.status);
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:09:56Z", "running", 0)]),
        );
        let s = h.step(s.status).await;
        assert_eq!(s.status.applied_hash.as_deref(), Some("sha256:h1"));
        assert_eq!(cond(&s.status, READY).1, reason::CONTAINERS_STARTING);
        assert_eq!(s.requeue, Some(Duration::from_secs(6)));
        assert_eq!(s.status.containers_ready.as_deref(), Some("0/1"));
        assert_eq!(h.runner.count(Playbook::Inspect), 0, "no busy waiting");
        // At ready time: one inspection; it finds the container steady.
        h.now = "2026-01-01T00:10:06Z".parse().unwrap();
        let s = h.step(s.status).await;
        assert_eq!(h.runner.count(Playbook::Inspect), 1);
        let id = run_id(&s.status);
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:09:56Z", "running", 0)]),
        );
        let s = h.step(s.status).await;
        assert_eq!(
            cond(&s.status, READY),
            (ConditionStatus::True, reason::PROVISIONED.into())
        );
        assert_eq!(cond(&s.status, AVAILABLE).0, ConditionStatus::True);
        assert_eq!(s.status.containers_ready.as_deref(), Some("1/1"));
        // Converged: nothing more until the drift check.
        let again = h.step(s.status.clone()).await;
        assert_eq!(again.status, s.status);
        assert_eq!(again.requeue, Some(Duration::from_secs(600)));
        assert_eq!(h.runner.requests.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_container_that_exits_fails_the_update_naming_it() {
        let mut h = Harness::new("sha256:h2");
        h.decision = Decision::Update;
        let before = ServerStatus {
            applied_hash: Some("sha256:h1".into()),
            ..Default::default()
        };
        let s = h.step(before).await;
        let update = s.status.update.clone().expect("an update record");
        assert_eq!(
            (update.hash.as_str(), update.cluster_generation),
            ("sha256:h2", Some(7))
        );
        let id = run_id(&s.status);
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:09:58Z", "running", 0)]),
        );
        let s = h.step(s.status).await;
        h.now = "2026-01-01T00:10:09Z".parse().unwrap();
        let s = h.step(s.status).await;
        let id = run_id(&s.status);
        assert_eq!(s.status.run.as_ref().unwrap().playbook, Playbook::Inspect);
        // It exited (Docker restarts it: running again with restarts).
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:10:08Z", "running", 2)]),
        );
        let s = h.step(s.status).await;
        let ready = s
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(ready.reason, reason::CONTAINER_NOT_READY);
        assert!(
            ready.message.contains("contrail-agent"),
            "{}",
            ready.message
        );
        assert!(ready.message.contains("exit code 3"), "{}", ready.message);
        assert!(
            ready.message.contains("bad parameter foo"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&s.status, STALLED).0, ConditionStatus::True);
        let u = s.status.update.clone().unwrap();
        assert!(u.failed_time.is_some() && u.failure.unwrap().starts_with("ContainerNotReady"));
        // It looks again after a backoff, not at once.
        assert!(s.status.next_retry_time.is_some());
        let again = h.step(s.status.clone()).await;
        assert_eq!(h.runner.count(Playbook::Inspect), 1);
        assert!(again.requeue.unwrap() >= Duration::from_secs(1));
        // The retry annotation: counts no more, looks again now.
        h.retry = Some("1".into());
        h.now = "2026-01-01T00:11:00Z".parse().unwrap();
        let s = h.step(s.status).await;
        assert_eq!(h.runner.count(Playbook::Inspect), 2);
        assert!(s.status.update.as_ref().unwrap().failed_time.is_none());
        assert_eq!(s.status.retry_token.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_failed_run_backs_off_and_a_paused_rollout_holds_it() {
        let mut h = Harness::new("sha256:h2");
        h.decision = Decision::Update;
        let s = h
            .step(ServerStatus {
                applied_hash: Some("sha256:h1".into()),
                ..Default::default()
            })
            .await;
        let id = run_id(&s.status);
        h.runner.finish(&id, RunState::Failed, None);
        let s = h.step(s.status).await;
        let ready = s
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(ready.reason, reason::PROVISIONING_FAILED);
        assert!(
            ready.message.contains("Pull the role images"),
            "{}",
            ready.message
        );
        assert_eq!(s.status.failures, 1);
        assert!(s.status.update.as_ref().unwrap().failed_time.is_some());
        assert_eq!(s.requeue, Some(Duration::from_secs(5)));
        assert_eq!(
            s.status.applied_hash.as_deref(),
            Some("sha256:h1"),
            "the old state stays"
        );
        // Paused by this failure: stalled, no retry.
        h.decision = Decision::Wait(Wait::Paused {
            failed: vec!["s1".into()],
        });
        h.now = "2026-01-01T00:20:00Z".parse().unwrap();
        let s = h.step(s.status).await;
        assert_eq!(
            cond(&s.status, STALLED),
            (ConditionStatus::True, reason::ROLLOUT_PAUSED.into())
        );
        assert_eq!(cond(&s.status, READY).1, reason::PROVISIONING_FAILED);
        assert_eq!(h.runner.count(Playbook::Provision), 1);
    }

    #[tokio::test]
    async fn waiting_for_the_rollout_keeps_the_old_containers() {
        let mut h = Harness::new("sha256:h2");
        h.decision = Decision::Wait(Wait::Budget {
            role: Role::Agent,
            max: 1,
            busy: vec!["s2".into()],
        });
        let s = h
            .step(ServerStatus {
                applied_hash: Some("sha256:h1".into()),
                ..Default::default()
            })
            .await;
        assert_eq!(h.runner.requests.lock().unwrap().len(), 0);
        assert_eq!(cond(&s.status, READY).1, reason::UPDATE_PENDING);
        assert_eq!(s.requeue, Some(WAIT_INTERVAL));
        assert!(s.status.update.is_none());
    }

    #[tokio::test]
    async fn drift_is_detected_and_repaired_without_waiting_for_a_budget() {
        let mut h = Harness::new("sha256:h1");
        h.decision = Decision::Wait(Wait::Held);
        let steady = ServerStatus {
            applied_hash: Some("sha256:h1".into()),
            run: Some(RunStatus {
                id: "old".into(),
                runner: None,
                playbook: Playbook::Provision,
                hash: Some("sha256:h1".into()),
                state: RunState::Succeeded,
                start_time: None,
                completion_time: Some("2026-01-01T00:00:00Z".into()),
                tasks_done: 9,
                tasks_total: 9,
                failed_task: None,
                message: None,
            }),
            containers: availability::observe(
                &expected(&h.server, &h.desired),
                &[],
                &[container("2026-01-01T00:00:00Z", "running", 0)],
                "2026-01-01T00:01:00Z".parse().unwrap(),
                Duration::from_secs(10),
            ),
            containers_observed_time: Some("2026-01-01T00:01:00Z".into()),
            ..Default::default()
        };
        // The drift check is due (10 minutes after the last run).
        let s = h.step(steady).await;
        assert_eq!(s.status.run.as_ref().unwrap().playbook, Playbook::Check);
        assert_eq!(
            cond(&s.status, READY).0,
            ConditionStatus::True,
            "a check changes nothing"
        );
        // `docker kill`: the check sees it exited and a task would start it.
        let id = run_id(&s.status);
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:00:00Z", "exited", 0)]),
        );
        h.runner.changed(&id, 1);
        let s = h.step(s.status).await;
        assert!(s.notes.iter().any(|n| matches!(n, Note::DriftDetected(_))));
        // Repaired at once, although the rollout holds updates.
        assert_eq!(s.status.run.as_ref().unwrap().playbook, Playbook::Provision);
        assert_eq!(h.runner.count(Playbook::Provision), 1);
        let id = run_id(&s.status);
        h.runner.finish(
            &id,
            RunState::Succeeded,
            Some(vec![container("2026-01-01T00:10:00Z", "running", 0)]),
        );
        let s = h.step(s.status).await;
        assert_eq!(
            cond(&s.status, crate::controller::conditions::DRIFTED).0,
            ConditionStatus::False
        );
        assert_eq!(cond(&s.status, READY).1, reason::CONTAINERS_STARTING);
    }

    #[tokio::test]
    async fn refusals_stall_unreachable_runners_are_retried_lost_runs_are_redone() {
        let h = Harness::new("sha256:h1");
        *h.runner.refuse.lock().unwrap() =
            Some(ProvisionError::Rejected("invalid vars.log_dir".into()));
        let s = h.step(ServerStatus::default()).await;
        assert_eq!(
            cond(&s.status, STALLED),
            (ConditionStatus::True, reason::RUN_REJECTED.into())
        );
        *h.runner.refuse.lock().unwrap() =
            Some(ProvisionError::Unavailable("connection refused".into()));
        let s = h.step(ServerStatus::default()).await;
        assert_eq!(cond(&s.status, STALLED).0, ConditionStatus::False);
        assert_eq!(cond(&s.status, READY).1, reason::RUNNER_UNAVAILABLE);
        *h.runner.refuse.lock().unwrap() = None;
        let s = h.step(ServerStatus::default()).await;
        let id = run_id(&s.status);
        h.runner.reports.lock().unwrap().remove(&id);
        let s = h.step(s.status).await;
        assert!(s.notes.iter().any(|n| matches!(n, Note::RunLost(_))));
        assert_ne!(run_id(&s.status), id, "started again");
        assert_eq!(h.runner.count(Playbook::Provision), 2);
    }

    #[tokio::test]
    async fn an_update_not_available_in_time_fails() {
        let mut h = Harness::new("sha256:h2");
        h.policy.progress_deadline_seconds = 60;
        h.decision = Decision::Update;
        let s = h
            .step(ServerStatus {
                applied_hash: Some("sha256:h1".into()),
                ..Default::default()
            })
            .await;
        let id = run_id(&s.status);
        let mut health = container("2026-01-01T00:09:00Z", "running", 0);
        health.health = Some("starting".into());
        h.runner
            .finish(&id, RunState::Succeeded, Some(vec![health]));
        h.now = "2026-01-01T00:11:30Z".parse().unwrap();
        let s = h.step(s.status).await;
        let u = s.status.update.clone().unwrap();
        assert!(
            u.failure
                .unwrap()
                .starts_with(reason::PROGRESS_DEADLINE_EXCEEDED)
        );
    }
}
