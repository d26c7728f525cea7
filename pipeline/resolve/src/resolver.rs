//! The incremental resolver: records arrive one at a time (or in batches),
//! each is compared with the candidates its blocking keys name, and the
//! clusters of the part of the graph it touched are recomputed.
//!
//! **No chains through a conflict.** Two records whose own comparison
//! conflicts (different valid citizen IDs, a `veto` level such as a
//! different name) never end up in one cluster through a third record (a
//! nameless record with a family's shared phone and address would
//! otherwise chain the family together).
//!
//! **Order does not matter.** Which pairs are compared depends only on the
//! set of records (blocking keys), a pair's score only on the two records,
//! and the clusters of a connected part of the link graph are computed from
//! its edges in a fixed order (operator merges, strong identifiers, then
//! match weight descending, ties by record ids). The same records in any
//! order give the same clusters and the same cluster ids.
//!
//! **Operators decide.** [`Resolver::merge`] links two records' clusters
//! (a must-link); [`Resolver::split`] separates a record from the others of
//! its cluster (cannot-links with each of them, so the parts never re-merge
//! by themselves, whatever arrives later). Each decision is a [`Decision`]
//! with its reason, kept in order; replaying them after the records gives
//! the same clusters (they name the record pairs they constrain).
//!
//! **Ids.** A cluster's id is `<kind>:` + the smallest record id among its
//! members: the same for the same members in every run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ResolveError;
use crate::compare::{PairScore, score};
use crate::config::Model;
use crate::store::{Scorer, Store};

/// One source record to resolve: its id (`<source>:<key>[#role]`), and its
/// normalized fields ([`crate::normalize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unique id of the source record.
    pub id: String,
    /// Normalized field values.
    pub fields: BTreeMap<String, String>,
}

/// Why two records are in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// An operator merged them.
    Operator {
        /// The operator's reason.
        reason: String,
    },
    /// A strong identifier with equal values.
    Strong {
        /// The field.
        field: String,
    },
    /// Match probability at or above `accept`.
    Score {
        /// Total match weight.
        weight: f64,
        /// Match probability.
        probability: f64,
    },
}

impl Rule {
    /// Short text (`operator`, `strong:citizen_id`, `score 23.4`).
    pub fn describe(&self) -> String {
        match self {
            Rule::Operator { reason } => format!("operator merge ({reason})"),
            Rule::Strong { field } => format!("strong:{field}"),
            Rule::Score { weight, probability } => format!("score {weight:.1} (p={probability:.4})"),
        }
    }
}

/// An operator decision (kept as history, never removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Records `a` and `b` are one entity.
    Merge {
        /// A record.
        a: String,
        /// Another record.
        b: String,
        /// Who and why.
        reason: String,
    },
    /// `record` is not the same entity as each of `from`.
    Split {
        /// The record split off.
        record: String,
        /// The members it was separated from.
        from: Vec<String>,
        /// Who and why.
        reason: String,
    },
}

/// Where a record ended up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// The source record.
    pub record: String,
    /// Its cluster (`<kind>:<smallest member id>`).
    pub cluster: String,
    /// The edge that joined it to its cluster (none for the record the
    /// cluster grew from, or a record alone).
    pub rule: Option<Rule>,
}

/// A pair in the uncertain band (`review` ≤ p < `accept`) whose records are
/// in different clusters: for an operator to merge or dismiss.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewItem {
    /// A record.
    pub a: String,
    /// The other.
    pub b: String,
    /// Their score.
    pub score: PairScore,
}

/// An edge's rule, compact.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CRule {
    /// Decision index (a merge).
    Operator(u32),
    /// Strong field index.
    Strong(u16),
    /// Match weight.
    Score(f32),
}

