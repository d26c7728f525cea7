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
//!
//! Every incident has a site: the party's registered address, a road and
//! house number near the hotspot (`凤凰路88号`), or a landmark
//! (`义皋村东苕溪南侧排口`). Each report writes it its own way — with or
//! without province, city, district and town, `#` for `号`, full-width
//! digits, `附近`, a building and room — and some give only a vague place
//! (a town and village: callers do not know the number) or a neighbouring
//! house number.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{DIVISIONS, pick};

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
    /// Where it happened, as the report writes it.
    pub address: Option<String>,
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
pub(crate) fn jitter(rng: &mut StdRng, lon: f64, lat: f64, metres: f64) -> (f64, f64) {
    let r = metres * rng.random::<f64>().sqrt();
    let t = rng.random::<f64>() * std::f64::consts::TAU;
    let dlat = r * t.sin() / 111_320.0;
    let dlon = r * t.cos() / (111_320.0 * lat.to_radians().cos());
    (lon + dlon, lat + dlat)
}

/// An incident's site.
#[derive(Debug, Clone)]
struct Site {
    /// Division index into [`DIVISIONS`].
    division: usize,
    town: &'static str,
    village: &'static str,
    /// `凤凰路88号` or `义皋村东苕溪南侧排口`.
    place: String,
    /// The house number, when the place has one (`place` ends `{n}号`).
    number: Option<u32>,
}

/// A hotspot: where incidents crowd, in one village of one town.
#[derive(Debug, Clone)]
struct Hotspot {
    lon: f64,
    lat: f64,
    division: usize,
    town: &'static str,
    village: &'static str,
}

impl Hotspot {
    fn numbered(&self, rng: &mut StdRng) -> Site {
        // The division's main roads, or one of the town's own
        // (`织里东路`): a district has hundreds of roads.
        let road = if rng.random_bool(0.3) {
            pick(rng, DIVISIONS[self.division].roads).to_string()
        } else {
            let stem = self.town.trim_end_matches("街道").trim_end_matches(['镇', '乡']);
            format!("{stem}{}路", ["东", "西", "南", "北", "中", "新"][rng.random_range(0..6)])
        };
        let n = rng.random_range(1..800);
        Site {
            division: self.division,
            town: self.town,
            village: self.village,
            place: format!("{road}{n}号"),
            number: Some(n),
        }
    }

    fn landmark(&self, rng: &mut StdRng) -> Site {
        let water = pick(rng, DIVISIONS[self.division].waters);
        let side = ["东侧", "西侧", "南侧", "北侧", "上游", "下游"][rng.random_range(0..6)];
        let what = ["河段", "桥", "码头", "闸", "排口"][rng.random_range(0..5)];
        Site {
            division: self.division,
            town: self.town,
            village: self.village,
            place: format!("{}{water}{side}{what}", self.village),
            number: None,
        }
    }
}

/// `site` as one report writes it; with probability `vague` only the town
/// and village, with probability `neighbour` (a caller standing next door)
/// a house number a few doors away.
fn write_site(rng: &mut StdRng, site: &Site, vague: f64, neighbour: f64) -> String {
    let d = &DIVISIONS[site.division];
    if rng.random_bool(vague) {
        return match rng.random_range(0..3) {
            0 => format!("{}{}附近", site.town, site.village),
            1 => format!("{}{}", d.name, site.town),
            _ => format!("{}一带", site.village),
        };
    }
    let mut place = site.place.clone();
    if let Some(n) = site.number
        && rng.random_bool(neighbour)
    {
        let other = if rng.random_bool(0.5) {
            n + rng.random_range(1..6)
        } else {
            n.saturating_sub(rng.random_range(1..6)).max(1)
        };
        place = place.replacen(&format!("{n}号"), &format!("{other}号"), 1);
    }
    let place = restyle(rng, place, site.number.is_some());
    match rng.random_range(0..5) {
        0 => format!("浙江省湖州市{}{}{place}", d.name, site.town),
        1 => format!("湖州市{}{place}", d.name),
        2 => format!("{}{}{place}", d.name, site.town),
        3 => format!("{}{place}", site.town),
        _ => format!("{}{place}", d.name),
    }
}

/// `place` as one writer has it: `#` for `号`, full-width digits, `附近`,
/// `旁`, or (`rooms`: a numbered house) a building and room after it; most
/// often as it is.
pub(crate) fn restyle(rng: &mut StdRng, place: String, rooms: bool) -> String {
    match rng.random_range(0..10) {
        0 => place.replace('号', "#"),
        1 => place
            .chars()
            .map(|c| if c.is_ascii_digit() { char::from_u32(c as u32 - 0x30 + 0xFF10).unwrap_or(c) } else { c })
            .collect(),
        2 => format!("{place}附近"),
        3 if rooms => format!("{place}{}幢{}室", rng.random_range(1..20), rng.random_range(101..1500)),
        4 => format!("{place}旁"),
        _ => place,
    }
}

