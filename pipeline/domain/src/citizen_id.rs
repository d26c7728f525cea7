//! 公民身份号码 (citizen identity number) — GB 11643-1999.
//!
//! Layout (GB 11643-1999 §4, domain.md §3.2): 6-digit address code
//! (GB/T 2260) + 8-digit birth date `YYYYMMDD` + 3-digit sequence code (odd =
//! male, even = female) + 1 check character computed with ISO 7064:1983
//! MOD 11-2 (§5.2). The 15-digit numbers of GB 11643-1989 have a 6-digit
//! `YYMMDD` birth date (all in the 1900s) and no check character.

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::codes;
use crate::error::IdError;
use crate::text::normalize_code;

/// ISO 7064 MOD 11-2 weights Wi = 2^(18−i) mod 11 for positions 1–17.
pub const CITIZEN_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check character for `Σ mod 11` = 0..10 (GB 11643-1999 §5.2).
const CHECK_MAP: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Earliest birth year accepted. The standard's own example
/// `440524188001010014` is born in 1880.
pub const MIN_BIRTH_YEAR: i32 = 1850;
/// Latest birth year accepted (the crate is pure and cannot read the clock;
/// callers that need "not in the future" compare [`CitizenId::birth_date`]).
pub const MAX_BIRTH_YEAR: i32 = 2100;

/// Sex encoded by the parity of the sequence code (GB 11643-1999 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sex {
    /// Odd sequence code.
    Male,
    /// Even sequence code.
    Female,
}

/// A validated 18-character citizen identity number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CitizenId {
    /// The normalised 18-character number (check character `X` upper-case).
    pub number: String,
    /// Positions 1–6: GB/T 2260 address code of the place of first registration.
    pub division: String,
    /// Positions 7–14: date of birth.
    pub birth_date: NaiveDate,
    /// From the parity of positions 15–17.
    pub sex: Sex,
}

/// Computes the MOD 11-2 check character for 17 digits (`None` if `first17`
/// is not exactly 17 ASCII digits).
pub fn citizen_id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17.bytes().zip(CITIZEN_ID_WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    Some(CHECK_MAP[(sum % 11) as usize])
}

fn check_division(s: &str, code: &str) -> Result<(), IdError> {
    if codes::province_name(code).is_none() {
        return Err(IdError::new(
            "citizen_id.division",
            format!("{s:?}: address code {code} does not start with a GB/T 2260 province code"),
        ));
    }
    Ok(())
}

fn birth(s: &str, yyyymmdd: &str) -> Result<NaiveDate, IdError> {
    let bad = |why: &str| IdError::new("citizen_id.birth_date", format!("{s:?}: birth date {yyyymmdd} {why}"));
    let y: i32 = yyyymmdd.get(0..4).and_then(|v| v.parse().ok()).ok_or_else(|| bad("unreadable"))?;
    let m: u32 = yyyymmdd.get(4..6).and_then(|v| v.parse().ok()).ok_or_else(|| bad("unreadable"))?;
    let d: u32 = yyyymmdd.get(6..8).and_then(|v| v.parse().ok()).ok_or_else(|| bad("unreadable"))?;
    let date = NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| bad("does not exist"))?;
    if !(MIN_BIRTH_YEAR..=MAX_BIRTH_YEAR).contains(&date.year()) {
        return Err(bad("is outside 1850–2100"));
    }
    Ok(date)
}

