//! Image push: an image tarball (`docker save` or OCI image layout, plain or gzip,
//! by path or HTTP(S) URL) into a registry as `<imageId>-<imageType>:<version>`.
//!
//! - [`push`]: the direct push over the OCI distribution API (the default):
//!   layers streamed from the tarball with digests checked on the fly, `HEAD`
//!   before upload, cross-repository mount, parallel uploads, retries with
//!   backoff, manifest pushed last (a failed push never leaves a tag pointing at
//!   missing blobs). Memory stays flat in the image size.
//! - [`docker_engine::push`]: the same through a Docker engine (load, tag, push).
//! - [`delete_tag`]: removes a pushed tag (the Image finalizer's clean-up).
//!
//! Reading tarballs lives in `tarball`, working out what to push in `plan`, the
//! HTTP calls in `client`.

mod client;
mod copy;
pub mod docker_engine;
mod gzip;
mod plan;
mod tarball;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::crd::{ImageCategory, ImageSpec, Role};
use crate::image_ref::{ImageRefError, ImageReference};
use client::{Cause, HttpError, RegistryClient, retry_with, retrying};
use plan::{BlobData, PlanError, PlannedBlob, PushPlan};
use tarball::{Origin, Tarball, TarballError};

pub use copy::{
    ReferenceSource, SOURCE_REFERENCE_MAX, SOURCE_REFERENCE_PATTERN, SourceReference,
    parse_source_reference,
};

/// Where the image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file readable by this process.
    Path(PathBuf),
    /// An HTTP(S) URL, streamed (a plain tarball served with range support is
    /// read in parallel; otherwise sequentially, once per pass).
    Url(String),
    /// An image in another registry, copied blob by blob.
    Reference(ReferenceSource),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Url(u) => f.write_str(u),
            Source::Reference(r) => f.write_str(&r.reference),
        }
    }
}

/// Registry credentials (from the Image controller's Secret or the CLI).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How hard to try a failing registry call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1 for the first): the
    /// operator's one backoff, from `initial_backoff` doubling to `max_backoff`.
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::backoff::Backoff {
            base: self.initial_backoff,
            cap: self.max_backoff,
        }
        .delay(attempt)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The registry to push to and how to talk to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `host[:port]`, optionally followed by a path prefix for repositories.
    pub address: String,
    /// Plain HTTP instead of HTTPS. Only when explicitly asked for.
    pub insecure: bool,
    /// PEM file of CA certificates trusted in addition to the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Credentials for basic auth or the bearer token flow.
    pub credentials: Option<Credentials>,
    /// Retries on connection errors and 5xx answers.
    pub retry: RetryPolicy,
    /// Deadline of each registry call: a registry that accepts connections and
    /// never answers fails the call (retried) after this long. For a streamed
    /// blob, the longest pause in taking data or answering. `None`: 30 s.
    pub timeout: Option<Duration>,
}

impl RegistryConfig {
    /// The deadline of each call ([`RegistryConfig::timeout`] or 30 s).
    pub fn deadline(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(30))
    }
}

/// How `docker save` layers (uncompressed tars) are pushed. OCI-layout blobs are
/// always pushed as they are, byte for byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// As they are (the default: measured faster whenever the link to the
    /// registry is faster than compressing, about 0.8 Gbit/s on a 2-core
    /// machine; see `benches/RESULTS.md`, "Image push"). A re-push reads nothing.
    #[default]
    None,
    /// Gzip (fast level), for slow links: about half the bytes for typical
    /// binaries. Each layer is read and compressed once, uploaded as it is
    /// compressed; a re-push compresses nothing (the compressed digests come
    /// from the tag, or from the memo of layers pushed before).
    Gzip,
}

/// One push: which tarball, which registry, which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The image tarball.
    pub source: Source,
    /// The destination registry.
    pub registry: RegistryConfig,
    /// First part of the repository name (`contrail-container`).
    pub image_id: String,
    /// The role, second part of the repository name.
    pub image_type: Role,
    /// The tag.
    pub version: String,
    /// Which image of a tarball holding several: a `RepoTags` entry (docker save),
    /// a `ref.name` annotation or a manifest digest (OCI layout).
    pub select: Option<String>,
    /// Repositories of the same registry to mount shared layers from, in addition
    /// to the registry's other `<imageId>-*` repositories found in its catalog.
    pub mount_from: Vec<String>,
    /// How many blobs to upload at once (when the source allows random access).
    pub parallelism: usize,
    /// How `docker save` layers are pushed.
    pub compression: Compression,
    /// The persistent memo of gzip-compressed layers (`diff_id` → compressed
    /// digest), so a compressed re-push asks the registry without compressing.
    /// `None`: no memo. Default: under the user's cache directory.
    pub layer_memo: Option<PathBuf>,
}

