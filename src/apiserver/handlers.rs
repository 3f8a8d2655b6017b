//! Request routing and the verbs: get, list, create, update, patch, delete,
//! deletecollection (watch is in `watch`). Every verb runs under the store lock,
//! so read-modify-write is atomic and resourceVersions are assigned in order.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use hyper::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;

use super::auth;
use super::discovery;
use super::events;
use super::http::{ApiError, FieldError, Req, json as json_resp, json_typed};
use super::meta;
use super::patch::{self, PatchType};
use super::proto;
use super::resources::{self, ResourceInfo, Special};
use super::schema;
use super::select::{FieldSelector, LabelSelector, field_allowed};
use super::store::{Obj, ResKey, State, Store};

/// Namespaces every cluster has.
const SEEDED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The server state shared by all connections.
pub(super) struct Server {
    pub store: Store,
    token: String,
    pub bookmark_interval: Duration,
    pub stop: tokio_watch::Receiver<bool>,
    crds: RwLock<Vec<ResourceInfo>>,
    rbac: bool,
    audit: Arc<auth::Audit>,
    signer: super::tokens::Signer,
    /// Some object has ownerReferences: garbage collection looks for dependents.
    pub(super) gc_active: std::sync::atomic::AtomicBool,
    /// Bounds the verbs running on the blocking pool.
    verbs: Arc<tokio::sync::Semaphore>,
}

/// How many verbs run at once (each on a thread of the blocking pool).
const VERB_THREADS: usize = 16;

/// A parsed resource path.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch_prefix: bool,
}

/// A successful verb: status code, body, warnings.
type Answer = Result<(u16, Value, Vec<String>), ApiError>;

/// `fieldValidation` levels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Per-request write options.
#[derive(Clone, Copy, Debug)]
struct WriteOpts<'a> {
    fv: FieldValidation,
    /// `dryRun=All`: validate and answer, store nothing.
    dry_run: bool,
    /// For non-apply writes: the field manager recorded with operation
    /// `Update` (`fieldManager`, else the User-Agent's program name).
    manager: Option<&'a str>,
}

fn write_opts(req: &Req, fv: FieldValidation) -> WriteOpts<'_> {
    let manager = req
        .param("fieldManager")
        .filter(|m| !m.is_empty())
        .or_else(|| {
            req.headers
                .get(hyper::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
        });
    WriteOpts {
        fv,
        dry_run: req.param("dryRun") == Some("All"),
        manager: Some(manager.unwrap_or("unknown")),
    }
}

fn field_validation(req: &Req) -> FieldValidation {
    match req.param("fieldValidation") {
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        _ => FieldValidation::Warn,
    }
}

