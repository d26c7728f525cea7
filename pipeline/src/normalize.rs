//! Normalization: a micro-batch of raw envelopes → library rows, in
//! DataFusion SQL.
//!
//! For each source the mapping's SQL runs over the batch table `raw`.
//! Every output row is then validated against its library schema (required
//! columns, code tables, types). A record with any failing row goes to the
//! `quarantine` library with the reason and its raw record — all of its
//! rows are held back, so a record is never half-applied — and the rest of
//! the batch goes through. A secondary field never costs the record: a value
//! that cannot be read as its type, in a raw field that is neither the key
//! nor `required` ([`crate::mapping::OnError`]) or in a library column that
//! is neither the library's key nor required, becomes NULL and the record's
//! rows carry the flag `type.<field>`. Provenance (source, key, department, fetched-at,
//! content hash, mapping version, bus position) is attached by the pipeline,
//! never by the mapping.
//!
//! The mapping's queries are planned once per source ([`raw_slot`]); a batch
//! only executes them.

mod raw_slot;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::DataType;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use lianqin_bus::BusRecord;
use tracing::{Instrument, info, warn};

use crate::PipelineError;
use crate::mapping::personal::KeyScope;
use crate::mapping::{Mapping, Rejection, build_raw_batch};
use crate::schema::{Catalog, ColumnType};

/// The result of normalizing one batch of one source.
#[derive(Debug, Default)]
pub struct Normalized {
    /// Rows per library (`element`, `matter`, `matter_event`, `quarantine`).
    pub libraries: BTreeMap<String, RecordBatch>,
    /// Records accepted.
    pub accepted: usize,
    /// Records quarantined.
    pub quarantined: usize,
}

/// Runs a source's mapping over batches.
///
/// A large batch is cut into as many parts as there are lanes (one per
/// core, at most [`MAX_LANES`]) when every output query is row-wise
/// ([`row_wise`]: each output row depends on one `raw` row): each part's
/// `raw` columns are built on its own thread and its queries run on its own
/// lane, side by side; the outputs are joined in part order, which is the
/// order one lane gives. A batch with a run-time failure is run again
/// whole on the first lane, which isolates the failing records.
pub struct Normalizer {
    catalog: Arc<Catalog>,
    mapping: Arc<Mapping>,
    source: String,
    /// The planned queries, each over its own `raw` slot; `lanes[0]` runs
    /// every batch that is not cut into parts.
    lanes: Vec<Arc<Lane>>,
}

/// Batches smaller than this run on one lane.
const MIN_ROWS_TO_SPLIT: usize = 4096;
/// At most this many lanes per source.
const MAX_LANES: usize = 4;

/// One planned copy of a mapping's queries, over its own `raw` table.
struct Lane {
    mapping: Arc<Mapping>,
    ctx: SessionContext,
    /// The batch the plans read (the `raw` table).
    slot: raw_slot::Slot,
    /// Each output's physical plan (planned once, in [`Normalizer::new`]).
    plans: Vec<Arc<dyn ExecutionPlan>>,
    /// One batch at a time runs through the slot.
    running: tokio::sync::Mutex<()>,
}

/// Whether `plan` computes each output row from one `raw` row alone
/// (projections and filters over the `raw` slot, nothing that groups,
/// sorts, limits, joins or windows): then running it on parts of a batch
/// and joining the outputs in part order gives what one run gives.
fn row_wise(plan: &Arc<dyn ExecutionPlan>) -> bool {
    const ROW_WISE: &[&str] =
        &["RawSlotExec", "ProjectionExec", "FilterExec", "CoalesceBatchesExec", "CooperativeExec"];
    ROW_WISE.contains(&plan.name()) && plan.children().into_iter().all(row_wise)
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalizer").field("source", &self.source).field("mapping", &self.mapping.origin).finish()
    }
}

impl Normalizer {
    /// Builds a normalizer and checks the mapping: its reference tables are
    /// registered beside `raw` (by their names); every output query must
    /// plan over an empty `raw`, select `_row`, and produce only columns of
    /// its library with castable types. Errors name the mapping and output.
    /// `person_token` is keyed with the process key
    /// ([`crate::mapping::personal::token_key`]); a hub uses [`Normalizer::new_in`].
    pub async fn new(catalog: Arc<Catalog>, mapping: Arc<Mapping>, source: &str) -> Result<Self, PipelineError> {
        Normalizer::new_in(catalog, mapping, source, KeyScope::Process).await
    }

    /// [`Normalizer::new`] with `person_token` keyed from `key` (a hub:
    /// its data dir's key).
    pub async fn new_in(
        catalog: Arc<Catalog>,
        mapping: Arc<Mapping>,
        source: &str,
        key: KeyScope,
    ) -> Result<Self, PipelineError> {
        let first = Lane::new(&catalog, &mapping, key.clone())?;
        let plans = check_and_plan(&catalog, &mapping, &first.ctx).await?;
        let first = Arc::new(Lane { plans, ..first });
        let mut lanes = vec![Arc::clone(&first)];
        if first.plans.iter().all(row_wise) {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            for _ in 1..cores.min(MAX_LANES) {
                let lane = Lane::new(&catalog, &mapping, key.clone())?;
                let plans = check_and_plan(&catalog, &mapping, &lane.ctx).await?;
                lanes.push(Arc::new(Lane { plans, ..lane }));
            }
        }
        tracing::debug!(source, mapping = %mapping.origin, lanes = lanes.len(), "mapping planned");
        Ok(Normalizer { catalog, mapping, source: source.to_string(), lanes })
    }

