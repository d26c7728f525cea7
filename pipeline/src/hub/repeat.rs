//! The repeat index: which version of each record the hub has already
//! decided, so that re-fetched records leave the libraries unchanged.
//!
//! A *version* is `(source, version key, content hash)`; the version key is
//! the record's key, or `#<hash>` for records without a usable key (bound for
//! quarantine), which are recognized by their content alone
//! ([`version_key`]).
//!
//! The index keeps, per source:
//! * the content hash of the **newest decided version** per key, with
//!   whether that decision was quarantine: a record carrying it is a repeat
//!   and produces no library rows (only quarantined versions are replayed);
//! * the **quarantine replay run** that last decided a key's newest version;
//! * the **raw gaps**: versions a library holds but the raw table does not
//!   (a crash between the library commits and the raw commit). The next copy
//!   of such a record is still a repeat for the libraries but is written to
//!   the raw table, which fills the gap;
//! * the **raw-table version the index reflects** (its *mark*): when the
//!   raw table moved past it (another worker committed, or this process
//!   crashed between a raw commit and the index update) the index of that
//!   source is rebuilt.
//!
//! # Storage: bounded memory
//! The index lives in a [redb](https://docs.rs/redb) file beside the node's
//! bus state, `<data dir>/nodes/<node>/repeats.redb` ([`RepeatIndex::open`]),
//! with a fixed page cache ([`CACHE_BYTES`]): ten million keys cost disk, not
//! memory. Tables per source: `newest/<source>` (key id → content id and
//! flags), `replays/<source>` (key id → run), `gaps/<source>` (key id,
//! content id), and one `marks` table. A version key is stored as its
//! 128-bit XXH3 seeded with a secret derived from the data dir's token key
//! (a source key may be a citizen ID: the file holds no readable key, and
//! nobody without the key can craft colliding keys); a content hash (the
//! 32-hex XXH3-128 of the envelope) as its 128-bit value. The index is
//! rebuilt from a scan of the raw table and the libraries only when it is
//! missing, stale or made with another key ([`RepeatIndex::begin_load`]).
//!
//! The hub consults it per batch ([`RepeatIndex::classify`]) and updates it
//! only once a batch is durable ([`RepeatIndex::committed`]): one fsynced
//! redb transaction per batch, which also moves the mark.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use lianqin_bus::{BusRecord, Envelope};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle};

use crate::PipelineError;

/// The redb page cache of the index: what it holds in memory at most,
/// whatever the number of keys.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The index file in a node's folder.
pub const FILE: &str = "repeats.redb";

/// The index is made with this key (a check value derived from it).
const META: TableDefinition<&str, u128> = TableDefinition::new("meta");
/// Source → the raw-table version the index reflects.
const MARKS: TableDefinition<&str, Option<i64>> = TableDefinition::new("marks");
/// Source → the id of the raw table the marks count versions of.
const TABLES: TableDefinition<&str, &str> = TableDefinition::new("tables");

/// Content id and flags ([`OPEN`]) of the newest decided version.
type NewestValue = (u128, u8);
/// Flag: the newest decision was quarantine.
const OPEN: u8 = 1;

fn newest_table(source: &str) -> String {
    format!("newest/{source}")
}
fn replays_table(source: &str) -> String {
    format!("replays/{source}")
}
fn gaps_table(source: &str) -> String {
    format!("gaps/{source}")
}
fn loading_table(source: &str) -> String {
    format!("loading/{source}")
}

/// The version key of a record: its key, or `#<content hash>` when it has
/// no usable key (unparsable or keyless records).
pub fn version_key(e: &Envelope) -> String {
    if e.error.is_some() || e.key.is_empty() { format!("#{}", e.hash) } else { e.key.clone() }
}

/// The 128-bit id of a content hash: its value when it is 32 hex digits
/// (XXH3-128, [`lianqin_model::content_hash_bytes`]), else (a hash written
/// by an older release) the XXH3-128 of its text.
pub fn content_id(hash: &str) -> u128 {
    if hash.len() == 32
        && let Ok(v) = u128::from_str_radix(hash, 16)
    {
        return v;
    }
    twox_hash::XxHash3_128::oneshot(hash.as_bytes())
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

/// A gap: `(key id, content id)` of a version missing from the raw table.
type Gap = (u128, u128);

/// What is kept in memory: small, read on every batch.
#[derive(Debug, Default)]
struct Mem {
    /// Source → raw-table version the index reflects (absent: rebuild).
    marks: HashMap<String, Option<i64>>,
    /// Source → versions a library holds but the raw table does not.
    gaps: HashMap<String, HashSet<Gap>>,
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
    /// Key and content ids of `fresh`, in the same order.
    ids: Vec<(u128, u128)>,
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
pub struct RepeatIndex {
    db: Database,
    /// Where it is stored (for messages).
    place: String,
    /// Seed of the key ids.
    seed: u64,
    mem: Mutex<Mem>,
}

impl std::fmt::Debug for RepeatIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepeatIndex").field("place", &self.place).finish_non_exhaustive()
    }
}

