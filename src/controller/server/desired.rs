//! A Server's desired state — role files, image references and digests, the
//! registry, and the hash of all of it — resolved from the caches (no API
//! request), and a memo of every Server's desired hash so that the rollout
//! planner and the Cluster's status can ask for any member's hash without
//! rendering it again until one of its inputs changes.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};

use crate::config::{self, ClusterInput, Derived, EffectiveConfig, Member};
use crate::controller::Settings;
use crate::controller::conditions::reason;
use crate::controller::fleet::{Key, key_of};
use crate::crd::{Cluster, Image, Role, Server};
use crate::image_ref::ImageReference;

/// Why a Server cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Condition reason.
    pub reason: &'static str,
    /// Explanation.
    pub message: String,
    /// Only an outside change can help (kstatus `Stalled`).
    pub stalled: bool,
}

impl Blocked {
    /// A new blocker.
    pub fn new(reason: &'static str, message: impl Into<String>, stalled: bool) -> Self {
        Blocked {
            reason,
            message: message.into(),
            stalled,
        }
    }
}

/// Everything a provisioning run needs, except credentials.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The Cluster.
    pub cluster: Arc<Cluster>,
    /// Role files.
    pub config: EffectiveConfig,
    /// Per role: (image reference, digest).
    pub images: BTreeMap<Role, (String, Option<String>)>,
    /// Registry the host pulls from.
    pub registry: String,
    /// Whether it is plain HTTP.
    pub insecure: bool,
    /// Hash of all of it.
    pub hash: String,
}

/// The caches and settings a desired state is computed from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// Clusters.
    pub clusters: &'a Store<Cluster>,
    /// Images.
    pub images: &'a Store<Image>,
    /// The operator's settings (default registry, playbook version).
    pub settings: &'a Settings,
}

impl Sources<'_> {
    fn cluster(&self, server: &Server) -> Option<Arc<Cluster>> {
        let ns = server.namespace().unwrap_or_default();
        self.clusters
            .get(&ObjectRef::new(&server.spec.cluster_ref.name).within(&ns))
    }

    fn image(&self, ns: &str, name: &str) -> Option<Arc<Image>> {
        self.images.get(&ObjectRef::new(name).within(ns))
    }
}

/// The Image name `server` uses for `role`: its own, else its Cluster's.
fn image_name<'a>(server: &'a Server, cluster: &'a Cluster, role: Role) -> Option<&'a String> {
    server
        .spec
        .images
        .get(role.as_str())
        .or_else(|| cluster.spec.images.get(role.as_str()))
}

/// Resolves the Cluster and Images of `server` and computes its desired state.
pub fn resolve(server: &Server, src: Sources<'_>, derived: &Derived) -> Result<Desired, Blocked> {
    let ns = server.namespace().unwrap_or_default();
    let cluster_name = &server.spec.cluster_ref.name;
    let cluster = src.cluster(server).ok_or_else(|| {
        Blocked::new(
            reason::CLUSTER_NOT_FOUND,
            format!("Cluster {ns}/{cluster_name} not found"),
            true,
        )
    })?;
    let (registry, insecure) = match &cluster.spec.registry {
        Some(r) => (r.address.clone(), r.insecure),
        None => (
            src.settings.registry.address.clone(),
            src.settings.registry.insecure,
        ),
    };
    let mut images = BTreeMap::new();
    let mut roles = server.spec.roles.clone();
    roles.sort();
    roles.dedup();
    for role in &roles {
        let name = image_name(server, &cluster, *role).ok_or_else(|| {
            Blocked::new(
                reason::NO_IMAGE_FOR_ROLE,
                format!(
                    "no Image for role {role}: set spec.images.{role} in the Server or Cluster {cluster_name}"
                ),
                true,
            )
        })?;
        let image = src.image(&ns, name).ok_or_else(|| {
            Blocked::new(
                reason::IMAGE_NOT_FOUND,
                format!("Image {ns}/{name} (role {role}) not found"),
                true,
            )
        })?;
        if image.spec.image_type != *role {
            return Err(Blocked::new(
                reason::IMAGE_NOT_FOUND,
                format!(
                    "Image {name} is for role {}, not {role}",
                    image.spec.image_type
                ),
                true,
            ));
        }
        if image.spec.category == crate::crd::ImageCategory::Package {
            return Err(Blocked::new(
                reason::IMAGE_NOT_FOUND,
                format!(
                    "Image {name} is a package (recorded, never pushed): role {role} runs a container and needs an Image of category container"
                ),
                true,
            ));
        }
        if !crate::controller::image::is_done(&image) {
            // An Image that cannot be pushed without a change (a bad
            // tarball) stalls its Servers too, so kstatus readers (Flux's
            // wait, Argo CD) report failure instead of waiting forever; the
            // Image's next change wakes the Server (it watches Images).
            return Err(match crate::controller::image::stalled(&image) {
                Some(why) => Blocked::new(
                    reason::IMAGE_NOT_READY,
                    format!("Image {name} (role {role}) cannot be pushed: {why}"),
                    true,
                ),
                None => Blocked::new(
                    reason::IMAGE_NOT_READY,
                    format!("Image {name} (role {role}) is not pushed yet"),
                    false,
                ),
            });
        }
        let reference =
            ImageReference::new(&registry, &image.spec.image_id, *role, &image.spec.version)
                .map_err(|e| Blocked::new(reason::IMAGE_NOT_FOUND, e.to_string(), true))?;
        let digest = image.status.as_ref().and_then(|s| s.digest.clone());
        images.insert(*role, (reference.to_string(), digest));
    }
    let config = config::effective_config_with(
        ClusterInput {
            name: cluster_name,
            spec: &cluster.spec,
        },
        derived,
        Member {
            name: &server.name_any(),
            spec: &server.spec,
        },
    )
    .map_err(|e| Blocked::new(reason::INVALID_CONFIGURATION, e.to_string(), true))?;
    let layout = server.spec.layout();
    // The runner refuses these too; judged here, a Server created before
    // admission checked them is Stalled instead of retried forever.
    for (field, dir) in [
        ("configDir", &layout.config_dir),
        ("logDir", &layout.log_dir),
        ("dataDir", &layout.data_dir),
    ] {
        if let Some(why) = crate::validation::host_directory_error(dir) {
            return Err(Blocked::new(
                reason::INVALID_LAYOUT,
                format!("spec.layout.{field} {dir:?}: {why}"),
                true,
            ));
        }
    }
    let mut h = Sha256::new();
    h.update(config.hash.as_bytes());
    for (role, (reference, digest)) in &images {
        h.update(format!("\0{role}\0{reference}\0{}", digest.as_deref().unwrap_or("")).as_bytes());
    }
    let ssh = server.spec.ssh.as_ref();
    h.update(
        format!(
            "\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            src.settings.playbook_version,
            server.spec.host,
            ssh.map(|s| s.port).unwrap_or(22),
            ssh.map(|s| s.user.as_str()).unwrap_or(""),
            layout.config_dir,
            layout.log_dir,
            layout.data_dir,
            layout.container_prefix,
            insecure
        )
        .as_bytes(),
    );
    Ok(Desired {
        cluster,
        config,
        images,
        registry,
        insecure,
        hash: format!("sha256:{}", hex::encode(h.finalize())),
    })
}

