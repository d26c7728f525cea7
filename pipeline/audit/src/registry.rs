//! The signed registry of the streams under an audit root
//! (`<root>/streams.registry`), so that a stream that disappears, or is cut
//! back together with its `checkpoints.log`, fails verification.
//!
//! The file uses the same framing as the `.log` files (length, type `0x40`,
//! payload, CRC-32). Each record's payload is
//! `index u64 ‖ prev[32] ‖ json ‖ sig[64]`: `prev` is the registry chain head
//! before the record (`r_n = H(0x01 ‖ r_{n-1} ‖ H(0x00 ‖ body_n))`, start
//! value `H("lianqin-audit/v1/registry-genesis")`), and the signature covers
//! `"LIANQIN-AUDIT-REGISTRY-v1" ‖ registry_id ‖ index (BE) ‖ prev ‖ json`
//! under a key derived from the master key and the registry id. Appends
//! happen under an exclusive lock on `streams.registry.lock` in one
//! `write(2)` on an `O_APPEND` file followed by `fsync`; a torn final record
//! (crash) is cut by the next writer and saved as `torn-registry-<off>.bin`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoSuite, Hash, MasterKey, SIG_LEN, SignKey, ct_eq, verify_signature};
use crate::error::{AuditError, Result};
use crate::format::{Checkpoint, LogHeader, Parsed, hex_array, hex_array16, hex_vec, is_torn_tail, parse_frame};

/// File name of the registry under the audit root.
pub const REGISTRY_FILE: &str = "streams.registry";
/// Lock file serialising registry appends (several processes).
pub(crate) const REGISTRY_LOCK: &str = "streams.registry.lock";
/// Marker in a stream directory naming the registry it was registered in.
pub(crate) const REF_FILE: &str = "registry.ref";
/// Frame type of a registry record.
pub(crate) const T_REGISTRY: u8 = 0x40;
const SIGN_MAGIC: &[u8] = b"LIANQIN-AUDIT-REGISTRY-v1";
const SIGN_LABEL: &str = "lianqin-audit/v1/registry-sign";

/// One record of the stream registry (stored as JSON inside a signed, chained frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegistryEntry {
    /// Record 0: identifies the registry and its signing key.
    Registry {
        /// Random id of this registry.
        #[serde(with = "hex_array16")]
        registry_id: [u8; 16],
        /// Suite of the registry's hash chain and signatures.
        suite: CryptoSuite,
        /// When the registry was created.
        created: DateTime<Utc>,
        /// HMAC of the master key over a label and the id: recognises the right master key.
        #[serde(with = "hex_array")]
        key_check: Hash,
        /// Verification key of the registry signatures.
        #[serde(with = "hex_vec")]
        public_key: Vec<u8>,
    },
    /// A stream was created (`adopted`: it already existed when the registry was created).
    Stream {
        /// Stream name (directory under the audit root).
        stream: String,
        /// The stream's log id (from its `audit.header`).
        #[serde(with = "hex_array16")]
        log_id: [u8; 16],
        /// The stream's suite.
        suite: CryptoSuite,
        /// Creation time of the stream's log.
        created: DateTime<Utc>,
        /// Node recorded in the stream's header.
        node: String,
        /// The stream's checkpoint verification key.
        #[serde(with = "hex_vec")]
        public_key: Vec<u8>,
        /// Registered when the registry was created, not when the stream was.
        adopted: bool,
    },
    /// A signed checkpoint of a stream became durable (entries and `checkpoints.log` fsynced).
    Progress {
        /// Stream name.
        stream: String,
        /// The stream's log id.
        #[serde(with = "hex_array16")]
        log_id: [u8; 16],
        /// The checkpoint (signed with the stream's key).
        checkpoint: Checkpoint,
    },
    /// An officer retired a stream: it may be missing from now on.
    Retired {
        /// Stream name.
        stream: String,
        /// The log id retired.
        #[serde(with = "hex_array16")]
        log_id: [u8; 16],
        /// When.
        time: DateTime<Utc>,
        /// Why (free text, recorded).
        reason: String,
    },
}

/// What the registry says about one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredStream {
    /// Stream name.
    pub stream: String,
    /// Log id (hex in JSON).
    #[serde(with = "hex_array16")]
    pub log_id: [u8; 16],
    /// The stream's suite.
    pub suite: CryptoSuite,
    /// The stream's checkpoint verification key.
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// Creation time of the stream.
    pub created: DateTime<Utc>,
    /// Registered on registry creation (existed before).
    pub adopted: bool,
    /// Index of the registry record that registered it.
    pub record: u64,
    /// The latest durable checkpoint recorded for it.
    pub last_checkpoint: Option<Checkpoint>,
    /// Number of progress records.
    pub progress_records: u64,
    /// Set when the stream was retired (the reason).
    pub retired: Option<String>,
}

