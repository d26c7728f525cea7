//! Ground truth for identity resolution (issue 13): the same persons seen by
//! several departments, each system with its own habits and noise, and the
//! truth of who is who.
//!
//! Persons live in households (shared address, sometimes a shared landline)
//! and carry a valid GB 11643 citizen ID and a mobile number. Each person
//! appears in one to four source records; each source keeps the fields its
//! real counterpart keeps, written its way:
//!
//! | source | fields | noise |
//! |---|---|---|
//! | `police_110` (reporter) | name, the caller's phone, citizen ID (70 %), address (60 %), birth date when no ID (half) | 15-digit IDs, full-width digits |
//! | `hotline_12345` (caller) | phone, name (90 %), address (70 %) | `+86`/dashes in phones, no ID |
//! | `env_12369` (complainant) | name, phone, address (half) | no ID, spaces in names |
//! | `law_enforcement` (party) | name, citizen ID (95 %), address (80 %), phone (80 %) | 15-digit IDs |
//! | `market` (legal representative) | name, citizen ID (95 %), phone (80 %) | full-width IDs |
//! | `irs` (legal representative) | name, citizen ID, phone (70 %) | 15-digit IDs |
//!
//! Everywhere: one-character name typos, names with a space, addresses with
//! or without `浙江省湖州市` and with spaces, changed phone numbers, moved
//! addresses (6 %), old phone numbers (3 %), and names shared by different
//! people (30 surnames; families share a surname, an address and often a
//! landline).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{DIVISIONS, GIVEN, SURNAMES, pick};
use crate::ids::citizen_id_check_char;

/// One source record about a person (or, in [`crate::units`], an
/// enterprise).
#[derive(Debug, Clone)]
pub struct IdentityRecord {
    /// `<source>:<n>`.
    pub id: String,
    /// The department system.
    pub source: &'static str,
    /// Field values as that system writes them (not normalized).
    pub fields: BTreeMap<String, String>,
}

/// The records and the truth.
#[derive(Debug, Clone)]
pub struct IdentityWorld {
    /// Every record, in generation order.
    pub records: Vec<IdentityRecord>,
    /// Record id → true person.
    pub person_of: HashMap<String, usize>,
    /// Persons generated.
    pub persons: usize,
}

struct Person {
    name: String,
    id18: String,
    birth: NaiveDate,
    phone: String,
    old_phone: String,
    address: String,
    moved_to: String,
}

/// Characters of given names (two-character given names are common).
const GIVEN_CHARS: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "英", "霞",
    "平", "刚", "华", "国", "志", "海", "燕", "晓", "东", "立", "新", "春", "梅", "雪", "鑫", "浩", "宇", "轩", "梓",
    "涵", "子", "豪", "欣", "怡", "建", "金", "根", "美", "宝", "文", "佳", "秀", "桂", "红", "玉", "兰", "德", "林",
    "成", "荣", "斌", "波", "辉", "健", "俊", "峰", "琳", "婷", "倩", "晨", "阳", "凯", "航", "瑶", "璐", "嘉", "博",
];

/// A given name: a common one (`GIVEN`) or one or two characters.
fn given(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0..=2 => pick(rng, GIVEN).to_string(),
        3..=4 => pick(rng, GIVEN_CHARS).to_string(),
        _ => format!("{}{}", pick(rng, GIVEN_CHARS), pick(rng, GIVEN_CHARS)),
    }
}

fn address(rng: &mut StdRng) -> String {
    let d = &DIVISIONS[rng.random_range(0..DIVISIONS.len())];
    let road = pick(rng, d.roads);
    let n: u32 = rng.random_range(1..300);
    if rng.random_bool(0.5) {
        format!("{}{road}{n}号{}幢{}室", d.name, rng.random_range(1..30), rng.random_range(101..1800))
    } else {
        format!("{}{road}{n}号", d.name)
    }
}

fn mobile(rng: &mut StdRng) -> String {
    let prefix = ["13", "15", "18", "17", "19"][rng.random_range(0..5)];
    format!("{prefix}{}{:08}", rng.random_range(0..10u32), rng.random_range(0..100_000_000u32))
}

