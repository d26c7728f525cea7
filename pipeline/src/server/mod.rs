//! The Postgres wire protocol server for analysts (`lianqin serve`).
//!
//! psql, DBeaver, psycopg and any other Postgres client connect with a
//! users.toml login and query the libraries with exactly the permissions of
//! `lianqin sql --as USER`:
//!
//! * **Login**: SCRAM-SHA-256 (pgwire's `SASLAuthStartupHandler` +
//!   `ScramAuth`) against the `scram` verifier of the user in users.toml.
//!   Unknown users get a fake salt and always fail the proof, so they cost
//!   the same and look the same as a wrong password (SQLSTATE 28P01).
//!   Every attempt — success or failure, with the client address and session
//!   id — is an audit `login` entry. Passwords never reach this process in
//!   clear (SCRAM) and nothing about them is logged.
//!   The built-in policy's demo users are served only when the command
//!   allows them (`--demo-users` on a loopback address,
//!   `cli::check_demo_users`).
//! * **TLS** (optional): rustls with the configured PEM certificate and key.
//!   When TLS is configured, unencrypted logins are refused.
//! * **Queries**, simple and extended protocol (prepared statements with
//!   parameters) alike: planned with DataFusion, parameters bound, then
//!   [`lianqin_policies::PolicyEngine::secure_plan`] under the connection's
//!   principal (deny by default, fail closed), then executed. The server is
//!   read-only: anything that is not a query is refused, for administrators
//!   too (the DataFusion session is shared by every connection). Each query
//!   or denial is audited like `lianqin sql` (user, department, SQL, tables,
//!   rows, duration, outcome, session, client address); if the entry cannot
//!   be written the result is withheld.
//!   A statement is secured and audited under one snapshot of the policy,
//!   so its entry names the version that decided it. Restricted users get
//!   plain `EXPLAIN` only (no ANALYZE, VERBOSE or statistics).
//! * **Session statements** drivers send (`SET`, `RESET`, `BEGIN`, `COMMIT`,
//!   `ROLLBACK`, `DISCARD`, `DEALLOCATE`) are acknowledged without touching
//!   the shared session; `SHOW <param>` answers the usual parameters and
//!   `SHOW TABLES` lists only the tables the user may read.
//! * **Catalogs**: a statement that reads only `pg_catalog` /
//!   `information_schema` (psql's `\dt`, `\d t`, DBeaver's navigator) runs
//!   in a per-user metadata session whose tables are *empty* tables with the
//!   schemas of exactly the tables the user may read — so catalogs list
//!   nothing else and can never return a row of data. A statement reading
//!   both catalogs and libraries is refused with 0A000 (no session has both).
//! * **Identity**: `session_user` / `current_user` / `user` are registered
//!   per statement (the session is shared) and return the login.
//! * **Audit table**: the `audit` table is attached with the same code as
//!   `lianqin sql` ([`QueryEngine::attach_audit_table`]); the policy lets only
//!   the auditor role read it (others: 42501), and a read is an `audit_read`.
//! * **Freshness**: the data dir's Delta logs are checked at most once a
//!   second; when a library has a new commit the query session is rebuilt,
//!   so new rows become visible without a restart.
//!
//! One file per concern:
//!
//! | module | concern |
//! |---|---|
//! | `mod.rs` | [`PgServer`]: start, accept loop, per-connection handlers |
//! | `tls` | the rustls acceptor from the configured PEM files |
//! | `auth` | SCRAM-SHA-256 logins, audited; the session's principal |
//! | `reload` | policy hot reload from `$LIANQIN_POLICIES` |
//! | `engine` | the shared query session and its freshness |
//! | `routing` | catalog vs. data session, the per-user metadata session |
//! | `rewrite` | planning with the login's `session_user` / `current_user` |
//! | `session_vars` | `SET`/`BEGIN`/… acknowledged, `SHOW` answered |
//! | `handler` | simple and extended protocol: plan, bind, secure, run, audit |
//!
//! The server's settings are [`crate::config::PgServerConfig`] (and the hub
//! config's `[server]`, [`crate::config::ServerSection`]).

mod auth;
mod engine;
mod handler;
mod reload;
mod rewrite;
mod routing;
mod session_vars;
mod tls;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire;
use lianqin_policies::{PolicyEngine, PolicySource};
use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::error::{ErrorInfo, PgWireError};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

pub use self::auth::SCRAM_ITERATIONS;
use self::auth::{AuditedStartup, UserSource};
use self::engine::EngineCache;
use self::handler::QueryHandler;
pub use self::handler::WireStatement;
use self::reload::POLICY_CHECK;
use crate::PipelineError;
use crate::audit::Audit;
pub use crate::config::PgServerConfig;
use crate::schema::Catalog;

