//! Error type: every variant names what went wrong and where.
//!
//! Byte offsets are counted from the first `#` of the frame (so the data
//! segment starts at offset 6).

use crate::crc::CrcVariant;

/// Everything that can go wrong decoding, encoding or reassembling HJ 212.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hj212Error {
    /// The frame does not start with `##`.
    #[error("bad header at byte {offset}: expected `##`, found {found:?}")]
    BadHeader { offset: usize, found: String },

    /// The 4-character length field is not 4 decimal digits.
    #[error("bad length field at byte {offset}: {found:?} is not 4 decimal digits")]
    BadLengthField { offset: usize, found: String },

    /// The declared data-segment length does not match the bytes present
    /// (the CRLF terminator was found elsewhere, or bytes are missing).
    #[error("length mismatch: declared data-segment length {declared}, actual {actual}")]
    BadLength { declared: usize, actual: usize },

    /// The declared length exceeds the configured maximum (at most 9999).
    #[error("frame too large: declared data-segment length {declared} exceeds the limit {max}")]
    TooLarge { declared: usize, max: usize },

    /// Input ended before the frame did.
    #[error("truncated frame: {needed} bytes needed, {have} present")]
    Truncated { needed: usize, have: usize },

    /// The frame is not terminated by CRLF where the length says it ends.
    #[error("bad terminator at byte {offset}: expected CRLF, found {found:?}")]
    BadTerminator { offset: usize, found: String },

    /// Bytes follow the CRLF in a single-frame parse.
    #[error("{count} trailing bytes after the frame at byte {offset}")]
    TrailingBytes { offset: usize, count: usize },

    /// The 4-character CRC field is not 4 hex digits.
    #[error("bad CRC field at byte {offset}: {found:?} is not 4 hex digits")]
    BadCrcField { offset: usize, found: String },

    /// CRC mismatch. `expected` is what we computed over the data segment,
    /// `got` what the frame carries.
    #[error("CRC mismatch ({variant:?}): computed {expected:04X}, frame carries {got:04X}")]
    BadCrc { expected: u16, got: u16, variant: CrcVariant },

    /// A data-segment field is missing or malformed.
    #[error("bad field {field} at byte {offset}: {reason}")]
    BadField { field: String, offset: usize, reason: String },

    /// The stream decoder skipped bytes that were not part of any frame.
    #[error("skipped {bytes} bytes of garbage while resynchronising on `##`")]
    Garbage { bytes: usize },

    /// A PNUM/PNO packet could not be placed in a multi-packet message.
    #[error("reassembly of MN={mn} QN={qn}: {reason}")]
    Reassembly { mn: String, qn: String, reason: String },

    /// An encode request that cannot be represented on the wire.
    #[error("cannot encode: {reason}")]
    Encode { reason: String },
}

impl Hj212Error {
    pub(crate) fn field(field: &str, offset: usize, reason: impl Into<String>) -> Self {
        Hj212Error::BadField { field: field.to_string(), offset, reason: reason.into() }
    }

    /// Short, stable name of the variant (for metrics and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Hj212Error::BadHeader { .. } => "bad_header",
            Hj212Error::BadLengthField { .. } => "bad_length_field",
            Hj212Error::BadLength { .. } => "bad_length",
            Hj212Error::TooLarge { .. } => "too_large",
            Hj212Error::Truncated { .. } => "truncated",
            Hj212Error::BadTerminator { .. } => "bad_terminator",
            Hj212Error::TrailingBytes { .. } => "trailing_bytes",
            Hj212Error::BadCrcField { .. } => "bad_crc_field",
            Hj212Error::BadCrc { .. } => "bad_crc",
            Hj212Error::BadField { .. } => "bad_field",
            Hj212Error::Garbage { .. } => "garbage",
            Hj212Error::Reassembly { .. } => "reassembly",
            Hj212Error::Encode { .. } => "encode",
        }
    }
}

/// Show at most 16 bytes of input in an error message.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let end = bytes.len().min(16);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}
