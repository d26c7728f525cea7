//! Who a command-line session acts as.
//!
//! * [`login`] — `lianqin sql --as USER` / `export --as USER`: the user
//!   must be in users.toml and prove it: the password (argon2id) from
//!   `LIANQIN_PASSWORD`, or typed at a prompt when stdin is a terminal.
//!   Without one, only the OS account of the same name, or one that USER's
//!   users.toml entry lists in `local_operators` (a configured trust), may
//!   act as USER; anyone else is refused. Every attempt is a `login` entry
//!   naming the method and the OS account; a refusal is also a `denial`.
//! * [`auditor_login`] — `lianqin audit search/export/prove --as NAME`: NAME
//!   logs in as above, then must hold the auditor role (read on the `audit`
//!   table, [`check_auditor`]); a refusal is a `denial` entry. The unnamed
//!   local operator holds the key already and is recorded as the OS user
//!   ([`os_user`]).
//!
//! Both take the policy from the caller ([`lianqin_policies::load_configured`]
//! in the binary), so they are tested here against the built-in policy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lianqin_audit::{AuditEvent, EventKind, Outcome};
use lianqin_policies::{PolicyEngine, Principal, TableDecision};

use crate::PipelineError;
use crate::audit::Audit;

/// Environment variable holding the password of `sql --as` (optional).
pub const PASSWORD_ENV: &str = "LIANQIN_PASSWORD";

/// How a command-line user proves who they are.
#[derive(Clone)]
pub enum Credential {
    /// A password, checked against the user's argon2id hash in users.toml.
    Password(String),
    /// None: the local operator (this OS account) names the user (`--as`);
    /// accepted only for the OS account of the same name or a trusted
    /// local operator of the user (users.toml `local_operators`).
    LocalOperator {
        /// The OS account running the command.
        os_user: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.write_str(self.method())
    }
}

impl Credential {
    /// `$LIANQIN_PASSWORD` when set; else, when `user` is not the OS
    /// account itself and stdin is a terminal, the password typed at a
    /// prompt (not echoed); else the local operator.
    pub fn from_env(user: &str) -> Credential {
        if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            return Credential::Password(pw);
        }
        let os_user = os_user();
        if user != os_user
            && std::io::IsTerminal::is_terminal(&std::io::stdin())
            && let Some(pw) = prompt_password(user)
        {
            return Credential::Password(pw);
        }
        Credential::LocalOperator { os_user }
    }

    /// The login method recorded in the audit entry.
    pub fn method(&self) -> &'static str {
        match self {
            Credential::Password(_) => "password",
            Credential::LocalOperator { .. } => "local operator (--as)",
        }
    }
}

/// Reads a password from the terminal with echo off (`stty`); `None` when
/// nothing could be read.
fn prompt_password(user: &str) -> Option<String> {
    use std::io::Write;
    let stty = |arg: &str| std::process::Command::new("stty").arg(arg).stdin(std::process::Stdio::inherit()).status();
    eprint!("password for {user}: ");
    let _ = std::io::stderr().flush();
    let echo_off = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if echo_off {
        let _ = stty("echo");
    }
    eprintln!();
    read.ok().filter(|n| *n > 0).map(|_| line.trim_end_matches(['\r', '\n']).to_string())
}

/// Why a session was refused — the user's mistake or the policy's verdict,
/// never a crash.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `--as` someone else without their password or a configured trust.
    #[error(
        "permission denied: acting as `{user}` needs {user}'s password: set {PASSWORD_ENV} (or type it at the prompt), \
         or list your OS account `{os_user}` in {user}'s local_operators in users.toml"
    )]
    PasswordRequired {
        /// The named user.
        user: String,
        /// The OS account that tried.
        os_user: String,
    },
    /// The password did not match.
    #[error("login failed for `{0}`")]
    WrongPassword(String),
    /// No such user in users.toml.
    #[error("permission denied: unknown user `{0}` (see policies/users.toml)")]
    UnknownUser(String),
    /// The user may not read the audit trail.
    #[error("permission denied: {user} may not read the audit trail ({reason})")]
    NotAuditor {
        /// The named reader.
        user: String,
        /// The policy's reason.
        reason: String,
    },
    /// The audit entry could not be written (then nothing is allowed).
    #[error(transparent)]
    Audit(#[from] PipelineError),
}

