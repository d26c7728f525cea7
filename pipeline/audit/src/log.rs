//! The writer: [`AuditLog`], its configuration, recovery on open and group commit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::crypto::{Cipher, CryptoSuite, Hash, Keyring, MasterKey};
use crate::error::{AuditError, Result};
use crate::event::{AuditEvent, AuditFilter, AuditRecord};
use crate::format::{
    CHECKPOINTS_FILE, Checkpoint, ENTRY_HDR, KEYS_FILE, KeyRecord, LogHeader, Parsed, SegmentHead, T_CHECKPOINT,
    T_ENTRY, T_KEY, entry_aad, entry_nonce, is_torn_tail, list_segments, parse_frame, seal_frame_in_place,
    segment_name, split_entry,
};
use crate::read::{ExportFormat, Records, Tail, export_records};
use crate::registry::RegistryWriter;

/// When the log calls `fsync` (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never by itself: data reaches the OS when the write buffer fills or on
    /// [`AuditLog::flush`], and the disk only on [`AuditLog::sync`],
    /// [`AuditLog::append_durable`] or close.
    Never,
    /// Group commit: a background thread flushes and fsyncs every `interval`
    /// (when something was appended). [`AuditLog::append_durable`] wakes it at
    /// once and waits; concurrent durable appends share one fsync.
    GroupCommit {
        /// Longest time an appended entry stays only in memory.
        interval: Duration,
    },
    /// Every append is flushed and fsynced before it returns (slow; for tests
    /// and very low volume).
    EveryAppend,
}

/// When data keys rotate. A fresh data key is also always created when a log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate after this many entries under one key (0 = never by count).
    pub entries: u64,
    /// Rotate when the key is older than this.
    pub interval: Option<Duration>,
}

/// Configuration of [`AuditLog::open`].
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The master key (see [`MasterKey::from_env`], [`MasterKey::from_file`]).
    pub master_key: MasterKey,
    /// Suite for a new log; must match the header of an existing one.
    pub suite: CryptoSuite,
    /// Data-key rotation.
    pub rotate_every: Rotation,
    /// Sign a checkpoint after this many entries (0 = only on close / explicit [`AuditLog::checkpoint`]).
    pub checkpoint_every: u64,
    /// Also sign a checkpoint when the last one is older than this (checked on append).
    pub checkpoint_interval: Option<Duration>,
    /// Node name written into events whose `node` is empty, and into the header.
    pub node: String,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Start a new segment file once the current one reaches this size.
    pub segment_max_bytes: u64,
    /// Size of the in-memory write buffer.
    pub write_buffer_bytes: usize,
}

impl AuditConfig {
    /// Defaults: standard suite, rotate every 1,000,000 entries or 24 h,
    /// checkpoint every 10,000 entries or 60 s, group commit every 10 ms,
    /// 64 MiB segments, 256 KiB write buffer.
    pub fn new(master_key: MasterKey) -> Self {
        AuditConfig {
            master_key,
            suite: CryptoSuite::Standard,
            rotate_every: Rotation { entries: 1_000_000, interval: Some(Duration::from_secs(24 * 3600)) },
            checkpoint_every: 10_000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            node: String::new(),
            fsync: FsyncPolicy::GroupCommit { interval: Duration::from_millis(10) },
            segment_max_bytes: 64 * 1024 * 1024,
            write_buffer_bytes: 256 * 1024,
        }
    }
}

/// What recovery did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Bytes of a torn final frame cut from the last segment (crash mid-append).
    pub truncated_bytes: u64,
    /// The segment file that was cut, if any.
    pub truncated_file: Option<PathBuf>,
    /// Where the cut bytes were saved for forensics.
    pub saved_to: Option<PathBuf>,
    /// Torn bytes cut from `keys.log` / `checkpoints.log`.
    pub truncated_side_bytes: u64,
    /// Last sequence number after recovery.
    pub last_seq: u64,
}

/// A `File` shared between the buffered writer and the fsync thread.
struct SharedFile(Arc<File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct DataKey {
    id: u32,
    cipher: Cipher,
    count: u64,
    created: Instant,
}

struct Writer {
    seg_no: u32,
    seg_path: PathBuf,
    seg: BufWriter<SharedFile>,
    seg_file: Arc<File>,
    seg_bytes: u64,
    next_seq: u64,
    head: Hash,
    key: DataKey,
    next_key_id: u32,
    keys_file: File,
    cp_file: File,
    next_cp_index: u64,
    last_cp_seq: u64,
    last_cp_time: Instant,
    last_cp: Option<Checkpoint>,
    /// The latest checkpoint written to `checkpoints.log`.
    written_cp: Option<Checkpoint>,
    /// Checkpoints signed but not yet written (they wait until the entries they cover are durable).
    pending_cps: Vec<Checkpoint>,
    frame: Vec<u8>,
    failed: Option<String>,
    closed: bool,
}

struct Durable {
    /// Highest seq known to be fsynced.
    seq: u64,
    /// Highest seq somebody is waiting for.
    wanted: u64,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) ring: Arc<Keyring>,
    cfg: AuditConfig,
    w: Mutex<Writer>,
    sync_lock: Mutex<()>,
    durable: Mutex<Durable>,
    durable_cv: Condvar,
    stop: AtomicBool,
    syncer: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoveryInfo,
    /// The stream registry of the audit root (streams opened with [`AuditLog::open_stream`]).
    registry: Mutex<Option<StreamReg>>,
}

/// This stream's handle on the registry of its audit root.
struct StreamReg {
    w: RegistryWriter,
    stream: String,
    log_id: [u8; 16],
    /// The last registry append failed (retried at the next sync).
    error: Option<String>,
}

