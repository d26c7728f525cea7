//! Joint matters in the demo's own records (issue 13, item 4): some 12345
//! tickets and law-enforcement cases report an incident 110 already took,
//! each written the way its department writes it, with the truth of which
//! reports are one incident.
//!
//! [`overlay`] rewrites, after the records are generated:
//!
//! * ~30 % of 12345 tickets into a citizen's call about a 110 incident of
//!   the 30 hours before the ticket was accepted: the incident's category
//!   (title, content, handling department and reply as 12345 writes that
//!   category), its district, its place written another way (with or
//!   without province, city and district, `#` for `号`, full-width digits,
//!   `附近`; 8 % only the town and village), its position seen from another
//!   phone (up to 150 m away, BD-09; 10 % without one), and in a quarter of
//!   them the 110 number (`已报110，接警单号J…`);
//! * ~35 % of the cases against an individual into the case law
//!   enforcement opened 1–18 days after a 110 incident of a category it
//!   handles: the violation of that category, the district, and the
//!   inspected position within 40 m of the incident's (WGS-84).
//!
//! A re-handled (重办) ticket reports its original ticket's incident.
//!
//! The truth ([`World::incident_of`](crate::world::World)) names every
//! 110, 12345 and law-enforcement report by the matter id the hub gives it
//! (`110:<jjdbh>`, `12345:<ticket_no>`, `zhzf:<case_no>`) and maps it to
//! its incident: a 110 incident's index, or a number of its own for a
//! report of an incident no other department saw.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::data::{CATS, Cat, DIVISIONS, Division, VIOLATIONS, fill, pick};
use crate::geo::{gcj02_to_bd09, gcj02_to_wgs84, round6};
use crate::incidents::jitter;
use crate::world::{Rec, reply_text, sub_rng};

/// Share of tickets that report a 110 incident.
const TICKET_SHARE: f64 = 0.30;
/// Share of cases against an individual that follow a 110 incident.
const CASE_SHARE: f64 = 0.35;

fn local(s: Option<&str>) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s?, "%Y-%m-%d %H:%M:%S").ok()
}

fn iso(s: Option<&str>) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s?, "%Y-%m-%dT%H:%M:%S+08:00").ok()
}

/// A 110 incident another department may report.
struct Incident {
    /// Index in the 110 records (its truth).
    index: usize,
    jjdbh: String,
    at: NaiveDateTime,
    cat: Cat,
    division: &'static Division,
    address: String,
    /// GCJ-02 as 110 serves it.
    gcj: (f64, f64),
}

/// The town and village an address of [`crate::world`] names, if any.
fn town_village(d: &Division, address: &str) -> (Option<&'static str>, Option<&'static str>) {
    (d.towns.iter().copied().find(|t| address.contains(t)), d.villages.iter().copied().find(|v| address.contains(v)))
}

/// `address` (`[浙江省][湖州市]吴兴区织里镇凤凰路88号`) as another
/// department writes the same place.
fn rewrite(rng: &mut StdRng, d: &Division, address: &str) -> String {
    let bare = address.trim_start_matches("浙江省").trim_start_matches("湖州市");
    let (town, village) = town_village(d, bare);
    if rng.random_bool(0.08)
        && let (Some(t), Some(v)) = (town, village)
    {
        return format!("{t}{v}附近");
    }
    let place = crate::incidents::restyle(rng, bare.to_string(), false);
    match rng.random_range(0..4) {
        0 => format!("浙江省湖州市{place}"),
        1 => format!("湖州市{place}"),
        2 => place.strip_prefix(d.name).map(str::to_string).unwrap_or(place),
        _ => place,
    }
}

/// The law-enforcement violation of an incident's category, when law
/// enforcement handles it.
fn violation(cat: Cat) -> Option<(&'static str, &'static str)> {
    let name = match cat {
        Cat::WasteDumping => "擅自倾倒建筑垃圾",
        Cat::TreeFelling => "擅自改变林地用途",
        Cat::FarmlandOccupation => "非法占用耕地",
        Cat::SandMining => "未经批准擅自采砂",
        Cat::Pollution => "超标排放水污染物",
        Cat::IllegalFishing | Cat::Hunting => return None,
    };
    VIOLATIONS.iter().find(|v| v.0 == name).map(|v| (v.0, v.1))
}

