//! The runner's core, independent of HTTP: accepts runs, queues them so that a
//! target (host, port) runs one playbook at a time within a global limit,
//! executes them (`exec`), and keeps their records (`store`).
//!
//! Scheduling is one FIFO queue scanned on every change: the first queued run
//! whose target is idle starts while a slot is free, so a busy host never
//! blocks the runs of other hosts behind it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::RunnerError;
use super::api::{
    HostLogsRequest, LogFileEntry, LogFileList, Playbook, RunAccepted, RunRequest, RunState,
    RunStatus,
};
use super::events::{self, Progress};
use super::exec::{self, Ending, ExecSpec, Hook, Outcome, RunLog};
use super::metrics::{Metrics, PlaybookLabels, RunLabels};
use super::store::{RunRecord, RunStore};

/// How the runner is set up.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Run records, per-run logs and the combined `debug.log`.
    pub data_dir: PathBuf,
    /// The playbooks (`provision.yml`, `deprovision.yml`, `logs.yml`,
    /// `callback_plugins/`).
    pub playbooks_dir: PathBuf,
    /// The `ansible-playbook` program.
    pub ansible_playbook: PathBuf,
    /// Runs executing at once, over all targets.
    pub max_concurrent: usize,
    /// Timeout of a run that does not set its own.
    pub default_timeout: Duration,
}

impl RunnerConfig {
    /// Defaults: `ansible-playbook` from `PATH`, 4 concurrent runs, 30 minutes.
    pub fn new(data_dir: PathBuf, playbooks_dir: PathBuf) -> RunnerConfig {
        RunnerConfig {
            data_dir,
            playbooks_dir,
            ansible_playbook: PathBuf::from("ansible-playbook"),
            max_concurrent: 4,
            default_timeout: Duration::from_secs(1800),
        }
    }
}

/// Largest log file `read_host_log` returns.
const MAX_HOST_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Where `logs.yml` fetches a file to, inside the work directory.
const FETCHED: &str = "fetched";

struct Entry {
    record: RunRecord,
    /// Held only while queued or running (it carries the key).
    request: Option<Arc<RunRequest>>,
    cancel: Option<watch::Sender<bool>>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Entry>,
    queue: VecDeque<String>,
    busy: HashSet<(String, u16)>,
    running: usize,
    keys: HashMap<String, String>,
}

/// The playbook runner: shared as `Arc<Runner>` by the HTTP handlers.
pub struct Runner {
    cfg: RunnerConfig,
    store: RunStore,
    inner: Mutex<Inner>,
    /// The metrics served on `/metrics`.
    pub metrics: Metrics,
    debug_log: Arc<Mutex<std::fs::File>>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunnerError {
    let context = context.into();
    move |source| RunnerError::Io { context, source }
}

/// The final state, return code, failed task and message of a run.
/// With pipelining, Ansible writes the module into `ssh` at once; when ssh
/// has already exited (it could not connect) Ansible reports only "Broken
/// pipe" and ssh's own diagnosis is lost. The cause is then found the way
/// ssh meets it: a TCP connection to the host's port, whose error replaces
/// the uninformative one. `None` when the message is not that case or the
/// port answers (the pipe broke for another reason).
async fn diagnose_broken_pipe(message: &str, host: &str, port: u16) -> Option<String> {
    if !(message.contains("unreachable over SSH") && message.contains("Broken pipe")) {
        return None;
    }
    let connect = tokio::net::TcpStream::connect((host, port));
    let error = match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => return None,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "Connection timed out".to_string(),
    };
    Some(format!(
        "host {host}:{port} unreachable over SSH: connect to host {host} port {port}: {error}"
    ))
}

