//! Personal data inside free text (报警内容, 工单内容, 违法事实 …): citizen
//! IDs, phone numbers and vehicle plates written into a sentence are masked,
//! the rest of the text is kept (keywords, places, cited case numbers).
//!
//! [`scrub_personal_text`] masks, in one pass over the characters (ASCII and
//! full-width digits and letters alike, so `１３８…` is caught):
//!
//! | What | Shape (standalone: not inside a longer run of ASCII letters/digits) | Kept |
//! |---|---|---|
//! | citizen ID, 18 | 17 digits + digit/`X`, characters 7–14 a date `YYYYMMDD` (GB 11643) | the 6-digit division code |
//! | citizen ID, 15 | 15 digits, characters 7–12 a date `YYMMDD` | the division code |
//! | mobile | 11 digits `1[3-9]…`, also `+86`/`86` before it and `138-0000-0000` / `138 0000 0000` | first 3 and last 4 digits |
//! | landline | `0` + area code + 7–8 digits, run together or `0572-2123456`, `0572 2123456`, `(0572)2123456` | the area code |
//! | plate | province abbreviation + letter + 5–6 letters/digits (or 4 + 挂学警港澳领试超), dots/spaces allowed after the letter (GA 36) | province and authority letter |
//!
//! and every occurrence of the record's own known personal values (the
//! caller's name, ID, phone, plate from its declared fields; 2 characters or
//! longer) passed in `known`. Each masked character becomes `*`, so lengths
//! and the shape of the sentence stay readable. A run of ASCII letters and
//! digits around a number is a code (`J3305022025…` 警情编号, order numbers)
//! and is left alone, so numbers cited between departments still link
//! reports. Names are found only through `known`: a name the record does
//! not declare is not recognised in free text.

use std::borrow::Cow;

use crate::codes;

/// The ASCII form of full-width ASCII (`０`–`９`, `Ａ`–`Ｚ`, `ａ`–`ｚ`,
/// `（`, `）`, `－`, `＋`, the ideographic space), every other character as is.
fn fold(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// `s` with the personal data in it masked (see the module docs);
/// borrowed when nothing was found.
pub fn scrub_personal_text<'a>(s: &'a str, known: &[&str]) -> Cow<'a, str> {
    let has_digit = s.chars().any(|c| fold(c).is_ascii_digit());
    let has_known = known.iter().any(|k| k.trim().chars().nth(1).is_some() && s.contains(k.trim()));
    if !has_digit && !has_known {
        return Cow::Borrowed(s);
    }
    let chars: Vec<char> = s.chars().collect();
    let f: Vec<char> = chars.iter().map(|&c| fold(c)).collect();
    let mut mask = vec![false; f.len()];
    let mut any = false;
    mark_patterns(&f, &mut mask, &mut any);
    for k in known {
        mark_known(&chars, k, &mut mask, &mut any);
    }
    if !any {
        return Cow::Borrowed(s);
    }
    Cow::Owned(chars.iter().zip(&mask).map(|(&c, &m)| if m { '*' } else { c }).collect())
}

fn set(mask: &mut [bool], any: &mut bool, from: usize, to: usize) {
    for m in &mut mask[from..to] {
        *m = true;
    }
    *any |= from < to;
}

fn digit(f: &[char], i: usize) -> bool {
    f.get(i).is_some_and(char::is_ascii_digit)
}

fn alnum(f: &[char], i: usize) -> bool {
    f.get(i).is_some_and(char::is_ascii_alphanumeric)
}

/// End of the run of ASCII digits starting at `i`.
fn run_end(f: &[char], i: usize) -> usize {
    let mut j = i;
    while digit(f, j) {
        j += 1;
    }
    j
}

fn num(f: &[char]) -> u32 {
    f.iter().fold(0, |n, c| n * 10 + c.to_digit(10).unwrap_or(0))
}

