//! The library half of the `lianqin` command line, so that what the binary
//! decides can be unit-tested: the typed option values (clap
//! [`ValueEnum`](clap::ValueEnum)s instead of hand-parsed strings), who a
//! session acts as ([`session`]: `sql --as` logins, the auditor check of
//! `audit … --as`), the security officers' `audit` commands ([`audit`]), the
//! interactive SQL shell ([`shell`]), whether the built-in demo users may
//! be served ([`check_demo_users`]) or run flows ([`check_demo_flows`]),
//! flow deliveries and receipts ([`flow`]), data keys ([`keys`]), token resolution ([`token`]), joint-matter explanations and operator
//! decisions ([`matter`]), resolved persons ([`element`]), the second callback ([`recheck`]), station reports ([`report`]), progress of long work
//! ([`progress`]) and how errors reach the user
//! ([`report`]).
//!
//! `src/bin/lianqin.rs` keeps only the command tree and calls in here.

pub mod audit;
pub mod confirm;
pub mod element;
pub mod flow;
pub mod keys;
pub mod matter;
pub mod progress;
pub mod recheck;
pub mod report;
pub mod session;
pub mod shell;
pub mod token;

use crate::query::OutputFormat;

/// Audits an operator decision durably (`action`, the logged decision, the
/// table it changes), as the local operator `local:<os user>`.
pub(crate) fn audit_decision(
    audit: &crate::audit::Audit,
    table: &str,
    action: &str,
    logged: &impl serde::Serialize,
) -> Result<(), crate::PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let mut ev = AuditEvent::new(EventKind::Other, format!("local:{}", session::os_user()), "", Outcome::Success);
    ev.tables = vec![table.to_string()];
    ev.detail = serde_json::json!({ "action": action, "logged": logged });
    audit.record_durable(ev).map(|_| ())
}

/// Whether a server started by `lianqin serve` / `lianqin run` (`[server]`)
/// may use the policy of `source` on `listen`.
///
/// The built-in policy's users are demo users with published passwords
/// (`<user>-demo`): they are refused unless the command was given
/// `--demo-users` (`demo_users`) *and* listens on loopback only. A policy
/// folder (`$LIANQIN_POLICIES`) is always accepted. The error tells the
/// operator what to do.
pub fn check_demo_users(
    source: &lianqin_policies::PolicySource,
    listen: std::net::SocketAddr,
    demo_users: bool,
) -> Result<(), crate::PipelineError> {
    if source.dir().is_some() {
        return Ok(());
    }
    let why = match (demo_users, listen.ip().is_loopback()) {
        (true, true) => return Ok(()),
        (true, false) => "--demo-users is only for a loopback address (127.0.0.1, ::1)",
        (false, _) => "the built-in demo users (passwords `<user>-demo`) need --demo-users and a loopback address",
    };
    Err(crate::PipelineError::Config(format!(
        "refusing to serve on {listen} with the built-in demo users: {why}; set {} to your sealed policy folder \
         (`lianqin policy seal --dir DIR`)",
        lianqin_policies::POLICIES_ENV
    )))
}

/// Whether `lianqin run` may deliver `[[flows]]` under the policy of
/// `source`: flows read shared data as a named user, and the built-in
/// policy's users are demo users, so flows need `$LIANQIN_POLICIES` (a
/// sealed folder) or an explicit `--demo-users`.
pub fn check_demo_flows(
    source: &lianqin_policies::PolicySource,
    flows: usize,
    demo_users: bool,
) -> Result<(), crate::PipelineError> {
    if flows == 0 || demo_users || source.dir().is_some() {
        return Ok(());
    }
    Err(crate::PipelineError::Config(format!(
        "refusing to run {flows} flow(s) as built-in demo users: set {} to your sealed policy folder \
         (`lianqin policy seal --dir DIR`), or pass --demo-users to try them with the demo policy",
        lianqin_policies::POLICIES_ENV
    )))
}

/// What `lianqin run` runs in this process (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Connectors and the pipeline worker.
    All,
    /// Connectors only.
    Sources,
    /// The pipeline worker only (several share Kafka partitions).
    Worker,
}

impl Role {
    /// (run the sources?, run the worker?)
    pub fn runs(self) -> (bool, bool) {
        match self {
            Role::All => (true, true),
            Role::Sources => (true, false),
            Role::Worker => (false, true),
        }
    }
}

/// File format of `lianqin export` and `lianqin audit export` (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    #[value(alias = "json")]
    Jsonl,
}

impl ExportFormat {
    /// The query output format of a data export.
    pub fn output(self) -> OutputFormat {
        match self {
            ExportFormat::Csv => OutputFormat::Csv,
            ExportFormat::Jsonl => OutputFormat::Json,
        }
    }

