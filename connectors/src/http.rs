//! The `http` connector: JSON APIs, paginated, incremental by updated-at.
//!
//! ```toml
//! [[sources]]
//! id = "police_110"
//! department = "police"
//! mapping = "schemas/mappings/police_110.toml"
//! [sources.connector]
//! type = "http"
//! url = "http://127.0.0.1:8110/api/110/incidents"
//! headers = { "X-API-Key" = "${POLICE_110_KEY}" }
//! records = "/data/items"
//! key_field = "jjdbh"
//! updated_field = "updated_at"
//! since_param = "updated_since"
//! pagination = { style = "page", param = "page", size_param = "page_size", size = 200 }
//! ```
//!
//! ## How a pass walks the source
//! The pass asks for records changed at or after the checkpoint (`since`),
//! sorted ascending by updated-at as the API returns them. After each page
//! is durably published, `since` moves to the newest updated-at on that page
//! and the walk restarts at the first page of that new `since` (keyset
//! paging); only when a full page shares one updated-at does it move to the
//! next page of the same `since`. So records that change while we page can
//! shift position without being skipped, and the checkpoint never moves past
//! a page that failed. Records at exactly `since` are fetched again and
//! dropped downstream by content hash.

use std::collections::BTreeMap;
use std::time::Duration;

use lianqin_model::Envelope;
use serde::Deserialize;
use serde_json::Value;
use tracing::{Instrument, debug, info_span, warn};

use crate::irs::{IrsAnswer, IrsAuth, IrsAuthConfig};
use crate::{ConnectorError, PollingSource, RetryConfig, RunStats, SourceContext, expand_env};

/// Request signing schemes beyond static headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// Zhejiang public-data platform (IRS) gateway: appKey + md5 signature
    /// with secret refresh ([`crate::irs`]).
    Irs(IrsAuthConfig),
}

/// Pagination style of an API.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// `?page=N&size=M`, pages numbered from `start` (default 1).
    Page {
        /// Page-number parameter name.
        param: String,
        /// Page-size parameter name.
        size_param: String,
        /// Page size.
        size: u32,
        /// First page number (default 1).
        #[serde(default = "one")]
        start: u32,
    },
    /// `?offset=N&limit=M`.
    Offset {
        /// Offset parameter name.
        param: String,
        /// Limit parameter name.
        limit_param: String,
        /// Page size.
        limit: u32,
    },
    /// `?cursor=C&limit=M`, next cursor read from the response.
    Cursor {
        /// Cursor parameter name.
        param: String,
        /// JSON pointer to the next cursor in the response (null/absent = end).
        next: String,
        /// Limit parameter name.
        limit_param: String,
        /// Page size.
        limit: u32,
    },
}

fn one() -> u32 {
    1
}

/// Configuration of an `http` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Endpoint URL (without the paging / since parameters).
    pub url: String,
    /// Request headers (auth). Values may use `${ENV_VAR}`; never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Constant extra query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the array of records in a response page (e.g. `/data/items`).
    pub records: String,
    /// Field of a record holding its key.
    pub key_field: String,
    /// Field of a record holding its updated-at (compared as text; the API's
    /// format must sort, e.g. `YYYY-MM-DD HH:MM:SS` or ISO-8601).
    pub updated_field: String,
    /// Query parameter carrying the incremental `since` value.
    pub since_param: String,
    /// `since` for the very first pass (default: everything).
    #[serde(default = "default_since")]
    pub since_initial: String,
    /// Optional field that marks a record deleted at the source (truthy = delete).
    #[serde(default)]
    pub delete_field: Option<String>,
    /// Pagination.
    pub pagination: Pagination,
    /// Per-request timeout in milliseconds (default 10 000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Safety limit on pages per pass (default 100 000).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Request signing (e.g. `{ type = "irs", app_key = "${IRS_APP_KEY}", app_secret = "${IRS_APP_SECRET}" }`).
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// JSON pointer to the number of matching records the API reports
    /// (e.g. `/data/total`), read from the first page of a pass: the
    /// source's own count for reconciliation (`RunStats::reported`).
    #[serde(default)]
    pub total: Option<String>,
}

fn default_since() -> String {
    String::new()
}
fn default_timeout() -> u64 {
    10_000
}
fn default_max_pages() -> u32 {
    100_000
}

