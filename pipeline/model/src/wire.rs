//! The bus frame of an [`Envelope`]: a small binary header followed by the
//! payload's canonical JSON text, carried as is.
//!
//! Earlier hubs wrote each envelope as one JSON object, which meant the
//! payload was serialized once more for the bus (and escaped inside the
//! envelope's text) and parsed as part of a bigger tree on the way out. The
//! frame keeps the payload text that was already computed for the content
//! hash, and the consumer hands the same text on to the raw table.
//!
//! Layout (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `LQE1` |
//! | 1 | op: 0 upsert, 1 delete |
//! | 1 | presence bits: 1 `source_time`, 2 `error`, 4 `locator` |
//! | 8 + 4 | `fetched_at`: seconds (i64) and nanoseconds (u32) since the epoch, UTC |
//! | 4 + n, each | `source`, `department`, `key`, `hash`, then the present ones of `source_time`, `error`, `locator`, then the payload text |
//!
//! Nothing may follow the payload. [`decode`] also reads the JSON objects of
//! earlier hubs (they start with `{`, a frame never does), so records
//! already on a bus stay readable after an upgrade. Every malformed input is
//! an error naming what is wrong, never a panic (property-tested below).

use std::sync::Arc;

use chrono::DateTime;

use crate::envelope::{Envelope, Op};

const MAGIC: &[u8; 4] = b"LQE1";
const HAS_SOURCE_TIME: u8 = 1;
const HAS_ERROR: u8 = 2;
const HAS_LOCATOR: u8 = 4;

