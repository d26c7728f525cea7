//! Users × tables × columns: visible rows and masked values under the
//! starter policy (policies/policy.csv, users.toml).

mod common;

use common::*;
use lianqin_policies::token_value;

fn tok(s: &str) -> String {
    token_value(TOKEN_KEY, s)
}

#[tokio::test]
async fn element_rows_per_user() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT element_id FROM element";
    let cases: &[(&str, &[&str])] = &[
        (
            "wang.police",
            &[
                "cid:330502199001011234",
                "cid:330523198505052345",
                "cid:33052119700303345X",
                "site:S-001",
                "uscc:91330500MA2B3C4D5E",
                "water:西苕溪",
            ],
        ),
        (
            "sys.admin",
            &[
                "cid:330502199001011234",
                "cid:330523198505052345",
                "cid:33052119700303345X",
                "site:S-001",
                "uscc:91330500MA2B3C4D5E",
                "water:西苕溪",
            ],
        ),
        (
            "he.office",
            &[
                "cid:330502199001011234",
                "cid:330523198505052345",
                "cid:33052119700303345X",
                "site:S-001",
                "uscc:91330500MA2B3C4D5E",
                "water:西苕溪",
            ],
        ),
        ("li.station", &["cid:330502199001011234", "uscc:91330500MA2B3C4D5E"]),
        ("zhao.aux", &["cid:330523198505052345", "water:西苕溪"]),
        ("chen.ecology", &["cid:330523198505052345", "site:S-001", "water:西苕溪"]),
        ("liu.market", &["uscc:91330500MA2B3C4D5E"]),
        ("sun.law", &["cid:33052119700303345X"]),
        ("zhou.natres", &["site:S-001"]),
        ("wu.agri", &[]),
        ("zheng.hotline", &[]),
    ];
    for (user, want) in cases {
        let got: Vec<String> = query(&e, &ctx, user, q).await.into_iter().map(|mut r| r.remove(0)).collect();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "user {user}");
    }
    // The auditor may not read element at all.
    let err = run(&e, &ctx, "qian.audit", q).await.unwrap_err();
    assert!(err.contains("permission denied for table element"), "{err}");
}

#[tokio::test]
async fn element_columns_per_user() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT element_id, name, id_value, phone FROM element";
    let r = |a: &str, b: &str, c: &str, d: &str| vec![a.to_string(), b.to_string(), c.to_string(), d.to_string()];
    // Police analyst: identifiers in clear.
    assert!(query(&e, &ctx, "wang.police", q).await.contains(&r(
        "cid:330502199001011234",
        "张三",
        "330502199001011234",
        "13812345678"
    )));
    // Station officer (inherits auxiliary, adds sensitive=show): clear.
    assert!(query(&e, &ctx, "li.station", q).await.contains(&r(
        "cid:330502199001011234",
        "张三",
        "330502199001011234",
        "13812345678"
    )));
    // Auxiliary: masked by semantic.
    assert_eq!(
        query(&e, &ctx, "zhao.aux", q).await,
        vec![
            r("cid:330523198505052345", "李四", "330523********2345", "139****4321"),
            r("water:西苕溪", "西苕溪", "***", "NULL"),
        ]
    );
    // Ecology analyst: citizen IDs as join tokens, phones masked.
    assert_eq!(
        query(&e, &ctx, "chen.ecology", q).await,
        vec![
            r("cid:330523198505052345", "李四", &tok("330523198505052345"), "139****4321"),
            r("site:S-001", "某林地", &tok("S-001"), "NULL"),
            r("water:西苕溪", "西苕溪", &tok("西苕溪"), "NULL"),
        ]
    );
    assert_eq!(
        query(&e, &ctx, "liu.market", q).await,
        vec![r("uscc:91330500MA2B3C4D5E", "某化工厂", &tok("91330500MA2B3C4D5E"), "057****4567")]
    );
    // Eco-policing office: city-wide, masked.
    let office = query(&e, &ctx, "he.office", q).await;
    assert_eq!(office.len(), 6);
    assert!(office.contains(&r("cid:33052119700303345X", "王五", "330521********345X", "137****1111")));
    // Admin: clear.
    assert!(query(&e, &ctx, "sys.admin", q).await.contains(&r(
        "cid:33052119700303345X",
        "王五",
        "33052119700303345X",
        "13700001111"
    )));
}