/// `YYYYMMDD` (or `YYMMDD` with `century`) that could be a birth date.
fn birth_date(f: &[char], century: bool) -> bool {
    let (y, rest) = if century { (num(&f[..4]), &f[4..]) } else { (1900 + num(&f[..2]), &f[2..]) };
    let (m, d) = (num(&rest[..2]), num(&rest[2..4]));
    (1850..=2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

fn mobile(f: &[char]) -> bool {
    f.len() == 11 && f[0] == '1' && ('3'..='9').contains(&f[1])
}

/// Length of the area code of a landline starting at `f[0] == '0'`:
/// 3 for `01x`/`02x` (Beijing, Shanghai …), else 4.
fn area_len(f: &[char]) -> usize {
    if matches!(f.get(1), Some('1' | '2')) { 3 } else { 4 }
}

fn mark_patterns(f: &[char], mask: &mut [bool], any: &mut bool) {
    let n = f.len();
    let mut i = 0;
    while i < n {
        if codes::plate_province_code(f[i]).is_some()
            && let Some((from, to)) = plate_at(f, i)
        {
            set(mask, any, from, to);
            i = to;
            continue;
        }
        if !digit(f, i) || alnum(f, i.wrapping_sub(1)) {
            i += 1;
            continue;
        }
        let j = run_end(f, i);
        let run = &f[i..j];
        // The check character `X` of an 18-character ID.
        let x = run.len() == 17 && matches!(f.get(j), Some('X' | 'x'));
        let end = if x { j + 1 } else { j };
        if alnum(f, end) {
            // Part of a code: skip the whole alphanumeric run.
            let mut k = end;
            while alnum(f, k) {
                k += 1;
            }
            i = k;
            continue;
        }
        if ((run.len() == 18 || x) && birth_date(&run[6..14], true))
            || (run.len() == 15 && birth_date(&run[6..12], false))
        {
            set(mask, any, i + 6, end);
        } else if mobile(run) {
            set(mask, any, i + 3, i + 7);
        } else if run.len() == 13 && run[..2] == ['8', '6'] && mobile(&run[2..]) {
            set(mask, any, i + 5, i + 9);
        } else if run[0] == '0' && run.get(1).is_some_and(|c| *c != '0') && (10..=12).contains(&run.len()) {
            set(mask, any, i + area_len(run), end);
        } else if let Some(to) = separated(f, i, j, mask, any) {
            i = to;
            continue;
        }
        i = end;
    }
}

/// A number written in groups: a mobile `138-0000-0000` / `138 0000 0000`,
/// or a landline `0572-2123456` / `0572 2123456` / `0572)2123456`. `i..j`
/// is the first group. Returns the end of what was masked.
fn separated(f: &[char], i: usize, j: usize, mask: &mut [bool], any: &mut bool) -> Option<usize> {
    let sep = |k: usize| matches!(f.get(k), Some('-' | ' ' | ')'));
    if !sep(j) || !digit(f, j + 1) {
        return None;
    }
    let g1 = &f[i..j];
    let (k, l) = (j + 1, run_end(f, j + 1));
    if g1.len() == 3 && g1[0] == '1' && ('3'..='9').contains(&g1[1]) && l - k == 4 && f[j] != ')' {
        if f[l..].first() == Some(&f[j]) && digit(f, l + 1) {
            let e = run_end(f, l + 1);
            if e - (l + 1) == 4 && !alnum(f, e) {
                set(mask, any, k, l);
                return Some(e);
            }
        }
        return None;
    }
    if (3..=4).contains(&g1.len()) && g1[0] == '0' && g1[1] != '0' && (7..=8).contains(&(l - k)) && !alnum(f, l) {
        set(mask, any, k, l);
        return Some(l);
    }
    None
}

/// A plate starting at `i` (a province abbreviation): the range of its
/// serial, to be masked.
fn plate_at(f: &[char], i: usize) -> Option<(usize, usize)> {
    let letter = |c: &char| c.is_ascii_alphabetic();
    let dot = |c: &char| matches!(c, '.' | '·' | '•' | '・' | '‧' | ' ' | '-');
    let mut k = i + 1;
    if !f.get(k).is_some_and(letter) {
        return None;
    }
    k += 1;
    while f.get(k).is_some_and(dot) && k < i + 4 {
        k += 1;
    }
    let start = k;
    while alnum(f, k) && k - start < 7 {
        k += 1;
    }
    let serial = k - start;
    let special = serial == 4 && f.get(k).is_some_and(|c| "挂学警港澳领试超".contains(*c));
    if special {
        k += 1;
    }
    let ok = (serial == 5 || serial == 6 || special)
        && !alnum(f, k)
        && f[start..start + serial].iter().any(char::is_ascii_digit);
    ok.then_some((start, k))
}

/// Marks every occurrence of `known` (as written, trimmed; 2 characters or
/// more) in `chars`.
fn mark_known(chars: &[char], known: &str, mask: &mut [bool], any: &mut bool) {
    let k: Vec<char> = known.trim().chars().collect();
    if k.len() < 2 || crate::text::is_null_sentinel(known) {
        return;
    }
    let mut i = 0;
    while i + k.len() <= chars.len() {
        if chars[i..i + k.len()] == k[..] {
            set(mask, any, i, i + k.len());
            i += k.len();
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> String {
        scrub_personal_text(t, &[]).into_owned()
    }

    #[test]
    fn ids_phones_and_plates_in_sentences() {
        assert_eq!(s("报警人身份证330502199001011234，要求处理"), "报警人身份证330502************，要求处理");
        assert_eq!(s("证件33050219900101123X。"), "证件330502************。");
        assert_eq!(s("老证件330502900101123"), "老证件330502*********");
        assert_eq!(s("联系电话13812345678"), "联系电话138****5678");
        assert_eq!(s("电话+8613812345678"), "电话+86138****5678");
        assert_eq!(s("电话138-1234-5678或138 1234 5678"), "电话138-****-5678或138 **** 5678");
        assert_eq!(s("座机0572-2123456，(0572)2123456，05722123456"), "座机0572-*******，(0572)*******，0572*******");
        assert_eq!(s("北京010-12345678"), "北京010-********");
        assert_eq!(s("一辆渣土车（浙E12345）倾倒"), "一辆渣土车（浙E*****）倾倒");
        assert_eq!(s("车辆浙E·D12345在运土"), "车辆浙E·******在运土");
        assert_eq!(s("浙E1234挂"), "浙E*****");
        assert_eq!(s("全角：１３８１２３４５６７８，浙Ｅ１２３４５"), "全角：１３８****５６７８，浙Ｅ*****");
    }

    #[test]
    fn codes_dates_and_amounts_are_kept() {
        for t in [
            "据110警情J33050220250319000012称",
            "工单202503190000123456已办结",
            "罚款50000元，2025年3月19日",
            "湖吴综执立〔2025〕00012号",
            "浙江省湖州市吴兴区",
            "浙A公司",
            "10086",
            "GB3838-2002",
        ] {
            assert_eq!(s(t), t);
        }
        assert!(matches!(scrub_personal_text("无数字", &[]), Cow::Borrowed(_)));
    }

    #[test]
    fn known_values_of_the_record() {
        assert_eq!(scrub_personal_text("张三称李四在河边", &["张三", "", "李"]).into_owned(), "**称李四在河边");
        assert_eq!(scrub_personal_text("张三张三", &["张三"]).into_owned(), "****");
    }
}
