//! The host lock of the playbooks (`playbooks/tasks/host_lock.yml`) as the
//! tests see it on the target: its history file, turned into the intervals
//! during which each run held the host.

use std::path::PathBuf;

/// Where the playbooks keep the lock of the hosts with `container_prefix`
/// (the default `sm_lock_dir`, /run/lock).
pub fn history_path(container_prefix: &str) -> PathBuf {
    PathBuf::from(format!(
        "/run/lock/server-manager.{container_prefix}.history"
    ))
}

/// One time a run held the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The holder: a run id, or the token of a hand-started run.
    pub token: String,
    /// When it took the lock (seconds since the epoch).
    pub acquired: f64,
    /// When it released it; `None` while it holds it (or when its watcher
    /// was killed without writing the line: the next acquisition ends it).
    pub released: Option<f64>,
    /// Why it was released (`by-request`, `connection-closed`).
    pub why: Option<String>,
}

/// The intervals of a history file, in order; panics when two runs held the
/// lock at the same time (an acquisition while another holder had neither
/// released nor been followed by a later acquisition is impossible with a
/// working lock: the watcher writes both lines while it holds the lock).
pub fn intervals(container_prefix: &str) -> Vec<Held> {
    let path = history_path(container_prefix);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    parse(&text)
}

/// Parses history lines (see [`intervals`]).
pub fn parse(text: &str) -> Vec<Held> {
    let mut out: Vec<Held> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["acquired", ts, token] => {
                let at: f64 = ts.parse().expect("timestamp");
                if let Some(last) = out.last() {
                    assert!(
                        last.released.is_none_or(|r| r <= at),
                        "acquired before the last holder released: {line} after {last:?}"
                    );
                    assert!(last.acquired <= at, "history out of order at {line}");
                }
                out.push(Held {
                    token: token.to_string(),
                    acquired: at,
                    released: None,
                    why: None,
                });
            }
            ["released", ts, token, why] => {
                let last = out.last_mut().expect("a release after an acquisition");
                assert_eq!(&last.token, token, "released by another holder: {line}");
                assert!(last.released.is_none(), "released twice: {line}");
                last.released = Some(ts.parse().expect("timestamp"));
                last.why = Some(why.to_string());
            }
            _ => panic!("unexpected history line {line:?}"),
        }
    }
    // Closes the intervals whose release line is missing at the next one.
    for i in 1..out.len() {
        if out[i - 1].released.is_none() {
            out[i - 1].released = Some(out[i].acquired);
        }
    }
    out
}

/// Removes the lock files of `container_prefix` (best effort).
pub fn remove(container_prefix: &str) {
    for ext in ["lock", "holder", "history"] {
        let _ = std::fs::remove_file(format!("/run/lock/server-manager.{container_prefix}.{ext}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_closes_intervals() {
        let h = parse(
            "acquired 1.0 a\nreleased 2.0 a by-request\nacquired 2.5 b\nacquired 3.0 c\nreleased 4.0 c connection-closed\n",
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h[1].released, Some(3.0));
        assert_eq!(h[2].why.as_deref(), Some("connection-closed"));
    }
}
