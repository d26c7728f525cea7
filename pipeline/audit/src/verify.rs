//! Offline verification of a whole log directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::crypto::{Cipher, Hash, MasterKey};
use crate::error::Result;
use crate::format::{
    CHECKPOINTS_FILE, Checkpoint, KEYS_FILE, KeyRecord, Parsed, SegmentHead, T_CHECKPOINT, T_ENTRY, T_KEY, entry_aad,
    entry_nonce, is_torn_tail, list_segments, parse_frame, split_entry,
};
use crate::log::open_ring;

/// What kind of problem verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A frame's length or CRC is wrong (bytes changed without fixing the CRC, or damage).
    BadFrame,
    /// An entry is missing: a later seq was found where `seq` was expected.
    MissingEntry,
    /// Entries are out of order (the expected seq appears a little later).
    Reordered,
    /// An entry's GCM tag does not verify (content, position or seq altered).
    TagMismatch,
    /// An entry names a data key that does not exist or does not unwrap.
    UnknownKey,
    /// A record in `keys.log` is malformed or does not authenticate.
    BadKeyRecord,
    /// The chain head at a checkpoint's seq differs from the signed one.
    ChainMismatch,
    /// A segment does not continue the previous one (replaced, older copy, missing entries).
    SegmentLink,
    /// A segment file is missing (gap in numbering) or has no valid header.
    SegmentMissing,
    /// A checkpoint's signature does not verify (forged or altered).
    BadCheckpoint,
    /// Checkpoint indices have a gap or go backwards (a checkpoint was removed or reordered).
    CheckpointSequence,
    /// The log ends before a signed checkpoint (truncation or rollback of whole entries).
    Truncated,
    /// The external anchor checkpoint does not match this log.
    AnchorMismatch,
    /// A segment other than the last ends with an incomplete frame.
    TornMiddle,
    /// A stream the registry (or an anchor) knows is gone: directory deleted or emptied.
    StreamMissing,
    /// A stream's directory holds another log than the one registered / anchored, or an unreadable header.
    StreamReplaced,
    /// A stream directory that the registry does not list.
    StreamUnregistered,
    /// The stream registry is damaged, forged or not made with this master key.
    RegistryCorrupt,
    /// The stream registry is missing or was replaced although streams were registered in it.
    RegistryMissing,
    /// The stream registry is shorter than, or diverges from, the anchored registry head.
    RegistryRollback,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The file concerned.
    pub file: PathBuf,
    /// Byte offset in `file`, when it applies.
    pub offset: Option<u64>,
    /// The first bad (or expected) sequence number, when it applies.
    pub seq: Option<u64>,
    /// The checkpoint index concerned, when it applies.
    pub checkpoint: Option<u64>,
    /// Human-readable explanation.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} in {}", self.kind, self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        if let Some(s) = self.seq {
            write!(f, " seq {s}")?;
        }
        if let Some(c) = self.checkpoint {
            write!(f, " checkpoint #{c}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// A torn final frame (crash mid-append): reported, not a problem by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The file.
    pub file: PathBuf,
    /// Offset where the incomplete frame starts.
    pub offset: u64,
    /// Number of bytes after `offset`.
    pub bytes: u64,
}

/// Options of [`verify_with`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Decrypt every entry and check its GCM tag (exact location of any edit).
    /// When false only CRCs, sequence numbers, segment links, the hash chain
    /// and signed checkpoints are checked (edits with recomputed CRC and
    /// chain are then located to the checkpoint interval).
    pub decrypt: bool,
    /// A checkpoint kept outside this machine: detects rollback or truncation
    /// of the whole directory (including `checkpoints.log`).
    pub anchor: Option<Checkpoint>,
    /// More anchors, handled like [`VerifyOptions::anchor`] (e.g. the
    /// checkpoint recorded in the stream registry and the one in an anchor file).
    pub anchors: Vec<Checkpoint>,
    /// Stop scanning entries after this many problems.
    pub max_problems: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { decrypt: true, anchor: None, anchors: Vec::new(), max_problems: 16 }
    }
}

