//! The invalid-manifest corpus, `tests/invalid/*.yaml`: Cluster, Server and
//! Image manifests of the kinds people write by mistake (and a few written in
//! bad faith), each applied with the real `kubectl` to `server-manager
//! standalone`. Each file says in its header which field is wrong and why, and
//! what must happen:
//!
//! - `# expect: rejected FIELD` (optionally `# message: TEXT`): admission
//!   refuses it, the error names FIELD (and says TEXT), nothing is stored;
//! - `# expect: stalled KIND/NAME TEXT`: for the checks documented as later
//!   (parameters against the role schemas, references to Secrets, Clusters and
//!   Images, Images that cannot be pushed) the object is admitted and becomes
//!   `Stalled=True` with a message containing TEXT, which names the section and
//!   key, the Secret, or the path.
//!
//! `IMAGE_DIR` in a file stands for the operator's image directory. Real
//! components: standalone (API server, operator, runner), Debian's
//! `docker-registry`, one Image pushed from a `docker save` tarball.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::lab::{Standalone, condition, image_tarball, suffix};
use support::registry::TestRegistry;

/// What a corpus file expects.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Refused at admission, naming the field.
    Rejected { field: String },
    /// Admitted, then `Stalled=True` with a message containing `text`.
    Stalled {
        kind: String,
        name: String,
        text: String,
    },
}

#[derive(Debug, Clone)]
struct Case {
    file: PathBuf,
    why: String,
    expect: Expect,
    message: Option<String>,
    documents: usize,
}

impl Case {
    /// The file's stem: the name of its object (of the object expected to
    /// stall, for most later cases).
    fn name(&self) -> String {
        self.file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/invalid"))
}

fn corpus() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/invalid exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read");
            let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
            let value = |prefix: &str| {
                header
                    .iter()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(str::to_string)
            };
            let expect = value("# expect: ")
                .unwrap_or_else(|| panic!("{}: no '# expect:' line", file.display()));
            let expect = if let Some(field) = expect.strip_prefix("rejected ") {
                Expect::Rejected {
                    field: field.to_string(),
                }
            } else if let Some(rest) = expect.strip_prefix("stalled ") {
                let (object, text) = rest.split_once(' ').expect("stalled KIND/NAME TEXT");
                let (kind, name) = object.split_once('/').expect("KIND/NAME");
                Expect::Stalled {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    text: text.to_string(),
                }
            } else {
                panic!("{}: unknown expectation {expect:?}", file.display())
            };
            let documents = serde_yaml::Deserializer::from_str(&text).count();
            Case {
                why: header[0].trim_start_matches('#').trim().to_string(),
                message: value("# message: "),
                expect,
                documents,
                file,
            }
        })
        .collect()
}

