//! Station reports (§8.2, issue 14 item 4): `lianqin report monthly` for a
//! station's month and `lianqin report half-year` for the city
//! eco-policing office, each written as an XLSX workbook and a PDF
//! ([`lianqin_report`]) in Chinese, the way results are sent upward.
//!
//! Every figure is a query over the KPI views ([`crate::kpi`]) and
//! `matter_recheck` ([`crate::recheck`]) run through the caller's
//! [`QueryEngine`] — with their policy (row filters, masks) and each query
//! audited — so a report shows exactly what its reader may see; writing the
//! files is one more audit entry, an `export` naming the files.
//!
//! Sections: 概况 (the KPI aggregates over the scope), 分部门 / 各站考核
//! (per department or station), 事项趋势 (received and closed per month),
//! 办结用时分布 (hours from receipt to closure in five bands), 超期回访 (the
//! overdue callbacks, listed), and for a half year 二次回访 (the second
//! callbacks drawn, answered and reopened per station).

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use lianqin_report::{Cell, Report, Section};

use crate::PipelineError;
use crate::query::QueryEngine;

/// What a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One station's month (`YYYY-MM`, Beijing time, by receipt).
    Monthly {
        /// Station (`matter.station`).
        station: String,
        /// `YYYY-MM`.
        month: String,
    },
    /// A half year (`2026H2`) for every station the reader may see, or one.
    HalfYear {
        /// `YYYYH1` / `YYYYH2`.
        half: String,
        /// Only this station.
        station: Option<String>,
    },
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn check_month(m: &str) -> Result<(i32, u32), PipelineError> {
    let bad = || PipelineError::Config(format!("--month {m:?}: expected YYYY-MM (e.g. 2026-11)"));
    let (y, mo) = m.split_once('-').ok_or_else(bad)?;
    let (y, mo): (i32, u32) = (y.parse().map_err(|_| bad())?, mo.parse().map_err(|_| bad())?);
    if m.len() != 7 || !(1..=12).contains(&mo) || !(2000..=2100).contains(&y) {
        return Err(bad());
    }
    Ok((y, mo))
}

impl Scope {
    /// Checks the scope and returns the SQL condition on `kpi_matter_facts`
    /// and the months of its trend chart.
    fn condition(&self) -> Result<(String, Vec<String>), PipelineError> {
        match self {
            Scope::Monthly { station, month } => {
                let (y, m) = check_month(month)?;
                // The month and the five before it.
                let months = (0..6)
                    .rev()
                    .map(|back| {
                        let i = y * 12 + m as i32 - 1 - back;
                        format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1)
                    })
                    .collect();
                Ok((format!("station = {} AND month = {}", sql_text(station), sql_text(month)), months))
            }
            Scope::HalfYear { half, station } => {
                crate::recheck::half_bounds(half)?;
                let (y, h) = half.split_once('H').unwrap_or_default();
                let first = if h == "1" { 1 } else { 7 };
                let months = (first..first + 6).map(|m| format!("{y}-{m:02}")).collect();
                let mut cond = format!("half_year = {}", sql_text(half));
                if let Some(s) = station {
                    cond.push_str(&format!(" AND station = {}", sql_text(s)));
                }
                Ok((cond, months))
            }
        }
    }

    /// The files' name stem.
    pub fn file_stem(&self) -> String {
        let raw = match self {
            Scope::Monthly { station, month } => format!("月报-{station}-{month}"),
            Scope::HalfYear { half, station: Some(s) } => format!("半年报-{s}-{half}"),
            Scope::HalfYear { half, station: None } => format!("半年报-{half}"),
        };
        raw.chars().map(|c| if "/\\:*?\"<>| ".contains(c) { '_' } else { c }).collect()
    }
}

