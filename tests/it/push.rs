//! Flows pushed into the departments' own systems (`[flows.push]`): a
//! signed HTTP endpoint that goes down and comes back, a `lianqin flow push`
//! killed with SIGKILL mid-delivery, upserts into a department's
//! PostgreSQL and MariaDB tables (real servers, read back with their own
//! clients), the department's bus topic, and the signed daily
//! reconciliation receipt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::demo;
use lianqin_pipeline::flows::{push, receipt};
use lianqin_pipeline::hub::Hub;
use lianqin_sim::SimConfig;
use lianqin_tests::{audit_events, citizen_ids, cli_text, lianqin_bin, phones, secured_count};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "push-test-secret-0123456789";

fn small() -> SimConfig {
    SimConfig {
        incidents: 40,
        tickets: 30,
        enterprises: 25,
        cases: 20,
        env_files: 2,
        env_rows_per_file: 15,
        ..Default::default()
    }
}

/// One request the department endpoint received.
#[derive(Debug, Clone)]
struct Got {
    delivery: String,
    body: Vec<u8>,
    events: Vec<Value>,
}

/// A department's HTTP endpoint: checks the signature independently (HMAC
/// over `<timestamp>.<body>`), can be down (503) or slow.
#[derive(Default)]
struct Endpoint {
    down: AtomicBool,
    refused: AtomicUsize,
    delay_ms: AtomicU64,
    bad_signatures: AtomicUsize,
    got: Mutex<Vec<Got>>,
}

async fn receive(
    axum::extract::State(ep): axum::extract::State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(h("X-Timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let want = format!("sha256={}", hex_of(&mac.finalize().into_bytes()));
    if h("X-Signature") != want {
        ep.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "{\"error\":\"bad signature\"}".into());
    }
    if ep.down.load(Ordering::SeqCst) {
        ep.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"down for maintenance\"}".into());
    }
    let d = ep.delay_ms.load(Ordering::SeqCst);
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
    let events: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{{\"error\":\"{e}\"}}")),
    };
    let n = events.len();
    let mut got = ep.got.lock().unwrap();
    got.push(Got { delivery: h("Idempotency-Key"), body: body.to_vec(), events });
    (StatusCode::OK, format!("{{\"accepted\":{n},\"receipt\":\"eco-{}\"}}", got.len()))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn endpoint() -> (String, Arc<Endpoint>) {
    let ep = Arc::new(Endpoint::default());
    let app = axum::Router::new().route("/hooks/lianqin", axum::routing::post(receive)).with_state(Arc::clone(&ep));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/lianqin", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, ep)
}

/// `lianqin` with the demo API key the config refers to.
fn lianqin(key: &str) -> Command {
    let mut c = Command::new(lianqin_bin());
    c.env(demo::DEMO_KEY_ENV, key);
    c
}

/// A demo hub config with `flow` appended, written to `<d>/demo/push.toml`.
fn write_config(d: &Path, sim: &lianqin_sim::Simulation, flow: &str) -> (PathBuf, HubConfig) {
    let text = demo::demo_config_toml(sim, demo::DEMO_KEY_ENV) + "\n" + flow;
    let cfg_dir = d.join("demo");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let path = cfg_dir.join("push.toml");
    std::fs::write(&path, &text).unwrap();
    (path.clone(), HubConfig::parse(&text, "push.toml", &cfg_dir).unwrap())
}

fn http_flow(url: &str, rows: usize) -> String {
    format!(
        "[[flows]]\nname = \"to-ecology\"\nuser = \"chen.ecology\"\nlibraries = [\"element\", \"matter\"]\n\
         sink = \"flows/ecology.jsonl\"\ntopic = \"feeds.ecology\"\n\
         [flows.push]\ntype = \"http\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nbatch_rows = {rows}\n"
    )
}

/// The outbox `flows/<name>` of flow `to-<name without .jsonl>`, opened.
fn outbox(d: &Path, name: &str) -> Vec<String> {
    lianqin_tests::outbox_lines(d, &format!("to-{}", name.trim_end_matches(".jsonl")), name)
}

