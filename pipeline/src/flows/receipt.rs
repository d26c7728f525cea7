//! Signed daily reconciliation receipts of a flow (对账回执): for one
//! China day (UTC+8) and each library of the flow, what the hub **holds**
//! for the flow's account (the history rows committed that day, through
//! the flow's policy, as the flow would carry them), what the flow
//! **wrote** to its outbox and, with `[flows.push]`, what the department
//! **acknowledged** and, for a flow with a `topic`, what its feed topic
//! **published** (read back from the bus, Kafka or embedded, from the
//! topic's first offset to its end: [`feed_sets`]) — each as a distinct row
//! count and a checksum (SHA-256 over the sorted `id \t content_hash`
//! lines). `balanced` is true when the department received exactly what it
//! may hold, on every way out.
//!
//! The receipt is signed with the hub's ed25519 receipt key
//! (`<data dir>/secrets/receipt.key`, created on first use; its public half
//! is written to `<data dir>/keys/receipt.pub` for the departments).
//! [`verify`] checks the signature (and, given one, that the key is the
//! trusted key). Making a receipt is audited as an `export` entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, TimeZone};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use lianqin_audit::{AuditEvent, EventKind, Outcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FlowConfig;
use crate::PipelineError;
use crate::audit::Audit;
use crate::query::{OutputFormat, QueryEngine, format_batches};
use crate::schema::Catalog;

/// A count and checksum of distinct rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Distinct rows (`id`, `content_hash`).
    pub rows: u64,
    /// SHA-256 (hex) over the sorted `id \t content_hash \n` lines.
    pub checksum: String,
}

impl Tally {
    fn of(set: &BTreeSet<String>) -> Tally {
        let mut h = Sha256::new();
        for l in set {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        Tally { rows: set.len() as u64, checksum: hex::encode(h.finalize()) }
    }
}

/// One library's figures in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryTally {
    /// What the hub holds for the account that day.
    pub held: Tally,
    /// What the flow wrote to its outbox.
    pub written: Tally,
    /// What the department acknowledged (flows with `[flows.push]`).
    pub acknowledged: Option<Tally>,
    /// What the flow's feed topic carries (flows with a `topic`, when the
    /// receipt was made with the bus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Tally>,
}

/// A daily reconciliation receipt (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyReceipt {
    /// Format version (1).
    pub version: u32,
    /// The flow.
    pub flow: String,
    /// Its user and department.
    pub user: String,
    /// The receiving department.
    pub department: String,
    /// The China day, `YYYY-MM-DD` (UTC+8).
    pub day: String,
    /// Per library.
    pub libraries: BTreeMap<String, LibraryTally>,
    /// Every library's delivered tally (acknowledged, else written) and its
    /// published tally (when counted) equal its held tally.
    pub balanced: bool,
    /// The policy version the rows were filtered with.
    pub policy_version: String,
    /// When the receipt was made (RFC 3339, UTC).
    pub made_at: String,
    /// The hub's receipt public key (hex).
    pub public_key: String,
    /// ed25519 signature (hex) over the receipt with this field empty.
    pub signature: String,
}

impl DailyReceipt {
    /// The bytes signed: the receipt as JSON with `signature` empty.
    pub fn message(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.signature.clear();
        serde_json::to_vec(&c).unwrap_or_default()
    }
}

/// `<data dir>/secrets/receipt.key`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("receipt.key")
}

/// `<data dir>/keys/receipt.pub` (hex).
pub fn public_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("receipt.pub")
}

/// The hub's receipt key, created (mode 0600) on first use.
pub fn signing_key(data_dir: &Path) -> Result<SigningKey, PipelineError> {
    let p = key_path(data_dir);
    let io = |e: std::io::Error| PipelineError::Internal(format!("{}: {e}", p.display()));
    let key = match std::fs::read(&p) {
        Ok(b) => {
            let bytes: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                PipelineError::Config(format!("{}: a receipt key is 32 bytes, found {}", p.display(), b.len()))
            })?;
            SigningKey::from_bytes(&bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).map_err(io)?;
            }
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            {
                use std::io::Write;
                let mut f = o.open(&p).map_err(io)?;
                f.write_all(&k.to_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
            }
            k
        }
        Err(e) => return Err(io(e)),
    };
    let pubp = public_key_path(data_dir);
    let hexkey = hex::encode(key.verifying_key().to_bytes());
    if std::fs::read_to_string(&pubp).map(|s| s.trim() != hexkey).unwrap_or(true) {
        if let Some(d) = pubp.parent() {
            std::fs::create_dir_all(d).map_err(|e| PipelineError::Internal(format!("{}: {e}", d.display())))?;
        }
        std::fs::write(&pubp, format!("{hexkey}\n"))
            .map_err(|e| PipelineError::Internal(format!("{}: {e}", pubp.display())))?;
    }
    Ok(key)
}

