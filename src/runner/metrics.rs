//! The runner's Prometheus metrics (`GET /metrics`, OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `provision`, `deprovision`, `check`.
    pub playbook: String,
    /// Final state.
    pub state: String,
}

/// Labels by playbook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaybookLabels {
    /// `provision`, `deprovision`, `check`.
    pub playbook: String,
}

type HistogramFamily = Family<PlaybookLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// The metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Finished runs by playbook and final state.
    pub runs_finished: Family<RunLabels, Counter>,
    /// Runs accepted.
    pub runs_accepted: Family<PlaybookLabels, Counter>,
    /// Runs executing now.
    pub running: Gauge,
    /// Runs waiting for their target or a slot.
    pub queued: Gauge,
    /// Wall time of runs from start to end.
    pub run_duration: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("server_manager_runner");
        let runs_finished = Family::<RunLabels, Counter>::default();
        let runs_accepted = Family::<PlaybookLabels, Counter>::default();
        let running = Gauge::default();
        let queued = Gauge::default();
        let run_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "runs_finished",
            "Finished playbook runs by playbook and final state",
            runs_finished.clone(),
        );
        registry.register(
            "runs_accepted",
            "Accepted playbook runs by playbook",
            runs_accepted.clone(),
        );
        registry.register(
            "runs_running",
            "Playbook runs executing now",
            running.clone(),
        );
        registry.register(
            "runs_queued",
            "Playbook runs waiting for their target or a free slot",
            queued.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Wall time of playbook runs from start to end",
            run_duration.clone(),
        );
        Metrics {
            registry,
            runs_finished,
            runs_accepted,
            running,
            queued,
            run_duration,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
