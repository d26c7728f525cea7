//! `lianqin status`: each configured source's feed at a glance, for the
//! department IT team that wired it (issue 15 item 2) — whether its last
//! connector pass failed and why, when it last brought records, what
//! arrived and landed today, how fresh the libraries are, and what sits in
//! quarantine by reason.
//!
//! Everything comes from the data dir, so it also works while `lianqin run`
//! holds the bus: connector passes from the audit trail's `connector_run`
//! entries (the read is itself audited as `audit_read`), the rest from the
//! raw tables, the libraries and `quarantine` over SQL. Figures count
//! records (raw rows), "today" is the China calendar day.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::PipelineError;
use crate::library::raw_table;
use crate::query::QueryEngine;

/// A source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The last pass succeeded (or none failed).
    Ok,
    /// The last pass failed.
    Failing,
    /// No pass is on record.
    Unknown,
}

/// One source's figures (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// Source id.
    pub source: String,
    /// Owning department.
    pub department: String,
    /// Ok, failing (the last pass failed) or unknown.
    pub state: State,
    /// The last pass that brought records.
    pub last_success: Option<DateTime<Utc>>,
    /// The last failed pass and its error.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// Records the hub holds from the source (raw table).
    pub records: i64,
    /// Of those, arrived today.
    pub records_today: i64,
    /// Records quarantined today.
    pub quarantined_today: i64,
    /// Open quarantined records (newest decision quarantine) by kind of
    /// reason (the reason without its source/record prefix, up to its first
    /// `: `), most frequent first.
    pub quarantine: Vec<(String, i64)>,
    /// When the newest record was committed.
    pub last_committed: Option<DateTime<Utc>>,
    /// Fetched → committed, median and 99th percentile over the last 24 h
    /// (seconds).
    pub lag_p50_s: Option<f64>,
    /// See `lag_p50_s`.
    pub lag_p99_s: Option<f64>,
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

async fn one_row(engine: &QueryEngine, sql: &str) -> Result<Vec<Option<f64>>, PipelineError> {
    let batches = engine.sql(sql).await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for c in b.columns() {
        let c = arrow::compute::cast(c, &DataType::Float64).map_err(|e| PipelineError::Internal(e.to_string()))?;
        let c = c.as_primitive::<Float64Type>();
        out.push(c.is_valid(0).then(|| c.value(0)));
    }
    Ok(out)
}

/// Start of the China calendar day of `now`, in µs since the epoch.
fn today_start_micros(now: DateTime<Utc>) -> i64 {
    let cn = now + chrono::Duration::hours(8);
    let midnight = cn.date_naive().and_hms_opt(0, 0, 0).expect("midnight");
    (midnight - chrono::Duration::hours(8)).and_utc().timestamp_micros()
}

