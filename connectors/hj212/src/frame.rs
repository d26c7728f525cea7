//! Frame model, single-frame parser and encoder.
//!
//! Wire layout: `##` + `LLLL` (4 decimal digits, data-segment length in
//! bytes) + data segment + `CCCC` (4 hex digits, CRC over the data segment)
//! + `\r\n`.
//!
//! Data segment: `QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&`.
//! Header keys are matched case-insensitively and in any order; QN, PW,
//! Flag, PNUM and PNO are optional (real devices omit them), ST, CN and MN
//! are required.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

use crate::crc::CrcVariant;
use crate::error::{Hj212Error, snippet};

/// Largest data segment the 4-digit length field can describe.
pub const MAX_DATA_LEN: usize = 9999;
/// `##` + `LLLL`.
pub const HEADER_LEN: usize = 6;
/// `CCCC` + `\r\n`.
pub const TRAILER_LEN: usize = 6;
/// Offset of the data segment from the first `#`.
const SEG_OFFSET: usize = HEADER_LEN;

/// Protocol edition, from Flag bits 2–7 (0 → 2005, 1 → 2017, 2 → 2025).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProtocolVersion {
    /// HJ/T 212-2005 (version bits 0, or no Flag at all; see [`Frame::version`]).
    V2005,
    /// HJ 212-2017.
    V2017,
    /// HJ 212-2025.
    V2025,
    /// Version bits with no known edition (the raw 6-bit value).
    Unknown(u8),
}

impl ProtocolVersion {
    /// Decode the 6 version bits (already shifted down).
    pub fn from_bits(bits: u8) -> Self {
        match bits {
            0 => ProtocolVersion::V2005,
            1 => ProtocolVersion::V2017,
            2 => ProtocolVersion::V2025,
            n => ProtocolVersion::Unknown(n),
        }
    }

    /// The 6 version bits (not shifted).
    pub fn bits(self) -> u8 {
        match self {
            ProtocolVersion::V2005 => 0,
            ProtocolVersion::V2017 => 1,
            ProtocolVersion::V2025 => 2,
            ProtocolVersion::Unknown(n) => n & 0x3F,
        }
    }

    /// `"2005"`, `"2017"`, `"2025"` or `"unknown-<bits>"`.
    pub fn label(self) -> String {
        match self {
            ProtocolVersion::V2005 => "2005".into(),
            ProtocolVersion::V2017 => "2017".into(),
            ProtocolVersion::V2025 => "2025".into(),
            ProtocolVersion::Unknown(n) => format!("unknown-{n}"),
        }
    }
}

/// The `Flag=` header value.
///
/// bit0 (`A`): the sender wants a reply; bit1 (`D`): PNUM/PNO present
/// (split message); bits 2–7: protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flag {
    pub raw: u8,
}

impl Flag {
    /// bit0: reply required.
    pub const ACK: u8 = 0b01;
    /// bit1: split packets (PNUM/PNO present).
    pub const SUBPACKAGE: u8 = 0b10;

    pub fn new(version: ProtocolVersion, ack_required: bool, subpackage: bool) -> Self {
        let mut raw = version.bits() << 2;
        if ack_required {
            raw |= Self::ACK;
        }
        if subpackage {
            raw |= Self::SUBPACKAGE;
        }
        Flag { raw }
    }
    /// A bit: the sender asks for a reply.
    pub fn ack_required(self) -> bool {
        self.raw & Self::ACK != 0
    }
    /// D bit: the message is split into PNUM/PNO packets.
    pub fn subpackage(self) -> bool {
        self.raw & Self::SUBPACKAGE != 0
    }
    /// Protocol version from bits 2–7.
    pub fn version(self) -> ProtocolVersion {
        ProtocolVersion::from_bits(self.raw >> 2)
    }
}

