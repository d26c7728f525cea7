//! `lianqin-domain`: Chinese-government domain rules for the Lianqin
//! (联勤) data-integration hub — identifier check digits, plates, phones,
//! date parsing, coordinate systems, the working-day calendar and GB 3838
//! water classes.
//!
//! Pure Rust: no I/O, no clock, no async, and no panics on any input (every
//! validator is fuzzed with arbitrary strings in `tests/`). Facts and test
//! vectors come from `shared/reference/domain.md`; each item cites the
//! standard clause it implements. See `README.md` for the list of functions
//! and rule names.
//!
//! | Module | Standard |
//! |---|---|
//! | [`uscc`] | GB 32100-2015 (+ GB 11714 organisation code) |
//! | [`citizen_id`] | GB 11643-1999 (ISO 7064 MOD 11-2) |
//! | [`plate`] | GA 36-2018 |
//! | [`phone`] | MIIT numbering plan |
//! | [`text`] | Unicode NFKC (UAX #15), ISO 8601 |
//! | [`scrub`] | GB 11643, MIIT numbering plan, GA 36 (found inside free text) |
//! | [`geo`] | GCJ-02 / BD-09 published algorithms, CGCS2000 |
//! | [`calendar`] | 国务院办公厅 holiday notices 2025, 2026 |
//! | [`water`] | GB 3838-2002 Table 1, HJ 212-2017 factor codes |
//! | [`codes`] | GB/T 2260 |

#![warn(missing_docs)]

pub mod calendar;
pub mod citizen_id;
pub mod codes;
pub mod error;
pub mod geo;
pub mod phone;
pub mod plate;
pub mod scrub;
pub mod text;
pub mod uscc;
pub mod water;

pub use calendar::{CalendarError, add_working_days, is_working_day, working_days_between};
pub use citizen_id::{CitizenId, Sex, normalize_citizen_id, upgrade_15_to_18, validate_citizen_id};
pub use error::{Flag, IdError, Violation};
pub use geo::{
    Crs, bd09_to_wgs84, division_from_address, division_from_point, gcj02_to_wgs84, parse_degrees, to_wgs84,
    wgs84_to_gcj02,
};
pub use phone::{Phone, PhoneKind, normalize_phone, normalize_phone_digits};
pub use plate::{Plate, PlateKind, normalize_plate, validate_plate};
pub use scrub::scrub_personal_text;
pub use text::{normalize_name, normalize_text, parse_date_cn, parse_datetime_cn};
pub use uscc::{Uscc, normalize_uscc, uscc_org_code, validate_org_code, validate_uscc};
pub use water::{WaterClass, classify, worse_than_target};

/// The value kinds accepted by [`check_field`].
pub const CHECK_KINDS: &[&str] = &["uscc", "citizen_id", "plate", "phone", "division"];

/// Checks one value of a given kind and returns the first violated rule,
/// or `None` if the value is valid. Meant to be exposed as a SQL function
/// (`check_field(kind, value)`), so it takes `&str` and returns owned data.
///
/// * `kind` ∈ [`CHECK_KINDS`] (case-insensitive, surrounding whitespace
///   ignored); any other kind returns a violation with rule
///   `check_field.unknown_kind` rather than panicking.
/// * Null sentinels (`""`, `无`, `/`, `-`, `暂无`, `NULL`, …; see
///   [`text::is_null_sentinel`]) are **not** violations — absence is a
///   completeness question, handled separately from validity.
/// * Values are normalised first (NFKC, whitespace removed, upper-cased),
///   so full-width input is not flagged for its width alone.
/// * `field` in the result is the `kind`; the caller substitutes the column.
///
/// Rules: see [`uscc::validate_uscc`], [`citizen_id::validate_citizen_id`],
/// [`plate::validate_plate`], [`phone::normalize_phone`] and
/// [`codes::check_division`].
pub fn check_field(kind: &str, value: &str) -> Option<Violation> {
    let k = kind.trim().to_ascii_lowercase();
    if !CHECK_KINDS.contains(&k.as_str()) {
        return Some(Violation {
            field: kind.to_string(),
            rule: "check_field.unknown_kind",
            detail: format!("unknown kind {kind:?}; expected one of {CHECK_KINDS:?}"),
        });
    }
    if text::is_null_sentinel(value) {
        return None;
    }
    let res = match k.as_str() {
        "uscc" => uscc::validate_uscc(value).err(),
        "citizen_id" => citizen_id::validate_citizen_id(value).err(),
        "plate" => plate::validate_plate(value).err(),
        "phone" => phone::normalize_phone(value).err(),
        _ => codes::check_division(&text::normalize_code(value)).err(),
    };
    res.map(|e| Violation::from_error(k, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_field_dispatch() {
        assert_eq!(check_field("uscc", "91350200776049653A"), None);
        assert_eq!(check_field("USCC ", "９１３５０２００７７６０４９６５３Ａ"), None);
        let v = check_field("uscc", "91350203M0001QAY9B").unwrap();
        assert_eq!((v.field.as_str(), v.rule), ("uscc", "uscc.check_digit"));
        assert_eq!(check_field("citizen_id", "11010519491231002X"), None);
        assert_eq!(check_field("citizen_id", "110105194912310021").unwrap().rule, "citizen_id.check_digit");
        assert_eq!(check_field("plate", "浙E12345"), None);
        assert_eq!(check_field("plate", "浙E1234").unwrap().rule, "plate.length");
        assert_eq!(check_field("phone", "0572-2123456"), None);
        assert_eq!(check_field("phone", "12812345678").unwrap().rule, "phone.mobile");
        assert_eq!(check_field("division", "330502"), None);
        assert_eq!(check_field("division", "330501").unwrap().rule, "division.stale");
        assert_eq!(check_field("uscc", "暂无"), None);
        assert_eq!(check_field("uscc", ""), None);
        assert_eq!(check_field("vin", "x").unwrap().rule, "check_field.unknown_kind");
    }
}
