//! The `audit` table over SQL (issue 5, §3): the decrypted audit trail of
//! every stream under `<data-dir>/audit/`, one row per entry, for the
//! auditor role only.
//!
//! * Registered by the query engine when a session has an audit trail
//!   (`QueryEngine::with_audit`; a session without one has no `audit` table:
//!   reading it is audited). This module does not depend on the query engine.
//! * Read when a query scans it (never cached), so a session sees the entries
//!   written up to that moment, its own included (the session's stream is
//!   flushed first).
//! * Access: `policies/policy.csv` grants `read` on `audit` to the `auditor`
//!   role only; administrators are explicitly denied (separation of duties,
//!   三员分立, GB/T 22239-2019 8.1.4.2 d), analysts have no rule (deny by
//!   default), and a session without a policy — `lianqin sql` without `--as`
//!   — is refused by the query engine. Every read is an `audit_read` entry,
//!   every refusal a `denial` entry.
//! * Columns (see [`schema`]); list-valued fields (`tables`, `columns`,
//!   `masks`, `filters`) are comma-separated text so that every output
//!   format (table, CSV, JSON) can carry them; `detail` is JSON text.
//! * Filters on `stream`, `seq` and `time` are applied while reading (the
//!   clear-text header of an entry answers `seq`/`time` without decrypting
//!   it); everything else is filtered by DataFusion.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use lianqin_audit::{AuditFilter, AuditRecord};

use super::Audit;

/// SQL name of the table.
pub const TABLE: &str = "audit";

/// The table's columns: `(name, type, description)`.
pub fn columns() -> Vec<(&'static str, DataType, &'static str)> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        ("stream", DataType::Utf8, "audit stream (directory under audit/; one per writing process/node)"),
        ("seq", DataType::UInt64, "sequence number within the stream (1, 2, 3, …)"),
        ("time", ts, "when it happened (UTC)"),
        ("node", DataType::Utf8, "hub node that recorded it"),
        (
            "kind",
            DataType::Utf8,
            "event type: login, query, denial, flow, export, policy_change, config_change, connector_run, quarantine, audit_read, other",
        ),
        ("user", DataType::Utf8, "acting user"),
        ("department", DataType::Utf8, "the user's department"),
        ("client", DataType::Utf8, "client address"),
        ("session", DataType::Utf8, "session id"),
        ("outcome", DataType::Utf8, "decision / result: allow, deny, success, failure"),
        ("rule", DataType::Utf8, "policy rule(s) that decided"),
        ("policy_version", DataType::Utf8, "version (hash) of the policy files that decided"),
        ("sql", DataType::Utf8, "SQL text as submitted"),
        ("tables", DataType::Utf8, "tables touched (comma-separated)"),
        ("columns", DataType::Utf8, "columns touched, table.column (comma-separated)"),
        ("rows", DataType::UInt64, "rows returned / affected"),
        ("masks", DataType::Utf8, "column masks applied, table.column:action (comma-separated)"),
        ("filters", DataType::Utf8, "row filters applied, table: predicate (comma-separated)"),
        ("duration_ms", DataType::UInt64, "duration in milliseconds"),
        ("detail", DataType::Utf8, "further details (JSON)"),
    ]
}

/// Arrow schema of the table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(columns().into_iter().map(|(n, t, _)| Field::new(n, t, true)).collect::<Vec<_>>()))
}

/// Column metadata for the policy engine. Every column is `internal`: the
/// auditor's job needs the SQL text, users and addresses in clear, and no
/// one else may read the table at all.
pub fn column_meta() -> Vec<lianqin_policies::ColumnMeta> {
    columns().into_iter().map(|(n, _, _)| lianqin_policies::ColumnMeta::new(n, "internal", None)).collect()
}

/// The `audit` table provider over the streams of one data dir.
pub struct AuditTable {
    audit: Audit,
}

impl std::fmt::Debug for AuditTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTable").field("data_dir", &self.audit.data_dir()).finish()
    }
}

impl AuditTable {
    /// A provider reading the streams of `audit`'s data dir with its key.
    pub fn new(audit: Audit) -> Self {
        AuditTable { audit }
    }
}

/// Decrypts the entries admitted by `filter` of every stream (or of
/// `only_stream`) into one batch.
fn read(audit: &Audit, filter: &AuditFilter, only_stream: Option<&str>) -> Result<RecordBatch, crate::PipelineError> {
    {
        // Our own buffered entries become visible to the reader.
        let _ = audit.log().flush();
        let mut rows: Vec<(String, AuditRecord)> = Vec::new();
        for dir in super::streams(audit.data_dir()) {
            let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
            if only_stream.is_some_and(|s| s != name) {
                continue;
            }
            let recs = lianqin_audit::read(&dir, audit.key(), filter.clone())
                .map_err(|e| crate::PipelineError::Query(format!("audit stream {name}: {e}")))?;
            for r in recs {
                let r = r.map_err(|e| crate::PipelineError::Query(format!("audit stream {name}: {e}")))?;
                rows.push((name.clone(), r));
            }
        }
        to_batch(&rows)
    }
}

