//! Copy of an image from another registry (an Image's `source.reference`):
//! the manifest is read from the source, each blob the destination lacks is
//! streamed from the source's `GET` into the destination's `PUT` (never held
//! whole: chunks pass through a small channel, hashed on the way, the last one
//! held back until the digest is verified), several at once, and the
//! manifest is pushed last, byte for byte (same digest as the source's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::client::{Cause, HttpError, RegistryClient, retrying};
use super::{
    BlobOutcome, Credentials, Progress, ProgressFn, PushError, PushReport, PushRequest,
    RegistryConfig,
};
use crate::image_ref::ImageReference;

/// Syntax of a source reference, `host[:port]/repository[:tag][@sha256:…]`,
/// as a regular expression valid both in Rust and in the CRD's OpenAPI schema.
/// The registry host is explicit: a name with a dot, `localhost`, `[IPv6]`, or
/// any single label with a port (a bare `name/repo` would mean Docker Hub).
pub const SOURCE_REFERENCE_PATTERN: &str = concat!(
    r"^(((localhost|[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+|\[[0-9a-fA-F:]+\])(:[0-9]{1,5})?)",
    r"|[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?:[0-9]{1,5})",
    r"/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*",
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
);

/// Longest source reference accepted.
pub const SOURCE_REFERENCE_MAX: usize = 512;

/// A parsed source reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// The tag (or digest) to read: the digest when given, else the tag, else
    /// `latest`.
    pub reference: String,
}

/// Parses and validates a source reference (the one function behind the CRD
/// pattern; also checks the port range).
#[expect(
    clippy::expect_used,
    reason = "a constant pattern; its unit tests compile it"
)]
pub fn parse_source_reference(s: &str) -> Result<SourceReference, String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(SOURCE_REFERENCE_PATTERN).expect("valid pattern"));
    let bad = |why: &str| {
        format!(
            "invalid image reference {s:?}: {why}; expected host[:port]/repository[:tag][@sha256:digest], e.g. registry.example.com:5000/contrail/controller:5.0"
        )
    };
    if s.len() > SOURCE_REFERENCE_MAX {
        return Err(bad(&format!(
            "longer than {SOURCE_REFERENCE_MAX} characters"
        )));
    }
    if !re.is_match(s) {
        return Err(bad("not a reference with an explicit registry host"));
    }
    let (registry, rest) = s.split_once('/').ok_or_else(|| bad("no repository"))?;
    if let Some((_, port)) = registry.rsplit_once(':')
        && !registry.ends_with(']')
    {
        let port: u32 = port.parse().map_err(|_| bad("bad port"))?;
        if !(1..=65535).contains(&port) {
            return Err(bad("the port must be 1 to 65535"));
        }
    }
    let (name, digest) = match rest.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (rest, None),
    };
    let (repository, tag) = match name.rsplit_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (name, None),
    };
    Ok(SourceReference {
        registry: registry.to_string(),
        repository: repository.to_string(),
        reference: digest.or(tag).unwrap_or("latest").to_string(),
    })
}

/// Where to copy from, as a push source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceSource {
    /// The reference, `host[:port]/repository[:tag][@digest]`.
    pub reference: String,
    /// The source registry speaks plain HTTP.
    pub insecure: bool,
    /// Credentials for the source registry.
    pub credentials: Option<Credentials>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Copies the image `source` names into the request's registry as
