//! The playbook runner's REST API types, shared by the runner's service and
//! its clients (the operator, `server-manager logs`): one definition of every
//! request and response, so both sides cannot drift apart. The host layout
//! defaults ([`defaults`]) are defined here once; the `Server` CRD uses them.
//!
//! Secrets (the SSH private key, the registry password) travel only in
//! requests, inside [`Secret`], whose `Debug` is redacted. No response or run
//! record contains them.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod validation;

pub use defaults::{
    default_config_dir, default_container_prefix, default_data_dir, default_log_dir, default_port,
    default_user,
};

/// The defaults of a host's layout and SSH access, shared by the runner's
/// requests and the `Server` CRD (`spec.layout`, `spec.ssh`).
pub mod defaults {
    /// SSH port.
    pub const PORT: u16 = 22;
    /// SSH user.
    pub const USER: &str = "root";
    /// Host directory of the role files.
    pub const CONFIG_DIR: &str = "/etc/contrail";
    /// Host log directory.
    pub const LOG_DIR: &str = "/var/log/contrail";
    /// Parent of the per-role persistent directories.
    pub const DATA_DIR: &str = "/var/lib/contrail";
    /// Container name prefix.
    pub const CONTAINER_PREFIX: &str = "contrail-";

    /// [`PORT`], for `#[serde(default = …)]`.
    pub fn default_port() -> u16 {
        PORT
    }
    /// [`USER`], for `#[serde(default = …)]`.
    pub fn default_user() -> String {
        USER.to_string()
    }
    /// [`CONFIG_DIR`], for `#[serde(default = …)]`.
    pub fn default_config_dir() -> String {
        CONFIG_DIR.to_string()
    }
    /// [`LOG_DIR`], for `#[serde(default = …)]`.
    pub fn default_log_dir() -> String {
        LOG_DIR.to_string()
    }
    /// [`DATA_DIR`], for `#[serde(default = …)]`.
    pub fn default_data_dir() -> String {
        DATA_DIR.to_string()
    }
    /// [`CONTAINER_PREFIX`], for `#[serde(default = …)]`.
    pub fn default_container_prefix() -> String {
        CONTAINER_PREFIX.to_string()
    }
}

/// A secret string (private key, password). Serialized as a plain string so a
/// request can carry it; `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must write it (a 0600 file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// The playbooks a run may execute (files in the runner's playbook directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Playbook {
    /// `provision.yml`: write the role files, pull the images, run the
    /// containers, then read their state.
    Provision,
    /// `deprovision.yml`: remove the role containers and their files.
    Deprovision,
    /// `provision.yml` in check mode (`--check --diff`): reports drift
    /// ([`RunStatus::changed`] > 0) without changing anything, and reads the
    /// containers' state.
    Check,
    /// `inspect.yml`: reads the role containers' state only (read-only).
    Inspect,
}

impl Playbook {
    /// The playbook file name inside the playbook directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Playbook::Provision | Playbook::Check => "provision.yml",
            Playbook::Deprovision => "deprovision.yml",
            Playbook::Inspect => "inspect.yml",
        }
    }

    /// Whether the run needs the role images (and so the role files).
    pub fn needs_images(self) -> bool {
        matches!(self, Playbook::Provision | Playbook::Check)
    }

    /// Whether the playbook runs in check mode.
    pub fn check_mode(self) -> bool {
        matches!(self, Playbook::Check)
    }

    /// The lower-case name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Playbook::Provision => "provision",
            Playbook::Deprovision => "deprovision",
            Playbook::Check => "check",
            Playbook::Inspect => "inspect",
        }
    }
}

/// The host a run acts on and how to reach it over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// SSH port (default 22).
    #[serde(default = "default_port")]
    pub port: u16,
    /// SSH user (default `root`).
    #[serde(default = "default_user")]
    pub user: String,
    /// The private key (OpenSSH or PEM format) used to log in.
    pub private_key: Secret,
    /// `known_hosts` lines for the host; the host key is verified against
    /// them only (`[host]:port` form for a port other than 22).
    pub known_hosts: String,
}

/// Registry credentials for pulling the role images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// Registry address (`host:port`).
    pub address: String,
    /// Whether the registry is plain HTTP. The target's Docker engine must
    /// already allow it (`insecure-registries`; loopback always is).
    #[serde(default)]
    pub insecure: bool,
    /// User name; no login happens without one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or token.
    #[serde(default)]
    pub password: Option<Secret>,
}

/// One role (one container) on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpec {
    /// Role name (`controller`, `analytics`, …): `[a-z0-9][a-z0-9_-]*`.
    pub name: String,
    /// The full content of the role file, written byte for byte.
    #[serde(default)]
    pub config: String,
    /// Full image reference (`registry/repository:tag` or `@digest`).
    #[serde(default)]
    pub image: String,
}

