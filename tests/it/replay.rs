//! Quarantine replay (issue 15): after a mapping is fixed, `lianqin replay`
//! puts the quarantined records through it — they land, or stay quarantined
//! with the new reason — exactly once, also when the replay is killed with
//! SIGKILL and run again; an unchanged re-fetch still changes nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lianqin_audit::{AuditFilter, EventKind};
use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_pipeline::query::QueryEngine;
use lianqin_pipeline::replay::{self, Filter};
use lianqin_tests::{count, drop_lines, lianqin_bin};
use serde_json::Value;

const STRICT: &str = lianqin_tests::POISON_STRICT;
const FIXED: &str = lianqin_tests::POISON_FIXED;

fn mapping(version: &str, note: &str) -> String {
    lianqin_tests::poison_mapping("replay_test", version, note)
}

/// Writes the hub config (and the mapping at `note`) into `d`.
fn config(d: &Path, drop: &Path, version: &str, note: &str) -> PathBuf {
    let m = d.join("replay_test.toml");
    std::fs::write(&m, mapping(version, note)).unwrap();
    let text = format!(
        r#"node = "replay-test"
[bus]
kind = "embedded"
[pipeline]
batch_max_records = 10000
[[sources]]
id = "replay_test"
department = "police"
mapping = "{m}"
interval_secs = 3600
[sources.connector]
type = "file"
dir = "{drop}"
format = "jsonl"
key_columns = ["id"]
chunk_rows = 300
"#,
        m = m.display(),
        drop = drop.display(),
    );
    let path = d.join("hub.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn hub(d: &Path, cfg: &Path) -> Hub {
    let cfg = HubConfig::parse(&std::fs::read_to_string(cfg).unwrap(), "hub.toml", d).expect("config");
    Hub::open(cfg, d).await.expect("hub")
}

async fn sync_and_process(hub: &Hub) {
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("process");
}

async fn replay_once(hub: &Hub, filter: &Filter) -> (replay::Published, replay::Outcome) {
    let p = replay::publish(hub, "local:test", "replay_test", filter, |_, _| {}).await.expect("replay");
    hub.process_available().await.expect("process");
    let engine = QueryEngine::new(&hub.store(), &hub.catalog()).await.unwrap();
    let o = replay::outcome(&engine, "replay_test", &p.run).await.unwrap();
    (p, o)
}

const EVENTS: &str = "SELECT count(*) FROM matter_event_history WHERE source_id = 'replay_test'";
const DISTINCT: &str = "SELECT count(DISTINCT event_id) FROM matter_event_history WHERE source_id = 'replay_test'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_mapping_lands_the_quarantined_records_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = tempfile::tempdir().unwrap();
    drop_lines(files.path(), "a.jsonl", 0..1000, |i| [17, 617, 901].contains(&i));
    let cfg = config(d, files.path(), "1", STRICT);
    let h = hub(d, &cfg).await;
    sync_and_process(&h).await;
    assert_eq!(count(d, EVENTS).await, 997);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 3);

    // Before the fix: replayed, quarantined again with the reason, nothing lands.
    let (p, o) = replay_once(&h, &Filter::default()).await;
    assert_eq!((p.published, o.decided, o.landed()), (3, 3, 0), "{o:?}");
    assert!(o.quarantined[0].0.contains("failed at run time"), "{o:?}");
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 6, "a new row per decision; none removed");
    assert_eq!(
        count(d, &format!("SELECT count(*) FROM quarantine WHERE locator LIKE 'replay:{}:%@%a.jsonl%'", p.run)).await,
        3,
        "the new rows name the run and keep the original file"
    );
    // A selection by a reason nobody has replays nothing.
    let none = Filter { reason: Some("no such reason".into()), since_micros: None };
    assert_eq!(replay_once(&h, &none).await.0.published, 0);
    drop(h);

    // The fix: a new mapping version. Every open record lands, once.
    let cfg = config(d, files.path(), "2", FIXED);
    let h = hub(d, &cfg).await;
    let (p, o) = replay_once(&h, &Filter { reason: Some("failed at run time".into()), since_micros: None }).await;
    assert_eq!((p.published, o.decided, o.landed()), (3, 3, 3), "{o:?}");
    assert_eq!(count(d, EVENTS).await, 1000);
    assert_eq!(count(d, DISTINCT).await, 1000);
    assert_eq!(count(d, "SELECT count(*) FROM matter_event WHERE event_id = 'pt:r617' AND note = '101'").await, 1);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 6, "quarantine keeps its history");

    // Nothing is open any more; replaying or re-fetching changes nothing.
    assert_eq!(replay_once(&h, &Filter::default()).await.0.published, 0);
    sync_and_process(&h).await;
    assert_eq!(count(d, EVENTS).await, 1000);
    drop(h);
    // Audited: every run, with its selection and counts.
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut runs = Vec::new();
    for st in lianqin_pipeline::audit::streams(d) {
        for r in
            lianqin_audit::read(&st, &key, AuditFilter { kind: Some(EventKind::Other), ..Default::default() }).unwrap()
        {
            let ev = r.unwrap().event;
            if ev.detail.get("action").and_then(Value::as_str) == Some("replay") {
                runs.push((ev.user.clone(), ev.detail["published"].as_u64(), ev.detail["selection"].to_string()));
            }
        }
    }
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|(u, _, _)| u == "local:test"), "{runs:?}");
    assert_eq!(runs.iter().filter(|(_, n, _)| *n == Some(3)).count(), 2, "{runs:?}");
    assert!(runs.iter().any(|(_, _, s)| s.contains("failed at run time")), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_with_sigkill_and_run_again_lands_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = tempfile::tempdir().unwrap();
    // 4 000 records, 3 000 of them fail: the replay publishes 6 chunks.
    drop_lines(files.path(), "a.jsonl", 0..4000, |i| i % 4 != 0);
    let cfg = config(d, files.path(), "1", STRICT);
    {
        let h = hub(d, &cfg).await;
        sync_and_process(&h).await;
    }
    assert_eq!(count(d, EVENTS).await, 1000);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 3000);
    let cfg = config(d, files.path(), "2", FIXED);
    let replay = || {
        Command::new(lianqin_bin())
            .args(["replay", "--source", "replay_test", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(d)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lianqin replay")
    };
    // Kill it with SIGKILL once its progress shows `until`; returns the
    // progress lines seen.
    let kill_at = |until: &str| {
        let mut child = replay();
        let err = BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        for line in err.lines() {
            let line = line.unwrap();
            seen.push(line.clone());
            if line.contains(until) {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        seen
    };
    // 1. Mid-publish: the run is unfinished; the next command takes it up.
    let seen = kill_at("published 1000/");
    assert!(seen.iter().any(|l| l.contains("published 1000/3000")), "progress: {seen:?}");
    assert!(count(d, EVENTS).await < 4000);
    // 2. Once all is published, while deciding: the next command starts a
    //    new run over what is still open, while the first run's records
    //    still wait on the bus — each must land once, not once per run.
    let seen = kill_at("published 3000/3000");
    assert!(seen.iter().any(|l| l.contains("published 3000/3000")), "progress: {seen:?}");
    let landed_before = count(d, EVENTS).await;
    assert!(landed_before < 4000, "killed before the end: {landed_before}");

    // Run again until it finishes: exactly the fixed records land, once.
    let out = replay().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(d, EVENTS).await, 4000, "{stdout}");
    assert_eq!(count(d, DISTINCT).await, 4000, "nothing doubled: {stdout}");
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 3000, "nothing quarantined again");
    // And once more: nothing open, nothing changes.
    let out = replay().wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 0 record(s)"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(count(d, EVENTS).await, 4000);
}
