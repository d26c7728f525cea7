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
//! * [`hub`] — sources + worker runtime.
//! * [`query`] — analyst SQL.
//! * [`udf`] — domain SQL functions (check digits, coordinates, calendar).
//! * [`config`] — the TOML config.
//! * `demo` — the simulated departments and `lianqin demo` (feature `demo`).
//! * `bench` — `lianqin bench ingest` / `kafka` (feature `demo`).
//! * [`flows`] — outbound flows and exports filtered per department.
//! * [`pgserver`] — the Postgres wire protocol server (`lianqin serve`).

#![warn(missing_docs)]

pub mod audit;
pub mod audit_ship;
pub mod audit_table;
#[cfg(feature = "demo")]
pub mod bench;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod flows;
pub mod hub;
pub mod library;
pub mod mapping;
pub mod normalize;
pub mod pgserver;
pub mod query;
pub mod schema;
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
    /// A bug: should not happen.
    #[error("internal: {0}")]
    Internal(String),
}