/// The session id of this command-line process (`cli-<pid>`).
pub fn cli_session() -> String {
    format!("cli-{}", std::process::id())
}

/// The OS user running this process (`$USER`, `$USERNAME`, else `unknown`).
pub fn os_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into())
}

/// Logs `user` in under `policy` for a command-line session `session`:
/// records a `login` entry (success or failure, with the method and policy
/// version) and, when refused, a `denial` entry.
pub fn login(
    audit: &Audit,
    policy: &PolicyEngine,
    user: &str,
    credential: &Credential,
    session: &str,
) -> Result<Principal, SessionError> {
    let method = credential.method();
    let (os, trust) = match credential {
        Credential::Password(_) => (os_user(), None),
        Credential::LocalOperator { os_user } if os_user == user => (os_user.clone(), Some("same OS account")),
        Credential::LocalOperator { os_user } if policy.trusts_local_operator(user, os_user) => {
            (os_user.clone(), Some("trusted local operator (users.toml local_operators)"))
        }
        Credential::LocalOperator { os_user } => (os_user.clone(), None),
    };
    let record_login = |outcome, dept: &str, reason: Option<&str>| {
        let mut ev = AuditEvent::new(EventKind::Login, user, dept, outcome);
        ev.session = Some(session.to_string());
        ev.client_addr = Some("local".into());
        ev.rule_version = Some(policy.version());
        ev.detail = serde_json::json!({"method": method, "os_user": os, "trust": trust, "reason": reason});
        audit.record_durable(ev)
    };
    let who = match credential {
        Credential::Password(pw) => policy.authenticate(user, pw).ok(),
        Credential::LocalOperator { .. } if trust.is_some() => policy.principal(user),
        Credential::LocalOperator { .. } => None,
    };
    let Some(who) = who else {
        let known = policy.principal(user).is_some();
        let no_password = matches!(credential, Credential::LocalOperator { .. });
        let reason = match (known, no_password) {
            (false, _) => "unknown user",
            (true, true) => "password required",
            (true, false) => "wrong password",
        };
        record_login(Outcome::Failure, "", Some(reason))?;
        let mut ev = AuditEvent::new(EventKind::Denial, user, "", Outcome::Deny);
        ev.detail = serde_json::json!({"reason": reason});
        audit.record_durable(ev)?;
        return Err(match (known, no_password) {
            (false, _) => SessionError::UnknownUser(user.to_string()),
            (true, true) => SessionError::PasswordRequired { user: user.to_string(), os_user: os.clone() },
            (true, false) => SessionError::WrongPassword(user.to_string()),
        });
    };
    record_login(Outcome::Success, &who.department, None)?;
    Ok(who)
}

/// `lianqin sql --as USER`: records a `policy_change` when the policy
/// differs from the last one recorded in the data dir, then [`login`]s
/// with `credential` in this process's session ([`cli_session`]).
pub fn sql_login(
    audit: &Audit,
    policy: &Arc<PolicyEngine>,
    user: &str,
    credential: &Credential,
) -> Result<Principal, SessionError> {
    crate::audit::note_version(audit, "policy", &policy.version(), serde_json::Value::Null)?;
    login(audit, policy, user, credential, &cli_session())
}

/// `lianqin audit search|export|prove --as NAME`: NAME proves who they are
/// as for `sql --as` ([`login`] with `credential`: a password, the same OS
/// account, or a trusted local operator), then must hold the auditor role
/// ([`check_auditor`]). Both steps are recorded in the `cli` stream.
pub fn auditor_login(
    data_dir: &Path,
    policy: &PolicyEngine,
    user: &str,
    credential: &Credential,
) -> Result<(), SessionError> {
    let audit = Audit::open(data_dir, "cli", "cli", Duration::from_secs(3))?;
    let out = login(&audit, policy, user, credential, &cli_session()).and_then(|_| auditor_in(&audit, policy, user));
    audit.sync();
    out
}

