//! Impersonation (`kubectl --as USER --as-group GROUP`): the
//! `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` headers.
//!
//! As in kube-apiserver, the authenticated user needs the `impersonate` verb
//! on each thing asked for: `users` (or, for
//! `system:serviceaccount:NS:NAME`, `serviceaccounts` NAME in NS), `groups`,
//! and `uids` in `authentication.k8s.io`. A refusal is the `403` kube gives
//! (`users "alice" is forbidden: User "…" cannot impersonate resource "users"
//! in API group "" at the cluster scope`). The request then runs as the
//! impersonated user: the given groups (a ServiceAccount gets its two groups
//! when none are given) plus `system:authenticated`; the admin's own rights
//! do not carry over. Without RBAC every authenticated user may impersonate.

use hyper::HeaderMap;

use super::auth::{self, RequestAttributes, User};
use super::http::ApiError;
use super::store::State;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";

/// The user asked for by the headers, if any (after checking `actor` may
/// act as it: `rbac` says whether RBAC is enforced).
pub(super) fn impersonated(
    st: &State,
    rbac: bool,
    actor: &User,
    headers: &HeaderMap,
) -> Result<Option<User>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .collect()
    };
    let user = values(USER).into_iter().next().filter(|u| !u.is_empty());
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let extras = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(name) = user else {
        if !groups.is_empty() || uid.is_some() || extras {
            return Err(ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: requested impersonation of groups, uid or extras without impersonating a user",
            ));
        }
        return Ok(None);
    };
    let check = |a: RequestAttributes| -> Result<(), ApiError> {
        if !rbac || auth::allowed(st, actor, &a) {
            Ok(())
        } else {
            Err(auth::forbidden(actor, &a))
        }
    };
    let attrs = |group: &str, resource: &str, namespace: &str, name: &str| RequestAttributes {
        verb: "impersonate".into(),
        group: group.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, sa)| (ns.to_string(), sa.to_string()));
    match &service_account {
        Some((ns, sa)) => check(attrs("", "serviceaccounts", ns, sa))?,
        None => check(attrs("", "users", "", &name))?,
    }
    for g in &groups {
        check(attrs("", "groups", "", g))?;
    }
    if let Some(u) = &uid {
        check(attrs("authentication.k8s.io", "uids", "", u))?;
    }
    let mut all_groups = groups;
    if let Some((ns, _)) = &service_account
        && all_groups.is_empty()
    {
        all_groups.push("system:serviceaccounts".into());
        all_groups.push(format!("system:serviceaccounts:{ns}"));
    }
    if name != "system:anonymous" && !all_groups.iter().any(|g| g == "system:authenticated") {
        all_groups.push("system:authenticated".into());
    }
    Ok(Some(User {
        admin: all_groups.iter().any(|g| g == "system:masters"),
        name,
        groups: all_groups,
        service_account,
    }))
}
