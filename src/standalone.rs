//! `server-manager standalone`: for people without a cluster, everything in one
//! process — the embedded API server with the project's CRDs installed and a
//! kubeconfig written, the playbook runner, the operator — plus a registry
//! (started locally unless one is given). With `lab: Some(n)`, also the demo
//! lab of [`crate::lab`], brought up once everything runs and removed when the
//! process stops.

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
    /// The playbook runner's listen address.
    pub runner_listen: SocketAddr,
    /// An existing playbook runner (URL, token) to use instead of starting one.
    pub runner: Option<(String, String)>,
    /// More runners (URLs, same token) sharing the hosts with `runner`.
    pub more_runners: Vec<String>,
    /// With several runners: how long one that stopped answering is waited
    /// for before its runs are started again on another.
    pub runner_gone_after: std::time::Duration,
    /// The playbooks directory.
    pub playbooks: PathBuf,
    /// The only directory Image tarballs are read from (`DATA_DIR/images` by
    /// default; created when missing).
    pub image_dir: PathBuf,
    /// An existing registry (`host:port`); when `None` one is started on
    /// `registry_listen`.
    pub registry: Option<String>,
    /// Plain HTTP to the existing registry.
    pub registry_insecure: bool,
    /// Where the started registry listens.
    pub registry_listen: SocketAddr,
    /// How often provisioned Servers are checked for drift (`None`: never).
    pub drift_interval: Option<std::time::Duration>,
    /// Where the operator's health and metrics endpoints listen.
    pub health_listen: Option<SocketAddr>,
    /// Backoff between attempts after failures.
    pub backoff: crate::controller::server::decide::Backoff,
    /// Enforce RBAC in the API server for ServiceAccount tokens.
    pub rbac: bool,
    /// The API server's audit log (JSON lines), if any.
    pub audit_log: Option<PathBuf>,
    /// Run the operator in this process (otherwise run `server-manager
    /// operator` yourself, e.g. with a ServiceAccount's token).
    pub operator: bool,
    /// Run a demo lab of this many target hosts ([`crate::lab`]), removed
    /// when the process stops.
    pub lab: Option<u8>,
}

impl StandaloneOptions {
    /// Defaults for `data_dir`: API server on 127.0.0.1:6443, runner on 9003,
    /// registry on 5000, playbooks found next to the sources or in
    /// /usr/share/server-manager/playbooks.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir: PathBuf = data_dir.into();
        StandaloneOptions {
            image_dir: data_dir.join("images"),
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            runner_listen: SocketAddr::from(([127, 0, 0, 1], 9003)),
            runner: None,
            more_runners: Vec::new(),
            runner_gone_after: std::time::Duration::from_secs(30),
            playbooks: default_playbooks(),
            registry: None,
            registry_insecure: true,
            registry_listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            drift_interval: Some(std::time::Duration::from_secs(600)),
            health_listen: None,
            backoff: Default::default(),
            rbac: false,
            audit_log: None,
            operator: true,
            lab: None,
        }
    }
}

