//! Replay of quarantined records (`lianqin replay`): after a mapping or a
//! code table is fixed, records that were quarantined go through the
//! current mapping again and land — or stay quarantined with the new
//! reason — exactly once.
//!
//! An unchanged re-fetch of such a record is a repeat (its version was
//! decided when it was quarantined), so a replay does not wait for the
//! source: it takes each selected record from the source's raw table, as
//! the bus carried it, and publishes it again on the source's topic with
//! the locator `replay:<run>:<quarantine id>[ @ <original locator>]`
//! ([`lianqin_bus::REPLAY_PREFIX`]). The hub treats such a record as fresh
//! only while it is still the newest version of its key and no record of
//! the same run decided it (`hub::repeat`), so:
//! * a run cut short (kill -9) and run again publishes the rest: the run
//!   and how far it got are the bus checkpoint `replay:<source>`, saved
//!   with each published chunk (atomically on the embedded bus; after the
//!   acks on Kafka, where a chunk published twice is decided once);
//! * a record the source changed since is not replayed over the newer
//!   version (counted as stale);
//! * nothing is removed from `quarantine` (records are never destroyed,
//!   §7.4.3): a record that lands simply stops being *open* ([`select_sql`]);
//!   one that fails again gets a new quarantine row with the new reason and
//!   the replay locator.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use lianqin_bus::{Checkpoint, Envelope, Op, REPLAY_PREFIX};
use serde::{Deserialize, Serialize};

use crate::PipelineError;
use crate::hub::Hub;
use crate::library::raw_table;
use crate::query::QueryEngine;

/// Records published per bus publish (and checkpoint).
pub const CHUNK: usize = 500;

/// Which quarantined records of a source to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only records whose quarantine reason contains this text.
    pub reason: Option<String>,
    /// Only records quarantined at or after this time (µs since the epoch).
    pub since_micros: Option<i64>,
}

/// The checkpoint of a replay run (`replay:<source>` on the bus).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunState {
    run: String,
    filter: Filter,
    /// `(bus_partition, bus_offset)` in the raw table of the last record
    /// published (records are published in that order).
    after: Option<(i64, i64)>,
    published: u64,
    done: bool,
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The run id (`r<UTC time>`).
    pub run: String,
    /// Whether an unfinished run was taken up again.
    pub resumed: bool,
    /// Records the run has published in all (earlier attempts included).
    pub published: u64,
}

/// How a run's records were decided, once the hub processed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Records the hub decided (the rest were stale or published twice).
    pub decided: u64,
    /// Of those, quarantined again, per reason.
    pub quarantined: Vec<(String, u64)>,
}

impl Outcome {
    /// Records that landed in the libraries.
    pub fn landed(&self) -> u64 {
        self.decided - self.quarantined.iter().map(|(_, n)| n).sum::<u64>()
    }
}

