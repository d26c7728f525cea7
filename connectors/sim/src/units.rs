//! Ground truth for enterprise resolution (issue 13): the same enterprises
//! seen by several departments, each system naming them its own way, and the
//! truth of which records are one enterprise.
//!
//! An enterprise has a registered name (`湖州鑫达化工有限公司`: an
//! administrative prefix, a two-character brand, the industry and the legal
//! form), a valid USCC (whose characters 9–17 are its GB 11714 organisation
//! code), a registered address, a landline and a legal representative. One
//! in ten has a branch (`…吴兴分公司`: another legal unit with its own USCC,
//! address and phone), and brands repeat across districts (`鑫达化工` may be
//! two enterprises in two districts) — the hard negatives.
//!
//! | source | fields | noise |
//! |---|---|---|
//! | `market` (register) | registered name, USCC, address, phone (60 %), legal representative | — |
//! | `irs` (penalty gateway) | registered name, USCC (70 %) or the old organisation code (30 %), address (50 %) | codes lower-case or full-width |
//! | `law_enforcement` (party) | registered name or without its prefix, USCC (90 %), address (70 %), legal representative (60 %) | — |
//! | `env_12369` (complaint target) | the common name (`鑫达化工`, `鑫达化工厂`; a branch's own sign), the district the complaint is filed in (95 %), USCC (30 %), address (60 %) | — |
//! | `hotline_12345` (named in a ticket) | the common name, the ticket's district (95 %), address (50 %), phone (20 %) | — |
//!
//! Everywhere: a USCC with a wrong check character (3 %: it validates
//! nowhere and is dropped, never guessed), addresses with or without
//! `浙江省湖州市`, an old address (5 %), names with spaces or full-width
//! brackets.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::{DIVISIONS, GIVEN, INDUSTRIES, SURNAMES, pick, weighted};
use crate::identity::fullwidth;
use crate::world::{UsccKind, uscc};

/// One source record about an enterprise; its fields (not normalized):
/// `name`, `uscc`, `org_code`, `address`, `phone`, `legal_rep`, `division`.
pub type UnitRecord = crate::identity::IdentityRecord;

/// The records and the truth.
#[derive(Debug, Clone)]
pub struct UnitWorld {
    /// Every record, in generation order.
    pub records: Vec<UnitRecord>,
    /// Record id → true enterprise.
    pub unit_of: HashMap<String, usize>,
    /// Enterprises generated.
    pub units: usize,
}

struct Unit {
    /// Registered name.
    name: String,
    /// Index into [`DIVISIONS`].
    division: usize,
    /// Brand and industry (`鑫达化工`).
    common: String,
    uscc: String,
    address: String,
    old_address: String,
    phone: String,
    legal_rep: String,
}

/// Characters brands are made of (two each); the industry words come from
/// [`INDUSTRIES`] (`化工`, `矿业`, `再生资源回收`).
const BRAND_CHARS: &str = "鑫达恒盛永兴金诚宏远天瑞丰森茂绿源旺佳禾新峰润泽东方万通湖韵安顺博振华龙腾宇嘉祥和泰康富利";

fn brand(rng: &mut StdRng) -> String {
    let cs: Vec<char> = BRAND_CHARS.chars().collect();
    let a = cs[rng.random_range(0..cs.len())];
    let b = loop {
        let b = cs[rng.random_range(0..cs.len())];
        if b != a {
            break b;
        }
    };
    format!("{a}{b}")
}

fn address(rng: &mut StdRng, division: usize) -> String {
    let d = &DIVISIONS[division];
    format!("{}{}{}{}号", d.name, pick(rng, d.towns), pick(rng, d.roads), rng.random_range(1..900))
}

fn landline(rng: &mut StdRng) -> String {
    format!("0572{}", rng.random_range(2_000_000..3_000_000u32))
}

