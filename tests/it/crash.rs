//! kill -9 of the hub mid-ingest, then a restart: the libraries hold exactly
//! the sources' records — none lost, none doubled.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lianqin_pipeline::demo;
use lianqin_sim::{Faults, SimConfig};
use lianqin_tests::{count, lianqin_bin, wait_until};
use serde_json::Value;

fn spawn_hub(config: &std::path::Path, data: &std::path::Path, key: &str) -> Child {
    Command::new(lianqin_bin())
        .args(["run", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env(demo::DEMO_KEY_ENV, key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(hub_log(data))
        .spawn()
        .expect("spawn lianqin run")
}

/// The hubs' stderr, appended to `<data>/hub.log` (shown when a test fails).
fn hub_log(data: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(data.join("hub.log")).expect("hub.log")
}

/// The last lines the hubs wrote, for failure messages.
fn hub_log_tail(data: &std::path::Path) -> String {
    let text = std::fs::read_to_string(data.join("hub.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn raw_rows(d: &std::path::Path) -> i64 {
    scalar_or_not_yet(d, "SELECT count(*) FROM raw_police_110").await
}

/// `sql`'s count; -1 while the hub is mid-commit (a failed read is "not yet").
async fn scalar_or_not_yet(d: &std::path::Path, sql: &str) -> i64 {
    match lianqin_tests::try_engine(d).await {
        Ok(e) => e.scalar_i64(sql).await.unwrap_or(-1),
        Err(_) => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_then_restart_is_exact() {
    crash_and_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_on_kafka_then_restart_is_exact() {
    let Some(brokers) = lianqin_tests::require_service("LIANQIN_KAFKA_BROKERS") else { return };
    crash_and_restart(Some(brokers)).await;
}

async fn crash_and_restart(kafka: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = SimConfig {
        incidents: 1500,
        tickets: 1200,
        enterprises: 50,
        cases: 40,
        env_files: 1,
        env_rows_per_file: 20,
        faults: Faults { slow_every: Some((1, Duration::from_millis(40))), ..Default::default() },
        ..Default::default()
    };
    let key = cfg.api_key.clone();
    let sim = demo::start_simulation(d, cfg).await.unwrap();
    let conf_dir = d.join("demo");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = conf_dir.join("lianqin.toml");
    let text = match &kafka {
        None => demo::demo_config_toml(&sim, demo::DEMO_KEY_ENV),
        Some(b) => {
            let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            crate::kafka::kafka_config(&sim, b, &format!("crash{n}."))
        }
    };
    // Small batches: the raw table grows commit by commit, so there is a
    // "mid-ingest" to observe even when Kafka hands the worker every record
    // of a source in one poll.
    assert!(text.contains("batch_max_records = 50000\n"), "demo config layout changed");
    let text = text.replace("batch_max_records = 50000\n", "batch_max_records = 100\n");
    std::fs::write(&conf, text).unwrap();

    let truth = sim.truth();
    let total_110 = truth.incidents.len() as i64;
    let mut child = spawn_hub(&conf, d, &key);
    // Wait until the hub is mid-ingest, then kill -9.
    let mid = wait_until(Duration::from_secs(120), || async {
        let n = raw_rows(d).await;
        n > 0 && n < total_110
    })
    .await;
    child.kill().expect("kill -9"); // SIGKILL on Unix
    let _ = child.wait();
    assert!(mid, "never observed the hub mid-ingest; hub log:\n{}", hub_log_tail(d));
    let at_kill = raw_rows(d).await;

    // Restart and let it finish.
    let mut child = spawn_hub(&conf, d, &key);
    let incidents_ok: BTreeSet<String> =
        truth.incidents.iter().filter_map(|v| v.get("jjdbh").and_then(Value::as_str).map(str::to_string)).collect();
    let want_110 = incidents_ok.len() as i64;
    let want_12345 = truth.tickets.len() as i64;
    let done = wait_until(Duration::from_secs(240), || async {
        let Ok(e) = lianqin_tests::try_engine(d).await else { return false };
        let a = e.scalar_i64("SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await.unwrap_or(-1);
        let b = e.scalar_i64("SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await.unwrap_or(-1);
        a == want_110 && b == want_12345
    })
    .await;
    // Give it a moment to prove nothing more arrives, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().ok();
    let _ = child.wait();
    assert!(done, "hub did not catch up after restart (killed at {at_kill} raw rows); hub log:\n{}", hub_log_tail(d));

    // Exactly the sources' records.
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await, want_110);
    assert_eq!(
        count(d, "SELECT count(DISTINCT matter_id) FROM matter_history WHERE matter_id LIKE '110:%'").await,
        want_110
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await, want_12345);
    // None doubled: no library row stored twice for the same record version.
    lianqin_tests::assert_no_doubled_library_rows(d).await;
    assert_eq!(
        count(d, "SELECT count(*) FROM (SELECT quarantine_id FROM quarantine GROUP BY 1 HAVING count(*) > 1)").await,
        0
    );
    // The raw tables keep each distinct record version exactly once, and
    // every version a library holds is in its raw table (a kill between the
    // library and raw commits leaves no gap).
    for (raw, src) in [("raw_police_110", "police_110"), ("raw_hotline_12345", "hotline_12345")] {
        assert_eq!(
            count(d, &format!("SELECT count(*) FROM (SELECT source_key, content_hash FROM {raw} GROUP BY 1, 2 HAVING count(*) > 1)")).await,
            0,
            "{raw} holds a version twice"
        );
        let gaps = count(
            d,
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT source_key, content_hash FROM matter_history WHERE source_id = '{src}') m \
                 WHERE NOT EXISTS (SELECT 1 FROM {raw} r WHERE r.source_key = m.source_key AND r.content_hash = m.content_hash)"
            ),
        )
        .await;
        assert_eq!(gaps, 0, "{gaps} library versions of {src} are missing from {raw}");
    }
    sim.shutdown().await;
}

/// kill -9 while a large file is published chunk by chunk (and the chunk
/// after next is read ahead): the restarted hub resumes after the last chunk
/// the bus took, and every line lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_file_then_restart_lands_each_line_once() {
    const LINES: usize = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = d.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    lianqin_tests::drop_lines(&drop, "big.jsonl", 0..LINES, |_| false);
    let mapping = d.join("bulk_drop.toml");
    std::fs::write(&mapping, lianqin_tests::poison_mapping("bulk_drop", "1", "n")).unwrap();
    let conf = d.join("lianqin.toml");
    std::fs::write(
        &conf,
        format!(
            r#"node = "file-crash"
[bus]
kind = "embedded"
[pipeline]
batch_max_records = 2000
[[sources]]
id = "bulk_drop"
department = "police"
mapping = "{m}"
interval_secs = 1
[sources.connector]
type = "file"
dir = "{drop}"
format = "jsonl"
key_columns = ["id"]
chunk_rows = 500
"#,
            m = mapping.display(),
            drop = drop.display(),
        ),
    )
    .unwrap();
    let events = "SELECT count(*) FROM matter_event_history WHERE matter_id LIKE 'pt:%'";
    let total = LINES as i64;

    let mut child = spawn_hub(&conf, d, "");
    let mid = wait_until(Duration::from_secs(180), || async {
        let n = scalar_or_not_yet(d, "SELECT count(*) FROM raw_bulk_drop").await;
        n > 0 && n < total
    })
    .await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(mid, "never observed the hub mid-file; hub log:\n{}", hub_log_tail(d));
    let at_kill = scalar_or_not_yet(d, "SELECT count(*) FROM raw_bulk_drop").await;
    assert!(at_kill < total, "the file was done before the kill ({at_kill} rows)");

    let mut child = spawn_hub(&conf, d, "");
    let done = wait_until(Duration::from_secs(240), || async { scalar_or_not_yet(d, events).await == total }).await;
    // Nothing more may arrive: a doubled chunk would show up here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().ok();
    let _ = child.wait();
    assert!(
        done,
        "hub did not finish the file after restart (killed at {at_kill} raw rows); hub log:\n{}",
        hub_log_tail(d)
    );

    assert_eq!(count(d, events).await, total);
    assert_eq!(
        count(d, "SELECT count(DISTINCT matter_id) FROM matter_event_history WHERE matter_id LIKE 'pt:%'").await,
        total
    );
    assert_eq!(count(d, "SELECT count(*) FROM raw_bulk_drop").await, total, "raw holds each line once");
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    assert!(drop.join("processed").join("big.jsonl").exists(), "the finished file moves to processed/");
    assert!(!drop.join("big.jsonl").exists());
}
