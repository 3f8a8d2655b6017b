//! The custom resources of group `servermanager.contrail.io`, version `v1alpha1`:
//! [`Cluster`], [`Server`] and [`Image`], plus the types they share (roles,
//! parameters, conditions). The CRD YAML in `crds/` is generated from these types.

mod cluster;
mod condition;
mod image;
mod server;

pub use cluster::{
    Cluster, ClusterSpec, ClusterStatus, RegistrySpec, RoleRolloutStatus, RolloutPhase,
    RolloutSpec, RolloutStatus,
};
pub use condition::{Condition, ConditionStatus, now_rfc3339, set_condition};
pub use image::{Image, ImageCategory, ImageSource, ImageSpec, ImageStatus};
pub use server::{
    ContainerPhase, ContainerStatus, HostLayout, KNOWN_HOSTS, Provisioning, RunStatus,
    SSH_PRIVATE_KEY, Server, ServerSpec, ServerStatus, SshSpec, SshTargetError, UpdateStatus,
};

use std::collections::BTreeMap;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource of this project.
pub const GROUP: &str = "servermanager.contrail.io";
/// API version of every resource of this project.
pub const VERSION: &str = "v1alpha1";
/// Category shared by the three kinds, so `kubectl get contrail` lists them all.
pub const CATEGORY: &str = "contrail";

/// A Contrail container role: which `contrail-<role>` container runs and which
/// configuration file (`/etc/contrailctl/<role>.conf`) it reads.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Config API, control, DNS, schema transformer, WebUI, device manager.
    Controller,
    /// Analytics API, collector, query engine, alarm generator.
    Analytics,
    /// Cassandra/Kafka/Zookeeper for analytics.
    Analyticsdb,
    /// The vRouter agent of a compute node.
    Agent,
    /// HAProxy load balancer in front of the controllers.
    Lb,
    /// The Kubernetes manager.
    Kubemanager,
    /// The vRouter agent for Kubernetes nodes.
    Kubernetesagent,
    /// The vCenter plugin.
    Vcenterplugin,
    /// The Ceph storage controller.
    Cephcontroller,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 9] = [
        Role::Controller,
        Role::Analytics,
        Role::Analyticsdb,
        Role::Agent,
        Role::Lb,
        Role::Kubemanager,
        Role::Kubernetesagent,
        Role::Vcenterplugin,
        Role::Cephcontroller,
    ];

    /// The role's name as written in manifests, file names and container names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Analytics => "analytics",
            Role::Analyticsdb => "analyticsdb",
            Role::Agent => "agent",
            Role::Lb => "lb",
            Role::Kubemanager => "kubemanager",
            Role::Kubernetesagent => "kubernetesagent",
            Role::Vcenterplugin => "vcenterplugin",
            Role::Cephcontroller => "cephcontroller",
        }
    }

    /// Parses a role name as written in manifests.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CEL rule: every key of a role-keyed map is a known role.
pub(crate) fn role_keys_rule() -> serde_json::Value {
    let roles: Vec<String> = Role::ALL.iter().map(|r| format!("'{r}'")).collect();
    serde_json::json!([{
        "rule": format!("self.all(k, k in [{}])", roles.join(", ")),
        "message": format!("keys must be roles: {}", Role::ALL.map(|r| r.as_str()).join(", ")),
    }])
}

/// One parameter value: a string, number, boolean, list or map, rendered into the
/// role file as the containers expect; `null` in a Server removes a value it would
/// inherit from its Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct ParameterValue(pub serde_json::Value);

impl JsonSchema for ParameterValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ParameterValue".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string, number, boolean, list or map; null (in a Server) removes the value inherited from the Cluster.",
            "nullable": true,
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Keys of one section of a role file: option name → value.
pub type SectionParameters = BTreeMap<String, ParameterValue>;

/// Provisioning parameters, grouped as in the role configuration files:
/// SECTION (`GLOBAL`, `CONTROLLER`, `ANALYTICS_API`, …) → key → value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct Parameters(pub BTreeMap<String, SectionParameters>);

impl JsonSchema for Parameters {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Parameters".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A section is an object whose keys are kept as given, not a map of
        // typed values: a value may be of any JSON type, and kube-apiserver
        // exposes to CEL neither an untyped schema nor a map of them, so a
        // rule on the sections would not compile there. Section names are
        // judged here; keys and values against the role schemas, later
        // (`crate::config`).
        schemars::json_schema!({
            "description": "Role file parameters: SECTION (upper case, e.g. GLOBAL, CONTROLLER) -> key (lower case) -> value (a string, number, boolean, list or map; null, in a Server, removes the value inherited from the Cluster).",
            "type": "object",
            "maxProperties": MAX_SECTIONS,
            "additionalProperties": {
                "type": "object",
                "maxProperties": MAX_SECTION_KEYS,
                "x-kubernetes-preserve-unknown-fields": true
            },
            "x-kubernetes-validations": [{
                "rule": "self.all(s, s.matches('^[A-Z][A-Z0-9_]*$'))",
                "message": "section names must be upper case letters, digits and '_' (GLOBAL, CONTROLLER, ...)"
            }]
        })
    }
}

/// Most sections a `parameters` map may hold (the role files know 27).
pub const MAX_SECTIONS: usize = 64;
/// Most keys one section of `parameters` may hold (the largest role file
/// section, GLOBAL, knows 52).
pub const MAX_SECTION_KEYS: usize = 256;

/// A reference to an object of another kind in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace: lower case
    /// letters, digits, `-` and `.`, starting and ending with a letter or
    /// digit.
    #[schemars(schema_with = "object_name")]
    pub name: String,
}

fn object_name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    crate::validation::object_name_schema()
}

/// The schema of a role -> Image name map (`images` of a Server or Cluster):
/// keys are roles, values object names.
pub(crate) fn role_images_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": Role::ALL.len(),
        "additionalProperties": crate::validation::object_name_schema(),
        "x-kubernetes-validations": role_keys_rule(),
    })
}

/// All CustomResourceDefinitions of this project, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![Cluster::crd(), Image::crd(), Server::crd()]
}

/// The CRDs as the YAML documents committed in `crds/`: (file name, content).
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.spec.names.plural);
            serde_yaml::to_string(&crd).map(|y| (name, y))
        })
        .collect()
}
