//! Gzip push of `docker save` layers in one pass: each layer is read once,
//! compressed and uploaded as it is compressed (`POST` a session, one streamed
//! chunked `PATCH`, `PUT ?digest=` with the digest computed on the way), several
//! layers at once. Its uncompressed content is checked against the config's
//! `diff_id` on the way: a mismatch never completes the upload.
//!
//! A compressed digest is only known after compressing, so a re-push could not
//! ask the registry "do you have it?" before doing the work again. Two sources
//! answer that without compressing: the tag already in the registry (when it
//! holds this very image), and a persistent memo of `diff_id` → compressed
//! digest and size of every layer this machine pushed ([`Memo`]). With either,
//! a re-push is `HEAD` requests only, 0 bytes uploaded.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use super::plan::{self, DockerImage, LayerDescriptor};
use super::tarball::EntryData;
use super::{AttemptError, BlobContext, BlobOutcome, PumpStop, PushError, pump};

/// Digest and size of a compressed layer.
pub(super) type Compressed = (String, u64);

/// Where the memo lives by default: `$XDG_CACHE_HOME/server-manager/` or
/// `$HOME/.cache/server-manager/`, file `gzip-layers.json`.
pub fn default_memo_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("server-manager").join("gzip-layers.json"))
}

/// Most entries kept; beyond that the memo starts afresh (it is only a cache).
const MEMO_MAX: usize = 20_000;

/// The persistent memo of compressed layers: `diff_id` → (digest, size). Best
/// effort: an unreadable or unwritable memo only costs a compression.
pub(super) struct Memo {
    path: Option<PathBuf>,
    entries: HashMap<String, Compressed>,
}

impl Memo {
    /// Loads the memo at `path` (empty when absent or unreadable).
    pub fn load(path: Option<&Path>) -> Memo {
        let entries = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<HashMap<String, Compressed>>(&b).ok())
            .unwrap_or_default();
        Memo {
            path: path.map(Path::to_path_buf),
            entries,
        }
    }

    /// The compressed form of `diff_id` pushed before, if any.
    pub fn get(&self, diff_id: &str) -> Option<&Compressed> {
        self.entries.get(diff_id)
    }

    /// Records new entries and writes the memo (atomically: a temporary file
    /// renamed over it, so concurrent pushes never read half a file).
    pub fn save(&mut self, new: impl IntoIterator<Item = (String, Compressed)>) {
        let mut changed = false;
        for (k, v) in new {
            changed |= self.entries.insert(k, v.clone()).as_ref() != Some(&v);
        }
        let Some(path) = &self.path else { return };
        if !changed {
            return;
        }
        if self.entries.len() > MEMO_MAX {
            self.entries.clear();
            return;
        }
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(&self.entries)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the layer memo");
        }
    }
}

/// What pushing the layers did.
pub(super) struct Layers {
    /// Descriptors in manifest order.
    pub descriptors: Vec<LayerDescriptor>,
    /// One outcome per unique layer.
    pub outcomes: Vec<BlobOutcome>,
    /// Total size of the unique compressed layers.
    pub size: u64,
}

