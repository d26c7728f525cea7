//! Audit events, stored records and search filters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The type of an audited action (GB/T 22239 8.1.4.3 b: "event type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A user logged in or failed to.
    Login,
    /// A SQL query was executed.
    Query,
    /// An access was denied by policy.
    Denial,
    /// A cross-department data flow happened.
    Flow,
    /// Data was exported out of the hub.
    Export,
    /// An access-control policy was changed.
    PolicyChange,
    /// The configuration was changed.
    ConfigChange,
    /// A connector run (ingest) happened.
    ConnectorRun,
    /// Data was put into quarantine.
    Quarantine,
    /// The audit log itself was read (audit administrators are audited too).
    AuditRead,
    /// Anything else; describe it in `detail`.
    Other,
}

impl EventKind {
    /// The snake_case name used in JSON and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Login => "login",
            EventKind::Query => "query",
            EventKind::Denial => "denial",
            EventKind::Flow => "flow",
            EventKind::Export => "export",
            EventKind::PolicyChange => "policy_change",
            EventKind::ConfigChange => "config_change",
            EventKind::ConnectorRun => "connector_run",
            EventKind::Quarantine => "quarantine",
            EventKind::AuditRead => "audit_read",
            EventKind::Other => "other",
        }
    }
}

/// The outcome of / decision on an audited action (GB/T 22239: "success or failure").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Access allowed by policy.
    Allow,
    /// Access denied by policy.
    Deny,
    /// The action succeeded.
    Success,
    /// The action failed.
    Failure,
}

impl Outcome {
    /// The snake_case name used in JSON and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

fn is_null(v: &serde_json::Value) -> bool {
    v.is_null()
}

/// One audited event. Optional fields that are empty are omitted from the
/// stored encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Event type.
    pub kind: EventKind,
    /// When it happened (UTC).
    pub time: DateTime<Utc>,
    /// Node (hub instance) that recorded it; filled from [`crate::AuditConfig::node`] when empty.
    #[serde(default)]
    pub node: String,
    /// Acting user (account name).
    #[serde(default)]
    pub user: String,
    /// The user's department.
    #[serde(default)]
    pub department: String,
    /// Session identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Client address (IP:port or host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// Outcome / decision.
    pub outcome: Outcome,
    /// Policy rule that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Version of the policy set that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_version: Option<String>,
    /// SQL text (as submitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Tables touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Columns touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Rows returned / affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Column masks applied (e.g. `id_card:show_last_4`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masks: Vec<String>,
    /// Row filters applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Duration of the action in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "is_null")]
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// A new event stamped with the current time; other fields empty.
    pub fn new(kind: EventKind, user: impl Into<String>, department: impl Into<String>, outcome: Outcome) -> Self {
        AuditEvent {
            kind,
            time: Utc::now(),
            node: String::new(),
            user: user.into(),
            department: department.into(),
            session: None,
            client_addr: None,
            outcome,
            rule: None,
            rule_version: None,
            sql: None,
            tables: Vec::new(),
            columns: Vec::new(),
            rows: None,
            masks: Vec::new(),
            filters: Vec::new(),
            duration_ms: None,
            detail: serde_json::Value::Null,
        }
    }
}

/// A stored, decrypted entry: the event and its sequence number (1-based, dense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number in the log (1, 2, 3, …).
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Selects entries in [`crate::AuditLog::search`], [`crate::read`] and [`crate::AuditLog::export`].
/// All set criteria must match (AND); unset criteria match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only entries strictly before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only entries with sequence number ≥ this.
    pub from_seq: Option<u64>,
    /// Only entries with sequence number ≤ this.
    pub to_seq: Option<u64>,
    /// Exact user.
    pub user: Option<String>,
    /// Exact department.
    pub department: Option<String>,
    /// Entry touches this table (exact, case-insensitive).
    pub table: Option<String>,
    /// Event kind.
    pub kind: Option<EventKind>,
    /// Outcome / decision.
    pub outcome: Option<Outcome>,
    /// Case-sensitive substring of the SQL text, rule, detail JSON, user or department.
    pub text: Option<String>,
}

impl AuditFilter {
    /// A filter matching everything.
    pub fn all() -> Self {
        AuditFilter::default()
    }

    /// Can the entry be excluded from its clear-text header (seq, time) alone?
    pub(crate) fn excludes_header(&self, seq: u64, time_us: i64) -> bool {
        if self.from_seq.is_some_and(|s| seq < s) || self.to_seq.is_some_and(|s| seq > s) {
            return true;
        }
        if let Some(f) = self.from
            && time_us < f.timestamp_micros()
        {
            return true;
        }
        if let Some(t) = self.to
            && time_us >= t.timestamp_micros()
        {
            return true;
        }
        false
    }

    /// Does the decrypted record match?
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        if self.excludes_header(r.seq, e.time.timestamp_micros()) {
            return false;
        }
        if self.user.as_ref().is_some_and(|u| *u != e.user) {
            return false;
        }
        if self.department.as_ref().is_some_and(|d| *d != e.department) {
            return false;
        }
        if self.kind.is_some_and(|k| k != e.kind) {
            return false;
        }
        if self.outcome.is_some_and(|o| o != e.outcome) {
            return false;
        }
        if let Some(t) = &self.table
            && !e.tables.iter().any(|x| x.eq_ignore_ascii_case(t))
        {
            return false;
        }
        if let Some(needle) = &self.text {
            let hit = e.sql.as_deref().is_some_and(|s| s.contains(needle.as_str()))
                || e.rule.as_deref().is_some_and(|s| s.contains(needle.as_str()))
                || e.user.contains(needle.as_str())
                || e.department.contains(needle.as_str())
                || (!e.detail.is_null() && e.detail.to_string().contains(needle.as_str()));
            if !hit {
                return false;
            }
        }
        true
    }
}
