//! One person, one cluster (issue 13 items 2, 3 and 5): the person
//! elements that departments keep under different identifiers — a 110
//! reporter by citizen ID, the same citizen as a 12345 caller known only by
//! phone and name, a law-enforcement party with a 15-digit ID — resolved
//! into persons by [`lianqin_resolve::Resolver`] with the model of
//! `schemas/resolution/person.toml` (Fellegi–Sunter: blocking rules,
//! comparison levels, match weights, `accept`/`review` thresholds).
//!
//! Two SQL tables, computed from the current `element` view when read (so
//! they always agree with the libraries and survive any restart or
//! replay; a process keeps its last resolution, and new elements join it
//! as they arrive without the others being resolved again, see
//! [`resolved`]), then filtered by the caller's policy like any `element*` table
//! (rows by department, kind, division):
//!
//! * [`LINK_TABLE`] (`element_link`): one row per current person element —
//!   its `person_id` (the resolved person, `person:<smallest element id of
//!   the cluster>`), the `rule` that joined it (a strong identifier, a
//!   match weight, an operator's merge; NULL for the element a person grows
//!   from), `match_weight`, and the element's department, division and
//!   source. Count persons with `count(DISTINCT person_id)`; a person's
//!   records across departments are `element_link JOIN element USING
//!   (element_id)`.
//! * [`REVIEW_TABLE`] (`element_review`): the uncertain pairs (`review` ≤ p
//!   < `accept`) still in different persons, with the weight of each
//!   comparison (field, level, weight — never the values): the queue an
//!   officer works through with `lianqin element merge|split`.
//!
//! What a person element gives resolution: its name, its identifier (a
//! citizen ID, or the phone it is known by), its phone, and — from
//! `attributes` — the keyed token of the household address the caller,
//! reporter or party gave (`address_token`, written by the mappings with
//! `person_token`; the address itself is personal and stays in the
//! department's raw table). Equal tokens are equal normalized addresses.
//!
//! Enterprises the same way ([`UNITS`], model `schemas/resolution/unit.toml`):
//! [`UNIT_LINK_TABLE`] (`element_unit_link`: each enterprise element — by
//! USCC, or by the name a complaint gave (`id_type = unit_name`) — and its
//! `unit_id`) and [`UNIT_REVIEW_TABLE`] (`element_unit_review`). Their names
//! start with `element` so the policy's `element*` rules reach them.
//!
//! The resolver is order-independent, so the same elements give the same
//! persons and ids whatever order they arrived in. Operator decisions
//! ([`decide`]) are kept in `<data dir>/resolution/element_decisions.jsonl`
//! — append-only, fsynced, never rewritten (§7.4.3) — and replayed in order
//! after the elements, so a split never re-merges and a merge holds; each
//! is also an audit entry (written by the caller, see `lianqin element`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use lianqin_resolve::{Decision, Model, Record, Resolver, Rule};

use crate::PipelineError;

/// Person element → resolved person.
pub const LINK_TABLE: &str = "element_link";
/// Uncertain pairs for an officer.
pub const REVIEW_TABLE: &str = "element_review";
/// Enterprise element → resolved enterprise.
pub const UNIT_LINK_TABLE: &str = "element_unit_link";
/// Uncertain enterprise pairs.
pub const UNIT_REVIEW_TABLE: &str = "element_unit_review";

/// What is resolved: persons or enterprises.
#[derive(Debug)]
pub struct Entity {
    /// `person` or `unit` (logs).
    pub kind: &'static str,
    /// The link table.
    pub link_table: &'static str,
    /// The review table.
    pub review_table: &'static str,
    /// The resolved id's column (`person_id`, `unit_id`).
    pub id_column: &'static str,
    /// The other side's id column in the review table.
    pub other_id_column: &'static str,
    /// Which elements (a condition on the `element` view).
    where_clause: &'static str,
    /// The decision log's file name under `<data dir>/resolution/`.
    decisions_file: &'static str,
    model: fn() -> Model,
    /// Text columns read from the `element` view for each element.
    columns: &'static [&'static str],
    record: RecordOf,
    /// The last resolution of this process (see [`resolved`]).
    last: &'static Cache,
}

/// Builds the resolver's record of one element row (its id and columns).
type RecordOf = fn(&str, &[(&str, Option<&str>)]) -> Record;

type Cache = std::sync::Mutex<Option<Last>>;
static LAST_PERSONS: Cache = std::sync::Mutex::new(None);
static LAST_UNITS: Cache = std::sync::Mutex::new(None);

/// Persons: `element_link`, `element_review`.
pub static PERSONS: Entity = Entity {
    kind: "person",
    link_table: LINK_TABLE,
    review_table: REVIEW_TABLE,
    id_column: "person_id",
    other_id_column: "other_person_id",
    where_clause: "kind = 'person'",
    decisions_file: "element_decisions.jsonl",
    model: Model::person,
    columns: PERSON_COLUMNS,
    record: element_record,
    last: &LAST_PERSONS,
};