/// Per-value data flag (`<code>-Flag=`).
///
/// `N F M S D C T B` are the flags of HJ/T 212-2005 and HJ 212-2017 alike;
/// anything else (e.g. the extended `P`/`0`–`3` set some platforms use) is
/// kept verbatim in [`DataFlag::Other`]. Lower-case letters are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataFlag {
    /// N: normal.
    Normal,
    /// F: instrument stopped.
    Stopped,
    /// M: maintenance.
    Maintenance,
    /// S: manually entered set value.
    Manual,
    /// D: fault.
    Fault,
    /// C: calibration.
    Calibration,
    /// T: above measuring range.
    OverRange,
    /// B: communication failure.
    CommFailure,
    /// Anything else, verbatim.
    Other(String),
}

impl DataFlag {
    pub fn parse(s: &str) -> Self {
        let t = s.trim();
        match t {
            "N" | "n" => DataFlag::Normal,
            "F" | "f" => DataFlag::Stopped,
            "M" | "m" => DataFlag::Maintenance,
            "S" | "s" => DataFlag::Manual,
            "D" | "d" => DataFlag::Fault,
            "C" | "c" => DataFlag::Calibration,
            "T" | "t" => DataFlag::OverRange,
            "B" | "b" => DataFlag::CommFailure,
            other => DataFlag::Other(other.to_string()),
        }
    }

    /// Wire form (`"N"`, …, or the verbatim other value).
    pub fn as_str(&self) -> &str {
        match self {
            DataFlag::Normal => "N",
            DataFlag::Stopped => "F",
            DataFlag::Maintenance => "M",
            DataFlag::Manual => "S",
            DataFlag::Fault => "D",
            DataFlag::Calibration => "C",
            DataFlag::OverRange => "T",
            DataFlag::CommFailure => "B",
            DataFlag::Other(s) => s,
        }
    }
}

impl fmt::Display for DataFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// All values reported for one factor (pollutant) code in a CP payload.
///
/// Typed slots hold `Rtd`, `Min`, `Avg`, `Max`, `Cou` (finite numbers) and
/// `Flag`. Every other suffix (`ZsRtd`, `EFlag`, `SampleTime`, `RS`, …), a
/// numeric slot whose value is not a number, and repeats of an already
/// filled slot go to `extra`, keyed by the suffix as sent (repeats get
/// `#2`, `#3`, … appended). Nothing is dropped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Factor {
    /// Factor code as sent (`w01018`, `a34004`, 2005-style `011`, or
    /// non-standard `LA`); unknown codes are kept.
    pub code: String,
    pub rtd: Option<f64>,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    pub cou: Option<f64>,
    pub flag: Option<DataFlag>,
    pub extra: BTreeMap<String, String>,
}

impl Factor {
    pub fn new(code: impl Into<String>) -> Self {
        Factor { code: code.into(), ..Default::default() }
    }

    fn set(&mut self, suffix: &str, value: &str) {
        let lower = suffix.to_ascii_lowercase();
        let slot = match lower.as_str() {
            "rtd" => Some(&mut self.rtd),
            "min" => Some(&mut self.min),
            "avg" => Some(&mut self.avg),
            "max" => Some(&mut self.max),
            "cou" => Some(&mut self.cou),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_none()
                && let Some(v) = parse_number(value)
            {
                *slot = Some(v);
                return;
            }
        } else if lower == "flag" && self.flag.is_none() && !value.is_empty() {
            self.flag = Some(DataFlag::parse(value));
            return;
        }
        put_dedup(&mut self.extra, suffix, value);
    }

    fn items(&self) -> Vec<String> {
        let c = &self.code;
        let mut v = Vec::new();
        for (name, slot) in
            [("Rtd", self.rtd), ("Min", self.min), ("Avg", self.avg), ("Max", self.max), ("Cou", self.cou)]
        {
            if let Some(x) = slot {
                v.push(format!("{c}-{name}={x}"));
            }
        }
        if let Some(f) = &self.flag {
            v.push(format!("{c}-Flag={f}"));
        }
        for (k, val) in &self.extra {
            v.push(format!("{c}-{}={val}", strip_dedup(k)));
        }
        v
    }

