//! The one place a Server's conditions are computed: from the outcome of a
//! reconcile ([`Outcome`]) and the status it left (applied hash, containers,
//! drift). No other code sets a Server condition.
//!
//! - `Ready`: the desired configuration is applied and every role container
//!   is available.
//! - `Available`: every role container has run `minReadySeconds` without a
//!   restart (whatever configuration it runs): what rollout budgets count.
//! - `Provisioned`: provisioned successfully at least once.
//! - `Reconciling` / `Stalled`: the kstatus pair — on its way, or unable to
//!   progress until something outside changes.
//! - `Drifted`: set by drift checks only (folded into the status before).

use std::time::Duration;

use super::availability::{Availability, availability, ready_count};
use super::desired::Blocked;
use super::rollout::Wait;
use crate::controller::conditions::{
    AVAILABLE, PROVISIONED, READY, RECONCILING, mark_settled, mark_unsettled, reason,
};
use crate::crd::{Condition, ConditionStatus, ServerStatus, set_condition};
use crate::runner::api::Playbook;

/// What a reconcile found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An External Server: counted, never touched.
    External,
    /// `spec.suspend`: nothing starts.
    Suspended,
    /// Cannot proceed (missing Cluster, Image, Secret; invalid
    /// configuration; the runner refused or cannot be reached).
    Blocked(Blocked),
    /// A run of `playbook` is queued or running.
    Running {
        /// The playbook.
        playbook: Playbook,
        /// Its id.
        id: String,
    },
    /// A provision run repairs a host that drifted from what was applied
    /// (a container stopped, a file changed).
    Repairing {
        /// Its id.
        id: String,
        /// What the drift check found (the container that is not ready, or
        /// the tasks that would change the host).
        why: String,
        /// A container is not ready (else the files drifted).
        container: bool,
    },
    /// The last provisioning run failed.
    Failed {
        /// Why (run id, failed task, cause).
        message: String,
        /// When the next attempt happens; `None` when the rollout holds it.
        retry_in: Option<Duration>,
        /// The rollout is paused (by this failure or others).
        paused: bool,
    },
    /// An update waits for the rollout.
    Waiting(Wait),
    /// The desired configuration is applied; how available it is.
    Current(Availability),
    /// A deprovision run failed; the finalizer stays.
    DeprovisionFailed(String),
}

impl Outcome {
    /// The `Ready` condition's (status, reason, message).
    fn ready(&self, st: &ServerStatus) -> (ConditionStatus, &'static str, String) {
        use ConditionStatus::{False, True};
        match self {
            Outcome::External => (
                True,
                reason::EXTERNAL,
                "External server: counted for derived parameters, never provisioned".into(),
            ),
            Outcome::Suspended => (False, reason::SUSPENDED, "spec.suspend is true".into()),
            Outcome::Blocked(b) => (False, b.reason, b.message.clone()),
            Outcome::Running {
                playbook: Playbook::Deprovision,
                ..
            } => (
                False,
                reason::DEPROVISIONING,
                "removing containers and files".into(),
            ),
            Outcome::Running { id, .. } => (
                False,
                reason::PROVISIONING,
                format!("run {id} applies the desired configuration"),
            ),
            Outcome::Repairing { id, why, container } => (
                False,
                if *container {
                    reason::CONTAINER_NOT_READY
                } else {
                    reason::DRIFT_DETECTED
                },
                format!("{why}; run {id} repairs it"),
            ),
            Outcome::Failed { message, .. } => {
                (False, reason::PROVISIONING_FAILED, message.clone())
            }
            Outcome::Waiting(w) => {
                let what = if st.applied_hash.is_some() {
                    "update pending, the containers run the previous configuration"
                } else {
                    "not provisioned yet"
                };
                (
                    False,
                    reason::UPDATE_PENDING,
                    format!("{what}: {}", w.message()),
                )
            }
            Outcome::Current(a) => match a {
                Availability::Available => (
                    True,
                    reason::PROVISIONED,
                    format!("containers running: {}", ready_count(&st.containers)),
                ),
                Availability::Starting { ready_at } => (
                    False,
                    reason::CONTAINERS_STARTING,
                    format!(
                        "containers running {}; ready once they have run minReadySeconds without a restart (checked at {})",
                        ready_count(&st.containers),
                        ready_at.round(jiff::Unit::Second).unwrap_or(*ready_at)
                    ),
                ),
                Availability::NotReady { message, .. } => {
                    (False, reason::CONTAINER_NOT_READY, message.clone())
                }
                Availability::Unknown => (
                    False,
                    reason::CONTAINERS_STARTING,
                    "reading the containers' state".into(),
                ),
            },
            Outcome::DeprovisionFailed(m) => (False, reason::DEPROVISIONING_FAILED, m.clone()),
        }
    }

