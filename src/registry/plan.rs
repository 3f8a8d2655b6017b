//! What to push, worked out from an indexed tarball: the blobs (layers and config)
//! with their digests, and the manifest. Pure apart from reading small files of the
//! tarball; no registry involved.
//!
//! - `docker save` (`manifest.json`): layers are the uncompressed `layer.tar` files;
//!   their digests are the config's `rootfs.diff_ids`, known before reading a byte,
//!   so a registry that already has a layer is asked with `HEAD` and nothing is
//!   read. They are pushed uncompressed (see `benches/RESULTS.md`, "Image push",
//!   for the measurement behind that choice) in an OCI image manifest.
//! - OCI image layout (`index.json`): blobs and manifest are pushed byte for byte,
//!   so the manifest digest is the one in the layout.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::tarball::{EntryData, Tarball, TarballError};

/// OCI image manifest media type.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Largest JSON document (config, manifest, index) accepted.
const JSON_MAX: u64 = 16 << 20;

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum BlobData {
    /// A file of the tarball.
    Entry(EntryData),
    /// Held in memory (a config read while planning).
    Bytes(Arc<Vec<u8>>),
}

/// One blob to have in the repository.
#[derive(Debug, Clone)]
pub(crate) struct PlannedBlob {
    /// `sha256:…` the registry must report.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Where to read it.
    pub data: BlobData,
    /// Pushed gzip-compressed: `digest`/`size` are the compressed blob's, and
    /// this is the digest the uncompressed content must have (the `diff_id`).
    pub gzip_of: Option<String>,
}

/// Everything a push needs, in the order it is pushed: blobs, then the manifest.
#[derive(Debug, Clone)]
pub(crate) struct PushPlan {
    /// Unique blobs (layers and config).
    pub blobs: Vec<PlannedBlob>,
    /// The manifest, byte for byte.
    pub manifest: Vec<u8>,
    /// Its media type.
    pub manifest_media_type: String,
    /// `sha256:` of `manifest`.
    pub manifest_digest: String,
    /// For a `docker save` image: what the manifest is built from, so it can be
    /// rebuilt with compressed layers.
    pub docker: Option<DockerImage>,
}

/// A `docker save` image's parts, in manifest order.
#[derive(Debug, Clone)]
pub(crate) struct DockerImage {
    /// Layers: `diff_id` and where the uncompressed tar is (duplicates kept).
    pub layers: Vec<(String, EntryData)>,
    /// Config digest.
    pub config_digest: String,
    /// Config size.
    pub config_size: u64,
}

/// A layer descriptor of a manifest built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerDescriptor {
    /// Media type.
    pub media_type: &'static str,
    /// Digest of the pushed blob.
    pub digest: String,
    /// Size of the pushed blob.
    pub size: u64,
}