fn unit(rng: &mut StdRng, division: usize, common: String, branch: Option<&Unit>) -> Unit {
    let d = &DIVISIONS[division];
    let legal_form = ["有限公司", "有限公司", "有限公司", "有限责任公司", "股份有限公司"][rng.random_range(0..5)];
    let name = match branch {
        Some(parent) => format!("{}{}分公司", parent.name, d.short),
        None => match rng.random_range(0..4) {
            0 => format!("湖州{common}{legal_form}"),
            1 => format!("湖州市{}{common}{legal_form}", d.name),
            2 => format!("浙江{common}{legal_form}"),
            _ => format!("{}{common}{legal_form}", d.short),
        },
    };
    let org_type = '1';
    let address = address(rng, division);
    // A branch's sign names the branch (`鑫达化工德清分公司`).
    let common = if branch.is_some() { format!("{common}{}分公司", d.short) } else { common };
    Unit {
        name,
        division,
        common,
        uscc: uscc(rng, org_type, d.code, UsccKind::Valid),
        old_address: self::address(rng, division),
        address,
        phone: landline(rng),
        legal_rep: format!("{}{}", pick(rng, SURNAMES), pick(rng, GIVEN)),
    }
}

/// A USCC as a system keeps it: 3 % with a wrong check character.
fn write_uscc(rng: &mut StdRng, u: &Unit) -> String {
    if rng.random_bool(0.03) {
        let last = u.uscc.chars().last().unwrap_or('0');
        let wrong = if last == '0' { '1' } else { '0' };
        return format!("{}{wrong}", &u.uscc[..17]);
    }
    match rng.random_range(0..10) {
        0 => u.uscc.to_lowercase(),
        1 => fullwidth(&u.uscc),
        _ => u.uscc.clone(),
    }
}

fn write_address(rng: &mut StdRng, u: &Unit) -> String {
    let a = if rng.random_bool(0.05) { &u.old_address } else { &u.address };
    match rng.random_range(0..4) {
        0 => format!("浙江省湖州市{a}"),
        1 => format!("湖州市{a}"),
        2 => a.replacen('号', "号 ", 1),
        _ => a.clone(),
    }
}

/// The registered name, with the noise of typed-in names.
fn write_name(rng: &mut StdRng, name: &str) -> String {
    match rng.random_range(0..12) {
        0 => name.replacen("有限公司", " 有限公司", 1),
        1 => name.replace('(', "（").replace(')', "）"),
        _ => name.to_string(),
    }
}

/// The name people use: brand and industry, sometimes with `厂`.
fn common_name(rng: &mut StdRng, u: &Unit) -> String {
    match rng.random_range(0..3) {
        0 => format!("{}厂", u.common),
        1 => format!("{}公司", u.common),
        _ => u.common.clone(),
    }
}