fn checkpoint_name(source: &str) -> String {
    format!("replay:{source}")
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// The open quarantined records of `source` matching `filter`, as the raw
/// table holds them, in `(bus_partition, bus_offset)` order after `after`,
/// leaving out those published by `run` already. Open: the newest
/// quarantine row of a version `(source_key, content_hash)` that no library
/// row of the same version followed.
pub fn select_sql(
    engine_tables: &[String],
    source: &str,
    filter: &Filter,
    after: Option<(i64, i64)>,
    run: &str,
) -> String {
    let s = quote(source);
    let mut cond = vec![format!("source_id = '{s}'")];
    if let Some(r) = &filter.reason {
        cond.push(format!("strpos(reason, '{}') > 0", quote(r)));
    }
    if let Some(t) = filter.since_micros {
        cond.push(format!("CAST(ingested_at AS BIGINT) >= {t}"));
    }
    let landed = crate::library::landed_versions_sql(engine_tables, source).unwrap_or_else(|| {
        "SELECT CAST(NULL AS VARCHAR) AS source_key, CAST(NULL AS VARCHAR) AS content_hash, CAST(NULL AS BIGINT) AS t"
            .to_string()
    });
    let after = match after {
        Some((p, o)) => format!("AND (r.bus_partition > {p} OR (r.bus_partition = {p} AND r.bus_offset > {o}))"),
        None => String::new(),
    };
    format!(
        "WITH q AS (SELECT quarantine_id, bus_partition, bus_offset, source_key, content_hash, \
                           CAST(ingested_at AS BIGINT) AS t, \
                           row_number() OVER (PARTITION BY source_key, content_hash \
                                              ORDER BY ingested_at DESC, bus_offset DESC) AS n \
                      FROM quarantine WHERE {cond}), \
              landed AS (SELECT source_key, content_hash, max(t) AS t FROM ({landed}) GROUP BY source_key, content_hash) \
         SELECT r.source_key, r.op, r.payload, r.source_time, r.error, r.locator, r.department, \
                CAST(r.fetched_at AS BIGINT) AS fetched_us, r.content_hash, r.bus_partition, r.bus_offset, q.quarantine_id \
           FROM q JOIN {raw} r ON r.bus_partition = q.bus_partition AND r.bus_offset = q.bus_offset \
           LEFT JOIN landed l ON l.source_key = q.source_key AND l.content_hash = q.content_hash \
          WHERE q.n = 1 AND (l.t IS NULL OR l.t < q.t) \
            AND (r.locator IS NULL OR r.locator NOT LIKE '{prefix}{run}:%') {after} \
          ORDER BY r.bus_partition, r.bus_offset",
        cond = cond.join(" AND "),
        raw = raw_table(source),
        prefix = REPLAY_PREFIX,
        run = quote(run),
    )
}

/// The envelopes of selected raw rows, marked as records of `run`.
/// A record to publish and its `(bus_partition, bus_offset)` in the raw table.
type Selected = ((i64, i64), Envelope);

fn envelopes(source: &str, run: &str, b: &RecordBatch) -> Result<Vec<Selected>, PipelineError> {
    let text = |i: usize| {
        arrow::compute::cast(b.column(i), &DataType::Utf8).map_err(|e| PipelineError::Internal(e.to_string()))
    };
    let int = |i: usize| {
        arrow::compute::cast(b.column(i), &DataType::Int64).map_err(|e| PipelineError::Internal(e.to_string()))
    };
    let (key, op, payload, source_time, error, locator, dept) =
        (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?, text(5)?, text(6)?);
    let (fetched, hash, part, off, qid) = (int(7)?, text(8)?, int(9)?, int(10)?, text(11)?);
    let s = |a: &arrow::array::ArrayRef, i: usize| {
        let a = a.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    let n = |a: &arrow::array::ArrayRef, i: usize| {
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(i).then(|| a.value(i))
    };
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let k = s(&key, i).unwrap_or_default();
        let at =
            format!("record `{k}` of `{source}` at raw {}/{}", n(&part, i).unwrap_or(-1), n(&off, i).unwrap_or(-1));
        let text = s(&payload, i).ok_or_else(|| PipelineError::Library(format!("replay: {at}: no payload")))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| PipelineError::Library(format!("replay: {at}: stored payload is not JSON: {e}")))?;
        let mut e = Envelope::upsert(source, &s(&dept, i).unwrap_or_default(), k, value, s(&source_time, i));
        let want = s(&hash, i).unwrap_or_default();
        if e.hash != want {
            return Err(PipelineError::Library(format!(
                "replay: {at}: stored payload hashes to {} but was recorded as {want}",
                e.hash
            )));
        }
        e.op = if s(&op, i).as_deref() == Some("delete") { Op::Delete } else { Op::Upsert };
        if let Some(us) = n(&fetched, i) {
            e.fetched_at = chrono::DateTime::from_timestamp_micros(us).unwrap_or(e.fetched_at);
        }
        e.error = s(&error, i);
        // A record quarantined again by an earlier replay keeps only the
        // locator it came with.
        let original = s(&locator, i).and_then(|l| {
            if l.starts_with(REPLAY_PREFIX) { l.split_once(" @ ").map(|(_, o)| o.to_string()) } else { Some(l) }
        });
        let qid = s(&qid, i).unwrap_or_default();
        e.locator = Some(match original {
            Some(o) => format!("{REPLAY_PREFIX}{run}:{qid} @ {o}"),
            None => format!("{REPLAY_PREFIX}{run}:{qid}"),
        });
        out.push(((n(&part, i).unwrap_or(0), n(&off, i).unwrap_or(0)), e));
    }
    Ok(out)
}

