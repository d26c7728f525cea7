//! Mainland China telephone numbers (domain.md §3.4).
//!
//! Numbering follows the MIIT 《电信网编号计划》 (2017):
//! * mobile: 11 digits `1[3-9]xxxxxxxxx`, optionally prefixed `+86`, `86`,
//!   `0086` or a trunk `0`;
//! * landline: trunk `0` + area code + 7–8 digit subscriber number; area
//!   codes are 3 digits for `010` and `02x`, 4 digits otherwise
//!   (Huzhou = `0572`);
//! * `400`/`800` 10-digit service numbers and short service numbers
//!   (`110`, `12345`, `12369`, `95xxx`).
//!
//! Canonical forms: mobile `13812345678`; landline `0572-2123456`;
//! service `4001234567` / `12345`.

use serde::Serialize;

use crate::error::IdError;

/// Huzhou's long-distance area code.
pub const HUZHOU_AREA_CODE: &str = "0572";

/// Kind of number recognised by [`normalize_phone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PhoneKind {
    /// 11-digit mobile number.
    Mobile,
    /// Fixed line with area code.
    Landline,
    /// 400/800 10-digit national service number.
    NationalService,
    /// Short service number such as 110, 12345, 12369, 95598.
    ShortService,
}

/// A normalised phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phone {
    /// What kind of number this is.
    pub kind: PhoneKind,
    /// Canonical text form (see module docs).
    pub number: String,
    /// Area code including the trunk `0` (landlines only), e.g. `0572`.
    pub area_code: Option<String>,
    /// Extension digits after `转`/`分机`/`ext`/`#`, if any.
    pub extension: Option<String>,
}

impl Phone {
    /// `true` for landlines in the Huzhou area (`0572`).
    pub fn is_huzhou_landline(&self) -> bool {
        self.area_code.as_deref() == Some(HUZHOU_AREA_CODE)
    }
}

fn err(rule: &'static str, s: &str, why: impl std::fmt::Display) -> IdError {
    IdError::new(rule, format!("{s:?}: {why}"))
}

/// Splits off an extension written as `转123`, `分机123`, `EXT123`, `EXT.123`
/// or `#123`.
fn split_extension(s: &str) -> (&str, Option<&str>) {
    for marker in ["转", "分机", "EXT.", "EXT", "#"] {
        if let Some(pos) = s.find(marker) {
            let ext = s[pos + marker.len()..].trim_matches(|c: char| !c.is_ascii_digit());
            return (&s[..pos], Some(ext));
        }
    }
    (s, None)
}

/// Normalises a phone number; see [`normalize_phone_in_area`]. A bare 7–8
/// digit local number (no area code) is rejected with
/// `phone.missing_area_code`.
pub fn normalize_phone(s: &str) -> Result<Phone, IdError> {
    normalize_phone_impl(s, None)
}

/// Normalises a phone number, completing a bare 7–8 digit local number with
/// `default_area` (e.g. [`HUZHOU_AREA_CODE`]).
///
/// Input is NFKC-normalised; spaces, `-`, `(`, `)`, `.` and `/` are ignored.
/// Rules:
/// * `phone.empty` — nothing but separators;
/// * `phone.charset` — characters other than digits, separators, a leading
///   `+` and an extension marker;
/// * `phone.mobile` — starts like a mobile (`1…`, 11 digits) but the second
///   digit is not 3–9, or the length is wrong;
/// * `phone.landline` — trunk `0` + area code but the subscriber number is not
///   7–8 digits starting with 2–9;
/// * `phone.area_code` — area code not `010`, `02x` or `0[3-9]xx`;
/// * `phone.missing_area_code` — a 7–8 digit local number without an area code;
/// * `phone.format` — any other shape;
/// * `phone.extension` — an extension marker without 1–6 digits.
pub fn normalize_phone_in_area(s: &str, default_area: &str) -> Result<Phone, IdError> {
    normalize_phone_impl(s, Some(default_area))
}

/// The one form of a phone number used to match records across
/// departments: E.164-like digits only, in the national form a caller in
/// China dials — mobile `13812345678`, landline with its area code
/// `05722123456`, service `4001234567` / `12345`.
///
/// Whatever [`normalize_phone`] accepts is accepted (`+86` / `0086` / `86`
/// prefixes, spaces, dashes, brackets, full-width digits); its rules are
/// the errors. An extension (`转8001`) is not part of the number and is
/// dropped. A local number without an area code is an error
/// (`phone.missing_area_code`): the area is not guessed.
pub fn normalize_phone_digits(s: &str) -> Result<String, IdError> {
    normalize_phone(s).map(|p| p.number.chars().filter(char::is_ascii_digit).collect())
}

