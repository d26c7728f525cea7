//! Compact binary encoding of an [`AuditEvent`] (the plaintext of an entry).
//!
//! Layout (version 1): `version u8 | kind u8 | outcome u8 | presence u16 LE |
//! node str | user str | department str | optional fields in presence-bit
//! order`. A `str` is a LEB128 length and UTF-8 bytes; numbers are LEB128;
//! lists are a LEB128 count and strs; `detail` is its JSON text. The event
//! time is not repeated here: it is the clear-text (authenticated) `time_us`
//! of the entry frame.

use chrono::DateTime;

use crate::event::{AuditEvent, EventKind, Outcome};

const VERSION: u8 = 1;
const P_SESSION: u16 = 1 << 0;
const P_CLIENT: u16 = 1 << 1;
const P_RULE: u16 = 1 << 2;
const P_RULE_VERSION: u16 = 1 << 3;
const P_SQL: u16 = 1 << 4;
const P_ROWS: u16 = 1 << 5;
const P_DURATION: u16 = 1 << 6;
const P_DETAIL: u16 = 1 << 7;
const P_TABLES: u16 = 1 << 8;
const P_COLUMNS: u16 = 1 << 9;
const P_MASKS: u16 = 1 << 10;
const P_FILTERS: u16 = 1 << 11;

const KINDS: [EventKind; 11] = [
    EventKind::Login,
    EventKind::Query,
    EventKind::Denial,
    EventKind::Flow,
    EventKind::Export,
    EventKind::PolicyChange,
    EventKind::ConfigChange,
    EventKind::ConnectorRun,
    EventKind::Quarantine,
    EventKind::AuditRead,
    EventKind::Other,
];
const OUTCOMES: [Outcome; 4] = [Outcome::Allow, Outcome::Deny, Outcome::Success, Outcome::Failure];

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, l: &[String]) {
    put_var(out, l.len() as u64);
    for s in l {
        put_str(out, s);
    }
}

/// Appends the encoding of `e` to `out`; `default_node` replaces an empty `node`.
pub(crate) fn encode(e: &AuditEvent, default_node: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut p = 0u16;
    let set = |c: bool, bit: u16, p: &mut u16| {
        if c {
            *p |= bit;
        }
    };
    set(e.session.is_some(), P_SESSION, &mut p);
    set(e.client_addr.is_some(), P_CLIENT, &mut p);
    set(e.rule.is_some(), P_RULE, &mut p);
    set(e.rule_version.is_some(), P_RULE_VERSION, &mut p);
    set(e.sql.is_some(), P_SQL, &mut p);
    set(e.rows.is_some(), P_ROWS, &mut p);
    set(e.duration_ms.is_some(), P_DURATION, &mut p);
    set(!e.detail.is_null(), P_DETAIL, &mut p);
    set(!e.tables.is_empty(), P_TABLES, &mut p);
    set(!e.columns.is_empty(), P_COLUMNS, &mut p);
    set(!e.masks.is_empty(), P_MASKS, &mut p);
    set(!e.filters.is_empty(), P_FILTERS, &mut p);
    out.push(VERSION);
    out.push(KINDS.iter().position(|k| *k == e.kind).unwrap_or(KINDS.len() - 1) as u8);
    out.push(OUTCOMES.iter().position(|o| *o == e.outcome).unwrap_or(0) as u8);
    out.extend_from_slice(&p.to_le_bytes());
    put_str(out, if e.node.is_empty() { default_node } else { &e.node });
    put_str(out, &e.user);
    put_str(out, &e.department);
    for s in [&e.session, &e.client_addr, &e.rule, &e.rule_version, &e.sql].into_iter().flatten() {
        put_str(out, s);
    }
    if let Some(r) = e.rows {
        put_var(out, r);
    }
    if let Some(d) = e.duration_ms {
        put_var(out, d);
    }
    if p & P_DETAIL != 0 {
        let json = serde_json::to_vec(&e.detail).map_err(|x| x.to_string())?;
        put_var(out, json.len() as u64);
        out.extend_from_slice(&json);
    }
    for l in [&e.tables, &e.columns, &e.masks, &e.filters] {
        if !l.is_empty() {
            put_list(out, l);
        }
    }
    Ok(())
}

