//! Label selectors (full syntax) and field selectors.

use serde_json::Value;

use super::http::ApiError;

#[derive(Debug, Clone)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default)]
pub(super) struct LabelSelector(Vec<(String, Op)>);

fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = |r: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector: \"{r}\""
            ))
        };
        let mut reqs = Vec::new();
        for r in split_top(s) {
            let req = if let Some(k) = r.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = r.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = r.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = r.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = r.split_once(" notin ") {
                (
                    k.trim().to_string(),
                    Op::NotIn(set_values(v).ok_or_else(|| bad(&r))?),
                )
            } else if let Some((k, v)) = r.split_once(" in ") {
                (
                    k.trim().to_string(),
                    Op::In(set_values(v).ok_or_else(|| bad(&r))?),
                )
            } else if let Some((k, v)) = r.split_once('>') {
                (
                    k.trim().to_string(),
                    Op::Gt(v.trim().parse().map_err(|_| bad(&r))?),
                )
            } else if let Some((k, v)) = r.split_once('<') {
                (
                    k.trim().to_string(),
                    Op::Lt(v.trim().parse().map_err(|_| bad(&r))?),
                )
            } else if r.contains(' ') || r.contains('(') {
                return Err(bad(&r));
            } else {
                (r.trim().to_string(), Op::Exists)
            };
            if req.0.is_empty() {
                return Err(bad(&r));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| {
            let v = get(k);
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => !v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed field selector over the stored form of the object.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    /// Parses `a=b,c!=d`; `allowed` says which field paths this resource supports.
    pub fn parse(s: &str, allowed: &dyn Fn(&str) -> bool) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for r in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (k, neg, v) = if let Some((k, v)) = r.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = r.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = r.split_once('=') {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{r}'"
                )));
            };
            let k = k.trim();
            if !allowed(k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((
                k.split('.').map(String::from).collect(),
                neg,
                v.trim().to_string(),
            ));
        }
        Ok(Self(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, neg, want)| {
            let mut cur = Some(obj);
            for p in path {
                cur = cur.and_then(|c| c.get(p));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (got == *want) != *neg
        })
    }
}

/// Field paths a resource supports in field selectors (on its stored form).
pub(super) fn field_allowed(resource: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match resource {
            "events" => {
                field.starts_with("involvedObject.")
                    || matches!(
                        field,
                        "reason" | "type" | "source" | "reportingComponent" | "source.component"
                    )
            }
            "secrets" => field == "type",
            "namespaces" => field == "status.phase",
            _ => false,
        }
}
