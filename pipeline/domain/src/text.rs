//! Text normalisation and date/time parsing for the formats Chinese
//! departments actually send (domain.md §9.2, §9.3).
//!
//! * [`normalize_text`] folds full-width forms to half-width with Unicode NFKC
//!   (UAX #15, via the `unicode-normalization` crate), strips zero-width
//!   characters and collapses whitespace.
//! * [`normalize_code`] is the stricter form used before identifier
//!   validation: NFKC, *all* whitespace removed, ASCII upper-cased.
//! * [`parse_datetime_cn`] accepts the mixed date formats listed in
//!   domain.md §9.3; wall-clock times without an offset are China Standard
//!   Time (Asia/Shanghai, UTC+08:00 — China has not observed DST since 1991,
//!   so a fixed offset is exact for all current data).

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::error::IdError;

/// UTC offset of China Standard Time (Asia/Shanghai), in seconds.
pub const SHANGHAI_OFFSET_SECS: i32 = 8 * 3600;

/// The fixed UTC+08:00 offset used for all local (offset-less) times.
pub fn shanghai() -> FixedOffset {
    // east_opt only fails for |offset| >= 24h; the fallback is unreachable.
    FixedOffset::east_opt(SHANGHAI_OFFSET_SECS).unwrap_or_else(|| chrono::Offset::fix(&chrono::Utc))
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// Normalises free text: Unicode NFKC (full-width `９１３３Ｘ（浙Ｅ）` →
/// `9133X(浙E)`, ideographic space U+3000 → space), removes zero-width
/// characters and the BOM, collapses runs of whitespace to one ASCII space and
/// trims both ends.
///
/// NFKC leaves CJK punctuation such as `。、` unchanged (domain.md §9.2).
pub fn normalize_text(s: &str) -> String {
    let visible = s.chars().filter(|c| !is_invisible(*c));
    // Most text is already in NFKC (ASCII always is, and nearly all Chinese
    // text): the quick check spares the decomposition.
    if is_nfkc_quick(visible.clone()) == IsNormalized::Yes {
        return collapse_whitespace(visible);
    }
    collapse_whitespace(visible.nfkc())
}

/// Runs of whitespace as one ASCII space, trimmed.
fn collapse_whitespace(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in chars {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// The one form of a person's or unit's name used to compare records across
/// departments: [`normalize_text`] — NFKC (full-width letters, digits and
/// brackets → half-width, `（有限公司）` → `(有限公司)`), zero-width
/// characters removed, runs of whitespace collapsed to one space, trimmed.
/// Letters keep their case and nothing else is changed: names are compared,
/// not repaired.
pub fn normalize_name(s: &str) -> String {
    normalize_text(s)
}

/// Normalises an identifier-like code before validation: NFKC, every
/// whitespace and zero-width character removed, ASCII letters upper-cased
/// (so a trailing ID check character `x` becomes `X`, domain.md §9.2).
pub fn normalize_code(s: &str) -> String {
    // ASCII is NFKC already and has no zero-width characters.
    if s.is_ascii() {
        return s.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    }
    // NFKC can itself produce spaces (e.g. U+1FC1 → " ̈͂") and removing them
    // or upper-casing can leave a composable pair, so recompose at the end;
    // this keeps the function idempotent.
    s.chars()
        .filter(|c| !c.is_whitespace() && !is_invisible(*c))
        .nfkc()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .nfkc()
        .collect()
}

/// `true` if the value is one of the null sentinels departments use for
/// "no value" (domain.md §9.3): empty, `无`, `/`, `-`, `--`, `—`, `暂无`,
/// `空`, `NULL`, `null`, `None`, `N/A`, `NA`, `\N`. Compared after
/// [`normalize_text`] and ASCII case folding.
pub fn is_null_sentinel(s: &str) -> bool {
    let t = normalize_text(s);
    let lower = t.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "" | "无" | "/" | "-" | "--" | "—" | "——" | "暂无" | "空" | "null" | "none" | "n/a" | "na" | "\\n"
    )
}

fn dt_err(rule: &'static str, input: &str, why: impl std::fmt::Display) -> IdError {
    IdError::new(rule, format!("cannot read {input:?} as a date/time: {why}"))
}

/// Converts an Excel serial day number (1900 date system, as found in
/// spreadsheets exported by departments) to a wall-clock date-time.
///
/// Serial 61 is 1900-03-01; serials ≤ 60 fall in Excel's fictitious
/// 1900-02-29 range and are rejected (`None`), as are non-finite values and
/// serials past year 9999.
pub fn from_excel_serial(serial: f64) -> Option<NaiveDateTime> {
    // NaN and ±inf fall outside the range.
    if !(61.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let days = serial.floor();
    let secs = ((serial - days) * 86_400.0).round() as i64;
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_hms_opt(0, 0, 0)?;
    epoch.checked_add_signed(Duration::try_days(days as i64)?)?.checked_add_signed(Duration::try_seconds(secs)?)
}

/// Parses a date/time in any of the formats Chinese departments send and
/// returns it at UTC+08:00.
///
/// Accepted (after NFKC, so full-width digits work too):
///
/// | Input | Meaning |
/// |---|---|
/// | `2025-03-15 10:30:00`, `2025-03-15T10:30:00.123`, `2025-3-15 10:30` | local time |
/// | `2025/3/15 10:30`, `2025.3.15`, `2025/03/15` | local time / local midnight |
/// | `2025年3月15日 10时30分`, `2025年3月15日10点30分20秒`, `2025年3月15日 下午3点半` | local time |
/// | `20250315`, `202503151030`, `20250315103000`, `20250315103000123` (HJ 212 QN) | local time |
/// | `2025-03-15T02:30:00Z`, `…+08:00`, `…+0800`, `…-05`, `… GMT+8`, `… UTC` | ISO 8601 / RFC 3339 with offset |
/// | `2025-03-15 10:30:00 CST`, `… 北京时间` | explicit China Standard Time |
/// | 13 digits, 10 digits | epoch milliseconds / epoch seconds |
/// | 5 digits, `45731.4375` | Excel 1900-system serial, local time |
/// | `Sat Mar 15 10:30:00 CST 2025` | Java `Date.toString()` (CST = China Standard Time) |
///
/// Date-only inputs mean local midnight. `24:00[:00]` means midnight of the
/// next day. Values with an explicit offset are converted to +08:00 (the
/// instant is preserved). Day-first or month-first numeric dates
/// (`15/03/2025`) are ambiguous and rejected.
///
/// Rules: `datetime.empty`, `datetime.format`, `datetime.invalid` (format
/// recognised but the date or time does not exist), `datetime.offset`.
pub fn parse_datetime_cn(input: &str) -> Result<DateTime<FixedOffset>, IdError> {
    let s = normalize_text(input).to_ascii_uppercase();
    let cst = shanghai();
    if s.is_empty() {
        return Err(IdError::new("datetime.empty", "empty date/time value"));
    }

    // Java `Date.toString()` with the CST zone name.
    if s.contains(" CST ") && s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let replaced = s.replacen(" CST ", " +0800 ", 1);
        return DateTime::parse_from_str(&replaced, "%a %b %d %H:%M:%S %z %Y")
            .map(|d| d.with_timezone(&cst))
            .map_err(|e| dt_err("datetime.format", input, e));
    }

    // Purely numeric forms.
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return parse_all_digits(&s, input, cst);
    }
    if let Some((int, frac)) = s.split_once('.')
        && int.len() == 5
        && int.bytes().all(|b| b.is_ascii_digit())
        && !frac.is_empty()
        && frac.bytes().all(|b| b.is_ascii_digit())
    {
        let serial: f64 = s.parse().map_err(|e| dt_err("datetime.format", input, e))?;
        return excel_local(serial, input, cst);
    }

    parse_general(&s, input, cst)
}

/// Like [`parse_datetime_cn`] but returns only the local (UTC+08:00) date.
pub fn parse_date_cn(input: &str) -> Result<NaiveDate, IdError> {
    parse_datetime_cn(input).map(|d| d.date_naive())
}

fn local(ndt: NaiveDateTime, input: &str, cst: FixedOffset) -> Result<DateTime<FixedOffset>, IdError> {
    cst.from_local_datetime(&ndt).single().ok_or_else(|| dt_err("datetime.invalid", input, "out of range"))
}

fn excel_local(serial: f64, input: &str, cst: FixedOffset) -> Result<DateTime<FixedOffset>, IdError> {
    let ndt =
        from_excel_serial(serial).ok_or_else(|| dt_err("datetime.invalid", input, "Excel serial out of range"))?;
    local(ndt, input, cst)
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

fn build(input: &str, ymd: (i32, u32, u32), hms: (u32, u32, u32), nanos: u32) -> Result<NaiveDateTime, IdError> {
    let date = NaiveDate::from_ymd_opt(ymd.0, ymd.1, ymd.2).ok_or_else(|| {
        dt_err("datetime.invalid", input, format!("no such date {:04}-{:02}-{:02}", ymd.0, ymd.1, ymd.2))
    })?;
    if hms == (24, 0, 0) && nanos == 0 {
        return date
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .ok_or_else(|| dt_err("datetime.invalid", input, "out of range"));
    }
    let time = NaiveTime::from_hms_nano_opt(hms.0, hms.1, hms.2, nanos).ok_or_else(|| {
        dt_err("datetime.invalid", input, format!("no such time {:02}:{:02}:{:02}", hms.0, hms.1, hms.2))
    })?;
    Ok(NaiveDateTime::new(date, time))
}

fn ymd_from8(d: &str) -> Option<(i32, u32, u32)> {
    Some((num(d.get(0..4)?)?, num(d.get(4..6)?)?, num(d.get(6..8)?)?))
}

fn parse_all_digits(s: &str, input: &str, cst: FixedOffset) -> Result<DateTime<FixedOffset>, IdError> {
    let bad = || dt_err("datetime.format", input, "unrecognised numeric form");
    match s.len() {
        5 => {
            let serial: f64 = num(s).ok_or_else(bad)?;
            excel_local(serial, input, cst)
        }
        10 | 13 => {
            let v: i64 = num(s).ok_or_else(bad)?;
            let utc = if s.len() == 10 { DateTime::from_timestamp(v, 0) } else { DateTime::from_timestamp_millis(v) };
            utc.map(|d| d.with_timezone(&cst))
                .ok_or_else(|| dt_err("datetime.invalid", input, "epoch value out of range"))
        }
        8 | 12 | 14 | 17 => {
            let ymd = ymd_from8(s).ok_or_else(bad)?;
            let field = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r).and_then(num) };
            let (h, m, sec, ms) = match s.len() {
                8 => (0, 0, 0, 0),
                12 => (field(8..10).ok_or_else(bad)?, field(10..12).ok_or_else(bad)?, 0, 0),
                _ => (
                    field(8..10).ok_or_else(bad)?,
                    field(10..12).ok_or_else(bad)?,
                    field(12..14).ok_or_else(bad)?,
                    if s.len() == 17 { field(14..17).ok_or_else(bad)? } else { 0 },
                ),
            };
            let ndt = build(input, ymd, (h, m, sec), ms * 1_000_000)?;
            local(ndt, input, cst)
        }
        _ => Err(bad()),
    }
}