/// Derived registry secrets.
pub(crate) struct RegistryKeys {
    pub(crate) suite: CryptoSuite,
    pub(crate) registry_id: [u8; 16],
    pub(crate) key_check: Hash,
    pub(crate) ref_key: Hash,
    pub(crate) sign: SignKey,
}

impl RegistryKeys {
    pub(crate) fn derive(suite: CryptoSuite, master: &MasterKey, registry_id: [u8; 16]) -> Result<RegistryKeys> {
        let key_check = suite.hmac(master.bytes(), &[b"lianqin-audit/v1/registry-key-check", &registry_id]);
        let ref_key = suite.hmac(master.bytes(), &[b"lianqin-audit/v1/registry-ref", &registry_id]);
        let sign = SignKey::derive_labeled(suite, master, SIGN_LABEL, &registry_id)
            .ok_or_else(|| AuditError::Crypto { what: "cannot derive registry signing key".into() })?;
        Ok(RegistryKeys { suite, registry_id, key_check, ref_key, sign })
    }
}

fn genesis(suite: CryptoSuite) -> Hash {
    suite.hash(&[b"lianqin-audit/v1/registry-genesis"])
}

fn message(registry_id: &[u8; 16], index: u64, prev: &Hash, json: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_MAGIC.len() + 16 + 8 + 32 + json.len());
    m.extend_from_slice(SIGN_MAGIC);
    m.extend_from_slice(registry_id);
    m.extend_from_slice(&index.to_be_bytes());
    m.extend_from_slice(prev);
    m.extend_from_slice(json);
    m
}

/// Encodes one record frame.
fn encode_record(keys: &RegistryKeys, index: u64, prev: &Hash, entry: &RegistryEntry) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(|e| AuditError::Serde { seq: None, reason: e.to_string() })?;
    let sig = keys.sign.sign(&message(&keys.registry_id, index, prev, &json));
    let mut p = Vec::with_capacity(8 + 32 + json.len() + SIG_LEN);
    p.extend_from_slice(&index.to_le_bytes());
    p.extend_from_slice(prev);
    p.extend_from_slice(&json);
    p.extend_from_slice(&sig);
    let mut out = Vec::with_capacity(p.len() + 9);
    crate::format::push_frame(&mut out, T_REGISTRY, &p);
    Ok(out)
}

/// A problem in the registry file, located.
#[derive(Debug, Clone)]
pub(crate) struct ScanError {
    pub offset: u64,
    pub index: u64,
    pub reason: String,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    Clean,
    /// A torn final record (crash mid-append) at `offset`, `bytes` long.
    Torn {
        offset: u64,
        bytes: u64,
    },
}

/// Incremental reader of the registry: validates chain, signatures and
/// record semantics, and keeps what it says about each stream.
pub(crate) struct Scanner {
    master: MasterKey,
    pub(crate) keys: Option<RegistryKeys>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) head: Hash,
    pub(crate) next_index: u64,
    /// Length of the valid prefix of the file.
    pub(crate) valid_len: u64,
    pub(crate) streams: BTreeMap<String, RegisteredStream>,
    /// Chain head after each record (kept when verifying against an anchor).
    pub(crate) heads: Option<Vec<Hash>>,
}

impl Scanner {
    pub(crate) fn new(master: &MasterKey, keep_heads: bool) -> Scanner {
        Scanner {
            master: master.clone(),
            keys: None,
            public_key: Vec::new(),
            head: [0; 32],
            next_index: 0,
            valid_len: 0,
            streams: BTreeMap::new(),
            heads: keep_heads.then(Vec::new),
        }
    }

    /// The active (registered, not retired) entry of a stream.
    pub(crate) fn active(&self, stream: &str) -> Option<&RegisteredStream> {
        self.streams.get(stream).filter(|s| s.retired.is_none())
    }

