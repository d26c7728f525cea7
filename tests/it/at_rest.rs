//! Encryption at rest (issue 16 item 4): whoever reads the data dir's files
//! — DuckDB over the Delta/Parquet files, a byte scan of everything the hub
//! wrote (bus, lake, Delta log statistics, snapshots, journals) — finds no
//! citizen ID or phone in clear, while the hub's users query the values as
//! before (masks on top); a rotated key seals new values and every older one
//! still opens; another master key opens nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, RecordBatch, StringArray};
use lianqin_domain::citizen_id::validate_citizen_id;
use lianqin_tests::{citizen_ids, cli_ok, cli_run, cli_text, lianqin_bin, phones};

fn demo_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new(lianqin_bin()).args(["demo", "--once", "--data-dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", cli_text(&out));
        dir
    })
}

fn strings(b: &RecordBatch, i: usize) -> StringArray {
    let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
    c.as_any().downcast_ref::<StringArray>().unwrap().clone()
}

/// Every citizen ID and mobile number in the records the simulators sent
/// (the raw payloads, read through the hub).
async fn planted(d: &Path) -> BTreeSet<String> {
    let engine = lianqin_tests::engine(d).await;
    let mut out = BTreeSet::new();
    for t in engine.tables().iter().filter(|t| t.starts_with("raw_")) {
        for b in engine.sql(&format!("SELECT payload FROM {t} WHERE payload IS NOT NULL")).await.unwrap() {
            for v in strings(&b, 0).iter().flatten() {
                out.extend(citizen_ids(v));
                out.extend(phones(v));
            }
        }
    }
    out
}

/// The smallest valid 18-character ID a 110 reporter gave (`bjrsfzh`) in
/// a record that was not quarantined (the simulators plant broken ones).
async fn reporter_id(d: &Path) -> String {
    let engine = lianqin_tests::engine(d).await;
    let mut quarantined = String::new();
    for b in engine.sql("SELECT raw FROM quarantine WHERE raw IS NOT NULL").await.unwrap() {
        for v in strings(&b, 0).iter().flatten() {
            quarantined.push_str(v);
        }
    }
    let mut ids = BTreeSet::new();
    for b in engine.sql("SELECT payload FROM raw_police_110 WHERE payload IS NOT NULL").await.unwrap() {
        for v in strings(&b, 0).iter().flatten() {
            let p: serde_json::Value = serde_json::from_str(v).unwrap();
            let usable = |id: &&str| id.len() == 18 && validate_citizen_id(id).is_ok() && !quarantined.contains(*id);
            if let Some(id) = p["bjrsfzh"].as_str().filter(usable) {
                ids.insert(id.to_string());
            }
        }
    }
    ids.into_iter().next().expect("110 reporters with a valid ID")
}

