//! The one policy loader of the runtime: the policy set in force
//! (`$LIANQIN_POLICIES`, a sealed folder, or the built-in `policies/` files;
//! [`lianqin_policies::PolicySource`]) with the `hash` mask keyed by the
//! data dir's person-token secret ([`crate::mapping::personal::data_dir_key`]),
//! so a hashed column equals the `person_token` ids the hub wrote and an
//! analyst can join on it without seeing the value.
//!
//! Approved sharing grants in force ([`crate::sharing`]) are added to it.
//!
//! Every path that decides a statement loads through here: `lianqin sql
//! --as`, `export`, `token`, the Postgres wire server and its hot reload,
//! outbound flows, the auditor checks of `lianqin audit`.

use std::path::Path;

use lianqin_policies::{PolicyEngine, PolicySource};

use crate::PipelineError;

/// The policy of `$LIANQIN_POLICIES` (or the built-in files) for `data_dir`.
pub async fn load(data_dir: &Path) -> Result<PolicyEngine, PipelineError> {
    load_from(&PolicySource::from_env(), data_dir).await
}

/// The policy of `source` for `data_dir`, with the sharing grants in force
/// now ([`crate::sharing`]).
pub async fn load_from(source: &PolicySource, data_dir: &Path) -> Result<PolicyEngine, PipelineError> {
    Ok(load_with_grants(source, data_dir).await?.0)
}

/// [`load_from`], and when its first grant ends (a server reloads then).
pub async fn load_with_grants(
    source: &PolicySource,
    data_dir: &Path,
) -> Result<(PolicyEngine, Option<chrono::DateTime<chrono::Utc>>), PipelineError> {
    let engine = source.load().await.map_err(|e| PipelineError::Config(format!("policies ({source}): {e}")))?;
    let (grants, next_end) = crate::sharing::active_grants(data_dir, chrono::Utc::now())?;
    let engine = engine.with_grants(&grants).await.map_err(|e| {
        PipelineError::Config(format!("sharing grants ({}): {e}", crate::sharing::journal_path(data_dir).display()))
    })?;
    Ok((keyed(engine, data_dir)?, next_end))
}

/// `engine` with its `hash` mask keyed by `data_dir`'s token secret.
pub fn keyed(engine: PolicyEngine, data_dir: &Path) -> Result<PolicyEngine, PipelineError> {
    let key = crate::mapping::personal::data_dir_key(data_dir)?;
    Ok(engine.with_token_key(key.bytes()))
}