    /// Feeds the file bytes from `valid_len` on. Stops at the first problem.
    pub(crate) fn feed(&mut self, data: &[u8]) -> std::result::Result<ScanEnd, ScanError> {
        let mut pos = 0usize;
        while pos < data.len() {
            let at = self.valid_len;
            let index = self.next_index;
            let err = move |reason: String| ScanError { offset: at, index, reason };
            match parse_frame(data, pos) {
                Parsed::Frame { ty: T_REGISTRY, body, end } => {
                    self.apply(body).map_err(err)?;
                    self.valid_len = at + (end - pos) as u64;
                    pos = end;
                }
                Parsed::Frame { ty, .. } => return Err(err(format!("unexpected frame type {ty:#04x}"))),
                _ if is_torn_tail(data, pos) => {
                    return Ok(ScanEnd::Torn { offset: at, bytes: (data.len() - pos) as u64 });
                }
                _ => return Err(err("damaged record (bad length or CRC) followed by more data".into())),
            }
        }
        Ok(ScanEnd::Clean)
    }

    fn apply(&mut self, body: &[u8]) -> std::result::Result<(), String> {
        let p = &body[1..];
        if p.len() < 8 + 32 + 2 + SIG_LEN {
            return Err("record too short".into());
        }
        let index = u64::from_le_bytes(p[..8].try_into().map_err(|_| "index")?);
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&p[8..40]);
        let json = &p[40..p.len() - SIG_LEN];
        let sig = &p[p.len() - SIG_LEN..];
        if index != self.next_index {
            return Err(format!(
                "record #{index} where #{} was expected: a record was removed, reordered or duplicated",
                self.next_index
            ));
        }
        let entry: RegistryEntry =
            serde_json::from_slice(json).map_err(|e| format!("record #{index} is not a registry entry: {e}"))?;
        if index == 0 {
            let RegistryEntry::Registry { registry_id, suite, key_check, public_key, .. } = &entry else {
                return Err("record #0 is not the registry header".into());
            };
            if prev != genesis(*suite) {
                return Err("record #0 does not start the registry chain".into());
            }
            let keys = RegistryKeys::derive(*suite, &self.master, *registry_id).map_err(|e| e.to_string())?;
            if !ct_eq(&keys.key_check, key_check) {
                return Err("registry key check does not match the master key: forged or replaced registry".into());
            }
            if keys.sign.public() != *public_key {
                return Err("registry public key does not match the master key".into());
            }
            self.public_key = public_key.clone();
            self.keys = Some(keys);
        } else if !ct_eq(&prev, &self.head) {
            return Err(format!(
                "record #{index} does not continue the chain: an earlier record was altered or removed"
            ));
        }
        let Some(keys) = &self.keys else { return Err("no registry header".into()) };
        let suite = keys.suite;
        if !verify_signature(suite, &self.public_key, &message(&keys.registry_id, index, &prev, json), sig) {
            return Err(format!("signature of record #{index} does not verify: forged or altered"));
        }
        match entry {
            RegistryEntry::Registry { .. } if index > 0 => {
                return Err(format!("record #{index}: second registry header"));
            }
            RegistryEntry::Registry { .. } => {}
            RegistryEntry::Stream { stream, log_id, suite, created, public_key, adopted, .. } => {
                if self.active(&stream).is_some() {
                    return Err(format!("record #{index}: stream {stream:?} registered twice"));
                }
                self.streams.insert(
                    stream.clone(),
                    RegisteredStream {
                        stream,
                        log_id,
                        suite,
                        public_key,
                        created,
                        adopted,
                        record: index,
                        last_checkpoint: None,
                        progress_records: 0,
                        retired: None,
                    },
                );
            }
            RegistryEntry::Progress { stream, log_id, checkpoint } => {
                let Some(s) = self.streams.get_mut(&stream).filter(|s| s.log_id == log_id && s.retired.is_none())
                else {
                    return Err(format!("record #{index}: progress of unregistered stream {stream:?}"));
                };
                if !checkpoint.verify_signature(s.suite, &s.log_id, &s.public_key) {
                    return Err(format!("record #{index}: checkpoint of stream {stream:?} has a bad signature"));
                }
                if s.last_checkpoint.as_ref().is_some_and(|c| c.seq > checkpoint.seq || c.index > checkpoint.index) {
                    return Err(format!("record #{index}: checkpoint of stream {stream:?} goes backwards"));
                }
                s.last_checkpoint = Some(checkpoint);
                s.progress_records += 1;
            }
            RegistryEntry::Retired { stream, log_id, reason, .. } => {
                let Some(s) = self.streams.get_mut(&stream).filter(|s| s.log_id == log_id && s.retired.is_none())
                else {
                    return Err(format!("record #{index}: retires unregistered stream {stream:?}"));
                };
                s.retired = Some(reason);
            }
        }
        self.head = suite.chain(&self.head_or_genesis(index, suite), &suite.leaf_hash(body));
        if let Some(h) = &mut self.heads {
            h.push(self.head);
        }
        self.next_index += 1;
        Ok(())
    }

    fn head_or_genesis(&self, index: u64, suite: CryptoSuite) -> Hash {
        if index == 0 { genesis(suite) } else { self.head }
    }

    /// The registry id, once record 0 was read.
    pub(crate) fn registry_id(&self) -> Option<[u8; 16]> {
        self.keys.as_ref().map(|k| k.registry_id)
    }
}

