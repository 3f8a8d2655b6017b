//! Authentication, RBAC authorization and the audit log.
//!
//! **Users.** The admin token (`DATA_DIR/admin-token`) is user `admin` in group
//! `system:masters` and may do everything, RBAC or not. With RBAC on, the
//! server also accepts ServiceAccount tokens, issued the way kube-apiserver's
//! legacy token controller does: create a Secret of type
//! `kubernetes.io/service-account-token` annotated
//! `kubernetes.io/service-account.name: <sa>` (in the ServiceAccount's
//! namespace) and the server fills `data.token` and `data.namespace`. The
//! token authenticates as `system:serviceaccount:<ns>:<sa>` (groups
//! `system:serviceaccounts`, `system:serviceaccounts:<ns>`,
//! `system:authenticated`) for as long as the Secret and the ServiceAccount
//! exist. Without RBAC only the admin token is accepted.
//!
//! **Authorization.** Roles and ClusterRoles bound through RoleBindings and
//! ClusterRoleBindings (subjects `ServiceAccount`, `User`, `Group`) grant
//! verbs (`get list watch create update patch delete deletecollection`, `*`)
//! on `apiGroups`, `resources` (`servers`, `servers/status`, `*/status`, `*`)
//! and `resourceNames`, as kube-apiserver's RBAC authorizer does (a RoleBinding
//! to a ClusterRole grants it inside the binding's namespace). Non-resource
//! paths (discovery, OpenAPI, `/version`) are open to every authenticated
//! user. Denials are `403 Forbidden` Statuses worded like kube-apiserver's.
//! Not modelled: aggregated ClusterRoles, escalation checks on writing roles.
//! `nonResourceURLs` rules are only read by SelfSubjectAccessReviews.
//!
//! **Impersonation** (`Impersonate-User`, `-Group`, `-Uid`) is in
//! `impersonate`, the self reviews in `authz_review`, bound tokens in `tokens`.
//!
//! **Audit.** Every request (authenticated or not) is counted by
//! (verb, resource) and, when configured, appended to a JSON-lines file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{ApiError, qualified};
use super::store::{ResKey, State};

/// Secret type of ServiceAccount token Secrets.
pub(super) const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming a token Secret's ServiceAccount.
pub(super) const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// An authenticated user.
#[derive(Clone, Debug)]
pub(super) struct User {
    pub name: String,
    pub groups: Vec<String>,
    /// The admin token: allowed everything.
    pub admin: bool,
    /// For ServiceAccounts: (namespace, name).
    pub service_account: Option<(String, String)>,
}

impl User {
    pub fn admin() -> Self {
        Self {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            admin: true,
            service_account: None,
        }
    }

    /// `system:serviceaccount:NS:NAME` with the groups kube gives it.
    pub fn service_account(ns: &str, sa: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{ns}:{sa}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            admin: false,
            service_account: Some((ns.into(), sa.into())),
        }
    }
}

/// The ServiceAccount a token belongs to, looked up in the token Secrets.
pub(super) fn service_account_user(st: &State, token: &str) -> Option<User> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(token);
    let secrets = st.list(&ResKey::new("", "secrets"), None);
    let secret = secrets.iter().find(|s| {
        s["type"].as_str() == Some(SA_TOKEN_TYPE)
            && s["data"]["token"].as_str().is_some_and(|t| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    t.as_bytes(),
                    encoded.as_bytes(),
                ))
            })
    })?;
    let ns = secret["metadata"]["namespace"].as_str()?;
    let sa = secret["metadata"]["annotations"][SA_NAME_ANNOTATION].as_str()?;
    st.get(&ResKey::new("", "serviceaccounts"), ns, sa)?;
    Some(User::service_account(ns, sa))
}

