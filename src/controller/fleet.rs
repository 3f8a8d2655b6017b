//! The operator's index of each cluster's membership: which Servers belong to
//! which Cluster, and the parameters their membership implies
//! ([`Derived`]: `controller_nodes`, `compute_nodes`, …).
//!
//! Fed by the Servers' watch *before* the reflector's store and the
//! controllers see an event (see `operator::drive`), so a reconcile never
//! reads a membership older than its Server. Derived parameters are computed
//! once per membership change of a cluster, not once per Server; when a
//! change alters a derived value that the cluster does not set explicitly,
//! the other members are woken to re-render (and only then): work per event
//! is proportional to what the event changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::config::{Derived, Member, explicit_derived_keys};
use crate::crd::{Cluster, Role, Server, ServerSpec};

/// `namespace/name`.
pub type Key = String;

/// `namespace/name` of an object.
pub fn key_of<K: Resource>(obj: &K) -> Key {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// `namespace/name` of `server`'s Cluster.
pub fn cluster_key_of(server: &Server) -> Key {
    format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.spec.cluster_ref.name
    )
}

/// What of a Server its cluster's derived parameters depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    host: String,
    roles: Vec<Role>,
}

/// How long a cluster's membership must stay unchanged before runs start
/// with the values it implies: a lab applied at once (`kubectl apply -f
/// lab/`) arrives one Server at a time, and provisioning the first ones with
/// a partial `controller_nodes` would provision them twice.
pub const SETTLE: Duration = Duration::from_secs(2);

/// One cluster's members.
#[derive(Debug, Default)]
struct ClusterMembers {
    /// Every Server that references the cluster, by name (deleting ones too).
    all: BTreeMap<String, Option<Membership>>,
    /// Bumped whenever `derived` changes.
    version: u64,
    derived: Arc<Derived>,
    /// Until when the derived values are settling after a change.
    settling_until: Option<Instant>,
}

impl ClusterMembers {
    fn recompute(&mut self, cluster: &str) -> Vec<&'static str> {
        let specs: Vec<(String, ServerSpec)> = self
            .all
            .iter()
            .filter_map(|(name, m)| {
                m.as_ref().map(|m| {
                    (
                        name.clone(),
                        ServerSpec {
                            cluster_ref: crate::crd::LocalObjectReference {
                                name: cluster.to_string(),
                            },
                            host: m.host.clone(),
                            provisioning: Default::default(),
                            ssh: None,
                            roles: m.roles.clone(),
                            images: Default::default(),
                            parameters: Default::default(),
                            suspend: false,
                            layout: None,
                        },
                    )
                })
            })
            .collect();
        let members: Vec<Member<'_>> = specs
            .iter()
            .map(|(name, spec)| Member { name, spec })
            .collect();
        let derived = Derived::from_members(cluster, &members);
        let changed = derived.changed_keys(&self.derived);
        if !changed.is_empty() {
            self.derived = Arc::new(derived);
            self.version += 1;
        }
        changed
    }
}

#[derive(Default)]
struct Inner {
    clusters: HashMap<Key, ClusterMembers>,
    /// The cluster each known Server references.
    cluster_of: HashMap<Key, Key>,
    /// Objects of a relist in progress (`Init` … `InitDone`).
    relist: Option<Vec<Arc<Server>>>,
    /// The first list is done: later changes are changes.
    listed: bool,
}

/// The membership index shared by the controllers.
pub struct Fleet {
    inner: Mutex<Inner>,
    clusters: Store<Cluster>,
    wake: UnboundedSender<ObjectRef<Server>>,
}

/// A cluster's members and derived parameters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Names of every Server referencing the cluster (deleting ones too).
    pub members: Vec<String>,
    /// The derived parameters.
    pub derived: Arc<Derived>,
    /// Changes whenever `derived` does.
    pub version: u64,
    /// How long until the derived values have been stable for [`SETTLE`]
    /// (`None`: settled).
    pub settling: Option<Duration>,
}

