//! Apache Kafka implementation of the bus ([`KafkaBus`], feature `kafka`).
//!
//! Built on rdkafka 0.39 (bundled librdkafka 2.12.1). What it does:
//!
//! * **Publishing** — one idempotent producer (`enable.idempotence=true`,
//!   `acks=all`) per bus. Records are keyed by [`Envelope::key`] and placed by
//!   Kafka's default partitioner (the same key always lands on the same
//!   partition, so per-key order is kept). [`crate::Bus::publish`] enqueues every
//!   record, then waits for *every* delivery report; only when all of them
//!   succeeded is the connector checkpoint saved. A broker outage is absorbed
//!   by librdkafka's internal retries for up to
//!   [`KafkaBusConfig::message_timeout_ms`]; after that `publish` returns an
//!   error and the checkpoint is left unchanged.
//! * **Sealing** — with [`KafkaBus::with_sealing`] (the hub does) every
//!   envelope [`crate::Bus::publish`] sends is a sealed blob
//!   ([`lianqin_seal`], the `_bus` data key, bound to its topic), so the
//!   brokers' logs hold no record in clear; consumers of the bus open them
//!   (messages written unsealed are read as they are). `publish_raw`
//!   (change feeds, departments' feed topics) is sent as given.
//! * **Checkpoints** — Kafka cannot store them atomically with the records,
//!   so they live in a small local redb database,
//!   `<checkpoint_dir>/kafka-checkpoints.redb` (table `checkpoints`: source
//!   id → checkpoint JSON), written with immediate durability (fsync) after
//!   the records are acknowledged. A crash between the ack and the save
//!   re-publishes the page; the duplicates carry the same key and content
//!   hash and are dropped by the pipeline. redb locks the file: one
//!   [`KafkaBus`] per checkpoint dir and process.
//! * **Consuming** — a [`BaseConsumer`] in the consumer group, driven on
//!   tokio's blocking pool (`enable.auto.commit=false`,
//!   `auto.offset.reset=earliest`, `isolation.level=read_committed`, eager
//!   `roundrobin` assignment). Positions of assigned partitions come from the
//!   pipeline's [`OffsetLookup`], applied in the rebalance callback (see
//!   `consumer` in the [`crate::Bus`] impl of [`KafkaBus`]).
//! * **Topics** — [`crate::Bus::ensure_topic`] creates topics through the admin API
//!   (`create_topics = true`) or only verifies that they exist
//!   (`create_topics = false`, for clusters where topics are provisioned by
//!   operators). Topic names are used as given: callers apply
//!   [`KafkaBusConfig::topic_prefix`] through [`crate::raw_topic`] /
//!   [`crate::change_topic`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use redb::{Database, Durability, TableDefinition};
use serde::Deserialize;

use crate::{BusError, BusRecord, Checkpoint, Consumer, Envelope, OffsetLookup};

const CHECKPOINTS: TableDefinition<&str, &str> = TableDefinition::new("checkpoints");

/// File name of the local checkpoint store inside the checkpoint dir.
pub const CHECKPOINT_FILE: &str = "kafka-checkpoints.redb";

/// Configuration of the Kafka bus (the `[bus.kafka]` section of the hub
/// config). Unknown keys are rejected; every key has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaBusConfig {
    /// Bootstrap servers, `host:port[,host:port...]` (`bootstrap.servers`).
    /// Required.
    pub brokers: String,
    /// Prefix of every topic name the hub uses (e.g. `lianqin.`). The bus
    /// itself uses topic names as given; callers build them with
    /// [`crate::raw_topic`] / [`crate::change_topic`] and this prefix, so
    /// several hubs can share one cluster.
    pub topic_prefix: String,
    /// Partition count for topics created when [`crate::Bus::ensure_topic`] is
    /// called with `partitions == 0`. Default 3.
    pub partitions: u32,
    /// Replication factor of topics the bus creates; `-1` (the default) uses
    /// the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// librdkafka properties applied to every client (producer, consumers,
    /// admin) — e.g. `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`. They override the
    /// bus defaults. (Values are never logged.)
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (applied after `client`).
    pub producer: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (applied after `client`),
    /// e.g. `session.timeout.ms`.
    pub consumer: BTreeMap<String, String>,
    /// Create missing topics through the admin API (`true`, default), or
    /// only check that they exist (`false`).
    pub create_topics: bool,
    /// How long the producer retries a record before failing the publish
    /// (`message.timeout.ms`). Default 30 000.
    pub message_timeout_ms: u64,
    /// Timeout of metadata, admin and watermark requests. Default 10 000.
    pub request_timeout_ms: u64,
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        KafkaBusConfig {
            brokers: String::new(),
            topic_prefix: String::new(),
            partitions: 3,
            replication_factor: -1,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            create_topics: true,
            message_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl KafkaBusConfig {
    /// A config with the given bootstrap servers and defaults otherwise.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaBusConfig { brokers: brokers.into(), ..Default::default() }
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    fn base_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "lianqin");
        c.set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    fn validate(&self) -> Result<(), BusError> {
        if self.brokers.trim().is_empty() {
            return Err(BusError::Config("kafka: `brokers` must be set".into()));
        }
        if self.partitions == 0 {
            return Err(BusError::Config("kafka: `partitions` must be >= 1".into()));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(BusError::Config(
                "kafka: `replication_factor` must be >= 1 (or -1 for the broker default)".into(),
            ));
        }
        if self.message_timeout_ms == 0 {
            return Err(BusError::Config("kafka: `message_timeout_ms` must be >= 1".into()));
        }
        Ok(())
    }
}