/// (file, column, value) of every non-null value of every Parquet file
/// under `d`, as DuckDB reads them.
fn duckdb_values(d: &Path) -> Vec<(String, String, String)> {
    let script = r#"
import duckdb, glob, json, sys
root = sys.argv[1]
con = duckdb.connect()
for f in sorted(glob.glob(root + '/**/*.parquet', recursive=True)):
    if '/demo/' in f:
        continue
    rel = con.execute("SELECT * FROM read_parquet(?)", [f])
    cols = [c[0] for c in rel.description]
    for row in rel.fetchall():
        for c, v in zip(cols, row):
            if v is not None:
                print(json.dumps([f[len(root):], c, str(v)], ensure_ascii=False))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(d).output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'duckdb'") => {
            assert!(!lianqin_tests::in_ci(), "python3 duckdb is missing but CI=true (tests/run.sh installs it)");
            panic!("install DuckDB for Python (`python3 -m pip install duckdb`) to run this test");
        }
        other => panic!("duckdb: {other:?}"),
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<(String, String, String)>(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_hold_no_clear_personal_data_and_users_still_query_it() {
    let d = demo_dir();
    let planted = planted(d).await;
    assert!(planted.len() > 100, "the demo plants IDs and phones ({} found)", planted.len());
    let found = |s: &str| -> Vec<String> {
        citizen_ids(s).into_iter().chain(phones(s)).filter(|v| planted.contains(v)).collect()
    };

    // DuckDB over every Parquet file (lake and current-state snapshots).
    let values = duckdb_values(d);
    assert!(values.len() > 10_000, "DuckDB read {} values", values.len());
    let mut hits: Vec<String> = values
        .iter()
        .filter(|(_, _, v)| !found(v).is_empty())
        .take(5)
        .map(|(f, c, v)| format!("{f} {c}: {v}"))
        .collect();
    // The sealed columns hold ciphertext for DuckDB.
    for (file, column) in
        [("/lake/element/", "id_value"), ("/lake/element/", "phone"), ("/lake/raw_police_110/", "payload")]
    {
        let vs: Vec<&String> =
            values.iter().filter(|(f, c, _)| f.starts_with(file) && c == column).map(|(_, _, v)| v).collect();
        assert!(vs.len() > 10, "{file} {column}: {} values", vs.len());
        assert!(vs.iter().all(|v| v.starts_with("lqe1:")), "{file} {column} not sealed: {:?}", vs.first());
    }
    let snapshot =
        values.iter().filter(|(f, c, _)| f.starts_with("/current/matter/") && c == "content").collect::<Vec<_>>();
    assert!(!snapshot.is_empty() && snapshot.iter().all(|(_, _, v)| v.starts_with("lqe1:")), "snapshot content");

    // Bytes of every file the hub wrote (the bus, Delta logs with their
    // statistics, journals, …); the department fixtures under demo/ are the
    // simulated source systems, not the hub's.
    for f in walk(d).into_iter().filter(|f| !f.starts_with(d.join("demo"))) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        if let Some(v) = found(&text).first() {
            hits.push(format!("{}: {v}", f.display()));
        }
    }
    assert!(hits.is_empty(), "clear personal data in files:\n{}", hits.join("\n"));

    // The local operator's SQL sees the values, filters on sealed columns work.
    // A 110 reporter's valid ID (each becomes a person element).
    let id = reporter_id(d).await;
    let out = cli_ok(
        d,
        None,
        &["sql", "--format", "csv", &format!("SELECT count(*) AS n FROM element_history WHERE id_value = '{id}'")],
    );
    let n: i64 = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(n >= 1, "{id} not found through the hub: {out}");

    // Policies apply to clear values: the police analyst sees its own
    // department's phones (never ciphertext); the city office sees masks.
    let sql = "SELECT phone, name, id_value FROM element_history WHERE phone IS NOT NULL AND id_type = 'cid'";
    let police = cli_ok(d, Some("wang.police"), &["sql", "--as", "wang.police", "--format", "csv", sql]);
    assert!(police.lines().count() > 10, "{police}");
    assert!(!police.contains("lqe1:"), "ciphertext reached a user: {}", &police[..police.len().min(400)]);
    assert!(!found(&police).is_empty(), "police reads its phones: {}", &police[..police.len().min(400)]);
    let office = cli_ok(d, Some("he.office"), &["sql", "--as", "he.office", "--format", "csv", sql]);
    assert!(office.lines().count() > 10, "{office}");
    assert!(!office.contains("lqe1:") && found(&office).is_empty(), "{}", &office[..office.len().min(400)]);
    assert!(office.lines().skip(1).all(|l| l.contains('*')), "masked: {}", &office[..office.len().min(400)]);

    // Another master key opens nothing (and says why).
    let o = Command::new(lianqin_bin())
        .args(["sql", "--data-dir"])
        .arg(d)
        .arg("SELECT id_value FROM element_history")
        .env("LIANQIN_AUDIT_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", cli_text(&o));
    assert!(found(&cli_text(&o)).is_empty() && !cli_text(&o).contains("panicked"), "{}", cli_text(&o));
    // (the audit trail refuses that key first; the data keys do too)
    let other = lianqin_audit::MasterKey::generate().derive_subkey("data-key-wrap");
    let e = lianqin_seal::Keyring::open(lianqin_pipeline::sealed::key_dir(d), other).unwrap_err().to_string();
    assert!(e.contains("does not unwrap"), "{e}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() { stack.push(path) } else { out.push(path) }
        }
    }
    out
}

