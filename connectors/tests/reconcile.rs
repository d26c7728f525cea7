//! Reconciliation figures of the `http` connector against the simulated
//! 110 API: the API's own `total` (first page of a pass) and the distinct
//! records published agree for a pass read to the end; a pass cut short by
//! `max_pages` reports nothing (the rest comes in the next pass).

use std::sync::Arc;

use lianqin_bus::{Bus, EmbeddedBus};
use lianqin_connectors::http::HttpSource;
use lianqin_connectors::{ConnectorConfig, PollingSource, SourceContext, set_env_override};
use serde_json::json;

fn source(url: &str, max_pages: u32) -> HttpSource {
    let v = json!({
        "type": "http",
        "url": format!("{url}/api/110/incidents"),
        "headers": { "X-API-Key": "${RECONCILE_TEST_KEY}" },
        "records": "/data/items",
        "total": "/data/total",
        "key_field": "jjdbh",
        "updated_field": "updated_at",
        "since_param": "updated_since",
        "pagination": { "style": "page", "param": "page", "size_param": "page_size", "size": 7 },
        "max_pages": max_pages,
    });
    let ConnectorConfig::Http(cfg) = serde_json::from_value::<ConnectorConfig>(v).unwrap() else { unreachable!() };
    HttpSource::new("police_110", "police", cfg).unwrap()
}

#[tokio::test]
async fn the_sources_total_matches_the_distinct_records_of_a_whole_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lianqin_sim::SimConfig {
        incidents: 60,
        tickets: 5,
        enterprises: 5,
        cases: 5,
        env_files: 0,
        ..Default::default()
    };
    set_env_override("RECONCILE_TEST_KEY", &cfg.api_key);
    let sim = lianqin_sim::start(cfg, &dir.path().join("drop")).await.unwrap();
    let served = sim.truth().incidents.len() as u64;
    let bus = Arc::new(EmbeddedBus::open(&dir.path().join("bus")).unwrap());
    bus.ensure_topic("t", 1).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: "t".into() };

    // Cut short: 2 pages of 7 out of 60 records — no claim either way.
    let mut short = source(&sim.police_110, 2);
    let s = short.sync_once(&ctx).await.unwrap();
    assert_eq!(s.reported, None, "{s:?}");

    // Read to the end (a fresh checkpoint): the source's count = what was published.
    let bus2 = Arc::new(EmbeddedBus::open(&dir.path().join("bus2")).unwrap());
    bus2.ensure_topic("t", 1).await.unwrap();
    let ctx2 = SourceContext { bus: Arc::clone(&bus2) as Arc<dyn Bus>, topic: "t".into() };
    let mut whole = source(&sim.police_110, 1000);
    let s = whole.sync_once(&ctx2).await.unwrap();
    assert_eq!(s.reported, Some(served), "{s:?}");
    assert_eq!(s.distinct, served, "{s:?}");
    assert!(s.records >= served, "{s:?}");
    sim.shutdown().await;
}
