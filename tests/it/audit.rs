//! The hub's audit trail end to end: connector runs, quarantine decisions,
//! queries and audit reads are recorded, encrypted and verifiable with the
//! `lianqin audit` commands a security officer uses.

use std::process::Command;

use lianqin_audit::{AuditFilter, EventKind};
use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;
use lianqin_tests::lianqin_bin;

fn small() -> SimConfig {
    SimConfig { incidents: 10, tickets: 5, enterprises: 5, cases: 5, env_files: 1, env_rows_per_file: 5, ..Default::default() }
}

fn events(d: &std::path::Path, kind: EventKind) -> Vec<lianqin_audit::AuditRecord> {
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut out = Vec::new();
    for s in lianqin_pipeline::audit::streams(d) {
        for r in lianqin_audit::read(&s, &key, AuditFilter { kind: Some(kind), ..Default::default() }).unwrap() {
            out.push(r.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_leaves_an_encrypted_verifiable_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    let truth = sim.truth();
    sim.shutdown().await;

    // Connector runs: one per source pass.
    let runs = events(d, EventKind::ConnectorRun);
    assert_eq!(runs.len(), 6, "{runs:?}");
    // Quarantine decisions: one per quarantined record, with its reason.
    let q = events(d, EventKind::Quarantine);
    assert_eq!(q.len(), truth.broken.len());
    assert!(q.iter().all(|r| r.event.detail["reason"].as_str().is_some_and(|s| !s.is_empty())));
    // Hub start is a config event.
    assert!(!events(d, EventKind::ConfigChange).is_empty());

    // A query through the CLI is recorded with user, SQL, tables and rows.
    let out = Command::new(lianqin_bin())
        .args(["sql", "--as", "wang.police", "--data-dir"])
        .arg(d)
        .arg("SELECT count(*) AS n FROM matter WHERE stage = 'intake'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queries = events(d, EventKind::Query);
    let mine: Vec<_> = queries.iter().filter(|r| r.event.user == "wang.police").collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].event.rows, Some(1));
    assert!(mine[0].event.tables.contains(&"matter_history".to_string()), "{:?}", mine[0].event.tables);
    assert!(mine[0].event.sql.as_deref().unwrap().contains("stage = 'intake'"));

    // The log holds no plaintext: the SQL text is not in any segment.
    for s in lianqin_pipeline::audit::streams(d) {
        for f in std::fs::read_dir(&s).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(!bytes.windows(14).any(|w| w == b"stage = 'intak"), "plaintext in {}", f.path().display());
        }
    }

    // Security officer: verify passes, search finds the query, and the
    // search itself is audited.
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    let s = Command::new(lianqin_bin())
        .args(["audit", "search", "--as", "officer_li", "--user", "wang.police", "--data-dir"])
        .arg(d)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(String::from_utf8_lossy(&s.stdout).contains("stage = 'intake'"));
    let reads = events(d, EventKind::AuditRead);
    assert!(reads.iter().any(|r| r.event.user == "officer_li"));

    // Tampering: flip one byte in the middle of the hub's first segment.
    let hub_stream = d.join("audit").join("demo-hub");
    let mut seg: Vec<_> = std::fs::read_dir(&hub_stream)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    seg.sort();
    let first = &seg[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(first, &bytes).unwrap();
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(!v.status.success());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("FAIL") && text.contains("demo-hub"), "{text}");

    // A wrong key gives a clear error and no plaintext.
    let bad = Command::new(lianqin_bin())
        .args(["audit", "search", "--data-dir"])
        .arg(d)
        .env("LIANQIN_AUDIT_KEY", "00".repeat(32))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(err.contains("key"), "{err}");
    assert!(!String::from_utf8_lossy(&bad.stdout).contains("wang.police"));
}
