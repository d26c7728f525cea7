//! `lianqin recheck draw|result`: the half-yearly second callback
//! ([`crate::recheck`], §8.1.3–8.1.4) for the superior department's
//! officers. Both run as the local operator (whoever can write the data
//! dir), need `--by` (the officer), append to the journal and write a
//! durable audit entry (`action = recheck_draw` / `recheck_result`) before
//! reporting success. Reading the results is SQL over `matter_recheck`.

use crate::PipelineError;
use crate::query::QueryEngine;
use crate::recheck::{Entry, StationDraw};

fn audit_entry(audit: &crate::audit::Audit, action: &str, detail: serde_json::Value) -> Result<(), PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let mut ev =
        AuditEvent::new(EventKind::Other, format!("local:{}", super::session::os_user()), "", Outcome::Success);
    ev.tables = vec![crate::recheck::TABLE.to_string()];
    ev.detail = serde_json::json!({ "action": action, "entry": detail });
    audit.record_durable(ev)?;
    Ok(())
}

/// Draws `half` ([`crate::recheck::draw`]) and audits each new draw.
pub async fn draw(
    engine: &QueryEngine,
    audit: &crate::audit::Audit,
    data_dir: &std::path::Path,
    half: &str,
    seed: Option<u64>,
    by: &str,
) -> Result<Vec<StationDraw>, PipelineError> {
    let (summary, written) = crate::recheck::draw(engine.context(), data_dir, half, seed, by).await?;
    for e in &written {
        audit_entry(audit, "recheck_draw", serde_json::to_value(e).unwrap_or_default())?;
    }
    Ok(summary)
}

/// Records a result ([`crate::recheck::record_result`]) and audits it.
#[allow(clippy::too_many_arguments)]
pub async fn result(
    engine: &QueryEngine,
    audit: &crate::audit::Audit,
    data_dir: &std::path::Path,
    catalog: &crate::schema::Catalog,
    matter_id: &str,
    answer: &str,
    handler: Option<&str>,
    note: &str,
    by: &str,
) -> Result<Entry, PipelineError> {
    let id = super::matter::check_id(matter_id)?;
    let codes = catalog
        .codes
        .get("satisfaction")
        .ok_or_else(|| PipelineError::Config("the code table `satisfaction` is missing".into()))?;
    let e = crate::recheck::record_result(engine.context(), data_dir, codes, id, answer, handler, note, by).await?;
    audit_entry(audit, "recheck_result", serde_json::to_value(&e).unwrap_or_default())?;
    Ok(e)
}

/// The draw summary as text, one station per line.
pub fn render(summary: &[StationDraw]) -> String {
    let mut out = String::new();
    for s in summary {
        let station = if s.station.is_empty() { "(no station)" } else { s.station.as_str() };
        out.push_str(&format!(
            "{station}: {} callback records, {} reopened → {}%: {} drawn ({} now), seed {}\n",
            s.population,
            s.reopened,
            s.rate_percent,
            s.drawn_total,
            s.drawn_now.len(),
            s.seed
        ));
    }
    if summary.is_empty() {
        out.push_str("no callback records in this half year\n");
    }
    out
}
