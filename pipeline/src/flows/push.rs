//! Pushing a flow's outbox into the receiving department's system
//! (`[flows.push]`): HTTP endpoints, PostgreSQL and MySQL/MariaDB tables.
//!
//! A [`Pusher`] reads the outbox (the flow's `sink` file, already filtered
//! and masked for the flow's user by [`super::Flows::deliver`]) from its
//! **cursor**, a byte offset saved in `<data dir>/flows/state/<flow>.cursor`,
//! takes up to `batch_rows` whole lines as one [`Delivery`] and hands it to
//! the flow's [`Target`]. Only when the target acknowledges (a 2xx answer,
//! a committed transaction) is the receipt appended to
//! `<data dir>/flows/state/<flow>.receipts.jsonl` (fsynced), the delivery
//! audited as a `flow` entry, and the cursor moved past it. A target that
//! is down gets the same delivery again, with backoff, until it answers —
//! nothing is skipped, and everything written while it was down follows.
//!
//! Guarantee: **at-least-once, in outbox order**. A crash between the
//! acknowledgement and the cursor write delivers that batch again with the
//! same delivery id (`<flow>:<start>-<end>`, byte offsets in the outbox),
//! which HTTP receivers see as the idempotency key; SQL targets upsert by
//! `(library, id)`, so a repeat rewrites the same rows. One pusher per flow
//! at a time: a lock file next to the cursor refuses a second one.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use lianqin_audit::{AuditEvent, EventKind, Outcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::Instrument;

use super::{FlowConfig, PushConfig};
use crate::PipelineError;
use crate::audit::Audit;
use crate::config::HttpPushConfig;

/// One batch of outbox lines handed to a [`Target`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `<flow>:<start>-<end>`: stable across retries of the same batch.
    pub id: String,
    /// Byte offset of the first line in the outbox.
    pub start: u64,
    /// Byte offset just past the last line.
    pub end: u64,
    /// The events, one JSON object each (the outbox lines without `\n`).
    pub events: Vec<String>,
}

impl Delivery {
    /// The events as one JSON array (the HTTP body).
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
        b.push(b'[');
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(e.as_bytes());
        }
        b.push(b']');
        b
    }

    /// SHA-256 (hex) of the lines as they stand in the outbox.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for e in &self.events {
            h.update(e.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}

/// Why a delivery was not acknowledged (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The target could not be reached or did not answer in time.
    #[error("{destination}: unreachable: {detail}")]
    Unreachable {
        /// Where (no credentials).
        destination: String,
        /// What happened.
        detail: String,
    },
    /// The target answered with a refusal.
    #[error("{destination}: refused delivery {delivery}: {detail}")]
    Refused {
        /// Where (no credentials).
        destination: String,
        /// The delivery id.
        delivery: String,
        /// Status and answer.
        detail: String,
    },
}

/// A department system a flow pushes into.
#[async_trait]
pub trait Target: Send {
    /// Where deliveries go, without credentials (audit, messages).
    fn destination(&self) -> String;

    /// Delivers `d`; `Ok` carries the target's acknowledgement (kept as the
    /// receipt). Must be idempotent for a repeated delivery.
    async fn deliver(&mut self, d: &Delivery) -> Result<serde_json::Value, PushError>;
}

/// A line of `<flow>.receipts.jsonl`: one acknowledged delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryReceipt {
    /// The delivery id.
    pub delivery: String,
    /// Outbox byte range.
    pub start: u64,
    /// End of the range.
    pub end: u64,
    /// Events delivered.
    pub rows: u64,
    /// SHA-256 of the delivered lines.
    pub sha256: String,
    /// Where (no credentials).
    pub destination: String,
    /// When it was acknowledged (RFC 3339, UTC).
    pub at: String,
    /// The target's acknowledgement (HTTP status and answer, SQL rows written).
    pub answer: serde_json::Value,
}

/// `<data dir>/flows/state`: cursors, receipts and locks of the pushers.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("flows").join("state")
}

/// The cursor file of `flow`.
pub fn cursor_path(data_dir: &Path, flow: &str) -> PathBuf {
    state_dir(data_dir).join(format!("{flow}.cursor"))
}

