//! Code tables: GB/T 2260 administrative divisions (Huzhou and the
//! province level) and the vehicle-plate province abbreviations.
//!
//! Only the Huzhou city/district/county codes are carried in full
//! (domain.md §6.3, all tables agree). For the rest of the country only the
//! two-digit province level is known here, so a six-digit code outside
//! Zhejiang 3305xx is checked structurally only.

use crate::error::IdError;

/// Huzhou division codes, GB/T 2260 (domain.md §6.3).
///
/// `330501 市辖区` is a real GB/T 2260 entry but names no place; payloads that
/// carry it are stale (domain.md §6.3) and [`check_division`] flags them.
pub const HUZHOU_DIVISIONS: &[(&str, &str)] = &[
    ("330500", "湖州市"),
    ("330501", "市辖区"),
    ("330502", "吴兴区"),
    ("330503", "南浔区"),
    ("330521", "德清县"),
    ("330522", "长兴县"),
    ("330523", "安吉县"),
];

/// Code of 湖州市.
pub const HUZHOU_CITY: &str = "330500";
/// The stale "市辖区" code still found in payloads.
pub const HUZHOU_STALE_SHIXIAQU: &str = "330501";

/// Province-level GB/T 2260 codes (first two digits of a division code).
pub const PROVINCES: &[(&str, &str)] = &[
    ("11", "北京市"),
    ("12", "天津市"),
    ("13", "河北省"),
    ("14", "山西省"),
    ("15", "内蒙古自治区"),
    ("21", "辽宁省"),
    ("22", "吉林省"),
    ("23", "黑龙江省"),
    ("31", "上海市"),
    ("32", "江苏省"),
    ("33", "浙江省"),
    ("34", "安徽省"),
    ("35", "福建省"),
    ("36", "江西省"),
    ("37", "山东省"),
    ("41", "河南省"),
    ("42", "湖北省"),
    ("43", "湖南省"),
    ("44", "广东省"),
    ("45", "广西壮族自治区"),
    ("46", "海南省"),
    ("50", "重庆市"),
    ("51", "四川省"),
    ("52", "贵州省"),
    ("53", "云南省"),
    ("54", "西藏自治区"),
    ("61", "陕西省"),
    ("62", "甘肃省"),
    ("63", "青海省"),
    ("64", "宁夏回族自治区"),
    ("65", "新疆维吾尔自治区"),
    ("71", "台湾省"),
    ("81", "香港特别行政区"),
    ("82", "澳门特别行政区"),
];

/// Plate province abbreviations (GA 36-2018 §5; one per provincial-level
/// division) with their GB/T 2260 province code.
pub const PLATE_PROVINCES: &[(char, &str)] = &[
    ('京', "11"),
    ('津', "12"),
    ('冀', "13"),
    ('晋', "14"),
    ('蒙', "15"),
    ('辽', "21"),
    ('吉', "22"),
    ('黑', "23"),
    ('沪', "31"),
    ('苏', "32"),
    ('浙', "33"),
    ('皖', "34"),
    ('闽', "35"),
    ('赣', "36"),
    ('鲁', "37"),
    ('豫', "41"),
    ('鄂', "42"),
    ('湘', "43"),
    ('粤', "44"),
    ('桂', "45"),
    ('琼', "46"),
    ('渝', "50"),
    ('川', "51"),
    ('贵', "52"),
    ('云', "53"),
    ('藏', "54"),
    ('陕', "61"),
    ('甘', "62"),
    ('青', "63"),
    ('宁', "64"),
    ('新', "65"),
];

/// Zhejiang plate authority letters (发牌机关代号). Huzhou is 浙E (all sources
/// agree, domain.md §3.3); the others are the commonly published list \[S\].
pub const ZHEJIANG_PLATE_CITIES: &[(char, &str)] = &[
    ('A', "杭州市"),
    ('B', "宁波市"),
    ('C', "温州市"),
    ('D', "绍兴市"),
    ('E', "湖州市"),
    ('F', "嘉兴市"),
    ('G', "金华市"),
    ('H', "衢州市"),
    ('J', "台州市"),
    ('K', "丽水市"),
    ('L', "舟山市"),
];

