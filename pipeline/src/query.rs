//! Analyst SQL over the libraries (DataFusion over the Delta tables).
//!
//! Table names:
//! * `element`, `matter`, `matter_event` — the current state: per id, each
//!   column's newest non-null value across every department that reported
//!   it, hiding ids whose newest version is a tombstone; plus `sources`
//!   (the source ids that contributed) and `versions`.
//! * `element_history`, `matter_history`, `matter_event_history` — every
//!   version ever stored (§7.4.3).
//! * `quarantine` — records that could not be normalized, with reasons.
//! * `raw_<source>` — every record of a source as received.
//! * `codes` — all code tables (`code_table`, `code`, `zh`, `en`).
//! * `matter_recheck` — second callbacks drawn and their results ([`crate::recheck`]).
//! * `matter_confirmation` — signed record confirmations and whether each is of the current version ([`crate::confirm`]).
//! * `kpi_matter_facts`, `kpi_matter`, `kpi_overdue_callback` — station
//!   supervision KPIs ([`crate::kpi`]).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;

use crate::PipelineError;
use crate::library::LibraryStore;
use crate::schema::Catalog;

/// Output formats of `lianqin sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Who is querying, for the audit trail.
#[derive(Debug, Clone)]
pub struct Querier {
    /// User name.
    pub user: String,
    /// Department code.
    pub department: String,
    /// Session id.
    pub session: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
}

/// A query session over one data dir.
pub struct QueryEngine {
    ctx: SessionContext,
    tables: Vec<String>,
    audit: Option<(crate::audit::Audit, Querier)>,
    policy: Option<(Arc<lianqin_policies::PolicyEngine>, lianqin_policies::Principal)>,
    catalog: Catalog,
}

/// Column metadata (sensitivity, semantic) of a table for the policy engine.
pub fn columns_of(catalog: &Catalog, table: &str) -> Vec<lianqin_policies::ColumnMeta> {
    use lianqin_policies::ColumnMeta;
    let current = table.ends_with("_current");
    let base = table.trim_end_matches("_history").trim_end_matches("_current");
    if let Ok(lib) = catalog.library(base) {
        let mut cols: Vec<ColumnMeta> = lib
            .all_columns(&catalog.provenance)
            .map(|c| {
                let label = format!("{:?}", c.sensitivity).to_lowercase();
                // By label (schemas/libraries), never by column name.
                ColumnMeta::new(&c.name, &label, c.personal.as_deref())
            })
            .collect();
        if current {
            // Derived from `source_id` (its label) and a count.
            let source = cols.iter().find(|c| c.name == "source_id").cloned();
            cols.push(match source {
                Some(s) => ColumnMeta { name: "sources".into(), ..s },
                None => ColumnMeta::new("sources", "internal", None),
            });
            cols.push(ColumnMeta::new("versions", "public", None));
        } else {
            cols.push(ColumnMeta::new("row_seq", "internal", None));
        }
        return cols;
    }
    if table.starts_with("raw_") {
        let sens = |n: &str| match n {
            "payload" | "error" => "sensitive",
            "department" => "public",
            _ => "internal",
        };
        return Catalog::raw_schema()
            .fields()
            .iter()
            .map(|f| ColumnMeta::new(f.name(), sens(f.name()), None))
            .collect();
    }
    if table == crate::audit::table::TABLE {
        return crate::audit::table::column_meta();
    }
    if table == crate::joint::TABLE {
        // The report's own labels where it has them (schemas/libraries).
        let matter = columns_of(catalog, "matter_history");
        return crate::joint::column_labels()
            .into_iter()
            .map(|(n, label)| match matter.iter().find(|m| m.name == n) {
                Some(m) => m.clone(),
                None => ColumnMeta::new(n, label, None),
            })
            .collect();
    }
    if let Some(e) = crate::persons::Entity::of_table(table) {
        let labels =
            if table == e.link_table { crate::persons::link_labels(e) } else { crate::persons::review_labels(e) };
        return labels.into_iter().map(|(n, l)| ColumnMeta::new(n, l, None)).collect();
    }
    if table == crate::confirm::TABLE || table == crate::confirm::LOG_TABLE {
        return crate::confirm::column_labels().into_iter().map(|(n, l)| ColumnMeta::new(n, l, None)).collect();
    }
    if table == crate::recheck::TABLE {
        return crate::recheck::column_labels().into_iter().map(|(n, l)| ColumnMeta::new(n, l, None)).collect();
    }
    if table == "codes" {
        return ["code_table", "code", "zh", "en"].iter().map(|n| ColumnMeta::new(n, "public", None)).collect();
    }
    Vec::new()
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("tables", &self.tables).finish()
    }
}

