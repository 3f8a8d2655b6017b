//! The Docker-engine path, as the original server manager did it: `docker load`
//! of the tarball, `docker tag` as `<registry>/<imageId>-<imageType>:<version>`,
//! `docker push`, all through bollard.
//!
//! The engine answers `200 OK` to a push and reports failures *inside* the
//! progress stream (`errorDetail`): every item is checked, and a stream that ends
//! without the final digest line is a failure too.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    ImportImageOptions, PushImageOptions, RemoveImageOptions, TagImageOptions,
};
use futures::{StreamExt, TryStreamExt};

use super::{Progress, PushError, PushReport, PushRequest, Source};
use crate::image_ref::ImageReference;

fn engine_err(operation: &'static str) -> impl Fn(bollard::errors::Error) -> PushError {
    move |e| PushError::DockerEngine {
        operation,
        message: match e {
            bollard::errors::Error::DockerStreamError { error } => error,
            other => other.to_string(),
        },
    }
}

/// Loads, tags and pushes the image through the local Docker engine (the
/// `DOCKER_HOST` environment variable or the default socket).
///
/// The engine reaches the registry with its own settings: `insecure` and the CA
/// bundle of the request are not used (configure the engine's
/// `insecure-registries` or `certs.d` instead); credentials are passed along.
/// The loaded image stays in the engine; the registry tag added for the push is
/// removed afterwards. In the report, `size` is the engine's (uncompressed) image
/// size and `bytes_uploaded` stays 0: the engine does not say how many bytes it
/// sent; the blob counts come from its status lines.
pub async fn push(
    req: &PushRequest,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<PushReport, PushError> {
    let reference = ImageReference::new(
        &req.registry.address,
        &req.image_id,
        req.image_type,
        &req.version,
    )?;
    let docker = Docker::connect_with_local_defaults()
        .map_err(engine_err("connect"))?
        .negotiate_version()
        .await
        .map_err(engine_err("connect"))?;

    let loaded = load(&docker, req).await?;
    let image = match (&req.select, loaded.as_slice()) {
        (Some(s), _) => {
            loaded
                .iter()
                .find(|l| *l == s)
                .cloned()
                .ok_or_else(|| PushError::DockerEngine {
                    operation: "select the image",
                    message: format!("no image {s:?} loaded (loaded: {})", loaded.join(", ")),
                })?
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(PushError::DockerEngine {
                operation: "load the tarball",
                message: "the engine reported no loaded image".into(),
            });
        }
        (None, _) => {
            return Err(PushError::DockerEngine {
                operation: "select the image",
                message: format!(
                    "the tarball holds several images ({}): choose one (select)",
                    loaded.join(", ")
                ),
            });
        }
    };
    let repo = format!("{}/{}", reference.registry, reference.repository);
    docker
        .tag_image(
            &image,
            Some(TagImageOptions {
                repo: Some(repo.clone()),
                tag: Some(reference.tag.clone()),
            }),
        )
        .await
        .map_err(engine_err("tag the image"))?;

    let credentials = req
        .registry
        .credentials
        .as_ref()
        .map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(reference.registry.clone()),
            ..Default::default()
        });
    let mut result = push_stream(&docker, &repo, &reference, credentials, progress).await;
    if let Ok(report) = &mut result
        && let Ok(inspect) = docker.inspect_image(&image).await
    {
        report.size = inspect.size.unwrap_or(0).max(0) as u64;
    }
    // The registry tag was only a name for the push.
    let _ = docker
        .remove_image(
            &format!("{repo}:{}", reference.tag),
            Some(RemoveImageOptions {
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
    result
}

/// `docker load`: streams the tarball to the engine; returns the loaded names
/// (`repo:tag`, or the image id for untagged images).
async fn load(docker: &Docker, req: &PushRequest) -> Result<Vec<String>, PushError> {
    let load_err = |message: String| PushError::DockerEngine {
        operation: "load the tarball",
        message,
    };
    let body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>> =
        match &req.source {
            Source::Path(p) => {
                let file = tokio::fs::File::open(p)
                    .await
                    .map_err(|e| load_err(format!("{}: {e}", p.display())))?;
                tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed()
            }
            Source::Url(u) => {
                let client = super::client::http_client(
                    req.registry.ca_bundle.as_deref(),
                    Some(req.registry.deadline()),
                )
                .map_err(PushError::Configure)?;
                let response = client
                    .get(u)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| load_err(format!("GET {u}: {e}")))?;
                response
                    .bytes_stream()
                    .map_err(std::io::Error::other)
                    .boxed()
            }
            Source::Reference(_) => {
                return Err(PushError::UnsupportedSource(
                    "copying an image reference goes through the direct push".into(),
                ));
            }
        };
    let mut stream = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut loaded = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(engine_err("load the tarball"))?;
        if let Some(detail) = info.error_detail {
            return Err(load_err(
                detail.message.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        for line in info.stream.iter().flat_map(|s| s.lines()) {
            if let Some(name) = line
                .strip_prefix("Loaded image: ")
                .or_else(|| line.strip_prefix("Loaded image ID: "))
            {
                loaded.push(name.trim().to_string());
            }
        }
    }
    Ok(loaded)
}

/// `docker push`, checking every item of the stream.
async fn push_stream(
    docker: &Docker,
    repo: &str,
    reference: &ImageReference,
    credentials: Option<DockerCredentials>,
    progress: impl Fn(Progress) + Send + Sync + 'static,
) -> Result<PushReport, PushError> {
    let push_err = |message: String| PushError::DockerEngine {
        operation: "push the image",
        message,
    };
    let mut stream = docker.push_image(
        repo,
        Some(PushImageOptions {
            tag: Some(reference.tag.clone()),
            ..Default::default()
        }),
        credentials,
    );
    let mut report = PushReport {
        reference: reference.clone(),
        digest: String::new(),
        size: 0,
        bytes_uploaded: 0,
        blobs_uploaded: 0,
        blobs_mounted: 0,
        blobs_skipped: 0,
    };
    while let Some(item) = stream.next().await {
        let info = item.map_err(engine_err("push the image"))?;
        if let Some(detail) = info.error_detail {
            return Err(push_err(
                detail.message.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        let status = info.status.unwrap_or_default();
        // The engine reports bytes per layer, and bollard's item has no layer id
        // to add them up: progress is that of the layer being pushed.
        if let Some(p) = info.progress_detail
            && let (Some(current), Some(total)) = (p.current, p.total)
        {
            progress(Progress {
                bytes_done: current.max(0) as u64,
                bytes_total: total.max(0) as u64,
            });
        }
        match status.as_str() {
            "Pushed" => report.blobs_uploaded += 1,
            "Layer already exists" => report.blobs_skipped += 1,
            s if s.starts_with("Mounted from") => report.blobs_mounted += 1,
            _ => {}
        }
        // "<tag>: digest: sha256:… size: N"
        if let Some((_, rest)) = status.split_once("digest: ") {
            let mut parts = rest.split_whitespace();
            if let Some(d) = parts.next() {
                report.digest = d.to_string();
            }
        }
    }
    if report.digest.is_empty() {
        return Err(push_err(
            "the engine's push stream ended without a digest".into(),
        ));
    }
    Ok(report)
}
