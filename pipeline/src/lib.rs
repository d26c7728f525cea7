//! # lianqin-pipeline — the hub runtime
//!
//! ```text
//!  department systems ──► connectors ──► bus (embedded redb | Kafka)
//!                                            │  raw.<source> topics
//!                                            ▼
//!                     pipeline worker: micro-batch → DataFusion SQL mapping
//!                                            │  validate → quarantine
//!                                            ▼
//!     Delta Lake libraries: element · matter · matter_event · quarantine · raw_<source>
//!                                            │
//!                                            ▼
//!                              analyst SQL (`lianqin sql`)
//! ```
//!
//! * [`schema`] — library schemas and code tables (data in `schemas/`).
//! * [`mapping`] — per-source mapping files (SQL over the raw micro-batch).
//! * [`normalize`] — runs a mapping, validates, routes failures to quarantine.
//! * [`library`] — the Delta tables and exactly-once commits.
//! * [`hub`] — sources + worker runtime: one consume loop, batch commits in
//!   named steps, the repeat index, post-commit steps (change feeds, flows).
//! * [`replay`] — quarantined records through the current mapping again
//!   (`lianqin replay`), exactly once.
//! * [`metrics`] — Prometheus `/metrics` of a running hub (a leaf the hub updates).
//! * [`status`] — `lianqin status`: each source's feed (state, last error, today, lag, open quarantine).
//! * [`query`] — analyst SQL.
//! * [`current`] — the current state of `matter`/`matter_event` kept as a
//!   snapshot refreshed from new history files (not re-aggregated per query).
//! * [`joint`] — joint matters (`matter_group`).
//! * [`persons`] — person elements resolved into persons (`element_link`,
//!   `element_review`).
//! * [`recheck`] — the half-yearly second callback (`matter_recheck`), kept in a
//!   [`journal`] (append-only JSON lines, also the joint-matter decisions).
//! * [`confirm`] — record confirmation (效力互认): signed confirmations of a
//!   matter version (`matter_confirmation`), `lianqin confirm`.
//! * [`sharing`] — sharing requests → approval → grants with expiry (`lianqin share`).
//! * [`report`] — monthly and half-yearly station reports (XLSX + PDF via
//!   `lianqin-report`) from the KPI views, with the reader's permissions.
//! * [`kpi`] — station supervision KPIs as SQL views over `matter` (registered by [`query`]).
//! * [`sealed`] — sensitive columns sealed at rest with per-department data
//!   keys (`lianqin-seal`): sealed on append, opened where queries read.
//! * [`udf`] — domain SQL functions (check digits, coordinates, calendar).
//! * [`config`] — the TOML config: owns every config type.
//! * [`audit`] — the audit writer (a leaf: the hub and servers call it), the
//!   replicated audit topic ([`audit::ship`]) and the `audit` SQL table
//!   ([`audit::table`]).
//! * `demo` — the simulated departments and `lianqin demo` (feature `demo`).
//! * `bench` — `lianqin bench ingest` / `kafka` (feature `demo`).
//! * [`policy`] — the one policy loader (policy set + the data dir's token key).
//! * [`flows`] — outbound flows and exports filtered per department.
//! * [`server`] — the Postgres wire protocol server (`lianqin serve`).
//! * [`cli`] — the `lianqin` command line's logic: logins, auditor checks, option values, error reports.
//!
//! ## Module dependencies (no cycles)
//! Lower modules never import higher ones:
//!
//! ```text
//! time, schema, metrics   ← leaves (with the crate root's PipelineError)
//! audit                   ← the writer: imports nothing of the runtime
//! audit::ship, audit::table → audit
//! udf → mapping::personal (person_token), schema, time;  mapping → schema, time;  normalize → mapping, schema, udf
//! sealed → audit (master key), schema, (lianqin-seal)
//! library → schema, sealed;  confirm → journal;  current → legacy, mapping::personal, schema, sealed;  joint → journal, (lianqin-resolve);  persons → journal, (lianqin-resolve);  recheck → journal, mapping::personal, schema;  kpi ← leaf (SQL text)
//! report → query, kpi, recheck, (lianqin-report);  query → audit, confirm, current, joint, kpi, persons, recheck, audit::table, legacy, library, mapping::personal, schema, sealed, udf
//! server → audit, audit::table, library, query, schema, config
//! config → schema;  policy → mapping::personal, sharing;  sharing → journal
//! flows → audit, config, library, query, schema, udf
//! hub → audit, audit::ship, config, flows, library, mapping, metrics, normalize, query, schema
//! replay → audit, hub, library, query;  status → audit, config, library, query
//! demo, bench → config, hub, query
//! ```

#![warn(missing_docs)]

pub mod audit;
/// The replicated audit topic (moved to [`audit::ship`]; this path is kept).
pub use audit::ship as audit_ship;
/// The `audit` SQL table (moved to [`audit::table`]; this path is kept).
pub use audit::table as audit_table;
#[cfg(feature = "demo")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod confirm;
pub mod console;
pub mod current;
#[cfg(feature = "demo")]
pub mod demo;
pub mod flows;
pub mod hub;
pub mod joint;
pub mod journal;
pub mod kpi;
pub mod legacy;
pub mod library;
pub mod mapping;
pub mod metrics;
pub mod normalize;
pub mod persons;
pub mod policy;
pub mod query;
pub mod recheck;
pub mod replay;
pub mod report;
pub mod schema;
pub mod sealed;
pub mod server;
pub mod sharing;
pub mod status;
pub mod time;
pub mod udf;

/// What `lianqin demo` and `lianqin bench` answer in a build without the
/// `demo` feature (production builds: `--no-default-features --features kafka`).
#[cfg(not(feature = "demo"))]
pub const NO_DEMO: &str = "this lianqin was built without the simulated department systems and benchmarks \
(cargo feature `demo`); build it with default features, e.g. \
`cargo run -p lianqin-pipeline --bin lianqin -- demo`";

/// Errors of the pipeline. Each names what and where (source, record key,
/// field, table, file and line).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad configuration or mapping (found at start-up).
    #[error("config: {0}")]
    Config(String),
    /// A schema file is wrong.
    #[error("schema: {0}")]
    Schema(String),
    /// A mapping failed at run time.
    #[error("mapping: {0}")]
    Mapping(String),
    /// A library (Delta) table operation failed.
    #[error("library: {0}")]
    Library(String),
    /// A query failed.
    #[error("query: {0}")]
    Query(String),
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] lianqin_bus::BusError),
    /// A department system a flow pushes into did not acknowledge (retried).
    #[error("flow delivery: {0}")]
    Unavailable(String),
    /// A bug: should not happen.
    #[error("internal: {0}")]
    Internal(String),
}
