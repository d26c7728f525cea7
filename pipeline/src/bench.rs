//! `lianqin bench ingest`: end-to-end ingest throughput on the embedded bus.
//!
//! Generates police-110-shaped JSON records as text (as an API page would
//! deliver them), then measures the whole path: JSON parse → envelope with
//! content hash → durable publish to the bus (fsync) → micro-batch consume →
//! DataFusion normalization and validation → Delta commits with provenance
//! and offsets. Prints records/s and peak RSS.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use lianqin_bus::{Envelope, raw_topic};

use crate::PipelineError;
use crate::config::HubConfig;
use crate::hub::Hub;

/// Result of one benchmark run.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// Records ingested.
    pub records: u64,
    /// Seconds spent parsing and publishing durably.
    pub publish_secs: f64,
    /// Seconds spent consuming, normalizing and committing.
    pub process_secs: f64,
    /// Peak resident set size, bytes (from /proc, 0 if unknown).
    pub peak_rss: u64,
    /// Records accepted into the libraries.
    pub accepted: u64,
    /// Pipelined runs (publishing and processing side by side, as
    /// `lianqin run` does): seconds from the first publish to the last
    /// commit. `None` when the stages ran one after the other.
    pub wall_secs: Option<f64>,
}

impl IngestReport {
    /// End-to-end records per second.
    pub fn records_per_sec(&self) -> f64 {
        let secs = self.wall_secs.unwrap_or(self.publish_secs + self.process_secs);
        self.records as f64 / secs.max(1e-9)
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "records            {}", self.records);
        let _ = writeln!(s, "accepted           {}", self.accepted);
        let _ = writeln!(
            s,
            "parse+publish      {:.2} s ({:.0} records/s, durable)",
            self.publish_secs,
            self.records as f64 / self.publish_secs.max(1e-9)
        );
        match self.wall_secs {
            None => {
                let _ = writeln!(
                    s,
                    "normalize+commit   {:.2} s ({:.0} records/s)",
                    self.process_secs,
                    self.records as f64 / self.process_secs.max(1e-9)
                );
                let _ = writeln!(
                    s,
                    "end to end         {:.0} records/s (stages one after the other)",
                    self.records_per_sec()
                );
            }
            Some(w) => {
                let _ = writeln!(
                    s,
                    "end to end         {:.0} records/s (stages side by side, {w:.2} s first publish → last commit)",
                    self.records_per_sec()
                );
            }
        }
        let _ = writeln!(s, "peak RSS           {:.0} MiB", self.peak_rss as f64 / 1048576.0);
        s
    }
}

/// Peak RSS of this process (VmHWM), bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

const STAGES: [&str; 5] = ["接警", "研判", "处置", "复盘", "总结"];
const DIVS: [&str; 5] = ["330502", "330503", "330521", "330522", "330523"];

/// One synthetic 110 record as JSON text.
pub fn synthetic_110(i: u64) -> String {
    let div = DIVS[(i % 5) as usize];
    format!(
        r#"{{"jjdbh":"J{div}2025{i:010}","bjsj":"2025-03-15 10:{m:02}:{s:02}","bjnr":"群众报警称有人在太湖非法捕捞","afdz":"湖州市吴兴区太湖街道{i}号","xzqh":"{div}","jd":{lon:.6},"wd":{lat:.6},"zbx":"GCJ-02","ajlb":"非法捕捞","jqzt":"{st}","bjrxm":"张三","bjrsfzh":"33050219800101{seq:03}{x}","bjrdh":"1381234{p:04}","cph":"浙E{p:05}","gxdw":"吴兴区太湖生态联勤警务站","updated_at":"2025-03-15 11:{m:02}:{s:02}"}}"#,
        m = (i / 60) % 60,
        s = i % 60,
        lon = 120.1 + (i % 1000) as f64 * 0.0001,
        lat = 30.87 + (i % 1000) as f64 * 0.0001,
        st = STAGES[(i % 5) as usize],
        seq = i % 1000,
        x = "X",
        p = i % 10000,
    )
}

