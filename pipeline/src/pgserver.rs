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

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::datasource::empty::EmptyTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use futures::Sink;
use lianqin_policies::{PolicyEngine, Principal};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::types::format::FormatOptions;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::PipelineError;
use crate::audit::Audit;
use crate::library::LibraryStore;
use crate::query::{QueryEngine, columns_of, columns_of_plan, policy_detail, tables_of};
use crate::schema::Catalog;

/// PBKDF2 iterations the server asks SCRAM clients for; users.toml
/// verifiers must use the same count.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Settings of the Postgres wire server.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS.
    pub tls_key: Option<PathBuf>,
}

/// `[server]` of the hub config: `lianqin run` then also serves the
/// libraries over the Postgres protocol.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on (default `127.0.0.1:5433`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate (chain) for TLS; relative to the config file.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS; relative to the config file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5433))
}

impl ServerSection {
    /// The server settings, with TLS paths resolved against `base` (the
    /// config file's directory).
    pub fn resolve(&self, base: &Path) -> PgServerConfig {
        let abs = |p: &Option<PathBuf>| p.as_ref().map(|p| if p.is_absolute() { p.clone() } else { base.join(p) });
        PgServerConfig { listen: self.listen, tls_cert: abs(&self.tls_cert), tls_key: abs(&self.tls_key) }
    }
}

/// The Postgres wire server over one data dir.
pub struct PgServer {
    shared: Arc<Shared>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
}

/// PEM of the server certificate, for SCRAM-SHA-256-PLUS channel binding.
type CertPem = Option<Arc<Vec<u8>>>;

impl Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer").field("data_dir", &self.shared.data_dir).field("tls", &self.tls.is_some()).finish()
    }
}

struct EngineCache {
    engine: Arc<QueryEngine>,
    fingerprint: Vec<(String, String)>,
    checked: Instant,
    /// Version of the policy the engine's mask functions came from.
    policy_version: String,
}

struct Shared {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    /// The policy in force; swapped when the files under `policy_dir` change.
    policy: std::sync::RwLock<Arc<PolicyEngine>>,
    /// `$LIANQIN_POLICIES`, watched for changes (the built-in policy never changes).
    policy_dir: Option<PathBuf>,
    /// SHA-256 over the watched policy files when last looked at.
    policy_files: Mutex<Option<String>>,
    audit: Audit,
    engine: Mutex<Option<EngineCache>>,
    /// Per user: (engine it was built from, metadata-only session).
    meta: Mutex<std::collections::HashMap<String, (usize, Arc<SessionContext>)>>,
    sessions: AtomicU64,
    tls_required: bool,
    cert_pem: CertPem,
    /// Key for the fake salts of unknown users (random per process).
    fake_key: [u8; 32],
}

fn pg_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

fn load_tls(cert: &Path, key: &Path) -> Result<pgwire::tokio::TlsAcceptor, PipelineError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PipelineError::Config(format!("TLS certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PipelineError::Config(format!("TLS certificate {}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| PipelineError::Config(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| PipelineError::Config(format!("TLS {}: {e}", cert.display())))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(cfg)))
}

impl PgServer {
    /// Prepares a server over `data_dir` with `policy`. TLS files are read
    /// now: a bad certificate or key is an error (never a silent fallback to
    /// plain text).
    pub fn new(cfg: &PgServerConfig, data_dir: &Path, policy: Arc<PolicyEngine>) -> Result<PgServer, PipelineError> {
        let mut cert_pem = None;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => {
                let acceptor = load_tls(c, k)?;
                cert_pem = std::fs::read(c).ok().map(Arc::new);
                Some(acceptor)
            }
            (None, None) => None,
            _ => return Err(PipelineError::Config("TLS needs both a certificate and a key".into())),
        };
        let audit = Audit::open(data_dir, "pgwire", "pgwire", Duration::from_secs(3))?;
        let policy_dir = std::env::var_os("LIANQIN_POLICIES").map(PathBuf::from);
        let policy_files = Mutex::new(policy_dir.as_deref().map(policy_files_hash));
        let shared = Shared {
            data_dir: data_dir.to_path_buf(),
            catalog: Catalog::builtin()?,
            policy: std::sync::RwLock::new(policy),
            policy_dir,
            policy_files,
            audit,
            engine: Mutex::new(None),
            meta: Mutex::new(std::collections::HashMap::new()),
            sessions: AtomicU64::new(0),
            tls_required: tls.is_some(),
            cert_pem,
            fake_key: rand::random(),
        };
        Ok(PgServer { shared: Arc::new(shared), tls })
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
        let watching = self.shared.policy_dir.is_some();
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
                _ = policy_check.tick(), if watching => self.shared.reload_policy_if_changed().await,
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
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, conn).await {
                            warn!(%peer, "connection ended with an error: {e}");
                        }
                    });
                }
            }
        }
        self.shared.audit.sync();
        Ok(())
    }
}

