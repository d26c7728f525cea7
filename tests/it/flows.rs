//! Outbound flows filtered per department: a `[[flows]]` change flow carries
//! only the rows and columns its department's user may see, and an export
//! runs with the user's permissions; both are audited.

use std::process::Command;

use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::demo;
use lianqin_pipeline::hub::Hub;
use lianqin_sim::SimConfig;
use lianqin_tests::{audit_events, lianqin_bin, secured_count};
use serde_json::Value;

fn small() -> SimConfig {
    SimConfig {
        incidents: 40,
        tickets: 30,
        enterprises: 25,
        cases: 20,
        env_files: 2,
        env_rows_per_file: 15,
        ..Default::default()
    }
}

/// A keyed hash as the policy's `hash` mask writes it (64 hex digits).
fn hashed(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_flow_carries_only_its_rows_and_masked_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    let text = demo::demo_config_toml(&sim, demo::DEMO_KEY_ENV)
        + "\n[[flows]]\nname = \"to-market\"\nuser = \"liu.market\"\nlibraries = [\"element\", \"matter\"]\nsink = \"flows/market.jsonl\"\n"
        + "\n[[flows]]\nname = \"to-ecology\"\nuser = \"chen.ecology\"\nlibraries = [\"matter\"]\nsink = \"flows/ecology.jsonl\"\n";
    let cfg_dir = d.join("demo");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg = HubConfig::parse(&text, "flows.toml", &cfg_dir).unwrap();
    let hub = Hub::open(cfg, d).await.unwrap();
    demo::cycle(&hub).await.unwrap();
    hub.audit().sync();

    // The outbox is sealed at rest: no event reads in clear from the file.
    let raw = std::fs::read_to_string(d.join("flows/market.jsonl")).unwrap();
    assert!(raw.lines().all(|l| l.starts_with("lqe1:market.")), "outbox sealed with market's key");
    let lines: Vec<Value> = lianqin_tests::outbox_lines(d, "to-market", "market.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let elements: Vec<&Value> = lines.iter().filter(|v| v["library"] == "element").collect();
    let matters: Vec<&Value> = lines.iter().filter(|v| v["library"] == "matter").collect();
    assert!(!elements.is_empty(), "flow delivered nothing");
    // Rows: market's own or units/places (elements), category d or own (matters).
    for e in &elements {
        let r = &e["row"];
        assert!(r["kind"] == "unit_place" || r["department"] == "market", "element leaked to market: {r}");
        // Identifiers (labelled citizen_id) are keyed hashes (the data dir's
        // token key), phones masked.
        assert!(r.get("id_value").is_none_or(|v| v.is_null() || hashed(v)), "id_value leaked: {r}");
        if let Some(p) = r.get("phone").and_then(Value::as_str) {
            assert!(p.contains('*'), "phone not masked: {r}");
        }
    }
    for m in &matters {
        let r = &m["row"];
        assert!(r["category"] == "d" || r["department"] == "market", "matter leaked to market: {r}");
    }
    // The ecology flow: matters of categories a/b or ecology's own only.
    let eco: Vec<Value> = lianqin_tests::outbox_lines(d, "to-ecology", "ecology.jsonl")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!eco.is_empty(), "ecology flow delivered nothing");
    for m in &eco {
        let r = &m["row"];
        assert_eq!(m["library"], "matter");
        assert!(
            r["category"] == "a" || r["category"] == "b" || r["department"] == "ecology",
            "matter leaked to ecology: {r}"
        );
    }
    assert_eq!(eco.len() as i64, secured_count(d, "chen.ecology", "SELECT count(*) FROM matter_history").await);
    assert!(
        (eco.len() as i64) < lianqin_tests::count(d, "SELECT count(*) FROM matter_history").await,
        "the ecology flow must not carry every matter"
    );
    // Exactly the rows the market user sees through SQL.
    assert_eq!(elements.len() as i64, secured_count(d, "liu.market", "SELECT count(*) FROM element_history").await);
    assert_eq!(matters.len() as i64, secured_count(d, "liu.market", "SELECT count(*) FROM matter_history").await);

    use lianqin_audit::{EventKind, Outcome};
    let events = audit_events(d);
    let flows: Vec<_> = events.iter().filter(|e| e.kind == EventKind::Flow && e.user == "liu.market").collect();
    assert!(!flows.is_empty(), "flow deliveries are audited");
    assert!(flows.iter().all(|e| e.department == "market" && e.outcome == Outcome::Success));
    let delivered: u64 = flows.iter().filter(|e| e.tables == ["element_history"]).map(|e| e.rows.unwrap_or(0)).sum();
    assert_eq!(delivered, elements.len() as u64);
    drop(hub);

    // Export: the same enforcement, one audited `export` entry.
    let out_file = d.join("market-elements.jsonl");
    let out = Command::new(lianqin_bin())
        .args([
            "export",
            "--as",
            "liu.market",
            "--table",
            "element",
            "--where",
            "kind = 'unit_place'",
            "--format",
            "jsonl",
            "--out",
        ])
        .arg(&out_file)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("liu.market"))
        .arg("--data-dir")
        .arg(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> =
        std::fs::read_to_string(&out_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        rows.len() as i64,
        secured_count(d, "liu.market", "SELECT count(*) FROM element WHERE kind = 'unit_place'").await
    );
    assert!(rows.iter().all(|r| r.get("id_value").is_none_or(|v| v.is_null() || hashed(v))), "{rows:?}");
    // A user without the table gets nothing and the refusal is audited.
    let denied = d.join("denied.csv");
    let out = Command::new(lianqin_bin())
        .args(["export", "--as", "zhao.aux", "--table", "raw_police_110", "--out"])
        .arg(&denied)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("zhao.aux"))
        .arg("--data-dir")
        .arg(d)
        .output()
        .unwrap();
    assert!(!out.status.success() && !denied.exists());
    let events = audit_events(d);
    let ex = events.iter().find(|e| e.kind == EventKind::Export && e.user == "liu.market").expect("export audited");
    assert_eq!(ex.department, "market");
    assert_eq!(ex.rows, Some(rows.len() as u64));
    assert_eq!(ex.tables, vec!["element_history".to_string()]);
    assert!(ex.detail["destination"].as_str().unwrap().ends_with("market-elements.jsonl"));
    assert!(
        events.iter().any(|e| e.kind == EventKind::Export && e.user == "zhao.aux" && e.outcome == Outcome::Failure)
    );
}