/// (library, id, content_hash) of an event.
fn ident(ev: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    (s(&ev["library"]), s(&ev["id"]), s(&ev["row"]["content_hash"]))
}

/// The China day of the first event (the receipts' day).
fn day_of(ev: &Value) -> chrono::NaiveDate {
    let t = chrono::DateTime::parse_from_rfc3339(ev["committed_at"].as_str().expect("committed_at")).unwrap();
    t.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_push_carries_only_the_accounts_rows_survives_an_outage_and_balances() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = small();
    let key = sc.api_key.clone();
    let sim = demo::start_simulation(d, sc).await.unwrap();
    let (url, ep) = endpoint().await;
    let (_, cfg) = write_config(d, &sim, &http_flow(&url, 7));
    let flows = cfg.flows.clone();
    let hub = Hub::open(cfg, d).await.unwrap();
    demo::cycle(&hub).await.unwrap();
    let lines = outbox(d, "ecology.jsonl");
    assert!(lines.len() > 14, "the flow wrote {} events", lines.len());
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();

    // The department's own topic carries the same events.
    let offsets = hub.bus().end_offsets("lianqin.feeds.ecology").await.unwrap();
    assert_eq!(offsets.iter().sum::<u64>(), lines.len() as u64, "feeds.ecology holds every event once");
    hub.audit().sync();
    drop(hub);

    // The department is down: nothing is acknowledged, the cursor stays.
    ep.down.store(true, Ordering::SeqCst);
    let policy = lianqin_pipeline::flows::load_policies(d).await.unwrap();
    let audit = lianqin_pipeline::audit::Audit::open(d, "push-test", "push-test", Duration::from_secs(3)).unwrap();
    let mut pushers = push::open_all(&flows, d, &policy, &audit).unwrap();
    assert_eq!(pushers.len(), 1);
    let mut p = pushers.pop().unwrap();
    for _ in 0..3 {
        let e = p.step().await.unwrap_err().to_string();
        assert!(e.contains("503") && e.contains("down for maintenance"), "{e}");
    }
    assert_eq!(p.cursor().unwrap(), 0);
    // A second pusher of the same flow is refused while this one runs.
    let e = push::open_all(&flows, d, &policy, &audit).unwrap_err().to_string();
    assert!(e.contains("another process is pushing"), "{e}");

    // Before any delivery the receipt shows the account's rows not sent.
    let day = day_of(&events[0]);
    let r0 = receipt::make(&flows[0], d, day, &audit).await.unwrap();
    assert!(!r0.balanced, "{r0:?}");
    assert!(r0.libraries["matter"].held.rows > 0 && r0.libraries["matter"].acknowledged.as_ref().unwrap().rows == 0);

    // Back up: everything arrives, once, in outbox order, signed.
    ep.down.store(false, Ordering::SeqCst);
    let n = p.drain().await.unwrap();
    assert_eq!(n, lines.len() as u64);
    let got = ep.got.lock().unwrap().clone();
    assert_eq!(ep.bad_signatures.load(Ordering::SeqCst), 0);
    let received: Vec<Value> = got.iter().flat_map(|g| g.events.clone()).collect();
    assert_eq!(received, events, "the endpoint received exactly the outbox, in order");
    assert_eq!(got.len(), lines.len().div_ceil(7));
    let keys: BTreeSet<&str> = got.iter().map(|g| g.delivery.as_str()).collect();
    assert_eq!(keys.len(), got.len(), "each delivery has its own id");

    // Only what chen.ecology may see, and no clear personal data.
    let mut per_lib: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for ev in &received {
        per_lib.entry(ev["library"].as_str().unwrap().to_string()).or_default().insert(ident(ev));
        if ev["library"] == "matter" {
            let r = &ev["row"];
            assert!(
                r["category"] == "a" || r["category"] == "b" || r["department"] == "ecology",
                "matter leaked to ecology: {r}"
            );
        }
    }
    for lib in ["element", "matter"] {
        let want = secured_count(d, "chen.ecology", &format!("SELECT count(*) FROM {lib}_history")).await;
        assert_eq!(per_lib.get(lib).map_or(0, |s| s.len()) as i64, want, "{lib}: distinct versions sent");
    }
    assert!(
        (per_lib["matter"].len() as i64) < lianqin_tests::count(d, "SELECT count(*) FROM matter_history").await,
        "the flow must not carry every matter"
    );
    for g in &got {
        let text = String::from_utf8_lossy(&g.body);
        assert!(citizen_ids(&text).is_empty(), "clear citizen id sent: {:?}", citizen_ids(&text));
        assert!(phones(&text).is_empty(), "clear phone sent: {:?}", phones(&text));
    }

    // Receipts: one per acknowledged delivery, with the endpoint's answer.
    let rs = push::receipts(d, "to-ecology").unwrap();
    assert_eq!(rs.len(), got.len());
    assert_eq!(rs.last().unwrap().end, std::fs::metadata(d.join("flows/ecology.jsonl")).unwrap().len());
    assert_eq!(rs[0].answer["answer"]["receipt"], "eco-1");
    assert_eq!(rs[0].answer["status"], 200);

    // Nothing new: a further drain sends nothing.
    assert_eq!(p.drain().await.unwrap(), 0);
    assert_eq!(ep.got.lock().unwrap().len(), got.len());

    // The daily receipt balances now, is signed, and a changed one fails.
    let r1 = receipt::make(&flows[0], d, day, &audit).await.unwrap();
    assert!(r1.balanced, "{r1:?}");
    assert_eq!(r1.libraries["matter"].held, *r1.libraries["matter"].acknowledged.as_ref().unwrap());
    assert_eq!(r1.libraries["matter"].held.rows as usize, per_lib["matter"].len());
    drop(p);
    audit.sync();
    let file = d.join("receipt.json");
    let out = lianqin(&key)
        .args(["flow", "receipt", "--flow", "to-ecology", "--day", &day.to_string(), "--config"])
        .arg(d.join("demo/push.toml"))
        .arg("--data-dir")
        .arg(d)
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", cli_text(&out));
    let pubkey = std::fs::read_to_string(d.join("keys/receipt.pub")).unwrap();
    let ok = Command::new(lianqin_bin()).args(["flow", "verify", "--key", pubkey.trim()]).arg(&file).output().unwrap();
    assert!(ok.status.success(), "{}", cli_text(&ok));
    assert!(cli_text(&ok).contains("balanced"), "{}", cli_text(&ok));
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replacen("\"rows\": ", "\"rows\": 1", 1);
    assert_ne!(changed, text);
    std::fs::write(&file, changed).unwrap();
    let bad = Command::new(lianqin_bin()).args(["flow", "verify"]).arg(&file).output().unwrap();
    assert!(!bad.status.success());
    assert!(cli_text(&bad).contains("signature does not match"), "{}", cli_text(&bad));

    // Audit: one success per delivery, the outage once, the receipts.
    use lianqin_audit::{EventKind, Outcome};
    let evs = audit_events(d);
    let pushed: Vec<_> =
        evs.iter().filter(|e| e.kind == EventKind::Flow && e.detail.get("delivery").is_some()).collect();
    assert_eq!(pushed.iter().filter(|e| e.outcome == Outcome::Success).count(), got.len());
    assert_eq!(pushed.iter().filter(|e| e.outcome == Outcome::Failure).count(), 1, "an outage is audited once");
    assert!(pushed.iter().all(|e| e.user == "chen.ecology" && e.department == "ecology"));
    assert!(pushed.iter().all(|e| e.detail["destination"].as_str().unwrap().starts_with("http://127.0.0.1")));
    assert_eq!(
        evs.iter().filter(|e| e.kind == EventKind::Export && e.detail.get("receipt").is_some()).count(),
        3,
        "each receipt made is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_during_an_outage_resends_only_the_delivery_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = small();
    let key = sc.api_key.clone();
    let sim = demo::start_simulation(d, sc).await.unwrap();
    let (url, ep) = endpoint().await;
    let (path, cfg) = write_config(d, &sim, &http_flow(&url, 3));
    {
        let hub = Hub::open(cfg, d).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    let lines = outbox(d, "ecology.jsonl");
    assert!(lines.len() > 15, "the flow wrote {} events", lines.len());
    ep.delay_ms.store(250, Ordering::SeqCst);
    // The hub as deployed: `lianqin run` pushes the flow in the background.
    let run = || {
        lianqin(&key)
            .args(["run", "--demo-users", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(d)
            .env_remove("LIANQIN_POLICIES")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = run();
    let started = lianqin_tests::wait_until(Duration::from_secs(60), || {
        let n = ep.got.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    assert!(started, "the endpoint got fewer than 3 deliveries");
    // The department goes down while the hub pushes: it retries the same
    // delivery; SIGKILL the hub then.
    ep.down.store(true, Ordering::SeqCst);
    let retried = lianqin_tests::wait_until(Duration::from_secs(60), || {
        let n = ep.refused.load(Ordering::SeqCst);
        async move { n >= 2 }
    })
    .await;
    assert!(retried, "the pusher did not retry a refused delivery");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = ep.got.lock().unwrap().len();
    assert!(before * 3 < lines.len(), "killed too late: {before} deliveries of {}", lines.len().div_ceil(3));

    // Back up, the hub restarted: it delivers the rest.
    ep.delay_ms.store(0, Ordering::SeqCst);
    ep.down.store(false, Ordering::SeqCst);
    let mut child = run();
    let len = std::fs::metadata(d.join("flows/ecology.jsonl")).unwrap().len();
    let done = lianqin_tests::wait_until(Duration::from_secs(120), || {
        let c = push::read_cursor(d, "to-ecology").unwrap_or(0);
        async move { c == len }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(done, "the restarted hub did not deliver the outbox");
    assert_eq!(outbox(d, "ecology.jsonl"), lines, "the restarted hub wrote nothing new to the outbox");

    let got = ep.got.lock().unwrap().clone();
    // Every event arrived; a delivery id seen twice carries the same body,
    // and only the one in flight at the kill is seen twice.
    // Keyed by the delivery's start offset in the outbox (`<flow>:<start>-<end>`).
    let start = |id: &str| -> u64 { id.rsplit_once(':').unwrap().1.split_once('-').unwrap().0.parse().unwrap() };
    let mut by_id: BTreeMap<u64, Vec<&Got>> = BTreeMap::new();
    for g in &got {
        by_id.entry(start(&g.delivery)).or_default().push(g);
    }
    let repeated: Vec<_> = by_id.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(repeated.len() <= 1, "more than the delivery in flight was sent again: {repeated:?}");
    for (_, v) in &repeated {
        assert!(v.iter().all(|g| g.body == v[0].body && g.delivery == v[0].delivery));
    }
    let unique: Vec<Value> = by_id.values().flat_map(|v| v[0].events.clone()).collect();
    let want: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        unique == want,
        "after the kill and a restart the endpoint must hold the outbox exactly ({} events received once, {} in the outbox)",
        unique.len(),
        want.len()
    );
}

/// Rows of the department table read back with the database's own client:
/// (library, id) → (op, content_hash, row_json).
type Table = BTreeMap<(String, String), (String, String, Value)>;

fn parse_rows(text: &str) -> Table {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, '\t').collect();
            assert_eq!(f.len(), 5, "row {l:?}");
            ((f[0].into(), f[1].into()), (f[2].into(), f[3].into(), serde_json::from_str(f[4]).unwrap()))
        })
        .collect()
}

/// What the table must hold: the last event per (library, id) of the outbox.
fn expected_table(lines: &[String]) -> Table {
    let mut t = Table::new();
    for l in lines {
        let ev: Value = serde_json::from_str(l).unwrap();
        let (lib, id, hash) = ident(&ev);
        t.insert((lib, id), (ev["op"].as_str().unwrap().to_string(), hash, ev["row"].clone()));
    }
    t
}

async fn sql_push(kind: &str, url_var: &str, read: impl Fn(&str, &str) -> String) {
    let Some(_) = lianqin_tests::require_service(url_var) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = small();
    let key = sc.api_key.clone();
    let sim = demo::start_simulation(d, sc).await.unwrap();
    let table = format!("feed_market_{}", std::process::id());
    let flow = format!(
        "[[flows]]\nname = \"to-market\"\nuser = \"liu.market\"\nlibraries = [\"element\", \"matter\"]\n\
         sink = \"flows/market.jsonl\"\n[flows.push]\ntype = \"{kind}\"\nurl = \"${{{url_var}}}\"\n\
         table = \"{table}\"\nbatch_rows = 40\n"
    );
    let (path, cfg) = write_config(d, &sim, &flow);
    {
        let hub = Hub::open(cfg, d).await.unwrap();
        demo::cycle(&hub).await.unwrap();
        hub.audit().sync();
    }
    let lines = outbox(d, "market.jsonl");
    assert!(lines.len() > 40, "the flow wrote {} events", lines.len());
    let push = || {
        let out =
            lianqin(&key).args(["flow", "push", "--config"]).arg(&path).arg("--data-dir").arg(d).output().unwrap();
        assert!(out.status.success(), "{}", cli_text(&out));
        let text = cli_text(&out);
        assert!(!text.contains("lianqin-test"), "the password leaked into the output: {text}");
        text
    };
    let said = push();
    assert!(said.contains(&format!("{} event(s) delivered", lines.len())), "{said}");
    let want = expected_table(&lines);
    let rows = parse_rows(&read(&table, "first delivery"));
    assert_eq!(rows, want, "the department table holds the last version of each record it may see");
    for ((lib, _), (_, _, row)) in &rows {
        match lib.as_str() {
            "element" => assert!(row["kind"] == "unit_place" || row["department"] == "market", "leak: {row}"),
            "matter" => assert!(row["category"] == "d" || row["department"] == "market", "leak: {row}"),
            other => panic!("unexpected library {other}"),
        }
        let text = row.to_string();
        assert!(citizen_ids(&text).is_empty() && phones(&text).is_empty(), "clear personal data: {text}");
    }
    // A crash that lost the cursor delivers everything again: the table is
    // the same (upserts by key), nothing doubled.
    std::fs::remove_file(push::cursor_path(d, "to-market")).unwrap();
    push();
    assert_eq!(parse_rows(&read(&table, "second delivery")), want);
    assert_eq!(push::receipts(d, "to-market").unwrap().len(), 2 * lines.len().div_ceil(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_push_upserts_into_a_department_postgres_table() {
    sql_push("postgres", "LIANQIN_PG_URL", |table, what| {
        let url = std::env::var("LIANQIN_PG_URL").unwrap();
        let out = Command::new("psql")
            .arg(&url)
            .args(["-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("SELECT library, id, op, content_hash, row_json::text FROM {table} ORDER BY 1, 2"))
            .output()
            .expect("run psql");
        assert!(out.status.success(), "{what}: psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_push_upserts_into_a_department_mariadb_table() {
    sql_push("mysql", "LIANQIN_MYSQL_URL", |table, what| {
        let url = url::Url::parse(&std::env::var("LIANQIN_MYSQL_URL").unwrap()).unwrap();
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--protocol=tcp", "-h"])
            .arg(url.host_str().unwrap())
            .arg("-P")
            .arg(url.port().unwrap_or(3306).to_string())
            .arg("-u")
            .arg(url.username())
            .args(["-N", "-B", "--raw", "-e"])
            .arg(format!("SELECT library, id, op, content_hash, row_json FROM {table} ORDER BY 1, 2"))
            .arg(url.path().trim_start_matches('/'))
            .env("MYSQL_PWD", url.password().unwrap_or_default())
            .output()
            .expect("run mariadb");
        assert!(out.status.success(), "{what}: mariadb: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await;
}
