//! Pushed and gateway data into the libraries through the shipped mappings,
//! as `lianqin run` does it:
//! * 110 dispatch orders POSTed over real HTTP to the `webhook` connector
//!   (HMAC-SHA256 over `timestamp.body`, idempotency keys) → `police_110`;
//! * the simulated Zhejiang IRS gateway (`http` connector, IRS md5 auth, the
//!   request secret expiring mid-sync) serving enterprises' administrative
//!   penalties → `irs_market_penalty`;
//! * an `.xlsx` export dropped into a `file` connector's folder →
//!   `law_enforcement_case`.
//!
//! Every expected count is computed from what was sent (or from the
//! simulator's records), not from what the hub produced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lianqin_connectors::set_env_override;
use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_sim::irs::{IrsSimConfig, start_irs};
use lianqin_tests::{count, wait_until};
use serde_json::{Value, json};
use sha2::Sha256;

fn mapping(name: &str) -> String {
    format!("{}/../schemas/mappings/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn in_list<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items.into_iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
}

/// The `matter_stage` code table's Chinese labels (schemas/codes/matter_stage.toml).
fn stage_code(zh: &str) -> &'static str {
    match zh {
        "摸排" => "screening",
        "预防" => "prevention",
        "宣传" => "publicity",
        "预警" => "warning",
        "接警" => "intake",
        "研判" => "assessment",
        "处置" => "handling",
        "复盘" => "review",
        "总结" => "summary",
        other => panic!("not a stage label: {other}"),
    }
}

fn valid_uscc(first17: &str) -> String {
    let c = lianqin_domain::uscc::uscc_check_char(first17).expect("17 USCC characters");
    let code = format!("{first17}{c}");
    assert!(lianqin_domain::validate_uscc(&code).is_ok(), "test data: {code} is a valid USCC");
    code
}

fn valid_cid(first17: &str) -> String {
    let c = lianqin_domain::citizen_id::citizen_id_check_char(first17).expect("17 digits");
    let id = format!("{first17}{c}");
    assert!(lianqin_domain::validate_citizen_id(&id).is_ok(), "test data: {id} is a valid citizen ID");
    id
}

// ---------------------------------------------------------------- webhook

const HOOK_SECRET: &str = "hook-secret-for-pushed-and-gateway-tests";

fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    secret: &str,
    ts: i64,
    idem: Option<&str>,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let ts = ts.to_string();
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Timestamp", &ts)
        .header("X-Signature", format!("sha256={}", sign(secret, &ts, &bytes)))
        .body(bytes);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("POST to the webhook");
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_110_dispatch_orders_reach_the_libraries_through_the_webhook() {
    set_env_override("LQ_PG_TEST_110_HOOK_SECRET", HOOK_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let text = format!(
        r#"node = "pushed-test"
[bus]
kind = "embedded"

# 公安110 pushes dispatch orders (派警指令).
[[sources]]
id = "police_110_push"
department = "police"
mapping = "{m}"
[sources.connector]
type = "webhook"
listen = "127.0.0.1:{port}"
path = "/hooks/110"
secret = "${{LQ_PG_TEST_110_HOOK_SECRET}}"
key_field = "jjdbh"
updated_field = "updated_at"
"#,
        m = mapping("police_110"),
    );
    let cfg = HubConfig::parse(&text, "pushed.toml", d).expect("config");
    let hub = Hub::open(cfg, d).await.expect("hub");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (mut src, ctx, every) in hub.build_sources().expect("sources") {
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { src.run(&ctx, every, stop).await }));
    }
    assert!(
        wait_until(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await,
        "webhook listening"
    );
    let url = format!("http://127.0.0.1:{port}/hooks/110");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let orders: Vec<Value> =
        (0..6).map(|i| serde_json::from_str(&lianqin_pipeline::bench::synthetic_110(1000 + i)).unwrap()).collect();
    let batch = json!([orders[0], orders[1], orders[2]]);
    let mut accepted: Vec<&Value> = Vec::new();

    // An array of three, then a single order.
    let (st, v) = post(&client, &url, &batch, HOOK_SECRET, now_secs(), Some("dispatch-0001")).await;
    assert_eq!((st, &v["accepted"]), (200, &json!(3)), "{v}");
    accepted.extend(&orders[0..3]);
    let (st, v) = post(&client, &url, &orders[3], HOOK_SECRET, now_secs(), Some("dispatch-0002")).await;
    assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
    accepted.push(&orders[3]);
    // Signed with the wrong secret: refused, not stored.
    let (st, v) = post(&client, &url, &json!([orders[4]]), "not-the-secret", now_secs(), Some("dispatch-0003")).await;
    assert!(st == 401 || st == 403, "bad signature refused: {st} {v}");
    // Correctly signed but an hour old (replay): refused, not stored.
    let (st, v) = post(&client, &url, &orders[5], HOOK_SECRET, now_secs() - 3600, None).await;
    assert!(st == 401 || st == 403, "stale timestamp refused: {st} {v}");
    // The sender retries the first delivery: recognised, not published again.
    let (st, v) = post(&client, &url, &batch, HOOK_SECRET, now_secs(), Some("dispatch-0001")).await;
    assert_eq!((st, &v["duplicate"]), (200, &json!(true)), "{v}");

    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap().expect("webhook stops cleanly");
    }
    hub.process_available().await.expect("process");

    let refused: Vec<String> =
        [&orders[4], &orders[5]].iter().map(|o| format!("110:{}", o["jjdbh"].as_str().unwrap())).collect();
    let ids: Vec<String> = accepted.iter().map(|o| format!("110:{}", o["jjdbh"].as_str().unwrap())).collect();
    let cids: BTreeSet<&str> = accepted.iter().filter_map(|o| o["bjrsfzh"].as_str()).collect();
    let plates: BTreeSet<&str> = accepted.iter().filter_map(|o| o["cph"].as_str()).collect();
    let n = i64::try_from(accepted.len()).unwrap();

    assert_eq!(count(d, "SELECT count(*) FROM raw_police_110_push").await, n, "each accepted order stored once");
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(count(d, "SELECT count(*) FROM matter").await, n);
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE matter_id IN ({})", in_list(&ids))).await, n);
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE matter_id IN ({})", in_list(&refused))).await, 0);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE department = 'police' AND source_id = 'police_110_push'").await,
        n
    );
    for o in &accepted {
        let sql = format!(
            "SELECT count(*) FROM matter WHERE matter_id = {} AND stage = {} AND division = {} AND party_element_id = {}",
            lit(&format!("110:{}", o["jjdbh"].as_str().unwrap())),
            lit(stage_code(o["jqzt"].as_str().unwrap())),
            lit(o["xzqh"].as_str().unwrap()),
            lit(&lianqin_tests::person_token(d, o["bjrsfzh"].as_str().unwrap())),
        );
        assert_eq!(count(d, &sql).await, 1, "{sql}");
    }
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter_event WHERE matter_id IN ({})", in_list(&ids))).await, n);
    assert_eq!(count(d, "SELECT count(*) FROM matter_event").await, n);
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE kind = 'person' AND id_type = 'cid'").await,
        i64::try_from(cids.len()).unwrap()
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE kind = 'item' AND id_type = 'plate'").await,
        i64::try_from(plates.len()).unwrap()
    );
    assert_eq!(count(d, "SELECT count(*) FROM element").await, i64::try_from(cids.len() + plates.len()).unwrap());
}

// ---------------------------------------------------------------- IRS gateway

