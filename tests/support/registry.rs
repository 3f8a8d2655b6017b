//! A real registry for tests: Debian's `docker-registry` (distribution) on a free
//! loopback port, with its storage in a temporary directory, stopped on drop.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{free_port, require};

/// A running `docker-registry serve`.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Storage and config directory.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// Starts a registry (plain HTTP, deletes enabled) and waits until `/v2/` answers.
    pub fn start() -> TestRegistry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        // The access log (one Apache-style line per request) goes to stdout.
        let access = std::fs::File::create(dir.path().join("access.log")).expect("access log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(access)
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = TestRegistry { addr, dir, child };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start on {}: {log}", self.addr);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
