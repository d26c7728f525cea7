//! Stream decoder for TCP byte streams: sticky packets (several frames in
//! one read), split packets (one frame across reads) and garbage between
//! frames.
//!
//! The decoder looks for `##`, checks the 4-digit length, and waits until
//! the whole frame (`##LLLL` + segment + CRC + CRLF) is buffered. Every
//! decision depends only on bytes already received, so feeding a stream one
//! byte at a time or all at once yields exactly the same sequence of items.
//!
//! Resynchronisation: bytes before a `##` are discarded and reported once as
//! [`Hj212Error::Garbage`] (when the next `##` is found, or by
//! [`FrameDecoder::finish`]). A frame whose envelope is wrong (non-digit
//! length, declared length over the limit, CRLF earlier or later than the
//! length says) is reported, one byte is dropped and scanning resumes, so a
//! good frame right after a broken one is still found.
//!
//! Memory: garbage is discarded as soon as it is seen, and a frame can be at
//! most `max_data + 12` bytes, so the buffer never holds more than that plus
//! the bytes of the last [`FrameDecoder::push`].

use crate::crc::CrcVariant;
use crate::error::Hj212Error;
use crate::frame::{Envelope, Frame, MAX_DATA_LEN, decode_body, scan_envelope};

/// Incremental HJ 212 frame decoder.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    crc: CrcVariant,
    max_data: usize,
    pending_garbage: usize,
}

impl FrameDecoder {
    /// `max_data` is the largest accepted data-segment length; it is capped
    /// at 9999 (the most the length field can say).
    pub fn new(crc: CrcVariant, max_data: usize) -> Self {
        FrameDecoder { buf: Vec::new(), crc, max_data: max_data.min(MAX_DATA_LEN), pending_garbage: 0 }
    }

    /// Append received bytes. Call [`FrameDecoder::next_frame`] until it
    /// returns `None` after each push.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes currently buffered (an incomplete frame, or a lone `#`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next decoded item, or `None` if more input is needed.
    ///
    /// `Ok(frame)` is a frame with a valid envelope; check
    /// [`Frame::crc_ok`] before trusting it. `Err` reports garbage or a
    /// broken frame; decoding continues after it.
    pub fn next_frame(&mut self) -> Option<Result<Frame, Hj212Error>> {
        match self.buf.windows(2).position(|w| w == b"##") {
            None => {
                let keep = usize::from(self.buf.last() == Some(&b'#'));
                let drop = self.buf.len() - keep;
                if drop > 0 {
                    self.buf.drain(..drop);
                    self.pending_garbage += drop;
                }
                return None;
            }
            Some(pos) if pos > 0 => {
                self.buf.drain(..pos);
                self.pending_garbage += pos;
            }
            Some(_) => {}
        }
        if self.pending_garbage > 0 {
            let bytes = std::mem::take(&mut self.pending_garbage);
            return Some(Err(Hj212Error::Garbage { bytes }));
        }
        match scan_envelope(&self.buf, self.max_data) {
            Ok(Envelope::Incomplete { .. }) => None,
            Ok(Envelope::Complete { declared, total }) => {
                let frame: Vec<u8> = self.buf.drain(..total).collect();
                Some(decode_body(&frame, declared, self.crc))
            }
            Err(e) => {
                // Drop the first `#` and rescan from the next byte.
                self.buf.drain(..1);
                Some(Err(e))
            }
        }
    }

    /// Push `data` and collect every item it completes.
    pub fn decode(&mut self, data: &[u8]) -> Vec<Result<Frame, Hj212Error>> {
        self.push(data);
        let mut out = Vec::new();
        while let Some(item) = self.next_frame() {
            out.push(item);
        }
        out
    }

    /// End of stream: report what is left (pending garbage, then an
    /// incomplete frame as [`Hj212Error::Truncated`]) and reset.
    pub fn finish(&mut self) -> Vec<Hj212Error> {
        let mut out = Vec::new();
        if self.buf.len() == 1 {
            // A lone trailing `#` is garbage, not a frame.
            self.pending_garbage += 1;
            self.buf.clear();
        }
        if self.pending_garbage > 0 {
            out.push(Hj212Error::Garbage { bytes: std::mem::take(&mut self.pending_garbage) });
        }
        if !self.buf.is_empty() {
            let needed = match scan_envelope(&self.buf, self.max_data) {
                Ok(Envelope::Incomplete { needed }) => needed,
                _ => self.buf.len(),
            };
            out.push(Hj212Error::Truncated { needed, have: self.buf.len() });
            self.buf.clear();
        }
        out
    }
}
