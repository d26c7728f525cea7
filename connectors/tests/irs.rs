//! The `http` connector with Zhejiang IRS gateway auth against the
//! simulated gateway (`lianqin_sim::irs`), which checks md5 signatures,
//! expires the request secret mid-sync and answers quota errors.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lianqin_bus::{Bus, EmbeddedBus, OffsetLookup};
use lianqin_connectors::http::HttpSource;
use lianqin_connectors::{ConnectorConfig, PollingSource, SourceContext, set_env_override};
use lianqin_sim::irs::{IrsSimConfig, start_irs};
use serde_json::json;

async fn bus_ctx(dir: &std::path::Path, topic: &str) -> (Arc<EmbeddedBus>, SourceContext) {
    let bus = Arc::new(EmbeddedBus::open(dir).unwrap());
    bus.ensure_topic(topic, 2).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    (bus, ctx)
}

async fn keys_on(bus: &EmbeddedBus, topic: &str) -> Vec<String> {
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let group = format!("g{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let mut c = bus.consumer(&group, &[topic.to_string()], lookup).await.unwrap();
    let mut out = Vec::new();
    loop {
        let b = c.poll(10_000, Duration::from_millis(200)).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend(b.into_iter().map(|r| r.envelope.key));
    }
    out
}

fn source(api_url: &str, key_env: &str, secret_env: &str, sign_in: &str) -> HttpSource {
    let v = json!({
        "type": "http",
        "url": api_url,
        "records": "/datas/data",
        "key_field": "xzcfjdswh",
        "updated_field": "gxsj",
        "since_param": "updateTime",
        "pagination": { "style": "page", "param": "pageNum", "size_param": "pageSize", "size": 10 },
        "retry": { "max_attempts": 4, "base_ms": 10, "max_ms": 50 },
        "auth": { "type": "irs", "app_key": format!("${{{key_env}}}"), "app_secret": format!("${{{secret_env}}}"), "sign_in": sign_in },
    });
    let ConnectorConfig::Http(cfg) = serde_json::from_value::<ConnectorConfig>(v).unwrap() else { unreachable!() };
    cfg.validate("irs_penalty").unwrap();
    HttpSource::new("irs_penalty", "ecology", cfg).unwrap()
}

#[tokio::test]
async fn full_sync_survives_secret_expiry_and_quota_with_exact_counts() {
    let sim = start_irs(IrsSimConfig {
        records: 95,
        // The request secret dies after 3 calls: several times in one sync.
        expire_after_calls: Some(3),
        quota_error_calls: vec![5],
        ..Default::default()
    })
    .await
    .unwrap();
    set_env_override("IRS_TEST_KEY_A", "A330500-lianqin");
    set_env_override("IRS_TEST_SECRET_A", "app-secret-for-tests");
    let dir = tempfile::tempdir().unwrap();
    let (bus, ctx) = bus_ctx(dir.path(), "raw.irs").await;
    let mut src = source(&sim.api_url, "IRS_TEST_KEY_A", "IRS_TEST_SECRET_A", "query");
    let stats = src.sync_once(&ctx).await.unwrap();

    let keys = keys_on(&bus, "raw.irs").await;
    let distinct: BTreeSet<&String> = keys.iter().collect();
    let truth: BTreeSet<String> = sim.records().iter().map(|r| r["xzcfjdswh"].as_str().unwrap().to_string()).collect();
    assert_eq!(distinct.len(), 95, "every record arrived");
    assert_eq!(distinct.into_iter().cloned().collect::<BTreeSet<_>>(), truth);
    assert!(keys.iter().all(|k| !k.is_empty()), "datas (a JSON string) was decoded into records");
    let counts = sim.counts();
    assert_eq!(counts.refresh_by_key, 1, "{counts:?}");
    assert!(counts.refresh_by_sec >= 2, "the request secret was renewed mid-sync: {counts:?}");
    assert!(counts.expired >= 2, "{counts:?}");
    assert_eq!(counts.quota, 1, "{counts:?}");
    assert_eq!(counts.bad_signature, 0, "{counts:?}");
    assert_eq!(src.irs_stats().unwrap().by_sec, counts.refresh_by_sec);
    assert!(stats.retries >= 3, "{stats:?}");

    // Headers instead of query parameters work the same.
    let dir2 = tempfile::tempdir().unwrap();
    let (bus2, ctx2) = bus_ctx(dir2.path(), "raw.irs").await;
    let mut src2 = source(&sim.api_url, "IRS_TEST_KEY_A", "IRS_TEST_SECRET_A", "headers");
    src2.sync_once(&ctx2).await.unwrap();
    let keys2: BTreeSet<String> = keys_on(&bus2, "raw.irs").await.into_iter().collect();
    assert_eq!(keys2, truth);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bad_app_secret_fails_clearly_without_a_retry_storm() {
    let sim = start_irs(IrsSimConfig { records: 20, ..Default::default() }).await.unwrap();
    set_env_override("IRS_TEST_KEY_B", "A330500-lianqin");
    set_env_override("IRS_TEST_SECRET_B", "not-the-secret");
    let dir = tempfile::tempdir().unwrap();
    let (bus, ctx) = bus_ctx(dir.path(), "raw.irs").await;
    let mut src = source(&sim.api_url, "IRS_TEST_KEY_B", "IRS_TEST_SECRET_B", "query");
    let e = src.sync_once(&ctx).await.unwrap_err().to_string();
    assert!(e.contains("irs_penalty") && e.contains("code 14") && e.contains("app_secret"), "{e}");
    assert!(!e.contains("not-the-secret"), "the secret is not in the message: {e}");
    let counts = sim.counts();
    assert_eq!(counts.bad_signature, 1, "one rejected signature, no storm: {counts:?}");
    assert_eq!(counts.data_ok, 0);
    assert!(keys_on(&bus, "raw.irs").await.is_empty());
    assert_eq!(bus.load_checkpoint("irs_penalty").await.unwrap(), None, "checkpoint untouched");
    sim.shutdown().await;
}
