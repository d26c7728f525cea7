//! Property tests and no-panic fuzzing for every validator.
//!
//! Check characters here are computed by small reference implementations
//! written directly from the standards' formulas (GB 32100-2015 §5,
//! GB 11714, GB 11643-1999 §5.2), independent of the crate's code.

use chrono::{Datelike, NaiveDate, Timelike};
use lianqin_domain::calendar::{add_working_days, is_working_day, working_days_between};
use lianqin_domain::citizen_id::{self, Sex};
use lianqin_domain::geo::{self, Crs};
use lianqin_domain::water::{self, Factor, Reading, WaterBody, WaterClass};
use lianqin_domain::{check_field, codes, phone, plate, scrub, text, uscc};
use proptest::prelude::*;

const USCC_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// GB 32100-2015 §5: Ci = (31 − Σ ai·Wi mod 31) mod 31, Wi = 3^(i−1) mod 31.
fn ref_uscc_check(body: &[u8]) -> u8 {
    let mut w = 1u64;
    let mut sum = 0u64;
    for b in body {
        let v = USCC_ALPHABET.iter().position(|x| x == b).unwrap() as u64;
        sum += v * w;
        w = w * 3 % 31;
    }
    USCC_ALPHABET[((31 - sum % 31) % 31) as usize]
}

/// GB 11714: C9 = 11 − (Σ Ci·Wi mod 11); 10 → X, 11 → 0.
fn ref_org_check(body: &[u8]) -> u8 {
    let w = [3u64, 7, 9, 10, 5, 8, 4, 2];
    let sum: u64 = body
        .iter()
        .zip(w)
        .map(|(b, w)| {
            let v = if b.is_ascii_digit() { b - b'0' } else { b - b'A' + 10 };
            u64::from(v) * w
        })
        .sum();
    match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        d => b'0' + d as u8,
    }
}

/// GB 11643-1999 §5.2, ISO 7064 MOD 11-2: Wi = 2^(18−i) mod 11;
/// check = (12 − Σ mod 11) mod 11, 10 → X.
fn ref_id_check(body: &[u8]) -> u8 {
    let mut sum = 0u64;
    for (i, b) in body.iter().enumerate() {
        let w = (1u64 << (17 - i)) % 11;
        sum += u64::from(b - b'0') * w;
    }
    match (12 - sum % 11) % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    }
}

/// Full-width form of ASCII text (U+0021–U+007E → U+FF01–U+FF5E, space →
/// U+3000), as Chinese input methods type it (Unicode Halfwidth and
/// Fullwidth Forms block).
fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap(),
            ' ' => '\u{3000}',
            c => c,
        })
        .collect()
}

/// Decorates an identifier the way records arrive: optionally full-width,
/// optionally lower-case, with spaces inside and around.
fn decorate(s: &str, width: bool, lower: bool, space_at: usize) -> String {
    let mut t = if lower { s.to_lowercase() } else { s.to_string() };
    let at = t.char_indices().nth(space_at % (t.chars().count() + 1)).map(|(i, _)| i).unwrap_or(t.len());
    t.insert(at, ' ');
    let t = format!(" {t}\t");
    if width { full_width(&t) } else { t }
}

/// GB 11643-1989 → 1999 by the standard's recipe: the 15-digit number
/// `AAAAAAYYMMDDSSS` becomes `AAAAAA19YYMMDDSSS` + MOD 11-2 check.
fn ref_upgrade(old: &str) -> String {
    let body = format!("{}19{}", &old[..6], &old[6..]);
    let c = ref_id_check(body.as_bytes()) as char;
    format!("{body}{c}")
}

fn province() -> impl Strategy<Value = &'static str> {
    prop::sample::select(codes::PROVINCES.iter().map(|(c, _)| *c).collect::<Vec<_>>())
}

fn uscc_char() -> impl Strategy<Value = u8> {
    prop::sample::select(USCC_ALPHABET.to_vec())
}