/// Newest Delta log entry of every table under `<data_dir>/lake`.
fn fingerprint(data_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(data_dir.join("lake")) {
        for e in rd.flatten() {
            let log = e.path().join("_delta_log");
            let newest = std::fs::read_dir(&log)
                .map(|r| {
                    r.flatten()
                        .map(|f| f.file_name().to_string_lossy().to_string())
                        .filter(|n| n.ends_with(".json"))
                        .max()
                })
                .ok()
                .flatten();
            if let Some(n) = newest {
                out.push((e.file_name().to_string_lossy().to_string(), n));
            }
        }
    }
    out.sort();
    out
}

/// How often the wire server looks at `$LIANQIN_POLICIES` for changes.
const POLICY_CHECK: Duration = Duration::from_secs(2);

/// SHA-256 over the names and contents of the files in a policy folder
/// ("" when it cannot be read).
fn policy_files_hash(dir: &Path) -> String {
    use sha2::Digest;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(f.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default());
        h.update([0]);
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

impl Shared {
    /// The policy in force now.
    fn policy(&self) -> Arc<PolicyEngine> {
        match self.policy.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads `$LIANQIN_POLICIES` again when its files changed. A policy that
    /// loads replaces the old one for every later statement (also in open
    /// sessions) and is recorded as a `policy_change` entry with both
    /// versions; one that does not load is refused — the old policy stays
    /// in force — and recorded as a failed `policy_change` naming the error.
    async fn reload_policy_if_changed(&self) {
        let Some(dir) = self.policy_dir.clone() else { return };
        let hash = policy_files_hash(&dir);
        {
            let mut seen = self.policy_files.lock().await;
            if seen.as_deref() == Some(hash.as_str()) {
                return;
            }
            *seen = Some(hash);
        }
        let old = self.policy();
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        match PolicyEngine::load(&dir).await {
            Ok(new) if new.version() == old.version() => {}
            Ok(new) => {
                let version = new.version();
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                // Sessions are rebuilt with the new masks and catalogs.
                *self.engine.lock().await = None;
                self.meta.lock().await.clear();
                info!(from = %old.version(), to = %version, "policy reloaded");
                let detail = serde_json::json!({ "reloaded_by": "pgwire", "dir": dir.display().to_string() });
                if let Err(e) = crate::audit::note_version(&self.audit, "policy", &version, detail) {
                    warn!("policy reloaded but its audit entry failed: {e}");
                }
            }
            Err(e) => {
                warn!(dir = %dir.display(), keeping = %old.version(), "policy change refused: {e}");
                let mut ev =
                    AuditEvent::new(EventKind::PolicyChange, "system:pgwire", "eco_police_office", Outcome::Failure);
                ev.rule_version = Some(old.version());
                ev.detail = serde_json::json!({ "what": "policy", "error": e.to_string(), "kept": old.version(), "dir": dir.display().to_string() });
                if let Err(e) = self.audit.record_durable(ev) {
                    warn!("refused policy change not audited: {e}");
                }
            }
        }
    }

    /// The query session, rebuilt when a library has a new commit or the
    /// policy changed.
    async fn engine(&self) -> Result<Arc<QueryEngine>, PipelineError> {
        let policy = self.policy();
        let mut g = self.engine.lock().await;
        if let Some(c) = g.as_mut().filter(|c| c.policy_version == policy.version()) {
            if c.checked.elapsed() < Duration::from_secs(1) {
                return Ok(Arc::clone(&c.engine));
            }
            let fp = fingerprint(&self.data_dir);
            if fp == c.fingerprint {
                c.checked = Instant::now();
                return Ok(Arc::clone(&c.engine));
            }
        }
        let fp = fingerprint(&self.data_dir);
        let store = LibraryStore::open_existing(&self.data_dir, Arc::clone(&self.catalog)).await?;
        let mut engine = QueryEngine::new(&store, &self.catalog).await?;
        // The `audit` table, as `lianqin sql` has it; the policy lets only
        // the auditor role read it (everyone else: 42501).
        engine.attach_audit_table(&self.audit);
        policy.mask_functions().register(engine.context());
        let engine = Arc::new(engine);
        *g = Some(EngineCache {
            engine: Arc::clone(&engine),
            fingerprint: fp,
            checked: Instant::now(),
            policy_version: policy.version(),
        });
        Ok(engine)
    }

    /// Tables (and views) of `engine` that `who` may read.
    fn visible_tables(&self, who: &Principal, engine: &QueryEngine) -> Vec<String> {
        let catalog = &self.catalog;
        engine
            .tables()
            .iter()
            .filter(|t| {
                let base = if matches!(t.as_str(), "element" | "matter" | "matter_event") {
                    format!("{t}_history")
                } else {
                    t.to_string()
                };
                self.policy().decide_sync(who, &base, &columns_of(catalog, &base)).allowed
            })
            .cloned()
            .collect()
    }

    /// The metadata-only session of `who`: `pg_catalog` and
    /// `information_schema` over *empty* tables with the schemas of the
    /// tables `who` may read — so catalog queries (psql `\d`, DBeaver's
    /// navigator) list exactly those, and can never read a row.
    async fn meta_ctx(&self, who: &Principal, engine: &Arc<QueryEngine>) -> Result<Arc<SessionContext>, PipelineError> {
        let key = Arc::as_ptr(engine) as usize;
        if let Some((k, c)) = self.meta.lock().await.get(&who.name)
            && *k == key
        {
            return Ok(Arc::clone(c));
        }
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        for t in self.visible_tables(who, engine) {
            let provider = engine
                .context()
                .table_provider(t.as_str())
                .await
                .map_err(|e| PipelineError::Query(format!("{t}: {e}")))?;
            ctx.register_table(t.as_str(), Arc::new(EmptyTable::new(provider.schema())))
                .map_err(|e| PipelineError::Query(format!("{t}: {e}")))?;
        }
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
            .map_err(|e| PipelineError::Query(format!("pg_catalog: {e}")))?;
        let ctx = Arc::new(ctx);
        self.meta.lock().await.insert(who.name.clone(), (key, Arc::clone(&ctx)));
        Ok(ctx)
    }

    fn fake_salt(&self, user: &str) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.fake_key);
        h.update(user.as_bytes());
        h.finalize()[..16].to_vec()
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

/// SCRAM verifiers from users.toml.
struct UserSource {
    shared: Arc<Shared>,
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
struct AuditedStartup {
    inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    shared: Arc<Shared>,
    session: String,
    peer: SocketAddr,
    recorded: AtomicBool,
    authenticated: Arc<OnceLock<String>>,
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

/// A parsed statement of the extended protocol.
#[derive(Clone, Debug)]
pub struct WireStatement {
    sql: String,
    kind: WireKind,
}

#[derive(Clone, Debug)]
enum WireKind {
    /// SET/BEGIN/...: acknowledged with this tag.
    Session(String),
    /// SHOW: one text column.
    Show(String),
    /// A query: the unsecured plan (with placeholders) and the secured schema.
    Query { stmt: Box<SqlStatement>, plan: Box<LogicalPlan>, schema: SchemaRef },
    /// A catalog query for the user's metadata session.
    Meta { stmt: Box<SqlStatement>, plan: Box<LogicalPlan>, schema: SchemaRef },
}

/// Simple and extended query handler of one connection.
struct QueryHandler {
    shared: Arc<Shared>,
    session: String,
    peer: SocketAddr,
    authenticated: Arc<OnceLock<String>>,
    parser: Arc<WireParser>,
}

/// Parses and plans statements for the extended protocol.
struct WireParser {
    shared: Arc<Shared>,
    session: String,
    peer: SocketAddr,
    authenticated: Arc<OnceLock<String>>,
    sql: PostgresCompatibilityParser,
}

impl QueryHandler {
    fn new(c: &Connection) -> Self {
        QueryHandler {
            shared: Arc::clone(&c.shared),
            session: c.session.clone(),
            peer: c.peer,
            authenticated: Arc::clone(&c.authenticated),
            parser: Arc::new(WireParser {
                shared: Arc::clone(&c.shared),
                session: c.session.clone(),
                peer: c.peer,
                authenticated: Arc::clone(&c.authenticated),
                sql: PostgresCompatibilityParser::new(),
            }),
        }
    }
}

/// Session statements acknowledged without effect, by leading keyword.
fn session_tag(sql: &str) -> Option<String> {
    let up = sql.trim_start().to_ascii_uppercase();
    let first = up.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    Some(match first {
        "SET" | "RESET" => "SET".to_string(),
        "BEGIN" | "START" => "BEGIN".to_string(),
        "COMMIT" | "END" => "COMMIT".to_string(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".to_string(),
        "DISCARD" => "DISCARD ALL".to_string(),
        "DEALLOCATE" => "DEALLOCATE".to_string(),
        _ => return None,
    })
}

/// `SHOW <name>` → the parameter name (lower case).
fn show_param(sql: &str) -> Option<String> {
    let t = sql.trim().trim_end_matches(';').trim();
    let mut it = t.split_whitespace();
    if !it.next()?.eq_ignore_ascii_case("show") {
        return None;
    }
    let rest: Vec<&str> = it.collect();
    Some(rest.join(" ").to_ascii_lowercase())
}

fn show_value(param: &str) -> Option<&'static str> {
    Some(match param {
        "server_version" => "16.0-lianqin",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" => "on",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "timezone" | "time zone" => "Asia/Shanghai",
        "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "integer_datetimes" => "on",
        "application_name" => "",
        "is_superuser" => "off",
        _ => return None,
    })
}

fn text_response(column: &str, rows: Vec<String>) -> PgWireResult<QueryResponse> {
    let schema = Schema::new(vec![Field::new(column, DataType::Utf8, true)]);
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(arrow::array::StringArray::from(rows))])
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    batches_response(&schema, vec![batch], &Format::UnifiedText, None)
}

fn batches_response(
    schema: &Schema,
    batches: Vec<RecordBatch>,
    format: &Format,
    opts: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, opts)?);
    let f2 = Arc::clone(&fields);
    let rows: Vec<_> = batches.into_iter().flat_map(move |b| encode_recordbatch(Arc::clone(&f2), b)).collect();
    Ok(QueryResponse::new(fields, futures::stream::iter(rows)))
}