impl Server {
    pub fn new(
        store: Store,
        token: String,
        bookmark_interval: Duration,
        stop: tokio_watch::Receiver<bool>,
        rbac: bool,
        audit: Arc<auth::Audit>,
    ) -> Self {
        let server = Self {
            signer: super::tokens::Signer::new(&token),
            gc_active: std::sync::atomic::AtomicBool::new(false),
            store,
            token,
            bookmark_interval,
            stop,
            crds: RwLock::new(Vec::new()),
            rbac,
            audit,
            verbs: Arc::new(tokio::sync::Semaphore::new(VERB_THREADS)),
        };
        {
            let mut st = server.store.lock();
            for ns in SEEDED_NAMESPACES {
                let key = ResKey::new("", "namespaces");
                if st.get(&key, "", ns).is_none() {
                    let mut obj = json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns}});
                    prepare_namespace(&mut obj);
                    stamp_new(&mut obj, false);
                    // A failure here surfaces on the first request instead.
                    let _ = st.put(&key, "", ns, obj);
                }
            }
            server.refresh_crds(&st);
            let mut seen = Vec::new();
            for r in server.all_resources() {
                if !seen.contains(&r.storage) {
                    for o in st.list(&r.storage, None) {
                        server.note_owners(&o);
                    }
                    seen.push(r.storage);
                }
            }
        }
        server
    }

    fn refresh_crds(&self, st: &State) {
        let list = st
            .list(
                &ResKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
                None,
            )
            .iter()
            .flat_map(|c| resources::from_crd(c))
            .collect();
        if let Ok(mut w) = self.crds.write() {
            *w = list;
        }
    }

    /// Every served resource (built-ins then CRDs).
    pub fn all_resources(&self) -> Vec<ResourceInfo> {
        let mut all = resources::builtins();
        if let Ok(c) = self.crds.read() {
            all.extend(c.iter().cloned());
        }
        all
    }

    fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.all_resources()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, req: Req) -> Response<Body> {
        let mut rec = auth::AuditRecord {
            time: String::new(),
            user: "system:anonymous".into(),
            attributes: auth::RequestAttributes {
                verb: req.method.as_str().to_lowercase(),
                ..Default::default()
            },
            path: req.path.clone(),
            code: 0,
            impersonated_user: None,
        };
        let resp = match self.route(req, &mut rec).await {
            Ok(r) => r,
            Err(e) => e.response(),
        };
        rec.code = resp.status().as_u16();
        rec.time = meta::now();
        self.audit.record(&rec);
        resp
    }

    /// Who a bearer token belongs to (`None`: not authenticated).
    fn authenticate(&self, token: Option<&str>) -> Option<auth::User> {
        let token = token?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            token.as_bytes(),
            self.token.as_bytes(),
        )) {
            return Some(auth::User::admin());
        }
        if !self.rbac {
            return None;
        }
        let st = self.store.lock();
        if token.split('.').count() == 3 {
            let now = jiff::Timestamp::now().as_second();
            return super::tokens::user(&self.signer, &st, token, now);
        }
        auth::service_account_user(&st, token)
    }

    async fn route(
        self: &Arc<Self>,
        req: Req,
        rec: &mut auth::AuditRecord,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.path.trim_end_matches('/').to_string();
        match path.as_str() {
            "/healthz" | "/readyz" | "/livez" => {
                let mut r = Response::new(Body::from("ok"));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                return Ok(r);
            }
            "/version" => return Ok(json_resp(200, &discovery::version())),
            _ => {}
        }
        let user = self
            .authenticate(req.token())
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
        rec.user = user.name.clone();
        let acting_as = {
            let st = self.store.lock();
            super::impersonate::impersonated(&st, self.rbac, &user, &req.headers)?
        };
        let user = match acting_as {
            Some(u) => {
                rec.impersonated_user = Some(u.name.clone());
                u
            }
            None => user,
        };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let all = self.all_resources();
        let aggregated = req.wants_aggregated();
        let discovery_answer = |v: Option<Value>| -> Result<Response<Body>, ApiError> {
            v.map(|v| json_resp(200, &v))
                .ok_or_else(ApiError::not_found_path)
        };
        match segs.as_slice() {
            ["api"] if aggregated => {
                return Ok(json_typed(
                    200,
                    &discovery::aggregated(&all, true),
                    discovery::AGGREGATED,
                ));
            }
            ["apis"] if aggregated => {
                return Ok(json_typed(
                    200,
                    &discovery::aggregated(&all, false),
                    discovery::AGGREGATED,
                ));
            }
            ["api"] => {
                let host = req
                    .headers
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                return Ok(json_resp(200, &discovery::api_versions(host)));
            }
            ["apis"] => return Ok(json_resp(200, &discovery::api_group_list(&all))),
            ["api", v] => return discovery_answer(discovery::resource_list(&all, "", v)),
            ["apis", g] => return discovery_answer(discovery::api_group_doc(&all, g)),
            ["apis", g, v] => return discovery_answer(discovery::resource_list(&all, g, v)),
            ["openapi", "v2"] => return Ok(super::openapi::v2_response(&all, req.accept())),
            ["openapi", "v3"] => return Ok(json_resp(200, &discovery::openapi_root(&all))),
            ["openapi", "v3", "api", v] => {
                return discovery_answer(discovery::openapi_gv(&all, "", v));
            }
            ["openapi", "v3", "apis", g, v] => {
                return discovery_answer(discovery::openapi_gv(&all, g, v));
            }
            _ => {}
        }
        let target = parse_target(&segs).ok_or_else(ApiError::not_found_path)?;
        let is_watch = target.watch_prefix || req.flag("watch");
        rec.attributes = auth::RequestAttributes {
            verb: match (&req.method, target.name.is_some()) {
                (&Method::GET, _) if is_watch => "watch",
                (&Method::GET, true) => "get",
                (&Method::GET, false) => "list",
                (&Method::POST, _) => "create",
                (&Method::PUT, _) => "update",
                (&Method::PATCH, _) => "patch",
                (&Method::DELETE, true) => "delete",
                (&Method::DELETE, false) => "deletecollection",
                _ => "unknown",
            }
            .into(),
            group: target.group.clone(),
            resource: target.plural.clone(),
            subresource: target.sub.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
        };
        if self.rbac && !user.admin {
            let ok = {
                let st = self.store.lock();
                auth::allowed(&st, &user, &rec.attributes)
            };
            if !ok {
                return Err(auth::forbidden(&user, &rec.attributes));
            }
        }
        let info = self
            .resolve(&target.group, &target.version, &target.plural)
            .ok_or_else(ApiError::not_found_path)?;
        if info.namespaced != target.namespace.is_some() && target.name.is_some() {
            return Err(ApiError::not_found_path());
        }
        if !info.namespaced && target.namespace.is_some() {
            return Err(ApiError::not_found_path());
        }
        match target.sub.as_deref() {
            None => {}
            Some("status") if info.status => {}
            Some("token") if discovery::has_token_subresource(&info) => {}
            Some(_) => return Err(ApiError::not_found_path()),
        }
        let ns = target.namespace.as_deref();
        let name = target.name.as_deref();
        let sub = target.sub.as_deref();
        if info.special == Special::Review || sub == Some("token") {
            return self.review_or_token(&info, &user, ns, name, sub, &req);
        }
        if req.method == Method::GET && name.is_none() && is_watch {
            return super::watch::start(self.clone(), &info, ns, &req);
        }
        // Decoding, patching, validation and the store run on the blocking
        // pool, at most VERB_THREADS at once, never on the async workers: a
        // slow body cannot stall other requests. A panic in a verb answers 500
        // instead of dropping the connection (writes are all-or-nothing, so
        // the store stays consistent).
        let permit = self
            .verbs
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the server is stopping".into()))?;
        let (server, vinfo) = (self.clone(), info.clone());
        let owned = |s: Option<&str>| s.map(String::from);
        let (vns, vname, vsub) = (owned(ns), owned(name), owned(sub));
        let (answer, req) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let a = server.verb(
                &vinfo,
                vns.as_deref(),
                vname.as_deref(),
                vsub.as_deref(),
                &req,
            );
            (a, req)
        })
        .await
        .map_err(|_| ApiError::internal("internal error".into()))?;
        // Answered only once everything the verb saw or wrote is durable
        // (writes are committed in groups by the store's committer).
        self.store.durable(self.store.assigned()).await?;
        let (code, body, warnings) = answer?;
        let table = (req.method == Method::GET)
            .then(|| super::table::wanted(req.accept()))
            .flatten();
        let mut resp = match table {
            Some(version) => {
                let include = super::table::Include::from_param(req.param("includeObject"));
                let tb = super::table::TableBuilder::new(&info, version, include);
                let table = if name.is_none() {
                    let items = body["items"].as_array().cloned().unwrap_or_default();
                    tb.table(&items, body["metadata"].clone())
                } else {
                    let rv = body["metadata"]["resourceVersion"].clone();
                    tb.table(std::slice::from_ref(&body), json!({"resourceVersion": rv}))
                };
                json_typed(code, &table, &super::table::content_type(version))
            }
            None => json_resp(code, &body),
        };
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// The create-only endpoints answered without storing anything: the self
    /// reviews and `serviceaccounts/NAME/token`.
    fn review_or_token(
        &self,
        info: &ResourceInfo,
        user: &auth::User,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
        req: &Req,
    ) -> Result<Response<Body>, ApiError> {
        let not_allowed = || {
            ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        };
        if req.method != Method::POST {
            return Err(not_allowed());
        }
        let body = decode_body(req)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        let st = self.store.lock();
        let answer = match (sub, name) {
            (Some("token"), Some(sa)) => super::authz_review::token_request(
                &st,
                &self.signer,
                ns.unwrap_or(""),
                sa,
                body,
                jiff::Timestamp::now().as_second(),
            )?,
            (None, None) => {
                let mut body = body;
                body["apiVersion"] = info.api_version().into();
                body["kind"] = info.kind.clone().into();
                super::authz_review::review(&st, self.rbac, user, &info.kind, body)?
            }
            _ => return Err(not_allowed()),
        };
        Ok(json_resp(201, &answer))
    }

    fn verb(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
        req: &Req,
    ) -> Answer {
        match (&req.method, name) {
            (&Method::GET, None) => self.list(info, ns, req),
            (&Method::GET, Some(n)) => self.get(info, ns.unwrap_or(""), n),
            (&Method::POST, None) => self.create(info, ns, req),
            (&Method::PUT, Some(n)) => self.update(info, ns.unwrap_or(""), n, sub, req),
            (&Method::PATCH, Some(n)) => self.patch(info, ns.unwrap_or(""), n, sub, req),
            (&Method::DELETE, Some(n)) => self.delete(info, ns.unwrap_or(""), n, req),
            (&Method::DELETE, None) => self.delete_collection(info, ns, req),
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )),
        }
    }

    fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Answer {
        let st = self.store.lock();
        let obj = st
            .get(&info.storage, ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        Ok((200, to_view(info, &obj), vec![]))
    }

    fn list(&self, info: &ResourceInfo, ns: Option<&str>, req: &Req) -> Answer {
        let (labels, fields) = selectors(info, req)?;
        let limit: usize = req
            .param("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let after = req
            .param("continue")
            .filter(|c| !c.is_empty())
            .map(decode_continue)
            .transpose()?;
        let st = self.store.lock();
        // Later pages report the first page's resourceVersion: pages are not a
        // snapshot, so a watch must start from before the first page to miss
        // nothing (it may then see changes a later page already showed).
        let rv = after.as_ref().map(|a| a.2).unwrap_or(st.rv());
        if rv < st.compacted() {
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        let after = after.map(|a| (a.0, a.1));
        let mut items = Vec::new();
        let mut next = None;
        // kube counts what is left only for lists without selectors.
        let count_rest = req.param("labelSelector").is_none_or(str::is_empty)
            && req.param("fieldSelector").is_none_or(str::is_empty);
        let mut remaining = 0u64;
        for obj in st.list(&info.storage, ns) {
            let key = (
                meta::meta_str(&obj, "namespace").unwrap_or("").to_string(),
                meta::meta_str(&obj, "name").unwrap_or("").to_string(),
            );
            if let Some(a) = &after
                && key <= *a
            {
                continue;
            }
            if !labels.matches(&obj) || !fields.matches(&obj) {
                continue;
            }
            if items.len() == limit {
                if next.is_none() {
                    next = Some(encode_continue(&key_of_last(&items), rv));
                }
                if !count_rest {
                    break;
                }
                remaining += 1;
                continue;
            }
            items.push(to_view(info, &obj));
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = next {
            metadata["continue"] = c.into();
            if count_rest {
                metadata["remainingItemCount"] = remaining.into();
            }
        }
        Ok((
            200,
            json!({
                "kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                "metadata": metadata, "items": items
            }),
            vec![],
        ))
    }

    fn create(&self, info: &ResourceInfo, ns: Option<&str>, req: &Req) -> Answer {
        let body = decode_body(req)?;
        let opts = write_opts(req, field_validation(req));
        let dup_warnings = duplicates(info, req, opts.fv)?;
        let mut st = self.store.lock();
        let (obj, mut warnings) = self.create_locked(&mut st, info, ns, body, opts, false)?;
        warnings.splice(0..0, dup_warnings);
        Ok((201, to_view(info, &obj), warnings))
    }

    fn create_locked(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: Option<&str>,
        body: Value,
        opts: WriteOpts,
        by_apply: bool,
    ) -> Result<(Obj, Vec<String>), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        if let Some(k) = body.get("kind").and_then(Value::as_str)
            && k != info.kind
        {
            return Err(kind_mismatch(info, k, &body));
        }
        let mut obj = from_view(info, body);
        let m = meta::meta_mut(&mut obj).ok_or_else(|| ApiError::bad_request("bad metadata"))?;
        let ns = ns.unwrap_or("");
        match m.get("namespace").and_then(Value::as_str) {
            Some(n) if info.namespaced && !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        if info.namespaced {
            m.insert("namespace".into(), ns.into());
        } else {
            m.remove("namespace");
        }
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() && !by_apply => {
                    let n = format!("{g}{}", meta::random_suffix());
                    m.insert("name".into(), n.clone().into());
                    n
                }
                _ => {
                    return Err(ApiError::invalid(
                        &info.group,
                        &info.kind,
                        "",
                        &[FieldError::new(
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            },
        };
        if let Some(e) = meta::validate_name(&name, info.special == Special::Namespace) {
            return Err(ApiError::invalid(&info.group, &info.kind, &name, &[e]));
        }
        let label_errors = meta::validate_labels(&obj);
        if !label_errors.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                &label_errors,
            ));
        }
        check_shape(info, &obj)?;
        if info.namespaced {
            let nsobj = st
                .get(&ResKey::new("", "namespaces"), "", ns)
                .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
            if meta::deleting(&nsobj) {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        super::http::qualified(&info.group, &info.plural)
                    ),
                ));
            }
        }
        if info.special == Special::Custom
            && info.status
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        prepare(info, &mut obj, None)?;
        let warnings = validate_schema(info, &mut obj, &name, opts.fv)?;
        stamp_new(&mut obj, info.generation);
        meta::clean(&mut obj);
        if !by_apply {
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            if let Some(manager) = opts.manager {
                patch::record_update(&json!({}), &mut obj, manager, None, &meta::now());
            }
        }
        if st.get(&info.storage, ns, &name).is_some() {
            return Err(ApiError::already_exists(&info.group, &info.plural, &name));
        }
        if opts.dry_run {
            return Ok((std::sync::Arc::new(obj), warnings));
        }
        self.note_owners(&obj);
        let stored = st.put(&info.storage, ns, &name, obj)?;
        if info.special == Special::Crd {
            self.refresh_crds(st);
        }
        Ok((stored, warnings))
    }

    fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        req: &Req,
    ) -> Answer {
        let body = decode_body(req)?;
        let opts = write_opts(req, field_validation(req));
        let dup_warnings = duplicates(info, req, opts.fv)?;
        if meta::meta_str(&body, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let mut st = self.store.lock();
        let old = st
            .get(&info.storage, ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        let has_rv = meta::meta_str(&body, "resourceVersion").is_some_and(|r| !r.is_empty());
        if !has_rv && matches!(info.special, Special::Custom | Special::Crd) {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                name,
                &[FieldError::new(
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        let new = from_view(info, body);
        let (obj, mut warnings) =
            self.update_locked(&mut st, info, ns, name, &old, new, sub, opts)?;
        warnings.splice(0..0, dup_warnings);
        Ok((200, to_view(info, &obj), warnings))
    }

    fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        req: &Req,
    ) -> Answer {
        let ptype = PatchType::from_content_type(req.content_type()).ok_or_else(|| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        })?;
        if ptype == PatchType::Strategic && info.special == Special::Custom {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let body: Value = match ptype {
            PatchType::Apply => super::body::yaml(&req.body, "YAML")?,
            _ => serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        if ptype == PatchType::Apply {
            if req.param("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "PATCH /apply requires fieldManager to be set",
                ));
            }
            if body.get("apiVersion").is_none() || body.get("kind").is_none() {
                return Err(ApiError::bad_request(
                    "invalid object type: apiVersion and kind must be set in an apply patch",
                ));
            }
        }
        let fv = if ptype == PatchType::Apply && req.param("fieldValidation").is_none() {
            FieldValidation::Strict
        } else {
            field_validation(req)
        };
        let mut opts = write_opts(req, fv);
        if ptype == PatchType::Apply {
            opts.manager = None;
        }
        let mut st = self.store.lock();
        let Some(old) = st.get(&info.storage, ns, name) else {
            if ptype == PatchType::Apply && sub.is_none() {
                let empty = json!({"metadata": {}});
                let manager = req.param("fieldManager").unwrap_or("");
                let mut body =
                    patch::apply_owned(&empty, &body, manager, None, &meta::now(), true)?;
                if let Some(m) = meta::meta_mut(&mut body) {
                    m.insert("name".into(), name.into());
                }
                let ns = info.namespaced.then_some(ns);
                let (obj, w) = self.create_locked(&mut st, info, ns, body, opts, true)?;
                return Ok((201, to_view(info, &obj), w));
            }
            return Err(ApiError::not_found(&info.group, &info.plural, name));
        };
        let view = to_view(info, &old);
        let patched = match ptype {
            PatchType::Json => patch::json_patch(&view, &body)?,
            PatchType::Merge => patch::merge_patch(&view, &body),
            PatchType::Strategic => patch::strategic_merge(&view, &body),
            PatchType::Apply => patch::apply_owned(
                &view,
                &body,
                req.param("fieldManager").unwrap_or(""),
                sub,
                &meta::now(),
                req.flag("force"),
            )?,
        };
        let new = from_view(info, patched);
        let (obj, warnings) = self.update_locked(&mut st, info, ns, name, &old, new, sub, opts)?;
        Ok((200, to_view(info, &obj), warnings))
    }

    /// The shared end of update and patch: status isolation, metadata rules,
    /// schema, no-op detection, generation, finalizer-driven removal.
    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        old: &Obj,
        mut new: Value,
        sub: Option<&str>,
        opts: WriteOpts,
    ) -> Result<(Obj, Vec<String>), ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let old_rv = meta::meta_str(old, "resourceVersion").unwrap_or("");
        if let Some(rv) = meta::meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        if meta::meta_str(&new, "uid").is_some_and(|u| Some(u) != meta::meta_str(old, "uid")) {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        if sub == Some("status") {
            let mut merged = (**old).clone();
            // Field ownership of status appliers is recorded by the status write.
            if let Some(mf) = new.get("metadata").and_then(|m| m.get("managedFields")) {
                merged["metadata"]["managedFields"] = mf.clone();
            }
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new = merged;
        } else if info.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        // Fields the server owns.
        {
            let m =
                meta::meta_mut(&mut new).ok_or_else(|| ApiError::bad_request("bad metadata"))?;
            m.insert("name".into(), name.into());
            if info.namespaced {
                m.insert("namespace".into(), ns.into());
            } else {
                m.remove("namespace");
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old.get("metadata").and_then(|om| om.get(f)) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.insert("resourceVersion".into(), old_rv.into());
            // An update that does not mention managedFields keeps them.
            if !m.contains_key("managedFields")
                && let Some(mf) = old.get("metadata").and_then(|om| om.get("managedFields"))
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        if meta::deleting(old) {
            let before = meta::finalizers(old);
            let added: Vec<String> = meta::finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    name,
                    &[FieldError::new(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added
                                .iter()
                                .map(|f| format!("\"{f}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )],
                ));
            }
        }
        let label_errors = meta::validate_labels(&new);
        if !label_errors.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                name,
                &label_errors,
            ));
        }
        check_shape(info, &new)?;
        prepare(info, &mut new, Some(old))?;
        let warnings = validate_schema(info, &mut new, name, opts.fv)?;
        meta::clean(&mut new);
        if let Some(manager) = opts.manager {
            patch::record_update(old, &mut new, manager, sub, &meta::now());
        }
        if !meta::differs(old, &new) {
            return Ok((old.clone(), warnings));
        }
        if info.generation && meta::spec_differs(old, &new, info.status) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = g.into();
        }
        if opts.dry_run {
            return Ok((std::sync::Arc::new(new), warnings));
        }
        self.note_owners(&new);
        if meta::deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !has_spec_finalizers(info, &new)
        {
            let obj = st.remove(&info.storage, ns, name)?;
            self.after_remove(st, info, ns)?;
            self.collect_garbage(st, &obj)?;
            return Ok((obj, warnings));
        }
        let stored = st.put(&info.storage, ns, name, new)?;
        if info.special == Special::Crd {
            self.refresh_crds(st);
        }
        if has_spec_finalizers(info, &stored) && meta::deleting(&stored) {
            self.finish_owner(st, info, name)?;
            if let Some(current) = st.get(&info.storage, ns, name) {
                return Ok((current, warnings));
            }
        }
        Ok((stored, warnings))
    }

    fn delete(&self, info: &ResourceInfo, ns: &str, name: &str, req: &Req) -> Answer {
        let opts: Value = if req.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&req.body).unwrap_or_else(|_| json!({}))
        };
        let mut st = self.store.lock();
        let old = st
            .get(&info.storage, ns, name)
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        let pre = &opts["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && Some(uid) != meta::meta_str(&old, "uid")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    super::http::qualified(&info.group, &info.plural),
                    meta::meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && Some(rv) != meta::meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        if info.special == Special::Namespace
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        let policy = super::gc::Propagation::from_request(&opts, req.param("propagationPolicy"))?;
        if req.param("dryRun") == Some("All") {
            return Ok((200, to_view(info, &old), vec![]));
        }
        if policy != super::gc::Propagation::Background
            && !matches!(info.special, Special::Namespace | Special::Crd)
        {
            let body = self.delete_propagating(&mut st, info, ns, &old, policy)?;
            return Ok((200, body, vec![]));
        }
        let (code, body) = self.delete_locked(&mut st, info, ns, name, &old)?;
        Ok((code, body, vec![]))
    }

    pub(super) fn delete_locked(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        old: &Obj,
    ) -> Result<(u16, Value), ApiError> {
        let cascade = matches!(info.special, Special::Namespace | Special::Crd);
        if !meta::finalizers(old).is_empty() || cascade {
            let obj = if meta::deleting(old) {
                old.clone()
            } else {
                let mut new = (**old).clone();
                new["metadata"]["deletionTimestamp"] = meta::now().into();
                new["metadata"]["deletionGracePeriodSeconds"] = 0.into();
                if info.generation {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    new["metadata"]["generation"] = g.into();
                }
                if info.special == Special::Namespace {
                    new["status"]["phase"] = "Terminating".into();
                }
                st.put(&info.storage, ns, name, new)?
            };
            if cascade {
                self.cascade(st, info, &obj)?;
            }
            let current = st.get(&info.storage, ns, name);
            return Ok((200, to_view(info, current.as_ref().unwrap_or(&obj))));
        }
        let last = st.remove(&info.storage, ns, name)?;
        self.after_remove(st, info, ns)?;
        self.collect_garbage(st, &last)?;
        if !returns_deleted_object(info) {
            // StatusDetails omits an empty group (the core group).
            let mut details = json!({"name": name, "group": info.group, "kind": info.plural,
                                     "uid": meta::meta_str(&last, "uid")});
            if info.group.is_empty()
                && let Some(d) = details.as_object_mut()
            {
                d.remove("group");
            }
            return Ok((
                200,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": details
                }),
            ));
        }
        Ok((200, to_view(info, &last)))
    }

    /// Deletes the contents of a namespace or the objects of a CRD, then the
    /// owner itself once nothing is left.
    fn cascade(&self, st: &mut State, info: &ResourceInfo, owner: &Obj) -> Result<(), ApiError> {
        let all = self.all_resources();
        let name = meta::meta_str(owner, "name").unwrap_or("").to_string();
        let targets: Vec<(ResKey, String, String)> = if info.special == Special::Namespace {
            st.keys_in_namespace(&name)
                .into_iter()
                .map(|(k, n)| (k, name.clone(), n))
                .collect()
        } else {
            let group = owner["spec"]["group"].as_str().unwrap_or("");
            let plural = owner["spec"]["names"]["plural"].as_str().unwrap_or("");
            let key = ResKey::new(group, plural);
            st.list(&key, None)
                .iter()
                .map(|o| {
                    (
                        key.clone(),
                        meta::meta_str(o, "namespace").unwrap_or("").to_string(),
                        meta::meta_str(o, "name").unwrap_or("").to_string(),
                    )
                })
                .collect()
        };
        for (key, ns, n) in targets {
            let Some(child_info) = all
                .iter()
                .find(|r| r.storage == key && r.special != Special::EventV1)
            else {
                continue;
            };
            if let Some(obj) = st.get(&key, &ns, &n) {
                self.delete_locked(st, child_info, &ns, &n, &obj)?;
            }
        }
        self.finish_owner(st, info, &name)
    }

    /// Removes a deleting namespace or CRD once it owns nothing.
    fn finish_owner(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(owner) = st.get(&info.storage, "", name) else {
            return Ok(());
        };
        if !meta::deleting(&owner) || !meta::finalizers(&owner).is_empty() {
            return Ok(());
        }
        let empty = if info.special == Special::Namespace {
            st.count_in_namespace(name) == 0
        } else {
            let group = owner["spec"]["group"].as_str().unwrap_or("");
            let plural = owner["spec"]["names"]["plural"].as_str().unwrap_or("");
            st.list(&ResKey::new(group, plural), None).is_empty()
        };
        if empty {
            st.remove(&info.storage, "", name)?;
            if info.special == Special::Crd {
                self.refresh_crds(st);
            }
        }
        Ok(())
    }

    /// After an object is gone: finish a terminating namespace or CRD.
    pub(super) fn after_remove(
        &self,
        st: &mut State,
        info: &ResourceInfo,
        ns: &str,
    ) -> Result<(), ApiError> {
        if info.special == Special::Crd {
            self.refresh_crds(st);
        }
        let builtins = resources::builtins();
        if !ns.is_empty()
            && let Some(ns_info) = builtins.iter().find(|r| r.special == Special::Namespace)
        {
            self.finish_owner(st, ns_info, ns)?;
        }
        if info.special == Special::Custom
            && let Some(crd_info) = builtins.iter().find(|r| r.special == Special::Crd)
        {
            let crd_name = format!("{}.{}", info.plural, info.group);
            self.finish_owner(st, crd_info, &crd_name)?;
        }
        Ok(())
    }

    fn delete_collection(&self, info: &ResourceInfo, ns: Option<&str>, req: &Req) -> Answer {
        let (labels, fields) = selectors(info, req)?;
        let mut st = self.store.lock();
        let targets: Vec<Obj> = st
            .list(&info.storage, ns)
            .into_iter()
            .filter(|o| labels.matches(o) && fields.matches(o))
            .collect();
        let mut items = Vec::new();
        for obj in targets {
            let ns = meta::meta_str(&obj, "namespace").unwrap_or("").to_string();
            let name = meta::meta_str(&obj, "name").unwrap_or("").to_string();
            self.delete_locked(&mut st, info, &ns, &name, &obj)?;
            items.push(to_view(info, &obj));
        }
        Ok((
            200,
            json!({
                "kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": st.rv().to_string()}, "items": items
            }),
            vec![],
        ))
    }
}

