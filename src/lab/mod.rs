//! `server-manager standalone --lab N`: the main job for real on one machine.
//! Besides what `standalone` runs (API server, operator, playbook runner,
//! registry), a demo lab:
//!
//! - N target hosts, each a real `sshd` ([`sshd`]) on its own loopback
//!   address (127.0.0.11, .12, .21, …) and a free port, with its own layout
//!   directories (`DATA_DIR/lab/hosts/<server>/etc/contrail`, `var/log/contrail`,
//!   `var/lib/contrail`) and container prefix (`smdemo-<lab id>-<server>-`);
//!   one generated client key, each host's key in `known_hosts`, and the
//!   Secret `demo-ssh` made of them;
//! - demo role images built with no network ([`demo_image`]: busybox through
//!   the engine's import, saved as `docker save` tarballs in the image
//!   directory), whose containers log the role file they read to
//!   `/var/log/<role>.log` — the host's `logDir` — and keep running;
//! - the manifests ([`manifests`]) written to `DATA_DIR/lab/manifests` and
//!   applied (server-side apply, field manager `server-manager-lab`).
//!
//! Stopping the command (Ctrl-C, SIGTERM) takes it all down ([`Lab::down`]):
//! the sshd processes and their sessions, the containers, the images the
//! hosts pulled, and the data directory (or, when it existed before, what is
//! in it). Starting it again on the same directory after a crash resumes:
//! keys, host keys and ports are kept, sshds left over are killed, and the
//! manifests are applied again. Two at once on one directory are refused
//! (a lock). Everything the lab contacts is on 127.0.0.0/8.
//!
//! [`prereq`] checks, before anything is made, that the machine has what the
//! lab needs, naming each missing piece and its Debian package.

pub mod demo_image;
pub mod manifests;
pub mod prereq;
pub mod procs;
pub mod sshd;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use manifests::HostPlan;
use sshd::Sshd;

/// The field manager of the lab's server-side applies.
pub const FIELD_MANAGER: &str = "server-manager-lab";

/// What `standalone --lab` was given.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The image directory (`DATA_DIR/images` unless `--image-dir`).
    pub image_dir: PathBuf,
    /// How many target hosts.
    pub hosts: u8,
    /// `--registry`, when given (must be on loopback).
    pub registry: Option<String>,
    /// Where standalone's own registry listens (must be loopback).
    pub registry_listen: SocketAddr,
    /// Whether an external playbook runner was given (it could not reach
    /// the lab's loopback hosts).
    pub external_runner: bool,
}

/// What the lab keeps in `DATA_DIR/lab/lab.json` for a restart after a crash.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// Short random id: container names.
    id: String,
    /// The data directory did not exist before: remove it, not only its content.
    created_data_dir: bool,
    /// `/run/sshd` did not exist before the lab made it.
    #[serde(default)]
    created_run_sshd: Option<bool>,
    /// SSH port of each host.
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    /// The registry the hosts pulled from.
    #[serde(default)]
    registry: Option<String>,
}

/// A demo lab: prepared ([`Lab::prepare`]), running ([`Lab::up`]), removed
/// ([`Lab::down`]).
pub struct Lab {
    data_dir: PathBuf,
    lab_dir: PathBuf,
    image_dir: PathBuf,
    plan: Vec<HostPlan>,
    state: State,
    sshds: Vec<Sshd>,
    _lock: std::fs::File,
}

