//! The half-yearly second callback (`lianqin recheck`, `pipeline/src/recheck.rs`,
//! issue 14 item 3) over the demo's 12345 tickets: ≥ 30% of each station's
//! callback records drawn, the same for the same seed, a reopened case never
//! given to its original handler, 100% after 3 reopened cases, results
//! immutable, everything kept in the append-only journal and audited, and
//! `matter_recheck` filtered by the caller's policy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use lianqin_audit::{AuditFilter, EventKind};
use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;
use lianqin_tests::{demo_password, lianqin_bin};
use serde_json::Value;

fn small() -> SimConfig {
    SimConfig {
        incidents: 20,
        tickets: 1200,
        enterprises: 10,
        cases: 10,
        env_files: 1,
        env_rows_per_file: 5,
        ..Default::default()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn lianqin(d: &Path, args: &[&str]) -> Output {
    Command::new(lianqin_bin()).args(args).arg("--data-dir").arg(d).env_remove("LIANQIN_POLICIES").output().unwrap()
}

fn ok(d: &Path, args: &[&str]) -> String {
    let o = lianqin(d, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

fn refused(d: &Path, args: &[&str], why: &str) {
    let o = lianqin(d, args);
    assert!(!o.status.success(), "{args:?} must be refused");
    assert!(text(&o).contains(why), "{args:?}: {}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

/// CSV rows (header skipped), as the local operator or `user`.
fn rows(d: &Path, user: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let mut c = Command::new(lianqin_bin());
    c.args(["sql", "--format", "csv"]).env_remove("LIANQIN_POLICIES");
    if let Some(u) = user {
        c.args(["--as", u]).env("LIANQIN_PASSWORD", demo_password(u));
    }
    let o = c.arg("--data-dir").arg(d).arg(sql).output().unwrap();
    assert!(o.status.success(), "{sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// station → drawn matter ids.
fn drawn(d: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows(d, None, "SELECT station, matter_id FROM matter_recheck WHERE half = '2025H1'") {
        m.entry(r[0].clone()).or_default().insert(r[1].clone());
    }
    m
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn journal(d: &Path) -> Vec<u8> {
    std::fs::read(d.join("supervision/recheck.jsonl")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_callbacks_are_drawn_recorded_and_reopened_as_the_standard_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("a");
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    let truth = sim.truth();
    sim.shutdown().await;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    // The callback records of 2025H1 per station, and each ticket's handler, as served.
    let mut population: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut handler = BTreeMap::new();
    for t in &truth.tickets {
        let id = format!("12345:{}", s(t, "ticket_no").unwrap());
        handler.insert(id.clone(), s(t, "handler").unwrap());
        if s(t, "callback_time").is_some_and(|c| c.starts_with("2025-0") && c.as_str() < "2025-07") {
            population.entry(s(t, "handling_dept").unwrap()).or_default().insert(id);
        }
    }
    let reopened_by_source: BTreeSet<String> =
        truth.tickets.iter().filter_map(|t| s(t, "original_ticket_no")).map(|n| format!("12345:{n}")).collect();
    let copy = dir.path().join("b");
    copy_dir(d, &copy);

    refused(d, &["recheck", "draw", "--half", "2025H3", "--by", "zhou.office"], "not a half year");
    let out = ok(d, &["recheck", "draw", "--half", "2025H1", "--seed", "42", "--by", "zhou.office"]);
    let first = drawn(d);
    assert_eq!(first.keys().collect::<Vec<_>>(), population.keys().collect::<Vec<_>>(), "{out}");
    for (station, pop) in &population {
        let got = &first[station];
        let reopened = pop.intersection(&reopened_by_source).count();
        let want = if reopened >= 3 { pop.len() } else { (pop.len() * 30).div_ceil(100) };
        assert_eq!(got.len(), want, "{station}: {} of {} drawn", got.len(), pop.len());
        assert!(got.len() * 100 >= pop.len() * 30, "{station}: at least 30%");
        assert!(got.is_subset(pop), "{station}: only its own callback records");
    }
    // The same seed on the same records draws the same matters.
    ok(&copy, &["recheck", "draw", "--half", "2025H1", "--seed", "42", "--by", "another.officer"]);
    assert_eq!(drawn(&copy), first, "reproducible");
    // Drawing again adds nothing; another seed for a drawn half is refused.
    ok(d, &["recheck", "draw", "--half", "2025H1", "--by", "zhou.office"]);
    assert_eq!(drawn(d), first);
    refused(
        d,
        &["recheck", "draw", "--half", "2025H1", "--seed", "7", "--by", "zhou.office"],
        "already drawn with seed 42",
    );

    // A station with at least 3 drawn matters and not yet at 100%.
    let (station, ids) =
        first.iter().find(|(st, ids)| ids.len() >= 3 && ids.len() < population[*st].len()).unwrap_or_else(|| {
            let sizes: Vec<_> = population.iter().map(|(s, p)| (s, p.len(), first[s].len())).collect();
            panic!("no station with 3 or more drawn matters (raise SimConfig::tickets): {sizes:?}")
        });
    let ids: Vec<&String> = ids.iter().collect();
    let not_drawn = population[station].iter().find(|m| !ids.contains(m)).unwrap();
    refused(d, &["recheck", "result", "--answer", "satisfied", "--by", "zhou.office", not_drawn], "not drawn");
    refused(d, &["recheck", "result", "--answer", "很满意", "--by", "zhou.office", ids[0]], "not a satisfaction code");
    refused(d, &["recheck", "result", "--answer", "dissatisfied", "--by", "zhou.office", ids[0]], "--handler");
    // The original handler, even written with a space, is refused.
    let original = &handler[ids[0]];
    let spaced: String = original.chars().flat_map(|c| [c, ' ']).collect();
    let before = journal(d);
    for name in [original.as_str(), spaced.trim()] {
        refused(
            d,
            &["recheck", "result", "--answer", "不满意", "--handler", name, "--by", "zhou.office", ids[0]],
            "other than its original handler",
        );
    }
    assert_eq!(journal(d), before, "a refused result leaves no trace in the journal");
    for (i, id) in ids.iter().take(3).enumerate() {
        let new = format!("复核承办人{i}");
        ok(
            d,
            &[
                "recheck",
                "result",
                "--answer",
                "不满意",
                "--handler",
                &new,
                "--note",
                "仍不满意",
                "--by",
                "zhou.office",
                id,
            ],
        );
        let after = journal(d);
        assert!(after.starts_with(&before) && after.len() > before.len(), "append-only");
    }
    refused(d, &["recheck", "result", "--answer", "satisfied", "--by", "zhou.office", ids[0]], "never changed");
    let elsewhere = first.iter().find(|(st, _)| *st != station).and_then(|(_, m)| m.iter().next()).unwrap();
    let out = ok(d, &["recheck", "result", "--answer", "basically_satisfied", "--by", "zhou.office", elsewhere]);
    assert!(out.contains("recorded"), "{out}");

    // Three reopened cases: the station's next draw is 100%; the others are unchanged.
    let out = ok(d, &["recheck", "draw", "--half", "2025H1", "--by", "zhou.office"]);
    assert!(out.contains("→ 100%"), "{out}");
    let second = drawn(d);
    assert_eq!(&second[station], &population[station], "every callback record of {station}");
    for (st, ids) in &first {
        if st != station && population[st].intersection(&reopened_by_source).count() < 3 {
            assert_eq!(&second[st], ids, "{st} unchanged");
        }
    }

    // SQL: results and reopenings; the KPIs count them as reopened.
    let reopened = rows(d, None, "SELECT matter_id FROM matter_recheck WHERE reopened ORDER BY matter_id");
    let want: BTreeSet<String> = ids.iter().take(3).map(|s| s.to_string()).collect();
    assert_eq!(reopened.into_iter().map(|r| r[0].clone()).collect::<BTreeSet<_>>(), want);
    let kpi: BTreeSet<String> = rows(
        d,
        None,
        &format!(
            "SELECT matter_id FROM kpi_matter_facts WHERE reopened AND matter_id IN ({})",
            want.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(",")
        ),
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(kpi, want);

    // No handler's name in the journal: only keyed tokens.
    let j = String::from_utf8(journal(d)).unwrap();
    assert!(!j.contains(original.as_str()) && !j.contains("复核承办人"), "names in the journal");
    assert!(j.contains("\"new_handler_token\":\"pt:"));

    // Audited: one entry per draw that drew and per result.
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut actions = Vec::new();
    for st in lianqin_pipeline::audit::streams(d) {
        for r in
            lianqin_audit::read(&st, &key, AuditFilter { kind: Some(EventKind::Other), ..Default::default() }).unwrap()
        {
            if let Some(a) = r.unwrap().event.detail.get("action").and_then(Value::as_str) {
                actions.push(a.to_string());
            }
        }
    }
    let n = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(n("recheck_result"), 4, "{actions:?}");
    assert_eq!(n("recheck_draw"), first.len() + 1, "{actions:?}");

    // Policy: the 12345 agent sees their department's draws; ecology none of them.
    let total = rows(d, None, "SELECT count(*) FROM matter_recheck")[0][0].clone();
    assert_eq!(rows(d, Some("zheng.hotline"), "SELECT count(*) FROM matter_recheck")[0][0], total);
    let eco = rows(d, Some("chen.ecology"), "SELECT count(*) FROM matter_recheck WHERE category NOT IN ('a', 'b')");
    assert_eq!(eco[0][0], "0");
}