/// The receipts journal of `flow`.
pub fn receipts_path(data_dir: &Path, flow: &str) -> PathBuf {
    state_dir(data_dir).join(format!("{flow}.receipts.jsonl"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    offset: u64,
}

/// The saved cursor of `flow` (0 before the first acknowledged delivery).
pub fn read_cursor(data_dir: &Path, flow: &str) -> Result<u64, PipelineError> {
    let p = cursor_path(data_dir, flow);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice::<Cursor>(&b)
            .map(|c| c.offset)
            .map_err(|e| PipelineError::Internal(format!("{}: unreadable cursor: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(PipelineError::Internal(format!("{}: {e}", p.display()))),
    }
}

fn write_cursor(data_dir: &Path, flow: &str, offset: u64) -> Result<(), PipelineError> {
    let p = cursor_path(data_dir, flow);
    let tmp = p.with_extension("cursor.tmp");
    let io = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", p.display()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(serde_json::to_string(&Cursor { offset }).unwrap_or_default().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &p).map_err(io)?;
    if let Some(d) = p.parent() {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// The acknowledged deliveries of `flow`, oldest first.
pub fn receipts(data_dir: &Path, flow: &str) -> Result<Vec<DeliveryReceipt>, PipelineError> {
    crate::journal::load(&receipts_path(data_dir, flow))
}

/// Reads whole lines of `outbox` from `start`, at most `max` of them.
/// Returns the lines (without `\n`) and the offset past the last one; an
/// unterminated last line (being written) is left for later.
pub fn read_lines(outbox: &Path, start: u64, max: usize) -> Result<(Vec<String>, u64), PipelineError> {
    let io = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", outbox.display()));
    let mut f = match std::fs::File::open(outbox) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], start)),
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    if len < start {
        return Err(PipelineError::Internal(format!(
            "{}: the outbox is shorter ({len} bytes) than the flow's cursor ({start}): it was replaced or cut; \
             restore it, or move the cursor file away to deliver it again from the start",
            outbox.display()
        )));
    }
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
    let mut out = Vec::new();
    let mut pos = start;
    let mut buf = Vec::new();
    while out.len() < max {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        buf.pop();
        if buf.is_empty() {
            continue;
        }
        let line = String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
            PipelineError::Internal(format!("{}: line at byte {} is not UTF-8: {e}", outbox.display(), pos))
        })?;
        out.push(line);
    }
    Ok((out, pos))
}

/// Delivers one flow's outbox to its target (see the module docs).
pub struct Pusher {
    flow: String,
    user: String,
    department: String,
    data_dir: PathBuf,
    /// Opens the sealed outbox lines.
    keys: crate::sealed::Keys,
    outbox: PathBuf,
    batch_rows: usize,
    target: Box<dyn Target>,
    audit: Audit,
    /// A delivery that failed, retried as it was (same id).
    pending: Option<Delivery>,
    /// The last failure reported (a streak is audited once).
    last_error: Option<String>,
    _lock: std::fs::File,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").field("flow", &self.flow).field("destination", &self.target.destination()).finish()
    }
}

impl Pusher {
    /// The pusher of flow `cfg` (`None` without `[flows.push]`), delivering
    /// as `department` (the department of the flow's user). Fails when
    /// another process pushes this flow.
    pub fn open(
        cfg: &FlowConfig,
        data_dir: &Path,
        department: &str,
        audit: Audit,
    ) -> Result<Option<Pusher>, PipelineError> {
        let Some(push) = &cfg.push else { return Ok(None) };
        let target: Box<dyn Target> = match push {
            PushConfig::Http(h) => Box::new(HttpTarget::new(&cfg.name, h)?),
            PushConfig::Postgres(s) => Box::new(super::sql_target::PgTarget::new(&cfg.name, s)?),
            PushConfig::Mysql(s) => Box::new(super::sql_target::MyTarget::new(&cfg.name, s)?),
        };
        Pusher::with_target(cfg, data_dir, department, audit, target, push.batch_rows()).map(Some)
    }

