//! # lianqin-sim — simulated departmental source systems
//!
//! Lianqin's demo (`lianqin demo`) and end-to-end tests need the departments' systems that the
//! standard's clause 4.7 ("gather cross-department data into one platform") and 5.3.10 ("the
//! command area takes instructions from the 110, 12345 … platforms") talk about. This crate
//! fakes them, but over **real protocols**: four HTTP servers bound on `127.0.0.1` (ephemeral
//! ports) and real GBK-encoded CSV files (plus UTF-8 JSON-lines) written into a drop directory.
//!
//! | source | department | transport | pagination | auth |
//! |---|---|---|---|---|
//! | 公安110接处警 | police | `GET /api/110/incidents` | `page`/`page_size` | `X-API-Key` |
//! | 12345政务服务热线 | hotline | `GET /api/12345/tickets` | `offset`/`limit` | `Authorization: Bearer` |
//! | 市场监管企业登记 | market supervision | `GET /api/market/enterprises` | opaque `cursor` | `X-API-Key` |
//! | 综合行政执法 | law enforcement | `GET /api/zhzf/cases` | `pageNo`/`pageSize` | `X-API-Key` |
//! | 生态环境局 water monitoring | ecology & environment | GBK CSV files | — | — |
//! | 12369 environmental complaints | ecology & environment | UTF-8 `.jsonl` files | — | — |
//! | 浙江省公共数据平台 (IRS) gateway | provincial data sharing | [`irs::start_irs`] | `pageNum`/`pageSize` | appKey + md5 sign, secret refresh |
//!
//! Everything is deterministic from [`SimConfig::seed`]. Data only changes through
//! [`Simulation::advance`] and [`Simulation::write_env_files`], never between a failed request
//! (see [`Faults`]) and its retry. [`Simulation::truth`] returns the current state of every
//! source, including the deliberately broken records, so tests can compute expected results
//! independently. See `connectors/sim/README.md` for every endpoint, parameter and field.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lianqin_sim::SimError> {
//! let dir = std::env::temp_dir().join("lianqin-drop");
//! let sim = lianqin_sim::start(lianqin_sim::SimConfig::default(), &dir).await?;
//! println!("110 at {}", sim.police_110);
//! let changed = sim.advance(10);
//! let truth = sim.truth();
//! # let _ = (changed, truth);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod data;
mod files;
pub mod geo;
mod http;
pub mod identity;
pub mod ids;
pub mod incidents;
pub mod irs;
mod joint;
pub mod units;
mod world;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use world::{CASE_STAGES, INCIDENT_STAGES, TICKET_STAGES};

/// What to simulate. Counts are per source; small values (even 0) work.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed for every generator; the same seed gives the same records, files and timestamps.
    pub seed: u64,
    /// Number of well-formed 110 incidents. The 110 server always serves 2 planted items on top:
    /// one broken (no `jjdbh`), one flagged (`jd` = `东经120度`).
    pub incidents: usize,
    /// Number of 12345 tickets.
    pub tickets: usize,
    /// Number of enterprises in the market-supervision register.
    pub enterprises: usize,
    /// Number of comprehensive-law-enforcement cases.
    pub cases: usize,
    /// CSV files per env batch (start() writes one batch when this is > 0).
    pub env_files: usize,
    /// Well-formed data rows per CSV file (the first file of a batch also has one extra broken line).
    pub env_rows_per_file: usize,
    /// The API key every HTTP server requires (`X-API-Key`, or `Authorization: Bearer` for 12345).
    pub api_key: String,
    /// Injected HTTP faults.
    pub faults: Faults,
}

