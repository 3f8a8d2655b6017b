//! Prometheus metrics of the operator, and its health/readiness/metrics HTTP
//! endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: which controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `server`, `image` or `cluster`.
    pub controller: String,
}

/// Labels of an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `server`, `image` or `cluster`.
    pub controller: String,
    /// The error's category (stable, low cardinality).
    pub category: String,
}

/// Labels of a playbook run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `provision`, `deprovision` or `check`.
    pub playbook: String,
    /// `started`, `succeeded`, `failed`, `cancelled`, `lost`.
    pub result: String,
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    /// Reconciles, by controller.
    pub reconciles: Family<ControllerLabel, Counter>,
    /// Reconcile errors, by controller and category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations in seconds, by controller.
    pub durations: Family<ControllerLabel, Histogram>,
    /// Playbook runs, by playbook and result.
    pub runs: Family<RunLabels, Counter>,
    /// Bytes uploaded to registries by Image pushes.
    pub bytes_pushed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("server_manager");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let runs = Family::<RunLabels, Counter>::default();
        let bytes_pushed = Counter::default();
        registry.register("reconciles", "Reconciles", reconciles.clone());
        registry.register("reconcile_errors", "Reconcile errors", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile durations",
            durations.clone(),
        );
        registry.register("playbook_runs", "Playbook runs", runs.clone());
        registry.register(
            "bytes_pushed",
            "Bytes pushed to registries",
            bytes_pushed.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            runs,
            bytes_pushed,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &str, elapsed: Duration) {
        let label = ControllerLabel {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.durations
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an error of `controller` in `category`.
    pub fn error(&self, controller: &str, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                category: category.to_string(),
            })
            .inc();
    }

    /// Counts a run event.
    pub fn run(&self, playbook: &str, result: &str) {
        self.runs
            .get_or_create(&RunLabels {
                playbook: playbook.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Shared state of the health endpoints.
#[derive(Clone, Default)]
pub struct Health {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once this replica leads and its caches are synced.
    pub ready: Arc<AtomicBool>,
}

/// `/healthz` (alive), `/readyz` (leading and synced), `/metrics`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}
