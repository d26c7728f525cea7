//! # lianqin-bus — the record bus
//!
//! Connectors publish [`Envelope`]s to topics; pipeline workers consume them
//! in batches. The bus has Kafka's semantics — topics, partitions, offsets,
//! consumer groups — so the same hub runs on one machine with the
//! [`EmbeddedBus`] (a durable redb store under the data dir, no services) or
//! across machines on Apache Kafka ([`kafka::KafkaBus`], feature `kafka`).
//!
//! ## Delivery guarantees
//! * **Connector → bus**: [`Bus::publish`] returns only when every record is
//!   durable (embedded: the redb transaction is fsynced; Kafka: acknowledged
//!   with `acks=all` by an idempotent producer). The connector checkpoint
//!   passed with the records is saved only after that — on the embedded bus in
//!   the *same* transaction, so records and checkpoint commit atomically.
//!   A crash before `publish` returns re-fetches the page on restart; the
//!   duplicates carry the same key and content hash and are dropped by the
//!   pipeline, so connector → libraries is effectively exactly-once.
//! * **Bus → libraries**: offsets are stored inside the library commit (see
//!   `lianqin-pipeline`), so consumption is exactly-once; the group offsets
//!   kept by the bus are informational.

#![warn(missing_docs)]

mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::time::Duration;

pub use embedded::EmbeddedBus;
/// The record contract lives in `lianqin-model`; re-exported so pipeline code
/// names it through the bus.
pub use lianqin_model::{
    Checkpoint, Envelope, Member, Members, Op, REPLAY_PREFIX, RecordSink, SinkError, content_hash, partition_for,
};

/// Errors from the bus. Each names the topic (and partition/offset where known).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The embedded store failed (I/O, corruption, lock held by another process).
    #[error("embedded bus store at {path}: {detail}")]
    Store {
        /// The store file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A topic that was never created was used.
    #[error("topic `{0}` does not exist (create it with ensure_topic)")]
    UnknownTopic(String),
    /// A record on the bus could not be decoded.
    #[error("topic `{topic}` partition {partition} offset {offset}: undecodable record: {detail}")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// Why.
        detail: String,
    },
    /// Kafka reported an error.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Bad bus configuration.
    #[error("bus config: {0}")]
    Config(String),
}

/// One record read from the bus, with its position.
#[derive(Debug, Clone)]
pub struct BusRecord {
    /// Topic it was read from.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// The record.
    pub envelope: Envelope,
}

/// Looks up the stored position (next offset to read) for a partition when a
/// consumer is assigned it. The pipeline answers from the library tables.
pub type OffsetLookup = std::sync::Arc<dyn Fn(&str, u32) -> Option<u64> + Send + Sync>;

/// A topic-partitioned, offset-addressed, durable record bus.
///
/// Every bus is also a [`RecordSink`] (what connectors publish through); an
/// implementation gets that impl from [`impl_record_sink!`], which delegates
/// to [`Bus::publish`] and [`Bus::load_checkpoint`].
#[async_trait::async_trait]
pub trait Bus: RecordSink + Send + Sync + 'static {
    /// `embedded` or `kafka`.
    fn kind(&self) -> &'static str;

    /// Creates the topic with `partitions` partitions if it does not exist.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// Publishes records (partitioned by key). Returns when all are durable;
    /// then saves `checkpoint` (atomically with the records where the bus can).
    async fn publish(&self, topic: &str, records: &[Envelope], checkpoint: Option<Checkpoint>) -> Result<(), BusError>;

    /// Publishes raw bytes under a key (used for change feeds and other
    /// non-envelope topics). Returns when durable.
    async fn publish_raw(&self, topic: &str, items: &[(String, Vec<u8>)]) -> Result<(), BusError>;

    /// Loads the last checkpoint saved for a source.
    async fn load_checkpoint(&self, source: &str) -> Result<Option<serde_json::Value>, BusError>;

    /// Joins consumer group `group` on `topics`. Positions of newly assigned
    /// partitions come from `lookup` (falling back to the group offsets, then
    /// the beginning).
    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        lookup: OffsetLookup,
    ) -> Result<Box<dyn Consumer>, BusError>;

    /// Number of records in each partition of a topic (end offsets).
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError>;
}

/// A member of a consumer group.
#[async_trait::async_trait]
pub trait Consumer: Send {
    /// Up to `max` records, waiting at most `wait` for the first to arrive.
    /// Records of one partition come in offset order.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError>;

    /// The partitions currently assigned to this member.
    fn assignment(&self) -> Vec<(String, u32)>;

    /// Records consumed positions (next offset to read) as the group's
    /// offsets. Informational: the libraries hold the authoritative offsets.
    async fn commit(&mut self, positions: &[(String, u32, u64)]) -> Result<(), BusError>;
}

/// Implements [`RecordSink`] for a [`Bus`] implementation by delegating to
/// [`Bus::publish`] and [`Bus::load_checkpoint`] (the error is kept as
/// [`SinkError::inner`]): `lianqin_bus::impl_record_sink!(MyBus);`.
#[macro_export]
macro_rules! impl_record_sink {
    ($t:ty) => {
        #[$crate::__private::async_trait]
        impl $crate::RecordSink for $t {
            async fn publish_records(
                &self,
                topic: &str,
                records: &[$crate::Envelope],
                checkpoint: Option<$crate::Checkpoint>,
            ) -> Result<(), $crate::SinkError> {
                $crate::Bus::publish(self, topic, records, checkpoint).await.map_err($crate::SinkError::new)
            }

            async fn saved_checkpoint(
                &self,
                source: &str,
            ) -> Result<Option<$crate::__private::Value>, $crate::SinkError> {
                $crate::Bus::load_checkpoint(self, source).await.map_err($crate::SinkError::new)
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use serde_json::Value;
}

impl_record_sink!(EmbeddedBus);
#[cfg(feature = "kafka")]
impl_record_sink!(kafka::KafkaBus);

/// Name of the raw topic of a source: `<prefix>raw.<source>`.
pub fn raw_topic(prefix: &str, source: &str) -> String {
    format!("{prefix}raw.{source}")
}

/// Name of a library's change-feed topic: `<prefix>changes.<library>`.
pub fn change_topic(prefix: &str, library: &str) -> String {
    format!("{prefix}changes.{library}")
}

/// Default wait for consumers when idle.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_millis(200);
