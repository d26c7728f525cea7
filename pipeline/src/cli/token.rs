//! `lianqin token resolve TOKEN --as USER`: the value behind a person token
//! (`pt:<hex>`, [`crate::mapping::personal`]) for a user whose policy shows
//! it.
//!
//! There is no way back from a token but the libraries: the element the
//! token names holds the identifier (`element.id_value`, labelled
//! personal). Resolving is a query over `element` through the user's policy
//! like any other — audited as a `query` entry — so a user whose policy
//! masks `id_value` sees the mask, and one who may not read the element's
//! department sees nothing. The reverse (value → token) is not offered: it
//! would confirm guessed IDs.

use arrow::array::RecordBatch;

use crate::PipelineError;
use crate::mapping::personal::TOKEN_PREFIX;
use crate::query::QueryEngine;

/// Checks the form of a person token: `pt:` and 64 lowercase hex digits.
pub fn check_token(token: &str) -> Result<&str, PipelineError> {
    let t = token.trim();
    match t.strip_prefix(TOKEN_PREFIX) {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(t),
        _ => Err(PipelineError::Config(format!(
            "{token:?} is not a person token (expected {TOKEN_PREFIX} and 64 lowercase hex digits, as in element_id)"
        ))),
    }
}

/// The SQL that resolves `token` (checked) over the current elements.
pub fn resolve_sql(token: &str) -> Result<String, PipelineError> {
    let t = check_token(token)?;
    // Checked above: only `pt:` and hex digits, nothing to escape.
    Ok(format!("SELECT element_id, kind, id_type, id_value, name, department FROM element WHERE element_id = '{t}'"))
}

/// Resolves `token` with `engine` (which carries the user's policy and the
/// audit of the statement).
pub async fn resolve(engine: &QueryEngine, token: &str) -> Result<Vec<RecordBatch>, PipelineError> {
    engine.sql(&resolve_sql(token)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_resolved() {
        let good = format!("pt:{}", "ab".repeat(32));
        assert!(resolve_sql(&good).unwrap().ends_with(&format!("'{good}'")));
        for bad in [
            "330502198001011231".to_string(),
            format!("pt:{}", "AB".repeat(32)),
            format!("pt:{}", "ab".repeat(31)),
            format!("pt:{}' OR '1'='1", "ab".repeat(32)),
            "pt:".to_string(),
        ] {
            let e = resolve_sql(&bad).unwrap_err().to_string();
            assert!(e.contains("not a person token"), "{bad}: {e}");
        }
    }
}
