//! The `webhook` connector: an HTTP receiver that departmental platforms
//! push to — 110 dispatch orders (派警指令), 12345 hotline tickets, 141
//! events (§5.3.10 "instructions flowing from the 110, 12345 and 141
//! platforms").
//!
//! ```toml
//! [[sources]]
//! id = "police_110_push"
//! department = "police"
//! mapping = "schemas/mappings/police_110.toml"
//! [sources.connector]
//! type = "webhook"
//! listen = "0.0.0.0:8610"
//! path = "/hooks/110"
//! secret = "${POLICE_110_HOOK_SECRET}"     # HMAC-SHA256 key; never logged
//! key_field = "jjdbh"
//! updated_field = "updated_at"              # optional: the record's change time
//! # defaults:
//! # signature_header = "X-Signature"        # hex, or "sha256=<hex>"
//! # timestamp_header = "X-Timestamp"        # unix seconds
//! # max_skew_secs = 300
//! # idempotency_header = "Idempotency-Key"
//! # idempotency_keys = 1000                 # how many recent keys are remembered
//! # max_body_bytes = 1048576
//! ```
//!
//! ## Request
//! `POST <path>` with a JSON body: one object, or an array of objects
//! (each one record). Headers:
//! * `X-Timestamp`: unix seconds; rejected when more than `max_skew_secs`
//!   away from the hub's clock (replay protection).
//! * `X-Signature`: HMAC-SHA256 with the shared secret over
//!   `<X-Timestamp value> + "." + <raw body bytes>`, as lower- or
//!   upper-case hex, optionally prefixed `sha256=`. Compared in constant time.
//! * `Idempotency-Key` (optional): the sender's id for this delivery.
//!
//! ## Responses (JSON bodies)
//! | status | when |
//! |---|---|
//! | 200 `{"accepted": n}` | the `n` records are durable on the bus |
//! | 200 `{"duplicate": true}` | the Idempotency-Key was already accepted; nothing published again |
//! | 400 `{"error", "field"?, "index"?}` | body is not JSON, not an object/array of objects, or a record lacks the key field |
//! | 401 `{"error"}` | missing/bad signature, missing/bad/stale timestamp |
//! | 409 `{"error"}` | the Idempotency-Key was used before with a different body |
//! | 413 `{"error"}` | body over `max_body_bytes` |
//! | 503 `{"error"}` | the bus did not take the records; retry later |
//!
//! ## Delivery guarantee
//! A 2xx answer is sent only after [`SourceContext::publish`] returned, i.e.
//! the records are durable on the bus; any other answer (or a dropped
//! connection) means "not stored, send again". Senders that retry until
//! 2xx get at-least-once delivery; with an Idempotency-Key the retries are
//! recognised and not published twice. Recent keys live in a bounded LRU
//! (`idempotency_keys`) and are saved in the source's bus checkpoint in the
//! same write as the records, so they survive a restart; a key older than
//! the last `idempotency_keys` deliveries is no longer recognised, and its
//! repeat is then dropped downstream by key and content hash. Deliveries
//! are published one at a time (so the key check and the publish are
//! atomic); a clean shutdown finishes requests in flight.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use lianqin_model::Envelope;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tracing::{debug, info, warn};

use crate::{ConnectorError, SourceContext, StreamingSource, expand_env};

/// Configuration of a `webhook` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on (e.g. `0.0.0.0:8610`; port 0 picks a free one).
    pub listen: String,
    /// URL path that accepts POSTs (e.g. `/hooks/110`).
    pub path: String,
    /// Shared HMAC-SHA256 secret; use `${ENV_VAR}`. Never logged.
    pub secret: String,
    /// Header with the signature (default `X-Signature`).
    #[serde(default = "default_sig_header")]
    pub signature_header: String,
    /// Header with the unix-seconds timestamp (default `X-Timestamp`).
    #[serde(default = "default_ts_header")]
    pub timestamp_header: String,
    /// Largest accepted clock difference in seconds (default 300).
    #[serde(default = "default_skew")]
    pub max_skew_secs: u64,
    /// Header with the sender's idempotency key (default `Idempotency-Key`).
    #[serde(default = "default_idem_header")]
    pub idempotency_header: String,
    /// How many recent idempotency keys are remembered (default 1000).
    #[serde(default = "default_idem_keys")]
    pub idempotency_keys: usize,
    /// Field of each record holding its key (string or number, non-empty).
    pub key_field: String,
    /// Field of each record holding its change time, if any.
    #[serde(default)]
    pub updated_field: Option<String>,
    /// Largest accepted body in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_sig_header() -> String {
    "X-Signature".into()
}
fn default_ts_header() -> String {
    "X-Timestamp".into()
}
fn default_skew() -> u64 {
    300
}
fn default_idem_header() -> String {
    "Idempotency-Key".into()
}
fn default_idem_keys() -> usize {
    1000
}
fn default_max_body() -> usize {
    1024 * 1024
}

