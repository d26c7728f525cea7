//! Plan rewrite: every `TableScan` (also inside subqueries, CTEs, joins, unions
//! and views) becomes `Projection(masked columns) ← Filter(row filter) ← scan`.
//!
//! Run it on the plan from `SessionState::create_logical_plan` (before the
//! analyzer and optimizer): scans then carry no pushed-down filters. The row
//! filter is applied inside the scan (`SecuredTable`), so the optimizer cannot
//! merge it with user predicates that might run on hidden rows.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue, TableReference};
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::{DefaultTableSource, provider_as_source};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ExplainOption, Expr, LogicalPlan, LogicalPlanBuilder, Statement, TableScan, TableScanBuilder, Union,
    lit,
};

use crate::mask::{MaskFunctions, TOKEN_FN};
use crate::secured::SecuredTable;
use crate::{ColumnAction, PolicyError, TableDecision};

/// Maximum nesting of views inlined by `enforce`.
const MAX_VIEW_DEPTH: usize = 32;

/// Whether `plan` is a read-only query (possibly under EXPLAIN).
pub fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
    )
}

/// Refuse statements a user may not run.
///
/// Non-admins may only run queries (and EXPLAIN of queries): DDL (CREATE
/// [EXTERNAL] TABLE/VIEW, DROP, ...), DML (INSERT/UPDATE/DELETE), COPY, SET and
/// other session statements, PREPARE/EXECUTE and DESCRIBE are refused. Admins
/// may run anything (their queries are still rewritten by [`enforce`]).
pub fn check_plan(plan: &LogicalPlan, admin: bool) -> Result<(), PolicyError> {
    if admin {
        return Ok(());
    }
    let mut bad: Option<String> = None;
    let r = plan.apply_with_subqueries(|n| {
        let what = match n {
            LogicalPlan::Ddl(d) => Some(format!("DDL ({})", d.name())),
            LogicalPlan::Dml(d) => Some(format!("DML ({} {})", d.op, d.table_name)),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Statement(Statement::SetVariable(_)) => Some("SET".to_string()),
            LogicalPlan::Statement(Statement::ResetVariable(_)) => Some("RESET".to_string()),
            LogicalPlan::Statement(s) => Some(format!("statement {}", s.name())),
            LogicalPlan::DescribeTable(_) => Some("DESCRIBE".to_string()),
            _ => None,
        };
        if let Some(w) = what {
            bad = Some(w);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = r {
        return Err(PolicyError::Enforce(e.to_string()));
    }
    match bad {
        Some(w) => Err(PolicyError::StatementDenied(format!("{w} is reserved to administrators"))),
        None => Ok(()),
    }
}

/// Refuse the EXPLAIN forms that would show what the row filter hides.
///
/// A non-administrator may run a plain `EXPLAIN` (the rewritten plan, no
/// numbers); `EXPLAIN ANALYZE` (its metrics count the rows each scan read
/// before the row filter), `EXPLAIN VERBOSE` (it prints the physical plan
/// with statistics: the whole table's row count and sizes) and `EXPLAIN`
/// with statistics switched on are refused. Administrators may run all of
/// them.
pub fn check_explain(plan: &LogicalPlan, admin: bool) -> Result<(), PolicyError> {
    if admin {
        return Ok(());
    }
    let mut bad: Option<&'static str> = None;
    plan.apply_with_subqueries(|n| {
        bad = match n {
            LogicalPlan::Analyze(_) => Some("EXPLAIN ANALYZE (its metrics count rows before the row filter)"),
            LogicalPlan::Explain(ex) if ex.verbose => {
                Some("EXPLAIN VERBOSE (it shows table statistics from before the row filter)")
            }
            LogicalPlan::Explain(ex) if ex.show_statistics == Some(true) => {
                Some("EXPLAIN with statistics (they count rows before the row filter)")
            }
            _ => None,
        };
        Ok(if bad.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })
    .map_err(|e| PolicyError::Enforce(e.to_string()))?;
    match bad {
        Some(w) => Err(PolicyError::StatementDenied(format!("{w} is reserved to administrators"))),
        None => Ok(()),
    }
}

/// Check a parsed SQL statement (before planning): refuses DDL, DML, COPY,
/// CREATE EXTERNAL TABLE, SET, ... for non-admins. Equivalent to
/// [`check_plan`] but usable without a session.
pub fn check_statement(stmt: &datafusion::sql::parser::Statement, admin: bool) -> Result<(), PolicyError> {
    use datafusion::sql::parser::Statement as S;
    use datafusion::sql::sqlparser::ast::Statement as Q;
    if admin {
        return Ok(());
    }
    let inner_ok = |q: &Q| matches!(q, Q::Query(_));
    match stmt {
        S::Statement(q) if inner_ok(q) => Ok(()),
        S::Explain(e) => match e.statement.as_ref() {
            S::Statement(q) if inner_ok(q) => Ok(()),
            _ => Err(PolicyError::StatementDenied("EXPLAIN of a non-query is reserved to administrators".into())),
        },
        S::CreateExternalTable(_) => {
            Err(PolicyError::StatementDenied("CREATE EXTERNAL TABLE is reserved to administrators".into()))
        }
        S::CopyTo(_) => Err(PolicyError::StatementDenied("COPY is reserved to administrators".into())),
        S::Statement(q) => {
            let text = q.to_string();
            let word = text.split_whitespace().next().unwrap_or("statement").to_uppercase();
            Err(PolicyError::StatementDenied(format!("{word} is reserved to administrators")))
        }
        _ => Err(PolicyError::StatementDenied("statement kind is reserved to administrators".into())),
    }
}

/// Normalised table name passed to `decide`: the bare name for the default
/// catalog/schema (`datafusion.public`), `information_schema.<t>` for the
/// information schema, otherwise the full dotted reference.
pub fn table_key(r: &TableReference) -> String {
    match r {
        TableReference::Bare { table } => table.to_string(),
        TableReference::Partial { schema, table } => match schema.as_ref() {
            "public" => table.to_string(),
            s => format!("{s}.{table}"),
        },
        TableReference::Full { catalog, schema, table } => match (catalog.as_ref(), schema.as_ref()) {
            ("datafusion", "public") => table.to_string(),
            ("datafusion", "information_schema") => format!("information_schema.{table}"),
            (c, s) => format!("{c}.{s}.{table}"),
        },
    }
}

fn is_cte_work_table(scan: &TableScan) -> bool {
    scan.source.downcast_ref::<DefaultTableSource>().is_some_and(|s| s.table_provider.is::<CteWorkTable>())
}

fn refuse_token_calls(plan: &LogicalPlan) -> Result<(), PolicyError> {
    let mut found = false;
    plan.apply_with_subqueries(|n| {
        n.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x
                    && f.func.name() == TOKEN_FN
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    if found {
        return Err(PolicyError::StatementDenied(format!(
            "{TOKEN_FN}() may not be called in queries (it would reveal which identifiers exist)"
        )));
    }
    Ok(())
}

/// Rewrite `plan` so that every table it reads is filtered and masked as
/// `decide(table)` says; a table `decide` denies makes the whole query fail
/// with "permission denied for table X".
///
/// * Every `TableScan` — also inside scalar/EXISTS/IN subqueries, CTEs, joins,
///   unions and views — becomes `Projection(masked columns, same names and
///   types) ← Filter(row filter) ← TableScan`, so predicates, functions and
///   aggregates above only ever see masked values.
/// * Scan columns missing from `decision.columns` read as NULL (deny by default).
/// * `EXPLAIN` is rebuilt around the rewritten plan (the text shows only it).
/// * `information_schema` tables are all-or-nothing: passed through unchanged
///   when `decide` allows them (admins), refused otherwise.
/// * Calls of the token function in the query are refused.
/// * DDL/DML/COPY/SET plans are refused: call [`check_plan`] first and let
///   admin statements bypass `enforce`.
///
/// `decide` is called once per table reference while rewriting (never per row).
pub fn enforce(
    plan: LogicalPlan,
    decide: &dyn Fn(&str) -> TableDecision,
    masks: &MaskFunctions,
) -> Result<LogicalPlan, PolicyError> {
    refuse_token_calls(&plan)?;
    match plan {
        LogicalPlan::Explain(ex) => {
            let inner = Arc::unwrap_or_clone(ex.plan);
            let secured = enforce_query(inner, decide, masks, 0)?;
            let opt = ExplainOption::default()
                .with_verbose(ex.verbose)
                .with_format(ex.explain_format)
                // Statistics only when the statement asks (never from the
                // session default): they count the rows of the whole table.
                .with_show_statistics(Some(ex.show_statistics.unwrap_or(false)));
            Ok(LogicalPlanBuilder::from(secured).explain_option_format(opt)?.build()?)
        }
        other => enforce_query(other, decide, masks, 0),
    }
}

fn enforce_query(
    plan: LogicalPlan,
    decide: &dyn Fn(&str) -> TableDecision,
    masks: &MaskFunctions,
    depth: usize,
) -> Result<LogicalPlan, PolicyError> {
    if depth > MAX_VIEW_DEPTH {
        return Err(PolicyError::Enforce("views nested too deeply".into()));
    }
    let mut err: Option<PolicyError> = None;
    let out = plan.transform_up_with_subqueries(|node| {
        if err.is_some() {
            return Ok(Transformed::no(node));
        }
        match node {
            LogicalPlan::TableScan(scan) => match secure_scan(scan, decide, masks, depth) {
                Ok(p) => Ok(Transformed::yes(p)),
                Err(e) => {
                    err = Some(e);
                    Ok(Transformed::no(LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(datafusion::common::DFSchema::empty()),
                    })))
                }
            },
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Explain(_) => {
                err = Some(PolicyError::StatementDenied(
                    "only queries can be enforced (check_plan first; admin statements bypass enforce)".into(),
                ));
                Ok(Transformed::no(node))
            }
            // Masking can make non-nullable columns nullable: recompute the
            // schema of every node above a rewritten scan.
            LogicalPlan::Union(u) => {
                let inputs = u.inputs;
                Ok(Transformed::yes(LogicalPlan::Union(Union::try_new(inputs)?)))
            }
            other => Ok(Transformed::yes(other.recompute_schema()?)),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(out?.data)
}

fn secure_scan(
    scan: TableScan,
    decide: &dyn Fn(&str) -> TableDecision,
    masks: &MaskFunctions,
    depth: usize,
) -> Result<LogicalPlan, PolicyError> {
    if is_cte_work_table(&scan) {
        // The recursive CTE's work table only holds rows of already-enforced terms.
        return Ok(LogicalPlan::TableScan(scan));
    }
    let name = table_key(&scan.table_name);
    // A view not yet inlined: inline and enforce its definition (invoker's rights).
    if let Some(view) = scan.source.get_logical_plan() {
        let view = view.into_owned();
        let secured = enforce_query(view, decide, masks, depth + 1)?;
        let b = LogicalPlanBuilder::from(secured);
        let b = match &scan.projection {
            Some(proj) => {
                let exprs = {
                    let s = b.schema();
                    proj.iter().map(|i| Expr::Column(Column::from(s.qualified_field(*i)))).collect::<Vec<_>>()
                };
                b.project(exprs)?
            }
            None => b,
        };
        return Ok(b.alias(scan.table_name.clone())?.build()?);
    }
    let decision = decide(&name);
    if !decision.allowed {
        return Err(PolicyError::TableDenied { table: name, reason: decision.reason });
    }
    if name.starts_with("information_schema.") {
        return Ok(LogicalPlan::TableScan(scan));
    }
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        return Err(PolicyError::Enforce(format!(
            "scan of {name} already has pushed-down filters or a limit; enforce must run before optimisation"
        )));
    }
    let output_schema: DFSchemaRef = Arc::clone(&scan.projected_schema);
    let stored_schema = Arc::new(DFSchema::try_from(scan.source.schema())?);
    let source = match decision.row_filter {
        None => Arc::clone(&scan.source),
        Some(f) => {
            // The row filter goes inside the scan (see `secured`): a logical
            // Filter would be merged with user predicates by the optimizer.
            let Some(provider) =
                scan.source.downcast_ref::<DefaultTableSource>().map(|s| Arc::clone(&s.table_provider))
            else {
                return Err(PolicyError::Enforce(format!(
                    "table {name} is not backed by a table provider; cannot apply its row filter"
                )));
            };
            let schema = DFSchema::try_from(provider.schema())?;
            let f = retype_literals(f, &Arc::new(schema))?;
            provider_as_source(Arc::new(SecuredTable { inner: provider, row_filter: f }))
        }
    };
    let full = TableScanBuilder::new(scan.table_name.clone(), source).build()?;
    let b = LogicalPlanBuilder::from(LogicalPlan::TableScan(full));
    let mut exprs = Vec::with_capacity(output_schema.fields().len());
    for (q, field) in output_schema.iter() {
        let column = Column::new(q.cloned(), field.name());
        let action = decision.columns.get(field.name()).copied().unwrap_or(ColumnAction::Deny);
        let is_string = matches!(
            field.data_type(),
            arrow::datatypes::DataType::Utf8
                | arrow::datatypes::DataType::LargeUtf8
                | arrow::datatypes::DataType::Utf8View
        );
        let null = || -> Result<Expr, PolicyError> { Ok(lit(ScalarValue::try_new_null(field.data_type())?)) };
        let condition = decision.column_conditions.get(field.name());
        let e = match action {
            ColumnAction::Show if condition.is_none() => {
                exprs.push(Expr::Column(column));
                continue;
            }
            ColumnAction::Show => Expr::Column(column),
            ColumnAction::MaskPartial(kind) if is_string => {
                Expr::ScalarFunction(ScalarFunction::new_udf(masks.partial(kind), vec![Expr::Column(column)]))
            }
            ColumnAction::HashToken if is_string => match masks.token() {
                Some(udf) => Expr::ScalarFunction(ScalarFunction::new_udf(udf, vec![Expr::Column(column)])),
                None => null()?,
            },
            // Non-string columns cannot keep their type under a string mask: NULL.
            ColumnAction::MaskPartial(_) | ColumnAction::HashToken | ColumnAction::Null | ColumnAction::Deny => null()?,
        };
        // A column shown only on the rows of some read rules (a
        // column-limited grant admits the others): NULL elsewhere.
        let e = match condition {
            Some(c) if !matches!(action, ColumnAction::Null | ColumnAction::Deny) => {
                let c = retype_literals(c.clone(), &stored_schema)?;
                datafusion::logical_expr::when(c, e).otherwise(null()?)?
            }
            _ => e,
        };
        exprs.push(e.alias_qualified(q.cloned(), field.name()));
    }
    Ok(b.project(exprs)?.build()?)
}

/// Give string literals compared with a column the column's type
/// (`important = 'true'` → boolean, Utf8View columns → Utf8View literals), so
/// the filter is well typed even if no type coercion runs after us.
fn retype_literals(expr: Expr, schema: &DFSchemaRef) -> Result<Expr, PolicyError> {
    let ty = |c: &Column| schema.field_with_unqualified_name(&c.name).map(|f| f.data_type().clone());
    let conv = |v: &ScalarValue, dt: &arrow::datatypes::DataType| -> datafusion::error::Result<ScalarValue> {
        match v {
            ScalarValue::Utf8(Some(s)) => ScalarValue::try_from_string(s.clone(), dt),
            other => Ok(other.clone()),
        }
    };
    let out = expr.transform_up(|e| match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, m)) => {
                let dt = ty(c)?;
                let v = conv(v, &dt)?;
                Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right: Box::new(Expr::Literal(v, m.clone())),
                })))
            }
            _ => Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right }))),
        },
        Expr::InList(mut il) => {
            if let Expr::Column(c) = il.expr.as_ref() {
                let dt = ty(c)?;
                let mut list = Vec::with_capacity(il.list.len());
                for x in il.list {
                    list.push(match x {
                        Expr::Literal(v, m) => Expr::Literal(conv(&v, &dt)?, m),
                        other => other,
                    });
                }
                il.list = list;
                Ok(Transformed::yes(Expr::InList(il)))
            } else {
                Ok(Transformed::no(Expr::InList(il)))
            }
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(out.data)
}
