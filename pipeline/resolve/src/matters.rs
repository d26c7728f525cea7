//! Joint matters (issue 13, item 4): reports of one incident from several
//! departments — a 110 call, a 12345 ticket, a 12369 complaint, the law
//! enforcement case opened after — linked into one group, so KPIs count
//! incidents, not reports, and the joint handling is visible.
//!
//! Two reports are linked when (rules in `schemas/resolution/matter.toml`):
//!
//! * **reference** — one's text cites the other's number (`…据110警情
//!   J20250315001…`; tokens of 8+ letters and digits are looked up, and
//!   document numbers such as `湖吴综执立〔2025〕00206号` however their
//!   brackets and digits are typed, [`doc_numbers`]);
//! * **party** — both name the same party element (an enterprise's
//!   `uscc:…`, a person token) with the same category within
//!   `party_window_hours`;
//! * **site** — the same site within the time of a `[[site]]` tier (the
//!   first days' tier may not ask for the same category):
//!   the road and house number or the landmark their addresses name
//!   ([`crate::normalize::site`]: `浙江省湖州市吴兴区凤凰路88号` and
//!   `凤凰路８８号附近` are one site), in the same district and town when
//!   both name one;
//! * **nearby** — same category, within the distance and time of one
//!   `[[nearby]]` tier (coordinates in WGS-84, as the matter library keeps
//!   them): wide for the first days, tight for a case opened weeks later.
//!
//! Two reports of one case-numbering system listed in `separate` (law
//! enforcement, natural resources, IRS penalties: the department already
//! decided they are two cases) link only by a cited number or an operator.
//! The party of a system listed in `reporters` (a 110 call's caller) is
//! not compared at all.
//! Reports naming two different parties, or whose addresses name two
//! different places (another road or landmark, or house numbers 20 or more
//! apart), are never linked by nearness; different parties are not linked
//! by site either. Groups are the connected parts of those links, computed in a fixed order
//! (operator decisions, references, parties, sites, nearness by distance) so the
//! same reports in any order give the same groups; a group's id is `mg:` +
//! its smallest report id. Operators confirm (link two reports) or split (a
//! report is not part of the others) with a reason; a split holds against
//! later arrivals and replays, as for persons ([`crate::resolver`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ResolveError;

/// The grouping rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatterRules {
    /// Nearby reports (same category): any tier whose distance and time
    /// window both hold (a wide one for the first days, a tight one for a
    /// case opened weeks later at the same site).
    pub nearby: Vec<Nearby>,
    /// Same party and category: at most this far apart in time (hours).
    pub party_window_hours: f64,
    /// Link a report whose text cites another's number.
    #[serde(default = "yes")]
    pub references: bool,
    /// Reports at the same site: any tier whose time window holds (and
    /// whose category condition, when it has one). None: addresses are
    /// not compared.
    #[serde(default)]
    pub site: Vec<SiteTier>,
    /// Report systems (the matter id's prefix before `:`, e.g. `zhzf`)
    /// that number each of their cases once: two reports of one such
    /// system are two incidents, linked only by a cited number or an
    /// operator (a department that opened two cases against one party has
    /// already decided they are two).
    #[serde(default)]
    pub separate: Vec<String>,
    /// Report systems whose party is who reported (a 110 call's party
    /// element is the caller, 报警人), not whom the report is about: their
    /// party is not compared (the same citizen calling about two incidents
    /// does not make them one, and a caller is not "another party" than
    /// the enterprise a case names).
    #[serde(default)]
    pub reporters: Vec<String>,
}

/// One tier of the site rule: reports whose addresses name one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteTier {
    /// At most this far apart in time (hours).
    pub window_hours: f64,
    /// Whether the categories must agree (departments file one incident
    /// under different categories, so the first days' tier may not ask).
    #[serde(default = "yes")]
    pub same_category: bool,
    /// How far apart two house numbers on one road may be (a caller next
    /// door gives his own number); 0: the same number.
    #[serde(default)]
    pub house_numbers: u32,
    /// When both reports have a position: at most this far apart (metres).
    /// One address with positions kilometres apart is a mistyped number or
    /// another village's road of the same name, not one site. None: the
    /// positions are not compared.
    #[serde(default)]
    pub max_distance_m: Option<f64>,
}