impl Fleet {
    /// An empty index; `wake` receives the Servers to reconcile again
    /// because a derived value they render changed.
    pub fn new(clusters: Store<Cluster>, wake: UnboundedSender<ObjectRef<Server>>) -> Fleet {
        Fleet {
            inner: Mutex::default(),
            clusters,
            wake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one event of the Servers' watch.
    pub fn observe(&self, event: &watcher::Event<Server>) {
        match event {
            watcher::Event::Apply(s) => {
                let wake = self.lock().update(s);
                self.wake_all(wake);
            }
            watcher::Event::Delete(s) => {
                let wake = self.lock().remove(&key_of(s));
                self.wake_all(wake);
            }
            watcher::Event::Init => self.lock().relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => {
                if let Some(buffer) = self.lock().relist.as_mut() {
                    buffer.push(Arc::new(s.clone()));
                }
            }
            watcher::Event::InitDone => {
                let wake = self.relisted();
                self.wake_all(wake);
                self.lock().listed = true;
            }
        }
    }

    /// Replaces the index with a relist's objects; returns the clusters whose
    /// derived values changed.
    fn relisted(&self) -> Vec<(Key, Vec<&'static str>)> {
        let mut inner = self.lock();
        let objects = inner.relist.take().unwrap_or_default();
        let before: HashMap<Key, Arc<Derived>> = inner
            .clusters
            .iter()
            .map(|(k, c)| (k.clone(), c.derived.clone()))
            .collect();
        let versions: HashMap<Key, u64> = inner
            .clusters
            .iter()
            .map(|(k, c)| (k.clone(), c.version))
            .collect();
        inner.clusters.clear();
        inner.cluster_of.clear();
        for s in &objects {
            let (key, cluster) = (key_of(s.as_ref()), cluster_key_of(s));
            inner
                .clusters
                .entry(cluster.clone())
                .or_default()
                .all
                .insert(s.name_any(), membership(s));
            inner.cluster_of.insert(key, cluster);
        }
        let mut changed = Vec::new();
        for (key, members) in inner.clusters.iter_mut() {
            members.derived = before.get(key).cloned().unwrap_or_default();
            members.version = versions.get(key).copied().unwrap_or(0);
            let name = key.split_once('/').map(|(_, n)| n).unwrap_or(key);
            let keys = members.recompute(name);
            if !keys.is_empty() {
                changed.push((key.clone(), keys));
            }
        }
        // Clusters left with no member lose their derived values.
        for (key, derived) in before {
            if !inner.clusters.contains_key(&key) && !derived.values.is_empty() {
                inner.clusters.insert(
                    key.clone(),
                    ClusterMembers {
                        version: versions.get(&key).copied().unwrap_or(0) + 1,
                        ..Default::default()
                    },
                );
            }
        }
        changed
    }

    fn wake_all(&self, changed: Vec<(Key, Vec<&'static str>)>) {
        for (cluster, keys) in changed {
            // Values the cluster sets itself are not the members' to change.
            let explicit = self
                .clusters
                .get(&cluster_ref(&cluster))
                .map(|c| explicit_derived_keys(&c.spec))
                .unwrap_or_default();
            if keys.iter().all(|k| explicit.contains(k)) {
                continue;
            }
            {
                let mut inner = self.lock();
                if inner.listed
                    && let Some(c) = inner.clusters.get_mut(&cluster)
                {
                    c.settling_until = Some(Instant::now() + SETTLE);
                }
            }
            let ns = cluster.split_once('/').map(|(n, _)| n).unwrap_or_default();
            for name in self.members(&cluster) {
                let _ = self.wake.unbounded_send(ObjectRef::new(&name).within(ns));
            }
        }
    }

    /// Names of the Servers referencing `cluster` (`namespace/name`).
    pub fn members(&self, cluster: &str) -> Vec<String> {
        self.lock()
            .clusters
            .get(cluster)
            .map(|c| c.all.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The members and derived parameters of `cluster` (`namespace/name`).
    pub fn snapshot(&self, cluster: &str) -> Snapshot {
        let inner = self.lock();
        match inner.clusters.get(cluster) {
            Some(c) => Snapshot {
                members: c.all.keys().cloned().collect(),
                derived: c.derived.clone(),
                version: c.version,
                settling: c
                    .settling_until
                    .and_then(|t| t.checked_duration_since(Instant::now()))
                    .filter(|d| !d.is_zero()),
            },
            None => Snapshot {
                members: Vec::new(),
                derived: Arc::default(),
                version: 0,
                settling: None,
            },
        }
    }

    /// Records `server` as it is now (a reconcile may see an object the watch
    /// has not delivered yet, e.g. right after its own write); returns
    /// whether its membership changed.
    pub fn refresh(&self, server: &Server) -> bool {
        let wake = self.lock().update(server);
        let changed = !wake.is_empty();
        self.wake_all(wake);
        changed
    }
}

impl Inner {
    /// Records `server`; returns the clusters whose derived values changed
    /// and which keys.
    fn update(&mut self, server: &Server) -> Vec<(Key, Vec<&'static str>)> {
        let key = key_of(server);
        let cluster = cluster_key_of(server);
        let new = membership(server);
        let mut changed = Vec::new();
        if let Some(old_cluster) = self.cluster_of.get(&key).cloned()
            && old_cluster != cluster
        {
            changed.extend(self.remove(&key));
        }
        let members = self.clusters.entry(cluster.clone()).or_default();
        let name = server.name_any();
        let same = members.all.get(&name) == Some(&new);
        if !same {
            members.all.insert(name, new);
            let cluster_name = server.spec.cluster_ref.name.clone();
            let keys = members.recompute(&cluster_name);
            if !keys.is_empty() {
                changed.push((cluster.clone(), keys));
            }
        }
        self.cluster_of.insert(key, cluster);
        changed
    }

    fn remove(&mut self, key: &Key) -> Vec<(Key, Vec<&'static str>)> {
        let Some(cluster) = self.cluster_of.remove(key) else {
            return Vec::new();
        };
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or(key);
        let Some(members) = self.clusters.get_mut(&cluster) else {
            return Vec::new();
        };
        members.all.remove(name);
        let cluster_name = cluster.split_once('/').map(|(_, n)| n).unwrap_or(&cluster);
        let keys = members.recompute(cluster_name);
        if keys.is_empty() {
            Vec::new()
        } else {
            vec![(cluster, keys)]
        }
    }
}

/// A Server's membership, or `None` while it is being deleted (it no
/// longer counts for derived parameters).
fn membership(server: &Server) -> Option<Membership> {
    if server.meta().deletion_timestamp.is_some() {
        return None;
    }
    let mut roles = server.spec.roles.clone();
    roles.sort();
    roles.dedup();
    Some(Membership {
        host: server.spec.host.clone(),
        roles,
    })
}

fn cluster_ref(key: &str) -> ObjectRef<Cluster> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    ObjectRef::new(name).within(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn server(name: &str, cluster: &str, host: &str, roles: &[Role]) -> Server {
        let mut s: Server = serde_json::from_value(serde_json::json!({
            "apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterRef": {"name": cluster}, "host": host, "roles": roles,
                     "provisioning": "External"}
        }))
        .expect("server");
        s.metadata.uid = Some(format!("uid-{name}"));
        s
    }

    type Rx = futures::channel::mpsc::UnboundedReceiver<ObjectRef<Server>>;

    fn fleet() -> (Fleet, Rx) {
        let (store, _writer) = reflector::store::<Cluster>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (Fleet::new(store, tx), rx)
    }

    fn drain(rx: &mut Rx) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r.name);
        }
        out.sort();
        out
    }

    #[test]
    fn derived_values_are_computed_once_and_siblings_woken_only_on_change() {
        let (fleet, mut rx) = fleet();
        let apply = |s: &Server| fleet.observe(&watcher::Event::Apply(s.clone()));
        apply(&server("c1", "lab", "10.0.0.1", &[Role::Controller]));
        let v1 = fleet.snapshot("ns/lab");
        assert_eq!(
            v1.derived.values["controller_nodes"].0,
            vec!["10.0.0.1".to_string()]
        );
        assert_eq!(drain(&mut rx), ["c1"]);
        apply(&server("a1", "lab", "10.0.0.2", &[Role::Agent]));
        assert_eq!(drain(&mut rx), ["a1", "c1"], "compute_nodes changed");
        // An unchanged membership (a status write, a parameter change) wakes
        // nobody and keeps the version.
        let v2 = fleet.snapshot("ns/lab").version;
        apply(&server("a1", "lab", "10.0.0.2", &[Role::Agent]));
        assert_eq!(drain(&mut rx), Vec::<String>::new());
        assert_eq!(fleet.snapshot("ns/lab").version, v2);
        // A role no derived key lists changes no value.
        apply(&server("lb1", "lab", "10.0.0.3", &[Role::Lb]));
        assert_eq!(drain(&mut rx), Vec::<String>::new());
        assert_eq!(fleet.snapshot("ns/lab").members, ["a1", "c1", "lb1"]);
        // Deletion (timestamp set) leaves the derived values.
        let mut gone = server("a1", "lab", "10.0.0.2", &[Role::Agent]);
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        apply(&gone);
        assert!(
            !fleet
                .snapshot("ns/lab")
                .derived
                .values
                .contains_key("compute_nodes")
        );
        assert_eq!(drain(&mut rx), ["a1", "c1", "lb1"]);
        // Moving to another cluster changes both.
        apply(&server("c1", "other", "10.0.0.1", &[Role::Controller]));
        assert!(
            !fleet
                .snapshot("ns/lab")
                .derived
                .values
                .contains_key("controller_nodes")
        );
        assert!(
            fleet
                .snapshot("ns/other")
                .derived
                .values
                .contains_key("controller_nodes")
        );
    }

    #[test]
    fn a_relist_rebuilds_and_wakes_only_changed_clusters() {
        let (fleet, mut rx) = fleet();
        fleet.observe(&watcher::Event::Apply(server(
            "c1",
            "lab",
            "10.0.0.1",
            &[Role::Controller],
        )));
        drain(&mut rx);
        fleet.observe(&watcher::Event::Init);
        fleet.observe(&watcher::Event::InitApply(server(
            "c1",
            "lab",
            "10.0.0.1",
            &[Role::Controller],
        )));
        fleet.observe(&watcher::Event::InitApply(server(
            "c2",
            "b",
            "10.0.0.9",
            &[Role::Agent],
        )));
        fleet.observe(&watcher::Event::InitDone);
        assert_eq!(drain(&mut rx), ["c2"]);
        assert_eq!(fleet.snapshot("ns/lab").members, ["c1"]);
    }
}
