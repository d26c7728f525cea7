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

/// A user's mistake is a message and a non-zero exit, never a stack
/// backtrace — also with `RUST_BACKTRACE=1` in the environment.
#[test]
fn mistakes_print_the_message_not_a_backtrace() {
    let no_backtrace = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains("stack backtrace") && !err.contains("Backtrace"), "{err}");
        assert!(err.contains("error: "), "{err}");
        err
    };
    let dir = tempfile::tempdir().unwrap();

    // Bad SQL (over an empty data dir: the libraries need not exist for the parser to refuse it).
    std::fs::create_dir_all(dir.path().join("lake")).unwrap();
    let out = Command::new(lianqin_bin())
        .args(["sql", "--data-dir"])
        .arg(dir.path())
        .arg("SELEKT nope FROM element")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = no_backtrace(&out);
    assert!(err.contains("SELEKT"), "{err}");

    // A bad config: the message names the file, the line and the key.
    let bad = dir.path().join("hub.toml");
    std::fs::write(&bad, "[pipeline]\ngroup = \"g\"\nbatch_max_record = 10\n").unwrap();
    let out =
        Command::new(lianqin_bin()).args(["check", "--config"]).arg(&bad).env("RUST_BACKTRACE", "1").output().unwrap();
    let err = no_backtrace(&out);
    assert!(err.contains("hub.toml line 3") && err.contains("batch_max_record"), "{err}");

    // An unknown user.
    let out = Command::new(lianqin_bin())
        .args(["sql", "--as", "nobody.here", "--data-dir"])
        .arg(dir.path())
        .arg("SELECT 1")
        .env("RUST_BACKTRACE", "full")
        .env_remove("LIANQIN_PASSWORD")
        .output()
        .unwrap();
    let err = no_backtrace(&out);
    assert!(err.contains("unknown user `nobody.here`"), "{err}");

    // A bad option value is refused by the argument parser, naming the choices.
    let out = Command::new(lianqin_bin())
        .args(["export", "--as", "liu.market", "--table", "element", "--format", "xlsx", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xlsx") && err.contains("csv") && err.contains("jsonl"), "{err}");
}
