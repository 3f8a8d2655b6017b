//! Small HTTP tools for the push tests, all on loopback with std threads:
//! - [`FaultyProxy`]: forwards to the real registry, but answers chosen requests
//!   with an injected status (the registry behind it still stores everything
//!   else: a fault injector, not a registry mock);
//! - [`FileServer`]: serves one file (optionally with `Range` support), to push
//!   from an HTTP URL;
//! - [`http_get`] and [`tags`]: read the registry's API directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One injected fault: requests matching `method` and `path_contains` get
/// `status`, `times` times (then pass through). Status 0: no answer at all
/// (the connection is held open, its request unread, for two minutes).
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP method to match.
    pub method: &'static str,
    /// Substring of the request target to match.
    pub path_contains: &'static str,
    /// Status to answer.
    pub status: u16,
    /// How many matching requests fail (`usize::MAX`: all).
    pub times: usize,
}

/// A fault-injecting HTTP proxy in front of an upstream address.
pub struct FaultyProxy {
    /// `127.0.0.1:PORT` to use as the registry address.
    pub addr: String,
    /// `METHOD target -> status` of every request seen.
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

struct RequestHead {
    method: String,
    target: String,
    raw_headers: Vec<String>,
    content_length: u64,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<RequestHead> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut raw_headers = Vec::new();
    let mut content_length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
        raw_headers.push(h);
    }
    Some(RequestHead {
        method,
        target,
        raw_headers,
        content_length,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Injected",
    }
}

impl FaultyProxy {
    /// Starts the proxy in front of `upstream` (`host:port`).
    pub fn start(upstream: &str, faults: Vec<Fault>) -> FaultyProxy {
        FaultyProxy::start_with(upstream, faults, false)
    }

    /// A proxy that flips one byte in the middle of every blob upload's body
    /// (`PUT` with a length): the registry receives other content than sent.
    pub fn corrupting(upstream: &str) -> FaultyProxy {
        FaultyProxy::start_with(upstream, Vec::new(), true)
    }

