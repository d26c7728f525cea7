//! Throughput benchmark: `cargo run --release -p lianqin-audit --example audit_bench -- N [gm] [dir]`.
//!
//! Appends N typical query events (encrypted + chained, group commit every
//! 10 ms, final fsync included in the time), then verifies the log in
//! chain-only mode (CRC + seq + SHA-256 chain + checkpoint signatures) and in
//! full mode (also every GCM tag), then reads everything back (decrypt + JSON
//! decode). Pin to one core with `taskset -c 0` to include the sync thread.

use std::time::{Duration, Instant};

use lianqin_audit::{
    AuditConfig, AuditEvent, AuditFilter, AuditLog, CryptoSuite, EventKind, FsyncPolicy, MasterKey, Outcome,
    VerifyOptions, verify_with,
};

/// CPU time (ns) consumed so far by the calling thread (Linux `schedstat`), if available.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU time (ns) consumed so far by the whole process (user + system, from `/proc/self/stat`).
fn process_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000) // USER_HZ = 100
}

struct Clock {
    wall: Instant,
    thread: Option<u64>,
    process: Option<u64>,
}

impl Clock {
    fn start() -> Clock {
        Clock { wall: Instant::now(), thread: thread_cpu_ns(), process: process_cpu_ns() }
    }
    /// Prints wall-clock and CPU-time rates for `n` items.
    fn report(&self, label: &str, n: u64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let th = match (self.thread, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
            _ => None,
        };
        let pr = match (self.process, process_cpu_ns()) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
            _ => None,
        };
        let rate = |t: f64| n as f64 / t;
        print!("{label:<58} wall {:>9.0}/s ({wall:.2} s)", rate(wall));
        if let Some(t) = th {
            print!(" | per CPU-second of the calling thread {:>9.0}/s", rate(t));
        }
        if let Some(t) = pr {
            print!(" | process CPU {t:.2} s");
        }
        println!();
    }
}

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
    template.sql = Some(
        "SELECT site, cod, nh3n FROM water_quality WHERE county = '临安' AND ts > now() - interval '1 day'".into(),
    );
    template.tables = vec!["water_quality".into()];
    template.columns = vec!["site".into(), "cod".into(), "nh3n".into()];
    template.rows = Some(1234);
    template.masks = vec!["site:show_last_4".into()];
    template.duration_ms = Some(12);

    println!("suite: {suite}, entries: {n}, dir: {}", dir.display());
    let log = AuditLog::open(&dir, cfg)?;
    let c = Clock::start();
    for i in 0..n {
        // A caller fills in an event per action; the log encodes, encrypts and chains it.
        template.time = chrono::Utc::now();
        template.rows = Some(i);
        log.append_ref(&template)?;
    }
    log.sync()?;
    c.report("append (encode+encrypt+chain, group commit, final fsync)", n);
    log.close()?;
    let bytes: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!("  on disk: {:.0} B/entry", bytes as f64 / n as f64);

    let c = Clock::start();
    let r = verify_with(&dir, &key, &VerifyOptions { decrypt: false, ..Default::default() })?;
    assert!(r.is_ok() && r.entries == n, "verify failed: {:?}", r.problems);
    c.report(&format!("verify chain-only (CRC+seq+chain+{} signed checkpoints)", r.checkpoints), n);

    let c = Clock::start();
    let r = verify_with(&dir, &key, &VerifyOptions::default())?;
    assert!(r.is_ok() && r.decrypted == n, "verify failed: {:?}", r.problems);
    c.report("verify full (chain-only checks + every GCM tag)", n);

    let c = Clock::start();
    let mut cnt = 0u64;
    for rec in lianqin_audit::read(&dir, &key, AuditFilter::all())? {
        rec?;
        cnt += 1;
    }
    assert_eq!(cnt, n);
    c.report("read (verify + decrypt + decode)", n);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
