//! The `hj212` connector: a TCP server that pollution-source and
//! water-quality monitors (数采仪) push HJ 212 frames to (§5.4.4).
//!
//! ```toml
//! [[sources]]
//! id = "env_hj212"
//! department = "environment"
//! mapping = "schemas/mappings/env_hj212.toml"
//! [sources.connector]
//! type = "hj212"
//! listen = "0.0.0.0:9212"
//! crc = "hj212"           # hj212 (the standard's CRC, default) | modbus
//! reply = true            # 9014 data replies when Flag asks (A bit), 9011 NAK on bad CRC
//! max_frame = 9999        # largest data segment accepted
//! ```
//!
//! The codec, stream decoding (sticky and split TCP reads), PNUM/PNO
//! reassembly, replies and per-connection limits are those of
//! [`lianqin_hj212::Hj212Server`]; see that crate's README. Each complete
//! message becomes one record:
//!
//! * key `"<MN>|<CN>|<DataTime>"` (DataTime as `YYYYMMDDhhmmss`, plus
//!   milliseconds when the device sent them), or `"<MN>|<CN>|QN=<QN>"` for
//!   frames without a DataTime, or `"<MN>|<CN>|recv=<time>"` when neither is
//!   present (heartbeats);
//! * payload [`lianqin_hj212::frame_to_json`] plus `"peer"`, the device's IP
//!   address. The port is left out on purpose: a device reconnects from a new
//!   port, and a resent frame must hash equal to the first copy so the
//!   pipeline drops it. PW is never in the payload;
//! * `source_time` the payload's `data_time` (China Standard Time, ISO 8601).
//!
//! Bad-CRC and malformed frames are counted and logged by the server and
//! never published (a bad-CRC frame is NAKed so the device resends it); a
//! summary of the counters is logged every minute while they grow.
//! Unknown factor codes and CP keys are kept in the JSON.
//!
//! Messages are published in small batches: up to `batch_max` messages or
//! `batch_linger_ms` after the first one, whichever comes first.
//!
//! ## Delivery guarantee
//! * **Frames not acknowledged** (no 9014 reply yet, or Flag without the A
//!   bit and the device resends on its own schedule) are at-least-once: the
//!   standard has the device resend a frame whose reply does not come within
//!   its timeout (default 5 s, 3 tries), and then store it for 补传.
//! * **Acknowledged frames are durable**: the 9014 reply to a message goes
//!   out only after the batch holding it was published durably (embedded
//!   bus: fsynced; Kafka: acknowledged by the broker). Replies on a
//!   connection keep the order of its frames; reading goes on meanwhile, so
//!   many devices share one publish. A hub crash (power loss, `kill -9`)
//!   loses only unacknowledged messages, which the devices resend (or hold
//!   for 补传). A clean shutdown publishes everything already accepted, then
//!   `run` returns; while the bus refuses writes, publishing is retried with
//!   backoff, devices get no acks and keep their data, and the full channel
//!   stops reading from them (TCP backpressure).
//! * Repeats (resent frames) carry the same key and content hash and are
//!   dropped downstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lianqin_hj212::{CrcVariant, Hj212Message, Hj212Server, Hj212ServerConfig, Hj212Stats, MAX_DATA_LEN};
use lianqin_model::Envelope;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{ConnectorError, SourceContext, StreamingSource};

/// CRC variant of the devices on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Hj212Crc {
    /// The standard's "ANSI CRC16" (default).
    #[default]
    Hj212,
    /// CRC-16/MODBUS, sent by some loggers.
    Modbus,
}

