//! Fuzzing of the effective-configuration renderer (`src/config/`), as property
//! tests over arbitrary and mutated inputs with a bounded number of cases, in
//! the normal test command (a nightly toolchain for `cargo fuzz` cannot be
//! installed here):
//!
//! - arbitrary Cluster and Server parameters: known and unknown sections and
//!   keys, values of every JSON type, strings made of the characters the INI
//!   dialect gives meaning to (`%(`, `;`, `#`, new lines, every kind of white
//!   space, brackets, boolean words, quotes, non-ASCII);
//! - `examples/` mutated: values replaced, spliced with those characters,
//!   removed, roles changed.
//!
//! For each: the renderer returns (no panic; a watchdog fails the test if it
//! does not return at all); every file it writes reads back, through the
//! contrailctl-style reader (`tests/contrailctl/read_config.py`: ConfigParser
//! then `eval`, as the containers read), as exactly the values given, nothing
//! more; otherwise every error names its section and its key (or says the
//! section is the problem). The Cluster-only check
//! (`validate_cluster_parameters`) agrees with the renderer on the Cluster's
//! values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use server_manager::config::render::format_value;
use server_manager::config::schema::{ValueType, role_schema};
use server_manager::config::{
    ClusterInput, ConfigErrors, EffectiveConfig, Member, Source, effective_config,
    validate_cluster_parameters,
};
use server_manager::crd::{
    ClusterSpec, LocalObjectReference, ParameterValue, Parameters, Provisioning, Role, ServerSpec,
};
use server_manager::manifests::Manifests;

// ---- the reader ---------------------------------------------------------------

/// One `read_config.py --serve` process for the whole test binary.
struct Reader {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn reader() -> &'static Mutex<Reader> {
    static READER: OnceLock<Mutex<Reader>> = OnceLock::new();
    READER.get_or_init(|| {
        support::require("python3", "python3");
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/contrailctl/read_config.py"
            ))
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the contrailctl-style reader");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Mutex::new(Reader {
            _child: child,
            stdin,
            stdout,
        })
    })
}

/// The file as the containers read it: section -> key -> value.
fn read_back(content: &str) -> Result<Value, String> {
    let mut r = reader().lock().unwrap_or_else(|e| e.into_inner());
    let line = json!({ "content": content }).to_string();
    writeln!(r.stdin, "{line}").expect("write to the reader");
    r.stdin.flush().expect("flush");
    let mut answer = String::new();
    r.stdout.read_line(&mut answer).expect("read the reader");
    let answer: Value = serde_json::from_str(&answer).expect("the reader answers JSON");
    match answer.get("ok") {
        Some(v) => Ok(v.clone()),
        None => Err(answer["error"].as_str().unwrap_or("?").to_string()),
    }
}

// ---- the renderer, under a watchdog ---------------------------------------------

type Outcome = Result<EffectiveConfig, ConfigErrors>;

/// Runs the renderer on its own thread: a renderer that never returns fails
/// the test after a minute (it takes microseconds; this detects a hang, it
/// measures nothing).
fn render(cluster: &ClusterSpec, members: &[(String, ServerSpec)], target: usize) -> Outcome {
    let cluster = cluster.clone();
    let members = members.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let list: Vec<Member<'_>> = members
            .iter()
            .map(|(name, spec)| Member { name, spec })
            .collect();
        let out = effective_config(
            ClusterInput {
                name: "lab",
                spec: &cluster,
            },
            &list,
            list[target],
        );
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the renderer did not return within a minute: it hangs")
        }
        Err(e) => panic!("the renderer panicked: {e}"),
    }
}

// ---- the properties ---------------------------------------------------------------

/// What the reader must give back for `value` written to a key of type `ty`.
fn expected(value: &Value, ty: ValueType) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match (ty, value) {
        (ValueType::String, Value::Array(items)) => {
            Value::String(items.iter().map(text).collect::<Vec<_>>().join(","))
        }
        (ValueType::String, v) => Value::String(text(v)),
        (_, v) => v.clone(),
    }
}

