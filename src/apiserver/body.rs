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

/// Property tests of request body decoding and the patch types: arbitrary
/// and mutated bodies never panic and never take long (each case is bounded
/// by [`fuzz::BOUND`], a hang check, not a performance claim).
#[cfg(test)]
mod fuzz {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::{patch, proto};
    use super::*;

    const BOUND: Duration = Duration::from_secs(2);

    /// Valid bodies of each kind, to be mutated.
    fn seeds() -> Vec<Vec<u8>> {
        let mut proto_cm = b"k8s\0".to_vec();
        // runtime.Unknown{typeMeta{apiVersion: v1, kind: ConfigMap}, raw: ConfigMap{metadata{name: c}}}
        let type_meta = [b"\x0a\x02v1".as_slice(), b"\x12\x09ConfigMap"].concat();
        proto_cm.extend([0x0a, type_meta.len() as u8]);
        proto_cm.extend(&type_meta);
        let raw = b"\x0a\x03\x0a\x01c";
        proto_cm.extend([0x12, raw.len() as u8]);
        proto_cm.extend(raw);
        vec![
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"a":"b"}},"data":{"k":"v"}}"#.to_vec(),
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: |\n    [x\n  l: [1, {a: 'b'}]\n".to_vec(),
            br#"[{"op":"add","path":"/data/x","value":"1"},{"op":"test","path":"/data/k","value":"v"},{"op":"remove","path":"/metadata/labels"}]"#.to_vec(),
            br#"{"metadata":{"labels":{"a":null}},"spec":{"containers":[{"name":"a","image":"x"},{"$patch":"delete","name":"b"}]}}"#.to_vec(),
            proto_cm,
        ]
    }

    /// A mutation of `seed`: bytes flipped, inserted (often brackets), cut.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let n = seeds().len();
        (
            0..n,
            proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 0..12),
        )
            .prop_map(|(i, edits)| {
                let mut b = seeds()[i].clone();
                for (at, op, byte) in edits {
                    let pos = if b.is_empty() { 0 } else { at.index(b.len()) };
                    match op {
                        0 if !b.is_empty() => b[pos] = byte,
                        1 => b.insert(pos, b"[{]}:\"'-|#\n "[usize::from(byte) % 12]),
                        2 => b.truncate(pos),
                        _ => {
                            let run = vec![b"[{"[usize::from(byte) % 2]; usize::from(byte)];
                            b.splice(pos..pos, run);
                        }
                    }
                }
                b
            })
    }

    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            mutated(),
            proptest::collection::vec(any::<u8>(), 0..512),
            "[\\[\\]{}:, a-z0-9\"'\\-\\n#|>&*!]{0,400}".prop_map(String::into_bytes),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z$/~0-9]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("metadata".to_string()),
                        Just("name".to_string()),
                        Just("$patch".to_string()),
                        Just("containers".to_string()),
                        Just("op".to_string()),
                        Just("path".to_string()),
                        Just("value".to_string()),
                        "[a-z]{1,4}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every decoder on one body, then every patch type with what decoded.
    fn decode_all(body: &[u8]) {
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        let mut decoded = Vec::new();
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            decoded.push(v);
        }
        if let Ok(v) = yaml(body, "YAML") {
            decoded.push(v);
        }
        if let Ok(v) = proto::decode(body) {
            decoded.push(v);
        }
        for p in &decoded {
            let _ = patch::json_patch(&doc, p);
            let _ = patch::merge_patch(&doc, p);
            let _ = patch::strategic_merge(&doc, p);
            let _ = patch::apply_owned(&doc, p, "m", None, "2026-01-01T00:00:00Z", false);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        #[test]
        fn no_body_panics_or_hangs(body in bodies()) {
            let t = Instant::now();
            decode_all(&body);
            prop_assert!(t.elapsed() < BOUND, "{:?} for {:?}", t.elapsed(), String::from_utf8_lossy(&body));
        }

        #[test]
        fn no_patch_panics_or_hangs(doc in json_value(), p in json_value(), force in any::<bool>()) {
            let t = Instant::now();
            let _ = patch::json_patch(&doc, &p);
            let _ = patch::merge_patch(&doc, &p);
            let _ = patch::strategic_merge(&doc, &p);
            let _ = patch::apply_owned(&doc, &p, "m", None, "2026-01-01T00:00:00Z", force);
            let _ = patch::apply_owned(&doc, &p, "m", Some("status"), "2026-01-01T00:00:00Z", force);
            prop_assert!(t.elapsed() < BOUND);
        }
    }

    #[test]
    fn the_seeds_decode() {
        let s = seeds();
        assert!(serde_json::from_slice::<Value>(&s[0]).is_ok());
        assert_eq!(yaml(&s[1], "YAML").unwrap()["data"]["k"], "[x\n");
        assert!(
            patch::json_patch(
                &serde_json::from_slice(&s[0]).unwrap(),
                &serde_json::from_slice(&s[2]).unwrap()
            )
            .is_ok()
        );
        let cm = proto::decode(&s[4]).unwrap();
        assert_eq!(cm["metadata"]["name"], "c", "{cm}");
    }
}