/// The Postgres wire server over one data dir.
pub struct PgServer {
    shared: Arc<Shared>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer").field("data_dir", &self.shared.data_dir).field("tls", &self.tls.is_some()).finish()
    }
}

/// What every connection of one server shares.
struct Shared {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    /// The policy in force; swapped when the files of `policy_source` change.
    policy: std::sync::RwLock<Arc<PolicyEngine>>,
    /// Where the policy comes from; a folder is watched for changes (the
    /// built-in policy never changes).
    policy_source: PolicySource,
    /// SHA-256 over the watched policy files when last looked at.
    policy_files: Mutex<Option<String>>,
    audit: Audit,
    engine: Mutex<Option<EngineCache>>,
    /// Per user: (engine it was built from, metadata-only session).
    meta: Mutex<std::collections::HashMap<String, (usize, Arc<SessionContext>)>>,
    sessions: AtomicU64,
    tls_required: bool,
    cert_pem: tls::CertPem,
    /// Key for the fake salts of unknown users (random per process).
    fake_key: [u8; 32],
}

/// An `ERROR` with SQLSTATE `code`.
fn pg_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

impl PgServer {
    /// Prepares a server over `data_dir` with the policy of `policies`
    /// (loaded now; a folder is then watched for edits, see `reload`). TLS
    /// files are read now: a bad certificate or key is an error (never a
    /// silent fallback to plain text).
    pub async fn new(cfg: &PgServerConfig, data_dir: &Path, policies: PolicySource) -> Result<PgServer, PipelineError> {
        let (tls, cert_pem) = tls::acceptor(cfg)?;
        let policy = crate::policy::load_from(&policies, data_dir).await?;
        let audit = Audit::open(data_dir, "pgwire", "pgwire", Duration::from_secs(3))?;
        let policy_files = Mutex::new(policies.files_hash());
        let shared = Shared {
            data_dir: data_dir.to_path_buf(),
            catalog: Catalog::builtin()?,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            policy_source: policies,
            policy_files,
            audit,
            engine: Mutex::new(None),
            meta: Mutex::new(std::collections::HashMap::new()),
            sessions: AtomicU64::new(0),
            tls_required: tls.is_some(),
            cert_pem,
            fake_key: rand::random(),
        };
        Ok(PgServer { shared: Arc::new(shared), tls, metrics: None })
    }

    /// Counts connections in `metrics` (`lianqin_pgwire_sessions`, open;
    /// `lianqin_pgwire_connections_total`, accepted).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let addr = listener.local_addr().map_err(|e| PipelineError::Config(format!("listener: {e}")))?;
        info!(%addr, tls = self.tls.is_some(), "Postgres wire server listening");
        let mut policy_check = tokio::time::interval(POLICY_CHECK);
        policy_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
                // The policy folder and the sharing grants.
                _ = policy_check.tick() => self.shared.reload_policy_if_changed().await,
                acc = listener.accept() => {
                    let (socket, peer) = match acc {
                        Ok(x) => x,
                        Err(e) => { warn!("accept failed: {e}"); continue; }
                    };
                    let n = self.shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
                    let conn = Arc::new(Connection {
                        shared: Arc::clone(&self.shared),
                        session: format!("pg-{}-{n}", std::process::id()),
                        peer,
                        authenticated: Arc::new(OnceLock::new()),
                    });
                    let tls = self.tls.clone();
                    let metrics = self.metrics.clone();
                    if let Some(m) = &metrics {
                        m.pgwire_connections.inc();
                        m.pgwire_sessions.inc();
                    }
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, conn).await {
                            warn!(%peer, "connection ended with an error: {e}");
                        }
                        if let Some(m) = metrics {
                            m.pgwire_sessions.dec();
                        }
                    });
                }
            }
        }
        self.shared.audit.sync();
        Ok(())
    }
}

/// One client connection: its handlers and identity.
struct Connection {
    shared: Arc<Shared>,
    session: String,
    peer: SocketAddr,
    /// The user, set once the SCRAM exchange has succeeded (and been
    /// audited); queries are refused until then.
    authenticated: Arc<OnceLock<String>>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(QueryHandler::new(self))
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(QueryHandler::new(self))
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(Arc::new(UserSource { shared: Arc::clone(&self.shared) }));
        scram.set_iterations(SCRAM_ITERATIONS as usize);
        if let Some(pem) = &self.shared.cert_pem
            && let Err(e) = scram.configure_certificate(pem)
        {
            warn!("SCRAM channel binding (SCRAM-SHA-256-PLUS) unavailable: {e}");
        }
        let inner = SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default())).with_scram(scram);
        Arc::new(AuditedStartup {
            inner,
            shared: Arc::clone(&self.shared),
            session: self.session.clone(),
            peer: self.peer,
            recorded: AtomicBool::new(false),
            authenticated: Arc::clone(&self.authenticated),
        })
    }
}
