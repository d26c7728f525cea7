//! Golden tests of the shipped mappings: every `schemas/mappings/<m>.toml`
//! has an input `schemas/mappings/golden/<m>.input.jsonl` (realistic
//! records, at least one of them bad) and the exact library rows it must
//! give, `schemas/mappings/golden/<m>.expected.json` (per library, the
//! quarantine with its reasons included). The records run through the real
//! [`Normalizer`] — the code the hub runs — and the result must equal the
//! expected file. A mapping without golden files fails the test.
//!
//! Input lines: `{"key": …, "department": …, "payload": {…}}`, optionally
//! `"op": "delete"`, `"source_time"`, `"locator"`, `"fetched_at"` (RFC 3339;
//! default [`FETCHED_AT`]); an unparsable record is
//! `{"key": …, "department": …, "error": "why", "raw": "the text"}`. The
//! source id is the mapping name, the bus position `raw.<mapping>/0/<line
//! index>`, `ingested_at` is [`INGESTED_AT`] — so every provenance column is
//! deterministic and compared. Only `row_seq` (a row's position in the
//! output, which follows DataFusion's execution order) is left out, and the
//! rows of each library are compared in a canonical order.
//!
//! Person tokens (`person_token`) are keyed with [`GOLDEN_TOKEN_KEY`], so
//! expected ids do not depend on the machine's key.
//!
//! After a deliberate mapping change, regenerate and then REVIEW the diff:
//! `LIANQIN_BLESS=1 cargo test -p lianqin-pipeline --test golden`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lianqin_bus::{BusRecord, Envelope, Op};
use lianqin_pipeline::mapping::Mapping;
use lianqin_pipeline::normalize::Normalizer;
use lianqin_pipeline::schema::Catalog;
use serde_json::{Map, Value, json};

/// `fetched_at` of records that do not set one.
const FETCHED_AT: &str = "2025-10-08T01:00:00Z";
/// `ingested_at` stamped on every row.
const INGESTED_AT: &str = "2025-10-08T01:00:05Z";
/// Token key of the golden runs (a test key, never a hub's).
const GOLDEN_TOKEN_KEY: &[u8] = b"lianqin-golden-test-key";
/// Columns left out of the comparison (see the module docs).
const IGNORED: &[&str] = &["row_seq"];

fn mappings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/mappings")
}

fn bless() -> bool {
    std::env::var("LIANQIN_BLESS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn micros(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("time {t:?}: {e}")).with_timezone(&Utc)
}

/// Reads `<m>.input.jsonl` into bus records.
fn read_input(path: &Path, source: &str) -> Result<Vec<BusRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{at}: {e}"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let key = s("key").ok_or_else(|| format!("{at}: no \"key\""))?;
        let dept = s("department").ok_or_else(|| format!("{at}: no \"department\""))?;
        let mut env = match s("error") {
            Some(err) => Envelope::unparsable(source, &dept, key, s("raw").unwrap_or_default(), err),
            None => {
                let payload = v.get("payload").cloned().ok_or_else(|| format!("{at}: no \"payload\""))?;
                Envelope::upsert(source, &dept, key, payload, s("source_time"))
            }
        };
        match s("op").as_deref() {
            None | Some("upsert") => {}
            Some("delete") => env.op = Op::Delete,
            Some(o) => return Err(format!("{at}: op {o:?}")),
        }
        env.fetched_at = micros(s("fetched_at").as_deref().unwrap_or(FETCHED_AT));
        env.locator = s("locator");
        let offset = out.len() as u64;
        out.push(BusRecord { topic: format!("raw.{source}"), partition: 0, offset, envelope: env });
    }
    Ok(out)
}

/// Runs the mapping over the input and renders what it produced.
async fn run(catalog: &Arc<Catalog>, mapping_file: &Path, input: &Path) -> Result<Value, String> {
    let mapping = Mapping::load(&mapping_file.display().to_string(), Path::new(".")).map_err(|e| e.to_string())?;
    let source = mapping.name.clone();
    let records = read_input(input, &source)?;
    let normalizer =
        Normalizer::new(Arc::clone(catalog), Arc::new(mapping), &source).await.map_err(|e| e.to_string())?;
    let refs: Vec<&BusRecord> = records.iter().collect();
    let out = normalizer.normalize(&refs, micros(INGESTED_AT).timestamp_micros()).await.map_err(|e| e.to_string())?;
    let mut libs = Map::new();
    for (lib, batch) in &out.libraries {
        let mut w = arrow::json::ArrayWriter::new(Vec::new());
        w.write(batch).map_err(|e| format!("{lib}: {e}"))?;
        w.finish().map_err(|e| format!("{lib}: {e}"))?;
        let bytes = w.into_inner();
        let mut rows: Vec<Value> =
            if bytes.is_empty() { Vec::new() } else { serde_json::from_slice(&bytes).map_err(|e| e.to_string())? };
        for r in &mut rows {
            if let Value::Object(o) = r {
                for c in IGNORED {
                    o.remove(*c);
                }
            }
        }
        rows.sort_by_cached_key(|r| r.to_string());
        libs.insert(lib.clone(), Value::Array(rows));
    }
    Ok(json!({
        "accepted": out.accepted,
        "quarantined": out.quarantined,
        "libraries": libs,
    }))
}

