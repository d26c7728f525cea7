//! The current state of `matter` / `matter_event` served from a snapshot
//! (`pipeline/src/current.rs`): always equal to aggregating all history
//! (`query::current_view_sql`), refreshed incrementally after new commits,
//! rebuilt when the snapshot is missing or unreadable.

use std::path::Path;

use lianqin_pipeline::current::{CurrentTable, Refresh};
use lianqin_pipeline::demo;
use lianqin_pipeline::query::{OutputFormat, current_view_sql, format_batches};
use lianqin_pipeline::schema::Catalog;
use lianqin_sim::SimConfig;
use lianqin_tests::engine;

fn small() -> SimConfig {
    SimConfig {
        incidents: 60,
        tickets: 40,
        enterprises: 20,
        cases: 20,
        env_files: 2,
        env_rows_per_file: 10,
        ..Default::default()
    }
}

/// Every row of a query as sorted CSV lines.
async fn rows(d: &Path, sql: &str) -> Vec<String> {
    let e = engine(d).await;
    let b = e.sql(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    let text = format_batches(&b, OutputFormat::Csv).unwrap();
    let mut v: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    v.sort();
    v
}

/// What a read of `<library>_current` in a fresh session does.
async fn refresh(d: &Path, library: &str) -> Refresh {
    let e = engine(d).await;
    let p = e.context().table_provider(format!("{library}_current").as_str()).await.unwrap();
    let t = p.downcast_ref::<CurrentTable>().expect("a CurrentTable");
    t.refresh().await.unwrap().1
}

/// The snapshot-served state equals the aggregate over all history.
async fn assert_same_as_history(d: &Path, library: &str) -> usize {
    let catalog = Catalog::builtin().unwrap();
    let key = catalog.library(library).unwrap().key.clone();
    let served = rows(d, &format!("SELECT * FROM {library}")).await;
    let aggregated = rows(d, &current_view_sql(&catalog, library).unwrap()).await;
    assert_eq!(served.len(), aggregated.len(), "{library}: row counts");
    for (a, b) in served.iter().zip(&aggregated) {
        assert_eq!(a, b, "{library}: a row differs (key {key})");
    }
    served.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_state_follows_history_through_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    // First read: no snapshot yet, all history aggregated and written.
    assert_eq!(refresh(d, "matter").await, Refresh::Full);
    assert!(d.join("current/matter/meta.json").is_file());
    assert_eq!(refresh(d, "matter").await, Refresh::Reused);
    let n = assert_same_as_history(d, "matter").await;
    assert!(n > 100, "{n} matters");
    assert_same_as_history(d, "matter_event").await;

    // New versions (stage changes, updates) arrive: only their keys are
    // re-aggregated, the result still equals all history.
    for round in 0..2 {
        assert!(sim.advance(8) > 0);
        {
            let hub = demo::open_demo_hub(d, &sim).await.unwrap();
            demo::cycle(&hub).await.unwrap();
        }
        assert_eq!(refresh(d, "matter").await, Refresh::Incremental, "round {round}");
        assert_same_as_history(d, "matter").await;
        assert_same_as_history(d, "matter_event").await;
        let versions = rows(d, "SELECT max(versions) FROM matter").await;
        assert_ne!(versions, vec!["1".to_string()], "some matter has several versions");
    }

    // The snapshot is a cache: a damaged one is rebuilt, a missing one too.
    std::fs::write(d.join("current/matter/meta.json"), b"{ not json").unwrap();
    assert_eq!(refresh(d, "matter").await, Refresh::Full);
    assert_same_as_history(d, "matter").await;
    std::fs::remove_dir_all(d.join("current")).unwrap();
    assert_same_as_history(d, "matter").await;
    assert_eq!(refresh(d, "matter").await, Refresh::Reused);

    // A snapshot made for another history (a file it covers is gone from
    // the table, as after restoring an older copy) is not used.
    let meta = d.join("current/matter/meta.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m["files"].as_array_mut().unwrap().push(serde_json::json!("part-gone.parquet"));
    std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(refresh(d, "matter").await, Refresh::Full);
    assert_same_as_history(d, "matter").await;
    sim.shutdown().await;
}
