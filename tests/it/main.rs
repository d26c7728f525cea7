//! Lianqin end-to-end tests, linked into one test binary.
//!
//! Run everything (and provision the services) with `tests/run.sh`.

mod e2e;
mod crash;
mod audit;
mod kafka;
mod cli;
mod policy;
mod pgwire;
mod flows;
mod sql_source;
mod env_streams;
mod hj212_crash;
mod pushed_and_gateway;