/// The mapping's category rule for a penalty's content (ecology keywords → a, …).
fn penalty_category(cfnr: &str) -> Option<&'static str> {
    let any = |ws: &[&str]| ws.iter().any(|w| cfnr.contains(w));
    if any(&["排污", "排放", "倾倒", "污染", "废"]) {
        Some("a")
    } else if any(&["危险", "有毒"]) {
        Some("b")
    } else if any(&["采砂", "捕捞", "林", "农用地", "采矿"]) {
        Some("c")
    } else if any(&["食品", "药品", "商标"]) {
        Some("d")
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irs_gateway_penalties_reach_the_libraries_with_the_simulators_counts() {
    let sim = start_irs(IrsSimConfig {
        records: 30,
        // The request secret dies after 2 data calls: it expires mid-sync.
        expire_after_calls: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    set_env_override("LQ_PG_TEST_IRS_KEY", "A330500-lianqin");
    set_env_override("LQ_PG_TEST_IRS_SECRET", "app-secret-for-tests");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = tempfile::tempdir().unwrap();
    let text = format!(
        r#"node = "irs-test"
[bus]
kind = "embedded"

# 浙江省公共数据平台 企业行政处罚信息 through the IRS gateway.
[[sources]]
id = "irs_market_penalty"
department = "market"
mapping = "{m}"
interval_secs = 3600
[sources.connector]
type = "http"
url = "{url}"
records = "/datas/data"
key_field = "xzcfjdswh"
updated_field = "gxsj"
since_param = "updateTime"
pagination = {{ style = "page", param = "pageNum", size_param = "pageSize", size = 10 }}
retry = {{ max_attempts = 4, base_ms = 10, max_ms = 50 }}
auth = {{ type = "irs", app_key = "${{LQ_PG_TEST_IRS_KEY}}", app_secret = "${{LQ_PG_TEST_IRS_SECRET}}", sign_in = "query" }}

# The same catalog's backfill as JSON lines (records that carry the USCC).
[[sources]]
id = "irs_penalty_backfill"
department = "market"
mapping = "{m}"
interval_secs = 3600
[sources.connector]
type = "file"
dir = "{drop}"
format = "jsonl"
key_columns = ["xzcfjdswh"]
"#,
        m = mapping("irs_market_penalty"),
        url = sim.api_url,
        drop = drop.path().display(),
    );
    // Backfill: two penalties of one enterprise (valid USCC), one of an
    // enterprise whose code fails its check digit (flagged, kept).
    let good = valid_uscc("91330523776049653");
    let mut bad = valid_uscc("91330502776049653");
    let last = if bad.ends_with('0') { '1' } else { '0' };
    bad.replace_range(17.., &last.to_string());
    assert!(lianqin_domain::validate_uscc(&bad).is_err());
    let backfill = [
        json!({"xzcfjdswh": "湖市监罚〔2025〕0001号", "xdrmc": "安吉某竹木制品厂", "xdrshxym": good, "cfnr": "违法倾倒固体废物", "fkje": "20000.00", "cfjdrq": "2025-05-06", "gxsj": "2025-10-01 09:00:00"}),
        json!({"xzcfjdswh": "湖市监罚〔2025〕0002号", "xdrmc": "安吉某竹木制品厂", "xdrshxym": good, "cfnr": "销售假冒注册商标商品", "fkje": "5000.00", "cfjdrq": "2025-06-06", "gxsj": "2025-10-01 09:00:00"}),
        json!({"xzcfjdswh": "湖市监罚〔2025〕0003号", "xdrmc": "吴兴区某电镀厂", "xdrshxym": bad, "cfnr": "未批先建", "fkje": "8000.00", "cfjdrq": "2025-07-06", "gxsj": "2025-10-01 09:00:00"}),
    ];
    let lines: String = backfill.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(drop.path().join(".penalties.jsonl.tmp"), lines).unwrap();
    std::fs::rename(drop.path().join(".penalties.jsonl.tmp"), drop.path().join("penalties-backfill.jsonl")).unwrap();

    let cfg = HubConfig::parse(&text, "irs.toml", d).expect("config");
    let hub = Hub::open(cfg, d).await.expect("hub");
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("process");

    let counts = sim.counts();
    assert!(
        counts.expired >= 1 && counts.refresh_by_sec >= 1,
        "the request secret expired and was renewed mid-sync: {counts:?}"
    );
    assert_eq!(counts.bad_signature, 0, "{counts:?}");

    // Ground truth: the simulator's records.
    let truth = sim.records();
    let n = i64::try_from(truth.len()).unwrap();
    let ids: Vec<String> = truth.iter().map(|r| format!("irs:{}", r["xzcfjdswh"].as_str().unwrap())).collect();
    let code_of = |r: &Value| r["xdrshxym"].as_str().expect("every gateway record carries xdrshxym").to_string();
    let truth_uscc: BTreeSet<String> = truth.iter().map(code_of).collect();
    assert!(truth_uscc.len() < truth.len(), "some enterprise has several penalties");
    assert!(truth_uscc.iter().all(|c| lianqin_domain::validate_uscc(c).is_ok()), "the simulator sends valid codes");
    let mut by_category: BTreeMap<Option<&str>, i64> = BTreeMap::new();
    let mut by_division: BTreeMap<&str, i64> = BTreeMap::new();
    let mut uscc_division: BTreeMap<String, &str> = BTreeMap::new();
    for r in &truth {
        let xzqh = r["xzqh"].as_str().expect("every gateway record carries xzqh");
        *by_category.entry(penalty_category(r["cfnr"].as_str().unwrap())).or_default() += 1;
        *by_division.entry(xzqh).or_default() += 1;
        assert_eq!(*uscc_division.entry(code_of(r)).or_insert(xzqh), xzqh, "one division per enterprise");
    }

    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
    assert_eq!(count(d, "SELECT count(DISTINCT source_key) FROM raw_irs_market_penalty").await, n);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty'").await, n);
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE matter_id IN ({})", in_list(&ids))).await, n);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty' AND stage = 'handling' AND outcome = 'admin_department' AND department = 'market' AND reported_at IS NOT NULL").await,
        n
    );
    assert_eq!(
        count(
            d,
            &format!("SELECT count(*) FROM matter_event WHERE matter_id IN ({}) AND stage = 'handling'", in_list(&ids))
        )
        .await,
        n
    );
    for (cat, k) in &by_category {
        let cond = cat.map_or("category IS NULL".to_string(), |c| format!("category = '{c}'"));
        assert_eq!(
            count(d, &format!("SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty' AND {cond}")).await,
            *k,
            "{cond}"
        );
    }
    // Divisions come from xzqh (every record carries it), not from the name.
    for (div, k) in &by_division {
        assert_eq!(
            count(
                d,
                &format!(
                    "SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty' AND division = {}",
                    lit(div)
                )
            )
            .await,
            *k,
            "division {div}"
        );
    }
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty' AND division IS NULL").await,
        0
    );
    // Enterprises: one unit/place element keyed `uscc:<code>` per distinct
    // USCC the gateway sent (plus the backfill's two), none flagged, each in
    // its enterprise's division; each penalty points at its enterprise.
    let truth_ids: Vec<String> = truth_uscc.iter().map(|c| format!("uscc:{c}")).collect();
    let n_firms = i64::try_from(truth_uscc.len()).unwrap();
    assert_eq!(
        count(
            d,
            "SELECT count(*) FROM matter WHERE source_id = 'irs_market_penalty' AND party_element_id LIKE 'uscc:%'"
        )
        .await,
        n
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE kind = 'unit_place' AND id_type = 'uscc'").await,
        n_firms + 2
    );
    assert_eq!(
        count(d, &format!("SELECT count(DISTINCT element_id) FROM element WHERE kind = 'unit_place' AND id_type = 'uscc' AND element_id IN ({})", in_list(&truth_ids))).await,
        n_firms
    );
    assert_eq!(
        count(
            d,
            &format!(
                "SELECT count(*) FROM element WHERE element_id IN ({}) AND flags LIKE '%check_digit%'",
                in_list(&truth_ids)
            )
        )
        .await,
        0,
        "valid codes are not flagged"
    );
    for (code, div) in &uscc_division {
        let sql = format!(
            "SELECT count(*) FROM element WHERE element_id = {} AND id_value = {} AND division = {}",
            lit(&format!("uscc:{code}")),
            lit(code),
            lit(div)
        );
        assert_eq!(count(d, &sql).await, 1, "{sql}");
    }
    for r in &truth {
        let sql = format!(
            "SELECT count(*) FROM matter WHERE matter_id = {} AND party_element_id = {} AND division = {}",
            lit(&format!("irs:{}", r["xzcfjdswh"].as_str().unwrap())),
            lit(&format!("uscc:{}", code_of(r))),
            lit(r["xzqh"].as_str().unwrap())
        );
        assert_eq!(count(d, &sql).await, 1, "{sql}");
    }
    let good_id = format!("uscc:{good}");
    assert_eq!(count(d, &format!("SELECT count(*) FROM element WHERE element_id = {} AND division = '330523' AND (flags IS NULL OR flags NOT LIKE '%uscc%')", lit(&good_id))).await, 1);
    assert_eq!(
        count(
            d,
            &format!(
                "SELECT count(*) FROM element WHERE element_id = {} AND flags LIKE '%uscc.check_digit%'",
                lit(&format!("uscc:{bad}"))
            )
        )
        .await,
        1
    );
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE party_element_id = {}", lit(&good_id))).await, 2);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE source_id = 'irs_penalty_backfill' AND category = 'd'").await,
        1
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------- XLSX drop