/// Pushes every layer of `image` gzip-compressed (see the module header).
pub(super) async fn push_layers(
    ctx: &Arc<BlobContext>,
    image: &DockerImage,
    from_tag: HashMap<String, Compressed>,
    memo: &mut Memo,
    parallelism: usize,
) -> Result<Layers, PushError> {
    let mut todo: Vec<(String, EntryData)> = Vec::new();
    for (diff_id, entry) in &image.layers {
        if !todo.iter().any(|(d, _)| d == diff_id) {
            todo.push((diff_id.clone(), *entry));
        }
    }
    // A sequential source must be read front to back.
    todo.sort_by_key(|(_, e)| e.offset);
    let results: Vec<Result<(String, Compressed, BlobOutcome), PushError>> =
        futures::stream::iter(todo)
            .map(|(diff_id, entry)| {
                let ctx = ctx.clone();
                let known = from_tag
                    .get(&diff_id)
                    .or_else(|| memo.get(&diff_id))
                    .cloned();
                async move {
                    layer(&ctx, &diff_id, entry, known)
                        .await
                        .map(|(c, o)| (diff_id, c, o))
                }
            })
            .buffer_unordered(parallelism.max(1))
            .collect()
            .await;
    let mut done: HashMap<String, Compressed> = HashMap::new();
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok((diff_id, c, outcome)) => {
                done.insert(diff_id, c);
                outcomes.push(outcome);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Whatever got in is remembered, even when the push as a whole fails.
    memo.save(done.clone());
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut descriptors = Vec::new();
    for (diff_id, _) in &image.layers {
        let Some((digest, size)) = done.get(diff_id).cloned() else {
            continue;
        };
        descriptors.push(LayerDescriptor {
            media_type: plan::OCI_LAYER_GZIP,
            digest,
            size,
        });
    }
    let size = done.values().map(|(_, s)| s).sum();
    Ok(Layers {
        descriptors,
        outcomes,
        size,
    })
}

/// One layer: found in the registry under its known compressed digest, or
/// compressed and uploaded in one pass.
async fn layer(
    ctx: &BlobContext,
    diff_id: &str,
    entry: EntryData,
    known: Option<Compressed>,
) -> Result<(Compressed, BlobOutcome), PushError> {
    if let Some((digest, size)) = known
        && let Some(outcome) = super::existing(ctx, &digest, entry.size).await?
    {
        return Ok(((digest, size), outcome));
    }
    let policy = ctx.client.retry.clone();
    let mut delay = policy.initial_backoff;
    let mut attempt = 1;
    let upload_err = |message: String| PushError::UploadBlob {
        digest: diff_id.to_string(),
        message: format!("(gzip-compressed layer) {message}"),
    };
    loop {
        match attempt_upload(ctx, diff_id, entry).await {
            Ok(c) => {
                let n = c.1;
                return Ok((c, BlobOutcome::Uploaded(n)));
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Http(e)) if e.retryable() && attempt < policy.attempts => {
                tracing::debug!(attempt, %diff_id, error = %e.message, "layer upload failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_backoff);
                attempt += 1;
            }
            Err(AttemptError::Http(mut e)) => {
                if attempt > 1 {
                    e.message = format!("{} (after {attempt} attempts)", e.message);
                }
                return Err(PushError::from_http(e, upload_err));
            }
        }
    }
}

/// Counts the bytes read through it.
struct Counted<R, F> {
    inner: R,
    on_read: F,
}

impl<R: Read, F: FnMut(u64)> Read for Counted<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// One attempt: a session, the compressed layer streamed into one `PATCH` as a
/// blocking thread reads and compresses it, then `PUT ?digest=`. Progress
/// counts uncompressed bytes read.
async fn attempt_upload(
    ctx: &BlobContext,
    diff_id: &str,
    entry: EntryData,
) -> Result<Compressed, AttemptError> {
    let location = ctx
        .client
        .start_upload(&ctx.repo)
        .await
        .map_err(AttemptError::Http)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let tarball = ctx.tarball.clone();
    let (done, progress, total) = (ctx.done.clone(), ctx.progress.clone(), ctx.total);
    let want = diff_id.to_string();
    let producer = tokio::task::spawn_blocking(move || {
        let mut read = 0u64;
        let reader = match tarball.open_at(entry) {
            Ok(r) => r,
            Err(e) => return (Err(PumpStop::Read(e.to_string())), read),
        };
        let mut counted = Counted {
            inner: reader,
            on_read: |n| {
                read += n;
                let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                progress(super::Progress {
                    bytes_done: d,
                    bytes_total: total,
                });
            },
        };
        let result = pump(&mut counted, true, |chunk| {
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        let abort = |why: &str| {
            let _ = tx.blocking_send(Err(std::io::Error::other(why.to_string())));
        };
        match &result {
            Err(PumpStop::Read(_)) => abort("tarball read failed"),
            Ok(p) if p.input_len != entry.size || p.input_digest != want => {
                abort("layer digest mismatch")
            }
            Ok(_) => {}
            Err(PumpStop::Abandoned) => {}
        }
        drop(counted);
        (result, read)
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let patched = ctx.client.patch_blob(&ctx.repo, &location, body).await;
    let (pumped, read) = producer.await.map_err(|e| {
        AttemptError::Fatal(PushError::UploadBlob {
            digest: diff_id.to_string(),
            message: format!("reader task failed: {e}"),
        })
    })?;
    let fail = |e: AttemptError| {
        ctx.rewind(read);
        Err(e)
    };
    let pumped = match pumped {
        Ok(p) => p,
        Err(PumpStop::Read(message)) => {
            return fail(AttemptError::Fatal(PushError::ReadTarball {
                source_name: ctx.source_name.clone(),
                message,
            }));
        }
        Err(PumpStop::Abandoned) => {
            return fail(AttemptError::Http(patched.err().unwrap_or_else(|| {
                super::HttpError::new(super::Cause::Transient, "the upload stopped taking data")
            })));
        }
    };
    if pumped.input_len != entry.size || pumped.input_digest != diff_id {
        return fail(AttemptError::Fatal(PushError::VerifyBlob {
            digest: diff_id.to_string(),
            actual: format!("{} ({} bytes)", pumped.input_digest, pumped.input_len),
        }));
    }
    let location = match patched {
        Ok(l) => l,
        Err(e) => return fail(AttemptError::Http(e)),
    };
    if let Err(e) = ctx
        .client
        .complete_upload(&ctx.repo, &location, &pumped.output_digest)
        .await
    {
        return fail(AttemptError::Http(e));
    }
    Ok((pumped.output_digest, pumped.output_len))
}
