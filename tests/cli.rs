//! Command-line habits: `--version`, shell completions, the binary as the
//! kubectl plugin `kubectl sm`; and `standalone --lab` refusing, before it
//! makes anything, a machine without its prerequisites (each named with its
//! package) or a data directory it must not remove.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
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

/// A directory holding `kubectl-sm`, a link to the binary, as a user installs it.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(bin(), dir.path().join("kubectl-sm")).expect("link");
    dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
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
fn completion_scripts_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(Command::new(bin())
            .args(["completion", shell])
            .output()
            .unwrap());
        for word in ["standalone", "--lab", "logs", "completion"] {
            assert!(out.contains(word), "{shell}: no {word}");
        }
    }
    // The bash script is valid bash and completes subcommands once loaded.
    support::require("bash", "bash");
    let script = ok(Command::new(bin())
        .args(["completion", "bash"])
        .output()
        .unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server-manager.bash");
    std::fs::write(&file, script).unwrap();
    // The function `complete -F` registers for server-manager.
    let function = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("complete -F ")?;
            l.trim_end()
                .ends_with(" server-manager")
                .then(|| rest.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("complete -F … server-manager");
    let probe = format!(
        "source {}; COMP_WORDS=(server-manager stand); COMP_CWORD=1; COMP_LINE='server-manager stand'; \
         COMP_POINT=${{#COMP_LINE}}; {function} server-manager stand server-manager; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = ok(Command::new("bash").args(["-c", &probe]).output().unwrap());
    assert_eq!(out.trim(), "standalone", "{out}");
}

#[test]
fn the_binary_is_the_kubectl_plugin_kubectl_sm() {
    let dir = plugin_dir();
    let path = path_with(dir.path());
    // Run as kubectl-sm, it says `kubectl sm`.
    let help = ok(Command::new(dir.path().join("kubectl-sm"))
        .arg("--help")
        .output()
        .unwrap());
    assert!(help.contains("Usage: kubectl sm <COMMAND>"), "{help}");
    let bad = Command::new(dir.path().join("kubectl-sm"))
        .arg("nonsense")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("Usage: kubectl sm"),
        "{}",
        text(&bad.stderr)
    );
    // Through kubectl.
    let version = ok(Command::new("kubectl")
        .args(["sm", "--version"])
        .env("PATH", &path)
        .output()
        .unwrap());
    assert_eq!(
        version.trim(),
        format!("server-manager {}", env!("CARGO_PKG_VERSION"))
    );
    let render = ok(Command::new("kubectl")
        .args(["sm", "render", "-f"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .args(["--server", "lab-ctrl-1"])
        .env("PATH", &path)
        .output()
        .unwrap());
    assert!(render.contains("bgp_asn = 64512"), "{render}");
    let list = Command::new("kubectl")
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        text(&list.stdout).contains(&dir.path().join("kubectl-sm").display().to_string()),
        "{}{}",
        text(&list.stdout),
        text(&list.stderr)
    );
    // Its completion script is for the command typed: kubectl-sm.
    let script = ok(Command::new(dir.path().join("kubectl-sm"))
        .args(["completion", "bash"])
        .output()
        .unwrap());
    assert!(
        script
            .lines()
            .any(|l| l.trim().starts_with("complete -F") && l.trim_end().ends_with(" kubectl-sm")),
        "{script}"
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
