//! The hub's audit trail end to end: connector runs, quarantine decisions,
//! queries and audit reads are recorded, encrypted and verifiable with the
//! `lianqin audit` commands a security officer uses.

use std::process::Command;

use lianqin_audit::{AuditFilter, EventKind};
use lianqin_pipeline::demo;
use lianqin_sim::SimConfig;
use lianqin_tests::lianqin_bin;

fn small() -> SimConfig {
    SimConfig {
        incidents: 10,
        tickets: 5,
        enterprises: 5,
        cases: 5,
        env_files: 1,
        env_rows_per_file: 5,
        ..Default::default()
    }
}

/// One sync-and-process cycle of the demo hub against small simulated departments.
async fn one_demo_cycle(d: &std::path::Path) {
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    sim.shutdown().await;
}

fn events(d: &std::path::Path, kind: EventKind) -> Vec<lianqin_audit::AuditRecord> {
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let mut out = Vec::new();
    for s in lianqin_pipeline::audit::streams(d) {
        for r in lianqin_audit::read(&s, &key, AuditFilter { kind: Some(kind), ..Default::default() }).unwrap() {
            out.push(r.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_leaves_an_encrypted_verifiable_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    let truth = sim.truth();
    sim.shutdown().await;

    // Connector runs: one per source pass.
    let runs = events(d, EventKind::ConnectorRun);
    assert_eq!(runs.len(), 6, "{runs:?}");
    // Quarantine decisions: one per quarantined record, with its reason.
    let q = events(d, EventKind::Quarantine);
    assert_eq!(q.len(), truth.broken.len());
    assert!(q.iter().all(|r| r.event.detail["reason"].as_str().is_some_and(|s| !s.is_empty())));
    // Hub start is a config event.
    assert!(!events(d, EventKind::ConfigChange).is_empty());

    // A query through the CLI is recorded with user, SQL, tables and rows.
    let out = Command::new(lianqin_bin())
        .args(["sql", "--as", "wang.police", "--data-dir"])
        .arg(d)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("wang.police"))
        .arg("SELECT count(*) AS n FROM matter WHERE stage = 'intake'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queries = events(d, EventKind::Query);
    let mine: Vec<_> = queries.iter().filter(|r| r.event.user == "wang.police").collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].event.rows, Some(1));
    assert!(mine[0].event.tables.contains(&"matter_current".to_string()), "{:?}", mine[0].event.tables);
    assert!(mine[0].event.sql.as_deref().unwrap().contains("stage = 'intake'"));

    // The log holds no plaintext: the SQL text is not in any segment.
    for s in lianqin_pipeline::audit::streams(d) {
        for f in std::fs::read_dir(&s).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(!bytes.windows(14).any(|w| w == b"stage = 'intak"), "plaintext in {}", f.path().display());
        }
    }

    // Security officer: verify passes, search finds the query, and the
    // search itself is audited.
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    // Naming an auditor needs the auditor's password (as `sql --as`).
    let s = Command::new(lianqin_bin())
        .args(["audit", "search", "--as", "qian.audit", "--user", "wang.police", "--data-dir"])
        .arg(d)
        .env_remove("LIANQIN_PASSWORD")
        .output()
        .unwrap();
    assert!(!s.status.success());
    assert!(String::from_utf8_lossy(&s.stderr).contains("password"), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(!String::from_utf8_lossy(&s.stdout).contains("stage = 'intake'"));
    let s = Command::new(lianqin_bin())
        .args(["audit", "search", "--as", "qian.audit", "--user", "wang.police", "--data-dir"])
        .arg(d)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("qian.audit"))
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(String::from_utf8_lossy(&s.stdout).contains("stage = 'intake'"));
    let reads = events(d, EventKind::AuditRead);
    assert!(reads.iter().any(|r| r.event.user == "qian.audit"));

    // Tampering: flip one byte in the middle of the hub's first segment.
    let hub_stream = d.join("audit").join("demo-hub");
    let mut seg: Vec<_> = std::fs::read_dir(&hub_stream)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    seg.sort();
    let first = &seg[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(first, &bytes).unwrap();
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(!v.status.success());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("FAIL") && text.contains("demo-hub"), "{text}");

    // A wrong key gives a clear error and no plaintext.
    let bad = Command::new(lianqin_bin())
        .args(["audit", "search", "--data-dir"])
        .arg(d)
        .env("LIANQIN_AUDIT_KEY", "00".repeat(32))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(err.contains("key"), "{err}");
    assert!(!String::from_utf8_lossy(&bad.stdout).contains("wang.police"));
}

