//! The `server-manager` binary: command-line parsing only; the work lives in the
//! library. Installed (or linked) as `kubectl-sm` on `PATH`, it is the kubectl
//! plugin `kubectl sm …`: the same commands, with help and errors naming
//! `kubectl sm`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Provision Contrail control-plane containers on servers, the Kubernetes way.
#[derive(Parser)]
#[command(name = "server-manager", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML documents separated by `---`).
    Crds {
        /// Write one `<plural>.yaml` file per CRD into this directory instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Preview a Server's role files, computed from all the manifests given (the
    /// derived parameters need the whole cluster), with the provenance of each
    /// value.
    Render {
        /// Manifest files or directories (like `kubectl apply -f`).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The Server to render.
        #[arg(long)]
        server: String,
        /// Namespace of the Server.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Write one `<role>.conf` per role into this directory (byte-identical to
        /// what provisioning writes) instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Push an image tarball (docker save or OCI layout, plain or gzip, path or
    /// URL) to a registry as `<imageId>-<imageType>:<version>`.
    Push(Box<PushArgs>),
    /// Run the playbook runner: the REST service that runs the provisioning
    /// playbooks with ansible-playbook over SSH.
    PlaybookRunner(PlaybookRunnerArgs),
    /// Everything on one machine: the embedded Kubernetes-compatible API server
    /// with the CRDs installed (writing `DATA_DIR/kubeconfig` for kubectl), the
    /// operator, the playbook runner and a registry; with --lab N, a demo lab
    /// provisioned for real. Stops on SIGTERM or Ctrl-C.
    Standalone(Box<StandaloneArgs>),
    /// Run the controllers against a Kubernetes API (in-cluster configuration,
    /// or the kubeconfig).
    Operator(Box<OperatorArgs>),
    /// List the log files of a Server's host (under `spec.layout.logDir`,
    /// default /var/log/contrail), or print one with --file; --follow keeps
    /// printing what is appended until Ctrl-C. Reads the Server and its SSH
    /// Secret from the Kubernetes API (KUBECONFIG) and reaches the host through
    /// the playbook runner.
    Logs(Box<LogsArgs>),
    /// Print a shell completion script: `source <(server-manager completion
    /// bash)`, or save it where your shell loads completions from.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Flags of `server-manager logs`.
#[derive(clap::Args)]
struct LogsArgs {
    /// The Server.
    server: String,
    /// Namespace of the Server (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Print this file of the log directory (a plain name: no `/`, no `..`).
    #[arg(long)]
    file: Option<String>,
    /// With --file: keep printing the bytes appended to the file, polling
    /// every --interval seconds, until Ctrl-C.
    #[arg(short = 'f', long, requires = "file")]
    follow: bool,
    /// Seconds between polls of --follow.
    #[arg(long, default_value_t = 2)]
    interval: u64,
    /// URL of the playbook runner.
    #[arg(long, env = "SM_RUNNER_URL", default_value = "http://127.0.0.1:9003")]
    runner_url: String,
    /// File holding the runner's bearer token (standalone: DATA_DIR/runner-token).
    #[arg(long, env = "SM_RUNNER_TOKEN_FILE")]
    runner_token_file: Option<PathBuf>,
}

/// Flags of `server-manager standalone`.
#[derive(clap::Args)]
struct StandaloneArgs {
    /// Where objects, the CA, tokens, run records, the registry's storage and
    /// the kubeconfig are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Address the playbook runner listens on.
    #[arg(long, default_value = "127.0.0.1:9003")]
    runner_listen: std::net::SocketAddr,
    /// Use this playbook runner instead of starting one in-process; repeat
    /// it (or separate URLs with commas) for several runners sharing the
    /// hosts (each host served by one of them while it is up).
    #[arg(long, requires = "runner_token_file", value_delimiter = ',')]
    runner_url: Vec<String>,
    /// File holding the bearer token of the runners given with --runner-url.
    #[arg(long, requires = "runner_url")]
    runner_token_file: Option<PathBuf>,
    /// With several runners: seconds a runner that stopped answering is
    /// waited for before its runs are started again on another.
    #[arg(long, default_value_t = 30)]
    runner_gone_after: u64,
    /// Use this registry (`host:port`) instead of starting one.
    #[arg(long)]
    registry: Option<String>,
    /// Talk HTTPS to the registry given with --registry (default: plain HTTP).
    #[arg(long)]
    registry_tls: bool,
    /// Where the started registry listens.
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry_listen: std::net::SocketAddr,
    /// Directory of the playbooks (default: ./playbooks, the source tree's, or
    /// /usr/share/server-manager/playbooks).
    #[arg(long)]
    playbooks: Option<PathBuf>,
    /// The only directory Image tarballs (`spec.source.path`) are read from
    /// (default: DATA_DIR/images, created if missing).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Seconds between drift checks of a provisioned Server (0: never).
    #[arg(long, default_value_t = 600)]
    drift_interval: u64,
    /// Where the operator's /healthz, /readyz and /metrics listen.
    #[arg(long)]
    health_listen: Option<std::net::SocketAddr>,
    /// Longest wait, in seconds, between attempts after failures.
    #[arg(long, default_value_t = 300)]
    max_backoff: u64,
    /// Enforce RBAC in the API server: ServiceAccount tokens (from Secrets of
    /// type kubernetes.io/service-account-token, or `kubectl create token`)
    /// get what their Roles and ClusterRoles grant; the admin token still gets
    /// everything.
    #[arg(long)]
    rbac: bool,
    /// Append one JSON line per API request (user, verb, resource,
    /// subresource, namespace, name, code) to this file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Start no operator: the API server, the playbook runner and the
    /// registry only. Run `server-manager operator` against DATA_DIR/kubeconfig
    /// (or a ServiceAccount's token, with --rbac) yourself.
    #[arg(long)]
    no_operator: bool,
    /// Also run a demo lab of N target hosts on this machine (1 to 16): real
    /// sshd processes on loopback addresses (127.0.0.11, …), demo role images
    /// built locally (busybox, not Contrail) whose containers log the role file
    /// they read, and the manifests (Cluster, Images, Servers, one External)
    /// written to DATA_DIR/lab/manifests and applied. Needs root, Docker,
    /// openssh-server, busybox-static, ansible, python3-docker. Stopping the
    /// command removes the lab: sshd processes, containers, images and DATA_DIR
    /// (which must be new, empty, or a lab's).
    #[arg(long, value_name = "N", conflicts_with = "runner_url",
          value_parser = clap::value_parser!(u8).range(1..=16))]
    lab: Option<u8>,
}

