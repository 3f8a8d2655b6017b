//! `meta.k8s.io` Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`),
//! which is where kubectl takes its columns from.
//!
//! Custom resources get their CRD's `additionalPrinterColumns` (JSONPath,
//! typed cells, `date` cells as ages, `priority` kept so that `-o wide` shows
//! the priority-1 columns), or NAME/AGE when the CRD declares none (as
//! apiextensions' `serveDefaultColumnsIfEmpty`). Built-in kinds get the
//! columns kube-apiserver's printers give them. Rows carry the object as
//! `PartialObjectMetadata` (kubectl's `-A` and `--show-labels` read it) unless
//! `includeObject=None|Object` asks otherwise.

use serde_json::{Map, Value, json};

use super::events;
use super::resources::{ResourceInfo, Special};

/// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`: which Table a request accepts
/// (the first acceptable entry of `Accept` wins; plain JSON first means none).
pub(super) fn wanted(accept: &str) -> Option<&'static str> {
    for entry in accept.split(',') {
        let params: Vec<&str> = entry.split(';').map(str::trim).collect();
        let media = params.first().copied().unwrap_or("");
        if media != "application/json" && media != "*/*" && media != "application/*" {
            continue;
        }
        let has = |p: &str| params.iter().any(|x| x.replace(' ', "") == p);
        if has("as=Table") && has("g=meta.k8s.io") {
            if has("v=v1") {
                return Some("v1");
            }
            if has("v=v1beta1") {
                return Some("v1beta1");
            }
            continue;
        }
        if params.iter().any(|p| p.starts_with("as=")) {
            continue;
        }
        return None;
    }
    None
}

/// The content type of a Table answer.
pub(super) fn content_type(version: &str) -> String {
    format!("application/json;as=Table;v={version};g=meta.k8s.io")
}