/// The variables of the provisioning playbooks. Every string reaches Ansible
/// marked unsafe: it is never templated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionVars {
    /// Host directory of the role files (`<config_dir>/<role>.conf`, mode 0600),
    /// mounted read-only at `/etc/contrailctl/<role>.conf`.
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
    /// Host log directory, mounted as `/var/log` in every container.
    #[serde(default = "default_log_dir")]
    pub log_dir: String,
    /// Parent of the per-role persistent directories (`<data_dir>/<role>`,
    /// mounted at `/var/lib/contrail`).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Container name prefix: a role's container is `<prefix><role>`.
    #[serde(default = "default_container_prefix")]
    pub container_prefix: String,
    /// Registry to log in to before pulling, if it needs credentials.
    #[serde(default)]
    pub registry: Option<RegistryAuth>,
    /// The roles to provision (or deprovision).
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
}

impl Default for ProvisionVars {
    fn default() -> Self {
        ProvisionVars {
            config_dir: default_config_dir(),
            log_dir: default_log_dir(),
            data_dir: default_data_dir(),
            container_prefix: default_container_prefix(),
            registry: None,
            roles: Vec::new(),
        }
    }
}

/// `POST /run_playbook` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Which playbook to run.
    pub playbook: Playbook,
    /// Where to run it.
    pub target: Target,
    /// The playbook variables.
    #[serde(default)]
    pub vars: ProvisionVars,
    /// A run with this key, queued, running or finished (also before a
    /// runner restart), is returned instead of starting another one: a new
    /// attempt needs a new key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Per-run timeout; the runner's default when absent.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// `POST /run_playbook` answer (status 202).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAccepted {
    /// The run id.
    pub id: String,
    /// True when the idempotency key matched a run already known (queued,
    /// running or finished).
    #[serde(default)]
    pub existing: bool,
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Waiting for its target or for a free slot.
    Queued,
    /// `ansible-playbook` is running.
    Running,
    /// Finished with no failed task.
    Succeeded,
    /// Finished with a failure (see [`RunStatus::message`]), timed out, or lost
    /// by a runner restart.
    Failed,
    /// Cancelled by request.
    Cancelled,
}

impl RunState {
    /// Whether the run has ended (it will not change any more).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }

    /// The lower-case name used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// Ansible's play recap for the target host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recap {
    /// Tasks that ran without change.
    pub ok: u32,
    /// Tasks that changed something (in check mode: would change).
    pub changed: u32,
    /// 1 when the host could not be reached.
    pub unreachable: u32,
    /// Failed tasks.
    pub failed: u32,
    /// Skipped tasks.
    pub skipped: u32,
    /// Rescued tasks.
    pub rescued: u32,
    /// Failed tasks whose errors were ignored.
    pub ignored: u32,
}

/// `GET /playbook_status/{id}` answer, and the persisted run record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    /// Run id.
    pub id: String,
    /// The playbook.
    pub playbook: Playbook,
    /// Target host.
    pub host: String,
    /// Target SSH port.
    pub port: u16,
    /// Current state.
    pub state: RunState,
    /// `ansible-playbook` exit code, once it has exited.
    pub return_code: Option<i32>,
    /// When the run was accepted (RFC 3339).
    pub created: String,
    /// When `ansible-playbook` started (RFC 3339).
    pub started: Option<String>,
    /// When the run ended (RFC 3339).
    pub finished: Option<String>,
    /// Tasks finished so far.
    pub tasks_done: u32,
    /// Tasks in the playbook.
    pub tasks_total: u32,
    /// The task running now.
    pub current_task: Option<String>,
    /// The task that failed.
    pub failed_task: Option<String>,
    /// What happened, in one line (the cause, for a failure).
    pub message: Option<String>,
    /// Tasks that changed something; in check mode, the tasks that would:
    /// `changed > 0` after a `check` run means drift.
    pub changed: u32,
    /// Ansible's recap, once the play ended.
    pub recap: Option<Recap>,
    /// The run was lost, not failed: the runner restarted (or went away)
    /// while it was queued or running, so its outcome is unknown. Worth
    /// running again; not a verdict on the change it applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// The role containers' state as the run read it at its end
    /// (`provision`, `check` and `inspect` runs); containers that do not
    /// exist are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerState>>,
}

