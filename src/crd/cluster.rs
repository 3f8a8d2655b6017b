//! The `Cluster` resource: cluster-wide provisioning parameters, default images
//! per role, the registry and the rollout policy.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Condition, LocalObjectReference, Parameters, Role, condition::conditions_schema};

/// Cluster-wide provisioning parameters shared by every Server that references
/// this Cluster.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "servermanager.contrail.io",
    version = "v1alpha1",
    kind = "Cluster",
    doc = "A Contrail cluster: parameters shared by its Servers, default images, rollout policy.",
    plural = "clusters",
    singular = "cluster",
    shortname = "smcluster",
    shortname = "ctcl",
    category = "contrail",
    namespaced,
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Servers","type":"integer","jsonPath":".status.serversTotal"}"#,
    printcolumn = r#"{"name":"Ready-Servers","type":"integer","jsonPath":".status.serversReady"}"#,
    printcolumn = r#"{"name":"Updated","type":"integer","jsonPath":".status.serversUpdated"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.phase"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".status.rollout.currentRole"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","priority":1,"jsonPath":".status.rollout.revision"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Parameters of the role configuration files, by SECTION then key. Every
    /// Server of the cluster inherits them; a Server's own parameters override
    /// them key by key within a section. Each role's file takes the keys its
    /// schema knows.
    #[serde(default, skip_serializing_if = "is_default")]
    pub parameters: Parameters,

    /// The registry the hosts pull images from. Defaults to the operator's
    /// registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,

    /// Default Image (by name, in this namespace) for each role; a Server may
    /// override it per role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::role_images_schema")]
    pub images: BTreeMap<String, String>,

    /// How changes roll out over the Servers of this cluster: role order,
    /// per-role disruption budgets, readiness and failure handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

fn registry_address(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::registry_address_rules().schema()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A container registry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Registry address as `host[:port]`, optionally followed by a path prefix
    /// (`registry.example.com:5000/contrail`), without a scheme. The host is a
    /// name with a dot, `localhost`, an IPv4 address or `[IPv6]` (a
    /// single-label name needs a port: Docker would read it as a Docker Hub
    /// namespace); the port is 1 to 65535.
    #[schemars(schema_with = "registry_address")]
    pub address: String,
    /// Use plain HTTP instead of HTTPS. Only for registries on trusted networks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Secret (type `kubernetes.io/basic-auth`: `username`, `password`) with the
    /// registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// How changes roll over the Servers of a cluster.
///
/// A Server never provisioned before is *installed* at once (nothing can
/// become unavailable; only the runners' capacity limits how many install
/// together). A change to a provisioned Server is an *update*: roles are
/// updated in `order`, each within its `maxUnavailable` budget, and the
/// rollout pauses itself after `maxFailures` failed updates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Seconds every role container of a Server must have run without a
    /// restart (and be `healthy`, when its image has a health check) before
    /// the Server counts as available (`Ready`).
    #[serde(default = "default_min_ready_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: u32,

    /// Seconds an update may take, from the start of its run until the Server
    /// is available again; an update not available by then counts as failed.
    #[serde(default = "default_progress_deadline_seconds")]
    #[schemars(range(min = 30, max = 86400))]
    pub progress_deadline_seconds: u32,

    /// Per role, how many of the role's Servers may be updating or
    /// unavailable at the same time: a count (`2`) or a percentage of the
    /// role's Servers (`"10%"`, rounded down, at least 1). The key `default`
    /// applies to roles not listed. A Server with several roles counts in
    /// the budget of each.
    #[serde(default = "default_max_unavailable")]
    #[schemars(
        schema_with = "max_unavailable_schema",
        extend("default" = default_max_unavailable())
    )]
    pub max_unavailable: BTreeMap<String, IntOrString>,

    /// The order in which roles are updated: a role starts only when every
    /// Server of the roles before it is updated and Ready. Roles not listed
    /// come last, together. A Server with several roles goes with its
    /// earliest one.
    #[serde(default = "default_order")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "default" = default_order()))]
    pub order: Vec<Role>,

    /// Failed updates (a failed run, a container that exits or restarts, or
    /// no availability within `progressDeadlineSeconds`) after which the
    /// rollout pauses: no further update starts and the Servers not yet
    /// updated keep their running containers. A new generation of the Cluster
    /// or of a failed Server, or the retry annotation on a failed Server,
    /// resumes it.
    #[serde(default = "default_max_failures")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_failures: u32,

    /// Hold every update (installs and deletions still run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            min_ready_seconds: default_min_ready_seconds(),
            progress_deadline_seconds: default_progress_deadline_seconds(),
            max_unavailable: default_max_unavailable(),
            order: default_order(),
            max_failures: default_max_failures(),
            paused: false,
        }
    }
}

impl RolloutSpec {
    /// The budget of `role` given how many Servers have it: the role's entry,
    /// else `default`, else 1; a percentage rounds down; at least 1.
    pub fn max_unavailable_for(&self, role: Role, servers: usize) -> usize {
        let value = self
            .max_unavailable
            .get(role.as_str())
            .or_else(|| self.max_unavailable.get(DEFAULT_KEY));
        let n = match value {
            Some(IntOrString::Int(n)) => usize::try_from(*n).unwrap_or(0),
            Some(IntOrString::String(s)) => s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<usize>().ok())
                .map(|p| servers.saturating_mul(p) / 100)
                .unwrap_or(0),
            None => 1,
        };
        n.max(1)
    }

    /// Where `role` stands in the update order (roles not listed share the
    /// last place).
    pub fn rank(&self, role: Role) -> usize {
        self.order
            .iter()
            .position(|r| *r == role)
            .unwrap_or(self.order.len())
    }
}

