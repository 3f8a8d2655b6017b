//! Durable storage and the change history.
//!
//! Every object lives in memory (for lists and watches) and in a redb database
//! (for durability). A write, under the store lock, assigns the next global
//! resourceVersion, updates memory and queues the change; the committer thread
//! writes every queued change in one redb transaction (group commit: the
//! writes that arrive while a transaction is being fsynced share the next one),
//! and only once it is durable records the changes in the window that watches
//! replay and broadcasts them to open watches. A request is answered only once
//! everything it saw or wrote is durable ([`Store::durable`]), so no client
//! ever sees a write that a crash could lose. The resourceVersion is stored with
//! the objects so it never goes backwards across a restart; the change window
//! starts empty after a restart, so older resourceVersions get `410 Expired`.
//!
//! If a transaction fails, every write queued since the last durable one is
//! answered 500, memory is reloaded from the database, and the next writes
//! go on from there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::StartError;
use super::http::ApiError;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RV_KEY: &str = "resourceVersion";

/// A stored object.
pub(super) type Obj = Arc<Value>;

/// Identifies a stored resource: its API group and plural name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(super) struct ResKey {
    pub group: String,
    pub resource: String,
}

impl ResKey {
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

/// The kind of a change, as watch events name it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug)]
pub(super) struct Change {
    pub rv: u64,
    pub res: ResKey,
    pub namespace: String,
    pub change: ChangeType,
    /// The new state (the last state for a deletion, at the new resourceVersion).
    pub object: Obj,
    /// The state before, if any (to turn selector transitions into ADDED/DELETED).
    pub previous: Option<Obj>,
}

type Objects = HashMap<ResKey, BTreeMap<(String, String), Obj>>;

/// The storage: memory + redb, behind one lock that serialises writes, and
/// the committer thread that makes them durable in groups.
pub(super) struct Store {
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
}

/// What the handlers and the committer share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a write is queued (or the store closes).
    queued: Arc<Condvar>,
    /// The latest resourceVersion assigned (readable without the lock).
    assigned: Arc<AtomicU64>,
    progress: watch::Sender<Progress>,
}

/// How far the committer got.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// Every write up to this resourceVersion is durable.
    durable: u64,
    /// Ranges of resourceVersions whose transaction failed (rare: each is a
    /// storage error), with the error.
    failed: Vec<(u64, u64, String)>,
}

impl Progress {
    fn failure(&self, rv: u64) -> Option<&str> {
        self.failed
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&rv))
            .map(|(_, _, e)| e.as_str())
    }
}

/// A queued write: the database key and the new value (`None`: removed).
type Pending = (String, Option<Obj>);

/// The locked state; handlers hold it across read-modify-write.
pub(super) struct State {
    rv: u64,
    objects: Objects,
    history: VecDeque<Arc<Change>>,
    window: usize,
    /// Watches from a resourceVersion older than this are expired.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
    /// Writes not yet handed to the committer, and their changes (recorded
    /// and broadcast once durable).
    pending: Vec<Pending>,
    pending_changes: Vec<Change>,
    /// Every write up to here is durable.
    durable: u64,
    closing: bool,
    /// [`Shared::queued`] and [`Shared::assigned`].
    wake: Arc<Condvar>,
    assigned: Arc<AtomicU64>,
}

fn db_key(res: &ResKey, ns: &str, name: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        res.group, res.resource, ns, name
    )
}

