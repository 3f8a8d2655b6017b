//! Patch types: JSON patch (with kube-apiserver's `test`-on-missing-path quirk),
//! JSON merge patch, strategic merge patch (for built-in kinds) and a
//! server-side-apply approximation.

use serde_json::{Map, Value};

use super::http::ApiError;

/// The patch types kube-apiserver accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies an RFC 6902 patch. A `test` whose path does not exist passes when
/// the expected value is null, as in kube-apiserver (evanphx/json-patch); the
/// kube-rs finalizer helper relies on it.
pub(super) fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    let mut kept = Vec::new();
    for op in ops {
        let is_test = op.get("op").and_then(Value::as_str) == Some("test");
        if is_test {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let expected = op.get("value").unwrap_or(&Value::Null);
            if expected.is_null() && doc_after(doc, &kept, path)?.is_none() {
                continue;
            }
        }
        kept.push(op.clone());
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(kept))
        .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })?;
    Ok(out)
}

/// The value at `path` after the operations kept so far.
fn doc_after(doc: &Value, ops: &[Value], path: &str) -> Result<Option<Value>, ApiError> {
    if ops.is_empty() {
        return Ok(doc.pointer(path).cloned());
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec()))
        .map_err(|e| ApiError::bad_request(format!("invalid json patch: {e}")))?;
    let mut d = doc.clone();
    json_patch::patch(&mut d, &patch).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
    Ok(d.pointer(path).cloned())
}

/// RFC 7386 merge patch.
pub(super) fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// The merge key of a list field, for strategic merge patch.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "hostAliases" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "tolerations" => "key",
        _ => return None,
    })
}

/// Primitive lists merged (not replaced) by strategic merge patch.
fn merged_primitive_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Strategic merge patch, with the directives kubectl sends (`$patch`,
/// `$retainKeys`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).
pub(super) fn strategic_merge(doc: &Value, patch: &Value) -> Value {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => Value::Object(smp_object(d, p)),
        _ => strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn smp_object(doc: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        return match strip_directives(&Value::Object(patch.clone())) {
            Value::Object(o) => o,
            _ => Map::new(),
        };
    }
    let mut out = doc.clone();
    if let Some(keys) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), pv) {
            (Some(Value::Object(d)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(k);
                    continue;
                }
                Value::Object(smp_object(d, p))
            }
            (Some(Value::Array(d)), Value::Array(p)) => smp_list(k, d, p),
            _ => strip_directives(pv),
        };
        out.insert(k.clone(), merged);
    }
    out
}

fn smp_list(field: &str, doc: &[Value], patch: &[Value]) -> Value {
    if merged_primitive_list(field) {
        let mut out: Vec<Value> = doc.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(field) else {
        return Value::Array(patch.iter().map(strip_directives).collect());
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
    }
    let mut out: Vec<Value> = doc.to_vec();
    for p in patch {
        let id = p.get(key);
        let pos = out.iter().position(|d| d.get(key) == id && id.is_some());
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, p) {
            (Some(i), _) if delete => {
                out.remove(i);
            }
            (Some(i), Value::Object(po)) => {
                if let Value::Object(d) = &out[i] {
                    out[i] = Value::Object(smp_object(d, po));
                }
            }
            (None, _) if delete => {}
            _ => out.push(strip_directives(p)),
        }
    }
    Value::Array(out)
}

/// Server-side apply, approximated: the applied configuration is merged into the
/// live object (maps merged recursively, lists replaced, nulls ignored).
/// Field ownership (managedFields, conflicts, removal of fields a manager stops
/// applying) is not tracked yet.
pub(super) fn apply(doc: &Value, applied: &Value) -> Value {
    match (doc, applied) {
        (Value::Object(d), Value::Object(a)) => {
            let mut out = d.clone();
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let merged = match out.get(k) {
                    Some(existing) => apply(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, a) => a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_test_on_a_missing_path_equals_null() {
        let doc = json!({"metadata": {"name": "a"}});
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                       {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        let out = json_patch(&doc, &p).expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let p = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert!(json_patch(&out, &p).is_err(), "present value is not null");
    }

    #[test]
    fn strategic_merge_merges_lists_by_key_and_honours_directives() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
                         "metadata": {"finalizers": ["f1"]}, "data": {"k": "v", "z": "1"}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]},
                           "metadata": {"finalizers": ["f2"]}, "data": {"z": null}});
        let out = strategic_merge(&doc, &patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b", "image": "z"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        assert_eq!(out["data"], json!({"k": "v"}));
    }
}
