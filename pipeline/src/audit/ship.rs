//! The replicated audit topic (issue 5, §2): when the Kafka bus is on, the
//! audit streams under `<data-dir>/audit/` are copied, **encrypted, byte for
//! byte as stored**, to the topic `<prefix>audit`, so that losing the
//! machine (or an intruder rewriting its disk) does not lose the trail.
//!
//! ## Design
//! * The query path never waits for Kafka: entries are appended (and made
//!   durable) locally as before; a background [`Shipper`] tails the stream
//!   files and produces what is new, through the bus's idempotent producer
//!   (`acks=all`, [`lianqin_bus::Bus::publish_raw`] returns when every
//!   message is acknowledged).
//! * What is shipped are whole frames of the append-only files (`keys.log`,
//!   `seg-*.log`, `checkpoints.log`) plus the `audit.header`, as [`Chunk`]s
//!   `(stream, file, offset, bytes)`, keyed by the stream name so one
//!   stream's chunks stay in one partition, in order. Each round snapshots
//!   `checkpoints.log` first, the segments next and `keys.log` last, fsyncs
//!   what it read, and sends keys → segments → checkpoints: a consumer that
//!   stops anywhere has the key of every entry it holds and no checkpoint
//!   ahead of its entries, so any prefix of the topic verifies.
//! * The position (next offset per file) is persisted in
//!   `<data-dir>/audit/<stream>.shipped` after the broker acknowledged the
//!   round; a crash re-sends at most one round (never loses one).
//! * One shipper per stream at a time: a hub process ships every stream for
//!   which it holds `<data-dir>/audit/<stream>.ship.lock` (its own, the CLI
//!   streams, those of stopped nodes), so on a shared data dir each stream
//!   is shipped by exactly one live node and taken over when it stops.
//!
//! ## Guarantee
//! At-least-once, in order per stream. A consumer rebuilds the streams with
//! [`apply`] (a chunk writes its bytes at its offset, so a re-sent chunk is
//! a no-op: dedup by `(stream, file, offset)`) and checks them with
//! `lianqin_audit::verify` — `lianqin audit mirror` / `lianqin audit verify
//! --from-kafka` do this. The copy is as tamper-evident as the original
//! (same chain, tags and signed checkpoints) and needs the master key to
//! read, which Kafka never sees.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Audit, AuditShipper};
use crate::PipelineError;

/// Starts copying the audit streams of `audit`'s data dir to the topic
/// `<prefix>audit` on `bus` in the background, every `every`, and attaches
/// the shipper to `audit` ([`Audit::attach_shipper`], so that
/// [`Audit::ship_now`] reaches it); the query path never waits for it.
pub async fn start(
    audit: &Audit,
    bus: Arc<dyn lianqin_bus::Bus>,
    prefix: &str,
    partitions: u32,
    every: Duration,
) -> Result<(), PipelineError> {
    let shipper = Arc::new(Shipper::to_bus(audit.data_dir(), bus, &topic(prefix), partitions).await?);
    let task = Arc::clone(&shipper).spawn(every);
    audit.attach_shipper(Arc::new(Running(shipper)), task);
    Ok(())
}

/// A started [`Shipper`] as the writer sees it.
struct Running(Arc<Shipper>);

#[async_trait::async_trait]
impl AuditShipper for Running {
    async fn ship_once(&self) -> Result<usize, PipelineError> {
        self.0.ship_once().await
    }
}

/// Name of the audit topic under a topic prefix: `<prefix>audit`.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}audit")
}

/// Largest chunk of file bytes in one message (below Kafka's 1 MB default).
pub const MAX_CHUNK: usize = 512 * 1024;

const MAGIC: &[u8; 4] = b"LQAR";
const VERSION: u8 = 1;

/// What a [`Chunk`] does to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOp {
    /// Write `data` at `offset`.
    Write,
    /// Cut the file to `offset` bytes (the source file became shorter: a
    /// torn tail was cut by crash recovery).
    Truncate,
}

/// One message of the audit topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Stream (directory under `audit/`).
    pub stream: String,
    /// File inside the stream directory.
    pub file: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// Write or truncate.
    pub op: ChunkOp,
    /// The bytes (empty for a truncate).
    pub data: Vec<u8>,
}

