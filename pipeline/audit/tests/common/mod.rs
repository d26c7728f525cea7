#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use lianqin_audit::{
    AuditConfig, AuditEvent, AuditLog, CryptoSuite, EventKind, FsyncPolicy, MasterKey, Outcome, Rotation,
};

pub const SECRET_USER: &str = "secret-user-xyzzy";

pub fn key() -> MasterKey {
    MasterKey::from_bytes([0x42; 32])
}

pub fn cfg(suite: CryptoSuite) -> AuditConfig {
    let mut c = AuditConfig::new(key());
    c.suite = suite;
    c.node = "node-a".into();
    c.checkpoint_every = 10;
    c.checkpoint_interval = None;
    c.rotate_every = Rotation { entries: 1000, interval: None };
    c.fsync = FsyncPolicy::Never;
    c
}

pub fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(
        if i.is_multiple_of(3) { EventKind::Denial } else { EventKind::Query },
        if i.is_multiple_of(2) { "alice" } else { SECRET_USER },
        if i.is_multiple_of(5) { "forestry" } else { "ecology" },
        if i.is_multiple_of(3) { Outcome::Deny } else { Outcome::Allow },
    );
    e.sql = Some(format!("SELECT * FROM water_quality WHERE site = {i}"));
    e.tables = vec!["water_quality".into()];
    e.columns = vec!["site".into(), "cod".into()];
    e.rows = Some(i);
    e.duration_ms = Some(3);
    e.rule = Some("p-eco-1".into());
    e.rule_version = Some("v7".into());
    e.session = Some(format!("s-{}", i / 10));
    e.client_addr = Some("10.1.2.3:5555".into());
    e.detail = serde_json::json!({ "i": i });
    e
}

/// Creates a log with `n` entries (closed on return).
pub fn make_log(dir: &Path, suite: CryptoSuite, n: u64) {
    let log = AuditLog::open(dir, cfg(suite)).expect("open");
    for i in 1..=n {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
}

pub fn seg(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:06}.log"))
}

/// Frame spans (start, end) of a framed file.
pub fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let end = pos + 4 + len + 4;
        if end > data.len() {
            break;
        }
        out.push((pos, end));
        pos = end;
    }
    out
}

/// Recomputes the CRC of the frame at `span` (an attacker who knows the format).
pub fn fix_crc(data: &mut [u8], span: (usize, usize)) {
    let (s, e) = span;
    let crc = crc32(&data[s..e - 4]);
    data[e - 4..e].copy_from_slice(&crc.to_le_bytes());
}

pub fn crc32(b: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Entry frame spans of segment 1 (skipping the segment header frame).
pub fn entry_frames(data: &[u8]) -> Vec<(usize, usize)> {
    frames(data).into_iter().skip(1).collect()
}

pub fn wait_short() {
    std::thread::sleep(Duration::from_millis(20));
}
