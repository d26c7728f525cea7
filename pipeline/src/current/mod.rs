//! Current state of a library kept as a snapshot (issue 12 item 8), so that
//! an analyst's query over `matter` costs a scan of one Parquet file instead
//! of re-aggregating all history.
//!
//! The current state of a key is, per column, its newest non-null value
//! over the key's versions in `<library>_history`, ordered by
//! `(ingested_at, row_seq)`, plus `deleted` of the newest version, the
//! distinct `sources` and the number of `versions` ([`full_sql`], the same
//! rule as [`crate::query::current_view_sql`]).
//!
//! [`CurrentTable`] (SQL name `<library>_current`) serves it from a snapshot
//! under `<data dir>/current/<library>/`: `snap-*.parquet` plus `meta.json`
//! naming the history files it covers. When read it compares those files
//! with the history table's files at the version the session opened:
//! * the same files: the snapshot is the current state, scanned as is;
//! * more files (new commits): only the keys of the new rows are
//!   re-aggregated — the snapshot row of such a key counts as older than any
//!   new row ([`incremental_sql`]) — the rest is kept, and a new snapshot is
//!   written (temporary file, fsync, rename, then `meta.json` the same way);
//! * anything else (no snapshot, a file gone, a new row not newer than every
//!   snapshot row — two writers with skewed clocks —, another schema): the
//!   whole history is aggregated again.
//!
//! A snapshot is built in one streaming pass ([`fold::Folder`]) over the
//! versions sorted by key ([`full_fold_sql`]); the sort spills to disk past
//! [`BUILD_MEMORY`], so building it holds a bounded amount of memory
//! whatever the history's size ([`full_sql`], the same rule as an ordered
//! aggregate, holds every key's state at once: ~10 KB per key; it stays the
//! reference and serves read-only data dirs).
//!
//! The snapshot is a cache: deleting `current/` loses nothing; a data dir
//! that cannot be written still answers (the state is computed per query).
//! It holds what `<library>_history` holds (already tokenized; masks apply
//! when read) and nothing else, its sensitive columns sealed as in the
//! lake ([`crate::sealed`]).
//!
//! Only libraries whose key belongs to one source ([`SNAPSHOT_LIBRARIES`]:
//! a matter id is `<source>:<key>`, an event id contains its source) are
//! served this way: there the policy's row filters (`department = @dept`)
//! select the same keys on current rows as on versions. `element` merges
//! versions from several departments into one row, so its row filters must
//! apply to versions before aggregation and it stays a view over history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::PipelineError;
use crate::schema::Catalog;

pub mod fold;

/// Libraries served from a snapshot (see the module docs).
pub const SNAPSHOT_LIBRARIES: &[&str] = &["matter", "matter_event"];

/// SQL name of the snapshot-backed current state of `library`.
pub fn table_name(library: &str) -> String {
    format!("{library}_current")
}

/// Snapshot folder of `library` in a data dir.
pub fn snapshot_dir(data_dir: &Path, library: &str) -> PathBuf {
    data_dir.join("current").join(library)
}

/// `meta.json`: what a snapshot covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    /// The snapshot file (in the same folder).
    snapshot: String,
    /// History files (names in the Delta table folder) it covers.
    files: Vec<String>,
    /// Newest `ingested_at` (µs) among the rows it covers.
    max_ingested_at: Option<i64>,
    /// The history schema it was computed from.
    schema: String,
    /// Rows (keys, deleted ones included).
    rows: u64,
}

/// The columns of a library's current state, in order: (name, how it is
/// aggregated from rows ordered by `o`).
fn agg_columns(catalog: &Catalog, library: &str) -> Result<(String, Vec<String>), PipelineError> {
    let lib = catalog.library(library)?;
    let cols = lib.all_columns(&catalog.provenance).filter(|c| c.name != lib.key).map(|c| c.name.clone()).collect();
    Ok((lib.key.clone(), cols))
}

fn aggregates(cols: &[String], order: &str) -> Vec<String> {
    cols.iter()
        .map(|n| {
            if n == "deleted" {
                format!("last_value(deleted ORDER BY {order}) AS deleted")
            } else {
                format!("last_value(\"{n}\" ORDER BY {order}) FILTER (WHERE \"{n}\" IS NOT NULL) AS \"{n}\"")
            }
        })
        .collect()
}

