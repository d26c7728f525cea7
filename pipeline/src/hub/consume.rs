//! The consume loop: polls micro-batches from the bus and commits them
//! (`Hub::commit_batch`), for both ways of running it:
//!
//! * [`Hub::process_available`] — until caught up with the end every
//!   partition had when it started (or 60 s pass without progress); any
//!   failure is returned to the caller;
//! * [`Hub::run_worker`] — until shutdown; failures (a broker that went
//!   away, a rebalance error, a failed batch) never end it: they are logged,
//!   and after a second the consumer is reopened from the positions
//!   committed in the libraries, so nothing is lost or doubled.
//!
//! Either way the consumer starts from the positions stored in the raw
//! tables ([`OffsetLookup`]); the group offsets it commits are informational.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lianqin_bus::{BusRecord, Consumer, OffsetLookup};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::{Hub, ProcessStats};
use crate::PipelineError;
use crate::library::raw_table;

/// How long [`Hub::process_available`] waits without progress before it
/// gives up on reaching the end of every partition (a Kafka consumer needs
/// a moment to join its group).
const NO_PROGRESS: Duration = Duration::from_secs(60);

/// When the consume loop stops, and what it does with failures.
enum Until {
    /// Every partition reached these ends (next offsets), or [`NO_PROGRESS`]
    /// elapsed; failures are returned.
    CaughtUp { pending: BTreeMap<(String, u32), u64>, last_progress: Instant },
    /// Shutdown turned true; failures are logged and retried.
    Shutdown(watch::Receiver<bool>),
}

impl Until {
    fn done(&self) -> bool {
        match self {
            Until::CaughtUp { pending, last_progress } => pending.is_empty() || last_progress.elapsed() >= NO_PROGRESS,
            Until::Shutdown(rx) => *rx.borrow(),
        }
    }

    /// Polls one batch; `None` when shutdown came first.
    async fn poll(&mut self, c: &mut dyn Consumer, hub: &Hub) -> Option<Result<Vec<BusRecord>, PipelineError>> {
        let (max, wait) = (hub.cfg.pipeline.batch_max_records, Duration::from_millis(hub.cfg.pipeline.batch_wait_ms));
        match self {
            Until::CaughtUp { .. } => Some(c.poll(max, wait).await.map_err(PipelineError::Bus)),
            Until::Shutdown(rx) => tokio::select! {
                r = c.poll(max, wait) => Some(r.map_err(PipelineError::Bus)),
                _ = rx.changed() => None,
            },
        }
    }

    /// After a failure: `CaughtUp` hands it back; `Shutdown` logs it with
    /// `log`, waits a second (less on shutdown) and says whether to stop.
    async fn after_failure(&mut self, e: PipelineError, log: fn(&PipelineError)) -> Result<bool, PipelineError> {
        match self {
            Until::CaughtUp { .. } => Err(e),
            Until::Shutdown(rx) => {
                log(&e);
                Ok(pause(rx).await)
            }
        }
    }

    /// A batch up to `positions` (next offsets) was committed.
    fn progressed(&mut self, positions: &[(String, u32, u64)]) {
        if let Until::CaughtUp { pending, last_progress } = self {
            *last_progress = Instant::now();
            for (t, p, next) in positions {
                if pending.get(&(t.clone(), *p)).is_some_and(|end| next >= end) {
                    pending.remove(&(t.clone(), *p));
                }
            }
        }
    }
}

impl Hub {
    /// Consumes everything on the bus now and commits it to the libraries;
    /// returns when caught up (every partition reached the end it had when
    /// the call began).
    pub async fn process_available(&self) -> Result<ProcessStats, PipelineError> {
        if self.sources.is_empty() {
            return Ok(ProcessStats::default());
        }
        let lookup = self.make_lookup().await?;
        // Where "caught up" is: the end of every partition now.
        let mut pending: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for t in self.topics() {
            for (p, end) in self.bus.end_offsets(&t).await.map_err(PipelineError::Bus)?.into_iter().enumerate() {
                let have = lookup(&t, p as u32).unwrap_or(0);
                if end > have {
                    pending.insert((t.clone(), p as u32), end);
                }
            }
        }
        let mut until = Until::CaughtUp { pending, last_progress: Instant::now() };
        let total = self.consume(&mut until, Some(lookup)).await;
        self.settle_index().await;
        let total = total?;
        if let Until::CaughtUp { pending, .. } = &until
            && !pending.is_empty()
        {
            warn!(
                partitions = pending.len(),
                "stopped before reaching the end of every partition (no progress for 60 s)"
            );
        }
        Ok(total)
    }