/// Why bytes are not an envelope.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes end before the field does.
    #[error("frame cut short in `{0}`")]
    Truncated(&'static str),
    /// A text field is not UTF-8.
    #[error("frame field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    /// A field holds a value it cannot hold.
    #[error("frame field `{field}`: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Neither a frame nor an earlier hub's JSON envelope.
    #[error("not an envelope: {0}")]
    Unknown(String),
    /// An earlier hub's JSON envelope that does not parse.
    #[error("JSON envelope: {0}")]
    Json(#[from] serde_json::Error),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes `env` with `payload_text` (its canonical JSON text) as a frame.
pub(crate) fn encode(env: &Envelope, payload_text: &str) -> Vec<u8> {
    let opt_len = |o: &Option<String>| o.as_ref().map_or(0, |s| s.len() + 4);
    let size = 4
        + 2
        + 12
        + 16
        + env.source.len()
        + env.department.len()
        + env.key.len()
        + env.hash.len()
        + opt_len(&env.source_time)
        + opt_len(&env.error)
        + opt_len(&env.locator)
        + 4
        + payload_text.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    out.push(match env.op {
        Op::Upsert => 0,
        Op::Delete => 1,
    });
    let mut bits = 0u8;
    if env.source_time.is_some() {
        bits |= HAS_SOURCE_TIME;
    }
    if env.error.is_some() {
        bits |= HAS_ERROR;
    }
    if env.locator.is_some() {
        bits |= HAS_LOCATOR;
    }
    out.push(bits);
    out.extend_from_slice(&env.fetched_at.timestamp().to_le_bytes());
    out.extend_from_slice(&env.fetched_at.timestamp_subsec_nanos().to_le_bytes());
    for s in [&env.source, &env.department, &env.key, &env.hash] {
        put_str(&mut out, s);
    }
    for s in [&env.source_time, &env.error, &env.locator].into_iter().flatten() {
        put_str(&mut out, s);
    }
    put_str(&mut out, payload_text);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(WireError::Truncated(field))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let n = u32::from_le_bytes(self.array(field)?) as usize;
        std::str::from_utf8(self.take(n, field)?).map_err(|_| WireError::NotUtf8(field))
    }
}

/// Decodes a frame, or an earlier hub's JSON envelope.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
    if bytes.first() == Some(&b'{') {
        let env: Envelope = serde_json::from_slice(bytes)?;
        return Ok(env);
    }
    if !bytes.starts_with(MAGIC) {
        let head: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(WireError::Unknown(format!("starts with {head} (expected the `LQE1` frame or a JSON object)")));
    }
    let mut r = Reader { bytes, at: MAGIC.len() };
    let op = match r.array::<1>("op")?[0] {
        0 => Op::Upsert,
        1 => Op::Delete,
        v => return Err(WireError::Invalid { field: "op", detail: format!("unknown op {v}") }),
    };
    let bits = r.array::<1>("presence bits")?[0];
    if bits & !(HAS_SOURCE_TIME | HAS_ERROR | HAS_LOCATOR) != 0 {
        return Err(WireError::Invalid { field: "presence bits", detail: format!("unknown bits {bits:#04x}") });
    }
    let secs = i64::from_le_bytes(r.array("fetched_at")?);
    let nanos = u32::from_le_bytes(r.array("fetched_at")?);
    let fetched_at = DateTime::from_timestamp(secs, nanos)
        .ok_or_else(|| WireError::Invalid { field: "fetched_at", detail: format!("{secs}.{nanos} is out of range") })?;
    let source = r.str("source")?.to_string();
    let department = r.str("department")?.to_string();
    let key = r.str("key")?.to_string();
    let hash = r.str("hash")?.to_string();
    let mut opt = |bit: u8, field: &'static str| -> Result<Option<String>, WireError> {
        if bits & bit == 0 { Ok(None) } else { r.str(field).map(|s| Some(s.to_string())) }
    };
    let source_time = opt(HAS_SOURCE_TIME, "source_time")?;
    let error = opt(HAS_ERROR, "error")?;
    let locator = opt(HAS_LOCATOR, "locator")?;
    let text = r.str("payload")?;
    if r.at != bytes.len() {
        return Err(WireError::Invalid { field: "payload", detail: format!("{} bytes after it", bytes.len() - r.at) });
    }
    // The payload text is parsed only when asked for (`Envelope::payload`);
    // the mapping reads its members straight from the text and quarantines a
    // text that is not a JSON object.
    Ok(Envelope::from_parts(
        source,
        department,
        key,
        op,
        Arc::from(text),
        source_time,
        fetched_at,
        hash,
        error,
        locator,
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn envelope(key: String, text: String, st: Option<String>, locator: Option<String>, delete: bool) -> Envelope {
        let mut e = Envelope::upsert("src", "police", key, serde_json::json!({"t": text, "n": 1.5}), st);
        if delete {
            e.op = Op::Delete;
        }
        match locator {
            Some(l) => e.with_locator(l),
            None => e,
        }
    }

    proptest! {
        /// Every envelope comes back equal, with its payload text.
        #[test]
        fn round_trip(key in ".{0,20}", text in ".{0,60}", st in proptest::option::of(".{0,12}"),
                      locator in proptest::option::of(".{0,12}"), delete in any::<bool>(), bad in any::<bool>()) {
            let e = if bad {
                Envelope::unparsable("src", "police", key, text, "cut short".into())
            } else {
                envelope(key, text, st, locator, delete)
            };
            let bytes = e.to_bytes();
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(back.payload_text(), e.payload_text());
            prop_assert_eq!(back, e);
        }

        /// Arbitrary bytes, and every truncation or corruption of a frame,
        /// give an error or an envelope, never a panic.
        #[test]
        fn malformed_input_is_an_error(noise in proptest::collection::vec(any::<u8>(), 0..200),
                                       cut in 0usize..120, flip in 0usize..120, with in any::<u8>()) {
            let _ = decode(&noise);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&noise);
            let _ = decode(&framed);
            let good = envelope("k".into(), "湖州".into(), Some("2025".into()), None, false).to_bytes();
            let _ = decode(&good[..cut.min(good.len())]);
            let mut flipped = good.clone();
            let i = flip % flipped.len();
            flipped[i] = with;
            let _ = decode(&flipped);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let good = envelope("k".into(), "x".into(), None, None, false).to_bytes();
        let e = decode(&good[..good.len() - 3]).unwrap_err();
        assert_eq!(e.to_string(), "frame cut short in `payload`");
        let mut extra = good.clone();
        extra.push(b'!');
        assert!(decode(&extra).unwrap_err().to_string().contains("1 bytes after it"));
        let e = decode(b"\x00\x01garbage").unwrap_err();
        assert!(e.to_string().contains("expected the `LQE1` frame"), "{e}");
    }
}