/// kube-apiserver's answer to a body whose kind is not the resource's (kubectl
/// maps a lower-case kind, `kind: server`, to the resource): a custom
/// resource fails validation (422), a built-in kind fails decoding (400).
fn kind_mismatch(info: &ResourceInfo, kind: &str, body: &Value) -> ApiError {
    if info.special == Special::Custom {
        return ApiError::invalid(
            &info.group,
            &info.kind,
            meta::meta_str(body, "name").unwrap_or(""),
            &[FieldError::new(
                "kind",
                "FieldValueInvalid",
                format!("Invalid value: \"{kind}\": must be {}", info.kind),
            )],
        );
    }
    ApiError::bad_request(format!(
        "{kind} in version \"{}\" cannot be handled as a {}: no kind \"{kind}\" is registered for version \"{}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\"",
        info.version,
        info.kind,
        info.api_version()
    ))
}

/// Duplicate fields of a JSON body: a strict decoding error under
/// `fieldValidation=Strict`, warnings under `Warn`.
fn duplicates(
    info: &ResourceInfo,
    req: &Req,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let ct = req.content_type();
    if fv == FieldValidation::Ignore || !(ct.is_empty() || ct.contains("json")) {
        return Ok(vec![]);
    }
    let found: Vec<String> = super::strict_json::duplicate_fields(&req.body)
        .into_iter()
        .map(|p| format!("duplicate field \"{p}\""))
        .collect();
    if fv == FieldValidation::Strict && !found.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.api_version(),
            info.kind,
            found.join(", ")
        )));
    }
    Ok(found)
}

