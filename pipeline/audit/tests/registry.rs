//! Deletion detection: the signed stream registry of an audit root and
//! anchors kept outside it. Each test also shows that the per-stream check
//! alone (the behaviour before the registry) does not see the manipulation.

mod common;

use std::path::Path;

use common::*;
use lianqin_audit::{
    AuditError, AuditLog, CryptoSuite, MasterKey, Problem, ProblemKind, REGISTRY_FILE, RootReport, anchor, verify,
    verify_root, verify_with_anchor,
};

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read")
}
fn write(p: &Path, d: &[u8]) {
    std::fs::write(p, d).expect("write")
}

/// Creates (or continues) stream `name` under `root` with entries `from..=to` (closed on return).
fn make_stream(root: &Path, name: &str, from: u64, to: u64) {
    let log = AuditLog::open_stream(root, name, cfg(CryptoSuite::Standard)).expect("open_stream");
    for i in from..=to {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
}

/// What `lianqin audit verify` did before the registry: each directory on its own.
fn old_verify_passes(root: &Path) -> bool {
    let mut n = 0;
    for e in std::fs::read_dir(root).expect("ls").flatten() {
        if e.path().is_dir() {
            n += 1;
            if !verify(e.path(), &key()).expect("verify").is_ok() {
                return false;
            }
        }
    }
    n > 0
}

fn find(r: &RootReport, kind: ProblemKind) -> Option<&Problem> {
    r.all_problems().into_iter().find(|p| p.kind == kind)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

fn replace_dir(dst: &Path, src: &Path) {
    std::fs::remove_dir_all(dst).expect("rm");
    copy_dir(src, dst);
}

#[test]
fn clean_root_verifies_and_lists_streams() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 25);
    make_stream(t.path(), "cli", 1, 7);
    make_stream(t.path(), "hub", 26, 31); // reopen continues the same registration
    let r = verify_root(t.path(), &key()).expect("verify_root");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let reg = r.registry.as_ref().expect("registry");
    assert_eq!(reg.active_streams, 2);
    assert_eq!(r.streams.len(), 2);
    assert!(r.streams.iter().all(|s| s.registered));
    let hub = r.streams.iter().find(|s| s.stream == "hub").expect("hub");
    assert_eq!(hub.report.last_seq, 31);
    let streams = lianqin_audit::registered_streams(t.path(), &key()).expect("rs").expect("some");
    let hub = streams.iter().find(|s| s.stream == "hub").expect("hub");
    assert_eq!(hub.last_checkpoint.as_ref().map(|c| c.seq), Some(31));
}

#[test]
fn deleted_stream_directory_fails_naming_the_stream() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 20);
    make_stream(t.path(), "cli", 1, 5);
    std::fs::remove_dir_all(t.path().join("cli")).expect("rm");
    assert!(old_verify_passes(t.path()), "the per-stream check alone does not see a deleted stream");
    let r = verify_root(t.path(), &key()).expect("verify_root");
    assert!(!r.is_ok());
    let p = find(&r, ProblemKind::StreamMissing).expect("StreamMissing");
    assert!(p.detail.contains("\"cli\""), "{p}");
    assert_eq!(p.file, t.path().join("cli"));
    // Emptied instead of deleted: the same.
    make_stream(t.path(), "ecology", 1, 3);
    for e in std::fs::read_dir(t.path().join("ecology")).expect("ls").flatten() {
        std::fs::remove_file(e.path()).expect("rm");
    }
    let r = verify_root(t.path(), &key()).expect("verify_root");
    let missing: Vec<_> = r.problems.iter().filter(|p| p.kind == ProblemKind::StreamMissing).collect();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing.iter().any(|p| p.detail.contains("\"ecology\"") && p.detail.contains("emptied")));
    // A writer does not silently start a new log in place of the lost one.
    let e = AuditLog::open_stream(t.path(), "ecology", cfg(CryptoSuite::Standard)).expect_err("refused");
    assert!(matches!(e, AuditError::Registry { .. }), "{e}");
    // An officer can retire the lost stream after investigating it.
    lianqin_audit::retire_stream(t.path(), &key(), "cli", "lost, see case 2026-17").expect("retire");
    lianqin_audit::retire_stream(t.path(), &key(), "ecology", "lost, see case 2026-17").expect("retire");
    let r = verify_root(t.path(), &key()).expect("verify_root");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert_eq!(r.registry.as_ref().expect("reg").retired_streams.len(), 2);
    make_stream(t.path(), "ecology", 1, 2);
    assert!(verify_root(t.path(), &key()).expect("verify_root").is_ok());
}

