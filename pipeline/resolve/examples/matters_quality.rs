//! Joint matters on the simulator's incidents: precision/recall, the links
//! that join two incidents (by rule) and the true pairs left apart (by the
//! evidence they share):
//! `cargo run --release -p lianqin-resolve --example matters_quality -- [incidents] [seed] [--links]`.
//! `--links` also prints every link between two incidents.

use std::collections::{BTreeMap, HashMap};

use lianqin_resolve::matters::pairwise_quality;
use lianqin_resolve::normalize::site;
use lianqin_resolve::{MatterGrouper, MatterRule, MatterRules, Report};
use lianqin_sim::incidents::{IncidentReport, incident_world};

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--links").collect();
    let print_links = std::env::args().any(|a| a == "--links");
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
            address: r.address.clone(),
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
    let by_id: HashMap<&str, &IncidentReport> = w.reports.iter().map(|r| (r.id.as_str(), r)).collect();

    // Links between two incidents, by rule: what costs precision.
    let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
    for (a, b, rule) in g.edges() {
        if w.incident_of[a] != w.incident_of[b] {
            let text = rule.describe();
            let kind = match rule {
                MatterRule::Operator { .. } => "operator",
                MatterRule::Reference { .. } => "reference",
                MatterRule::Party { .. } => "party",
                MatterRule::Site { numbers_apart: 0, .. } => "site",
                MatterRule::Site { .. } => "site next door",
                MatterRule::Nearby { .. } => "nearby",
            };
            *wrong.entry(kind.to_string()).or_default() += 1;
            if print_links {
                let show = |id: &str| {
                    let x = by_id[id];
                    format!("{id} {:?} {:?} {}", x.address, x.party, x.category)
                };
                println!("  {} | {}: {text}", show(a), show(b));
            }
        }
    }
    println!("links between two incidents, by rule: {wrong:?}");

    // True pairs left apart, by the evidence they share: what costs recall.
    let group_of: HashMap<String, String> = g.links().into_iter().map(|(id, gid, _)| (id, gid)).collect();
    let mut by_incident: HashMap<usize, Vec<&IncidentReport>> = HashMap::new();
    for r in &w.reports {
        by_incident.entry(w.incident_of[&r.id]).or_default().push(r);
    }
    let mut missed: BTreeMap<String, usize> = BTreeMap::new();
    for rs in by_incident.values() {
        for (i, a) in rs.iter().enumerate() {
            for b in &rs[i + 1..] {
                if group_of[&a.id] == group_of[&b.id] {
                    continue;
                }
                let s = |x: &IncidentReport| x.address.as_deref().and_then(site);
                let mut shared = Vec::new();
                if s(a).is_some() && s(a) == s(b) {
                    shared.push("site");
                }
                if a.category == b.category {
                    shared.push("category");
                }
                if a.party.is_some() && a.party == b.party {
                    shared.push("party");
                }
                if a.lon.is_some() && b.lon.is_some() {
                    shared.push("positions");
                }
                *missed.entry(shared.join(" ")).or_default() += 1;
            }
        }
    }
    let mut missed: Vec<_> = missed.into_iter().collect();
    missed.sort_by_key(|y| std::cmp::Reverse(y.1));
    println!("-- true pairs apart, by what they share:");
    for (k, v) in missed {
        println!("{v:6}  {}", if k.is_empty() { "nothing" } else { &k });
    }
}
