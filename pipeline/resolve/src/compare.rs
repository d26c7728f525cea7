//! Scoring one pair of records under a [`Model`]: which level of each
//! comparison holds, its match weight log2(m/u), and the total with the
//! prior — every part kept, so a link can be explained (as Splink's
//! waterfall chart does).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Comparison, LevelKind, Model};

/// The evidence of one comparison for a pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    /// The field compared.
    pub field: String,
    /// The level that held (`exact`, `levenshtein<=1`, `else`), or `null`
    /// when a value is missing (no evidence).
    pub level: String,
    /// Its match weight, log2(m/u) (0 for `null`).
    pub weight: f64,
}

/// The score of a pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairScore {
    /// A strong identifier both records carry with the same value, if any
    /// (then the pair is linked whatever the weights say).
    pub strong: Option<String>,
    /// A strong identifier both records carry with different values, or a
    /// comparison at a `veto` level, if any: the pair is never in one
    /// cluster by score (review at most), not even through other records.
    pub conflict: Option<String>,
    /// Prior weight plus every part's weight.
    pub weight: f64,
    /// The match probability of `weight`.
    pub probability: f64,
    /// Each comparison's evidence, in model order.
    pub parts: Vec<Part>,
}

/// The level of `c` that holds for `a` and `b` (index), or `None` when a
/// value is missing or no level holds.
pub fn level_of(c: &Comparison, a: Option<&str>, b: Option<&str>) -> Option<usize> {
    let (a, b) = (a?, b?);
    c.levels.iter().position(|l| crate::store::level_holds(l.kind, l.min.unwrap_or(0.0), a, b))
}

/// Days since 0000-03-01 of a `YYYY-MM-DD` date (for differences only).
pub(crate) fn days(s: &str) -> Option<i64> {
    let mut it = s.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (it.next()??, it.next()??, it.next()??);
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    Some(365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d - 1)
}

fn label(c: &Comparison, i: usize) -> String {
    let l = &c.levels[i];
    match (l.kind, l.min) {
        (LevelKind::Exact, _) => "exact".into(),
        (LevelKind::Else, _) => "else".into(),
        (LevelKind::JaroWinkler, Some(m)) => format!("jaro_winkler>={m}"),
        (LevelKind::Levenshtein, Some(m)) => format!("levenshtein<={m}"),
        (LevelKind::Prefix, Some(m)) => format!("prefix{m}"),
        (LevelKind::DateWithin, Some(m)) => format!("date_within{m}"),
        (k, None) => format!("{k:?}"),
    }
}