#[tokio::test]
async fn matter_rows_and_content_per_user() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT matter_id, content FROM matter";
    let ids = |rows: Vec<Vec<String>>| rows.into_iter().map(|mut r| r.remove(0)).collect::<Vec<_>>();
    let cases: &[(&str, &[&str])] = &[
        ("wang.police", &["m1", "m2", "m3", "m4", "m5"]),
        ("he.office", &["m1", "m2", "m3", "m4", "m5"]),
        ("li.station", &["m1", "m3"]),
        ("zhao.aux", &["m2"]),
        ("chen.ecology", &["m1", "m4"]),
        ("liu.market", &["m3"]),
        ("sun.law", &["m4"]),
        ("zhou.natres", &["m2", "m5"]),
        ("wu.agri", &["m2", "m5"]),
        ("zheng.hotline", &["m1"]),
    ];
    for (user, want) in cases {
        assert_eq!(ids(query(&e, &ctx, user, q).await), *want, "user {user}");
    }
    // Content (sensitive, no semantic): clear for police, generic mask otherwise.
    assert_eq!(query(&e, &ctx, "zhao.aux", q).await, vec![vec!["m2".to_string(), "太****捞".to_string()]]);
    assert_eq!(
        query(&e, &ctx, "li.station", "SELECT content FROM matter WHERE matter_id = 'm1'").await,
        vec![vec!["举报人张三称某化工厂夜间排污".to_string()]]
    );
    assert_eq!(
        query(&e, &ctx, "zheng.hotline", "SELECT content FROM matter").await,
        vec![vec!["举************污".to_string()]]
    );
}

#[tokio::test]
async fn audit_and_codes() {
    let e = engine().await;
    let ctx = context();
    // Auditor: audit rows, query text masked.
    let got = query(&e, &ctx, "qian.audit", "SELECT seq, user, query FROM audit").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0][1], "wang.police");
    assert!(got[0][2].starts_with('S') && got[0][2].ends_with('t') && got[0][2].contains("***"), "{:?}", got[0]);
    // Separation of duties: the administrator may not read the audit trail.
    let err = run(&e, &ctx, "sys.admin", "SELECT * FROM audit").await.unwrap_err();
    assert!(err.contains("permission denied for table audit"), "{err}");
    assert!(err.contains("explicitly denied"), "{err}");
    for u in ["wang.police", "chen.ecology", "he.office"] {
        assert!(run(&e, &ctx, u, "SELECT count(*) FROM audit").await.is_err(), "{u}");
    }
    // Everyone reads the code tables.
    for u in ["wang.police", "chen.ecology", "qian.audit", "zheng.hotline", "sys.admin"] {
        assert_eq!(query(&e, &ctx, u, "SELECT code FROM codes").await.len(), 2, "{u}");
    }
}

#[tokio::test]
async fn decisions_and_explain() {
    let e = engine().await;
    let who = e.principal("chen.ecology").unwrap();
    let d = e.decide(&who, "element", &element_meta()).await;
    assert!(d.allowed);
    let f = d.row_filter.as_ref().map(|f| f.to_string()).unwrap_or_default();
    assert!(f.contains("department = Utf8(\"ecology\")") && f.contains(" OR "), "{f}");
    assert_eq!(d.columns["id_value"], lianqin_policies::ColumnAction::HashToken);
    assert_eq!(d.columns["name"], lianqin_policies::ColumnAction::Show);
    assert!(d.matched_rules.iter().any(|r| r.starts_with("policy.csv:")), "{:?}", d.matched_rules);
    let x = e.explain(&who, "element", &element_meta());
    assert!(x.contains("ALLOWED") && x.contains("policy.csv:") && x.contains("id_value: hash"), "{x}");
    let x = e.explain(&e.principal("qian.audit").unwrap(), "element", &element_meta());
    assert!(x.contains("DENIED"), "{x}");
    assert!(e.version().starts_with("sha256:") && e.version().len() == 71);
    // Admin flag is computed from the policy.
    assert!(e.principal("sys.admin").unwrap().admin);
    assert!(!who.admin);
}

#[tokio::test]
async fn passwords() {
    let e = engine().await;
    assert!(e.authenticate("chen.ecology", "chen.ecology-demo").is_ok());
    assert!(e.authenticate("chen.ecology", "wrong").is_err());
    assert!(e.authenticate("nobody", "chen.ecology-demo").is_err());
    assert_eq!(e.authenticate("nobody", "x").unwrap_err().to_string(), "authentication failed for user \"nobody\"");
}
