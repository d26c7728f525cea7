//! The `mqtt` connector: water-quality and soil sensors, IoT gateways and
//! drones publishing JSON readings to an MQTT 3.1.1 broker (§5.4.4).
//!
//! ```toml
//! [[sources]]
//! id = "water_sensors"
//! department = "environment"
//! mapping = "schemas/mappings/water_sensors.toml"
//! [sources.connector]
//! type = "mqtt"
//! broker = "127.0.0.1:1883"
//! client_id = "lianqin-water-sensors"     # fixed: the persistent session is keyed by it
//! topics = ["sensors/water/#", "sensors/soil/+/reading"]
//! key_fields = ["device_id", "ts"]
//! time_field = "ts"                        # optional: the reading's own time
//! username = "lianqin"                     # optional
//! password = "${MQTT_PASSWORD}"            # optional; never logged
//! # defaults:
//! # qos = 1
//! # clean_session = false                  # persistent session
//! # topic_field = "_topic"                 # optional: copy the topic into each record
//! # keep_alive_secs = 30
//! # max_packet_bytes = 1048576
//! # batch_max = 500
//! # batch_linger_ms = 20
//! ```
//!
//! Each message's payload is parsed as JSON: an object is one record, an
//! array of objects one record each. The key is the `key_fields` values
//! joined with `|`. A payload that is not UTF-8 / not JSON / not objects, or
//! a record without a key field, is published as an unparsable envelope
//! (raw text, with the topic and the reason) so it reaches quarantine — it
//! is never dropped. The envelope's locator is `mqtt <topic>`.
//!
//! ## Delivery guarantee
//! At-least-once, end to end. The client runs with manual acks: a QoS 1
//! message is PUBACKed (QoS 2: PUBRECed) only after
//! [`SourceContext::publish`] returned, i.e. after its records are durable
//! on the bus. With `clean_session = false` the broker keeps the session
//! (subscriptions and unacknowledged or queued messages) across
//! disconnects, restarts of the hub and outages, and redelivers whatever
//! was not acknowledged; messages published while the hub was down are
//! delivered when it comes back (as long as the broker keeps them — see its
//! `persistence`, `max_queued_messages` and session expiry settings).
//! Redelivered messages carry the same key and content hash and are
//! dropped downstream. With `qos = 0` the broker does not redeliver, so
//! readings can be lost; use 1. The broker limits unacknowledged messages
//! in flight per client (mosquitto: `max_inflight_messages`, default 20),
//! which bounds each batch.

use std::time::Duration;

use lianqin_model::Envelope;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{ConnectorError, SourceContext, StreamingSource, expand_env};

/// Configuration of an `mqtt` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker address, `host:port` (plain TCP).
    pub broker: String,
    /// Client id. Keep it fixed: the broker keys the persistent session by it.
    pub client_id: String,
    /// Topic filters to subscribe to (`+` and `#` wildcards allowed).
    pub topics: Vec<String>,
    /// Subscription QoS: 0, 1 (default) or 2.
    #[serde(default = "one")]
    pub qos: u8,
    /// Start a clean session on connect (default false: persistent session,
    /// messages queued while the hub was away are delivered).
    #[serde(default)]
    pub clean_session: bool,
    /// User name, if the broker wants one. May use `${ENV_VAR}`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password; use `${ENV_VAR}`. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Fields of each record forming its key, joined with `|`.
    pub key_fields: Vec<String>,
    /// Field holding the reading's own time, if any.
    #[serde(default)]
    pub time_field: Option<String>,
    /// If set, the message topic is copied into each record under this field.
    #[serde(default)]
    pub topic_field: Option<String>,
    /// Keep-alive interval in seconds (default 30).
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Largest accepted MQTT packet in bytes (default 1 MiB).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Messages per publish at most (default 500).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first, in ms (default 20).
    #[serde(default = "default_linger")]
    pub batch_linger_ms: u64,
}

fn one() -> u8 {
    1
}
fn default_keep_alive() -> u64 {
    30
}
fn default_max_packet() -> usize {
    1024 * 1024
}
fn default_batch_max() -> usize {
    500
}
fn default_linger() -> u64 {
    20
}