/// Flags of `server-manager operator`.
#[derive(clap::Args)]
struct OperatorArgs {
    /// URL of the playbook runner; several (repeated, or separated by
    /// commas) share the hosts.
    #[arg(
        long,
        env = "SM_RUNNER_URL",
        default_value = "http://127.0.0.1:9003",
        value_delimiter = ','
    )]
    runner_url: Vec<String>,
    /// Find the runners from the EndpointSlices of this Service (in the
    /// --lease-namespace namespace) instead of --runner-url: its ready
    /// endpoints share the hosts.
    #[arg(long, env = "SM_RUNNER_SERVICE")]
    runner_service: Option<String>,
    /// With several runners: seconds a runner that stopped answering is
    /// waited for before its runs are started again on another.
    #[arg(long, default_value_t = 30)]
    runner_gone_after: u64,
    /// File holding the runner's bearer token.
    #[arg(long, env = "SM_RUNNER_TOKEN_FILE")]
    runner_token_file: PathBuf,
    /// Registry Images are pushed to and hosts pull from (`host:port`).
    #[arg(long, env = "SM_REGISTRY")]
    registry: String,
    /// Plain HTTP to the registry.
    #[arg(long)]
    registry_insecure: bool,
    /// Seconds between drift checks of a provisioned Server (0: never).
    #[arg(long, default_value_t = 600)]
    drift_interval: u64,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_listen: std::net::SocketAddr,
    /// Run leader election (one active replica).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Reconciles at once per controller.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Longest wait, in seconds, between attempts after failures.
    #[arg(long, default_value_t = 300)]
    max_backoff: u64,
    /// Directory of the playbooks the runner uses (for the playbook version in
    /// each Server's desired hash).
    #[arg(long, default_value = "playbooks")]
    playbooks: PathBuf,
    /// The only directory Image tarballs (`spec.source.path`) are read from;
    /// a path leading outside it, symbolic links included, is refused.
    #[arg(long, env = "SM_IMAGE_DIR", default_value = server_manager::validation::DEFAULT_IMAGE_DIR)]
    image_dir: PathBuf,
}

