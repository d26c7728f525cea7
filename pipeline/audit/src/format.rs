//! On-disk format: frames, segment headers, entry/key/checkpoint records and
//! the log header file. See README.md for the byte-level description.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoSuite, HASH_LEN, Hash, Keyring, NONCE_LEN, SIG_LEN, TAG_LEN, ct_eq, verify_signature};
use crate::error::AuditError;

/// Frame type: an encrypted audit entry.
pub(crate) const T_ENTRY: u8 = 0x01;
/// Frame type: a segment header (first frame of every segment file).
pub(crate) const T_SEGMENT: u8 = 0x10;
/// Frame type: a wrapped data key (in `keys.log`).
pub(crate) const T_KEY: u8 = 0x20;
/// Frame type: a signed checkpoint (in `checkpoints.log`).
pub(crate) const T_CHECKPOINT: u8 = 0x30;

/// Largest accepted frame body (type byte + payload).
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Clear-text part of an entry payload: seq(8) time_us(8) key_id(4).
pub(crate) const ENTRY_HDR: usize = 20;
/// Length of the additional authenticated data of an entry.
pub(crate) const ENTRY_AAD: usize = 16 + 8 + 8 + 4 + HASH_LEN;

pub(crate) const HEADER_FILE: &str = "audit.header";
pub(crate) const KEYS_FILE: &str = "keys.log";
pub(crate) const CHECKPOINTS_FILE: &str = "checkpoints.log";
const SEGMENT_MAGIC: &[u8; 8] = b"LQAUDSEG";
const FORMAT_VERSION: u16 = 1;

/// Result of parsing one frame at a position in a buffer.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A complete frame with a valid CRC. `body` is type byte + payload; `end` the next position.
    Frame { ty: u8, body: &'a [u8], end: usize },
    /// The buffer ends inside the frame (or inside the length field).
    Incomplete,
    /// The declared length is impossible (0 or above [`MAX_FRAME`]).
    BadLen,
    /// The frame is complete but its CRC does not match.
    BadCrc { end: usize },
}

/// Parses the frame at `pos`.
pub(crate) fn parse_frame(buf: &[u8], pos: usize) -> Parsed<'_> {
    let Some(lb) = buf.get(pos..pos + 4) else { return Parsed::Incomplete };
    let len = u32::from_le_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Parsed::BadLen;
    }
    let end = pos + 4 + len + 4;
    if end > buf.len() {
        return Parsed::Incomplete;
    }
    let body = &buf[pos + 4..pos + 4 + len];
    let crc_stored = u32::from_le_bytes([buf[end - 4], buf[end - 3], buf[end - 2], buf[end - 1]]);
    let mut h = crc32fast::Hasher::new();
    h.update(lb);
    h.update(body);
    if h.finalize() != crc_stored {
        return Parsed::BadCrc { end };
    }
    Parsed::Frame { ty: body[0], body, end }
}

/// Decides whether the bytes from `pos` to the end of `buf` (where parsing
/// failed) look like a torn final write after a crash rather than corruption:
/// no valid frame starts anywhere in the remainder, and either the frame is
/// incomplete, its CRC is bad while it is the last thing in the file, or the
/// remainder is all zero bytes (file-system zero fill).
pub(crate) fn is_torn_tail(buf: &[u8], pos: usize) -> bool {
    let rest = &buf[pos..];
    if rest.iter().all(|b| *b == 0) {
        return true;
    }
    let shape_ok = match parse_frame(buf, pos) {
        Parsed::Incomplete => true,
        Parsed::BadCrc { end } => end == buf.len(),
        Parsed::BadLen => false,
        Parsed::Frame { .. } => return false,
    };
    if !shape_ok {
        return false;
    }
    // A valid frame later in the remainder means a damaged frame in the middle, not a torn tail.
    for p in pos + 1..buf.len() {
        if let Parsed::Frame { ty, .. } = parse_frame(buf, p)
            && matches!(ty, T_ENTRY | T_SEGMENT | T_KEY | T_CHECKPOINT | crate::registry::T_REGISTRY)
        {
            return false;
        }
    }
    true
}