impl MqttConfig {
    /// Checks the config (including that `${ENV}` credentials resolve)
    /// without connecting.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        split_broker(&self.broker).map_err(|e| bad(format!("`broker`: {e}")))?;
        if self.client_id.trim().is_empty() {
            return Err(bad("`client_id` must not be empty (the persistent session is keyed by it)".into()));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("`topics` must list at least one non-empty topic filter".into()));
        }
        if self.qos > 2 {
            return Err(bad(format!("`qos` must be 0, 1 or 2, got {}", self.qos)));
        }
        if self.key_fields.is_empty() || self.key_fields.iter().any(String::is_empty) {
            return Err(bad("`key_fields` must name at least one field".into()));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(bad("`password` needs `username`".into()));
        }
        if let Some(u) = &self.username {
            expand_env(u, source_id, "username")?;
        }
        if let Some(p) = &self.password {
            expand_env(p, source_id, "password")?;
        }
        if self.batch_max == 0 {
            return Err(bad("`batch_max` must be >= 1".into()));
        }
        if self.max_packet_bytes < 1024 {
            return Err(bad("`max_packet_bytes` must be >= 1024".into()));
        }
        Ok(())
    }
}

fn split_broker(broker: &str) -> Result<(String, u16), String> {
    let b = broker.trim().trim_start_matches("mqtt://").trim_start_matches("tcp://");
    let (host, port) = b.rsplit_once(':').ok_or_else(|| format!("expected host:port, got {broker:?}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port in {broker:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("missing host in {broker:?}"));
    }
    Ok((host.to_string(), port))
}

/// A running `mqtt` source.
pub struct MqttSource {
    id: String,
    department: String,
    cfg: MqttConfig,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("MqttSource")
            .field("id", &self.id)
            .field("broker", &self.cfg.broker)
            .field("client_id", &self.cfg.client_id)
            .finish()
    }
}

impl MqttSource {
    /// Builds the source, resolving `${ENV}` credentials.
    pub fn new(id: &str, department: &str, cfg: MqttConfig) -> Result<Self, ConnectorError> {
        let credentials = match &cfg.username {
            Some(u) => {
                let user = expand_env(u, id, "username")?;
                let pass = match &cfg.password {
                    Some(p) => expand_env(p, id, "password")?,
                    None => String::new(),
                };
                Some((user, pass))
            }
            None => None,
        };
        Ok(MqttSource { id: id.into(), department: department.into(), cfg, credentials })
    }

    fn options(&self) -> Result<MqttOptions, ConnectorError> {
        let (host, port) = split_broker(&self.cfg.broker)
            .map_err(|e| ConnectorError::Config { source_id: self.id.clone(), detail: format!("`broker`: {e}") })?;
        let mut o = MqttOptions::new(self.cfg.client_id.clone(), host, port);
        o.set_clean_session(self.cfg.clean_session)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(self.cfg.keep_alive_secs.max(5)))
            .set_max_packet_size(self.cfg.max_packet_bytes, self.cfg.max_packet_bytes);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        Ok(o)
    }

    fn qos(&self) -> QoS {
        match self.cfg.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    /// The records of one message (see the module docs).
    pub fn to_envelopes(&self, topic: &str, payload: &[u8]) -> Vec<Envelope> {
        let loc = format!("mqtt {topic}");
        let unparsable = |raw: String, why: String| {
            Envelope::unparsable(&self.id, &self.department, topic, raw, format!("mqtt topic {topic}: {why}"))
                .with_locator(loc.clone())
        };
        let text = match std::str::from_utf8(payload) {
            Ok(t) => t,
            Err(e) => {
                return vec![unparsable(
                    String::from_utf8_lossy(payload).into_owned(),
                    format!("payload is not UTF-8: {e}"),
                )];
            }
        };
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return vec![unparsable(text.to_string(), format!("payload is not JSON: {e}"))],
        };
        let (records, single) = match v {
            Value::Array(a) if !a.is_empty() => (a, false),
            o @ Value::Object(_) => (vec![o], true),
            _ => {
                return vec![unparsable(text.to_string(), "payload is not a JSON object or array of objects".into())];
            }
        };
        let mut out = Vec::with_capacity(records.len());
        for (i, mut rec) in records.into_iter().enumerate() {
            let loc_i = if single { loc.clone() } else { format!("{loc} #{i}") };
            let Value::Object(obj) = &mut rec else {
                out.push(unparsable(rec.to_string(), format!("record {i} is not a JSON object")).with_locator(loc_i));
                continue;
            };
            let mut parts = Vec::with_capacity(self.cfg.key_fields.len());
            let mut missing = None;
            for f in &self.cfg.key_fields {
                match obj.get(f) {
                    Some(Value::String(s)) if !s.trim().is_empty() => parts.push(s.clone()),
                    Some(Value::Number(n)) => parts.push(n.to_string()),
                    Some(Value::Bool(b)) => parts.push(b.to_string()),
                    _ => {
                        missing = Some(f.clone());
                        break;
                    }
                }
            }
            if let Some(f) = missing {
                out.push(
                    unparsable(rec.to_string(), format!("key field `{f}` is missing or empty")).with_locator(loc_i),
                );
                continue;
            }
            let time = self.cfg.time_field.as_ref().and_then(|f| obj.get(f)).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            if let Some(tf) = &self.cfg.topic_field {
                obj.insert(tf.clone(), json!(topic));
            }
            out.push(Envelope::upsert(&self.id, &self.department, parts.join("|"), rec, time).with_locator(loc_i));
        }
        out
    }

    /// Publishes a batch, retrying with backoff while the bus refuses. Gives
    /// up (returning the error) only when shutdown was asked for; the
    /// messages stay unacknowledged, so the broker redelivers them.
    async fn publish_batch(
        &self,
        ctx: &SourceContext,
        batch: &[Publish],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<usize, ConnectorError> {
        let envs: Vec<Envelope> = batch.iter().flat_map(|p| self.to_envelopes(&p.topic, &p.payload)).collect();
        let bad = envs.iter().filter(|e| e.error.is_some()).count();
        if bad > 0 {
            warn!(source = %self.id, unparsable = bad, "mqtt: unparsable messages routed to quarantine");
        }
        let cp = json!({
            "broker": self.cfg.broker,
            "last_topic": batch.last().map(|p| p.topic.clone()),
            "at": chrono::Utc::now().to_rfc3339(),
        });
        ctx.publish_until_accepted(&self.id, &envs, cp, shutdown, "mqtt: messages stay unacknowledged").await?;
        Ok(envs.len())
    }
}

