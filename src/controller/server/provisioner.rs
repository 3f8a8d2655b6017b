//! The seam between the Server controller and the playbook runners: start a
//! run, read its status. One real implementation per deployment shape (one
//! runner: [`RunnerClient`]); fakes in unit tests and in the operator
//! benchmark only.
//!
//! Failures are typed, because the controller treats them differently: a
//! request the runner refuses as invalid cannot succeed until the Server
//! changes (the Server is `Stalled` with the runner's message), while a
//! runner that cannot be reached, times out or fails internally may recover
//! (retried with backoff).

use crate::runner::api::{RunRequest, RunStatus as RunnerStatus};
use crate::runner::client::{ClientError, RunnerClient};

/// A run started on a runner: its id there, and which runner it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHandle {
    /// The run id at that runner.
    pub id: String,
    /// The runner the run went to (its URL, or its name in a pool).
    pub runner: String,
}

/// Why a call to a runner failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The runner refused the request as invalid (HTTP 400/422): retrying the
    /// same request cannot help.
    #[error("the playbook runner refused the request: {0}")]
    Rejected(String),
    /// The runner could not be reached, did not answer in time, refused the
    /// operator's credentials or failed internally: worth retrying.
    #[error("the playbook runner is unavailable: {0}")]
    Unavailable(String),
}

impl ProvisionError {
    /// Classifies a client error.
    pub fn from_client(e: ClientError) -> ProvisionError {
        match e {
            ClientError::Api { status, message } if status == 400 || status == 422 => {
                ProvisionError::Rejected(message)
            }
            other => ProvisionError::Unavailable(other.to_string()),
        }
    }
}

/// Starts runs and reads their status.
#[async_trait::async_trait]
pub trait Provisioner: Send + Sync {
    /// Starts a run, or returns the run already known under the request's
    /// idempotency key.
    async fn start(&self, request: &RunRequest) -> Result<RunHandle, ProvisionError>;
    /// A run's status; `Ok(None)` when its runner does not know it (the runner
    /// lost it, e.g. its data was wiped, or the runner is gone for good).
    async fn status(&self, run: &RunHandle) -> Result<Option<RunnerStatus>, ProvisionError>;
}

#[async_trait::async_trait]
impl Provisioner for RunnerClient {
    async fn start(&self, request: &RunRequest) -> Result<RunHandle, ProvisionError> {
        self.run(request)
            .await
            .map(|a| RunHandle {
                id: a.id,
                runner: self.base_url().to_string(),
            })
            .map_err(ProvisionError::from_client)
    }

    async fn status(&self, run: &RunHandle) -> Result<Option<RunnerStatus>, ProvisionError> {
        match RunnerClient::status(self, &run.id).await {
            Ok(s) => Ok(Some(s)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(ProvisionError::from_client(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_the_rest_is_retried() {
        let api = |status: u16| ClientError::Api {
            status,
            message: "m".into(),
        };
        assert_eq!(
            ProvisionError::from_client(api(400)),
            ProvisionError::Rejected("m".into())
        );
        assert_eq!(
            ProvisionError::from_client(api(422)),
            ProvisionError::Rejected("m".into())
        );
        for status in [401, 403, 500, 503] {
            assert!(matches!(
                ProvisionError::from_client(api(status)),
                ProvisionError::Unavailable(_)
            ));
        }
    }
}