/// One role container as Docker reports it, reduced to what the operator
/// needs (never its environment or configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container name.
    pub name: String,
    /// Id of the image the container runs (`sha256:…`).
    #[serde(default)]
    pub image_id: String,
    /// Docker's state: `created`, `running`, `restarting`, `paused`,
    /// `exited`, `removing` or `dead`.
    pub status: String,
    /// Times Docker restarted it (its restart policy), since it was created.
    #[serde(default)]
    pub restart_count: u32,
    /// When it last started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it last stopped (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Exit code of its last stop.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Exit codes of the stops Docker recorded since it was created, oldest
    /// first (read only for containers not running steadily).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i64>,
    /// Docker's health status when the image has a health check
    /// (`starting`, `healthy`, `unhealthy`).
    #[serde(default)]
    pub health: Option<String>,
    /// Killed by the kernel for lack of memory.
    #[serde(default)]
    pub oom_killed: bool,
    /// Docker's error starting it, if any.
    #[serde(default)]
    pub error: Option<String>,
    /// The `io.contrail.server-manager.config-sha256` label.
    #[serde(default)]
    pub config_sha256: Option<String>,
    /// The last lines of its log (read only for containers not running
    /// steadily).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// A host's log directory: body of `POST /host_logs/list` and
/// `POST /host_logs/read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLogsRequest {
    /// The host, reached like a run's target.
    pub target: Target,
    /// The log directory on the host (default `/var/log/contrail`).
    #[serde(default = "default_log_dir")]
    pub log_dir: String,
    /// For `read`: a plain file name inside `log_dir` (no `/`, no `..`).
    #[serde(default)]
    pub file: Option<String>,
}

/// One file of a host's log directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogFileEntry {
    /// File name inside the log directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds since the epoch).
    pub modified: f64,
}

/// `POST /host_logs/list` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogFileList {
    /// The regular files directly inside the log directory, by name.
    pub files: Vec<LogFileEntry>,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Why a request is refused before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field (`target.host`, `vars.roles[0].name`, …).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a host directory (a layout path): the rule of
/// [`crate::validation::host_directory_error`], the same the CRD enforces at
/// admission: absolute, normalized, nothing Docker's volume syntax splits on,
/// never `/` nor a system directory.
pub fn validate_path(field: &str, path: &str) -> Result<(), ValidationError> {
    match crate::validation::host_directory_error(path) {
        Some(why) => Err(invalid(field, why)),
        None => Ok(()),
    }
}

/// Checks a file name that must stay inside its directory: non-empty, no `/`,
/// not `.` or `..`, no control characters.
pub fn validate_file_name(field: &str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid(field, "must be a file name"));
    }
    if name.contains('/') || name.contains('\\') || name.chars().any(|c| c.is_control()) {
        return Err(invalid(
            field,
            "must be a plain file name (no `/`, no control characters)",
        ));
    }
    Ok(())
}

impl Target {
    /// Checks the values that reach SSH and the inventory.
    pub fn validate(&self) -> Result<(), ValidationError> {
        // The rules `Server.spec.host` and `spec.ssh.user` follow at admission.
        if let Some(why) = crate::validation::host_error(&self.host) {
            return Err(invalid("target.host", why));
        }
        if self.port == 0 {
            return Err(invalid("target.port", "must not be 0"));
        }
        if let Some(why) = crate::validation::user_rules().error(&self.user) {
            return Err(invalid("target.user", why));
        }
        if self.private_key.expose().trim().is_empty() {
            return Err(invalid("target.private_key", "must not be empty"));
        }
        if self.known_hosts.trim().is_empty() {
            return Err(invalid(
                "target.known_hosts",
                "must hold the host's key: host keys are always verified",
            ));
        }
        Ok(())
    }
}

fn is_role_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl ProvisionVars {
    /// Checks paths, names and images; `needs_images` for provision and check.
    pub fn validate(&self, needs_images: bool) -> Result<(), ValidationError> {
        validate_path("vars.config_dir", &self.config_dir)?;
        validate_path("vars.log_dir", &self.log_dir)?;
        validate_path("vars.data_dir", &self.data_dir)?;
        if let Some(why) = crate::validation::container_prefix_rules().error(&self.container_prefix)
        {
            return Err(invalid("vars.container_prefix", why));
        }
        if self.roles.is_empty() {
            return Err(invalid("vars.roles", "must name at least one role"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            if !is_role_name(&role.name) {
                return Err(invalid(
                    format!("vars.roles[{i}].name"),
                    "must match [a-z0-9][a-z0-9_-]*",
                ));
            }
            if !seen.insert(role.name.as_str()) {
                return Err(invalid(
                    format!("vars.roles[{i}].name"),
                    format!("role {} appears twice", role.name),
                ));
            }
            if needs_images
                && (role.image.is_empty()
                    || role
                        .image
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(invalid(
                    format!("vars.roles[{i}].image"),
                    "must be an image reference",
                ));
            }
        }
        if let Some(registry) = &self.registry
            && let Some(why) = crate::validation::registry_address_error(&registry.address)
        {
            return Err(invalid("vars.registry.address", why));
        }
        Ok(())
    }
}

impl RunRequest {
    /// Checks the whole request; the service refuses an invalid one with 400.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.target.validate()?;
        self.vars.validate(self.playbook.needs_images())?;
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > 256)
        {
            return Err(invalid("idempotency_key", "must be 1 to 256 characters"));
        }
        if self.timeout_seconds == Some(0) {
            return Err(invalid("timeout_seconds", "must be positive"));
        }
        Ok(())
    }
}

