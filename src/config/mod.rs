//! The effective-configuration engine: from a Cluster, its Servers and one Server
//! to that Server's role files. Pure: no client, no I/O.
//!
//! Pipeline: cluster parameters → derived parameters (`controller_nodes`, … from
//! the hosts of the cluster's Servers with those roles, External ones included,
//! unless set explicitly) → server overrides (key by key within a section; `null`
//! removes an inherited value) → per role, the sections and keys its schema
//! knows, validated and rendered as one INI file. Every value keeps where it came
//! from ([`Source`]); the result carries a content hash.

pub mod render;
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::crd::{ClusterSpec, Parameters, Role, ServerSpec};
use render::{IniEntry, format_value, render_ini};
use schema::{role_schema, roles_knowing, section_known_to_any_role};

/// Parameters derived from the cluster's membership: GLOBAL key → the role whose
/// Servers' hosts it lists.
pub const DERIVED: [(&str, Role); 5] = [
    ("controller_nodes", Role::Controller),
    ("analytics_nodes", Role::Analytics),
    ("analyticsdb_nodes", Role::Analyticsdb),
    ("compute_nodes", Role::Agent),
    ("ceph_controller_nodes", Role::Cephcontroller),
];

/// The section derived parameters live in.
pub const GLOBAL: &str = "GLOBAL";

/// A Cluster, by name.
#[derive(Debug, Clone, Copy)]
pub struct ClusterInput<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a ClusterSpec,
}

/// A Server, by name. Pass only Servers that count (not being deleted).
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// The spec.
    pub spec: &'a ServerSpec,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The Cluster's `spec.parameters`.
    Cluster(String),
    /// The Server's `spec.parameters`.
    Server(String),
    /// Computed from the hosts of the cluster's Servers that have `role`.
    Derived {
        /// The role whose Servers were listed.
        role: Role,
        /// Those Servers, by name.
        servers: Vec<String>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cluster(n) => write!(f, "cluster {n}"),
            Source::Server(n) => write!(f, "server {n}"),
            Source::Derived { role, servers } => write!(
                f,
                "derived from the hosts of Servers with role {role} ({})",
                servers.join(", ")
            ),
        }
    }
}

/// A problem with one value (or a missing one), naming role, section, key and
/// where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The role whose file is affected, when the problem is role-specific.
    pub role: Option<Role>,
    /// The section.
    pub section: String,
    /// The key, when the problem is about one key.
    pub key: Option<String>,
    /// Where the offending value came from; `None` for a missing value.
    pub source: Option<Source>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(role) = self.role {
            write!(f, "role {role}: ")?;
        }
        write!(f, "[{}]", self.section)?;
        if let Some(key) = &self.key {
            write!(f, " {key}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

/// One rendered value and its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Section.
    pub section: String,
    /// Key.
    pub key: String,
    /// The value as written in the file.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// The file of one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// The role.
    pub role: Role,
    /// The INI file, exactly as written on the host.
    pub content: String,
    /// `sha256:<hex>` of `content`.
    pub hash: String,
    /// Every value in the file, in file order, with its provenance.
    pub values: Vec<Provenance>,
}

/// A Server's role files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// The Server.
    pub server: String,
    /// One file per role, in the order of [`Role::ALL`].
    pub roles: Vec<RoleConfig>,
    /// `sha256:<hex>` over every role and file.
    pub hash: String,
}

type Merged = BTreeMap<String, BTreeMap<String, (Value, Source)>>;

/// The values a cluster's membership implies: for each key of [`DERIVED`],
/// the hosts of the members with its role (ordered by Server name, each host
/// once) and those members' names. Depends only on the members' names,
/// hosts and roles, so it is computed once per membership change and shared
/// by every Server of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    /// Per key of [`DERIVED`] with at least one member: (hosts, Server names).
    pub values: BTreeMap<&'static str, (Vec<String>, Vec<String>)>,
}

impl Derived {
    /// Derives the values from the cluster `cluster`'s members (`members` may
    /// include Servers of other clusters; they are ignored).
    pub fn from_members(cluster: &str, members: &[Member<'_>]) -> Derived {
        let mut values = BTreeMap::new();
        for (key, role) in DERIVED {
            let mut with_role: Vec<&Member<'_>> = members
                .iter()
                .filter(|m| m.spec.cluster_ref.name == cluster && m.spec.roles.contains(&role))
                .collect();
            with_role.sort_by(|a, b| a.name.cmp(b.name));
            with_role.dedup_by(|a, b| a.name == b.name);
            let mut hosts: Vec<String> = Vec::new();
            for m in &with_role {
                if !hosts.contains(&m.spec.host) {
                    hosts.push(m.spec.host.clone());
                }
            }
            if !hosts.is_empty() {
                let names = with_role.iter().map(|m| m.name.to_string()).collect();
                values.insert(key, (hosts, names));
            }
        }
        Derived { values }
    }

    /// The keys whose values differ between `self` and `other`.
    pub fn changed_keys(&self, other: &Derived) -> Vec<&'static str> {
        DERIVED
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| self.values.get(k).map(|v| &v.0) != other.values.get(k).map(|v| &v.0))
            .collect()
    }
}