/// How `lianqin bench ingest` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Publish change-feed events (off by default on the embedded bus).
    pub change_feeds: bool,
    /// Publish and process side by side (as `lianqin run` does) instead of
    /// publishing everything first.
    pub pipelined: bool,
}

/// Runs the ingest benchmark in `data_dir` (should be empty).
pub async fn ingest(
    data_dir: &Path,
    records: u64,
    batch: usize,
    opts: IngestOptions,
) -> Result<IngestReport, PipelineError> {
    let change_feeds = opts.change_feeds;
    let text = format!(
        r#"
[pipeline]
change_feeds = {change_feeds}
batch_max_records = {batch}
[[sources]]
id = "bench_110"
department = "police"
mapping = "police_110"
[sources.connector]
type = "file"
dir = "{dir}/unused"
key_columns = ["jjdbh"]
"#,
        dir = data_dir.display()
    );
    let cfg = HubConfig::parse(&text, "bench", data_dir)?;
    let hub = Hub::open(cfg, data_dir).await?;
    let bus = hub.bus();
    let topic = raw_topic("lianqin.", "bench_110");
    if opts.pipelined {
        let started = Instant::now();
        let publisher = {
            let (bus, topic) = (std::sync::Arc::clone(&bus), topic.clone());
            tokio::spawn(async move { publish_synthetic(&bus, &topic, records).await })
        };
        let mut accepted = 0u64;
        let publish_secs = loop {
            // Once the publisher is done, one more pass drains the rest.
            let finished = publisher.is_finished();
            let stats = hub.process_available().await?;
            accepted += stats.accepted;
            if finished {
                break publisher.await.map_err(|e| PipelineError::Internal(format!("bench publisher: {e}")))??;
            }
            if stats.read == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        let wall = started.elapsed().as_secs_f64();
        return Ok(IngestReport {
            records,
            publish_secs,
            process_secs: wall,
            peak_rss: peak_rss(),
            accepted,
            wall_secs: Some(wall),
        });
    }
    let publish_secs = publish_synthetic(&bus, &topic, records).await?;
    let t = Instant::now();
    let stats = hub.process_available().await?;
    let process_secs = t.elapsed().as_secs_f64();
    Ok(IngestReport {
        records,
        publish_secs,
        process_secs,
        peak_rss: peak_rss(),
        accepted: stats.accepted,
        wall_secs: None,
    })
}

/// Result of the Kafka benchmark.
#[derive(Debug, Clone)]
pub struct KafkaReport {
    /// Throughput run.
    pub ingest: IngestReport,
    /// Freshness samples (records).
    pub samples: u64,
    /// Source fetch → committed in the library, median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Throughput through Kafka (publish N records, then drain) and freshness:
/// a worker runs while records are published in bursts every 100 ms; each
/// library row records when its source record was fetched (`fetched_at`)
/// and when it was committed (`ingested_at`), whose difference is the
/// source-change → visible-in-the-library latency.
pub async fn kafka(data_dir: &Path, brokers: &str, records: u64, batch: usize) -> Result<KafkaReport, PipelineError> {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let prefix = format!("bench{n}.");
    let text = format!(
        r#"
[bus]
kind = "kafka"
topic_prefix = "{prefix}"
partitions = 3
[bus.kafka]
brokers = "{brokers}"
partitions = 3
replication_factor = 1
[pipeline]
group = "{prefix}pipeline"
batch_max_records = {batch}
batch_wait_ms = 50
[[sources]]
id = "bench_110"
department = "police"
mapping = "police_110"
[sources.connector]
type = "file"
dir = "{dir}/unused"
key_columns = ["jjdbh"]
"#,
        dir = data_dir.display()
    );
    let cfg = HubConfig::parse(&text, "bench-kafka", data_dir)?;
    let hub = std::sync::Arc::new(Hub::open(cfg, data_dir).await?);
    let bus = hub.bus();
    let topic = raw_topic(&prefix, "bench_110");
    // Throughput: publish everything, then drain.
    let publish_secs = publish_synthetic(&bus, &topic, records).await?;
    let t = Instant::now();
    let stats = hub.process_available().await?;
    let process_secs = t.elapsed().as_secs_f64();
    let ingest = IngestReport {
        records,
        publish_secs,
        process_secs,
        peak_rss: peak_rss(),
        accepted: stats.accepted,
        wall_secs: None,
    };
    // Freshness: a running worker, records arriving in bursts.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = {
        let hub = std::sync::Arc::clone(&hub);
        tokio::spawn(async move { hub.run_worker(rx).await })
    };
    let base = records;
    let burst_start = chrono::Utc::now().timestamp_micros();
    let bursts = 50u64;
    let per = 200u64;
    for b in 0..bursts {
        let envs: Vec<Envelope> = (0..per).map(|k| bench_envelope(base + b * per + k)).collect::<Result<_, _>>()?;
        bus.publish(&topic, &envs, None).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let want = (records + bursts * per) as i64;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let e = crate::query::QueryEngine::new(&hub.store(), &hub.catalog()).await?;
        let got = e.scalar_i64("SELECT count(*) FROM matter_history").await.unwrap_or(0);
        if got >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = tx.send(true);
    let _ = worker.await;
    let e = crate::query::QueryEngine::new(&hub.store(), &hub.catalog()).await?;
    let sql = format!(
        "SELECT count(*) AS n, \
         approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) AS p50, \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) AS p99 FROM \
         (SELECT CAST(CAST(ingested_at AS BIGINT) - CAST(fetched_at AS BIGINT) AS DOUBLE) / 1000.0 AS lat \
          FROM matter_history WHERE CAST(fetched_at AS BIGINT) >= {burst_start})"
    );
    let b = e.sql(&sql).await?;
    let get = |i: usize| -> f64 {
        b.first()
            .and_then(|b| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Float64).ok())
            .and_then(|a| a.as_any().downcast_ref::<arrow::array::Float64Array>().map(|x| x.value(0)))
            .unwrap_or(f64::NAN)
    };
    Ok(KafkaReport { ingest, samples: get(0) as u64, p50_ms: get(1), p99_ms: get(2) })
}

/// Parses and publishes `records` synthetic 110 records durably, 10 000 per
/// bus write; returns the seconds it took.
async fn publish_synthetic(
    bus: &std::sync::Arc<dyn lianqin_bus::Bus>,
    topic: &str,
    records: u64,
) -> Result<f64, PipelineError> {
    let started = Instant::now();
    let mut i = 0u64;
    while i < records {
        let end = (i + 10_000).min(records);
        let envs: Vec<Envelope> = (i..end).map(bench_envelope).collect::<Result<_, _>>()?;
        bus.publish(topic, &envs, None).await?;
        i = end;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn bench_envelope(k: u64) -> Result<Envelope, PipelineError> {
    let line = synthetic_110(k);
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| PipelineError::Internal(format!("bench record {k}: {e}")))?;
    let key = v.get("jjdbh").and_then(|x| x.as_str()).unwrap_or_default().to_string();
    let ts = v.get("updated_at").and_then(|x| x.as_str()).map(str::to_string);
    Ok(Envelope::upsert("bench_110", "police", key, v, ts))
}

/// Result of `lianqin bench file`: a drop file through the real path.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileReport {
    /// Records the file connector published (lines, broken ones included).
    pub records: u64,
    /// Records accepted into the libraries.
    pub accepted: u64,
    /// Records quarantined (broken lines, failed checks).
    pub quarantined: u64,
    /// Seconds from the start of the connector's pass to the last commit.
    pub seconds: f64,
    /// Seconds the connector took to read, parse and publish durably (side
    /// by side with the worker).
    pub connector_seconds: f64,
    /// Records per second, end to end.
    pub rec_per_s: f64,
    /// Peak resident set size, MiB.
    pub peak_rss_mib: f64,
    /// The second pass (`--again`): the same records from a second copy of
    /// the file, through a reopened hub — all repeats.
    #[serde(default)]
    pub again: Option<AgainReport>,
}

/// The re-ingest pass of `lianqin bench file --again`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AgainReport {
    /// Records published again.
    pub records: u64,
    /// Of those, repeats (no library change).
    pub repeats: u64,
    /// Records that landed (should be none).
    pub accepted: u64,
    /// Seconds to open the hub again (the repeat index is kept, no scan).
    pub open_seconds: f64,
    /// Seconds from the start of the connector's pass to the last commit.
    pub seconds: f64,
    /// Records per second, end to end.
    pub rec_per_s: f64,
}