/// Runs `lianqin sql` (optionally `--as USER`, extra env) and returns (ok, stdout, stderr).
fn cli_sql(d: &std::path::Path, user: Option<&str>, env: &[(&str, &str)], query: &str) -> (bool, String, String) {
    let mut c = Command::new(lianqin_bin());
    c.arg("sql").arg("--format").arg("json").arg("--data-dir").arg(d);
    if let Some(u) = user {
        c.args(["--as", u]).env("LIANQIN_PASSWORD", lianqin_tests::demo_password(u));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.arg(query).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Issue 5 "every kind of event in 1 appears after the action that causes
/// it", and the `audit` table over SQL that only the auditor role may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_event_follows_its_action_and_only_auditors_read_the_audit_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    // Connector runs, quarantine decisions, the first config and policy versions.
    assert!(!events(d, EventKind::ConnectorRun).is_empty());
    assert!(!events(d, EventKind::Quarantine).is_empty());
    let cfg_changes = events(d, EventKind::ConfigChange);
    assert_eq!(cfg_changes.len(), 1, "{cfg_changes:?}");
    assert!(cfg_changes[0].event.detail["to"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(events(d, EventKind::PolicyChange).len(), 1);

    // Same config again: no change recorded. A changed config: one more.
    {
        let hub = demo::open_demo_hub(d, &sim).await.unwrap();
        hub.audit().sync();
    }
    assert_eq!(events(d, EventKind::ConfigChange).len(), 1, "unchanged config recorded as a change");
    {
        let text = demo::demo_config_toml(&sim, demo::DEMO_KEY_ENV)
            .replace("batch_max_records = 50000", "batch_max_records = 40000");
        let cfg = lianqin_pipeline::config::HubConfig::parse(&text, "changed.toml", &d.join("demo")).unwrap();
        let hub = lianqin_pipeline::hub::Hub::open(cfg, d).await.unwrap();
        hub.audit().sync();
    }
    let cfg_changes = events(d, EventKind::ConfigChange);
    assert_eq!(cfg_changes.len(), 2, "changed config not recorded");
    assert_eq!(cfg_changes[1].event.detail["from"], cfg_changes[0].event.detail["to"]);
    sim.shutdown().await;

    // A query: login, then the query with tables, columns, rows, masks,
    // row filters, the deciding rules and their version, and duration.
    let (ok, _, err) =
        cli_sql(d, Some("chen.ecology"), &[], "SELECT element_id, id_value FROM element_history WHERE kind = 'person'");
    assert!(ok, "{err}");
    let logins = events(d, EventKind::Login);
    assert!(
        logins.iter().any(|r| r.event.user == "chen.ecology" && r.event.outcome == lianqin_audit::Outcome::Success),
        "{logins:?}"
    );
    let q: Vec<_> = events(d, EventKind::Query).into_iter().filter(|r| r.event.user == "chen.ecology").collect();
    assert_eq!(q.len(), 1);
    let e = &q[0].event;
    assert_eq!(e.department, "ecology");
    assert_eq!(e.tables, vec!["element_history".to_string()]);
    assert!(e.columns.contains(&"element_history.id_value".to_string()), "{:?}", e.columns);
    assert!(e.masks.iter().any(|m| m.starts_with("element_history.id_value:")), "{:?}", e.masks);
    assert!(e.filters.iter().any(|f| f.starts_with("element_history:")), "{:?}", e.filters);
    assert!(e.rule.as_deref().unwrap().contains("policy.csv:"), "{:?}", e.rule);
    assert!(e.rule_version.as_deref().unwrap().starts_with("sha256:"));
    assert!(e.duration_ms.is_some() && e.rows.is_some() && e.session.is_some() && e.client_addr.is_some());
    assert!(!e.node.is_empty() && q[0].seq > 0);

    // A wrong password: a failed login (and a denial), no result.
    let (ok, _, _) = cli_sql(d, Some("chen.ecology"), &[("LIANQIN_PASSWORD", "wrong")], "SELECT 1");
    assert!(!ok);
    assert!(
        events(d, EventKind::Login)
            .iter()
            .any(|r| r.event.user == "chen.ecology" && r.event.outcome == lianqin_audit::Outcome::Failure)
    );
    let (ok, _, err) = cli_sql(d, Some("chen.ecology"), &[("LIANQIN_PASSWORD", "chen.ecology-demo")], "SELECT 1");
    assert!(ok, "{err}");

    // The audit table: police analysts, administrators and the unrestricted
    // local operator are refused (each refusal audited); the auditor reads it.
    let before = events(d, EventKind::Denial).len();
    for user in [Some("wang.police"), Some("sys.admin"), None] {
        let (ok, out, err) = cli_sql(d, user, &[], "SELECT * FROM audit");
        assert!(!ok, "{user:?} read the audit table: {out}");
        assert!(err.contains("permission denied"), "{user:?}: {err}");
        assert!(!out.contains("chen.ecology"));
    }
    let (ok, _, _) = cli_sql(d, Some("sys.admin"), &[], "CREATE TABLE copy AS SELECT * FROM audit");
    assert!(!ok, "an administrator copied the audit table");
    let denials = events(d, EventKind::Denial);
    assert!(denials.len() >= before + 4, "{} denials after {before}", denials.len());
    assert!(denials.iter().any(|r| r.event.user == "wang.police" && r.event.tables.contains(&"audit".to_string())));

    let (ok, out, err) = cli_sql(
        d,
        Some("qian.audit"),
        &[],
        "SELECT * FROM audit WHERE kind = 'query' AND \"user\" = 'chen.ecology' ORDER BY seq",
    );
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> =
        out.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!rows.is_empty(), "{out}");
    let r = &rows[0];
    for col in [
        "stream",
        "seq",
        "time",
        "node",
        "kind",
        "user",
        "department",
        "client",
        "session",
        "outcome",
        "rule",
        "policy_version",
        "sql",
        "tables",
        "columns",
        "rows",
        "masks",
        "filters",
        "duration_ms",
    ] {
        assert!(r.get(col).is_some(), "column {col} missing in {r}");
    }
    assert_eq!(r["department"], "ecology");
    assert!(r["sql"].as_str().unwrap().contains("kind = 'person'"));
    assert!(r["masks"].as_str().unwrap().contains("element_history.id_value:"));
    // Header-level pushdown (seq) gives the same rows as a full scan.
    let (_, out2, _) = cli_sql(
        d,
        Some("qian.audit"),
        &[],
        &format!("SELECT seq FROM audit WHERE seq = {} AND stream = '{}'", r["seq"], r["stream"].as_str().unwrap()),
    );
    assert!(out2.contains(&format!("\"seq\":{}", r["seq"])), "{out2}");
    // Reading the audit table is itself audited.
    let reads = events(d, EventKind::AuditRead);
    assert!(
        reads.iter().any(|x| x.event.user == "qian.audit"
            && x.event.sql.as_deref().is_some_and(|s| s.contains("FROM audit"))
            && x.event.rows == Some(rows.len() as u64)),
        "{reads:?}"
    );

    // A policy change (edited policy files) is recorded before they are used.
    let pol = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for f in ["model.conf", "policy.csv", "users.toml"] {
        std::fs::copy(src.join(f), pol.path().join(f)).unwrap();
    }
    let mut text = std::fs::read_to_string(pol.path().join("policy.csv")).unwrap();
    text.push_str("p, hotline_agent, hotline_12345, codes, *, read, *, allow\n");
    std::fs::write(pol.path().join("policy.csv"), text).unwrap();
    let sealed = std::process::Command::new(lianqin_tests::lianqin_bin())
        .args(["policy", "seal", "--dir"])
        .arg(pol.path())
        .output()
        .unwrap();
    assert!(sealed.status.success(), "{}", String::from_utf8_lossy(&sealed.stderr));
    let before = events(d, EventKind::PolicyChange).len();
    let (ok, _, err) =
        cli_sql(d, Some("chen.ecology"), &[("LIANQIN_POLICIES", pol.path().to_str().unwrap())], "SELECT 1");
    assert!(ok, "{err}");
    let pcs = events(d, EventKind::PolicyChange);
    assert_eq!(pcs.len(), before + 1);
    assert_ne!(pcs.last().unwrap().event.detail["from"], pcs.last().unwrap().event.detail["to"]);

    // An export: to whom (the destination), which records (tables, rows).
    let out_csv = d.join("export.csv");
    let x = Command::new(lianqin_bin())
        .args(["export", "--as", "chen.ecology", "--table", "matter", "--out"])
        .arg(&out_csv)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("chen.ecology"))
        .arg("--data-dir")
        .arg(d)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let exports = events(d, EventKind::Export);
    assert!(
        exports.iter().any(|r| r.event.user == "chen.ecology"
            && r.event.detail["destination"].as_str().is_some_and(|p| p.ends_with("export.csv"))
            && r.event.rows.is_some()),
        "{exports:?}"
    );

    // Only auditors may name themselves as readers of the audit trail.
    let s = Command::new(lianqin_bin())
        .args(["audit", "search", "--as", "wang.police", "--data-dir"])
        .arg(d)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("wang.police"))
        .output()
        .unwrap();
    assert!(!s.status.success());
    assert!(String::from_utf8_lossy(&s.stderr).contains("permission denied"));
    assert!(!String::from_utf8_lossy(&s.stdout).contains("chen.ecology"));

    // An exported subset with its proof checks out against the public key
    // alone; a tampered proof does not.
    let p = Command::new(lianqin_bin())
        .args([
            "audit",
            "prove",
            "--as",
            "qian.audit",
            "--stream",
            "demo-hub",
            "--from-seq",
            "2",
            "--to-seq",
            "5",
            "--data-dir",
        ])
        .arg(d)
        .env("LIANQIN_PASSWORD", lianqin_tests::demo_password("qian.audit"))
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let err = String::from_utf8_lossy(&p.stderr).to_string();
    let pk = err.rsplit(": ").next().unwrap().trim().to_string();
    let proof = d.join("proof.json");
    std::fs::write(&proof, &p.stdout).unwrap();
    let c = Command::new(lianqin_bin())
        .args(["audit", "check-proof", "--public-key", &pk, "--proof"])
        .arg(&proof)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(String::from_utf8_lossy(&c.stdout).lines().count(), 4);
    let mut doc: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    doc["to_seq"] = serde_json::json!(4);
    std::fs::write(&proof, serde_json::to_vec(&doc).unwrap()).unwrap();
    let c = Command::new(lianqin_bin())
        .args(["audit", "check-proof", "--public-key", &pk, "--proof"])
        .arg(&proof)
        .output()
        .unwrap();
    assert!(!c.status.success(), "tampered proof accepted");

    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// The replicated copy: what the shipper sends rebuilds streams that verify
/// with the crate's verifier; re-sending (a crash before the position was
/// saved) changes nothing; a later edit of the local log does not reach the
/// copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_audit_copy_verifies_and_survives_resends() {
    use lianqin_pipeline::audit_ship::{MemorySink, Shipper, mirror};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let audit = lianqin_pipeline::audit::Audit::open(d, "n1", "n1", std::time::Duration::from_secs(1)).unwrap();
    let sink = Arc::new(MemorySink::default());
    let shipper = Arc::new(Shipper::new(d, Arc::clone(&sink) as Arc<dyn lianqin_pipeline::audit_ship::AuditSink>));
    let ev = |i: u64| {
        let mut e = lianqin_audit::AuditEvent::new(
            EventKind::Query,
            format!("u{i}"),
            "police",
            lianqin_audit::Outcome::Success,
        );
        e.sql = Some(format!("SELECT {i}"));
        e
    };
    for i in 0..500 {
        audit.record(ev(i)).unwrap();
    }
    audit.sync();
    assert!(shipper.ship_once().await.unwrap() > 0);
    for i in 500..1200 {
        audit.record(ev(i)).unwrap();
    }
    audit.sync();
    assert!(shipper.ship_once().await.unwrap() > 0);
    assert_eq!(shipper.ship_once().await.unwrap(), 0, "nothing new, nothing sent");
    let key = audit.key().clone();
    let msgs: Vec<Vec<u8>> = sink
        .messages()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, "n1", "keyed by stream");
            v
        })
        .collect();
    // No plaintext on the topic.
    assert!(!msgs.iter().any(|m| m.windows(10).any(|w| w == b"SELECT 117")));
    let copy = tempfile::tempdir().unwrap();
    let streams = mirror(copy.path(), msgs.iter().map(|m| m.as_slice())).unwrap();
    assert_eq!(streams, vec!["n1".to_string()]);
    let r = lianqin_audit::verify(copy.path().join("audit").join("n1"), &key).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.entries, 1200);
    // Every prefix of the message stream verifies too (a consumer may stop anywhere).
    for cut in [1, msgs.len() / 3, msgs.len() / 2, msgs.len() - 1] {
        let c = tempfile::tempdir().unwrap();
        mirror(c.path(), msgs[..cut].iter().map(|m| m.as_slice())).unwrap();
        let p = c.path().join("audit").join("n1");
        if p.join("audit.header").exists()
            && std::fs::read_dir(&p).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        {
            let r = lianqin_audit::verify(&p, &key).unwrap();
            assert!(r.is_ok(), "prefix {cut}: {:?}", r.first_problem);
        }
    }
    // A crash before the position was saved: everything is sent again; the
    // copy is unchanged (dedup by stream, file, offset).
    drop(shipper);
    std::fs::remove_file(d.join("audit").join("n1.shipped")).unwrap();
    let again = Arc::new(Shipper::new(d, Arc::clone(&sink) as Arc<dyn lianqin_pipeline::audit_ship::AuditSink>));
    assert!(again.ship_once().await.unwrap() > 0);
    let all: Vec<Vec<u8>> = sink.messages().into_iter().map(|(_, v)| v).collect();
    let copy2 = tempfile::tempdir().unwrap();
    mirror(copy2.path(), all.iter().map(|m| m.as_slice())).unwrap();
    let r2 = lianqin_audit::verify(copy2.path().join("audit").join("n1"), &key).unwrap();
    assert!(r2.is_ok() && r2.entries == 1200, "{r2:?}");
    assert_eq!(r2.head, r.head);
}

