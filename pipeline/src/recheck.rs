//! The second callback (二次回访, §8.1.3–8.1.4, issue 14 item 3): every half
//! year the superior department calls back at least 30% of each station's
//! callback records again; a citizen still dissatisfied gets the case
//! reopened and handled by a person other than the original handler; once a
//! station has 3 reopened cases in the half year, all its callback records
//! are called back (100%).
//!
//! * **Population** of a half year (`2026H2`, Beijing time) and station: the
//!   current matters whose `callback_at` falls in it.
//! * **Draw** ([`draw`]): per station, the population ordered by
//!   SHA-256(seed, matter id) and the first ⌈30%⌉ taken (all of it at 100%).
//!   The seed is recorded with the draw and reused by later draws of the same
//!   half and station, so a draw is reproducible and a later draw (new
//!   callback records, or the station reaching 3 reopenings) only adds to it.
//! * **Result** ([`record_result`]): one per drawn matter, immutable; the
//!   answer is a code of the `satisfaction` table; `dissatisfied` reopens the
//!   case and must name the new handler, refused when it is the original
//!   handler (names compared as keyed tokens: the journal holds no name).
//! * **Reopened cases** of a station and half: drawn matters reopened here,
//!   plus matters of the population that a source's re-handling points to
//!   (`reopened_from`).
//!
//! Everything is kept in the append-only journal
//! `<data dir>/supervision/recheck.jsonl` ([`crate::journal`]) and is an
//! audit entry (written by the caller, `lianqin recheck`); the SQL table
//! [`TABLE`] (`matter_recheck`, one row per drawn matter) is read from it
//! and filtered by the caller's policy as a `matter*` table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::PipelineError;

/// The SQL table of drawn matters and their results.
pub const TABLE: &str = "matter_recheck";

/// Share of a station's callback records drawn, in percent (§8.1.3).
pub const RATE_PERCENT: u32 = 30;

/// Reopened cases after which a station's draw is 100% (§8.1.4).
pub const FULL_DRAW_AFTER: usize = 3;

/// The journal of a data dir.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("supervision").join("recheck.jsonl")
}

/// One drawn matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drawn {
    /// The matter.
    pub matter_id: String,
    /// Its department and division when drawn (what policies filter on).
    pub department: Option<String>,
    /// Division code.
    pub division: Option<String>,
    /// §7.4.4 category (policies filter on it too).
    pub category: Option<String>,
    /// Important matter (重要事项).
    pub important: Option<bool>,
}

/// A draw for one station and half year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draw {
    /// `YYYYH1` / `YYYYH2`.
    pub half: String,
    /// The station (`""` for matters without one).
    pub station: String,
    /// The seed of the order.
    pub seed: u64,
    /// 30 or 100.
    pub rate_percent: u32,
    /// Callback records of the station in the half year when drawn.
    pub population: u32,
    /// Reopened cases of the station in the half year when drawn.
    pub reopened: u32,
    /// Matters drawn by this draw (not drawn before).
    pub drawn: Vec<Drawn>,
}

/// The result of one second callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The half year of the draw.
    pub half: String,
    /// The matter.
    pub matter_id: String,
    /// A `satisfaction` code.
    pub answer: String,
    /// Free text (kept; sensitive).
    pub note: String,
    /// When dissatisfied: the case is reopened for this handler (keyed token).
    pub new_handler_token: Option<String>,
    /// The original handler's token (None when the source names none).
    pub original_handler_token: Option<String>,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who (the officer named with `--by`).
    pub by: String,
    /// A draw, or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<Draw>,
    /// a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

/// Reads the journal.
pub fn load(data_dir: &Path) -> Result<Vec<Entry>, PipelineError> {
    crate::journal::load(&journal_path(data_dir))
}