/// SQL of the current-state view of a library.
pub fn current_view_sql(catalog: &Catalog, library: &str) -> Result<String, PipelineError> {
    let lib = catalog.library(library)?;
    let order = "ORDER BY ingested_at, row_seq";
    let mut cols = Vec::new();
    for c in lib.all_columns(&catalog.provenance) {
        if c.name == lib.key {
            continue;
        }
        if c.name == "deleted" {
            cols.push(format!("last_value(deleted {order}) AS deleted"));
        } else {
            cols.push(format!("last_value(\"{n}\" {order}) FILTER (WHERE \"{n}\" IS NOT NULL) AS \"{n}\"", n = c.name));
        }
    }
    cols.push("array_to_string(array_sort(array_agg(DISTINCT source_id)), ',') AS sources".to_string());
    cols.push("count(*) AS versions".to_string());
    let deleted_filter = if lib.column("deleted").is_some() { "WHERE NOT deleted" } else { "" };
    Ok(format!(
        "SELECT * FROM (SELECT \"{key}\", {cols} FROM {library}_history GROUP BY \"{key}\") {deleted_filter}",
        key = lib.key,
        cols = cols.join(", "),
    ))
}

impl QueryEngine {
    /// Opens a session over the store's tables.
    pub async fn new(store: &LibraryStore, catalog: &Catalog) -> Result<Self, PipelineError> {
        let ctx = SessionContext::new();
        crate::udf::register(&ctx, catalog);
        crate::udf::forbid_oracles(&ctx);
        // Legacy clear ids are tokenized with the data dir's key.
        let key = match store.root().parent() {
            Some(d) => crate::mapping::personal::KeyScope::DataDir(d.to_path_buf()),
            None => crate::mapping::personal::KeyScope::Process,
        };
        let mut tables = Vec::new();
        let mut matter_history = None;
        let mut element_history = None;
        let mut current = Vec::new();
        let mut names: Vec<String> = ["element", "matter", "matter_event", "quarantine"].map(String::from).to_vec();
        names.extend(store.raw_tables_on_disk());
        for name in names {
            let Some(table) = store.table(&name).await else { continue };
            table.update_datafusion_session(&ctx.state()).map_err(|e| PipelineError::Query(format!("{name}: {e}")))?;
            let provider = table.table_provider().await.map_err(|e| PipelineError::Query(format!("{name}: {e}")))?;
            let sql_name =
                if name == "quarantine" || name.starts_with("raw_") { name.clone() } else { format!("{name}_history") };
            // Sealed columns opened, then rows written before personal data
            // was classified read through the new rules.
            let provider = crate::sealed::open_table(store.keys(), catalog, &name, provider);
            let provider = crate::legacy::history_view(&name, &sql_name, provider, &key)?;
            if name == "matter" {
                matter_history = Some(Arc::clone(&provider));
            }
            if name == "element" {
                element_history = Some(Arc::clone(&provider));
            }
            if crate::current::SNAPSHOT_LIBRARIES.contains(&name.as_str()) {
                let files: Vec<String> = table
                    .get_file_uris()
                    .map_err(|e| PipelineError::Query(format!("{name}: {e}")))?
                    .filter_map(|u| u.rsplit('/').next().map(str::to_string))
                    .collect();
                let dir = store.root().parent().map(|d| crate::current::snapshot_dir(d, &name));
                let t = crate::current::CurrentTable::new(
                    catalog,
                    &name,
                    Arc::clone(&provider),
                    store.root().join(&name),
                    files,
                    dir,
                    store.keys(),
                )
                .await?;
                current.push((name.clone(), Arc::new(t)));
            }
            ctx.register_table(sql_name.as_str(), provider)
                .map_err(|e| PipelineError::Query(format!("{sql_name}: {e}")))?;
            tables.push(sql_name);
        }
        let matter_current = current.iter().find(|(l, _)| l == "matter").map(|(_, t)| Arc::clone(t));
        let element_current = current.iter().find(|(l, _)| l == "element").map(|(_, t)| Arc::clone(t));
        for (lib, t) in current {
            let name = crate::current::table_name(&lib);
            ctx.register_table(name.as_str(), t).map_err(|e| PipelineError::Query(format!("{name}: {e}")))?;
            tables.push(name);
        }
        for lib in ["element", "matter", "matter_event"] {
            if !tables.contains(&format!("{lib}_history")) {
                continue;
            }
            let sql = if tables.contains(&crate::current::table_name(lib)) {
                let deleted = if catalog.library(lib)?.column("deleted").is_some() { " WHERE NOT deleted" } else { "" };
                format!("CREATE VIEW {lib} AS SELECT * FROM {}{deleted}", crate::current::table_name(lib))
            } else {
                format!("CREATE VIEW {lib} AS {}", current_view_sql(catalog, lib)?)
            };
            ctx.sql(&sql).await.map_err(|e| PipelineError::Query(format!("view {lib}: {e}")))?;
            tables.push(lib.to_string());
        }
        // Joint matters: grouped over every report in a session of their own
        // (no policy), then filtered by the caller's policy like any table.
        if let Some(history) = matter_history {
            let inner = SessionContext::new();
            inner.register_table("matter_history", history).map_err(|e| PipelineError::Query(e.to_string()))?;
            let view = match matter_current {
                Some(t) => {
                    inner.register_table("matter_current", t).map_err(|e| PipelineError::Query(e.to_string()))?;
                    "SELECT * FROM matter_current WHERE NOT deleted".to_string()
                }
                None => current_view_sql(catalog, "matter")?,
            };
            inner
                .sql(&format!("CREATE VIEW matter AS {view}"))
                .await
                .map_err(|e| PipelineError::Query(format!("view matter: {e}")))?;
            let data_dir = store.root().parent().map(Path::to_path_buf);
            let table = crate::joint::MatterGroupTable::new(inner, data_dir).await?;
            ctx.register_table(crate::joint::TABLE, Arc::new(table))
                .map_err(|e| PipelineError::Query(format!("{}: {e}", crate::joint::TABLE)))?;
            tables.push(crate::joint::TABLE.to_string());
        }
        // Persons: element resolution over every person element in a
        // session of its own (no policy), then filtered by the caller's
        // policy like any `element*` table.
        if let Some(history) = element_history {
            let inner = SessionContext::new();
            inner.register_table("element_history", history).map_err(|e| PipelineError::Query(e.to_string()))?;
            let view = match element_current {
                Some(t) => {
                    inner.register_table("element_current", t).map_err(|e| PipelineError::Query(e.to_string()))?;
                    "SELECT * FROM element_current WHERE NOT deleted".to_string()
                }
                None => current_view_sql(catalog, "element")?,
            };
            inner
                .sql(&format!("CREATE VIEW element AS {view}"))
                .await
                .map_err(|e| PipelineError::Query(format!("view element: {e}")))?;
            crate::persons::register(&ctx, inner, store.root().parent().map(Path::to_path_buf), &mut tables)?;
        }
        // Second callbacks (the journal of the data dir; empty without one).
        if tables.iter().any(|t| t == "matter")
            && let Some(data_dir) = store.root().parent()
        {
            let batch = crate::recheck::table_batch(&crate::recheck::load(data_dir)?)?;
            ctx.register_batch(crate::recheck::TABLE, batch)
                .map_err(|e| PipelineError::Query(format!("{}: {e}", crate::recheck::TABLE)))?;
            tables.push(crate::recheck::TABLE.to_string());
        }
        // Record confirmations (效力互认; the journal of the data dir).
        if tables.iter().any(|t| t == "matter")
            && let Some(data_dir) = store.root().parent()
        {
            let batch = crate::confirm::table_batch(&crate::confirm::load(data_dir)?)?;
            ctx.register_batch(crate::confirm::LOG_TABLE, batch)
                .map_err(|e| PipelineError::Query(format!("{}: {e}", crate::confirm::LOG_TABLE)))?;
            ctx.sql(&crate::confirm::view_sql())
                .await
                .map_err(|e| PipelineError::Query(format!("{}: {e}", crate::confirm::TABLE)))?;
            tables.push(crate::confirm::LOG_TABLE.to_string());
            tables.push(crate::confirm::TABLE.to_string());
        }
        crate::kpi::register(&ctx, &mut tables).await?;
        ctx.register_batch("codes", codes_batch(catalog)?).map_err(|e| PipelineError::Query(format!("codes: {e}")))?;
        tables.push("codes".into());
        tables.sort();
        Ok(QueryEngine { ctx, tables, audit: None, policy: None, catalog: catalog.clone() })
    }

