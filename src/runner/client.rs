//! The client of the playbook runner, for the operator and for
//! `server-manager logs`: typed calls over the types of [`super::api`].

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::api::{ErrorBody, HostLogsRequest, LogFileList, RunAccepted, RunRequest, RunStatus};

/// A run's log bytes as they arrive ([`RunnerClient::follow_logs`]).
pub type ByteStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<axum::body::Bytes, reqwest::Error>> + Send>,
>;

/// Longest wait for an answer to an API call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a host's log directory or file (one SSH session on the
/// runner's side).
pub const HOST_LOGS_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence while reading any answer, streams included.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The runner could not be reached, or its answer could not be read.
    #[error("failed to call the playbook runner: {0}")]
    Http(#[from] reqwest::Error),
    /// The runner answered with an error.
    #[error("the playbook runner refused the request ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The runner's message.
        message: String,
    },
}

/// A connection to one playbook runner.
#[derive(Clone, Debug)]
pub struct RunnerClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl RunnerClient {
    /// A client for the runner at `base_url` (`http://127.0.0.1:9003`),
    /// authenticating with `token`.
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<RunnerClient, ClientError> {
        // reqwest is built without a default TLS crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Every call has a deadline, so a runner that accepts connections
        // and never answers becomes an error, never a stuck reconcile. The
        // whole-request timeout is set per call: following a run's log
        // streams for as long as the run lasts.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .build()?;
        Ok(RunnerClient {
            base: base_url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            http,
        })
    }

    /// The runner's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let response = Self::checked(request.send().await?).await?;
        Ok(response.json().await?)
    }

    /// Starts a run (`POST /run_playbook`); with an idempotency key, returns
    /// the run already known under it (queued, running or finished).
    pub async fn run(&self, request: &RunRequest) -> Result<RunAccepted, ClientError> {
        Self::json(
            self.http
                .post(self.url("/run_playbook"))
                .timeout(CALL_TIMEOUT)
                .bearer_auth(&self.token)
                .json(request),
        )
        .await
    }

    /// The status of a run.
    pub async fn status(&self, id: &str) -> Result<RunStatus, ClientError> {
        Self::json(
            self.http
                .get(self.url(&format!("/playbook_status/{id}")))
                .timeout(CALL_TIMEOUT)
                .bearer_auth(&self.token),
        )
        .await
    }

    /// The log of a run so far.
    pub async fn logs(&self, id: &str) -> Result<String, ClientError> {
        let response = Self::checked(
            self.http
                .get(self.url(&format!("/playbook_logs/{id}")))
                .timeout(CALL_TIMEOUT)
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await?;
        Ok(response.text().await?)
    }

    /// The log of a run as it grows, until the run ends.
    pub async fn follow_logs(&self, id: &str) -> Result<ByteStream, ClientError> {
        let response = Self::checked(
            self.http
                .get(self.url(&format!("/playbook_logs/{id}?follow=true")))
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await?;
        Ok(Box::pin(response.bytes_stream()))
    }

    /// Cancels a run.
    pub async fn cancel(&self, id: &str) -> Result<RunStatus, ClientError> {
        Self::json(
            self.http
                .post(self.url(&format!("/cancel/{id}")))
                .timeout(CALL_TIMEOUT)
                .bearer_auth(&self.token),
        )
        .await
    }

    /// Polls a run until it ends.
    pub async fn wait(&self, id: &str, poll: Duration) -> Result<RunStatus, ClientError> {
        loop {
            let status = self.status(id).await?;
            if status.state.is_terminal() {
                return Ok(status);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Lists the files of a host's log directory.
    pub async fn list_log_files(
        &self,
        request: &HostLogsRequest,
    ) -> Result<LogFileList, ClientError> {
        Self::json(
            self.http
                .post(self.url("/host_logs/list"))
                .timeout(HOST_LOGS_TIMEOUT)
                .bearer_auth(&self.token)
                .json(request),
        )
        .await
    }

    /// Returns one file (`request.file`) of a host's log directory.
    pub async fn read_log_file(&self, request: &HostLogsRequest) -> Result<Vec<u8>, ClientError> {
        let response = Self::checked(
            self.http
                .post(self.url("/host_logs/read"))
                .timeout(HOST_LOGS_TIMEOUT)
                .bearer_auth(&self.token)
                .json(request)
                .send()
                .await?,
        )
        .await?;
        Ok(response.bytes().await?.to_vec())
    }

    /// The runner's metrics (OpenMetrics text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = Self::checked(
            self.http
                .get(self.url("/metrics"))
                .timeout(CALL_TIMEOUT)
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await?;
        Ok(response.text().await?)
    }

    /// Whether the runner answers `/healthz`.
    pub async fn healthy(&self) -> bool {
        matches!(
            self.http.get(self.url("/healthz")).timeout(Duration::from_secs(5)).send().await,
            Ok(r) if r.status().is_success()
        )
    }
}
