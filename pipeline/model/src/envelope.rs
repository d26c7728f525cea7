//! The raw envelope every connector emits: one source record with its provenance.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::Members;

/// What happened to the record at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// The record was created or changed.
    Upsert,
    /// The record was deleted at the source. The libraries keep a tombstone,
    /// never a hard delete (§7.4.3).
    Delete,
}

impl Op {
    /// The lower-case name used in tables (`upsert` / `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// How the locator of a record replayed from quarantine begins (see
/// [`Envelope::replay_run`]).
pub const REPLAY_PREFIX: &str = "replay:";

/// The replay run named by a locator (`replay:<run>:…`), if it names one.
pub fn replay_run_of(locator: &str) -> Option<&str> {
    let rest = locator.strip_prefix(REPLAY_PREFIX)?;
    let run = rest.split(':').next()?;
    (!run.is_empty()).then_some(run)
}

/// One record from a departmental source system, as it travels on the bus.
///
/// The payload is kept as its canonical JSON text (what [`content_hash`]
/// hashes, what the bus frame carries, what the raw table stores), computed
/// once when the envelope is built. The parsed tree ([`Envelope::payload`])
/// is built only when something asks for it: the hub's mapping reads the
/// members it needs straight from the text ([`crate::Members`]), so a record
/// read from a file and consumed from the bus is parsed once on each side
/// and never turned into a tree (issue 12).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Source id from the hub config (e.g. `police_110`).
    pub source: String,
    /// Owning department code (e.g. `police`).
    pub department: String,
    /// The record's key in the source system (e.g. the 接警单编号).
    pub key: String,
    /// Upsert or delete.
    pub op: Op,
    /// The record as the source sent it (a JSON object when it parsed;
    /// the raw text as a JSON string when it did not, see `error`).
    payload: Payload,
    /// The source's own change time for the record, as sent, if any.
    pub source_time: Option<String>,
    /// When the connector fetched it.
    pub fetched_at: DateTime<Utc>,
    /// The payload's content hash ([`content_hash`]: XXH3-128, hex).
    pub hash: String,
    /// Set when the connector could not parse the record (bad JSON,
    /// undecodable bytes). Such envelopes go straight to quarantine with this
    /// reason; they are never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where in the source the record came from (file and line, page), for
    /// error messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<String>,
}

/// A payload: its canonical text, and the tree parsed from it on first use.
#[derive(Debug, Clone)]
struct Payload {
    text: Arc<str>,
    tree: OnceLock<serde_json::Value>,
}

impl Payload {
    fn of_value(v: serde_json::Value) -> Self {
        let tree = OnceLock::new();
        let text = canonical_text(&v);
        let _ = tree.set(v);
        Payload { text, tree }
    }

    fn of_text(text: Arc<str>) -> Self {
        Payload { text, tree: OnceLock::new() }
    }

    /// The tree; a text that is not JSON (a corrupted frame) reads as a
    /// JSON string holding the text, like an unparsable record's payload.
    fn tree(&self) -> &serde_json::Value {
        self.tree.get_or_init(|| {
            serde_json::from_str(&self.text).unwrap_or_else(|_| serde_json::Value::String(self.text.to_string()))
        })
    }
}

/// The JSON envelopes of earlier hubs carry the payload as a JSON value.
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tree().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Payload::of_value)
    }
}

impl PartialEq for Envelope {
    /// Equal records: every field (the payload compared as parsed).
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
            && self.department == o.department
            && self.key == o.key
            && self.op == o.op
            && self.payload() == o.payload()
            && self.source_time == o.source_time
            && self.fetched_at == o.fetched_at
            && self.hash == o.hash
            && self.error == o.error
            && self.locator == o.locator
    }
}