/// What a row carries in `object` (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    /// From the `includeObject` query parameter (default `Metadata`).
    pub fn from_param(p: Option<&str>) -> Self {
        match p {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// One printed column.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    cell: Cell,
}

/// How a column's cell is computed.
#[derive(Clone, Debug)]
enum Cell {
    Name,
    Age,
    CreatedAt,
    /// A CRD column: JSONPath and type.
    Path(Vec<Step>),
    /// A built-in printer's cell.
    Builtin(fn(&Value, i64) -> Value),
}

fn col(name: &str, ty: &str, description: &str, priority: i64, cell: Cell) -> Column {
    Column {
        name: name.into(),
        ty: ty.into(),
        format: if matches!(cell, Cell::Name) {
            "name".into()
        } else {
            String::new()
        },
        description: description.into(),
        priority,
        cell,
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn name_col() -> Column {
    col("Name", "string", NAME_DESC, 0, Cell::Name)
}

fn age_col() -> Column {
    col("Age", "string", AGE_DESC, 0, Cell::Age)
}

fn columns(info: &ResourceInfo) -> Vec<Column> {
    let b = |name: &str, ty: &str, desc: &str, prio: i64, f: fn(&Value, i64) -> Value| {
        col(name, ty, desc, prio, Cell::Builtin(f))
    };
    match info.special {
        Special::Custom => {
            let mut cols = vec![name_col()];
            let declared = info.printer_columns.as_array().filter(|a| !a.is_empty());
            match declared {
                None => cols.push(col("Age", "date", AGE_DESC, 0, Cell::Age)),
                Some(list) => {
                    for c in list {
                        let path = c["jsonPath"].as_str().unwrap_or("");
                        let ty = c["type"].as_str().unwrap_or("string");
                        cols.push(Column {
                            name: c["name"].as_str().unwrap_or("").into(),
                            ty: ty.into(),
                            format: c["format"].as_str().unwrap_or("").into(),
                            description: c["description"].as_str().unwrap_or("").into(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            cell: Cell::Path(parse_path(path)),
                        });
                    }
                }
            }
            cols
        }
        Special::Crd => vec![
            name_col(),
            col("Created At", "date", AGE_DESC, 0, Cell::CreatedAt),
        ],
        Special::Namespace => vec![
            name_col(),
            b(
                "Status",
                "string",
                "The status of the namespace",
                0,
                |o, _| str_cell(&o["status"]["phase"]),
            ),
            age_col(),
        ],
        Special::Secret => vec![
            name_col(),
            b("Type", "string", "The type of the secret", 0, |o, _| {
                o["type"].as_str().unwrap_or("Opaque").into()
            }),
            b(
                "Data",
                "string",
                "The number of entries in the secret",
                0,
                |o, _| len_of(&o["data"]).into(),
            ),
            age_col(),
        ],
        Special::Event | Special::EventV1 => vec![
            b(
                "Last Seen",
                "string",
                "Time when last event occurred",
                0,
                |o, now| {
                    let t = o["lastTimestamp"]
                        .as_str()
                        .or(o["eventTime"].as_str())
                        .or(o["firstTimestamp"].as_str())
                        .or(o["metadata"]["creationTimestamp"].as_str());
                    age_of(t, now).into()
                },
            ),
            b("Type", "string", "Type of this event", 0, |o, _| {
                str_cell(&o["type"])
            }),
            b(
                "Reason",
                "string",
                "Reason why this event was generated",
                0,
                |o, _| str_cell(&o["reason"]),
            ),
            b(
                "Object",
                "string",
                "The object this Event is about",
                0,
                |o, _| {
                    let io = &o["involvedObject"];
                    format!(
                        "{}/{}",
                        io["kind"].as_str().unwrap_or("").to_lowercase(),
                        io["name"].as_str().unwrap_or("")
                    )
                    .into()
                },
            ),
            b(
                "Subobject",
                "string",
                "Subobject of the involved object",
                1,
                |o, _| {
                    o["involvedObject"]["fieldPath"]
                        .as_str()
                        .unwrap_or("")
                        .into()
                },
            ),
            b(
                "Source",
                "string",
                "The component reporting this event",
                1,
                |o, _| {
                    let s = &o["source"];
                    let comp = s["component"]
                        .as_str()
                        .or(o["reportingComponent"].as_str())
                        .unwrap_or("");
                    match s["host"].as_str() {
                        Some(h) if !h.is_empty() => format!("{comp}, {h}").into(),
                        _ => comp.into(),
                    }
                },
            ),
            b(
                "Message",
                "string",
                "A human-readable description",
                0,
                |o, _| str_cell(&o["message"]),
            ),
            b(
                "First Seen",
                "string",
                "The first time this event was seen",
                1,
                |o, now| {
                    let t = o["firstTimestamp"]
                        .as_str()
                        .or(o["eventTime"].as_str())
                        .or(o["metadata"]["creationTimestamp"].as_str());
                    age_of(t, now).into()
                },
            ),
            b(
                "Count",
                "string",
                "The number of times this event has occurred",
                1,
                |o, _| {
                    let n = o["count"]
                        .as_i64()
                        .or(o["series"]["count"].as_i64())
                        .unwrap_or(1);
                    n.to_string().into()
                },
            ),
            b("Name", "string", NAME_DESC, 1, |o, _| {
                str_cell(&o["metadata"]["name"])
            }),
        ],
        Special::None | Special::Review => builtin_columns(info),
    }
}

fn builtin_columns(info: &ResourceInfo) -> Vec<Column> {
    let b = |name: &str, ty: &str, desc: &str, prio: i64, f: fn(&Value, i64) -> Value| {
        col(name, ty, desc, prio, Cell::Builtin(f))
    };
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "configmaps") => vec![
            name_col(),
            b("Data", "string", "Number of data entries", 0, |o, _| {
                (len_of(&o["data"]) + len_of(&o["binaryData"])).into()
            }),
            age_col(),
        ],
        ("coordination.k8s.io", "leases") => vec![
            name_col(),
            b("Holder", "string", "The holder of the lease", 0, |o, _| {
                o["spec"]["holderIdentity"].as_str().unwrap_or("").into()
            }),
            age_col(),
        ],
        ("", "serviceaccounts") => vec![
            name_col(),
            b("Secrets", "string", "Number of secrets", 0, |o, _| {
                len_of(&o["secrets"]).into()
            }),
            age_col(),
        ],
        ("apps", "deployments") => vec![
            name_col(),
            b("Ready", "string", "Ready replicas", 0, |o, _| {
                format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                )
                .into()
            }),
            b("Up-to-date", "integer", "Updated replicas", 0, |o, _| {
                o["status"]["updatedReplicas"].as_i64().unwrap_or(0).into()
            }),
            b("Available", "integer", "Available replicas", 0, |o, _| {
                o["status"]["availableReplicas"]
                    .as_i64()
                    .unwrap_or(0)
                    .into()
            }),
            age_col(),
        ],
        ("", "services") => vec![
            name_col(),
            b("Type", "string", "The type of the service", 0, |o, _| {
                o["spec"]["type"].as_str().unwrap_or("ClusterIP").into()
            }),
            b("Cluster-IP", "string", "The cluster IP", 0, |o, _| {
                o["spec"]["clusterIP"].as_str().unwrap_or("<none>").into()
            }),
            b("External-IP", "string", "External IPs", 0, |o, _| {
                match o["spec"]["externalIPs"].as_array() {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                        .into(),
                    _ => "<none>".into(),
                }
            }),
            b("Port(s)", "string", "Ports", 0, |o, _| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p["port"].as_i64().unwrap_or(0),
                            p["protocol"].as_str().unwrap_or("TCP")
                        )
                    })
                    .collect();
                if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",").into()
                }
            }),
            age_col(),
        ],
        _ => vec![name_col(), age_col()],
    }
}