/// Fills a ServiceAccount token Secret (`data.token`, `data.namespace`),
/// keeping the token an earlier version of the Secret had.
pub(super) fn fill_token_secret(obj: &mut Value, old: Option<&Value>) {
    use base64::Engine;
    if obj["type"].as_str() != Some(SA_TOKEN_TYPE)
        || obj["metadata"]["annotations"][SA_NAME_ANNOTATION]
            .as_str()
            .is_none_or(str::is_empty)
    {
        return;
    }
    let b64 = |s: &str| Value::from(base64::engine::general_purpose::STANDARD.encode(s));
    if obj["data"]["token"].as_str().is_none_or(str::is_empty) {
        let token = old
            .and_then(|o| o["data"]["token"].as_str())
            .map(Value::from)
            .unwrap_or_else(|| {
                b64(&format!(
                    "sa.{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ))
            });
        obj["data"]["token"] = token;
    }
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    obj["data"]["namespace"] = b64(&ns);
}

/// What a request does, in RBAC terms (kube-apiserver's `RequestInfo`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource paths the lower-case HTTP method.
    pub verb: String,
    /// The API group (`""` for core).
    #[serde(rename = "apiGroup")]
    pub group: String,
    /// The resource (plural), empty for non-resource paths.
    pub resource: String,
    /// The subresource (`status`), if any.
    pub subresource: String,
    /// The namespace, if the request is namespaced.
    pub namespace: String,
    /// The object's name, if the request names one.
    pub name: String,
}

/// One audit record (one line of the audit log).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// RFC 3339 time the request was answered.
    pub time: String,
    /// The user (`admin`, `system:serviceaccount:NS:SA`, `system:anonymous`):
    /// the one who authenticated, also when acting as another.
    pub user: String,
    /// The user acted as (`Impersonate-User`), if any.
    #[serde(
        rename = "impersonatedUser",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub impersonated_user: Option<String>,
    /// What was asked.
    #[serde(flatten)]
    pub attributes: RequestAttributes,
    /// The request path.
    pub path: String,
    /// The HTTP status code of the answer.
    pub code: u16,
}