    /// The audit crate's format of an audit export.
    pub fn audit(self) -> lianqin_audit::ExportFormat {
        match self {
            ExportFormat::Csv => lianqin_audit::ExportFormat::Csv,
            ExportFormat::Jsonl => lianqin_audit::ExportFormat::JsonLines,
        }
    }
}

/// The query of `lianqin export`: `--table T [--where COND]` or `--sql Q`.
pub fn export_query(table: Option<&str>, where_: Option<&str>, sql: Option<&str>) -> anyhow::Result<String> {
    match (table, sql) {
        (Some(t), None) => {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                anyhow::bail!("--table {t}: not a table name");
            }
            Ok(match where_ {
                Some(w) => format!("SELECT * FROM {t} WHERE {w}"),
                None => format!("SELECT * FROM {t}"),
            })
        }
        (None, Some(q)) => Ok(q.to_string()),
        _ => anyhow::bail!("give --table (optionally with --where) or --sql"),
    }
}

/// The text printed for an error that ends a command: `error: ` and the
/// message with its causes (`outer: cause: root cause`) — never a stack
/// backtrace, also when `RUST_BACKTRACE` is set (which makes anyhow's
/// `Debug` form print one). A user's mistake — bad SQL, a bad config, an
/// unknown user — is not a crash.
pub fn report(err: &anyhow::Error) -> String {
    format!("error: {err:#}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn option_values_parse_as_enums() {
        assert_eq!(Role::from_str("worker", false).unwrap().runs(), (false, true));
        assert_eq!(Role::from_str("all", false).unwrap().runs(), (true, true));
        assert!(Role::from_str("everything", false).is_err());
        assert_eq!(ExportFormat::from_str("json", false).unwrap(), ExportFormat::Jsonl);
        assert_eq!(ExportFormat::from_str("csv", false).unwrap().output(), OutputFormat::Csv);
        assert!(ExportFormat::from_str("xlsx", false).is_err());
    }

    #[test]
    fn demo_users_only_on_loopback_with_the_flag() {
        use lianqin_policies::PolicySource;
        let lo: std::net::SocketAddr = "127.0.0.1:5433".parse().unwrap();
        let lo6: std::net::SocketAddr = "[::1]:5433".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:5433".parse().unwrap();
        assert!(check_demo_users(&PolicySource::Builtin, lo, true).is_ok());
        assert!(check_demo_users(&PolicySource::Builtin, lo6, true).is_ok());
        for (addr, flag) in [(lo, false), (any, false), (any, true)] {
            let e = check_demo_users(&PolicySource::Builtin, addr, flag).unwrap_err().to_string();
            assert!(e.contains("LIANQIN_POLICIES") && e.contains(&addr.to_string()), "{e}");
        }
        let dir = PolicySource::Dir("/etc/lianqin/policies".into());
        assert!(check_demo_users(&dir, any, false).is_ok());
    }

    #[test]
    fn flows_need_a_policy_folder_or_the_demo_flag() {
        use lianqin_policies::PolicySource;
        let e = check_demo_flows(&PolicySource::Builtin, 2, false).unwrap_err().to_string();
        assert!(e.contains("2 flow(s)") && e.contains("LIANQIN_POLICIES") && e.contains("--demo-users"), "{e}");
        assert!(check_demo_flows(&PolicySource::Builtin, 2, true).is_ok());
        assert!(check_demo_flows(&PolicySource::Builtin, 0, false).is_ok());
        assert!(check_demo_flows(&PolicySource::Dir("/etc/lianqin/policies".into()), 2, false).is_ok());
    }

    #[test]
    fn export_queries() {
        assert_eq!(export_query(Some("element"), None, None).unwrap(), "SELECT * FROM element");
        assert_eq!(
            export_query(Some("element"), Some("kind = 'unit_place'"), None).unwrap(),
            "SELECT * FROM element WHERE kind = 'unit_place'"
        );
        assert_eq!(export_query(None, None, Some("SELECT 1")).unwrap(), "SELECT 1");
        assert!(export_query(Some("element; DROP"), None, None).is_err());
        assert!(export_query(None, None, None).is_err());
    }

    #[test]
    fn reports_carry_the_cause_chain_and_no_backtrace() {
        let err = anyhow::Error::new(std::io::Error::other("disk on fire")).context("hub.toml: cannot read");
        let text = report(&err);
        assert_eq!(text, "error: hub.toml: cannot read: disk on fire");
        assert!(!text.contains("backtrace") && !text.contains("Backtrace"));
    }
}
