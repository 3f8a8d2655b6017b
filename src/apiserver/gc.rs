//! Garbage collection by `metadata.ownerReferences` and the deletion
//! propagation policies, as kube-controller-manager's garbage collector and
//! kube-apiserver's `DeleteOptions.propagationPolicy` behave (done at once,
//! under the store lock, rather than by a controller a moment later):
//! - `Background` (the default): the owner goes; then each dependent whose
//!   owners are all gone is deleted (and its own dependents in turn), and a
//!   dependent that still has another owner only loses the reference;
//! - `Foreground`: the owner gets a deletion timestamp and the
//!   `foregroundDeletion` finalizer, its dependents are deleted, and the owner
//!   goes once none of them is left (a dependent held by its own finalizers
//!   keeps the owner until it goes);
//! - `Orphan`: the owner gets the `orphan` finalizer, its dependents lose the
//!   reference to it, then the owner goes.
//!
//! Dependents are looked up in the owner's namespace (or everywhere for a
//! cluster-scoped owner), and only once any object with ownerReferences has
//! been stored since the server started (so servers that never use them pay
//! nothing).

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::handlers::Server;
use super::http::ApiError;
use super::meta;
use super::resources::{ResourceInfo, Special};
use super::store::{Obj, ResKey, State};

pub(super) const FOREGROUND: &str = "foregroundDeletion";
pub(super) const ORPHAN: &str = "orphan";

/// A `propagationPolicy`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    /// From the DeleteOptions body and the query (the query wins, as kube's
    /// decoding of DeleteOptions from parameters does for an empty body).
    pub fn from_request(opts: &Value, query: Option<&str>) -> Result<Self, ApiError> {
        let v = query.or_else(|| opts["propagationPolicy"].as_str());
        match v {
            None | Some("") => Ok(match opts["orphanDependents"].as_bool() {
                Some(true) => Propagation::Orphan,
                _ => Propagation::Background,
            }),
            Some("Background") => Ok(Propagation::Background),
            Some("Foreground") => Ok(Propagation::Foreground),
            Some("Orphan") => Ok(Propagation::Orphan),
            Some(other) => Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &[super::http::FieldError::new(
                    "propagationPolicy",
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            )),
        }
    }
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

impl Server {
    /// Notes that objects with ownerReferences exist (turns collection on).
    pub(super) fn note_owners(&self, obj: &Value) {
        if !owner_refs(obj).is_empty() {
            self.gc_active.store(true, Ordering::Relaxed);
        }
    }

    fn resource_for(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.all_resources()
            .into_iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .or_else(|| {
                // Another version of the same group and kind shares the storage.
                let group = api_version.rsplit_once('/').map(|g| g.0).unwrap_or("");
                self.all_resources()
                    .into_iter()
                    .find(|r| r.group == group && r.kind == kind)
            })
    }

    /// Objects that name `uid` among their owners: (resource, namespace, object).
    fn dependents(&self, st: &State, owner: &Value) -> Vec<(ResourceInfo, String, Obj)> {
        if !self.gc_active.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let Some(uid) = meta::meta_str(owner, "uid") else {
            return Vec::new();
        };
        let owner_ns = meta::meta_str(owner, "namespace").unwrap_or("");
        let all: Vec<ResourceInfo> = self
            .all_resources()
            .into_iter()
            .filter(|r| r.special != Special::EventV1 && r.special != Special::Review)
            .collect();
        let names_owner = |o: &Value| owner_refs(o).iter().any(|r| r["uid"].as_str() == Some(uid));
        let mut out = Vec::new();
        if owner_ns.is_empty() {
            let mut seen: Vec<ResKey> = Vec::new();
            for r in &all {
                if seen.contains(&r.storage) {
                    continue;
                }
                seen.push(r.storage.clone());
                for o in st.list(&r.storage, None) {
                    if names_owner(&o) {
                        let ns = meta::meta_str(&o, "namespace").unwrap_or("").to_string();
                        out.push((r.clone(), ns, o));
                    }
                }
            }
        } else {
            for (key, name) in st.keys_in_namespace(owner_ns) {
                let Some(o) = st.get(&key, owner_ns, &name) else {
                    continue;
                };
                if names_owner(&o)
                    && let Some(r) = all.iter().find(|r| r.storage == key)
                {
                    out.push((r.clone(), owner_ns.to_string(), o));
                }
            }
        }
        out
    }

    /// Whether the owner an ownerReference names exists (same uid).
    fn owner_exists(&self, st: &State, dependent_ns: &str, r: &Value) -> bool {
        let (Some(api_version), Some(kind), Some(name)) = (
            r["apiVersion"].as_str(),
            r["kind"].as_str(),
            r["name"].as_str(),
        ) else {
            return false;
        };
        let Some(info) = self.resource_for(api_version, kind) else {
            return false;
        };
        let ns = if info.namespaced { dependent_ns } else { "" };
        st.get(&info.storage, ns, name)
            .is_some_and(|o| meta::meta_str(&o, "uid") == r["uid"].as_str())
    }