/// Checks `YYYYH1` / `YYYYH2` and returns its bounds in UTC microseconds
/// (Beijing half years).
pub fn half_bounds(half: &str) -> Result<(i64, i64), PipelineError> {
    let bad = || PipelineError::Config(format!("{half:?} is not a half year (e.g. 2026H2)"));
    let (y, h) = half.split_once('H').ok_or_else(bad)?;
    let y: i32 = y.parse().map_err(|_| bad())?;
    if !(2000..=2100).contains(&y) || y.to_string().len() != 4 {
        return Err(bad());
    }
    let (from, to) = match h {
        "1" => ((y, 1), (y, 7)),
        "2" => ((y, 7), (y + 1, 1)),
        _ => return Err(bad()),
    };
    let at = |(y, m): (i32, u32)| {
        chrono::NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| (t - chrono::Duration::hours(8)).and_utc().timestamp_micros())
            .ok_or_else(bad)
    };
    Ok((at(from)?, at(to)?))
}

/// A callback record of the half year.
#[derive(Debug, Clone)]
struct Candidate {
    matter_id: String,
    station: String,
    department: Option<String>,
    division: Option<String>,
    category: Option<String>,
    important: Option<bool>,
}

async fn strings(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<Option<String>>>, PipelineError> {
    let df = ctx.sql(sql).await.map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))?;
    let batches = df.collect().await.map_err(|e| PipelineError::Query(format!("{TABLE}: {e}")))?;
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<StringArray> = b
            .columns()
            .iter()
            .map(|c| {
                let c = arrow::compute::cast(c, &DataType::Utf8).map_err(|e| PipelineError::Query(e.to_string()))?;
                Ok(c.as_any().downcast_ref::<StringArray>().cloned().unwrap_or_else(|| StringArray::from(vec![""; 0])))
            })
            .collect::<Result<_, PipelineError>>()?;
        for i in 0..b.num_rows() {
            out.push(
                cols.iter().map(|c| arrow::array::Array::is_valid(c, i).then(|| c.value(i).to_string())).collect(),
            );
        }
    }
    Ok(out)
}

/// The callback records of `half` and the matters a source re-handling
/// points to, read with `ctx` (unrestricted).
async fn population(ctx: &SessionContext, half: &str) -> Result<(Vec<Candidate>, BTreeSet<String>), PipelineError> {
    let (from, to) = half_bounds(half)?;
    let rows = strings(
        ctx,
        &format!(
            "SELECT matter_id, COALESCE(station, ''), department, division, category, important FROM matter \
             WHERE callback_at >= to_timestamp_micros({from}) AND callback_at < to_timestamp_micros({to}) \
             ORDER BY matter_id"
        ),
    )
    .await?;
    let pop = rows
        .into_iter()
        .filter_map(|r| {
            Some(Candidate {
                matter_id: r[0].clone()?,
                station: r[1].clone().unwrap_or_default(),
                department: r[2].clone(),
                division: r[3].clone(),
                category: r[4].clone(),
                important: r[5].as_deref().map(|v| v == "true"),
            })
        })
        .collect();
    let reopened = strings(ctx, "SELECT DISTINCT reopened_from FROM matter WHERE reopened_from IS NOT NULL")
        .await?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    Ok((pop, reopened))
}

fn order_key(seed: u64, matter_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(matter_id.as_bytes());
    h.finalize().into()
}

/// What a draw did for one station.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationDraw {
    /// The station (`""`: none).
    pub station: String,
    /// Callback records in the half year.
    pub population: usize,
    /// Reopened cases in the half year.
    pub reopened: usize,
    /// 30 or 100.
    pub rate_percent: u32,
    /// Seed of the order.
    pub seed: u64,
    /// Drawn so far, this draw included.
    pub drawn_total: usize,
    /// Drawn by this draw.
    pub drawn_now: Vec<String>,
}

/// Reopened cases per station in `half` (journal and sources).
fn reopened_by_station(
    entries: &[Entry],
    half: &str,
    pop: &[Candidate],
    source_reopened: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let station_of: BTreeMap<&str, &str> = pop.iter().map(|c| (c.matter_id.as_str(), c.station.as_str())).collect();
    let drawn_station: BTreeMap<String, String> = entries
        .iter()
        .filter_map(|e| e.draw.as_ref())
        .filter(|d| d.half == half)
        .flat_map(|d| d.drawn.iter().map(move |m| (m.matter_id.clone(), d.station.clone())))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in pop.iter().filter(|c| source_reopened.contains(&c.matter_id)) {
        out.entry(c.station.clone()).or_default().insert(c.matter_id.clone());
    }
    for r in entries.iter().filter_map(|e| e.result.as_ref()) {
        if r.half == half && r.new_handler_token.is_some() {
            let st = drawn_station
                .get(&r.matter_id)
                .cloned()
                .or_else(|| station_of.get(r.matter_id.as_str()).map(|s| s.to_string()))
                .unwrap_or_default();
            out.entry(st).or_default().insert(r.matter_id.clone());
        }
    }
    out
}