    /// Fill empty slots from `other`; conflicting values go to `extra`.
    fn merge(&mut self, other: Factor) {
        for (mine, theirs, name) in [
            (&mut self.rtd, other.rtd, "Rtd"),
            (&mut self.min, other.min, "Min"),
            (&mut self.avg, other.avg, "Avg"),
            (&mut self.max, other.max, "Max"),
            (&mut self.cou, other.cou, "Cou"),
        ] {
            match (mine.as_ref(), theirs) {
                (None, Some(t)) => *mine = Some(t),
                (Some(m), Some(t)) if *m != t => put_dedup(&mut self.extra, name, &t.to_string()),
                _ => {}
            }
        }
        match (&self.flag, other.flag) {
            (None, Some(f)) => self.flag = Some(f),
            (Some(m), Some(f)) if *m != f => put_dedup(&mut self.extra, "Flag", f.as_str()),
            _ => {}
        }
        for (k, v) in other.extra {
            put_dedup(&mut self.extra, strip_dedup(&k), &v);
        }
    }
}

/// The parsed `CP=&&…&&` payload.
///
/// `DataTime` (14 digits, or 17 with milliseconds as 2005 senders use) is
/// parsed into `data_time`; if it does not parse it is kept raw in `other`.
/// Keys of the form `<code>-<suffix>` become [`Factor`]s (in order of first
/// appearance; a code seen in several groups is merged). Every other key
/// (`BeginTime`, `QnRtn`, `PolId`, nested `&&…&&` blocks, items without
/// `=`…) is kept in `other`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cp {
    pub data_time: Option<NaiveDateTime>,
    pub factors: Vec<Factor>,
    pub other: BTreeMap<String, String>,
}

impl Cp {
    /// The factor with this code, if present.
    pub fn factor(&self, code: &str) -> Option<&Factor> {
        self.factors.iter().find(|f| f.code == code)
    }

    fn factor_mut(&mut self, code: &str) -> &mut Factor {
        let idx = match self.factors.iter().position(|f| f.code == code) {
            Some(i) => i,
            None => {
                self.factors.push(Factor::new(code));
                self.factors.len() - 1
            }
        };
        // `idx` is in range by construction.
        &mut self.factors[idx]
    }

    /// Route one `key=value` item into the typed structure.
    pub fn insert(&mut self, key: &str, value: &str) {
        let key = key.trim();
        let value = value.trim();
        if key.eq_ignore_ascii_case("DataTime") {
            if self.data_time.is_none()
                && let Some(dt) = parse_time(value)
            {
                self.data_time = Some(dt);
                return;
            }
            put_dedup(&mut self.other, "DataTime", value);
            return;
        }
        if let Some((code, suffix)) = key.split_once('-')
            && !code.is_empty()
            && !suffix.is_empty()
        {
            self.factor_mut(code).set(suffix, value);
            return;
        }
        put_dedup(&mut self.other, key, value);
    }

    /// Parse a CP payload (the text between the outer `&&`s). Never fails:
    /// anything that is not `key=value` is kept in `other` with an empty
    /// value.
    pub fn parse(payload: &str) -> Cp {
        let mut cp = Cp::default();
        for group in split_top(payload, b';') {
            for item in split_top(group, b',') {
                if item.trim().is_empty() {
                    continue;
                }
                match item.split_once('=') {
                    Some((k, v)) => cp.insert(k, v),
                    None => put_dedup(&mut cp.other, item.trim(), ""),
                }
            }
        }
        cp
    }

    /// Canonical payload text: `DataTime` first, then `other` (sorted), then
    /// one `;`-group per factor.
    pub fn to_payload(&self) -> String {
        let mut groups: Vec<String> = Vec::new();
        if let Some(dt) = self.data_time {
            groups.push(format!("DataTime={}", format_time(dt)));
        }
        for (k, v) in &self.other {
            let k = strip_dedup(k);
            if v.is_empty() && !k.contains('=') {
                groups.push(k.to_string());
            } else {
                groups.push(format!("{k}={v}"));
            }
        }
        for f in &self.factors {
            let items = f.items();
            if !items.is_empty() {
                groups.push(items.join(","));
            }
        }
        groups.join(";")
    }