impl PushRequest {
    /// A request with the defaults: no selection, no extra mount sources, 4
    /// parallel uploads, no compression.
    pub fn new(
        source: Source,
        registry: RegistryConfig,
        image_id: impl Into<String>,
        image_type: Role,
        version: impl Into<String>,
    ) -> PushRequest {
        PushRequest {
            source,
            registry,
            image_id: image_id.into(),
            image_type,
            version: version.into(),
            select: None,
            mount_from: Vec::new(),
            parallelism: 4,
            compression: Compression::None,
            layer_memo: gzip::default_memo_path(),
        }
    }
}

impl PushRequest {
    /// The request for an `Image` resource's spec, to the given registry.
    ///
    /// A `path` source is confined to `image_dir`: it must resolve, symbolic
    /// links included, to a regular file inside it (see
    /// [`crate::validation::confine_image_path`]); the resolved path is what
    /// gets read.
    ///
    /// A `reference` source is copied from its registry, with
    /// `source_credentials` (from the Image's `source.credentialsSecretRef`).
    ///
    /// Fails (permanently) for a `package` Image, which is never pushed, for a
    /// path outside `image_dir`, and for an invalid reference.
    pub fn for_image(
        spec: &ImageSpec,
        registry: RegistryConfig,
        image_dir: &std::path::Path,
        source_credentials: Option<Credentials>,
    ) -> Result<PushRequest, PushError> {
        if spec.category == ImageCategory::Package {
            return Err(PushError::UnsupportedSource(
                "a package Image is recorded, never pushed".into(),
            ));
        }
        let source = match (&spec.source.path, &spec.source.url, &spec.source.reference) {
            (Some(p), None, None) => Source::Path(
                crate::validation::confine_image_path(image_dir, p)
                    .map_err(|e| PushError::SourceOutside(e.to_string()))?,
            ),
            (None, Some(u), None) => Source::Url(u.clone()),
            (None, None, Some(r)) => {
                parse_source_reference(r).map_err(PushError::UnsupportedSource)?;
                Source::Reference(ReferenceSource {
                    reference: r.clone(),
                    insecure: spec.source.insecure,
                    credentials: source_credentials,
                })
            }
            _ => {
                return Err(PushError::UnsupportedSource(
                    "exactly one of source.path, source.url or source.reference must be set".into(),
                ));
            }
        };
        Ok(PushRequest::new(
            source,
            registry,
            spec.image_id.clone(),
            spec.image_type,
            spec.version.clone(),
        ))
    }
}

/// Progress of a push, reported through the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of blobs done: uploaded, or found/mounted in the registry.
    pub bytes_done: u64,
    /// Bytes of all the image's blobs.
    pub bytes_total: u64,
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The pushed reference.
    pub reference: ImageReference,
    /// Manifest digest as reported by the registry (`sha256:…`).
    pub digest: String,
    /// Total size of the image's blobs (layers and config).
    pub size: u64,
    /// Blob bytes actually uploaded (0 on a re-push).
    pub bytes_uploaded: u64,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: usize,
    /// Blobs the repository already had.
    pub blobs_skipped: usize,
}

