//! A simulated Zhejiang public-data platform (IRS, 省公共数据平台) gateway:
//! the token endpoints and one data-sharing API, with real md5 signature
//! checks, request-secret expiry and quota errors (domain.md §8.1).
//!
//! | endpoint | signature |
//! |---|---|
//! | `GET /gateway/app/refreshTokenByKey.htm?appKey&requestTime&sign` | `md5(appKey + appSecret + requestTime)` → new request and refresh secrets |
//! | `GET /gateway/app/refreshTokenBySec.htm?appKey&requestTime&sign` | `md5(appKey + refreshSecret + requestTime)` → new request secret |
//! | `GET /gateway/api/001003001/dataSharing/<id>.htm?appKey&requestTime&sign&…` | `md5(appKey + requestSecret + requestTime)` (query parameters or headers) |
//!
//! Answers are `{"code": "00", "msg": …, "datas": …}`; the data API's
//! `datas` is a **JSON string** holding `{"success": true, "data": [...],
//! "total": n}`. Error codes: `14` bad signature, `11` request secret
//! expired, `18` quota exceeded. The data API pages by `pageNum`/`pageSize`
//! (from 1) over records with `gxsj` (update time) ≥ `updateTime`, sorted by
//! (`gxsj`, key).
//!
//! Each record (行政处罚信息, 双公示 field names) carries:
//!
//! | field | content |
//! |---|---|
//! | `xzcfjdswh` | 行政处罚决定书文号, the key (`湖环罚〔2025〕0001号`, …) |
//! | `xdrmc` | 行政相对人名称 (the enterprise) |
//! | `xdrshxym` | 行政相对人统一社会信用代码: a **valid** GB 32100 code (`91` + the enterprise's division + a GB 11714 organisation code), both check characters right |
//! | `xzqh` | 行政区划: the enterprise's Huzhou division (`3305xx`), the same as positions 3–8 of its `xdrshxym` and the county in its name |
//! | `cfnr` | 处罚内容 / 违法事实 |
//! | `fkje` | 罚款金额 (元), e.g. `12000.00` |
//! | `cfjdrq` | 处罚决定日期 `YYYY-MM-DD` |
//! | `gxsj` | 更新时间 `YYYY-MM-DD hh:mm:ss` |
//!
//! Records are deterministic from their index: consecutive records are
//! grouped into enterprises (group sizes cycle 3, 1, 2, 1), so some
//! enterprises have several penalties; an enterprise's code depends only on
//! its index, so the first records are the same whatever `records` is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Json;
use axum::routing::get;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::SimError;
use crate::world::{UsccKind, sub_rng, uscc};

/// The catalog path of the simulated data API (administrative penalties of
/// enterprises, 企业行政处罚信息).
pub const IRS_API_PATH: &str = "/gateway/api/001003001/dataSharing/8Ld4aA9TqE1bWx2K.htm";

/// How the simulated gateway behaves.
#[derive(Debug, Clone)]
pub struct IrsSimConfig {
    /// The app key the gateway knows.
    pub app_key: String,
    /// The app secret of that key (signs `refreshTokenByKey`).
    pub app_secret: String,
    /// Records served by the data API.
    pub records: usize,
    /// A request secret expires (code 11) after this many successful data
    /// calls made with it; `None` = never.
    pub expire_after_calls: Option<u64>,
    /// Data calls (1-based, counted over all data calls) answered with code
    /// 18 (quota exceeded).
    pub quota_error_calls: Vec<u64>,
}

impl Default for IrsSimConfig {
    fn default() -> Self {
        IrsSimConfig {
            app_key: "A330500-lianqin".into(),
            app_secret: "app-secret-for-tests".into(),
            records: 100,
            expire_after_calls: None,
            quota_error_calls: Vec::new(),
        }
    }
}

/// Request counters of the simulated gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IrsCounts {
    /// `refreshTokenByKey` calls answered with new secrets.
    pub refresh_by_key: u64,
    /// `refreshTokenBySec` calls answered with a new request secret.
    pub refresh_by_sec: u64,
    /// Data calls answered with records.
    pub data_ok: u64,
    /// Answers with code 11 (request secret expired).
    pub expired: u64,
    /// Answers with code 14 (bad signature), any endpoint.
    pub bad_signature: u64,
    /// Answers with code 18 (quota exceeded).
    pub quota: u64,
}

