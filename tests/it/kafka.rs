//! The hub on a real Apache Kafka broker (`tests/services/kafka.sh`, started
//! by `tests/run.sh`): sources → Kafka → libraries → SQL with known counts,
//! change feeds with one event per library change in order per key, and a
//! kill -9 of the hub mid-ingest. Skipped (with a message) when
//! `LIANQIN_KAFKA_BROKERS` is not set.

use std::collections::BTreeMap;
use std::time::Duration;

use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::demo;
use lianqin_pipeline::hub::Hub;
use lianqin_sim::SimConfig;
use lianqin_tests::count;

use serde_json::Value;

fn brokers() -> Option<String> {
    lianqin_tests::require_service("LIANQIN_KAFKA_BROKERS")
}

/// The demo config with the bus switched to Kafka under a fresh topic prefix.
pub fn kafka_config(sim: &lianqin_sim::Simulation, brokers: &str, prefix: &str) -> String {
    lianqin_tests::kafka_config(sim, brokers, prefix)
}

fn prefix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{n}.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_through_kafka_to_libraries_and_change_feeds() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = SimConfig {
        incidents: 60,
        tickets: 40,
        enterprises: 20,
        cases: 20,
        env_files: 1,
        env_rows_per_file: 10,
        ..Default::default()
    };
    let sim = demo::start_simulation(d, cfg).await.unwrap();
    let prefix = prefix();
    let text = kafka_config(&sim, &brokers, &prefix);
    assert!(text.contains("kind = \"kafka\""));
    let conf = HubConfig::parse(&text, "kafka-test", d).unwrap();
    {
        let hub = Hub::open(conf.clone(), d).await.unwrap();
        assert_eq!(hub.bus().kind(), "kafka");
        let (synced, processed) = demo::cycle(&hub).await.unwrap();
        for (src, r) in &synced {
            assert!(r.is_ok(), "{src}: {r:?}");
        }
        assert!(processed.read > 0);
    }
    let truth = sim.truth();
    let ok_110 = truth
        .incidents
        .iter()
        .filter(|v| v.get("jjdbh").and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
        .count() as i64;
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await, ok_110);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await,
        truth.tickets.len() as i64
    );
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, truth.broken.len() as i64);

    // A second pass after a change: exactly the changed records are new versions.
    let before = count(d, "SELECT count(*) FROM matter_history").await;
    let changed = sim.advance(6) as i64;
    {
        let hub = Hub::open(conf.clone(), d).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    assert_eq!(count(d, "SELECT count(*) FROM matter_history").await, before + changed);

    // Change feed: one event per matter_history row, in order per key.
    let mut events: Vec<Value> = Vec::new();
    for bytes in lianqin_tests::read_topic_raw(&brokers, &lianqin_bus::change_topic(&prefix, "matter")) {
        events.push(serde_json::from_slice(&bytes).unwrap());
    }
    assert_eq!(events.len() as i64, before + changed, "one event per library change");
    // Every department's rows: their sensitive columns are sealed on the topic.
    let contents: Vec<&str> = events.iter().filter_map(|e| e["row"]["content"].as_str()).collect();
    assert!(!contents.is_empty() && contents.iter().all(|c| c.starts_with("lqe1:")), "{:?}", contents.first());
    for e in &events {
        // (decimal fractions dropped: a longitude's digits are no phone)
        let mut t = String::new();
        let text = e.to_string();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '.' && chars.peek().is_some_and(char::is_ascii_digit) {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            } else {
                t.push(c);
            }
        }
        assert!(lianqin_tests::citizen_ids(&t).is_empty() && lianqin_tests::phones(&t).is_empty(), "{t}");
    }
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for e in &events {
        let id = e["id"].as_str().unwrap().to_string();
        let t = e["row"]["ingested_at"].as_str().unwrap_or_default().to_string();
        if let Some(prev) = last.get(&id) {
            assert!(&t >= prev, "events of {id} out of order");
        }
        last.insert(id, t);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_one_killed_the_other_takes_over() {
    use std::process::{Child, Command, Stdio};
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = SimConfig {
        incidents: 1500,
        tickets: 1200,
        enterprises: 40,
        cases: 40,
        env_files: 1,
        env_rows_per_file: 10,
        faults: lianqin_sim::Faults { slow_every: Some((1, Duration::from_millis(40))), ..Default::default() },
        ..Default::default()
    };
    let key = cfg.api_key.clone();
    let sim = demo::start_simulation(d, cfg).await.unwrap();
    let conf = d.join("hub.toml");
    let prefix = prefix();
    std::fs::write(&conf, kafka_config(&sim, &brokers, &prefix)).unwrap();
    let spawn = |role: &str, node: &str| -> Child {
        Command::new(lianqin_tests::lianqin_bin())
            .args(["run", "--role", role, "--node", node, "--config"])
            .arg(&conf)
            .arg("--data-dir")
            .arg(d)
            .env(demo::DEMO_KEY_ENV, &key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut w1 = spawn("worker", "w1");
    assert!(
        lianqin_tests::wait_until(Duration::from_secs(60), || async {
            d.join("lake/raw_police_110/_delta_log").is_dir()
        })
        .await
    );
    let mut w2 = spawn("worker", "w2");
    // Both workers in the consumer group (`<prefix>pipeline`, see
    // `kafka_config`) before the records come.
    let group = format!("{prefix}pipeline");
    let both = lianqin_tests::wait_until(Duration::from_secs(60), || {
        let (b, g) = (brokers.clone(), group.clone());
        async move {
            tokio::task::spawn_blocking(move || lianqin_tests::kafka_group_members(&b, &g)).await.unwrap_or(0) >= 2
        }
    })
    .await;
    assert!(both, "worker w2 never joined the consumer group {group}");
    let mut s = spawn("sources", "connectors");
    let truth = sim.truth();
    let total = truth.incidents.len() as i64;
    let mid = lianqin_tests::wait_until(Duration::from_secs(120), || async {
        match lianqin_tests::try_engine(d).await {
            Ok(e) => {
                let n = e.scalar_i64("SELECT count(*) FROM raw_police_110").await.unwrap_or(-1);
                n > 0 && n < total
            }
            Err(_) => false,
        }
    })
    .await;
    w1.kill().unwrap(); // SIGKILL
    let _ = w1.wait();
    assert!(mid, "never saw the workers mid-ingest");
    let ok_110 = truth
        .incidents
        .iter()
        .filter(|v| v.get("jjdbh").and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
        .count() as i64;
    let want_12345 = truth.tickets.len() as i64;
    let done = lianqin_tests::wait_until(Duration::from_secs(300), || async {
        let Ok(e) = lianqin_tests::try_engine(d).await else { return false };
        let a = e.scalar_i64("SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await.unwrap_or(-1);
        let b = e.scalar_i64("SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await.unwrap_or(-1);
        a == ok_110 && b == want_12345
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in [&mut s, &mut w2] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(done, "the surviving worker did not finish the job");
    lianqin_tests::assert_no_doubled_library_rows(d).await;
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, truth.broken.len() as i64);
    sim.shutdown().await;
}

/// A department's own feed topic on Kafka (`[[flows]] topic`) is reconciled
/// by the flow's signed daily receipt: read back from the broker, what the
/// topic carries equals what the hub holds for the account (balanced);
/// an event that the hub does not hold for the account, forged onto the
/// topic, unbalances the next receipt and shows in its counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departments_kafka_feed_is_reconciled_by_the_daily_receipt() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = SimConfig { incidents: 40, tickets: 20, enterprises: 5, cases: 5, ..Default::default() };
    let key = sc.api_key.clone();
    let sim = demo::start_simulation(d, sc).await.unwrap();
    let prefix = prefix();
    let text = kafka_config(&sim, &brokers, &prefix)
        + "\n[[flows]]\nname = \"to-ecology\"\nuser = \"chen.ecology\"\nlibraries = [\"element\", \"matter\"]\n\
           sink = \"flows/ecology.jsonl\"\ntopic = \"feeds.ecology\"\n";
    let path = d.join("demo").join("feed.toml");
    std::fs::write(&path, &text).unwrap();
    let conf = HubConfig::parse(&text, "feed.toml", &d.join("demo")).unwrap();
    {
        let hub = Hub::open(conf.clone(), d).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    sim.shutdown().await;
    let outbox = lianqin_tests::outbox_lines(d, "to-ecology", "ecology.jsonl");
    let first: Value = serde_json::from_str(outbox.first().expect("the flow wrote events")).unwrap();
    let day = chrono::DateTime::parse_from_rfc3339(first["committed_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive()
        .to_string();
    let receipt = |n: &str| -> Value {
        let out = d.join(format!("receipt-{n}.json"));
        let o = std::process::Command::new(lianqin_tests::lianqin_bin())
            .args(["flow", "receipt", "--flow", "to-ecology", "--day", &day, "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(d)
            .arg("--out")
            .arg(&out)
            .env(demo::DEMO_KEY_ENV, &key)
            .env_remove("LIANQIN_POLICIES")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", lianqin_tests::cli_text(&o));
        let v = std::process::Command::new(lianqin_tests::lianqin_bin())
            .args(["flow", "verify"])
            .arg(&out)
            .output()
            .unwrap();
        let v = lianqin_tests::cli_text(&v);
        assert!(v.contains("signature verifies") && v.contains("on the feed topic"), "{v}");
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    };
    let r = receipt("1");
    let matter = &r["libraries"]["matter"];
    assert!(matter["held"]["rows"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(matter["published"], matter["held"], "the topic carries what the account may hold: {r}");
    assert_eq!(r["libraries"]["element"]["published"], r["libraries"]["element"]["held"], "{r}");
    assert_eq!(r["balanced"], true, "{r}");

    // A forged event on the department's topic: the receipt no longer balances.
    let mut forged = first.clone();
    forged["library"] = Value::from("matter");
    forged["id"] = Value::from("110:forged");
    forged["row"]["matter_id"] = Value::from("110:forged");
    forged["row"]["content_hash"] = Value::from("forged");
    // (published while a process holds the node's bus, as a running hub
    // would: the receipt reads beside it)
    let bus = lianqin_pipeline::hub::open_bus(&conf, d).await.unwrap();
    bus.publish_raw(&format!("{prefix}feeds.ecology"), &[("110:forged".into(), forged.to_string().into_bytes())])
        .await
        .unwrap();
    let r2 = receipt("2");
    drop(bus);
    assert_eq!(r2["balanced"], false, "{r2}");
    let m2 = &r2["libraries"]["matter"];
    assert_eq!(m2["published"]["rows"].as_u64().unwrap(), m2["held"]["rows"].as_u64().unwrap() + 1, "{r2}");
}
