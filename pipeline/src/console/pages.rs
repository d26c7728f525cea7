//! The handlers of the console's pages (see the module docs of
//! [`crate::console`] for who may see what). GET pages need a live session
//! (else the login page); POSTs also need the session's CSRF token and,
//! when the browser names one, this console as `Origin`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use lianqin_audit::{EventKind, Outcome};
use serde::Deserialize;

use super::html::{Viewer, cell, esc, note, page, table, url_enc};
use super::session::{self, same_token};
use super::{Caller, Console, html, secured};
use crate::query::{OutputFormat, format_batches};

type St = State<Arc<Console>>;
type Addr = ConnectInfo<SocketAddr>;

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

pub(super) fn to_login() -> Response {
    secured(Redirect::to("/login").into_response())
}

fn viewer(c: &Caller) -> Viewer<'_> {
    Viewer { user: &c.who.name, department: &c.who.department, csrf: &c.session.csrf }
}

pub(super) fn frame(c: &Caller, title: &str, active: &str, body: &str) -> Response {
    html(StatusCode::OK, page(title, active, Some(&viewer(c)), body, None))
}

fn refused(c: &Caller, title: &str, active: &str, why: &str) -> Response {
    html(StatusCode::FORBIDDEN, page(title, active, Some(&viewer(c)), &note("error", why), None))
}

pub(super) fn csrf_field(c: &Caller) -> String {
    format!(r#"<input type="hidden" name="_csrf" value="{}">"#, esc(&c.session.csrf))
}

/// Does the request come from this console's own pages? Browsers send
/// `Origin` on POSTs; when present it must name the `Host` served.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    rest == Some(host)
}

impl Console {
    /// The caller of a POST: a live session whose CSRF token `token` is,
    /// from this console's origin. Anything else is refused with 403 and
    /// recorded as a `denial`.
    pub(super) async fn post_caller(
        &self,
        headers: &HeaderMap,
        addr: SocketAddr,
        token: &str,
        what: &str,
    ) -> Result<Caller, Response> {
        let client = addr.ip().to_string();
        let deny = |user: &str, dept: &str, session: Option<&str>, reason: &str| {
            let _ = self.record(
                EventKind::Denial,
                (user, dept),
                Outcome::Deny,
                session,
                &client,
                serde_json::json!({"console": what, "reason": reason}),
            );
            html(StatusCode::FORBIDDEN, page("拒绝 Refused", "", None, &note("error", reason), None))
        };
        let Some(c) = self.caller(headers, addr).await else {
            return Err(deny("", "", None, "no valid session: log in again (unknown or expired session cookie)"));
        };
        if !same_origin(headers) {
            return Err(deny(&c.who.name, &c.who.department, Some(&c.session.audit_id), "request from another origin"));
        }
        if token.is_empty() || !same_token(token, &c.session.csrf) {
            return Err(deny(
                &c.who.name,
                &c.who.department,
                Some(&c.session.audit_id),
                "CSRF token missing or wrong: reload the page and try again",
            ));
        }
        Ok(c)
    }
}

// ------------------------------------------------------------------ login

pub(super) async fn home(State(c): St, ConnectInfo(a): Addr, headers: HeaderMap) -> Response {
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let to = if c.operated_sources(&caller.who).is_some() {
        "/sources"
    } else if caller.policy.decide_sync(&caller.who, "audit", &crate::audit::table::column_meta()).allowed {
        "/audit"
    } else {
        "/libraries"
    };
    secured(Redirect::to(to).into_response())
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let msg = message.map(|m| note("error", m)).unwrap_or_default();
    let body = format!(
        r#"{msg}<form method="post" action="/login" class="login">
<label>用户名 User <input name="user" id="user" autocomplete="username" required></label>
<label>密码 Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login">登录 Log in</button></form>
<p class="hint">账号与 Postgres 服务相同 (policies/users.toml)。Same accounts as the Postgres server.</p>"#
    );
    html(status, page("登录 Log in", "", None, &body, None))
}

