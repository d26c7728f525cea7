//! Governed sharing (issue 16 item 1): a request → the owning department's
//! approver decides → an approved grant is enforced until it ends or is
//! revoked; a rejected request grants nothing; every step is audited with
//! both people, the purpose and the expiry; the grant shows in `policy
//! explain`.

use std::path::Path;
use std::time::Duration;

use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;

fn small() -> SimConfig {
    SimConfig {
        incidents: 60,
        tickets: 30,
        enterprises: 5,
        cases: 5,
        env_files: 1,
        env_rows_per_file: 5,
        ..Default::default()
    }
}

use lianqin_tests::{cli_ok as ok, cli_refused as refused};

/// How many police matters of category `cat` `user` reads.
fn police_rows(d: &Path, user: Option<&str>, cat: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM matter WHERE department = 'police' AND category = '{cat}'");
    let mut args = vec!["sql", "--format", "csv"];
    if let Some(u) = user {
        args.extend(["--as", u]);
    }
    args.push(&sql);
    ok(d, user, &args).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// `<dir>/data` after one demo cycle over the small simulation.
async fn demo_data(dir: &Path) -> std::path::PathBuf {
    let d = dir.join("data");
    let sim = demo::start_simulation(&d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(&d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    sim.shutdown().await;
    d
}

fn request_id(out: &str) -> String {
    out.split_whitespace().find(|w| w.starts_with("sr-")).expect("a request id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_enforced_until_it_ends_and_every_step_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = &demo_data(dir.path()).await;
    // Police matters the market analyst may not read (market reads category d).
    let cat = ["c", "a", "e", "b"]
        .into_iter()
        .find(|c| police_rows(d, None, c) > 0)
        .expect("the demo has police matters outside category d");
    let all = police_rows(d, None, cat);
    let m = Some("liu.market");
    assert_eq!(police_rows(d, m, cat), 0, "no access before a grant");

    let until_far = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let rows = format!("category={cat}");
    let req = |purpose: &str, until: &str| {
        request_id(&ok(
            d,
            m,
            &[
                "share",
                "request",
                "--as",
                "liu.market",
                "--table",
                "matter*",
                "--from",
                "police",
                "--rows",
                &rows,
                "--purpose",
                purpose,
                "--until",
                until,
            ],
        ))
    };
    // Refused requests: own department, bad rows, past time, unknown department.
    refused(
        d,
        m,
        &[
            "share",
            "request",
            "--as",
            "liu.market",
            "--table",
            "matter",
            "--from",
            "market",
            "--purpose",
            "x",
            "--until",
            &until_far,
        ],
        "own department",
    );
    refused(
        d,
        m,
        &[
            "share",
            "request",
            "--as",
            "liu.market",
            "--table",
            "matter",
            "--from",
            "police",
            "--rows",
            "nonsense(",
            "--purpose",
            "x",
            "--until",
            &until_far,
        ],
        "--rows",
    );
    refused(
        d,
        m,
        &[
            "share",
            "request",
            "--as",
            "liu.market",
            "--table",
            "matter",
            "--from",
            "police",
            "--purpose",
            "x",
            "--until",
            "2020-01-01",
        ],
        "already passed",
    );
    refused(
        d,
        m,
        &[
            "share",
            "request",
            "--as",
            "liu.market",
            "--table",
            "audit",
            "--from",
            "police",
            "--purpose",
            "x",
            "--until",
            &until_far,
        ],
        "shared libraries",
    );

    // 1. Rejected: grants nothing.
    let rejected = req("专项检查", &until_far);
    refused(
        d,
        Some("chen.ecology"),
        &["share", "reject", "--as", "chen.ecology", "--reason", "no", &rejected],
        "only a sharing_approver of `police`",
    );
    ok(d, Some("wang.police"), &["share", "reject", "--as", "wang.police", "--reason", "范围过大", &rejected]);
    assert_eq!(police_rows(d, m, cat), 0);
    refused(d, Some("wang.police"), &["share", "approve", "--as", "wang.police", &rejected], "not pending");

    // 2. Approved for a few seconds: enforced, visible in explain, then ends.
    let until_soon = (chrono::Utc::now() + chrono::Duration::seconds(8)).to_rfc3339();
    let granted = req("联合执法 2026-12", &until_soon);
    refused(d, m, &["share", "approve", "--as", "liu.market", &granted], "only a sharing_approver");
    assert_eq!(police_rows(d, m, cat), 0, "pending grants nothing");
    ok(d, Some("wang.police"), &["share", "approve", "--as", "wang.police", &granted]);
    assert_eq!(police_rows(d, m, cat), all, "the grant gives the asked rows");
    assert_eq!(police_rows(d, m, if cat == "a" { "b" } else { "a" }), 0, "and only those");
    let explain = ok(d, None, &["policy", "explain", "--user", "liu.market", "--table", "matter"]);
    assert!(explain.contains(&format!("grant_{}", granted.replace('-', "_"))), "{explain}");
    let list = ok(d, None, &["share", "list"]);
    assert!(list.contains(&format!("{rejected} rejected")) && list.contains(&format!("{granted} granted")), "{list}");
    let deadline = chrono::DateTime::parse_from_rfc3339(&until_soon).unwrap();
    while chrono::Utc::now() < deadline + chrono::Duration::milliseconds(500) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(police_rows(d, m, cat), 0, "the next query after the end is refused the rows");
    assert!(ok(d, None, &["share", "list"]).contains(&format!("{granted} expired")));

    // 3. Revoked before its end.
    let revoked = req("联合执法", &until_far);
    ok(d, Some("wang.police"), &["share", "approve", "--as", "wang.police", &revoked]);
    assert_eq!(police_rows(d, m, cat), all);
    ok(d, m, &["share", "revoke", "--as", "liu.market", "--reason", "任务结束", &revoked]);
    assert_eq!(police_rows(d, m, cat), 0);

    // Audited: each step with requester, approver, purpose and expiry.
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut steps = Vec::new();
    for st in lianqin_pipeline::audit::streams(d) {
        for r in lianqin_audit::read(&st, &key, Default::default()).unwrap() {
            let ev = r.unwrap().event;
            if let Some(a) = ev.detail.get("action").and_then(|v| v.as_str()).filter(|a| a.starts_with("share_")) {
                steps.push((a.to_string(), ev.user.clone(), ev.detail.clone()));
            }
        }
    }
    let n = |a: &str| steps.iter().filter(|s| s.0 == a).count();
    assert_eq!(
        (n("share_request"), n("share_approve"), n("share_reject"), n("share_revoke")),
        (3, 2, 1, 1),
        "{steps:#?}"
    );
    let approve = steps.iter().find(|s| s.0 == "share_approve" && s.2["request"] == granted.as_str()).unwrap();
    assert_eq!(approve.1, "wang.police");
    assert_eq!(approve.2["requester"], "liu.market");
    assert_eq!(approve.2["purpose"], "联合执法 2026-12");
    assert!(approve.2["until"].as_str().is_some());
}

/// `lianqin sql --as user` of a one-integer query.
fn scalar(d: &Path, user: &str, sql: &str) -> i64 {
    ok(d, Some(user), &["sql", "--format", "csv", "--as", user, sql]).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// A grant limited to columns (`share request --columns`): the grantee
/// reads the granted rows with only those columns (the others NULL), the
/// rows it read before keep every column its standing rules show, a column
/// the library does not have is refused at request time, and `policy
/// explain` names the columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_limited_grant_shows_only_its_columns_on_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = &demo_data(dir.path()).await;
    // The ecology analyst reads its own rows and categories a/b of others.
    let m = "chen.ecology";
    let cat = ["c", "e", "d"]
        .into_iter()
        .find(|c| police_rows(d, None, c) > 0 && police_rows(d, Some(m), c) == 0)
        .expect("police matters the ecology analyst may not read");
    let all = police_rows(d, None, cat);
    let count = |sql: &str| scalar(d, m, sql);
    let (rows_before, titles_before) = (count("SELECT count(*) FROM matter"), count("SELECT count(title) FROM matter"));
    assert!(titles_before > 0, "the ecology analyst reads titles of its own rows");
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let rows = format!("category={cat}");
    let ask = |columns: &str| {
        lianqin_tests::cli_run(
            d,
            Some(m),
            &[
                "share",
                "request",
                "--as",
                m,
                "--table",
                "matter*",
                "--from",
                "police",
                "--rows",
                &rows,
                "--columns",
                columns,
                "--purpose",
                "联合巡查统计",
                "--until",
                &until,
            ],
        )
    };
    let o = ask("matter_id,nonsense");
    assert!(!o.status.success() && lianqin_tests::cli_text(&o).contains("`nonsense` is not a column of matter"));
    let o = ask("matter_id,stage,category,department");
    assert!(o.status.success(), "{}", lianqin_tests::cli_text(&o));
    let id = request_id(&lianqin_tests::cli_text(&o));
    ok(d, Some("wang.police"), &["share", "approve", "--as", "wang.police", &id]);

    let granted = format!("FROM matter WHERE department = 'police' AND category = '{cat}'");
    assert_eq!(count(&format!("SELECT count(*) {granted}")), all, "the granted rows");
    assert_eq!(count(&format!("SELECT count(stage) {granted}")), all, "a listed column");
    assert_eq!(count(&format!("SELECT count(DISTINCT matter_id) {granted}")), all, "the key is listed");
    assert_eq!(count(&format!("SELECT count(title) {granted}")), 0, "a column left out reads NULL");
    assert_eq!(count(&format!("SELECT count(*) {granted} AND title IS NOT NULL")), 0, "also in predicates");
    assert_eq!(count("SELECT count(*) FROM matter"), rows_before + all);
    assert_eq!(count("SELECT count(title) FROM matter"), titles_before, "own rows keep their columns");
    let explain = ok(d, None, &["policy", "explain", "--user", m, "--table", "matter"]);
    assert!(explain.contains("[columns: matter_id, stage, category, department, deleted]"), "{explain}");
    assert!(ok(d, None, &["share", "list"]).contains("(matter_id, stage, category, department)"));
}
