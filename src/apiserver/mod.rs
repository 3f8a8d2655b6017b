//! The embedded Kubernetes-compatible API server.
//!
//! No real kube-apiserver can run on the machines this project targets, so
//! `server-manager standalone` and the end-to-end tests use this one. It behaves
//! like kube-apiserver wherever kubectl (1.32) or kube-rs (5.0) can tell the
//! difference: discovery (aggregated and legacy), OpenAPI v3 (with the CRD
//! schemas, so `kubectl explain` works), CRUD, patch (JSON, merge, strategic
//! merge, server-side apply with per-applier field ownership), watch with
//! bookmarks and `410 Expired`, finalizers, the status subresource, CRD schemas
//! (pruning, defaults, validation, CEL rules), protobuf request bodies, events in
//! both APIs, `dryRun=All`.
//!
//! `meta.k8s.io` Table output (CRD printer columns, built-in printers, one-row
//! Tables per watch event) is in `table`.
//!
//! RBAC (switchable; ServiceAccount token Secrets, Roles and bindings) and the
//! audit log with request counters are in `auth`.
//!
//! `/openapi/v2` (protobuf, for kubectl's client-side validation) and the
//! built-in kinds' schemas (from `k8s-openapi`, so `kubectl explain configmap`
//! works) are in `openapi`; the self reviews (`kubectl auth can-i|whoami`) and
//! TokenRequest (`kubectl create token`) in `authz_review` and `tokens`;
//! impersonation (`kubectl --as`) in `impersonate`.
//!
//! Not yet: list merge keys in server-side apply.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use server_manager::apiserver::{ApiServer, ApiServerConfig};
//! let handle = ApiServer::start(ApiServerConfig::new("/tmp/api-data"))?;
//! std::fs::write("/tmp/api-data/kubeconfig", handle.kubeconfig())?; // for kubectl
//! let client = kube::Client::try_from(handle.client_config())?; // for kube-rs
//! # drop(client);
//! handle.shutdown();
//! # Ok(()) }
//! ```
//!
//! The only public surface is [`ApiServer::start`], its [`ApiServerConfig`] and the
//! returned [`Handle`]. The module is split by concern:
//! - `store`: durable storage (redb), the global resourceVersion, watch history;
//! - `resources`: the table of served resources (built-ins and CRDs);
//! - `handlers`: the verbs; `watch`: watch streams; `discovery`: discovery/OpenAPI;
//! - `schema`: structural schemas and CEL; `patch`: patch types;
//! - `select`: label/field selectors; `proto`: protobuf bodies (a field table
//!   per built-in kind); `events`: the
//!   `v1` ↔ `events.k8s.io/v1` conversion; `tls`: CA, certificate and token;
//! - `http`: request parsing, content negotiation and `Status` errors.

mod auth;
mod authz_review;
mod body;
mod core_validation;
mod discovery;
mod events;
mod gc;
mod handlers;
mod http;
mod impersonate;
mod meta;
mod openapi;
mod patch;
mod proto;
mod resources;
pub(crate) mod schema;
mod select;
mod store;
mod strict_json;
mod table;
mod tls;
mod tokens;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch as tokio_watch;

pub use auth::{AuditRecord, RequestAttributes, RequestCounts};
pub use tls::kubeconfig_yaml;

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created or read.
    #[error("failed to prepare the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or loaded.
    #[error("failed to open the storage: {0}")]
    Storage(String),
    /// The CA, certificate or token could not be generated or loaded.
    #[error("failed to prepare TLS: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("failed to start the server thread: {0}")]
    Thread(String),
}