/// Configuration of an `hj212` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hj212Config {
    /// Address to listen on (e.g. `0.0.0.0:9212`; port 0 picks a free one).
    pub listen: String,
    /// CRC variant of the devices on this port (default `hj212`).
    #[serde(default)]
    pub crc: Hj212Crc,
    /// Send replies: CN=9014 data replies when a frame's Flag asks for one,
    /// and CN=9011 `QnRtn=9` for bad-CRC frames (default true).
    #[serde(default = "yes")]
    pub reply: bool,
    /// NAK bad-CRC frames (needs `reply`; default true).
    #[serde(default = "yes")]
    pub nak_bad_crc: bool,
    /// Largest accepted data-segment length (default and maximum 9999).
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Close a device connection silent for this many seconds (default 600; 0 = never).
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Concurrent device connections (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Messages per publish at most (default 500). Also the channel size
    /// between the server and the publisher.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first, in ms (default 50).
    #[serde(default = "default_linger")]
    pub batch_linger_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_max_frame() -> usize {
    MAX_DATA_LEN
}
fn default_idle() -> u64 {
    600
}
fn default_max_connections() -> usize {
    1024
}
fn default_batch_max() -> usize {
    500
}
fn default_linger() -> u64 {
    50
}

impl Hj212Config {
    /// Checks the config without binding anything.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        if self.listen.trim().is_empty() || !self.listen.contains(':') {
            return Err(bad(format!("`listen` must be host:port, got {:?}", self.listen)));
        }
        if self.max_frame < 16 || self.max_frame > MAX_DATA_LEN {
            return Err(bad(format!("`max_frame` must be 16..={MAX_DATA_LEN}, got {}", self.max_frame)));
        }
        if self.max_connections == 0 {
            return Err(bad("`max_connections` must be >= 1".into()));
        }
        if self.batch_max == 0 {
            return Err(bad("`batch_max` must be >= 1".into()));
        }
        Ok(())
    }

    fn server_config(&self) -> Hj212ServerConfig {
        Hj212ServerConfig {
            crc: match self.crc {
                Hj212Crc::Hj212 => CrcVariant::Hj212,
                Hj212Crc::Modbus => CrcVariant::Modbus,
            },
            reply: self.reply,
            nak_bad_crc: self.nak_bad_crc,
            max_frame: self.max_frame,
            idle_timeout: (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs)),
            max_connections: self.max_connections,
            // 9014 replies only once the message is durable on the bus.
            ack_when_durable: true,
            ..Hj212ServerConfig::default()
        }
    }
}

/// A running `hj212` source.
pub struct Hj212Source {
    id: String,
    department: String,
    cfg: Hj212Config,
    bound: Option<Hj212Server>,
    stats: Option<Arc<Hj212Stats>>,
}

impl std::fmt::Debug for Hj212Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hj212Source").field("id", &self.id).field("listen", &self.cfg.listen).finish()
    }
}

impl Hj212Source {
    /// Builds the source (nothing is bound until [`Hj212Source::bind`] or `run`).
    pub fn new(id: &str, department: &str, cfg: Hj212Config) -> Self {
        Hj212Source { id: id.into(), department: department.into(), cfg, bound: None, stats: None }
    }

    /// Binds the listening socket now and returns its address (useful with
    /// port 0). `run` uses this socket; without it, `run` binds itself.
    pub async fn bind(&mut self) -> Result<SocketAddr, ConnectorError> {
        let (addr, server) =
            Hj212Server::bind(self.cfg.listen.as_str(), self.cfg.server_config()).await.map_err(|e| {
                ConnectorError::Io {
                    source_id: self.id.clone(),
                    path: self.cfg.listen.clone(),
                    detail: format!("cannot listen: {e}"),
                }
            })?;
        self.stats = Some(server.stats());
        self.bound = Some(server);
        info!(source = %self.id, %addr, "hj212: listening");
        Ok(addr)
    }

    /// The server's counters (frames, bad CRC, acks, ...), once bound.
    pub fn stats(&self) -> Option<Arc<Hj212Stats>> {
        self.stats.clone()
    }

    /// One record per message (see the module docs).
    pub fn to_envelope(&self, m: &Hj212Message) -> Envelope {
        let mut payload = lianqin_hj212::frame_to_json(&m.frame);
        if let Value::Object(o) = &mut payload {
            o.insert("peer".into(), json!(m.peer.ip().to_string()));
        }
        let f = &m.frame;
        let at = match (f.cp.data_time, &f.qn) {
            (Some(t), _) => {
                if t.and_utc().timestamp_subsec_millis() == 0 {
                    t.format("%Y%m%d%H%M%S").to_string()
                } else {
                    t.format("%Y%m%d%H%M%S%3f").to_string()
                }
            }
            (None, Some(qn)) => format!("QN={qn}"),
            (None, None) => format!("recv={}", m.received_at.format("%Y%m%dT%H%M%S%.3fZ")),
        };
        let key = format!("{}|{}|{}", f.mn, f.cn, at);
        let source_time = payload.get("data_time").and_then(Value::as_str).map(str::to_string);
        Envelope::upsert(&self.id, &self.department, key, payload, source_time).with_locator(format!(
            "hj212 from {} QN={}",
            m.peer,
            f.qn.as_deref().unwrap_or("-")
        ))
    }