    /// Enforces `who`'s cross-department permissions (§7.3.5) on every
    /// query of this session: each table scan — in subqueries, views and
    /// joins too — is rewritten with the user's row filter and column masks
    /// before anything runs; a denied table refuses the query.
    pub fn with_policy(
        mut self,
        policy: Arc<lianqin_policies::PolicyEngine>,
        who: lianqin_policies::Principal,
    ) -> Self {
        policy.mask_functions().register(&self.ctx);
        self.policy = Some((policy, who));
        self
    }

    /// Records every query of this session in the audit trail, and adds
    /// the `audit` table ([`crate::audit::table`]; auditor role only).
    pub fn with_audit(mut self, audit: crate::audit::Audit, who: Querier) -> Self {
        self.attach_audit_table(&audit);
        self.audit = Some((audit, who));
        self
    }

    /// Adds the `audit` table ([`crate::audit::table`]) over the streams of
    /// `audit`'s data dir, without recording this session's queries (for
    /// embedders that audit themselves, such as [`crate::server`]). Who
    /// may read it is up to the policy: only the `auditor` role.
    pub fn attach_audit_table(&mut self, audit: &crate::audit::Audit) {
        let table = Arc::new(crate::audit::table::AuditTable::new(audit.clone()));
        if self.ctx.register_table(crate::audit::table::TABLE, table).is_ok() {
            self.tables.push(crate::audit::table::TABLE.to_string());
            self.tables.sort();
        }
    }

