//! Reading: a verifying cursor over the segments, search iterator, tail and export.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::{Cipher, Hash, Keyring, MasterKey};
use crate::error::{AuditError, Result};
use crate::event::{AuditFilter, AuditRecord};
use crate::format::{KEYS_FILE, Parsed, SegmentHead, T_ENTRY, parse_frame, segment_name, split_entry};
use crate::log::{AuditLog, decrypt_entry, load_keys, open_ring, parse_record, read_from};

/// A verifying forward cursor over the log. It checks frame CRCs, segment
/// linkage, sequence continuity, the hash chain and each entry's GCM tag
/// (whose AAD binds seq and previous hash).
pub(crate) struct Cursor {
    dir: PathBuf,
    ring: Arc<Keyring>,
    keys: HashMap<u32, Cipher>,
    seg_no: u32,
    seg_path: PathBuf,
    /// Bytes of the current segment from file offset `base`.
    buf: Vec<u8>,
    base: u64,
    pos: usize,
    in_segment: bool,
    next_seq: u64,
    head: Hash,
}

/// One raw step of the cursor.
pub(crate) enum Step {
    /// An entry (decrypted plaintext and the frame body, e.g. for proofs).
    Entry { seq: u64, time_us: i64, key_id: u32, body: Vec<u8>, prev: Hash, plaintext: Option<Vec<u8>> },
    /// No more complete entries at the moment.
    End,
}

impl Cursor {
    pub(crate) fn new(dir: &Path, ring: Arc<Keyring>) -> Self {
        let genesis = ring.suite.genesis(&ring.log_id);
        Cursor {
            dir: dir.to_path_buf(),
            ring,
            keys: HashMap::new(),
            seg_no: 1,
            seg_path: dir.join(segment_name(1)),
            buf: Vec::new(),
            base: 0,
            pos: 0,
            in_segment: false,
            next_seq: 1,
            head: genesis,
        }
    }

    fn corrupt(&self, reason: String) -> AuditError {
        AuditError::Corrupt {
            path: self.seg_path.clone(),
            offset: self.base + self.pos as u64,
            seq: Some(self.next_seq),
            reason,
        }
    }