/// Result of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Entries whose frame, seq and chain were checked.
    pub entries: u64,
    /// Entries whose GCM tag was checked (0 in chain-only mode).
    pub decrypted: u64,
    /// Segment files scanned.
    pub segments: u32,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Checkpoints whose chain head was matched against the entries.
    pub checkpoints_matched: u64,
    /// Data keys that unwrapped.
    pub keys: u32,
    /// Last seq seen (0 for an empty log).
    pub last_seq: u64,
    /// Chain head after the last entry (hex).
    pub head: String,
    /// A torn final frame (crash); not a problem unless a checkpoint covers it.
    pub torn_tail: Option<TornTail>,
    /// The first problem (lowest seq; file-level problems without a seq come after).
    pub first_problem: Option<Problem>,
    /// All problems found (entry scanning stops at the first chain break).
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the log in `dir` completely, decrypting every entry (see
/// [`VerifyOptions::decrypt`]). A wrong or missing key is an `Err`; damage
/// and tampering are reported in the [`VerifyReport`].
pub fn verify(dir: impl AsRef<Path>, master: &MasterKey) -> Result<VerifyReport> {
    verify_with(dir, master, &VerifyOptions::default())
}

/// Verifies with options.
pub fn verify_with(dir: impl AsRef<Path>, master: &MasterKey, opts: &VerifyOptions) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let (header, ring) = open_ring(dir, master)?;
    let suite = ring.suite;
    let mut problems: Vec<Problem> = Vec::new();
    let mut rep = VerifyReport {
        entries: 0,
        decrypted: 0,
        segments: 0,
        checkpoints: 0,
        checkpoints_matched: 0,
        keys: 0,
        last_seq: 0,
        head: String::new(),
        torn_tail: None,
        first_problem: None,
        problems: Vec::new(),
    };
    let prob = |kind, file: &Path, offset: Option<u64>, seq, checkpoint, detail: String| Problem {
        kind,
        file: file.to_path_buf(),
        offset,
        seq,
        checkpoint,
        detail,
    };

    // Keys.
    let keys_path = dir.join(KEYS_FILE);
    let mut keys: HashMap<u32, Cipher> = HashMap::new();
    let kdata = read_opt(&keys_path)?;
    let mut pos = 0;
    while pos < kdata.len() {
        match parse_frame(&kdata, pos) {
            Parsed::Frame { ty: T_KEY, body, end } => {
                match KeyRecord::decode(body).and_then(|r| ring.unwrap(r.key_id, &r.wrapped).map(|k| (r.key_id, k))) {
                    Some((id, (c, _))) => {
                        keys.insert(id, c);
                    }
                    None => problems.push(prob(
                        ProblemKind::BadKeyRecord,
                        &keys_path,
                        Some(pos as u64),
                        None,
                        None,
                        "key record malformed or does not authenticate".into(),
                    )),
                }
                pos = end;
            }
            _ if is_torn_tail(&kdata, pos) => break,
            _ => {
                problems.push(prob(
                    ProblemKind::BadKeyRecord,
                    &keys_path,
                    Some(pos as u64),
                    None,
                    None,
                    "damaged frame in keys.log".into(),
                ));
                break;
            }
        }
    }
    rep.keys = keys.len() as u32;

    // Checkpoints.
    let cps_path = dir.join(CHECKPOINTS_FILE);
    let cdata = read_opt(&cps_path)?;
    let mut cps: Vec<Checkpoint> = Vec::new();
    let mut pos = 0;
    let mut expect_index = 1u64;
    let mut last_cp_seq = 0u64;
    while pos < cdata.len() {
        match parse_frame(&cdata, pos) {
            Parsed::Frame { ty: T_CHECKPOINT, body, end } => {
                match Checkpoint::decode(body) {
                    Some(cp) if cp.verify_signature(suite, &ring.log_id, &header.public_key) => {
                        if cp.index != expect_index || cp.seq < last_cp_seq {
                            problems.push(prob(
                                ProblemKind::CheckpointSequence,
                                &cps_path,
                                Some(pos as u64),
                                Some(cp.seq),
                                Some(cp.index),
                                format!(
                                    "expected checkpoint #{expect_index} after seq {last_cp_seq}, found #{} at seq {} (checkpoint removed or reordered)",
                                    cp.index, cp.seq
                                ),
                            ));
                        }
                        expect_index = cp.index + 1;
                        last_cp_seq = cp.seq;
                        rep.checkpoints += 1;
                        cps.push(cp);
                    }
                    Some(cp) => problems.push(prob(
                        ProblemKind::BadCheckpoint,
                        &cps_path,
                        Some(pos as u64),
                        Some(cp.seq),
                        Some(cp.index),
                        format!(
                            "signature of checkpoint #{} (seq {}) does not verify: forged or altered",
                            cp.index, cp.seq
                        ),
                    )),
                    None => problems.push(prob(
                        ProblemKind::BadCheckpoint,
                        &cps_path,
                        Some(pos as u64),
                        None,
                        None,
                        "malformed checkpoint record".into(),
                    )),
                }
                pos = end;
            }
            _ if is_torn_tail(&cdata, pos) => break,
            _ => {
                problems.push(prob(
                    ProblemKind::BadCheckpoint,
                    &cps_path,
                    Some(pos as u64),
                    None,
                    None,
                    "damaged frame in checkpoints.log (bytes altered)".into(),
                ));
                break;
            }
        }
    }
    for a in opts.anchor.iter().chain(&opts.anchors) {
        if a.verify_signature(suite, &ring.log_id, &header.public_key) {
            cps.push(a.clone());
        } else {
            problems.push(prob(
                ProblemKind::AnchorMismatch,
                dir,
                None,
                Some(a.seq),
                Some(a.index),
                "anchor checkpoint signature does not verify for this log".into(),
            ));
        }
    }
    cps.sort_by_key(|c| c.seq);
    let mut cp_i = 0usize;

    // Segments.
    let segs = list_segments(dir)?;
    let genesis = suite.genesis(&ring.log_id);
    let mut head: Hash = genesis;
    let mut next_seq = 1u64;
    let mut expected_no = 1u32;
    let nsegs = segs.len();
    let mut entry_problem = false;
    // Checkpoints at seq 0 match the genesis.
    while cp_i < cps.len() && cps[cp_i].seq == 0 {
        cp_i += 1;
    }
    let mut seg_buf: Vec<u8> = Vec::new();
    'segs: for (si, (no, path)) in segs.iter().enumerate() {
        rep.segments += 1;
        if *no != expected_no {
            problems.push(prob(
                ProblemKind::SegmentMissing,
                path,
                None,
                Some(next_seq),
                None,
                format!("segment {} expected, found {} (segment file deleted)", expected_no, no),
            ));
            entry_problem = true;
            break;
        }
        expected_no += 1;
        let io = |e| crate::AuditError::io(path, "reading segment", e);
        let mut cr = Chunked::open(path, std::mem::take(&mut seg_buf)).map_err(io)?;
        // The header frame is small; make sure it is in the buffer (or the file ends).
        while !cr.eof && !matches!(parse_frame(&cr.buf, 0), Parsed::Frame { .. } | Parsed::BadLen) {
            cr.rest().map_err(io)?;
        }
        let mut pos = match parse_frame(&cr.buf, 0) {
            Parsed::Frame { body, end, .. } => match SegmentHead::decode(body) {
                Some(sh) if sh.log_id == ring.log_id && sh.segment == *no => {
                    if sh.first_seq != next_seq || sh.prev_hash != head {
                        let what = if sh.first_seq > next_seq {
                            format!(
                                "segment starts at seq {} but the previous one ended at seq {}: entries {}..{} missing (older copy of a segment?)",
                                sh.first_seq,
                                next_seq - 1,
                                next_seq,
                                sh.first_seq - 1
                            )
                        } else if sh.first_seq < next_seq {
                            format!(
                                "segment starts at seq {} but seq {} was expected: overlapping / replaced segment",
                                sh.first_seq, next_seq
                            )
                        } else {
                            "segment's previous-hash does not match the chain head of the previous segment".into()
                        };
                        problems.push(prob(ProblemKind::SegmentLink, path, Some(0), Some(next_seq), None, what));
                        entry_problem = true;
                        break 'segs;
                    }
                    end
                }
                _ => {
                    problems.push(prob(
                        ProblemKind::SegmentMissing,
                        path,
                        Some(0),
                        Some(next_seq),
                        None,
                        "first frame is not this log's segment header".into(),
                    ));
                    entry_problem = true;
                    break 'segs;
                }
            },
            _ if si + 1 == nsegs && is_torn_tail(&cr.buf, 0) => {
                rep.torn_tail = Some(TornTail { file: path.clone(), offset: 0, bytes: cr.buf.len() as u64 });
                break 'segs;
            }
            _ => {
                problems.push(prob(
                    ProblemKind::BadFrame,
                    path,
                    Some(0),
                    Some(next_seq),
                    None,
                    "damaged segment header".into(),
                ));
                entry_problem = true;
                break 'segs;
            }
        };
        let mut pt: Vec<u8> = Vec::with_capacity(4096);
        loop {
            if pos == cr.buf.len() {
                if cr.eof {
                    break;
                }
                cr.more(&mut pos).map_err(io)?;
                continue;
            }
            let parsed = parse_frame(&cr.buf, pos);
            if !cr.eof {
                match parsed {
                    Parsed::Incomplete => {
                        cr.more(&mut pos).map_err(io)?;
                        continue;
                    }
                    Parsed::BadLen | Parsed::BadCrc { .. } => {
                        // Decide torn-vs-damaged on the whole rest of the file.
                        cr.rest().map_err(io)?;
                        continue;
                    }
                    _ => {}
                }
            }
            let at = cr.base + pos as u64;
            match parsed {
                Parsed::Frame { ty: T_ENTRY, body, end } => {
                    let Some((eh, ct, tag)) = split_entry(body) else {
                        problems.push(prob(
                            ProblemKind::BadFrame,
                            path,
                            Some(at),
                            Some(next_seq),
                            None,
                            "entry frame too short".into(),
                        ));
                        entry_problem = true;
                        break 'segs;
                    };
                    if eh.seq != next_seq {
                        let (kind, what) = classify_seq(&cr.buf, end, next_seq, eh.seq);
                        problems.push(prob(kind, path, Some(at), Some(next_seq), None, what));
                        entry_problem = true;
                        break 'segs;
                    }
                    if opts.decrypt {
                        match keys.get(&eh.key_id) {
                            None => {
                                problems.push(prob(
                                    ProblemKind::UnknownKey,
                                    path,
                                    Some(at),
                                    Some(eh.seq),
                                    None,
                                    format!("data key {} unknown or unreadable", eh.key_id),
                                ));
                                entry_problem = true;
                                break 'segs;
                            }
                            Some(c) => {
                                let aad = entry_aad(&ring.log_id, &eh, &head);
                                pt.clear();
                                pt.extend_from_slice(ct);
                                if !c.open(&entry_nonce(eh.key_id, eh.seq), &aad, &mut pt, tag) {
                                    problems.push(prob(
                                        ProblemKind::TagMismatch,
                                        path,
                                        Some(at),
                                        Some(eh.seq),
                                        None,
                                        "authentication tag mismatch: entry content, seq, time or chain position altered".into(),
                                    ));
                                    entry_problem = true;
                                    break 'segs;
                                }
                                rep.decrypted += 1;
                            }
                        }
                    }
                    head = suite.chain(&head, &suite.leaf_hash(body));
                    rep.entries += 1;
                    rep.last_seq = eh.seq;
                    while cp_i < cps.len() && cps[cp_i].seq == eh.seq {
                        let cp = &cps[cp_i];
                        if cp.head != head {
                            let prev = if cp_i > 0 { cps[cp_i - 1].seq } else { 0 };
                            problems.push(prob(
                                ProblemKind::ChainMismatch,
                                path,
                                Some(at),
                                Some(prev + 1),
                                Some(cp.index),
                                format!(
                                    "chain head at seq {} differs from signed checkpoint #{}: an entry in seq {}..={} was altered, replaced or removed",
                                    cp.seq,
                                    cp.index,
                                    prev + 1,
                                    cp.seq
                                ),
                            ));
                            entry_problem = true;
                            break 'segs;
                        }
                        rep.checkpoints_matched += 1;
                        cp_i += 1;
                    }
                    next_seq += 1;
                    pos = end;
                }
                Parsed::Frame { ty, .. } => {
                    problems.push(prob(
                        ProblemKind::BadFrame,
                        path,
                        Some(at),
                        Some(next_seq),
                        None,
                        format!("unexpected frame type {ty:#04x}"),
                    ));
                    entry_problem = true;
                    break 'segs;
                }
                _ if is_torn_tail(&cr.buf, pos) => {
                    if si + 1 == nsegs {
                        rep.torn_tail =
                            Some(TornTail { file: path.clone(), offset: at, bytes: (cr.buf.len() - pos) as u64 });
                    } else {
                        problems.push(prob(
                            ProblemKind::TornMiddle,
                            path,
                            Some(at),
                            Some(next_seq),
                            None,
                            "incomplete frame at the end of a segment that is not the last".into(),
                        ));
                        entry_problem = true;
                        break 'segs;
                    }
                    break;
                }
                _ => {
                    problems.push(prob(
                        ProblemKind::BadFrame,
                        path,
                        Some(at),
                        Some(next_seq),
                        None,
                        "frame length or CRC wrong (bytes altered)".into(),
                    ));
                    entry_problem = true;
                    break 'segs;
                }
            }
            if problems.len() >= opts.max_problems {
                break 'segs;
            }
        }
        seg_buf = std::mem::take(&mut cr.buf);
    }
    if !entry_problem {
        // Checkpoints beyond the end: whole entries were removed.
        if let Some(cp) = cps.get(cp_i..).and_then(|r| r.iter().find(|c| c.seq > rep.last_seq)) {
            let is_anchor = opts.anchor.as_ref().is_some_and(|a| a == cp) || opts.anchors.contains(cp);
            problems.push(prob(
                if is_anchor { ProblemKind::AnchorMismatch } else { ProblemKind::Truncated },
                &segs.last().map(|s| s.1.clone()).unwrap_or_else(|| dir.to_path_buf()),
                None,
                Some(rep.last_seq + 1),
                Some(cp.index),
                format!(
                    "log ends at seq {} but checkpoint #{} was signed at seq {}: entries {}..={} were truncated or the log was rolled back",
                    rep.last_seq,
                    cp.index,
                    cp.seq,
                    rep.last_seq + 1,
                    cp.seq
                ),
            ));
        }
    }
    rep.head = hex::encode(head);
    let first = problems.iter().filter(|p| p.seq.is_some()).min_by_key(|p| p.seq).or_else(|| problems.first()).cloned();
    rep.first_problem = first;
    rep.problems = problems;
    Ok(rep)
}