    /// Merge another payload (a later packet of the same message) into this one.
    pub fn merge(&mut self, other: Cp) {
        match (self.data_time, other.data_time) {
            (None, Some(t)) => self.data_time = Some(t),
            (Some(m), Some(t)) if m != t => put_dedup(&mut self.other, "DataTime", &format_time(t)),
            _ => {}
        }
        for (k, v) in other.other {
            put_dedup(&mut self.other, strip_dedup(&k), &v);
        }
        for f in other.factors {
            if let Some(mine) = self.factors.iter_mut().find(|m| m.code == f.code) {
                mine.merge(f);
            } else {
                self.factors.push(f);
            }
        }
    }
}

/// One decoded HJ 212 frame (or a reassembled multi-packet message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Request number `YYYYMMDDhhmmsszzz` (optional on the wire).
    pub qn: Option<String>,
    /// System code (2 digits, e.g. `32`; `91` for system interaction).
    pub st: String,
    /// Command code (4 digits, e.g. `2011`; see [`crate::cn`]).
    pub cn: String,
    /// Access password (optional on the wire). Never put into JSON output.
    pub pw: Option<String>,
    /// Device id (MN). Not validated beyond being non-empty; see
    /// [`Frame::warnings`].
    pub mn: String,
    /// Raw `Flag=` value, if sent.
    pub flag: Option<Flag>,
    /// Protocol edition. From the Flag version bits when Flag is present.
    /// Without Flag (common for 2005 senders and sloppy 2017 ones) it is
    /// inferred: `V2017` if any factor code has the 2017 shape (one letter
    /// + 5 digits, e.g. `w01018`), otherwise `V2005`.
    pub version: ProtocolVersion,
    /// Total packet count (split messages).
    pub pnum: Option<u32>,
    /// Packet number, 1-based (split messages).
    pub pno: Option<u32>,
    pub cp: Cp,
    /// Header keys other than the known ones (and repeats of known ones,
    /// with `#2`, … appended), kept verbatim.
    pub header_extra: BTreeMap<String, String>,
    /// The data segment as received (lossy UTF-8). For a reassembled
    /// message: the packets' data segments in PNO order joined by `\n`.
    /// Empty for frames built in code.
    pub raw: String,
    /// Whether the received CRC matched the configured variant. Always
    /// `true` for frames built in code. Frames with `crc_ok == false` must
    /// not be treated as good data.
    pub crc_ok: bool,
}

impl Frame {
    /// A frame built in code: 2017 Flag without A/D bits, empty CP.
    pub fn new(st: impl Into<String>, cn: impl Into<String>, mn: impl Into<String>) -> Self {
        Frame {
            qn: None,
            st: st.into(),
            cn: cn.into(),
            pw: None,
            mn: mn.into(),
            flag: Some(Flag::new(ProtocolVersion::V2017, false, false)),
            version: ProtocolVersion::V2017,
            pnum: None,
            pno: None,
            cp: Cp::default(),
            header_extra: BTreeMap::new(),
            raw: String::new(),
            crc_ok: true,
        }
    }

    /// Whether the sender asked for a reply (Flag A bit).
    pub fn ack_required(&self) -> bool {
        self.flag.is_some_and(Flag::ack_required)
    }

    /// Whether this is one packet of a split message (PNUM > 1).
    pub fn is_split(&self) -> bool {
        self.pnum.is_some_and(|n| n > 1)
    }

    /// Parse a data segment (without `##LLLL`, CRC or CRLF). `crc_ok` is
    /// set to `false`: the caller has not checked anything. Byte offsets in
    /// errors are relative to the frame start (data segment at offset 6).
    pub fn parse_segment(seg: &str) -> Result<Frame, Hj212Error> {
        parse_segment_at(seg, SEG_OFFSET)
    }