/// Whether a DELETE that removes the object answers with it (kube's
/// `ReturnDeletedObject` stores) rather than a `Status` naming it.
fn returns_deleted_object(info: &ResourceInfo) -> bool {
    info.group.is_empty()
        && matches!(
            info.plural.as_str(),
            "serviceaccounts" | "services" | "persistentvolumeclaims" | "namespaces"
        )
}

/// Namespaces and CRDs are finished by `finish_owner` (once they own nothing),
/// not by the removal of their last finalizer alone.
fn has_spec_finalizers(info: &ResourceInfo, _obj: &Value) -> bool {
    matches!(info.special, Special::Namespace | Special::Crd)
}

fn key_of_last(items: &[Value]) -> (String, String) {
    items
        .last()
        .map(|o| {
            (
                meta::meta_str(o, "namespace").unwrap_or("").to_string(),
                meta::meta_str(o, "name").unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

fn encode_continue(key: &(String, String), rv: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!([key.0, key.1, rv])).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<(String, String, u64), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: (String, String, u64) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(v)
}

/// The label and field selectors of a list or watch.
pub(super) fn selectors(
    info: &ResourceInfo,
    req: &Req,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or(""))?;
    let plural = info.storage.resource.clone();
    let fs = req
        .param("fieldSelector")
        .unwrap_or("")
        .replace("regarding.", "involvedObject.");
    let fields = FieldSelector::parse(&fs, &|f| field_allowed(&plural, f))?;
    Ok((labels, fields))
}

fn parse_target(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest): (Option<String>, &[&str]) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2], "status" | "finalize")
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Target {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        namespace,
        name,
        sub,
        watch_prefix,
    })
}