/// The inputs of a Server's desired state, reduced to a number: equal
/// fingerprints mean an equal desired hash. Cheap (a few cache lookups).
fn fingerprint(server: &Server, src: Sources<'_>, derived_version: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    server.metadata.uid.hash(&mut h);
    server.metadata.generation.hash(&mut h);
    derived_version.hash(&mut h);
    let ns = server.namespace().unwrap_or_default();
    match src.cluster(server) {
        Some(cluster) => {
            cluster.metadata.uid.hash(&mut h);
            cluster.metadata.generation.hash(&mut h);
            for role in &server.spec.roles {
                let Some(name) = image_name(server, &cluster, *role) else {
                    continue;
                };
                name.hash(&mut h);
                if let Some(image) = src.image(&ns, name) {
                    // The resource version covers the digest and readiness.
                    image.metadata.uid.hash(&mut h);
                    image.metadata.resource_version.hash(&mut h);
                }
            }
        }
        None => 0u8.hash(&mut h),
    }
    h.finish()
}

/// A desired hash (or why there is none) and the fingerprint of its inputs.
type Memoized = (u64, Result<String, Blocked>);

/// Every Server's desired hash, kept until one of its inputs changes.
#[derive(Default)]
pub struct DesiredMemo {
    entries: Mutex<HashMap<Key, Memoized>>,
}

impl DesiredMemo {
    /// `server`'s desired hash (or why it has none), computed only when its
    /// inputs changed since the last call.
    pub fn hash(
        &self,
        server: &Server,
        src: Sources<'_>,
        derived: &Derived,
        derived_version: u64,
    ) -> Result<String, Blocked> {
        let key = key_of(server);
        let fp = fingerprint(server, src, derived_version);
        if let Ok(map) = self.entries.lock()
            && let Some((f, result)) = map.get(&key)
            && *f == fp
        {
            return result.clone();
        }
        let result = resolve(server, src, derived).map(|d| d.hash);
        self.remember(&key, fp, result.clone());
        result
    }

    /// Resolves `server`'s full desired state (to start a run) and remembers
    /// its hash.
    pub fn resolve(
        &self,
        server: &Server,
        src: Sources<'_>,
        derived: &Derived,
        derived_version: u64,
    ) -> Result<Desired, Blocked> {
        let result = resolve(server, src, derived);
        let fp = fingerprint(server, src, derived_version);
        self.remember(
            &key_of(server),
            fp,
            result
                .as_ref()
                .map(|d| d.hash.clone())
                .map_err(Clone::clone),
        );
        result
    }

    fn remember(&self, key: &Key, fp: u64, result: Result<String, Blocked>) {
        if let Ok(mut map) = self.entries.lock() {
            map.insert(key.clone(), (fp, result));
        }
    }

    /// Forgets a Server that is gone.
    pub fn forget(&self, key: &Key) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }
}
