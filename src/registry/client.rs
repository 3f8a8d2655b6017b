//! A small OCI distribution API client: authentication (basic, and the bearer
//! token flow), retries with backoff, and the handful of calls a push needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::{Credentials, RegistryConfig, RetryPolicy};

/// Accept header for manifest reads: every single-image and index type.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a request failed, which decides whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Connection refused or reset, no answer within the deadline, 5xx, 429, 408:
    /// worth another try.
    Transient,
    /// 401 (once the challenge was answered) or 403: the registry refuses these
    /// credentials; trying again cannot help.
    Denied,
    /// The registry computed another digest than ours for what it received.
    DigestMismatch,
    /// A TLS client met a plain-HTTP server (`insecure` not set).
    PlainHttp,
    /// Anything else (a 4xx the registry explains): not retried.
    Other,
}

/// A failed request: what went wrong, and why.
#[derive(Debug)]
pub(crate) struct HttpError {
    /// Human-readable cause, with the registry's own error text when it gave one.
    pub message: String,
    /// The class of the failure.
    pub cause: Cause,
}

impl HttpError {
    pub fn new(cause: Cause, message: impl Into<String>) -> HttpError {
        HttpError {
            message: message.into(),
            cause,
        }
    }

    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        self.cause == Cause::Transient
    }

    /// A transport error: refused, reset, timed out, or a TLS handshake with
    /// a plain-HTTP server.
    pub fn from_reqwest(e: reqwest::Error, deadline: Duration) -> HttpError {
        let mut message = e.to_string();
        let mut plain_http = false;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            plain_http |= is_plain_http(s);
            source = s.source();
        }
        if plain_http {
            return HttpError::new(
                Cause::PlainHttp,
                "the registry answered in plain HTTP, not TLS: set insecure (push --insecure, \
                 --registry-insecure) to use a plain-HTTP registry",
            );
        }
        if e.is_timeout() {
            message = format!(
                "the registry did not answer within {}s ({message})",
                deadline.as_secs_f64()
            );
        }
        HttpError::new(Cause::Transient, message)
    }

    /// A response with an unexpected status.
    pub async fn from_response(what: &str, response: Response) -> HttpError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        let cause = if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Cause::Transient
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Cause::Denied
        } else if status == StatusCode::BAD_REQUEST && body.contains("DIGEST_INVALID") {
            Cause::DigestMismatch
        } else {
            Cause::Other
        };
        HttpError::new(
            cause,
            format!("{what}: registry answered {status} {}", body.trim()),
        )
    }
}

/// Whether an error in a transport error's chain is rustls meeting bytes that
/// are no TLS record (a plain-HTTP answer to our handshake). The connector may
/// wrap rustls' error in a way that hides its type: then its text tells.
fn is_plain_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    matches!(
        tls,
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    ) || (tls.is_none() && e.to_string().contains("of type InvalidContentType"))
}

/// Runs `op` until it succeeds, fails for good, or the policy's attempts are spent.
pub(crate) async fn retrying<T, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T, HttpError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HttpError>>,
{
    retry_with(
        policy,
        op,
        |e: &HttpError| e.retryable().then(|| e.message.clone()),
        |mut e, attempts| {
            e.message = format!("{} (after {attempts} attempts)", e.message);
            e
        },
    )
    .await
}

/// The one retry loop of the registry client: runs `op` while `retryable`
/// says why an error is worth another attempt and the policy's attempts last,
/// waiting [`RetryPolicy::delay`] between attempts. `exhausted` marks the
/// final error of an operation that was attempted more than once.
pub(crate) async fn retry_with<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    retryable: impl Fn(&E) -> Option<String>,
    exhausted: impl FnOnce(E, u32) -> E,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match retryable(&e) {
            Some(why) if attempt < policy.attempts => {
                tracing::debug!(attempt, error = %why, "registry request failed, retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            _ if attempt > 1 => return Err(exhausted(e, attempt)),
            _ => return Err(e),
        }
    }
}

/// A distribution API client bound to one registry.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// Authorization header per scope key (a repository, or "" for the registry).
    auth: Mutex<HashMap<String, HeaderValue>>,
    /// Retry policy of every call.
    pub retry: RetryPolicy,
    /// Deadline of each call (whole exchange; for a streamed blob, each stall).
    pub deadline: Duration,
}

impl RegistryClient {
    /// Builds the client: TLS (with the configured CA bundle) unless `insecure`.
    pub fn new(config: &RegistryConfig, host: &str) -> Result<RegistryClient, String> {
        let http = http_client(config.ca_bundle.as_deref(), None)?;
        let scheme = if config.insecure { "http" } else { "https" };
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{host}"),
            credentials: config.credentials.clone(),
            auth: Mutex::new(HashMap::new()),
            retry: config.retry.clone(),
            deadline: config.deadline(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves a `Location` header against the registry's address.
    fn location(&self, response: &Response) -> Result<String, HttpError> {
        let loc = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HttpError::new(Cause::Other, "the registry gave no upload location"))?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else {
                self.url(loc)
            },
        )
    }

