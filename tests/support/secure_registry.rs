//! The real Debian `docker-registry` behind TLS (a throwaway CA made with
//! `openssl`) with htpasswd basic authentication (bcrypt through Perl's
//! `crypt`), for the push tests of TLS, CA bundles and credentials.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require, run};

/// A TLS + basic-auth registry, stopped on drop.
pub struct SecureRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// PEM of the CA that signed the registry's certificate.
    pub ca: PathBuf,
    /// Storage, keys and config.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SecureRegistry {
    /// Starts a registry accepting `user`/`password`.
    pub fn start(user: &str, password: &str) -> SecureRegistry {
        require("docker-registry", "docker-registry");
        require("openssl", "openssl");
        require("perl", "perl-base");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=push-test-ca",
            ]));
        run(Command::new("openssl")
            .current_dir(d)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext.cnf");
        run(Command::new("openssl").current_dir(d).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]));
        let hash = run(Command::new("perl").args([
            "-e",
            "print crypt($ARGV[0], q($2b$05$) . $ARGV[1])",
            password,
            "abcdefghijklmnopqrstuu",
        ]));
        assert!(hash.starts_with("$2b$"), "perl crypt has no bcrypt: {hash}");
        std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dp = d.display();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {dp}/data\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: push-test\n    path: {dp}/htpasswd\nhttp:\n  addr: {addr}\n  tls:\n    certificate: {dp}/server.pem\n    key: {dp}/server.key\n"
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
        let ca = d.join("ca.pem");
        let registry = SecureRegistry {
            addr,
            ca,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!("TLS docker-registry did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
