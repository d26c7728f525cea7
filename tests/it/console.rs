//! The web console (issue 15) in a real browser: Debian's Chromium driven by
//! Playwright for Python (`tests/browser/console.py`, one step per call)
//! against `lianqin run` with `[console]`, fed by the simulated department
//! systems over HTTP and a drop folder.
//!
//! * the police IT user sees `police_110` go red while the simulator answers
//!   500 and turn green when it recovers;
//! * a mapping that fails at run time quarantines 5 of 500 records; after
//!   the fix (new mapping, hub restarted after a SIGKILL) the IT user replays
//!   them in the browser and they land exactly once;
//! * reconciliation balances raw, libraries and quarantine per day, and the
//!   110 API's own totals match what its connector published, the drop
//!   file's line count what its reader went through;
//! * an analyst sees only permitted rows and masked columns, downloads CSV,
//!   the map; an auditor finds those queries, and every stream verifies;
//! * a POST without the CSRF token, from another origin, with a foreign or a
//!   logged-out session's cookie is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lianqin_tests::{count, in_ci, lianqin_bin, try_engine, wait_until};

/// `count`, or -1 while the tables are not there yet.
async fn try_count(d: &Path, sql: &str) -> i64 {
    match try_engine(d).await {
        Ok(e) => e.scalar_i64(sql).await.unwrap_or(-1),
        Err(_) => -1,
    }
}

fn mapping(version: &str, note: &str) -> String {
    lianqin_tests::poison_mapping("police_drop", version, note)
}

/// Is the browser there? Under CI its absence is a failure.
fn browser_available() -> bool {
    let chromium = Path::new("/usr/bin/chromium").exists();
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if chromium && playwright {
        return true;
    }
    let why = format!("browser tests need /usr/bin/chromium ({chromium}) and Playwright for Python ({playwright})");
    if in_ci() {
        panic!("{why} but CI=true: tests/run.sh installs both; this test must not pass without them");
    }
    eprintln!("\n!!!!! SKIPPED: {why} (tests/run.sh installs both) !!!!!\n");
    false
}