/// Draws the second callbacks of `half` for every station with callback
/// records, appends one journal entry per station that gets new matters,
/// and returns what was drawn per station. `seed` (else a random one) is
/// used for stations without an earlier draw in this half; a different seed
/// for a station already drawn is refused.
pub async fn draw(
    ctx: &SessionContext,
    data_dir: &Path,
    half: &str,
    seed: Option<u64>,
    by: &str,
) -> Result<(Vec<StationDraw>, Vec<Entry>), PipelineError> {
    check_by(by)?;
    let entries = load(data_dir)?;
    let (pop, source_reopened) = population(ctx, half).await?;
    let reopened = reopened_by_station(&entries, half, &pop, &source_reopened);
    let mut by_station: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in &pop {
        by_station.entry(c.station.as_str()).or_default().push(c);
    }
    let fresh_seed = seed.unwrap_or_else(rand_seed);
    let mut summary = Vec::new();
    let mut written = Vec::new();
    for (station, cands) in by_station {
        let earlier: Vec<&Draw> =
            entries.iter().filter_map(|e| e.draw.as_ref()).filter(|d| d.half == half && d.station == station).collect();
        let seed_used = match (earlier.first(), seed) {
            (Some(d), Some(s)) if d.seed != s => {
                return Err(PipelineError::Config(format!(
                    "{half} {station}: already drawn with seed {}; a draw only adds to it with the same seed",
                    d.seed
                )));
            }
            (Some(d), _) => d.seed,
            (None, _) => fresh_seed,
        };
        let before: BTreeSet<&str> =
            earlier.iter().flat_map(|d| d.drawn.iter().map(|m| m.matter_id.as_str())).collect();
        let n_reopened = reopened.get(station).map_or(0, BTreeSet::len);
        let rate = if n_reopened >= FULL_DRAW_AFTER { 100 } else { RATE_PERCENT };
        let need = (cands.len() * rate as usize).div_ceil(100);
        let mut ordered = cands.clone();
        ordered.sort_by_key(|c| order_key(seed_used, &c.matter_id));
        let new: Vec<&Candidate> =
            ordered.iter().take(need).filter(|c| !before.contains(c.matter_id.as_str())).copied().collect();
        if !new.is_empty() {
            let entry = Entry {
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                by: by.to_string(),
                draw: Some(Draw {
                    half: half.to_string(),
                    station: station.to_string(),
                    seed: seed_used,
                    rate_percent: rate,
                    population: cands.len() as u32,
                    reopened: n_reopened as u32,
                    drawn: new
                        .iter()
                        .map(|c| Drawn {
                            matter_id: c.matter_id.clone(),
                            department: c.department.clone(),
                            division: c.division.clone(),
                            category: c.category.clone(),
                            important: c.important,
                        })
                        .collect(),
                }),
                result: None,
            };
            crate::journal::append(&journal_path(data_dir), &entry)?;
            written.push(entry);
        }
        summary.push(StationDraw {
            station: station.to_string(),
            population: cands.len(),
            reopened: n_reopened,
            rate_percent: rate,
            seed: seed_used,
            drawn_total: before.len() + new.len(),
            drawn_now: new.iter().map(|c| c.matter_id.clone()).collect(),
        });
    }
    Ok((summary, written))
}

fn rand_seed() -> u64 {
    rand::random()
}

fn check_by(by: &str) -> Result<(), PipelineError> {
    if by.trim().is_empty() {
        return Err(PipelineError::Config("--by: name the officer who decided".into()));
    }
    Ok(())
}

