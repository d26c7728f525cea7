//! Joint matters (`matter_group`, issue 13 item 4) over the demo's real
//! libraries: every current report is in exactly one joint matter, the
//! caller's policy filters the reports, `lianqin matter explain` shows the
//! rules, operator decisions hold across processes and are audited, and
//! the groups match the simulators' truth of which reports are one incident.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lianqin_tests::{cli_as as lianqin, cli_text as text, demo_once as demo};

/// CSV rows (header skipped) of a query.
fn rows(dir: &Path, user: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let out = lianqin(dir, user, &["sql", "--format", "csv", sql]);
    assert!(out.status.success(), "{sql}: {}", text(&out));
    let mut r = csv_rows(&String::from_utf8_lossy(&out.stdout));
    r.remove(0);
    r
}

fn csv_rows(s: &str) -> Vec<Vec<String>> {
    s.lines().filter(|l| !l.is_empty()).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// group id → its matter ids.
fn groups(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows(dir, None, "SELECT group_id, matter_id FROM matter_group") {
        g.entry(r[0].clone()).or_default().insert(r[1].clone());
    }
    g
}

#[test]
fn every_report_is_in_one_joint_matter_and_the_policy_filters_them() {
    let d = demo();
    let d = d.path();
    let matters: BTreeSet<String> =
        rows(d, None, "SELECT matter_id FROM matter").into_iter().map(|r| r[0].clone()).collect();
    let grouped = rows(d, None, "SELECT matter_id, group_id, rule FROM matter_group");
    assert_eq!(grouped.len(), matters.len(), "one row per current report");
    assert_eq!(grouped.iter().map(|r| r[0].clone()).collect::<BTreeSet<_>>(), matters);
    let g = groups(d);
    assert!(g.len() < matters.len(), "the demo has reports of one incident: {} groups", g.len());
    for (gid, members) in &g {
        // A group is named after one of its reports, which has no rule.
        let seed = gid.strip_prefix("mg:").expect("mg: ids");
        assert!(members.contains(seed), "{gid}: {members:?}");
    }
    for r in &grouped {
        assert_eq!(r[2].is_empty(), r[1] == format!("mg:{}", r[0]), "only a group's first report has no rule: {r:?}");
    }

    // Ecology sees pollution (a) and toxic goods (b) and its own rows: the
    // same reports in matter_group as in matter, never another's.
    let q = |t: &str| format!("SELECT matter_id, category, department FROM {t} ORDER BY matter_id");
    let eco_matter = rows(d, Some("chen.ecology"), &q("matter"));
    let eco_group = rows(d, Some("chen.ecology"), &q("matter_group"));
    assert!(!eco_group.is_empty() && eco_group.len() < grouped.len(), "{} of {}", eco_group.len(), grouped.len());
    assert_eq!(eco_group, eco_matter);
    for r in &eco_group {
        assert!(["a", "b"].contains(&r[1].as_str()) || r[2] == "ecology", "{r:?}");
    }

    // explain: the local operator sees the whole group; a user who may read
    // none of its reports gets a plain refusal.
    let (gid, members) = g.iter().max_by_key(|(_, m)| m.len()).unwrap();
    let any = members.iter().next().unwrap();
    let out = lianqin(d, None, &["matter", "explain", "--format", "csv", any]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = csv_rows(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(shown.len(), members.len() + 1, "{}", text(&out));
    assert!(shown.iter().skip(1).all(|r| &r[0] == gid), "{}", text(&out));
    let cats: BTreeSet<String> = shown.iter().skip(1).map(|r| r[3].clone()).collect();
    let stranger = if cats.iter().any(|c| c == "d") { "zhou.natres" } else { "liu.market" };
    let out = lianqin(d, Some(stranger), &["matter", "explain", any]);
    assert!(!out.status.success() && text(&out).contains("no matter with this id that you may read"), "{}", text(&out));
    let out = lianqin(d, None, &["matter", "explain", "x' OR '1'='1"]);
    assert!(!out.status.success() && text(&out).contains("is not a matter id"), "{}", text(&out));
}

/// The demo's joint matters against the simulators' truth
/// (`lianqin_sim::joint_matters`: 12345 tickets and law-enforcement cases
/// that report an incident 110 took, each written its own way): pairwise
/// precision and recall over the 110, 12345 and law-enforcement reports.
#[test]
fn joint_matters_match_the_simulators_truth() {
    let d = demo();
    let d = d.path();
    let truth: std::collections::HashMap<String, usize> =
        lianqin_sim::joint_matters(&lianqin_sim::SimConfig::default()).into_iter().collect();
    let g = groups(d);
    let clusters: BTreeMap<String, Vec<String>> =
        g.into_iter().map(|(gid, m)| (gid, m.into_iter().filter(|m| truth.contains_key(m)).collect())).collect();
    let grouped: usize = clusters.values().map(Vec::len).sum();
    assert_eq!(grouped, truth.len(), "every report of the truth is a current matter");
    let (precision, recall) = lianqin_resolve::pairwise_quality(&clusters, &truth);
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for i in truth.values() {
        *sizes.entry(*i).or_default() += 1;
    }
    let pairs: usize = sizes.values().map(|n| n * (n - 1) / 2).sum();
    eprintln!(
        "joint matters: {} reports of {} incidents ({pairs} true pairs), {} groups; precision {precision:.4}, recall {recall:.4}",
        truth.len(),
        sizes.len(),
        clusters.values().filter(|m| !m.is_empty()).count()
    );
    // What the pairs the groups get wrong share, to read when it fails.
    let group_of: BTreeMap<&String, &String> =
        clusters.iter().flat_map(|(g, m)| m.iter().map(move |m| (m, g))).collect();
    let mut by_incident: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for (m, i) in &truth {
        by_incident.entry(*i).or_default().push(m);
    }
    let show = |m: &str| {
        rows(
            d,
            None,
            &format!(
                "SELECT g.rule, m.category, m.address, round(m.lon, 4), round(m.lat, 4), m.reported_at FROM matter m JOIN matter_group g USING (matter_id) WHERE m.matter_id = '{m}'"
            ),
        )
        .concat()
        .join(" | ")
    };
    for ms in by_incident.values() {
        for (i, a) in ms.iter().enumerate() {
            for b in &ms[i + 1..] {
                if group_of[a] != group_of[b] {
                    eprintln!("apart: {a}: {}\n       {b}: {}", show(a), show(b));
                }
            }
        }
    }
    for (g, ms) in &clusters {
        for (i, a) in ms.iter().enumerate() {
            for b in &ms[i + 1..] {
                if truth[a] != truth[b] {
                    eprintln!("wrong ({g}): {a}: {}\n       {b}: {}", show(a), show(b));
                }
            }
        }
    }
    assert!(pairs > 80, "the demo has incidents several departments saw: {pairs} pairs");
    assert!(precision >= 0.98, "precision {precision:.4}");
    assert!(recall >= 0.95, "recall {recall:.4}");
}

#[test]
fn operator_decisions_hold_across_processes_and_are_audited() {
    let d = demo();
    let d = d.path();
    let before = groups(d);
    let (gid, members) = before.iter().find(|(_, m)| m.len() >= 3).expect("a joint matter of 3 reports");
    let out_report = members.iter().find(|m| gid != &format!("mg:{m}")).unwrap().clone();
    let singles: Vec<String> =
        before.values().filter(|m| m.len() == 1).map(|m| m.iter().next().unwrap().clone()).take(2).collect();
    assert_eq!(singles.len(), 2);

    // Refused without a reason, or when there is nothing to split.
    let no_reason = lianqin(d, None, &["matter", "split", "--by", "li.station", "--reason", " ", &out_report]);
    assert!(!no_reason.status.success() && text(&no_reason).contains("--reason"), "{}", text(&no_reason));
    let lone = lianqin(d, None, &["matter", "split", "--by", "li.station", "--reason", "x", &singles[0]]);
    assert!(!lone.status.success() && text(&lone).contains("other reports in its group"), "{}", text(&lone));

    let split =
        lianqin(d, None, &["matter", "split", "--by", "li.station", "--reason", "a different discharge", &out_report]);
    assert!(split.status.success(), "{}", text(&split));
    let confirm = lianqin(
        d,
        None,
        &["matter", "confirm", "--by", "wang.officer", "--reason", "caller confirmed", &singles[0], &singles[1]],
    );
    assert!(confirm.status.success(), "{}", text(&confirm));

    // A new process (a restart) reads the same groups.
    for _ in 0..2 {
        let after = groups(d);
        let home = after.iter().find(|(_, m)| m.contains(&out_report)).unwrap();
        assert_eq!(home.1.len(), 1, "the split report is alone: {home:?}");
        let rest: BTreeSet<String> = members.iter().filter(|m| **m != out_report).cloned().collect();
        assert!(after.values().any(|m| *m == rest), "the others stay together");
        let both = after.values().find(|m| m.contains(&singles[0])).unwrap();
        assert!(both.contains(&singles[1]), "{both:?}");
    }
    let rule = rows(
        d,
        None,
        &format!("SELECT rule FROM matter_group WHERE matter_id IN ('{}', '{}')", singles[0], singles[1]),
    );
    assert!(
        rule.iter().any(|r| r.join(",").contains("operator confirmed (wang.officer: caller confirmed)")),
        "{rule:?}"
    );

    // Kept and audited.
    let log = std::fs::read_to_string(lianqin_pipeline::joint::decisions_path(d)).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut audited = 0;
    for s in lianqin_pipeline::audit::streams(d) {
        for r in lianqin_audit::read(&s, &key, lianqin_audit::AuditFilter::all()).unwrap() {
            let e = r.unwrap().event;
            if e.detail.get("action").and_then(|a| a.as_str()) == Some("matter_decision") {
                audited += 1;
            }
        }
    }
    assert_eq!(audited, 2);
}
