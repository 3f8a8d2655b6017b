//! What the demo lab needs on this machine, checked before anything is
//! started or written, every missing piece named with how to install it.

use std::path::Path;

/// One missing prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing.
    pub what: String,
    /// How to get it.
    pub fix: String,
}

/// Every prerequisite the lab lacks, as one error.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct MissingPrerequisites(pub Vec<Missing>);

fn describe(missing: &[Missing]) -> String {
    let mut s = String::from("the demo lab cannot run on this machine:");
    for m in missing {
        s.push_str(&format!("\n  - {}\n      fix: {}", m.what, m.fix));
    }
    s
}

/// Whether `program` is an executable file on `PATH`.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn apt(package: &str) -> String {
    format!("apt-get install {package}   (Debian package {package})")
}

/// Checks: root, sshd and ssh-keygen, a static busybox, the Docker engine
/// answering, ansible-playbook and Python's docker module (the playbooks'
/// Docker modules run on the hosts — this machine), and, when
/// `needs_registry`, something `standalone` can start a registry with.
pub async fn check(needs_registry: bool) -> Result<(), MissingPrerequisites> {
    let mut missing = Vec::new();
    let mut need = |ok: bool, what: &str, fix: String| {
        if !ok {
            missing.push(Missing {
                what: what.to_string(),
                fix,
            });
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    need(
        root,
        "root: the lab's hosts are sshd processes that accept SSH logins as root (as a \
         Contrail host does), which only an sshd run by root can do, and its containers \
         run on the Docker engine",
        "run it as root, e.g. `sudo target/release/server-manager standalone ...`".into(),
    );
    need(
        Path::new(super::sshd::SSHD).is_file(),
        "sshd (/usr/sbin/sshd), the lab's target hosts",
        apt("openssh-server"),
    );
    need(
        on_path("ssh-keygen"),
        "ssh-keygen, for the lab's keys",
        apt("openssh-client"),
    );
    let busybox = Path::new(super::demo_image::BUSYBOX);
    match super::demo_image::is_static_executable(busybox) {
        Ok(true) => {}
        Ok(false) => need(
            false,
            "a static busybox: /bin/busybox is dynamically linked (Debian's `busybox`), it \
             cannot run in an image without a C library",
            apt("busybox-static"),
        ),
        Err(_) => need(
            false,
            "busybox-static (/bin/busybox), the demo images' root filesystem",
            apt("busybox-static"),
        ),
    }
    let docker = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => d.ping().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &docker {
        need(
            false,
            &format!("a running Docker engine (DOCKER_HOST or /var/run/docker.sock): {e}"),
            format!(
                "{}, then start it: `service docker start`",
                apt("docker.io")
            ),
        );
    }
    need(
        on_path("ansible-playbook"),
        "ansible-playbook, which the playbook runner runs",
        apt("ansible"),
    );
    let python_docker = std::process::Command::new("python3")
        .args(["-c", "import docker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    need(
        python_docker,
        "Python's docker module (python3 -c 'import docker'), used by the playbooks' Docker \
         modules on the hosts",
        apt("python3-docker"),
    );
    if needs_registry {
        let registry_image = match bollard::Docker::connect_with_local_defaults() {
            Ok(d) if docker.is_ok() => d.inspect_image("registry:2").await.is_ok(),
            _ => false,
        };
        need(
            registry_image || on_path("docker-registry"),
            "a registry to start: docker-registry, or the registry:2 image in the Docker engine",
            format!(
                "{} (or give one with --registry HOST:PORT)",
                apt("docker-registry")
            ),
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrerequisites(missing))
    }
}
