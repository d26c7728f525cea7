//! One test per bypass attempt: every way a query might reach a table or a
//! raw value around the rewrite.

mod common;

use common::*;
use lianqin_policies::{ColumnMeta, PolicyEngine, Principal, check_statement, token_value};

fn n(v: &str) -> Vec<Vec<String>> {
    vec![vec![v.to_string()]]
}

#[tokio::test]
async fn scalar_subquery() {
    let e = engine().await;
    let ctx = context();
    // chen.ecology sees 3 of 6 elements; the subquery must see the same.
    assert_eq!(query(&e, &ctx, "chen.ecology", "SELECT (SELECT count(*) FROM element)").await, n("3"));
    assert_eq!(
        query(&e, &ctx, "chen.ecology", "SELECT (SELECT max(id_value) FROM element WHERE kind = 'forest')").await,
        n(&token_value(TOKEN_KEY, "S-001"))
    );
    let err = run(&e, &ctx, "qian.audit", "SELECT (SELECT count(*) FROM element)").await.unwrap_err();
    assert!(err.contains("permission denied for table element"), "{err}");
}

#[tokio::test]
async fn exists_subquery() {
    let e = engine().await;
    let ctx = context();
    // Row probe: e1 is not visible to ecology.
    let q = "SELECT 1 WHERE EXISTS (SELECT 1 FROM element WHERE element_id = 'cid:330502199001011234')";
    assert!(query(&e, &ctx, "chen.ecology", q).await.is_empty());
    assert_eq!(query(&e, &ctx, "wang.police", q).await, n("1"));
    // Value probe: the office sees e1 but only its masked ID.
    let q = "SELECT 1 WHERE EXISTS (SELECT 1 FROM element WHERE id_value = '330502199001011234')";
    assert!(query(&e, &ctx, "he.office", q).await.is_empty());
    assert_eq!(query(&e, &ctx, "wang.police", q).await, n("1"));
    // Correlated NOT EXISTS on a denied table.
    let err = run(
        &e,
        &ctx,
        "chen.ecology",
        "SELECT matter_id FROM matter m WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.user = m.matter_id)",
    )
    .await
    .unwrap_err();
    assert!(err.contains("permission denied for table audit"), "{err}");
}

#[tokio::test]
async fn in_subquery() {
    let e = engine().await;
    let ctx = context();
    // Ecology sees m1, m4; their parties (e3, e5) are not visible elements.
    let q = "SELECT matter_id FROM matter WHERE party_element_id IN (SELECT element_id FROM element)";
    assert!(query(&e, &ctx, "chen.ecology", q).await.is_empty());
    assert_eq!(query(&e, &ctx, "wang.police", q).await.len(), 5);
    let q = "SELECT count(*) FROM element WHERE id_value IN ('330502199001011234', '33052119700303345X')";
    assert_eq!(query(&e, &ctx, "he.office", q).await, n("0"));
}

#[tokio::test]
async fn cte() {
    let e = engine().await;
    let ctx = context();
    let q = "WITH x AS (SELECT * FROM element), y AS (SELECT id_value FROM x WHERE kind = 'person') SELECT count(*), min(y.id_value) FROM y";
    assert_eq!(
        query(&e, &ctx, "chen.ecology", q).await,
        vec![vec!["1".to_string(), token_value(TOKEN_KEY, "330523198505052345")]]
    );
    // Recursive CTE over a secured table.
    let q = "WITH RECURSIVE r(n, k) AS (SELECT 1, kind FROM element UNION ALL SELECT n + 1, k FROM r WHERE n < 2) SELECT count(*) FROM r";
    assert_eq!(query(&e, &ctx, "chen.ecology", q).await, n("6"));
}

#[tokio::test]
async fn join() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT m.matter_id, e.id_value FROM matter m JOIN element e ON m.party_element_id = e.element_id";
    assert_eq!(query(&e, &ctx, "zhou.natres", q).await, vec![vec!["m5".to_string(), token_value(TOKEN_KEY, "S-001")]]);
    // Joining on the masked value does not reveal which IDs match.
    let q = "SELECT count(*) FROM element a JOIN element b ON a.id_value = b.id_value AND a.element_id <> b.element_id";
    assert_eq!(query(&e, &ctx, "he.office", q).await, n("0"));
    // Join with a denied table.
    assert!(run(&e, &ctx, "chen.ecology", "SELECT * FROM element JOIN audit ON true").await.is_err());
}

