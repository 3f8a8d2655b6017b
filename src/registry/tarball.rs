//! Reading image tarballs (`docker save` or OCI image layout, plain or gzip, from a
//! file or an HTTP(S) URL) without ever holding a layer in memory.
//!
//! A tar is sequential and the index files (`manifest.json`, `index.json`) may come
//! after the layers, so reading happens in two steps:
//!
//! 1. [`Tarball::index`] reads the archive once, keeping only entry headers (name,
//!    data offset, size, link target) and the content of small files (JSON index
//!    files, configs, OCI manifests), within a fixed memory budget. A plain file is
//!    indexed with seeks, a plain URL whose server honours `Range` with small
//!    bounded range requests from header to header (layer data is never read);
//!    gzip, and URLs without ranges, are read through once.
//! 2. [`Tarball::open_at`] streams one entry's data. A plain file seeks (so layers
//!    can be read in parallel); a plain URL asks for exactly the entry's range
//!    when the server supports ranges. Otherwise (gzip, or a URL without ranges) there is no random
//!    access: the reader is a shared sequential cursor, the caller reads entries in
//!    tar order, and a request for an earlier offset (a retry) starts a new pass.
//!    Nothing is spooled to disk: a second pass costs time, a spool would cost the
//!    image size in disk space on the operator's node.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;
use futures::TryStreamExt;

/// Largest file whose content is kept by the indexing pass.
const SMALL_FILE_MAX: u64 = 1 << 20;
/// Total memory the indexing pass may spend on small files.
const SMALL_FILES_BUDGET: u64 = 32 << 20;

/// Where the tarball's bytes come from.
#[derive(Clone)]
pub(crate) enum Origin {
    /// A local file.
    File(PathBuf),
    /// An HTTP(S) URL, read with this client.
    Url {
        /// Client used for every request.
        client: reqwest::Client,
        /// The tarball's URL.
        url: String,
        /// The runtime the blocking readers use to drive requests.
        handle: tokio::runtime::Handle,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Url { url, .. } => f.write_str(url),
        }
    }
}

/// Why a tarball cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TarballError {
    /// The source cannot be opened or read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The archive is malformed or hostile.
    #[error("{0}")]
    Invalid(String),
    /// The URL cannot be fetched for now: refused, timed out, or a 5xx answer.
    #[error("{0}")]
    Fetch(String),
}

/// One regular file of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryData {
    /// Offset of the data in the (decompressed) archive.
    pub offset: u64,
    /// Size of the data.
    pub size: u64,
}

type SharedCursor = Arc<Mutex<Option<(u64, Box<dyn Read + Send>)>>>;

/// An indexed tarball: where every file's data is, and the small files' content.
pub(crate) struct Tarball {
    origin: Origin,
    gzip: bool,
    random_access: bool,
    files: HashMap<String, EntryData>,
    small: HashMap<String, Vec<u8>>,
    cursor: SharedCursor,
}

impl Tarball {
    /// Reads the archive's headers and small files (blocking: call from a blocking
    /// thread).
    pub fn index(origin: Origin) -> Result<Tarball, TarballError> {
        // For a URL, a small range first: a 206 says ranges work (and gives the
        // length) without the server pushing the whole image at us.
        let (mut raw, ranges, total_len) = open_raw(&origin, 0, Some(FIRST_WINDOW))?;
        let gzip = {
            let buf = raw.fill_buf()?;
            buf.len() >= 2 && buf[0] == 0x1f && buf[1] == 0x8b
        };
        if gzip && ranges && !matches!(origin, Origin::File(_)) {
            // Decompression needs the whole stream.
            raw = open_raw(&origin, 0, None)?.0;
        }
        let random_access = !gzip && (matches!(origin, Origin::File(_)) || ranges);
        let mut scan = Scan::default();
        match (&origin, gzip) {
            (Origin::File(path), false) => {
                drop(raw);
                let file = File::open(path)?;
                let mut archive = tar::Archive::new(file);
                scan.run(archive.entries_with_seek()?)?;
            }
            (Origin::Url { .. }, false) if ranges => {
                // Hop from header to header with range requests: layer data is
                // never downloaded by this pass.
                let len = total_len.ok_or_else(|| {
                    TarballError::Invalid("the server gave no length for its range".into())
                })?;
                let reader = RangedReader {
                    origin: origin.clone(),
                    pos: 0,
                    len,
                    current: Some(raw),
                    current_end: FIRST_WINDOW.min(len),
                    window: FIRST_WINDOW,
                };
                let mut archive = tar::Archive::new(reader);
                scan.run(archive.entries_with_seek()?)?;
            }
            (_, true) => {
                let mut archive = tar::Archive::new(MultiGzDecoder::new(raw));
                scan.run(archive.entries()?)?;
            }
            (_, false) => {
                let mut archive = tar::Archive::new(raw);
                scan.run(archive.entries()?)?;
            }
        }
        if let (Some(len), false) = (total_len, gzip) {
            // Seeking past the end succeeds silently: check every entry is whole.
            if let Some((name, _)) = scan.files.iter().find(|(_, e)| e.offset + e.size > len) {
                return Err(TarballError::Invalid(format!(
                    "the tarball is truncated: {name} runs past the end of the file ({len} bytes)"
                )));
            }
        }
        let files = scan.resolve_links()?;
        Ok(Tarball {
            origin,
            gzip,
            random_access,
            files,
            small: scan.small,
            cursor: Arc::new(Mutex::new(None)),
        })
    }

