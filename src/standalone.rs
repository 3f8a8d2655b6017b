//! `server-manager standalone`: the embedded API server with the project's
//! CRDs installed and a kubeconfig written, for people without a cluster.
//!
//! The operator and the playbook runner will run in this same process; see
//! [`run`] for where they start.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::apiserver::{ApiServer, ApiServerConfig, Handle};

/// Options of `server-manager standalone`.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Where objects, the CA, the token and the kubeconfig are kept.
    pub data_dir: PathBuf,
    /// The API server's listen address.
    pub listen: SocketAddr,
}

/// Starts the API server, installs the CRDs and writes `DATA_DIR/kubeconfig`.
/// Returns the running server and the kubeconfig path.
pub async fn start(opts: &StandaloneOptions) -> anyhow::Result<(Handle, PathBuf)> {
    let mut config = ApiServerConfig::new(&opts.data_dir);
    config.listen = opts.listen;
    let handle = ApiServer::start(config).context("failed to start the API server")?;
    install_crds(&handle).await?;
    let path = opts.data_dir.join("kubeconfig");
    write_private(&path, &handle.kubeconfig())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok((handle, path))
}

/// Server-side applies the project's CRDs (a no-op when they are unchanged).
pub async fn install_crds(handle: &Handle) -> anyhow::Result<()> {
    let client = kube::Client::try_from(handle.client_config())?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let params = PatchParams::apply("server-manager").force();
    for crd in crate::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("failed to install CRD {name}"))?;
    }
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

/// Runs until SIGTERM or Ctrl-C, then stops cleanly.
pub async fn run(opts: StandaloneOptions) -> anyhow::Result<()> {
    let (handle, kubeconfig) = start(&opts).await?;
    println!(
        "server-manager standalone: API server listening on {}",
        handle.url
    );
    println!("To use it:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get clusters,servers,images -A");
    // The operator and the playbook runner start here, in this process, with
    // `handle.client_config()` as their Kubernetes client configuration.
    wait_for_signal().await?;
    println!("server-manager standalone: stopping");
    tokio::task::spawn_blocking(move || handle.shutdown()).await?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
