//! Working days on China's official calendar (statutory holidays plus 调休
//! make-up working days), for deadlines such as the "3 working days"
//! callback rule (§8.1.2 of the standard).
//!
//! Legal basis: 《全国年节及纪念日放假办法》 (revised 2024-11-10, in force
//! 2025); each year's dates come from that year's 国务院办公厅 notice. The
//! tables below are domain.md §5.2 (2025, from NateScarlet/holiday-cn
//! `2025.json`, citing gov.cn content_6986383) and §5.3 (2026, from
//! `2026.json` and the notice of 2025-11-04) — both \[V\].
//!
//! Rule (domain.md §5.4): a day is a working day if it is a listed make-up
//! working day, or if it is Monday–Friday and not a listed day off.
//!
//! A year whose notice is not embedded fails loudly with
//! [`CalendarError::YearNotPublished`] — a deadline computed on a guessed
//! calendar is worse than no deadline. [`add_working_days_provisional`]
//! exists for callers that must show *something* and will flag it.
//!
//! Caveat: a December weekend of the last published year could still become
//! a make-up day in the next year's notice (domain.md §5.4); such dates are
//! answered from the current tables.

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Serialize;

/// Calendar lookup failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum CalendarError {
    /// The State Council holiday notice for this year is not in the table.
    #[error("calendar.year_not_published: the holiday schedule for {0} is not published/embedded")]
    YearNotPublished(i32),
    /// Date arithmetic left chrono's representable range.
    #[error("calendar.out_of_range: date arithmetic overflow")]
    OutOfRange,
}

impl CalendarError {
    /// Stable rule name (`calendar.year_not_published` / `calendar.out_of_range`).
    pub fn rule(&self) -> &'static str {
        match self {
            CalendarError::YearNotPublished(_) => "calendar.year_not_published",
            CalendarError::OutOfRange => "calendar.out_of_range",
        }
    }
}

/// Years whose holiday notice is embedded.
pub const PUBLISHED_YEARS: &[i32] = &[2025, 2026];

type Ymd = (i32, u32, u32);

/// Days off (inclusive ranges), domain.md §5.2 and §5.3.
const DAYS_OFF: &[(&str, Ymd, Ymd)] = &[
    // 2025 — 国务院办公厅关于2025年部分节假日安排的通知
    ("元旦", (2025, 1, 1), (2025, 1, 1)),
    ("春节", (2025, 1, 28), (2025, 2, 4)),
    ("清明节", (2025, 4, 4), (2025, 4, 6)),
    ("劳动节", (2025, 5, 1), (2025, 5, 5)),
    ("端午节", (2025, 5, 31), (2025, 6, 2)),
    ("国庆节、中秋节", (2025, 10, 1), (2025, 10, 8)),
    // 2026 — 国务院办公厅关于2026年部分节假日安排的通知 (2025-11-04)
    ("元旦", (2026, 1, 1), (2026, 1, 3)),
    ("春节", (2026, 2, 15), (2026, 2, 23)),
    ("清明节", (2026, 4, 4), (2026, 4, 6)),
    ("劳动节", (2026, 5, 1), (2026, 5, 5)),
    ("端午节", (2026, 6, 19), (2026, 6, 21)),
    ("中秋节", (2026, 9, 25), (2026, 9, 27)),
    ("国庆节", (2026, 10, 1), (2026, 10, 7)),
];

/// Make-up working days (调休上班, weekend days that are worked).
const MAKEUP_DAYS: &[(&str, Ymd)] = &[
    ("春节", (2025, 1, 26)),
    ("春节", (2025, 2, 8)),
    ("劳动节", (2025, 4, 27)),
    ("国庆节、中秋节", (2025, 9, 28)),
    ("国庆节、中秋节", (2025, 10, 11)),
    ("元旦", (2026, 1, 4)),
    ("春节", (2026, 2, 14)),
    ("春节", (2026, 2, 28)),
    ("劳动节", (2026, 5, 9)),
    ("国庆节", (2026, 9, 20)),
    ("国庆节", (2026, 10, 10)),
];