/// Does `user` hold the auditor role (read on the `audit` table)? A refusal
/// is recorded as a `denial` entry in the `cli` stream of `data_dir`.
pub fn check_auditor(data_dir: &Path, policy: &PolicyEngine, user: &str) -> Result<(), SessionError> {
    let audit = Audit::open(data_dir, "cli", "cli", Duration::from_secs(3))?;
    let out = auditor_in(&audit, policy, user);
    audit.sync();
    out
}

fn auditor_in(audit: &Audit, policy: &PolicyEngine, user: &str) -> Result<(), SessionError> {
    let decision = match policy.principal(user) {
        Some(p) => policy.decide_sync(&p, crate::audit_table::TABLE, &crate::audit_table::column_meta()),
        None => TableDecision::deny(format!("unknown user `{user}`")),
    };
    if decision.allowed {
        return Ok(());
    }
    let mut ev = AuditEvent::new(EventKind::Denial, user, "", Outcome::Deny);
    ev.tables = vec![crate::audit_table::TABLE.into()];
    ev.rule = Some(decision.reason.clone());
    ev.rule_version = Some(policy.version());
    audit.record_durable(ev)?;
    Err(SessionError::NotAuditor { user: user.to_string(), reason: decision.reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path, audit: &Audit) -> Vec<(EventKind, Outcome, String)> {
        audit.sync();
        let key = crate::audit::master_key(dir, false).unwrap();
        let mut out = Vec::new();
        for s in crate::audit::streams(dir) {
            for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::all()).unwrap() {
                let e = r.unwrap().event;
                out.push((e.kind, e.outcome, e.user));
            }
        }
        out
    }

    #[tokio::test]
    async fn logins_are_checked_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Arc::new(PolicyEngine::builtin().await.unwrap());
        let audit = Audit::open(dir.path(), "cli", "cli", Duration::from_secs(3)).unwrap();

        let op = |u: &str| Credential::LocalOperator { os_user: u.to_string() };
        let who = sql_login(&audit, &policy, "liu.market", &Credential::Password("liu.market-demo".into())).unwrap();
        assert_eq!(who.department, "market");
        // Someone else's name without the password: refused.
        let e = login(&audit, &policy, "liu.market", &op("mallory"), "t").unwrap_err();
        assert!(matches!(e, SessionError::PasswordRequired { .. }), "{e}");
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
        // The OS account of the same name needs none.
        assert!(login(&audit, &policy, "liu.market", &op("liu.market"), "t").is_ok());
        let e = login(&audit, &policy, "nobody", &op("nobody"), "t").unwrap_err();
        assert!(matches!(e, SessionError::UnknownUser(_)), "{e}");
        assert!(e.to_string().contains("unknown user `nobody`"));
        let e = login(&audit, &policy, "liu.market", &Credential::Password("wrong".into()), "t").unwrap_err();
        assert!(matches!(e, SessionError::WrongPassword(_)), "{e}");
        assert!(login(&audit, &policy, "liu.market", &Credential::Password("liu.market-demo".into()), "t").is_ok());
        assert_eq!(format!("{:?}", Credential::Password("secret".into())), "password");

        let got = entries(dir.path(), &audit);
        let want = [
            (EventKind::PolicyChange, Outcome::Success, "system:hub"),
            (EventKind::Login, Outcome::Success, "liu.market"),
            (EventKind::Login, Outcome::Failure, "liu.market"),
            (EventKind::Denial, Outcome::Deny, "liu.market"),
            (EventKind::Login, Outcome::Success, "liu.market"),
            (EventKind::Login, Outcome::Failure, "nobody"),
            (EventKind::Denial, Outcome::Deny, "nobody"),
            (EventKind::Login, Outcome::Failure, "liu.market"),
            (EventKind::Denial, Outcome::Deny, "liu.market"),
            (EventKind::Login, Outcome::Success, "liu.market"),
        ];
        let got: Vec<_> = got.iter().map(|(k, o, u)| (*k, *o, u.as_str())).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_trusted_local_operator_is_configured_in_users_toml() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
        let users = read("users.toml").replacen(
            "name = \"liu.market\"",
            "name = \"liu.market\"\nlocal_operators = [\"ops\"]",
            1,
        );
        assert_ne!(users, read("users.toml"), "users.toml layout changed");
        let policy = PolicyEngine::from_texts(
            &read("model.conf"),
            &read("policy.csv"),
            &users,
            lianqin_policies::MaskFunctions::from_env(),
        )
        .await
        .unwrap();
        let audit = Audit::open(dir.path(), "cli", "cli", Duration::from_secs(3)).unwrap();
        let op = |u: &str| Credential::LocalOperator { os_user: u.to_string() };
        assert!(login(&audit, &policy, "liu.market", &op("ops"), "t").is_ok());
        assert!(login(&audit, &policy, "wang.police", &op("ops"), "t").is_err());
        audit.sync();
        let key = crate::audit::master_key(dir.path(), false).unwrap();
        let mut trusts = Vec::new();
        for s in crate::audit::streams(dir.path()) {
            for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::all()).unwrap() {
                let e = r.unwrap().event;
                if e.kind == EventKind::Login {
                    trusts.push((e.user, e.detail["os_user"].clone(), e.detail["trust"].is_string()));
                }
            }
        }
        assert_eq!(
            trusts,
            vec![("liu.market".into(), "ops".into(), true), ("wang.police".into(), "ops".into(), false)]
        );
    }

    #[tokio::test]
    async fn only_the_auditor_role_reads_the_audit_trail() {
        let dir = tempfile::tempdir().unwrap();
        let policy = PolicyEngine::builtin().await.unwrap();
        check_auditor(dir.path(), &policy, "qian.audit").unwrap();
        for user in ["liu.market", "nobody"] {
            let e = check_auditor(dir.path(), &policy, user).unwrap_err();
            assert!(matches!(e, SessionError::NotAuditor { .. }), "{e}");
            assert!(e.to_string().starts_with(&format!("permission denied: {user} may not read the audit trail")));
        }
        let audit = Audit::open(dir.path(), "cli", "cli", Duration::from_secs(3)).unwrap();
        let got = entries(dir.path(), &audit);
        assert_eq!(got.iter().filter(|(k, o, _)| *k == EventKind::Denial && *o == Outcome::Deny).count(), 2, "{got:?}");
    }

    #[tokio::test]
    async fn naming_an_auditor_needs_the_auditors_password() {
        let dir = tempfile::tempdir().unwrap();
        let policy = PolicyEngine::builtin().await.unwrap();
        let op = Credential::LocalOperator { os_user: "someone.else".into() };
        let e = auditor_login(dir.path(), &policy, "qian.audit", &op).unwrap_err();
        assert!(matches!(e, SessionError::PasswordRequired { .. }), "{e}");
        let wrong = Credential::Password("guess".into());
        assert!(matches!(
            auditor_login(dir.path(), &policy, "qian.audit", &wrong).unwrap_err(),
            SessionError::WrongPassword(_)
        ));
        auditor_login(dir.path(), &policy, "qian.audit", &Credential::Password("qian.audit-demo".into())).unwrap();
        // The right password of a user without the role is still refused.
        let e = auditor_login(dir.path(), &policy, "wang.police", &Credential::Password("wang.police-demo".into()))
            .unwrap_err();
        assert!(matches!(e, SessionError::NotAuditor { .. }), "{e}");
        let audit = Audit::open(dir.path(), "cli", "cli", Duration::from_secs(3)).unwrap();
        let got = entries(dir.path(), &audit);
        let logins = got.iter().filter(|(k, _, _)| *k == EventKind::Login).count();
        assert_eq!(logins, 4, "{got:?}");
    }
}
