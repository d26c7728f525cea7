//! Functional tests: round trip, search, export, keys, rotation, crash recovery, GM, proofs, tail.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::*;
use lianqin_audit::{
    AuditConfig, AuditError, AuditFilter, AuditLog, CryptoSuite, EventKind, ExportFormat, FsyncPolicy, MasterKey,
    Outcome, Rotation, Tail, verify, verify_export,
};

#[test]
fn round_trip_search_and_export() {
    let t = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(t.path(), cfg(CryptoSuite::Standard)).expect("open");
    for i in 1..=60 {
        assert_eq!(log.append(event(i)).expect("append"), i);
    }
    let all: Vec<_> = log.search(AuditFilter::all()).expect("search").collect::<Result<_, _>>().expect("ok");
    assert_eq!(all.len(), 60);
    assert_eq!(all[9].seq, 10);
    assert_eq!(all[9].event, {
        let mut e = event(10);
        e.node = "node-a".into();
        e.time = all[9].event.time; // stored with microsecond precision
        e
    });
    let denials = log
        .search(AuditFilter { kind: Some(EventKind::Denial), outcome: Some(Outcome::Deny), ..Default::default() })
        .expect("search")
        .count();
    assert_eq!(denials, 20);
    let forestry_alice = log
        .search(AuditFilter { department: Some("forestry".into()), user: Some("alice".into()), ..Default::default() })
        .expect("search")
        .count();
    assert_eq!(forestry_alice, 6); // i % 10 == 0
    let text = log
        .search(AuditFilter {
            text: Some("site = 42".into()),
            table: Some("WATER_QUALITY".into()),
            ..Default::default()
        })
        .expect("search")
        .collect::<Result<Vec<_>, _>>()
        .expect("ok");
    assert_eq!(text.len(), 1);
    assert_eq!(text[0].seq, 42);
    let range =
        log.search(AuditFilter { from_seq: Some(5), to_seq: Some(9), ..Default::default() }).expect("search").count();
    assert_eq!(range, 5);
    let t0 = all[0].event.time;
    let none_before = log.search(AuditFilter { to: Some(t0), ..Default::default() }).expect("search").count();
    assert_eq!(none_before, 0);

    let mut csv = Vec::new();
    assert_eq!(log.export(AuditFilter::all(), ExportFormat::Csv, &mut csv).expect("csv"), 60);
    let csv = String::from_utf8(csv).expect("utf8");
    assert!(csv.starts_with("seq,time,kind,node,user,department"));
    assert_eq!(csv.lines().count(), 61);
    let mut jl = Vec::new();
    assert_eq!(log.export(AuditFilter::all(), ExportFormat::JsonLines, &mut jl).expect("jl"), 60);
    let first: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&jl).expect("utf8").lines().next().expect("line")).expect("json");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "query");
    log.close().expect("close");
    assert!(matches!(log.append(event(1)), Err(AuditError::WriterFailed { .. })));
    let r = verify(t.path(), &key()).expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
}

#[test]
fn ciphertext_on_disk_has_no_plaintext() {
    let t = tempfile::tempdir().expect("tmp");
    make_log(t.path(), CryptoSuite::Standard, 20);
    for f in std::fs::read_dir(t.path()).expect("ls") {
        let d = std::fs::read(f.expect("ent").path()).expect("read");
        let s = String::from_utf8_lossy(&d);
        assert!(!s.contains(SECRET_USER));
        assert!(!s.contains("water_quality"));
    }
}

