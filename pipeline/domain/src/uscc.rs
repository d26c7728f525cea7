//! 统一社会信用代码 (unified social credit code, USCC) — GB 32100-2015
//! 《法人和其他组织统一社会信用代码编码规则》, with the embedded organisation
//! code checked per GB 11714-1997 《全国组织机构代码编制规则》.
//!
//! Layout (GB 32100-2015 §4, domain.md §3.1):
//!
//! | Pos. | Content |
//! |---|---|
//! | 1 | 登记管理部门代码 (registration department) |
//! | 2 | 机构类别代码 (organisation type) |
//! | 3–8 | 登记管理机关行政区划码 (GB/T 2260) |
//! | 9–17 | 主体标识码 = 组织机构代码 (GB 11714, own check character at 17) |
//! | 18 | 校验码 (GB 32100-2015 §5, weights mod 31) |

use serde::Serialize;

use crate::codes;
use crate::error::IdError;
use crate::text::normalize_code;

/// The 31-character USCC alphabet (GB 32100-2015 §5, table 2): digits and
/// upper-case letters without I, O, S, V, Z. A character's value is its index.
pub const USCC_CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Position weights Wi for positions 1–17 (GB 32100-2015 §5: Wi = 3^(i−1) mod 31).
pub const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Weights of the first eight characters of a GB 11714 organisation code.
pub const ORG_CODE_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// A USCC that passed every rule of [`validate_uscc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uscc {
    /// The normalised 18-character code.
    pub code: String,
    /// Position 1: registration department code.
    pub department: char,
    /// Position 2: organisation type code.
    pub org_type: char,
    /// Positions 3–8: GB/T 2260 code of the registering authority's area.
    pub division: String,
    /// Positions 9–17: the GB 11714 organisation code (with its check char).
    pub org_code: String,
}

impl Uscc {
    /// `91…`: an enterprise registered with 工商/市场监管.
    pub fn is_enterprise(&self) -> bool {
        self.department == '9' && self.org_type == '1'
    }
    /// `92…`: an individual business (个体工商户).
    pub fn is_individual_business(&self) -> bool {
        self.department == '9' && self.org_type == '2'
    }
    /// Name of the registration department (GB 32100-2015 Appendix A, with
    /// later additions A and N), if known.
    pub fn department_name(&self) -> Option<&'static str> {
        department_name(self.department)
    }
}

/// Registration-department names, GB 32100-2015 Appendix A (表 A.1).
///
/// `1 5 9 Y` are corroborated by several sources (domain.md §3.1 \[S\]); the
/// rest follow the published appendix and its amendments (A = 中央军委改革和
/// 编制办公室, N = 农业) and are accepted leniently.
pub fn department_name(c: char) -> Option<&'static str> {
    Some(match c {
        '1' => "机构编制",
        '2' => "外交",
        '3' => "司法行政",
        '4' => "文化",
        '5' => "民政",
        '6' => "旅游",
        '7' => "宗教",
        '8' => "工会",
        '9' => "工商/市场监管",
        'A' => "中央军委改革和编制办公室",
        'N' => "农业",
        'Y' => "其他",
        _ => return None,
    })
}

/// Allowed organisation-type codes for a department (GB 32100-2015 表 A.1).
/// Strict for the well-documented departments 1, 5, 9 and Y; other known
/// departments accept `1`–`9`.
fn org_type_ok(dept: char, t: char) -> bool {
    match dept {
        '1' => matches!(t, '1' | '2' | '3' | '9'),
        '5' => matches!(t, '1' | '2' | '3' | '9'),
        '9' => matches!(t, '1' | '2' | '3'),
        'Y' => t == '1',
        _ => t.is_ascii_digit() && t != '0',
    }
}

fn uscc_value(c: char) -> Option<u32> {
    USCC_CHARSET.find(c).map(|i| i as u32)
}

/// Computes the GB 32100-2015 check character for the first 17 characters.
/// Returns `None` if `first17` is not 17 characters of [`USCC_CHARSET`].
pub fn uscc_check_char(first17: &str) -> Option<char> {
    if first17.chars().count() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in first17.chars().zip(USCC_WEIGHTS) {
        sum += uscc_value(c)? * w;
    }
    let idx = (31 - sum % 31) % 31;
    USCC_CHARSET.chars().nth(idx as usize)
}

