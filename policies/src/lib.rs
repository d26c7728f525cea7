//! Cross-department permission control for Lianqin (§7.3.5 跨部门权限管理).
//!
//! * [`PolicyEngine`] loads a casbin model (RBAC with domains = departments),
//!   a policy (`policy.csv`) and users (`users.toml`, argon2id hashes), and
//!   decides per (user, table) and (user, table, column) at planning time —
//!   one casbin call each, never per row.
//! * [`enforce`] rewrites a DataFusion [`LogicalPlan`]: every table scan,
//!   including those inside subqueries, CTEs, joins, unions and views, becomes
//!   `Projection(masked columns) ← Filter(row filter) ← TableScan`.
//! * [`PolicySource`] / [`load_configured`] — the one place that reads
//!   `$LIANQIN_POLICIES` (else the built-in files). A folder loads only as
//!   a sealed set ([`seal`], `policy.manifest` with each file's SHA-256):
//!   a truncated, partial or unsealed edit is refused.
//! * Departments (the casbin domains) are the codes of
//!   `schemas/codes/department.toml` ([`departments`]).
//! * [`check_plan`] / [`check_statement`] refuse DDL, DML, COPY, SET, ... for
//!   non-administrators.
//!
//! Deny by default, fail closed: an error anywhere in evaluating the policy
//! denies the table (and so refuses the query).
//!
//! See `policies/README.md` for the model, the combination rules and the demo
//! users.

#![warn(missing_docs)]

mod codes;
mod enforce;
mod engine;
mod error;
mod manifest;
mod mask;
mod principal;
mod rules;
mod secured;
mod source;

use std::collections::BTreeMap;

use datafusion::logical_expr::Expr;

pub use codes::{departments, is_department};
pub use enforce::{check_explain, check_plan, check_statement, enforce, is_query, table_key};
pub use engine::{EVERYONE_ROLE, Grant, PolicyEngine};
pub use error::{AuthError, PolicyError};
pub use manifest::{MANIFEST, POLICY_FILES, seal};
pub use mask::{MaskFunctions, TOKEN_FN, mask_value, register_mask_functions, token_value};
pub use principal::{Principal, SCRAM_MIN_ITERATIONS, ScramVerifier, hash_password};
pub use rules::SENSITIVITY_LABELS;
pub use source::{POLICIES_ENV, PolicySource, load_configured};

/// Re-export for callers building plans.
pub use datafusion::logical_expr::LogicalPlan;

/// Metadata of one column, supplied by the caller (from the library schemas).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnMeta {
    /// Column name as in the table.
    pub name: String,
    /// Sensitivity label: `public`, `internal`, `sensitive` or `secret`.
    /// Unknown labels match no `sens:` rule (so only `*` or name rules apply).
    pub sensitivity: String,
    /// Semantic type for masking, e.g. `citizen_id`, `phone`; `None` if plain.
    pub semantic: Option<String>,
}

impl ColumnMeta {
    /// Convenience constructor.
    pub fn new(name: &str, sensitivity: &str, semantic: Option<&str>) -> Self {
        ColumnMeta {
            name: name.to_string(),
            sensitivity: sensitivity.to_string(),
            semantic: semantic.map(str::to_string),
        }
    }
}

/// How a partial mask keeps characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MaskKind {
    /// Citizen ID (GB 11643): keep first 6 and last 4, `330502********123X`.
    CitizenId,
    /// Phone: keep first 3 and last 4, `138****5678`.
    Phone,
    /// Keep `first` leading and `last` trailing characters.
    Keep {
        /// Leading characters kept.
        first: usize,
        /// Trailing characters kept.
        last: usize,
    },
}

/// What a user sees of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnAction {
    /// The value as stored.
    Show,
    /// Partially masked (strings only; other types read as NULL).
    MaskPartial(MaskKind),
    /// Keyed HMAC-SHA256 token (hex), joinable across departments without
    /// revealing the value (strings only; NULL without a token key).
    HashToken,
    /// NULL (suppression).
    Null,
    /// Denied: the column reads as NULL (queries naming it still run; the
    /// value never leaves the scan). Chosen over failing the query so that
    /// `SELECT *` keeps working for users with partial access.
    Deny,
}

impl ColumnAction {
    /// Order used to combine actions: Show < MaskPartial < HashToken < Null < Deny.
    pub fn restrictiveness(&self) -> u8 {
        match self {
            ColumnAction::Show => 0,
            ColumnAction::MaskPartial(_) => 1,
            ColumnAction::HashToken => 2,
            ColumnAction::Null => 3,
            ColumnAction::Deny => 4,
        }
    }
}

impl std::fmt::Display for ColumnAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnAction::Show => f.write_str("show"),
            ColumnAction::MaskPartial(MaskKind::CitizenId) => f.write_str("mask:citizen_id"),
            ColumnAction::MaskPartial(MaskKind::Phone) => f.write_str("mask:phone"),
            ColumnAction::MaskPartial(MaskKind::Keep { first, last }) => write!(f, "mask:{first}:{last}"),
            ColumnAction::HashToken => f.write_str("hash"),
            ColumnAction::Null => f.write_str("null"),
            ColumnAction::Deny => f.write_str("deny"),
        }
    }
}

/// The decision for one (user, table): table access, row filter and column actions.
#[derive(Debug, Clone)]
pub struct TableDecision {
    /// May the user read the table at all?
    pub allowed: bool,
    /// Rows visible: `None` = all rows; otherwise a predicate over the table's
    /// (unqualified) columns. Several read rules combine with OR.
    pub row_filter: Option<Expr>,
    /// Action per column; columns absent from the map are denied (NULL).
    pub columns: BTreeMap<String, ColumnAction>,
    /// Columns shown (with their action) only on the rows where the
    /// condition holds, NULL elsewhere: rows admitted only by a
    /// column-limited sharing grant ([`crate::Grant::columns`]).
    pub column_conditions: BTreeMap<String, Expr>,
    /// The rules that matched, as `policy.csv:LINE p, ...`, and per-column reasons.
    pub matched_rules: Vec<String>,
    /// Human-readable reason for the verdict.
    pub reason: String,
}

impl TableDecision {
    /// A denial with a reason.
    pub fn deny(reason: String) -> Self {
        TableDecision {
            allowed: false,
            row_filter: None,
            columns: BTreeMap::new(),
            column_conditions: BTreeMap::new(),
            matched_rules: vec![],
            reason,
        }
    }
}
