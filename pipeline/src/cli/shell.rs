//! The interactive SQL shell of `lianqin sql` (no query given).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Result;

use crate::query::{OutputFormat, QueryEngine, format_batches};
use crate::schema::Catalog;

/// The interactive SQL shell of `lianqin sql` without a query: statements end
/// with `;`, `\d` lists tables, `\d NAME` describes one, `\q` quits.
pub async fn shell(engine: &QueryEngine, catalog: &Catalog, format: OutputFormat, dir: &Path) -> Result<()> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        println!(
            "Lianqin SQL over {} — end statements with ';'. \\d lists tables, \\d NAME describes one, \\q quits.",
            dir.display()
        );
    }
    let stdin = std::io::stdin();
    let mut buf = String::new();
    loop {
        if tty {
            print!("{}", if buf.is_empty() { "lianqin> " } else { "     ..> " });
            std::io::stdout().flush().ok();
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let t = line.trim();
        if buf.is_empty() && t.starts_with('\\') {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("\\q"), _) => break,
                (Some("\\d"), None) => {
                    for name in engine.tables() {
                        println!("{name}");
                    }
                }
                (Some("\\d"), Some(name)) => describe(catalog, engine, name).await,
                _ => println!("unknown command {t}"),
            }
            continue;
        }
        buf.push_str(&line);
        if t.ends_with(';') {
            let q = buf.trim().trim_end_matches(';').to_string();
            buf.clear();
            match engine.sql(&q).await {
                Ok(b) => println!("{}", format_batches(&b, format).unwrap_or_default()),
                Err(e) => println!("error: {e}"),
            }
        }
    }
    Ok(())
}

async fn describe(catalog: &Catalog, engine: &QueryEngine, name: &str) {
    let base = name.trim_end_matches("_history");
    if let Ok(lib) = catalog.library(base) {
        println!("{} — {} {}", name, lib.zh, lib.en);
        for c in lib.all_columns(&catalog.provenance) {
            println!(
                "  {:<18} {:<9} {:<10} {} / {}",
                c.name,
                c.ty.name(),
                match &c.personal {
                    Some(p) => format!("{:?}:{p}", c.sensitivity).to_lowercase(),
                    None => format!("{:?}", c.sensitivity).to_lowercase(),
                },
                c.zh,
                c.en
            );
        }
        return;
    }
    match engine.context().table(name).await {
        Ok(df) => {
            for f in df.schema().fields() {
                println!("  {:<18} {}", f.name(), f.data_type());
            }
        }
        Err(e) => println!("error: {e}"),
    }
}
