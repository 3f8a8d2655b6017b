//! Durable storage and the change history.
//!
//! Every object lives in memory (for lists and watches) and in a redb database
//! (for durability). A write assigns the next global resourceVersion, commits
//! the object and the new resourceVersion in one redb transaction (fsynced
//! before the write is acknowledged), then records the change in the in-memory
//! window that watches replay and broadcasts it to open watches. The
//! resourceVersion is stored with the objects so it never goes backwards across a
//! restart; the change window starts empty after a restart, so older
//! resourceVersions get `410 Expired`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::broadcast;

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

/// The storage: memory + redb, behind one lock that serialises writes.
pub(super) struct Store {
    state: Mutex<State>,
}

/// The locked state; handlers hold it across read-modify-write.
pub(super) struct State {
    db: redb::Database,
    rv: u64,
    objects: Objects,
    history: VecDeque<Arc<Change>>,
    window: usize,
    /// Watches from a resourceVersion older than this are expired.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

fn db_key(res: &ResKey, ns: &str, name: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        res.group, res.resource, ns, name
    )
}

fn storage_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("storage: {e}"))
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
        let mut objects: Objects = HashMap::new();
        let rv;
        {
            let txn = db.begin_read().map_err(|e| se(&e))?;
            let meta = txn.open_table(META).map_err(|e| se(&e))?;
            rv = meta
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
        }
        let (tx, _) = broadcast::channel(window.clamp(16, 16384));
        Ok(Self {
            state: Mutex::new(State {
                db,
                rv,
                objects,
                history: VecDeque::new(),
                window: window.max(1),
                compacted: rv,
                tx,
            }),
        })
    }

    /// Locks the state (poisoning is ignored: every write is all-or-nothing).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
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
        let bytes = serde_json::to_vec(&object).map_err(storage_err)?;
        self.commit(rv, &db_key(res, ns, name), Some(&bytes))?;
        let obj = Arc::new(object);
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
        self.record(Change {
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
        self.commit(rv, &db_key(res, ns, name), None)?;
        if let Some(m) = self.objects.get_mut(res) {
            m.remove(&(ns.to_string(), name.to_string()));
        }
        let mut last = (*old).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let obj = Arc::new(last);
        self.record(Change {
            rv,
            res: res.clone(),
            namespace: ns.to_string(),
            change: ChangeType::Deleted,
            object: obj.clone(),
            previous: Some(old),
        });
        Ok(obj)
    }

    fn commit(&mut self, rv: u64, key: &str, value: Option<&[u8]>) -> Result<(), ApiError> {
        let mut txn = self.db.begin_write().map_err(storage_err)?;
        // Explicit: the write is on disk when commit returns.
        txn.set_durability(redb::Durability::Immediate)
            .map_err(storage_err)?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(storage_err)?;
            match value {
                Some(v) => {
                    table.insert(key, v).map_err(storage_err)?;
                }
                None => {
                    table.remove(key).map_err(storage_err)?;
                }
            }
            let mut meta = txn.open_table(META).map_err(storage_err)?;
            meta.insert(RV_KEY, rv).map_err(storage_err)?;
        }
        txn.commit().map_err(storage_err)?;
        self.rv = rv;
        Ok(())
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
