//! Sensitive columns sealed at rest (issue 16 item 4; §7.3.4).
//!
//! What is sealed ([`sealed_columns`]): every text column of a library
//! labelled `sensitive` or `secret` in `schemas/libraries/` (element
//! `name`, `id_value`, `phone`; matter `content`, `handler`; quarantine
//! `raw`, …) and the `payload` and `error` of every raw table. Each value is
//! sealed with its row's department's current data key
//! ([`lianqin_seal::Keyring`]: `secrets/data-keys/<department>.<n>.key`,
//! wrapped under a key derived from the hub's master key — the audit key,
//! `LIANQIN_AUDIT_KEY` in production), bound to `<table>.<column>`.
//!
//! * **Write**: [`seal_batch`] in [`crate::library::LibraryStore::append`]
//!   (every commit to the lake) and in the current-state snapshot writer
//!   ([`crate::current`]). Parquet column statistics and the Delta log's
//!   min/max then hold ciphertext only.
//! * **Read**: [`OpenTable`] wraps each stored table where queries get it
//!   ([`crate::query::QueryEngine::new`], the current state's snapshot and
//!   new history files), so the policy's row filters and masks, the legacy
//!   view and every analyst query see clear values; a reader of the files
//!   (DuckDB, Spark, `deltalake`) sees `lqe1:<key id>:…`. Filters on a
//!   sealed column are never pushed into the Parquet scan.
//! * Values written before sealing (no `lqe1:` prefix) read as they are.
//! * **Rotation** (`lianqin keys rotate --department D`): a new key file; new
//!   values use it, old values keep opening with theirs; nothing is
//!   rewritten.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use lianqin_seal::Keyring;

use crate::PipelineError;
use crate::schema::{Catalog, ColumnType, Sensitivity};

/// Key folder under a data dir.
pub fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("data-keys")
}

/// Label of the key-encryption key derived from the master key.
const KEK_LABEL: &str = "data-key-wrap";

/// Department of rows that carry none.
const NO_DEPARTMENT: &str = "_hub";

/// The data keys of a data dir, opened when first needed (a data dir that
/// holds no sealed value needs no key; a writer creates the master key as
/// the audit trail does).
#[derive(Clone)]
pub struct Keys {
    data_dir: PathBuf,
    ring: Arc<OnceLock<Arc<Keyring>>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").field("data_dir", &self.data_dir).finish()
    }
}

impl Keys {
    /// The keys of `data_dir` (nothing is read yet).
    pub fn new(data_dir: &Path) -> Keys {
        Keys { data_dir: data_dir.to_path_buf(), ring: Arc::new(OnceLock::new()) }
    }

    /// The keyring; `create` makes the master key when the data dir has
    /// none (writers), readers get an error naming how to supply it.
    pub fn ring(&self, create: bool) -> Result<Arc<Keyring>, PipelineError> {
        if let Some(r) = self.ring.get() {
            return Ok(Arc::clone(r));
        }
        let master = crate::audit::master_key(&self.data_dir, create)?;
        let ring = Keyring::open(key_dir(&self.data_dir), master.derive_subkey(KEK_LABEL))
            .map_err(|e| PipelineError::Config(format!("data keys: {e}")))?;
        Ok(Arc::clone(self.ring.get_or_init(|| Arc::new(ring))))
    }
}

/// The sealed columns of `table` (a library, `quarantine` or `raw_<source>`).
pub fn sealed_columns(catalog: &Catalog, table: &str) -> Vec<String> {
    if table.starts_with("raw_") {
        return vec!["payload".into(), "error".into()];
    }
    let Ok(lib) = catalog.library(table) else { return Vec::new() };
    lib.all_columns(&catalog.provenance)
        .filter(|c| c.sensitivity >= Sensitivity::Sensitive && c.ty == ColumnType::Utf8)
        .map(|c| c.name.clone())
        .collect()
}

fn as_strings(a: &ArrayRef) -> Result<StringArray, arrow::error::ArrowError> {
    let c = arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(c.as_any().downcast_ref::<StringArray>().cloned().expect("cast to Utf8"))
}

/// The text column `values` mapped value by value (`f(row, value)`; nulls
/// stay null), in
/// the column type `ty`; `capacity` bytes reserved for the new values.
fn map_text<S: AsRef<str>>(
    values: &StringArray,
    ty: &DataType,
    capacity: usize,
    mut f: impl FnMut(usize, &str) -> Result<S, PipelineError>,
) -> Result<ArrayRef, PipelineError> {
    let mut b = StringBuilder::with_capacity(values.len(), capacity);
    for (row, v) in values.iter().enumerate() {
        match v {
            None => b.append_null(),
            Some(v) => b.append_value(f(row, v)?),
        }
    }
    let out: ArrayRef = Arc::new(b.finish());
    if ty == &DataType::Utf8 {
        return Ok(out);
    }
    arrow::compute::cast(&out, ty).map_err(|e| PipelineError::Internal(format!("sealed column: {e}")))
}