/// Handle to an open audit log. Cheap to clone (an `Arc`); all methods take
/// `&self` and are safe to call from many threads (an internal mutex
/// serialises appends; fsync happens outside it). Usable from tokio: the
/// calls are short and blocking — call [`AuditLog::append_durable`] and
/// [`AuditLog::sync`] through `spawn_blocking` if you must not block a worker.
///
/// Dropping the last handle writes a final checkpoint and fsyncs (see [`AuditLog::close`]).
#[derive(Clone)]
pub struct AuditLog {
    pub(crate) inner: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Runs `close` when the last user handle goes away (the syncer thread holds
/// only `Arc<Shared>`, so it does not keep the log alive).
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        let _ = close_shared(&self.0);
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.inner.dir).field("suite", &self.inner.ring.suite).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| AuditError::io(dir, "opening directory for fsync", e))?;
    d.sync_all().map_err(|e| AuditError::io(dir, "fsync of directory", e))
}

/// Reads a side file (`keys.log`, `checkpoints.log`) into frames, cutting a torn tail.
/// Returns frame bodies and the number of bytes cut.
fn load_side_file(path: &Path, ty: u8, repair: bool) -> Result<(Vec<Vec<u8>>, u64)> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(AuditError::io(path, "reading", e)),
    };
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < data.len() {
        match parse_frame(&data, pos) {
            Parsed::Frame { ty: t, body, end } if t == ty => {
                out.push(body.to_vec());
                pos = end;
            }
            Parsed::Frame { ty: t, .. } => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    offset: pos as u64,
                    seq: None,
                    reason: format!("unexpected frame type {t:#04x}"),
                });
            }
            _ if is_torn_tail(&data, pos) => break,
            _ => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    offset: pos as u64,
                    seq: None,
                    reason: "damaged frame (bad length or CRC) followed by more data".into(),
                });
            }
        }
    }
    let cut = (data.len() - pos) as u64;
    if cut > 0 && repair {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, "opening to cut torn tail", e))?;
        f.set_len(pos as u64).map_err(|e| AuditError::io(path, "cutting torn tail", e))?;
        f.sync_all().map_err(|e| AuditError::io(path, "fsync after cutting torn tail", e))?;
    }
    Ok((out, cut))
}

/// Unwrapped data keys by id: the cipher and the raw key bytes.
pub(crate) type KeyMap = HashMap<u32, (Cipher, Vec<u8>)>;

pub(crate) fn load_keys(path: &Path, ring: &Keyring, repair: bool) -> Result<(KeyMap, u64)> {
    let (frames, cut) = load_side_file(path, T_KEY, repair)?;
    let mut keys = HashMap::new();
    for (i, body) in frames.iter().enumerate() {
        let rec = KeyRecord::decode(body).ok_or_else(|| AuditError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            seq: None,
            reason: format!("key record #{} malformed", i + 1),
        })?;
        let k = ring.unwrap(rec.key_id, &rec.wrapped).ok_or_else(|| AuditError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            seq: None,
            reason: format!("wrapped data key {} does not authenticate", rec.key_id),
        })?;
        keys.insert(rec.key_id, k);
    }
    Ok((keys, cut))
}

pub(crate) fn load_checkpoints(path: &Path, repair: bool) -> Result<(Vec<Checkpoint>, u64)> {
    let (frames, cut) = load_side_file(path, T_CHECKPOINT, repair)?;
    let mut cps = Vec::with_capacity(frames.len());
    for (i, body) in frames.iter().enumerate() {
        cps.push(Checkpoint::decode(body).ok_or_else(|| AuditError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            seq: None,
            reason: format!("checkpoint record #{} malformed", i + 1),
        })?);
    }
    Ok((cps, cut))
}

/// State found by scanning the last segment.
struct Tip {
    seg_no: u32,
    seg_path: PathBuf,
    valid_len: u64,
    first_seq: u64,
    next_seq: u64,
    head: Hash,
    /// Chain heads by seq within this segment (for checking the last checkpoint).
    heads: Vec<Hash>,
}

fn scan_segment_tip(path: &Path, seg_no: u32, ring: &Keyring) -> Result<Option<(Tip, u64)>> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| AuditError::io(path, "reading segment", e))?;
    let corrupt = |offset: usize, seq: Option<u64>, reason: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        seq,
        reason,
    };
    let (sh, mut pos) = match parse_frame(&data, 0) {
        Parsed::Frame { body, end, .. } => match SegmentHead::decode(body) {
            Some(h) => (h, end),
            None => return Err(corrupt(0, None, "first frame is not a valid segment header".into())),
        },
        _ if is_torn_tail(&data, 0) => return Ok(None),
        _ => return Err(corrupt(0, None, "damaged segment header".into())),
    };
    if sh.log_id != ring.log_id || sh.segment != seg_no {
        return Err(corrupt(0, None, format!("segment header belongs to another log or number {}", sh.segment)));
    }
    let mut next = sh.first_seq;
    let mut head = sh.prev_hash;
    let mut heads = Vec::new();
    while pos < data.len() {
        match parse_frame(&data, pos) {
            Parsed::Frame { ty: T_ENTRY, body, end } => {
                let (eh, _, _) =
                    split_entry(body).ok_or_else(|| corrupt(pos, Some(next), "entry frame too short".into()))?;
                if eh.seq != next {
                    return Err(corrupt(pos, Some(next), format!("expected seq {next}, found seq {}", eh.seq)));
                }
                head = ring.suite.chain(&head, &ring.suite.leaf_hash(body));
                heads.push(head);
                next += 1;
                pos = end;
            }
            Parsed::Frame { ty, .. } => {
                return Err(corrupt(pos, Some(next), format!("unexpected frame type {ty:#04x}")));
            }
            _ if is_torn_tail(&data, pos) => break,
            _ => {
                return Err(corrupt(pos, Some(next), "damaged frame (bad length or CRC) followed by more data".into()));
            }
        }
    }
    let cut = (data.len() - pos) as u64;
    let tip = Tip {
        seg_no,
        seg_path: path.to_path_buf(),
        valid_len: pos as u64,
        first_seq: sh.first_seq,
        next_seq: next,
        head,
        heads,
    };
    Ok(Some((tip, cut)))
}

