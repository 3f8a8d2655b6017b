//! The role schema the project owns: which sections and keys each role's file
//! accepts, their types, and which values are required. Imported once from the
//! upstream contrailctl schemas (see `scripts/import-contrailctl-schema.py`) and
//! maintained here since.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::crd::Role;

/// The type a key's value must have in the role file.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// A string; numbers are accepted and written as text, a list of scalars is
    /// written comma-separated (`controller_nodes = 10.0.0.1,10.0.0.2`).
    String,
    /// `True` / `False`.
    Boolean,
    /// A Python list literal (`['a', 'b']`).
    Array,
    /// A Python dict literal (`{"host1": "10.0.0.1"}`).
    Object,
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueType::String => "a string (or number, or list joined with commas)",
            ValueType::Boolean => "a boolean",
            ValueType::Array => "a list",
            ValueType::Object => "a map",
        })
    }
}

/// One key of a section.
#[derive(Deserialize, Debug)]
pub struct KeySchema {
    /// Option name (lower case).
    pub name: String,
    /// Expected type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The role cannot start without it.
    #[serde(default)]
    pub required: bool,
    /// What the key does.
    #[serde(default)]
    pub description: String,
}

/// One section of a role file.
#[derive(Deserialize, Debug)]
pub struct SectionSchema {
    /// Section name as written in the file (`GLOBAL`).
    pub name: String,
    /// Keys, in the upstream order.
    pub keys: Vec<KeySchema>,
}

impl SectionSchema {
    /// The key named `name`, if the section has it.
    pub fn key(&self, name: &str) -> Option<&KeySchema> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// The sections of one role's file, in the order they are rendered.
#[derive(Deserialize, Debug)]
pub struct RoleSchema {
    /// Sections; `GLOBAL` first.
    pub sections: Vec<SectionSchema>,
}

impl RoleSchema {
    /// The section named `name`, if the role's file has it.
    pub fn section(&self, name: &str) -> Option<&SectionSchema> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[derive(Deserialize)]
struct Catalog {
    roles: std::collections::BTreeMap<String, RoleSchema>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    // The file is part of the binary; the unit tests below prove it parses and
    // covers every role, so this cannot fail at run time.
    #[allow(clippy::expect_used)]
    serde_json::from_str(include_str!("roles.json")).expect("embedded roles.json parses")
});

/// The schema of `role`'s file.
pub fn role_schema(role: Role) -> &'static RoleSchema {
    #[allow(clippy::expect_used)]
    CATALOG
        .roles
        .get(role.as_str())
        .expect("every role has a schema (checked by tests)")
}

/// Whether any role's file has section `name`.
pub fn section_known_to_any_role(name: &str) -> bool {
    CATALOG.roles.values().any(|r| r.section(name).is_some())
}

/// Roles whose file has `section` and in it `key`.
pub fn roles_knowing(section: &str, key: &str) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| {
            role_schema(*r)
                .section(section)
                .is_some_and(|s| s.key(key).is_some())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_a_schema_with_global_first() {
        for role in Role::ALL {
            let schema = role_schema(role);
            assert_eq!(schema.sections[0].name, "GLOBAL", "{role}");
            assert!(
                schema
                    .section("GLOBAL")
                    .and_then(|s| s.key("controller_nodes"))
                    .is_some()
            );
        }
        assert_eq!(CATALOG.roles.len(), Role::ALL.len());
    }

    #[test]
    fn sections_match_the_contrailctl_files() {
        let names = |r| -> Vec<&str> {
            role_schema(r)
                .sections
                .iter()
                .map(|s| s.name.as_str())
                .collect()
        };
        for s in [
            "GLOBAL",
            "CONTROLLER",
            "CONTROL",
            "DNS",
            "CASSANDRA",
            "API",
            "WEBUI",
        ] {
            assert!(names(Role::Controller).contains(&s), "controller lacks {s}");
        }
        assert_eq!(
            names(Role::Agent),
            ["GLOBAL", "KEYSTONE", "KUBERNETES", "AGENT", "HYPERVISOR"]
        );
        assert_eq!(
            names(Role::Analyticsdb),
            ["GLOBAL", "KEYSTONE", "CASSANDRA"]
        );
        let data_dirs = role_schema(Role::Analyticsdb)
            .section("CASSANDRA")
            .and_then(|s| s.key("data_dirs"))
            .map(|k| k.value_type);
        assert_eq!(data_dirs, Some(ValueType::Array));
    }
}
