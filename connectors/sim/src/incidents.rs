//! Ground truth for joint matters (issue 13, item 4): incidents reported by
//! several departments, each report written its own way, and the truth of
//! which reports are one incident.
//!
//! An incident happens at a hotspot (an industrial park, a river bend:
//! incidents crowd there, so nearby reports of *different* incidents are
//! common), has a category (a–f) and often a party (an enterprise). It is
//! reported by 110 (a number like `J2025…`, the caller's GPS), 12345 (later,
//! sometimes geocoded, sometimes citing the 110 number), 12369 (later still)
//! and — days later — a law-enforcement case (the party, often the 110
//! number in its text). Noise: coordinates missing (10–20 %) or jittered (up
//! to 100–300 m), a wrong category (5 %), parties not always known.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::DIVISIONS;

/// One report of an incident.
#[derive(Debug, Clone)]
pub struct IncidentReport {
    /// `<source>:<key>` (the matter id).
    pub id: String,
    /// The department system.
    pub source: &'static str,
    /// Its own number others may cite.
    pub number: String,
    /// Category a–f as the report has it.
    pub category: String,
    /// WGS-84 longitude, when the report has a position.
    pub lon: Option<f64>,
    /// WGS-84 latitude.
    pub lat: Option<f64>,
    /// Unix seconds.
    pub reported_at: i64,
    /// Party element id (`uscc:…`) when known.
    pub party: Option<String>,
    /// Title and content.
    pub text: String,
}

/// Reports and truth.
#[derive(Debug, Clone)]
pub struct IncidentWorld {
    /// Every report.
    pub reports: Vec<IncidentReport>,
    /// Report id → true incident.
    pub incident_of: HashMap<String, usize>,
    /// Incidents generated.
    pub incidents: usize,
}

const CATEGORIES: [(&str, u32); 6] = [("a", 40), ("b", 8), ("c", 22), ("d", 6), ("e", 18), ("f", 6)];

fn category(rng: &mut StdRng) -> &'static str {
    let total: u32 = CATEGORIES.iter().map(|c| c.1).sum();
    let mut x = rng.random_range(0..total);
    for (c, w) in CATEGORIES {
        if x < w {
            return c;
        }
        x -= w;
    }
    "f"
}

/// A point up to `metres` from (lon, lat).
fn jitter(rng: &mut StdRng, lon: f64, lat: f64, metres: f64) -> (f64, f64) {
    let r = metres * rng.random::<f64>().sqrt();
    let t = rng.random::<f64>() * std::f64::consts::TAU;
    let dlat = r * t.sin() / 111_320.0;
    let dlon = r * t.cos() / (111_320.0 * lat.to_radians().cos());
    (lon + dlon, lat + dlat)
}

/// Generates `incidents` incidents over a year and their reports, seeded.
pub fn incident_world(seed: u64, incidents: usize) -> IncidentWorld {
    let mut rng = StdRng::seed_from_u64(seed);
    // Hotspots: a few per county.
    let hotspots: Vec<(f64, f64)> = (0..(incidents / 15).max(10))
        .map(|_| {
            let d = &DIVISIONS[rng.random_range(0..DIVISIONS.len())];
            let (x0, x1, y0, y1) = d.bbox;
            (rng.random_range(x0..x1), rng.random_range(y0..y1))
        })
        .collect();
    let parties: Vec<String> = (0..(incidents / 3).max(20)).map(|i| format!("uscc:91330500MA2{i:07}")).collect();
    let start = 1_735_660_800i64; // 2025-01-01 00:00 +08:00
    let mut reports = Vec::new();
    let mut incident_of = HashMap::new();
    let mut n = HashMap::<&str, usize>::new();
    let mut next = |src: &'static str| {
        let c = n.entry(src).or_default();
        *c += 1;
        *c
    };
    for i in 0..incidents {
        let (hx, hy) = hotspots[rng.random_range(0..hotspots.len())];
        let (lon, lat) = jitter(&mut rng, hx, hy, 1500.0);
        let t0 = start + rng.random_range(0..365 * 86_400);
        let cat = category(&mut rng);
        let party = rng.random_bool(0.5).then(|| parties[rng.random_range(0..parties.len())].clone());
        let mut emit = |rng: &mut StdRng,
                        source: &'static str,
                        number: String,
                        at: i64,
                        pos: Option<f64>,
                        party_p: f64,
                        text: String| {
            let position = pos.filter(|_| rng.random_bool(0.999)).map(|m| jitter(rng, lon, lat, m));
            let category = if rng.random_bool(0.05) { "f".to_string() } else { cat.to_string() };
            let id = format!("{source}:{number}");
            incident_of.insert(id.clone(), i);
            reports.push(IncidentReport {
                id,
                source,
                number,
                category,
                lon: position.map(|p| p.0),
                lat: position.map(|p| p.1),
                reported_at: at,
                party: party.clone().filter(|_| rng.random_bool(party_p)),
                text,
            });
        };
        let police = rng.random_bool(0.7).then(|| format!("J2025{:07}", next("police_110")));
        if let Some(num) = &police {
            let at = t0 + rng.random_range(0..3600);
            let pos = rng.random_bool(0.9).then_some(200.0);
            emit(&mut rng, "police_110", num.clone(), at, pos, 0.3, "群众报警：河道有污水排放".into());
        }
        if rng.random_bool(0.5) {
            let num = format!("HZ12345{:07}", next("hotline_12345"));
            let at = t0 + rng.random_range(0..30 * 3600);
            // Geocoded from the caller's address.
            let pos = rng.random_bool(0.8).then_some(300.0);
            let text = match &police {
                Some(p) if rng.random_bool(0.1) => format!("市民来电反映排污问题，已报110（{p}）"),
                _ => "市民来电反映排污问题".to_string(),
            };
            emit(&mut rng, "hotline_12345", num, at, pos, 0.2, text);
        }
        if rng.random_bool(0.4) {
            let num = format!("HZ12369{:07}", next("env_12369"));
            let at = t0 + rng.random_range(0..40 * 3600);
            let pos = rng.random_bool(0.8).then_some(300.0);
            emit(&mut rng, "env_12369", num, at, pos, 0.5, "环保举报：企业偷排".into());
        }
        if rng.random_bool(0.35) {
            let num = format!("HZZF2025{:06}", next("law_enforcement"));
            let at = t0 + rng.random_range(86_400..20 * 86_400);
            // The site survey.
            let pos = rng.random_bool(0.8).then_some(100.0);
            let text = match &police {
                Some(p) if rng.random_bool(0.5) => format!("根据110警情{p}立案调查"),
                _ => "立案调查".to_string(),
            };
            emit(&mut rng, "law_enforcement", num, at, pos, 0.95, text);
        }
    }
    IncidentWorld { reports, incident_of, incidents }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_have_several_reports_and_the_world_is_reproducible() {
        let a = incident_world(3, 400);
        let b = incident_world(3, 400);
        assert_eq!(a.reports.len(), b.reports.len());
        let mut per: HashMap<usize, usize> = HashMap::new();
        for r in &a.reports {
            *per.entry(a.incident_of[&r.id]).or_default() += 1;
        }
        assert!(per.values().any(|&n| n >= 3));
        assert!(a.reports.iter().any(|r| r.lon.is_none()));
        assert!(a.reports.iter().any(|r| r.text.contains("J2025") && r.source == "law_enforcement"));
    }
}