/// The figures of every source in `sources` over the data dir of `engine`;
/// `runs` are the connector passes read from the audit trail
/// ([`connector_runs`]).
pub async fn collect(
    engine: &QueryEngine,
    sources: &[SourceRef],
    runs: &BTreeMap<String, Runs>,
    now: DateTime<Utc>,
) -> Result<Vec<SourceStatus>, PipelineError> {
    let today = today_start_micros(now);
    let day_ago = now.timestamp_micros() - 86_400_000_000;
    let has = |t: &str| engine.tables().iter().any(|n| n == t);
    let mut out = Vec::new();
    for s in sources {
        let id = quote(&s.id);
        let raw = raw_table(&s.id);
        let (mut records, mut records_today, mut last_committed, mut lag_p50_s, mut lag_p99_s) =
            (0, 0, None, None, None);
        if has(&raw) {
            let r = one_row(
                engine,
                &format!(
                    "SELECT count(*), sum(CASE WHEN CAST(ingested_at AS BIGINT) >= {today} THEN 1 ELSE 0 END), \
                     max(CAST(ingested_at AS BIGINT)), \
                     approx_percentile_cont(CASE WHEN CAST(ingested_at AS BIGINT) >= {day_ago} \
                       THEN (CAST(ingested_at AS BIGINT) - CAST(fetched_at AS BIGINT)) / 1e6 END, 0.5), \
                     approx_percentile_cont(CASE WHEN CAST(ingested_at AS BIGINT) >= {day_ago} \
                       THEN (CAST(ingested_at AS BIGINT) - CAST(fetched_at AS BIGINT)) / 1e6 END, 0.99) \
                     FROM {raw}"
                ),
            )
            .await?;
            records = r.first().copied().flatten().unwrap_or(0.0) as i64;
            records_today = r.get(1).copied().flatten().unwrap_or(0.0) as i64;
            last_committed = r.get(2).copied().flatten().and_then(|us| DateTime::from_timestamp_micros(us as i64));
            lag_p50_s = r.get(3).copied().flatten();
            lag_p99_s = r.get(4).copied().flatten();
        }
        let (mut quarantined_today, mut quarantine) = (0, Vec::new());
        if has("quarantine") {
            let r = one_row(
                engine,
                &format!(
                    "SELECT count(*) FROM quarantine WHERE source_id = '{id}' AND CAST(ingested_at AS BIGINT) >= {today}"
                ),
            )
            .await?;
            quarantined_today = r.first().copied().flatten().unwrap_or(0.0) as i64;
            // Open: the version's newest quarantine row is newer than any
            // library row of that version (what `lianqin replay` replays).
            let landed = crate::library::landed_versions_sql(engine.tables(), &s.id);
            let landed_join = match &landed {
                None => String::new(),
                Some(l) => format!(
                    "LEFT JOIN (SELECT source_key, content_hash, max(t) AS t FROM ({l}) GROUP BY 1, 2) l \
                     ON l.source_key = q.source_key AND l.content_hash = q.content_hash"
                ),
            };
            let landed_cond = if landed.is_none() { "TRUE" } else { "(l.t IS NULL OR l.t < q.t)" };
            let sql = format!(
                "WITH q AS (SELECT source_key, content_hash, \
                                   split_part(regexp_replace(reason, '^source `[^`]*` record `[^`]*`( \\([^)]*\\))?: ', ''), ': ', 1) AS reason, \
                                   CAST(ingested_at AS BIGINT) AS t, \
                                   row_number() OVER (PARTITION BY source_key, content_hash ORDER BY ingested_at DESC, bus_offset DESC) AS n \
                              FROM quarantine WHERE source_id = '{id}') \
                 SELECT q.reason, count(*) AS c FROM q {landed_join} WHERE q.n = 1 AND {landed_cond} \
                 GROUP BY q.reason ORDER BY c DESC, q.reason"
            );
            for b in engine.sql(&sql).await? {
                let r = arrow::compute::cast(b.column(0), &DataType::Utf8)
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
                let c = arrow::compute::cast(b.column(1), &DataType::Int64)
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
                let (r, c) = (r.as_string::<i32>(), c.as_primitive::<Int64Type>());
                for i in 0..b.num_rows() {
                    quarantine.push((r.value(i).to_string(), c.value(i)));
                }
            }
        }
        let run = runs.get(&s.id);
        let last_success = run.and_then(|r| r.last_success);
        let last_error = run.and_then(|r| r.last_error.clone());
        let state = state_of(last_success, last_error.as_ref().map(|(t, _)| *t), records);
        out.push(SourceStatus {
            source: s.id.clone(),
            department: s.department.clone(),
            state,
            last_success,
            last_error,
            records,
            records_today,
            quarantined_today,
            quarantine,
            last_committed,
            lag_p50_s,
            lag_p99_s,
        });
    }
    Ok(out)
}

/// A source's state from its last passes: failing when the last failure
/// is newer than the last success; unknown without passes or records.
pub fn state_of(last_success: Option<DateTime<Utc>>, last_error: Option<DateTime<Utc>>, records: i64) -> State {
    match (last_success, last_error) {
        (_, None) if last_success.is_some() || records > 0 => State::Ok,
        (None, None) => State::Unknown,
        (Some(ok), Some(err)) if ok > err => State::Ok,
        _ => State::Failing,
    }
}

/// The kind of a quarantine reason: without its `source `…` record `…`
/// (…): ` prefix, up to its first `: ` (as `collect` groups them).
pub fn reason_kind(reason: &str) -> String {
    let mut r = reason;
    if let Some(rest) = r.strip_prefix("source `")
        && let Some(i) = rest.find("` record `")
        && let Some(j) = rest[i + 10..].find('`')
    {
        let mut after = &rest[i + 10 + j + 1..];
        if let Some(p) = after.strip_prefix(" (")
            && let Some(k) = p.find(')')
        {
            after = &p[k + 1..];
        }
        if let Some(a) = after.strip_prefix(": ") {
            r = a;
        }
    }
    r.split(": ").next().unwrap_or(r).to_string()
}

