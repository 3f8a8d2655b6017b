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
    /// Push an image tarball (docker save or OCI layout, plain or gzip, path or
    /// URL) to a registry as `<imageId>-<imageType>:<version>`.
    Push(Box<PushArgs>),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out } => crds(out),
        Command::Push(args) => push(*args),
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
