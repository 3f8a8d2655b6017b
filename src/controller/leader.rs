//! Leader election with a `coordination.k8s.io/v1` Lease: one operator replica
//! is active, the others wait. Acquire and renew are optimistic-concurrency
//! replaces (the Lease's resourceVersion), so two candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name, host name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// Why the election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API call failed.
    #[error("failed to read or write Lease {name}: {source}")]
    Api {
        /// Lease name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// A Lease-based elector.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
}

enum Attempt {
    Won,
    HeldByOther(String),
}

impl LeaderElector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            match self.try_acquire().await? {
                Attempt::Won => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return Ok(());
                }
                Attempt::HeldByOther(holder) => {
                    tracing::info!(lease = %self.config.name, %holder, "waiting for leadership");
                    tokio::time::sleep(self.config.renew_every).await;
                }
            }
        }
    }

    /// Renews the Lease until renewal fails or another replica takes it; returns
    /// then, and the caller must stop working.
    pub async fn hold(&self) -> LeaderError {
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire().await {
                Ok(Attempt::Won) => continue,
                Ok(Attempt::HeldByOther(holder)) => {
                    return LeaderError::Api {
                        name: self.config.name.clone(),
                        source: kube::Error::Service(format!("lease taken by {holder}").into()),
                    };
                }
                Err(e) => return e,
            }
        }
    }

    /// Gives the Lease up if this replica holds it (on a clean shutdown), as
    /// client-go's ReleaseOnCancel does: a standby takes over at its next
    /// attempt instead of waiting for the Lease to expire.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let api_err = |source| LeaderError::Api {
            name: self.config.name.clone(),
            source,
        };
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(api_err)? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let name = lease.name_any();
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map_err(api_err)?;
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "released leadership");
        Ok(())
    }

    async fn try_acquire(&self) -> Result<Attempt, LeaderError> {
        let api_err = |source| LeaderError::Api {
            name: self.config.name.clone(),
            source,
        };
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(&self.config.name).await.map_err(api_err)?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_duration_seconds: Some(duration_secs),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Won),
                Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                    Ok(Attempt::HeldByOther("unknown".into()))
                }
                Err(e) => Err(api_err(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let secs = i64::from(spec.lease_duration_seconds.unwrap_or(duration_secs));
            t.0.checked_add(jiff::SignedDuration::from_secs(secs))
                .is_ok_and(|until| until < now.0)
        });
        let mine = holder == self.config.identity;
        if !mine && !holder.is_empty() && !expired {
            return Ok(Attempt::HeldByOther(holder));
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration_secs);
        let name = lease.name_any();
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Won),
            Err(kube::Error::Api(s)) if s.reason == "Conflict" => {
                Ok(Attempt::HeldByOther("a concurrent candidate".into()))
            }
            Err(e) => Err(api_err(e)),
        }
    }
}