fn incidents_of(incidents: &[Rec]) -> Vec<Incident> {
    incidents
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_some() && r.broken.is_none() && r.flagged.is_none() && r.planted.is_none())
        .filter_map(|(index, r)| {
            let v = &r.value;
            let cat = CATS.iter().map(|c| c.0).find(|c| v["ajlb"].as_str() == Some(c.police_label()))?;
            let division = DIVISIONS.iter().find(|d| v["xzqh"].as_str() == Some(d.code))?;
            Some(Incident {
                index,
                jjdbh: v["jjdbh"].as_str()?.to_string(),
                at: local(v["bjsj"].as_str())?,
                cat,
                division,
                address: v["afdz"].as_str()?.to_string(),
                gcj: (v["jd"].as_f64()?, v["wd"].as_f64()?),
            })
        })
        .collect()
}

/// The incidents that happened between `from` and `to`.
fn between(incidents: &[Incident], from: NaiveDateTime, to: NaiveDateTime) -> Vec<&Incident> {
    incidents.iter().filter(|i| i.at >= from && i.at <= to).collect()
}

/// Rewrites `ticket` into a call about `i`.
fn ticket_of(rng: &mut StdRng, ticket: &mut Rec, i: &Incident) {
    let d = i.division;
    let (town, village) = town_village(d, &i.address);
    let n = rng.random_range(2..30).to_string();
    let vars = [
        ("{water}", pick(rng, d.waters)),
        ("{hill}", pick(rng, d.hills)),
        ("{town}", town.unwrap_or(d.towns[0])),
        ("{village}", village.unwrap_or(d.villages[0])),
        ("{road}", pick(rng, d.roads)),
        ("{n}", n.as_str()),
        ("{plate}", ""),
    ];
    let (titles, contents) = i.cat.hotline_texts();
    let v = &mut ticket.value;
    v["title"] = json!(fill(pick(rng, titles), &vars));
    let mut content = fill(pick(rng, contents), &vars);
    if rng.random_bool(0.25) {
        content.push_str(&format!("（已报110，接警单号{}）", i.jjdbh));
    }
    v["content"] = json!(content);
    v["address"] = json!(rewrite(rng, d, &i.address));
    v["division"] = json!(d.code);
    if rng.random_bool(0.1) {
        v["lng"] = serde_json::Value::Null;
        v["lat"] = serde_json::Value::Null;
    } else {
        let (x, y) = jitter(rng, i.gcj.0, i.gcj.1, 150.0);
        let (bx, by) = gcj02_to_bd09(x, y);
        v["lng"] = json!(round6(bx));
        v["lat"] = json!(round6(by));
    }
    v["handling_dept"] = json!(i.cat.handling_dept(d));
    if !v["reply"].is_null() {
        v["reply"] = json!(reply_text(i.cat));
    }
    ticket.hidden["reply"] = json!(reply_text(i.cat));
}

/// Rewrites `case` (against an individual) into the case opened after `i`.
fn case_of(rng: &mut StdRng, case: &mut Rec, i: &Incident, (viol, basis): (&str, &str)) {
    let v = &mut case.value;
    let old = v["violation"].as_str().unwrap_or_default().to_string();
    if let Some(name) = v["case_name"].as_str() {
        v["case_name"] = json!(name.replacen(&old, viol, 1));
    }
    v["violation"] = json!(viol);
    v["legal_basis"] = json!(basis);
    v["division"] = json!(i.division.code);
    v["agency"] = json!(format!("{}综合行政执法局", i.division.name));
    let (wx, wy) = gcj02_to_wgs84(i.gcj.0, i.gcj.1);
    let (x, y) = jitter(rng, wx, wy, 40.0);
    v["lng"] = json!(round6(x));
    v["lat"] = json!(round6(y));
}

