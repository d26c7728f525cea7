//! Writes a sample report: `cargo run -p lianqin-report --example sample -- OUT_DIR`.

use lianqin_report::{Cell, Report, Section};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let r = Report {
        title: "湖州市生态联勤警务站 月度考核报告".into(),
        subtitle: vec!["吴兴区太湖生态联勤警务站 · 2026-11".into()],
        sections: vec![
            Section::Table {
                title: "概况".into(),
                headers: vec!["指标".into(), "数值".into()],
                rows: vec![
                    vec![Cell::Text("受理".into()), Cell::int(42)],
                    vec![Cell::Text("办结率".into()), Cell::Number { value: 0.875, decimals: 3 }],
                ],
            },
            Section::Bars {
                title: "事项趋势".into(),
                categories: vec!["2026-10".into(), "2026-11".into()],
                series: vec![("受理".into(), vec![3.0, 42.0]), ("办结".into(), vec![2.0, 35.0])],
            },
        ],
    };
    lianqin_report::write_xlsx(&r, &out.join("sample.xlsx"))?;
    lianqin_report::write_pdf(&r, &lianqin_report::find_font()?, &out.join("sample.pdf"))?;
    Ok(())
}
