//! The `file` connector: a watched directory of CSV, XLSX and JSON-lines drops.
//!
//! ```toml
//! [sources.connector]
//! type = "file"
//! dir = "/srv/drops/env"
//! encoding = "gbk"            # utf-8 | gbk | gb18030 | auto
//! key_columns = ["监测点编号", "采样时间"]
//! ```
//!
//! Excel workbooks (`format = "xlsx"`, or `.xlsx`/`.xlsm` files with the
//! default `auto`) are read with calamine:
//!
//! ```toml
//! [sources.connector]
//! type = "file"
//! dir = "/srv/drops/agri"
//! format = "xlsx"
//! sheet = "耕地台账"           # default: the first sheet
//! header_row = 2              # 1-based row holding the column names (default 1)
//! key_columns = ["地块编码"]
//! ```
//!
//! Each data row below the header becomes one record keyed like CSV rows.
//! Cell values: text → string (trimmed), whole numbers → integers, other
//! numbers → floats, booleans → booleans, date/time cells → `YYYY-MM-DD`
//! (midnight) or `YYYY-MM-DD HH:MM:SS` (Beijing local time, as the mappings
//! read it), error cells (`#N/A`, `#DIV/0!`) → their text (so a typed field
//! flags or quarantines them), empty cells → null; fully empty rows are
//! skipped. A workbook that cannot be opened (not a zip, corrupt XML), a
//! missing sheet or a missing key column sends the file to `failed/` with
//! the reason.
//!
//! Each file is processed once, identified by the SHA-256 of its content:
//! rows are read and published in chunks of `chunk_rows` (a file is never
//! held whole in memory: [`stream`]), each chunk together with a checkpoint that
//! records how far into the file it got; when the file is done it is moved to
//! `processed/` (or to `failed/` with a `<name>.reason.txt` when it cannot be
//! read at all). A file dropped again with the same content is not ingested
//! twice. Files are picked up only when complete: writers should write to a
//! temporary name (dot-prefixed or ending in `.tmp`/`.part`) and rename.
//!
//! Lines whose bytes are not valid in the declared encoding, and JSON lines
//! that do not parse, are published as unparsable records (raw bytes and the
//! reason, with file and line) so that they reach quarantine; the rest of the
//! file goes through.

mod stream;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use encoding_rs::{Encoding, GB18030, GBK, UTF_8};
use lianqin_model::Envelope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{Instrument, info, info_span, warn};

use self::stream::{CsvStream, JsonlStream, RecordMaker, RecordStream, VecStream};
use crate::{ConnectorError, PollingSource, RunStats, SourceContext};

/// Text encoding of CSV drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TextEncoding {
    /// UTF-8 (a BOM is skipped).
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// GBK (Windows code page 936), common in departmental exports.
    Gbk,
    /// GB18030.
    Gb18030,
    /// UTF-8 when the whole file is valid UTF-8, otherwise GB18030.
    #[default]
    Auto,
}

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// By extension: `.csv`, `.jsonl` / `.ndjson`.
    #[default]
    Auto,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Excel workbook (`.xlsx`, `.xlsm`): one sheet, header row, data rows.
    Xlsx,
}

/// Configuration of a `file` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The drop directory.
    pub dir: PathBuf,
    /// Format (default: by extension). `csv` takes `.csv`/`.txt` files and
    /// `jsonl` takes `.jsonl`/`.ndjson`/`.json`, so two sources can share a
    /// drop directory.
    #[serde(default)]
    pub format: FileFormat,
    /// Encoding of CSV files (JSON lines are always UTF-8). Default `auto`.
    #[serde(default)]
    pub encoding: TextEncoding,
    /// CSV delimiter (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Columns / fields forming the record key, joined with `|`.
    pub key_columns: Vec<String>,
    /// Column / field with the record's change time, if any.
    #[serde(default)]
    pub updated_field: Option<String>,
    /// Where finished files go (default `<dir>/processed`).
    #[serde(default)]
    pub processed_dir: Option<PathBuf>,
    /// Where unreadable files go (default `<dir>/failed`).
    #[serde(default)]
    pub failed_dir: Option<PathBuf>,
    /// Rows per publish (default 5 000).
    #[serde(default = "default_chunk")]
    pub chunk_rows: usize,
    /// XLSX: the sheet to read (default: the first sheet).
    #[serde(default)]
    pub sheet: Option<String>,
    /// XLSX: 1-based row number of the header row (default 1); data rows follow it.
    #[serde(default = "one_row")]
    pub header_row: u32,
}