/// A batch column's value as a report cell.
fn cell(col: &dyn Array, i: usize) -> Cell {
    if col.is_null(i) {
        return Cell::Empty;
    }
    match col.data_type() {
        DataType::Float64 => match col.as_primitive::<arrow::datatypes::Float64Type>().value(i) {
            v if v.is_nan() => Cell::Empty,
            value => Cell::Number { value, decimals: 2 },
        },
        DataType::Int64 => Cell::int(col.as_primitive::<arrow::datatypes::Int64Type>().value(i)),
        DataType::UInt64 => Cell::int(col.as_primitive::<arrow::datatypes::UInt64Type>().value(i) as i64),
        DataType::Int32 => Cell::int(col.as_primitive::<arrow::datatypes::Int32Type>().value(i) as i64),
        _ => match arrow::compute::cast(&col.slice(i, 1), &DataType::Utf8) {
            Ok(s) => s.as_string_opt::<i32>().map(|a| Cell::Text(a.value(0).to_string())).unwrap_or(Cell::Empty),
            Err(_) => Cell::Empty,
        },
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(b.columns().iter().map(|c| cell(c.as_ref(), i)).collect());
        }
    }
    out
}

fn number(c: &Cell) -> f64 {
    match c {
        Cell::Number { value, .. } => *value,
        _ => 0.0,
    }
}

/// The summary metrics: (column of `kpi_matter`, label, decimals).
pub const SUMMARY: &[(&str, &str, usize)] = &[
    ("received", "受理事项", 0),
    ("joint_received", "联合事项", 0),
    ("closed", "办结", 0),
    ("closure_rate", "办结率", 3),
    ("handling_hours_median", "处置响应用时中位数（小时）", 1),
    ("handling_hours_p90", "处置响应用时P90（小时）", 1),
    ("closure_hours_median", "办结用时中位数（小时）", 1),
    ("closure_hours_p90", "办结用时P90（小时）", 1),
    ("callbacks_due", "应回访", 0),
    ("callbacks_in_time", "按期回访（3个工作日内）", 0),
    ("callbacks_overdue", "超期回访", 0),
    ("satisfaction_answers", "满意度回答", 0),
    ("satisfaction_rate", "满意率", 3),
    ("dissatisfied", "不满意", 0),
    ("reopened", "重办事项", 0),
];

/// Runs one query of the report.
async fn query(engine: &QueryEngine, sql: &str, used: &mut u64) -> Result<Vec<RecordBatch>, PipelineError> {
    let b = engine.sql(sql).await?;
    *used += b.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    Ok(b)
}