/// Computes `server`'s role files from its cluster and the cluster's members
/// (`members` may include Servers of other clusters; they are ignored).
pub fn effective_config(
    cluster: ClusterInput<'_>,
    members: &[Member<'_>],
    server: Member<'_>,
) -> Result<EffectiveConfig, ConfigErrors> {
    let derived = Derived::from_members(cluster.name, members);
    effective_config_with(cluster, &derived, server)
}

/// Computes `server`'s role files from its cluster and the values its
/// cluster's membership implies.
pub fn effective_config_with(
    cluster: ClusterInput<'_>,
    derived: &Derived,
    server: Member<'_>,
) -> Result<EffectiveConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let mut merged: Merged = BTreeMap::new();
    let mut roles: Vec<Role> = server.spec.roles.clone();
    roles.sort();
    roles.dedup();

    merge_cluster(cluster, &mut merged, &mut errors);
    derive(derived, &server.spec.parameters, &mut merged);
    merge_server(server, &roles, &mut merged, &mut errors);

    let mut files = Vec::new();
    for role in roles {
        if let Some(file) = render_role(role, &merged, &mut errors) {
            files.push(file);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut hasher = Sha256::new();
    for f in &files {
        hasher.update(f.role.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(f.content.as_bytes());
        hasher.update([0]);
    }
    Ok(EffectiveConfig {
        server: server.name.to_string(),
        roles: files,
        hash: format!("sha256:{}", hex::encode(hasher.finalize())),
    })
}

fn merge_cluster(cluster: ClusterInput<'_>, merged: &mut Merged, errors: &mut Vec<ConfigError>) {
    let source = Source::Cluster(cluster.name.to_string());
    for (section, keys) in &cluster.spec.parameters.0 {
        if !section_known_to_any_role(section) {
            errors.push(unknown_section(section, &source, None));
            continue;
        }
        for (key, value) in keys {
            if roles_knowing(section, key).is_empty() {
                errors.push(ConfigError {
                    role: None,
                    section: section.clone(),
                    key: Some(key.clone()),
                    source: Some(source.clone()),
                    problem: format!("no role's [{section}] section has this key"),
                });
            } else if !value.0.is_null() {
                merged
                    .entry(section.clone())
                    .or_default()
                    .insert(key.clone(), (value.0.clone(), source.clone()));
            }
        }
    }
}

/// Checks a Cluster's parameters on their own, as every role they would
/// reach reads them: each section must be one some role's file has, each key
/// one of that section in some role, and each value writable (right type,
/// read back as given) for every role whose file takes that key. Needs no
/// Server: a Cluster can report these before any Server references it.
/// Values a Server adds, overrides or derives, and required values, are
/// judged per Server by [`effective_config`].
///
/// Errors name the section and key (`[GLOBAL] xmpp_auth_enable (from cluster
/// lab): expected a boolean, got a string; read by roles ...`), in a stable
/// order.
pub fn validate_cluster_parameters(cluster: ClusterInput<'_>) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    let mut merged: Merged = BTreeMap::new();
    merge_cluster(cluster, &mut merged, &mut errors);
    for (section, keys) in &merged {
        for (key, (value, source)) in keys {
            // The problem, and the roles it is one for.
            let mut problems: Vec<(String, Vec<Role>)> = Vec::new();
            for role in roles_knowing(section, key) {
                let Some(key_schema) = role_schema(role).section(section).and_then(|s| s.key(key))
                else {
                    continue;
                };
                if let Err(e) = format_value(value, key_schema.value_type) {
                    let problem = e.to_string();
                    match problems.iter_mut().find(|(p, _)| *p == problem) {
                        Some((_, roles)) => roles.push(role),
                        None => problems.push((problem, vec![role])),
                    }
                }
            }
            for (problem, roles) in problems {
                errors.push(ConfigError {
                    role: None,
                    section: section.clone(),
                    key: Some(key.clone()),
                    source: Some(source.clone()),
                    problem: format!("{problem}; read by roles {}", role_list(&roles)),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

fn derive(derived: &Derived, server_params: &Parameters, merged: &mut Merged) {
    let server_global = server_params.0.get(GLOBAL);
    for (key, role) in DERIVED {
        let explicit = merged.get(GLOBAL).is_some_and(|g| g.contains_key(key))
            || server_global.is_some_and(|g| g.contains_key(key));
        if explicit {
            continue;
        }
        let Some((hosts, servers)) = derived.values.get(key) else {
            continue;
        };
        let source = Source::Derived {
            role,
            servers: servers.clone(),
        };
        let hosts = hosts.iter().cloned().map(Value::String).collect();
        merged
            .entry(GLOBAL.to_string())
            .or_default()
            .insert(key.to_string(), (Value::Array(hosts), source));
    }
}

/// The derived keys the cluster sets explicitly (its members' hosts never
/// reach them).
pub fn explicit_derived_keys(cluster: &ClusterSpec) -> Vec<&'static str> {
    let global = cluster.parameters.0.get(GLOBAL);
    DERIVED
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| global.is_some_and(|g| g.get(*k).is_some_and(|v| !v.0.is_null())))
        .collect()
}

fn merge_server(
    server: Member<'_>,
    roles: &[Role],
    merged: &mut Merged,
    errors: &mut Vec<ConfigError>,
) {
    let source = Source::Server(server.name.to_string());
    for (section, keys) in &server.spec.parameters.0 {
        let using: Vec<Role> = roles
            .iter()
            .copied()
            .filter(|r| role_schema(*r).section(section).is_some())
            .collect();
        if using.is_empty() {
            errors.push(unknown_section(section, &source, Some(roles)));
            continue;
        }
        for (key, value) in keys {
            let known = using.iter().any(|r| {
                role_schema(*r)
                    .section(section)
                    .and_then(|s| s.key(key))
                    .is_some()
            });
            if !known {
                errors.push(ConfigError {
                    role: None,
                    section: section.clone(),
                    key: Some(key.clone()),
                    source: Some(source.clone()),
                    problem: format!(
                        "unknown key: the [{section}] section of {} has no such key",
                        role_list(&using)
                    ),
                });
                continue;
            }
            let entry = merged.entry(section.clone()).or_default();
            if value.0.is_null() {
                entry.remove(key);
            } else {
                entry.insert(key.clone(), (value.0.clone(), source.clone()));
            }
        }
    }
}

fn render_role(role: Role, merged: &Merged, errors: &mut Vec<ConfigError>) -> Option<RoleConfig> {
    let schema = role_schema(role);
    let errors_before = errors.len();
    let mut sections = Vec::new();
    let mut values = Vec::new();
    for section in &schema.sections {
        let given = merged.get(&section.name);
        let mut entries = Vec::new();
        if let Some(given) = given {
            for (key, (value, source)) in given {
                // Keys for other roles' variant of a shared section are skipped.
                let Some(key_schema) = section.key(key) else {
                    continue;
                };
                match format_value(value, key_schema.value_type) {
                    Ok(text) => {
                        values.push(Provenance {
                            section: section.name.clone(),
                            key: key.clone(),
                            value: text.clone(),
                            source: source.clone(),
                        });
                        entries.push(IniEntry {
                            key: key.clone(),
                            value: text,
                        });
                    }
                    Err(e) => errors.push(ConfigError {
                        role: Some(role),
                        section: section.name.clone(),
                        key: Some(key.clone()),
                        source: Some(source.clone()),
                        problem: e.to_string(),
                    }),
                }
            }
        }
        for key in section.keys.iter().filter(|k| k.required) {
            if !given.is_some_and(|g| g.contains_key(&key.name)) {
                let hint = DERIVED
                    .iter()
                    .find(|(k, _)| *k == key.name)
                    .map(|(_, r)| format!(", or add a Server with role {r} to the cluster"))
                    .unwrap_or_default();
                errors.push(ConfigError {
                    role: Some(role),
                    section: section.name.clone(),
                    key: Some(key.name.clone()),
                    source: None,
                    problem: format!(
                        "required value missing: set it in the Cluster or the Server{hint}"
                    ),
                });
            }
        }
        sections.push((section.name.clone(), entries));
    }
    if errors.len() > errors_before {
        return None;
    }
    let content = render_ini(&sections);
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(content.as_bytes())));
    Some(RoleConfig {
        role,
        content,
        hash,
        values,
    })
}

fn unknown_section(section: &str, source: &Source, roles: Option<&[Role]>) -> ConfigError {
    let problem = match roles {
        Some(roles) if section_known_to_any_role(section) => format!(
            "section not used by this server's roles ({}); it belongs in the Cluster or in a Server with a role that has it",
            role_list(roles)
        ),
        _ => "unknown section: no role's file has it".to_string(),
    };
    ConfigError {
        role: None,
        section: section.to_string(),
        key: None,
        source: Some(source.clone()),
        problem,
    }
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Computes `server`'s role files from its Cluster and every Server that may be
/// a member (same namespace, same `clusterRef`; Servers being deleted do not
/// count).
pub fn for_server<'a>(
    cluster: &crate::crd::Cluster,
    servers: impl IntoIterator<Item = &'a crate::crd::Server>,
    server: &crate::crd::Server,
) -> Result<EffectiveConfig, ConfigErrors> {
    use kube::{Resource, ResourceExt};
    let cluster_name = cluster.name_any();
    let members: Vec<(String, &ServerSpec)> = servers
        .into_iter()
        .filter(|s| s.spec.cluster_ref.name == cluster_name)
        .filter(|s| s.meta().deletion_timestamp.is_none() && s.namespace() == cluster.namespace())
        .map(|s| (s.name_any(), &s.spec))
        .collect();
    let members: Vec<Member<'_>> = members
        .iter()
        .map(|(name, spec)| Member { name, spec })
        .collect();
    let name = server.name_any();
    effective_config(
        ClusterInput {
            name: &cluster_name,
            spec: &cluster.spec,
        },
        &members,
        Member {
            name: &name,
            spec: &server.spec,
        },
    )
}

#[cfg(test)]
mod tests;