fn person(rng: &mut StdRng, household: &str, shared_phone: Option<&str>, surname: &str) -> Person {
    let birth =
        NaiveDate::from_ymd_opt(rng.random_range(1945..=1999), rng.random_range(1..=12), rng.random_range(1..=28))
            .unwrap_or_default();
    let area = pick(rng, &["330502", "330503", "330521", "330522", "330523"]);
    let seq: u32 = rng.random_range(1..1000);
    let first17 = format!("{area}{}{seq:03}", birth.format("%Y%m%d"));
    let id18 = format!("{first17}{}", citizen_id_check_char(&first17).unwrap_or('0'));
    let name = if rng.random_bool(0.7) {
        format!("{surname}{}", given(rng))
    } else {
        format!("{}{}", pick(rng, SURNAMES), given(rng))
    };
    let phone = match shared_phone {
        Some(p) if rng.random_bool(0.5) => p.to_string(),
        _ => mobile(rng),
    };
    Person { name, id18, birth, phone, old_phone: mobile(rng), address: household.to_string(), moved_to: address(rng) }
}

/// ASCII letters and digits in their full-width forms (`３３０５`).
pub(crate) fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) } else { c })
        .collect()
}

fn id15(id18: &str) -> String {
    format!("{}{}", &id18[0..6], &id18[8..17])
}

/// The ID as a source writes it.
fn write_id(rng: &mut StdRng, p: &Person, p15: f64, pfull: f64) -> String {
    if rng.random_bool(p15) {
        id15(&p.id18)
    } else if rng.random_bool(pfull) {
        fullwidth(&p.id18)
    } else {
        p.id18.clone()
    }
}

fn write_name(rng: &mut StdRng, p: &Person) -> String {
    let r: f64 = rng.random();
    let chars: Vec<char> = p.name.chars().collect();
    if r < 0.03 && chars.len() >= 2 {
        // One character mistyped.
        let i = rng.random_range(1..chars.len());
        let mut c = chars.clone();
        c[i] = pick(rng, GIVEN_CHARS).chars().next().unwrap_or('明');
        c.into_iter().collect()
    } else if r < 0.06 && chars.len() >= 2 {
        format!("{} {}", chars[0], chars[1..].iter().collect::<String>())
    } else {
        p.name.clone()
    }
}

fn write_phone(rng: &mut StdRng, p: &Person) -> String {
    let n = if rng.random_bool(0.03) { &p.old_phone } else { &p.phone };
    let landline = n.starts_with('0');
    match rng.random_range(0..10) {
        0 if !landline => format!("+86 {n}"),
        0 => format!("({}){}", &n[0..4], &n[4..]),
        1 if landline => format!("{}-{}", &n[0..4], &n[4..]),
        1 => format!("{}-{}-{}", &n[0..3], &n[3..7], &n[7..]),
        2 => fullwidth(n),
        _ => n.clone(),
    }
}

fn write_address(rng: &mut StdRng, p: &Person) -> String {
    let a = if rng.random_bool(0.06) { &p.moved_to } else { &p.address };
    match rng.random_range(0..6) {
        0 => format!("浙江省湖州市{a}"),
        1 => format!("湖州市{a}"),
        2 => a.replacen('号', "号 ", 1),
        _ => a.clone(),
    }
}

fn write_birth(rng: &mut StdRng, p: &Person) -> String {
    match rng.random_range(0..3) {
        0 => p.birth.format("%Y.%m.%d").to_string(),
        1 => p.birth.format("%Y%m%d").to_string(),
        _ => p.birth.format("%Y-%m-%d").to_string(),
    }
}