fn param<'a>(p: &'a Parameters, section: &str, key: &str) -> Option<&'a Value> {
    p.0.get(section)?.get(key).map(|v| &v.0)
}

/// Renders `members[target]` and checks everything the module header says.
fn check(
    cluster: &ClusterSpec,
    members: &[(String, ServerSpec)],
    target: usize,
) -> Result<(), TestCaseError> {
    let server = &members[target].1;
    let cluster_check = validate_cluster_parameters(ClusterInput {
        name: "lab",
        spec: cluster,
    });
    let cluster_errors = cluster_check.err().map(|e| e.0).unwrap_or_default();
    // The Cluster's values the Cluster check refuses that this Server's roles
    // read and the Server does not override: the renderer must refuse them.
    let must_refuse: Vec<(String, String)> = cluster_errors
        .iter()
        .filter_map(|e| Some((e.section.clone(), e.key.clone()?)))
        .filter(|(section, key)| {
            let overridden = server
                .parameters
                .0
                .get(section)
                .is_some_and(|s| s.contains_key(key));
            let read_here = server.roles.iter().any(|r| {
                role_schema(*r)
                    .section(section)
                    .and_then(|s| s.key(key))
                    .is_some()
            });
            read_here && !overridden
        })
        .collect();
    match render(cluster, members, target) {
        Ok(cfg) => {
            prop_assert!(
                must_refuse.is_empty(),
                "the Cluster check refused {:?}, which rendered: {:?}",
                must_refuse,
                cluster_errors
            );
            for file in &cfg.roles {
                let read = read_back(&file.content).map_err(|e| {
                    TestCaseError::fail(format!(
                        "role {}: the file cannot be read back ({e}):\n{}",
                        file.role, file.content
                    ))
                })?;
                let mut count = 0;
                for p in &file.values {
                    let ty = role_schema(file.role)
                        .section(&p.section)
                        .and_then(|s| s.key(&p.key))
                        .map(|k| k.value_type)
                        .expect("rendered keys are in the schema");
                    let want = match &p.source {
                        Source::Server(_) => {
                            expected(param(&server.parameters, &p.section, &p.key).unwrap(), ty)
                        }
                        Source::Cluster(_) => {
                            prop_assert!(
                                !cluster_errors.iter().any(|e| e.section == p.section
                                    && e.key.as_deref() == Some(p.key.as_str())),
                                "the Cluster check refused [{}] {}, which rendered",
                                &p.section,
                                &p.key
                            );
                            expected(param(&cluster.parameters, &p.section, &p.key).unwrap(), ty)
                        }
                        Source::Derived { .. } => Value::String(p.value.clone()),
                    };
                    let got = &read[&p.section][&p.key];
                    prop_assert_eq!(
                        got,
                        &want,
                        "role {} [{}] {} reads back differently; file:\n{}",
                        file.role,
                        &p.section,
                        &p.key,
                        &file.content
                    );
                    count += 1;
                }
                let read_count: usize = read
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|s| s.as_object().unwrap().len())
                    .sum();
                prop_assert_eq!(
                    read_count,
                    count,
                    "role {}: the file holds values nobody gave:\n{}",
                    file.role,
                    &file.content
                );
            }
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                let text = e.to_string();
                prop_assert!(!e.section.is_empty(), "no section: {}", text);
                prop_assert!(text.contains(&format!("[{}]", e.section)), "{}", text);
                prop_assert!(
                    e.key.is_some() || e.problem.contains("section"),
                    "names neither a key nor the section as the problem: {}",
                    text
                );
            }
            for (section, key) in &must_refuse {
                prop_assert!(
                    errors
                        .0
                        .iter()
                        .any(|e| &e.section == section && e.key.as_deref() == Some(key.as_str())),
                    "the Cluster check refused [{}] {} but rendering did not: {}",
                    section,
                    key,
                    errors
                );
            }
        }
    }
    Ok(())
}