    /// A pusher of flow `cfg` into `target` (tests bring their own).
    pub fn with_target(
        cfg: &FlowConfig,
        data_dir: &Path,
        department: &str,
        audit: Audit,
        target: Box<dyn Target>,
        batch_rows: usize,
    ) -> Result<Pusher, PipelineError> {
        let dir = state_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| PipelineError::Internal(format!("{}: {e}", dir.display())))?;
        let lock_path = dir.join(format!("{}.lock", cfg.name));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| PipelineError::Internal(format!("{}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(PipelineError::Config(format!(
                "flow `{}`: another process is pushing it ({} is locked)",
                cfg.name,
                lock_path.display()
            )));
        }
        Ok(Pusher {
            flow: cfg.name.clone(),
            user: cfg.user.clone(),
            department: department.to_string(),
            data_dir: data_dir.to_path_buf(),
            keys: crate::sealed::Keys::new(data_dir),
            outbox: super::outbox_path(cfg, data_dir),
            batch_rows: batch_rows.max(1),
            target,
            audit,
            pending: None,
            last_error: None,
            _lock: lock,
        })
    }

    /// The flow.
    pub fn flow(&self) -> &str {
        &self.flow
    }

    /// Where the flow is delivered (no credentials).
    pub fn destination(&self) -> String {
        self.target.destination()
    }

    /// The saved cursor (outbox bytes acknowledged).
    pub fn cursor(&self) -> Result<u64, PipelineError> {
        read_cursor(&self.data_dir, &self.flow)
    }

    /// Attempts one delivery. `Ok(n)`: `n` events acknowledged (0: the
    /// outbox holds nothing new); `Err`: the target did not acknowledge —
    /// the same delivery is tried again on the next call.
    pub async fn step(&mut self) -> Result<usize, PipelineError> {
        let d = match self.pending.take() {
            Some(d) => d,
            None => {
                let start = self.cursor()?;
                let (events, end) = read_lines(&self.outbox, start, self.batch_rows)?;
                let events = events.into_iter().map(|l| super::open_line(&self.keys, &self.flow, l)).collect::<Result<
                    Vec<_>,
                    _,
                >>(
                )?;
                if events.is_empty() {
                    if end > start {
                        // Only blank lines: move past them.
                        write_cursor(&self.data_dir, &self.flow, end)?;
                    }
                    return Ok(0);
                }
                Delivery { id: format!("{}:{start}-{end}", self.flow), start, end, events }
            }
        };
        let span = tracing::info_span!("flow_push", flow = %self.flow, delivery = %d.id);
        match self.target.deliver(&d).instrument(span).await {
            Ok(answer) => {
                let receipt = DeliveryReceipt {
                    delivery: d.id.clone(),
                    start: d.start,
                    end: d.end,
                    rows: d.events.len() as u64,
                    sha256: d.digest(),
                    destination: self.target.destination(),
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    answer,
                };
                crate::journal::append(&receipts_path(&self.data_dir, &self.flow), &receipt)?;
                let mut ev = AuditEvent::new(EventKind::Flow, &self.user, &self.department, Outcome::Success);
                ev.rows = Some(receipt.rows);
                ev.detail = serde_json::json!({
                    "flow": self.flow, "destination": receipt.destination, "delivery": receipt.delivery,
                    "sha256": receipt.sha256, "answer": receipt.answer,
                });
                self.audit.record(ev)?;
                write_cursor(&self.data_dir, &self.flow, d.end)?;
                self.last_error = None;
                tracing::debug!(rows = d.events.len(), "flow delivery acknowledged");
                Ok(d.events.len())
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("flow `{}`: delivery not acknowledged (retried): {msg}", self.flow);
                    let mut ev = AuditEvent::new(EventKind::Flow, &self.user, &self.department, Outcome::Failure);
                    ev.rows = Some(0);
                    ev.detail = serde_json::json!({
                        "flow": self.flow, "destination": self.target.destination(), "delivery": d.id, "error": msg,
                    });
                    self.audit.record(ev)?;
                    self.last_error = Some(msg.clone());
                }
                self.pending = Some(d);
                Err(PipelineError::Unavailable(msg))
            }
        }
    }

    /// Delivers until the outbox holds nothing new; returns the events
    /// acknowledged. Stops at the first delivery that is not acknowledged.
    pub async fn drain(&mut self) -> Result<u64, PipelineError> {
        let mut n = 0u64;
        loop {
            match self.step().await? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    }

    /// Delivers for as long as `stop` is false: new lines within
    /// `poll` of their writing, a failed delivery again after a backoff
    /// (0.5 s doubling to 30 s).
    pub async fn run(mut self, poll: Duration, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        while !*stop.borrow() {
            let wait = match self.step().await {
                Ok(0) => poll,
                Ok(_) => {
                    backoff = Duration::from_millis(500);
                    Duration::ZERO
                }
                Err(_) => {
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    w
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Opens the pushers of every flow of `cfgs` that has `[flows.push]`,
/// each delivering as its user's department under `policy`.
pub fn open_all(
    cfgs: &[FlowConfig],
    data_dir: &Path,
    policy: &lianqin_policies::PolicyEngine,
    audit: &Audit,
) -> Result<Vec<Pusher>, PipelineError> {
    let mut out = Vec::new();
    for c in cfgs.iter().filter(|c| c.push.is_some()) {
        let who = policy.principal(&c.user).ok_or_else(|| {
            PipelineError::Config(format!("flow `{}`: unknown user `{}` (policies/users.toml)", c.name, c.user))
        })?;
        if let Some(p) = Pusher::open(c, data_dir, &who.department, audit.clone())? {
            out.push(p);
        }
    }
    Ok(out)
}

/// `url` without credentials, query or fragment (for audit and messages).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

/// `type = "http"`: one signed `POST` per delivery.
pub struct HttpTarget {
    flow: String,
    url: String,
    destination: String,
    secret: Arc<Vec<u8>>,
    cfg: HttpPushConfig,
    client: reqwest::Client,
}

impl HttpTarget {
    /// Checks the settings (`${ENV}` expanded now; a missing variable is a
    /// config error naming it).
    pub fn new(flow: &str, cfg: &HttpPushConfig) -> Result<HttpTarget, PipelineError> {
        let ctx = format!("flow {flow}");
        let url = lianqin_connectors::expand_env(&cfg.url, &ctx, "push.url")
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        url::Url::parse(&url)
            .map_err(|e| PipelineError::Config(format!("flow `{flow}`: [flows.push] `url` is not a URL: {e}")))?;
        let secret = lianqin_connectors::expand_env(&cfg.secret, &ctx, "push.secret")
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        if secret.len() < 16 {
            return Err(PipelineError::Config(format!(
                "flow `{flow}`: [flows.push] `secret` must be at least 16 bytes"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .build()
            .map_err(|e| PipelineError::Config(format!("flow `{flow}`: http client: {e}")))?;
        Ok(HttpTarget {
            flow: flow.to_string(),
            destination: redact_url(&url),
            url,
            secret: Arc::new(secret.into_bytes()),
            cfg: cfg.clone(),
            client,
        })
    }
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`, as the `webhook`
/// connector checks it.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[async_trait]
impl Target for HttpTarget {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    async fn deliver(&mut self, d: &Delivery) -> Result<serde_json::Value, PushError> {
        let body = d.body();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = signature(&self.secret, &ts, &body);
        let res = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(self.cfg.timestamp_header.as_str(), &ts)
            .header(self.cfg.signature_header.as_str(), format!("sha256={sig}"))
            .header(self.cfg.idempotency_header.as_str(), &d.id)
            .header("X-Lianqin-Flow", &self.flow)
            .body(body)
            .send()
            .await
            .map_err(|e| PushError::Unreachable { destination: self.destination.clone(), detail: e.to_string() })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::Value::String(text.chars().take(1024).collect()));
        if status.is_success() {
            Ok(serde_json::json!({"status": status.as_u16(), "answer": answer}))
        } else {
            Err(PushError::Refused {
                destination: self.destination.clone(),
                delivery: d.id.clone(),
                detail: format!("HTTP {}: {}", status.as_u16(), text.chars().take(300).collect::<String>()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_lines_leaves_an_unterminated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let (l, end) = read_lines(&p, 0, 10).unwrap();
        assert_eq!(l, vec!["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(end, 16);
        let (l, end2) = read_lines(&p, 8, 1).unwrap();
        assert_eq!((l.len(), end2), (1, 16));
        assert!(read_lines(&p, 100, 1).unwrap_err().to_string().contains("shorter"));
        assert_eq!(read_lines(&dir.path().join("none"), 0, 5).unwrap(), (vec![], 0));
    }

    #[test]
    fn signature_matches_the_webhook_rule() {
        // `printf '1.{}' | openssl dgst -sha256 -hmac key`
        assert_eq!(signature(b"key", "1", b"{}"), "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("https://u:p@h.example/x?token=1"), "https://h.example/x");
    }
}