pub fn conclude(
    outcome: &Outcome,
    playbook: Playbook,
    host: &str,
    port: u16,
    timeout: Duration,
) -> (RunState, Option<i32>, Option<String>, String) {
    let p = &outcome.progress;
    let during = p
        .current_task
        .as_deref()
        .map(|t| format!(" during task '{t}'"))
        .unwrap_or_default();
    match &outcome.ending {
        Ending::NotStarted(msg) => (RunState::Failed, None, None, msg.clone()),
        Ending::Cancelled => (
            RunState::Cancelled,
            None,
            None,
            format!("cancelled by request{during}"),
        ),
        Ending::TimedOut => (
            RunState::Failed,
            None,
            p.current_task.clone(),
            format!("timed out after {}s{during}", timeout.as_secs()),
        ),
        Ending::Exited(code) => {
            if let Some(failure) = &p.failure {
                return (
                    RunState::Failed,
                    *code,
                    failure.task.clone(),
                    events::describe_failure(failure, host, port),
                );
            }
            if *code == Some(0) {
                let msg = match (playbook, p.changed) {
                    (Playbook::Check, 0) => "no drift: the host matches".to_string(),
                    (Playbook::Check, n) => format!("drift: {n} task(s) would change the host"),
                    (_, n) => format!("{n} task(s) changed"),
                };
                return (RunState::Succeeded, *code, None, msg);
            }
            let tail = events::one_line(&outcome.stderr_tail.join("\n"));
            let how = code.map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
            (
                RunState::Failed,
                *code,
                None,
                format!("ansible-playbook exited with {how}: {tail}"),
            )
        }
    }
}