struct Rd<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.i).ok_or("truncated")?;
        self.i += 1;
        Ok(v)
    }
    fn var(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.var()?).map_err(|_| "length overflow")?;
        let end = self.i.checked_add(n).ok_or("length overflow")?;
        let s = self.b.get(self.i..end).ok_or("truncated string")?;
        self.i = end;
        Ok(s)
    }
    fn str(&mut self) -> Result<String, String> {
        let s = self.bytes()?;
        std::str::from_utf8(s).map(str::to_owned).map_err(|_| "invalid UTF-8".into())
    }
    fn list(&mut self) -> Result<Vec<String>, String> {
        let n = self.var()?;
        if n > self.b.len() as u64 {
            return Err("list count too large".into());
        }
        (0..n).map(|_| self.str()).collect()
    }
}

/// Decodes an entry plaintext; `time_us` is the frame's clear-text time.
pub(crate) fn decode(b: &[u8], time_us: i64) -> Result<AuditEvent, String> {
    let mut r = Rd { b, i: 0 };
    if r.u8()? != VERSION {
        return Err("unknown event encoding version".into());
    }
    let kind = *KINDS.get(r.u8()? as usize).ok_or("unknown event kind")?;
    let outcome = *OUTCOMES.get(r.u8()? as usize).ok_or("unknown outcome")?;
    let p = u16::from_le_bytes([r.u8()?, r.u8()?]);
    let time = DateTime::from_timestamp_micros(time_us).ok_or("time out of range")?;
    let mut e = AuditEvent::new(kind, String::new(), String::new(), outcome);
    e.time = time;
    e.node = r.str()?;
    e.user = r.str()?;
    e.department = r.str()?;
    let opt = |r: &mut Rd<'_>, bit: u16| -> Result<Option<String>, String> {
        if p & bit != 0 { r.str().map(Some) } else { Ok(None) }
    };
    e.session = opt(&mut r, P_SESSION)?;
    e.client_addr = opt(&mut r, P_CLIENT)?;
    e.rule = opt(&mut r, P_RULE)?;
    e.rule_version = opt(&mut r, P_RULE_VERSION)?;
    e.sql = opt(&mut r, P_SQL)?;
    if p & P_ROWS != 0 {
        e.rows = Some(r.var()?);
    }
    if p & P_DURATION != 0 {
        e.duration_ms = Some(r.var()?);
    }
    if p & P_DETAIL != 0 {
        e.detail = serde_json::from_slice(r.bytes()?).map_err(|x| format!("detail JSON: {x}"))?;
    }
    let list = |r: &mut Rd<'_>, bit: u16| -> Result<Vec<String>, String> {
        if p & bit != 0 { r.list() } else { Ok(Vec::new()) }
    };
    e.tables = list(&mut r, P_TABLES)?;
    e.columns = list(&mut r, P_COLUMNS)?;
    e.masks = list(&mut r, P_MASKS)?;
    e.filters = list(&mut r, P_FILTERS)?;
    if r.i != b.len() {
        return Err("trailing bytes after event".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_full_and_empty() {
        let mut e = AuditEvent::new(EventKind::PolicyChange, "李四", "环保局", Outcome::Failure);
        e.time = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        e.session = Some("s".into());
        e.client_addr = Some("1.2.3.4".into());
        e.rule = Some("r".into());
        e.rule_version = Some("v".into());
        e.sql = Some("SELECT 1".into());
        e.rows = Some(300);
        e.duration_ms = Some(u64::MAX);
        e.detail = serde_json::json!({"a": [1, 2, "x"]});
        e.tables = vec!["t1".into(), "t2".into()];
        e.columns = vec!["c".into()];
        e.masks = vec!["m".into()];
        e.filters = vec!["f = 1".into()];
        let mut b = Vec::new();
        encode(&e, "n1", &mut b).expect("encode");
        let d = decode(&b, e.time.timestamp_micros()).expect("decode");
        let mut want = e.clone();
        want.node = "n1".into();
        assert_eq!(d, want);

        let e2 = AuditEvent::new(EventKind::Other, "", "", Outcome::Allow);
        let mut b = Vec::new();
        encode(&e2, "", &mut b).expect("encode");
        let d = decode(&b, 0).expect("decode");
        assert_eq!(d.kind, EventKind::Other);
        assert!(d.sql.is_none() && d.tables.is_empty() && d.detail.is_null());
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut e = AuditEvent::new(EventKind::Query, "u", "d", Outcome::Allow);
        e.tables = vec!["x".into(); 3];
        e.detail = serde_json::json!(1);
        let mut b = Vec::new();
        encode(&e, "n", &mut b).expect("encode");
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], 0).is_err());
        }
        for i in 0..b.len() {
            for x in [0x00u8, 0x7f, 0x80, 0xff] {
                let mut c = b.clone();
                c[i] = x;
                let _ = decode(&c, 0);
            }
        }
    }
}