impl AuditLog {
    /// Opens the log in `dir` (created if needed), recovering from a crash:
    /// a torn final frame of the last segment (and of `keys.log` /
    /// `checkpoints.log`) is cut — the cut bytes are saved next to the
    /// segment as `torn-<segment>-<offset>.bin` — and appending continues
    /// after the last complete entry.
    ///
    /// Opening refuses a log whose last segment is damaged in the middle
    /// ([`AuditError::Corrupt`]) or that ends before its last signed
    /// checkpoint ([`AuditError::Truncated`]): such a log needs [`crate::verify`]
    /// and a human, not silent repair. A wrong master key gives
    /// [`AuditError::WrongKey`]. Only the last segment is scanned; run
    /// [`crate::verify`] for a full check.
    pub fn open(dir: impl AsRef<Path>, cfg: AuditConfig) -> Result<AuditLog> {
        Self::open_inner(dir.as_ref().to_path_buf(), cfg, None)
    }

    /// Opens (or creates) stream `stream` under the audit root `root` (the
    /// log is in `root/<stream>/`) and records it in the root's signed stream
    /// registry (`root/streams.registry`, created on first use; it then
    /// adopts the stream directories already present). Every checkpoint that
    /// becomes durable is also recorded there, so deleting the stream, or
    /// cutting entries together with `checkpoints.log`, fails
    /// [`crate::verify_root`].
    ///
    /// Besides the refusals of [`AuditLog::open`], opening refuses
    /// ([`AuditError::Registry`], [`AuditError::Truncated`] or
    /// [`AuditError::Corrupt`]) a stream that the registry knows but whose
    /// directory was emptied or holds another log, that ends before the
    /// checkpoint recorded in the registry, or whose `checkpoints.log` lacks
    /// it; and a stream directory whose `registry.ref` names another
    /// registry (the registry was deleted or replaced). Like `open`, this
    /// does not lock the stream against a second writer process: callers
    /// hold a per-stream lock.
    pub fn open_stream(root: impl AsRef<Path>, stream: &str, cfg: AuditConfig) -> Result<AuditLog> {
        let root = root.as_ref();
        crate::root::check_stream_name(stream)?;
        let dir = root.join(stream);
        let mut reg = RegistryWriter::open(root, &cfg.master_key, cfg.suite)?;
        let floor = match reg.scan.active(stream) {
            Some(r) => {
                match LogHeader::read(&dir)? {
                    None => {
                        return Err(AuditError::Registry {
                            path: dir.clone(),
                            reason: format!(
                                "stream {stream:?} is registered (log id {}) but its directory is missing or empty: deleted? run verify; an officer can retire it",
                                hex::encode(r.log_id)
                            ),
                        });
                    }
                    Some(h) if h.log_id != r.log_id => {
                        return Err(AuditError::Registry {
                            path: dir.clone(),
                            reason: format!(
                                "stream {stream:?} is registered with log id {} but the directory holds log {}: replaced",
                                hex::encode(r.log_id),
                                hex::encode(h.log_id)
                            ),
                        });
                    }
                    Some(_) => {}
                }
                r.last_checkpoint.clone()
            }
            None => None,
        };
        if let Some(r) = crate::registry::RegistryRef::read(&dir)
            && reg.scan.keys.as_ref().is_none_or(|k| !r.verifies(k))
        {
            return Err(AuditError::Registry {
                path: dir.join(crate::registry::REF_FILE),
                reason: format!(
                    "stream {stream:?} was registered in another stream registry than {}: the registry was deleted or replaced; run verify",
                    root.join(crate::registry::REGISTRY_FILE).display()
                ),
            });
        }
        let log = Self::open_inner(dir.clone(), cfg, floor)?;
        let last_cp = lock(&log.inner.w).written_cp.clone();
        reg.register(stream, &dir, last_cp)?;
        let log_id = log.inner.ring.log_id;
        *lock(&log.inner.registry) = Some(StreamReg { w: reg, stream: stream.to_string(), log_id, error: None });
        Ok(log)
    }

