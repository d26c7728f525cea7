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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use lianqin_bus::{Bus, BusRecord, EmbeddedBus, OffsetLookup, raw_topic};
use lianqin_connectors::{RunStats, Source, SourceContext};
use tokio::sync::{Mutex, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::PipelineError;
use crate::config::{BusKind, HubConfig};
use crate::library::{LibraryStore, raw_table};
use crate::mapping::Mapping;
use crate::normalize::Normalizer;
use crate::schema::{Catalog, LIBRARIES};

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
    /// (source, key or `#hash`) → content hash of the newest decided version.
    last_version: Mutex<HashMap<(String, String), String>>,
    last_ingest: Mutex<i64>,
    audit: crate::audit::Audit,
    change_feeds: bool,
    /// (source, key or `#hash`, content hash) of versions a library holds
    /// but the raw table does not (a crash between the two commits): the
    /// next copy of such a record is a repeat for the libraries but is
    /// still written to the raw table.
    missing_raw: Mutex<std::collections::HashSet<(String, String, String)>>,
    /// Delta version of each raw table after our own last commit.
    raw_versions: Mutex<HashMap<String, Option<i64>>>,
    /// Per-department outbound flows (`[[flows]]`).
    flows: Option<crate::flows::Flows>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("data_dir", &self.data_dir).field("bus", &self.bus.kind()).finish()
    }
}