    /// Canonical data segment for this frame (what [`Frame::encode`] sends).
    pub fn data_segment(&self) -> String {
        let mut s = String::new();
        if let Some(qn) = &self.qn {
            s.push_str(&format!("QN={qn};"));
        }
        s.push_str(&format!("ST={};CN={};", self.st, self.cn));
        if let Some(pw) = &self.pw {
            s.push_str(&format!("PW={pw};"));
        }
        s.push_str(&format!("MN={};", self.mn));
        if let Some(f) = self.flag {
            s.push_str(&format!("Flag={};", f.raw));
        }
        if let Some(n) = self.pnum {
            s.push_str(&format!("PNUM={n};"));
        }
        if let Some(n) = self.pno {
            s.push_str(&format!("PNO={n};"));
        }
        for (k, v) in &self.header_extra {
            s.push_str(&format!("{}={v};", strip_dedup(k)));
        }
        s.push_str("CP=&&");
        s.push_str(&self.cp.to_payload());
        s.push_str("&&");
        s
    }

    /// Encode as a complete wire frame with a fresh length and CRC.
    pub fn encode(&self, crc: CrcVariant) -> Result<Vec<u8>, Hj212Error> {
        encode_frame(&self.data_segment(), crc)
    }

    /// Non-fatal oddities worth logging (MN shape, ST/CN/QN shape,
    /// inconsistent Flag D bit and PNUM/PNO). Never grounds for rejection.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.mn.is_empty() || self.mn.len() > 24 || !self.mn.bytes().all(|b| b.is_ascii_alphanumeric()) {
            w.push(format!("MN {:?} is not 1-24 characters of [0-9A-Za-z]", self.mn));
        }
        if self.st.len() != 2 || !self.st.bytes().all(|b| b.is_ascii_digit()) {
            w.push(format!("ST {:?} is not 2 digits", self.st));
        }
        if self.cn.len() != 4 || !self.cn.bytes().all(|b| b.is_ascii_digit()) {
            w.push(format!("CN {:?} is not 4 digits", self.cn));
        }
        if let Some(qn) = &self.qn
            && (qn.len() != 17 || !qn.bytes().all(|b| b.is_ascii_digit()))
        {
            w.push(format!("QN {qn:?} is not 17 digits"));
        }
        let d = self.flag.is_some_and(Flag::subpackage);
        if d != (self.pnum.is_some() || self.pno.is_some()) {
            w.push("Flag D bit and presence of PNUM/PNO disagree".to_string());
        }
        if let ProtocolVersion::Unknown(n) = self.version {
            w.push(format!("unknown protocol version bits {n}"));
        }
        w
    }
}

/// Wrap a data segment into a wire frame: `##` + length + segment + CRC +
/// CRLF. Fails only if the segment is longer than 9999 bytes.
pub fn encode_frame(segment: &str, crc: CrcVariant) -> Result<Vec<u8>, Hj212Error> {
    let len = segment.len();
    if len > MAX_DATA_LEN {
        return Err(Hj212Error::Encode {
            reason: format!("data segment is {len} bytes, the length field allows at most {MAX_DATA_LEN}"),
        });
    }
    let c = crc.compute(segment.as_bytes());
    Ok(format!("##{len:04}{segment}{c:04X}\r\n").into_bytes())
}

/// Result of looking at a buffer that starts with `##`.
pub(crate) enum Envelope {
    /// More bytes are needed to decide.
    Incomplete { needed: usize },
    /// A complete frame occupies `buf[..total]` (CRLF included).
    Complete { declared: usize, total: usize },
}