    fn open_inner(dir: PathBuf, cfg: AuditConfig, floor: Option<Checkpoint>) -> Result<AuditLog> {
        if cfg.segment_max_bytes < 4096 {
            return Err(AuditError::Invalid { reason: "segment_max_bytes must be at least 4096".into() });
        }
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, "creating audit directory", e))?;
        let header = match LogHeader::read(&dir)? {
            Some(h) => h,
            None => {
                if !list_segments(&dir)?.is_empty() {
                    return Err(AuditError::BadHeader {
                        path: LogHeader::path(&dir),
                        reason: "header missing but segment files exist".into(),
                    });
                }
                let mut log_id = [0u8; 16];
                rand::fill(&mut log_id);
                let ring = Keyring::derive(cfg.suite, &cfg.master_key, log_id)?;
                let h = LogHeader::new(&ring, &cfg.node);
                let json = serde_json::to_vec_pretty(&h)
                    .map_err(|e| AuditError::Serde { seq: None, reason: e.to_string() })?;
                let tmp = dir.join("audit.header.tmp");
                let path = LogHeader::path(&dir);
                (|| -> std::io::Result<()> {
                    let mut f = File::create(&tmp)?;
                    f.write_all(&json)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)
                })()
                .map_err(|e| AuditError::io(&path, "writing log header", e))?;
                sync_dir(&dir)?;
                h
            }
        };
        if header.suite != cfg.suite {
            return Err(AuditError::SuiteMismatch {
                path: LogHeader::path(&dir),
                found: header.suite,
                wanted: cfg.suite,
            });
        }
        let ring = header.authenticate(&dir, &cfg.master_key)?;
        let mut recovery = RecoveryInfo::default();

        // Side files.
        let keys_path = dir.join(KEYS_FILE);
        let (keys, cut_k) = load_keys(&keys_path, &ring, true)?;
        let cps_path = dir.join(CHECKPOINTS_FILE);
        let (cps, cut_c) = load_checkpoints(&cps_path, true)?;
        recovery.truncated_side_bytes = cut_k + cut_c;
        let last_cp = cps.last().cloned();
        if let Some(cp) = &last_cp
            && !cp.verify_signature(ring.suite, &ring.log_id, &header.public_key)
        {
            return Err(AuditError::Corrupt {
                path: cps_path.clone(),
                offset: 0,
                seq: Some(cp.seq),
                reason: format!("checkpoint #{} signature does not verify", cp.index),
            });
        }

        // Last segment.
        let mut segs = list_segments(&dir)?;
        let mut tip: Option<Tip> = None;
        while let Some((n, p)) = segs.last().cloned() {
            match scan_segment_tip(&p, n, &ring)? {
                Some((t, cut)) => {
                    if cut > 0 {
                        let saved = dir.join(format!("torn-{n:06}-{}.bin", t.valid_len));
                        let data = std::fs::read(&p).map_err(|e| AuditError::io(&p, "reading torn tail", e))?;
                        let start = usize::try_from(t.valid_len).unwrap_or(data.len()).min(data.len());
                        std::fs::write(&saved, &data[start..])
                            .map_err(|e| AuditError::io(&saved, "saving torn tail", e))?;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .map_err(|e| AuditError::io(&p, "opening to cut torn tail", e))?;
                        f.set_len(t.valid_len).map_err(|e| AuditError::io(&p, "cutting torn tail", e))?;
                        f.sync_all().map_err(|e| AuditError::io(&p, "fsync after cut", e))?;
                        recovery.truncated_bytes = cut;
                        recovery.truncated_file = Some(p.clone());
                        recovery.saved_to = Some(saved);
                    }
                    tip = Some(t);
                    break;
                }
                None => {
                    // Crash while creating the segment: not even its header is complete.
                    std::fs::remove_file(&p).map_err(|e| AuditError::io(&p, "removing empty torn segment", e))?;
                    segs.pop();
                }
            }
        }

        let genesis = ring.suite.genesis(&ring.log_id);
        let (next_seq, head) = match &tip {
            Some(t) => (t.next_seq, t.head),
            None => (1, genesis),
        };
        let last_seq = next_seq - 1;
        recovery.last_seq = last_seq;
        if let Some(cp) = &last_cp {
            if cp.seq > last_seq {
                return Err(AuditError::Truncated { checkpoint: cp.index, checkpoint_seq: cp.seq, log_end: last_seq });
            }
            let known = match &tip {
                Some(t) if cp.seq >= t.first_seq && cp.seq > 0 => t.heads.get((cp.seq - t.first_seq) as usize).copied(),
                _ if cp.seq == 0 => Some(genesis),
                _ => None,
            };
            if let Some(h) = known
                && h != cp.head
            {
                let t = tip.as_ref().map(|t| t.seg_path.clone()).unwrap_or_else(|| dir.clone());
                return Err(AuditError::Corrupt {
                    path: t,
                    offset: 0,
                    seq: Some(cp.seq),
                    reason: format!("chain head at seq {} does not match signed checkpoint #{}", cp.seq, cp.index),
                });
            }
        }

        if let Some(f) = &floor {
            // The registry recorded this checkpoint as durable: the log must still reach it.
            if f.seq > last_seq {
                return Err(AuditError::Truncated { checkpoint: f.index, checkpoint_seq: f.seq, log_end: last_seq });
            }
            let have = last_cp.as_ref().map_or(0, |c| c.index);
            if have < f.index {
                return Err(AuditError::Corrupt {
                    path: cps_path.clone(),
                    offset: 0,
                    seq: Some(f.seq),
                    reason: format!(
                        "the stream registry recorded checkpoint #{} (seq {}) but checkpoints.log ends at checkpoint #{have}: checkpoints.log removed or truncated",
                        f.index, f.seq
                    ),
                });
            }
            if let Some(t) = &tip
                && f.seq >= t.first_seq
                && let Some(h) = t.heads.get((f.seq - t.first_seq) as usize)
                && *h != f.head
            {
                return Err(AuditError::Corrupt {
                    path: t.seg_path.clone(),
                    offset: 0,
                    seq: Some(f.seq),
                    reason: format!(
                        "chain head at seq {} does not match checkpoint #{} recorded in the stream registry",
                        f.seq, f.index
                    ),
                });
            }
        }

        // Open files for appending.
        let (seg_no, seg_path, seg_file, seg_bytes) = match tip {
            Some(t) => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&t.seg_path)
                    .map_err(|e| AuditError::io(&t.seg_path, "opening segment for append", e))?;
                (t.seg_no, t.seg_path, f, t.valid_len)
            }
            None => {
                let n = 1;
                let p = dir.join(segment_name(n));
                let (f, len) = create_segment(&dir, &p, n, &ring, next_seq, &head)?;
                (n, p, f, len)
            }
        };
        let keys_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&keys_path)
            .map_err(|e| AuditError::io(&keys_path, "opening", e))?;
        let cp_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cps_path)
            .map_err(|e| AuditError::io(&cps_path, "opening", e))?;
        let next_key_id = keys.keys().copied().max().unwrap_or(0) + 1;
        drop(keys);
        let seg_file = Arc::new(seg_file);
        let placeholder = Cipher::new(ring.suite, &vec![0u8; ring.suite.key_len()])
            .ok_or_else(|| AuditError::Crypto { what: "cipher init".into() })?;
        let mut w = Writer {
            seg_no,
            seg_path,
            seg: BufWriter::with_capacity(cfg.write_buffer_bytes.max(4096), SharedFile(Arc::clone(&seg_file))),
            seg_file,
            seg_bytes,
            next_seq,
            head,
            key: DataKey { id: 0, cipher: placeholder, count: 0, created: Instant::now() },
            next_key_id,
            keys_file,
            cp_file,
            next_cp_index: last_cp.as_ref().map_or(1, |c| c.index + 1),
            last_cp_seq: last_cp.as_ref().map_or(0, |c| c.seq),
            last_cp_time: Instant::now(),
            written_cp: last_cp.clone(),
            last_cp,
            pending_cps: Vec::new(),
            frame: Vec::with_capacity(4096),
            failed: None,
            closed: false,
        };
        let ring = Arc::new(ring);
        // Always a fresh data key per session: nonces (key id ‖ seq) can never repeat,
        // even when a torn entry's seq is reused after a crash.
        rotate_key(&mut w, &ring, &keys_path)?;

        let shared = Arc::new(Shared {
            dir,
            ring,
            cfg,
            w: Mutex::new(w),
            sync_lock: Mutex::new(()),
            durable: Mutex::new(Durable { seq: last_seq, wanted: 0 }),
            durable_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            syncer: Mutex::new(None),
            recovery,
            registry: Mutex::new(None),
        });
        if let FsyncPolicy::GroupCommit { interval } = shared.cfg.fsync {
            let s2 = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name("lianqin-audit-sync".into())
                .spawn(move || syncer_loop(&s2, interval))
                .map_err(|e| AuditError::io(&shared.dir, "spawning sync thread", e))?;
            *lock(&shared.syncer) = Some(h);
        }
        let closer = Arc::new(Closer(Arc::clone(&shared)));
        Ok(AuditLog { inner: shared, _closer: closer })
    }

    /// Appends one event and returns its sequence number.
    ///
    /// Durability: on return the entry is encrypted, chained and in the
    /// in-process write buffer. It reaches the OS when the buffer fills, on
    /// [`AuditLog::flush`], or at the next group commit; the disk at the next
    /// group commit (at most `interval` later) or [`AuditLog::sync`]. Use
    /// [`AuditLog::append_durable`] when the caller must not proceed before the
    /// entry is on disk.
    pub fn append(&self, event: AuditEvent) -> Result<u64> {
        self.append_ref(&event)
    }

    /// Like [`AuditLog::append`] but borrows the event (no move, no clone needed
    /// when the caller reuses an event value).
    pub fn append_ref(&self, event: &AuditEvent) -> Result<u64> {
        let seq = {
            let mut w = lock(&self.inner.w);
            append_locked(&self.inner, &mut w, event)?
        };
        if self.inner.cfg.fsync == FsyncPolicy::EveryAppend {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Appends several events under one lock acquisition; returns the
    /// sequence number of the last one (or the current last seq when empty).
    /// Same durability as [`AuditLog::append`].
    pub fn append_batch<I: IntoIterator<Item = AuditEvent>>(&self, events: I) -> Result<u64> {
        let seq = {
            let mut w = lock(&self.inner.w);
            let mut last = w.next_seq - 1;
            for e in events {
                last = append_locked(&self.inner, &mut w, &e)?;
            }
            last
        };
        if self.inner.cfg.fsync == FsyncPolicy::EveryAppend {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Appends and waits until the entry is fsynced. With group commit the
    /// fsync is shared with every other entry appended meanwhile.
    pub fn append_durable(&self, event: AuditEvent) -> Result<u64> {
        let seq = self.append(event)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Blocks until every entry up to `seq` is fsynced.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        match self.inner.cfg.fsync {
            FsyncPolicy::GroupCommit { .. } => {
                let mut d = lock(&self.inner.durable);
                if d.seq >= seq {
                    return Ok(());
                }
                d.wanted = d.wanted.max(seq);
                self.inner.durable_cv.notify_all();
                while d.seq < seq {
                    if let Some(f) = lock(&self.inner.w).failed.clone() {
                        return Err(AuditError::WriterFailed { reason: f });
                    }
                    let (g, _) = self
                        .inner
                        .durable_cv
                        .wait_timeout(d, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner());
                    d = g;
                }
                Ok(())
            }
            _ => {
                if lock(&self.inner.durable).seq >= seq {
                    return Ok(());
                }
                self.sync()
            }
        }
    }

    /// Pushes buffered entries to the OS (they survive a process crash, not a
    /// power loss). With [`FsyncPolicy::Never`] pending checkpoints are written too.
    pub fn flush(&self) -> Result<()> {
        let mut w = lock(&self.inner.w);
        flush_locked(&self.inner, &mut w)?;
        if self.inner.cfg.fsync == FsyncPolicy::Never {
            write_pending_cps(&self.inner, &mut w, u64::MAX)?;
        }
        Ok(())
    }

    /// Flushes and fsyncs everything appended so far, then writes and fsyncs
    /// the checkpoints that cover it.
    pub fn sync(&self) -> Result<()> {
        sync_shared(&self.inner)
    }

    /// Signs a checkpoint at the current head now (if there are entries since
    /// the last one), makes it durable and returns the latest checkpoint.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        {
            let mut w = lock(&self.inner.w);
            make_checkpoint(&self.inner, &mut w);
        }
        self.sync()?;
        Ok(lock(&self.inner.w).last_cp.clone())
    }

    /// The latest signed checkpoint (also those not yet written to disk).
    /// Publish it outside this machine to detect rollback of the whole directory.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        lock(&self.inner.w).last_cp.clone()
    }

    /// Sequence number of the last appended entry (0 when empty).
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner.w).next_seq - 1
    }

    /// Highest sequence number known to be fsynced.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.inner.durable).seq
    }

    /// What recovery did when this log was opened.
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.inner.recovery
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The suite of this log.
    pub fn suite(&self) -> CryptoSuite {
        self.inner.ring.suite
    }

    /// The checkpoint verification key (ed25519 32 bytes or SM2 SEC1 point):
    /// give it to inspectors for [`crate::verify_export`].
    pub fn public_key(&self) -> Vec<u8> {
        self.inner.ring.sign.public()
    }

    /// Reads decrypted entries matching `filter` (everything flushed so far),
    /// verifying CRCs, sequence continuity, the chain and every GCM tag on the way.
    /// Callers should themselves append an [`crate::EventKind::AuditRead`] event.
    pub fn search(&self, filter: AuditFilter) -> Result<Records> {
        self.flush()?;
        Records::new(&self.inner.dir, Arc::clone(&self.inner.ring), filter)
    }

    /// Follows the log from `from_seq` (inclusive): each [`Tail::poll`]
    /// returns the entries appended (and flushed) since the previous poll.
    pub fn tail(&self, from_seq: u64) -> Result<Tail> {
        self.flush()?;
        Tail::new(&self.inner.dir, Arc::clone(&self.inner.ring), from_seq, Some(self.clone()))
    }

    /// Writes the entries matching `filter` to `out` as CSV (with header row)
    /// or JSON Lines; returns the number written.
    pub fn export<W: Write>(&self, filter: AuditFilter, format: ExportFormat, out: W) -> Result<u64> {
        let recs = self.search(filter)?;
        export_records(recs, format, out)
    }

    /// Flushes, writes a final checkpoint and fsyncs; further appends fail.
    /// Called automatically when the last handle is dropped. For a stream
    /// opened with [`AuditLog::open_stream`], an error recording the final
    /// checkpoint in the registry is returned as [`AuditError::Registry`]
    /// (the entries are durable nonetheless).
    pub fn close(&self) -> Result<()> {
        close_shared(&self.inner)?;
        match self.registry_error() {
            Some(reason) => Err(AuditError::Registry { path: self.inner.dir.clone(), reason }),
            None => Ok(()),
        }
    }

    /// For a stream opened with [`AuditLog::open_stream`]: why the last
    /// attempt to record a durable checkpoint in the stream registry failed
    /// (retried at every sync), if it did.
    pub fn registry_error(&self) -> Option<String> {
        lock(&self.inner.registry).as_ref().and_then(|r| r.error.clone())
    }
}