impl FileReport {
    /// Human-readable summary.
    pub fn render(&self) -> String {
        format!(
            "records            {}\naccepted           {}\nquarantined        {}\n\
             connector          {:.2} s (read, parse, durable publish; side by side with the worker)\n\
             end to end         {:.2} s = {:.0} records/s (file → bus → mapping → Delta libraries)\n\
             peak RSS           {:.0} MiB\n{}",
            self.records,
            self.accepted,
            self.quarantined,
            self.connector_seconds,
            self.seconds,
            self.rec_per_s,
            self.peak_rss_mib,
            match &self.again {
                Some(a) => format!(
                    "again (repeats)    {} records, {} repeats, {} accepted: hub opened in {:.2} s, {:.2} s = {:.0} records/s ({:.1}× the first pass)\n",
                    a.records,
                    a.repeats,
                    a.accepted,
                    a.open_seconds,
                    a.seconds,
                    a.rec_per_s,
                    a.rec_per_s / self.rec_per_s.max(1e-9)
                ),
                None => String::new(),
            }
        )
    }
}

/// Ingests one work-order file (the side-by-side benchmark's, see
/// `../shared/bench`) through the real path, as `lianqin run` does: the
/// `file` connector reads it chunk by chunk and publishes durably to the
/// embedded bus while a worker normalizes (mapping `hotline_12345_orders`:
/// the same normalization as the DuckDB peer, plus provenance, repeat check
/// and quarantine) and commits to the Delta libraries. `data_dir` should be
/// empty; the input is linked into its drop folder, never modified. With
/// `again`, a second copy of the file is then ingested by a reopened hub
/// whose file connector lost its checkpoint: the same records, all repeats
/// (the re-ingest figure of issue 12).
pub async fn file(
    data_dir: &Path,
    input: &Path,
    batch: usize,
    chunk: usize,
    again: bool,
) -> Result<FileReport, PipelineError> {
    let input = std::fs::canonicalize(input)
        .map_err(|e| PipelineError::Config(format!("bench input {}: {e}", input.display())))?;
    let drop_dir = data_dir.join("drop");
    std::fs::create_dir_all(&drop_dir).map_err(|e| PipelineError::Internal(format!("{}: {e}", drop_dir.display())))?;
    let name = input.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "input.jsonl".into());
    let link = |as_name: &std::ffi::OsStr| {
        std::os::unix::fs::symlink(&input, drop_dir.join(as_name))
            .map_err(|e| PipelineError::Internal(format!("link {} into {}: {e}", input.display(), drop_dir.display())))
    };
    link(&name)?;
    let text = format!(
        r#"
[pipeline]
batch_max_records = {batch}
[[sources]]
id = "hotline_12345_orders"
department = "hotline_12345"
mapping = "hotline_12345_orders"
interval_secs = 3600
[sources.connector]
type = "file"
dir = "{drop}"
key_columns = ["orderNum"]
chunk_rows = {chunk}
"#,
        drop = drop_dir.display()
    );
    let cfg = HubConfig::parse(&text, "bench-file", data_dir)?;
    let hub = std::sync::Arc::new(Hub::open(cfg.clone(), data_dir).await?);
    let first = ingest_pass(&hub).await?;
    drop(hub);
    let again = if again {
        // A second copy of the same records, through a reopened hub.
        let mut second = std::ffi::OsString::from("again-");
        second.push(&name);
        link(&second)?;
        let opened = Instant::now();
        let hub = std::sync::Arc::new(Hub::open(cfg, data_dir).await?);
        let open_seconds = opened.elapsed().as_secs_f64();
        // The connector would skip a file it has ingested (same content):
        // its checkpoint is lost, as after a restore or a mapping fix.
        let source = "hotline_12345_orders";
        let topic = lianqin_bus::raw_topic(&hub.config().bus.topic_prefix, source);
        let reset = lianqin_bus::Checkpoint { source: source.into(), value: serde_json::json!({ "files": {} }) };
        hub.bus().publish(&topic, &[], Some(reset)).await?;
        let p = ingest_pass(&hub).await?;
        Some(AgainReport {
            records: p.records,
            repeats: p.repeats,
            accepted: p.accepted,
            open_seconds,
            seconds: p.seconds,
            rec_per_s: p.records as f64 / p.seconds.max(1e-9),
        })
    } else {
        None
    };
    Ok(FileReport {
        records: first.records,
        accepted: first.accepted,
        quarantined: first.quarantined,
        seconds: first.seconds,
        connector_seconds: first.connector_seconds,
        rec_per_s: first.records as f64 / first.seconds.max(1e-9),
        peak_rss_mib: peak_rss() as f64 / 1048576.0,
        again,
    })
}

