//! The raw envelope every connector emits: one source record with its provenance.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// One record from a departmental source system, as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub payload: serde_json::Value,
    /// The source's own change time for the record, as sent, if any.
    pub source_time: Option<String>,
    /// When the connector fetched it.
    pub fetched_at: DateTime<Utc>,
    /// SHA-256 (hex) of the payload's canonical JSON text.
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

impl Envelope {
    /// Builds an upsert envelope for a parsed record, computing its content hash.
    pub fn upsert(
        source: &str,
        department: &str,
        key: impl Into<String>,
        payload: serde_json::Value,
        source_time: Option<String>,
    ) -> Self {
        let hash = content_hash(&payload);
        Envelope {
            source: source.to_string(),
            department: department.to_string(),
            key: key.into(),
            op: Op::Upsert,
            payload,
            source_time,
            fetched_at: Utc::now(),
            hash,
            error: None,
            locator: None,
        }
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
        let payload = serde_json::Value::String(raw_text);
        let hash = content_hash(&payload);
        Envelope {
            source: source.to_string(),
            department: department.to_string(),
            key: key.into(),
            op: Op::Upsert,
            payload,
            source_time: None,
            fetched_at: Utc::now(),
            hash,
            error: Some(reason),
            locator: None,
        }
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

    /// Serializes to the bus wire format (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and a Value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the bus wire format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// SHA-256 (hex) over the canonical JSON text of a value. `serde_json`
/// keeps object keys sorted (no `preserve_order`), so equal records hash equal.
pub fn content_hash(v: &serde_json::Value) -> String {
    let text = serde_json::to_vec(v).unwrap_or_default();
    hex::encode(Sha256::digest(&text))
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
    }

    #[test]
    fn round_trip_and_partition_spread() {
        let e = Envelope::upsert("s", "police", "k1", serde_json::json!({"x": "湖州"}), None);
        assert_eq!(Envelope::from_bytes(&e.to_bytes()).unwrap(), e);
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            seen[partition_for(&format!("key{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }
}