pub(super) async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let client = a.ip().to_string();
    if !same_origin(&headers) {
        return login_page(StatusCode::FORBIDDEN, Some("request from another origin"));
    }
    let policy = match c.policy().await {
        Ok(p) => p,
        Err(e) => return login_page(StatusCode::SERVICE_UNAVAILABLE, Some(&format!("policy unavailable: {e}"))),
    };
    let user = f.user.trim();
    match policy.authenticate(user, &f.password) {
        Ok(who) => {
            let (id, s) = c.sessions.start(&who.name);
            let detail =
                serde_json::json!({"method": "password", "via": "console", "policy_version": policy.version()});
            if let Err(e) = c.record(
                EventKind::Login,
                (&who.name, &who.department),
                Outcome::Success,
                Some(&s.audit_id),
                &client,
                detail,
            ) {
                c.sessions.end(&id);
                return login_page(StatusCode::SERVICE_UNAVAILABLE, Some(&format!("audit trail unavailable: {e}")));
            }
            c.count_sessions();
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = session::set_cookie(&id, c.secure_cookies).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            secured(r)
        }
        Err(_) => {
            let reason = if policy.principal(user).is_some() { "wrong password" } else { "unknown user" };
            let _ = c.record(
                EventKind::Login,
                (user, ""),
                Outcome::Failure,
                None,
                &client,
                serde_json::json!({"method": "password", "via": "console", "reason": reason}),
            );
            let _ = c.record(
                EventKind::Denial,
                (user, ""),
                Outcome::Deny,
                None,
                &client,
                serde_json::json!({"console": "login", "reason": reason}),
            );
            // Same message for both: do not tell which user names exist.
            login_page(StatusCode::UNAUTHORIZED, Some("登录失败 Login failed: user or password wrong"))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

pub(super) async fn logout(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let caller = match c.post_caller(&headers, a, &f.csrf, "logout").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| session::cookie_value(h, session::COOKIE))
    {
        c.sessions.end(id);
    }
    c.count_sessions();
    let _ = c.record_action(&caller, EventKind::Login, Outcome::Success, serde_json::json!({"action": "logout"}));
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = session::clear_cookie(c.secure_cookies).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(r)
}

// ------------------------------------------------------------------ sources

pub(super) async fn sources(State(c): St, ConnectInfo(a): Addr, headers: HeaderMap) -> Response {
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let Some(mine) = c.operated_sources(&caller.who) else {
        return refused(
            &caller,
            "数据源 Sources",
            "/sources",
            "需要数据源运维角色 (source_operator) — this page is for department IT teams",
        );
    };
    let now = chrono::Utc::now();
    // The audit trail's connector passes, read once for states and retries.
    let events = match crate::status::connector_run_events(&c.data_dir) {
        Ok(r) => r,
        Err(e) => return frame(&caller, "数据源 Sources", "/sources", &note("error", &e.to_string())),
    };
    let runs = crate::status::runs_of(&events);
    // Reading connector results from the audit trail is an audit read.
    if let Err(e) = c.record_action(
        &caller,
        EventKind::AuditRead,
        Outcome::Success,
        serde_json::json!({"console": "sources", "kind": "connector_run", "sources": mine.iter().map(|s| &s.id).collect::<Vec<_>>()}),
    ) {
        return frame(&caller, "数据源 Sources", "/sources", &note("error", &e.to_string()));
    }
    let rows = match c.system_engine().await {
        Ok(engine) => crate::status::collect(&engine, &mine, &runs, now).await,
        Err(e) => Err(e),
    };
    let mut body = String::new();
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            body.push_str(&note("info", &format!("{e}")));
            // Without libraries the runs still tell whether feeds work.
            mine.iter()
                .map(|s| {
                    let r = runs.get(&s.id).cloned().unwrap_or_default();
                    crate::status::SourceStatus {
                        source: s.id.clone(),
                        department: s.department.clone(),
                        state: crate::status::state_of(r.last_success, r.last_error.as_ref().map(|(t, _)| *t), 0),
                        last_success: r.last_success,
                        last_error: r.last_error,
                        records: 0,
                        records_today: 0,
                        quarantined_today: 0,
                        quarantine: Vec::new(),
                        last_committed: None,
                        lag_p50_s: None,
                        lag_p99_s: None,
                    }
                })
                .collect()
        }
    };
    if rows.is_empty() {
        body.push_str(&note("info", "没有可管理的数据源 no sources of your department in this hub"));
    }
    // Today's retries (successful passes) and each source's checkpoint on the bus.
    let today = (now + chrono::Duration::hours(8)).date_naive();
    let mut retries: BTreeMap<String, u64> = BTreeMap::new();
    for p in crate::status::passes_of(&events, &mine) {
        if (p.at + chrono::Duration::hours(8)).date_naive() == today {
            *retries.entry(p.source).or_default() += p.retries;
        }
    }
    let mut checkpoints: BTreeMap<String, String> = BTreeMap::new();
    if let Some(hub) = &c.hub {
        for s in &mine {
            if let Ok(Some(v)) = hub.bus().load_checkpoint(&s.id).await {
                let mut t = v.to_string();
                if t.chars().count() > 120 {
                    t = t.chars().take(117).collect::<String>() + "…";
                }
                checkpoints.insert(s.id.clone(), t);
            }
        }
    }
    let t = |x: &Option<chrono::DateTime<chrono::Utc>>| {
        x.map(|t| (t + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "—".into())
    };
    let secs = |x: Option<f64>| x.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "—".into());
    body.push_str(
        r#"<table id="sources"><thead><tr><th>数据源 Source</th><th>部门 Dept</th><th>状态 State</th><th>最近成功 Last success</th><th>错误 Last error</th><th>记录 Records</th><th>今日 Today</th><th>今日隔离 Quarantined today</th><th>待处理隔离 Open quarantine</th><th>延迟 Lag p50 / p99</th><th>最近提交 Last commit</th><th>今日重试 Retries today</th><th>检查点 Checkpoint</th></tr></thead><tbody>"#,
    );
    for r in &rows {
        let state = match r.state {
            crate::status::State::Ok => "ok",
            crate::status::State::Failing => "failing",
            crate::status::State::Unknown => "unknown",
        };
        let label = match r.state {
            crate::status::State::Ok => "正常 OK",
            crate::status::State::Failing => "故障 FAILING",
            crate::status::State::Unknown => "未知 unknown",
        };
        let err = r.last_error.as_ref().map(|(at, m)| format!("{} {}", t(&Some(*at)), m)).unwrap_or_default();
        let open: i64 = r.quarantine.iter().map(|(_, n)| n).sum();
        let kinds: String = r.quarantine.iter().map(|(k, n)| format!("<li>{n} × {}</li>", esc(k))).collect();
        body.push_str(&format!(
            r#"<tr id="src-{id}" class="state-{state}"><td><a href="/quarantine?source={idq}">{id}</a></td><td>{dept}</td><td class="state">{label}</td><td>{ok}</td><td class="error">{err}</td><td>{rec}</td><td>{today}</td><td>{qt}</td><td><span class="open">{open}</span><ul>{kinds}</ul></td><td>{p50} / {p99}</td><td>{lc}</td><td>{rt}</td><td><code>{cp}</code></td></tr>"#,
            id = esc(&r.source),
            idq = url_enc(&r.source),
            dept = esc(&r.department),
            ok = t(&r.last_success),
            err = esc(&err),
            rec = r.records,
            today = r.records_today,
            qt = r.quarantined_today,
            p50 = secs(r.lag_p50_s),
            p99 = secs(r.lag_p99_s),
            lc = t(&r.last_committed),
            rt = retries.get(&r.source).copied().unwrap_or(0),
            cp = esc(checkpoints.get(&r.source).map(String::as_str).unwrap_or("—")),
        ));
    }
    body.push_str("</tbody></table><p class=\"hint\">每 5 秒刷新 refreshes every 5 s. 每日记录 records per day: <a href=\"/reconcile\">对账 Reconciliation</a>. 终端: <code>lianqin status --config HUB.toml</code></p>");
    html(StatusCode::OK, page("数据源 Sources", "/sources", Some(&viewer(&caller)), &body, Some(5)))
}