/// Parameter types of a plan in `$1, $2, …` order.
fn param_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut v: Vec<(u32, Option<DataType>)> =
        types.into_iter().map(|(k, t)| (k.trim_start_matches('$').parse().unwrap_or(u32::MAX), t)).collect();
    v.sort_by_key(|(k, _)| *k);
    Ok(v.into_iter().map(|(_, t)| t).collect())
}

fn wire_types(types: &[Option<DataType>]) -> Vec<Type> {
    types.iter().map(|t| t.as_ref().and_then(|t| into_pg_type(t).ok()).unwrap_or(Type::UNKNOWN)).collect()
}

/// Who is on this connection: the user whose SCRAM login succeeded.
fn principal_of<C: ClientInfo + ?Sized>(
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

/// Where a statement runs.
enum Target {
    /// The data session, through `secure_plan`.
    Data,
    /// The user's metadata-only session (empty tables).
    Meta(Arc<SessionContext>),
}

/// `Some(true)` if every table the plan reads is in `pg_catalog` or
/// `information_schema`, `Some(false)` if any is not, `None` if it reads none.
fn catalog_only(plan: &LogicalPlan) -> Option<bool> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let (mut any, mut all) = (false, true);
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(scan) = n {
            any = true;
            if !matches!(scan.table_name.schema(), Some("pg_catalog" | "information_schema")) {
                all = false;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    any.then_some(all)
}

/// A plan, or (SQLSTATE, message).
type Planned = Result<LogicalPlan, (&'static str, String)>;

/// Plans `stmt` in a copy of `ctx`'s state that answers `session_user`,
/// `current_user` (which the compatibility parser rewrites to
/// `session_user`), `current_role` and `user` with `who` — the session is
/// shared by every connection, so these are registered per statement.
async fn plan_as(who: &Principal, ctx: &SessionContext, stmt: &SqlStatement) -> Planned {
    use datafusion::common::ScalarValue;
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let mut state = ctx.state();
    for name in ["session_user", "current_user", "current_role", "user"] {
        let user = who.name.clone();
        let udf = create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user.clone()))))),
        );
        let _ = state.register_udf(Arc::new(udf));
    }
    let mut stmt = stmt.clone();
    name_user_functions(&mut stmt);
    state.statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(stmt))).await.map_err(|e| {
        let msg = e.to_string();
        // An unknown table is 42P01, as in PostgreSQL (psycopg: UndefinedTable).
        let code = if msg.contains("table '") && msg.contains("not found") { "42P01" } else { "XX000" };
        (code, msg)
    })
}

