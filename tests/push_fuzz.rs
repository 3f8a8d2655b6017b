//! Fuzzing of the image tarball reader (`src/registry/tarball.rs`, `plan.rs`),
//! as property tests with a bounded number of cases, through the public push
//! API (the tarball is indexed and planned before any registry call):
//!
//! - arbitrary bytes, plain and gzip-wrapped;
//! - tar archives of arbitrary entries: names (`..`, absolute, long, links),
//!   `manifest.json`/`index.json`/configs of arbitrary JSON;
//! - a valid `docker save` tarball mutated: bytes flipped, truncated, bytes
//!   inserted, entries dropped or duplicated, JSON files rewritten, gzipped.
//!
//! For each: the push returns (no panic; a watchdog fails the case if it does
//! not return in time) with an error that starts with "failed to " and names
//! its category. The registry is a closed loopback port, so a tarball good
//! enough to plan fails at the registry, never later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::time::Duration;

use proptest::prelude::*;
use server_manager::crd::Role;
use server_manager::registry::{self, Compression, PushRequest, RegistryConfig, RetryPolicy};
use sha2::{Digest, Sha256};

/// Reasons a push of a broken tarball may give.
const READER_REASONS: &[&str] = &[
    "ReadTarball",
    "InvalidImage",
    "SelectImage",
    "VerifyBlob",
    // The tarball was good enough: the (closed) registry is the failure.
    "ConnectRegistry",
];

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Names the builder would refuse (`..`, absolute) go in raw.
        let raw = name.as_bytes();
        let n = raw.len().min(99);
        h.as_old_mut().name[..n].copy_from_slice(&raw[..n]);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A valid `docker save` tarball's entries: two layers and a config.
fn docker_save_entries() -> Vec<(String, Vec<u8>)> {
    let layer1 = tar_of(&[("etc/hello".into(), b"hello\n".to_vec())]);
    let layer2 = tar_of(&[("bin/app".into(), vec![7u8; 3000])]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer1), sha(&layer2)]},
    }))
    .unwrap();
    let config_name = format!("{}.json", &sha(&config)[7..]);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["fuzz:1"],
        "Layers": ["l1/layer.tar", "l2/layer.tar"],
    }]))
    .unwrap();
    vec![
        ("l1/layer.tar".into(), layer1),
        ("l2/layer.tar".into(), layer2),
        (config_name, config),
        ("manifest.json".into(), manifest),
    ]
}

/// One push of `bytes` as a tarball: returns its error, or fails the case on a
/// panic, a hang, or a success (the registry is closed).
fn push_bytes(bytes: &[u8], compression: Compression) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    std::fs::write(&path, bytes).unwrap();
    let mut req = PushRequest::new(
        registry::Source::Path(path),
        RegistryConfig {
            address: format!("127.0.0.1:{}", closed_port()),
            insecure: true,
            retry: RetryPolicy {
                attempts: 1,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            },
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        },
        "fuzz",
        Role::Controller,
        "1",
    );
    req.compression = compression;
    req.layer_memo = None;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), registry::push(&req, |_| {})).await
    });
    runtime.shutdown_background();
    let Ok(result) = result else {
        return Err(TestCaseError::fail("the push did not return: a hang"));
    };
    let Err(err) = result else {
        return Err(TestCaseError::fail("pushed to a closed port?"));
    };
    let message = err.to_string();
    prop_assert!(
        READER_REASONS.contains(&err.reason()),
        "unexpected reason {}: {message}",
        err.reason()
    );
    prop_assert!(message.starts_with("failed to "), "{message}");
    prop_assert!(
        message.len() < 4096,
        "error too long: {} bytes",
        message.len()
    );
    Ok(())
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    support::free_port()
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z0-9./:_ -]{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("../../etc/passwd")),
        Just(serde_json::Value::from("sha256:00")),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Config".to_string()),
                    Just("Layers".to_string()),
                    Just("RepoTags".to_string()),
                    Just("manifests".to_string()),
                    Just("rootfs".to_string()),
                    Just("diff_ids".to_string()),
                    Just("digest".to_string()),
                    Just("mediaType".to_string()),
                    Just("size".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn entry_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("manifest.json".to_string()),
        Just("index.json".to_string()),
        Just("oci-layout".to_string()),
        Just("../escape".to_string()),
        Just("/abs/path".to_string()),
        Just("blobs/sha256/00".to_string()),
        "[a-z0-9./]{1,30}",
    ]
}

/// A mutation of a valid tarball's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..600))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            Mutation::Truncate(i) => bytes.truncate(i % bytes.len()),
            Mutation::Insert(i, b) => {
                let i = i % bytes.len();
                bytes.splice(i..i, b.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), gz in any::<bool>()) {
        let bytes = if gz { gzip(&bytes) } else { bytes };
        push_bytes(&bytes, Compression::None)?;
    }

    #[test]
    fn arbitrary_entries(
        entries in prop::collection::vec(
            (entry_name(), prop_oneof![
                json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                prop::collection::vec(any::<u8>(), 0..256),
            ]),
            0..6,
        ),
        gz in any::<bool>(),
    ) {
        let tar = tar_of(&entries);
        let bytes = if gz { gzip(&tar) } else { tar };
        push_bytes(&bytes, Compression::None)?;
    }

    #[test]
    fn mutated_docker_save(
        mutations in prop::collection::vec(mutation(), 1..4),
        gz in any::<bool>(),
        compress in any::<bool>(),
    ) {
        let tar = tar_of(&docker_save_entries());
        let bytes = apply(if gz { gzip(&tar) } else { tar }, &mutations);
        let compression = if compress { Compression::Gzip } else { Compression::None };
        push_bytes(&bytes, compression)?;
    }

    #[test]
    fn docker_save_with_entries_rewritten(
        drop in prop::collection::vec(any::<bool>(), 4),
        duplicate in any::<bool>(),
        rewrite in prop::option::of((0..4usize, json_value())),
    ) {
        let mut entries: Vec<(String, Vec<u8>)> = docker_save_entries()
            .into_iter()
            .zip(&drop)
            .filter(|(_, d)| !**d)
            .map(|(e, _)| e)
            .collect();
        if duplicate && let Some(first) = entries.first().cloned() {
            entries.push((first.0, b"other content".to_vec()));
        }
        if let Some((i, v)) = rewrite && !entries.is_empty() {
            let i = i % entries.len();
            entries[i].1 = serde_json::to_vec(&v).unwrap();
        }
        push_bytes(&tar_of(&entries), Compression::None)?;
    }
}

/// The valid tarball itself plans fine: only the closed registry stops it
/// (so the mutations above start from a tarball that would push).
#[test]
fn the_unmutated_tarball_reaches_the_registry() {
    let tar = tar_of(&docker_save_entries());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    std::fs::write(&path, &tar).unwrap();
    let req = PushRequest::new(
        registry::Source::Path(path),
        RegistryConfig {
            address: format!("127.0.0.1:{}", closed_port()),
            insecure: true,
            retry: RetryPolicy {
                attempts: 1,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            },
            ..Default::default()
        },
        "fuzz",
        Role::Controller,
        "1",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(registry::push(&req, |_| {}))
        .expect_err("closed registry");
    assert_eq!(err.reason(), "ConnectRegistry", "{err}");
}
