//! # lianqin-connectors — departmental sources into the bus
//!
//! A connector is declared in the hub's TOML config as one `[[sources]]`
//! block with a `[sources.connector]` table whose `type` picks the kind
//! ([`ConnectorConfig`]). At run time it becomes a [`Source`] of one of two
//! kinds: a [`PollingSource`] that the hub calls on the source's schedule
//! ([`PollingSource::sync_once`]), or a [`StreamingSource`] — a server that
//! devices and systems push to — that runs until shutdown
//! ([`StreamingSource::run`]). Either wraps each record in an [`Envelope`]
//! and publishes it to the source's raw topic together with its checkpoint
//! through a [`RecordSink`] ([`SourceContext::publish`]).
//!
//! Connectors depend on the record contract (`lianqin-model`) only, never on
//! the transport: every `lianqin_bus::Bus` is a [`RecordSink`].
//!
//! Kinds:
//! * [`http`] — JSON APIs with page / offset / cursor pagination, incremental
//!   by an updated-at field, header auth, retries with backoff and jitter;
//!   Zhejiang IRS gateway signing ([`irs`]).
//! * [`file`] — a watched directory of CSV (UTF-8, GBK, GB18030), XLSX and
//!   JSON-lines drops, each file processed once by content hash.
//! * [`sql`] — a PostgreSQL or MySQL/MariaDB table or query polled by a watermark column
//!   with the key as tie-breaker.
//!
//! ## Delivery guarantee
//! At-least-once from the source to the bus, exactly-once into the libraries:
//! a checkpoint only ever advances together with (embedded bus) or after
//! (Kafka) the durable publish of every record before it, and never past a
//! page or file chunk that failed. Records fetched again after a crash carry
//! the same key and content hash; the pipeline drops such repeats.

#![warn(missing_docs)]

pub mod file;
pub mod hj212;
pub mod http;
pub mod irs;
pub mod mqtt;
mod retry;
pub mod sql;
pub mod webhook;

use std::sync::Arc;

use lianqin_model::{Checkpoint, Envelope, RecordSink, SinkError};
use serde::Deserialize;

pub use retry::RetryConfig;

/// Errors from connectors. Each names the source and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The source system could not be reached or kept failing after retries.
    #[error("source `{source_id}`: {what}")]
    Unavailable {
        /// Source id.
        source_id: String,
        /// What failed (URL, status, attempts).
        what: String,
    },
    /// The source answered something we cannot use (bad page JSON, 401, ...).
    #[error("source `{source_id}`: bad response from {location}: {detail}")]
    BadResponse {
        /// Source id.
        source_id: String,
        /// Where (URL with page, file path).
        location: String,
        /// Why.
        detail: String,
    },
    /// File system trouble in a file connector.
    #[error("source `{source_id}`: {path}: {detail}")]
    Io {
        /// Source id.
        source_id: String,
        /// The path involved.
        path: String,
        /// Why.
        detail: String,
    },
    /// Invalid connector configuration (found at start-up).
    #[error("source `{source_id}`: config: {detail}")]
    Config {
        /// Source id.
        source_id: String,
        /// Which key and why.
        detail: String,
    },
    /// Publishing to the bus failed; the checkpoint did not move.
    #[error("source `{source_id}`: publish: {error}")]
    Bus {
        /// Source id.
        source_id: String,
        /// The bus error (its [`SinkError::inner`] is the bus's own error).
        #[source]
        error: SinkError,
    },
}

/// The connector part of a `[[sources]]` block, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
// A config is parsed once per source: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ConnectorConfig {
    /// A JSON HTTP API ([`http::HttpConfig`]).
    Http(http::HttpConfig),
    /// A directory of file drops ([`file::FileConfig`]).
    File(file::FileConfig),
    /// An HJ 212 TCP server for monitoring devices ([`hj212::Hj212Config`]).
    Hj212(hj212::Hj212Config),
    /// An HTTP receiver for pushed records ([`webhook::WebhookConfig`]).
    Webhook(webhook::WebhookConfig),
    /// An MQTT subscriber for sensor readings ([`mqtt::MqttConfig`]).
    Mqtt(mqtt::MqttConfig),
    /// A PostgreSQL or MySQL/MariaDB table or query polled by watermark ([`sql::SqlConfig`]).
    Sql(sql::SqlConfig),
}

