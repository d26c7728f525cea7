//! Prometheus metrics of a running hub (`/metrics`, issue 15 item 2).
//!
//! [`Metrics`] holds the families the hub updates as it works — what each
//! source's connector published, what each committed batch read, accepted,
//! quarantined and repeated, how long batches took and how old their
//! records were when they landed — and [`serve`] answers `GET /metrics`
//! with them in the OpenMetrics text format (Prometheus reads it), adding
//! the bus backlog per topic, computed when scraped. `lianqin run` serves it
//! when the config has `[metrics] listen = "host:port"`.
//!
//! Counters count since the process started (Prometheus handles restarts);
//! the libraries hold the totals.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::PipelineError;

/// The figures of one committed batch of a source.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch {
    /// Records taken from the bus.
    pub read: u64,
    /// Records that landed.
    pub accepted: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Records that repeated a decided version.
    pub repeated: u64,
    /// Time to commit it.
    pub seconds: f64,
    /// Age of its oldest record (fetched → committed), when known.
    pub lag_seconds: Option<f64>,
}

/// Where the bus backlog per topic comes from (the hub), asked at scrape time.
#[async_trait::async_trait]
pub trait Backlog: Send + Sync {
    /// `(topic, records not yet committed)` per topic.
    async fn backlog(&self) -> Result<Vec<(String, u64)>, PipelineError>;
}

/// `source="…"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Source id.
    pub source: String,
}