#[test]
fn cut_entries_with_checkpoints_log_removed_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 35); // checkpoints at 10, 20, 30 and 35 (close)
    let dir = t.path().join("hub");
    let p = seg(&dir, 1);
    let d = read(&p);
    let f = entry_frames(&d)[22]; // keep seq 1..=22
    write(&p, &d[..f.0]);
    std::fs::remove_file(dir.join("checkpoints.log")).expect("rm");
    assert!(old_verify_passes(t.path()), "the per-stream check alone does not see the cut");
    let r = verify_root(t.path(), &key()).expect("verify_root");
    assert!(!r.is_ok());
    let cut = find(&r, ProblemKind::AnchorMismatch).expect("cut detected");
    assert_eq!(cut.seq, Some(23), "{cut}");
    assert!(cut.detail.contains("seq 35"), "{cut}");
    let cps = find(&r, ProblemKind::CheckpointSequence).expect("checkpoints.log removal detected");
    assert!(cps.detail.contains("\"hub\"") && cps.detail.contains("checkpoints.log has none"), "{cps}");
    // A writer refuses to continue (and so to paper over the cut with new checkpoints).
    let e = AuditLog::open_stream(t.path(), "hub", cfg(CryptoSuite::Standard)).expect_err("refused");
    assert!(matches!(e, AuditError::Truncated { checkpoint_seq: 35, log_end: 22, .. }), "{e}");
}

#[test]
fn checkpoints_log_removed_alone_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 12);
    std::fs::remove_file(t.path().join("hub").join("checkpoints.log")).expect("rm");
    assert!(old_verify_passes(t.path()));
    let r = verify_root(t.path(), &key()).expect("verify_root");
    assert!(find(&r, ProblemKind::CheckpointSequence).is_some(), "{:?}", r.all_problems());
    let e = AuditLog::open_stream(t.path(), "hub", cfg(CryptoSuite::Standard)).expect_err("refused");
    assert!(matches!(e, AuditError::Corrupt { .. }), "{e}");
}

#[test]
fn whole_root_rolled_back_is_caught_with_an_anchor() {
    let t = tempfile::tempdir().expect("tmp");
    let outside = tempfile::tempdir().expect("tmp");
    let root = t.path().join("audit");
    make_stream(&root, "hub", 1, 15);
    make_stream(&root, "cli", 1, 4);
    let backup = outside.path().join("backup");
    copy_dir(&root, &backup);
    make_stream(&root, "hub", 16, 40);
    make_stream(&root, "forestry", 1, 3);
    let anchor_path = outside.path().join("anchor.json");
    let a = anchor(&root, &key(), &anchor_path).expect("anchor");
    assert_eq!(a.streams.len(), 3);
    assert_eq!(a.streams["hub"].checkpoint.as_ref().map(|c| c.seq), Some(40));
    assert!(verify_with_anchor(&root, &key(), &a).expect("v").is_ok());

    replace_dir(&root, &backup);
    // Without the anchor an older consistent copy looks fine (documented limit)...
    let r = verify_root(&root, &key()).expect("verify_root");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    // ...against the anchor (read back from its file) it is caught.
    let a = lianqin_audit::Anchor::read(&anchor_path).expect("read anchor");
    let r = verify_with_anchor(&root, &key(), &a).expect("verify_with_anchor");
    assert!(!r.is_ok());
    let hub = find(&r, ProblemKind::AnchorMismatch).expect("hub shorter than its anchor");
    assert_eq!(hub.seq, Some(16), "{hub}");
    let gone = find(&r, ProblemKind::StreamMissing).expect("forestry missing");
    assert!(gone.detail.contains("\"forestry\""), "{gone}");
    assert!(find(&r, ProblemKind::RegistryRollback).is_some(), "{:?}", r.all_problems());
}

#[test]
fn anchor_catches_a_diverging_stream_and_registry() {
    let t = tempfile::tempdir().expect("tmp");
    let root = t.path().join("audit");
    make_stream(&root, "hub", 1, 12);
    let a = lianqin_audit::build_anchor(&root, &key()).expect("anchor");
    let json = a.to_json();
    assert!(json.contains("lianqin-audit-anchor/v1") && json.contains("\"hub\""));
    // Recreate everything from scratch (new registry, new logs of the same length).
    std::fs::remove_dir_all(&root).expect("rm");
    make_stream(&root, "hub", 1, 12);
    assert!(verify_root(&root, &key()).expect("v").is_ok());
    let r = verify_with_anchor(&root, &key(), &lianqin_audit::Anchor::from_json(&json).expect("parse")).expect("v");
    assert!(find(&r, ProblemKind::StreamReplaced).is_some(), "{:?}", r.all_problems());
    assert!(find(&r, ProblemKind::RegistryRollback).is_some(), "{:?}", r.all_problems());
}