/// Check the envelope of the frame at the start of `buf` (which starts with
/// `##`). Every decision depends only on bytes already present, so feeding a
/// stream byte by byte or all at once gives the same answers.
pub(crate) fn scan_envelope(buf: &[u8], max_data: usize) -> Result<Envelope, Hj212Error> {
    let len_field = buf.get(2..buf.len().min(HEADER_LEN)).unwrap_or_default();
    if let Some(bad) = len_field.iter().position(|b| !b.is_ascii_digit()) {
        // Report up to the first non-digit only, so the message does not
        // depend on how much of the stream has arrived.
        return Err(Hj212Error::BadLengthField {
            offset: 2,
            found: snippet(len_field.get(..=bad).unwrap_or_default()),
        });
    }
    if buf.len() < HEADER_LEN {
        return Ok(Envelope::Incomplete { needed: HEADER_LEN });
    }
    let declared = len_field.iter().fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
    if declared > max_data {
        return Err(Hj212Error::TooLarge { declared, max: max_data });
    }
    let cr_at = HEADER_LEN + declared + 4;
    let total = cr_at + 2;
    let window = buf.get(HEADER_LEN..buf.len().min(total)).unwrap_or_default();
    if let Some(p) = window.windows(2).position(|w| w == b"\r\n") {
        let q = HEADER_LEN + p;
        if q < cr_at {
            return Err(Hj212Error::BadLength { declared, actual: q.saturating_sub(HEADER_LEN + 4) });
        }
        return Ok(Envelope::Complete { declared, total });
    }
    if buf.len() >= total {
        return Err(Hj212Error::BadTerminator {
            offset: cr_at,
            found: snippet(buf.get(cr_at..total).unwrap_or_default()),
        });
    }
    Ok(Envelope::Incomplete { needed: total })
}

/// Decode `##LLLL<seg>CCCC` (CRLF optional, already validated). Returns the
/// frame with `crc_ok` set. A frame whose data segment does not parse and
/// whose CRC is also wrong is reported as [`Hj212Error::BadCrc`].
pub(crate) fn decode_body(frame: &[u8], declared: usize, crc: CrcVariant) -> Result<Frame, Hj212Error> {
    let seg_end = HEADER_LEN + declared;
    let seg = frame.get(HEADER_LEN..seg_end).ok_or(Hj212Error::Truncated { needed: seg_end, have: frame.len() })?;
    let crc_field =
        frame.get(seg_end..seg_end + 4).ok_or(Hj212Error::Truncated { needed: seg_end + 4, have: frame.len() })?;
    let got =
        parse_hex4(crc_field).ok_or_else(|| Hj212Error::BadCrcField { offset: seg_end, found: snippet(crc_field) })?;
    let expected = crc.compute(seg);
    let crc_ok = expected == got;
    let text = String::from_utf8_lossy(seg);
    match parse_segment_at(&text, SEG_OFFSET) {
        Ok(mut f) => {
            f.crc_ok = crc_ok;
            Ok(f)
        }
        Err(_) if !crc_ok => Err(Hj212Error::BadCrc { expected, got, variant: crc }),
        Err(e) => Err(e),
    }
}

/// Parse exactly one wire frame. The CRC is checked and reported in
/// [`Frame::crc_ok`] (use [`parse_frame_strict`] to turn a mismatch into an
/// error). A missing final CRLF is tolerated; bytes after it are not.
pub fn parse_frame(bytes: &[u8], crc: CrcVariant) -> Result<Frame, Hj212Error> {
    if !bytes.starts_with(b"##") {
        return Err(Hj212Error::BadHeader { offset: 0, found: snippet(bytes.get(..2).unwrap_or(bytes)) });
    }
    match scan_envelope(bytes, MAX_DATA_LEN)? {
        Envelope::Complete { declared, total } => {
            if bytes.len() > total {
                return Err(Hj212Error::TrailingBytes { offset: total, count: bytes.len() - total });
            }
            decode_body(bytes, declared, crc)
        }
        Envelope::Incomplete { needed } => {
            // Tolerate a frame given without its CRLF.
            if bytes.len() >= HEADER_LEN {
                let declared = needed.saturating_sub(HEADER_LEN + TRAILER_LEN);
                if bytes.len() == HEADER_LEN + declared + 4 {
                    return decode_body(bytes, declared, crc);
                }
            }
            Err(Hj212Error::Truncated { needed, have: bytes.len() })
        }
    }
}

