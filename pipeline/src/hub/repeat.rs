//! The repeat index: which version of each record the hub has already
//! decided, so that re-fetched records leave the libraries unchanged.
//!
//! A *version* is `(source, version key, content hash)`; the version key is
//! the record's key, or `#<hash>` for records without a usable key (bound for
//! quarantine), which are recognized by their content alone
//! ([`version_key`]).
//!
//! The index holds, under one lock:
//! * the content hash of the **newest decided version** per (source, key):
//!   a record carrying it is a repeat and produces no library rows;
//! * the **raw gaps**: versions a library holds but the raw table does not
//!   (a crash between the library commits and the raw commit). The next copy
//!   of such a record is still a repeat for the libraries but is written to
//!   the raw table, which fills the gap;
//! * per source, the **raw-table version the index reflects**, so that a
//!   worker sharing the libraries with others (Kafka) reloads it when
//!   someone else committed.
//!
//! The hub fills it from a scan of the raw table and the libraries at start
//! ([`RepeatIndex::load`]), consults it per batch ([`RepeatIndex::classify`])
//! and updates it only once a batch is durable ([`RepeatIndex::committed`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use lianqin_bus::{BusRecord, Envelope};

/// The version key of a record: its key, or `#<content hash>` when it has
/// no usable key (unparsable or keyless records).
pub fn version_key(e: &Envelope) -> String {
    if e.error.is_some() || e.key.is_empty() { format!("#{}", e.hash) } else { e.key.clone() }
}

/// One `(key, version)` found by the start-up scan of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenVersion {
    /// Version key ([`version_key`]).
    pub key: String,
    /// Content hash.
    pub hash: String,
    /// Newest position it was stored at: `(ingested_at, bus_offset)`.
    pub position: (i64, i64),
    /// Whether the raw table holds it (else only a library does: a gap).
    pub in_raw: bool,
    /// The newest quarantine replay run that decided it, if any.
    pub replay: Option<String>,
    /// Whether its newest decision was quarantine (else it landed).
    pub open: bool,
}

/// A gap: `(source, version key, content hash)` of a version missing from
/// the raw table.
type Gap = (String, String, String);

#[derive(Debug, Default)]
struct State {
    /// (source, version key) → content hash of the newest decided version.
    newest: HashMap<(String, String), String>,
    /// Versions a library holds but the raw table does not.
    missing_raw: HashSet<Gap>,
    /// Source → Delta version of its raw table this index reflects.
    raw_versions: HashMap<String, Option<i64>>,
    /// (source, version key) → the quarantine replay run that last decided
    /// the newest version (absent when no replay did).
    replays: HashMap<(String, String), String>,
    /// (source, version key) whose newest decided version was quarantined:
    /// only those are replayed.
    open: HashSet<(String, String)>,
}

/// The records of one batch of one source, split by the index.
#[derive(Debug, Default)]
pub struct Split<'a> {
    /// Records that are new versions: normalized and committed.
    pub fresh: Vec<&'a BusRecord>,
    /// Repeats whose version the raw table lacks: written to the raw table
    /// only.
    pub raw_gap: Vec<&'a BusRecord>,
    /// How many records were repeats (those in `raw_gap` included).
    pub repeats: u64,
    gaps: Vec<Gap>,
}

