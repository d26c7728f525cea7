//! Poison isolation: a record that fails at run time, or that cannot even be
//! decoded from the bus, goes to quarantine with its reason and bytes; the
//! rest of its batch lands and the hub goes on (issue 12, item 6).

use std::path::Path;

use lianqin_bus::raw_topic;
use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_tests::count;

/// A mapping whose SQL casts `n` strictly: a value that is not a number
/// fails the query at run time (not at validation).
const MAPPING: &str = r#"
name = "poison_test"
version = "1"
key_field = "id"
[fields]
id = { type = "utf8", required = true }
n = "utf8"
[[outputs]]
library = "matter_event"
sql = "SELECT _row, 'pt:' || id AS event_id, 'pt:' || id AS matter_id, 'intake' AS stage, CAST(CAST(n AS INT) + 1 AS VARCHAR) AS note FROM raw"
"#;

fn drop_lines(dir: &Path, name: &str, ids: std::ops::Range<usize>, bad: &[usize]) {
    let mut text = String::new();
    for i in ids {
        let n = if bad.contains(&i) { "一百".to_string() } else { i.to_string() };
        text.push_str(&serde_json::json!({"id": format!("r{i}"), "n": n}).to_string());
        text.push('\n');
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn hub(d: &Path, drop: &Path) -> Hub {
    let mapping = d.join("poison_test.toml");
    std::fs::write(&mapping, MAPPING).unwrap();
    let text = format!(
        r#"node = "poison-test"
[bus]
kind = "embedded"
[pipeline]
batch_max_records = 10000
[[sources]]
id = "poison_test"
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
        m = mapping.display(),
        drop = drop.display(),
    );
    let cfg = HubConfig::parse(&text, "poison.toml", d).expect("config");
    Hub::open(cfg, d).await.expect("hub")
}

async fn sync_and_process(hub: &Hub) {
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("a bad record must not fail the batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_at_run_time_is_quarantined_and_its_batch_lands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = tempfile::tempdir().unwrap();
    drop_lines(drop.path(), "a.jsonl", 0..1000, &[617]);
    let hub = hub(d, drop.path()).await;
    sync_and_process(&hub).await;
    assert_eq!(count(d, "SELECT count(*) FROM matter_event_history WHERE matter_id LIKE 'pt:%'").await, 999);
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM quarantine WHERE reason LIKE '%record `r617`%failed at run time%' \
             AND raw LIKE '%一百%'"
        )
        .await,
        1,
        "the failing record is in quarantine with the error and its value"
    );
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 1);
    // The hub goes on: the next file lands.
    drop_lines(drop.path(), "b.jsonl", 1000..1010, &[]);
    sync_and_process(&hub).await;
    assert_eq!(count(d, "SELECT count(*) FROM matter_event_history WHERE matter_id LIKE 'pt:%'").await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_bus_record_is_quarantined_with_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = tempfile::tempdir().unwrap();
    let hub = hub(d, drop.path()).await;
    drop_lines(drop.path(), "a.jsonl", 0..50, &[]);
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    // Bytes on the source's topic that are not an envelope, between good records.
    let topic = raw_topic(&hub.config().bus.topic_prefix, "poison_test");
    hub.bus().publish_raw(&topic, &[("r-x".to_string(), b"{\"truncated\": tr".to_vec())]).await.unwrap();
    drop_lines(drop.path(), "b.jsonl", 50..100, &[]);
    sync_and_process(&hub).await;
    assert_eq!(count(d, "SELECT count(*) FROM matter_event_history WHERE matter_id LIKE 'pt:%'").await, 100);
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM quarantine WHERE reason LIKE '%undecodable bus record at %raw.poison_test/%' \
             AND raw = '{\"truncated\": tr' AND department = 'police'"
        )
        .await,
        1,
        "the corrupted record is in quarantine with its bytes and its source's department"
    );
}