    /// Whether entries can be read in any order and in parallel cheaply.
    pub fn random_access(&self) -> bool {
        self.random_access
    }

    /// The regular file (or link to one) at `name`, normalised like the archive's.
    pub fn file(&self, name: &str) -> Option<EntryData> {
        let name = normalize(Path::new(name)).ok()?;
        self.files.get(&name).copied()
    }

    /// Every file name, for error messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Reads a whole file of at most `max` bytes (blocking).
    pub fn read_file(&self, name: &str, max: u64) -> Result<Vec<u8>, TarballError> {
        let norm = normalize(Path::new(name)).map_err(TarballError::Invalid)?;
        let entry = self
            .files
            .get(&norm)
            .ok_or_else(|| TarballError::Invalid(format!("{name} is not in the tarball")))?;
        if entry.size > max {
            return Err(TarballError::Invalid(format!(
                "{name} is {} bytes, more than the {max} expected",
                entry.size
            )));
        }
        if let Some(data) = self.small.get(&norm) {
            return Ok(data.clone());
        }
        // A link shares its target's data, which may be cached under the target name.
        if let Some(data) = self
            .small
            .iter()
            .find(|(n, _)| self.files.get(*n) == Some(entry))
            .map(|(_, d)| d)
        {
            return Ok(data.clone());
        }
        let mut out = Vec::with_capacity(entry.size as usize);
        self.open_at(*entry)?.read_to_end(&mut out)?;
        if out.len() as u64 != entry.size {
            return Err(truncated(name));
        }
        Ok(out)
    }

    /// Streams one file's data (blocking reader). See the module header for the
    /// cost of each kind of source.
    pub fn open_at(&self, entry: EntryData) -> Result<Box<dyn Read + Send>, TarballError> {
        if self.random_access {
            let end = entry.offset + entry.size;
            let (raw, _, _) = open_raw(&self.origin, entry.offset, Some(end))?;
            return Ok(Box::new(raw.take(entry.size)));
        }
        let reusable = {
            let mut slot = self.cursor.lock().map_err(|_| poisoned())?;
            match slot.take() {
                Some((pos, reader)) if pos <= entry.offset => Some((pos, reader)),
                _ => None,
            }
        };
        let (pos, mut reader) = match reusable {
            Some(r) => r,
            None => {
                let (raw, _, _) = open_raw(&self.origin, 0, None)?;
                let decoded: Box<dyn Read + Send> = if self.gzip {
                    Box::new(MultiGzDecoder::new(raw))
                } else {
                    Box::new(raw)
                };
                (0, decoded)
            }
        };
        let skip = entry.offset - pos;
        let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())?;
        if skipped != skip {
            return Err(truncated("the tarball"));
        }
        Ok(Box::new(
            CursorReader {
                inner: Some(reader),
                pos: entry.offset,
                slot: self.cursor.clone(),
            }
            .take(entry.size),
        ))
    }
}

fn truncated(what: &str) -> TarballError {
    TarballError::Invalid(format!("{what} is truncated"))
}

fn poisoned() -> TarballError {
    TarballError::Invalid("tarball cursor lock poisoned".into())
}

/// A sequential reader that goes back to the shared cursor when dropped, so the
/// next entry (further in the archive) continues from here.
struct CursorReader {
    inner: Option<Box<dyn Read + Send>>,
    pos: u64,
    slot: SharedCursor,
}

