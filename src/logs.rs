//! `server-manager logs SERVER [--file F] [--follow]`: list or show the files
//! under a Server's log directory (`spec.layout.logDir`, default
//! `/var/log/contrail`) on its host.
//!
//! The Server and its SSH Secret (`spec.ssh.secretRef`: `ssh-privatekey`,
//! `known_hosts`) are read with a Kubernetes client; the host is reached by the
//! playbook runner (`POST /host_logs/list`, `POST /host_logs/read`), so the
//! credentials never leave the runner and the host key is verified the same way
//! provisioning verifies it.

use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::crd::{Provisioning, Server, SshTargetError};
use crate::runner::api::{HostLogsRequest, LogFileList};
use crate::runner::client::{ClientError, RunnerClient};

/// The log directory of a Server without `spec.layout`.
pub const DEFAULT_LOG_DIR: &str = crate::runner::api::defaults::LOG_DIR;

/// Why `server-manager logs` failed; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No such Server.
    #[error("Server {namespace}/{name} not found (kubectl get servers -n {namespace})")]
    ServerNotFound {
        /// Namespace looked in.
        namespace: String,
        /// Server name.
        name: String,
    },
    /// The Server is External: server-manager never connects to it.
    #[error(
        "Server {namespace}/{name} is External: it is managed elsewhere, no logs through server-manager"
    )]
    External {
        /// Namespace.
        namespace: String,
        /// Server name.
        name: String,
    },
    /// A Managed Server without `spec.ssh`.
    #[error("Server {namespace}/{name} has no spec.ssh: its host cannot be reached")]
    NoSsh {
        /// Namespace.
        namespace: String,
        /// Server name.
        name: String,
    },
    /// The SSH Secret does not exist.
    #[error(
        "Secret {namespace}/{name} (spec.ssh.secretRef of Server {server}) not found: create it with keys ssh-privatekey and known_hosts"
    )]
    SecretNotFound {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The Server referring to it.
        server: String,
    },
    /// The SSH Secret lacks a key.
    #[error("Secret {namespace}/{name} has no key {key} (it needs ssh-privatekey and known_hosts)")]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// `--file` is not a plain file name of the log directory.
    #[error(
        "invalid log file name {name:?}: {reason} (only names inside the log directory; list them without --file)"
    )]
    BadFileName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The Kubernetes API could not be read.
    #[error("failed to read from the Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
    /// The runner is not reachable.
    #[error(
        "cannot reach the playbook runner at {url}: {source} (is it running? point --runner-url at it)"
    )]
    RunnerUnreachable {
        /// The runner's URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The runner refused the token.
    #[error(
        "the playbook runner at {url} refused the token (HTTP {status}): check --runner-token-file"
    )]
    Unauthorized {
        /// The runner's URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The runner answered with an error (bad request, SSH failure, missing
    /// file, …).
    #[error("the playbook runner failed (HTTP {status}): {message}")]
    Runner {
        /// HTTP status.
        status: u16,
        /// The runner's message.
        message: String,
    },
}

impl LogsError {
    fn from_client(url: &str, e: ClientError) -> LogsError {
        match e {
            ClientError::Http(source) => LogsError::RunnerUnreachable {
                url: url.to_string(),
                source,
            },
            ClientError::Api { status, .. } if status == 401 || status == 403 => {
                LogsError::Unauthorized {
                    url: url.to_string(),
                    status,
                }
            }
            ClientError::Api { status, message } => LogsError::Runner { status, message },
        }
    }
}

