//! The `raw` table of a [`Normalizer`](super::Normalizer), planned once.
//!
//! A mapping's queries are parsed, analysed, optimized and turned into
//! physical plans once, when the source starts ([`RawSlot`] is registered as
//! `raw` and every output is planned over it). Per batch the normalizer puts
//! the batch in the slot and executes a fresh copy of each plan
//! (`reset_plan_states`: operators that keep state between executions, such
//! as a hash join's build side, start empty); [`RawSlotExec`] reads whatever
//! batch is in the slot when it executes. No SQL is parsed per batch.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};

/// The batch being normalized, shared by the provider and its scans.
pub(crate) type Slot = Arc<Mutex<Option<RecordBatch>>>;

/// The `raw` table: whatever batch is in the slot at execution time.
#[derive(Debug)]
pub(crate) struct RawSlot {
    schema: SchemaRef,
    slot: Slot,
}

impl RawSlot {
    pub(crate) fn new(schema: SchemaRef) -> RawSlot {
        RawSlot { schema, slot: Arc::new(Mutex::new(None)) }
    }

    /// The slot the normalizer fills before executing its plans.
    pub(crate) fn slot(&self) -> Slot {
        Arc::clone(&self.slot)
    }
}

#[async_trait]
impl TableProvider for RawSlot {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Filters and limits are not pushed into this scan (the trait
        // defaults): the plan above applies them.
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(RawSlotExec {
            schema,
            projection: projection.cloned(),
            slot: Arc::clone(&self.slot),
            props: Arc::new(props),
        }))
    }
}

/// Scan of the batch in the slot (one partition).
#[derive(Debug)]
pub(crate) struct RawSlotExec {
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    slot: Slot,
    props: Arc<PlanProperties>,
}

impl DisplayAs for RawSlotExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSlotExec")
    }
}

impl ExecutionPlan for RawSlotExec {
    fn name(&self) -> &str {
        "RawSlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("RawSlotExec has no children".into()));
        }
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("RawSlotExec has one partition, not {}", partition + 1)));
        }
        let batch = self.slot.lock().map_err(|_| DataFusionError::Internal("raw slot poisoned".into()))?.clone();
        let batches = match batch {
            None => vec![],
            Some(b) => vec![match &self.projection {
                Some(p) => b.project(p)?,
                None => b,
            }],
        };
        Ok(Box::pin(MemoryStream::try_new(batches, Arc::clone(&self.schema), None)?))
    }
}
