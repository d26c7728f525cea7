//! The hub's audit trail (§7.3.4): every connector run, quarantine decision,
//! query and audit read is appended to an encrypted, hash-chained, signed
//! log ([`lianqin_audit`]) under `<data-dir>/audit/<stream>/`.
//!
//! One process writes one stream (`hub` for `lianqin run`/`demo`, `cli`
//! for `lianqin sql`; a second concurrent CLI gets `cli-<pid>`), guarded by
//! a lock file, so two processes never interleave appends in one chain.
//! `lianqin audit verify` checks every stream.
//!
//! The master key comes from `LIANQIN_AUDIT_KEY` (hex or base64, 32 bytes)
//! or `LIANQIN_AUDIT_KEY_FILE`; when neither is set the embedded default
//! generates one at `<data-dir>/secrets/audit.key` (mode 0600) and says so —
//! production deployments supply their own and keep it off the data disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lianqin_audit::{AuditConfig, AuditEvent, AuditLog, EventKind, MasterKey, Outcome};
use tracing::warn;

use crate::PipelineError;

/// Environment variable naming a key file.
pub const KEY_FILE_ENV: &str = "LIANQIN_AUDIT_KEY_FILE";

/// Resolves the master key for a data dir (see module docs). `create`
/// allows generating the local default key.
pub fn master_key(data_dir: &Path, create: bool) -> Result<MasterKey, PipelineError> {
    let err = |e: lianqin_audit::AuditError| PipelineError::Config(format!("audit key: {e}"));
    if std::env::var(lianqin_audit::MASTER_KEY_ENV).is_ok() {
        return MasterKey::from_env().map_err(err);
    }
    if let Ok(p) = std::env::var(KEY_FILE_ENV) {
        return MasterKey::from_file(Path::new(&p)).map_err(err);
    }
    let path = data_dir.join("secrets").join("audit.key");
    if path.exists() {
        return MasterKey::from_file(&path).map_err(err);
    }
    if !create {
        return Err(PipelineError::Config(format!(
            "audit key: set {} or {KEY_FILE_ENV}, or run the hub once to create {}",
            lianqin_audit::MASTER_KEY_ENV,
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::Config(format!("{}: {e}", dir.display())))?;
    let bytes: [u8; 32] = rand::random();
    let text = hex::encode(bytes);
    write_private(&path, &text)?;
    warn!(
        path = %path.display(),
        "generated a local audit master key for the embedded default; supply {} in production",
        lianqin_audit::MASTER_KEY_ENV
    );
    MasterKey::parse(&text).map_err(err)
}

fn write_private(path: &Path, text: &str) -> Result<(), PipelineError> {
    use std::io::Write;
    #[cfg(unix)]
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
    };
    #[cfg(not(unix))]
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(path);
    let mut f = f.map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))
}

/// The audit streams (directories) under a data dir.
pub fn streams(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(data_dir.join("audit")) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// An open audit stream of this process.
#[derive(Clone)]
pub struct Audit {
    log: AuditLog,
    node: String,
    _lock: Arc<File>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("node", &self.node).finish()
    }
}

impl Audit {
    /// Opens (or creates) stream `stream` of `data_dir`, waiting up to
    /// `wait` for another process to release it, then falling back to
    /// `<stream>-<pid>`.
    pub fn open(data_dir: &Path, stream: &str, node: &str, wait: Duration) -> Result<Audit, PipelineError> {
        let key = master_key(data_dir, true)?;
        let root = data_dir.join("audit");
        std::fs::create_dir_all(&root).map_err(|e| PipelineError::Config(format!("{}: {e}", root.display())))?;
        let deadline = std::time::Instant::now() + wait;
        let mut name = stream.to_string();
        let lock = loop {
            let lock_path = root.join(format!("{name}.lock"));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| PipelineError::Config(format!("{}: {e}", lock_path.display())))?;
            match f.try_lock() {
                Ok(()) => break f,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(_) if name == stream => name = format!("{stream}-{}", std::process::id()),
                Err(e) => return Err(PipelineError::Config(format!("audit stream {name} is locked: {e}"))),
            }
        };
        let mut cfg = AuditConfig::new(key);
        cfg.node = node.to_string();
        let log = AuditLog::open(root.join(&name), cfg).map_err(|e| PipelineError::Config(format!("audit: {e}")))?;
        Ok(Audit { log, node: node.to_string(), _lock: Arc::new(lock) })
    }

    /// The underlying log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Appends an event (node filled in). A failure to audit is logged
    /// loudly; callers on the query path treat it as a denial.
    pub fn record(&self, mut event: AuditEvent) -> Result<u64, PipelineError> {
        if event.node.is_empty() {
            event.node = self.node.clone();
        }
        self.log.append(event).map_err(|e| {
            tracing::error!("audit append failed: {e}");
            PipelineError::Internal(format!("audit append failed: {e}"))
        })
    }

    /// Appends and waits until the entry is on disk (fsync).
    pub fn record_durable(&self, mut event: AuditEvent) -> Result<u64, PipelineError> {
        if event.node.is_empty() {
            event.node = self.node.clone();
        }
        self.log.append_durable(event).map_err(|e| PipelineError::Internal(format!("audit append failed: {e}")))
    }

    /// Flushes and fsyncs, signing a checkpoint.
    pub fn sync(&self) {
        if let Err(e) = self.log.sync() {
            tracing::error!("audit sync failed: {e}");
        }
    }
}

/// A connector-run event.
pub fn connector_run(source: &str, department: &str, result: &Result<lianqin_connectors::RunStats, String>) -> AuditEvent {
    let (outcome, detail) = match result {
        Ok(s) => (
            Outcome::Success,
            serde_json::json!({"source": source, "records": s.records, "unparsable": s.unparsable, "units": s.units, "retries": s.retries}),
        ),
        Err(e) => (Outcome::Failure, serde_json::json!({"source": source, "error": e})),
    };
    let mut ev = AuditEvent::new(EventKind::ConnectorRun, format!("connector:{source}"), department, outcome);
    ev.tables = vec![format!("raw_{source}")];
    ev.detail = detail;
    ev
}