#[test]
fn wrong_and_missing_key_give_clear_errors_without_plaintext() {
    let t = tempfile::tempdir().expect("tmp");
    make_log(t.path(), CryptoSuite::Standard, 20);
    let wrong = MasterKey::from_bytes([7; 32]);
    let errs = vec![
        AuditLog::open(t.path(), AuditConfig { master_key: wrong.clone(), ..cfg(CryptoSuite::Standard) })
            .expect_err("open fails"),
        verify(t.path(), &wrong).expect_err("verify fails"),
        lianqin_audit::read(t.path(), &wrong, AuditFilter::all()).err().expect("read fails"),
        Tail::open(t.path(), &wrong, 1).expect_err("tail fails"),
    ];
    for e in errs {
        assert!(matches!(e, AuditError::WrongKey { .. }), "{e}");
        let msg = format!("{e} {e:?}");
        assert!(msg.contains("wrong audit master key"), "{msg}");
        assert!(!msg.contains(SECRET_USER) && !msg.contains("SELECT"), "{msg}");
        assert!(!msg.contains(&hex::encode([7u8; 32])) && !msg.contains(&hex::encode([0x42u8; 32])), "{msg}");
    }
    // Missing key: unset environment variable, missing file.
    let e = MasterKey::from_env_var("LIANQIN_AUDIT_KEY_SURELY_UNSET_FOR_TEST").expect_err("missing");
    assert!(matches!(e, AuditError::MissingKey { .. }), "{e}");
    assert!(e.to_string().contains("LIANQIN_AUDIT_KEY_SURELY_UNSET_FOR_TEST"));
    let e = MasterKey::from_file(&t.path().join("no-such-key")).expect_err("missing");
    assert!(matches!(e, AuditError::MissingKey { .. }), "{e}");
    // Bad key text does not echo the text.
    let e = MasterKey::parse("not-a-key-but-a-secret-zz").expect_err("bad");
    assert!(!e.to_string().contains("not-a-key-but-a-secret-zz"));
    // Key from a file (hex text) works.
    let kf = t.path().join("key.hex");
    std::fs::write(&kf, hex::encode([0x42u8; 32])).expect("write");
    let k = MasterKey::from_file(&kf).expect("key");
    assert!(verify(t.path(), &k).expect("verify").is_ok());
}

#[test]
fn debug_output_redacts_keys() {
    let c = cfg(CryptoSuite::Standard);
    let s = format!("{c:?}");
    assert!(s.contains("<redacted>"));
    assert!(!s.contains("66, 66") && !s.contains(&hex::encode([0x42u8; 32])), "{s}");
    let t = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(t.path(), c).expect("open");
    let s = format!("{log:?}");
    assert!(!s.contains(&hex::encode([0x42u8; 32])));
}

#[test]
fn key_rotation_old_and_new_entries_decrypt_and_verify() {
    let t = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Standard);
    c.rotate_every = Rotation { entries: 7, interval: None };
    let log = AuditLog::open(t.path(), c.clone()).expect("open");
    for i in 1..=50 {
        log.append(event(i)).expect("append");
    }
    log.close().expect("close");
    // Time-based rotation in a second session.
    c.rotate_every = Rotation { entries: 0, interval: Some(Duration::from_millis(5)) };
    let log = AuditLog::open(t.path(), c).expect("reopen");
    for i in 51..=60 {
        log.append(event(i)).expect("append");
        std::thread::sleep(Duration::from_millis(6));
    }
    log.close().expect("close");
    let r = verify(t.path(), &key()).expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
    // 50/7 → 8 keys in session one; ≥ 10 in session two.
    assert!(r.keys >= 18, "keys {}", r.keys);
    let recs: Vec<_> = lianqin_audit::read(t.path(), &key(), AuditFilter::all())
        .expect("read")
        .collect::<Result<_, _>>()
        .expect("all decrypt");
    assert_eq!(recs.len(), 60);
    assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
}

#[test]
fn crash_with_partial_frame_recovers_and_continues() {
    let t = tempfile::tempdir().expect("tmp");
    make_log(t.path(), CryptoSuite::Standard, 23);
    // Append raw bytes of a partial frame, as a crash mid-write would leave.
    let p = seg(t.path(), 1);
    let d = std::fs::read(&p).expect("read");
    let last = *entry_frames(&d).last().expect("frame");
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).expect("open");
    f.write_all(&d[last.0..last.0 + (last.1 - last.0) / 2]).expect("write");
    drop(f);
    let before = verify(t.path(), &key()).expect("verify");
    assert!(before.is_ok(), "{:?}", before.problems);
    assert!(before.torn_tail.is_some());

    let log = AuditLog::open(t.path(), cfg(CryptoSuite::Standard)).expect("reopen");
    let rec = log.recovery().clone();
    assert_eq!(rec.truncated_bytes as usize, (last.1 - last.0) / 2);
    assert_eq!(rec.last_seq, 23);
    assert!(rec.saved_to.as_ref().is_some_and(|p| p.exists()));
    for i in 24..=40 {
        assert_eq!(log.append(event(i)).expect("append"), i);
    }
    log.close().expect("close");
    let r = verify(t.path(), &key()).expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(r.torn_tail.is_none());
    assert_eq!(r.last_seq, 40);
    assert_eq!(lianqin_audit::read(t.path(), &key(), AuditFilter::all()).expect("read").count(), 40);
}

