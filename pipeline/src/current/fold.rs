//! The current state of each key computed in one streaming pass over rows
//! sorted by `(key, order)` — what [`super::full_sql`] says in SQL, without
//! an ordered aggregate holding every key's state in memory at once.
//!
//! Input rows have the snapshot's columns (key first, then the value
//! columns, `sources`, `versions`) followed by two order columns `_o1`,
//! `_o2` (Int64), and arrive sorted by key then order, in batches of any
//! size; a key's rows may span batches. Per key the output row has, per
//! value column, the newest non-null value; `deleted` of the newest row
//! (null included); `sources` the sorted distinct union of the rows'
//! comma-separated lists; `versions` the sum.
//!
//! Memory: one input batch plus the rows of the key that is still open at
//! its end (held back until the next batch shows where it ends).

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::error::ArrowError;

/// Folds sorted version rows into current rows (see the module docs).
#[derive(Debug)]
pub struct Folder {
    /// Output schema (the snapshot's).
    out: SchemaRef,
    /// Index of `deleted` among the output columns, if any.
    deleted: Option<usize>,
    /// Rows of the key still open at the end of the last batch.
    carry: Option<RecordBatch>,
}

impl Folder {
    /// A folder writing rows of `out`, whose last two columns are
    /// `sources` and `versions` and whose first is the key.
    pub fn new(out: SchemaRef) -> Result<Self, ArrowError> {
        let n = out.fields().len();
        if n < 3 || out.field(n - 2).name() != "sources" || out.field(n - 1).name() != "versions" {
            return Err(ArrowError::SchemaError(format!(
                "current state: output must end with sources, versions; got {:?}",
                out.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
            )));
        }
        let deleted = out.fields().iter().position(|f| f.name() == "deleted");
        Ok(Folder { out, deleted, carry: None })
    }

    /// Takes the next sorted input batch; returns the rows of every key
    /// that ended in it (None when none did).
    pub fn push(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let batch = match self.carry.take() {
            Some(c) => concat_batches(&batch.schema(), [&c, &batch])?,
            None => batch,
        };
        let mut ranges = arrow::compute::partition(&[Arc::clone(batch.column(0))])?.ranges();
        let open = ranges.pop().expect("a non-empty batch has a range");
        self.carry = Some(batch.slice(open.start, open.len()));
        self.fold(&batch, &ranges)
    }

    /// The rows of the last open key, after the last batch.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self.carry.take() {
            Some(c) => {
                let all: Range<usize> = 0..c.num_rows();
                self.fold(&c, std::slice::from_ref(&all))
            }
            None => Ok(None),
        }
    }

    fn fold(&self, batch: &RecordBatch, ranges: &[Range<usize>]) -> Result<Option<RecordBatch>, ArrowError> {
        if ranges.is_empty() {
            return Ok(None);
        }
        let n = self.out.fields().len();
        let (sources_i, versions_i) = (n - 2, n - 1);
        let last_rows: UInt32Array = ranges.iter().map(|r| Some((r.end - 1) as u32)).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(n);
        for (i, field) in self.out.fields().iter().enumerate() {
            let col = batch.column(i);
            let out = if i == 0 || Some(i) == self.deleted {
                take(col, &last_rows, None)?
            } else if i == sources_i {
                Arc::new(sources(col, ranges)?)
            } else if i == versions_i {
                Arc::new(versions(col, ranges)?)
            } else {
                let idx: UInt32Array =
                    ranges.iter().map(|r| r.clone().rev().find(|&j| col.is_valid(j)).map(|j| j as u32)).collect();
                take(col, &idx, None)?
            };
            columns.push(if out.data_type() == field.data_type() { out } else { cast(&out, field.data_type())? });
        }
        RecordBatch::try_new(Arc::clone(&self.out), columns).map(Some)
    }
}

