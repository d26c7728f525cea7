//! The `lianqin` command line as a newcomer uses it: config checking with
//! errors that name the line, the demo, and SQL over the result.

use std::process::Command;

use lianqin_tests::lianqin_bin;

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn example_config_checks_and_bad_config_names_the_line() {
    let example = repo_root().join("lianqin.example.toml");
    let out = Command::new(lianqin_bin())
        .args(["check", "--config"])
        .arg(&example)
        .env("POLICE_110_API_KEY", "test-key")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("are valid"));

    // Without the secret in the environment, start-up fails and says which variable.
    let out = Command::new(lianqin_bin())
        .args(["check", "--config"])
        .arg(&example)
        .env_remove("POLICE_110_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("POLICE_110_API_KEY"));

    // A misspelt key: the error names the file, the line and the key.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("hub.toml");
    std::fs::write(&bad, "[pipeline]\ngroup = \"g\"\nbatch_max_record = 10\n").unwrap();
    let out = Command::new(lianqin_bin()).args(["check", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hub.toml line 3") && err.contains("batch_max_record"), "{err}");

    // A mapping whose SQL selects a column the library does not have.
    let mapping = dir.path().join("m.toml");
    std::fs::write(
        &mapping,
        "name = \"m\"\nversion = \"1\"\n[fields]\nid = \"utf8\"\n[[outputs]]\nlibrary = \"matter\"\nsql = \"SELECT _row, id AS matter_id, id AS colour FROM raw\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("ok.toml");
    std::fs::write(
        &cfg,
        "[[sources]]\nid = \"s\"\ndepartment = \"police\"\nmapping = \"m.toml\"\n[sources.connector]\ntype = \"file\"\ndir = \"/tmp\"\nkey_columns = [\"id\"]\n",
    )
    .unwrap();
    let out = Command::new(lianqin_bin()).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("colour") && err.contains("not in library `matter`"), "{err}");
}

#[test]
fn demo_once_then_sql() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(lianqin_bin()).args(["demo", "--once", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["生态要素库", "生态联勤事项库", "隔离区", "missing key field `jjdbh`", "lianqin sql --data-dir"]
    {
        assert!(text.contains(want), "demo output lacks {want}:\n{text}");
    }
    let out = Command::new(lianqin_bin())
        .args(["sql", "--format", "csv", "--data-dir"])
        .arg(dir.path())
        .arg("SELECT count(*) AS n FROM element WHERE id_type = 'uscc'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    let n: i64 = csv.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(n > 0);
    // Compaction keeps every row and every version readable.
    let before = |sql: &str| {
        let out = Command::new(lianqin_bin())
            .args(["sql", "--format", "csv", "--data-dir"])
            .arg(dir.path())
            .arg(sql)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let q = "SELECT count(*) AS n, count(DISTINCT content_hash) AS h FROM matter_history";
    let b = before(q);
    let out = Command::new(lianqin_bin()).args(["compact", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(before(q), b);
    // A bad query is a clear error, not a crash.
    let out = Command::new(lianqin_bin())
        .args(["sql", "--data-dir"])
        .arg(dir.path())
        .arg("SELECT nope FROM element")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
