//! A real SSH target for tests: the product's sshd host
//! (`server_manager::lab::sshd`, which the demo lab runs) on a free loopback
//! port, with a client key of its own, everything in a temporary directory;
//! killed on drop. The "host" is this machine, so its containers run on the
//! machine's Docker engine.

use server_manager::lab::sshd::{Sshd, keygen, known_hosts_line};

use super::{free_port, require};

/// A running `sshd -D`.
pub struct TestSshd {
    /// The loopback address it listens on.
    pub host: String,
    /// The port it listens on.
    pub port: u16,
    /// Host key, client key, config, logs. Declared after `sshd`: the
    /// process stops before its directory goes.
    pub sshd: Sshd,
    /// The directory.
    pub dir: tempfile::TempDir,
}

impl TestSshd {
    /// Starts sshd on 127.0.0.1 and a free port, and waits until it accepts
    /// connections.
    pub fn start() -> TestSshd {
        Self::start_at("127.0.0.1", None)
    }

    /// Starts sshd on `host` (any 127.0.0.0/8 address) and `port` (a free one
    /// when `None`).
    pub fn start_at(host: &str, port: Option<u16>) -> TestSshd {
        require("/usr/sbin/sshd", "openssh-server");
        require("ssh-keygen", "openssh-client");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("client_key"), "sm-test").expect("client key");
        let public = std::fs::read_to_string(d.join("client_key.pub")).expect("client key");
        let port = port.unwrap_or_else(free_port);
        let sshd = Sshd::start(d, host, port, &public).unwrap_or_else(|e| panic!("{e:#}"));
        TestSshd {
            host: host.to_string(),
            port,
            sshd,
            dir,
        }
    }

    /// Also accepts logins with `public_key` (an `authorized_keys` line).
    pub fn authorize(&self, public_key: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("authorized_keys");
        writeln!(f, "{}", public_key.trim()).expect("write authorized_keys");
    }

    /// The client's public key (an `authorized_keys` line).
    pub fn client_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key.pub")).expect("client key")
    }

    /// The client's private key (OpenSSH format).
    pub fn private_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).expect("client key")
    }

    /// The `known_hosts` line of this sshd's host key.
    pub fn known_hosts(&self) -> String {
        self.sshd.known_hosts().expect("host key")
    }

    /// A `known_hosts` line for this host and port with a different key.
    pub fn wrong_known_hosts(&self) -> String {
        let other = self.dir.path().join("other_host_key");
        if !other.exists() {
            keygen(&other, "sm-test").expect("other key");
        }
        known_hosts_line(&other.with_extension("pub"), &self.host, self.port).expect("other key")
    }
}