/// Runs one browser step; panics with its output (and the hub log) when it fails.
fn step(url: &str, d: &Path, name: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser").join("console.py");
    let shot = d.join(format!("{name}.png"));
    let out = Command::new("python3")
        .arg(&script)
        .arg(name)
        .args(args)
        .env("LIANQIN_CONSOLE_URL", url)
        .env("LIANQIN_SCREENSHOT", &shot)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "browser step `{name}` failed:\n{}\n{}\nscreenshot: {}\nhub log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shot.display(),
        std::fs::read_to_string(d.join("hub.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

fn start_hub(config: &Path, data: &Path, d: &Path, key: &str) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("hub.log")).unwrap();
    Command::new(lianqin_bin())
        .args(["run", "--demo-users", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("LIANQIN_POLICIES")
        .env(lianqin_pipeline::demo::DEMO_KEY_ENV, key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lianqin run")
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_serves_it_teams_analysts_and_auditors() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim_cfg =
        lianqin_sim::SimConfig { incidents: 120, tickets: 120, enterprises: 60, cases: 60, ..Default::default() };
    let sim = lianqin_sim::start(sim_cfg, &d.join("env-drop")).await.unwrap();
    // The department systems are down from the start.
    sim.set_outage(true);
    let drop: PathBuf = d.join("police-drop");
    std::fs::create_dir_all(&drop).unwrap();
    lianqin_tests::drop_lines(&drop, "a.jsonl", 0..500, |i| i % 100 == 7);
    let m = d.join("police_drop.toml");
    std::fs::write(&m, mapping("1", lianqin_tests::POISON_STRICT)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = d.join("hub.toml");
    let hub_toml = format!(
        r#"{demo}
[[sources]]
id = "police_drop"
department = "police"
mapping = "{m}"
interval_secs = 1
[sources.connector]
type = "file"
dir = "{drop}"
format = "jsonl"
key_columns = ["id"]

[console]
listen = "127.0.0.1:{port}"
"#,
        demo = lianqin_pipeline::demo::demo_config_toml(&sim, lianqin_pipeline::demo::DEMO_KEY_ENV),
        m = m.display(),
        drop = drop.display(),
    );
    std::fs::write(&config, hub_toml).unwrap();
    let data = d.join("data");
    let key = sim.config().api_key.clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut hub = start_hub(&config, &data, d, &key);

    // 1. The failing source is red for its department's IT user …
    let landed = wait_until(Duration::from_secs(120), || async {
        try_count(&data, "SELECT count(*) FROM quarantine WHERE source_id = 'police_drop'").await == 5
            && try_count(&data, "SELECT count(*) FROM matter_event_history WHERE source_id = 'police_drop'").await
                == 495
    })
    .await;
    if !landed {
        kill(hub);
        panic!("police_drop did not land: {}", std::fs::read_to_string(d.join("hub.log")).unwrap_or_default());
    }
    step(&url, d, "sources_failing", &["police_110"]);
    // … and green again once the system answers.
    sim.set_outage(false);
    step(&url, d, "sources_recovered", &["police_110"]);
    assert!(count(&data, "SELECT count(*) FROM raw_police_110").await > 0, "police_110 records landed after recovery");

    // 2. Quarantine by reason with the raw record; fix the mapping (a
    //    deployment: the hub is killed and started with the new version);
    //    replay in the browser; the records land once.
    step(&url, d, "quarantine_open", &["police_drop", "5"]);
    let _ = hub.kill();
    let _ = hub.wait();
    std::fs::write(&m, mapping("2", lianqin_tests::POISON_FIXED)).unwrap();
    hub = start_hub(&config, &data, d, &key);
    step(&url, d, "replay", &["police_drop", "5"]);
    let all = count(&data, "SELECT count(*) FROM matter_event_history WHERE source_id = 'police_drop'").await;
    let distinct =
        count(&data, "SELECT count(DISTINCT source_key) FROM matter_event_history WHERE source_id = 'police_drop'")
            .await;
    assert_eq!((all, distinct), (500, 500), "every record landed once");
    assert_eq!(
        count(&data, "SELECT count(*) FROM matter_event_history WHERE source_id = 'police_drop' AND note = '101' AND source_key <> 'r100'").await,
        5,
        "the replayed records went through the fixed mapping"
    );
    assert_eq!(
        count(&data, "SELECT count(*) FROM quarantine WHERE source_id = 'police_drop'").await,
        5,
        "nothing is removed from quarantine"
    );

    step(&url, d, "reconcile", &["police_110", "police_drop", "500"]);

    // 3. Analysts, auditors, refusals.
    step(&url, d, "analyst", &[]);
    step(&url, d, "auditor", &["chen.ecology"]);
    step(&url, d, "csrf", &[]);

    // 4. Sharing in the browser: the ecology analyst asks the police for a
    //    category it cannot read, limited to four columns; the police
    //    approver approves; the grant is in force for her queries.
    let police = |cat: &str| format!("SELECT count(*) FROM matter WHERE department = 'police' AND category = '{cat}'");
    let mut cat = None;
    for c in ["c", "e", "d"] {
        if count(&data, &police(c)).await > 0
            && lianqin_tests::secured_count(&data, "chen.ecology", &police(c)).await == 0
        {
            cat = Some(c);
            break;
        }
    }
    let cat = cat.expect("police matters the ecology analyst may not read");
    step(&url, d, "sharing", &[cat]);
    let all = count(&data, &police(cat)).await;
    assert_eq!(lianqin_tests::secured_count(&data, "chen.ecology", &police(cat)).await, all, "the grant is in force");
    let titles = police(cat).replace("count(*)", "count(title)");
    assert_eq!(lianqin_tests::secured_count(&data, "chen.ecology", &titles).await, 0, "only the asked columns");
    kill(hub);
    sim.shutdown().await;

    // Every login and action is in the console's audit stream (one per node).
    let key = lianqin_pipeline::audit::master_key(&data, false).unwrap();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut replayed = false;
    let mut shared = std::collections::BTreeSet::new();
    for r in
        lianqin_audit::read(data.join("audit").join("console-demo-hub"), &key, lianqin_audit::AuditFilter::default())
            .unwrap()
    {
        let r = r.unwrap();
        *kinds.entry(r.event.kind.as_str().to_string()).or_default() += 1;
        replayed |= r.event.detail["action"] == "replay" && r.event.user == "xu.ops";
        if let Some(a) = r.event.detail["action"].as_str().filter(|a| a.starts_with("share_")) {
            shared.insert(format!("{a} {}", r.event.user));
        }
    }
    assert!(replayed, "the replay is audited with its operator: {kinds:?}");
    assert!(
        shared.contains("share_request chen.ecology") && shared.contains("share_approve wang.police"),
        "sharing steps audited with both people: {shared:?}"
    );
    for k in ["login", "query", "denial", "export", "audit_read"] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no `{k}` entry from the console: {kinds:?}");
    }
}
