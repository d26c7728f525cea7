//! A departmental PostgreSQL table (自然资源 land-use violation cases) →
//! `sql` connector → embedded bus → `nr_land_violation` mapping → element
//! and matter libraries → SQL. Needs `LIANQIN_PG_URL` (tests/run.sh starts
//! tests/services/postgres.sh and sets it). The same cases from a MySQL /
//! MariaDB table need `LIANQIN_MYSQL_URL` (tests/services/mariadb.sh).

use std::process::Command;

use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_tests::count;

fn pg_url() -> Option<String> {
    lianqin_tests::require_service("LIANQIN_PG_URL")
}

/// Runs SQL with psql (the client the service script relies on too).
fn psql(url: &str, sql: &str) {
    let out =
        Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]).output().expect("run psql");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The department's case table (违法用地案件) in `schema`.
fn case_table(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.wfyd_case (
           ajbh varchar(32) PRIMARY KEY, ajmc text, wfzt text, tyshxydm varchar(18), sfzh varchar(18),
           dkbh text, tdyt char(4), wfmj numeric(12,2), zygdmj numeric(12,2), ajzt text,
           xzqdm varchar(6), jd double precision, wd double precision, fxsj timestamp,
           sfsc boolean NOT NULL DEFAULT false, update_time timestamptz NOT NULL);"
    )
}

fn hub_config(schema: &str) -> String {
    let mapping = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/mappings/nr_land_violation.toml");
    format!(
        r#"node = "sql-test"
[bus]
kind = "embedded"

# 自然资源和规划局 违法用地案件: the department's PostgreSQL case table.
[[sources]]
id = "nr_land_violation"
department = "natural_resources"
mapping = "{mapping}"
interval_secs = 60
[sources.connector]
type = "sql"
url = "${{LIANQIN_PG_URL}}"
table = "{schema}.wfyd_case"
watermark_column = "update_time"
key_column = "ajbh"
batch_size = 4
delete_column = "sfsc"
"#
    )
}

