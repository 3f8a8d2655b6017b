//! Request body decoding with limits per content type, so that no body can
//! hold a worker for long:
//!
//! | content type | size | nesting |
//! |---|---|---|
//! | JSON (`application/json`, the JSON patch types) | 3 MiB (kube-apiserver's limit) | 128 (serde_json's recursion limit) |
//! | YAML (`application/yaml`, `application/apply-patch+yaml`) | 1 MiB | 100 flow collections (`[`, `{`), 128 in all |
//! | protobuf | 3 MiB | fixed by the decoded kinds |
//!
//! A larger body is answered 413 before it is read whole; a deeper one 400,
//! before it is parsed: libyaml takes time quadratic in the depth of nested
//! flow collections (a 250 KB `{a: {a: …` took minutes), so YAML is scanned
//! first, in one linear pass. A YAML body that is valid JSON (what kubectl
//! sends for server-side apply) is parsed as JSON.

use serde_json::Value;

use super::http::ApiError;

/// kube-apiserver's request body limit.
pub(super) const MAX_JSON: usize = 3 * 1024 * 1024;
/// YAML is parsed ~100× slower than JSON per byte.
pub(super) const MAX_YAML: usize = 1024 * 1024;
/// Deepest nesting of YAML flow collections accepted.
pub(super) const MAX_YAML_FLOW_DEPTH: usize = 100;

/// The largest body accepted with this `Content-Type`.
pub(super) fn limit(content_type: &str) -> usize {
    if is_yaml(content_type) {
        MAX_YAML
    } else {
        MAX_JSON
    }
}

/// Whether a `Content-Type` is YAML.
pub(super) fn is_yaml(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    base.ends_with("yaml")
}

/// The 413 answer for a body over `limit` bytes.
pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {limit}"),
    )
}

/// Decodes a YAML body (`what` names it in errors: "YAML", "patch").
pub(super) fn yaml(body: &[u8], what: &str) -> Result<Value, ApiError> {
    if body.len() > MAX_YAML {
        return Err(too_large(MAX_YAML));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{') | Some(b'['))
        && let Ok(v) = serde_json::from_slice(body)
    {
        return Ok(v);
    }
    if flow_depth_exceeds(body, MAX_YAML_FLOW_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "error decoding {what}: collections nested more than {MAX_YAML_FLOW_DEPTH} levels deep"
        )));
    }
    serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding {what}: {e}")))
}

/// Whether YAML text nests flow collections (`[…]`, `{…}`) more than
/// `limit` deep, counted outside quoted strings, comments and block scalars.
/// One linear pass; an overestimate at worst (a stray bracket in a plain
/// scalar), never an underestimate.
pub(super) fn flow_depth_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    // Indentation of the current line, and whether only spaces came before.
    let mut indent = 0usize;
    let mut line_start = true;
    // Inside a block scalar: lines indented more than this belong to it.
    let mut block: Option<usize> = None;
    // The previous byte (b'\n' at a line start).
    let mut prev = b'\n';
    while i < text.len() {
        let c = text[i];
        if c == b'\n' {
            line_start = true;
            indent = 0;
            prev = c;
            i += 1;
            continue;
        }
        if line_start {
            if c == b' ' {
                indent += 1;
                i += 1;
                continue;
            }
            line_start = false;
            if let Some(parent) = block {
                if indent > parent || c == b'\r' {
                    // A line of the block scalar: skip it.
                    while i < text.len() && text[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                block = None;
            }
        }
        match c {
            b'#' if prev.is_ascii_whitespace() => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\''
                if depth > 0 && b":[{,".contains(&prev)
                    || prev.is_ascii_whitespace()
                    || prev == b'-' =>
            {
                // A quoted scalar: to its closing quote (`\\` escapes in double quotes).
                i += 1;
                while i < text.len() && text[i] != c {
                    i += if c == b'"' && text[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'|' | b'>'
                if depth == 0 && prev.is_ascii_whitespace() && block_header(&text[i + 1..]) =>
            {
                // A block scalar header: its content starts on the next line.
                block = Some(indent);
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        prev = c;
        i += 1;
    }
    false
}

/// Whether the rest of a line after `|` or `>` is a block scalar header's:
/// chomping and indentation indicators, then nothing or a comment.
fn block_header(rest: &[u8]) -> bool {
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end];
    let ind = line
        .iter()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-'))
        .count();
    let tail = line[ind..].trim_ascii_start();
    tail.is_empty() || tail.starts_with(b"#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_depth_is_counted_outside_strings_comments_and_block_scalars() {
        assert!(!flow_depth_exceeds(b"a: [[1, 2], {b: [3]}]\n", 3));
        assert!(flow_depth_exceeds(b"a: [[1, 2], {b: [3]}]\n", 2));
        assert!(flow_depth_exceeds("[".repeat(101).as_bytes(), 100));
        assert!(!flow_depth_exceeds("[".repeat(100).as_bytes(), 100));
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\n",
            "[".repeat(200),
            "{".repeat(200),
            "[".repeat(200)
        );
        assert!(!flow_depth_exceeds(quoted.as_bytes(), 10));
        let block = format!(
            "data:\n  script: |\n    {}\n    if [[ -f x ]]; then\n\n  other: [x]\n",
            "[".repeat(200)
        );
        assert!(!flow_depth_exceeds(block.as_bytes(), 10));
        // The block ends at a line indented no more than its key's.
        let after = format!("a: |\n  text\nb: {}\n", "[".repeat(20));
        assert!(flow_depth_exceeds(after.as_bytes(), 10));
    }

    #[test]
    fn deep_yaml_is_refused_at_once_and_json_in_yaml_is_parsed_as_json() {
        for body in ["[".repeat(250_000), "{a: ".repeat(62_500)] {
            let t = std::time::Instant::now();
            let e = yaml(body.as_bytes(), "YAML").unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains("nested more than 100"), "{}", e.message);
            // A hang check, not a performance claim.
            assert!(t.elapsed() < std::time::Duration::from_secs(2));
        }
        let e = yaml("a: b\n".repeat(300_000).as_bytes(), "YAML").unwrap_err();
        assert_eq!(e.code, 413);
        let deep_json = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        let mut v = &yaml(deep_json.as_bytes(), "YAML").unwrap();
        for _ in 0..120 {
            v = &v[0];
        }
        assert_eq!(*v, Value::from(1));
        // `a > b` is a plain scalar, not a block scalar hiding what follows.
        let plain = format!("x: a > b\ny: {}\n", "[".repeat(20));
        assert!(flow_depth_exceeds(plain.as_bytes(), 10));
        assert_eq!(
            yaml(b"kind: ConfigMap\ndata: {a: '1'}\n", "YAML").unwrap(),
            serde_json::json!({"kind": "ConfigMap", "data": {"a": "1"}})
        );
        assert_eq!(limit("application/apply-patch+yaml"), MAX_YAML);
        assert_eq!(limit("application/json"), MAX_JSON);
    }
}