#[tokio::test]
async fn union() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT id_value AS v FROM element UNION ALL SELECT content FROM matter";
    let got = query(&e, &ctx, "he.office", q).await;
    assert_eq!(got.len(), 11);
    for r in &got {
        assert!(r[0] == "NULL" || r[0].contains('*'), "unmasked value in union: {r:?}");
    }
    let q = "SELECT element_id FROM element UNION SELECT seq FROM audit";
    assert!(run(&e, &ctx, "he.office", q).await.is_err());
}

#[tokio::test]
async fn view() {
    let e = engine().await;
    let ctx = context();
    // An administrator defines a view over the whole table...
    run(&e, &ctx, "sys.admin", "CREATE VIEW v_all AS SELECT * FROM element").await.unwrap();
    // ...and the view is enforced with the invoker's rights.
    assert_eq!(query(&e, &ctx, "chen.ecology", "SELECT count(*) FROM v_all").await, n("3"));
    assert_eq!(
        query(&e, &ctx, "chen.ecology", "SELECT id_value FROM v_all WHERE kind = 'forest'").await,
        n(&token_value(TOKEN_KEY, "S-001"))
    );
    assert!(run(&e, &ctx, "qian.audit", "SELECT count(*) FROM v_all").await.is_err());
    // A non-admin may not create views.
    assert!(run(&e, &ctx, "chen.ecology", "CREATE VIEW v2 AS SELECT * FROM element").await.is_err());
}

#[tokio::test]
async fn functions_on_masked_column() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT substr(id_value, 7, 8), substr(phone, 4, 4), length(id_value) FROM element WHERE element_id = 'cid:330502199001011234'";
    assert_eq!(
        query(&e, &ctx, "he.office", q).await,
        vec![vec!["********".to_string(), "****".to_string(), "18".to_string()]]
    );
    let q = "SELECT count(*) FROM element WHERE id_value LIKE '3305021990%' OR substr(id_value, 7, 4) = '1990'";
    assert_eq!(query(&e, &ctx, "he.office", q).await, n("0"));
    assert_eq!(query(&e, &ctx, "wang.police", q).await, n("1"));
}

#[tokio::test]
async fn aggregates_on_masked_and_denied_columns() {
    let e = engine().await;
    let ctx = context();
    let q = "SELECT min(id_value), max(phone), count(DISTINCT id_value) FROM element WHERE kind = 'person'";
    let got = query(&e, &ctx, "he.office", q).await;
    assert_eq!(got[0][0], "330502********1234");
    assert_eq!(got[0][1], "139****4321");
    // A column labelled secret is explicitly denied to department analysts:
    // it reads as NULL, so aggregates see nothing.
    let who = e.principal("chen.ecology").unwrap();
    let cols = |t: &str| -> Vec<ColumnMeta> {
        columns_of(t)
            .into_iter()
            .map(|mut c| {
                if c.name == "phone" {
                    c.sensitivity = "secret".into();
                }
                c
            })
            .collect()
    };
    let plan =
        ctx.state().create_logical_plan("SELECT count(phone), min(phone), max(phone) FROM element").await.unwrap();
    let plan = e.secure_plan(&who, plan, &cols).unwrap();
    let b = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
    assert_eq!(rows(&b), vec![vec!["0".to_string(), "NULL".to_string(), "NULL".to_string()]]);
    // Columns the caller gives no metadata for are denied too.
    let plan = ctx.state().create_logical_plan("SELECT count(phone) FROM element").await.unwrap();
    let none = |t: &str| -> Vec<ColumnMeta> { columns_of(t).into_iter().filter(|c| c.name != "phone").collect() };
    let plan = e.secure_plan(&e.principal("wang.police").unwrap(), plan, &none).unwrap();
    let b = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
    assert_eq!(rows(&b), n("0"));
}

#[tokio::test]
async fn explain_shows_only_the_rewritten_plan() {
    let e = engine().await;
    let ctx = context();
    let text = query(&e, &ctx, "chen.ecology", "EXPLAIN SELECT id_value FROM element")
        .await
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains(lianqin_policies::TOKEN_FN), "{text}");
    assert!(text.contains("ecology"), "row filter missing: {text}");
    let err = run(&e, &ctx, "qian.audit", "EXPLAIN SELECT * FROM element").await.unwrap_err();
    assert!(err.contains("permission denied for table element"), "{err}");
}

