//! The linkage model as data (`schemas/resolution/<kind>.toml`): strong
//! identifiers, blocking rules, comparisons with their levels and
//! m/u probabilities, the prior and the two thresholds. Unknown keys are
//! refused with the file, line and key (`deny_unknown_fields`).
//!
//! ```toml
//! kind = "person"
//! prior = 0.0001            # P(two random records are the same entity)
//! accept = 0.99             # match probability at or above: linked
//! review = 0.80             # at or above (below accept): review queue
//!
//! [[blocking]]              # candidate pairs agree on all these fields
//! fields = ["phone"]
//!
//! [[comparisons]]
//! field = "name"
//! levels = [
//!   { kind = "exact", m = 0.90, u = 0.0005 },
//!   { kind = "jaro_winkler", min = 0.88, m = 0.07, u = 0.003 },
//!   { kind = "else", m = 0.03, u = 0.9965 },
//! ]
//! ```

use serde::Deserialize;

use crate::ResolveError;

/// A whole model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// What the model links (`person`, `unit_place`, …); names the clusters.
    pub kind: String,
    /// Prior probability that two records picked at random are one entity.
    pub prior: f64,
    /// Linked when the match probability is at least this.
    pub accept: f64,
    /// Sent to the review queue when at least this (and below `accept`).
    pub review: f64,
    /// Fields whose equal (normalized, non-empty) values link outright.
    #[serde(default)]
    pub strong: Vec<Strong>,
    /// Candidate pairs: records that agree on every field of one rule.
    #[serde(default)]
    pub blocking: Vec<Blocking>,
    /// The evidence, one comparison per field.
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
}

/// A strong identifier: equal values link outright; different values
/// (both present, both valid after normalization) never link by score —
/// such a pair goes to the review queue at most.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strong {
    /// The field.
    pub field: String,
}

/// A blocking rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocking {
    /// Fields that must all be equal (and present).
    pub fields: Vec<String>,
    /// Only the first `prefix` characters of each value (e.g. 3 for the
    /// district part of an address); all when absent.
    #[serde(default)]
    pub prefix: Option<usize>,
}

/// One comparison: the first level that holds decides its weight; a pair
/// where either value is missing gets weight 0 (no evidence).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The field compared.
    pub field: String,
    /// Comparisons of one group describe one thing and are not
    /// independent evidence (a household's landline and its address): of
    /// their positive weights only the largest counts. Negative weights
    /// all count.
    #[serde(default)]
    pub group: Option<String>,
    /// Levels, most specific first; the last is usually `else`.
    pub levels: Vec<Level>,
}

/// A comparison level with its m and u probabilities.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// How the two values are compared.
    pub kind: LevelKind,
    /// Threshold of `jaro_winkler` (similarity) or `levenshtein` (max
    /// edits), `date_within` (days), `prefix` (characters).
    #[serde(default)]
    pub min: Option<f64>,
    /// P(this level | same entity).
    pub m: f64,
    /// P(this level | different entities).
    pub u: f64,
    /// A pair at this level is never in one cluster, not even through
    /// other records (a different name, a different birth date): the
    /// clusters of the two stay apart unless an operator merges them.
    #[serde(default)]
    pub veto: bool,
}

/// How a level compares two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelKind {
    /// Equal.
    Exact,
    /// Jaro–Winkler similarity at least `min`.
    JaroWinkler,
    /// At most `min` single-character edits.
    Levenshtein,
    /// The first `min` characters are equal.
    Prefix,
    /// Dates (`YYYY-MM-DD`) at most `min` days apart.
    DateWithin,
    /// Anything (the last level).
    Else,
}