/// Equal, with floats equal to 1e-9 relative (coordinate transforms may
/// differ in the last bits between platforms).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.fract() != 0.0 || y.fract() != 0.0 => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The first difference, as a JSON path, for the failure message.
fn first_difference(path: &str, a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) if same(v, w) => {}
                    (Some(v), Some(w)) => return first_difference(&format!("{path}.{k}"), v, w),
                    (v, w) => return format!("{path}.{k}: expected {v:?}, got {w:?}"),
                }
            }
            String::new()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                if !same(v, w) {
                    return first_difference(&format!("{path}[{i}]"), v, w);
                }
            }
            String::new()
        }
        (Value::Array(x), Value::Array(y)) => format!("{path}: expected {} rows, got {}", x.len(), y.len()),
        _ => format!("{path}: expected {a}, got {b}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_mapping_gives_its_golden_rows() {
    lianqin_pipeline::mapping::personal::install_key(lianqin_pipeline::mapping::personal::TokenKey::from_bytes(
        GOLDEN_TOKEN_KEY,
    ));
    let catalog = Catalog::builtin().expect("catalog");
    let dir = mappings_dir();
    let golden = dir.join("golden");
    let mut mappings: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("schemas/mappings")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    mappings.sort();
    assert!(mappings.len() >= 10, "expected the shipped mappings in {}", dir.display());
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for m in &mappings {
        let name = m.file_stem().unwrap().to_string_lossy().to_string();
        names.insert(name.clone());
        let input = golden.join(format!("{name}.input.jsonl"));
        let expected_path = golden.join(format!("{name}.expected.json"));
        if !input.is_file() {
            failures.push(format!("{name}: no golden input {} (every shipped mapping needs one)", input.display()));
            continue;
        }
        let got = match run(&catalog, m, &input).await {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if got["quarantined"].as_u64() == Some(0) {
            failures.push(format!("{name}: the golden input has no bad record (add one that is quarantined)"));
        }
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if bless() {
            std::fs::write(&expected_path, &text).expect("write expected");
            eprintln!("blessed {} — review the diff before committing", expected_path.display());
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            Err(_) => {
                failures.push(format!(
                    "{name}: no {} (create it with LIANQIN_BLESS=1 and review it)",
                    expected_path.display()
                ));
                continue;
            }
        };
        if !same(&expected, &got) {
            let actual = expected_path.with_extension("actual.json");
            let _ = std::fs::write(&actual, &text);
            failures.push(format!(
                "{name}: output differs from {}: {} (full output in {})",
                expected_path.display(),
                first_difference("", &expected, &got),
                actual.display()
            ));
        }
    }
    // Golden files of mappings that are gone.
    for e in std::fs::read_dir(&golden).expect("schemas/mappings/golden") {
        let f = e.unwrap().file_name().to_string_lossy().to_string();
        if f.starts_with('.') {
            continue;
        }
        let stem = f.split('.').next().unwrap_or_default();
        if !names.contains(stem) {
            failures.push(format!("golden/{f}: no mapping {stem}.toml"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n  {}\nAfter a deliberate change: LIANQIN_BLESS=1 cargo test -p lianqin-pipeline --test golden, \
         then review the diff.",
        failures.len(),
        failures.join("\n  ")
    );
}

/// The person elements of one library's golden output: id_value → element_id.
fn person_ids(mapping: &str) -> std::collections::BTreeMap<String, String> {
    let path = mappings_dir().join("golden").join(format!("{mapping}.expected.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("expected file")).expect("json");
    v["libraries"]["element"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "person")
        .map(|e| {
            (
                e["id_value"].as_str().unwrap_or_default().to_string(),
                e["element_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Identifier normalization across departments, read off the golden files
/// (so a re-bless that breaks it fails here): 110 sends the 15-digit ID
/// `330502800101123`, law enforcement the 18-digit `330502198001011231` of
/// the same person — one element id, one stored id value.
#[test]
fn a_15_digit_id_and_its_18_digit_form_are_one_person_element() {
    let police_input = std::fs::read_to_string(mappings_dir().join("golden/police_110.input.jsonl")).unwrap();
    assert!(police_input.contains("\"bjrsfzh\": \"330502800101123\""), "the 110 golden input sends the 15-digit form");
    let law_input = std::fs::read_to_string(mappings_dir().join("golden/law_enforcement_case.input.jsonl")).unwrap();
    assert!(law_input.contains("\"party_id_card\": \"330502198001011231\""));
    let (police, law) = (person_ids("police_110"), person_ids("law_enforcement_case"));
    let id = "330502198001011231";
    assert!(police.get(id).is_some_and(|e| e.starts_with("pt:")), "110 stores the upgraded id: {police:?}");
    assert_eq!(police.get(id), law.get(id), "one element for both departments");
}

/// §8.1.2 callback deadlines on the official calendar, through the shipped
/// citizen-report mappings: a closing whose 3 working days reach a year whose
/// holiday notice is not embedded (2027), or that starts in one (2024), gets
/// NULL `callback_due` and the flag `calendar.callback_due` — the matter is
/// kept, never given a guessed date; a closing before the 2026 Spring
/// Festival (days off 02-15 … 02-23, Saturday 02-14 worked) gets the date
/// worked out by hand from the State Council notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_due_is_null_and_flagged_when_the_calendar_year_is_not_published() {
    lianqin_pipeline::mapping::personal::install_key(lianqin_pipeline::mapping::personal::TokenKey::from_bytes(
        GOLDEN_TOKEN_KEY,
    ));
    let catalog = Arc::new(Catalog::builtin().expect("catalog"));
    let dir = tempfile::tempdir().expect("tempdir");
    // (closing time in Beijing time, expected callback_due in UTC or None for the flag)
    let cases = [
        ("2026-12-30 16:00:00", None),
        ("2024-12-20 15:00:00", None),
        ("2026-02-13 16:00:00", Some("2026-02-25T08:00:00Z")),
    ];
    for (mapping, department) in [("police_110", "police"), ("hotline_12345", "hotline")] {
        let mut lines = Vec::new();
        for (i, (closed, _)) in cases.iter().enumerate() {
            let payload = if mapping == "police_110" {
                json!({"jjdbh": format!("J3305022026000{i}"), "bjsj": "2024-12-01 08:00:00", "jqzt": "总结",
                       "xzqh": "330502", "gxdw": "吴兴区太湖生态联勤警务站", "updated_at": closed})
            } else {
                json!({"ticket_no": format!("HZ2026000{i}"), "accept_time": "2024-12-01 08:00:00", "status": "办结",
                       "division": "330502", "finish_time": closed, "updated_at": closed})
            };
            lines.push(json!({"key": format!("k{i}"), "department": department, "payload": payload}).to_string());
        }
        let input = dir.path().join(format!("{mapping}.jsonl"));
        std::fs::write(&input, lines.join("\n")).expect("write input");
        let out = run(&catalog, &mappings_dir().join(format!("{mapping}.toml")), &input).await.expect("mapping runs");
        assert_eq!(out["accepted"], json!(cases.len()), "{mapping}: every closing is kept: {out}");
        let matters = out["libraries"]["matter"].as_array().expect("matter rows");
        for (closed, due) in cases {
            let closed_utc = chrono::NaiveDateTime::parse_from_str(closed, "%Y-%m-%d %H:%M:%S").unwrap()
                - chrono::Duration::hours(8);
            let want_closed = closed_utc.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let row = matters
                .iter()
                .find(|m| m["closed_at"].as_str() == Some(want_closed.as_str()))
                .unwrap_or_else(|| panic!("{mapping}: no matter closed at {want_closed}: {matters:?}"));
            let flags = row["flags"].as_str().unwrap_or("[]");
            match due {
                None => {
                    assert!(row.get("callback_due").is_none_or(Value::is_null), "{mapping} {closed}: {row}");
                    assert!(flags.contains("\"calendar.callback_due\""), "{mapping} {closed}: flags {flags}");
                }
                Some(due) => {
                    assert_eq!(row["callback_due"].as_str(), Some(due), "{mapping} {closed}");
                    assert!(!flags.contains("calendar."), "{mapping} {closed}: flags {flags}");
                }
            }
        }
    }
}
