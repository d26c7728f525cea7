//! HTML building blocks of the console: escaping, the page frame with its
//! navigation, result tables from Arrow batches, messages.
//!
//! Pages are rendered on the server from plain strings; every value that
//! comes from data, users or errors goes through [`esc`]. No script runs in
//! the pages except the embedded `console.js` (the Content-Security-Policy
//! allows only `'self'`).

use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a query-string value.
pub fn url_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The navigation entries: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/sources", "数据源 Sources"),
    ("/quarantine", "隔离区 Quarantine"),
    ("/reconcile", "对账 Reconciliation"),
    ("/libraries", "要素/事项库 Libraries"),
    ("/sql", "SQL"),
    ("/map", "地图 Map"),
    ("/sharing", "共享 Sharing"),
    ("/audit", "审计 Audit"),
];

/// Who is looking, for the frame.
pub struct Viewer<'a> {
    /// Login name.
    pub user: &'a str,
    /// Department code.
    pub department: &'a str,
    /// The session's CSRF token (for the logout form).
    pub csrf: &'a str,
}

/// A whole page: head, navigation (with `active` marked), `body`.
/// `refresh_secs` adds an automatic reload (the Sources page).
pub fn page(title: &str, active: &str, viewer: Option<&Viewer<'_>>, body: &str, refresh_secs: Option<u32>) -> String {
    let refresh = refresh_secs.map(|s| format!(r#"<meta http-equiv="refresh" content="{s}">"#)).unwrap_or_default();
    let nav = match viewer {
        Some(v) => {
            let links: String = NAV
                .iter()
                .map(|(p, l)| {
                    let cls = if *p == active { r#" class="active""# } else { "" };
                    format!(r#"<a href="{p}"{cls}>{l}</a>"#)
                })
                .collect();
            format!(
                r#"<nav>{links}<span class="who">{u} · {d}</span><form method="post" action="/logout" class="inline"><input type="hidden" name="_csrf" value="{c}"><button type="submit" id="logout">退出 Logout</button></form></nav>"#,
                u = esc(v.user),
                d = esc(v.department),
                c = esc(v.csrf),
            )
        }
        None => String::new(),
    };
    format!(
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>{t} · 联勤 Lianqin</title>{refresh}<link rel="stylesheet" href="/assets/console.css"></head><body><header><b>联勤 Lianqin</b> 生态联勤数据中枢</header>{nav}<main><h1>{t}</h1>{body}</main><script src="/assets/console.js"></script></body></html>"#,
        t = esc(title),
    )
}

/// A message box (`kind`: `ok`, `error`, `info`).
pub fn note(kind: &str, text: &str) -> String {
    format!(r#"<p class="note {kind}" role="status">{}</p>"#, esc(text))
}

/// The rows of `batches` as an HTML table (at most `max_rows`; says when
/// more were left off). Each cell is the value as text, escaped.
pub fn table(batches: &[RecordBatch], max_rows: usize, id: &str) -> String {
    let Some(first) = batches.first() else {
        return format!(r#"<p class="count"><span id="{id}-rows">0</span> 行 rows</p>"#);
    };
    let schema = first.schema();
    let mut out = format!(r#"<table id="{id}"><thead><tr>"#);
    for f in schema.fields() {
        out.push_str(&format!("<th>{}</th>", esc(f.name())));
    }
    out.push_str("</tr></thead><tbody>");
    let opts = FormatOptions::default().with_null("");
    let (mut shown, mut total) = (0usize, 0usize);
    for b in batches {
        total += b.num_rows();
        let fmts: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok()).collect();
        for r in 0..b.num_rows() {
            if shown >= max_rows {
                continue;
            }
            shown += 1;
            out.push_str("<tr>");
            for (c, f) in fmts.iter().enumerate() {
                let v = match f {
                    Some(f) if b.column(c).is_valid(r) => f.value(r).to_string(),
                    _ => String::new(),
                };
                out.push_str(&format!("<td>{}</td>", esc(&v)));
            }
            out.push_str("</tr>");
        }
    }
    out.push_str("</tbody></table>");
    let more =
        if total > shown { format!("（仅显示前 {shown} 行 first {shown} shown）") } else { String::new() };
    format!(r#"<p class="count"><span id="{id}-rows">{total}</span> 行 rows{more}</p>{out}"#)
}

/// Text of column `name` in row `r` of `b` (`None` when null or absent).
pub fn cell(b: &RecordBatch, name: &str, r: usize) -> Option<String> {
    let i = b.schema().index_of(name).ok()?;
    let c = b.column(i);
    if !c.is_valid(r) {
        return None;
    }
    let opts = FormatOptions::default();
    ArrayFormatter::try_new(c.as_ref(), &opts).ok().map(|f| f.value(r).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(url_enc("a b/湖"), "a%20b%2F%E6%B9%96");
    }
}
