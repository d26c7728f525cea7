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
    /// A policy folder is not a sealed set: no `policy.manifest`, or one
    /// that does not describe the files. Nothing of it is loaded.
    #[error("policy folder {dir} is not sealed ({reason}): edit the files, then run `lianqin policy seal --dir {dir}`")]
    Unsealed {
        /// The folder.
        dir: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A policy file does not match its SHA-256 in `policy.manifest`
    /// (half-written, or edited without sealing). Nothing is loaded.
    #[error(
        "{file}: SHA-256 {actual} does not match {expected} in policy.manifest (file incomplete or edited without `lianqin policy seal`)"
    )]
    ManifestMismatch {
        /// The file.
        file: String,
        /// Hash the manifest names.
        expected: String,
        /// Hash of the file as read.
        actual: String,
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
