//! PNUM/PNO multi-packet reassembly.
//!
//! Packets of one message share MN, QN and CN and carry `PNUM` (total) and
//! `PNO` (1-based index). [`Reassembler::push`] passes unsplit frames
//! straight through, buffers split packets, and returns the merged message
//! when the last missing packet arrives. Retransmitted packets replace the
//! earlier copy. Incomplete messages are evicted after `timeout` (measured
//! from their first packet) or when more than `max_pending` are open (the
//! oldest goes first); see [`Reassembler::evict_expired`].
//!
//! Merging: the header (QN, ST, CN, PW, MN, Flag, version) comes from packet
//! 1; `pnum` stays, `pno` is cleared. CP payloads are merged in PNO order:
//! factors with the same code are combined (later values that conflict go to
//! the factor's `extra`), other keys are kept (repeats as `key#2`, …).
//! `raw` is the packets' data segments in PNO order joined by `\n`.
//! `crc_ok` is true only if every packet's was.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::error::Hj212Error;
use crate::frame::{Frame, put_dedup, strip_dedup};

/// Outcome of pushing one frame.
#[allow(clippy::large_enum_variant)] // short-lived return value
#[derive(Debug, Clone, PartialEq)]
pub enum Reassembled {
    /// A whole logical message: an unsplit frame (`packets == 1`) or the
    /// merge of all `packets` packets.
    Complete { frame: Frame, packets: u32 },
    /// A packet was stored; the message is still incomplete.
    Buffered { received: u32, total: u32 },
}

/// A message dropped before it was complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub mn: String,
    pub qn: String,
    pub cn: String,
    pub received: u32,
    pub total: u32,
    /// `"timeout"` or `"overflow"`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    mn: String,
    qn: String,
    cn: String,
}

#[derive(Debug)]
struct Pending {
    total: u32,
    first_seen: Instant,
    packets: BTreeMap<u32, Frame>,
}

/// Reassembles split messages. One per connection is the intended use.
#[derive(Debug)]
pub struct Reassembler {
    timeout: Duration,
    max_pending: usize,
    max_packets: u32,
    pending: HashMap<Key, Pending>,
    evicted: Vec<Evicted>,
}

impl Reassembler {
    /// Largest PNUM accepted by default.
    pub const DEFAULT_MAX_PACKETS: u32 = 1024;

    pub fn new(timeout: Duration, max_pending: usize) -> Self {
        Reassembler {
            timeout,
            max_pending: max_pending.max(1),
            max_packets: Self::DEFAULT_MAX_PACKETS,
            pending: HashMap::new(),
            evicted: Vec::new(),
        }
    }

    /// Cap on PNUM (bounds memory per message).
    pub fn with_max_packets(mut self, max_packets: u32) -> Self {
        self.max_packets = max_packets.max(1);
        self
    }

    /// Number of incomplete messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feed one decoded frame. `now` is the arrival time (a parameter so
    /// tests can drive time).
    pub fn push(&mut self, frame: Frame, now: Instant) -> Result<Reassembled, Hj212Error> {
        let total = match frame.pnum {
            None | Some(0) | Some(1) => {
                return Ok(Reassembled::Complete { frame, packets: 1 });
            }
            Some(n) => n,
        };
        let qn = frame.qn.clone().unwrap_or_default();
        let err = |reason: String| Hj212Error::Reassembly { mn: frame.mn.clone(), qn: qn.clone(), reason };
        if total > self.max_packets {
            return Err(err(format!("PNUM {total} exceeds the limit {}", self.max_packets)));
        }
        let pno = match frame.pno {
            None => return Err(err(format!("PNUM={total} but PNO missing"))),
            Some(p) if p == 0 || p > total => {
                return Err(err(format!("PNO {p} outside 1..={total}")));
            }
            Some(p) => p,
        };
        let key = Key { mn: frame.mn.clone(), qn: qn.clone(), cn: frame.cn.clone() };

        if let Some(p) = self.pending.get(&key)
            && p.total != total
        {
            // The sender restarted the message with a different split.
            self.pending.remove(&key);
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            self.evict_oldest();
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            total,
            first_seen: now,
            packets: BTreeMap::new(),
        });
        entry.packets.insert(pno, frame);
        let received = u32::try_from(entry.packets.len()).unwrap_or(u32::MAX);
        if received < total {
            return Ok(Reassembled::Buffered { received, total });
        }
        let Some(done) = self.pending.remove(&key) else {
            return Ok(Reassembled::Buffered { received, total });
        };
        Ok(Reassembled::Complete { frame: merge(done.packets.into_values(), total), packets: total })
    }

    fn evict_oldest(&mut self) {
        let oldest = self.pending.iter().min_by_key(|(_, p)| p.first_seen).map(|(k, _)| k.clone());
        if let Some(k) = oldest
            && let Some(p) = self.pending.remove(&k)
        {
            self.evicted.push(evicted(k, &p, "overflow"));
        }
    }

    /// Drop messages older than the timeout; returns them together with any
    /// evicted for overflow since the last call.
    pub fn evict_expired(&mut self, now: Instant) -> Vec<Evicted> {
        let timeout = self.timeout;
        let expired: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_seen) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(p) = self.pending.remove(&k) {
                self.evicted.push(evicted(k, &p, "timeout"));
            }
        }
        std::mem::take(&mut self.evicted)
    }
}

fn evicted(k: Key, p: &Pending, reason: &'static str) -> Evicted {
    Evicted {
        mn: k.mn,
        qn: k.qn,
        cn: k.cn,
        received: u32::try_from(p.packets.len()).unwrap_or(u32::MAX),
        total: p.total,
        reason,
    }
}

fn merge(packets: impl Iterator<Item = Frame>, total: u32) -> Frame {
    let mut out: Option<Frame> = None;
    for f in packets {
        match out.as_mut() {
            None => {
                let mut first = f;
                first.pno = None;
                first.pnum = Some(total);
                out = Some(first);
            }
            Some(acc) => {
                acc.crc_ok &= f.crc_ok;
                acc.raw.push('\n');
                acc.raw.push_str(&f.raw);
                acc.cp.merge(f.cp);
                for (k, v) in f.header_extra {
                    put_dedup(&mut acc.header_extra, strip_dedup(&k), &v);
                }
            }
        }
    }
    // `packets` is never empty here (received == total >= 2).
    out.unwrap_or_else(|| Frame::new("", "", ""))
}
