//! Enterprise resolution against the simulators' ground truth
//! (`lianqin_sim::units`): pairwise precision and recall of the enterprise
//! clusters with the shipped model (`schemas/resolution/unit.toml`), the
//! same clusters in any arrival order, and the hard negatives — a branch
//! and its parent, one brand in two districts — never linked.

use std::collections::BTreeMap;

use lianqin_resolve::{Model, Record, Resolver, normalize, pairwise_quality};
use lianqin_sim::units::{UnitWorld, unit_world};
use rand::SeedableRng;
use rand::seq::SliceRandom;

fn records(w: &UnitWorld) -> Vec<Record> {
    w.records.iter().map(|r| Record { id: r.id.clone(), fields: normalize::unit(&r.fields) }).collect()
}

fn resolve(recs: &[Record]) -> Resolver {
    let mut r = Resolver::new(Model::unit());
    for rec in recs {
        r.add(rec.clone()).unwrap();
    }
    r
}

#[test]
fn enterprises_on_the_simulators_truth() {
    for seed in [1, 2, 3] {
        let w = unit_world(seed, 2000);
        let r = resolve(&records(&w));
        let clusters = r.clusters();
        let (p, rc) = pairwise_quality(&clusters, &w.unit_of);
        eprintln!(
            "seed {seed}: {} records, {} enterprises, {} clusters, precision {p:.4}, recall {rc:.4}, review {}",
            w.records.len(),
            w.units,
            clusters.len(),
            r.review_queue().len()
        );
        assert!(p >= 0.98, "seed {seed}: precision {p:.4}");
        assert!(rc >= 0.95, "seed {seed}: recall {rc:.4}");
    }
}

#[test]
fn a_branch_and_its_parent_stay_two_enterprises() {
    let w = unit_world(4, 1500);
    let r = resolve(&records(&w));
    let cluster_of: BTreeMap<String, String> =
        r.clusters().into_iter().flat_map(|(c, m)| m.into_iter().map(move |id| (id, c.clone()))).collect();
    let name = |id: &str| w.records.iter().find(|x| x.id == id).and_then(|x| x.fields.get("name")).cloned();
    let mut branches = 0;
    for rec in w.records.iter().filter(|x| x.source == "market" && x.fields["name"].ends_with("分公司")) {
        branches += 1;
        let mine = &cluster_of[&rec.id];
        for (other, c) in &cluster_of {
            if c == mine {
                assert_eq!(w.unit_of[other], w.unit_of[&rec.id], "{:?} joined {:?}", name(&rec.id), name(other));
            }
        }
    }
    assert!(branches > 10, "{branches} branches");
}

#[test]
fn arrival_order_does_not_change_the_clusters() {
    let w = unit_world(6, 600);
    let recs = records(&w);
    let first = resolve(&recs).clusters();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for _ in 0..3 {
        let mut s = recs.clone();
        s.shuffle(&mut rng);
        assert_eq!(resolve(&s).clusters(), first);
    }
}
