//! Field normalization before matching, per identifier type (issue 13,
//! item 1): a 15-digit citizen ID and its 18-digit form compare equal,
//! full-width digits and spaces never cost a match. Values that do not
//! validate (a citizen ID with a bad check digit) are dropped from the
//! comparison — never guessed — and the caller keeps them flagged.
//!
//! The field names are the model's (`schemas/resolution/person.toml`):
//! `citizen_id`, `mobile`/`landline` (from `phone`), `name`, `birth_date`,
//! `address`, `uscc`.

use std::collections::BTreeMap;

use lianqin_domain::normalize_text;
use lianqin_domain::text::normalize_code;

/// A citizen ID in its 18-character form (15-digit numbers upgraded),
/// `None` when it does not validate.
pub fn citizen_id(s: &str) -> Option<String> {
    lianqin_domain::citizen_id::parse_citizen_id(s).ok().map(|c| c.number)
}

/// Digits of a phone number in its canonical form (mobile: 11 digits, any
/// `+86`/`0086` prefix dropped; landline: area code + number; a bare local
/// number gets Huzhou's `0572`), `None` when it is not a phone number.
pub fn phone(s: &str) -> Option<String> {
    let p = lianqin_domain::phone::normalize_phone_in_area(s, lianqin_domain::phone::HUZHOU_AREA_CODE).ok()?;
    let digits: String = p.number.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// A name: NFKC, no spaces or middle dots (`张 三`, `阿依·古丽`).
pub fn name(s: &str) -> Option<String> {
    let n: String = normalize_text(s).chars().filter(|c| !c.is_whitespace() && !matches!(c, '·' | '•' | '.')).collect();
    (!n.is_empty()).then_some(n)
}

/// An address: NFKC, no spaces, without the leading province and city
/// (`浙江省湖州市吴兴区…` and `吴兴区…` compare equal).
pub fn address(s: &str) -> Option<String> {
    let mut a: String = normalize_text(s).chars().filter(|c| !c.is_whitespace()).collect();
    for p in ["浙江省", "浙江", "湖州市", "湖州"] {
        if let Some(rest) = a.strip_prefix(p) {
            a = rest.to_string();
        }
    }
    (!a.is_empty()).then_some(a)
}

/// Words after a place that only say "around it" (`凤凰路88号附近`).
const AROUND: &[&str] = &["附近", "旁边", "周边", "一带", "对面", "门口", "旁", "处"];

/// Endings of a landmark that names a site without a house number (a river
/// section, a bridge, a pond): `义皋村东苕溪河段`.
const LANDMARKS: &[&str] =
    &["河段", "桥", "港", "溪", "湖", "山", "塘", "漾", "浜", "闸", "码头", "渡口", "水库", "排口", "闸口"];

/// The end (byte offset) of the last administrative part in `s`: a
/// district or county (`区`, `县`), a town (`镇`, `乡`, `街道`) or a
/// village (`村`, when `village`). A street ending in `街` is not `街道`.
fn after_admin(s: &str, village: bool) -> usize {
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let next = i + c.len_utf8();
        let admin = match c {
            '区' | '县' | '镇' | '乡' => true,
            '村' => village,
            '道' => s[..i].ends_with('街'),
            _ => false,
        };
        if admin {
            end = next;
        }
    }
    end
}

/// The site an address names, as joint matters compare it (issue 13,
/// item 4): the road and house number (`凤凰路88号`; in a village without
/// roads, the village and its house number, `义皋村12号`), or a landmark without
/// a number with its village (`义皋村东苕溪河段`); `None` for a vague place
/// (`织里镇义皋村附近`, a town, nothing).
///
/// Province, city, district, county and town are dropped, and so are the
/// building and room after the number (`88号3幢201室`) and words like
/// `附近`; `#` is `号`, digits may be full-width. Which district an address
/// names is [`lianqin_domain::division_from_address`]'s business; the
/// caller compares it beside the site.
pub fn site(s: &str) -> Option<String> {
    site_in(&address(s)?).map(|(place, number)| match number {
        Some(n) => format!("{place}{n}号"),
        None => place,
    })
}

