//! Joint matters against the simulators' truth (`lianqin_sim::incidents`):
//! pairwise precision and recall of the groups, order independence,
//! operator decisions.

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
        assert!(r >= 0.50, "seed {seed}: recall {r:.4}");
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