fn one_row() -> u32 {
    1
}

fn comma() -> char {
    ','
}
fn default_chunk() -> usize {
    5000
}

impl FileConfig {
    /// Checks the config.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        if self.key_columns.is_empty() {
            return Err(bad("`key_columns` must name at least one column".into()));
        }
        if self.chunk_rows == 0 {
            return Err(bad("`chunk_rows` must be >= 1".into()));
        }
        if self.header_row == 0 {
            return Err(bad("`header_row` is 1-based and must be >= 1".into()));
        }
        if !self.delimiter.is_ascii() {
            return Err(bad(format!("`delimiter` must be one ASCII character, got {:?}", self.delimiter)));
        }
        Ok(())
    }

    fn processed(&self) -> PathBuf {
        self.processed_dir.clone().unwrap_or_else(|| self.dir.join("processed"))
    }
    fn failed(&self) -> PathBuf {
        self.failed_dir.clone().unwrap_or_else(|| self.dir.join("failed"))
    }
}

/// Checkpoint of a file source: per content hash, rows done and whether the
/// file is finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileCheckpoint {
    /// content hash → progress.
    pub files: BTreeMap<String, FileProgress>,
}

/// Progress through one file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileProgress {
    /// File name when first seen.
    pub name: String,
    /// Records already published.
    pub published: u64,
    /// All records published.
    pub done: bool,
}

/// A running `file` source.
#[derive(Debug)]
pub struct FileSource {
    id: String,
    department: String,
    cfg: FileConfig,
}

impl FileSource {
    /// Builds the source.
    pub fn new(id: &str, department: &str, cfg: FileConfig) -> Self {
        FileSource { id: id.into(), department: department.into(), cfg }
    }

    fn io(&self, path: &Path, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Io { source_id: self.id.clone(), path: path.display().to_string(), detail: e.to_string() }
    }

    fn list(&self) -> Result<Vec<PathBuf>, ConnectorError> {
        let rd = match std::fs::read_dir(&self.cfg.dir) {
            Ok(rd) => rd,
            Err(e) => return Err(self.io(&self.cfg.dir, format!("cannot read drop directory: {e}"))),
        };
        let mut files = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| self.io(&self.cfg.dir, e))?;
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if !p.is_file() || name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
                continue;
            }
            if self.format_of(&p).is_some() {
                files.push(p);
            }
        }
        files.sort();
        Ok(files)
    }

    fn format_of(&self, p: &Path) -> Option<FileFormat> {
        let ext = p.extension()?.to_string_lossy().to_lowercase();
        match (self.cfg.format, ext.as_str()) {
            (FileFormat::Csv | FileFormat::Auto, "csv") | (FileFormat::Csv, "txt") => Some(FileFormat::Csv),
            (FileFormat::Jsonl | FileFormat::Auto, "jsonl" | "ndjson") | (FileFormat::Jsonl, "json") => {
                Some(FileFormat::Jsonl)
            }
            (FileFormat::Xlsx | FileFormat::Auto, "xlsx" | "xlsm") => Some(FileFormat::Xlsx),
            _ => None,
        }
    }

    fn move_to(&self, path: &Path, dir: &Path, reason: Option<&str>) -> Result<(), ConnectorError> {
        std::fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let mut target = dir.join(&name);
        if target.exists() {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
            target = dir.join(format!("{}.{stamp}", name.to_string_lossy()));
        }
        if let Some(r) = reason {
            let rp = dir.join(format!("{}.reason.txt", target.file_name().unwrap_or_default().to_string_lossy()));
            std::fs::write(&rp, r).map_err(|e| self.io(&rp, e))?;
        }
        std::fs::rename(path, &target).map_err(|e| self.io(path, e))
    }

    /// The encoding of a CSV file (`auto`: UTF-8 when the whole file is).
    fn encoding(&self, all_utf8: bool) -> &'static Encoding {
        match self.cfg.encoding {
            TextEncoding::Utf8 => UTF_8,
            TextEncoding::Gbk => GBK,
            TextEncoding::Gb18030 => GB18030,
            TextEncoding::Auto if all_utf8 => UTF_8,
            TextEncoding::Auto => GB18030,
        }
    }

    /// Opens a file's records as a stream (module docs of [`stream`]).
    /// `all_utf8` comes from the file's [`stream::scan`]. An error rejects
    /// the whole file (unreadable workbook, bad header, missing key column).
    fn open_stream(
        &self,
        path: &Path,
        reader: Box<dyn BufRead + Send>,
        all_utf8: bool,
    ) -> Result<Box<dyn RecordStream>, String> {
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        let maker = RecordMaker::of(self);
        match self.format_of(path) {
            Some(FileFormat::Jsonl) => Ok(Box::new(JsonlStream::new(maker, &name, reader))),
            Some(FileFormat::Csv) => {
                Ok(Box::new(CsvStream::new(maker, &name, reader, self.encoding(all_utf8), self.cfg.delimiter as u8)?))
            }
            Some(FileFormat::Xlsx) => {
                let mut bytes = Vec::new();
                let mut reader = reader;
                reader.read_to_end(&mut bytes).map_err(|e| format!("{name}: read error: {e}"))?;
                Ok(Box::new(VecStream(self.parse_xlsx(&name, &bytes)?.into_iter())))
            }
            _ => Err(format!("{name}: unknown format")),
        }
    }

    /// Parses a whole file held in memory into envelopes (in file order):
    /// the same streams as a sync pass, for tests and tools.
    pub fn parse(&self, path: &Path, bytes: &[u8]) -> Result<Vec<Envelope>, String> {
        let all_utf8 = std::str::from_utf8(bytes).is_ok();
        let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(bytes.to_vec()));
        let mut stream = self.open_stream(path, reader, all_utf8)?;
        let mut out = Vec::new();
        loop {
            let chunk = stream.next_chunk(10_000)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend(chunk);
        }
    }
}

