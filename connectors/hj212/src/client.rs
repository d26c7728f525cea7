//! Device-side helpers for tests and demos.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::crc::CrcVariant;
use crate::decoder::FrameDecoder;
use crate::error::Hj212Error;
use crate::frame::{Frame, MAX_DATA_LEN};

pub use crate::frame::encode_frame;

/// How [`simulate_device_with`] behaves.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// CRC variant used to decode the server's replies.
    pub crc: CrcVariant,
    /// Write the concatenated frames in chunks of this many bytes (split
    /// packets); `None` writes each frame with one call.
    pub chunk_size: Option<usize>,
    /// Pause between chunks / frames.
    pub write_delay: Duration,
    /// Stop reading replies after this long without any.
    pub reply_wait: Duration,
    /// Stop reading as soon as this many replies have arrived.
    pub expected_replies: Option<usize>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            crc: CrcVariant::Hj212,
            chunk_size: None,
            write_delay: Duration::ZERO,
            reply_wait: Duration::from_millis(500),
            expected_replies: None,
        }
    }
}

/// What the simulated device received.
#[derive(Debug, Clone, Default)]
pub struct DeviceReport {
    /// Replies decoded from the server (check `crc_ok`).
    pub replies: Vec<Frame>,
    /// Anything undecodable the server sent.
    pub errors: Vec<Hj212Error>,
}

/// Connect to `addr`, send `frames` (raw wire bytes, e.g. from
/// [`encode_frame`]), then collect replies until 500 ms pass without one.
pub async fn simulate_device(addr: SocketAddr, frames: &[Vec<u8>]) -> io::Result<DeviceReport> {
    simulate_device_with(addr, frames, &DeviceOptions::default()).await
}

/// [`simulate_device`] with options.
pub async fn simulate_device_with(
    addr: SocketAddr,
    frames: &[Vec<u8>],
    opts: &DeviceOptions,
) -> io::Result<DeviceReport> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.split();
    match opts.chunk_size {
        Some(n) => {
            let all: Vec<u8> = frames.concat();
            for chunk in all.chunks(n.max(1)) {
                wr.write_all(chunk).await?;
                wr.flush().await?;
                if !opts.write_delay.is_zero() {
                    tokio::time::sleep(opts.write_delay).await;
                }
            }
        }
        None => {
            for f in frames {
                wr.write_all(f).await?;
                wr.flush().await?;
                if !opts.write_delay.is_zero() {
                    tokio::time::sleep(opts.write_delay).await;
                }
            }
        }
    }
    let mut report = DeviceReport::default();
    let mut dec = FrameDecoder::new(opts.crc, MAX_DATA_LEN);
    let mut buf = vec![0u8; 4096];
    loop {
        if opts.expected_replies.is_some_and(|n| report.replies.len() >= n) {
            break;
        }
        let n = match tokio::time::timeout(opts.reply_wait, rd.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        for item in dec.decode(buf.get(..n).unwrap_or_default()) {
            match item {
                Ok(f) => report.replies.push(f),
                Err(e) => report.errors.push(e),
            }
        }
    }
    report.errors.extend(dec.finish());
    let _ = wr.shutdown().await;
    Ok(report)
}
