//! Station supervision KPIs (`pipeline/src/kpi.rs`, issue 14 items 1–2)
//! over the demo's real libraries, compared with figures computed here
//! independently from the simulator's 12345 tickets as served: periods,
//! hours to handling and closure, callback status against the deadline
//! (closed + 3 working days: the planted tickets around the 2025 Spring
//! Festival carry deadlines worked out by hand from the State Council
//! notice, the others use `lianqin_domain::calendar`, property-tested
//! against the reference calendar), satisfaction, reopenings; the overdue
//! list; and the caller's permissions.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use chrono::{Datelike, NaiveDateTime, TimeZone, Utc};
use lianqin_pipeline::demo;
use lianqin_pipeline::query::{OutputFormat, format_batches};
use lianqin_sim::SimConfig;
use lianqin_tests::{demo_password, engine, lianqin_bin};
use serde_json::Value;

fn small() -> SimConfig {
    SimConfig {
        incidents: 30,
        tickets: 80,
        enterprises: 15,
        cases: 15,
        env_files: 1,
        env_rows_per_file: 10,
        ..Default::default()
    }
}

/// A Beijing local time as served (`YYYY-MM-DD HH:MM:SS`) in UTC.
fn utc(local: &str) -> chrono::DateTime<Utc> {
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").unwrap_or_else(|e| panic!("{local}: {e}"));
    Utc.from_utc_datetime(&(t - chrono::Duration::hours(8)))
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn hours(from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>) -> f64 {
    (to - from).num_seconds() as f64 / 3600.0
}

/// What the KPIs must say about one ticket, from the ticket as served.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    station: String,
    month: String,
    half_year: String,
    hours_to_handling: Option<f64>,
    hours_to_closure: Option<f64>,
    callback_status: Option<String>,
    satisfaction: Option<String>,
    reopened: bool,
    reopened_from: Option<String>,
}

/// A `kpi_matter` group: station, division, period.
type GroupKey = (String, Option<String>, String);

/// Exact percentile with linear interpolation (PostgreSQL's percentile_cont).
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = p * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

fn expected_facts(truth: &lianqin_sim::Truth) -> BTreeMap<String, Facts> {
    let now = Utc::now();
    let planted: BTreeMap<&str, &lianqin_sim::PlantedRecord> =
        truth.planted.iter().map(|p| (p.key.as_str(), p)).collect();
    let reopened_keys: BTreeSet<&str> = truth.tickets.iter().filter_map(|t| s(t, "original_ticket_no")).collect();
    let stage_index = |st: &str| lianqin_sim::TICKET_STAGES.iter().position(|x| *x == st).expect("a known status");
    let mut out = BTreeMap::new();
    for t in &truth.tickets {
        let no = s(t, "ticket_no").expect("ticket_no");
        let accept = utc(s(t, "accept_time").expect("accept_time"));
        let local_accept = accept + chrono::Duration::hours(8);
        let finish = s(t, "finish_time").map(utc);
        let callback = s(t, "callback_time").map(utc);
        let updated = utc(s(t, "updated_at").expect("updated_at"));
        // One sync: the hub saw the ticket once, at its current status.
        let handled = stage_index(s(t, "status").expect("status")) >= 2;
        let due = match planted.get(no) {
            Some(p) => p.callback_due.map(utc),
            None => finish.and_then(|f| {
                let local = f + chrono::Duration::hours(8);
                let d = lianqin_domain::calendar::add_working_days(local.date_naive(), 3).ok()?;
                Some(Utc.from_utc_datetime(&(d.and_time(local.time()) - chrono::Duration::hours(8))))
            }),
        };
        let callback_status = finish.map(|_| {
            match (due, callback) {
                (None, _) => "no_deadline",
                (Some(d), Some(c)) if c <= d => "in_time",
                (Some(_), Some(_)) => "late",
                (Some(d), None) if now > d => "missing",
                (Some(_), None) => "pending",
            }
            .to_string()
        });
        let satisfaction = s(t, "satisfaction").map(|v| {
            match v {
                "满意" => "satisfied",
                "基本满意" => "basically_satisfied",
                "不满意" => "dissatisfied",
                other => panic!("unknown satisfaction {other}"),
            }
            .to_string()
        });
        out.insert(
            format!("12345:{no}"),
            Facts {
                station: s(t, "handling_dept").expect("handling_dept").to_string(),
                month: local_accept.format("%Y-%m").to_string(),
                half_year: format!("{}H{}", local_accept.year(), if local_accept.month() <= 6 { 1 } else { 2 }),
                hours_to_handling: handled.then(|| hours(accept, updated)),
                hours_to_closure: finish.map(|f| hours(accept, f)),
                callback_status,
                satisfaction,
                reopened: reopened_keys.contains(no),
                reopened_from: s(t, "original_ticket_no").map(|o| format!("12345:{o}")),
            },
        );
    }
    out
}

