//! Policy hot reload: with `$LIANQIN_POLICIES` set (a
//! [`PolicySource::Dir`](lianqin_policies::PolicySource)), the server looks
//! at the folder every [`POLICY_CHECK`]; a sealed set that loads
//! (`lianqin policy seal`: `policy.manifest` names each file's SHA-256)
//! applies to the next statement of every session and is an audited
//! `policy_change` with both versions; one that does not load — a file
//! half-written or edited but not yet sealed, a manifest that does not
//! match, a file that does not parse — is refused (the policy in force
//! stays) and recorded as a failed `policy_change`. Each statement is
//! secured and audited under one snapshot of the policy (`handler::Ctx`).

use std::sync::Arc;
use std::time::Duration;

use lianqin_policies::PolicyEngine;
use tracing::{info, warn};

use super::Shared;

/// How often the wire server looks at `$LIANQIN_POLICIES` for changes.
pub(super) const POLICY_CHECK: Duration = Duration::from_secs(2);

impl Shared {
    /// The policy in force now.
    pub(super) fn policy(&self) -> Arc<PolicyEngine> {
        match self.policy.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads `$LIANQIN_POLICIES` again when its files changed. A policy that
    /// loads replaces the old one for every later statement (also in open
    /// sessions) and is recorded as a `policy_change` entry with both
    /// versions; one that does not load is refused — the old policy stays
    /// in force — and recorded as a failed `policy_change` naming the error.
    ///
    /// Sharing grants count as part of the policy: a new approval, a
    /// revocation or a grant reaching its end reloads it too.
    pub(super) async fn reload_policy_if_changed(&self) {
        let dir = self.policy_source.dir().map(std::path::Path::to_path_buf).unwrap_or_default();
        let grants = match crate::sharing::active_grants(&self.data_dir, chrono::Utc::now()) {
            Ok((g, _)) => g.iter().map(|g| g.role.clone()).collect::<Vec<_>>().join(","),
            Err(e) => {
                warn!("sharing grants unreadable, keeping the policy in force: {e}");
                return;
            }
        };
        let hash = format!("{}|{grants}", self.policy_source.files_hash().unwrap_or_else(|| "builtin".into()));
        {
            let mut seen = self.policy_files.lock().await;
            if seen.as_deref() == Some(hash.as_str()) {
                return;
            }
            *seen = Some(hash);
        }
        let old = self.policy();
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        match crate::policy::load_from(&self.policy_source, &self.data_dir).await.map_err(|e| e.to_string()) {
            Ok(new) if new.version() == old.version() => {}
            Ok(new) => {
                let version = new.version();
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                // Sessions are rebuilt with the new masks and catalogs.
                *self.engine.lock().await = None;
                self.meta.lock().await.clear();
                info!(from = %old.version(), to = %version, "policy reloaded");
                let detail = serde_json::json!({ "reloaded_by": "pgwire", "dir": dir.display().to_string() });
                if let Err(e) = crate::audit::note_version(&self.audit, "policy", &version, detail) {
                    warn!("policy reloaded but its audit entry failed: {e}");
                }
            }
            Err(e) => {
                warn!(dir = %dir.display(), keeping = %old.version(), "policy change refused: {e}");
                let mut ev =
                    AuditEvent::new(EventKind::PolicyChange, "system:pgwire", "eco_police_office", Outcome::Failure);
                ev.rule_version = Some(old.version());
                ev.detail = serde_json::json!({ "what": "policy", "error": e.to_string(), "kept": old.version(), "dir": dir.display().to_string() });
                if let Err(e) = self.audit.record_durable(ev) {
                    warn!("refused policy change not audited: {e}");
                }
            }
        }
    }
}
