//! Export with proof: a hash-chain-segment proof that lets an inspector check
//! a range of entries against a signed checkpoint without the whole log.
//!
//! The proof holds the chain value `h_{k-1}` before the first exported entry,
//! the encrypted frames `k..=n`, the data keys needed to decrypt them, the
//! leaf hashes of the entries `n+1..=c` and the signed checkpoint at `c ≥ n`.
//! The inspector recomputes the chain from `h_{k-1}` to `h_c`, compares it to
//! the checkpoint head and checks the checkpoint signature with the log's
//! public key (obtained out of band). Size is O(n-k + c-n); this is not an
//! RFC 6962 Merkle proof (whose size would be logarithmic).
//!
//! Disclosure: the data keys included decrypt any other entry encrypted
//! under the same key, but the proof carries only the exported ciphertexts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::{Cipher, CryptoSuite, Hash, Keyring, MasterKey};
use crate::error::{AuditError, Result};
use crate::event::AuditRecord;
use crate::format::{CHECKPOINTS_FILE, Checkpoint, KEYS_FILE, entry_aad, entry_nonce, hex_vec, split_entry};
use crate::log::{AuditLog, load_checkpoints, load_keys, open_ring, parse_record};
use crate::read::{Cursor, Step};

/// A self-contained, JSON-serialisable proof for the entries `from_seq..=to_seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportProof {
    /// Always `"lianqin-audit-proof-v1"`.
    pub format: String,
    /// Suite of the log.
    pub suite: CryptoSuite,
    /// Log identifier (hex).
    pub log_id: String,
    /// Checkpoint verification key of the log (hex).
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// First exported seq.
    pub from_seq: u64,
    /// Last exported seq.
    pub to_seq: u64,
    /// Chain value before `from_seq` (hex).
    pub prev_hash: String,
    /// Encrypted frame bodies (type byte + payload, hex) of `from_seq..=to_seq`.
    pub entries: Vec<String>,
    /// Data keys by key id (hex) needed to decrypt `entries`.
    pub data_keys: BTreeMap<u32, String>,
    /// Leaf hashes (hex) of the entries after `to_seq` up to the checkpoint.
    pub following_leaves: Vec<String>,
    /// The signed checkpoint at seq ≥ `to_seq`.
    pub checkpoint: Checkpoint,
}

impl AuditLog {
    /// Builds an [`ExportProof`] for `from_seq..=to_seq`. Signs and syncs a
    /// new checkpoint first when none covers `to_seq` yet.
    pub fn export_with_proof(&self, from_seq: u64, to_seq: u64) -> Result<ExportProof> {
        let covered = self.latest_checkpoint().is_some_and(|c| c.seq >= to_seq);
        if covered {
            self.sync()?;
        } else {
            self.checkpoint()?;
        }
        build_proof(&self.inner.dir, Arc::clone(&self.inner.ring), from_seq, to_seq)
    }
}

/// Builds an [`ExportProof`] from a closed log directory.
pub fn export_with_proof(dir: impl AsRef<Path>, master: &MasterKey, from_seq: u64, to_seq: u64) -> Result<ExportProof> {
    let dir = dir.as_ref();
    let (_, ring) = open_ring(dir, master)?;
    build_proof(dir, Arc::new(ring), from_seq, to_seq)
}

fn build_proof(dir: &Path, ring: Arc<Keyring>, from_seq: u64, to_seq: u64) -> Result<ExportProof> {
    if from_seq == 0 || from_seq > to_seq {
        return Err(AuditError::Invalid { reason: format!("bad range {from_seq}..={to_seq}") });
    }
    let (cps, _) = load_checkpoints(&dir.join(CHECKPOINTS_FILE), false)?;
    let public = ring.sign.public();
    let cp = cps
        .into_iter()
        .filter(|c| c.verify_signature(ring.suite, &ring.log_id, &public))
        .find(|c| c.seq >= to_seq)
        .ok_or_else(|| AuditError::Invalid { reason: format!("no signed checkpoint covers seq {to_seq} yet") })?;
    let (keys, _) = load_keys(&dir.join(KEYS_FILE), &ring, false)?;
    let mut cur = Cursor::new(dir, Arc::clone(&ring));
    let mut prev_hash: Option<Hash> = None;
    let mut entries = Vec::new();
    let mut data_keys = BTreeMap::new();
    let mut following = Vec::new();
    loop {
        let mut want = |_s: u64, _t: i64| false;
        match cur.step(&mut want)? {
            Step::End => break,
            Step::Entry { seq, key_id, body, prev, .. } => {
                if seq == from_seq {
                    prev_hash = Some(prev);
                }
                if (from_seq..=to_seq).contains(&seq) {
                    let (_, raw) = keys.get(&key_id).ok_or_else(|| AuditError::Decrypt {
                        path: dir.join(KEYS_FILE),
                        seq,
                        reason: format!("unknown data key id {key_id}"),
                    })?;
                    data_keys.entry(key_id).or_insert_with(|| hex::encode(raw));
                    entries.push(hex::encode(&body));
                } else if seq > to_seq && seq <= cp.seq {
                    following.push(hex::encode(ring.suite.leaf_hash(&body)));
                }
                if seq == cp.seq {
                    if cur.head() != cp.head {
                        return Err(AuditError::Corrupt {
                            path: dir.to_path_buf(),
                            offset: 0,
                            seq: Some(seq),
                            reason: format!("chain head does not match checkpoint #{}", cp.index),
                        });
                    }
                    break;
                }
            }
        }
    }
    let prev_hash =
        prev_hash.ok_or_else(|| AuditError::Invalid { reason: format!("seq {from_seq} not in the log") })?;
    if entries.len() as u64 != to_seq - from_seq + 1 {
        return Err(AuditError::Invalid { reason: format!("seq {to_seq} not in the log") });
    }
    Ok(ExportProof {
        format: "lianqin-audit-proof-v1".into(),
        suite: ring.suite,
        log_id: hex::encode(ring.log_id),
        public_key: public,
        from_seq,
        to_seq,
        prev_hash: hex::encode(prev_hash),
        entries,
        data_keys,
        following_leaves: following,
        checkpoint: cp,
    })
}