/// The keyed token of a person's name (NFKC, no spaces).
fn name_token(data_dir: &Path, name: &str) -> Result<Option<String>, PipelineError> {
    let key = crate::mapping::personal::KeyScope::DataDir(data_dir.to_path_buf()).key()?;
    Ok(lianqin_resolve::normalize::name(name).and_then(|n| key.token(&n)))
}

/// Records the result of the second callback of `matter_id`: it must have
/// been drawn and have no result yet. `answer` is a `satisfaction` code or
/// label; `dissatisfied` reopens the case for `new_handler`, who must not be
/// the original handler.
#[allow(clippy::too_many_arguments)]
pub async fn record_result(
    ctx: &SessionContext,
    data_dir: &Path,
    codes: &crate::schema::CodeTable,
    matter_id: &str,
    answer: &str,
    new_handler: Option<&str>,
    note: &str,
    by: &str,
) -> Result<Entry, PipelineError> {
    check_by(by)?;
    let entries = load(data_dir)?;
    let half = entries
        .iter()
        .filter_map(|e| e.draw.as_ref())
        .find(|d| d.drawn.iter().any(|m| m.matter_id == matter_id))
        .map(|d| d.half.clone())
        .ok_or_else(|| {
            PipelineError::Config(format!(
                "{matter_id}: not drawn for a second callback (`lianqin recheck draw` first)"
            ))
        })?;
    if let Some(e) = entries.iter().find(|e| e.result.as_ref().is_some_and(|r| r.matter_id == matter_id)) {
        return Err(PipelineError::Config(format!(
            "{matter_id}: its second callback was recorded at {} by {} (results are never changed)",
            e.at, e.by
        )));
    }
    let code = codes.lookup(answer).map(|c| c.code.clone()).ok_or_else(|| {
        let known: Vec<&str> = codes.codes.iter().map(|c| c.code.as_str()).collect();
        PipelineError::Config(format!("--answer {answer:?}: not a satisfaction code ({})", known.join(", ")))
    })?;
    let dissatisfied = code == "dissatisfied";
    let (new_token, original_token) = match (dissatisfied, new_handler.map(str::trim).filter(|h| !h.is_empty())) {
        (true, None) => {
            return Err(PipelineError::Config(format!(
                "{matter_id}: a dissatisfied citizen's case is reopened: name its new handler with --handler"
            )));
        }
        (false, Some(_)) => {
            return Err(PipelineError::Config(format!(
                "{matter_id}: --handler reopens a case, only for --answer dissatisfied"
            )));
        }
        (false, None) => (None, None),
        (true, Some(h)) => {
            let rows = strings(
                ctx,
                &format!("SELECT handler FROM matter WHERE matter_id = '{}'", matter_id.replace('\'', "''")),
            )
            .await?;
            let original = rows.first().and_then(|r| r[0].clone());
            let original_token = match &original {
                Some(o) => name_token(data_dir, o)?,
                None => None,
            };
            let new_token = name_token(data_dir, h)?
                .ok_or_else(|| PipelineError::Config(format!("--handler {h:?}: not a name")))?;
            if original_token.as_ref() == Some(&new_token) {
                return Err(PipelineError::Config(format!(
                    "{matter_id}: the reopened case must be handled by a person other than its original handler (§8.1.3)"
                )));
            }
            if original.is_none() {
                tracing::warn!(matter = matter_id, "the source names no original handler: not compared");
            }
            (Some(new_token), original_token)
        }
    };
    let entry = Entry {
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        by: by.to_string(),
        draw: None,
        result: Some(Outcome {
            half,
            matter_id: matter_id.to_string(),
            answer: code,
            note: note.to_string(),
            new_handler_token: new_token,
            original_handler_token: original_token,
        }),
    };
    crate::journal::append(&journal_path(data_dir), &entry)?;
    Ok(entry)
}

