//! Error and flag types shared by every validator in this crate.

use serde::Serialize;

/// A failed identifier / format rule.
///
/// `rule` is a stable, dotted rule name (for example `"uscc.check_digit"` or
/// `"citizen_id.birth_date"`); the full list is in the crate README. `detail`
/// is a human-readable explanation meant for data stewards, and may change
/// between releases — match on `rule`, never on `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{rule}: {detail}")]
pub struct IdError {
    /// Stable rule name, `<validator>.<rule>`.
    pub rule: &'static str,
    /// Human-readable explanation of what was wrong with the value.
    pub detail: String,
}

impl IdError {
    /// Builds an error for `rule` with the given detail text.
    pub fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Self { rule, detail: detail.into() }
    }
}

/// A data-quality finding on one field of one record.
///
/// Records are **flagged, not dropped** (domain.md §3.1: even widely used
/// codes can fail their check digit), so validators used in the pipeline
/// produce `Violation`s that travel with the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The field (column) or value kind the finding is about.
    pub field: String,
    /// Stable rule name, identical to [`IdError::rule`].
    pub rule: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

/// Alias: the pipeline calls these "flags".
pub type Flag = Violation;

impl Violation {
    /// Turns a validator error into a violation on `field`.
    pub fn from_error(field: impl Into<String>, err: IdError) -> Self {
        Self { field: field.into(), rule: err.rule, detail: err.detail }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.rule, self.detail)
    }
}
