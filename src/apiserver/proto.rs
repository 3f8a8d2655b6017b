//! Protobuf request bodies: the `k8s\0` envelope holding a `runtime.Unknown`,
//! decoded into the JSON form for every built-in kind the typed clients
//! (kubectl, client-go) send as protobuf: ConfigMap, Secret, Namespace,
//! ServiceAccount, Role, RoleBinding, ClusterRole, ClusterRoleBinding,
//! SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview and
//! TokenRequest.
//!
//! Each message is described by a table of its fields (number, JSON name,
//! type) taken from the kinds' `generated.proto`; fields the table does not
//! list are skipped. Go's protobuf encoder writes scalar fields even when they
//! hold their zero value, so empty strings, `0` and the zero time are read as
//! absent, as kube-apiserver's `omitempty` JSON would have them.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::http::ApiError;

const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(truncated())
    }
    fn skip(&mut self, n: usize) -> Result<(), ApiError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        if end > self.buf.len() {
            return Err(truncated());
        }
        self.pos = end;
        Ok(())
    }
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ApiError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| truncated())?;
                let end = self.pos.checked_add(len).ok_or_else(truncated)?;
                let b = self.buf.get(self.pos..end).ok_or_else(truncated)?;
                self.pos = end;
                Field::Bytes(b)
            }
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            _ => return Err(ApiError::bad_request("unsupported protobuf wire type")),
        };
        Ok(Some((field, f)))
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("truncated protobuf body")
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The type of a message field.
#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Bool,
    /// `metav1.Time`: seconds and nanos, RFC 3339 in JSON.
    Time,
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>` (base64 values in JSON).
    BytesMap,
    Msg(&'static [F]),
}

/// One field: number, JSON name, type, repeated.
type F = (u64, &'static str, T, bool);

const fn one(n: u64, name: &'static str, t: T) -> F {
    (n, name, t, false)
}
const fn many(n: u64, name: &'static str, t: T) -> F {
    (n, name, t, true)
}

const OWNER_REFERENCE: &[F] = &[
    one(1, "kind", T::Str),
    one(3, "name", T::Str),
    one(4, "uid", T::Str),
    one(5, "apiVersion", T::Str),
    one(6, "controller", T::Bool),
    one(7, "blockOwnerDeletion", T::Bool),
];

const OBJECT_META: &[F] = &[
    one(1, "name", T::Str),
    one(2, "generateName", T::Str),
    one(3, "namespace", T::Str),
    one(5, "uid", T::Str),
    one(6, "resourceVersion", T::Str),
    one(7, "generation", T::Int),
    one(8, "creationTimestamp", T::Time),
    one(9, "deletionTimestamp", T::Time),
    one(10, "deletionGracePeriodSeconds", T::Int),
    one(11, "labels", T::StrMap),
    one(12, "annotations", T::StrMap),
    many(13, "ownerReferences", T::Msg(OWNER_REFERENCE)),
    many(14, "finalizers", T::Str),
];

const LABEL_SELECTOR_REQUIREMENT: &[F] = &[
    one(1, "key", T::Str),
    one(2, "operator", T::Str),
    many(3, "values", T::Str),
];

const LABEL_SELECTOR: &[F] = &[
    one(1, "matchLabels", T::StrMap),
    many(2, "matchExpressions", T::Msg(LABEL_SELECTOR_REQUIREMENT)),
];

const POLICY_RULE: &[F] = &[
    many(1, "verbs", T::Str),
    many(2, "apiGroups", T::Str),
    many(3, "resources", T::Str),
    many(4, "resourceNames", T::Str),
    many(5, "nonResourceURLs", T::Str),
];

const ROLE: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    many(2, "rules", T::Msg(POLICY_RULE)),
];

const AGGREGATION_RULE: &[F] = &[many(1, "clusterRoleSelectors", T::Msg(LABEL_SELECTOR))];

const CLUSTER_ROLE: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    many(2, "rules", T::Msg(POLICY_RULE)),
    one(3, "aggregationRule", T::Msg(AGGREGATION_RULE)),
];

const SUBJECT: &[F] = &[
    one(1, "kind", T::Str),
    one(2, "apiGroup", T::Str),
    one(3, "name", T::Str),
    one(4, "namespace", T::Str),
];

const ROLE_REF: &[F] = &[
    one(1, "apiGroup", T::Str),
    one(2, "kind", T::Str),
    one(3, "name", T::Str),
];

const BINDING: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    many(2, "subjects", T::Msg(SUBJECT)),
    one(3, "roleRef", T::Msg(ROLE_REF)),
];

const OBJECT_REFERENCE: &[F] = &[
    one(1, "kind", T::Str),
    one(2, "namespace", T::Str),
    one(3, "name", T::Str),
    one(4, "uid", T::Str),
    one(5, "apiVersion", T::Str),
    one(6, "resourceVersion", T::Str),
    one(7, "fieldPath", T::Str),
];

const LOCAL_OBJECT_REFERENCE: &[F] = &[one(1, "name", T::Str)];

const SERVICE_ACCOUNT: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    many(2, "secrets", T::Msg(OBJECT_REFERENCE)),
    many(3, "imagePullSecrets", T::Msg(LOCAL_OBJECT_REFERENCE)),
    one(4, "automountServiceAccountToken", T::Bool),
];

const CONFIG_MAP: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "data", T::StrMap),
    one(3, "binaryData", T::BytesMap),
    one(4, "immutable", T::Bool),
];

const SECRET: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "data", T::BytesMap),
    one(3, "type", T::Str),
    one(4, "stringData", T::StrMap),
    one(5, "immutable", T::Bool),
];

const NAMESPACE_SPEC: &[F] = &[many(1, "finalizers", T::Str)];

const NAMESPACE: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "spec", T::Msg(NAMESPACE_SPEC)),
];

const RAW_SELECTOR: &[F] = &[one(1, "rawSelector", T::Str)];

const RESOURCE_ATTRIBUTES: &[F] = &[
    one(1, "namespace", T::Str),
    one(2, "verb", T::Str),
    one(3, "group", T::Str),
    one(4, "version", T::Str),
    one(5, "resource", T::Str),
    one(6, "subresource", T::Str),
    one(7, "name", T::Str),
    one(8, "fieldSelector", T::Msg(RAW_SELECTOR)),
    one(9, "labelSelector", T::Msg(RAW_SELECTOR)),
];

const NON_RESOURCE_ATTRIBUTES: &[F] = &[one(1, "path", T::Str), one(2, "verb", T::Str)];

const SSAR_SPEC: &[F] = &[
    one(1, "resourceAttributes", T::Msg(RESOURCE_ATTRIBUTES)),
    one(2, "nonResourceAttributes", T::Msg(NON_RESOURCE_ATTRIBUTES)),
];

const SSAR: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "spec", T::Msg(SSAR_SPEC)),
];

const SSRR_SPEC: &[F] = &[one(1, "namespace", T::Str)];

const SSRR: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "spec", T::Msg(SSRR_SPEC)),
];

const SELF_SUBJECT_REVIEW: &[F] = &[one(1, "metadata", T::Msg(OBJECT_META))];

const BOUND_OBJECT_REFERENCE: &[F] = &[
    one(1, "kind", T::Str),
    one(2, "apiVersion", T::Str),
    one(3, "name", T::Str),
    one(4, "uid", T::Str),
];

const TOKEN_REQUEST_SPEC: &[F] = &[
    many(1, "audiences", T::Str),
    one(3, "boundObjectRef", T::Msg(BOUND_OBJECT_REFERENCE)),
    one(4, "expirationSeconds", T::Int),
];

const TOKEN_REQUEST: &[F] = &[
    one(1, "metadata", T::Msg(OBJECT_META)),
    one(2, "spec", T::Msg(TOKEN_REQUEST_SPEC)),
];

/// The message of a kind (by `kind`; the group is implied by the URL).
fn message_of(kind: &str) -> Option<&'static [F]> {
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Role" => ROLE,
        "ClusterRole" => CLUSTER_ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "SelfSubjectAccessReview" => SSAR,
        "SelfSubjectRulesReview" => SSRR,
        "SelfSubjectReview" => SELF_SUBJECT_REVIEW,
        "TokenRequest" => TOKEN_REQUEST,
        _ => return None,
    })
}

/// A `map<string, …>` entry: key (1) and value (2).
fn entry(b: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, f)) = r.next()? {
        if let Field::Bytes(b) = f {
            match n {
                1 => k = string(b),
                2 => v = b.to_vec(),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

/// `metav1.Time` (seconds, nanos) as RFC 3339; `None` for the zero time.
fn time(b: &[u8]) -> Result<Option<String>, ApiError> {
    let mut r = Reader::new(b);
    let mut seconds = 0i64;
    while let Some((n, f)) = r.next()? {
        if let (1, Field::Varint(v)) = (n, f) {
            seconds = v as i64;
        }
    }
    if seconds == 0 {
        return Ok(None);
    }
    Ok(jiff::Timestamp::from_second(seconds)
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// Decodes one message by its field table.
fn message(b: &[u8], fields: &'static [F]) -> Result<Value, ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Map::new();
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next()? {
        let Some(&(_, name, t, repeated)) = fields.iter().find(|d| d.0 == n) else {
            continue;
        };
        let value = match (t, f) {
            (T::Str, Field::Bytes(b)) if b.is_empty() && !repeated => continue,
            (T::Str, Field::Bytes(b)) => Value::String(string(b)),
            (T::Int, Field::Varint(0)) if !repeated => continue,
            (T::Int, Field::Varint(v)) => json!(v as i64),
            (T::Bool, Field::Varint(v)) => Value::Bool(v != 0),
            (T::Time, Field::Bytes(b)) => match time(b)? {
                Some(t) => Value::String(t),
                None => continue,
            },
            (T::StrMap | T::BytesMap, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                let v = match t {
                    T::BytesMap => b64.encode(v),
                    _ => string(&v),
                };
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, Value::String(v));
                }
                continue;
            }
            (T::Msg(inner), Field::Bytes(b)) => message(b, inner)?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "protobuf field {name} has the wrong wire type"
                )));
            }
        };
        if repeated {
            let list = out.entry(name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(name.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf request body into the JSON form of the object.
pub(super) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("protobuf body without the k8s envelope"))?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                let mut t = Reader::new(b);
                while let Some((n, f)) = t.next()? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = string(b),
                        (2, Field::Bytes(b)) => kind = string(b),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    if kind.is_empty() {
        return Err(ApiError::bad_request("protobuf body without a kind"));
    }
    // Decoding drops the fields it does not know: refuse kinds whose fields
    // would be lost rather than store them silently incomplete.
    let Some(fields) = message_of(&kind) else {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("protobuf request bodies are not supported for {kind}; send JSON"),
        ));
    };
    let mut obj = json!({ "apiVersion": api_version, "kind": kind });
    if let (Some(o), Value::Object(fields)) = (obj.as_object_mut(), message(raw, fields)?) {
        o.extend(fields);
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny protobuf writer for the tests.
    fn field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = field(1, api_version.as_bytes());
        tm.extend(field(2, kind.as_bytes()));
        let mut out = MAGIC.to_vec();
        out.extend(field(1, &tm));
        out.extend(field(2, raw));
        out
    }

    #[test]
    fn role_binding_decodes_subjects_and_role_ref() {
        let mut meta = field(1, b"read-servers");
        meta.extend(field(3, b"default"));
        meta.extend(field(5, b"")); // an empty uid is absent
        let mut subject = field(1, b"ServiceAccount");
        subject.extend(field(2, b""));
        subject.extend(field(3, b"robot"));
        subject.extend(field(4, b"default"));
        let mut role_ref = field(1, b"rbac.authorization.k8s.io");
        role_ref.extend(field(2, b"Role"));
        role_ref.extend(field(3, b"reader"));
        let mut raw = field(1, &meta);
        raw.extend(field(2, &subject));
        raw.extend(field(3, &role_ref));
        let obj = decode(&envelope(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            &raw,
        ))
        .unwrap();
        assert_eq!(
            obj,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "read-servers", "namespace": "default"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}
            })
        );
    }

    #[test]
    fn role_rules_and_maps_decode() {
        let mut rule = field(1, b"list");
        rule.extend(field(1, b"get"));
        rule.extend(field(2, b"servermanager.contrail.io"));
        rule.extend(field(3, b"servers"));
        let mut label = field(1, b"app");
        label.extend(field(2, b"x"));
        let meta = [field(1, b"reader"), field(11, &label)].concat();
        let raw = [field(1, &meta), field(2, &rule)].concat();
        let obj = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &raw)).unwrap();
        assert_eq!(obj["rules"][0]["verbs"], json!(["list", "get"]));
        assert_eq!(obj["metadata"]["labels"], json!({"app": "x"}));
    }

    #[test]
    fn secret_data_is_base64_and_unknown_kinds_are_refused() {
        let mut e = field(1, b"k");
        e.extend(field(2, &[0xff, 0x00]));
        let raw = [field(2, &e), field(3, b"Opaque")].concat();
        let obj = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(obj["data"]["k"], json!("/wA="));
        assert_eq!(obj["type"], json!("Opaque"));
        let err = decode(&envelope("v1", "Pod", &[])).unwrap_err();
        assert_eq!(err.code, 415);
        let err = decode(&envelope("v1", "Secret", &[0x0a, 0x05, 1])).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