    /// How many lanes a batch of this source may use (1: its queries are
    /// not row-wise, or one core).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Normalizes records (all of this normalizer's source). `ingested_at`
    /// is stamped on every row (UTC micros).
    pub async fn normalize(&self, records: &[&BusRecord], ingested_at: i64) -> Result<Normalized, PipelineError> {
        let envs: Vec<&lianqin_bus::Envelope> = records.iter().map(|r| &r.envelope).collect();
        let indices: Vec<usize> = (0..records.len()).collect();
        let lanes = if records.len() >= MIN_ROWS_TO_SPLIT { self.lanes.len() } else { 1 };
        // The `raw` columns of each part, each on its own thread.
        let size = records.len().div_ceil(lanes).max(1);
        let built: Vec<Result<(RecordBatch, Vec<Rejection>), PipelineError>> = if lanes == 1 {
            vec![build_raw_batch(&self.mapping, &self.source, &envs, &indices)]
        } else {
            std::thread::scope(|scope| {
                let threads: Vec<_> = envs
                    .chunks(size)
                    .zip(indices.chunks(size))
                    .map(|(e, i)| scope.spawn(move || build_raw_batch(&self.mapping, &self.source, e, i)))
                    .collect();
                threads
                    .into_iter()
                    .map(|t| {
                        t.join()
                            .unwrap_or_else(|_| Err(PipelineError::Internal("building raw columns panicked".into())))
                    })
                    .collect()
            })
        };
        let mut parts = Vec::with_capacity(built.len());
        let mut rejections = Vec::new();
        for b in built {
            let (part, rej) = b?;
            parts.push(part);
            rejections.extend(rej);
        }
        let rows: usize = parts.iter().map(RecordBatch::num_rows).sum();
        let outputs = if rows == 0 {
            Vec::new()
        } else if parts.len() == 1 {
            self.run_isolating(&parts[0], records, &mut rejections).await?
        } else {
            match self.run_parts(&parts).await {
                Some(outputs) => outputs,
                None => {
                    let whole = concat_batches(&parts[0].schema(), &parts)
                        .map_err(|e| PipelineError::Internal(e.to_string()))?;
                    self.run_isolating(&whole, records, &mut rejections).await?
                }
            }
        };
        // Validate and cast each output; collect failing records.
        let mut shaped: Vec<(String, RecordBatch, Vec<i64>)> = Vec::new();
        let mut cast_flags: Vec<(i64, String)> = Vec::new();
        for (lib, b) in outputs {
            let (batch, rows, bad) = self.shape(&lib, &b, records, &mut cast_flags)?;
            rejections.extend(bad);
            shaped.push((lib, batch, rows));
        }
        let bad_rows: BTreeSet<usize> = rejections.iter().map(|r| r.index).collect();
        let mut out = Normalized { quarantined: bad_rows.len(), accepted: 0, ..Default::default() };
        let mut raw_flags = BTreeMap::new();
        for part in &parts {
            raw_flags.extend(flags_by_row(part));
        }
        for (row, flag) in cast_flags {
            let v = raw_flags.entry(row).or_default();
            if !v.contains(&flag) {
                v.push(flag);
            }
        }
        for (lib, batch, rows) in shaped {
            let keep: BooleanArray = rows.iter().map(|r| Some(!bad_rows.contains(&(*r as usize)))).collect();
            let batch = filter_record_batch(&batch, &keep).map_err(|e| PipelineError::Internal(e.to_string()))?;
            let rows: Vec<i64> = rows.into_iter().filter(|r| !bad_rows.contains(&(*r as usize))).collect();
            // `row_seq` counts on across the outputs (and parts) of a library.
            let first_seq = out.libraries.get(&lib).map_or(0, RecordBatch::num_rows);
            let full = self.with_provenance(&lib, &batch, &rows, records, ingested_at, &raw_flags, first_seq)?;
            let entry = out.libraries.remove(&lib);
            let merged = match entry {
                Some(prev) => {
                    concat_batches(&prev.schema(), &[prev, full]).map_err(|e| PipelineError::Internal(e.to_string()))?
                }
                None => full,
            };
            out.libraries.insert(lib, merged);
        }
        out.accepted = records.len() - bad_rows.len();
        // One quarantine row per rejected record (first reason wins).
        let mut first: BTreeMap<usize, &Rejection> = BTreeMap::new();
        for r in &rejections {
            first.entry(r.index).or_insert(r);
        }
        if !first.is_empty() {
            out.libraries.insert("quarantine".into(), self.quarantine_batch(&first, records, ingested_at)?);
        }
        Ok(out)
    }