fn close_shared(s: &Arc<Shared>) -> Result<()> {
    {
        let mut w = lock(&s.w);
        if w.closed {
            return Ok(());
        }
        if w.failed.is_none() {
            make_checkpoint(s, &mut w);
        }
    }
    let r = sync_shared(s);
    lock(&s.w).closed = true;
    s.stop.store(true, Ordering::SeqCst);
    s.durable_cv.notify_all();
    if let Some(h) = lock(&s.syncer).take()
        && h.thread().id() != std::thread::current().id()
    {
        let _ = h.join();
    }
    r
}

fn create_segment(dir: &Path, path: &Path, n: u32, ring: &Keyring, first_seq: u64, prev: &Hash) -> Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io(path, "creating segment", e))?;
    let h = SegmentHead { log_id: ring.log_id, segment: n, first_seq, prev_hash: *prev }.encode();
    f.write_all(&h).map_err(|e| AuditError::io(path, "writing segment header", e))?;
    f.sync_data().map_err(|e| AuditError::io(path, "fsync of new segment", e))?;
    sync_dir(dir)?;
    Ok((f, h.len() as u64))
}

fn rotate_key(w: &mut Writer, ring: &Keyring, keys_path: &Path) -> Result<()> {
    let mut key = vec![0u8; ring.suite.key_len()];
    rand::fill(key.as_mut_slice());
    let id = w.next_key_id;
    let rec = KeyRecord { key_id: id, created_us: Utc::now().timestamp_micros(), wrapped: ring.wrap(id, &key)? };
    let cipher = Cipher::new(ring.suite, &key).ok_or_else(|| AuditError::Crypto { what: "cipher init".into() });
    zeroize::Zeroize::zeroize(&mut key);
    let cipher = cipher?;
    // The wrapped key must be on disk before any entry encrypted with it.
    w.keys_file.write_all(&rec.encode()).map_err(|e| AuditError::io(keys_path, "writing key record", e))?;
    w.keys_file.sync_data().map_err(|e| AuditError::io(keys_path, "fsync of key record", e))?;
    w.key = DataKey { id, cipher, count: 0, created: Instant::now() };
    w.next_key_id += 1;
    Ok(())
}

