//! Coordinate reference systems used by Chinese map providers and their
//! conversion to WGS-84 (domain.md §4).
//!
//! * **WGS-84** (EPSG:4326): GPS.
//! * **CGCS2000** (EPSG:4490): 天地图, national surveying. Treated as equal
//!   to WGS-84 — the two frames differ by centimetres, far below the
//!   accuracy of any source here (domain.md §4 \[S\]).
//! * **GCJ-02**: the mandated obfuscation used by 高德 / 腾讯. The forward
//!   transform is the published algorithm (Krasovsky a = 6378245,
//!   ee = 0.00669342162296594323, domain.md §4.1); there is no closed-form
//!   inverse, so [`gcj02_to_wgs84`] iterates the forward transform to a
//!   fixed point (error far below 0.5 m; in practice < 1e-9°).
//! * **BD-09**: 百度, GCJ-02 with a further rotation/offset (§4.2).
//!
//! Points outside the GCJ-02 box (lng 72.004–137.8347, lat 0.8293–55.8271)
//! are not obfuscated and pass through unchanged. All functions take and
//! return `(lon, lat)` in degrees (longitude first, like `coordtransform`).
//! Non-finite input is returned unchanged; nothing panics.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::IdError;

/// Krasovsky 1940 semi-major axis used by GCJ-02 (domain.md §4.1).
pub const GCJ_A: f64 = 6_378_245.0;
/// Krasovsky 1940 first eccentricity squared.
/// (Published as 0.00669342162296594323; f64 keeps 17 significant digits.)
pub const GCJ_EE: f64 = 0.006_693_421_622_965_943;
/// BD-09 rotation constant `π·3000/180`.
const X_PI: f64 = PI * 3000.0 / 180.0;

/// `true` if the point lies outside the GCJ-02 obfuscation box
/// (lng 72.004–137.8347, lat 0.8293–55.8271), or is not finite.
pub fn out_of_china(lon: f64, lat: f64) -> bool {
    // NaN fails both range tests, so non-finite input counts as outside.
    !((72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat))
}

fn transform_lat(x: f64, y: f64) -> f64 {
    let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    r
}

fn transform_lon(x: f64, y: f64) -> f64 {
    let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    r
}

/// GCJ-02 offset (Δlon, Δlat) in degrees at a WGS-84 point, without the box test.
fn gcj_delta(lon: f64, lat: f64) -> (f64, f64) {
    let dlat = transform_lat(lon - 105.0, lat - 35.0);
    let dlon = transform_lon(lon - 105.0, lat - 35.0);
    let rad = lat / 180.0 * PI;
    let m = 1.0 - GCJ_EE * rad.sin() * rad.sin();
    let sm = m.sqrt();
    let dlat = dlat * 180.0 / ((GCJ_A * (1.0 - GCJ_EE)) / (m * sm) * PI);
    let dlon = dlon * 180.0 / (GCJ_A / sm * rad.cos() * PI);
    (dlon, dlat)
}

/// WGS-84 → GCJ-02 (domain.md §4.1). Outside China: unchanged.
pub fn wgs84_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    if out_of_china(lon, lat) {
        return (lon, lat);
    }
    let (dlon, dlat) = gcj_delta(lon, lat);
    (lon + dlon, lat + dlat)
}

/// GCJ-02 → WGS-84, one-step approximation (subtract the forward offset at
/// the GCJ point). Accurate to about 1–2 m (domain.md §4.1); prefer
/// [`gcj02_to_wgs84`].
pub fn gcj02_to_wgs84_approx(lon: f64, lat: f64) -> (f64, f64) {
    if out_of_china(lon, lat) {
        return (lon, lat);
    }
    let (dlon, dlat) = gcj_delta(lon, lat);
    (lon - dlon, lat - dlat)
}

