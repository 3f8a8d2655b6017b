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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out } => crds(out),
        Command::Render {
            files,
            server,
            namespace,
            out,
        } => render(&files, &namespace, &server, out),
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