fn fail(w: &mut Writer, e: AuditError) -> AuditError {
    if w.failed.is_none() {
        w.failed = Some(e.to_string());
    }
    e
}

fn append_locked(s: &Shared, w: &mut Writer, event: &AuditEvent) -> Result<u64> {
    if let Some(f) = &w.failed {
        return Err(AuditError::WriterFailed { reason: f.clone() });
    }
    if w.closed {
        return Err(AuditError::WriterFailed { reason: "log closed".into() });
    }
    let cfg = &s.cfg;
    let ring = &*s.ring;
    let rot = cfg.rotate_every;
    if (rot.entries > 0 && w.key.count >= rot.entries) || rot.interval.is_some_and(|i| w.key.created.elapsed() >= i) {
        let kp = s.dir.join(KEYS_FILE);
        rotate_key(w, ring, &kp).map_err(|e| fail(w, e))?;
    }
    let seq = w.next_seq;
    let time_us = event.time.timestamp_micros();
    let key_id = w.key.id;

    // Build the frame in the reusable buffer: len placeholder, type, clear header, plaintext.
    let mut frame = std::mem::take(&mut w.frame);
    frame.clear();
    frame.extend_from_slice(&[0u8; 4]);
    frame.push(T_ENTRY);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&time_us.to_le_bytes());
    frame.extend_from_slice(&key_id.to_le_bytes());
    let pt_start = 5 + ENTRY_HDR;
    if let Err(e) = crate::codec::encode(event, &cfg.node, &mut frame) {
        w.frame = frame;
        return Err(AuditError::Serde { seq: Some(seq), reason: e });
    }
    let eh = crate::format::EntryHead { seq, time_us, key_id };
    let aad = entry_aad(&ring.log_id, &eh, &w.head);
    let nonce = entry_nonce(key_id, seq);
    let Some(tag) = w.key.cipher.seal(&nonce, &aad, &mut frame[pt_start..]) else {
        w.frame = frame;
        return Err(AuditError::Crypto { what: format!("encryption of seq {seq} failed") });
    };
    frame.extend_from_slice(&tag);
    seal_frame_in_place(&mut frame, 0);
    let body_end = frame.len() - 4;
    let leaf = ring.suite.leaf_hash(&frame[4..body_end]);
    let new_head = ring.suite.chain(&w.head, &leaf);
    if let Err(e) = w.seg.write_all(&frame) {
        w.frame = frame;
        let e = AuditError::io(&w.seg_path, "writing entry", e);
        return Err(fail(w, e));
    }
    w.seg_bytes += frame.len() as u64;
    w.frame = frame;
    w.head = new_head;
    w.next_seq += 1;
    w.key.count += 1;

    if (cfg.checkpoint_every > 0 && seq - w.last_cp_seq >= cfg.checkpoint_every)
        || cfg.checkpoint_interval.is_some_and(|i| w.last_cp_time.elapsed() >= i)
    {
        make_checkpoint(s, w);
    }
    if w.seg_bytes >= cfg.segment_max_bytes {
        roll_segment(s, w).map_err(|e| fail(w, e))?;
    }
    Ok(seq)
}

