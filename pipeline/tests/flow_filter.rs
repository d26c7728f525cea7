//! Property: a department flow carries exactly what a plain-Rust reference
//! filter + mask of the flow's policy returns — no row, no column value its
//! account may not see — for random policies (row rules by department and
//! division, column actions by sensitivity) and random committed rows. What
//! is checked is the outbox as written by `Flows::deliver` (the same lines
//! the department's topic, HTTP and SQL targets carry) and the body the
//! HTTP target posts.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use lianqin_pipeline::audit::Audit;
use lianqin_pipeline::config::FlowConfig;
use lianqin_pipeline::flows::Flows;
use lianqin_pipeline::flows::push::{Delivery, read_lines};
use lianqin_pipeline::schema::Catalog;
use lianqin_policies::{MaskFunctions, MaskKind, PolicyEngine, mask_value, token_value};
use proptest::prelude::*;

const DEPTS: [&str; 3] = ["police", "ecology", "market"];
const DIVS: [&str; 3] = ["330502", "330523", "330521"];
const KEY: &[u8] = b"flow-prop-key";

#[derive(Debug, Clone)]
enum Atom {
    DeptIs(Vec<usize>),
    OwnDept,
    DivIs(Vec<usize>),
    OwnDivs,
}

#[derive(Debug, Clone)]
struct Case {
    /// Each rule: AND of atoms (empty = all rows); rules combine with OR.
    rules: Vec<Vec<Atom>>,
    /// Action for sensitivity public/internal/sensitive: 0 show, 1 mask,
    /// 2 hash, 3 null, 4 no rule (deny).
    actions: [u8; 3],
    user_dept: usize,
    user_divs: Vec<usize>,
    /// (dept, div, name, citizen id, phone)
    rows: Vec<(usize, usize, String, String, Option<String>)>,
}

fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        prop::collection::vec(0..3usize, 1..3).prop_map(Atom::DeptIs),
        Just(Atom::OwnDept),
        prop::collection::vec(0..3usize, 1..3).prop_map(Atom::DivIs),
        Just(Atom::OwnDivs),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::collection::vec(atom(), 0..3), 1..4),
        [0..5u8, 0..5u8, 0..5u8],
        0..3usize,
        prop::collection::vec(0..3usize, 0..3),
        prop::collection::vec(
            (
                0..3usize,
                0..3usize,
                "[a-z\u{4e00}-\u{4e10}]{1,6}",
                "[0-9]{17}[0-9X]",
                prop::option::of("1[3-9][0-9]{9}"),
            ),
            1..14,
        ),
    )
        .prop_map(|(rules, actions, user_dept, mut user_divs, rows)| {
            user_divs.sort();
            user_divs.dedup();
            Case { rules, actions, user_dept, user_divs, rows }
        })
}

