//! Ansible's event stream, as printed by the `sm_events` stdout callback
//! (`playbooks/callback_plugins/sm_events.py`, one JSON object per line):
//! parsing, the progress it implies, the human-readable log line of each
//! event, and the one-line cause of a failure. Pure: no I/O.

use serde::Deserialize;

use super::api::{ContainerState, Recap};

/// One line of the callback's output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The playbook started.
    PlaybookStart,
    /// A play started; `tasks_total` counts its tasks.
    PlayStart {
        /// Play name.
        #[serde(default)]
        name: Option<String>,
        /// Tasks in the play (meta tasks excluded).
        #[serde(default)]
        tasks_total: u32,
    },
    /// A task started.
    TaskStart {
        /// Task name.
        task: Option<String>,
    },
    /// A task finished on the host.
    Result {
        /// Task name.
        task: Option<String>,
        /// `ok`, `failed`, `skipped` or `unreachable`.
        status: String,
        /// Whether it changed something.
        #[serde(default)]
        changed: bool,
        /// Module message (the cause, for a failure).
        #[serde(default)]
        msg: Option<String>,
        /// A failure whose error the playbook ignores.
        #[serde(default)]
        ignore_errors: bool,
        /// Data returned by a task tagged `sm_output`.
        #[serde(default)]
        data: Option<serde_json::Value>,
        /// The role containers' state (a task tagged `sm_containers`).
        #[serde(default)]
        containers: Option<Vec<ContainerState>>,
        /// Log tails and exit codes of containers not running steadily (a
        /// task tagged `sm_container_logs`).
        #[serde(default)]
        container_logs: Option<Vec<ContainerLog>>,
    },
    /// One item of a loop failed.
    ItemFailed {
        /// Task name.
        task: Option<String>,
        /// The item's message.
        #[serde(default)]
        msg: Option<String>,
    },
    /// The play recap, per host.
    Stats {
        /// Host (inventory name) → recap.
        recap: std::collections::BTreeMap<String, Recap>,
    },
    /// A warning from the callback.
    Warning {
        /// The warning.
        #[serde(default)]
        msg: Option<String>,
    },
}

/// The log tail and recorded exit codes of one container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContainerLog {
    /// Container name.
    pub name: String,
    /// Its last log lines.
    #[serde(default)]
    pub lines: Vec<String>,
    /// Exit codes Docker recorded, oldest first.
    #[serde(default)]
    pub exit_codes: Vec<i64>,
}

/// Parses one stdout line; `None` for anything that is not an event.
pub fn parse_line(line: &str) -> Option<Event> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    serde_json::from_str(line).ok()
}

/// The first failure seen in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The task that failed.
    pub task: Option<String>,
    /// Whether the host was unreachable (SSH failed) rather than a task failing.
    pub unreachable: bool,
    /// The module's or SSH's message.
    pub msg: String,
}

/// What the events of a run have said so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks finished.
    pub tasks_done: u32,
    /// Tasks in all plays.
    pub tasks_total: u32,
    /// The task running now.
    pub current_task: Option<String>,
    /// Tasks that changed something.
    pub changed: u32,
    /// The first failure.
    pub failure: Option<Failure>,
    /// The recap of the target host.
    pub recap: Option<Recap>,
    /// Data returned by tasks tagged `sm_output`, in order.
    pub outputs: Vec<serde_json::Value>,
    /// The role containers' state, when the run read it.
    pub containers: Option<Vec<ContainerState>>,
}

impl Progress {
    /// Updates the progress with one event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::PlaybookStart | Event::Warning { .. } | Event::ItemFailed { .. } => {}
            Event::PlayStart { tasks_total, .. } => self.tasks_total += tasks_total,
            Event::TaskStart { task } => self.current_task = task.clone(),
            Event::Result {
                task,
                status,
                changed,
                msg,
                ignore_errors,
                data,
                containers,
                container_logs,
            } => {
                self.tasks_done += 1;
                if let Some(data) = data {
                    self.outputs.push(data.clone());
                }
                if let Some(containers) = containers {
                    self.containers = Some(containers.clone());
                }
                if let (Some(logs), Some(containers)) = (container_logs, self.containers.as_mut()) {
                    for log in logs {
                        if let Some(c) = containers.iter_mut().find(|c| c.name == log.name) {
                            c.log_tail = log.lines.clone();
                            c.exit_codes = log.exit_codes.clone();
                        }
                    }
                }
                if *changed {
                    self.changed += 1;
                }
                let failed = (status == "failed" && !ignore_errors) || status == "unreachable";
                if failed && self.failure.is_none() {
                    self.failure = Some(Failure {
                        task: task.clone(),
                        unreachable: status == "unreachable",
                        msg: msg.clone().unwrap_or_default(),
                    });
                }
            }
            Event::Stats { recap } => {
                self.current_task = None;
                self.recap = recap.values().next().cloned();
                if let Some(recap) = &self.recap {
                    self.changed = recap.changed;
                }
            }
        }
    }
}