fn make_checkpoint(s: &Shared, w: &mut Writer) {
    let seq = w.next_seq - 1;
    w.last_cp_time = Instant::now();
    if seq == w.last_cp_seq && w.last_cp.is_some() {
        return;
    }
    if seq == 0 {
        return;
    }
    let cp = Checkpoint::create(&s.ring, w.next_cp_index, seq, w.head);
    w.next_cp_index += 1;
    w.last_cp_seq = seq;
    w.last_cp = Some(cp.clone());
    w.pending_cps.push(cp);
}

fn roll_segment(s: &Shared, w: &mut Writer) -> Result<()> {
    flush_locked(s, w)?;
    w.seg_file.sync_data().map_err(|e| AuditError::io(&w.seg_path, "fsync of full segment", e))?;
    let n = w.seg_no + 1;
    let p = s.dir.join(segment_name(n));
    let (f, len) = create_segment(&s.dir, &p, n, &s.ring, w.next_seq, &w.head)?;
    let f = Arc::new(f);
    w.seg = BufWriter::with_capacity(s.cfg.write_buffer_bytes.max(4096), SharedFile(Arc::clone(&f)));
    w.seg_file = f;
    w.seg_no = n;
    w.seg_path = p;
    w.seg_bytes = len;
    Ok(())
}

fn flush_locked(s: &Shared, w: &mut Writer) -> Result<()> {
    if let Some(f) = &w.failed {
        return Err(AuditError::WriterFailed { reason: f.clone() });
    }
    let _ = s;
    if let Err(e) = w.seg.flush() {
        let e = AuditError::io(&w.seg_path, "flushing entries", e);
        return Err(fail(w, e));
    }
    Ok(())
}

/// Writes pending checkpoints with seq ≤ `upto` to `checkpoints.log` (to the OS).
fn write_pending_cps(s: &Shared, w: &mut Writer, upto: u64) -> Result<bool> {
    let n = w.pending_cps.iter().take_while(|c| c.seq <= upto).count();
    if n == 0 {
        return Ok(false);
    }
    let mut buf = Vec::with_capacity(n * 140);
    for cp in &w.pending_cps[..n] {
        buf.extend_from_slice(&cp.encode());
    }
    let path = s.dir.join(CHECKPOINTS_FILE);
    if let Err(e) = w.cp_file.write_all(&buf) {
        let e = AuditError::io(&path, "writing checkpoints", e);
        return Err(fail(w, e));
    }
    w.written_cp = w.pending_cps.get(n - 1).cloned();
    w.pending_cps.drain(..n);
    Ok(true)
}