impl WebhookConfig {
    /// Checks the config (including that the secret resolves) without binding.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        if self.listen.trim().is_empty() || !self.listen.contains(':') {
            return Err(bad(format!("`listen` must be host:port, got {:?}", self.listen)));
        }
        if !self.path.starts_with('/') || self.path.contains(['{', '}', '*']) {
            return Err(bad(format!("`path` must start with '/' and hold no route captures, got {:?}", self.path)));
        }
        if expand_env(&self.secret, source_id, "secret")?.is_empty() {
            return Err(bad("`secret` is empty".into()));
        }
        for (k, v) in [
            ("signature_header", &self.signature_header),
            ("timestamp_header", &self.timestamp_header),
            ("idempotency_header", &self.idempotency_header),
        ] {
            if axum::http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                return Err(bad(format!("`{k}` is not a valid header name: {v:?}")));
            }
        }
        if self.key_field.is_empty() {
            return Err(bad("`key_field` must name a field".into()));
        }
        if self.max_body_bytes == 0 {
            return Err(bad("`max_body_bytes` must be >= 1".into()));
        }
        if self.idempotency_keys == 0 {
            return Err(bad("`idempotency_keys` must be >= 1".into()));
        }
        Ok(())
    }
}

/// Recently accepted idempotency keys with the SHA-256 of their bodies,
/// least recently used evicted first.
#[derive(Debug, Default)]
struct RecentKeys {
    cap: usize,
    seq: u64,
    by_key: HashMap<String, (u64, String)>,
    order: BTreeMap<u64, String>,
}

impl RecentKeys {
    fn new(cap: usize) -> Self {
        RecentKeys { cap: cap.max(1), ..Default::default() }
    }

    /// The body hash stored for `key`, marking it recently used.
    fn get(&mut self, key: &str) -> Option<String> {
        let (old_seq, hash) = self.by_key.get(key).cloned()?;
        self.seq += 1;
        self.order.remove(&old_seq);
        self.order.insert(self.seq, key.to_string());
        self.by_key.insert(key.to_string(), (self.seq, hash.clone()));
        Some(hash)
    }

    fn insert(&mut self, key: &str, hash: &str) {
        self.seq += 1;
        if let Some((old, _)) = self.by_key.insert(key.to_string(), (self.seq, hash.to_string())) {
            self.order.remove(&old);
        }
        self.order.insert(self.seq, key.to_string());
        while self.by_key.len() > self.cap {
            let Some((_, k)) = self.order.pop_first() else { break };
            self.by_key.remove(&k);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((seq, _)) = self.by_key.remove(key) {
            self.order.remove(&seq);
        }
    }

    /// Checkpoint form: `{"idempotency": [[key, body_sha256], ...]}`, oldest first.
    fn to_checkpoint(&self) -> Value {
        let list: Vec<Value> =
            self.order.values().filter_map(|k| self.by_key.get(k).map(|(_, h)| json!([k, h]))).collect();
        json!({ "idempotency": list })
    }

    fn load(&mut self, cp: &Value) {
        let Some(list) = cp.get("idempotency").and_then(Value::as_array) else {
            return;
        };
        for item in list {
            if let (Some(k), Some(h)) = (item.get(0).and_then(Value::as_str), item.get(1).and_then(Value::as_str)) {
                self.insert(k, h);
            }
        }
    }
}

struct Shared {
    id: String,
    department: String,
    cfg: WebhookConfig,
    secret: Vec<u8>,
    ctx: SourceContext,
    recent: Mutex<RecentKeys>,
}

/// A running `webhook` source.
pub struct WebhookSource {
    id: String,
    department: String,
    cfg: WebhookConfig,
    secret: Vec<u8>,
    listener: Option<TcpListener>,
}

impl std::fmt::Debug for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("WebhookSource")
            .field("id", &self.id)
            .field("listen", &self.cfg.listen)
            .field("path", &self.cfg.path)
            .finish()
    }
}

