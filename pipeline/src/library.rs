//! The shared libraries on disk: Delta Lake tables under `<data-dir>/lake/`.
//!
//! | table directory | SQL names |
//! |---|---|
//! | `lake/element` | `element_history` (every version), `element` (current) |
//! | `lake/matter` | `matter_history`, `matter` |
//! | `lake/matter_event` | `matter_event_history`, `matter_event` |
//! | `lake/quarantine` | `quarantine` |
//! | `lake/raw_<source>` | `raw_<source>` (each distinct record version received) |
//!
//! Tables are append-only: an update is a new version of the row, a delete
//! is a tombstone row (`deleted = true`), and nothing is ever vacuumed away
//! (§7.4.3). The current view of a library is computed over its history.
//!
//! ## Every version stays addressable
//! Tables are created with [`HISTORY_PROPERTIES`]: the Delta log is never
//! cleaned up (delta-rs and Spark default to deleting log entries older
//! than 30 days at each checkpoint, after which a table can no longer be
//! read *as of* an older version), retention durations are a century for
//! engines that honour them, and a checkpoint every 100 commits keeps
//! opening a long log fast. Tables made by an older release get these
//! properties when a hub opens them ([`LibraryStore::ensure`]).
//!
//! ## Exactly-once commits
//! Every commit carries, as Delta application transactions, the next bus
//! offset of each partition it covers (`app_id = lianqin:<topic>:<partition>`,
//! the kafka-delta-ingest pattern). Per batch the library tables are
//! committed first and the source's raw table last; the raw table's
//! transaction is where consumption resumes, and a library table skips
//! records below its own transaction version, so a crash between two
//! commits neither loses nor doubles a row.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tokio::sync::Mutex;

use crate::PipelineError;
use crate::schema::{Catalog, LIBRARIES};

/// Application-transaction id for a bus partition.
pub fn txn_app_id(topic: &str, partition: u32) -> String {
    format!("lianqin:{topic}:{partition}")
}

/// (table, application id) → (table version read at, next offset).
type PositionCache = HashMap<(String, String), (Option<u64>, Option<u64>)>;

/// Parquet files written for a table and not yet committed
/// ([`LibraryStore::stage`]).
#[derive(Debug)]
pub struct Staged {
    table: String,
    adds: Vec<deltalake::kernel::Add>,
}

impl Staged {
    /// The table the files belong to.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// The Delta tables of one data dir.
pub struct LibraryStore {
    root: PathBuf,
    catalog: Arc<Catalog>,
    /// One lock per table, so commits to different tables run side by side.
    tables: Mutex<BTreeMap<String, Arc<Mutex<DeltaTable>>>>,
    /// Positions already read, per table and application id, with the table
    /// version they were read at ([`LibraryStore::position`]).
    positions: std::sync::Mutex<PositionCache>,
    /// Data keys sealing sensitive columns ([`crate::sealed`]).
    keys: crate::sealed::Keys,
}

impl std::fmt::Debug for LibraryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibraryStore").field("root", &self.root).finish()
    }
}

/// Table properties every table is created with (module docs: every
/// version stays addressable).
pub const HISTORY_PROPERTIES: [(&str, &str); 4] = [
    ("delta.enableExpiredLogCleanup", "false"),
    ("delta.logRetentionDuration", "interval 36500 days"),
    ("delta.deletedFileRetentionDuration", "interval 36500 days"),
    ("delta.checkpointInterval", "100"),
];

/// Whether a table's log is kept (never cleaned up).
fn keeps_history(table: &DeltaTable) -> bool {
    table.snapshot().is_ok_and(|s| {
        s.metadata().configuration().get("delta.enableExpiredLogCleanup").map(String::as_str) == Some("false")
    })
}

fn delta_err(table: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Library(format!("table `{table}`: {e}"))
}