fn yes() -> bool {
    true
}

/// One tier of the nearby rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nearby {
    /// At most this far apart (metres).
    pub distance_m: f64,
    /// At most this far apart in time (hours).
    pub window_hours: f64,
}

impl MatterRules {
    /// Parses rules; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<MatterRules, ResolveError> {
        let r: MatterRules =
            toml::from_str(text).map_err(|e| ResolveError::Config(format!("{origin}: {}", e.to_string().trim())))?;
        if r.nearby.is_empty()
            || !r.nearby.iter().all(|n| n.distance_m > 0.0 && n.window_hours > 0.0)
            || r.party_window_hours <= 0.0
            || r.site.iter().any(|s| s.window_hours <= 0.0 || s.max_distance_m.is_some_and(|m| m <= 0.0))
        {
            return Err(ResolveError::Config(format!(
                "{origin}: at least one [[nearby]] tier; distances and windows (also [[site]]'s) must be positive"
            )));
        }
        Ok(r)
    }

    /// The shipped rules (`schemas/resolution/matter.toml`).
    pub fn shipped() -> MatterRules {
        MatterRules::parse(include_str!("../../../schemas/resolution/matter.toml"), "schemas/resolution/matter.toml")
            .expect("the shipped matter rules are valid (tested)")
    }
}

/// One report (a row of the matter library, in WGS-84).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Unique id (`<source>:<key>`, the matter id).
    pub id: String,
    /// Its own number others may cite (110 警情编号, 12345 工单号, case number).
    pub number: Option<String>,
    /// Category (material category a–f).
    pub category: Option<String>,
    /// WGS-84 longitude.
    pub lon: Option<f64>,
    /// WGS-84 latitude.
    pub lat: Option<f64>,
    /// When reported (Unix seconds).
    pub reported_at: i64,
    /// Party element id, if any.
    pub party: Option<String>,
    /// Where it happened, as written (compared as a site).
    pub address: Option<String>,
    /// Free text (title, content) searched for cited numbers.
    pub text: String,
}

/// Why two reports are in one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum MatterRule {
    /// An operator confirmed it.
    Operator {
        /// Who and why.
        reason: String,
    },
    /// One cites the other's number.
    Reference {
        /// The number cited.
        number: String,
    },
    /// Same party, same category, within the party window.
    Party {
        /// The party element.
        party: String,
        /// Hours apart.
        hours: f64,
    },
    /// Same category at the same site (the address is not repeated here:
    /// rules are shown to readers the address may be hidden from).
    Site {
        /// Hours apart.
        hours: f64,
        /// Whether the categories agree.
        same_category: bool,
        /// House numbers apart on one road (0: the same site).
        numbers_apart: u32,
    },
    /// Same category, near in space and time.
    Nearby {
        /// Metres apart.
        metres: f64,
        /// Hours apart.
        hours: f64,
    },
}

impl MatterRule {
    fn rank(&self) -> (u8, f64) {
        match self {
            MatterRule::Operator { .. } => (0, 0.0),
            MatterRule::Reference { .. } => (1, 0.0),
            MatterRule::Party { hours, .. } => (2, *hours),
            MatterRule::Site { hours, .. } => (3, *hours),
            MatterRule::Nearby { metres, .. } => (4, *metres),
        }
    }

    /// Short text.
    pub fn describe(&self) -> String {
        match self {
            MatterRule::Operator { reason } => format!("operator confirmed ({reason})"),
            MatterRule::Reference { number } => format!("cites {number}"),
            MatterRule::Party { party, hours } => format!("same party {party}, {hours:.1} h apart"),
            MatterRule::Site { hours, same_category, numbers_apart } => {
                let what = if *same_category { "same category " } else { "" };
                let at = match numbers_apart {
                    0 => "at the same site".to_string(),
                    n => format!("{n} house numbers apart on one road"),
                };
                format!("{what}{at}, {hours:.1} h apart")
            }
            MatterRule::Nearby { metres, hours } => format!("same category, {metres:.0} m and {hours:.1} h apart"),
        }
    }
}