/// Generates `units` enterprises (branches included) and their records, seeded.
pub fn unit_world(seed: u64, units: usize) -> UnitWorld {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all: Vec<Unit> = Vec::with_capacity(units);
    // A registered name is unique in its district; the same brand and
    // industry may be registered in another.
    let mut taken: HashSet<(usize, String)> = HashSet::new();
    while all.len() < units {
        let division = rng.random_range(0..DIVISIONS.len());
        let industry = rng.random_range(0..INDUSTRIES.len());
        let seen = (rng.random_bool(0.1) && !all.is_empty()).then(|| &all[rng.random_range(0..all.len())]);
        let common = if let Some(other) = seen.filter(|o| !o.common.ends_with("分公司")) {
            // A brand seen elsewhere, in another district.
            other.common.clone()
        } else {
            format!("{}{}", brand(&mut rng), INDUSTRIES[industry].1.trim_end_matches("有限公司"))
        };
        if !taken.insert((division, common.clone())) {
            continue;
        }
        let u = unit(&mut rng, division, common.clone(), None);
        let branch = (rng.random_bool(0.1) && all.len() + 1 < units).then(|| {
            let other = (division + 1 + rng.random_range(0..DIVISIONS.len() - 1)) % DIVISIONS.len();
            unit(&mut rng, other, common.clone(), Some(&u))
        });
        all.push(u);
        all.extend(branch);
    }
    let sources: [(&str, u32); 5] =
        [("market", 30), ("irs", 15), ("law_enforcement", 20), ("env_12369", 20), ("hotline_12345", 15)];
    let mut records = Vec::new();
    let mut unit_of = HashMap::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    for (i, u) in all.iter().enumerate() {
        // Every enterprise is in the register; more records elsewhere.
        let n = [1usize, 2, 2, 3, 3, 4][rng.random_range(0..6)];
        for k in 0..=n {
            let source = if k == 0 { "market" } else { weighted(&mut rng, &sources, "market") };
            let mut f = BTreeMap::new();
            let mut put = |k: &str, v: String| {
                f.insert(k.to_string(), v);
            };
            match source {
                "market" => {
                    put("name", u.name.clone());
                    put("uscc", u.uscc.clone());
                    put("address", u.address.clone());
                    if rng.random_bool(0.6) {
                        put("phone", u.phone.clone());
                    }
                    put("legal_rep", u.legal_rep.clone());
                }
                "irs" => {
                    put("name", write_name(&mut rng, &u.name));
                    if rng.random_bool(0.7) {
                        put("uscc", write_uscc(&mut rng, u));
                    } else {
                        let org = &u.uscc[8..17];
                        put("org_code", format!("{}-{}", &org[..8], &org[8..]));
                    }
                    if rng.random_bool(0.5) {
                        put("address", write_address(&mut rng, u));
                    }
                }
                "law_enforcement" => {
                    let name = if rng.random_bool(0.7) { u.name.clone() } else { format!("{}有限公司", u.common) };
                    put("name", write_name(&mut rng, &name));
                    if rng.random_bool(0.9) {
                        put("uscc", write_uscc(&mut rng, u));
                    }
                    if rng.random_bool(0.7) {
                        put("address", write_address(&mut rng, u));
                    }
                    if rng.random_bool(0.6) {
                        put("legal_rep", u.legal_rep.clone());
                    }
                }
                "env_12369" => {
                    put("name", common_name(&mut rng, u));
                    if rng.random_bool(0.95) {
                        put("division", DIVISIONS[u.division].code.to_string());
                    }
                    if rng.random_bool(0.3) {
                        put("uscc", write_uscc(&mut rng, u));
                    }
                    if rng.random_bool(0.6) {
                        put("address", write_address(&mut rng, u));
                    }
                }
                _ => {
                    put("name", common_name(&mut rng, u));
                    if rng.random_bool(0.95) {
                        put("division", DIVISIONS[u.division].code.to_string());
                    }
                    if rng.random_bool(0.5) {
                        put("address", write_address(&mut rng, u));
                    }
                    if rng.random_bool(0.2) {
                        put("phone", u.phone.clone());
                    }
                }
            }
            let c = counters.entry(source).or_default();
            *c += 1;
            let id = format!("{source}:{:06}", *c);
            unit_of.insert(id.clone(), i);
            records.push(UnitRecord { id, source, fields: f });
        }
    }
    UnitWorld { records, unit_of, units: all.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_is_reproducible_and_has_hard_negatives() {
        let a = unit_world(5, 400);
        let b = unit_world(5, 400);
        assert_eq!(a.records.len(), b.records.len());
        assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.fields == y.fields));
        assert_eq!(a.units, 400);
        let names: Vec<&String> = a.records.iter().filter_map(|r| r.fields.get("name")).collect();
        assert!(names.iter().any(|n| n.ends_with("分公司")), "branches");
        assert!(a.records.iter().any(|r| r.fields.contains_key("org_code")), "old organisation codes");
        // One common name, two enterprises.
        let mut by_common: HashMap<&str, HashSet<usize>> = HashMap::new();
        for r in a.records.iter().filter(|r| r.source == "env_12369") {
            let n = r.fields["name"].trim_end_matches('厂').trim_end_matches("公司");
            by_common.entry(n).or_default().insert(a.unit_of[&r.id]);
        }
        assert!(by_common.values().any(|s| s.len() > 1), "a brand in two districts");
    }
}