/// Names unaliased `session_user` / `user` / `current_role` select items
/// after the function (`session_user`, not `session_user()`), and tells
/// repeats apart (`SELECT current_user, session_user` — the compatibility
/// parser has already turned `current_user` into `session_user`).
fn name_user_functions(stmt: &mut SqlStatement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArguments, Ident, Query, SelectItem, SetExpr, VisitMut, VisitorMut,
    };
    use std::ops::ControlFlow;
    struct V;
    impl VisitorMut for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let SetExpr::Select(sel) = q.body.as_mut() else { return ControlFlow::Continue(()) };
            let mut used: Vec<String> = Vec::new();
            for item in sel.projection.iter_mut() {
                let SelectItem::UnnamedExpr(Expr::Function(f)) = item else { continue };
                let name = f.name.to_string().to_lowercase();
                let bare = matches!(&f.args, FunctionArguments::None)
                    || matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty());
                if !bare || !matches!(name.as_str(), "session_user" | "current_user" | "user" | "current_role") {
                    continue;
                }
                let mut alias = name.clone();
                let mut n = 1;
                while used.contains(&alias) {
                    n += 1;
                    alias = format!("{name}_{n}");
                }
                used.push(alias.clone());
                let expr = Expr::Function(f.clone());
                *item = SelectItem::ExprWithAlias { expr, alias: Ident::new(alias) };
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut V);
}