/// Flags of `server-manager playbook-runner`.
#[derive(clap::Args)]
struct PlaybookRunnerArgs {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:9003")]
    listen: std::net::SocketAddr,
    /// Run records, per-run logs and debug.log.
    #[arg(long, default_value = "/var/lib/server-manager/runner")]
    data_dir: PathBuf,
    /// File holding the bearer token clients must present.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The bearer token (prefer the environment variable or --token-file).
    #[arg(long, env = "SM_RUNNER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Directory of provision.yml, deprovision.yml, logs.yml and callback_plugins/.
    #[arg(long, default_value = "playbooks")]
    playbooks: PathBuf,
    /// Runs executing at once over all hosts (one per host in any case).
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Timeout of a run that does not set its own, in seconds.
    #[arg(long, default_value_t = 1800)]
    run_timeout: u64,
    /// The ansible-playbook program.
    #[arg(long, default_value = "ansible-playbook")]
    ansible_playbook: PathBuf,
}

/// Arguments of `server-manager push`.
#[derive(clap::Args)]
struct PushArgs {
    /// Path or http(s):// URL of the image tarball.
    tarball: String,
    /// Registry address: `host[:port]`, optionally followed by `/prefix`.
    #[arg(long)]
    registry: String,
    /// Image id, the first part of the repository name (`contrail-container`).
    #[arg(long)]
    image_id: String,
    /// Image type (the role): controller, analytics, analyticsdb, agent, lb, …
    #[arg(long, value_parser = parse_role)]
    image_type: server_manager::crd::Role,
    /// Version, used as the tag.
    #[arg(long)]
    version: String,
    /// Talk plain HTTP to the registry (never implied).
    #[arg(long)]
    insecure: bool,
    /// PEM bundle of CA certificates to trust for the registry.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Registry user name.
    #[arg(long, requires = "password_env")]
    username: Option<String>,
    /// Name of the environment variable holding the registry password.
    #[arg(long, requires = "username")]
    password_env: Option<String>,
    /// Which image of a tarball holding several (a repo:tag or ref name).
    #[arg(long)]
    select: Option<String>,
    /// Another repository of the registry to mount shared layers from (repeatable).
    #[arg(long)]
    mount_from: Vec<String>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Compression of `docker save` layers on a direct push: `none` (fastest
    /// unless the link is slower than compressing, ~0.8 Gbit/s on 2 cores) or
    /// `gzip` (about half the bytes).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// `direct` (OCI distribution API) or `docker` (load, tag, push via the engine).
    #[arg(long, value_enum, default_value_t = Via::Direct)]
    via: Via,
}

/// `--compression` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    /// Layers as they are.
    None,
    /// Gzip-compressed layers.
    Gzip,
}

/// How `push` reaches the registry.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// Directly over the OCI distribution API.
    Direct,
    /// Through the local Docker engine.
    Docker,
}

fn parse_role(s: &str) -> Result<server_manager::crd::Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        let all: Vec<&str> = server_manager::crd::Role::ALL
            .iter()
            .map(|r| r.as_str())
            .collect();
        format!("unknown image type {s:?}; one of {}", all.join(", "))
    })
}

/// The name the binary was run by: `kubectl sm` when run as the kubectl
/// plugin `kubectl-sm`, else `server-manager`.
fn bin_name(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let file = argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|f| f.to_str());
    if file == Some("kubectl-sm") {
        "kubectl sm"
    } else {
        "server-manager"
    }
}