/// An operator decision on joint matters (kept as history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum MatterDecision {
    /// Two reports are one incident.
    Confirm {
        /// A report.
        a: String,
        /// Another.
        b: String,
        /// Who and why.
        reason: String,
    },
    /// `report` is not the incident of `from`.
    Split {
        /// The report split off.
        report: String,
        /// The reports it was separated from.
        from: Vec<String>,
        /// Who and why.
        reason: String,
    },
}

/// Two house numbers on one road this far apart or more are two places.
const OTHER_PLACE_NUMBERS: u32 = 20;

/// Metres per degree of latitude (for the grid).
const M_PER_DEG: f64 = 111_320.0;

/// The grouper (see the module docs).
#[derive(Debug)]
pub struct MatterGrouper {
    rules: MatterRules,
    reports: Vec<Report>,
    by_id: HashMap<String, usize>,
    /// Grid cell (size ≥ distance) → reports with coordinates.
    grid: HashMap<(i64, i64), Vec<usize>>,
    by_party: HashMap<String, Vec<usize>>,
    /// Each report's site ([`crate::normalize::site`]).
    sites: Vec<Option<Site>>,
    /// Road (or landmark) → reports there.
    by_site: HashMap<String, Vec<usize>>,
    /// Number → the report that owns it.
    numbers: HashMap<String, usize>,
    /// Token in some text → reports citing it.
    cited: HashMap<String, Vec<usize>>,
    /// Each report's cited numbers ([`tokens`] of its text).
    cites: Vec<BTreeSet<String>>,
    /// Each report's own number as it is cited ([`number_key`]).
    keys: Vec<Option<String>>,
    edges: Vec<Vec<(usize, MatterRule)>>,
    cannot: HashSet<(usize, usize)>,
    decisions: Vec<MatterDecision>,
    group: Vec<usize>,
    joined_by: Vec<Option<MatterRule>>,
}

/// Where a report's address says it happened.
#[derive(Debug, Clone)]
struct Site {
    /// The road of a road and number, or the landmark
    /// ([`crate::normalize::site_in`]).
    road: String,
    /// The house number on the road.
    number: Option<u32>,
    /// The district or county, when the address names one.
    division: Option<&'static str>,
    /// The town, when the address names one ([`crate::normalize::town`]).
    town: Option<String>,
}

impl Site {
    fn of(address: &str) -> Option<Site> {
        // Normalized once for the site, the town and the district.
        let a = crate::normalize::address(address)?;
        let (road, number) = crate::normalize::site_in(&a)?;
        Some(Site {
            road,
            number,
            division: lianqin_domain::division_from_address(&a),
            town: crate::normalize::town_in(&a),
        })
    }

    /// How many house numbers apart two sites on one road are (0 for one
    /// landmark); `None` when they are not on one road: another road or
    /// landmark, or a district or town named by both that differs (the
    /// city's own code `330500` agrees with any district).
    fn numbers_apart(&self, o: &Site) -> Option<u32> {
        let division = match (self.division, o.division) {
            (Some(x), Some(y)) => x == y || x == "330500" || y == "330500",
            _ => true,
        };
        let town = match (&self.town, &o.town) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        };
        if self.road != o.road || !division || !town {
            return None;
        }
        match (self.number, o.number) {
            (Some(a), Some(b)) => Some(a.abs_diff(b)),
            (None, None) => Some(0),
            _ => None,
        }
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    if a < b { (a, b) } else { (b, a) }
}

