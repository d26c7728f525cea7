//! The two CRC-16 variants seen on HJ 212 links.
//!
//! Both use the reflected polynomial `0xA001` and the initial value `0xFFFF`;
//! they differ only in how each input byte enters the register:
//!
//! * [`CrcVariant::Hj212`] — the standard's "ANSI CRC16":
//!   `crc = (crc >> 8) ^ byte`, then 8 shift/XOR rounds. It is *not*
//!   CRC-16/MODBUS and takes only 256 distinct values (its low byte is always
//!   one of `00 01 40 41 80 81 C0 C1`).
//! * [`CrcVariant::Modbus`] — CRC-16/MODBUS: `crc ^= byte`, then 8 rounds.
//!   Some senders use it, so the variant is configurable per source.
//!
//! The CRC covers the data segment only (not `##`, the length or the CRLF).

use serde::{Deserialize, Serialize};

/// Which CRC-16 variant a source uses. The default is the standard's
/// variant, [`CrcVariant::Hj212`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrcVariant {
    /// The HJ 212 standard's CRC (`crc = (crc >> 8) ^ b`).
    #[default]
    Hj212,
    /// CRC-16/MODBUS (`crc ^= b`).
    Modbus,
}

impl CrcVariant {
    /// CRC of `data` under this variant.
    pub fn compute(self, data: &[u8]) -> u16 {
        match self {
            CrcVariant::Hj212 => crc16_hj212(data),
            CrcVariant::Modbus => crc16_modbus(data),
        }
    }

    /// The other variant (used for diagnostics: "this frame would verify
    /// under Modbus").
    pub fn other(self) -> CrcVariant {
        match self {
            CrcVariant::Hj212 => CrcVariant::Modbus,
            CrcVariant::Modbus => CrcVariant::Hj212,
        }
    }
}

fn shift8(mut crc: u16) -> u16 {
    for _ in 0..8 {
        let lsb = crc & 1;
        crc >>= 1;
        if lsb != 0 {
            crc ^= 0xA001;
        }
    }
    crc
}

/// The HJ 212 standard CRC ("ANSI CRC16" in the standard's wording).
pub fn crc16_hj212(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFFu16, |crc, &b| shift8((crc >> 8) ^ u16::from(b)))
}

/// CRC-16/MODBUS.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFFu16, |crc, &b| shift8(crc ^ u16::from(b)))
}

/// Format a CRC the way standard builders do: 4 uppercase hex digits.
pub fn crc_hex(crc: u16) -> String {
    format!("{crc:04X}")
}
