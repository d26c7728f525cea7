//! Streaming sources over real sockets: HJ 212 devices over TCP and signed
//! webhooks over HTTP, each publishing into an embedded bus.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lianqin_bus::{Bus, BusRecord, EmbeddedBus, OffsetLookup};
use lianqin_connectors::hj212::{Hj212Config, Hj212Crc, Hj212Source};
use lianqin_connectors::webhook::{WebhookConfig, WebhookSource};
use lianqin_connectors::{ConnectorConfig, SourceContext, StreamingSource};
use lianqin_hj212::{CrcVariant, DeviceOptions, encode_frame, simulate_device_with};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

async fn bus_ctx(dir: &std::path::Path, topic: &str) -> (Arc<EmbeddedBus>, SourceContext) {
    let bus = Arc::new(EmbeddedBus::open(dir).unwrap());
    bus.ensure_topic(topic, 2).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    (bus, ctx)
}

/// Reads the topic from the start until `want` records arrived or 10 s passed.
async fn read_all(bus: &EmbeddedBus, topic: &str, want: usize) -> Vec<BusRecord> {
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let group = format!("t-{}", rand_suffix());
    let mut c = bus.consumer(&group, &[topic.to_string()], lookup).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        got.extend(c.poll(1000, Duration::from_millis(100)).await.unwrap());
    }
    // Anything extra that is already there.
    got.extend(c.poll(1000, Duration::from_millis(100)).await.unwrap());
    got
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

// ---------------------------------------------------------------- HJ 212

/// domain.md §1.12 frame 1 (Flag=5, unknown codes LA / o31104).
const SEG_AQI: &str = "QN=20241115190408000;ST=27;CN=2011;PW=123456;MN=AQI2411132600332;Flag=5;CP=&&DataTime=20241115190408;a21026-Rtd=117;a21004-Rtd=16;o31104-Rtd=29;a21005-Rtd=0.14;a34004-Rtd=6;a34002-Rtd=6;a34001-Rtd=6;a01001-Rtd=28.1;a01002-Rtd=68;LA-Rtd=49;a01006-Rtd=1002;a06001-Rtd=0.0;a04003-Rtd=0;a01007-Rtd=0.0;a01008-Rtd=70&&";

fn seg_minute(minute: u32) -> String {
    format!(
        "QN=202503151030{minute:02}123;ST=32;CN=2051;PW=123456;MN=33050200000000000000A001;Flag=5;CP=&&DataTime=202503151020{minute:02};w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=24.9,w01018-Flag=N;w21003-Min=0.41,w21003-Avg=0.52,w21003-Max=0.66,w21003-Flag=N;w00000-Cou=12.60,w00000-Flag=N&&"
    )
}

/// domain.md frame 3 (Flag=4: no ack wanted).
const SEG_WATER: &str = "QN=20250315103000789;ST=21;CN=2011;PW=123456;MN=33052300000000000000W001;Flag=4;CP=&&DataTime=20250315103000;w01001-Rtd=7.42,w01001-Flag=N;w01009-Rtd=6.81,w01009-Flag=N;w01019-Rtd=3.2,w01019-Flag=N;w21003-Rtd=0.38,w21003-Flag=N;w21011-Rtd=0.112,w21011-Flag=N&&";

fn frame(seg: &str) -> Vec<u8> {
    encode_frame(seg, CrcVariant::Hj212).unwrap()
}

fn bad_crc(seg: &str) -> Vec<u8> {
    let mut f = frame(seg);
    let n = f.len();
    // The 4 CRC hex digits sit before CRLF; flip one to another hex digit.
    f[n - 3] = if f[n - 3] == b'0' { b'1' } else { b'0' };
    f
}