// ---- arbitrary inputs ----------------------------------------------------------------

/// Every (section, key) some role's file has.
fn known_keys() -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Role::ALL
        .iter()
        .flat_map(|r| {
            role_schema(*r)
                .sections
                .iter()
                .flat_map(|s| s.keys.iter().map(move |k| (s.name.clone(), k.name.clone())))
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Pieces the INI dialect and contrailctl give meaning to.
const FRAGMENTS: &[&str] = &[
    "%(", "%(x)s", "%", "%%", ";", " ;", "\t;", "#", "\n", "\n ", "\n#", "\n;", "\r", " ", "\t",
    "\u{b}", "\u{c}", "\u{1c}", "\u{1f}", "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}", "[", "]",
    "{", "}", "yes", "True", "no", "FALSE", "'", "\"", "\\", "=", ":", "é", "中", "x", "1", "\0",
    "\u{7f}", "{{ x }}", "$(id)", "None",
];

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..6)
            .prop_map(|parts| parts.concat()),
        1 => "\\PC{0,10}",
        1 => "[ -~]{0,10}",
        3 => "[a-z0-9.,:/_-]{1,10}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A (section, key): mostly known ones, some unknown keys and sections.
fn section_key() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        18 => proptest::sample::select(known_keys()),
        1 => (
            proptest::sample::select(vec!["GLOBAL", "CONTROLLER", "AGENT"]),
            "[a-z_]{1,8}"
        )
            .prop_map(|(s, k)| (s.to_string(), k)),
        1 => ("[A-Z]{1,6}", "[a-z_]{1,8}"),
    ]
}

/// A value of the type the key has in the role files.
fn typed_value(ty: ValueType) -> BoxedStrategy<Value> {
    let text = || nasty_string().prop_map(Value::String);
    match ty {
        ValueType::String => prop_oneof![
            4 => text(),
            1 => any::<i64>().prop_map(Value::from),
            1 => proptest::collection::vec(text(), 0..4).prop_map(Value::Array),
        ]
        .boxed(),
        ValueType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::Array => proptest::collection::vec(json_value(), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        ValueType::Object => proptest::collection::btree_map(nasty_string(), json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
    }
}

/// A (section, key) and a value: mostly of the key's type, else anything.
fn entry() -> impl Strategy<Value = ((String, String), Value)> {
    section_key().prop_flat_map(|(section, key)| {
        let ty = Role::ALL.iter().find_map(|r| {
            role_schema(*r)
                .section(&section)
                .and_then(|s| s.key(&key))
                .map(|k| k.value_type)
        });
        let value = match ty {
            Some(ty) => prop_oneof![6 => typed_value(ty), 1 => json_value()].boxed(),
            None => json_value().boxed(),
        };
        (Just((section, key)), value)
    })
}

fn parameters(max: usize) -> impl Strategy<Value = Parameters> {
    proptest::collection::vec(entry(), 0..max).prop_map(|entries| {
        let mut p: BTreeMap<String, BTreeMap<String, ParameterValue>> = BTreeMap::new();
        for ((section, key), value) in entries {
            p.entry(section)
                .or_default()
                .insert(key, ParameterValue(value));
        }
        Parameters(p)
    })
}

fn roles() -> impl Strategy<Value = Vec<Role>> {
    proptest::sample::subsequence(Role::ALL.to_vec(), 1..4)
}

fn server_spec(host: String, roles: Vec<Role>, parameters: Parameters) -> ServerSpec {
    ServerSpec {
        cluster_ref: LocalObjectReference { name: "lab".into() },
        host,
        provisioning: Provisioning::Managed,
        ssh: None,
        roles,
        images: BTreeMap::new(),
        parameters,
        suspend: false,
        layout: None,
    }
}

/// Cases per property: bounded, for the normal test command (each case reads
/// its files back through one Python process).
fn cases() -> u32 {
    256
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_parameters_render_losslessly_or_are_refused_by_name(
        cluster_params in parameters(8),
        server_params in parameters(4),
        target_roles in roles(),
        // Other Servers, so derived and required values are sometimes there.
        others in proptest::collection::vec(("10\\.0\\.[0-9]\\.[1-9]", roles()), 0..3),
        with_core in proptest::bool::weighted(0.8),
    ) {
        let cluster = ClusterSpec { parameters: cluster_params, ..Default::default() };
        let mut members = vec![("target".to_string(), server_spec("10.9.9.9".into(), target_roles, server_params))];
        for (i, (host, roles)) in others.into_iter().enumerate() {
            members.push((format!("other-{i}"), server_spec(host, roles, Parameters::default())));
        }
        if with_core {
            members.push(("core".into(), server_spec(
                "10.9.9.1".into(),
                vec![Role::Controller, Role::Analytics, Role::Analyticsdb, Role::Agent],
                Parameters::default(),
            )));
        }
        check(&cluster, &members, 0)?;
    }
}

// ---- mutated inputs ------------------------------------------------------------------

fn examples() -> &'static Manifests {
    static M: OnceLock<Manifests> = OnceLock::new();
    M.get_or_init(|| {
        Manifests::load(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples"
        ))])
        .expect("examples/ load")
    })
}