fn record(rng: &mut StdRng, source: &'static str, p: &Person) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    match source {
        "police_110" => {
            put("name", write_name(rng, p));
            if rng.random_bool(0.7) {
                put("citizen_id", write_id(rng, p, 0.1, 0.05));
            } else if rng.random_bool(0.5) {
                put("birth_date", write_birth(rng, p));
            }
            // The caller's number.
            put("phone", write_phone(rng, p));
            if rng.random_bool(0.6) {
                put("address", write_address(rng, p));
            }
        }
        "hotline_12345" => {
            if rng.random_bool(0.9) {
                put("name", write_name(rng, p));
            }
            put("phone", write_phone(rng, p));
            if rng.random_bool(0.7) {
                put("address", write_address(rng, p));
            }
        }
        "env_12369" => {
            put("name", write_name(rng, p));
            put("phone", write_phone(rng, p));
            if rng.random_bool(0.5) {
                put("address", write_address(rng, p));
            }
        }
        "law_enforcement" => {
            put("name", write_name(rng, p));
            if rng.random_bool(0.95) {
                put("citizen_id", write_id(rng, p, 0.2, 0.0));
            }
            if rng.random_bool(0.8) {
                put("address", write_address(rng, p));
            }
            if rng.random_bool(0.8) {
                put("phone", write_phone(rng, p));
            }
        }
        "market" => {
            put("name", write_name(rng, p));
            if rng.random_bool(0.95) {
                put("citizen_id", write_id(rng, p, 0.0, 0.1));
            }
            if rng.random_bool(0.8) {
                put("phone", write_phone(rng, p));
            }
        }
        _ => {
            put("name", write_name(rng, p));
            put("citizen_id", write_id(rng, p, 0.3, 0.0));
            if rng.random_bool(0.7) {
                put("phone", write_phone(rng, p));
            }
        }
    }
    f
}

/// Sources and how often a person shows up in each.
const SOURCES: [(&str, u32); 6] =
    [("police_110", 30), ("hotline_12345", 25), ("env_12369", 15), ("law_enforcement", 12), ("market", 10), ("irs", 8)];

