//! The query session behind the wire server, shared by every connection:
//! rebuilt when a library has a new commit (the data dir's Delta logs are
//! checked at most once a second) or the policy changed, with the `audit`
//! table attached as in `lianqin sql` and the policy's mask functions.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lianqin_policies::Principal;

use super::Shared;
use crate::PipelineError;
use crate::library::LibraryStore;
use crate::query::{QueryEngine, columns_of};

/// The shared query session and what it was built from.
pub(super) struct EngineCache {
    pub(super) engine: Arc<QueryEngine>,
    pub(super) fingerprint: Vec<(String, String)>,
    pub(super) checked: Instant,
    /// Version of the policy the engine's mask functions came from.
    pub(super) policy_version: String,
}

/// Newest Delta log entry of every table under `<data_dir>/lake`.
pub(super) fn fingerprint(data_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(data_dir.join("lake")) {
        for e in rd.flatten() {
            let log = e.path().join("_delta_log");
            let newest = std::fs::read_dir(&log)
                .map(|r| {
                    r.flatten()
                        .map(|f| f.file_name().to_string_lossy().to_string())
                        .filter(|n| n.ends_with(".json"))
                        .max()
                })
                .ok()
                .flatten();
            if let Some(n) = newest {
                out.push((e.file_name().to_string_lossy().to_string(), n));
            }
        }
    }
    out.sort();
    out
}

impl Shared {
    /// The query session, rebuilt when a library has a new commit or the
    /// policy changed.
    pub(super) async fn engine(&self) -> Result<Arc<QueryEngine>, PipelineError> {
        let policy = self.policy();
        let mut g = self.engine.lock().await;
        if let Some(c) = g.as_mut().filter(|c| c.policy_version == policy.version()) {
            if c.checked.elapsed() < Duration::from_secs(1) {
                return Ok(Arc::clone(&c.engine));
            }
            let fp = fingerprint(&self.data_dir);
            if fp == c.fingerprint {
                c.checked = Instant::now();
                return Ok(Arc::clone(&c.engine));
            }
        }
        let fp = fingerprint(&self.data_dir);
        let store = LibraryStore::open_existing(&self.data_dir, Arc::clone(&self.catalog)).await?;
        let mut engine = QueryEngine::new(&store, &self.catalog).await?;
        // The `audit` table, as `lianqin sql` has it; the policy lets only
        // the auditor role read it (everyone else: 42501).
        engine.attach_audit_table(&self.audit);
        policy.mask_functions().register(engine.context());
        let engine = Arc::new(engine);
        *g = Some(EngineCache {
            engine: Arc::clone(&engine),
            fingerprint: fp,
            checked: Instant::now(),
            policy_version: policy.version(),
        });
        Ok(engine)
    }

    /// Tables (and views) of `engine` that `who` may read.
    pub(super) fn visible_tables(&self, who: &Principal, engine: &QueryEngine) -> Vec<String> {
        let catalog = &self.catalog;
        engine
            .tables()
            .iter()
            .filter(|t| {
                let base = if matches!(t.as_str(), "element" | "matter" | "matter_event") {
                    format!("{t}_history")
                } else {
                    t.to_string()
                };
                self.policy().decide_sync(who, &base, &columns_of(catalog, &base)).allowed
            })
            .cloned()
            .collect()
    }
}