/// Enterprises: `element_unit_link`, `element_unit_review` — the elements
/// known by USCC or by name (monitoring sites and other places are not
/// enterprises).
pub static UNITS: Entity = Entity {
    kind: "unit",
    link_table: UNIT_LINK_TABLE,
    review_table: UNIT_REVIEW_TABLE,
    id_column: "unit_id",
    other_id_column: "other_unit_id",
    where_clause: "kind = 'unit_place' AND id_type IN ('uscc', 'unit_name')",
    decisions_file: "unit_decisions.jsonl",
    model: Model::unit,
    columns: READ_COLUMNS,
    record: unit_record,
    last: &LAST_UNITS,
};

impl Entity {
    /// Which resolution a table belongs to.
    pub fn of_table(table: &str) -> Option<&'static Entity> {
        [&PERSONS, &UNITS].into_iter().find(|e| e.link_table == table || e.review_table == table)
    }
}

/// Element columns copied into both tables (the policy filters on them).
const ELEMENT_COLUMNS: &[&str] = &["kind", "department", "division", "source_id"];

/// Columns of a link table with their sensitivity label.
pub fn link_labels(e: &Entity) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("element_id", "public"), (e.id_column, "public")];
    v.extend(ELEMENT_COLUMNS.iter().map(|c| (*c, "public")));
    v.extend([("rule", "internal"), ("match_weight", "internal")]);
    v
}

/// Columns of a review table with their sensitivity label.
pub fn review_labels(e: &Entity) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("element_id", "public"),
        ("other_element_id", "public"),
        (e.id_column, "public"),
        (e.other_id_column, "public"),
    ];
    v.extend(ELEMENT_COLUMNS.iter().map(|c| (*c, "public")));
    v.extend([
        ("other_department", "public"),
        ("match_weight", "internal"),
        ("probability", "internal"),
        ("comparisons", "internal"),
    ]);
    v
}

/// The person decision log of a data dir.
pub fn decisions_path(data_dir: &Path) -> PathBuf {
    decisions_path_of(&PERSONS, data_dir)
}

/// The decision log of `e` in a data dir.
pub fn decisions_path_of(e: &Entity, data_dir: &Path) -> PathBuf {
    data_dir.join("resolution").join(e.decisions_file)
}

/// One line of the decision log.
pub type LoggedDecision = crate::journal::Decided<Decision>;

/// Reads the person decision log (empty when there is none; see
/// [`crate::journal`]).
pub fn load_decisions(data_dir: &Path) -> Result<Vec<LoggedDecision>, PipelineError> {
    crate::journal::load(&decisions_path(data_dir))
}

/// Appends `d` to the person decision log durably (fsync).
pub fn append_decision(data_dir: &Path, d: &LoggedDecision) -> Result<(), PipelineError> {
    crate::journal::append(&decisions_path(data_dir), d)
}

fn load_decisions_of(e: &Entity, data_dir: Option<&Path>) -> Result<Vec<LoggedDecision>, PipelineError> {
    match data_dir {
        Some(dir) => crate::journal::load(&decisions_path_of(e, dir)),
        None => Ok(Vec::new()),
    }
}

/// Text columns read from the `element` view for each element resolved
/// (the first is the element id): [`PERSON_COLUMNS`] without `attributes`.
const READ_COLUMNS: &[&str] = PERSON_COLUMNS.split_at(PERSON_COLUMNS.len() - 1).0;

/// [`READ_COLUMNS`] and, last, for persons, `attributes`: the keyed tokens a
/// mapping wrote there of personal fields the element has no column for
/// (`address_token`: the household address a caller, reporter or party
/// gave, `person_token('addr:' || <normalized address>)`, never the
/// address).
pub const PERSON_COLUMNS: &[&str] = &[
    "element_id",
    "name",
    "id_type",
    "id_value",
    "phone",
    "address",
    "kind",
    "department",
    "division",
    "source_id",
    "attributes",
];

/// The current elements of `e`, read with `ctx` (unrestricted: sealed
/// values opened, nothing masked — resolution compares clear values and
/// shows none of them).
async fn read_elements(ctx: &SessionContext, e: &Entity) -> Result<RecordBatch, PipelineError> {
    let cols: Vec<String> = e.columns.iter().map(|c| format!("CAST(\"{c}\" AS VARCHAR) AS \"{c}\"")).collect();
    let sql = format!("SELECT {} FROM element WHERE {} ORDER BY element_id", cols.join(", "), e.where_clause);
    let table = e.link_table;
    let q = |e: DataFusionError| PipelineError::Query(format!("{table}: {e}"));
    let df = ctx.sql(&sql).await.map_err(q)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(q)?;
    let batch = concat_batches(&schema, &batches).map_err(|e| PipelineError::Query(format!("{table}: {e}")))?;
    // `VARCHAR` may plan as `Utf8View`; the resolver reads plain `Utf8`.
    let internal = |e: arrow::error::ArrowError| PipelineError::Internal(format!("{table}: {e}"));
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::cast(c, &DataType::Utf8).map_err(internal))
        .collect::<Result<_, _>>()?;
    let fields: Vec<Field> = e.columns.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(internal)
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, PipelineError> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| PipelineError::Internal(format!("{LINK_TABLE}: column {name} is not text")))
}