impl HttpConfig {
    /// Checks the config without contacting the API.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        let u = url::Url::parse(&self.url).map_err(|e| bad(format!("`url` = {:?}: {e}", self.url)))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(bad(format!("`url`: scheme must be http or https, got {}", u.scheme())));
        }
        for (k, p) in [("records", &self.records)] {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(bad(format!("`{k}` must be a JSON pointer starting with '/', got {p:?}")));
            }
        }
        if let Pagination::Cursor { next, .. } = &self.pagination
            && !next.starts_with('/')
        {
            return Err(bad(format!("`pagination.next` must be a JSON pointer, got {next:?}")));
        }
        let size = match &self.pagination {
            Pagination::Page { size, .. } => *size,
            Pagination::Offset { limit, .. } | Pagination::Cursor { limit, .. } => *limit,
        };
        if size == 0 {
            return Err(bad("page size must be >= 1".into()));
        }
        for (k, v) in &self.headers {
            expand_env(v, source_id, &format!("headers.{k}"))?;
        }
        if let Some(HttpAuth::Irs(a)) = &self.auth {
            a.validate(source_id, &self.url)?;
        }
        Ok(())
    }
}

/// The checkpoint of an `http` source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct HttpCheckpoint {
    /// Updated-at of the newest record durably published.
    pub since: String,
}

/// A running `http` source.
pub struct HttpSource {
    id: String,
    department: String,
    cfg: HttpConfig,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    irs: Option<IrsAuth>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers hold secrets: never printed.
        f.debug_struct("HttpSource").field("id", &self.id).field("url", &self.cfg.url).finish()
    }
}