#[test]
fn deleted_registry_fails_through_the_stream_markers() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 8);
    make_stream(t.path(), "cli", 1, 8);
    let a = lianqin_audit::build_anchor(t.path(), &key()).expect("anchor");
    std::fs::remove_file(t.path().join(REGISTRY_FILE)).expect("rm");
    std::fs::remove_dir_all(t.path().join("cli")).expect("rm");
    let r = verify_root(t.path(), &key()).expect("v");
    let p = find(&r, ProblemKind::RegistryMissing).expect("RegistryMissing");
    assert!(p.detail.contains("\"hub\""), "{p}");
    // A writer does not start a fresh registry over streams of the old one.
    let e = AuditLog::open_stream(t.path(), "hub", cfg(CryptoSuite::Standard)).expect_err("refused");
    assert!(matches!(e, AuditError::Registry { .. }), "{e}");
    // Registry and markers removed: only the anchor still tells.
    std::fs::remove_file(t.path().join("hub").join("registry.ref")).expect("rm");
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok() && !r.warnings.is_empty(), "{:?} {:?}", r.all_problems(), r.warnings);
    let r = verify_with_anchor(t.path(), &key(), &a).expect("v");
    assert!(find(&r, ProblemKind::RegistryMissing).is_some(), "{:?}", r.all_problems());
    assert!(find(&r, ProblemKind::StreamMissing).is_some_and(|p| p.detail.contains("\"cli\"")));
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Frame spans of the registry file.
fn registry_records(root: &Path) -> (Vec<u8>, Vec<(usize, usize)>) {
    let d = read(&root.join(REGISTRY_FILE));
    let f = frames(&d);
    (d, f)
}

#[test]
fn edited_registry_record_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 5);
    make_stream(t.path(), "cli", 1, 5);
    let (d, fr) = registry_records(t.path());
    assert!(fr.len() >= 5, "{} records", fr.len());
    // Rename stream "cli" to "clj" in its record (the attacker fixes the CRC).
    let at = find_bytes(&d, b"\"stream\":\"cli\"").expect("cli record");
    let span = *fr.iter().find(|(s, e)| *s <= at && at < *e).expect("span");
    let mut e = d.clone();
    e[at + 12] = b'j';
    fix_crc(&mut e, span);
    write(&t.path().join(REGISTRY_FILE), &e);
    let r = verify_root(t.path(), &key()).expect("v");
    let p = find(&r, ProblemKind::RegistryCorrupt).expect("RegistryCorrupt");
    assert!(p.detail.contains("signature"), "{p}");
    assert_eq!(p.offset, Some(span.0 as u64));
    assert!(find(&r, ProblemKind::StreamUnregistered).is_some_and(|p| p.detail.contains("\"cli\"")));
    // Writers refuse a damaged registry.
    assert!(matches!(
        AuditLog::open_stream(t.path(), "hub", cfg(CryptoSuite::Standard)),
        Err(AuditError::Registry { .. })
    ));
}

#[test]
fn removed_registry_record_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 5);
    make_stream(t.path(), "cli", 1, 5);
    make_stream(t.path(), "hub", 6, 9);
    let (d, fr) = registry_records(t.path());
    // Drop the record that registered "cli".
    let at = find_bytes(&d, b"\"kind\":\"stream\",\"stream\":\"cli\"").expect("cli record");
    let span = *fr.iter().find(|(s, e)| *s <= at && at < *e).expect("span");
    let mut e = d[..span.0].to_vec();
    e.extend_from_slice(&d[span.1..]);
    write(&t.path().join(REGISTRY_FILE), &e);
    let r = verify_root(t.path(), &key()).expect("v");
    let p = find(&r, ProblemKind::RegistryCorrupt).expect("RegistryCorrupt");
    assert!(p.detail.contains("removed"), "{p}");
}

#[test]
fn registry_forged_with_another_key_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 5);
    // An attacker with another master key builds a consistent registry that omits "hub".
    let forged = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Standard);
    c.master_key = MasterKey::from_bytes([0x17; 32]);
    let log = AuditLog::open_stream(forged.path(), "other", c).expect("open");
    log.close().expect("close");
    std::fs::copy(forged.path().join(REGISTRY_FILE), t.path().join(REGISTRY_FILE)).expect("copy");
    let r = verify_root(t.path(), &key()).expect("v");
    let p = find(&r, ProblemKind::RegistryCorrupt).expect("RegistryCorrupt");
    assert!(p.detail.contains("master key"), "{p}");
}

