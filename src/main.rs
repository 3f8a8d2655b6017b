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
    /// Run the embedded Kubernetes-compatible API server with the CRDs installed,
    /// writing `DATA_DIR/kubeconfig` for kubectl (stops on SIGTERM or Ctrl-C).
    Standalone {
        /// Where objects, the CA, the token and the kubeconfig are kept.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address the API server listens on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out } => crds(out),
        Command::Standalone { data_dir, listen } => standalone(data_dir, listen),
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

fn standalone(data_dir: PathBuf, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(server_manager::standalone::run(
        server_manager::standalone::StandaloneOptions { data_dir, listen },
    ))
}
