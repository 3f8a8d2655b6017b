//! OpenAPI for the built-in kinds and `/openapi/v2`.
//!
//! The schemas of the built-in kinds come from `k8s-openapi` (its `schemars`
//! implementations carry kube-apiserver's own names and descriptions), so
//! `kubectl explain configmap.data` reads the same text as on a real cluster.
//!
//! `/openapi/v2` is what kubectl downloads before client-side validation
//! (`kubectl apply|create --validate`, the default): a Swagger 2.0 document,
//! in JSON or, as kubectl asks for it, as the protobuf message
//! `openapi.v2.Document` of gnostic. The encoder below writes the subset of
//! that message kube-apiserver fills: `swagger`, `info`, `paths` and
//! `definitions`, each definition a `Schema` with its vendor extensions
//! (`x-kubernetes-group-version-kind`, …) as YAML (JSON is YAML).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::resources::{ResourceInfo, Special};

/// The Content-Type of a protobuf `/openapi/v2` answer.
pub(super) const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Adds the schema of the built-in kind (group, kind) to `g`; returns its name.
fn add_builtin(g: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<String> {
        g.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
    match (group, kind) {
        ("", "Namespace") => add::<api::core::v1::Namespace>(g),
        ("", "Secret") => add::<api::core::v1::Secret>(g),
        ("", "ConfigMap") => add::<api::core::v1::ConfigMap>(g),
        ("", "ServiceAccount") => add::<api::core::v1::ServiceAccount>(g),
        ("", "Event") => add::<api::core::v1::Event>(g),
        ("", "Service") => add::<api::core::v1::Service>(g),
        ("", "PersistentVolumeClaim") => add::<api::core::v1::PersistentVolumeClaim>(g),
        ("apps", "Deployment") => add::<api::apps::v1::Deployment>(g),
        ("rbac.authorization.k8s.io", "Role") => add::<api::rbac::v1::Role>(g),
        ("rbac.authorization.k8s.io", "RoleBinding") => add::<api::rbac::v1::RoleBinding>(g),
        ("rbac.authorization.k8s.io", "ClusterRole") => add::<api::rbac::v1::ClusterRole>(g),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            add::<api::rbac::v1::ClusterRoleBinding>(g)
        }
        ("networking.k8s.io", "NetworkPolicy") => add::<api::networking::v1::NetworkPolicy>(g),
        ("coordination.k8s.io", "Lease") => add::<api::coordination::v1::Lease>(g),
        ("events.k8s.io", "Event") => add::<api::events::v1::Event>(g),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            add::<apiext::CustomResourceDefinition>(g)
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            add::<api::authorization::v1::SelfSubjectAccessReview>(g)
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            add::<api::authorization::v1::SelfSubjectRulesReview>(g)
        }
        ("authentication.k8s.io", "SelfSubjectReview") => {
            add::<api::authentication::v1::SelfSubjectReview>(g)
        }
        ("authentication.k8s.io", "TokenRequest") => {
            add::<api::authentication::v1::TokenRequest>(g)
        }
        _ => None,
    }
}

/// The built-in kinds' schemas for one group-version (OpenAPI v3 form): the
/// definitions (each kind and everything it refers to) and, per kind, its
/// definition name.
pub(super) struct GvSchemas {
    pub definitions: Map<String, Value>,
    pub kinds: BTreeMap<String, String>,
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The v3 schemas of the built-in kinds of `group`/`version` (cached).
pub(super) fn builtin_v3(group: &str, version: &str) -> Option<&'static GvSchemas> {
    static CACHE: OnceLock<BTreeMap<(String, String), GvSchemas>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut by_gv: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
        for r in super::resources::builtins() {
            by_gv
                .entry((r.group.clone(), r.version.clone()))
                .or_default()
                .push((r.group.clone(), r.kind.clone()));
        }
        let mut out = BTreeMap::new();
        for ((g, v), kinds) in by_gv {
            let mut generator = SchemaSettings::openapi3()
                .with(|s| s.meta_schema = None)
                .into_generator();
            let mut names = BTreeMap::new();
            for (group, kind) in kinds {
                if let Some(n) = add_builtin(&mut generator, &group, &kind) {
                    names.insert(kind, n);
                }
            }
            let mut definitions = generator.take_definitions(true);
            for (kind, name) in &names {
                if let Some(d) = definitions.get_mut(name) {
                    d["x-kubernetes-group-version-kind"] = json!([gvk(&g, &v, kind)]);
                }
            }
            out.insert(
                (g, v),
                GvSchemas {
                    definitions,
                    kinds: names,
                },
            );
        }
        out
    });
    cache.get(&(group.to_string(), version.to_string()))
}