/// Why a push (or tag deletion) failed; named after the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The image id, version or registry address is invalid.
    #[error("failed to name the image: {0}")]
    Reference(#[from] ImageRefError),
    /// The Image's source cannot be pushed by this engine.
    #[error("failed to use the image source: {0}")]
    UnsupportedSource(String),
    /// The source path is not a file inside the image directory.
    #[error("failed to use the image source: {0}")]
    SourceOutside(String),
    /// The HTTP client (TLS, CA bundle) could not be set up.
    #[error("failed to configure the registry client: {0}")]
    Configure(String),
    /// The tarball cannot be opened or is not a valid archive.
    #[error("failed to read the image tarball {source_name}: {message}")]
    ReadTarball {
        /// The source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The tarball holds no usable image description.
    #[error("failed to understand the image in {source_name}: {message}")]
    InvalidImage {
        /// The source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// Several images and no (or no matching) choice.
    #[error("failed to select the image in {source_name}: {message}")]
    SelectImage {
        /// The source.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A layer's content does not match the digest the image declares.
    #[error("failed to verify blob {digest}: its content hashes to {actual}")]
    VerifyBlob {
        /// The declared digest.
        digest: String,
        /// What the content hashes to (or a size mismatch).
        actual: String,
    },
    /// The registry refused for good: our credentials (401/403), the content
    /// (a digest mismatch), or plain HTTP where TLS was expected. Trying again
    /// cannot help until the configuration or the image changes.
    #[error("{message}")]
    Refused {
        /// `RegistryDenied`, `DigestMismatch` or `PlainHttpRegistry`.
        cause: &'static str,
        /// The failed operation and the registry's answer.
        message: String,
    },
    /// The tarball's URL cannot be fetched for now (refused, timed out, 5xx).
    #[error("failed to fetch the image tarball {source_name}: {message}")]
    FetchSource {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The registry cannot be reached or refuses us.
    #[error("failed to reach the registry {registry}: {message}")]
    ConnectRegistry {
        /// The registry address.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// Checking for or mounting an existing blob failed.
    #[error("failed to check blob {digest} in the registry: {message}")]
    CheckBlob {
        /// The blob.
        digest: String,
        /// What went wrong.
        message: String,
    },
    /// Uploading a blob failed.
    #[error("failed to upload blob {digest}: {message}")]
    UploadBlob {
        /// The blob.
        digest: String,
        /// What went wrong.
        message: String,
    },
    /// Pushing the manifest (the tag) failed.
    #[error("failed to push the manifest of {reference}: {message}")]
    PushManifest {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// Deleting a tag failed.
    #[error("failed to delete {reference}: {message}")]
    DeleteTag {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// The Docker engine path failed (load, tag or push).
    #[error("failed to {operation} through the Docker engine: {message}")]
    DockerEngine {
        /// `load the tarball`, `tag the image`, `push the image`…
        operation: &'static str,
        /// What went wrong, with the engine's own message.
        message: String,
    },
}

impl PushError {
    /// A static category, for metric labels and event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Reference(_) => "InvalidReference",
            PushError::UnsupportedSource(_) => "UnsupportedSource",
            PushError::SourceOutside(_) => "SourceOutsideImageDirectory",
            PushError::Configure(_) => "ConfigureClient",
            PushError::ReadTarball { .. } => "ReadTarball",
            PushError::InvalidImage { .. } => "InvalidImage",
            PushError::SelectImage { .. } => "SelectImage",
            PushError::VerifyBlob { .. } => "VerifyBlob",
            PushError::Refused { cause, .. } => cause,
            PushError::FetchSource { .. } => "FetchSource",
            PushError::ConnectRegistry { .. } => "ConnectRegistry",
            PushError::CheckBlob { .. } => "CheckBlob",
            PushError::UploadBlob { .. } => "UploadBlob",
            PushError::PushManifest { .. } => "PushManifest",
            PushError::DeleteTag { .. } => "DeleteTag",
            PushError::DockerEngine { .. } => "DockerEngine",
        }
    }
}

impl PushError {
    /// Whether trying again cannot help until the Image or its tarball changes
    /// (bad names, unreadable or inconsistent tarballs, corrupt layers), as
    /// opposed to registry, network or engine trouble, which may pass.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PushError::Reference(_)
                | PushError::UnsupportedSource(_)
                | PushError::SourceOutside(_)
                | PushError::ReadTarball { .. }
                | PushError::InvalidImage { .. }
                | PushError::SelectImage { .. }
                | PushError::VerifyBlob { .. }
                | PushError::Refused { .. }
        )
    }

    /// The error of a failed registry call: a permanent refusal (credentials,
    /// digest, plain HTTP) whatever the operation, else the operation's own
    /// error built by `other` from the message.
    fn from_http(e: HttpError, other: impl FnOnce(String) -> PushError) -> PushError {
        let cause = match e.cause {
            Cause::Denied => "RegistryDenied",
            Cause::DigestMismatch => "DigestMismatch",
            Cause::PlainHttp => "PlainHttpRegistry",
            Cause::Transient | Cause::Other => return other(e.message),
        };
        PushError::Refused {
            cause,
            message: other(e.message).to_string(),
        }
    }
}

/// A progress callback shared by the upload tasks.
type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Pushes an image tarball directly to the registry (see the module header).
///
/// `progress` is called from several threads as bytes are done; keep it cheap.
pub async fn push(
    req: &PushRequest,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<PushReport, PushError> {
    if let Source::Reference(source) = &req.source {
        return copy::copy(req, source, Arc::new(progress)).await;
    }
    let reference = ImageReference::new(
        &req.registry.address,
        &req.image_id,
        req.image_type,
        &req.version,
    )?;
    let client = Arc::new(
        RegistryClient::new(&req.registry, &reference.registry).map_err(PushError::Configure)?,
    );
    let source_name = req.source.to_string();
    let (tarball, mut plan) = open_and_plan(req).await?;
    let tarball = Arc::new(tarball);
    let registry = reference.registry.clone();
    retrying(&client.retry, || client.ping())
        .await
        .map_err(|e| {
            PushError::from_http(e, |message| PushError::ConnectRegistry {
                registry: registry.clone(),
                message,
            })
        })?;
    let parallelism = if tarball.random_access() {
        req.parallelism.max(1)
    } else {
        1
    };
    // Gzip: the layers are compressed on the way (module `gzip`); the plan's
    // blobs are then only the config.
    let gzip_image = match req.compression {
        Compression::Gzip => plan.docker.clone(),
        Compression::None => None,
    };
    let mut blobs = plan.blobs.clone();
    let mut total: u64 = blobs.iter().map(|b| b.size).sum();
    if let Some(image) = &gzip_image {
        blobs.retain(|b| matches!(b.data, BlobData::Bytes(_)));
        let mut seen = std::collections::HashSet::new();
        total = blobs.iter().map(|b| b.size).sum::<u64>()
            + image
                .layers
                .iter()
                .filter(|(d, _)| seen.insert(d.clone()))
                .map(|(_, e)| e.size)
                .sum::<u64>();
    }

    let repo = reference.repository.clone();
    let done = Arc::new(AtomicU64::new(0));
    let progress: ProgressFn = Arc::new(progress);
    progress(Progress {
        bytes_done: 0,
        bytes_total: total,
    });
    let candidates = mount_candidates(&client, req, &repo).await;

    // Layers in archive order: a sequential source must be read front to back.
    blobs.sort_by_key(|b| match &b.data {
        BlobData::Entry(e) => e.offset,
        BlobData::Bytes(_) => u64::MAX,
    });
    let ctx = Arc::new(BlobContext {
        source_name: source_name.clone(),
        client: client.clone(),
        tarball,
        repo: repo.clone(),
        candidates,
        done,
        total,
        progress,
    });
    let mut size = total;
    let mut layer_outcomes = Vec::new();
    if let Some(image) = &gzip_image {
        let from_tag = existing_gzip_layers(&client, &reference, image)
            .await
            .unwrap_or_default();
        let memo_path = req.layer_memo.clone();
        let mut memo = tokio::task::spawn_blocking(move || gzip::Memo::load(memo_path.as_deref()))
            .await
            .unwrap_or_else(|_| gzip::Memo::load(None));
        let layers = gzip::push_layers(&ctx, image, from_tag, &mut memo, parallelism).await?;
        plan.manifest = plan::docker_manifest(image, &layers.descriptors);
        plan.manifest_digest = plan::sha256_digest(&plan.manifest);
        size = layers.size + blobs.iter().map(|b| b.size).sum::<u64>();
        layer_outcomes = layers.outcomes;
    }
    let outcomes: Vec<Result<BlobOutcome, PushError>> = futures::stream::iter(blobs)
        .map(|blob| {
            let ctx = ctx.clone();
            async move { ensure_blob(&ctx, &blob).await }
        })
        .buffer_unordered(parallelism)
        .collect()
        .await;
    let mut report = PushReport {
        reference: reference.clone(),
        digest: String::new(),
        size,
        bytes_uploaded: 0,
        blobs_uploaded: 0,
        blobs_mounted: 0,
        blobs_skipped: 0,
    };
    for outcome in layer_outcomes.into_iter().map(Ok).chain(outcomes) {
        match outcome? {
            BlobOutcome::Skipped => report.blobs_skipped += 1,
            BlobOutcome::Mounted => report.blobs_mounted += 1,
            BlobOutcome::Uploaded(n) => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += n;
            }
        }
    }
    // Every blob is in: only now does the tag appear.
    let digest = retrying(&client.retry, || {
        client.put_manifest(
            &repo,
            &reference.tag,
            &plan.manifest_media_type,
            &plan.manifest,
        )
    })
    .await
    .map_err(|e| {
        PushError::from_http(e, |message| PushError::PushManifest {
            reference: reference.to_string(),
            message,
        })
    })?;
    if digest != plan.manifest_digest {
        return Err(PushError::PushManifest {
            reference: reference.to_string(),
            message: format!(
                "the registry stored {digest}, expected {}",
                plan.manifest_digest
            ),
        });
    }
    tracing::info!(%reference, %digest, bytes_uploaded = report.bytes_uploaded, source = %source_name, "image pushed");
    report.digest = digest;
    Ok(report)
}

/// Indexes the tarball and works out the plan, on a blocking thread.
async fn open_and_plan(req: &PushRequest) -> Result<(Tarball, PushPlan), PushError> {
    let source_name = req.source.to_string();
    let origin = match &req.source {
        Source::Path(p) => Origin::File(p.clone()),
        Source::Url(u) => {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(PushError::ReadTarball {
                    source_name,
                    message: "only http:// and https:// URLs are supported".into(),
                });
            }
            Origin::Url {
                client: client::http_client(
                    req.registry.ca_bundle.as_deref(),
                    Some(req.registry.deadline()),
                )
                .map_err(PushError::Configure)?,
                url: u.clone(),
                handle: tokio::runtime::Handle::current(),
            }
        }
        Source::Reference(_) => {
            return Err(PushError::UnsupportedSource(
                "an image reference is copied, not read as a tarball".into(),
            ));
        }
    };
    let select = req.select.clone();
    let name = source_name.clone();
    tokio::task::spawn_blocking(move || {
        let tarball = Tarball::index(origin).map_err(|e| tarball_error(&name, e))?;
        let plan = plan::plan(&tarball, select.as_deref()).map_err(|e| match e {
            PlanError::Tarball(t) => tarball_error(&name, t),
            PlanError::Invalid(message) => PushError::InvalidImage {
                source_name: name.clone(),
                message,
            },
            PlanError::Select(message) => PushError::SelectImage {
                source_name: name.clone(),
                message,
            },
        })?;
        Ok((tarball, plan))
    })
    .await
    .map_err(|e| PushError::ReadTarball {
        source_name,
        message: format!("reader task failed: {e}"),
    })?
}

fn tarball_error(source_name: &str, e: TarballError) -> PushError {
    match e {
        TarballError::Fetch(message) => PushError::FetchSource {
            source_name: source_name.to_string(),
            message,
        },
        e => PushError::ReadTarball {
            source_name: source_name.to_string(),
            message: e.to_string(),
        },
    }
}

/// Repositories that may hold our layers: the explicit ones, then the registry's
/// other repositories of the same image id (the roles of one product share their
/// base layers). The catalog is best effort: a registry that hides it only costs
/// the mounts.
async fn mount_candidates(client: &RegistryClient, req: &PushRequest, repo: &str) -> Vec<String> {
    let mut out: Vec<String> = req
        .mount_from
        .iter()
        .filter(|r| *r != repo)
        .cloned()
        .collect();
    let prefix = match repo.rsplit_once('/') {
        Some((p, _)) => format!("{p}/{}-", req.image_id),
        None => format!("{}-", req.image_id),
    };
    if let Ok(all) = client.catalog().await {
        for r in all {
            if r != repo && r.starts_with(&prefix) && !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// What the upload tasks share.
struct BlobContext {
    source_name: String,
    client: Arc<RegistryClient>,
    tarball: Arc<Tarball>,
    repo: String,
    candidates: Vec<String>,
    done: Arc<AtomicU64>,
    total: u64,
    progress: ProgressFn,
}

impl BlobContext {
    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        (self.progress)(Progress {
            bytes_done: done,
            bytes_total: self.total,
        });
    }

    fn rewind(&self, n: u64) {
        self.done.fetch_sub(n, Ordering::Relaxed);
    }
}

enum BlobOutcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

/// Makes sure one blob is in the repository: already there, mounted, or uploaded.
async fn ensure_blob(ctx: &BlobContext, blob: &PlannedBlob) -> Result<BlobOutcome, PushError> {
    if let Some(outcome) = existing(ctx, &blob.digest, blob.size).await? {
        return Ok(outcome);
    }
    upload_blob(ctx, blob).await.map(BlobOutcome::Uploaded)
}

/// A blob the repository has, or can mount from another: `Skipped`/`Mounted`,
/// with `progress_bytes` counted done; `None` when it must be uploaded.
async fn existing(
    ctx: &BlobContext,
    digest: &str,
    progress_bytes: u64,
) -> Result<Option<BlobOutcome>, PushError> {
    let check_err = |e: HttpError| {
        PushError::from_http(e, |message| PushError::CheckBlob {
            digest: digest.to_string(),
            message,
        })
    };
    let client = &ctx.client;
    if retrying(&client.retry, || client.blob_exists(&ctx.repo, digest))
        .await
        .map_err(check_err)?
    {
        ctx.advance(progress_bytes);
        return Ok(Some(BlobOutcome::Skipped));
    }
    for from in &ctx.candidates {
        // A HEAD first: a mount from a repository without the blob would start
        // (and leave) an upload session.
        let has = retrying(&client.retry, || client.blob_exists(from, digest)).await;
        if matches!(has, Ok(true))
            && retrying(&client.retry, || client.mount(&ctx.repo, digest, from))
                .await
                .map_err(check_err)?
        {
            ctx.advance(progress_bytes);
            return Ok(Some(BlobOutcome::Mounted));
        }
    }
    Ok(None)
}

/// Why one upload attempt failed.
enum AttemptError {
    Http(HttpError),
    Fatal(PushError),
}

async fn upload_blob(ctx: &BlobContext, blob: &PlannedBlob) -> Result<u64, PushError> {
    let upload_err = |message: String| PushError::UploadBlob {
        digest: blob.digest.clone(),
        message,
    };
    if let BlobData::Bytes(data) = &blob.data {
        let client = &ctx.client;
        retrying(&client.retry, || {
            client.put_small_blob(&ctx.repo, &blob.digest, data)
        })
        .await
        .map_err(|e| PushError::from_http(e, upload_err))?;
        ctx.advance(blob.size);
        return Ok(blob.size);
    }
    let attempts = retry_with(
        &ctx.client.retry,
        || upload_attempt(ctx, blob),
        |e| match e {
            AttemptError::Http(e) if e.retryable() => Some(e.message.clone()),
            _ => None,
        },
        |e, attempts| match e {
            AttemptError::Http(mut e) => {
                e.message = format!("{} (after {attempts} attempts)", e.message);
                AttemptError::Http(e)
            }
            fatal => fatal,
        },
    )
    .await;
    match attempts {
        Ok(()) => Ok(blob.size),
        Err(AttemptError::Fatal(e)) => Err(e),
        Err(AttemptError::Http(e)) => Err(PushError::from_http(e, upload_err)),
    }
}

/// What the reading thread found.
enum Produced {
    /// The whole blob was read and matched its digest.
    Verified,
    /// The request stopped taking data (it failed); the request's error says why.
    Abandoned,
    /// Reading the tarball failed.
    Read(String),
    /// The content does not match.
    Mismatch(String),
}

const CHUNK: usize = 256 << 10;

/// One upload: `POST` a session, then one streamed `PUT` of the blob read from the
/// tarball on a blocking thread, hashed as it goes. The last chunk is held back
/// until the hash is known, so a mismatching blob never completes its upload.
async fn upload_attempt(ctx: &BlobContext, blob: &PlannedBlob) -> Result<(), AttemptError> {
    let BlobData::Entry(entry) = blob.data.clone() else {
        return Ok(());
    };
    let location = ctx
        .client
        .start_upload(&ctx.repo)
        .await
        .map_err(AttemptError::Http)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let tarball = ctx.tarball.clone();
    let planned = blob.clone();
    let done = ctx.done.clone();
    let progress = ctx.progress.clone();
    let total = ctx.total;
    let producer = tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let result = produce(&tarball, entry, &planned, &tx, |n| {
            sent += n;
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            progress(Progress {
                bytes_done: d,
                bytes_total: total,
            });
        });
        (result, sent)
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let put = ctx
        .client
        .put_blob(&ctx.repo, &location, &blob.digest, blob.size, body)
        .await;
    let (produced, sent) = producer.await.map_err(|e| {
        AttemptError::Fatal(PushError::UploadBlob {
            digest: blob.digest.clone(),
            message: format!("reader task failed: {e}"),
        })
    })?;
    let fail = |e| {
        ctx.rewind(sent);
        Err(e)
    };
    match produced {
        Produced::Mismatch(actual) => fail(AttemptError::Fatal(PushError::VerifyBlob {
            digest: blob.digest.clone(),
            actual,
        })),
        Produced::Read(message) => fail(AttemptError::Fatal(PushError::ReadTarball {
            source_name: ctx.source_name.clone(),
            message,
        })),
        Produced::Verified | Produced::Abandoned => match put {
            Ok(()) => Ok(()),
            Err(e) => fail(AttemptError::Http(e)),
        },
    }
}

/// Digests and sizes of what went in and what came out of [`pump`].
struct Pumped {
    input_digest: String,
    input_len: u64,
    output_digest: String,
    output_len: u64,
}

/// Why [`pump`] stopped early.
enum PumpStop {
    Read(String),
    Abandoned,
}

fn digest_of(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Reads `reader` in chunks, hashing the input, optionally gzip-compressing it,
/// hashing the output and handing each output chunk to `emit` (which returns
/// false when nobody takes data any more). The same code computes a compressed
/// digest and produces the uploaded bytes, so both are identical.
fn pump(
    reader: &mut dyn std::io::Read,
    gzip: bool,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<Pumped, PumpStop> {
    use std::io::Write as _;
    let mut input = Sha256::new();
    let mut output = Sha256::new();
    let (mut input_len, mut output_len) = (0u64, 0u64);
    let mut encoder = gzip.then(|| {
        flate2::write::GzEncoder::new(Vec::with_capacity(CHUNK), flate2::Compression::fast())
    });
    let mut out = |chunk: Vec<u8>, output: &mut Sha256, output_len: &mut u64| {
        if chunk.is_empty() {
            return Ok(());
        }
        output.update(&chunk);
        *output_len += chunk.len() as u64;
        if emit(chunk) {
            Ok(())
        } else {
            Err(PumpStop::Abandoned)
        }
    };
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PumpStop::Read(e.to_string())),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        input.update(&buf);
        input_len += filled as u64;
        match &mut encoder {
            Some(enc) => {
                enc.write_all(&buf)
                    .map_err(|e| PumpStop::Read(format!("gzip: {e}")))?;
                let chunk = std::mem::take(enc.get_mut());
                out(chunk, &mut output, &mut output_len)?;
            }
            None => out(buf, &mut output, &mut output_len)?,
        }
    }
    if let Some(enc) = encoder {
        let rest = enc
            .finish()
            .map_err(|e| PumpStop::Read(format!("gzip: {e}")))?;
        out(rest, &mut output, &mut output_len)?;
    }
    Ok(Pumped {
        input_digest: digest_of(input),
        input_len,
        output_digest: digest_of(output),
        output_len,
    })
}

/// Reads one blob for an upload attempt and sends it to the request body,
/// holding the last chunk back until the content is verified.
fn produce(
    tarball: &Tarball,
    entry: tarball::EntryData,
    blob: &PlannedBlob,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    mut sent: impl FnMut(u64),
) -> Produced {
    let mut reader = match tarball.open_at(entry) {
        Ok(r) => r,
        Err(e) => return Produced::Read(e.to_string()),
    };
    let abort = |why: &str| {
        let _ = tx.blocking_send(Err(std::io::Error::other(why.to_string())));
    };
    let mut pending: Option<Vec<u8>> = None;
    let pumped = pump(&mut reader, blob.gzip_of.is_some(), |chunk| {
        if let Some(prev) = pending.replace(chunk) {
            let n = prev.len() as u64;
            if tx.blocking_send(Ok(prev)).is_err() {
                return false;
            }
            sent(n);
        }
        true
    });
    let pumped = match pumped {
        Ok(p) => p,
        Err(PumpStop::Abandoned) => return Produced::Abandoned,
        Err(PumpStop::Read(e)) => {
            abort("tarball read failed");
            return Produced::Read(e);
        }
    };
    let (want_input, want_input_len) = match &blob.gzip_of {
        Some(raw) => (raw.as_str(), entry.size),
        None => (blob.digest.as_str(), blob.size),
    };
    if pumped.input_len != want_input_len {
        abort("blob size mismatch");
        return Produced::Mismatch(format!(
            "{} ({} bytes read, {want_input_len} expected: truncated?)",
            pumped.input_digest, pumped.input_len
        ));
    }
    if pumped.input_digest != want_input {
        abort("blob digest mismatch");
        return Produced::Mismatch(pumped.input_digest);
    }
    if pumped.output_digest != blob.digest || pumped.output_len != blob.size {
        abort("compressed blob changed");
        return Produced::Mismatch(format!(
            "{} once compressed ({} bytes), not the {} ({} bytes) computed before",
            pumped.output_digest, pumped.output_len, blob.digest, blob.size
        ));
    }
    if let Some(last) = pending {
        let n = last.len() as u64;
        if tx.blocking_send(Ok(last)).is_err() {
            return Produced::Abandoned;
        }
        sent(n);
    }
    Produced::Verified
}

/// When the tag already holds this image (same config) with gzip layers, their
/// digests, by `diff_id`: a compressed re-push needs no compression at all.
async fn existing_gzip_layers(
    client: &RegistryClient,
    reference: &ImageReference,
    image: &plan::DockerImage,
) -> Option<std::collections::HashMap<String, (String, u64)>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Desc {
        media_type: String,
        digest: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        config: Desc,
        layers: Vec<Desc>,
    }
    let bytes = client
        .get_manifest(&reference.repository, &reference.tag)
        .await
        .ok()??;
    let m: Manifest = serde_json::from_slice(&bytes).ok()?;
    if m.config.digest != image.config_digest
        || m.layers.len() != image.layers.len()
        || m.layers
            .iter()
            .any(|l| l.media_type != plan::OCI_LAYER_GZIP)
    {
        return None;
    }
    Some(
        image
            .layers
            .iter()
            .zip(m.layers)
            .map(|((diff_id, _), l)| (diff_id.clone(), (l.digest, l.size)))
            .collect(),
    )
}

/// Deletes the tag `<imageId>-<imageType>:<version>` (its manifest, by digest).
/// Returns the deleted digest, or `None` when the tag did not exist. Other tags
/// pointing at the same manifest disappear with it; blobs stay until the
/// registry's garbage collection.
pub async fn delete_tag(
    registry: &RegistryConfig,
    image_id: &str,
    image_type: Role,
    version: &str,
) -> Result<Option<String>, PushError> {
    let reference = ImageReference::new(&registry.address, image_id, image_type, version)?;
    let client =
        RegistryClient::new(registry, &reference.registry).map_err(PushError::Configure)?;
    let err = |e: HttpError| {
        PushError::from_http(e, |message| PushError::DeleteTag {
            reference: reference.to_string(),
            message,
        })
    };
    let digest = retrying(&client.retry, || {
        client.manifest_digest(&reference.repository, &reference.tag)
    })
    .await
    .map_err(err)?;
    let Some(digest) = digest else {
        return Ok(None);
    };
    retrying(&client.retry, || {
        client.delete_manifest(&reference.repository, &digest)
    })
    .await
    .map_err(err)?;
    Ok(Some(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ImageSource;

    fn spec(source: ImageSource) -> ImageSpec {
        ImageSpec {
            category: ImageCategory::Container,
            image_id: "contrail-container".into(),
            image_type: Role::Controller,
            version: "5.0-214".into(),
            source,
            remove_from_registry_on_delete: false,
        }
    }

    #[test]
    fn request_for_image_spec() {
        let registry = RegistryConfig {
            address: "r:5000".into(),
            ..Default::default()
        };
        let req = PushRequest::for_image(
            &spec(ImageSource {
                url: Some("https://x/y.tar".into()),
                ..Default::default()
            }),
            registry.clone(),
            std::path::Path::new("/nonexistent"),
            None,
        )
        .unwrap();
        assert_eq!(req.source, Source::Url("https://x/y.tar".into()));
        assert_eq!(req.image_type, Role::Controller);
        let copy = PushRequest::for_image(
            &spec(ImageSource {
                reference: Some("r.io/x:1".into()),
                ..Default::default()
            }),
            registry.clone(),
            std::path::Path::new("/nonexistent"),
            None,
        )
        .unwrap();
        assert!(matches!(copy.source, Source::Reference(_)));
        let err = PushRequest::for_image(
            &spec(ImageSource {
                reference: Some("r/x:1".into()),
                ..Default::default()
            }),
            registry.clone(),
            std::path::Path::new("/nonexistent"),
            None,
        )
        .unwrap_err();
        assert!(err.is_permanent() && err.to_string().starts_with("failed to "));
        let mut package = spec(ImageSource {
            path: Some("/x.tar".into()),
            ..Default::default()
        });
        package.category = ImageCategory::Package;
        assert!(
            PushRequest::for_image(&package, registry.clone(), std::path::Path::new("/"), None)
                .is_err()
        );
        let err = PushRequest::for_image(
            &spec(ImageSource {
                path: Some("/etc/passwd".into()),
                ..Default::default()
            }),
            registry,
            std::path::Path::new("/var/lib/server-manager/images"),
            None,
        )
        .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert_eq!(err.reason(), "SourceOutsideImageDirectory");
    }
}
