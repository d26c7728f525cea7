//! The console's sharing page (申请-审批-授权, issue 16 item 1): the same
//! steps as `lianqin share request|approve|reject|revoke|list`
//! ([`crate::sharing`]), for people who work in the browser.
//!
//! `GET /sharing` shows the caller's own requests (with *revoke* while
//! granted), the requests addressed to the caller's department (with
//! *approve* / *reject* for its `sharing_approver`s, *revoke* while
//! granted) and a form for a new request. Every POST needs the session's
//! CSRF token; every step is journaled by [`crate::sharing`] and recorded
//! in the console's audit stream with requester, approver, purpose and
//! expiry (the same entries as the CLI's, plus the web session).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{esc, note, url_enc};
use super::pages::{csrf_field, frame, to_login};
use super::{Caller, Console, secured};
use crate::sharing::{self, APPROVER_ROLE, Shared, Status};

type St = State<Arc<Console>>;
type Addr = ConnectInfo<std::net::SocketAddr>;

const TITLE: &str = "数据共享 Sharing";
const PATH: &str = "/sharing";

#[derive(Deserialize)]
pub(super) struct PageQuery {
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn back(msg: Result<String, String>) -> Response {
    let q = match msg {
        Ok(m) => format!("msg={}", url_enc(&m)),
        Err(e) => format!("error={}", url_enc(&e)),
    };
    secured(Redirect::to(&format!("{PATH}?{q}")).into_response())
}

/// One request as a table row, with the buttons `caller` may press.
fn row(c: &Caller, s: &Shared, status: Status) -> String {
    let r = &s.request;
    let approver = c.who.department == r.from_department && c.who.roles.iter().any(|x| x == APPROVER_ROLE);
    let mut actions = String::new();
    let form = |action: &str, label: &str, reason: bool| {
        let reason = if reason {
            r#"<input name="reason" placeholder="理由 reason" required>"#.to_string()
        } else {
            String::new()
        };
        format!(
            r#"<form method="post" action="/sharing/decide" class="inline">{csrf}<input type="hidden" name="id" value="{id}">{reason}<button type="submit" name="action" value="{action}">{label}</button></form>"#,
            csrf = csrf_field(c),
            id = esc(&r.id),
        )
    };
    if approver && status == Status::Pending {
        actions.push_str(&form("approve", "批准 Approve", false));
        actions.push_str(&form("reject", "驳回 Reject", true));
    }
    if status == Status::Granted && (approver || r.by == c.who.name) {
        actions.push_str(&form("revoke", "撤销 Revoke", true));
    }
    let decided = s.decision.as_ref().map(|d| format!("{} {}", d.action, d.by)).unwrap_or_default();
    format!(
        r#"<tr id="req-{id}" class="{st}"><td>{id}</td><td class="status">{st}</td><td>{by} ({dept})</td><td>{from}</td><td>{table}</td><td>{rows}</td><td>{cols}</td><td>{purpose}</td><td>{until}</td><td>{decided}</td><td>{actions}</td></tr>"#,
        id = esc(&r.id),
        st = format!("{status:?}").to_lowercase(),
        by = esc(&r.by),
        dept = esc(&r.department),
        from = esc(&r.from_department),
        table = esc(&r.table),
        rows = esc(r.rows.as_deref().unwrap_or("—")),
        cols = esc(&r.columns.as_ref().map(|c| c.join(", ")).unwrap_or_else(|| "全部 all".into())),
        purpose = esc(&r.purpose),
        until = esc(&r.until),
        decided = esc(&decided),
    )
}

fn requests_table(id: &str, c: &Caller, rows: &[(Shared, Status)]) -> String {
    if rows.is_empty() {
        return note("info", "无 none");
    }
    let mut t = format!(
        r#"<table id="{id}"><thead><tr><th>编号 Id</th><th>状态 Status</th><th>申请人 Requester</th><th>提供部门 From</th><th>表 Table</th><th>行 Rows</th><th>列 Columns</th><th>用途 Purpose</th><th>截止 Until</th><th>决定 Decision</th><th></th></tr></thead><tbody>"#
    );
    for (s, st) in rows {
        t.push_str(&row(c, s, *st));
    }
    t.push_str("</tbody></table>");
    t
}

pub(super) async fn page(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some(caller) = c.caller(&headers, a).await else { return to_login() };
    let mut body = String::new();
    if let Some(m) = &q.msg {
        body.push_str(&note("ok", m));
    }
    if let Some(e) = &q.error {
        body.push_str(&note("error", e));
    }
    let all = match sharing::load(&c.data_dir) {
        Ok(a) => a,
        Err(e) => return frame(&caller, TITLE, PATH, &note("error", &e.to_string())),
    };
    let now = chrono::Utc::now();
    let mine: Vec<(Shared, Status)> =
        all.iter().filter(|s| s.request.by == caller.who.name).map(|s| (s.clone(), s.status(now))).collect();
    let to_us: Vec<(Shared, Status)> = all
        .iter()
        .filter(|s| s.request.from_department == caller.who.department)
        .map(|s| (s.clone(), s.status(now)))
        .collect();
    body.push_str("<h2>我的申请 My requests</h2>");
    body.push_str(&requests_table("mine", &caller, &mine));
    body.push_str(&format!("<h2>向本部门的申请 Requests to {}</h2>", esc(&caller.who.department)));
    body.push_str(&requests_table("to-us", &caller, &to_us));
    let departments: String = lianqin_policies::departments()
        .iter()
        .filter(|d| **d != caller.who.department)
        .map(|d| format!(r#"<option value="{d}">{d}</option>"#, d = esc(d)))
        .collect();
    let tables: String = ["matter*", "element*", "matter_event*", "matter", "element", "matter_event"]
        .iter()
        .map(|t| format!(r#"<option value="{t}">{t}</option>"#))
        .collect();
    body.push_str(&format!(
        r#"<h2>新申请 New request</h2><form method="post" action="/sharing/request" class="share">{csrf}
<label>表 Table <select name="table" id="share-table">{tables}</select></label>
<label>提供部门 From <select name="from" id="share-from">{departments}</select></label>
<label>行条件 Rows <input name="rows" id="share-rows" placeholder="category=a"></label>
<label>列 Columns <input name="columns" id="share-columns" placeholder="matter_id,stage,category (空 = 全部 all)"></label>
<label>用途 Purpose <input name="purpose" id="share-purpose" required></label>
<label>截止 Until <input name="until" id="share-until" type="date" required></label>
<button type="submit" id="share-submit">提交申请 Request</button></form>"#,
        csrf = csrf_field(&caller),
    ));
    frame(&caller, TITLE, PATH, &body)
}

#[derive(Deserialize)]
pub(super) struct RequestForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    rows: String,
    #[serde(default)]
    columns: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    until: String,
}

pub(super) async fn request(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<RequestForm>,
) -> Response {
    let caller = match c.post_caller(&headers, a, &f.csrf, "share_request").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let res = async {
        let until = sharing::parse_until(f.until.trim())?;
        let rows = Some(f.rows.trim().to_string()).filter(|r| !r.is_empty());
        let columns: Vec<String> =
            f.columns.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
        let columns = (!columns.is_empty()).then_some(columns);
        let r = sharing::request(
            &c.data_dir,
            &caller.policy,
            &caller.who.name,
            &caller.who.department,
            f.table.trim(),
            rows,
            columns,
            f.from.trim(),
            &f.purpose,
            until,
        )
        .await?;
        c.record_event(&caller, sharing::audit_event("share_request", &r, None))?;
        Ok::<_, crate::PipelineError>(r)
    }
    .await;
    back(match res {
        Ok(r) => Ok(format!("申请 {} 已提交 filed: waiting for a sharing_approver of {}", r.id, r.from_department)),
        Err(e) => Err(e.to_string()),
    })
}

#[derive(Deserialize)]
pub(super) struct DecideForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn decide(
    State(c): St,
    ConnectInfo(a): Addr,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let caller = match c.post_caller(&headers, a, &f.csrf, "share_decide").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !matches!(f.action.as_str(), "approve" | "reject" | "revoke") {
        return back(Err(format!("unknown action `{}`", f.action)));
    }
    let reason = Some(f.reason.trim().to_string()).filter(|r| !r.is_empty());
    let res = sharing::decide(&c.data_dir, &caller.policy, f.id.trim(), &caller.who.name, &f.action, reason).and_then(
        |(r, d)| {
            c.record_event(&caller, sharing::audit_event(&format!("share_{}", f.action), &r, Some(&d)))?;
            Ok((r, d))
        },
    );
    back(match res {
        Ok((r, d)) => Ok(format!("{} {}: {} by {}", r.id, d.action, r.by, d.by)),
        Err(e) => Err(e.to_string()),
    })
}
