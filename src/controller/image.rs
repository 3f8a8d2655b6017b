//! The Image controller: pushes `container` Images into the registry with the
//! image engine (progress, digest and reference in status, `Pushed`/`Ready`
//! conditions); records `package` Images without pushing; optionally removes
//! the tag from the registry when the Image is deleted (finalizer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::conditions::{
    PUSHED, READY, RECONCILING, STALLED, mark_settled, mark_unsettled, reason,
};
use super::{Context, Error, publish, write_status};
use crate::crd::{
    Condition, ConditionStatus, Image, ImageCategory, ImageSpec, ImageStatus, set_condition,
};

/// Finalizer that lets the controller clean the registry before an Image goes.
pub const FINALIZER: &str = "servermanager.contrail.io/image-cleanup";

/// Result of a successful push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository:tag`.
    pub reference: String,
    /// Manifest digest, as the registry reports it.
    pub digest: String,
    /// Total bytes of the image's blobs.
    pub size: u64,
    /// Bytes actually uploaded.
    pub bytes_uploaded: u64,
}

/// A failed push or clean-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// UpperCamelCase category (event reason, condition message prefix).
    pub reason: String,
    /// What failed, readable.
    pub message: String,
    /// Retrying cannot help until the Image (or its tarball) changes.
    pub permanent: bool,
}

/// Progress callback: (bytes done, bytes total).
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The seam to the registry: one real implementation (the push engine), fakes
/// in unit tests.
#[async_trait::async_trait]
pub trait ImageEngine: Send + Sync {
    /// Pushes the image described by `spec`; `source_credentials` are for a
    /// `reference` source's registry.
    async fn push(
        &self,
        spec: &ImageSpec,
        source_credentials: Option<crate::registry::Credentials>,
        progress: ProgressFn,
    ) -> Result<Pushed, EngineError>;
    /// Removes the image's tag from the registry (absent is fine).
    async fn remove(&self, spec: &ImageSpec) -> Result<(), EngineError>;
}

/// Per-object failure counts, for backoff between push attempts.
#[derive(Default)]
pub struct PushBackoff {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl PushBackoff {
    fn key(image: &Image) -> String {
        format!(
            "{}/{}",
            image.uid().unwrap_or_default(),
            image.meta().generation.unwrap_or(0)
        )
    }
    fn remaining(&self, image: &Image, ctx: &Context) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let (n, at) = map.get(&Self::key(image))?;
        let wait = ctx.settings.backoff.delay(*n);
        wait.checked_sub(at.elapsed())
    }
    fn failed(&self, image: &Image, ctx: &Context) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return ctx.settings.backoff.cap;
        };
        let entry = map.entry(Self::key(image)).or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
        ctx.settings.backoff.delay(entry.0)
    }
    fn succeeded(&self, image: &Image) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Self::key(image));
        }
    }
}

/// Reconciles one Image (with the finalizer helper).
pub async fn reconcile(
    image: Arc<Image>,
    ctx: Arc<Context>,
    backoff: Arc<PushBackoff>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<Image> =
        Api::namespaced(ctx.client.clone(), &image.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, image, |event| async {
        match event {
            Finalizer::Apply(image) => apply(&image, &ctx, &backoff).await,
            Finalizer::Cleanup(image) => cleanup(&image, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled("image", started.elapsed());
    result
}

/// The status of a recorded (package) Image.
pub fn package_status(image: &Image) -> ImageStatus {
    let generation = image.meta().generation;
    let mut st = image.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    st.reference = None;
    st.digest = None;
    set_condition(
        &mut st.conditions,
        Condition::new(
            READY,
            ConditionStatus::True,
            reason::RECORDED,
            "package image: recorded, not pushed",
            generation,
        ),
    );
    mark_settled(&mut st.conditions, generation);
    st.conditions.retain(|c| c.type_ != PUSHED);
    st
}

/// The message of the Image's `Stalled` condition when it is True for the
/// current generation (the push cannot succeed without a change).
pub fn stalled(image: &Image) -> Option<String> {
    image.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| {
                c.type_ == STALLED
                    && c.status == ConditionStatus::True
                    && c.observed_generation == image.meta().generation
            })
            .map(|c| c.message.clone())
    })
}

/// Whether the Image is pushed for its current generation.
pub fn is_done(image: &Image) -> bool {
    image.status.as_ref().is_some_and(|st| {
        st.observed_generation == image.meta().generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == ConditionStatus::True)
    })
}

