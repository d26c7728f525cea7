//! The hub runtime: sources publish to the bus; a pipeline worker consumes
//! micro-batches, normalizes them and commits them to the libraries.
//!
//! ## Delivery guarantee (bus → libraries): exactly-once
//! A micro-batch of one source is committed library by library, then to the
//! source's raw table, each commit carrying the next bus offset of every
//! partition it covers (see [`crate::library`]). On start, consumption
//! resumes from the raw table's offsets; any library that committed further
//! skips the records it already holds. Records re-fetched by a connector
//! (same key, same content hash, same op) are kept in the raw table but do
//! not create library rows, so replays leave the libraries unchanged.
//! Post-commit steps (change feeds, flows) run after each library commit,
//! before the raw table commit: at-least-once.
//!
//! ## Rooms
//! * this module — [`Hub`]: opening a data dir, the bus, the libraries and
//!   the audit stream; running the roles (`lianqin run`);
//! * `consume` — the one consume loop
//!   ([`Hub::process_available`], [`Hub::run_worker`]);
//! * `commit` — committing one batch, step by step;
//! * [`repeat`] — the repeat index ([`repeat::RepeatIndex`]);
//! * [`post_commit`] — what runs after each library commit
//!   ([`post_commit::PostCommit`]: change feeds, flows, later sinks);
//! * `sources` — running the connectors ([`Hub::build_sources`],
//!   [`Hub::sync_sources_once`]).

mod commit;
mod consume;
pub mod post_commit;
pub mod repeat;
mod sources;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lianqin_bus::{Bus, EmbeddedBus, raw_topic};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use self::post_commit::{ChangeFeed, PostCommit};
use self::repeat::RepeatIndex;
use crate::PipelineError;
use crate::audit::Audit;
use crate::config::{BusKind, HubConfig};
use crate::library::LibraryStore;
use crate::mapping::Mapping;
use crate::mapping::personal::KeyScope;
use crate::normalize::Normalizer;
use crate::schema::Catalog;

/// Figures of one `process` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Records read from the bus.
    pub read: u64,
    /// Records skipped as repeats (same key, hash and op as the last version).
    pub repeats: u64,
    /// Records that produced library rows.
    pub accepted: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Micro-batches committed.
    pub batches: u64,
}

impl ProcessStats {
    fn add(&mut self, o: &ProcessStats) {
        self.read += o.read;
        self.repeats += o.repeats;
        self.accepted += o.accepted;
        self.quarantined += o.quarantined;
        self.batches += o.batches;
    }
}

struct SourceRuntime {
    id: String,
    /// Owning department (fills records that arrive without one: undecodable
    /// bus records).
    department: String,
    topic: String,
    normalizer: Normalizer,
}

/// A configured hub over one data dir.
pub struct Hub {
    cfg: HubConfig,
    data_dir: PathBuf,
    bus: Arc<dyn Bus>,
    store: Arc<LibraryStore>,
    catalog: Arc<Catalog>,
    sources: BTreeMap<String, SourceRuntime>,
    by_topic: HashMap<String, String>,
    /// Which versions are decided (repeats, raw gaps).
    repeats: Arc<RepeatIndex>,
    /// The index write of the last committed batch, running while the next
    /// batch is polled ([`Hub::settle_index`] waits for it).
    index_write: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    last_ingest: Mutex<i64>,
    audit: Audit,
    /// Run after each library commit (change feeds, flows, …), in order.
    post_commit: Vec<Arc<dyn PostCommit>>,
    /// Prometheus metrics (`crate::metrics`).
    metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("data_dir", &self.data_dir).field("bus", &self.bus.kind()).finish()
    }
}

/// Opens the bus selected by the config.
pub async fn open_bus(cfg: &HubConfig, data_dir: &Path) -> Result<Arc<dyn Bus>, PipelineError> {
    match cfg.bus.kind {
        BusKind::Embedded => {
            // Batches are sealed at rest with the data dir's `_bus` key.
            let keys = crate::sealed::Keys::new(data_dir).ring(true)?;
            Ok(Arc::new(EmbeddedBus::open_sealed(&data_dir.join("bus"), keys).map_err(PipelineError::Bus)?))
        }
        #[cfg(feature = "kafka")]
        BusKind::Kafka => {
            let k = cfg.bus.kafka.clone().ok_or_else(|| PipelineError::Config("[bus.kafka] missing".into()))?;
            // Connector checkpoints are per node, so several processes can
            // share one data dir (the libraries) on Kafka.
            let node = cfg.node.clone().unwrap_or_else(|| "hub".to_string());
            let dir = data_dir.join("nodes").join(node);
            std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Config(format!("{}: {e}", dir.display())))?;
            // Envelopes are sealed on the brokers with the data dir's `_bus` key.
            let keys = crate::sealed::Keys::new(data_dir).ring(true)?;
            let bus = lianqin_bus::kafka::KafkaBus::connect(k, &dir).map_err(PipelineError::Bus)?.with_sealing(keys);
            Ok(Arc::new(bus))
        }
        #[cfg(not(feature = "kafka"))]
        BusKind::Kafka => Err(PipelineError::Config("this build has no Kafka support (feature `kafka`)".into())),
    }
}

