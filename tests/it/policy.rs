//! Cross-department permissions on analyst SQL (`lianqin sql --as USER`):
//! rows and columns a user may not see never leave the scan, unknown users
//! are refused, and every decision is audited.

use std::process::Command;

use lianqin_tests::lianqin_bin;

fn sql(dir: &std::path::Path, user: Option<&str>, q: &str) -> (bool, String, String) {
    let mut c = Command::new(lianqin_bin());
    c.args(["sql", "--format", "csv", "--data-dir"]).arg(dir);
    if let Some(u) = user {
        c.args(["--as", u]).env("LIANQIN_PASSWORD", lianqin_tests::demo_password(u));
    }
    let out = c.arg(q).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn n(csv: &str) -> i64 {
    csv.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(-1)
}

#[test]
fn departments_see_only_their_rows_and_masked_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(lianqin_bin()).args(["demo", "--once", "--data-dir"]).arg(d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let all = |q: &str| n(&sql(d, None, q).1);
    let persons = all("SELECT count(*) FROM element WHERE kind = 'person'");
    assert!(persons > 0);

    // Police analysts read every element, IDs in clear.
    let (ok, out, err) = sql(d, Some("wang.police"), "SELECT count(*) FROM element WHERE kind = 'person'");
    assert!(ok, "{err}");
    assert_eq!(n(&out), persons);

    // Market supervision: its own rows and units/places only — no persons.
    let (ok, out, err) = sql(d, Some("liu.market"), "SELECT count(*) FROM element WHERE kind = 'person'");
    assert!(ok, "{err}");
    assert_eq!(n(&out), 0);
    let units = all("SELECT count(*) FROM element WHERE kind = 'unit_place'");
    assert_eq!(n(&sql(d, Some("liu.market"), "SELECT count(*) FROM element").1), units);

    // Subqueries and functions only ever see masked values.
    let (ok, out, _) = sql(
        d,
        Some("chen.ecology"),
        "SELECT count(*) FROM element_history WHERE substr(id_value, 1, 6) IN (SELECT substr(id_value, 1, 6) FROM element_history WHERE kind = 'person')",
    );
    assert!(ok);
    assert_eq!(n(&out), 0, "person IDs leaked through a subquery");
    let (_, out, _) = sql(d, Some("chen.ecology"), "SELECT count(*) FROM element_history WHERE id_value LIKE '3305%'");
    assert_eq!(n(&out), 0, "masked IDs must not match predicates");

    // Unknown users are refused, and the refusal is audited.
    let (ok, _, err) = sql(d, Some("nobody"), "SELECT 1");
    assert!(!ok);
    assert!(err.contains("permission denied"), "{err}");
    // Raw records of other departments: the row filter admits none.
    let (ok, out, err) = sql(d, Some("liu.market"), "SELECT count(*) FROM raw_police_110");
    assert!(ok, "{err}");
    assert_eq!(n(&out), 0, "market read police raw data");
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut denials = 0;
    for s in lianqin_pipeline::audit::streams(d) {
        let f = lianqin_audit::AuditFilter { kind: Some(lianqin_audit::EventKind::Denial), ..Default::default() };
        denials += lianqin_audit::read(&s, &key, f).unwrap().count();
    }
    assert!(denials >= 1, "denials audited: {denials}");
}