    fn refill(&mut self) -> Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.base += self.pos as u64;
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let at = self.base + self.buf.len() as u64;
        read_from(&self.seg_path, at, &mut self.buf)
    }

    fn cipher(&mut self, key_id: u32) -> Result<Option<&Cipher>> {
        if !self.keys.contains_key(&key_id) {
            let (keys, _) = load_keys(&self.dir.join(KEYS_FILE), &self.ring, false)?;
            self.keys = keys.into_iter().map(|(k, (c, _))| (k, c)).collect();
        }
        Ok(self.keys.get(&key_id))
    }

    /// Advances to the next entry. `decrypt` = false skips decryption only
    /// for entries `skip` says are filtered out by header (the chain is still checked).
    pub(crate) fn step(&mut self, want: &mut dyn FnMut(u64, i64) -> bool) -> Result<Step> {
        loop {
            if !self.in_segment {
                // Start the current segment: need its header frame.
                if self.buf.len() == self.pos {
                    self.refill()?;
                }
                match parse_frame(&self.buf, self.pos) {
                    Parsed::Frame { body, end, .. } => {
                        let sh = SegmentHead::decode(body)
                            .ok_or_else(|| self.corrupt("first frame is not a segment header".into()))?;
                        if sh.log_id != self.ring.log_id || sh.segment != self.seg_no {
                            return Err(self.corrupt(format!("segment header names segment {}", sh.segment)));
                        }
                        if sh.first_seq != self.next_seq || sh.prev_hash != self.head {
                            return Err(self.corrupt(format!(
                                "segment does not link: starts at seq {} but seq {} was expected (or previous hash differs)",
                                sh.first_seq, self.next_seq
                            )));
                        }
                        self.pos = end;
                        self.in_segment = true;
                    }
                    Parsed::Incomplete => return Ok(Step::End),
                    _ => return Err(self.corrupt("damaged segment header".into())),
                }
                continue;
            }
            match parse_frame(&self.buf, self.pos) {
                Parsed::Frame { ty: T_ENTRY, body, end } => {
                    let (eh, _, _) = split_entry(body).ok_or_else(|| self.corrupt("entry frame too short".into()))?;
                    if eh.seq != self.next_seq {
                        return Err(self.corrupt(format!("expected seq {}, found seq {}", self.next_seq, eh.seq)));
                    }
                    let body = body.to_vec();
                    let prev = self.head;
                    self.head = self.ring.suite.chain(&prev, &self.ring.suite.leaf_hash(&body));
                    self.pos = end;
                    self.next_seq += 1;
                    let plaintext = if want(eh.seq, eh.time_us) {
                        let ring = Arc::clone(&self.ring);
                        let seg_path = self.seg_path.clone();
                        let Some(c) = self.cipher(eh.key_id)? else {
                            return Err(AuditError::Decrypt {
                                path: seg_path,
                                seq: eh.seq,
                                reason: format!("unknown data key id {}", eh.key_id),
                            });
                        };
                        let (_, pt) = decrypt_entry(&ring, c, &body, &prev).ok_or_else(|| AuditError::Decrypt {
                            path: seg_path,
                            seq: eh.seq,
                            reason: "authentication tag mismatch (entry altered, moved, or wrong key)".into(),
                        })?;
                        Some(pt)
                    } else {
                        None
                    };
                    return Ok(Step::Entry {
                        seq: eh.seq,
                        time_us: eh.time_us,
                        key_id: eh.key_id,
                        body,
                        prev,
                        plaintext,
                    });
                }
                Parsed::Frame { ty, .. } => return Err(self.corrupt(format!("unexpected frame type {ty:#04x}"))),
                Parsed::Incomplete => {
                    // Maybe more data was written since we read.
                    if self.refill()? > 0 {
                        continue;
                    }
                    let next = self.dir.join(segment_name(self.seg_no + 1));
                    if next.exists() {
                        // Re-read once more: the writer flushes a segment completely before creating the next.
                        if self.refill()? > 0 {
                            continue;
                        }
                        if self.pos != self.buf.len() {
                            return Err(
                                self.corrupt("segment ends with an incomplete frame but a later segment exists".into())
                            );
                        }
                        self.seg_no += 1;
                        self.seg_path = next;
                        self.buf.clear();
                        self.base = 0;
                        self.pos = 0;
                        self.in_segment = false;
                        continue;
                    }
                    return Ok(Step::End);
                }
                Parsed::BadLen | Parsed::BadCrc { .. } => {
                    return Err(self.corrupt("damaged frame (bad length or CRC)".into()));
                }
            }
        }
    }

    pub(crate) fn head(&self) -> Hash {
        self.head
    }
}

/// Iterator over decrypted, verified entries matching a filter. Stops after
/// the first error (which it yields).
pub struct Records {
    cursor: Cursor,
    filter: AuditFilter,
    done: bool,
}

impl Records {
    pub(crate) fn new(dir: &Path, ring: Arc<Keyring>, filter: AuditFilter) -> Result<Records> {
        Ok(Records { cursor: Cursor::new(dir, ring), filter, done: false })
    }
}