/// The playbooks directory: `./playbooks`, the source tree's, or the packaged one.
pub fn default_playbooks() -> PathBuf {
    [
        PathBuf::from("playbooks"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks")),
        PathBuf::from("/usr/share/server-manager/playbooks"),
    ]
    .into_iter()
    .find(|p| p.join("provision.yml").is_file())
    .unwrap_or_else(|| PathBuf::from("playbooks"))
}

/// Starts the API server, installs the CRDs and writes `DATA_DIR/kubeconfig`.
/// Returns the running server and the kubeconfig path.
pub async fn start(opts: &StandaloneOptions) -> anyhow::Result<(Handle, PathBuf)> {
    let mut config = ApiServerConfig::new(&opts.data_dir);
    config.listen = opts.listen;
    config.rbac = opts.rbac;
    config.audit_log = opts.audit_log.clone();
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

/// Runs until SIGTERM or Ctrl-C, then stops cleanly (and removes the lab).
pub async fn run(opts: StandaloneOptions) -> anyhow::Result<()> {
    // Handlers first, so a SIGTERM during start-up stops it cleanly too.
    let mut signals = Signals::new()?;
    let Some(hosts) = opts.lab else {
        return serve(&opts, &mut signals, None).await;
    };
    let mut lab = crate::lab::Lab::prepare(&crate::lab::LabOptions {
        data_dir: opts.data_dir.clone(),
        image_dir: opts.image_dir.clone(),
        hosts,
        registry: opts.registry.clone(),
        registry_listen: opts.registry_listen,
        external_runner: opts.runner.is_some(),
    })
    .await?;
    let served = serve(&opts, &mut signals, Some(&mut lab)).await;
    println!("server-manager standalone: removing the demo lab");
    let removed = lab.down().await;
    if removed.is_ok() {
        println!("server-manager standalone: the demo lab is removed");
    }
    served.and(removed)
}

async fn serve(
    opts: &StandaloneOptions,
    signals: &mut Signals,
    lab: Option<&mut crate::lab::Lab>,
) -> anyhow::Result<()> {
    let (handle, kubeconfig) = start(opts).await?;
    let registry = match &opts.registry {
        Some(address) => Registry::Given(address.clone(), opts.registry_insecure),
        None => Registry::Started(
            crate::local_registry::LocalRegistry::start(opts.registry_listen, &opts.data_dir)
                .await
                .context("failed to start a registry")?,
        ),
    };
    let (registry_address, registry_insecure) = match &registry {
        Registry::Given(a, insecure) => (a.clone(), *insecure),
        Registry::Started(r) => (r.address(), true),
    };

    // The playbook runner, served on loopback with a generated token, unless
    // an external one is given.
    let playbooks = std::fs::canonicalize(&opts.playbooks)
        .with_context(|| format!("playbook directory {}", opts.playbooks.display()))?;
    let (runner_url, token, runner_task) = match &opts.runner {
        Some((url, token)) => (url.clone(), token.clone(), None),
        None => {
            let token = token(&opts.data_dir.join("runner-token"))?;
            let runner_config =
                crate::runner::RunnerConfig::new(opts.data_dir.join("runner"), playbooks.clone());
            let listener = tokio::net::TcpListener::bind(opts.runner_listen)
                .await
                .with_context(|| {
                    format!(
                        "failed to listen on {} for the playbook runner",
                        opts.runner_listen
                    )
                })?;
            let addr = listener.local_addr()?;
            let runner = crate::runner::Runner::open(runner_config)?;
            let state = crate::runner::http::AppState {
                runner,
                token: std::sync::Arc::new(token.clone()),
            };
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, crate::runner::http::app(state)).await {
                    tracing::error!(error = %e, "playbook runner stopped");
                }
            });
            (format!("http://{addr}"), token, Some(task))
        }
    };

    // The operator, with this process as its only replica.
    let client = kube::Client::try_from(handle.client_config())?;
    std::fs::create_dir_all(&opts.image_dir).with_context(|| {
        format!(
            "failed to create the image directory {}",
            opts.image_dir.display()
        )
    })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = if opts.operator {
        let wiring = crate::controller::operator::Wiring {
            registry: registry_address.clone(),
            registry_insecure,
            image_dir: opts.image_dir.clone(),
            playbooks: playbooks.clone(),
            drift_interval: opts.drift_interval,
            backoff: opts.backoff,
            // Several runners: each host goes to one of the ready ones.
            runners: crate::controller::operator::Runners::Urls(
                std::iter::once(runner_url.clone())
                    .chain(opts.more_runners.iter().cloned())
                    .collect(),
            ),
            runner_token: token.clone(),
            runner_gone_after: opts.runner_gone_after,
            health_addr: opts.health_listen,
            leader: None,
            concurrency: 16,
            instance: format!("standalone-{}", std::process::id()),
        };
        let operator = wiring.build(client.clone())?;
        Some(tokio::spawn(operator.run(async move {
            let _ = stop_rx.await;
        })))
    } else {
        None
    };

    println!(
        "server-manager standalone: API server listening on {}",
        handle.url
    );
    println!(
        "  playbook runner: {runner_url}{} (token in {})",
        opts.more_runners
            .iter()
            .map(|u| format!(", {u}"))
            .collect::<String>(),
        opts.data_dir.join("runner-token").display()
    );
    println!("  registry: {registry_address}");
    println!(
        "  Image tarballs (spec.source.path) are read from {}",
        opts.image_dir.display()
    );
    // The demo lab, once everything it needs runs; a stop request while it
    // is being built ends the start.
    let lab_up = match lab {
        Some(lab) => {
            let up = tokio::select! {
                r = lab.up(client, &registry_address) => Some(r),
                _ = signals.wait() => None,
            };
            match up {
                Some(Ok(())) => {
                    lab_tour(lab, &opts.data_dir, &kubeconfig);
                    Ok(true)
                }
                Some(Err(e)) => Err(e),
                None => Ok(false),
            }
        }
        None => {
            println!("To use it:");
            println!("  export KUBECONFIG={}", kubeconfig.display());
            println!("  kubectl apply -f examples/");
            println!("  kubectl get clusters,servers,images");
            Ok(true)
        }
    };
    if operator.is_none() {
        println!("  operator: not started (--no-operator); run `server-manager operator`");
    }
    let mut operator = operator;
    let stopped_early = match (&mut operator, &lab_up) {
        (Some(operator), Ok(true)) => tokio::select! {
            _ = signals.wait() => None,
            r = operator => Some(r),
        },
        (None, Ok(true)) => {
            signals.wait().await;
            None
        }
        _ => None,
    };
    println!("server-manager standalone: stopping");
    if stopped_early.is_none() {
        let _ = stop_tx.send(());
        // Let it end its watches before the API server goes away.
        if let Some(operator) = operator {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), operator).await;
        }
    }
    if let Some(task) = runner_task {
        task.abort();
    }
    if let Registry::Started(r) = registry {
        r.stop().await;
    }
    tokio::task::spawn_blocking(move || handle.shutdown()).await?;
    lab_up.context("the demo lab did not start")?;
    match stopped_early {
        Some(Ok(Err(e))) => Err(e.context("the operator stopped")),
        Some(Err(e)) => Err(anyhow::anyhow!("the operator panicked: {e}")),
        _ => Ok(()),
    }
}

