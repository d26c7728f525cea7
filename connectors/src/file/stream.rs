//! Reading a drop file record by record, never whole.
//!
//! [`FileSource`](super::FileSource) publishes a file in chunks of
//! `chunk_rows` records; each chunk is parsed from the file only when it is
//! due, so memory holds one chunk (plus the reader's buffers) whatever the
//! file's size. JSON lines and CSV stream; an XLSX workbook is parsed whole
//! (a zip archive needs random access, and a sheet holds at most 1 048 576
//! rows).
//!
//! * [`scan`] reads a file once in fixed blocks for its identity (SHA-256 of
//!   the content) and whether all of it is UTF-8 (for `encoding = "auto"`).
//! * [`JsonlStream`] turns each non-blank line into a record; a line that is
//!   not UTF-8 or not a JSON object becomes an unparsable record (to
//!   quarantine) with file and line.
//! * [`CsvStream`] decodes physical lines one at a time ([`DecodedLines`]):
//!   a line whose bytes are invalid in the encoding becomes an unparsable
//!   record (its bytes as hex) and is left out of the text the CSV reader
//!   sees, so one bad line cannot poison the file; quoted fields may still
//!   span lines. Records come out in file order, bad lines included.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::sync::{Arc, Mutex};

use encoding_rs::Encoding;
use lianqin_model::{Envelope, Member, Members};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::FileSource;

/// A file's identity and whether every byte of it is UTF-8.
pub(super) struct Scan {
    /// SHA-256 (hex) of the content.
    pub hash: String,
    /// Whether the whole content is valid UTF-8 (when asked; else `true`).
    pub utf8: bool,
    /// Physical lines (newlines, plus an unterminated last line): the
    /// file's own count for reconciliation.
    pub lines: u64,
}

/// Reads `reader` to the end in 1 MiB blocks: SHA-256, line count and —
/// with `check_utf8`, for a CSV file whose encoding is `auto` — UTF-8
/// validity. (JSON lines are UTF-8 by definition; each line is checked as
/// it is read, and one that is not becomes an unparsable record.)
pub(super) fn scan(mut reader: impl Read, check_utf8: bool) -> std::io::Result<Scan> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut utf8 = check_utf8;
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
        if utf8 {
            carry.extend_from_slice(&buf[..n]);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                // A sequence cut at the block end: keep its bytes for the next block.
                Err(e) if e.error_len().is_none() => {
                    carry.drain(..e.valid_up_to());
                }
                Err(_) => utf8 = false,
            }
        }
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok(Scan { hash: hex::encode(h.finalize()), utf8: !check_utf8 || (utf8 && carry.is_empty()), lines })
}

/// Records of one file, in file order, a chunk at a time.
pub(super) trait RecordStream: Send {
    /// Up to `max` next records; an empty vector at the end of the file.
    /// An error is an I/O error reading the file (the file is left for the
    /// next pass, which resumes after what was published).
    fn next_chunk(&mut self, max: usize) -> Result<Vec<Envelope>, String>;

    /// Physical lines read so far, where the stream knows them (JSON lines:
    /// one record per non-blank line) — compared with [`Scan::lines`].
    fn lines_read(&self) -> Option<u64> {
        None
    }

    /// Skips `n` records (already published by an earlier pass).
    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        while n > 0 {
            let got = self.next_chunk(n.min(10_000) as usize)?.len() as u64;
            if got == 0 {
                break;
            }
            n -= got;
        }
        Ok(())
    }
}

/// The parts of the source a record needs (owned, so a stream is `Send` and
/// outlives no borrow).
#[derive(Clone)]
pub(super) struct RecordMaker {
    id: String,
    department: String,
    key_columns: Vec<String>,
    updated_field: Option<String>,
}

impl RecordMaker {
    pub(super) fn of(src: &FileSource) -> Self {
        RecordMaker {
            id: src.id.clone(),
            department: src.department.clone(),
            key_columns: src.cfg.key_columns.clone(),
            updated_field: src.cfg.updated_field.clone(),
        }
    }

