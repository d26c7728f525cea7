//! `lianqin element explain|review|merge|split`: resolved persons and,
//! with `--kind unit`, enterprises ([`crate::persons`]; the
//! [`Entity`] says which tables and which decision log) for analysts and
//! officers.
//!
//! `explain ID` shows the person of an element (or a person id): every
//! element of the person, its department and the rule that joined it, and
//! — for the local operator, who may see the whole cluster — each linked
//! pair's comparisons (field, level, weight; never the values). Through
//! `--as` it is a query over `element_link` with the user's policy, so an
//! analyst sees only the elements they may read; audited as a query.
//!
//! `review` lists the uncertain pairs (`element_review`), again through the
//! caller's policy.
//!
//! `merge A B` and `split ID` are operator decisions: they need `--by` (the
//! officer who decided) and `--reason`, run as the local operator (whoever
//! can write the data dir), are kept in the append-only decision log and
//! written to the audit trail before the command reports success.

use arrow::array::RecordBatch;

use crate::PipelineError;
use crate::persons::{Decide, Entity, LoggedDecision};
use crate::query::QueryEngine;

/// Checks an element id (`pt:<hex>`, `uscc:…`, `unit:<hex>`) or a
/// resolved id (`person:<element id>`, `unit:<element id>`): letters,
/// digits and `:_-./` only (it is put in SQL).
pub fn check_id(id: &str) -> Result<&str, PipelineError> {
    let t = id.trim();
    if !t.is_empty() && t.contains(':') && t.chars().all(|c| c.is_alphanumeric() || ":_-./".contains(c)) {
        Ok(t)
    } else {
        Err(PipelineError::Config(format!(
            "{id:?} is not an element id (as in element_id, e.g. pt:… or uscc:…) or a resolved id (person:…, unit:…)"
        )))
    }
}

/// The SQL that lists the person or enterprise (`e`) of `id` (checked).
pub fn explain_sql(e: &Entity, id: &str) -> Result<String, PipelineError> {
    let id = check_id(id)?;
    Ok(format!(
        "SELECT {c}, element_id, department, source_id, division, rule, match_weight FROM {t} \
         WHERE {c} IN (SELECT {c} FROM {t} WHERE element_id = '{id}' OR {c} = '{id}') \
         ORDER BY element_id",
        t = e.link_table,
        c = e.id_column
    ))
}

/// The SQL of the review queue of `e`, strongest pairs first.
pub fn review_sql(e: &Entity, limit: usize) -> String {
    format!(
        "SELECT element_id, other_element_id, department, other_department, match_weight, probability, comparisons \
         FROM {} ORDER BY match_weight DESC, element_id, other_element_id LIMIT {limit}",
        e.review_table
    )
}

/// Explains `id` with `engine` (the caller's policy and audit).
pub async fn explain(engine: &QueryEngine, e: &Entity, id: &str) -> Result<Vec<RecordBatch>, PipelineError> {
    engine.sql(&explain_sql(e, id)?).await
}

/// The comparisons behind the person or enterprise of `id`, for the local
/// operator (unrestricted engine): [`lianqin_resolve::Explanation::render`].
pub async fn explain_weights(
    engine: &QueryEngine,
    e: &Entity,
    data_dir: &std::path::Path,
    id: &str,
) -> Result<String, PipelineError> {
    let id = check_id(id)?;
    let (r, _) = crate::persons::resolve_entity(e, engine.context(), Some(data_dir)).await?;
    let prefix = format!("{}:", e.kind);
    // An enterprise element id may itself start with `unit:`: a resolved id
    // is recognized by naming a cluster.
    let cluster = match r.cluster_of(id) {
        Ok(c) => c,
        Err(_) if id.starts_with(&prefix) => id.to_string(),
        Err(err) => return Err(not_found(e, err)),
    };
    Ok(r.explain(&cluster).map_err(|err| not_found(e, err))?.render())
}

fn not_found(e: &Entity, err: lianqin_resolve::ResolveError) -> PipelineError {
    let what = if e.kind == "unit" { "enterprise" } else { "person" };
    PipelineError::Config(format!("no {what} element with this id: {err}"))
}

/// Records an operator decision on persons or enterprises (`e`): checked
/// against the current resolution, appended to `e`'s decision log, then
/// audited (durably).
pub async fn decide(
    engine: &QueryEngine,
    audit: &crate::audit::Audit,
    e: &Entity,
    data_dir: &std::path::Path,
    what: &Decide,
    by: &str,
    reason: &str,
) -> Result<LoggedDecision, PipelineError> {
    match what {
        Decide::Merge { a, b } => {
            check_id(a)?;
            check_id(b)?;
        }
        Decide::Split { element } => {
            check_id(element)?;
        }
    }
    let logged = crate::persons::decide(e, engine.context(), data_dir, what, by, reason).await?;
    let action = if e.kind == "unit" { "unit_decision" } else { "element_decision" };
    super::audit_decision(audit, e.link_table, action, &logged)?;
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_reach_sql() {
        assert!(explain_sql(&crate::persons::PERSONS, "pt:0a1b").unwrap().contains("'pt:0a1b'"));
        assert!(explain_sql(&crate::persons::PERSONS, "person:pt:0a1b").is_ok());
        for bad in ["", "0a1b", "pt:a' OR '1'='1", "pt:a;DROP", "pt:a b"] {
            let e = explain_sql(&crate::persons::PERSONS, bad).unwrap_err().to_string();
            assert!(e.contains("not an element id"), "{bad}: {e}");
        }
    }
}
