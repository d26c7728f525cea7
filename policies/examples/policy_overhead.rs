//! Cost of policy enforcement on representative analyst queries.
//!
//! `cargo run --release -p lianqin-policies --example policy_overhead [rows]`
//!
//! Builds an element-like MemTable (default 1,000,000 rows) and a matter table
//! (1/10 of that), then times each query unenforced and enforced as three
//! users: `wang.police` (all rows, no masks), `he.office` (all rows, PII
//! masked) and `chen.ecology` (row filter, IDs tokenised). Times include
//! planning, `secure_plan` and execution; medians of 7 runs after 1 warm-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use lianqin_policies::{ColumnMeta, PolicyEngine};

const KINDS: [&str; 6] = ["person", "unit_place", "water", "forest", "item", "lake"];
const DEPTS: [&str; 6] = ["police", "ecology", "market", "law_enforcement", "natural_resources", "hotline_12345"];
const DIVS: [&str; 6] = ["330502", "330503", "330521", "330522", "330523", "330500"];
const CATS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn element_meta() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("element_id", "public", None),
        ColumnMeta::new("kind", "public", None),
        ColumnMeta::new("name", "internal", None),
        ColumnMeta::new("id_value", "sensitive", Some("citizen_id")),
        ColumnMeta::new("phone", "sensitive", Some("phone")),
        ColumnMeta::new("department", "public", None),
        ColumnMeta::new("division", "public", None),
        ColumnMeta::new("category", "public", None),
        ColumnMeta::new("important", "public", None),
    ]
}

fn matter_meta() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("matter_id", "public", None),
        ColumnMeta::new("category", "public", None),
        ColumnMeta::new("department", "public", None),
        ColumnMeta::new("division", "public", None),
        ColumnMeta::new("party_element_id", "internal", None),
    ]
}

fn columns_of(t: &str) -> Vec<ColumnMeta> {
    match t {
        "element" => element_meta(),
        "matter" => matter_meta(),
        _ => vec![],
    }
}

/// Deterministic pseudo-random (xorshift) so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

fn element_batches(rows: usize, parts: usize) -> Vec<Vec<RecordBatch>> {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("element_id"),
        s("kind"),
        s("name"),
        s("id_value"),
        s("phone"),
        s("department"),
        s("division"),
        s("category"),
        Field::new("important", DataType::Boolean, true),
    ]));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let batch_rows = 65_536;
    let mut out = vec![Vec::new(); parts];
    let mut start = 0;
    let mut p = 0;
    while start < rows {
        let n = batch_rows.min(rows - start);
        let mut cols: Vec<Vec<String>> = (0..8).map(|_| Vec::with_capacity(n)).collect();
        let mut imp = Vec::with_capacity(n);
        for i in start..start + n {
            let div = rng.pick(&DIVS);
            let id = format!(
                "{div}19{:02}{:02}{:02}{:04}",
                50 + rng.next() % 50,
                1 + rng.next() % 12,
                1 + rng.next() % 28,
                rng.next() % 10_000
            );
            cols[0].push(format!("cid:{id}:{i}"));
            cols[1].push(rng.pick(&KINDS).to_string());
            cols[2].push(format!("要素{i}"));
            cols[3].push(id);
            cols[4].push(format!("13{:09}", rng.next() % 1_000_000_000));
            cols[5].push(rng.pick(&DEPTS).to_string());
            cols[6].push(div.to_string());
            cols[7].push(rng.pick(&CATS).to_string());
            imp.push(rng.next().is_multiple_of(5));
        }
        let mut arrays: Vec<ArrayRef> = cols.into_iter().map(|c| Arc::new(StringArray::from(c)) as ArrayRef).collect();
        arrays.push(Arc::new(BooleanArray::from(imp)));
        out[p % parts].push(RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch"));
        p += 1;
        start += n;
    }
    out
}

fn matter_batch(rows: usize, elements: &[Vec<RecordBatch>]) -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("matter_id"),
        s("category"),
        s("department"),
        s("division"),
        s("party_element_id"),
    ]));
    let ids: Vec<String> = elements
        .iter()
        .flatten()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<StringArray>().cloned();
            a.into_iter().flat_map(|a| a.iter().map(|v| v.unwrap_or_default().to_string()).collect::<Vec<_>>())
        })
        .collect();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut cols: Vec<Vec<String>> = (0..5).map(|_| Vec::with_capacity(rows)).collect();
    for i in 0..rows {
        cols[0].push(format!("m{i}"));
        cols[1].push(rng.pick(&CATS).to_string());
        cols[2].push(rng.pick(&DEPTS).to_string());
        cols[3].push(rng.pick(&DIVS).to_string());
        cols[4].push(ids[(rng.next() % ids.len().max(1) as u64) as usize].clone());
    }
    let arrays: Vec<ArrayRef> = cols.into_iter().map(|c| Arc::new(StringArray::from(c)) as ArrayRef).collect();
    RecordBatch::try_new(schema, arrays).expect("batch")
}