/// One change to the lab.
#[derive(Debug, Clone)]
enum Mutation {
    /// Sets a Cluster parameter.
    SetCluster((String, String), Value),
    /// Sets a parameter of the n-th Server.
    SetServer(usize, (String, String), Value),
    /// Splices a fragment into the n-th string value of the whole lab.
    Splice(usize, usize, &'static str),
    /// Removes the n-th Cluster parameter.
    RemoveCluster(usize),
    /// Gives the n-th Server these roles.
    Roles(usize, Vec<Role>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => entry().prop_map(|(k, v)| Mutation::SetCluster(k, v)),
        2 => (0..4usize, entry()).prop_map(|(i, (k, v))| Mutation::SetServer(i, k, v)),
        3 => (any::<usize>(), any::<usize>(), proptest::sample::select(FRAGMENTS))
            .prop_map(|(n, at, f)| Mutation::Splice(n, at, f)),
        1 => any::<usize>().prop_map(Mutation::RemoveCluster),
        1 => (0..4usize, roles()).prop_map(|(i, r)| Mutation::Roles(i, r)),
    ]
}

/// Every string parameter value of the lab (Cluster first, then each Server).
fn string_values<'a>(
    cluster: &'a mut ClusterSpec,
    servers: &'a mut [(String, ServerSpec)],
) -> Vec<&'a mut String> {
    fn strings<'b>(v: &'b mut Value, out: &mut Vec<&'b mut String>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter_mut().for_each(|i| strings(i, out)),
            Value::Object(map) => map.values_mut().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let all = std::iter::once(&mut cluster.parameters)
        .chain(servers.iter_mut().map(|(_, s)| &mut s.parameters));
    for p in all {
        for section in p.0.values_mut() {
            for value in section.values_mut() {
                strings(&mut value.0, &mut out);
            }
        }
    }
    out
}

