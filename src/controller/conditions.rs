//! Condition types and reasons used in status, as named constants. Reasons are
//! UpperCamelCase (API conventions); `Ready` summarises, `Reconciling` and
//! `Stalled` are the abnormal-true conditions kstatus and GitOps tools read.

/// Summary: the resource is in its desired state.
pub const READY: &str = "Ready";
/// The Server was provisioned successfully at least once.
pub const PROVISIONED: &str = "Provisioned";
/// Every role container of the Server has run `minReadySeconds` without a
/// restart, whatever configuration it runs (what rollout budgets count).
pub const AVAILABLE: &str = "Available";
/// Work is in progress (a run, a push, waiting for a dependency or a slot).
pub const RECONCILING: &str = "Reconciling";
/// Progress is blocked until something outside changes (missing object,
/// invalid configuration).
pub const STALLED: &str = "Stalled";
/// A check-mode run found the host differs from the desired state.
pub const DRIFTED: &str = "Drifted";
/// The Image is in the registry.
pub const PUSHED: &str = "Pushed";

/// Reasons.
pub mod reason {
    /// Everything is as desired.
    pub const PROVISIONED: &str = "Provisioned";
    /// An External server: counted, never touched.
    pub const EXTERNAL: &str = "External";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// A run is queued or running.
    pub const PROVISIONING: &str = "Provisioning";
    /// A deprovision run is queued or running.
    pub const DEPROVISIONING: &str = "Deprovisioning";
    /// The last run failed.
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// The deprovision run failed; the finalizer stays.
    pub const DEPROVISIONING_FAILED: &str = "DeprovisioningFailed";
    /// The run was lost by the runner (restart) and will be redone.
    pub const RUN_LOST: &str = "RunLost";
    /// An update waits for its turn in the cluster's rollout (role order or
    /// disruption budget).
    pub const WAITING_FOR_ROLLOUT: &str = "WaitingForRollout";
    /// The cluster's rollout is paused after `maxFailures` failed updates.
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    /// The cluster's rollout is held (`spec.rollout.paused`).
    pub const ROLLOUT_HELD: &str = "RolloutHeld";
    /// A change waits to be applied (see `Reconciling` for why).
    pub const UPDATE_PENDING: &str = "UpdatePending";
    /// The containers run; they have not yet run `minReadySeconds`.
    pub const CONTAINERS_STARTING: &str = "ContainersStarting";
    /// Every container runs steadily.
    pub const CONTAINERS_RUNNING: &str = "ContainersRunning";
    /// A container exited, restarted, is missing or unhealthy.
    pub const CONTAINER_NOT_READY: &str = "ContainerNotReady";
    /// Never provisioned.
    pub const NOT_PROVISIONED: &str = "NotProvisioned";
    /// An update was not available within `progressDeadlineSeconds`.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Every managed Server of the cluster runs its desired configuration.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// A cluster's rollout of a new revision started.
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    /// A cluster's rollout moved to the next role.
    pub const ROLLOUT_ROLE_STARTED: &str = "RolloutRoleStarted";
    /// A cluster's rollout is in progress.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The Cluster's own parameters are invalid.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    /// Waiting for the backoff after a failure.
    pub const BACKING_OFF: &str = "BackingOff";
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// No Image is set for one of the Server's roles.
    pub const NO_IMAGE_FOR_ROLE: &str = "NoImageForRole";
    /// A referenced Image does not exist.
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    /// A referenced Image exists but is not pushed yet.
    pub const IMAGE_NOT_READY: &str = "ImageNotReady";
    /// The SSH Secret is missing or lacks a key.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A `spec.layout` directory is not allowed.
    pub const INVALID_LAYOUT: &str = "InvalidLayout";
    /// The effective configuration is invalid.
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// The playbook runner refused the run as invalid.
    pub const RUN_REJECTED: &str = "RunRejected";
    /// The playbook runner could not be reached.
    pub const RUNNER_UNAVAILABLE: &str = "RunnerUnavailable";
    /// A provision run repairs a host that drifted.
    pub const REPAIRING: &str = "Repairing";
    /// A check-mode run found differences.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// A check-mode run found none.
    pub const NO_DRIFT: &str = "NoDrift";
    /// No problem.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The Image is being pushed.
    pub const PUSHING: &str = "Pushing";
    /// The push failed.
    pub const PUSH_FAILED: &str = "PushFailed";
    /// The Image was pushed.
    pub const PUSHED: &str = "Pushed";
    /// A package Image: recorded, never pushed.
    pub const RECORDED: &str = "Recorded";
    /// Every managed Server of the cluster is Ready.
    pub const ALL_SERVERS_READY: &str = "AllServersReady";
    /// Some managed Servers are not Ready.
    pub const SERVERS_NOT_READY: &str = "ServersNotReady";
    /// Some of a Cluster's Servers are Stalled.
    pub const SERVERS_STALLED: &str = "ServersStalled";
}

/// Sets the kstatus pair of an object neither in progress nor blocked:
/// `Reconciling` and `Stalled` False, reason `AsExpected`.
pub fn mark_settled(conditions: &mut Vec<crate::crd::Condition>, generation: Option<i64>) {
    use crate::crd::{Condition, ConditionStatus, set_condition};
    for type_ in [RECONCILING, STALLED] {
        set_condition(
            conditions,
            Condition::new(
                type_,
                ConditionStatus::False,
                reason::AS_EXPECTED,
                "",
                generation,
            ),
        );
    }
}

/// Sets the kstatus pair of an object that is not where it should be:
/// `Reconciling` True while it is on its way, `Stalled` True when it cannot
/// get there until something outside changes (the other one False), each
/// with its own (reason, message).
pub fn mark_unsettled(
    conditions: &mut Vec<crate::crd::Condition>,
    stalled: bool,
    reconciling: (&str, String),
    stall: (&str, String),
    generation: Option<i64>,
) {
    use crate::crd::{Condition, ConditionStatus, set_condition};
    let status = |on: bool| {
        if on {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    set_condition(
        conditions,
        Condition::new(
            RECONCILING,
            status(!stalled),
            reconciling.0,
            reconciling.1,
            generation,
        ),
    );
    set_condition(
        conditions,
        Condition::new(STALLED, status(stalled), stall.0, stall.1, generation),
    );
}