/// Opens the bus selected by the config.
pub async fn open_bus(cfg: &HubConfig, data_dir: &Path) -> Result<Arc<dyn Bus>, PipelineError> {
    match cfg.bus.kind {
        BusKind::Embedded => Ok(Arc::new(EmbeddedBus::open(&data_dir.join("bus")).map_err(PipelineError::Bus)?)),
        #[cfg(feature = "kafka")]
        BusKind::Kafka => {
            let k = cfg.bus.kafka.clone().ok_or_else(|| PipelineError::Config("[bus.kafka] missing".into()))?;
            // Connector checkpoints are per node, so several processes can
            // share one data dir (the libraries) on Kafka.
            let node = cfg.node.clone().unwrap_or_else(|| "hub".to_string());
            let dir = data_dir.join("nodes").join(node);
            std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Config(format!("{}: {e}", dir.display())))?;
            let bus = lianqin_bus::kafka::KafkaBus::connect(k, &dir).map_err(PipelineError::Bus)?;
            Ok(Arc::new(bus))
        }
        #[cfg(not(feature = "kafka"))]
        BusKind::Kafka => Err(PipelineError::Config("this build has no Kafka support (feature `kafka`)".into())),
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
        let mut sources = BTreeMap::new();
        let mut by_topic = HashMap::new();
        for s in cfg.enabled_sources() {
            let mapping = Arc::new(Mapping::load(&s.mapping, &cfg.base_dir)?);
            let normalizer = Normalizer::new(Arc::clone(&catalog), mapping, &s.id)
                .await
                .map_err(|e| PipelineError::Config(format!("source `{}`: {e}", s.id)))?;
            let topic = raw_topic(&cfg.bus.topic_prefix, &s.id);
            bus.ensure_topic(&topic, cfg.bus.partitions).await.map_err(PipelineError::Bus)?;
            store.ensure_raw(&s.id).await?;
            by_topic.insert(topic.clone(), s.id.clone());
            sources.insert(s.id.clone(), SourceRuntime { id: s.id.clone(), topic, normalizer });
        }
        let node = cfg.node.clone().unwrap_or_else(|| "hub".to_string());
        // One audit stream per node (several nodes may share a data dir).
        let suite = match cfg.audit.suite {
            Some(s) => s.crypto(),
            None => crate::audit::suite_from_env()?,
        };
        let audit = crate::audit::Audit::open_with_suite(data_dir, &node, &node, Duration::from_secs(10), suite)?;
        // Start, config and policy changes; the replicated audit topic on Kafka.
        crate::audit::on_hub_start(&audit, &cfg, &bus).await?;
        let change_feeds = cfg.pipeline.change_feeds_on(bus.kind());
        if change_feeds {
            for lib in ["element", "matter", "matter_event"] {
                let t = lianqin_bus::change_topic(&cfg.bus.topic_prefix, lib);
                bus.ensure_topic(&t, cfg.bus.partitions).await.map_err(PipelineError::Bus)?;
            }
        }
        let hub = Hub {
            raw_versions: Mutex::new(HashMap::new()),
            missing_raw: Mutex::new(Default::default()),
            flows: crate::flows::Flows::open(&cfg.flows, data_dir, Arc::clone(&catalog), audit.clone()).await?,
            change_feeds,
            audit,
            cfg,
            data_dir: data_dir.to_path_buf(),
            bus,
            store,
            catalog,
            sources,
            by_topic,
            last_version: Mutex::new(HashMap::new()),
            last_ingest: Mutex::new(0),
        };
        hub.load_versions().await?;
        Ok(hub)
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

    /// Rebuilds the repeat-detection index from the raw tables.
    async fn load_versions(&self) -> Result<(), PipelineError> {
        self.load_versions_of(None).await
    }

    async fn load_versions_of(&self, only: Option<&str>) -> Result<(), PipelineError> {
        if self.sources.is_empty() {
            return Ok(());
        }
        let engine = crate::query::QueryEngine::new(&self.store, &self.catalog).await?;
        let mut map = self.last_version.lock().await;
        for id in self.sources.keys().filter(|k| only.is_none_or(|o| o == k.as_str())) {
            let t = raw_table(id);
            // The newest decided version per key, from the raw table and
            // from every library (a crash can leave a library commit
            // without its raw commit). Records without a usable key are
            // known by their content hash alone.
            let keyed = "CASE WHEN source_key <> '' THEN source_key ELSE '#' || content_hash END";
            let mut parts = vec![format!(
                "SELECT CASE WHEN error IS NULL AND source_key <> '' THEN source_key ELSE '#' || content_hash END AS k, \
                 content_hash AS h, ingested_at, bus_offset, 1 AS r FROM {t}"
            )];
            for lib in ["element_history", "matter_history", "matter_event_history", "quarantine"] {
                if engine.tables().iter().any(|n| n == lib) {
                    parts.push(format!(
                        "SELECT {keyed} AS k, content_hash AS h, ingested_at, bus_offset, 0 AS r FROM {lib} WHERE source_id = '{id}'"
                    ));
                }
            }
            let all = parts.join(" UNION ALL ");
            // One scan: every (key, version) with its newest position and
            // whether the raw table holds it; the newest version per key is
            // picked below.
            let sql = format!(
                "SELECT k, h, max(r) AS in_raw, max(ingested_at) AS t, \
                 last_value(bus_offset ORDER BY ingested_at, bus_offset) AS o FROM ({all}) GROUP BY k, h"
            );
            // Remember which version of the raw table this index reflects.
            let raw_version = self.store.version(&t).await;
            self.raw_versions.lock().await.insert(t.clone(), raw_version);
            let mut newest: HashMap<String, ((i64, i64), String)> = HashMap::new();
            let mut missing = self.missing_raw.lock().await;
            missing.retain(|(s, _, _)| s != id);
            for b in engine.sql(&sql).await? {
                let ints = |i: usize| {
                    arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Int64)
                        .ok()
                        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                };
                let (Some(k), Some(h), Some(in_raw), Some(ts), Some(off)) =
                    (strings(b.column(0)), strings(b.column(1)), ints(2), ints(3), ints(4))
                else {
                    return Err(PipelineError::Internal(format!("version index of {id}: unexpected column types")));
                };
                for i in 0..b.num_rows() {
                    if !k.is_valid(i) || !h.is_valid(i) {
                        continue;
                    }
                    let (key, hash) = (k.value(i), h.value(i));
                    if in_raw.value(i) == 0 {
                        missing.insert((id.clone(), key.to_string(), hash.to_string()));
                    }
                    let pos = (ts.value(i), off.value(i));
                    match newest.get_mut(key) {
                        Some(cur) if cur.0 >= pos => {}
                        Some(cur) => *cur = (pos, hash.to_string()),
                        None => {
                            newest.insert(key.to_string(), (pos, hash.to_string()));
                        }
                    }
                }
            }
            for (key, (_, hash)) in newest {
                map.insert((id.clone(), key), hash);
            }
            if !missing.is_empty() {
                info!(source = %id, versions = missing.len(), "library versions missing from the raw table (crash between commits); the next copies fill them in");
            }
        }
        Ok(())
    }

    /// Builds the runtime sources (connectors) from the config.
    pub fn build_sources(&self) -> Result<Vec<(Source, SourceContext, Duration)>, PipelineError> {
        let mut out = Vec::new();
        for s in self.cfg.enabled_sources() {
            let src = s.connector.build(&s.id, &s.department).map_err(|e| PipelineError::Config(e.to_string()))?;
            let ctx = SourceContext {
                bus: Arc::<dyn Bus>::clone(&self.bus),
                topic: raw_topic(&self.cfg.bus.topic_prefix, &s.id),
            };
            out.push((src, ctx, Duration::from_secs(s.interval_secs)));
        }
        Ok(out)
    }

    /// Runs one sync pass of every source. A failing source is reported and
    /// does not stop the others.
    pub async fn sync_sources_once(&self) -> BTreeMap<String, Result<RunStats, String>> {
        let mut out = BTreeMap::new();
        let built = match self.build_sources() {
            Ok(b) => b,
            Err(e) => {
                out.insert("*".into(), Err(e.to_string()));
                return out;
            }
        };
        for (src, ctx, _) in built {
            // Streaming sources (HJ 212, webhooks, MQTT) have no pass to run.
            let Source::Polling(mut src) = src else { continue };
            let id = src.id().to_string();
            let r = src.sync_once(&ctx).await.map_err(|e| e.to_string());
            if let Err(e) = &r {
                warn!(source = %id, "sync failed: {e}");
            }
            let dept = self.cfg.sources.iter().find(|s| s.id == id).map(|s| s.department.clone()).unwrap_or_default();
            if let Err(e) = self.audit.record(crate::audit::connector_run(&id, &dept, &r)) {
                warn!("audit: {e}");
            }
            out.insert(id, r);
        }
        self.audit.sync();
        out
    }

    async fn make_lookup(&self) -> Result<OffsetLookup, PipelineError> {
        let mut known: HashMap<(String, u32), u64> = HashMap::new();
        for s in self.sources.values() {
            let table = raw_table(&s.id);
            let parts = self.bus.end_offsets(&s.topic).await.map(|v| v.len() as u32).unwrap_or(self.cfg.bus.partitions);
            for p in 0..parts {
                if let Some(o) = self.store.position(&table, &s.topic, p).await? {
                    known.insert((s.topic.clone(), p), o);
                }
            }
        }
        Ok(Arc::new(move |t: &str, p: u32| known.get(&(t.to_string(), p)).copied()))
    }

    /// Consumes everything on the bus now and commits it to the libraries;
    /// returns when caught up (no record arrived within the batch wait).
    pub async fn process_available(&self) -> Result<ProcessStats, PipelineError> {
        let topics: Vec<String> = self.sources.values().map(|s| s.topic.clone()).collect();
        if topics.is_empty() {
            return Ok(ProcessStats::default());
        }
        let lookup = self.make_lookup().await?;
        // Where "caught up" is: the end of every partition now.
        let mut pending: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for t in &topics {
            for (p, end) in self.bus.end_offsets(t).await.map_err(PipelineError::Bus)?.into_iter().enumerate() {
                let have = lookup(t, p as u32).unwrap_or(0);
                if end > have {
                    pending.insert((t.clone(), p as u32), end);
                }
            }
        }
        let mut consumer =
            self.bus.consumer(&self.cfg.pipeline.group, &topics, lookup).await.map_err(PipelineError::Bus)?;
        let mut total = ProcessStats::default();
        let mut last_progress = Instant::now();
        // A Kafka consumer needs a moment to join its group; stop when every
        // partition reached its end, or after 60 s without progress.
        while !pending.is_empty() && last_progress.elapsed() < Duration::from_secs(60) {
            let batch = consumer
                .poll(self.cfg.pipeline.batch_max_records, Duration::from_millis(self.cfg.pipeline.batch_wait_ms))
                .await
                .map_err(PipelineError::Bus)?;
            if batch.is_empty() {
                continue;
            }
            last_progress = Instant::now();
            let (stats, positions) = self.commit_batch(batch).await?;
            total.add(&stats);
            for (t, p, next) in &positions {
                if pending.get(&(t.clone(), *p)).is_some_and(|end| next >= end) {
                    pending.remove(&(t.clone(), *p));
                }
            }
            if let Err(e) = consumer.commit(&positions).await {
                warn!("group offset commit (informational) failed: {e}");
            }
        }
        if !pending.is_empty() {
            warn!(
                partitions = pending.len(),
                "stopped before reaching the end of every partition (no progress for 60 s)"
            );
        }
        Ok(total)
    }

    /// Runs the worker until `shutdown` turns true. Bus failures (a broker
    /// that went away, a rebalance error) never end the worker: it logs
    /// them, waits a second and resumes from the positions committed in the
    /// libraries, so nothing is lost or doubled.
    pub async fn run_worker(&self, mut shutdown: watch::Receiver<bool>) -> Result<ProcessStats, PipelineError> {
        let topics: Vec<String> = self.sources.values().map(|s| s.topic.clone()).collect();
        let mut total = ProcessStats::default();
        let mut consumer: Option<Box<dyn lianqin_bus::Consumer>> = None;
        loop {
            if *shutdown.borrow() {
                return Ok(total);
            }
            if consumer.is_none() {
                let opened = async {
                    let lookup = self.make_lookup().await?;
                    self.bus.consumer(&self.cfg.pipeline.group, &topics, lookup).await.map_err(PipelineError::Bus)
                }
                .await;
                match opened {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        warn!("cannot open the bus consumer (will retry): {e}");
                        if pause(&mut shutdown).await {
                            return Ok(total);
                        }
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_mut() else { continue };
            let poll =
                c.poll(self.cfg.pipeline.batch_max_records, Duration::from_millis(self.cfg.pipeline.batch_wait_ms));
            let polled = tokio::select! {
                r = poll => r,
                _ = shutdown.changed() => return Ok(total),
            };
            let batch = match polled {
                Ok(b) => b,
                Err(e) => {
                    warn!("bus poll failed, reopening the consumer from the committed positions: {e}");
                    consumer = None;
                    if pause(&mut shutdown).await {
                        return Ok(total);
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            match self.commit_batch(batch).await {
                Ok((stats, positions)) => {
                    total.add(&stats);
                    if let Some(c) = consumer.as_mut()
                        && let Err(e) = c.commit(&positions).await
                    {
                        warn!("group offset commit (informational) failed: {e}");
                    }
                }
                Err(e) => {
                    // Nothing of the failed part is acknowledged; rebuild the
                    // consumer from the committed positions and retry.
                    error!("batch failed, retrying from the last commit: {e}");
                    consumer = None;
                    if pause(&mut shutdown).await {
                        return Ok(total);
                    }
                }
            }
        }
    }

    async fn next_ingest_time(&self) -> i64 {
        let mut last = self.last_ingest.lock().await;
        let now = chrono::Utc::now().timestamp_micros();
        *last = if now > *last { now } else { *last + 1 };
        *last
    }

    /// Commits one polled batch (possibly several sources). Returns stats and
    /// the positions (next offsets) it covered.
    async fn commit_batch(
        &self,
        batch: Vec<BusRecord>,
    ) -> Result<(ProcessStats, Vec<(String, u32, u64)>), PipelineError> {
        let mut by_source: BTreeMap<String, Vec<BusRecord>> = BTreeMap::new();
        let mut positions: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for r in batch {
            let next = r.offset + 1;
            let e = positions.entry((r.topic.clone(), r.partition)).or_insert(next);
            *e = (*e).max(next);
            match self.by_topic.get(&r.topic) {
                Some(id) => by_source.entry(id.clone()).or_default().push(r),
                None => warn!(topic = %r.topic, "record from a topic with no source; ignored"),
            }
        }
        let mut stats = ProcessStats::default();
        for (id, recs) in by_source {
            let s = self.commit_source(&id, recs).await?;
            stats.add(&s);
        }
        Ok((stats, positions.into_iter().map(|((t, p), o)| (t, p, o)).collect()))
    }

    async fn commit_source(&self, id: &str, recs: Vec<BusRecord>) -> Result<ProcessStats, PipelineError> {
        let src = self.sources.get(id).ok_or_else(|| PipelineError::Internal(format!("unknown source {id}")))?;
        let batch_id = format!(
            "{}@{}",
            recs.first().map(|r| r.offset).unwrap_or(0),
            recs.first().map(|r| r.partition).unwrap_or(0)
        );
        let span = info_span!("batch", source = %id, batch = %batch_id, records = recs.len());
        async move {
            let started = Instant::now();
            let raw_name = raw_table(id);
            // Kafka: the raw table's version when this batch began (the
            // repeat index reflects it), to tell our commit from others'.
            let mut raw_base: Option<Option<i64>> = None;
            if self.bus.kind() == "kafka" {
                // Other workers may have committed this partition since we
                // last looked: reload before comparing positions, and
                // rebuild the repeat index when someone else wrote.
                // Known narrow window: if a worker dies after a library
                // commit but before its raw commit, and a re-fetched copy of
                // one of those records arrives at a new offset before any
                // further raw commit, the taker can store that version a
                // second time (same content hash; the current views are
                // unaffected).
                self.store.refresh().await?;
                let now = self.store.version(&raw_name).await;
                let mine = self.raw_versions.lock().await.get(&raw_name).copied();
                if mine != Some(now) {
                    self.load_versions_of(Some(id)).await?;
                }
                raw_base = Some(now);
            }
            // Positions per (table, partition), to skip what a table holds.
            let mut parts: Vec<u32> = recs.iter().map(|r| r.partition).collect();
            parts.sort_unstable();
            parts.dedup();
            let mut table_pos: HashMap<(String, u32), u64> = HashMap::new();
            for t in LIBRARIES.iter().map(|s| s.to_string()).chain([raw_name.clone()]) {
                for p in &parts {
                    let pos = self.store.position(&t, &src.topic, *p).await?.unwrap_or(0);
                    table_pos.insert((t.clone(), *p), pos);
                }
            }
            let raw_pos = |p: u32| table_pos.get(&(raw_name.clone(), p)).copied().unwrap_or(0);
            // Records the raw table already holds were fully committed.
            let recs: Vec<BusRecord> = recs.into_iter().filter(|r| r.offset >= raw_pos(r.partition)).collect();
            let mut stats = ProcessStats { read: recs.len() as u64, batches: 1, ..Default::default() };
            if recs.is_empty() {
                return Ok(stats);
            }
            // Repeats: same key, hash and op as the newest version.
            let mut fresh: Vec<&BusRecord> = Vec::with_capacity(recs.len());
            // Repeats whose version the raw table lacks (see `missing_raw`).
            let mut raw_gap: Vec<(&BusRecord, (String, String, String))> = Vec::new();
            let mut in_batch: HashMap<(String, String), String> = HashMap::new();
            {
                let lv = self.last_version.lock().await;
                let missing = self.missing_raw.lock().await;
                for r in &recs {
                    let e = &r.envelope;
                    let v = e.hash.clone();
                    // Records without a usable key (bound for quarantine)
                    // are recognized by their content alone.
                    let k = if e.error.is_some() || e.key.is_empty() {
                        (id.to_string(), format!("#{}", e.hash))
                    } else {
                        (id.to_string(), e.key.clone())
                    };
                    let seen_in_batch = in_batch.get(&k) == Some(&v);
                    if lv.get(&k) == Some(&v) || seen_in_batch {
                        stats.repeats += 1;
                        if !missing.is_empty() && !seen_in_batch {
                            let gap = (k.0.clone(), k.1.clone(), v.clone());
                            if missing.contains(&gap) {
                                raw_gap.push((r, gap));
                                in_batch.insert(k, v);
                            }
                        }
                    } else {
                        in_batch.insert(k, v);
                        fresh.push(r);
                    }
                }
                drop(missing);
                drop(lv);
            }
            let ingested_at = self.next_ingest_time().await;
            let t_norm = Instant::now();
            let norm = src.normalizer.normalize(&fresh, ingested_at).await?;
            let norm_ms = t_norm.elapsed().as_millis() as u64;
            stats.accepted = norm.accepted as u64;
            stats.quarantined = norm.quarantined as u64;
            let mut covered: BTreeMap<u32, u64> = BTreeMap::new();
            for r in &recs {
                let e = covered.entry(r.partition).or_insert(0);
                *e = (*e).max(r.offset + 1);
            }
            let positions: Vec<(String, u32, u64)> = covered.iter().map(|(p, o)| (src.topic.clone(), *p, *o)).collect();
            // Libraries first (side by side: each table has its own commit
            // and its own offsets), each followed by its change feed; the
            // raw table last, once every library has committed.
            let t_commit = Instant::now();
            let mut writes = Vec::new();
            for lib in LIBRARIES {
                let Some(batch) = norm.libraries.get(lib) else { continue };
                let fresh_rows = skip_committed(batch, |p| table_pos.get(&(lib.to_string(), p)).copied().unwrap_or(0))?;
                let write = if fresh_rows.num_rows() > 0 {
                    let (store, positions, name) = (Arc::clone(&self.store), positions.clone(), lib.to_string());
                    let fut = async move { store.append(&name, vec![fresh_rows], &positions).await };
                    Some(tokio::spawn(fut.instrument(tracing::Span::current())))
                } else {
                    None
                };
                writes.push((lib, batch, write));
            }
            let mut first_err = None;
            let mut feeds_ms = 0u64;
            for (lib, batch, write) in writes {
                let done = match write {
                    Some(h) => {
                        h.await.map_err(|e| PipelineError::Internal(format!("commit to {lib}: {e}"))).and_then(|r| r)
                    }
                    None => Ok(()),
                };
                if let Err(e) = done {
                    first_err.get_or_insert(e);
                    continue;
                }
                if first_err.is_some() {
                    continue;
                }
                // Change events for every row of the batch (also rows a
                // table already held after a crash): at-least-once, in
                // order per key; consumers dedupe by content_hash.
                let t_feed = Instant::now();
                self.publish_changes(lib, batch).await?;
                if let Some(f) = &self.flows {
                    f.deliver(lib, batch).await?;
                }
                feeds_ms += t_feed.elapsed().as_millis() as u64;
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            let libraries_ms = t_commit.elapsed().as_millis() as u64;
            // The raw table keeps each distinct version once: the fresh
            // records, plus repeats that fill a crash gap (in bus order).
            let raw_recs: Vec<&BusRecord> = if raw_gap.is_empty() {
                fresh.clone()
            } else {
                let mut v: Vec<&BusRecord> = fresh.clone();
                v.extend(raw_gap.iter().map(|(r, _)| *r));
                v.sort_by_key(|r| (r.partition, r.offset));
                v
            };
            let raw = crate::normalize::raw_batch(&raw_recs, ingested_at)?;
            self.store.append(&raw_name, vec![raw], &positions).await?;
            if !raw_gap.is_empty() {
                let mut missing = self.missing_raw.lock().await;
                for (_, gap) in &raw_gap {
                    missing.remove(gap);
                }
            }
            let v = self.store.version(&raw_name).await;
            // Mark the repeat index current only if ours was the only raw
            // commit since the batch began. When another worker committed
            // in between (our append landed after theirs), the index lacks
            // their versions: leave the mark stale so the next batch
            // reloads it — otherwise a re-fetched copy of one of their
            // records, once we take over their partitions, would be stored
            // a second time.
            let only_ours = match raw_base {
                None => true,
                Some(base) => v.zip(base).is_some_and(|(v, b)| v == b + 1),
            };
            if only_ours {
                self.raw_versions.lock().await.insert(raw_name.clone(), v);
            }
            // Quarantine decisions are audited (after the commit that made them).
            if let Some(q) = norm.libraries.get("quarantine") {
                self.audit_quarantine(id, q);
            }
            // Only now is the batch durable: remember the new versions.
            {
                let mut lv = self.last_version.lock().await;
                for r in &fresh {
                    let e = &r.envelope;
                    let v = e.hash.clone();
                    // Accepted or quarantined, this version has been decided.
                    if e.error.is_some() || e.key.is_empty() {
                        lv.insert((id.to_string(), format!("#{}", e.hash)), v);
                    } else {
                        lv.insert((id.to_string(), e.key.clone()), v);
                    }
                }
            }
            info!(
                read = stats.read,
                repeats = stats.repeats,
                accepted = stats.accepted,
                quarantined = stats.quarantined,
                normalize_ms = norm_ms,
                libraries_ms,
                feeds_ms,
                ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            Ok(stats)
        }
        .instrument(span)
        .await
    }

    /// Publishes one change event per library row to `changes.<library>`,
    /// keyed by the library id (so per-key order holds on every partition).
    async fn publish_changes(&self, lib: &str, batch: &RecordBatch) -> Result<(), PipelineError> {
        if batch.num_rows() == 0 || !self.change_feeds || lib == "quarantine" {
            return Ok(());
        }
        let key_col = self.catalog.library(lib)?.key.clone();
        let mut buf = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(batch).map_err(|e| PipelineError::Internal(format!("change feed {lib}: {e}")))?;
            w.finish().map_err(|e| PipelineError::Internal(format!("change feed {lib}: {e}")))?;
        }
        let keys = batch.column_by_name(&key_col).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
        let deleted = batch.column_by_name("deleted").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
        let mut items = Vec::with_capacity(batch.num_rows());
        for (i, line) in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let key = keys.as_ref().map(|k| k.value(i).to_string()).unwrap_or_default();
            let op = if deleted.as_ref().is_some_and(|d| d.is_valid(i) && d.value(i)) { "delete" } else { "upsert" };
            // {"library":…,"id":…,"op":…,"row":<the row as Arrow wrote it>}
            let id_json = serde_json::to_string(&key).unwrap_or_default();
            let mut ev = Vec::with_capacity(line.len() + id_json.len() + 48);
            ev.extend_from_slice(b"{\"library\":\"");
            ev.extend_from_slice(lib.as_bytes());
            ev.extend_from_slice(b"\",\"id\":");
            ev.extend_from_slice(id_json.as_bytes());
            ev.extend_from_slice(b",\"op\":\"");
            ev.extend_from_slice(op.as_bytes());
            ev.extend_from_slice(b"\",\"row\":");
            ev.extend_from_slice(line);
            ev.push(b'}');
            items.push((key, ev));
        }
        let topic = lianqin_bus::change_topic(&self.cfg.bus.topic_prefix, lib);
        self.bus.publish_raw(&topic, &items).await.map_err(PipelineError::Bus)
    }

    fn audit_quarantine(&self, source: &str, q: &RecordBatch) {
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        let (Some(keys), Some(reasons), Some(depts)) = (
            q.column_by_name("source_key").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            q.column_by_name("reason").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            q.column_by_name("department").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        ) else {
            return;
        };
        for i in 0..q.num_rows() {
            let mut ev = AuditEvent::new(EventKind::Quarantine, "system:pipeline", depts.value(i), Outcome::Deny);
            ev.tables = vec!["quarantine".into()];
            ev.detail = serde_json::json!({"source": source, "key": keys.value(i), "reason": reasons.value(i)});
            if let Err(e) = self.audit.record(ev) {
                warn!("audit: {e}");
            }
        }
    }

    /// The hub's audit stream.
    pub fn audit(&self) -> &crate::audit::Audit {
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
        let mut tasks = Vec::new();
        let built = if sources { self.build_sources()? } else { Vec::new() };
        for (src, ctx, every) in built {
            let mut stop = shutdown.clone();
            let audit = self.audit.clone();
            let dept =
                self.cfg.sources.iter().find(|s| s.id == src.id()).map(|s| s.department.clone()).unwrap_or_default();
            tasks.push(tokio::spawn(async move {
                let id = src.id().to_string();
                let mut src = match src {
                    Source::Polling(src) => src,
                    Source::Streaming(mut src) => {
                        // Servers that systems push to (HJ 212, webhooks, MQTT).
                        let r =
                            src.run(&ctx, stop.clone()).await.map(|_| Default::default()).map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            warn!(source = %id, "streaming source stopped: {e}");
                            let _ = audit.record(crate::audit::connector_run(&id, &dept, &r));
                        }
                        return;
                    }
                };
                loop {
                    let r = src.sync_once(&ctx).await.map_err(|e| e.to_string());
                    match &r {
                        Ok(s) if s.records > 0 => {
                            info!(source = %id, records = s.records, retries = s.retries, "sync pass done")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(source = %id, "sync failed (will retry next tick): {e}"),
                    }
                    if r.as_ref().map(|s| s.records > 0).unwrap_or(true) {
                        if let Err(e) = audit.record(crate::audit::connector_run(&id, &dept, &r)) {
                            warn!("audit: {e}");
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            }));
        }
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

/// Waits a second, or less when `shutdown` turns true; returns whether it did.
async fn pause(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}

fn col_i64<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a Int64Array> {
    b.column_by_name(name)?.as_any().downcast_ref::<Int64Array>()
}

/// Drops rows whose bus position is below the table's committed position.
fn skip_committed(batch: &RecordBatch, pos: impl Fn(u32) -> u64) -> Result<RecordBatch, PipelineError> {
    let (Some(p), Some(o)) = (col_i64(batch, "bus_partition"), col_i64(batch, "bus_offset")) else {
        return Ok(batch.clone());
    };
    let keep: BooleanArray = (0..batch.num_rows()).map(|i| Some(o.value(i) as u64 >= pos(p.value(i) as u32))).collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &keep).map_err(|e| PipelineError::Internal(e.to_string()))
}

/// A text column as a `StringArray` (casting Utf8View / LargeUtf8).
fn strings(col: &arrow::array::ArrayRef) -> Option<StringArray> {
    let c = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).ok()?;
    c.as_any().downcast_ref::<StringArray>().cloned()
}
