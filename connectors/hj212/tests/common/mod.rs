#![allow(dead_code)]
//! Shared fixtures: the example frames and CRC vectors of domain.md §1.6 and
//! §1.12, copied from the reference document (not produced by this crate).

pub const REAL_AIR: &str = "##0313QN=20241115190408000;ST=27;CN=2011;PW=123456;MN=AQI2411132600332;Flag=5;CP=&&DataTime=20241115190408;a21026-Rtd=117;a21004-Rtd=16;o31104-Rtd=29;a21005-Rtd=0.14;a34004-Rtd=6;a34002-Rtd=6;a34001-Rtd=6;a01001-Rtd=28.1;a01002-Rtd=68;LA-Rtd=49;a01006-Rtd=1002;a06001-Rtd=0.0;a04003-Rtd=0;a01007-Rtd=0.0;a01008-Rtd=70&&9901\r\n";
pub const MINUTE_WATER: &str = "##0265QN=20250315103000123;ST=32;CN=2051;PW=123456;MN=33050200000000000000A001;Flag=5;CP=&&DataTime=20250315102000;w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=24.9,w01018-Flag=N;w21003-Min=0.41,w21003-Avg=0.52,w21003-Max=0.66,w21003-Flag=N;w00000-Cou=12.60,w00000-Flag=N&&3600\r\n";
pub const SURFACE_WATER: &str = "##0260QN=20250315103000789;ST=21;CN=2011;PW=123456;MN=33052300000000000000W001;Flag=4;CP=&&DataTime=20250315103000;w01001-Rtd=7.42,w01001-Flag=N;w01009-Rtd=6.81,w01009-Flag=N;w01019-Rtd=3.2,w01019-Flag=N;w21003-Rtd=0.38,w21003-Flag=N;w21011-Rtd=0.112,w21011-Flag=N&&BB01\r\n";
pub const DATA_ACK: &str =
    "##0087QN=20250315103000123;ST=91;CN=9014;PW=123456;MN=33050200000000000000A001;Flag=4;CP=&&&&8701\r\n";

pub const EXAMPLES: [&str; 4] = [REAL_AIR, MINUTE_WATER, SURFACE_WATER, DATA_ACK];

/// HJ/T 212-2005 style payload (no QN, no Flag, 2005 factor codes).
pub const SEG_2005: &str = "ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;B01-Rtd=36.91;011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&";
/// Flag=9: 2025 with reply.
pub const SEG_2025: &str = "QN=20240601085857223;ST=32;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&&&";

/// (data segment, standard CRC, Modbus CRC) from domain.md §1.6.
pub fn crc_vectors() -> Vec<(String, u16, u16)> {
    let seg = |wire: &str| wire[6..wire.len() - 6].to_string();
    vec![
        (SEG_2005.to_string(), 0x4980, 0x264D),
        (SEG_2025.to_string(), 0x2200, 0xCCF4),
        (seg(REAL_AIR), 0x9901, 0xD5EF),
        (seg(MINUTE_WATER), 0x3600, 0x3347),
        (seg(SURFACE_WATER), 0xBB01, 0x25C9),
        (seg(DATA_ACK), 0x8701, 0xAC00),
    ]
}

/// Assemble a wire frame by hand (independent of the crate's encoder).
pub fn wire(seg: &str, crc: u16) -> Vec<u8> {
    format!("##{:04}{}{:04X}\r\n", seg.len(), seg, crc).into_bytes()
}
