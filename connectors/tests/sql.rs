//! The `sql` connector against a real PostgreSQL server
//! (`tests/services/postgres.sh`, started by `tests/run.sh`, which sets
//! `LIANQIN_PG_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lianqin_bus::{Bus, BusError, BusRecord, Checkpoint, Consumer, EmbeddedBus, Envelope, OffsetLookup};
use lianqin_connectors::sql::{SqlConfig, SqlSource};
use lianqin_connectors::{ConnectorConfig, PollingSource, SourceContext};
use serde_json::Value;

mod common;

fn pg_url() -> Option<String> {
    common::require_service("LIANQIN_PG_URL")
}

async fn db(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to test postgres");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

fn config(table: &str, batch: u32) -> SqlConfig {
    let v = serde_json::json!({
        "type": "sql",
        "url": "${LIANQIN_PG_URL}",
        "table": table,
        "watermark_column": "update_time",
        "key_column": "id",
        "batch_size": batch,
        "delete_column": "is_deleted",
    });
    match serde_json::from_value::<ConnectorConfig>(v).expect("config parses") {
        ConnectorConfig::Sql(c) => c,
        other => panic!("{other:?}"),
    }
}

async fn bus_ctx(dir: &std::path::Path, topic: &str) -> (Arc<EmbeddedBus>, SourceContext) {
    let bus = Arc::new(EmbeddedBus::open(dir).unwrap());
    bus.ensure_topic(topic, 2).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    (bus, ctx)
}

/// Every record on the topic (all partitions).
async fn read_all(bus: &EmbeddedBus, topic: &str) -> Vec<Envelope> {
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let group = unique("g");
    let mut c = bus.consumer(&group, &[topic.to_string()], lookup).await.unwrap();
    let mut got: Vec<BusRecord> = Vec::new();
    loop {
        let batch = c.poll(10_000, Duration::from_millis(200)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    got.into_iter().map(|r| r.envelope).collect()
}

/// Key → versions seen (payload `name` values in order per key).
fn by_key(envs: &[Envelope]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in envs {
        m.entry(e.key.clone()).or_default().push(e.payload().clone());
    }
    m
}

async fn create_table(c: &tokio_postgres::Client, table: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (
            id bigint PRIMARY KEY,
            name text,
            amount numeric(12,2),
            ratio double precision,
            found date,
            local_time timestamp,
            ok boolean,
            ext jsonb,
            is_deleted boolean NOT NULL DEFAULT false,
            update_time timestamptz
        )"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn rows_sharing_a_timestamp_across_pages_arrive_exactly_once_and_updates_follow() {
    let Some(url) = pg_url() else { return };
    let c = db(&url).await;
    let table = unique("lq_sql_same_ts");
    create_table(&c, &table).await;
    // 95 rows share one timestamp (pages of 7 split them many times), plus
    // 20 rows before and 15 after it.
    c.batch_execute(&format!(
        "INSERT INTO {table} (id, name, amount, ratio, found, local_time, ok, ext, update_time)
         SELECT g, '地块' || g, g * 1.25, g / 4.0, DATE '2025-03-15', TIMESTAMP '2025-03-15 10:30:00.5', g % 2 = 0,
                jsonb_build_object('村', '递铺', 'n', g),
                CASE WHEN g <= 20 THEN TIMESTAMPTZ '2025-03-01 00:00:00+00' + g * INTERVAL '1 minute'
                     WHEN g <= 115 THEN TIMESTAMPTZ '2025-03-10 08:00:00+00'
                     ELSE TIMESTAMPTZ '2025-03-20 00:00:00+00' + g * INTERVAL '1 second' END
         FROM generate_series(1, 130) g"
    ))
    .await
    .unwrap();
    // One row with a NULL watermark is never read (and warned about).
    c.batch_execute(&format!("INSERT INTO {table} (id, name) VALUES (999, 'no watermark')")).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.land";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let mut src = SqlSource::new("land", "natural_resources", config(&table, 7)).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!(stats.records, 130);
    assert_eq!(stats.units, 19, "ceil(130 / 7) pages");
    // Reconciliation: the database counted 130 rows to read, 130 distinct were published.
    assert_eq!((stats.reported, stats.distinct), (Some(130), 130));
    let envs = read_all(&bus, topic).await;
    let m = by_key(&envs);
    assert_eq!(envs.len(), 130, "every row exactly once");
    assert_eq!(m.len(), 130);
    assert!(m.values().all(|v| v.len() == 1));

    // Types: numeric exact as text, timestamptz RFC 3339 UTC, timestamp naive, date, json, bool.
    let r = &m["42"][0];
    assert_eq!(r["id"], 42);
    assert_eq!(r["name"], "地块42");
    assert_eq!(r["amount"], "52.50");
    assert_eq!(r["ratio"], 10.5);
    assert_eq!(r["found"], "2025-03-15");
    assert_eq!(r["local_time"], "2025-03-15T10:30:00.500");
    assert_eq!(r["ok"], true);
    assert_eq!(r["ext"]["村"], "递铺");
    assert_eq!(r["update_time"], "2025-03-10T08:00:00Z");
    let e42 = envs.iter().find(|e| e.key == "42").unwrap();
    assert_eq!(e42.source_time.as_deref(), Some("2025-03-10T08:00:00Z"));

    // Checkpoint: the last (watermark, key).
    let cp = bus.load_checkpoint("land").await.unwrap().unwrap();
    assert_eq!(cp["key"], "130");

    // A second pass reads nothing.
    let again = src.sync_once(&ctx).await.unwrap();
    assert_eq!(again.records, 0);

    // Inserts and updates after the sync are picked up (updates bump the
    // watermark); a soft delete becomes a tombstone.
    c.batch_execute(&format!(
        "INSERT INTO {table} (id, name, update_time) VALUES (131, 'new', now()), (132, 'new2', now());
         UPDATE {table} SET name = '地块50-改', update_time = now() WHERE id = 50;
         UPDATE {table} SET is_deleted = true, update_time = now() WHERE id = 7;"
    ))
    .await
    .unwrap();
    let more = src.sync_once(&ctx).await.unwrap();
    assert_eq!(more.records, 4);
    assert_eq!((more.reported, more.distinct), (Some(4), 4), "counted after the checkpoint");
    let envs = read_all(&bus, topic).await;
    assert_eq!(envs.len(), 134);
    let m = by_key(&envs);
    assert_eq!(m["50"].len(), 2);
    assert_eq!(m["50"][1]["name"], "地块50-改");
    assert!(m.contains_key("131") && m.contains_key("132"));
    let tomb = envs.iter().rfind(|e| e.key == "7").unwrap();
    assert_eq!(tomb.op, lianqin_bus::Op::Delete);

    // A new source instance (a restart) resumes from the checkpoint: nothing re-read.
    let mut restarted = SqlSource::new("land", "natural_resources", config(&table, 7)).unwrap();
    assert_eq!(restarted.sync_once(&ctx).await.unwrap().records, 0);
    assert_eq!(read_all(&bus, topic).await.len(), 134);
    c.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

/// A bus that hangs forever on the `n`-th publish (like a process that
/// stalls and is then killed) and otherwise forwards to the embedded bus.
struct HangingBus {
    inner: Arc<EmbeddedBus>,
    publishes: AtomicUsize,
    hang_at: usize,
}

lianqin_bus::impl_record_sink!(HangingBus);

#[async_trait::async_trait]
impl Bus for HangingBus {
    fn kind(&self) -> &'static str {
        "embedded"
    }
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        self.inner.ensure_topic(topic, partitions).await
    }
    async fn publish(&self, topic: &str, records: &[Envelope], checkpoint: Option<Checkpoint>) -> Result<(), BusError> {
        let n = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.hang_at {
            futures::future::pending::<()>().await;
        }
        self.inner.publish(topic, records, checkpoint).await
    }
    async fn publish_raw(&self, topic: &str, items: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        self.inner.publish_raw(topic, items).await
    }
    async fn load_checkpoint(&self, source: &str) -> Result<Option<Value>, BusError> {
        self.inner.load_checkpoint(source).await
    }
    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        lookup: OffsetLookup,
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.consumer(group, topics, lookup).await
    }
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        self.inner.end_offsets(topic).await
    }
}

