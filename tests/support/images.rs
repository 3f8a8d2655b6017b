//! Test images and tarballs: multi-layer images built in the local Docker engine
//! from an imported busybox (no network), their `docker save` tarballs, OCI
//! layouts written from the same layers, and deliberately broken tarballs.
//! Every tag is unique per test and removed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{docker_import_busybox, run};

/// A short random suffix for names that must be unique per test.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Local image tags removed from the engine on drop.
#[derive(Default)]
pub struct TagGuard(pub Vec<String>);

impl TagGuard {
    /// Records a tag to remove.
    pub fn add(&mut self, tag: impl Into<String>) {
        self.0.push(tag.into());
    }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", t]).output();
        }
    }
}

/// A busybox base (one layer) and an app image on top of it (two more layers:
/// `/greeting` and `/extra`), whose command prints the greeting.
pub struct LayeredImages {
    /// The base tag.
    pub base: String,
    /// The app tag.
    pub app: String,
    /// What `docker run` of the app prints.
    pub greeting: String,
    /// Removes both on drop.
    pub guard: TagGuard,
}

/// Builds a base and an app image with unique tags.
pub fn layered_images(name: &str) -> LayeredImages {
    let id = unique();
    let base = format!("pushtest-{name}-base-{id}:1");
    let app = format!("pushtest-{name}-app-{id}:1");
    let mut guard = TagGuard::default();
    docker_import_busybox(&base, "/bin/sh");
    guard.add(&base);
    let greeting = format!("hello from {name} {id}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {base}\nRUN echo '{greeting}' > /greeting\nRUN echo extra > /extra\nCMD [\"/bin/cat\", \"/greeting\"]\n"
        ),
    )
    .expect("write Dockerfile");
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &app])
        .arg(dir.path()));
    guard.add(&app);
    LayeredImages {
        base,
        app,
        greeting,
        guard,
    }
}

/// `docker save` of some tags into `out`.
pub fn docker_save(tags: &[&str], out: &Path) {
    run(Command::new("docker")
        .arg("save")
        .arg("-o")
        .arg(out)
        .args(tags));
}

/// Reads every regular file of a tar into memory (test tarballs are small).
pub fn tar_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open tar"));
    let mut out = Vec::new();
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read entry");
        out.push((name, data));
    }
    out
}

/// Writes a tar of `files` (in that order) to `out`.
pub fn write_tar(out: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create tar"));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice())
            .expect("append");
    }
    b.finish().expect("finish tar");
}

/// Writes a tar whose single entry has a raw name (even `../x`), bypassing the
/// tar crate's own path checks.
pub fn write_tar_raw_names(out: &Path, files: &[(&str, &[u8])]) {
    let mut buf = Vec::new();
    for (name, data) in files {
        let mut h = tar::Header::new_old();
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(data);
        buf.resize(buf.len().div_ceil(512) * 512, 0);
    }
    buf.extend_from_slice(&[0u8; 1024]);
    std::fs::write(out, buf).expect("write raw tar");
}

/// Gzips a file.
pub fn gzip_file(input: &Path, out: &Path) {
    let data = std::fs::read(input).expect("read");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(out).expect("create gz"),
        flate2::Compression::fast(),
    );
    enc.write_all(&data).expect("gzip");
    enc.finish().expect("gzip finish");
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Converts a `docker save` tarball (one image) into an OCI image-layout tarball
/// with gzip-compressed layers, tagged `ref_name`. Returns the manifest digest.
pub fn oci_layout_from_docker_save(save: &Path, out: &Path, ref_name: &str) -> String {
    let files = tar_files(save);
    let get = |name: &str| -> Vec<u8> {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("{name} not in docker save tarball"))
    };
    let manifest: Value = serde_json::from_slice(&get("manifest.json")).expect("manifest.json");
    let config = get(manifest[0]["Config"].as_str().expect("Config"));
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    for l in manifest[0]["Layers"].as_array().expect("Layers") {
        let raw = get(l.as_str().expect("layer"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).expect("gzip layer");
        let gz = enc.finish().expect("gzip layer");
        let d = sha(&gz);
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}));
        blobs.push((d, gz));
    }
    let config_digest = sha(&config);
    let image_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .expect("json");
    let manifest_digest = sha(&image_manifest);
    blobs.push((config_digest, config));
    blobs.push((manifest_digest.clone(), image_manifest.clone()));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": image_manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    }))
    .expect("json");
    // Blobs first, index last: the reader must cope with the index at the end.
    let mut entries: Vec<(String, Vec<u8>)> = blobs
        .into_iter()
        .map(|(d, data)| (format!("blobs/sha256/{}", &d[7..]), data))
        .collect();
    entries.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    entries.push(("index.json".into(), index));
    write_tar(out, &entries);
    manifest_digest
}

/// A scratch directory for a test's tarballs.
pub fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().to_path_buf();
    (dir, p)
}