/// Routes librdkafka's log lines and global errors to `tracing`.
#[derive(Debug, Clone, Default)]
pub struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka client error: {error}: {reason}");
    }
}

/// The Kafka bus: an idempotent producer, an admin client and the local
/// checkpoint store. Cheap to clone (all parts are shared).
#[derive(Clone)]
pub struct KafkaBus {
    cfg: Arc<KafkaBusConfig>,
    producer: FutureProducer<TracingContext>,
    admin: Arc<AdminClient<TracingContext>>,
    checkpoints: Arc<Database>,
    checkpoint_path: PathBuf,
    /// Partition counts of topics known to exist.
    known: Arc<Mutex<HashMap<String, u32>>>,
    /// Seals published envelopes, opens consumed ones.
    seal: Option<Arc<lianqin_seal::Keyring>>,
}

/// The data key department of sealed bus messages.
const BUS_KEY: &str = "_bus";

fn message_context(topic: &str) -> String {
    format!("kafka/{topic}")
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client map may hold credentials: print its keys only.
        f.debug_struct("KafkaBus")
            .field("brokers", &self.cfg.brokers)
            .field("client_keys", &self.cfg.client.keys().collect::<Vec<_>>())
            .field("checkpoints", &self.checkpoint_path)
            .finish()
    }
}

fn kafka_err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> BusError {
    BusError::Kafka(format!("{context}: {e}"))
}

impl KafkaBus {
    /// Creates the producer and admin client and opens the checkpoint store
    /// `checkpoint_dir/kafka-checkpoints.redb`. Does not contact the brokers
    /// (librdkafka connects lazily); the first [`crate::Bus::ensure_topic`] does.
    pub fn connect(cfg: KafkaBusConfig, checkpoint_dir: &Path) -> Result<KafkaBus, BusError> {
        cfg.validate()?;

        let mut pc = cfg.base_client_config();
        pc.set("enable.idempotence", "true");
        pc.set("acks", "all");
        pc.set("message.timeout.ms", cfg.message_timeout_ms.to_string());
        pc.set("allow.auto.create.topics", "false");
        pc.set("linger.ms", "5");
        for (k, v) in &cfg.client {
            pc.set(k, v);
        }
        for (k, v) in &cfg.producer {
            pc.set(k, v);
        }
        let producer = FutureProducer::from_config_and_context(&pc, TracingContext)
            .map_err(|e| kafka_err(format!("creating producer for {}", cfg.brokers), e))?;

        let ac = cfg.base_client_config();
        let admin = AdminClient::from_config_and_context(&ac, TracingContext)
            .map_err(|e| kafka_err(format!("creating admin client for {}", cfg.brokers), e))?;

        std::fs::create_dir_all(checkpoint_dir)
            .map_err(|e| BusError::Store { path: checkpoint_dir.display().to_string(), detail: e.to_string() })?;
        let checkpoint_path = checkpoint_dir.join(CHECKPOINT_FILE);
        let cp_err = |e: &dyn std::fmt::Display| BusError::Store {
            path: checkpoint_path.display().to_string(),
            detail: e.to_string(),
        };
        let db = Database::create(&checkpoint_path).map_err(|e| cp_err(&e))?;
        let tx = db.begin_write().map_err(|e| cp_err(&e))?;
        tx.open_table(CHECKPOINTS).map_err(|e| cp_err(&e))?;
        tx.commit().map_err(|e| cp_err(&e))?;

        Ok(KafkaBus {
            cfg: Arc::new(cfg),
            producer,
            admin: Arc::new(admin),
            checkpoints: Arc::new(db),
            checkpoint_path,
            known: Arc::new(Mutex::new(HashMap::new())),
            seal: None,
        })
    }

