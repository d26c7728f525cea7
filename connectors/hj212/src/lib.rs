//! HJ 212 (HJ/T 212-2005, HJ 212-2017, HJ 212-2025) for Lianqin: frame
//! codec, stream decoder, PNUM/PNO reassembly, reply builders, a tokio TCP
//! server and a JSON projection for the ingestion pipeline.
//!
//! ```
//! use lianqin_hj212::{CrcVariant, parse_frame};
//! let wire = b"##0087QN=20250315103000123;ST=91;CN=9014;PW=123456;MN=33050200000000000000A001;Flag=4;CP=&&&&8701\r\n";
//! let f = parse_frame(wire, CrcVariant::Hj212).unwrap();
//! assert!(f.crc_ok);
//! assert_eq!(f.cn, "9014");
//! ```
//!
//! No function in this crate panics on any input; the decoder and parser
//! are fuzzed (see the README).

pub mod client;
pub mod crc;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod json;
pub mod reassembly;
pub mod reply;
pub mod server;

pub use client::{DeviceOptions, DeviceReport, simulate_device, simulate_device_with};
pub use crc::{CrcVariant, crc16_hj212, crc16_modbus};
pub use decoder::FrameDecoder;
pub use error::Hj212Error;
pub use frame::{
    Cp, DataFlag, Factor, Flag, Frame, MAX_DATA_LEN, ProtocolVersion, encode_frame, parse_frame, parse_frame_strict,
};
pub use json::frame_to_json;
pub use reassembly::{Evicted, Reassembled, Reassembler};
pub use reply::{ExeRtn, QnRtn, build_data_ack, build_exe_rtn, build_notify_ack, build_qn_rtn, needs_data_ack};
pub use server::{DurableAck, Hj212Message, Hj212Server, Hj212ServerConfig, Hj212Stats, Hj212StatsSnapshot};

/// Command (CN) codes used by this crate and common in the field.
pub mod cn {
    /// Upload real-time data.
    pub const REALTIME_DATA: &str = "2011";
    /// Stop real-time data.
    pub const STOP_REALTIME: &str = "2012";
    /// Upload daily data.
    pub const DAILY_DATA: &str = "2031";
    /// Upload daily runtime.
    pub const DAILY_RUNTIME: &str = "2041";
    /// Upload minute data.
    pub const MINUTE_DATA: &str = "2051";
    /// Upload hourly data.
    pub const HOURLY_DATA: &str = "2061";
    /// Logger power-on time.
    pub const POWER_ON_TIME: &str = "2081";
    /// Request reply (`QnRtn`).
    pub const REQUEST_REPLY: &str = "9011";
    /// Execution result (`ExeRtn`).
    pub const EXECUTION_RESULT: &str = "9012";
    /// Notification reply.
    pub const NOTIFY_REPLY: &str = "9013";
    /// Data reply.
    pub const DATA_REPLY: &str = "9014";
}

/// Human name of a factor (pollutant) code, for logs and UIs. Covers the
/// common water and gas codes (2017 form and their HJ/T 212-2005 forms).
/// Codes are never rejected for being unknown: this returns `None`.
///
/// Known typos in HJ 212-2017 are tolerated: `e701xx` is both 污水提升泵 and
/// 加药量 in the standard (parsers use `e711xx` for the latter), and `g119xx`
/// is both 入口 SO₂ and 脱硫率 (parsers use `g200xx` for the latter). Both the
/// misprinted and the conventional prefixes are accepted and named.
pub fn factor_name(code: &str) -> Option<&'static str> {
    let name = match code {
        "w00000" | "B01" => "wastewater flow",
        "w01001" | "001" => "pH",
        "w01009" => "dissolved oxygen",
        "w01010" => "water temperature",
        "w01014" => "conductivity",
        "w01018" | "011" => "COD",
        "w01019" => "permanganate index",
        "w01012" | "003" => "suspended solids",
        "w21003" | "060" => "ammonia nitrogen",
        "w21001" | "065" => "total nitrogen",
        "w21011" | "101" => "total phosphorus",
        "w20111" => "total mercury",
        "w20115" => "cadmium",
        "w20117" => "hexavalent chromium",
        "w20119" => "arsenic",
        "w20120" => "lead",
        "w22001" => "petroleum",
        "w23002" => "volatile phenol",
        "a00000" | "B02" => "flue-gas flow",
        "a19001" => "oxygen",
        "a21026" | "02" => "SO2",
        "a21002" | "03" => "NOx",
        "a21005" => "CO",
        "a21028" => "H2S",
        "a24088" => "NMHC",
        "a25002" => "benzene",
        "a34001" => "TSP",
        "a34002" => "PM10",
        "a34004" => "PM2.5",
        "a34013" | "01" => "smoke dust",
        "a01001" => "air temperature",
        "a01002" => "humidity",
        "a01006" => "air pressure",
        "a01007" => "wind speed",
        "a01008" => "wind direction",
        _ => {
            return match code.get(..4) {
                Some("e701") if code.len() == 6 => Some("sewage lift pump (or dosing, 2017 typo)"),
                Some("e711") if code.len() == 6 => Some("dosing amount"),
                Some("g119") if code.len() == 6 => Some("inlet SO2 (or desulfurisation rate, 2017 typo)"),
                Some("g200") if code.len() == 6 => Some("desulfurisation rate"),
                _ => None,
            };
        }
    };
    Some(name)
}