/// A raw-table batch of `department` with one record per payload.
fn raw_batch(department: &str, payloads: &[&str]) -> RecordBatch {
    use arrow::array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
    let schema = lianqin_pipeline::schema::Catalog::raw_schema();
    let n = payloads.len();
    let s = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let now = chrono::Utc::now().timestamp_micros();
    let ts = || Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")) as ArrayRef;
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "source_key" => s((0..n).map(|i| Some(format!("{department}-{i}"))).collect()),
            "op" => s(vec![Some("upsert".into()); n]),
            "payload" => s(payloads.iter().map(|p| Some(p.to_string())).collect()),
            "department" => s(vec![Some(department.into()); n]),
            "content_hash" => s((0..n).map(|i| Some(format!("h{i}{department}"))).collect()),
            "fetched_at" | "ingested_at" => ts(),
            "bus_partition" | "bus_offset" => Arc::new(Int64Array::from(vec![0; n])) as ArrayRef,
            _ => s(vec![None; n]),
        })
        .collect();
    RecordBatch::try_new(schema, cols).unwrap()
}

/// `lianqin keys rotate` beside a running writer: values written after it
/// are sealed with the new key (within the keyring's reload interval),
/// every value written before still opens, nothing is rewritten, and the
/// rotation is in the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_seals_new_values_and_old_ones_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = lianqin_pipeline::schema::Catalog::builtin().unwrap();
    let store = lianqin_pipeline::library::LibraryStore::open(d, Arc::clone(&catalog)).await.unwrap();
    store.ensure_raw("s").await.unwrap();
    store.append("raw_s", vec![raw_batch("police", &[r#"{"sfzh":"330502199001011236"}"#])], &[]).await.unwrap();
    let out = cli_ok(d, None, &["keys", "rotate", "--department", "police"]);
    assert!(out.contains("police.2"), "{out}");
    std::thread::sleep(lianqin_seal::RELOAD_EVERY + std::time::Duration::from_millis(200));
    store.append("raw_s", vec![raw_batch("police", &[r#"{"sjhm":"13912345678"}"#])], &[]).await.unwrap();

    // Stored: one value per key version, in ciphertext.
    let ctx = datafusion::prelude::SessionContext::new();
    let files = d.join("lake/raw_s").to_string_lossy().to_string() + "/";
    let stored = ctx.read_parquet(files, Default::default()).await.unwrap().collect().await.unwrap();
    let mut prefixes: Vec<String> = stored
        .iter()
        .flat_map(|b| {
            let i = b.schema().index_of("payload").unwrap();
            strings(b, i)
                .iter()
                .flatten()
                .map(|v| v.split(':').take(2).collect::<Vec<_>>().join(":"))
                .collect::<Vec<_>>()
        })
        .collect();
    prefixes.sort();
    assert_eq!(prefixes, ["lqe1:police.1", "lqe1:police.2"]);

    // Read through the hub: both in clear.
    let engine = lianqin_tests::engine(d).await;
    let b = engine.sql("SELECT payload FROM raw_s ORDER BY payload").await.unwrap();
    let got: Vec<String> =
        b.iter().flat_map(|b| strings(b, 0).iter().flatten().map(str::to_string).collect::<Vec<_>>()).collect();
    assert_eq!(got, [r#"{"sfzh":"330502199001011236"}"#, r#"{"sjhm":"13912345678"}"#]);

    let list = cli_ok(d, None, &["keys", "list"]);
    assert!(list.contains("police.1") && list.contains("police.2"), "{list}");
    assert!(!list.contains("wrapped"), "{list}");
    let rotations = lianqin_tests::audit_events(d)
        .into_iter()
        .filter(|e| e.detail.get("action").and_then(|a| a.as_str()) == Some("data_key_rotate"))
        .count();
    assert_eq!(rotations, 1);
    let o = cli_run(d, None, &["keys", "rotate", "--department", "../etc"]);
    assert!(!o.status.success() && cli_text(&o).contains("not in code table"), "{}", cli_text(&o));
}
