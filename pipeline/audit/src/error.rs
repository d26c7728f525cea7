//! The crate's error type.

use std::path::{Path, PathBuf};

/// Errors of the audit log. Every variant that concerns stored data names the
/// file and, where it applies, the sequence number and byte offset.
///
/// No variant ever carries key material or decrypted entry text.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An operating-system I/O error on `path` while doing `what`.
    #[error("I/O error on {path} while {what}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the log was doing.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No master key was supplied (unset environment variable, missing file).
    #[error("audit master key missing: {source_name} not set or not found")]
    MissingKey {
        /// Where the key was looked for.
        source_name: String,
    },
    /// The master key text could not be parsed.
    #[error("audit master key has a bad format: {reason}")]
    BadKeyFormat {
        /// Why (never contains the key text).
        reason: String,
    },
    /// The master key does not belong to this log (key-check value mismatch).
    #[error("wrong audit master key for log {path}: key check value does not match (or the header was altered)")]
    WrongKey {
        /// The header file.
        path: PathBuf,
    },
    /// The log header is unreadable or its MAC does not verify.
    #[error("audit log header {path} is invalid: {reason}")]
    BadHeader {
        /// The header file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration asks for a different suite than the log was created with.
    #[error("log {path} was created with suite {found:?}, configuration asks for {wanted:?}")]
    SuiteMismatch {
        /// The header file.
        path: PathBuf,
        /// Suite recorded in the header.
        found: crate::CryptoSuite,
        /// Suite in the configuration.
        wanted: crate::CryptoSuite,
    },
    /// Stored data is corrupt or has been tampered with (found while opening or reading).
    #[error("audit log corrupt in {path} at offset {offset}{}: {reason}", seq_suffix(*seq))]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// Byte offset of the bad frame.
        offset: u64,
        /// Sequence number of the entry concerned, when known.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The log ends before a signed checkpoint: whole entries were removed
    /// (truncation, or a segment rolled back to an older copy).
    #[error(
        "audit log truncated or rolled back: checkpoint #{checkpoint} was signed at seq {checkpoint_seq}, but the log ends at seq {log_end}"
    )]
    Truncated {
        /// Index of the checkpoint that proves the loss.
        checkpoint: u64,
        /// Sequence number covered by that checkpoint.
        checkpoint_seq: u64,
        /// Last sequence number present in the log.
        log_end: u64,
    },
    /// An entry could not be decrypted or authenticated.
    #[error("entry seq {seq} in {path} failed authentication: {reason}")]
    Decrypt {
        /// The segment file.
        path: PathBuf,
        /// The entry's sequence number.
        seq: u64,
        /// What is wrong (tag mismatch, unknown key id…).
        reason: String,
    },
    /// A cryptographic primitive failed unexpectedly.
    #[error("cryptographic failure: {what}")]
    Crypto {
        /// What failed.
        what: String,
    },
    /// An event could not be serialised or an entry could not be parsed.
    #[error("serialisation error{}: {reason}", seq_suffix(*seq))]
    Serde {
        /// Sequence number concerned, when known.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The log writer has failed earlier (an I/O error left it in an unknown state) or was closed.
    #[error("audit log writer unavailable: {reason}")]
    WriterFailed {
        /// The original failure.
        reason: String,
    },
    /// A bad argument (configuration value, range, proof).
    #[error("invalid argument: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The stream registry of an audit root is damaged, forged, or says a
    /// stream is missing or was replaced (see [`crate::verify_root`]).
    #[error("audit stream registry {path}: {reason}")]
    Registry {
        /// The registry file or stream directory concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An exported proof does not verify.
    #[error("export proof does not verify: {reason}")]
    BadProof {
        /// What is wrong.
        reason: String,
    },
}

fn seq_suffix(seq: Option<u64>) -> String {
    match seq {
        Some(s) => format!(" (seq {s})"),
        None => String::new(),
    }
}

impl AuditError {
    pub(crate) fn io(path: &Path, what: &'static str, source: std::io::Error) -> AuditError {
        AuditError::Io { path: path.to_path_buf(), what, source }
    }
}

/// Result alias of the crate.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