/// Numbers cited in text: tokens of 8+ ASCII letters and digits
/// (`J3305022025030100001`, `HZ20250301000037`), and document numbers
/// (公文编号, [`doc_numbers`]).
fn tokens(text: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| t.len() >= 8 && t.bytes().any(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    out.extend(doc_numbers(text));
    out
}

/// Document numbers (公文编号: issuer code, year in brackets, serial and
/// `号`, as law-enforcement and penalty decisions are numbered:
/// `湖吴综执立〔2025〕00206号`) in `text`, however the writer typed the
/// brackets (`〔〕`, `[]`, `［］`, `()`, `（）`, `【】`), the digits
/// (full-width) or the serial (`206` for `00206`), in one form:
/// `<issuer>〔2025〕206号`. The issuer is the run of Han characters before
/// the bracket; a citation's run may start earlier (`据湖吴综执立…`), so
/// every ending of the run of two or more characters is given (at most 12).
pub fn doc_numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if ('０'..='９').contains(&c) { char::from_u32(c as u32 - 0xFF10 + 0x30).unwrap_or(c) } else { c })
        .collect();
    let is_han = |c: char| ('\u{4E00}'..='\u{9FFF}').contains(&c);
    let mut out = Vec::new();
    for (i, &open) in chars.iter().enumerate() {
        if !matches!(open, '〔' | '[' | '［' | '(' | '（' | '【') {
            continue;
        }
        let year: String = chars[i + 1..].iter().take(4).collect();
        let close = chars.get(i + 5).copied();
        if year.len() != 4
            || !year.bytes().all(|b| b.is_ascii_digit())
            || !matches!(close, Some('〕' | ']' | '］' | ')' | '）' | '】'))
        {
            continue;
        }
        let serial: String = chars[i + 6..].iter().take_while(|c| c.is_ascii_digit()).take(7).collect();
        let Ok(n) = serial.parse::<u64>() else { continue };
        if serial.is_empty() || serial.len() > 6 {
            continue;
        }
        let start = chars[..i].iter().rev().take_while(|c| is_han(**c)).take(12).count();
        for k in 2..=start {
            let issuer: String = chars[i - k..i].iter().collect();
            out.push(format!("{issuer}〔{year}〕{n}号"));
        }
    }
    out
}

/// The form a report's own number is looked up by: a document number in
/// [`doc_numbers`]'s form, any other number as it is.
fn number_key(n: &str) -> String {
    doc_numbers(n).into_iter().max_by_key(|d| d.chars().count()).unwrap_or_else(|| n.to_string())
}

impl MatterGrouper {
    /// An empty grouper.
    pub fn new(rules: MatterRules) -> MatterGrouper {
        MatterGrouper {
            rules,
            reports: Vec::new(),
            by_id: HashMap::new(),
            grid: HashMap::new(),
            by_party: HashMap::new(),
            sites: Vec::new(),
            cites: Vec::new(),
            keys: Vec::new(),
            by_site: HashMap::new(),
            numbers: HashMap::new(),
            cited: HashMap::new(),
            edges: Vec::new(),
            cannot: HashSet::new(),
            decisions: Vec::new(),
            group: Vec::new(),
            joined_by: Vec::new(),
        }
    }

    fn cell(&self, lon: f64, lat: f64) -> (i64, i64) {
        let widest = self.rules.nearby.iter().map(|n| n.distance_m).fold(0.0, f64::max);
        let size = widest / M_PER_DEG;
        ((lon * lat.to_radians().cos() / size).floor() as i64, (lat / size).floor() as i64)
    }