/// UTC microseconds of the China day `day`: [start, end).
pub fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let tz = crate::time::beijing();
    let start = tz
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("a fixed offset has one midnight")
        .timestamp_micros();
    (start, start + 86_400_000_000)
}

/// The tally line of an event row (`row` as the flow shows it).
fn line_of(key: &str, row: &serde_json::Value) -> String {
    let s = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(o) => o.to_string(),
    };
    format!("{}\t{}", s(row.get(key)), s(row.get("content_hash")))
}

/// UTC microseconds of an event's `committed_at`.
fn committed_micros(ev: &serde_json::Value) -> Option<i64> {
    ev.get("committed_at").and_then(|v| v.as_str()).and_then(|s| crate::time::parse_time_utc_micros(s).ok())
}

/// What the flow's outbox holds for `day`: per library the distinct lines
/// of all events (`written`) and of those before `cursor` (`acknowledged`).
type OutboxSets = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn outbox_sets(
    (flow, data_keys): (&str, &crate::sealed::Keys),
    outbox: &Path,
    keys: &BTreeMap<String, String>,
    (from, to): (i64, i64),
    cursor: u64,
) -> Result<OutboxSets, PipelineError> {
    let mut out: OutboxSets = keys.keys().map(|l| (l.clone(), Default::default())).collect();
    let mut pos = 0u64;
    loop {
        let (lines, end) = super::push::read_lines(outbox, pos, 10_000)?;
        if lines.is_empty() {
            break;
        }
        // Offsets of each line, to tell acknowledged from pending.
        let mut at = pos;
        for l in &lines {
            let line_end = at + l.len() as u64 + 1;
            let l = super::open_line(data_keys, flow, l.clone())?;
            let ev: serde_json::Value = serde_json::from_str(&l).map_err(|e| {
                PipelineError::Internal(format!("{}: byte {at}: not a flow event: {e}", outbox.display()))
            })?;
            let lib = ev.get("library").and_then(|v| v.as_str()).unwrap_or_default();
            if let (Some(key), Some(t)) = (keys.get(lib), committed_micros(&ev))
                && t >= from
                && t < to
            {
                let line = line_of(key, ev.get("row").unwrap_or(&serde_json::Value::Null));
                let e = out.entry(lib.to_string()).or_default();
                if line_end <= cursor {
                    e.1.insert(line.clone());
                }
                e.0.insert(line);
            }
            at = line_end;
        }
        // Blank lines are skipped by read_lines: trust its end offset.
        pos = end;
    }
    Ok(out)
}

/// Per library, the distinct tally lines of the events on `topic` whose
/// `committed_at` falls in `bounds`: every partition read from offset 0 to
/// the end it had when the reading began, by a consumer group of its own
/// (nothing is committed). Events are the flow's JSON; the bus hands them
/// over as records it could not decode as envelopes, with their text.
pub async fn feed_sets(
    bus: &dyn lianqin_bus::Bus,
    topic: &str,
    keys: &BTreeMap<String, String>,
    bounds: (i64, i64),
) -> Result<BTreeMap<String, BTreeSet<String>>, PipelineError> {
    let ends = bus.end_offsets(topic).await.map_err(PipelineError::Bus)?;
    let mut out: BTreeMap<String, BTreeSet<String>> = keys.keys().map(|l| (l.clone(), BTreeSet::new())).collect();
    if ends.iter().all(|e| *e == 0) {
        return Ok(out);
    }
    let group = format!("lianqin-receipt-{}", hex::encode(rand::random::<[u8; 8]>()));
    let mut consumer = bus
        .consumer(&group, &[topic.to_string()], Arc::new(|_: &str, _: u32| Some(0)))
        .await
        .map_err(PipelineError::Bus)?;
    let mut next: Vec<u64> = vec![0; ends.len()];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if std::time::Instant::now() > deadline {
            return Err(PipelineError::Bus(lianqin_bus::BusError::Config(format!(
                "{topic}: read up to {next:?} of {ends:?} in 120 s; the receipt needs the whole topic"
            ))));
        }
        for r in consumer.poll(10_000, std::time::Duration::from_millis(500)).await.map_err(PipelineError::Bus)? {
            let p = r.partition as usize;
            if p >= ends.len() || r.offset >= ends[p] {
                continue;
            }
            next[p] = next[p].max(r.offset + 1);
            let text = match (&r.envelope.error, r.envelope.payload()) {
                (Some(_), serde_json::Value::String(t)) => t.clone(),
                _ => {
                    return Err(PipelineError::Internal(format!(
                        "{topic}/{p}/{}: not a flow event (an envelope)",
                        r.offset
                    )));
                }
            };
            let ev: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| PipelineError::Internal(format!("{topic}/{p}/{}: not a flow event: {e}", r.offset)))?;
            let lib = ev.get("library").and_then(|v| v.as_str()).unwrap_or_default();
            if let (Some(key), Some(t)) = (keys.get(lib), committed_micros(&ev))
                && t >= bounds.0
                && t < bounds.1
            {
                let line = line_of(key, ev.get("row").unwrap_or(&serde_json::Value::Null));
                out.entry(lib.to_string()).or_default().insert(line);
            }
        }
    }
    Ok(out)
}