fn str_cell(v: &Value) -> Value {
    v.as_str().unwrap_or("").into()
}

fn len_of(v: &Value) -> i64 {
    match v {
        Value::Object(m) => m.len() as i64,
        Value::Array(a) => a.len() as i64,
        _ => 0,
    }
}

fn parse_time(t: &str) -> Option<i64> {
    t.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn age_of(t: Option<&str>, now: i64) -> String {
    match t.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// apimachinery's `duration.HumanDuration`, in seconds.
pub(super) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One step of a (simple) JSONPath, as CRD printer columns use them.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    /// `..name`
    Recursive(String),
    /// `[?(@.a.b OP literal)]`, or existence when `op` is empty.
    Filter {
        path: Vec<String>,
        op: String,
        value: Value,
    },
}

fn parse_path(p: &str) -> Vec<Step> {
    let p = p.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && chars[*i] != '.' && chars[*i] != '[' {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                i += 2;
                steps.push(Step::Recursive(ident(&mut i)));
            }
            '.' => {
                i += 1;
                let name = ident(&mut i);
                if name == "*" {
                    steps.push(Step::Wildcard);
                } else if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                // Find the matching `]` (outside quotes).
                let mut j = i + 1;
                let mut quote: Option<char> = None;
                while j < chars.len() {
                    match (quote, chars[j]) {
                        (None, '"' | '\'') => quote = Some(chars[j]),
                        (Some(q), c) if c == q => quote = None,
                        (None, ']') => break,
                        _ => {}
                    }
                    j += 1;
                }
                let inner: String = chars[i + 1..j.min(chars.len())].iter().collect();
                steps.push(parse_bracket(inner.trim()));
                i = j + 1;
            }
            _ => {
                let name = ident(&mut i);
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
        }
    }
    steps
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        Some(s[1..s.len() - 1].to_string())
    } else {
        None
    }
}