    fn cached_auth(&self, scope_key: &str) -> Option<HeaderValue> {
        let auth = self.auth.lock().ok()?;
        auth.get(scope_key).or_else(|| auth.get("")).cloned()
    }

    /// Sends a replayable request, answering a 401 challenge once; the whole
    /// exchange has the client's deadline.
    pub async fn send(
        &self,
        scope_key: &str,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        self.send_with(scope_key, true, make).await
    }

    /// [`Self::send`], the deadline bounding the whole exchange (`whole`) or
    /// only the wait for the answer's headers (a streamed download, whose
    /// reader watches for stalls itself).
    async fn send_with(
        &self,
        scope_key: &str,
        whole: bool,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let with_auth = |auth: Option<HeaderValue>| {
            let req = make(&self.http);
            let req = if whole {
                req.timeout(self.deadline)
            } else {
                req
            };
            match auth {
                Some(a) => req.header(header::AUTHORIZATION, a),
                None => req,
            }
        };
        let response = self
            .headers_within(with_auth(self.cached_auth(scope_key)).send())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(challenge) = challenge else {
            return Ok(response);
        };
        let auth = self.authenticate(&challenge).await?;
        if let Ok(mut cache) = self.auth.lock() {
            cache.insert(scope_key.to_string(), auth.clone());
        }
        self.headers_within(with_auth(Some(auth)).send()).await
    }

    /// The answer's headers within the deadline.
    async fn headers_within(
        &self,
        request: impl Future<Output = Result<Response, reqwest::Error>>,
    ) -> Result<Response, HttpError> {
        match tokio::time::timeout(self.deadline, request).await {
            Ok(r) => r.map_err(|e| self.transport(e)),
            Err(_) => Err(HttpError::new(
                Cause::Transient,
                format!(
                    "the registry did not answer within {}s",
                    self.deadline.as_secs_f64()
                ),
            )),
        }
    }

