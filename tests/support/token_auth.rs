//! Bearer-token authentication for the push tests: the real Debian
//! `docker-registry` configured with `auth: token`, and a small token issuer
//! (the role `docker_auth` plays in production). The issuer checks basic
//! credentials and signs ES256 JWTs with a key whose certificate the registry
//! trusts (`rootcertbundle`); the registry itself verifies every token.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

use super::{free_port, require, run};

const SERVICE: &str = "push-test-registry";
const ISSUER: &str = "push-test-issuer";

/// A token-authenticated registry (plain HTTP) and its token issuer.
pub struct TokenRegistry {
    /// `127.0.0.1:PORT` of the registry.
    pub addr: String,
    /// Tokens issued so far.
    pub tokens_issued: Arc<AtomicUsize>,
    dir: tempfile::TempDir,
    child: Child,
    stop: Arc<AtomicBool>,
    issuer_addr: String,
}

impl TokenRegistry {
    /// Starts both; the issuer accepts `user`/`password` only.
    pub fn start(user: &str, password: &str) -> TokenRegistry {
        require("docker-registry", "docker-registry");
        require("openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        run(Command::new("openssl").current_dir(d).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "signing.key",
            "-out",
            "signing.pem",
            "-days",
            "2",
            "-subj",
            "/CN=push-test-token-signer",
        ]));
        run(Command::new("openssl").current_dir(d).args([
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "signing.key",
            "-outform",
            "DER",
            "-out",
            "signing.p8",
        ]));
        run(Command::new("openssl").current_dir(d).args([
            "x509",
            "-in",
            "signing.pem",
            "-outform",
            "DER",
            "-out",
            "signing.der",
        ]));
        let pkcs8 = std::fs::read(d.join("signing.p8")).expect("pkcs8");
        let cert = std::fs::read(d.join("signing.der")).expect("cert der");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .expect("signing key");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind issuer");
        let issuer_addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        {
            let (stop, issued) = (stop.clone(), tokens_issued.clone());
            let key = Arc::new(key);
            let x5c = STANDARD.encode(&cert);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    issue(conn, &key, &x5c, &expected, &issued);
                }
            });
        }

        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dp = d.display();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {dp}/data\n  delete:\n    enabled: true\nauth:\n  token:\n    realm: http://{issuer_addr}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {dp}/signing.pem\nhttp:\n  addr: {addr}\n"
        );
        std::fs::write(d.join("config.yml"), config).expect("config");
        let log = std::fs::File::create(d.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = TokenRegistry {
            addr,
            tokens_issued,
            dir,
            child,
            stop,
            issuer_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                panic!("token docker-registry did not start: {}", registry.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The registry's log (why a token was refused).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Storage directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Answers one `GET /token?service=…&scope=…` with a signed token granting the
/// requested scopes, or 401 for wrong credentials.
fn issue(conn: TcpStream, key: &EcdsaKeyPair, x5c: &str, expected: &str, issued: &AtomicUsize) {
    let Ok(read) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorized = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
            && v.trim() == expected
        {
            authorized = true;
        }
    }
    let mut conn = conn;
    if !authorized {
        let _ = conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut access = Vec::new();
    for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
        if k != "scope" {
            continue;
        }
        let scope = percent_decode(v);
        let mut parts = scope.splitn(3, ':');
        if let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        {
            access.push(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = json!({
        "iss": ISSUER, "sub": "pusher", "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let Ok(sig) = key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()) else {
        return;
    };
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    issued.fetch_add(1, Ordering::SeqCst);
    let body = json!({"token": token, "expires_in": 300}).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.shutdown(Shutdown::Both);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.issuer_addr);
    }
}