/// A configured source: its id and department.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SourceRef {
    /// Source id.
    pub id: String,
    /// Owning department.
    pub department: String,
}

/// The sources of a hub config file, read without resolving anything else
/// (`${ENV}` secrets, mappings): whoever checks a feed need not hold its
/// secrets.
pub fn sources_of(config: &Path) -> Result<Vec<SourceRef>, PipelineError> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        sources: Vec<SourceRef>,
    }
    let text =
        std::fs::read_to_string(config).map_err(|e| PipelineError::Config(format!("{}: {e}", config.display())))?;
    let doc: Doc = toml::from_str(&text).map_err(|e| PipelineError::Config(format!("{}: {e}", config.display())))?;
    Ok(doc.sources)
}

/// The data dir a config names (`data_dir`), if any, read the same way.
pub fn data_dir_of(config: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    let d = std::path::PathBuf::from(doc.get("data_dir")?.as_str()?);
    Some(if d.is_relative() { config.parent().unwrap_or(Path::new(".")).join(d) } else { d })
}

/// A source's connector passes as the audit trail has them.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// The last pass that brought records (passes without records are not audited).
    pub last_success: Option<DateTime<Utc>>,
    /// The last failed pass and its error.
    pub last_error: Option<(DateTime<Utc>, String)>,
}

/// Every `connector_run` entry in the audit trail of `data_dir`, with the
/// source it names (read once, then [`runs_of`] / [`passes_of`]).
pub fn connector_run_events(data_dir: &Path) -> Result<Vec<(String, lianqin_audit::AuditEvent)>, PipelineError> {
    use lianqin_audit::{AuditFilter, EventKind};
    let mut out = Vec::new();
    let streams = crate::audit::streams(data_dir);
    if streams.is_empty() {
        return Ok(out);
    }
    let key = crate::audit::master_key(data_dir, false)?;
    for st in streams {
        let records =
            lianqin_audit::read(&st, &key, AuditFilter { kind: Some(EventKind::ConnectorRun), ..Default::default() })
                .map_err(|e| PipelineError::Library(format!("audit {}: {e}", st.display())))?;
        for r in records {
            let ev = r.map_err(|e| PipelineError::Library(format!("audit {}: {e}", st.display())))?.event;
            if let Some(source) = ev.detail.get("source").and_then(|v| v.as_str()) {
                out.push((source.to_string(), ev));
            }
        }
    }
    Ok(out)
}

/// The connector passes of every source in the audit trail of `data_dir`.
pub fn connector_runs(data_dir: &Path) -> Result<BTreeMap<String, Runs>, PipelineError> {
    Ok(runs_of(&connector_run_events(data_dir)?))
}

/// Last success and last failure per source of `events` ([`connector_run_events`]).
pub fn runs_of(events: &[(String, lianqin_audit::AuditEvent)]) -> BTreeMap<String, Runs> {
    let mut out: BTreeMap<String, Runs> = BTreeMap::new();
    for (source, ev) in events {
        let e = out.entry(source.clone()).or_default();
        if ev.outcome == lianqin_audit::Outcome::Success {
            if e.last_success.is_none_or(|t| t < ev.time) {
                e.last_success = Some(ev.time);
            }
        } else if e.last_error.as_ref().is_none_or(|(t, _)| *t < ev.time) {
            let msg = ev.detail.get("error").and_then(|v| v.as_str()).unwrap_or("").to_string();
            e.last_error = Some((ev.time, msg));
        }
    }
    out
}

/// One successful connector pass as the audit trail has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Source id.
    pub source: String,
    /// When it ended.
    pub at: DateTime<Utc>,
    /// Records published (repeats at page boundaries included).
    pub records: u64,
    /// What the source itself reported for the pass (HTTP `total`), when it does.
    pub reported: Option<u64>,
    /// Distinct keys published (compared with `reported`).
    pub distinct: u64,
    /// Requests retried during the pass.
    pub retries: u64,
}

