//! `lianqin keys list|rotate`: the data keys that seal sensitive columns at
//! rest ([`crate::sealed`]).
//!
//! `list` shows each key's id, department, version, creation time and
//! whether it seals new values (never key bytes). `rotate --department D`
//! starts a new version for D: values written from then on use it, older
//! values keep opening with theirs, and nothing is rewritten. A rotation is
//! recorded in the audit trail (`config_change`, action `data_key_rotate`)
//! before it is reported.

use std::path::Path;
use std::time::Duration;

use crate::PipelineError;
use crate::audit::Audit;
use crate::sealed::Keys;

fn when(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.with_timezone(&crate::time::beijing()).to_rfc3339())
        .unwrap_or_else(|| secs.to_string())
}

/// The keys of `data_dir`, one line each.
pub fn list(data_dir: &Path) -> Result<String, PipelineError> {
    let ring = Keys::new(data_dir).ring(false)?;
    let keys = ring.list().map_err(|e| PipelineError::Config(format!("data keys: {e}")))?;
    if keys.is_empty() {
        return Ok(format!(
            "no data keys in {} yet (the hub creates one per department as it writes)\n",
            ring.dir().display()
        ));
    }
    let mut out = format!("{:<28} {:<20} {:>7}  {:<25}  seals new values\n", "key", "department", "version", "created");
    for k in keys {
        out.push_str(&format!(
            "{:<28} {:<20} {:>7}  {:<25}  {}\n",
            k.key_id,
            k.department,
            k.version,
            when(k.created_at),
            if k.current { "yes" } else { "no (opens older values)" }
        ));
    }
    Ok(out)
}

/// Rotates `department`'s data key (audited as `who`); returns the report.
pub fn rotate(data_dir: &Path, department: &str, who: &str) -> Result<String, PipelineError> {
    let ring = Keys::new(data_dir).ring(false)?;
    let audit = Audit::open(data_dir, "cli", "cli", Duration::from_secs(3))?;
    let res = (|| {
        let k = ring.rotate(department).map_err(|e| PipelineError::Config(format!("data keys: {e}")))?;
        let mut ev = lianqin_audit::AuditEvent::new(
            lianqin_audit::EventKind::ConfigChange,
            who,
            department,
            lianqin_audit::Outcome::Success,
        );
        ev.detail = serde_json::json!({ "action": "data_key_rotate", "department": department, "key_id": k.key_id });
        audit.record_durable(ev)?;
        Ok(format!(
            "data key {} now seals new values of `{department}`; earlier keys stay to open what they sealed (nothing was rewritten)\n",
            k.key_id
        ))
    })();
    audit.sync();
    res
}