fn sources(col: &ArrayRef, ranges: &[Range<usize>]) -> Result<StringArray, ArrowError> {
    let col = cast(col, &DataType::Utf8)?;
    let col = col.as_string::<i32>();
    Ok(ranges
        .iter()
        .map(|r| {
            let set: BTreeSet<&str> =
                r.clone().filter(|&j| col.is_valid(j)).flat_map(|j| col.value(j).split(',')).collect();
            (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>().join(","))
        })
        .collect())
}

fn versions(col: &ArrayRef, ranges: &[Range<usize>]) -> Result<Int64Array, ArrowError> {
    let col = cast(col, &DataType::Int64)?;
    let col = col.as_primitive::<Int64Type>();
    Ok(ranges.iter().map(|r| Some(r.clone().filter(|&j| col.is_valid(j)).map(|j| col.value(j)).sum::<i64>())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BooleanArray;
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    /// One history row: key, a, b, deleted, source, order.
    type Row = (u8, Option<u8>, Option<u8>, Option<bool>, u8, i64);

    fn history(rows: &[Row]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("deleted", DataType::Boolean, true),
            Field::new("source_id", DataType::Utf8, false),
            Field::new("o", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| Some(format!("k{}", r.0))).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1.map(|v| format!("v{v}"))).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.2.map(i64::from)).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.3).collect::<BooleanArray>()),
                Arc::new(rows.iter().map(|r| Some(format!("s{}", r.4))).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| Some(r.5)).collect::<Int64Array>()),
            ],
        )
        .unwrap()
    }

    fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
        let mut v: Vec<String> = arrow::util::pretty::pretty_format_batches(batches)
            .unwrap()
            .to_string()
            .lines()
            .filter(|l| l.starts_with("| k"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// The reference: the ordered aggregate of `super::full_sql`'s rule,
    /// and the fold over the same rows sorted, cut into batches of `chunk`.
    async fn both(rows: &[Row], chunk: usize) -> (Vec<String>, Vec<String>) {
        let ctx = SessionContext::new();
        let h = history(rows);
        ctx.register_table("h", Arc::new(MemTable::try_new(h.schema(), vec![vec![h]]).unwrap())).unwrap();
        let reference = ctx
            .sql(
                "SELECT k, last_value(a ORDER BY o) FILTER (WHERE a IS NOT NULL) AS a, \
                 last_value(b ORDER BY o) FILTER (WHERE b IS NOT NULL) AS b, \
                 last_value(deleted ORDER BY o) AS deleted, \
                 array_to_string(array_sort(array_agg(DISTINCT source_id)), ',') AS sources, \
                 count(*) AS versions FROM h GROUP BY k",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sorted = ctx
            .sql(
                "SELECT k, a, b, deleted, source_id AS sources, CAST(1 AS BIGINT) AS versions, o AS _o1, \
                 CAST(0 AS BIGINT) AS _o2 FROM h ORDER BY k, o",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sorted = concat_batches(&sorted[0].schema(), &sorted).unwrap();
        let out = reference[0].schema();
        let mut f = Folder::new(out).unwrap();
        let mut got = Vec::new();
        let mut at = 0;
        while at < sorted.num_rows() {
            let len = chunk.min(sorted.num_rows() - at);
            got.extend(f.push(sorted.slice(at, len)).unwrap());
            at += len;
        }
        got.extend(f.finish().unwrap());
        (rows_of(&reference), rows_of(&got))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn fold_equals_the_ordered_aggregate(
            rows in proptest::collection::vec(
                (0u8..6, proptest::option::of(0u8..4), proptest::option::of(0u8..4),
                 proptest::option::of(any::<bool>()), 0u8..3, 0i64..1_000_000),
                1..60),
            chunk in 1usize..20,
        ) {
            // Orders are unique per key in history ((ingested_at, row_seq)).
            let mut rows = rows;
            for (i, r) in rows.iter_mut().enumerate() {
                r.5 = r.5 * 100 + i as i64;
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (want, got) = rt.block_on(both(&rows, chunk));
            prop_assert_eq!(want, got);
        }
    }

    #[test]
    fn output_must_end_with_sources_and_versions() {
        let s = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)]));
        assert!(Folder::new(s).unwrap_err().to_string().contains("sources, versions"));
    }
}
