//! Zhejiang public-data platform (IRS, 浙江省公共数据平台) gateway auth for
//! the `http` connector.
//!
//! ```toml
//! [sources.connector]
//! type = "http"
//! url = "https://interface.zjzwfw.gov.cn/gateway/api/001003001/dataSharing/8Ld4aA9TqE1bWx2K.htm"
//! records = "/datas/data"              # `datas` sent as a JSON string is decoded in place
//! key_field = "xzcfjdswh"
//! updated_field = "gxsj"
//! since_param = "updateTime"
//! pagination = { style = "page", param = "pageNum", size_param = "pageSize", size = 100 }
//! auth = { type = "irs", app_key = "${IRS_APP_KEY}", app_secret = "${IRS_APP_SECRET}" }
//! # auth options: gateway = "https://interface.zjzwfw.gov.cn" (default: scheme, host and port of `url`)
//! #               sign_in = "query" | "headers" (default query)
//! #               refresh_margin_secs = 120
//! ```
//!
//! How it signs (domain.md §8.1): `refreshTokenByKey.htm` with
//! `sign = md5(appKey + appSecret + requestTime)` gives a request secret
//! (≈15 min) and a refresh secret (≈48 h); `refreshTokenBySec.htm` with
//! `md5(appKey + refreshSecret + requestTime)` renews the request secret;
//! every data call carries `appKey`, `requestTime` (epoch ms) and
//! `sign = md5(appKey + requestSecret + requestTime)`.
//!
//! Gateway answers: code `00` (or no code) is success, and a `datas` that
//! is a JSON string is parsed in place; `11` (request secret expired) renews
//! the request secret (by refresh secret, or by app secret when that is
//! rejected) and repeats the call; `14` (bad signature) gets one fresh pair
//! of secrets and one more try, then fails the pass with a clear error — no
//! retry storm; `18` (quota exceeded) backs off with the source's retry
//! policy. Secrets are never logged.
//!
//! APIs that also want the `additional` audit block (powerMatters,
//! subPowerMatters, accesscardId, materialName, sponsorName) take it as a
//! constant query parameter: `query = { additional = '{"powerMatters":"许可-00757-000", ...}' }`.

use std::time::Duration;

use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{ConnectorError, expand_env};

/// Where the signature parameters go.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignIn {
    /// `appKey`, `requestTime`, `sign` as query parameters (default).
    #[default]
    Query,
    /// As request headers.
    Headers,
}

/// IRS gateway credentials and options (`auth = { type = "irs", ... }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrsAuthConfig {
    /// The application's appKey (may use `${ENV}`).
    pub app_key: String,
    /// The application's appSecret; use `${ENV}`. Never logged.
    pub app_secret: String,
    /// Gateway base URL for the token endpoints (default: scheme, host and
    /// port of the source `url`).
    #[serde(default)]
    pub gateway: Option<String>,
    /// Where the signature parameters go (default `query`).
    #[serde(default)]
    pub sign_in: SignIn,
    /// Renew the request secret this long before its end time (default 120 s).
    #[serde(default = "default_margin")]
    pub refresh_margin_secs: u64,
}

fn default_margin() -> u64 {
    120
}

/// Gateway outcome of one data call.
#[derive(Debug)]
pub(crate) enum IrsAnswer {
    /// Success; `datas` decoded in place.
    Ok(Value),
    /// Code 11: the request secret expired.
    Expired(String),
    /// Code 14: the signature was rejected.
    BadSignature(String),
    /// Code 18: quota exceeded.
    Quota(String),
    /// Any other non-success code.
    Other(String, String),
}

#[derive(Default)]
struct Secrets {
    request: Option<String>,
    /// Epoch ms after which the request secret is renewed.
    request_end_ms: i64,
    refresh: Option<String>,
    refresh_end_ms: i64,
}

/// Figures for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrsStats {
    /// Secrets fetched with the app secret (`refreshTokenByKey`).
    pub by_key: u64,
    /// Request secrets renewed with the refresh secret (`refreshTokenBySec`).
    pub by_sec: u64,
}

/// Runtime IRS auth of one source.
pub(crate) struct IrsAuth {
    source_id: String,
    app_key: String,
    app_secret: String,
    gateway: String,
    sign_in: SignIn,
    margin_ms: i64,
    secrets: Mutex<Secrets>,
    stats: std::sync::Mutex<IrsStats>,
}

impl std::fmt::Debug for IrsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IrsAuth").field("gateway", &self.gateway).finish()
    }
}