#[derive(Default)]
struct Counters {
    refresh_by_key: AtomicU64,
    refresh_by_sec: AtomicU64,
    data_ok: AtomicU64,
    expired: AtomicU64,
    bad_signature: AtomicU64,
    quota: AtomicU64,
    data_calls: AtomicU64,
}

struct Secrets {
    generation: u64,
    request: Option<String>,
    /// Request secrets that were valid once (answer 11, not 14).
    old_requests: Vec<String>,
    refresh: Option<String>,
    calls_with_request: u64,
}

struct IrsState {
    cfg: IrsSimConfig,
    records: Vec<Value>,
    secrets: Mutex<Secrets>,
    counters: Counters,
}

/// A running simulated IRS gateway.
pub struct IrsSim {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Full URL of the data API.
    pub api_url: String,
    state: Arc<IrsState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl IrsSim {
    /// The records the data API serves (ground truth for tests).
    pub fn records(&self) -> Vec<Value> {
        self.state.records.clone()
    }

    /// Request counters so far.
    pub fn counts(&self) -> IrsCounts {
        let c = &self.state.counters;
        IrsCounts {
            refresh_by_key: c.refresh_by_key.load(Ordering::SeqCst),
            refresh_by_sec: c.refresh_by_sec.load(Ordering::SeqCst),
            data_ok: c.data_ok.load(Ordering::SeqCst),
            expired: c.expired.load(Ordering::SeqCst),
            bad_signature: c.bad_signature.load(Ordering::SeqCst),
            quota: c.quota.load(Ordering::SeqCst),
        }
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// md5 hex (lower case) of the concatenation, as the gateway signs.
pub fn irs_sign(app_key: &str, secret: &str, request_time: &str) -> String {
    let mut h = Md5::new();
    h.update(app_key.as_bytes());
    h.update(secret.as_bytes());
    h.update(request_time.as_bytes());
    format!("{:x}", h.finalize())
}

/// The penalised enterprises' names and their divisions (the county in the
/// name; 湖州 without a county is registered in 吴兴区).
const ENTERPRISES: [(&str, &str); 5] = [
    ("湖州某印染有限公司", "330502"),
    ("安吉某竹木制品厂", "330523"),
    ("长兴某建材有限公司", "330522"),
    ("德清某化工有限公司", "330521"),
    ("南浔某电镀厂", "330503"),
];

/// How many consecutive penalties each enterprise gets, cycling.
const PENALTIES_PER_ENTERPRISE: [usize; 4] = [3, 1, 2, 1];

/// Salt of the per-enterprise random streams (USCC generation).
const ENTERPRISE_SALT: u64 = 0x1B5_0001;

/// The enterprise (index) of each of `n` records.
fn enterprise_of(n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    let mut e = 0;
    while out.len() < n {
        let k = PENALTIES_PER_ENTERPRISE[e % PENALTIES_PER_ENTERPRISE.len()];
        out.extend(std::iter::repeat_n(e, k.min(n - out.len())));
        e += 1;
    }
    out
}

/// Enterprise `e`'s name, division and (valid) unified social credit code.
fn enterprise(e: usize) -> (&'static str, &'static str, String) {
    let (name, division) = ENTERPRISES[e % ENTERPRISES.len()];
    let mut rng = sub_rng(e as u64, ENTERPRISE_SALT);
    (name, division, uscc(&mut rng, '1', division, UsccKind::Valid))
}

fn records(n: usize) -> Vec<Value> {
    const CONTENT: [&str; 4] = ["超标排放水污染物", "未批先建", "违法倾倒固体废物", "未按规定运行污染防治设施"];
    enterprise_of(n)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (name, division, code) = enterprise(e);
            // Groups of 7 records share one update time, so pages split ties.
            let minute = i / 7;
            json!({
                "xzcfjdswh": format!("湖环罚〔2025〕{:04}号", i + 1),
                "xdrmc": name,
                "xdrshxym": code,
                "xzqh": division,
                "cfnr": CONTENT[i % CONTENT.len()],
                "fkje": format!("{}.00", 10_000 + 1_000 * (i % 9)),
                "cfjdrq": format!("2025-0{}-{:02}", 1 + i % 9, 1 + i % 28),
                "gxsj": format!("2025-10-01 08:{:02}:{:02}", minute / 60, minute % 60),
            })
        })
        .collect()
}

/// Starts the simulated gateway on 127.0.0.1 (ephemeral port).
pub async fn start_irs(cfg: IrsSimConfig) -> Result<IrsSim, SimError> {
    let state = Arc::new(IrsState {
        records: records(cfg.records),
        cfg,
        secrets: Mutex::new(Secrets {
            generation: 0,
            request: None,
            old_requests: Vec::new(),
            refresh: None,
            calls_with_request: 0,
        }),
        counters: Counters::default(),
    });
    let router = Router::new()
        .route("/gateway/app/refreshTokenByKey.htm", get(by_key))
        .route("/gateway/app/refreshTokenBySec.htm", get(by_sec))
        .route("/gateway/api/{catalog}/dataSharing/{id}", get(data).post(data))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|source| SimError::Bind { server: "IRS gateway", source })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind { server: "IRS gateway", source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let base = format!("http://{addr}");
    Ok(IrsSim { api_url: format!("{base}{IRS_API_PATH}"), base, state, stop, task })
}

fn code(code: &str, msg: &str) -> Json<Value> {
    Json(json!({ "code": code, "msg": msg, "datas": null }))
}

fn new_secret(kind: &str, generation: u64) -> String {
    let r: u64 = rand::random();
    format!("{kind}{generation}x{r:016x}")
}

fn end_time(minutes: i64) -> i64 {
    chrono::Utc::now().timestamp_millis() + minutes * 60_000
}

async fn by_key(State(s): State<Arc<IrsState>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let (key, time, sign) = (q.get("appKey"), q.get("requestTime"), q.get("sign"));
    let (Some(key), Some(time), Some(sign)) = (key, time, sign) else {
        return code("14", "缺少参数 appKey/requestTime/sign");
    };
    if *key != s.cfg.app_key || *sign != irs_sign(key, &s.cfg.app_secret, time) {
        s.counters.bad_signature.fetch_add(1, Ordering::SeqCst);
        return code("14", "签名错误");
    }
    let mut sec = s.secrets.lock().unwrap_or_else(|e| e.into_inner());
    sec.generation += 1;
    if let Some(old) = sec.request.take() {
        sec.old_requests.push(old);
    }
    let (request, refresh) = (new_secret("req", sec.generation), new_secret("ref", sec.generation));
    sec.request = Some(request.clone());
    sec.refresh = Some(refresh.clone());
    sec.calls_with_request = 0;
    s.counters.refresh_by_key.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "code": "00",
        "msg": "成功",
        "datas": {
            "requestSecret": request,
            "requestSecretEndTime": end_time(15),
            "refreshSecret": refresh,
            "refreshSecretEndTime": end_time(48 * 60),
        }
    }))
}