/// `source="…", outcome="ok|error"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    /// Source id.
    pub source: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// `topic="…"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Bus topic.
    pub topic: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The hub's metric families (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    /// Open Postgres-wire connections (`[server]`).
    pub pgwire_sessions: Gauge,
    /// Postgres-wire connections accepted since start.
    pub pgwire_connections: Counter,
    /// Live web-console sessions (`[console]`).
    pub console_sessions: Gauge,
    registry: Registry,
    read: Family<SourceLabel, Counter>,
    accepted: Family<SourceLabel, Counter>,
    quarantined: Family<SourceLabel, Counter>,
    repeated: Family<SourceLabel, Counter>,
    batches: Family<SourceLabel, Counter>,
    batch_seconds: Family<SourceLabel, Histogram, fn() -> Histogram>,
    lag_seconds: Family<SourceLabel, Histogram, fn() -> Histogram>,
    runs: Family<RunLabel, Counter>,
    published: Family<SourceLabel, Counter>,
    retries: Family<SourceLabel, Counter>,
    last_success: Family<SourceLabel, Gauge>,
    backlog: Family<TopicLabel, Gauge>,
    repeat_rebuilds: Family<SourceLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty families, registered under `lianqin_*`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lianqin");
        let m = Metrics {
            read: Family::default(),
            accepted: Family::default(),
            quarantined: Family::default(),
            repeated: Family::default(),
            batches: Family::default(),
            batch_seconds: Family::new_with_constructor(seconds_histogram),
            lag_seconds: Family::new_with_constructor(seconds_histogram),
            runs: Family::default(),
            published: Family::default(),
            retries: Family::default(),
            last_success: Family::default(),
            backlog: Family::default(),
            repeat_rebuilds: Family::default(),
            pgwire_sessions: Gauge::default(),
            pgwire_connections: Counter::default(),
            console_sessions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("records_read", "Records taken from the bus into a batch", m.read.clone());
        registry.register("records_accepted", "Records that landed in the libraries", m.accepted.clone());
        registry.register("records_quarantined", "Records sent to quarantine", m.quarantined.clone());
        registry.register(
            "records_repeated",
            "Records that repeated a decided version (no change)",
            m.repeated.clone(),
        );
        registry.register("batches", "Batches committed", m.batches.clone());
        registry.register("batch_seconds", "Time to commit a batch of a source", m.batch_seconds.clone());
        registry.register(
            "batch_lag_seconds",
            "Age of a batch's oldest record (fetched → committed) when it landed",
            m.lag_seconds.clone(),
        );
        registry.register("source_runs", "Connector passes, by outcome", m.runs.clone());
        registry.register("source_records_published", "Records a connector published on the bus", m.published.clone());
        registry.register(
            "source_retries",
            "Requests a connector retried after a transient failure",
            m.retries.clone(),
        );
        registry.register(
            "source_last_success_timestamp_seconds",
            "When a connector pass last succeeded (Unix time)",
            m.last_success.clone(),
        );
        registry.register("bus_backlog", "Records on the bus not yet committed (at scrape time)", m.backlog.clone());
        registry.register(
            "repeat_index_rebuilds",
            "Times a source's repeat index was rebuilt from a scan of its tables (missing or stale)",
            m.repeat_rebuilds.clone(),
        );
        registry.register("pgwire_sessions", "Open Postgres-wire connections", m.pgwire_sessions.clone());
        registry.register("pgwire_connections", "Postgres-wire connections accepted", m.pgwire_connections.clone());
        registry.register("console_sessions", "Live web-console sessions", m.console_sessions.clone());
        Metrics { registry, ..m }
    }

    /// A committed batch of `source`.
    pub fn batch(&self, source: &str, b: Batch) {
        let l = SourceLabel { source: source.to_string() };
        self.read.get_or_create(&l).inc_by(b.read);
        self.accepted.get_or_create(&l).inc_by(b.accepted);
        self.quarantined.get_or_create(&l).inc_by(b.quarantined);
        self.repeated.get_or_create(&l).inc_by(b.repeated);
        self.batches.get_or_create(&l).inc();
        self.batch_seconds.get_or_create(&l).observe(b.seconds);
        if let Some(lag) = b.lag_seconds {
            self.lag_seconds.get_or_create(&l).observe(lag.max(0.0));
        }
    }

    /// The repeat index of `source` was rebuilt from a scan.
    pub fn repeat_index_rebuilt(&self, source: &str) {
        self.repeat_rebuilds.get_or_create(&SourceLabel { source: source.to_string() }).inc();
    }

    /// How often the repeat index of `source` was rebuilt since start.
    pub fn repeat_index_rebuilds(&self, source: &str) -> u64 {
        self.repeat_rebuilds.get_or_create(&SourceLabel { source: source.to_string() }).get()
    }

    /// A connector pass of `source` ended: `Ok((records, retries))` or an error.
    pub fn source_run(&self, source: &str, r: Result<(u64, u64), ()>) {
        let l = SourceLabel { source: source.to_string() };
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.runs.get_or_create(&RunLabel { source: source.to_string(), outcome: outcome.into() }).inc();
        if let Ok((records, retries)) = r {
            self.published.get_or_create(&l).inc_by(records);
            self.retries.get_or_create(&l).inc_by(retries);
            self.last_success.get_or_create(&l).set(chrono::Utc::now().timestamp());
        }
    }

    /// The bus backlog of `topic` (records not yet committed).
    pub fn set_backlog(&self, topic: &str, records: u64) {
        self.backlog.get_or_create(&TopicLabel { topic: topic.to_string() }).set(records as i64);
    }

    /// Every family in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` from `metrics` (and the backlog `hub` reports
/// when scraped) on `listener` until `shutdown`.
pub async fn serve(
    metrics: Arc<Metrics>,
    hub: Arc<dyn Backlog>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (hub, metrics) = (Arc::clone(&hub), Arc::clone(&metrics));
            async move {
                match hub.backlog().await {
                    Ok(b) => {
                        for (topic, n) in b {
                            metrics.set_backlog(&topic, n);
                        }
                    }
                    Err(e) => tracing::warn!("metrics: bus backlog: {e}"),
                }
                ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| PipelineError::Internal(format!("metrics server: {e}")))
}

/// Binds `[metrics] listen` (a clear error naming the address).
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, PipelineError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| PipelineError::Config(format!("[metrics] listen on {listen}: {e}")))
}