/// Like [`parse_frame`], but a CRC mismatch is an error.
pub fn parse_frame_strict(bytes: &[u8], crc: CrcVariant) -> Result<Frame, Hj212Error> {
    let f = parse_frame(bytes, crc)?;
    if !f.crc_ok {
        let (expected, got) = crc_pair(bytes, crc).unwrap_or((0, 0));
        return Err(Hj212Error::BadCrc { expected, got, variant: crc });
    }
    Ok(f)
}

/// (computed, carried) CRC of a frame whose envelope is known to be valid.
fn crc_pair(bytes: &[u8], crc: CrcVariant) -> Option<(u16, u16)> {
    let len_field = bytes.get(2..HEADER_LEN)?;
    let declared = std::str::from_utf8(len_field).ok()?.parse::<usize>().ok()?;
    let seg = bytes.get(HEADER_LEN..HEADER_LEN + declared)?;
    let got = parse_hex4(bytes.get(HEADER_LEN + declared..HEADER_LEN + declared + 4)?)?;
    Some((crc.compute(seg), got))
}

fn parse_hex4(b: &[u8]) -> Option<u16> {
    if b.len() != 4 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// Position of the `CP=` that starts the payload (at the start or after `;`).
fn find_cp(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    (0..b.len().saturating_sub(2)).find(|&i| {
        b.get(i..i + 3).is_some_and(|w| w.eq_ignore_ascii_case(b"CP=")) && (i == 0 || b.get(i - 1) == Some(&b';'))
    })
}

fn parse_segment_at(seg: &str, base: usize) -> Result<Frame, Hj212Error> {
    let cp_pos = find_cp(seg);
    let header = match cp_pos {
        Some(p) => seg.get(..p).unwrap_or_default(),
        None => seg,
    };

    let mut qn = None;
    let mut st = None;
    let mut cn = None;
    let mut pw = None;
    let mut mn = None;
    let mut flag = None;
    let mut pnum = None;
    let mut pno = None;
    let mut header_extra = BTreeMap::new();

    let mut off = 0usize;
    for item in header.split(';') {
        let at = base + off;
        off += item.len() + 1;
        let t = item.trim();
        if t.is_empty() {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(Hj212Error::field(&snippet(t.as_bytes()), at, "expected KEY=VALUE"));
        };
        let key = k.trim();
        let v = v.trim().to_string();
        let upper = key.to_ascii_uppercase();
        let slot: Option<&mut Option<String>> = match upper.as_str() {
            "QN" => Some(&mut qn),
            "ST" => Some(&mut st),
            "CN" => Some(&mut cn),
            "PW" => Some(&mut pw),
            "MN" => Some(&mut mn),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_none() {
                *slot = Some(v);
            } else {
                put_dedup(&mut header_extra, key, &v);
            }
            continue;
        }
        match upper.as_str() {
            "FLAG" if flag.is_none() => {
                let n: u8 =
                    v.parse().map_err(|_| Hj212Error::field("Flag", at, format!("{v:?} is not an integer 0-255")))?;
                flag = Some(Flag { raw: n });
            }
            "PNUM" if pnum.is_none() => {
                pnum = Some(
                    v.parse::<u32>()
                        .map_err(|_| Hj212Error::field("PNUM", at, format!("{v:?} is not a packet count")))?,
                );
            }
            "PNO" if pno.is_none() => {
                pno = Some(
                    v.parse::<u32>()
                        .map_err(|_| Hj212Error::field("PNO", at, format!("{v:?} is not a packet number")))?,
                );
            }
            _ => put_dedup(&mut header_extra, key, &v),
        }
    }

    let cp = match cp_pos {
        None => Cp::default(),
        Some(p) => {
            let rest = seg.get(p + 3..).unwrap_or_default();
            if !rest.starts_with("&&") {
                return Err(Hj212Error::field("CP", base + p + 3, "expected `&&` after `CP=`"));
            }
            if rest.len() < 4 || !rest.ends_with("&&") {
                return Err(Hj212Error::field(
                    "CP",
                    base + seg.len(),
                    "missing closing `&&` at the end of the data segment",
                ));
            }
            Cp::parse(rest.get(2..rest.len() - 2).unwrap_or_default())
        }
    };

    let st = st.ok_or_else(|| Hj212Error::field("ST", base, "missing"))?;
    let cn = cn.ok_or_else(|| Hj212Error::field("CN", base, "missing"))?;
    let mn = mn.ok_or_else(|| Hj212Error::field("MN", base, "missing"))?;
    if cn.is_empty() {
        return Err(Hj212Error::field("CN", base, "empty"));
    }

    let version = match flag {
        Some(f) => f.version(),
        None => infer_version(&cp),
    };

    Ok(Frame { qn, st, cn, pw, mn, flag, version, pnum, pno, cp, header_extra, raw: seg.to_string(), crc_ok: false })
}

fn infer_version(cp: &Cp) -> ProtocolVersion {
    let modern = cp.factors.iter().any(|f| {
        let b = f.code.as_bytes();
        b.len() == 6 && b[0].is_ascii_alphabetic() && b[1..].iter().all(u8::is_ascii_digit)
    });
    if modern { ProtocolVersion::V2017 } else { ProtocolVersion::V2005 }
}

/// Split at `sep`, ignoring separators inside nested `&&…&&` blocks.
fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut inside = false;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'&' && b.get(i + 1) == Some(&b'&') {
            inside = !inside;
            i += 2;
            continue;
        }
        if b[i] == sep && !inside {
            out.push(s.get(start..i).unwrap_or_default());
            start = i + 1;
        }
        i += 1;
    }
    out.push(s.get(start..).unwrap_or_default());
    out
}

