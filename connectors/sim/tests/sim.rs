//! End-to-end tests of the simulated sources over real sockets and real files.

use lianqin_sim::ids::{citizen_id_is_valid, uscc_is_valid};
use lianqin_sim::{Faults, SimConfig, Simulation, start};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn small() -> SimConfig {
    SimConfig {
        incidents: 57,
        tickets: 43,
        enterprises: 38,
        cases: 29,
        env_files: 2,
        env_rows_per_file: 30,
        ..SimConfig::default()
    }
}

/// GET with retries on 500/429 (what a real connector does); returns the JSON body.
async fn get_json(
    client: &reqwest::Client,
    req: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<Value, Box<dyn std::error::Error>> {
    for _ in 0..20 {
        let resp = req(client).send().await?;
        match resp.status() {
            StatusCode::OK => return Ok(resp.json().await?),
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::TOO_MANY_REQUESTS => continue,
            s => return Err(format!("unexpected status {s}: {}", resp.text().await?).into()),
        }
    }
    Err("too many retries".into())
}

async fn all_incidents(
    sim: &Simulation,
    since: Option<&str>,
    page_size: usize,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for page in 1.. {
        let url = format!("{}/api/110/incidents", sim.police_110);
        let body = get_json(&client, |c| {
            let mut r = c.get(&url).header("X-API-Key", "demo-key").query(&[("page", page), ("page_size", page_size)]);
            if let Some(s) = since {
                r = r.query(&[("updated_since", s)]);
            }
            r
        })
        .await?;
        assert_eq!(body["code"], 0);
        let items = body["data"]["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        out.extend(items);
    }
    Ok(out)
}

async fn all_tickets(
    sim: &Simulation,
    since: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    loop {
        let url = format!("{}/api/12345/tickets", sim.hotline_12345);
        let offset = out.len();
        let body = get_json(&client, |c| {
            let mut r = c.get(&url).bearer_auth("demo-key").query(&[("offset", offset), ("limit", limit)]);
            if let Some(s) = since {
                r = r.query(&[("since", s)]);
            }
            r
        })
        .await?;
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        let total = body["total"].as_u64().unwrap_or(0) as usize;
        out.extend(rows.iter().cloned());
        if rows.is_empty() || out.len() >= total {
            break;
        }
    }
    Ok(out)
}

async fn all_enterprises(
    sim: &Simulation,
    since: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{}/api/market/enterprises", sim.market);
        let cur = cursor.clone();
        let body = get_json(&client, |c| {
            let mut r = c
                .get(&url)
                .header("X-API-Key", "demo-key")
                .query(&[("cursor", cur.as_str()), ("limit", &limit.to_string())]);
            if let Some(s) = since {
                r = r.query(&[("updated_after", s)]);
            }
            r
        })
        .await?;
        out.extend(body["data"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    Ok(out)
}

async fn all_cases(
    sim: &Simulation,
    since: Option<&str>,
    size: usize,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let url = format!("{}/api/zhzf/cases", sim.law_enforcement);
        let body = get_json(&client, |c| {
            let mut r = c.get(&url).header("X-API-Key", "demo-key").query(&[("pageNo", page), ("pageSize", size)]);
            if let Some(s) = since {
                r = r.query(&[("modifiedSince", s)]);
            }
            r
        })
        .await?;
        assert_eq!(body["success"], true);
        out.extend(body["result"]["records"].as_array().cloned().unwrap_or_default());
        if page >= body["result"]["pages"].as_u64().unwrap_or(0) as usize {
            break;
        }
        page += 1;
    }
    Ok(out)
}

fn keys(items: &[Value], key: &str) -> Vec<String> {
    items.iter().map(|v| v[key].as_str().unwrap_or("<none>").to_string()).collect()
}

fn assert_unique(keys: &[String]) {
    let set: HashSet<&String> = keys.iter().collect();
    assert_eq!(set.len(), keys.len(), "duplicate keys across pages");
}

#[tokio::test]
async fn pagination_returns_every_record_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sim = start(small(), dir.path()).await?;
    let truth = sim.truth();
    assert_eq!(truth.incidents.len(), 57 + 2);
    for size in [1, 7, 20, 500] {
        let got = all_incidents(&sim, None, size).await?;
        assert_eq!(got, truth.incidents, "110 page_size {size}");
        let got = all_tickets(&sim, None, size).await?;
        assert_eq!(got, truth.tickets, "12345 limit {size}");
        assert_unique(&keys(&got, "ticket_no"));
        let got = all_enterprises(&sim, None, size).await?;
        assert_eq!(got, truth.enterprises, "market limit {size}");
        assert_unique(&keys(&got, "uscc"));
        let got = all_cases(&sim, None, size).await?;
        assert_eq!(got, truth.cases, "cases pageSize {size}");
        assert_unique(&keys(&got, "case_no"));
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn updated_since_is_inclusive_so_ties_are_not_skipped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sim = start(small(), dir.path()).await?;
    let truth = sim.truth();
    // Find a timestamp shared by at least two incidents (the generator guarantees ties).
    let ts: Vec<&str> = truth.incidents.iter().filter_map(|v| v["updated_at"].as_str()).collect();
    let tie = ts.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]).ok_or("no tie in 110 data")?;
    let expected: Vec<Value> =
        truth.incidents.iter().filter(|v| v["updated_at"].as_str() >= Some(tie)).cloned().collect();
    assert!(expected.len() >= 2);
    let got = all_incidents(&sim, Some(tie), 3).await?;
    assert_eq!(got, expected);

    let ts: Vec<&str> = truth.tickets.iter().filter_map(|v| v["updated_at"].as_str()).collect();
    let tie = ts.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]).ok_or("no tie in 12345 data")?;
    let expected: Vec<Value> =
        truth.tickets.iter().filter(|v| v["updated_at"].as_str() >= Some(tie)).cloned().collect();
    assert_eq!(all_tickets(&sim, Some(tie), 2).await?, expected);

    let ts: Vec<&str> = truth.enterprises.iter().filter_map(|v| v["updated_at"].as_str()).collect();
    let tie = ts.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]).ok_or("no tie in market data")?;
    let expected: Vec<Value> =
        truth.enterprises.iter().filter(|v| v["updated_at"].as_str() >= Some(tie)).cloned().collect();
    assert_eq!(all_enterprises(&sim, Some(tie), 2).await?, expected);
    // The same instant in UTC selects the same records.
    let utc = chrono::DateTime::parse_from_rfc3339(tie)?.with_timezone(&chrono::Utc).to_rfc3339();
    assert_eq!(all_enterprises(&sim, Some(&utc), 5).await?, expected);

    let ts: Vec<&str> = truth.cases.iter().filter_map(|v| v["updated_at"].as_str()).collect();
    let tie = ts.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]).ok_or("no tie in cases data")?;
    let expected: Vec<Value> = truth.cases.iter().filter(|v| v["updated_at"].as_str() >= Some(tie)).cloned().collect();
    assert_eq!(all_cases(&sim, Some(tie), 2).await?, expected);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn every_endpoint_requires_the_api_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sim = start(SimConfig { env_files: 0, ..small() }, dir.path()).await?;
    let c = reqwest::Client::new();
    let urls = [
        format!("{}/api/110/incidents", sim.police_110),
        format!("{}/api/12345/tickets", sim.hotline_12345),
        format!("{}/api/market/enterprises", sim.market),
        format!("{}/api/zhzf/cases", sim.law_enforcement),
    ];
    for url in &urls {
        let r = c.get(url).send().await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
        let body: Value = r.json().await?;
        assert!(body.is_object());
        let r = c.get(url).header("X-API-Key", "wrong").bearer_auth("wrong").send().await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
    }
    // 12345 uses Bearer, not X-API-Key; the others the reverse.
    assert_eq!(c.get(&urls[1]).header("X-API-Key", "demo-key").send().await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(c.get(&urls[1]).bearer_auth("demo-key").send().await?.status(), StatusCode::OK);
    assert_eq!(c.get(&urls[0]).bearer_auth("demo-key").send().await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(c.get(&urls[0]).header("X-API-Key", "demo-key").send().await?.status(), StatusCode::OK);
    let counts = sim.request_counts();
    assert_eq!(counts.police_110.unauthorized, 3);
    assert_eq!(counts.hotline_12345.unauthorized, 3);
    assert_eq!(counts.market.unauthorized, 2);
    // Bad parameters are a 400 in the source's envelope.
    let r = c.get(&urls[0]).header("X-API-Key", "demo-key").query(&[("updated_since", "yesterday")]).send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await?["code"], 400);
    let r = c.get(&urls[2]).header("X-API-Key", "demo-key").query(&[("cursor", "zz")]).send().await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn faults_appear_at_the_configured_rate_and_retries_get_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let faults = Faults { error_500_every: Some(3), rate_429_every: Some(4), slow_every: None };
    let sim = start(SimConfig { faults, env_files: 0, ..small() }, dir.path()).await?;
    let c = reqwest::Client::new();
    let url = format!("{}/api/110/incidents", sim.police_110);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = c.get(&url).header("X-API-Key", "demo-key").send().await?;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        }
        statuses.push(r.status().as_u16());
    }
    // 3, 6, 9, 12 → 500 (500 wins at 12); 4, 8 → 429.
    assert_eq!(statuses, vec![200, 200, 500, 429, 200, 500, 200, 429, 500, 200, 200, 500]);
    let counts = sim.request_counts().police_110;
    assert_eq!((counts.requests, counts.errors_500, counts.rate_limited_429), (12, 4, 2));

    // A retrying connector still gets every page, on every API.
    let truth = sim.truth();
    assert_eq!(all_incidents(&sim, None, 5).await?, truth.incidents);
    assert_eq!(all_tickets(&sim, None, 5).await?, truth.tickets);
    assert_eq!(all_enterprises(&sim, None, 5).await?, truth.enterprises);
    assert_eq!(all_cases(&sim, None, 5).await?, truth.cases);
    let counts = sim.request_counts();
    for s in [counts.police_110, counts.hotline_12345, counts.market, counts.law_enforcement] {
        assert_eq!(s.errors_500, s.requests / 3);
        assert_eq!(s.rate_limited_429, s.requests / 4 - s.requests / 12);
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn slow_requests_are_delayed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let faults = Faults { slow_every: Some((2, Duration::from_millis(300))), ..Faults::default() };
    let sim = start(SimConfig { faults, env_files: 0, ..small() }, dir.path()).await?;
    let c = reqwest::Client::new();
    let url = format!("{}/api/zhzf/cases", sim.law_enforcement);
    let mut times = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        let r = c.get(&url).header("X-API-Key", "demo-key").send().await?;
        assert_eq!(r.status(), StatusCode::OK);
        times.push(t.elapsed());
    }
    assert!(times[1] >= Duration::from_millis(300) && times[3] >= Duration::from_millis(300));
    assert_eq!(sim.request_counts().law_enforcement.slowed, 2);
    sim.shutdown().await;
    Ok(())
}