/// Computes the GB 11714 check character for the first 8 characters of an
/// organisation code (`0-9A-Z`, values 0–35): `C9 = 11 − (Σ Ci·Wi mod 11)`,
/// with 10 → `X` and 11 → `0`.
pub fn org_code_check_char(first8: &str) -> Option<char> {
    if first8.chars().count() != 8 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in first8.chars().zip(ORG_CODE_WEIGHTS) {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return None,
        };
        sum += v * w;
    }
    Some(match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        d => char::from_digit(d, 10)?,
    })
}

/// Validates a stand-alone GB 11714 organisation code (组织机构代码): nine
/// characters, optionally written `XXXXXXXX-X`. Returns the code without the
/// hyphen. Rules: `org_code.length`, `org_code.charset`, `org_code.check_digit`.
pub fn validate_org_code(s: &str) -> Result<String, IdError> {
    let n = normalize_code(s);
    let compact: String = if n.chars().count() == 10 && n.chars().nth(8) == Some('-') {
        n.chars().filter(|c| *c != '-').collect()
    } else {
        n
    };
    if compact.chars().count() != 9 {
        return Err(IdError::new(
            "org_code.length",
            format!("{s:?} has {} characters, expected 9", compact.chars().count()),
        ));
    }
    if !compact.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
        return Err(IdError::new("org_code.charset", format!("{s:?}: only 0-9 and A-Z are allowed")));
    }
    let expected = org_code_check_char(&compact[0..8]);
    let got = compact.chars().nth(8);
    if expected != got {
        return Err(IdError::new(
            "org_code.check_digit",
            format!("{s:?}: check character {got:?}, expected {expected:?} (GB 11714)"),
        ));
    }
    Ok(compact)
}

/// Validates a 统一社会信用代码 per GB 32100-2015.
///
/// The input is first normalised with [`normalize_code`] (NFKC, whitespace
/// removed, upper-cased), so full-width or lower-case input is accepted. The
/// rules are checked in this order and the first failure is returned:
///
/// | Rule | Clause | Check |
/// |---|---|---|
/// | `uscc.length` | §4 | exactly 18 characters |
/// | `uscc.charset` | §5 表 2 | every character in [`USCC_CHARSET`] (no I O S V Z) |
/// | `uscc.department` | 附录 A | position 1 is a registration-department code |
/// | `uscc.org_type` | 附录 A | position 2 is a type code valid for that department |
/// | `uscc.division` | §4.3, GB/T 2260 | positions 3–8 are digits with a valid province prefix (or `10` for central registrations) |
/// | `uscc.check_digit` | §5 | position 18 = `(31 − Σ value·Wi mod 31) mod 31` |
/// | `uscc.org_code_check` | §4.4, GB 11714 | position 17 is the organisation code's own check character |
///
/// The overall check digit is tested before the embedded organisation-code
/// check because it covers all 17 positions: a typo anywhere shows up as
/// `uscc.check_digit`, while `uscc.org_code_check` alone indicates a code
/// whose check character was computed over an invalid organisation code.
pub fn validate_uscc(s: &str) -> Result<Uscc, IdError> {
    let code = normalize_code(s);
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 18 {
        return Err(IdError::new("uscc.length", format!("{s:?} has {} characters, expected 18", chars.len())));
    }
    if let Some((i, c)) = chars.iter().enumerate().find(|(_, c)| uscc_value(**c).is_none()) {
        return Err(IdError::new(
            "uscc.charset",
            format!("{s:?}: character {c:?} at position {} is not in the GB 32100 alphabet (no I, O, S, V, Z)", i + 1),
        ));
    }
    let (dept, typ) = (chars[0], chars[1]);
    if department_name(dept).is_none() {
        return Err(IdError::new("uscc.department", format!("{s:?}: {dept:?} is not a registration-department code")));
    }
    if !org_type_ok(dept, typ) {
        return Err(IdError::new(
            "uscc.org_type",
            format!("{s:?}: {typ:?} is not an organisation type of department {dept:?}"),
        ));
    }
    let division: String = chars[2..8].iter().collect();
    let province_ok = codes::province_name(&division).is_some() || division.starts_with("10");
    if !division.bytes().all(|b| b.is_ascii_digit()) || !province_ok {
        return Err(IdError::new(
            "uscc.division",
            format!("{s:?}: positions 3–8 {division:?} are not a GB/T 2260 division code"),
        ));
    }
    let first17: String = chars[0..17].iter().collect();
    let expected = uscc_check_char(&first17);
    if expected != Some(chars[17]) {
        return Err(IdError::new(
            "uscc.check_digit",
            format!(
                "{s:?}: check character {:?}, expected {:?} (GB 32100-2015 §5)",
                chars[17],
                expected.unwrap_or('?')
            ),
        ));
    }
    let org_code: String = chars[8..17].iter().collect();
    let org_expected = org_code_check_char(&org_code[0..8]);
    if org_expected != Some(chars[16]) {
        return Err(IdError::new(
            "uscc.org_code_check",
            format!(
                "{s:?}: organisation code {org_code} has check character {:?}, expected {:?} (GB 11714)",
                chars[16],
                org_expected.unwrap_or('?')
            ),
        ));
    }
    Ok(Uscc { code, department: dept, org_type: typ, division, org_code })
}

