//! Value formatting and INI rendering, in the dialect the containers read:
//! Python 2 `ConfigParser` followed by contrailctl's `eval` of each value
//! (`[...]`/`{...}` through `ast.literal_eval`, `true`/`false` as booleans).
//!
//! Rendering refuses, rather than silently alters, values the parser would read
//! back differently: raw newlines that would not survive as continuation lines
//! (an empty one, one starting with `#` or `;`, read as a comment by Python 3's
//! parser), `%(` (interpolation), a `;` after white space (inline comment),
//! leading or trailing white space (stripped by the parser; "white space" as
//! Python's `str.isspace` has it, which includes `\x1c`-`\x1f`), and lists or
//! maps nested deeper than Python's parser reads.

use serde_json::Value;

use super::schema::ValueType;

/// Why a value cannot be written to a role file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value's type does not match the schema's.
    #[error("expected {expected}, got {got}")]
    WrongType {
        /// What the schema wants.
        expected: ValueType,
        /// What was given.
        got: &'static str,
    },
    /// The parser would read the value back differently.
    #[error("cannot be written losslessly: {0}")]
    NotRepresentable(&'static str),
}

/// The deepest nesting of lists and maps a value may have: Python's parser
/// refuses about 200 levels of brackets ("too many nested parentheses");
/// contrailctl's keys need two or three.
pub const MAX_NESTING: usize = 32;

/// White space as Python's `str.isspace` (what `strip()` removes): Unicode
/// white space, plus the information separators `\x1c`-`\x1f`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Formats `value` for a key of type `ty`. Returns the text after `key = `;
/// multi-line strings come back with continuation lines already indented.
pub fn format_value(value: &Value, ty: ValueType) -> Result<String, ValueError> {
    let text = match (ty, value) {
        (ValueType::String, Value::String(s)) => s.clone(),
        (ValueType::String, Value::Number(n)) => n.to_string(),
        (ValueType::String, Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.clone()),
                    Value::Number(n) => parts.push(n.to_string()),
                    other => {
                        return Err(ValueError::WrongType {
                            expected: ty,
                            got: match other {
                                Value::Array(_) => "a list containing a list",
                                Value::Object(_) => "a list containing a map",
                                _ => "a list containing a boolean or null",
                            },
                        });
                    }
                }
            }
            parts.join(",")
        }
        (ValueType::Boolean, Value::Bool(b)) => if *b { "True" } else { "False" }.to_string(),
        (ValueType::Array, Value::Array(_)) | (ValueType::Object, Value::Object(_)) => {
            if nesting(value) > MAX_NESTING {
                return Err(ValueError::NotRepresentable(
                    "lists and maps nested more than 32 levels deep",
                ));
            }
            python_literal(value)
        }
        (_, other) => {
            return Err(ValueError::WrongType {
                expected: ty,
                got: type_name(other),
            });
        }
    };
    if ty == ValueType::String {
        check_plain_string(&text)?;
    }
    check_representable(&text)?;
    Ok(text.replace('\n', "\n    "))
}

/// A short name of a JSON value's type, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// contrailctl `eval`s every value: a string-typed value must not read back as a
/// list, map or boolean.
fn check_plain_string(text: &str) -> Result<(), ValueError> {
    if text.starts_with('[') || text.starts_with('{') {
        return Err(ValueError::NotRepresentable(
            "a string starting with '[' or '{' is read by contrailctl as a Python literal",
        ));
    }
    if ["yes", "true", "no", "false"]
        .iter()
        .any(|b| text.eq_ignore_ascii_case(b))
    {
        return Err(ValueError::NotRepresentable(
            "contrailctl reads yes/true/no/false as a boolean in a string-typed key",
        ));
    }
    Ok(())
}

fn check_representable(text: &str) -> Result<(), ValueError> {
    if text.contains("%(") {
        return Err(ValueError::NotRepresentable(
            "'%(' starts a ConfigParser interpolation",
        ));
    }
    if text.contains('\r') {
        return Err(ValueError::NotRepresentable("carriage return"));
    }
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() > 1 && lines.iter().any(|l| l.trim_matches(is_py_space).is_empty()) {
        return Err(ValueError::NotRepresentable(
            "an empty line inside a multi-line value is dropped by the parser",
        ));
    }
    if lines.iter().any(|l| l.trim_matches(is_py_space) != *l) {
        return Err(ValueError::NotRepresentable(
            "leading or trailing white space (on any line) is stripped by the parser",
        ));
    }
    if lines[1..].iter().any(|l| l.starts_with(['#', ';'])) {
        return Err(ValueError::NotRepresentable(
            "a line of a multi-line value starting with '#' or ';' is read as a comment by Python 3's parser",
        ));
    }
    // ConfigParser cuts the first line at its first ';' when the character before
    // it (Python index pos-1, so the last character for pos 0) is white space.
    let first = lines[0];
    if let Some(pos) = first.find(';') {
        let before = if pos == 0 {
            first.chars().last()
        } else {
            first[..pos].chars().last()
        };
        if before.is_some_and(is_py_space) {
            return Err(ValueError::NotRepresentable(
                "a ';' after white space starts an inline comment",
            ));
        }
    }
    Ok(())
}