/// The bus for a process that only reads topics (receipts): on Kafka with a
/// checkpoint store of its own in a temporary folder, so it runs beside a
/// hub of the same node; the embedded bus is [`open_bus`] (one process at a
/// time). Keep the returned folder as long as the bus.
pub async fn open_bus_reader(
    cfg: &HubConfig,
    data_dir: &Path,
) -> Result<(Arc<dyn Bus>, Option<tempfile::TempDir>), PipelineError> {
    match cfg.bus.kind {
        #[cfg(feature = "kafka")]
        BusKind::Kafka => {
            let k = cfg.bus.kafka.clone().ok_or_else(|| PipelineError::Config("[bus.kafka] missing".into()))?;
            let tmp = tempfile::tempdir().map_err(|e| PipelineError::Config(format!("temporary folder: {e}")))?;
            let keys = crate::sealed::Keys::new(data_dir).ring(false)?;
            let bus =
                lianqin_bus::kafka::KafkaBus::connect(k, tmp.path()).map_err(PipelineError::Bus)?.with_sealing(keys);
            Ok((Arc::new(bus), Some(tmp)))
        }
        _ => Ok((open_bus(cfg, data_dir).await?, None)),
    }
}

impl Hub {
    /// Opens the data dir, the bus and the libraries; checks every mapping.
    pub async fn open(cfg: HubConfig, data_dir: &Path) -> Result<Hub, PipelineError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| PipelineError::Config(format!("data dir {}: {e}", data_dir.display())))?;
        let bus = open_bus(&cfg, data_dir).await?;
        Hub::open_with_bus(cfg, data_dir, bus).await
    }

    /// Like [`Hub::open`] with a given bus.
    pub async fn open_with_bus(cfg: HubConfig, data_dir: &Path, bus: Arc<dyn Bus>) -> Result<Hub, PipelineError> {
        let catalog = Catalog::builtin()?;
        let store = Arc::new(LibraryStore::open(data_dir, Arc::clone(&catalog)).await?);
        // Person tokens keyed by this data dir's secret (created 0600 on first use).
        let token_key = crate::mapping::personal::data_dir_key(data_dir)?;
        let key = KeyScope::DataDir(data_dir.to_path_buf());
        let mut sources = BTreeMap::new();
        let mut by_topic = HashMap::new();
        for s in cfg.enabled_sources() {
            let mapping = Arc::new(Mapping::load(&s.mapping, &cfg.base_dir)?);
            let normalizer = Normalizer::new_in(Arc::clone(&catalog), mapping, &s.id, key.clone())
                .await
                .map_err(|e| PipelineError::Config(format!("source `{}`: {e}", s.id)))?;
            let topic = raw_topic(&cfg.bus.topic_prefix, &s.id);
            bus.ensure_topic(&topic, cfg.bus.partitions).await.map_err(PipelineError::Bus)?;
            store.ensure_raw(&s.id).await?;
            by_topic.insert(topic.clone(), s.id.clone());
            sources.insert(
                s.id.clone(),
                SourceRuntime { id: s.id.clone(), department: s.department.clone(), topic, normalizer },
            );
        }
        let node = cfg.node.clone().unwrap_or_else(|| "hub".to_string());
        // The repeat index is per node, beside its bus state; its key ids
        // are seeded from the data dir's key.
        let repeats = RepeatIndex::open(&data_dir.join("nodes").join(&node).join(repeat::FILE), token_key.bytes())?;
        // One audit stream per node (several nodes may share a data dir).
        let suite = match cfg.audit.suite {
            Some(s) => s.crypto(),
            None => crate::audit::suite_from_env()?,
        };
        let audit = Audit::open_with_suite(data_dir, &node, &node, Duration::from_secs(10), suite)?;
        // Start, config and policy changes; the replicated audit topic on Kafka.
        record_start(&audit, &cfg, &bus).await?;
        // Post-commit steps, in order: change feeds, then flows.
        let mut post_commit: Vec<Arc<dyn PostCommit>> = Vec::new();
        if cfg.pipeline.change_feeds_on(bus.kind()) {
            for lib in ["element", "matter", "matter_event"] {
                let t = lianqin_bus::change_topic(&cfg.bus.topic_prefix, lib);
                bus.ensure_topic(&t, cfg.bus.partitions).await.map_err(PipelineError::Bus)?;
            }
            post_commit.push(Arc::new(
                ChangeFeed::new(Arc::clone(&bus), Arc::clone(&catalog), &cfg.bus.topic_prefix)
                    .with_sealing(store.keys().clone()),
            ));
        }
        if let Some(flows) =
            crate::flows::Flows::open(&cfg.flows, data_dir, Arc::clone(&catalog), audit.clone()).await?
        {
            let flows = flows.with_bus(Arc::clone(&bus), &cfg.bus.topic_prefix, cfg.bus.partitions).await?;
            post_commit.push(Arc::new(flows));
        }
        let hub = Hub {
            repeats: Arc::new(repeats),
            index_write: tokio::sync::Mutex::new(None),
            post_commit,
            audit,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            cfg,
            data_dir: data_dir.to_path_buf(),
            bus,
            store,
            catalog,
            sources,
            by_topic,
            last_ingest: Mutex::new(0),
        };
        hub.open_repeats().await?;
        Ok(hub)
    }

    /// Adds a step run after each library commit, after those already
    /// registered (change feeds, flows); see [`post_commit`].
    pub fn with_post_commit(mut self, step: Arc<dyn PostCommit>) -> Hub {
        self.post_commit.push(step);
        self
    }

    /// The bus.
    pub fn bus(&self) -> Arc<dyn Bus> {
        Arc::clone(&self.bus)
    }

    /// The library store.
    pub fn store(&self) -> Arc<LibraryStore> {
        Arc::clone(&self.store)
    }

    /// The schema catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog)
    }

    /// The config.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// The bus topic of a configured source (None: no such source).
    pub fn topic_of(&self, source: &str) -> Option<&str> {
        self.sources.get(source).map(|s| s.topic.as_str())
    }

    /// The hub's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The hub's audit stream.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Runs the hub until `shutdown`: every source on its schedule and the
    /// worker. Source failures are logged and retried on the next tick.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> Result<(), PipelineError> {
        self.run_roles(shutdown, true, true).await
    }

    /// Runs the sources and/or the worker (`lianqin run --role`): on Kafka,
    /// connectors can run in one process and workers in several.
    pub async fn run_roles(
        self: Arc<Self>,
        shutdown: watch::Receiver<bool>,
        sources: bool,
        worker: bool,
    ) -> Result<(), PipelineError> {
        let mut tasks = self.spawn_sources(&shutdown, sources)?;
        if worker && self.cfg.pipeline.compact_every_secs > 0 {
            // Scheduled compaction against delta-rs's small-file slowdown.
            let hub = Arc::clone(&self);
            let mut stop = shutdown.clone();
            let every = Duration::from_secs(self.cfg.pipeline.compact_every_secs);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                    match hub.store.compact().await {
                        Ok(r) => info!(tables = r.len(), "scheduled compaction done"),
                        Err(e) => warn!("scheduled compaction failed (will retry): {e}"),
                    }
                }
            }));
        }
        let worker = if worker {
            self.run_worker(shutdown).await.map(|_| ())
        } else {
            let mut s = shutdown;
            while !*s.borrow() {
                if s.changed().await.is_err() {
                    break;
                }
            }
            Ok(())
        };
        for t in tasks {
            let _ = t.await;
        }
        self.audit.sync();
        worker
    }

    /// Data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// What the hub records when it starts: a `hub_start` entry, a
