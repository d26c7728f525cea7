//! Enterprises named in 12369 complaints without a USCC (`鑫达化工厂`)
//! resolve, through `element_unit_link`, to the enterprise the market
//! register knows by USCC: precision and recall against the simulator's
//! truth (`ComplaintRow::named_uscc`), and the policy filters the table
//! like `element`. Operator decisions on enterprises (`lianqin element
//! split|merge --kind unit`) hold in a new process and are audited.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray};
use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;
use lianqin_tests::{cli_as, cli_text, engine, secured_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaint_targets_named_without_a_uscc_resolve_to_the_register() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig { enterprises: 120, env_files: 1, env_rows_per_file: 100, ..Default::default() };
    let sim = demo::start_simulation(dir.path(), cfg).await.unwrap();
    // Five days of complaint drops (20 complaints each).
    for _ in 0..4 {
        sim.write_env_files().unwrap();
    }
    let hub = demo::open_demo_hub(dir.path(), &sim).await.unwrap();
    let (synced, _) = demo::cycle(&hub).await.unwrap();
    for (src, r) in &synced {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    let truth = sim.truth();
    let d = dir.path();

    // complaint number → the USCC of the company it names by name only.
    let named: BTreeMap<String, String> = truth
        .complaints
        .iter()
        .filter_map(|c| Some((c.value["complaint_no"].as_str()?.to_string(), c.named_uscc.clone()?)))
        .collect();
    assert!(named.len() >= 10, "the simulator names targets without a USCC: {}", named.len());

    // The element each such complaint points to, and the unit it resolves to.
    let e = engine(d).await;
    let rows = |sql: &str| {
        let e = &e;
        let sql = sql.to_string();
        async move {
            let mut out = Vec::new();
            for b in e.sql(&sql).await.unwrap() {
                let cols: Vec<_> = (0..b.num_columns())
                    .map(|c| arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8).unwrap())
                    .collect();
                for i in 0..b.num_rows() {
                    out.push(
                        cols.iter()
                            .map(|c| (!c.is_null(i)).then(|| c.as_string::<i32>().value(i).to_string()))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            out
        }
    };
    let party: BTreeMap<String, String> =
        rows("SELECT matter_id, party_element_id FROM matter WHERE matter_id LIKE '12369:%'")
            .await
            .into_iter()
            .filter_map(|r| Some((r[0].clone()?.trim_start_matches("12369:").to_string(), r[1].clone()?)))
            .collect();
    let unit_of: BTreeMap<String, String> = rows("SELECT element_id, unit_id FROM element_unit_link")
        .await
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
        .collect();
    let (mut right, mut wrong, mut apart) = (0, 0, 0);
    for (no, uscc) in &named {
        let el = party.get(no).unwrap_or_else(|| panic!("complaint {no} has no party element"));
        assert!(el.starts_with("unit:"), "{no}: {el}");
        let registered = format!("uscc:{uscc}");
        let (Some(mine), Some(theirs)) = (unit_of.get(el), unit_of.get(&registered)) else {
            panic!("{el} or {registered} is not in element_unit_link")
        };
        if mine == theirs {
            right += 1;
        } else if unit_of.iter().any(|(k, u)| u == mine && k.starts_with("uscc:")) {
            wrong += 1;
        } else {
            apart += 1;
        }
    }
    let precision = right as f64 / (right + wrong).max(1) as f64;
    let recall = right as f64 / named.len() as f64;
    eprintln!(
        "named targets: {} complaints, {right} resolved right, {wrong} wrong, {apart} apart; precision {precision:.4}, recall {recall:.4}",
        named.len()
    );
    assert!(precision >= 0.98, "precision {precision:.4}");
    assert!(recall >= 0.95, "recall {recall:.4}");
    // No two registered enterprises (two USCCs) share a unit.
    let mut by_unit: BTreeMap<&String, BTreeSet<&String>> = BTreeMap::new();
    for (k, u) in unit_of.iter().filter(|(k, _)| k.starts_with("uscc:")) {
        by_unit.entry(u).or_default().insert(k);
    }
    assert!(by_unit.values().all(|s| s.len() == 1), "two USCCs in one unit");

    // The policy applies as to `element`: market reads every unit row,
    // ecology its own department's rows (and natural elements, none here),
    // police all.
    let all = e.scalar_i64("SELECT count(*) FROM element_unit_link").await.unwrap();
    let ecology = e.scalar_i64("SELECT count(*) FROM element_unit_link WHERE department = 'ecology'").await.unwrap();
    assert!(ecology > 0 && ecology < all, "{ecology} of {all}");
    assert_eq!(secured_count(d, "liu.market", "SELECT count(*) FROM element_unit_link").await, all);
    assert_eq!(secured_count(d, "chen.ecology", "SELECT count(*) FROM element_unit_link").await, ecology);
    assert_eq!(secured_count(d, "wang.police", "SELECT count(*) FROM element_unit_link").await, all);
    drop(e);
    drop(hub);

    // Operator decisions on enterprises, through the CLI (new processes).
    let units = || -> BTreeMap<String, String> {
        let o = cli_as(d, None, &["sql", "--format", "csv", "SELECT element_id, unit_id FROM element_unit_link"]);
        assert!(o.status.success(), "{}", cli_text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let before = units();
    assert_eq!(before, unit_of, "the CLI reads the same resolution");
    // A named complaint target resolved to its registered enterprise.
    let (no, uscc) = named
        .iter()
        .find(|(no, uscc)| unit_of.get(&party[*no]) == unit_of.get(&format!("uscc:{uscc}")))
        .expect("a target resolved right");
    let (named_el, registered) = (party[no].clone(), format!("uscc:{uscc}"));
    let explained = cli_as(d, None, &["element", "explain", "--kind", "unit", &named_el]);
    assert!(explained.status.success(), "{}", cli_text(&explained));
    let t = cli_text(&explained);
    assert!(t.contains(&registered) && t.contains("weight"), "{t}");
    // As a person, the enterprise element is unknown.
    let as_person = cli_as(d, None, &["element", "split", "--by", "li", "--reason", "x", &named_el]);
    assert!(!as_person.status.success(), "{}", cli_text(&as_person));
    let split = cli_as(
        d,
        None,
        &[
            "element",
            "split",
            "--kind",
            "unit",
            "--by",
            "officer li",
            "--reason",
            "another company, same name",
            &named_el,
        ],
    );
    assert!(split.status.success(), "{}", cli_text(&split));
    let after = units();
    assert_ne!(after[&named_el], after[&registered], "split off");
    // Merge it back into another registered enterprise; merging twice is refused.
    let other = unit_of.keys().find(|k| k.starts_with("uscc:") && **k != registered).unwrap().clone();
    let merge = cli_as(
        d,
        None,
        &["element", "merge", "--kind", "unit", "--by", "officer wang", "--reason", "licence seen", &named_el, &other],
    );
    assert!(merge.status.success(), "{}", cli_text(&merge));
    let again = cli_as(
        d,
        None,
        &["element", "merge", "--kind", "unit", "--by", "wang", "--reason", "again", &named_el, &other],
    );
    assert!(!again.status.success() && cli_text(&again).contains("already one enterprise"), "{}", cli_text(&again));
    let after = units();
    assert_eq!(after[&named_el], after[&other], "merged");
    assert_ne!(after[&named_el], after[&registered], "the split still holds");
    // Kept apart from the person decisions, append-only, and audited.
    let log = std::fs::read_to_string(d.join("resolution/unit_decisions.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!d.join("resolution/element_decisions.jsonl").exists());
    let audited: Vec<_> =
        lianqin_tests::audit_events(d).into_iter().filter(|e| e.detail["action"] == "unit_decision").collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0].tables, vec!["element_unit_link".to_string()]);
}