/// The seed of the key ids and the check value stored with them, derived
/// from `secret` (HMAC-SHA-256, so neither reveals the secret).
fn derive(secret: &[u8]) -> (u64, u128) {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"lianqin repeat index v1");
    let d = mac.finalize().into_bytes();
    let seed = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
    let check = u128::from_le_bytes(d[8..24].try_into().expect("16 bytes"));
    (seed, check)
}

impl RepeatIndex {
    /// Opens (creating) the index file at `path`, made with `secret` (the
    /// data dir's token key). An index made with another key is emptied:
    /// every source is rebuilt.
    pub fn open(path: &Path, secret: &[u8]) -> Result<RepeatIndex, PipelineError> {
        let place = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PipelineError::Library(format!("repeat index {place}: {e}")))?;
        }
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| {
            PipelineError::Library(format!(
                "repeat index {place}: {e} (is another hub of this node running on the data dir?)"
            ))
        })?;
        RepeatIndex::with_db(db, place, secret)
    }

    /// An index in memory (tests, tools).
    pub fn in_memory() -> RepeatIndex {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb opens");
        RepeatIndex::with_db(db, "memory".into(), b"test").expect("an in-memory index opens")
    }

    fn with_db(db: Database, place: String, secret: &[u8]) -> Result<RepeatIndex, PipelineError> {
        let (seed, check) = derive(secret);
        let idx = RepeatIndex { db, place, seed, mem: Mutex::new(Mem::default()) };
        let tx = idx.db.begin_write().map_err(|e| idx.err(e))?;
        let same_key = {
            let meta = tx.open_table(META).map_err(|e| idx.err(e))?;
            let stored = meta.get("check").map_err(|e| idx.err(e))?.map(|g| g.value());
            stored == Some(check)
        };
        if !same_key {
            // Made with another key (or new): nothing in it can be trusted.
            let names: Vec<String> = tx.list_tables().map_err(|e| idx.err(e))?.map(|t| t.name().to_string()).collect();
            for name in names {
                let def: TableDefinition<&str, u128> = TableDefinition::new(&name);
                tx.delete_table(def).map_err(|e| idx.err(e))?;
            }
            tx.open_table(META).map_err(|e| idx.err(e))?.insert("check", check).map_err(|e| idx.err(e))?;
        }
        tx.commit().map_err(|e| idx.err(e))?;
        // Marks and gaps are small: kept in memory.
        let rx = idx.db.begin_read().map_err(|e| idx.err(e))?;
        let mut mem = Mem::default();
        match rx.open_table(MARKS) {
            Ok(t) => {
                for item in t.iter().map_err(|e| idx.err(e))? {
                    let (k, v) = item.map_err(|e| idx.err(e))?;
                    mem.marks.insert(k.value().to_string(), v.value());
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(idx.err(e)),
        }
        let names: Vec<String> = rx.list_tables().map_err(|e| idx.err(e))?.map(|t| t.name().to_string()).collect();
        for name in names {
            let Some(source) = name.strip_prefix("gaps/") else { continue };
            let def: TableDefinition<(u128, u128), ()> = TableDefinition::new(&name);
            let t = rx.open_table(def).map_err(|e| idx.err(e))?;
            let set = mem.gaps.entry(source.to_string()).or_default();
            for item in t.iter().map_err(|e| idx.err(e))? {
                set.insert(item.map_err(|e| idx.err(e))?.0.value());
            }
        }
        drop(rx);
        *idx.mem() = mem;
        Ok(idx)
    }

    fn err(&self, e: impl Into<redb::Error>) -> PipelineError {
        PipelineError::Library(format!("repeat index {}: {}", self.place, e.into()))
    }

    fn mem(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of a version key (seeded XXH3-128).
    fn key_id(&self, key: &str) -> u128 {
        twox_hash::XxHash3_128::oneshot_with_seed(self.seed, key.as_bytes())
    }

    /// The raw-table version the index of `source` reflects; `None` when it
    /// has none (never built, or being rebuilt).
    pub fn mark(&self, source: &str) -> Option<Option<i64>> {
        self.mem().marks.get(source).copied()
    }

    /// Whether the index of `source` reflects raw-table version `now` (else
    /// another worker committed since, or an update was lost: reload).
    pub fn reflects(&self, source: &str, now: Option<i64>) -> bool {
        self.mark(source) == Some(now)
    }

    /// Ties the index of `source` to its raw table's id (the Delta table
    /// id): when the table is another one than the index was built from (a
    /// data dir whose tables were deleted and created again), the mark is
    /// dropped and the source is rebuilt. Returns whether it was the same.
    pub fn bind(&self, source: &str, table_id: &str) -> Result<bool, PipelineError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::Immediate);
        let same = {
            let mut tables = tx.open_table(TABLES).map_err(|e| self.err(e))?;
            let same = tables.get(source).map_err(|e| self.err(e))?.is_some_and(|g| g.value() == table_id);
            if !same {
                tables.insert(source, table_id).map_err(|e| self.err(e))?;
                tx.open_table(MARKS).map_err(|e| self.err(e))?.remove(source).map_err(|e| self.err(e))?;
            }
            same
        };
        tx.commit().map_err(|e| self.err(e))?;
        if !same {
            self.invalidate(source);
        }
        Ok(same)
    }

    /// Forgets the mark of `source` (in memory): the next batch rebuilds it.
    pub fn invalidate(&self, source: &str) {
        self.mem().marks.remove(source);
    }

    /// The content id of the newest decided version of `key` in `source`.
    pub fn newest(&self, source: &str, key: &str) -> Result<Option<u128>, PipelineError> {
        let rx = self.db.begin_read().map_err(|e| self.err(e))?;
        let name = newest_table(source);
        let def: TableDefinition<u128, NewestValue> = TableDefinition::new(&name);
        match rx.open_table(def) {
            Ok(t) => Ok(t.get(self.key_id(key)).map_err(|e| self.err(e))?.map(|g| g.value().0)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Starts rebuilding the index of `source` from a scan: its entries and
    /// mark are dropped (until [`Loader::finish`] the source reflects no
    /// raw-table version). Feed the scan with [`Loader::add`].
    pub fn begin_load(&self, source: &str) -> Result<Loader<'_>, PipelineError> {
        self.invalidate(source);
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        // Not durable alone: a crash before `finish` leaves the previous
        // durable state (with its own mark), which is rebuilt again.
        tx.set_durability(Durability::None);
        for name in [newest_table(source), replays_table(source), gaps_table(source), loading_table(source)] {
            let def: TableDefinition<&str, u128> = TableDefinition::new(&name);
            tx.delete_table(def).map_err(|e| self.err(e))?;
        }
        tx.open_table(MARKS).map_err(|e| self.err(e))?.remove(source).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Loader { idx: self, source: source.to_string(), gaps: HashSet::new() })
    }

    /// Rebuilds the index of `source` from what a scan of its raw table and
    /// libraries found, made at raw-table version `raw_version`
    /// ([`RepeatIndex::begin_load`], one [`Loader::add`],
    /// [`Loader::finish`]). Returns the number of gaps.
    pub fn load(
        &self,
        source: &str,
        raw_version: Option<i64>,
        seen: impl IntoIterator<Item = SeenVersion>,
    ) -> Result<usize, PipelineError> {
        let mut l = self.begin_load(source)?;
        l.add(&seen.into_iter().collect::<Vec<_>>())?;
        l.finish(raw_version)
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
    ) -> Result<Split<'a>, PipelineError> {
        let rx = self.db.begin_read().map_err(|e| self.err(e))?;
        let (newest_name, replays_name) = (newest_table(source), replays_table(source));
        let newest_def: TableDefinition<u128, NewestValue> = TableDefinition::new(&newest_name);
        let replays_def: TableDefinition<u128, &str> = TableDefinition::new(&replays_name);
        let newest = match rx.open_table(newest_def) {
            Ok(t) => Some(t),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let replays = match rx.open_table(replays_def) {
            Ok(t) => Some(t),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.err(e)),
        };
        let lookup = |kid: u128| -> Result<Option<NewestValue>, PipelineError> {
            match &newest {
                Some(t) => Ok(t.get(kid).map_err(|e| self.err(e))?.map(|g| g.value())),
                None => Ok(None),
            }
        };
        let mem = self.mem();
        let no_gaps = HashSet::new();
        let gaps = mem.gaps.get(source).unwrap_or(&no_gaps);
        let mut split = Split { fresh: Vec::with_capacity(recs.len()), ..Default::default() };
        let mut in_batch: HashMap<u128, u128> = HashMap::new();
        // Keys a replayed record of this batch decides (whatever its run:
        // one decision per version and batch).
        let mut replayed_in_batch: HashSet<u128> = HashSet::new();
        for r in recs {
            let hid = content_id(&r.envelope.hash);
            let kid = self.key_id(&version_key(&r.envelope));
            let stored = lookup(kid)?;
            let decided = stored.is_some_and(|(h, _)| h == hid);
            if let Some(run) = r.envelope.replay_run() {
                let open = stored.is_some_and(|(_, f)| f & OPEN != 0);
                let done = replayed_in_batch.contains(&kid)
                    || match &replays {
                        Some(t) => t.get(kid).map_err(|e| self.err(e))?.is_some_and(|g| g.value() == run),
                        None => false,
                    };
                if decided && open && !done {
                    replayed_in_batch.insert(kid);
                    split.ids.push((kid, hid));
                    split.fresh.push(r);
                } else {
                    split.repeats += 1;
                }
                continue;
            }
            let seen_in_batch = in_batch.get(&kid) == Some(&hid);
            if decided && !seen_in_batch && !gaps.is_empty() && replayed(r) && gaps.contains(&(kid, hid)) {
                split.gaps.push((kid, hid));
                in_batch.insert(kid, hid);
                split.ids.push((kid, hid));
                split.fresh.push(r);
                continue;
            }
            if decided || seen_in_batch {
                split.repeats += 1;
                if !seen_in_batch && gaps.contains(&(kid, hid)) {
                    split.raw_gap.push(r);
                    split.gaps.push((kid, hid));
                    in_batch.insert(kid, hid);
                }
            } else {
                in_batch.insert(kid, hid);
                split.ids.push((kid, hid));
                split.fresh.push(r);
            }
        }
        Ok(split)
    }

    /// Once `split` is durable (libraries and raw table committed): its gaps
    /// are filled, its fresh versions become the decided ones, and, when
    /// `raw_version` is given, the index is marked as reflecting that
    /// raw-table version (leave it `None` when another worker may have
    /// committed in between, so the next batch reloads). `quarantined(r)`
    /// says whether fresh record `r` went to quarantine. One durable redb
    /// transaction; when it fails, the source's mark is dropped so that
    /// the next batch rebuilds the index. The same as
    /// [`RepeatIndex::apply`] of [`RepeatIndex::update`].
    pub fn committed(
        &self,
        source: &str,
        split: &Split<'_>,
        raw_version: Option<Option<i64>>,
        quarantined: impl Fn(&BusRecord) -> bool,
    ) -> Result<(), PipelineError> {
        self.apply(Self::update(source, split, raw_version, quarantined))
    }

    /// What [`RepeatIndex::committed`] writes, taken out of `split` (which
    /// borrows the batch), so the write can run on another thread while the
    /// worker polls its next batch ([`crate::hub::Hub`] waits for it before
    /// that batch is classified).
    pub fn update(
        source: &str,
        split: &Split<'_>,
        raw_version: Option<Option<i64>>,
        quarantined: impl Fn(&BusRecord) -> bool,
    ) -> Update {
        // In key order: neighbouring pages.
        let mut order: Vec<usize> = (0..split.fresh.len()).collect();
        order.sort_by_key(|&i| split.ids[i].0);
        let fresh = order
            .into_iter()
            .map(|i| {
                let (r, (kid, hid)) = (split.fresh[i], split.ids[i]);
                let flags = if quarantined(r) { OPEN } else { 0 };
                (kid, hid, flags, r.envelope.replay_run().map(str::to_string))
            })
            .collect();
        Update { source: source.to_string(), fresh, gaps: split.gaps.clone(), raw_version }
    }

    /// Writes `update` (one durable redb transaction) and moves the
    /// in-memory mark; see [`RepeatIndex::committed`].
    pub fn apply(&self, update: Update) -> Result<(), PipelineError> {
        let done = self.write_update(&update);
        let mut mem = self.mem();
        match &done {
            Ok(()) => {
                if let Some(g) = mem.gaps.get_mut(&update.source) {
                    for gap in &update.gaps {
                        g.remove(gap);
                    }
                }
                if let Some(v) = update.raw_version {
                    mem.marks.insert(update.source.clone(), v);
                }
            }
            Err(_) => {
                mem.marks.remove(&update.source);
            }
        }
        done
    }

    fn write_update(&self, u: &Update) -> Result<(), PipelineError> {
        let source = u.source.as_str();
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let (newest_name, replays_name, gaps_name) =
                (newest_table(source), replays_table(source), gaps_table(source));
            let mut newest =
                tx.open_table(TableDefinition::<u128, NewestValue>::new(&newest_name)).map_err(|e| self.err(e))?;
            let mut replays =
                tx.open_table(TableDefinition::<u128, &str>::new(&replays_name)).map_err(|e| self.err(e))?;
            let mut any_replays = !replays.is_empty().map_err(|e| self.err(e))?;
            for (kid, hid, flags, run) in &u.fresh {
                newest.insert(*kid, (*hid, *flags)).map_err(|e| self.err(e))?;
                match run {
                    Some(run) => {
                        replays.insert(*kid, run.as_str()).map_err(|e| self.err(e))?;
                        any_replays = true;
                    }
                    // Decided by the source again: no run decided it.
                    None if any_replays => {
                        replays.remove(*kid).map_err(|e| self.err(e))?;
                    }
                    None => {}
                }
            }
            drop((newest, replays));
            if !u.gaps.is_empty() {
                let mut g =
                    tx.open_table(TableDefinition::<(u128, u128), ()>::new(&gaps_name)).map_err(|e| self.err(e))?;
                for gap in &u.gaps {
                    g.remove(*gap).map_err(|e| self.err(e))?;
                }
            }
            if let Some(v) = u.raw_version {
                tx.open_table(MARKS).map_err(|e| self.err(e))?.insert(source, v).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

/// The index changes of one committed batch ([`RepeatIndex::update`]).
#[derive(Debug)]
pub struct Update {
    source: String,
    /// Per fresh version, in key-id order: key id, content id, flags and
    /// the replay run that decided it.
    fresh: Vec<(u128, u128, u8, Option<String>)>,
    gaps: Vec<Gap>,
    raw_version: Option<Option<i64>>,
}

impl Update {
    /// The source whose index it changes.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Rebuilds the index of one source from a scan ([`RepeatIndex::begin_load`]).
pub struct Loader<'a> {
    idx: &'a RepeatIndex,
    source: String,
    gaps: HashSet<Gap>,
}

impl Loader<'_> {
    /// Takes in part of the scan (in any order, one transaction): per key,
    /// the version at the newest position becomes the decided one; versions
    /// only a library holds become gaps.
    pub fn add(&mut self, seen: &[SeenVersion]) -> Result<(), PipelineError> {
        let idx = self.idx;
        let mut tx = idx.db.begin_write().map_err(|e| idx.err(e))?;
        tx.set_durability(Durability::None);
        {
            let (newest_name, replays_name, loading_name) =
                (newest_table(&self.source), replays_table(&self.source), loading_table(&self.source));
            let mut newest =
                tx.open_table(TableDefinition::<u128, NewestValue>::new(&newest_name)).map_err(|e| idx.err(e))?;
            let mut replays =
                tx.open_table(TableDefinition::<u128, &str>::new(&replays_name)).map_err(|e| idx.err(e))?;
            // Key id → position of the version in `newest` (dropped at the end).
            let mut positions =
                tx.open_table(TableDefinition::<u128, (i64, i64)>::new(&loading_name)).map_err(|e| idx.err(e))?;
            let mut rows: Vec<(u128, &SeenVersion)> = seen.iter().map(|v| (idx.key_id(&v.key), v)).collect();
            rows.sort_by_key(|(kid, _)| *kid);
            for (kid, v) in rows {
                let hid = content_id(&v.hash);
                if !v.in_raw {
                    self.gaps.insert((kid, hid));
                }
                let newer = match positions.get(kid).map_err(|e| idx.err(e))? {
                    Some(p) => v.position > p.value(),
                    None => true,
                };
                if !newer {
                    continue;
                }
                positions.insert(kid, v.position).map_err(|e| idx.err(e))?;
                newest.insert(kid, (hid, if v.open { OPEN } else { 0 })).map_err(|e| idx.err(e))?;
                match &v.replay {
                    Some(run) => {
                        replays.insert(kid, run.as_str()).map_err(|e| idx.err(e))?;
                    }
                    None => {
                        replays.remove(kid).map_err(|e| idx.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| idx.err(e))
    }

    /// Ends the rebuild: the gaps are stored and the index is marked as
    /// reflecting raw-table version `raw_version` (durably). Returns the
    /// number of gaps.
    pub fn finish(self, raw_version: Option<i64>) -> Result<usize, PipelineError> {
        let idx = self.idx;
        let mut tx = idx.db.begin_write().map_err(|e| idx.err(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let loading_name = loading_table(&self.source);
            tx.delete_table(TableDefinition::<u128, (i64, i64)>::new(&loading_name)).map_err(|e| idx.err(e))?;
            let gaps_name = gaps_table(&self.source);
            let mut g = tx.open_table(TableDefinition::<(u128, u128), ()>::new(&gaps_name)).map_err(|e| idx.err(e))?;
            for gap in &self.gaps {
                g.insert(*gap, ()).map_err(|e| idx.err(e))?;
            }
            tx.open_table(MARKS)
                .map_err(|e| idx.err(e))?
                .insert(self.source.as_str(), raw_version)
                .map_err(|e| idx.err(e))?;
        }
        tx.commit().map_err(|e| idx.err(e))?;
        let n = self.gaps.len();
        let mut mem = idx.mem();
        mem.gaps.insert(self.source.clone(), self.gaps);
        mem.marks.insert(self.source, raw_version);
        Ok(n)
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
        let idx = RepeatIndex::in_memory();
        let (a1, a2, b1) = (rec("a", 1, 0), rec("a", 2, 1), rec("b", 1, 2));
        // Scan: a went 1 → 2; b is new.
        idx.load("s", Some(3), [seen(&a1, (10, 0), true), seen(&a2, (11, 1), true)]).unwrap();
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a2.envelope.hash)));
        assert!(idx.reflects("s", Some(3)) && !idx.reflects("s", Some(4)) && !idx.reflects("t", Some(3)));
        let batch = vec![rec("a", 2, 5), rec("a", 1, 6), b1.clone(), rec("b", 1, 7)];
        let split = idx.classify("s", &batch, |_| false).unwrap();
        // a=2 repeats; a=1 goes back to an older version: fresh; b twice in a batch: once.
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![6, 2]);
        assert_eq!(split.repeats, 2);
        assert!(split.raw_gap.is_empty());
        // Nothing is remembered before the commit.
        assert_eq!(idx.newest("s", "b").unwrap(), None);
        idx.committed("s", &split, None, |_| false).unwrap();
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a1.envelope.hash)));
        assert_eq!(idx.newest("s", "b").unwrap(), Some(content_id(&b1.envelope.hash)));
        assert!(idx.reflects("s", Some(3)), "no mark given: unchanged");
        idx.committed("s", &idx.classify("s", &[], |_| false).unwrap(), Some(Some(4)), |_| false).unwrap();
        assert!(idx.reflects("s", Some(4)));
        // Other sources are separate.
        assert_eq!(idx.classify("t", &[rec("a", 2, 0)], |_| false).unwrap().fresh.len(), 1);
    }

    #[test]
    fn the_newest_position_wins_whatever_the_scan_order() {
        let idx = RepeatIndex::in_memory();
        let (a1, a2) = (rec("a", 1, 0), rec("a", 2, 1));
        idx.load("s", None, [seen(&a2, (11, 1), true), seen(&a1, (10, 0), true)]).unwrap();
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a2.envelope.hash)));
        // A later scan replaces the decided version of a key it covers.
        idx.load("s", None, [seen(&a1, (12, 2), true)]).unwrap();
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a1.envelope.hash)));
    }

    #[test]
    fn a_version_missing_from_the_raw_table_is_written_there_once() {
        let idx = RepeatIndex::in_memory();
        let a = rec("a", 1, 0);
        // A library holds a=1, the raw table does not (crash between commits).
        assert_eq!(idx.load("s", Some(1), [seen(&a, (10, 0), false)]).unwrap(), 1);
        let batch = vec![rec("a", 1, 4), rec("a", 1, 5), rec("c", 1, 3)];
        let split = idx.classify("s", &batch, |_| false).unwrap();
        assert_eq!(split.repeats, 2);
        assert_eq!(split.raw_gap.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4]);
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3]);
        // The raw table gets both, in bus order.
        assert_eq!(split.raw_records().iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
        idx.committed("s", &split, Some(Some(2)), |_| false).unwrap();
        // Filled: the next copy is a plain repeat.
        let again = [rec("a", 1, 9)];
        let split = idx.classify("s", &again, |_| false).unwrap();
        assert_eq!((split.repeats, split.fresh.len(), split.raw_gap.len()), (1, 0, 0));
        // A reload replaces the source's gaps.
        assert_eq!(idx.load("s", Some(2), [seen(&a, (10, 0), false)]).unwrap(), 1);
        assert_eq!(idx.load("s", Some(2), [seen(&a, (10, 0), true)]).unwrap(), 0);
    }

    #[test]
    fn a_version_some_library_holds_at_its_own_position_is_fresh_again() {
        // Libraries commit side by side: after a crash one library may hold
        // offset 0 and another not. Replayed at the same position, the
        // version is normalized again (the libraries that hold it skip it by
        // position); a copy at a new position stays a repeat.
        let idx = RepeatIndex::in_memory();
        let a = rec("a", 1, 0);
        idx.load("s", Some(1), [seen(&a, (10, 0), false)]).unwrap();
        let batch = vec![rec("a", 1, 0), rec("a", 1, 7)];
        let split = idx.classify("s", &batch, |r| r.offset < 1).unwrap();
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0]);
        assert_eq!(split.repeats, 1);
        assert!(split.raw_gap.is_empty());
        idx.committed("s", &split, Some(Some(2)), |_| false).unwrap();
        let later = [rec("a", 1, 9)];
        let split = idx.classify("s", &later, |_| true).unwrap();
        assert_eq!((split.repeats, split.fresh.len(), split.raw_gap.len()), (1, 0, 0));
    }

    fn replayed(key: &str, n: i64, offset: u64, run: &str) -> BusRecord {
        let mut r = rec(key, n, offset);
        r.envelope.locator = Some(format!("replay:{run}:raw.s/0/{offset} @ file.jsonl:3"));
        r
    }

    #[test]
    fn a_replay_decides_the_newest_version_once_per_run() {
        let idx = RepeatIndex::in_memory();
        let (a1, b1, b2) = (rec("a", 1, 0), rec("b", 1, 1), rec("b", 2, 2));
        let mut a1_open = seen(&a1, (10, 0), true);
        a1_open.open = true;
        let mut b1_open = seen(&b1, (10, 1), true);
        b1_open.open = true;
        idx.load("s", Some(1), [a1_open.clone(), b1_open, seen(&b2, (11, 2), true)]).unwrap();
        // a=1 is the newest version of a: replayed once per run (twice in a
        // batch counts once); b=1 was superseded by b=2: stale, a repeat.
        let batch = vec![replayed("a", 1, 5, "r1"), replayed("a", 1, 6, "r1"), replayed("b", 1, 7, "r1")];
        let split = idx.classify("s", &batch, |_| false).unwrap();
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5]);
        assert_eq!(split.repeats, 2);
        // Quarantined again (the mapping still fails).
        idx.committed("s", &split, None, |_| true).unwrap();
        // The same run published again (a crash before its checkpoint): a repeat.
        let again = vec![replayed("a", 1, 8, "r1")];
        assert!(idx.classify("s", &again, |_| false).unwrap().fresh.is_empty());
        // A later run replays it again; an unchanged re-fetch stays a repeat.
        let later = vec![replayed("a", 1, 9, "r2"), rec("a", 1, 10)];
        let split = idx.classify("s", &later, |_| false).unwrap();
        assert_eq!(split.fresh.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![9]);
        // Copies of two runs in one batch: decided once.
        let two = vec![replayed("a", 1, 20, "r5"), replayed("a", 1, 21, "r6")];
        assert_eq!(idx.classify("s", &two, |_| false).unwrap().fresh.len(), 1);
        // It lands: no run replays it again (copies of two runs on the bus).
        idx.committed("s", &split, None, |_| false).unwrap();
        assert!(idx.classify("s", &[replayed("a", 1, 13, "r4")], |_| false).unwrap().fresh.is_empty());
        // After a restart the scan tells which run decided it.
        let idx = RepeatIndex::in_memory();
        let mut v = seen(&a1, (12, 5), true);
        v.replay = Some("r1".into());
        v.open = true;
        idx.load("s", Some(2), [a1_open, v]).unwrap();
        assert!(idx.classify("s", &[replayed("a", 1, 11, "r1")], |_| false).unwrap().fresh.is_empty());
        assert_eq!(idx.classify("s", &[replayed("a", 1, 12, "r3")], |_| false).unwrap().fresh.len(), 1);
    }

    #[test]
    fn the_index_survives_a_restart_and_is_dropped_with_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes").join("hub").join(FILE);
        let (a1, b1) = (rec("a", 1, 0), rec("b", 1, 1));
        {
            let idx = RepeatIndex::open(&path, b"key one").unwrap();
            assert_eq!(idx.mark("s"), None, "a new index reflects nothing");
            // A library holds c=1 without the raw table: a gap.
            let c = rec("c", 1, 2);
            assert_eq!(idx.load("s", Some(1), [seen(&a1, (10, 0), true), seen(&c, (10, 2), false)]).unwrap(), 1);
            // A source key may be personal (a citizen ID).
            let batch = [b1.clone(), rec("330501199001011234", 1, 3)];
            let split = idx.classify("s", &batch, |_| false).unwrap();
            idx.committed("s", &split, Some(Some(2)), |_| true).unwrap();
        }
        // Reopened with the same key: everything is there, no scan.
        let idx = RepeatIndex::open(&path, b"key one").unwrap();
        assert!(idx.reflects("s", Some(2)));
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a1.envelope.hash)));
        assert_eq!(idx.newest("s", "b").unwrap(), Some(content_id(&b1.envelope.hash)));
        let again = [rec("c", 1, 7), rec("b", 1, 8)];
        let split = idx.classify("s", &again, |_| false).unwrap();
        assert_eq!((split.repeats, split.raw_gap.len()), (2, 1), "the gap of c survived");
        // b's decision was quarantine: a replay of it is fresh.
        let replay = [replayed("b", 1, 9, "r1")];
        assert_eq!(idx.classify("s", &replay, |_| false).unwrap().fresh.len(), 1);
        // A mark is dropped on request (a lost update): the hub rebuilds.
        idx.invalidate("s");
        assert!(!idx.reflects("s", Some(2)));
        drop(idx);
        // Another key: nothing of the old index is trusted.
        let idx = RepeatIndex::open(&path, b"key two").unwrap();
        assert_eq!(idx.mark("s"), None);
        assert_eq!(idx.newest("s", "a").unwrap(), None);
        // The file holds no key in clear.
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(18).any(|w| w == b"330501199001011234"), "keys are stored as seeded hashes");
    }

    #[test]
    fn another_raw_table_drops_the_mark() {
        let idx = RepeatIndex::in_memory();
        assert!(!idx.bind("s", "table-1").unwrap(), "first bind");
        idx.load("s", Some(3), []).unwrap();
        assert!(idx.bind("s", "table-1").unwrap() && idx.reflects("s", Some(3)));
        // The tables were deleted and made again: same version, other table.
        assert!(!idx.bind("s", "table-2").unwrap());
        assert_eq!(idx.mark("s"), None);
    }

    #[test]
    fn a_load_in_parts_keeps_the_newest_position_and_replaces_the_old_index() {
        let idx = RepeatIndex::in_memory();
        let (a1, a2, a3, b1) = (rec("a", 1, 0), rec("a", 2, 1), rec("a", 3, 2), rec("b", 1, 3));
        idx.load("s", Some(1), [seen(&b1, (1, 3), true)]).unwrap();
        let mut l = idx.begin_load("s").unwrap();
        assert_eq!(idx.mark("s"), None, "no mark while loading");
        l.add(&[seen(&a2, (11, 1), true), seen(&a1, (10, 0), true)]).unwrap();
        l.add(&[seen(&a3, (9, 2), true)]).unwrap();
        assert_eq!(l.finish(Some(5)).unwrap(), 0);
        assert!(idx.reflects("s", Some(5)));
        assert_eq!(idx.newest("s", "a").unwrap(), Some(content_id(&a2.envelope.hash)));
        assert_eq!(idx.newest("s", "b").unwrap(), None, "the old entries went with the old index");
    }

    #[test]
    fn content_ids_are_the_hash_value_or_a_hash_of_an_older_form() {
        let h = Envelope::upsert("s", "d", "k", serde_json::json!({"x": 1}), None).hash;
        assert_eq!(content_id(&h), u128::from_str_radix(&h, 16).unwrap());
        let sha = "ab".repeat(32);
        assert_eq!(content_id(&sha), content_id(&sha));
        assert_ne!(content_id(&sha), content_id(&"ac".repeat(32)));
    }
}