/// At most this many `Warning` headers per response, then one saying how many
/// more there were.
const MAX_WARNINGS: usize = 50;
/// Longer warnings are cut (with `...`), as kube-apiserver does.
const MAX_WARNING_LEN: usize = 256;

/// Adds `warnings` as `Warning: 299 - "…"` headers (bounded in number and length).
fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    let mut add = |w: &str| {
        let mut w = w.replace(['\r', '\n'], " ");
        if w.len() > MAX_WARNING_LEN {
            let mut cut = MAX_WARNING_LEN;
            while !w.is_char_boundary(cut) {
                cut -= 1;
            }
            w.truncate(cut);
            w.push_str("...");
        }
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = v.parse() {
            resp.headers_mut().append("Warning", h);
        }
    };
    for w in warnings.iter().take(MAX_WARNINGS) {
        add(w);
    }
    if warnings.len() > MAX_WARNINGS {
        add(&format!(
            "{} more warnings were dropped",
            warnings.len() - MAX_WARNINGS
        ));
    }
}

/// Decodes a create/update body: JSON, YAML, or protobuf.
fn decode_body(req: &Req) -> Result<Value, ApiError> {
    let ct = req.content_type();
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        return proto::decode(&req.body);
    }
    if ct.contains("yaml") {
        return super::body::yaml(&req.body, "YAML");
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

/// The stored form seen through the requested API.
pub(super) fn to_view(info: &ResourceInfo, obj: &Value) -> Value {
    if info.special == Special::EventV1 {
        return events::to_v1(obj);
    }
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), info.api_version().into());
        o.insert("kind".into(), info.kind.clone().into());
    }
    v
}