/// The resolver's record of one element row: its raw fields
/// (`citizen_id` from a `cid` identifier, `phone`, `name`, `address`)
/// normalized per identifier type ([`lianqin_resolve::normalize::person`]),
/// and the `address_token` of its `attributes` (see [`PERSON_COLUMNS`]).
pub fn element_record(id: &str, fields: &[(&str, Option<&str>)]) -> Record {
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).and_then(|(_, v)| *v).filter(|v| !v.trim().is_empty());
    let mut raw = BTreeMap::new();
    if get("id_type") == Some("cid")
        && let Some(v) = get("id_value")
    {
        raw.insert("citizen_id".to_string(), v.to_string());
    }
    for k in ["name", "phone", "address"] {
        if let Some(v) = get(k) {
            raw.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(t) = get("attributes").and_then(address_token) {
        raw.insert("address_token".to_string(), t);
    }
    Record { id: id.to_string(), fields: lianqin_resolve::normalize::person(&raw) }
}

/// The `address_token` of a person element's `attributes` (JSON), when it
/// is a keyed token (`pt:…`): a clear value is never compared.
fn address_token(attributes: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(attributes).ok()?;
    v.get("address_token")?.as_str().filter(|t| t.starts_with("pt:") && t.len() > 3).map(str::to_string)
}

/// The resolver's record of one enterprise element row: `uscc` from a
/// `uscc` identifier, the name, district, address and phone, normalized
/// ([`lianqin_resolve::normalize::unit`]).
pub fn unit_record(id: &str, fields: &[(&str, Option<&str>)]) -> Record {
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).and_then(|(_, v)| *v).filter(|v| !v.trim().is_empty());
    let mut raw = BTreeMap::new();
    if get("id_type") == Some("uscc")
        && let Some(v) = get("id_value")
    {
        raw.insert("uscc".to_string(), v.to_string());
    }
    for k in ["name", "division", "address", "phone"] {
        if let Some(v) = get(k) {
            raw.insert(k.to_string(), v.to_string());
        }
    }
    Record { id: id.to_string(), fields: lianqin_resolve::normalize::unit(&raw) }
}

/// The elements of `batch` as resolver records.
fn records(batch: &RecordBatch, e: &Entity) -> Result<Vec<Record>, PipelineError> {
    records_where(batch, e, |_| true)
}

/// The elements of `batch` whose id `keep` accepts, as resolver records.
fn records_where(batch: &RecordBatch, e: &Entity, keep: impl Fn(&str) -> bool) -> Result<Vec<Record>, PipelineError> {
    let cols: Vec<&StringArray> = e.columns.iter().map(|c| column(batch, c)).collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let value = |c: usize| (!arrow::array::Array::is_null(cols[c], i)).then(|| cols[c].value(i));
        let Some(id) = value(0) else { continue };
        if !keep(id) {
            continue;
        }
        let fields: Vec<(&str, Option<&str>)> = e.columns.iter().enumerate().map(|(c, n)| (*n, value(c))).collect();
        out.push((e.record)(id, &fields));
    }
    Ok(out)
}

/// Resolves the current person elements read with `ctx` (unrestricted)
/// and replays the decisions of `data_dir`. Decisions naming an element
/// that is no longer (or not yet) in the library are skipped with a
/// warning.
pub async fn resolve(ctx: &SessionContext, data_dir: Option<&Path>) -> Result<(Resolver, RecordBatch), PipelineError> {
    resolve_entity(&PERSONS, ctx, data_dir).await
}

/// As [`resolve`], for persons or enterprises.
pub async fn resolve_entity(
    e: &Entity,
    ctx: &SessionContext,
    data_dir: Option<&Path>,
) -> Result<(Resolver, RecordBatch), PipelineError> {
    let batch = read_elements(ctx, e).await?;
    let decisions = load_decisions_of(e, data_dir)?;
    Ok((build(e, &batch, &decisions)?.0, batch))
}

/// Resolves the elements of `batch`, then replays `decisions`; also says
/// whether every decision could be replayed (one naming an element not,
/// or no longer, in the library is skipped with a warning).
fn build(e: &Entity, batch: &RecordBatch, decisions: &[LoggedDecision]) -> Result<(Resolver, bool), PipelineError> {
    let mut r = Resolver::new((e.model)());
    for rec in records(batch, e)? {
        let id = rec.id.clone();
        r.add(rec).map_err(|err| PipelineError::Query(format!("{}: element {id}: {err}", e.link_table)))?;
    }
    let mut all = true;
    for d in decisions {
        if let Err(err) = r.apply(&d.decision) {
            all = false;
            tracing::warn!(kind = e.kind, decided_at = %d.at, by = %d.by, error = %err, "element resolution: a decision could not be replayed");
        }
    }
    Ok((r, all))
}

/// A resolution and the elements it was computed from.
type Resolved = Arc<(Resolver, RecordBatch)>;

/// What a process keeps of its last resolution of an [`Entity`] (see
/// [`resolved`]).
#[derive(Debug)]
struct Last {
    /// SHA-256 of the decisions it replayed.
    decisions: [u8; 32],
    /// Each element's row digest (the first 16 bytes of SHA-256 over its
    /// columns), by element id.
    rows: std::collections::HashMap<String, [u8; 16]>,
    /// Every decision could be replayed (else a new element may be the one
    /// a skipped decision names: resolved from scratch).
    complete: bool,
    resolved: Resolved,
}