/// The corpus is what the module header says, without starting anything.
#[test]
fn the_corpus_is_well_formed() {
    let cases = corpus();
    assert!(cases.len() >= 60, "only {} manifests", cases.len());
    let mut kinds = std::collections::BTreeSet::new();
    for c in &cases {
        let text = std::fs::read_to_string(&c.file).unwrap();
        assert!(
            !c.why.is_empty(),
            "{}: no comment saying why",
            c.file.display()
        );
        match &c.expect {
            Expect::Rejected { field } => {
                assert_eq!(
                    c.documents,
                    1,
                    "{}: one object per rejected file",
                    c.file.display()
                );
                let obj: serde_json::Value = serde_yaml::from_str(&text).unwrap();
                assert_eq!(obj["metadata"]["name"], c.name(), "{}", c.file.display());
                let kind = obj["kind"].as_str().unwrap().to_string();
                let base = field.split('[').next().unwrap_or_default();
                assert!(
                    c.why.starts_with(&format!("{kind}.{base}")),
                    "{}: the comment does not start with {kind}.{base}: {}",
                    c.file.display(),
                    c.why
                );
                kinds.insert(kind);
            }
            Expect::Stalled { kind, .. } => {
                kinds.insert(kind.clone());
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Cluster", "Image", "Server"]
    );
}

/// `kubectl apply -f` of one corpus file, `IMAGE_DIR` replaced.
fn apply(s: &Standalone, work: &Path, images: &Path, case: &Case) -> (bool, String) {
    let text = std::fs::read_to_string(&case.file)
        .unwrap()
        .replace("IMAGE_DIR", &images.display().to_string());
    let path = work.join(case.file.file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = s.kubectl_try(&["apply", "-f", path.to_str().unwrap()]);
    (ok, format!("{out}{err}"))
}

fn stalled_message(s: &Standalone, kind: &str, name: &str) -> Option<String> {
    let v = s.get(&kind.to_lowercase(), name)?;
    let c = condition(&v, "Stalled")?;
    (c["status"] == "True").then(|| c["message"].as_str().unwrap_or_default().to_string())
}

#[test]
fn every_invalid_manifest_is_refused_naming_the_field() {
    let cases = corpus();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let images = work.path().join("images");
    let manifests = work.path().join("manifests");
    for d in [&data, &images, &manifests] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The one valid Image the later cases' Servers use, and a file in the
    // image directory that is not an image.
    let tarball = image_tarball(&images, &suffix());
    std::fs::rename(&tarball, images.join("corpus-agent.tar")).unwrap();
    std::fs::write(images.join("later-not-a-tarball.tar"), b"not a tarball\n").unwrap();
    let registry = TestRegistry::start();
    let s = Standalone::start(
        &data,
        &[
            "--registry".into(),
            registry.addr.clone(),
            "--runner-listen".into(),
            format!("127.0.0.1:{}", support::free_port()),
            "--image-dir".into(),
            images.display().to_string(),
        ],
    );
    let image = serde_json::json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Image",
        "metadata": {"name": "corpus-agent"},
        "spec": {"imageId": "corpus", "imageType": "agent", "version": "1",
                 "source": {"path": images.join("corpus-agent.tar").display().to_string()}}
    });
    s.apply(&manifests, "corpus-agent.yaml", &[image]);

    let mut failures: Vec<String> = Vec::new();
    for case in &cases {
        let Expect::Rejected { field } = &case.expect else {
            continue;
        };
        let name = case.name();
        let (ok, answer) = apply(&s, &manifests, &images, case);
        let answer = answer.trim();
        if ok {
            failures.push(format!("{name}: admitted ({field}): {answer}"));
            continue;
        }
        if !answer.contains(field.as_str()) {
            failures.push(format!(
                "{name}: the answer does not name {field}: {answer}"
            ));
        }
        if let Some(m) = &case.message
            && !answer.contains(m.as_str())
        {
            failures.push(format!("{name}: the answer does not say {m:?}: {answer}"));
        }
    }
    // Nothing refused was stored.
    let stored = s.kubectl(&["get", "clusters,servers,images", "-o", "name"]);
    for case in &cases {
        let name = case.name();
        if matches!(case.expect, Expect::Rejected { .. })
            && stored.lines().any(|l| l.ends_with(&format!("/{name}")))
        {
            failures.push(format!("{name}: refused, yet stored"));
        }
    }

    let later: Vec<&Case> = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Stalled { .. }))
        .collect();
    for case in &later {
        let (ok, answer) = apply(&s, &manifests, &images, case);
        if !ok {
            failures.push(format!(
                "{}: a later check, yet refused at admission: {answer}",
                case.file.display()
            ));
        }
    }
    // Each later case Stalled with its message, within one deadline for all.
    let mut pending: Vec<(String, String, String)> = later
        .iter()
        .filter_map(|c| match &c.expect {
            Expect::Stalled { kind, name, text } => Some((
                kind.clone(),
                name.clone(),
                text.replace("IMAGE_DIR", &images.display().to_string()),
            )),
            Expect::Rejected { .. } => None,
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        pending.retain(|(kind, name, text)| {
            !stalled_message(&s, kind, name).is_some_and(|m| m.contains(text.as_str()))
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    for (kind, name, text) in pending {
        let message = stalled_message(&s, &kind, &name);
        let object = s
            .kubectl_try(&["get", &kind.to_lowercase(), &name, "-o", "yaml"])
            .1;
        failures.push(format!(
            "{kind}/{name}: not Stalled with {text:?} (Stalled message: {message:?})\n{object}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} manifests not handled as expected:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
