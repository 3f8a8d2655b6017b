//! The demo lab's resources: which target hosts it has (names, loopback
//! addresses, roles) and its manifests — a Cluster with a few real-looking
//! parameters, one Image per role pointing at the demo tarballs, the managed
//! Servers and one External Server — written as YAML files a user can read
//! and apply again.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The lab's Cluster.
pub const CLUSTER: &str = "demo";
/// The lab's SSH Secret (`ssh-privatekey`, `known_hosts`).
pub const SECRET: &str = "demo-ssh";
/// The namespace of every lab object.
pub const NAMESPACE: &str = "default";
/// `Image.spec.imageId` of the demo images: pushed as
/// `<registry>/server-manager-demo-<role>:<version>`.
pub const IMAGE_ID: &str = "server-manager-demo";
/// `Image.spec.version` of the demo images.
pub const IMAGE_VERSION: &str = "1";
/// The roles the lab runs, each with a demo image.
pub const ROLES: [&str; 4] = ["controller", "analytics", "analyticsdb", "agent"];
/// The External Server (counted in `controller_nodes`, never contacted).
pub const EXTERNAL: (&str, &str) = ("demo-ext-ctrl", "127.0.0.10");
/// The most target hosts a lab has.
pub const MAX_HOSTS: u8 = 16;

/// One managed target host of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The Server's name.
    pub name: String,
    /// Its loopback address.
    pub address: String,
    /// Its roles.
    pub roles: Vec<&'static str>,
}

/// The managed hosts of a lab of `n` (1 ..= [`MAX_HOSTS`]): one all-in-one
/// host; or a controller (+ analytics + analyticsdb) and a compute node; or
/// from 3 on a controller + analytics node, an analyticsdb node and compute
/// nodes — the shape of `examples/`, on 127.0.0.11, .12 and .21, .22, ….
pub fn plan(n: u8) -> Vec<HostPlan> {
    let host = |name: &str, last: u32, roles: &[&'static str]| HostPlan {
        name: name.to_string(),
        address: format!("127.0.0.{last}"),
        roles: roles.to_vec(),
    };
    match n {
        0 => Vec::new(),
        1 => vec![host("demo-aio-1", 11, &ROLES)],
        2 => vec![
            host(
                "demo-ctrl-1",
                11,
                &["controller", "analytics", "analyticsdb"],
            ),
            host("demo-compute-1", 21, &["agent"]),
        ],
        n => {
            let mut hosts = vec![
                host("demo-ctrl-1", 11, &["controller", "analytics"]),
                host("demo-db-1", 12, &["analyticsdb"]),
            ];
            for i in 1..=u32::from(n.min(MAX_HOSTS)) - 2 {
                hosts.push(host(&format!("demo-compute-{i}"), 20 + i, &["agent"]));
            }
            hosts
        }
    }
}

/// Where a host's directories are: `<lab>/hosts/<name>/`.
pub fn host_dir(lab_dir: &Path, name: &str) -> PathBuf {
    lab_dir.join("hosts").join(name)
}

/// `spec.layout` of a host: the usual Contrail directories, below the host's
/// own directory, and containers named `smdemo-<lab id>-<name>-<role>`.
pub fn layout(lab_dir: &Path, lab_id: &str, name: &str) -> Value {
    let root = host_dir(lab_dir, name);
    json!({
        "configDir": root.join("etc/contrail").display().to_string(),
        "logDir": root.join("var/log/contrail").display().to_string(),
        "dataDir": root.join("var/lib/contrail").display().to_string(),
        "containerPrefix": container_prefix(lab_id, name),
    })
}

/// The prefix of every container of a lab.
pub fn lab_container_prefix(lab_id: &str) -> String {
    format!("smdemo-{lab_id}-")
}

/// The container-name prefix of one host.
pub fn container_prefix(lab_id: &str, name: &str) -> String {
    format!("{}{name}-", lab_container_prefix(lab_id))
}

