//! Tokio TCP server for HJ 212 devices (the platform side).
//!
//! Per connection: bytes go through a [`FrameDecoder`], good frames through a
//! [`Reassembler`], and complete messages into the caller's bounded
//! `mpsc::Sender<Hj212Message>`. The server *awaits* `send`, so a full
//! channel stops reading from the socket (TCP backpressure to the device).
//!
//! Replies (when [`Hj212ServerConfig::reply`] is on):
//! * a good frame whose Flag has the A bit (and whose CN is not 9xxx) gets a
//!   CN=9014 data reply — only after the message has been accepted by the
//!   channel, or, with [`Hj212ServerConfig::ack_when_durable`], only once the
//!   receiver called [`DurableAck::confirm`] on the message (after making it
//!   durable); a message whose `DurableAck` is dropped unconfirmed is never
//!   acknowledged, so the device resends it. Replies on one connection go
//!   out in the order of the frames, from a writer task, so the connection
//!   keeps reading (and the receiver can batch) while acks wait;
//!   intermediate packets of a split message are acknowledged when they are
//!   buffered, so stop-and-wait senders can continue;
//! * a frame with a valid envelope but a bad CRC gets a CN=9011 `QnRtn=9`
//!   ("CRC wrong") NAK (if [`Hj212ServerConfig::nak_bad_crc`]), is counted
//!   in [`Hj212Stats::bad_crc`] and is never forwarded;
//! * broken frames and garbage are counted and not answered (there is no
//!   reliable QN/MN to answer to).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::crc::CrcVariant;
use crate::decoder::FrameDecoder;
use crate::error::Hj212Error;
use crate::frame::{Frame, MAX_DATA_LEN};
use crate::reassembly::{Reassembled, Reassembler};
use crate::reply::{QnRtn, build_data_ack, build_qn_rtn, needs_data_ack};

/// Server settings.
#[derive(Debug, Clone)]
pub struct Hj212ServerConfig {
    /// CRC variant the devices on this port use.
    pub crc: CrcVariant,
    /// Send replies at all (9014 acks and the bad-CRC NAK).
    pub reply: bool,
    /// Answer bad-CRC frames with CN=9011 `QnRtn=9` (needs `reply`).
    pub nak_bad_crc: bool,
    /// Largest accepted data-segment length (capped at 9999).
    pub max_frame: usize,
    /// How long an incomplete PNUM/PNO message is kept.
    pub reassembly_timeout: Duration,
    /// Incomplete messages kept per connection (oldest evicted first).
    pub max_pending_messages: usize,
    /// Close a connection silent for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Give up on a reply write after this long (and close the connection).
    pub write_timeout: Duration,
    /// Concurrent connections; further ones are closed at once and counted.
    pub max_connections: usize,
    /// Send a message's 9014 reply only after the receiver confirmed it
    /// ([`Hj212Message::durable`]); default false (reply once the channel
    /// accepted the message).
    pub ack_when_durable: bool,
}

impl Default for Hj212ServerConfig {
    fn default() -> Self {
        Hj212ServerConfig {
            crc: CrcVariant::Hj212,
            reply: true,
            nak_bad_crc: true,
            max_frame: MAX_DATA_LEN,
            reassembly_timeout: Duration::from_secs(60),
            max_pending_messages: 64,
            idle_timeout: Some(Duration::from_secs(600)),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            ack_when_durable: false,
        }
    }
}

/// Counters, shared by all connections of one server.
#[derive(Debug, Default)]
pub struct Hj212Stats {
    /// Frames with a valid envelope, CRC and data segment.
    pub frames_ok: AtomicU64,
    /// Frames whose CRC did not verify (never forwarded).
    pub bad_crc: AtomicU64,
    /// Frames with a broken envelope or data segment.
    pub malformed: AtomicU64,
    /// Bytes skipped while resynchronising.
    pub garbage_bytes: AtomicU64,
    /// CN=9014 data replies sent.
    pub acks_sent: AtomicU64,
    /// CN=9011 `QnRtn=9` replies sent for bad CRC.
    pub naks_sent: AtomicU64,
    /// Messages accepted by the sink channel.
    pub messages_forwarded: AtomicU64,
    /// Split packets that could not be placed (bad PNO, PNUM over limit).
    pub reassembly_errors: AtomicU64,
    /// Incomplete split messages dropped (timeout or overflow).
    pub reassembly_evicted: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections closed at once because `max_connections` was reached.
    pub connections_rejected: AtomicU64,
}