impl Read for CursorReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(r) => {
                let n = r.read(buf)?;
                self.pos += n as u64;
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

impl Drop for CursorReader {
    fn drop(&mut self) {
        if let (Some(reader), Ok(mut slot)) = (self.inner.take(), self.slot.lock()) {
            *slot = Some((self.pos, reader));
        }
    }
}

/// Raw bytes from some offset, whether the source supports random access by
/// ranges, and its length when known.
type RawOpen = (Box<dyn BufRead + Send>, bool, Option<u64>);

/// Opens the raw bytes from `offset` (to `end`, exclusive, when given: for a URL
/// that bounds the range requested; a file reader is bounded by the caller).
fn open_raw(origin: &Origin, offset: u64, end: Option<u64>) -> Result<RawOpen, TarballError> {
    match origin {
        Origin::File(path) => {
            let mut file = File::open(path)?;
            let len = file.metadata()?.len();
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))?;
            }
            Ok((
                Box::new(BufReader::with_capacity(256 << 10, file)),
                true,
                Some(len),
            ))
        }
        Origin::Url {
            client,
            url,
            handle,
        } => {
            let mut request = client.get(url);
            if offset > 0 || end.is_some() {
                let range = match end {
                    Some(e) => format!("bytes={offset}-{}", e.saturating_sub(1).max(offset)),
                    None => format!("bytes={offset}-"),
                };
                request = request.header(reqwest::header::RANGE, range);
            }
            let response = handle.block_on(request.send()).map_err(|e| {
                let mut message = format!("GET {url}: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(&format!(": {s}"));
                    source = s.source();
                }
                TarballError::Fetch(message)
            })?;
            let status = response.status();
            if status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
            {
                return Err(TarballError::Fetch(format!("GET {url}: HTTP {status}")));
            }
            let ranged = status == reqwest::StatusCode::PARTIAL_CONTENT;
            if !(ranged || (status == reqwest::StatusCode::OK && offset == 0)) {
                return Err(TarballError::Io(io::Error::other(format!(
                    "GET {url}: HTTP {status}"
                ))));
            }
            let len = if ranged {
                // Content-Range: bytes START-END/TOTAL
                response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, total)| total.parse().ok())
            } else {
                response.content_length()
            };
            let stream = response.bytes_stream().map_err(io::Error::other);
            let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                tokio_util::io::StreamReader::new(stream),
                handle.clone(),
            );
            Ok((
                Box::new(BufReader::with_capacity(64 << 10, reader)),
                ranged,
                len,
            ))
        }
    }
}

/// First range asked of a URL (the probe) and of each jump while indexing.
const FIRST_WINDOW: u64 = 8 << 10;
/// Largest range asked while reading on without a jump.
const MAX_WINDOW: u64 = 1 << 20;

/// A URL read as a seekable file with bounded range requests: a window of a
/// few KiB after each jump (enough for a tar header and a small JSON file),
/// doubling while reading on, so skipping a layer never downloads it.
struct RangedReader {
    origin: Origin,
    pos: u64,
    len: u64,
    current: Option<Box<dyn BufRead + Send>>,
    /// End (exclusive) of the range `current` reads.
    current_end: u64,
    window: u64,
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.len || buf.is_empty() {
                return Ok(0);
            }
            if self.current.is_none() {
                let end = (self.pos + self.window).min(self.len);
                let (raw, _, _) =
                    open_raw(&self.origin, self.pos, Some(end)).map_err(|e| match e {
                        TarballError::Io(e) => e,
                        TarballError::Invalid(m) | TarballError::Fetch(m) => io::Error::other(m),
                    })?;
                self.current = Some(raw);
                self.current_end = end;
            }
            let n = match &mut self.current {
                Some(r) => r.read(buf)?,
                None => 0,
            };
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos < self.current_end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server ended a range early",
                ));
            }
            // This window is done: read on with a bigger one.
            self.current = None;
            self.window = (self.window * 2).min(MAX_WINDOW);
        }
    }
}

impl Seek for RangedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::other("seek out of range"))?;
        if target >= self.pos && target < self.current_end && self.current.is_some() {
            // Within the range being read: read through.
            let want = target - self.pos;
            if let Some(r) = &mut self.current {
                let skipped = io::copy(&mut r.take(want), &mut io::sink())?;
                self.pos += skipped;
            }
        }
        if target != self.pos {
            self.current = None;
            self.pos = target;
            self.window = FIRST_WINDOW;
        }
        Ok(self.pos)
    }
}

/// The indexing pass's findings.
#[derive(Default)]
struct Scan {
    files: HashMap<String, EntryData>,
    links: HashMap<String, String>,
    small: HashMap<String, Vec<u8>>,
    small_total: u64,
}