/// Name of a Huzhou division code (GB/T 2260), e.g. `"330502"` → `"吴兴区"`.
pub fn division_name(code: &str) -> Option<&'static str> {
    let code = code.trim();
    HUZHOU_DIVISIONS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// `true` for the Huzhou city code and its district/county codes.
pub fn is_huzhou_division(code: &str) -> bool {
    division_name(code).is_some()
}

/// Province name for a two-digit GB/T 2260 province code or any longer
/// division code starting with one, e.g. `"33"` / `"330502"` → `"浙江省"`.
pub fn province_name(code: &str) -> Option<&'static str> {
    let p = code.trim().get(0..2)?;
    PROVINCES.iter().find(|(c, _)| *c == p).map(|(_, n)| *n)
}

/// GB/T 2260 province code of a plate province abbreviation, e.g. `'浙'` → `"33"`.
pub fn plate_province_code(abbr: char) -> Option<&'static str> {
    PLATE_PROVINCES.iter().find(|(c, _)| *c == abbr).map(|(_, p)| *p)
}

/// City issuing a Zhejiang plate with authority letter `letter`
/// (`'E'` → `"湖州市"`).
pub fn zhejiang_plate_city(letter: char) -> Option<&'static str> {
    ZHEJIANG_PLATE_CITIES.iter().find(|(c, _)| *c == letter).map(|(_, n)| *n)
}

/// Validates an administrative division code (GB/T 2260 six digits, or the
/// nine/twelve-digit township/village codes of the 统计用区划代码 whose first
/// six digits are a GB/T 2260 code).
///
/// Rules:
/// * `division.format` — not 6, 9 or 12 ASCII digits;
/// * `division.province` — the first two digits are not a province code;
/// * `division.unknown` — a 3305xx code that is not in [`HUZHOU_DIVISIONS`];
/// * `division.stale` — `330501 市辖区`, a placeholder that names no place.
///
/// Codes outside Huzhou pass when structurally valid (no national table is
/// embedded).
pub fn check_division(code: &str) -> Result<&str, IdError> {
    let c = code.trim();
    if !matches!(c.len(), 6 | 9 | 12) || !c.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::new("division.format", format!("{code:?} is not a 6-, 9- or 12-digit division code")));
    }
    if province_name(c).is_none() {
        return Err(IdError::new(
            "division.province",
            format!("{code:?}: {:?} is not a GB/T 2260 province code", &c[0..2]),
        ));
    }
    let six = &c[0..6];
    if six.starts_with("3305") {
        if six == HUZHOU_STALE_SHIXIAQU {
            return Err(IdError::new(
                "division.stale",
                format!("{code:?}: 330501 市辖区 is a placeholder; use the district code"),
            ));
        }
        if !is_huzhou_division(six) {
            return Err(IdError::new("division.unknown", format!("{code:?}: {six} is not a Huzhou division code")));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huzhou_table() {
        assert_eq!(division_name("330500"), Some("湖州市"));
        assert_eq!(division_name("330502"), Some("吴兴区"));
        assert_eq!(division_name("330503"), Some("南浔区"));
        assert_eq!(division_name("330521"), Some("德清县"));
        assert_eq!(division_name("330522"), Some("长兴县"));
        assert_eq!(division_name("330523"), Some("安吉县"));
        assert_eq!(division_name("330504"), None);
        assert_eq!(province_name("330502"), Some("浙江省"));
        assert_eq!(plate_province_code('浙'), Some("33"));
        assert_eq!(zhejiang_plate_city('E'), Some("湖州市"));
        assert_eq!(PLATE_PROVINCES.len(), 31);
        // Every plate province maps to a real province code.
        for (_, p) in PLATE_PROVINCES {
            assert!(province_name(p).is_some());
        }
    }

    #[test]
    fn division_rules() {
        assert!(check_division("330502").is_ok());
        assert!(check_division("330502001").is_ok());
        assert!(check_division("110105").is_ok());
        assert_eq!(check_division("330501").unwrap_err().rule, "division.stale");
        assert_eq!(check_division("330599").unwrap_err().rule, "division.unknown");
        assert_eq!(check_division("990000").unwrap_err().rule, "division.province");
        assert_eq!(check_division("33050").unwrap_err().rule, "division.format");
        assert_eq!(check_division("33O502").unwrap_err().rule, "division.format");
    }
}