/// Uncompressed OCI layer.
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI layer.
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The OCI manifest of a `docker save` image with these layer blobs.
pub(crate) fn docker_manifest(image: &DockerImage, layers: &[LayerDescriptor]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": image.config_digest, "size": image.config_size},
        "layers": layers,
    });
    // Serialising a json! value cannot fail.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    /// The tarball is unreadable or inconsistent.
    #[error("{0}")]
    Tarball(#[from] TarballError),
    /// The image description is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// Several images and no (or no matching) choice.
    #[error("{0}")]
    Select(String),
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Works out the plan (blocking: may read small files through the tarball).
pub(crate) fn plan(tarball: &Tarball, select: Option<&str>) -> Result<PushPlan, PlanError> {
    if tarball.file("index.json").is_some() {
        plan_oci(tarball, select)
    } else if tarball.file("manifest.json").is_some() {
        plan_docker(tarball, select)
    } else {
        let mut names: Vec<&str> = tarball.names().take(5).collect();
        names.sort();
        Err(PlanError::Invalid(format!(
            "missing manifest.json (docker save) or index.json (OCI image layout); the tarball holds {names:?}{}",
            if names.len() == 5 { "…" } else { "" }
        )))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

fn plan_docker(tarball: &Tarball, select: Option<&str>) -> Result<PushPlan, PlanError> {
    let raw = tarball.read_file("manifest.json", JSON_MAX)?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&raw).map_err(|e| {
        PlanError::Invalid(format!("manifest.json is not a docker save manifest: {e}"))
    })?;
    let tags = |e: &DockerEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match (entries.len(), select) {
        (0, _) => return Err(PlanError::Invalid("manifest.json lists no image".into())),
        (1, None) => &entries[0],
        (_, None) => {
            let all: Vec<String> = entries.iter().flat_map(tags).collect();
            return Err(PlanError::Select(format!(
                "the tarball holds {} images ({}): choose one (select)",
                entries.len(),
                all.join(", ")
            )));
        }
        (_, Some(s)) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| t == s) || e.config.trim_end_matches(".json") == s)
            .ok_or_else(|| {
                let all: Vec<String> = entries.iter().flat_map(tags).collect();
                PlanError::Select(format!(
                    "no image {s:?} in the tarball (it holds {})",
                    all.join(", ")
                ))
            })?,
    };
    let config = tarball.read_file(&entry.config, JSON_MAX)?;
    let parsed: ImageConfig = serde_json::from_slice(&config)
        .map_err(|e| PlanError::Invalid(format!("{} is not an image config: {e}", entry.config)))?;
    let diff_ids = parsed.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(PlanError::Invalid(format!(
            "{} lists {} layers but manifest.json {}",
            entry.config,
            diff_ids.len(),
            entry.layers.len()
        )));
    }
    let mut blobs: Vec<PlannedBlob> = Vec::new();
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for (layer, digest) in entry.layers.iter().zip(&diff_ids) {
        if !valid_digest(digest) {
            return Err(PlanError::Invalid(format!(
                "bad layer digest {digest:?} in {}",
                entry.config
            )));
        }
        let data = tarball.file(layer).ok_or_else(|| {
            PlanError::Invalid(format!(
                "layer {layer} listed in manifest.json is not in the tarball"
            ))
        })?;
        layers.push((digest.clone(), data));
        descriptors.push(LayerDescriptor {
            media_type: OCI_LAYER_TAR,
            digest: digest.clone(),
            size: data.size,
        });
        if !blobs.iter().any(|b| &b.digest == digest) {
            blobs.push(PlannedBlob {
                digest: digest.clone(),
                size: data.size,
                data: BlobData::Entry(data),
                gzip_of: None,
            });
        }
    }
    let image = DockerImage {
        layers,
        config_digest: sha256_digest(&config),
        config_size: config.len() as u64,
    };
    let manifest = docker_manifest(&image, &descriptors);
    blobs.push(PlannedBlob {
        digest: image.config_digest.clone(),
        size: image.config_size,
        data: BlobData::Bytes(Arc::new(config)),
        gzip_of: None,
    });
    Ok(PushPlan {
        blobs,
        manifest_digest: sha256_digest(&manifest),
        manifest,
        manifest_media_type: OCI_MANIFEST.into(),
        docker: Some(image),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn blob_path(digest: &str) -> Result<String, PlanError> {
    if !valid_digest(digest) {
        return Err(PlanError::Invalid(format!(
            "bad digest {digest:?} in the OCI layout"
        )));
    }
    Ok(format!("blobs/{}", digest.replacen(':', "/", 1)))
}

fn read_blob(tarball: &Tarball, d: &Descriptor) -> Result<Vec<u8>, PlanError> {
    let data = tarball.read_file(&blob_path(&d.digest)?, JSON_MAX)?;
    if sha256_digest(&data) != d.digest || data.len() as u64 != d.size {
        return Err(PlanError::Invalid(format!(
            "blob {} does not match its digest or size",
            d.digest
        )));
    }
    Ok(data)
}

fn ref_names(d: &Descriptor) -> Vec<&str> {
    [
        "org.opencontainers.image.ref.name",
        "io.containerd.image.name",
    ]
    .iter()
    .filter_map(|k| d.annotations.get(*k).map(String::as_str))
    .collect()
}

fn plan_oci(tarball: &Tarball, select: Option<&str>) -> Result<PushPlan, PlanError> {
    let raw = tarball.read_file("index.json", JSON_MAX)?;
    let index: Index = serde_json::from_slice(&raw)
        .map_err(|e| PlanError::Invalid(format!("index.json is not an OCI image index: {e}")))?;
    let names = |m: &[Descriptor]| -> String {
        m.iter()
            .map(|d| {
                ref_names(d)
                    .first()
                    .map_or(d.digest.clone(), |n| n.to_string())
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match (index.manifests.len(), select) {
        (0, _) => return Err(PlanError::Invalid("index.json lists no image".into())),
        (1, None) => &index.manifests[0],
        (_, None) => {
            return Err(PlanError::Select(format!(
                "the tarball holds {} images ({}): choose one (select)",
                index.manifests.len(),
                names(&index.manifests)
            )));
        }
        (_, Some(s)) => index
            .manifests
            .iter()
            .find(|d| {
                d.digest == s
                    || ref_names(d)
                        .iter()
                        .any(|n| *n == s || n.ends_with(&format!(":{s}")))
            })
            .ok_or_else(|| {
                PlanError::Select(format!(
                    "no image {s:?} in the tarball (it holds {})",
                    names(&index.manifests)
                ))
            })?,
    };
    let _ = index.media_type;
    let mut descriptor_type = chosen.media_type.clone();
    let mut manifest_bytes = read_blob(tarball, chosen)?;
    // Follow a nested index (multi-platform) down to one image manifest.
    for _ in 0..2 {
        let is_index = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| t == OCI_INDEX || t == DOCKER_LIST)
        };
        let nested: Option<Index> = serde_json::from_slice::<Index>(&manifest_bytes)
            .ok()
            .filter(|i| is_index(&descriptor_type) || is_index(&i.media_type));
        let Some(nested) = nested else { break };
        let pick = match nested.manifests.len() {
            1 => &nested.manifests[0],
            _ => nested
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| {
                    PlanError::Select(format!(
                        "no linux/amd64 image in the index ({})",
                        names(&nested.manifests)
                    ))
                })?,
        };
        descriptor_type = pick.media_type.clone();
        manifest_bytes = read_blob(tarball, pick)?;
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        PlanError::Invalid(format!(
            "the selected manifest is not an image manifest: {e}"
        ))
    })?;
    let media_type = manifest
        .media_type
        .clone()
        .or(descriptor_type)
        .unwrap_or_else(|| OCI_MANIFEST.into());
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(PlanError::Invalid(format!(
            "unsupported manifest media type {media_type}"
        )));
    }
    let mut blobs: Vec<PlannedBlob> = Vec::new();
    for d in manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
    {
        let path = blob_path(&d.digest)?;
        let data = tarball.file(&path).ok_or_else(|| {
            PlanError::Invalid(format!("blob {} is not in the tarball", d.digest))
        })?;
        if data.size != d.size {
            return Err(PlanError::Invalid(format!(
                "blob {} is {} bytes, the manifest says {}",
                d.digest, data.size, d.size
            )));
        }
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(PlannedBlob {
                digest: d.digest.clone(),
                size: d.size,
                data: BlobData::Entry(data),
                gzip_of: None,
            });
        }
    }
    Ok(PushPlan {
        blobs,
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest: manifest_bytes,
        manifest_media_type: media_type,
        docker: None,
    })
}