    /// The kstatus pair: `None` settled; `Some((stalled, reason, message))`.
    fn progress(&self) -> Option<(bool, &'static str, String)> {
        match self {
            Outcome::External | Outcome::Suspended => None,
            Outcome::Current(Availability::Available) => None,
            Outcome::Blocked(b) => Some((b.stalled, b.reason, b.message.clone())),
            Outcome::Running { playbook, id } => Some((
                false,
                if *playbook == Playbook::Deprovision {
                    reason::DEPROVISIONING
                } else {
                    reason::PROVISIONING
                },
                format!("run {id} ({})", playbook.as_str()),
            )),
            Outcome::Repairing { id, .. } => Some((
                false,
                reason::REPAIRING,
                format!("run {id} repairs the host"),
            )),
            Outcome::Failed {
                retry_in, paused, ..
            } => match (retry_in, paused) {
                (_, true) => Some((
                    true,
                    reason::ROLLOUT_PAUSED,
                    "the cluster's rollout is paused after failed updates".into(),
                )),
                (Some(d), false) => Some((
                    false,
                    reason::BACKING_OFF,
                    format!("retrying in {}s", d.as_secs()),
                )),
                (None, false) => Some((false, reason::BACKING_OFF, "retrying".into())),
            },
            Outcome::Waiting(w) => Some(match w {
                Wait::Paused { .. } => (true, reason::ROLLOUT_PAUSED, w.message()),
                Wait::Held => (false, reason::ROLLOUT_HELD, w.message()),
                Wait::Budget { .. } | Wait::Order { .. } | Wait::Settling => {
                    (false, reason::WAITING_FOR_ROLLOUT, w.message())
                }
            }),
            Outcome::Current(Availability::NotReady { message, .. }) => {
                Some((true, reason::CONTAINER_NOT_READY, message.clone()))
            }
            Outcome::Current(Availability::Starting { .. } | Availability::Unknown) => Some((
                false,
                reason::CONTAINERS_STARTING,
                "waiting for the containers to prove they keep running".into(),
            )),
            Outcome::DeprovisionFailed(m) => {
                Some((false, reason::DEPROVISIONING_FAILED, m.clone()))
            }
        }
    }
}

/// Sets every condition of `st` (but `Drifted`) from `outcome`, and the
/// printer column of containers. `min_ready` is the cluster's
/// `minReadySeconds`.
pub fn apply(
    st: &mut ServerStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    min_ready: Duration,
) {
    let (status, why, message) = outcome.ready(st);
    if *outcome != Outcome::Suspended {
        set_condition(
            &mut st.conditions,
            Condition::new(READY, status, why, message, generation),
        );
    }
    // Available: the containers as last read, whatever they run.
    let observed = st
        .containers_observed_time
        .as_deref()
        .and_then(|t| t.parse().ok());
    let available = match outcome {
        Outcome::External => (ConditionStatus::True, reason::EXTERNAL, String::new()),
        _ if st.containers.is_empty() => (
            ConditionStatus::False,
            reason::NOT_PROVISIONED,
            "no container provisioned".to_string(),
        ),
        _ => match availability(&st.containers, observed, min_ready) {
            Availability::Available => (
                ConditionStatus::True,
                reason::CONTAINERS_RUNNING,
                ready_count(&st.containers),
            ),
            Availability::NotReady { message, .. } => {
                (ConditionStatus::False, reason::CONTAINER_NOT_READY, message)
            }
            Availability::Starting { .. } | Availability::Unknown => (
                ConditionStatus::False,
                reason::CONTAINERS_STARTING,
                ready_count(&st.containers),
            ),
        },
    };
    set_condition(
        &mut st.conditions,
        Condition::new(AVAILABLE, available.0, available.1, available.2, generation),
    );
    let provisioned = match (outcome, &st.applied_hash) {
        (Outcome::External, _) => (ConditionStatus::True, reason::EXTERNAL, String::new()),
        (_, Some(h)) => (
            ConditionStatus::True,
            reason::PROVISIONED,
            format!("applied configuration {}", short(h)),
        ),
        (_, None) => (
            ConditionStatus::False,
            reason::NOT_PROVISIONED,
            String::new(),
        ),
    };
    set_condition(
        &mut st.conditions,
        Condition::new(
            PROVISIONED,
            provisioned.0,
            provisioned.1,
            provisioned.2,
            generation,
        ),
    );
    match outcome.progress() {
        None if *outcome == Outcome::Suspended => {
            mark_settled(&mut st.conditions, generation);
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
        }
        None => mark_settled(&mut st.conditions, generation),
        Some((stalled, why, message)) => mark_unsettled(
            &mut st.conditions,
            stalled,
            (why, message.clone()),
            (why, message),
            generation,
        ),
    }
    st.containers_ready = (!st.containers.is_empty()).then(|| ready_count(&st.containers));
    st.progress = match outcome {
        Outcome::Repairing { .. } => st
            .run
            .as_ref()
            .map(|r| format!("{}/{}", r.tasks_done, r.tasks_total.max(r.tasks_done))),
        Outcome::Running { playbook, .. } if *playbook == Playbook::Provision => st
            .run
            .as_ref()
            .map(|r| format!("{}/{}", r.tasks_done, r.tasks_total.max(r.tasks_done))),
        _ => None,
    };
}

