//! Whether a Server's containers are available: every role container
//! running without a restart for the cluster's `minReadySeconds` (and
//! `healthy` when its image has a health check). Pure: the containers' state
//! comes from what a run read on the host ([`observe`]), and availability is
//! judged against the time of that reading, never against the clock, so the
//! status says the same thing until the next reading.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::{ContainerPhase, ContainerStatus};
use crate::runner::api::ContainerState;

/// Log lines quoted in a container's message.
const LOG_LINES: usize = 5;
/// Characters kept of each quoted log line.
const LOG_LINE_CHARS: usize = 200;
/// How soon to look again at a container whose health check has not passed
/// yet.
const HEALTH_RECHECK: Duration = Duration::from_secs(5);

/// A role container the Server should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The role.
    pub role: String,
    /// Container name on the host.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Image digest.
    pub digest: Option<String>,
    /// Hash of its role file.
    pub config_hash: String,
}

/// The availability of a Server's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Not read from the host yet.
    Unknown,
    /// Every container is running; they will have run long enough at
    /// `ready_at`, when they must be read again.
    Starting {
        /// When to read them again.
        ready_at: Timestamp,
    },
    /// Every container has run `minReadySeconds` without a restart.
    Available,
    /// A container is not running, restarted, or is unhealthy.
    NotReady {
        /// Its name.
        container: String,
        /// Its state, exit code and the last lines of its log.
        message: String,
    },
}

/// Merges what a run read on the host (`observed`, at `observed_at`) into
/// the containers' status. `previous` is the status before: a restart count
/// higher than it was means the container restarted since.
pub fn observe(
    expected: &[Expected],
    previous: &[ContainerStatus],
    observed: &[ContainerState],
    observed_at: Timestamp,
    min_ready: Duration,
) -> Vec<ContainerStatus> {
    expected
        .iter()
        .map(|e| {
            let before = previous.iter().find(|p| p.name == e.name);
            let mut c = ContainerStatus {
                role: e.role.clone(),
                name: e.name.clone(),
                image: e.image.clone(),
                digest: e.digest.clone(),
                config_hash: e.config_hash.clone(),
                ..Default::default()
            };
            let Some(seen) = observed.iter().find(|o| o.name == e.name) else {
                c.state = ContainerPhase::Missing;
                c.message = Some(format!("container {} is missing", e.name));
                return c;
            };
            c.image_id = Some(seen.image_id.clone()).filter(|s| !s.is_empty());
            c.state = ContainerPhase::from_docker(&seen.status);
            c.restart_count = seen.restart_count;
            c.started_at = seen.started_at.clone();
            c.health = seen.health.clone();
            c.exit_code = match c.state {
                ContainerPhase::Running => None,
                _ => seen.exit_code,
            };
            // A restart count reset to below the last one is a new
            // container (recreated by a run): nothing restarted.
            let restarted = before
                .is_some_and(|b| b.image_id == c.image_id && seen.restart_count > b.restart_count);
            let failure = match c.state {
                ContainerPhase::Running if restarted => Some(format!(
                    "restarted {} time(s) since it was last read",
                    seen.restart_count - before.map(|b| b.restart_count).unwrap_or(0)
                )),
                ContainerPhase::Running if seen.health.as_deref() == Some("unhealthy") => {
                    Some("is unhealthy".to_string())
                }
                ContainerPhase::Running => None,
                other => Some(format!("is {}", other.as_str())),
            };
            match failure {
                Some(what) => c.message = Some(describe(&e.name, &what, seen)),
                None => {
                    let long_enough = seen
                        .started_at
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .and_then(|t| t.checked_add(signed(min_ready)).ok())
                        .is_some_and(|ready_at| ready_at <= observed_at);
                    let health_ok = seen.health.as_deref().is_none_or(|h| h == "healthy");
                    c.ready = long_enough && health_ok;
                }
            }
            c
        })
        .collect()
}

