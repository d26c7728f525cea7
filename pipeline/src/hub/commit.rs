//! Committing one polled batch: per source, in these steps
//! ([`Hub::commit_source`]):
//!
//! 1. **catch up with other workers** (Kafka: reload the repeat index when
//!    someone else committed the raw table);
//! 2. **positions**: what each library and the raw table already hold;
//!    records the raw table holds were fully committed and are dropped;
//! 3. **repeats**: the [`RepeatIndex`](super::repeat::RepeatIndex) splits
//!    fresh records from repeats;
//! 4. **normalize** the fresh records (mapping, validation, quarantine);
//! 5. **libraries**: each library commits side by side (rows it already
//!    holds are skipped; each commit carries the next bus offsets), each
//!    followed by the [post-commit steps](super::post_commit);
//! 6. **raw table** last, once every library has committed — this commit is
//!    what marks the batch done (its files are written beside steps 4 and 5,
//!    [`LibraryStore::stage`](crate::library::LibraryStore::stage); only the
//!    commit waits);
//! 7. **audit** the quarantine decisions and **remember** the new versions
//!    in the repeat index.
//!
//! A failure anywhere leaves the batch unacknowledged: it is consumed again
//! from the raw table's positions, and step 2 skips what already landed
//! (exactly-once into the libraries).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use lianqin_bus::BusRecord;
use tracing::{Instrument, info, info_span, warn};

use super::repeat::SeenVersion;
use super::{Hub, ProcessStats, SourceRuntime};
use crate::PipelineError;
use crate::library::raw_table;
use crate::schema::LIBRARIES;

/// Next offsets per (topic, partition) covered by a batch.
type Positions = Vec<(String, u32, u64)>;

/// What each table (libraries and raw table) of a source already holds: the
/// next offset per (table, partition).
struct TablePositions(HashMap<(String, u32), u64>);

impl TablePositions {
    fn of(&self, table: &str, partition: u32) -> u64 {
        self.0.get(&(table.to_string(), partition)).copied().unwrap_or(0)
    }
}

impl Hub {
    /// Commits one polled batch (possibly several sources). Returns stats and
    /// the positions (next offsets) it covered.
    pub(super) async fn commit_batch(&self, batch: Vec<BusRecord>) -> Result<(ProcessStats, Positions), PipelineError> {
        let mut by_source: BTreeMap<String, Vec<BusRecord>> = BTreeMap::new();
        let mut positions: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for mut r in batch {
            let next = r.offset + 1;
            let e = positions.entry((r.topic.clone(), r.partition)).or_insert(next);
            *e = (*e).max(next);
            match self.by_topic.get(&r.topic) {
                Some(id) => {
                    // An undecodable bus record knows only its topic.
                    if r.envelope.source.is_empty()
                        && let Some(src) = self.sources.get(id)
                    {
                        r.envelope.source = src.id.clone();
                        r.envelope.department = src.department.clone();
                    }
                    by_source.entry(id.clone()).or_default().push(r)
                }
                None => warn!(topic = %r.topic, "record from a topic with no source; ignored"),
            }
        }
        let mut stats = ProcessStats::default();
        for (id, recs) in by_source {
            let s = self.commit_source(&id, recs).await?;
            stats.add(&s);
        }
        Ok((stats, positions.into_iter().map(|((t, p), o)| (t, p, o)).collect()))
    }

