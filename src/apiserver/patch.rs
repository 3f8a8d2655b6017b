//! Patch types: JSON patch (with kube-apiserver's `test`-on-missing-path quirk),
//! JSON merge patch, strategic merge patch (for built-in kinds) and server-side
//! apply with per-applier field ownership in `metadata.managedFields`
//! (removal of fields an applier stops applying, conflicts unless `force`).
//! Non-apply writes own the fields they change (`Update` entries,
//! [`record_update`]). Not yet: list merge keys inside apply (lists are atomic).

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

/// Equality of JSON values as structured-merge-diff compares them: numbers
/// by value, so `1000` and `1000.0` are the same (a float field written by a
/// typed client and an integer written from YAML).
fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_json(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(f), Some(g)) if f == g)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Merges an applied configuration into the live object (maps merged
/// recursively, lists replaced, nulls ignored); ownership is [`apply_owned`]'s.
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

/// A field path (object keys from the root).
type FieldPath = Vec<String>;

/// The leaf paths an applied configuration sets (lists are atomic leaves).
fn field_set(v: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                prefix.push(k.clone());
                field_set(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Null => {}
        _ => out.push(prefix.clone()),
    }
}

/// The fields of an apply body that a manager owns (not apiVersion, kind,
/// name, namespace; only `status` through the status subresource).
fn owned_fields(applied: &Value, status_only: bool) -> Vec<FieldPath> {
    let mut out = Vec::new();
    field_set(applied, &mut Vec::new(), &mut out);
    out.retain(|p| {
        let first = p.first().map(String::as_str).unwrap_or("");
        let ident = matches!(first, "apiVersion" | "kind")
            || (first == "metadata"
                && matches!(
                    p.get(1).map(String::as_str),
                    Some(
                        "name"
                            | "namespace"
                            | "resourceVersion"
                            | "managedFields"
                            | "uid"
                            | "creationTimestamp"
                            | "generation"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                    )
                ));
        !ident && ((first == "status") == status_only)
    });
    out
}

/// FieldsV1 (`{"f:spec":{"f:x":{}}}`) from paths.
fn to_fields_v1(paths: &[FieldPath]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for k in p {
            let entry = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// Paths back from FieldsV1.
fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
    let Some(o) = v.as_object() else {
        return;
    };
    let children: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k[2..].to_string());
        from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(last);
    }
}

/// Server-side apply with per-manager ownership of the applied fields: the
/// applied configuration is merged into the live object (maps recursively,
/// lists replaced), fields this manager applied before but no longer applies
/// are removed unless another applier owns them, and the manager's entry in
/// `metadata.managedFields` records what it owns. A field another applier owns
/// and this apply would change is a conflict (409) unless `force`, which takes
/// it over; fields owned by `Update` entries of other managers conflict too.
/// List merge keys are not modelled (lists are atomic).
pub(super) fn apply_owned(
    live: &Value,
    applied: &Value,
    manager: &str,
    subresource: Option<&str>,
    time: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let status_only = subresource == Some("status");
    let mut entries: Vec<Value> = live
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut before = Vec::new();
    let mut others: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut set = Vec::new();
        from_fields_v1(
            e.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut set,
        );
        if is_mine(e) {
            before = set;
        } else if e.get("manager").and_then(Value::as_str) != Some(manager) {
            // Appliers and updaters alike own what they set.
            others.extend(set.into_iter().map(|p| (i, p)));
        }
    }
    let now = owned_fields(applied, status_only);
    let at = |v: &Value, p: &FieldPath| -> Option<Value> {
        let mut cur = v;
        for k in p {
            cur = cur.get(k)?;
        }
        Some(cur.clone())
    };
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for p in &now {
        for (i, o) in &others {
            if o == p && !same_value(at(live, p).as_ref(), at(applied, p).as_ref()) {
                conflicts.push((*i, p.clone()));
            }
        }
    }
    // kube-apiserver's wording: updaters are shown with their apiVersion.
    let manager_of = |i: usize| -> String {
        let e = &entries[i];
        let name = e.get("manager").and_then(Value::as_str).unwrap_or("");
        match (
            e.get("operation").and_then(Value::as_str),
            e.get("apiVersion").and_then(Value::as_str),
        ) {
            (Some("Update"), Some(v)) => format!("{name}\" using {v}"),
            _ => format!("{name}\""),
        }
    };
    if !conflicts.is_empty() && !force {
        let shown: Vec<String> = conflicts
            .iter()
            .map(|(i, p)| format!("conflict with \"{}: .{}", manager_of(*i), p.join(".")))
            .collect();
        let n = conflicts.len();
        let plural = if n == 1 { "" } else { "s" };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(i, p)| {
                serde_json::json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with \"{}", manager_of(*i)),
                    "field": format!(".{}", p.join(".")),
                })
            })
            .collect();
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {n} conflict{plural}: {}",
                shown.join("\n")
            ),
        )
        .with_details(serde_json::json!({ "causes": causes })));
    }
    // Forced: the other managers lose the fields taken over.
    for (i, p) in &conflicts {
        let mut set = Vec::new();
        from_fields_v1(
            entries[*i].get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut set,
        );
        set.retain(|q| q != p);
        if let Some(e) = entries.get_mut(*i).and_then(Value::as_object_mut) {
            e.insert("fieldsV1".into(), to_fields_v1(&set));
        }
    }
    let others: Vec<FieldPath> = others
        .into_iter()
        .filter(|(i, p)| !conflicts.iter().any(|(j, q)| i == j && p == q))
        .map(|(_, p)| p)
        .collect();
    let mut out = apply(live, applied);
    for p in before {
        let still = now.iter().any(|n| n.starts_with(&p) || p.starts_with(n));
        let shared = others.iter().any(|o| o.starts_with(&p) || p.starts_with(o));
        if !still && !shared {
            remove_path(&mut out, &p);
        }
    }
    let fields = to_fields_v1(&now);
    let api_version = applied.get("apiVersion").cloned().unwrap_or(Value::Null);
    let unchanged = entries.iter().any(|e| {
        is_mine(e)
            && e.get("fieldsV1") == Some(&fields)
            && e.get("apiVersion") == Some(&api_version)
    });
    // An apply that changes nothing keeps its entry (and time): no write.
    if !unchanged {
        entries.retain(|e| !is_mine(e));
        let mut entry = serde_json::json!({
            "manager": manager, "operation": "Apply", "apiVersion": api_version,
            "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields,
        });
        if let Some(s) = subresource {
            entry["subresource"] = s.into();
        }
        entries.push(entry);
    }
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("managedFields".into(), Value::Array(entries));
    }
    Ok(out)
}

