//! Running one `ansible-playbook` child: the per-run work directory (0700,
//! holding the private key and `known_hosts` in 0600 files, the inventory and
//! the variables), the command line and environment, reading the event stream,
//! timeout and cancel (the whole process group is killed), and cleanup.
//!
//! Every user string reaches Ansible wrapped in the `__ansible_unsafe` JSON
//! marker ([`unsafe_vars`]), so it is never templated. Host keys are verified
//! against the request's `known_hosts` only, with a per-run SSH control path
//! so that no connection from another run is ever reused.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::api::Target;
use super::events::{self, Progress};

/// How the child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// Cancelled by request; the process group was killed.
    Cancelled,
    /// The timeout elapsed; the process group was killed.
    TimedOut,
    /// It could not be prepared or started.
    NotStarted(String),
}

/// What a finished child leaves behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// What its events said.
    pub progress: Progress,
    /// Its last stderr lines (for failures without any event).
    pub stderr_tail: Vec<String>,
    /// The file named by [`ExecSpec::collect`], if it exists within its limit.
    pub collected: Option<Vec<u8>>,
}

/// Notifications from a running child to its owner.
pub enum Hook<'a> {
    /// The child started in its own process group, in this work directory.
    Started {
        /// The per-run work directory (holds the key until the run ends).
        work_dir: &'a Path,
        /// The child's process group id.
        pgid: i32,
    },
    /// The events changed the progress.
    Progress(&'a Progress),
}

/// The run's log sinks: its own file and the combined debug log.
#[derive(Clone)]
pub struct RunLog {
    /// Run id (prefix in the debug log).
    pub id: String,
    /// The run's own log file, if any.
    pub file: Option<Arc<Mutex<std::fs::File>>>,
    /// The combined debug log of every run.
    pub debug: Arc<Mutex<std::fs::File>>,
}

impl RunLog {
    /// Appends a line (timestamped) to the run's log and to the debug log.
    pub fn line(&self, text: &str) {
        let ts = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
        if let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            let _ = writeln!(f, "{ts} {text}");
        }
        if let Ok(mut f) = self.debug.lock() {
            let _ = writeln!(f, "{ts} [{}] {text}", self.id);
        }
    }
}

/// What to run.
pub struct ExecSpec<'a> {
    /// The `ansible-playbook` program.
    pub ansible_playbook: &'a Path,
    /// The playbook directory (holds `callback_plugins/`).
    pub playbooks_dir: &'a Path,
    /// The playbook file name inside it.
    pub playbook: &'a str,
    /// The target.
    pub target: &'a Target,
    /// `--check --diff`.
    pub check: bool,
    /// Kill the run after this long.
    pub timeout: Duration,
    /// Where to log.
    pub log: RunLog,
    /// A file of the work directory to read back before it is removed, and
    /// its size limit (`logs.yml` fetches there).
    pub collect: Option<(&'a str, u64)>,
}