/// A request body in the requested API turned into the stored form.
fn from_view(info: &ResourceInfo, mut body: Value) -> Value {
    if info.special == Special::EventV1 {
        return events::from_v1(&body);
    }
    if let Some(o) = body.as_object_mut() {
        o.insert("apiVersion".into(), info.api_version().into());
        o.insert("kind".into(), info.kind.clone().into());
    }
    body
}

/// Sets uid, creationTimestamp and (when tracked) generation on a new object.
fn stamp_new(obj: &mut Value, generation: bool) {
    if let Some(m) = meta::meta_mut(obj) {
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("creationTimestamp".into(), meta::now().into());
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if generation {
            m.insert("generation".into(), 1.into());
        } else {
            m.remove("generation");
        }
    }
}

fn prepare_namespace(obj: &mut Value) {
    let name = meta::meta_str(obj, "name").unwrap_or("").to_string();
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.into();
    if obj.get("spec").is_none() {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
    }
    if obj["status"]["phase"].as_str() != Some("Terminating") {
        obj["status"] = json!({"phase": "Active"});
    }
}

/// Rejects bodies whose fields the server itself writes into have the wrong
/// JSON type (a string where a map belongs), before anything indexes them.
fn check_shape(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let must_be_map = |v: Option<&Value>, field: &str| -> Result<(), ApiError> {
        match v {
            None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {field} must be an object",
                info.kind,
                info.api_version(),
                info.kind
            ))),
        }
    };
    let m = obj.get("metadata");
    must_be_map(m, "metadata")?;
    must_be_map(m.and_then(|m| m.get("labels")), "metadata.labels")?;
    must_be_map(m.and_then(|m| m.get("annotations")), "metadata.annotations")?;
    match info.special {
        Special::Secret => {
            must_be_map(obj.get("data"), "data")?;
            must_be_map(obj.get("stringData"), "stringData")
        }
        Special::Namespace => {
            must_be_map(obj.get("spec"), "spec")?;
            must_be_map(obj.get("status"), "status")
        }
        Special::Crd => {
            must_be_map(obj.get("spec"), "spec")?;
            must_be_map(obj.get("spec").and_then(|s| s.get("names")), "spec.names")
        }
        _ => Ok(()),
    }
}