/// How to start the API server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Where objects, the CA and the admin token are kept.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Serve HTTPS with a generated CA (default) or plain HTTP.
    pub tls: bool,
    /// How many recent changes are kept for watches; a watch from an older
    /// resourceVersion gets `410 Expired`. Default 10,000.
    pub watch_window: usize,
    /// Interval between watch bookmarks (when asked for). Default 15 s.
    pub bookmark_interval: std::time::Duration,
    /// Enforce RBAC (Roles, ClusterRoles and their bindings) for ServiceAccount
    /// tokens; the admin token may still do everything. Off by default: only
    /// the admin token is accepted then.
    pub rbac: bool,
    /// Append one JSON line per request (user, verb, apiGroup, resource,
    /// subresource, namespace, name, path, code: an [`AuditRecord`]) to this
    /// file. Off by default; [`Handle::request_counts`] counts regardless.
    pub audit_log: Option<PathBuf>,
}

impl ApiServerConfig {
    /// A configuration with the defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            watch_window: 10_000,
            bookmark_interval: std::time::Duration::from_secs(15),
            rbac: false,
            audit_log: None,
        }
    }
}

/// The embedded API server.
pub struct ApiServer;

impl ApiServer {
    /// Starts the server on its own thread and runtime (so that a slow or
    /// single-threaded caller never starves it) and returns once it listens.
    pub fn start(config: ApiServerConfig) -> Result<Handle, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = store::Store::open(&config.data_dir, config.watch_window)?;
        let admin_token = tls::admin_token(&config.data_dir)?;
        let audit = Arc::new(
            auth::Audit::open(config.audit_log.as_deref())
                .map_err(|e| StartError::Storage(format!("failed to open the audit log: {e}")))?,
        );
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let (ca_pem, acceptor) = if config.tls {
            let (ca_pem, server_config) = tls::server_tls(&config.data_dir, addr)?;
            (
                Some(ca_pem),
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config))),
            )
        } else {
            (None, None)
        };
        let scheme = if config.tls { "https" } else { "http" };
        // A wildcard listen address is reached through loopback.
        let reach = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let url = format!("{scheme}://{reach}");
        let (stop_tx, stop_rx) = tokio_watch::channel(false);
        let state = Arc::new(handlers::Server::new(
            store,
            admin_token.clone(),
            config.bookmark_interval,
            stop_rx.clone(),
            config.rbac,
            audit.clone(),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apiserver")
            .enable_all()
            .build()
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let thread = std::thread::Builder::new()
            .name("apiserver".into())
            .spawn(move || {
                runtime.block_on(http::serve(listener, acceptor, state, stop_rx));
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        Ok(Handle {
            addr,
            url,
            admin_token,
            ca_pem,
            stop: stop_tx,
            thread: Some(thread),
            audit,
        })
    }
}

/// A running API server. Dropping it shuts the server down.
pub struct Handle {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https://ADDR` (or `http://` without TLS).
    pub url: String,
    /// The bearer token with full access (kept in `DATA_DIR/admin-token`).
    pub admin_token: String,
    /// The CA certificate (PEM) clients must trust; `None` without TLS.
    pub ca_pem: Option<String>,
    stop: tokio_watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    audit: Arc<auth::Audit>,
}

impl Handle {
    /// A kubeconfig (YAML) for this server: its URL, CA and the admin token.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(&self.url, self.ca_pem.as_deref(), &self.admin_token)
    }

    /// A kube-rs client configuration for this server (URL, CA, admin token),
    /// built without reading the environment (no proxy variables).
    pub fn client_config(&self) -> kube::Config {
        let uri = self
            .url
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("https://127.0.0.1"));
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        if let Some(pem) = &self.ca_pem {
            config.root_cert = Some(vec![tls::pem_to_der(pem)]);
        }
        config.auth_info.token = Some(self.admin_token.clone().into());
        config
    }

    /// How many requests the server has answered so far, by verb and resource
    /// (every request, whatever its outcome; kept whether or not
    /// [`ApiServerConfig::audit_log`] is set). Take a snapshot before and
    /// after and use [`RequestCounts::since`] to count what happened between.
    pub fn request_counts(&self) -> RequestCounts {
        self.audit.counts()
    }

    /// Stops accepting requests, ends open watches and waits for the server
    /// thread. Every write acknowledged before is already on disk.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