/// Wraps every string of `value` in Ansible's unsafe marker, recursively.
pub fn unsafe_vars(value: Value) -> Value {
    match value {
        Value::String(s) => json!({ "__ansible_unsafe": s }),
        Value::Array(items) => Value::Array(items.into_iter().map(unsafe_vars).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, unsafe_vars(v))).collect())
        }
        other => other,
    }
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// Sends SIGKILL to a whole process group (ansible-playbook, its workers, ssh).
pub fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions. Errors (group already gone) are ignored.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Kills the SSH control masters of a run: the processes whose command line
/// names the run's control path directory (`<work_dir>/cp`). `ssh` detaches
/// a master into a session of its own, so killing the run's process group
/// leaves it behind; while it lives, the run's connection, and with it the
/// host lock (`playbooks/tasks/host_lock.yml`), stays up.
pub fn kill_ssh_masters(work_dir: &Path) {
    let needle = work_dir.join("cp");
    let needle = needle.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.starts_with(b"ssh")
            && cmdline.windows(needle.len()).any(|w| w == needle)
            && pid > 1
        {
            // SAFETY: kill(2) has no memory-safety preconditions; a process
            // already gone is ignored.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether `pid` is still an `ansible-playbook` process (guards against
/// killing a recycled pid after a restart).
pub fn is_ansible(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("ansible-playbook"))
        .unwrap_or(false)
}

/// Creates the 0700 work directory with the key, `known_hosts`, the inventory
/// and the variables file built by `vars(work_dir)`.
fn prepare(
    spec: &ExecSpec<'_>,
    vars: impl FnOnce(&Path) -> Value,
) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("smr-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let key = dir.path().join("id");
    let mut key_bytes = spec.target.private_key.expose().as_bytes().to_vec();
    if !key_bytes.ends_with(b"\n") {
        key_bytes.push(b'\n');
    }
    write_private(&key, &key_bytes)?;
    let known_hosts = dir.path().join("known_hosts");
    let mut kh = spec.target.known_hosts.clone();
    if !kh.ends_with('\n') {
        kh.push('\n');
    }
    write_private(&known_hosts, kh.as_bytes())?;
    std::fs::create_dir(dir.path().join("cp"))?;
    std::fs::create_dir(dir.path().join("tmp"))?;
    let ssh_args = format!(
        "-o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o ConnectTimeout=10",
        known_hosts.display()
    );
    let inventory = json!({
        "all": { "hosts": { "target": {
            "ansible_host": spec.target.host,
            "ansible_port": spec.target.port,
            "ansible_user": spec.target.user,
            "ansible_ssh_private_key_file": key.display().to_string(),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "auto_silent",
        }}}
    });
    write_private(
        &dir.path().join("inventory.json"),
        inventory.to_string().as_bytes(),
    )?;
    let vars = unsafe_vars(vars(dir.path()));
    write_private(&dir.path().join("vars.json"), vars.to_string().as_bytes())?;
    Ok(dir)
}

/// The `ansible-playbook` command for a prepared work directory.
pub fn command(spec: &ExecSpec<'_>, work_dir: &Path) -> Command {
    let mut cmd = Command::new(spec.ansible_playbook);
    cmd.arg("-i")
        .arg(work_dir.join("inventory.json"))
        .arg("-e")
        .arg(format!("@{}", work_dir.join("vars.json").display()));
    if spec.check {
        cmd.arg("--check").arg("--diff");
    }
    cmd.arg(spec.playbooks_dir.join(spec.playbook))
        .current_dir(work_dir)
        .env_remove("ANSIBLE_CONFIG")
        .env_remove("SSH_AUTH_SOCK")
        .env("ANSIBLE_STDOUT_CALLBACK", "sm_events")
        .env(
            "ANSIBLE_CALLBACK_PLUGINS",
            spec.playbooks_dir.join("callback_plugins"),
        )
        .env("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_PIPELINING", "True")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o ControlMaster=auto -o ControlPersist=30s",
        )
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", work_dir.join("cp"))
        .env("ANSIBLE_LOCAL_TEMP", work_dir.join("tmp"))
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_SSH_RETRIES", "0")
        .env("ANSIBLE_GATHERING", "explicit")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

enum Line {
    Out(String),
    Err(String),
}

/// Forwards the lines of a pipe until it closes. Bytes that are not UTF-8
/// are replaced rather than ending the read: a reader that stops would
/// leave the child blocked on a full pipe.
async fn pump(
    pipe: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::UnboundedSender<Line>,
    wrap: fn(String) -> Line,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if tx.send(wrap(line)).is_err() {
                    break;
                }
            }
        }
    }
}

