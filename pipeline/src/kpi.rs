//! Station supervision KPIs as SQL views (§7.3.3, §8.1.2, §8.2).
//!
//! The views are plain SQL over the current-state views `matter` and
//! `matter_event` ([`crate::query`]), registered in every query session by
//! [`register`]. A view is inlined when a query is secured, so each caller
//! sees KPIs computed only from the rows the policy lets them read (the row
//! filters and masks of `matter`/`matter_event`, invoker's rights) — exactly
//! as if they had written the SQL themselves.
//!
//! | view | one row per | what |
//! |---|---|---|
//! | `kpi_matter_facts` | matter | the derived facts every KPI counts: periods, hours to handling and to closure, callback status |
//! | `kpi_matter` | station × department × division × period | received, closed, closure rate, median/p90 hours, callbacks, satisfaction, reopenings |
//! | `kpi_overdue_callback` | overdue callback | the list behind `kpi_matter.callbacks_overdue` |
//!
//! Conventions:
//! * A matter belongs to the period in which it was **received**
//!   (`reported_at`, Beijing time): `month` = `YYYY-MM`, `half_year` =
//!   `YYYYH1` / `YYYYH2`. Every count of a period is over that cohort
//!   (closure rate = closed / received of the matters received then).
//!   Matters without `reported_at` have NULL periods.
//! * Hours are wall-clock hours (`reported_at` → `first_handled_at`,
//!   `reported_at` → `closed_at`); median and p90 are exact
//!   (`percentile_cont`, linear interpolation as PostgreSQL's).
//! * `first_handled_at` is the earliest `matter_event` at stage `handling` or
//!   later (`review`, `summary`): the first time the hub saw the matter
//!   being handled. NULL when no such event is visible to the caller.
//! * `callback_status` of a closed matter (§8.1.2, due = closed + 3 working
//!   days, `matter.callback_due`): `in_time` (called back by the deadline),
//!   `late` (called back after it), `missing` (no callback recorded and the
//!   deadline has passed), `pending` (not yet due), `no_deadline` (the
//!   deadline could not be computed — the matter carries the flag
//!   `calendar.callback_due`; counted, never dropped). `overdue` = `late` +
//!   `missing`. A source that records no callbacks (110) has all its closed
//!   matters `missing` once due: the duty is the station's, the evidence is
//!   the callback record.
//! * Satisfaction rate = (`satisfied` + `basically_satisfied`) / answers.
//! * `reopened` counts matters of the period that a later matter reopened
//!   (`reopened_from` points to them) or that a dissatisfied second callback
//!   reopened (`matter_recheck.reopened`, [`crate::recheck`]); `reopenings` counts re-handlings
//!   received in the period.
//!
//! Joint matters (联合事项): `kpi_matter_facts.group_id` is the matter's
//! joint matter from `matter_group` ([`crate::joint`]; the matter's own id
//! when the session has no `matter_group`), and `kpi_matter.joint_received`
//! counts the distinct joint matters among the period's reports — three
//! departments' reports of one incident are 3 `received`, 1 `joint_received`.
//!
//! To add a KPI: add a column to `kpi_matter_facts` if it needs a new
//! per-matter fact, an aggregate to [`KPI_AGGREGATES`], or a new entry in
//! [`views`]; document it in README.md ("KPIs"), and extend the KPI test
//! (`tests/it/kpi.rs`), which recomputes every figure from the simulator's
//! records.

use datafusion::prelude::SessionContext;

use crate::PipelineError;

/// A KPI view: its name, what it holds, and its query (`CREATE VIEW <name> AS <sql>`).
#[derive(Debug, Clone)]
pub struct KpiView {
    /// View name.
    pub name: &'static str,
    /// One line about the view.
    pub about: &'static str,
    /// The view's query.
    pub sql: String,
}

