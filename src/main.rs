//! The `server-manager` binary: command-line parsing only; the work lives in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run the playbook runner: the REST service that runs the provisioning
    /// playbooks with ansible-playbook over SSH.
    PlaybookRunner(PlaybookRunnerArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out } => crds(out),
        Command::PlaybookRunner(args) => playbook_runner(args),
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