impl LibraryStore {
    /// Opens the store under `<data_dir>/lake`, creating the library tables.
    pub async fn open(data_dir: &Path, catalog: Arc<Catalog>) -> Result<Self, PipelineError> {
        let root = data_dir.join("lake");
        std::fs::create_dir_all(&root).map_err(|e| PipelineError::Library(format!("{}: {e}", root.display())))?;
        let keys = crate::sealed::Keys::new(data_dir);
        let store =
            LibraryStore { root, catalog, tables: Mutex::new(BTreeMap::new()), positions: Default::default(), keys };
        for lib in LIBRARIES {
            let schema = store.catalog.arrow_schema(lib)?;
            store.ensure(lib, schema).await?;
        }
        Ok(store)
    }

    /// Opens the tables that exist under `<data_dir>/lake` for reading,
    /// creating nothing (for `lianqin sql` and other readers while a hub
    /// writes).
    pub async fn open_existing(data_dir: &Path, catalog: Arc<Catalog>) -> Result<Self, PipelineError> {
        let root = data_dir.join("lake");
        let keys = crate::sealed::Keys::new(data_dir);
        let store =
            LibraryStore { root, catalog, tables: Mutex::new(BTreeMap::new()), positions: Default::default(), keys };
        let mut names: Vec<String> = LIBRARIES.iter().map(|s| s.to_string()).collect();
        names.extend(store.raw_tables_on_disk());
        for name in names {
            if !store.table_dir(&name).join("_delta_log").is_dir() {
                continue;
            }
            let url = store.url(&name)?;
            let table = DeltaTable::try_from_url(url).await.map_err(|e| delta_err(&name, e))?;
            if table.version().is_some() {
                store.tables.lock().await.insert(name, Arc::new(Mutex::new(table)));
            }
        }
        Ok(store)
    }

    /// Directory of a table.
    pub fn table_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The data keys of this data dir (for readers that open sealed columns).
    pub fn keys(&self) -> &crate::sealed::Keys {
        &self.keys
    }