/// How [`resolve_cached`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Nothing changed: the last resolution.
    Unchanged,
    /// Only new elements: they joined the last resolution (how many).
    Joined(usize),
    /// Resolved from scratch.
    Built,
}

/// The digest of each row of `batch` (length-prefixed columns, NULL
/// distinct from empty), by element id (the first column).
fn row_digests(batch: &RecordBatch) -> Result<std::collections::HashMap<String, [u8; 16]>, PipelineError> {
    use sha2::{Digest, Sha256};
    let cols: Vec<&StringArray> = batch
        .columns()
        .iter()
        .map(|c| c.as_string_opt::<i32>().ok_or_else(|| PipelineError::Internal("element columns are text".into())))
        .collect::<Result<_, _>>()?;
    let mut out = std::collections::HashMap::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if arrow::array::Array::is_null(cols[0], i) {
            continue;
        }
        let mut h = Sha256::new();
        for c in &cols {
            match arrow::array::Array::is_null(*c, i) {
                true => h.update(u64::MAX.to_le_bytes()),
                false => {
                    h.update((c.value(i).len() as u64).to_le_bytes());
                    h.update(c.value(i).as_bytes());
                }
            }
        }
        let d: [u8; 32] = h.finalize().into();
        let mut short = [0u8; 16];
        short.copy_from_slice(&d[..16]);
        out.insert(cols[0].value(i).to_string(), short);
    }
    Ok(out)
}

/// Whether records added after `decisions` give what adding them before
/// would: yes unless a merge follows a split (a merge lifts the splits
/// between the two clusters it joins, and which those are depends on the
/// records there at the time). Splits name their members and merges their
/// two records, so replaying either kind alone does not depend on when the
/// other records arrived (`lianqin-resolve`'s
/// `operator_decisions_hold_across_arrivals_and_replays`).
fn joinable_after(decisions: &[LoggedDecision]) -> bool {
    let first_split = decisions.iter().position(|d| matches!(d.decision, Decision::Split { .. }));
    first_split.is_none_or(|s| !decisions[s..].iter().any(|d| matches!(d.decision, Decision::Merge { .. })))
}

/// The resolution of `batch` (the current elements) with `decisions`,
/// reusing `last` when it can: unchanged when the elements and decisions
/// are; the new elements added to it when the decisions are the same and
/// all were replayed, no element changed or left, and [`joinable_after`]
/// holds (then the result equals resolving from scratch); else resolved
/// from scratch.
fn resolve_cached(
    e: &Entity,
    last: &mut Option<Last>,
    batch: RecordBatch,
    decisions: &[LoggedDecision],
) -> Result<(Resolved, Reuse), PipelineError> {
    use sha2::{Digest, Sha256};
    let rows = row_digests(&batch)?;
    let key: [u8; 32] = Sha256::digest(
        serde_json::to_vec(decisions).map_err(|err| PipelineError::Internal(format!("{}: {err}", e.link_table)))?,
    )
    .into();
    if let Some(l) = last.take() {
        let kept = l.decisions == key && l.rows.iter().all(|(id, d)| rows.get(id) == Some(d));
        if kept && rows.len() == l.rows.len() {
            let r = Arc::clone(&l.resolved);
            *last = Some(l);
            return Ok((r, Reuse::Unchanged));
        }
        if kept
            && l.complete
            && joinable_after(decisions)
            && let Ok((mut r, _)) = Arc::try_unwrap(l.resolved)
        {
            let new = records_where(&batch, e, |id| !l.rows.contains_key(id))?;
            let n = new.len();
            for rec in new {
                let id = rec.id.clone();
                r.add(rec).map_err(|err| PipelineError::Query(format!("{}: element {id}: {err}", e.link_table)))?;
            }
            let resolved: Resolved = Arc::new((r, batch));
            *last = Some(Last { decisions: key, rows, complete: true, resolved: Arc::clone(&resolved) });
            return Ok((resolved, Reuse::Joined(n)));
        }
    }
    let (r, complete) = build(e, &batch, decisions)?;
    let resolved: Resolved = Arc::new((r, batch));
    *last = Some(Last { decisions: key, rows, complete, resolved: Arc::clone(&resolved) });
    Ok((resolved, Reuse::Built))
}

/// As [`resolve_entity`], for reading, as elements arrive: the same
/// elements and decisions as the last call of this process give the same
/// (shared) resolution without computing it again, and new elements join
/// it without resolving the others again ([`resolve_cached`]: a long-lived
/// server, `lianqin serve`, resolves only what arrived since its last
/// read). What is kept is per [`Entity`].
pub async fn resolved(e: &Entity, ctx: &SessionContext, data_dir: Option<&Path>) -> Result<Resolved, PipelineError> {
    let batch = read_elements(ctx, e).await?;
    let decisions = load_decisions_of(e, data_dir)?;
    let mut last = e.last.lock().map_err(|_| PipelineError::Internal("resolution cache poisoned".into()))?;
    let (r, how) = resolve_cached(e, &mut last, batch, &decisions)?;
    tracing::debug!(kind = e.kind, reuse = ?how, elements = r.0.len(), "element resolution");
    Ok(r)
}

