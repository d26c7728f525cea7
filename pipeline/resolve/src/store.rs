//! Compact storage of resolved records and the compiled model: every field
//! value interned once per field (a record is a row of `u32` value ids),
//! exact comparisons by id, blocking keys as 64-bit hashes. A million
//! person records fit in a few hundred MiB (BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use crate::config::{LevelKind, Model};

/// Missing value.
pub(crate) const NONE: u32 = u32::MAX;

/// Interned records.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Field names the model uses, in a fixed order.
    pub fields: Vec<String>,
    index: HashMap<String, usize>,
    values: Vec<Vec<Box<str>>>,
    lookup: Vec<HashMap<Box<str>, u32>>,
    /// `fields.len()` value ids per record.
    rows: Vec<u32>,
    /// Record ids.
    pub ids: Vec<Box<str>>,
}

impl Store {
    pub fn new(model: &Model) -> Store {
        let mut s = Store::default();
        let mut add = |f: &str| {
            if !s.index.contains_key(f) {
                s.index.insert(f.to_string(), s.fields.len());
                s.fields.push(f.to_string());
                s.values.push(Vec::new());
                s.lookup.push(HashMap::new());
            }
        };
        model.strong.iter().for_each(|x| add(&x.field));
        model.blocking.iter().flat_map(|b| &b.fields).for_each(|f| add(f));
        model.comparisons.iter().for_each(|c| add(&c.field));
        s
    }

    pub fn field(&self, name: &str) -> usize {
        self.index[name]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Adds a record; fields the model does not use are not kept.
    pub fn push(&mut self, id: &str, fields: &BTreeMap<String, String>) -> usize {
        let r = self.ids.len();
        self.ids.push(id.into());
        for f in 0..self.fields.len() {
            let v = fields.get(&self.fields[f]).map(String::as_str).filter(|v| !v.is_empty());
            let vid = match v {
                None => NONE,
                Some(v) => match self.lookup[f].get(v) {
                    Some(&i) => i,
                    None => {
                        let i = self.values[f].len() as u32;
                        self.values[f].push(v.into());
                        self.lookup[f].insert(v.into(), i);
                        i
                    }
                },
            };
            self.rows.push(vid);
        }
        r
    }

    pub fn get(&self, r: usize, f: usize) -> Option<u32> {
        Some(self.rows[r * self.fields.len() + f]).filter(|v| *v != NONE)
    }

    pub fn value(&self, f: usize, v: u32) -> &str {
        &self.values[f][v as usize]
    }

    pub fn text(&self, r: usize, f: usize) -> Option<&str> {
        self.get(r, f).map(|v| self.value(f, v))
    }

    /// A record's fields as a map (explanations, review items).
    pub fn fields_of(&self, r: usize) -> BTreeMap<String, String> {
        (0..self.fields.len()).filter_map(|f| Some((self.fields[f].clone(), self.text(r, f)?.to_string()))).collect()
    }
}

/// One compiled level.
#[derive(Debug, Clone)]
struct CLevel {
    kind: LevelKind,
    min: f64,
    weight: f64,
    veto: bool,
}

/// The model compiled against a [`Store`].
#[derive(Debug, Clone)]
pub(crate) struct Scorer {
    prior: f64,
    strong: Vec<usize>,
    /// (field id, levels, group index) per comparison.
    comps: Vec<(usize, Vec<CLevel>, Option<usize>)>,
    /// How many comparison groups the model has.
    groups: usize,
    /// (field ids, prefix) per blocking rule, then one rule per strong field.
    blocking: Vec<(Vec<usize>, Option<usize>)>,
}

/// The hot-path score of a pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quick {
    pub weight: f64,
    /// Index into the model's strong fields of an equal one.
    pub strong: Option<u16>,
    pub conflict: bool,
}

impl Scorer {
    pub fn new(model: &Model, st: &Store) -> Scorer {
        let mut names: Vec<&str> = Vec::new();
        let comps = model
            .comparisons
            .iter()
            .map(|c| {
                let group = c.group.as_deref().map(|g| match names.iter().position(|n| *n == g) {
                    Some(i) => i,
                    None => {
                        names.push(g);
                        names.len() - 1
                    }
                });
                let levels = c
                    .levels
                    .iter()
                    .map(|l| CLevel {
                        kind: l.kind,
                        min: l.min.unwrap_or(0.0),
                        weight: (l.m / l.u).log2(),
                        veto: l.veto,
                    })
                    .collect();
                (st.field(&c.field), levels, group)
            })
            .collect();
        let mut blocking: Vec<(Vec<usize>, Option<usize>)> =
            model.blocking.iter().map(|b| (b.fields.iter().map(|f| st.field(f)).collect(), b.prefix)).collect();
        let strong: Vec<usize> = model.strong.iter().map(|s| st.field(&s.field)).collect();
        blocking.extend(strong.iter().map(|&f| (vec![f], None)));
        Scorer { prior: model.prior_weight(), strong, comps, groups: names.len(), blocking }
    }

