//! Environmental device streams into the libraries: HJ 212 frames sent over
//! a real TCP connection to the `hj212` connector, and MQTT sensor readings
//! published (QoS 1) to a real broker (tests/services/mosquitto.sh) and
//! received by the `mqtt` connector → `env_hj212_water` /
//! `env_mqtt_water_sensor` mappings → water body and station elements, and a
//! 预警 (early-warning) matter for a reading worse than the water body's
//! target class (GB 3838-2002).

use std::sync::Arc;
use std::time::Duration;

use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_tests::{count, wait_until};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The standard's CRC16 (domain.md §1.6), upper-case hex.
pub(crate) fn hj212_crc(seg: &[u8]) -> String {
    let mut crc: u16 = 0xFFFF;
    for b in seg {
        crc = (crc >> 8) ^ u16::from(*b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0xA001;
            }
        }
    }
    format!("{crc:04X}")
}

pub(crate) fn frame(seg: &str) -> Vec<u8> {
    format!("##{:04}{seg}{}\r\n", seg.len(), hj212_crc(seg.as_bytes())).into_bytes()
}

pub(crate) fn reading(mn: &str, cn: &str, time: &str, suffix: &str, nh3n: f64) -> String {
    format!(
        "QN={time}000;ST=21;CN={cn};PW=123456;MN={mn};Flag=4;CP=&&DataTime={time};w01001-{suffix}=7.42,w01001-Flag=N;w01009-{suffix}=6.81,w01009-Flag=N;w01019-{suffix}=3.2,w01019-Flag=N;w21003-{suffix}={nh3n},w21003-Flag=N;w21011-{suffix}=0.112,w21011-Flag=N&&"
    )
}

pub(crate) const W001: &str = "33052300000000000000W001";

