//! Throughput benchmark: `cargo run --release -p lianqin-audit --example audit_bench -- N [gm] [dir]`.
//!
//! Appends N typical query events (encrypted + chained, group commit every
//! 10 ms, final fsync included in the time), then verifies the log in
//! chain-only mode (CRC + seq + SHA-256 chain + checkpoint signatures) and in
//! full mode (also every GCM tag), then reads everything back (decrypt + JSON
//! parse). Pin to one core with `taskset -c 0` to include the sync thread.

use std::time::{Duration, Instant};

use lianqin_audit::{
    AuditConfig, AuditEvent, AuditFilter, AuditLog, CryptoSuite, EventKind, FsyncPolicy, MasterKey, Outcome,
    VerifyOptions, verify_with,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let suite = if args.iter().any(|a| a == "gm") { CryptoSuite::Gm } else { CryptoSuite::Standard };
    let tmp;
    let dir = match args.iter().skip(2).find(|a| *a != "gm") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = std::env::temp_dir().join(format!("lianqin-audit-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let key = MasterKey::generate();
    let mut cfg = AuditConfig::new(key.clone());
    cfg.suite = suite;
    cfg.node = "bench-node".into();
    cfg.fsync = FsyncPolicy::GroupCommit { interval: Duration::from_millis(10) };
    cfg.checkpoint_every = 10_000;

    let mut template = AuditEvent::new(EventKind::Query, "zhang.san", "ecology-bureau", Outcome::Allow);
    template.session = Some("sess-7f3a9c".into());
    template.client_addr = Some("10.20.30.40:51234".into());
    template.rule = Some("eco.water.read".into());
    template.rule_version = Some("v42".into());
    template.sql = Some("SELECT site, cod, nh3n FROM water_quality WHERE county = '临安' AND ts > now() - interval '1 day'".into());
    template.tables = vec!["water_quality".into()];
    template.columns = vec!["site".into(), "cod".into(), "nh3n".into()];
    template.rows = Some(1234);
    template.masks = vec!["site:show_last_4".into()];
    template.duration_ms = Some(12);

    println!("suite: {suite}, entries: {n}, dir: {}", dir.display());
    let log = AuditLog::open(&dir, cfg)?;
    let t0 = Instant::now();
    for _ in 0..n {
        log.append(template.clone())?;
    }
    log.sync()?;
    let dt = t0.elapsed();
    log.close()?;
    let bytes: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "append (encrypt+chain, group commit, incl. final fsync): {:>10.0} entries/s  ({:.2} s, {:.0} B/entry on disk)",
        n as f64 / dt.as_secs_f64(),
        dt.as_secs_f64(),
        bytes as f64 / n as f64
    );

    let t0 = Instant::now();
    let r = verify_with(&dir, &key, &VerifyOptions { decrypt: false, ..Default::default() })?;
    let dt = t0.elapsed();
    assert!(r.is_ok() && r.entries == n, "verify failed: {:?}", r.problems);
    println!(
        "verify chain-only (CRC+seq+hash chain+{} checkpoints): {:>10.0} entries/s  ({:.2} s)",
        r.checkpoints,
        n as f64 / dt.as_secs_f64(),
        dt.as_secs_f64()
    );

    let t0 = Instant::now();
    let r = verify_with(&dir, &key, &VerifyOptions::default())?;
    let dt = t0.elapsed();
    assert!(r.is_ok() && r.decrypted == n, "verify failed: {:?}", r.problems);
    println!(
        "verify full (chain + every GCM tag):                  {:>10.0} entries/s  ({:.2} s)",
        n as f64 / dt.as_secs_f64(),
        dt.as_secs_f64()
    );

    let t0 = Instant::now();
    let mut cnt = 0u64;
    for rec in lianqin_audit::read(&dir, &key, AuditFilter::all())? {
        rec?;
        cnt += 1;
    }
    let dt = t0.elapsed();
    assert_eq!(cnt, n);
    println!(
        "read (verify + decrypt + JSON parse):                 {:>10.0} entries/s  ({:.2} s)",
        n as f64 / dt.as_secs_f64(),
        dt.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
