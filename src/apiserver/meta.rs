//! Object metadata bookkeeping shared by the verbs: timestamps, generated
//! names, name validation, dropping empty collections, no-op detection.

use serde_json::{Map, Value};

use super::http::FieldError;

/// Now, as kube-apiserver writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub(super) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A 5-character suffix for `generateName`, from kube's alphabet.
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `metadata` as a mutable map (created when missing).
pub(super) fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

/// A string field of `metadata`.
pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Whether the object is being deleted.
pub(super) fn deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// The object's finalizers.
pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops empty `finalizers`, `labels`, `annotations`, `ownerReferences` (and
/// nulls) from metadata, as kube-apiserver does.
pub(super) fn clean(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, v| {
            let empty = match v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            !(empty
                && matches!(
                    k.as_str(),
                    "finalizers" | "labels" | "annotations" | "ownerReferences" | "managedFields"
                )
                || matches!(v, Value::Null))
        });
        m.remove("selfLink");
    }
}

/// Whether two states differ in anything but the resourceVersion (field
/// ownership counts, as in kube-apiserver).
pub(super) fn differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
        }
        v
    };
    strip(a) != strip(b)
}

/// Whether the spec (everything but metadata, and status when `status_sub`)
/// differs: what bumps `metadata.generation`.
pub(super) fn spec_differs(a: &Value, b: &Value, status_sub: bool) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("apiVersion");
            o.remove("kind");
            if status_sub {
                o.remove("status");
            }
        }
        v
    };
    strip(a) != strip(b)
}

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Validates an object name (RFC 1123 subdomain, or label for namespaces).
pub(super) fn validate_name(name: &str, label: bool) -> Option<FieldError> {
    let (re, max, what, example, shown) = if label {
        (
            DNS1123_LABEL,
            63,
            "label",
            "'my-name',  or '123-abc'",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
        )
    } else {
        (
            DNS1123_SUBDOMAIN,
            253,
            "subdomain",
            "'example.com'",
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
        )
    };
    let ok = regex::Regex::new(re)
        .map(|r| r.is_match(name))
        .unwrap_or(false);
    if name.len() > max {
        return Some(FieldError::new(
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": must be no more than {max} characters"),
        ));
    }
    if ok {
        return None;
    }
    let chars = if label { "'-'" } else { "'-' or '.'" };
    Some(FieldError::new(
        "metadata.name",
        "FieldValueInvalid",
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 {what} must consist of lower case alphanumeric characters, {chars}, and must start and end with an alphanumeric character (e.g. {example}, regex used for validation is '{shown}')"
        ),
    ))
}

const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
const QUALIFIED_NAME: &str = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";

fn qualified_key_errors(key: &str, field: &str) -> Option<FieldError> {
    let re = regex::Regex::new(QUALIFIED_NAME).ok()?;
    let sub = regex::Regex::new(DNS1123_SUBDOMAIN).ok()?;
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let ok = !name.is_empty()
        && name.len() <= 63
        && re.is_match(name)
        && prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && sub.is_match(p));
    (!ok).then(|| {
        FieldError::new(
            field,
            "FieldValueInvalid",
            format!(
                "Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ),
        )
    })
}

/// Validates label keys and values and annotation keys.
pub(super) fn validate_labels(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(m) = obj.get("metadata") else {
        return errors;
    };
    let value_re = regex::Regex::new(LABEL_VALUE).ok();
    if let Some(labels) = m.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(e) = qualified_key_errors(k, "metadata.labels") {
                errors.push(e);
            }
            let Some(v) = v.as_str() else {
                errors.push(FieldError::new(
                    "metadata.labels",
                    "FieldValueInvalid",
                    format!("Invalid value: {v}: label values must be strings"),
                ));
                continue;
            };
            let ok = v.len() <= 63 && value_re.as_ref().is_none_or(|r| r.is_match(v));
            if !ok {
                errors.push(FieldError::new(
                    "metadata.labels",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                    ),
                ));
            }
        }
    }
    if let Some(ann) = m.get("annotations").and_then(Value::as_object) {
        for (k, v) in ann {
            if let Some(e) = qualified_key_errors(k, "metadata.annotations") {
                errors.push(e);
            }
            if !v.is_string() {
                errors.push(FieldError::new(
                    "metadata.annotations",
                    "FieldValueInvalid",
                    format!("Invalid value: {v}: annotation values must be strings"),
                ));
            }
        }
    }
    errors
}
