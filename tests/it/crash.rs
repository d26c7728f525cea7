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
    // The hub may be mid-commit; a failed read counts as "not yet".
    match lianqin_tests::try_engine(d).await {
        Ok(e) => e.scalar_i64("SELECT count(*) FROM raw_police_110").await.unwrap_or(-1),
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