/// Judges the containers' status (as [`observe`] left it, read at
/// `observed_at`).
pub fn availability(
    containers: &[ContainerStatus],
    observed_at: Option<Timestamp>,
    min_ready: Duration,
) -> Availability {
    let Some(observed_at) = observed_at else {
        return Availability::Unknown;
    };
    if containers.is_empty()
        || containers
            .iter()
            .any(|c| c.state == ContainerPhase::Unknown)
    {
        return Availability::Unknown;
    }
    if let Some(c) = containers.iter().find(|c| !c.ready && c.message.is_some()) {
        return Availability::NotReady {
            container: c.name.clone(),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    let ready_at = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| {
            let started = c
                .started_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(observed_at);
            let by_time = started
                .checked_add(signed(min_ready))
                .unwrap_or(observed_at);
            // Running long enough but not healthy yet: look again soon.
            if by_time <= observed_at {
                observed_at
                    .checked_add(signed(HEALTH_RECHECK))
                    .unwrap_or(observed_at)
            } else {
                by_time
            }
        })
        .max();
    match ready_at {
        Some(ready_at) => Availability::Starting { ready_at },
        None => Availability::Available,
    }
}

/// `ready / total` for the printer column.
pub fn ready_count(containers: &[ContainerStatus]) -> String {
    format!(
        "{}/{}",
        containers.iter().filter(|c| c.ready).count(),
        containers.len()
    )
}

fn describe(name: &str, what: &str, seen: &ContainerState) -> String {
    let mut msg = format!("container {name} {what}");
    let code = seen
        .exit_codes
        .last()
        .copied()
        .or(if seen.status == "running" {
            None
        } else {
            seen.exit_code
        });
    if let Some(code) = code {
        msg.push_str(&format!(", exit code {code}"));
    }
    if seen.restart_count > 0 {
        msg.push_str(&format!(", {} restart(s)", seen.restart_count));
    }
    if seen.oom_killed {
        msg.push_str(", killed for lack of memory");
    }
    if let Some(e) = seen.error.as_deref().filter(|e| !e.is_empty()) {
        msg.push_str(&format!(", error: {e}"));
    }
    let lines: Vec<String> = seen
        .log_tail
        .iter()
        .rev()
        .take(LOG_LINES)
        .rev()
        .map(|l| l.chars().take(LOG_LINE_CHARS).collect())
        .collect();
    if !lines.is_empty() {
        msg.push_str(&format!("; last log lines: {}", lines.join(" | ")));
    }
    msg
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn expected(role: &str) -> Expected {
        Expected {
            role: role.into(),
            name: format!("c-{role}"),
            image: "r/x:1".into(),
            digest: None,
            config_hash: "h".into(),
        }
    }

    fn running(role: &str, started: &str, restarts: u32) -> ContainerState {
        ContainerState {
            name: format!("c-{role}"),
            image_id: "sha256:i".into(),
            status: "running".into(),
            restart_count: restarts,
            started_at: Some(started.into()),
            exit_code: Some(0),
            ..Default::default()
        }
    }

    const MIN: Duration = Duration::from_secs(10);

    #[test]
    fn running_long_enough_is_available() {
        let now = at("2026-01-01T00:01:00Z");
        let seen = [
            running("controller", "2026-01-01T00:00:00Z", 0),
            running("analytics", "2026-01-01T00:00:50Z", 0),
        ];
        let c = observe(
            &[expected("controller"), expected("analytics")],
            &[],
            &seen,
            now,
            MIN,
        );
        assert_eq!(availability(&c, Some(now), MIN), Availability::Available);
        assert_eq!(ready_count(&c), "2/2");
    }

    #[test]
    fn just_started_waits_until_min_ready_seconds() {
        let now = at("2026-01-01T00:01:00Z");
        let seen = [
            running("controller", "2026-01-01T00:00:00Z", 0),
            running("analytics", "2026-01-01T00:00:57Z", 0),
        ];
        let c = observe(
            &[expected("controller"), expected("analytics")],
            &[],
            &seen,
            now,
            MIN,
        );
        assert_eq!(
            availability(&c, Some(now), MIN),
            Availability::Starting {
                ready_at: at("2026-01-01T00:01:07Z")
            }
        );
        assert_eq!(ready_count(&c), "1/2");
        assert_eq!(availability(&c, None, MIN), Availability::Unknown);
    }

    #[test]
    fn exited_restarted_missing_and_unhealthy_containers_are_not_ready() {
        let now = at("2026-01-01T00:01:00Z");
        let mut exited = running("agent", "2026-01-01T00:00:00Z", 0);
        exited.status = "exited".into();
        exited.exit_code = Some(137);
        exited.log_tail = (1..=8).map(|i| format!("line {i}")).collect();
        let c = observe(&[expected("agent")], &[], &[exited], now, MIN);
        let Availability::NotReady { container, message } = availability(&c, Some(now), MIN) else {
            panic!("{c:?}")
        };
        assert_eq!(container, "c-agent");
        assert_eq!(
            message,
            "container c-agent is exited, exit code 137; last log lines: line 4 | line 5 | line 6 | line 7 | line 8"
        );
        assert_eq!(c[0].exit_code, Some(137));

        // Restarted since the last reading (same image): running again,
        // but not ready; the exit code comes from Docker's events.
        let before = observe(
            &[expected("agent")],
            &[],
            &[running("agent", "2026-01-01T00:00:00Z", 0)],
            now,
            MIN,
        );
        let mut looping = running("agent", "2026-01-01T00:00:59Z", 3);
        looping.exit_codes = vec![3, 3, 3];
        looping.log_tail = vec!["bad parameter".into()];
        let c = observe(&[expected("agent")], &before, &[looping], now, MIN);
        let Availability::NotReady { message, .. } = availability(&c, Some(now), MIN) else {
            panic!("{c:?}")
        };
        assert!(message.contains("restarted 3 time(s)"), "{message}");
        assert!(message.contains("exit code 3"), "{message}");
        assert!(message.contains("bad parameter"), "{message}");

        // Missing.
        let c = observe(&[expected("agent")], &[], &[], now, MIN);
        assert!(matches!(
            availability(&c, Some(now), MIN),
            Availability::NotReady { .. }
        ));
        assert_eq!(c[0].state, ContainerPhase::Missing);

        // Unhealthy; a health check still starting waits.
        let mut sick = running("agent", "2026-01-01T00:00:00Z", 0);
        sick.health = Some("unhealthy".into());
        let c = observe(&[expected("agent")], &[], &[sick], now, MIN);
        assert!(matches!(
            availability(&c, Some(now), MIN),
            Availability::NotReady { .. }
        ));
        let mut starting = running("agent", "2026-01-01T00:00:00Z", 0);
        starting.health = Some("starting".into());
        let c = observe(&[expected("agent")], &[], &[starting], now, MIN);
        assert_eq!(
            availability(&c, Some(now), MIN),
            Availability::Starting {
                ready_at: at("2026-01-01T00:01:05Z")
            }
        );
    }

    #[test]
    fn a_recreated_container_did_not_restart() {
        let now = at("2026-01-01T00:01:00Z");
        let mut old = observe(
            &[expected("agent")],
            &[],
            &[running("agent", "2026-01-01T00:00:00Z", 5)],
            now,
            MIN,
        );
        old[0].image_id = Some("sha256:old".into());
        let c = observe(
            &[expected("agent")],
            &old,
            &[running("agent", "2026-01-01T00:00:40Z", 6)],
            now,
            MIN,
        );
        assert_eq!(availability(&c, Some(now), MIN), Availability::Available);
    }
}