impl Envelope {
    /// A record fetched now (op upsert), its content hash computed from the
    /// payload text.
    fn fetched(
        source: &str,
        department: &str,
        key: String,
        payload: Payload,
        source_time: Option<String>,
        error: Option<String>,
    ) -> Self {
        let hash = content_hash_bytes(payload.text.as_bytes());
        Envelope {
            source: source.to_string(),
            department: department.to_string(),
            key,
            op: Op::Upsert,
            payload,
            source_time,
            fetched_at: Utc::now(),
            hash,
            error,
            locator: None,
        }
    }

    /// Builds an upsert envelope for a parsed record, computing its content hash.
    pub fn upsert(
        source: &str,
        department: &str,
        key: impl Into<String>,
        payload: serde_json::Value,
        source_time: Option<String>,
    ) -> Self {
        Envelope::fetched(source, department, key.into(), Payload::of_value(payload), source_time, None)
    }

    /// Builds an upsert envelope for a record read as [`Members`] (a JSON
    /// object parsed without a tree): the same envelope as
    /// [`Envelope::upsert`] of the parsed value, at a fraction of the cost.
    pub fn upsert_members(
        source: &str,
        department: &str,
        key: impl Into<String>,
        members: &Members<'_>,
        source_time: Option<String>,
    ) -> Self {
        let payload = Payload::of_text(Arc::from(members.canonical()));
        Envelope::fetched(source, department, key.into(), payload, source_time, None)
    }

    /// Builds an envelope for a record that could not be parsed; it carries
    /// the raw text and the reason, and is routed to quarantine.
    pub fn unparsable(
        source: &str,
        department: &str,
        key: impl Into<String>,
        raw_text: String,
        reason: String,
    ) -> Self {
        let payload = Payload::of_value(serde_json::Value::String(raw_text));
        Envelope::fetched(source, department, key.into(), payload, None, Some(reason))
    }

    /// Builds the envelope standing for bytes on the bus at `topic`/`partition`/
    /// `offset` that do not decode as an envelope (a corrupted or foreign
    /// message). It carries the bytes (as text when they are UTF-8, else
    /// `hex:` and their hex digits) and the reason, and goes to quarantine
    /// like any unparsable record instead of stopping the consumer. Its key
    /// is the bus position; source and department are empty (the pipeline
    /// fills them from the topic's source).
    pub fn undecodable(topic: &str, partition: u32, offset: u64, bytes: &[u8], detail: &str) -> Self {
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => format!("hex:{}", hex::encode(bytes)),
        };
        let position = format!("{topic}/{partition}/{offset}");
        Envelope::unparsable(
            "",
            "",
            format!("bus:{position}"),
            text,
            format!("undecodable bus record at {position}: {detail}"),
        )
        .with_locator(format!("bus {position}"))
    }

    /// Sets the locator (file:line, page) and returns self.
    pub fn with_locator(mut self, locator: impl Into<String>) -> Self {
        self.locator = Some(locator.into());
        self
    }

    /// The quarantine replay run this record belongs to, if it is one: a
    /// replayed record's locator is `replay:<run>:<quarantine id>`, followed
    /// by ` @ <original locator>` when it had one ([`REPLAY_PREFIX`]).
    pub fn replay_run(&self) -> Option<&str> {
        replay_run_of(self.locator.as_deref()?)
    }

    /// The record as parsed (built from the canonical text on first use;
    /// see [`Envelope`]).
    pub fn payload(&self) -> &serde_json::Value {
        self.payload.tree()
    }

    /// The payload's canonical JSON text (the text [`content_hash`] hashes).
    pub fn payload_text(&self) -> &str {
        &self.payload.text
    }

    /// The text an unparsable record carries (its payload is that text as
    /// a JSON string), else the payload's canonical text.
    pub fn raw_text(&self) -> &str {
        // Only an unparsable record's payload is parsed (a JSON string).
        if self.error.is_some()
            && let serde_json::Value::String(s) = self.payload()
        {
            return s;
        }
        self.payload_text()
    }

    /// Serializes to the bus wire format: the binary frame of
    /// [`crate::wire`] (header fields, then the payload's canonical text as
    /// is).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::wire::encode(self, self.payload_text())
    }

    /// Parses the bus wire format: the binary frame, or the JSON object
    /// earlier hubs wrote (records already on a bus stay readable).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, crate::wire::WireError> {
        crate::wire::decode(bytes)
    }

    /// Assembles a decoded envelope (for [`crate::wire`]); `text` is the
    /// payload's canonical text as the frame carried it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        source: String,
        department: String,
        key: String,
        op: Op,
        text: Arc<str>,
        source_time: Option<String>,
        fetched_at: DateTime<Utc>,
        hash: String,
        error: Option<String>,
        locator: Option<String>,
    ) -> Self {
        let payload = Payload::of_text(text);
        Envelope { source, department, key, op, payload, source_time, fetched_at, hash, error, locator }
    }
}