impl ConnectorConfig {
    /// The kind name (`http`, `file`).
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorConfig::Http(_) => "http",
            ConnectorConfig::File(_) => "file",
            ConnectorConfig::Hj212(_) => "hj212",
            ConnectorConfig::Webhook(_) => "webhook",
            ConnectorConfig::Mqtt(_) => "mqtt",
            ConnectorConfig::Sql(_) => "sql",
        }
    }

    /// Checks the config without contacting anything.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        match self {
            ConnectorConfig::Http(c) => c.validate(source_id),
            ConnectorConfig::File(c) => c.validate(source_id),
            ConnectorConfig::Hj212(c) => c.validate(source_id),
            ConnectorConfig::Webhook(c) => c.validate(source_id),
            ConnectorConfig::Mqtt(c) => c.validate(source_id),
            ConnectorConfig::Sql(c) => c.validate(source_id),
        }
    }

    /// Builds the runtime source: polling (`http`, `file`, `sql`) or
    /// streaming (`hj212`, `webhook`, `mqtt`).
    pub fn build(&self, source_id: &str, department: &str) -> Result<Source, ConnectorError> {
        self.validate(source_id)?;
        Ok(match self {
            ConnectorConfig::Http(c) => {
                Source::Polling(Box::new(http::HttpSource::new(source_id, department, c.clone())?))
            }
            ConnectorConfig::File(c) => {
                Source::Polling(Box::new(file::FileSource::new(source_id, department, c.clone())))
            }
            ConnectorConfig::Sql(c) => {
                Source::Polling(Box::new(sql::SqlSource::new(source_id, department, c.clone())?))
            }
            ConnectorConfig::Hj212(c) => {
                Source::Streaming(Box::new(hj212::Hj212Source::new(source_id, department, c.clone())))
            }
            ConnectorConfig::Webhook(c) => {
                Source::Streaming(Box::new(webhook::WebhookSource::new(source_id, department, c.clone())?))
            }
            ConnectorConfig::Mqtt(c) => {
                Source::Streaming(Box::new(mqtt::MqttSource::new(source_id, department, c.clone())?))
            }
        })
    }
}

/// Where a source publishes: the bus and its raw topic.
#[derive(Clone)]
pub struct SourceContext {
    /// The bus, seen as a [`RecordSink`] (an `Arc<dyn lianqin_bus::Bus>`
    /// coerces to it).
    pub bus: Arc<dyn RecordSink>,
    /// The source's raw topic.
    pub topic: String,
}

impl SourceContext {
    /// Publishes records with the checkpoint that covers them.
    pub async fn publish(
        &self,
        source_id: &str,
        records: &[Envelope],
        checkpoint: serde_json::Value,
    ) -> Result<(), ConnectorError> {
        let cp = Checkpoint { source: source_id.to_string(), value: checkpoint };
        self.bus
            .publish_records(&self.topic, records, Some(cp))
            .await
            .map_err(|error| ConnectorError::Bus { source_id: source_id.to_string(), error })
    }