/// Rows of a query as text cells (NULL = None), via CSV of the engine.
async fn table(d: &std::path::Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let e = engine(d).await;
    let b = e.sql(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
    let text = format_batches(&b, OutputFormat::Csv).unwrap();
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    r.records().map(|rec| rec.unwrap().iter().map(|c| (!c.is_empty()).then(|| c.to_string())).collect()).collect()
}

fn float(c: &Option<String>) -> Option<f64> {
    c.as_deref().map(|v| v.parse::<f64>().unwrap_or_else(|e| panic!("{v}: {e}")))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        _ => false,
    }
}

/// `sql --as user` through the binary, one integer.
fn count_as(d: &std::path::Path, user: &str, sql: &str) -> i64 {
    let out = Command::new(lianqin_bin())
        .args(["sql", "--format", "csv", "--as", user, "--data-dir"])
        .arg(d)
        .arg(sql)
        .env_remove("LIANQIN_POLICIES")
        .env("LIANQIN_PASSWORD", demo_password(user))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{user}: {sql}: {text}{}", String::from_utf8_lossy(&out.stderr));
    let v = text.lines().nth(1).unwrap_or_default().trim().to_string();
    if v.is_empty() { 0 } else { v.parse().unwrap_or_else(|e| panic!("{user}: {sql}: {v}: {e}")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_kpis_equal_the_figures_of_the_tickets_as_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    let truth = sim.truth();
    let want = expected_facts(&truth);
    assert!(want.len() > 80, "generated and planted tickets: {}", want.len());
    let statuses: BTreeSet<_> = want.values().filter_map(|f| f.callback_status.clone()).collect();
    for st in ["in_time", "late", "missing", "no_deadline"] {
        assert!(statuses.contains(st), "the tickets exercise callback status {st}: {statuses:?}");
    }

    // The planted deadlines: worked out by hand, and the unpublished year flagged.
    for p in &truth.planted {
        let rows = table(
            d,
            &format!("SELECT CAST(callback_due AS VARCHAR), flags FROM matter WHERE matter_id = '12345:{}'", p.key),
        )
        .await;
        assert_eq!(rows.len(), 1, "{}", p.key);
        let got_due = rows[0][0].as_deref().map(|v| v.replace('T', " ").trim_end_matches('Z').to_string());
        let want_due = p.callback_due.map(|l| utc(l).format("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(got_due, want_due, "{}: {}", p.key, p.why);
        let flags = rows[0][1].clone().unwrap_or_default();
        match &p.flag {
            Some(f) => assert!(flags.contains(f.as_str()), "{}: flags {flags}", p.key),
            None => assert!(!flags.contains("calendar."), "{}: flags {flags}", p.key),
        }
    }

    // Per matter.
    let got = table(
        d,
        "SELECT matter_id, station, month, half_year, hours_to_handling, hours_to_closure, callback_status,
                satisfaction, CAST(reopened AS VARCHAR), reopened_from, division, group_id
         FROM kpi_matter_facts WHERE matter_id LIKE '12345:%' ORDER BY matter_id",
    )
    .await;
    assert_eq!(got.len(), want.len(), "one fact row per ticket");
    let mut division = BTreeMap::new();
    let mut group = BTreeMap::new();
    for r in &got {
        let id = r[0].clone().unwrap();
        let w = &want[&id];
        let facts = Facts {
            station: r[1].clone().unwrap_or_default(),
            month: r[2].clone().unwrap_or_default(),
            half_year: r[3].clone().unwrap_or_default(),
            hours_to_handling: float(&r[4]),
            hours_to_closure: float(&r[5]),
            callback_status: r[6].clone(),
            satisfaction: r[7].clone(),
            reopened: r[8].as_deref() == Some("true"),
            reopened_from: r[9].clone(),
        };
        assert!(
            close(facts.hours_to_handling, w.hours_to_handling) && close(facts.hours_to_closure, w.hours_to_closure),
            "{id}: hours {facts:?} vs {w:?}"
        );
        let strip = |f: &Facts| Facts { hours_to_handling: None, hours_to_closure: None, ..f.clone() };
        assert_eq!(strip(&facts), strip(w), "{id}");
        division.insert(id.clone(), r[10].clone());
        group.insert(id, r[11].clone().expect("group_id"));
    }
    assert!(want.values().any(|f| f.reopened) && want.values().any(|f| f.reopened_from.is_some()));

    // The overdue list: every late or missing callback, nothing else.
    let overdue: BTreeSet<String> =
        table(d, "SELECT matter_id FROM kpi_overdue_callback WHERE matter_id LIKE '12345:%'")
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
    let want_overdue: BTreeSet<String> = want
        .iter()
        .filter(|(_, f)| matches!(f.callback_status.as_deref(), Some("late" | "missing")))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!want_overdue.is_empty());
    assert_eq!(overdue, want_overdue);

    // Per station, division and period: every aggregate.
    for (kind, period_of) in [
        ("month", (|f: &Facts| f.month.clone()) as fn(&Facts) -> String),
        ("half_year", |f: &Facts| f.half_year.clone()),
    ] {
        let mut groups: BTreeMap<GroupKey, Vec<(&String, &Facts)>> = BTreeMap::new();
        for (id, f) in &want {
            groups.entry((f.station.clone(), division[id].clone(), period_of(f))).or_default().push((id, f));
        }
        let got = table(
            d,
            &format!(
                "SELECT station, division, period, received, closed, closure_rate, handling_hours_median,
                        handling_hours_p90, closure_hours_median, closure_hours_p90, callbacks_due,
                        callbacks_in_time, callbacks_overdue, callbacks_pending, callbacks_no_deadline,
                        satisfaction_answers, satisfaction_rate, dissatisfied, reopened, reopenings, joint_received
                 FROM kpi_matter WHERE department = 'hotline_12345' AND period_kind = '{kind}'"
            ),
        )
        .await;
        assert_eq!(got.len(), groups.len(), "{kind}: one row per station, division and period");
        for r in got {
            let k = (r[0].clone().unwrap(), r[1].clone(), r[2].clone().unwrap());
            let fs = groups.get(&k).unwrap_or_else(|| panic!("{kind}: unexpected group {k:?}"));
            let n = |st: &str| fs.iter().filter(|(_, f)| f.callback_status.as_deref() == Some(st)).count() as f64;
            let closed = fs.iter().filter(|(_, f)| f.hours_to_closure.is_some()).count() as f64;
            let handling: Vec<f64> = fs.iter().filter_map(|(_, f)| f.hours_to_handling).collect();
            let closure: Vec<f64> = fs.iter().filter_map(|(_, f)| f.hours_to_closure).collect();
            let answers: Vec<&str> = fs.iter().filter_map(|(_, f)| f.satisfaction.as_deref()).collect();
            let good = answers.iter().filter(|a| **a != "dissatisfied").count() as f64;
            let joint: BTreeSet<&String> = fs.iter().map(|(id, _)| &group[*id]).collect();
            let expect = [
                Some(fs.len() as f64),
                Some(closed),
                Some(closed / fs.len() as f64),
                percentile(&handling, 0.5),
                percentile(&handling, 0.9),
                percentile(&closure, 0.5),
                percentile(&closure, 0.9),
                Some(closed - n("no_deadline")),
                Some(n("in_time")),
                Some(n("late") + n("missing")),
                Some(n("pending")),
                Some(n("no_deadline")),
                Some(answers.len() as f64),
                (!answers.is_empty()).then(|| good / answers.len() as f64),
                Some(answers.iter().filter(|a| **a == "dissatisfied").count() as f64),
                Some(fs.iter().filter(|(_, f)| f.reopened).count() as f64),
                Some(fs.iter().filter(|(_, f)| f.reopened_from.is_some()).count() as f64),
                Some(joint.len() as f64),
            ];
            for (i, e) in expect.iter().enumerate() {
                assert!(
                    close(float(&r[3 + i]), *e),
                    "{kind} {k:?}: column {} is {:?}, expected {e:?}",
                    3 + i,
                    r[3 + i]
                );
            }
        }
    }

    // Permissions: the views are computed from the rows the caller may read.
    let total = lianqin_tests::count(d, "SELECT count(*) FROM matter").await;
    let hotline_kpi = count_as(d, "zheng.hotline", "SELECT sum(received) FROM kpi_matter WHERE period_kind = 'month'");
    assert_eq!(hotline_kpi, want.len() as i64, "the 12345 agent's KPIs count their own tickets");
    assert!(hotline_kpi < total);
    let eco_matters = count_as(d, "chen.ecology", "SELECT count(*) FROM matter");
    let eco_kpi = count_as(d, "chen.ecology", "SELECT sum(received) FROM kpi_matter WHERE period_kind = 'half_year'");
    assert_eq!(eco_kpi, eco_matters, "ecology's KPIs count exactly the matters ecology may read");
    assert_eq!(
        count_as(d, "zheng.hotline", "SELECT count(*) FROM kpi_overdue_callback"),
        want_overdue.len() as i64,
        "the 12345 agent's overdue list is their own tickets' only"
    );
    assert!(
        count_as(d, "wang.police", "SELECT count(*) FROM kpi_overdue_callback WHERE matter_id NOT LIKE '12345:%'") > 0,
        "police (all matters) also see the 110 closings without a callback record"
    );
    sim.shutdown().await;
}