/// GCJ-02 → WGS-84, exact to numerical precision: fixed-point iteration
/// `w ← w − (F(w) − g)` where `F` is [`wgs84_to_gcj02`], starting from the
/// one-step approximation. Converges in 3–5 steps (the offset's gradient is
/// ~1e-5), stopping at 1e-12° or 30 steps. Outside China: unchanged.
pub fn gcj02_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    if out_of_china(lon, lat) {
        return (lon, lat);
    }
    let (mut wl, mut wb) = gcj02_to_wgs84_approx(lon, lat);
    for _ in 0..30 {
        let (dl, db) = gcj_delta(wl, wb);
        let (el, eb) = (wl + dl - lon, wb + db - lat);
        wl -= el;
        wb -= eb;
        if el.abs() < 1e-12 && eb.abs() < 1e-12 {
            break;
        }
    }
    (wl, wb)
}

/// GCJ-02 → BD-09 (domain.md §4.2). Applied everywhere (Baidu does not
/// exempt points outside China).
pub fn gcj02_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    if !(lon.is_finite() && lat.is_finite()) {
        return (lon, lat);
    }
    let z = (lon * lon + lat * lat).sqrt() + 0.00002 * (lat * X_PI).sin();
    let theta = lat.atan2(lon) + 0.000003 * (lon * X_PI).cos();
    (z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// BD-09 → GCJ-02: the usual closed-form inverse, refined by fixed-point
/// iteration against [`gcj02_to_bd09`] (the closed form alone is off by
/// up to ~1e-6°).
pub fn bd09_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    if !(lon.is_finite() && lat.is_finite()) {
        return (lon, lat);
    }
    let x = lon - 0.0065;
    let y = lat - 0.006;
    let z = (x * x + y * y).sqrt() - 0.00002 * (y * X_PI).sin();
    let theta = y.atan2(x) - 0.000003 * (x * X_PI).cos();
    let (mut gl, mut gb) = (z * theta.cos(), z * theta.sin());
    for _ in 0..30 {
        let (bl, bb) = gcj02_to_bd09(gl, gb);
        let (el, eb) = (bl - lon, bb - lat);
        gl -= el;
        gb -= eb;
        if el.abs() < 1e-12 && eb.abs() < 1e-12 {
            break;
        }
    }
    (gl, gb)
}

/// BD-09 → WGS-84 (via GCJ-02, both steps exact-iterative).
pub fn bd09_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    let (gl, gb) = bd09_to_gcj02(lon, lat);
    gcj02_to_wgs84(gl, gb)
}

/// WGS-84 → BD-09 (via GCJ-02).
pub fn wgs84_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    let (gl, gb) = wgs84_to_gcj02(lon, lat);
    gcj02_to_bd09(gl, gb)
}

/// Great-circle distance in metres between two WGS-84 points (haversine on a
/// 6 371 008.8 m sphere; good to ~0.5 % — for tolerances, not surveying).
pub fn distance_m(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let r = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * r * h.sqrt().min(1.0).asin()
}

/// Repairs swapped coordinates (domain.md §9.3): if `(lon, lat)` is outside
/// China but `(lat, lon)` is inside, returns the swapped pair and `true`.
pub fn unswap_lon_lat(lon: f64, lat: f64) -> (f64, f64, bool) {
    if out_of_china(lon, lat) && !out_of_china(lat, lon) { (lat, lon, true) } else { (lon, lat, false) }
}

/// A coordinate reference system tag (domain.md §4, §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Crs {
    /// WGS-84, EPSG:4326.
    Wgs84,
    /// GCJ-02 (高德, 腾讯).
    Gcj02,
    /// BD-09 longitude/latitude (百度 `bd09ll`).
    Bd09,
    /// CGCS2000, EPSG:4490 (天地图); treated as WGS-84.
    Cgcs2000,
}

impl Crs {
    /// Canonical name: `WGS84`, `GCJ02`, `BD09`, `CGCS2000`.
    pub fn as_str(self) -> &'static str {
        match self {
            Crs::Wgs84 => "WGS84",
            Crs::Gcj02 => "GCJ02",
            Crs::Bd09 => "BD09",
            Crs::Cgcs2000 => "CGCS2000",
        }
    }
    /// EPSG code, for the two systems that have one.
    pub fn epsg(self) -> Option<u32> {
        match self {
            Crs::Wgs84 => Some(4326),
            Crs::Cgcs2000 => Some(4490),
            _ => None,
        }
    }
}

