//! The controllers (`server-manager operator`): Image, Server and Cluster.
//! Thin reconcilers over pure "desired state" functions; side effects go
//! through the Kubernetes client, the playbook runner and the image engine,
//! each behind a trait with one real implementation.

pub mod cluster;
pub mod conditions;
pub mod fleet;
pub mod image;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod patch;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use metrics::Metrics;
use server::decide::Backoff;

/// Field manager of the operator's writes.
pub const MANAGER: &str = "server-manager";

/// Settings of the operator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registry Images are pushed to, and Servers pull from unless their
    /// Cluster names another.
    pub registry: crate::registry::RegistryConfig,
    /// How often to check provisioned Servers for drift (`None`: never).
    pub drift_interval: Option<Duration>,
    /// Backoff after failures.
    pub backoff: Backoff,
    /// Version of the playbooks, part of each Server's desired hash.
    pub playbook_version: String,
}

/// What every reconcile gets.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Settings,
    /// The image push engine.
    pub images: Arc<dyn image::ImageEngine>,
}

/// A reconcile failure; the category labels metrics and Warning events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("failed to get {what}: {source}")]
    Get {
        /// What was read.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Writing status failed.
    #[error("failed to update the status of {what}: {source}")]
    UpdateStatus {
        /// Which object.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Removing an Image's tag from the registry failed.
    #[error("failed to remove the image from the registry: {0}")]
    RegistryCleanup(String),
    /// Clean-up is under way (a deprovision run): the finalizer stays until it
    /// ends. Not a failure; the finalizer helper only keeps its finalizer on
    /// an error.
    #[error("waiting: {0}")]
    Pending(String),
}

impl Error {
    /// A stable category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Get { .. } => "get",
            Error::UpdateStatus { .. } => "update_status",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "finalizer",
            },
            Error::RegistryCleanup(_) => "registry_cleanup",
            Error::Pending(_) => "pending",
        }
    }
}

/// Writes `new` as `obj`'s status when it differs from the current one (a
/// minimal merge patch); returns whether a request was made.
pub async fn write_status<K, S>(
    client: &Client,
    obj: &K,
    current: Option<&S>,
    new: &S,
) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
    S: Serialize,
{
    let Some(patch) = patch::status_patch(current, new) else {
        return Ok(false);
    };
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::UpdateStatus {
        what: format!("{}/{}", ns, obj.name_any()),
        source,
    })?;
    Ok(true)
}

/// Publishes an event about `obj`; a failure to record is logged, not fatal.
pub async fn publish<K>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    // Without the resourceVersion, as client-go's event correlator keys
    // events: the same event about the same object again within kube's
    // cache window becomes one Event with a growing `series` (a patch)
    // rather than a new Event per status write.
    let mut regarding = obj.object_ref(&());
    regarding.resource_version = None;
    if let Err(e) = recorder.publish(&event, &regarding).await {
        tracing::warn!(error = %e, reason, "failed to record event");
    }
}