#[test]
fn gm_suite_round_trip() {
    let t = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Gm);
    c.rotate_every = Rotation { entries: 9, interval: None };
    let log = AuditLog::open(t.path(), c).expect("open");
    assert_eq!(log.suite(), CryptoSuite::Gm);
    for i in 1..=30 {
        log.append(event(i)).expect("append");
    }
    let proof = log.export_with_proof(3, 8).expect("proof");
    let pk = log.public_key();
    assert_eq!(pk.len(), 65); // SEC1 uncompressed SM2 point
    log.close().expect("close");
    let recs = verify_export(&proof, &pk).expect("proof verifies");
    assert_eq!(recs.len(), 6);
    let r = verify(t.path(), &key()).expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.entries, 30);
    let n = lianqin_audit::read(t.path(), &key(), AuditFilter::all()).expect("read").count();
    assert_eq!(n, 30);
    // The header records the suite: opening with the other suite is refused.
    assert!(matches!(AuditLog::open(t.path(), cfg(CryptoSuite::Standard)), Err(AuditError::SuiteMismatch { .. })));
    let h = std::fs::read_to_string(t.path().join("audit.header")).expect("header");
    assert!(h.contains("\"suite\": \"gm\""));
}

#[test]
fn export_with_proof_verifies_and_rejects_tampering() {
    let t = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(t.path(), cfg(CryptoSuite::Standard)).expect("open");
    for i in 1..=45 {
        log.append(event(i)).expect("append");
    }
    let pk = log.public_key();
    let proof = log.export_with_proof(12, 17).expect("proof");
    assert_eq!(proof.checkpoint.seq, 20);
    assert_eq!(proof.following_leaves.len(), 3);
    let json = serde_json::to_string(&proof).expect("json");
    let proof: lianqin_audit::ExportProof = serde_json::from_str(&json).expect("parse");
    let recs = verify_export(&proof, &pk).expect("verifies");
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![12, 13, 14, 15, 16, 17]);
    // Not yet covered by a checkpoint: one is made.
    let p2 = log.export_with_proof(41, 45).expect("proof 2");
    assert_eq!(p2.checkpoint.seq, 45);
    verify_export(&p2, &pk).expect("verifies");
    // Tampering.
    let mut bad = proof.clone();
    bad.entries.swap(0, 1);
    assert!(verify_export(&bad, &pk).is_err());
    let mut bad = proof.clone();
    bad.entries.remove(2);
    bad.to_seq -= 1;
    assert!(verify_export(&bad, &pk).is_err());
    let mut bad = proof.clone();
    bad.following_leaves[0] = hex::encode([0u8; 32]);
    assert!(verify_export(&bad, &pk).is_err());
    let mut bad = proof.clone();
    bad.checkpoint.seq += 1;
    assert!(verify_export(&bad, &pk).is_err());
    let mut other = proof.clone();
    other.public_key = vec![1; 32];
    assert!(verify_export(&other, &[1; 32]).is_err());
    assert!(verify_export(&proof, &[9; 32]).is_err());
}

#[test]
fn tail_follows_new_entries() {
    let t = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Standard);
    c.segment_max_bytes = 8192;
    c.rotate_every = Rotation { entries: 13, interval: None };
    let log = AuditLog::open(t.path(), c).expect("open");
    for i in 1..=5 {
        log.append(event(i)).expect("append");
    }
    let mut tail = log.tail(3).expect("tail");
    let got = tail.poll(100).expect("poll");
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(tail.poll(100).expect("poll").is_empty());
    // A reader in "another process" (no handle) sees flushed entries.
    let mut ext = Tail::open(t.path(), &key(), 1).expect("ext");
    for i in 6..=100 {
        log.append(event(i)).expect("append");
    }
    let got = tail.poll(1000).expect("poll");
    assert_eq!(got.len(), 95);
    assert_eq!(got.last().map(|r| r.seq), Some(100));
    log.flush().expect("flush");
    let got = ext.poll(1000).expect("poll");
    assert_eq!(got.len(), 100, "segments rolled and keys rotated meanwhile");
    assert!(seg(t.path(), 3).exists());
}

