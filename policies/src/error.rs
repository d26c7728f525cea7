//! Errors of the policy crate.

/// An error loading policy files or enforcing a policy on a query plan.
///
/// Every enforcement error means the query is refused: the crate fails closed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file (model.conf, policy.csv, users.toml) is malformed or
    /// inconsistent. Names the file and the 1-based line.
    #[error("{file}:{line}: {message}")]
    File {
        /// File name (e.g. `policy.csv`).
        file: String,
        /// 1-based line number of the offending entry.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A policy file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// Path that could not be read.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// casbin refused the model or the policy.
    #[error("casbin: {0}")]
    Casbin(String),
    /// The user may not read a table the query references (SQLSTATE 42501).
    #[error("permission denied for table {table} (SQLSTATE 42501): {reason}")]
    TableDenied {
        /// Table as referenced by the query (normalised).
        table: String,
        /// Why (rule or absence of a rule).
        reason: String,
    },
    /// The statement kind is not allowed for this user (DDL, DML, COPY, SET, ...)
    /// (SQLSTATE 42501).
    #[error("permission denied (SQLSTATE 42501): {0}")]
    StatementDenied(String),
    /// The plan could not be rewritten safely; the query is refused.
    #[error("policy enforcement failed, query refused: {0}")]
    Enforce(String),
}

impl From<datafusion::error::DataFusionError> for PolicyError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PolicyError::Enforce(e.to_string())
    }
}

/// Authentication failure. Deliberately does not say whether the user exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user or wrong password (indistinguishable by design).
    #[error("authentication failed for user {0:?}")]
    Failed(String),
}
