//! The `mqtt` source against a real broker (tests/services/mosquitto.sh).
//! Needs `LIANQIN_MQTT_BROKER`: without it the tests print SKIPPED, or fail
//! under `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use lianqin_bus::{Bus, BusRecord, Consumer, EmbeddedBus, OffsetLookup};
use lianqin_connectors::mqtt::{MqttConfig, MqttSource};
use lianqin_connectors::{ConnectorConfig, ConnectorError, SourceContext, StreamingSource};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::sync::{mpsc, watch};

mod common;

/// `LIANQIN_MQTT_BROKER` (host:port); see [`common::require_service`].
fn broker() -> Option<(String, u16)> {
    let b = common::require_service("LIANQIN_MQTT_BROKER")?;
    let (h, p) = b.rsplit_once(':').expect("LIANQIN_MQTT_BROKER is host:port");
    Some((h.to_string(), p.parse().expect("LIANQIN_MQTT_BROKER port")))
}

/// A test publisher: publishes QoS 1 and waits for the broker's PUBACKs.
struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(host: &str, port: u16, id: &str) -> Self {
        let mut o = MqttOptions::new(id, host, port);
        o.set_clean_session(true).set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, acks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher { client, acks, task }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv()).await.expect("broker PUBACK").unwrap();
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ConnectorError>>,
}

fn start(cfg: &MqttConfig, ctx: &SourceContext) -> Running {
    let built = ConnectorConfig::Mqtt(cfg.clone()).build("water_sensors", "environment").unwrap();
    assert!(built.is_streaming(), "MQTT is a streaming source");
    let mut src = MqttSource::new("water_sensors", "environment", cfg.clone()).unwrap();
    let (stop, rx) = watch::channel(false);
    let ctx = ctx.clone();
    let task = tokio::spawn(async move { src.run(&ctx, rx).await });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.unwrap().unwrap().unwrap();
    }
}

async fn poll_until(c: &mut Box<dyn Consumer>, got: &mut Vec<BusRecord>, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        got.extend(c.poll(1000, Duration::from_millis(100)).await.unwrap());
    }
}