fn normalize_phone_impl(s: &str, default_area: Option<&str>) -> Result<Phone, IdError> {
    let n = crate::text::normalize_code(s);
    let (main, ext) = split_extension(&n);
    let extension = match ext {
        None => None,
        Some(e) if (1..=6).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_digit()) => Some(e.to_string()),
        Some(_) => return Err(err("phone.extension", s, "extension must be 1–6 digits")),
    };
    let mut plus = false;
    let mut digits = String::with_capacity(main.len());
    for c in main.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if digits.is_empty() && !plus => plus = true,
            ' ' | '-' | '(' | ')' | '.' | '/' | '（' | '）' => {}
            _ => {
                return Err(err("phone.charset", s, format!("unexpected character {c:?}")));
            }
        }
    }
    if digits.is_empty() {
        return Err(err("phone.empty", s, "no digits"));
    }

    // Country code. With a leading `+`, 86 must follow; without, only the
    // unambiguous `0086…` and `86` + 11-digit mobile forms are stripped.
    let mut national: &str = &digits;
    let mut had_country = false;
    if plus {
        national =
            national.strip_prefix("86").ok_or_else(|| err("phone.format", s, "only +86 numbers are supported"))?;
        had_country = true;
    } else if let Some(rest) = national.strip_prefix("0086") {
        national = rest;
        had_country = true;
    } else if national.len() == 13 && national.starts_with("861") {
        national = &national[2..];
        had_country = true;
    }
    // After a country code the trunk 0 is optional; re-add it for landlines.
    let owned;
    // Beijing `+86 10 …` (area 010, 8-digit subscriber) is the one landline
    // whose area code starts with 1.
    let beijing = national.len() == 10 && national.starts_with("10");
    if had_country && !national.starts_with('0') && (!national.starts_with('1') || beijing) {
        owned = format!("0{national}");
        national = &owned;
    }
    // Trunk 0 before a mobile number (dialled from a landline).
    if national.len() == 12 && national.starts_with("01") && !national.starts_with("010") {
        national = &national[1..];
    }

    if national.starts_with('1') {
        if national.len() == 11 {
            let second = national.as_bytes()[1];
            if !(b'3'..=b'9').contains(&second) {
                return Err(err("phone.mobile", s, "mobile numbers start with 13–19"));
            }
            return Ok(Phone { kind: PhoneKind::Mobile, number: national.to_string(), area_code: None, extension });
        }
        if !had_country && matches!(national.len(), 3 | 5) {
            // 110, 119, 120, 122, 12345, 12369, 12315 …
            return Ok(Phone {
                kind: PhoneKind::ShortService,
                number: national.to_string(),
                area_code: None,
                extension,
            });
        }
        return Err(err("phone.mobile", s, format!("mobile numbers have 11 digits, got {}", national.len())));
    }
    if !had_country && national.len() == 5 && national.starts_with("95") {
        return Ok(Phone { kind: PhoneKind::ShortService, number: national.to_string(), area_code: None, extension });
    }
    if national.len() == 10 && (national.starts_with("400") || national.starts_with("800")) {
        return Ok(Phone {
            kind: PhoneKind::NationalService,
            number: national.to_string(),
            area_code: None,
            extension,
        });
    }
    if let Some(rest) = national.strip_prefix('0') {
        let area_len = if rest.starts_with("10") || rest.starts_with('2') { 2 } else { 3 };
        let area_ok = match area_len {
            2 => true,
            _ => rest.len() >= 3 && rest.as_bytes()[0].is_ascii_digit() && rest.as_bytes()[0] >= b'3',
        };
        if !area_ok {
            return Err(err("phone.area_code", s, "area codes are 010, 02x or 0[3-9]xx"));
        }
        let area = format!("0{}", &rest[..area_len.min(rest.len())]);
        let subscriber = rest.get(area_len..).unwrap_or("");
        return landline(s, &area, subscriber, extension);
    }
    if matches!(national.len(), 7 | 8) {
        return match default_area {
            Some(area) => {
                let area = area.trim();
                let ok = area.len() >= 3
                    && area.len() <= 4
                    && area.starts_with('0')
                    && area.bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    return Err(err("phone.area_code", s, format!("bad default area code {area:?}")));
                }
                landline(s, area, national, extension)
            }
            None => Err(err("phone.missing_area_code", s, "local number without an area code (e.g. 0572-)")),
        };
    }
    Err(err("phone.format", s, "not a mobile, landline or service number"))
}

