//! Unit and property tests of the effective-configuration engine.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::crd::{LocalObjectReference, ParameterValue, Provisioning, SectionParameters};

fn params(v: Value) -> Parameters {
    serde_json::from_value(v).unwrap()
}

fn cluster(p: Value) -> ClusterSpec {
    ClusterSpec {
        parameters: params(p),
        ..Default::default()
    }
}

fn server(host: &str, roles: &[Role], p: Value) -> ServerSpec {
    ServerSpec {
        cluster_ref: LocalObjectReference { name: "lab".into() },
        host: host.into(),
        provisioning: Provisioning::Managed,
        ssh: None,
        roles: roles.to_vec(),
        images: BTreeMap::new(),
        parameters: params(p),
        suspend: false,
        layout: None,
    }
}

fn compute(
    c: &ClusterSpec,
    members: &[(&str, &ServerSpec)],
    target: &str,
) -> Result<EffectiveConfig, ConfigErrors> {
    let members: Vec<Member<'_>> = members
        .iter()
        .map(|(n, s)| Member { name: n, spec: s })
        .collect();
    let me = *members.iter().find(|m| m.name == target).unwrap();
    effective_config(
        ClusterInput {
            name: "lab",
            spec: c,
        },
        &members,
        me,
    )
}

fn value_of<'a>(
    cfg: &'a EffectiveConfig,
    role: Role,
    section: &str,
    key: &str,
) -> Option<&'a Provenance> {
    cfg.roles
        .iter()
        .find(|r| r.role == role)?
        .values
        .iter()
        .find(|p| p.section == section && p.key == key)
}

#[test]
fn server_wins_per_key_and_other_keys_are_kept() {
    let c = cluster(
        json!({"GLOBAL": {"log_level": "SYS_NOTICE", "cloud_orchestrator": "kubernetes"},
                           "CONTROLLER": {"bgp_asn": "64512"}}),
    );
    let s = server(
        "10.0.0.1",
        &[Role::Controller],
        json!({"GLOBAL": {"log_level": "SYS_DEBUG"}}),
    );
    let cfg = compute(&c, &[("s1", &s)], "s1").unwrap();
    let log = value_of(&cfg, Role::Controller, "GLOBAL", "log_level").unwrap();
    assert_eq!(log.value, "SYS_DEBUG");
    assert_eq!(log.source, Source::Server("s1".into()));
    let orch = value_of(&cfg, Role::Controller, "GLOBAL", "cloud_orchestrator").unwrap();
    assert_eq!(orch.value, "kubernetes");
    assert_eq!(orch.source, Source::Cluster("lab".into()));
    assert_eq!(
        value_of(&cfg, Role::Controller, "CONTROLLER", "bgp_asn")
            .unwrap()
            .value,
        "64512"
    );
}

#[test]
fn server_null_removes_an_inherited_value() {
    let c = cluster(json!({"GLOBAL": {"log_level": "SYS_NOTICE"}}));
    let s = server(
        "10.0.0.1",
        &[Role::Controller],
        json!({"GLOBAL": {"log_level": null}}),
    );
    let cfg = compute(&c, &[("s1", &s)], "s1").unwrap();
    assert!(value_of(&cfg, Role::Controller, "GLOBAL", "log_level").is_none());
    assert!(!cfg.roles[0].content.contains("log_level"));
}