/// Builds the report of `scope` from the views, as `engine`'s user sees
/// them. Returns it with the number of rows read.
pub async fn build(engine: &QueryEngine, scope: &Scope) -> Result<(Report, u64), PipelineError> {
    let (cond, months) = scope.condition()?;
    let mut used = 0;
    let mut sections = Vec::new();

    // 概况: the KPI aggregates over the whole scope.
    let b =
        query(engine, &format!("SELECT {} FROM kpi_matter_facts WHERE {cond}", crate::kpi::KPI_AGGREGATES), &mut used)
            .await?;
    let b = b.first().filter(|b| b.num_rows() == 1);
    let summary = SUMMARY
        .iter()
        .map(|(col, label, decimals)| {
            let v = b.and_then(|b| b.column_by_name(col)).map(|c| cell(c.as_ref(), 0)).unwrap_or(Cell::Empty);
            let v = match v {
                Cell::Number { value, .. } => Cell::Number { value, decimals: *decimals },
                other => other,
            };
            vec![Cell::Text(label.to_string()), v]
        })
        .collect();
    sections.push(Section::Table {
        title: "概况".into(), headers: vec!["指标".into(), "数值".into()], rows: summary
    });

    // Per department (a station's month) or per station (a half year).
    let (title, group, headers) = match scope {
        Scope::Monthly { .. } => ("分部门", "department, division", vec!["部门", "区划"]),
        Scope::HalfYear { .. } => ("各站考核", "station", vec!["警务站"]),
    };
    let b = query(
        engine,
        &format!(
            "SELECT {group}, count(*) AS received, count(closed_at) AS closed, \
             CAST(count(closed_at) AS DOUBLE) / CAST(count(*) AS DOUBLE) AS closure_rate, \
             percentile_cont(hours_to_closure, 0.5) AS closure_hours_median, \
             sum(CASE WHEN callback_status IN ('late', 'missing') THEN 1 ELSE 0 END) AS callbacks_overdue, \
             CAST(sum(CASE WHEN satisfaction IN ('satisfied', 'basically_satisfied') THEN 1 ELSE 0 END) AS DOUBLE) \
               / CAST(NULLIF(count(satisfaction), 0) AS DOUBLE) AS satisfaction_rate, \
             sum(CASE WHEN reopened THEN 1 ELSE 0 END) AS reopened \
             FROM kpi_matter_facts WHERE {cond} GROUP BY {group} ORDER BY {group}"
        ),
        &mut used,
    )
    .await?;
    let mut headers: Vec<String> = headers.into_iter().map(String::from).collect();
    headers
        .extend(["受理", "办结", "办结率", "办结用时中位数（小时）", "超期回访", "满意率", "重办"].map(String::from));
    sections.push(Section::Table { title: title.into(), headers, rows: rows(&b) });

    // 事项趋势: received and closed per month of receipt.
    let trend_cond = match scope {
        Scope::Monthly { station, .. } => format!("station = {}", sql_text(station)),
        Scope::HalfYear { station: Some(s), .. } => format!("station = {}", sql_text(s)),
        Scope::HalfYear { station: None, .. } => "TRUE".to_string(),
    };
    let list = months.iter().map(|m| sql_text(m)).collect::<Vec<_>>().join(", ");
    let b = query(
        engine,
        &format!(
            "SELECT month, count(*) AS received, count(closed_at) AS closed FROM kpi_matter_facts \
             WHERE {trend_cond} AND month IN ({list}) GROUP BY month"
        ),
        &mut used,
    )
    .await?;
    let got = rows(&b);
    let at = |m: &str, c: usize| {
        got.iter().find(|r| matches!(&r[0], Cell::Text(t) if t == m)).map(|r| number(&r[c])).unwrap_or(0.0)
    };
    sections.push(Section::Bars {
        title: "事项趋势".into(),
        categories: months.clone(),
        series: vec![
            ("受理".into(), months.iter().map(|m| at(m, 1)).collect()),
            ("办结".into(), months.iter().map(|m| at(m, 2)).collect()),
        ],
    });

    // 办结用时分布: hours from receipt to closure.
    let bands = [("<1天", 0.0, 24.0), ("1-3天", 24.0, 72.0), ("3-7天", 72.0, 168.0), ("7-15天", 168.0, 360.0)];
    let mut cases: Vec<String> = bands
        .iter()
        .map(|(_, lo, hi)| {
            format!("sum(CASE WHEN hours_to_closure >= {lo} AND hours_to_closure < {hi} THEN 1 ELSE 0 END)")
        })
        .collect();
    cases.push("sum(CASE WHEN hours_to_closure >= 360 THEN 1 ELSE 0 END)".into());
    let b =
        query(engine, &format!("SELECT {} FROM kpi_matter_facts WHERE {cond}", cases.join(", ")), &mut used).await?;
    let got = rows(&b);
    let mut categories: Vec<String> = bands.iter().map(|(l, _, _)| l.to_string()).collect();
    categories.push(">15天".into());
    let values = (0..categories.len()).map(|i| got.first().map(|r| number(&r[i])).unwrap_or(0.0)).collect();
    sections.push(Section::Bars {
        title: "办结用时分布".into(),
        categories,
        series: vec![("已办结事项".into(), values)],
    });

    // 超期回访: the list.
    let b = query(
        engine,
        &format!(
            "SELECT matter_id, department, \
               to_char(closed_at + INTERVAL '8 hours', '%Y-%m-%d %H:%M') AS closed, \
               to_char(callback_due + INTERVAL '8 hours', '%Y-%m-%d %H:%M') AS due, \
               to_char(callback_at + INTERVAL '8 hours', '%Y-%m-%d %H:%M') AS called, \
               CASE callback_status WHEN 'late' THEN '逾期回访' ELSE '未回访' END AS status \
             FROM kpi_overdue_callback WHERE {cond} ORDER BY callback_due, matter_id"
        ),
        &mut used,
    )
    .await?;
    sections.push(Section::Table {
        title: "超期回访".into(),
        headers: ["事项编号", "部门", "办结时间", "回访期限", "回访时间", "情况"].map(String::from).to_vec(),
        rows: rows(&b),
    });

    // 二次回访 (a half year).
    if let Scope::HalfYear { half, station } = scope {
        let mut c = format!("half = {}", sql_text(half));
        if let Some(s) = station {
            c.push_str(&format!(" AND station = {}", sql_text(s)));
        }
        let b = query(
            engine,
            &format!(
                "SELECT station, count(*) AS drawn, count(answer) AS answered, \
                 sum(CASE WHEN answer = 'dissatisfied' THEN 1 ELSE 0 END) AS dissatisfied, \
                 sum(CASE WHEN reopened THEN 1 ELSE 0 END) AS reopened, max(rate_percent) AS rate \
                 FROM matter_recheck WHERE {c} GROUP BY station ORDER BY station"
            ),
            &mut used,
        )
        .await?;
        sections.push(Section::Table {
            title: "二次回访".into(),
            headers: ["警务站", "抽取", "已回访", "不满意", "重办", "比例（%）"].map(String::from).to_vec(),
            rows: rows(&b),
        });
    }

    let (title, scope_line) = match scope {
        Scope::Monthly { station, month } => ("生态联勤警务站月度考核报告", format!("{station} · {month}")),
        Scope::HalfYear { half, station } => (
            "生态联勤警务站半年度考核报告",
            format!("{} · {half}", station.clone().unwrap_or_else(|| "全市各站".into())),
        ),
    };
    let report = Report {
        title: title.into(),
        subtitle: vec![
            scope_line,
            format!(
                "按受理时间（北京时间）统计；生成于 {} UTC；数据范围为生成者有权查看的事项",
                chrono::Utc::now().format("%Y-%m-%d %H:%M")
            ),
        ],
        sections,
    };
    Ok((report, used))
}