fn max_ts(items: &[Value]) -> String {
    items.iter().filter_map(|v| v["updated_at"].as_str()).max().unwrap_or_default().to_string()
}

fn plus_one_second_local(ts: &str) -> Result<String, Box<dyn std::error::Error>> {
    let t = chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S")? + chrono::Duration::seconds(1);
    Ok(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn plus_one_second_iso(ts: &str) -> Result<String, Box<dyn std::error::Error>> {
    let t = chrono::DateTime::parse_from_rfc3339(ts)? + chrono::Duration::seconds(1);
    Ok(t.to_rfc3339())
}

fn changed(before: &[Value], after: &[Value], key: &str) -> Vec<Value> {
    let mut out: Vec<Value> =
        after.iter().filter(|a| !before.iter().any(|b| b[key] == a[key] && b == *a)).cloned().collect();
    out.sort_by(|a, b| (a["updated_at"].as_str(), a[key].as_str()).cmp(&(b["updated_at"].as_str(), b[key].as_str())));
    out
}

#[tokio::test]
async fn advance_is_seen_by_incremental_queries() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sim = start(SimConfig { env_files: 0, ..small() }, dir.path()).await?;
    let before = sim.truth();
    assert_eq!(sim.advance(12), 12);
    let after = sim.truth();

    let ch110 = changed(&before.incidents, &after.incidents, "jjdbh");
    let ch12345 = changed(&before.tickets, &after.tickets, "ticket_no");
    let chcases = changed(&before.cases, &after.cases, "case_no");
    assert_eq!(ch110.len() + ch12345.len() + chcases.len(), 12);
    assert_eq!((ch110.len(), ch12345.len(), chcases.len()), (4, 4, 4));
    for v in &ch110 {
        let old = before.incidents.iter().find(|b| b["jjdbh"] == v["jjdbh"]).ok_or("missing")?;
        let i = lianqin_sim::INCIDENT_STAGES.iter().position(|s| Some(*s) == old["jqzt"].as_str()).ok_or("stage")?;
        assert_eq!(v["jqzt"], lianqin_sim::INCIDENT_STAGES[i + 1]);
        assert!(v["updated_at"].as_str() > old["updated_at"].as_str());
    }
    for v in &chcases {
        let old = before.cases.iter().find(|b| b["case_no"] == v["case_no"]).ok_or("missing")?;
        let i = lianqin_sim::CASE_STAGES.iter().position(|s| Some(*s) == old["stage"].as_str()).ok_or("stage")?;
        assert_eq!(v["stage"], lianqin_sim::CASE_STAGES[i + 1]);
    }

    let since = plus_one_second_local(&max_ts(&before.incidents))?;
    assert_eq!(all_incidents(&sim, Some(&since), 2).await?, ch110);
    let since = plus_one_second_local(&max_ts(&before.tickets))?;
    assert_eq!(all_tickets(&sim, Some(&since), 2).await?, ch12345);
    let since = plus_one_second_iso(&max_ts(&before.cases))?;
    assert_eq!(all_cases(&sim, Some(&since), 2).await?, chcases);
    // The market register does not change.
    let since = plus_one_second_iso(&max_ts(&before.enterprises))?;
    assert!(all_enterprises(&sim, Some(&since), 2).await?.is_empty());
    assert_eq!(before.enterprises, after.enterprises);

    // Data does not change without advance().
    assert_eq!(sim.truth(), after);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn env_csv_is_gbk_with_expected_rows_and_broken_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sim = start(SimConfig { env_files: 2, env_rows_per_file: 30, ..small() }, dir.path()).await?;
    let truth = sim.truth();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["complaints_20250315_01.jsonl", "水质监测_20250315_01.csv", "水质监测_20250315_02.csv"]);

    let header =
        "监测点编号,监测点名称,水体名称,采样时间,溶解氧,高锰酸盐指数,氨氮,总磷,经度,纬度,目标水质类别,所属区县";
    for (i, name) in ["水质监测_20250315_01.csv", "水质监测_20250315_02.csv"].iter().enumerate() {
        let bytes = std::fs::read(dir.path().join(name))?;
        assert!(std::str::from_utf8(&bytes).is_err(), "{name} must not be UTF-8");
        let lines: Vec<&[u8]> = bytes.strip_suffix(b"\n").ok_or("no final newline")?.split(|b| *b == b'\n').collect();
        assert!(lines.iter().all(|l| l.ends_with(b"\r")), "CRLF line endings");
        let lines: Vec<&[u8]> = lines.iter().map(|l| &l[..l.len() - 1]).collect();
        let (h, _) = encoding_rs::GBK.decode_without_bom_handling(lines[0]);
        assert_eq!(h, header);
        let expected_lines = 1 + 30 + usize::from(i == 0);
        assert_eq!(lines.len(), expected_lines, "{name}");
        let mut undecodable = 0;
        for (n, l) in lines.iter().enumerate().skip(1) {
            match encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(l) {
                Some(text) => {
                    let row =
                        truth.env_rows.iter().find(|r| r.file == *name && r.line == n + 1).ok_or("row not in truth")?;
                    assert!(text.starts_with(&format!("{},{}", row.point_code, row.point_name)));
                    assert_eq!(text.split(',').count(), 12);
                }
                None => {
                    undecodable += 1;
                    let b = truth
                        .broken
                        .iter()
                        .find(|b| b.source == "env_csv" && b.line == Some(n + 1))
                        .ok_or("broken not in truth")?;
                    assert_eq!(b.raw.as_deref(), Some(*l));
                    assert_eq!(b.file.as_deref(), Some(*name));
                }
            }
        }
        assert_eq!(undecodable, usize::from(i == 0));
        assert_eq!(truth.env_rows.iter().filter(|r| r.file == *name).count(), 30);
    }
    let flagged: Vec<_> = truth.env_rows.iter().filter(|r| r.flag.is_some()).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].dissolved_oxygen, "未检出");
    assert!(
        truth
            .env_rows
            .iter()
            .filter(|r| r.flag.is_none())
            .all(|r| r.dissolved_oxygen.parse::<f64>().is_ok() && r.total_p.parse::<f64>().is_ok())
    );

    // Complaints: UTF-8 JSON lines, one invalid.
    let text = std::fs::read_to_string(dir.path().join("complaints_20250315_01.jsonl"))?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 30 / 5 + 1);
    let bad: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| serde_json::from_str::<Value>(l).is_err())
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(bad, vec![3]);
    assert_eq!(truth.complaints.len(), 6);
    assert!(truth.complaints.iter().all(|c| c.value["complaint_no"].is_string()));
    assert!(truth.broken.iter().any(|b| b.source == "env_complaints" && b.line == Some(3)));

    // A second batch gets new names and adds to the truth.
    let more = sim.write_env_files()?;
    let more_names: Vec<String> =
        more.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    assert_eq!(
        more_names,
        vec!["水质监测_20250316_03.csv", "水质监测_20250316_04.csv", "complaints_20250316_02.jsonl"]
    );
    let truth2 = sim.truth();
    assert_eq!(truth2.env_rows.len(), 120);
    assert_eq!(truth2.broken.iter().filter(|b| b.source == "env_csv").count(), 2);
    assert!(
        std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn check_digits_and_broken_records_are_as_documented() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cfg = SimConfig::default();
    let sim = start(cfg.clone(), dir.path()).await?;
    let truth = sim.truth();
    assert_eq!(truth.enterprises.len(), 200);
    let invalid = truth.enterprises.iter().filter(|e| !uscc_is_valid(e["uscc"].as_str().unwrap_or(""))).count();
    assert_eq!(invalid, 20, "10% of 200 fail a check");
    // Most cases link to an enterprise of the register.
    let usccs: HashSet<&str> = truth.enterprises.iter().filter_map(|e| e["uscc"].as_str()).collect();
    let linked = truth.cases.iter().filter(|c| c["party_uscc"].as_str().is_some_and(|u| usccs.contains(u))).count();
    assert!(linked * 2 > truth.cases.len(), "{linked} of {}", truth.cases.len());
    // Citizen IDs: a few percent of the 18-digit ones invalid; some written
    // in the 15-digit form; about a third of 110 reporters give none.
    let ids: Vec<&str> = truth.incidents.iter().filter_map(|v| v["bjrsfzh"].as_str()).collect();
    let id18: Vec<&&str> = ids.iter().filter(|id| id.len() == 18).collect();
    let bad = id18.iter().filter(|id| !citizen_id_is_valid(id)).count();
    assert!(bad > 0 && bad * 10 < id18.len(), "{bad} of {}", id18.len());
    assert!(ids.iter().any(|id| id.len() == 15), "some 15-digit IDs");
    let without = truth.incidents.len() - ids.len();
    assert!(without * 5 > truth.incidents.len() && without * 2 < truth.incidents.len(), "{without} without an ID");
    // Who is who: every reporter, caller and individual party has a
    // person; some citizens appear in several systems.
    let persons = &truth.persons;
    let keyed = truth.incidents.iter().filter(|v| v.get("jjdbh").is_some()).count();
    let individual = truth.cases.iter().filter(|c| c["party_uscc"].is_null()).count();
    assert_eq!(persons.len(), keyed + truth.tickets.len() + individual);
    assert_eq!(persons, &lianqin_sim::persons(&cfg), "the truth is a function of the config");
    let mut sources_of: HashMap<usize, HashSet<&str>> = HashMap::new();
    for (k, p) in persons {
        sources_of.entry(*p).or_default().insert(k.split(':').next().unwrap());
    }
    assert!(sources_of.values().filter(|s| s.len() >= 2).count() > 20, "citizens known to several systems");
    // Coordinates inside Huzhou, of the right type except the one flagged item.
    for v in truth.incidents.iter().chain(&truth.tickets).chain(&truth.enterprises).chain(&truth.cases) {
        let (lng, lat) = (v.get("jd").or(v.get("lng")), v.get("wd").or(v.get("lat")));
        if let (Some(lng), Some(lat)) = (lng.and_then(Value::as_f64), lat.and_then(Value::as_f64)) {
            assert!((119.2..=120.5).contains(&lng) && (30.4..=31.2).contains(&lat), "{v}");
        }
    }
    // The broken 110 item (no key) and the flagged one (jd in whole degrees).
    let b110: Vec<_> = truth.broken.iter().filter(|b| b.source == "police_110").collect();
    assert_eq!(b110.len(), 1);
    assert!(b110[0].key.is_none());
    assert_eq!(truth.incidents.iter().filter(|v| v.get("jjdbh").is_none()).count(), 1);
    let bad_jd: Vec<&Value> = truth.incidents.iter().filter(|v| v["jd"].is_string()).collect();
    assert_eq!(bad_jd.len(), 1);
    assert_eq!(bad_jd[0]["jd"], "东经120度");
    assert_eq!(truth.flagged.len(), 1);
    let f = &truth.flagged[0];
    assert_eq!((f.source, f.field, f.flag.as_str()), ("police_110", "jd", "type.jd"));
    assert_eq!(Some(f.key.as_str()), bad_jd[0]["jjdbh"].as_str());
    assert_eq!(truth.broken.len(), 1 + 1 + 1);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tiny_configs_work_and_seed_is_deterministic() -> TestResult {
    let cfg = SimConfig {
        incidents: 5,
        tickets: 1,
        enterprises: 1,
        cases: 1,
        env_files: 1,
        env_rows_per_file: 2,
        ..SimConfig::default()
    };
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start(cfg.clone(), d1.path()).await?;
    let b = start(cfg, d2.path()).await?;
    let (ta, tb) = (a.truth(), b.truth());
    assert_eq!(ta, tb);
    assert_eq!(ta.incidents.len(), 7);
    assert_eq!(all_incidents(&a, None, 2).await?, ta.incidents);
    assert_eq!(all_enterprises(&a, None, 1).await?, ta.enterprises);
    assert_eq!(ta.env_rows.len(), 2);
    assert_eq!(ta.broken.len(), 3);
    assert_eq!(ta.flagged.len(), 1);
    let f1 = std::fs::read(d1.path().join("水质监测_20250315_01.csv"))?;
    let f2 = std::fs::read(d2.path().join("水质监测_20250315_01.csv"))?;
    assert_eq!(f1, f2);
    let zero = SimConfig { incidents: 0, tickets: 0, enterprises: 0, cases: 0, env_files: 0, ..SimConfig::default() };
    let d3 = tempfile::tempdir()?;
    let z = start(zero, d3.path()).await?;
    assert_eq!(all_cases(&z, None, 10).await?, Vec::<Value>::new());
    assert_eq!(z.truth().incidents.len(), 2, "the two planted 110 items are always served");
    assert_eq!(z.advance(3), 0);
    a.shutdown().await;
    b.shutdown().await;
    z.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let dir = std::env::temp_dir();
    let bad = SimConfig { api_key: String::new(), ..SimConfig::default() };
    assert!(start(bad, &dir).await.is_err());
    let bad = SimConfig { faults: Faults { error_500_every: Some(0), ..Faults::default() }, ..SimConfig::default() };
    assert!(start(bad, &dir).await.is_err());
}
