//! # lianqin-resolve — one person, one enterprise: explainable record linkage
//!
//! Departments describe the same people and enterprises without a shared
//! key: a 110 reporter with a 15-digit ID, the same citizen as a 12345
//! caller with only a phone, as a law-enforcement party with a full-width
//! ID. This crate decides which source records are one entity, the way
//! Splink does (Fellegi–Sunter), but **as records arrive**:
//!
//! * [`config`] — the model as data (`schemas/resolution/person.toml`):
//!   strong identifiers, blocking rules, comparison levels with m/u
//!   probabilities, prior, `accept` and `review` thresholds;
//! * [`normalize`] — identifiers in one form before matching (citizen ID
//!   15→18, phones, names, addresses, dates);
//! * [`compare`] — the score of a pair with every part kept (explainable);
//! * [`matters`] — joint matters: reports of one incident from several
//!   departments linked by cited numbers, a shared party, or nearness in
//!   space and time (`schemas/resolution/matter.toml`);
//! * [`resolver`] — the incremental, order-independent clusters, the review
//!   queue, operator merge/split as kept decisions, explanations, and
//!   pairwise precision/recall against a ground truth.
//!
//! The crate has no I/O: the hub feeds it records and stores its links,
//! decisions and review queue in the libraries.

pub mod compare;
pub mod config;
pub mod matters;
pub mod normalize;
pub mod resolver;
mod store;

pub use compare::{PairScore, Part, score};
pub use config::Model;
pub use matters::{MatterDecision, MatterGrouper, MatterRule, MatterRules, Report};
pub use resolver::{Decision, Explanation, Link, Record, Resolver, ReviewItem, Rule, pairwise_quality};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A bad model file (file, line, key in the message).
    #[error("resolution model {0}")]
    Config(String),
    /// A record id sent twice.
    #[error("record {0} was already resolved (record ids are unique)")]
    Duplicate(String),
    /// A record id (or cluster) not known.
    #[error("unknown record or cluster {0}")]
    UnknownRecord(String),
    /// An operator decision that cannot be applied.
    #[error("decision refused: {0}")]
    Decision(String),
}
