//! The four HTTP servers (axum on 127.0.0.1:0), with auth, fault injection and each source's
//! own pagination style and JSON envelope.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::world::{Rec, Src, World};
use crate::{RequestCounts, ServerCounts, SimConfig, SimError};

/// Largest page a server hands out; bigger requests are clamped (the response says so).
pub(crate) const MAX_PAGE: usize = 500;

#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    errors_500: AtomicU64,
    rate_limited_429: AtomicU64,
    slowed: AtomicU64,
    unauthorized: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ServerCounts {
        ServerCounts {
            requests: self.requests.load(Ordering::SeqCst),
            errors_500: self.errors_500.load(Ordering::SeqCst),
            rate_limited_429: self.rate_limited_429.load(Ordering::SeqCst),
            slowed: self.slowed.load(Ordering::SeqCst),
            unauthorized: self.unauthorized.load(Ordering::SeqCst),
        }
    }
}

/// State shared by all servers and the [`crate::Simulation`] handle.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    world: Mutex<World>,
    counters: [Counters; 4],
    /// While set, every request answers `500` ([`crate::Simulation::set_outage`]).
    pub outage: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn new(cfg: SimConfig) -> Shared {
        let world = World::generate(&cfg);
        Shared { cfg, world: Mutex::new(world), counters: Default::default(), outage: Default::default() }
    }

    /// Lock the world (a poisoned lock is still usable: every mutation leaves it consistent).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn world_mut(&self) -> MutexGuard<'_, World> {
        self.world()
    }

    fn counters(&self, src: Src) -> &Counters {
        match src {
            Src::Police110 => &self.counters[0],
            Src::Hotline12345 => &self.counters[1],
            Src::Market => &self.counters[2],
            Src::LawEnforcement => &self.counters[3],
        }
    }

    pub fn counts(&self) -> RequestCounts {
        RequestCounts {
            police_110: self.counters[0].snapshot(),
            hotline_12345: self.counters[1].snapshot(),
            market: self.counters[2].snapshot(),
            law_enforcement: self.counters[3].snapshot(),
        }
    }
}

/// A spawned server and the means to stop it.
pub(crate) struct RunningServer {
    pub url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningServer {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await.is_err() {
            abort.abort();
        }
    }
}

pub(crate) async fn spawn(shared: Arc<Shared>, src: Src) -> Result<RunningServer, SimError> {
    let router = match src {
        Src::Police110 => Router::new().route("/api/110/incidents", get(incidents)),
        Src::Hotline12345 => Router::new().route("/api/12345/tickets", get(tickets)),
        Src::Market => Router::new().route("/api/market/enterprises", get(enterprises)),
        Src::LawEnforcement => Router::new().route("/api/zhzf/cases", get(cases)),
    };
    let app = router
        .fallback(move |State(sh): State<Arc<Shared>>, headers: HeaderMap| async move {
            if let Some(r) = gate(&sh, src, &headers).await {
                return r;
            }
            error(src, StatusCode::NOT_FOUND, "no such endpoint")
        })
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| SimError::Bind { server: src.name(), source })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind { server: src.name(), source })?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(server = src.name(), error = %e, "simulated server stopped with an error");
        }
    });
    Ok(RunningServer { url: format!("http://{addr}"), stop: tx, task })
}