/// Runs one playbook to its end (or cancel/timeout) and cleans up after it.
pub async fn run(
    spec: ExecSpec<'_>,
    vars: impl FnOnce(&Path) -> Value,
    mut cancel: watch::Receiver<bool>,
    hook: &(dyn Fn(Hook<'_>) + Send + Sync),
) -> Outcome {
    let mut progress = Progress::default();
    let mut stderr_tail: Vec<String> = Vec::new();
    let not_started = |msg: String, progress: Progress| Outcome {
        ending: Ending::NotStarted(msg),
        progress,
        stderr_tail: Vec::new(),
        collected: None,
    };
    let work = match prepare(&spec, vars) {
        Ok(dir) => dir,
        Err(e) => return not_started(format!("cannot prepare the run: {e}"), progress),
    };
    let mut cmd = command(&spec, work.path());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return not_started(
                format!(
                    "cannot start {}: {e}",
                    spec.ansible_playbook.to_string_lossy()
                ),
                progress,
            );
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    hook(Hook::Started {
        work_dir: work.path(),
        pgid,
    });

    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, tx.clone(), Line::Out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, tx.clone(), Line::Err));
    }
    drop(tx);

    let mut handle_line = |line: Line, progress: &mut Progress| match line {
        Line::Out(l) => match events::parse_line(&l) {
            Some(event) => {
                progress.apply(&event);
                if let Some(text) = events::render(&event) {
                    spec.log.line(&text);
                }
                hook(Hook::Progress(progress));
            }
            None if !l.trim().is_empty() => spec.log.line(&l),
            None => {}
        },
        Line::Err(l) => {
            if !l.trim().is_empty() {
                spec.log.line(&format!("stderr: {l}"));
                stderr_tail.push(l);
                if stderr_tail.len() > 20 {
                    stderr_tail.remove(0);
                }
            }
        }
    };

    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut lines_open = true;
    let ending = loop {
        tokio::select! {
            line = rx.recv(), if lines_open => match line {
                Some(line) => handle_line(line, &mut progress),
                None => lines_open = false,
            },
            status = child.wait() => {
                break Ending::Exited(status.ok().and_then(|s| s.code()));
            }
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    kill_group(pgid);
                    let _ = child.wait().await;
                    break Ending::Cancelled;
                }
            }
            () = &mut deadline => {
                kill_group(pgid);
                let _ = child.wait().await;
                break Ending::TimedOut;
            }
        }
    };
    // Stragglers die with the group, and the SSH control master (in a
    // session of its own) with them; then the rest of the output is read,
    // bounded in time.
    kill_group(pgid);
    kill_ssh_masters(work.path());
    let drain = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(drain);
    while lines_open {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => handle_line(line, &mut progress),
                None => lines_open = false,
            },
            () = &mut drain => break,
        }
    }
    let collected = spec.collect.and_then(|(name, limit)| {
        let path = work.path().join(name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        (meta.is_file() && meta.len() <= limit)
            .then(|| std::fs::read(&path).ok())
            .flatten()
    });
    let path: PathBuf = work.path().to_path_buf();
    if let Err(e) = work.close() {
        spec.log.line(&format!(
            "cannot remove the work directory {}: {e}",
            path.display()
        ));
    }
    Outcome {
        ending,
        progress,
        stderr_tail,
        collected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pump_survives_bytes_that_are_not_utf8() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        pump(&b"first\r\n\xff\xfe bad\nlast"[..], tx, Line::Out).await;
        let mut lines = Vec::new();
        while let Some(Line::Out(l)) = rx.recv().await {
            lines.push(l);
        }
        assert_eq!(lines, ["first", "\u{fffd}\u{fffd} bad", "last"]);
    }

    #[test]
    fn every_string_is_marked_unsafe() {
        let v = unsafe_vars(json!({"a": "{{ x }}", "b": [ "y", 1, true, null ], "c": {"d": "z"}}));
        assert_eq!(
            v,
            json!({
                "a": {"__ansible_unsafe": "{{ x }}"},
                "b": [{"__ansible_unsafe": "y"}, 1, true, null],
                "c": {"d": {"__ansible_unsafe": "z"}}
            })
        );
    }
}
