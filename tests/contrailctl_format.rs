//! The rendered role files read back, through a ConfigParser + `eval` reader that
//! behaves as contrailctl's, as exactly the values the manifests hold: lists,
//! maps, booleans, non-ASCII text, template-looking and shell-looking strings,
//! multi-line values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use server_manager::config::{ClusterInput, Member, effective_config};
use server_manager::crd::{ClusterSpec, LocalObjectReference, Provisioning, Role, ServerSpec};

#[test]
fn rendered_values_read_back_as_given() {
    support::require("python3", "python3");
    let parameters = json!({
        "GLOBAL": {
            "log_level": "SYS_NOTICE",
            "cloud_orchestrator": "x {{ lookup('pipe','id') }}",
            "controller_ip": "; rm -rf /",
            "config_ip": "ligne un\nligne deux — é ü 中",
            "analytics_ip": "50% off",
            "redis_password": "p@ss\"word'",
            "xmpp_auth_enable": true,
            "sandesh_ssl_enable": false,
            "hosts_entries": {"h1": "10.0.0.1", "h2": {"nested": [1, 2.5, null, true]}},
            "external_analyticsdb_zookeeper_servers": ["z1:2181", "it's", "back\\slash", "tab\there"],
            "controller_nodes": ["10.0.0.1", "10.0.0.2"],
            "analyticsdb_cql_port": 9042,
        }
    });
    let cluster = ClusterSpec {
        parameters: serde_json::from_value(parameters).unwrap(),
        ..Default::default()
    };
    let server = ServerSpec {
        cluster_ref: LocalObjectReference { name: "c".into() },
        host: "10.0.0.1".into(),
        provisioning: Provisioning::Managed,
        ssh: None,
        roles: vec![Role::Analyticsdb],
        images: BTreeMap::new(),
        parameters: serde_json::from_value(json!({"GLOBAL": {"analyticsdb_nodes": "10.0.0.3"}}))
            .unwrap(),
        suspend: false,
        layout: None,
    };
    let me = Member {
        name: "s",
        spec: &server,
    };
    let cfg = effective_config(
        ClusterInput {
            name: "c",
            spec: &cluster,
        },
        &[me],
        me,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("analyticsdb.conf");
    std::fs::write(&file, &cfg.roles[0].content).unwrap();

    let out = support::run(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/contrailctl/read_config.py"
            ))
            .arg(&file),
    );
    let read: Value = serde_json::from_str(&out).unwrap();
    let global = &read["GLOBAL"];
    let expect = json!({
        "log_level": "SYS_NOTICE",
        "cloud_orchestrator": "x {{ lookup('pipe','id') }}",
        "controller_ip": "; rm -rf /",
        "config_ip": "ligne un\nligne deux — é ü 中",
        "analytics_ip": "50% off",
        "redis_password": "p@ss\"word'",
        "xmpp_auth_enable": true,
        "sandesh_ssl_enable": false,
        "hosts_entries": {"h1": "10.0.0.1", "h2": {"nested": [1, 2.5, null, true]}},
        "external_analyticsdb_zookeeper_servers": ["z1:2181", "it's", "back\\slash", "tab\there"],
        "controller_nodes": "10.0.0.1,10.0.0.2",
        "analyticsdb_cql_port": "9042",
        "analyticsdb_nodes": "10.0.0.3",
    });
    assert_eq!(global, &expect, "file was:\n{}", cfg.roles[0].content);
}