    /// The rule linking reports `ia` and `ib`, if any (not counting
    /// operators).
    fn link(&self, ia: usize, ib: usize) -> Option<MatterRule> {
        let (a, b) = (&self.reports[ia], &self.reports[ib]);
        if self.rules.references {
            for (x, y) in [(ia, ib), (ib, ia)] {
                if let (Some(k), Some(n)) = (&self.keys[y], &self.reports[y].number)
                    && self.cites[x].contains(k)
                {
                    return Some(MatterRule::Reference { number: n.clone() });
                }
            }
        }
        if let (Some((sa, _)), Some((sb, _))) = (a.id.split_once(':'), b.id.split_once(':'))
            && sa == sb
            && self.rules.separate.iter().any(|s| s == sa)
        {
            return None;
        }
        let hours = (a.reported_at - b.reported_at).abs() as f64 / 3600.0;
        let same_category = a.category.is_some() && a.category == b.category;
        if same_category
            && let (Some(p), Some(q)) = (&a.party, &b.party)
            && p == q
            && hours <= self.rules.party_window_hours
        {
            return Some(MatterRule::Party { party: p.clone(), hours });
        }
        // Two different parties are two incidents, however close.
        if let (Some(p), Some(q)) = (&a.party, &b.party)
            && p != q
        {
            return None;
        }
        let apart = match (&self.sites[ia], &self.sites[ib]) {
            (Some(x), Some(y)) => Some(x.numbers_apart(y)),
            _ => None,
        };
        let metres = match (a.lon, a.lat, b.lon, b.lat) {
            (Some(x1), Some(y1), Some(x2), Some(y2)) => Some(lianqin_domain::geo::distance_m(x1, y1, x2, y2)),
            _ => None,
        };
        if let Some(Some(numbers_apart)) = apart
            && self.rules.site.iter().any(|t| {
                hours <= t.window_hours
                    && (same_category || !t.same_category)
                    && numbers_apart <= t.house_numbers
                    && t.max_distance_m.is_none_or(|max| metres.is_none_or(|m| m <= max))
            })
        {
            return Some(MatterRule::Site { hours, same_category, numbers_apart });
        }
        // Addresses naming two different places are two incidents, however
        // near their coordinates.
        if !self.rules.site.is_empty() && apart.is_some_and(|n| n.is_none_or(|n| n > OTHER_PLACE_NUMBERS)) {
            return None;
        }
        if same_category && let (Some(x1), Some(y1), Some(x2), Some(y2)) = (a.lon, a.lat, b.lon, b.lat) {
            let metres = lianqin_domain::geo::distance_m(x1, y1, x2, y2);
            if self.rules.nearby.iter().any(|n| metres <= n.distance_m && hours <= n.window_hours) {
                return Some(MatterRule::Nearby { metres, hours });
            }
        }
        None
    }

    /// Adds a report and regroups what it touched; returns its group id.
    pub fn add(&mut self, mut report: Report) -> Result<String, ResolveError> {
        if self.by_id.contains_key(&report.id) {
            return Err(ResolveError::Duplicate(report.id));
        }
        if let Some((system, _)) = report.id.split_once(':')
            && self.rules.reporters.iter().any(|r| r == system)
        {
            report.party = None;
        }
        let idx = self.reports.len();
        let mut candidates = BTreeSet::new();
        if let (Some(lon), Some(lat)) = (report.lon, report.lat) {
            let (cx, cy) = self.cell(lon, lat);
            for dx in -1..=1 {
                for dy in -1..=1 {
                    if let Some(v) = self.grid.get(&(cx + dx, cy + dy)) {
                        candidates.extend(v.iter().copied());
                    }
                }
            }
        }
        if let Some(p) = &report.party
            && let Some(v) = self.by_party.get(p)
        {
            candidates.extend(v.iter().copied());
        }
        let toks = tokens(&report.text);
        for t in &toks {
            if let Some(&o) = self.numbers.get(t) {
                candidates.insert(o);
            }
        }
        let key = report.number.as_deref().map(number_key);
        if let Some(k) = &key
            && let Some(v) = self.cited.get(k)
        {
            candidates.extend(v.iter().copied());
        }
        let site = report.address.as_deref().filter(|_| !self.rules.site.is_empty()).and_then(Site::of);
        if let Some(s) = &site
            && let Some(v) = self.by_site.get(&s.road)
        {
            candidates.extend(v.iter().copied());
        }
        // Index it.
        if let (Some(lon), Some(lat)) = (report.lon, report.lat) {
            let c = self.cell(lon, lat);
            self.grid.entry(c).or_default().push(idx);
        }
        if let Some(p) = &report.party {
            self.by_party.entry(p.clone()).or_default().push(idx);
        }
        if let Some(k) = &key {
            self.numbers.entry(k.clone()).or_insert(idx);
        }
        for t in &toks {
            self.cited.entry(t.clone()).or_default().push(idx);
        }
        self.cites.push(toks);
        self.keys.push(key);
        if let Some(s) = &site {
            self.by_site.entry(s.road.clone()).or_default().push(idx);
        }
        self.sites.push(site);
        self.by_id.insert(report.id.clone(), idx);
        self.reports.push(report);
        self.edges.push(Vec::new());
        self.group.push(idx);
        self.joined_by.push(None);
        for c in candidates {
            if let Some(rule) = self.link(c, idx) {
                self.edges[c].push((idx, rule.clone()));
                self.edges[idx].push((c, rule));
            }
        }
        self.regroup(idx);
        Ok(self.group_id(idx))
    }