/// Plants the joint incidents (see the module docs) and returns the truth:
/// matter id → incident.
pub(crate) fn overlay(seed: u64, incidents: &[Rec], tickets: &mut [Rec], cases: &mut [Rec]) -> BTreeMap<String, usize> {
    let mut rng = sub_rng(seed, 0x6a01);
    let known = incidents_of(incidents);
    let mut truth = BTreeMap::new();
    for (n, r) in incidents.iter().enumerate() {
        if let Some(k) = &r.key {
            truth.insert(format!("110:{k}"), n);
        }
    }
    let mut own = incidents.len();
    let mut alone = |truth: &mut BTreeMap<String, usize>, id: String| {
        truth.insert(id, own);
        own += 1;
    };
    for t in tickets.iter_mut() {
        let Some(key) = t.key.clone() else { continue };
        let id = format!("12345:{key}");
        let accepted = local(t.value["accept_time"].as_str());
        let joins = t.planted.is_none() && rng.random_bool(TICKET_SHARE);
        let chosen = match (joins, accepted) {
            (true, Some(at)) => {
                let c = between(&known, at - Duration::hours(30), at - Duration::minutes(5));
                (!c.is_empty()).then(|| c[rng.random_range(0..c.len())])
            }
            _ => None,
        };
        match chosen {
            Some(i) => {
                ticket_of(&mut rng, t, i);
                truth.insert(id, i.index);
            }
            None => alone(&mut truth, id),
        }
    }
    // A re-handled (重办) ticket is its original's matter.
    for t in tickets.iter() {
        if let (Some(key), Some(original)) = (&t.key, t.value["original_ticket_no"].as_str())
            && let Some(i) = truth.get(&format!("12345:{original}")).copied()
        {
            truth.insert(format!("12345:{key}"), i);
        }
    }
    for c in cases.iter_mut() {
        let Some(key) = c.key.clone() else { continue };
        let id = format!("zhzf:{key}");
        let individual = c.value["party_uscc"].is_null();
        let inspected = iso(c.value["inspect_time"].as_str());
        let joins = individual && c.planted.is_none() && rng.random_bool(CASE_SHARE);
        let chosen = match (joins, inspected) {
            (true, Some(at)) => {
                let c: Vec<&Incident> = between(&known, at - Duration::days(18), at - Duration::days(1))
                    .into_iter()
                    .filter(|i| violation(i.cat).is_some())
                    .collect();
                (!c.is_empty()).then(|| c[rng.random_range(0..c.len())])
            }
            _ => None,
        };
        match chosen.and_then(|i| Some((i, violation(i.cat)?))) {
            Some((i, viol)) => {
                case_of(&mut rng, c, i, viol);
                truth.insert(id, i.index);
            }
            None => alone(&mut truth, id),
        }
    }
    truth
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::SimConfig;
    use crate::world::World;

    /// The demo's reports include incidents seen by two and three
    /// departments, every report has a truth, and a joint report keeps its
    /// incident's district, category and place.
    #[test]
    fn the_demo_has_joint_incidents_with_their_truth() {
        let w = World::generate(&SimConfig::default());
        let truth = &w.incident_of;
        let reports = w.incidents.iter().filter(|r| r.key.is_some()).count()
            + w.tickets.iter().filter(|r| r.key.is_some()).count()
            + w.cases.len();
        assert_eq!(truth.len(), reports);
        let mut size: HashMap<usize, Vec<&str>> = HashMap::new();
        for (id, i) in truth {
            size.entry(*i).or_default().push(id.split(':').next().unwrap_or_default());
        }
        let joint = size.values().filter(|s| s.len() > 1).count();
        assert!(joint > 60, "{joint} joint incidents");
        assert!(size.values().any(|s| s.contains(&"12345") && s.contains(&"zhzf")), "some seen by three departments");
        let by_key: HashMap<&str, &crate::world::Rec> =
            w.incidents.iter().filter_map(|r| Some((r.key.as_deref()?, r))).collect();
        let mut cited = 0;
        for t in &w.tickets {
            let Some(i) = truth.get(&format!("12345:{}", t.key.as_deref().unwrap_or_default())) else { continue };
            let Some(inc) = w.incidents.get(*i) else { continue };
            let k = inc.key.as_deref().unwrap_or_default();
            assert!(by_key.contains_key(k));
            assert_eq!(t.value["division"], inc.value["xzqh"]);
            let cat = crate::data::CATS.iter().map(|c| c.0).find(|c| inc.value["ajlb"] == c.police_label()).unwrap();
            let d = crate::data::DIVISIONS.iter().find(|d| inc.value["xzqh"] == d.code).unwrap();
            assert_eq!(t.value["handling_dept"].as_str(), Some(cat.handling_dept(d).as_str()));
            cited += usize::from(t.value["content"].as_str().unwrap_or_default().contains(k));
        }
        assert!(cited > 5, "{cited} tickets cite the 110 number");
    }
}