/// `<imageId>-<imageType>:<version>`.
pub(super) async fn copy(
    req: &PushRequest,
    source: &ReferenceSource,
    progress: ProgressFn,
) -> Result<PushReport, PushError> {
    let src = parse_source_reference(&source.reference).map_err(PushError::UnsupportedSource)?;
    let reference = ImageReference::new(
        &req.registry.address,
        &req.image_id,
        req.image_type,
        &req.version,
    )?;
    let source_config = RegistryConfig {
        address: src.registry.clone(),
        insecure: source.insecure,
        ca_bundle: req.registry.ca_bundle.clone(),
        credentials: source.credentials.clone(),
        retry: req.registry.retry.clone(),
        timeout: req.registry.timeout,
    };
    let from =
        Arc::new(RegistryClient::new(&source_config, &src.registry).map_err(PushError::Configure)?);
    let to = Arc::new(
        RegistryClient::new(&req.registry, &reference.registry).map_err(PushError::Configure)?,
    );
    let source_err = |e: HttpError| {
        PushError::from_http(e, |message| PushError::FetchSource {
            source_name: source.reference.clone(),
            message,
        })
    };

    // The manifest: an index resolves to its linux/amd64 image (or its only one).
    let (mut manifest_bytes, mut media_type) =
        fetch_manifest(&from, &src.repository, &src.reference)
            .await
            .map_err(source_err)?;
    let mut manifest = parse_manifest(&manifest_bytes, &source.reference)?;
    let kind = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| media_type.clone());
    if INDEX_TYPES.contains(&kind.as_str()) || !manifest.manifests.is_empty() {
        let pick = manifest
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or_else(|| (manifest.manifests.len() == 1).then(|| &manifest.manifests[0]))
            .ok_or_else(|| PushError::InvalidImage {
                source_name: source.reference.clone(),
                message: "an index without a linux/amd64 image".into(),
            })?;
        let digest = pick.digest.clone();
        (manifest_bytes, media_type) = fetch_manifest(&from, &src.repository, &digest)
            .await
            .map_err(source_err)?;
        if super::plan::sha256_digest(&manifest_bytes) != digest {
            return Err(PushError::VerifyBlob {
                digest,
                actual: super::plan::sha256_digest(&manifest_bytes),
            });
        }
        manifest = parse_manifest(&manifest_bytes, &source.reference)?;
    } else if src.reference.starts_with("sha256:")
        && super::plan::sha256_digest(&manifest_bytes) != src.reference
    {
        return Err(PushError::VerifyBlob {
            digest: src.reference.clone(),
            actual: super::plan::sha256_digest(&manifest_bytes),
        });
    }
    let config = manifest.config.ok_or_else(|| PushError::InvalidImage {
        source_name: source.reference.clone(),
        message: "the manifest has no config".into(),
    })?;
    let mut blobs: Vec<(String, u64)> = vec![(config.digest, config.size)];
    for l in manifest.layers {
        if !blobs.iter().any(|(d, _)| *d == l.digest) {
            blobs.push((l.digest, l.size));
        }
    }
    for (d, _) in &blobs {
        if !is_sha256(d) {
            return Err(PushError::InvalidImage {
                source_name: source.reference.clone(),
                message: format!("unsupported blob digest {d:?}"),
            });
        }
    }

    retrying(&to.retry, || to.ping()).await.map_err(|e| {
        PushError::from_http(e, |message| PushError::ConnectRegistry {
            registry: reference.registry.clone(),
            message,
        })
    })?;
    let total: u64 = blobs.iter().map(|(_, s)| s).sum();
    let done = Arc::new(AtomicU64::new(0));
    progress(Progress {
        bytes_done: 0,
        bytes_total: total,
    });
    let repo = reference.repository.clone();
    let outcomes: Vec<Result<BlobOutcome, PushError>> = futures::stream::iter(blobs)
        .map(|(digest, size)| {
            let (from, to, done, progress) =
                (from.clone(), to.clone(), done.clone(), progress.clone());
            let (src_repo, repo) = (src.repository.clone(), repo.clone());
            async move {
                let advance = |n: u64| {
                    let d = done.fetch_add(n, Ordering::Relaxed) + n;
                    progress(Progress {
                        bytes_done: d,
                        bytes_total: total,
                    });
                };
                let check_err = |e: HttpError| {
                    PushError::from_http(e, |message| PushError::CheckBlob {
                        digest: digest.clone(),
                        message,
                    })
                };
                if retrying(&to.retry, || to.blob_exists(&repo, &digest))
                    .await
                    .map_err(check_err)?
                {
                    advance(size);
                    return Ok(BlobOutcome::Skipped);
                }
                copy_blob(&from, &src_repo, &to, &repo, &digest, size).await?;
                advance(size);
                Ok(BlobOutcome::Uploaded(size))
            }
        })
        .buffer_unordered(req.parallelism.max(1))
        .collect()
        .await;
    let mut report = PushReport {
        reference: reference.clone(),
        digest: String::new(),
        size: total,
        bytes_uploaded: 0,
        blobs_uploaded: 0,
        blobs_mounted: 0,
        blobs_skipped: 0,
    };
    for outcome in outcomes {
        match outcome? {
            BlobOutcome::Skipped => report.blobs_skipped += 1,
            BlobOutcome::Mounted => report.blobs_mounted += 1,
            BlobOutcome::Uploaded(n) => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += n;
            }
        }
    }
    let expected = super::plan::sha256_digest(&manifest_bytes);
    let digest = retrying(&to.retry, || {
        to.put_manifest(&repo, &reference.tag, &media_type, &manifest_bytes)
    })
    .await
    .map_err(|e| {
        PushError::from_http(e, |message| PushError::PushManifest {
            reference: reference.to_string(),
            message,
        })
    })?;
    if digest != expected {
        return Err(PushError::PushManifest {
            reference: reference.to_string(),
            message: format!("the registry stored {digest}, expected {expected}"),
        });
    }
    tracing::info!(%reference, %digest, bytes_uploaded = report.bytes_uploaded, source = %source.reference, "image copied");
    report.digest = digest;
    Ok(report)
}

fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn parse_manifest(bytes: &[u8], source: &str) -> Result<Manifest, PushError> {
    serde_json::from_slice(bytes).map_err(|e| PushError::InvalidImage {
        source_name: source.to_string(),
        message: format!("unreadable manifest: {e}"),
    })
}

async fn fetch_manifest(
    from: &RegistryClient,
    repo: &str,
    reference: &str,
) -> Result<(Vec<u8>, String), HttpError> {
    retrying(&from.retry, || async {
        from.get_manifest_typed(repo, reference)
            .await?
            .ok_or_else(|| {
                HttpError::new(
                    Cause::Other,
                    format!("{repo}:{reference}: no such manifest"),
                )
            })
    })
    .await
}

/// One blob from the source to the destination, streamed, with retries.
async fn copy_blob(
    from: &RegistryClient,
    src_repo: &str,
    to: &RegistryClient,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<(), PushError> {
    let upload_err = |message: String| PushError::UploadBlob {
        digest: digest.to_string(),
        message,
    };
    let policy = to.retry.clone();
    let mut delay = policy.initial_backoff;
    let mut attempt = 1;
    loop {
        match copy_attempt(from, src_repo, to, repo, digest, size).await {
            Ok(()) => return Ok(()),
            Err(e) if e.retryable() && attempt < policy.attempts => {
                tracing::debug!(attempt, %digest, error = %e.message, "blob copy failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_backoff);
                attempt += 1;
            }
            Err(mut e) => {
                if attempt > 1 {
                    e.message = format!("{} (after {attempt} attempts)", e.message);
                }
                return Err(PushError::from_http(e, upload_err));
            }
        }
    }
}

/// `GET` from the source piped into `POST` + `PUT ?digest=` at the destination.
async fn copy_attempt(
    from: &RegistryClient,
    src_repo: &str,
    to: &RegistryClient,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<(), HttpError> {
    let response = from.get_blob(src_repo, digest).await?;
    let location = to.start_upload(repo).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let deadline = from.deadline;
    let want = digest.to_string();
    let reader = tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let next = match tokio::time::timeout(deadline, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    let why = format!("the source sent nothing for {}s", deadline.as_secs_f64());
                    let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
                    return Err(HttpError::new(Cause::Transient, why));
                }
            };
            match next {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    len += chunk.len() as u64;
                    if let Some(prev) = pending.replace(chunk.to_vec())
                        && tx.send(Ok(prev)).await.is_err()
                    {
                        return Ok(());
                    }
                }
                Some(Err(e)) => {
                    let why = format!("reading the source blob: {e}");
                    let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
                    return Err(HttpError::new(Cause::Transient, why));
                }
                None => break,
            }
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != want || len != size {
            let why =
                format!("the source blob hashes to {got} ({len} bytes), not {want} ({size} bytes)");
            let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
            return Err(HttpError::new(Cause::DigestMismatch, why));
        }
        if let Some(last) = pending {
            let _ = tx.send(Ok(last)).await;
        }
        Ok(())
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let put = to.put_blob(repo, &location, digest, size, body).await;
    let read = reader
        .await
        .map_err(|e| HttpError::new(Cause::Other, format!("reader task failed: {e}")))?;
    // The source's verdict first: a mismatch explains the failed PUT.
    read?;
    put
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_references() {
        let ok = [
            (
                "registry.example.com/contrail/controller:5.0",
                "registry.example.com",
                "contrail/controller",
                "5.0",
            ),
            ("localhost:5000/a", "localhost:5000", "a", "latest"),
            ("reg:5000/a/b-c__d:v1", "reg:5000", "a/b-c__d", "v1"),
            ("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1"),
            ("[::1]:5000/x:1", "[::1]:5000", "x", "1"),
        ];
        for (s, registry, repository, reference) in ok {
            let r = parse_source_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                (
                    r.registry.as_str(),
                    r.repository.as_str(),
                    r.reference.as_str()
                ),
                (registry, repository, reference),
                "{s}"
            );
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = parse_source_reference(&format!("r.io/x:1@{digest}")).unwrap();
        assert_eq!(r.reference, digest);
        for bad in [
            "",
            "ubuntu:22.04",
            "library/ubuntu:22.04",
            "reg/x",
            "r.io/X:1",
            "r.io/x:-1",
            "r.io/x@sha256:abc",
            "r.io:99999/x",
            "r.io:0/x",
            "http://r.io/x",
            "r.io/x:1 ",
            "r.io//x",
            "r.io/x/",
        ] {
            let e = parse_source_reference(bad).expect_err(bad);
            assert!(e.starts_with("invalid image reference"), "{e}");
        }
        assert!(parse_source_reference(&format!("r.io/{}", "a".repeat(600))).is_err());
    }
}