impl Default for SimConfig {
    /// seed 7, incidents 300, tickets 300, enterprises 200, cases 150, env_files 3,
    /// env_rows_per_file 100, api_key "demo-key", no faults.
    fn default() -> Self {
        SimConfig {
            seed: 7,
            incidents: 300,
            tickets: 300,
            enterprises: 200,
            cases: 150,
            env_files: 3,
            env_rows_per_file: 100,
            api_key: "demo-key".to_string(),
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// The demo's simulation at `scale` (`lianqin demo --scale`): records
    /// per source ≈ 300 × scale, everything else as [`SimConfig::default`].
    pub fn scaled(scale: usize) -> SimConfig {
        SimConfig {
            incidents: 300 * scale,
            tickets: 300 * scale,
            enterprises: 200 * scale,
            cases: 150 * scale,
            env_rows_per_file: 100 * scale,
            ..SimConfig::default()
        }
    }
}

/// Injected HTTP faults. Requests are counted per server over ALL requests (any path, any
/// outcome); the Nth, 2Nth, 3Nth … request is affected. When several apply to one request:
/// the slow-down happens first, then 500 wins over 429. Faults are answered before the API
/// key is checked. A value of 0 is rejected by [`start`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Every Nth request answers `500` with the source's JSON error envelope.
    pub error_500_every: Option<u32>,
    /// Every Nth request answers `429` with `Retry-After: 1` and the source's JSON error envelope.
    pub rate_429_every: Option<u32>,
    /// Every Nth request sleeps the given duration before answering (normally, or with a fault).
    pub slow_every: Option<(u32, Duration)>,
}

/// A running simulation. Dropping it also stops the servers (without waiting); prefer
/// [`Simulation::shutdown`].
pub struct Simulation {
    /// Base URL of the 110 server, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub police_110: String,
    /// Base URL of the 12345 server.
    pub hotline_12345: String,
    /// Base URL of the market-supervision server.
    pub market: String,
    /// Base URL of the comprehensive-law-enforcement server.
    pub law_enforcement: String,
    /// Directory the env CSV and JSON-lines files are dropped into (created if missing).
    pub env_drop_dir: PathBuf,
    shared: Arc<http::Shared>,
    servers: Vec<http::RunningServer>,
}

/// Ground truth: the CURRENT version of every record each source holds, in the order the
/// servers serve them (`(updated_at, key)` ascending; a missing key sorts as `""`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Truth {
    /// 110 items exactly as served, including the 2 planted ones (one broken, one flagged).
    pub incidents: Vec<Value>,
    /// 12345 tickets as served.
    pub tickets: Vec<Value>,
    /// Enterprises as served (including the ones whose uscc fails a check; they are not broken).
    pub enterprises: Vec<Value>,
    /// Law-enforcement cases as served.
    pub cases: Vec<Value>,
    /// Every CSV data row written so far that decodes as GBK (the flagged 未检出 rows included),
    /// in file-then-line order. Undecodable lines are only in `broken`.
    pub env_rows: Vec<EnvRow>,
    /// Every well-formed complaint line written so far. The invalid-JSON lines are only in `broken`.
    pub complaints: Vec<ComplaintRow>,
    /// Every broken record, served or written.
    pub broken: Vec<BrokenRecord>,
    /// Records served with a secondary field the hub cannot read: accepted,
    /// that field NULL, flagged (110: the item whose `jd` is `"东经120度"`).
    pub flagged: Vec<FlaggedRecord>,
    /// Records with a known timeline planted for the KPI tests (12345 tickets finished around
    /// the Spring Festival, on make-up working days, in an unpublished calendar year, and a
    /// re-handled ticket), with their callback deadline worked out by hand. Also in `tickets`.
    pub planted: Vec<PlantedRecord>,
    /// Who is who (issue 13): `<source>:<key>` → person number, for every
    /// 110 reporter, 12345 caller and individual law-enforcement party. Two
    /// records with one number are one citizen, however they are written
    /// (15-digit or full-width ID, a typo in the name, `+86`, an old phone).
    pub persons: std::collections::BTreeMap<String, usize>,
}

/// A record planted with a known timeline (also served, and in its source's list in [`Truth`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlantedRecord {
    /// `"hotline_12345"`.
    pub source: &'static str,
    /// The record key (12345: ticket_no).
    pub key: String,
    /// What the record tests.
    pub why: &'static str,
    /// Finish time as served (`YYYY-MM-DD HH:MM:SS`, Beijing time), if finished.
    pub closed_at: Option<&'static str>,
    /// Closed + 3 working days on the official calendar, worked out by hand from the State
    /// Council notice (Beijing time); `None` when the calendar year is not published.
    pub callback_due: Option<&'static str>,
    /// Callback time as served, if called back.
    pub callback_at: Option<&'static str>,
    /// The flag the matter must carry (`"calendar.callback_due"`), if any.
    pub flag: Option<String>,
}

/// A record the hub accepts with one field NULL and a flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlaggedRecord {
    /// `"police_110"`, … (as in [`BrokenRecord::source`]).
    pub source: &'static str,
    /// The record key (110: jjdbh).
    pub key: String,
    /// The raw field that cannot be read (`"jd"`).
    pub field: &'static str,
    /// The flag the record carries in the libraries (`"type.jd"`).
    pub flag: String,
    /// What is wrong with the field.
    pub why: &'static str,
}