async fn by_sec(State(s): State<Arc<IrsState>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let (key, time, sign) = (q.get("appKey"), q.get("requestTime"), q.get("sign"));
    let (Some(key), Some(time), Some(sign)) = (key, time, sign) else {
        return code("14", "缺少参数 appKey/requestTime/sign");
    };
    let mut sec = s.secrets.lock().unwrap_or_else(|e| e.into_inner());
    let ok = *key == s.cfg.app_key && sec.refresh.as_ref().is_some_and(|r| *sign == irs_sign(key, r, time));
    if !ok {
        s.counters.bad_signature.fetch_add(1, Ordering::SeqCst);
        return code("14", "签名错误");
    }
    sec.generation += 1;
    if let Some(old) = sec.request.take() {
        sec.old_requests.push(old);
    }
    let request = new_secret("req", sec.generation);
    sec.request = Some(request.clone());
    sec.calls_with_request = 0;
    s.counters.refresh_by_sec.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "code": "00",
        "msg": "成功",
        "datas": {
            "requestSecret": request,
            "requestSecretEndTime": end_time(15),
            "refreshSecret": sec.refresh.clone(),
            "refreshSecretEndTime": end_time(48 * 60),
        }
    }))
}

async fn data(
    State(s): State<Arc<IrsState>>,
    Path((_catalog, _id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let get = |k: &str| q.get(k).cloned().or_else(|| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string));
    let (Some(key), Some(time), Some(sign)) = (get("appKey"), get("requestTime"), get("sign")) else {
        s.counters.bad_signature.fetch_add(1, Ordering::SeqCst);
        return code("14", "缺少参数 appKey/requestTime/sign");
    };
    let call = s.counters.data_calls.fetch_add(1, Ordering::SeqCst) + 1;
    {
        let mut sec = s.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let current = key == s.cfg.app_key && sec.request.as_ref().is_some_and(|r| sign == irs_sign(&key, r, &time));
        if !current {
            let old = key == s.cfg.app_key && sec.old_requests.iter().any(|r| sign == irs_sign(&key, r, &time));
            if old {
                s.counters.expired.fetch_add(1, Ordering::SeqCst);
                return code("11", "请求秘钥已过期");
            }
            s.counters.bad_signature.fetch_add(1, Ordering::SeqCst);
            return code("14", "签名错误");
        }
        if s.cfg.quota_error_calls.contains(&call) {
            s.counters.quota.fetch_add(1, Ordering::SeqCst);
            return code("18", "超过调用次数限制");
        }
        if let Some(n) = s.cfg.expire_after_calls
            && sec.calls_with_request >= n
        {
            // The secret's lifetime ran out mid-sync.
            if let Some(r) = sec.request.take() {
                sec.old_requests.push(r);
            }
            s.counters.expired.fetch_add(1, Ordering::SeqCst);
            return code("11", "请求秘钥已过期");
        }
        sec.calls_with_request += 1;
    }
    let since = get("updateTime").unwrap_or_default();
    let page: usize = get("pageNum").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let size: usize = get("pageSize").and_then(|v| v.parse().ok()).unwrap_or(20).clamp(1, 500);
    let mut rows: Vec<&Value> =
        s.records.iter().filter(|r| r["gxsj"].as_str().unwrap_or_default() >= since.as_str()).collect();
    rows.sort_by(|a, b| {
        (a["gxsj"].as_str(), a["xzcfjdswh"].as_str()).cmp(&(b["gxsj"].as_str(), b["xzcfjdswh"].as_str()))
    });
    let total = rows.len();
    let page_rows: Vec<&Value> = rows.into_iter().skip((page - 1) * size).take(size).collect();
    s.counters.data_ok.fetch_add(1, Ordering::SeqCst);
    let inner = json!({ "success": true, "data": page_rows, "total": total, "errorMsg": null });
    Json(json!({ "code": "00", "msg": "成功", "datas": inner.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_valid_codes_and_consistent_divisions() {
        let recs = records(30);
        let mut per_code: HashMap<String, usize> = HashMap::new();
        for r in &recs {
            let code = r["xdrshxym"].as_str().unwrap();
            let div = r["xzqh"].as_str().unwrap();
            assert!(crate::ids::uscc_is_valid(code), "{code}");
            assert!(code.starts_with("91") && code[2..8] == *div, "{code} / {div}");
            assert!(div.starts_with("3305"), "{div}");
            *per_code.entry(code.to_string()).or_default() += 1;
        }
        assert!(per_code.values().any(|&k| k > 1), "some enterprise has several penalties");
        assert!(per_code.len() > 5, "and there are many enterprises: {per_code:?}");
        // Deterministic, and a prefix of a longer run.
        assert_eq!(records(30), recs);
        assert_eq!(records(40)[..30], recs[..]);
    }

    #[test]
    fn sign_is_md5_hex_of_the_concatenation() {
        // md5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(irs_sign("a", "b", "c"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
