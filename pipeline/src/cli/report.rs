//! `lianqin report monthly|half-year`: station reports ([`crate::report`])
//! written with the reader's engine and recorded as an `export`.

/// `lianqin report`: writes the report of `scope` into `out` with
/// `engine` (the reader's policy; each query audited) and records the files
/// as one `export` audit entry before saying they are there.
pub async fn write(
    engine: &crate::query::QueryEngine,
    audit: &crate::audit::Audit,
    user: &str,
    scope: &crate::report::Scope,
    out: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, crate::PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let res = crate::report::write(engine, scope, out).await;
    let dept = engine.department().unwrap_or_default();
    let outcome = if res.is_ok() { Outcome::Success } else { Outcome::Failure };
    let mut ev = AuditEvent::new(EventKind::Export, user, dept, outcome);
    ev.tables = vec!["kpi_matter_facts".into(), "kpi_overdue_callback".into(), crate::recheck::TABLE.into()];
    ev.client_addr = Some("local".into());
    ev.detail = match &res {
        Ok((files, _)) => serde_json::json!({
            "report": format!("{scope:?}"),
            "destination": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "format": "xlsx+pdf",
        }),
        Err(e) => serde_json::json!({ "report": format!("{scope:?}"), "error": e.to_string() }),
    };
    ev.rows = res.as_ref().ok().map(|(_, n)| *n);
    audit.record_durable(ev)?;
    res.map(|(files, _)| files)
}
