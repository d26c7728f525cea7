//! Joint matters on the simulator's incidents: precision/recall and the
//! rules behind wrong links: `cargo run -p lianqin-resolve --example matters_quality -- [incidents] [seed]`.

use std::collections::HashMap;

use lianqin_resolve::matters::pairwise_quality;
use lianqin_resolve::{MatterGrouper, MatterRule, MatterRules, Report};
use lianqin_sim::incidents::incident_world;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let w = incident_world(seed, n);
    let t = std::time::Instant::now();
    let mut g = MatterGrouper::new(MatterRules::shipped());
    for r in &w.reports {
        g.add(Report {
            id: r.id.clone(),
            number: Some(r.number.clone()),
            category: Some(r.category.clone()),
            lon: r.lon,
            lat: r.lat,
            reported_at: r.reported_at,
            party: r.party.clone(),
            text: r.text.clone(),
        })
        .expect("unique ids");
    }
    let took = t.elapsed();
    let groups = g.groups();
    let (p, r) = pairwise_quality(&groups, &w.incident_of);
    println!(
        "{} reports of {} incidents → {} joint matters, {:.1} µs/report; precision {p:.4}, recall {r:.4}",
        w.reports.len(),
        w.incidents,
        groups.len(),
        took.as_secs_f64() * 1e6 / w.reports.len() as f64
    );
    // Wrong joins, by the rule that joined the report.
    let mut wrong: HashMap<String, usize> = HashMap::new();
    for (id, gid, rule) in g.links() {
        let seed = gid.trim_start_matches("mg:");
        if w.incident_of[&id] != w.incident_of[seed] {
            let k = match rule {
                Some(MatterRule::Nearby { hours, .. }) if hours > 48.0 => "nearby (long tier)".to_string(),
                Some(MatterRule::Nearby { .. }) => "nearby (48 h tier)".to_string(),
                Some(MatterRule::Party { .. }) => "party".to_string(),
                Some(MatterRule::Reference { .. }) => "reference".to_string(),
                Some(MatterRule::Operator { .. }) => "operator".to_string(),
                None => "seed".to_string(),
            };
            *wrong.entry(k).or_default() += 1;
        }
    }
    println!("reports joined to another incident's group, by rule: {wrong:?}");
}