    /// Like [`SourceContext::publish`], for streaming sources whose senders
    /// wait meanwhile: retries with backoff (100 ms doubling to 5 s) while
    /// the bus refuses, and gives up, returning the error, only once
    /// `shutdown` is true. `note` tells in the warning what happens to the
    /// senders while it retries.
    pub async fn publish_until_accepted(
        &self,
        source_id: &str,
        records: &[Envelope],
        checkpoint: serde_json::Value,
        shutdown: &tokio::sync::watch::Receiver<bool>,
        note: &str,
    ) -> Result<(), ConnectorError> {
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            match self.publish(source_id, records, checkpoint.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if *shutdown.borrow() => return Err(e),
                Err(e) => {
                    tracing::warn!(source = %source_id, records = records.len(), retry_ms = wait.as_millis() as u64,
                        "publish failed, retrying ({note}): {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Loads the source's last checkpoint.
    pub async fn checkpoint(&self, source_id: &str) -> Result<Option<serde_json::Value>, ConnectorError> {
        self.bus
            .saved_checkpoint(source_id)
            .await
            .map_err(|error| ConnectorError::Bus { source_id: source_id.to_string(), error })
    }
}

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Records published (including unparsable ones routed to quarantine).
    pub records: u64,
    /// Of those, records the connector could not parse.
    pub unparsable: u64,
    /// Pages or files completed.
    pub units: u64,
    /// Requests retried after a transient failure.
    pub retries: u64,
    /// For reconciliation: how many records the source itself reported for
    /// this pass, when it reports one and the pass read to the end: HTTP,
    /// the `total` its first page named; SQL, `count(*)` of the rows after
    /// the checkpoint; JSON-lines files, their physical lines (counted in
    /// the scan pass). `None` otherwise.
    pub reported: Option<u64>,
    /// What `reported` is compared with: HTTP, the distinct record keys
    /// published (a page boundary may deliver a record twice); SQL, the rows
    /// published (keyset pages never repeat one); files, the
    /// lines the reader went through.
    pub distinct: u64,
}

impl RunStats {
    /// Adds another pass's figures.
    pub fn add(&mut self, o: &RunStats) {
        self.records += o.records;
        self.unparsable += o.unparsable;
        self.units += o.units;
        self.retries += o.retries;
        self.reported = match (self.reported, o.reported) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.distinct += o.distinct;
    }
}

/// A connector the hub polls: one pass fetches everything new since its
/// checkpoint and publishes it. The hub calls it on the source's schedule —
/// §7.3.2 "real time or on a schedule" — and audits each pass as a run.
#[async_trait::async_trait]
pub trait PollingSource: Send {
    /// Source id.
    fn id(&self) -> &str;
    /// Runs one pass.
    async fn sync_once(&mut self, ctx: &SourceContext) -> Result<RunStats, ConnectorError>;
}

/// A connector that is a server devices and systems push to (HJ 212,
/// webhooks, MQTT): it runs until shutdown and publishes as records arrive.
/// There is no pass to schedule, so the hub neither polls nor audits it as a
/// run; only its stopping with an error is audited.
#[async_trait::async_trait]
pub trait StreamingSource: Send {
    /// Source id.
    fn id(&self) -> &str;
    /// Serves until `shutdown` turns true (records still being received are
    /// published first).
    async fn run(
        &mut self,
        ctx: &SourceContext,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ConnectorError>;
}

/// A runtime connector, as [`ConnectorConfig::build`] makes it: one of the two
/// kinds.
pub enum Source {
    /// Called on the source's schedule.
    Polling(Box<dyn PollingSource>),
    /// Runs until shutdown.
    Streaming(Box<dyn StreamingSource>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_streaming() { "Streaming" } else { "Polling" };
        f.debug_tuple(kind).field(&self.id()).finish()
    }
}

impl Source {
    /// Source id.
    pub fn id(&self) -> &str {
        match self {
            Source::Polling(s) => s.id(),
            Source::Streaming(s) => s.id(),
        }
    }

    /// True for a [`StreamingSource`].
    pub fn is_streaming(&self) -> bool {
        matches!(self, Source::Streaming(_))
    }

    /// The polling source, or `None` for a streaming one.
    pub fn into_polling(self) -> Option<Box<dyn PollingSource>> {
        match self {
            Source::Polling(s) => Some(s),
            Source::Streaming(_) => None,
        }
    }

    /// The streaming source, or `None` for a polling one.
    pub fn into_streaming(self) -> Option<Box<dyn StreamingSource>> {
        match self {
            Source::Streaming(s) => Some(s),
            Source::Polling(_) => None,
        }
    }

    /// Runs the source until `shutdown` turns true, whatever its kind: a
    /// streaming source serves; a polling source syncs every `every` (a
    /// failed pass is logged and retried on the next tick).
    pub async fn run(
        &mut self,
        ctx: &SourceContext,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ConnectorError> {
        let src = match self {
            Source::Streaming(s) => return s.run(ctx, shutdown).await,
            Source::Polling(s) => s,
        };
        loop {
            if let Err(e) = src.sync_once(ctx).await {
                tracing::warn!(source = %src.id(), "sync failed (will retry next tick): {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }
}

/// Expands `${ENV_VAR}` references in a config string (for secrets such as
/// API keys, which must not be written into config files).
pub fn expand_env(value: &str, source_id: &str, key: &str) -> Result<String, ConnectorError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConnectorError::Config {
                source_id: source_id.into(),
                detail: format!("`{key}`: unterminated ${{...}}"),
            });
        };
        let name = &after[..end];
        let v = env_override(name).or_else(|| std::env::var(name).ok()).ok_or_else(|| ConnectorError::Config {
            source_id: source_id.into(),
            detail: format!("`{key}` refers to environment variable {name}, which is not set"),
        })?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

static ENV_OVERRIDES: std::sync::OnceLock<std::sync::RwLock<std::collections::HashMap<String, String>>> =
    std::sync::OnceLock::new();

/// Sets a value that `${NAME}` references resolve to in this process, ahead
/// of the real environment (used by embedded deployments such as the demo,
/// which must not mutate the process environment).
pub fn set_env_override(name: &str, value: &str) {
    let m = ENV_OVERRIDES.get_or_init(Default::default);
    if let Ok(mut w) = m.write() {
        w.insert(name.to_string(), value.to_string());
    }
}

fn env_override(name: &str) -> Option<String> {
    ENV_OVERRIDES.get()?.read().ok()?.get(name).cloned()
}
