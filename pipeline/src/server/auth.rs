//! Logins: SCRAM-SHA-256 against the `scram` verifiers of users.toml, every
//! attempt audited (`login`), TLS enforced when configured.
//!
//! Unknown users get a stable fake salt and a random salted password, so they
//! cost the same and fail the same way as a wrong password (SQLSTATE 28P01).
//! Passwords never reach this process in clear and nothing about them is
//! logged. A session's principal is resolved per statement
//! ([`principal_of`]), so a user removed from the policy is refused at once.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use lianqin_policies::Principal;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tracing::{info, warn};

use super::{Shared, pg_error};
use crate::PipelineError;

/// PBKDF2 iterations the server asks SCRAM clients for; users.toml
/// verifiers must use the same count.
pub const SCRAM_ITERATIONS: u32 = 4096;

impl Shared {
    /// A stable fake SCRAM salt for an unknown `user` (keyed per process).
    pub(super) fn fake_salt(&self, user: &str) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.fake_key);
        h.update(user.as_bytes());
        h.finalize()[..16].to_vec()
    }
}

/// SCRAM verifiers from users.toml.
pub(super) struct UserSource {
    pub(super) shared: Arc<Shared>,
}

impl Debug for UserSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSource")
    }
}

#[async_trait]
impl AuthSource for UserSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.shared.policy().scram_verifier(user) {
            Some(v) if v.iterations == SCRAM_ITERATIONS => Ok(Password::new(Some(v.salt), v.salted_password)),
            other => {
                if other.is_some() {
                    warn!(user, "SCRAM verifier with an iteration count other than {SCRAM_ITERATIONS}; login refused");
                }
                // Unknown user (or no usable verifier): a stable fake salt and
                // a random salted password, so the proof always fails the same
                // way a wrong password does.
                let random: [u8; 32] = rand::random();
                Ok(Password::new(Some(self.shared.fake_salt(user)), random.to_vec()))
            }
        }
    }
}

/// SCRAM login that records every attempt in the audit trail.
pub(super) struct AuditedStartup {
    pub(super) inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    pub(super) shared: Arc<Shared>,
    pub(super) session: String,
    pub(super) peer: SocketAddr,
    pub(super) recorded: AtomicBool,
    pub(super) authenticated: Arc<OnceLock<String>>,
}

impl AuditedStartup {
    fn record(&self, user: &str, ok: bool, detail: serde_json::Value) -> Result<(), PipelineError> {
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        if self.recorded.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let dept = self.shared.policy().principal(user).map(|p| p.department).unwrap_or_default();
        let mut ev =
            AuditEvent::new(EventKind::Login, user, &dept, if ok { Outcome::Success } else { Outcome::Failure });
        ev.session = Some(self.session.clone());
        ev.client_addr = Some(self.peer.to_string());
        ev.detail = detail;
        self.shared.audit.record_durable(ev).map(|_| ())
    }
}

#[async_trait]
impl StartupHandler for AuditedStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let is_startup = matches!(message, PgWireFrontendMessage::Startup(_));
        if is_startup && self.shared.tls_required && !client.is_secure() {
            let user = match &message {
                PgWireFrontendMessage::Startup(s) => s.parameters.get(METADATA_USER).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            let _ = self.record(&user, false, serde_json::json!({"method": "scram-sha-256", "reason": "TLS required"}));
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_owned(),
                "28000".to_owned(),
                "this server requires TLS (sslmode=require)".to_owned(),
            ))));
        }
        let res = self.inner.on_startup(client, message).await;
        // Every startup error ends the connection (pgwire would otherwise put
        // a non-fatal one into ReadyForQuery).
        let res = res.map_err(|e| {
            let info: ErrorInfo = match e {
                PgWireError::InvalidPassword(u) => return PgWireError::InvalidPassword(u),
                other => other.into(),
            };
            PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_owned(), info.code, info.message)))
        });
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
        let tls = client.is_secure();
        match &res {
            Err(e) => {
                // The error names the user at most; never the password.
                let reason = match e {
                    PgWireError::InvalidPassword(_) => "wrong password or unknown user".to_string(),
                    other => other.to_string(),
                };
                if let Err(ae) = self.record(
                    &user,
                    false,
                    serde_json::json!({"method": "scram-sha-256", "tls": tls, "reason": reason}),
                ) {
                    warn!("login audit failed: {ae}");
                }
                warn!(user = %user, peer = %self.peer, "Postgres login refused");
            }
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                if self.shared.policy().principal(&user).is_none() {
                    let _ = self.record(
                        &user,
                        false,
                        serde_json::json!({"method": "scram-sha-256", "reason": "unknown user"}),
                    );
                    return Err(PgWireError::InvalidPassword(user));
                }
                if let Err(ae) = self.record(&user, true, serde_json::json!({"method": "scram-sha-256", "tls": tls})) {
                    // No audit entry, no session.
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_owned(),
                        "58000".to_owned(),
                        format!("cannot write the audit entry: {ae}"),
                    ))));
                }
                let _ = self.authenticated.set(user.clone());
                info!(user = %user, peer = %self.peer, session = %self.session, "Postgres login");
            }
            Ok(()) => {}
        }
        res
    }
}

/// Who is on this connection: the user whose SCRAM login succeeded.
pub(super) fn principal_of<C: ClientInfo + ?Sized>(
    shared: &Shared,
    authenticated: &OnceLock<String>,
    client: &C,
) -> PgWireResult<Principal> {
    let Some(user) = authenticated.get() else {
        return Err(pg_error("28000", "not logged in"));
    };
    if client.metadata().get(METADATA_USER) != Some(user) {
        return Err(pg_error("28000", "session user changed"));
    }
    shared.policy().principal(user).ok_or_else(|| pg_error("28000", format!("unknown user {user:?}")))
}
