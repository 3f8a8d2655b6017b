//! The command line: `--version`; `standalone --lab` refusing, before it
//! makes anything, a machine without its prerequisites (each named with its
//! package) or a data directory it must not remove.

use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_server-manager")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn version() {
    let out = ok(Command::new(bin()).arg("--version").output().unwrap());
    assert_eq!(
        out.trim(),
        format!("server-manager {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_lab_names_each_missing_prerequisite_and_makes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let empty_path = work.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let data = work.path().join("sm");
    let out = Command::new(bin())
        .args(["standalone", "--data-dir"])
        .arg(&data)
        .args(["--lab", "3"])
        .env("PATH", &empty_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the demo lab cannot run on this machine"),
        "{err}"
    );
    for (what, package) in [
        ("ssh-keygen", "openssh-client"),
        ("ansible-playbook", "ansible"),
        ("Python's docker module", "python3-docker"),
        ("docker-registry", "docker-registry"),
    ] {
        assert!(err.contains(what), "{what} not named:\n{err}");
        assert!(
            err.contains(&format!("apt-get install {package}")),
            "{package}:\n{err}"
        );
    }
    assert!(!data.exists(), "the data directory was made");
}

#[test]
fn the_lab_refuses_a_data_directory_that_is_not_a_labs() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("precious"), "keep me").unwrap();
    let out = Command::new(bin())
        .args(["standalone", "--data-dir"])
        .arg(work.path())
        .args(["--lab", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("holds data that is not a demo lab's"), "{err}");
    let names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["precious"]);
    // And out-of-range sizes, or an external runner, at parse time.
    for args in [
        &["--lab", "0"][..],
        &["--lab", "17"][..],
        &[
            "--lab",
            "2",
            "--runner-url",
            "http://127.0.0.1:1",
            "--runner-token-file",
            "/dev/null",
        ][..],
    ] {
        let out = Command::new(bin())
            .args(["standalone", "--data-dir", "/nonexistent/sm"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
