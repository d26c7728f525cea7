//! `/metrics` of `lianqin run` (issue 15 item 2): Prometheus text that a
//! parser reads, whose counters match the libraries; a failing source shows
//! in its run counter and recovers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lianqin_tests::{lianqin_bin, try_engine, wait_until};

async fn count(d: &Path, sql: &str) -> i64 {
    match try_engine(d).await {
        Ok(e) => e.scalar_i64(sql).await.unwrap_or(-1),
        Err(_) => -1,
    }
}

/// The samples of a scrape: `name{labels}` → value.
async fn scrape(url: &str) -> Result<BTreeMap<String, f64>, String> {
    let text = reqwest::get(url).await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("not Prometheus text: {e}\n{text}"))?;
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or(0.0),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_libraries_and_show_a_failing_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = d.join("drop");
    let missing = d.join("not-yet");
    std::fs::create_dir_all(&drop).unwrap();
    lianqin_tests::drop_lines(&drop, "a.jsonl", 0..500, |i| i % 100 == 7);
    std::fs::write(
        d.join("metrics_test.toml"),
        lianqin_tests::poison_mapping("metrics_test", "1", lianqin_tests::POISON_STRICT),
    )
    .unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, pg_port, console_port) = (free(), free(), free());
    let config = d.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"node = "metrics-test"
[bus]
kind = "embedded"
[metrics]
listen = "127.0.0.1:{port}"
[server]
listen = "127.0.0.1:{pg_port}"
[console]
listen = "127.0.0.1:{console_port}"
[[sources]]
id = "metrics_test"
department = "police"
mapping = "{m}"
interval_secs = 1
[sources.connector]
type = "file"
dir = "{drop}"
format = "jsonl"
key_columns = ["id"]
[[sources]]
id = "metrics_broken"
department = "police"
mapping = "{m}"
interval_secs = 1
[sources.connector]
type = "file"
dir = "{missing}"
format = "jsonl"
key_columns = ["id"]
"#,
            m = d.join("metrics_test.toml").display(),
            drop = drop.display(),
            missing = missing.display(),
        ),
    )
    .unwrap();
    let data = d.join("data");
    let log = std::fs::File::create(d.join("hub.log")).unwrap();
    let mut child = Command::new(lianqin_bin())
        .args(["run", "--demo-users", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lianqin run");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let landed = wait_until(Duration::from_secs(120), || async {
        count(&data, "SELECT count(*) FROM quarantine").await == 5
            && count(&data, "SELECT count(*) FROM matter_event_history").await == 495
    })
    .await;
    let log_tail = || std::fs::read_to_string(d.join("hub.log")).unwrap_or_default();
    assert!(landed, "the file did not land: {}", log_tail());
    // The counters are updated after each commit: wait for the backlog to drain.
    let drained = wait_until(Duration::from_secs(30), || async {
        let m = scrape(&url).await.unwrap_or_default();
        m.get("lianqin_bus_backlog{topic=lianqin.raw.metrics_test}") == Some(&0.0)
            && m.get("lianqin_records_accepted_total{source=metrics_test}") == Some(&495.0)
    })
    .await;
    let m = scrape(&url).await.unwrap();
    assert!(drained, "{m:#?}\n{}", log_tail());
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no sample {k}: {m:#?}"));
    assert_eq!(get("lianqin_records_quarantined_total{source=metrics_test}"), 5.0);
    assert_eq!(get("lianqin_records_read_total{source=metrics_test}"), 500.0);
    assert_eq!(get("lianqin_source_records_published_total{source=metrics_test}"), 500.0);
    assert_eq!(
        get("lianqin_batch_seconds_count{source=metrics_test}"),
        get("lianqin_batches_total{source=metrics_test}"),
        "one latency observation per batch"
    );
    assert!(get("lianqin_source_runs_total{outcome=ok,source=metrics_test}") >= 1.0);
    assert!(get("lianqin_source_last_success_timestamp_seconds{source=metrics_test}") > 1.7e9);
    // The broken source: its runs fail, it never succeeded.
    assert!(get("lianqin_source_runs_total{outcome=error,source=metrics_broken}") >= 1.0, "{m:#?}");
    assert!(!m.contains_key("lianqin_source_last_success_timestamp_seconds{source=metrics_broken}"));
    // Sessions: an open Postgres-wire connection and a console login are counted.
    let pg = std::net::TcpStream::connect(("127.0.0.1", pg_port)).expect("connect to [server]");
    let gauge = |name: &'static str, want: f64| {
        let url = url.clone();
        async move {
            wait_until(Duration::from_secs(20), || async {
                scrape(&url).await.unwrap_or_default().get(name) == Some(&want)
            })
            .await
        }
    };
    assert!(gauge("lianqin_pgwire_sessions{}", 1.0).await, "{:#?}", scrape(&url).await);
    std::mem::drop(pg);
    assert!(gauge("lianqin_pgwire_sessions{}", 0.0).await, "{:#?}", scrape(&url).await);
    assert!(scrape(&url).await.unwrap()["lianqin_pgwire_connections_total{}"] >= 1.0);
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{console_port}/login"))
        .form(&[("user", "xu.ops"), ("password", "xu.ops-demo")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303, "console login");
    assert!(gauge("lianqin_console_sessions{}", 1.0).await, "{:#?}", scrape(&url).await);
    // `lianqin status` (while the hub runs) says the same.
    let st = status(&config, &data);
    assert_eq!(st["metrics_test"]["state"], "ok", "{st:#?}");
    assert_eq!(st["metrics_test"]["records"], 500);
    let open: i64 = st["metrics_test"]["quarantine"].as_array().unwrap().iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert_eq!(open, 5, "{st:#?}");
    assert!(st["metrics_test"]["quarantine"][0][0].as_str().unwrap().contains("failed at run time"), "{st:#?}");
    assert!(st["metrics_test"]["lag_p99_s"].as_f64().is_some(), "{st:#?}");
    assert_eq!(st["metrics_broken"]["state"], "failing", "{st:#?}");
    assert!(st["metrics_broken"]["last_error"][1].as_str().unwrap().contains("cannot read drop directory"), "{st:#?}");
    // Fixed (its folder appears): the next pass succeeds.
    std::fs::create_dir_all(&missing).unwrap();
    let recovered = wait_until(Duration::from_secs(30), || async {
        scrape(&url)
            .await
            .unwrap_or_default()
            .contains_key("lianqin_source_last_success_timestamp_seconds{source=metrics_broken}")
    })
    .await;
    let recovered_status =
        wait_until(Duration::from_secs(30), || async { status(&config, &data)["metrics_broken"]["state"] == "ok" })
            .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(recovered, "{}", log_tail());
    assert!(recovered_status, "status: {:#?}", status(&config, &data));
}

/// `lianqin status --json`, by source.
fn status(config: &Path, data: &Path) -> serde_json::Value {
    let out = Command::new(lianqin_bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("lianqin status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut by_source = serde_json::Map::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        by_source.insert(v["source"].as_str().unwrap().to_string(), v);
    }
    serde_json::Value::Object(by_source)
}