/// With the Kafka bus on, the hub's audit trail is replicated to
/// `<prefix>audit` (acks=all, idempotent) and `lianqin audit verify
/// --from-kafka` verifies the copy read back from the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_topic_on_kafka_verifies() {
    let Some(brokers) = lianqin_tests::require_service("LIANQIN_KAFKA_BROKERS") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = demo::start_simulation(d, small()).await.unwrap();
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("t{n}.");
    let text = lianqin_tests::kafka_config(&sim, &brokers, &prefix);
    let conf_path = d.join("hub.toml");
    std::fs::write(&conf_path, &text).unwrap();
    let conf = lianqin_pipeline::config::HubConfig::load(&conf_path).unwrap();
    let entries;
    {
        let hub = lianqin_pipeline::hub::Hub::open(conf, d).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        // Flush what is left; the background shipper may already have sent
        // everything (then this sends 0). That the copy on the broker holds
        // the whole stream is checked below (mirror + verify).
        hub.audit().ship_now().await.unwrap();
        entries = hub.audit().log().last_seq();
    }
    sim.shutdown().await;
    let v = Command::new(lianqin_bin())
        .args(["audit", "verify", "--from-kafka"])
        .arg(&conf_path)
        .arg("--data-dir")
        .arg(d)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(v.status.success(), "{out}{}", String::from_utf8_lossy(&v.stderr));
    assert!(out.contains("from the audit topic") && out.contains("ok   demo-hub"), "{out}");
    // The copy holds every entry shipped (the hub's whole stream at ship time).
    let copy = tempfile::tempdir().unwrap();
    let m = Command::new(lianqin_bin())
        .args(["audit", "mirror", "--config"])
        .arg(&conf_path)
        .arg("--out")
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let key = lianqin_pipeline::audit::master_key(d, false).unwrap();
    let r = lianqin_audit::verify(copy.path().join("audit").join("demo-hub"), &key).unwrap();
    assert!(r.is_ok(), "{:?}", r.first_problem);
    assert!(r.entries >= entries, "{} < {entries}", r.entries);
}