impl fmt::Display for Crs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Crs {
    type Err = IdError;

    /// Parses CRS tags as departments write them, case- and
    /// punctuation-insensitive: `WGS84`, `WGS-84`, `EPSG:4326`, `4326`,
    /// `GPS`; `GCJ02`, `GCJ-02`, `火星`, `amap`, `高德`, `腾讯`, `tencent`;
    /// `BD09`, `BD-09`, `bd09ll`, `baidu`, `百度`; `CGCS2000`, `EPSG:4490`,
    /// `4490`, `天地图`, `tianditu`, `国家2000`. Rule `crs.unknown` otherwise
    /// (including `bd09mc`, which is projected metres, not degrees).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = crate::text::normalize_text(s)
            .to_lowercase()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' ' | ':' | '.' | '/'))
            .collect();
        let key = key.strip_suffix("坐标系").or_else(|| key.strip_suffix("坐标")).unwrap_or(&key);
        Ok(match key {
            "wgs84" | "wgs1984" | "epsg4326" | "4326" | "gps" | "wgs" => Crs::Wgs84,
            "gcj02" | "gcj" | "gcj2" | "mars" | "火星" | "amap" | "gaode" | "autonavi" | "高德" | "tencent" | "qq"
            | "腾讯" | "国测局" => Crs::Gcj02,
            "bd09" | "bd09ll" | "bd" | "baidu" | "百度" => Crs::Bd09,
            "cgcs2000" | "cgcs" | "epsg4490" | "4490" | "tianditu" | "天地图" | "国家2000" | "2000" => {
                Crs::Cgcs2000
            }
            _ => {
                return Err(IdError::new("crs.unknown", format!("{s:?} is not a known coordinate reference system")));
            }
        })
    }
}

/// Converts a point in `crs` to WGS-84 (CGCS2000 and WGS-84 pass through).
pub fn to_wgs84(lon: f64, lat: f64, crs: Crs) -> (f64, f64) {
    match crs {
        Crs::Wgs84 | Crs::Cgcs2000 => (lon, lat),
        Crs::Gcj02 => gcj02_to_wgs84(lon, lat),
        Crs::Bd09 => bd09_to_wgs84(lon, lat),
    }
}

/// Converts a WGS-84 point to `crs` (the inverse of [`to_wgs84`]).
pub fn from_wgs84(lon: f64, lat: f64, crs: Crs) -> (f64, f64) {
    match crs {
        Crs::Wgs84 | Crs::Cgcs2000 => (lon, lat),
        Crs::Gcj02 => wgs84_to_gcj02(lon, lat),
        Crs::Bd09 => wgs84_to_bd09(lon, lat),
    }
}

/// Rough WGS-84 bounding boxes of Huzhou's districts and counties, checked
/// in order (first match wins). **Approximate**: they were drawn around the
/// seats and main towns of each division and are good for routing a record
/// to the right district most of the time, not for boundary decisions.
/// Near a boundary (a few km) the answer may be the neighbour.
///
/// Seats used as anchors: 吴兴 爱山街道 ≈ (120.09, 30.87); 南浔镇 ≈ (120.42,
/// 30.87); 德清 武康 ≈ (119.97, 30.54); 长兴 雉城 ≈ (119.91, 31.03); 安吉 递铺 ≈
/// (119.68, 30.64).
pub const HUZHOU_BOXES: &[(&str, [f64; 4])] = &[
    // (code, [min_lon, min_lat, max_lon, max_lat])
    ("330522", [119.55, 30.90, 120.05, 31.20]), // 长兴县 (north-west, on Taihu)
    ("330523", [119.20, 30.35, 119.85, 30.90]), // 安吉县 (south-west)
    ("330521", [119.85, 30.40, 120.32, 30.66]), // 德清县 (south)
    ("330503", [120.28, 30.60, 120.50, 31.00]), // 南浔区 (east)
    ("330503", [120.12, 30.66, 120.28, 30.78]), // 南浔区 菱湖/和孚 area
    ("330502", [119.85, 30.66, 120.28, 31.05]), // 吴兴区 (centre)
];