#[test]
fn torn_registry_tail_is_a_note_and_cut_by_the_next_writer() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 5);
    let (d, fr) = registry_records(t.path());
    let (a, b) = *fr.last().expect("record");
    let mut e = d.clone();
    e.extend_from_slice(&d[a..a + (b - a) / 2]); // a crash mid-append
    write(&t.path().join(REGISTRY_FILE), &e);
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert!(r.registry.as_ref().and_then(|g| g.torn_tail.as_ref()).is_some());
    make_stream(t.path(), "cli", 1, 2);
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert!(r.registry.as_ref().is_some_and(|g| g.torn_tail.is_none() && g.active_streams == 2));
}

#[test]
fn unregistered_stream_directory_fails() {
    let t = tempfile::tempdir().expect("tmp");
    make_stream(t.path(), "hub", 1, 5);
    make_log(&t.path().join("sneaky"), CryptoSuite::Standard, 5); // old API: no registration
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(find(&r, ProblemKind::StreamUnregistered).is_some_and(|p| p.detail.contains("\"sneaky\"")));
}

#[test]
fn legacy_root_gets_a_registry_adopting_its_streams() {
    let t = tempfile::tempdir().expect("tmp");
    make_log(&t.path().join("hub"), CryptoSuite::Standard, 14);
    make_log(&t.path().join("cli"), CryptoSuite::Standard, 3);
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert!(r.registry.is_none());
    assert!(r.warnings.iter().any(|w| w.contains("no stream registry")), "{:?}", r.warnings);
    // The first writer of the new version creates the registry and adopts both.
    make_stream(t.path(), "demo-hub", 1, 2);
    let streams = lianqin_audit::registered_streams(t.path(), &key()).expect("rs").expect("some");
    assert_eq!(streams.len(), 3);
    let hub = streams.iter().find(|s| s.stream == "hub").expect("hub");
    assert!(hub.adopted);
    assert_eq!(hub.last_checkpoint.as_ref().map(|c| c.seq), Some(14));
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok() && r.warnings.is_empty(), "{:?} {:?}", r.all_problems(), r.warnings);
    std::fs::remove_dir_all(t.path().join("cli")).expect("rm");
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(find(&r, ProblemKind::StreamMissing).is_some_and(|p| p.detail.contains("\"cli\"")));
}

#[test]
fn gm_streams_register_and_are_checked() {
    let t = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open_stream(t.path(), "gm", cfg(CryptoSuite::Gm)).expect("open");
    for i in 1..=12 {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    assert!(verify_root(t.path(), &key()).expect("v").is_ok());
    std::fs::remove_dir_all(t.path().join("gm")).expect("rm");
    assert!(find(&verify_root(t.path(), &key()).expect("v"), ProblemKind::StreamMissing).is_some());
}

#[test]
fn threads_creating_streams_concurrently_all_register() {
    let t = tempfile::tempdir().expect("tmp");
    let root = t.path().to_path_buf();
    let hs: Vec<_> = (0..6)
        .map(|n| {
            let root = root.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    make_stream(&root, &format!("s{n}"), round * 12 + 1, round * 12 + 12);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("thread");
    }
    let r = verify_root(&root, &key()).expect("v");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert_eq!(r.registry.as_ref().map(|g| g.active_streams), Some(6));
    assert!(r.streams.iter().all(|s| s.report.last_seq == 36));
}

const CHILD_ROOT: &str = "LIANQIN_AUDIT_TEST_REGISTRY_ROOT";
const CHILD_STREAM: &str = "LIANQIN_AUDIT_TEST_REGISTRY_STREAM";

/// Body of the child processes (does nothing in a normal test run).
#[test]
fn child_stream_creator() {
    let (Ok(root), Ok(stream)) = (std::env::var(CHILD_ROOT), std::env::var(CHILD_STREAM)) else { return };
    for round in 0..5 {
        let name = format!("{stream}-{round}");
        make_stream(Path::new(&root), &name, 1, 11);
    }
}

#[test]
fn processes_creating_streams_concurrently_all_register() {
    let t = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = ["p", "q", "r"]
        .iter()
        .map(|s| {
            std::process::Command::new(&exe)
                .args(["child_stream_creator", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ROOT, t.path())
                .env(CHILD_STREAM, s)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let r = verify_root(t.path(), &key()).expect("v");
    assert!(r.is_ok(), "{:?}", r.all_problems());
    assert_eq!(r.registry.as_ref().map(|g| g.active_streams), Some(15));
    assert_eq!(r.streams.len(), 15);
}