    /// The department of the session's user (None: unrestricted).
    pub fn department(&self) -> Option<&str> {
        self.policy.as_ref().map(|(_, who)| who.department.as_str())
    }

    /// Table and view names.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// The DataFusion session (for embedding).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one statement and collects the result. With an audit trail
    /// attached, the query is recorded (user, SQL, tables, columns, rows,
    /// masks and row filters applied, policy rule and version, duration,
    /// outcome); if the entry cannot be written the result is withheld.
    /// Reading the `audit` table is recorded as an `audit_read`.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, PipelineError> {
        let started = std::time::Instant::now();
        let mut touched = Vec::new();
        let mut columns = Vec::new();
        let mut denied = false;
        let res = async {
            let df = match &self.policy {
                None => {
                    // Plan first: DDL (CREATE TABLE … AS) would run inside `sql()`.
                    let plan = self
                        .ctx
                        .state()
                        .create_logical_plan(query)
                        .await
                        .map_err(|e| PipelineError::Query(e.to_string()))?;
                    touched = tables_of(&plan);
                    columns = columns_of_plan(&plan, &touched);
                    if touched.iter().any(|t| t == crate::audit::table::TABLE) {
                        denied = true;
                        return Err(PipelineError::Query(
                            "permission denied: the audit table is readable only by the auditor role (lianqin sql --as <auditor>)".into(),
                        ));
                    }
                    self.ctx.execute_logical_plan(plan).await.map_err(|e| PipelineError::Query(e.to_string()))?
                }
                Some((policy, who)) => {
                    let plan = self
                        .ctx
                        .state()
                        .create_logical_plan(query)
                        .await
                        .map_err(|e| PipelineError::Query(e.to_string()))?;
                    touched = tables_of(&plan);
                    columns = columns_of_plan(&plan, &touched);
                    // The audit trail is only ever SELECTed: never copied
                    // out by DDL/COPY (which administrators may run).
                    if touched.iter().any(|t| t == crate::audit::table::TABLE) && !lianqin_policies::is_query(&plan) {
                        denied = true;
                        return Err(PipelineError::Query("permission denied: the audit table can only be read with SELECT".into()));
                    }
                    let catalog = &self.catalog;
                    let plan = policy.secure_plan(who, plan, &|t| columns_of(catalog, t)).map_err(|e| {
                        denied = true;
                        PipelineError::Query(format!("permission denied: {e}"))
                    })?;
                    // DDL/DML (administrators) runs here.
                    self.ctx.execute_logical_plan(plan).await.map_err(|e| PipelineError::Query(e.to_string()))?
                }
            };
            df.collect().await.map_err(|e| PipelineError::Query(e.to_string()))
        }
        .await;
        if let Some((audit, who)) = &self.audit {
            use lianqin_audit::{AuditEvent, EventKind, Outcome};
            let outcome = if res.is_ok() {
                Outcome::Success
            } else if denied {
                Outcome::Deny
            } else {
                Outcome::Failure
            };
            let reads_audit = touched.iter().any(|t| t == crate::audit::table::TABLE);
            let kind = if denied {
                EventKind::Denial
            } else if reads_audit {
                EventKind::AuditRead
            } else {
                EventKind::Query
            };
            let mut ev = AuditEvent::new(kind, &who.user, &who.department, outcome);
            if let Some((policy, principal)) = &self.policy {
                policy_detail(&mut ev, policy, principal, &self.catalog, &touched, &columns);
            }
            ev.session = who.session.clone();
            ev.client_addr = who.client_addr.clone();
            ev.sql = Some(query.to_string());
            ev.tables = touched;
            ev.columns = columns;
            ev.duration_ms = Some(started.elapsed().as_millis() as u64);
            match &res {
                Ok(b) => ev.rows = Some(b.iter().map(|b| b.num_rows() as u64).sum()),
                Err(e) => ev.detail = serde_json::json!({ "error": e.to_string() }),
            }
            audit.record(ev)?;
        }
        res
    }

    /// Runs a query returning one integer (e.g. `SELECT count(*) ...`).
    pub async fn scalar_i64(&self, query: &str) -> Result<i64, PipelineError> {
        let batches = self.sql(query).await?;
        let b = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| PipelineError::Query(format!("no rows from {query}")))?;
        let col =
            arrow::compute::cast(b.column(0), &DataType::Int64).map_err(|e| PipelineError::Query(e.to_string()))?;
        let a = col
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| PipelineError::Query("not an integer".into()))?;
        Ok(if a.is_null(0) { 0 } else { a.value(0) })
    }
}

