//! CRD structural schemas: pruning of unknown fields, defaulting, validation
//! (types, required, enum, pattern, bounds, lengths, nullable, int-or-string,
//! preserve-unknown-fields) and `x-kubernetes-validations` CEL rules, with
//! kube-apiserver's field paths and messages.

use serde_json::{Map, Value};

use super::http::FieldError;

/// What schema processing found.
#[derive(Default, Debug)]
pub(super) struct Outcome {
    /// Validation errors (answered as 422 Invalid).
    pub errors: Vec<FieldError>,
    /// Paths of unknown fields that were pruned (`spec.foo`).
    pub unknown: Vec<String>,
}

/// Prunes, defaults and validates `obj` (a whole custom resource) in place.
pub(super) fn process(schema: &Value, obj: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(o) = obj.as_object_mut() else {
        out.errors.push(FieldError::new(
            "",
            "FieldValueInvalid",
            "object must be a JSON object",
        ));
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    // apiVersion, kind and metadata are always kept (metadata is validated apart).
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                let mut v = o.remove(&k).unwrap_or(Value::Null);
                let keep = walk(s, &mut v, &k, Null::Prune, &mut out);
                if keep {
                    o.insert(k, v);
                }
            }
            None => {
                if !preserves(schema) {
                    o.remove(&k);
                    out.unknown.push(k);
                }
            }
        }
    }
    if let Some(p) = props {
        for (k, s) in p {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if !o.contains_key(k)
                && let Some(d) = s.get("default")
            {
                let mut v = d.clone();
                walk(s, &mut v, k, Null::Prune, &mut out);
                o.insert(k.clone(), v);
            }
        }
    }
    required(schema, o, "", &mut out);
    let whole = Value::Object(o.clone());
    cel_rules(schema, &whole, "", &mut out);
    out
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn required(schema: &Value, o: &Map<String, Value>, path: &str, out: &mut Outcome) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = r.as_str()
            && !o.contains_key(r)
        {
            out.errors.push(FieldError::new(
                &join(path, r),
                "FieldValueRequired",
                "Required value",
            ));
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a null where the schema is not nullable (and has no default) becomes.
#[derive(Clone, Copy, PartialEq)]
enum Null {
    /// The value of a named property: pruned, as kube-apiserver does.
    Prune,
    /// An item of a list or a value of a map (`additionalProperties`): kept,
    /// and so refused by the type check (`Invalid value: "null"`), as
    /// kube-apiserver does.
    Refuse,
}

/// Processes one value; returns false when the value should be dropped.
fn walk(schema: &Value, v: &mut Value, path: &str, null: Null, out: &mut Outcome) -> bool {
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if v.is_null() {
        if nullable {
            return true;
        }
        if let Some(d) = schema.get("default") {
            *v = d.clone();
        } else if schema.get("type").is_none() && preserves(schema) {
            return true;
        } else if null == Null::Prune {
            // kube-apiserver prunes nulls of non-nullable properties
            // (`PruneNonNullableNullsWithoutDefaults`), not of items.
            return false;
        }
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let want = schema.get("type").and_then(Value::as_str);
    let got = type_name(v);
    let type_ok = if int_or_string {
        matches!(got, "integer" | "string")
    } else {
        match want {
            None => true,
            Some("number") => matches!(got, "integer" | "number"),
            Some("integer") => got == "integer" || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            Some(t) => t == got,
        }
    };
    if !type_ok {
        let t = if int_or_string {
            "integer,string"
        } else {
            want.unwrap_or("")
        };
        out.errors.push(FieldError::new(
            path,
            "FieldValueTypeInvalid",
            format!("Invalid value: \"{got}\": {path} in body must be of type {t}: \"{got}\""),
        ));
        return true;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        let allowed: Vec<String> = e.iter().map(show).collect();
        out.errors.push(FieldError::new(
            path,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                allowed.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(o) => walk_object(schema, o, path, out),
        Value::Array(a) => {
            let n = a.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                out.errors.push(FieldError::new(
                    path,
                    "FieldValueTooMany",
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                out.errors.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!("Invalid value: {n}: {path} in body should have at least {min} items"),
                ));
            }
            list_type(schema, a, path, out);
            if let Some(items) = schema.get("items") {
                let mut kept = Vec::with_capacity(a.len());
                for (i, mut item) in std::mem::take(a).into_iter().enumerate() {
                    if walk(items, &mut item, &format!("{path}[{i}]"), Null::Refuse, out) {
                        kept.push(item);
                    }
                }
                *a = kept;
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.errors.push(FieldError::new(
                    path,
                    "FieldValueTooLong",
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.errors.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{s}\": {path} in body should be at least {min} chars long"
                    ),
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                let ok = regex::Regex::new(p).map(|r| r.is_match(s)).unwrap_or(true);
                if !ok {
                    out.errors.push(FieldError::new(
                        path,
                        "FieldValueInvalid",
                        format!("Invalid value: \"{s}\": {path} in body should match '{p}'"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                let excl_max =
                    schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                let excl_min =
                    schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && (f > max || (excl_max && f == max))
                {
                    let how = if excl_max {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    out.errors.push(FieldError::new(
                        path,
                        "FieldValueInvalid",
                        format!("Invalid value: {n}: {path} in body should be {how} {max}"),
                    ));
                }
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && (f < min || (excl_min && f == min))
                {
                    let how = if excl_min {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.errors.push(FieldError::new(
                        path,
                        "FieldValueInvalid",
                        format!("Invalid value: {n}: {path} in body should be {how} {min}"),
                    ));
                }
            }
        }
        _ => {}
    }
    cel_rules(schema, v, path, out);
    true
}

/// `x-kubernetes-list-type: set | map` uniqueness.
fn list_type(schema: &Value, a: &[Value], path: &str, out: &mut Outcome) {
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let identity = |v: &Value| -> Value {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Value::Object(
                keys.iter()
                    .map(|k| (k.to_string(), v.get(*k).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
            _ => v.clone(),
        }
    };
    if !matches!(
        schema.get("x-kubernetes-list-type").and_then(Value::as_str),
        Some("set") | Some("map")
    ) {
        return;
    }
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in a.iter().enumerate() {
        let id = identity(item);
        if seen.contains(&id) {
            out.errors.push(FieldError::new(
                &format!("{path}[{i}]"),
                "FieldValueDuplicate",
                format!("Duplicate value: {id}"),
            ));
        } else {
            seen.push(id);
        }
    }
}

fn walk_object(schema: &Value, o: &mut Map<String, Value>, path: &str, out: &mut Outcome) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        let child = match props.and_then(|p| p.get(&k)) {
            Some(s) => Some((s, Null::Prune)),
            None => additional
                .filter(|a| a.is_object())
                .map(|s| (s, Null::Refuse)),
        };
        let p = join(path, &k);
        match child {
            Some((s, null)) => {
                let mut v = o.remove(&k).unwrap_or(Value::Null);
                if walk(s, &mut v, &p, null, out) {
                    o.insert(k, v);
                }
            }
            None => {
                let allowed =
                    preserves(schema) || additional.and_then(Value::as_bool) == Some(true);
                if !allowed {
                    o.remove(&k);
                    out.unknown.push(p);
                }
            }
        }
    }
    if let Some(props) = props {
        for (k, s) in props {
            if !o.contains_key(k)
                && let Some(d) = s.get("default")
            {
                let mut v = d.clone();
                walk(s, &mut v, &join(path, k), Null::Prune, out);
                o.insert(k.clone(), v);
            }
        }
    }
    required(schema, o, path, out);
}

/// Evaluates the node's `x-kubernetes-validations` with `self` bound to `v`.
fn cel_rules(schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return;
    };
    for rule in rules {
        let Some(expr) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let ok = match eval_rule(expr, v) {
            Ok(b) => b,
            Err(e) => {
                out.errors.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!("Invalid value: \"object\": rule evaluation error: {e}"),
                ));
                continue;
            }
        };
        if !ok {
            let msg = rule
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("failed rule: {expr}"));
            let field = match rule.get("fieldPath").and_then(Value::as_str) {
                Some(fp) => format!("{path}{fp}"),
                None => path.to_string(),
            };
            let shown = match v {
                Value::Object(_) => "\"object\"".to_string(),
                Value::Array(_) => "\"array\"".to_string(),
                other => show(other),
            };
            out.errors.push(FieldError::new(
                &field,
                "FieldValueInvalid",
                format!("Invalid value: {shown}: {msg}"),
            ));
        }
    }
}

/// Compiles and runs one CEL rule with `self` = `v`.
pub(crate) fn eval_rule(expr: &str, v: &Value) -> Result<bool, String> {
    let program = cel_interpreter::Program::compile(expr).map_err(|e| e.to_string())?;
    let mut ctx = cel_interpreter::Context::default();
    ctx.add_variable("self", v.clone())
        .map_err(|e| e.to_string())?;
    match program.execute(&ctx).map_err(|e| e.to_string())? {
        cel_interpreter::Value::Bool(b) => Ok(b),
        other => Err(format!("rule did not evaluate to a boolean: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cel_rules_of_our_crds_evaluate() {
        let m = json!({"controller": "a", "agent": "b"});
        assert_eq!(
            eval_rule("self.all(k, k in ['controller', 'agent'])", &m),
            Ok(true)
        );
        assert_eq!(eval_rule("self.all(k, k in ['controller'])", &m), Ok(false));
        assert_eq!(
            eval_rule(
                "self.all(k, k.matches('^[a-z0-9_]+$'))",
                &json!({"ab_1": 1})
            ),
            Ok(true)
        );
        assert_eq!(
            eval_rule("self.all(k, k.matches('^[a-z0-9_]+$'))", &json!({"AB": 1})),
            Ok(false)
        );
        let one = json!({"a": 1});
        assert_eq!(
            eval_rule("[has(self.a), has(self.b)].exists_one(x, x)", &one),
            Ok(true)
        );
        assert_eq!(
            eval_rule(
                "[has(self.a), has(self.b)].exists_one(x, x)",
                &json!({"a": 1, "b": 2})
            ),
            Ok(false)
        );
        assert_eq!(
            eval_rule(
                "has(self.x) && self.x == 'External'",
                &json!({"x": "External"})
            ),
            Ok(true)
        );
        assert_eq!(
            eval_rule("has(self.x) && self.x == 'External'", &json!({})),
            Ok(false)
        );
    }

    #[test]
    fn list_map_keys_are_unique() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object",
                "x-kubernetes-preserve-unknown-fields": true}}}}}});
        let mut obj =
            json!({"status": {"conditions": [{"type": "Ready"}, {"type": "Ready", "x": 1}]}});
        let out = process(&schema, &mut obj);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].field, "status.conditions[1]");
    }

    #[test]
    fn null_items_and_map_values_are_refused_null_properties_pruned() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "properties": {
            "roles": {"type": "array", "items": {"type": "string"}},
            "maybe": {"type": "array", "items": {"type": "string", "nullable": true}},
            "defaulted": {"type": "array", "items": {"type": "string", "default": "d"}},
            "images": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": true}},
            "host": {"type": "string"}
        }}}});
        let mut obj = json!({"spec": {"roles": ["controller", null], "host": null,
            "maybe": ["a", null], "defaulted": [null], "free": [null],
            "images": {"agent": "x", "controller": null}}});
        let out = process(&schema, &mut obj);
        let errors: Vec<(&str, &str)> = out
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            errors,
            vec![
                (
                    "spec.roles[1]",
                    "Invalid value: \"null\": spec.roles[1] in body must be of type string: \"null\""
                ),
                (
                    "spec.images.controller",
                    "Invalid value: \"null\": spec.images.controller in body must be of type string: \"null\""
                ),
            ]
        );
        // A null property is pruned; nullable and defaulted items are kept.
        assert!(obj["spec"].get("host").is_none());
        assert_eq!(obj["spec"]["maybe"], json!(["a", null]));
        assert_eq!(obj["spec"]["defaulted"], json!(["d"]));
        assert_eq!(obj["spec"]["free"], json!([null]));
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "required": ["host"],
        "properties": {
            "host": {"type": "string", "pattern": "^[a-z]+$"},
            "port": {"type": "integer", "default": 22, "maximum": 65535},
            "mode": {"type": "string", "enum": ["A", "B"]}
        }}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"host": "abc", "junk": 1}});
        let out = process(&schema, &mut obj);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.unknown, vec!["spec.junk".to_string()]);
        assert_eq!(obj["spec"], json!({"host": "abc", "port": 22}));
        let mut bad = json!({"spec": {"port": "x", "mode": "C", "host": "UP"}});
        let out = process(&schema, &mut bad);
        let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.port", "spec.mode", "spec.host"]);
        let mut missing = json!({"spec": {}});
        let out = process(&schema, &mut missing);
        assert_eq!(out.errors[0].field, "spec.host");
        assert_eq!(out.errors[0].message, "Required value");
    }
}
