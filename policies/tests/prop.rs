//! Property: for random small policies (row rules by department/division,
//! column actions by sensitivity) and random data, the enforced query returns
//! exactly what a plain-Rust reference filter + mask returns.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use lianqin_policies::{ColumnMeta, MaskFunctions, MaskKind, PolicyEngine, mask_value, token_value};
use proptest::prelude::*;

const DEPTS: [&str; 3] = ["police", "ecology", "market"];
const DIVS: [&str; 3] = ["330502", "330523", "330521"];

#[derive(Debug, Clone)]
enum Atom {
    DeptIs(Vec<usize>),
    OwnDept,
    DivIs(Vec<usize>),
    OwnDivs,
}

#[derive(Debug, Clone)]
struct Case {
    /// Each rule: AND of atoms (empty = all rows).
    rules: Vec<Vec<Atom>>,
    /// Action for sensitivity public/internal/sensitive: 0 show, 1 mask, 2 hash, 3 null, 4 none (deny).
    actions: [u8; 3],
    user_dept: usize,
    user_divs: Vec<usize>,
    /// rows: (dept, div, name, id, phone)
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
            (0..3usize, 0..3usize, "[a-z\u{4e00}-\u{4e10}]{0,6}", "[0-9]{6,18}", prop::option::of("1[0-9]{10}")),
            0..12,
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
    for (i, r) in c.rules.iter().enumerate() {
        // Alternate between two roles to exercise OR across roles too.
        let role = if i % 2 == 0 { "r1" } else { "r2" };
        let line = format!("p, {role}, *, element, *, read, {}, allow\n", cond_text(r));
        if seen.insert(line.clone()) {
            s.push_str(&line);
        }
    }
    for (l, a) in LABELS.iter().zip(c.actions) {
        if a < 4 {
            s.push_str(&format!("p, r1, *, *, sens:{l}, column, {}, allow\n", ACTIONS[a as usize]));
        }
    }
    // r2 must be known even if it has no rules.
    s.push_str("p, r2, *, nothing, *, read, *, allow\n");
    s
}

fn users_text(c: &Case) -> String {
    let builtin = include_str!("../users.toml");
    let hash = builtin
        .lines()
        .find_map(|l| l.trim().strip_prefix("password_hash = "))
        .expect("a hash")
        .trim_matches('"')
        .to_string();
    let divs = c.user_divs.iter().map(|i| format!("\"{}\"", DIVS[*i])).collect::<Vec<_>>().join(", ");
    format!(
        "[[user]]\nname = \"u\"\ndepartment = \"{}\"\nroles = [\"r1\", \"r2\"]\ndivisions = [{divs}]\npassword_hash = \"{hash}\"\n",
        DEPTS[c.user_dept]
    )
}

fn expected(c: &Case) -> Vec<Vec<String>> {
    let key = b"prop-key";
    let act = |label: usize, sem: Option<MaskKind>, v: Option<&str>| -> String {
        let a = c.actions[label];
        match (a, v) {
            (_, None) | (3, _) | (4, _) => "NULL".into(),
            (0, Some(v)) => v.into(),
            (1, Some(v)) => mask_value(sem.unwrap_or(MaskKind::Keep { first: 1, last: 1 }), v),
            (2, Some(v)) => token_value(key, v),
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
                act(1, None, Some(name)),
                act(2, Some(MaskKind::CitizenId), Some(id)),
                act(2, Some(MaskKind::Phone), phone.as_deref()),
                act(0, None, Some(DEPTS[*d])),
                act(0, None, Some(DIVS[*v])),
            ]
        })
        .collect();
    out.sort();
    out
}

fn batch(c: &Case) -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("element_id"),
        s("name"),
        s("id_value"),
        s("phone"),
        s("department"),
        s("division"),
    ]));
    let col = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
        Arc::new((0..c.rows.len()).map(f).collect::<StringArray>())
    };
    RecordBatch::try_new(
        schema,
        vec![
            col(&|i| Some(format!("e{i:02}"))),
            col(&|i| Some(c.rows[i].2.clone())),
            col(&|i| Some(c.rows[i].3.clone())),
            col(&|i| c.rows[i].4.clone()),
            col(&|i| Some(DEPTS[c.rows[i].0].to_string())),
            col(&|i| Some(DIVS[c.rows[i].1].to_string())),
        ],
    )
    .expect("batch")
}

fn meta(_t: &str) -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("element_id", "public", None),
        ColumnMeta::new("name", "internal", None),
        ColumnMeta::new("id_value", "sensitive", Some("citizen_id")),
        ColumnMeta::new("phone", "sensitive", Some("phone")),
        ColumnMeta::new("department", "public", None),
        ColumnMeta::new("division", "public", None),
    ]
}

async fn actual(c: &Case) -> Result<Vec<Vec<String>>, String> {
    let e = PolicyEngine::from_texts(
        include_str!("../model.conf"),
        &policy_text(c),
        &users_text(c),
        MaskFunctions::new(b"prop-key"),
    )
    .await
    .map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    common::register(&ctx, "element", batch(c));
    let who = e.principal("u").ok_or("no user")?;
    let plan = ctx
        .state()
        .create_logical_plan("SELECT element_id, name, id_value, phone, department, division FROM element")
        .await
        .map_err(|e| e.to_string())?;
    let plan = e.secure_plan(&who, plan, &meta).map_err(|e| e.to_string())?;
    let b =
        ctx.execute_logical_plan(plan).await.map_err(|e| e.to_string())?.collect().await.map_err(|e| e.to_string())?;
    Ok(common::rows(&b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn enforced_equals_reference(c in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(actual(&c));
        prop_assert_eq!(got, Ok(expected(&c)), "policy:\n{}", policy_text(&c));
    }
}