fn is_catalog_schema(schema: &str) -> bool {
    schema.eq_ignore_ascii_case("pg_catalog") || schema.eq_ignore_ascii_case("information_schema")
}

/// (schema, table) of every table a plan scans.
fn scans_of(plan: &LogicalPlan) -> Vec<(Option<String>, String)> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut out = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(scan) = n {
            out.insert((scan.table_name.schema().map(str::to_string), scan.table_name.table().to_string()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.into_iter().collect()
}

/// Relations `stmt` names, as written: (catalog ones, others), leaving
/// out the names of its CTEs.
fn relations_of(stmt: &SqlStatement) -> (Vec<String>, Vec<String>) {
    use datafusion::sql::sqlparser::ast::{ObjectName, Query, Visit, Visitor};
    use std::ops::ControlFlow;
    #[derive(Default)]
    struct V {
        ctes: Vec<String>,
        names: Vec<ObjectName>,
    }
    impl Visitor for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                self.ctes.extend(w.cte_tables.iter().map(|c| c.alias.name.value.to_lowercase()));
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
            self.names.push(r.clone());
            ControlFlow::Continue(())
        }
    }
    let mut v = V::default();
    let _ = stmt.visit(&mut v);
    let (mut catalogs, mut data) = (Vec::new(), Vec::new());
    for n in v.names {
        let parts: Vec<String> = n.0.iter().filter_map(|p| p.as_ident()).map(|i| i.value.clone()).collect();
        let text = parts.join(".");
        let catalog = parts.len() >= 2 && is_catalog_schema(&parts[parts.len() - 2]);
        if catalog {
            catalogs.push(text);
        } else if !(parts.len() == 1 && v.ctes.contains(&parts[0].to_lowercase())) {
            data.push(text);
        }
    }
    for l in [&mut catalogs, &mut data] {
        l.sort();
        l.dedup();
    }
    (catalogs, data)
}

fn mixed_message(catalogs: &[String], data: &[String]) -> String {
    format!(
        "not supported: one query cannot read both the catalogs ({}) and library tables ({}); \
         query pg_catalog / information_schema and the libraries in separate statements",
        catalogs.join(", "),
        data.join(", ")
    )
}