/// Publishes the open quarantined records of `source` matching `filter` on
/// the source's topic, `CHUNK` at a time, each chunk with the run's
/// checkpoint; takes up an unfinished run first (it must have the same
/// filter). `progress(published, selected)` after each chunk; `who` (the
/// operator) is recorded in the audit entry.
pub async fn publish(
    hub: &Hub,
    who: &str,
    source: &str,
    filter: &Filter,
    mut progress: impl FnMut(u64, u64),
) -> Result<Published, PipelineError> {
    let topic = hub
        .topic_of(source)
        .ok_or_else(|| PipelineError::Config(format!("replay: no source `{source}` in the hub config")))?
        .to_string();
    let bus = hub.bus();
    let name = checkpoint_name(source);
    let saved = bus.load_checkpoint(&name).await.map_err(PipelineError::Bus)?;
    let saved: Option<RunState> = match saved {
        Some(v) => Some(
            serde_json::from_value(v)
                .map_err(|e| PipelineError::Library(format!("replay: checkpoint `{name}` unreadable: {e}")))?,
        ),
        None => None,
    };
    let (mut state, resumed) = match saved {
        Some(s) if !s.done => {
            if &s.filter != filter {
                return Err(PipelineError::Config(format!(
                    "replay: run {} of `{source}` is unfinished with another selection ({}); \
                     run it again with that selection to finish it first",
                    s.run,
                    describe(&s.filter)
                )));
            }
            (s, true)
        }
        _ => {
            let run = format!("r{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"));
            let s = RunState { run, filter: filter.clone(), after: None, published: 0, done: false };
            // The run is on record before anything is published with it.
            let cp = Checkpoint { source: name.clone(), value: serde_json::to_value(&s).unwrap_or_default() };
            bus.publish(&topic, &[], Some(cp)).await.map_err(PipelineError::Bus)?;
            (s, false)
        }
    };
    let engine = QueryEngine::new(&hub.store(), &hub.catalog()).await?;
    let selected: Vec<Selected> =
        if engine.tables().iter().any(|t| t == "quarantine") && engine.tables().contains(&raw_table(source)) {
            let sql = select_sql(engine.tables(), source, filter, state.after, &state.run);
            let mut v = Vec::new();
            for b in engine.sql(&sql).await? {
                v.extend(envelopes(source, &state.run, &b)?);
            }
            v
        } else {
            Vec::new()
        };
    let total = state.published + selected.len() as u64;
    if selected.is_empty() {
        state.done = true;
        let cp = Checkpoint { source: name.clone(), value: serde_json::to_value(&state).unwrap_or_default() };
        bus.publish(&topic, &[], Some(cp)).await.map_err(PipelineError::Bus)?;
        progress(state.published, total);
    }
    let chunks: Vec<&[Selected]> = selected.chunks(CHUNK).collect();
    let last = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let records: Vec<Envelope> = chunk.iter().map(|(_, e)| e.clone()).collect();
        state.after = chunk.last().map(|(pos, _)| *pos);
        state.published += records.len() as u64;
        state.done = i + 1 == last;
        let cp = Checkpoint { source: name.clone(), value: serde_json::to_value(&state).unwrap_or_default() };
        bus.publish(&topic, &records, Some(cp)).await.map_err(PipelineError::Bus)?;
        progress(state.published, total);
    }
    audit(hub, who, source, &state, resumed)?;
    Ok(Published { run: state.run, resumed, published: state.published })
}

fn describe(f: &Filter) -> String {
    let mut v = Vec::new();
    if let Some(r) = &f.reason {
        v.push(format!("--reason {r:?}"));
    }
    if let Some(t) = f.since_micros.and_then(chrono::DateTime::from_timestamp_micros) {
        v.push(format!("--since {}", t.to_rfc3339()));
    }
    if v.is_empty() { "every open record".into() } else { v.join(" ") }
}

fn audit(hub: &Hub, who: &str, source: &str, s: &RunState, resumed: bool) -> Result<(), PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let dept = hub.config().sources.iter().find(|c| c.id == source).map(|c| c.department.clone()).unwrap_or_default();
    let mut ev = AuditEvent::new(EventKind::Other, who, dept, Outcome::Success);
    ev.tables = vec!["quarantine".into(), raw_table(source)];
    ev.detail = serde_json::json!({
        "action": "replay", "source": source, "run": s.run, "published": s.published,
        "resumed": resumed, "selection": describe(&s.filter),
    });
    hub.audit().record_durable(ev)?;
    Ok(())
}

/// How the records of `run` were decided so far (query the libraries).
pub async fn outcome(engine: &QueryEngine, source: &str, run: &str) -> Result<Outcome, PipelineError> {
    let raw = raw_table(source);
    if !engine.tables().contains(&raw) {
        return Ok(Outcome::default());
    }
    let like = format!("{REPLAY_PREFIX}{}:%", quote(run));
    let count = |b: &[RecordBatch]| -> u64 {
        b.first()
            .filter(|b| b.num_rows() > 0)
            .and_then(|b| arrow::compute::cast(b.column(0), &DataType::Int64).ok())
            .map(|c| c.as_primitive::<Int64Type>().value(0) as u64)
            .unwrap_or(0)
    };
    let decided = count(&engine.sql(&format!("SELECT count(*) FROM {raw} WHERE locator LIKE '{like}'")).await?);
    let mut quarantined = Vec::new();
    if engine.tables().iter().any(|t| t == "quarantine") {
        let sql = format!(
            "SELECT reason, count(*) AS n FROM quarantine WHERE source_id = '{}' AND locator LIKE '{like}' \
             GROUP BY reason ORDER BY n DESC, reason",
            quote(source)
        );
        for b in engine.sql(&sql).await? {
            let r = arrow::compute::cast(b.column(0), &DataType::Utf8)
                .map_err(|e| PipelineError::Internal(e.to_string()))?;
            let n = arrow::compute::cast(b.column(1), &DataType::Int64)
                .map_err(|e| PipelineError::Internal(e.to_string()))?;
            let (r, n) = (r.as_string::<i32>(), n.as_primitive::<Int64Type>());
            for i in 0..b.num_rows() {
                quarantined.push((r.value(i).to_string(), n.value(i) as u64));
            }
        }
    }
    Ok(Outcome { decided, quarantined })
}

/// Parses `--since`: RFC 3339, or a date (`2026-12-05`, China time).
pub fn parse_since(s: &str) -> Result<i64, PipelineError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).expect("midnight") - chrono::Duration::hours(8);
        return Ok(t.and_utc().timestamp_micros());
    }
    Err(PipelineError::Config(format!(
        "--since `{s}`: expected RFC 3339 (2026-12-05T08:00:00+08:00) or a date (2026-12-05)"
    )))
}