/// Huzhou district/county code for a WGS-84 / CGCS2000 point, from the
/// rough boxes in [`HUZHOU_BOXES`]; `None` outside Huzhou or for non-finite
/// input. Convert GCJ-02/BD-09 input with [`to_wgs84`] first (the ~500 m
/// offset matters near boundaries).
pub fn division_from_point(lon: f64, lat: f64) -> Option<&'static str> {
    if !(lon.is_finite() && lat.is_finite()) {
        return None;
    }
    HUZHOU_BOXES
        .iter()
        .find(|(_, [x0, y0, x1, y1])| (*x0..=*x1).contains(&lon) && (*y0..=*y1).contains(&lat))
        .map(|(code, _)| *code)
}

/// District/county names and well-known towns (镇/街道) used by
/// [`division_from_address`]. Town lists are the main towns of each division.
const ADDRESS_NAMES: &[(&str, &[&str])] = &[
    ("330502", &["吴兴", "织里", "八里店", "妙西", "埭溪", "东林", "道场"]),
    ("330503", &["南浔", "练市", "双林", "菱湖", "善琏", "和孚", "千金", "石淙", "旧馆"]),
    ("330521", &["德清", "武康", "新市", "乾元", "洛舍", "钟管", "禹越", "雷甸", "莫干山"]),
    ("330522", &["长兴", "雉城", "泗安", "煤山", "李家巷", "洪桥", "林城", "虹星桥", "夹浦", "吕山"]),
    ("330523", &["安吉", "递铺", "孝丰", "天荒坪", "梅溪", "鄣吴", "杭垓", "报福", "天子湖", "溪龙"]),
];

/// Huzhou division code from a free-text address.
///
/// Matching, on NFKC-normalised text:
/// 1. the full names `吴兴区`, `南浔区`, `德清县`, `长兴县`, `安吉县` — earliest
///    occurrence wins;
/// 2. otherwise the bare district/county names and main town names, skipping
///    occurrences that are part of a street or building name (followed by
///    `路 街 大道 道 巷 弄 桥 大厦 广场 小区 花园`, e.g. `安吉路` in 吴兴区) —
///    earliest occurrence wins;
/// 3. otherwise `湖州` → `330500` (city only);
/// 4. otherwise `None`.
pub fn division_from_address(address: &str) -> Option<&'static str> {
    let text = crate::text::normalize_text(address);
    let full =
        [("330502", "吴兴区"), ("330503", "南浔区"), ("330521", "德清县"), ("330522", "长兴县"), ("330523", "安吉县")];
    let earliest_full = full.iter().filter_map(|(code, name)| text.find(name).map(|pos| (pos, *code))).min();
    if let Some((_, code)) = earliest_full {
        return Some(code);
    }
    const STREET_SUFFIXES: &[&str] = &["路", "街", "大道", "道", "巷", "弄", "桥", "大厦", "广场", "小区", "花园"];
    let mut best: Option<(usize, &'static str)> = None;
    for (code, names) in ADDRESS_NAMES {
        for name in *names {
            for (pos, _) in text.match_indices(name) {
                let after = &text[pos + name.len()..];
                if STREET_SUFFIXES.iter().any(|s| after.starts_with(s)) {
                    continue;
                }
                if best.is_none_or(|(p, _)| pos < p) {
                    best = Some((pos, code));
                }
                break;
            }
        }
    }
    if let Some((_, code)) = best {
        return Some(code);
    }
    text.contains("湖州").then_some(crate::codes::HUZHOU_CITY)
}

