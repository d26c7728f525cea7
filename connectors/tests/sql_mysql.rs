//! The `sql` connector against a real MySQL/MariaDB server
//! (`tests/services/mariadb.sh`, started by `tests/run.sh`, which sets
//! `LIANQIN_MYSQL_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lianqin_bus::{Bus, BusError, BusRecord, Checkpoint, Consumer, EmbeddedBus, Envelope, OffsetLookup, Op};
use lianqin_connectors::sql::{SqlConfig, SqlSource};
use lianqin_connectors::{ConnectorConfig, ConnectorError, PollingSource, SourceContext};
use mysql_async::prelude::Queryable;
use serde_json::Value;

mod common;

fn mysql_url() -> Option<String> {
    common::require_service("LIANQIN_MYSQL_URL")
}

/// A test client: UTC session (literal TIMESTAMPs are UTC), utf8mb4.
async fn db(url: &str) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::from_url(url).await.expect("connect to test mysql/mariadb");
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    c
}

async fn exec(c: &mut mysql_async::Conn, sql: &str) {
    c.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

fn parse(v: Value) -> SqlConfig {
    match serde_json::from_value::<ConnectorConfig>(v).expect("config parses") {
        ConnectorConfig::Sql(c) => c,
        other => panic!("{other:?}"),
    }
}

fn config(table: &str, batch: u32) -> SqlConfig {
    parse(serde_json::json!({
        "type": "sql",
        "url": "${LIANQIN_MYSQL_URL}",
        "table": table,
        "watermark_column": "update_time",
        "key_column": "id",
        "batch_size": batch,
        "delete_column": "is_deleted",
    }))
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

/// Key → payloads seen, in order.
fn by_key(envs: &[Envelope]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in envs {
        m.entry(e.key.clone()).or_default().push(e.payload().clone());
    }
    m
}

async fn create_table(c: &mut mysql_async::Conn, table: &str) {
    exec(
        c,
        &format!(
            "CREATE TABLE {table} (
                id BIGINT PRIMARY KEY,
                name VARCHAR(100),
                note VARCHAR(20) NULL,
                amount DECIMAL(12,2),
                ratio DOUBLE,
                found DATE,
                local_time DATETIME(3),
                ok TINYINT(1),
                flag BIT(1),
                ext JSON,
                is_deleted TINYINT(1) NOT NULL DEFAULT 0,
                update_time TIMESTAMP(6) NULL DEFAULT NULL,
                KEY wm_key (update_time, id)
            ) DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
}

/// `INSERT … VALUES` for ids `from..=to`, the watermark given per id.
fn insert_rows(table: &str, ids: impl Iterator<Item = u32>, wm: impl Fn(u32) -> String) -> String {
    let rows: Vec<String> = ids
        .map(|g| {
            format!(
                "({g}, '地块{g}🌲', {}, {}, '2025-03-15', '2025-03-15 10:30:00.5', {}, {}, \
                 JSON_OBJECT('村', '递铺', 'n', {g}), {})",
                g as f64 * 1.25,
                g as f64 / 4.0,
                g % 2 == 0,
                if g % 3 == 0 { "b'1'" } else { "b'0'" },
                wm(g)
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} (id, name, amount, ratio, found, local_time, ok, flag, ext, update_time) VALUES {}",
        rows.join(", ")
    )
}

#[tokio::test]
async fn rows_sharing_a_timestamp_across_pages_arrive_exactly_once_and_updates_follow() {
    let Some(url) = mysql_url() else { return };
    let mut c = db(&url).await;
    let table = unique("lq_my_same_ts");
    create_table(&mut c, &table).await;
    // 95 rows share one timestamp with microseconds (pages of 7 split them
    // many times, and the checkpoint must keep all six digits), plus 20 rows
    // before and 15 after it.
    let sql = insert_rows(&table, 1..=130, |g| {
        if g <= 20 {
            format!("TIMESTAMP'2025-03-01 00:00:00' + INTERVAL {g} MINUTE")
        } else if g <= 115 {
            "'2025-03-10 08:00:00.250001'".into()
        } else {
            format!("TIMESTAMP'2025-03-20 00:00:00.123456' + INTERVAL {g} SECOND")
        }
    });
    exec(&mut c, &sql).await;
    // One row with a NULL watermark is never read (and warned about).
    exec(&mut c, &format!("INSERT INTO {table} (id, name) VALUES (999, 'no watermark')")).await;

    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.land";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let mut src = SqlSource::new("land", "natural_resources", config(&table, 7)).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!(stats.records, 130);
    assert_eq!(stats.units, 19, "ceil(130 / 7) pages");
    // Reconciliation: the database counted 130 rows to read, 130 distinct were published.
    assert_eq!((stats.reported, stats.distinct), (Some(130), 130));
    assert_eq!(stats.unparsable, 0);
    let envs = read_all(&bus, topic).await;
    let m = by_key(&envs);
    assert_eq!(envs.len(), 130, "every row exactly once");
    assert_eq!(m.len(), 130);
    assert!(m.values().all(|v| v.len() == 1));

    // Types: DECIMAL exact as text, TIMESTAMP RFC 3339 UTC, DATETIME naive,
    // DATE, JSON, TINYINT(1) and BIT(1) booleans, NULL, utf8mb4 text.
    let r = &m["42"][0];
    assert_eq!(r["id"], 42);
    assert_eq!(r["name"], "地块42🌲");
    assert_eq!(r["note"], Value::Null);
    assert_eq!(r["amount"], "52.50");
    assert_eq!(r["ratio"], 10.5);
    assert_eq!(r["found"], "2025-03-15");
    assert_eq!(r["local_time"], "2025-03-15T10:30:00.500");
    assert_eq!(r["ok"], true);
    assert_eq!(r["flag"], true);
    assert_eq!(m["43"][0]["ok"], false);
    assert_eq!(m["43"][0]["flag"], false);
    assert_eq!(r["ext"]["村"], "递铺", "JSON arrives as JSON: {r}");
    assert_eq!(r["ext"]["n"], 42);
    assert_eq!(r["is_deleted"], false);
    assert_eq!(r["update_time"], "2025-03-10T08:00:00.250001Z");
    let e42 = envs.iter().find(|e| e.key == "42").unwrap();
    assert_eq!(e42.source_time.as_deref(), Some("2025-03-10T08:00:00.250001Z"));
    assert_eq!(e42.op, Op::Upsert);
    assert!(e42.locator.as_deref().is_some_and(|l| l.contains("id=42") && !l.contains("lianqin-test")));

    // Checkpoint: the last (watermark, key), in the server's text form.
    let cp = bus.load_checkpoint("land").await.unwrap().unwrap();
    assert_eq!(cp["key"], "130");
    assert_eq!(cp["wm"], "2025-03-20 00:02:10.123456");

    // A second pass reads nothing.
    let again = src.sync_once(&ctx).await.unwrap();
    assert_eq!(again.records, 0);

    // Inserts and updates after the sync are picked up (updates bump the
    // watermark); a soft delete becomes a tombstone.
    exec(
        &mut c,
        &format!("INSERT INTO {table} (id, name, update_time) VALUES (131, 'new', NOW(6)), (132, '新2', NOW(6))"),
    )
    .await;
    exec(&mut c, &format!("UPDATE {table} SET name = '地块50-改', update_time = NOW(6) WHERE id = 50")).await;
    exec(&mut c, &format!("UPDATE {table} SET is_deleted = 1, update_time = NOW(6) WHERE id = 7")).await;
    let more = src.sync_once(&ctx).await.unwrap();
    assert_eq!(more.records, 4);
    assert_eq!((more.reported, more.distinct), (Some(4), 4), "counted after the checkpoint");
    let envs = read_all(&bus, topic).await;
    assert_eq!(envs.len(), 134);
    let m = by_key(&envs);
    assert_eq!(m["50"].len(), 2);
    assert_eq!(m["50"][1]["name"], "地块50-改");
    assert_eq!(m["132"][0]["name"], "新2");
    assert!(m.contains_key("131"));
    let tomb = envs.iter().rfind(|e| e.key == "7").unwrap();
    assert_eq!(tomb.op, Op::Delete);
    assert_eq!(tomb.payload()["is_deleted"], true);

    // A new source instance (a restart) resumes from the checkpoint: nothing re-read.
    drop(src);
    let mut restarted = SqlSource::new("land", "natural_resources", config(&table, 7)).unwrap();
    assert_eq!(restarted.sync_once(&ctx).await.unwrap().records, 0);
    assert_eq!(read_all(&bus, topic).await.len(), 134);
    // … and reads what changes after the restart.
    exec(&mut c, &format!("UPDATE {table} SET note = '复核', update_time = NOW(6) WHERE id = 99")).await;
    assert_eq!(restarted.sync_once(&ctx).await.unwrap().records, 1);
    let envs = read_all(&bus, topic).await;
    assert_eq!(envs.len(), 135);
    assert_eq!(envs.iter().rfind(|e| e.key == "99").unwrap().payload()["note"], "复核");
    exec(&mut c, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn undecodable_cells_are_quarantined_and_zero_dates_are_null() {
    let Some(url) = mysql_url() else { return };
    let mut c = db(&url).await;
    let table = unique("lq_my_bad_cell");
    create_table(&mut c, &table).await;
    exec(&mut c, "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'").await;
    exec(&mut c, &insert_rows(&table, 1..=3, |g| format!("TIMESTAMP'2025-05-01 00:00:00' + INTERVAL {g} SECOND")))
        .await;
    // Row 2: a date that does not exist; row 3: the zero date.
    exec(&mut c, &format!("UPDATE {table} SET found = '2025-02-30' WHERE id = 2")).await;
    exec(&mut c, &format!("UPDATE {table} SET found = '0000-00-00' WHERE id = 3")).await;

    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.bad_cell";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let mut src = SqlSource::new("hj_cases", "ecology", config(&table, 10)).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!((stats.records, stats.unparsable), (3, 1));
    let envs = read_all(&bus, topic).await;
    let bad = envs.iter().find(|e| e.key == "2").unwrap();
    let reason = bad.error.as_deref().expect("quarantined");
    eprintln!("quarantine reason: {reason}");
    assert!(reason.contains("hj_cases") && reason.contains("\"2\"") && reason.contains("`found`"), "{reason}");
    assert!(reason.contains("2025-02-30"), "{reason}");
    assert!(!reason.contains("lianqin-test"));
    let zero = envs.iter().find(|e| e.key == "3").unwrap();
    assert!(zero.error.is_none());
    assert_eq!(zero.payload()["found"], Value::Null);
    assert_eq!(envs.iter().find(|e| e.key == "1").unwrap().payload()["found"], "2025-03-15");
    // The checkpoint moved past the quarantined row.
    assert_eq!(bus.load_checkpoint("hj_cases").await.unwrap().unwrap()["key"], "3");
    exec(&mut c, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn a_query_source_with_an_integer_watermark_and_chinese_text_keys() {
    let Some(url) = mysql_url() else { return };
    let mut c = db(&url).await;
    let table = unique("lq_my_query");
    exec(
        &mut c,
        &format!(
            "CREATE TABLE {table} (
                bh VARCHAR(40) NOT NULL PRIMARY KEY,
                version BIGINT UNSIGNED NOT NULL,
                qy VARCHAR(40),
                gxsj DATETIME,
                KEY v_bh (version, bh)
            ) DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    // 60 keys over 3 versions; the big version numbers would lose precision
    // if compared as doubles.
    let base: u64 = 9_007_199_254_740_993; // 2^53 + 1
    let rows: Vec<String> = (1..=60)
        .map(|i| {
            format!(
                "('案件-{i:03}-德清', {}, '{}', '2025-06-01 12:00:00')",
                base + (i % 3),
                if i % 2 == 0 { "递铺" } else { "昌硕" }
            )
        })
        .collect();
    exec(&mut c, &format!("INSERT INTO {table} (bh, version, qy, gxsj) VALUES {}", rows.join(", "))).await;

    let cfg = parse(serde_json::json!({
        "type": "sql",
        "url": "${LIANQIN_MYSQL_URL}",
        "query": format!("SELECT bh, version, qy AS 区域, gxsj FROM {table} WHERE qy <> '无';"),
        "watermark_column": "VERSION",
        "key_column": "bh",
        "batch_size": 8,
    }));
    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.query";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let mut src = SqlSource::new("eco_cases", "ecology", cfg.clone()).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    assert_eq!((stats.records, stats.units), (60, 8));
    let envs = read_all(&bus, topic).await;
    let m = by_key(&envs);
    assert_eq!(m.len(), 60);
    assert!(m.values().all(|v| v.len() == 1));
    let r = &m["案件-002-德清"][0];
    assert_eq!(r["区域"], "递铺");
    assert_eq!(r["version"], base + 2);
    assert_eq!(r["gxsj"], "2025-06-01T12:00:00");
    let cp = bus.load_checkpoint("eco_cases").await.unwrap().unwrap();
    assert_eq!(cp["wm"], (base + 2).to_string());

    // Bump one row past the others: only it comes again, also after a restart.
    exec(&mut c, &format!("UPDATE {table} SET version = {}, qy = '新市' WHERE bh = '案件-010-德清'", base + 3)).await;
    let mut restarted = SqlSource::new("eco_cases", "ecology", cfg).unwrap();
    assert_eq!(restarted.sync_once(&ctx).await.unwrap().records, 1);
    let envs = read_all(&bus, topic).await;
    assert_eq!(envs.len(), 61);
    assert_eq!(envs.last().unwrap().payload()["区域"], "新市");
    assert_eq!(restarted.sync_once(&ctx).await.unwrap().records, 0);
    exec(&mut c, &format!("DROP TABLE {table}")).await;
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
    let Some(url) = mysql_url() else { return };
    let mut c = db(&url).await;
    let table = unique("lq_my_kill");
    create_table(&mut c, &table).await;
    // 400 rows over 8 timestamps: 50 rows per timestamp, pages of 30.
    exec(
        &mut c,
        &insert_rows(&table, 1..=400, |g| format!("TIMESTAMP'2026-01-01 00:00:00' + INTERVAL {} HOUR", g % 8)),
    )
    .await;
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
    exec(
        &mut c,
        &format!("UPDATE {table} SET name = 'changed', update_time = '2026-01-02 00:00:00' WHERE id IN (8, 399)"),
    )
    .await;

    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    let mut src = SqlSource::new("kill", "natural_resources", config(&table, 30)).unwrap();
    let stats = src.sync_once(&ctx).await.unwrap();
    let all = read_all(&bus, topic).await;
    let m = by_key(&all);
    assert_eq!(m.len(), 400, "no row lost");
    let mut got_twice: Vec<String> = m.iter().filter(|(_, v)| v.len() > 1).map(|(k, _)| k.clone()).collect();
    got_twice.sort();
    // Only rows that really changed after being read come again.
    let mut want_twice: Vec<String> =
        ["8", "399"].iter().filter(|k| before.iter().any(|e| e.key == **k)).map(|k| k.to_string()).collect();
    want_twice.sort();
    assert_eq!(got_twice, want_twice, "stats {stats:?}");
    assert_eq!(m["399"].last().unwrap()["name"], "changed");
    assert_eq!(m["8"].last().unwrap()["name"], "changed");
    exec(&mut c, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn bad_password_queries_and_columns_fail_with_clear_errors() {
    let Some(url) = mysql_url() else { return };
    let mut c = db(&url).await;
    let table = unique("lq_my_bad");
    create_table(&mut c, &table).await;
    let dir = tempfile::tempdir().unwrap();
    let (_bus, ctx) = bus_ctx(dir.path(), "raw.bad").await;

    // A wrong password: unavailable, names the source and the server, never the password.
    let mut cfg = config(&table, 10);
    assert!(url.contains("lianqin-test"), "the test service's password");
    cfg.url = url.replacen("lianqin-test", "wrong-secret", 1);
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let err = src.sync_once(&ctx).await.unwrap_err();
    let e = err.to_string();
    eprintln!("bad password error: {e}");
    assert!(matches!(err, ConnectorError::Unavailable { .. }), "{e}");
    assert!(e.contains("nr_cases") && e.contains("127.0.0.1") && e.contains("Access denied"), "{e}");
    assert!(!e.contains("wrong-secret") && !e.contains("lianqin-test"), "no password in errors: {e}");
    assert!(!format!("{src:?}").contains("wrong-secret"));

    // A query that does not run: names the source, the query and the server's reason.
    let mut cfg = config(&table, 10);
    cfg.table = None;
    cfg.query = Some(format!("SELECT id, nme, update_time FROM {table}"));
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    eprintln!("bad query error: {e}");
    assert!(e.contains("nr_cases") && e.contains("SELECT id, nme") && e.contains("Unknown column"), "{e}");
    assert!(!e.contains("lianqin-test"), "no password in errors: {e}");

    // A missing watermark column: names the column and lists the real ones.
    let mut cfg = config(&table, 10);
    cfg.watermark_column = "gxsj".into();
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    eprintln!("missing column error: {e}");
    assert!(e.contains("watermark_column") && e.contains("gxsj") && e.contains("update_time"), "{e}");

    // A floating-point watermark is refused (it cannot be compared exactly).
    let mut cfg = config(&table, 10);
    cfg.watermark_column = "ratio".into();
    let mut src = SqlSource::new("nr_cases", "natural_resources", cfg).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    assert!(e.contains("ratio") && e.contains("floating-point"), "{e}");

    // A missing table.
    let mut src = SqlSource::new("nr_cases", "natural_resources", config("no_such_table_xyz", 10)).unwrap();
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    assert!(e.contains("no_such_table_xyz") && e.contains("doesn't exist"), "{e}");
    exec(&mut c, &format!("DROP TABLE {table}")).await;
}