/// A record that a connector cannot parse into its source's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenRecord {
    /// `"police_110"`, `"hotline_12345"`, `"market"`, `"law_enforcement"`, `"env_csv"` or `"env_complaints"`.
    pub source: &'static str,
    /// The record key when it has one (110: jjdbh); for file sources `"<file name>:<line>"`.
    pub key: Option<String>,
    /// What is wrong with it.
    pub why: &'static str,
    /// File name (not the full path) for file sources.
    pub file: Option<String>,
    /// 1-based physical line number for file sources (the CSV header is line 1).
    pub line: Option<usize>,
    /// The raw bytes of the line, without the line terminator, for file sources.
    pub raw: Option<Vec<u8>>,
}

/// One decodable data row of an env CSV file; every value is the text exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvRow {
    /// File name (not the full path), e.g. `水质监测_20250315_01.csv`.
    pub file: String,
    /// 1-based physical line number (the header is line 1).
    pub line: usize,
    /// 监测点编号, e.g. `330502WQ01`.
    pub point_code: String,
    /// 监测点名称.
    pub point_name: String,
    /// 水体名称.
    pub water_body: String,
    /// 采样时间 `YYYY-MM-DD HH:MM:SS` (+08:00).
    pub sample_time: String,
    /// 溶解氧 mg/L (or `未检出` in the flagged row).
    pub dissolved_oxygen: String,
    /// 高锰酸盐指数 mg/L.
    pub codmn: String,
    /// 氨氮 mg/L.
    pub ammonia_n: String,
    /// 总磷 mg/L.
    pub total_p: String,
    /// 经度 (CGCS2000).
    pub lng: String,
    /// 纬度 (CGCS2000).
    pub lat: String,
    /// 目标水质类别, e.g. `Ⅲ类`.
    pub target_class: String,
    /// 所属区县, e.g. `吴兴区`.
    pub county: String,
    /// Why a value is flagged (non-numeric), when it is.
    pub flag: Option<&'static str>,
}

/// One well-formed line of a complaints JSON-lines file.
#[derive(Clone, Debug, PartialEq)]
pub struct ComplaintRow {
    /// File name (not the full path), e.g. `complaints_20250315_01.jsonl`.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The parsed object.
    pub value: Value,
    /// When the complaint names its target company by name only (no
    /// `target_uscc`), that company's USCC: the truth enterprise resolution
    /// is measured against.
    pub named_uscc: Option<String>,
}

/// Requests served so far, per server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// The 110 server.
    pub police_110: ServerCounts,
    /// The 12345 server.
    pub hotline_12345: ServerCounts,
    /// The market-supervision server.
    pub market: ServerCounts,
    /// The law-enforcement server.
    pub law_enforcement: ServerCounts,
}

/// Counters of one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// All requests received (any path, any outcome).
    pub requests: u64,
    /// Injected 500 answers.
    pub errors_500: u64,
    /// Injected 429 answers.
    pub rate_limited_429: u64,
    /// Requests delayed by `slow_every`.
    pub slowed: u64,
    /// 401 answers (missing or wrong key).
    pub unauthorized: u64,
}

/// Why the simulation could not start or write files.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is unusable (empty API key, a fault period of 0).
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// A server could not bind 127.0.0.1:0.
    #[error("could not bind the {server} server on 127.0.0.1: {source}")]
    Bind {
        /// Which server.
        server: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Creating, writing or renaming a file failed.
    #[error("file I/O on {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Text that GBK cannot represent (a generator bug).
    #[error("cannot encode as GBK: {0}")]
    Encoding(String),
}

fn validate(cfg: &SimConfig) -> Result<(), SimError> {
    if cfg.api_key.is_empty() {
        return Err(SimError::Config("api_key must not be empty".into()));
    }
    if cfg.faults.error_500_every == Some(0)
        || cfg.faults.rate_429_every == Some(0)
        || cfg.faults.slow_every.is_some_and(|(n, _)| n == 0)
    {
        return Err(SimError::Config("fault periods must be ≥ 1".into()));
    }
    Ok(())
}

/// Who is who in the records a simulation with `cfg` serves — the same as
/// [`Truth::persons`] — without starting one (the simulation is a function
/// of its config).
pub fn persons(cfg: &SimConfig) -> std::collections::BTreeMap<String, usize> {
    world::World::generate(cfg).person_of
}

/// Which of the demo's reports are one incident: the hub's matter id
/// (`110:<jjdbh>`, `12345:<ticket_no>`, `zhzf:<case_no>`) → incident. Some
/// 12345 tickets and law-enforcement cases report an incident 110 took
/// (see the `joint` module); every other report is an incident of its own.
pub fn joint_matters(cfg: &SimConfig) -> std::collections::BTreeMap<String, usize> {
    world::World::generate(cfg).incident_of
}

