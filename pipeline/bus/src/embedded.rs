//! The embedded bus: topics, partitions and offsets in a redb database.
//!
//! redb is an ACID embedded key-value store (copy-on-write B-trees, fsync on
//! commit); we do not hand-roll a log format. Layout:
//!
//! | table | key | value |
//! |---|---|---|
//! | `topics` | topic | partition count |
//! | `batches` | (topic, partition, first offset) | the records of one publish to that partition: a record count (u32 LE), then each record as length (u32 LE) and bytes; at most [`BATCH_MAX_RECORDS`] records or [`BATCH_MAX_BYTES`] per value; from [`COMPRESS_FROM`] bytes LZ4-compressed ([`COMPRESSED`] marker, then the LZ4 block with its size) |
//! | `log` | (topic, partition, offset) | record bytes (one record per key, as hubs before batch framing wrote it; read, never written) |
//! | `ends` | (topic, partition) | next offset |
//! | `checkpoints` | source id | checkpoint JSON |
//! | `group_offsets` | (group, topic, partition) | next offset |
//!
//! A publish writes one `batches` value per partition (split at the limits)
//! in one fsynced transaction, instead of one B-tree key per record: the
//! bus keeps Kafka's per-record offsets, but pays the store's per-key cost
//! once per batch. A reader finds the batch holding an offset by a range
//! lookup and skips the records before it.
//!
//! One process owns the store at a time (redb takes a file lock), which is
//! the embedded default's single-machine deployment.
//!
//! Records of one source repeat their field names and much of their text, so
//! a batch compresses 4–5× where one record compresses 1.3×: compressing the
//! value before sealing writes a fifth of the bytes (on a VM each written
//! page costs the kernel a copy into the page cache).
//!
//! Opened with [`EmbeddedBus::open_sealed`] (the hub does), every `batches`
//! value is sealed at rest ([`lianqin_seal`] blob, AES-256-GCM with the
//! `_bus` data key, bound to its topic, partition and first offset), so the
//! bus file holds no record in clear. Values written unsealed (earlier hubs,
//! [`EmbeddedBus::open`]) are read as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;

use crate::{BusError, BusRecord, Checkpoint, Consumer, Envelope, OffsetLookup, partition_for};

const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("topics");
const LOG: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("log");
const BATCHES: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("batches");

/// redb's page cache. Its default (1 GiB) let the hub's memory grow with
/// the bus file (1.6 GiB peak RSS for a 1M-line file); records are read
/// once, soon after they were written, so a small cache costs little.
const CACHE_BYTES: usize = 64 << 20;

/// Most records in one `batches` value.
pub const BATCH_MAX_RECORDS: usize = 4096;
/// Most bytes of records in one `batches` value (a record larger than this
/// gets a value of its own).
pub const BATCH_MAX_BYTES: usize = 4 << 20;

/// The first four bytes of a compressed `batches` value: a record count no
/// batch can have, so values written before compression read as they are.
pub const COMPRESSED: [u8; 4] = [0xFF; 4];

/// Values of at least this many bytes are compressed (smaller ones gain
/// too little).
pub const COMPRESS_FROM: usize = 4096;
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("ends");
const CHECKPOINTS: TableDefinition<&str, &str> = TableDefinition::new("checkpoints");
const GROUP_OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("group_offsets");

/// The embedded, durable bus (one file, `bus.redb`, under the data dir).
#[derive(Clone)]
pub struct EmbeddedBus {
    db: Arc<Database>,
    path: PathBuf,
    notify: Arc<Notify>,
    /// Seals batch values at rest (None: stored as they are).
    seal: Option<Arc<lianqin_seal::Keyring>>,
}

/// The data key department of bus batches.
const BUS_KEY: &str = "_bus";

