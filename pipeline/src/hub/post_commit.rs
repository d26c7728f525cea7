//! Post-commit steps: what happens to the rows of a library once they are
//! committed — the change feeds (`changes.<library>` topics) and the
//! per-department flows (`[[flows]]`), and later sinks.
//!
//! A step implements [`PostCommit`]; the hub calls every registered step,
//! in registration order, after each library commit of a batch and before
//! the raw table commit ([`crate::hub::Hub::with_post_commit`] adds one).
//! A step whose libraries do not share anything (each library its own
//! topic: [`ChangeFeed`]) says so with
//! [`PostCommit::libraries_independent`], and the hub then runs it for the
//! batch's libraries side by side, each as soon as that library committed;
//! the other steps run one library after the other. A
//! step gets every row of the batch, also rows a library already held after
//! a crash, so the guarantee of every step is **at-least-once, in order per
//! key**; consumers dedupe by `content_hash`. A step that fails fails the
//! batch, which is then retried from the last commit.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use async_trait::async_trait;
use lianqin_bus::Bus;

use crate::PipelineError;
use crate::schema::Catalog;

/// A step run after each library commit (see the module docs).
#[async_trait]
pub trait PostCommit: Send + Sync {
    /// Name of the step (logs).
    fn name(&self) -> &str;

    /// Hands over the committed rows `batch` of `library` (`element`,
    /// `matter`, `matter_event` or `quarantine`).
    async fn after_commit(&self, library: &str, batch: &RecordBatch) -> Result<(), PipelineError>;

    /// Whether the step may run for several libraries of one batch at the
    /// same time (its work for one library touches nothing of another's).
    /// Order per key still holds: a library's rows of one batch go in one
    /// call, and the hub waits for every call before the next batch.
    fn libraries_independent(&self) -> bool {
        false
    }
}

/// The change feeds: one event per library row to `<prefix>changes.<library>`,
/// keyed by the library id (so per-key order holds on every partition).
/// Quarantine rows are not published. The feeds carry every department's
/// rows (they are the hub's own, not a department's: those are the flows'
/// `feeds.<department>` topics), so their sensitive columns are sealed as
/// in the lake ([`crate::sealed`]) when the feed has the data keys: a
/// reader of the topic without them sees `lqe1:…`.
pub struct ChangeFeed {
    bus: Arc<dyn Bus>,
    catalog: Arc<Catalog>,
    prefix: String,
    keys: Option<crate::sealed::Keys>,
}

impl ChangeFeed {
    /// Change feeds on `bus` under the topic prefix `prefix` (the topics must
    /// exist).
    pub fn new(bus: Arc<dyn Bus>, catalog: Arc<Catalog>, prefix: &str) -> ChangeFeed {
        ChangeFeed { bus, catalog, prefix: prefix.to_string(), keys: None }
    }

    /// Seals the sensitive columns of every event with `keys`.
    pub fn with_sealing(mut self, keys: crate::sealed::Keys) -> ChangeFeed {
        self.keys = Some(keys);
        self
    }
}

/// Rows sealed and written as JSON at a time by [`ChangeFeed`].
const FEED_PART_ROWS: usize = 4096;

#[async_trait]
impl PostCommit for ChangeFeed {
    fn name(&self) -> &str {
        "change feed"
    }

    /// Each library has its own topic.
    fn libraries_independent(&self) -> bool {
        true
    }

    async fn after_commit(&self, lib: &str, batch: &RecordBatch) -> Result<(), PipelineError> {
        if batch.num_rows() == 0 || lib == "quarantine" {
            return Ok(());
        }
        let key_col = self.catalog.library(lib)?.key.clone();
        let sealed_columns = match &self.keys {
            Some(_) => crate::sealed::sealed_columns(&self.catalog, lib),
            None => Vec::new(),
        };
        // Part by part: only one part's sealed copy and JSON text are held
        // beside the events (which the producer needs whole).
        let mut items = Vec::with_capacity(batch.num_rows());
        let mut buf = Vec::new();
        let mut start = 0;
        while start < batch.num_rows() {
            let len = FEED_PART_ROWS.min(batch.num_rows() - start);
            let part = batch.slice(start, len);
            let part = match &self.keys {
                Some(keys) => crate::sealed::seal_batch(keys, lib, &sealed_columns, part)?,
                None => part,
            };
            start += len;
            buf.clear();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                w.write(&part).map_err(|e| PipelineError::Internal(format!("change feed {lib}: {e}")))?;
                w.finish().map_err(|e| PipelineError::Internal(format!("change feed {lib}: {e}")))?;
            }
            let keys = part.column_by_name(&key_col).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let deleted =
                part.column_by_name("deleted").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
            for (i, line) in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                let key = keys.as_ref().map(|k| k.value(i).to_string()).unwrap_or_default();
                let op =
                    if deleted.as_ref().is_some_and(|d| d.is_valid(i) && d.value(i)) { "delete" } else { "upsert" };
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
        }
        let topic = lianqin_bus::change_topic(&self.prefix, lib);
        self.bus.publish_raw(&topic, &items).await.map_err(PipelineError::Bus)
    }
}

/// The department flows ([`crate::flows`]): the rows each flow's user may
/// see, appended to the flow's sink.
#[async_trait]
impl PostCommit for crate::flows::Flows {
    fn name(&self) -> &str {
        "flows"
    }

    async fn after_commit(&self, library: &str, batch: &RecordBatch) -> Result<(), PipelineError> {
        self.deliver(library, batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use lianqin_bus::EmbeddedBus;

    /// A batch of several parts: one event per row, in row order, each with
    /// its own row's id, op and values (the parts' row numbers restart).
    #[tokio::test]
    async fn a_batch_of_many_parts_gives_one_event_per_row_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(EmbeddedBus::open(dir.path()).unwrap());
        let topic = lianqin_bus::change_topic("p.", "matter");
        bus.ensure_topic(&topic, 1).await.unwrap();
        let n = FEED_PART_ROWS * 2 + 7;
        let schema = Arc::new(Schema::new(vec![
            Field::new("matter_id", DataType::Utf8, false),
            Field::new("deleted", DataType::Boolean, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from((0..n).map(|i| format!("m{i}")).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from((0..n).map(|i| Some(i % 5 == 0)).collect::<Vec<_>>())),
                Arc::new(StringArray::from((0..n).map(|i| format!("line\n{i}")).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let feed = ChangeFeed::new(Arc::clone(&bus) as Arc<dyn Bus>, Catalog::builtin().unwrap(), "p.");
        feed.after_commit("matter", &batch).await.unwrap();
        let got = bus.read_raw(&topic, 0, 0, n + 10).unwrap();
        assert_eq!(got.len(), n);
        for (i, (offset, value)) in got.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            let ev: serde_json::Value = serde_json::from_slice(value).unwrap();
            assert_eq!(ev["library"], "matter");
            assert_eq!(ev["id"], format!("m{i}"), "event {i}");
            assert_eq!(ev["op"], if i % 5 == 0 { "delete" } else { "upsert" }, "event {i}");
            assert_eq!(ev["row"]["matter_id"], format!("m{i}"), "event {i}");
            assert_eq!(ev["row"]["note"], format!("line\n{i}"), "event {i}");
        }
    }
}