/// The rule of a link as text and its match weight.
fn rule_parts(rule: Option<&Rule>) -> (Option<String>, Option<f64>) {
    match rule {
        None => (None, None),
        Some(r @ Rule::Score { weight, .. }) => (Some(r.describe()), Some(*weight)),
        Some(r) => (Some(r.describe()), None),
    }
}

fn link_schema(e: &Entity) -> SchemaRef {
    let mut fields: Vec<Field> =
        vec![Field::new("element_id", DataType::Utf8, false), Field::new(e.id_column, DataType::Utf8, false)];
    fields.extend(ELEMENT_COLUMNS.iter().map(|c| Field::new(*c, DataType::Utf8, true)));
    fields.push(Field::new("rule", DataType::Utf8, true));
    fields.push(Field::new("match_weight", DataType::Float64, true));
    Arc::new(Schema::new(fields))
}

fn review_schema(e: &Entity) -> SchemaRef {
    let mut fields: Vec<Field> = ["element_id", "other_element_id", e.id_column, e.other_id_column]
        .iter()
        .map(|c| Field::new(*c, DataType::Utf8, false))
        .collect();
    fields.extend(ELEMENT_COLUMNS.iter().map(|c| Field::new(*c, DataType::Utf8, true)));
    fields.push(Field::new("other_department", DataType::Utf8, true));
    fields.push(Field::new("match_weight", DataType::Float64, false));
    fields.push(Field::new("probability", DataType::Float64, false));
    fields.push(Field::new("comparisons", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Element columns of `batch` by element id.
fn element_columns(batch: &RecordBatch) -> Result<BTreeMap<String, Vec<Option<String>>>, PipelineError> {
    let ids = column(batch, "element_id")?;
    let cols: Vec<&StringArray> = ELEMENT_COLUMNS.iter().map(|c| column(batch, c)).collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let v = cols.iter().map(|c| (!arrow::array::Array::is_null(*c, i)).then(|| c.value(i).to_string())).collect();
        out.insert(ids.value(i).to_string(), v);
    }
    Ok(out)
}

/// The rows of [`LINK_TABLE`].
pub fn link_batch(r: &Resolver, batch: &RecordBatch) -> Result<RecordBatch, PipelineError> {
    link_batch_of(&PERSONS, r, batch)
}

/// The rows of `e`'s link table.
pub fn link_batch_of(e: &Entity, r: &Resolver, batch: &RecordBatch) -> Result<RecordBatch, PipelineError> {
    let meta = element_columns(batch)?;
    let links = r.links();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(links.iter().map(|l| Some(l.record.as_str())).collect::<StringArray>()),
        Arc::new(links.iter().map(|l| Some(l.cluster.as_str())).collect::<StringArray>()),
    ];
    for c in 0..ELEMENT_COLUMNS.len() {
        let a: StringArray = links.iter().map(|l| meta.get(&l.record).and_then(|m| m[c].clone())).collect();
        cols.push(Arc::new(a));
    }
    let parts: Vec<_> = links.iter().map(|l| rule_parts(l.rule.as_ref())).collect();
    cols.push(Arc::new(parts.iter().map(|p| p.0.clone()).collect::<StringArray>()));
    cols.push(Arc::new(parts.iter().map(|p| p.1).collect::<Float64Array>()));
    RecordBatch::try_new(link_schema(e), cols)
        .map_err(|err| PipelineError::Internal(format!("{}: {err}", e.link_table)))
}

/// The rows of `e`'s review table.
pub fn review_batch(e: &Entity, r: &Resolver, batch: &RecordBatch) -> Result<RecordBatch, PipelineError> {
    let meta = element_columns(batch)?;
    let items = r.review_queue();
    let table = e.review_table;
    let cluster = |id: &str| r.cluster_of(id).map_err(|err| PipelineError::Internal(format!("{table}: {err}")));
    let persons: Vec<(String, String)> =
        items.iter().map(|i| Ok((cluster(&i.a)?, cluster(&i.b)?))).collect::<Result<_, PipelineError>>()?;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(items.iter().map(|i| Some(i.a.as_str())).collect::<StringArray>()),
        Arc::new(items.iter().map(|i| Some(i.b.as_str())).collect::<StringArray>()),
        Arc::new(persons.iter().map(|p| Some(p.0.as_str())).collect::<StringArray>()),
        Arc::new(persons.iter().map(|p| Some(p.1.as_str())).collect::<StringArray>()),
    ];
    for c in 0..ELEMENT_COLUMNS.len() {
        let a: StringArray = items.iter().map(|i| meta.get(&i.a).and_then(|m| m[c].clone())).collect();
        cols.push(Arc::new(a));
    }
    let dept = ELEMENT_COLUMNS.iter().position(|c| *c == "department").unwrap_or(1);
    cols.push(Arc::new(items.iter().map(|i| meta.get(&i.b).and_then(|m| m[dept].clone())).collect::<StringArray>()));
    cols.push(Arc::new(items.iter().map(|i| Some(i.score.weight)).collect::<Float64Array>()));
    cols.push(Arc::new(items.iter().map(|i| Some(i.score.probability)).collect::<Float64Array>()));
    let text: StringArray = items
        .iter()
        .map(|i| {
            Some(
                i.score
                    .parts
                    .iter()
                    .map(|p| format!("{} {} {:+.2}", p.field, p.level, p.weight))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .collect();
    cols.push(Arc::new(text));
    RecordBatch::try_new(review_schema(e), cols).map_err(|err| PipelineError::Internal(format!("{table}: {err}")))
}

/// Which of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The link table.
    Links,
    /// The review table.
    Review,
}

/// A link or review table of persons or enterprises (see the module docs):
/// computed when read.
pub struct PersonTable {
    ctx: SessionContext,
    data_dir: Option<PathBuf>,
    entity: &'static Entity,
    which: Which,
    schema: SchemaRef,
}

impl std::fmt::Debug for PersonTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonTable")
            .field("kind", &self.entity.kind)
            .field("which", &self.which)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl PersonTable {
    /// The table over the `element` view of `ctx` (a session without any
    /// policy: resolution sees every element of its kind; the caller's
    /// policy applies to this table's rows afterwards). `data_dir` holds
    /// the decisions.
    pub fn new(ctx: SessionContext, data_dir: Option<PathBuf>, entity: &'static Entity, which: Which) -> Self {
        let schema = match which {
            Which::Links => link_schema(entity),
            Which::Review => review_schema(entity),
        };
        PersonTable { ctx, data_dir, entity, which, schema }
    }
}

#[async_trait]
impl TableProvider for PersonTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let ext = |e: PipelineError| DataFusionError::External(Box::new(e));
        let resolved = resolved(self.entity, &self.ctx, self.data_dir.as_deref()).await.map_err(ext)?;
        let (r, batch) = &*resolved;
        let rows = match self.which {
            Which::Links => link_batch_of(self.entity, r, batch),
            Which::Review => review_batch(self.entity, r, batch),
        }
        .map_err(ext)?;
        let mem = MemTable::try_new(Arc::clone(&self.schema), vec![vec![rows]])?;
        mem.scan(state, projection, &[], limit).await
    }
}