/// The GM/T suite (SM4-GCM, SM3, SM2) for a stream, chosen when it is
/// created (`LIANQIN_AUDIT_SUITE=gm`); reopening keeps it whatever the
/// setting, and `lianqin audit verify` checks it.
#[test]
fn gm_suite_stream_is_kept_and_verifies() {
    use lianqin_audit::CryptoSuite;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wait = std::time::Duration::from_secs(1);
    {
        let a = lianqin_pipeline::audit::Audit::open_with_suite(d, "gm", "gm", wait, CryptoSuite::Gm).unwrap();
        assert_eq!(a.log().suite(), CryptoSuite::Gm);
        for i in 0..20 {
            a.record(lianqin_audit::AuditEvent::new(
                EventKind::Query,
                format!("u{i}"),
                "police",
                lianqin_audit::Outcome::Success,
            ))
            .unwrap();
        }
        a.sync();
    }
    {
        let a = lianqin_pipeline::audit::Audit::open_with_suite(d, "gm", "gm", wait, CryptoSuite::Standard).unwrap();
        assert_eq!(a.log().suite(), CryptoSuite::Gm, "an existing stream keeps its suite");
        a.record(lianqin_audit::AuditEvent::new(EventKind::Query, "u20", "police", lianqin_audit::Outcome::Success))
            .unwrap();
        a.sync();
    }
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success() && out.contains("21 entries"), "{out}");
}