/// What a sealed batch value is bound to.
fn batch_context(topic: &str, partition: u32, first: u64) -> String {
    format!("bus/{topic}/{partition}/{first}")
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus").field("path", &self.path).finish()
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the bus store at `dir/bus.redb`.
    pub fn open(dir: &Path) -> Result<Self, BusError> {
        Self::open_with(dir, None)
    }

    /// Opens the store with batch values sealed by `keys` (see the module docs).
    pub fn open_sealed(dir: &Path, keys: Arc<lianqin_seal::Keyring>) -> Result<Self, BusError> {
        Self::open_with(dir, Some(keys))
    }

    fn open_with(dir: &Path, seal: Option<Arc<lianqin_seal::Keyring>>) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        let path = dir.join("bus.redb");
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| store_err(&path, e))?;
        let bus = EmbeddedBus { db: Arc::new(db), path, notify: Arc::new(Notify::new()), seal };
        // Create all tables up front so readers never see a missing table.
        let tx = bus.db.begin_write().map_err(|e| bus.err(e))?;
        {
            tx.open_table(TOPICS).map_err(|e| bus.err(e))?;
            tx.open_table(LOG).map_err(|e| bus.err(e))?;
            tx.open_table(BATCHES).map_err(|e| bus.err(e))?;
            tx.open_table(ENDS).map_err(|e| bus.err(e))?;
            tx.open_table(CHECKPOINTS).map_err(|e| bus.err(e))?;
            tx.open_table(GROUP_OFFSETS).map_err(|e| bus.err(e))?;
        }
        tx.commit().map_err(|e| bus.err(e))?;
        Ok(bus)
    }

    fn err(&self, e: impl std::fmt::Display) -> BusError {
        store_err(&self.path, e)
    }

    fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(TOPICS).map_err(|e| self.err(e))?;
        let n = t.get(topic).map_err(|e| self.err(e))?.map(|v| v.value());
        n.ok_or_else(|| BusError::UnknownTopic(topic.to_string()))
    }

    /// Lists topics and their partition counts.
    pub fn topics(&self) -> Result<BTreeMap<String, u32>, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(TOPICS).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// Total number of records stored on the bus (all topics).
    pub fn total_records(&self) -> Result<u64, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(LOG).map_err(|e| self.err(e))?;
        let mut n = t.len().map_err(|e| self.err(e))?;
        let b = tx.open_table(BATCHES).map_err(|e| self.err(e))?;
        for item in b.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (topic, p, first) = k.value();
            let value = self.open_value(topic, p, first, v.value())?;
            n +=
                batch_records(&value).map_err(|e| self.err(format!("{topic}/{p} batch at {first}: {e}")))?.len() as u64;
        }
        Ok(n)
    }

    fn append(&self, topic: &str, items: Vec<(u32, Vec<u8>)>, checkpoint: Option<Checkpoint>) -> Result<(), BusError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let topics = tx.open_table(TOPICS).map_err(|e| self.err(e))?;
            if topics.get(topic).map_err(|e| self.err(e))?.is_none() {
                return Err(BusError::UnknownTopic(topic.to_string()));
            }
            drop(topics);
            let mut ends = tx.open_table(ENDS).map_err(|e| self.err(e))?;
            let mut batches = tx.open_table(BATCHES).map_err(|e| self.err(e))?;
            let mut by_partition: BTreeMap<u32, Vec<&[u8]>> = BTreeMap::new();
            for (p, bytes) in &items {
                by_partition.entry(*p).or_default().push(bytes.as_slice());
            }
            for (p, records) in by_partition {
                let mut off = ends.get((topic, p)).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0);
                for chunk in batch_chunks(&records) {
                    let value = compress(encode_batch(chunk));
                    let value = match &self.seal {
                        Some(k) => k
                            .seal_blob(BUS_KEY, &batch_context(topic, p, off), &value)
                            .map_err(|e| self.err(format!("sealing: {e}")))?,
                        None => value,
                    };
                    batches.insert((topic, p, off), value.as_slice()).map_err(|e| self.err(e))?;
                    off += chunk.len() as u64;
                }
                ends.insert((topic, p), off).map_err(|e| self.err(e))?;
            }
            if let Some(cp) = checkpoint {
                let mut cps = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
                let text = cp.value.to_string();
                cps.insert(cp.source.as_str(), text.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.notify.notify_waiters();
        Ok(())
    }

    fn read_from(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        // Caught up: nothing to read (and no batch to look into).
        let ends = tx.open_table(ENDS).map_err(|e| self.err(e))?;
        let end = ends.get((topic, partition)).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0);
        if from >= end {
            return Ok(Vec::new());
        }
        let log = tx.open_table(LOG).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        // Records written one per key by earlier hubs come first (their
        // offsets are below every batch's).
        let range = log.range((topic, partition, from)..(topic, partition, u64::MAX)).map_err(|e| self.err(e))?;
        for item in range.take(max) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.value().2, v.value().to_vec()));
        }
        if out.len() >= max {
            return Ok(out);
        }
        let from = out.last().map_or(from, |(o, _)| o + 1);
        let batches = tx.open_table(BATCHES).map_err(|e| self.err(e))?;
        // The batch holding `from` starts at or before it.
        let start =
            match batches.range((topic, partition, 0)..=(topic, partition, from)).map_err(|e| self.err(e))?.next_back()
            {
                Some(item) => item.map_err(|e| self.err(e))?.0.value().2,
                None => from,
            };
        let range = batches.range((topic, partition, start)..(topic, partition, u64::MAX)).map_err(|e| self.err(e))?;
        for item in range {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let first = k.value().2;
            let value = self.open_value(topic, partition, first, v.value())?;
            let records = batch_records(&value)
                .map_err(|e| self.err(format!("topic `{topic}` partition {partition} batch at offset {first}: {e}")))?;
            for (i, bytes) in records.into_iter().enumerate() {
                let offset = first + i as u64;
                if offset < from {
                    continue;
                }
                out.push((offset, bytes.to_vec()));
                if out.len() >= max {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Reads raw bytes of a partition from `from` (at most `max` records).
    /// Used to read change-feed topics and for tests.
    pub fn read_raw(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, BusError> {
        self.read_from(topic, partition, from, max)
    }

    /// A `batches` value in clear (opened when sealed, decompressed when
    /// compressed).
    fn open_value<'a>(
        &self,
        topic: &str,
        partition: u32,
        first: u64,
        value: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, BusError> {
        let at = || format!("topic `{topic}` partition {partition} batch at offset {first}");
        let opened = if !lianqin_seal::is_sealed_blob(value) {
            std::borrow::Cow::Borrowed(value)
        } else {
            let Some(k) = &self.seal else {
                return Err(self.err(format!("{}: sealed, and the bus was opened without data keys", at())));
            };
            k.open_blob(&batch_context(topic, partition, first), value)
                .map_err(|e| self.err(format!("{}: {e}", at())))?
        };
        decompress(opened).map_err(|e| self.err(format!("{}: {e}", at())))
    }

    fn group_offset(&self, group: &str, topic: &str, p: u32) -> Result<Option<u64>, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(GROUP_OFFSETS).map_err(|e| self.err(e))?;
        Ok(t.get((group, topic, p)).map_err(|e| self.err(e))?.map(|v| v.value()))
    }
}

/// Splits one partition's records of a publish at the batch limits.
fn batch_chunks<'a, 'b>(records: &'b [&'a [u8]]) -> Vec<&'b [&'a [u8]]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let full = i - start >= BATCH_MAX_RECORDS || (i > start && bytes + r.len() > BATCH_MAX_BYTES);
        if full {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += r.len();
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// `value` compressed behind [`COMPRESSED`] when it is large enough and
/// compression pays.
fn compress(value: Vec<u8>) -> Vec<u8> {
    if value.len() < COMPRESS_FROM {
        return value;
    }
    let mut out = COMPRESSED.to_vec();
    out.extend_from_slice(&lz4_flex::block::compress_prepend_size(&value));
    if out.len() < value.len() { out } else { value }
}

/// A `batches` value as written by [`encode_batch`]: decompressed when
/// [`compress`] compressed it, else as it is.
fn decompress(value: std::borrow::Cow<'_, [u8]>) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    match value.strip_prefix(&COMPRESSED[..]) {
        Some(block) => lz4_flex::block::decompress_size_prepended(block)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| format!("compressed batch does not decompress: {e}")),
        None => Ok(value),
    }
}