/// The current state of every key of table `h` (history rows).
pub fn full_sql(catalog: &Catalog, library: &str) -> Result<String, PipelineError> {
    let (key, cols) = agg_columns(catalog, library)?;
    let mut out = aggregates(&cols, "ingested_at, row_seq");
    out.push("array_to_string(array_sort(array_agg(DISTINCT source_id)), ',') AS sources".into());
    out.push("count(*) AS versions".into());
    Ok(format!("SELECT \"{key}\", {} FROM h GROUP BY \"{key}\"", out.join(", ")))
}

/// `SELECT` list of the snapshot's columns, quoted.
fn column_list(catalog: &Catalog, library: &str) -> Result<(String, String), PipelineError> {
    let (key, cols) = agg_columns(catalog, library)?;
    Ok((key, cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")))
}

/// Every history row of `h` in the shape [`fold::Folder`] reads, sorted by
/// key then `(ingested_at, row_seq)`.
pub fn full_fold_sql(catalog: &Catalog, library: &str) -> Result<String, PipelineError> {
    let (key, list) = column_list(catalog, library)?;
    Ok(format!(
        "SELECT \"{key}\", {list}, CAST(source_id AS VARCHAR) AS sources, CAST(1 AS BIGINT) AS versions, \
                CAST(ingested_at AS BIGINT) AS _o1, CAST(row_seq AS BIGINT) AS _o2 \
           FROM h ORDER BY \"{key}\", _o1, _o2"
    ))
}

/// Incremental refresh from snapshot `snap` and new history rows `new`
/// (every new row newer than every snapshot row): the snapshot rows of keys
/// without new rows, kept as they are, and the rows to fold — the snapshot
/// row of each touched key (ordered before any new row) and the new rows.
pub fn incremental_sql(catalog: &Catalog, library: &str) -> Result<(String, String), PipelineError> {
    let (key, list) = column_list(catalog, library)?;
    let keep = format!(
        "SELECT \"{key}\", {list}, sources, versions FROM snap \
          WHERE \"{key}\" NOT IN (SELECT DISTINCT \"{key}\" FROM new)"
    );
    let fold = format!(
        "SELECT \"{key}\", {list}, CAST(sources AS VARCHAR) AS sources, CAST(versions AS BIGINT) AS versions, \
                CAST(-9223372036854775807 AS BIGINT) AS _o1, CAST(0 AS BIGINT) AS _o2 \
           FROM snap WHERE \"{key}\" IN (SELECT DISTINCT \"{key}\" FROM new) \
         UNION ALL \
         SELECT \"{key}\", {list}, CAST(source_id AS VARCHAR) AS sources, CAST(1 AS BIGINT) AS versions, \
                CAST(ingested_at AS BIGINT) AS _o1, CAST(row_seq AS BIGINT) AS _o2 FROM new \
         ORDER BY \"{key}\", _o1, _o2"
    );
    Ok((keep, fold))
}

fn df_err(what: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Query(format!("{what}: {e}"))
}

/// How [`CurrentTable::refresh`] obtained the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The snapshot on disk covers every history file.
    Reused,
    /// Only the keys of new history rows were re-aggregated.
    Incremental,
    /// All history was aggregated (no usable snapshot).
    Full,
    /// Computed for this query only (the snapshot folder is not writable).
    PerQuery,
}

/// The snapshot-backed current state of one library (see the module docs).
pub struct CurrentTable {
    library: String,
    catalog: Catalog,
    /// `<library>_history` as queries read it (legacy rows already fixed).
    history: Arc<dyn TableProvider>,
    /// Plain Parquet reading of history files (for the new ones); the same
    /// schema as the Delta table.
    history_schema: SchemaRef,
    /// The Delta table's folder (file URIs are relative to it).
    table_dir: PathBuf,
    /// History file names at the version this session reads.
    files: Vec<String>,
    /// Snapshot folder (None: compute per query).
    dir: Option<PathBuf>,
    schema: SchemaRef,
    /// Seals the snapshot's sensitive columns, opens them when read.
    keys: crate::sealed::Keys,
}

impl std::fmt::Debug for CurrentTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentTable").field("library", &self.library).field("dir", &self.dir).finish()
    }
}

