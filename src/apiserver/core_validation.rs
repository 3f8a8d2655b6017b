//! kube-apiserver's validation of ConfigMaps and Secrets, with its messages:
//! keys (`[-._a-zA-Z0-9]+`, at most 253 characters, not `.`/`..`), a key in
//! both `data` and `binaryData`, `immutable` objects, the Secret `type` that
//! cannot change, the keys each typed Secret requires, and bytes fields
//! (`Secret.data`, `ConfigMap.binaryData`) that must be base64 (a 400 decoding
//! error, as kube-apiserver's JSON decoder gives).

use base64::Engine;
use serde_json::{Map, Value};

use super::http::{ApiError, FieldError};
use super::resources::ResourceInfo;

const IMMUTABLE: &str = "Forbidden: field is immutable when `immutable` is set";

fn is_configmap(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "configmaps"
}

fn is_secret(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "secrets"
}

/// kube's `IsConfigMapKey`.
fn key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".into());
    } else if key == ".." {
        errs.push("must not be '..'".into());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn map_of<'a>(obj: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    obj.get(field).and_then(Value::as_object)
}

/// Go's JSON decoding of a `[]byte` field: standard base64.
fn base64_error(info: &ResourceInfo, s: &str) -> Option<ApiError> {
    let err = base64::engine::general_purpose::STANDARD.decode(s).err()?;
    use base64::DecodeError as E;
    let at = match err {
        E::InvalidByte(at, _) | E::InvalidLastSymbol(at, _) => at,
        E::InvalidLength(len) => len - len % 4,
        E::InvalidPadding => s.trim_end_matches('=').len(),
    };
    Some(ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: illegal base64 data at input byte {at}",
        info.kind,
        info.api_version(),
        info.kind
    )))
}

fn key_checks(obj: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let mut keys: Vec<&String> = map_of(obj, field)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    keys.sort();
    for k in keys {
        for msg in key_errors(k) {
            errors.push(FieldError::new(
                &format!("{field}[{k}]"),
                "FieldValueInvalid",
                format!("Invalid value: {}: {msg}", Value::from(k.as_str())),
            ));
        }
    }
}

fn required(errors: &mut Vec<FieldError>, path: &str) {
    errors.push(FieldError::new(
        path,
        "FieldValueRequired",
        "Required value",
    ));
}

/// Validates a ConfigMap or Secret about to be stored (`old`: the stored
/// version on update). Other kinds pass.
pub(super) fn validate(
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let configmap = is_configmap(info);
    let secret = is_secret(info);
    if !configmap && !secret {
        return Ok(());
    }
    let bytes_field = if secret { "data" } else { "binaryData" };
    for v in map_of(obj, bytes_field)
        .into_iter()
        .flat_map(|m| m.values())
    {
        match v {
            Value::String(s) => {
                if let Some(e) = base64_error(info, s) {
                    return Err(e);
                }
            }
            Value::Null => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {bytes_field} values must be base64 strings",
                    info.kind,
                    info.api_version(),
                    info.kind
                )));
            }
        }
    }
    let mut errors = Vec::new();
    let name = super::meta::meta_str(obj, "name").unwrap_or("").to_string();
    if let Some(old) = old {
        if secret && old.get("type") != obj.get("type") {
            errors.push(FieldError::new(
                "type",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: field is immutable",
                    obj.get("type").cloned().unwrap_or(Value::Null)
                ),
            ));
        }
        if old["immutable"].as_bool() == Some(true) {
            if obj["immutable"].as_bool() != Some(true) {
                errors.push(FieldError::new(
                    "immutable",
                    "FieldValueForbidden",
                    IMMUTABLE,
                ));
            }
            let fields: &[&str] = if secret {
                &["data"]
            } else {
                &["data", "binaryData"]
            };
            for f in fields {
                let empty = Map::new();
                if map_of(old, f).unwrap_or(&empty) != map_of(obj, f).unwrap_or(&empty) {
                    errors.push(FieldError::new(f, "FieldValueForbidden", IMMUTABLE));
                }
            }
        }
    }
    key_checks(obj, "data", &mut errors);
    if configmap {
        let mut dups: Vec<&String> = map_of(obj, "data")
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| map_of(obj, "binaryData").is_some_and(|b| b.contains_key(*k)))
            .collect();
        dups.sort();
        for k in dups {
            errors.push(FieldError::new(
                &format!("data[{k}]"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: duplicate of key present in binaryData",
                    Value::from(k.as_str())
                ),
            ));
        }
        key_checks(obj, "binaryData", &mut errors);
    }
    if secret {
        let data = map_of(obj, "data");
        let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
        let non_empty = |k: &str| {
            data.and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        match obj["type"].as_str().unwrap_or("Opaque") {
            super::auth::SA_TOKEN_TYPE
                if obj["metadata"]["annotations"][super::auth::SA_NAME_ANNOTATION]
                    .as_str()
                    .is_none_or(str::is_empty) =>
            {
                required(
                    &mut errors,
                    &format!("metadata.annotations[{}]", super::auth::SA_NAME_ANNOTATION),
                );
            }
            "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
                let key = if obj["type"] == "kubernetes.io/dockercfg" {
                    ".dockercfg"
                } else {
                    ".dockerconfigjson"
                };
                let path = format!("data[{key}]");
                match data.and_then(|d| d.get(key)).and_then(Value::as_str) {
                    None => required(&mut errors, &path),
                    Some(b64) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap_or_default();
                        if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
                            errors.push(FieldError::new(
                                &path,
                                "FieldValueInvalid",
                                format!("Invalid value: \"<secret contents redacted>\": {e}"),
                            ));
                        }
                    }
                }
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                required(&mut errors, "data[username]");
                required(&mut errors, "data[password]");
            }
            "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
                required(&mut errors, "data[ssh-privatekey]");
            }
            "kubernetes.io/tls" => {
                if !has("tls.crt") {
                    required(&mut errors, "data[tls.crt]");
                }
                if !has("tls.key") {
                    required(&mut errors, "data[tls.key]");
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("", &info.kind, &name, &errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_follow_kube_rules() {
        assert!(key_errors("key.name").is_empty());
        assert!(key_errors("KEY_NAME-1").is_empty());
        assert_eq!(key_errors("a b").len(), 1);
        assert_eq!(key_errors(".."), vec!["must not be '..'".to_string()]);
        assert_eq!(
            key_errors("..x"),
            vec!["must not start with '..'".to_string()]
        );
        assert_eq!(key_errors(&"k".repeat(254)).len(), 1);
    }
}