// ------------------------------------------------------------------ quarantine

#[derive(Deserialize, Default)]
pub(super) struct QuarantineQuery {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    msg: Option<String>,
}

pub(super) async fn quarantine(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Query(q): Query<QuarantineQuery>,
) -> Response {
    let title = "隔离区 Quarantine";
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let Some(mine) = c.operated_sources(&caller.who) else {
        return refused(
            &caller,
            title,
            "/quarantine",
            "需要数据源运维角色 (source_operator) — this page is for department IT teams",
        );
    };
    let mut body = String::new();
    if let Some(m) = &q.msg {
        body.push_str(&note("ok", m));
    }
    let links: String = mine
        .iter()
        .map(|s| format!(r#"<a href="/quarantine?source={}">{}</a> "#, url_enc(&s.id), esc(&s.id)))
        .collect();
    body.push_str(&format!("<p class=\"sources\">{links}</p>"));
    let Some(source) = q.source.clone().or_else(|| mine.first().map(|s| s.id.clone())) else {
        return frame(&caller, title, "/quarantine", &body);
    };
    if !mine.iter().any(|s| s.id == source) {
        return refused(
            &caller,
            title,
            "/quarantine",
            &format!("source `{source}` is not one of your department's sources"),
        );
    }
    let reason = q.reason.clone().filter(|r| !r.trim().is_empty());
    let show_all = q.all.is_some();
    // Which rows are still open (their newest decision is quarantine).
    let filter = crate::replay::Filter { reason: reason.clone(), since_micros: None };
    let open: BTreeSet<String> = match c.system_engine().await {
        Ok(e) => {
            let sql = format!(
                "SELECT quarantine_id FROM ({}) s",
                crate::replay::select_sql(e.tables(), &source, &filter, None, "")
            );
            match e.sql(&sql).await {
                Ok(b) => ids(&b),
                Err(_) => BTreeSet::new(), // no raw table yet
            }
        }
        Err(e) => {
            body.push_str(&note("info", &e.to_string()));
            return frame(&caller, title, "/quarantine", &body);
        }
    };
    let engine = match c.engine(&caller).await {
        Ok(e) => e,
        Err(e) => return frame(&caller, title, "/quarantine", &format!("{body}{}", note("error", &e.to_string()))),
    };
    let mut cond = format!("source_id = '{}'", quote(&source));
    if let Some(r) = &reason {
        cond.push_str(&format!(" AND strpos(reason, '{}') > 0", quote(r)));
    }
    let sql = format!(
        "SELECT quarantine_id, source_key, reason, field, raw, locator, CAST(ingested_at AS VARCHAR) AS ingested_at \
           FROM quarantine WHERE {cond} ORDER BY ingested_at DESC LIMIT 1000"
    );
    let batches = match engine.sql(&sql).await {
        Ok(b) => b,
        Err(e) => return frame(&caller, title, "/quarantine", &format!("{body}{}", note("error", &e.to_string()))),
    };
    let replay_form = if c.hub.is_some() {
        format!(
            r#"<form method="post" action="/quarantine/replay" class="inline">{csrf}<input type="hidden" name="source" value="{s}"><input type="hidden" name="reason" value="{r}"><button type="submit" id="replay">重放 Replay {n} 条 open record(s)</button></form>"#,
            csrf = csrf_field(&caller),
            s = esc(&source),
            r = esc(reason.as_deref().unwrap_or("")),
            n = open.len(),
        )
    } else {
        note(
            "info",
            "重放在运行 hub 的进程中进行 replay runs where the hub runs (`lianqin run` with [console], or `lianqin replay`)",
        )
    };
    body.push_str(&format!(
        r#"<form method="get" action="/quarantine" class="filters"><input type="hidden" name="source" value="{s}"><label>原因 Reason <input name="reason" id="reason" value="{r}"></label><label><input type="checkbox" name="all" value="1"{chk}> 含已解决 include resolved</label><button type="submit">筛选 Filter</button></form>{replay_form}"#,
        s = esc(&source),
        r = esc(reason.as_deref().unwrap_or("")),
        chk = if show_all { " checked" } else { "" },
    ));
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut rows = String::new();
    let mut shown = 0;
    for b in &batches {
        for r in 0..b.num_rows() {
            let id = cell(b, "quarantine_id", r).unwrap_or_default();
            let is_open = open.contains(&id);
            let reason = cell(b, "reason", r).unwrap_or_default();
            if is_open {
                *by_reason.entry(crate::status::reason_kind(&reason)).or_default() += 1;
            }
            if !is_open && !show_all {
                continue;
            }
            shown += 1;
            rows.push_str(&format!(
                r#"<tr class="{cls}"><td>{state}</td><td>{key}</td><td class="reason">{reason}</td><td>{field}</td><td><pre class="raw">{raw}</pre></td><td>{loc}</td><td>{at}</td></tr>"#,
                cls = if is_open { "open" } else { "resolved" },
                state = if is_open { "待处理 open" } else { "已解决 resolved" },
                key = esc(&cell(b, "source_key", r).unwrap_or_default()),
                reason = esc(&reason),
                field = esc(&cell(b, "field", r).unwrap_or_default()),
                raw = esc(&cell(b, "raw", r).unwrap_or_default()),
                loc = esc(&cell(b, "locator", r).unwrap_or_default()),
                at = esc(&cell(b, "ingested_at", r).unwrap_or_default()),
            ));
        }
    }
    let kinds: String = by_reason.iter().map(|(k, n)| format!("<li>{n} × {}</li>", esc(k))).collect();
    body.push_str(&format!(
        r#"<h2>{s}</h2><p>待处理 open: <span id="open-count">{n}</span></p><ul id="reasons">{kinds}</ul><table id="quarantine"><thead><tr><th>状态 State</th><th>记录 Key</th><th>原因 Reason</th><th>字段 Field</th><th>原始记录 Raw record</th><th>位置 Locator</th><th>时间 At</th></tr></thead><tbody>{rows}</tbody></table><p class="count">{shown} 行 rows</p>"#,
        s = esc(&source),
        n = open.len(),
    ));
    frame(&caller, title, "/quarantine", &body)
}

fn ids(batches: &[RecordBatch]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in batches {
        if let Ok(c) = arrow::compute::cast(b.column(0), &DataType::Utf8) {
            let c = c.as_string::<i32>();
            for i in 0..c.len() {
                if c.is_valid(i) {
                    out.insert(c.value(i).to_string());
                }
            }
        }
    }
    out
}

#[derive(Deserialize)]
pub(super) struct ReplayForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn replay(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<ReplayForm>,
) -> Response {
    let title = "隔离区 Quarantine";
    let caller = match c.post_caller(&headers, a, &f.csrf, "replay").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let allowed = c.operated_sources(&caller.who).is_some_and(|m| m.iter().any(|s| s.id == f.source));
    if !allowed {
        let _ = c.record_action(
            &caller,
            EventKind::Denial,
            Outcome::Deny,
            serde_json::json!({"console": "replay", "source": f.source, "reason": "not an operator of this source"}),
        );
        return refused(
            &caller,
            title,
            "/quarantine",
            &format!("source `{}` is not one of your department's sources", f.source),
        );
    }
    let Some(hub) = &c.hub else {
        return refused(&caller, title, "/quarantine", "replay runs where the hub runs (`lianqin run` with [console])");
    };
    let reason = Some(f.reason.clone()).filter(|r| !r.trim().is_empty());
    let filter = crate::replay::Filter { reason: reason.clone(), since_micros: None };
    let who = format!("console:{}", caller.who.name);
    match crate::replay::publish(hub, &who, &f.source, &filter, |_, _| {}).await {
        Ok(p) => {
            let _ = c.record_action(
                &caller,
                EventKind::Other,
                Outcome::Success,
                serde_json::json!({"action": "replay", "source": f.source, "reason": reason, "run": p.run, "published": p.published}),
            );
            let msg = format!(
                "重放 replay run {}: {} 条已发布 record(s) published; the hub decides them now (land or stay quarantined with the new reason)",
                p.run, p.published
            );
            secured(
                Redirect::to(&format!("/quarantine?source={}&msg={}", url_enc(&f.source), url_enc(&msg)))
                    .into_response(),
            )
        }
        Err(e) => {
            let _ = c.record_action(
                &caller,
                EventKind::Other,
                Outcome::Failure,
                serde_json::json!({"action": "replay", "source": f.source, "error": e.to_string()}),
            );
            frame(&caller, title, "/quarantine", &note("error", &format!("replay failed: {e}")))
        }
    }
}

// ------------------------------------------------------------------ reconciliation

pub(super) async fn reconcile(State(c): St, ConnectInfo(a): Addr, headers: HeaderMap) -> Response {
    let title = "对账 Reconciliation";
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let Some(mine) = c.operated_sources(&caller.who) else {
        return refused(
            &caller,
            title,
            "/reconcile",
            "需要数据源运维角色 (source_operator) — this page is for department IT teams",
        );
    };
    let engine = match c.system_engine().await {
        Ok(e) => e,
        Err(e) => return frame(&caller, title, "/reconcile", &note("info", &e.to_string())),
    };
    let _ = c.record_action(
        &caller,
        EventKind::AuditRead,
        Outcome::Success,
        serde_json::json!({"console": "reconcile", "kind": "connector_run", "sources": mine.iter().map(|s| &s.id).collect::<Vec<_>>()}),
    );
    let mut body = String::from(
        r#"<p class="hint">每个数据源每天 per source and day (China time): 原始 raw = distinct record versions the hub received; 入库 landed = of those, in the libraries; 隔离 quarantined = not landed, quarantined; 未决 pending = neither. A day whose versions are older than 10 minutes and still pending is flagged.</p>"#,
    );
    body.push_str(r#"<table id="reconcile"><thead><tr><th>数据源 Source</th><th>日期 Day</th><th>原始 Raw</th><th>入库 Landed</th><th>隔离 Quarantined</th><th>未决 Pending</th><th>结果 Result</th></tr></thead><tbody>"#);
    let now_us = chrono::Utc::now().timestamp_micros();
    for s in &mine {
        let sql = reconcile_sql(engine.tables(), &s.id);
        let Some(sql) = sql else { continue };
        let batches = match engine.sql(&sql).await {
            Ok(b) => b,
            Err(e) => {
                body.push_str(&format!("<tr><td>{}</td><td colspan=6>{}</td></tr>", esc(&s.id), esc(&e.to_string())));
                continue;
            }
        };
        for b in &batches {
            for r in 0..b.num_rows() {
                let n = |name: &str| cell(b, name, r).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                let (raw, landed, quarantined, pending, newest) =
                    (n("raw"), n("landed"), n("quarantined"), n("pending"), n("newest_us"));
                let settled = now_us - newest > 600_000_000;
                let (cls, result) = if pending > 0 && settled {
                    ("mismatch", "不平 MISMATCH")
                } else if pending > 0 {
                    ("pending", "处理中 in progress")
                } else {
                    ("ok", "平 balanced")
                };
                body.push_str(&format!(
                    r#"<tr class="{cls}"><td>{s}</td><td>{d}</td><td>{raw}</td><td>{landed}</td><td>{quarantined}</td><td>{pending}</td><td>{result}</td></tr>"#,
                    s = esc(&s.id),
                    d = esc(&cell(b, "day", r).unwrap_or_default()),
                ));
            }
        }
    }
    body.push_str("</tbody></table>");
    // What the sources themselves report (HTTP `total`), per source and day.
    body.push_str(
        r#"<h2>来源报告 Source-reported counts</h2><p class="hint">Per connector pass read to the end: the count the source itself reports — an HTTP API's <code>total</code>, a database's <code>count(*)</code> after the checkpoint, a JSON-lines file's line count — vs the distinct records (file: lines) the connector went through. A pass where they differ is flagged. Sources that report no count (CSV/XLSX drops) show —.</p><table id="reported"><thead><tr><th>数据源 Source</th><th>日期 Day</th><th>轮次 Passes</th><th>来源报告 Reported</th><th>已发布 Published (distinct)</th><th>不符轮次 Passes differing</th><th>结果 Result</th></tr></thead><tbody>"#,
    );
    match crate::status::connector_passes(&c.data_dir, &mine) {
        Ok(passes) => {
            // (source, day) → (passes, reported, distinct, differing, any reported)
            let mut days: BTreeMap<(String, String), DayFigures> = BTreeMap::new();
            for p in &passes {
                let day = (p.at + chrono::Duration::hours(8)).format("%Y-%m-%d").to_string();
                let e = days.entry((p.source.clone(), day)).or_default();
                e.0 += 1;
                if let Some(r) = p.reported {
                    e.1 += r;
                    e.2 += p.distinct;
                    e.3 += u64::from(r != p.distinct);
                    e.4 = true;
                }
            }
            for ((src, day), (n, rep, dist, diff, any)) in days.iter().rev() {
                let (cls, result) = match (any, diff) {
                    (false, _) => ("", "— 来源不报告 not reported"),
                    (true, 0) => ("ok", "平 balanced"),
                    (true, _) => ("mismatch", "不平 MISMATCH"),
                };
                let (rep, dist) = if *any { (rep.to_string(), dist.to_string()) } else { ("—".into(), "—".into()) };
                body.push_str(&format!(
                    r#"<tr class="{cls}" data-source="{s}"><td>{s}</td><td>{d}</td><td>{n}</td><td>{rep}</td><td>{dist}</td><td>{diff}</td><td>{result}</td></tr>"#,
                    s = esc(src),
                    d = esc(day),
                ));
            }
        }
        Err(e) => body.push_str(&format!("<tr><td colspan=7>{}</td></tr>", esc(&e.to_string()))),
    }
    body.push_str("</tbody></table>");
    frame(&caller, title, "/reconcile", &body)
}

/// Passes, reported, distinct, passes differing, whether any pass reported.
type DayFigures = (u64, u64, u64, u64, bool);

/// Per China-time day of arrival: distinct versions in the raw table of
/// `source`, landed in a library, quarantined (and not landed), pending.
fn reconcile_sql(tables: &[String], source: &str) -> Option<String> {
    let raw = crate::library::raw_table(source);
    if !tables.contains(&raw) {
        return None;
    }
    let s = quote(source);
    let landed = crate::library::landed_versions_sql(tables, source).unwrap_or_else(|| {
        "SELECT CAST(NULL AS VARCHAR) AS source_key, CAST(NULL AS VARCHAR) AS content_hash".to_string()
    });
    Some(format!(
        "WITH r AS (SELECT source_key, content_hash, max(CAST(fetched_at AS BIGINT)) AS t FROM {raw} GROUP BY source_key, content_hash), \
              l AS (SELECT DISTINCT source_key, content_hash, 1 AS landed FROM ({landed}) x), \
              q AS (SELECT DISTINCT source_key, content_hash, 1 AS quarantined FROM quarantine WHERE source_id = '{s}') \
         SELECT to_char(to_timestamp_micros(r.t + 28800000000), '%Y-%m-%d') AS day, count(*) AS raw, \
                sum(CASE WHEN l.landed = 1 THEN 1 ELSE 0 END) AS landed, \
                sum(CASE WHEN l.landed IS NULL AND q.quarantined = 1 THEN 1 ELSE 0 END) AS quarantined, \
                sum(CASE WHEN l.landed IS NULL AND q.quarantined IS NULL THEN 1 ELSE 0 END) AS pending, \
                max(r.t) AS newest_us \
           FROM r LEFT JOIN l ON l.source_key = r.source_key AND l.content_hash = r.content_hash \
                  LEFT JOIN q ON q.source_key = r.source_key AND q.content_hash = r.content_hash \
          GROUP BY 1 ORDER BY 1 DESC LIMIT 31"
    ))
}

// ------------------------------------------------------------------ libraries, SQL, map

#[derive(Deserialize, Default)]
pub(super) struct LibQuery {
    #[serde(default)]
    lib: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

pub(super) async fn libraries(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Query(q): Query<LibQuery>,
) -> Response {
    let title = "要素/事项库 Libraries";
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let lib = if q.lib.as_deref() == Some("element") { "element" } else { "matter" };
    let text = q.q.clone().unwrap_or_default();
    let (cols, search) = if lib == "element" {
        (
            "element_id, kind, name, id_type, id_value, division, address, phone, department",
            ["element_id", "name", "address"],
        )
    } else {
        (
            "matter_id, title, stage, category, division, station, reported_at, address, department",
            ["matter_id", "title", "address"],
        )
    };
    let cond = if text.trim().is_empty() {
        "TRUE".to_string()
    } else {
        search.iter().map(|c| format!("strpos({c}, '{}') > 0", quote(text.trim()))).collect::<Vec<_>>().join(" OR ")
    };
    let order = if lib == "element" { "element_id" } else { "reported_at DESC" };
    let sql = format!("SELECT {cols} FROM {lib} WHERE {cond} ORDER BY {order} LIMIT 200");
    let mut body = format!(
        r#"<form method="get" action="/libraries" class="filters"><select name="lib" id="lib"><option value="matter"{m}>事项库 matter</option><option value="element"{e}>要素库 element</option></select><input name="q" id="q" value="{t}" placeholder="搜索 search id / title / name / address"><button type="submit" id="search">搜索 Search</button></form><p class="hint">SQL: <code>{sql}</code></p>"#,
        m = if lib == "matter" { " selected" } else { "" },
        e = if lib == "element" { " selected" } else { "" },
        t = esc(&text),
        sql = esc(&sql),
    );
    let res = match c.engine(&caller).await {
        Ok(engine) => engine.sql(&sql).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(b) => body.push_str(&table(&b, 200, "results")),
        Err(e) => body.push_str(&note("error", &e.to_string())),
    }
    frame(&caller, title, "/libraries", &body)
}

fn sql_page(caller: &Caller, sql: &str, result: &str) -> Response {
    let body = format!(
        r#"<form method="post" action="/sql">{csrf}<textarea name="sql" id="sql" rows="6" cols="100">{s}</textarea><br><button type="submit" id="run">运行 Run</button> <button type="submit" formaction="/sql.csv" id="csv">下载 CSV</button></form><p class="hint">按你的权限执行，每条查询记入审计 Runs with your permissions; every query is audited. 表 tables: element, element_link, element_review, element_unit_link, matter, matter_event, matter_group, kpi_matter, quarantine, raw_&lt;source&gt;, codes …</p>{result}"#,
        csrf = csrf_field(caller),
        s = esc(sql),
    );
    frame(caller, "SQL", "/sql", &body)
}

pub(super) async fn sql_form(State(c): St, ConnectInfo(a): Addr, headers: HeaderMap) -> Response {
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    sql_page(&caller, "SELECT category, count(*) AS n FROM matter GROUP BY category ORDER BY category", "")
}

#[derive(Deserialize)]
pub(super) struct SqlForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    sql: String,
}

pub(super) async fn sql_run(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<SqlForm>,
) -> Response {
    let caller = match c.post_caller(&headers, a, &f.csrf, "sql").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let res = match c.engine(&caller).await {
        Ok(engine) => engine.sql(&f.sql).await,
        Err(e) => Err(e),
    };
    let result = match res {
        Ok(b) => table(&b, 1000, "results"),
        Err(e) => note("error", &e.to_string()),
    };
    sql_page(&caller, &f.sql, &result)
}

pub(super) async fn sql_csv(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<SqlForm>,
) -> Response {
    let caller = match c.post_caller(&headers, a, &f.csrf, "sql.csv").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let res = match c.engine(&caller).await {
        Ok(engine) => engine.sql(&f.sql).await,
        Err(e) => Err(e),
    };
    let batches = match res {
        Ok(b) => b,
        Err(e) => return sql_page(&caller, &f.sql, &note("error", &e.to_string())),
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let csv = match format_batches(&batches, OutputFormat::Csv) {
        Ok(t) => t,
        Err(e) => return sql_page(&caller, &f.sql, &note("error", &e.to_string())),
    };
    // The file leaves the hub: an export entry besides the query's.
    if let Err(e) = c.record_action(
        &caller,
        EventKind::Export,
        Outcome::Success,
        serde_json::json!({"console": "sql.csv", "sql": f.sql, "rows": rows, "bytes": csv.len()}),
    ) {
        return sql_page(&caller, &f.sql, &note("error", &e.to_string()));
    }
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"lianqin-query.csv\""),
            ],
            csv,
        )
            .into_response(),
    )
}

