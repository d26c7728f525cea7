//! Record confirmation — 效力互认 (issue 16 item 2): a department signs the
//! version of a matter it confirms; `lianqin confirm verify` checks every
//! signature; a tampered entry, a foreign key and a confirmation of an older
//! version fail; the `matter_confirmation` table shows each with `current`
//! and is filtered by the reader's policy.

use std::path::Path;

use lianqin_pipeline::confirm::{self, MatterVersion};
use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;

fn small() -> SimConfig {
    SimConfig {
        incidents: 30,
        tickets: 30,
        enterprises: 5,
        cases: 5,
        env_files: 1,
        env_rows_per_file: 5,
        ..Default::default()
    }
}

use lianqin_tests::{cli_ok as ok, cli_refused as refused, cli_run as run, cli_text as text};

fn csv(d: &Path, user: Option<&str>, sql: &str) -> Vec<String> {
    let mut args = vec!["sql", "--format", "csv"];
    if let Some(u) = user {
        args.extend(["--as", u]);
    }
    args.push(sql);
    ok(d, user, &args).lines().skip(1).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_confirm_versions_and_signatures_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
    }
    sim.shutdown().await;
    let police: Vec<String> =
        csv(d, None, "SELECT matter_id FROM matter WHERE department = 'police' ORDER BY matter_id LIMIT 2");
    assert_eq!(police.len(), 2, "the demo has police matters");
    let (a, b) = (police[0].as_str(), police[1].as_str());

    let key = dir.path().join("police.key");
    let key_s = key.to_str().unwrap();
    ok(d, None, &["confirm", "keygen", "--department", "police", "--out", key_s]);
    refused(d, None, &["confirm", "keygen", "--department", "police", "--out", key_s], "never overwritten");
    refused(d, None, &["confirm", "keygen", "--department", "nobody", "--out", "/tmp/x.key"], "not in code table");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The police analyst confirms matter a; an ecology analyst cannot use
    // the police key (nor read a police matter outside their categories).
    ok(d, Some("wang.police"), &["confirm", "record", "--as", "wang.police", "--key", key_s, "--note", "已核实", a]);
    let o = run(d, Some("chen.ecology"), &["confirm", "record", "--as", "chen.ecology", "--key", key_s, a]);
    assert!(!o.status.success(), "{}", text(&o));
    refused(
        d,
        Some("wang.police"),
        &["confirm", "record", "--as", "wang.police", "--key", key_s, "110:does-not-exist"],
        "no matter",
    );

    assert!(ok(d, None, &["confirm", "verify"]).contains("1 confirmation(s): every signature verifies"));
    assert!(ok(d, None, &["confirm", "verify", "--matter", a]).contains("confirmed by wang.police of police"));
    refused(d, None, &["confirm", "verify", "--matter", b], "no department has confirmed");
    let rows =
        csv(d, None, &format!("SELECT current, confirmed_by, note FROM matter_confirmation WHERE matter_id = '{a}'"));
    assert_eq!(rows, vec!["true,wang.police,已核实".to_string()]);

    // Matter b confirmed in a version that is no longer its current one.
    let k = confirm::read_key(&key).unwrap();
    let old = MatterVersion {
        matter_id: b.to_string(),
        content_hash: "0123456789abcdef0123456789abcdef".into(),
        department: Some("police".into()),
        ..Default::default()
    };
    confirm::sign_and_append(d, old, "police", "wang.police", None, &k).unwrap();
    ok(d, None, &["confirm", "verify"]);
    refused(d, None, &["confirm", "verify", "--matter", b], "older version");
    let rows = csv(d, None, &format!("SELECT current FROM matter_confirmation WHERE matter_id = '{b}'"));
    assert_eq!(rows, vec!["false".to_string()]);

    // Policy: the market analyst reads no police matter, so no police confirmation.
    assert!(csv(d, Some("liu.market"), "SELECT matter_id FROM matter_confirmation").is_empty());
    assert_eq!(csv(d, Some("wang.police"), "SELECT count(*) FROM matter_confirmation"), vec!["2".to_string()]);

    // Tampering with the journal is found, naming the line.
    let j = confirm::journal_path(d);
    let good = std::fs::read_to_string(&j).unwrap();
    std::fs::write(&j, good.replacen("已核实", "未核实", 1)).unwrap();
    refused(d, None, &["confirm", "verify"], "confirmations.jsonl:1:");
    refused(d, None, &["confirm", "verify", "--matter", a], "none of its 1 confirmation(s) verifies");
    std::fs::write(&j, &good).unwrap();
    ok(d, None, &["confirm", "verify"]);

    // Audited: the key and the confirmation.
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut actions = Vec::new();
    for st in lianqin_pipeline::audit::streams(d) {
        for r in lianqin_audit::read(&st, &key, Default::default()).unwrap() {
            if let Some(a) = r.unwrap().event.detail.get("action").and_then(|v| v.as_str()) {
                actions.push(a.to_string());
            }
        }
    }
    assert_eq!(actions.iter().filter(|a| *a == "confirm_keygen").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "confirm_record").count(), 1, "{actions:?}");
}
