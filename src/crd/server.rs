//! The `Server` resource: one target host, how to reach it, and the role
//! containers it must run.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, LocalObjectReference, Parameters, Role, condition::conditions_schema};
use crate::runner::api::defaults::{
    default_config_dir, default_container_prefix, default_data_dir, default_log_dir, default_port,
    default_user,
};
use crate::runner::api::{Playbook, RunState, Secret as Sensitive, Target};
use k8s_openapi::api::core::v1::Secret;

/// One target host (bare metal or VM) of a Cluster and the Contrail role
/// containers it runs.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "servermanager.contrail.io",
    version = "v1alpha1",
    kind = "Server",
    doc = "A target host of a Cluster and the Contrail role containers it runs.",
    plural = "servers",
    singular = "server",
    shortname = "smserver",
    shortname = "ctsv",
    category = "contrail",
    namespaced,
    status = "ServerStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Roles","type":"string","jsonPath":".spec.roles"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Containers","type":"string","jsonPath":".status.containersReady"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Provisioning","type":"string","priority":1,"jsonPath":".spec.provisioning"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.provisioning) && self.provisioning == 'External') || has(self.ssh)",
    "message": "ssh is required when provisioning is Managed",
    "fieldPath": ".ssh",
    "reason": "FieldValueRequired"
}]))]
pub struct ServerSpec {
    /// The Cluster (same namespace) this Server belongs to.
    pub cluster_ref: LocalObjectReference,

    /// Address of the host: an IPv4 address, an IPv6 address or an RFC 1123
    /// host name (no port: see `ssh.port`). A name whose last label is a
    /// number must be an IPv4 address. Also the value that derived
    /// parameters such as `controller_nodes` list for this Server.
    #[schemars(schema_with = "host")]
    pub host: String,

    /// `Managed` servers are provisioned by the operator. `External` servers are
    /// non-containerized nodes managed elsewhere: they count for derived
    /// parameters (e.g. `controller_nodes`) but are never touched.
    #[serde(default)]
    pub provisioning: Provisioning,

    /// How to reach the host over SSH. Required for Managed servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,

    /// The roles whose containers run on this host (`controller`, `analytics`,
    /// `analyticsdb`, `agent`, `lb`, `kubemanager`, …).
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub roles: Vec<Role>,

    /// Per-role Image (by name, in this namespace) overriding the Cluster's
    /// default for that role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::role_images_schema")]
    pub images: BTreeMap<String, String>,

    /// Parameters overriding the Cluster's, key by key within a section
    /// (SECTION -> key -> value); `null` removes an inherited value.
    #[serde(default, skip_serializing_if = "is_empty_params")]
    pub parameters: Parameters,

    /// Stop reconciling this Server: no runs start while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Where files and containers go on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<HostLayout>,
}

fn is_empty_params(p: &Parameters) -> bool {
    p.0.is_empty()
}

impl ServerSpec {
    /// The host layout, with defaults filled in.
    pub fn layout(&self) -> HostLayout {
        self.layout.clone().unwrap_or_default()
    }

    /// Whether the operator provisions this Server.
    pub fn is_managed(&self) -> bool {
        self.provisioning == Provisioning::Managed
    }

    /// The runner target of this host, with the key and `known_hosts` read
    /// from its SSH Secret (`spec.ssh.secretRef`, keys [`SSH_PRIVATE_KEY`]
    /// and [`KNOWN_HOSTS`]): the one place a Secret becomes a target, for the
    /// reconciler and `server-manager logs` alike.
    pub fn ssh_target(&self, secret: &Secret) -> Result<Target, SshTargetError> {
        let ssh = self.ssh.as_ref().ok_or(SshTargetError::NoSsh)?;
        let data = secret.data.as_ref();
        let field = |key: &'static str| {
            data.and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or(SshTargetError::MissingKey(key))
        };
        Ok(Target {
            host: self.host.clone(),
            port: ssh.port,
            user: ssh.user.clone(),
            private_key: Sensitive::new(field(SSH_PRIVATE_KEY)?),
            known_hosts: field(KNOWN_HOSTS)?,
        })
    }
}

