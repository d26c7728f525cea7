//! Joint matters (联合事项, issue 13 item 4): reports of one incident from
//! several departments — a 110 call, a 12345 ticket, a 12369 complaint, a
//! law-enforcement case — shown as one matter.
//!
//! The SQL table [`TABLE`] (`matter_group`) has one row per current report
//! in the matter library: its `group_id` (the joint matter, `mg:<first
//! report>`), the `rule` that joined it (a cited number, the same party, the
//! same category near in space and time, or an operator's confirmation;
//! NULL for the report a group starts from) and the report's columns the
//! policy filters on (department, category, division, station, important)
//! plus source, stage and times. Count joint matters with
//! `count(DISTINCT group_id)`; a group's timeline is
//! `matter_group JOIN matter_event USING (matter_id)`.
//!
//! Groups are computed over **all** current reports by
//! [`lianqin_resolve::MatterGrouper`] with the rules of
//! `schemas/resolution/matter.toml`, and then the caller's policy applies to
//! `matter_group` like to any `matter*` table: a restricted analyst sees a
//! joint matter only with the reports (rows) and columns they may see. The
//! grouping is recomputed from the libraries when the table is read (about
//! 1–3 µs per report after the `matter` view is read), so it always agrees
//! with the current libraries and survives any restart or replay.
//!
//! Operator decisions ([`confirm`], [`split`]) are kept in
//! `<data dir>/resolution/matter_decisions.jsonl` — append-only, fsynced,
//! never rewritten (§7.4.3) — and replayed in order after the reports, so a
//! split never re-merges and a confirmation holds; each is also an audit
//! entry (written by the caller, see `lianqin matter`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use lianqin_resolve::{MatterDecision, MatterGrouper, MatterRules, Report};

use crate::PipelineError;

/// The SQL table of joint matters.
pub const TABLE: &str = "matter_group";

/// Columns read from the `matter` view for each report.
const REPORT_COLUMNS: &[&str] = &[
    "matter_id",
    "source_id",
    "department",
    "category",
    "stage",
    "important",
    "division",
    "station",
    "reported_at",
    "closed_at",
];

/// Columns of [`TABLE`] with their sensitivity label (for the policy).
pub fn column_labels() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("group_id", "public")];
    v.extend(REPORT_COLUMNS.iter().map(|c| (*c, "public")));
    v.push(("rule", "internal"));
    v
}

/// The decision log of a data dir.
pub fn decisions_path(data_dir: &Path) -> PathBuf {
    data_dir.join("resolution").join("matter_decisions.jsonl")
}

/// One line of the decision log.
pub type LoggedDecision = crate::journal::Decided<MatterDecision>;

/// Reads the decision log (empty when there is none; see [`crate::journal`]).
pub fn load_decisions(data_dir: &Path) -> Result<Vec<LoggedDecision>, PipelineError> {
    crate::journal::load(&decisions_path(data_dir))
}

/// Appends `d` to the decision log durably (fsync).
pub fn append_decision(data_dir: &Path, d: &LoggedDecision) -> Result<(), PipelineError> {
    crate::journal::append(&decisions_path(data_dir), d)
}

/// The report rows (columns [`REPORT_COLUMNS`] plus title, content, lon,
/// lat, party, address, reopened_from) of the current matters, read with
/// `ctx` (unrestricted).
async fn read_reports(ctx: &SessionContext) -> Result<RecordBatch, PipelineError> {
    let cols: Vec<String> = REPORT_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    let sql = format!(
        "SELECT {}, title, content, lon, lat, party_element_id, address, reopened_from FROM matter ORDER BY matter_id",
        cols.join(", ")
    );
    let df = ctx.sql(&sql).await.map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))?;
    concat_batches(&schema, &batches).map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))
}

/// A text column as `Utf8` (the libraries' Parquet may read as views).
fn text_column(b: &RecordBatch, name: &str) -> Option<StringArray> {
    let c = b.column_by_name(name)?;
    let c = arrow::compute::cast(c, &DataType::Utf8).ok()?;
    c.as_string_opt::<i32>().cloned()
}

fn float(b: &RecordBatch, name: &str, i: usize) -> Option<f64> {
    let c = b.column_by_name(name)?.as_primitive_opt::<arrow::datatypes::Float64Type>()?;
    c.is_valid(i).then(|| c.value(i))
}