/// Every built-in definition in Swagger 2.0 form (refs to `#/definitions/`).
fn builtin_v2() -> &'static Map<String, Value> {
    static CACHE: OnceLock<Map<String, Value>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut generator = SchemaSettings::draft07()
            .with(|s| s.meta_schema = None)
            .into_generator();
        let mut names = Vec::new();
        for r in super::resources::builtins() {
            if let Some(n) = add_builtin(&mut generator, &r.group, &r.kind) {
                names.push((n, gvk(&r.group, &r.version, &r.kind)));
            }
        }
        let mut definitions = generator.take_definitions(true);
        for (name, gvk) in names {
            if let Some(d) = definitions.get_mut(&name) {
                d["x-kubernetes-group-version-kind"] = json!([gvk]);
            }
        }
        definitions
    })
}

/// A CRD's structural schema made into a Swagger 2.0 schema, the way
/// kube-apiserver publishes CRDs in `/openapi/v2`: keywords Swagger 2.0 lacks
/// (`nullable`, `anyOf`, `oneOf`, `not`, int-or-string) are dropped, and so
/// is the type of a node that loses its meaning without them.
fn crd_schema_v2(s: &Value) -> Value {
    let Some(o) = s.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in o {
        match k.as_str() {
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), crd_schema_v2(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" if v.is_object() => {
                out.insert(k.clone(), crd_schema_v2(v));
            }
            "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), crd_schema_v2(v));
            }
            "additionalProperties" if v.is_boolean() => {
                out.insert(k.clone(), v.clone());
            }
            "type" | "format" | "description" | "required" | "enum" | "default" | "maximum"
            | "minimum" | "maxLength" | "minLength" | "pattern" | "maxItems" | "minItems"
            | "uniqueItems" | "maxProperties" | "minProperties" | "title" => {
                out.insert(k.clone(), v.clone());
            }
            _ if k.starts_with("x-kubernetes-") && k != "x-kubernetes-int-or-string" => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    let int_or_string = o
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let array_without_items =
        out.get("type") == Some(&json!("array")) && !out.contains_key("items");
    if int_or_string || array_without_items || o.contains_key("anyOf") || o.contains_key("oneOf") {
        out.remove("type");
        out.remove("format");
    }
    Value::Object(out)
}

/// The `/openapi/v2` document (JSON form).
pub(super) fn v2_document(all: &[ResourceInfo]) -> Value {
    let mut definitions = builtin_v2().clone();
    for r in all.iter().filter(|r| r.special == Special::Custom) {
        let mut schema = r.schema.as_ref().map(crd_schema_v2).unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        if let Some(props) = schema
            .as_object_mut()
            .map(|o| o.entry("properties").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            props.insert("apiVersion".into(), json!({"type": "string"}));
            props.insert("kind".into(), json!({"type": "string"}));
            props.insert(
                "metadata".into(),
                json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}),
            );
        }
        schema["x-kubernetes-group-version-kind"] = json!([gvk(&r.group, &r.version, &r.kind)]);
        definitions.insert(super::discovery::schema_name(r), schema);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {},
        "definitions": definitions,
    })
}

/// Protobuf writer (proto3 wire format).
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn message(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }
    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }
    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// gnostic `Any`: the value as YAML text (field 2).
fn any_yaml(v: &Value) -> Pb {
    let mut a = Pb::default();
    a.string(2, &v.to_string());
    a
}