#[tokio::test]
async fn hj212_frames_over_tcp_reach_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.env_hj212";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let cfg: Hj212Config = match toml_like(json!({
        "type": "hj212", "listen": "127.0.0.1:0", "crc": "hj212"
    })) {
        ConnectorConfig::Hj212(c) => c,
        other => panic!("wrong kind {}", other.kind()),
    };
    assert_eq!(cfg.crc, Hj212Crc::Hj212);
    assert!(cfg.reply);
    let built = ConnectorConfig::Hj212(cfg.clone()).build("env_hj212", "environment").unwrap();
    assert!(built.is_streaming(), "HJ 212 is a streaming source");
    let mut src = Hj212Source::new("env_hj212", "environment", cfg);
    let addr = src.bind().await.unwrap();
    let stats = src.stats().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move { src.run(&ctx, stop_rx).await });

    // Device A: three good frames + one bad-CRC frame, all in one write (sticky).
    let dev_a = vec![frame(SEG_AQI), frame(&seg_minute(0)), bad_crc(&seg_minute(59)), frame(SEG_WATER)];
    let sticky = DeviceOptions { chunk_size: Some(1 << 20), expected_replies: Some(3), ..Default::default() };
    // Device B: five minute frames, split into 7-byte writes.
    let dev_b: Vec<Vec<u8>> = (1..=5).map(|m| frame(&seg_minute(m))).collect();
    let split = DeviceOptions { chunk_size: Some(7), expected_replies: Some(5), ..Default::default() };
    let (ra, rb) =
        tokio::join!(simulate_device_with(addr, &dev_a, &sticky), simulate_device_with(addr, &dev_b, &split));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());

    // A: acks (9014) for the two Flag=5 frames, a NAK (9011) for the bad CRC,
    // nothing for the Flag=4 frame.
    let cns = |r: &lianqin_hj212::DeviceReport| r.replies.iter().map(|f| f.cn.clone()).collect::<Vec<_>>();
    let mut a = cns(&ra);
    a.sort();
    assert_eq!(a, vec!["9011", "9014", "9014"], "{ra:?}");
    assert!(ra.replies.iter().all(|f| f.crc_ok));
    let acked: Vec<_> = ra.replies.iter().filter(|f| f.cn == "9014").filter_map(|f| f.qn.clone()).collect();
    assert!(acked.contains(&"20241115190408000".to_string()), "{acked:?}");
    assert_eq!(cns(&rb), vec!["9014"; 5]);

    let got = read_all(&bus, topic, 8).await;
    let mut keys: Vec<String> = got.iter().map(|r| r.envelope.key.clone()).collect();
    keys.sort();
    let mut want = vec![
        "AQI2411132600332|2011|20241115190408".to_string(),
        "33052300000000000000W001|2011|20250315103000".to_string(),
    ];
    want.extend((0..=5).map(|m| format!("33050200000000000000A001|2051|202503151020{m:02}")));
    want.sort();
    assert_eq!(keys, want, "bad-CRC frame (minute 59) must not be published");

    let aqi = got.iter().find(|r| r.envelope.key.starts_with("AQI")).unwrap();
    let e = &aqi.envelope;
    assert_eq!(e.source, "env_hj212");
    assert_eq!(e.department, "environment");
    assert!(e.error.is_none());
    assert_eq!(e.source_time.as_deref(), Some("2024-11-15T19:04:08+08:00"));
    assert_eq!(e.payload()["mn"], "AQI2411132600332");
    assert_eq!(e.payload()["cn"], "2011");
    assert_eq!(e.payload()["flag"], 5);
    assert_eq!(e.payload()["peer"], "127.0.0.1");
    assert!(e.payload().get("pw").is_none(), "PW must never be published");
    // Unknown factor codes are kept.
    assert_eq!(e.payload()["factors"]["LA"]["rtd"], 49.0);
    assert_eq!(e.payload()["factors"]["o31104"]["rtd"], 29.0);
    assert_eq!(e.payload()["factors"]["a21026"]["rtd"], 117.0);
    let minute = got.iter().find(|r| r.envelope.key.ends_with("|20250315102003")).unwrap();
    assert_eq!(minute.envelope.payload()["factors"]["w01018"]["avg"], 21.5);
    assert_eq!(minute.envelope.payload()["factors"]["w00000"]["cou"], 12.6);

    let s = stats.snapshot();
    assert_eq!(s.bad_crc, 1);
    assert_eq!(s.frames_ok, 8);
    assert_eq!(s.acks_sent, 7);

    // The checkpoint moved with the records.
    let cp = bus.load_checkpoint("env_hj212").await.unwrap().unwrap();
    assert!(cp["last_key"].is_string(), "{cp}");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn hj212_modbus_port_and_resent_frame_hashes_equal() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.env_modbus";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let cfg = match toml_like(json!({"type": "hj212", "listen": "127.0.0.1:0", "crc": "modbus", "batch_linger_ms": 5}))
    {
        ConnectorConfig::Hj212(c) => c,
        _ => unreachable!(),
    };
    let mut src = Hj212Source::new("env_modbus", "environment", cfg);
    let addr = src.bind().await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move { src.run(&ctx, stop_rx).await });
    let f = encode_frame(&seg_minute(7), CrcVariant::Modbus).unwrap();
    let opts = DeviceOptions { crc: CrcVariant::Modbus, expected_replies: Some(1), ..Default::default() };
    // The same frame from two connections (a device resending after reconnect).
    for _ in 0..2 {
        let r = simulate_device_with(addr, std::slice::from_ref(&f), &opts).await.unwrap();
        assert_eq!(r.replies.len(), 1);
        assert_eq!(r.replies[0].cn, "9014");
    }
    let got = read_all(&bus, topic, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].envelope.key, got[1].envelope.key);
    assert_eq!(got[0].envelope.hash, got[1].envelope.hash, "a resent frame must hash equal");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap().unwrap();
}