/// Scores a pair of (normalized) records.
pub fn score(model: &Model, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> PairScore {
    let strong = model
        .strong
        .iter()
        .find(|s| a.get(&s.field).is_some_and(|v| !v.is_empty() && b.get(&s.field) == Some(v)))
        .map(|s| s.field.clone());
    let mut conflict = model
        .strong
        .iter()
        .find(|s| matches!((a.get(&s.field), b.get(&s.field)), (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() && x != y))
        .map(|s| s.field.clone());
    let mut weight = model.prior_weight();
    let mut parts: Vec<Part> = Vec::with_capacity(model.comparisons.len());
    // Per group: the part with the largest positive weight so far.
    let mut best: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &model.comparisons {
        let (level, w) = match level_of(c, a.get(&c.field).map(String::as_str), b.get(&c.field).map(String::as_str)) {
            Some(i) => {
                if c.levels[i].veto && conflict.is_none() && strong.is_none() {
                    conflict = Some(format!("{}={}", c.field, label(c, i)));
                }
                (label(c, i), (c.levels[i].m / c.levels[i].u).log2())
            }
            None => ("null".to_string(), 0.0),
        };
        let mut part = Part { field: c.field.clone(), level, weight: w };
        if let Some(g) = c.group.as_deref().filter(|_| w > 0.0) {
            match best.get(g) {
                Some(&j) if parts[j].weight >= w => {
                    part.level = format!("{} (group {g}: counted once)", part.level);
                    part.weight = 0.0;
                }
                Some(&j) => {
                    let p: &mut Part = &mut parts[j];
                    weight -= p.weight;
                    p.level = format!("{} (group {g}: counted once)", p.level);
                    p.weight = 0.0;
                    best.insert(g, parts.len());
                }
                None => {
                    best.insert(g, parts.len());
                }
            }
        }
        weight += part.weight;
        parts.push(part);
    }
    if strong.is_some() {
        conflict = None;
    }
    let probability = if strong.is_some() { 1.0 } else { Model::probability(weight) };
    PairScore { strong, conflict, weight, probability, parts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn weights_add_up_and_missing_values_are_no_evidence() {
        let m = Model::person();
        let a = rec(&[("name", "张三"), ("mobile", "13805721234"), ("birth_date", "1980-01-01")]);
        let b = rec(&[("name", "张三"), ("mobile", "13805721234")]);
        let s = score(&m, &a, &b);
        let sum: f64 = m.prior_weight() + s.parts.iter().map(|p| p.weight).sum::<f64>();
        assert!((s.weight - sum).abs() < 1e-9);
        let birth = s.parts.iter().find(|p| p.field == "birth_date").unwrap();
        assert_eq!((birth.level.as_str(), birth.weight), ("null", 0.0));
        assert!(s.parts.iter().find(|p| p.field == "name").unwrap().weight > 0.0);
    }

    #[test]
    fn a_households_landline_and_address_count_once() {
        let m = Model::person();
        let home = [("landline", "05722615128"), ("address", "安吉县灵芝路20号")];
        // Siblings: one character apart, the household's phone and address.
        let a = rec(&[("name", "钱平"), home[0], home[1]]);
        let b = rec(&[("name", "钱艳"), home[0], home[1]]);
        let s = score(&m, &a, &b);
        let landline = s.parts.iter().find(|p| p.field == "landline").unwrap();
        assert_eq!(landline.weight, 0.0, "{s:?}");
        assert!(landline.level.contains("group household: counted once"), "{s:?}");
        let sum: f64 = m.prior_weight() + s.parts.iter().map(|p| p.weight).sum::<f64>();
        assert!((s.weight - sum).abs() < 1e-9);
        assert!(s.probability < m.accept, "siblings are not linked: {s:?}");
        // One person: the same mobile and a typo in a two-character name.
        let c = rec(&[("name", "钱平"), ("mobile", "13805721234")]);
        let d = rec(&[("name", "钱苹"), ("mobile", "13805721234")]);
        assert!(score(&m, &c, &d).probability >= m.accept);
        // Negative weights all count: a different mobile beside the household.
        let e = rec(&[("name", "钱平"), ("mobile", "13805721234"), home[0], home[1]]);
        let f = rec(&[("name", "钱平"), ("mobile", "13905720000"), home[0], home[1]]);
        let s = score(&m, &e, &f);
        assert!(s.parts.iter().any(|p| p.field == "mobile" && p.weight < 0.0));
        assert!(s.probability >= m.accept, "same name, same home, a changed mobile: {s:?}");
    }

    #[test]
    fn different_valid_ids_weigh_against_a_match() {
        let m = Model::person();
        let id1 = lianqin_domain::upgrade_15_to_18("330502800101123").unwrap();
        let id2 = lianqin_domain::upgrade_15_to_18("330502800101125").unwrap();
        let base = [("name", "张三"), ("mobile", "13805721234"), ("address", "吴兴区凤凰路12号")];
        let mut a = rec(&base);
        let mut b = rec(&base);
        a.insert("citizen_id".into(), id1.clone());
        b.insert("citizen_id".into(), id2);
        let s = score(&m, &a, &b);
        assert_eq!(s.conflict.as_deref(), Some("citizen_id"), "{s:?}");
        assert!(s.parts[0].weight < -8.0, "{s:?}");
        b.insert("citizen_id".into(), id1);
        assert_eq!(score(&m, &a, &b).strong.as_deref(), Some("citizen_id"));
    }

    #[test]
    fn date_differences_count_days() {
        assert_eq!(days("2024-03-01").unwrap() - days("2024-02-28").unwrap(), 2);
        assert_eq!(days("2023-03-01").unwrap() - days("2023-02-28").unwrap(), 1);
        assert_eq!(days("2025-01-01").unwrap() - days("2024-12-31").unwrap(), 1);
    }
}