    /// Drops the references to `owner_uid` from a dependent.
    fn strip_ref(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        dep: &Obj,
        owner_uid: &str,
    ) -> Result<(), ApiError> {
        let mut new = (**dep).clone();
        let kept: Vec<Value> = owner_refs(dep)
            .into_iter()
            .filter(|r| r["uid"].as_str() != Some(owner_uid))
            .collect();
        if let Some(m) = meta::meta_mut(&mut new) {
            if kept.is_empty() {
                m.remove("ownerReferences");
            } else {
                m.insert("ownerReferences".into(), Value::Array(kept));
            }
        }
        let name = meta::meta_str(dep, "name").unwrap_or("").to_string();
        st.put(&info.storage, ns, &name, new)?;
        Ok(())
    }

    /// After `removed` left the store: collect its dependents (background),
    /// and let an owner waiting in foreground deletion go once its last
    /// dependent is gone.
    pub(super) fn collect_garbage(&self, st: &mut State, removed: &Value) -> Result<(), ApiError> {
        let uid = meta::meta_str(removed, "uid").unwrap_or("").to_string();
        for (info, ns, dep) in self.dependents(st, removed) {
            // It may have gone meanwhile (deleted as another's dependent).
            let name = meta::meta_str(&dep, "name").unwrap_or("").to_string();
            let Some(dep) = st.get(&info.storage, &ns, &name) else {
                continue;
            };
            let other_owner = owner_refs(&dep)
                .iter()
                .filter(|r| r["uid"].as_str() != Some(uid.as_str()))
                .any(|r| self.owner_exists(st, &ns, r));
            if other_owner {
                self.strip_ref(st, &info, &ns, &dep, &uid)?;
            } else if !meta::deleting(&dep) {
                self.delete_locked(st, &info, &ns, &name, &dep)?;
            }
        }
        let ns = meta::meta_str(removed, "namespace")
            .unwrap_or("")
            .to_string();
        for r in owner_refs(removed) {
            let (Some(api_version), Some(kind), Some(name)) = (
                r["apiVersion"].as_str(),
                r["kind"].as_str(),
                r["name"].as_str(),
            ) else {
                continue;
            };
            let Some(info) = self.resource_for(api_version, kind) else {
                continue;
            };
            let ons = if info.namespaced { ns.as_str() } else { "" };
            if let Some(owner) = st.get(&info.storage, ons, name)
                && meta::deleting(&owner)
                && meta::finalizers(&owner).iter().any(|f| f == FOREGROUND)
            {
                self.finish_foreground(st, &info, ons, &owner)?;
            }
        }
        Ok(())
    }

    /// Removes the `foregroundDeletion` finalizer once no dependent is left
    /// (and the owner itself once no finalizer is left).
    fn finish_foreground(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        owner: &Obj,
    ) -> Result<(), ApiError> {
        if !self.dependents(st, owner).is_empty() {
            return Ok(());
        }
        self.drop_finalizer(st, info, ns, owner, FOREGROUND)
    }

    fn drop_finalizer(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        owner: &Obj,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        let name = meta::meta_str(owner, "name").unwrap_or("").to_string();
        let rest: Vec<String> = meta::finalizers(owner)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        if rest.is_empty() && !matches!(info.special, Special::Namespace | Special::Crd) {
            let last = st.remove(&info.storage, ns, &name)?;
            self.after_remove(st, info, ns)?;
            return self.collect_garbage(st, &last);
        }
        let mut new = (**owner).clone();
        new["metadata"]["finalizers"] = serde_json::json!(rest);
        st.put(&info.storage, ns, &name, new)?;
        Ok(())
    }

    /// `DELETE` with `Foreground` or `Orphan`: marks the owner (deletion
    /// timestamp and the policy's finalizer), deletes or orphans the
    /// dependents, and removes the owner when nothing holds it. Answers the
    /// marked owner, as kube-apiserver does.
    pub(super) fn delete_propagating(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        old: &Obj,
        policy: Propagation,
    ) -> Result<Value, ApiError> {
        let name = meta::meta_str(old, "name").unwrap_or("").to_string();
        let finalizer = if policy == Propagation::Foreground {
            FOREGROUND
        } else {
            ORPHAN
        };
        let mut marked = (**old).clone();
        if !meta::deleting(old) {
            marked["metadata"]["deletionTimestamp"] = meta::now().into();
            marked["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            if info.generation {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                marked["metadata"]["generation"] = g.into();
            }
        }
        let mut finalizers = meta::finalizers(old);
        if !finalizers.iter().any(|f| f == finalizer) {
            finalizers.push(finalizer.to_string());
        }
        marked["metadata"]["finalizers"] = serde_json::json!(finalizers);
        let marked = st.put(&info.storage, ns, &name, marked)?;
        let answer = super::handlers::to_view(info, &marked);
        let uid = meta::meta_str(old, "uid").unwrap_or("").to_string();
        for (dinfo, dns, dep) in self.dependents(st, old) {
            let dname = meta::meta_str(&dep, "name").unwrap_or("").to_string();
            let Some(dep) = st.get(&dinfo.storage, &dns, &dname) else {
                continue;
            };
            if policy == Propagation::Orphan {
                self.strip_ref(st, &dinfo, &dns, &dep, &uid)?;
            } else if !meta::deleting(&dep) {
                self.delete_locked(st, &dinfo, &dns, &dname, &dep)?;
            }
        }
        if let Some(current) = st.get(&info.storage, ns, &name) {
            if policy == Propagation::Orphan {
                self.drop_finalizer(st, info, ns, &current, ORPHAN)?;
            } else {
                self.finish_foreground(st, info, ns, &current)?;
            }
        }
        Ok(answer)
    }
}