/// The human-readable log line of an event (`None`: nothing worth a line).
pub fn render(event: &Event) -> Option<String> {
    let name = |t: &Option<String>| t.clone().unwrap_or_else(|| "(unnamed)".to_string());
    match event {
        Event::PlaybookStart => None,
        Event::PlayStart { name: play, .. } => Some(format!("PLAY [{}]", name(play))),
        Event::TaskStart { task } => Some(format!("TASK [{}]", name(task))),
        Event::Result {
            task,
            status,
            changed,
            msg,
            ..
        } => {
            let word = match (status.as_str(), changed) {
                ("ok", true) => "changed",
                (s, _) => s,
            };
            Some(match msg {
                Some(m) if status != "ok" && status != "skipped" => {
                    format!("{word}: [{}] {}", name(task), one_line(m))
                }
                _ => format!("{word}: [{}]", name(task)),
            })
        }
        Event::ItemFailed { task, msg } => Some(format!(
            "item failed: [{}] {}",
            name(task),
            one_line(msg.as_deref().unwrap_or(""))
        )),
        Event::Stats { recap } => Some(
            recap
                .values()
                .map(|r| {
                    format!(
                        "RECAP ok={} changed={} unreachable={} failed={} skipped={} rescued={} ignored={}",
                        r.ok, r.changed, r.unreachable, r.failed, r.skipped, r.rescued, r.ignored
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Event::Warning { msg } => Some(format!("WARNING: {}", msg.as_deref().unwrap_or(""))),
    }
}

/// Collapses a multi-line message into one line.
pub fn one_line(msg: &str) -> String {
    msg.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The one-line cause of a failure, naming what went wrong in words an
/// operator recognises (host key, connection, task).
pub fn describe_failure(failure: &Failure, host: &str, port: u16) -> String {
    let msg = &failure.msg;
    if failure.unreachable {
        if msg.contains("Host key verification failed")
            || msg.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        {
            return format!(
                "host key verification failed for {host}:{port}: the host's key does not match the known_hosts given with the request"
            );
        }
        // SSH's own diagnosis is the last meaningful line ("ssh: connect to host
        // … Connection refused", "Permission denied (publickey)").
        let cause = msg
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .trim_start_matches("Data could not be sent to remote host")
            .to_string();
        let cause = cause.rsplit("over ssh: ").next().unwrap_or(&cause).trim();
        return format!("host {host}:{port} unreachable over SSH: {cause}");
    }
    let task = failure.task.as_deref().unwrap_or("(unnamed)");
    let msg = one_line(msg);
    if msg.is_empty() {
        return format!("task '{task}' failed (it hides its output: no_log)");
    }
    format!("task '{task}' failed: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> Progress {
        let mut p = Progress::default();
        for l in lines {
            if let Some(e) = parse_line(l) {
                p.apply(&e);
            }
        }
        p
    }

    #[test]
    fn counts_tasks_changes_and_recap() {
        let p = feed(&[
            r#"{"event": "playbook_start"}"#,
            r#"{"name": "P", "tasks_total": 3, "event": "play_start"}"#,
            r#"{"task": "A", "event": "task_start"}"#,
            r#"{"task": "A", "host": "target", "status": "ok", "changed": true, "msg": null, "event": "result"}"#,
            "[WARNING]: not json",
            r#"{"task": "B", "event": "task_start"}"#,
            r#"{"task": "B", "host": "target", "status": "skipped", "changed": false, "msg": null, "event": "result"}"#,
        ]);
        assert_eq!(p.tasks_total, 3);
        assert_eq!(p.tasks_done, 2);
        assert_eq!(p.changed, 1);
        assert_eq!(p.current_task.as_deref(), Some("B"));
        let p2 = {
            let mut p2 = p.clone();
            p2.apply(
                &parse_line(r#"{"recap": {"target": {"ok": 2, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 1, "rescued": 0, "ignored": 0}}, "event": "stats"}"#)
                    .expect("stats"),
            );
            p2
        };
        assert_eq!(p2.recap.as_ref().map(|r| r.ok), Some(2));
        assert_eq!(p2.current_task, None);
    }

    #[test]
    fn first_failure_is_kept_and_named() {
        let p = feed(&[
            r#"{"task": "Pull the role images", "host": "target", "status": "failed", "changed": false, "msg": "manifest unknown", "ignore_errors": false, "event": "result"}"#,
            r#"{"task": "Later", "host": "target", "status": "failed", "changed": false, "msg": "other", "event": "result"}"#,
        ]);
        let f = p.failure.expect("failure");
        assert_eq!(f.task.as_deref(), Some("Pull the role images"));
        assert_eq!(
            describe_failure(&f, "h", 22),
            "task 'Pull the role images' failed: manifest unknown"
        );
    }

    #[test]
    fn ignored_errors_are_not_failures() {
        let p = feed(&[
            r#"{"task": "A", "host": "target", "status": "failed", "msg": "x", "ignore_errors": true, "event": "result"}"#,
        ]);
        assert!(p.failure.is_none());
    }

    #[test]
    fn unreachable_messages_name_the_cause() {
        let hk = Failure {
            task: None,
            unreachable: true,
            msg: "Data could not be sent to remote host \"127.0.0.1\". Make sure this host can be reached over ssh: @@@\r\nHost key for [127.0.0.1]:2 has changed\r\nHost key verification failed.\r\n".into(),
        };
        assert!(describe_failure(&hk, "127.0.0.1", 2).starts_with("host key verification failed"));
        let refused = Failure {
            task: None,
            unreachable: true,
            msg: "Data could not be sent to remote host \"127.0.0.1\". Make sure this host can be reached over ssh: ssh: connect to host 127.0.0.1 port 9: Connection refused\r\n".into(),
        };
        assert_eq!(
            describe_failure(&refused, "127.0.0.1", 9),
            "host 127.0.0.1:9 unreachable over SSH: ssh: connect to host 127.0.0.1 port 9: Connection refused"
        );
    }
}