fn join(v: &[String]) -> Option<String> {
    if v.is_empty() { None } else { Some(v.join(",")) }
}

/// Entries as one batch of [`schema`].
pub fn to_batch(rows: &[(String, AuditRecord)]) -> Result<RecordBatch, crate::PipelineError> {
    let n = rows.len();
    let mut stream = StringBuilder::with_capacity(n, n * 8);
    let mut seq = UInt64Builder::with_capacity(n);
    let mut time = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut text: Vec<StringBuilder> = (0..15).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut rows_col = UInt64Builder::with_capacity(n);
    let mut duration = UInt64Builder::with_capacity(n);
    for (s, r) in rows {
        let e = &r.event;
        stream.append_value(s);
        seq.append_value(r.seq);
        time.append_value(e.time.timestamp_micros());
        let vals: [Option<String>; 15] = [
            Some(e.node.clone()),
            Some(e.kind.as_str().to_string()),
            Some(e.user.clone()),
            Some(e.department.clone()),
            e.client_addr.clone(),
            e.session.clone(),
            Some(e.outcome.as_str().to_string()),
            e.rule.clone(),
            e.rule_version.clone(),
            e.sql.clone(),
            join(&e.tables),
            join(&e.columns),
            join(&e.masks),
            join(&e.filters),
            if e.detail.is_null() { None } else { Some(e.detail.to_string()) },
        ];
        for (b, v) in text.iter_mut().zip(vals) {
            b.append_option(v);
        }
        rows_col.append_option(e.rows);
        duration.append_option(e.duration_ms);
    }
    let mut t = text.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || t.next().unwrap_or_else(|| Arc::new(StringBuilder::new().finish()));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(stream.finish()),
        Arc::new(seq.finish()),
        Arc::new(time.finish()),
        next(), // node
        next(), // kind
        next(), // user
        next(), // department
        next(), // client
        next(), // session
        next(), // outcome
        next(), // rule
        next(), // policy_version
        next(), // sql
        next(), // tables
        next(), // columns
        Arc::new(rows_col.finish()),
        next(), // masks
        next(), // filters
        Arc::new(duration.finish()),
        next(), // detail
    ];
    RecordBatch::try_new(schema(), cols).map_err(|e| crate::PipelineError::Internal(format!("audit table: {e}")))
}

/// What a pushed-down predicate tells the reader (header-level pruning).
fn narrow(e: &Expr, f: &mut AuditFilter, stream: &mut Option<String>) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else { return false };
    if *op == Operator::And {
        // Each side narrows independently; both are re-checked above the scan.
        let a = narrow(left, f, stream);
        let b = narrow(right, f, stream);
        return a || b;
    }
    let (col, val, op) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), v, *op),
        (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
            Some(o) => (c.name.as_str(), v, o),
            None => return false,
        },
        _ => return false,
    };
    match (col, val) {
        ("stream", ScalarValue::Utf8(Some(s))) if op == Operator::Eq => {
            *stream = Some(s.clone());
            true
        }
        ("seq", v) => {
            let Some(n) = scalar_u64(v) else { return false };
            match op {
                Operator::Eq => {
                    f.from_seq = Some(n);
                    f.to_seq = Some(n);
                }
                Operator::Gt => f.from_seq = Some(n.saturating_add(1)),
                Operator::GtEq => f.from_seq = Some(n),
                Operator::Lt if n > 0 => f.to_seq = Some(n - 1),
                Operator::LtEq => f.to_seq = Some(n),
                _ => return false,
            }
            true
        }
        ("time", ScalarValue::TimestampMicrosecond(Some(us), _)) => {
            let Some(t) = chrono::DateTime::from_timestamp_micros(*us) else { return false };
            match op {
                Operator::Gt | Operator::GtEq => f.from = Some(t),
                // `to` is exclusive; one microsecond more keeps `<=` rows.
                Operator::LtEq => f.to = Some(t + chrono::Duration::microseconds(1)),
                Operator::Lt => f.to = Some(t),
                _ => return false,
            }
            true
        }
        _ => false,
    }
}

fn scalar_u64(v: &ScalarValue) -> Option<u64> {
    match v {
        ScalarValue::UInt64(Some(n)) => Some(*n),
        ScalarValue::Int64(Some(n)) if *n >= 0 => Some(*n as u64),
        ScalarValue::Int32(Some(n)) if *n >= 0 => Some(*n as u64),
        ScalarValue::UInt32(Some(n)) => Some(u64::from(*n)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used only to skip entries early; DataFusion re-applies every filter.
        Ok(filters
            .iter()
            .map(|e| {
                let mut f = AuditFilter::default();
                let mut s = None;
                if narrow(e, &mut f, &mut s) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
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
        let mut f = AuditFilter::default();
        let mut stream = None;
        for e in filters {
            narrow(e, &mut f, &mut stream);
        }
        // Decryption is CPU and file work: off the async workers.
        let audit = self.audit.clone();
        let batch = tokio::task::spawn_blocking(move || read(&audit, &f, stream.as_deref()))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mem = MemTable::try_new(schema(), vec![vec![batch]])?;
        mem.scan(state, projection, &[], limit).await
    }
}
