//! Catalog routing: a statement that reads only `pg_catalog` /
//! `information_schema` (psql's `\dt`, `\d t`, DBeaver's navigator) runs in
//! a per-user metadata session whose tables are *empty* tables with the
//! schemas of exactly the tables the user may read — so catalogs list
//! nothing else and can never return a row of data. Everything else runs in
//! the shared data session through `secure_plan`. A statement reading both
//! catalogs and libraries is refused with 0A000 (no session has both).

use std::sync::Arc;

use datafusion::datasource::empty::EmptyTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use lianqin_policies::Principal;

use super::Shared;
use super::handler::Ctx;
use super::rewrite::{Planned, plan_as};
use crate::PipelineError;
use crate::query::QueryEngine;

/// Where a statement runs.
pub(super) enum Target {
    /// The data session, through `secure_plan`.
    Data,
    /// The user's metadata-only session (empty tables).
    Meta(Arc<SessionContext>),
}

/// `Some(true)` if every table the plan reads is in `pg_catalog` or
/// `information_schema`, `Some(false)` if any is not, `None` if it reads none.
pub(super) fn catalog_only(plan: &LogicalPlan) -> Option<bool> {
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

pub(super) fn is_catalog_schema(schema: &str) -> bool {
    schema.eq_ignore_ascii_case("pg_catalog") || schema.eq_ignore_ascii_case("information_schema")
}

/// (schema, table) of every table a plan scans.
pub(super) fn scans_of(plan: &LogicalPlan) -> Vec<(Option<String>, String)> {
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
pub(super) fn relations_of(stmt: &SqlStatement) -> (Vec<String>, Vec<String>) {
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

pub(super) fn mixed_message(catalogs: &[String], data: &[String]) -> String {
    format!(
        "not supported: one query cannot read both the catalogs ({}) and library tables ({}); \
         query pg_catalog / information_schema and the libraries in separate statements",
        catalogs.join(", "),
        data.join(", ")
    )
}

impl Shared {
    /// The metadata-only session of `who`: `pg_catalog` and
    /// `information_schema` over *empty* tables with the schemas of the
    /// tables `who` may read — so catalog queries (psql `\d`, DBeaver's
    /// navigator) list exactly those, and can never read a row.
    pub(super) async fn meta_ctx(
        &self,
        who: &Principal,
        engine: &Arc<QueryEngine>,
    ) -> Result<Arc<SessionContext>, PipelineError> {
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
}

impl Ctx<'_> {
    /// Plans `stmt` in `who`'s metadata session: the session and plan
    /// with [`catalog_only`] of the plan — `Some(true)` when it reads only
    /// `pg_catalog` / `information_schema`, `None` when it reads no table at
    /// all (e.g. `SELECT current_database()`; used only if the data session
    /// cannot plan it), `Some(false)` when it mixes catalogs and libraries.
    /// `None` when the metadata session cannot plan it as a query.
    pub(super) async fn meta_plan(
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
    pub(super) async fn route(
        &self,
        who: &Principal,
        engine: &Arc<QueryEngine>,
        stmt: &SqlStatement,
    ) -> (Target, Planned) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    #[test]
    fn catalog_mixes_are_found() {
        let p = PostgresCompatibilityParser::new();
        let s = p.parse("WITH c AS (SELECT relname FROM pg_class) SELECT * FROM c, element").unwrap().remove(0);
        assert_eq!(relations_of(&s), (vec!["pg_catalog.pg_class".to_string()], vec!["element".to_string()]));
    }
}