/// The canonical JSON text of a value (object keys sorted, no whitespace).
fn canonical_text(v: &serde_json::Value) -> Arc<str> {
    // Serializing a Value cannot fail.
    Arc::from(serde_json::to_string(v).unwrap_or_default())
}

/// The content hash of a record: XXH3-128 (32 hex digits) over the
/// canonical JSON text of its payload. `serde_json` keeps object keys sorted
/// (no `preserve_order`), so equal records hash equal whatever the key order
/// at the source.
///
/// It tells repeats and changes apart; it is not a security boundary (the
/// audit chain keeps SHA-256), so a fast non-cryptographic hash with 128 bits
/// (collisions negligible for billions of versions) is the right tool.
pub fn content_hash(v: &serde_json::Value) -> String {
    let mut text = Vec::with_capacity(512);
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut text, v);
    content_hash_bytes(&text)
}

/// [`content_hash`] of canonical JSON text already serialized.
pub fn content_hash_bytes(canonical: &[u8]) -> String {
    format!("{:032x}", twox_hash::XxHash3_128::oneshot(canonical))
}

/// Stable partition for a key: the first 8 bytes of SHA-256, modulo the count.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":"x"}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":"x","a":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        let c: serde_json::Value = serde_json::from_str(r#"{"b":"y","a":1}"#).unwrap();
        assert_ne!(content_hash(&a), content_hash(&c));
        assert_eq!(content_hash(&a).len(), 32);
    }

    #[test]
    fn hash_is_xxh3_128_of_the_canonical_text() {
        // Reference value: XXH3-128 (seed 0) of `{"a":1,"b":"x"}` as the
        // xxhsum tool prints it (`xxhsum -H2`).
        let a: serde_json::Value = serde_json::from_str(r#"{"b":"x","a":1}"#).unwrap();
        assert_eq!(content_hash(&a), "724a582427b9c9a67ccf902d0d19f6c9");
        assert_eq!(content_hash(&a), content_hash_bytes(br#"{"a":1,"b":"x"}"#));
    }

    #[test]
    fn raw_text_parses_only_unparsable_payloads() {
        let good = Envelope::from_bytes(&Envelope::upsert("s", "d", "k", serde_json::json!({"a": 1}), None).to_bytes())
            .unwrap();
        assert_eq!(good.raw_text(), r#"{"a":1}"#);
        assert!(good.payload.tree.get().is_none(), "raw_text built the tree of a good record");
        let bad = Envelope::unparsable("s", "d", "", "{\"a\": ".into(), "cut short".into());
        let bad = Envelope::from_bytes(&bad.to_bytes()).unwrap();
        assert_eq!(bad.raw_text(), "{\"a\": ");
    }

    #[test]
    fn round_trip_and_partition_spread() {
        let e = Envelope::upsert("s", "police", "k1", serde_json::json!({"x": "湖州"}), None);
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap().payload_text(), r#"{"x":"湖州"}"#);
        // The JSON envelopes earlier hubs wrote still decode.
        let legacy = serde_json::to_vec(&e).unwrap();
        let back = Envelope::from_bytes(&legacy).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.payload_text(), r#"{"x":"湖州"}"#);
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            seen[partition_for(&format!("key{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }
}