/// Distinguishes a missing entry from a reordering by looking a few frames ahead.
fn classify_seq(data: &[u8], mut pos: usize, expected: u64, found: u64) -> (ProblemKind, String) {
    for _ in 0..8 {
        match parse_frame(data, pos) {
            Parsed::Frame { ty: T_ENTRY, body, end } => {
                if let Some((eh, _, _)) = split_entry(body)
                    && eh.seq == expected
                {
                    return (
                        ProblemKind::Reordered,
                        format!(
                            "expected seq {expected}, found seq {found}; seq {expected} appears later: entries reordered"
                        ),
                    );
                }
                pos = end;
            }
            _ => break,
        }
    }
    if found > expected {
        (
            ProblemKind::MissingEntry,
            format!("expected seq {expected}, found seq {found}: entries {expected}..{} deleted", found - 1),
        )
    } else {
        (
            ProblemKind::Reordered,
            format!("expected seq {expected}, found earlier seq {found}: entry duplicated or reordered"),
        )
    }
}

fn read_opt(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(crate::AuditError::io(path, "reading", e)),
    }
}

/// Reads a segment in chunks so that hashing works on data still in cache.
struct Chunked {
    f: std::fs::File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

const CHUNK: usize = 1 << 20;

impl Chunked {
    fn open(path: &Path, mut buf: Vec<u8>) -> std::io::Result<Chunked> {
        buf.clear();
        let mut c = Chunked { f: std::fs::File::open(path)?, buf, base: 0, eof: false };
        let mut p = 0;
        c.more(&mut p)?;
        Ok(c)
    }

    /// Drops the bytes before `*pos` and appends up to one chunk.
    fn more(&mut self, pos: &mut usize) -> std::io::Result<()> {
        use std::io::Read as _;
        if *pos > 0 {
            self.buf.drain(..*pos);
            self.base += *pos as u64;
            *pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let mut got = 0;
        while got < CHUNK {
            match self.f.read(&mut self.buf[len + got..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len + got);
                    return Err(e);
                }
            }
        }
        self.buf.truncate(len + got);
        Ok(())
    }

    /// Reads the rest of the file into the buffer.
    fn rest(&mut self) -> std::io::Result<()> {
        use std::io::Read as _;
        self.f.read_to_end(&mut self.buf)?;
        self.eof = true;
        Ok(())
    }
}
