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
//!
//! ## Layout
//! This module is the **writer**, a leaf of the runtime: it imports no other
//! runtime module (config, flows, query, …); the hub and the servers call it.
//! * [`ship`] — the replicated audit topic; started by the hub and injected
//!   into the writer as an [`AuditShipper`] ([`Audit::attach_shipper`]).
//! * [`table`] — the `audit` SQL table over every stream (auditor role only).

pub mod ship;
pub mod table;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lianqin_audit::{AuditConfig, AuditEvent, AuditLog, CryptoSuite, EventKind, MasterKey, Outcome};
use tracing::warn;

use crate::PipelineError;

/// Environment variable choosing the suite of new audit streams:
/// `standard` (AES-256-GCM, SHA-256, ed25519; default) or `gm` (SM4-GCM,
/// SM3, SM2 — GB/T 39786-2021 deployments).
pub const SUITE_ENV: &str = "LIANQIN_AUDIT_SUITE";

/// The suite named by [`SUITE_ENV`].
pub fn suite_from_env() -> Result<CryptoSuite, PipelineError> {
    match std::env::var(SUITE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("standard") => Ok(CryptoSuite::Standard),
        Ok("gm") => Ok(CryptoSuite::Gm),
        Ok(other) => Err(PipelineError::Config(format!("{SUITE_ENV}={other}: use `standard` or `gm`"))),
    }
}

/// Environment variable overriding the data-key rotation interval
/// (seconds; default 86 400).
pub const ROTATE_ENV: &str = "LIANQIN_AUDIT_ROTATE_SECS";

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
    data_dir: PathBuf,
    key: MasterKey,
    shipping: Arc<std::sync::Mutex<Option<ShipTask>>>,
    _lock: Arc<File>,
}

/// Copies the audit streams somewhere else (the replicated audit topic,
/// [`ship`]). The writer does not know how: whoever starts shipping (the
/// hub, on the Kafka bus) injects one with [`Audit::attach_shipper`].
#[async_trait::async_trait]
pub trait AuditShipper: Send + Sync {
    /// Ships what is new in the streams now; returns the messages sent.
    async fn ship_once(&self) -> Result<usize, PipelineError>;
}

/// The background shipper of this process (aborted with the last handle).
struct ShipTask {
    shipper: Arc<dyn AuditShipper>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShipTask {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        Audit::open_with_suite(data_dir, stream, node, wait, suite_from_env()?)
    }

    /// Like [`Audit::open`] with the suite for a *new* stream given; an
    /// existing stream keeps the suite recorded in its header.
    pub fn open_with_suite(
        data_dir: &Path,
        stream: &str,
        node: &str,
        wait: Duration,
        suite: CryptoSuite,
    ) -> Result<Audit, PipelineError> {
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
        let mut cfg = AuditConfig::new(key.clone());
        cfg.node = node.to_string();
        cfg.suite = suite;
        // Data-key rotation schedule (default every 24 h, every 1 M entries and on every open).
        if let Ok(v) = std::env::var(ROTATE_ENV) {
            let secs: u64 = v
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| PipelineError::Config(format!("{ROTATE_ENV}={v}: seconds > 0")))?;
            cfg.rotate_every.interval = Some(Duration::from_secs(secs));
        }
        let log = match AuditLog::open_stream(&root, &name, cfg.clone()) {
            // An existing stream keeps its suite (the header records it).
            Err(lianqin_audit::AuditError::SuiteMismatch { found, .. }) => {
                cfg.suite = found;
                AuditLog::open_stream(&root, &name, cfg)
            }
            r => r,
        }
        .map_err(|e| PipelineError::Config(format!("audit: {e}")))?;
        Ok(Audit {
            log,
            node: node.to_string(),
            data_dir: data_dir.to_path_buf(),
            key,
            shipping: Arc::new(std::sync::Mutex::new(None)),
            _lock: Arc::new(lock),
        })
    }

    /// The data dir whose `audit/` holds this stream (and the others).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The master key (for readers of the other streams, e.g. the `audit` table).
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The node name recorded in entries.
    pub fn node(&self) -> &str {
        &self.node
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

    /// Attaches the shipper of this process and its background `task`
    /// (aborted when the last handle of this stream is dropped); see
    /// [`ship::start`], which the hub calls on the Kafka bus.
    pub fn attach_shipper(&self, shipper: Arc<dyn AuditShipper>, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut g) = self.shipping.lock() {
            *g = Some(ShipTask { shipper, task });
        }
    }

    /// Makes everything appended so far durable and ships it now (when
    /// shipping was started); returns the messages sent.
    pub async fn ship_now(&self) -> Result<usize, PipelineError> {
        let shipper = self.shipping.lock().ok().and_then(|g| g.as_ref().map(|t| Arc::clone(&t.shipper)));
        let Some(shipper) = shipper else { return Ok(0) };
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.sync())
            .await
            .map_err(|e| PipelineError::Internal(format!("audit sync: {e}")))?
            .map_err(|e| PipelineError::Internal(format!("audit sync: {e}")))?;
        shipper.ship_once().await
    }
}

/// Versions seen at the last start, `<data-dir>/audit/versions.json`.
fn versions_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("versions.json")
}

/// Records a `policy_change` / `config_change` entry when the version of
/// `what` (`policy`, or `config:<node>`) differs from the one recorded last
/// time in this data dir (the first time counts as a change from none).
/// The entry is durable before the new version is remembered, so a crash
/// repeats the entry rather than losing it. Returns whether it changed.
pub fn note_version(
    audit: &Audit,
    what: &str,
    version: &str,
    detail: serde_json::Value,
) -> Result<bool, PipelineError> {
    let path = versions_path(&audit.data_dir);
    let mut seen: serde_json::Map<String, serde_json::Value> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let before = seen.get(what).and_then(|v| v.as_str()).map(str::to_string);
    if before.as_deref() == Some(version) {
        return Ok(false);
    }
    let kind = if what == "policy" { EventKind::PolicyChange } else { EventKind::ConfigChange };
    let mut ev = AuditEvent::new(kind, "system:hub", "eco_police_office", Outcome::Success);
    if what == "policy" {
        ev.rule_version = Some(version.to_string());
    }
    let mut d = serde_json::json!({ "what": what, "from": before, "to": version });
    if let (Some(m), serde_json::Value::Object(extra)) = (d.as_object_mut(), detail) {
        m.extend(extra);
    }
    ev.detail = d;
    audit.record_durable(ev)?;
    seen.insert(what.to_string(), serde_json::Value::String(version.to_string()));
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(&seen).map_err(|e| PipelineError::Internal(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
    Ok(true)
}

/// A connector-run event.
pub fn connector_run(
    source: &str,
    department: &str,
    result: &Result<lianqin_connectors::RunStats, String>,
) -> AuditEvent {
    let (outcome, detail) = match result {
        Ok(s) => (
            Outcome::Success,
            serde_json::json!({"source": source, "records": s.records, "unparsable": s.unparsable, "units": s.units, "retries": s.retries, "reported": s.reported, "distinct": s.distinct}),
        ),
        Err(e) => (Outcome::Failure, serde_json::json!({"source": source, "error": e})),
    };
    let mut ev = AuditEvent::new(EventKind::ConnectorRun, format!("connector:{source}"), department, outcome);
    ev.tables = vec![format!("raw_{source}")];
    ev.detail = detail;
    ev
}