    /// Runs every output query of the mapping over `raw` on the first lane.
    async fn run_outputs(&self, raw: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, String> {
        self.lanes[0].run(raw).await
    }

    /// Runs the parts of a batch side by side, one lane each; `None` when a
    /// part failed (the caller runs the batch again whole, isolating).
    async fn run_parts(&self, parts: &[RecordBatch]) -> Option<Vec<(String, RecordBatch)>> {
        let runs: Vec<_> = parts
            .iter()
            .zip(&self.lanes)
            .map(|(part, lane)| {
                let (lane, part) = (Arc::clone(lane), part.clone());
                tokio::spawn(async move { lane.run(&part).await }.in_current_span())
            })
            .collect();
        let mut outputs = Vec::new();
        let mut failed = false;
        for run in runs {
            match run.await {
                Ok(Ok(o)) => outputs.extend(o),
                _ => failed = true,
            }
        }
        (!failed).then_some(outputs)
    }

    /// Runs the mapping over `raw`; when that fails at run time (a CAST that
    /// rejects one value, a function that errors on one input), finds the
    /// failing record(s) by bisection instead of failing the batch: each
    /// record that fails alone becomes a rejection naming the error (it goes
    /// to quarantine), and the outputs of every part that ran are returned.
    /// A bad record therefore costs about 2·log2(n) extra runs of shrinking
    /// parts, and the hub never loops on it.
    async fn run_isolating(
        &self,
        raw: &RecordBatch,
        records: &[&BusRecord],
        rejections: &mut Vec<Rejection>,
    ) -> Result<Vec<(String, RecordBatch)>, PipelineError> {
        let first_error = match self.run_outputs(raw).await {
            Ok(outputs) => return Ok(outputs),
            Err(e) => e,
        };
        warn!(source = %self.source, rows = raw.num_rows(), error = %first_error,
            "mapping failed at run time; isolating the failing records");
        let rows_of = |b: &RecordBatch| -> Vec<i64> {
            b.column_by_name("_row")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .map(|a| a.iter().map(|v| v.unwrap_or(-1)).collect())
                .unwrap_or_default()
        };
        let mut outputs = Vec::new();
        // Parts still to run (offset, length), largest first.
        let n = raw.num_rows();
        let mut parts = vec![(n / 2, n - n / 2), (0, n / 2)];
        let mut isolated = 0usize;
        while let Some((offset, len)) = parts.pop() {
            if len == 0 {
                continue;
            }
            let part = raw.slice(offset, len);
            match self.run_outputs(&part).await {
                Ok(o) => outputs.extend(o),
                Err(e) if len == 1 => {
                    isolated += 1;
                    for row in rows_of(&part) {
                        let index = row.max(0) as usize;
                        let key = records.get(index).map(|r| r.envelope.key.as_str()).unwrap_or("?");
                        rejections.push(Rejection {
                            index,
                            field: None,
                            reason: format!("source `{}` record `{key}`: failed at run time: {e}", self.source),
                        });
                    }
                }
                Err(_) => {
                    let half = len / 2;
                    parts.push((offset + half, len - half));
                    parts.push((offset, half));
                }
            }
        }
        info!(source = %self.source, isolated, rows = n, "run-time failures isolated; the rest of the batch goes on");
        Ok(outputs)
    }

    /// Casts an output to the library's columns (in schema order), validates
    /// required/code columns. Returns the library-column batch, `_row`s, and
    /// rejections; a value of a secondary column (neither the library's key
    /// nor required) that cannot be cast is NULL and adds `(_row,
    /// "type.<column>")` to `flags`.
    fn shape(
        &self,
        lib_name: &str,
        b: &RecordBatch,
        records: &[&BusRecord],
        flags: &mut Vec<(i64, String)>,
    ) -> Result<(RecordBatch, Vec<i64>, Vec<Rejection>), PipelineError> {
        let lib = self.catalog.library(lib_name)?;
        let rows_col = b
            .column_by_name("_row")
            .and_then(|c| cast(c, &DataType::Int64).ok())
            .ok_or_else(|| PipelineError::Mapping(format!("mapping {}: output lacks `_row`", self.mapping.origin)))?;
        let rows = rows_col
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        let rows: Vec<i64> = rows.iter().map(|r| r.unwrap_or(-1)).collect();
        let n = b.num_rows();
        let mut rejections = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(lib.columns.len());
        let mut fields = Vec::with_capacity(lib.columns.len());
        for c in &lib.columns {
            let target = c.ty.arrow();
            let arr: ArrayRef = match b.column_by_name(&c.name) {
                Some(a) => {
                    let casted = cast(a, &target).map_err(|e| {
                        PipelineError::Mapping(format!("mapping {} column {}: {e}", self.mapping.origin, c.name))
                    })?;
                    let secondary = !c.required && c.name != lib.key;
                    for (i, &row) in rows.iter().enumerate().take(n) {
                        if a.is_valid(i) && casted.is_null(i) && secondary {
                            flags.push((row, format!("type.{}", c.name)));
                        } else if a.is_valid(i) && casted.is_null(i) {
                            rejections.push(self.reject(
                                records,
                                row,
                                &c.name,
                                format!(
                                    "library `{lib_name}` column `{}`: value cannot be read as {}",
                                    c.name,
                                    c.ty.name()
                                ),
                            ));
                        }
                    }
                    casted
                }
                None => arrow::array::new_null_array(&target, n),
            };
            if c.required {
                for (i, &row) in rows.iter().enumerate().take(n) {
                    if arr.is_null(i) {
                        rejections.push(self.reject(
                            records,
                            row,
                            &c.name,
                            format!("library `{lib_name}` column `{}` ({}) is required but empty", c.name, c.zh),
                        ));
                    }
                }
            }
            if let (Some(code), ColumnType::Utf8) = (&c.codes, c.ty) {
                let table = &self.catalog.codes[code];
                if let Some(s) = arr.as_any().downcast_ref::<StringArray>() {
                    for (i, &row) in rows.iter().enumerate().take(n) {
                        if s.is_valid(i) && !table.contains(s.value(i)) {
                            rejections.push(self.reject(
                                records,
                                row,
                                &c.name,
                                format!(
                                    "library `{lib_name}` column `{}`: {:?} is not in code table `{code}` ({})",
                                    c.name,
                                    s.value(i),
                                    table.zh
                                ),
                            ));
                        }
                    }
                }
            }
            fields.push(arrow::datatypes::Field::new(&c.name, target, true));
            arrays.push(arr);
        }
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| PipelineError::Internal(e.to_string()))?;
        Ok((batch, rows, rejections))
    }