    fn start_with(upstream: &str, faults: Vec<Fault>, corrupt: bool) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(faults));
        let upstream = upstream.to_string();
        {
            let stop = stop.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (upstream, faults, log) = (upstream.clone(), faults.clone(), log.clone());
                    std::thread::spawn(move || handle(conn, &upstream, &faults, &log, corrupt));
                }
            });
        }
        FaultyProxy { addr, log, stop }
    }

    /// How many requests got an injected fault.
    pub fn injected(&self) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.ends_with("(injected)"))
            .count()
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    faults: &Mutex<Vec<Fault>>,
    log: &Mutex<Vec<String>>,
    corrupt: bool,
) {
    let Ok(read_side) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_side);
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let injected = {
        let mut faults = faults.lock().expect("faults");
        faults
            .iter_mut()
            .find(|f| {
                f.times > 0 && f.method == head.method && head.target.contains(f.path_contains)
            })
            .map(|f| {
                f.times = f.times.saturating_sub(1);
                f.status
            })
    };
    let mut client = client;
    if let Some(status) = injected {
        log.lock().expect("log").push(format!(
            "{} {} -> {status} (injected)",
            head.method, head.target
        ));
        if status == 0 {
            std::thread::sleep(std::time::Duration::from_secs(120));
            return;
        }
        // Take the body so the client sees the answer, not a reset.
        let _ = std::io::copy(
            &mut (&mut reader).take(head.content_length),
            &mut std::io::sink(),
        );
        let body = format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {status}"}}]}}"#);
        let _ = write!(
            client,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            reason(status),
            body.len()
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    log.lock()
        .expect("log")
        .push(format!("{} {}", head.method, head.target));
    let Ok(mut up) = TcpStream::connect(upstream) else {
        let _ = client.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for h in &head.raw_headers {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    // One request per connection, so every request passes through `handle`.
    out.push_str("Connection: close\r\n\r\n");
    if up.write_all(out.as_bytes()).is_err() {
        return;
    }
    let Ok(mut up_write) = up.try_clone() else {
        return;
    };
    let flip = corrupt
        && head.method == "PUT"
        && head.target.contains("/blobs/uploads/")
        && head.content_length > 0;
    let body = std::thread::spawn(move || {
        if flip {
            let mut data = Vec::new();
            let _ = (&mut reader)
                .take(head.content_length)
                .read_to_end(&mut data);
            let middle = data.len() / 2;
            if let Some(b) = data.get_mut(middle) {
                *b ^= 0x01;
            }
            let _ = up_write.write_all(&data);
        } else {
            let _ = std::io::copy(&mut (&mut reader).take(head.content_length), &mut up_write);
        }
    });
    let _ = std::io::copy(&mut up, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = body.join();
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Serves one file at `/image.tar`, with or without `Range` support.
pub struct FileServer {
    /// `http://127.0.0.1:PORT/image.tar`.
    pub url: String,
    /// How many requests were served.
    pub requests: Arc<Mutex<usize>>,
    /// How many body bytes were sent.
    pub bytes_served: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    addr: String,
}

impl FileServer {
    /// Starts serving `path`.
    pub fn start(path: PathBuf, ranges: bool) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind file server");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(0));
        let bytes_served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        {
            let (stop, requests, served) = (stop.clone(), requests.clone(), bytes_served.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    *requests.lock().expect("count") += 1;
                    let (path, served) = (path.clone(), served.clone());
                    std::thread::spawn(move || {
                        let n = serve_file(conn, &path, ranges);
                        served.fetch_add(n, Ordering::SeqCst);
                    });
                }
            });
        }
        FileServer {
            url: format!("http://{addr}/image.tar"),
            requests,
            bytes_served,
            stop,
            addr,
        }
    }
}

/// Serves one request; returns the body bytes sent.
fn serve_file(conn: TcpStream, path: &PathBuf, ranges: bool) -> u64 {
    let Ok(read_side) = conn.try_clone() else {
        return 0;
    };
    let mut reader = BufReader::new(read_side);
    let Some(head) = read_head(&mut reader) else {
        return 0;
    };
    let mut conn = conn;
    let Ok(mut file) = std::fs::File::open(path) else {
        return 0;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // `Range: bytes=START-` or `bytes=START-END` (inclusive).
    let range = head.raw_headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        if !k.eq_ignore_ascii_case("range") {
            return None;
        }
        let (start, end) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
        let start: u64 = start.parse().ok()?;
        let last = len.checked_sub(1)?;
        let end: u64 = if end.is_empty() {
            last
        } else {
            end.parse::<u64>().ok()?.min(last)
        };
        (start <= end).then_some((start, end))
    });
    let accept = if ranges {
        "Accept-Ranges: bytes\r\n"
    } else {
        ""
    };
    let (start, count) = match (ranges, range) {
        (true, Some((s, e))) => {
            let _ = write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\n{accept}Content-Range: bytes {s}-{e}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                e - s + 1
            );
            (s, e - s + 1)
        }
        _ => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\n{accept}Content-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            (0, len)
        }
    };
    use std::io::Seek;
    let mut sent = 0;
    if file.seek(std::io::SeekFrom::Start(start)).is_ok() {
        sent = std::io::copy(&mut (&mut file).take(count), &mut conn).unwrap_or(0);
    }
    let _ = conn.shutdown(Shutdown::Both);
    sent
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// A plain HTTP GET: status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The tags of a repository (empty when the repository does not exist).
pub fn tags(registry: &str, repo: &str) -> Vec<String> {
    let (status, body) = http_get(registry, &format!("/v2/{repo}/tags/list"));
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "tags/list of {repo}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("tags json");
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The registry's own digest for `repo:tag` (`HEAD` of the manifest), if any.
pub fn registry_digest(registry: &str, repo: &str, tag: &str) -> Option<String> {
    let mut s = TcpStream::connect(registry).unwrap_or_else(|e| panic!("connect {registry}: {e}"));
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: {registry}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    )
    .expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    if !out.starts_with("HTTP/1.0 200") && !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest")
            .then(|| v.trim().to_string())
    })
}