struct Ctx<'a> {
    shared: &'a Shared,
    session: &'a str,
    peer: SocketAddr,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        who: &Principal,
        sql: &str,
        tables: Vec<String>,
        columns: Vec<String>,
        started: Instant,
        res: &Result<u64, String>,
        denied: bool,
    ) -> Result<(), PipelineError> {
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        // Reading the audit trail is an `audit_read`, as with `lianqin sql`.
        let query =
            if tables.iter().any(|t| t == crate::audit_table::TABLE) { EventKind::AuditRead } else { EventKind::Query };
        let (kind, outcome) = match (res, denied) {
            (Ok(_), _) => (query, Outcome::Success),
            (Err(_), true) => (EventKind::Denial, Outcome::Deny),
            (Err(_), false) => (query, Outcome::Failure),
        };
        let mut ev = AuditEvent::new(kind, &who.name, &who.department, outcome);
        // The same policy detail as `lianqin sql --as` records.
        policy_detail(&mut ev, &self.shared.policy(), who, &self.shared.catalog, &tables, &columns);
        ev.session = Some(self.session.to_string());
        ev.client_addr = Some(self.peer.to_string());
        ev.sql = Some(sql.to_string());
        ev.tables = tables;
        ev.columns = columns;
        ev.duration_ms = Some(started.elapsed().as_millis() as u64);
        match res {
            Ok(n) => ev.rows = Some(*n),
            Err(e) => ev.detail = serde_json::json!({ "error": e, "via": "pgwire" }),
        }
        self.shared.audit.record(ev).map(|_| ())
    }

    /// Plans `stmt` in the data session (unsecured; placeholders allowed),
    /// with `who`'s `session_user` / `current_user` / `user`.
    async fn plan(&self, who: &Principal, engine: &QueryEngine, stmt: &SqlStatement) -> Planned {
        plan_as(who, engine.context(), stmt).await
    }

    /// Applies the policy; the error is (denied?, message).
    fn secure(&self, who: &Principal, plan: LogicalPlan) -> Result<LogicalPlan, (bool, String)> {
        let catalog = &self.shared.catalog;
        let secured = self
            .shared
            .policy()
            .secure_plan(who, plan, &|t| columns_of(catalog, t))
            .map_err(|e| (true, format!("permission denied: {e}")))?;
        if !lianqin_policies::is_query(&secured) {
            return Err((true, "permission denied: the Postgres interface is read-only (queries only)".into()));
        }
        Ok(secured)
    }

    /// Plans, binds, secures, runs and audits one query.
    async fn run(
        &self,
        who: &Principal,
        sql: &str,
        target: Target,
        plan: Planned,
        params: Option<&ParamValues>,
    ) -> PgWireResult<(SchemaRef, Vec<RecordBatch>)> {
        let started = Instant::now();
        let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
        let mut tables = Vec::new();
        let mut columns = Vec::new();
        let mut denied = false;
        let mut code = "XX000";
        let res: Result<(SchemaRef, Vec<RecordBatch>), String> = async {
            let mut plan = plan.map_err(|(c, m)| {
                code = c;
                m
            })?;
            tables = tables_of(&plan);
            columns = columns_of_plan(&plan, &tables);
            if let Some(p) = params {
                plan = plan.replace_params_with_values(p).map_err(|e| e.to_string())?;
            }
            let df = match &target {
                // Catalog rows over empty tables of what `who` may read.
                Target::Meta(meta) => meta.execute_logical_plan(plan).await.map_err(|e| e.to_string())?,
                Target::Data => {
                    let secured = self.secure(who, plan).map_err(|(d, m)| {
                        denied = d;
                        m
                    })?;
                    engine.context().execute_logical_plan(secured).await.map_err(|e| e.to_string())?
                }
            };
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.map_err(|e| e.to_string())?;
            Ok((schema, batches))
        }
        .await;
        let counted =
            res.as_ref().map(|(_, b)| b.iter().map(|b| b.num_rows() as u64).sum::<u64>()).map_err(Clone::clone);
        if let Err(e) = self.audit(who, sql, tables, columns, started, &counted, denied) {
            return Err(pg_error("58000", format!("result withheld: cannot write the audit entry: {e}")));
        }
        res.map_err(|e| if denied { pg_error("42501", e) } else { pg_error(code, e) })
    }

    /// Tables `who` may read (for `SHOW TABLES`).
    async fn visible_tables(&self, who: &Principal) -> PgWireResult<Vec<String>> {
        let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
        Ok(self.shared.visible_tables(who, &engine))
    }

    /// Plans `stmt` in `who`'s metadata session: the session and plan
    /// with [`catalog_only`] of the plan — `Some(true)` when it reads only
    /// `pg_catalog` / `information_schema`, `None` when it reads no table at
    /// all (e.g. `SELECT current_database()`; used only if the data session
    /// cannot plan it), `Some(false)` when it mixes catalogs and libraries.
    /// `None` when the metadata session cannot plan it as a query.
    async fn meta_plan(
        &self,
        who: &Principal,
        engine: &Arc<QueryEngine>,
        stmt: &SqlStatement,
    ) -> Option<(Arc<SessionContext>, LogicalPlan, Option<bool>)> {
        let meta = self.shared.meta_ctx(who, engine).await.ok()?;
        let plan = plan_as(who, &meta, stmt).await.ok()?;
        if !lianqin_policies::is_query(&plan) {
            return None;
        }
        let only = catalog_only(&plan);
        Some((meta, plan, only))
    }

    /// Picks the session for `stmt`: the metadata session for catalog
    /// queries, else the data session (secured). A query that reads both
    /// catalogs and libraries is refused with 0A000 (the catalogs live in
    /// the metadata session of empty tables, the rows in the data session;
    /// no session has both).
    async fn route(&self, who: &Principal, engine: &Arc<QueryEngine>, stmt: &SqlStatement) -> (Target, Planned) {
        let meta = self.meta_plan(who, engine, stmt).await;
        match &meta {
            Some((ctx, plan, Some(true))) => return (Target::Meta(Arc::clone(ctx)), Ok(plan.clone())),
            Some((_, plan, Some(false))) => {
                // Library tables exist (empty) in the metadata session too.
                let (mut catalogs, mut data) = (Vec::new(), Vec::new());
                for (schema, table) in scans_of(plan) {
                    match schema {
                        Some(s) if is_catalog_schema(&s) => catalogs.push(format!("{s}.{table}")),
                        _ => data.push(table),
                    }
                }
                if !catalogs.is_empty() {
                    return (Target::Data, Err(("0A000", mixed_message(&catalogs, &data))));
                }
            }
            _ => {}
        }
        let data = self.plan(who, engine, stmt).await;
        match (data, meta) {
            (Err(_), Some((ctx, plan, None))) => (Target::Meta(ctx), Ok(plan)),
            (Err(e), None) => {
                // Neither session could plan it (e.g. a catalog joined with a
                // table this user may not see): still name the real cause.
                let (catalogs, data) = relations_of(stmt);
                if !catalogs.is_empty() && !data.is_empty() {
                    (Target::Data, Err(("0A000", mixed_message(&catalogs, &data))))
                } else {
                    (Target::Data, Err(e))
                }
            }
            (data, _) => (Target::Data, data),
        }
    }

    async fn show(&self, who: &Principal, param: &str) -> PgWireResult<Response> {
        if param == "tables" {
            let t = self.visible_tables(who).await?;
            return Ok(Response::Query(text_response("table_name", t)?));
        }
        match show_value(param) {
            Some(v) => Ok(Response::Query(text_response(param, vec![v.to_string()])?)),
            None => Err(pg_error("42704", format!("unrecognized configuration parameter \"{param}\""))),
        }
    }
}

