//! `server-manager logs` end to end: the real binary against `server-manager
//! standalone` (embedded API server, operator, playbook runner with Ansible),
//! a real `sshd` "host", and `kubectl` to create the Secret, the Cluster and
//! the Servers. The Server is suspended, so nothing is provisioned; its
//! `layout.logDir` is a temporary directory holding two files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::free_port;
use support::lab::{Standalone, suffix};
use support::sshd::TestSshd;

/// The runner URL standalone prints (`playbook runner: http://…`).
fn runner_url(standalone: &Standalone) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = standalone.log();
        if let Some(rest) = log.split("playbook runner: ").nth(1)
            && let Some(url) = rest.split_whitespace().next()
        {
            return url.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "standalone printed no runner URL:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `server-manager logs ARGS` with the standalone's kubeconfig, no proxy.
fn logs_command(standalone: &Standalone, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_server-manager"));
    cmd.arg("logs")
        .args(args)
        .env("KUBECONFIG", &standalone.kubeconfig)
        .env_remove("SM_RUNNER_URL")
        .env_remove("SM_RUNNER_TOKEN_FILE");
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn logs(standalone: &Standalone, args: &[&str]) -> Output {
    logs_command(standalone, args).output().expect("run logs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn apply(standalone: &Standalone, dir: &Path, name: &str, yaml: &str) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("manifest");
    standalone.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
}

#[test]
fn logs_lists_reads_follows_and_refuses_clearly() {
    let id = suffix();
    let work = tempfile::tempdir().expect("tempdir");
    let sshd = TestSshd::start();
    let log_dir = work.path().join("host-logs");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let controller_log = b"controller started\nbgp peer up\n".to_vec();
    // Every byte value: the file must come back byte for byte.
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(log_dir.join("contrail-controller.log"), &controller_log).expect("file");
    std::fs::write(log_dir.join("analytics.bin"), &binary).expect("file");

    let data = work.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // A registry address nothing uses: the Server is suspended and there are
    // no Images, so standalone starts none.
    let standalone = Standalone::start(
        &data,
        &[
            "--registry".into(),
            format!("127.0.0.1:{}", free_port()),
            "--runner-listen".into(),
            "127.0.0.1:0".into(),
        ],
    );
    let url = runner_url(&standalone);
    let token_file = data.join("runner-token");
    let token = token_file.to_str().expect("utf-8 path").to_string();

    let secret = format!("logs-ssh-{id}");
    let key = work.path().join("key");
    let known = work.path().join("known_hosts");
    std::fs::write(&key, sshd.private_key()).expect("key");
    std::fs::write(&known, sshd.known_hosts()).expect("known_hosts");
    standalone.kubectl(&[
        "create",
        "secret",
        "generic",
        &secret,
        &format!("--from-file=ssh-privatekey={}", key.display()),
        &format!("--from-file=known_hosts={}", known.display()),
    ]);

    let cluster = format!("logs-{id}");
    let server = format!("logs-node-{id}");
    let external = format!("logs-ext-{id}");
    let orphan = format!("logs-nosecret-{id}");
    apply(
        &standalone,
        work.path(),
        "cluster.yaml",
        &format!(
            "apiVersion: servermanager.contrail.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {cluster}\n\
             spec:\n  parameters:\n    GLOBAL:\n      log_level: SYS_NOTICE\n"
        ),
    );
    let managed = |name: &str, secret: &str| {
        format!(
            "apiVersion: servermanager.contrail.io/v1alpha1\nkind: Server\nmetadata:\n  name: {name}\n\
             spec:\n  clusterRef:\n    name: {cluster}\n  host: {host}\n  suspend: true\n\
             \x20 ssh:\n    user: root\n    port: {port}\n    secretRef:\n      name: {secret}\n\
             \x20 roles: [agent]\n  layout:\n    logDir: {dir}\n",
            host = sshd.host,
            port = sshd.port,
            dir = log_dir.display()
        )
    };
    apply(
        &standalone,
        work.path(),
        "server.yaml",
        &managed(&server, &secret),
    );
    apply(
        &standalone,
        work.path(),
        "orphan.yaml",
        &managed(&orphan, &format!("missing-{id}")),
    );
    apply(
        &standalone,
        work.path(),
        "external.yaml",
        &format!(
            "apiVersion: servermanager.contrail.io/v1alpha1\nkind: Server\nmetadata:\n  name: {external}\n\
             spec:\n  clusterRef:\n    name: {cluster}\n  host: 10.84.0.10\n  provisioning: External\n\
             \x20 roles: [controller]\n"
        ),
    );

    let base = ["--runner-url", url.as_str(), "--runner-token-file", &token];

    // The listing: a table with both files and their sizes.
    let out = logs(&standalone, &[&[server.as_str()][..], &base].concat());
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "logs failed: {}\n{}",
        text(&out.stderr),
        standalone.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SIZE") && lines[0].contains("MODIFIED"),
        "{stdout}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"))
    };
    assert_eq!(row("analytics.bin")[1], "3000");
    assert_eq!(
        row("contrail-controller.log")[1],
        controller_log.len().to_string()
    );
    assert!(row("analytics.bin")[2].ends_with('Z'), "{stdout}");

    // One file, byte for byte; -n given explicitly works too.
    let out = logs(
        &standalone,
        &[
            &[server.as_str(), "-n", "default", "--file", "analytics.bin"][..],
            &base,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, binary);

    // Traversal and absolute names are refused before anything runs.
    for bad in ["../../etc/passwd", "/etc/passwd", "..", "sub/file"] {
        let out = logs(
            &standalone,
            &[&[server.as_str(), "--file", bad][..], &base].concat(),
        );
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).contains("invalid log file name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }

    // A missing file: the runner's failure is reported.
    let out = logs(
        &standalone,
        &[&[server.as_str(), "--file", "nope.log"][..], &base].concat(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("playbook runner failed"),
        "{}",
        text(&out.stderr)
    );

    // Unknown Server, External Server, missing Secret.
    let out = logs(
        &standalone,
        &[&[&format!("ghost-{id}")[..]][..], &base].concat(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("Server default/ghost-{id} not found")),
        "{}",
        text(&out.stderr)
    );
    let out = logs(&standalone, &[&[external.as_str()][..], &base].concat());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("managed elsewhere, no logs through server-manager"),
        "{}",
        text(&out.stderr)
    );
    let out = logs(&standalone, &[&[orphan.as_str()][..], &base].concat());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("Secret default/missing-{id}"))
            && text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // Runner unreachable; token missing; token wrong.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = logs(
        &standalone,
        &[
            server.as_str(),
            "--runner-url",
            &dead,
            "--runner-token-file",
            &token,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("cannot reach the playbook runner at {dead}")),
        "{}",
        text(&out.stderr)
    );
    let out = logs(&standalone, &[server.as_str(), "--runner-url", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--runner-token-file"),
        "{}",
        text(&out.stderr)
    );
    let wrong = work.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").expect("token");
    let out = logs(
        &standalone,
        &[
            server.as_str(),
            "--runner-url",
            &url,
            "--runner-token-file",
            wrong.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refused the token"),
        "{}",
        text(&out.stderr)
    );

    // --follow: the file, then what is appended, until SIGINT (Ctrl-C).
    let mut child = logs_command(
        &standalone,
        &[
            &[
                server.as_str(),
                "--file",
                "contrail-controller.log",
                "--follow",
                "--interval",
                "1",
            ][..],
            &base,
        ]
        .concat(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start logs --follow");
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let seen = seen.clone();
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let wait_for = |want: &[u8], what: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while seen.lock().expect("lock").as_slice() != want {
            assert!(
                Instant::now() < deadline,
                "--follow did not print {what}: got {:?}",
                text(&seen.lock().expect("lock"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&controller_log, "the file");
    let appended = b"xmpp session established\n";
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log_dir.join("contrail-controller.log"))
            .expect("open log");
        f.write_all(appended).expect("append");
    }
    let mut want = controller_log.clone();
    want.extend_from_slice(appended);
    wait_for(&want, "the appended bytes");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "logs --follow ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "logs --follow exited with {exit}");
    reader.join().expect("reader");
    assert_eq!(seen.lock().expect("lock").as_slice(), want.as_slice());
}