/// Plain copy of [`Hj212Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hj212StatsSnapshot {
    pub frames_ok: u64,
    pub bad_crc: u64,
    pub malformed: u64,
    pub garbage_bytes: u64,
    pub acks_sent: u64,
    pub naks_sent: u64,
    pub messages_forwarded: u64,
    pub reassembly_errors: u64,
    pub reassembly_evicted: u64,
    pub connections_accepted: u64,
    pub connections_rejected: u64,
}

impl Hj212Stats {
    pub fn snapshot(&self) -> Hj212StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Hj212StatsSnapshot {
            frames_ok: g(&self.frames_ok),
            bad_crc: g(&self.bad_crc),
            malformed: g(&self.malformed),
            garbage_bytes: g(&self.garbage_bytes),
            acks_sent: g(&self.acks_sent),
            naks_sent: g(&self.naks_sent),
            messages_forwarded: g(&self.messages_forwarded),
            reassembly_errors: g(&self.reassembly_errors),
            reassembly_evicted: g(&self.reassembly_evicted),
            connections_accepted: g(&self.connections_accepted),
            connections_rejected: g(&self.connections_rejected),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The receiver's promise to confirm a message once it is durable; the
/// device's 9014 reply waits for it (with
/// [`Hj212ServerConfig::ack_when_durable`]). Dropping it unconfirmed means
/// "not stored": the device gets no ack and resends. Clones share one
/// confirmation; it is not part of the message's value (always equal).
#[derive(Clone, Default)]
pub struct DurableAck(Option<Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>>);

impl DurableAck {
    fn pair() -> (DurableAck, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (DurableAck(Some(Arc::new(std::sync::Mutex::new(Some(tx))))), rx)
    }

    /// The message is durable: let its reply go out (once; later calls and
    /// messages that need no reply do nothing).
    pub fn confirm(&self) {
        if let Some(slot) = &self.0
            && let Ok(mut g) = slot.lock()
            && let Some(tx) = g.take()
        {
            let _ = tx.send(());
        }
    }

    /// Whether a reply waits for this confirmation.
    pub fn is_pending(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.lock().map(|g| g.is_some()).unwrap_or(false))
    }
}

impl std::fmt::Debug for DurableAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableAck(pending: {})", self.is_pending())
    }
}

impl PartialEq for DurableAck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One logical message handed to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Hj212Message {
    /// The device's address.
    pub peer: SocketAddr,
    /// The frame, or the merge of a split message's packets.
    pub frame: Frame,
    /// 1, or PNUM for a reassembled message.
    pub packets: u32,
    /// When the (last) packet was decoded.
    pub received_at: DateTime<Utc>,
    /// Confirm once durable (see [`DurableAck`]); a no-op unless the
    /// server waits for it.
    pub durable: DurableAck,
}

/// A reply queued for the connection's writer, in frame order.
enum Reply {
    /// Write now (NAKs, acks of buffered split packets, acks on accept).
    Now(Frame),
    /// Write once the message is confirmed durable; dropped if it never is.
    WhenDurable(oneshot::Receiver<()>, Frame),
}

/// A bound, not yet running, HJ 212 server.
#[derive(Debug)]
pub struct Hj212Server {
    listener: TcpListener,
    config: Hj212ServerConfig,
    stats: Arc<Hj212Stats>,
}