fn sync_shared(s: &Shared) -> Result<()> {
    let _g = lock(&s.sync_lock);
    let (target, file, path) = {
        let mut w = lock(&s.w);
        flush_locked(s, &mut w)?;
        (w.next_seq - 1, Arc::clone(&w.seg_file), w.seg_path.clone())
    };
    if let Err(e) = file.sync_data() {
        let e = AuditError::io(&path, "fsync of segment", e);
        let mut w = lock(&s.w);
        return Err(fail(&mut w, e));
    }
    let (cp_file, to_register) = {
        let mut w = lock(&s.w);
        let wrote = write_pending_cps(s, &mut w, target)?;
        // The registry records a checkpoint only once entries and checkpoint are on disk.
        let to_register = match lock(&s.registry).as_ref() {
            Some(r) => w.written_cp.clone().filter(|cp| {
                r.w.scan.active(&r.stream).and_then(|x| x.last_checkpoint.as_ref()).is_none_or(|c| c.seq < cp.seq)
            }),
            None => None,
        };
        let f = if wrote || to_register.is_some() { w.cp_file.try_clone().ok() } else { None };
        (f, to_register)
    };
    if let Some(f) = cp_file {
        let p = s.dir.join(CHECKPOINTS_FILE);
        if let Err(e) = f.sync_data() {
            let e = AuditError::io(&p, "fsync of checkpoints", e);
            let mut w = lock(&s.w);
            return Err(fail(&mut w, e));
        }
    }
    {
        let mut d = lock(&s.durable);
        if target > d.seq {
            d.seq = target;
        }
        s.durable_cv.notify_all();
    }
    // The entries are durable whatever happens to the registry: a failed registry append is
    // kept (see `AuditLog::registry_error`, returned by `close`) and retried at the next sync.
    if let Some(cp) = to_register
        && let Some(r) = lock(&s.registry).as_mut()
    {
        let (stream, log_id) = (r.stream.clone(), r.log_id);
        r.error = r.w.progress(&stream, log_id, &cp).err().map(|e| e.to_string());
    }
    Ok(())
}

fn syncer_loop(s: &Arc<Shared>, interval: Duration) {
    let mut last_synced = lock(&s.durable).seq;
    loop {
        {
            let d = lock(&s.durable);
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            if d.wanted <= d.seq {
                let _ = s.durable_cv.wait_timeout(d, interval).unwrap_or_else(|p| p.into_inner());
            }
        }
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let (last, pending) = {
            let w = lock(&s.w);
            if w.failed.is_some() || w.closed {
                return;
            }
            (w.next_seq - 1, !w.pending_cps.is_empty())
        };
        if last > last_synced || pending {
            if sync_shared(s).is_err() {
                // The writer is marked failed; waiters see it.
                s.durable_cv.notify_all();
                return;
            }
            last_synced = last;
        }
    }
}

/// Positions a file for reading at `offset` (helper for readers).
pub(crate) fn read_from(path: &Path, offset: u64, out: &mut Vec<u8>) -> Result<usize> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AuditError::io(path, "opening segment", e)),
    };
    f.seek(SeekFrom::Start(offset)).map_err(|e| AuditError::io(path, "seeking segment", e))?;
    // At most 1 MiB per call keeps the data hot in cache while it is hashed and decrypted.
    f.take(1 << 20).read_to_end(out).map_err(|e| AuditError::io(path, "reading segment", e))
}

/// Opens a log read-only for reading: checks the key and header, returns the keyring.
pub(crate) fn open_ring(dir: &Path, master: &MasterKey) -> Result<(LogHeader, Keyring)> {
    let header = LogHeader::read(dir)?.ok_or_else(|| AuditError::BadHeader {
        path: LogHeader::path(dir),
        reason: "no audit log here (header missing)".into(),
    })?;
    let ring = header.authenticate(dir, master)?;
    Ok((header, ring))
}

/// Reads entries of the log in `dir` (e.g. from another process) with the master key.
pub fn read(dir: impl AsRef<Path>, master: &MasterKey, filter: AuditFilter) -> Result<Records> {
    let dir = dir.as_ref();
    let (_, ring) = open_ring(dir, master)?;
    Records::new(dir, Arc::new(ring), filter)
}

/// Decrypts one entry body; used by readers, verify and proofs.
pub(crate) fn decrypt_entry(
    suite_ring: &Keyring,
    cipher: &Cipher,
    body: &[u8],
    prev: &Hash,
) -> Option<(crate::format::EntryHead, Vec<u8>)> {
    let (eh, ct, tag) = split_entry(body)?;
    let aad = entry_aad(&suite_ring.log_id, &eh, prev);
    let mut pt = ct.to_vec();
    if cipher.open(&entry_nonce(eh.key_id, eh.seq), &aad, &mut pt, tag) { Some((eh, pt)) } else { None }
}

/// Parses a decrypted entry into a record.
pub(crate) fn parse_record(seq: u64, time_us: i64, pt: &[u8]) -> Result<AuditRecord> {
    let event = crate::codec::decode(pt, time_us).map_err(|reason| AuditError::Serde { seq: Some(seq), reason })?;
    Ok(AuditRecord { seq, event })
}