/// The marker `<stream>/registry.ref`: names the registry a stream was registered in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RegistryRef {
    pub format: String,
    #[serde(with = "hex_array16")]
    pub registry_id: [u8; 16],
    pub stream: String,
    #[serde(with = "hex_array16")]
    pub log_id: [u8; 16],
    #[serde(with = "hex_array")]
    pub mac: Hash,
}

impl RegistryRef {
    fn mac(keys: &RegistryKeys, stream: &str, log_id: &[u8; 16]) -> Hash {
        keys.suite.hmac(&keys.ref_key, &[stream.as_bytes(), b"|", log_id])
    }

    pub(crate) fn read(dir: &Path) -> Option<RegistryRef> {
        let data = std::fs::read(dir.join(REF_FILE)).ok()?;
        serde_json::from_slice(&data).ok().or(Some(RegistryRef {
            format: "unreadable".into(),
            registry_id: [0; 16],
            stream: String::new(),
            log_id: [0; 16],
            mac: [0; 32],
        }))
    }

    pub(crate) fn verifies(&self, keys: &RegistryKeys) -> bool {
        self.registry_id == keys.registry_id && ct_eq(&Self::mac(keys, &self.stream, &self.log_id), &self.mac)
    }

    fn write(dir: &Path, keys: &RegistryKeys, stream: &str, log_id: [u8; 16]) -> Result<()> {
        let r = RegistryRef {
            format: "lianqin-audit-registry-ref/v1".into(),
            registry_id: keys.registry_id,
            stream: stream.to_string(),
            log_id,
            mac: Self::mac(keys, stream, &log_id),
        };
        let json = serde_json::to_vec_pretty(&r).map_err(|e| AuditError::Serde { seq: None, reason: e.to_string() })?;
        let path = dir.join(REF_FILE);
        let tmp = dir.join("registry.ref.tmp");
        (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })()
        .map_err(|e| AuditError::io(&path, "writing registry marker", e))
    }
}

/// Reads the whole registry of `root` (no lock: a concurrent append shows as a torn tail).
/// `None` when there is no registry file.
pub(crate) fn scan_file(
    root: &Path,
    master: &MasterKey,
    keep_heads: bool,
) -> Result<Option<(Scanner, std::result::Result<ScanEnd, ScanError>)>> {
    let path = root.join(REGISTRY_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, "reading stream registry", e)),
    };
    let mut s = Scanner::new(master, keep_heads);
    let end = s.feed(&data);
    Ok(Some((s, end)))
}

/// The registry as seen by a writer of one stream: appends under the lock.
pub(crate) struct RegistryWriter {
    root: PathBuf,
    path: PathBuf,
    lock_path: PathBuf,
    pub(crate) scan: Scanner,
}