/// Length of the longest prefix of `buf` (the bytes of a `.log` file from a
/// frame boundary on) that ends with a complete frame whose CRC holds.
///
/// For replication (`lianqin-pipeline`'s audit topic): a shipper copies
/// whole frames only, so a torn final write, which recovery may later cut and
/// overwrite, is never copied. Stops at an impossible length (corruption).
pub fn complete_frames_len(buf: &[u8]) -> usize {
    let mut pos = 0;
    let mut good = 0;
    loop {
        match parse_frame(buf, pos) {
            Parsed::Frame { end, .. } => {
                pos = end;
                good = end;
            }
            Parsed::BadCrc { end } => pos = end,
            Parsed::Incomplete | Parsed::BadLen => return good,
        }
    }
}

/// Appends a complete frame (length, type, payload, CRC) to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, ty: u8, payload: &[u8]) {
    let len = (1 + payload.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.push(ty);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Finishes a frame built in place: `out[start..]` holds a 4-byte placeholder,
/// the type byte and the payload. Fills the length and appends the CRC.
pub(crate) fn seal_frame_in_place(out: &mut Vec<u8>, start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

pub(crate) fn rd_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
pub(crate) fn rd_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
pub(crate) fn rd_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(x)
}

/// The clear-text fields of an entry frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryHead {
    pub seq: u64,
    pub time_us: i64,
    pub key_id: u32,
}

/// Splits an entry frame body (type byte + payload) into its clear header,
/// ciphertext and tag. `None` if too short.
pub(crate) fn split_entry(body: &[u8]) -> Option<(EntryHead, &[u8], &[u8])> {
    let p = body.get(1..)?;
    if p.len() < ENTRY_HDR + TAG_LEN {
        return None;
    }
    let head = EntryHead { seq: rd_u64(p, 0), time_us: rd_i64(p, 8), key_id: rd_u32(p, 16) };
    let ct = &p[ENTRY_HDR..p.len() - TAG_LEN];
    let tag = &p[p.len() - TAG_LEN..];
    Some((head, ct, tag))
}

/// Nonce of an entry: key id (big-endian) ‖ seq (big-endian). Unique because
/// every data key is fresh and used only by one writer session, in which seq
/// only grows.
pub(crate) fn entry_nonce(key_id: u32, seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&key_id.to_be_bytes());
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// AAD of an entry: log id ‖ seq ‖ time ‖ key id ‖ previous chain hash.
pub(crate) fn entry_aad(log_id: &[u8; 16], h: &EntryHead, prev: &Hash) -> [u8; ENTRY_AAD] {
    let mut a = [0u8; ENTRY_AAD];
    a[..16].copy_from_slice(log_id);
    a[16..24].copy_from_slice(&h.seq.to_le_bytes());
    a[24..32].copy_from_slice(&h.time_us.to_le_bytes());
    a[32..36].copy_from_slice(&h.key_id.to_le_bytes());
    a[36..].copy_from_slice(prev);
    a
}

/// The header frame of a segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentHead {
    pub log_id: [u8; 16],
    pub segment: u32,
    pub first_seq: u64,
    pub prev_hash: Hash,
}

impl SegmentHead {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(8 + 2 + 16 + 4 + 8 + 32);
        p.extend_from_slice(SEGMENT_MAGIC);
        p.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        p.extend_from_slice(&self.log_id);
        p.extend_from_slice(&self.segment.to_le_bytes());
        p.extend_from_slice(&self.first_seq.to_le_bytes());
        p.extend_from_slice(&self.prev_hash);
        let mut out = Vec::with_capacity(p.len() + 9);
        push_frame(&mut out, T_SEGMENT, &p);
        out
    }

    pub(crate) fn decode(body: &[u8]) -> Option<SegmentHead> {
        if body.first() != Some(&T_SEGMENT) {
            return None;
        }
        let p = &body[1..];
        if p.len() != 8 + 2 + 16 + 4 + 8 + 32 || &p[..8] != SEGMENT_MAGIC {
            return None;
        }
        if u16::from_le_bytes([p[8], p[9]]) != FORMAT_VERSION {
            return None;
        }
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&p[10..26]);
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&p[38..70]);
        Some(SegmentHead { log_id, segment: rd_u32(p, 26), first_seq: rd_u64(p, 30), prev_hash })
    }
}

/// A wrapped data-key record of `keys.log`.
#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    pub key_id: u32,
    pub created_us: i64,
    pub wrapped: Vec<u8>,
}

