//! Planning with the login's identity: `session_user`, `current_user`,
//! `current_role` and `user` answer the logged-in user (registered per
//! statement, since the DataFusion session is shared by every connection),
//! and unaliased calls are named after the function as PostgreSQL does.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use lianqin_policies::Principal;

/// A plan, or (SQLSTATE, message).
pub(super) type Planned = Result<LogicalPlan, (&'static str, String)>;

/// Plans `stmt` in a copy of `ctx`'s state that answers `session_user`,
/// `current_user` (which the compatibility parser rewrites to
/// `session_user`), `current_role` and `user` with `who` — the session is
/// shared by every connection, so these are registered per statement.
pub(super) async fn plan_as(who: &Principal, ctx: &SessionContext, stmt: &SqlStatement) -> Planned {
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
pub(super) fn name_user_functions(stmt: &mut SqlStatement) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    #[test]
    fn user_functions_are_named() {
        let p = PostgresCompatibilityParser::new();
        let mut s = p.parse("SELECT current_user, session_user, user").unwrap().remove(0);
        name_user_functions(&mut s);
        assert_eq!(s.to_string(), "SELECT session_user AS session_user, session_user AS session_user_2, user AS user");
    }
}