impl WebhookSource {
    /// Builds the source, resolving the `${ENV}` secret.
    pub fn new(id: &str, department: &str, cfg: WebhookConfig) -> Result<Self, ConnectorError> {
        let secret = expand_env(&cfg.secret, id, "secret")?.into_bytes();
        if secret.is_empty() {
            return Err(ConnectorError::Config { source_id: id.into(), detail: "`secret` is empty".into() });
        }
        Ok(WebhookSource { id: id.into(), department: department.into(), cfg, secret, listener: None })
    }

    /// Binds the listening socket now and returns its address (useful with
    /// port 0). `run` uses this socket; without it, `run` binds itself.
    pub async fn bind(&mut self) -> Result<SocketAddr, ConnectorError> {
        let listener = TcpListener::bind(self.cfg.listen.as_str()).await.map_err(|e| ConnectorError::Io {
            source_id: self.id.clone(),
            path: self.cfg.listen.clone(),
            detail: format!("cannot listen: {e}"),
        })?;
        let addr = listener.local_addr().map_err(|e| ConnectorError::Io {
            source_id: self.id.clone(),
            path: self.cfg.listen.clone(),
            detail: e.to_string(),
        })?;
        self.listener = Some(listener);
        Ok(addr)
    }
}

#[async_trait::async_trait]
impl StreamingSource for WebhookSource {
    fn id(&self) -> &str {
        &self.id
    }

