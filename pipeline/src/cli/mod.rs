//! The library half of the `lianqin` command line, so that what the binary
//! decides can be unit-tested: the typed option values (clap
//! [`ValueEnum`](clap::ValueEnum)s instead of hand-parsed strings), who a
//! session acts as ([`session`]: `sql --as` logins, the auditor check of
//! `audit … --as`), the security officers' `audit` commands ([`audit`]), the
//! interactive SQL shell ([`shell`]) and how errors reach the user
//! ([`report`]).
//!
//! `src/bin/lianqin.rs` keeps only the command tree and calls in here.

pub mod audit;
pub mod session;
pub mod shell;

use crate::query::OutputFormat;

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