    /// Runs the worker until `shutdown` turns true. Bus failures (a broker
    /// that went away, a rebalance error) never end the worker: it logs
    /// them, waits a second and resumes from the positions committed in the
    /// libraries, so nothing is lost or doubled.
    pub async fn run_worker(&self, shutdown: watch::Receiver<bool>) -> Result<ProcessStats, PipelineError> {
        let total = self.consume(&mut Until::Shutdown(shutdown), None).await;
        self.settle_index().await;
        total
    }

    /// The consume loop (module docs). `lookup`: positions already read for
    /// the first consumer.
    async fn consume(
        &self,
        until: &mut Until,
        mut lookup: Option<OffsetLookup>,
    ) -> Result<ProcessStats, PipelineError> {
        let topics = self.topics();
        let mut total = ProcessStats::default();
        let mut consumer: Option<Box<dyn Consumer>> = None;
        while !until.done() {
            if consumer.is_none() {
                match self.open_consumer(&topics, lookup.take()).await {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        if until.after_failure(e, |e| warn!("cannot open the bus consumer (will retry): {e}")).await? {
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_mut() else { continue };
            let t_poll = std::time::Instant::now();
            let batch = match until.poll(&mut **c, self).await {
                None => break,
                Some(Ok(b)) => {
                    if !b.is_empty() {
                        debug!(records = b.len(), poll_ms = t_poll.elapsed().as_millis() as u64, "polled");
                    }
                    b
                }
                Some(Err(e)) => {
                    consumer = None;
                    let log = |e: &PipelineError| {
                        warn!("bus poll failed, reopening the consumer from the committed positions: {e}")
                    };
                    if until.after_failure(e, log).await? {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            match self.commit_batch(batch).await {
                Ok((stats, positions)) => {
                    total.add(&stats);
                    until.progressed(&positions);
                    if let Some(c) = consumer.as_mut()
                        && let Err(e) = c.commit(&positions).await
                    {
                        warn!("group offset commit (informational) failed: {e}");
                    }
                }
                Err(e) => {
                    // Nothing of the failed part is acknowledged; rebuild the
                    // consumer from the committed positions and retry.
                    consumer = None;
                    if until.after_failure(e, |e| error!("batch failed, retrying from the last commit: {e}")).await? {
                        break;
                    }
                }
            }
        }
        Ok(total)
    }

    /// The raw topics of the configured sources.
    /// Records on the bus not yet committed, per topic: the end of each
    /// partition minus the position the raw table holds.
    pub async fn backlog(&self) -> Result<Vec<(String, u64)>, PipelineError> {
        let lookup = self.make_lookup().await?;
        let mut out = Vec::new();
        for t in self.topics() {
            let ends = self.bus.end_offsets(&t).await.map_err(PipelineError::Bus)?;
            let n = ends.iter().enumerate().map(|(p, end)| end.saturating_sub(lookup(&t, p as u32).unwrap_or(0))).sum();
            out.push((t, n));
        }
        Ok(out)
    }

    fn topics(&self) -> Vec<String> {
        self.sources.values().map(|s| s.topic.clone()).collect()
    }

    async fn open_consumer(
        &self,
        topics: &[String],
        lookup: Option<OffsetLookup>,
    ) -> Result<Box<dyn Consumer>, PipelineError> {
        let lookup = match lookup {
            Some(l) => l,
            None => self.make_lookup().await?,
        };
        self.bus.consumer(&self.cfg.pipeline.group, topics, lookup).await.map_err(PipelineError::Bus)
    }

    /// The positions (next offsets) stored in the raw tables.
    async fn make_lookup(&self) -> Result<OffsetLookup, PipelineError> {
        let mut known: HashMap<(String, u32), u64> = HashMap::new();
        for s in self.sources.values() {
            let table = raw_table(&s.id);
            let parts = self.bus.end_offsets(&s.topic).await.map(|v| v.len() as u32).unwrap_or(self.cfg.bus.partitions);
            for p in 0..parts {
                if let Some(o) = self.store.position(&table, &s.topic, p).await? {
                    known.insert((s.topic.clone(), p), o);
                }
            }
        }
        Ok(Arc::new(move |t: &str, p: u32| known.get(&(t.to_string(), p)).copied()))
    }
}

/// Waits a second, or less when `shutdown` turns true; returns whether it did.
async fn pause(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = shutdown.changed() => {}
    }
    *shutdown.borrow()
}

#[async_trait::async_trait]
impl crate::metrics::Backlog for Hub {
    async fn backlog(&self) -> Result<Vec<(String, u64)>, PipelineError> {
        Hub::backlog(self).await
    }
}
