//! Process trees, read from `/proc`: what the lab ends when it stops an
//! sshd "host" — the listener and every session it forked (sessions call
//! `setsid`, so a process-group kill would miss them) — or a playbook run.
//!
//! The hosts are this machine: a session runs the user's shell start-up
//! files and whatever they start (a `pyenv` shim rehashing under a lock
//! file, say). So trees are ended with SIGTERM first, which lets shells run
//! their EXIT traps and release such locks, and SIGKILL only after a grace
//! period.

use std::time::{Duration, Instant};

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat` (the
/// fields after the command name, which may itself hold spaces and
/// parentheses).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Every live descendant of `pid`: children, their children, and so on
/// (zombies, already dead, are left out).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(state, parent)| (p, state, parent)))
        .filter(|(_, state, _)| !matches!(state, 'Z' | 'X'))
        .map(|(p, _, parent)| (p, parent))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; a process
        // already gone is reported as an error, which is ignored.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Ends `pid` and its descendants: stops `pid` (so it forks no more), sends
/// SIGTERM to each descendant and waits up to `grace` for them to exit, then
/// SIGKILLs those left and `pid`. The caller reaps `pid` if it is its child.
pub fn end_tree(pid: u32, grace: Duration) {
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + grace;
    let mut told = std::collections::HashSet::new();
    loop {
        let left = descendants(pid);
        if left.is_empty() {
            break;
        }
        let late = Instant::now() >= deadline;
        for p in left {
            if late {
                signal(p, libc::SIGKILL);
            } else if told.insert(p) {
                signal(p, libc::SIGTERM);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, libc::SIGKILL);
}

/// Waits up to `timeout` for `pid` to exit by itself (it is not our child:
/// gone or a zombie counts), then ends its tree.
pub fn end_process(pid: u32, timeout: Duration, grace: Duration) {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_alive(pid) {
        end_tree(pid, grace);
    }
}

/// Whether `pid` runs (a zombie does not).
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Whether `pid` is alive and its command line contains `needle` (guards
/// against acting on a recycled pid).
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_first_lets_shells_run_their_exit_traps() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        let script = format!(
            "bash -c 'touch {l}; trap \"rm -f {l}\" EXIT; sleep 300 & wait' & sleep 300; :",
            l = lock.display()
        );
        let mut root = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .expect("sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !lock.exists() || descendants(root.id()).len() < 3 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        end_tree(root.id(), Duration::from_secs(10));
        root.wait().expect("reap");
        assert!(!lock.exists(), "the EXIT trap did not run");
    }

    #[test]
    fn finds_and_ends_a_whole_tree() {
        // sh -> sh -> sleep: two levels below the root.
        let mut root = std::process::Command::new("sh")
            .args(["-c", "sh -c 'sleep 300; :' & sleep 300; :"])
            .spawn()
            .expect("sh");
        let pid = root.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while descendants(pid).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                descendants(pid)
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let tree = descendants(pid);
        assert!(tree.iter().all(|p| is_alive(*p)));
        end_tree(pid, Duration::from_secs(5));
        root.wait().expect("reap");
        // Ended: gone, or a zombie waiting for init to reap it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tree.iter().any(|p| is_alive(*p)) {
            assert!(
                std::time::Instant::now() < deadline,
                "survivors of {tree:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