    fn reject(&self, records: &[&BusRecord], row: i64, field: &str, why: String) -> Rejection {
        let index = row.max(0) as usize;
        let key = records.get(index).map(|r| r.envelope.key.as_str()).unwrap_or("?");
        Rejection {
            index,
            field: Some(field.to_string()),
            reason: format!("source `{}` record `{key}`: {why}", self.source),
        }
    }

    /// The library columns of `batch` plus provenance; `row_seq` starts at
    /// `first_seq` (the rows of this library already in the batch's
    /// commit), so `(ingested_at, row_seq)` orders every row of a commit.
    #[allow(clippy::too_many_arguments)]
    fn with_provenance(
        &self,
        lib_name: &str,
        batch: &RecordBatch,
        rows: &[i64],
        records: &[&BusRecord],
        ingested_at: i64,
        raw_flags: &BTreeMap<i64, Vec<String>>,
        first_seq: usize,
    ) -> Result<RecordBatch, PipelineError> {
        let schema = self.catalog.arrow_schema(lib_name)?;
        let lib = self.catalog.library(lib_name)?;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, c) in lib.columns.iter().enumerate() {
            let col = batch.column(i);
            if c.name == "flags" && !raw_flags.is_empty() {
                arrays.push(merge_flags(col, rows, raw_flags));
            } else {
                arrays.push(Arc::clone(col));
            }
        }
        let tag = self.mapping.version_tag();
        let recs: Vec<&BusRecord> = rows.iter().map(|r| records[*r as usize]).collect();
        arrays.extend(provenance_arrays(&recs, &tag, ingested_at, first_seq));
        RecordBatch::try_new(schema, arrays).map_err(|e| PipelineError::Internal(format!("library {lib_name}: {e}")))
    }

    fn quarantine_batch(
        &self,
        first: &BTreeMap<usize, &Rejection>,
        records: &[&BusRecord],
        ingested_at: i64,
    ) -> Result<RecordBatch, PipelineError> {
        let schema = self.catalog.arrow_schema("quarantine")?;
        let n = first.len();
        let mut id = StringBuilder::with_capacity(n, n * 24);
        let mut reason = StringBuilder::with_capacity(n, n * 64);
        let mut field = StringBuilder::with_capacity(n, n * 8);
        let mut raw = StringBuilder::with_capacity(n, n * 128);
        let mut loc = StringBuilder::with_capacity(n, n * 32);
        let mut recs = Vec::with_capacity(n);
        for (idx, r) in first {
            let rec = records[*idx];
            id.append_value(format!("{}/{}/{}", rec.topic, rec.partition, rec.offset));
            reason.append_value(&r.reason);
            field.append_option(r.field.as_deref());
            match rec.envelope.payload() {
                serde_json::Value::String(s) => raw.append_value(s),
                _ => raw.append_value(rec.envelope.payload_text()),
            }
            loc.append_option(rec.envelope.locator.as_deref());
            recs.push(rec);
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(id.finish()),
            Arc::new(reason.finish()),
            Arc::new(field.finish()),
            Arc::new(raw.finish()),
            Arc::new(loc.finish()),
        ];
        arrays.extend(provenance_arrays(&recs, &self.mapping.version_tag(), ingested_at, 0));
        RecordBatch::try_new(schema, arrays).map_err(|e| PipelineError::Internal(format!("quarantine: {e}")))
    }
}