impl Hj212Server {
    /// Bind the listening socket. Returns the actual local address (useful
    /// with port 0) and the server.
    pub async fn bind(addr: impl ToSocketAddrs, config: Hj212ServerConfig) -> io::Result<(SocketAddr, Hj212Server)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((local, Hj212Server { listener, config, stats: Arc::new(Hj212Stats::default()) }))
    }

    /// Shared counters (take a handle before calling [`Hj212Server::run`]).
    pub fn stats(&self) -> Arc<Hj212Stats> {
        Arc::clone(&self.stats)
    }

    /// Accept and serve connections until every receiver of `sink` is
    /// dropped; then all connection tasks are stopped and `Ok(())` returned.
    pub async fn run(self, sink: mpsc::Sender<Hj212Message>) -> io::Result<()> {
        let cfg = Arc::new(self.config);
        let stats = self.stats;
        let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                _ = sink.closed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // E.g. out of file descriptors: back off briefly.
                            tracing::warn!(error = %e, "hj212: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        inc(&stats.connections_rejected);
                        tracing::warn!(%peer, "hj212: connection limit reached, closing");
                        drop(stream);
                        continue;
                    };
                    inc(&stats.connections_accepted);
                    let conn = Connection {
                        peer,
                        cfg: Arc::clone(&cfg),
                        stats: Arc::clone(&stats),
                        sink: sink.clone(),
                    };
                    tasks.spawn(async move {
                        let _permit = permit;
                        conn.serve(stream).await;
                    });
                }
            }
        }
        tasks.shutdown().await;
        Ok(())
    }
}

