//! Coordinate obfuscations used by Chinese map vendors (domain.md §4.1, §4.2).
//!
//! The simulator keeps every location in WGS-84 internally and converts at the edge, exactly
//! like the real sources: the 110 system serves GCJ-02 (高德), the 12345 hotline BD-09 (百度),
//! market supervision and law enforcement WGS-84/CGCS2000.

use std::f64::consts::PI;

/// Krasovsky semi-major axis used by GCJ-02 (eviltransform; 6378137 is off by ~1 cm).
const A: f64 = 6_378_245.0;
/// Krasovsky eccentricity squared.
const EE: f64 = 0.006_693_421_622_965_943;

fn transform(x: f64, y: f64) -> (f64, f64) {
    let xy = x * y;
    let abs_x = x.abs().sqrt();
    let x_pi = x * PI;
    let y_pi = y * PI;
    let d = 20.0 * (6.0 * x_pi).sin() + 20.0 * (2.0 * x_pi).sin();
    let mut lat = d;
    let mut lng = d;
    lat += 20.0 * y_pi.sin() + 40.0 * (y_pi / 3.0).sin();
    lng += 20.0 * x_pi.sin() + 40.0 * (x_pi / 3.0).sin();
    lat += 160.0 * (y_pi / 12.0).sin() + 320.0 * (y_pi / 30.0).sin();
    lng += 150.0 * (x_pi / 12.0).sin() + 300.0 * (x_pi / 30.0).sin();
    lat *= 2.0 / 3.0;
    lng *= 2.0 / 3.0;
    lat += -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * xy + 0.2 * abs_x;
    lng += 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * xy + 0.1 * abs_x;
    (lat, lng)
}

fn outside_china(lng: f64, lat: f64) -> bool {
    !(72.004..=137.8347).contains(&lng) || !(0.8293..=55.8271).contains(&lat)
}

/// WGS-84 → GCJ-02 (`(lng, lat)` in, `(lng, lat)` out). Points outside China are unchanged.
pub fn wgs84_to_gcj02(lng: f64, lat: f64) -> (f64, f64) {
    if outside_china(lng, lat) {
        return (lng, lat);
    }
    let (d_lat, d_lng) = transform(lng - 105.0, lat - 35.0);
    let rad_lat = lat / 180.0 * PI;
    let magic = 1.0 - EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    let d_lat = (d_lat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrt_magic) * PI);
    let d_lng = (d_lng * 180.0) / (A / sqrt_magic * rad_lat.cos() * PI);
    (lng + d_lng, lat + d_lat)
}

/// GCJ-02 → BD-09 (`(lng, lat)` in, `(lng, lat)` out).
pub fn gcj02_to_bd09(lng: f64, lat: f64) -> (f64, f64) {
    let x_pi = PI * 3000.0 / 180.0;
    let z = (lng * lng + lat * lat).sqrt() + 0.00002 * (lat * x_pi).sin();
    let theta = lat.atan2(lng) + 0.000003 * (lng * x_pi).cos();
    (z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// GCJ-02 back to WGS-84: fixed-point steps on [`wgs84_to_gcj02`], well
/// under a millimetre after three.
pub(crate) fn gcj02_to_wgs84(lng: f64, lat: f64) -> (f64, f64) {
    let (mut x, mut y) = (lng, lat);
    for _ in 0..3 {
        let (gx, gy) = wgs84_to_gcj02(x, y);
        x -= gx - lng;
        y -= gy - lat;
    }
    (x, y)
}

/// Round to 6 decimals (≈0.1 m), the precision the sources publish.
pub(crate) fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviltransform_vector() {
        let (lng, lat) = wgs84_to_gcj02(121.5272106, 31.1774276);
        assert!((lat - 31.17530398364597).abs() < 1e-9, "{lat}");
        assert!((lng - 121.531541859215).abs() < 1e-9, "{lng}");
    }

    #[test]
    fn gcj02_round_trips() {
        let (gx, gy) = wgs84_to_gcj02(120.1, 30.87);
        let (x, y) = gcj02_to_wgs84(gx, gy);
        assert!((x - 120.1).abs() < 1e-7 && (y - 30.87).abs() < 1e-7, "{x} {y}");
    }

    #[test]
    fn huzhou_offset_is_south_east() {
        let (lng, lat) = wgs84_to_gcj02(120.09, 30.87);
        assert!(lng > 120.09 && lng - 120.09 < 0.01);
        assert!(lat < 30.87 && 30.87 - lat < 0.01);
        let (bl, bt) = gcj02_to_bd09(lng, lat);
        assert!(bl > lng && bt > lat);
    }
}