    /// `GET` of a blob, for streaming (its reader watches for stalls).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Response, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = self.send_with(repo, false, |h| h.get(&url)).await?;
        if !r.status().is_success() {
            return Err(HttpError::from_response(&format!("GET blob {digest}"), r).await);
        }
        Ok(r)
    }

    /// A manifest and its media type, `None` when it does not exist.
    pub async fn get_manifest_typed(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String)>, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self
            .send(repo, |h| {
                h.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match r.status() {
            s if s.is_success() => {
                let media_type = r
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let body = r.bytes().await.map_err(|e| self.transport(e))?.to_vec();
                Ok(Some((body, media_type)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(HttpError::from_response(&format!("GET manifest {reference}"), r).await),
        }
    }

    fn transport(&self, e: reqwest::Error) -> HttpError {
        HttpError::from_reqwest(e, self.deadline)
    }

    /// The Authorization header answering a `WWW-Authenticate` challenge.
    async fn authenticate(&self, challenge: &str) -> Result<HeaderValue, HttpError> {
        let fail = |message: String| HttpError::new(Cause::Denied, message);
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    fail("failed to authenticate: the registry requires credentials".into())
                })?;
                basic_header(c).map_err(fail)
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    fail("failed to authenticate: bearer challenge without realm".into())
                })?;
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = params.get("service") {
                    query.push(("service", s));
                }
                if let Some(scope) = params.get("scope") {
                    for s in scope.split(' ') {
                        query.push(("scope", s));
                    }
                }
                let mut req = self
                    .http
                    .get(realm.as_str())
                    .query(&query)
                    .timeout(self.deadline);
                if let Some(c) = &self.credentials {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let response = req.send().await.map_err(|e| self.transport(e))?;
                if !response.status().is_success() {
                    return Err(HttpError::from_response("failed to get a token", response).await);
                }
                let body: serde_json::Value = response.json().await.map_err(|e| {
                    HttpError::new(
                        Cause::Other,
                        format!("failed to read the token answer: {e}"),
                    )
                })?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| fail("failed to get a token: the answer has none".into()))?;
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|e| fail(format!("bad token: {e}")))
            }
            other => Err(fail(format!(
                "failed to authenticate: unsupported scheme {other}"
            ))),
        }
    }

    /// `GET /v2/`: the registry answers and accepts us.
    pub async fn ping(&self) -> Result<(), HttpError> {
        let r = self.send("", |h| h.get(self.url("/v2/"))).await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(HttpError::from_response("GET /v2/", r).await)
        }
    }

    /// `HEAD` of a blob in a repository.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = self.send(repo, |h| h.head(&url)).await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(HttpError::from_response(&format!("HEAD {digest}"), r).await),
        }
    }

    /// Cross-repository mount; `Ok(false)` when the registry started an upload
    /// instead (that upload is cancelled).
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<bool, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let r = self
            .send(repo, |h| {
                h.post(&url)
                    .query(&[("mount", digest), ("from", from)])
                    .header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        match r.status() {
            StatusCode::CREATED => {
                check_digest(&r, digest)?;
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&r) {
                    let _ = self.send(repo, |h| h.delete(&loc)).await;
                }
                Ok(false)
            }
            _ => Err(HttpError::from_response("mount", r).await),
        }
    }

    /// Starts an upload session; returns its location.
    pub async fn start_upload(&self, repo: &str) -> Result<String, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let r = self
            .send(repo, |h| h.post(&url).header(header::CONTENT_LENGTH, "0"))
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(HttpError::from_response("POST blobs/uploads", r).await);
        }
        self.location(&r)
    }

    /// Completes an upload with the whole blob in one streamed `PUT`, and checks
    /// the registry's verdict on the digest.
    pub async fn put_blob(
        &self,
        repo: &str,
        location: &str,
        digest: &str,
        size: u64,
        body: impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    ) -> Result<(), HttpError> {
        let (body, watch) = watched(body, self.deadline);
        let mut req = self
            .http
            .put(location)
            .query(&[("digest", digest)])
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(body);
        if let Some(a) = self.cached_auth(repo) {
            req = req.header(header::AUTHORIZATION, a);
        }
        let r = watch.run(req.send()).await.map_err(|e| self.stalled(e))?;
        if r.status() != StatusCode::CREATED {
            return Err(self
                .refused_stream(repo, &format!("PUT blob {digest}"), r)
                .await);
        }
        check_digest(&r, digest)
    }

    /// Streams a blob of unknown length (compressed on the way) into an upload
    /// session with one chunked `PATCH`; returns the location to complete it at.
    pub async fn patch_blob(
        &self,
        repo: &str,
        location: &str,
        body: impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    ) -> Result<String, HttpError> {
        let (body, watch) = watched(body, self.deadline);
        let mut req = self
            .http
            .patch(location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(a) = self.cached_auth(repo) {
            req = req.header(header::AUTHORIZATION, a);
        }
        let r = watch.run(req.send()).await.map_err(|e| self.stalled(e))?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(self.refused_stream(repo, "PATCH blob upload", r).await);
        }
        self.location(&r)
    }

    /// Completes an upload session whose data was sent by PATCH.
    pub async fn complete_upload(
        &self,
        repo: &str,
        location: &str,
        digest: &str,
    ) -> Result<(), HttpError> {
        let r = self
            .send(repo, |h| {
                h.put(location)
                    .query(&[("digest", digest)])
                    .header(header::CONTENT_LENGTH, "0")
            })
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(HttpError::from_response(&format!("PUT blob {digest}"), r).await);
        }
        check_digest(&r, digest)
    }

    fn stalled(&self, e: Option<reqwest::Error>) -> HttpError {
        match e {
            Some(e) => self.transport(e),
            None => HttpError::new(
                Cause::Transient,
                format!(
                    "the registry took no data and gave no answer for {}s",
                    self.deadline.as_secs_f64()
                ),
            ),
        }
    }

    /// The error of a refused streamed request (which cannot be replayed): a
    /// 401 carrying a challenge means our token expired: forget it, and the
    /// retry (whose session `POST` answers the challenge) gets a fresh one.
    async fn refused_stream(&self, repo: &str, what: &str, r: Response) -> HttpError {
        let challenged = r.status() == StatusCode::UNAUTHORIZED
            && r.headers().contains_key(header::WWW_AUTHENTICATE);
        let mut e = HttpError::from_response(what, r).await;
        if challenged {
            if let Ok(mut cache) = self.auth.lock() {
                cache.remove(repo);
                cache.remove("");
            }
            e.cause = Cause::Transient;
        }
        e
    }

    /// Uploads a small in-memory blob (a config).
    pub async fn put_small_blob(
        &self,
        repo: &str,
        digest: &str,
        data: &[u8],
    ) -> Result<(), HttpError> {
        let location = self.start_upload(repo).await?;
        let body = data.to_vec();
        let r = self
            .send(repo, |h| {
                h.put(&location)
                    .query(&[("digest", digest)])
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(HttpError::from_response(&format!("PUT blob {digest}"), r).await);
        }
        check_digest(&r, digest)
    }

    /// `PUT` of a manifest under a tag; returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<String, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let r = self
            .send(repo, |h| {
                h.put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(manifest.to_vec())
            })
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(HttpError::from_response("PUT manifest", r).await);
        }
        header_digest(&r).ok_or_else(|| {
            HttpError::new(
                Cause::Other,
                "the registry reported no Docker-Content-Digest for the manifest",
            )
        })
    }

    /// The digest a tag points at, `None` when the tag does not exist.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<String>, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let r = self
            .send(repo, |h| {
                h.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match r.status() {
            s if s.is_success() => Ok(header_digest(&r)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(HttpError::from_response(&format!("HEAD manifest {tag}"), r).await),
        }
    }

    /// The manifest a tag points at, `None` when the tag does not exist.
    pub async fn get_manifest(&self, repo: &str, tag: &str) -> Result<Option<Vec<u8>>, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let r = self
            .send(repo, |h| {
                h.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match r.status() {
            s if s.is_success() => Ok(Some(
                r.bytes().await.map_err(|e| self.transport(e))?.to_vec(),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(HttpError::from_response(&format!("GET manifest {tag}"), r).await),
        }
    }

    /// `DELETE` of a manifest by digest.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<(), HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let r = self.send(repo, |h| h.request(Method::DELETE, &url)).await?;
        if r.status().is_success() || r.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(HttpError::from_response("DELETE manifest", r).await)
        }
    }

    /// Repositories of the registry (first page of the catalog).
    pub async fn catalog(&self) -> Result<Vec<String>, HttpError> {
        let url = self.url("/v2/_catalog");
        let r = self
            .send("", |h| h.get(&url).query(&[("n", "1000")]))
            .await?;
        if !r.status().is_success() {
            return Err(HttpError::from_response("GET /v2/_catalog", r).await);
        }
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let c: Catalog = r.json().await.map_err(|e| self.transport(e))?;
        Ok(c.repositories)
    }
}

/// Watches a streamed request body: the request fails when the body has not
/// been polled for data (a registry that stopped reading) nor answered for
/// `deadline`.
struct Watch {
    last: std::sync::Arc<Mutex<std::time::Instant>>,
    deadline: Duration,
}

fn watched(
    body: impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
    deadline: Duration,
) -> (reqwest::Body, Watch) {
    use futures::StreamExt;
    let last = std::sync::Arc::new(Mutex::new(std::time::Instant::now()));
    let touch = last.clone();
    let body = body.inspect(move |_| {
        if let Ok(mut t) = touch.lock() {
            *t = std::time::Instant::now();
        }
    });
    (reqwest::Body::wrap_stream(body), Watch { last, deadline })
}

impl Watch {
    /// Runs the request; `Err(None)` when it stalled past the deadline.
    async fn run(
        self,
        request: impl Future<Output = Result<Response, reqwest::Error>>,
    ) -> Result<Response, Option<reqwest::Error>> {
        let stalled = async {
            loop {
                let idle = self.last.lock().map(|t| t.elapsed()).unwrap_or_default();
                if idle >= self.deadline {
                    return;
                }
                tokio::time::sleep(self.deadline - idle).await;
            }
        };
        tokio::select! {
            r = request => r.map_err(Some),
            () = stalled => Err(None),
        }
    }
}

fn header_digest(r: &Response) -> Option<String> {
    r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The registry's verdict: the digest it stored must be the one we computed.
fn check_digest(r: &Response, expected: &str) -> Result<(), HttpError> {
    match header_digest(r) {
        Some(d) if d == expected => Ok(()),
        Some(d) => Err(HttpError::new(
            Cause::DigestMismatch,
            format!("the registry stored {d}, expected {expected}"),
        )),
        // The spec makes the header a SHOULD; the 201 on `?digest=` is the verdict.
        None => Ok(()),
    }
}

fn basic_header(c: &Credentials) -> Result<HeaderValue, String> {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| e.to_string())
}

/// Parses `k="v",k2="v2"` (the parameters of a `WWW-Authenticate` challenge).
pub(crate) fn parse_challenge(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// An HTTP client with the ring TLS provider and, if given, a CA bundle added to
/// the system roots.
///
/// `read_timeout` bounds the wait for an answer and each pause in reading it
/// (for downloads: the registry client puts deadlines on each request instead,
/// as a blob upload may take longer than any fixed read timeout).
pub(crate) fn http_client(
    ca_bundle: Option<&std::path::Path>,
    read_timeout: Option<Duration>,
) -> Result<reqwest::Client, String> {
    // Installed once per process; a second install reports an error we ignore.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(t) = read_timeout {
        builder = builder.read_timeout(t);
    }
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| format!("failed to read the CA bundle {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("failed to parse the CA bundle {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "the CA bundle {} holds no certificate",
                path.display()
            ));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| format!("failed to build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let p = parse_challenge(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }
}