/// How many requests the server answered, by verb and resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `(verb, resource)` → count; the resource is `plural` or
    /// `plural/subresource`, qualified by group (`servers.servermanager.contrail.io/status`)
    /// except for the core group. Non-resource requests count under
    /// `(method, "")`.
    pub by_verb_resource: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    /// The count for one verb on one resource key (see `by_verb_resource`).
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_verb_resource
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every write: create, update, patch, delete, deletecollection.
    pub fn writes(&self) -> u64 {
        self.by_verb_resource
            .iter()
            .filter(|((v, r), _)| !r.is_empty() && is_write(v))
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes to one resource key (see `by_verb_resource`).
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.by_verb_resource
            .iter()
            .filter(|((v, r), _)| r == resource && is_write(v))
            .map(|(_, n)| n)
            .sum()
    }

    /// The counts since an earlier snapshot.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        let mut by_verb_resource = BTreeMap::new();
        for (k, n) in &self.by_verb_resource {
            let d = n - earlier
                .by_verb_resource
                .get(k)
                .copied()
                .unwrap_or(0)
                .min(*n);
            if d > 0 {
                by_verb_resource.insert(k.clone(), d);
            }
        }
        RequestCounts { by_verb_resource }
    }
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The audit sink: in-memory counters and the optional JSON-lines file.
pub(super) struct Audit {
    file: Option<Mutex<std::fs::File>>,
    counts: Mutex<RequestCounts>,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(Self {
            file,
            counts: Mutex::new(RequestCounts::default()),
        })
    }

    /// A shared handle to the counters (for [`super::Handle`]).
    pub fn counts(&self) -> RequestCounts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn record(&self, rec: &AuditRecord) {
        let a = &rec.attributes;
        let key = if a.resource.is_empty() {
            String::new()
        } else {
            let mut r = qualified(&a.group, &a.resource);
            if !a.subresource.is_empty() {
                r = format!("{r}/{}", a.subresource);
            }
            r
        };
        if let Ok(mut c) = self.counts.lock() {
            *c.by_verb_resource.entry((a.verb.clone(), key)).or_insert(0) += 1;
        }
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
            && let Ok(mut line) = serde_json::to_vec(rec)
        {
            line.push(b'\n');
            // One write per line: concurrent requests never interleave.
            let _ = f.write_all(&line);
        }
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(s: &Value, user: &User, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("ServiceAccount") => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.service_account
                .as_ref()
                .is_some_and(|(un, us)| un == ns && us == name)
        }
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &RequestAttributes) -> bool {
    let verbs = strs(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    let groups = strs(&rule["apiGroups"]);
    if !groups.iter().any(|g| *g == "*" || *g == a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resources = strs(&rule["resources"]);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(&rule["resourceNames"]);
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

/// The rules of the role a binding refers to (`None` if it does not exist).
fn role_rules(st: &State, role_ref: &Value, binding_ns: &str) -> Vec<Value> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let role = match role_ref["kind"].as_str() {
        Some("Role") if !binding_ns.is_empty() => st.get(
            &ResKey::new("rbac.authorization.k8s.io", "roles"),
            binding_ns,
            name,
        ),
        Some("ClusterRole") => st.get(
            &ResKey::new("rbac.authorization.k8s.io", "clusterroles"),
            "",
            name,
        ),
        _ => None,
    };
    role.map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// Whether RBAC lets `user` do `a`.
pub(super) fn allowed(st: &State, user: &User, a: &RequestAttributes) -> bool {
    if user.admin {
        return true;
    }
    if a.resource.is_empty() {
        // Discovery, OpenAPI, /version: system:discovery / system:basic-user.
        return true;
    }
    // The self reviews: system:basic-user, bound to every authenticated user.
    if super::authz_review::basic_rules()
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["resources"].is_array() && rule_allows(r, a))
    {
        return true;
    }
    let grants = |binding: &Value, ns: &str| {
        strs_subjects(binding)
            .iter()
            .any(|s| subject_matches(s, user, ns))
            && role_rules(st, &binding["roleRef"], ns)
                .iter()
                .any(|r| rule_allows(r, a))
    };
    for b in st.list(
        &ResKey::new("rbac.authorization.k8s.io", "clusterrolebindings"),
        None,
    ) {
        if grants(&b, "") {
            return true;
        }
    }
    if !a.namespace.is_empty() {
        for b in st.list(
            &ResKey::new("rbac.authorization.k8s.io", "rolebindings"),
            Some(&a.namespace),
        ) {
            if grants(&b, &a.namespace) {
                return true;
            }
        }
    }
    false
}

/// Every rule granted to `user` cluster-wide and in `ns` (the rules a
/// SelfSubjectRulesReview lists), with the binding's namespace.
pub(super) fn rules_for(st: &State, user: &User, ns: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut collect = |binding: &Value, binding_ns: &str| {
        if strs_subjects(binding)
            .iter()
            .any(|s| subject_matches(s, user, binding_ns))
        {
            out.extend(role_rules(st, &binding["roleRef"], binding_ns));
        }
    };
    for b in st.list(
        &ResKey::new("rbac.authorization.k8s.io", "clusterrolebindings"),
        None,
    ) {
        collect(&b, "");
    }
    if !ns.is_empty() {
        for b in st.list(
            &ResKey::new("rbac.authorization.k8s.io", "rolebindings"),
            Some(ns),
        ) {
            collect(&b, ns);
        }
    }
    out
}

/// Whether a rule's `nonResourceURLs` and verbs allow `verb` on `path`
/// (`*` and a trailing `*` as a prefix, as in kube's RBAC).
pub(super) fn non_resource_rule_allows(rule: &Value, verb: &str, path: &str) -> bool {
    strs(&rule["verbs"]).iter().any(|v| *v == "*" || *v == verb)
        && strs(&rule["nonResourceURLs"]).iter().any(|u| {
            *u == "*" || *u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        })
}

fn strs_subjects(binding: &Value) -> Vec<Value> {
    binding["subjects"].as_array().cloned().unwrap_or_default()
}

/// kube-apiserver's 403 for a denied request.
pub(super) fn forbidden(user: &User, a: &RequestAttributes) -> ApiError {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    );
    let gr = qualified(&a.group, &a.resource);
    let message = if a.name.is_empty() {
        format!("{gr} is forbidden: {why}")
    } else {
        format!("{gr} \"{}\" is forbidden: {why}", a.name)
    };
    let mut details = json!({"group": a.group, "kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = a.name.clone().into();
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}
