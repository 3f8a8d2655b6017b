//! The self reviews and the TokenRequest subresource:
//! - `SelfSubjectAccessReview` (`kubectl auth can-i VERB RESOURCE`),
//! - `SelfSubjectRulesReview` (`kubectl auth can-i --list`),
//! - `SelfSubjectReview` (`kubectl auth whoami`),
//! - `serviceaccounts/token` (`kubectl create token SA`).
//!
//! The reviews are open to every authenticated user, as kube-apiserver's
//! `system:basic-user` ClusterRole makes them; they answer for the user the
//! request runs as (the impersonated one under `--as`).

use serde_json::{Value, json};

use super::auth::{self, RequestAttributes, User};
use super::http::{ApiError, FieldError};
use super::store::{ResKey, State};
use super::tokens::{self, Signer};

/// The rules every authenticated user has (kube's `system:basic-user`,
/// `system:discovery` and `system:public-info-viewer`).
pub(super) fn basic_rules() -> Value {
    json!([
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
         "resources": ["selfsubjectreviews"]},
        {"verbs": ["get"], "nonResourceURLs": [
            "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
            "/openapi/*", "/openid/v1/jwks", "/openid/v1/jwks/", "/readyz", "/version",
            "/version/"]}
    ])
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Answers a SelfSubjectAccessReview, -RulesReview or SelfSubjectReview
/// (`kind`) for `user`; `rbac` says whether RBAC is enforced.
pub(super) fn review(
    st: &State,
    rbac: bool,
    user: &User,
    kind: &str,
    mut body: Value,
) -> Result<Value, ApiError> {
    let everything = !rbac || user.admin;
    let status = match kind {
        "SelfSubjectAccessReview" => {
            let spec = &body["spec"];
            let ra = &spec["resourceAttributes"];
            let nra = &spec["nonResourceAttributes"];
            if ra.is_object() && nra.is_object() {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    "SelfSubjectAccessReview",
                    "",
                    &[FieldError::new(
                        "spec.nonResourceAttributes",
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {nra}: cannot be specified in combination with resourceAttributes"
                        ),
                    )],
                ));
            }
            let allowed = if ra.is_object() {
                let a = RequestAttributes {
                    verb: str_of(ra, "verb").into(),
                    group: str_of(ra, "group").into(),
                    resource: str_of(ra, "resource").into(),
                    subresource: str_of(ra, "subresource").into(),
                    namespace: str_of(ra, "namespace").into(),
                    name: str_of(ra, "name").into(),
                };
                everything || (!a.resource.is_empty() && auth::allowed(st, user, &a))
            } else if nra.is_object() {
                let (path, verb) = (str_of(nra, "path"), str_of(nra, "verb"));
                everything
                    || basic_rules()
                        .as_array()
                        .into_iter()
                        .flatten()
                        .chain(auth::rules_for(st, user, "").iter())
                        .any(|r| auth::non_resource_rule_allows(r, verb, path))
            } else {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    "SelfSubjectAccessReview",
                    "",
                    &[FieldError::new(
                        "spec.resourceAttributes",
                        "FieldValueInvalid",
                        "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            };
            json!({"allowed": allowed})
        }
        "SelfSubjectRulesReview" => {
            let ns = str_of(&body["spec"], "namespace").to_string();
            let mut rules: Vec<Value> = if everything {
                vec![
                    json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                    json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                ]
            } else {
                auth::rules_for(st, user, &ns)
            };
            rules.extend(basic_rules().as_array().cloned().unwrap_or_default());
            let keep = |r: &Value, keys: &[&str]| {
                let mut out = json!({});
                for k in keys {
                    if r[*k].as_array().is_some_and(|a| !a.is_empty()) {
                        out[*k] = r[*k].clone();
                    }
                }
                out
            };
            let resource_rules: Vec<Value> = rules
                .iter()
                .filter(|r| r["resources"].as_array().is_some_and(|a| !a.is_empty()))
                .map(|r| keep(r, &["verbs", "apiGroups", "resources", "resourceNames"]))
                .collect();
            let non_resource_rules: Vec<Value> = rules
                .iter()
                .filter(|r| {
                    r["nonResourceURLs"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                })
                .map(|r| keep(r, &["verbs", "nonResourceURLs"]))
                .collect();
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                   "incomplete": false})
        }
        "SelfSubjectReview" => json!({"userInfo": {"username": user.name, "groups": user.groups}}),
        _ => return Err(ApiError::not_found_path()),
    };
    body["status"] = status;
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    Ok(body)
}

/// 2^32 seconds: the longest token kube issues.
const MAX_EXPIRATION: i64 = 1 << 32;

/// `POST …/serviceaccounts/NAME/token`: a bound token for the ServiceAccount.
pub(super) fn token_request(
    st: &State,
    signer: &Signer,
    ns: &str,
    sa: &str,
    mut body: Value,
    now: i64,
) -> Result<Value, ApiError> {
    let sa_obj = st
        .get(&ResKey::new("", "serviceaccounts"), ns, sa)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", sa))?;
    let spec = body["spec"].clone();
    let invalid = |field: &str, value: &Value, msg: &str| {
        ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            sa,
            &[FieldError::new(
                field,
                "FieldValueInvalid",
                format!("Invalid value: {value}: {msg}"),
            )],
        )
    };
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiration < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if audiences.is_empty() {
        audiences.push(tokens::ISSUER.into());
    }
    let bound = &spec["boundObjectRef"];
    let bound_secret = if bound.is_object() {
        let kind = str_of(bound, "kind");
        let name = str_of(bound, "name");
        if kind != "Secret" {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for object of kind \"{kind}\": only Secrets can be bound on this server"
            )));
        }
        let secret = st
            .get(&ResKey::new("", "secrets"), ns, name)
            .ok_or_else(|| ApiError::not_found("", "secrets", name))?;
        let uid = secret["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let asked = str_of(bound, "uid");
        if !asked.is_empty() && asked != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on secrets \"{name}\": the UID in the bound object reference ({asked}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        Some((name.to_string(), uid))
    } else {
        None
    };
    let claims = tokens::claims(
        ns,
        sa,
        sa_obj["metadata"]["uid"].as_str().unwrap_or(""),
        &audiences,
        now,
        expiration,
        bound_secret.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
    );
    let token = signer.sign(&claims);
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    body["apiVersion"] = "authentication.k8s.io/v1".into();
    body["kind"] = "TokenRequest".into();
    body["metadata"] =
        json!({"name": sa, "namespace": ns, "creationTimestamp": super::meta::now()});
    body["spec"]["audiences"] = json!(audiences);
    body["spec"]["expirationSeconds"] = json!(expiration);
    if let Some((name, uid)) = &bound_secret {
        body["spec"]["boundObjectRef"]["uid"] = json!(uid);
        body["spec"]["boundObjectRef"]["name"] = json!(name);
    } else if let Some(o) = body["spec"].as_object_mut() {
        o.remove("boundObjectRef");
    }
    body["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(body)
}