/// Deserializes a connector table the way the hub's TOML loader does.
fn toml_like(v: Value) -> ConnectorConfig {
    let c: ConnectorConfig = serde_json::from_value(v).unwrap();
    c.validate("test").unwrap();
    c
}

#[test]
fn configs_validate_and_reject_unknown_keys() {
    assert!(
        serde_json::from_value::<ConnectorConfig>(json!({"type": "hj212", "listen": "127.0.0.1:9212", "bogus": 1}))
            .is_err()
    );
    let c: ConnectorConfig =
        serde_json::from_value(json!({"type": "hj212", "listen": "127.0.0.1:9212", "max_frame": 20000})).unwrap();
    let e = c.validate("env").unwrap_err().to_string();
    assert!(e.contains("max_frame"), "{e}");
    let c: ConnectorConfig = serde_json::from_value(json!({
        "type": "webhook", "listen": "127.0.0.1:0", "path": "/hooks/110",
        "secret": "${LIANQIN_TEST_UNSET_SECRET_VAR}", "key_field": "jjdbh"
    }))
    .unwrap();
    let e = c.validate("police_110_push").unwrap_err().to_string();
    assert!(e.contains("LIANQIN_TEST_UNSET_SECRET_VAR") && e.contains("secret"), "{e}");
    let c: ConnectorConfig = serde_json::from_value(json!({
        "type": "mqtt", "broker": "127.0.0.1", "client_id": "x", "topics": ["a/#"], "key_fields": ["id"]
    }))
    .unwrap();
    let e = c.validate("water").unwrap_err().to_string();
    assert!(e.contains("broker"), "{e}");
    let c: ConnectorConfig = serde_json::from_value(json!({
        "type": "mqtt", "broker": "127.0.0.1:1883", "client_id": "x", "topics": ["a/#"], "key_fields": ["id"]
    }))
    .unwrap();
    c.validate("water").unwrap();
    assert_eq!(c.kind(), "mqtt");
}

// ---------------------------------------------------------------- webhook

const SECRET_VAR: &str = "LIANQIN_TEST_HOOK_SECRET";
const SECRET: &str = "s3cret-for-tests";