/// [`site`] in parts, of an address already in [`address`]'s form: the
/// road and its house number, or the landmark and no number.
pub fn site_in(a: &str) -> Option<(String, Option<u32>)> {
    let a = a.replace('#', "号");
    // A road and house number: the digits just before the first `号`.
    if let Some(hao) = a.find('号') {
        let head = &a[..hao];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let road_part = &head[..head.len() - digits];
            let mut road = &road_part[after_admin(road_part, true)..];
            // A house in a village (`义皋村12号`): the village is the road.
            if road.is_empty() && road_part.ends_with('村') {
                road = &road_part[after_admin(road_part, false)..];
            }
            let number: u32 = head[head.len() - digits..].parse().ok()?;
            return (road.chars().count() >= 2).then(|| (road.to_string(), Some(number)));
        }
    }
    let mut place = a.as_str();
    while let Some(p) = AROUND.iter().find_map(|w| place.strip_suffix(w)) {
        place = p;
    }
    let landmark = &place[after_admin(place, false)..];
    let named = LANDMARKS.iter().any(|l| landmark.ends_with(l));
    (named && landmark.chars().count() >= 3).then(|| (landmark.to_string(), None))
}

/// The town (`镇`, `乡` or `街道`) an address names, if it names one:
/// `织里镇` in `湖州市吴兴区织里镇凤凰路88号`. Two sites of one road and
/// number in different towns are different places (many towns have a
/// `人民路`).
pub fn town(s: &str) -> Option<String> {
    town_in(&address(s)?)
}

/// [`town`] of an address already in [`address`]'s form.
pub fn town_in(a: &str) -> Option<String> {
    let mut rest = a;
    if let Some((i, c)) = rest.char_indices().take(4).find(|(_, c)| matches!(c, '区' | '县')) {
        rest = &rest[i + c.len_utf8()..];
    }
    let end = rest.char_indices().find_map(|(i, c)| match c {
        '镇' | '乡' => Some(i + c.len_utf8()),
        '道' if rest[..i].ends_with('街') => Some(i + c.len_utf8()),
        _ => None,
    })?;
    let t = &rest[..end];
    (2..=6).contains(&t.chars().count()).then(|| t.to_string())
}

/// Administrative prefixes of a registered enterprise name.
const NAME_PREFIXES: &[&str] = &[
    "浙江省",
    "浙江",
    "湖州市",
    "湖州",
    "吴兴区",
    "南浔区",
    "德清县",
    "长兴县",
    "安吉县",
    "吴兴",
    "南浔",
    "德清",
    "长兴",
    "安吉",
];

/// Legal forms, longest first (`厂` is how people name a works).
const LEGAL_FORMS: &[&str] = &["股份有限公司", "有限责任公司", "有限公司", "公司", "厂"];

/// An enterprise's name as resolution compares it: NFKC, no spaces, the
/// administrative prefix (`湖州`, `湖州市吴兴区`, `浙江`) and the legal form
/// (`有限公司`, `股份有限公司`, `公司`, `厂`) dropped, a branch kept
/// (`湖州鑫达化工有限公司吴兴分公司` → `鑫达化工吴兴分公司`, another legal unit).
/// `鑫达化工`, `鑫达化工厂` and `湖州市吴兴区鑫达化工有限公司` compare equal.
pub fn unit_name(s: &str) -> Option<String> {
    let mut n: String = normalize_text(s).chars().filter(|c| !c.is_whitespace()).collect();
    while let Some(rest) = NAME_PREFIXES.iter().find_map(|p| n.strip_prefix(p)) {
        n = rest.to_string();
    }
    // The first legal form that is not the `公司` of a `分公司`.
    let found = LEGAL_FORMS.iter().find_map(|f| {
        n.match_indices(f).find(|(i, _)| !(*f == "公司" && n[..*i].ends_with('分'))).map(|(i, _)| (i, f.len()))
    });
    if let Some((i, len)) = found {
        n = format!("{}{}", &n[..i], &n[i + len..]);
    }
    (!n.is_empty()).then_some(n)
}

