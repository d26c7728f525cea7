//! Flat JSON record for the ingestion pipeline. See the crate README for the
//! documented shape.

use chrono::{NaiveDateTime, Timelike};
use serde_json::{Map, Value, json};

use crate::frame::{Factor, Frame};

/// Render a local (China Standard Time) timestamp as ISO 8601 with `+08:00`;
/// milliseconds are included only when non-zero.
pub fn iso8601_cst(dt: NaiveDateTime) -> String {
    if dt.nanosecond() == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S+08:00").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.3f+08:00").to_string()
    }
}

fn factor_json(f: &Factor) -> Value {
    let mut m = Map::new();
    m.insert("rtd".into(), json!(f.rtd));
    m.insert("min".into(), json!(f.min));
    m.insert("avg".into(), json!(f.avg));
    m.insert("max".into(), json!(f.max));
    m.insert("cou".into(), json!(f.cou));
    m.insert("flag".into(), json!(f.flag.as_ref().map(|x| x.as_str())));
    if !f.extra.is_empty() {
        m.insert("extra".into(), json!(f.extra));
    }
    Value::Object(m)
}

/// One flat JSON object per frame (or reassembled message):
///
/// ```json
/// {
///   "mn": "33050200000000000000A001", "st": "32", "cn": "2051",
///   "qn": "20250315103000123",            // or null
///   "data_time": "2025-03-15T10:20:00+08:00", // or null
///   "version": "2017",                    // "2005" | "2017" | "2025" | "unknown-<n>"
///   "flag": 5,                             // raw Flag or null
///   "pnum": null,                          // PNUM of a reassembled message
///   "crc_ok": true,
///   "factors": { "w01018": { "rtd": null, "min": 18.2, "avg": 21.5,
///                "max": 24.9, "cou": null, "flag": "N" } },
///   "other": { },                          // other CP keys, verbatim strings
///   "header_extra": { }                    // unknown header keys
/// }
/// ```
///
/// A factor object also has `"extra"` (suffix → raw string, e.g. `ZsRtd`)
/// when the factor carried anything beyond the six typed slots. The password
/// (PW) is never included.
pub fn frame_to_json(f: &Frame) -> Value {
    let factors: Map<String, Value> = f.cp.factors.iter().map(|x| (x.code.clone(), factor_json(x))).collect();
    json!({
        "mn": f.mn,
        "st": f.st,
        "cn": f.cn,
        "qn": f.qn,
        "data_time": f.cp.data_time.map(iso8601_cst),
        "version": f.version.label(),
        "flag": f.flag.map(|x| x.raw),
        "pnum": f.pnum,
        "crc_ok": f.crc_ok,
        "factors": factors,
        "other": f.cp.other,
        "header_extra": f.header_extra,
    })
}
