//! The table of served resources: the built-in kinds (stored as plain
//! documents) and one entry per served version of each CustomResourceDefinition.

use serde_json::Value;

use super::store::ResKey;

/// Kinds that need handling beyond "store the document".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Special {
    None,
    Namespace,
    Secret,
    /// core/v1 events (the storage form).
    Event,
    /// events.k8s.io/v1 events: a view of the core/v1 store.
    EventV1,
    Crd,
    /// A custom resource (schema, status subresource rules, 415 for SMP).
    Custom,
    /// A create-only review (SelfSubjectAccessReview, …): answered, never stored.
    Review,
}

/// One served resource in one group/version.
#[derive(Clone, Debug)]
pub(super) struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Tracks `metadata.generation`.
    pub generation: bool,
    /// The CRD's `openAPIV3Schema` for this version.
    pub schema: Option<Value>,
    /// The CRD's `additionalPrinterColumns` for this version (`Null` for built-ins).
    pub printer_columns: Value,
    pub special: Special,
    /// Where the objects are stored (shared by all versions, and by both event APIs).
    pub storage: ResKey,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.special == Special::Review {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    special: Special,
) -> ResourceInfo {
    let storage = if special == Special::EventV1 {
        ResKey::new("", "events")
    } else {
        ResKey::new(group, plural)
    };
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status,
        generation: matches!(special, Special::Crd)
            || matches!(plural, "deployments" | "statefulsets" | "networkpolicies"),
        schema: None,
        printer_columns: Value::Null,
        special,
        storage,
    }
}

/// The built-in resources.
pub(super) fn builtins() -> Vec<ResourceInfo> {
    use Special as S;
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            S::Namespace,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, S::Secret),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            S::None,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            S::None,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], false, S::Event),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            S::None,
        ),
        builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            true,
            S::None,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            S::None,
        ),
        builtin(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            S::None,
        ),
        // The runner Service's endpoints, which the operator watches for the
        // ready runners (nothing here fills them: the tests write them).
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            false,
            S::None,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
            S::None,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            S::None,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            S::None,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            S::None,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            false,
            S::None,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            S::None,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            S::EventV1,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
            S::Review,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
            &[],
            false,
            S::Review,
        ),
        builtin(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
            false,
            S::Review,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            S::Crd,
        ),
    ]
}

/// The resources a stored CRD serves (one per served version).
pub(super) fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let Some(group) = spec["group"].as_str() else {
        return Vec::new();
    };
    let names = &spec["names"];
    let (Some(plural), Some(kind)) = (names["plural"].as_str(), names["kind"].as_str()) else {
        return Vec::new();
    };
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let Some(version) = v["name"].as_str() else {
            continue;
        };
        out.push(ResourceInfo {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: names["singular"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.into(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: v["subresources"]["status"].is_object(),
            generation: true,
            schema: v["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| v["schema"]["openAPIV3Schema"].clone()),
            printer_columns: v["additionalPrinterColumns"].clone(),
            special: Special::Custom,
            storage: ResKey::new(group, plural),
        });
    }
    out
}