#[tokio::test]
async fn a_pass_killed_mid_walk_resumes_without_loss_or_repeats() {
    let Some(url) = pg_url() else { return };
    let c = db(&url).await;
    let table = unique("lq_sql_kill");
    create_table(&c, &table).await;
    // 400 rows over 8 timestamps: 50 rows per timestamp, pages of 30.
    c.batch_execute(&format!(
        "INSERT INTO {table} (id, name, update_time)
         SELECT g, 'r' || g, TIMESTAMPTZ '2026-01-01 00:00:00+00' + (g % 8) * INTERVAL '1 hour'
         FROM generate_series(1, 400) g"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.kill";
    let (bus, _) = bus_ctx(dir.path(), topic).await;
    let hanging = Arc::new(HangingBus { inner: Arc::clone(&bus), publishes: AtomicUsize::new(0), hang_at: 6 });
    let ctx = SourceContext { bus: hanging as Arc<dyn Bus>, topic: topic.to_string() };
    let mut src = SqlSource::new("kill", "natural_resources", config(&table, 30)).unwrap();
    // The pass stalls in its 6th publish; the task is dropped (kill -9).
    let killed = tokio::time::timeout(Duration::from_secs(5), src.sync_once(&ctx)).await;
    assert!(killed.is_err(), "the pass must have stalled");
    drop(src);
    let before = read_all(&bus, topic).await;
    assert_eq!(before.len(), 150, "5 pages of 30 were durable before the kill");

    // Meanwhile rows change: one already read, one not yet.
    c.batch_execute(&format!(
        "UPDATE {table} SET name = 'changed', update_time = TIMESTAMPTZ '2026-01-02 00:00:00+00' WHERE id IN (8, 399)"
    ))
    .await
    .unwrap();

    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    let mut src = SqlSource::new("kill", "natural_resources", config(&table, 30)).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    let all = read_all(&bus, topic).await;
    let m = by_key(&all);
    assert_eq!(m.len(), 400, "no row lost");
    let twice: Vec<&String> = m.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k).collect();
    // Only rows that really changed after being read come again.
    let id8_read_before = before.iter().any(|e| e.key == "8");
    let mut want_twice = Vec::new();
    if id8_read_before {
        want_twice.push("8".to_string());
    }
    if before.iter().any(|e| e.key == "399") {
        want_twice.push("399".to_string());
    }
    want_twice.sort();
    let mut got_twice: Vec<String> = twice.into_iter().cloned().collect();
    got_twice.sort();
    assert_eq!(got_twice, want_twice, "stats {stats:?}");
    assert_eq!(m["399"].last().unwrap()["name"], "changed");
    assert_eq!(m["8"].last().unwrap()["name"], "changed");
    c.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn bad_queries_and_columns_fail_at_start_with_clear_errors() {
    let Some(url) = pg_url() else { return };
    let c = db(&url).await;
    let table = unique("lq_sql_bad");
    create_table(&c, &table).await;
    let dir = tempfile::tempdir().unwrap();
    let (_bus, ctx) = bus_ctx(dir.path(), "raw.bad").await;

    // A query that does not run: names the source, the query and PostgreSQL's reason.
    let mut cfg = config(&table, 10);
    cfg.table = None;
    cfg.query = Some(format!("SELECT id, nme, update_time FROM {table}"));
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    eprintln!("bad query error: {e}");
    assert!(
        e.contains("nr_cases") && e.contains("SELECT id, nme") && e.contains("nme") && e.contains("does not exist"),
        "{e}"
    );
    assert!(!e.contains("lianqin-test"), "no password in errors: {e}");

    // A missing watermark column: names the column and lists the real ones.
    let mut cfg = config(&table, 10);
    cfg.watermark_column = "gxsj".into();
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    eprintln!("missing column error: {e}");
    assert!(e.contains("watermark_column") && e.contains("gxsj") && e.contains("update_time"), "{e}");

    // A missing table.
    let mut src = SqlSource::new("nr_cases", "natural_resources", config("no_such_table_xyz", 10)).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    assert!(e.contains("no_such_table_xyz") && e.contains("does not exist"), "{e}");

    // A wrong password: unavailable, and the password is not in the message.
    let mut cfg = config(&table, 10);
    let wrong = url.replacen("lianqin-test", "wrong-secret", 1);
    cfg.url = wrong.clone();
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    assert!(e.contains("nr_cases") && !e.contains("wrong-secret"), "{e}");
    c.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}
