//! Station reports (`lianqin report`, `pipeline/src/report.rs`, issue 14
//! item 4) over the demo's libraries: the XLSX read back and the PDF's
//! extracted text (`pdftotext`, poppler-utils) carry the numbers of the KPI
//! views as the reader sees them; the PDF renders (`pdftoppm`); the report
//! is audited as an export.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calamine::{Data, Reader, Xlsx, open_workbook};
use lianqin_audit::{AuditFilter, EventKind};
use lianqin_tests::{demo_password, lianqin_bin};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn lianqin(d: &Path, user: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(lianqin_bin());
    c.args(args).env_remove("LIANQIN_POLICIES");
    if let Some(u) = user {
        c.args(["--as", u]).env("LIANQIN_PASSWORD", demo_password(u));
    }
    c.arg("--data-dir").arg(d).output().unwrap()
}

fn csv(d: &Path, user: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let o = lianqin(d, user, &["sql", "--format", "csv", sql]);
    assert!(o.status.success(), "{sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn report(d: &Path, user: &str, args: &[&str], out: &Path) -> Vec<PathBuf> {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend(["--out", out.to_str().unwrap()]);
    let o = lianqin(d, Some(user), &all);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect()
}

/// Label → value of the 概况 sheet.
fn summary(xlsx: &Path) -> Vec<(String, Option<f64>)> {
    let mut wb: Xlsx<_> = open_workbook(xlsx).unwrap();
    assert_eq!(&wb.sheet_names()[..2], ["报告", "概况"].map(String::from).as_slice());
    let r = wb.worksheet_range("概况").unwrap();
    r.rows()
        .skip(2)
        .map(|row| {
            let v = match &row[1] {
                Data::Float(f) => Some(*f),
                Data::Int(i) => Some(*i as f64),
                _ => None,
            };
            (row[0].to_string(), v)
        })
        .collect()
}

fn pdf_text(pdf: &Path) -> String {
    let o = Command::new("pdftotext")
        .args(["-layout"])
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils; tests/run.sh installs it)");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn monthly_and_half_year_reports_carry_the_views_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    let o = Command::new(lianqin_bin()).args(["demo", "--once", "--data-dir"]).arg(d).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // The 12345 agent's busiest station-month.
    let agent = "zheng.hotline";
    let top = csv(
        d,
        Some(agent),
        "SELECT station, month, count(*) AS n FROM kpi_matter_facts WHERE station IS NOT NULL AND station <> '' \
         GROUP BY station, month ORDER BY n DESC, station LIMIT 1",
    );
    let (station, month) = (top[0][0].clone(), top[0][1].clone());
    let out = dir.path().join("out");
    let files = report(d, agent, &["monthly", "--station", &station, "--month", &month], &out);
    assert_eq!(files.len(), 2, "{files:?}");
    let (xlsx, pdf) = (&files[0], &files[1]);
    assert!(xlsx.extension().unwrap() == "xlsx" && pdf.extension().unwrap() == "pdf");

    // The workbook's summary equals the view, as the agent sees it.
    let cols = lianqin_pipeline::report::SUMMARY.iter().map(|(c, _, _)| *c).collect::<Vec<_>>().join(", ");
    let view = csv(
        d,
        Some(agent),
        &format!(
            "SELECT {cols} FROM (SELECT {} FROM kpi_matter_facts WHERE station = '{station}' AND month = '{month}')",
            lianqin_pipeline::kpi::KPI_AGGREGATES
        ),
    );
    let got = summary(xlsx);
    assert_eq!(got.len(), lianqin_pipeline::report::SUMMARY.len());
    let wb: Xlsx<_> = open_workbook(xlsx).unwrap();
    assert_eq!(wb.sheet_names(), ["报告", "概况", "分部门", "事项趋势", "办结用时分布", "超期回访"].map(String::from));
    for (i, (label, v)) in got.iter().enumerate() {
        let want: Option<f64> = view[0][i].parse().ok();
        match (v, want) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{label}: {a} vs {b}"),
            (None, None) => {}
            (a, b) => panic!("{label}: workbook {a:?}, view {b:?}"),
        }
    }
    let received = got[0].1.unwrap();
    assert!(received >= 1.0);

    // The PDF: Chinese title, the station, the month and the numbers.
    let t = pdf_text(pdf);
    for needle in ["月度考核报告", "概况", "事项趋势", "办结用时分布", "超期回访", station.as_str(), month.as_str()]
    {
        assert!(t.contains(needle), "PDF text lacks {needle:?}:\n{t}");
    }
    let line = t.lines().find(|l| l.contains("受理事项")).expect("受理事项 line");
    assert!(line.split_whitespace().last() == Some(&format!("{received:.0}")), "{line}");
    let overdue = csv(
        d,
        Some(agent),
        &format!("SELECT matter_id FROM kpi_overdue_callback WHERE station = '{station}' AND month = '{month}'"),
    );
    for r in &overdue {
        assert!(t.contains(&r[0]), "overdue {} not listed in the PDF", r[0]);
    }
    // It renders.
    let png = dir.path().join("page");
    let o =
        Command::new("pdftoppm").args(["-r", "40", "-png", "-f", "1", "-l", "1"]).arg(pdf).arg(&png).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rendered = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("page"))
        .expect("a rendered page");
    assert!(rendered.metadata().unwrap().len() > 2_000, "a blank page?");

    // Audited as an export by the agent.
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut exports = Vec::new();
    for s in lianqin_pipeline::audit::streams(d) {
        for r in
            lianqin_audit::read(&s, &key, AuditFilter { kind: Some(EventKind::Export), ..Default::default() }).unwrap()
        {
            exports.push(r.unwrap().event);
        }
    }
    assert!(
        exports.iter().any(|e| e.user == agent && e.detail["destination"].to_string().contains("月报")),
        "{exports:?}"
    );

    // The office's half year: every station the office may see, with the view's counts.
    let half = format!("{}H{}", &month[..4], if month[5..].parse::<u32>().unwrap() <= 6 { 1 } else { 2 });
    let office = "he.office";
    let files = report(d, office, &["half-year", "--half", &half], &out);
    let total = csv(d, Some(office), &format!("SELECT count(*) FROM kpi_matter_facts WHERE half_year = '{half}'"));
    let got = summary(&files[0]);
    assert_eq!(got[0].1, total[0][0].parse::<f64>().ok(), "received in {half}");
    let t = pdf_text(&files[1]);
    assert!(t.contains("半年度考核报告") && t.contains("各站考核") && t.contains("二次回访"), "{t}");
}