impl Chunk {
    /// Encodes: `"LQAR" ‖ version u8 ‖ op u8 ‖ u16 len ‖ stream ‖ u16 len ‖
    /// file ‖ offset u64 ‖ data` (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.stream.len() + self.file.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(match self.op {
            ChunkOp::Write => 0,
            ChunkOp::Truncate => 1,
        });
        for s in [&self.stream, &self.file] {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes a message; names what is wrong.
    pub fn decode(b: &[u8]) -> Result<Chunk, PipelineError> {
        let bad = |what: &str| PipelineError::Internal(format!("audit topic message: {what}"));
        if b.len() < 6 || &b[..4] != MAGIC {
            return Err(bad("not an audit chunk (bad magic)"));
        }
        if b[4] != VERSION {
            return Err(bad(&format!("unknown version {}", b[4])));
        }
        let op = match b[5] {
            0 => ChunkOp::Write,
            1 => ChunkOp::Truncate,
            o => return Err(bad(&format!("unknown op {o}"))),
        };
        let mut pos = 6;
        let mut strings = Vec::new();
        for _ in 0..2 {
            let l = b.get(pos..pos + 2).ok_or_else(|| bad("truncated"))?;
            let l = u16::from_le_bytes([l[0], l[1]]) as usize;
            let s = b.get(pos + 2..pos + 2 + l).ok_or_else(|| bad("truncated"))?;
            strings.push(String::from_utf8(s.to_vec()).map_err(|_| bad("name is not UTF-8"))?);
            pos += 2 + l;
        }
        let o = b.get(pos..pos + 8).ok_or_else(|| bad("truncated"))?;
        let offset = u64::from_le_bytes(o.try_into().map_err(|_| bad("truncated"))?);
        let file = strings.pop().unwrap_or_default();
        let stream = strings.pop().unwrap_or_default();
        for n in [&stream, &file] {
            if n.is_empty() || n.contains('/') || n.contains('\\') || n.starts_with('.') {
                return Err(bad(&format!("unsafe name {n:?}")));
            }
        }
        Ok(Chunk { stream, file, offset, op, data: b[pos + 8..].to_vec() })
    }
}

/// Applies a chunk to a copy of the streams under `root` (a data dir: the
/// streams go to `root/audit/<stream>/`). Idempotent.
pub fn apply(root: &Path, c: &Chunk) -> Result<(), PipelineError> {
    let dir = root.join("audit").join(&c.stream);
    std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Internal(format!("{}: {e}", dir.display())))?;
    let path = dir.join(&c.file);
    let err = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", path.display()));
    let mut f = File::options().create(true).truncate(false).read(true).write(true).open(&path).map_err(err)?;
    match c.op {
        ChunkOp::Write => {
            f.seek(SeekFrom::Start(c.offset)).map_err(err)?;
            f.write_all(&c.data).map_err(err)?;
        }
        ChunkOp::Truncate => f.set_len(c.offset).map_err(err)?,
    }
    Ok(())
}

/// Where chunks go (the bus; tests use a vector).
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync {
    /// Sends `(key, message)` pairs; returns when all are durable.
    async fn send(&self, items: &[(String, Vec<u8>)]) -> Result<(), PipelineError>;
}

/// A sink keeping the messages in memory (tests, tools).
#[derive(Debug, Default)]
pub struct MemorySink(Mutex<Vec<(String, Vec<u8>)>>);

impl MemorySink {
    /// Every `(key, message)` sent so far, in order.
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl AuditSink for MemorySink {
    async fn send(&self, items: &[(String, Vec<u8>)]) -> Result<(), PipelineError> {
        self.0.lock().map_err(|_| PipelineError::Internal("memory sink poisoned".into()))?.extend_from_slice(items);
        Ok(())
    }
}

struct BusSink {
    bus: Arc<dyn lianqin_bus::Bus>,
    topic: String,
}

#[async_trait::async_trait]
impl AuditSink for BusSink {
    async fn send(&self, items: &[(String, Vec<u8>)]) -> Result<(), PipelineError> {
        self.bus.publish_raw(&self.topic, items).await.map_err(PipelineError::Bus)
    }
}

/// A stream this process ships: its lock file and shipped positions per file.
type HeldStream = (File, BTreeMap<String, u64>);

/// Ships the streams of a data dir (see module docs).
pub struct Shipper {
    data_dir: PathBuf,
    sink: Arc<dyn AuditSink>,
    /// Streams this process ships: lock file and positions.
    held: Mutex<BTreeMap<String, HeldStream>>,
    /// One round at a time (background task and `ship_now`).
    round: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").field("data_dir", &self.data_dir).finish()
    }
}

