//! Lianqin end-to-end tests, linked into one test binary.
//!
//! Run everything (and provision the services) with `tests/run.sh`.

mod at_rest;
mod audit;
mod cli;
mod confirm;
mod console;
mod crash;
mod current;
mod e2e;
mod env_streams;
mod flows;
mod hj212_crash;
mod joint;
mod kafka;
mod kpi;
mod metrics;
mod persons;
mod pgwire;
mod poison;
mod policy;
mod post_commit;
mod push;
mod pushed_and_gateway;
mod recheck;
mod redteam;
mod replay;
mod report;
mod sharing;
mod sql_source;
mod units;