/// Registers the four tables (persons' and enterprises' links and reviews)
/// in `ctx` over `inner` (a session whose `element` view is unrestricted)
/// and names them in `tables`.
pub fn register(
    ctx: &SessionContext,
    inner: SessionContext,
    data_dir: Option<PathBuf>,
    tables: &mut Vec<String>,
) -> Result<(), PipelineError> {
    for entity in [&PERSONS, &UNITS] {
        for (name, which) in [(entity.link_table, Which::Links), (entity.review_table, Which::Review)] {
            let t = PersonTable::new(inner.clone(), data_dir.clone(), entity, which);
            ctx.register_table(name, Arc::new(t)).map_err(|e| PipelineError::Query(format!("{name}: {e}")))?;
            tables.push(name.to_string());
        }
    }
    Ok(())
}

/// What an operator decides.
#[derive(Debug, Clone)]
pub enum Decide {
    /// Elements `a` and `b` are one person.
    Merge {
        /// An element id.
        a: String,
        /// Another.
        b: String,
    },
    /// `element` is not the person of the other elements of its cluster.
    Split {
        /// The element id.
        element: String,
    },
}

/// Applies `what` to the current resolution of `e` (persons or
/// enterprises; checking that the elements exist and the decision makes
/// sense), then logs it durably in `e`'s decision log
/// ([`decisions_path_of`]); returns the logged decision. `by` names the
/// officer; `reason` is required.
pub async fn decide(
    e: &Entity,
    ctx: &SessionContext,
    data_dir: &Path,
    what: &Decide,
    by: &str,
    reason: &str,
) -> Result<LoggedDecision, PipelineError> {
    let reason = crate::journal::operator_reason(by, reason)?;
    let (mut r, _) = resolve_entity(e, ctx, Some(data_dir)).await?;
    let bad = |e: lianqin_resolve::ResolveError| PipelineError::Config(e.to_string());
    match what {
        Decide::Merge { a, b } => {
            if r.cluster_of(a).map_err(bad)? == r.cluster_of(b).map_err(bad)? {
                let one = if e.kind == "unit" { "enterprise" } else { "person" };
                return Err(PipelineError::Config(format!("{a} and {b} are already one {one}")));
            }
            r.merge(a, b, &reason).map_err(bad)?;
        }
        Decide::Split { element } => {
            r.split(element, &reason).map_err(bad)?;
        }
    }
    let decision =
        r.decisions().last().cloned().ok_or_else(|| PipelineError::Internal("the decision was not kept".into()))?;
    let logged = LoggedDecision::now(by, decision);
    crate::journal::append(&decisions_path_of(e, data_dir), &logged)?;
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_row_becomes_a_normalized_record() {
        let id15 = "330502800101123";
        let r = element_record(
            "pt:1",
            &[
                ("id_type", Some("cid")),
                ("id_value", Some(id15)),
                ("name", Some("张 三")),
                ("phone", Some("+86 138-0572-1234")),
            ],
        );
        let id18 = lianqin_domain::upgrade_15_to_18(id15).unwrap();
        assert_eq!(r.fields.get("citizen_id"), Some(&id18));
        assert_eq!(r.fields.get("name").map(String::as_str), Some("张三"));
        assert_eq!(r.fields.get("mobile").map(String::as_str), Some("13805721234"));
        assert_eq!(r.fields.get("birth_date").map(String::as_str), Some("1980-01-01"));
        // A phone as the identifier is not a citizen ID.
        let r = element_record("pt:2", &[("id_type", Some("phone")), ("id_value", Some("13805721234"))]);
        assert!(!r.fields.contains_key("citizen_id"), "{:?}", r.fields);
        // The household address is compared by its keyed token only.
        let token = |attributes: &str| {
            element_record("pt:3", &[("id_type", Some("phone")), ("attributes", Some(attributes))])
                .fields
                .get("address_token")
                .cloned()
        };
        assert!(token(r#"{"address_token":"pt:0a1b"}"#).is_some_and(|t| t.ends_with("0A1B")));
        assert_eq!(token(r#"{"address_token":"吴兴区凤凰路12号"}"#), None, "a clear value is never compared");
        assert_eq!(token(r#"{"jjdbh":"J1"}"#), None);
        assert_eq!(token("not json"), None);
    }

    /// A session whose `element` table holds two person elements: one
    /// citizen, once by ID and once as a caller by mobile and name.
    fn two_elements() -> SessionContext {
        let rows: [[Option<&str>; 10]; 2] = [
            [
                Some("pt:a"),
                Some("张三"),
                Some("cid"),
                Some("330502198001011231"),
                Some("13805721234"),
                None,
                Some("person"),
                Some("police"),
                Some("330502"),
                Some("police_110"),
            ],
            [
                Some("pt:b"),
                Some("张三"),
                Some("phone"),
                Some("13805721234"),
                Some("13805721234"),
                None,
                Some("person"),
                Some("hotline_12345"),
                Some("330502"),
                Some("hotline_12345"),
            ],
        ];
        elements(&rows)
    }

    #[tokio::test]
    async fn a_resolution_is_computed_again_only_when_elements_or_decisions_change() {
        let ctx = two_elements();
        let dir = tempfile::tempdir().unwrap();
        let first = resolved(&PERSONS, &ctx, Some(dir.path())).await.unwrap();
        assert_eq!(first.0.cluster_of("pt:a").unwrap(), first.0.cluster_of("pt:b").unwrap(), "one citizen");
        let again = resolved(&PERSONS, &ctx, Some(dir.path())).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "nothing changed: the same resolution");
        let split = Decision::Split { record: "pt:b".into(), from: vec!["pt:a".into()], reason: "li: no".into() };
        append_decision(
            dir.path(),
            &LoggedDecision { at: "2026-12-06T00:00:00Z".into(), by: "li".into(), decision: split },
        )
        .unwrap();
        let after = resolved(&PERSONS, &ctx, Some(dir.path())).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &after), "a new decision: resolved again");
        assert_ne!(after.0.cluster_of("pt:a").unwrap(), after.0.cluster_of("pt:b").unwrap(), "the split holds");
    }

    /// A person element row (READ_COLUMNS order): a caller known by
    /// mobile and name.
    fn caller(id: &'static str, name: &'static str, mobile: &'static str) -> [Option<&'static str>; 10] {
        [
            Some(id),
            Some(name),
            Some("phone"),
            Some(mobile),
            Some(mobile),
            None,
            Some("person"),
            Some("hotline_12345"),
            Some("330502"),
            Some("hotline_12345"),
        ]
    }

    /// The person elements of `rows` as [`read_elements`] reads them.
    async fn batch(rows: &[[Option<&str>; 10]]) -> RecordBatch {
        read_elements(&elements(rows), &PERSONS).await.unwrap()
    }

    /// Links and review pairs of a resolution, to compare two.
    fn outcome(r: &Resolver) -> (Vec<lianqin_resolve::Link>, Vec<(String, String)>) {
        (r.links(), r.review_queue().into_iter().map(|i| (i.a, i.b)).collect())
    }

    /// New elements join the last resolution (the others are not resolved
    /// again) and give what resolving all of them from scratch gives; a
    /// changed element, or a merge after a split, resolves from scratch.
    #[tokio::test]
    async fn new_elements_join_the_last_resolution_as_they_arrive() {
        let first = [caller("pt:1", "张三", "13805721234"), caller("pt:2", "李四", "13905720001")];
        let more = [
            caller("pt:1", "张三", "13805721234"),
            caller("pt:2", "李四", "13905720001"),
            caller("pt:3", "张三", "13805721234"),
            caller("pt:4", "王五", "13705729999"),
        ];
        let none: Vec<LoggedDecision> = Vec::new();
        let mut last = None;
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&first).await, &none).unwrap();
        assert_eq!(how, Reuse::Built);
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&first).await, &none).unwrap();
        assert_eq!(how, Reuse::Unchanged);
        let (joined, how) = resolve_cached(&PERSONS, &mut last, batch(&more).await, &none).unwrap();
        assert_eq!(how, Reuse::Joined(2));
        assert_eq!(joined.0.cluster_of("pt:3").unwrap(), joined.0.cluster_of("pt:1").unwrap(), "one caller");
        let (scratch, _) = build(&PERSONS, &batch(&more).await, &none).unwrap();
        assert_eq!(outcome(&joined.0), outcome(&scratch));

        // A changed element: from scratch.
        let mut changed = more;
        changed[3] = caller("pt:4", "王五", "13705720000");
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&changed).await, &none).unwrap();
        assert_eq!(how, Reuse::Built);

        // Decisions: a split alone lets new elements join; a merge after
        // it does not (a merge may lift the split, depending on who is
        // there when it is replayed).
        let logged = |d: Decision| LoggedDecision { at: "2026-12-08T00:00:00Z".into(), by: "li".into(), decision: d };
        let split =
            vec![logged(Decision::Split { record: "pt:3".into(), from: vec!["pt:1".into()], reason: "li: no".into() })];
        let mut last = None;
        resolve_cached(&PERSONS, &mut last, batch(&more[..3]).await, &split).unwrap();
        let (joined, how) = resolve_cached(&PERSONS, &mut last, batch(&more).await, &split).unwrap();
        assert_eq!(how, Reuse::Joined(1));
        assert_eq!(outcome(&joined.0), outcome(&build(&PERSONS, &batch(&more).await, &split).unwrap().0));
        let mut both = split.clone();
        both.push(logged(Decision::Merge { a: "pt:3".into(), b: "pt:2".into(), reason: "wang: yes".into() }));
        let mut last = None;
        resolve_cached(&PERSONS, &mut last, batch(&more[..3]).await, &both).unwrap();
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&more).await, &both).unwrap();
        assert_eq!(how, Reuse::Built);
        // A decision naming an element not yet there: the element's arrival
        // resolves from scratch, so the decision then holds.
        let early =
            vec![logged(Decision::Split { record: "pt:4".into(), from: vec!["pt:1".into()], reason: "li: no".into() })];
        let mut last = None;
        resolve_cached(&PERSONS, &mut last, batch(&more[..3]).await, &early).unwrap();
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&more).await, &early).unwrap();
        assert_eq!(how, Reuse::Built);
        // A resolution a reader still holds is not changed under it.
        let mut last = None;
        let (held, _) = resolve_cached(&PERSONS, &mut last, batch(&first).await, &none).unwrap();
        let (_, how) = resolve_cached(&PERSONS, &mut last, batch(&more).await, &none).unwrap();
        assert_eq!(how, Reuse::Built);
        assert_eq!(held.0.len(), 2);
    }

    /// An `element` table of `rows` (READ_COLUMNS order; `attributes`
    /// NULL).
    fn elements(rows: &[[Option<&str>; 10]]) -> SessionContext {
        let fields: Vec<Field> = PERSON_COLUMNS.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let columns: Vec<ArrayRef> = (0..PERSON_COLUMNS.len())
            .map(|c| {
                Arc::new(StringArray::from(rows.iter().map(|r| r.get(c).copied().flatten()).collect::<Vec<_>>()))
                    as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("element", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        ctx
    }

    #[tokio::test]
    async fn a_complaints_named_target_resolves_to_the_registered_enterprise() {
        let unit = |id, name, id_type, id_value, dept, div| {
            [
                Some(id),
                Some(name),
                Some(id_type),
                Some(id_value),
                None,
                None,
                Some("unit_place"),
                Some(dept),
                Some(div),
                None,
            ]
        };
        let ctx = elements(&[
            unit(
                "uscc:91350200776049653A",
                "湖州吴兴华美印染有限公司",
                "uscc",
                "91350200776049653A",
                "market",
                "330502",
            ),
            unit("unit:330502:华美印染", "华美印染厂", "unit_name", "华美印染", "ecology", "330502"),
            // The same brand in another county is another enterprise.
            unit("unit:330522:华美印染", "华美印染", "unit_name", "华美印染", "ecology", "330522"),
            // A monitoring site is a place, not an enterprise.
            unit("site:W1", "华美印染", "site", "W1", "ecology", "330502"),
        ]);
        let (r, batch) = resolve_entity(&UNITS, &ctx, None).await.unwrap();
        let c = |id: &str| r.cluster_of(id).unwrap();
        assert_eq!(c("unit:330502:华美印染"), c("uscc:91350200776049653A"));
        assert_ne!(c("unit:330522:华美印染"), c("uscc:91350200776049653A"));
        assert!(r.cluster_of("site:W1").is_err(), "sites are not resolved as enterprises");
        let links = link_batch_of(&UNITS, &r, &batch).unwrap();
        assert_eq!(links.num_rows(), 3);
        assert_eq!(links.schema().field(1).name(), "unit_id");
        // Persons are not touched.
        assert!(resolve_entity(&PERSONS, &ctx, None).await.unwrap().0.clusters().is_empty());
    }

    #[test]
    fn the_decision_log_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_decisions(dir.path()).unwrap().is_empty());
        let d = LoggedDecision {
            at: "2026-12-06T00:00:00Z".into(),
            by: "wang".into(),
            decision: Decision::Split { record: "pt:a".into(), from: vec!["pt:b".into()], reason: "wang: no".into() },
        };
        append_decision(dir.path(), &d).unwrap();
        assert_eq!(load_decisions(dir.path()).unwrap(), vec![d]);
    }
}