/// Seats of the Huzhou divisions (approximate WGS-84), the offline map's
/// reference points.
const SEATS: &[(&str, f64, f64)] = &[
    ("吴兴区", 120.185, 30.857),
    ("南浔区", 120.418, 30.850),
    ("德清县", 119.977, 30.542),
    ("长兴县", 119.911, 31.027),
    ("安吉县", 119.680, 30.638),
];

#[derive(Deserialize, Default)]
pub(super) struct MapQuery {
    #[serde(default)]
    lib: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

pub(super) async fn map(State(c): St, ConnectInfo(a): Addr, headers: HeaderMap, Query(q): Query<MapQuery>) -> Response {
    let title = "地图 Map";
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let lib = if q.lib.as_deref() == Some("element") { "element" } else { "matter" };
    let category =
        q.category.clone().filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') && !c.is_empty());
    let sql = if lib == "element" {
        "SELECT element_id AS id, coalesce(name, element_id) AS label, kind AS class, lon, lat FROM element \
         WHERE lon IS NOT NULL AND lat IS NOT NULL LIMIT 5000"
            .to_string()
    } else {
        let cat = category.as_ref().map(|c| format!(" AND category = '{c}'")).unwrap_or_default();
        format!(
            "SELECT matter_id AS id, coalesce(title, matter_id) AS label, category AS class, lon, lat FROM matter \
             WHERE lon IS NOT NULL AND lat IS NOT NULL{cat} LIMIT 5000"
        )
    };
    let mut body = format!(
        r#"<form method="get" action="/map" class="filters"><select name="lib"><option value="matter"{m}>事项 matters</option><option value="element"{e}>要素 elements</option></select><input name="category" value="{cat}" placeholder="类别 category (a–f)"><button type="submit">显示 Show</button></form>"#,
        m = if lib == "matter" { " selected" } else { "" },
        e = if lib == "element" { " selected" } else { "" },
        cat = esc(category.as_deref().unwrap_or("")),
    );
    let res = match c.engine(&caller).await {
        Ok(engine) => engine.sql(&sql).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(b) => body.push_str(&svg_map(&b)),
        Err(e) => body.push_str(&note("error", &e.to_string())),
    }
    frame(&caller, title, "/map", &body)
}

/// The points of `batches` (`id`, `label`, `class`, `lon`, `lat`) on an
/// offline base: a 0.1° graticule and the division seats.
fn svg_map(batches: &[RecordBatch]) -> String {
    let mut pts = Vec::new();
    for b in batches {
        let f = |n: &str| {
            b.schema().index_of(n).ok().and_then(|i| arrow::compute::cast(b.column(i), &DataType::Float64).ok())
        };
        let (Some(lon), Some(lat)) = (f("lon"), f("lat")) else { continue };
        let (lon, lat) = (lon.as_primitive::<Float64Type>().clone(), lat.as_primitive::<Float64Type>().clone());
        for r in 0..b.num_rows() {
            if lon.is_valid(r) && lat.is_valid(r) {
                pts.push((
                    lon.value(r),
                    lat.value(r),
                    cell(b, "id", r).unwrap_or_default(),
                    cell(b, "label", r).unwrap_or_default(),
                    cell(b, "class", r).unwrap_or_default(),
                ));
            }
        }
    }
    let (mut x0, mut x1, mut y0, mut y1) = (119.2_f64, 120.7_f64, 30.35_f64, 31.2_f64);
    for (x, y, ..) in &pts {
        if (70.0..140.0).contains(x) && (10.0..60.0).contains(y) {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
    }
    let (w, h) = (900.0, 900.0 * (y1 - y0) / (x1 - x0) / 0.86);
    let px = |x: f64| (x - x0) / (x1 - x0) * w;
    let py = |y: f64| (y1 - y) / (y1 - y0) * h;
    let mut svg = format!(
        r#"<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="-40 -10 {} {}" width="100%">"#,
        w + 60.0,
        h + 40.0
    );
    let mut g = (x0 * 10.0).ceil() as i64;
    while (g as f64) / 10.0 <= x1 {
        let x = px(g as f64 / 10.0);
        svg.push_str(&format!(r#"<line class="grid" x1="{x:.1}" y1="0" x2="{x:.1}" y2="{h:.1}"/>"#));
        if g % 2 == 0 {
            svg.push_str(&format!(
                r#"<text class="axis" x="{x:.1}" y="{:.1}">{:.1}°E</text>"#,
                h + 14.0,
                g as f64 / 10.0
            ));
        }
        g += 1;
    }
    let mut g = (y0 * 10.0).ceil() as i64;
    while (g as f64) / 10.0 <= y1 {
        let y = py(g as f64 / 10.0);
        svg.push_str(&format!(r#"<line class="grid" x1="0" y1="{y:.1}" x2="{w:.1}" y2="{y:.1}"/>"#));
        if g % 2 == 0 {
            svg.push_str(&format!(r#"<text class="axis" x="-38" y="{y:.1}">{:.1}°N</text>"#, g as f64 / 10.0));
        }
        g += 1;
    }
    for (name, x, y) in SEATS {
        svg.push_str(&format!(
            r#"<rect class="seat" x="{:.1}" y="{:.1}" width="6" height="6"/><text class="seat" x="{:.1}" y="{:.1}">{name}</text>"#,
            px(*x) - 3.0,
            py(*y) - 3.0,
            px(*x) + 6.0,
            py(*y) - 4.0
        ));
    }
    for (x, y, id, label, class) in &pts {
        svg.push_str(&format!(
            r#"<circle class="pt c-{cls}" cx="{:.1}" cy="{:.1}" r="3"><title>{} {}</title></circle>"#,
            px(*x),
            py(*y),
            esc(id),
            esc(label),
            cls = esc(class),
        ));
    }
    svg.push_str("</svg>");
    format!(
        r#"<p><span id="map-points">{}</span> 个点 points (WGS-84; offline base: 0.1° graticule and division seats, approximate)</p>{svg}"#,
        pts.len()
    )
}

// ------------------------------------------------------------------ audit

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

fn may_audit(c: &Caller) -> bool {
    c.policy.decide_sync(&c.who, crate::audit::table::TABLE, &crate::audit::table::column_meta()).allowed
}

fn refuse_audit(c: &Console, caller: &Caller) -> Response {
    let _ = c.record_action(
        caller,
        EventKind::Denial,
        Outcome::Deny,
        serde_json::json!({"console": "audit", "reason": "not an auditor"}),
    );
    refused(caller, "审计 Audit", "/audit", "只有审计员可读审计日志 only the auditor role reads the audit trail")
}

pub(super) async fn audit(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let title = "审计 Audit";
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    if !may_audit(&caller) {
        return refuse_audit(&c, &caller);
    }
    let mut body = String::new();
    // Verification of every stream.
    let verify = crate::audit::master_key(&c.data_dir, false).and_then(|k| {
        lianqin_audit::verify_root(c.data_dir.join("audit"), &k)
            .map_err(|e| crate::PipelineError::Library(e.to_string()))
    });
    match verify {
        Ok(report) => {
            let overall = if report.is_ok() {
                ("ok", "全部完好 all streams verify")
            } else {
                ("failing", "发现问题 PROBLEMS")
            };
            body.push_str(&format!(
                r#"<h2>校验 Verification: <span id="verify" class="state-{}">{}</span></h2><table id="streams"><thead><tr><th>流 Stream</th><th>条目 Entries</th><th>检查点 Checkpoints</th><th>结果 Result</th></tr></thead><tbody>"#,
                overall.0, overall.1
            ));
            for s in &report.streams {
                let r = &s.report;
                let res = if r.is_ok() {
                    "ok".to_string()
                } else {
                    r.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
                    esc(&s.stream),
                    r.entries,
                    r.checkpoints_matched,
                    r.checkpoints,
                    esc(&res)
                ));
            }
            for p in &report.problems {
                body.push_str(&format!("<tr class=\"failing\"><td colspan=4>{}</td></tr>", esc(&p.to_string())));
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&note("error", &format!("verification failed to run: {e}"))),
    }
    // Search.
    let mut cond = vec!["TRUE".to_string()];
    let f = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty()).map(|s| quote(s.trim()));
    if let Some(u) = f(&q.user) {
        cond.push(format!("\"user\" = '{u}'"));
    }
    if let Some(k) = f(&q.kind) {
        cond.push(format!("kind = '{k}'"));
    }
    if let Some(o) = f(&q.outcome) {
        cond.push(format!("outcome = '{o}'"));
    }
    if let Some(t) = f(&q.text) {
        cond.push(format!("(strpos(coalesce(sql, ''), '{t}') > 0 OR strpos(coalesce(detail, ''), '{t}') > 0)"));
    }
    let sql = format!(
        "SELECT time, stream, seq, kind, \"user\", department, client, session, outcome, tables, rows, sql, detail \
           FROM audit WHERE {} ORDER BY time DESC LIMIT 200",
        cond.join(" AND ")
    );
    let v = |x: &Option<String>| esc(x.as_deref().unwrap_or(""));
    body.push_str(&format!(
        r#"<h2>搜索 Search</h2><form method="get" action="/audit" class="filters"><input name="user" id="a-user" value="{u}" placeholder="用户 user"><input name="kind" id="a-kind" value="{k}" placeholder="类型 kind (login, query, denial, export, …)"><input name="outcome" value="{o}" placeholder="结果 outcome"><input name="text" id="a-text" value="{t}" placeholder="SQL / 详情 text"><button type="submit" id="a-search">搜索 Search</button></form>"#,
        u = v(&q.user),
        k = v(&q.kind),
        o = v(&q.outcome),
        t = v(&q.text),
    ));
    let res = match c.engine(&caller).await {
        Ok(engine) => engine.sql(&sql).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(b) => body.push_str(&table(&b, 200, "entries")),
        Err(e) => body.push_str(&note("error", &e.to_string())),
    }
    body.push_str(&format!(
        r#"<h2>导出与证明 Export with proof</h2><form method="post" action="/audit/prove" class="filters">{csrf}<input name="stream" placeholder="流 stream (e.g. hub)" required><input name="from_seq" placeholder="from seq" required><input name="to_seq" placeholder="to seq" required><button type="submit">导出 Export JSON</button></form><p class="hint">Check it anywhere with <code>lianqin audit check-proof --proof FILE --public-key HEX</code> (the key is in the file; give it to the inspector out of band).</p>"#,
        csrf = csrf_field(&caller)
    ));
    frame(&caller, title, "/audit", &body)
}

#[derive(Deserialize)]
pub(super) struct ProveForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    from_seq: String,
    #[serde(default)]
    to_seq: String,
}

pub(super) async fn audit_prove(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<ProveForm>,
) -> Response {
    let title = "审计 Audit";
    let caller = match c.post_caller(&headers, a, &f.csrf, "audit/prove").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !may_audit(&caller) {
        return refuse_audit(&c, &caller);
    }
    let (Ok(from), Ok(to)) = (f.from_seq.trim().parse::<u64>(), f.to_seq.trim().parse::<u64>()) else {
        return frame(&caller, title, "/audit", &note("error", "from seq / to seq: numbers, e.g. 1 and 100"));
    };
    let stream_ok = !f.stream.is_empty() && f.stream.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if !stream_ok || from == 0 || to < from {
        return frame(
            &caller,
            title,
            "/audit",
            &note("error", "stream: a stream name from the table above; 1 ≤ from ≤ to"),
        );
    }
    let proof = crate::audit::master_key(&c.data_dir, false).and_then(|k| {
        lianqin_audit::export_with_proof(c.data_dir.join("audit").join(&f.stream), &k, from, to)
            .map_err(|e| crate::PipelineError::Library(format!("audit stream {}: {e}", f.stream)))
    });
    let proof = match proof {
        Ok(p) => p,
        Err(e) => return frame(&caller, title, "/audit", &note("error", &e.to_string())),
    };
    let text = match serde_json::to_string_pretty(&proof) {
        Ok(t) => t,
        Err(e) => return frame(&caller, title, "/audit", &note("error", &e.to_string())),
    };
    if let Err(e) = c.record_action(
        &caller,
        EventKind::AuditRead,
        Outcome::Success,
        serde_json::json!({"console": "audit/prove", "stream": f.stream, "from_seq": from, "to_seq": to}),
    ) {
        return frame(&caller, title, "/audit", &note("error", &e.to_string()));
    }
    let name = format!("attachment; filename=\"audit-{}-{from}-{to}.json\"", f.stream);
    let mut r = ([(header::CONTENT_TYPE, "application/json")], text).into_response();
    if let Ok(v) = name.parse() {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    secured(r)
}

// ------------------------------------------------------------------ assets

pub(super) async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/console.css")).into_response()
}

pub(super) async fn js() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/console.js")).into_response()
}