    /// Publishes a batch, retrying with backoff while the bus refuses. Gives
    /// up (returning the error) only when shutdown was asked for.
    async fn publish_batch(
        &self,
        ctx: &SourceContext,
        batch: &[Hj212Message],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), ConnectorError> {
        let envs: Vec<Envelope> = batch.iter().map(|m| self.to_envelope(m)).collect();
        let cp = json!({
            "last_key": envs.last().map(|e| e.key.clone()),
            "last_received_at": batch.last().map(|m| m.received_at.to_rfc3339()),
        });
        ctx.publish_until_accepted(&self.id, &envs, cp, shutdown, "hj212: devices are back-pressured meanwhile")
            .await?;
        // Durable now: the devices' 9014 replies may go out.
        for m in batch {
            m.durable.confirm();
        }
        debug!(source = %self.id, records = envs.len(), "hj212: batch published");
        Ok(())
    }
}

#[async_trait::async_trait]
impl StreamingSource for Hj212Source {
    fn id(&self) -> &str {
        &self.id
    }

    async fn run(&mut self, ctx: &SourceContext, mut shutdown: watch::Receiver<bool>) -> Result<(), ConnectorError> {
        if self.bound.is_none() {
            self.bind().await?;
        }
        let Some(server) = self.bound.take() else {
            return Ok(());
        };
        let stats = self.stats.clone().unwrap_or_default();
        let (tx, mut rx) = mpsc::channel::<Hj212Message>(self.cfg.batch_max);
        let mut server_task = tokio::spawn(server.run(tx));
        let linger = Duration::from_millis(self.cfg.batch_linger_ms);
        let mut report = tokio::time::interval(Duration::from_secs(60));
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_bad = (0u64, 0u64);
        let mut server_done = false;
        let mut result = Ok(());

        while !*shutdown.borrow() {
            let first = tokio::select! {
                m = rx.recv() => m,
                r = shutdown.changed() => {
                    if r.is_err() {
                        break; // the hub went away: stop as on shutdown
                    }
                    continue;
                }
                r = &mut server_task, if !server_done => {
                    server_done = true;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!(source = %self.id, "hj212: server stopped: {e}"),
                        Err(e) => warn!(source = %self.id, "hj212: server task failed: {e}"),
                    }
                    continue;
                }
                _ = report.tick() => {
                    let s = stats.snapshot();
                    if (s.bad_crc, s.malformed) != last_bad {
                        last_bad = (s.bad_crc, s.malformed);
                        warn!(source = %self.id, frames_ok = s.frames_ok, bad_crc = s.bad_crc,
                            malformed = s.malformed, garbage_bytes = s.garbage_bytes,
                            reassembly_evicted = s.reassembly_evicted, "hj212: bad frames so far");
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
            if let Err(e) = self.publish_batch(ctx, &batch, &shutdown).await {
                warn!(source = %self.id, lost = batch.len(), "hj212: shutting down with an unpublished batch: {e}");
                result = Err(e);
                break;
            }
        }

        // Stop accepting (connections waiting to hand over a message get no
        // ack), then publish everything already accepted.
        rx.close();
        let mut rest = Vec::new();
        while let Some(m) = rx.recv().await {
            rest.push(m);
        }
        if result.is_ok() {
            for chunk in rest.chunks(self.cfg.batch_max) {
                if let Err(e) = self.publish_batch(ctx, chunk, &shutdown).await {
                    warn!(source = %self.id, lost = chunk.len(), "hj212: final batch not published: {e}");
                    result = Err(e);
                    break;
                }
            }
        }
        if !server_done {
            match tokio::time::timeout(Duration::from_secs(10), &mut server_task).await {
                Ok(_) => {}
                Err(_) => server_task.abort(),
            }
        }
        info!(source = %self.id, stats = ?stats.snapshot(), "hj212: stopped");
        result
    }
}