fn parse_bracket(inner: &str) -> Step {
    if inner == "*" {
        return Step::Wildcard;
    }
    if let Some(name) = unquote(inner) {
        return Step::Field(name);
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Step::Index(n);
    }
    if let Some(f) = inner
        .strip_prefix("?(")
        .and_then(|s| s.strip_suffix(')'))
        .map(str::trim)
    {
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if let Some((l, r)) = f.split_once(op) {
                let value = unquote(r)
                    .map(Value::String)
                    .or_else(|| serde_json::from_str(r.trim()).ok())
                    .unwrap_or(Value::Null);
                return Step::Filter {
                    path: at_path(l),
                    op: op.into(),
                    value,
                };
            }
        }
        return Step::Filter {
            path: at_path(f),
            op: String::new(),
            value: Value::Null,
        };
    }
    Step::Field(inner.to_string())
}

fn at_path(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('@')
        .split('.')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn compare(a: &Value, op: &str, b: &Value) -> bool {
    let num = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok()))
    };
    match op {
        "==" => a == b || (num(a).is_some() && num(a) == num(b)),
        "!=" => !(a == b || (num(a).is_some() && num(a) == num(b))),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => match op {
                "<" => x < y,
                ">" => x > y,
                "<=" => x <= y,
                _ => x >= y,
            },
            _ => false,
        },
    }
}

fn recurse<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(name) {
                out.push(x);
            }
            for x in m.values() {
                recurse(x, name, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| recurse(x, name, out)),
        _ => {}
    }
}

/// Evaluates a parsed JSONPath; every result in document order.
fn eval<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => {
                    if let Some(x) = v.get(f.as_str()) {
                        next.push(x);
                    }
                }
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let i = if *n < 0 { a.len() as i64 + n } else { *n };
                        if let Some(x) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                            next.push(x);
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Recursive(name) => recurse(v, name, &mut next),
                Step::Filter { path, op, value } => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(m) => m.values().collect(),
                        _ => Vec::new(),
                    };
                    for item in items {
                        let mut x = Some(item);
                        for p in path {
                            x = x.and_then(|x| x.get(p.as_str()));
                        }
                        let keep = match (x, op.as_str()) {
                            (Some(_), "") => true,
                            (Some(x), op) => compare(x, op, value),
                            (None, _) => false,
                        };
                        if keep {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// A CRD column's cell: the first JSONPath result, typed like apiextensions'
/// `tableconvertor` (`string` columns print like `kubectl -o jsonpath`, with
/// arrays and maps as compact JSON; `date` as an age; missing as `null`).
fn typed_cell(ty: &str, steps: &[Step], obj: &Value, now: i64) -> Value {
    let Some(v) = eval(steps, obj).into_iter().next() else {
        return Value::Null;
    };
    match ty {
        "string" => match v {
            Value::String(s) => s.clone().into(),
            Value::Null => Value::Null,
            Value::Array(_) | Value::Object(_) => {
                serde_json::to_string(v).unwrap_or_default().into()
            }
            other => other.to_string().into(),
        },
        "integer" => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Value::from)
            .unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => v
            .as_str()
            .and_then(parse_time)
            .map(|t| Value::from(human_duration(now - t)))
            .unwrap_or(Value::Null),
        _ => v.clone(),
    }
}

fn cell(c: &Column, obj: &Value, now: i64) -> Value {
    match &c.cell {
        Cell::Name => obj["metadata"]["name"].as_str().unwrap_or("").into(),
        Cell::Age => age_of(obj["metadata"]["creationTimestamp"].as_str(), now).into(),
        Cell::CreatedAt => obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("<unknown>")
            .into(),
        Cell::Path(steps) => typed_cell(&c.ty, steps, obj, now),
        Cell::Builtin(f) => f(obj, now),
    }
}

/// The row `object`: `PartialObjectMetadata` (default), the object, or none.
fn row_object(view: &Value, include: Include, table_version: &str) -> Option<Value> {
    match include {
        Include::None => None,
        Include::Object => Some(view.clone()),
        Include::Metadata => {
            let mut metadata: Map<String, Value> =
                view["metadata"].as_object().cloned().unwrap_or_default();
            metadata.remove("managedFields");
            Some(json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": format!("meta.k8s.io/{table_version}"),
                "metadata": metadata,
            }))
        }
    }
}