fn parse_number(v: &str) -> Option<f64> {
    let t = v.trim();
    // Only plain decimal notation; `inf`, `NaN` and friends stay raw.
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')) {
        return None;
    }
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// `yyyyMMddHHmmss` or `yyyyMMddHHmmssSSS`.
pub fn parse_time(v: &str) -> Option<NaiveDateTime> {
    if !(v.len() == 14 || v.len() == 17) || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dt = NaiveDateTime::parse_from_str(v.get(..14)?, "%Y%m%d%H%M%S").ok()?;
    if v.len() == 17 {
        let ms: u32 = v.get(14..)?.parse().ok()?;
        dt.with_nanosecond(ms * 1_000_000)
    } else {
        Some(dt)
    }
}

/// Inverse of [`parse_time`]: 14 digits, or 17 when milliseconds are non-zero.
pub fn format_time(dt: NaiveDateTime) -> String {
    let ms = dt.nanosecond() / 1_000_000;
    if ms == 0 { dt.format("%Y%m%d%H%M%S").to_string() } else { format!("{}{ms:03}", dt.format("%Y%m%d%H%M%S")) }
}

/// Insert without overwriting: a repeated key is stored as `key#2`, `key#3`, ….
pub(crate) fn put_dedup(map: &mut BTreeMap<String, String>, key: &str, value: &str) {
    if !map.contains_key(key) {
        map.insert(key.to_string(), value.to_string());
        return;
    }
    let mut n = 2usize;
    loop {
        if let std::collections::btree_map::Entry::Vacant(e) = map.entry(format!("{key}#{n}")) {
            e.insert(value.to_string());
            return;
        }
        n += 1;
    }
}

/// Undo [`put_dedup`]'s `#<n>` suffix.
pub(crate) fn strip_dedup(key: &str) -> &str {
    if let Some((base, n)) = key.rsplit_once('#')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return base;
    }
    key
}