/// `config_change` when the config differs from the last start of this
/// node, a `policy_change` when the policy files differ from the last
/// version recorded in the data dir; then, on the Kafka bus, it starts the
/// replicated audit topic ([`crate::audit::ship`]).
async fn record_start(audit: &Audit, cfg: &HubConfig, bus: &Arc<dyn Bus>) -> Result<(), PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let config = cfg.version();
    let policy = match crate::policy::load(audit.data_dir()).await {
        Ok(p) => Some(p.version()),
        Err(e) => {
            warn!("audit: cannot read the policy files to record their version: {e}");
            None
        }
    };
    let mut ev = AuditEvent::new(EventKind::Other, "system:hub", "eco_police_office", Outcome::Success);
    ev.rule_version = policy.clone();
    ev.detail = serde_json::json!({
        "event": "hub_start",
        "sources": cfg.enabled_sources().map(|s| s.id.clone()).collect::<Vec<_>>(),
        "bus": format!("{:?}", cfg.bus.kind),
        "config": config,
    });
    audit.record(ev)?;
    crate::audit::note_version(
        audit,
        &format!("config:{}", audit.node()),
        &config,
        serde_json::json!({ "sources": cfg.enabled_sources().map(|s| s.id.clone()).collect::<Vec<_>>() }),
    )?;
    if let Some(v) = policy {
        crate::audit::note_version(audit, "policy", &v, serde_json::Value::Null)?;
    }
    if bus.kind() == "kafka" {
        crate::audit::ship::start(
            audit,
            Arc::clone(bus),
            &cfg.bus.topic_prefix,
            cfg.bus.partitions,
            Duration::from_secs(1),
        )
        .await?;
    }
    Ok(())
}
