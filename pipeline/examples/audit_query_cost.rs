//! The cost the audit trail adds to a query (BENCHMARKS.md, issue 5).
//!
//! ```sh
//! lianqin demo --once --data-dir /tmp/lq-bench
//! cargo run --release -p lianqin-pipeline --example audit_query_cost -- /tmp/lq-bench 300
//! ```
//!
//! Runs each query N times through two sessions of the same user
//! (`chen.ecology`: row filter + masks), one without and one with the audit
//! trail (entry per query: tables, columns, masks, filters, rules, rows,
//! duration; encrypted, chained, group commit), alternating, and prints the
//! medians. Entries go to the stream `bench` of the data dir.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lianqin_pipeline::audit::Audit;
use lianqin_pipeline::library::LibraryStore;
use lianqin_pipeline::query::{Querier, QueryEngine};
use lianqin_pipeline::schema::Catalog;

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("lianqin-data"));
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let catalog = Catalog::builtin()?;
    let store = LibraryStore::open_existing(&dir, Arc::clone(&catalog)).await?;
    let policy = Arc::new(lianqin_pipeline::policy::load(&dir).await?);
    let who = policy.principal("chen.ecology").ok_or_else(|| anyhow::anyhow!("no demo user chen.ecology"))?;
    let audit = Audit::open(&dir, "bench", "bench", Duration::from_secs(3))?;
    let plain = QueryEngine::new(&store, &catalog).await?.with_policy(Arc::clone(&policy), who.clone());
    let audited = QueryEngine::new(&store, &catalog).await?.with_policy(Arc::clone(&policy), who).with_audit(
        audit.clone(),
        Querier {
            user: "chen.ecology".into(),
            department: "ecology".into(),
            session: Some("bench".into()),
            client_addr: Some("local".into()),
        },
    );
    let queries = [
        "SELECT count(*) FROM codes",
        "SELECT kind, count(*) FROM element_history GROUP BY kind",
        "SELECT matter_id, stage, title FROM matter_history WHERE stage = 'intake' LIMIT 20",
        "SELECT kind, count(*) FROM element GROUP BY kind",
    ];
    println!("{n} runs each, median ms (user chen.ecology: row filter + masks)");
    println!("{:<80} {:>9} {:>9} {:>9}", "query", "no audit", "audited", "added");
    for q in queries {
        for _ in 0..5 {
            plain.sql(q).await?;
            audited.sql(q).await?;
        }
        let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            plain.sql(q).await?;
            a.push(t.elapsed());
            let t = Instant::now();
            audited.sql(q).await?;
            b.push(t.elapsed());
        }
        let (ma, mb) = (median(&mut a), median(&mut b));
        println!("{q:<80} {ma:>9.3} {mb:>9.3} {:>+9.3}", mb - ma);
    }
    // The audit's own work per query, isolated from query noise: building
    // the entry (cached policy decisions per table) and appending it
    // (encrypt, chain, buffered; group commit in the background).
    let who = policy.principal("chen.ecology").ok_or_else(|| anyhow::anyhow!("no demo user"))?;
    let cols = lianqin_pipeline::query::columns_of(&catalog, "element_history");
    let m = 20_000;
    let t = Instant::now();
    for i in 0..m {
        let d = policy.decide_sync(&who, "element_history", &cols);
        let mut ev = lianqin_audit::AuditEvent::new(
            lianqin_audit::EventKind::Query,
            "chen.ecology",
            "ecology",
            lianqin_audit::Outcome::Success,
        );
        ev.sql = Some(format!("SELECT element_id, id_value FROM element_history WHERE kind = 'person' -- {i}"));
        ev.tables = vec!["element_history".into()];
        ev.columns =
            vec!["element_history.element_id".into(), "element_history.id_value".into(), "element_history.kind".into()];
        ev.masks = vec!["element_history.id_value:null".into()];
        if let Some(f) = &d.row_filter {
            ev.filters.push(format!("element_history: {f}"));
        }
        ev.rule = Some(
            d.matched_rules.iter().filter(|r| r.starts_with("policy.csv:")).cloned().collect::<Vec<_>>().join("; "),
        );
        ev.rule_version = Some(policy.version());
        ev.rows = Some(20);
        ev.duration_ms = Some(3);
        audit.record(ev)?;
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / m as f64;
    audit.sync();
    println!("audit work per query (entry with decisions, filters, masks, rules; append): {per:.1} µs ({m} entries)");
    Ok(())
}