fn session_response(tag: &str) -> Response {
    match tag {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag)),
        _ => Response::Execution(Tag::new(tag)),
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal_of(&self.shared, &self.authenticated, client)?;
        let ctx = Ctx { shared: &self.shared, session: &self.session, peer: self.peer };
        if let Some(p) = show_param(query).filter(|_| !query.trim().trim_end_matches(';').contains(';')) {
            return Ok(vec![ctx.show(&who, &p).await?]);
        }
        let stmts = self.parser.sql.parse(query).map_err(|e| pg_error("42601", e.to_string()))?;
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut out = Vec::new();
        for stmt in stmts {
            let sql = stmt.to_string();
            if let Some(tag) = session_tag(&sql) {
                out.push(session_response(&tag));
                continue;
            }
            if let Some(p) = show_param(&sql) {
                out.push(ctx.show(&who, &p).await?);
                continue;
            }
            let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
            let (target, plan) = ctx.route(&who, &engine, &stmt).await;
            let (schema, batches) = ctx.run(&who, &sql, target, plan, None).await?;
            out.push(Response::Query(batches_response(
                &schema,
                batches,
                &Format::UnifiedText,
                Some(Arc::clone(&opts)),
            )?));
        }
        Ok(out)
    }
}

#[async_trait]
impl QueryParser for WireParser {
    type Statement = WireStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<WireStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let who = principal_of(&self.shared, &self.authenticated, client)?;
        if let Some(p) = show_param(sql).filter(|_| !sql.trim().trim_end_matches(';').contains(';')) {
            return Ok(Some(WireStatement { sql: sql.to_string(), kind: WireKind::Show(p) }));
        }
        let mut stmts = self.sql.parse(sql).map_err(|e| pg_error("42601", e.to_string()))?;
        if stmts.is_empty() {
            return Ok(None);
        }
        if stmts.len() > 1 {
            return Err(pg_error("42601", "cannot insert multiple commands into a prepared statement"));
        }
        let stmt = stmts.remove(0);
        let text = stmt.to_string();
        if let Some(tag) = session_tag(&text) {
            return Ok(Some(WireStatement { sql: text, kind: WireKind::Session(tag) }));
        }
        if let Some(p) = show_param(&text) {
            return Ok(Some(WireStatement { sql: text, kind: WireKind::Show(p) }));
        }
        let ctx = Ctx { shared: &self.shared, session: &self.session, peer: self.peer };
        let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
        let (target, plan) = ctx.route(&who, &engine, &stmt).await;
        let plan = plan.map_err(|(c, m)| pg_error(c, m))?;
        if let Target::Meta(_) = target {
            let schema = Arc::new(plan.schema().as_arrow().clone());
            return Ok(Some(WireStatement {
                sql: text,
                kind: WireKind::Meta { stmt: Box::new(stmt), plan: Box::new(plan), schema },
            }));
        }
        // Secure now too: the described schema is the secured one, and a
        // denied table is refused (and audited) already at Parse.
        let schema = match ctx.secure(&who, plan.clone()) {
            Ok(p) => Arc::new(p.schema().as_arrow().clone()),
            Err((_, msg)) => {
                let tables = tables_of(&plan);
                let columns = columns_of_plan(&plan, &tables);
                let _ = ctx.audit(&who, &text, tables, columns, Instant::now(), &Err(msg.clone()), true);
                return Err(pg_error("42501", msg));
            }
        };
        Ok(Some(WireStatement {
            sql: text,
            kind: WireKind::Query { stmt: Box::new(stmt), plan: Box::new(plan), schema },
        }))
    }

    fn get_parameter_types(&self, stmt: &WireStatement) -> PgWireResult<Vec<Type>> {
        match &stmt.kind {
            WireKind::Query { plan, .. } | WireKind::Meta { plan, .. } => Ok(wire_types(&param_types(plan)?)),
            _ => Ok(vec![]),
        }
    }

    fn get_result_schema(&self, stmt: &WireStatement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let fmt = format.unwrap_or(&Format::UnifiedText);
        match &stmt.kind {
            WireKind::Query { schema, .. } | WireKind::Meta { schema, .. } => {
                arrow_schema_to_pg_fields(schema, fmt, None)
            }
            WireKind::Show(p) => arrow_schema_to_pg_fields(
                &Schema::new(vec![Field::new(
                    if p == "tables" { "table_name" } else { p.as_str() },
                    DataType::Utf8,
                    true,
                )]),
                fmt,
                None,
            ),
            WireKind::Session(_) => Ok(vec![]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = WireStatement;
    type QueryParser = WireParser;

    fn query_parser(&self) -> Arc<WireParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<WireStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = WireStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let who = principal_of(&self.shared, &self.authenticated, client)?;
        let ctx = Ctx { shared: &self.shared, session: &self.session, peer: self.peer };
        let st = &portal.statement.statement;
        match &st.kind {
            WireKind::Session(tag) => Ok(session_response(tag)),
            WireKind::Show(p) => ctx.show(&who, p).await,
            WireKind::Query { stmt, plan, .. } | WireKind::Meta { stmt, plan, .. } => {
                let types = param_types(plan)?;
                let wire = wire_types(&types);
                let inferred: Vec<Option<&DataType>> = types.iter().map(|t| t.as_ref()).collect();
                let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
                let params = deserialize_parameters_with_server_types(portal, &inferred, &wire_refs)?;
                // Plan again from the statement against the current session
                // (the data may have changed since Parse), then bind and secure.
                let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
                let (target, fresh) = match &st.kind {
                    WireKind::Meta { .. } => match ctx.meta_plan(&who, &engine, stmt).await {
                        Some((m, p, Some(true) | None)) => (Target::Meta(m), Ok(p)),
                        _ => ctx.route(&who, &engine, stmt).await,
                    },
                    _ => (Target::Data, ctx.plan(&who, &engine, stmt).await),
                };
                let (schema, batches) = ctx.run(&who, &st.sql, target, fresh, Some(&params)).await?;
                let opts = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Ok(Response::Query(batches_response(&schema, batches, &portal.result_column_format, Some(opts))?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_and_show() {
        assert_eq!(session_tag("set extra_float_digits = 3").as_deref(), Some("SET"));
        assert_eq!(session_tag("  BEGIN ISOLATION LEVEL READ COMMITTED").as_deref(), Some("BEGIN"));
        assert_eq!(session_tag("SELECT 1"), None);
        assert_eq!(session_tag("settings"), None);
        assert_eq!(show_param("SHOW TABLES").as_deref(), Some("tables"));
        assert_eq!(show_param("show transaction isolation level;").as_deref(), Some("transaction isolation level"));
        assert_eq!(show_param("SELECT 'show'"), None);
        assert_eq!(show_value("server_version"), Some("16.0-lianqin"));
    }

    #[test]
    fn user_functions_are_named_and_catalog_mixes_found() {
        let p = PostgresCompatibilityParser::new();
        let mut s = p.parse("SELECT current_user, session_user, user").unwrap().remove(0);
        name_user_functions(&mut s);
        assert_eq!(s.to_string(), "SELECT session_user AS session_user, session_user AS session_user_2, user AS user");
        let s = p.parse("WITH c AS (SELECT relname FROM pg_class) SELECT * FROM c, element").unwrap().remove(0);
        assert_eq!(relations_of(&s), (vec!["pg_catalog.pg_class".to_string()], vec!["element".to_string()]));
    }
}