    /// The `lake` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn url(&self, name: &str) -> Result<url::Url, PipelineError> {
        let dir = self.table_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| delta_err(name, e))?;
        let dir = dir.canonicalize().map_err(|e| delta_err(name, e))?;
        url::Url::from_directory_path(&dir).map_err(|_| delta_err(name, format!("bad path {}", dir.display())))
    }

    /// Creates a table with `schema` if it does not exist, and loads it.
    pub async fn ensure(&self, name: &str, schema: SchemaRef) -> Result<(), PipelineError> {
        let mut tables = self.tables.lock().await;
        if tables.contains_key(name) {
            return Ok(());
        }
        let url = self.url(name)?;
        let table = if self.table_dir(name).join("_delta_log").is_dir() {
            DeltaTable::try_from_url(url).await.map_err(|e| delta_err(name, e))?
        } else {
            deltalake::DeltaTableBuilder::from_url(url).and_then(|b| b.build()).map_err(|e| delta_err(name, e))?
        };
        let table = if table.version().is_none() {
            // Creating with an empty batch writes the schema and no files.
            table
                .write(vec![RecordBatch::new_empty(schema)])
                .with_save_mode(SaveMode::Append)
                .with_table_name(name)
                .with_configuration(HISTORY_PROPERTIES.iter().map(|(k, v)| (*k, Some(*v))))
                .await
                .map_err(|e| delta_err(name, e))?
        } else if keeps_history(&table) {
            table
        } else {
            // Made by an older release: its log would be cleaned up.
            let props = HISTORY_PROPERTIES.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let t = table.set_tbl_properties().with_properties(props).await.map_err(|e| delta_err(name, e))?;
            tracing::info!(table = name, "table properties set so that every version stays addressable");
            t
        };
        tables.insert(name.to_string(), Arc::new(Mutex::new(table)));
        Ok(())
    }

    /// The Delta table properties of a table (`delta.*` and others).
    pub async fn properties(&self, name: &str) -> Option<HashMap<String, String>> {
        let slot = self.slot(name).await?;
        let t = slot.lock().await;
        t.snapshot().ok().map(|s| s.metadata().configuration().clone())
    }

    async fn slot(&self, name: &str) -> Option<Arc<Mutex<DeltaTable>>> {
        self.tables.lock().await.get(name).cloned()
    }

    async fn slots(&self) -> Vec<(String, Arc<Mutex<DeltaTable>>)> {
        self.tables.lock().await.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }

    /// Ensures the raw table of a source exists.
    pub async fn ensure_raw(&self, source: &str) -> Result<(), PipelineError> {
        self.ensure(&raw_table(source), Catalog::raw_schema()).await
    }

    /// Appends rows in one commit that records `positions` (topic,
    /// partition, next offset) as application transactions. Sensitive
    /// columns are sealed first ([`crate::sealed`]). The same as
    /// [`stage`](Self::stage) then [`commit_staged`](Self::commit_staged).
    pub async fn append(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        positions: &[(String, u32, u64)],
    ) -> Result<(), PipelineError> {
        let staged = self.stage(name, batches).await?;
        self.commit_staged(staged, positions).await
    }

    /// Writes rows as Parquet files of a table without committing them:
    /// sealing and encoding, the costly part of an append, can run beside
    /// other work while the commit waits for its turn (the hub stages the
    /// raw table while the libraries commit; the raw commit must come last).
    /// Files of a stage never committed (a crash, a failed batch) are not
    /// part of any table version: readers never see them.
    pub async fn stage(&self, name: &str, batches: Vec<RecordBatch>) -> Result<Staged, PipelineError> {
        use deltalake::writer::{DeltaWriter, RecordBatchWriter};
        let sealed = crate::sealed::sealed_columns(&self.catalog, name);
        let batches = if sealed.is_empty() {
            batches
        } else {
            batches
                .into_iter()
                .map(|b| crate::sealed::seal_batch(&self.keys, name, &sealed, b))
                .collect::<Result<Vec<_>, _>>()?
        };
        let slot = self.slot(name).await.ok_or_else(|| delta_err(name, "not opened"))?;
        let table = slot.lock().await.clone();
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| delta_err(name, e))?
            .with_writer_properties(writer_properties(&sealed));
        for b in batches {
            writer.write(b).await.map_err(|e| delta_err(name, e))?;
        }
        let adds = writer.flush().await.map_err(|e| delta_err(name, e))?;
        Ok(Staged { table: name.to_string(), adds })
    }

    /// Commits a [`stage`](Self::stage) in one Delta commit that records
    /// `positions` (topic, partition, next offset) as application
    /// transactions.
    pub async fn commit_staged(&self, staged: Staged, positions: &[(String, u32, u64)]) -> Result<(), PipelineError> {
        use deltalake::kernel::Action;
        use deltalake::kernel::transaction::CommitBuilder;
        use deltalake::protocol::DeltaOperation;
        let name = staged.table.as_str();
        let slot = self.slot(name).await.ok_or_else(|| delta_err(name, "not opened"))?;
        let mut current = slot.lock().await;
        let txns: Vec<Transaction> =
            positions.iter().map(|(t, p, o)| Transaction::new(txn_app_id(t, *p), *o as i64)).collect();
        let props = CommitProperties::default().with_application_transactions(txns);
        let before = current.version();
        let snapshot = current.snapshot().map_err(|e| delta_err(name, e))?;
        let operation = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        let finalized = CommitBuilder::from(props)
            .with_actions(staged.adds.into_iter().map(Action::Add).collect())
            .build(Some(snapshot), current.log_store(), operation)
            .await
            .map_err(|e| delta_err(name, e))?;
        current.state = Some(finalized.snapshot());
        self.remember_commit(name, before, current.version(), positions);
        Ok(())
    }

    /// Keeps the position cache true after our own commit: the positions it
    /// carried are known; the others still hold when the commit came right
    /// after the version they were read at (no other writer in between),
    /// and are forgotten otherwise.
    fn remember_commit(&self, name: &str, before: Option<u64>, after: Option<u64>, positions: &[(String, u32, u64)]) {
        let Ok(mut cache) = self.positions.lock() else { return };
        let only_ours = matches!((before, after), (Some(b), Some(a)) if a == b + 1);
        cache.retain(|(t, _), (v, _)| {
            if t != name {
                return true;
            }
            if only_ours && *v == before {
                *v = after;
                return true;
            }
            false
        });
        for (topic, p, o) in positions {
            cache.insert((name.to_string(), txn_app_id(topic, *p)), (after, Some(*o)));
        }
    }

    /// The next offset recorded for a partition in a table (None = never).
    ///
    /// Answered from memory when the table is still at the version the
    /// position was last read or written at (our own commits keep it true);
    /// read from the Delta log only when the table moved otherwise (another
    /// writer committed and [`LibraryStore::refresh`] loaded it).
    pub async fn position(&self, name: &str, topic: &str, partition: u32) -> Result<Option<u64>, PipelineError> {
        let Some(slot) = self.slot(name).await else { return Ok(None) };
        let table = slot.lock().await;
        let version = table.version();
        let app_id = txn_app_id(topic, partition);
        let cache_key = (name.to_string(), app_id);
        if let Ok(cache) = self.positions.lock()
            && let Some((v, pos)) = cache.get(&cache_key)
            && *v == version
        {
            return Ok(*pos);
        }
        let Ok(state) = table.snapshot() else { return Ok(None) };
        let v = state
            .transaction_version(table.log_store().as_ref(), cache_key.1.clone())
            .await
            .map_err(|e| delta_err(name, e))?;
        let pos = v.map(|v| v.max(0) as u64);
        if let Ok(mut cache) = self.positions.lock() {
            cache.insert(cache_key, (version, pos));
        }
        Ok(pos)
    }

    /// Reloads every table from disk (for readers while a hub writes).
    pub async fn refresh(&self) -> Result<(), PipelineError> {
        for (name, slot) in self.slots().await {
            slot.lock().await.update_state().await.map_err(|e| delta_err(&name, e))?;
        }
        Ok(())
    }

    /// Reloads the named tables from disk (a worker before a batch: only
    /// the tables the batch writes, not every source's raw table).
    pub async fn refresh_tables(&self, names: &[&str]) -> Result<(), PipelineError> {
        for name in names {
            if let Some(slot) = self.slot(name).await {
                slot.lock().await.update_state().await.map_err(|e| delta_err(name, e))?;
            }
        }
        Ok(())
    }

    /// Compacts small files of every loaded table (bin-packing into larger
    /// Parquet files). The old files stay in the Delta log's history and on
    /// disk — nothing is vacuumed (§7.4.3) — so every earlier version stays
    /// readable by time travel. Returns (table, files removed, files added).
    pub async fn compact(&self) -> Result<Vec<(String, u64, u64)>, PipelineError> {
        self.compact_with(|_, _, _| {}).await
    }

    /// [`compact`](Self::compact), calling `before(i, n, table)` before
    /// each of the `n` tables (progress).
    pub async fn compact_with(
        &self,
        mut before: impl FnMut(usize, usize, &str),
    ) -> Result<Vec<(String, u64, u64)>, PipelineError> {
        let mut out = Vec::new();
        let slots = self.slots().await;
        let n = slots.len();
        for (i, (name, slot)) in slots.into_iter().enumerate() {
            before(i, n, &name);
            let mut current = slot.lock().await;
            let (t, m) = current
                .clone()
                .optimize()
                .with_type(deltalake::operations::optimize::OptimizeType::Compact)
                .await
                .map_err(|e| delta_err(&name, e))?;
            out.push((name.clone(), m.num_files_removed, m.num_files_added));
            *current = t;
        }
        Ok(out)
    }

    /// The id of a table (its Delta metadata id): another id means the
    /// table was deleted and created again.
    pub async fn table_id(&self, name: &str) -> Option<String> {
        let slot = self.slot(name).await?;
        let t = slot.lock().await;
        t.snapshot().ok().map(|s| s.metadata().id().to_string())
    }

    /// Current Delta version of a table as loaded.
    pub async fn version(&self, name: &str) -> Option<i64> {
        let slot = self.slot(name).await?;
        let v = slot.lock().await.version();
        v.map(|v| v as i64)
    }

    /// Names of the raw tables present on disk.
    pub fn raw_tables_on_disk(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with("raw_") && e.path().join("_delta_log").is_dir() {
                    out.push(n);
                }
            }
        }
        out.sort();
        out
    }

    /// The loaded Delta table (a clone of the handle) for queries.
    pub async fn table(&self, name: &str) -> Option<DeltaTable> {
        let slot = self.slot(name).await?;
        let t = slot.lock().await.clone();
        Some(t)
    }
}