/// EXPLAIN forms that print row counts or metrics from before the row
/// filter are refused for a restricted user (ecology sees 3 of the 6
/// elements); the plain forms print no counts at all. An administrator
/// still gets them, and they do count the hidden rows.
#[tokio::test]
async fn explain_reveals_no_hidden_row_counts() {
    let e = engine().await;
    let ctx = context();
    let total = query(&e, &ctx, "sys.admin", "SELECT count(*) FROM element").await;
    let visible = query(&e, &ctx, "chen.ecology", "SELECT count(*) FROM element").await;
    assert_ne!(total, visible, "the fixture must hide rows from ecology");
    let refused = [
        "EXPLAIN ANALYZE SELECT count(*) FROM element",
        "EXPLAIN ANALYZE VERBOSE SELECT count(*) FROM element",
        "EXPLAIN VERBOSE SELECT id_value FROM element",
        "EXPLAIN VERBOSE SELECT count(*) FROM element WHERE kind = 'person'",
    ];
    for q in refused {
        let err = run(&e, &ctx, "chen.ecology", q).await.unwrap_err();
        assert!(err.contains("reserved to administrators"), "{q}: {err}");
    }
    // Plain forms, statistics switched on or off per statement (Postgres'
    // COSTS-style options): either refused or free of counts.
    let counted = |text: &str| ["Rows=", "output_rows", "metrics=", "num_rows"].iter().any(|m| text.contains(m));
    for q in [
        "EXPLAIN SELECT count(*) FROM element",
        "EXPLAIN FORMAT TREE SELECT count(*) FROM element",
        "EXPLAIN FORMAT INDENT SELECT * FROM element WHERE kind = 'person'",
        "EXPLAIN (COSTS) SELECT count(*) FROM element",
        "EXPLAIN (COSTS OFF) SELECT count(*) FROM element",
        "EXPLAIN (ANALYZE) SELECT count(*) FROM element",
    ] {
        match run(&e, &ctx, "chen.ecology", q).await {
            Ok(b) => {
                let text = rows(&b).into_iter().flatten().collect::<Vec<_>>().join("\n");
                assert!(!counted(&text), "{q} shows counts: {text}");
            }
            Err(err) => {
                assert!(err.contains("reserved") || err.contains("not supported") || err.contains("rror"), "{q}: {err}")
            }
        }
    }
    // With statistics on in the session too, a plain EXPLAIN prints none.
    let stats_ctx = context();
    stats_ctx.state_ref().write().config_mut().options_mut().explain.show_statistics = true;
    let b = run(&e, &stats_ctx, "chen.ecology", "EXPLAIN SELECT count(*) FROM element").await.unwrap();
    let text = rows(&b).into_iter().flatten().collect::<Vec<_>>().join("\n");
    assert!(!counted(&text), "session statistics leaked: {text}");
    // The administrator's EXPLAIN ANALYZE does count (so the check above can fail).
    let b = run(&e, &ctx, "sys.admin", "EXPLAIN ANALYZE SELECT count(*) FROM element").await.unwrap();
    let text = rows(&b).into_iter().flatten().collect::<Vec<_>>().join("\n");
    assert!(counted(&text), "{text}");
}