    /// Blocking keys of record `r` (hashes of rule and values).
    pub fn keys(&self, st: &Store, r: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.blocking.len());
        'rule: for (i, (fields, prefix)) in self.blocking.iter().enumerate() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            i.hash(&mut h);
            for &f in fields {
                let Some(v) = st.get(r, f) else { continue 'rule };
                match prefix {
                    None => v.hash(&mut h),
                    Some(n) => st.value(f, v).chars().take(*n).for_each(|c| c.hash(&mut h)),
                }
            }
            out.push(h.finish());
        }
        out
    }

    pub fn quick(&self, st: &Store, a: usize, b: usize) -> Quick {
        let mut strong = None;
        let mut conflict = false;
        for (i, &f) in self.strong.iter().enumerate() {
            match (st.get(a, f), st.get(b, f)) {
                (Some(x), Some(y)) if x == y => {
                    strong = Some(i as u16);
                    break;
                }
                (Some(_), Some(_)) => conflict = true,
                _ => {}
            }
        }
        let mut weight = self.prior;
        // The largest positive weight per group (models have few groups).
        let mut best = [0.0f64; 8];
        let mut more = vec![0.0f64; self.groups.saturating_sub(best.len())];
        for (f, levels, group) in &self.comps {
            let (Some(x), Some(y)) = (st.get(a, *f), st.get(b, *f)) else { continue };
            let hit = levels.iter().find(|l| match l.kind {
                LevelKind::Exact => x == y,
                LevelKind::Else => true,
                _ => x == y || level_holds(l.kind, l.min, st.value(*f, x), st.value(*f, y)),
            });
            if let Some(l) = hit {
                conflict |= l.veto;
                match group {
                    Some(g) if l.weight > 0.0 => {
                        let b = if *g < best.len() { &mut best[*g] } else { &mut more[*g - best.len()] };
                        *b = b.max(l.weight);
                    }
                    _ => weight += l.weight,
                }
            }
        }
        weight += best.iter().sum::<f64>() + more.iter().sum::<f64>();
        if strong.is_some() {
            conflict = false;
        }
        Quick { weight, strong, conflict }
    }
}

/// Whether a similarity level holds (shared with [`crate::compare`]).
pub(crate) fn level_holds(kind: LevelKind, min: f64, a: &str, b: &str) -> bool {
    match kind {
        LevelKind::Exact => a == b,
        LevelKind::JaroWinkler => strsim::jaro_winkler(a, b) >= min,
        LevelKind::Levenshtein => (strsim::levenshtein(a, b) as f64) <= min,
        LevelKind::Prefix => {
            let n = min as usize;
            a.chars().count() >= n && b.chars().count() >= n && a.chars().take(n).eq(b.chars().take(n))
        }
        LevelKind::DateWithin => {
            crate::compare::days(a).zip(crate::compare::days(b)).is_some_and(|(x, y)| ((x - y).abs() as f64) <= min)
        }
        LevelKind::Else => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot path and the explained score weigh every pair alike
    /// (groups counted once in both).
    #[test]
    fn quick_weights_equal_the_explained_scores() {
        let model = Model::person();
        let w = lianqin_sim::identity::identity_world(11, 300);
        let mut st = Store::new(&model);
        for r in &w.records {
            st.push(&r.id, &crate::normalize::person(&r.fields));
        }
        let scorer = Scorer::new(&model, &st);
        let mut grouped = 0;
        for a in 0..st.len() {
            for b in (a + 1..st.len()).step_by(7) {
                let q = scorer.quick(&st, a, b);
                let s = crate::compare::score(&model, &st.fields_of(a), &st.fields_of(b));
                assert!((q.weight - s.weight).abs() < 1e-9, "{a} {b}: quick {} explained {}", q.weight, s.weight);
                assert_eq!(q.conflict, s.conflict.is_some(), "{a} {b}");
                grouped += s.parts.iter().filter(|p| p.level.contains("counted once")).count();
            }
        }
        assert!(grouped > 0, "some pairs share a household's landline and address");
    }
}