/// Generates `persons` persons in households and their records, seeded.
pub fn identity_world(seed: u64, persons: usize) -> IdentityWorld {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut people = Vec::with_capacity(persons);
    while people.len() < persons {
        let home = address(&mut rng);
        let landline = rng.random_bool(0.4).then(|| format!("0572{}", rng.random_range(2_000_000..3_000_000u32)));
        let surname = pick(&mut rng, SURNAMES).to_string();
        let mut names = std::collections::HashSet::new();
        for _ in 0..rng.random_range(1..=4usize).min(persons - people.len()) {
            // No family names two members alike.
            let p = loop {
                let p = person(&mut rng, &home, landline.as_deref(), &surname);
                if names.insert(p.name.clone()) {
                    break p;
                }
            };
            people.push(p);
        }
    }
    let total: u32 = SOURCES.iter().map(|(_, w)| w).sum();
    let mut records = Vec::new();
    let mut person_of = HashMap::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    for (i, p) in people.iter().enumerate() {
        let n = [1usize, 2, 2, 3, 3, 4][rng.random_range(0..6)];
        for _ in 0..n {
            let mut x = rng.random_range(0..total);
            let source = SOURCES
                .iter()
                .find(|(_, w)| {
                    if x < *w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
                .map(|(s, _)| *s)
                .unwrap_or("police_110");
            let c = counters.entry(source).or_default();
            *c += 1;
            let id = format!("{source}:{:06}", *c);
            let fields = record(&mut rng, source, p);
            person_of.insert(id.clone(), i);
            records.push(IdentityRecord { id, source, fields });
        }
    }
    IdentityWorld { records, person_of, persons }
}

/// A wrong check character in place of the right one (a typed-in ID that
/// does not validate; the hub flags it and resolution ignores it).
fn corrupt_check(id: &str) -> String {
    let ascii: String = id
        .chars()
        .map(
            |c| if ('\u{FF10}'..='\u{FF5A}').contains(&c) { char::from_u32(c as u32 - 0xFEE0).unwrap_or(c) } else { c },
        )
        .collect();
    if ascii.len() != 18 {
        return id.to_string();
    }
    let last = ascii.chars().last().unwrap_or('0');
    let wrong = if last == '0' { '1' } else { '0' };
    format!("{}{wrong}", &ascii[..17])
}

/// Puts the people of one identity world into the records the simulated
/// department systems serve, and returns who is who: `<source>:<key>` →
/// person (issue 13: the hub's element resolution is measured against it).
///
/// The 110 reporter (`bjrxm`, `bjrsfzh`, `bjrdh`, the home address
/// `bjrzz`), the 12345 caller (`caller_name`, `caller_phone`, the contact
/// address `caller_address`) and an individual law-enforcement party
/// (`party_name`, `party_id_card`, `party_phone`, `party_address`, and the
/// name inside `case_name`) are
/// written the way [`identity_world`] writes that source (30 % of 110
/// reporters give no ID, 10 % of callers no name, 15-digit and full-width
/// IDs, typos, `+86` phones, old numbers; 60 % of reporters, 70 % of
/// callers and 80 % of parties give their household's address, sometimes
/// with `浙江省湖州市`, a space, or a new address after a move). A 110 ID that the generator made
/// invalid stays invalid (its check character is wrong). Planted and
/// broken records keep their people. Records beyond the identity world's
/// supply keep their generated person, each a person of their own.
pub(crate) fn overlay(
    seed: u64,
    incidents: &mut [crate::world::Rec],
    tickets: &mut [crate::world::Rec],
    cases: &mut [crate::world::Rec],
) -> BTreeMap<String, usize> {
    use serde_json::{Value, json};
    let individual = |r: &crate::world::Rec| r.value["party_uscc"].is_null();
    // Enough persons that each source's share covers its records (a person
    // shows up 2.5 times on average: 30 % in 110, 25 % in 12345, 12 % in
    // law enforcement).
    let need = [
        incidents.len() as f64 / 0.75,
        tickets.len() as f64 / 0.625,
        cases.iter().filter(|r| individual(r)).count() as f64 / 0.3,
    ];
    let persons = (need.iter().cloned().fold(0.0, f64::max) * 1.15) as usize + 10;
    let world = identity_world(seed ^ 0x1d3e_7171, persons);
    let mut supply: HashMap<&str, std::vec::IntoIter<&IdentityRecord>> = HashMap::new();
    for source in ["police_110", "hotline_12345", "law_enforcement"] {
        let recs: Vec<&IdentityRecord> = world.records.iter().filter(|r| r.source == source).collect();
        supply.insert(source, recs.into_iter());
    }
    let mut truth = BTreeMap::new();
    let mut own = world.persons;
    let text = |v: Option<&String>| v.map_or(Value::Null, |s| json!(s));
    let mut assign = |source: &'static str, rec: &mut crate::world::Rec, truth: &mut BTreeMap<String, usize>| {
        let Some(key) = rec.key.clone() else { return };
        let next = if rec.planted.is_some() { None } else { supply.get_mut(source).and_then(|s| s.next()) };
        let person = match next {
            None => {
                own += 1;
                own - 1
            }
            Some(r) => {
                let f = &r.fields;
                let v = &mut rec.value;
                match source {
                    "police_110" => {
                        let was_valid = v["bjrsfzh"].as_str().is_some_and(crate::ids::citizen_id_is_valid);
                        v["bjrxm"] = text(f.get("name"));
                        v["bjrsfzh"] = match f.get("citizen_id") {
                            Some(id) if !was_valid => json!(corrupt_check(id)),
                            id => text(id),
                        };
                        v["bjrdh"] = text(f.get("phone"));
                        v["bjrzz"] = text(f.get("address"));
                    }
                    "hotline_12345" => {
                        v["caller_name"] = text(f.get("name"));
                        v["caller_phone"] = text(f.get("phone"));
                        v["caller_address"] = text(f.get("address"));
                    }
                    _ => {
                        let old = v["party_name"].as_str().unwrap_or_default().to_string();
                        let name = f.get("name").cloned().unwrap_or_default();
                        if let Some(c) = v["case_name"].as_str() {
                            v["case_name"] = json!(c.replacen(&old, &name, 1));
                        }
                        v["party_name"] = json!(name);
                        v["party_id_card"] = text(f.get("citizen_id"));
                        v["party_phone"] = text(f.get("phone"));
                        v["party_address"] = text(f.get("address"));
                    }
                }
                world.person_of[&r.id]
            }
        };
        truth.insert(format!("{source}:{key}"), person);
    };
    for r in incidents.iter_mut() {
        assign("police_110", r, &mut truth);
    }
    for r in tickets.iter_mut() {
        assign("hotline_12345", r, &mut truth);
    }
    for r in cases.iter_mut().filter(|r| individual(r)) {
        assign("law_enforcement", r, &mut truth);
    }
    truth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::citizen_id_is_valid;

    /// The overlay gives the hub the addresses these departments keep: the
    /// 110 reporter's (`bjrzz`), the 12345 caller's contact address
    /// (`caller_address`), an individual party's (`party_address`), each
    /// the person's household as that source writes it.
    #[test]
    fn the_overlay_carries_the_persons_addresses() {
        let w = crate::world::World::generate(&crate::SimConfig::default());
        let with = |recs: &[crate::world::Rec], f: &str| recs.iter().filter(|r| r.value[f].is_string()).count();
        assert!(with(&w.incidents, "bjrzz") * 3 > w.incidents.len(), "{}", with(&w.incidents, "bjrzz"));
        assert!(with(&w.tickets, "caller_address") * 2 > w.tickets.len(), "{}", with(&w.tickets, "caller_address"));
        assert!(with(&w.cases, "party_address") > 0);
        let units = w.cases.iter().filter(|r| !r.value["party_uscc"].is_null());
        assert!(units.clone().count() > 0 && units.into_iter().all(|r| r.value["party_address"].is_null()));
        // One person's records mostly give one household (6 % moved).
        let mut homes: HashMap<usize, std::collections::HashSet<String>> = HashMap::new();
        for (recs, src, key, f) in [
            (&w.incidents, "police_110", "jjdbh", "bjrzz"),
            (&w.tickets, "hotline_12345", "ticket_no", "caller_address"),
            (&w.cases, "law_enforcement", "case_no", "party_address"),
        ] {
            for r in recs.iter() {
                let (Some(k), Some(a)) = (r.value[key].as_str(), r.value[f].as_str()) else { continue };
                let a: String = a.trim_start_matches("浙江省").trim_start_matches("湖州市").replace(' ', "");
                homes.entry(w.person_of[&format!("{src}:{k}")]).or_default().insert(a);
            }
        }
        let one = homes.values().filter(|h| h.len() == 1).count();
        assert!(one * 10 >= homes.len() * 8, "{one} of {}", homes.len());
    }

    #[test]
    fn the_world_is_reproducible_and_noisy() {
        let a = identity_world(7, 500);
        let b = identity_world(7, 500);
        assert_eq!(a.records.len(), b.records.len());
        assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.fields == y.fields));
        assert!(a.records.len() > 900, "{}", a.records.len());
        let ids: Vec<&String> = a.records.iter().filter_map(|r| r.fields.get("citizen_id")).collect();
        assert!(ids.iter().any(|i| i.len() == 15), "some 15-digit IDs");
        assert!(ids.iter().any(|i| i.chars().any(|c| c as u32 >= 0xFF10)), "some full-width IDs");
        assert!(ids.iter().filter(|i| i.len() == 18 && i.is_ascii()).all(|i| citizen_id_is_valid(i)));
        let names: Vec<&String> = a.records.iter().filter_map(|r| r.fields.get("name")).collect();
        assert!(names.iter().any(|n| n.contains(' ')), "some names with a space");
        // Different persons share names.
        let mut by_name: HashMap<&str, std::collections::HashSet<usize>> = HashMap::new();
        for r in &a.records {
            if let Some(n) = r.fields.get("name") {
                by_name.entry(n).or_default().insert(a.person_of[&r.id]);
            }
        }
        assert!(by_name.values().any(|s| s.len() > 1));
    }
}