impl HttpSource {
    /// Builds the source (resolving `${ENV}` header values).
    pub fn new(id: &str, department: &str, cfg: HttpConfig) -> Result<Self, ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: id.into(), detail };
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.headers {
            let v = expand_env(v, id, &format!("headers.{k}"))?;
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| bad(format!("header name {k:?}: {e}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(&v)
                .map_err(|_| bad(format!("header {k}: value is not valid header text")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| bad(format!("http client: {e}")))?;
        let irs = match &cfg.auth {
            Some(HttpAuth::Irs(a)) => Some(IrsAuth::new(id, &cfg.url, a)?),
            None => None,
        };
        Ok(HttpSource { id: id.into(), department: department.into(), cfg, client, headers, irs })
    }

    /// IRS token refreshes so far (by app secret, by refresh secret), if
    /// the source signs for the IRS gateway.
    pub fn irs_stats(&self) -> Option<crate::irs::IrsStats> {
        self.irs.as_ref().map(IrsAuth::stats)
    }

    /// GETs one page with retries. Returns the parsed JSON and retries used.
    async fn get_page(&self, params: &[(String, String)]) -> Result<(Value, u64), ConnectorError> {
        let mut attempt = 0u32;
        let mut retries = 0u64;
        let location = describe(&self.cfg.url, params);
        // IRS: secret renewals (code 11) and re-signings (code 14) on this page.
        let mut renewals = 0u32;
        let mut resigned = false;
        loop {
            attempt += 1;
            let mut req =
                self.client.get(&self.cfg.url).headers(self.headers.clone()).query(&self.cfg.query).query(params);
            if let Some(irs) = &self.irs {
                let signed = irs.sign_params(&self.client).await?;
                if irs.in_headers() {
                    for (k, v) in &signed {
                        req = req.header(k.as_str(), v.as_str());
                    }
                } else {
                    req = req.query(&signed);
                }
            }
            let res = req.send().await;
            let (transient, why, floor) = match res {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let bytes = resp.bytes().await;
                        match bytes {
                            Ok(b) => {
                                let v: Value = serde_json::from_slice(&b).map_err(|e| ConnectorError::BadResponse {
                                    source_id: self.id.clone(),
                                    location: location.clone(),
                                    detail: format!("page is not JSON: {e}"),
                                })?;
                                let Some(irs) = &self.irs else {
                                    return Ok((v, retries));
                                };
                                match IrsAuth::classify(v) {
                                    IrsAnswer::Ok(v) => return Ok((v, retries)),
                                    IrsAnswer::Expired(msg) => {
                                        renewals += 1;
                                        if renewals > 3 {
                                            return Err(ConnectorError::BadResponse {
                                                source_id: self.id.clone(),
                                                location,
                                                detail: format!(
                                                    "IRS gateway keeps answering code 11 (request secret expired: {msg}) after {} renewals",
                                                    renewals - 1
                                                ),
                                            });
                                        }
                                        debug!(source = %self.id, %location, "IRS request secret expired (code 11); renewing");
                                        irs.on_expired(&self.client).await?;
                                        retries += 1;
                                        attempt -= 1;
                                        continue;
                                    }
                                    IrsAnswer::BadSignature(msg) => {
                                        if resigned {
                                            return Err(ConnectorError::BadResponse {
                                                source_id: self.id.clone(),
                                                location,
                                                detail: format!(
                                                    "IRS gateway rejected the signature (code 14 {msg}) also with freshly issued secrets; not retrying: check auth.app_key / auth.app_secret and the API's authorization"
                                                ),
                                            });
                                        }
                                        warn!(source = %self.id, %location, "IRS gateway rejected the signature (code 14); getting new secrets once");
                                        irs.on_bad_signature(&self.client).await?;
                                        resigned = true;
                                        retries += 1;
                                        attempt -= 1;
                                        continue;
                                    }
                                    IrsAnswer::Quota(msg) => (
                                        true,
                                        format!("IRS quota exceeded (code 18 {msg})"),
                                        Some(crate::irs::QUOTA_FLOOR),
                                    ),
                                    IrsAnswer::Other(code, msg) => {
                                        return Err(ConnectorError::BadResponse {
                                            source_id: self.id.clone(),
                                            location,
                                            detail: format!("IRS gateway answered code {code} {msg}"),
                                        });
                                    }
                                }
                            }
                            Err(e) => (true, format!("reading body: {e}"), None),
                        }
                    } else if status.as_u16() == 429 || status.is_server_error() {
                        let floor = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|s| s.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        (true, format!("HTTP {status}"), floor)
                    } else {
                        let body = resp.text().await.unwrap_or_default();
                        let hint = if status.as_u16() == 401 || status.as_u16() == 403 {
                            " (check the source's auth headers)"
                        } else {
                            ""
                        };
                        return Err(ConnectorError::BadResponse {
                            source_id: self.id.clone(),
                            location,
                            detail: format!("HTTP {status}{hint}: {}", truncate(&body, 200)),
                        });
                    }
                }
                // Without the URL: its query may carry signatures.
                Err(e) => (true, format!("request failed: {}", e.without_url()), None),
            };
            debug_assert!(transient);
            if attempt >= self.cfg.retry.max_attempts {
                return Err(ConnectorError::Unavailable {
                    source_id: self.id.clone(),
                    what: format!("{location}: {why}; gave up after {attempt} attempts"),
                });
            }
            let wait = self.cfg.retry.backoff(attempt, floor);
            warn!(source = %self.id, %location, attempt, wait_ms = wait.as_millis() as u64, "transient failure: {why}; retrying");
            retries += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn to_envelope(&self, rec: &Value, locator: String) -> Envelope {
        let key = match rec.get(&self.cfg.key_field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let updated = rec.get(&self.cfg.updated_field).and_then(|v| v.as_str()).map(str::to_string);
        let mut env = Envelope::upsert(&self.id, &self.department, key, rec.clone(), updated);
        if let Some(df) = &self.cfg.delete_field
            && truthy(rec.get(df))
        {
            env.op = lianqin_model::Op::Delete;
        }
        env.with_locator(locator)
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "Y" | "y" | "是"),
        _ => false,
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n).collect::<String>() + "…" }
}

fn describe(url: &str, params: &[(String, String)]) -> String {
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{url}?{}", q.join("&"))
}

#[async_trait::async_trait]
impl PollingSource for HttpSource {
    fn id(&self) -> &str {
        &self.id
    }

    async fn sync_once(&mut self, ctx: &SourceContext) -> Result<RunStats, ConnectorError> {
        let span = info_span!("sync", source = %self.id, kind = "http");
        async move {
            let cp: HttpCheckpoint = match ctx.checkpoint(&self.id).await? {
                Some(v) => serde_json::from_value(v).map_err(|e| ConnectorError::Config {
                    source_id: self.id.clone(),
                    detail: format!("stored checkpoint unreadable: {e}"),
                })?,
                None => HttpCheckpoint { since: self.cfg.since_initial.clone() },
            };
            let mut since = cp.since;
            let mut stats = RunStats::default();
            // Position within the current `since`: page number / offset / cursor.
            let mut page_idx: u32 = 0;
            let mut cursor: Option<String> = None;
            // Reconciliation: the source's count (first page) and the
            // distinct keys published; reported only for a pass read to the end.
            let mut reported: Option<u64> = None;
            let mut keys = std::collections::HashSet::new();
            let mut finished = false;
            for _ in 0..self.cfg.max_pages {
                let mut params: Vec<(String, String)> = vec![(self.cfg.since_param.clone(), since.clone())];
                let size = match &self.cfg.pagination {
                    Pagination::Page { param, size_param, size, start } => {
                        params.push((param.clone(), (start + page_idx).to_string()));
                        params.push((size_param.clone(), size.to_string()));
                        *size
                    }
                    Pagination::Offset { param, limit_param, limit } => {
                        params.push((param.clone(), (u64::from(page_idx) * u64::from(*limit)).to_string()));
                        params.push((limit_param.clone(), limit.to_string()));
                        *limit
                    }
                    Pagination::Cursor { param, limit_param, limit, .. } => {
                        params.push((param.clone(), cursor.clone().unwrap_or_default()));
                        params.push((limit_param.clone(), limit.to_string()));
                        *limit
                    }
                };
                let location = describe(&self.cfg.url, &params);
                let (page, retries) = self.get_page(&params).await?;
                stats.retries += retries;
                if stats.units == 0
                    && let Some(ptr) = &self.cfg.total
                {
                    reported = page.pointer(ptr).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
                }
                let items = match page.pointer(&self.cfg.records) {
                    Some(Value::Array(a)) => a.clone(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => {
                        return Err(ConnectorError::BadResponse {
                            source_id: self.id.clone(),
                            location,
                            detail: format!("`{}` is not an array but {}", self.cfg.records, kind_of(other)),
                        });
                    }
                };
                if items.is_empty() {
                    finished = true;
                    break;
                }
                let envelopes: Vec<Envelope> = items
                    .iter()
                    .enumerate()
                    .map(|(i, r)| self.to_envelope(r, format!("{location} item {i}")))
                    .collect();
                let page_max = envelopes.iter().filter_map(|e| e.source_time.clone()).max().unwrap_or_default();
                let new_since = if page_max > since { page_max } else { since.clone() };
                let checkpoint =
                    serde_json::to_value(HttpCheckpoint { since: new_since.clone() }).unwrap_or(Value::Null);
                ctx.publish(&self.id, &envelopes, checkpoint).await?;
                stats.records += envelopes.len() as u64;
                stats.unparsable += envelopes.iter().filter(|e| e.key.is_empty()).count() as u64;
                stats.units += 1;
                if self.cfg.total.is_some() {
                    // A record without a key counts once per content.
                    keys.extend(
                        envelopes
                            .iter()
                            .map(|e| if e.key.is_empty() { format!("\0{}", e.hash) } else { e.key.clone() }),
                    );
                }
                debug!(source = %self.id, %location, n = envelopes.len(), since = %new_since, "page published");
                let next_cursor = match &self.cfg.pagination {
                    Pagination::Cursor { next, .. } => page.pointer(next).and_then(|v| match v {
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                    _ => None,
                };
                let short_page = (items.len() as u32) < size;
                match &self.cfg.pagination {
                    Pagination::Cursor { .. } => {
                        // Opaque cursors are stable within a walk; follow them to the end.
                        match next_cursor {
                            Some(c) => cursor = Some(c),
                            None => {
                                finished = true;
                                break;
                            }
                        }
                        since = new_since;
                    }
                    _ => {
                        if short_page {
                            finished = true;
                            break;
                        }
                        if new_since > since {
                            since = new_since;
                            page_idx = 0;
                        } else {
                            page_idx += 1;
                        }
                    }
                }
            }
            if self.cfg.total.is_some() {
                stats.distinct = keys.len() as u64;
                stats.reported = if finished { reported } else { None };
            }
            Ok(stats)
        }
        .instrument(span)
        .await
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