/// The `docker save` tarball of a role's demo image in the image directory.
pub fn tarball(image_dir: &Path, role: &str) -> PathBuf {
    image_dir.join(format!("{IMAGE_ID}-{role}-{IMAGE_VERSION}.tar"))
}

/// The reference hosts pull a role's demo image by.
pub fn pulled_image(registry: &str, role: &str) -> String {
    format!("{registry}/{IMAGE_ID}-{role}:{IMAGE_VERSION}")
}

/// What the manifests need to know about a running lab.
pub struct ManifestInput<'a> {
    /// `DATA_DIR/lab`.
    pub lab_dir: &'a Path,
    /// The lab's id (container names).
    pub lab_id: &'a str,
    /// The image directory (tarballs).
    pub image_dir: &'a Path,
    /// `host:port` of the registry.
    pub registry: &'a str,
    /// The hosts and their SSH ports.
    pub hosts: &'a [(HostPlan, u16)],
}

const HEADER: &str = "# Written by `server-manager standalone --lab`: a demo lab on this machine's\n\
# loopback addresses. Its hosts are sshd processes, its images busybox\n\
# containers that log the role file they read (not Contrail). Stopping the\n\
# command removes all of it, this file included.\n";

/// The lab's manifests as (file name, YAML text): `cluster.yaml`,
/// `images.yaml`, `servers.yaml`.
pub fn render(input: &ManifestInput<'_>) -> Vec<(&'static str, String)> {
    let mut hosts_entries = serde_json::Map::new();
    for (h, _) in input.hosts {
        hosts_entries.insert(h.name.clone(), json!(h.address));
    }
    hosts_entries.insert(EXTERNAL.0.to_string(), json!(EXTERNAL.1));
    let images: serde_json::Map<String, Value> = ROLES
        .iter()
        .map(|r| (r.to_string(), json!(format!("demo-{r}"))))
        .collect();
    let cluster = json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": {
            "registry": {"address": input.registry, "insecure": true},
            "images": images,
            "rollout": {"minReadySeconds": 5},
            "parameters": {
                "GLOBAL": {
                    "cloud_orchestrator": "kubernetes",
                    "log_level": "SYS_NOTICE",
                    "xmpp_auth_enable": false,
                    "sandesh_ssl_enable": false,
                    "hosts_entries": hosts_entries,
                },
                "CONTROLLER": {"bgp_asn": "64512", "encap_priority": "MPLSoUDP,MPLSoGRE,VXLAN"},
                "WEBUI": {"http_listen_port": "8180", "webui_storage_enable": false},
                "CASSANDRA": {"data_dirs": ["/var/lib/cassandra/data"]},
                "ANALYTICS_API": {"aaa_mode": "no-auth"},
            },
        }
    });
    let images: Vec<Value> = ROLES
        .iter()
        .map(|role| {
            json!({
                "apiVersion": "servermanager.contrail.io/v1alpha1",
                "kind": "Image",
                "metadata": {"name": format!("demo-{role}"), "namespace": NAMESPACE},
                "spec": {
                    "category": "container",
                    "imageId": IMAGE_ID,
                    "imageType": role,
                    "version": IMAGE_VERSION,
                    "source": {"path": tarball(input.image_dir, role).display().to_string()},
                }
            })
        })
        .collect();
    let mut servers: Vec<Value> = input
        .hosts
        .iter()
        .map(|(h, port)| {
            let mut parameters = serde_json::Map::new();
            if h.roles.contains(&"controller") {
                parameters.insert("GLOBAL".into(), json!({"controller_ip": h.address}));
            }
            if h.roles.contains(&"analyticsdb") {
                parameters.insert(
                    "CASSANDRA".into(),
                    json!({"data_dirs": ["/srv/cassandra/data", "/srv/cassandra/data2"]}),
                );
            }
            if h.roles.contains(&"agent") {
                parameters.insert(
                    "AGENT".into(),
                    json!({"vrouter_physical_interface": "eth1"}),
                );
                parameters.insert("HYPERVISOR".into(), json!({"type": "kvm"}));
            }
            json!({
                "apiVersion": "servermanager.contrail.io/v1alpha1",
                "kind": "Server",
                "metadata": {"name": h.name, "namespace": NAMESPACE},
                "spec": {
                    "clusterRef": {"name": CLUSTER},
                    "host": h.address,
                    "ssh": {"user": "root", "port": port, "secretRef": {"name": SECRET}},
                    "roles": h.roles,
                    "layout": layout(input.lab_dir, input.lab_id, &h.name),
                    "parameters": parameters,
                }
            })
        })
        .collect();
    servers.push(json!({
        "apiVersion": "servermanager.contrail.io/v1alpha1",
        "kind": "Server",
        "metadata": {"name": EXTERNAL.0, "namespace": NAMESPACE},
        "spec": {
            "clusterRef": {"name": CLUSTER},
            "host": EXTERNAL.1,
            "provisioning": "External",
            "roles": ["controller"],
        }
    }));
    vec![
        ("cluster.yaml", yaml(&[cluster])),
        ("images.yaml", yaml(&images)),
        ("servers.yaml", yaml(&servers)),
    ]
}

