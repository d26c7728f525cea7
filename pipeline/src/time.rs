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
/// `YYYY/M/D H:M[:S]`, `YYYY.M.D H:M[:S]`, `YYYYMMDDHHMMSS`,
/// `YYYY年M月D日[ H时M分[S秒]]`, bare dates (`2025-03-19`, `2025/03/19`,
/// `2025.3.19`, `20250319`), and 13-digit epoch milliseconds.
pub fn parse_time_utc_micros(s: &str) -> Result<i64, String> {
    parse_time(s).map(|t| t.timestamp_micros())
}

/// Parses a timestamp (see [`parse_time_utc_micros`]).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Some(dt) = fast_iso(t) {
        return Ok(dt);
    }
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
    let normalized = dotted_date(&normalized);
    let n = normalized.trim().trim_end_matches(':');
    const FORMATS: &[&str] =
        &["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y%m%d%H%M%S", "%Y%m%d %H%M%S", "%Y%m%d%H%M"];
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

/// The layouts most records carry, read without format strings or
/// allocation: `YYYY-MM-DD HH:MM:SS` (Beijing time) and
/// `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (no fraction). `None`
/// for anything else (the general parser decides, including what is
/// invalid).
fn fast_iso(t: &str) -> Option<DateTime<Utc>> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let ndt = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    match (b[10], &b[19..]) {
        (b' ', []) => beijing().from_local_datetime(&ndt).single().map(|d| d.with_timezone(&Utc)),
        (b'T', [b'Z']) => Some(ndt.and_utc()),
        (b'T', [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let d = |i: usize| i32::from(digits[i] - b'0');
            let secs = (d(0) * 10 + d(1)) * 3600 + (d(2) * 10 + d(3)) * 60;
            let offset = FixedOffset::east_opt(if *sign == b'-' { -secs } else { secs })?;
            offset.from_local_datetime(&ndt).single().map(|d| d.with_timezone(&Utc))
        }
        _ => None,
    }
}

/// `2025.3.19[ 08:05…]` → `2025-3-19[ 08:05…]`: the dots of a
/// `YYYY.M.D` date (not a fraction of a second after it) become dashes.
fn dotted_date(s: &str) -> std::borrow::Cow<'_, str> {
    let t = s.trim_start();
    let date_len = t.find([' ', 'T']).unwrap_or(t.len());
    let date = &t[..date_len];
    let parts: Vec<&str> = date.split('.').collect();
    let digits =
        |p: &str, n: std::ops::RangeInclusive<usize>| n.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && digits(parts[0], 4..=4) && digits(parts[1], 1..=2) && digits(parts[2], 1..=2) {
        std::borrow::Cow::Owned(format!("{}{}", date.replace('.', "-"), &t[date_len..]))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
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
    use proptest::prelude::*;

    use super::*;

    /// The general parser alone (what `parse_time` did before the fast path).
    fn general(s: &str) -> Option<DateTime<Utc>> {
        let t = s.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
            return Some(dt.with_timezone(&Utc));
        }
        let n = t.replace('T', " ");
        NaiveDateTime::parse_from_str(&n, "%Y-%m-%d %H:%M:%S").ok().and_then(|ndt| local(ndt, s).ok())
    }

    proptest! {
        /// The fast path agrees with chrono's parsers wherever it answers,
        /// on valid and invalid dates and offsets alike.
        #[test]
        fn fast_path_agrees_with_chrono(y in 1900i32..2100, mo in 0u32..14, d in 0u32..33, h in 0u32..26,
                                        mi in 0u32..61, se in 0u32..61, tz in 0usize..5, oh in 0u32..16, om in 0u32..60) {
            let base = format!("{y:04}-{mo:02}-{d:02}");
            let time = format!("{h:02}:{mi:02}:{se:02}");
            let s = match tz {
                0 => format!("{base} {time}"),
                1 => format!("{base}T{time}Z"),
                2 => format!("{base}T{time}+{oh:02}:{om:02}"),
                3 => format!("{base}T{time}-{oh:02}:{om:02}"),
                _ => format!("{base}T{time}"),
            };
            if let Some(fast) = fast_iso(&s) {
                prop_assert_eq!(Some(fast), general(&s), "{}", s);
            }
            if let Some(g) = general(&s) {
                prop_assert_eq!(parse_time(&s).ok(), Some(g), "{}", s);
            }
        }
    }

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
        let day = parse_time("2025-03-19T00:00:00+08:00").unwrap();
        for s in ["2025.03.19", "2025.3.19", "2025/03/19", "2025/3/19", "20250319", "2025-03-19", "2025年3月19日"] {
            assert_eq!(parse_time(s).unwrap(), day, "{s}");
        }
        let at = parse_time("2025-03-19T08:05:00+08:00").unwrap();
        for s in ["2025.3.19 08:05", "2025.03.19 08:05:00", "2025/03/19 08:05", "2025.3.19T08:05", "202503190805"] {
            assert_eq!(parse_time(s).ok(), Some(at), "{s}");
        }
        assert_eq!(
            parse_time("2025.03.19 08:05:00.5").unwrap(),
            at + chrono::Duration::milliseconds(500),
            "the fraction's dot stays a fraction"
        );
        assert!(parse_time("2025.13.19").is_err());
        assert!(parse_time("东经120度").is_err());
        assert!(parse_time("2025-02-29 10:00:00").is_err());
        assert!(parse_time("2025-03-15 24:00:00").is_err());
        assert!(parse_time("2025-02-30 10:00:00").is_err());
    }
}