fn landline(s: &str, area: &str, subscriber: &str, extension: Option<String>) -> Result<Phone, IdError> {
    let first_ok = subscriber.as_bytes().first().is_some_and(|b| (b'2'..=b'9').contains(b));
    if !matches!(subscriber.len(), 7 | 8) || !first_ok {
        return Err(err("phone.landline", s, "subscriber numbers have 7–8 digits and start with 2–9"));
    }
    Ok(Phone {
        kind: PhoneKind::Landline,
        number: format!("{area}-{subscriber}"),
        area_code: Some(area.to_string()),
        extension,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        normalize_phone(s).map(|p| p.number).unwrap_or_else(|e| format!("ERR {}", e.rule))
    }

    #[test]
    fn mobiles() {
        for s in [
            "13812345678",
            "+8613812345678",
            "+86 138-1234-5678",
            "008613812345678",
            "8613812345678",
            "013812345678",
            "１３８ １２３４ ５６７８",
            "(+86)13812345678",
        ] {
            assert_eq!(canon(s), "13812345678", "{s}");
        }
        assert_eq!(canon("19912345678"), "19912345678");
        assert_eq!(canon("12812345678"), "ERR phone.mobile");
        assert_eq!(canon("1381234567"), "ERR phone.mobile");
        assert_eq!(canon("138123456789"), "ERR phone.mobile");
    }

    #[test]
    fn landlines() {
        for s in [
            "0572-2123456",
            "0572 2123456",
            "(0572)2123456",
            "05722123456",
            "+86 572 2123456",
            "+86-0572-2123456",
            "0086 572 2123456",
        ] {
            let p = normalize_phone(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.number, "0572-2123456", "{s}");
            assert!(p.is_huzhou_landline());
        }
        assert_eq!(canon("010-12345678"), "ERR phone.landline"); // subscriber starts with 1
        assert_eq!(canon("010-62345678"), "010-62345678");
        assert_eq!(canon("+86 10 6234 5678"), "010-62345678");
        assert_eq!(canon("008610-62345678"), "010-62345678");
        assert_eq!(canon("021 6234 5678"), "021-62345678");
        assert_eq!(canon("0571-87654321"), "0571-87654321");
        let p = normalize_phone("0572-2123456转8001").unwrap();
        assert_eq!(p.extension.as_deref(), Some("8001"));
        assert_eq!(canon("0572-212345"), "ERR phone.landline");
        assert_eq!(canon("0172-2123456"), "ERR phone.area_code");
        assert_eq!(canon("2123456"), "ERR phone.missing_area_code");
        let p = normalize_phone_in_area("2123456", HUZHOU_AREA_CODE).unwrap();
        assert_eq!(p.number, "0572-2123456");
    }

    #[test]
    fn digits_form() {
        let digits = |s: &str| normalize_phone_digits(s).unwrap_or_else(|e| format!("ERR {}", e.rule));
        for (s, want) in [
            ("+86 138-1234-5678", "13812345678"),
            ("１３８ １２３４ ５６７８", "13812345678"),
            ("0086 13812345678", "13812345678"),
            ("0572-2123456", "05722123456"),
            ("+86 572 2123456", "05722123456"),
            ("(0572)２１２３４５６转8001", "05722123456"),
            ("010-62345678", "01062345678"),
            ("400-123-4567", "4001234567"),
            ("12345", "12345"),
            ("2123456", "ERR phone.missing_area_code"),
            ("12812345678", "ERR phone.mobile"),
        ] {
            assert_eq!(digits(s), want, "{s}");
        }
    }

    #[test]
    fn services_and_garbage() {
        assert_eq!(canon("12345"), "12345");
        assert_eq!(canon("110"), "110");
        assert_eq!(canon("95598"), "95598");
        assert_eq!(canon("400-123-4567"), "4001234567");
        assert_eq!(canon(""), "ERR phone.empty");
        assert_eq!(canon("--"), "ERR phone.empty");
        assert_eq!(canon("电话13812345678"), "ERR phone.charset");
        assert_eq!(canon("+1 202 555 0100"), "ERR phone.format");
        assert_eq!(canon("123456789012345"), "ERR phone.mobile");
        assert_eq!(canon("0572-2123456转"), "ERR phone.extension");
    }
}