/// The `maxUnavailable` key that applies to roles not listed.
pub const DEFAULT_KEY: &str = "default";

fn default_min_ready_seconds() -> u32 {
    10
}
fn default_progress_deadline_seconds() -> u32 {
    600
}
fn default_max_failures() -> u32 {
    1
}
fn default_max_unavailable() -> BTreeMap<String, IntOrString> {
    BTreeMap::from([(DEFAULT_KEY.to_string(), IntOrString::Int(1))])
}
fn default_order() -> Vec<Role> {
    vec![
        Role::Analyticsdb,
        Role::Controller,
        Role::Analytics,
        Role::Agent,
    ]
}

fn max_unavailable_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut keys: Vec<String> = Role::ALL.iter().map(|r| format!("'{r}'")).collect();
    keys.push(format!("'{DEFAULT_KEY}'"));
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "string(self).matches('^([1-9][0-9]*|(100|[1-9][0-9]?)%)$')",
                "message": "must be a count of at least 1 or a percentage from 1% to 100%"
            }]
        },
        "x-kubernetes-validations": [{
            "rule": format!("self.all(k, k in [{}])", keys.join(", ")),
            "message": format!("keys must be roles or '{DEFAULT_KEY}'")
        }]
    })
}

/// Observed state of a Cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every managed Server updated and available, and the
    /// cluster's own parameters valid), `Reconciling` (a rollout in
    /// progress), `Stalled` (paused by failures, a stalled Server, or invalid
    /// parameters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Number of Servers that reference this cluster.
    #[serde(default)]
    pub servers_total: u32,
    /// Number of those Servers that are Ready.
    #[serde(default)]
    pub servers_ready: u32,
    /// Number of managed Servers running their desired configuration.
    #[serde(default)]
    pub servers_updated: u32,
    /// Where the rollout of the desired configuration stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a cluster's rollout stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Short hash of the cluster-wide desired configuration (parameters,
    /// images and their digests, registry, rollout order): it changes when a
    /// change to roll out arrives.
    pub revision: String,
    /// `Complete`, `Installing`, `Updating`, `Paused` (by failures) or `Held`
    /// (`spec.rollout.paused`).
    pub phase: RolloutPhase,
    /// The role being updated now (the earliest role in the order with
    /// Servers still to update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_role: Option<String>,
    /// Per role, in update order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleRolloutStatus>,
    /// Managed Servers whose update failed (they count towards `maxFailures`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_servers: Vec<String>,
}

/// Phase of a cluster's rollout.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutPhase {
    /// Every managed Server runs its desired configuration and is Ready.
    #[default]
    Complete,
    /// Servers never provisioned are being installed; no update is waiting.
    Installing,
    /// Updates are rolling by role.
    Updating,
    /// Paused: `maxFailures` updates failed; no update starts.
    Paused,
    /// Held: `spec.rollout.paused` is true; no update starts.
    Held,
}

/// A role's share of the rollout.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleRolloutStatus {
    /// The role.
    pub role: Role,
    /// Managed Servers with the role.
    pub total: u32,
    /// Of those, running their desired configuration.
    pub updated: u32,
    /// Of those, Ready (updated and available).
    pub ready: u32,
    /// Of those, updating now or not available.
    pub unavailable: u32,
    /// Of those, whose update failed.
    pub failed: u32,
    /// The most that may be updating or unavailable at once.
    pub max_unavailable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_unavailable_rules_evaluate() {
        let schema = max_unavailable_schema(&mut schemars::SchemaGenerator::default());
        let value = schema.as_value();
        let item = value["additionalProperties"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        let eval = |v| crate::apiserver::schema::eval_rule(item, &v).unwrap();
        assert!(eval(json!(1)));
        assert!(eval(json!(3)));
        assert!(!eval(json!(0)));
        assert!(eval(json!("10%")));
        assert!(eval(json!("100%")));
        assert!(!eval(json!("0%")));
        assert!(!eval(json!("101%")));
        assert!(!eval(json!("ten")));
        let keys = value["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap();
        let eval = |v| crate::apiserver::schema::eval_rule(keys, &v).unwrap();
        assert!(eval(json!({"default": 1, "agent": "10%"})));
        assert!(!eval(json!({"agents": 1})));
    }

    #[test]
    fn budgets_by_role() {
        let spec: RolloutSpec =
            serde_json::from_value(json!({"maxUnavailable": {"default": 2, "agent": "10%"}}))
                .unwrap();
        assert_eq!(spec.max_unavailable_for(Role::Agent, 300), 30);
        assert_eq!(spec.max_unavailable_for(Role::Agent, 5), 1);
        assert_eq!(spec.max_unavailable_for(Role::Controller, 3), 2);
        assert_eq!(spec.min_ready_seconds, 10);
        assert_eq!(spec.rank(Role::Analyticsdb), 0);
        assert_eq!(spec.rank(Role::Lb), 4);
    }
}