/// Builds the report of `scope` and writes `<stem>.xlsx` and `<stem>.pdf`
/// into `out_dir`; returns the two paths and the rows read.
pub async fn write(engine: &QueryEngine, scope: &Scope, out_dir: &Path) -> Result<(Vec<PathBuf>, u64), PipelineError> {
    let font = lianqin_report::find_font().map_err(|e| PipelineError::Config(e.to_string()))?;
    let (report, used) = build(engine, scope).await?;
    std::fs::create_dir_all(out_dir).map_err(|e| PipelineError::Config(format!("{}: {e}", out_dir.display())))?;
    let stem = scope.file_stem();
    let xlsx = out_dir.join(format!("{stem}.xlsx"));
    let pdf = out_dir.join(format!("{stem}.pdf"));
    let err = |e: lianqin_report::ReportError| PipelineError::Config(e.to_string());
    lianqin_report::write_xlsx(&report, &xlsx).map_err(err)?;
    lianqin_report::write_pdf(&report, &font, &pdf).map_err(err)?;
    Ok((vec![xlsx, pdf], used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_checked_and_name_their_months() {
        let m = Scope::Monthly { station: "S'1".into(), month: "2026-02".into() };
        let (cond, months) = m.condition().unwrap();
        assert_eq!(cond, "station = 'S''1' AND month = '2026-02'");
        assert_eq!(months, ["2025-09", "2025-10", "2025-11", "2025-12", "2026-01", "2026-02"]);
        let h = Scope::HalfYear { half: "2026H2".into(), station: None };
        assert_eq!(h.condition().unwrap().1, ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11", "2026-12"]);
        for bad in ["2026-13", "2026-1", "26-01", "2026/01"] {
            assert!(Scope::Monthly { station: "S".into(), month: bad.into() }.condition().is_err(), "{bad}");
        }
        assert!(Scope::HalfYear { half: "2026H3".into(), station: None }.condition().is_err());
        assert_eq!(
            Scope::Monthly { station: "a/b c".into(), month: "2026-02".into() }.file_stem(),
            "月报-a_b_c-2026-02"
        );
    }
}