struct Connection {
    peer: SocketAddr,
    cfg: Arc<Hj212ServerConfig>,
    stats: Arc<Hj212Stats>,
    sink: mpsc::Sender<Hj212Message>,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        // Replies go out in frame order from their own task, so reading
        // goes on while a reply waits for its message to be durable.
        let (replies, queue) = mpsc::unbounded_channel::<Reply>();
        let mut writer =
            tokio::spawn(write_replies(wr, queue, Arc::clone(&self.cfg), Arc::clone(&self.stats), self.peer));
        let mut dec = FrameDecoder::new(self.cfg.crc, self.cfg.max_frame);
        let mut reasm = Reassembler::new(self.cfg.reassembly_timeout, self.cfg.max_pending_messages);
        let mut buf = vec![0u8; 4096];
        let period = (self.cfg.reassembly_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        let mut writer_done = false;
        'conn: loop {
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "hj212: read failed");
                            break;
                        }
                    };
                    last_read = Instant::now();
                    dec.push(buf.get(..n).unwrap_or_default());
                    while let Some(item) = dec.next_frame() {
                        if !self.handle(item, &mut reasm, &replies).await {
                            break 'conn;
                        }
                    }
                }
                _ = &mut writer => {
                    writer_done = true; // a reply could not be written
                    break;
                }
                _ = tick.tick() => {
                    self.evict(&mut reasm);
                    if let Some(idle) = self.cfg.idle_timeout
                        && last_read.elapsed() >= idle
                    {
                        tracing::debug!(peer = %self.peer, "hj212: idle timeout");
                        break;
                    }
                }
            }
        }
        for e in dec.finish() {
            self.count_error(&e);
        }
        self.evict(&mut reasm);
        if reasm.pending() > 0 {
            let n = reasm.pending() as u64;
            self.stats.reassembly_evicted.fetch_add(n, Ordering::Relaxed);
        }
        // No more frames (the device closed its side, went idle or sent
        // garbage we gave up on): let the writer send the replies still
        // queued — a device may half-close and wait for its acks — for at
        // most `write_timeout`, then stop it.
        drop(replies);
        if !writer_done {
            let _ = tokio::time::timeout(self.cfg.write_timeout, &mut writer).await;
        }
        writer.abort();
    }

    fn evict(&self, reasm: &mut Reassembler) {
        for ev in reasm.evict_expired(Instant::now()) {
            inc(&self.stats.reassembly_evicted);
            tracing::warn!(peer = %self.peer, mn = %ev.mn, qn = %ev.qn, received = ev.received,
                total = ev.total, reason = ev.reason, "hj212: incomplete split message dropped");
        }
    }

    fn count_error(&self, e: &Hj212Error) {
        match e {
            Hj212Error::Garbage { bytes } => {
                self.stats.garbage_bytes.fetch_add(*bytes as u64, Ordering::Relaxed);
                tracing::debug!(peer = %self.peer, bytes, "hj212: skipped garbage");
            }
            Hj212Error::BadCrc { .. } => {
                inc(&self.stats.bad_crc);
                tracing::warn!(peer = %self.peer, error = %e, "hj212: bad CRC");
            }
            _ => {
                inc(&self.stats.malformed);
                tracing::warn!(peer = %self.peer, error = %e, "hj212: malformed frame");
            }
        }
    }

    /// Handle one decoder item. `false` ends the connection (sink closed or
    /// the writer stopped because a reply could not be written).
    async fn handle(
        &self,
        item: Result<Frame, Hj212Error>,
        reasm: &mut Reassembler,
        replies: &mpsc::UnboundedSender<Reply>,
    ) -> bool {
        let frame = match item {
            Ok(f) => f,
            Err(e) => {
                self.count_error(&e);
                return true;
            }
        };
        if !frame.crc_ok {
            inc(&self.stats.bad_crc);
            tracing::warn!(peer = %self.peer, mn = %frame.mn, qn = ?frame.qn, crc = ?self.cfg.crc,
                "hj212: bad CRC (if every frame from this source fails, check its CRC variant)");
            if self.cfg.reply && self.cfg.nak_bad_crc {
                return replies.send(Reply::Now(build_qn_rtn(&frame, QnRtn::CrcError))).is_ok();
            }
            return true;
        }
        inc(&self.stats.frames_ok);
        for w in frame.warnings() {
            tracing::debug!(peer = %self.peer, mn = %frame.mn, warning = %w, "hj212: frame warning");
        }
        let ack = (self.cfg.reply && needs_data_ack(&frame)).then(|| build_data_ack(&frame));
        let reply = match reasm.push(frame, Instant::now()) {
            Ok(Reassembled::Complete { frame, packets }) => {
                let (durable, reply) = match ack {
                    Some(ack) if self.cfg.ack_when_durable => {
                        let (d, confirmed) = DurableAck::pair();
                        (d, Some(Reply::WhenDurable(confirmed, ack)))
                    }
                    Some(ack) => (DurableAck::default(), Some(Reply::Now(ack))),
                    None => (DurableAck::default(), None),
                };
                let msg = Hj212Message { peer: self.peer, frame, packets, received_at: Utc::now(), durable };
                if self.sink.send(msg).await.is_err() {
                    return false;
                }
                inc(&self.stats.messages_forwarded);
                reply
            }
            Ok(Reassembled::Buffered { .. }) => ack.map(Reply::Now),
            Err(e) => {
                inc(&self.stats.reassembly_errors);
                tracing::warn!(peer = %self.peer, error = %e, "hj212: packet not reassembled");
                return true;
            }
        };
        match reply {
            Some(r) => replies.send(r).is_ok(),
            None => true,
        }
    }
}

/// Writes one connection's replies in order. Returns (ending the
/// connection) when a write fails or times out, or when the queue closes.
async fn write_replies(
    mut wr: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Reply>,
    cfg: Arc<Hj212ServerConfig>,
    stats: Arc<Hj212Stats>,
    peer: SocketAddr,
) {
    while let Some(reply) = queue.recv().await {
        let frame = match reply {
            Reply::Now(f) => f,
            Reply::WhenDurable(confirmed, f) => match confirmed.await {
                Ok(()) => f,
                Err(_) => {
                    // Not stored (the hub is stopping, or the publish
                    // failed): no ack, so the device keeps and resends it.
                    tracing::debug!(%peer, qn = ?f.qn, "hj212: message not confirmed durable; no ack");
                    continue;
                }
            },
        };
        let Ok(bytes) = frame.encode(cfg.crc) else {
            continue;
        };
        if !matches!(tokio::time::timeout(cfg.write_timeout, wr.write_all(&bytes)).await, Ok(Ok(()))) {
            tracing::debug!(%peer, "hj212: reply write failed; closing");
            return;
        }
        if frame.cn == "9014" {
            inc(&stats.acks_sent);
        } else {
            inc(&stats.naks_sent);
        }
    }
}