/// The shortest time between two incidents of one enterprise (30 days).
const PARTY_GAP: i64 = 30 * 86_400;

/// Generates `incidents` incidents over a year and their reports, seeded.
pub fn incident_world(seed: u64, incidents: usize) -> IncidentWorld {
    let mut rng = StdRng::seed_from_u64(seed);
    // Hotspots: a few per county.
    let hotspots: Vec<Hotspot> = (0..(incidents / 15).max(10))
        .map(|_| {
            let division = rng.random_range(0..DIVISIONS.len());
            let d = &DIVISIONS[division];
            let (x0, x1, y0, y1) = d.bbox;
            Hotspot {
                lon: rng.random_range(x0..x1),
                lat: rng.random_range(y0..y1),
                division,
                town: pick(&mut rng, d.towns),
                village: pick(&mut rng, d.villages),
            }
        })
        .collect();
    // Enterprises: each registered at a house number near one hotspot.
    let parties: Vec<(String, usize, Site)> = (0..(incidents / 3).max(20))
        .map(|i| {
            let h = rng.random_range(0..hotspots.len());
            let site = hotspots[h].numbered(&mut rng);
            (format!("uscc:91330500MA2{i:07}"), h, site)
        })
        .collect();
    let start = 1_735_660_800i64; // 2025-01-01 00:00 +08:00
    let mut reports = Vec::new();
    let mut incident_of = HashMap::new();
    let mut party_times: HashMap<usize, Vec<i64>> = HashMap::new();
    let mut n = HashMap::<&str, usize>::new();
    let mut next = |src: &'static str| {
        let c = n.entry(src).or_default();
        *c += 1;
        *c
    };
    for i in 0..incidents {
        let t0 = start + rng.random_range(0..365 * 86_400);
        // An enterprise's next incident comes at least a month after the
        // last (before that it is the same matter, still being handled).
        let party = rng
            .random_bool(0.5)
            .then(|| {
                (0..10).map(|_| rng.random_range(0..parties.len())).find(|p| {
                    party_times.get(p).is_none_or(|ts: &Vec<i64>| ts.iter().all(|t| (t - t0).abs() >= PARTY_GAP))
                })
            })
            .flatten();
        if let Some(p) = party {
            party_times.entry(p).or_default().push(t0);
        }
        let party = party.map(|p| parties[p].clone());
        let hotspot = &hotspots[party.as_ref().map(|p| p.1).unwrap_or_else(|| rng.random_range(0..hotspots.len()))];
        let (lon, lat) = jitter(&mut rng, hotspot.lon, hotspot.lat, 1500.0);
        let cat = category(&mut rng);
        let site = match &party {
            Some(p) => p.2.clone(),
            None if rng.random_bool(0.7) => hotspot.numbered(&mut rng),
            None => hotspot.landmark(&mut rng),
        };
        let party = party.map(|p| p.0);
        let mut emit = |rng: &mut StdRng,
                        source: &'static str,
                        number: String,
                        at: i64,
                        pos: Option<f64>,
                        party_p: f64,
                        (vague, neighbour): (f64, f64),
                        text: String| {
            let position = pos.filter(|_| rng.random_bool(0.999)).map(|m| jitter(rng, lon, lat, m));
            let address = write_site(rng, &site, vague, neighbour);
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
                address: Some(address),
                text,
            });
        };
        let police = rng.random_bool(0.7).then(|| format!("J2025{:07}", next("police_110")));
        if let Some(num) = &police {
            let at = t0 + rng.random_range(0..3600);
            let pos = rng.random_bool(0.9).then_some(200.0);
            emit(&mut rng, "police_110", num.clone(), at, pos, 0.3, (0.04, 0.1), "群众报警：河道有污水排放".into());
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
            emit(&mut rng, "hotline_12345", num, at, pos, 0.2, (0.03, 0.05), text);
        }
        if rng.random_bool(0.4) {
            let num = format!("HZ12369{:07}", next("env_12369"));
            let at = t0 + rng.random_range(0..40 * 3600);
            let pos = rng.random_bool(0.8).then_some(300.0);
            emit(&mut rng, "env_12369", num, at, pos, 0.5, (0.03, 0.03), "环保举报：企业偷排".into());
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
            emit(&mut rng, "law_enforcement", num, at, pos, 0.95, (0.01, 0.0), text);
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
        assert!(a.reports.iter().all(|r| r.address.is_some()));
        assert!(a.reports.iter().any(|r| r.address.as_deref().is_some_and(|x| x.contains('#'))));
    }
}