fn yaml(docs: &[Value]) -> String {
    let docs: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap_or_default())
        .collect();
    format!("{HEADER}{}", docs.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, n: u8) -> Vec<(HostPlan, u16)> {
        let hosts: Vec<(HostPlan, u16)> = plan(n).into_iter().map(|h| (h, 2222)).collect();
        let lab_dir = dir.join("lab");
        let image_dir = dir.join("images");
        for (name, text) in render(&ManifestInput {
            lab_dir: &lab_dir,
            lab_id: "0a1b2c",
            image_dir: &image_dir,
            registry: "127.0.0.1:5000",
            hosts: &hosts,
        }) {
            std::fs::write(dir.join(name), text).unwrap();
        }
        hosts
    }

    #[test]
    fn every_lab_size_renders_valid_role_files() {
        for n in 1..=MAX_HOSTS {
            let dir = tempfile::tempdir().unwrap();
            let hosts = write(dir.path(), n);
            assert_eq!(hosts.len(), usize::from(n));
            let m = crate::manifests::Manifests::load(&[dir.path().to_path_buf()]).unwrap();
            assert_eq!(m.servers.len(), usize::from(n) + 1);
            assert_eq!(m.images.len(), ROLES.len());
            // Every role is run somewhere, and every managed Server renders.
            for role in ROLES {
                assert!(
                    hosts.iter().any(|(h, _)| h.roles.contains(&role)),
                    "{n}: {role}"
                );
            }
            for (h, _) in &hosts {
                let config = m.effective_config(NAMESPACE, &h.name).unwrap();
                assert_eq!(config.roles.len(), h.roles.len());
            }
        }
    }

    #[test]
    fn several_roles_one_external_and_only_loopback_addresses() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 3);
        let m = crate::manifests::Manifests::load(&[dir.path().to_path_buf()]).unwrap();
        assert!(m.servers.iter().any(|s| s.spec.roles.len() > 1));
        assert_eq!(m.servers.iter().filter(|s| !s.spec.is_managed()).count(), 1);
        // Every address anywhere in the manifests is a loopback one.
        let ip = regex::Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").unwrap();
        for file in ["cluster.yaml", "images.yaml", "servers.yaml"] {
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            for m in ip.find_iter(&text) {
                let addr: std::net::Ipv4Addr = m.as_str().parse().unwrap();
                assert!(addr.is_loopback(), "{file}: {addr}");
            }
        }
        for s in &m.servers {
            let addr: std::net::IpAddr = s.spec.host.parse().unwrap();
            assert!(addr.is_loopback());
            if let Some(l) = &s.spec.layout {
                for d in [&l.config_dir, &l.log_dir, &l.data_dir] {
                    assert_eq!(crate::validation::host_directory_error(d), None, "{d}");
                    assert!(d.starts_with(&dir.path().display().to_string()));
                }
            }
        }
    }
}
