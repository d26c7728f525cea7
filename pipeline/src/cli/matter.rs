//! `lianqin matter explain|confirm|split`: joint matters ([`crate::joint`])
//! for analysts and station officers.
//!
//! `explain ID` shows the joint matter of a report (or a group id) — every
//! report in time order, its department, stage and the rule that joined it —
//! as a query over `matter_group` through the caller's policy (`--as`), so
//! an analyst sees only the reports they may read; audited as a query.
//!
//! `confirm A B` and `split ID` are operator decisions: they need `--by`
//! (the officer who decided) and `--reason`, run as the local operator
//! (whoever can write the data dir), are kept in the append-only decision
//! log and written to the audit trail before the command reports success.

use arrow::array::RecordBatch;

use crate::PipelineError;
use crate::joint::{Decide, LoggedDecision};
use crate::query::QueryEngine;

/// Checks a matter id (`<source>:<key>`) or a group id (`mg:<matter id>`):
/// letters, digits and `:_-./` only (it is put in SQL).
pub fn check_id(id: &str) -> Result<&str, PipelineError> {
    let t = id.trim();
    if !t.is_empty() && t.contains(':') && t.chars().all(|c| c.is_alphanumeric() || ":_-./".contains(c)) {
        Ok(t)
    } else {
        Err(PipelineError::Config(format!(
            "{id:?} is not a matter id (<source>:<key>, as in matter_id) or a joint matter id (mg:…)"
        )))
    }
}

/// The SQL that lists the joint matter of `id` (checked).
pub fn explain_sql(id: &str) -> Result<String, PipelineError> {
    let id = check_id(id)?;
    Ok(format!(
        "SELECT group_id, matter_id, department, category, stage, reported_at, closed_at, rule FROM {t} \
         WHERE group_id IN (SELECT group_id FROM {t} WHERE matter_id = '{id}' OR group_id = '{id}') \
         ORDER BY reported_at, matter_id",
        t = crate::joint::TABLE
    ))
}

/// Explains `id` with `engine` (the caller's policy and audit).
pub async fn explain(engine: &QueryEngine, id: &str) -> Result<Vec<RecordBatch>, PipelineError> {
    engine.sql(&explain_sql(id)?).await
}

/// Records an operator decision: checked against the current grouping,
/// appended to the decision log, then audited (durably).
pub async fn decide(
    engine: &QueryEngine,
    audit: &crate::audit::Audit,
    data_dir: &std::path::Path,
    what: &Decide,
    by: &str,
    reason: &str,
) -> Result<LoggedDecision, PipelineError> {
    match what {
        Decide::Confirm { a, b } => {
            check_id(a)?;
            check_id(b)?;
        }
        Decide::Split { report } => {
            check_id(report)?;
        }
    }
    let logged = crate::joint::decide(engine.context(), data_dir, what, by, reason).await?;
    super::audit_decision(audit, crate::joint::TABLE, "matter_decision", &logged)?;
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_reach_sql() {
        assert!(explain_sql("police_110:J20250000001").unwrap().contains("'police_110:J20250000001'"));
        assert!(explain_sql("mg:hotline_12345:HZ-1.2").is_ok());
        for bad in ["", "J2025", "a:b' OR '1'='1", "a:b;DROP", "a:b c"] {
            let e = explain_sql(bad).unwrap_err().to_string();
            assert!(e.contains("not a matter id"), "{bad}: {e}");
        }
    }
}