fn cond_text(atoms: &[Atom]) -> String {
    if atoms.is_empty() {
        return "*".into();
    }
    atoms
        .iter()
        .map(|a| match a {
            Atom::DeptIs(v) => format!("department={}", v.iter().map(|i| DEPTS[*i]).collect::<Vec<_>>().join("|")),
            Atom::OwnDept => "department=@dept".into(),
            Atom::DivIs(v) => format!("division={}", v.iter().map(|i| DIVS[*i]).collect::<Vec<_>>().join("|")),
            Atom::OwnDivs => "division=@divisions".into(),
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

fn admits(c: &Case, atoms: &[Atom], dept: usize, div: usize) -> bool {
    atoms.iter().all(|a| match a {
        Atom::DeptIs(v) => v.contains(&dept),
        Atom::OwnDept => dept == c.user_dept,
        Atom::DivIs(v) => v.contains(&div),
        Atom::OwnDivs => c.user_divs.contains(&div),
    })
}

const ACTIONS: [&str; 4] = ["show", "mask", "hash", "null"];
const LABELS: [&str; 3] = ["public", "internal", "sensitive"];

fn policy_text(c: &Case) -> String {
    let mut s = String::new();
    let mut seen = std::collections::HashSet::new();
    for r in &c.rules {
        let line = format!("p, r1, *, element*, *, read, {}, allow\n", cond_text(r));
        if seen.insert(line.clone()) {
            s.push_str(&line);
        }
    }
    for (l, a) in LABELS.iter().zip(c.actions) {
        if a < 4 {
            s.push_str(&format!("p, r1, *, *, sens:{l}, column, {}, allow\n", ACTIONS[a as usize]));
        }
    }
    s
}

fn users_text(c: &Case) -> String {
    let builtin = include_str!("../../policies/users.toml");
    let hash = builtin
        .lines()
        .find_map(|l| l.trim().strip_prefix("password_hash = "))
        .expect("a hash")
        .trim_matches('"')
        .to_string();
    let divs = c.user_divs.iter().map(|i| format!("\"{}\"", DIVS[*i])).collect::<Vec<_>>().join(", ");
    format!(
        "[[user]]\nname = \"u\"\ndepartment = \"{}\"\nroles = [\"r1\"]\ndivisions = [{divs}]\npassword_hash = \"{hash}\"\n",
        DEPTS[c.user_dept]
    )
}

/// The committed rows: a slice of `element_history` (labels from
/// `schemas/libraries`: element_id/department/division public, name,
/// id_value and phone sensitive, content_hash internal).
fn batch(c: &Case) -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("element_id"),
        s("name"),
        s("id_value"),
        s("phone"),
        s("department"),
        s("division"),
        s("content_hash"),
        Field::new("ingested_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]));
    let n = c.rows.len();
    let col = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef { Arc::new((0..n).map(f).collect::<StringArray>()) };
    RecordBatch::try_new(
        schema,
        vec![
            col(&|i| Some(format!("e{i:02}"))),
            col(&|i| Some(c.rows[i].2.clone())),
            col(&|i| Some(c.rows[i].3.clone())),
            col(&|i| c.rows[i].4.clone()),
            col(&|i| Some(DEPTS[c.rows[i].0].to_string())),
            col(&|i| Some(DIVS[c.rows[i].1].to_string())),
            col(&|i| Some(format!("h{i:02}"))),
            Arc::new(TimestampMicrosecondArray::from(vec![1_765_000_000_000_000i64; n]).with_timezone("UTC")),
        ],
    )
    .expect("batch")
}

/// What the reference says the flow may carry: per row the shown values of
/// element_id, name, id_value, phone, department, division, content_hash.
fn expected(c: &Case) -> Vec<Vec<String>> {
    let act = |label: usize, sem: Option<MaskKind>, v: Option<&str>| -> String {
        match (c.actions[label], v) {
            (_, None) | (3, _) | (4, _) => "NULL".into(),
            (0, Some(v)) => v.into(),
            (1, Some(v)) => mask_value(sem.unwrap_or(MaskKind::Keep { first: 1, last: 1 }), v),
            (2, Some(v)) => token_value(KEY, v),
            _ => unreachable!(),
        }
    };
    let mut out: Vec<Vec<String>> = c
        .rows
        .iter()
        .enumerate()
        .filter(|(_, (d, v, ..))| c.rules.iter().any(|r| admits(c, r, *d, *v)))
        .map(|(i, (d, v, name, id, phone))| {
            vec![
                act(0, None, Some(&format!("e{i:02}"))),
                act(2, None, Some(name)),
                act(2, Some(MaskKind::CitizenId), Some(id)),
                act(2, Some(MaskKind::Phone), phone.as_deref()),
                act(0, None, Some(DEPTS[*d])),
                act(0, None, Some(DIVS[*v])),
                act(1, None, Some(&format!("h{i:02}"))),
            ]
        })
        .collect();
    out.sort();
    out
}

fn shown(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "NULL".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(o) => o.to_string(),
    }
}

/// Runs the flow and returns (rows of the outbox, the HTTP body's events).
async fn actual(c: &Case) -> Result<(Vec<Vec<String>>, usize, Vec<serde_json::Value>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policy = Arc::new(
        PolicyEngine::from_texts(
            include_str!("../../policies/model.conf"),
            &policy_text(c),
            &users_text(c),
            MaskFunctions::new(KEY),
        )
        .await
        .map_err(|e| e.to_string())?,
    );
    let cfg = FlowConfig {
        name: "prop".into(),
        user: "u".into(),
        libraries: vec!["element".into()],
        sink: "flows/prop.jsonl".into(),
        topic: None,
        push: None,
    };
    let audit =
        Audit::open(dir.path(), "test", "test", std::time::Duration::from_secs(3)).map_err(|e| e.to_string())?;
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    let flows = Flows::open_with_policy(std::slice::from_ref(&cfg), dir.path(), catalog, audit, policy)
        .await
        .map_err(|e| e.to_string())?;
    flows.deliver("element", &batch(c)).await.map_err(|e| e.to_string())?;
    let outbox = dir.path().join("flows/prop.jsonl");
    let (lines, end) = read_lines(&outbox, 0, 1_000).map_err(|e| e.to_string())?;
    // Sealed at rest; opened as the pusher does.
    let keys = lianqin_pipeline::sealed::Keys::new(dir.path());
    let lines = lines
        .into_iter()
        .map(|l| lianqin_pipeline::flows::open_line(&keys, "prop", l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for l in &lines {
        let ev: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
        let r = &ev["row"];
        // The event's id is the row's id as shown, never the clear one.
        if shown(ev.get("id")) != shown(r.get("element_id")) {
            return Err(format!("event id {} differs from the row's element_id", ev["id"]));
        }
        rows.push(
            ["element_id", "name", "id_value", "phone", "department", "division", "content_hash"]
                .iter()
                .map(|k| shown(r.get(*k)))
                .collect::<Vec<_>>(),
        );
    }
    rows.sort();
    let d = Delivery { id: format!("prop:0-{end}"), start: 0, end, events: lines };
    let body: Vec<serde_json::Value> = serde_json::from_slice(&d.body()).map_err(|e| e.to_string())?;
    Ok((rows, d.events.len(), body))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn a_flow_carries_exactly_what_the_reference_filter_shows(c in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (rows, n, body) = rt.block_on(actual(&c)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&rows, &expected(&c), "policy:\n{}", policy_text(&c));
        // The HTTP body carries those events, nothing else.
        prop_assert_eq!(body.len(), n);
        let clear: BTreeMap<usize, &str> = c.rows.iter().enumerate().map(|(i, r)| (i, r.3.as_str())).collect();
        if c.actions[2] != 0 {
            // Sensitive columns are never shown: no clear citizen id anywhere in the body.
            let text = serde_json::to_string(&body).unwrap();
            for id in clear.values() {
                prop_assert!(!text.contains(id), "clear citizen id {} in the body", id);
            }
        }
    }
}