/// Columns of [`TABLE`] with their sensitivity label (for the policy).
pub fn column_labels() -> Vec<(&'static str, &'static str)> {
    vec![
        ("half", "public"),
        ("station", "public"),
        ("department", "public"),
        ("division", "public"),
        ("category", "public"),
        ("important", "public"),
        ("matter_id", "public"),
        ("seed", "internal"),
        ("rate_percent", "public"),
        ("drawn_at", "public"),
        ("drawn_by", "internal"),
        ("answer", "internal"),
        ("answered_at", "public"),
        ("answered_by", "internal"),
        ("reopened", "public"),
        ("note", "sensitive"),
    ]
}

/// [`TABLE`] as one batch: a row per drawn matter with its result, if any.
pub fn table_batch(entries: &[Entry]) -> Result<RecordBatch, PipelineError> {
    let results: BTreeMap<&str, (&Entry, &Outcome)> =
        entries.iter().filter_map(|e| e.result.as_ref().map(|r| (r.matter_id.as_str(), (e, r)))).collect();
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::new(); 12];
    let mut seeds = Vec::new();
    let mut rates = Vec::new();
    let mut reopened = Vec::new();
    let mut important = Vec::new();
    for e in entries {
        let Some(d) = &e.draw else { continue };
        for m in &d.drawn {
            let r = results.get(m.matter_id.as_str());
            let text = [
                Some(d.half.clone()),
                Some(d.station.clone()),
                m.department.clone(),
                m.division.clone(),
                m.category.clone(),
                Some(m.matter_id.clone()),
                Some(e.at.clone()),
                Some(e.by.clone()),
                r.map(|(_, o)| o.answer.clone()),
                r.map(|(re, _)| re.at.clone()),
                r.map(|(re, _)| re.by.clone()),
                r.map(|(_, o)| o.note.clone()),
            ];
            for (i, v) in text.into_iter().enumerate() {
                cols[i].push(v);
            }
            seeds.push(d.seed);
            rates.push(d.rate_percent);
            reopened.push(r.is_some_and(|(_, o)| o.new_handler_token.is_some()));
            important.push(m.important);
        }
    }
    let s = |i: usize| Arc::new(StringArray::from(cols[i].clone())) as ArrayRef;
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        utf8("half"),
        utf8("station"),
        utf8("department"),
        utf8("division"),
        utf8("category"),
        Field::new("important", DataType::Boolean, true),
        utf8("matter_id"),
        Field::new("seed", DataType::UInt64, false),
        Field::new("rate_percent", DataType::UInt32, false),
        utf8("drawn_at"),
        utf8("drawn_by"),
        utf8("answer"),
        utf8("answered_at"),
        utf8("answered_by"),
        Field::new("reopened", DataType::Boolean, false),
        utf8("note"),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            s(0),
            s(1),
            s(2),
            s(3),
            s(4),
            Arc::new(BooleanArray::from(important)),
            s(5),
            Arc::new(UInt64Array::from(seeds)),
            Arc::new(UInt32Array::from(rates)),
            s(6),
            s(7),
            s(8),
            s(9),
            s(10),
            Arc::new(BooleanArray::from(reopened)),
            s(11),
        ],
    )
    .map_err(|e| PipelineError::Internal(format!("{TABLE}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_years_are_beijing_time() {
        let (from, to) = half_bounds("2026H2").unwrap();
        assert_eq!(chrono::DateTime::from_timestamp_micros(from).unwrap().to_rfc3339(), "2026-06-30T16:00:00+00:00");
        assert_eq!(chrono::DateTime::from_timestamp_micros(to).unwrap().to_rfc3339(), "2026-12-31T16:00:00+00:00");
        for bad in ["2026", "2026H3", "26H1", "H1", "2026h1", "x2026H1"] {
            assert!(half_bounds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_order_depends_on_the_seed_only() {
        let ids = ["a:1", "a:2", "a:3", "a:4", "a:5"];
        let order = |seed| {
            let mut v = ids.to_vec();
            v.sort_by_key(|i| order_key(seed, i));
            v
        };
        assert_eq!(order(7), order(7));
        assert_ne!(order(7), order(8));
        let mut rev = ids.to_vec();
        rev.reverse();
        rev.sort_by_key(|i| order_key(7, i));
        assert_eq!(rev, order(7), "input order does not matter");
    }
}
