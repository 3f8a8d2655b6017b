//! Reading manifests from files, as `kubectl apply -f` does (a file, or the
//! `.yaml`/`.yml`/`.json` files of a directory, several documents per file, v1
//! `List`s as `kubectl get -o yaml` writes them), for
//! `server-manager render` and the tests of `examples/`.

use std::path::{Path, PathBuf};

use kube::ResourceExt;
use serde::de::DeserializeOwned;

use crate::config::{self, ConfigErrors, EffectiveConfig};
use crate::crd::{Cluster, GROUP, Image, Server};

/// Why manifests could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not fit its kind.
    #[error("{path}, document {index}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based document number in the file.
        index: usize,
        /// What is wrong, with the field path.
        message: String,
    },
    /// The Server was not found.
    #[error("no Server {namespace}/{name} in the manifests given")]
    ServerNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The Server's Cluster was not found.
    #[error(
        "Server {server} references Cluster {namespace}/{cluster}, which is not in the manifests given"
    )]
    ClusterNotFound {
        /// The Server.
        server: String,
        /// Namespace.
        namespace: String,
        /// The missing Cluster.
        cluster: String,
    },
    /// The configuration is invalid.
    #[error("Server {server}: invalid configuration: {errors}")]
    Config {
        /// The Server.
        server: String,
        /// Every problem.
        errors: ConfigErrors,
    },
}

/// The resources of this project found in a set of manifests; other kinds are
/// counted and ignored.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// Servers.
    pub servers: Vec<Server>,
    /// Images.
    pub images: Vec<Image>,
    /// Documents of other kinds (Namespaces, Secrets, …).
    pub other: usize,
}

impl Manifests {
    /// Reads every manifest under `paths` (files, or directories non-recursively,
    /// like `kubectl apply -f`). Objects without a namespace get `default`.
    pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
        let mut out = Manifests::default();
        for path in paths {
            for file in files_of(path)? {
                let text =
                    std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                        path: file.clone(),
                        source,
                    })?;
                out.add_documents(&file, &text)?;
            }
        }
        Ok(out)
    }

    fn add_documents(&mut self, path: &Path, text: &str) -> Result<(), ManifestError> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value: serde_json::Value =
                serde_path_to_error::deserialize(doc).map_err(|e| ManifestError::Invalid {
                    path: path.to_path_buf(),
                    index: i + 1,
                    message: format!("not valid YAML: {e}"),
                })?;
            if value.is_null() {
                continue;
            }
            // `kubectl get … -o yaml` of several objects is a v1 List.
            if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default();
                for item in items {
                    self.add_value(path, i, item)?;
                }
                continue;
            }
            self.add_value(path, i, value)?;
        }
        Ok(())
    }

    fn add_value(
        &mut self,
        path: &Path,
        i: usize,
        value: serde_json::Value,
    ) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            index: i + 1,
            message,
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if api_version.split('/').next() != Some(GROUP) {
            self.other += 1;
            return Ok(());
        }
        match kind {
            "Cluster" => self.clusters.push(typed(value).map_err(invalid)?),
            "Server" => self.servers.push(typed(value).map_err(invalid)?),
            "Image" => self.images.push(typed(value).map_err(invalid)?),
            other => return Err(invalid(format!("unknown kind {other:?} in group {GROUP}"))),
        }
        Ok(())
    }

    /// Computes the role files of Server `namespace/name` from the manifests
    /// (derived parameters need the whole cluster).
    pub fn effective_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<EffectiveConfig, ManifestError> {
        let server = self
            .servers
            .iter()
            .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace))
            .ok_or_else(|| ManifestError::ServerNotFound {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        let cluster_name = &server.spec.cluster_ref.name;
        let cluster = self
            .clusters
            .iter()
            .find(|c| &c.name_any() == cluster_name && c.namespace().as_deref() == Some(namespace))
            .ok_or_else(|| ManifestError::ClusterNotFound {
                server: name.into(),
                namespace: namespace.into(),
                cluster: cluster_name.clone(),
            })?;
        config::for_server(cluster, &self.servers, server).map_err(|errors| ManifestError::Config {
            server: name.into(),
            errors,
        })
    }
}

fn typed<K: DeserializeOwned + kube::Resource>(mut value: serde_json::Value) -> Result<K, String> {
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.entry("namespace")
            .or_insert_with(|| serde_json::Value::String("default".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string().as_str() {
        "." => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    })
}

fn files_of(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(read_err)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let manifest = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if p.is_file() && manifest {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
