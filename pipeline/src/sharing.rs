//! Sharing requests → approval → grants (申请-审批-授权, §7.3.5; issue 16
//! item 1): an analyst asks another department for rows of a shared
//! library, for a purpose and until a time; an approver of that department
//! approves or rejects; an approved request is a rule the policy enforces
//! (a role of its own, [`lianqin_policies::Grant`]) until it ends or is
//! revoked — then the next statement is refused again.
//!
//! Everything is an entry in the append-only journal
//! `<data dir>/sharing/requests.jsonl` (never rewritten, §7.4.3) and in the
//! audit trail with requester, approver, purpose and expiry. The policy
//! loader ([`crate::policy::load`]) adds the grants in force at load time:
//! `lianqin sql --as` and `export` load per command, the Postgres server
//! reloads when the journal changes and when a grant ends.
//!
//! A grant gives rows, and may be limited to columns (`--columns`): on the
//! rows only the grant admits, the grantee sees the listed columns (and
//! `deleted`, which the current views read) as their standing column rules
//! show them (masks included) and NULL in the others;
//! without `--columns`, every column as the standing rules show it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use lianqin_policies::{Grant, PolicyEngine};
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// The role an approver holds in the department whose rows are asked for.
pub const APPROVER_ROLE: &str = "sharing_approver";

/// `<data dir>/sharing/requests.jsonl`.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("sharing").join("requests.jsonl")
}

/// A request for rows of `table` owned by `from_department`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `sr-` and 10 hex digits.
    pub id: String,
    /// When asked (RFC 3339).
    pub at: String,
    /// The requesting user.
    pub by: String,
    /// Their department (the grant's domain).
    pub department: String,
    /// A shared library (`matter`, `element`, `matter_event`; a trailing
    /// `*` takes its history and current tables too).
    pub table: String,
    /// Extra row condition in the policy's rule syntax (`category=a`), on
    /// top of `department=<from_department>`.
    pub rows: Option<String>,
    /// The only columns asked for (None: every column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// The department whose rows are asked for (it approves).
    pub from_department: String,
    /// Why (shown to the approver, kept in the audit trail).
    pub purpose: String,
    /// Until when the grant would hold (RFC 3339).
    pub until: String,
}

/// A decision on a request, or its revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The request.
    pub id: String,
    /// When.
    pub at: String,
    /// Who decided.
    pub by: String,
    /// `approve`, `reject` or `revoke`.
    pub action: String,
    /// Why (required for reject and revoke).
    pub reason: Option<String>,
}

/// A journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// A request.
    Request(Request),
    /// A decision or revocation.
    Decision(Decision),
}

/// Where a request stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the approver.
    Pending,
    /// Approved and in force.
    Granted,
    /// Rejected.
    Rejected,
    /// Approved, then revoked.
    Revoked,
    /// Its time has passed (approved or not).
    Expired,
}

/// A request with its decisions.
#[derive(Debug, Clone, Serialize)]
pub struct Shared {
    /// The request.
    pub request: Request,
    /// Its decision (approve/reject), if any.
    pub decision: Option<Decision>,
    /// Its revocation, if any.
    pub revoked: Option<Decision>,
}

impl Shared {
    /// Its status at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> Status {
        let until = DateTime::parse_from_rfc3339(&self.request.until).map(|t| t.with_timezone(&Utc)).ok();
        match (&self.decision, &self.revoked) {
            (Some(d), _) if d.action == "reject" => Status::Rejected,
            (_, Some(_)) => Status::Revoked,
            _ if until.is_none_or(|u| u <= now) => Status::Expired,
            (Some(_), None) => Status::Granted,
            (None, None) => Status::Pending,
        }
    }

    /// The grant of an approved request, as the policy sees it.
    pub fn grant(&self) -> Grant {
        let r = &self.request;
        let mut rule = format!("department={}", r.from_department);
        if let Some(rows) = &r.rows {
            rule.push_str(&format!(" & {rows}"));
        }
        let role = format!("grant_{}", r.id.replace('-', "_"));
        Grant {
            role: role.clone(),
            user: r.by.clone(),
            department: r.department.clone(),
            rules: vec![format!("{role}, {}, {}, *, read, {rule}, allow", r.department, r.table)],
            // `deleted` is read by the current views themselves (`WHERE NOT
            // deleted`): always with the rows.
            columns: r.columns.clone().map(|mut c| {
                if !c.iter().any(|x| x == "deleted") {
                    c.push("deleted".into());
                }
                c
            }),
        }
    }
}