impl<'a> Split<'a> {
    /// What the raw table receives: each distinct version once — the fresh
    /// records plus the repeats that fill a gap, in bus order.
    pub fn raw_records(&self) -> Vec<&'a BusRecord> {
        let mut v = self.fresh.clone();
        if !self.raw_gap.is_empty() {
            v.extend(self.raw_gap.iter().copied());
            v.sort_by_key(|r| (r.partition, r.offset));
        }
        v
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct RepeatIndex {
    state: Mutex<State>,
}

impl RepeatIndex {
    /// An empty index.
    pub fn new() -> RepeatIndex {
        RepeatIndex::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in what a scan of `source`'s raw table and libraries found, made
    /// at raw-table version `raw_version`: the newest version per key (by
    /// position) becomes the decided one, versions only a library holds
    /// become gaps (the source's earlier gaps are replaced). Returns the
    /// number of gaps.
    pub fn load(&self, source: &str, raw_version: Option<i64>, seen: impl IntoIterator<Item = SeenVersion>) -> usize {
        // key → (position, hash, replay run, open) of its newest version.
        type Newest = ((i64, i64), String, Option<String>, bool);
        let mut newest: HashMap<String, Newest> = HashMap::new();
        let mut gaps = Vec::new();
        for v in seen {
            if !v.in_raw {
                gaps.push((source.to_string(), v.key.clone(), v.hash.clone()));
            }
            match newest.get_mut(&v.key) {
                Some(cur) if cur.0 >= v.position => {}
                Some(cur) => *cur = (v.position, v.hash, v.replay, v.open),
                None => {
                    newest.insert(v.key, (v.position, v.hash, v.replay, v.open));
                }
            }
        }
        let mut st = self.state();
        st.raw_versions.insert(source.to_string(), raw_version);
        st.missing_raw.retain(|(s, _, _)| s != source);
        st.missing_raw.extend(gaps);
        st.replays.retain(|(s, _), _| s != source);
        st.open.retain(|(s, _)| s != source);
        for (key, (_, hash, replay, open)) in newest {
            if open {
                st.open.insert((source.to_string(), key.clone()));
            }
            if let Some(run) = replay {
                st.replays.insert((source.to_string(), key.clone()), run);
            }
            st.newest.insert((source.to_string(), key), hash);
        }
        st.missing_raw.iter().filter(|(s, _, _)| s == source).count()
    }

    /// Whether the index of `source` reflects raw-table version `now` (else
    /// another worker committed since: reload).
    pub fn reflects(&self, source: &str, now: Option<i64>) -> bool {
        self.state().raw_versions.get(source) == Some(&now)
    }

    /// The content hash of the newest decided version of `key` in `source`.
    pub fn newest(&self, source: &str, key: &str) -> Option<String> {
        self.state().newest.get(&(source.to_string(), key.to_string())).cloned()
    }

    /// Splits a batch of `source` (in bus order) into fresh records and
    /// repeats: a record is a repeat when its hash is that of the newest
    /// decided version of its key, or of an earlier record of the batch with
    /// that key. Repeats of a version the raw table lacks go to `raw_gap`
    /// (once per version).
    ///
    /// `replayed(r)` says that some library already holds `r`'s own bus
    /// position (the replay after a crash between the library commits and
    /// the raw commit). Libraries commit side by side, so such a version may
    /// be in one library and not in another: it is not a repeat but fresh —
    /// the libraries that hold it skip it by position, the others and the
    /// raw table receive it.
    ///
    /// A record replayed from quarantine ([`Envelope::replay_run`]) is
    /// fresh only when it is still the newest decided version of its key,
    /// that decision was quarantine, and no record of the same replay run
    /// decided it yet; otherwise (the source sent a newer version since, an
    /// earlier replay landed it, or the run published it twice) it is a
    /// repeat.
    pub fn classify<'a>(
        &self,
        source: &str,
        recs: &'a [BusRecord],
        replayed: impl Fn(&BusRecord) -> bool,
    ) -> Split<'a> {
        let st = self.state();
        let mut split = Split { fresh: Vec::with_capacity(recs.len()), ..Default::default() };
        let mut in_batch: HashMap<String, &str> = HashMap::new();
        // Keys a replayed record of this batch decides (whatever its run:
        // one decision per version and batch).
        let mut replayed_in_batch: HashSet<String> = HashSet::new();
        for r in recs {
            let hash = r.envelope.hash.as_str();
            let key = version_key(&r.envelope);
            if let Some(run) = r.envelope.replay_run() {
                let decided = st.newest.get(&(source.to_string(), key.clone())).map(String::as_str) == Some(hash);
                let open = st.open.contains(&(source.to_string(), key.clone()));
                let done = st.replays.get(&(source.to_string(), key.clone())).map(String::as_str) == Some(run)
                    || replayed_in_batch.contains(&key);
                if decided && open && !done {
                    replayed_in_batch.insert(key);
                    split.fresh.push(r);
                } else {
                    split.repeats += 1;
                }
                continue;
            }
            let seen_in_batch = in_batch.get(&key) == Some(&hash);
            let decided = st.newest.get(&(source.to_string(), key.clone())).map(String::as_str) == Some(hash);
            if decided && !seen_in_batch && !st.missing_raw.is_empty() && replayed(r) {
                let gap = (source.to_string(), key.clone(), hash.to_string());
                if st.missing_raw.contains(&gap) {
                    split.gaps.push(gap);
                    in_batch.insert(key, hash);
                    split.fresh.push(r);
                    continue;
                }
            }
            if decided || seen_in_batch {
                split.repeats += 1;
                if !st.missing_raw.is_empty() && !seen_in_batch {
                    let gap = (source.to_string(), key.clone(), hash.to_string());
                    if st.missing_raw.contains(&gap) {
                        split.raw_gap.push(r);
                        split.gaps.push(gap);
                        in_batch.insert(key, hash);
                    }
                }
            } else {
                in_batch.insert(key, hash);
                split.fresh.push(r);
            }
        }
        split
    }

