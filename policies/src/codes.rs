//! Department codes, read from the code table `schemas/codes/department.toml`
//! (compiled in) — the one list of departments; this crate keeps no copy.

use std::sync::OnceLock;

use serde::Deserialize;

/// The department code table, as shipped in `schemas/codes/`.
const DEPARTMENT_TABLE: &str = include_str!("../../schemas/codes/department.toml");

#[derive(Deserialize)]
struct CodeTable {
    codes: Vec<Code>,
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

/// The codes of a code-table file (`codes = [{ code = "…", … }, …]`), in file order.
fn parse_codes(text: &str) -> Result<Vec<String>, toml::de::Error> {
    Ok(toml::from_str::<CodeTable>(text)?.codes.into_iter().map(|c| c.code).collect())
}

/// Department codes (the casbin domains), in the order of
/// `schemas/codes/department.toml`.
pub fn departments() -> &'static [String] {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    // The file is compiled in and checked by the tests below, so this cannot
    // fail in a built binary.
    LIST.get_or_init(|| parse_codes(DEPARTMENT_TABLE).unwrap_or_default())
}

/// Is `code` a department code?
pub fn is_department(code: &str) -> bool {
    departments().iter().any(|d| d == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departments_come_from_the_code_table() {
        let parsed = parse_codes(DEPARTMENT_TABLE).expect("department.toml parses");
        assert_eq!(departments(), parsed.as_slice());
        assert!(departments().len() >= 12);
        for d in ["police", "ecology", "market", "hotline_12345", "eco_police_office"] {
            assert!(is_department(d), "{d}");
        }
        assert!(!is_department("moon_base"));
        assert!(!is_department("*"));
    }
}