async fn apply(image: &Image, ctx: &Context, backoff: &PushBackoff) -> Result<Action, Error> {
    let generation = image.meta().generation;
    if image.spec.category == ImageCategory::Package {
        write_status(
            &ctx.client,
            image,
            image.status.as_ref(),
            &package_status(image),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if is_done(image) {
        return Ok(Action::await_change());
    }
    if let Some(wait) = backoff.remaining(image, ctx) {
        return Ok(Action::requeue(wait));
    }

    // Say we are pushing, then push while a ticker reports progress.
    let mut st = image.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    set_condition(
        &mut st.conditions,
        Condition::new(
            RECONCILING,
            ConditionStatus::True,
            reason::PUSHING,
            "pushing to the registry",
            generation,
        ),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            READY,
            ConditionStatus::False,
            reason::PUSHING,
            "pushing to the registry",
            generation,
        ),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            STALLED,
            ConditionStatus::False,
            reason::AS_EXPECTED,
            "",
            generation,
        ),
    );
    write_status(&ctx.client, image, image.status.as_ref(), &st).await?;

    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let progress: super::image::ProgressFn = {
        let (done, total) = (done.clone(), total.clone());
        Arc::new(move |d, t| {
            done.store(d, Ordering::Relaxed);
            total.store(t, Ordering::Relaxed);
        })
    };
    let ticker = {
        let (client, image, st, done, total) = (
            ctx.client.clone(),
            image.clone(),
            st.clone(),
            done.clone(),
            total.clone(),
        );
        tokio::spawn(async move {
            let mut shown = st;
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (d, t) = (done.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
                let mut next = shown.clone();
                let msg = format!("pushing to the registry: {} of {} MiB", d >> 20, t >> 20);
                set_condition(
                    &mut next.conditions,
                    Condition::new(
                        RECONCILING,
                        ConditionStatus::True,
                        reason::PUSHING,
                        msg,
                        generation,
                    ),
                );
                if write_status(&client, &image, Some(&shown), &next)
                    .await
                    .is_ok()
                {
                    shown = next;
                }
            }
        })
    };
    let result = match source_credentials(image, ctx).await {
        Ok(credentials) => ctx.images.push(&image.spec, credentials, progress).await,
        Err(e) => Err(e),
    };
    ticker.abort();

    // Rebase on what the ticker may have written.
    let api: Api<Image> =
        Api::namespaced(ctx.client.clone(), &image.namespace().unwrap_or_default());
    let latest = api
        .get_status(&image.name_any())
        .await
        .map_err(|source| Error::Get {
            what: format!("Image {}", image.name_any()),
            source,
        })?;
    let current = latest.status.clone();
    let mut st = current.clone().unwrap_or_default();
    st.observed_generation = generation;
    match result {
        Ok(pushed) => {
            backoff.succeeded(image);
            ctx.metrics.bytes_pushed.inc_by(pushed.bytes_uploaded);
            let msg = format!("{} ({})", pushed.reference, pushed.digest);
            st.reference = Some(pushed.reference.clone());
            st.digest = Some(pushed.digest.clone());
            st.size = Some(pushed.size);
            st.bytes_pushed = Some(pushed.bytes_uploaded);
            set_condition(
                &mut st.conditions,
                Condition::new(
                    PUSHED,
                    ConditionStatus::True,
                    reason::PUSHED,
                    msg.clone(),
                    generation,
                ),
            );
            set_condition(
                &mut st.conditions,
                Condition::new(
                    READY,
                    ConditionStatus::True,
                    reason::PUSHED,
                    msg.clone(),
                    generation,
                ),
            );
            mark_settled(&mut st.conditions, generation);
            write_status(&ctx.client, image, current.as_ref(), &st).await?;
            let note = format!("pushed {msg}, {} bytes uploaded", pushed.bytes_uploaded);
            publish(
                &ctx.recorder,
                image,
                EventType::Normal,
                reason::PUSHED,
                "Push",
                note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.metrics.error("image", "push");
            let wait = backoff.failed(image, ctx);
            let msg = format!("{}: {}", e.reason, e.message);
            set_condition(
                &mut st.conditions,
                Condition::new(
                    PUSHED,
                    ConditionStatus::False,
                    reason::PUSH_FAILED,
                    msg.clone(),
                    generation,
                ),
            );
            set_condition(
                &mut st.conditions,
                Condition::new(
                    READY,
                    ConditionStatus::False,
                    reason::PUSH_FAILED,
                    msg.clone(),
                    generation,
                ),
            );
            // Stalled and Reconciling never contradict each other: a permanent
            // failure is not retried (until the Image changes), a transient one
            // is, and says when.
            let (reconciling, action) = if e.permanent {
                (
                    (
                        reason::PUSH_FAILED,
                        "not retried until the Image changes".to_string(),
                    ),
                    Action::await_change(),
                )
            } else {
                (
                    (
                        reason::BACKING_OFF,
                        format!("retrying in {}s", wait.as_secs()),
                    ),
                    Action::requeue(wait),
                )
            };
            mark_unsettled(
                &mut st.conditions,
                e.permanent,
                reconciling,
                (reason::PUSH_FAILED, msg.clone()),
                generation,
            );
            write_status(&ctx.client, image, current.as_ref(), &st).await?;
            publish(
                &ctx.recorder,
                image,
                EventType::Warning,
                reason::PUSH_FAILED,
                "Push",
                msg,
            )
            .await;
            Ok(action)
        }
    }
}

/// The credentials of a `reference` source's registry, from the Secret
/// `source.credentialsSecretRef` names (`username`, `password`). A missing
/// Secret is transient: it may be created after the Image.
async fn source_credentials(
    image: &Image,
    ctx: &Context,
) -> Result<Option<crate::registry::Credentials>, EngineError> {
    let Some(secret_ref) = &image.spec.source.credentials_secret_ref else {
        return Ok(None);
    };
    let ns = image.namespace().unwrap_or_default();
    let name = &secret_ref.name;
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let not_found = |message: String| EngineError {
        reason: "SecretNotFound".into(),
        message,
        permanent: false,
    };
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| not_found(format!("failed to read Secret {ns}/{name}: {e}")))?
        .ok_or_else(|| {
            not_found(format!(
                "failed to read the source registry credentials: Secret {ns}/{name} does not exist"
            ))
        })?;
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => {
            Ok(Some(crate::registry::Credentials { username, password }))
        }
        _ => Err(not_found(format!(
            "failed to read the source registry credentials: Secret {ns}/{name} needs the keys username and password"
        ))),
    }
}

