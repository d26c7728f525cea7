//! # lianqin-model — the record contract
//!
//! What connectors hand to the pipeline, and nothing else: the [`Envelope`]
//! (one source record with its provenance and [`content_hash`]), the key
//! partitioning every bus uses ([`partition_for`]), the connector
//! [`Checkpoint`] saved with a publish, and the [`RecordSink`] trait through
//! which a connector publishes durably. Connectors (`lianqin-connectors`)
//! depend on this crate only; the buses (`lianqin-bus`: embedded redb,
//! Kafka) implement [`RecordSink`] and re-export these types, so the pipeline
//! keeps naming them `lianqin_bus::Envelope` and so on. [`wire`] is the
//! envelope's binary bus frame.

#![warn(missing_docs)]

mod canonical;
mod envelope;
pub mod wire;

pub use canonical::{Member, Members, Name};
pub use envelope::{Envelope, Op, REPLAY_PREFIX, content_hash, content_hash_bytes, partition_for, replay_run_of};

/// A connector's checkpoint saved together with a publish: the source id and
/// an opaque JSON value (cursor, last updated-at, file hashes, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Source id.
    pub source: String,
    /// The checkpoint value.
    pub value: serde_json::Value,
}

/// Why a [`RecordSink`] refused a publish or could not load a checkpoint.
/// Displays as the underlying (bus) error, which stays reachable through
/// [`std::error::Error::source`] and [`SinkError::inner`].
#[derive(Debug)]
pub struct SinkError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl SinkError {
    /// Wraps the implementation's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        SinkError(error.into())
    }

    /// The implementation's error (downcast it to, e.g., `lianqin_bus::BusError`).
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Where a connector's records go: what a connector needs from a bus, and no
/// more. Every `lianqin_bus::Bus` is a `RecordSink` (supertrait), so an
/// `Arc<dyn Bus>` coerces to an `Arc<dyn RecordSink>`.
#[async_trait::async_trait]
pub trait RecordSink: Send + Sync {
    /// Publishes `records` to `topic` (partitioned by key) and returns only
    /// when every one is durable; then saves `checkpoint` (atomically with the
    /// records where the implementation can). On error the checkpoint did not
    /// move.
    async fn publish_records(
        &self,
        topic: &str,
        records: &[Envelope],
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), SinkError>;

    /// The last checkpoint saved for `source`, if any.
    async fn saved_checkpoint(&self, source: &str) -> Result<Option<serde_json::Value>, SinkError>;
}