impl CurrentTable {
    /// The current state of `library` over `history` (the provider queries
    /// read as `<library>_history`), whose Delta table in `table_dir` holds
    /// `files` at the version `history` reads; snapshots kept in `dir`.
    pub async fn new(
        catalog: &Catalog,
        library: &str,
        history: Arc<dyn TableProvider>,
        table_dir: PathBuf,
        files: Vec<String>,
        dir: Option<PathBuf>,
        keys: &crate::sealed::Keys,
    ) -> Result<Self, PipelineError> {
        let history_schema = history.schema();
        let ctx = SessionContext::new();
        ctx.register_table("h", Arc::clone(&history)).map_err(|e| df_err(library, e))?;
        let df = ctx.sql(&full_sql(catalog, library)?).await.map_err(|e| df_err(library, e))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        Ok(CurrentTable {
            library: library.to_string(),
            catalog: catalog.clone(),
            history,
            history_schema,
            table_dir,
            files,
            dir,
            schema,
            keys: keys.clone(),
        })
    }

    /// A snapshot file read back, its sealed columns opened.
    fn open_snapshot(&self, df: DataFrame) -> Arc<dyn TableProvider> {
        crate::sealed::open_table(&self.keys, &self.catalog, &self.library, df.into_view())
    }

    fn schema_tag(&self) -> String {
        self.history_schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn read_meta(&self) -> Option<Meta> {
        let dir = self.dir.as_ref()?;
        let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
        let meta: Meta = serde_json::from_str(&text)
            .map_err(|e| tracing::warn!(library = %self.library, error = %e, "current state: meta.json unreadable, recomputing"))
            .ok()?;
        (meta.schema == self.schema_tag() && dir.join(&meta.snapshot).is_file()).then_some(meta)
    }

    /// What to do for the current state in `ctx` (see [`Plan`]).
    async fn compute(&self, ctx: &SessionContext) -> Result<Plan, PipelineError> {
        let lib = self.library.as_str();
        if let Some(meta) = self.read_meta() {
            let covered: std::collections::HashSet<&str> = meta.files.iter().map(String::as_str).collect();
            let present: std::collections::HashSet<&str> = self.files.iter().map(String::as_str).collect();
            if covered.is_subset(&present) {
                let dir = self.dir.as_ref().expect("meta implies dir");
                let snap = dir.join(&meta.snapshot).to_string_lossy().to_string();
                let new: Vec<String> = self
                    .files
                    .iter()
                    .filter(|f| !covered.contains(f.as_str()))
                    .map(|f| self.table_dir.join(f).to_string_lossy().to_string())
                    .collect();
                let snap_df = ctx
                    .read_parquet(snap, ParquetReadOptions::default().schema(&self.schema))
                    .await
                    .map_err(|e| df_err(lib, e))?;
                if new.is_empty() {
                    return Ok(Plan::Reused(self.open_snapshot(snap_df)));
                }
                let new_df = ctx
                    .read_parquet(new, ParquetReadOptions::default().schema(&self.history_schema))
                    .await
                    .map_err(|e| df_err(lib, e))?;
                // Sealed columns opened, legacy rows read through the same
                // rules as `<library>_history`.
                let new_provider = crate::sealed::open_table(&self.keys, &self.catalog, lib, new_df.into_view());
                let new_provider =
                    crate::legacy::history_view(lib, &format!("{lib}_history"), new_provider, &self.key_scope())?;
                ctx.register_table("new", new_provider).map_err(|e| df_err(lib, e))?;
                ctx.register_table("snap", self.open_snapshot(snap_df)).map_err(|e| df_err(lib, e))?;
                let min_new = scalar_i64(ctx, "SELECT CAST(min(ingested_at) AS BIGINT) FROM new").await?;
                if let (Some(min_new), Some(max_old)) = (min_new, meta.max_ingested_at)
                    && min_new > max_old
                {
                    let max_new = scalar_i64(ctx, "SELECT CAST(max(ingested_at) AS BIGINT) FROM new").await?;
                    let (keep, fold) = incremental_sql(&self.catalog, lib)?;
                    let keep = ctx.sql(&keep).await.map_err(|e| df_err(lib, e))?;
                    let fold = ctx.sql(&fold).await.map_err(|e| df_err(lib, e))?;
                    let mut files = meta.files.clone();
                    files.extend(self.files.iter().filter(|f| !covered.contains(f.as_str())).cloned());
                    let meta = Meta { files, max_ingested_at: max_new.or(meta.max_ingested_at), ..meta };
                    return Ok(Plan::Build {
                        keep: Some(keep),
                        fold: Box::new(fold),
                        meta: Box::new(meta),
                        kind: Refresh::Incremental,
                    });
                }
                tracing::info!(library = lib, "current state: new rows not newer than the snapshot, recomputing");
                ctx.deregister_table("new").map_err(|e| df_err(lib, e))?;
                ctx.deregister_table("snap").map_err(|e| df_err(lib, e))?;
            }
        }
        ctx.register_table("h", Arc::clone(&self.history)).map_err(|e| df_err(lib, e))?;
        let max = scalar_i64(ctx, "SELECT CAST(max(ingested_at) AS BIGINT) FROM h").await?;
        let fold = ctx.sql(&full_fold_sql(&self.catalog, lib)?).await.map_err(|e| df_err(lib, e))?;
        let meta = Meta {
            snapshot: String::new(),
            files: self.files.clone(),
            max_ingested_at: max,
            schema: self.schema_tag(),
            rows: 0,
        };
        Ok(Plan::Build { keep: None, fold: Box::new(fold), meta: Box::new(meta), kind: Refresh::Full })
    }

    fn key_scope(&self) -> crate::mapping::personal::KeyScope {
        match self.table_dir.parent().and_then(Path::parent) {
            Some(d) => crate::mapping::personal::KeyScope::DataDir(d.to_path_buf()),
            None => crate::mapping::personal::KeyScope::Process,
        }
    }

    /// Brings the snapshot up to date (writing it when the folder can be
    /// written) and returns the provider to scan and what was done.
    pub async fn refresh(&self) -> Result<(Arc<dyn TableProvider>, Refresh), PipelineError> {
        let lib = self.library.as_str();
        let ctx = bounded_context()?;
        let (keep, fold, mut meta, kind) = match self.compute(&ctx).await? {
            Plan::Reused(t) => return Ok((t, Refresh::Reused)),
            Plan::Build { keep, fold, meta, kind } => (keep, fold, *meta, kind),
        };
        let Some(dir) = self.dir.as_ref() else {
            return self.per_query().await;
        };
        let started = std::time::Instant::now();
        let seal = |b| {
            let columns = crate::sealed::sealed_columns(&self.catalog, lib);
            crate::sealed::seal_batch(&self.keys, lib, &columns, b)
        };
        match write_snapshot(dir, &self.schema, keep, *fold, &mut meta, &seal).await {
            Ok(path) => {
                tracing::debug!(
                    library = lib,
                    ?kind,
                    rows = meta.rows,
                    ms = started.elapsed().as_millis() as u64,
                    "current state: snapshot written"
                );
                let snap = ctx
                    .read_parquet(
                        path.to_string_lossy().to_string(),
                        ParquetReadOptions::default().schema(&self.schema),
                    )
                    .await
                    .map_err(|e| df_err(lib, e))?;
                Ok((self.open_snapshot(snap), kind))
            }
            Err(e) => {
                // A read-only data dir still answers: computed per query.
                tracing::warn!(library = lib, error = %e, "current state: snapshot not written, computing per query");
                self.per_query().await
            }
        }
    }

    /// The current state as a view over all history ([`full_sql`]), for a
    /// data dir whose snapshot folder cannot be written.
    async fn per_query(&self) -> Result<(Arc<dyn TableProvider>, Refresh), PipelineError> {
        let lib = self.library.as_str();
        let ctx = SessionContext::new();
        ctx.register_table("h", Arc::clone(&self.history)).map_err(|e| df_err(lib, e))?;
        let df = ctx.sql(&full_sql(&self.catalog, lib)?).await.map_err(|e| df_err(lib, e))?;
        Ok((df.into_view(), Refresh::PerQuery))
    }
}

/// What [`CurrentTable::compute`] found to do.
enum Plan {
    /// The snapshot covers every history file (read, sealed columns opened).
    Reused(Arc<dyn TableProvider>),
    /// Write a new snapshot: the rows of `keep` as they are, then the
    /// rows of `fold` (sorted versions) folded into current rows.
    Build { keep: Option<DataFrame>, fold: Box<DataFrame>, meta: Box<Meta>, kind: Refresh },
}

/// Memory a snapshot build may hold before its sort spills to disk.
const BUILD_MEMORY: usize = 256 << 20;

/// A session whose sorts spill past [`BUILD_MEMORY`], so that building the
/// current state of any history size holds a bounded amount in memory.
fn bounded_context() -> Result<SessionContext, PipelineError> {
    let rt = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(BUILD_MEMORY, 1.0)
        .build_arc()
        .map_err(|e| df_err("current state", e))?;
    Ok(SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), rt))
}