async fn cleanup(image: &Image, ctx: &Context) -> Result<Action, Error> {
    let pushed = image.status.as_ref().is_some_and(|s| s.reference.is_some());
    if image.spec.remove_from_registry_on_delete
        && image.spec.category == ImageCategory::Container
        && pushed
    {
        ctx.images
            .remove(&image.spec)
            .await
            .map_err(|e| Error::RegistryCleanup(e.message))?;
        publish(
            &ctx.recorder,
            image,
            EventType::Normal,
            "Removed",
            "Delete",
            "tag removed from the registry".into(),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// The real [`ImageEngine`]: the direct push over the OCI distribution API
/// ([`crate::registry::push`]).
pub struct RegistryEngine {
    /// The registry Images are pushed to.
    pub registry: crate::registry::RegistryConfig,
    /// The only directory `source.path` tarballs are read from.
    pub image_dir: std::path::PathBuf,
}

#[async_trait::async_trait]
impl ImageEngine for RegistryEngine {
    async fn push(
        &self,
        spec: &ImageSpec,
        source_credentials: Option<crate::registry::Credentials>,
        progress: ProgressFn,
    ) -> Result<Pushed, EngineError> {
        use crate::registry::{PushError, PushRequest, push};
        let engine_error = |e: PushError| EngineError {
            reason: e.reason().to_string(),
            message: e.to_string(),
            permanent: e.is_permanent(),
        };
        let request = PushRequest::for_image(
            spec,
            self.registry.clone(),
            &self.image_dir,
            source_credentials,
        )
        .map_err(engine_error)?;
        let report = push(&request, move |p| progress(p.bytes_done, p.bytes_total))
            .await
            .map_err(engine_error)?;
        Ok(Pushed {
            reference: report.reference.to_string(),
            digest: report.digest,
            size: report.size,
            bytes_uploaded: report.bytes_uploaded,
        })
    }

    async fn remove(&self, spec: &ImageSpec) -> Result<(), EngineError> {
        crate::registry::delete_tag(
            &self.registry,
            &spec.image_id,
            spec.image_type,
            &spec.version,
        )
        .await
        .map(|_| ())
        .map_err(|e| EngineError {
            reason: e.reason().to_string(),
            message: e.to_string(),
            permanent: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ImageSource, Role};

    fn image(category: ImageCategory) -> Image {
        let mut i = Image::new(
            "controller-1",
            ImageSpec {
                category,
                image_id: "contrail-container".into(),
                image_type: Role::Controller,
                version: "1".into(),
                source: ImageSource {
                    path: Some("/x.tar".into()),
                    ..Default::default()
                },
                remove_from_registry_on_delete: false,
            },
        );
        i.metadata.generation = Some(2);
        i
    }

    #[test]
    fn packages_are_ready_without_a_reference() {
        let mut i = image(ImageCategory::Package);
        let st = package_status(&i);
        assert_eq!(st.observed_generation, Some(2));
        assert!(st.reference.is_none());
        i.status = Some(st.clone());
        assert!(is_done(&i));
        // Stable: recomputing gives the same status, so no write happens.
        assert_eq!(package_status(&i), st);
        assert_eq!(
            super::super::patch::status_patch(i.status.as_ref(), &st),
            None
        );
    }

    #[test]
    fn done_only_for_the_current_generation() {
        let mut i = image(ImageCategory::Container);
        assert!(!is_done(&i));
        let mut st = ImageStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        set_condition(
            &mut st.conditions,
            Condition::new(READY, ConditionStatus::True, reason::PUSHED, "", Some(1)),
        );
        i.status = Some(st.clone());
        assert!(!is_done(&i));
        st.observed_generation = Some(2);
        i.status = Some(st);
        assert!(is_done(&i));
    }
}
