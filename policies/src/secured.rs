//! A table provider that applies the row filter *inside* the scan.
//!
//! Why not a logical `Filter` over the scan: the optimizer merges adjacent
//! filters, so the user's predicate (`WHERE 1 / (length(name) - 2) = 1`)
//! would be evaluated together with — and possibly before — the row filter,
//! on rows the user may not see; an error then reveals that such a row exists
//! (the "leaky predicate" problem of PostgreSQL's `security_barrier` views).
//! Here the row filter runs in a `FilterExec` under the provider's output,
//! the provider accepts no pushed-down filters, and a [`BarrierExec`] above the
//! `FilterExec` stops the physical filter-pushdown rule from merging parent
//! filters into it (and projections from being swapped below it), so user
//! expressions only ever see admitted rows.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// `inner` with `row_filter` applied at the scan.
pub(crate) struct SecuredTable {
    pub inner: Arc<dyn TableProvider>,
    pub row_filter: Expr,
}

impl fmt::Debug for SecuredTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecuredTable(row filter: {})", self.row_filter)
    }
}

#[async_trait]
impl TableProvider for SecuredTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // User predicates stay above the scan: they must not run on hidden rows.
        Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Our own (trusted) row filter may go into the inner scan for pruning
        // (e.g. Delta/Parquet statistics); it is re-checked by the FilterExec
        // unless the provider applies it exactly.
        let pushdown = self.inner.supports_filters_pushdown(&[&self.row_filter])?;
        let (inner_filters, exact) = match pushdown.first() {
            Some(TableProviderFilterPushDown::Exact) => (vec![self.row_filter.clone()], true),
            Some(TableProviderFilterPushDown::Inexact) => (vec![self.row_filter.clone()], false),
            _ => (vec![], false),
        };
        let schema = self.inner.schema();
        if exact {
            return self.inner.scan(state, projection, &inner_filters, limit).await;
        }
        let input = self.inner.scan(state, None, &inner_filters, None).await?;
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let predicate = state.create_physical_expr(self.row_filter.clone(), &df_schema)?;
        let exec = FilterExecBuilder::new(predicate, input)
            .apply_projection(projection.cloned())?
            .with_fetch(limit)
            .build()?;
        Ok(Arc::new(BarrierExec::new(Arc::new(exec))))
    }
}

/// Pass-through node that blocks physical filter pushdown and projection
/// swapping (the trait defaults: parent filters "unsupported", no swap).
#[derive(Debug)]
pub(crate) struct BarrierExec {
    input: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
}

impl BarrierExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let props = Arc::clone(input.properties());
        BarrierExec { input, props }
    }
}

impl DisplayAs for BarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PolicyBarrierExec")
    }
}

impl ExecutionPlan for BarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("PolicyBarrierExec has one child".into()));
        }
        Ok(Arc::new(BarrierExec::new(children.swap_remove(0))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