/// Case stages as the department writes them, and the mapping's stage codes.
const CASE_STAGES: [(&str, &str); 5] =
    [("立案", "intake"), ("调查", "assessment"), ("处罚决定", "handling"), ("执行", "review"), ("结案", "summary")];

struct CaseRow {
    case_no: String,
    violation: &'static str,
    party: &'static str,
    uscc: Option<String>,
    cid: Option<String>,
    stage: usize,
}

fn case_rows() -> Vec<CaseRow> {
    let firms = [valid_uscc("91330523776049653"), valid_uscc("91330522776049653")];
    let people = [valid_cid("33052319800101123"), valid_cid("33052219750505234")];
    let violations = ["超标排污", "非法采砂", "销售假冒商标商品", "占道经营", "违法倾倒建筑垃圾"];
    (0..11)
        .map(|i| CaseRow {
            case_no: format!("AJZF2025{:04}", 100 + i),
            violation: violations[i % violations.len()],
            party: ["湖州某建材有限公司", "张某", "无名"][i % 3],
            uscc: (i % 3 == 0).then(|| firms[i % 2].clone()),
            cid: (i % 3 == 1).then(|| people[(i / 3) % 2].clone()),
            stage: i % CASE_STAGES.len(),
        })
        .collect()
}

/// 综合行政执法局 case-register export: a title row, the header in row 2.
fn case_workbook(rows: &[CaseRow]) -> Vec<u8> {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let ws = wb.add_worksheet();
    ws.set_name("案件台账").unwrap();
    ws.write_string(0, 0, "安吉县综合行政执法局案件台账（2025年10月导出）").unwrap();
    let header = [
        "case_no",
        "case_name",
        "violation",
        "party_name",
        "party_uscc",
        "party_id_card",
        "amount",
        "stage",
        "division",
        "inspect_time",
        "lng",
        "lat",
        "updated_at",
    ];
    for (c, h) in header.iter().enumerate() {
        ws.write_string(1, u16::try_from(c).unwrap(), *h).unwrap();
    }
    for (i, r) in rows.iter().enumerate() {
        let row = 2 + u32::try_from(i).unwrap();
        let day = 1 + u8::try_from(i).unwrap();
        ws.write_string(row, 0, &r.case_no).unwrap();
        ws.write_string(row, 1, format!("{}{}案", r.party, r.violation)).unwrap();
        ws.write_string(row, 2, r.violation).unwrap();
        ws.write_string(row, 3, r.party).unwrap();
        if let Some(u) = &r.uscc {
            ws.write_string(row, 4, u).unwrap();
        }
        if let Some(c) = &r.cid {
            ws.write_string(row, 5, c).unwrap();
        }
        ws.write_number(row, 6, 1000.0 * f64::from(day)).unwrap();
        ws.write_string(row, 7, CASE_STAGES[r.stage].0).unwrap();
        ws.write_string(row, 8, "330523").unwrap();
        ws.write_datetime_with_format(
            row,
            9,
            ExcelDateTime::from_ymd(2025, 9, day).unwrap().and_hms(9, 30, 0).unwrap(),
            &datetime,
        )
        .unwrap();
        ws.write_number(row, 10, 119.68 + f64::from(day) * 0.001).unwrap();
        ws.write_number(row, 11, 30.63 + f64::from(day) * 0.001).unwrap();
        ws.write_datetime_with_format(
            row,
            12,
            ExcelDateTime::from_ymd(2025, 10, day).unwrap().and_hms(8, 0, 0).unwrap(),
            &datetime,
        )
        .unwrap();
    }
    // A row without a case number: read, then quarantined by the mapping.
    let row = 2 + u32::try_from(rows.len()).unwrap();
    ws.write_string(row, 1, "无编号案件").unwrap();
    ws.write_string(row, 7, "立案").unwrap();
    wb.save_to_buffer().unwrap()
}

fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xlsx_case_export_dropped_in_the_folder_reaches_the_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = tempfile::tempdir().unwrap();
    let text = format!(
        r#"node = "xlsx-test"
[bus]
kind = "embedded"

# 综合行政执法局 exports its case register as Excel into a shared folder.
[[sources]]
id = "law_enforcement_xlsx"
department = "law_enforcement"
mapping = "{m}"
interval_secs = 3600
[sources.connector]
type = "file"
dir = "{drop}"
format = "xlsx"
sheet = "案件台账"
header_row = 2
key_columns = ["case_no"]
updated_field = "updated_at"
chunk_rows = 4
"#,
        m = mapping("law_enforcement_case"),
        drop = drop.path().display(),
    );
    let rows = case_rows();
    let book = case_workbook(&rows);
    drop_file(drop.path(), "案件台账-2025-10.xlsx", &book);

    let cfg = HubConfig::parse(&text, "xlsx.toml", d).expect("config");
    let hub = Hub::open(cfg, d).await.expect("hub");
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("process");
    assert!(drop.path().join("processed").join("案件台账-2025-10.xlsx").exists(), "the export was moved to processed/");

    let n = i64::try_from(rows.len()).unwrap();
    let firms: BTreeSet<&String> = rows.iter().filter_map(|r| r.uscc.as_ref()).collect();
    let people: BTreeSet<&String> = rows.iter().filter(|r| r.uscc.is_none()).filter_map(|r| r.cid.as_ref()).collect();
    let ids: Vec<String> = rows.iter().map(|r| format!("zhzf:{}", r.case_no)).collect();

    assert_eq!(
        count(d, "SELECT count(*) FROM raw_law_enforcement_xlsx").await,
        n + 1,
        "every row, the keyless one too"
    );
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 1, "the row without a case number");
    assert_eq!(count(d, "SELECT count(*) FROM matter").await, n);
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE matter_id IN ({})", in_list(&ids))).await, n);
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE department = 'law_enforcement' AND division = '330523' AND reported_at IS NOT NULL AND lon IS NOT NULL").await, n);
    for (zh, code) in CASE_STAGES {
        let k = i64::try_from(rows.iter().filter(|r| CASE_STAGES[r.stage].0 == zh).count()).unwrap();
        assert_eq!(count(d, &format!("SELECT count(*) FROM matter WHERE stage = '{code}'")).await, k, "{zh}");
    }
    let closed = i64::try_from(rows.iter().filter(|r| CASE_STAGES[r.stage].1 == "summary").count()).unwrap();
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE closed_at IS NOT NULL").await, closed);
    assert_eq!(count(d, &format!("SELECT count(*) FROM matter_event WHERE matter_id IN ({})", in_list(&ids))).await, n);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE party_element_id LIKE 'uscc:%'").await,
        i64::try_from(rows.iter().filter(|r| r.uscc.is_some()).count()).unwrap()
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE kind = 'unit_place' AND id_type = 'uscc'").await,
        i64::try_from(firms.len()).unwrap()
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE kind = 'person' AND id_type = 'cid'").await,
        i64::try_from(people.len()).unwrap()
    );
    assert_eq!(count(d, "SELECT count(*) FROM element").await, i64::try_from(firms.len() + people.len()).unwrap());
    assert_eq!(
        count(d, "SELECT count(*) FROM element WHERE flags LIKE '%check_digit%'").await,
        0,
        "valid ids are not flagged"
    );

    // The same export dropped again under another name is not ingested twice.
    drop_file(drop.path(), "案件台账-副本.xlsx", &book);
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    hub.process_available().await.expect("process");
    assert_eq!(count(d, "SELECT count(*) FROM raw_law_enforcement_xlsx").await, n + 1);
    assert_eq!(count(d, "SELECT count(*) FROM matter_event").await, n);
}