/// One row per matter (the current `matter` view) with what the KPIs count.
/// Periods are Beijing time: UTC + 8 hours (China has no DST).
const FACTS_SQL: &str = "SELECT m.matter_id, {group} AS group_id, m.station, m.department, m.division, m.source_id,
  to_char(m.reported_at + INTERVAL '8 hours', '%Y-%m') AS month,
  to_char(m.reported_at + INTERVAL '8 hours', '%Y')
    || CASE WHEN date_part('month', m.reported_at + INTERVAL '8 hours') <= 6 THEN 'H1' ELSE 'H2' END AS half_year,
  m.reported_at,
  e.first_handled_at,
  m.closed_at,
  (date_part('epoch', e.first_handled_at) - date_part('epoch', m.reported_at)) / 3600.0 AS hours_to_handling,
  (date_part('epoch', m.closed_at) - date_part('epoch', m.reported_at)) / 3600.0 AS hours_to_closure,
  m.callback_due,
  m.callback_at,
  CASE
    WHEN m.closed_at IS NULL THEN NULL
    WHEN m.callback_due IS NULL THEN 'no_deadline'
    WHEN m.callback_at IS NOT NULL AND m.callback_at <= m.callback_due THEN 'in_time'
    WHEN m.callback_at IS NOT NULL THEN 'late'
    WHEN date_part('epoch', now()) > date_part('epoch', m.callback_due) THEN 'missing'
    ELSE 'pending'
  END AS callback_status,
  m.satisfaction,
  m.reopened_from,
  r.reopened_from IS NOT NULL{recheck_reopened} AS reopened
FROM matter m
LEFT JOIN (
  SELECT matter_id, min(event_time) AS first_handled_at
  FROM matter_event WHERE stage IN ('handling', 'review', 'summary') GROUP BY matter_id
) e ON e.matter_id = m.matter_id
LEFT JOIN (
  SELECT DISTINCT reopened_from FROM matter WHERE reopened_from IS NOT NULL
) r ON r.reopened_from = m.matter_id{group_join}{recheck_join}";

/// `kpi_matter_facts` over `matter`, with joint matters when the session
/// has `matter_group` and second-callback reopenings when it has
/// `matter_recheck`.
fn facts_sql(joint: bool, recheck: bool) -> String {
    let (group, join) = if joint {
        ("COALESCE(g.group_id, m.matter_id)", "\nLEFT JOIN matter_group g ON g.matter_id = m.matter_id")
    } else {
        ("m.matter_id", "")
    };
    let (reopened, recheck_join) = if recheck {
        (
            " OR rc.matter_id IS NOT NULL",
            "\nLEFT JOIN (SELECT DISTINCT matter_id FROM matter_recheck WHERE reopened) rc ON rc.matter_id = m.matter_id",
        )
    } else {
        ("", "")
    };
    FACTS_SQL
        .replace("{group}", group)
        .replace("{group_join}", join)
        .replace("{recheck_reopened}", reopened)
        .replace("{recheck_join}", recheck_join)
}

/// The aggregates of `kpi_matter` over the `kpi_matter_facts` rows of one
/// group (see the module docs for their meaning).
pub const KPI_AGGREGATES: &str = "count(*) AS received,
  count(DISTINCT group_id) AS joint_received,
  count(closed_at) AS closed,
  CAST(count(closed_at) AS DOUBLE) / CAST(count(*) AS DOUBLE) AS closure_rate,
  percentile_cont(hours_to_handling, 0.5) AS handling_hours_median,
  percentile_cont(hours_to_handling, 0.9) AS handling_hours_p90,
  percentile_cont(hours_to_closure, 0.5) AS closure_hours_median,
  percentile_cont(hours_to_closure, 0.9) AS closure_hours_p90,
  count(callback_due) AS callbacks_due,
  sum(CASE WHEN callback_status = 'in_time' THEN 1 ELSE 0 END) AS callbacks_in_time,
  sum(CASE WHEN callback_status IN ('late', 'missing') THEN 1 ELSE 0 END) AS callbacks_overdue,
  sum(CASE WHEN callback_status = 'pending' THEN 1 ELSE 0 END) AS callbacks_pending,
  sum(CASE WHEN callback_status = 'no_deadline' THEN 1 ELSE 0 END) AS callbacks_no_deadline,
  count(satisfaction) AS satisfaction_answers,
  CAST(sum(CASE WHEN satisfaction IN ('satisfied', 'basically_satisfied') THEN 1 ELSE 0 END) AS DOUBLE)
    / CAST(NULLIF(count(satisfaction), 0) AS DOUBLE) AS satisfaction_rate,
  sum(CASE WHEN satisfaction = 'dissatisfied' THEN 1 ELSE 0 END) AS dissatisfied,
  sum(CASE WHEN reopened THEN 1 ELSE 0 END) AS reopened,
  count(reopened_from) AS reopenings";

/// Period kinds of `kpi_matter`: (`period_kind` value, `kpi_matter_facts` column).
pub const PERIODS: &[(&str, &str)] = &[("month", "month"), ("half_year", "half_year")];