/// What one pass of [`file`] counted.
struct Pass {
    records: u64,
    accepted: u64,
    quarantined: u64,
    repeats: u64,
    seconds: f64,
    connector_seconds: f64,
}

/// One connector pass over the drop folder, side by side with the worker,
/// until everything it published is committed.
async fn ingest_pass(hub: &std::sync::Arc<Hub>) -> Result<Pass, PipelineError> {
    let started = Instant::now();
    let connector = {
        let hub = std::sync::Arc::clone(hub);
        tokio::spawn(async move {
            let r = hub.sync_sources_once().await;
            (r, started.elapsed().as_secs_f64())
        })
    };
    let (mut accepted, mut quarantined, mut repeats) = (0u64, 0u64, 0u64);
    let (runs, connector_seconds) = loop {
        // Once the connector is done, one more pass drains the rest.
        let finished = connector.is_finished();
        let stats = hub.process_available().await?;
        accepted += stats.accepted;
        quarantined += stats.quarantined;
        repeats += stats.repeats;
        if finished {
            break connector.await.map_err(|e| PipelineError::Internal(format!("bench connector: {e}")))?;
        }
        if stats.read == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut records = 0;
    for (id, r) in runs {
        records += r.map_err(|e| PipelineError::Internal(format!("source {id}: {e}")))?.records;
    }
    Ok(Pass { records, accepted, quarantined, repeats, seconds, connector_seconds })
}

/// One `lianqin bench side-by-side` sitting: the DuckDB peer and the hub on
/// the same file, alternately, on the same machine.
#[derive(Debug, Clone)]
pub struct SideBySide {
    /// Input lines.
    pub records: u64,
    /// The peer's records/s, one per run.
    pub duckdb_rec_per_s: Vec<f64>,
    /// The peer's peak RSS, MiB (largest run).
    pub duckdb_peak_rss_mib: f64,
    /// The hub's runs (`lianqin bench file`, one process each).
    pub hub: Vec<FileReport>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl SideBySide {
    /// Median records/s of the hub ÷ that of DuckDB.
    pub fn ratio(&self) -> f64 {
        let hub: Vec<f64> = self.hub.iter().map(|r| r.rec_per_s).collect();
        median(&hub) / median(&self.duckdb_rec_per_s).max(1e-9)
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let hub: Vec<f64> = self.hub.iter().map(|r| r.rec_per_s).collect();
        let rss = self.hub.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);
        let mut s = String::new();
        let _ = writeln!(s, "input              {} lines (../shared/bench generator)", self.records);
        let _ = writeln!(
            s,
            "duckdb normalize   median {:.0} records/s over {} runs {:?}, peak RSS {:.0} MiB",
            median(&self.duckdb_rec_per_s),
            self.duckdb_rec_per_s.len(),
            self.duckdb_rec_per_s.iter().map(|x| x.round() as u64).collect::<Vec<_>>(),
            self.duckdb_peak_rss_mib
        );
        let _ = writeln!(
            s,
            "lianqin ingest     median {:.0} records/s over {} runs {:?}, peak RSS {:.0} MiB",
            median(&hub),
            hub.len(),
            hub.iter().map(|x| x.round() as u64).collect::<Vec<_>>(),
            rss
        );
        if let Some(last) = self.hub.last() {
            let _ = writeln!(s, "lianqin counts     {} accepted, {} quarantined", last.accepted, last.quarantined);
        }
        let _ = writeln!(s, "ratio              {:.2}× DuckDB (hub ÷ peer, medians)", self.ratio());
        s
    }
}

/// Runs the side-by-side ingest benchmark: `peer.sh` (DuckDB) and
/// `<exe> bench file` (the hub, a fresh process and data folder each run)
/// alternately on the same generated file, `runs` times each.
pub fn side_by_side(
    exe: &Path,
    peer_dir: &Path,
    records: u64,
    runs: usize,
    out: &Path,
) -> Result<SideBySide, PipelineError> {
    let peer = peer_dir.join("peer.sh");
    if !peer.is_file() {
        return Err(PipelineError::Config(format!(
            "the DuckDB peer {} is missing (give --peer-dir or LIANQIN_BENCH_PEER)",
            peer.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| PipelineError::Internal(format!("{}: {e}", out.display())))?;
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<String, PipelineError> {
        let o = cmd.output().map_err(|e| PipelineError::Internal(format!("{what}: {e}")))?;
        if !o.status.success() {
            return Err(PipelineError::Internal(format!(
                "{what} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let input = out.join(format!("tickets_{records}.jsonl"));
    let mut report = SideBySide { records, duckdb_rec_per_s: Vec::new(), duckdb_peak_rss_mib: 0.0, hub: Vec::new() };
    for _ in 0..runs.max(1) {
        // peer.sh appends each run's JSON line to `duckdb_runs.jsonl` and
        // prints only a summary: read the lines this run added.
        let runs_file = out.join("duckdb_runs.jsonl");
        let before = std::fs::read_to_string(&runs_file).map(|t| t.lines().count()).unwrap_or(0);
        run(
            std::process::Command::new("bash").arg(&peer).arg(records.to_string()).arg(out).arg("1"),
            "the DuckDB peer",
        )?;
        let text = std::fs::read_to_string(&runs_file)
            .map_err(|e| PipelineError::Internal(format!("the DuckDB peer's runs {}: {e}", runs_file.display())))?;
        let mut got = 0;
        for line in text.lines().skip(before).filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| PipelineError::Internal(format!("peer output `{line}`: {e}")))?;
            let Some(rate) = v["rec_per_s"].as_f64().filter(|r| *r > 0.0) else {
                return Err(PipelineError::Internal(format!("peer output `{line}` has no rec_per_s")));
            };
            report.duckdb_rec_per_s.push(rate);
            report.duckdb_peak_rss_mib = report.duckdb_peak_rss_mib.max(v["peak_rss_mib"].as_f64().unwrap_or(0.0));
            got += 1;
        }
        if got == 0 {
            return Err(PipelineError::Internal(format!(
                "the DuckDB peer added no run to {} (see ../shared/bench/README.md)",
                runs_file.display()
            )));
        }
        let dir = tempfile::tempdir().map_err(|e| PipelineError::Internal(format!("temp dir: {e}")))?;
        let text = run(
            std::process::Command::new(exe)
                .args(["bench", "file", "--json", "--input"])
                .arg(&input)
                .arg("--data-dir")
                .arg(dir.path()),
            "lianqin bench file",
        )?;
        let r: FileReport = serde_json::from_str(text.trim())
            .map_err(|e| PipelineError::Internal(format!("bench file output `{}`: {e}", text.trim())))?;
        report.hub.push(r);
    }
    Ok(report)
}