/// The reports of `batch` as the grouper sees them.
fn reports(batch: &RecordBatch) -> Vec<Report> {
    let at = batch.column_by_name("reported_at").and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    let cols: Vec<Option<StringArray>> =
        ["matter_id", "title", "content", "category", "party_element_id", "address", "reopened_from"]
            .iter()
            .map(|n| text_column(batch, n))
            .collect();
    let text = |c: usize, i: usize| cols[c].as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string());
    (0..batch.num_rows())
        .filter_map(|i| {
            let id = text(0, i)?;
            Some(Report {
                number: id.split_once(':').map(|(_, k)| k.to_string()),
                category: text(3, i),
                lon: float(batch, "lon", i),
                lat: float(batch, "lat", i),
                // A report without a time joins only by number or party.
                reported_at: at.filter(|a| a.is_valid(i)).map(|a| a.value(i).div_euclid(1_000_000)).unwrap_or(0),
                party: text(4, i),
                address: text(5, i),
                // A re-handled ticket cites its original (`12345:<number>`).
                text: format!(
                    "{} {} {}",
                    text(1, i).unwrap_or_default(),
                    text(2, i).unwrap_or_default(),
                    text(6, i).as_deref().and_then(|r| r.split_once(':')).map(|(_, n)| n).unwrap_or_default()
                ),
                id,
            })
        })
        .collect()
}

/// Groups the current matters read with `ctx` (unrestricted) and replays
/// the decisions of `data_dir`. Decisions naming a report that is no
/// longer (or not yet) in the library are skipped with a warning.
pub async fn group(
    ctx: &SessionContext,
    data_dir: Option<&Path>,
) -> Result<(MatterGrouper, RecordBatch), PipelineError> {
    let batch = read_reports(ctx).await?;
    let mut g = MatterGrouper::new(MatterRules::shipped());
    for r in reports(&batch) {
        let id = r.id.clone();
        g.add(r).map_err(|e| PipelineError::Query(format!("{TABLE}: report {id}: {e}")))?;
    }
    if let Some(dir) = data_dir {
        for d in load_decisions(dir)? {
            if let Err(e) = g.apply(&d.decision) {
                tracing::warn!(decided_at = %d.at, by = %d.by, error = %e, "joint matters: a decision could not be replayed");
            }
        }
    }
    Ok((g, batch))
}

/// The rows of [`TABLE`] for `batch` grouped by `g`.
fn table_batch(g: &MatterGrouper, batch: &RecordBatch) -> Result<RecordBatch, PipelineError> {
    let links: std::collections::HashMap<String, (String, Option<String>)> =
        g.links().into_iter().map(|(id, gid, rule)| (id, (gid, rule.map(|r| r.describe())))).collect();
    let ids = text_column(batch, "matter_id")
        .ok_or_else(|| PipelineError::Internal(format!("{TABLE}: matter_id is not text")))?;
    let group: StringArray = ids.iter().map(|id| id.and_then(|id| links.get(id)).map(|l| l.0.clone())).collect();
    let rule: StringArray = ids.iter().map(|id| id.and_then(|id| links.get(id)).and_then(|l| l.1.clone())).collect();
    let mut fields = vec![Field::new("group_id", DataType::Utf8, true)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(group)];
    for c in REPORT_COLUMNS {
        let (i, f) = batch
            .schema()
            .column_with_name(c)
            .map(|(i, f)| (i, f.clone()))
            .ok_or_else(|| PipelineError::Internal(format!("{TABLE}: no column {c}")))?;
        fields.push(f.with_nullable(true));
        cols.push(Arc::clone(batch.column(i)));
    }
    fields.push(Field::new("rule", DataType::Utf8, true));
    cols.push(Arc::new(rule));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| PipelineError::Internal(format!("{TABLE}: {e}")))
}

/// The `matter_group` table (see the module docs): computed when read.
pub struct MatterGroupTable {
    ctx: SessionContext,
    data_dir: Option<PathBuf>,
    schema: SchemaRef,
}

impl std::fmt::Debug for MatterGroupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatterGroupTable").field("data_dir", &self.data_dir).finish()
    }
}