/// Drives the MQTT connection: forwards incoming publishes, subscribes on
/// every (re)connect, reconnects with backoff, and ends after the
/// disconnect requested at shutdown went out.
async fn drive(
    id: String,
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    tx: mpsc::Sender<Publish>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(source = %id, session_present = ack.session_present, "mqtt: connected");
                backoff = Duration::from_millis(200);
                failures = 0;
                // Subscribing again is harmless with a kept session and
                // needed when the broker lost it (or topics changed).
                let c = client.clone();
                let f = filters.clone();
                tokio::spawn(async move {
                    let _ = c.subscribe_many(f).await;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let failed =
                    ack.return_codes.iter().filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)).count();
                if failed > 0 {
                    warn!(source = %id, failed, "mqtt: broker refused some topic subscriptions (check its ACL)");
                } else {
                    debug!(source = %id, "mqtt: subscribed");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Let the DISCONNECT reach the wire, then stop.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(source = %id, failures, retry_ms = backoff.as_millis() as u64, "mqtt: connection failed: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[async_trait::async_trait]
impl StreamingSource for MqttSource {
    fn id(&self) -> &str {
        &self.id
    }

    async fn run(&mut self, ctx: &SourceContext, mut shutdown: watch::Receiver<bool>) -> Result<(), ConnectorError> {
        let (client, eventloop) = AsyncClient::new(self.options()?, 1024);
        let filters: Vec<SubscribeFilter> =
            self.cfg.topics.iter().map(|t| SubscribeFilter::new(t.clone(), self.qos())).collect();
        let (tx, mut rx) = mpsc::channel::<Publish>(1024);
        let mut driver = tokio::spawn(drive(self.id.clone(), eventloop, client.clone(), filters, tx));
        info!(source = %self.id, broker = %self.cfg.broker, topics = ?self.cfg.topics, "mqtt: started");
        let linger = Duration::from_millis(self.cfg.batch_linger_ms);
        let mut result = Ok(());
        let mut total = 0u64;

        while !*shutdown.borrow() {
            let first = tokio::select! {
                m = rx.recv() => m,
                r = shutdown.changed() => {
                    if r.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < self.cfg.batch_max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => batch.push(m),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            match self.publish_batch(ctx, &batch, &shutdown).await {
                Ok(n) => {
                    total += n as u64;
                    // Durable: now let the broker forget them (in order).
                    for p in &batch {
                        if let Err(e) = client.ack(p).await {
                            warn!(source = %self.id, "mqtt: ack not sent (the broker will redeliver): {e}");
                        }
                    }
                }
                Err(e) => {
                    warn!(source = %self.id, messages = batch.len(),
                        "mqtt: stopping with an unpublished batch (left unacknowledged for redelivery): {e}");
                    result = Err(e);
                    break;
                }
            }
        }

        // Messages still queued here are not acknowledged: the broker
        // redelivers them to the next session.
        // The DISCONNECT is queued behind the acks above, so they go out
        // first; keep draining (without acking) until the driver ends.
        let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
        let give_up = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                _ = &mut driver => break,
                m = rx.recv() => {
                    if m.is_none() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), &mut driver).await;
                        break;
                    }
                }
                _ = &mut give_up => {
                    driver.abort();
                    break;
                }
            }
        }
        info!(source = %self.id, records = total, "mqtt: stopped");
        result
    }
}