fn codes_batch(catalog: &Catalog) -> Result<RecordBatch, PipelineError> {
    let mut t = StringBuilder::new();
    let mut c = StringBuilder::new();
    let mut zh = StringBuilder::new();
    let mut en = StringBuilder::new();
    for table in catalog.codes.values() {
        for code in &table.codes {
            t.append_value(&table.name);
            c.append_value(&code.code);
            zh.append_value(&code.zh);
            en.append_value(&code.en);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("code_table", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("zh", DataType::Utf8, false),
        Field::new("en", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(t.finish()), Arc::new(c.finish()), Arc::new(zh.finish()), Arc::new(en.finish())],
    )
    .map_err(|e| PipelineError::Internal(e.to_string()))
}

/// Formats batches for the terminal / files.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String, PipelineError> {
    match format {
        OutputFormat::Table => datafusion::arrow::util::pretty::pretty_format_batches(batches)
            .map(|d| d.to_string())
            .map_err(|e| PipelineError::Query(e.to_string())),
        OutputFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(b).map_err(|e| PipelineError::Query(e.to_string()))?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).to_string())
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b).map_err(|e| PipelineError::Query(e.to_string()))?;
                }
                w.finish().map_err(|e| PipelineError::Query(e.to_string()))?;
            }
            Ok(String::from_utf8_lossy(&buf).to_string())
        }
    }
}

