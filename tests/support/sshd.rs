//! A real SSH target for tests: Debian's `sshd` on a free loopback port, with
//! a generated host key and client key, root login by key only, everything in
//! a temporary directory; killed on drop. The "host" is this machine, so its
//! containers run on the machine's Docker engine.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require, run};

/// A running `sshd -D`.
pub struct TestSshd {
    /// The loopback address it listens on.
    pub host: String,
    /// The port it listens on.
    pub port: u16,
    /// Host key, client key, config, logs.
    pub dir: tempfile::TempDir,
    child: Child,
}

fn keygen(path: &std::path::Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sm-test", "-f"])
        .arg(path));
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
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let port = port.unwrap_or_else(free_port);
        let config = format!(
            "Port {port}\nListenAddress {host}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nMaxStartups 100\nMaxSessions 50\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let sshd = TestSshd {
            host: host.to_string(),
            port,
            dir,
            child,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((self.host.as_str(), self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start on port {}: {log}", self.port);
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
        let public =
            std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("host key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[{}]:{} {kind} {key}\n", self.host, self.port)
    }

    /// A `known_hosts` line for this host and port with a different key.
    pub fn wrong_known_hosts(&self) -> String {
        let other = self.dir.path().join("other_host_key");
        if !other.exists() {
            keygen(&other);
        }
        let public = std::fs::read_to_string(other.with_extension("pub")).expect("other key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[{}]:{} {kind} {key}\n", self.host, self.port)
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