/// One stream's round: messages and the positions after them.
type Round = (String, Vec<(String, Vec<u8>)>, BTreeMap<String, u64>);

impl Shipper {
    /// A shipper of `data_dir`'s streams to `sink`.
    pub fn new(data_dir: &Path, sink: Arc<dyn AuditSink>) -> Shipper {
        Shipper {
            data_dir: data_dir.to_path_buf(),
            sink,
            held: Mutex::new(BTreeMap::new()),
            round: tokio::sync::Mutex::new(()),
        }
    }

    /// A shipper producing to `topic` on `bus` (creating the topic).
    pub async fn to_bus(
        data_dir: &Path,
        bus: Arc<dyn lianqin_bus::Bus>,
        topic: &str,
        partitions: u32,
    ) -> Result<Shipper, PipelineError> {
        bus.ensure_topic(topic, partitions).await.map_err(PipelineError::Bus)?;
        Ok(Shipper::new(data_dir, Arc::new(BusSink { bus, topic: topic.to_string() })))
    }

    fn positions_path(&self, stream: &str) -> PathBuf {
        self.data_dir.join("audit").join(format!("{stream}.shipped"))
    }

    /// Takes the ship locks we can get; reads what is new in our streams.
    fn collect(&self) -> Result<Vec<Round>, PipelineError> {
        let mut held = self.held.lock().map_err(|_| PipelineError::Internal("audit shipper lock poisoned".into()))?;
        let root = self.data_dir.join("audit");
        for dir in super::streams(&self.data_dir) {
            let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
            if held.contains_key(&name) {
                continue;
            }
            let lock_path = root.join(format!("{name}.ship.lock"));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| PipelineError::Internal(format!("{}: {e}", lock_path.display())))?;
            if f.try_lock().is_ok() {
                let pos = match std::fs::read(self.positions_path(&name)) {
                    Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                        PipelineError::Internal(format!("{}: {e}", self.positions_path(&name).display()))
                    })?,
                    Err(_) => BTreeMap::new(),
                };
                held.insert(name, (f, pos));
            }
        }
        let mut rounds = Vec::new();
        for (name, (_, pos)) in held.iter() {
            let dir = root.join(name);
            // Snapshot order: checkpoints, segments, keys (module docs).
            let len = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
            let cp_len = len("checkpoints.log");
            let mut segs: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| PipelineError::Internal(format!("{}: {e}", dir.display())))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
                .collect();
            segs.sort();
            let seg_lens: Vec<(String, u64)> = segs.into_iter().map(|s| (s.clone(), len(&s))).collect();
            let keys_len = len("keys.log");
            let header_len = len("audit.header");
            let mut files = vec![("audit.header".to_string(), header_len), ("keys.log".to_string(), keys_len)];
            files.extend(seg_lens);
            files.push(("checkpoints.log".to_string(), cp_len));
            let mut msgs = Vec::new();
            let mut next = pos.clone();
            for (file, snap) in files {
                let at = next.get(&file).copied().unwrap_or(0);
                if snap < at {
                    let c = Chunk {
                        stream: name.clone(),
                        file: file.clone(),
                        offset: snap,
                        op: ChunkOp::Truncate,
                        data: vec![],
                    };
                    msgs.push((name.clone(), c.encode()));
                    next.insert(file.clone(), snap);
                    continue;
                }
                if snap == at {
                    continue;
                }
                let path = dir.join(&file);
                let err = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", path.display()));
                let mut f = File::open(&path).map_err(err)?;
                // What we copy must survive a power loss here too.
                f.sync_data().map_err(err)?;
                f.seek(SeekFrom::Start(at)).map_err(err)?;
                let mut buf = Vec::with_capacity((snap - at) as usize);
                f.take(snap - at).read_to_end(&mut buf).map_err(err)?;
                let usable = if file == "audit.header" { buf.len() } else { lianqin_audit::complete_frames_len(&buf) };
                let mut off = 0;
                while off < usable {
                    // Chunks end at frame boundaries only when they are the
                    // last; the consumer writes at offsets, so that is fine.
                    let end = (off + MAX_CHUNK).min(usable);
                    let c = Chunk {
                        stream: name.clone(),
                        file: file.clone(),
                        offset: at + off as u64,
                        op: ChunkOp::Write,
                        data: buf[off..end].to_vec(),
                    };
                    msgs.push((name.clone(), c.encode()));
                    off = end;
                }
                next.insert(file, at + usable as u64);
            }
            if !msgs.is_empty() {
                rounds.push((name.clone(), msgs, next));
            }
        }
        Ok(rounds)
    }

    /// One round: sends what is new in every stream this process ships and
    /// persists the positions. Returns the number of messages sent.
    pub async fn ship_once(self: &Arc<Self>) -> Result<usize, PipelineError> {
        let _round = self.round.lock().await;
        let me = Arc::clone(self);
        let rounds = tokio::task::spawn_blocking(move || me.collect())
            .await
            .map_err(|e| PipelineError::Internal(format!("audit shipper: {e}")))??;
        let mut sent = 0;
        for (stream, msgs, next) in rounds {
            self.sink.send(&msgs).await?;
            sent += msgs.len();
            self.save(&stream, next)?;
        }
        Ok(sent)
    }

    fn save(&self, stream: &str, next: BTreeMap<String, u64>) -> Result<(), PipelineError> {
        let path = self.positions_path(stream);
        let tmp = path.with_extension("shipped.tmp");
        let err = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", path.display()));
        let text = serde_json::to_vec(&next).map_err(|e| PipelineError::Internal(e.to_string()))?;
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&text).and_then(|_| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(mut held) = self.held.lock()
            && let Some(e) = held.get_mut(stream)
        {
            e.1 = next;
        }
        Ok(())
    }

    /// Runs rounds every `every` until the returned task is aborted.
    /// Failures (broker down) are logged and retried next round.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match self.ship_once().await {
                    Ok(_) => {
                        if failing {
                            tracing::info!("audit topic: shipping resumed");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!("audit topic: shipping failed (retrying; nothing is lost): {e}");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// Rebuilds the streams carried by `messages` under `root/audit/` (see
/// [`apply`]); returns the streams seen.
pub fn mirror<'a>(root: &Path, messages: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<String>, PipelineError> {
    let mut seen = std::collections::BTreeSet::new();
    for m in messages {
        let c = Chunk::decode(m)?;
        apply(root, &c)?;
        seen.insert(c.stream);
    }
    Ok(seen.into_iter().collect())
}

/// Reads the whole audit topic (every partition, from the beginning to the
/// end offsets at the time of the call) with the hub's Kafka settings and
/// rebuilds the streams under `root/audit/`. Returns (streams, messages).
#[cfg(feature = "kafka")]
pub fn mirror_from_kafka(
    cfg: &lianqin_bus::kafka::KafkaBusConfig,
    topic: &str,
    root: &Path,
) -> Result<(Vec<String>, u64), PipelineError> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let kerr = |e: rdkafka::error::KafkaError| PipelineError::Internal(format!("audit topic {topic}: {e}"));
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers);
    cc.set("group.id", format!("lianqin-audit-mirror-{}", std::process::id()));
    cc.set("enable.auto.commit", "false");
    cc.set("client.id", "lianqin-audit-mirror");
    for (k, v) in cfg.client.iter().chain(cfg.consumer.iter()) {
        cc.set(k, v);
    }
    let c: BaseConsumer = cc.create().map_err(kerr)?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1000));
    let md = c.fetch_metadata(Some(topic), timeout).map_err(kerr)?;
    let parts: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if parts.is_empty() {
        return Err(PipelineError::Internal(format!("audit topic {topic}: no partitions (does it exist?)")));
    }
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let (lo, hi) = c.fetch_watermarks(topic, *p, timeout).map_err(kerr)?;
        if hi > lo {
            ends.insert(*p, hi);
            tpl.add_partition_offset(topic, *p, Offset::Beginning).map_err(kerr)?;
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut n = 0u64;
    if ends.is_empty() {
        return Ok((Vec::new(), 0));
    }
    c.assign(&tpl).map_err(kerr)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(PipelineError::Internal(format!("audit topic {topic}: timed out reading to the end")));
        }
        let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
        let m = m.map_err(kerr)?;
        let ch = Chunk::decode(m.payload().unwrap_or_default())?;
        apply(root, &ch)?;
        seen.insert(ch.stream);
        n += 1;
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    Ok((seen.into_iter().collect(), n))
}
