//! One event store, two APIs: events are stored as `v1` Events and seen through
//! `events.k8s.io/v1` with kube-apiserver's field conversion (`regarding` ↔
//! `involvedObject`, `note` ↔ `message`, `reportingController` ↔
//! `reportingComponent`, `deprecated*` ↔ `source`/`firstTimestamp`/…).

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field)
const FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("action", "action"),
    ("reason", "reason"),
    ("type", "type"),
    ("related", "related"),
];

fn convert(obj: &Value, to_v1: bool, api_version: &str) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), "Event".into());
    out.insert("apiVersion".into(), api_version.into());
    let Some(src) = obj.as_object() else {
        return Value::Object(out);
    };
    for (v1, core) in FIELDS {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = src.get(*from)
            && !v.is_null()
        {
            out.insert((*to).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// Stored (core/v1) → events.k8s.io/v1.
pub(super) fn to_v1(core: &Value) -> Value {
    convert(core, true, "events.k8s.io/v1")
}

/// events.k8s.io/v1 → stored (core/v1).
pub(super) fn from_v1(v1: &Value) -> Value {
    let mut core = convert(v1, false, "v1");
    // kubectl describe shows "From" from source.component.
    if core.get("source").is_none()
        && let Some(c) = core.get("reportingComponent").cloned()
    {
        core["source"] = serde_json::json!({ "component": c });
    }
    core
}