impl MatterGroupTable {
    /// The table over the `matter` view of `ctx` (a session without any
    /// policy: grouping sees every report; the caller's policy applies to
    /// this table's rows afterwards). `data_dir` holds the decisions.
    pub async fn new(ctx: SessionContext, data_dir: Option<PathBuf>) -> Result<Self, PipelineError> {
        // The schema from an empty grouping of the view's columns.
        let cols: Vec<String> = REPORT_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
        let df = ctx
            .sql(&format!("SELECT {} FROM matter LIMIT 0", cols.join(", ")))
            .await
            .map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))?;
        let mut fields = vec![Field::new("group_id", DataType::Utf8, true)];
        fields.extend(df.schema().as_arrow().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        fields.push(Field::new("rule", DataType::Utf8, true));
        Ok(MatterGroupTable { ctx, data_dir, schema: Arc::new(Schema::new(fields)) })
    }
}

#[async_trait]
impl TableProvider for MatterGroupTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let ext = |e: PipelineError| DataFusionError::External(Box::new(e));
        let (g, batch) = group(&self.ctx, self.data_dir.as_deref()).await.map_err(ext)?;
        let rows = table_batch(&g, &batch).map_err(ext)?;
        let rows = RecordBatch::try_new(Arc::clone(&self.schema), rows.columns().to_vec())?;
        let mem = MemTable::try_new(Arc::clone(&self.schema), vec![vec![rows]])?;
        mem.scan(state, projection, &[], limit).await
    }
}

/// What an operator decides.
#[derive(Debug, Clone)]
pub enum Decide {
    /// Reports `a` and `b` are one incident.
    Confirm {
        /// A report (matter id).
        a: String,
        /// Another.
        b: String,
    },
    /// `report` is not the incident of the other reports of its group.
    Split {
        /// The report (matter id).
        report: String,
    },
}

/// Applies `what` to the current grouping (checking that the reports exist
/// and the decision makes sense), then logs it durably; returns the logged
/// decision. `by` names the officer; `reason` is required.
pub async fn decide(
    ctx: &SessionContext,
    data_dir: &Path,
    what: &Decide,
    by: &str,
    reason: &str,
) -> Result<LoggedDecision, PipelineError> {
    let reason = crate::journal::operator_reason(by, reason)?;
    let (mut g, _) = group(ctx, Some(data_dir)).await?;
    let bad = |e: lianqin_resolve::ResolveError| PipelineError::Config(e.to_string());
    match what {
        Decide::Confirm { a, b } => {
            if g.group_of(a).map_err(bad)? == g.group_of(b).map_err(bad)? {
                return Err(PipelineError::Config(format!("{a} and {b} are already one joint matter")));
            }
            g.confirm(a, b, &reason).map_err(bad)?;
        }
        Decide::Split { report } => {
            g.split(report, &reason).map_err(bad)?;
        }
    }
    let decision =
        g.decisions().last().cloned().ok_or_else(|| PipelineError::Internal("the decision was not kept".into()))?;
    let logged = LoggedDecision::now(by, decision);
    append_decision(data_dir, &logged)?;
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(n: usize) -> LoggedDecision {
        LoggedDecision {
            at: format!("2026-12-04T00:00:0{n}Z"),
            by: "wang".into(),
            decision: MatterDecision::Confirm { a: format!("a:{n}"), b: "b:1".into(), reason: "wang: same".into() },
        }
    }

    #[test]
    fn the_decision_log_survives_a_torn_line_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_decisions(dir.path()).unwrap().is_empty());
        append_decision(dir.path(), &logged(1)).unwrap();
        // A crash in the middle of the second append.
        let p = decisions_path(dir.path());
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"{\"at\":\"2026-12-0").unwrap();
        drop(f);
        assert_eq!(load_decisions(dir.path()).unwrap(), vec![logged(1)]);
        append_decision(dir.path(), &logged(2)).unwrap();
        assert_eq!(load_decisions(dir.path()).unwrap(), vec![logged(1), logged(2)]);
        // A bad line in the middle is refused with file and line.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"by\"", "\"who\"", 1)).unwrap();
        let e = load_decisions(dir.path()).unwrap_err().to_string();
        assert!(e.contains("matter_decisions.jsonl:1"), "{e}");
    }
}