/// Columns whose values are (nearly) all distinct: whole records, hashes,
/// keys, free text. Parquet would try a dictionary for each and give up
/// after a page; they are written plain from the start.
const DISTINCT_COLUMNS: &[&str] = &[
    "payload",
    "raw",
    "content_hash",
    "source_key",
    "source_locator",
    "locator",
    "reason",
    "quarantine_id",
    "matter_id",
    "element_id",
    "event_id",
    "title",
    "content",
    "address",
    "attributes",
    "bus_offset",
    "fetched_at",
];

/// Parquet settings of every commit: Snappy (Delta's default) and no
/// dictionary for [`DISTINCT_COLUMNS`]; the `sealed` columns (ciphertext,
/// [`crate::sealed`]) neither compressed (it would not shrink), nor
/// dictionary-encoded, nor with statistics (min/max of ciphertext serve no
/// query and need not sit in the Delta log).
fn writer_properties(sealed: &[String]) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use deltalake::parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_created_by(format!("lianqin {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY);
    for c in DISTINCT_COLUMNS {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    for c in sealed {
        b = b
            .set_column_compression(ColumnPath::from(c.as_str()), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(ColumnPath::from(c.as_str()), false)
            .set_column_statistics_enabled(ColumnPath::from(c.as_str()), EnabledStatistics::None);
    }
    b.build()
}

/// The library rows of `source`'s record versions (`source_key`,
/// `content_hash`, `t` = ingested µs) from each history table in `tables`,
/// as one `UNION ALL`; `None` when no history table is there yet. What
/// replay, status and reconciliation call "landed".
pub fn landed_versions_sql(tables: &[String], source: &str) -> Option<String> {
    let s = source.replace('\'', "''");
    let parts: Vec<String> = ["element_history", "matter_history", "matter_event_history"]
        .iter()
        .filter(|t| tables.iter().any(|n| n == *t))
        .map(|t| {
            format!(
                "SELECT source_key, content_hash, CAST(ingested_at AS BIGINT) AS t FROM {t} WHERE source_id = '{s}'"
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" UNION ALL "))
}

/// The raw table name of a source.
pub fn raw_table(source: &str) -> String {
    format!("raw_{source}")
}

#[cfg(test)]
mod tests {
    use lianqin_bus::{BusRecord, Envelope};

    use super::*;

    fn records(n: usize) -> Vec<BusRecord> {
        (0..n)
            .map(|i| BusRecord {
                topic: "raw.s".into(),
                partition: 0,
                offset: i as u64,
                envelope: Envelope::upsert("s", "police", i.to_string(), serde_json::json!({"id": i}), None),
            })
            .collect()
    }

    async fn rows(s: &LibraryStore, catalog: &Catalog) -> i64 {
        let e = crate::query::QueryEngine::new(s, catalog).await.unwrap();
        e.scalar_i64(&format!("SELECT count(*) FROM {}", raw_table("s"))).await.unwrap()
    }

    /// Files staged and never committed (a crash, a failed batch) belong to
    /// no version: readers, positions and a reopened store see only the
    /// committed stage, once, with its positions.
    #[tokio::test]
    async fn a_stage_is_invisible_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::builtin().unwrap();
        let store = LibraryStore::open(dir.path(), Arc::clone(&catalog)).await.unwrap();
        store.ensure_raw("s").await.unwrap();
        let name = raw_table("s");
        let recs = records(5);
        let refs: Vec<&BusRecord> = recs.iter().collect();
        let batch = crate::normalize::raw_batch(&refs, 1).unwrap();
        let created = store.version(&name).await;

        let abandoned = store.stage(&name, vec![batch.clone()]).await.unwrap();
        drop(abandoned);
        let staged = store.stage(&name, vec![batch]).await.unwrap();
        assert_eq!(store.version(&name).await, created, "staging commits nothing");
        assert_eq!(store.position(&name, "raw.s", 0).await.unwrap(), None);
        assert_eq!(rows(&store, &catalog).await, 0);

        store.commit_staged(staged, &[("raw.s".into(), 0, 5)]).await.unwrap();
        assert_eq!(store.version(&name).await, created.map(|v| v + 1));
        assert_eq!(store.position(&name, "raw.s", 0).await.unwrap(), Some(5));
        assert_eq!(rows(&store, &catalog).await, 5);
        let reopened = LibraryStore::open_existing(dir.path(), Arc::clone(&catalog)).await.unwrap();
        assert_eq!(reopened.position(&name, "raw.s", 0).await.unwrap(), Some(5));
        assert_eq!(rows(&reopened, &catalog).await, 5, "the abandoned stage's files are in no version");
    }

    /// Appends `n` one-row commits to raw table `s`.
    async fn commits(store: &LibraryStore, source: &str, n: u64) {
        let name = raw_table(source);
        for _ in 0..n {
            let from = store.position(&name, "raw.s", 0).await.unwrap().unwrap_or(0);
            let recs: Vec<BusRecord> = records(1)
                .into_iter()
                .map(|mut r| {
                    r.offset = from;
                    r
                })
                .collect();
            let refs: Vec<&BusRecord> = recs.iter().collect();
            let batch = crate::normalize::raw_batch(&refs, 1).unwrap();
            store.append(&name, vec![batch], &[("raw.s".into(), 0, from + 1)]).await.unwrap();
        }
    }

    async fn version_zero_readable(store: &LibraryStore, source: &str) -> bool {
        let url = store.url(&raw_table(source)).unwrap();
        deltalake::DeltaTableBuilder::from_url(url).unwrap().with_version(0).load().await.is_ok()
    }

    /// With a retention as short as a second and checkpoints every two
    /// commits, every version of a hub's table stays readable; the same
    /// table with log cleanup on (delta-rs' default) loses its first
    /// versions — what the properties prevent.
    #[tokio::test]
    async fn every_version_stays_addressable_with_a_short_log_retention() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::builtin().unwrap();
        let store = LibraryStore::open(dir.path(), Arc::clone(&catalog)).await.unwrap();
        for (source, cleanup) in [("kept", "false"), ("cleaned", "true")] {
            store.ensure_raw(source).await.unwrap();
            let props = store.properties(&raw_table(source)).await.unwrap();
            for (k, v) in HISTORY_PROPERTIES {
                assert_eq!(props.get(k).map(String::as_str), Some(v), "{k}");
            }
            let t = DeltaTable::try_from_url(store.url(&raw_table(source)).unwrap()).await.unwrap();
            let short: HashMap<String, String> = [
                ("delta.logRetentionDuration", "interval 1 second"),
                ("delta.checkpointInterval", "2"),
                ("delta.enableExpiredLogCleanup", cleanup),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            t.set_tbl_properties().with_properties(short).await.unwrap();
        }
        store.refresh().await.unwrap();
        for source in ["kept", "cleaned"] {
            commits(&store, source, 3).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        for source in ["kept", "cleaned"] {
            commits(&store, source, 3).await;
        }
        assert!(version_zero_readable(&store, "kept").await, "a hub table keeps version 0 addressable");
        assert!(!version_zero_readable(&store, "cleaned").await, "with log cleanup on, version 0 is gone");
    }

    /// A table made without the properties (an older release) gets them
    /// when a hub opens it.
    #[tokio::test]
    async fn tables_of_an_older_release_get_the_history_properties() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::builtin().unwrap();
        let path = dir.path().join("lake").join(raw_table("old"));
        std::fs::create_dir_all(&path).unwrap();
        let url = url::Url::from_directory_path(path.canonicalize().unwrap()).unwrap();
        let t = deltalake::DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
        t.write(vec![RecordBatch::new_empty(Catalog::raw_schema())]).with_save_mode(SaveMode::Append).await.unwrap();
        let store = LibraryStore::open(dir.path(), Arc::clone(&catalog)).await.unwrap();
        store.ensure_raw("old").await.unwrap();
        let props = store.properties(&raw_table("old")).await.unwrap();
        assert_eq!(props.get("delta.enableExpiredLogCleanup").map(String::as_str), Some("false"));
    }
}