/// A GB 11714 organisation code as nine characters (`XXXXXXXX-X` read
/// too), `None` when its check character is wrong.
pub fn org_code(s: &str) -> Option<String> {
    lianqin_domain::validate_org_code(s).ok()
}

/// Normalizes an enterprise record's fields (`name`, `uscc`, `org_code`,
/// `address`, `phone`, `legal_rep`): a valid USCC also gives its
/// organisation code (characters 9–17), so a record that knows only the
/// old code meets the one with the USCC; `division` is the district the
/// record is filed in or, failing that, the one its address or name's
/// prefix names (not a branch's: that prefix is its parent's). Invalid values are left out.
pub fn unit(raw: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let n = match k.as_str() {
            "name" => unit_name(v),
            "uscc" => uscc(v),
            "org_code" => org_code(v),
            "address" => address(v),
            "phone" => phone(v),
            "legal_rep" => name(v),
            // The district a record is filed in (a GB/T 2260 code).
            "division" => Some(normalize_code(v)).filter(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit())),
            _ => Some(normalize_code(v)).filter(|s| !s.is_empty()),
        };
        if let Some(n) = n {
            out.insert(k.clone(), n);
        }
    }
    if let Some(code) = out.get("uscc").and_then(|u| lianqin_domain::uscc_org_code(u).ok()) {
        out.insert("org_code".into(), code);
    }
    let division = raw
        .get("address")
        .and_then(|a| lianqin_domain::division_from_address(a))
        // A branch's name carries its parent's prefix (`湖州市安吉县…长兴分公司`).
        .or_else(|| {
            raw.get("name").filter(|n| !n.contains("分公司")).and_then(|n| lianqin_domain::division_from_address(n))
        })
        .filter(|d| *d != "330500");
    if let Some(d) = division
        && !out.contains_key("division")
    {
        out.insert("division".into(), d.to_string());
    }
    out
}

/// A date as `YYYY-MM-DD` from the usual forms (`2025-03-19`,
/// `2025.03.19`, `2025/3/19`, `20250319`, `2025年3月19日`).
pub fn date(s: &str) -> Option<String> {
    let t = normalize_text(s);
    let digits: Vec<&str> = t.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).collect();
    let (y, m, d) = match digits.as_slice() {
        [ymd] if ymd.len() == 8 => (ymd[0..4].parse().ok()?, ymd[4..6].parse().ok()?, ymd[6..8].parse().ok()?),
        [y, m, d, ..] => (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?),
        _ => return None,
    };
    let date = chrono_like(y, m, d)?;
    Some(date)
}

fn chrono_like(y: i32, m: u32, d: u32) -> Option<String> {
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    ((1850..=2100).contains(&y) && (1..=days).contains(&d)).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// A USCC upper-cased without spaces, `None` when it does not validate.
pub fn uscc(s: &str) -> Option<String> {
    lianqin_domain::validate_uscc(s).ok().map(|u| u.code)
}

/// Normalizes a person record's fields in place of the raw ones: each known
/// field through its rule (unknown fields kept as NFKC text); `phone`
/// becomes `mobile` or `landline`; a birth date missing is taken from the
/// citizen ID. Empty or invalid values are left out.
pub fn person(raw: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let n = match k.as_str() {
            "citizen_id" => citizen_id(v),
            // Mobiles are personal; a landline is shared by a household.
            "phone" => {
                if let Some(p) = phone(v) {
                    let kind = if p.starts_with('1') { "mobile" } else { "landline" };
                    out.insert(kind.to_string(), p);
                }
                None
            }
            "name" => name(v),
            "address" => address(v),
            "birth_date" => date(v),
            "uscc" => uscc(v),
            _ => Some(normalize_code(v)).filter(|s| !s.is_empty()),
        };
        if let Some(n) = n {
            out.insert(k.clone(), n);
        }
    }
    if !out.contains_key("birth_date") {
        // A valid ID's birth date; an ID whose check character is wrong
        // still carries its birth date (the ID itself stays out of the
        // comparison).
        let birth = match out.get("citizen_id") {
            Some(c) => Some(format!("{}-{}-{}", &c[6..10], &c[10..12], &c[12..14])),
            None => raw.get("citizen_id").and_then(|c| birth_date_of_id(c)),
        };
        if let Some(b) = birth {
            out.insert("birth_date".into(), b);
        }
    }
    // The body of the ID (its first 17 characters), whatever its check
    // character: an ID typed with a wrong check character still meets the
    // valid one, by a comparison of its own (never as the ID).
    let body = match out.get("citizen_id") {
        Some(c) => Some(c[..17].to_string()),
        None => raw.get("citizen_id").and_then(|c| citizen_id_body(c)),
    };
    if let Some(b) = body {
        out.insert("citizen_id_body".into(), b);
    }
    out
}