fn main() -> ExitCode {
    let name = bin_name(std::env::args_os().next().as_deref());
    let matches = Cli::command().bin_name(name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Crds { out } => crds(out),
        Command::Render {
            files,
            server,
            namespace,
            out,
        } => render(&files, &namespace, &server, out),
        Command::Push(args) => push(*args),
        Command::PlaybookRunner(args) => playbook_runner(args),
        Command::Standalone(args) => standalone(*args),
        Command::Operator(args) => operator(*args),
        Command::Logs(args) => logs(*args),
        Command::Completion { shell } => {
            // A completion script is bound to the command typed: the
            // executable's name (`kubectl-sm` when run as the plugin).
            let exe = if name == "kubectl sm" {
                "kubectl-sm"
            } else {
                name
            };
            clap_complete::generate(shell, &mut Cli::command(), exe, &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    let files = server_manager::crd::crd_files()?;
    match out {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, content) in files {
                std::fs::write(dir.join(name), content)?;
            }
        }
        None => {
            let docs: Vec<String> = files.into_iter().map(|(_, c)| c).collect();
            print!("{}", docs.join("---\n"));
        }
    }
    Ok(())
}

fn render(
    files: &[PathBuf],
    namespace: &str,
    server: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let manifests = server_manager::manifests::Manifests::load(files)?;
    let config = manifests.effective_config(namespace, server)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        for role in &config.roles {
            let path = dir.join(format!("{}.conf", role.role));
            std::fs::write(&path, &role.content)?;
            println!("wrote {} ({})", path.display(), role.hash);
        }
        return Ok(());
    }
    println!(
        "# Server {namespace}/{server}: configuration {}",
        config.hash
    );
    for role in &config.roles {
        println!("\n# ---- {}.conf ({}) ----", role.role, role.hash);
        print!("{}", role.content);
        println!("\n# ---- provenance of {}.conf ----", role.role);
        let width = role
            .values
            .iter()
            .map(|v| v.section.len() + v.key.len() + 1)
            .max()
            .unwrap_or(0);
        for v in &role.values {
            let name = format!("{}.{}", v.section, v.key);
            println!("# {name:<width$}  {}", v.source);
        }
    }
    Ok(())
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    use server_manager::registry::{self, Credentials, PushRequest, RegistryConfig, Source};
    use std::io::IsTerminal;

    let credentials = match (args.username, args.password_env) {
        (Some(username), Some(var)) => Some(Credentials {
            username,
            password: std::env::var(&var)
                .map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?,
        }),
        _ => None,
    };
    let source = if args.tarball.starts_with("http://") || args.tarball.starts_with("https://") {
        Source::Url(args.tarball)
    } else {
        Source::Path(PathBuf::from(args.tarball))
    };
    let registry = RegistryConfig {
        address: args.registry,
        insecure: args.insecure,
        ca_bundle: args.ca,
        credentials,
        ..Default::default()
    };
    let mut req = PushRequest::new(
        source,
        registry,
        args.image_id,
        args.image_type,
        args.version,
    );
    req.select = args.select;
    req.mount_from = args.mount_from;
    req.parallelism = args.parallel;
    req.compression = match args.compression {
        CompressionArg::None => registry::Compression::None,
        CompressionArg::Gzip => registry::Compression::Gzip,
    };

    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
        )?);
        Some(bar)
    } else {
        None
    };
    let on_progress = {
        let bar = bar.clone();
        move |p: registry::Progress| {
            if let Some(bar) = &bar {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
            }
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        match args.via {
            Via::Direct => registry::push(&req, on_progress).await,
            Via::Docker => registry::docker_engine::push(&req, on_progress).await,
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    println!("reference: {}", report.reference);
    println!("digest: {}", report.digest);
    println!(
        "size: {} bytes, uploaded: {} bytes (blobs: {} uploaded, {} mounted, {} already present)",
        report.size,
        report.bytes_uploaded,
        report.blobs_uploaded,
        report.blobs_mounted,
        report.blobs_skipped
    );
    Ok(())
}

fn playbook_runner(args: PlaybookRunnerArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let token = match (&args.token_file, args.token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        (None, Some(token)) => token,
        (None, None) => anyhow::bail!(
            "a bearer token is required: --token-file FILE or the SM_RUNNER_TOKEN environment variable"
        ),
    };
    let playbooks = std::fs::canonicalize(&args.playbooks)
        .with_context(|| format!("playbook directory {}", args.playbooks.display()))?;
    let mut config = server_manager::runner::RunnerConfig::new(args.data_dir, playbooks);
    config.max_concurrent = args.max_concurrent.max(1);
    config.default_timeout = std::time::Duration::from_secs(args.run_timeout.max(1));
    config.ansible_playbook = args.ansible_playbook;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(server_manager::runner::serve(args.listen, token, config))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn seconds(n: u64) -> Option<std::time::Duration> {
    (n > 0).then(|| std::time::Duration::from_secs(n))
}

fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    init_tracing();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts = server_manager::standalone::StandaloneOptions::new(args.data_dir);
    opts.listen = args.listen;
    opts.runner_listen = args.runner_listen;
    if let (Some(url), Some(file)) = (args.runner_url.first(), args.runner_token_file) {
        let token = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        opts.runner = Some((url.clone(), token.trim().to_string()));
        opts.more_runners = args.runner_url[1..].to_vec();
    }
    opts.runner_gone_after = std::time::Duration::from_secs(args.runner_gone_after);
    opts.registry = args.registry;
    opts.registry_insecure = !args.registry_tls;
    opts.registry_listen = args.registry_listen;
    if let Some(p) = args.playbooks {
        opts.playbooks = p;
    }
    if let Some(d) = args.image_dir {
        opts.image_dir = d;
    }
    opts.drift_interval = seconds(args.drift_interval);
    opts.health_listen = args.health_listen;
    opts.backoff.cap = std::time::Duration::from_secs(args.max_backoff.max(1));
    opts.rbac = args.rbac;
    opts.audit_log = args.audit_log;
    opts.operator = !args.no_operator;
    opts.lab = args.lab;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(server_manager::standalone::run(opts))
}

fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use server_manager::controller;
    init_tracing();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::fs::read_to_string(&args.runner_token_file)
        .with_context(|| format!("cannot read {}", args.runner_token_file.display()))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        let identity = args
            .identity
            .unwrap_or_else(|| format!("server-manager-{}", std::process::id()));
        let runners = match args.runner_service {
            Some(name) => controller::operator::Runners::Service {
                namespace: args.lease_namespace.clone(),
                name,
            },
            None => controller::operator::Runners::Urls(args.runner_url),
        };
        let wiring = controller::operator::Wiring {
            registry: args.registry,
            registry_insecure: args.registry_insecure,
            image_dir: args.image_dir,
            playbooks: args.playbooks,
            drift_interval: seconds(args.drift_interval),
            backoff: controller::server::decide::Backoff {
                cap: std::time::Duration::from_secs(args.max_backoff.max(1)),
                ..Default::default()
            },
            runners,
            runner_token: token,
            runner_gone_after: std::time::Duration::from_secs(args.runner_gone_after),
            health_addr: Some(args.health_listen),
            leader: args.leader_elect.then(|| controller::leader::LeaderConfig {
                namespace: args.lease_namespace.clone(),
                name: "server-manager".into(),
                identity: identity.clone(),
                lease_duration: std::time::Duration::from_secs(15),
                renew_every: std::time::Duration::from_secs(5),
            }),
            concurrency: args.concurrency,
            instance: identity,
        };
        wiring.build(client)?.run(shutdown_signal()).await
    })
}

fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use server_manager::logs;
    let token_file = args.runner_token_file.ok_or_else(|| {
        anyhow::anyhow!(
            "the runner's token is required: --runner-token-file FILE or SM_RUNNER_TOKEN_FILE \
             (standalone keeps it in DATA_DIR/runner-token)"
        )
    })?;
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
    if let Some(f) = &args.file {
        logs::check_file_name(f)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (client, default_ns) = logs::kube_client()
            .await
            .context("cannot build a Kubernetes client from the kubeconfig")?;
        let namespace = args.namespace.unwrap_or(default_ns);
        let request =
            logs::host_logs_request(&client, &namespace, &args.server, args.file.as_deref())
                .await?;
        let runner = server_manager::runner::RunnerClient::new(&args.runner_url, token.trim())?;
        let url = args.runner_url.as_str();
        match (&args.file, args.follow) {
            (None, _) => {
                let list = logs::list(&runner, url, &request).await?;
                if list.files.is_empty() {
                    eprintln!("no files in {} on {}", request.log_dir, request.target.host);
                }
                print!("{}", logs::format_table(&list));
            }
            (Some(_), false) => {
                use std::io::Write;
                let bytes = logs::read(&runner, url, &request).await?;
                let mut stdout = std::io::stdout().lock();
                // A closed pipe (`| head`) is not an error.
                let _ = stdout.write_all(&bytes).and_then(|_| stdout.flush());
            }
            (Some(_), true) => {
                let interval = std::time::Duration::from_secs(args.interval.max(1));
                let mut stdout = std::io::stdout();
                tokio::select! {
                    r = logs::follow(&runner, url, &request, interval, &mut stdout) => r?,
                    _ = shutdown_signal() => {}
                }
            }
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