/// The first 12 hex digits of a `sha256:` hash.
pub fn short(hash: &str) -> &str {
    let h = hash.trim_start_matches("sha256:");
    h.get(..12).unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::STALLED;
    use crate::crd::{ContainerPhase, ContainerStatus};

    fn cond(st: &ServerStatus, t: &str) -> (ConditionStatus, String) {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason.clone()))
            .expect(t)
    }

    fn running_container(ready: bool) -> ContainerStatus {
        ContainerStatus {
            role: "agent".into(),
            name: "c-agent".into(),
            state: ContainerPhase::Running,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn ready_and_available_follow_the_containers() {
        let mut st = ServerStatus {
            applied_hash: Some("sha256:abcdef0123456789".into()),
            containers: vec![running_container(true)],
            containers_observed_time: Some("2026-01-01T00:01:00Z".into()),
            ..Default::default()
        };
        apply(
            &mut st,
            &Outcome::Current(Availability::Available),
            Some(2),
            Duration::from_secs(10),
        );
        assert_eq!(cond(&st, READY).0, ConditionStatus::True);
        assert_eq!(cond(&st, AVAILABLE).0, ConditionStatus::True);
        assert_eq!(cond(&st, PROVISIONED).0, ConditionStatus::True);
        assert_eq!(cond(&st, RECONCILING).0, ConditionStatus::False);
        assert_eq!(cond(&st, STALLED).0, ConditionStatus::False);
        assert_eq!(st.containers_ready.as_deref(), Some("1/1"));

        // An update waiting for the rollout: not Ready, still Available.
        apply(
            &mut st,
            &Outcome::Waiting(Wait::Held),
            Some(3),
            Duration::from_secs(10),
        );
        assert_eq!(
            cond(&st, READY),
            (ConditionStatus::False, reason::UPDATE_PENDING.to_string())
        );
        assert_eq!(cond(&st, AVAILABLE).0, ConditionStatus::True);
        assert_eq!(cond(&st, RECONCILING).0, ConditionStatus::True);

        // A container that exits: ContainerNotReady, Stalled.
        st.containers[0].ready = false;
        st.containers[0].state = ContainerPhase::Exited;
        st.containers[0].message = Some("container c-agent is exited, exit code 3".into());
        let outcome = Outcome::Current(Availability::NotReady {
            container: "c-agent".into(),
            message: "container c-agent is exited, exit code 3".into(),
        });
        apply(&mut st, &outcome, Some(3), Duration::from_secs(10));
        assert_eq!(
            cond(&st, READY),
            (
                ConditionStatus::False,
                reason::CONTAINER_NOT_READY.to_string()
            )
        );
        assert_eq!(cond(&st, AVAILABLE).0, ConditionStatus::False);
        assert_eq!(cond(&st, STALLED).0, ConditionStatus::True);
        assert_eq!(st.containers_ready.as_deref(), Some("0/1"));

        // Paused by failures: Stalled with RolloutPaused.
        apply(
            &mut st,
            &Outcome::Waiting(Wait::Paused {
                failed: vec!["x".into()],
            }),
            Some(3),
            Duration::from_secs(10),
        );
        assert_eq!(
            cond(&st, STALLED),
            (ConditionStatus::True, reason::ROLLOUT_PAUSED.to_string())
        );
    }

    #[test]
    fn recomputing_the_same_outcome_changes_nothing() {
        let mut st = ServerStatus::default();
        let outcome = Outcome::Blocked(Blocked::new(reason::SECRET_NOT_FOUND, "no secret", true));
        apply(&mut st, &outcome, Some(1), Duration::from_secs(10));
        let once = st.clone();
        apply(&mut st, &outcome, Some(1), Duration::from_secs(10));
        assert_eq!(st, once);
        assert_eq!(cond(&st, STALLED).0, ConditionStatus::True);
        assert_eq!(cond(&st, PROVISIONED).0, ConditionStatus::False);
    }
}
