//! Protobuf request bodies: the `k8s\0` envelope holding a `runtime.Unknown`,
//! decoded for the kinds `kubectl create secret|configmap|namespace` send
//! (ObjectMeta, Secret, ConfigMap, Namespace), into the JSON form.

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
                self.pos += 8;
                Field::Varint(0)
            }
            5 => {
                self.pos += 4;
                Field::Varint(0)
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

/// A `map<string, string|bytes>` entry.
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

fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(b)) if !b.is_empty() => {
                m.insert("name".into(), string(b).into());
            }
            (2, Field::Bytes(b)) if !b.is_empty() => {
                m.insert("generateName".into(), string(b).into());
            }
            (3, Field::Bytes(b)) if !b.is_empty() => {
                m.insert("namespace".into(), string(b).into());
            }
            (6, Field::Bytes(b)) if !b.is_empty() => {
                m.insert("resourceVersion".into(), string(b).into());
            }
            (11, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                labels.insert(k, string(&v).into());
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                annotations.insert(k, string(&v).into());
            }
            (14, Field::Bytes(b)) => finalizers.push(Value::String(string(b))),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
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
    // Decoding drops the fields it does not know: refuse kinds whose fields
    // would be lost rather than store them silently incomplete.
    if !matches!(
        kind.as_str(),
        "Secret" | "ConfigMap" | "Namespace" | "ServiceAccount"
    ) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("protobuf request bodies are not supported for {kind}; send JSON"),
        ));
    }
    let mut obj = json!({ "apiVersion": api_version, "kind": kind });
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut r = Reader::new(raw);
    let mut data = Map::new();
    let mut string_data = Map::new();
    let mut binary = Map::new();
    while let Some((n, f)) = r.next()? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(b)) => obj["metadata"] = object_meta(b)?,
            ("Secret", 2, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                data.insert(k, b64.encode(v).into());
            }
            ("Secret", 3, Field::Bytes(b)) if !b.is_empty() => obj["type"] = string(b).into(),
            ("Secret", 4, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                string_data.insert(k, string(&v).into());
            }
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                obj["immutable"] = (v != 0).into()
            }
            ("ConfigMap", 2, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                data.insert(k, string(&v).into());
            }
            ("ConfigMap", 3, Field::Bytes(b)) => {
                let (k, v) = entry(b)?;
                binary.insert(k, b64.encode(v).into());
            }
            ("Namespace", 2, Field::Bytes(_)) | ("Namespace", 3, Field::Bytes(_)) => {}
            _ => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    if kind.is_empty() {
        return Err(ApiError::bad_request("protobuf body without a kind"));
    }
    Ok(obj)
}