#[test]
fn derived_nodes_count_external_servers_and_explicit_values_win() {
    let c = cluster(json!({}));
    let ctl = server("10.0.0.1", &[Role::Controller, Role::Analytics], json!({}));
    let mut ext = server("10.0.0.9", &[Role::Controller], json!({}));
    ext.provisioning = Provisioning::External;
    let db = server("10.0.0.2", &[Role::Analyticsdb], json!({}));
    let agent = server("10.0.0.3", &[Role::Agent], json!({}));
    let mut other = server("10.9.9.9", &[Role::Controller], json!({}));
    other.cluster_ref.name = "elsewhere".into();
    let all = [
        ("ctl", &ctl),
        ("ext", &ext),
        ("db", &db),
        ("agent", &agent),
        ("other", &other),
    ];
    let cfg = compute(&c, &all, "agent").unwrap();
    let nodes = value_of(&cfg, Role::Agent, "GLOBAL", "controller_nodes").unwrap();
    assert_eq!(nodes.value, "10.0.0.1,10.0.0.9");
    assert_eq!(
        nodes.source,
        Source::Derived {
            role: Role::Controller,
            servers: vec!["ctl".into(), "ext".into()]
        }
    );
    assert_eq!(
        value_of(&cfg, Role::Agent, "GLOBAL", "analyticsdb_nodes")
            .unwrap()
            .value,
        "10.0.0.2"
    );
    assert_eq!(
        value_of(&cfg, Role::Agent, "GLOBAL", "compute_nodes")
            .unwrap()
            .value,
        "10.0.0.3"
    );

    // Explicit in the cluster wins over derived; explicit in the server wins over both.
    let c2 = cluster(json!({"GLOBAL": {"controller_nodes": ["192.0.2.1", "192.0.2.2"]}}));
    let cfg = compute(&c2, &all, "agent").unwrap();
    let nodes = value_of(&cfg, Role::Agent, "GLOBAL", "controller_nodes").unwrap();
    assert_eq!(nodes.value, "192.0.2.1,192.0.2.2");
    assert_eq!(nodes.source, Source::Cluster("lab".into()));
    let agent2 = server(
        "10.0.0.3",
        &[Role::Agent],
        json!({"GLOBAL": {"controller_nodes": "192.0.2.7"}}),
    );
    let all2 = [("ctl", &ctl), ("agent", &agent2)];
    let cfg = compute(&c2, &all2, "agent").unwrap();
    assert_eq!(
        value_of(&cfg, Role::Agent, "GLOBAL", "controller_nodes")
            .unwrap()
            .value,
        "192.0.2.7"
    );
}

#[test]
fn shared_hosts_are_listed_once() {
    let a = server("10.0.0.1", &[Role::Controller], json!({}));
    let b = server("10.0.0.1", &[Role::Controller], json!({}));
    let cfg = compute(&cluster(json!({})), &[("a", &a), ("b", &b)], "a").unwrap();
    assert_eq!(
        value_of(&cfg, Role::Controller, "GLOBAL", "controller_nodes")
            .unwrap()
            .value,
        "10.0.0.1"
    );
}

#[test]
fn each_role_file_takes_only_its_sections_and_keys() {
    let c = cluster(json!({
        "GLOBAL": {"log_level": "SYS_NOTICE"},
        "CONTROLLER": {"bgp_asn": "64512"},
        "CASSANDRA": {"data_dirs": ["/data/a", "/data/b"]},
        "AGENT": {"vrouter_physical_interface": "eth1"},
    }));
    let s = server(
        "10.0.0.1",
        &[Role::Controller, Role::Analyticsdb, Role::Agent],
        json!({}),
    );
    let cfg = compute(&c, &[("s", &s)], "s").unwrap();
    let file = |r: Role| {
        cfg.roles
            .iter()
            .find(|x| x.role == r)
            .unwrap()
            .content
            .clone()
    };
    let ctl = file(Role::Controller);
    assert!(ctl.contains("[CONTROLLER]\nbgp_asn = 64512\n"));
    assert!(ctl.contains("[CASSANDRA]\ndata_dirs = [\"/data/a\", \"/data/b\"]\n"));
    assert!(!ctl.contains("vrouter_physical_interface"));
    let agent = file(Role::Agent);
    assert!(agent.contains("[AGENT]\nvrouter_physical_interface = eth1\n"));
    assert!(!agent.contains("bgp_asn"));
    assert!(agent.starts_with("# Rendered by server-manager"));
    assert!(agent.contains(
        "[GLOBAL]\nanalyticsdb_nodes = 10.0.0.1\ncompute_nodes = 10.0.0.1\ncontroller_nodes = 10.0.0.1\nlog_level = SYS_NOTICE\n"
    ), "{agent}");
    // Files are in role order, one per role.
    let order: Vec<Role> = cfg.roles.iter().map(|r| r.role).collect();
    assert_eq!(order, [Role::Controller, Role::Analyticsdb, Role::Agent]);
}

#[test]
fn errors_name_role_section_key_and_source() {
    let c = cluster(json!({"GLOBAL": {"no_such_key": "x"}, "NOPE": {"a": 1}}));
    let s = server(
        "10.0.0.1",
        &[Role::Controller],
        json!({"GLOBAL": {"external_lb": "yes", "log_level": " padded"}, "AGENT": {"vgw_intf_list": ["x"]}}),
    );
    let err = compute(&c, &[("s1", &s)], "s1").unwrap_err();
    let text = err.to_string();
    let find = |section: &str, key: Option<&str>| {
        err.0
            .iter()
            .find(|e| e.section == section && e.key.as_deref() == key)
            .unwrap_or_else(|| panic!("no error for {section} {key:?} in {text}"))
    };
    let e = find("GLOBAL", Some("no_such_key"));
    assert_eq!(e.source, Some(Source::Cluster("lab".into())));
    assert!(
        e.to_string()
            .contains("[GLOBAL] no_such_key (from cluster lab)"),
        "{e}"
    );
    let e = find("NOPE", None);
    assert!(e.problem.contains("unknown section"), "{e}");
    let e = find("GLOBAL", Some("external_lb"));
    assert_eq!(e.role, Some(Role::Controller));
    assert_eq!(
        e.to_string(),
        "role controller: [GLOBAL] external_lb (from server s1): expected a boolean, got a string"
    );
    let e = find("GLOBAL", Some("log_level"));
    assert!(e.problem.contains("white space"), "{e}");
    let e = find("AGENT", None);
    assert!(
        e.problem
            .contains("not used by this server's roles (controller)"),
        "{e}"
    );
}

