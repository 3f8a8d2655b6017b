//! The registry `standalone` starts beside the API server, as the original
//! server manager did: a `registry:2` container through the Docker engine
//! (bollard) when that image is present locally, else Debian's
//! `docker-registry` when installed; otherwise it says how to get one.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

/// A registry this process started; stopped on [`LocalRegistry::stop`].
pub enum LocalRegistry {
    /// A `registry:2` container.
    Container {
        /// Engine connection.
        docker: Docker,
        /// Container name.
        name: String,
        /// Address.
        addr: SocketAddr,
    },
    /// A `docker-registry serve` child process.
    Process {
        /// The child.
        child: tokio::process::Child,
        /// Address.
        addr: SocketAddr,
    },
}

impl LocalRegistry {
    /// `host:port` of the registry.
    pub fn address(&self) -> String {
        match self {
            LocalRegistry::Container { addr, .. } | LocalRegistry::Process { addr, .. } => {
                addr.to_string()
            }
        }
    }

    /// Starts a registry on `addr` (port 0: a free port) with its storage under
    /// `data_dir`.
    pub async fn start(addr: SocketAddr, data_dir: &Path) -> anyhow::Result<LocalRegistry> {
        let addr = if addr.port() == 0 {
            std::net::TcpListener::bind(addr)?.local_addr()?
        } else {
            addr
        };
        if let Ok(docker) = Docker::connect_with_local_defaults()
            && docker.inspect_image("registry:2").await.is_ok()
        {
            return start_container(docker, addr, data_dir).await;
        }
        if which("docker-registry") {
            return start_process(addr, data_dir).await;
        }
        anyhow::bail!(
            "no registry available: load the registry:2 image into the local Docker engine \
             (docker load -i registry-2.tar), or install Debian's docker-registry \
             (apt-get install docker-registry), or point to one with --registry HOST:PORT"
        )
    }

    /// Stops the registry (its storage stays for the next start).
    pub async fn stop(self) {
        match self {
            LocalRegistry::Container { docker, name, .. } => {
                let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&name, Some(opts)).await;
            }
            LocalRegistry::Process { mut child, .. } => {
                let _ = child.kill().await;
            }
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

async fn start_container(
    docker: Docker,
    addr: SocketAddr,
    data_dir: &Path,
) -> anyhow::Result<LocalRegistry> {
    let storage = data_dir.join("registry");
    std::fs::create_dir_all(&storage)?;
    let name = format!("server-manager-registry-{}", addr.port());
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    let ports = std::collections::HashMap::from([(
        "5000/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some(addr.ip().to_string()),
            host_port: Some(addr.port().to_string()),
        }]),
    )]);
    let body = ContainerCreateBody {
        image: Some("registry:2".into()),
        env: Some(vec!["REGISTRY_STORAGE_DELETE_ENABLED=true".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(ports),
            binds: Some(vec![format!("{}:/var/lib/registry", storage.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .context("failed to create the registry:2 container")?;
    docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .context("failed to start the registry:2 container")?;
    wait_listening(addr).await?;
    Ok(LocalRegistry::Container { docker, name, addr })
}

async fn start_process(addr: SocketAddr, data_dir: &Path) -> anyhow::Result<LocalRegistry> {
    let dir = data_dir.join("registry");
    std::fs::create_dir_all(dir.join("data"))?;
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.join("data").display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("registry.log"))?;
    let mut command = tokio::process::Command::new("docker-registry");
    // SAFETY: prctl is async-signal-safe; the closure only calls it. It makes
    // the registry die with this process, even on SIGKILL.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("failed to start docker-registry")?;
    wait_listening(addr)
        .await
        .with_context(|| format!("see {}", dir.join("registry.log").display()))?;
    Ok(LocalRegistry::Process { child, addr })
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the registry did not start listening on {addr}")
}