impl FileSource {
    fn parse_xlsx(&self, name: &str, bytes: &[u8]) -> Result<Vec<Envelope>, String> {
        use calamine::{Reader, Xlsx};
        let mut wb: Xlsx<_> =
            Xlsx::new(std::io::Cursor::new(bytes)).map_err(|e| format!("{name}: not a readable XLSX workbook: {e}"))?;
        let sheets = wb.sheet_names();
        let sheet = match &self.cfg.sheet {
            Some(s) => {
                if !sheets.contains(s) {
                    return Err(format!("{name}: no sheet `{s}` (sheets: {sheets:?})"));
                }
                s.clone()
            }
            None => sheets.first().cloned().ok_or_else(|| format!("{name}: the workbook has no sheets"))?,
        };
        let range = wb.worksheet_range(&sheet).map_err(|e| format!("{name}: sheet `{sheet}`: {e}"))?;
        let header_idx = self.cfg.header_row - 1;
        let Some((start_row, _)) = range.start() else {
            return Err(format!("{name}: sheet `{sheet}` is empty"));
        };
        if header_idx < start_row {
            return Err(format!("{name}: sheet `{sheet}`: header row {} is empty", self.cfg.header_row));
        }
        let mut rows = range.rows().enumerate().map(|(i, r)| (start_row + i as u32, r));
        let headers: Vec<String> = loop {
            match rows.next() {
                Some((abs, r)) if abs == header_idx => {
                    break r.iter().map(|c| xlsx_text(c).trim().to_string()).collect();
                }
                Some(_) => continue,
                None => return Err(format!("{name}: sheet `{sheet}` has no row {}", self.cfg.header_row)),
            }
        };
        if headers.iter().all(String::is_empty) {
            return Err(format!("{name}: sheet `{sheet}`: header row {} is empty", self.cfg.header_row));
        }
        for k in &self.cfg.key_columns {
            if !headers.contains(k) {
                return Err(format!("{name}: sheet `{sheet}`: key column `{k}` not in header {headers:?}"));
            }
        }
        let mut out = Vec::new();
        for (abs, r) in rows {
            if r.iter().all(|c| matches!(c, calamine::Data::Empty)) {
                continue;
            }
            let mut obj = Map::new();
            for (h, c) in headers.iter().zip(r.iter()) {
                if h.is_empty() {
                    continue;
                }
                obj.insert(h.clone(), xlsx_value(c));
            }
            out.push(RecordMaker::of(self).record(obj, format!("{name}!{sheet}:{}", abs + 1)));
        }
        Ok(out)
    }
}