#[test]
fn missing_required_value_is_reported_with_a_hint() {
    // An analytics server alone: no analyticsdb node to derive from.
    let s = server("10.0.0.1", &[Role::Analytics, Role::Controller], json!({}));
    let err = compute(&cluster(json!({})), &[("a", &s)], "a").unwrap_err();
    let e = err
        .0
        .iter()
        .find(|e| e.key.as_deref() == Some("analyticsdb_nodes"))
        .unwrap();
    assert_eq!(e.role, Some(Role::Analytics));
    assert_eq!(e.source, None);
    assert!(
        e.problem.contains("add a Server with role analyticsdb"),
        "{e}"
    );
}

#[test]
fn hash_changes_with_content_and_only_with_content() {
    let c = cluster(json!({"GLOBAL": {"log_level": "A"}}));
    let s = server("10.0.0.1", &[Role::Controller], json!({}));
    let h1 = compute(&c, &[("s", &s)], "s").unwrap().hash;
    let h2 = compute(&c, &[("s", &s)], "s").unwrap().hash;
    assert_eq!(h1, h2);
    let c2 = cluster(json!({"GLOBAL": {"log_level": "B"}}));
    assert_ne!(h1, compute(&c2, &[("s", &s)], "s").unwrap().hash);
    // A key no role of this server uses does not change its files or hash.
    let c3 = cluster(
        json!({"GLOBAL": {"log_level": "A"}, "AGENT": {"vrouter_physical_interface": "eth9"}}),
    );
    assert_eq!(h1, compute(&c3, &[("s", &s)], "s").unwrap().hash);
}

#[test]
fn cluster_parameters_are_judged_on_their_own() {
    let check = |p: Value| {
        validate_cluster_parameters(ClusterInput {
            name: "lab",
            spec: &cluster(p),
        })
    };
    assert_eq!(check(json!({})), Ok(()));
    assert_eq!(
        check(json!({
            "GLOBAL": {"cloud_orchestrator": "kubernetes", "xmpp_auth_enable": false, "controller_nodes": ["10.0.0.1"]},
            "CONTROLLER": {"bgp_asn": "64512"},
            "CASSANDRA": {"data_dirs": ["/data/a"]},
            "AGENT": {"vrouter_physical_interface": "eth1", "vgw_intf_list": null},
        })),
        Ok(())
    );
    let err = check(json!({
        "GLOBAL": {"xmpp_auth_enable": "yes", "log_level": " padded", "no_such_key": 1, "Log_Level": "x"},
        "CASSANDRA": {"data_dirs": "/data/a"},
        "AGENT": {"vrouter_physical_interface": "%(x)s"},
        "NOPE": {"a": 1},
    }))
    .unwrap_err();
    let text: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    let find = |section: &str, key: Option<&str>| {
        err.0
            .iter()
            .find(|e| e.section == section && e.key.as_deref() == key)
            .unwrap_or_else(|| panic!("no error for [{section}] {key:?} in {text:#?}"))
            .to_string()
    };
    let e = find("GLOBAL", Some("xmpp_auth_enable"));
    assert!(
        e.starts_with("[GLOBAL] xmpp_auth_enable (from cluster lab): expected a boolean, got a string; read by roles controller, "),
        "{e}"
    );
    assert!(find("GLOBAL", Some("log_level")).contains("white space"));
    assert!(
        find("GLOBAL", Some("no_such_key")).contains("no role's [GLOBAL] section has this key")
    );
    assert!(find("GLOBAL", Some("Log_Level")).contains("no role's [GLOBAL] section has this key"));
    let e = find("CASSANDRA", Some("data_dirs"));
    assert!(e.contains("expected a list, got a string"), "{e}");
    assert!(e.contains("read by roles controller, analyticsdb"), "{e}");
    let e = find("AGENT", Some("vrouter_physical_interface"));
    assert!(
        e.contains("interpolation") && e.ends_with("read by roles agent"),
        "{e}"
    );
    assert!(find("NOPE", None).contains("unknown section"));
    assert_eq!(err.0.len(), 7, "{text:#?}");
}

