//! The committed `crds/` equal `server-manager crds`, and the CRDs carry what
//! users rely on: printer columns, non-colliding short names, a category, a
//! description on every field, the status subresource.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_server-manager"))
}

fn committed() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("crds/ exists")
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_crds_equal_generated() {
    let out = bin().arg("crds").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let contents: Vec<String> = committed().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        generated,
        contents.join("---\n"),
        "crds/ is stale: run `cargo run -- crds --out crds` and commit"
    );

    let dir = tempfile::tempdir().unwrap();
    assert!(
        bin()
            .arg("crds")
            .arg("--out")
            .arg(dir.path())
            .status()
            .unwrap()
            .success()
    );
    for (name, content) in committed() {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&name)).unwrap(),
            content,
            "{name}"
        );
    }
}

#[test]
fn the_chart_ships_the_same_crds() {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/server-manager/crds");
    for (name, content) in committed() {
        let shipped = std::fs::read_to_string(format!("{chart}/{name}")).unwrap_or_default();
        assert_eq!(
            shipped, content,
            "charts/server-manager/crds/{name} differs from crds/{name}: copy crds/ into the chart"
        );
    }
}

fn crd(plural: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{}/crds/{plural}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn names_and_printer_columns() {
    let common = [
        "cs", "svc", "sa", "cm", "ns", "po", "no", "ep", "ev", "deploy", "img", "cl",
    ];
    for plural in ["clusters", "servers", "images"] {
        let c = crd(plural);
        let names = &c["spec"]["names"];
        assert_eq!(
            names["categories"],
            serde_json::json!(["contrail"]),
            "{plural}"
        );
        for short in names["shortNames"].as_array().unwrap() {
            assert!(
                !common.contains(&short.as_str().unwrap()),
                "{plural}: {short}"
            );
        }
        let version = &c["spec"]["versions"][0];
        assert_eq!(
            version["subresources"]["status"],
            serde_json::json!({}),
            "{plural}"
        );
    }
    let servers = crd("servers");
    let columns: Vec<(&str, i64)> = servers["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let default: Vec<&str> = columns.iter().filter(|c| c.1 == 0).map(|c| c.0).collect();
    assert_eq!(
        default,
        [
            "Cluster",
            "Host",
            "Roles",
            "Ready",
            "Containers",
            "Progress",
            "Age"
        ]
    );
    let clusters = crd("clusters");
    let default: Vec<&str> = clusters["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        default,
        [
            "Servers",
            "Ready-Servers",
            "Updated",
            "Rollout",
            "Role",
            "Ready",
            "Age"
        ]
    );
}

fn assert_described(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let p = format!("{path}.{name}");
            if prop.get("description").is_none()
                && !matches!(p.as_str(), ".apiVersion" | ".kind" | ".metadata")
            {
                missing.push(p.clone());
            }
            assert_described(prop, &p, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        assert_described(items, &format!("{path}[]"), missing);
    }
    if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        assert_described(add, &format!("{path}.*"), missing);
    }
}

#[test]
fn every_field_has_a_description() {
    for plural in ["clusters", "servers", "images"] {
        let c = crd(plural);
        let schema = &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = vec![];
        assert_described(schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{plural}: fields without description: {missing:?}"
        );
    }
}

#[test]
fn static_validation_is_in_the_schema() {
    let images = crd("images");
    let spec = &images["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(
        spec["properties"]["imageId"]["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^[a-z0-9]")
    );
    assert!(spec["properties"]["version"]["pattern"].is_string());
    assert_eq!(
        spec["properties"]["category"]["enum"],
        serde_json::json!(["container", "package"])
    );
    assert!(spec["properties"]["source"]["x-kubernetes-validations"].is_array());

    let servers = crd("servers");
    let spec = &servers["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let port = &spec["properties"]["ssh"]["properties"]["port"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    assert_eq!(spec["properties"]["host"]["maxLength"], 253);
    assert!(
        spec["properties"]["host"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .starts_with("self.matches(")
    );
    let roles = spec["properties"]["roles"]["items"]["enum"]
        .as_array()
        .unwrap();
    assert!(roles.contains(&Value::from("controller")) && roles.contains(&Value::from("agent")));
    assert!(
        spec["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("has(self.ssh)")
    );
    let conditions = &servers["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}

/// Whether kube-apiserver exposes a schema node to CEL (its `SchemaDeclType`):
/// scalars, typed objects, and lists and maps of exposed items. An untyped
/// node (`x-kubernetes-preserve-unknown-fields` without `type`) is not, nor a
/// list or map of them; a rule on a node that is not exposed fails the CRD
/// ("rule declared on schema that does not support validation rules").
fn exposed_to_cel(schema: &Value) -> bool {
    if schema["x-kubernetes-int-or-string"] == true {
        return true;
    }
    match schema["type"].as_str() {
        Some("array") => schema.get("items").is_some_and(exposed_to_cel),
        Some("object") => match schema.get("additionalProperties") {
            Some(a) if a.is_object() => exposed_to_cel(a),
            _ => true,
        },
        Some("string" | "boolean" | "number" | "integer") => true,
        _ => false,
    }
}

/// Every node with CEL rules: exposed to CEL, and bounded where the rules
/// iterate or match (kube-apiserver refuses a CRD whose estimated rule cost
/// exceeds its budget; unbounded strings, lists and maps are estimated at
/// the size of a whole request).
fn check_cel_nodes(schema: &Value, path: &str, problems: &mut Vec<String>) {
    if schema.get("x-kubernetes-validations").is_some() {
        if !exposed_to_cel(schema) {
            problems.push(format!(
                "{path}: rules on a node kube-apiserver does not expose to CEL"
            ));
        }
        let rules: Vec<&str> = schema["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        let bounded = match schema["type"].as_str() {
            Some("string") => schema.get("maxLength").is_some(),
            Some("array") => schema.get("maxItems").is_some(),
            Some("object")
                if schema
                    .get("additionalProperties")
                    .is_some_and(Value::is_object) =>
            {
                schema.get("maxProperties").is_some()
            }
            _ => true,
        };
        let iterates = rules
            .iter()
            .any(|r| r.contains("matches(") || r.contains(".all(") || r.contains(".exists("));
        if iterates && !bounded {
            problems.push(format!(
                "{path}: rules iterate or match over an unbounded value: {rules:?}"
            ));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            check_cel_nodes(prop, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        check_cel_nodes(items, &format!("{path}[]"), problems);
    }
    if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        check_cel_nodes(add, &format!("{path}.*"), problems);
    }
}

#[test]
fn cel_rules_are_valid_for_kube_apiserver() {
    for plural in ["clusters", "servers", "images"] {
        let c = crd(plural);
        let schema = &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = vec![];
        check_cel_nodes(schema, "", &mut problems);
        assert!(problems.is_empty(), "{plural}: {problems:#?}");
    }
}
