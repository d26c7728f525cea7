//! Identity resolution against the simulators' ground truth
//! (`lianqin_sim::identity`): pairwise precision and recall of the person
//! clusters, the same clusters in any arrival order, operator decisions
//! that hold across a replay.

use std::collections::BTreeMap;

use lianqin_resolve::{Model, Record, Resolver, normalize, pairwise_quality};
use lianqin_sim::identity::{IdentityWorld, identity_world};
use rand::SeedableRng;
use rand::seq::SliceRandom;

fn records(w: &IdentityWorld) -> Vec<Record> {
    w.records.iter().map(|r| Record { id: r.id.clone(), fields: normalize::person(&r.fields) }).collect()
}

fn resolve(recs: &[Record]) -> Resolver {
    let mut r = Resolver::new(Model::person());
    for rec in recs {
        r.add(rec.clone()).unwrap();
    }
    r
}

/// Precision meets the target (≥ 0.98). Recall is held at the level
/// measured (0.927–0.934 over these seeds): the pairs still apart share
/// one thing only (a name alone, a name with a changed phone, a
/// household's landline or address), which the model sends to review or
/// leaves apart; the issue's 0.95 is not met (BENCHMARKS.md, "Identity
/// resolution").
#[test]
fn precision_and_recall_on_the_simulators_truth() {
    for seed in [1, 2, 3] {
        let w = identity_world(seed, 3000);
        let r = resolve(&records(&w));
        let (p, rc) = pairwise_quality(&r.clusters(), &w.person_of);
        eprintln!(
            "seed {seed}: {} records, {} persons, {} clusters, {} comparisons, precision {p:.4}, recall {rc:.4}, review {}",
            w.records.len(),
            w.persons,
            r.clusters().len(),
            r.comparisons(),
            r.review_queue().len()
        );
        assert!(p >= 0.98, "seed {seed}: precision {p:.4}");
        assert!(rc >= 0.92, "seed {seed}: recall {rc:.4}");
    }
}

#[test]
fn arrival_order_does_not_change_the_clusters() {
    let w = identity_world(11, 800);
    let recs = records(&w);
    let first = resolve(&recs);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..3 {
        let mut shuffled = recs.clone();
        shuffled.shuffle(&mut rng);
        let again = resolve(&shuffled);
        assert_eq!(again.clusters(), first.clusters());
        assert_eq!(again.links(), first.links());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
    /// Any world, any order: the clusters and their ids are the same.
    #[test]
    fn clusters_are_a_function_of_the_records(world in 0u64..1000, order in 0u64..1000) {
        let w = identity_world(world, 150);
        let recs = records(&w);
        let mut shuffled = recs.clone();
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order));
        proptest::prop_assert_eq!(resolve(&shuffled).clusters(), resolve(&recs).clusters());
    }
}

/// A split never re-merges by itself (not when more records of the same
/// person arrive, not in a replay), and decisions replayed after the
/// records give the same clusters.
#[test]
fn operator_decisions_hold_across_arrivals_and_replays() {
    let w = identity_world(21, 600);
    let recs = records(&w);
    let (early, late) = recs.split_at(recs.len() / 2);
    let mut r = resolve(early);
    let clusters = r.clusters();
    let (cluster, members) = clusters.iter().find(|(_, m)| m.len() >= 3).expect("a cluster of three");
    let out = members[1].clone();
    let from = r.split(&out, "officer li: different person, checked by phone").unwrap();
    assert_eq!(from.len(), members.len() - 1);
    assert_ne!(r.cluster_of(&out).unwrap(), r.cluster_of(&members[0]).unwrap());
    let other = clusters.keys().find(|c| *c != cluster).unwrap().clone();
    let other_member = clusters[&other][0].clone();
    r.merge(&members[0], &other_member, "officer wang: same person, ID card seen").unwrap();
    for rec in late {
        r.add(rec.clone()).unwrap();
    }
    assert_ne!(r.cluster_of(&out).unwrap(), r.cluster_of(&members[0]).unwrap(), "the split re-merged");
    assert_eq!(r.cluster_of(&other_member).unwrap(), r.cluster_of(&members[0]).unwrap());
    let explanation = r.explain(&r.cluster_of(&members[0]).unwrap()).unwrap();
    assert!(explanation.render().contains("operator merge (officer wang"), "{}", explanation.render());

    // Replay: every record (another order), then the decisions.
    let mut replay = Resolver::new(Model::person());
    let mut all = recs.clone();
    all.reverse();
    for rec in all {
        replay.add(rec).unwrap();
    }
    for d in r.decisions() {
        replay.apply(d).unwrap();
    }
    assert_eq!(replay.clusters(), r.clusters());
    assert_eq!(replay.decisions(), r.decisions());
}