impl Store {
    /// Opens (or creates) `DIR/objects.redb` and loads every object.
    pub fn open(dir: &Path, window: usize) -> Result<Self, StartError> {
        let se = |e: &dyn std::fmt::Display| StartError::Storage(e.to_string());
        let db = redb::Database::create(dir.join("objects.redb")).map_err(|e| se(&e))?;
        {
            let txn = db.begin_write().map_err(|e| se(&e))?;
            txn.open_table(OBJECTS).map_err(|e| se(&e))?;
            txn.open_table(META).map_err(|e| se(&e))?;
            txn.commit().map_err(|e| se(&e))?;
        }
        let (rv, objects) = load(&db).map_err(|e| se(&e))?;
        let (tx, _) = broadcast::channel(window.clamp(16, 16384));
        let queued = Arc::new(Condvar::new());
        let assigned = Arc::new(AtomicU64::new(rv));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv,
                objects,
                history: VecDeque::new(),
                window: window.max(1),
                compacted: rv,
                tx,
                pending: Vec::new(),
                pending_changes: Vec::new(),
                durable: rv,
                closing: false,
                wake: queued.clone(),
                assigned: assigned.clone(),
            }),
            queued,
            assigned,
            progress: watch::Sender::new(Progress {
                durable: rv,
                failed: Vec::new(),
            }),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("apiserver-commit".into())
                .spawn(move || commit_loop(&shared, db))
                .map_err(|e| StartError::Thread(e.to_string()))?
        };
        Ok(Self {
            shared,
            committer: Some(committer),
        })
    }

    /// Locks the state (poisoning is ignored: every write is all-or-nothing).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The latest resourceVersion assigned: what a request that just released
    /// the lock may have seen or written.
    pub fn assigned(&self) -> u64 {
        self.shared.assigned.load(Ordering::Acquire)
    }

    /// Waits until every write up to `rv` is durable; an error if the
    /// transaction holding one of them failed.
    pub async fn durable(&self, rv: u64) -> Result<(), ApiError> {
        let mut rx = self.shared.progress.subscribe();
        let p = rx
            .wait_for(|p| p.durable >= rv || p.failure(rv).is_some())
            .await
            .map_err(|_| ApiError::internal("storage: the committer stopped".into()))?;
        match p.failure(rv) {
            Some(e) => Err(ApiError::internal(format!("storage: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    /// Commits what is queued, then stops the committer (which closes the
    /// database, so the same directory can be opened again).
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.queued.notify_all();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the stored resourceVersion and every object.
fn load(db: &redb::Database) -> Result<(u64, Objects), String> {
    let se = |e: &dyn std::fmt::Display| e.to_string();
    let mut objects: Objects = HashMap::new();
    let txn = db.begin_read().map_err(|e| se(&e))?;
    let meta = txn.open_table(META).map_err(|e| se(&e))?;
    let rv = meta
        .get(RV_KEY)
        .map_err(|e| se(&e))?
        .map(|v| v.value())
        .unwrap_or(0);
    let table = txn.open_table(OBJECTS).map_err(|e| se(&e))?;
    for entry in table.iter().map_err(|e| se(&e))? {
        let (k, v) = entry.map_err(|e| se(&e))?;
        let parts: Vec<&str> = k.value().split('\u{1f}').collect();
        if parts.len() != 4 {
            continue;
        }
        let value: Value = serde_json::from_slice(v.value()).map_err(|e| se(&e))?;
        objects
            .entry(ResKey::new(parts[0], parts[1]))
            .or_default()
            .insert(
                (parts[2].to_string(), parts[3].to_string()),
                Arc::new(value),
            );
    }
    Ok((rv, objects))
}

/// Writes one group of changes and the resourceVersion in one transaction,
/// fsynced before it returns.
fn write_group(db: &redb::Database, group: &[Pending], rv: u64) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut txn = db.begin_write().map_err(|x| e(&x))?;
    // Explicit: the group is on disk when commit returns.
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|x| e(&x))?;
    {
        let mut table = txn.open_table(OBJECTS).map_err(|x| e(&x))?;
        for (key, value) in group {
            match value {
                Some(v) => {
                    let bytes = serde_json::to_vec(&**v).map_err(|x| e(&x))?;
                    table
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(|x| e(&x))?;
                }
                None => {
                    table.remove(key.as_str()).map_err(|x| e(&x))?;
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(|x| e(&x))?;
        meta.insert(RV_KEY, rv).map_err(|x| e(&x))?;
    }
    txn.commit().map_err(|x| e(&x))
}

/// The committer: takes every queued write, commits them in one transaction,
/// then publishes them (history, watches, waiting requests); repeats until the
/// store closes with nothing queued.
fn commit_loop(shared: &Shared, db: redb::Database) {
    loop {
        let (group, changes, rv) = {
            let mut st = shared.lock();
            while st.pending.is_empty() && !st.closing {
                st = shared.queued.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.pending.is_empty() {
                return;
            }
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.pending_changes),
                st.rv,
            )
        };
        let result = write_group(&db, &group, rv);
        drop(group);
        let mut st = shared.lock();
        match result {
            Ok(()) => {
                for c in changes {
                    st.record(c);
                }
                st.durable = rv;
                drop(st);
                shared.progress.send_modify(|p| p.durable = rv);
            }
            Err(e) => {
                // Everything after the last durable write fails (later queued
                // writes were made on top of the failed ones); memory goes
                // back to what is on disk. ResourceVersions stay assigned.
                tracing::error!(error = %e, "storage: a transaction failed");
                let lo = st.durable + 1;
                let hi = st.rv;
                st.pending.clear();
                st.pending_changes.clear();
                match load(&db) {
                    Ok((_, objects)) => st.objects = objects,
                    Err(e) => tracing::error!(error = %e, "storage: reloading failed"),
                }
                st.durable = hi;
                drop(st);
                shared.progress.send_modify(|p| {
                    p.failed.push((lo, hi, e));
                    p.durable = hi;
                });
            }
        }
    }
}

impl State {
    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Every write up to this resourceVersion is durable (and recorded in the
    /// change window).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, res: &ResKey, ns: &str, name: &str) -> Option<Obj> {
        self.objects
            .get(res)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of `res`, in one namespace or all, sorted by namespace then name.
    pub fn list(&self, res: &ResKey, ns: Option<&str>) -> Vec<Obj> {
        let Some(map) = self.objects.get(res) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => map.values().cloned().collect(),
        }
    }

    /// Number of objects of `res` in namespace `ns`.
    pub fn count_in_namespace(&self, ns: &str) -> usize {
        self.objects
            .iter()
            .filter(|(k, _)| !(k.group.is_empty() && k.resource == "namespaces"))
            .map(|(_, m)| {
                m.range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .count()
            })
            .sum()
    }

    /// Every resource that has objects in namespace `ns`, with their names.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<(ResKey, String)> {
        let mut out = Vec::new();
        for (k, m) in &self.objects {
            if k.group.is_empty() && k.resource == "namespaces" {
                continue;
            }
            for ((n, name), _) in m.range((ns.to_string(), String::new())..) {
                if n != ns {
                    break;
                }
                out.push((k.clone(), name.clone()));
            }
        }
        out
    }

    /// Subscribes to changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes with a resourceVersion above `rv` still in the window.
    pub fn history_after(&self, rv: u64) -> Vec<Arc<Change>> {
        let start = self.history.partition_point(|c| c.rv <= rv);
        self.history.iter().skip(start).cloned().collect()
    }

    /// Stores `object` (its `metadata.resourceVersion` is set here) and returns it.
    pub fn put(
        &mut self,
        res: &ResKey,
        ns: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Obj, ApiError> {
        let rv = self.rv + 1;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let obj = Arc::new(object);
        self.queue(rv, db_key(res, ns, name), Some(obj.clone()));
        let previous = self
            .objects
            .entry(res.clone())
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj.clone());
        let change = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.pending_changes.push(Change {
            rv,
            res: res.clone(),
            namespace: ns.to_string(),
            change,
            object: obj.clone(),
            previous,
        });
        Ok(obj)
    }

    /// Removes an object; the DELETED event carries its last state at a new
    /// resourceVersion, which is returned.
    pub fn remove(&mut self, res: &ResKey, ns: &str, name: &str) -> Result<Obj, ApiError> {
        let Some(old) = self.get(res, ns, name) else {
            return Err(ApiError::internal("remove of a missing object".into()));
        };
        let rv = self.rv + 1;
        self.queue(rv, db_key(res, ns, name), None);
        if let Some(m) = self.objects.get_mut(res) {
            m.remove(&(ns.to_string(), name.to_string()));
        }
        let mut last = (*old).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let obj = Arc::new(last);
        self.pending_changes.push(Change {
            rv,
            res: res.clone(),
            namespace: ns.to_string(),
            change: ChangeType::Deleted,
            object: obj.clone(),
            previous: Some(old),
        });
        Ok(obj)
    }

    /// Queues one write for the committer at resourceVersion `rv`.
    fn queue(&mut self, rv: u64, key: String, value: Option<Obj>) {
        self.rv = rv;
        self.pending.push((key, value));
        self.wake.notify_one();
        self.assigned.store(rv, Ordering::Release);
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.window {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_published_once_durable_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let res = ResKey::new("", "configmaps");
        let rv;
        {
            let store = Store::open(dir.path(), 100).unwrap();
            let mut rx = store.lock().subscribe();
            // Concurrent writers: each waits for its own write to be durable.
            let store = Arc::new(store);
            let mut tasks = Vec::new();
            for w in 0..4 {
                let store = store.clone();
                let res = res.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let name = format!("c-{w}-{i}");
                        let mine = {
                            let mut st = store.lock();
                            st.put(&res, "default", &name, cm(&name)).unwrap();
                            st.rv()
                        };
                        store.durable(mine).await.unwrap();
                        assert!(store.lock().durable() >= mine);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            rv = store.lock().rv();
            assert_eq!(rv, 100);
            // Every change was broadcast once, in resourceVersion order.
            let mut seen = Vec::new();
            while let Ok(c) = rx.try_recv() {
                seen.push(c.rv);
            }
            assert_eq!(seen, (1..=100).collect::<Vec<_>>());
            assert_eq!(store.lock().history_after(0).len(), 100);
            // A removal queued last is committed by the drop.
            store.lock().remove(&res, "default", "c-0-0").unwrap();
        }
        let store = Store::open(dir.path(), 100).unwrap();
        let st = store.lock();
        assert_eq!(st.rv(), rv + 1);
        assert_eq!(st.list(&res, Some("default")).len(), 99);
        assert!(st.get(&res, "default", "c-0-0").is_none());
        let stored: u64 = st.get(&res, "default", "c-3-24").unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=rv).contains(&stored));
    }
}