    /// The key (from the key columns; empty when one is missing or blank)
    /// and the source time of a record whose members `get` reads.
    fn key_and_time<'a>(&self, get: impl Fn(&str) -> Option<Member<'a>>) -> (String, Option<String>) {
        let mut parts = Vec::with_capacity(self.key_columns.len());
        for k in &self.key_columns {
            match get(k) {
                Some(Member::Str(s)) if !s.trim().is_empty() => parts.push(s.trim().to_string()),
                Some(Member::Number(n)) => parts.push(n.to_string()),
                _ => {
                    parts.clear();
                    break;
                }
            }
        }
        let updated = self.updated_field.as_deref().and_then(|f| match get(f) {
            Some(Member::Str(s)) => Some(s.into_owned()),
            _ => None,
        });
        (parts.join("|"), updated)
    }

    /// A record read as members (a JSON object parsed without a tree): the
    /// same envelope as [`RecordMaker::record`] of the parsed object.
    pub(super) fn record_members(&self, m: &Members<'_>, locator: String) -> Envelope {
        let (key, updated) = self.key_and_time(|k| m.get(k));
        Envelope::upsert_members(&self.id, &self.department, key, m, updated).with_locator(locator)
    }

    /// A parsed record.
    pub(super) fn record(&self, obj: Map<String, Value>, locator: String) -> Envelope {
        let (key, updated) = self.key_and_time(|k| obj.get(k).map(Member::from_value));
        Envelope::upsert(&self.id, &self.department, key, Value::Object(obj), updated).with_locator(locator)
    }

    /// A record that could not be parsed: its raw text and the reason.
    pub(super) fn unparsable(&self, raw: String, reason: String, locator: String) -> Envelope {
        Envelope::unparsable(&self.id, &self.department, "", raw, reason).with_locator(locator)
    }

    /// A line that is not a JSON object (or holds one [`Members`] could not
    /// read): serde_json's verdict, as a record or an unparsable one.
    fn not_an_object(&self, text: &str, loc: String) -> Envelope {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => self.record(o, loc),
            Ok(other) => self.unparsable(
                text.to_string(),
                format!("{loc}: expected a JSON object, got {}", super::json_kind(&other)),
                loc,
            ),
            Err(e) => self.unparsable(text.to_string(), format!("{loc}: bad JSON: {e}"), loc),
        }
    }
}

/// Fewer lines than this per core are parsed on one thread (a thread's
/// start would cost more than it saves).
const PART_MIN_LINES: usize = 1024;

/// JSON lines, one record per non-blank line.
pub(super) struct JsonlStream<R> {
    maker: RecordMaker,
    name: String,
    reader: R,
    line_no: usize,
    buf: Vec<u8>,
}

impl<R: BufRead + Send> JsonlStream<R> {
    pub(super) fn new(maker: RecordMaker, name: &str, reader: R) -> Self {
        JsonlStream { maker, name: name.to_string(), reader, line_no: 0, buf: Vec::with_capacity(4096) }
    }

    /// The record of line `line_no` (1-based) of file `name`.
    fn record(m: &RecordMaker, name: &str, line_no: usize, line: &[u8]) -> Envelope {
        let loc = format!("{name}:{line_no}");
        match std::str::from_utf8(line) {
            Err(e) => m.unparsable(hex::encode(line), format!("{loc}: not UTF-8: {e}"), loc),
            Ok(text) => match Members::parse(text) {
                Ok(members) => m.record_members(&members, loc),
                // Not a JSON object: parsed again for serde_json's message.
                Err(_) => m.not_an_object(text, loc),
            },
        }
    }
}

impl<R: BufRead + Send> RecordStream for JsonlStream<R> {
    fn lines_read(&self) -> Option<u64> {
        Some(self.line_no as u64)
    }