/// The first 17 characters of an 18-character citizen ID (NFKC, spaces
/// dropped) when they are digits, whatever its check character; `None`
/// otherwise.
pub fn citizen_id_body(s: &str) -> Option<String> {
    let t: String = normalize_text(s).chars().filter(|c| !c.is_whitespace()).collect();
    (t.len() == 18 && t[..17].bytes().all(|b| b.is_ascii_digit())).then(|| t[..17].to_string())
}

/// The birth date inside an 18-character citizen ID (`YYYYMMDD` at 7–14)
/// or a 15-digit one (`YYMMDD` at 7–12, 19YY), whatever its check
/// character; `None` when the digits are not a date.
pub fn birth_date_of_id(s: &str) -> Option<String> {
    let t: String = normalize_text(s).chars().filter(|c| !c.is_whitespace()).collect();
    let all_digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    let ymd = match t.len() {
        18 if all_digits(&t[0..17]) && (all_digits(&t[17..]) || t[17..].eq_ignore_ascii_case("x")) => {
            t[6..14].to_string()
        }
        15 if all_digits(&t) => format!("19{}", &t[6..12]),
        _ => return None,
    };
    chrono_like(ymd[0..4].parse().ok()?, ymd[4..6].parse().ok()?, ymd[6..8].parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_compare_in_one_form() {
        // 15-digit and 18-digit forms of one number.
        let id18 = lianqin_domain::upgrade_15_to_18("330502800101123").unwrap();
        assert_eq!(citizen_id("330502800101123").as_deref(), Some(id18.as_str()));
        assert_eq!(citizen_id(&id18.replace('0', "０")).as_deref(), Some(id18.as_str()));
        assert_eq!(citizen_id("330502198001011230"), None, "bad check digit is dropped, not guessed");
        assert_eq!(phone("+86 138-0572-1234").as_deref(), Some("13805721234"));
        assert_eq!(phone("１３８０５７２１２３４").as_deref(), Some("13805721234"));
        assert_eq!(name(" 张　三 ").as_deref(), Some("张三"));
        assert_eq!(address("浙江省湖州市吴兴区 凤凰路12号"), address("吴兴区凤凰路12号"));
        for d in ["2025-03-19", "2025.03.19", "2025/3/19", "20250319", "2025年3月19日"] {
            assert_eq!(date(d).as_deref(), Some("2025-03-19"), "{d}");
        }
        assert_eq!(date("2025-02-30"), None);
    }

    #[test]
    fn a_site_is_its_road_and_number_or_its_landmark() {
        let one = Some("凤凰路88号".to_string());
        for a in [
            "浙江省湖州市吴兴区织里镇凤凰路88号",
            "湖州市吴兴区凤凰路88号",
            "织里镇凤凰路８８号附近",
            "凤凰路88#",
            "吴兴区 凤凰路88号3幢201室",
            "凤凰路88号对面",
        ] {
            assert_eq!(site(a), one, "{a}");
        }
        assert_eq!(site("凤凰路89号"), Some("凤凰路89号".into()));
        // A street, not a 街道 (sub-district), and a 街道 before it.
        assert_eq!(site("德清县武康街道北湖街12号"), Some("北湖街12号".into()));
        assert_eq!(site("吴兴区织里镇义皋村东苕溪河段附近"), Some("义皋村东苕溪河段".into()));
        assert_eq!(site("义皋村东苕溪河段"), Some("义皋村东苕溪河段".into()));
        // A house in a village.
        for a in ["湖州市吴兴区织里镇义皋村12号", "织里镇义皋村１２号附近", "义皋村12#"] {
            assert_eq!(site(a), Some("义皋村12号".into()), "{a}");
        }
        assert_eq!(town("浙江省湖州市吴兴区织里镇凤凰路88号").as_deref(), Some("织里镇"));
        assert_eq!(town("德清县武康街道北湖街12号").as_deref(), Some("武康街道"));
        assert_eq!(town("吴兴区凤凰路88号"), None);
        assert_eq!(town("长兴县白岘村合溪港桥"), None);
        for vague in ["织里镇义皋村附近", "吴兴区", "织里镇", "", "88号", "路1号"] {
            assert_eq!(site(vague), None, "{vague}");
        }
    }

    #[test]
    fn enterprise_names_compare_without_prefix_and_legal_form() {
        let one = Some("鑫达化工".to_string());
        for n in [
            "湖州鑫达化工有限公司",
            "湖州市吴兴区鑫达化工有限公司",
            "浙江鑫达化工股份有限公司",
            "鑫达化工厂",
            "鑫达化工",
            "鑫达化工 有限公司",
            "吴兴鑫达化工有限责任公司",
        ] {
            assert_eq!(unit_name(n), one, "{n}");
        }
        assert_eq!(unit_name("湖州鑫达化工有限公司吴兴分公司").as_deref(), Some("鑫达化工吴兴分公司"));
        assert_eq!(unit_name("鑫达化工吴兴分公司").as_deref(), Some("鑫达化工吴兴分公司"));
        assert_eq!(unit_name("有限公司"), None);
        let raw = BTreeMap::from([
            ("name".to_string(), "湖州市吴兴区鑫达化工有限公司".to_string()),
            ("uscc".to_string(), "91350200776049653a".to_string()),
        ]);
        let u = unit(&raw);
        assert_eq!(u.get("org_code").map(String::as_str), Some("776049653"));
        assert_eq!(u.get("division").map(String::as_str), Some("330502"));
        let old = unit(&BTreeMap::from([("org_code".to_string(), "77604965-3".to_string())]));
        assert_eq!(old.get("org_code"), u.get("org_code"), "the old code meets the USCC");
    }

    #[test]
    fn an_id_with_a_wrong_check_character_still_gives_its_birth_date() {
        // 330502198001011231 is valid; …1232 has a wrong check character.
        let raw = BTreeMap::from([("citizen_id".to_string(), "330502198001011232".to_string())]);
        let p = person(&raw);
        assert_eq!(p.get("citizen_id"), None, "never guessed");
        assert_eq!(p.get("birth_date").map(String::as_str), Some("1980-01-01"));
        // Its body meets the valid ID's, in a comparison of its own.
        let valid =
            person(&BTreeMap::from([("citizen_id".to_string(), "３３０５０２１９８００１０１１２３１".to_string())]));
        assert_eq!(p.get("citizen_id_body").map(String::as_str), Some("33050219800101123"));
        assert_eq!(valid.get("citizen_id_body"), p.get("citizen_id_body"));
        assert_eq!(citizen_id_body("33050219800101123"), None, "17 characters");
        assert_eq!(citizen_id_body("3305021980010112X1"), None, "a letter in the body");
        assert_eq!(birth_date_of_id("３３０５０２８００１０１１２３"), Some("1980-01-01".into()));
        assert_eq!(birth_date_of_id("330502198013011231"), None, "month 13");
        assert_eq!(birth_date_of_id("33050219800101123"), None, "17 characters");
    }

    #[test]
    fn birth_date_comes_from_the_id_when_missing() {
        let id = lianqin_domain::upgrade_15_to_18("330502800101123").unwrap();
        let raw = BTreeMap::from([("citizen_id".to_string(), id), ("name".to_string(), "张三".to_string())]);
        assert_eq!(person(&raw).get("birth_date").map(String::as_str), Some("1980-01-01"));
    }
}