fn value_at<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for k in p {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// Records a non-apply write (create, update, patch) in `managedFields` as
/// kube-apiserver does: `manager` (operation `Update`) becomes the owner of
/// every field it changed or added, other managers lose those fields and every
/// manager loses fields the write removed. A write that changes no field
/// leaves `managedFields` alone (so no-op writes stay no-ops).
pub(super) fn record_update(
    old: &Value,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    time: &str,
) {
    let status_only = subresource == Some("status");
    let old_set = owned_fields(old, status_only);
    let new_set = owned_fields(new, status_only);
    let changed: Vec<FieldPath> = new_set
        .into_iter()
        .filter(|p| value_at(old, p) != value_at(new, p))
        .collect();
    let removed: Vec<FieldPath> = old_set
        .into_iter()
        .filter(|p| value_at(new, p).is_none())
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let touches = |p: &FieldPath, q: &FieldPath| p.starts_with(q) || q.starts_with(p);
    let entries: Vec<Value> = new
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut mine: Vec<FieldPath> = Vec::new();
    let mut kept: Vec<Value> = Vec::new();
    for mut e in entries {
        let mut set = Vec::new();
        from_fields_v1(
            e.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut set,
        );
        set.retain(|p| {
            !changed.iter().any(|c| touches(p, c)) && !removed.iter().any(|r| touches(p, r))
        });
        if is_mine(&e) {
            mine = set;
            continue;
        }
        let before = e.get("fieldsV1").cloned();
        let fields = to_fields_v1(&set);
        if set.is_empty() {
            continue;
        }
        if before.as_ref() != Some(&fields) {
            e["fieldsV1"] = fields;
        }
        kept.push(e);
    }
    mine.extend(changed);
    let mut entry = serde_json::json!({
        "manager": manager, "operation": "Update",
        "apiVersion": new.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&mine),
    });
    if let Some(s) = subresource {
        entry["subresource"] = s.into();
    }
    kept.push(entry);
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("managedFields".into(), Value::Array(kept));
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use serde_json::json;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": data})
    }

    #[test]
    fn numbers_compare_by_value_as_in_structured_merge_diff() {
        assert!(same_json(&json!({"m": [1000]}), &json!({"m": [1000.0]})));
        assert!(!same_json(&json!({"m": 1}), &json!({"m": 1.5})));
        assert!(!same_json(&json!({"m": 1}), &json!({"m": "1"})));
        assert!(same_value(None, None));
        assert!(!same_value(Some(&json!(1)), None));
    }

    #[test]
    fn apply_removes_dropped_fields_and_detects_conflicts() {
        let live = cm(json!({"other": "kept"}));
        let one = apply_owned(
            &live,
            &cm(json!({"x": "1", "y": "2"})),
            "m",
            None,
            "t",
            false,
        )
        .expect("apply");
        assert_eq!(one["data"], json!({"other": "kept", "x": "1", "y": "2"}));
        // A later apply that omits a field removes it.
        let two = apply_owned(&one, &cm(json!({"x": "1"})), "m", None, "t", false).expect("apply");
        assert_eq!(two["data"], json!({"other": "kept", "x": "1"}));
        // Another applier of the same value: no conflict, shared ownership.
        let three =
            apply_owned(&two, &cm(json!({"x": "1"})), "n", None, "t", false).expect("shared");
        let empty = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let four = apply_owned(&three, &empty, "m", None, "t", false).expect("apply");
        assert_eq!(
            four["data"],
            json!({"other": "kept", "x": "1"}),
            "n still owns x"
        );
        assert_eq!(
            four["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(2)
        );
        // Changing a field another applier owns conflicts unless forced.
        let err = apply_owned(&four, &cm(json!({"x": "2"})), "m", None, "t", false)
            .expect_err("conflict");
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert!(
            err.message.contains("conflict with \"n\": .data.x"),
            "{}",
            err.message
        );
        let forced =
            apply_owned(&four, &cm(json!({"x": "2"})), "m", None, "t", true).expect("forced");
        assert_eq!(forced["data"]["x"], "2");
        // "n" lost data.x to "m": when "m" drops it, it goes.
        let five = apply_owned(&forced, &empty, "m", None, "t", false).expect("apply");
        assert_eq!(five["data"], json!({"other": "kept"}));
    }
}