fn flags_by_row(raw: &RecordBatch) -> BTreeMap<i64, Vec<String>> {
    let mut out = BTreeMap::new();
    let (Some(rows), Some(flags)) = (raw.column_by_name("_row"), raw.column_by_name("_flags")) else { return out };
    let (Some(rows), Some(flags)) =
        (rows.as_any().downcast_ref::<Int64Array>(), flags.as_any().downcast_ref::<StringArray>())
    else {
        return out;
    };
    for i in 0..raw.num_rows() {
        if flags.is_valid(i) {
            let v: Vec<String> = serde_json::from_str(flags.value(i)).unwrap_or_default();
            out.insert(rows.value(i), v);
        }
    }
    out
}

fn merge_flags(col: &ArrayRef, rows: &[i64], raw_flags: &BTreeMap<i64, Vec<String>>) -> ArrayRef {
    let s = col.as_any().downcast_ref::<StringArray>();
    let mut b = StringBuilder::new();
    for (i, r) in rows.iter().enumerate() {
        let mut v: Vec<String> = match s {
            Some(s) if s.is_valid(i) => {
                serde_json::from_str(s.value(i)).unwrap_or_else(|_| vec![s.value(i).to_string()])
            }
            _ => Vec::new(),
        };
        if let Some(extra) = raw_flags.get(r) {
            v.extend(extra.iter().cloned());
        }
        if v.is_empty() { b.append_null() } else { b.append_value(serde_json::to_string(&v).unwrap_or_default()) }
    }
    Arc::new(b.finish())
}

/// Provenance columns (schemas/libraries/provenance.toml order) + `row_seq`
/// (from `first_seq`).
fn provenance_arrays(recs: &[&BusRecord], mapping_tag: &str, ingested_at: i64, first_seq: usize) -> Vec<ArrayRef> {
    let n = recs.len();
    let mut source = StringBuilder::with_capacity(n, n * 12);
    let mut key = StringBuilder::with_capacity(n, n * 16);
    let mut dept = StringBuilder::with_capacity(n, n * 8);
    let mut fetched = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut hash = StringBuilder::with_capacity(n, n * 64);
    let mut tag = StringBuilder::with_capacity(n, n * 16);
    let mut ing = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut part = Int64Builder::with_capacity(n);
    let mut off = Int64Builder::with_capacity(n);
    let mut seq = Int64Builder::with_capacity(n);
    for (i, r) in recs.iter().enumerate() {
        let e = &r.envelope;
        source.append_value(&e.source);
        key.append_value(&e.key);
        dept.append_value(&e.department);
        fetched.append_value(e.fetched_at.timestamp_micros());
        hash.append_value(&e.hash);
        tag.append_value(mapping_tag);
        ing.append_value(ingested_at);
        topic.append_value(&r.topic);
        part.append_value(i64::from(r.partition));
        off.append_value(r.offset as i64);
        seq.append_value((first_seq + i) as i64);
    }
    vec![
        Arc::new(source.finish()),
        Arc::new(key.finish()),
        Arc::new(dept.finish()),
        Arc::new(fetched.finish()),
        Arc::new(hash.finish()),
        Arc::new(tag.finish()),
        Arc::new(ing.finish()),
        Arc::new(topic.finish()),
        Arc::new(part.finish()),
        Arc::new(off.finish()),
        Arc::new(seq.finish()),
    ]
}

/// Rows for a source's raw table: the given records as received, with
/// their provenance and bus position.
pub fn raw_batch(records: &[&BusRecord], ingested_at: i64) -> Result<RecordBatch, PipelineError> {
    let n = records.len();
    // Exact sizes for the long columns: a builder that grows copies what it
    // holds each time it doubles (and touches fresh pages for it).
    let key_bytes: usize = records.iter().map(|r| r.envelope.key.len()).sum();
    let payload_bytes: usize = records.iter().map(|r| r.envelope.raw_text().len()).sum();
    let mut key = StringBuilder::with_capacity(n, key_bytes);
    let mut op = StringBuilder::with_capacity(n, n * 6);
    let mut payload = StringBuilder::with_capacity(n, payload_bytes);
    let mut st = StringBuilder::with_capacity(n, n * 20);
    let mut err = StringBuilder::new();
    let mut loc = StringBuilder::new();
    let mut dept = StringBuilder::with_capacity(n, n * 8);
    let mut fetched = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut hash = StringBuilder::with_capacity(n, n * 64);
    let mut ing = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut topic = StringBuilder::with_capacity(n, n * 16);
    let mut part = Int64Builder::with_capacity(n);
    let mut off = Int64Builder::with_capacity(n);
    for r in records {
        let e = &r.envelope;
        key.append_value(&e.key);
        op.append_value(e.op.as_str());
        payload.append_value(e.raw_text());
        st.append_option(e.source_time.as_deref());
        err.append_option(e.error.as_deref());
        loc.append_option(e.locator.as_deref());
        dept.append_value(&e.department);
        fetched.append_value(e.fetched_at.timestamp_micros());
        hash.append_value(&e.hash);
        ing.append_value(ingested_at);
        topic.append_value(&r.topic);
        part.append_value(i64::from(r.partition));
        off.append_value(r.offset as i64);
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(key.finish()),
        Arc::new(op.finish()),
        Arc::new(payload.finish()),
        Arc::new(st.finish()),
        Arc::new(err.finish()),
        Arc::new(loc.finish()),
        Arc::new(dept.finish()),
        Arc::new(fetched.finish()),
        Arc::new(hash.finish()),
        Arc::new(ing.finish()),
        Arc::new(topic.finish()),
        Arc::new(part.finish()),
        Arc::new(off.finish()),
    ];
    RecordBatch::try_new(Catalog::raw_schema(), arrays).map_err(|e| PipelineError::Internal(format!("raw: {e}")))
}

