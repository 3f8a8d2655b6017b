//! A real SSH target on loopback: Debian's `sshd` run in the foreground from a
//! directory of its own (host key, `authorized_keys`, configuration, log, pid
//! file), root login by key only. The "host" is this machine: its containers
//! run on the machine's Docker engine. The demo lab runs one per target host;
//! the tests build theirs with it too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Where Debian's `sshd` is.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Generates an ed25519 key pair without passphrase at `path` (private) and
/// `path.pub`, with `ssh-keygen`.
pub fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen (Debian package openssh-client)")?;
    anyhow::ensure!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A free TCP port on `address` (bound, then released for the caller).
pub fn free_port(address: &str) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind((address, 0))
        .with_context(|| format!("cannot bind a port on {address}"))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `port` on `address` can be listened on now.
pub fn port_is_free(address: &str, port: u16) -> bool {
    std::net::TcpListener::bind((address, port)).is_ok()
}

/// A running `sshd -D`. Killed, with every session it forked, on
/// [`Sshd::stop`] or drop.
pub struct Sshd {
    /// The loopback address it listens on.
    pub address: String,
    /// The port it listens on.
    pub port: u16,
    /// Its directory: `host_key`, `authorized_keys`, `sshd_config`,
    /// `sshd.log`, `sshd.pid`.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Sshd {
    /// Starts sshd on `address:port` from `dir` (created if missing; a host
    /// key already there is kept, so `known_hosts` stays valid across
    /// restarts), accepting the keys of `authorized_keys` (lines), and waits
    /// until it accepts connections.
    ///
    /// sshd is told to exit when the thread that started it ends
    /// (`PR_SET_PDEATHSIG`), so a killed parent leaves no listener behind:
    /// start it from a thread that lives as long as it should (the main
    /// thread, a runtime's worker — not a blocking-pool thread).
    pub fn start(
        dir: &Path,
        address: &str,
        port: u16,
        authorized_keys: &str,
    ) -> anyhow::Result<Sshd> {
        // sshd refuses to start without its privilege-separation directory,
        // which Debian's ssh service creates when it starts.
        std::fs::create_dir_all("/run/sshd").context("cannot create /run/sshd")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let host_key = dir.join("host_key");
        if !host_key.exists() || !host_key.with_extension("pub").exists() {
            let _ = std::fs::remove_file(&host_key);
            let _ = std::fs::remove_file(host_key.with_extension("pub"));
            keygen(&host_key, "server-manager-lab-host")?;
        }
        let mut keys = authorized_keys.trim().to_string();
        keys.push('\n');
        std::fs::write(dir.join("authorized_keys"), keys)?;
        let d = dir.display();
        let config = format!(
            "Port {port}\nListenAddress {address}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nMaxStartups 100\nMaxSessions 50\nSubsystem sftp internal-sftp\n"
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let mut command = Command::new(SSHD);
        command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the closure only calls it.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {SSHD} (Debian package openssh-server)"))?;
        let mut sshd = Sshd {
            address: address.to_string(),
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        sshd.wait_ready()?;
        Ok(sshd)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((self.address.as_str(), self.port)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                anyhow::bail!(
                    "sshd on {}:{} exited ({status}): {}",
                    self.address,
                    self.port,
                    self.log().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        anyhow::bail!(
            "sshd did not start listening on {}:{}: {}",
            self.address,
            self.port,
            self.log().trim()
        )
    }

    /// sshd's own log (`-e`: what it would send to syslog).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The pid of the listener, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The `known_hosts` line of this sshd's host key (`[address]:port type key`).
    pub fn known_hosts(&self) -> anyhow::Result<String> {
        known_hosts_line(&self.dir.join("host_key.pub"), &self.address, self.port)
    }

    /// Ends the listener and every session it forked (SIGTERM, SIGKILL
    /// after 5 s), and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::procs::end_tree(child.id(), Duration::from_secs(5));
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `known_hosts` line for `address:port` of the public key in `public_key_file`.
pub fn known_hosts_line(
    public_key_file: &Path,
    address: &str,
    port: u16,
) -> anyhow::Result<String> {
    let public = std::fs::read_to_string(public_key_file)
        .with_context(|| format!("cannot read {}", public_key_file.display()))?;
    let mut fields = public.split_whitespace();
    let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    Ok(format!("[{address}]:{port} {kind} {key}\n"))
}

/// Kills an sshd left running from `dir` by a process that died without
/// stopping it (its pid file names it; the pid must still be that sshd).
pub fn kill_stale(dir: &Path) {
    let config = dir.join("sshd_config");
    if let Some(pid) = std::fs::read_to_string(dir.join("sshd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        && super::procs::cmdline_contains(pid, &config.display().to_string())
    {
        super::procs::end_tree(pid, Duration::from_secs(5));
    }
}