/// `[audit] suite = "gm"` in the hub config picks the GM/T suite for the
/// hub's new stream; an unknown suite fails at start-up naming the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_suite_chosen_in_hub_config() {
    use lianqin_audit::CryptoSuite;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = lianqin_pipeline::config::HubConfig::parse("node = \"gmnode\"\n[audit]\nsuite = \"gm\"\n", "gm.toml", d)
        .unwrap();
    {
        let hub = lianqin_pipeline::hub::Hub::open(cfg, d).await.unwrap();
        assert_eq!(hub.audit().log().suite(), CryptoSuite::Gm);
    }
    let v = Command::new(lianqin_bin()).args(["audit", "verify", "--data-dir"]).arg(d).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let err = lianqin_pipeline::config::HubConfig::parse("[audit]\nsuite = \"sm9\"\n", "bad.toml", d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.toml") && err.contains("line 2") && err.contains("sm9"), "{err}");
}

/// Runs `lianqin audit verify` (optionally `--anchor`) and returns (ok, stdout + stderr).
fn cli_verify(d: &std::path::Path, anchor: Option<&std::path::Path>) -> (bool, String) {
    let mut c = Command::new(lianqin_bin());
    c.args(["audit", "verify", "--data-dir"]).arg(d);
    if let Some(a) = anchor {
        c.arg("--anchor").arg(a);
    }
    let o = c.output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// A copy of a data dir (the audit trail and its key) to tamper with.
fn copy_dir(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to.path()).status().unwrap();
    assert!(st.success());
    to
}

