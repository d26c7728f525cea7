//! `lianqin confirm record`: the version of a matter as the confirming user
//! reads it ([`crate::confirm`]).

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;

use crate::PipelineError;
use crate::confirm::MatterVersion;
use crate::query::QueryEngine;

/// The matter `id` as `engine`'s user reads it; an error when they may not
/// read it or their policy hides its version.
pub async fn matter_version(engine: &QueryEngine, id: &str) -> Result<MatterVersion, PipelineError> {
    let q = format!(
        "SELECT matter_id, content_hash, department, category, division, station, important \
         FROM matter WHERE matter_id = '{}'",
        id.replace('\'', "''")
    );
    let batches = engine.sql(&q).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Err(PipelineError::Query(format!("{id}: no matter with this id that you may read")));
    };
    let text = |i: usize| -> Option<String> {
        let c = arrow::compute::cast(b.column(i), &DataType::Utf8).ok()?;
        let c = c.as_string::<i32>();
        c.is_valid(0).then(|| c.value(0).to_string())
    };
    let hash = text(1).unwrap_or_default();
    if hash.len() != 32 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PipelineError::Query(format!(
            "{id}: your policy does not show this matter's version (content_hash); it cannot be confirmed by you"
        )));
    }
    let important = arrow::compute::cast(b.column(6), &DataType::Boolean).ok().and_then(|c| {
        let c = c.as_boolean();
        c.is_valid(0).then(|| c.value(0))
    });
    Ok(MatterVersion {
        matter_id: text(0).unwrap_or_default(),
        content_hash: hash,
        department: text(2),
        category: text(3),
        division: text(4),
        station: text(5),
        important,
    })
}

/// The confirmations of matter `id` that verify and are of its current
/// version (as `engine` reads it); an error naming why there are none.
pub async fn check_matter(
    engine: &QueryEngine,
    data_dir: &std::path::Path,
    id: &str,
) -> Result<Vec<crate::confirm::Confirmation>, PipelineError> {
    let v = matter_version(engine, id).await?;
    let (_, bad) = crate::confirm::verify(data_dir)?;
    let all = crate::confirm::load(data_dir)?;
    let mine: Vec<(usize, crate::confirm::Confirmation)> =
        all.into_iter().enumerate().filter(|(_, c)| c.matter_id == v.matter_id).collect();
    let valid: Vec<&crate::confirm::Confirmation> =
        mine.iter().filter(|(i, _)| !bad.iter().any(|(line, _, _)| *line == i + 1)).map(|(_, c)| c).collect();
    let current: Vec<crate::confirm::Confirmation> =
        valid.iter().filter(|c| c.content_hash == v.content_hash).map(|c| (*c).clone()).collect();
    if !current.is_empty() {
        return Ok(current);
    }
    Err(PipelineError::Query(if mine.is_empty() {
        format!("{id}: no department has confirmed this matter")
    } else if valid.is_empty() {
        format!("{id}: none of its {} confirmation(s) verifies", mine.len())
    } else {
        format!(
            "{id}: confirmed only in an older version (current {}; confirmed {}) — the new version needs a new confirmation",
            v.content_hash,
            valid.iter().map(|c| c.content_hash.as_str()).collect::<Vec<_>>().join(", ")
        )
    }))
}