/// The source's own JSON error envelope.
fn error(src: Src, status: StatusCode, msg: &str) -> Response {
    let code = status.as_u16();
    let body = match src {
        Src::Police110 => json!({ "code": code, "msg": msg, "data": null }),
        Src::Hotline12345 => {
            json!({ "error": status.canonical_reason().unwrap_or("error"), "message": msg })
        }
        Src::Market => json!({ "error": { "code": code, "message": msg } }),
        Src::LawEnforcement => {
            json!({ "success": false, "code": code, "message": msg, "result": null })
        }
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Count the request, apply faults, check the API key. `Some(response)` ends the request.
async fn gate(sh: &Shared, src: Src, headers: &HeaderMap) -> Option<Response> {
    let c = sh.counters(src);
    let n = c.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let f = &sh.cfg.faults;
    let hits = |every: Option<u32>| every.is_some_and(|e| e > 0 && n.is_multiple_of(u64::from(e)));
    if let Some((every, dur)) = f.slow_every
        && hits(Some(every))
    {
        c.slowed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(dur).await;
    }
    if hits(f.error_500_every) || sh.outage.load(Ordering::SeqCst) {
        c.errors_500.fetch_add(1, Ordering::SeqCst);
        return Some(error(src, StatusCode::INTERNAL_SERVER_ERROR, "simulated internal error"));
    }
    if hits(f.rate_429_every) {
        c.rate_limited_429.fetch_add(1, Ordering::SeqCst);
        return Some(error(src, StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded, retry after 1 s"));
    }
    let key = sh.cfg.api_key.as_str();
    let ok = match src {
        Src::Hotline12345 => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && token.trim() == key),
        _ => headers.get("x-api-key").and_then(|v| v.to_str().ok()).is_some_and(|v| v == key),
    };
    if !ok {
        c.unauthorized.fetch_add(1, Ordering::SeqCst);
        let msg = match src {
            Src::Hotline12345 => "missing or invalid Authorization: Bearer token",
            _ => "missing or invalid X-API-Key",
        };
        return Some(error(src, StatusCode::UNAUTHORIZED, msg));
    }
    None
}

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Parse a non-negative integer parameter; `Err` carries the message for a 400.
fn num(q: &HashMap<String, String>, name: &str, default: usize, min: usize) -> Result<usize, String> {
    match param(q, name) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(format!("{name} must be an integer ≥ {min}")),
        },
    }
}

/// `YYYY-MM-DD HH:MM:SS` (also accepts a `T` separator), local +08:00.
fn parse_local(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()
}

/// ISO-8601 / RFC 3339 with any offset (converted to +08:00); without an offset it is taken as
/// +08:00. A `+` decoded to a space by a client that forgot to percent-encode it is tolerated.
fn parse_iso(s: &str) -> Option<NaiveDateTime> {
    let cst = FixedOffset::east_opt(8 * 3600)?;
    let try_one = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&cst).naive_local());
    if let Some(t) = try_one(s) {
        return Some(t);
    }
    if let Some(i) = s.rfind(' ')
        && i > 10
    {
        let fixed = format!("{}+{}", &s[..i], &s[i + 1..]);
        if let Some(t) = try_one(&fixed) {
            return Some(t);
        }
    }
    parse_local(s)
}

/// The records updated at or after `since` (all when `None`), in (updated_at, key) order.
fn filtered(recs: &[Rec], since: Option<NaiveDateTime>) -> Vec<&Rec> {
    recs.iter().filter(|r| since.is_none_or(|t| r.updated_at >= t)).collect()
}

fn page_of(recs: &[&Rec], skip: usize, take: usize) -> Vec<Value> {
    recs.iter().skip(skip).take(take).map(|r| r.value.clone()).collect()
}

async fn incidents(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Params) -> Response {
    let src = Src::Police110;
    if let Some(r) = gate(&sh, src, &headers).await {
        return r;
    }
    let since = match param(&q, "updated_since") {
        None => None,
        Some(s) => match parse_local(s) {
            Some(t) => Some(t),
            None => {
                return error(src, StatusCode::BAD_REQUEST, "updated_since must be YYYY-MM-DD HH:MM:SS");
            }
        },
    };
    let (page, size) = match (num(&q, "page", 1, 1), num(&q, "page_size", 20, 1)) {
        (Ok(p), Ok(s)) => (p, s.min(MAX_PAGE)),
        (Err(e), _) | (_, Err(e)) => return error(src, StatusCode::BAD_REQUEST, &e),
    };
    let body = {
        let w = sh.world();
        let recs = filtered(w.records(src), since);
        let items = page_of(&recs, (page - 1).saturating_mul(size), size);
        json!({ "code": 0, "msg": "ok", "data": { "total": recs.len(), "page": page, "page_size": size, "items": items } })
    };
    axum::Json(body).into_response()
}