/// `md5(app_key + secret + request_time)` as lower-case hex.
pub fn sign(app_key: &str, secret: &str, request_time: &str) -> String {
    let mut h = Md5::new();
    h.update(app_key.as_bytes());
    h.update(secret.as_bytes());
    h.update(request_time.as_bytes());
    hex::encode(h.finalize())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn code_of(v: &Value) -> Option<String> {
    match v.get("code") {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn msg_of(v: &Value) -> String {
    ["msg", "message", "errorMsg"].iter().find_map(|k| v.get(*k).and_then(Value::as_str)).unwrap_or("").to_string()
}

fn is_success(code: &str) -> bool {
    matches!(code, "00" | "0" | "200")
}

impl IrsAuthConfig {
    /// Checks the config (secrets resolve, gateway URL parses).
    pub fn validate(&self, source_id: &str, url: &str) -> Result<(), ConnectorError> {
        expand_env(&self.app_key, source_id, "auth.app_key")?;
        expand_env(&self.app_secret, source_id, "auth.app_secret")?;
        self.gateway_base(source_id, url)?;
        Ok(())
    }

    fn gateway_base(&self, source_id: &str, url: &str) -> Result<String, ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        match &self.gateway {
            Some(g) => {
                url::Url::parse(g).map_err(|e| bad(format!("`auth.gateway` = {g:?}: {e}")))?;
                Ok(g.trim_end_matches('/').to_string())
            }
            None => {
                let u = url::Url::parse(url).map_err(|e| bad(format!("`url`: {e}")))?;
                let host = u.host_str().unwrap_or_default();
                Ok(match u.port() {
                    Some(p) => format!("{}://{host}:{p}", u.scheme()),
                    None => format!("{}://{host}", u.scheme()),
                })
            }
        }
    }
}

impl IrsAuth {
    /// Resolves the secrets and the gateway.
    pub(crate) fn new(source_id: &str, url: &str, cfg: &IrsAuthConfig) -> Result<IrsAuth, ConnectorError> {
        Ok(IrsAuth {
            source_id: source_id.into(),
            app_key: expand_env(&cfg.app_key, source_id, "auth.app_key")?,
            app_secret: expand_env(&cfg.app_secret, source_id, "auth.app_secret")?,
            gateway: cfg.gateway_base(source_id, url)?,
            sign_in: cfg.sign_in,
            margin_ms: (cfg.refresh_margin_secs as i64) * 1000,
            secrets: Mutex::new(Secrets::default()),
            stats: std::sync::Mutex::new(IrsStats::default()),
        })
    }

    /// Token refreshes so far.
    pub(crate) fn stats(&self) -> IrsStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls a token endpoint; returns (requestSecret, its end, refreshSecret, its end).
    async fn token(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        secret: &str,
    ) -> Result<Result<(String, i64, Option<String>, i64), (String, String)>, ConnectorError> {
        let url = format!("{}/gateway/app/{endpoint}", self.gateway);
        let time = now_ms().to_string();
        let sig = sign(&self.app_key, secret, &time);
        let resp = client
            .get(&url)
            .query(&[("appKey", self.app_key.as_str()), ("requestTime", time.as_str()), ("sign", sig.as_str())])
            .send()
            .await
            // Without the URL: its query carries the app key and a signature.
            .map_err(|e| ConnectorError::Unavailable {
                source_id: self.source_id.clone(),
                what: format!("{url}: {}", e.without_url()),
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ConnectorError::Unavailable {
            source_id: self.source_id.clone(),
            what: format!("{url}: reading body: {e}"),
        })?;
        if !status.is_success() {
            return Err(ConnectorError::Unavailable {
                source_id: self.source_id.clone(),
                what: format!("{url}: HTTP {status}"),
            });
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| ConnectorError::BadResponse {
            source_id: self.source_id.clone(),
            location: url.clone(),
            detail: format!("token answer is not JSON: {e}"),
        })?;
        let code = code_of(&v).unwrap_or_default();
        if !is_success(&code) {
            return Ok(Err((code, msg_of(&v))));
        }
        let mut datas = v.get("datas").cloned().unwrap_or(Value::Null);
        if let Value::String(s) = &datas {
            datas = serde_json::from_str(s).unwrap_or(Value::Null);
        }
        let text = |k: &str| datas.get(k).and_then(Value::as_str).map(str::to_string);
        let ms = |k: &str| match datas.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let request = text("requestSecret").ok_or_else(|| ConnectorError::BadResponse {
            source_id: self.source_id.clone(),
            location: url.clone(),
            detail: "token answer has no datas.requestSecret".into(),
        })?;
        let now = now_ms();
        Ok(Ok((
            request,
            ms("requestSecretEndTime").unwrap_or(now + 12 * 60_000),
            text("refreshSecret"),
            ms("refreshSecretEndTime").unwrap_or(now + 47 * 3_600_000),
        )))
    }

    /// Gets both secrets with the app secret.
    async fn refresh_by_key(&self, client: &reqwest::Client, s: &mut Secrets) -> Result<(), ConnectorError> {
        match self.token(client, "refreshTokenByKey.htm", &self.app_secret).await? {
            Ok((req, req_end, refresh, refresh_end)) => {
                s.request = Some(req);
                s.request_end_ms = req_end;
                s.refresh = refresh;
                s.refresh_end_ms = refresh_end;
                self.stats.lock().unwrap_or_else(|e| e.into_inner()).by_key += 1;
                info!(source = %self.source_id, "IRS secrets obtained with the app secret");
                Ok(())
            }
            Err((code, msg)) => Err(ConnectorError::BadResponse {
                source_id: self.source_id.clone(),
                location: format!("{}/gateway/app/refreshTokenByKey.htm", self.gateway),
                detail: if code == "14" {
                    format!(
                        "IRS gateway rejected the signature of app_key {:?} (code 14 {msg}): check auth.app_key and auth.app_secret",
                        self.app_key
                    )
                } else {
                    format!("IRS gateway answered code {code} {msg}")
                },
            }),
        }
    }

    /// Renews the request secret with the refresh secret, falling back to the app secret.
    async fn renew(&self, client: &reqwest::Client, s: &mut Secrets) -> Result<(), ConnectorError> {
        let refresh = s.refresh.clone().filter(|_| s.refresh_end_ms > now_ms() + self.margin_ms);
        if let Some(refresh) = refresh {
            match self.token(client, "refreshTokenBySec.htm", &refresh).await? {
                Ok((req, req_end, new_refresh, refresh_end)) => {
                    s.request = Some(req);
                    s.request_end_ms = req_end;
                    if let Some(r) = new_refresh {
                        s.refresh = Some(r);
                        s.refresh_end_ms = refresh_end;
                    }
                    self.stats.lock().unwrap_or_else(|e| e.into_inner()).by_sec += 1;
                    info!(source = %self.source_id, "IRS request secret renewed with the refresh secret");
                    return Ok(());
                }
                Err((code, msg)) => {
                    warn!(source = %self.source_id, %code, %msg, "IRS refresh secret rejected; getting new secrets with the app secret");
                }
            }
        }
        self.refresh_by_key(client, s).await
    }

    /// The signature parameters for one data call (renewing secrets first
    /// when they are missing or about to end).
    pub(crate) async fn sign_params(&self, client: &reqwest::Client) -> Result<Vec<(String, String)>, ConnectorError> {
        let mut s = self.secrets.lock().await;
        if s.request.is_none() {
            self.refresh_by_key(client, &mut s).await?;
        } else if s.request_end_ms <= now_ms() + self.margin_ms {
            self.renew(client, &mut s).await?;
        }
        let time = now_ms().to_string();
        let secret = s.request.clone().unwrap_or_default();
        Ok(vec![
            ("appKey".into(), self.app_key.clone()),
            ("requestTime".into(), time.clone()),
            ("sign".into(), sign(&self.app_key, &secret, &time)),
        ])
    }

    /// True when the parameters go in headers rather than the query.
    pub(crate) fn in_headers(&self) -> bool {
        self.sign_in == SignIn::Headers
    }

    /// After code 11: renew the request secret.
    pub(crate) async fn on_expired(&self, client: &reqwest::Client) -> Result<(), ConnectorError> {
        let mut s = self.secrets.lock().await;
        self.renew(client, &mut s).await
    }

    /// After code 14: start over with the app secret.
    pub(crate) async fn on_bad_signature(&self, client: &reqwest::Client) -> Result<(), ConnectorError> {
        let mut s = self.secrets.lock().await;
        self.refresh_by_key(client, &mut s).await
    }

    /// Classifies a data answer and decodes a string `datas` in place.
    pub(crate) fn classify(mut v: Value) -> IrsAnswer {
        let code = code_of(&v);
        match code.as_deref() {
            None => {}
            Some(c) if is_success(c) => {}
            Some("11") => return IrsAnswer::Expired(msg_of(&v)),
            Some("14") => return IrsAnswer::BadSignature(msg_of(&v)),
            Some("18") => return IrsAnswer::Quota(msg_of(&v)),
            Some(c) => return IrsAnswer::Other(c.to_string(), msg_of(&v)),
        }
        if let Some(Value::String(s)) = v.get("datas")
            && let Ok(inner) = serde_json::from_str::<Value>(s)
        {
            v["datas"] = inner;
        }
        IrsAnswer::Ok(v)
    }
}

/// Backoff floor after a quota answer.
pub(crate) const QUOTA_FLOOR: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_signature_and_datas_decoding() {
        assert_eq!(sign("a", "b", "c"), "900150983cd24fb0d6963f7d28e17f72");
        let v = serde_json::json!({"code": "00", "datas": "{\"success\":true,\"data\":[{\"id\":1}]}"});
        match IrsAuth::classify(v) {
            IrsAnswer::Ok(v) => assert_eq!(v.pointer("/datas/data/0/id"), Some(&serde_json::json!(1))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(IrsAuth::classify(serde_json::json!({"code": "11"})), IrsAnswer::Expired(_)));
        assert!(matches!(IrsAuth::classify(serde_json::json!({"code": 14})), IrsAnswer::BadSignature(_)));
        assert!(matches!(IrsAuth::classify(serde_json::json!({"code": "18", "msg": "x"})), IrsAnswer::Quota(_)));
    }
}