impl Scan {
    fn run<R: Read>(&mut self, entries: tar::Entries<'_, R>) -> Result<(), TarballError> {
        for entry in entries {
            let mut entry = entry.map_err(not_a_tar)?;
            let path = entry.path().map_err(not_a_tar)?.into_owned();
            let name = normalize(&path).map_err(TarballError::Invalid)?;
            let kind = entry.header().entry_type();
            if kind.is_file() || kind == tar::EntryType::Continuous {
                let data = EntryData {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                if data.size <= SMALL_FILE_MAX
                    && self.small_total + data.size <= SMALL_FILES_BUDGET
                    && wanted_small(&name)
                {
                    let mut buf = Vec::with_capacity(data.size as usize);
                    entry.read_to_end(&mut buf).map_err(not_a_tar)?;
                    if buf.len() as u64 != data.size {
                        return Err(truncated(&name));
                    }
                    self.small_total += data.size;
                    self.small.insert(name.clone(), buf);
                }
                self.files.insert(name, data);
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(not_a_tar)?
                    .ok_or_else(|| TarballError::Invalid(format!("link {name} has no target")))?
                    .into_owned();
                // docker save links duplicate layers as `../<id>/layer.tar`:
                // `..` is fine in a symlink target as long as it stays inside.
                let target = if kind.is_symlink() {
                    let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                    resolve_within(dir, &target)
                } else {
                    normalize(&target)
                }
                .map_err(TarballError::Invalid)?;
                self.links.insert(name, target);
            }
        }
        Ok(())
    }

    fn resolve_links(&mut self) -> Result<HashMap<String, EntryData>, TarballError> {
        let mut files = std::mem::take(&mut self.files);
        for (name, first) in &self.links {
            let mut target = first;
            let mut hops = 0;
            let data = loop {
                if let Some(d) = files.get(target) {
                    break Some(*d);
                }
                match self.links.get(target) {
                    Some(next) if hops < 16 => {
                        target = next;
                        hops += 1;
                    }
                    _ => break None,
                }
            };
            // A dangling link is only an error if the image needs it, later.
            if let Some(d) = data {
                files.insert(name.clone(), d);
            }
        }
        Ok(files)
    }
}

fn not_a_tar(e: io::Error) -> TarballError {
    let message = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof {
        TarballError::Invalid(format!("the tarball is truncated ({message})"))
    } else {
        TarballError::Invalid(format!("not a valid tar archive ({message})"))
    }
}

/// Files whose content the image description may need: index files, configs and
/// (OCI layout) manifests, which are all JSON and small.
fn wanted_small(name: &str) -> bool {
    !name.contains('/') || name.starts_with("blobs/")
}

/// Normalises an archive path (`./a/b` → `a/b`), refusing absolute paths and `..`.
pub(crate) fn normalize(path: &Path) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| format!("entry {path:?} is not UTF-8"))?,
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "entry {} escapes the archive (path traversal)",
                    path.display()
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target relative to `dir`, allowing `..` that stays inside
/// the archive.
fn resolve_within(dir: &Path, target: &Path) -> Result<String, String> {
    let escape = || {
        format!(
            "link target {} escapes the archive (path traversal)",
            target.display()
        )
    };
    let mut parts: Vec<String> = normalize(dir)?
        .split('/')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(escape)?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop().ok_or_else(escape)?;
            }
            Component::RootDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_traversal() {
        assert_eq!(normalize(Path::new("./a/b")).unwrap(), "a/b");
        assert!(normalize(Path::new("../etc/passwd")).is_err());
        assert!(normalize(Path::new("a/../../b")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert_eq!(
            resolve_within(Path::new("a"), Path::new("../b/layer.tar")).unwrap(),
            "b/layer.tar"
        );
        assert!(resolve_within(Path::new("a"), Path::new("../../x")).is_err());
        assert!(resolve_within(Path::new("a"), Path::new("/x")).is_err());
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn indexes_plain_and_gzip_alike() {
        let big = vec![7u8; 3 << 20];
        let tar = tar_of(&[("layer.tar", &big), ("manifest.json", b"[]")]);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.tar");
        std::fs::write(&plain, &tar).unwrap();
        let gz = dir.path().join("a.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for path in [plain, gz] {
            let t = Tarball::index(Origin::File(path)).unwrap();
            assert_eq!(t.read_file("./manifest.json", 10).unwrap(), b"[]");
            let layer = t.file("layer.tar").unwrap();
            let mut data = Vec::new();
            t.open_at(layer).unwrap().read_to_end(&mut data).unwrap();
            assert_eq!(data, big);
            // Reading again (a retry) works even without random access.
            let mut again = Vec::new();
            t.open_at(layer).unwrap().read_to_end(&mut again).unwrap();
            assert_eq!(again.len(), big.len());
        }
    }

    #[test]
    fn truncated_plain_file_is_detected() {
        let big = vec![1u8; 100_000];
        let tar = tar_of(&[("layer.tar", &big), ("manifest.json", b"[]")]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar");
        std::fs::write(&path, &tar[..50_000]).unwrap();
        let err = Tarball::index(Origin::File(path)).err().unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