impl std::fmt::Debug for RegistryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryWriter").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RegistryWriter {
    /// Opens the registry of `root`, creating it (with `suite`) when missing;
    /// a new registry adopts the stream directories already present.
    pub(crate) fn open(root: &Path, master: &MasterKey, suite: CryptoSuite) -> Result<RegistryWriter> {
        std::fs::create_dir_all(root).map_err(|e| AuditError::io(root, "creating audit root", e))?;
        let mut w = RegistryWriter {
            root: root.to_path_buf(),
            path: root.join(REGISTRY_FILE),
            lock_path: root.join(REGISTRY_LOCK),
            scan: Scanner::new(master, false),
        };
        w.update(|scan, root| {
            if scan.next_index > 0 {
                return Ok(Vec::new());
            }
            // Streams that name a registry which is gone: it was deleted; do not start a fresh one.
            let marked: Vec<String> = std::fs::read_dir(root)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.path().join(REF_FILE).exists())
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default();
            if !marked.is_empty() {
                return Err(AuditError::Registry {
                    path: root.join(REGISTRY_FILE),
                    reason: format!(
                        "the stream registry is missing but stream(s) {marked:?} were registered in one: it was deleted; restore it from a backup (run verify)"
                    ),
                });
            }
            let mut registry_id = [0u8; 16];
            rand::fill(&mut registry_id);
            let keys = RegistryKeys::derive(suite, master, registry_id)?;
            let created = Utc::now();
            let created = DateTime::from_timestamp_micros(created.timestamp_micros()).unwrap_or(created);
            let mut out = vec![RegistryEntry::Registry {
                registry_id,
                suite,
                created,
                key_check: keys.key_check,
                public_key: keys.sign.public(),
            }];
            out.extend(adopt_existing(root, master)?);
            Ok(out)
        })?;
        Ok(w)
    }

    /// Under the registry lock: catches up with records of other writers,
    /// cuts a torn tail, then appends what `f` returns (one write, fsync).
    pub(crate) fn update<F>(&mut self, f: F) -> Result<()>
    where
        F: FnOnce(&Scanner, &Path) -> Result<Vec<RegistryEntry>>,
    {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| AuditError::io(&self.lock_path, "opening registry lock", e))?;
        lock.lock().map_err(|e| AuditError::io(&self.lock_path, "locking registry", e))?;
        let r = self.update_locked(f);
        let _ = lock.unlock();
        r
    }

    fn update_locked<F>(&mut self, f: F) -> Result<()>
    where
        F: FnOnce(&Scanner, &Path) -> Result<Vec<RegistryEntry>>,
    {
        let open = |create: bool| {
            OpenOptions::new()
                .create(create)
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| AuditError::io(&self.path, "opening stream registry", e))
        };
        let mut file = match open(false) {
            Ok(f) => Some(f),
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let len = match &file {
            Some(f) => f.metadata().map_err(|e| AuditError::io(&self.path, "stat of stream registry", e))?.len(),
            None => 0,
        };
        if len < self.scan.valid_len {
            return Err(AuditError::Registry {
                path: self.path.clone(),
                reason: format!(
                    "the registry shrank from {} to {len} bytes while open: truncated or replaced",
                    self.scan.valid_len
                ),
            });
        }
        if let Some(file) = file.as_mut().filter(|_| len > self.scan.valid_len) {
            let mut data = Vec::new();
            file.seek(SeekFrom::Start(self.scan.valid_len))
                .and_then(|_| file.read_to_end(&mut data))
                .map_err(|e| AuditError::io(&self.path, "reading stream registry", e))?;
            match self.scan.feed(&data) {
                Ok(ScanEnd::Clean) => {}
                Ok(ScanEnd::Torn { offset, bytes }) => {
                    // A crash while appending: keep the bytes for forensics and cut them.
                    let start = (offset - (len - data.len() as u64)) as usize;
                    let saved = self.root.join(format!("torn-registry-{offset}.bin"));
                    std::fs::write(&saved, &data[start..])
                        .map_err(|e| AuditError::io(&saved, "saving torn registry tail", e))?;
                    file.set_len(offset).map_err(|e| AuditError::io(&self.path, "cutting torn registry tail", e))?;
                    file.sync_all().map_err(|e| AuditError::io(&self.path, "fsync after cut", e))?;
                    let _ = bytes;
                }
                Err(e) => {
                    return Err(AuditError::Registry {
                        path: self.path.clone(),
                        reason: format!("record #{} at offset {}: {}", e.index, e.offset, e.reason),
                    });
                }
            }
        }
        let entries = f(&self.scan, &self.root)?;
        if entries.is_empty() {
            return Ok(());
        }
        // Encode against a copy of the state, then feed the bytes (validates them too).
        let mut buf = Vec::new();
        let mut head = self.scan.head;
        let mut keys_new: Option<RegistryKeys> = None;
        for (index, e) in (self.scan.next_index..).zip(entries.iter()) {
            if let RegistryEntry::Registry { registry_id, suite, .. } = e {
                keys_new = Some(RegistryKeys::derive(*suite, &self.scan.master, *registry_id)?);
                head = genesis(*suite);
            }
            let keys = keys_new.as_ref().or(self.scan.keys.as_ref()).ok_or_else(|| AuditError::Registry {
                path: self.path.clone(),
                reason: "registry has no header record".into(),
            })?;
            let rec = encode_record(keys, index, &head, e)?;
            let body = &rec[4..rec.len() - 4];
            head = keys.suite.chain(&head, &keys.suite.leaf_hash(body));
            buf.extend_from_slice(&rec);
        }
        let mut file = match file {
            Some(f) => f,
            None => {
                let f = open(true)?;
                File::open(&self.root)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| AuditError::io(&self.root, "fsync of audit root", e))?;
                f
            }
        };
        file.write_all(&buf).map_err(|e| AuditError::io(&self.path, "appending to stream registry", e))?;
        file.sync_data().map_err(|e| AuditError::io(&self.path, "fsync of stream registry", e))?;
        self.scan.feed(&buf).map_err(|e| AuditError::Registry {
            path: self.path.clone(),
            reason: format!("record just written does not verify: {}", e.reason),
        })?;
        Ok(())
    }

    /// Registers `stream` (log in `dir`) unless it already is; writes the marker.
    pub(crate) fn register(&mut self, stream: &str, dir: &Path, last_cp: Option<Checkpoint>) -> Result<()> {
        let header = LogHeader::read(dir)?.ok_or_else(|| AuditError::BadHeader {
            path: LogHeader::path(dir),
            reason: "no audit log here (header missing)".into(),
        })?;
        let path = self.path.clone();
        self.update(|scan, _| match scan.active(stream) {
            Some(r) if r.log_id == header.log_id => Ok(Vec::new()),
            Some(r) => Err(AuditError::Registry {
                path,
                reason: format!(
                    "stream {stream:?} is registered with log id {} but its directory holds log {}: replaced",
                    hex::encode(r.log_id),
                    hex::encode(header.log_id)
                ),
            }),
            None => {
                let mut v = vec![RegistryEntry::Stream {
                    stream: stream.to_string(),
                    log_id: header.log_id,
                    suite: header.suite,
                    created: header.created,
                    node: header.node.clone(),
                    public_key: header.public_key.clone(),
                    adopted: false,
                }];
                if let Some(cp) = last_cp {
                    v.push(RegistryEntry::Progress {
                        stream: stream.to_string(),
                        log_id: header.log_id,
                        checkpoint: cp,
                    });
                }
                Ok(v)
            }
        })?;
        let keys = self.scan.keys.as_ref().ok_or_else(|| AuditError::Registry {
            path: self.path.clone(),
            reason: "registry has no header record".into(),
        })?;
        match RegistryRef::read(dir) {
            Some(r) if r.verifies(keys) && r.log_id == header.log_id => Ok(()),
            _ => RegistryRef::write(dir, keys, stream, header.log_id),
        }
    }

    /// Records a durable checkpoint of `stream` (skipped when not newer than the recorded one).
    pub(crate) fn progress(&mut self, stream: &str, log_id: [u8; 16], cp: &Checkpoint) -> Result<()> {
        if self.scan.active(stream).and_then(|s| s.last_checkpoint.as_ref()).is_some_and(|c| c.seq >= cp.seq) {
            return Ok(());
        }
        self.update(|scan, _| {
            if scan.active(stream).and_then(|s| s.last_checkpoint.as_ref()).is_some_and(|c| c.seq >= cp.seq) {
                return Ok(Vec::new());
            }
            Ok(vec![RegistryEntry::Progress { stream: stream.to_string(), log_id, checkpoint: cp.clone() }])
        })
    }
}

/// Registry entries for the stream directories under `root` (registry creation).
/// Directories that already name another registry are not adopted (verification reports them).
fn adopt_existing(root: &Path, master: &MasterKey) -> Result<Vec<RegistryEntry>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return Ok(out) };
    let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if dir.join(REF_FILE).exists() {
            continue;
        }
        let Ok(Some(h)) = LogHeader::read(&dir) else { continue };
        if h.authenticate(&dir, master).is_err() {
            continue;
        }
        let cp = crate::log::load_checkpoints(&dir.join(crate::format::CHECKPOINTS_FILE), false)
            .ok()
            .and_then(|(cps, _)| cps.into_iter().rev().find(|c| c.verify_signature(h.suite, &h.log_id, &h.public_key)));
        out.push(RegistryEntry::Stream {
            stream: name.clone(),
            log_id: h.log_id,
            suite: h.suite,
            created: h.created,
            node: h.node.clone(),
            public_key: h.public_key.clone(),
            adopted: true,
        });
        if let Some(cp) = cp {
            out.push(RegistryEntry::Progress { stream: name, log_id: h.log_id, checkpoint: cp });
        }
    }
    Ok(out)
}