impl Model {
    /// Parses and checks a model; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Model, ResolveError> {
        let m: Model =
            toml::from_str(text).map_err(|e| ResolveError::Config(format!("{origin}: {}", e.to_string().trim())))?;
        m.check(origin)?;
        Ok(m)
    }

    /// The shipped enterprise model (`schemas/resolution/unit.toml`).
    pub fn unit() -> Model {
        Model::parse(include_str!("../../../schemas/resolution/unit.toml"), "schemas/resolution/unit.toml")
            .expect("the shipped unit model is valid (tested)")
    }

    /// The shipped person model (`schemas/resolution/person.toml`).
    pub fn person() -> Model {
        Model::parse(include_str!("../../../schemas/resolution/person.toml"), "schemas/resolution/person.toml")
            .expect("the shipped person model is valid (tested)")
    }

    fn check(&self, origin: &str) -> Result<(), ResolveError> {
        let err = |what: String| Err(ResolveError::Config(format!("{origin}: {what}")));
        let prob = |p: f64| p > 0.0 && p < 1.0;
        if !prob(self.prior) || !prob(self.accept) || !prob(self.review) {
            return err("prior, accept and review must be probabilities strictly between 0 and 1".into());
        }
        if self.review > self.accept {
            return err(format!("review ({}) must not exceed accept ({})", self.review, self.accept));
        }
        if self.comparisons.is_empty() {
            return err("at least one [[comparisons]] is needed".into());
        }
        if self.blocking.is_empty() {
            return err("at least one [[blocking]] rule is needed (or every pair would be compared)".into());
        }
        for (i, b) in self.blocking.iter().enumerate() {
            if b.fields.is_empty() {
                return err(format!("[[blocking]] #{}: no fields", i + 1));
            }
        }
        for c in &self.comparisons {
            if c.levels.is_empty() {
                return err(format!("comparison `{}`: no levels", c.field));
            }
            for (i, l) in c.levels.iter().enumerate() {
                if !(l.m > 0.0 && l.m <= 1.0 && l.u > 0.0 && l.u <= 1.0) {
                    return err(format!("comparison `{}` level {}: m and u must be in (0, 1]", c.field, i + 1));
                }
                let needs_min = matches!(
                    l.kind,
                    LevelKind::JaroWinkler | LevelKind::Levenshtein | LevelKind::Prefix | LevelKind::DateWithin
                );
                if needs_min != l.min.is_some() {
                    return err(format!(
                        "comparison `{}` level {} ({:?}): `min` is {}",
                        c.field,
                        i + 1,
                        l.kind,
                        if needs_min { "required" } else { "not allowed" }
                    ));
                }
            }
        }
        Ok(())
    }

    /// The prior as a match weight: log2(λ / (1 − λ)).
    pub fn prior_weight(&self) -> f64 {
        (self.prior / (1.0 - self.prior)).log2()
    }

    /// Match probability of a total weight.
    pub fn probability(weight: f64) -> f64 {
        let b = weight.exp2();
        if b.is_infinite() { 1.0 } else { b / (1.0 + b) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_loads() {
        let m = Model::person();
        assert_eq!(m.kind, "person");
        assert!(m.prior_weight() < -10.0);
        assert_eq!(Model::unit().kind, "unit");
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let text = "kind = \"person\"\nprior = 0.001\naccept = 0.9\nreview = 0.5\nthreshold = 3\n";
        let e = Model::parse(text, "m.toml").unwrap_err().to_string();
        assert!(e.contains("m.toml") && e.contains("line 5") && e.contains("threshold"), "{e}");
    }

    #[test]
    fn bad_models_are_refused_with_the_reason() {
        let base = "kind = \"p\"\nprior = 0.001\naccept = 0.9\nreview = 0.5\n[[blocking]]\nfields = [\"a\"]\n";
        let e = Model::parse(
            &format!(
                "{base}[[comparisons]]\nfield = \"a\"\nlevels = [{{ kind = \"jaro_winkler\", m = 0.5, u = 0.5 }}]\n"
            ),
            "m",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`min` is required"), "{e}");
        let ok = format!("{base}[[comparisons]]\nfield = \"a\"\nlevels = [{{ kind = \"else\", m = 0.5, u = 0.5 }}]\n");
        Model::parse(&ok, "m").unwrap();
        let e = Model::parse(&ok.replace("review = 0.5", "review = 0.95"), "m").unwrap_err().to_string();
        assert!(e.contains("must not exceed accept"), "{e}");
        let e = Model::parse(&ok.replace("[[blocking]]\nfields = [\"a\"]\n", ""), "m").unwrap_err().to_string();
        assert!(e.contains("blocking"), "{e}");
        let e = Model::parse(base, "m").unwrap_err().to_string();
        assert!(e.contains("comparisons"), "{e}");
    }
}
