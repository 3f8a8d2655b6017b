//! Watch streams: newline-delimited JSON events in resourceVersion order, from a
//! resourceVersion still in the change window, with bookmarks, `timeoutSeconds`,
//! `sendInitialEvents` (ending with the `k8s.io/initial-events-end` bookmark)
//! and, for a resourceVersion older than the window, a `200` stream holding one
//! `ERROR` event with a `410 Expired` Status (an HTTP 410 would make the kube-rs
//! watcher retry the same version forever).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::handlers::{Server, selectors, to_view};
use super::http::{ApiError, Req};
use super::resources::ResourceInfo;
use super::select::{FieldSelector, LabelSelector};
use super::store::{Change, ChangeType};
use super::table::TableBuilder;

/// Which changes a watch delivers.
struct Filter {
    info: ResourceInfo,
    /// Each event's object as a one-row Table (`Accept: …as=Table…`).
    table: Option<TableBuilder>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event (type, object) a change means for this watch, if any.
    fn event(&self, c: &Change) -> Option<Bytes> {
        if c.res != self.info.storage {
            return None;
        }
        if let Some(ns) = &self.namespace
            && *ns != c.namespace
        {
            return None;
        }
        let now = self.matches(&c.object);
        let before = c.previous.as_ref().is_some_and(|p| self.matches(p));
        let kind = match c.change {
            ChangeType::Added if now => "ADDED",
            ChangeType::Modified if now && before => "MODIFIED",
            ChangeType::Modified if now => "ADDED",
            ChangeType::Modified if before => "DELETED",
            ChangeType::Deleted if now || before => "DELETED",
            _ => return None,
        };
        Some(line(kind, self.object(to_view(&self.info, &c.object))))
    }

    /// The event object: the view, or a one-row Table of it.
    fn object(&self, view: Value) -> Value {
        match &self.table {
            Some(tb) => {
                let rv = view["metadata"]["resourceVersion"].clone();
                let now = jiff::Timestamp::now().as_second();
                tb.table_at(&[view], json!({"resourceVersion": rv}), now)
            }
            None => view,
        }
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": metadata}),
    )
}

/// Starts a watch; the response streams until the timeout, the server stops,
/// the client goes away or falls too far behind.
pub(super) fn start(
    server: Arc<Server>,
    info: &ResourceInfo,
    ns: Option<&str>,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(info, req)?;
    let table = super::table::wanted(req.accept()).map(|v| {
        TableBuilder::new(
            info,
            v,
            super::table::Include::from_param(req.param("includeObject")),
        )
    });
    let filter = Filter {
        info: info.clone(),
        table,
        namespace: ns.map(String::from),
        labels,
        fields,
    };
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = req.flag("allowWatchBookmarks");
    let send_initial = req.param("sendInitialEvents") == Some("true");
    let rv_param = req.param("resourceVersion").filter(|r| !r.is_empty());
    let mut first: Vec<Bytes> = Vec::new();
    let rx;
    let start_rv;
    // The initial list shows the state at `start_rv`, which may not be durable
    // yet: it is sent once it is, and the live changes up to it are skipped.
    let mut after = 0;
    {
        let st = server.store.lock();
        // History and broadcasts hold only durable changes.
        start_rv = st.durable();
        if send_initial || rv_param.is_none_or(|r| r == "0") {
            after = st.rv();
            for obj in st.list(&info.storage, ns) {
                if filter.matches(&obj) {
                    first.push(line("ADDED", filter.object(to_view(info, &obj))));
                }
            }
            if send_initial {
                first.push(bookmark(info, after, true));
            }
        } else {
            let rv: u64 = rv_param.and_then(|r| r.parse().ok()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid resource version: {}",
                    rv_param.unwrap_or("")
                ))
            })?;
            if rv < st.compacted() {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", st.compacted()),
                )
                .status();
                return Ok(stream_response(vec![line("ERROR", status)], None));
            }
            for c in st.history_after(rv) {
                if let Some(l) = filter.event(&c) {
                    first.push(l);
                }
            }
        }
        rx = st.subscribe();
    }
    let live = Live {
        server,
        filter,
        rx,
        timeout,
        bookmarks,
        progress: start_rv.max(after),
        after,
    };
    Ok(stream_response(first, Some(live)))
}

struct Live {
    server: Arc<Server>,
    filter: Filter,
    rx: broadcast::Receiver<Arc<Change>>,
    timeout: Duration,
    bookmarks: bool,
    progress: u64,
    /// The initial list's resourceVersion (0 without one).
    after: u64,
}

fn stream_response(first: Vec<Bytes>, live: Option<Live>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        if let Some(live) = &live
            && live.server.store.durable(live.after).await.is_err()
        {
            return;
        }
        for l in first {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if let Some(live) = live {
            run(live, tx).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn run(mut live: Live, tx: mpsc::Sender<Bytes>) {
    let deadline = tokio::time::sleep(live.timeout);
    tokio::pin!(deadline);
    let mut stop = live.server.stop.clone();
    let mut tick = tokio::time::interval(live.server.bookmark_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = stop.changed() => return,
            _ = tx.closed() => return,
            _ = tick.tick(), if live.bookmarks => {
                if tx.send(bookmark(&live.filter.info, live.progress, false)).await.is_err() {
                    return;
                }
            }
            msg = live.rx.recv() => match msg {
                Ok(c) => {
                    if c.rv <= live.after {
                        continue;
                    }
                    live.progress = c.rv;
                    if let Some(l) = live.filter.event(&c)
                        && tx.send(l).await.is_err()
                    {
                        return;
                    }
                }
                // Too far behind or shutting down: end the stream; the client
                // re-watches from the last resourceVersion it saw.
                Err(_) => return,
            }
        }
    }
}