#[test]
fn explanations_name_fields_levels_and_weights() {
    let w = identity_world(3, 200);
    let r = resolve(&records(&w));
    let big: BTreeMap<_, _> = r.clusters().into_iter().filter(|(_, m)| m.len() >= 2).collect();
    let (c, _) = big.iter().next().unwrap();
    let e = r.explain(c).unwrap();
    let text = e.render();
    assert!(text.contains("name") && text.contains("weight"), "{text}");
    assert!(e.pairs.iter().all(|(_, _, _, s)| s.parts.len() == Model::person().comparisons.len()));
}

fn person(id: &str, fields: &[(&str, &str)]) -> Record {
    let raw: BTreeMap<String, String> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Record { id: id.to_string(), fields: normalize::person(&raw) }
}

/// A citizen ID typed with a wrong check character is out of the ID
/// comparison but meets the valid ID by its first 17 characters (a level of
/// its own) — with the same or a mistyped name, never with another name.
#[test]
fn an_id_with_a_wrong_check_character_meets_the_valid_one_by_its_body() {
    // 330502198001011231 is valid; …1232 and …123X are not.
    let recs = [
        person("le:1", &[("citizen_id", "330502198001011231"), ("name", "吴博林"), ("phone", "13496744970")]),
        person("110:1", &[("citizen_id", "330502198001011232"), ("name", "吴博玉"), ("phone", "17312370458")]),
        person("110:2", &[("citizen_id", "33050219800101123X"), ("name", "郑海"), ("phone", "15912345678")]),
        // Another body: another person, whatever the name.
        person("110:3", &[("citizen_id", "330502198001021232"), ("name", "吴博林")]),
    ];
    let r = resolve(&recs);
    let c = |id: &str| r.cluster_of(id).unwrap();
    assert_eq!(c("le:1"), c("110:1"), "{}", r.explain(&c("le:1")).unwrap().render());
    assert_ne!(c("le:1"), c("110:2"), "another name");
    assert_ne!(c("le:1"), c("110:3"), "another body");
    let s = lianqin_resolve::score(&Model::person(), &recs[0].fields, &recs[1].fields);
    assert!(s.parts.iter().any(|p| p.field == "citizen_id_body" && p.level == "exact"), "{s:?}");
}

/// The hub's household address is a keyed token (`address_token`): equal
/// tokens count as an equal address (once with the household's landline),
/// so a name with a changed mobile links when the household agrees.
#[test]
fn an_address_token_counts_as_the_household_once() {
    let r = resolve(&[
        person("110:1", &[("name", "陈俊梓"), ("phone", "19186062919"), ("address_token", "pt:0a1b")]),
        person("12345:1", &[("name", "陈俊梓"), ("phone", "18921533860"), ("address_token", "pt:0a1b")]),
        person("12345:2", &[("name", "陈俊梓"), ("phone", "13312345678"), ("address_token", "pt:ffff")]),
        // A sibling: the household's landline and address, a name one
        // character apart.
        person("110:2", &[("name", "李立"), ("phone", "05722627383"), ("address_token", "pt:0c0c")]),
        person("110:3", &[("name", "李杰"), ("phone", "05722627383"), ("address_token", "pt:0c0c")]),
    ]);
    let c = |id: &str| r.cluster_of(id).unwrap();
    assert_eq!(c("110:1"), c("12345:1"));
    assert_ne!(c("110:1"), c("12345:2"), "a name alone with another address and phone");
    assert_ne!(c("110:2"), c("110:3"), "siblings stay apart");
}
