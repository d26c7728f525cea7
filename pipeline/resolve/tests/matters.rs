//! Joint matters against the simulators' truth (`lianqin_sim::incidents`):
//! pairwise precision and recall of the groups, order independence,
//! operator decisions; the site rule on hand-written reports.

use lianqin_resolve::matters::pairwise_quality;
use lianqin_resolve::{MatterGrouper, MatterRules, Report};
use lianqin_sim::incidents::{IncidentWorld, incident_world};
use rand::SeedableRng;
use rand::seq::SliceRandom;

fn reports(w: &IncidentWorld) -> Vec<Report> {
    w.reports
        .iter()
        .map(|r| Report {
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
        .collect()
}

fn group(reps: &[Report]) -> MatterGrouper {
    let mut g = MatterGrouper::new(MatterRules::shipped());
    for r in reps {
        g.add(r.clone()).unwrap();
    }
    g
}

#[test]
fn joint_matters_on_the_simulators_truth() {
    for seed in [1, 2, 3] {
        let w = incident_world(seed, 3000);
        let g = group(&reports(&w));
        let (p, r) = pairwise_quality(&g.groups(), &w.incident_of);
        eprintln!(
            "seed {seed}: {} reports of {} incidents → {} joint matters; precision {p:.4}, recall {r:.4}",
            w.reports.len(),
            w.incidents,
            g.groups().len()
        );
        assert!(p >= 0.98, "seed {seed}: precision {p:.4}");
        assert!(r >= 0.95, "seed {seed}: recall {r:.4}");
    }
}

#[test]
fn arrival_order_does_not_change_the_groups() {
    let w = incident_world(9, 800);
    let reps = reports(&w);
    let first = group(&reps);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..3 {
        let mut s = reps.clone();
        s.shuffle(&mut rng);
        let again = group(&s);
        assert_eq!(again.groups(), first.groups());
        assert_eq!(again.links(), first.links());
    }
}

#[test]
fn confirm_and_split_hold_and_replay() {
    let w = incident_world(5, 600);
    let reps = reports(&w);
    let (early, late) = reps.split_at(reps.len() / 2);
    let mut g = group(early);
    let groups = g.groups();
    let (gid, members) = groups.iter().find(|(_, m)| m.len() >= 2).expect("a joint matter");
    let out = members[1].clone();
    g.split(&out, "station li: a separate discharge, site checked").unwrap();
    let lone = groups.iter().find(|(k, m)| *k != gid && m.len() == 1).unwrap().1[0].clone();
    g.confirm(&members[0], &lone, "officer wang: same incident, caller confirmed").unwrap();
    for r in late {
        g.add(r.clone()).unwrap();
    }
    assert_ne!(g.group_of(&out).unwrap(), g.group_of(&members[0]).unwrap());
    assert_eq!(g.group_of(&lone).unwrap(), g.group_of(&members[0]).unwrap());
    let text = g.explain(&g.group_of(&members[0]).unwrap()).unwrap();
    assert!(text.contains("operator confirmed (officer wang"), "{text}");
    let mut replay = group(&reps.iter().rev().cloned().collect::<Vec<_>>());
    for d in g.decisions() {
        replay.apply(d).unwrap();
    }
    assert_eq!(replay.groups(), g.groups());
}

/// A report at `address`, `hours` after a fixed time.
fn at(id: &str, category: &str, hours: i64, address: &str, party: Option<&str>) -> Report {
    Report {
        id: id.into(),
        number: Some(id.rsplit(':').next().unwrap().into()),
        category: Some(category.into()),
        lon: None,
        lat: None,
        reported_at: 1_742_000_000 + hours * 3600,
        party: party.map(str::to_string),
        address: Some(address.into()),
        text: String::new(),
    }
}

fn together(reps: &[Report], a: &str, b: &str) -> bool {
    let g = group(reps);
    g.group_of(a).unwrap() == g.group_of(b).unwrap()
}

#[test]
fn the_site_rule_reads_addresses_as_places() {
    let call = at("police_110:J1", "a", 0, "浙江省湖州市吴兴区织里镇凤凰路88号", None);
    // One site written another way, another category, the next day.
    let ticket = at("hotline_12345:H1", "f", 20, "织里镇凤凰路８８号附近", None);
    assert!(together(&[call.clone(), ticket.clone()], "police_110:J1", "hotline_12345:H1"));
    let g = group(&[call.clone(), ticket]);
    let text = g.explain(&g.group_of("police_110:J1").unwrap()).unwrap();
    assert!(text.contains("at the same site, 20.0 h apart"), "{text}");
    assert!(!text.contains("凤凰路"), "the rule never repeats the address: {text}");
    // A case opened two weeks later at the same site, same category.
    let case = at("law_enforcement:C1", "a", 14 * 24, "吴兴区凤凰路88号3幢201室", Some("uscc:X"));
    assert!(together(&[call.clone(), case.clone()], "police_110:J1", "law_enforcement:C1"));
    // ... but not under another category that late, nor after the window.
    let other = at("law_enforcement:C1", "c", 14 * 24, "吴兴区凤凰路88号", None);
    assert!(!together(&[call.clone(), other], "police_110:J1", "law_enforcement:C1"));
    let late = at("law_enforcement:C1", "a", 30 * 24, "吴兴区凤凰路88号", None);
    assert!(!together(&[call.clone(), late], "police_110:J1", "law_enforcement:C1"));
    // A caller next door, the same day and category; not across the road's length.
    let next_door = at("env_12369:E1", "a", 5, "凤凰路91号", None);
    assert!(together(&[call.clone(), next_door], "police_110:J1", "env_12369:E1"));
    let far = at("env_12369:E1", "a", 5, "凤凰路140号", None);
    assert!(!together(&[call.clone(), far], "police_110:J1", "env_12369:E1"));
    // The same road and number in another town or district is another place.
    let town = at("env_12369:E1", "a", 5, "八里店镇凤凰路88号", None);
    assert!(!together(&[call.clone(), town], "police_110:J1", "env_12369:E1"));
    let county = at("env_12369:E1", "a", 5, "德清县凤凰路88号", None);
    assert!(!together(&[call.clone(), county], "police_110:J1", "env_12369:E1"));
    // Two different parties at one address are two incidents.
    let a = at("env_12369:E1", "a", 0, "凤凰路88号", Some("uscc:A"));
    let b = at("env_12369:E2", "a", 3, "凤凰路88号", Some("uscc:B"));
    assert!(!together(&[a, b], "env_12369:E1", "env_12369:E2"));
    // A vague place is no site.
    let vague = at("env_12369:E1", "a", 1, "织里镇义皋村附近", None);
    assert!(!together(&[call, vague], "police_110:J1", "env_12369:E1"));
}

#[test]
fn near_coordinates_do_not_join_two_named_places() {
    let mut x = at("police_110:J1", "a", 0, "吴兴区凤凰路88号", None);
    let mut y = at("hotline_12345:H1", "a", 2, "吴兴区人民路12号", None);
    (x.lon, x.lat, y.lon, y.lat) = (Some(120.1), Some(30.9), Some(120.1005), Some(30.9));
    assert!(!together(&[x.clone(), y.clone()], "police_110:J1", "hotline_12345:H1"), "two named places ~50 m apart");
    // With one place unknown, nearness decides as before.
    y.address = Some("织里镇附近".into());
    assert!(together(&[x, y], "police_110:J1", "hotline_12345:H1"));
}

#[test]
fn site_tiers_are_checked() {
    let bad =
        "party_window_hours = 1.0\n[[nearby]]\ndistance_m = 1.0\nwindow_hours = 1.0\n[[site]]\nwindow_hours = 0.0\n";
    let e = MatterRules::parse(bad, "m.toml").unwrap_err().to_string();
    assert!(e.contains("m.toml") && e.contains("[[site]]"), "{e}");
    let typo =
        "party_window_hours = 1.0\n[[nearby]]\ndistance_m = 1.0\nwindow_hours = 1.0\n[[site]]\nwindow_hour = 1.0\n";
    let e = MatterRules::parse(typo, "m.toml").unwrap_err().to_string();
    assert!(e.contains("window_hour"), "{e}");
}

/// The rules session 38 added (shipped in `schemas/resolution/matter.toml`):
/// a 110 caller is not a party, two cases of one case system stay two, a
/// site's positions may not be kilometres apart, and a village's house
/// number is a site.
#[test]
fn callers_case_systems_and_far_positions_are_read_as_the_rules_say() {
    // One citizen calls 110 about two incidents: the caller joins nothing.
    let one = at("110:J1", "a", 0, "吴兴区凤凰路88号", Some("pt:caller"));
    let two = at("110:J2", "a", 5, "吴兴区人民路12号", Some("pt:caller"));
    assert!(!together(&[one.clone(), two], "110:J1", "110:J2"));
    // ... and a 110 caller is not "another party" than the case's enterprise.
    let mut call = one.clone();
    let mut case = at("zhzf:C20250001", "a", 30, "", Some("uscc:X"));
    case.address = None;
    (call.lon, call.lat, case.lon, case.lat) = (Some(120.1), Some(30.9), Some(120.1002), Some(30.9));
    assert!(together(&[call.clone(), case.clone()], "110:J1", "zhzf:C20250001"));
    // The same without `reporters`: the caller's token vetoes the case.
    let mut rules = MatterRules::shipped();
    rules.reporters.clear();
    let mut g = MatterGrouper::new(rules);
    g.add(call).unwrap();
    g.add(case.clone()).unwrap();
    assert_ne!(g.group_of("110:J1").unwrap(), g.group_of("zhzf:C20250001").unwrap());

    // Two cases against one enterprise stay two; a cited number joins them.
    let other = at("zhzf:C20250002", "a", 40, "", Some("uscc:X"));
    assert!(!together(&[case.clone(), other.clone()], "zhzf:C20250001", "zhzf:C20250002"));
    let mut citing = other.clone();
    citing.text = "并案 C20250001".into();
    assert!(together(&[case.clone(), citing], "zhzf:C20250001", "zhzf:C20250002"));
    // Reports of other systems against one enterprise still join.
    let complaint = at("12369:E1", "a", 10, "", Some("uscc:X"));
    assert!(together(&[case, complaint], "zhzf:C20250001", "12369:E1"));

    // One house number, positions 10 km apart: not one site.
    let mut x = at("110:J1", "a", 0, "织里镇义皋村12号", None);
    let mut y = at("12345:H1", "c", 3, "义皋村12号附近", None);
    assert!(together(&[x.clone(), y.clone()], "110:J1", "12345:H1"), "a village's house is a site");
    (x.lon, x.lat, y.lon, y.lat) = (Some(120.1), Some(30.9), Some(120.2), Some(30.9));
    assert!(!together(&[x.clone(), y.clone()], "110:J1", "12345:H1"));
    y.lon = Some(120.105);
    assert!(together(&[x, y], "110:J1", "12345:H1"), "500 m apart: one site");
}

/// A ticket that cites a law-enforcement case by its document number joins
/// the case, however the caller's brackets, digits and zeros are typed.
#[test]
fn document_numbers_are_cited_however_typed() {
    use lianqin_resolve::matters::doc_numbers;
    let n = "湖吴综执立〔2025〕00206号";
    for text in [
        "已被综合执法立案（湖吴综执立〔2025〕00206号），至今仍在排放",
        "据湖吴综执立[2025]206号处罚决定",
        "案号：湖吴综执立（２０２５）００２０６号",
        "湖吴综执立 【2025】 206 号",
    ] {
        assert!(doc_numbers(text).contains(&"湖吴综执立〔2025〕206号".to_string()), "{text}: {:?}", doc_numbers(text));
    }
    for text in [
        "湖吴综执立〔2025〕207号",
        "湖吴综执立〔2024〕206号",
        "〔2025〕206号",
        "湖吴综执立〔25〕206号",
        "电话（0572）2345678",
    ] {
        assert!(!doc_numbers(text).contains(&"湖吴综执立〔2025〕206号".to_string()), "{text}");
    }
    let case = at(&format!("zhzf:{n}"), "a", 0, "", Some("uscc:X"));
    let mut ticket = at("12345:HZ20250310000001", "c", 400, "织里镇人民路1号", None);
    ticket.text = "市民反映：该厂已被立案（湖吴综执立[2025]206号），仍在夜间偷排".into();
    assert!(together(&[case.clone(), ticket.clone()], &format!("zhzf:{n}"), "12345:HZ20250310000001"));
    let g = group(&[ticket.clone(), case.clone()]);
    let text = g.explain(&g.group_of("12345:HZ20250310000001").unwrap()).unwrap();
    assert!(text.contains("cites"), "{text}");
    ticket.text = "市民反映：该厂已被立案（湖吴综执立[2025]207号）".into();
    assert!(!together(&[case, ticket], &format!("zhzf:{n}"), "12345:HZ20250310000001"));
}