    fn component(&self, start: usize) -> Vec<usize> {
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for (o, _) in &self.edges[n] {
                if seen.insert(*o) {
                    stack.push(*o);
                }
            }
        }
        seen.into_iter().collect()
    }

    fn regroup(&mut self, start: usize) {
        let comp = self.component(start);
        let id = |i: usize| self.reports[i].id.as_str();
        let mut edges: Vec<(usize, usize, &MatterRule)> = Vec::new();
        for &a in &comp {
            for (b, r) in &self.edges[a] {
                if a < *b {
                    edges.push((a, *b, r));
                }
            }
        }
        let ordered =
            |x: &(usize, usize, &MatterRule)| if id(x.0) < id(x.1) { (id(x.0), id(x.1)) } else { (id(x.1), id(x.0)) };
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
            if ra == rb
                || (!self.cannot.is_empty()
                    && members[ra].iter().any(|&x| members[rb].iter().any(|&y| self.cannot.contains(&pair(x, y)))))
            {
                continue;
            }
            let (small, big) = if members[ra].len() < members[rb].len() { (ra, rb) } else { (rb, ra) };
            let moved = std::mem::take(&mut members[small]);
            members[big].extend(moved);
            parent[small] = big;
        }
        let mut group = vec![0; comp.len()];
        for (i, &r) in comp.iter().enumerate() {
            let root = find(&mut parent, i);
            group[i] = members[root].iter().copied().min_by(|x, y| id(*x).cmp(id(*y))).unwrap_or(r);
        }
        let mut joined: HashMap<usize, MatterRule> = HashMap::new();
        for &(a, b, rule) in &edges {
            if group[pos[&a]] == group[pos[&b]] {
                joined.entry(a).or_insert_with(|| rule.clone());
                joined.entry(b).or_insert_with(|| rule.clone());
            }
        }
        for (i, &r) in comp.iter().enumerate() {
            self.group[r] = group[i];
            self.joined_by[r] = if group[i] == r { None } else { joined.remove(&r) };
        }
    }

    fn group_id(&self, i: usize) -> String {
        format!("mg:{}", self.reports[self.group[i]].id)
    }

    fn index(&self, id: &str) -> Result<usize, ResolveError> {
        self.by_id.get(id).copied().ok_or_else(|| ResolveError::UnknownRecord(id.to_string()))
    }

    /// The group of a report.
    pub fn group_of(&self, report: &str) -> Result<String, ResolveError> {
        Ok(self.group_id(self.index(report)?))
    }

    /// Groups: group id → report ids (sorted).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..self.reports.len() {
            out.entry(self.group_id(i)).or_default().push(self.reports[i].id.clone());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Each report's group and the rule that joined it, by report id.
    pub fn links(&self) -> Vec<(String, String, Option<MatterRule>)> {
        let mut out: Vec<_> = (0..self.reports.len())
            .map(|i| (self.reports[i].id.clone(), self.group_id(i), self.joined_by[i].clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn members(&self, i: usize) -> Vec<usize> {
        let g = self.group[i];
        self.component(i).into_iter().filter(|&m| self.group[m] == g).collect()
    }

    /// Operator: reports `a` and `b` are one incident.
    pub fn confirm(&mut self, a: &str, b: &str, reason: &str) -> Result<String, ResolveError> {
        let (ia, ib) = (self.index(a)?, self.index(b)?);
        let reason = reason.trim().to_string();
        if reason.is_empty() || ia == ib {
            return Err(ResolveError::Decision("a confirmation needs two reports and a reason".into()));
        }
        for x in self.members(ia) {
            for y in self.members(ib) {
                self.cannot.remove(&pair(x, y));
            }
        }
        let rule = MatterRule::Operator { reason: reason.clone() };
        self.edges[ia].push((ib, rule.clone()));
        self.edges[ib].push((ia, rule));
        self.decisions.push(MatterDecision::Confirm { a: a.into(), b: b.into(), reason });
        self.regroup(ia);
        Ok(self.group_id(ia))
    }

    /// Operator: `report` is not part of the others of its group.
    pub fn split(&mut self, report: &str, reason: &str) -> Result<Vec<String>, ResolveError> {
        let i = self.index(report)?;
        let reason = reason.trim().to_string();
        let others: Vec<usize> = self.members(i).into_iter().filter(|&m| m != i).collect();
        if reason.is_empty() || others.is_empty() {
            return Err(ResolveError::Decision(format!(
                "{report}: a split needs a reason and other reports in its group"
            )));
        }
        let from: Vec<String> = others.iter().map(|&m| self.reports[m].id.clone()).collect();
        self.apply_split(i, &others);
        self.decisions.push(MatterDecision::Split { report: report.into(), from: from.clone(), reason });
        Ok(from)
    }

    fn apply_split(&mut self, i: usize, others: &[usize]) {
        for &m in others {
            self.cannot.insert(pair(i, m));
            self.edges[i].retain(|(o, r)| !(*o == m && matches!(r, MatterRule::Operator { .. })));
            self.edges[m].retain(|(o, r)| !(*o == i && matches!(r, MatterRule::Operator { .. })));
        }
        self.regroup(i);
        for &m in others {
            self.regroup(m);
        }
    }

    /// Replays a decision (after the reports).
    pub fn apply(&mut self, d: &MatterDecision) -> Result<(), ResolveError> {
        match d {
            MatterDecision::Confirm { a, b, reason } => {
                self.confirm(a, b, reason)?;
            }
            MatterDecision::Split { report, from, reason } => {
                let i = self.index(report)?;
                let others: Vec<usize> = from.iter().map(|f| self.index(f)).collect::<Result<_, _>>()?;
                self.apply_split(i, &others);
                self.decisions.push(MatterDecision::Split {
                    report: report.clone(),
                    from: from.clone(),
                    reason: reason.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every link found between two reports, each once (operators'
    /// confirmations too): what the groups are built from, for tuning the
    /// rules against a truth.
    pub fn edges(&self) -> Vec<(&str, &str, &MatterRule)> {
        let mut out = Vec::new();
        for (a, es) in self.edges.iter().enumerate() {
            for (b, r) in es {
                if a < *b {
                    out.push((self.reports[a].id.as_str(), self.reports[*b].id.as_str(), r));
                }
            }
        }
        out
    }

    /// Decisions so far.
    pub fn decisions(&self) -> &[MatterDecision] {
        &self.decisions
    }

    /// Why a group's reports are together, as text: each report (in time
    /// order, the joint timeline) and the rule that joined it.
    pub fn explain(&self, group: &str) -> Result<String, ResolveError> {
        let seed = group
            .strip_prefix("mg:")
            .and_then(|id| self.by_id.get(id).copied())
            .filter(|&i| self.group[i] == i)
            .ok_or_else(|| ResolveError::UnknownRecord(group.to_string()))?;
        let mut members = self.members(seed);
        members.sort_by_key(|&m| (self.reports[m].reported_at, self.reports[m].id.clone()));
        let mut out = format!("joint matter {group} ({} reports)\n", members.len());
        for m in members {
            let r = &self.reports[m];
            let how = self.joined_by[m].as_ref().map(MatterRule::describe).unwrap_or_else(|| "seed".into());
            out.push_str(&format!("  {:<10} {:<32} {how}\n", r.reported_at, r.id));
        }
        Ok(out)
    }
}

/// Pairwise precision and recall of `groups` against `truth` (report id →
/// true incident).
pub fn pairwise_quality(groups: &BTreeMap<String, Vec<String>>, truth: &HashMap<String, usize>) -> (f64, f64) {
    crate::resolver::pairwise_quality(groups, truth)
}