/// Validates an 18-character 公民身份号码 per GB 11643-1999.
///
/// Input is normalised with [`normalize_code`] first (NFKC, whitespace
/// removed, trailing `x` → `X`). Rules, in order:
///
/// | Rule | Clause | Check |
/// |---|---|---|
/// | `citizen_id.legacy_15` | GB 11643-1989 | a 15-digit old number — use [`upgrade_15_to_18`] |
/// | `citizen_id.length` | §4.1 | 18 characters |
/// | `citizen_id.charset` | §4.1 | 17 digits then a digit or `X` |
/// | `citizen_id.division` | §4.2, GB/T 2260 | address code starts with a province code |
/// | `citizen_id.birth_date` | §4.3 | `YYYYMMDD` is a real date in 1850–2100 |
/// | `citizen_id.check_digit` | §5.2 | ISO 7064 MOD 11-2 check character |
pub fn validate_citizen_id(s: &str) -> Result<CitizenId, IdError> {
    let n = normalize_code(s);
    if n.len() == 15 && n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::new(
            "citizen_id.legacy_15",
            format!("{s:?} is a 15-digit GB 11643-1989 number; upgrade it to 18 digits"),
        ));
    }
    let count = n.chars().count();
    if count != 18 {
        return Err(IdError::new("citizen_id.length", format!("{s:?} has {count} characters, expected 18")));
    }
    let b = n.as_bytes();
    if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
        return Err(IdError::new("citizen_id.charset", format!("{s:?}: expected 17 digits followed by a digit or X")));
    }
    let division = &n[0..6];
    check_division(s, division)?;
    let birth_date = birth(s, &n[6..14])?;
    let expected = citizen_id_check_char(&n[0..17]).unwrap_or('?');
    let got = b[17] as char;
    if got != expected {
        return Err(IdError::new(
            "citizen_id.check_digit",
            format!("{s:?}: check character {got:?}, expected {expected:?} (ISO 7064 MOD 11-2)"),
        ));
    }
    let seq_last = b[16] - b'0';
    Ok(CitizenId {
        number: n.clone(),
        division: division.to_string(),
        birth_date,
        sex: if seq_last % 2 == 1 { Sex::Male } else { Sex::Female },
    })
}

/// Upgrades a 15-digit GB 11643-1989 number to the 18-character
/// GB 11643-1999 form: inserts the century `19` before the `YYMMDD` birth
/// date and appends the MOD 11-2 check character.
///
/// Rules: `citizen_id.length` (not 15 characters), `citizen_id.charset`
/// (not all digits), `citizen_id.division`, `citizen_id.birth_date`.
pub fn upgrade_15_to_18(s: &str) -> Result<String, IdError> {
    let n = normalize_code(s);
    if n.chars().count() != 15 {
        return Err(IdError::new(
            "citizen_id.length",
            format!("{s:?} has {} characters, expected 15", n.chars().count()),
        ));
    }
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::new("citizen_id.charset", format!("{s:?}: a 15-digit number has digits only")));
    }
    check_division(s, &n[0..6])?;
    let body = format!("{}19{}", &n[0..6], &n[6..15]);
    birth(s, &body[6..14])?;
    let check = citizen_id_check_char(&body).unwrap_or('?');
    Ok(format!("{body}{check}"))
}

/// Parses either form: validates an 18-character number, or upgrades and
/// then validates a 15-digit one.
pub fn parse_citizen_id(s: &str) -> Result<CitizenId, IdError> {
    let n = normalize_code(s);
    if n.len() == 15 && n.bytes().all(|b| b.is_ascii_digit()) {
        return validate_citizen_id(&upgrade_15_to_18(&n)?);
    }
    validate_citizen_id(&n)
}