fn apply(cluster: &mut ClusterSpec, servers: &mut [(String, ServerSpec)], m: &Mutation) {
    let set = |p: &mut Parameters, (section, key): &(String, String), v: &Value| {
        p.0.entry(section.clone())
            .or_default()
            .insert(key.clone(), ParameterValue(v.clone()));
    };
    match m {
        Mutation::SetCluster(k, v) => set(&mut cluster.parameters, k, v),
        Mutation::SetServer(i, k, v) => {
            let n = servers.len();
            set(&mut servers[i % n].1.parameters, k, v);
        }
        Mutation::Splice(n, at, fragment) => {
            let mut values = string_values(cluster, servers);
            if values.is_empty() {
                return;
            }
            let len = values.len();
            let s = &mut values[n % len];
            let boundaries: Vec<usize> = (0..=s.len()).filter(|i| s.is_char_boundary(*i)).collect();
            let at = boundaries[at % boundaries.len()];
            s.insert_str(at, fragment);
        }
        Mutation::RemoveCluster(n) => {
            let keys: Vec<(String, String)> = cluster
                .parameters
                .0
                .iter()
                .flat_map(|(s, keys)| keys.keys().map(move |k| (s.clone(), k.clone())))
                .collect();
            if let Some((s, k)) = keys.get(n % keys.len().max(1))
                && let Some(section) = cluster.parameters.0.get_mut(s)
            {
                section.remove(k);
            }
        }
        Mutation::Roles(i, roles) => {
            let n = servers.len();
            servers[i % n].1.roles = roles.clone();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_lab_mutated_renders_losslessly_or_is_refused_by_name(
        mutations in proptest::collection::vec(mutation(), 1..6),
        target in 0..4usize,
    ) {
        let lab = examples();
        let mut cluster = lab.clusters[0].spec.clone();
        let mut servers: Vec<(String, ServerSpec)> = lab
            .servers
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s.spec.clone()))
            .collect();
        for m in &mutations {
            apply(&mut cluster, &mut servers, m);
        }
        let target = target % servers.len();
        check(&cluster, &servers, target)?;
    }
}

/// The lab as committed renders for every Server, and reads back as given.
#[test]
fn the_lab_as_committed_reads_back() {
    let lab = examples();
    let cluster = lab.clusters[0].spec.clone();
    let servers: Vec<(String, ServerSpec)> = lab
        .servers
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), s.spec.clone()))
        .collect();
    for target in 0..servers.len() {
        assert!(render(&cluster, &servers, target).is_ok());
        check(&cluster, &servers, target).unwrap();
    }
}

/// What fuzzing found, kept as plain cases (the seeds are also in
/// `config_fuzz.proptest-regressions`): a value ending in a character Rust's
/// `trim` keeps and Python's `strip` removes (`\x1c`), and a continuation line
/// starting with `#`, read as a comment, were rendered and read back
/// differently. Found while writing the reader side: `;` after such a
/// character, and nesting deeper than Python's parser reads. All are refused
/// now, by name. And a number: JSON parsing was not correctly rounded, so
/// `1.7407443398373897e-90` became its neighbour (serde_json's
/// `float_roundtrip` now).
#[test]
fn found_by_fuzzing() {
    let text = "[[1.7407443398373897e-90], 0.1, 1e300, -0.0]";
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        format_value(&parsed, ValueType::Array).unwrap(),
        "[[1.7407443398373897e-90], 0.1, 1e+300, -0.0]"
    );

    let deep = (0..300).fold(json!(1), |v, _| json!([v]));
    for (section, key, value) in [
        ("GLOBAL", "log_level", json!("SYS_NOTICE\u{1c}")),
        ("GLOBAL", "log_level", json!("a\u{1f};b")),
        ("GLOBAL", "log_level", json!("one\n# two")),
        ("GLOBAL", "log_level", json!("one\n;two")),
        ("GLOBAL", "hosts_entries", json!({"h": deep})),
    ] {
        let ty = role_schema(Role::Controller)
            .section(section)
            .and_then(|s| s.key(key))
            .unwrap()
            .value_type;
        assert!(format_value(&value, ty).is_err(), "{key}: {value}");
        let mut p = BTreeMap::new();
        p.insert(
            section.to_string(),
            BTreeMap::from([(key.to_string(), ParameterValue(value.clone()))]),
        );
        let cluster = ClusterSpec {
            parameters: Parameters(p),
            ..Default::default()
        };
        let members = vec![(
            "s".to_string(),
            server_spec(
                "10.0.0.1".into(),
                vec![Role::Controller],
                Parameters::default(),
            ),
        )];
        let err = render(&cluster, &members, 0).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.section == section && e.key.as_deref() == Some(key)),
            "{err}"
        );
    }
}