/// A Kubernetes client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or
/// the in-cluster configuration, and the default namespace it names.
///
/// kube-rs takes `HTTPS_PROXY` from the environment; this build has no proxy
/// support, and a loopback API server (standalone) is never behind one, so the
/// proxy is dropped for loopback API servers.
pub async fn kube_client() -> anyhow::Result<(kube::Client, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::infer().await?;
    let loopback = config
        .cluster_url
        .host()
        .map(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
        .unwrap_or(false);
    if loopback {
        config.proxy_url = None;
    }
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

/// Checks a `--file` value the way the runner does (a plain name inside the
/// log directory: no `/`, no `..`), so the refusal comes before any SSH.
pub fn check_file_name(name: &str) -> Result<(), LogsError> {
    crate::runner::api::validate_file_name("file", name).map_err(|e| LogsError::BadFileName {
        name: name.to_string(),
        reason: e.reason,
    })
}

/// Builds the runner request for Server `namespace/name`: its host, SSH
/// credentials from its Secret, its log directory and `file`.
pub async fn host_logs_request(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    file: Option<&str>,
) -> Result<HostLogsRequest, LogsError> {
    if let Some(f) = file {
        check_file_name(f)?;
    }
    let servers: Api<Server> = Api::namespaced(client.clone(), namespace);
    let server = servers
        .get_opt(name)
        .await
        .map_err(|e| LogsError::Kube(Box::new(e)))?
        .ok_or_else(|| LogsError::ServerNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    if server.spec.provisioning == Provisioning::External {
        return Err(LogsError::External {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    let ssh = server.spec.ssh.as_ref().ok_or_else(|| LogsError::NoSsh {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_name = &ssh.secret_ref.name;
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| LogsError::Kube(Box::new(e)))?
        .ok_or_else(|| LogsError::SecretNotFound {
            namespace: namespace.to_string(),
            name: secret_name.clone(),
            server: name.to_string(),
        })?;
    let target = server.spec.ssh_target(&secret).map_err(|e| match e {
        SshTargetError::MissingKey(key) => LogsError::SecretKeyMissing {
            namespace: namespace.to_string(),
            name: secret_name.clone(),
            key: key.to_string(),
        },
        SshTargetError::NoSsh => LogsError::NoSsh {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    })?;
    Ok(HostLogsRequest {
        target,
        log_dir: server.spec.layout().log_dir,
        file: file.map(str::to_string),
    })
}

/// The listing as a table: NAME, SIZE (bytes), MODIFIED (UTC, RFC 3339).
pub fn format_table(list: &LogFileList) -> String {
    let rows: Vec<[String; 3]> = list
        .files
        .iter()
        .map(|f| {
            let modified = jiff::Timestamp::from_second(f.modified.floor() as i64)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|_| "-".into());
            [f.name.clone(), f.size.to_string(), modified]
        })
        .collect();
    let header = ["NAME".to_string(), "SIZE".into(), "MODIFIED".into()];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        out.push_str(&format!("{:<w0$}  {:>w1$}  {}\n", r[0], r[1], r[2]));
    }
    out
}

/// Lists the log directory.
pub async fn list(
    runner: &RunnerClient,
    url: &str,
    request: &HostLogsRequest,
) -> Result<LogFileList, LogsError> {
    runner
        .list_log_files(request)
        .await
        .map_err(|e| LogsError::from_client(url, e))
}

/// Reads `request.file`.
pub async fn read(
    runner: &RunnerClient,
    url: &str,
    request: &HostLogsRequest,
) -> Result<Vec<u8>, LogsError> {
    runner
        .read_log_file(request)
        .await
        .map_err(|e| LogsError::from_client(url, e))
}

/// Prints `request.file` and then, every `interval`, the bytes appended to it
/// since; never returns on its own (the caller stops it, e.g. on Ctrl-C). Each
/// poll reads the file again through the runner (one SSH session); a file that
/// got shorter (truncated or rotated) is printed again from its start, with a
/// note on stderr.
pub async fn follow(
    runner: &RunnerClient,
    url: &str,
    request: &HostLogsRequest,
    interval: Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), LogsError> {
    let mut offset = 0usize;
    loop {
        let bytes = read(runner, url, request).await?;
        if bytes.len() < offset {
            eprintln!(
                "-- {} got shorter (truncated or rotated): printing it from the start --",
                request.file.as_deref().unwrap_or_default()
            );
            offset = 0;
        }
        if bytes.len() > offset {
            // A closed stdout (`| head`) ends the command quietly.
            if out
                .write_all(&bytes[offset..])
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(());
            }
            offset = bytes.len();
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::api::LogFileEntry;

    #[test]
    fn table_aligns_and_formats_times() {
        let list = LogFileList {
            files: vec![
                LogFileEntry {
                    name: "analytics-api.log".into(),
                    size: 12345,
                    modified: 1_700_000_000.5,
                },
                LogFileEntry {
                    name: "a.log".into(),
                    size: 0,
                    modified: 0.0,
                },
            ],
        };
        assert_eq!(
            format_table(&list),
            "NAME                SIZE  MODIFIED\n\
             analytics-api.log  12345  2023-11-14T22:13:20Z\n\
             a.log                  0  1970-01-01T00:00:00Z\n"
        );
    }

    #[test]
    fn traversal_names_are_refused() {
        for bad in ["..", "../etc/passwd", "/etc/passwd", "a/b", "", "."] {
            assert!(
                matches!(check_file_name(bad), Err(LogsError::BadFileName { .. })),
                "{bad}"
            );
        }
        assert!(check_file_name("controller.log").is_ok());
        assert!(check_file_name("..hidden").is_ok());
    }
}