/// `batch` with the `columns` of `table` sealed, each value with the data
/// key of its row's `department`.
pub fn seal_batch(
    keys: &Keys,
    table: &str,
    columns: &[String],
    batch: RecordBatch,
) -> Result<RecordBatch, PipelineError> {
    let schema = batch.schema();
    let targets: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    if targets.is_empty() || batch.num_rows() == 0 {
        return Ok(batch);
    }
    let err = |e: &dyn fmt::Display| PipelineError::Library(format!("table `{table}`: sealing: {e}"));
    let ring = keys.ring(true)?;
    let departments = match schema.index_of("department") {
        Ok(i) => Some(as_strings(batch.column(i)).map_err(|e| err(&e))?),
        Err(_) => None,
    };
    let mut by_department: Vec<(String, lianqin_seal::DataKey)> = Vec::new();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for i in targets {
        let context = format!("{table}.{}", schema.field(i).name());
        let values = as_strings(&cols[i]).map_err(|e| err(&e))?;
        // `lqe1:<id>:` + base64 of nonce (12) ‖ value ‖ tag (16): ≈ 4/3 of
        // the value plus ~60 bytes.
        // (The bytes of these rows only: `values` may be a slice of a
        // larger array, whose whole buffer `value_data` would be.)
        let offsets = values.value_offsets();
        let bytes = (offsets[offsets.len() - 1] - offsets[0]) as usize;
        let capacity = bytes / 3 * 4 + values.len() * 64;
        cols[i] = map_text(&values, schema.field(i).data_type(), capacity, |r, v| {
            if lianqin_seal::is_sealed(v) {
                return Ok(v.to_string());
            }
            let dept = departments
                .as_ref()
                .filter(|d| d.is_valid(r) && !d.value(r).is_empty())
                .map_or(NO_DEPARTMENT, |d| d.value(r));
            let key = match by_department.iter().find(|(d, _)| d == dept) {
                Some((_, k)) => k.clone(),
                None => {
                    let k = ring.current(dept).map_err(|e| err(&e))?;
                    by_department.push((dept.to_string(), k.clone()));
                    k
                }
            };
            Ok(key.seal_text(&context, v))
        })?;
    }
    RecordBatch::try_new(schema, cols).map_err(|e| err(&e))
}

/// `batch` with the sealed `columns` of `table` opened (values without the
/// prefix as they are).
pub fn open_batch(
    keys: &Keys,
    table: &str,
    columns: &[String],
    batch: RecordBatch,
) -> Result<RecordBatch, PipelineError> {
    let schema = batch.schema();
    let targets: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let err = |e: &dyn fmt::Display| PipelineError::Query(format!("{table}: {e}"));
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for i in targets {
        let values = as_strings(&cols[i]).map_err(|e| err(&e))?;
        if !values.iter().flatten().any(lianqin_seal::is_sealed) {
            continue;
        }
        let ring = keys.ring(false)?;
        let context = format!("{table}.{}", schema.field(i).name());
        cols[i] = map_text(&values, schema.field(i).data_type(), values.value_data().len(), |_, v| {
            ring.open_text(&context, v).map(std::borrow::Cow::into_owned).map_err(|e| err(&e))
        })?;
    }
    RecordBatch::try_new(schema, cols).map_err(|e| err(&e))
}

/// A stored table read with its sealed columns opened (see the module
/// docs). Returned as is when `table` has no sealed column.
pub fn open_table(
    keys: &Keys,
    catalog: &Catalog,
    table: &str,
    inner: Arc<dyn TableProvider>,
) -> Arc<dyn TableProvider> {
    let columns = sealed_columns(catalog, table);
    let present: Vec<String> = columns.into_iter().filter(|c| inner.schema().index_of(c).is_ok()).collect();
    if present.is_empty() {
        return inner;
    }
    Arc::new(OpenTable { inner, table: table.to_string(), columns: present, keys: keys.clone() })
}

/// See [`open_table`].
pub struct OpenTable {
    inner: Arc<dyn TableProvider>,
    /// The table name values are bound to (`<table>.<column>`).
    table: String,
    columns: Vec<String>,
    keys: Keys,
}

impl fmt::Debug for OpenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTable").field("table", &self.table).field("columns", &self.columns).finish()
    }
}

impl OpenTable {
    fn touches_sealed(&self, e: &Expr) -> bool {
        e.column_refs().iter().any(|c| self.columns.contains(&c.name))
    }
}

#[async_trait]
impl TableProvider for OpenTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters on other columns may prune files; on sealed ones they
        // would compare ciphertext: evaluated above, on clear values.
        let inner = self.inner.supports_filters_pushdown(filters)?;
        Ok(filters
            .iter()
            .zip(inner)
            .map(|(f, p)| {
                if self.touches_sealed(f) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    match p {
                        TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                        other => other,
                    }
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters: Vec<Expr> = filters.iter().filter(|f| !self.touches_sealed(f)).cloned().collect();
        // A limit with pushed filters is only safe when they are exact.
        let limit = if filters.is_empty() { limit } else { None };
        let input = self.inner.scan(state, projection, &filters, limit).await?;
        let schema = input.schema();
        let columns: Vec<String> = self.columns.iter().filter(|c| schema.index_of(c).is_ok()).cloned().collect();
        if columns.is_empty() {
            return Ok(input);
        }
        let props = Arc::clone(input.properties());
        Ok(Arc::new(OpenExec { input, props, table: self.table.clone(), columns, keys: self.keys.clone() }))
    }
}

/// Opens the sealed columns of its input's batches.
#[derive(Debug)]
struct OpenExec {
    input: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
    table: String,
    columns: Vec<String>,
    keys: Keys,
}

impl DisplayAs for OpenExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenSealedExec: {} [{}]", self.table, self.columns.join(", "))
    }
}

impl ExecutionPlan for OpenExec {
    fn name(&self) -> &str {
        "OpenSealedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("OpenSealedExec has one child".into()));
        }
        let input = children.remove(0);
        let props = Arc::clone(input.properties());
        Ok(Arc::new(OpenExec {
            input,
            props,
            table: self.table.clone(),
            columns: self.columns.clone(),
            keys: self.keys.clone(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let (keys, table, columns) = (self.keys.clone(), self.table.clone(), self.columns.clone());
        let opened = stream.map(move |b| {
            b.and_then(|b| open_batch(&keys, &table, &columns, b).map_err(|e| DataFusionError::External(Box::new(e))))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, opened)))
    }
}