impl Runner {
    /// Opens the data directory, loads the run records and reports the runs a
    /// previous process lost (queued or running) as failed, after killing
    /// their `ansible-playbook` and removing their work directory.
    pub fn open(cfg: RunnerConfig) -> Result<Arc<Runner>, RunnerError> {
        for needed in [
            "provision.yml",
            "deprovision.yml",
            "inspect.yml",
            "logs.yml",
            "callback_plugins/sm_events.py",
        ] {
            let path = cfg.playbooks_dir.join(needed);
            if !path.is_file() {
                return Err(RunnerError::Io {
                    context: format!(
                        "the playbook directory {} lacks {needed}",
                        cfg.playbooks_dir.display()
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        }
        let store =
            RunStore::open(&cfg.data_dir).map_err(io_err("cannot open the data directory"))?;
        let debug =
            open_log(&cfg.data_dir.join("debug.log")).map_err(io_err("cannot open debug.log"))?;
        let debug_log = Arc::new(Mutex::new(debug));
        let mut inner = Inner::default();
        for mut record in store
            .load_all()
            .map_err(io_err("cannot read the run records"))?
        {
            if !record.status.state.is_terminal() {
                let was = record.status.state.as_str();
                if let Some(pgid) = record.pgid
                    && exec::is_ansible(pgid)
                {
                    exec::kill_group(pgid);
                }
                if let Some(dir) = &record.work_dir {
                    // Its SSH connection holds the host lock: closed too.
                    exec::kill_ssh_masters(dir);
                    let _ = std::fs::remove_dir_all(dir);
                }
                record.status.state = RunState::Failed;
                record.status.lost = true;
                record.status.finished = Some(now());
                record.status.current_task = None;
                record.status.message = Some(format!(
                    "lost: the runner restarted while this run was {was}; it was stopped and its outcome is unknown, run it again"
                ));
                record.work_dir = None;
                record.pgid = None;
                store
                    .save(&record)
                    .map_err(io_err("cannot update a lost run's record"))?;
                let log = RunLog {
                    id: record.status.id.clone(),
                    file: open_log(&store.log_path(&record.status.id))
                        .ok()
                        .map(|f| Arc::new(Mutex::new(f))),
                    debug: debug_log.clone(),
                };
                log.line(record.status.message.as_deref().unwrap_or("lost"));
            }
            if let Some(key) = &record.idempotency_key {
                // The newest run of a key answers it.
                let newer = inner
                    .keys
                    .get(key)
                    .and_then(|id| inner.runs.get(id))
                    .is_none_or(|e| e.record.status.created <= record.status.created);
                if newer {
                    inner.keys.insert(key.clone(), record.status.id.clone());
                }
            }
            inner.runs.insert(
                record.status.id.clone(),
                Entry {
                    record,
                    request: None,
                    cancel: None,
                },
            );
        }
        Ok(Arc::new(Runner {
            cfg,
            store,
            inner: Mutex::new(inner),
            metrics: Metrics::default(),
            debug_log,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data (every
        // mutation is a few field writes); keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, record: &RunRecord) {
        if let Err(e) = self.store.save(record) {
            tracing::error!(id = %record.status.id, error = %e, "cannot save run record");
        }
    }

    fn run_log(&self, id: &str) -> RunLog {
        RunLog {
            id: id.to_string(),
            file: open_log(&self.store.log_path(id))
                .ok()
                .map(|f| Arc::new(Mutex::new(f))),
            debug: self.debug_log.clone(),
        }
    }

    /// Accepts a run, or returns the run with the same idempotency key,
    /// whatever its state: queued, running or finished (also before a
    /// restart of the runner), so an operator that restarts after a run
    /// ended but before it recorded the result reads that result instead of
    /// running again.
    pub fn submit(self: &Arc<Self>, request: RunRequest) -> Result<RunAccepted, RunnerError> {
        request.validate()?;
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut inner = self.lock();
            if let Some(key) = &request.idempotency_key
                && let Some(existing) = inner.keys.get(key)
            {
                return Ok(RunAccepted {
                    id: existing.clone(),
                    existing: true,
                });
            }
            let record = RunRecord {
                status: RunStatus {
                    id: id.clone(),
                    playbook: request.playbook,
                    host: request.target.host.clone(),
                    port: request.target.port,
                    state: RunState::Queued,
                    return_code: None,
                    created: now(),
                    started: None,
                    finished: None,
                    tasks_done: 0,
                    tasks_total: 0,
                    current_task: None,
                    failed_task: None,
                    message: None,
                    changed: 0,
                    recap: None,
                    lost: false,
                    containers: None,
                },
                user: request.target.user.clone(),
                idempotency_key: request.idempotency_key.clone(),
                work_dir: None,
                pgid: None,
            };
            self.persist(&record);
            let roles: Vec<&str> = request.vars.roles.iter().map(|r| r.name.as_str()).collect();
            self.run_log(&id).line(&format!(
                "accepted: {} on {}@{}:{} (roles: {})",
                request.playbook.as_str(),
                request.target.user,
                request.target.host,
                request.target.port,
                roles.join(", ")
            ));
            if let Some(key) = &request.idempotency_key {
                inner.keys.insert(key.clone(), id.clone());
            }
            inner.runs.insert(
                id.clone(),
                Entry {
                    record,
                    request: Some(Arc::new(request.clone())),
                    cancel: None,
                },
            );
            inner.queue.push_back(id.clone());
            self.metrics
                .runs_accepted
                .get_or_create(&PlaybookLabels {
                    playbook: request.playbook.as_str().to_string(),
                })
                .inc();
        }
        self.dispatch();
        Ok(RunAccepted {
            id,
            existing: false,
        })
    }

    /// Starts every queued run whose target is idle, while slots are free.
    fn dispatch(self: &Arc<Self>) {
        let mut inner = self.lock();
        let mut i = 0;
        while i < inner.queue.len() && inner.running < self.cfg.max_concurrent.max(1) {
            let id = inner.queue[i].clone();
            let target = match inner.runs.get(&id) {
                Some(e) => (e.record.status.host.clone(), e.record.status.port),
                None => {
                    inner.queue.remove(i);
                    continue;
                }
            };
            if inner.busy.contains(&target) {
                i += 1;
                continue;
            }
            inner.queue.remove(i);
            let (tx, rx) = watch::channel(false);
            let Some(entry) = inner.runs.get_mut(&id) else {
                continue;
            };
            let Some(request) = entry.request.clone() else {
                continue;
            };
            entry.cancel = Some(tx);
            entry.record.status.state = RunState::Running;
            entry.record.status.started = Some(now());
            let record = entry.record.clone();
            inner.busy.insert(target);
            inner.running += 1;
            self.persist(&record);
            let runner = self.clone();
            tokio::spawn(async move { runner.execute(id, request, rx).await });
        }
        self.metrics.running.set(inner.running as i64);
        self.metrics.queued.set(inner.queue.len() as i64);
    }

    async fn execute(
        self: Arc<Self>,
        id: String,
        request: Arc<RunRequest>,
        cancel: watch::Receiver<bool>,
    ) {
        let started = Instant::now();
        let log = self.run_log(&id);
        log.line(&format!("started: {}", request.playbook.as_str()));
        let timeout = request
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.default_timeout);
        let spec = ExecSpec {
            ansible_playbook: &self.cfg.ansible_playbook,
            playbooks_dir: &self.cfg.playbooks_dir,
            playbook: request.playbook.file_name(),
            target: &request.target,
            check: request.playbook.check_mode(),
            timeout,
            log: log.clone(),
            collect: None,
        };
        let vars = request.vars.clone();
        let run_id = id.clone();
        let lock_wait = timeout.as_secs();
        let hook = |hook: Hook<'_>| {
            let mut inner = self.lock();
            let Some(entry) = inner.runs.get_mut(&id) else {
                return;
            };
            match hook {
                Hook::Started { work_dir, pgid } => {
                    entry.record.work_dir = Some(work_dir.to_path_buf());
                    entry.record.pgid = Some(pgid);
                }
                Hook::Progress(p) => apply_progress(&mut entry.record.status, p),
            }
            let record = entry.record.clone();
            drop(inner);
            self.persist(&record);
        };
        let outcome = exec::run(
            spec,
            move |_| {
                json!({
                    "sm": serde_json::to_value(&vars).unwrap_or(serde_json::Value::Null),
                    // The host lock's holder and how long to wait for it
                    // (playbooks/tasks/host_lock.yml).
                    "sm_run_id": run_id,
                    "sm_lock_wait": lock_wait,
                })
            },
            cancel,
            &hook,
        )
        .await;
        let (state, code, failed_task, mut message) = conclude(
            &outcome,
            request.playbook,
            &request.target.host,
            request.target.port,
            timeout,
        );
        if let Some(diagnosed) =
            diagnose_broken_pipe(&message, &request.target.host, request.target.port).await
        {
            message = diagnosed;
        }
        log.line(&format!("finished: {} ({message})", state.as_str()));
        {
            let mut inner = self.lock();
            let target = (request.target.host.clone(), request.target.port);
            inner.busy.remove(&target);
            inner.running = inner.running.saturating_sub(1);
            if let Some(entry) = inner.runs.get_mut(&id) {
                let s = &mut entry.record.status;
                apply_progress(s, &outcome.progress);
                s.current_task = None;
                s.state = state;
                s.return_code = code;
                s.failed_task = failed_task;
                s.message = Some(message);
                s.finished = Some(now());
                entry.record.work_dir = None;
                entry.record.pgid = None;
                entry.request = None;
                entry.cancel = None;
                let record = entry.record.clone();
                self.persist(&record);
            }
        }
        self.metrics
            .runs_finished
            .get_or_create(&RunLabels {
                playbook: request.playbook.as_str().to_string(),
                state: state.as_str().to_string(),
            })
            .inc();
        self.metrics
            .run_duration
            .get_or_create(&PlaybookLabels {
                playbook: request.playbook.as_str().to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        drop(request);
        self.dispatch();
    }

    /// The status of a run.
    pub fn status(&self, id: &str) -> Option<RunStatus> {
        self.lock().runs.get(id).map(|e| e.record.status.clone())
    }

    /// The log file of a known run.
    pub fn log_path(&self, id: &str) -> Option<PathBuf> {
        let known = self.lock().runs.contains_key(id);
        known.then(|| self.store.log_path(id))
    }

    /// Cancels a run: a queued one ends at once, a running one when its
    /// process group is killed. Cancelling a finished run changes nothing.
    pub fn cancel(self: &Arc<Self>, id: &str) -> Result<RunStatus, RunnerError> {
        let mut inner = self.lock();
        let Some(entry) = inner.runs.get_mut(id) else {
            return Err(RunnerError::NotFound(id.to_string()));
        };
        match entry.record.status.state {
            RunState::Queued => {
                let s = &mut entry.record.status;
                s.state = RunState::Cancelled;
                s.finished = Some(now());
                s.message = Some("cancelled by request before it started".to_string());
                entry.request = None;
                let record = entry.record.clone();
                inner.queue.retain(|q| q != id);
                self.persist(&record);
                self.run_log(id).line("cancelled before it started");
                self.metrics
                    .runs_finished
                    .get_or_create(&RunLabels {
                        playbook: record.status.playbook.as_str().to_string(),
                        state: "cancelled".to_string(),
                    })
                    .inc();
                self.metrics.queued.set(inner.queue.len() as i64);
                Ok(record.status)
            }
            RunState::Running => {
                if let Some(tx) = &entry.cancel {
                    let _ = tx.send(true);
                }
                self.run_log(id).line("cancel requested");
                Ok(entry.record.status.clone())
            }
            _ => Ok(entry.record.status.clone()),
        }
    }

    /// Runs `logs.yml` against a host; returns its outputs or the failure.
    async fn host_logs_playbook(
        &self,
        request: &HostLogsRequest,
    ) -> Result<(Progress, Option<Vec<u8>>), RunnerError> {
        request.validate()?;
        let id = format!("logs-{}", uuid::Uuid::new_v4());
        let log = RunLog {
            id: id.clone(),
            file: None,
            debug: self.debug_log.clone(),
        };
        log.line(&format!(
            "host logs: {} {} on {}@{}:{}",
            if request.file.is_some() {
                "read"
            } else {
                "list"
            },
            request.log_dir,
            request.target.user,
            request.target.host,
            request.target.port
        ));
        let timeout = Duration::from_secs(120);
        let spec = ExecSpec {
            ansible_playbook: &self.cfg.ansible_playbook,
            playbooks_dir: &self.cfg.playbooks_dir,
            playbook: "logs.yml",
            target: &request.target,
            check: false,
            timeout,
            log,
            collect: Some((FETCHED, MAX_HOST_LOG_BYTES)),
        };
        let (_tx, rx) = watch::channel(false);
        let outcome = exec::run(
            spec,
            |work| {
                json!({ "sm": {
                    "log_dir": request.log_dir,
                    "file": request.file,
                    "fetch_dest": work.join(FETCHED).display().to_string(),
                }})
            },
            rx,
            &|_| {},
        )
        .await;
        let (state, _, _, message) = conclude(
            &outcome,
            Playbook::Check,
            &request.target.host,
            request.target.port,
            timeout,
        );
        if state != RunState::Succeeded {
            return Err(RunnerError::HostLogs(message));
        }
        Ok((outcome.progress, outcome.collected))
    }

    /// Lists the regular files directly inside a host's log directory.
    pub async fn list_host_logs(
        &self,
        request: &HostLogsRequest,
    ) -> Result<LogFileList, RunnerError> {
        let mut request = request.clone();
        request.file = None;
        let (progress, _) = self.host_logs_playbook(&request).await?;
        let mut files = Vec::new();
        for item in progress
            .outputs
            .iter()
            .filter_map(|v| v.as_array())
            .flatten()
        {
            let path = item.get("path").and_then(|p| p.as_str()).unwrap_or("");
            let name = path.rsplit('/').next().unwrap_or("").to_string();
            if name.is_empty() {
                continue;
            }
            files.push(LogFileEntry {
                name,
                size: item.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                modified: item.get("mtime").and_then(|s| s.as_f64()).unwrap_or(0.0),
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(LogFileList { files })
    }

    /// Returns one file of a host's log directory (at most 64 MiB).
    pub async fn read_host_log(&self, request: &HostLogsRequest) -> Result<Vec<u8>, RunnerError> {
        if request.file.is_none() {
            return Err(RunnerError::Invalid(super::api::ValidationError {
                field: "file".into(),
                reason: "is required to read a log file".into(),
            }));
        }
        let (_, bytes) = self.host_logs_playbook(request).await?;
        bytes.ok_or_else(|| {
            RunnerError::HostLogs(format!(
                "the file could not be read back (missing, or larger than {MAX_HOST_LOG_BYTES} bytes)"
            ))
        })
    }
}

fn apply_progress(status: &mut RunStatus, p: &Progress) {
    status.tasks_done = p.tasks_done;
    status.tasks_total = p.tasks_total.max(p.tasks_done);
    status.current_task = p.current_task.clone();
    status.changed = p.changed;
    if let Some(recap) = &p.recap {
        status.recap = Some(recap.clone());
    }
    if let Some(containers) = &p.containers {
        status.containers = Some(containers.clone());
    }
    if let Some(f) = &p.failure {
        status.failed_task = f.task.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::events::Failure;

    fn outcome(ending: Ending, progress: Progress) -> Outcome {
        Outcome {
            ending,
            progress,
            stderr_tail: vec!["ERROR! the playbook could not be found".into()],
            collected: None,
        }
    }

    fn config(data: &std::path::Path) -> RunnerConfig {
        RunnerConfig::new(
            data.to_path_buf(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks").into(),
        )
    }

    fn record(id: &str, state: RunState, work_dir: Option<PathBuf>) -> RunRecord {
        RunRecord {
            status: RunStatus {
                id: id.into(),
                playbook: Playbook::Provision,
                host: "h".into(),
                port: 22,
                state,
                return_code: None,
                created: now(),
                started: None,
                finished: None,
                tasks_done: 1,
                tasks_total: 7,
                current_task: Some("Pull the role images".into()),
                failed_task: None,
                message: None,
                changed: 0,
                recap: None,
                lost: false,
                containers: None,
            },
            user: "root".into(),
            idempotency_key: Some("k".into()),
            work_dir,
            pgid: None,
        }
    }

    #[test]
    fn reopening_fails_lost_runs_and_removes_their_work_dirs() {
        let data = tempfile::tempdir().expect("tmp");
        let work = tempfile::tempdir().expect("work");
        std::fs::write(work.path().join("id"), "key").expect("key");
        let store = RunStore::open(data.path()).expect("store");
        let mut done = record("done", RunState::Succeeded, None);
        done.status.message = Some("2 task(s) changed".into());
        store.save(&done).expect("save");
        store
            .save(&record(
                "lost",
                RunState::Running,
                Some(work.path().to_path_buf()),
            ))
            .expect("save");
        store
            .save(&record("waiting", RunState::Queued, None))
            .expect("save");
        std::fs::write(data.path().join("runs/.torn.json.tmp"), "{").expect("torn");

        let runner = Runner::open(config(data.path())).expect("open");
        assert_eq!(runner.status("done"), Some(done.status));
        for id in ["lost", "waiting"] {
            let s = runner.status(id).expect("status");
            assert_eq!(s.state, RunState::Failed, "{s:?}");
            assert!(
                s.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("runner restarted"),
                "{s:?}"
            );
            assert!(s.finished.is_some() && s.current_task.is_none());
        }
        assert!(
            !work.path().exists(),
            "the lost run's work directory remains"
        );
        // The update is persisted: a second restart sees the same.
        drop(runner);
        let again = Runner::open(config(data.path())).expect("reopen");
        assert_eq!(
            again.status("lost").map(|s| s.state),
            Some(RunState::Failed)
        );
    }

    #[test]
    fn refuses_a_playbook_directory_without_the_playbooks() {
        let data = tempfile::tempdir().expect("tmp");
        let err = Runner::open(RunnerConfig::new(data.path().into(), data.path().into()))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("lacks provision.yml"), "{err}");
    }

    #[test]
    fn conclusions_name_the_cause() {
        let t = Duration::from_secs(5);
        let ok = conclude(
            &outcome(Ending::Exited(Some(0)), Progress::default()),
            Playbook::Provision,
            "h",
            22,
            t,
        );
        assert_eq!(ok.0, RunState::Succeeded);
        let drift = conclude(
            &outcome(
                Ending::Exited(Some(0)),
                Progress {
                    changed: 2,
                    ..Progress::default()
                },
            ),
            Playbook::Check,
            "h",
            22,
            t,
        );
        assert!(drift.3.starts_with("drift: 2"), "{}", drift.3);
        let failed = conclude(
            &outcome(
                Ending::Exited(Some(2)),
                Progress {
                    failure: Some(Failure {
                        task: Some("Pull".into()),
                        unreachable: false,
                        msg: "manifest unknown".into(),
                    }),
                    ..Progress::default()
                },
            ),
            Playbook::Provision,
            "h",
            22,
            t,
        );
        assert_eq!(failed.0, RunState::Failed);
        assert_eq!(failed.2.as_deref(), Some("Pull"));
        let crashed = conclude(
            &outcome(Ending::Exited(Some(1)), Progress::default()),
            Playbook::Provision,
            "h",
            22,
            t,
        );
        assert!(crashed.3.contains("could not be found"), "{}", crashed.3);
        let timed_out = conclude(
            &outcome(Ending::TimedOut, Progress::default()),
            Playbook::Provision,
            "h",
            22,
            t,
        );
        assert_eq!(timed_out.3, "timed out after 5s");
    }

    #[tokio::test]
    async fn a_broken_pipe_is_diagnosed_by_connecting() {
        let pipe = "host 127.0.0.1:PORT unreachable over SSH: [Errno 32] Broken pipe";
        // Nothing listens: the connection's own error names the cause.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let got = diagnose_broken_pipe(pipe, "127.0.0.1", port).await.unwrap();
        assert!(got.contains("unreachable over SSH"), "{got}");
        assert!(got.contains("Connection refused"), "{got}");
        // The port answers: the pipe broke for another reason, kept as is.
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = open.local_addr().unwrap().port();
        assert_eq!(diagnose_broken_pipe(pipe, "127.0.0.1", port).await, None);
        // Other failures are not touched.
        assert_eq!(
            diagnose_broken_pipe("task 'x' failed: Broken pipe", "127.0.0.1", port).await,
            None
        );
    }
}
