//! What the Server controller does next, decided from status alone: a pure
//! function, so every branch is unit-tested without a client or a runner.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::{RunStatus, ServerStatus};

/// Exponential backoff with a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (≥ 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }
}

/// Whether a run state means the run is still going.
pub fn in_flight(run: &RunStatus) -> bool {
    matches!(run.state.as_str(), "queued" | "running")
}

/// The next step for a Server whose desired state hashes to `desired`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A run is going: ask the runner how it is doing.
    Poll {
        /// Run id.
        id: String,
    },
    /// Nothing to do.
    Idle,
    /// Start a check-mode run to detect drift.
    CheckDrift,
    /// Start a provisioning run.
    Provision,
    /// A failed attempt for this same desired state: wait until then.
    Backoff {
        /// When to try again.
        until: Timestamp,
    },
}

/// Inputs beyond status.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Hash of the desired state.
    pub desired: &'a str,
    /// Now.
    pub now: Timestamp,
    /// The user asked for an immediate retry (annotation).
    pub retry_now: bool,
    /// How often to check for drift (`None`: never).
    pub drift_interval: Option<Duration>,
}

/// Decides the next step.
pub fn decide(status: &ServerStatus, s: Situation<'_>) -> Next {
    if let Some(run) = status.run.as_ref().filter(|r| in_flight(r)) {
        return Next::Poll { id: run.id.clone() };
    }
    if status.applied_hash.as_deref() == Some(s.desired) {
        return match s.drift_interval {
            Some(interval) if drift_check_due(status, s.now, interval) => Next::CheckDrift,
            _ => Next::Idle,
        };
    }
    // A failure of this very desired state backs off; a changed spec, or the
    // retry annotation, tries at once.
    let failed_same = status.run.as_ref().is_some_and(|r| {
        r.state != "succeeded" && r.playbook == "provision" && r.hash.as_deref() == Some(s.desired)
    });
    let retry_at = status
        .next_retry_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .filter(|t| *t > s.now);
    if let Some(until) = retry_at.filter(|_| failed_same && !s.retry_now) {
        return Next::Backoff { until };
    }
    Next::Provision
}

/// When the next drift check is due, from the last run's end.
fn drift_check_due(status: &ServerStatus, now: Timestamp, interval: Duration) -> bool {
    let last = status
        .run
        .as_ref()
        .and_then(|r| r.completion_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    match last {
        Some(t) => match jiff::SignedDuration::try_from(interval) {
            Ok(d) => t.checked_add(d).is_ok_and(|due| due <= now),
            Err(_) => false,
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run(state: &str, playbook: &str, hash: &str, done: Option<&str>) -> RunStatus {
        RunStatus {
            id: "r1".into(),
            playbook: playbook.into(),
            hash: Some(hash.into()),
            state: state.into(),
            completion_time: done.map(str::to_string),
            ..Default::default()
        }
    }

    fn sit(desired: &str) -> Situation<'_> {
        Situation {
            desired,
            now: at("2026-01-01T00:10:00Z"),
            retry_now: false,
            drift_interval: Some(Duration::from_secs(600)),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(60),
        };
        let d: Vec<u64> = (1..=6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(d, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.delay(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn in_flight_runs_are_polled_first() {
        for state in ["queued", "running"] {
            let st = ServerStatus {
                run: Some(run(state, "provision", "h0", None)),
                applied_hash: Some("h1".into()),
                ..Default::default()
            };
            assert_eq!(decide(&st, sit("h1")), Next::Poll { id: "r1".into() });
        }
    }

    #[test]
    fn applied_hash_means_idle_until_drift_check_is_due() {
        let st = ServerStatus {
            applied_hash: Some("h1".into()),
            run: Some(run(
                "succeeded",
                "provision",
                "h1",
                Some("2026-01-01T00:05:00Z"),
            )),
            ..Default::default()
        };
        assert_eq!(decide(&st, sit("h1")), Next::Idle);
        let st2 = ServerStatus {
            run: Some(run(
                "succeeded",
                "provision",
                "h1",
                Some("2026-01-01T00:00:00Z"),
            )),
            ..st.clone()
        };
        assert_eq!(decide(&st2, sit("h1")), Next::CheckDrift);
        let never = Situation {
            drift_interval: None,
            ..sit("h1")
        };
        assert_eq!(decide(&st2, never), Next::Idle);
        // A changed desired state provisions.
        assert_eq!(decide(&st, sit("h2")), Next::Provision);
    }

    #[test]
    fn failures_back_off_unless_spec_changed_or_retry_requested() {
        let st = ServerStatus {
            run: Some(run(
                "failed",
                "provision",
                "h1",
                Some("2026-01-01T00:09:00Z"),
            )),
            failures: 2,
            next_retry_time: Some("2026-01-01T00:11:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            decide(&st, sit("h1")),
            Next::Backoff {
                until: at("2026-01-01T00:11:00Z")
            }
        );
        assert_eq!(decide(&st, sit("h2")), Next::Provision);
        assert_eq!(
            decide(
                &st,
                Situation {
                    retry_now: true,
                    ..sit("h1")
                }
            ),
            Next::Provision
        );
        let later = Situation {
            now: at("2026-01-01T00:12:00Z"),
            ..sit("h1")
        };
        assert_eq!(decide(&st, later), Next::Provision);
    }

    #[test]
    fn fresh_server_provisions() {
        assert_eq!(decide(&ServerStatus::default(), sit("h1")), Next::Provision);
    }
}