#[tokio::test]
async fn information_schema_is_admin_only() {
    let e = engine().await;
    let ctx = context();
    for q in [
        "SELECT table_name FROM information_schema.tables",
        "SHOW TABLES",
        "SHOW COLUMNS FROM element",
        "SELECT * FROM information_schema.columns",
    ] {
        let err = run(&e, &ctx, "chen.ecology", q).await.unwrap_err();
        assert!(err.contains("permission denied"), "{q}: {err}");
    }
    let tables =
        query(&e, &ctx, "sys.admin", "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            .await;
    assert!(tables.contains(&vec!["element".to_string()]), "{tables:?}");
}

#[tokio::test]
async fn ddl_dml_copy_set_refused() {
    let e = engine().await;
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    let stmts = [
        "CREATE TABLE t AS SELECT * FROM element".to_string(),
        "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '/etc/hostname'".to_string(),
        format!("COPY element TO '{}' STORED AS CSV", out.display()),
        format!("COPY (SELECT * FROM element) TO '{}' STORED AS CSV", out.display()),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "INSERT INTO element SELECT * FROM element".to_string(),
        "DROP TABLE element".to_string(),
        "DESCRIBE element".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
    ];
    for s in &stmts {
        let err = run(&e, &ctx, "he.office", s).await.unwrap_err();
        assert!(err.contains("permission denied") || err.contains("reserved to administrators"), "{s}: {err}");
    }
    assert!(!out.exists(), "COPY wrote a file");
    // Same at the statement level (before planning).
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    for (s, ok) in [
        ("SELECT * FROM element", true),
        ("EXPLAIN SELECT 1", true),
        ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/tmp/x'", false),
        ("COPY element TO '/tmp/x' STORED AS CSV", false),
        ("SET datafusion.execution.batch_size = 1", false),
        ("INSERT INTO element VALUES (1)", false),
        ("CREATE TABLE t (a INT)", false),
    ] {
        let mut st = datafusion::sql::parser::DFParser::parse_sql_with_dialect(s, &dialect).unwrap();
        let st = st.pop_front().unwrap();
        assert_eq!(check_statement(&st, false).is_ok(), ok, "{s}");
        assert!(check_statement(&st, true).is_ok(), "{s}");
    }
}

#[tokio::test]
async fn token_function_cannot_be_called() {
    let e = engine().await;
    let ctx = context();
    e.mask_functions().register(&ctx);
    let err = run(
        &e,
        &ctx,
        "chen.ecology",
        "SELECT count(*) FROM element WHERE id_value = lianqin_hash_token('330523198505052345')",
    )
    .await
    .unwrap_err();
    assert!(err.contains(lianqin_policies::TOKEN_FN), "{err}");
}

#[tokio::test]
async fn unknown_or_forged_user_denied() {
    let e = engine().await;
    let ctx = context();
    assert!(e.principal("nobody").is_none());
    assert!(e.authenticate("nobody", "").is_err());
    let forged = Principal {
        name: "nobody".into(),
        display_name: None,
        department: "police".into(),
        roles: vec!["police_analyst".into()],
        stations: vec![],
        divisions: vec![],
        admin: true,
    };
    let d = e.decide(&forged, "element", &element_meta()).await;
    assert!(!d.allowed, "{}", d.reason);
    // A real user with forged attributes (other department) is denied too.
    let mut f2 = e.principal("chen.ecology").unwrap();
    f2.department = "police".into();
    assert!(!e.decide(&f2, "element", &element_meta()).await.allowed);
    let mut f3 = e.principal("zhao.aux").unwrap();
    f3.divisions = vec!["330502".into(), "330523".into()];
    assert!(!e.decide(&f3, "element", &element_meta()).await.allowed);
    // secure_plan with a forged admin: statement check uses the policy, not the flag.
    let plan = ctx.state().create_logical_plan("DROP TABLE element").await.unwrap();
    assert!(e.secure_plan(&forged, plan, &columns_of).is_err());
    let plan = ctx.state().create_logical_plan("SELECT * FROM element").await.unwrap();
    assert!(e.secure_plan(&forged, plan, &columns_of).is_err());
    // Unknown tables and odd names are denied.
    let who = e.principal("wang.police").unwrap();
    assert!(!e.decide(&who, "no_such_table", &[]).await.allowed);
    assert!(!e.decide(&who, "中文表", &[]).await.allowed);
}

#[tokio::test]
async fn policy_evaluation_error_denies() {
    // A matcher calling a function casbin does not have fails at evaluation time.
    let model =
        include_str!("../model.conf").replace("r.act == p.act &&", "r.act == p.act && noSuchFunction(r.obj) &&");
    let e = PolicyEngine::from_texts(
        &model,
        include_str!("../policy.csv"),
        include_str!("../users.toml"),
        lianqin_policies::MaskFunctions::new(TOKEN_KEY),
    )
    .await
    .expect("loads; fails only when evaluated");
    let who = e.principal("wang.police").unwrap();
    assert!(!who.admin);
    let d = e.decide(&who, "element", &element_meta()).await;
    assert!(!d.allowed);
    assert!(d.reason.contains("policy evaluation error"), "{}", d.reason);
    let ctx = context();
    let err = run(&e, &ctx, "wang.police", "SELECT 1 FROM element").await.unwrap_err();
    assert!(err.contains("permission denied for table element"), "{err}");
}

#[tokio::test]
async fn error_side_channel_on_hidden_rows() {
    // A predicate that errors on a row reveals that the row exists. The user's
    // predicate must never be evaluated on rows the row filter hides.
    // chen.ecology cannot see 张三 (police) or 王五 (law_enforcement).
    let e = engine().await;
    let ctx = context();
    for probe in ["张三", "王五"] {
        let q = format!(
            "SELECT count(*) FROM element WHERE CASE WHEN name = '{probe}' THEN 1 / (length(name) - 2) ELSE 1 END = 1"
        );
        let r = run(&e, &ctx, "chen.ecology", &q).await;
        assert!(r.is_ok(), "predicate evaluated on a hidden row ({probe}): {:?}", r.err());
        // Sanity: police sees the row, so the probe does fire for them.
        assert!(run(&e, &ctx, "wang.police", &q).await.is_err(), "probe did not fire for police");
        // Same probe in the select list, in an aggregate, under LIMIT and in a join.
        let expr = format!("CASE WHEN name = '{probe}' THEN 1 / (length(name) - 2) ELSE 1 END");
        for q in [
            format!("SELECT {expr} FROM element"),
            format!("SELECT sum({expr}) FROM element"),
            format!("SELECT element_id FROM element WHERE {expr} = 1 LIMIT 1"),
            format!("SELECT count(*) FROM element JOIN codes ON {expr} = 1"),
        ] {
            let r = run(&e, &ctx, "chen.ecology", &q).await;
            assert!(r.is_ok(), "{q}: expression evaluated on a hidden row: {:?}", r.err());
        }
    }
}

/// A sharing grant is a role of its own for one user: it reads what the
/// grant's rule allows, nobody else gains, and a grant that names another
/// department than its user's, an unknown user or a rule that does not
/// parse is refused (it would otherwise break loading for everyone).
#[tokio::test]
async fn grants_give_one_user_one_rule_and_bad_grants_are_refused() {
    use lianqin_policies::Grant;
    let base = PolicyEngine::builtin().await.unwrap();
    let grant = |user: &str, dept: &str, rule: &str| Grant {
        role: "grant_sr_1".into(),
        user: user.into(),
        department: dept.into(),
        rules: vec![format!("grant_sr_1, {dept}, matter*, *, read, {rule}, allow")],
        columns: None,
    };
    let market = base.principal("liu.market").unwrap();
    let before = base.decide(&market, "matter", &matter_meta()).await;
    let e = base.clone().with_grants(&[grant("liu.market", "market", "department=police & category=a")]).await.unwrap();
    assert!(e.version().starts_with(&base.version()) && e.version().contains("+grants:"), "{}", e.version());
    let after = e.decide(&market, "matter", &matter_meta()).await;
    assert!(after.allowed);
    assert_ne!(format!("{:?}", before.row_filter), format!("{:?}", after.row_filter), "the grant adds rows");
    assert!(format!("{:?}", after.row_filter).contains("police"), "{:?}", after.row_filter);
    // A column-limited grant: the columns it leaves out show only on the
    // rows of the standing rules; a listed column everywhere.
    let mut limited = grant("liu.market", "market", "department=police & category=a");
    limited.columns = Some(vec!["matter_id".into(), "deleted".into()]);
    let el = base.clone().with_grants(&[limited]).await.unwrap();
    assert_ne!(el.version(), e.version(), "the columns are part of the version");
    let d = el.decide(&market, "matter", &matter_meta()).await;
    assert_eq!(format!("{:?}", d.row_filter), format!("{:?}", after.row_filter), "the same rows");
    assert!(!d.column_conditions.contains_key("matter_id"), "{:?}", d.column_conditions);
    let title = d.column_conditions.get("title").map(|c| c.to_string()).unwrap_or_default();
    assert!(!title.is_empty() && !title.contains("police"), "title only on the standing rows: {title}");
    // Another market user gains nothing.
    let eco = e.principal("chen.ecology").unwrap();
    assert_eq!(
        format!("{:?}", e.decide(&eco, "matter", &matter_meta()).await.row_filter),
        format!("{:?}", base.decide(&eco, "matter", &matter_meta()).await.row_filter)
    );
    // Refused grants.
    assert!(base.clone().with_grants(&[grant("liu.market", "police", "category=a")]).await.is_err());
    assert!(base.clone().with_grants(&[grant("nobody", "market", "category=a")]).await.is_err());
    assert!(base.clone().with_grants(&[grant("liu.market", "market", "nonsense(")]).await.is_err());
}
