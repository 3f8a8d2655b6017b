//! The playbook runner: a REST service that runs the
//! provisioning playbooks (`playbooks/`) with `ansible-playbook` over SSH, one
//! run per target host at a time, and its client.
//!
//! - [`api`]: request and response types, shared by service and client.
//! - [`client`]: [`RunnerClient`], what the operator and `server-manager logs` call.
//! - [`http`]: the axum router ([`app`]) and [`AppError`].
//! - [`service`]: [`Runner`], scheduling and run records, independent of HTTP.
//! - `exec`: one `ansible-playbook` child (work directory, secrets, cancel).
//! - `events`: Ansible's event stream (progress, failures, recap).
//! - [`pool`]: [`RunnerPool`], several runners sharing the hosts.
//! - `store`: run records on disk; `metrics`: Prometheus metrics.

/// The wire types, in their own crate (`sm-runner-api`) so the runner's
/// clients share them without the rest of the operator.
pub use sm_runner_api as api;
pub mod client;
mod events;
mod exec;
pub mod http;
mod metrics;
pub mod pool;
pub mod service;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use client::{ClientError, RunnerClient};
pub use http::{AppError, AppState, app};
pub use pool::RunnerPool;
pub use service::{Runner, RunnerConfig};

/// Why the runner refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The request is invalid.
    #[error(transparent)]
    Invalid(#[from] api::ValidationError),
    /// No run with this id.
    #[error("no run {0}")]
    NotFound(String),
    /// Reading a host's log directory failed.
    #[error("failed to read the host's logs: {0}")]
    HostLogs(String),
    /// Local storage failed.
    #[error("{context}: {source}")]
    Io {
        /// What the runner was doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Serves the runner on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, token: String, config: RunnerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !token.trim().is_empty(),
        "the bearer token must not be empty"
    );
    let runner = Runner::open(config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "playbook runner listening");
    let state = AppState {
        runner,
        token: Arc::new(token.trim().to_string()),
    };
    axum::serve(listener, app(state)).await?;
    Ok(())
}