/// Makes, signs and returns the receipt of flow `cfg` for `day`, reading
/// the libraries of `data_dir`. `cursor` is the flow's acknowledged outbox
/// offset (`None` for a flow without `[flows.push]`). Without the bus, a
/// flow's feed topic is not counted ([`make_with_feed`] counts it).
pub async fn make(
    cfg: &FlowConfig,
    data_dir: &Path,
    day: NaiveDate,
    audit: &Audit,
) -> Result<DailyReceipt, PipelineError> {
    make_with_feed(cfg, data_dir, day, audit, None).await
}

/// [`make`], also counting what the flow's feed topic (`<prefix><topic>`)
/// carries on `feed` = (bus, topic prefix) when the flow has a `topic`.
pub async fn make_with_feed(
    cfg: &FlowConfig,
    data_dir: &Path,
    day: NaiveDate,
    audit: &Audit,
    feed: Option<(&dyn lianqin_bus::Bus, &str)>,
) -> Result<DailyReceipt, PipelineError> {
    let catalog = Catalog::builtin()?;
    let policy = Arc::new(super::load_policies(data_dir).await?);
    let who = policy.principal(&cfg.user).ok_or_else(|| {
        PipelineError::Config(format!("flow `{}`: unknown user `{}` (policies/users.toml)", cfg.name, cfg.user))
    })?;
    let bounds = day_bounds(day);
    let store = crate::library::LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await?;
    let engine = QueryEngine::new(&store, &catalog).await?;
    let mut keys = BTreeMap::new();
    for l in &cfg.libraries {
        keys.insert(l.clone(), catalog.library(l)?.key.clone());
    }
    let cursor = if cfg.push.is_some() { Some(super::push::read_cursor(data_dir, &cfg.name)?) } else { None };
    let data_keys = crate::sealed::Keys::new(data_dir);
    let sets =
        outbox_sets((&cfg.name, &data_keys), &super::outbox_path(cfg, data_dir), &keys, bounds, cursor.unwrap_or(0))?;
    let published = match (feed, &cfg.topic) {
        (Some((bus, prefix)), Some(t)) => Some(feed_sets(bus, &format!("{prefix}{t}"), &keys, bounds).await?),
        _ => None,
    };
    let mut libraries = BTreeMap::new();
    let mut held_rows = 0u64;
    for (lib, key) in &keys {
        let table = format!("{lib}_history");
        // The day's versions as the hub holds them, then through the flow's
        // policy exactly as `Flows::deliver` filters a committed batch.
        let all = engine
            .sql(&format!(
                "SELECT * FROM {table} WHERE CAST(ingested_at AS BIGINT) >= {} AND CAST(ingested_at AS BIGINT) < {}",
                bounds.0, bounds.1
            ))
            .await?;
        let all: Vec<RecordBatch> = all.into_iter().filter(|b| b.num_rows() > 0).collect();
        let mut held = BTreeSet::new();
        if !all.is_empty() {
            let shown = super::secured_batches(&policy, &catalog, &who, &table, &all).await?;
            let text = format_batches(&shown, OutputFormat::Json)?;
            for l in text.lines().filter(|l| !l.is_empty()) {
                let row: serde_json::Value =
                    serde_json::from_str(l).map_err(|e| PipelineError::Internal(format!("receipt {lib}: {e}")))?;
                held.insert(line_of(key, &row));
            }
        }
        held_rows += held.len() as u64;
        let (written, acked) = sets.get(lib).cloned().unwrap_or_default();
        libraries.insert(
            lib.clone(),
            LibraryTally {
                held: Tally::of(&held),
                written: Tally::of(&written),
                acknowledged: cursor.map(|_| Tally::of(&acked)),
                published: published.as_ref().map(|p| Tally::of(p.get(lib).unwrap_or(&BTreeSet::new()))),
            },
        );
    }
    let balanced = libraries.values().all(|t| {
        t.acknowledged.as_ref().unwrap_or(&t.written) == &t.held && t.published.as_ref().is_none_or(|p| p == &t.held)
    });
    let key = signing_key(data_dir)?;
    let mut r = DailyReceipt {
        version: 1,
        flow: cfg.name.clone(),
        user: who.name.clone(),
        department: who.department.clone(),
        day: day.format("%Y-%m-%d").to_string(),
        libraries,
        balanced,
        policy_version: policy.version(),
        made_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        signature: String::new(),
    };
    r.signature = hex::encode(key.sign(&r.message()).to_bytes());
    let mut ev = AuditEvent::new(EventKind::Export, &who.name, &who.department, Outcome::Success);
    ev.tables = keys.keys().map(|l| format!("{l}_history")).collect();
    ev.rows = Some(held_rows);
    ev.rule_version = Some(r.policy_version.clone());
    ev.detail = serde_json::json!({
        "receipt": {"flow": r.flow, "day": r.day, "balanced": r.balanced, "signature": r.signature},
    });
    audit.record_durable(ev)?;
    Ok(r)
}