    /// Commits the records of one source (module docs: the steps).
    async fn commit_source(&self, id: &str, recs: Vec<BusRecord>) -> Result<ProcessStats, PipelineError> {
        let src = self.sources.get(id).ok_or_else(|| PipelineError::Internal(format!("unknown source {id}")))?;
        let batch_id = format!(
            "{}@{}",
            recs.first().map(|r| r.offset).unwrap_or(0),
            recs.first().map(|r| r.partition).unwrap_or(0)
        );
        let span = info_span!("batch", source = %id, batch = %batch_id, records = recs.len());
        async move {
            let started = Instant::now();
            self.settle_index().await;
            let raw_name = raw_table(id);
            let raw_base = self.catch_up_with_other_workers(id, &raw_name).await?;
            let held = self.table_positions(src, &raw_name, &recs).await?;
            // Records the raw table already holds were fully committed.
            let recs: Vec<BusRecord> =
                recs.into_iter().filter(|r| r.offset >= held.of(&raw_name, r.partition)).collect();
            let mut stats = ProcessStats { read: recs.len() as u64, batches: 1, ..Default::default() };
            if recs.is_empty() {
                return Ok(stats);
            }
            let oldest = recs.iter().map(|r| r.envelope.fetched_at).min();
            let t_classify = Instant::now();
            let split =
                self.repeats.classify(id, &recs, |r| LIBRARIES.iter().any(|l| r.offset < held.of(l, r.partition)))?;
            let classify_ms = t_classify.elapsed().as_millis() as u64;
            stats.repeats = split.repeats;
            let ingested_at = self.next_ingest_time().await;
            // The raw table's files are written (sealed, encoded) beside
            // normalization and the library commits; only its commit waits
            // for them (step 6).
            let t_stage = Instant::now();
            let raw = crate::normalize::raw_batch(&split.raw_records(), ingested_at)?;
            let staging = {
                let (store, name) = (Arc::clone(&self.store), raw_name.clone());
                let fut = async move {
                    let staged = store.stage(&name, vec![raw]).await;
                    (staged, t_stage.elapsed().as_millis() as u64)
                };
                tokio::spawn(fut.instrument(tracing::Span::current()))
            };
            let t_norm = Instant::now();
            let norm = src.normalizer.normalize(&split.fresh, ingested_at).await?;
            let norm_ms = t_norm.elapsed().as_millis() as u64;
            stats.accepted = norm.accepted as u64;
            stats.quarantined = norm.quarantined as u64;
            let positions = covered(&src.topic, &recs);
            let t_commit = Instant::now();
            let feeds_ms = self.commit_libraries(&norm.libraries, &held, &positions).await?;
            let libraries_ms = t_commit.elapsed().as_millis() as u64;
            let t_raw = Instant::now();
            let (staged, stage_ms) =
                staging.await.map_err(|e| PipelineError::Internal(format!("staging {raw_name}: {e}")))?;
            let mark = self.commit_raw(staged?, &positions, raw_base).await?;
            let raw_ms = t_raw.elapsed().as_millis() as u64;
            // Quarantine decisions are audited (after the commit that made them).
            if let Some(q) = norm.libraries.get("quarantine") {
                self.audit_quarantine(id, q);
            }
            // Only now is the batch durable: remember the new versions.
            let quarantined: std::collections::HashSet<String> = norm
                .libraries
                .get("quarantine")
                .and_then(|q| q.column_by_name("quarantine_id").and_then(strings))
                .map(|ids| ids.iter().flatten().map(str::to_string).collect())
                .unwrap_or_default();
            // The index write (one fsynced transaction) runs while the next
            // batch is polled; that batch waits for it before it is
            // classified ([`Hub::settle_index`]).
            let t_index = Instant::now();
            let update = super::repeat::RepeatIndex::update(id, &split, mark, |r| {
                !quarantined.is_empty() && quarantined.contains(&format!("{}/{}/{}", r.topic, r.partition, r.offset))
            });
            self.write_index(update).await;
            let index_ms = t_index.elapsed().as_millis() as u64;
            info!(
                read = stats.read,
                repeats = stats.repeats,
                accepted = stats.accepted,
                quarantined = stats.quarantined,
                classify_ms,
                normalize_ms = norm_ms,
                libraries_ms,
                raw_ms,
                stage_ms,
                feeds_ms,
                index_ms,
                ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            self.metrics.batch(
                id,
                crate::metrics::Batch {
                    read: stats.read,
                    accepted: stats.accepted,
                    quarantined: stats.quarantined,
                    repeated: stats.repeats,
                    seconds: started.elapsed().as_secs_f64(),
                    lag_seconds: oldest.map(|t| (chrono::Utc::now() - t).as_seconds_f64()),
                },
            );
            Ok(stats)
        }
        .instrument(span)
        .await
    }

    /// Starts writing a committed batch's index `update` on the blocking
    /// pool, after the write before it.
    async fn write_index(&self, update: super::repeat::Update) {
        let mut pending = self.index_write.lock().await;
        if let Some(previous) = pending.take() {
            let _ = previous.await;
        }
        let repeats = Arc::clone(&self.repeats);
        *pending = Some(tokio::task::spawn_blocking(move || {
            let source = update.source().to_string();
            if let Err(e) = repeats.apply(update) {
                // The batch is durable; the index forgot its mark, so the
                // next batch rebuilds it from the tables.
                warn!("{e}; the repeat index of {source} is rebuilt before the next batch");
            }
        }));
    }

    /// Waits for the index write of the last committed batch (before a
    /// batch is classified, and before a consume loop returns, so a caller
    /// that reopens the hub finds the index written).
    pub(super) async fn settle_index(&self) {
        if let Some(pending) = self.index_write.lock().await.take() {
            let _ = pending.await;
        }
    }

    /// Step 1. Kafka: other workers may have committed this source's
    /// partitions since we last looked: reload the tables before comparing
    /// positions, and rebuild the repeat index when someone else wrote
    /// (on either bus, also when an index update was lost).
    /// Returns the raw table's version when this batch began (the repeat
    /// index reflects it), to tell our commit from others'; `None` on the
    /// embedded bus (one worker).
    ///
    /// Known narrow window: if a worker dies after a library commit but
    /// before its raw commit, and a re-fetched copy of one of those records
    /// arrives at a new offset before any further raw commit, the taker can
    /// store that version a second time (same content hash; the current
    /// views are unaffected).
    async fn catch_up_with_other_workers(
        &self,
        id: &str,
        raw_name: &str,
    ) -> Result<Option<Option<i64>>, PipelineError> {
        if self.bus.kind() != "kafka" {
            // One worker: only a lost index update moves the raw table
            // past the index.
            if !self.repeats.reflects(id, self.store.version(raw_name).await) {
                self.load_repeats(&[id]).await?;
            }
            return Ok(None);
        }
        // Only the tables this batch writes.
        let touched: Vec<&str> = LIBRARIES.iter().copied().chain([raw_name]).collect();
        self.store.refresh_tables(&touched).await?;
        let now = self.store.version(raw_name).await;
        if !self.repeats.reflects(id, now) {
            self.load_repeats(&[id]).await?;
        }
        Ok(Some(now))
    }

    /// Step 2. The position of every library and of the raw table, for the
    /// partitions of `recs`.
    async fn table_positions(
        &self,
        src: &SourceRuntime,
        raw_name: &str,
        recs: &[BusRecord],
    ) -> Result<TablePositions, PipelineError> {
        let mut parts: Vec<u32> = recs.iter().map(|r| r.partition).collect();
        parts.sort_unstable();
        parts.dedup();
        let mut held = HashMap::new();
        for t in LIBRARIES.iter().map(|s| s.to_string()).chain([raw_name.to_string()]) {
            for p in &parts {
                let pos = self.store.position(&t, &src.topic, *p).await?.unwrap_or(0);
                held.insert((t.clone(), *p), pos);
            }
        }
        Ok(TablePositions(held))
    }

    /// Step 5. Commits the libraries side by side (each table has its own
    /// commit and its own offsets; rows a table already holds are skipped),
    /// then runs the post-commit steps on every row of each library: the
    /// steps whose libraries are independent for all libraries at once, the
    /// others in library order. Returns the milliseconds the steps added.
    async fn commit_libraries(
        &self,
        libraries: &BTreeMap<String, RecordBatch>,
        held: &TablePositions,
        positions: &[(String, u32, u64)],
    ) -> Result<u64, PipelineError> {
        let mut writes = Vec::new();
        for lib in LIBRARIES {
            let Some(batch) = libraries.get(lib) else { continue };
            let fresh_rows = skip_committed(batch, |p| held.of(lib, p))?;
            let write = if fresh_rows.num_rows() > 0 {
                let (store, positions, name) = (Arc::clone(&self.store), positions.to_vec(), lib.to_string());
                let fut = async move { store.append(&name, vec![fresh_rows], &positions).await };
                Some(tokio::spawn(fut.instrument(tracing::Span::current())))
            } else {
                None
            };
            writes.push((lib, batch, write));
        }
        let mut first_err = None;
        let mut feeds_ms = 0u64;
        // Steps whose libraries are independent (the change feeds) run for
        // each library as soon as it committed, side by side; the others
        // one library after the other, in `LIBRARIES` order.
        let (side_by_side, in_turn): (Vec<_>, Vec<_>) =
            self.post_commit.iter().cloned().partition(|s| s.libraries_independent());
        let mut parallel = Vec::new();
        for (lib, batch, write) in writes {
            let done = match write {
                Some(h) => {
                    h.await.map_err(|e| PipelineError::Internal(format!("commit to {lib}: {e}"))).and_then(|r| r)
                }
                None => Ok(()),
            };
            if let Err(e) = done {
                first_err.get_or_insert(e);
                continue;
            }
            if first_err.is_some() {
                continue;
            }
            // Every row of the batch (also rows a table already held after
            // a crash): at-least-once, in order per key.
            if !side_by_side.is_empty() {
                let (steps, lib_name, rows) = (side_by_side.clone(), lib.to_string(), batch.clone());
                let run = async move {
                    for step in &steps {
                        step.after_commit(&lib_name, &rows).await?;
                    }
                    Ok::<(), PipelineError>(())
                };
                parallel.push((lib, tokio::spawn(run.instrument(tracing::Span::current()))));
            }
            let t_feed = Instant::now();
            for step in &in_turn {
                if let Err(e) = step.after_commit(lib, batch).await {
                    first_err.get_or_insert(e);
                    break;
                }
            }
            feeds_ms += t_feed.elapsed().as_millis() as u64;
        }
        // Wait for every step started, also after an error: the batch is
        // retried only once nothing of it is still in flight. `feeds_ms` is
        // what the steps added to the batch: the in-turn steps plus the
        // wait after the last library committed.
        let t_wait = Instant::now();
        for (lib, h) in parallel {
            let done = h.await.map_err(|e| PipelineError::Internal(format!("after commit to {lib}: {e}")));
            if let Err(e) = done.and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        feeds_ms += t_wait.elapsed().as_millis() as u64;
        match first_err {
            Some(e) => Err(e),
            None => Ok(feeds_ms),
        }
    }

    /// Step 6. Commits the raw table's stage: each distinct version once
    /// (the fresh records plus repeats that fill a crash gap, in bus order;
    /// written by [`crate::library::LibraryStore::stage`] while the
    /// libraries committed). Returns
    /// the raw-table version the repeat index may be marked with: `None`
    /// when another worker committed in between (our append landed after
    /// theirs), so the next batch reloads the index — otherwise a re-fetched
    /// copy of one of their records, once we take over their partitions,
    /// would be stored a second time.
    async fn commit_raw(
        &self,
        staged: crate::library::Staged,
        positions: &[(String, u32, u64)],
        raw_base: Option<Option<i64>>,
    ) -> Result<Option<Option<i64>>, PipelineError> {
        let raw_name = staged.table().to_string();
        self.store.commit_staged(staged, positions).await?;
        let v = self.store.version(&raw_name).await;
        let only_ours = match raw_base {
            None => true,
            Some(base) => v.zip(base).is_some_and(|(v, b)| v == b + 1),
        };
        Ok(only_ours.then_some(v))
    }

    /// Step 7. One `quarantine` audit entry per quarantined record.
    fn audit_quarantine(&self, source: &str, q: &RecordBatch) {
        use lianqin_audit::{AuditEvent, EventKind, Outcome};
        let (Some(keys), Some(reasons), Some(depts)) = (
            q.column_by_name("source_key").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            q.column_by_name("reason").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            q.column_by_name("department").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        ) else {
            return;
        };
        for i in 0..q.num_rows() {
            let mut ev = AuditEvent::new(EventKind::Quarantine, "system:pipeline", depts.value(i), Outcome::Deny);
            ev.tables = vec!["quarantine".into()];
            ev.detail = serde_json::json!({"source": source, "key": keys.value(i), "reason": reasons.value(i)});
            if let Err(e) = self.audit.record(ev) {
                warn!("audit: {e}");
            }
        }
    }

    /// A strictly increasing `ingested_at` (microseconds) for a batch.
    async fn next_ingest_time(&self) -> i64 {
        let mut last = self.last_ingest.lock().await;
        let now = chrono::Utc::now().timestamp_micros();
        *last = if now > *last { now } else { *last + 1 };
        *last
    }

    /// At start: keeps each source's persisted repeat index when it
    /// reflects the raw table's current version and no library is ahead of
    /// the raw table (a crash between the library commits and the raw
    /// commit leaves gaps only a scan finds); rebuilds it otherwise.
    pub(super) async fn open_repeats(&self) -> Result<(), PipelineError> {
        let mut stale = Vec::new();
        for (id, src) in &self.sources {
            let raw_name = raw_table(id);
            let now = self.store.version(&raw_name).await;
            let table_id = self.store.table_id(&raw_name).await.unwrap_or_default();
            let same_table = self.repeats.bind(id, &table_id)?;
            let why = match self.repeats.mark(id) {
                None if !same_table => Some("the index was made for another raw table (or none)"),
                None => Some("no index yet"),
                Some(m) if m != now => Some("the raw table moved past the index"),
                Some(_) if self.libraries_ahead(src, &raw_name).await? => Some("a library is ahead of the raw table"),
                Some(_) => None,
            };
            match why {
                None => tracing::debug!(source = %id, "repeat index kept"),
                Some(why) => {
                    info!(source = %id, reason = why, "rebuilding the repeat index from the raw table and libraries");
                    stale.push(id.as_str());
                }
            }
        }
        // One query engine for every source to rebuild.
        self.load_repeats(&stale).await
    }

    /// Whether some library holds a bus position of `src` that its raw
    /// table does not.
    async fn libraries_ahead(&self, src: &SourceRuntime, raw_name: &str) -> Result<bool, PipelineError> {
        let partitions = self.bus.end_offsets(&src.topic).await?.len() as u32;
        for p in 0..partitions {
            let raw = self.store.position(raw_name, &src.topic, p).await?.unwrap_or(0);
            for lib in LIBRARIES {
                if self.store.position(lib, &src.topic, p).await?.unwrap_or(0) > raw {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// (Re)builds the repeat index of the sources `ids`, from
    /// the raw table and the libraries: the newest decided version per key
    /// (a crash can leave a library commit without its raw commit). The scan
    /// streams into the index batch by batch.
    pub(super) async fn load_repeats(&self, ids: &[&str]) -> Result<(), PipelineError> {
        use futures::StreamExt;
        if ids.is_empty() {
            return Ok(());
        }
        let engine = crate::query::QueryEngine::new(&self.store, &self.catalog).await?;
        for id in ids.iter().copied().filter(|id| self.sources.contains_key(*id)) {
            let t = raw_table(id);
            // Records without a usable key are known by their content hash
            // alone (`repeat::version_key`).
            let keyed = "CASE WHEN source_key <> '' THEN source_key ELSE '#' || content_hash END";
            let mut parts = vec![format!(
                "SELECT CASE WHEN error IS NULL AND source_key <> '' THEN source_key ELSE '#' || content_hash END AS k, \
                 content_hash AS h, ingested_at, bus_offset, 1 AS r, CAST(NULL AS BIGINT) AS tq, CAST(NULL AS BIGINT) AS tl, \
                 CASE WHEN locator LIKE '{prefix}%' THEN split_part(locator, ':', 2) END AS rp FROM {t}",
                prefix = lianqin_bus::REPLAY_PREFIX
            )];
            for lib in ["element_history", "matter_history", "matter_event_history", "quarantine"] {
                if engine.tables().iter().any(|n| n == lib) {
                    parts.push(format!(
                        "SELECT {keyed} AS k, content_hash AS h, ingested_at, bus_offset, 0 AS r, {tq} AS tq, {tl} AS tl, \
                         CAST(NULL AS VARCHAR) AS rp FROM {lib} WHERE source_id = '{id}'",
                        tq = if lib == "quarantine" { "CAST(ingested_at AS BIGINT)" } else { "CAST(NULL AS BIGINT)" },
                        tl = if lib == "quarantine" { "CAST(NULL AS BIGINT)" } else { "CAST(ingested_at AS BIGINT)" },
                    ));
                }
            }
            let all = parts.join(" UNION ALL ");
            // One scan: every (key, version) with its newest position and
            // whether the raw table holds it; the index picks the newest
            // version per key.
            let sql = format!(
                "SELECT k, h, max(r) AS in_raw, max(ingested_at) AS t, \
                 last_value(bus_offset ORDER BY ingested_at, bus_offset) AS o, max(rp) AS rp, \
                 CAST(max(tq) IS NOT NULL AND (max(tl) IS NULL OR max(tq) > max(tl)) AS BIGINT) AS open \
                 FROM ({all}) GROUP BY k, h"
            );
            // The version of the raw table this scan reflects (read first).
            let raw_version = self.store.version(&t).await;
            let query_err =
                |e: datafusion::error::DataFusionError| PipelineError::Query(format!("repeat index of {id}: {e}"));
            let mut stream =
                engine.context().sql(&sql).await.map_err(query_err)?.execute_stream().await.map_err(query_err)?;
            let mut loader = self.repeats.begin_load(id)?;
            while let Some(b) = stream.next().await {
                let b = b.map_err(query_err)?;
                let ints = |i: usize| {
                    arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Int64)
                        .ok()
                        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                };
                let (Some(k), Some(h), Some(in_raw), Some(ts), Some(off), Some(rp), Some(open)) = (
                    strings(b.column(0)),
                    strings(b.column(1)),
                    ints(2),
                    ints(3),
                    ints(4),
                    strings(b.column(5)),
                    ints(6),
                ) else {
                    return Err(PipelineError::Internal(format!("version index of {id}: unexpected column types")));
                };
                let mut seen = Vec::with_capacity(b.num_rows());
                for i in 0..b.num_rows() {
                    if !k.is_valid(i) || !h.is_valid(i) {
                        continue;
                    }
                    seen.push(SeenVersion {
                        key: k.value(i).to_string(),
                        hash: h.value(i).to_string(),
                        position: (ts.value(i), off.value(i)),
                        in_raw: in_raw.value(i) != 0,
                        replay: rp.is_valid(i).then(|| rp.value(i).to_string()),
                        open: open.is_valid(i) && open.value(i) != 0,
                    });
                }
                loader.add(&seen)?;
            }
            let gaps = loader.finish(raw_version)?;
            self.metrics.repeat_index_rebuilt(id);
            if gaps > 0 {
                info!(source = %id, versions = gaps, "library versions missing from the raw table (crash between commits); the next copies fill them in");
            }
        }
        Ok(())
    }
}

/// The next offset per partition of `topic` that `recs` cover.
fn covered(topic: &str, recs: &[BusRecord]) -> Positions {
    let mut covered: BTreeMap<u32, u64> = BTreeMap::new();
    for r in recs {
        let e = covered.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    covered.iter().map(|(p, o)| (topic.to_string(), *p, *o)).collect()
}

fn col_i64<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a Int64Array> {
    b.column_by_name(name)?.as_any().downcast_ref::<Int64Array>()
}

/// Drops rows whose bus position is below the table's committed position.
fn skip_committed(batch: &RecordBatch, pos: impl Fn(u32) -> u64) -> Result<RecordBatch, PipelineError> {
    let (Some(p), Some(o)) = (col_i64(batch, "bus_partition"), col_i64(batch, "bus_offset")) else {
        return Ok(batch.clone());
    };
    let keep: BooleanArray = (0..batch.num_rows()).map(|i| Some(o.value(i) as u64 >= pos(p.value(i) as u32))).collect();
    if keep.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &keep).map_err(|e| PipelineError::Internal(e.to_string()))
}

/// A text column as a `StringArray` (casting Utf8View / LargeUtf8).
fn strings(col: &arrow::array::ArrayRef) -> Option<StringArray> {
    let c = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).ok()?;
    c.as_any().downcast_ref::<StringArray>().cloned()
}