    /// Reads up to `max` non-blank lines into one buffer, then turns them
    /// into records on every core (a part each, joined in file order): the
    /// parse, canonical text and content hash of each line are independent.
    fn next_chunk(&mut self, max: usize) -> Result<Vec<Envelope>, String> {
        // (line number, start, end) of each non-blank line in `self.buf`.
        let mut lines: Vec<(usize, usize, usize)> = Vec::with_capacity(max.min(65_536));
        self.buf.clear();
        while lines.len() < max {
            let start = self.buf.len();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| format!("{}: read error after line {}: {e}", self.name, self.line_no))?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            let mut line: &[u8] = &self.buf[start..];
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut from = start;
            if self.line_no == 1 && line.starts_with(b"\xEF\xBB\xBF") {
                line = &line[3..];
                from += 3;
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                self.buf.truncate(start);
                continue;
            }
            lines.push((self.line_no, from, from + line.len()));
        }
        let (m, name, buf) = (&self.maker, self.name.as_str(), self.buf.as_slice());
        let parse = |part: &[(usize, usize, usize)]| -> Vec<Envelope> {
            part.iter().map(|&(no, a, b)| Self::record(m, name, no, &buf[a..b])).collect()
        };
        let parts =
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(lines.len() / PART_MIN_LINES).max(1);
        if parts == 1 {
            return Ok(parse(&lines));
        }
        let per = lines.len().div_ceil(parts);
        let mut out = Vec::with_capacity(lines.len());
        std::thread::scope(|scope| {
            let mut rest = lines.chunks(per);
            let first = rest.next().unwrap_or_default();
            let others: Vec<_> = rest.map(|part| scope.spawn(move || parse(part))).collect();
            out.extend(parse(first));
            for h in others {
                match h.join() {
                    Ok(v) => out.extend(v),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
        Ok(out)
    }

    /// Skipping needs no JSON parsing: every non-blank line is one record.
    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        while n > 0 {
            self.buf.clear();
            let got = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| format!("{}: read error after line {}: {e}", self.name, self.line_no))?;
            if got == 0 {
                break;
            }
            self.line_no += 1;
            if !self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                n -= 1;
            }
        }
        Ok(())
    }
}

/// What [`DecodedLines`] tells the CSV stream about the lines it left out.
#[derive(Default)]
struct LeftOut {
    /// Unparsable records for lines with invalid bytes: (physical line, record).
    bad: VecDeque<(usize, Envelope)>,
    /// (offset in the decoded text, physical line) of the lines handed to
    /// the CSV reader and not yet behind the record it reads (bounded by the
    /// reader's read-ahead).
    starts: VecDeque<(u64, usize, bool)>,
}

/// A `Read` of a file's text decoded line by line: lines with bytes invalid
/// in the encoding are left out (and reported in [`LeftOut`]).
struct DecodedLines<R> {
    inner: R,
    enc: &'static Encoding,
    maker: RecordMaker,
    name: String,
    physical: usize,
    /// Bytes of decoded text handed out so far.
    offset: u64,
    raw: Vec<u8>,
    text: Vec<u8>,
    pos: usize,
    left_out: Arc<Mutex<LeftOut>>,
}