/// A Table of `views` (objects as the client's API shows them).
pub(super) struct TableBuilder {
    columns: Vec<Column>,
    core_events: bool,
    version: &'static str,
    include: Include,
    now: i64,
}

impl TableBuilder {
    /// The columns for `info`, in Table version `version`.
    pub fn new(info: &ResourceInfo, version: &'static str, include: Include) -> Self {
        Self {
            columns: columns(info),
            core_events: info.special == Special::EventV1,
            version,
            include,
            now: jiff::Timestamp::now().as_second(),
        }
    }

    /// One row for one object, ages as of `now` (Unix seconds).
    fn row_at(&self, view: &Value, now: i64) -> Value {
        // events.k8s.io views print like core events.
        let source = if self.core_events {
            events::from_v1(view)
        } else {
            view.clone()
        };
        let cells: Vec<Value> = self.columns.iter().map(|c| cell(c, &source, now)).collect();
        let mut row = json!({"cells": cells});
        if let Some(o) = row_object(view, self.include, self.version) {
            row["object"] = o;
        }
        row
    }

    /// The Table of `views`, with list metadata (`resourceVersion`, `continue`).
    pub fn table(&self, views: &[Value], metadata: Value) -> Value {
        self.table_at(views, metadata, self.now)
    }

    /// [`Self::table`] with ages as of `now`: a watch outlives the builder,
    /// so each event's row is aged when it is sent.
    pub fn table_at(&self, views: &[Value], metadata: Value, now: i64) -> Value {
        let defs: Vec<Value> = self
            .columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "type": c.ty, "format": c.format,
                    "description": c.description, "priority": c.priority,
                })
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": format!("meta.k8s.io/{}", self.version),
            "metadata": metadata,
            "columnDefinitions": defs,
            "rows": views.iter().map(|v| self.row_at(v, now)).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_and_arrays() {
        let obj = json!({"spec": {"roles": ["a", "b"], "n": 3},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "Done"}]}});
        let p = parse_path(r#".status.conditions[?(@.type=="Ready")].status"#);
        assert_eq!(typed_cell("string", &p, &obj, 0), json!("True"));
        let p = parse_path(".spec.roles");
        assert_eq!(typed_cell("string", &p, &obj, 0), json!(r#"["a","b"]"#));
        let p = parse_path(".spec.roles[1]");
        assert_eq!(typed_cell("string", &p, &obj, 0), json!("b"));
        let p = parse_path(".spec.n");
        assert_eq!(typed_cell("integer", &p, &obj, 0), json!(3));
        assert_eq!(typed_cell("string", &p, &obj, 0), json!("3"));
        let p = parse_path(".spec.missing");
        assert_eq!(typed_cell("string", &p, &obj, 0), Value::Null);
        let p = parse_path("{.status.conditions[*].type}");
        assert_eq!(typed_cell("string", &p, &obj, 0), json!("Synced"));
    }

    #[test]
    fn ages_like_apimachinery() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(5 * 60), "5m");
        assert_eq!(human_duration(5 * 60 + 7), "5m7s");
        assert_eq!(human_duration(3 * 3600), "3h");
        assert_eq!(human_duration(3 * 3600 + 600), "3h10m");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn accept_negotiation() {
        let k = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wanted(k), Some("v1"));
        assert_eq!(
            wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io"),
            Some("v1beta1")
        );
        assert_eq!(wanted("application/json"), None);
        assert_eq!(wanted(""), None);
    }
}