#[tokio::test]
async fn mqtt_readings_with_manual_acks_and_persistent_session() {
    let Some((host, port)) = broker() else { return };
    let run = common::unique("acks");
    let prefix = format!("lianqin-test/{run}");
    let client_id = format!("lianqin-src-{run}");
    let cfg = match serde_json::from_value::<ConnectorConfig>(json!({
        "type": "mqtt",
        "broker": format!("{host}:{port}"),
        "client_id": client_id,
        "topics": [format!("{prefix}/water/#"), format!("{prefix}/soil/+")],
        "qos": 1,
        "clean_session": false,
        "key_fields": ["device_id", "ts"],
        "time_field": "ts",
        "topic_field": "_topic",
    }))
    .unwrap()
    {
        ConnectorConfig::Mqtt(c) => c,
        _ => unreachable!(),
    };
    cfg.validate("water_sensors").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let topic = "raw.water_sensors";
    let bus = Arc::new(EmbeddedBus::open(dir.path()).unwrap());
    bus.ensure_topic(topic, 2).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let mut consumer = bus.consumer("t", &[topic.to_string()], lookup).await.unwrap();
    let mut got: Vec<BusRecord> = Vec::new();

    let src = start(&cfg, &ctx);
    let mut publisher = Publisher::connect(&host, port, &format!("lianqin-pub-{run}")).await;

    // Wait until the subscription is in place: probe until one arrives.
    let mut probes = 0;
    while got.is_empty() {
        assert!(probes < 50, "source never received a probe");
        probes += 1;
        let p = json!({"device_id": "probe", "ts": probes});
        publisher.publish(&format!("{prefix}/water/probe"), p.to_string().as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        got.extend(consumer.poll(100, Duration::from_millis(50)).await.unwrap());
    }
    poll_until(&mut consumer, &mut got, 0).await;
    let probes_seen = got.len();
    assert!(probes_seen >= 1);

    // Readings (QoS 1) and one bad payload.
    for i in 0..5 {
        let r = json!({"device_id": "WQ-001", "ts": format!("2025-03-15T10:{i:02}:00+08:00"), "ph": 7.1 + f64::from(i) / 10.0, "do_mg_l": 6.8});
        publisher.publish(&format!("{prefix}/water/WQ-001"), r.to_string().as_bytes()).await;
    }
    let soil = json!([{"device_id": "SO-7", "ts": 1742005200, "cd_mg_kg": 0.21}, {"device_id": "SO-7", "ts": 1742005260, "cd_mg_kg": 0.22}]);
    publisher.publish(&format!("{prefix}/soil/SO-7"), soil.to_string().as_bytes()).await;
    publisher.publish(&format!("{prefix}/water/WQ-002"), b"{\"device_id\": \"WQ-002\", \"ts\": ").await;
    publisher.publish(&format!("{prefix}/water/WQ-003"), br#"{"ts": "2025-03-15T10:00:00+08:00", "ph": 7}"#).await;
    poll_until(&mut consumer, &mut got, probes_seen + 9).await;
    let fresh: Vec<_> =
        got[probes_seen..].iter().filter(|r| r.envelope.key != "probe").map(|r| r.envelope.clone()).collect();
    // Late probes may still arrive; ignore them.
    let fresh: Vec<_> = fresh.into_iter().filter(|e| !e.key.starts_with("probe|")).collect();
    assert_eq!(fresh.len(), 9, "{fresh:#?}");
    let w = fresh.iter().find(|e| e.key == "WQ-001|2025-03-15T10:02:00+08:00").expect("reading on the bus");
    assert_eq!(w.payload()["do_mg_l"], 6.8);
    assert_eq!(w.payload()["_topic"], format!("{prefix}/water/WQ-001"));
    assert_eq!(w.source_time.as_deref(), Some("2025-03-15T10:02:00+08:00"));
    assert!(w.error.is_none());
    assert!(fresh.iter().any(|e| e.key == "SO-7|1742005260" && e.payload()["cd_mg_kg"] == 0.22));
    let bad: Vec<_> = fresh.iter().filter(|e| e.error.is_some()).collect();
    assert_eq!(bad.len(), 2, "{bad:#?}");
    let not_json = bad.iter().find(|e| e.error.as_deref().unwrap().contains("not JSON")).expect("bad JSON kept");
    assert!(not_json.error.as_deref().unwrap().contains(&format!("{prefix}/water/WQ-002")));
    assert_eq!(not_json.payload(), &json!("{\"device_id\": \"WQ-002\", \"ts\": "));
    let no_key = bad.iter().find(|e| e.error.as_deref().unwrap().contains("device_id")).expect("missing key kept");
    assert!(no_key.locator.as_deref().unwrap().contains("WQ-003"));

    // Persistent session: readings published while the source is stopped
    // are delivered when it comes back.
    src.stop().await;
    for i in 0..3 {
        let r = json!({"device_id": "WQ-009", "ts": format!("2025-03-15T11:{i:02}:00+08:00"), "ph": 7.0});
        publisher.publish(&format!("{prefix}/water/WQ-009"), r.to_string().as_bytes()).await;
    }
    let before = got.len();
    let src = start(&cfg, &ctx);
    poll_until(&mut consumer, &mut got, before + 3).await;
    let mut offline: Vec<String> =
        got[before..].iter().map(|r| r.envelope.key.clone()).filter(|k| k.starts_with("WQ-009")).collect();
    offline.sort();
    offline.dedup();
    assert_eq!(
        offline,
        (0..3).map(|i| format!("WQ-009|2025-03-15T11:{i:02}:00+08:00")).collect::<Vec<_>>(),
        "messages queued for the persistent session while the source was down"
    );
    src.stop().await;
    publisher.close().await;

    // Drop the broker-side session so test runs do not pile up sessions.
    let mut o = MqttOptions::new(client_id, host.as_str(), port);
    o.set_clean_session(true);
    let (c, mut el) = AsyncClient::new(o, 4);
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    println!("mqtt: ok ({} records)", got.len());
}

#[tokio::test]
async fn mqtt_unacked_when_not_durable_is_redelivered() {
    let Some((host, port)) = broker() else { return };
    let run = common::unique("redeliver");
    let prefix = format!("lianqin-test/{run}");
    let client_id = format!("lianqin-src2-{run}");
    let cfg = match serde_json::from_value::<ConnectorConfig>(json!({
        "type": "mqtt", "broker": format!("{host}:{port}"), "client_id": client_id,
        "topics": [format!("{prefix}/#")], "key_fields": ["device_id", "ts"],
    }))
    .unwrap()
    {
        ConnectorConfig::Mqtt(c) => c,
        _ => unreachable!(),
    };
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(EmbeddedBus::open(dir.path()).unwrap());
    // First run: the source's topic does not exist, so nothing becomes
    // durable and nothing may be acknowledged.
    let broken = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: "raw.not_created".into() };
    let mut src = MqttSource::new("water_sensors", "environment", cfg.clone()).unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { src.run(&broken, rx).await });
    // Let it connect and subscribe (clean_session=false keeps the
    // subscription for the second run).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut publisher = Publisher::connect(&host, port, &format!("lianqin-pub2-{run}")).await;
    for i in 0..3 {
        let r = json!({"device_id": "WQ-100", "ts": i, "ph": 7.0});
        publisher.publish(&format!("{prefix}/water"), r.to_string().as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.send(true).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
    assert!(res.is_err(), "the run that could not publish reports it");

    // Second run with a working bus: the broker redelivers all three.
    let topic = "raw.water_sensors";
    bus.ensure_topic(topic, 1).await.unwrap();
    let ctx = SourceContext { bus: Arc::clone(&bus) as Arc<dyn Bus>, topic: topic.to_string() };
    let src = start(&cfg, &ctx);
    let lookup: OffsetLookup = Arc::new(|_, _| None);
    let mut consumer = bus.consumer("t", &[topic.to_string()], lookup).await.unwrap();
    let mut got = Vec::new();
    poll_until(&mut consumer, &mut got, 3).await;
    let mut keys: Vec<String> = got.iter().map(|r| r.envelope.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, vec!["WQ-100|0", "WQ-100|1", "WQ-100|2"]);
    src.stop().await;
    publisher.close().await;

    let mut o = MqttOptions::new(client_id, host.as_str(), port);
    o.set_clean_session(true);
    let (c, mut el) = AsyncClient::new(o, 4);
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
    let _ = c.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
}