    /// Seals every published envelope with `keys` and opens consumed ones
    /// (see the module docs).
    pub fn with_sealing(mut self, keys: Arc<lianqin_seal::Keyring>) -> KafkaBus {
        self.seal = Some(keys);
        self
    }

    /// The configuration the bus was connected with.
    pub fn config(&self) -> &KafkaBusConfig {
        &self.cfg
    }

    /// Path of the local checkpoint store.
    pub fn checkpoint_path(&self) -> &Path {
        &self.checkpoint_path
    }

    fn store_err(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Store { path: self.checkpoint_path.display().to_string(), detail: e.to_string() }
    }

    /// Asks the cluster for the partition count of `topic`; `None` when the
    /// topic does not exist.
    async fn fetch_partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let producer = self.producer.clone();
        let timeout = self.cfg.request_timeout();
        let t = topic.to_string();
        let found = blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&t), timeout)
                .map_err(|e| kafka_err(format!("topic `{t}`: metadata"), e))?;
            let Some(tm) = md.topics().iter().find(|x| x.name() == t) else { return Ok(None) };
            match tm.error() {
                None => Ok(Some(tm.partitions().len() as u32)),
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
                Some(code) => Err(kafka_err(format!("topic `{t}`: metadata"), RDKafkaErrorCode::from(code))),
            }
        })
        .await?;
        if let Some(n) = found.filter(|n| *n > 0) {
            self.known_insert(topic, n);
            return Ok(Some(n));
        }
        Ok(None)
    }

    fn known_get(&self, topic: &str) -> Option<u32> {
        self.known.lock().ok().and_then(|m| m.get(topic).copied())
    }

    fn known_insert(&self, topic: &str, n: u32) {
        if let Ok(mut m) = self.known.lock() {
            m.insert(topic.to_string(), n);
        }
    }

    /// Partition count of an existing topic (cached), or `UnknownTopic`.
    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(n) = self.known_get(topic) {
            return Ok(n);
        }
        self.fetch_partitions(topic).await?.ok_or_else(|| BusError::UnknownTopic(topic.to_string()))
    }

    /// Sends all items and waits for every delivery report. Returns the first
    /// failure (after all reports are in) naming topic and partition.
    async fn send_all(&self, topic: &str, items: &[(&str, &[u8])]) -> Result<(), BusError> {
        let mut pending = Vec::with_capacity(items.len());
        let deadline = Instant::now() + Duration::from_millis(self.cfg.message_timeout_ms);
        let mut enqueue_err = None;
        'outer: for (key, payload) in items {
            loop {
                let rec = FutureRecord::to(topic).key(*key).payload(*payload);
                match self.producer.send_result(rec) {
                    Ok(fut) => {
                        pending.push(fut);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if Instant::now() < deadline =>
                    {
                        // The local queue drains as the broker acknowledges.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        enqueue_err = Some(kafka_err(format!("topic `{topic}`: enqueue"), e));
                        break 'outer;
                    }
                }
            }
        }
        let total = pending.len();
        let mut first_err: Option<BusError> = None;
        let mut failed = 0usize;
        for fut in pending {
            let res = match fut.await {
                Ok(Ok(_delivery)) => Ok(()),
                Ok(Err((e, msg))) => {
                    Err(kafka_err(format!("topic `{topic}` partition {}: delivery", msg.partition()), e))
                }
                Err(_canceled) => {
                    Err(BusError::Kafka(format!("topic `{topic}`: delivery report lost (producer shut down)")))
                }
            };
            if let Err(e) = res {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = enqueue_err {
            return Err(e);
        }
        match first_err {
            None => Ok(()),
            Some(BusError::Kafka(msg)) => {
                Err(BusError::Kafka(format!("{msg} ({failed} of {total} records not acknowledged)")))
            }
            Some(e) => Err(e),
        }
    }

    fn save_checkpoint(&self, cp: &Checkpoint) -> Result<(), BusError> {
        let mut tx = self.checkpoints.begin_write().map_err(|e| self.store_err(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let mut t = tx.open_table(CHECKPOINTS).map_err(|e| self.store_err(e))?;
            let text = cp.value.to_string();
            t.insert(cp.source.as_str(), text.as_str()).map_err(|e| self.store_err(e))?;
        }
        tx.commit().map_err(|e| self.store_err(e))
    }

    async fn wait_topic_visible(&self, topic: &str, want: u32) -> Result<u32, BusError> {
        let deadline = Instant::now() + self.cfg.request_timeout();
        loop {
            match self.fetch_partitions(topic).await {
                Ok(Some(n)) if n >= want => return Ok(n),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {
                    return Err(BusError::Kafka(format!(
                        "topic `{topic}`: created but not visible in metadata after {:?}",
                        self.cfg.request_timeout()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, BusError> + Send + 'static) -> Result<T, BusError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BusError::Kafka(format!("kafka worker thread: {e}")))?
}

#[async_trait::async_trait]
impl crate::Bus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    /// Creates `topic` with `partitions` partitions (`0` = the configured
    /// default) and the configured replication factor. An existing topic is
    /// fine (its partition count is not changed). With
    /// `create_topics = false` only checks that the topic exists.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let partitions = if partitions == 0 { self.cfg.partitions } else { partitions };
        if !self.cfg.create_topics {
            return match self.fetch_partitions(topic).await? {
                Some(_) => Ok(()),
                None => Err(BusError::Config(format!(
                    "kafka topic `{topic}` does not exist and create_topics = false; \
                     ask the cluster operators to create it"
                ))),
            };
        }
        let num =
            i32::try_from(partitions).map_err(|_| BusError::Config(format!("topic `{topic}`: too many partitions")))?;
        let new = NewTopic::new(topic, num, TopicReplication::Fixed(i32::from(self.cfg.replication_factor)));
        let opts = AdminOptions::new()
            .request_timeout(Some(self.cfg.request_timeout()))
            .operation_timeout(Some(self.cfg.request_timeout()));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| kafka_err(format!("topic `{topic}`: create"), e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(kafka_err(format!("topic `{name}`: create"), code));
                }
            }
        }
        let n = self.wait_topic_visible(topic, 1).await?;
        if n != partitions {
            tracing::warn!(
                topic,
                existing = n,
                requested = partitions,
                "kafka topic exists with a different partition count"
            );
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, records: &[Envelope], checkpoint: Option<Checkpoint>) -> Result<(), BusError> {
        self.partitions(topic).await?;
        let mut bytes: Vec<Vec<u8>> = records.iter().map(Envelope::to_bytes).collect();
        if let Some(k) = &self.seal {
            let key = k.current(BUS_KEY).map_err(|e| BusError::Config(format!("sealing for {topic}: {e}")))?;
            let context = message_context(topic);
            for b in &mut bytes {
                *b = key.seal_blob(&context, b);
            }
        }
        let items: Vec<(&str, &[u8])> =
            records.iter().zip(&bytes).map(|(r, b)| (r.key.as_str(), b.as_slice())).collect();
        self.send_all(topic, &items).await?;
        if let Some(cp) = checkpoint {
            let this = self.clone();
            blocking(move || this.save_checkpoint(&cp)).await?;
        }
        Ok(())
    }

    async fn publish_raw(&self, topic: &str, items: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        self.partitions(topic).await?;
        let items: Vec<(&str, &[u8])> = items.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        self.send_all(topic, &items).await
    }

    async fn load_checkpoint(&self, source: &str) -> Result<Option<serde_json::Value>, BusError> {
        let tx = self.checkpoints.begin_read().map_err(|e| self.store_err(e))?;
        let t = tx.open_table(CHECKPOINTS).map_err(|e| self.store_err(e))?;
        let Some(v) = t.get(source).map_err(|e| self.store_err(e))? else { return Ok(None) };
        let value = serde_json::from_str(v.value())
            .map_err(|e| self.store_err(format!("checkpoint of source `{source}` is not JSON: {e}")))?;
        Ok(Some(value))
    }

    /// Joins group `group` subscribed to `topics` (which must exist).
    ///
    /// Positioning: the consumer uses eager `roundrobin` assignment (or the
    /// cooperative protocol if `partition.assignment.strategy` is overridden
    /// to `cooperative-sticky`). On every assignment the rebalance callback
    /// asks `lookup(topic, partition)` for each newly assigned partition and
    /// assigns it *at that offset*; where `lookup` returns `None` the group's
    /// committed offset is used, then the beginning. Records fetched before a
    /// rebalance but not yet returned by [`Consumer::poll`] are discarded (they
    /// are re-read from the new positions), so a batch never mixes
    /// generations.
    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        lookup: OffsetLookup,
    ) -> Result<Box<dyn Consumer>, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(format!("consumer group `{group}`: no topics")));
        }
        for t in topics {
            self.partitions(t).await?;
        }
        let mut cc = self.cfg.base_client_config();
        cc.set("group.id", group);
        cc.set("enable.auto.commit", "false");
        cc.set("enable.auto.offset.store", "false");
        cc.set("auto.offset.reset", "earliest");
        cc.set("isolation.level", "read_committed");
        cc.set("partition.assignment.strategy", "roundrobin");
        cc.set("enable.partition.eof", "false");
        cc.set("allow.auto.create.topics", "false");
        for (k, v) in &self.cfg.client {
            cc.set(k, v);
        }
        for (k, v) in &self.cfg.consumer {
            cc.set(k, v);
        }
        let state = Arc::new(GroupState::default());
        let ctx = GroupContext { group: group.to_string(), lookup, state: Arc::clone(&state) };
        let consumer = BaseConsumer::from_config_and_context(&cc, ctx)
            .map_err(|e| kafka_err(format!("consumer group `{group}`: create"), e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_err(format!("consumer group `{group}`: subscribe {topics:?}"), e))?;
        Ok(Box::new(KafkaConsumer {
            inner: Some(Arc::new(consumer)),
            seal: self.seal.clone(),
            state,
            group: group.to_string(),
            in_flight: None,
            pending_error: None,
        }))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        let n = match self.fetch_partitions(topic).await? {
            Some(n) => n,
            None => return Err(BusError::UnknownTopic(topic.to_string())),
        };
        let producer = self.producer.clone();
        let timeout = self.cfg.request_timeout();
        let topic = topic.to_string();
        blocking(move || {
            let mut out = Vec::with_capacity(n as usize);
            for p in 0..n {
                let (_low, high) = producer
                    .client()
                    .fetch_watermarks(&topic, p as i32, timeout)
                    .map_err(|e| kafka_err(format!("topic `{topic}` partition {p}: watermarks"), e))?;
                out.push(u64::try_from(high).unwrap_or(0));
            }
            Ok(out)
        })
        .await
    }
}

/// Shared between the rebalance callback and the consumer handle.
#[derive(Debug, Default)]
struct GroupState {
    /// Current assignment as seen by the rebalance callback.
    assigned: Mutex<BTreeSet<(String, u32)>>,
    /// Bumped on every assignment change.
    generation: AtomicU64,
    /// A failure inside the rebalance callback (lookup panicked or returned
    /// an out-of-range offset, assign failed); returned by the next poll.
    failure: Mutex<Option<String>>,
}

impl GroupState {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn fail(&self, msg: String) {
        tracing::error!("{msg}");
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(msg);
        }
    }

    fn take_failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

/// Consumer context: positions newly assigned partitions from the lookup.
struct GroupContext {
    group: String,
    lookup: OffsetLookup,
    state: Arc<GroupState>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        TracingContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", group = %self.group, "kafka consumer error: {error}: {reason}");
    }
}

impl GroupContext {
    /// Copies `tpl` with each partition's start offset set from the lookup.
    fn positioned(&self, tpl: &TopicPartitionList) -> Result<TopicPartitionList, String> {
        let mut out = TopicPartitionList::with_capacity(tpl.count());
        for el in tpl.elements() {
            let (topic, partition) = (el.topic(), el.partition());
            let p = u32::try_from(partition).map_err(|_| format!("topic `{topic}`: bad partition {partition}"))?;
            let lookup = Arc::clone(&self.lookup);
            let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lookup(topic, p))).map_err(|_| {
                format!("consumer group `{}`: offset lookup panicked for topic `{topic}` partition {p}", self.group)
            })?;
            let offset = match found {
                Some(o) => Offset::Offset(
                    i64::try_from(o)
                        .map_err(|_| format!("topic `{topic}` partition {p}: looked-up offset {o} out of range"))?,
                ),
                // Invalid = the group's committed offset, else auto.offset.reset.
                None => Offset::Invalid,
            };
            out.add_partition_offset(topic, partition, offset)
                .map_err(|e| format!("topic `{topic}` partition {p}: {e}"))?;
            tracing::debug!(group = %self.group, topic, partition = p, ?offset, "kafka partition assigned");
        }
        Ok(out)
    }

    fn set_assigned(&self, tpl: &TopicPartitionList, add: bool, replace: bool) {
        if let Ok(mut a) = self.state.assigned.lock() {
            if replace {
                a.clear();
            }
            for el in tpl.elements() {
                let key = (el.topic().to_string(), el.partition().max(0) as u32);
                if add {
                    a.insert(key);
                } else {
                    a.remove(&key);
                }
            }
        }
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, base_consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(base_consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positioned = match self.positioned(tpl) {
                    Ok(p) => p,
                    Err(msg) => {
                        // Never guess a position: take nothing and let the
                        // caller see the failure (it recreates the consumer).
                        self.state.fail(msg);
                        let empty = TopicPartitionList::new();
                        let _ = if cooperative {
                            base_consumer.incremental_assign(&empty)
                        } else {
                            base_consumer.assign(&empty)
                        };
                        self.set_assigned(&empty, true, !cooperative);
                        return;
                    }
                };
                let res = if cooperative {
                    base_consumer.incremental_assign(&positioned)
                } else {
                    base_consumer.assign(&positioned)
                };
                match res {
                    Ok(()) => self.set_assigned(tpl, true, !cooperative),
                    Err(e) => self.state.fail(format!("consumer group `{}`: assigning {tpl:?}: {e}", self.group)),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let res = if cooperative { base_consumer.incremental_unassign(tpl) } else { base_consumer.unassign() };
                if let Err(e) = res {
                    tracing::warn!(group = %self.group, "kafka unassign failed: {e}");
                }
                self.set_assigned(tpl, false, !cooperative);
            }
            other => {
                tracing::warn!(group = %self.group, "kafka rebalance error: {}", RDKafkaErrorCode::from(other));
                let _ = base_consumer.unassign();
                self.set_assigned(&TopicPartitionList::new(), false, true);
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Group offsets are informational; a failed commit is not fatal.
            tracing::debug!(group = %self.group, ?offsets, "kafka group offset commit failed: {e}");
        }
    }
}

type PollOutcome = (Vec<BusRecord>, Option<BusError>);

/// A member of a Kafka consumer group (see [`KafkaBus`]'s `consumer`).
struct KafkaConsumer {
    /// `Option` only so that `Drop` can move it to a blocking thread.
    inner: Option<Arc<BaseConsumer<GroupContext>>>,
    /// Opens sealed messages.
    seal: Option<Arc<lianqin_seal::Keyring>>,
    state: Arc<GroupState>,
    group: String,
    /// A poll running on the blocking pool. Kept across a cancelled `poll`
    /// so that no fetched record is ever lost: the next call picks it up.
    in_flight: Option<tokio::task::JoinHandle<PollOutcome>>,
    /// An error met after some records were collected; returned next.
    pending_error: Option<BusError>,
}

/// Polls up to `max` records, waiting at most `wait` for the first.
fn poll_batch(
    c: &BaseConsumer<GroupContext>,
    state: &GroupState,
    seal: Option<&lianqin_seal::Keyring>,
    max: usize,
    wait: Duration,
) -> PollOutcome {
    let deadline = Instant::now() + wait;
    let mut out: Vec<BusRecord> = Vec::new();
    let mut generation = state.generation();
    let mut last_err: Option<BusError> = None;
    loop {
        if out.len() >= max {
            return (out, None);
        }
        let timeout = if out.is_empty() { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
        let item = c.poll(timeout);
        if state.generation() != generation {
            // A rebalance ran: positions were reset from the lookup, so the
            // records collected so far will be delivered again (or belong to
            // another member now).
            generation = state.generation();
            out.clear();
        }
        if let Some(msg) = state.take_failure() {
            return (out, Some(BusError::Kafka(msg)));
        }
        match item {
            None => {
                if !out.is_empty() {
                    return (out, None);
                }
                if Instant::now() >= deadline {
                    return (out, last_err);
                }
            }
            Some(Ok(m)) => {
                let topic = m.topic().to_string();
                let partition = m.partition().max(0) as u32;
                let offset = m.offset().max(0) as u64;
                // A message that does not decode goes on as an `undecodable`
                // envelope (to quarantine, with its bytes) instead of
                // stopping the consumer at its offset.
                let bytes = m.payload().unwrap_or_default();
                let opened = match seal {
                    Some(k) if lianqin_seal::is_sealed_blob(bytes) => {
                        k.open_blob(&message_context(&topic), bytes).map_err(|e| e.to_string())
                    }
                    _ => Ok(std::borrow::Cow::Borrowed(bytes)),
                };
                let envelope = match (m.payload(), opened) {
                    (Some(_), Ok(b)) => Envelope::from_bytes(&b)
                        .unwrap_or_else(|e| Envelope::undecodable(&topic, partition, offset, &b, &e.to_string())),
                    (Some(b), Err(e)) => Envelope::undecodable(&topic, partition, offset, b, &format!("sealed: {e}")),
                    (None, _) => Envelope::undecodable(&topic, partition, offset, bytes, "empty payload"),
                };
                out.push(BusRecord { topic, partition, offset, envelope });
            }
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                return (out, Some(BusError::Kafka(format!("consume (fatal): {code}"))));
            }
            Some(Err(e)) => {
                // Transient (broker down, coordinator moved, ...): librdkafka
                // keeps reconnecting. Report it only if nothing arrives before
                // the deadline, so errors queued during an outage do not
                // hold back records once the broker is back.
                tracing::debug!("kafka consume error: {e}");
                let err = match e {
                    KafkaError::MessageConsumption(code) => format!("consume: {code}"),
                    other => format!("consume: {other}"),
                };
                last_err = Some(BusError::Kafka(err));
                if Instant::now() >= deadline {
                    return if out.is_empty() { (out, last_err) } else { (out, None) };
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let Some(inner) = self.inner.as_ref() else {
            return Err(BusError::Kafka(format!("consumer group `{}`: closed", self.group)));
        };
        if self.in_flight.is_none() {
            if max == 0 {
                return Ok(Vec::new());
            }
            let c = Arc::clone(inner);
            let state = Arc::clone(&self.state);
            let seal = self.seal.clone();
            self.in_flight =
                Some(tokio::task::spawn_blocking(move || poll_batch(&c, &state, seal.as_deref(), max, wait)));
        }
        // If this future is dropped here, `in_flight` survives for the next call.
        let Some(handle) = self.in_flight.as_mut() else { return Ok(Vec::new()) };
        let joined = handle.await;
        self.in_flight = None;
        let (records, err) =
            joined.map_err(|e| BusError::Kafka(format!("consumer group `{}`: poll thread: {e}", self.group)))?;
        match err {
            Some(e) if records.is_empty() => Err(annotate(e, &self.group)),
            Some(e) => {
                self.pending_error = Some(annotate(e, &self.group));
                Ok(records)
            }
            None => Ok(records),
        }
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.state.assigned.lock().map(|a| a.iter().cloned().collect()).unwrap_or_default()
    }

    async fn commit(&mut self, positions: &[(String, u32, u64)]) -> Result<(), BusError> {
        if positions.is_empty() {
            return Ok(());
        }
        let Some(inner) = self.inner.as_ref() else {
            return Err(BusError::Kafka(format!("consumer group `{}`: closed", self.group)));
        };
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        for (topic, p, off) in positions {
            let partition =
                i32::try_from(*p).map_err(|_| BusError::Kafka(format!("topic `{topic}`: bad partition {p}")))?;
            let offset = i64::try_from(*off)
                .map_err(|_| BusError::Kafka(format!("topic `{topic}` partition {p}: offset {off} out of range")))?;
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| kafka_err(format!("topic `{topic}` partition {p}"), e))?;
        }
        inner
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| kafka_err(format!("consumer group `{}`: commit", self.group), e))
    }
}

fn annotate(e: BusError, group: &str) -> BusError {
    match e {
        BusError::Kafka(msg) => BusError::Kafka(format!("consumer group `{group}`: {msg}")),
        other => other,
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Closing leaves the group (so the others rebalance at once) and
        // blocks until done: do it off the async threads when possible.
        let Some(inner) = self.inner.take() else { return };
        let in_flight = self.in_flight.take();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(move || {
                    drop(in_flight);
                    drop(inner);
                });
            }
            Err(_) => drop(inner),
        }
    }
}