impl<R: BufRead> Read for DecodedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.text.len() {
            self.text.clear();
            self.pos = 0;
            self.raw.clear();
            if self.inner.read_until(b'\n', &mut self.raw)? == 0 {
                return Ok(0);
            }
            self.physical += 1;
            let mut raw: &[u8] = &self.raw;
            raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if self.physical == 1 {
                raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
            }
            let (text, had_errors) = self.enc.decode_without_bom_handling(raw);
            if had_errors {
                let loc = format!("{}:{}", self.name, self.physical);
                let bad_at = super::first_bad_byte(self.enc, raw);
                let rec = self.maker.unparsable(
                    hex::encode(raw),
                    format!("{loc}: bytes not valid {} at byte {bad_at} (raw line kept as hex)", self.enc.name()),
                    loc,
                );
                let mut lo = self.left_out.lock().unwrap_or_else(|p| p.into_inner());
                lo.bad.push_back((self.physical, rec));
                continue;
            }
            let blank = text.trim().is_empty();
            self.left_out.lock().unwrap_or_else(|p| p.into_inner()).starts.push_back((
                self.offset,
                self.physical,
                blank,
            ));
            self.text.extend_from_slice(text.as_bytes());
            self.text.push(b'\n');
            self.offset += text.len() as u64 + 1;
        }
        let n = buf.len().min(self.text.len() - self.pos);
        buf[..n].copy_from_slice(&self.text[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// CSV with a header row, decoded from the file's encoding line by line.
pub(super) struct CsvStream<R> {
    maker: RecordMaker,
    name: String,
    reader: csv::Reader<DecodedLines<R>>,
    headers: Vec<String>,
    left_out: Arc<Mutex<LeftOut>>,
    record: csv::StringRecord,
}

impl<R: BufRead + Send> CsvStream<R> {
    /// Opens the stream and reads the header row. Errors (empty header, a
    /// key column missing) reject the whole file.
    pub(super) fn new(
        maker: RecordMaker,
        name: &str,
        reader: R,
        enc: &'static Encoding,
        delimiter: u8,
    ) -> Result<Self, String> {
        let left_out = Arc::new(Mutex::new(LeftOut::default()));
        let decoded = DecodedLines {
            inner: reader,
            enc,
            maker: maker.clone(),
            name: name.to_string(),
            physical: 0,
            offset: 0,
            raw: Vec::new(),
            text: Vec::new(),
            pos: 0,
            left_out: Arc::clone(&left_out),
        };
        let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(decoded);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| format!("{name}: header row: {e}"))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if headers.iter().all(String::is_empty) {
            return Err(format!("{name}: empty header line"));
        }
        for k in &maker.key_columns {
            if !headers.contains(k) {
                return Err(format!("{name}: key column `{k}` not in header {headers:?}"));
            }
        }
        Ok(CsvStream { maker, name: name.to_string(), reader, headers, left_out, record: csv::StringRecord::new() })
    }

    /// The physical line (1-based) of the first non-blank line of the
    /// record that spans `[start, end)` of the decoded text (the CSV reader
    /// counts blank lines it skips as part of the next record); forgets the
    /// lines before it (records come in order).
    fn physical(&self, start: u64, end: u64) -> usize {
        let mut lo = self.left_out.lock().unwrap_or_else(|p| p.into_inner());
        while lo.starts.get(1).is_some_and(|(s, _, _)| *s <= start) {
            lo.starts.pop_front();
        }
        while lo.starts.front().is_some_and(|(_, _, blank)| *blank)
            && lo.starts.get(1).is_some_and(|(s, _, _)| *s < end)
        {
            lo.starts.pop_front();
        }
        lo.starts.front().map(|(_, line, _)| *line).unwrap_or(0)
    }

    /// Moves the bad lines before physical line `line` (all of them when
    /// `None`) to `out`.
    fn drain_bad(&self, line: Option<usize>, out: &mut Vec<Envelope>) {
        let mut lo = self.left_out.lock().unwrap_or_else(|p| p.into_inner());
        while lo.bad.front().is_some_and(|(l, _)| line.is_none_or(|line| *l < line)) {
            if let Some((_, e)) = lo.bad.pop_front() {
                out.push(e);
            }
        }
    }
}

impl<R: BufRead + Send> RecordStream for CsvStream<R> {
    fn next_chunk(&mut self, max: usize) -> Result<Vec<Envelope>, String> {
        let mut out = Vec::with_capacity(max.min(65_536));
        while out.len() < max {
            let mut record = std::mem::take(&mut self.record);
            let read = self.reader.read_record(&mut record);
            let start = record.position().map(|p| p.byte()).unwrap_or(0);
            let line = self.physical(start, self.reader.position().byte());
            match read {
                Ok(false) => {
                    self.record = record;
                    self.drain_bad(None, &mut out);
                    break;
                }
                Ok(true) => {
                    self.drain_bad(Some(line), &mut out);
                    let loc = format!("{}:{line}", self.name);
                    let blank = record.iter().all(|f| f.trim().is_empty());
                    if !blank && record.len() != self.headers.len() {
                        let raw: Vec<&str> = record.iter().collect();
                        out.push(self.maker.unparsable(
                            raw.join(","),
                            format!("{loc}: {} fields, header has {}", record.len(), self.headers.len()),
                            loc,
                        ));
                    } else if !blank {
                        let mut obj = Map::new();
                        for (h, v) in self.headers.iter().zip(record.iter()) {
                            obj.insert(h.clone(), Value::String(v.trim().to_string()));
                        }
                        out.push(self.maker.record(obj, loc));
                    }
                }
                Err(e) => {
                    if let csv::ErrorKind::Io(io) = e.kind() {
                        self.record = record;
                        return Err(format!("{}: read error near line {line}: {io}", self.name));
                    }
                    let start = e.position().map(|p| p.byte()).unwrap_or(0);
                    let line = self.physical(start, self.reader.position().byte());
                    self.drain_bad(Some(line), &mut out);
                    let loc = format!("{}:{line}", self.name);
                    out.push(self.maker.unparsable(String::new(), format!("{loc}: {e}"), loc));
                }
            }
            self.record = record;
        }
        Ok(out)
    }
}

/// A list of records already in memory (XLSX).
pub(super) struct VecStream(pub(super) std::vec::IntoIter<Envelope>);

impl RecordStream for VecStream {
    fn next_chunk(&mut self, max: usize) -> Result<Vec<Envelope>, String> {
        Ok(self.0.by_ref().take(max).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn maker(key: &str) -> RecordMaker {
        RecordMaker { id: "s".into(), department: "police".into(), key_columns: vec![key.into()], updated_field: None }
    }

    /// A reader that counts the bytes handed out.
    struct Counting<R> {
        inner: R,
        read: Arc<AtomicU64>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    /// A line read without a tree gives the envelope the parsed object
    /// gives: key (string, number, trimmed, missing), source time, canonical
    /// text and content hash.
    #[test]
    fn lines_read_as_members_equal_parsed_records() {
        let lines = [
            r#"{"id": " A-1 ", "t": "2025-03-15", "lng": 119.928741, "n": 12, "s": "湖州\n\u0041", "x": null}"#,
            r#"{"t": 1, "id": 7, "nested": {"b": [1, 2.50, "c"], "a": true}, "id": 8}"#,
            r#"{"other": "no key", "t": "2025"}"#,
            r#"{"id": "", "big": 123456789012345678901234567890, "neg": -0, "exp": 1E3}"#,
        ];
        let mut m = maker("id");
        m.updated_field = Some("t".into());
        let text = lines.join(
            "
",
        );
        let mut s = JsonlStream::new(m.clone(), "f.jsonl", Cursor::new(text.into_bytes()));
        let got = s.next_chunk(10).unwrap();
        assert_eq!(got.len(), lines.len());
        for (e, line) in got.iter().zip(lines) {
            let Value::Object(o) = serde_json::from_str::<Value>(line).unwrap() else { panic!("{line}") };
            let want = m.record(o, e.locator.clone().unwrap());
            assert_eq!(e.key, want.key, "{line}");
            assert_eq!(e.source_time, want.source_time, "{line}");
            assert_eq!(e.payload_text(), want.payload_text(), "{line}");
            assert_eq!(e.hash, want.hash, "{line}");
            assert_eq!(e.payload(), want.payload(), "{line}");
        }
        assert_eq!(got[0].key, "A-1");
        assert_eq!(got[1].key, "8");
        assert_eq!(got[2].key, "");
    }

    fn big_jsonl(lines: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..lines {
            out.extend_from_slice(format!("{{\"id\":\"{i}\",\"text\":\"{}\"}}\n", "x".repeat(200)).as_bytes());
        }
        out
    }

    #[test]
    fn a_big_file_is_read_one_chunk_at_a_time() {
        let bytes = big_jsonl(100_000); // ≈ 22 MB
        let ends: Vec<u64> =
            bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i as u64 + 1).collect();
        let read = Arc::new(AtomicU64::new(0));
        let reader = std::io::BufReader::with_capacity(
            1 << 16,
            Counting { inner: Cursor::new(bytes.clone()), read: Arc::clone(&read) },
        );
        let mut s = JsonlStream::new(maker("id"), "big.jsonl", reader);
        let mut total = 0usize;
        let mut most_ahead = 0u64;
        loop {
            let chunk = s.next_chunk(1_000).unwrap();
            if chunk.is_empty() {
                break;
            }
            total += chunk.len();
            let consumed_by_records = ends[total - 1];
            most_ahead = most_ahead.max(read.load(Ordering::Relaxed).saturating_sub(consumed_by_records));
        }
        assert_eq!(total, 100_000);
        assert_eq!(read.load(Ordering::Relaxed), bytes.len() as u64);
        // Never more than the reader's buffer ahead of the records handed out.
        assert!(most_ahead <= 1 << 16, "read {most_ahead} bytes ahead of the chunks");
    }

    /// A chunk parsed in parts on several threads is, record for record and
    /// in order, what parsing each line alone gives: blank lines skipped,
    /// bad lines kept with their own line numbers, the BOM stripped.
    #[test]
    fn a_chunk_parsed_in_parts_keeps_file_order() {
        let mut text = String::from("\u{FEFF}");
        let mut want = Vec::new();
        for i in 1..=(4 * PART_MIN_LINES + 7) {
            let line = match i % 97 {
                0 => String::new(),
                13 => format!("{{bad {i}"),
                _ => format!("{{\"id\":\"{i}\",\"n\":{i},\"s\":\"湖州 {i}\"}}"),
            };
            if !line.is_empty() {
                want.push((i, line.clone()));
            }
            text.push_str(&line);
            text.push_str(if i % 5 == 0 { "\r\n" } else { "\n" });
        }
        let m = maker("id");
        let mut s = JsonlStream::new(m.clone(), "p.jsonl", Cursor::new(text.into_bytes()));
        let got = s.next_chunk(usize::MAX).unwrap();
        assert_eq!(got.len(), want.len());
        for (e, (no, line)) in got.iter().zip(&want) {
            let alone = JsonlStream::<Cursor<Vec<u8>>>::record(&m, "p.jsonl", *no, line.as_bytes());
            assert_eq!(e.locator.as_deref(), Some(format!("p.jsonl:{no}").as_str()));
            assert_eq!((&e.key, &e.hash, &e.error), (&alone.key, &alone.hash, &alone.error), "line {no}");
            assert_eq!(e.payload_text(), alone.payload_text(), "line {no}");
        }
        assert_eq!(got[0].key, "1", "the BOM is not part of the first record");
        assert!(got.iter().filter(|e| e.error.is_some()).count() >= 40);
        assert_eq!(s.lines_read(), Some(4 * PART_MIN_LINES as u64 + 7));
    }

    #[test]
    fn skip_resumes_after_what_was_published() {
        let bytes = b"{\"id\":\"1\"}\n\n{\"id\":\"2\"}\n{bad\n{\"id\":\"4\"}\n".to_vec();
        let mut s = JsonlStream::new(maker("id"), "r.jsonl", Cursor::new(bytes));
        s.skip(2).unwrap();
        let rest = s.next_chunk(10).unwrap();
        assert_eq!(rest.len(), 2);
        assert!(rest[0].error.as_ref().unwrap().contains("r.jsonl:4: bad JSON"), "{:?}", rest[0].error);
        assert_eq!(rest[1].key, "4");
        assert_eq!(rest[1].locator.as_deref(), Some("r.jsonl:5"));
    }

    #[test]
    fn csv_quoted_newlines_bad_lines_and_order() {
        let mut bytes = "编号,说明\r\nA1,\"第一行\n第二行\"\r\n".as_bytes().to_vec();
        bytes.extend_from_slice(b"A2,\xff\xfe\r\n");
        bytes.extend_from_slice("A3,好\r\n\r\nA4,x,多余\r\n".as_bytes());
        let mut s = CsvStream::new(maker("编号"), "q.csv", Cursor::new(bytes), encoding_rs::UTF_8, b',').unwrap();
        let mut all = Vec::new();
        loop {
            let c = s.next_chunk(1).unwrap();
            if c.is_empty() {
                break;
            }
            all.extend(c);
        }
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].payload()["说明"], "第一行\n第二行");
        assert!(all[1].error.as_ref().unwrap().contains("q.csv:4: bytes not valid UTF-8"), "{:?}", all[1].error);
        assert_eq!(all[2].key, "A3");
        assert_eq!(all[2].locator.as_deref(), Some("q.csv:5"));
        assert!(all[3].error.as_ref().unwrap().contains("q.csv:7: 3 fields, header has 2"), "{:?}", all[3].error);
    }

    #[test]
    fn scan_sees_utf8_across_block_ends_and_gbk() {
        // A 3-byte character cut by the 1 MiB block boundary is still UTF-8.
        let mut bytes = vec![b'a'; (1 << 20) - 1];
        bytes.extend_from_slice("湖".as_bytes());
        let s = scan(Cursor::new(&bytes), true).unwrap();
        assert!(s.utf8);
        assert_eq!(s.hash, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(s.lines, 1);
        assert_eq!(scan(Cursor::new(b"a\n\nb\n"), true).unwrap().lines, 3);
        assert_eq!(scan(Cursor::new(b"a\nb"), true).unwrap().lines, 2);
        assert_eq!(scan(Cursor::new(b""), true).unwrap().lines, 0);
        let (gbk, _, _) = encoding_rs::GBK.encode("编号,太湖\n");
        assert!(!scan(Cursor::new(gbk.as_ref()), true).unwrap().utf8);
        // A file ending in the middle of a sequence is not UTF-8.
        assert!(!scan(Cursor::new(&"湖".as_bytes()[..2]), true).unwrap().utf8);
    }
}