async fn tickets(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Params) -> Response {
    let src = Src::Hotline12345;
    if let Some(r) = gate(&sh, src, &headers).await {
        return r;
    }
    let since = match param(&q, "since") {
        None => None,
        Some(s) => match parse_local(s) {
            Some(t) => Some(t),
            None => {
                return error(src, StatusCode::BAD_REQUEST, "since must be YYYY-MM-DD HH:MM:SS");
            }
        },
    };
    let (offset, limit) = match (num(&q, "offset", 0, 0), num(&q, "limit", 20, 1)) {
        (Ok(o), Ok(l)) => (o, l.min(MAX_PAGE)),
        (Err(e), _) | (_, Err(e)) => return error(src, StatusCode::BAD_REQUEST, &e),
    };
    let body = {
        let w = sh.world();
        let recs = filtered(w.records(src), since);
        json!({ "total": recs.len(), "rows": page_of(&recs, offset, limit) })
    };
    axum::Json(body).into_response()
}

/// Opaque cursor: hex of `<unix seconds of updated_at as local>|<uscc>` of the last item served.
fn encode_cursor(r: &Rec) -> String {
    let raw = format!("{}|{}", r.updated_at.and_utc().timestamp(), r.key.as_deref().unwrap_or(""));
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(s: &str) -> Option<(NaiveDateTime, String)> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let (ts, key) = raw.split_once('|')?;
    let t = DateTime::from_timestamp(ts.parse().ok()?, 0)?.naive_utc();
    Some((t, key.to_string()))
}

async fn enterprises(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Params) -> Response {
    let src = Src::Market;
    if let Some(r) = gate(&sh, src, &headers).await {
        return r;
    }
    let since = match param(&q, "updated_after") {
        None => None,
        Some(s) => match parse_iso(s) {
            Some(t) => Some(t),
            None => {
                return error(
                    src,
                    StatusCode::BAD_REQUEST,
                    "updated_after must be ISO-8601, e.g. 2025-03-15T08:00:00+08:00",
                );
            }
        },
    };
    let after = match param(&q, "cursor") {
        None => None,
        Some(c) => match decode_cursor(c) {
            Some(p) => Some(p),
            None => return error(src, StatusCode::BAD_REQUEST, "invalid cursor"),
        },
    };
    let limit = match num(&q, "limit", 50, 1) {
        Ok(l) => l.min(MAX_PAGE),
        Err(e) => return error(src, StatusCode::BAD_REQUEST, &e),
    };
    let body = {
        let w = sh.world();
        let recs: Vec<&Rec> = filtered(w.records(src), since)
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|(t, k)| r.sort_key() > (*t, k.as_str())))
            .collect();
        let page: Vec<&Rec> = recs.iter().take(limit).copied().collect();
        let next = if recs.len() > limit { page.last().map(|r| encode_cursor(r)) } else { None };
        json!({ "data": page.iter().map(|r| r.value.clone()).collect::<Vec<_>>(), "next_cursor": next })
    };
    axum::Json(body).into_response()
}

async fn cases(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Params) -> Response {
    let src = Src::LawEnforcement;
    if let Some(r) = gate(&sh, src, &headers).await {
        return r;
    }
    let since = match param(&q, "modifiedSince") {
        None => None,
        Some(s) => match parse_iso(s) {
            Some(t) => Some(t),
            None => {
                return error(
                    src,
                    StatusCode::BAD_REQUEST,
                    "modifiedSince must be ISO-8601, e.g. 2025-03-15T08:00:00+08:00",
                );
            }
        },
    };
    let (page, size) = match (num(&q, "pageNo", 1, 1), num(&q, "pageSize", 20, 1)) {
        (Ok(p), Ok(s)) => (p, s.min(MAX_PAGE)),
        (Err(e), _) | (_, Err(e)) => return error(src, StatusCode::BAD_REQUEST, &e),
    };
    let body = {
        let w = sh.world();
        let recs = filtered(w.records(src), since);
        let records = page_of(&recs, (page - 1).saturating_mul(size), size);
        json!({ "success": true, "result": { "records": records, "total": recs.len(), "pages": recs.len().div_ceil(size), "pageNo": page, "pageSize": size } })
    };
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_parsing_variants() {
        let want = parse_local("2025-03-15 08:00:00");
        assert!(want.is_some());
        assert_eq!(parse_iso("2025-03-15T08:00:00+08:00"), want);
        assert_eq!(parse_iso("2025-03-15T08:00:00 08:00"), want);
        assert_eq!(parse_iso("2025-03-15T00:00:00Z"), want);
        assert_eq!(parse_iso("2025-03-15T08:00:00"), want);
        assert_eq!(parse_iso("2025-03-15"), None);
    }
}