impl HostLogsRequest {
    /// Checks the target, the directory and (when given) the file name.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.target.validate()?;
        validate_path("log_dir", &self.log_dir)?;
        if let Some(name) = &self.file {
            validate_file_name("file", name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RunRequest {
        RunRequest {
            playbook: Playbook::Provision,
            target: Target {
                host: "10.0.0.1".into(),
                port: 22,
                user: "root".into(),
                private_key: Secret::new("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"),
                known_hosts: "10.0.0.1 ssh-ed25519 AAAA".into(),
            },
            vars: ProvisionVars {
                roles: vec![RoleSpec {
                    name: "controller".into(),
                    config: "[GLOBAL]\n".into(),
                    image: "r:5000/contrail-controller:1".into(),
                }],
                ..ProvisionVars::default()
            },
            idempotency_key: None,
            timeout_seconds: None,
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut r = request();
        r.vars.registry = Some(RegistryAuth {
            address: "r:5000".into(),
            insecure: true,
            username: Some("u".into()),
            password: Some(Secret::new("hunter2")),
        });
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn defaults_fill_paths_and_prefix() {
        let json = r#"{"playbook":"check","target":{"host":"h","private_key":"k","known_hosts":"h k"},
                       "vars":{"roles":[{"name":"lb","config":"","image":"i"}]}}"#;
        let r: RunRequest = serde_json::from_str(json).expect("parse");
        assert_eq!(r.target.port, 22);
        assert_eq!(r.target.user, "root");
        assert_eq!(r.vars.config_dir, "/etc/contrail");
        assert_eq!(r.vars.container_prefix, "contrail-");
        r.validate().expect("valid");
    }

    #[test]
    fn refuses_unsafe_names_and_paths() {
        let mut r = request();
        r.target.host = "-oProxyCommand=x".into();
        assert_eq!(r.validate().unwrap_err().field, "target.host");
        let mut r = request();
        r.vars.roles[0].name = "../x".into();
        assert!(r.validate().is_err());
        let mut r = request();
        r.vars.config_dir = "/etc/../root".into();
        assert!(r.validate().is_err());
        let mut r = request();
        r.vars.log_dir = "/x:/etc:rw".into();
        assert_eq!(r.validate().unwrap_err().field, "vars.log_dir");
        for dir in ["/", "/etc", "//", "/var/log", "/proc/1"] {
            let mut r = request();
            r.vars.log_dir = dir.into();
            assert_eq!(r.validate().unwrap_err().field, "vars.log_dir", "{dir}");
        }
        let mut r = request();
        r.target.known_hosts = " ".into();
        assert!(r.validate().is_err());
        // The host, user, prefix and registry rules of the CRD schemas.
        for host in [
            "127.0.0.300",
            "127.0..1",
            "127.0.0.1:2222",
            "h_1",
            &"a".repeat(64),
        ] {
            let mut r = request();
            r.target.host = host.into();
            assert_eq!(r.validate().unwrap_err().field, "target.host", "{host}");
        }
        let mut r = request();
        r.target.host = "fe80::1".into();
        r.validate().expect("an IPv6 address is a host");
        let mut r = request();
        r.target.user = "a".repeat(33);
        assert_eq!(r.validate().unwrap_err().field, "target.user");
        let mut r = request();
        r.vars.container_prefix = String::new();
        assert_eq!(r.validate().unwrap_err().field, "vars.container_prefix");
        let mut r = request();
        r.vars.registry = Some(RegistryAuth {
            address: "127.0.0.1:99999".into(),
            ..Default::default()
        });
        assert_eq!(r.validate().unwrap_err().field, "vars.registry.address");
        assert!(validate_file_name("f", "..").is_err());
        assert!(validate_file_name("f", "a/b").is_err());
        assert!(validate_file_name("f", "contrail.log").is_ok());
    }

    #[test]
    fn config_content_is_not_restricted() {
        let mut r = request();
        r.vars.roles[0].config = "x = {{ lookup('pipe','id') }}; rm -rf /\n\u{e9}".into();
        r.validate()
            .expect("any content is allowed: it is marked unsafe");
    }
}