/// The SSH Secret's key holding the private key.
pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";
/// The SSH Secret's key holding the host's `known_hosts` lines.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// Why [`ServerSpec::ssh_target`] has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshTargetError {
    /// The Server has no `spec.ssh`.
    #[error("spec.ssh is not set")]
    NoSsh,
    /// The Secret lacks a key.
    #[error("has no key {0}")]
    MissingKey(&'static str),
}

/// Who provisions a Server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Provisioning {
    /// Provisioned by this operator.
    #[default]
    Managed,
    /// Managed elsewhere; only counted for derived parameters.
    External,
}

/// SSH access to a host.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SshSpec {
    /// Remote user; needs to run Docker (root, or sudo without password). A
    /// POSIX user name of at most 32 characters.
    #[serde(default = "default_user")]
    #[schemars(schema_with = "user", extend("default" = default_user()))]
    pub user: String,
    /// SSH port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Secret (same namespace) with `ssh-privatekey` and `known_hosts`.
    pub secret_ref: LocalObjectReference,
}

/// Locations on the host. Several Servers may share one host when each has its
/// own directories and container prefix.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostLayout {
    /// Directory of the role files (`<configDir>/<role>.conf`), made mode
    /// 0700. An absolute, normalized path; not `/` nor a system directory such
    /// as `/etc` itself (a dedicated directory below one is fine).
    #[serde(default = "default_config_dir")]
    #[schemars(schema_with = "host_directory", extend("default" = default_config_dir()))]
    pub config_dir: String,
    /// Host log directory, mounted read-write as `/var/log` in the
    /// containers. An absolute, normalized path; not `/` nor a system
    /// directory such as `/var/log` itself (a dedicated directory below one is
    /// fine).
    #[serde(default = "default_log_dir")]
    #[schemars(schema_with = "host_directory", extend("default" = default_log_dir()))]
    pub log_dir: String,
    /// Parent directory of persistent data directories (`<dataDir>/<role>`,
    /// e.g. Cassandra's). An absolute, normalized path; not `/` nor a system
    /// directory such as `/var/lib` itself (a dedicated directory below one is
    /// fine).
    #[serde(default = "default_data_dir")]
    #[schemars(schema_with = "host_directory", extend("default" = default_data_dir()))]
    pub data_dir: String,
    /// Container name prefix: containers are named `<prefix><role>`. A
    /// letter or digit, then letters, digits, `_`, `.` or `-`; at most 48
    /// characters.
    #[serde(default = "default_container_prefix")]
    #[schemars(
        schema_with = "container_prefix",
        extend("default" = default_container_prefix())
    )]
    pub container_prefix: String,
}

impl Default for HostLayout {
    fn default() -> Self {
        HostLayout {
            config_dir: default_config_dir(),
            log_dir: default_log_dir(),
            data_dir: default_data_dir(),
            container_prefix: default_container_prefix(),
        }
    }
}

fn host_directory(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::host_directory_schema()
}

fn host(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::host_rules().schema()
}

fn user(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::user_rules().schema()
}

fn container_prefix(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::container_prefix_rules().schema()
}

/// Observed state of a Server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the desired configuration is applied and available),
    /// `Available` (every role container has run for the cluster's
    /// `minReadySeconds` without a restart, whatever its configuration),
    /// `Provisioned`, `Reconciling`, `Stalled`, `Drifted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// One entry per role container, as last read from the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerStatus>,
    /// Role containers ready / role containers, e.g. `2/2` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers_ready: Option<String>,
    /// When the containers' state was last read from the host (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers_observed_time: Option<String>,
    /// The current run, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunStatus>,
    /// Hash (configuration files, image digests, playbook version) of what was
    /// last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// The update in progress or the last failed one (a change to a Server
    /// already provisioned), for the cluster's rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
    /// Progress of the current run as `done/total` tasks, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Consecutive failed attempts; reset by a success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the next attempt happens after a failure (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// The value of the `servermanager.contrail.io/retry` annotation last acted
    /// upon; setting the annotation to a new value retries at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An update of a provisioned Server: a change of its configuration, images