#[test]
fn concurrent_appends_with_group_commit() {
    let t = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Standard);
    c.fsync = FsyncPolicy::GroupCommit { interval: Duration::from_millis(2) };
    c.checkpoint_every = 50;
    let log = AuditLog::open(t.path(), c).expect("open");
    let mut hs = Vec::new();
    for th in 0..4u64 {
        let l = log.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..250u64 {
                let e = event(th * 1000 + i);
                if i % 50 == 0 {
                    let s = l.append_durable(e).expect("durable");
                    assert!(l.durable_seq() >= s);
                } else {
                    l.append(e).expect("append");
                }
            }
        }));
    }
    for h in hs {
        h.join().expect("join");
    }
    assert_eq!(log.last_seq(), 1000);
    log.sync().expect("sync");
    assert_eq!(log.durable_seq(), 1000);
    drop(log); // last handle: final checkpoint + fsync
    let r = verify(t.path(), &key()).expect("verify");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert_eq!(r.entries, 1000);
    assert_eq!(r.checkpoints, 20);
}

#[test]
fn every_append_policy_is_durable() {
    let t = tempfile::tempdir().expect("tmp");
    let mut c = cfg(CryptoSuite::Standard);
    c.fsync = FsyncPolicy::EveryAppend;
    let log = AuditLog::open(t.path(), c).expect("open");
    let s = log.append(event(1)).expect("append");
    assert_eq!(log.durable_seq(), s);
}

// ---- SIGKILL crash test: the test binary re-executes itself as the writer child. ----

const CHILD_ENV: &str = "LIANQIN_AUDIT_TEST_CHILD_DIR";

/// Body of the child process (does nothing in a normal test run).
#[test]
fn child_writer_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let mut c = cfg(CryptoSuite::Standard);
    c.fsync = FsyncPolicy::GroupCommit { interval: Duration::from_millis(1) };
    c.checkpoint_every = 500;
    c.write_buffer_bytes = 8 * 1024; // many partial writes to the OS
    c.segment_max_bytes = 256 * 1024;
    c.rotate_every = Rotation { entries: 3000, interval: None };
    let log = AuditLog::open(&dir, c).expect("child open");
    let mut i = 0u64;
    loop {
        i += 1;
        if i.is_multiple_of(1000) {
            log.append_durable(event(i)).expect("child durable");
        } else {
            log.append(event(i)).expect("child append");
        }
    }
}

#[test]
fn sigkill_during_heavy_append_then_reopen_verify_continue() {
    let t = tempfile::tempdir().expect("tmp");
    let exe = std::env::current_exe().expect("exe");
    for round in 0..2 {
        let mut child = std::process::Command::new(&exe)
            .args(["child_writer_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, t.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        // Wait until the child has written a good amount.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let total: u64 = std::fs::read_dir(t.path())
                .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            if total > (round + 1) * 2_000_000 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(!status.success());

        let r = verify(t.path(), &key()).expect("verify after kill");
        eprintln!("round {round}: {} entries survived SIGKILL, torn tail: {:?}", r.entries, r.torn_tail);
        assert!(r.is_ok(), "round {round}: {:?}", r.problems);
        assert!(r.entries > 1000, "child wrote too little: {}", r.entries);
        if round == 1 {
            // A SIGKILL leaves whole frames (each frame goes out in one write); also emulate the
            // torn frame a power loss can leave: half of a frame at the end of the last segment.
            let mut segs: Vec<_> = std::fs::read_dir(t.path())
                .expect("ls")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-")))
                .collect();
            segs.sort();
            let last_seg = segs.last().expect("segment").clone();
            let d = std::fs::read(&last_seg).expect("read");
            let fr = frames(&d);
            let (a, b) = *fr.last().expect("a frame");
            let mut f = std::fs::OpenOptions::new().append(true).open(&last_seg).expect("open");
            f.write_all(&d[a..a + (b - a) / 2]).expect("write");
        }
        let log = AuditLog::open(t.path(), cfg(CryptoSuite::Standard)).expect("reopen after kill");
        eprintln!("round {round}: recovery {:?}", log.recovery());
        if round == 1 {
            assert!(log.recovery().truncated_bytes > 0);
        }
        let last = log.last_seq();
        assert_eq!(last, r.last_seq);
        assert_eq!(log.append(event(1)).expect("continue"), last + 1);
        log.close().expect("close");
        let r2 = verify(t.path(), &key()).expect("verify after continue");
        assert!(r2.is_ok(), "{:?}", r2.problems);
        assert_eq!(r2.last_seq, last + 1);
        assert!(r2.torn_tail.is_none());
    }
}

#[test]
fn handle_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<AuditLog>();
}