/// Reads a longitude or latitude written as text, as departments type them
/// into coordinate fields: `120.1`, `东经120.1度`, `北纬30.5度`, `120.1°E`,
/// `E120.1`, `西经75.5度` (negative), `南纬33.9°` (negative), and
/// degree–minute–second forms `东经120度5分30秒` / `120°5′30″E` /
/// `120°5'30"`. Input is NFKC-normalised first (full-width digits work) and
/// whitespace is ignored.
///
/// Rules:
/// * `degrees.format` — not one of those forms;
/// * `degrees.precision` — a written-out whole number of degrees with no
///   minutes (`东经120度`): 1° is about 100 km, not a position, so it is
///   not read as one (a bare number `120` is just a number and is read);
/// * `degrees.range` — beyond ±180° (or minutes/seconds ≥ 60).
pub fn parse_degrees(s: &str) -> Result<f64, IdError> {
    let bad = |rule: &'static str, why: &str| IdError::new(rule, format!("{s:?}: {why}"));
    // NFKC spells ″ as two primes; put it back.
    let t: String = crate::text::normalize_text(s).replace("′′", "″").chars().filter(|c| !c.is_whitespace()).collect();
    if let Ok(v) = t.parse::<f64>() {
        return if !v.is_finite() {
            Err(bad("degrees.format", "not a finite number"))
        } else if v.abs() > 180.0 {
            Err(bad("degrees.range", "beyond ±180°"))
        } else {
            Ok(v)
        };
    }
    let mut rest: &str = &t;
    let mut sign = 0.0f64;
    for (p, sg) in
        [("东经", 1.0), ("北纬", 1.0), ("西经", -1.0), ("南纬", -1.0), ("E", 1.0), ("N", 1.0), ("W", -1.0), ("S", -1.0)]
    {
        if let Some(r) = rest.strip_prefix(p) {
            rest = r;
            sign = sg;
            break;
        }
    }
    if sign == 0.0 {
        for (p, sg) in [("E", 1.0), ("N", 1.0), ("W", -1.0), ("S", -1.0)] {
            if let Some(r) = rest.strip_suffix(p) {
                rest = r;
                sign = sg;
                break;
            }
        }
    }
    // Split "<deg>度<min>分<sec>秒" into its numbers.
    let mut parts: Vec<(&str, char)> = Vec::new();
    let mut start = 0;
    for (i, c) in rest.char_indices() {
        let unit = match c {
            '度' | '°' => 'd',
            '分' | '′' | '\'' => 'm',
            '秒' | '″' | '"' => 's',
            _ => continue,
        };
        parts.push((&rest[start..i], unit));
        start = i + c.len_utf8();
    }
    if start < rest.len() {
        // Trailing digits without a unit: minutes after degrees, seconds after minutes.
        let unit = match parts.last() {
            None if sign != 0.0 => 'd',
            Some((_, 'd')) => 'm',
            Some((_, 'm')) => 's',
            _ => return Err(bad("degrees.format", "not a number of degrees")),
        };
        parts.push((&rest[start..], unit));
    }
    let units: String = parts.iter().map(|(_, u)| *u).collect();
    if !matches!(units.as_str(), "d" | "dm" | "dms") {
        return Err(bad("degrees.format", "expected degrees, then optionally minutes and seconds"));
    }
    let number = |p: &str| -> Result<f64, IdError> {
        let ok = !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && p.bytes().filter(|b| *b == b'.').count() <= 1
            && p.bytes().any(|b| b.is_ascii_digit());
        if !ok {
            return Err(bad("degrees.format", "not a number of degrees"));
        }
        p.parse::<f64>().map_err(|_| bad("degrees.format", "not a number of degrees"))
    };
    let deg = number(parts[0].0)?;
    let min = parts.get(1).map(|p| number(p.0)).transpose()?;
    let sec = parts.get(2).map(|p| number(p.0)).transpose()?;
    if min.is_none() && !parts[0].0.contains('.') {
        return Err(bad("degrees.precision", "whole degrees (about 100 km) are not a position"));
    }
    if min.is_some_and(|m| m >= 60.0) || sec.is_some_and(|x| x >= 60.0) {
        return Err(bad("degrees.range", "minutes and seconds are below 60"));
    }
    let v = deg + min.unwrap_or(0.0) / 60.0 + sec.unwrap_or(0.0) / 3600.0;
    if v > 180.0 {
        return Err(bad("degrees.range", "beyond ±180°"));
    }
    Ok(if sign < 0.0 { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrees_as_text() {
        let deg = |s: &str| parse_degrees(s).map_err(|e| e.rule);
        assert_eq!(deg("东经120.1度"), Ok(120.1));
        assert_eq!(deg("北纬30.5度"), Ok(30.5));
        assert_eq!(deg(" 东经 １２０.１ 度 "), Ok(120.1));
        assert_eq!(deg("120.1°E"), Ok(120.1));
        assert_eq!(deg("E120.1"), Ok(120.1));
        assert_eq!(deg("西经75.5度"), Ok(-75.5));
        assert_eq!(deg("南纬33.9°"), Ok(-33.9));
        assert_eq!(deg("120.25"), Ok(120.25));
        assert_eq!(deg("120"), Ok(120.0));
        assert_eq!(deg("东经120度30分"), Ok(120.5));
        assert!((parse_degrees("120°30′36″E").unwrap() - 120.51).abs() < 1e-9);
        assert!((parse_degrees("东经120度30分36秒").unwrap() - 120.51).abs() < 1e-9);
        assert_eq!(deg("北纬30°30'"), Ok(30.5));
        assert_eq!(deg("东经120度"), Err("degrees.precision"));
        assert_eq!(deg("120°"), Err("degrees.precision"));
        assert_eq!(deg("东经一百二十度"), Err("degrees.format"));
        assert_eq!(deg("东经120.1.2度"), Err("degrees.format"));
        assert_eq!(deg(""), Err("degrees.format"));
        assert_eq!(deg("度"), Err("degrees.format"));
        assert_eq!(deg("东经200.5度"), Err("degrees.range"));
        assert_eq!(deg("东经120度75分"), Err("degrees.range"));
        assert_eq!(deg("NaN"), Err("degrees.format"));
        assert_eq!(deg("1e400"), Err("degrees.format"));
    }

    #[test]
    fn domain_vector_wgs_to_gcj() {
        // domain.md §4.3 [V]: WGS (lat 31.1774276, lng 121.5272106) →
        // GCJ (31.17530398364597, 121.531541859215), exact with a = 6378245.
        let (lon, lat) = wgs84_to_gcj02(121.5272106, 31.1774276);
        assert!((lon - 121.531541859215).abs() < 1e-9, "{lon}");
        assert!((lat - 31.17530398364597).abs() < 1e-9, "{lat}");
        // And back, exactly.
        let (wl, wb) = gcj02_to_wgs84(121.531541859215, 31.17530398364597);
        assert!(distance_m(wl, wb, 121.5272106, 31.1774276) < 0.01);
    }

    #[test]
    fn bd09_vector() {
        // Published coordtransform vector: GCJ (116.404, 39.915) →
        // BD (116.41036949371029, 39.92133699351021).
        let (bl, bb) = gcj02_to_bd09(116.404, 39.915);
        assert!((bl - 116.41036949371029).abs() < 1e-12);
        assert!((bb - 39.92133699351021).abs() < 1e-12);
        let (gl, gb) = bd09_to_gcj02(bl, bb);
        assert!((gl - 116.404).abs() < 1e-10 && (gb - 39.915).abs() < 1e-10);
        // The closed form alone gives (116.39762729119315, …) for BD input
        // (116.404, 39.915); the refined value must be within 1e-5° of it.
        let (gl, _) = bd09_to_gcj02(116.404, 39.915);
        assert!((gl - 116.39762729119315).abs() < 1e-5);
    }

    #[test]
    fn huzhou_offset() {
        // domain.md §4.3: WGS → GCJ in Huzhou is roughly 230 m south, 460 m east.
        let (lon, lat) = (120.09, 30.87);
        let (gl, gb) = wgs84_to_gcj02(lon, lat);
        let south = distance_m(lon, lat, lon, gb);
        let east = distance_m(lon, lat, gl, lat);
        assert!(gb < lat && gl > lon);
        assert!((150.0..320.0).contains(&south), "{south}");
        assert!((350.0..560.0).contains(&east), "{east}");
    }

    #[test]
    fn outside_china_passthrough() {
        for (lon, lat) in [(2.35, 48.85), (-74.0, 40.7), (139.69, 35.69), (f64::NAN, 30.0)] {
            let (a, b) = wgs84_to_gcj02(lon, lat);
            assert!(a.to_bits() == lon.to_bits() && b.to_bits() == lat.to_bits());
            let (a, b) = gcj02_to_wgs84(lon, lat);
            assert!(a.to_bits() == lon.to_bits() && b.to_bits() == lat.to_bits());
        }
    }

    #[test]
    fn crs_parse() {
        for (s, c) in [
            ("WGS84", Crs::Wgs84),
            ("wgs-84", Crs::Wgs84),
            ("EPSG:4326", Crs::Wgs84),
            ("GCJ-02", Crs::Gcj02),
            ("高德", Crs::Gcj02),
            ("火星坐标系", Crs::Gcj02),
            ("bd09ll", Crs::Bd09),
            ("百度坐标", Crs::Bd09),
            ("CGCS2000", Crs::Cgcs2000),
            ("EPSG:4490", Crs::Cgcs2000),
            ("天地图", Crs::Cgcs2000),
        ] {
            assert_eq!(s.parse::<Crs>().unwrap(), c, "{s}");
            assert_eq!(c.as_str().parse::<Crs>().unwrap(), c);
        }
        assert_eq!("bd09mc".parse::<Crs>().unwrap_err().rule, "crs.unknown");
        assert_eq!("".parse::<Crs>().unwrap_err().rule, "crs.unknown");
        assert_eq!(to_wgs84(120.0, 30.0, Crs::Cgcs2000), (120.0, 30.0));
    }

    #[test]
    fn unswap() {
        assert_eq!(unswap_lon_lat(30.87, 120.09), (120.09, 30.87, true));
        assert_eq!(unswap_lon_lat(120.09, 30.87), (120.09, 30.87, false));
    }

    #[test]
    fn district_seats() {
        assert_eq!(division_from_point(120.09, 30.87), Some("330502"));
        assert_eq!(division_from_point(120.42, 30.87), Some("330503"));
        assert_eq!(division_from_point(119.97, 30.54), Some("330521"));
        assert_eq!(division_from_point(119.91, 31.03), Some("330522"));
        assert_eq!(division_from_point(119.68, 30.64), Some("330523"));
        assert_eq!(division_from_point(120.26, 30.84), Some("330502")); // 织里
        assert_eq!(division_from_point(120.16, 30.72), Some("330503")); // 菱湖
        assert_eq!(division_from_point(120.28, 30.60), Some("330521")); // 新市
        assert_eq!(division_from_point(120.15, 30.27), None); // 杭州
        assert_eq!(division_from_point(f64::NAN, 30.0), None);
    }

    #[test]
    fn addresses() {
        assert_eq!(division_from_address("浙江省湖州市吴兴区爱山街道"), Some("330502"));
        assert_eq!(division_from_address("湖州市吴兴区安吉路 18 号"), Some("330502"));
        assert_eq!(division_from_address("南浔区练市镇"), Some("330503"));
        assert_eq!(division_from_address("德清县武康街道"), Some("330521"));
        assert_eq!(division_from_address("长兴县雉城街道"), Some("330522"));
        assert_eq!(division_from_address("安吉县递铺街道"), Some("330523"));
        assert_eq!(division_from_address("织里镇某村"), Some("330502"));
        assert_eq!(division_from_address("安吉路 18 号"), None);
        assert_eq!(division_from_address("湖州市 某路"), Some("330500"));
        assert_eq!(division_from_address("杭州市西湖区"), None);
    }
}