    /// Once `split` is durable (libraries and raw table committed): its gaps
    /// are filled, its fresh versions become the decided ones, and, when
    /// `raw_version` is given, the index is marked as reflecting that
    /// raw-table version (leave it `None` when another worker may have
    /// committed in between, so the next batch reloads). `quarantined(r)`
    /// says whether fresh record `r` went to quarantine.
    pub fn committed(
        &self,
        source: &str,
        split: &Split<'_>,
        raw_version: Option<Option<i64>>,
        quarantined: impl Fn(&BusRecord) -> bool,
    ) {
        let mut st = self.state();
        for gap in &split.gaps {
            st.missing_raw.remove(gap);
        }
        if let Some(v) = raw_version {
            st.raw_versions.insert(source.to_string(), v);
        }
        for r in &split.fresh {
            // Accepted or quarantined, this version has been decided.
            let key = (source.to_string(), version_key(&r.envelope));
            match r.envelope.replay_run() {
                Some(run) => {
                    st.replays.insert(key.clone(), run.to_string());
                }
                None => {
                    st.replays.remove(&key);
                }
            }
            if quarantined(r) {
                st.open.insert(key.clone());
            } else {
                st.open.remove(&key);
            }
            st.newest.insert(key, r.envelope.hash.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, n: i64, offset: u64) -> BusRecord {
        BusRecord {
            topic: "raw.s".into(),
            partition: 0,
            offset,
            envelope: Envelope::upsert("s", "dept", key, serde_json::json!({ "n": n }), None),
        }
    }

    fn seen(r: &BusRecord, position: (i64, i64), in_raw: bool) -> SeenVersion {
        SeenVersion {
            key: version_key(&r.envelope),
            hash: r.envelope.hash.clone(),
            position,
            in_raw,
            replay: None,
            open: false,
        }
    }

    #[test]
    fn keyless_and_unparsable_records_are_known_by_their_hash() {
        let r = rec("", 1, 0);
        assert_eq!(version_key(&r.envelope), format!("#{}", r.envelope.hash));
        let mut bad = rec("k", 1, 0);
        bad.envelope.error = Some("bad json".into());
        assert_eq!(version_key(&bad.envelope), format!("#{}", bad.envelope.hash));
        assert_eq!(version_key(&rec("k", 1, 0).envelope), "k");
    }

    #[test]
    fn the_newest_decided_version_makes_a_repeat() {
        let idx = RepeatIndex::new();
        let (a1, a2, b1) = (rec("a", 1, 0), rec("a", 2, 1), rec("b", 1, 2));
        // Scan: a went 1 → 2; b is new.
        idx.load("s", Some(3), [seen(&a1, (10, 0), true), seen(&a2, (11, 1), true)]);
        assert_eq!(idx.newest("s", "a"), Some(a2.envelope.hash.clone()));
        assert!(idx.reflects("s", Some(3)) && !idx.reflects("s", Some(4)) && !idx.reflects("t", Some(3)));
        let batch = vec![rec("a", 2, 5), rec("a", 1, 6), b1.clone(), rec("b", 1, 7)];
        let split = idx.classify("s", &batch, |_| false);
        // a=2 repeats; a=1 goes back to an older version: fresh; b twice in a batch: once.
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![6, 2]);
        assert_eq!(split.repeats, 2);
        assert!(split.raw_gap.is_empty());
        // Nothing is remembered before the commit.
        assert_eq!(idx.newest("s", "b"), None);
        idx.committed("s", &split, None, |_| false);
        assert_eq!(idx.newest("s", "a"), Some(a1.envelope.hash.clone()));
        assert_eq!(idx.newest("s", "b"), Some(b1.envelope.hash.clone()));
        assert!(idx.reflects("s", Some(3)), "no mark given: unchanged");
        idx.committed("s", &idx.classify("s", &[], |_| false), Some(Some(4)), |_| false);
        assert!(idx.reflects("s", Some(4)));
        // Other sources are separate.
        assert_eq!(idx.classify("t", &[rec("a", 2, 0)], |_| false).fresh.len(), 1);
    }

    #[test]
    fn the_newest_position_wins_whatever_the_scan_order() {
        let idx = RepeatIndex::new();
        let (a1, a2) = (rec("a", 1, 0), rec("a", 2, 1));
        idx.load("s", None, [seen(&a2, (11, 1), true), seen(&a1, (10, 0), true)]);
        assert_eq!(idx.newest("s", "a"), Some(a2.envelope.hash.clone()));
        // A later scan replaces the decided version of a key it covers.
        idx.load("s", None, [seen(&a1, (12, 2), true)]);
        assert_eq!(idx.newest("s", "a"), Some(a1.envelope.hash.clone()));
    }

    #[test]
    fn a_version_missing_from_the_raw_table_is_written_there_once() {
        let idx = RepeatIndex::new();
        let a = rec("a", 1, 0);
        // A library holds a=1, the raw table does not (crash between commits).
        assert_eq!(idx.load("s", Some(1), [seen(&a, (10, 0), false)]), 1);
        let batch = vec![rec("a", 1, 4), rec("a", 1, 5), rec("c", 1, 3)];
        let split = idx.classify("s", &batch, |_| false);
        assert_eq!(split.repeats, 2);
        assert_eq!(split.raw_gap.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4]);
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3]);
        // The raw table gets both, in bus order.
        assert_eq!(split.raw_records().iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
        idx.committed("s", &split, Some(Some(2)), |_| false);
        // Filled: the next copy is a plain repeat.
        let again = [rec("a", 1, 9)];
        let split = idx.classify("s", &again, |_| false);
        assert_eq!((split.repeats, split.fresh.len(), split.raw_gap.len()), (1, 0, 0));
        // A reload replaces the source's gaps.
        assert_eq!(idx.load("s", Some(2), [seen(&a, (10, 0), false)]), 1);
        assert_eq!(idx.load("s", Some(2), [seen(&a, (10, 0), true)]), 0);
    }

    #[test]
    fn a_version_some_library_holds_at_its_own_position_is_fresh_again() {
        // Libraries commit side by side: after a crash one library may hold
        // offset 0 and another not. Replayed at the same position, the
        // version is normalized again (the libraries that hold it skip it by
        // position); a copy at a new position stays a repeat.
        let idx = RepeatIndex::new();
        let a = rec("a", 1, 0);
        idx.load("s", Some(1), [seen(&a, (10, 0), false)]);
        let batch = vec![rec("a", 1, 0), rec("a", 1, 7)];
        let split = idx.classify("s", &batch, |r| r.offset < 1);
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0]);
        assert_eq!(split.repeats, 1);
        assert!(split.raw_gap.is_empty());
        idx.committed("s", &split, Some(Some(2)), |_| false);
        let later = [rec("a", 1, 9)];
        let split = idx.classify("s", &later, |_| true);
        assert_eq!((split.repeats, split.fresh.len(), split.raw_gap.len()), (1, 0, 0));
    }

    fn replayed(key: &str, n: i64, offset: u64, run: &str) -> BusRecord {
        let mut r = rec(key, n, offset);
        r.envelope.locator = Some(format!("replay:{run}:raw.s/0/{offset} @ file.jsonl:3"));
        r
    }

    #[test]
    fn a_replay_decides_the_newest_version_once_per_run() {
        let idx = RepeatIndex::new();
        let (a1, b1, b2) = (rec("a", 1, 0), rec("b", 1, 1), rec("b", 2, 2));
        let mut a1_open = seen(&a1, (10, 0), true);
        a1_open.open = true;
        let mut b1_open = seen(&b1, (10, 1), true);
        b1_open.open = true;
        idx.load("s", Some(1), [a1_open.clone(), b1_open, seen(&b2, (11, 2), true)]);
        // a=1 is the newest version of a: replayed once per run (twice in a
        // batch counts once); b=1 was superseded by b=2: stale, a repeat.
        let batch = vec![replayed("a", 1, 5, "r1"), replayed("a", 1, 6, "r1"), replayed("b", 1, 7, "r1")];
        let split = idx.classify("s", &batch, |_| false);
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5]);
        assert_eq!(split.repeats, 2);
        // Quarantined again (the mapping still fails).
        idx.committed("s", &split, None, |_| true);
        // The same run published again (a crash before its checkpoint): a repeat.
        let again = vec![replayed("a", 1, 8, "r1")];
        assert!(idx.classify("s", &again, |_| false).fresh.is_empty());
        // A later run replays it again; an unchanged re-fetch stays a repeat.
        let later = vec![replayed("a", 1, 9, "r2"), rec("a", 1, 10)];
        let split = idx.classify("s", &later, |_| false);
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![9]);
        // Copies of two runs in one batch: decided once.
        let two = vec![replayed("a", 1, 20, "r5"), replayed("a", 1, 21, "r6")];
        assert_eq!(idx.classify("s", &two, |_| false).fresh.len(), 1);
        // It lands: no run replays it again (copies of two runs on the bus).
        idx.committed("s", &split, None, |_| false);
        assert!(idx.classify("s", &[replayed("a", 1, 13, "r4")], |_| false).fresh.is_empty());
        // After a restart the scan tells which run decided it.
        let idx = RepeatIndex::new();
        let mut v = seen(&a1, (12, 5), true);
        v.replay = Some("r1".into());
        v.open = true;
        idx.load("s", Some(2), [a1_open, v]);
        assert!(idx.classify("s", &[replayed("a", 1, 11, "r1")], |_| false).fresh.is_empty());
        assert_eq!(idx.classify("s", &[replayed("a", 1, 12, "r3")], |_| false).fresh.len(), 1);
    }
}
