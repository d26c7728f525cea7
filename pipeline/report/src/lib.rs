//! Lianqin's report writer: one [`Report`] — a title, then sections that
//! are tables or bar charts, in Chinese — written as an XLSX workbook
//! ([`write_xlsx`]: one sheet per section, numbers as numbers, a native
//! column chart per chart section) and as an A4 PDF ([`write_pdf`]: tables
//! with rules, bar charts with their values printed, a CJK font embedded
//! with a ToUnicode map so the text can be searched and extracted).
//!
//! The crate knows nothing of where the figures come from: the pipeline
//! fills a [`Report`] from its SQL views (`lianqin report`) and this crate
//! only lays it out, so the same numbers reach both files.
//!
//! A PDF needs a TrueType font with Chinese glyphs: [`find_font`] looks at
//! `$LIANQIN_REPORT_FONT`, then the usual Debian paths (`fonts-droid-fallback`,
//! `fonts-noto-cjk`, `fonts-wqy-*` single-face files) and says what to
//! install when none is there.

use std::path::{Path, PathBuf};

use printpdf::{Color, IndirectFontRef, Line, Mm, PdfDocument, PdfLayerReference, Point, Rect, Rgb};

/// Errors of the report writer.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No usable CJK font.
    #[error(
        "no TrueType font with Chinese glyphs found (tried {tried}): install one (Debian: apt-get install fonts-droid-fallback) or set LIANQIN_REPORT_FONT to a .ttf file"
    )]
    NoFont {
        /// The paths looked at.
        tried: String,
    },
    /// Writing a file.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A section that cannot be laid out (e.g. rows of the wrong width).
    #[error("section {section:?}: {message}")]
    Invalid {
        /// The section title.
        section: String,
        /// What is wrong.
        message: String,
    },
}

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number, shown with `decimals` places.
    Number {
        /// The value.
        value: f64,
        /// Decimals shown (the XLSX cell keeps the full value).
        decimals: usize,
    },
    /// No value (`-`).
    Empty,
}

impl Cell {
    /// A whole number.
    pub fn int(v: i64) -> Cell {
        Cell::Number { value: v as f64, decimals: 0 }
    }

    /// How the cell reads in the PDF.
    pub fn display(&self) -> String {
        match self {
            Cell::Text(t) => t.clone(),
            Cell::Number { value, decimals } => format!("{value:.decimals$}"),
            Cell::Empty => "-".to_string(),
        }
    }
}

/// A section of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Section {
    /// A table.
    Table {
        /// Heading (also the sheet name, shortened to 31 characters).
        title: String,
        /// Column headings.
        headers: Vec<String>,
        /// Rows, each as wide as `headers`.
        rows: Vec<Vec<Cell>>,
    },
    /// A bar chart: one group of bars per category, one bar per series.
    Bars {
        /// Heading (also the sheet name).
        title: String,
        /// Category labels (x axis).
        categories: Vec<String>,
        /// (series name, one value per category).
        series: Vec<(String, Vec<f64>)>,
    },
}

impl Section {
    /// The section's heading.
    pub fn title(&self) -> &str {
        match self {
            Section::Table { title, .. } | Section::Bars { title, .. } => title,
        }
    }

    fn check(&self) -> Result<(), ReportError> {
        let bad = |message: String| Err(ReportError::Invalid { section: self.title().to_string(), message });
        match self {
            Section::Table { headers, rows, .. } => {
                if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != headers.len()) {
                    return bad(format!("row {} has {} cells for {} columns", i + 1, r.len(), headers.len()));
                }
            }
            Section::Bars { categories, series, .. } => {
                if let Some((name, v)) = series.iter().find(|(_, v)| v.len() != categories.len()) {
                    return bad(format!("series {name:?} has {} values for {} categories", v.len(), categories.len()));
                }
            }
        }
        Ok(())
    }
}