/// The one form of a citizen identity number used to match records across
/// departments: the 18-character GB 11643-1999 number.
///
/// Input is normalised with [`normalize_code`] (surrounding and inner
/// whitespace removed, full-width → half-width by NFKC, lower-case `x` →
/// `X`); a 15-digit GB 11643-1989 number is upgraded with
/// [`upgrade_15_to_18`]; the result must then pass every rule of
/// [`validate_citizen_id`]. Anything else is an error with that rule — the
/// number is never repaired or guessed (a wrong check character stays an
/// error, it is not recomputed).
///
/// `１１０１０５ ４９１２３１００２` → `11010519491231002X`.
pub fn normalize_citizen_id(s: &str) -> Result<String, IdError> {
    parse_citizen_id(s).map(|c| c.number)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand computation for the standard's example 11010519491231002X:
    /// digits 1 1 0 1 0 5 1 9 4 9 1 2 3 1 0 0 2 × weights
    /// 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 =
    /// 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167; 167 mod 11 = 2 → 'X'.
    /// 440524188001010014: 28+36+0+25+16+16+2+8+48+0+0+9+0+5+0+0+2 = 195;
    /// 195 mod 11 = 8 → '4'.
    #[test]
    fn standard_examples() {
        assert_eq!(citizen_id_check_char("11010519491231002"), Some('X'));
        assert_eq!(citizen_id_check_char("44052418800101001"), Some('4'));
        let a = validate_citizen_id("11010519491231002X").unwrap();
        assert_eq!(a.division, "110105");
        assert_eq!(a.birth_date, NaiveDate::from_ymd_opt(1949, 12, 31).unwrap());
        assert_eq!(a.sex, Sex::Female); // sequence 002
        let b = validate_citizen_id("440524188001010014").unwrap();
        assert_eq!(b.birth_date, NaiveDate::from_ymd_opt(1880, 1, 1).unwrap());
        assert_eq!(b.sex, Sex::Male); // sequence 001
        // lower-case x and full-width input are normalised
        assert!(validate_citizen_id("11010519491231002x").is_ok());
        assert!(validate_citizen_id("１１０１０５１９４９１２３１００２Ｘ").is_ok());
    }

    #[test]
    fn weights_are_powers_of_two_mod_11() {
        for (i, w) in CITIZEN_ID_WEIGHTS.iter().enumerate() {
            assert_eq!(*w, 2u32.pow(17 - i as u32) % 11);
        }
    }

    /// 110105491231002 (the 1989 form of the standard's example) upgrades to
    /// 11010519491231002X. Huzhou: 330502800101123 → body 33050219800101123:
    /// 21+27+0+25+0+8+2+9+48+0+0+9+0+5+8+8+6 = 176; 176 mod 11 = 0 → '1'.
    #[test]
    fn upgrade() {
        assert_eq!(upgrade_15_to_18("110105491231002").unwrap(), "11010519491231002X");
        assert_eq!(upgrade_15_to_18("330502800101123").unwrap(), "330502198001011231");
        let p = parse_citizen_id("330502800101123").unwrap();
        assert_eq!(p.sex, Sex::Male);
        assert_eq!(p.division, "330502");
        assert_eq!(upgrade_15_to_18("330502800230123").unwrap_err().rule, "citizen_id.birth_date");
        assert_eq!(upgrade_15_to_18("33050280010112").unwrap_err().rule, "citizen_id.length");
        assert_eq!(upgrade_15_to_18("33050280010112A").unwrap_err().rule, "citizen_id.charset");
        assert_eq!(upgrade_15_to_18("990502800101123").unwrap_err().rule, "citizen_id.division");
    }

    #[test]
    fn normalized_form() {
        for s in [
            "11010519491231002X",
            "11010519491231002x",
            " 110105 19491231 002X ",
            "１１０１０５１９４９１２３１００２ｘ",
            "110105491231002",
            "１１０１０５４９１２３１００２",
            "\u{3000}110105491231002\u{FEFF}",
        ] {
            assert_eq!(normalize_citizen_id(s).as_deref(), Ok("11010519491231002X"), "{s:?}");
        }
        for (s, rule) in [
            ("110105194912310021", "citizen_id.check_digit"),
            ("11010519491231002", "citizen_id.length"),
            ("330502800230123", "citizen_id.birth_date"),
            ("990502800101123", "citizen_id.division"),
            ("", "citizen_id.length"),
            ("身份证11010519491231002X", "citizen_id.length"),
        ] {
            assert_eq!(normalize_citizen_id(s).unwrap_err().rule, rule, "{s:?}");
        }
    }

    #[test]
    fn known_bad() {
        for (s, rule) in [
            ("110105491231002", "citizen_id.legacy_15"),
            ("11010519491231002", "citizen_id.length"),
            ("", "citizen_id.length"),
            ("1101051949123100XX", "citizen_id.charset"),
            ("11010519491231002Y", "citizen_id.charset"),
            ("99010519491231002X", "citizen_id.division"),
            ("110105194902300021", "citizen_id.birth_date"),
            ("110105194913310021", "citizen_id.birth_date"),
            ("110105174912310021", "citizen_id.birth_date"),
            ("110105194912310021", "citizen_id.check_digit"),
            ("440524188001010015", "citizen_id.check_digit"),
        ] {
            assert_eq!(validate_citizen_id(s).unwrap_err().rule, rule, "{s}");
        }
    }
}