/// The one form of a 统一社会信用代码 used to match records across
/// departments: [`normalize_code`] (whitespace removed, full-width →
/// half-width by NFKC, upper-cased), which must then have the shape of a
/// code — 18 characters of [`USCC_CHARSET`] (rules `uscc.length`,
/// `uscc.charset`).
///
/// The check characters are **not** verified here: a code failing GB 32100
/// is still the identifier the department registered, and
/// [`validate_uscc`] (SQL `check('uscc', …)`) flags it. Nothing is
/// repaired (`O` is not read as `0`).
pub fn normalize_uscc(s: &str) -> Result<String, IdError> {
    let code = normalize_code(s);
    let count = code.chars().count();
    if count != 18 {
        return Err(IdError::new("uscc.length", format!("{s:?} has {count} characters, expected 18")));
    }
    if let Some(c) = code.chars().find(|c| uscc_value(*c).is_none()) {
        return Err(IdError::new(
            "uscc.charset",
            format!("{s:?}: character {c:?} is not in the GB 32100 alphabet (no I, O, S, V, Z)"),
        ));
    }
    Ok(code)
}

/// The GB 11714 organisation code embedded in a valid USCC: characters
/// 9–17 (1-based, GB 32100-2015 §4.4), nine characters without a hyphen.
/// A stand-alone organisation code read with [`validate_org_code`]
/// (`XXXXXXXX-X` or `XXXXXXXXX`) equals it exactly when both name the same
/// organisation, so the two can be joined.
///
/// The USCC must pass [`validate_uscc`] (its rule is returned otherwise):
/// the organisation code of a mistyped USCC would link the wrong unit.
///
/// `91350200776049653A` → `776049653`.
pub fn uscc_org_code(uscc: &str) -> Result<String, IdError> {
    validate_uscc(uscc).map(|u| u.org_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// domain.md §3.1 \[V\]: pass both the USCC and the embedded GB 11714 check.
    const GOOD: &[&str] =
        &["91350200776049653A", "91440101MA5CJQ4N59", "913502000728319549", "123502001549897397", "9135021359498494XQ"];

    #[test]
    fn known_good() {
        for c in GOOD {
            let u = validate_uscc(c).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(&u.code, c);
        }
        let u = validate_uscc("91440101MA5CJQ4N59").unwrap();
        assert!(u.is_enterprise());
        assert_eq!(u.division, "440101");
        assert_eq!(u.org_code, "MA5CJQ4N5");
        assert_eq!(u.department_name(), Some("工商/市场监管"));
        // Full-width and lower-case input is normalised first.
        assert!(validate_uscc("９１４４０１０１ｍａ５ｃｊｑ４ｎ５９").is_ok());
    }

    #[test]
    fn weights_are_powers_of_three_mod_31() {
        let mut w = 1u32;
        for expected in USCC_WEIGHTS {
            assert_eq!(w, expected);
            w = w * 3 % 31;
        }
    }

    /// Hand computation for 91350200776049653A (GB 32100-2015 §5):
    /// values 9 1 3 5 0 2 0 0 7 7 6 0 4 9 6 5 3 times weights
    /// 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 =
    /// 9+3+27+135+0+52+0+0+140+203+150+0+32+216+60+150+84 = 1261;
    /// 1261 mod 31 = 21; 31 − 21 = 10 → 'A'.
    #[test]
    fn hand_computed_check() {
        assert_eq!(uscc_check_char("91350200776049653"), Some('A'));
        // GB 11714 for 77604965: 7·3+7·7+6·9+0·10+4·5+9·8+6·4+5·2 =
        // 21+49+54+0+20+72+24+10 = 250; 250 mod 11 = 8; 11 − 8 = 3 → '3'.
        assert_eq!(org_code_check_char("77604965"), Some('3'));
        // MA5CJQ4N: M=22 A=10 5 C=12 J=19 Q=26 4 N=23:
        // 66+70+45+120+95+208+16+46 = 666; 666 mod 11 = 6; 11 − 6 = 5 → '5'.
        assert_eq!(org_code_check_char("MA5CJQ4N"), Some('5'));
        assert_eq!(validate_org_code("77604965-3"), Ok("776049653".to_string()));
        assert_eq!(validate_org_code("776049654").unwrap_err().rule, "org_code.check_digit");
    }

    #[test]
    fn normalized_form_and_org_code() {
        for s in ["91350200776049653A", " 9135 0200 7760 4965 3a ", "９１３５０２００７７６０４９６５３ａ"]
        {
            assert_eq!(normalize_uscc(s).as_deref(), Ok("91350200776049653A"), "{s:?}");
        }
        // A wrong check character is kept (flagged elsewhere), not repaired.
        assert_eq!(normalize_uscc("91350203m0001qay9b").as_deref(), Ok("91350203M0001QAY9B"));
        assert_eq!(normalize_uscc("9135020077604965").unwrap_err().rule, "uscc.length");
        assert_eq!(normalize_uscc("9135020O776049653A").unwrap_err().rule, "uscc.charset");
        assert_eq!(normalize_uscc("").unwrap_err().rule, "uscc.length");

        assert_eq!(uscc_org_code("91350200776049653A").as_deref(), Ok("776049653"));
        assert_eq!(uscc_org_code("９１４４０１０１ｍａ５ｃｊｑ４ｎ５９").as_deref(), Ok("MA5CJQ4N5"));
        assert_eq!(uscc_org_code("91350203M0001QAY9B").unwrap_err().rule, "uscc.check_digit");
        // The organisation code, written either way, links to its USCC.
        for org in ["77604965-3", "776049653", "７７６０４９６５－３"] {
            assert_eq!(validate_org_code(org), uscc_org_code("91350200776049653A"), "{org}");
        }
    }

    #[test]
    fn known_bad() {
        // domain.md §3.1: hard-coded "exception" in a public validator; the
        // computed check character is '9'.
        let e = validate_uscc("91350203M0001QAY9B").unwrap_err();
        assert_eq!(e.rule, "uscc.check_digit");
        assert_eq!(uscc_check_char("91350203M0001QAY9"), Some('9'));

        let cases = [
            ("91350200776049653", "uscc.length"),
            ("91350200776049653AA", "uscc.length"),
            ("", "uscc.length"),
            ("9135020077604965SA", "uscc.charset"),
            ("91350200776049653Z", "uscc.charset"),
            ("Z1350200776049653A", "uscc.charset"),
            ("B1350200776049653A", "uscc.department"),
            ("94350200776049653A", "uscc.org_type"),
            ("91A50200776049653A", "uscc.division"),
            ("91990200776049653A", "uscc.division"),
            ("91350200776049653B", "uscc.check_digit"),
            ("91350200776049663A", "uscc.check_digit"),
        ];
        for (c, rule) in cases {
            assert_eq!(validate_uscc(c).unwrap_err().rule, rule, "{c}");
        }
    }

    #[test]
    fn org_code_rule_is_separate() {
        // Break the embedded org-code check character (pos 17: 3 → 4) and
        // recompute the USCC check so that only GB 11714 fails.
        let body = "91350200776049654";
        let check = uscc_check_char(body).unwrap();
        let code = format!("{body}{check}");
        assert_eq!(validate_uscc(&code).unwrap_err().rule, "uscc.org_code_check");
    }
}