fn is_loopback_address(host_port: &str) -> bool {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

impl Lab {
    /// Checks the options and the machine's prerequisites, then takes the
    /// data directory: it must not exist, be empty, or hold a lab (a restart
    /// after a crash). Makes nothing but the directory, `lab/lab.json` and
    /// the lock; on error nothing is left to remove.
    pub async fn prepare(opts: &LabOptions) -> anyhow::Result<Lab> {
        anyhow::ensure!(
            (1..=manifests::MAX_HOSTS).contains(&opts.hosts),
            "--lab takes 1 to {} hosts",
            manifests::MAX_HOSTS
        );
        anyhow::ensure!(
            !opts.external_runner,
            "--lab runs its own playbook runner (its hosts are on this machine's loopback \
             addresses): leave out --runner-url"
        );
        match &opts.registry {
            Some(r) => anyhow::ensure!(
                is_loopback_address(r),
                "--lab uses only loopback addresses: --registry {r} is not one"
            ),
            None => anyhow::ensure!(
                opts.registry_listen.ip().is_loopback(),
                "--lab uses only loopback addresses: --registry-listen {} is not one",
                opts.registry_listen
            ),
        }
        prereq::check(opts.registry.is_none()).await?;

        let dir = &opts.data_dir;
        let created = if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the data directory {}", dir.display()))?;
            anyhow::ensure!(
                entries.next().is_none() || dir.join("lab/lab.json").is_file(),
                "{} holds data that is not a demo lab's: --lab removes its data directory \
                 when it stops, so give it a new one (e.g. --data-dir /tmp/sm-lab)",
                dir.display()
            );
            false
        } else {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            true
        };
        let data_dir = std::fs::canonicalize(dir)?;
        let lab_dir = data_dir.join("lab");
        let sample = lab_dir.join("hosts/demo-compute-10/var/log/contrail");
        if let Some(e) = crate::validation::host_directory_error(&sample.display().to_string()) {
            if created {
                let _ = std::fs::remove_dir(&data_dir);
            }
            anyhow::bail!(
                "--data-dir {}: the lab's host directories are below it and {e}",
                data_dir.display()
            );
        }
        std::fs::create_dir_all(&lab_dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lab_dir.join("lock"))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "another `server-manager standalone --lab` runs on {}: stop it first",
                data_dir.display()
            );
        }
        let state_path = lab_dir.join("lab.json");
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", state_path.display()))?,
            Err(_) => State {
                id: uuid::Uuid::new_v4().simple().to_string()[..6].to_string(),
                created_data_dir: created,
                ..Default::default()
            },
        };
        let lab = Lab {
            image_dir: std::path::absolute(&opts.image_dir)?,
            plan: manifests::plan(opts.hosts),
            data_dir,
            lab_dir,
            state,
            sshds: Vec::new(),
            _lock: lock,
        };
        lab.save_state()?;
        Ok(lab)
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let path = self.lab_dir.join("lab.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// `DATA_DIR/lab/manifests`.
    pub fn manifests_dir(&self) -> PathBuf {
        self.lab_dir.join("manifests")
    }

    /// The managed hosts: (Server name, address, SSH port, roles).
    pub fn hosts(&self) -> Vec<(String, String, u16, Vec<&'static str>)> {
        self.plan
            .iter()
            .map(|h| {
                let port = self.state.ports.get(&h.name).copied().unwrap_or(0);
                (h.name.clone(), h.address.clone(), port, h.roles.clone())
            })
            .collect()
    }

    /// Starts the hosts, builds the images, writes the manifests and applies
    /// them (with the SSH Secret) through `client`; the Cluster uses
    /// `registry`.
    pub async fn up(&mut self, client: kube::Client, registry: &str) -> anyhow::Result<()> {
        self.state.registry = Some(registry.to_string());
        if self.state.created_run_sshd.is_none() {
            self.state.created_run_sshd = Some(!Path::new("/run/sshd").exists());
        }
        self.save_state()?;

        // Keys and hosts.
        let ssh_dir = self.lab_dir.join("ssh");
        std::fs::create_dir_all(&ssh_dir)?;
        let key = ssh_dir.join("id_ed25519");
        if !key.exists() || !key.with_extension("pub").exists() {
            let _ = std::fs::remove_file(&key);
            let _ = std::fs::remove_file(key.with_extension("pub"));
            sshd::keygen(&key, "server-manager-lab")?;
        }
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let mut known_hosts = String::new();
        for host in self.plan.clone() {
            let dir = manifests::host_dir(&self.lab_dir, &host.name).join("sshd");
            sshd::kill_stale(&dir);
            let port = match self.state.ports.get(&host.name) {
                Some(&p) if sshd::port_is_free(&host.address, p) => p,
                _ => sshd::free_port(&host.address)?,
            };
            let sshd = Sshd::start(&dir, &host.address, port, &public)
                .with_context(|| format!("cannot start the sshd of {}", host.name))?;
            known_hosts.push_str(&sshd.known_hosts()?);
            self.sshds.push(sshd);
            self.state.ports.insert(host.name.clone(), port);
            self.save_state()?;
            println!(
                "  demo lab: host {} is sshd on {}:{port} ({})",
                host.name,
                host.address,
                host.roles.join(", ")
            );
        }
        std::fs::write(ssh_dir.join("known_hosts"), &known_hosts)?;

        // Images.
        std::fs::create_dir_all(&self.image_dir)?;
        let docker = bollard::Docker::connect_with_local_defaults()
            .context("cannot connect to the Docker engine")?;
        let rootfs = self.lab_dir.join("rootfs");
        for role in manifests::ROLES {
            let out = manifests::tarball(&self.image_dir, role);
            if out.is_file() {
                continue;
            }
            if !rootfs.join("bin/busybox").exists() {
                demo_image::busybox_rootfs(&rootfs)?;
            }
            demo_image::build_demo_tarball(&docker, &rootfs, role, &self.build_tag(role), &out)
                .await
                .with_context(|| format!("cannot build the demo image of {role}"))?;
            println!("  demo lab: built {}", out.display());
        }

        // Manifests, checked, then applied.
        let hosts: Vec<(HostPlan, u16)> = self
            .plan
            .iter()
            .map(|h| (h.clone(), self.state.ports[&h.name]))
            .collect();
        let dir = self.manifests_dir();
        std::fs::create_dir_all(&dir)?;
        for (name, text) in manifests::render(&manifests::ManifestInput {
            lab_dir: &self.lab_dir,
            lab_id: &self.state.id,
            image_dir: &self.image_dir,
            registry,
            hosts: &hosts,
        }) {
            std::fs::write(dir.join(name), text)?;
        }
        let loaded = crate::manifests::Manifests::load(std::slice::from_ref(&dir))?;
        for h in &self.plan {
            loaded.effective_config(manifests::NAMESPACE, &h.name)?;
        }
        apply_secret(&client, &std::fs::read_to_string(&key)?, &known_hosts).await?;
        apply_dir(&client, &dir).await?;
        println!("  demo lab: applied the manifests in {}", dir.display());
        Ok(())
    }

    fn build_tag(&self, role: &str) -> String {
        format!(
            "{}-build-{}-{role}:{}",
            manifests::IMAGE_ID,
            self.state.id,
            manifests::IMAGE_VERSION
        )
    }

    /// Removes everything the lab made: call it once nothing else runs (the
    /// operator, runner, registry and API server stopped). Kills the sshd
    /// hosts with their sessions and whatever this process still has running
    /// (a playbook run in flight), removes the containers, the images the
    /// hosts pulled, the tarballs and the data directory. Goes on after a
    /// failure; returns the first.
    pub async fn down(mut self) -> anyhow::Result<()> {
        let mut errors: Vec<anyhow::Error> = Vec::new();
        // A playbook run in flight is this process's ansible-playbook: let it
        // end (it fails fast without registry), so nothing is cut mid-task on
        // the hosts — which are this machine.
        let runs: Vec<u32> = procs::descendants(std::process::id())
            .into_iter()
            .filter(|p| procs::cmdline_contains(*p, "ansible-playbook"))
            .collect();
        if !runs.is_empty() {
            println!(
                "  demo lab: waiting for {} playbook run(s) to end (at most 30 s)",
                runs.len()
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for pid in runs {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            procs::end_process(pid, left, std::time::Duration::from_secs(5));
        }
        for mut s in self.sshds.drain(..) {
            s.stop();
        }
        for h in &self.plan {
            sshd::kill_stale(&manifests::host_dir(&self.lab_dir, &h.name).join("sshd"));
        }
        for pid in procs::descendants(std::process::id()) {
            procs::end_tree(pid, std::time::Duration::from_secs(2));
        }
        match bollard::Docker::connect_with_local_defaults() {
            Ok(docker) => {
                if let Err(e) = self.remove_containers(&docker).await {
                    errors.push(e);
                }
                let mut images: Vec<String> =
                    manifests::ROLES.iter().map(|r| self.build_tag(r)).collect();
                if let Some(registry) = &self.state.registry {
                    images.extend(
                        manifests::ROLES
                            .iter()
                            .map(|r| manifests::pulled_image(registry, r)),
                    );
                }
                for image in images {
                    if let Err(e) = demo_image::remove_image(&docker, &image).await {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(anyhow::anyhow!("cannot connect to the Docker engine: {e}")),
        }
        if !self.image_dir.starts_with(&self.data_dir) {
            for role in manifests::ROLES {
                let tarball = manifests::tarball(&self.image_dir, role);
                let _ = std::fs::remove_file(tarball.with_extension("partial"));
                let _ = std::fs::remove_file(tarball);
            }
        }
        let removed = if self.state.created_data_dir {
            std::fs::remove_dir_all(&self.data_dir)
        } else {
            std::fs::read_dir(&self.data_dir).and_then(|entries| {
                entries.flatten().try_for_each(|e| {
                    if e.file_type()?.is_dir() {
                        std::fs::remove_dir_all(e.path())
                    } else {
                        std::fs::remove_file(e.path())
                    }
                })
            })
        };
        if let Err(e) = removed {
            errors.push(anyhow::anyhow!(
                "cannot remove {}: {e}",
                self.data_dir.display()
            ));
        }
        if self.state.created_run_sshd == Some(true) && !any_sshd_running() {
            let _ = std::fs::remove_dir("/run/sshd");
        }
        match errors.into_iter().next() {
            Some(e) => Err(e.context("the demo lab was not removed completely")),
            None => Ok(()),
        }
    }

    /// Removes every container named with the lab's prefix, until none is
    /// left (one created by a run that was ending is caught by the next pass).
    async fn remove_containers(&self, docker: &bollard::Docker) -> anyhow::Result<()> {
        use bollard::query_parameters::{
            ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
        };
        let prefix = manifests::lab_container_prefix(&self.state.id);
        let filters = std::collections::HashMap::from([("name", vec![prefix.as_str()])]);
        let mut quiet_passes = 0;
        for _ in 0..20 {
            let list = docker
                .list_containers(Some(
                    ListContainersOptionsBuilder::default()
                        .all(true)
                        .filters(&filters)
                        .build(),
                ))
                .await
                .context("cannot list containers")?;
            let ours: Vec<String> = list
                .into_iter()
                .flat_map(|c| c.names.unwrap_or_default())
                .map(|n| n.trim_start_matches('/').to_string())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            if ours.is_empty() {
                quiet_passes += 1;
                if quiet_passes == 2 {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            quiet_passes = 0;
            for name in ours {
                let _ = docker
                    .remove_container(
                        &name,
                        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                    )
                    .await;
            }
        }
        anyhow::bail!("containers named {prefix}* keep appearing")
    }
}

/// Whether any process named sshd runs on the machine.
fn any_sshd_running() -> bool {
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries.flatten().any(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "sshd")
        })
    })
}

/// Server-side applies Secret `demo-ssh` (`ssh-privatekey`, `known_hosts`).
async fn apply_secret(client: &kube::Client, key: &str, known_hosts: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": manifests::SECRET, "namespace": manifests::NAMESPACE},
        "type": "Opaque",
        "data": {"ssh-privatekey": b64(key), "known_hosts": b64(known_hosts)},
    });
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), manifests::NAMESPACE);
    api.patch(
        manifests::SECRET,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .context("cannot apply the lab's SSH Secret")?;
    Ok(())
}

/// Server-side applies every document of the `.yaml` files in `dir`
/// (Clusters, Images, Servers of this project's group), as they are.
async fn apply_dir(client: &kube::Client, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{} is not valid YAML", file.display()))?;
            let resource = match value["kind"].as_str() {
                Some("Cluster") => ApiResource::erase::<crate::crd::Cluster>(&()),
                Some("Server") => ApiResource::erase::<crate::crd::Server>(&()),
                Some("Image") => ApiResource::erase::<crate::crd::Image>(&()),
                other => anyhow::bail!("{}: unexpected kind {other:?}", file.display()),
            };
            let name = value["metadata"]["name"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), manifests::NAMESPACE, &resource);
            api.patch(name, &params, &Patch::Apply(&value))
                .await
                .with_context(|| format!("cannot apply {} {name}", resource.kind))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registry_addresses() {
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback_address(ok), "{ok}");
        }
        for bad in [
            "10.0.0.1:5000",
            "registry.example:5000",
            "0.0.0.0:5000",
            "[::]:5000",
        ] {
            assert!(!is_loopback_address(bad), "{bad}");
        }
    }
}