/// Deleting a whole stream, or cutting a stream's last entries together with
/// its `checkpoints.log`, fails `lianqin audit verify` with the reason (the
/// signed stream registry); an anchor kept outside the data dir catches a
/// rollback of the whole audit directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_streams_and_cut_tails_fail_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    one_demo_cycle(d).await;
    let (ok, _, err) = cli_sql(d, Some("wang.police"), &[], "SELECT count(*) FROM matter");
    assert!(ok, "{err}");
    let streams: Vec<_> = lianqin_pipeline::audit::streams(d);
    assert!(streams.len() >= 2, "hub and CLI streams: {streams:?}");
    let (ok, text) = cli_verify(d, None);
    assert!(ok, "{text}");

    // An anchor outside the data dir, taken now.
    let outside = tempfile::tempdir().unwrap();
    let anchor = outside.path().join("anchor.json");
    let a = Command::new(lianqin_bin())
        .args(["audit", "anchor", "--data-dir"])
        .arg(d)
        .arg("--out")
        .arg(&anchor)
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let (ok, text) = cli_verify(d, Some(&anchor));
    assert!(ok, "{text}");

    // 1. A whole stream directory deleted.
    let gone = copy_dir(d);
    let victim = streams.iter().find(|s| !s.ends_with("demo-hub")).unwrap().file_name().unwrap().to_owned();
    std::fs::remove_dir_all(gone.path().join("audit").join(&victim)).unwrap();
    let (ok, text) = cli_verify(gone.path(), None);
    assert!(!ok, "a deleted stream passed verify:\n{text}");
    assert!(text.contains(&*victim.to_string_lossy()), "the report names the stream: {text}");

    // 2. The hub stream's last entries cut together with checkpoints.log.
    let cut = copy_dir(d);
    let hub_stream = cut.path().join("audit").join("demo-hub");
    let mut segs: Vec<_> = std::fs::read_dir(&hub_stream)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(len / 2).unwrap();
    std::fs::remove_file(hub_stream.join("checkpoints.log")).unwrap();
    let (ok, text) = cli_verify(cut.path(), None);
    assert!(!ok, "cut entries + removed checkpoints.log passed verify:\n{text}");
    assert!(text.contains("demo-hub"), "{text}");
    let (ok, _) = cli_verify(cut.path(), Some(&anchor));
    assert!(!ok);

    // 3. The whole audit dir rolled back to an earlier copy: only the anchor sees it.
    let before = copy_dir(d);
    let (ok, err) = {
        let (ok, _, err) = cli_sql(d, Some("wang.police"), &[], "SELECT count(*) FROM element");
        (ok, err)
    };
    assert!(ok, "{err}");
    let later = outside.path().join("later.json");
    let a = Command::new(lianqin_bin())
        .args(["audit", "anchor", "--data-dir"])
        .arg(d)
        .arg("--out")
        .arg(&later)
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let (ok, text) = cli_verify(before.path(), Some(&later));
    assert!(!ok, "a rolled-back audit dir passed verify with a newer anchor:\n{text}");
}