/// A Python literal for `ast.literal_eval`: JSON-like, with `True`/`False`/`None`,
/// map keys sorted so equal maps render identically.
pub fn python_literal(v: &Value) -> String {
    let mut out = String::new();
    write_literal(v, &mut out);
    out
}

fn write_literal(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push_str(": ");
                write_literal(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One `key = value` line (the value already formatted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// Option name.
    pub key: String,
    /// Formatted value.
    pub value: String,
}

/// Renders sections in the given order; empty sections are left out.
pub fn render_ini(sections: &[(String, Vec<IniEntry>)]) -> String {
    let mut out = String::from("# Rendered by server-manager; local edits are overwritten.\n");
    for (name, entries) in sections.iter().filter(|(_, e)| !e.is_empty()) {
        out.push('\n');
        out.push('[');
        out.push_str(name);
        out.push_str("]\n");
        for e in entries {
            out.push_str(&e.key);
            if e.value.is_empty() {
                out.push_str(" =\n");
            } else {
                out.push_str(" = ");
                out.push_str(&e.value);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_each_type_as_the_containers_expect() {
        let f = |v: Value, t| format_value(&v, t).unwrap();
        assert_eq!(f(json!(true), ValueType::Boolean), "True");
        assert_eq!(f(json!(false), ValueType::Boolean), "False");
        assert_eq!(f(json!("10.0.0.1"), ValueType::String), "10.0.0.1");
        assert_eq!(f(json!(8082), ValueType::String), "8082");
        assert_eq!(
            f(json!(["10.0.0.1", "10.0.0.2"]), ValueType::String),
            "10.0.0.1,10.0.0.2"
        );
        assert_eq!(f(json!(["/a", "/b"]), ValueType::Array), r#"["/a", "/b"]"#);
        assert_eq!(
            f(
                json!({"h2": "10.0.0.2", "h1": {"x": [true, null, 1.5]}}),
                ValueType::Object
            ),
            r#"{"h1": {"x": [True, None, 1.5]}, "h2": "10.0.0.2"}"#
        );
        assert_eq!(f(json!("a\nb"), ValueType::String), "a\n    b");
        assert_eq!(
            f(json!("é {{ lookup('pipe','id') }}"), ValueType::String),
            "é {{ lookup('pipe','id') }}"
        );
        assert_eq!(f(json!("; rm -rf /"), ValueType::String), "; rm -rf /");
        assert_eq!(
            f(json!(["it's \"q\"\n"]), ValueType::Array),
            r#"["it's \"q\"\n"]"#
        );
    }

    #[test]
    fn refuses_what_the_parser_would_change() {
        let bad = |v: Value, t| format_value(&v, t).unwrap_err();
        assert!(matches!(
            bad(json!("yes"), ValueType::Boolean),
            ValueError::WrongType { .. }
        ));
        assert!(matches!(
            bad(json!({"a": 1}), ValueType::String),
            ValueError::WrongType { .. }
        ));
        assert!(matches!(
            bad(json!([[1]]), ValueType::String),
            ValueError::WrongType { .. }
        ));
        for s in [
            "%(x)s", "a ;b", " lead", "trail ", "a\n\nb", "a\n  b", "a\r\nb",
        ] {
            assert!(
                matches!(
                    bad(json!(s), ValueType::String),
                    ValueError::NotRepresentable(_)
                ),
                "{s:?}"
            );
        }
        assert!(matches!(
            bad(json!(["x ;y"]), ValueType::Array),
            ValueError::NotRepresentable(_)
        ));
        // What Python's strip() removes and Rust's trim() keeps.
        for s in ["a\u{1c}", "\u{1f}a", "a\u{1d};b", "a\n\u{1e}"] {
            assert!(
                matches!(
                    bad(json!(s), ValueType::String),
                    ValueError::NotRepresentable(_)
                ),
                "{s:?}"
            );
        }
        for s in ["a\n# b", "a\n;b"] {
            assert!(
                matches!(
                    bad(json!(s), ValueType::String),
                    ValueError::NotRepresentable(_)
                ),
                "{s:?}"
            );
        }
        let mut deep = json!(1);
        for _ in 0..=MAX_NESTING {
            deep = json!([deep]);
        }
        assert!(matches!(
            bad(deep, ValueType::Array),
            ValueError::NotRepresentable(_)
        ));
    }

    #[test]
    fn renders_sections_in_order_and_skips_empty_ones() {
        let e = |k: &str, v: &str| IniEntry {
            key: k.into(),
            value: v.into(),
        };
        let text = render_ini(&[
            ("GLOBAL".into(), vec![e("a", "1"), e("b", "")]),
            ("EMPTY".into(), vec![]),
            ("API".into(), vec![e("c", "x\n    y")]),
        ]);
        assert_eq!(
            text,
            "# Rendered by server-manager; local edits are overwritten.\n\n[GLOBAL]\na = 1\nb =\n\n[API]\nc = x\n    y\n"
        );
    }
}
