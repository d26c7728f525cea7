//! Statements of one connection, simple and extended protocol alike:
//! parse, route ([`super::routing`]), bind parameters, secure with
//! [`lianqin_policies::PolicyEngine::secure_plan`] under the connection's
//! principal (deny by default, fail closed), execute, and audit each query or
//! denial like `lianqin sql` (if the entry cannot be written the result is
//! withheld). Read-only: anything that is not a query is refused, for
//! administrators too.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use futures::Sink;
use lianqin_policies::Principal;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;

use super::auth::principal_of;
use super::rewrite::{Planned, plan_as};
use super::routing::Target;
use super::session_vars::{session_response, session_tag, show_param};
use super::{Connection, Shared, pg_error};
use crate::PipelineError;
use crate::query::{QueryEngine, columns_of, columns_of_plan, policy_detail, tables_of};

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
pub(super) struct QueryHandler {
    pub(super) shared: Arc<Shared>,
    pub(super) session: String,
    pub(super) peer: SocketAddr,
    pub(super) authenticated: Arc<OnceLock<String>>,
    pub(super) parser: Arc<WireParser>,
}

/// Parses and plans statements for the extended protocol.
pub(super) struct WireParser {
    pub(super) shared: Arc<Shared>,
    pub(super) session: String,
    pub(super) peer: SocketAddr,
    pub(super) authenticated: Arc<OnceLock<String>>,
    pub(super) sql: PostgresCompatibilityParser,
}

impl QueryHandler {
    pub(super) fn new(c: &Connection) -> Self {
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

pub(super) fn batches_response(
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
pub(super) fn param_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut v: Vec<(u32, Option<DataType>)> =
        types.into_iter().map(|(k, t)| (k.trim_start_matches('$').parse().unwrap_or(u32::MAX), t)).collect();
    v.sort_by_key(|(k, _)| *k);
    Ok(v.into_iter().map(|(_, t)| t).collect())
}

pub(super) fn wire_types(types: &[Option<DataType>]) -> Vec<Type> {
    types.iter().map(|t| t.as_ref().and_then(|t| into_pg_type(t).ok()).unwrap_or(Type::UNKNOWN)).collect()
}

/// One statement's view of its connection: the shared server state, the
/// session id, the client address (for the audit entries) and the policy
/// in force when the statement arrived — the one that secures it and whose
/// version its audit entry names, even if a reload lands in between.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Shared,
    pub(super) session: &'a str,
    pub(super) peer: SocketAddr,
    pub(super) policy: Arc<lianqin_policies::PolicyEngine>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(shared: &'a Shared, session: &'a str, peer: SocketAddr) -> Ctx<'a> {
        Ctx { shared, session, peer, policy: shared.policy() }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
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
        policy_detail(&mut ev, &self.policy, who, &self.shared.catalog, &tables, &columns);
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
    pub(super) async fn plan(&self, who: &Principal, engine: &QueryEngine, stmt: &SqlStatement) -> Planned {
        plan_as(who, engine.context(), stmt).await
    }

    /// Applies the policy; the error is (denied?, message).
    pub(super) fn secure(&self, who: &Principal, plan: LogicalPlan) -> Result<LogicalPlan, (bool, String)> {
        let catalog = &self.shared.catalog;
        let secured = self
            .policy
            .secure_plan(who, plan, &|t| columns_of(catalog, t))
            .map_err(|e| (true, format!("permission denied: {e}")))?;
        if !lianqin_policies::is_query(&secured) {
            return Err((true, "permission denied: the Postgres interface is read-only (queries only)".into()));
        }
        Ok(secured)
    }

    /// Plans, binds, secures, runs and audits one query.
    pub(super) async fn run(
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
        let ctx = Ctx::new(&self.shared, &self.session, self.peer);
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
        let ctx = Ctx::new(&self.shared, &self.session, self.peer);
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
        let ctx = Ctx::new(&self.shared, &self.session, self.peer);
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