/// Why a receipt does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The file is not a receipt.
    #[error("{0}: not a receipt: {1}")]
    Unreadable(String, String),
    /// The signature does not match the content.
    #[error("{0}: the signature does not match the receipt (altered after signing, or signed by another key)")]
    BadSignature(String),
    /// Signed by a key other than the trusted one.
    #[error("{0}: signed by key {1}, not by the trusted key {2}")]
    UntrustedKey(String, String, String),
}

/// Checks the receipt in `text` (`origin` names it): its signature, and
/// that it was made with `trusted` (hex) when given.
pub fn verify(text: &str, origin: &str, trusted: Option<&str>) -> Result<DailyReceipt, ReceiptError> {
    let r: DailyReceipt =
        serde_json::from_str(text).map_err(|e| ReceiptError::Unreadable(origin.into(), e.to_string()))?;
    let bad = || ReceiptError::BadSignature(origin.into());
    let pk: [u8; 32] = hex::decode(&r.public_key).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let vk = VerifyingKey::from_bytes(&pk).map_err(|_| bad())?;
    let sig: [u8; 64] = hex::decode(&r.signature).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    vk.verify(&r.message(), &Signature::from_bytes(&sig)).map_err(|_| bad())?;
    if let Some(t) = trusted
        && !t.trim().eq_ignore_ascii_case(&r.public_key)
    {
        return Err(ReceiptError::UntrustedKey(origin.into(), r.public_key.clone(), t.trim().to_string()));
    }
    Ok(r)
}

/// `max(ingested_at)` of a committed batch as RFC 3339 (the events'
/// `committed_at`), `None` without the column.
pub fn committed_at(batch: &RecordBatch) -> Option<String> {
    let c = batch.column_by_name("ingested_at")?;
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok()?;
    let c = c.as_any().downcast_ref::<Int64Array>()?;
    let m = (0..c.len()).filter(|i| c.is_valid(*i)).map(|i| c.value(i)).max()?;
    chrono::DateTime::from_timestamp_micros(m).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_days_start_at_16_utc() {
        let (a, b) = day_bounds(NaiveDate::from_ymd_opt(2026, 12, 5).unwrap());
        assert_eq!(chrono::DateTime::from_timestamp_micros(a).unwrap().to_rfc3339(), "2026-12-04T16:00:00+00:00");
        assert_eq!(b - a, 86_400_000_000);
    }

    #[test]
    fn a_changed_receipt_fails_and_another_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing_key(dir.path()).unwrap();
        let mut r = DailyReceipt {
            version: 1,
            flow: "f".into(),
            user: "u".into(),
            department: "ecology".into(),
            day: "2026-12-05".into(),
            libraries: BTreeMap::from([(
                "matter".into(),
                LibraryTally {
                    held: Tally { rows: 3, checksum: "aa".into() },
                    written: Tally { rows: 3, checksum: "aa".into() },
                    acknowledged: None,
                    published: None,
                },
            )]),
            balanced: true,
            policy_version: "p".into(),
            made_at: "t".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: String::new(),
        };
        r.signature = hex::encode(key.sign(&r.message()).to_bytes());
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(verify(&text, "r.json", None).unwrap(), r);
        let pubhex = std::fs::read_to_string(public_key_path(dir.path())).unwrap();
        assert!(verify(&text, "r.json", Some(&pubhex)).is_ok());
        let altered = text.replace("\"rows\":3", "\"rows\":4");
        assert!(matches!(verify(&altered, "r.json", None), Err(ReceiptError::BadSignature(_))));
        let other = hex::encode([7u8; 32]);
        assert!(matches!(verify(&text, "r.json", Some(&other)), Err(ReceiptError::UntrustedKey(..))));
        // The key is kept: a second call reads the same key.
        assert_eq!(signing_key(dir.path()).unwrap().to_bytes(), key.to_bytes());
    }
}