fn webhook_cfg() -> WebhookConfig {
    lianqin_connectors::set_env_override(SECRET_VAR, SECRET);
    match toml_like(json!({
        "type": "webhook", "listen": "127.0.0.1:0", "path": "/hooks/110",
        "secret": format!("${{{SECRET_VAR}}}"), "key_field": "jjdbh", "updated_field": "updated_at",
        "max_body_bytes": 4096
    })) {
        ConnectorConfig::Webhook(c) => c,
        _ => unreachable!(),
    }
}

fn sign(ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

struct Hook {
    url: String,
    http: reqwest::Client,
}

impl Hook {
    async fn post(&self, body: &[u8], ts: i64, sig: Option<String>, idem: Option<&str>) -> (u16, Value) {
        let ts = ts.to_string();
        let mut rb = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Timestamp", &ts)
            .body(body.to_vec());
        let sig = sig.unwrap_or_else(|| format!("sha256={}", sign(&ts, body)));
        rb = rb.header("X-Signature", sig);
        if let Some(k) = idem {
            rb = rb.header("Idempotency-Key", k);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }
}

async fn start_hook(
    ctx: &SourceContext,
) -> (Hook, watch::Sender<bool>, tokio::task::JoinHandle<Result<(), lianqin_connectors::ConnectorError>>) {
    let built = ConnectorConfig::Webhook(webhook_cfg()).build("police_110_push", "police").unwrap();
    assert!(built.is_streaming(), "webhooks are streaming sources");
    let mut src = WebhookSource::new("police_110_push", "police", webhook_cfg()).unwrap();
    let addr = src.bind().await.unwrap();
    let (tx, rx) = watch::channel(false);
    let ctx = ctx.clone();
    let task = tokio::spawn(async move { src.run(&ctx, rx).await });
    let hook = Hook { url: format!("http://{addr}/hooks/110"), http: reqwest::Client::new() };
    (hook, tx, task)
}

async fn count(bus: &EmbeddedBus, topic: &str) -> u64 {
    bus.end_offsets(topic).await.unwrap().iter().sum()
}

#[tokio::test]
async fn webhook_signed_pushes_idempotent_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.police_110_push";
    let (bus, ctx) = bus_ctx(dir.path(), topic).await;
    let (hook, stop, task) = start_hook(&ctx).await;
    let now = chrono::Utc::now().timestamp();

    // Good signed request: 200 only once durable, record on the bus.
    let order = json!({"jjdbh": "J3305002025031500001", "bjsj": "2025-03-15 10:21:00", "updated_at": "2025-03-15 10:22:00", "ajlb": "200100", "fadd": "湖州市吴兴区"});
    let body = serde_json::to_vec(&order).unwrap();
    let (st, v) = hook.post(&body, now, None, Some("dispatch-1")).await;
    assert_eq!((st, v.clone()), (200, json!({"accepted": 1})));
    assert_eq!(count(&bus, topic).await, 1);
    let got = read_all(&bus, topic, 1).await;
    let e = &got[0].envelope;
    assert_eq!(e.key, "J3305002025031500001");
    assert_eq!(e.department, "police");
    assert_eq!(e.payload(), &order);
    assert_eq!(e.source_time.as_deref(), Some("2025-03-15 10:22:00"));

    // Plain hex signature (no prefix) works too; an array is one record each.
    let batch = json!([{"jjdbh": "J2", "x": 1}, {"jjdbh": 3, "x": 2}]);
    let body2 = serde_json::to_vec(&batch).unwrap();
    let (st, v) = hook.post(&body2, now, Some(sign(&now.to_string(), &body2)), None).await;
    assert_eq!((st, v), (200, json!({"accepted": 2})));
    assert_eq!(count(&bus, topic).await, 3);

    // Bad signature → 401, nothing published.
    let (st, v) = hook.post(&body2, now, Some(format!("sha256={}", "ab".repeat(32))), None).await;
    assert_eq!(st, 401, "{v}");
    let (st, _) = hook.post(&body2, now, Some("not-hex".into()), None).await;
    assert_eq!(st, 401);
    // Signed with the wrong timestamp (body valid, signature for another ts).
    let (st, _) = hook.post(&body2, now, Some(sign(&(now - 1).to_string(), &body2)), None).await;
    assert_eq!(st, 401);
    // Missing signature header.
    let resp =
        hook.http.post(&hook.url).header("X-Timestamp", now.to_string()).body(body2.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let err = resp.json::<Value>().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("X-Signature"), "{err}");
    assert!(!err.to_string().contains(SECRET));
    // Stale timestamp → 401 even with a correct signature.
    let (st, v) = hook.post(&body2, now - 3600, None, None).await;
    assert_eq!(st, 401);
    assert!(v["error"].as_str().unwrap().contains("X-Timestamp"), "{v}");
    assert_eq!(count(&bus, topic).await, 3);

    // Bad JSON → 400 naming the problem.
    let (st, v) = hook.post(b"{\"jjdbh\": \"J9\",", now, None, None).await;
    assert_eq!(st, 400);
    assert!(v["error"].as_str().unwrap().contains("not valid JSON"), "{v}");
    // Missing key field → 400 naming the field (and the record in an array).
    let (st, v) = hook.post(br#"{"bjsj": "2025-03-15"}"#, now, None, None).await;
    assert_eq!(st, 400);
    assert_eq!(v["field"], "jjdbh", "{v}");
    let (st, v) = hook.post(br#"[{"jjdbh": "J5"}, {"jjdbh": ""}]"#, now, None, None).await;
    assert_eq!(st, 400);
    assert_eq!((v["field"].clone(), v["index"].clone()), (json!("jjdbh"), json!(1)), "{v}");
    // Not an object.
    let (st, _) = hook.post(b"42", now, None, None).await;
    assert_eq!(st, 400);
    // Over the size limit → 413.
    let big = serde_json::to_vec(&json!({"jjdbh": "J6", "pad": "x".repeat(5000)})).unwrap();
    let (st, _) = hook.post(&big, now, None, None).await;
    assert_eq!(st, 413);
    assert_eq!(count(&bus, topic).await, 3);

    // Duplicate Idempotency-Key → 200 duplicate, no second copy.
    let (st, v) = hook.post(&body, now, None, Some("dispatch-1")).await;
    assert_eq!((st, v), (200, json!({"duplicate": true})));
    assert_eq!(count(&bus, topic).await, 3);
    // Same key, different body → 409.
    let (st, _) = hook.post(&body2, now, None, Some("dispatch-1")).await;
    assert_eq!(st, 409);
    // Wrong method / path.
    let resp = hook.http.get(&hook.url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Restart: a new instance on the same bus still knows the key.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    let (hook, stop, task) = start_hook(&ctx).await;
    let (st, v) = hook.post(&body, now, None, Some("dispatch-1")).await;
    assert_eq!((st, v), (200, json!({"duplicate": true})));
    let (st, v) = hook.post(&body, now, None, Some("dispatch-2")).await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    assert_eq!(count(&bus, topic).await, 4);
    let cp = bus.load_checkpoint("police_110_push").await.unwrap().unwrap();
    let keys: Vec<&str> = cp["idempotency"].as_array().unwrap().iter().filter_map(|p| p[0].as_str()).collect();
    assert_eq!(keys, vec!["dispatch-1", "dispatch-2"]);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn webhook_answers_503_when_the_bus_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(EmbeddedBus::open(dir.path()).unwrap());
    // The topic was never created: every publish fails.
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: "raw.missing".into() };
    let (hook, stop, task) = start_hook(&ctx).await;
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"jjdbh": "J1"}"#;
    let (st, _) = hook.post(body, now, None, Some("k1")).await;
    assert_eq!(st, 503);
    // The key was not remembered: a retry is not mistaken for a duplicate.
    bus.ensure_topic("raw.missing", 1).await.unwrap();
    let (st, v) = hook.post(body, now, None, Some("k1")).await;
    assert_eq!((st, v), (200, json!({"accepted": 1})));
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}