prop_compose! {
    fn valid_uscc()(
        head in prop::sample::select(vec!["91", "92", "93", "11", "12", "51", "52", "53", "Y1"]),
        prov in province(),
        area in "[0-9]{4}",
        org in prop::collection::vec(uscc_char(), 8),
    ) -> String {
        let mut s = format!("{head}{prov}{area}").into_bytes();
        s.extend_from_slice(&org);
        s.push(ref_org_check(&org));
        let c = ref_uscc_check(&s);
        s.push(c);
        String::from_utf8(s).unwrap()
    }
}

prop_compose! {
    fn valid_id()(
        prov in province(),
        area in "[0-9]{4}",
        days in 0i64..(200 * 365),
        seq in 0u32..1000,
    ) -> (String, NaiveDate, u32) {
        let birth = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Duration::days(days);
        let body = format!("{prov}{area}{}{seq:03}", birth.format("%Y%m%d"));
        let c = ref_id_check(body.as_bytes()) as char;
        (format!("{body}{c}"), birth, seq)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn uscc_valid_bodies_validate(code in valid_uscc()) {
        let u = uscc::validate_uscc(&code);
        prop_assert!(u.is_ok(), "{code}: {:?}", u);
        prop_assert_eq!(uscc::uscc_check_char(&code[..17]), code.chars().nth(17));
        // lower-case / full-width variants normalise to the same code
        prop_assert!(uscc::validate_uscc(&code.to_lowercase()).is_ok());
    }

    #[test]
    fn uscc_single_substitution_fails(code in valid_uscc(), pos in 0usize..18, delta in 1usize..31) {
        let mut b = code.clone().into_bytes();
        let old = USCC_ALPHABET.iter().position(|x| *x == b[pos]).unwrap();
        b[pos] = USCC_ALPHABET[(old + delta) % 31];
        let bad = String::from_utf8(b).unwrap();
        prop_assert!(uscc::validate_uscc(&bad).is_err(), "{code} -> {bad}");
    }

    #[test]
    fn uscc_check_char_matches_reference(body in prop::collection::vec(uscc_char(), 17)) {
        let s = String::from_utf8(body.clone()).unwrap();
        prop_assert_eq!(uscc::uscc_check_char(&s), Some(ref_uscc_check(&body) as char));
    }

    #[test]
    fn citizen_id_valid_bodies_validate((id, birth, seq) in valid_id()) {
        let c = citizen_id::validate_citizen_id(&id);
        prop_assert!(c.is_ok(), "{id}: {:?}", c);
        let c = c.unwrap();
        prop_assert_eq!(c.birth_date, birth);
        prop_assert_eq!(c.sex, if seq % 2 == 1 { Sex::Male } else { Sex::Female });
        prop_assert_eq!(&c.division, &id[..6]);
        prop_assert_eq!(citizen_id::citizen_id_check_char(&id[..17]), id.chars().nth(17));
    }

    #[test]
    fn citizen_id_single_digit_change_fails((id, _b, _s) in valid_id(), pos in 0usize..17, delta in 1u8..10) {
        let mut b = id.clone().into_bytes();
        b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
        let bad = String::from_utf8(b).unwrap();
        prop_assert!(citizen_id::validate_citizen_id(&bad).is_err(), "{id} -> {bad}");
    }

    #[test]
    fn citizen_id_check_char_change_fails((id, _b, _s) in valid_id(), repl in prop::sample::select(b"0123456789X".to_vec())) {
        let mut b = id.clone().into_bytes();
        prop_assume!(b[17] != repl);
        b[17] = repl;
        let bad = String::from_utf8(b).unwrap();
        prop_assert_eq!(citizen_id::validate_citizen_id(&bad).unwrap_err().rule, "citizen_id.check_digit");
    }

    #[test]
    fn upgrade_then_validate(prov in province(), area in "[0-9]{4}", days in 0i64..36500, seq in "[0-9]{3}") {
        let birth = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Duration::days(days);
        let old = format!("{prov}{area}{}{seq}", birth.format("%y%m%d"));
        let new = citizen_id::upgrade_15_to_18(&old).unwrap();
        let c = citizen_id::validate_citizen_id(&new).unwrap();
        prop_assert_eq!(c.birth_date, birth);
        prop_assert_eq!(&new[..6], &old[..6]);
        prop_assert_eq!(&new[8..17], &old[6..15]);
    }

    #[test]
    fn plates_roundtrip(
        prov in prop::sample::select(codes::PLATE_PROVINCES.iter().map(|(c, _)| *c).collect::<Vec<_>>()),
        auth in "[A-HJ-NP-Z]",
        serial in "[A-HJ-NP-Z0-9]{5}",
        ne_small in "[DF][A-HJ-NP-Z0-9][0-9]{4}",
        ne_large in "[0-9]{5}[DF]",
    ) {
        for (s, kind) in [
            (format!("{prov}{auth}{serial}"), plate::PlateKind::Ordinary),
            (format!("{prov}{auth}{ne_small}"), plate::PlateKind::NewEnergySmall),
            (format!("{prov}{auth}{ne_large}"), plate::PlateKind::NewEnergyLarge),
        ] {
            let p = plate::validate_plate(&s).unwrap();
            prop_assert_eq!(p.kind, kind);
            prop_assert_eq!(&p.number, &s);
            // decorated / lower-case / full-width forms normalise back
            let decorated = format!(" {}·{} ", &s[..4], s[4..].to_lowercase());
            prop_assert_eq!(plate::validate_plate(&decorated).unwrap().number, s.clone());
        }
    }

    #[test]
    fn mobiles_normalise(num in "1[3-9][0-9]{9}", prefix in prop::sample::select(vec!["", "+86", "+86 ", "0086", "86", "(+86) "])) {
        let p = phone::normalize_phone(&format!("{prefix}{num}")).unwrap();
        prop_assert_eq!(p.kind, phone::PhoneKind::Mobile);
        prop_assert_eq!(p.number, num);
    }

    /// A citizen ID in any width / case / spacing, and its 15-digit form
    /// when it has one, normalise to the 18-character number.
    #[test]
    fn citizen_id_normalises_every_form((id, birth, _s) in valid_id(), width: bool, lower: bool, at in 0usize..20) {
        prop_assert_eq!(citizen_id::normalize_citizen_id(&decorate(&id, width, lower, at)), Ok(id.clone()));
        if birth.year() / 100 == 19 {
            let old = format!("{}{}", &id[..6], &id[8..17]);
            prop_assert_eq!(ref_upgrade(&old), id.clone());
            prop_assert_eq!(citizen_id::normalize_citizen_id(&decorate(&old, width, false, at)), Ok(id.clone()));
        }
    }

    /// A changed digit is an error, never a repaired number.
    #[test]
    fn citizen_id_normalise_never_guesses((id, _b, _s) in valid_id(), pos in 0usize..17, delta in 1u8..10) {
        let mut b = id.clone().into_bytes();
        b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
        let bad = String::from_utf8(b).unwrap();
        prop_assert!(citizen_id::normalize_citizen_id(&bad).is_err(), "{id} -> {bad}");
    }

    /// A USCC in any width / case / spacing normalises to itself; its
    /// characters 9–17 are its organisation code, which the stand-alone
    /// code (with or without the hyphen) reads to.
    #[test]
    fn uscc_normalises_and_embeds_its_org_code(code in valid_uscc(), width: bool, lower: bool, at in 0usize..20, dash: bool) {
        prop_assert_eq!(uscc::normalize_uscc(&decorate(&code, width, lower, at)), Ok(code.clone()));
        let org = &code[8..17];
        prop_assert_eq!(ref_org_check(&org.as_bytes()[..8]) as char, org.chars().nth(8).unwrap());
        prop_assert_eq!(uscc::uscc_org_code(&decorate(&code, width, lower, at)), Ok(org.to_string()));
        let written = if dash { format!("{}-{}", &org[..8], &org[8..]) } else { org.to_string() };
        prop_assert_eq!(uscc::validate_org_code(&decorate(&written, width, false, 0)), Ok(org.to_string()));
    }

    /// Plates: full-width, lower-case, spaced and dotted forms fold to one.
    #[test]
    fn plates_fold(
        prov in prop::sample::select(codes::PLATE_PROVINCES.iter().map(|(c, _)| *c).collect::<Vec<_>>()),
        rest in "[A-HJ-NP-Z][A-HJ-NP-Z0-9]{5,6}", width: bool, lower: bool, at in 0usize..9,
    ) {
        let p = format!("{prov}{rest}");
        prop_assert_eq!(plate::normalize_plate(&decorate(&p, width, lower, at)), p.clone());
        prop_assert_eq!(plate::normalize_plate(&format!("{prov}{}·{}", &rest[..1], &rest[1..])), p.clone());
    }

    /// Phones: a mobile in its +86 / spaced / dashed / full-width forms and a
    /// landline with its area code give the same digits.
    #[test]
    fn phones_to_digits(
        num in "1[3-9][0-9]{9}",
        prefix in prop::sample::select(vec!["", "+86", "+86 ", "0086", "86", "(+86) ", "+86-"]),
        area in prop::sample::select(vec!["010", "021", "0572", "0571", "0755"]),
        sub in "[2-8][0-9]{6,7}", width: bool,
    ) {
        // 3-digit area codes (010, 02x) have 8-digit subscriber numbers.
        let sub = if area.len() == 3 && sub.len() == 7 { format!("{sub}0") } else { sub };
        let m = format!("{prefix}{}-{}-{}", &num[..3], &num[3..7], &num[7..]);
        let m = if width { full_width(&m) } else { m };
        prop_assert_eq!(phone::normalize_phone_digits(&m), Ok(num.clone()));
        let want = format!("{area}{sub}");
        for l in [format!("{area}-{sub}"), format!("({area}){sub}"), format!("+86 {} {sub}", &area[1..]), format!("0086{}{sub}", &area[1..])] {
            let l = if width { full_width(&l) } else { l };
            prop_assert_eq!(phone::normalize_phone_digits(&l), Ok(want.clone()), "{}", l);
        }
    }

    /// Names: NFKC, whitespace collapsed and trimmed — the same as folding
    /// the full-width block by hand and joining the words with one space.
    #[test]
    fn names_fold(words in prop::collection::vec("[a-zA-Z0-9()张王李湖州环保]{1,6}", 1..4), width: bool, pad in "[ \t\u{3000}]{1,3}") {
        let typed = words.join(&pad);
        let typed = format!("{pad}{}{pad}", if width { full_width(&typed) } else { typed });
        prop_assert_eq!(text::normalize_name(&typed), words.join(" "));
    }

    /// Degrees written as text read back to the number; whole degrees
    /// written out are refused, never rounded into a position.
    #[test]
    fn degrees_read_back(deg in 73u32..135, frac in 1u32..1_000_000, lon: bool) {
        let v = format!("{deg}.{frac:06}");
        let want: f64 = v.parse().unwrap();
        let word = if lon { "东经" } else { "北纬" };
        prop_assert_eq!(lianqin_domain::geo::parse_degrees(&format!("{word}{v}度")), Ok(want));
        prop_assert_eq!(lianqin_domain::geo::parse_degrees(&format!("{v}°{}", if lon { "E" } else { "N" })), Ok(want));
        prop_assert_eq!(lianqin_domain::geo::parse_degrees(&full_width(&v)), Ok(want));
        prop_assert_eq!(lianqin_domain::geo::parse_degrees(&format!("{word}{deg}度")).unwrap_err().rule, "degrees.precision");
    }

    #[test]
    fn gcj_round_trip_inside_china(lon in 73.0f64..135.0, lat in 18.0f64..53.0) {
        // gcj → wgs → gcj
        let (wl, wb) = geo::gcj02_to_wgs84(lon, lat);
        let (gl, gb) = geo::wgs84_to_gcj02(wl, wb);
        prop_assert!((gl - lon).abs() < 1e-6 && (gb - lat).abs() < 1e-6);
        // wgs → gcj → wgs with the exact inverse: well under 0.5 m
        let (gl, gb) = geo::wgs84_to_gcj02(lon, lat);
        let (wl, wb) = geo::gcj02_to_wgs84(gl, gb);
        prop_assert!(geo::distance_m(lon, lat, wl, wb) < 0.5);
        // bd09 likewise
        let (bl, bb) = geo::wgs84_to_bd09(lon, lat);
        let (wl, wb) = geo::bd09_to_wgs84(bl, bb);
        prop_assert!(geo::distance_m(lon, lat, wl, wb) < 0.5);
        // crs dispatch
        let (xl, xb) = geo::from_wgs84(lon, lat, Crs::Gcj02);
        let (yl, yb) = geo::to_wgs84(xl, xb, Crs::Gcj02);
        prop_assert!(geo::distance_m(lon, lat, yl, yb) < 0.5);
    }

    #[test]
    fn add_then_count(start in 0i64..(365 + 300), n in 0u32..25) {
        let s = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Duration::days(start);
        let end = add_working_days(s, n).unwrap();
        if n > 0 {
            prop_assert!(is_working_day(end).unwrap());
            prop_assert!(end > s);
        }
        prop_assert_eq!(working_days_between(s, end).unwrap(), i64::from(n));
    }

    #[test]
    fn datetime_formats_roundtrip(secs in 0i64..4_102_444_800) {
        // 1970-01-01 .. 2100-01-01, whole seconds, interpreted as +08:00 wall time
        let ndt = chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
        let (y, mo, d, h, mi, s) = (ndt.year(), ndt.month(), ndt.day(), ndt.hour(), ndt.minute(), ndt.second());
        let forms = [
            ndt.format("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{y}/{mo}/{d} {h}:{mi:02}:{s:02}"),
            ndt.format("%Y%m%d%H%M%S").to_string(),
            format!("{y}年{mo}月{d}日 {h}时{mi}分{s}秒"),
            ndt.format("%Y-%m-%dT%H:%M:%S+08:00").to_string(),
        ];
        for f in forms {
            let got = text::parse_datetime_cn(&f).unwrap();
            prop_assert_eq!(got.naive_local(), ndt, "{}", f);
        }
        let utc = ndt - chrono::Duration::hours(8);
        let z = utc.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        prop_assert_eq!(text::parse_datetime_cn(&z).unwrap().naive_local(), ndt);
    }

    #[test]
    fn normalisation_is_idempotent(s in "\\PC{0,40}") {
        let once = text::normalize_text(&s);
        prop_assert_eq!(text::normalize_text(&once), once.clone());
        let code = text::normalize_code(&s);
        prop_assert_eq!(text::normalize_code(&code), code.clone());
    }

    #[test]
    fn water_worst_item_decides(do_ in 0.0f64..12.0, nh3 in 0.0f64..3.0, tp in 0.0f64..0.6) {
        let rs = [
            Reading { factor: Factor::DissolvedOxygen, value: do_ },
            Reading { factor: Factor::AmmoniaN, value: nh3 },
            Reading { factor: Factor::TotalP, value: tp },
        ];
        let c = water::classify(&rs).unwrap();
        for r in &rs {
            let single = r.factor.class_of(r.value, WaterBody::River).unwrap();
            prop_assert!(single <= c);
        }
        // a lower pollutant value never gives a worse class
        let better = water::classify(&[Reading { factor: Factor::AmmoniaN, value: nh3 / 2.0 }]).unwrap();
        let orig = water::classify(&[Reading { factor: Factor::AmmoniaN, value: nh3 }]).unwrap();
        prop_assert!(better <= orig);
        prop_assert_eq!(water::worse_than_target(c, WaterClass::III), c > WaterClass::III);
    }
}

/// Strings that look like the inputs (digits, code letters, separators,
/// CJK markers) reach deeper code paths than uniform random text.
fn id_like() -> impl Strategy<Value = String> {
    "[0-9A-Zxa-z +\\-/.:()（）年月日时点分秒号TZ浙E转#·\u{3000}０-９Ａ-Ｚ]{0,24}"
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "\\PC{0,30}", id_like()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// No validator panics on arbitrary input.
    #[test]
    fn no_panic_on_any_string(s in any_text()) {
        let _ = uscc::validate_uscc(&s);
        let _ = uscc::validate_org_code(&s);
        let _ = uscc::uscc_check_char(&s);
        let _ = uscc::org_code_check_char(&s);
        let _ = citizen_id::validate_citizen_id(&s);
        let _ = citizen_id::parse_citizen_id(&s);
        let _ = citizen_id::upgrade_15_to_18(&s);
        let _ = citizen_id::citizen_id_check_char(&s);
        let _ = citizen_id::normalize_citizen_id(&s);
        let _ = uscc::normalize_uscc(&s);
        let _ = uscc::uscc_org_code(&s);
        let _ = plate::normalize_plate(&s);
        let _ = scrub::scrub_personal_text(&s, &["张三", &s]);
        let _ = phone::normalize_phone_digits(&s);
        let _ = text::normalize_name(&s);
        let _ = geo::parse_degrees(&s);
        let _ = plate::validate_plate(&s);
        let _ = phone::normalize_phone(&s);
        let _ = phone::normalize_phone_in_area(&s, "0572");
        let _ = phone::normalize_phone_in_area("2123456", &s);
        let _ = text::parse_datetime_cn(&s);
        let _ = text::parse_date_cn(&s);
        let _ = text::normalize_text(&s);
        let _ = text::is_null_sentinel(&s);
        let _ = codes::check_division(&s);
        let _ = codes::division_name(&s);
        let _ = codes::province_name(&s);
        let _ = geo::division_from_address(&s);
        let _ = s.parse::<Crs>();
        let _ = s.parse::<WaterClass>();
        let _ = Factor::from_hj212_code(&s);
        let _ = Reading::from_hj212(&s, 1.0);
        for kind in lianqin_domain::CHECK_KINDS {
            let _ = check_field(kind, &s);
        }
        let _ = check_field(&s, &s);
    }

    /// Numeric date-like strings of every length.
    #[test]
    fn no_panic_on_digit_strings(s in "[0-9]{0,20}(\\.[0-9]{0,12})?") {
        let _ = text::parse_datetime_cn(&s);
        let _ = phone::normalize_phone(&s);
        let _ = citizen_id::validate_citizen_id(&s);
        let _ = citizen_id::upgrade_15_to_18(&s);
    }

    /// No geo or water function panics on any f64 (NaN, ±inf, huge).
    #[test]
    fn no_panic_on_any_float(a in any::<f64>(), b in any::<f64>()) {
        let _ = geo::wgs84_to_gcj02(a, b);
        let _ = geo::gcj02_to_wgs84(a, b);
        let _ = geo::gcj02_to_wgs84_approx(a, b);
        let _ = geo::bd09_to_wgs84(a, b);
        let _ = geo::bd09_to_gcj02(a, b);
        let _ = geo::wgs84_to_bd09(a, b);
        let _ = geo::division_from_point(a, b);
        let _ = geo::unswap_lon_lat(a, b);
        let _ = geo::distance_m(a, b, b, a);
        for crs in [Crs::Wgs84, Crs::Gcj02, Crs::Bd09, Crs::Cgcs2000] {
            let _ = geo::to_wgs84(a, b, crs);
        }
        let _ = text::from_excel_serial(a);
        for code in ["w01009", "w21003", "w01001", "w20111", "w21001"] {
            if let Some(r) = Reading::from_hj212(code, a) {
                let _ = water::classify(&[r]);
                let _ = water::classify_for(WaterBody::LakeReservoir, &[r]);
                let _ = water::exceedance_multiple(r.factor, a, WaterClass::III, WaterBody::River);
            }
        }
    }

    /// Calendar functions never panic on any representable date: they
    /// either answer or fail with a CalendarError.
    #[test]
    fn no_panic_on_any_date(days in any::<i32>(), n in 0u32..50) {
        if let Some(d) = NaiveDate::from_num_days_from_ce_opt(days) {
            let _ = is_working_day(d);
            let _ = add_working_days(d, n);
            let _ = lianqin_domain::calendar::add_working_days_provisional(d, n.min(10));
            let _ = working_days_between(d, NaiveDate::from_ymd_opt(2025, 6, 1).unwrap());
        }
        let _ = add_working_days(NaiveDate::MAX, n);
    }
}

/// A personal value as written into a sentence, and the range of its
/// characters that must come out masked (its clear serial).
fn planted() -> impl Strategy<Value = (String, std::ops::Range<usize>)> {
    let id = valid_id().prop_map(|(id, _, _)| (id, 6..18));
    let mobile = ("1[3-9][0-9]{9}", 0usize..3).prop_map(|(m, form)| match form {
        0 => (m, 3..7),
        1 => (format!("{}-{}-{}", &m[..3], &m[3..7], &m[7..]), 4..8),
        _ => (format!("+86{m}"), 6..10),
    });
    let landline = ("0[3-9][0-9]{2}", "[2-8][0-9]{6}", 0usize..3).prop_map(|(area, n, form)| match form {
        0 => (format!("{area}{n}"), 4..11),
        1 => (format!("{area}-{n}"), 5..12),
        _ => (format!("（{area}）{n}"), 6..13),
    });
    let plate = (prop::sample::select(codes::PLATE_PROVINCES.to_vec()), "[A-HJ-NP-Z]", "[A-HJ-NP-Z0-9][0-9]{4}")
        .prop_map(|((p, _), a, serial)| (format!("{p}{a}{serial}"), 2..7));
    (prop_oneof![id, mobile, landline, plate], any::<bool>())
        .prop_map(|((shown, range), wide)| (if wide { full_width(&shown) } else { shown }, range))
}

/// Sentence pieces without personal data (keywords, places, codes, amounts).
fn filler() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "有人在河边倾倒垃圾",
        "，",
        "。",
        "吴兴区织里镇",
        "据110警情J33050220250319000012称",
        "罚款50000元",
        "2025年3月19日",
        "湖吴综执立〔2025〕00012号",
        "浙江省湖州市",
        "（",
        "）",
        " ",
        "10086",
        "GB3838-2002",
        "工单202503190000123456",
        "第3次",
        "联系人",
        "电话：",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Planted IDs, phones and plates never survive in clear; the text
    /// around them is kept character for character; scrubbing is
    /// idempotent.
    #[test]
    fn scrub_masks_every_planted_value(
        parts in prop::collection::vec((filler(), prop::option::weighted(0.4, planted())), 1..8),
        name in "[赵钱孙李周吴郑王][一-龥]{1,2}",
    ) {
        let mut text = String::new();
        let mut secrets = Vec::new();
        let mut kept = String::new();
        for (f, p) in &parts {
            text.push_str(f);
            kept.push_str(f);
            if let Some((shown, range)) = p {
                text.push('：');
                kept.push('：');
                let at = text.chars().count();
                secrets.push((shown.clone(), at + range.start..at + range.end));
                text.push_str(shown);
                // Separate the value from the next piece as a sentence would.
                text.push('；');
                kept.push('；');
            }
        }
        let name_at = text.chars().count();
        text.push_str(&name);
        let out = scrub::scrub_personal_text(&text, &[name.as_str()]).into_owned();
        let chars: Vec<char> = out.chars().collect();
        prop_assert_eq!(chars.len(), text.chars().count());
        for (shown, range) in &secrets {
            prop_assert!(chars[range.clone()].iter().all(|c| *c == '*'), "{shown} not masked in {out} (from {text})");
        }
        prop_assert!(chars[name_at..].iter().all(|c| *c == '*'), "{name} survived in {out}");
        // What is not a personal value is unchanged.
        let filler_only: String = kept.clone();
        prop_assert_eq!(scrub::scrub_personal_text(&filler_only, &[]).into_owned(), filler_only);
        prop_assert_eq!(scrub::scrub_personal_text(&out, &[]).into_owned(), out.clone());
    }
}