impl KeyRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + self.wrapped.len());
        p.extend_from_slice(&self.key_id.to_le_bytes());
        p.extend_from_slice(&self.created_us.to_le_bytes());
        p.extend_from_slice(&self.wrapped);
        let mut out = Vec::new();
        push_frame(&mut out, T_KEY, &p);
        out
    }
    pub(crate) fn decode(body: &[u8]) -> Option<KeyRecord> {
        if body.first() != Some(&T_KEY) || body.len() < 13 {
            return None;
        }
        let p = &body[1..];
        Some(KeyRecord { key_id: rd_u32(p, 0), created_us: rd_i64(p, 4), wrapped: p[12..].to_vec() })
    }
}

/// A signed checkpoint: the chain head after entry `seq`, signed with the
/// log's checkpoint key (ed25519 or SM2). Publish the latest one to an
/// external place (another system, the security office) to detect rollback of
/// the whole directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Running index of the checkpoint (1, 2, 3, … without gaps).
    pub index: u64,
    /// Last entry sequence number covered.
    pub seq: u64,
    /// Chain head `h_seq` (hex in JSON).
    #[serde(with = "hex_array")]
    pub head: Hash,
    /// When the checkpoint was made.
    pub time: DateTime<Utc>,
    /// Signature over the checkpoint message (64 bytes; hex in JSON).
    #[serde(with = "hex_vec")]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The message that is signed.
    pub(crate) fn message(log_id: &[u8; 16], index: u64, seq: u64, head: &Hash, time_us: i64) -> Vec<u8> {
        let mut m = Vec::with_capacity(27 + 16 + 8 + 8 + 32 + 8);
        m.extend_from_slice(b"LIANQIN-AUDIT-CHECKPOINT-v1");
        m.extend_from_slice(log_id);
        m.extend_from_slice(&index.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(head);
        m.extend_from_slice(&time_us.to_be_bytes());
        m
    }

    pub(crate) fn create(ring: &Keyring, index: u64, seq: u64, head: Hash) -> Checkpoint {
        let time = Utc::now();
        let time_us = time.timestamp_micros();
        let time = DateTime::from_timestamp_micros(time_us).unwrap_or(time);
        let sig = ring.sign.sign(&Self::message(&ring.log_id, index, seq, &head, time_us));
        Checkpoint { index, seq, head, time, signature: sig.to_vec() }
    }

    /// Checks the signature against a public key.
    pub fn verify_signature(&self, suite: CryptoSuite, log_id: &[u8; 16], public_key: &[u8]) -> bool {
        let m = Self::message(log_id, self.index, self.seq, &self.head, self.time.timestamp_micros());
        verify_signature(suite, public_key, &m, &self.signature)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(8 + 8 + 32 + 8 + SIG_LEN);
        p.extend_from_slice(&self.index.to_le_bytes());
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.extend_from_slice(&self.head);
        p.extend_from_slice(&self.time.timestamp_micros().to_le_bytes());
        p.extend_from_slice(&self.signature);
        let mut out = Vec::new();
        push_frame(&mut out, T_CHECKPOINT, &p);
        out
    }

    pub(crate) fn decode(body: &[u8]) -> Option<Checkpoint> {
        if body.first() != Some(&T_CHECKPOINT) || body.len() != 1 + 8 + 8 + 32 + 8 + SIG_LEN {
            return None;
        }
        let p = &body[1..];
        let mut head = [0u8; 32];
        head.copy_from_slice(&p[16..48]);
        let time = DateTime::from_timestamp_micros(rd_i64(p, 48))?;
        Some(Checkpoint { index: rd_u64(p, 0), seq: rd_u64(p, 8), head, time, signature: p[56..].to_vec() })
    }
}

/// The log header file (`audit.header`, JSON), written once at creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogHeader {
    pub format: String,
    pub version: u16,
    #[serde(with = "hex_array16")]
    pub log_id: [u8; 16],
    pub suite: CryptoSuite,
    pub created: DateTime<Utc>,
    pub node: String,
    /// HMAC(master, "key-check" ‖ log_id): recognises the right master key.
    #[serde(with = "hex_array")]
    pub key_check: Hash,
    /// Checkpoint verification key (ed25519 32 bytes or SM2 SEC1 point).
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// HMAC over the other fields under a key derived from the master key.
    #[serde(with = "hex_array")]
    pub mac: Hash,
}

