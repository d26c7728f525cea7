//! Simulated departments → connectors → embedded bus → DataFusion → Delta
//! libraries → SQL, with counts derived independently from the sources'
//! ground truth.

use std::collections::BTreeSet;

use lianqin_pipeline::demo;
use lianqin_sim::{Faults, SimConfig};
use lianqin_tests::{count, engine};
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

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// An incident the 110 mapping must accept: it has a key (the broken one
/// lacks it; the one whose `jd` is text is accepted, flagged).
fn incident_ok(v: &Value) -> bool {
    s(v, "jjdbh").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_to_libraries_to_sql_with_known_counts() {
    let dir = tempfile::tempdir().unwrap();
    let sim = demo::start_simulation(dir.path(), small()).await.unwrap();
    let hub = demo::open_demo_hub(dir.path(), &sim).await.unwrap();
    let (synced, processed) = demo::cycle(&hub).await.unwrap();
    for (src, r) in &synced {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    let truth = sim.truth();
    let d = dir.path();

    // Matters: one per accepted source record, per source prefix.
    let incidents_ok = truth.incidents.iter().filter(|v| incident_ok(v)).count() as i64;
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await, incidents_ok);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await,
        truth.tickets.len() as i64
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'zhzf:%'").await, truth.cases.len() as i64);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12369:%'").await,
        truth.complaints.len() as i64
    );
    // Case outcomes (Appendix B) from the 110 handling result (处理结果),
    // known from 复盘 on: 行政案件 → admin_police, 刑事案件 → criminal.
    let mut classified = 0;
    for (cljg, outcome) in [("行政案件", "admin_police"), ("刑事案件", "criminal")] {
        let want = truth.incidents.iter().filter(|v| incident_ok(v) && s(v, "cljg") == Some(cljg)).count() as i64;
        classified += want;
        let sql = format!("SELECT count(*) FROM matter WHERE matter_id LIKE '110:%' AND outcome = '{outcome}'");
        assert_eq!(count(d, &sql).await, want, "{outcome}");
    }
    assert!(classified > 0, "the simulator serves classified incidents");
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%' AND outcome IS NOT NULL").await,
        classified
    );
    // Early warnings (预警) only for samples worse than their target class.
    assert!(count(d, "SELECT count(*) FROM matter WHERE stage = 'warning' AND matter_id LIKE 'wq:%'").await > 0);

    // Stages follow the sources' status fields.
    let want_intake = truth.incidents.iter().filter(|v| incident_ok(v) && s(v, "jqzt") == Some("接警")).count() as i64;
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%' AND stage = 'intake'").await,
        want_intake
    );

    // Enterprises: market register ∪ law-enforcement parties, one element per USCC.
    let mut usccs: BTreeSet<String> =
        truth.enterprises.iter().filter_map(|v| s(v, "uscc")).map(|x| x.to_uppercase()).collect();
    let market_only = usccs.len();
    usccs.extend(truth.cases.iter().filter_map(|v| s(v, "party_uscc")).map(|x| x.to_uppercase()));
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE id_type = 'uscc'").await,
        usccs.len() as i64,
        "market register has {market_only} codes"
    );
    // Parties that are in the register are the same element, seen by two departments.
    let shared: BTreeSet<String> = truth
        .cases
        .iter()
        .filter_map(|v| s(v, "party_uscc"))
        .map(|x| x.to_uppercase())
        .filter(|u| truth.enterprises.iter().any(|e| s(e, "uscc").map(str::to_uppercase).as_deref() == Some(u)))
        .collect();
    assert!(!shared.is_empty(), "the simulation links cases to registered enterprises");
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE id_type = 'uscc' AND sources LIKE '%law_enforcement_case%' AND sources LIKE '%market_enterprise%'").await,
        shared.len() as i64
    );

    // Invalid check digits are flagged, not dropped.
    let bad_uscc = truth
        .enterprises
        .iter()
        .filter_map(|v| s(v, "uscc"))
        .filter(|u| lianqin_domain::validate_uscc(u).is_err())
        .count() as i64;
    assert!(bad_uscc > 0, "the simulation includes invalid codes");
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE id_type = 'uscc' AND source_id = 'market_enterprise' AND flags LIKE '%uscc.%'").await,
        bad_uscc
    );

    // Every record arrived in its raw table; nothing silently dropped:
    // records read = accepted + quarantined + repeats.
    assert_eq!(processed.read, processed.accepted + processed.quarantined + processed.repeats);
    let broken = truth.broken.len() as i64;
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, broken, "broken: {:?}", truth.broken);

    // A secondary field never costs the record: the incident whose `jd` is
    // `东经120度` is a matter with its coordinate NULL and the flag `type.jd`.
    assert!(!truth.flagged.is_empty());
    for f in &truth.flagged {
        let sql = format!(
            "SELECT count(*) FROM matter WHERE matter_id = '110:{}' AND lon IS NULL AND flags LIKE '%\"{}\"%'",
            f.key, f.flag
        );
        assert_eq!(count(d, &sql).await, 1, "{sql}");
    }

    // Elements carry provenance.
    assert_eq!(
        count(d, "SELECT count(*) FROM element_history WHERE source_id IS NULL OR content_hash IS NULL OR mapping_version IS NULL").await,
        0
    );
    sim.shutdown().await;
}

