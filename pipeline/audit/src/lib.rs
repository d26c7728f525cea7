//! # lianqin-audit
//!
//! Encrypted, tamper-evident, append-only audit log for Lianqin (联勤).
//!
//! * Every entry ([`AuditEvent`], in a compact binary encoding) is encrypted with
//!   AES-256-GCM (or SM4-GCM in the [`CryptoSuite::Gm`] suite) under a data
//!   key; data keys rotate and are stored wrapped under a key derived from
//!   the [`MasterKey`] (file or `LIANQIN_AUDIT_KEY`).
//! * Entries are framed (length, type, body, CRC-32) in append-only segment
//!   files `seg-000001.log`, …; a torn final frame after a crash is cut on
//!   [`AuditLog::open`].
//! * A hash chain (`h_n = H(0x01 ‖ h_{n-1} ‖ H(0x00 ‖ frame_n))`) links all
//!   entries; the GCM associated data binds log id, seq, time, key id and
//!   `h_{n-1}`, so entries cannot be edited, moved or renumbered without the
//!   key; signed checkpoints (ed25519 or SM2) in `checkpoints.log` fix the
//!   chain head periodically, so truncation, rollback and forged checkpoints
//!   are detected by [`verify`].
//! * [`AuditLog::export_with_proof`] / [`verify_export`] give an inspector a
//!   hash-chain-segment proof for a range of entries.
//!
//! See `README.md` for the byte format, threat model and durability.
//!
//! ```no_run
//! use lianqin_audit::{AuditConfig, AuditEvent, AuditLog, EventKind, MasterKey, Outcome};
//! # fn main() -> Result<(), lianqin_audit::AuditError> {
//! let log = AuditLog::open("/var/lib/lianqin/audit", AuditConfig::new(MasterKey::from_env()?))?;
//! let seq = log.append(AuditEvent::new(EventKind::Query, "zhang.san", "ecology", Outcome::Allow))?;
//! log.wait_durable(seq)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod codec;
mod crypto;
mod error;
mod event;
mod format;
mod log;
mod proof;
mod read;
mod registry;
mod root;
mod verify;

pub use crypto::{CryptoSuite, Hash, MASTER_KEY_ENV, MasterKey};
pub use error::{AuditError, Result};
pub use event::{AuditEvent, AuditFilter, AuditRecord, EventKind, Outcome};
pub use format::{Checkpoint, complete_frames_len};
pub use log::{AuditConfig, AuditLog, FsyncPolicy, RecoveryInfo, Rotation, read};
pub use proof::{ExportProof, export_with_proof, verify_export};
pub use read::{ExportFormat, Records, Tail, export};
pub use registry::{REGISTRY_FILE, RegisteredStream, RegistryEntry};
pub use root::{
    ANCHOR_FORMAT, Anchor, AnchoredStream, RegistryHead, RegistrySummary, RootReport, StreamReport, anchor,
    build_anchor, registered_streams, retire_stream, verify_root, verify_root_with, verify_with_anchor,
};
pub use verify::{Problem, ProblemKind, TornTail, VerifyOptions, VerifyReport, verify, verify_with};