pub(crate) fn mapping(name: &str) -> String {
    format!("{}/../schemas/mappings/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hj212_and_mqtt_readings_reach_the_libraries_and_bad_ones_raise_warnings() {
    let Some(broker) = lianqin_tests::require_service("LIANQIN_MQTT_BROKER") else { return };
    let (mqtt_host, mqtt_port) = broker.rsplit_once(':').expect("LIANQIN_MQTT_BROKER is host:port");
    let mqtt_port: u16 = mqtt_port.parse().expect("MQTT port");
    // Unique per run: the broker keeps persistent sessions by client id.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = format!(
        r#"node = "env-streams-test"
[bus]
kind = "embedded"

[[sources]]
id = "env_hj212_water"
department = "ecology"
mapping = "{hj}"
[sources.connector]
type = "hj212"
listen = "127.0.0.1:{port}"
batch_linger_ms = 5

[[sources]]
id = "env_mqtt_water"
department = "ecology"
mapping = "{mq}"
[sources.connector]
type = "mqtt"
broker = "{broker}"
client_id = "lianqin-env-streams-{run}"
topics = ["sensors/water/{run}/#"]
batch_linger_ms = 5
key_fields = ["device_id", "ts"]
time_field = "ts"
"#,
        hj = mapping("env_hj212_water"),
        mq = mapping("env_mqtt_water_sensor"),
    );
    let cfg = HubConfig::parse(&text, "env-streams.toml", d).expect("config");
    let hub = Hub::open(cfg, d).await.expect("hub");

    // Both connectors run as `lianqin run` runs them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut topics = std::collections::BTreeMap::new();
    for (mut src, ctx, every) in hub.build_sources().expect("sources") {
        topics.insert(src.id().to_string(), ctx.topic.clone());
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { src.run(&ctx, every, stop).await }));
    }
    let bus = hub.bus();
    let published = |topic: String, n: u64| {
        let bus = Arc::clone(&bus);
        wait_until(Duration::from_secs(30), move || {
            let (bus, topic) = (Arc::clone(&bus), topic.clone());
            async move { bus.end_offsets(&topic).await.map(|o| o.iter().sum::<u64>() >= n).unwrap_or(false) }
        })
    };

    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = conn.expect("hj212 server listening");
    // Real-time frame within class III; an hourly frame with NH3-N 2.6 mg/L
    // (劣V, target III) — sticky in one write; a frame from an MN that is not
    // in the station registry.
    let mut bytes = frame(&reading(W001, "2011", "20251008093000", "Rtd", 0.38));
    bytes.extend(frame(&reading(W001, "2061", "20251008100000", "Avg", 2.6)));
    bytes.extend(frame(&reading("33059900000000000000X999", "2011", "20251008093000", "Rtd", 3.0)));
    conn.write_all(&bytes).await.unwrap();
    conn.flush().await.unwrap();
    assert!(published(topics["env_hj212_water"].clone(), 3).await, "3 HJ 212 messages published");

    // MQTT sensor readings over the broker: one fine, one with dissolved
    // oxygen 2.5 mg/L (V, target II). The connector subscribes when it
    // connects; publish until its persistent session has them.
    let readings = [
        json!({"device_id": "DQ-S03", "ts": "2025-10-08T09:30:00+08:00", "do": 7.9, "codmn": 2.1, "nh3n": 0.12, "tp": 0.02, "ph": 7.6}),
        json!({"device_id": "DQ-S03", "ts": "2025-10-08T09:40:00+08:00", "do": 2.5, "codmn": 2.1, "nh3n": 0.12, "tp": 0.02, "ph": 7.6}),
    ];
    let mut opts = rumqttc::MqttOptions::new(format!("env-streams-device-{run}"), mqtt_host, mqtt_port);
    opts.set_clean_session(true).set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    let device = tokio::spawn(async move {
        let mut acks = 0u32;
        // Runs until the client is dropped; counts PUBACKs of the readings.
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acks += 1,
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return (acks, "disconnected".into()),
                Ok(_) => {}
                Err(e) => return (acks, e.to_string()),
            }
        }
    });
    let mqtt_topic = topics["env_mqtt_water"].clone();
    let on_bus = |topic: String| {
        let bus = Arc::clone(&bus);
        async move { bus.end_offsets(&topic).await.map(|o| o.iter().sum::<u64>()).unwrap_or(0) }
    };
    // The connector subscribes when it has connected: probe (a device that
    // is not in the registry, no readings) until one reaches the bus.
    let mut probes = 0u32;
    while on_bus(mqtt_topic.clone()).await == 0 {
        assert!(probes < 100, "the mqtt connector never received a probe");
        probes += 1;
        let probe =
            json!({"device_id": "probe", "ts": format!("2025-10-08T08:{:02}:{:02}+08:00", probes / 60, probes % 60)});
        client
            .publish(
                format!("sensors/water/{run}/probe"),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&probe).unwrap(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Earlier probes may still be on their way. One publisher, one topic,
    // QoS 1: they reach the bus in order, so publish a last probe and count
    // what is on the bus once that one is there.
    probes += 1;
    let last_ts = format!("2025-10-08T08:{:02}:{:02}+08:00", probes / 60, probes % 60);
    client
        .publish(
            format!("sensors/water/{run}/probe"),
            rumqttc::QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&json!({"device_id": "probe", "ts": last_ts})).unwrap(),
        )
        .await
        .unwrap();
    let from_start: lianqin_bus::OffsetLookup = std::sync::Arc::new(|_, _| None);
    let mut reader =
        bus.consumer("env-streams-probe-reader", std::slice::from_ref(&mqtt_topic), from_start).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last_seen = false;
    while !last_seen && std::time::Instant::now() < deadline {
        for r in reader.poll(100, Duration::from_millis(200)).await.unwrap() {
            last_seen |= r.envelope.payload().get("ts").and_then(|t| t.as_str()) == Some(last_ts.as_str());
        }
    }
    assert!(last_seen, "the last probe never reached the bus");
    let before = on_bus(mqtt_topic.clone()).await;
    for r in &readings {
        client
            .publish(
                format!("sensors/water/{run}/DQ-S03"),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(r).unwrap(),
            )
            .await
            .unwrap();
    }
    assert!(published(mqtt_topic.clone(), before + 2).await, "2 MQTT readings published by the connector");
    client.disconnect().await.unwrap();
    let (acks, _) = tokio::time::timeout(Duration::from_secs(10), device).await.expect("device disconnects").unwrap();
    assert!(acks >= probes + 2, "broker acked every publish ({acks} of {})", probes + 2);
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap().expect("source stops cleanly");
    }

    hub.process_available().await.expect("process");

    assert_eq!(count(d, "SELECT count(*) FROM raw_env_hj212_water").await, 3);
    assert_eq!(count(d, "SELECT count(*) FROM raw_env_mqtt_water WHERE source_key LIKE 'DQ-S03|%'").await, 2);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    // Elements: devices, the water body and the station (same ids as the CSV exports use).
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE id_type = 'mn' AND element_id LIKE 'mn:%'").await, 2);
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE element_id = 'water:西苕溪' AND kind = 'water'").await, 1);
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM element WHERE element_id = 'site:AJ-W001' AND division = '330523' AND lon IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE element_id = 'water:下渚湖' AND kind = 'lake'").await, 1);
    assert_eq!(count(d, "SELECT count(*) FROM element WHERE element_id = 'site:DQ-W005'").await, 1);
    // Exactly one warning per bad reading, none for good ones or unregistered devices.
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'wq212:%'").await, 1);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'wq212:33052300000000000000W001:%' AND stage = 'warning' AND category = 'a' AND title LIKE '%西苕溪%劣V类(目标III类)%' AND party_element_id = 'site:AJ-W001'").await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'wqs:%'").await, 1);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE 'wqs:DQ-S03:%' AND title LIKE '%下渚湖 V类(目标II类)%' AND division = '330521'").await,
        1
    );
    assert_eq!(count(d, "SELECT count(*) FROM matter_event WHERE stage = 'warning'").await, 2);
}
