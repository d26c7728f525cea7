//! Shared helpers for Lianqin's end-to-end tests (`tests/it`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lianqin_pipeline::library::LibraryStore;
use lianqin_pipeline::query::QueryEngine;
use lianqin_pipeline::schema::Catalog;

/// Path of the `lianqin` binary next to the test binary
/// (`target/debug/deps/it-*` → `target/debug/lianqin`), or `$LIANQIN_BIN`.
pub fn lianqin_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LIANQIN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("lianqin");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p lianqin-pipeline --bin lianqin`) or set LIANQIN_BIN",
        bin.display()
    );
    bin
}

/// The password of a built-in demo user (`<user>-demo`; `admin-demo` for
/// `sys.admin`), for `sql --as` / `export --as` (`LIANQIN_PASSWORD`) and
/// Postgres logins.
pub fn demo_password(user: &str) -> String {
    if user == "sys.admin" { "admin-demo".into() } else { format!("{user}-demo") }
}

/// Opens a fresh query session over a data dir (sees the latest commits).
pub async fn engine(data_dir: &Path) -> QueryEngine {
    let catalog = Catalog::builtin().expect("catalog");
    let store = LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await.expect("store");
    QueryEngine::new(&store, &catalog).await.expect("engine")
}

/// `count(*)`-style scalar of `sql` as `user`, through the same policy
/// enforcement as `lianqin sql --as` (the data dir's sealed policies).
pub async fn secured_count(data_dir: &Path, user: &str, sql: &str) -> i64 {
    let policy = Arc::new(lianqin_pipeline::flows::load_policies(data_dir).await.expect("policies"));
    let who = policy.principal(user).expect("user");
    engine(data_dir).await.with_policy(policy, who).scalar_i64(sql).await.expect("query")
}

/// Every entry of every audit stream of a data dir, decrypted with its
/// master key.
pub fn audit_events(data_dir: &Path) -> Vec<lianqin_audit::AuditEvent> {
    let key = lianqin_pipeline::audit::master_key(data_dir, false).expect("audit key");
    let mut out = Vec::new();
    for s in lianqin_pipeline::audit::streams(data_dir) {
        for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::default()).expect("audit stream") {
            out.push(r.expect("audit entry").event);
        }
    }
    out
}

/// Like [`engine`], but reports failures (e.g. while a hub is committing).
pub async fn try_engine(data_dir: &Path) -> Result<QueryEngine, String> {
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    let store = LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await.map_err(|e| e.to_string())?;
    QueryEngine::new(&store, &catalog).await.map_err(|e| e.to_string())
}

/// `SELECT count(*)`-style query → i64.
pub async fn count(data_dir: &Path, sql: &str) -> i64 {
    engine(data_dir).await.scalar_i64(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Whether this run is CI (`CI=true`, as CI systems set it, or `CI=1`):
/// then a test that needs a service must not pass without it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// The value of `var` (a service address such as `LIANQIN_PG_URL`) when
/// set and not empty. When it is missing the test cannot run: under CI
/// ([`in_ci`]) that is a failure — this panics naming the variable — and
/// elsewhere it prints a SKIPPED note and returns `None` (the test returns
/// early). `tests/run.sh` starts every service and sets the variables.
pub fn require_service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if in_ci() => panic!(
            "{var} is not set but CI=true: this test needs its service and must not pass without it \
             (tests/run.sh starts the services and sets {var})"
        ),
        _ => {
            eprintln!("\n!!!!! SKIPPED: {var} is not set (tests/run.sh starts the services and sets it) !!!!!\n");
            None
        }
    }
}

/// Blocking [`wait_until`] for tests without a runtime: polls `f` every
/// 100 ms until it returns true or `timeout` passes.
pub fn wait_until_blocking(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Reads every message value of a Kafka topic from the beginning (all
/// partitions), stopping after 3 s without a message. Order is kept per
/// partition, which is the order that matters per key.
pub fn read_topic_raw(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let group = format!("reader-{}", std::process::id());
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("kafka consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    let mut idle = std::time::Instant::now();
    loop {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
            idle = std::time::Instant::now();
        }
        let quiet = idle.elapsed() > Duration::from_secs(3);
        if (quiet && !out.is_empty()) || start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    out
}

/// How many members the Kafka consumer group `group` has right now (0 when
/// the broker cannot say). Blocking: call it from `spawn_blocking`.
pub fn kafka_group_members(brokers: &str, group: &str) -> usize {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Ok(c) = ClientConfig::new().set("bootstrap.servers", brokers).create::<BaseConsumer>() else { return 0 };
    c.fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()
        .and_then(|l| l.groups().iter().find(|g| g.name() == group).map(|g| g.members().len()))
        .unwrap_or(0)
}

/// The demo config (`lianqin_pipeline::demo::demo_config_toml`) with the bus
/// switched to Kafka under a topic prefix and a consumer group of its own
/// (groups shared between concurrent tests would rebalance each other).
pub fn kafka_config(sim: &lianqin_sim::Simulation, brokers: &str, prefix: &str) -> String {
    use lianqin_pipeline::demo;
    let text = demo::demo_config_toml(sim, demo::DEMO_KEY_ENV);
    let text = text.replace("[pipeline]\n", &format!("[pipeline]\ngroup = \"{prefix}pipeline\"\n"));
    let out = text.replace(
        "[bus]\nkind = \"embedded\"        # no services needed; \"kafka\" for production\n",
        &format!(
            "[bus]\nkind = \"kafka\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\n[bus.kafka]\nbrokers = \"{brokers}\"\npartitions = 3\nreplication_factor = 1\n"
        ),
    );
    assert!(out.contains("kind = \"kafka\""), "demo config layout changed: cannot switch the bus to Kafka");
    out
}

/// Asserts that no library history holds the same record version twice
/// (same id, content hash and source): nothing doubled.
pub async fn assert_no_doubled_library_rows(data_dir: &Path) {
    for (t, id) in
        [("matter_history", "matter_id"), ("element_history", "element_id"), ("matter_event_history", "event_id")]
    {
        let sql = format!(
            "SELECT count(*) FROM (SELECT {id}, content_hash, source_id FROM {t} GROUP BY 1, 2, 3 HAVING count(*) > 1)"
        );
        assert_eq!(count(data_dir, &sql).await, 0, "{t} has doubled rows");
    }
}

/// The element id the shipped mappings give a person or vehicle identified
/// by `value` in the hub on `data_dir` (`person_token`, keyed by that data
/// dir's secret: `LIANQIN_TOKEN_KEY` or `<data_dir>/secrets/token.key`).
pub fn person_token(data_dir: &Path, value: &str) -> String {
    lianqin_pipeline::mapping::personal::data_dir_key(data_dir)
        .expect("person-token key")
        .token(value)
        .expect("a non-empty value")
}

/// A `lianqin` command's stdout and stderr, together (for messages).
pub fn cli_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fresh data dir after `lianqin demo --once` (its own simulators and
/// libraries).
pub fn demo_once() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(lianqin_bin())
        .args(["demo", "--once", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run lianqin demo");
    assert!(out.status.success(), "{}", cli_text(&out));
    dir
}

/// [`cli_run`] logged in with `--as user` when a user is given.
pub fn cli_as(d: &Path, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut a = args.to_vec();
    if let Some(u) = user {
        a.extend(["--as", u]);
    }
    cli_run(d, user, &a)
}

/// Runs `lianqin <args> --data-dir d` with the built-in policy, as `user`
/// (their demo password in `LIANQIN_PASSWORD`) when given.
pub fn cli_run(d: &Path, user: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(lianqin_bin());
    c.args(args).arg("--data-dir").arg(d).env_remove("LIANQIN_POLICIES");
    if let Some(u) = user {
        c.env("LIANQIN_PASSWORD", demo_password(u));
    }
    c.output().expect("run lianqin")
}

/// [`cli_run`] that must succeed; its output.
pub fn cli_ok(d: &Path, user: Option<&str>, args: &[&str]) -> String {
    let o = cli_run(d, user, args);
    assert!(o.status.success(), "{args:?}: {}", cli_text(&o));
    cli_text(&o)
}

/// [`cli_run`] that must fail with a message containing `why`, without a panic.
pub fn cli_refused(d: &Path, user: Option<&str>, args: &[&str], why: &str) {
    let o = cli_run(d, user, args);
    assert!(!o.status.success(), "{args:?} must be refused: {}", cli_text(&o));
    assert!(cli_text(&o).contains(why), "{args:?}: {}", cli_text(&o));
    assert!(!cli_text(&o).contains("panicked"), "{}", cli_text(&o));
}

/// A mapping whose `note` cast fails at run time for `n = '一百'` (with
/// [`POISON_STRICT`]) — the poison record of the quarantine and replay tests.
pub const POISON_STRICT: &str = "CAST(CAST(n AS INT) + 1 AS VARCHAR)";
/// The fix: Chinese numerals of a hundred are read.
pub const POISON_FIXED: &str = "CAST(CASE WHEN n = '一百' THEN 100 ELSE CAST(n AS INT) END + 1 AS VARCHAR)";

/// The poison-test mapping `name` at `version` with `note` as the cast.
pub fn poison_mapping(name: &str, version: &str, note: &str) -> String {
    format!(
        r#"
name = "{name}"
version = "{version}"
key_field = "id"
[fields]
id = {{ type = "utf8", required = true }}
n = "utf8"
[[outputs]]
library = "matter_event"
sql = "SELECT _row, 'pt:' || id AS event_id, 'pt:' || id AS matter_id, 'intake' AS stage, {note} AS note FROM raw"
"#
    )
}

/// Writes `dir/name` atomically: one JSON line `{"id": "r<i>", "n": …}` per
/// `i` in `ids`, `n` = `一百` where `bad(i)`, else `i`.
pub fn drop_lines(dir: &Path, name: &str, ids: std::ops::Range<usize>, bad: impl Fn(usize) -> bool) {
    let mut text = String::new();
    for i in ids {
        let n = if bad(i) { "一百".to_string() } else { i.to_string() };
        text.push_str(&serde_json::json!({"id": format!("r{i}"), "n": n}).to_string());
        text.push('\n');
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Clear citizen IDs (GB 11643, 18 characters, valid check digit) in `s`.
pub fn citizen_ids(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(17) {
        let w = &b[i..i + 18];
        let digits =
            w[..17].iter().all(u8::is_ascii_digit) && (w[17].is_ascii_digit() || w[17] == b'X' || w[17] == b'x');
        let bounded =
            (i == 0 || !b[i - 1].is_ascii_alphanumeric()) && b.get(i + 18).is_none_or(|c| !c.is_ascii_alphanumeric());
        if digits && bounded {
            let id = String::from_utf8_lossy(w).to_string();
            if lianqin_domain::validate_citizen_id(&id).is_ok() {
                out.push(id);
            }
        }
    }
    out
}

/// Mobile phone numbers (`1[3-9]` + 9 digits, not inside a longer number
/// or a hex hash/token).
pub fn phones(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(10) {
        let w = &b[i..i + 11];
        let bounded =
            (i == 0 || !b[i - 1].is_ascii_alphanumeric()) && b.get(i + 11).is_none_or(|c| !c.is_ascii_alphanumeric());
        if bounded && w[0] == b'1' && (b'3'..=b'9').contains(&w[1]) && w.iter().all(u8::is_ascii_digit) {
            out.push(String::from_utf8_lossy(w).to_string());
        }
    }
    out
}

/// The events of flow `flow`'s outbox `<d>/flows/<file>`, each line opened
/// with the data dir's keys (the outbox is sealed at rest).
pub fn outbox_lines(d: &Path, flow: &str, file: &str) -> Vec<String> {
    let keys = lianqin_pipeline::sealed::Keys::new(d);
    std::fs::read_to_string(d.join("flows").join(file))
        .unwrap_or_else(|e| panic!("outbox {file}: {e}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| lianqin_pipeline::flows::open_line(&keys, flow, l.to_string()).expect("outbox line opens"))
        .collect()
}