/// Fills a query's audit entry with what the policy did: the policy
/// version, the matched `policy.csv` rules (or the reason a table was
/// denied), the row filter per table and every mask on a column the query
/// touched. Shared by `lianqin sql` and the Postgres wire server, so both
/// leave the same entry for the same statement.
pub(crate) fn policy_detail(
    ev: &mut lianqin_audit::AuditEvent,
    policy: &lianqin_policies::PolicyEngine,
    principal: &lianqin_policies::Principal,
    catalog: &Catalog,
    touched: &[String],
    columns: &[String],
) {
    ev.rule_version = Some(policy.version());
    let mut rules = Vec::new();
    // Catalog tables (pg_catalog, information_schema) are not governed by
    // policy.csv; they list only what the user may read.
    for t in touched.iter().filter(|t| !t.starts_with("pg_") && !t.starts_with("information_schema")) {
        let d = policy.decide_sync(principal, t, &columns_of(catalog, t));
        if !d.allowed {
            rules.push(format!("{t}: {}", d.reason));
            continue;
        }
        for r in d.matched_rules.iter().filter(|r| r.starts_with("policy.csv:")) {
            rules.push(format!("{t}: {r}"));
        }
        if let Some(f) = &d.row_filter {
            ev.filters.push(format!("{t}: {f}"));
        }
        for c in columns.iter().filter_map(|c| c.strip_prefix(&format!("{t}."))) {
            match d.columns.get(c) {
                Some(lianqin_policies::ColumnAction::Show) => {}
                Some(a) => ev.masks.push(format!("{t}.{c}:{a}")),
                None => ev.masks.push(format!("{t}.{c}:deny")),
            }
        }
    }
    ev.rule = Some(if rules.is_empty() { "policies/policy.csv".into() } else { rules.join("; ") });
}

/// Columns of `tables` that a plan references (in projections, filters,
/// joins, aggregates, sorts — also inside subqueries and views), as
/// `table.column`: what the user's query touches, before any policy rewrite.
pub fn columns_of_plan(plan: &datafusion::logical_expr::LogicalPlan, tables: &[String]) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut out = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|n| {
        for e in n.expressions() {
            for c in e.column_refs() {
                if let Some(r) = &c.relation
                    && tables.iter().any(|t| t == r.table())
                {
                    out.insert(format!("{}.{}", r.table(), c.name));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.into_iter().collect()
}

/// Names of the tables a plan reads (including inside subqueries and views).
pub fn tables_of(plan: &datafusion::logical_expr::LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut out = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|n| {
        if let LogicalPlan::TableScan(scan) = n {
            out.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.into_iter().collect()
}