impl Iterator for Records {
    type Item = Result<AuditRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let f = &self.filter;
            if f.to_seq.is_some_and(|t| self.cursor.next_seq > t) {
                self.done = true;
                return None;
            }
            let mut want = |seq: u64, t: i64| !f.excludes_header(seq, t);
            match self.cursor.step(&mut want) {
                Ok(Step::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Step::Entry { seq, time_us, plaintext: Some(pt), .. }) => match parse_record(seq, time_us, &pt) {
                    Ok(r) if self.filter.matches(&r) => return Some(Ok(r)),
                    Ok(_) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Ok(Step::Entry { .. }) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Follows a log: [`Tail::poll`] returns entries appended since the last poll.
pub struct Tail {
    cursor: Cursor,
    from_seq: u64,
    log: Option<AuditLog>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail").field("next_seq", &self.cursor.next_seq).finish()
    }
}

impl Tail {
    pub(crate) fn new(dir: &Path, ring: Arc<Keyring>, from_seq: u64, log: Option<AuditLog>) -> Result<Tail> {
        Ok(Tail { cursor: Cursor::new(dir, ring), from_seq, log })
    }

    /// Follows the log in `dir` from another process (reads what the writer
    /// has flushed to the OS).
    pub fn open(dir: impl AsRef<Path>, master: &MasterKey, from_seq: u64) -> Result<Tail> {
        let dir = dir.as_ref();
        let (_, ring) = open_ring(dir, master)?;
        Tail::new(dir, Arc::new(ring), from_seq, None)
    }

    /// Returns new entries (seq ≥ `from_seq`) available now, up to `max`.
    /// An empty vector means nothing new; call again later.
    pub fn poll(&mut self, max: usize) -> Result<Vec<AuditRecord>> {
        if let Some(l) = &self.log {
            l.flush()?;
        }
        let mut out = Vec::new();
        let from = self.from_seq;
        while out.len() < max {
            let mut want = |seq: u64, _t: i64| seq >= from;
            match self.cursor.step(&mut want)? {
                Step::End => break,
                Step::Entry { seq, time_us, plaintext: Some(pt), .. } => out.push(parse_record(seq, time_us, &pt)?),
                Step::Entry { .. } => {}
            }
        }
        Ok(out)
    }

    /// The sequence number the next poll will start at.
    pub fn next_seq(&self) -> u64 {
        self.cursor.next_seq.max(self.from_seq)
    }
}

/// Output format of [`AuditLog::export`] / [`export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row; list fields joined with `;`, `detail` as JSON.
    Csv,
    /// One JSON object per line (the [`AuditRecord`] serialisation).
    JsonLines,
}

/// Exports entries matching `filter` from the log in `dir`; returns the count.
pub fn export<W: Write>(
    dir: impl AsRef<Path>,
    master: &MasterKey,
    filter: AuditFilter,
    format: ExportFormat,
    out: W,
) -> Result<u64> {
    let recs = crate::log::read(dir, master, filter)?;
    export_records(recs, format, out)
}

pub(crate) fn export_records<W: Write>(recs: Records, format: ExportFormat, mut out: W) -> Result<u64> {
    let io = |e: std::io::Error| AuditError::io(Path::new("<export writer>"), "writing export", e);
    let mut n = 0u64;
    match format {
        ExportFormat::JsonLines => {
            for r in recs {
                let r = r?;
                serde_json::to_writer(&mut out, &r)
                    .map_err(|e| AuditError::Serde { seq: Some(r.seq), reason: e.to_string() })?;
                out.write_all(b"\n").map_err(io)?;
                n += 1;
            }
            out.flush().map_err(io)?;
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let csv_err = |e: csv::Error| AuditError::Serde { seq: None, reason: format!("CSV: {e}") };
            w.write_record([
                "seq",
                "time",
                "kind",
                "node",
                "user",
                "department",
                "session",
                "client_addr",
                "outcome",
                "rule",
                "rule_version",
                "sql",
                "tables",
                "columns",
                "rows",
                "masks",
                "filters",
                "duration_ms",
                "detail",
            ])
            .map_err(csv_err)?;
            for r in recs {
                let r = r?;
                let e = &r.event;
                let opt = |o: &Option<String>| o.clone().unwrap_or_default();
                let num = |o: Option<u64>| o.map(|v| v.to_string()).unwrap_or_default();
                w.write_record([
                    r.seq.to_string(),
                    e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    e.kind.as_str().to_string(),
                    e.node.clone(),
                    e.user.clone(),
                    e.department.clone(),
                    opt(&e.session),
                    opt(&e.client_addr),
                    e.outcome.as_str().to_string(),
                    opt(&e.rule),
                    opt(&e.rule_version),
                    opt(&e.sql),
                    e.tables.join(";"),
                    e.columns.join(";"),
                    num(e.rows),
                    e.masks.join(";"),
                    e.filters.join(";"),
                    num(e.duration_ms),
                    if e.detail.is_null() { String::new() } else { e.detail.to_string() },
                ])
                .map_err(csv_err)?;
                n += 1;
            }
            w.flush().map_err(io)?;
        }
    }
    Ok(n)
}