impl LogHeader {
    fn mac_input(&self) -> Vec<u8> {
        format!(
            "{}|{}|{}|{:?}|{}|{}|{}|{}",
            self.format,
            self.version,
            hex::encode(self.log_id),
            self.suite,
            self.created.timestamp_micros(),
            self.node,
            hex::encode(self.key_check),
            hex::encode(&self.public_key)
        )
        .into_bytes()
    }

    pub(crate) fn new(ring: &Keyring, node: &str) -> LogHeader {
        let created = Utc::now();
        let created = DateTime::from_timestamp_micros(created.timestamp_micros()).unwrap_or(created);
        let mut h = LogHeader {
            format: "lianqin-audit".into(),
            version: FORMAT_VERSION,
            log_id: ring.log_id,
            suite: ring.suite,
            created,
            node: node.to_string(),
            key_check: ring.key_check,
            public_key: ring.sign.public(),
            mac: [0; 32],
        };
        h.mac = ring.suite.hmac(&ring.mac_key, &[&h.mac_input()]);
        h
    }

    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join(HEADER_FILE)
    }

    pub(crate) fn read(dir: &Path) -> Result<Option<LogHeader>, AuditError> {
        let path = Self::path(dir);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(&path, "reading log header", e)),
        };
        let h: LogHeader = serde_json::from_slice(&data)
            .map_err(|e| AuditError::BadHeader { path: path.clone(), reason: format!("not valid header JSON: {e}") })?;
        if h.format != "lianqin-audit" || h.version != FORMAT_VERSION {
            return Err(AuditError::BadHeader {
                path,
                reason: format!("unsupported format {:?} version {}", h.format, h.version),
            });
        }
        Ok(Some(h))
    }

    /// Checks the master key (key-check value) and the header MAC, returning the keyring.
    pub(crate) fn authenticate(&self, dir: &Path, master: &crate::MasterKey) -> Result<Keyring, AuditError> {
        let path = Self::path(dir);
        let ring = Keyring::derive(self.suite, master, self.log_id)?;
        if !ct_eq(&ring.key_check, &self.key_check) {
            return Err(AuditError::WrongKey { path });
        }
        let mac = ring.suite.hmac(&ring.mac_key, &[&self.mac_input()]);
        if !ct_eq(&mac, &self.mac) {
            return Err(AuditError::BadHeader { path, reason: "header MAC does not verify (header altered)".into() });
        }
        if ring.sign.public() != self.public_key {
            return Err(AuditError::BadHeader {
                path,
                reason: "checkpoint public key does not match the master key".into(),
            });
        }
        Ok(ring)
    }
}

/// Segment file name for a segment number.
pub(crate) fn segment_name(n: u32) -> String {
    format!("seg-{n:06}.log")
}

/// Lists segment files of `dir` as (number, path), sorted by number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>, AuditError> {
    let rd = std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, "listing audit directory", e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| AuditError::io(dir, "listing audit directory", e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".log"))
            && let Ok(n) = num.parse::<u32>()
        {
            out.push((n, ent.path()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

pub(crate) mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

pub(crate) mod hex_array16 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

pub(crate) mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_torn() {
        let mut b = Vec::new();
        push_frame(&mut b, T_ENTRY, b"hello");
        push_frame(&mut b, T_ENTRY, b"world!");
        let Parsed::Frame { end, body, .. } = parse_frame(&b, 0) else { panic!("frame") };
        assert_eq!(&body[1..], b"hello");
        assert!(matches!(parse_frame(&b, end), Parsed::Frame { .. }));
        // Torn: cut inside the second frame.
        let cut = &b[..b.len() - 3];
        assert!(matches!(parse_frame(cut, end), Parsed::Incomplete));
        assert!(is_torn_tail(cut, end));
        // Damaged first frame followed by a valid one: not torn.
        let mut bad = b.clone();
        bad[6] ^= 1;
        assert!(matches!(parse_frame(&bad, 0), Parsed::BadCrc { .. }));
        assert!(!is_torn_tail(&bad, 0));
        // Zero fill is torn.
        let mut z = b[..end].to_vec();
        z.extend_from_slice(&[0u8; 40]);
        assert!(is_torn_tail(&z, end));
    }
}