/// Every successful connector pass of `sources` in the audit trail of
/// `data_dir`, oldest first (reconciliation of source-reported counts).
pub fn connector_passes(data_dir: &Path, sources: &[SourceRef]) -> Result<Vec<Pass>, PipelineError> {
    Ok(passes_of(&connector_run_events(data_dir)?, sources))
}

/// The successful passes of `sources` among `events` ([`connector_run_events`]), oldest first.
pub fn passes_of(events: &[(String, lianqin_audit::AuditEvent)], sources: &[SourceRef]) -> Vec<Pass> {
    let mut out = Vec::new();
    for (source, ev) in events {
        if ev.outcome != lianqin_audit::Outcome::Success || !sources.iter().any(|s| s.id == *source) {
            continue;
        }
        let n = |k: &str| ev.detail.get(k).and_then(|v| v.as_u64());
        out.push(Pass {
            at: ev.time,
            records: n("records").unwrap_or(0),
            reported: n("reported"),
            distinct: n("distinct").unwrap_or(0),
            retries: n("retries").unwrap_or(0),
            source: source.clone(),
        });
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.source.cmp(&b.source)));
    out
}

/// The table `lianqin status` prints.
pub fn render(rows: &[SourceStatus], now: DateTime<Utc>) -> String {
    use std::fmt::Write;
    let ago = |t: Option<DateTime<Utc>>| match t {
        None => "—".to_string(),
        Some(t) => {
            let s = (now - t).num_seconds().max(0);
            if s < 120 {
                format!("{s} s ago")
            } else if s < 7200 {
                format!("{} min ago", s / 60)
            } else if s < 172_800 {
                format!("{} h ago", s / 3600)
            } else {
                format!("{} d ago", s / 86_400)
            }
        }
    };
    let secs = |v: Option<f64>| v.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "—".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<12} {:<8} {:>10} {:>8} {:>8} {:>10} {:>10} {:<14} {:<14}",
        "source 数据源",
        "department",
        "state",
        "records",
        "today",
        "quar.",
        "lag p50",
        "lag p99",
        "last records",
        "committed"
    );
    for r in rows {
        let state = match r.state {
            State::Ok => "ok",
            State::Failing => "FAILING",
            State::Unknown => "unknown",
        };
        let open: i64 = r.quarantine.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            out,
            "{:<22} {:<12} {:<8} {:>10} {:>8} {:>8} {:>10} {:>10} {:<14} {:<14}",
            r.source,
            r.department,
            state,
            r.records,
            r.records_today,
            open,
            secs(r.lag_p50_s),
            secs(r.lag_p99_s),
            ago(r.last_success),
            ago(r.last_committed)
        );
        if r.state == State::Failing
            && let Some((t, e)) = &r.last_error
        {
            let _ = writeln!(out, "    last error ({}): {e}", ago(Some(*t)));
        }
        for (reason, n) in r.quarantine.iter().take(3) {
            let reason: String = reason.chars().take(100).collect();
            let _ = writeln!(out, "    quarantine {n:>6}  {reason}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reason_kinds_drop_the_locator_and_the_details() {
        use super::reason_kind;
        assert_eq!(
            reason_kind("source `s` record `k1` (file a.jsonl line 3): failed at run time: cast"),
            "failed at run time"
        );
        assert_eq!(reason_kind("source `s` record `k1`: missing required field `id`"), "missing required field `id`");
        assert_eq!(reason_kind("not JSON: expected value"), "not JSON");
    }

    use super::*;

    #[test]
    fn a_config_is_read_for_its_sources_without_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.toml");
        std::fs::write(
            &p,
            "data_dir = \"state\"\n[[sources]]\nid = \"police_110\"\ndepartment = \"police\"\nmapping = \"m.toml\"\n\
             [sources.connector]\ntype = \"http\"\nurl = \"http://x\"\nheaders = { \"X-API-Key\" = \"${NOT_SET_ANYWHERE}\" }\n",
        )
        .unwrap();
        assert_eq!(sources_of(&p).unwrap(), vec![SourceRef { id: "police_110".into(), department: "police".into() }]);
        assert_eq!(data_dir_of(&p), Some(dir.path().join("state")));
        assert!(sources_of(&dir.path().join("missing.toml")).unwrap_err().to_string().contains("missing.toml"));
    }
}