/// The tables whose row counts show whether anything was stored twice.
const HISTORIES: [&str; 5] =
    ["element_history", "matter_history", "matter_event_history", "quarantine", "raw_police_110"];

/// Row counts of `tables`, in order.
async fn row_counts(d: &std::path::Path, tables: &[&str]) -> Vec<i64> {
    let e = engine(d).await;
    let mut v = Vec::new();
    for t in tables {
        v.push(e.scalar_i64(&format!("SELECT count(*) FROM {t}")).await.unwrap());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_leave_the_libraries_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    let snapshot = |d: std::path::PathBuf| async move { row_counts(&d, &HISTORIES[..4]).await };
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    let before = snapshot(d.to_path_buf()).await;
    assert!(before[0] > 0 && before[1] > 0);

    // 1. The same sources synced again: the APIs return records at the
    //    checkpoint again; nothing changes.
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        let (_, p1) = demo::cycle(&hub).await.unwrap();
        assert!(p1.repeats > 0 && p1.accepted == 0, "{p1:?}");
    }
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 2. Connector checkpoints lost: every record is fetched and published
    //    again (new bus offsets); repeats are recognized by content hash.
    let raw_before = count(d, "SELECT count(*) FROM raw_police_110").await;
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        for src in ["police_110", "hotline_12345", "market_enterprise", "law_enforcement_case"] {
            hub.bus()
                .publish(
                    &lianqin_bus::raw_topic("lianqin.", src),
                    &[],
                    Some(lianqin_bus::Checkpoint { source: src.into(), value: serde_json::json!({ "since": "" }) }),
                )
                .await
                .unwrap();
        }
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.repeats > 0, "{p:?}");
    }
    // Raw tables keep each distinct record version once.
    assert_eq!(count(d, "SELECT count(*) FROM raw_police_110").await, raw_before);
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 3. Group offsets reset to the beginning (an operator "replays the
    //    bus"): positions come from the libraries, so nothing is doubled.
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        let topics: Vec<String> =
            ["police_110", "hotline_12345"].iter().map(|s| lianqin_bus::raw_topic("lianqin.", s)).collect();
        let zero: lianqin_bus::OffsetLookup = std::sync::Arc::new(|_, _| Some(0));
        let mut c = hub.bus().consumer("lianqin-pipeline", &topics, zero).await.unwrap();
        c.commit(&topics.iter().map(|t| (t.clone(), 0u32, 0u64)).collect::<Vec<_>>()).await.unwrap();
        drop(c);
        demo::cycle(&hub).await.unwrap();
    }
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 4. A real change is applied exactly once.
    let changed = sim.advance(5);
    assert!(changed > 0);
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    let after = snapshot(d.to_path_buf()).await;
    assert!(after[1] > before[1], "changed matters got new versions");
    assert_eq!(count(d, "SELECT count(*) FROM (SELECT matter_id, content_hash FROM matter_history GROUP BY 1, 2 HAVING count(*) > 1)").await, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repeat_index_is_kept_across_restarts_and_rebuilt_only_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    let snapshot = |d: std::path::PathBuf| async move { row_counts(&d, &HISTORIES).await };
    let sources = ["police_110", "hotline_12345", "market_enterprise", "law_enforcement_case"];
    // Every source of the demo config (also those the test does not re-fetch).
    let all = |hub: &lianqin_pipeline::hub::Hub| -> Vec<String> {
        hub.config().enabled_sources().map(|s| s.id.clone()).collect()
    };
    let rebuilds =
        |hub: &lianqin_pipeline::hub::Hub| all(hub).iter().map(|s| hub.metrics().repeat_index_rebuilds(s)).sum::<u64>();
    // The demo config names its node.
    let index = d.join("nodes").join("demo-hub").join("repeats.redb");
    // Connector checkpoints lost: every record is published again.
    let forget_checkpoints = |hub: &lianqin_pipeline::hub::Hub| {
        let bus = hub.bus();
        async move {
            for src in sources {
                let cp = lianqin_bus::Checkpoint { source: src.into(), value: serde_json::json!({ "since": "" }) };
                bus.publish(&lianqin_bus::raw_topic("lianqin.", src), &[], Some(cp)).await.unwrap();
            }
        }
    };
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        assert_eq!(rebuilds(&hub), all(&hub).len() as u64, "a new data dir: every source's index is built");
        demo::cycle(&hub).await.unwrap();
    }
    assert!(index.is_file(), "the index is a file beside the node's state");
    let before = snapshot(d.to_path_buf()).await;
    assert!(before[0] > 0 && before[1] > 0);

    // 1. A restart keeps the index: no scan, and re-fetched records are
    //    still repeats.
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        assert_eq!(rebuilds(&hub), 0, "the kept index needs no scan");
        forget_checkpoints(&hub).await;
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.repeats > 0 && p.accepted == 0 && p.quarantined == 0, "{p:?}");
        assert_eq!(rebuilds(&hub), 0);
    }
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 2. An index update lost (a crash between the raw commit and the
    //    index's own commit) is an older copy of the index: its mark is
    //    behind the raw table, so it is rebuilt, and the versions the old
    //    copy never saw are still repeats.
    let old = std::fs::read(&index).unwrap();
    assert!(sim.advance(5) > 0);
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.accepted > 0, "{p:?}");
    }
    let before = snapshot(d.to_path_buf()).await;
    std::fs::write(&index, old).unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        assert!(rebuilds(&hub) >= 1, "a stale index is rebuilt");
        forget_checkpoints(&hub).await;
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.repeats > 0 && p.accepted == 0 && p.quarantined == 0, "{p:?}");
    }
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 3. The index file lost: rebuilt from the tables, same decisions.
    std::fs::remove_file(&index).unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        assert_eq!(rebuilds(&hub), all(&hub).len() as u64);
        forget_checkpoints(&hub).await;
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.repeats > 0 && p.accepted == 0 && p.quarantined == 0, "{p:?}");
    }
    assert_eq!(snapshot(d.to_path_buf()).await, before);

    // 4. The tables deleted (the libraries rebuilt from the bus) while the
    //    index stays: the index belongs to the old tables (other table ids,
    //    other versions; `repeat::tests::another_raw_table_drops_the_mark`
    //    covers equal versions) and is not trusted, so every record lands
    //    again, once.
    std::fs::remove_dir_all(d.join("lake")).unwrap();
    let _ = std::fs::remove_dir_all(d.join("current"));
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        assert_eq!(rebuilds(&hub), all(&hub).len() as u64, "an index made for other tables is rebuilt");
        // The group's offsets back to the beginning of every partition.
        let topics: Vec<String> = all(&hub).iter().map(|s| lianqin_bus::raw_topic("lianqin.", s)).collect();
        let mut start = Vec::new();
        for t in &topics {
            let parts = hub.bus().end_offsets(t).await.unwrap().len() as u32;
            start.extend((0..parts).map(|p| (t.clone(), p, 0u64)));
        }
        let zero: lianqin_bus::OffsetLookup = std::sync::Arc::new(|_, _| Some(0));
        let mut c = hub.bus().consumer("lianqin-pipeline", &topics, zero).await.unwrap();
        c.commit(&start).await.unwrap();
        drop(c);
        let (_, p) = demo::cycle(&hub).await.unwrap();
        assert!(p.accepted > 0, "{p:?}");
    }
    let after = snapshot(d.to_path_buf()).await;
    assert_eq!(after, before, "every version landed again, once");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_sources_recover_without_losing_or_skipping_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cfg = small();
    cfg.incidents = 650;
    cfg.tickets = 450;
    cfg.faults = Faults {
        error_500_every: Some(2),
        rate_429_every: Some(5),
        // Every 7th request hangs longer than the connectors' 2 s timeout.
        slow_every: Some((7, std::time::Duration::from_millis(2500))),
    };
    let sim = demo::start_simulation(d, cfg).await.unwrap();
    let hub = demo::open_demo_hub(d, &sim).await.unwrap();
    let (synced, _) = demo::cycle(&hub).await.unwrap();
    let retries: u64 = synced.values().filter_map(|r| r.as_ref().ok()).map(|s| s.retries).sum();
    assert!(retries > 0, "faults were injected: {synced:?}");
    for (src, r) in &synced {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    let truth = sim.truth();
    // Every keyed incident reached its raw table (the one with text in `jd` is flagged, not quarantined).
    let keys: BTreeSet<&str> = truth.incidents.iter().filter_map(|v| s(v, "jjdbh")).collect();
    assert_eq!(
        count(d, "SELECT count(DISTINCT source_key) FROM raw_police_110 WHERE source_key <> ''").await,
        keys.len() as i64
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await,
        truth.tickets.len() as i64
    );
    let counts = sim.request_counts();
    assert!(counts.police_110.errors_500 > 0 && counts.police_110.rate_limited_429 > 0, "{counts:?}");
    sim.shutdown().await;
}