/// `b` with the columns of `schema` (a snapshot read back may carry string
/// views where the snapshot schema says strings).
fn conform(
    b: &arrow::array::RecordBatch,
    schema: &SchemaRef,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let cols =
        b.columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { arrow::compute::cast(c, f.data_type()) }
            })
            .collect::<Result<Vec<_>, _>>()?;
    arrow::array::RecordBatch::try_new(Arc::clone(schema), cols)
}

async fn scalar_i64(ctx: &SessionContext, sql: &str) -> Result<Option<i64>, PipelineError> {
    let batches = ctx.sql(sql).await.map_err(|e| df_err(sql, e))?.collect().await.map_err(|e| df_err(sql, e))?;
    use arrow::array::{Array, AsArray};
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let c = b.column(0).as_primitive_opt::<arrow::datatypes::Int64Type>()?;
        c.is_valid(0).then(|| c.value(0))
    }))
}

/// Writes `df` as the new snapshot of `dir` (temporary name, fsync,
/// rename; then `meta.json` the same way) and removes snapshots older than
/// the previous one that no reader opened in the last minute.
async fn write_snapshot(
    dir: &Path,
    schema: &SchemaRef,
    keep: Option<DataFrame>,
    fold: DataFrame,
    meta: &mut Meta,
    seal: &(dyn Fn(arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch, PipelineError> + Send + Sync),
) -> Result<PathBuf, PipelineError> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    use datafusion::parquet::file::properties::WriterProperties;
    use futures::StreamExt;
    let io = |e: std::io::Error| PipelineError::Library(format!("{}: {e}", dir.display()));
    let pq = |e: datafusion::parquet::errors::ParquetError| PipelineError::Library(format!("{}: {e}", dir.display()));
    let ar = |e: arrow::error::ArrowError| df_err("current state", e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let name = format!("snap-{stamp}-{}.parquet", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&tmp).map_err(io)?, Arc::clone(schema), Some(props)).map_err(pq)?;
    let mut rows = 0u64;
    if let Some(keep) = keep {
        let mut s = keep.execute_stream().await.map_err(|e| df_err("current state", e))?;
        while let Some(b) = s.next().await {
            let b = conform(&b.map_err(|e| df_err("current state", e))?, schema).map_err(ar)?;
            rows += b.num_rows() as u64;
            w.write(&seal(b)?).map_err(pq)?;
        }
    }
    let mut folder = fold::Folder::new(Arc::clone(schema)).map_err(ar)?;
    let mut s = fold.execute_stream().await.map_err(|e| df_err("current state", e))?;
    while let Some(b) = s.next().await {
        let b = b.map_err(|e| df_err("current state", e))?;
        if let Some(o) = folder.push(b).map_err(ar)? {
            rows += o.num_rows() as u64;
            w.write(&seal(o)?).map_err(pq)?;
        }
    }
    if let Some(o) = folder.finish().map_err(ar)? {
        rows += o.num_rows() as u64;
        w.write(&seal(o)?).map_err(pq)?;
    }
    w.close().map_err(pq)?;
    meta.rows = rows;
    let final_path = dir.join(&name);
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &final_path).map_err(io)?;
    let previous = std::fs::read_to_string(dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Meta>(&t).ok())
        .map(|m| m.snapshot);
    meta.snapshot = name.clone();
    let text = serde_json::to_string(meta).map_err(|e| PipelineError::Internal(e.to_string()))?;
    let tmp_meta = dir.join(".meta.json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp_meta).map_err(io)?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
    }
    std::fs::rename(&tmp_meta, dir.join("meta.json")).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // Old snapshots: keep this one and the previous; others after a minute.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            let keep = n == name || Some(&n) == previous.as_ref() || !n.starts_with("snap-");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a.as_secs() > 60);
            if !keep && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(final_path)
}

#[async_trait]
impl TableProvider for CurrentTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (provider, _) = self.refresh().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        provider.scan(state, projection, filters, limit).await
    }
}