async fn time_query(ctx: &SessionContext, engine: Option<(&PolicyEngine, &str)>, sql: &str) -> Duration {
    let mut times = Vec::new();
    for i in 0..8 {
        let t = Instant::now();
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        let plan = match engine {
            Some((e, user)) => {
                let who = e.principal(user).expect("user");
                e.secure_plan(&who, plan, &columns_of).expect("secure")
            }
            None => plan,
        };
        let b = ctx.execute_logical_plan(plan).await.expect("df").collect().await.expect("run");
        std::hint::black_box(b);
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let parts = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let elements = element_batches(rows, parts);
    let matter = matter_batch(rows / 10, &elements);
    let ctx = SessionContext::new();
    let schema = elements.iter().flatten().next().expect("rows").schema();
    ctx.register_table("element", Arc::new(MemTable::try_new(schema, elements).expect("mem"))).expect("reg");
    ctx.register_table("matter", Arc::new(MemTable::try_new(matter.schema(), vec![vec![matter]]).expect("mem")))
        .expect("reg");
    let engine = PolicyEngine::builtin().await.expect("policy").with_token_key(b"bench-key");

    let queries = [
        ("count by kind", "SELECT kind, count(*) FROM element GROUP BY kind"),
        (
            "filter + group by division",
            "SELECT division, count(*) FROM element WHERE kind = 'person' AND important GROUP BY division",
        ),
        (
            "join matter-element",
            "SELECT e.division, count(*) FROM matter m JOIN element e ON m.party_element_id = e.element_id WHERE m.category IN ('a', 'b') GROUP BY e.division",
        ),
        ("distinct masked id", "SELECT count(DISTINCT id_value) FROM element WHERE division = '330502'"),
    ];
    let users = ["wang.police", "he.office", "chen.ecology"];
    println!("policy_overhead: element {rows} rows, matter {} rows, {parts} partitions; median of 7 (ms)", rows / 10);
    println!(
        "{:<28} {:>10} {:>22} {:>22} {:>22}",
        "query", "raw", "wang.police (no mask)", "he.office (mask)", "chen.ecology (filter+hash)"
    );
    for (name, sql) in queries {
        let raw = time_query(&ctx, None, sql).await;
        let mut line = format!("{name:<28} {:>10.1}", raw.as_secs_f64() * 1e3);
        for u in users {
            let t = time_query(&ctx, Some((&engine, u)), sql).await;
            let pct = (t.as_secs_f64() / raw.as_secs_f64() - 1.0) * 100.0;
            line.push_str(&format!(" {:>12.1} ({:>+6.1}%)", t.as_secs_f64() * 1e3, pct));
        }
        println!("{line}");
    }
    // What chen.ecology's row filter costs when written by hand (no policy):
    // separates the filter's own work from the enforcement machinery.
    let own =
        "(department = 'ecology' OR kind IN ('mountain', 'water', 'forest', 'farmland', 'lake', 'grassland', 'sand'))";
    for (name, sql) in [
        ("count by kind", format!("SELECT kind, count(*) FROM element WHERE {own} GROUP BY kind")),
        (
            "filter + group by division",
            format!(
                "SELECT division, count(*) FROM element WHERE kind = 'person' AND important AND {own} GROUP BY division"
            ),
        ),
    ] {
        let t = time_query(&ctx, None, &sql).await;
        println!(
            "{:<28} {:>10.1}   (raw query + chen.ecology's row filter as a plain WHERE)",
            name,
            t.as_secs_f64() * 1e3
        );
    }
    // Planning-time cost of the policy alone.
    let who = engine.principal("chen.ecology").expect("user");
    let t = Instant::now();
    let n = 10_000;
    for i in 0..n {
        // distinct column lists defeat the decision cache
        let mut cols = element_meta();
        cols[0].name = format!("element_id_{}", i % 2);
        std::hint::black_box(engine.decide_sync(&who, "element", &cols));
    }
    println!("decide (cache hit, 10 columns): {:.2} µs/call", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    let n = 200;
    for i in 0..n {
        let mut cols = element_meta();
        cols[0].name = format!("element_id_x{i}");
        std::hint::black_box(engine.decide_sync(&who, "element", &cols));
    }
    println!(
        "decide (cache miss, 1 table + 10 column casbin calls): {:.1} µs/call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