/// Every request in `data_dir` with its decisions, in request order.
pub fn load(data_dir: &Path) -> Result<Vec<Shared>, PipelineError> {
    let mut out: Vec<Shared> = Vec::new();
    for e in crate::journal::load::<Entry>(&journal_path(data_dir))? {
        match e {
            Entry::Request(r) => out.push(Shared { request: r, decision: None, revoked: None }),
            Entry::Decision(d) => {
                if let Some(s) = out.iter_mut().find(|s| s.request.id == d.id) {
                    if d.action == "revoke" {
                        s.revoked.get_or_insert(d);
                    } else {
                        s.decision.get_or_insert(d);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The grants in force at `now`, and when the first of them ends.
pub fn active_grants(
    data_dir: &Path,
    now: DateTime<Utc>,
) -> Result<(Vec<Grant>, Option<DateTime<Utc>>), PipelineError> {
    let mut grants = Vec::new();
    let mut next_end: Option<DateTime<Utc>> = None;
    for s in load(data_dir)? {
        if s.status(now) == Status::Granted {
            grants.push(s.grant());
            if let Ok(u) = DateTime::parse_from_rfc3339(&s.request.until) {
                let u = u.with_timezone(&Utc);
                next_end = Some(next_end.map_or(u, |n| n.min(u)));
            }
        }
    }
    Ok((grants, next_end))
}

fn refuse(msg: String) -> PipelineError {
    PipelineError::Config(msg)
}

/// Parses `--until`: RFC 3339, or a date (the end of that day, China time).
pub fn parse_until(s: &str) -> Result<DateTime<Utc>, PipelineError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = d.and_hms_opt(23, 59, 59).expect("valid") - chrono::Duration::hours(8);
        return Ok(end.and_utc());
    }
    Err(refuse(format!("--until `{s}`: expected RFC 3339 (2026-12-31T18:00:00+08:00) or a date (2026-12-31)")))
}

/// Files a request by `by` of `department` (checked against `policy`:
/// its rule must load); returns it.
#[allow(clippy::too_many_arguments)]
pub async fn request(
    data_dir: &Path,
    policy: &PolicyEngine,
    by: &str,
    department: &str,
    table: &str,
    rows: Option<String>,
    columns: Option<Vec<String>>,
    from_department: &str,
    purpose: &str,
    until: DateTime<Utc>,
) -> Result<Request, PipelineError> {
    let base = table.trim_end_matches('*');
    if !["element", "matter", "matter_event"].contains(&base) {
        return Err(refuse(format!(
            "--table `{table}`: only the shared libraries element, matter, matter_event (optionally with *)"
        )));
    }
    if let Some(cols) = &columns {
        let catalog = crate::schema::Catalog::builtin()?;
        let lib = catalog.library(base)?;
        let known: Vec<&str> = lib.all_columns(&catalog.provenance).map(|c| c.name.as_str()).collect();
        if cols.is_empty() {
            return Err(refuse("--columns: name at least one column (or leave it out for every column)".into()));
        }
        for c in cols {
            if !known.contains(&c.as_str()) {
                return Err(refuse(format!("--columns: `{c}` is not a column of {base} ({})", known.join(", "))));
            }
        }
    }
    if !lianqin_policies::is_department(from_department) {
        return Err(refuse(format!("--from `{from_department}` is not in code table department")));
    }
    if from_department == department {
        return Err(refuse(format!("`{from_department}` is your own department: its rows are yours to read already")));
    }
    if purpose.trim().is_empty() {
        return Err(refuse("--purpose: say what the rows are for".into()));
    }
    let now = Utc::now();
    if until <= now {
        return Err(refuse(format!("--until {until}: already passed")));
    }
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let id = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{by}|{at}|{table}|{from_department}").as_bytes());
        format!("sr-{}", &hex::encode(h)[..10])
    };
    let r = Request {
        id,
        at,
        by: by.to_string(),
        department: department.to_string(),
        table: table.to_string(),
        rows,
        columns,
        from_department: from_department.to_string(),
        purpose: purpose.trim().to_string(),
        until: until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    // The rule must be one the policy accepts (else it would break loading).
    let s = Shared { request: r.clone(), decision: None, revoked: None };
    policy.clone().with_grants(&[s.grant()]).await.map_err(|e| refuse(format!("--rows: {e}")))?;
    crate::journal::append(&journal_path(data_dir), &Entry::Request(r.clone()))?;
    Ok(r)
}

/// `approve`, `reject` or `revoke` request `id` as `by` (a
/// [`APPROVER_ROLE`] of the request's department; the requester may also
/// revoke). Returns the request and the decision.
pub fn decide(
    data_dir: &Path,
    policy: &PolicyEngine,
    id: &str,
    by: &str,
    action: &str,
    reason: Option<String>,
) -> Result<(Request, Decision), PipelineError> {
    let all = load(data_dir)?;
    let s = all.iter().find(|s| s.request.id == id).ok_or_else(|| refuse(format!("no sharing request {id}")))?;
    let who = policy.principal(by).ok_or_else(|| refuse(format!("unknown user `{by}`")))?;
    let approver = who.department == s.request.from_department && who.roles.iter().any(|r| r == APPROVER_ROLE);
    let now = Utc::now();
    let status = s.status(now);
    match action {
        "approve" | "reject" => {
            if !approver {
                return Err(refuse(format!(
                    "{by} may not decide {id}: only a {APPROVER_ROLE} of `{}` may",
                    s.request.from_department
                )));
            }
            if status != Status::Pending {
                return Err(refuse(format!("{id} is {status:?}, not pending")));
            }
            if action == "reject" && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                return Err(refuse("reject: give a --reason".into()));
            }
        }
        "revoke" => {
            if !approver && by != s.request.by {
                return Err(refuse(format!("{by} may not revoke {id}")));
            }
            if status != Status::Granted {
                return Err(refuse(format!("{id} is {status:?}, not granted")));
            }
        }
        other => return Err(refuse(format!("unknown action `{other}`"))),
    }
    let d = Decision {
        id: id.to_string(),
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        by: by.to_string(),
        action: action.to_string(),
        reason,
    };
    crate::journal::append(&journal_path(data_dir), &Entry::Decision(d.clone()))?;
    Ok((s.request.clone(), d))
}

/// The audit entry of a step (`share_request`, `share_approve`, …) with
/// requester, decider, purpose and expiry.
pub fn audit_event(action: &str, r: &Request, d: Option<&Decision>) -> lianqin_audit::AuditEvent {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let who = d.map(|d| d.by.clone()).unwrap_or_else(|| r.by.clone());
    let dept = if d.is_some() && action != "share_revoke" { r.from_department.clone() } else { r.department.clone() };
    let kind = if action == "share_request" { EventKind::Other } else { EventKind::PolicyChange };
    let mut ev = AuditEvent::new(kind, who, dept, Outcome::Success);
    ev.tables = vec![r.table.clone()];
    ev.detail = serde_json::json!({
        "action": action, "request": r.id, "requester": r.by, "requester_department": r.department,
        "from_department": r.from_department, "table": r.table, "rows": r.rows, "columns": r.columns, "purpose": r.purpose,
        "until": r.until, "decided_by": d.map(|d| d.by.clone()), "reason": d.and_then(|d| d.reason.clone()),
    });
    ev
}
