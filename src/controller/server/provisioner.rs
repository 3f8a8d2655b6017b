//! The seam between the Server controller and the playbook runners: start a
//! run, read its status. One real implementation per deployment shape (one
//! runner: [`RunnerClient`]; several: [`RunnerPool`], which sends the runs of
//! a host to one runner by rendezvous hashing); fakes in unit tests and in
//! the operator benchmark only.
//!
//! Failures are typed, because the controller treats them differently: a
//! request the runner refuses as invalid cannot succeed until the Server
//! changes (the Server is `Stalled` with the runner's message), while a
//! runner that cannot be reached, times out or fails internally may recover
//! (retried with backoff).

use crate::runner::api::{RunRequest, RunStatus as RunnerStatus};
use crate::runner::client::{ClientError, RunnerClient};
use crate::runner::pool::{RunnerPool, host_key};

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
            ClientError::Http(e) if e.is_timeout() => ProvisionError::Unavailable(format!(
                "no answer from the playbook runner{} within its deadline ({} s)",
                e.url()
                    .map(|u| format!(" at {}", u.origin().ascii_serialization()))
                    .unwrap_or_default(),
                crate::runner::client::CALL_TIMEOUT.as_secs()
            )),
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

/// Whether the error says the runner could not be reached at all (as
/// opposed to an answer, even an error one).
fn unreachable(e: &ClientError) -> bool {
    matches!(e, ClientError::Http(h) if h.is_connect() || h.is_timeout() || h.is_request())
}

#[async_trait::async_trait]
impl Provisioner for RunnerPool {
    async fn start(&self, request: &RunRequest) -> Result<RunHandle, ProvisionError> {
        let key = host_key(&request.target.host, request.target.port);
        let Some((name, client)) = self.pick(&key) else {
            return Err(ProvisionError::Unavailable(
                "no playbook runner is ready".into(),
            ));
        };
        match client.run(request).await {
            Ok(a) => Ok(RunHandle {
                id: a.id,
                runner: name,
            }),
            Err(e) => {
                if unreachable(&e) {
                    // Its hosts go to the next runner until it answers again.
                    self.reached(&name, false);
                }
                Err(match ProvisionError::from_client(e) {
                    ProvisionError::Unavailable(m) => {
                        ProvisionError::Unavailable(format!("runner {name}: {m}"))
                    }
                    rejected => rejected,
                })
            }
        }
    }

    async fn status(&self, run: &RunHandle) -> Result<Option<RunnerStatus>, ProvisionError> {
        let (client, gone) = match self.member(&run.runner) {
            Some(known) => known,
            None if !self.synced() => {
                return Err(ProvisionError::Unavailable(
                    "the playbook runners are not known yet".into(),
                ));
            }
            // A runner outside the pool: asked once by its URL when it is
            // one; it is not expected back, so silence means unknown.
            None => match self.client_for(&run.runner) {
                Ok(client) if run.runner.starts_with("http") => {
                    return match RunnerClient::status(&client, &run.id).await {
                        Ok(s) => Ok(Some(s)),
                        Err(ClientError::Api { status: 404, .. }) => Ok(None),
                        Err(e) if unreachable(&e) => Ok(None),
                        Err(e) => Err(ProvisionError::from_client(e)),
                    };
                }
                _ => return Ok(None),
            },
        };
        match RunnerClient::status(&client, &run.id).await {
            Ok(s) => Ok(Some(s)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            // Gone for longer than the grace: its runs are redone elsewhere
            // (the host lock keeps them from overlapping a run it left).
            Err(e) if unreachable(&e) && gone => Ok(None),
            Err(e) => {
                if unreachable(&e) {
                    self.reached(&run.runner, false);
                }
                Err(ProvisionError::from_client(e))
            }
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
