//! Status writes as minimal JSON merge patches (RFC 7386): only what changed is
//! sent, fields that disappeared are sent as `null`, and no change means no
//! request at all — the operator makes zero writes at steady state.

use serde_json::{Map, Value};

/// The merge patch turning `old` into `new`, or `None` when they are equal.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), strip_nulls(nv));
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            if patch.is_empty() {
                None
            } else {
                Some(Value::Object(patch))
            }
        }
        _ => Some(strip_nulls(new)),
    }
}

/// A merge patch cannot set a value to null inside a new object; nulls there
/// mean "absent" anyway.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `{"status": …}` merge patch from the current status to `new`, or `None`.
pub fn status_patch<S: serde::Serialize>(current: Option<&S>, new: &S) -> Option<Value> {
    let old = current
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Object(Map::new()));
    let new = serde_json::to_value(new).ok()?;
    merge_diff(&old, &new).map(|d| serde_json::json!({ "status": d }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changes_are_sent_and_removed_fields_become_null() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": "x", "list": [1, 2]});
        let new = json!({"a": 1, "b": {"c": 2, "d": 4}, "list": [1], "added": {"x": null, "y": 1}});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"b": {"d": 4}, "gone": null, "list": [1], "added": {"y": 1}}))
        );
        assert_eq!(merge_diff(&old, &old), None);
    }

    #[test]
    fn applying_the_patch_gives_the_new_value() {
        let old = json!({"a": {"b": 1, "c": [1]}, "d": "x"});
        let new = json!({"a": {"c": [2]}, "e": true});
        let patch = merge_diff(&old, &new).unwrap();
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
    }
}