impl CRule {
    fn rank(self) -> (u8, f32) {
        match self {
            CRule::Operator(_) => (0, 0.0),
            CRule::Strong(_) => (1, 0.0),
            CRule::Score(w) => (2, -w),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    other: u32,
    rule: CRule,
}

/// The resolver (see the module docs).
#[derive(Debug)]
pub struct Resolver {
    model: Model,
    store: Store,
    scorer: Scorer,
    by_id: HashMap<Box<str>, u32>,
    /// Blocking key hash → records; strong fields are rules too.
    blocks: HashMap<u64, Vec<u32>>,
    /// Accepted and operator edges.
    edges: Vec<Vec<Edge>>,
    /// Pairs in the review band (low, high index) with their weight.
    review: BTreeMap<(u32, u32), f32>,
    cannot: HashSet<(u32, u32)>,
    decisions: Vec<Decision>,
    /// Cluster seed (smallest-id member) of each record.
    cluster: Vec<u32>,
    /// The edge that joined each record to its cluster.
    joined_by: Vec<Option<CRule>>,
    comparisons: u64,
}

fn pair(a: usize, b: usize) -> (u32, u32) {
    if a < b { (a as u32, b as u32) } else { (b as u32, a as u32) }
}

impl Resolver {
    /// An empty resolver for `model`.
    pub fn new(model: Model) -> Resolver {
        let store = Store::new(&model);
        let scorer = Scorer::new(&model, &store);
        Resolver {
            model,
            store,
            scorer,
            by_id: HashMap::new(),
            blocks: HashMap::new(),
            edges: Vec::new(),
            review: BTreeMap::new(),
            cannot: HashSet::new(),
            decisions: Vec::new(),
            cluster: Vec::new(),
            joined_by: Vec::new(),
            comparisons: 0,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Records resolved so far.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// No records yet.
    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// Pairs scored so far.
    pub fn comparisons(&self) -> u64 {
        self.comparisons
    }

    fn id(&self, i: usize) -> &str {
        &self.store.ids[i]
    }

    /// The public form of a compact rule.
    fn rule(&self, r: CRule) -> Rule {
        match r {
            CRule::Operator(d) => match &self.decisions[d as usize] {
                Decision::Merge { reason, .. } | Decision::Split { reason, .. } => {
                    Rule::Operator { reason: reason.clone() }
                }
            },
            CRule::Strong(i) => Rule::Strong { field: self.model.strong[i as usize].field.clone() },
            CRule::Score(w) => Rule::Score { weight: f64::from(w), probability: Model::probability(f64::from(w)) },
        }
    }

    /// Adds a record (ids are unique: resending one is an error) and
    /// re-clusters what it touched. Returns its cluster id.
    pub fn add(&mut self, record: Record) -> Result<String, ResolveError> {
        if self.by_id.contains_key(record.id.as_str()) {
            return Err(ResolveError::Duplicate(record.id));
        }
        let idx = self.store.push(&record.id, &record.fields);
        let keys = self.scorer.keys(&self.store, idx);
        let mut candidates = BTreeSet::new();
        for k in &keys {
            if let Some(v) = self.blocks.get(k) {
                candidates.extend(v.iter().copied());
            }
        }
        self.by_id.insert(record.id.into(), idx as u32);
        self.edges.push(Vec::new());
        self.cluster.push(idx as u32);
        self.joined_by.push(None);
        for k in keys {
            self.blocks.entry(k).or_default().push(idx as u32);
        }
        for c in candidates {
            let c = c as usize;
            self.comparisons += 1;
            let q = self.scorer.quick(&self.store, c, idx);
            let p = Model::probability(q.weight);
            let rule = match q.strong {
                Some(f) => Some(CRule::Strong(f)),
                None if p >= self.model.accept && !q.conflict => Some(CRule::Score(q.weight as f32)),
                None => {
                    if p >= self.model.review {
                        self.review.insert(pair(c, idx), q.weight as f32);
                    }
                    None
                }
            };
            if let Some(rule) = rule {
                self.edges[c].push(Edge { other: idx as u32, rule });
                self.edges[idx].push(Edge { other: c as u32, rule });
            }
        }
        self.recluster(idx);
        Ok(self.cluster_id(idx))
    }

    /// The records connected to `start` by any edge (ignoring cannot-links).
    fn component(&self, start: usize) -> Vec<usize> {
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for e in &self.edges[n] {
                if seen.insert(e.other as usize) {
                    stack.push(e.other as usize);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Recomputes the clusters of `start`'s component: edges in a fixed
    /// order, each uniting two clusters unless a pair across them may not
    /// share a cluster ([`Resolver::apart`]).
    fn recluster(&mut self, start: usize) {
        let comp = self.component(start);
        let mut edges: Vec<(usize, usize, CRule)> = Vec::new();
        for &a in &comp {
            for e in &self.edges[a] {
                if a < e.other as usize {
                    edges.push((a, e.other as usize, e.rule));
                }
            }
        }
        let ordered = |x: &(usize, usize, CRule)| {
            let (p, q) = (self.id(x.0), self.id(x.1));
            if p < q { (p, q) } else { (q, p) }
        };
        edges.sort_by(|x, y| {
            let (rx, ry) = (x.2.rank(), y.2.rank());
            rx.0.cmp(&ry.0).then(rx.1.total_cmp(&ry.1)).then_with(|| ordered(x).cmp(&ordered(y)))
        });
        let pos: HashMap<usize, usize> = comp.iter().enumerate().map(|(i, &r)| (r, i)).collect();
        let mut parent: Vec<usize> = (0..comp.len()).collect();
        let mut members: Vec<Vec<usize>> = comp.iter().map(|&r| vec![r]).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for &(a, b, _) in &edges {
            let (ra, rb) = (find(&mut parent, pos[&a]), find(&mut parent, pos[&b]));
            if ra == rb {
                continue;
            }
            if members[ra].iter().any(|&x| members[rb].iter().any(|&y| self.apart(x, y))) {
                continue;
            }
            let (small, big) = if members[ra].len() < members[rb].len() { (ra, rb) } else { (rb, ra) };
            let moved = std::mem::take(&mut members[small]);
            members[big].extend(moved);
            parent[small] = big;
        }
        for (i, &r) in comp.iter().enumerate() {
            let root = find(&mut parent, i);
            let min = members[root].iter().copied().min_by(|x, y| self.id(*x).cmp(self.id(*y))).unwrap_or(r);
            self.cluster[r] = min as u32;
        }
        // What joined each record: its first edge (in the fixed order) to
        // another member of its cluster; the smallest-id member is the seed.
        let mut joined: HashMap<usize, CRule> = HashMap::new();
        for &(a, b, rule) in &edges {
            if self.cluster[a] == self.cluster[b] {
                joined.entry(a).or_insert(rule);
                joined.entry(b).or_insert(rule);
            }
        }
        for &r in &comp {
            self.joined_by[r] = if self.cluster[r] as usize == r { None } else { joined.get(&r).copied() };
        }
    }

    /// May `x` and `y` not share a cluster? An operator split them, or
    /// their own score has a conflict (different strong ids, a veto level)
    /// and no operator merged them.
    fn apart(&self, x: usize, y: usize) -> bool {
        if !self.cannot.is_empty() && self.cannot.contains(&pair(x, y)) {
            return true;
        }
        if self.edges[x].iter().any(|e| e.other as usize == y && matches!(e.rule, CRule::Operator(_))) {
            return false;
        }
        self.scorer.quick(&self.store, x, y).conflict
    }

    fn cluster_id(&self, idx: usize) -> String {
        format!("{}:{}", self.model.kind, self.id(self.cluster[idx] as usize))
    }

    fn index(&self, id: &str) -> Result<usize, ResolveError> {
        self.by_id.get(id).map(|&i| i as usize).ok_or_else(|| ResolveError::UnknownRecord(id.to_string()))
    }

    /// The cluster of a record.
    pub fn cluster_of(&self, record: &str) -> Result<String, ResolveError> {
        Ok(self.cluster_id(self.index(record)?))
    }

    fn link(&self, i: usize) -> Link {
        Link {
            record: self.id(i).to_string(),
            cluster: self.cluster_id(i),
            rule: self.joined_by[i].map(|r| self.rule(r)),
        }
    }

    /// Every record's link, in record-id order.
    pub fn links(&self) -> Vec<Link> {
        let mut out: Vec<Link> = (0..self.len()).map(|i| self.link(i)).collect();
        out.sort_by(|a, b| a.record.cmp(&b.record));
        out
    }

    /// Clusters: cluster id → member record ids (sorted).
    pub fn clusters(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..self.len() {
            out.entry(self.cluster_id(i)).or_default().push(self.id(i).to_string());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// The full score of two resolved records.
    fn full_score(&self, a: usize, b: usize) -> PairScore {
        score(&self.model, &self.store.fields_of(a), &self.store.fields_of(b))
    }

    /// Uncertain pairs whose records are in different clusters.
    pub fn review_queue(&self) -> Vec<ReviewItem> {
        let mut out: Vec<ReviewItem> = self
            .review
            .keys()
            .filter(|(a, b)| self.cluster[*a as usize] != self.cluster[*b as usize])
            .map(|&(a, b)| {
                let (a, b) = (a as usize, b as usize);
                let (a, b) = if self.id(a) < self.id(b) { (a, b) } else { (b, a) };
                ReviewItem { a: self.id(a).to_string(), b: self.id(b).to_string(), score: self.full_score(a, b) }
            })
            .collect();
        out.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
        out
    }

    /// Operator: `a` and `b` are one entity (their clusters merge; any
    /// earlier split between them is lifted for this pair).
    pub fn merge(&mut self, a: &str, b: &str, reason: &str) -> Result<String, ResolveError> {
        let (ia, ib) = (self.index(a)?, self.index(b)?);
        if ia == ib {
            return Err(ResolveError::Decision(format!("cannot merge {a} with itself")));
        }
        let reason = non_empty(reason)?;
        // Lift cannot-links between the two clusters, or the merge could not hold.
        let (ca, cb) = (self.members(ia), self.members(ib));
        for &x in &ca {
            for &y in &cb {
                self.cannot.remove(&pair(x, y));
            }
        }
        self.decisions.push(Decision::Merge { a: a.to_string(), b: b.to_string(), reason });
        let rule = CRule::Operator((self.decisions.len() - 1) as u32);
        self.edges[ia].push(Edge { other: ib as u32, rule });
        self.edges[ib].push(Edge { other: ia as u32, rule });
        self.recluster(ia);
        Ok(self.cluster_id(ia))
    }

    /// Operator: `record` is none of the others in its cluster. Returns the
    /// members it was separated from.
    pub fn split(&mut self, record: &str, reason: &str) -> Result<Vec<String>, ResolveError> {
        let i = self.index(record)?;
        let reason = non_empty(reason)?;
        let others: Vec<usize> = self.members(i).into_iter().filter(|&m| m != i).collect();
        if others.is_empty() {
            return Err(ResolveError::Decision(format!("{record} is alone in its cluster; nothing to split")));
        }
        let from: Vec<String> = others.iter().map(|&m| self.id(m).to_string()).collect();
        self.apply_split(i, &others);
        self.decisions.push(Decision::Split { record: record.to_string(), from: from.clone(), reason });
        Ok(from)
    }

    fn apply_split(&mut self, i: usize, others: &[usize]) {
        for &m in others {
            self.cannot.insert(pair(i, m));
            // An operator merge between them is withdrawn.
            self.edges[i].retain(|e| !(e.other as usize == m && matches!(e.rule, CRule::Operator(_))));
            self.edges[m].retain(|e| !(e.other as usize == i && matches!(e.rule, CRule::Operator(_))));
        }
        self.recluster(i);
        for &m in others {
            self.recluster(m);
        }
    }

    /// Replays a decision read back from history (after the records).
    pub fn apply(&mut self, d: &Decision) -> Result<(), ResolveError> {
        match d {
            Decision::Merge { a, b, reason } => {
                self.merge(a, b, reason)?;
            }
            Decision::Split { record, from, reason } => {
                let i = self.index(record)?;
                let others: Vec<usize> = from.iter().map(|f| self.index(f)).collect::<Result<_, _>>()?;
                self.apply_split(i, &others);
                self.decisions.push(Decision::Split {
                    record: record.clone(),
                    from: from.clone(),
                    reason: reason.clone(),
                });
            }
        }
        Ok(())
    }

    /// Decisions so far, in order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    fn members(&self, i: usize) -> Vec<usize> {
        let root = self.cluster[i];
        self.component(i).into_iter().filter(|&m| self.cluster[m] == root).collect()
    }

    /// Why the records of `cluster` are together: each member with the
    /// rule that joined it, and the full score of every linked pair inside.
    pub fn explain(&self, cluster: &str) -> Result<Explanation, ResolveError> {
        let seed = cluster
            .strip_prefix(&format!("{}:", self.model.kind))
            .and_then(|id| self.by_id.get(id))
            .map(|&i| i as usize)
            .filter(|&i| self.cluster[i] as usize == i)
            .ok_or_else(|| ResolveError::UnknownRecord(cluster.to_string()))?;
        let members = self.members(seed);
        let mut pairs = Vec::new();
        for &a in &members {
            for e in &self.edges[a] {
                let b = e.other as usize;
                if a < b && members.contains(&b) {
                    let (x, y) = if self.id(a) < self.id(b) { (a, b) } else { (b, a) };
                    pairs.push((
                        self.id(x).to_string(),
                        self.id(y).to_string(),
                        self.rule(e.rule).describe(),
                        self.full_score(x, y),
                    ));
                }
            }
        }
        pairs.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        let mut links: Vec<Link> = members.iter().map(|&m| self.link(m)).collect();
        links.sort_by(|a, b| a.record.cmp(&b.record));
        Ok(Explanation { cluster: cluster.to_string(), members: links, pairs })
    }
}

fn non_empty(reason: &str) -> Result<String, ResolveError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(ResolveError::Decision("a decision needs a reason".into()));
    }
    Ok(r.to_string())
}

/// The answer of [`Resolver::explain`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The cluster.
    pub cluster: String,
    /// Members and the rule that joined each.
    pub members: Vec<Link>,
    /// Linked pairs inside: (a, b, rule, full score).
    pub pairs: Vec<(String, String, String, PairScore)>,
}

impl Explanation {
    /// Plain text for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("cluster {} ({} records)\n", self.cluster, self.members.len());
        for m in &self.members {
            let how = m.rule.as_ref().map(Rule::describe).unwrap_or_else(|| "seed".into());
            out.push_str(&format!("  {:<40} {how}\n", m.record));
        }
        for (a, b, rule, s) in &self.pairs {
            out.push_str(&format!("{a} ~ {b}: {rule}, weight {:.2}, p={:.4}\n", s.weight, s.probability));
            for p in &s.parts {
                out.push_str(&format!("    {:<12} {:<18} {:+.2}\n", p.field, p.level, p.weight));
            }
        }
        out
    }
}

/// Pairwise precision and recall of `clusters` against `truth` (record id
/// → true entity): a predicted pair is right when both records are one
/// entity. Records missing from `truth` are ignored.
pub fn pairwise_quality(clusters: &BTreeMap<String, Vec<String>>, truth: &HashMap<String, usize>) -> (f64, f64) {
    let mut tp = 0u64;
    let mut predicted = 0u64;
    for members in clusters.values() {
        let known: Vec<usize> = members.iter().filter_map(|m| truth.get(m).copied()).collect();
        for i in 0..known.len() {
            for j in i + 1..known.len() {
                predicted += 1;
                if known[i] == known[j] {
                    tp += 1;
                }
            }
        }
    }
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    for e in truth.values() {
        *sizes.entry(*e).or_default() += 1;
    }
    let actual: u64 = sizes.values().map(|n| n * (n - 1) / 2).sum();
    let precision = if predicted == 0 { 1.0 } else { tp as f64 / predicted as f64 };
    let recall = if actual == 0 { 1.0 } else { tp as f64 / actual as f64 };
    (precision, recall)
}
