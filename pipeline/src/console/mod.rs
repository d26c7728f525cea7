//! The web console (issue 15): where department IT teams, analysts and
//! security officers do their daily work in a browser, served by
//! `lianqin run` (hub config `[console] listen`) and by
//! `lianqin serve --console ADDR`.
//!
//! * **Logins** are the users of users.toml with their argon2id password
//!   (the same accounts as the Postgres server); every attempt, logout and
//!   action is an audit entry in the console's stream (`console-<node>`
//!   beside a hub, `console` for `lianqin serve`), with the session's
//!   audit id and the client address.
//! * **Sessions** ([`session`]): random id in an `HttpOnly`,
//!   `SameSite=Strict`, `Secure` cookie; every POST carries the session's
//!   CSRF token and, when the browser sends `Origin`, must come from this
//!   console; an unknown cookie gets the login page (GET) or 403 (POST).
//! * **Pages** ([`pages`]), each deciding with the policy in force (loaded
//!   per request, sharing grants included):
//!   - *Sources* / *Quarantine* / *Reconciliation*: `source_operator`s of a
//!     department see its sources (administrators see all); replay of
//!     open quarantine ([`crate::replay`]) where the console runs beside
//!     the hub (`lianqin run`).
//!   - *Libraries*, *SQL* (with CSV download) and *Map*: any user, through
//!     a query session with their policy and the audit trail attached —
//!     exactly what `lianqin sql --as USER` gives them.
//!   - *Audit*: users the policy lets read the `audit` table; search,
//!     verification of every stream, export of a range with its proof.
//!   - *Sharing* (`share`): any user files sharing requests and revokes
//!     their own; a department's `sharing_approver`s approve, reject or
//!     revoke the requests addressed to it ([`crate::sharing`]).
//! * **Assets** are embedded in the binary (no CDN: the machines are
//!   offline); the map draws on an offline base (graticule and the
//!   divisions' seats), no tile server.
//!
//! | module | concern |
//! |---|---|
//! | `mod.rs` | [`Console`]: state, router, per-request policy, engine and audit |
//! | `session` | sessions, cookies, CSRF tokens |
//! | `html` | escaping, page frame, tables |
//! | `pages` | the handlers of every page |
//! | `share` | the sharing page (requests, approvals, revocations) |

mod html;
mod pages;
pub mod session;
mod share;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lianqin_audit::{AuditEvent, EventKind, Outcome};
use lianqin_policies::{PolicyEngine, PolicySource, Principal};
use tokio::sync::watch;
use tracing::info;

use self::session::{Sessions, WebSession};
use crate::PipelineError;
use crate::audit::Audit;
use crate::hub::Hub;
use crate::library::LibraryStore;
use crate::query::{Querier, QueryEngine};
use crate::schema::Catalog;
use crate::status::SourceRef;

pub use crate::config::ConsoleSection;

/// One console over one data dir.
pub struct Console {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    policy_source: PolicySource,
    sources: Vec<SourceRef>,
    hub: Option<Arc<Hub>>,
    audit: Audit,
    sessions: Sessions,
    secure_cookies: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("data_dir", &self.data_dir).field("sources", &self.sources.len()).finish()
    }
}

/// Who is asking: the session, its principal, the policy that decided.
pub(crate) struct Caller {
    pub(crate) session: WebSession,
    pub(crate) who: Principal,
    pub(crate) policy: Arc<PolicyEngine>,
    pub(crate) client: String,
}

impl Console {
    /// A console over `data_dir` writing the audit stream `stream` (one
    /// per process: `console-<node>` beside a hub, `console` for `serve`),
    /// with the policy of `policies`; `sources`
    /// are the hub config's sources (for the Sources pages); `hub`, when
    /// the console runs beside it, allows replay.
    pub fn new(
        data_dir: &Path,
        stream: &str,
        policies: PolicySource,
        sources: Vec<SourceRef>,
        hub: Option<Arc<Hub>>,
        secure_cookies: bool,
    ) -> Result<Console, PipelineError> {
        let audit = Audit::open(data_dir, stream, stream, Duration::from_secs(3))?;
        Ok(Console {
            data_dir: data_dir.to_path_buf(),
            catalog: Catalog::builtin()?,
            policy_source: policies,
            sources,
            hub,
            audit,
            sessions: Sessions::default(),
            secure_cookies,
            metrics: None,
        })
    }

    /// Reports live sessions in `metrics` (`lianqin_console_sessions`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Updates the session gauge (after a login or logout).
    pub(crate) fn count_sessions(&self) {
        if let Some(m) = &self.metrics {
            m.console_sessions.set(self.sessions.live() as i64);
        }
    }