fn bad(reason: impl Into<String>) -> AuditError {
    AuditError::BadProof { reason: reason.into() }
}

fn hex32(s: &str, what: &str) -> Result<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).map_err(|_| bad(format!("{what} is not 32 hex bytes")))?;
    Ok(h)
}

/// Verifies an [`ExportProof`] against the log's public key (obtained out of
/// band, e.g. from the published header or a previous checkpoint) and returns
/// the decrypted entries. Needs no master key and no other part of the log.
pub fn verify_export(proof: &ExportProof, trusted_public_key: &[u8]) -> Result<Vec<AuditRecord>> {
    if proof.format != "lianqin-audit-proof-v1" {
        return Err(bad(format!("unknown proof format {:?}", proof.format)));
    }
    if proof.public_key != trusted_public_key {
        return Err(bad("proof public key is not the trusted key"));
    }
    let suite = proof.suite;
    let mut log_id = [0u8; 16];
    hex::decode_to_slice(&proof.log_id, &mut log_id).map_err(|_| bad("log_id is not 16 hex bytes"))?;
    let cp = &proof.checkpoint;
    if !cp.verify_signature(suite, &log_id, trusted_public_key) {
        return Err(bad(format!("checkpoint #{} signature does not verify", cp.index)));
    }
    let n = proof.entries.len() as u64;
    if n == 0 || proof.to_seq.checked_sub(proof.from_seq).map(|d| d + 1) != Some(n) {
        return Err(bad("entry count does not match the range"));
    }
    if cp.seq != proof.to_seq + proof.following_leaves.len() as u64 {
        return Err(bad("checkpoint seq does not match range plus following leaves"));
    }
    let mut ciphers: HashMap<u32, Cipher> = HashMap::new();
    for (id, k) in &proof.data_keys {
        let raw = hex::decode(k).map_err(|_| bad(format!("data key {id} is not hex")))?;
        let c = Cipher::new(suite, &raw).ok_or_else(|| bad(format!("data key {id} has a wrong length")))?;
        ciphers.insert(*id, c);
    }
    let mut head = hex32(&proof.prev_hash, "prev_hash")?;
    let mut out = Vec::with_capacity(proof.entries.len());
    for (i, e) in proof.entries.iter().enumerate() {
        let want_seq = proof.from_seq + i as u64;
        let body = hex::decode(e).map_err(|_| bad(format!("entry {want_seq} is not hex")))?;
        let (eh, ct, tag) = split_entry(&body).ok_or_else(|| bad(format!("entry {want_seq} too short")))?;
        if body.first() != Some(&crate::format::T_ENTRY) || eh.seq != want_seq {
            return Err(bad(format!("entry at position {i} has seq {}, expected {want_seq}", eh.seq)));
        }
        let c = ciphers.get(&eh.key_id).ok_or_else(|| bad(format!("no data key {} for seq {want_seq}", eh.key_id)))?;
        let mut pt = ct.to_vec();
        if !c.open(&entry_nonce(eh.key_id, eh.seq), &entry_aad(&log_id, &eh, &head), &mut pt, tag) {
            return Err(bad(format!("entry seq {want_seq} fails authentication")));
        }
        out.push(parse_record(eh.seq, eh.time_us, &pt)?);
        head = suite.chain(&head, &suite.leaf_hash(&body));
    }
    for (i, l) in proof.following_leaves.iter().enumerate() {
        let leaf = hex32(l, &format!("following leaf {i}"))?;
        head = suite.chain(&head, &leaf);
    }
    if head != cp.head {
        return Err(bad(format!("recomputed chain head does not match checkpoint #{} at seq {}", cp.index, cp.seq)));
    }
    Ok(out)
}