/// A cell as text (for headers).
fn xlsx_text(c: &calamine::Data) -> String {
    match xlsx_value(c) {
        Value::String(s) => s,
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// A cell as JSON (see the module docs).
fn xlsx_value(c: &calamine::Data) -> Value {
    use calamine::Data;
    match c {
        Data::Empty => Value::Null,
        Data::String(s) => Value::String(s.trim().to_string()),
        Data::Bool(b) => Value::Bool(*b),
        Data::Int(i) => Value::from(*i),
        Data::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::from(*f as i64)
            } else {
                serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or_else(|| Value::String(f.to_string()))
            }
        }
        Data::DateTime(d) => {
            if d.is_duration() {
                match d.as_duration() {
                    Some(dur) => {
                        let secs = dur.num_seconds();
                        Value::String(format!("{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60))
                    }
                    None => Value::String(d.as_f64().to_string()),
                }
            } else {
                match d.as_datetime() {
                    Some(dt) if dt.time() == chrono::NaiveTime::MIN => Value::String(dt.format("%Y-%m-%d").to_string()),
                    Some(dt) => Value::String(dt.format("%Y-%m-%d %H:%M:%S").to_string()),
                    None => Value::String(d.as_f64().to_string()),
                }
            }
        }
        Data::DateTimeIso(s) | Data::DurationIso(s) => Value::String(s.clone()),
        Data::Error(e) => Value::String(e.to_string()),
    }
}

fn first_bad_byte(enc: &'static Encoding, raw: &[u8]) -> usize {
    // Find the shortest prefix that fails to decode.
    let mut decoder = enc.new_decoder_without_bom_handling();
    let mut buf = String::with_capacity(raw.len() * 2);
    for (i, b) in raw.iter().enumerate() {
        let (res, _read) = decoder.decode_to_string_without_replacement(std::slice::from_ref(b), &mut buf, false);
        if let encoding_rs::DecoderResult::Malformed(_, _) = res {
            return i;
        }
        if buf.capacity() - buf.len() < 8 {
            buf.reserve(64);
        }
    }
    raw.len()
}

#[async_trait::async_trait]
impl PollingSource for FileSource {
    fn id(&self) -> &str {
        &self.id
    }

    async fn sync_once(&mut self, ctx: &SourceContext) -> Result<RunStats, ConnectorError> {
        let span = info_span!("sync", source = %self.id, kind = "file");
        async move {
            let mut cp: FileCheckpoint = match ctx.checkpoint(&self.id).await? {
                Some(v) => serde_json::from_value(v).map_err(|e| ConnectorError::Config {
                    source_id: self.id.clone(),
                    detail: format!("stored checkpoint unreadable: {e}"),
                })?,
                None => FileCheckpoint::default(),
            };
            let mut stats = RunStats::default();
            for path in self.list()? {
                let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
                // Pass 1: identity and encoding, in fixed blocks.
                let check_utf8 =
                    self.format_of(&path) == Some(FileFormat::Csv) && self.cfg.encoding == TextEncoding::Auto;
                let scan = match std::fs::File::open(&path)
                    .and_then(|f| stream::scan(std::io::BufReader::new(f), check_utf8))
                {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(source = %self.id, path = %path.display(), "cannot read file: {e}");
                        continue;
                    }
                };
                let hash = scan.hash;
                let progress =
                    cp.files.get(&hash).cloned().unwrap_or(FileProgress { name: name.clone(), ..Default::default() });
                if progress.done {
                    info!(source = %self.id, file = %name, "already ingested (same content); moving to processed");
                    self.move_to(&path, &self.cfg.processed(), None)?;
                    continue;
                }
                // Pass 2: records, one chunk at a time.
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(source = %self.id, path = %path.display(), "cannot read file: {e}");
                        continue;
                    }
                };
                let reader: Box<dyn BufRead + Send> = Box::new(std::io::BufReader::with_capacity(1 << 16, file));
                let mut records = match self.open_stream(&path, reader, scan.utf8) {
                    Ok(r) => r,
                    Err(reason) => {
                        warn!(source = %self.id, file = %name, "file rejected: {reason}");
                        self.move_to(&path, &self.cfg.failed(), Some(&reason))?;
                        continue;
                    }
                };
                let mut published = progress.published;
                let mut read_error = None;
                if let Err(e) = records.skip(published) {
                    read_error = Some(e);
                }
                // Two chunks ahead: the last chunk's checkpoint says `done`
                // (the chunk after it is empty), and the chunk after next is
                // parsed on the blocking pool while this one is published,
                // so parsing and the durable write overlap.
                let rows = self.cfg.chunk_rows;
                let mut ahead = Vec::with_capacity(2);
                while read_error.is_none() && ahead.len() < 2 {
                    match records.next_chunk(rows) {
                        Ok(c) => ahead.push(c),
                        Err(e) => read_error = Some(e),
                    }
                }
                let mut records = Some(records);
                while read_error.is_none() {
                    let next = ahead.pop().unwrap_or_default();
                    let chunk = ahead.pop().unwrap_or_default();
                    let done = next.is_empty();
                    published += chunk.len() as u64;
                    cp.files.insert(hash.clone(), FileProgress { name: name.clone(), published, done });
                    let value = serde_json::to_value(&cp).unwrap_or(Value::Null);
                    let reading = match (done, records.take()) {
                        (false, Some(mut r)) => Some(tokio::task::spawn_blocking(move || {
                            let c = r.next_chunk(rows);
                            (r, c)
                        })),
                        (_, r) => {
                            records = r;
                            None
                        }
                    };
                    let published_now = ctx.publish(&self.id, &chunk, value).await;
                    let read = match reading {
                        Some(h) => Some(h.await.map_err(|e| self.io(&path, format!("reader thread: {e}")))?),
                        None => None,
                    };
                    published_now?;
                    stats.records += chunk.len() as u64;
                    stats.unparsable += chunk.iter().filter(|e| e.error.is_some()).count() as u64;
                    if done {
                        break;
                    }
                    let Some((r, after)) = read else { break };
                    records = Some(r);
                    ahead.push(next);
                    match after {
                        Ok(c) => ahead.push(c),
                        Err(e) => read_error = Some(e),
                    }
                }
                if let Some(e) = read_error {
                    // Published chunks stay published; the next pass resumes after them.
                    warn!(source = %self.id, file = %name, published, "file read stopped: {e}");
                    continue;
                }
                stats.units += 1;
                // Reconciliation: the file's own line count vs the lines the
                // reader went through (JSON lines; CSV rows may span lines).
                if let Some(read) = records.as_ref().and_then(|r| r.lines_read()) {
                    stats.reported = Some(stats.reported.unwrap_or(0) + scan.lines);
                    stats.distinct += read;
                }
                info!(source = %self.id, file = %name, records = published, "file ingested");
                self.move_to(&path, &self.cfg.processed(), None)?;
            }
            Ok(stats)
        }
        .instrument(span)
        .await
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(enc: TextEncoding) -> FileSource {
        FileSource::new(
            "env",
            "ecology",
            FileConfig {
                dir: PathBuf::from("/nonexistent"),
                format: FileFormat::Auto,
                encoding: enc,
                delimiter: ',',
                key_columns: vec!["编号".into()],
                updated_field: None,
                processed_dir: None,
                failed_dir: None,
                chunk_rows: 2,
                sheet: None,
                header_row: 1,
            },
        )
    }

    #[test]
    fn gbk_csv_with_a_bad_line() {
        let text = "编号,名称\r\nA1,太湖\r\nA2,东苕溪\r\n";
        let (gbk, _, _) = GBK.encode(text);
        let mut bytes = gbk.into_owned();
        bytes.extend_from_slice(b"A3,\x81\x20bad\r\n"); // 0x81 0x20: not a GBK pair
        bytes.extend_from_slice(&GBK.encode("A4,西苕溪\r\n").0);
        let recs = src(TextEncoding::Gbk).parse(Path::new("w.csv"), &bytes).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].key, "A1");
        assert_eq!(recs[1].payload()["名称"], "东苕溪");
        assert!(recs[2].error.as_ref().unwrap().contains("w.csv:4"), "{:?}", recs[2].error);
        assert_eq!(recs[3].key, "A4");
        // auto detects GB18030 for non-UTF-8 input.
        let recs = src(TextEncoding::Auto).parse(Path::new("w.csv"), &bytes).unwrap();
        assert_eq!(recs[0].payload()["名称"], "太湖");
    }

    #[test]
    fn jsonl_bad_line_kept() {
        let s = src(TextEncoding::Utf8);
        let mut cfg = s.cfg.clone();
        cfg.key_columns = vec!["id".into()];
        let s = FileSource::new("c", "ecology", cfg);
        let recs = s.parse(Path::new("c.jsonl"), b"{\"id\":\"1\"}\n{oops\n[1]\n{\"x\":2}\n").unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].key, "1");
        assert!(recs[1].error.as_ref().unwrap().contains("c.jsonl:2: bad JSON"));
        assert!(recs[2].error.as_ref().unwrap().contains("expected a JSON object"));
        assert_eq!(recs[3].key, "", "missing key stays empty for the pipeline to quarantine");
    }
}