async fn cycle(cfg_text: &str, d: &std::path::Path) {
    let cfg = HubConfig::parse(cfg_text, "sql-test.toml", d).expect("config");
    let hub = Hub::open(cfg, d).await.expect("hub");
    let synced = hub.sync_sources_once().await;
    for (src, r) in &synced {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn land_violation_cases_from_postgres_reach_the_libraries() {
    let Some(url) = pg_url() else { return };
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let schema = format!("zfjc_{}_{n}", std::process::id());
    psql(
        &url,
        &format!(
            "CREATE SCHEMA {schema}; {table}
             INSERT INTO {schema}.wfyd_case VALUES
               ('WF2025001', '递铺街道某村违法占用耕地建房案', '张某', NULL, '330502198001011231', 'DK-3305230001', '0101', 320.50, 320.50, '立案', '330523', 119.68, 30.64, '2025-03-15 10:30:00', false, '2025-03-15 02:30:00+00'),
               ('WF2025002', '某建材公司非法占用林地堆放案', '湖州某建材有限公司', '91350200776049653A', NULL, 'DK-3305230002', '0301', 1500.00, 0, '调查', '330523', 119.70, 30.62, '2025-03-16 09:00:00', false, '2025-03-16 01:00:00+00'),
               ('WF2025003', '河道管理范围内违法建设案', '李某', NULL, NULL, 'DK-3305020003', '1101', 80.00, 0, '处罚决定', '330502', 120.09, 30.89, '2025-03-17 14:00:00', false, '2025-03-20 00:00:00+00'),
               ('WF2025004', '违法占用园地案', '王某', NULL, NULL, 'DK-3305020004', '0202', 60.00, 0, '执行', '330502', 120.10, 30.88, '2025-03-18 08:00:00', false, '2025-03-20 00:00:00+00'),
               ('WF2025005', '违法占用草地案', '赵某', NULL, NULL, 'DK-3305230005', '0401', 200.00, 0, '结案', '330523', 119.60, 30.60, '2025-03-18 09:00:00', false, '2025-03-20 00:00:00+00'),
               ('WF2025006', '违法占用水田案', '钱某', NULL, NULL, 'DK-3305230006', '0101', 12000.00, 12000.00, '立案', '330523', 119.61, 30.61, '2025-03-19 09:00:00', false, '2025-03-20 00:00:00+00'),
               ('WF2025007', '违法采砂占地案', '孙某', NULL, NULL, 'DK-3305230007', '1205', 900.00, 0, '线索', '330523', 119.62, 30.62, '2025-03-19 10:00:00', false, '2025-03-20 00:00:00+00');",
            table = case_table(&schema),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = hub_config(&schema);
    cycle(&text, d).await;

    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 7);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'nr:%'").await, 7);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    // Category c (farmland / forest / grassland / sand occupation) and importance.
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'nr:%' AND category = 'c'").await, 5);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025006' AND important").await, 1);
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND stage = 'intake' AND division = '330523'"
        )
        .await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025005' AND stage = 'summary' AND closed_at IS NOT NULL").await, 1);
    // Parcels as natural elements by land-use class; parties by strong id.
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE id_type = 'parcel'").await, 7);
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE id_type = 'parcel' AND kind = 'farmland'").await, 2);
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE element_id = 'parcel:DK-3305230002' AND kind = 'forest'").await,
        1
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE element_id = 'parcel:DK-3305230007' AND kind = 'sand'").await,
        1
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE element_id = 'uscc:91350200776049653A' AND kind = 'unit_place'")
            .await,
        1
    );
    assert_eq!(
        count(
            d,
            &format!(
                "SELECT count(*) FROM element WHERE element_id = '{}' AND kind = 'person'",
                lianqin_tests::person_token(d, "330502198001011231")
            )
        )
        .await,
        1
    );
    // Exact decimals survive (numeric → text → float64 in the mapping).
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND content LIKE '%320.5%'").await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter_event WHERE matter_id LIKE 'nr:%'").await, 7);

    // The department moves a case on and files a new one; the hub restarts
    // from its checkpoint: only the changes arrive.
    psql(
        &url,
        &format!(
            "UPDATE {schema}.wfyd_case SET ajzt = '结案', update_time = now() WHERE ajbh = 'WF2025001';
             INSERT INTO {schema}.wfyd_case VALUES ('WF2025008', '违法占用旱地案', '周某', NULL, NULL, 'DK-3305230008', '0103', 45.00, 45.00, '立案', '330523', 119.63, 30.63, '2025-03-21 09:00:00', false, now());
             UPDATE {schema}.wfyd_case SET sfsc = true, update_time = now() WHERE ajbh = 'WF2025004';"
        ),
    );
    cycle(&text, d).await;
    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 10, "7 + 3 changed rows, nothing re-read");
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND stage = 'summary'").await, 1);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter_event WHERE matter_id = 'nr:WF2025001'").await,
        2,
        "intake, then summary"
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025008'").await, 1);
    assert_eq!(count(d, "SELECT count(*) FROM matter_history WHERE matter_id = 'nr:WF2025004' AND deleted").await, 1);

    // A third cycle with nothing new changes nothing.
    cycle(&text, d).await;
    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 10);
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// `lianqin run` with a PostgreSQL source, killed with SIGKILL mid-ingest and
/// restarted: every row of the table is in the libraries exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_sql_ingest_then_restart_is_exact() {
    let Some(url) = pg_url() else { return };
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let schema = format!("zfjc_kill_{}_{n}", std::process::id());
    const ROWS: i64 = 12_000;
    psql(
        &url,
        &format!(
            "CREATE SCHEMA {schema}; {table}
             INSERT INTO {schema}.wfyd_case
             SELECT 'WF' || lpad(g::text, 7, '0'), '违法用地案' || g, '当事人' || g, NULL, NULL,
                    'DK-' || g, '0101', 100 + g % 50, 0, '立案', '330523', 119.6, 30.6,
                    TIMESTAMP '2025-03-15 10:30:00', false,
                    TIMESTAMPTZ '2025-03-01 00:00:00+00' + (g / 40) * INTERVAL '1 second'
             FROM generate_series(1, {ROWS}) g;",
            table = case_table(&schema),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = d.join("hub.toml");
    std::fs::write(&conf, hub_config(&schema).replace("batch_size = 4", "batch_size = 50")).unwrap();
    // Each run's log goes to a file, shown when the test fails.
    let log = |run: &str| d.join(format!("hub-{run}.log"));
    let spawn = |run: &str| {
        let out = std::fs::File::create(log(run)).unwrap();
        std::process::Command::new(lianqin_tests::lianqin_bin())
            .args(["run", "--config"])
            .arg(&conf)
            .arg("--data-dir")
            .arg(d)
            .env("RUST_LOG", "warn,lianqin_pipeline=info")
            .stdout(std::process::Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn lianqin run")
    };
    let raw_rows = || async {
        match lianqin_tests::try_engine(d).await {
            Ok(e) => e.scalar_i64("SELECT count(*) FROM raw_nr_land_violation").await.unwrap_or(-1),
            Err(_) => -1,
        }
    };
    let mut child = spawn("first");
    let mid = lianqin_tests::wait_until(std::time::Duration::from_secs(180), || async {
        let n = raw_rows().await;
        n > 0 && n < ROWS
    })
    .await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(mid, "never observed the hub mid-ingest");
    let at_kill = raw_rows().await;

    let mut child = spawn("restart");
    let matters = || async {
        let Ok(e) = lianqin_tests::try_engine(d).await else { return -1 };
        e.scalar_i64("SELECT count(*) FROM matter WHERE matter_id LIKE 'nr:%'").await.unwrap_or(-1)
    };
    // Opening the libraries is not free: look every 2 s, so the checks do
    // not slow the hub down on a busy CI machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut done = false;
    while !done && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        done = matters().await == ROWS;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    child.kill().ok();
    let _ = child.wait();
    if !done {
        let tail = |run: &str| {
            let text = std::fs::read_to_string(log(run)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        panic!(
            "hub did not catch up after restart (killed at {at_kill} raw rows; now {} matters, {} raw rows of {ROWS})\n\
             --- first run, last lines ---\n{}\n--- restart, last lines ---\n{}",
            matters().await,
            raw_rows().await,
            tail("first"),
            tail("restart")
        );
    }
    // The libraries are the system of record. The raw table is committed
    // after them; a batch whose library commits landed just before the kill
    // is recognized as a repeat on restart and is not written to the raw
    // table again (a pipeline limitation, reported; not a connector loss):
    // so the raw table may hold fewer rows, never more.
    let raw = count(d, "SELECT count(*) FROM raw_nr_land_violation").await;
    eprintln!("kill -9 at {at_kill} raw rows; after restart: raw {raw} of {ROWS}");
    assert!(raw <= ROWS, "raw {raw}");
    assert_eq!(
        count(d, "SELECT count(DISTINCT source_key) FROM raw_nr_land_violation").await,
        raw,
        "no row twice in raw"
    );
    assert_eq!(
        count(d, "SELECT count(DISTINCT matter_id) FROM matter_history WHERE matter_id LIKE 'nr:%'").await,
        ROWS
    );
    assert_eq!(count(d, "SELECT count(*) FROM (SELECT matter_id, content_hash FROM matter_history GROUP BY 1, 2 HAVING count(*) > 1)").await, 0);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// Runs SQL with the `mariadb` client against a `mysql://user:pw@host:port/db` URL.
fn mysql_cli(url: &str, sql: &str) {
    let rest = url.split_once("://").map(|x| x.1).expect("mysql:// URL");
    let (auth, hostdb) = rest.rsplit_once('@').expect("user:password@ in the URL");
    let (user, pass) = auth.split_once(':').expect("user:password");
    let (hostport, db) = hostdb.split_once('/').expect("/database in the URL");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3306"));
    let out = Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", host, "-P", port, "-u", user, db, "-e", sql])
        .env("MYSQL_PWD", pass)
        .output()
        .expect("run the mariadb client");
    assert!(out.status.success(), "mariadb failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The land-violation cases kept by a department in MySQL/MariaDB reach the
/// same libraries through the same mapping; an update and a delete flag
/// arrive as new versions on the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn land_violation_cases_from_mysql_reach_the_libraries() {
    let Some(url) = lianqin_tests::require_service("LIANQIN_MYSQL_URL") else { return };
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let table = format!("wfyd_case_{}_{n}", std::process::id());
    mysql_cli(
        &url,
        &format!(
            "CREATE TABLE {table} (
               ajbh varchar(32) PRIMARY KEY, ajmc text, wfzt text, tyshxydm varchar(18), sfzh varchar(18),
               dkbh text, tdyt char(4), wfmj decimal(12,2), zygdmj decimal(12,2), ajzt text,
               xzqdm varchar(6), jd double, wd double, fxsj datetime,
               sfsc tinyint(1) NOT NULL DEFAULT 0, update_time datetime(6) NOT NULL,
               KEY wm (update_time, ajbh)) DEFAULT CHARSET utf8mb4;
             INSERT INTO {table} VALUES
               ('WF2025001', '递铺街道某村违法占用耕地建房案', '张某', NULL, '330502198001011231', 'DK-3305230001', '0101', 320.50, 320.50, '立案', '330523', 119.68, 30.64, '2025-03-15 10:30:00', 0, '2025-03-15 02:30:00'),
               ('WF2025002', '某建材公司非法占用林地堆放案', '湖州某建材有限公司', '91350200776049653A', NULL, 'DK-3305230002', '0301', 1500.00, 0, '调查', '330523', 119.70, 30.62, '2025-03-16 09:00:00', 0, '2025-03-16 01:00:00'),
               ('WF2025003', '河道管理范围内违法建设案', '李某', NULL, NULL, 'DK-3305020003', '1101', 80.00, 0, '处罚决定', '330502', 120.09, 30.89, '2025-03-17 14:00:00', 0, '2025-03-20 00:00:00'),
               ('WF2025004', '违法占用园地案', '王某', NULL, NULL, 'DK-3305020004', '0202', 60.00, 0, '执行', '330502', 120.10, 30.88, '2025-03-18 08:00:00', 0, '2025-03-20 00:00:00'),
               ('WF2025005', '违法占用草地案', '赵某', NULL, NULL, 'DK-3305230005', '0401', 200.00, 0, '结案', '330523', 119.60, 30.60, '2025-03-18 09:00:00', 0, '2025-03-20 00:00:00');"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = hub_config("unused")
        .replace("${LIANQIN_PG_URL}", "${LIANQIN_MYSQL_URL}")
        .replace("table = \"unused.wfyd_case\"", &format!("table = \"{table}\""));
    cycle(&text, d).await;

    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 5);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'nr:%'").await, 5);
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND stage = 'intake' AND division = '330523'"
        )
        .await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025005' AND stage = 'summary' AND closed_at IS NOT NULL").await, 1);
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE element_id = 'parcel:DK-3305230002' AND kind = 'forest'").await,
        1
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE element_id = 'uscc:91350200776049653A' AND kind = 'unit_place'")
            .await,
        1
    );
    assert_eq!(
        count(
            d,
            &format!(
                "SELECT count(*) FROM element WHERE element_id = '{}' AND kind = 'person'",
                lianqin_tests::person_token(d, "330502198001011231")
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND content LIKE '%320.5%'").await,
        1
    );

    mysql_cli(
        &url,
        &format!(
            "UPDATE {table} SET ajzt = '结案', update_time = '2025-04-01 00:00:00' WHERE ajbh = 'WF2025001';
             UPDATE {table} SET sfsc = 1, update_time = '2025-04-01 00:00:00' WHERE ajbh = 'WF2025004';"
        ),
    );
    cycle(&text, d).await;
    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 7);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id = 'nr:WF2025001' AND stage = 'summary'").await, 1);
    assert_eq!(count(d, "SELECT count(*) FROM matter_history WHERE matter_id = 'nr:WF2025004' AND deleted").await, 1);
    // Nothing new: nothing changes.
    cycle(&text, d).await;
    assert_eq!(count(d, "SELECT count(*) FROM raw_nr_land_violation").await, 7);
    mysql_cli(&url, &format!("DROP TABLE {table}"));
}