/// gnostic `openapi.v2.Schema`.
fn schema_pb(s: &Value) -> Pb {
    let mut m = Pb::default();
    let Some(o) = s.as_object() else {
        return m;
    };
    let str_of = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
    let int_of = |k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
    m.string(1, str_of("$ref"));
    m.string(2, str_of("format"));
    m.string(3, str_of("title"));
    m.string(4, str_of("description"));
    if let Some(d) = o.get("default") {
        m.message(5, any_yaml(d));
    }
    for (field, k) in [(6, "multipleOf"), (7, "maximum"), (9, "minimum")] {
        if let Some(v) = o.get(k).and_then(Value::as_f64) {
            m.double(field, v);
        }
    }
    m.boolean(
        8,
        o.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true),
    );
    m.boolean(
        10,
        o.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true),
    );
    for (field, k) in [
        (11, "maxLength"),
        (12, "minLength"),
        (14, "maxItems"),
        (15, "minItems"),
        (17, "maxProperties"),
        (18, "minProperties"),
    ] {
        m.int64(field, int_of(k));
    }
    m.string(13, str_of("pattern"));
    m.boolean(
        16,
        o.get("uniqueItems").and_then(Value::as_bool) == Some(true),
    );
    for r in o
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.string(19, r.as_str().unwrap_or(""));
    }
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any_yaml(e));
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Pb::default();
            a.key(2, 0);
            a.varint(u64::from(*b));
            m.message(21, a);
        }
        Some(v @ Value::Object(_)) => {
            let mut a = Pb::default();
            a.message(1, schema_pb(v));
            m.message(21, a);
        }
        _ => {}
    }
    let types: Vec<&str> = match o.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let mut t = Pb::default();
        for ty in types {
            t.string(1, ty);
        }
        m.message(22, t);
    }
    match o.get("items") {
        Some(v @ Value::Object(_)) => {
            let mut i = Pb::default();
            i.message(1, schema_pb(v));
            m.message(23, i);
        }
        Some(Value::Array(vs)) => {
            let mut i = Pb::default();
            for v in vs {
                i.message(1, schema_pb(v));
            }
            m.message(23, i);
        }
        _ => {}
    }
    for a in o
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema_pb(a));
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        let mut p = Pb::default();
        for (name, s) in props {
            p.message(1, named(name, schema_pb(s)));
        }
        m.message(25, p);
    }
    m.boolean(27, o.get("readOnly").and_then(Value::as_bool) == Some(true));
    for (k, v) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        m.message(31, named(k, any_yaml(v)));
    }
    m
}

/// A gnostic `Named*` pair: name (1) and value (2).
fn named(name: &str, value: Pb) -> Pb {
    let mut n = Pb::default();
    n.string(1, name);
    n.message(2, value);
    n
}

/// The `/openapi/v2` document as gnostic's `openapi.v2.Document` protobuf.
pub(super) fn v2_protobuf(doc: &Value) -> Vec<u8> {
    let mut d = Pb::default();
    d.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Pb::default();
    info.string(1, doc["info"]["title"].as_str().unwrap_or(""));
    info.string(2, doc["info"]["version"].as_str().unwrap_or(""));
    d.message(2, info);
    d.message(8, Pb::default());
    let mut defs = Pb::default();
    for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
        defs.message(1, named(name, schema_pb(s)));
    }
    d.message(9, defs);
    d.0
}

/// Answers `GET /openapi/v2`: protobuf when asked for (as kubectl does),
/// JSON otherwise.
pub(super) fn v2_response(all: &[ResourceInfo], accept: &str) -> hyper::Response<axum::body::Body> {
    let doc = v2_document(all);
    let wants_protobuf = accept.split(',').any(|a| {
        a.trim()
            .starts_with("application/com.github.proto-openapi.spec.v2")
    });
    if !wants_protobuf {
        return super::http::json(200, &doc);
    }
    let mut resp = hyper::Response::new(axum::body::Body::from(v2_protobuf(&doc)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(V2_PROTOBUF_CONTENT_TYPE),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schemas_carry_kube_descriptions_and_gvk() {
        let core = builtin_v3("", "v1").expect("core v1");
        let name = &core.kinds["ConfigMap"];
        assert_eq!(name, "io.k8s.api.core.v1.ConfigMap");
        let cm = &core.definitions[name];
        assert!(
            cm["properties"]["data"]["description"]
                .as_str()
                .unwrap()
                .starts_with("Data contains the configuration data.")
        );
        assert_eq!(
            cm["x-kubernetes-group-version-kind"][0]["kind"],
            json!("ConfigMap")
        );
        // The closure of references is included.
        assert!(
            core.definitions
                .contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
    }

    #[test]
    fn v2_protobuf_encodes_definitions_with_extensions() {
        let doc = v2_document(&super::super::resources::builtins());
        let pb = v2_protobuf(&doc);
        // swagger = "2.0" first.
        assert_eq!(&pb[..5], b"\x0a\x032.0");
        let hay = String::from_utf8_lossy(&pb);
        assert!(hay.contains("io.k8s.api.core.v1.ConfigMap"));
        assert!(hay.contains("x-kubernetes-group-version-kind"));
        assert!(hay.contains(r#""kind":"ConfigMap""#));
    }

    #[test]
    fn crd_schemas_lose_what_swagger_2_cannot_say() {
        let s = json!({"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "tags": {"type": "array"},
            "name": {"type": "string", "nullable": true}
        }});
        let v2 = crd_schema_v2(&s);
        assert_eq!(v2["properties"]["port"], json!({}));
        assert_eq!(v2["properties"]["tags"], json!({}));
        assert_eq!(v2["properties"]["name"], json!({"type": "string"}));
    }
}