/// What kind of day a date is on the official calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DayKind {
    /// Monday–Friday, not a holiday.
    Workday,
    /// Saturday/Sunday that is not a make-up working day.
    Weekend,
    /// A listed day off (statutory holiday or the days bridged to it).
    Holiday(&'static str),
    /// A weekend day that is worked (调休上班) for the named holiday.
    MakeUpWorkday(&'static str),
}

impl DayKind {
    /// `true` for [`DayKind::Workday`] and [`DayKind::MakeUpWorkday`].
    pub fn is_working(self) -> bool {
        matches!(self, DayKind::Workday | DayKind::MakeUpWorkday(_))
    }
}

fn ymd(d: NaiveDate) -> Ymd {
    (d.year(), d.month(), d.day())
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// `true` if the holiday notice for `year` is embedded.
pub fn is_year_published(year: i32) -> bool {
    PUBLISHED_YEARS.contains(&year)
}

/// Classifies `date`; fails for years not in [`PUBLISHED_YEARS`].
pub fn day_kind(date: NaiveDate) -> Result<DayKind, CalendarError> {
    if !is_year_published(date.year()) {
        return Err(CalendarError::YearNotPublished(date.year()));
    }
    let k = ymd(date);
    if let Some((name, _)) = MAKEUP_DAYS.iter().find(|(_, d)| *d == k) {
        return Ok(DayKind::MakeUpWorkday(name));
    }
    if let Some((name, _, _)) = DAYS_OFF.iter().find(|(_, a, b)| *a <= k && k <= *b) {
        return Ok(DayKind::Holiday(name));
    }
    Ok(if is_weekend(date) { DayKind::Weekend } else { DayKind::Workday })
}

/// `true` if `date` is a working day (domain.md §5.4).
pub fn is_working_day(date: NaiveDate) -> Result<bool, CalendarError> {
    day_kind(date).map(DayKind::is_working)
}

/// The `n`-th working day after `start`, counting from the next day
/// (`start` itself never counts) — the "+N working days" deadline rule.
/// `n = 0` returns `start` unchanged.
///
/// Fails with [`CalendarError::YearNotPublished`] as soon as the count
/// reaches a date in an unpublished year.
pub fn add_working_days(start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
    let mut d = start;
    let mut left = n;
    while left > 0 {
        d = d.succ_opt().ok_or(CalendarError::OutOfRange)?;
        if is_working_day(d)? {
            left -= 1;
        }
    }
    Ok(d)
}

/// The next working day after `date`.
pub fn next_working_day(date: NaiveDate) -> Result<NaiveDate, CalendarError> {
    add_working_days(date, 1)
}

/// Like [`add_working_days`], but for dates in unpublished years assumes
/// Monday–Friday are working days and returns `(date, true)` to mark the
/// result as provisional. This matches domain.md §5.5's provisional vector
/// (2026-12-30 + 3 → 2027-01-04); note it does not assume even fixed-date
/// holidays such as 1 January, so the real deadline may be later.
pub fn add_working_days_provisional(start: NaiveDate, n: u32) -> Result<(NaiveDate, bool), CalendarError> {
    let mut d = start;
    let mut left = n;
    let mut provisional = false;
    while left > 0 {
        d = d.succ_opt().ok_or(CalendarError::OutOfRange)?;
        let working = match is_working_day(d) {
            Ok(w) => w,
            Err(CalendarError::YearNotPublished(_)) => {
                provisional = true;
                !is_weekend(d)
            }
            Err(e) => return Err(e),
        };
        if working {
            left -= 1;
        }
    }
    Ok((d, provisional))
}

/// Number of working days `d` with `start < d ≤ end` (so that
/// `working_days_between(s, add_working_days(s, n)?) == n`). If `end` is
/// before `start` the result is the negated count of `end < d ≤ start`.
/// The start day itself is never examined, so only the years of the days
/// after it need to be published.
pub fn working_days_between(start: NaiveDate, end: NaiveDate) -> Result<i64, CalendarError> {
    if end < start {
        return working_days_between(end, start).map(|n| -n);
    }
    let mut count = 0i64;
    let mut d = start;
    while d < end {
        d = d.succ_opt().ok_or(CalendarError::OutOfRange)?;
        if is_working_day(d)? {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    /// domain.md §5.5 \[V\].
    #[test]
    fn plus_three_vectors() {
        assert_eq!(add_working_days(d(2025, 9, 30), 3), Ok(d(2025, 10, 11)));
        assert_eq!(add_working_days(d(2025, 1, 24), 3), Ok(d(2025, 2, 5)));
        assert_eq!(add_working_days(d(2026, 2, 12), 3), Ok(d(2026, 2, 24)));
        assert_eq!(add_working_days(d(2026, 5, 8), 3), Ok(d(2026, 5, 12)));
        // 2027 is unpublished: strict fails loudly, provisional flags.
        assert_eq!(add_working_days(d(2026, 12, 30), 3), Err(CalendarError::YearNotPublished(2027)));
        assert_eq!(add_working_days_provisional(d(2026, 12, 30), 3), Ok((d(2027, 1, 4), true)));
        assert_eq!(add_working_days_provisional(d(2026, 5, 8), 3), Ok((d(2026, 5, 12), false)));
        assert_eq!(add_working_days(d(2025, 3, 15), 0), Ok(d(2025, 3, 15)));
        assert_eq!(next_working_day(d(2025, 9, 30)), Ok(d(2025, 10, 9)));
    }

    #[test]
    fn schedule_spot_checks() {
        // 2025-10-11 is a Saturday make-up day (domain.md §5.5 note).
        assert_eq!(d(2025, 10, 11).weekday(), Weekday::Sat);
        assert_eq!(is_working_day(d(2025, 10, 11)), Ok(true));
        assert_eq!(day_kind(d(2025, 10, 8)), Ok(DayKind::Holiday("国庆节、中秋节")));
        assert_eq!(day_kind(d(2026, 1, 4)), Ok(DayKind::MakeUpWorkday("元旦")));
        assert_eq!(d(2026, 1, 4).weekday(), Weekday::Sun);
        assert_eq!(is_working_day(d(2026, 2, 23)), Ok(false));
        assert_eq!(is_working_day(d(2026, 2, 24)), Ok(true));
        assert_eq!(day_kind(d(2025, 3, 15)), Ok(DayKind::Weekend));
        assert_eq!(day_kind(d(2025, 3, 17)), Ok(DayKind::Workday));
        assert_eq!(is_working_day(d(2024, 12, 31)), Err(CalendarError::YearNotPublished(2024)));
        assert_eq!(is_working_day(d(2027, 1, 1)), Err(CalendarError::YearNotPublished(2027)));
        assert_eq!(CalendarError::YearNotPublished(2027).rule(), "calendar.year_not_published");
    }

    #[test]
    fn tables_are_consistent() {
        // Every make-up day is a weekend day in a published year, and no
        // make-up day lies inside a days-off range.
        for (_, k) in MAKEUP_DAYS {
            let date = d(k.0, k.1, k.2);
            assert!(is_weekend(date), "{date}");
            assert!(is_year_published(k.0));
            assert!(!DAYS_OFF.iter().any(|(_, a, b)| a <= k && k <= b));
        }
        for (_, a, b) in DAYS_OFF {
            assert!(a <= b && a.0 == b.0 && is_year_published(a.0));
        }
    }

    /// Hand count: 2025 and 2026 each have 104 weekend days; weekday days off
    /// are 1+6+1+3+1+6 = 18 (2025) and 2+6+1+3+1+1+5 = 19 (2026); make-up
    /// days 5 and 6. Working days = 365 − 104 − 18 + 5 = 248 and
    /// 365 − 104 − 19 + 6 = 248; weekday days off − make-up days = 13, the
    /// statutory total of the 2024 放假办法 (domain.md §5.1).
    #[test]
    fn yearly_totals() {
        for (year, weekday_off, makeup) in [(2025, 18, 5), (2026, 19, 6)] {
            let (mut work, mut wd_off, mut mk) = (0, 0, 0);
            let mut day = d(year, 1, 1);
            while day.year() == year {
                match day_kind(day).unwrap() {
                    DayKind::Workday => work += 1,
                    DayKind::MakeUpWorkday(_) => {
                        work += 1;
                        mk += 1;
                    }
                    DayKind::Holiday(_) if !is_weekend(day) => wd_off += 1,
                    _ => {}
                }
                day = day.succ_opt().unwrap();
            }
            assert_eq!((work, wd_off, mk), (248, weekday_off, makeup), "{year}");
            assert_eq!(wd_off - mk, 13);
        }
        assert_eq!(working_days_between(d(2025, 1, 1), d(2025, 12, 31)), Ok(248));
        // The start day itself is never examined.
        assert_eq!(working_days_between(d(2024, 12, 31), d(2025, 12, 31)), Ok(248));
    }

    #[test]
    fn between() {
        assert_eq!(working_days_between(d(2025, 9, 30), d(2025, 10, 11)), Ok(3));
        assert_eq!(working_days_between(d(2025, 10, 11), d(2025, 9, 30)), Ok(-3));
        assert_eq!(working_days_between(d(2025, 3, 17), d(2025, 3, 17)), Ok(0));
        assert_eq!(working_days_between(d(2026, 12, 1), d(2027, 1, 5)), Err(CalendarError::YearNotPublished(2027)));
    }
}