/// What a simulation with `cfg` serves when it starts (before any
/// [`Simulation::advance`] or env batch), without starting one: the same as
/// [`Simulation::truth`] right after [`start`].
pub fn generate(cfg: &SimConfig) -> Truth {
    truth_of(&world::World::generate(cfg))
}

fn truth_of(w: &world::World) -> Truth {
    let values = |recs: &[world::Rec]| recs.iter().map(|r| r.value.clone()).collect::<Vec<_>>();
    let mut broken = w.http_broken();
    broken.extend(w.file_broken.iter().cloned());
    Truth {
        incidents: values(&w.incidents),
        tickets: values(&w.tickets),
        enterprises: values(&w.enterprises),
        cases: values(&w.cases),
        env_rows: w.env_rows.clone(),
        complaints: w.complaints.clone(),
        broken,
        flagged: w.http_flagged(),
        planted: w.http_planted(),
        persons: w.person_of.clone(),
    }
}

/// Generate the data, start the four HTTP servers on `127.0.0.1` (ephemeral ports), create
/// `env_drop_dir` if needed and, when `cfg.env_files > 0`, write the first env batch
/// (`cfg.env_files` CSV files and one complaints `.jsonl`). Must be called inside a tokio runtime.
pub async fn start(cfg: SimConfig, env_drop_dir: &Path) -> Result<Simulation, SimError> {
    validate(&cfg)?;
    std::fs::create_dir_all(env_drop_dir)
        .map_err(|source| SimError::Io { path: env_drop_dir.to_path_buf(), source })?;
    let shared = Arc::new(http::Shared::new(cfg.clone()));
    let mut servers = Vec::with_capacity(4);
    for src in [world::Src::Police110, world::Src::Hotline12345, world::Src::Market, world::Src::LawEnforcement] {
        servers.push(http::spawn(Arc::clone(&shared), src).await?);
    }
    let url = |i: usize| servers.get(i).map(|s| s.url.clone()).unwrap_or_default();
    let sim = Simulation {
        police_110: url(0),
        hotline_12345: url(1),
        market: url(2),
        law_enforcement: url(3),
        env_drop_dir: env_drop_dir.to_path_buf(),
        shared,
        servers,
    };
    if cfg.env_files > 0 {
        files::write_batch(&sim.shared, &sim.env_drop_dir, cfg.env_files)?;
    }
    tracing::info!(
        police_110 = %sim.police_110, hotline_12345 = %sim.hotline_12345, market = %sim.market,
        law_enforcement = %sim.law_enforcement, env_drop_dir = %sim.env_drop_dir.display(),
        "simulated sources started"
    );
    Ok(sim)
}

impl Simulation {
    /// The current state of every source (see [`Truth`]).
    pub fn truth(&self) -> Truth {
        truth_of(&self.shared.world())
    }

    /// Move up to `n` records to their next stage — round-robin over 110 incidents (jqzt),
    /// 12345 tickets (status) and law-enforcement cases (stage), each time the least recently
    /// updated record that is neither planted (broken or flagged) nor in its final stage. All records changed by one
    /// call get the same new `updated_at`, one simulated minute after the previous call's (and
    /// strictly after every existing timestamp). A record moves at most one stage per call.
    /// Returns how many records changed (less than `n` when fewer are eligible, 0 once
    /// everything is final). 12345 tickets reaching
    /// 办结 get `finish_time` and `reply`, reaching 回访 get `callback_time` and `satisfaction`;
    /// cases reaching 处罚决定 get their `amount`. Broken records and the market register never change.
    pub fn advance(&self, n: usize) -> usize {
        self.shared.world_mut().advance(n)
    }

    /// Write one more env batch with new file names: `max(cfg.env_files, 1)` CSV files and one
    /// complaints `.jsonl`. Returns the full paths written (CSV files first).
    pub fn write_env_files(&self) -> Result<Vec<PathBuf>, SimError> {
        let n = self.shared.cfg.env_files.max(1);
        files::write_batch(&self.shared, &self.env_drop_dir, n)
    }

    /// An outage of every department system: while `on`, every request
    /// (any server, any path) answers `500` with the source's JSON error
    /// envelope, counted as `errors_500`; off, they answer normally again.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Requests served so far, per server.
    pub fn request_counts(&self) -> RequestCounts {
        self.shared.counts()
    }

    /// The configuration the simulation runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// Stop all servers: stop accepting, let in-flight requests finish (at most 5 s), then return.
    pub async fn shutdown(self) {
        for s in self.servers {
            s.stop().await;
        }
    }
}
