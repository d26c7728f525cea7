//! Time parsing for the formats departments send. Local times without an
//! offset are Beijing time (UTC+08:00).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// UTC+08:00.
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"))
}

/// Parses a timestamp and returns UTC microseconds since the epoch.
///
/// Accepts RFC 3339 / ISO-8601 with offset or `Z`, `YYYY-MM-DD HH:MM[:SS[.f]]`,
/// `YYYY/M/D H:M[:S]`, `YYYYMMDDHHMMSS`, `YYYY年M月D日[ H时M分[S秒]]`, bare dates,
/// and 13-digit epoch milliseconds.
pub fn parse_time_utc_micros(s: &str) -> Result<i64, String> {
    parse_time(s).map(|t| t.timestamp_micros())
}

/// Parses a timestamp (see [`parse_time_utc_micros`]).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(dt.with_timezone(&Utc));
    }
    if t.len() == 13
        && t.bytes().all(|b| b.is_ascii_digit())
        && let Ok(ms) = t.parse::<i64>()
        && let Some(dt) = DateTime::from_timestamp_millis(ms)
    {
        return Ok(dt);
    }
    let normalized: String = t
        .replace(['年', '月'], "-")
        .replace('日', " ")
        .replace(['时', '分'], ":")
        .replace('秒', "")
        .replace('T', " ")
        .replace('/', "-");
    let n = normalized.trim().trim_end_matches(':');
    const FORMATS: &[&str] =
        &["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y%m%d%H%M%S", "%Y%m%d %H%M%S"];
    for f in FORMATS {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(n, f) {
            return local(ndt, s);
        }
    }
    for f in ["%Y-%m-%d", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(n, f)
            && let Some(ndt) = d.and_hms_opt(0, 0, 0)
        {
            return local(ndt, s);
        }
    }
    Err(format!("unrecognized time {s:?}"))
}

fn local(ndt: NaiveDateTime, s: &str) -> Result<DateTime<Utc>, String> {
    beijing()
        .from_local_datetime(&ndt)
        .single()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("invalid local time {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let want = parse_time("2025-03-15T02:30:00Z").unwrap();
        for s in [
            "2025-03-15 10:30:00",
            "2025/3/15 10:30",
            "20250315103000",
            "2025年3月15日 10时30分",
            "2025-03-15T10:30:00+08:00",
            "1742005800000",
        ] {
            assert_eq!(parse_time(s).unwrap(), want, "{s}");
        }
        assert!(parse_time("东经120度").is_err());
        assert!(parse_time("2025-02-30 10:00:00").is_err());
    }
}