/// What to try once the lab is applied.
fn lab_tour(lab: &crate::lab::Lab, data_dir: &std::path::Path, kubeconfig: &std::path::Path) {
    let first = lab.hosts().into_iter().next();
    let (server, role) = first
        .map(|(name, _, _, roles)| (name, roles[0]))
        .unwrap_or_default();
    println!("The demo lab is applied; the operator provisions it now. In another terminal:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!(
        "  export SM_RUNNER_TOKEN_FILE={}",
        data_dir.join("runner-token").display()
    );
    println!("  kubectl get servers -w");
    println!("  kubectl describe server {server}");
    println!("  server-manager logs {server} --file {role}.log --follow");
    println!(
        "  server-manager render -f {} --server {server}",
        lab.manifests_dir().display()
    );
    println!(
        "Stop this command (Ctrl-C) to remove the lab and {}.",
        data_dir.display()
    );
}

enum Registry {
    Given(String, bool),
    Started(crate::local_registry::LocalRegistry),
}

/// The runner token in `path`, generated (0600) on first use.
fn token(path: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &t).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(t)
}

/// A hash of the playbooks, part of every Server's desired state: a playbook
/// change re-provisions.
pub fn playbook_version(dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .is_some_and(|x| x == "yml" || x == "yaml" || x == "py")
                {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    hex::encode(&h.finalize()[..8])
}

/// SIGTERM and SIGINT, listened for from the moment this is created.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