    /// The routes of the console.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(pages::home))
            .route("/login", get(pages::login_form).post(pages::login))
            .route("/logout", post(pages::logout))
            .route("/sources", get(pages::sources))
            .route("/quarantine", get(pages::quarantine))
            .route("/quarantine/replay", post(pages::replay))
            .route("/reconcile", get(pages::reconcile))
            .route("/libraries", get(pages::libraries))
            .route("/sql", get(pages::sql_form).post(pages::sql_run))
            .route("/sql.csv", post(pages::sql_csv))
            .route("/map", get(pages::map))
            .route("/audit", get(pages::audit))
            .route("/sharing", get(share::page))
            .route("/sharing/request", post(share::request))
            .route("/sharing/decide", post(share::decide))
            .route("/audit/prove", post(pages::audit_prove))
            .route("/assets/console.css", get(pages::css))
            .route("/assets/console.js", get(pages::js))
            .with_state(self)
    }

    /// Serves on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), PipelineError> {
        let addr = listener.local_addr().map_err(|e| PipelineError::Config(format!("console listener: {e}")))?;
        info!(%addr, "web console listening");
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while shutdown.changed().await.is_ok() {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            })
            .await
            .map_err(|e| PipelineError::Internal(format!("web console: {e}")))
    }

    /// The policy in force now (files + sharing grants), loaded per request.
    pub(crate) async fn policy(&self) -> Result<Arc<PolicyEngine>, PipelineError> {
        Ok(Arc::new(crate::policy::load_from(&self.policy_source, &self.data_dir).await?))
    }

    /// The live session of the request's cookie and its principal under
    /// the policy in force (a user removed from users.toml has none).
    pub(crate) async fn caller(&self, headers: &HeaderMap, client: SocketAddr) -> Option<Caller> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let id = session::cookie_value(cookies, session::COOKIE)?;
        let session = self.sessions.get(id)?;
        let policy = self.policy().await.ok()?;
        let who = policy.principal(&session.user)?;
        Some(Caller { session, who, policy, client: client.ip().to_string() })
    }

    /// A query session for `c`: their policy, every query audited.
    pub(crate) async fn engine(&self, c: &Caller) -> Result<QueryEngine, PipelineError> {
        let store = self.store().await?;
        let querier = Querier {
            user: c.who.name.clone(),
            department: c.who.department.clone(),
            session: Some(c.session.audit_id.clone()),
            client_addr: Some(c.client.clone()),
        };
        Ok(QueryEngine::new(&store, &self.catalog)
            .await?
            .with_policy(Arc::clone(&c.policy), c.who.clone())
            .with_audit(self.audit.clone(), querier))
    }

    /// An unrestricted, unaudited session for the console's own counts
    /// (sources, reconciliation); callers show counts only and record the
    /// page view themselves.
    pub(crate) async fn system_engine(&self) -> Result<QueryEngine, PipelineError> {
        let store = self.store().await?;
        QueryEngine::new(&store, &self.catalog).await
    }

    async fn store(&self) -> Result<LibraryStore, PipelineError> {
        if !self.data_dir.join("lake").is_dir() {
            return Err(PipelineError::Library("no libraries yet: the hub has not committed anything".into()));
        }
        LibraryStore::open_existing(&self.data_dir, Arc::clone(&self.catalog)).await
    }

    /// Records an audit entry of the console (durable: an action without
    /// its entry does not happen).
    pub(crate) fn record(
        &self,
        kind: EventKind,
        (user, department): (&str, &str),
        outcome: Outcome,
        session: Option<&str>,
        client: &str,
        detail: serde_json::Value,
    ) -> Result<(), PipelineError> {
        let mut ev = AuditEvent::new(kind, user, department, outcome);
        ev.session = session.map(str::to_string);
        ev.client_addr = Some(client.to_string());
        ev.detail = detail;
        self.audit.record_durable(ev).map(|_| ())
    }

    /// Records `ev` (built elsewhere, e.g. a sharing step) as an action of
    /// `c`'s web session.
    pub(crate) fn record_event(&self, c: &Caller, mut ev: AuditEvent) -> Result<(), PipelineError> {
        ev.session = Some(c.session.audit_id.clone());
        ev.client_addr = Some(c.client.clone());
        self.audit.record_durable(ev).map(|_| ())
    }

    /// Records an action of `c`.
    pub(crate) fn record_action(
        &self,
        c: &Caller,
        kind: EventKind,
        outcome: Outcome,
        detail: serde_json::Value,
    ) -> Result<(), PipelineError> {
        self.record(kind, (&c.who.name, &c.who.department), outcome, Some(&c.session.audit_id), &c.client, detail)
    }

    /// The sources `who` may operate: all for administrators, their
    /// department's for `source_operator`s, none for anyone else.
    pub(crate) fn operated_sources(&self, who: &Principal) -> Option<Vec<SourceRef>> {
        if who.admin {
            return Some(self.sources.clone());
        }
        if who.roles.iter().any(|r| r == "source_operator") {
            return Some(self.sources.iter().filter(|s| s.department == who.department).cloned().collect());
        }
        None
    }
}

/// Headers every console response carries: no caching, no framing, only
/// the console's own scripts and styles.
pub(crate) fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

/// An HTML response.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    secured((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// Binds the console's address (a clear error naming it).
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, PipelineError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| PipelineError::Config(format!("[console] listen on {listen}: {e}")))
}