/// A report: title, a line under it (scope, period, who generated it), sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Title.
    pub title: String,
    /// Subtitle lines.
    pub subtitle: Vec<String>,
    /// Sections, in order.
    pub sections: Vec<Section>,
}

impl Report {
    fn check(&self) -> Result<(), ReportError> {
        self.sections.iter().try_for_each(Section::check)
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Write { path: path.display().to_string(), message: e.to_string() }
}

/// A sheet name: at most 31 characters, none of `[]:*?/\`, unique.
fn sheet_name(title: &str, used: &mut Vec<String>) -> String {
    let clean: String = title.chars().filter(|c| !"[]:*?/\\".contains(*c)).take(28).collect();
    let mut name = if clean.is_empty() { "Sheet".to_string() } else { clean };
    let base = name.clone();
    let mut n = 2;
    while used.contains(&name) {
        name = format!("{base}{n}");
        n += 1;
    }
    used.push(name.clone());
    name
}

/// Writes `report` as an XLSX workbook at `path`: a first sheet with the
/// title, then one sheet per section.
pub fn write_xlsx(report: &Report, path: &Path) -> Result<(), ReportError> {
    use rust_xlsxwriter::{Chart, ChartType, Format, Workbook};
    report.check()?;
    let e = |x: rust_xlsxwriter::XlsxError| write_err(path, x);
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    let mut used = Vec::new();
    let cover = wb.add_worksheet();
    cover.set_name(sheet_name("报告", &mut used)).map_err(e)?;
    cover.write_string_with_format(0, 0, &report.title, &bold).map_err(e)?;
    for (i, l) in report.subtitle.iter().enumerate() {
        cover.write_string(1 + i as u32, 0, l).map_err(e)?;
    }
    for (i, s) in report.sections.iter().enumerate() {
        cover.write_string(2 + report.subtitle.len() as u32 + i as u32, 0, s.title()).map_err(e)?;
    }
    for s in &report.sections {
        let name = sheet_name(s.title(), &mut used);
        let ws = wb.add_worksheet();
        ws.set_name(&name).map_err(e)?;
        ws.write_string_with_format(0, 0, s.title(), &bold).map_err(e)?;
        match s {
            Section::Table { headers, rows, .. } => {
                for (c, h) in headers.iter().enumerate() {
                    ws.write_string_with_format(1, c as u16, h, &bold).map_err(e)?;
                    ws.set_column_width(c as u16, 14).map_err(e)?;
                }
                for (r, row) in rows.iter().enumerate() {
                    for (c, cell) in row.iter().enumerate() {
                        let (r, c) = (2 + r as u32, c as u16);
                        match cell {
                            Cell::Text(t) => ws.write_string(r, c, t).map(|_| ()),
                            Cell::Number { value, .. } => ws.write_number(r, c, *value).map(|_| ()),
                            Cell::Empty => Ok(()),
                        }
                        .map_err(e)?;
                    }
                }
            }
            Section::Bars { categories, series, .. } => {
                for (r, cat) in categories.iter().enumerate() {
                    ws.write_string(2 + r as u32, 0, cat).map_err(e)?;
                }
                for (c, (sname, values)) in series.iter().enumerate() {
                    ws.write_string_with_format(1, 1 + c as u16, sname, &bold).map_err(e)?;
                    for (r, v) in values.iter().enumerate() {
                        ws.write_number(2 + r as u32, 1 + c as u16, *v).map_err(e)?;
                    }
                }
                if !categories.is_empty() {
                    let mut chart = Chart::new(ChartType::Column);
                    chart.title().set_name(s.title());
                    let last = 1 + categories.len() as u32;
                    for c in 0..series.len() {
                        let col = 1 + c as u16;
                        chart
                            .add_series()
                            .set_name((name.as_str(), 1, col))
                            .set_categories((name.as_str(), 2, 0, last, 0))
                            .set_values((name.as_str(), 2, col, last, col));
                    }
                    ws.insert_chart(2, 2 + series.len() as u16, &chart).map_err(e)?;
                }
            }
        }
    }
    wb.save(path).map_err(e)
}

/// The CJK TrueType font for PDFs (see the crate docs).
pub fn find_font() -> Result<PathBuf, ReportError> {
    let mut tried = Vec::new();
    let env = std::env::var_os("LIANQIN_REPORT_FONT").map(PathBuf::from);
    let candidates = [
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "/usr/share/fonts/truetype/noto/NotoSansSC-Regular.ttf",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttf",
        "/usr/share/fonts/truetype/arphic/uming.ttf",
    ];
    for p in env.into_iter().chain(candidates.iter().map(PathBuf::from)) {
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(ReportError::NoFont { tried: tried.join(", ") })
}

const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 297.0;
const MARGIN: f32 = 15.0;

/// Approximate width in mm of `text` at `size` pt (CJK full width, the rest half).
fn text_width(text: &str, size: f32) -> f32 {
    let em = size * 0.3528;
    text.chars().map(|c| if c.is_ascii() { 0.55 } else { 1.0 }).sum::<f32>() * em
}

/// Lays out pages top to bottom.
struct Pages {
    doc: printpdf::PdfDocumentReference,
    layer: PdfLayerReference,
    /// The CJK font (it has no Latin glyphs in some families).
    font: IndirectFontRef,
    /// Helvetica for ASCII runs (digits, codes, dates).
    latin: IndirectFontRef,
    y: f32,
    page: usize,
}

impl Pages {
    fn new_page(&mut self) {
        let (p, l) = self.doc.add_page(Mm(PAGE_W), Mm(PAGE_H), "content");
        self.layer = self.doc.get_page(p).get_layer(l);
        self.page += 1;
        self.y = PAGE_H - MARGIN;
        self.footer();
    }

    fn footer(&self) {
        self.gray(0.4);
        self.put(&format!("第 {} 页", self.page), 8.0, PAGE_W / 2.0 - 5.0, 8.0);
        self.gray(0.0);
    }

    /// Draws `t` at (x, y) mm: ASCII runs in Helvetica, the rest in the CJK font.
    fn put(&self, t: &str, size: f32, x: f32, y: f32) {
        let mut x = x;
        let mut run = String::new();
        let mut ascii = None;
        let flush = |run: &mut String, ascii: bool, x: &mut f32| {
            if run.is_empty() {
                return;
            }
            let font = if ascii { &self.latin } else { &self.font };
            self.layer.use_text(run.as_str(), size, Mm(*x), Mm(y), font);
            *x += text_width(run, size);
            run.clear();
        };
        for c in t.chars() {
            let a = c.is_ascii();
            if ascii.is_some_and(|p| p != a) {
                flush(&mut run, !a, &mut x);
            }
            ascii = Some(a);
            run.push(c);
        }
        flush(&mut run, ascii.unwrap_or(true), &mut x);
    }

    /// Ensures `h` mm are left on the page.
    fn need(&mut self, h: f32) {
        if self.y - h < MARGIN + 5.0 {
            self.new_page();
        }
    }

    fn text(&mut self, t: &str, size: f32, x: f32) {
        self.put(t, size, x, self.y);
    }

    fn gray(&self, g: f32) {
        self.layer.set_fill_color(Color::Rgb(Rgb::new(g, g, g, None)));
    }

    fn rule(&self, x1: f32, x2: f32, y: f32) {
        self.layer.add_line(Line {
            points: vec![(Point::new(Mm(x1), Mm(y)), false), (Point::new(Mm(x2), Mm(y)), false)],
            is_closed: false,
        });
    }

    fn table(&mut self, headers: &[String], rows: &[Vec<Cell>]) {
        let cols = headers.len().max(1);
        let width = PAGE_W - 2.0 * MARGIN;
        // Widths by content, at least a share of the page.
        let mut w: Vec<f32> = (0..cols)
            .map(|c| {
                let cells = rows.iter().map(|r| text_width(&r[c].display(), 8.0));
                cells.chain(std::iter::once(text_width(&headers[c], 8.0))).fold(0.0, f32::max) + 3.0
            })
            .collect();
        let total: f32 = w.iter().sum();
        w.iter_mut().for_each(|x| *x *= width / total.max(1.0));
        let row_h = 6.0;
        let header = |p: &mut Pages| {
            p.need(row_h * 2.0);
            let mut x = MARGIN;
            for (c, h) in headers.iter().enumerate() {
                p.text(h, 8.0, x + 1.0);
                x += w[c];
            }
            p.rule(MARGIN, MARGIN + width, p.y - 1.8);
            p.y -= row_h;
        };
        header(self);
        for r in rows {
            if self.y - row_h < MARGIN + 5.0 {
                self.new_page();
                header(self);
            }
            let mut x = MARGIN;
            for (c, cell) in r.iter().enumerate() {
                let t = cell.display();
                let tx = match cell {
                    Cell::Number { .. } => x + w[c] - text_width(&t, 8.0) - 1.0,
                    _ => x + 1.0,
                };
                self.text(&t, 8.0, tx);
                x += w[c];
            }
            self.y -= row_h;
        }
        self.rule(MARGIN, MARGIN + width, self.y + row_h - 1.8);
    }

    fn bars(&mut self, categories: &[String], series: &[(String, Vec<f64>)]) {
        let h = 60.0;
        self.need(h + 20.0);
        let palette = [(0.16, 0.38, 0.65), (0.85, 0.45, 0.15), (0.3, 0.6, 0.3), (0.55, 0.35, 0.6)];
        // Legend.
        let mut lx = MARGIN;
        for (i, (name, _)) in series.iter().enumerate() {
            let (r, g, b) = palette[i % palette.len()];
            self.layer.set_fill_color(Color::Rgb(Rgb::new(r, g, b, None)));
            self.layer.add_rect(Rect::new(Mm(lx), Mm(self.y - 0.5), Mm(lx + 4.0), Mm(self.y + 2.5)));
            self.gray(0.0);
            self.text(name, 8.0, lx + 5.0);
            lx += 10.0 + text_width(name, 8.0);
        }
        self.y -= 6.0;
        let top = self.y;
        let bottom = top - h;
        let max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(1.0);
        let width = PAGE_W - 2.0 * MARGIN;
        let group = width / categories.len().max(1) as f32;
        let bar = (group * 0.8 / series.len().max(1) as f32).min(12.0);
        self.rule(MARGIN, MARGIN + width, bottom);
        for (ci, cat) in categories.iter().enumerate() {
            let gx = MARGIN + ci as f32 * group + group * 0.1;
            for (si, (_, values)) in series.iter().enumerate() {
                let v = values[ci];
                let bh = (v / max) as f32 * (h - 8.0);
                let x = gx + si as f32 * bar;
                let (r, g, b) = palette[si % palette.len()];
                self.layer.set_fill_color(Color::Rgb(Rgb::new(r, g, b, None)));
                if bh > 0.0 {
                    self.layer.add_rect(Rect::new(Mm(x), Mm(bottom), Mm(x + bar * 0.9), Mm(bottom + bh)));
                }
                self.gray(0.0);
                let label = if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
                self.put(&label, 7.0, x + (bar * 0.9 - text_width(&label, 7.0)) / 2.0, bottom + bh + 1.0);
            }
            self.put(cat, 7.0, gx, bottom - 4.5);
        }
        self.y = bottom - 10.0;
    }
}

/// Writes `report` as an A4 PDF at `path` with the CJK font at `font`.
pub fn write_pdf(report: &Report, font: &Path, path: &Path) -> Result<(), ReportError> {
    report.check()?;
    let (doc, p, l) = PdfDocument::new(&report.title, Mm(PAGE_W), Mm(PAGE_H), "content");
    let bytes = std::fs::read(font).map_err(|e| write_err(font, e))?;
    let font_ref = doc.add_external_font(std::io::Cursor::new(bytes)).map_err(|e| write_err(font, e))?;
    let latin = doc.add_builtin_font(printpdf::BuiltinFont::Helvetica).map_err(|e| write_err(path, e))?;
    let layer = doc.get_page(p).get_layer(l);
    let mut pages = Pages { doc, layer, font: font_ref, latin, y: PAGE_H - MARGIN - 5.0, page: 1 };
    pages.footer();
    pages.text(&report.title, 16.0, MARGIN);
    pages.y -= 8.0;
    for line in &report.subtitle {
        pages.text(line, 9.0, MARGIN);
        pages.y -= 5.0;
    }
    pages.y -= 4.0;
    for s in &report.sections {
        pages.need(20.0);
        pages.text(s.title(), 12.0, MARGIN);
        pages.y -= 7.0;
        match s {
            Section::Table { headers, rows, .. } => {
                if rows.is_empty() {
                    pages.text("（无）", 9.0, MARGIN);
                    pages.y -= 6.0;
                } else {
                    pages.table(headers, rows);
                }
            }
            Section::Bars { categories, series, .. } => pages.bars(categories, series),
        }
        pages.y -= 6.0;
    }
    let file = std::fs::File::create(path).map_err(|e| write_err(path, e))?;
    pages.doc.save(&mut std::io::BufWriter::new(file)).map_err(|e| write_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            title: "月度考核报告".into(),
            subtitle: vec!["2026-11".into()],
            sections: vec![
                Section::Table {
                    title: "概况".into(),
                    headers: vec!["指标".into(), "数值".into()],
                    rows: vec![
                        vec![Cell::Text("受理".into()), Cell::int(42)],
                        vec![Cell::Text("办结率".into()), Cell::Number { value: 0.875, decimals: 3 }],
                        vec![Cell::Text("回访".into()), Cell::Empty],
                    ],
                },
                Section::Bars {
                    title: "趋势".into(),
                    categories: vec!["2026-10".into(), "2026-11".into()],
                    series: vec![("受理".into(), vec![3.0, 42.0]), ("办结".into(), vec![2.0, 35.0])],
                },
            ],
        }
    }

    #[test]
    fn the_workbook_reads_back_with_the_same_numbers() {
        use calamine::{Data, Reader, Xlsx, open_workbook};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.xlsx");
        write_xlsx(&sample(), &p).unwrap();
        let mut wb: Xlsx<_> = open_workbook(&p).unwrap();
        assert_eq!(wb.sheet_names(), vec!["报告", "概况", "趋势"]);
        let s = wb.worksheet_range("概况").unwrap();
        assert_eq!(s.get_value((2, 1)), Some(&Data::Float(42.0)));
        assert_eq!(s.get_value((3, 1)), Some(&Data::Float(0.875)));
        let t = wb.worksheet_range("趋势").unwrap();
        assert_eq!(t.get_value((3, 2)), Some(&Data::Float(35.0)));
        assert_eq!(t.get_value((1, 1)), Some(&Data::String("受理".into())));
    }

    #[test]
    fn a_ragged_table_is_refused_with_its_section() {
        let mut r = sample();
        if let Section::Table { rows, .. } = &mut r.sections[0] {
            rows[1].pop();
        }
        let e = write_xlsx(&r, Path::new("/nonexistent/x.xlsx")).unwrap_err().to_string();
        assert!(e.contains("概况") && e.contains("row 2"), "{e}");
    }

    #[test]
    fn sheet_names_are_valid_and_unique() {
        let mut used = Vec::new();
        assert_eq!(sheet_name("a/b:c", &mut used), "abc");
        assert_eq!(sheet_name("a/b:c", &mut used), "abc2");
        assert_eq!(sheet_name(&"长".repeat(40), &mut used).chars().count(), 28);
    }
}
