//! The embedded bus: topics, partitions and offsets in a redb database.
//!
//! redb is an ACID embedded key-value store (copy-on-write B-trees, fsync on
//! commit); we do not hand-roll a log format. Layout:
//!
//! | table | key | value |
//! |---|---|---|
//! | `topics` | topic | partition count |
//! | `log` | (topic, partition, offset) | record bytes |
//! | `ends` | (topic, partition) | next offset |
//! | `checkpoints` | source id | checkpoint JSON |
//! | `group_offsets` | (group, topic, partition) | next offset |
//!
//! One process owns the store at a time (redb takes a file lock), which is
//! the embedded default's single-machine deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;

use crate::{BusError, BusRecord, Checkpoint, Consumer, Envelope, OffsetLookup, partition_for};

const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("topics");
const LOG: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("log");
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("ends");
const CHECKPOINTS: TableDefinition<&str, &str> = TableDefinition::new("checkpoints");
const GROUP_OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("group_offsets");

/// The embedded, durable bus (one file, `bus.redb`, under the data dir).
#[derive(Clone)]
pub struct EmbeddedBus {
    db: Arc<Database>,
    path: PathBuf,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus").field("path", &self.path).finish()
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the bus store at `dir/bus.redb`.
    pub fn open(dir: &Path) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        let path = dir.join("bus.redb");
        let db = Database::create(&path).map_err(|e| store_err(&path, e))?;
        let bus = EmbeddedBus { db: Arc::new(db), path, notify: Arc::new(Notify::new()) };
        // Create all tables up front so readers never see a missing table.
        let tx = bus.db.begin_write().map_err(|e| bus.err(e))?;
        {
            tx.open_table(TOPICS).map_err(|e| bus.err(e))?;
            tx.open_table(LOG).map_err(|e| bus.err(e))?;
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
        t.len().map_err(|e| self.err(e))
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
            let mut log = tx.open_table(LOG).map_err(|e| self.err(e))?;
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            for (p, bytes) in &items {
                let off = match next.get(p) {
                    Some(o) => *o,
                    None => ends.get((topic, *p)).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0),
                };
                log.insert((topic, *p, off), bytes.as_slice()).map_err(|e| self.err(e))?;
                next.insert(*p, off + 1);
            }
            for (p, off) in next {
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
        let log = tx.open_table(LOG).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let range = log.range((topic, partition, from)..(topic, partition, u64::MAX)).map_err(|e| self.err(e))?;
        for item in range.take(max) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.value().2, v.value().to_vec()));
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

    fn group_offset(&self, group: &str, topic: &str, p: u32) -> Result<Option<u64>, BusError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(GROUP_OFFSETS).map_err(|e| self.err(e))?;
        Ok(t.get((group, topic, p)).map_err(|e| self.err(e))?.map(|v| v.value()))
    }
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
}
