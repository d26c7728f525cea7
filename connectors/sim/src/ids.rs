//! Chinese identifier check characters, implemented from the standards (domain.md §3.1, §3.2).
//!
//! The simulator uses these to *generate* valid (and deliberately invalid) identifiers; they are
//! public so tests and demos can verify what the simulated sources serve without trusting the
//! generator.

/// USCC character set (GB 32100-2015): 31 characters, no I, O, S, V, Z. A character's value is its index.
pub const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// USCC weights for positions 1–17 (GB 32100-2015).
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// GB 11714 organisation-code weights for its first 8 characters.
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// GB 11643-1999 (ISO 7064 MOD 11-2) weights for the first 17 digits of a citizen ID.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// GB 11643-1999 check characters indexed by `Σ mod 11`.
const ID_CHECK: &[u8; 11] = b"10X98765432";

fn uscc_value(c: u8) -> Option<u32> {
    USCC_ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// The USCC check character (position 18) for the first 17 characters, per GB 32100-2015:
/// `(31 − Σ(value·weight) mod 31) mod 31`, mapped back through [`USCC_ALPHABET`].
/// `None` when `first17` is not 17 characters of the USCC alphabet.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in b.iter().zip(USCC_WEIGHTS) {
        sum += uscc_value(*c)? * w;
    }
    let idx = ((31 - sum % 31) % 31) as usize;
    USCC_ALPHABET.get(idx).map(|&c| c as char)
}

/// The GB 11714 organisation-code check character for its first 8 characters
/// (alphabet `0-9A-Z` valued 0–35, weights `3,7,9,10,5,8,4,2`, `c = 11 − Σ mod 11`,
/// 10 → `X`, 11 → `0`). `None` when the input is not 8 characters of `0-9A-Z`.
pub fn org_code_check_char(first8: &str) -> Option<char> {
    let b = first8.as_bytes();
    if b.len() != 8 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in b.iter().zip(ORG_WEIGHTS) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return None,
        };
        sum += v * w;
    }
    match 11 - sum % 11 {
        10 => Some('X'),
        11 => Some('0'),
        d => char::from_digit(d, 10),
    }
}

/// Whether an 18-character USCC passes BOTH checks of GB 32100-2015: the final check character
/// and the GB 11714 check character embedded at position 17 (positions 9–17 are the organisation code).
pub fn uscc_is_valid(code: &str) -> bool {
    uscc_outer_check_ok(code) && uscc_org_check_ok(code)
}

/// Whether only the final (position 18) USCC check character is right.
pub fn uscc_outer_check_ok(code: &str) -> bool {
    code.len() == 18 && code.is_ascii() && uscc_check_char(&code[..17]).is_some_and(|c| code[17..].starts_with(c))
}

/// Whether only the embedded GB 11714 organisation-code check (position 17) is right.
pub fn uscc_org_check_ok(code: &str) -> bool {
    code.len() == 18 && code.is_ascii() && org_code_check_char(&code[8..16]).is_some_and(|c| code[16..].starts_with(c))
}

/// The GB 11643-1999 check character for the first 17 digits of a citizen ID
/// (weights `7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2`, `Σ mod 11` → `1 0 X 9 8 7 6 5 4 3 2`).
/// `None` when the input is not 17 ASCII digits.
pub fn citizen_id_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b.iter().zip(ID_WEIGHTS).map(|(c, w)| u32::from(c - b'0') * w).sum();
    ID_CHECK.get((sum % 11) as usize).map(|&c| c as char)
}

/// Whether an 18-character citizen ID has 17 digits and the right check character
/// (upper-case `X`; this does not validate the embedded birth date or address code).
pub fn citizen_id_is_valid(id: &str) -> bool {
    id.len() == 18 && id.is_ascii() && citizen_id_check_char(&id[..17]).is_some_and(|c| id[17..].starts_with(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uscc_vectors_from_domain_md() {
        for code in [
            "91350200776049653A",
            "91440101MA5CJQ4N59",
            "913502000728319549",
            "123502001549897397",
            "9135021359498494XQ",
        ] {
            assert!(uscc_is_valid(code), "{code} should be valid");
        }
        // Hard-coded "exception" in a public validator that in fact fails (check char is 9).
        assert!(!uscc_is_valid("91350203M0001QAY9B"));
        assert_eq!(uscc_check_char("91350203M0001QAY9"), Some('9'));
        assert!(!uscc_is_valid("short"));
        assert!(!uscc_is_valid("91350200776049653I"));
    }

    #[test]
    fn citizen_id_vectors_from_domain_md() {
        assert!(citizen_id_is_valid("11010519491231002X"));
        assert!(citizen_id_is_valid("440524188001010014"));
        assert!(!citizen_id_is_valid("440524188001010015"));
        assert!(!citizen_id_is_valid("11010519491231002x"));
        assert!(!citizen_id_is_valid("1101051949123100"));
    }
}