fn kpi_sql() -> String {
    PERIODS
        .iter()
        .map(|(kind, col)| {
            format!(
                "SELECT station, department, division, '{kind}' AS period_kind, {col} AS period, {KPI_AGGREGATES}
FROM kpi_matter_facts GROUP BY station, department, division, {col}"
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n")
}

const OVERDUE_SQL: &str = "SELECT matter_id, station, department, division, month, half_year,
  reported_at, closed_at, callback_due, callback_at, callback_status
FROM kpi_matter_facts WHERE callback_status IN ('late', 'missing')";

/// The KPI views, in creation order (later ones read earlier ones).
pub fn views(joint: bool, recheck: bool) -> Vec<KpiView> {
    vec![
        KpiView {
            name: "kpi_matter_facts",
            about: "one row per matter: periods, hours to handling and closure, callback status",
            sql: facts_sql(joint, recheck),
        },
        KpiView {
            name: "kpi_matter",
            about: "per station, department, division and period (month YYYY-MM, half year YYYYH1/H2)",
            sql: kpi_sql(),
        },
        KpiView {
            name: "kpi_overdue_callback",
            about: "every callback not done within 3 working days of closing (late or missing)",
            sql: OVERDUE_SQL.to_string(),
        },
    ]
}

/// Creates the KPI views in `ctx` and adds their names to `tables`, when
/// `matter` and `matter_event` are in `tables` (a data dir without them has
/// no KPIs). A view that fails to plan is an error naming it.
pub async fn register(ctx: &SessionContext, tables: &mut Vec<String>) -> Result<(), PipelineError> {
    if !(tables.iter().any(|t| t == "matter") && tables.iter().any(|t| t == "matter_event")) {
        return Ok(());
    }
    let joint = tables.iter().any(|t| t == crate::joint::TABLE);
    let recheck = tables.iter().any(|t| t == crate::recheck::TABLE);
    for v in views(joint, recheck) {
        ctx.sql(&format!("CREATE VIEW {} AS {}", v.name, v.sql))
            .await
            .map_err(|e| PipelineError::Query(format!("view {}: {e}", v.name)))?;
        tables.push(v.name.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::compute::cast;
    use arrow::datatypes::DataType;

    /// A session whose `matter` / `matter_event` are small literal tables with
    /// the library's column types that matter here.
    async fn session() -> (SessionContext, Vec<String>) {
        let ctx = SessionContext::new();
        // matter_id, station, department, division, source_id, reported_at,
        // closed_at, callback_due, callback_at, satisfaction, reopened_from
        let matter = "SELECT column1 AS matter_id, column2 AS station, 'hotline' AS department, '330502' AS division,
              'hotline_12345' AS source_id,
              to_timestamp_micros(column3) AS reported_at, to_timestamp_micros(column4) AS closed_at,
              to_timestamp_micros(column5) AS callback_due, to_timestamp_micros(column6) AS callback_at,
              column7 AS satisfaction, column8 AS reopened_from
            FROM (VALUES
              ('m1', 'S', '2025-01-24T01:30:00Z', '2025-01-27T08:00:00Z', '2025-02-07T08:00:00Z', '2025-02-06T02:00:00Z', 'satisfied', NULL),
              ('m2', 'S', '2025-01-25T02:00:00Z', '2025-01-26T03:00:00Z', '2025-02-06T03:00:00Z', '2025-02-08T01:30:00Z', 'dissatisfied', NULL),
              ('m3', 'S', '2025-01-20T00:00:00Z', '2025-01-21T00:00:00Z', '2025-01-24T00:00:00Z', NULL, NULL, NULL),
              ('m4', 'S', '2025-01-10T00:00:00Z', '2025-01-11T00:00:00Z', NULL, NULL, NULL, NULL),
              ('m5', 'S', '2025-01-05T00:00:00Z', NULL, NULL, NULL, NULL, 'm2'),
              ('m6', 'T', '2025-06-30T17:00:00Z', '2099-01-01T00:00:00Z', '2099-01-06T00:00:00Z', NULL, 'basically_satisfied', NULL)
            ) AS t";
        ctx.sql(&format!("CREATE VIEW matter AS {matter}")).await.expect("matter");
        let events = "SELECT column1 AS matter_id, column2 AS stage, to_timestamp_micros(column3) AS event_time
            FROM (VALUES
              ('m1', 'intake', '2025-01-24T01:30:00Z'),
              ('m1', 'handling', '2025-01-24T03:30:00Z'),
              ('m1', 'summary', '2025-02-06T02:00:00Z'),
              ('m2', 'review', '2025-01-26T03:00:00Z'),
              ('m3', 'handling', '2025-01-20T10:00:00Z')
            ) AS t";
        ctx.sql(&format!("CREATE VIEW matter_event AS {events}")).await.expect("matter_event");
        let mut tables = vec!["matter".to_string(), "matter_event".to_string()];
        register(&ctx, &mut tables).await.expect("KPI views plan");
        (ctx, tables)
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<String>>> {
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        let mut out = Vec::new();
        for b in batches {
            let cols: Vec<StringArray> = b
                .columns()
                .iter()
                .map(|c| {
                    let s = cast(c, &DataType::Utf8).expect("as text");
                    s.as_any().downcast_ref::<StringArray>().expect("utf8").clone()
                })
                .collect();
            for i in 0..b.num_rows() {
                out.push(cols.iter().map(|c| c.is_valid(i).then(|| c.value(i).to_string())).collect());
            }
        }
        out
    }

    #[tokio::test]
    async fn callback_status_periods_and_hours_per_matter() {
        let (ctx, tables) = session().await;
        assert!(tables.iter().any(|t| t == "kpi_matter") && tables.iter().any(|t| t == "kpi_overdue_callback"));
        let got = rows(
            &ctx,
            "SELECT matter_id, month, half_year, callback_status, hours_to_handling, hours_to_closure, CAST(reopened AS VARCHAR)
             FROM kpi_matter_facts ORDER BY matter_id",
        )
        .await;
        let s = |v: &str| Some(v.to_string());
        assert_eq!(got[0], vec![s("m1"), s("2025-01"), s("2025H1"), s("in_time"), s("2.0"), s("78.5"), s("false")]);
        assert_eq!(got[1][3], s("late"));
        assert_eq!(got[1][4], s("25.0"), "first handling = the first event at handling or later (review)");
        assert_eq!(got[1][6], s("true"), "m5 reopened m2");
        assert_eq!(got[2][3], s("missing"));
        assert_eq!(got[3][3], s("no_deadline"));
        assert_eq!(got[3][4], None, "no handling event");
        assert_eq!(got[4][3], None, "not closed");
        // 2025-06-30 17:00 UTC is 2025-07-01 01:00 in Beijing.
        assert_eq!(
            (got[5][1].clone(), got[5][2].clone(), got[5][3].clone()),
            (s("2025-07"), s("2025H2"), s("pending"))
        );
        let overdue = rows(&ctx, "SELECT matter_id FROM kpi_overdue_callback ORDER BY matter_id").await;
        assert_eq!(overdue, vec![vec![s("m2")], vec![s("m3")]]);
    }

    #[tokio::test]
    async fn kpi_matter_aggregates_one_station_month() {
        let (ctx, _) = session().await;
        let b = ctx
            .sql(
                "SELECT received, closed, closure_rate, handling_hours_median, handling_hours_p90, closure_hours_median,
                        callbacks_due, callbacks_in_time, callbacks_overdue, callbacks_pending, callbacks_no_deadline,
                        satisfaction_answers, satisfaction_rate, dissatisfied, reopened, reopenings
                 FROM kpi_matter WHERE station = 'S' AND period_kind = 'month' AND period = '2025-01'",
            )
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let b = &b[0];
        let int = |i: usize| {
            let c = cast(b.column(i), &DataType::Int64).expect("int");
            c.as_any().downcast_ref::<Int64Array>().expect("i64").value(0)
        };
        let float = |i: usize| {
            let c = cast(b.column(i), &DataType::Float64).expect("float");
            let a = c.as_any().downcast_ref::<Float64Array>().expect("f64").clone();
            a.is_valid(0).then(|| a.value(0))
        };
        assert_eq!((int(0), int(1)), (5, 4));
        assert_eq!(float(2), Some(0.8));
        // Hours to handling: m1 2, m2 25, m3 10 → median 10, p90 = 10 + 0.8 × 15 = 22.
        assert_eq!(float(3), Some(10.0));
        assert!((float(4).unwrap_or_default() - 22.0).abs() < 1e-9);
        // Hours to closure: m1 78.5, m2 25, m3 24, m4 24 → median 24.5.
        assert_eq!(float(5), Some(24.5));
        assert_eq!((int(6), int(7), int(8), int(9), int(10)), (3, 1, 2, 0, 1));
        assert_eq!(int(11), 2);
        assert_eq!(float(12), Some(0.5));
        assert_eq!((int(13), int(14), int(15)), (1, 1, 1));
    }

    #[tokio::test]
    async fn no_views_without_the_matter_libraries() {
        let ctx = SessionContext::new();
        let mut tables = vec!["element".to_string()];
        register(&ctx, &mut tables).await.expect("nothing to do");
        assert_eq!(tables, vec!["element".to_string()]);
    }
}