impl Lane {
    /// A session with the mapping's functions, its reference tables and an
    /// empty `raw` slot (planned by [`check_and_plan`]).
    fn new(catalog: &Arc<Catalog>, mapping: &Arc<Mapping>, key: KeyScope) -> Result<Lane, PipelineError> {
        // Plans are executed again and again (see `raw_slot`): no dynamic
        // filters, which live in a plan between executions. One partition:
        // a batch is one `raw` batch, and lanes (not repartitioning) spread
        // it over the cores.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let ctx = SessionContext::new_with_config(config);
        crate::udf::register(&ctx, catalog);
        ctx.register_udf(crate::mapping::personal::person_token_udf(key));
        for t in &mapping.tables {
            ctx.register_batch(t.name.as_str(), t.batch.clone()).map_err(|e| {
                PipelineError::Config(format!("mapping {}: reference `{}` ({}): {e}", mapping.origin, t.name, t.origin))
            })?;
        }
        let raw = raw_slot::RawSlot::new(mapping.raw_schema());
        let slot = raw.slot();
        ctx.register_table("raw", Arc::new(raw))
            .map_err(|e| PipelineError::Internal(format!("mapping {}: register raw: {e}", mapping.origin)))?;
        Ok(Lane { mapping: Arc::clone(mapping), ctx, slot, plans: Vec::new(), running: tokio::sync::Mutex::new(()) })
    }