/// One `batches` value: count, then length-prefixed records.
fn encode_batch(records: &[&[u8]]) -> Vec<u8> {
    let size = 4 + records.iter().map(|r| r.len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The records of a `batches` value (borrowed), or why it is malformed.
fn batch_records(value: &[u8]) -> Result<Vec<&[u8]>, String> {
    let u32_at = |at: usize| -> Result<usize, String> {
        let b = value.get(at..at + 4).ok_or_else(|| format!("cut short at byte {at}"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(0)?;
    let mut out = Vec::with_capacity(n.min(BATCH_MAX_RECORDS));
    let mut at = 4;
    for i in 0..n {
        let len = u32_at(at).map_err(|e| format!("record {i}: {e}"))?;
        let end = (at + 4).checked_add(len).filter(|e| *e <= value.len());
        let Some(end) = end else { return Err(format!("record {i} of {n}: cut short")) };
        out.push(&value[at + 4..end]);
        at = end;
    }
    if at != value.len() {
        return Err(format!("{} bytes after record {n}", value.len() - at));
    }
    Ok(out)
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> BusError {
    BusError::Store { path: path.display().to_string(), detail: e.to_string() }
}

#[async_trait::async_trait]
impl crate::Bus for EmbeddedBus {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        if partitions == 0 {
            return Err(BusError::Config(format!("topic `{topic}`: partitions must be >= 1")));
        }
        let this = self.clone();
        let topic = topic.to_string();
        blocking(move || {
            let tx = this.db.begin_write().map_err(|e| this.err(e))?;
            {
                let mut t = tx.open_table(TOPICS).map_err(|e| this.err(e))?;
                let existing = t.get(topic.as_str()).map_err(|e| this.err(e))?.map(|v| v.value());
                if existing.is_none() {
                    t.insert(topic.as_str(), partitions).map_err(|e| this.err(e))?;
                }
            }
            tx.commit().map_err(|e| this.err(e))
        })
        .await
    }

    async fn publish(&self, topic: &str, records: &[Envelope], checkpoint: Option<Checkpoint>) -> Result<(), BusError> {
        let n = self.partitions(topic)?;
        let items: Vec<(u32, Vec<u8>)> = records.iter().map(|r| (partition_for(&r.key, n), r.to_bytes())).collect();
        let this = self.clone();
        let topic = topic.to_string();
        blocking(move || this.append(&topic, items, checkpoint)).await
    }

    async fn publish_raw(&self, topic: &str, items: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let n = self.partitions(topic)?;
        let items: Vec<(u32, Vec<u8>)> = items.iter().map(|(k, v)| (partition_for(k, n), v.clone())).collect();
        let this = self.clone();
        let topic = topic.to_string();
        blocking(move || this.append(&topic, items, None)).await
    }

    async fn load_checkpoint(&self, source: &str) -> Result<Option<serde_json::Value>, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let Some(v) = t.get(source).map_err(|e| self.err(e))? else { return Ok(None) };
        let value = serde_json::from_str(v.value())
            .map_err(|e| self.err(format!("checkpoint of source `{source}` is not JSON: {e}")))?;
        Ok(Some(value))
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        lookup: OffsetLookup,
    ) -> Result<Box<dyn Consumer>, BusError> {
        let mut positions = BTreeMap::new();
        for topic in topics {
            let n = self.partitions(topic)?;
            for p in 0..n {
                let pos = match lookup(topic, p) {
                    Some(o) => o,
                    None => self.group_offset(group, topic, p)?.unwrap_or(0),
                };
                positions.insert((topic.clone(), p), pos);
            }
        }
        Ok(Box::new(EmbeddedConsumer { bus: self.clone(), group: group.to_string(), positions }))
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        let n = self.partitions(topic)?;
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ENDS).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(n as usize);
        for p in 0..n {
            out.push(t.get((topic, p)).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0));
        }
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, BusError> + Send + 'static) -> Result<T, BusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BusError::Store { path: "-".into(), detail: format!("worker thread: {e}") })?
}

/// A consumer of the embedded bus. The embedded bus runs one pipeline
/// worker, so a member is assigned every partition of its topics.
struct EmbeddedConsumer {
    bus: EmbeddedBus,
    group: String,
    positions: BTreeMap<(String, u32), u64>,
}

impl EmbeddedConsumer {
    fn read_some(&mut self, max: usize) -> Result<Vec<BusRecord>, BusError> {
        let mut out = Vec::new();
        let keys: Vec<(String, u32)> = self.positions.keys().cloned().collect();
        for (topic, p) in keys {
            if out.len() >= max {
                break;
            }
            let from = self.positions[&(topic.clone(), p)];
            let rows = self.bus.read_from(&topic, p, from, max - out.len())?;
            for (offset, bytes) in rows {
                // Bytes that do not decode go on as an `undecodable` envelope
                // (to quarantine, with the bytes), never stop the consumer.
                let envelope = Envelope::from_bytes(&bytes)
                    .unwrap_or_else(|e| Envelope::undecodable(&topic, p, offset, &bytes, &e.to_string()));
                self.positions.insert((topic.clone(), p), offset + 1);
                out.push(BusRecord { topic: topic.clone(), partition: p, offset, envelope });
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusRecord>, BusError> {
        let notify = Arc::clone(&self.bus.notify);
        let notified = notify.notified();
        let out = self.read_some(max)?;
        if !out.is_empty() {
            return Ok(out);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.read_some(max)
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    async fn commit(&mut self, positions: &[(String, u32, u64)]) -> Result<(), BusError> {
        let bus = self.bus.clone();
        let group = self.group.clone();
        let positions = positions.to_vec();
        blocking(move || {
            let tx = bus.db.begin_write().map_err(|e| bus.err(e))?;
            {
                let mut t = tx.open_table(GROUP_OFFSETS).map_err(|e| bus.err(e))?;
                for (topic, p, off) in &positions {
                    t.insert((group.as_str(), topic.as_str(), *p), *off).map_err(|e| bus.err(e))?;
                }
            }
            tx.commit().map_err(|e| bus.err(e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;

    fn env(k: &str) -> Envelope {
        Envelope::upsert("s", "police", k, serde_json::json!({ "k": k }), None)
    }

    /// A sealed bus holds no record in clear, reads back what was
    /// published, and refuses (naming the batch) without its keys.
    #[tokio::test]
    async fn sealed_batches_hold_no_clear_bytes() {
        use crate::Bus as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(lianqin_seal::Keyring::open(dir.path().join("keys"), [9; 32]).unwrap());
        {
            let bus = EmbeddedBus::open_sealed(dir.path(), Arc::clone(&keys)).unwrap();
            bus.ensure_topic("t", 1).await.unwrap();
            let items: Vec<(String, Vec<u8>)> =
                (0..3).map(|i| (format!("k{i}"), format!("secret 1381234567{i}").into_bytes())).collect();
            bus.publish_raw("t", &items).await.unwrap();
            let got = bus.read_raw("t", 0, 1, 10).unwrap();
            assert_eq!(got, vec![(1, b"secret 13812345671".to_vec()), (2, b"secret 13812345672".to_vec())]);
        }
        let file = std::fs::read(dir.path().join("bus.redb")).unwrap();
        assert!(!file.windows(10).any(|w| w == b"1381234567"), "clear record in bus.redb");
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        let e = bus.read_raw("t", 0, 0, 10).unwrap_err().to_string();
        assert!(e.contains("batch at offset 0") && e.contains("without data keys"), "{e}");
    }

    #[tokio::test]
    async fn publish_consume_checkpoint_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let bus = EmbeddedBus::open(dir.path()).unwrap();
            bus.ensure_topic("raw.s", 3).await.unwrap();
            let recs: Vec<_> = (0..50).map(|i| env(&format!("k{i}"))).collect();
            let cp = Checkpoint { source: "s".into(), value: serde_json::json!({"cursor": 50}) };
            bus.publish("raw.s", &recs, Some(cp)).await.unwrap();
            assert!(bus.publish("nope", &recs, None).await.is_err());
        }
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        assert_eq!(bus.load_checkpoint("s").await.unwrap(), Some(serde_json::json!({"cursor": 50})));
        assert_eq!(bus.end_offsets("raw.s").await.unwrap().iter().sum::<u64>(), 50);
        let lookup: OffsetLookup = Arc::new(|_, _| None);
        let mut c = bus.consumer("g", &["raw.s".to_string()], lookup).await.unwrap();
        let mut got = Vec::new();
        loop {
            let b = c.poll(7, Duration::from_millis(10)).await.unwrap();
            if b.is_empty() {
                break;
            }
            got.extend(b);
        }
        assert_eq!(got.len(), 50);
        let mut keys: Vec<_> = got.iter().map(|r| r.envelope.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 50);
        // Positions from the lookup are honoured: skip everything.
        let ends = bus.end_offsets("raw.s").await.unwrap();
        let lookup: OffsetLookup = Arc::new(move |_, p| Some(ends[p as usize]));
        let mut c = bus.consumer("g", &["raw.s".to_string()], lookup).await.unwrap();
        assert!(c.poll(100, Duration::from_millis(10)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn poll_wakes_on_publish() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        bus.ensure_topic("t", 1).await.unwrap();
        let lookup: OffsetLookup = Arc::new(|_, _| None);
        let mut c = bus.consumer("g", &["t".to_string()], lookup).await.unwrap();
        let b2 = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b2.publish("t", &[env("a")], None).await.unwrap();
        });
        let got = c.poll(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 1);
    }

    /// Offsets are per record whatever the batching: a publish bigger than
    /// one batch value, read from every offset with small and large polls,
    /// after records written one per key (as earlier hubs did), gives every
    /// record once, in order, at its offset.
    #[tokio::test]
    async fn batches_keep_per_record_offsets_after_legacy_records() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        bus.ensure_topic("t", 1).await.unwrap();
        // Three records as an earlier hub stored them: one key each.
        {
            let tx = bus.db.begin_write().unwrap();
            {
                let mut log = tx.open_table(LOG).unwrap();
                let mut ends = tx.open_table(ENDS).unwrap();
                for i in 0..3u64 {
                    let legacy = serde_json::to_vec(&env(&format!("old{i}"))).unwrap();
                    log.insert(("t", 0, i), legacy.as_slice()).unwrap();
                }
                ends.insert(("t", 0), 3).unwrap();
            }
            tx.commit().unwrap();
        }
        let n = BATCH_MAX_RECORDS * 2 + 10;
        let recs: Vec<_> = (0..n).map(|i| env(&format!("k{i}"))).collect();
        bus.publish("t", &recs, None).await.unwrap();
        bus.publish("t", &[env("last")], None).await.unwrap();
        let total = n as u64 + 4;
        assert_eq!(bus.end_offsets("t").await.unwrap(), vec![total]);
        assert_eq!(bus.total_records().unwrap(), total);
        let key_at = |o: u64| match o {
            0..3 => format!("old{o}"),
            o if o == total - 1 => "last".to_string(),
            o => format!("k{}", o - 3),
        };
        for from in [0, 2, 3, 4, 4098, 4099, total - 2, total - 1, total] {
            for max in [1, 7, 5000, 100_000] {
                let got = bus.read_from("t", 0, from, max).unwrap();
                let want = ((total - from) as usize).min(max);
                assert_eq!(got.len(), want, "from {from} max {max}");
                for (i, (off, bytes)) in got.iter().enumerate() {
                    assert_eq!(*off, from + i as u64);
                    assert_eq!(Envelope::from_bytes(bytes).unwrap().key, key_at(*off), "offset {off}");
                }
            }
        }
        // A consumer polling 1 000 at a time sees each record once.
        let lookup: OffsetLookup = Arc::new(|_, _| None);
        let mut c = bus.consumer("g", &["t".to_string()], lookup).await.unwrap();
        let mut seen = 0u64;
        loop {
            let b = c.poll(1000, Duration::from_millis(10)).await.unwrap();
            if b.is_empty() {
                break;
            }
            for r in b {
                assert_eq!(r.offset, seen);
                assert_eq!(r.envelope.key, key_at(seen));
                seen += 1;
            }
        }
        assert_eq!(seen, total);
    }

    #[test]
    fn large_batch_values_are_compressed_and_read_back() {
        use std::borrow::Cow;
        let rec = r#"{"orderNum":"HZ12345-2025-0000001","title":"长兴县煤山镇水污染问题求助","address":"湖州市长兴县煤山镇太湖路222号"}"#;
        let recs: Vec<&[u8]> = vec![rec.as_bytes(); 200];
        let plain = encode_batch(&recs);
        let packed = compress(plain.clone());
        assert!(
            packed.starts_with(&COMPRESSED) && packed.len() * 4 < plain.len(),
            "{} of {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(decompress(Cow::Owned(packed)).unwrap().as_ref(), plain.as_slice());
        // Small values, and values written before compression, as they are.
        let small = encode_batch(&recs[..2]);
        assert_eq!(compress(small.clone()), small);
        assert_eq!(decompress(Cow::Borrowed(plain.as_slice())).unwrap().as_ref(), plain.as_slice());
        let e = decompress(Cow::Borrowed(&[0xFF, 0xFF, 0xFF, 0xFF, 64, 0, 0, 0, 0xF0, 1][..])).unwrap_err();
        assert!(e.contains("does not decompress"), "{e}");
    }

    #[test]
    fn batch_values_split_at_the_limits_and_reject_garbage() {
        let small = vec![0u8; 10];
        let recs: Vec<&[u8]> = vec![small.as_slice(); BATCH_MAX_RECORDS + 1];
        let chunks = batch_chunks(&recs);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![BATCH_MAX_RECORDS, 1]);
        let big = vec![1u8; BATCH_MAX_BYTES];
        let recs: Vec<&[u8]> = vec![small.as_slice(), big.as_slice(), small.as_slice()];
        assert_eq!(batch_chunks(&recs).iter().map(|c| c.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
        let v = encode_batch(&[b"ab", b"", b"c"]);
        assert_eq!(batch_records(&v).unwrap(), vec![&b"ab"[..], &b""[..], &b"c"[..]]);
        assert!(batch_records(&v[..v.len() - 1]).unwrap_err().contains("cut short"));
        assert!(batch_records(&[v.as_slice(), b"x"].concat()).unwrap_err().contains("1 bytes after"));
        assert!(batch_records(&[]).is_err());
    }
}