    async fn run(&mut self, ctx: &SourceContext, mut shutdown: watch::Receiver<bool>) -> Result<(), ConnectorError> {
        if self.listener.is_none() {
            self.bind().await?;
        }
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let mut recent = RecentKeys::new(self.cfg.idempotency_keys);
        if let Some(cp) = ctx.checkpoint(&self.id).await? {
            recent.load(&cp);
        }
        let addr = listener.local_addr().ok();
        info!(source = %self.id, addr = ?addr, path = %self.cfg.path, remembered_keys = recent.by_key.len(),
            "webhook: listening");
        let shared = Arc::new(Shared {
            id: self.id.clone(),
            department: self.department.clone(),
            cfg: self.cfg.clone(),
            secret: self.secret.clone(),
            ctx: ctx.clone(),
            recent: Mutex::new(recent),
        });
        let app = Router::new().route(&self.cfg.path, axum::routing::post(receive)).with_state(shared);
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await.map_err(|e| ConnectorError::Io {
            source_id: self.id.clone(),
            path: self.cfg.listen.clone(),
            detail: format!("server: {e}"),
        })?;
        info!(source = %self.id, "webhook: stopped");
        Ok(())
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn unauthorized(s: &Shared, why: &str) -> Response {
    warn!(source = %s.id, "webhook: rejected (401): {why}");
    reply(StatusCode::UNAUTHORIZED, json!({ "error": why }))
}

fn bad_request(s: &Shared, error: String, field: Option<&str>, index: Option<usize>) -> Response {
    debug!(source = %s.id, "webhook: rejected (400): {error}");
    let mut b = json!({ "error": error });
    if let Some(f) = field {
        b["field"] = json!(f);
    }
    if let Some(i) = index {
        b["index"] = json!(i);
    }
    reply(StatusCode::BAD_REQUEST, b)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Verifies timestamp and signature; `Err` carries the reason for the 401.
fn verify(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let th = &s.cfg.timestamp_header;
    let ts_text = header(headers, th).ok_or_else(|| format!("missing {th} header"))?;
    let ts: i64 = ts_text.parse().map_err(|_| format!("{th} must be unix seconds"))?;
    let now = chrono::Utc::now().timestamp();
    if now.abs_diff(ts) > s.cfg.max_skew_secs {
        return Err(format!("{th} is more than {} s away from the hub's clock", s.cfg.max_skew_secs));
    }
    let sh = &s.cfg.signature_header;
    let sig = header(headers, sh).ok_or_else(|| format!("missing {sh} header"))?;
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let sig = hex::decode(sig).map_err(|_| format!("{sh} must be hex HMAC-SHA256"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&s.secret).map_err(|_| "signature check unavailable".to_string())?;
    mac.update(ts_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig).map_err(|_| format!("{sh} does not match the body"))
}

/// Reads the body up to the limit; `Err` is the response to send.
async fn read_body(s: &Shared, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Box<Response>> {
    let max = s.cfg.max_body_bytes;
    let too_large = || {
        warn!(source = %s.id, max, "webhook: rejected (413): body too large");
        Box::new(reply(StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": format!("body larger than {max} bytes") })))
    };
    if header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Box::new(bad_request(s, format!("reading body: {e}"), None, None)))?;
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Turns the body into envelopes; `Err` is the 400 to send.
fn to_envelopes(s: &Shared, body: &[u8], locator: &str) -> Result<Vec<Envelope>, Box<Response>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(s, format!("body is not valid JSON: {e}"), None, None)))?;
    let (records, single) = match v {
        Value::Array(a) => (a, false),
        o @ Value::Object(_) => (vec![o], true),
        _ => {
            return Err(Box::new(bad_request(
                s,
                "body must be a JSON object or an array of objects".into(),
                None,
                None,
            )));
        }
    };
    if records.is_empty() {
        return Err(Box::new(bad_request(s, "body is an empty array".into(), None, None)));
    }
    let kf = &s.cfg.key_field;
    let mut out = Vec::with_capacity(records.len());
    for (i, rec) in records.into_iter().enumerate() {
        let index = (!single).then_some(i);
        if !rec.is_object() {
            return Err(Box::new(bad_request(s, format!("record {i} is not a JSON object"), None, index)));
        }
        let key = match rec.get(kf) {
            Some(Value::String(k)) if !k.trim().is_empty() => k.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                let which = if single { String::new() } else { format!("record {i}: ") };
                return Err(Box::new(bad_request(
                    s,
                    format!("{which}key field `{kf}` is missing or empty"),
                    Some(kf),
                    index,
                )));
            }
        };
        let updated = s.cfg.updated_field.as_ref().and_then(|f| rec.get(f)).and_then(|v| match v {
            Value::String(t) => Some(t.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let loc = if single { locator.to_string() } else { format!("{locator} #{i}") };
        out.push(Envelope::upsert(&s.id, &s.department, key, rec, updated).with_locator(loc));
    }
    Ok(out)
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&s, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Err(why) = verify(&s, &headers, &body) {
        return unauthorized(&s, &why);
    }
    let idem = header(&headers, &s.cfg.idempotency_header).map(str::to_string);
    let locator = match &idem {
        Some(k) => format!("webhook {} {}={k}", s.cfg.path, s.cfg.idempotency_header),
        None => format!("webhook {}", s.cfg.path),
    };
    let envs = match to_envelopes(&s, &body, &locator) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let body_hash = hex::encode(Sha256::digest(&body));

    // Held across the publish: the key check, the publish and the key's
    // entry in the checkpoint are one step.
    let mut recent = s.recent.lock().await;
    if let Some(k) = &idem {
        if let Some(h) = recent.get(k) {
            if h == body_hash {
                info!(source = %s.id, key = %k, "webhook: duplicate delivery, not published again");
                return reply(StatusCode::OK, json!({ "duplicate": true }));
            }
            warn!(source = %s.id, key = %k, "webhook: idempotency key reused with a different body (409)");
            return reply(
                StatusCode::CONFLICT,
                json!({ "error": format!("{} was already used with a different body", s.cfg.idempotency_header) }),
            );
        }
        recent.insert(k, &body_hash);
    }
    let cp = recent.to_checkpoint();
    match s.ctx.publish(&s.id, &envs, cp).await {
        Ok(()) => {
            debug!(source = %s.id, records = envs.len(), "webhook: published");
            reply(StatusCode::OK, json!({ "accepted": envs.len() }))
        }
        Err(e) => {
            if let Some(k) = &idem {
                recent.remove(k);
            }
            warn!(source = %s.id, records = envs.len(), "webhook: publish failed (503, sender should retry): {e}");
            reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "records not stored; retry later" }))
        }
    }
}