    /// Runs every output query of the mapping over `raw` (registered as the
    /// table `raw`). Returns the rows per output, or the first error.
    async fn run(&self, raw: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, String> {
        let _one_at_a_time = self.running.lock().await;
        *self.slot.lock().map_err(|_| "raw slot poisoned".to_string())? = Some(raw.clone());
        let result = self.execute_plans().await;
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
        result
    }

    async fn execute_plans(&self) -> Result<Vec<(String, RecordBatch)>, String> {
        let mut outputs = Vec::with_capacity(self.mapping.outputs.len());
        for ((i, out), plan) in self.mapping.outputs.iter().enumerate().zip(&self.plans) {
            let whr = |e: datafusion::error::DataFusionError| {
                format!("mapping {} output #{} ({}): {e}", self.mapping.origin, i + 1, out.library)
            };
            let plan = reset_plan_states(Arc::clone(plan)).map_err(whr)?;
            let batches = collect(plan, self.ctx.task_ctx()).await.map_err(whr)?;
            let Some(first) = batches.first() else { continue };
            let b = concat_batches(&first.schema(), &batches).map_err(|e| e.to_string())?;
            outputs.push((out.library.clone(), b));
        }
        Ok(outputs)
    }
}

/// Checks every output query (see [`Normalizer::new`]) and plans it.
async fn check_and_plan(
    catalog: &Catalog,
    mapping: &Mapping,
    ctx: &SessionContext,
) -> Result<Vec<Arc<dyn ExecutionPlan>>, PipelineError> {
    let mut plans = Vec::with_capacity(mapping.outputs.len());
    for (i, out) in mapping.outputs.iter().enumerate() {
        let whr = format!("mapping {} output #{} ({})", mapping.origin, i + 1, out.library);
        if out.library == "quarantine" {
            return Err(PipelineError::Config(format!("{whr}: `quarantine` is written by the pipeline only")));
        }
        let lib = catalog.library(&out.library).map_err(|e| PipelineError::Config(format!("{whr}: {e}")))?;
        let df = ctx.sql(&out.sql).await.map_err(|e| PipelineError::Config(format!("{whr}: SQL: {e}")))?;
        let schema = df.schema();
        if schema.field_with_unqualified_name("_row").is_err() {
            return Err(PipelineError::Config(format!("{whr}: the query must select `_row`")));
        }
        for f in schema.fields() {
            if f.name() == "_row" {
                continue;
            }
            let Some(col) = lib.column(f.name()) else {
                return Err(PipelineError::Config(format!(
                    "{whr}: column `{}` is not in library `{}` (columns: {})",
                    f.name(),
                    lib.table,
                    lib.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            if !arrow::compute::can_cast_types(f.data_type(), &col.ty.arrow()) {
                return Err(PipelineError::Config(format!(
                    "{whr}: column `{}` is {} but the library wants {}",
                    f.name(),
                    f.data_type(),
                    col.ty.name()
                )));
            }
        }
        for c in &lib.columns {
            if c.required && schema.field_with_unqualified_name(&c.name).is_err() {
                return Err(PipelineError::Config(format!("{whr}: required column `{}` is not selected", c.name)));
            }
        }
        let plan = df.create_physical_plan().await.map_err(|e| PipelineError::Config(format!("{whr}: plan: {e}")))?;
        plans.push(plan);
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lianqin_bus::Envelope;

    /// A mapping over the fields `id` (the key) and `n` with one
    /// `matter_event` output.
    fn mapping_with(sql: &str) -> Mapping {
        let text = format!(
            "name = \"t\"\nversion = \"1\"\nkey_field = \"id\"\n[fields]\nid = {{ type = \"utf8\", required = true }}\n\
             n = \"utf8\"\n[[outputs]]\nlibrary = \"matter_event\"\nsql = \"\"\"\n{sql}\n\"\"\"\n"
        );
        Mapping::parse(&text, "test").unwrap()
    }

    /// A mapping whose SQL fails at run time on one value (a strict CAST).
    fn casting_mapping() -> Mapping {
        mapping_with(
            "SELECT _row, 'm:' || id AS event_id, 'm:' || id AS matter_id, 'intake' AS stage, \
             CAST(CAST(n AS INT) AS VARCHAR) AS note FROM raw",
        )
    }

    fn records(n: usize, bad: &[usize]) -> Vec<BusRecord> {
        (0..n)
            .map(|i| {
                let v = if bad.contains(&i) { "abc".to_string() } else { i.to_string() };
                let payload = serde_json::json!({"id": i.to_string(), "n": v});
                BusRecord {
                    topic: "raw.t".into(),
                    partition: 0,
                    offset: i as u64,
                    envelope: Envelope::upsert("t", "police", i.to_string(), payload, None),
                }
            })
            .collect()
    }

    /// A batch cut into parts, each run on its own lane, gives exactly the
    /// rows (and quarantine) one lane gives — also when a record of the
    /// second part fails at run time (the batch runs again whole and the
    /// record is isolated); a query that groups or joins `raw` runs on one
    /// lane.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_on_lanes_give_what_one_lane_gives() {
        let catalog = Catalog::builtin().unwrap();
        let mut lanes = Normalizer::new(Arc::clone(&catalog), Arc::new(casting_mapping()), "t").await.unwrap();
        lanes.lanes = (0..2).map(|_| Arc::clone(&lanes.lanes[0])).collect();
        let mut one = Normalizer::new(Arc::clone(&catalog), Arc::new(casting_mapping()), "t").await.unwrap();
        one.lanes.truncate(1);
        for bad in [vec![], vec![3], vec![MIN_ROWS_TO_SPLIT - 2, MIN_ROWS_TO_SPLIT + 5]] {
            let recs = records(MIN_ROWS_TO_SPLIT + 10, &bad);
            let refs: Vec<&BusRecord> = recs.iter().collect();
            let a = lanes.normalize(&refs, 7).await.unwrap();
            let b = one.normalize(&refs, 7).await.unwrap();
            assert_eq!((a.accepted, a.quarantined), (b.accepted, b.quarantined), "{bad:?}");
            assert_eq!(a.quarantined, bad.len());
            assert_eq!(a.libraries.keys().collect::<Vec<_>>(), b.libraries.keys().collect::<Vec<_>>());
            for (lib, x) in &a.libraries {
                let y = &b.libraries[lib];
                assert_eq!(x.schema(), y.schema(), "{lib}");
                for (f, (c, d)) in x.schema().fields().iter().zip(x.columns().iter().zip(y.columns())) {
                    let (c, d) = (
                        arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default()).unwrap(),
                        arrow::util::display::ArrayFormatter::try_new(d.as_ref(), &Default::default()).unwrap(),
                    );
                    for i in 0..x.num_rows() {
                        assert_eq!(
                            c.value(i).to_string(),
                            d.value(i).to_string(),
                            "{lib}.{} row {i}, bad {bad:?}",
                            f.name()
                        );
                    }
                }
            }
        }
        let grouped = mapping_with(
            "SELECT r._row, 'm:' || r.id AS event_id, 'm:' || r.id AS matter_id, 'intake' AS stage, \
               CAST(g.c AS VARCHAR) AS note \
             FROM raw r JOIN (SELECT n, count(*) AS c FROM raw GROUP BY n) g ON r.n = g.n",
        );
        let n = Normalizer::new(Arc::clone(&catalog), Arc::new(grouped), "t").await.unwrap();
        assert_eq!(n.lanes(), 1, "a query over the whole batch is not cut");
        let row_wise = Normalizer::new(catalog, Arc::new(casting_mapping()), "t").await.unwrap();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert_eq!(row_wise.lanes(), cores.clamp(1, MAX_LANES));
    }

    /// The plans are made once and executed per batch: operators that keep
    /// state between executions (a hash join's build side, an aggregate)
    /// must see each batch afresh, never the previous one.
    #[tokio::test]
    async fn plans_made_once_see_each_batch_afresh() {
        let m = mapping_with(
            "SELECT r._row, 'm:' || r.id AS event_id, 'm:' || r.id AS matter_id, 'intake' AS stage, \
               CAST(g.c AS VARCHAR) || '/' || r.n AS note \
             FROM raw r JOIN (SELECT n, count(*) AS c FROM raw GROUP BY n) g ON r.n = g.n",
        );
        let catalog = Catalog::builtin().unwrap();
        let norm = Normalizer::new(catalog, Arc::new(m), "t").await.unwrap();
        let batch = |ids: std::ops::Range<usize>, n: &str| -> Vec<BusRecord> {
            ids.map(|i| BusRecord {
                topic: "raw.t".into(),
                partition: 0,
                offset: i as u64,
                envelope: Envelope::upsert(
                    "t",
                    "police",
                    i.to_string(),
                    serde_json::json!({"id": i.to_string(), "n": n}),
                    None,
                ),
            })
            .collect()
        };
        for (ids, n) in [(0..100, "a"), (1000..1050, "b"), (7..8, "c")] {
            let want = ids.len();
            let first = ids.start;
            let recs = batch(ids, n);
            let refs: Vec<&BusRecord> = recs.iter().collect();
            let out = norm.normalize(&refs, 0).await.unwrap();
            let ev = &out.libraries["matter_event"];
            assert_eq!(ev.num_rows(), want, "batch {n}");
            let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(ev)).unwrap().to_string();
            assert!(
                text.contains(&format!("{want}/{n}")) && text.contains(&format!("m:{first} ")),
                "batch {n}: {text}"
            );
            assert!(!text.contains("/a") || n == "a", "batch {n} sees an earlier batch: {text}");
        }
    }

    #[tokio::test]
    async fn a_record_failing_at_run_time_is_quarantined_and_the_rest_go_on() {
        let catalog = Catalog::builtin().unwrap();
        let n = Normalizer::new(catalog, Arc::new(casting_mapping()), "t").await.unwrap();
        let recs = records(10_000, &[4_321]);
        let refs: Vec<&BusRecord> = recs.iter().collect();
        let out = n.normalize(&refs, 0).await.expect("the batch must not fail as a whole");
        assert_eq!(out.accepted, 9_999);
        assert_eq!(out.quarantined, 1);
        assert_eq!(out.libraries["matter_event"].num_rows(), 9_999);
        let q = &out.libraries["quarantine"];
        assert_eq!(q.num_rows(), 1);
        let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(q)).unwrap().to_string();
        assert!(text.contains("record `4321`") && text.contains("failed at run time"), "{text}");
        assert!(text.contains("abc"), "the quarantined record keeps its value: {text}");
    }

    /// A value of a secondary library column that cannot be cast costs the
    /// column (NULL + `type.<column>`), not the record; the key still
    /// quarantines it.
    #[tokio::test]
    async fn a_secondary_column_that_cannot_be_cast_is_flagged() {
        let m = Mapping::parse(
            "name = \"t\"\nversion = \"1\"\nkey_field = \"id\"\n[fields]\nid = { type = \"utf8\", required = true }\n\
             n = \"utf8\"\n[[outputs]]\nlibrary = \"matter\"\nsql = \"SELECT _row, 'm:' || id AS matter_id, \
             'intake' AS stage, false AS important, n AS lon, false AS deleted FROM raw\"\n",
            "test",
        )
        .unwrap();
        let catalog = Catalog::builtin().unwrap();
        let norm = Normalizer::new(catalog, Arc::new(m), "t").await.unwrap();
        let recs = records(3, &[1]);
        let refs: Vec<&BusRecord> = recs.iter().collect();
        let out = norm.normalize(&refs, 0).await.unwrap();
        assert_eq!((out.accepted, out.quarantined), (3, 0));
        let text = arrow::util::pretty::pretty_format_batches(&[out.libraries["matter"].clone()]).unwrap().to_string();
        assert_eq!(text.matches(r#"["type.lon"]"#).count(), 1, "{text}");
    }

    #[tokio::test]
    async fn several_bad_records_and_a_batch_of_only_bad_ones() {
        let catalog = Catalog::builtin().unwrap();
        let n = Normalizer::new(catalog, Arc::new(casting_mapping()), "t").await.unwrap();
        let recs = records(100, &[0, 37, 38, 99]);
        let refs: Vec<&BusRecord> = recs.iter().collect();
        let out = n.normalize(&refs, 0).await.unwrap();
        assert_eq!((out.accepted, out.quarantined), (96, 4));
        assert_eq!(out.libraries["matter_event"].num_rows(), 96);
        let recs = records(3, &[0, 1, 2]);
        let refs: Vec<&BusRecord> = recs.iter().collect();
        let out = n.normalize(&refs, 0).await.unwrap();
        assert_eq!((out.accepted, out.quarantined), (0, 3));
        assert!(!out.libraries.contains_key("matter_event"));
    }
}