/// Kind-specific defaults and checks.
fn prepare(info: &ResourceInfo, obj: &mut Value, old: Option<&Obj>) -> Result<(), ApiError> {
    match info.special {
        Special::Namespace => {
            prepare_namespace(obj);
            if let Some(old) = old {
                obj["status"] = old["status"].clone();
            }
        }
        Special::Secret => {
            if obj.get("type").is_none_or(|t| t.is_null() || t == "") {
                obj["type"] = "Opaque".into();
            }
            auth::fill_token_secret(obj, old.map(|o| &**o));
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                use base64::Engine;
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("").to_string();
                    obj["data"][k] = base64::engine::general_purpose::STANDARD.encode(s).into();
                }
            }
        }
        Special::Crd => prepare_crd(obj, old)?,
        Special::Event | Special::EventV1 => {}
        Special::None | Special::Custom | Special::Review => {}
    }
    super::core_validation::validate(info, obj, old.map(|o| &**o))
}

fn prepare_crd(obj: &mut Value, old: Option<&Obj>) -> Result<(), ApiError> {
    let name = meta::meta_str(obj, "name").unwrap_or("").to_string();
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let mut errors = Vec::new();
    if group.is_empty() {
        errors.push(FieldError::new(
            "spec.group",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if plural.is_empty() {
        errors.push(FieldError::new(
            "spec.names.plural",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        errors.push(FieldError::new(
            "spec.names.kind",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced") | Some("Cluster")) {
        errors.push(FieldError::new(
            "spec.scope",
            "FieldValueNotSupported",
            "Unsupported value: \"\": supported values: \"Cluster\", \"Namespaced\"",
        ));
    }
    if errors.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::new(
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            &errors,
        ));
    }
    let names = spec["names"].clone();
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        accepted["singular"] = spec["names"]["kind"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .into();
    }
    if accepted.get("listKind").is_none() {
        accepted["listKind"] =
            format!("{}List", spec["names"]["kind"].as_str().unwrap_or("")).into();
    }
    obj["spec"]["names"] = accepted.clone();
    let mut stored: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    for v in obj["spec"]["versions"].as_array().into_iter().flatten() {
        if v["storage"].as_bool() == Some(true)
            && let Some(n) = v.get("name")
            && !stored.contains(n)
        {
            stored.push(n.clone());
        }
    }
    let since = old
        .and_then(|o| {
            o["status"]["conditions"][0]["lastTransitionTime"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_else(meta::now);
    obj["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since}
        ],
        "storedVersions": stored
    });
    Ok(())
}

/// Prunes/defaults/validates a custom resource; returns warnings.
fn validate_schema(
    info: &ResourceInfo,
    obj: &mut Value,
    name: &str,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let Some(schema) = &info.schema else {
        return Ok(vec![]);
    };
    let mut unknown_meta = Vec::new();
    if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
        const KNOWN: &[&str] = &[
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
            "selfLink",
        ];
        for k in m.keys() {
            if !KNOWN.contains(&k.as_str()) {
                unknown_meta.push(format!("metadata.{k}"));
            }
        }
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for u in &unknown_meta {
            m.remove(u.trim_start_matches("metadata."));
        }
    }
    let outcome = schema::process(schema, obj);
    let mut unknown = unknown_meta;
    unknown.extend(outcome.unknown);
    if fv == FieldValidation::Strict && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.api_version(),
            info.kind,
            list.join(", ")
        )));
    }
    if !outcome.errors.is_empty() {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            name,
            &outcome.errors,
        ));
    }
    Ok(match fv {
        FieldValidation::Warn => unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect(),
        _ => vec![],
    })
}