/// or layout rolled out by the cluster's rollout policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// The desired hash the update applies.
    pub hash: String,
    /// When its run started (RFC 3339); the progress deadline counts from here.
    pub start_time: String,
    /// The Cluster's `metadata.generation` when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_generation: Option<i64>,
    /// The Server's `metadata.generation` when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it failed (RFC 3339): the run failed, a container exited or
    /// restarted, or it was not available within the progress deadline. A
    /// failed update counts towards the rollout's `maxFailures` while the
    /// Cluster, the Server and the desired hash stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_time: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// State of a role container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContainerPhase {
    /// Running.
    Running,
    /// Exited and waiting to be restarted by Docker's restart policy.
    Restarting,
    /// Stopped (exited or killed).
    Exited,
    /// Created, never started.
    Created,
    /// Paused.
    Paused,
    /// Dead (Docker could not remove or restart it).
    Dead,
    /// Not on the host.
    Missing,
    /// Not read yet.
    #[default]
    Unknown,
}

impl ContainerPhase {
    /// From Docker's `State.Status`.
    pub fn from_docker(status: &str) -> ContainerPhase {
        match status {
            "running" => ContainerPhase::Running,
            "restarting" => ContainerPhase::Restarting,
            "exited" => ContainerPhase::Exited,
            "created" => ContainerPhase::Created,
            "paused" => ContainerPhase::Paused,
            "dead" | "removing" => ContainerPhase::Dead,
            _ => ContainerPhase::Unknown,
        }
    }

    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerPhase::Running => "running",
            ContainerPhase::Restarting => "restarting",
            ContainerPhase::Exited => "exited",
            ContainerPhase::Created => "created",
            ContainerPhase::Paused => "paused",
            ContainerPhase::Dead => "dead",
            ContainerPhase::Missing => "missing",
            ContainerPhase::Unknown => "unknown",
        }
    }
}

/// State of one role container on the host.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// The role.
    pub role: String,
    /// Container name on the host.
    #[serde(default)]
    pub name: String,
    /// Image reference the container runs.
    #[serde(default)]
    pub image: String,
    /// Image manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Hash of the role file the container was started with.
    #[serde(default)]
    pub config_hash: String,
    /// Docker's id of the image the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// `Running`, `Restarting`, `Exited`, `Created`, `Paused`, `Dead`,
    /// `Missing` or `Unknown`.
    #[serde(default)]
    pub state: ContainerPhase,
    /// Restarts by Docker's restart policy since the container was created.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// When the container last started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Exit code of its last stop, when it has stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Docker's health status when the image has a health check (`starting`,
    /// `healthy`, `unhealthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Running for `minReadySeconds` without a restart (and healthy, when it
    /// has a health check).
    #[serde(default)]
    pub ready: bool,
    /// Why it is not ready: its state, exit code and the last lines of its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A playbook run of this Server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Run id at the playbook runner.
    pub id: String,
    /// The playbook runner the run went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Playbook: `provision`, `deprovision`, `check` (drift) or `inspect`
    /// (container state).
    pub playbook: Playbook,
    /// The desired hash this run applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: RunState,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the run ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Tasks finished.
    #[serde(default)]
    pub tasks_done: u32,
    /// Tasks expected (an estimate until the run ends).
    #[serde(default)]
    pub tasks_total: u32,
    /// The task that failed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Result message (the failure's cause when failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunStatus {
    /// Whether the run is still going.
    pub fn in_flight(&self) -> bool {
        !self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn server(ssh: bool) -> ServerSpec {
        serde_json::from_value(serde_json::json!({
            "clusterRef": {"name": "c"},
            "host": "10.0.0.1",
            "roles": ["controller"],
            "ssh": ssh.then(|| serde_json::json!({"port": 2222, "secretRef": {"name": "s"}})),
        }))
        .expect("spec")
    }

    fn secret(keys: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn ssh_target_reads_the_secret() {
        let full = secret(&[(SSH_PRIVATE_KEY, "KEY"), (KNOWN_HOSTS, "h k")]);
        let t = server(true).ssh_target(&full).expect("target");
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("10.0.0.1", 2222, "root")
        );
        assert_eq!(t.private_key.expose(), "KEY");
        assert_eq!(t.known_hosts, "h k");
        assert_eq!(
            server(true).ssh_target(&secret(&[(SSH_PRIVATE_KEY, "KEY")])),
            Err(SshTargetError::MissingKey(KNOWN_HOSTS))
        );
        assert_eq!(server(false).ssh_target(&full), Err(SshTargetError::NoSsh));
    }
}