const DATE_SEPS: &[char] = &['-', '/', '.', '年', '月', '日', '号'];
const TIME_SEPS: &[char] = &[':', '时', '点', '分', '秒', 'T', ' ', ',', '.'];

#[derive(Debug)]
struct NumTok {
    digits: String,
    /// The separator that immediately preceded the digits (`'\0'` if none).
    sep_before: char,
}

fn parse_offset(rest: &str, sign: i32, input: &str) -> Result<i32, IdError> {
    let bad = || dt_err("datetime.offset", input, format!("bad UTC offset {rest:?}"));
    let compact: String = rest.chars().filter(|c| *c != ':').collect();
    if !compact.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = match compact.len() {
        1 | 2 => (num(&compact).ok_or_else(bad)?, 0),
        4 => (num(&compact[0..2]).ok_or_else(bad)?, num(&compact[2..4]).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

fn parse_general(s: &str, input: &str, cst: FixedOffset) -> Result<DateTime<FixedOffset>, IdError> {
    // Half-hour and AM/PM markers.
    let mut s = s.replace("点半", "点30分").replace("时半", "时30分");
    let mut pm = false;
    let mut am = false;
    for marker in ["下午", "晚上", "傍晚", "PM", "P.M."] {
        if s.contains(marker) {
            pm = true;
            s = s.replace(marker, " ");
        }
    }
    for marker in ["上午", "早上", "凌晨", "AM", "A.M."] {
        if s.contains(marker) {
            am = true;
            s = s.replace(marker, " ");
        }
    }
    let noon = s.contains("中午");
    if noon {
        s = s.replace("中午", " ");
    }
    if (am && pm) || (noon && (am || pm)) {
        return Err(dt_err("datetime.format", input, "conflicting AM/PM markers"));
    }
    // Zone words: a bare trailing UTC/GMT means +00:00; UTC/GMT followed by
    // an offset ("GMT+8") just introduces it; CST / 北京时间 mean +08:00.
    for suffix in ["UTC", "GMT"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = format!("{}Z", stripped.trim_end());
            break;
        }
    }
    for word in ["UTC", "GMT"] {
        s = s.replace(&format!("{word}+"), "+").replace(&format!("{word}-"), "-");
    }
    for word in ["(北京时间)", "北京时间", "CST"] {
        if let Some(stripped) = s.strip_suffix(word) {
            s = stripped.trim_end().to_string();
            break;
        }
    }

    let chars: Vec<char> = s.chars().collect();
    let mut nums: Vec<NumTok> = Vec::new();
    let mut sep = '\0';
    let mut offset: Option<i32> = None;
    let mut i = 0;
    let time_started =
        |nums: &Vec<NumTok>| nums.len() >= 4 || (nums.len() >= 2 && nums.first().is_some_and(|n| n.digits.len() == 8));
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            nums.push(NumTok { digits: chars[start..i].iter().collect(), sep_before: sep });
            sep = '\0';
            continue;
        }
        if (c == '+' || c == '-') && time_started(&nums) {
            let rest: String = chars[i + 1..].iter().collect();
            offset = Some(parse_offset(rest.trim(), if c == '+' { 1 } else { -1 }, input)?);
            break;
        }
        if c == 'Z' && time_started(&nums) {
            if chars[i + 1..].iter().all(|c| c.is_whitespace()) {
                offset = Some(0);
                break;
            }
            return Err(dt_err("datetime.format", input, "text after 'Z'"));
        }
        if DATE_SEPS.contains(&c) || TIME_SEPS.contains(&c) {
            // Keep the most significant separator of a run ("日 " → '日').
            if sep == '\0' || sep == ' ' {
                sep = c;
            }
            i += 1;
            continue;
        }
        return Err(dt_err("datetime.format", input, format!("unexpected character {c:?}")));
    }

    let bad = |why: &str| dt_err("datetime.format", input, why.to_string());
    let first = nums.first().ok_or_else(|| bad("no digits"))?;
    let (ymd, rest): ((i32, u32, u32), &[NumTok]) = if first.digits.len() == 8 {
        (ymd_from8(&first.digits).ok_or_else(|| bad("bad compact date"))?, &nums[1..])
    } else if first.digits.len() == 4 && nums.len() >= 3 {
        let (m, d) = (&nums[1].digits, &nums[2].digits);
        if m.len() > 2 || d.len() > 2 {
            return Err(bad("month and day must have 1–2 digits"));
        }
        (
            (
                num(&first.digits).ok_or_else(|| bad("bad year"))?,
                num(m).ok_or_else(|| bad("bad month"))?,
                num(d).ok_or_else(|| bad("bad day"))?,
            ),
            &nums[3..],
        )
    } else {
        return Err(bad("expected a 4-digit year followed by month and day"));
    };

    let mut nanos = 0u32;
    let mut hms = (0u32, 0u32, 0u32);
    let two = |t: &NumTok| -> Result<u32, IdError> {
        if t.digits.is_empty() || t.digits.len() > 2 {
            return Err(bad("time fields must have 1–2 digits"));
        }
        num(&t.digits).ok_or_else(|| bad("bad time field"))
    };
    let frac = |t: &NumTok| -> Result<u32, IdError> {
        if !(t.sep_before == '.' || t.sep_before == ',') || t.digits.len() > 9 {
            return Err(bad("unexpected trailing number"));
        }
        let padded = format!("{:0<9}", t.digits);
        num(&padded).ok_or_else(|| bad("bad fraction"))
    };
    match rest {
        [] => {}
        [t] if t.digits.len() == 4 || t.digits.len() == 6 => {
            let d = &t.digits;
            hms.0 = num(&d[0..2]).ok_or_else(|| bad("bad hour"))?;
            hms.1 = num(&d[2..4]).ok_or_else(|| bad("bad minute"))?;
            if d.len() == 6 {
                hms.2 = num(&d[4..6]).ok_or_else(|| bad("bad second"))?;
            }
        }
        [t, f] if t.digits.len() == 6 => {
            let d = &t.digits;
            hms = (
                num(&d[0..2]).ok_or_else(|| bad("bad hour"))?,
                num(&d[2..4]).ok_or_else(|| bad("bad minute"))?,
                num(&d[4..6]).ok_or_else(|| bad("bad second"))?,
            );
            nanos = frac(f)?;
        }
        [h] => hms.0 = two(h)?,
        [h, m] => hms = (two(h)?, two(m)?, 0),
        [h, m, sec] => hms = (two(h)?, two(m)?, two(sec)?),
        [h, m, sec, f] => {
            hms = (two(h)?, two(m)?, two(sec)?);
            nanos = frac(f)?;
        }
        _ => return Err(bad("too many numeric fields")),
    }
    if pm && hms.0 < 12 {
        hms.0 += 12;
    } else if noon && hms.0 < 11 {
        // 中午1点 = 13:00
        hms.0 += 12;
    } else if am && hms.0 == 12 {
        hms.0 = 0;
    }

    let ndt = build(input, ymd, hms, nanos)?;
    match offset {
        None => local(ndt, input, cst),
        Some(secs) => {
            let off =
                FixedOffset::east_opt(secs).ok_or_else(|| dt_err("datetime.offset", input, "offset out of range"))?;
            off.from_local_datetime(&ndt)
                .single()
                .map(|d| d.with_timezone(&cst))
                .ok_or_else(|| dt_err("datetime.invalid", input, "out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The definitions, written plainly: NFKC of the visible characters,
    /// whitespace collapsed; for codes, NFKC without whitespace, upper-cased,
    /// NFKC again.
    fn reference_text(s: &str) -> String {
        let nfkc: String = s.chars().filter(|c| !is_invisible(*c)).nfkc().collect();
        nfkc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn reference_code(s: &str) -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && !is_invisible(*c))
            .nfkc()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .nfkc()
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The fast paths (ASCII, text already in NFKC) give what the
        /// definitions give: ASCII, Chinese, full-width forms, every
        /// whitespace and zero-width character, combining marks.
        #[test]
        fn fast_paths_equal_the_definitions(
            s in "[\x00-\x7f]{0,20}|[ a-zA-Z0-9湖州市长兴县煤山镇，。\u{3000}\u{00a0}\u{200b}\u{feff}\u{00ad}\u{ff10}-\u{ff5a}\u{0301}\u{1fc1}\u{2002}]{0,20}|\\PC{0,16}"
        ) {
            prop_assert_eq!(normalize_text(&s), reference_text(&s));
            prop_assert_eq!(normalize_code(&s), reference_code(&s));
        }
    }

    use super::*;

    fn local_str(s: &str) -> String {
        parse_datetime_cn(s)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f %:z").to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn nfkc_folds_full_width() {
        // domain.md §9.2 examples.
        assert_eq!(normalize_text("９１３３Ｘ"), "9133X");
        assert_eq!(normalize_text("（浙Ｅ）"), "(浙E)");
        assert_eq!(normalize_text("\u{3000} 湖州市\u{3000}\u{3000}吴兴区 "), "湖州市 吴兴区");
        assert_eq!(normalize_text("甲。乙、"), "甲。乙、");
        assert_eq!(normalize_code(" 11010519491231002x\u{FEFF}"), "11010519491231002X");
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("\u{3000}张\u{3000}\u{3000}三 "), "张 三");
        assert_eq!(normalize_name("湖州ＡＢＣ环保科技（有限公司）\u{200B}"), "湖州ABC环保科技(有限公司)");
        assert_eq!(normalize_name("Mary  Ann\tSmith"), "Mary Ann Smith");
        assert_eq!(normalize_name("  "), "");
    }

    #[test]
    fn null_sentinels() {
        for s in ["", "  ", "无", "/", "-", "暂无", "NULL", "null", "　"] {
            assert!(is_null_sentinel(s), "{s:?}");
        }
        for s in ["0", "湖州", "无锡"] {
            assert!(!is_null_sentinel(s), "{s:?}");
        }
    }

    #[test]
    fn department_formats() {
        let want = "2025-03-15 10:30:00.000 +08:00";
        for s in [
            "2025-03-15 10:30:00",
            "2025/3/15 10:30",
            "20250315103000",
            "202503151030",
            "2025年3月15日 10时30分",
            "2025年3月15日10点30分",
            "2025年03月15日 10:30:00",
            "2025-03-15T10:30:00+08:00",
            "2025-03-15T10:30:00+0800",
            "2025-03-15T02:30:00Z",
            "2025-03-15T02:30:00.000Z",
            "2025-03-14T21:30:00-05:00",
            "2025-03-15 10:30:00.0",
            "２０２５－０３－１５　１０：３０：００",
            "2025.3.15 10:30",
            "2025年3月15日 上午10点半",
            "20250315T103000",
            "Sat Mar 15 10:30:00 CST 2025",
            // 2025-03-15T02:30:00Z = 1742005800 s.
            "1742005800000",
            "1742005800",
            "2025-03-15 10:30:00 GMT+8",
            "2025-03-15 02:30:00 UTC",
            "2025-03-15 10:30:00 CST",
            "2025年3月15日 10:30 (北京时间)",
        ] {
            assert_eq!(local_str(s), want, "{s}");
        }
        assert_eq!(local_str("2025年3月15日 下午3点"), "2025-03-15 15:00:00.000 +08:00");
        assert_eq!(local_str("2025-03-15"), "2025-03-15 00:00:00.000 +08:00");
        assert_eq!(local_str("2025/3/15"), "2025-03-15 00:00:00.000 +08:00");
        assert_eq!(local_str("20250315"), "2025-03-15 00:00:00.000 +08:00");
        for s in ["2025.03.15", "2025.3.15", "2025/03/15"] {
            assert_eq!(local_str(s), "2025-03-15 00:00:00.000 +08:00", "{s}");
        }
        assert_eq!(local_str("2025年3月15日"), "2025-03-15 00:00:00.000 +08:00");
        assert_eq!(local_str("20250315103000123"), "2025-03-15 10:30:00.123 +08:00");
        assert_eq!(local_str("2025-03-15 24:00"), "2025-03-16 00:00:00.000 +08:00");
        // Excel: serial 45731 = 2025-03-15 (45658 = 2025-01-01; +73 days).
        assert_eq!(local_str("45731"), "2025-03-15 00:00:00.000 +08:00");
        assert_eq!(local_str("45731.4375"), "2025-03-15 10:30:00.000 +08:00");
    }

    #[test]
    fn rejects() {
        for (s, rule) in [
            ("", "datetime.empty"),
            ("2025-02-29", "datetime.invalid"),
            ("2025-13-01", "datetime.invalid"),
            ("2025-03-15 25:00", "datetime.invalid"),
            ("15/03/2025", "datetime.format"),
            ("2025年3月", "datetime.format"),
            ("yesterday", "datetime.format"),
            ("2025-03-15T10:30:00+99:00", "datetime.offset"),
            ("123", "datetime.format"),
        ] {
            let e = parse_datetime_cn(s).expect_err(s);
            assert_eq!(e.rule, rule, "{s}: {e}");
        }
    }
}
