//! Precision/recall of the shipped person (or enterprise) model on the
//! simulators' truth, with samples of wrong and missed links and their
//! scores: `cargo run -p lianqin-resolve --example quality -- [entities] [seed] [person|unit]`.

use std::collections::HashMap;

use lianqin_resolve::{Model, Record, Resolver, normalize, pairwise_quality, score};
use lianqin_sim::identity::identity_world;
use lianqin_sim::units::unit_world;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let persons: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let unit = args.get(3).is_some_and(|k| k == "unit");
    struct World {
        records: Vec<(String, std::collections::BTreeMap<String, String>)>,
        person_of: HashMap<String, usize>,
        persons: usize,
    }
    type Fields = std::collections::BTreeMap<String, String>;
    let (w, model, norm): (World, Model, fn(&Fields) -> Fields) = if unit {
        let u = unit_world(seed, persons);
        let w = World {
            records: u.records.into_iter().map(|r| (r.id, r.fields)).collect(),
            person_of: u.unit_of,
            persons: u.units,
        };
        (w, Model::unit(), normalize::unit)
    } else {
        let p = identity_world(seed, persons);
        let w = World {
            records: p.records.into_iter().map(|r| (r.id, r.fields)).collect(),
            person_of: p.person_of,
            persons: p.persons,
        };
        (w, Model::person(), normalize::person)
    };
    let recs: Vec<Record> = w.records.iter().map(|(id, f)| Record { id: id.clone(), fields: norm(f) }).collect();
    let rss_before = rss_mib();
    let t = std::time::Instant::now();
    let mut r = Resolver::new(model.clone());
    for rec in &recs {
        r.add(rec.clone()).expect("unique ids");
    }
    let took = t.elapsed();
    let rss_resolver = rss_mib() - rss_before;
    let clusters = r.clusters();
    let (p, rc) = pairwise_quality(&clusters, &w.person_of);
    println!(
        "{} records, {} entities, {} clusters, {} comparisons, {:.1} µs/record, resolver +{rss_resolver:.0} MiB RSS; precision {p:.4}, recall {rc:.4}, review queue {}",
        recs.len(),
        w.persons,
        clusters.len(),
        r.comparisons(),
        took.as_secs_f64() * 1e6 / recs.len() as f64,
        r.review_queue().len()
    );
    let by_id: HashMap<&str, &Record> = recs.iter().map(|x| (x.id.as_str(), x)).collect();
    let raw: HashMap<&str, _> = w.records.iter().map(|(id, f)| (id.as_str(), f)).collect();
    let show = |a: &str, b: &str| {
        let s = score(&model, &by_id[a].fields, &by_id[b].fields);
        println!("  {a} {:?}\n  {b} {:?}", raw[a], raw[b]);
        let parts: Vec<String> = s.parts.iter().map(|p| format!("{}={}({:+.1})", p.field, p.level, p.weight)).collect();
        println!(
            "    weight {:.1} p={:.4} strong={:?} conflict={:?} {}",
            s.weight,
            s.probability,
            s.strong,
            s.conflict,
            parts.join(" ")
        );
    };
    println!("-- wrong links (same cluster, different persons):");
    let mut n = 0;
    for m in clusters.values() {
        for i in 0..m.len() {
            for j in i + 1..m.len() {
                if w.person_of[&m[i]] != w.person_of[&m[j]] && n < 8 {
                    n += 1;
                    show(&m[i], &m[j]);
                }
            }
        }
    }
    println!("-- missed links (same person, different clusters):");
    let mut by_person: HashMap<usize, Vec<&str>> = HashMap::new();
    for rec in &recs {
        by_person.entry(w.person_of[&rec.id]).or_default().push(&rec.id);
    }
    let mut n = 0;
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for ids in by_person.values() {
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                if r.cluster_of(ids[i]).ok() != r.cluster_of(ids[j]).ok() {
                    let s = score(&model, &by_id[ids[i]].fields, &by_id[ids[j]].fields);
                    let k: Vec<String> = s
                        .parts
                        .iter()
                        .filter(|p| p.level != "null")
                        .map(|p| format!("{}={}", p.field, p.level))
                        .collect();
                    *kinds.entry(k.join(" ")).or_default() += 1;
                    if n < 6 {
                        n += 1;
                        show(ids[i], ids[j]);
                    }
                }
            }
        }
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    println!("-- missed pairs by evidence:");
    for (k, n) in kinds.iter().take(15) {
        println!("  {n:>5}  {k}");
    }
    let mut review: HashMap<String, usize> = HashMap::new();
    for item in r.review_queue() {
        let k: Vec<String> =
            item.score.parts.iter().filter(|p| p.level != "null").map(|p| format!("{}={}", p.field, p.level)).collect();
        *review.entry(k.join(" ")).or_default() += 1;
    }
    let mut review: Vec<_> = review.into_iter().collect();
    review.sort_by_key(|k| std::cmp::Reverse(k.1));
    println!("-- review queue by evidence:");
    for (k, n) in review.iter().take(8) {
        println!("  {n:>5}  {k}");
    }
}

/// Resident set size of this process (Linux), MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .map(|kb: f64| kb / 1024.0)
        .unwrap_or(0.0)
}