// ---- property tests ----------------------------------------------------------

/// Keys of GLOBAL that are plain strings for every role.
const STRING_KEYS: [&str; 6] = [
    "log_level",
    "cloud_orchestrator",
    "controller_ip",
    "config_ip",
    "analytics_ip",
    "redis_password",
];

/// Strings a string-typed key can hold: not the words contrailctl reads as
/// booleans (the renderer refuses those: `check_plain_string` in render.rs).
fn safe_string() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:/-]{1,12}( [A-Za-z0-9é{}'|]{1,8}){0,2}".prop_filter(
        "contrailctl reads it as a boolean",
        |s| {
            !["yes", "true", "no", "false"]
                .iter()
                .any(|b| s.eq_ignore_ascii_case(b))
        },
    )
}

fn section_strategy() -> impl Strategy<Value = SectionParameters> {
    prop::collection::btree_map(
        prop::sample::select(STRING_KEYS.to_vec()).prop_map(str::to_string),
        safe_string().prop_map(|s| ParameterValue(Value::String(s))),
        0..STRING_KEYS.len(),
    )
}

proptest! {
    #[test]
    fn merge_is_key_by_key_server_first(cluster_global in section_strategy(), server_global in section_strategy()) {
        let c = ClusterSpec { parameters: Parameters(BTreeMap::from([(GLOBAL.to_string(), cluster_global.clone())])), ..Default::default() };
        let mut s = server("10.0.0.1", &[Role::Controller], json!({}));
        s.parameters = Parameters(BTreeMap::from([(GLOBAL.to_string(), server_global.clone())]));
        let cfg = compute(&c, &[("s", &s)], "s").unwrap();
        for key in STRING_KEYS {
            let got = value_of(&cfg, Role::Controller, GLOBAL, key);
            match (server_global.get(key), cluster_global.get(key)) {
                (Some(v), _) => {
                    let p = got.unwrap();
                    prop_assert_eq!(&Value::String(p.value.clone()), &v.0);
                    prop_assert_eq!(&p.source, &Source::Server("s".into()));
                }
                (None, Some(v)) => {
                    let p = got.unwrap();
                    prop_assert_eq!(&Value::String(p.value.clone()), &v.0);
                    prop_assert_eq!(&p.source, &Source::Cluster("lab".into()));
                }
                (None, None) => prop_assert!(got.is_none()),
            }
        }
    }

    #[test]
    fn rendering_is_deterministic_whatever_the_input_order(
        entries in prop::collection::vec((prop::sample::select(STRING_KEYS.to_vec()), safe_string()), 0..6),
        map in prop::collection::vec(("[a-z]{1,6}", "[a-z0-9.]{0,8}"), 0..6),
        hosts in prop::collection::vec("10\\.0\\.[0-9]\\.[1-9]", 1..5),
    ) {
        // Same content, built in two different insertion orders.
        let build = |reverse: bool| {
            let mut e = entries.clone();
            let mut m = map.clone();
            if reverse { e.reverse(); m.reverse(); }
            let mut global = serde_json::Map::new();
            for (k, v) in &e { global.insert(k.to_string(), json!(v)); }
            let mut hosts_map = serde_json::Map::new();
            for (k, v) in &m { hosts_map.insert(k.clone(), json!(v)); }
            global.insert("hosts_entries".into(), Value::Object(hosts_map));
            cluster(json!({"GLOBAL": global}))
        };
        let servers: Vec<(String, ServerSpec)> = hosts.iter().enumerate()
            .map(|(i, h)| (format!("s{i}"), server(h, &[Role::Controller, Role::Agent], json!({}))))
            .collect();
        let mut shuffled: Vec<(&str, &ServerSpec)> = servers.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let a = compute(&build(false), &shuffled, "s0").unwrap();
        shuffled.reverse();
        let b = compute(&build(true), &shuffled, "s0").unwrap();
        // Later duplicates win in a map, so compare only when keys are unique.
        let unique = entries.iter().map(|(k, _)| k).collect::<std::collections::BTreeSet<_>>().len() == entries.len()
            && map.iter().map(|(k, _)| k).collect::<std::collections::BTreeSet<_>>().len() == map.len();
        if unique {
            prop_assert_eq!(&a.roles, &b.roles);
            prop_assert_eq!(&a.hash, &b.hash);
        }
        let again = compute(&build(false), &shuffled, "s0").unwrap();
        prop_assert_eq!(again.hash, a.hash.clone());
    }
}
