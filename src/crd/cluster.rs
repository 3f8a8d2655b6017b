//! The `Cluster` resource: cluster-wide provisioning parameters, default images
//! per role, the registry and the rollout policy.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, LocalObjectReference, Parameters, condition::conditions_schema};

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
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Max-Parallel","type":"integer","priority":1,"jsonPath":".spec.rollout.maxParallel"}"#,
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

    /// How changes roll out over the Servers of this cluster.
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

/// Rollout policy of a cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// How many Servers of this cluster may be (re)provisioned at the same time,
    /// so a change that touches every Server never takes the whole control plane
    /// down at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_parallel: u32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            max_parallel: default_max_parallel(),
        }
    }
}

fn default_max_parallel() -> u32 {
    1
}

/// Observed state of a Cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when every managed Server of the cluster is Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Number of Servers that reference this cluster.
    #[serde(default)]
    pub servers_total: u32,
    /// Number of those Servers that are Ready.
    #[serde(default)]
    pub servers_ready: u32,
}
