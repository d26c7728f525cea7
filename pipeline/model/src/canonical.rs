//! A JSON object read without building a tree: its members as raw texts
//! ([`Members`]), and its canonical text written from them.
//!
//! The canonical text of a record is what [`content_hash`](crate::content_hash)
//! hashes and what the raw table stores: `serde_json::to_string` of the
//! parsed `serde_json::Value` (members sorted by name, no whitespace, numbers
//! and strings as serde_json writes them). Building that `Value` tree for
//! every record, and parsing it again on the consumer side, was the largest
//! per-record cost of ingest (issue 12). [`Members::parse`] borrows each
//! member's text from the line instead, and [`Members::canonical`] writes
//! the same bytes as serde_json: a string without escapes, `true`, `false`,
//! `null` and a short integer are copied as they are; anything else (escapes,
//! fractions, exponents, nested arrays and objects) goes through serde_json
//! for that member only. The property test `same_as_serde_json` holds it to
//! serde_json on random objects in random layouts.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A member name, borrowed from the text unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name<'a>(Cow<'a, str>);

impl Borrow<str> for Name<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// What a member's raw text holds, read without allocating where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Member<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as serde_json reads it.
    Number(serde_json::Number),
    /// A string, borrowed unless it had escapes.
    Str(Cow<'a, str>),
    /// An array or an object (parsed whole; rare in department exports).
    Nested(Cow<'a, Value>),
}

impl<'a> Member<'a> {
    /// A member of a parsed tree.
    pub fn from_value(v: &'a Value) -> Member<'a> {
        match v {
            Value::Null => Member::Null,
            Value::Bool(b) => Member::Bool(*b),
            Value::Number(n) => Member::Number(n.clone()),
            Value::String(s) => Member::Str(Cow::Borrowed(s)),
            nested => Member::Nested(Cow::Borrowed(nested)),
        }
    }

    /// Reads one member's raw text (as [`Members`] holds it).
    pub fn read(raw: &'a RawValue) -> Member<'a> {
        let t = raw.get();
        match t.as_bytes().first() {
            Some(b'"') => match serde_json::from_str::<&'a str>(t) {
                Ok(s) => Member::Str(Cow::Borrowed(s)),
                // Escapes: decoded into an owned string.
                Err(_) => Member::Str(Cow::Owned(serde_json::from_str::<String>(t).unwrap_or_default())),
            },
            Some(b'n') => Member::Null,
            Some(b't') => Member::Bool(true),
            Some(b'f') => Member::Bool(false),
            Some(b'{' | b'[') => Member::Nested(Cow::Owned(serde_json::from_str(t).unwrap_or(Value::Null))),
            _ => match serde_json::from_str::<serde_json::Number>(t) {
                Ok(n) => Member::Number(n),
                Err(_) => Member::Null,
            },
        }
    }
}

/// A JSON object's members as raw texts, sorted by name as serde_json's map
/// sorts them (a later duplicate name wins, as in serde_json).
#[derive(Debug)]
pub struct Members<'a>(BTreeMap<Name<'a>, &'a RawValue>);

impl<'a> Members<'a> {
    /// Parses `text` as one JSON object. An error when it is not valid JSON
    /// or not an object: callers that report errors parse it again as a
    /// `serde_json::Value` for serde_json's own message.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).map(Members)
    }

    /// The raw text of member `name`.
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0.get(name).copied()
    }

    /// Member `name`, read.
    pub fn get(&self, name: &str) -> Option<Member<'a>> {
        self.raw(name).map(Member::read)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object has no member.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members in canonical order: (name, raw text).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.0.iter().map(|(k, v)| (k.0.as_ref(), *v))
    }

    /// The canonical text: byte for byte `serde_json::to_string` of the
    /// object parsed as a `serde_json::Value`.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.0.values().map(|v| v.get().len() + 24).sum::<usize>() + 2);
        out.push('{');
        for (i, (name, raw)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, &name.0);
            out.push(':');
            write_member(&mut out, raw.get());
        }
        out.push('}');
        out
    }
}

/// A string as serde_json writes it (copied when nothing needs escaping).
fn write_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// One member's value as serde_json writes the value it parses from `t`.
fn write_member(out: &mut String, t: &str) {
    let b = t.as_bytes();
    let verbatim = match b.first() {
        // A valid JSON string without a backslash has nothing to escape.
        Some(b'"') => !b.contains(&b'\\'),
        Some(b't' | b'f' | b'n') => true,
        // Integers serde_json keeps as u64/i64 and writes back unchanged
        // (at most 18 digits; `-0` becomes a float).
        Some(b'0'..=b'9') => b.len() <= 18 && b.iter().all(u8::is_ascii_digit),
        Some(b'-') => b.len() <= 19 && b.len() >= 2 && b[1] != b'0' && b[1..].iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if verbatim {
        out.push_str(t);
    } else {
        match serde_json::from_str::<Value>(t) {
            // Serializing a Value cannot fail.
            Ok(v) => out.push_str(&serde_json::to_string(&v).unwrap_or_default()),
            Err(_) => out.push_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Random JSON text for a value, in a random layout: whitespace, `\u`
    /// escapes, exponents.
    fn value_text(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,25}"
                .prop_map(|s| s.trim_start_matches('0').to_string())
                .prop_filter("digits", |s| { !s.is_empty() && s != "-" && !s.starts_with("-0") }),
            Just("-0".to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
            (-1000i64..1000, 0u32..1000, -30i32..30).prop_map(|(i, f, e)| format!("{i}.{f}e{e}")),
            (119.0f64..121.0).prop_map(|f| format!("{f:.6}")),
            string_text(),
        ];
        if depth == 0 {
            leaf.boxed()
        } else {
            prop_oneof![
                4 => leaf,
                1 => proptest::collection::vec(value_text(depth - 1), 0..4).prop_map(|v| format!("[{}]", v.join(" , "))),
                1 => object_text(depth - 1),
            ]
            .boxed()
        }
    }

    /// A JSON string literal: plain, Chinese, escaped, `\u`-escaped.
    fn string_text() -> BoxedStrategy<String> {
        (".{0,12}", any::<bool>())
            .prop_map(|(s, escape_all)| {
                let mut t = String::from("\"");
                for c in s.chars() {
                    match c {
                        '"' => t.push_str("\\\""),
                        '\\' => t.push_str("\\\\"),
                        c if (c as u32) < 0x20 => t.push_str(&format!("\\u{:04x}", c as u32)),
                        c if escape_all && (c as u32) < 0x10000 => t.push_str(&format!("\\u{:04X}", c as u32)),
                        c => t.push(c),
                    }
                }
                t.push('"');
                t
            })
            .boxed()
    }

    fn object_text(depth: u32) -> BoxedStrategy<String> {
        proptest::collection::vec((string_text(), value_text(depth), "[ \t\n]{0,2}"), 0..8)
            .prop_map(|members| {
                let parts: Vec<String> =
                    members.into_iter().map(|(k, v, ws)| format!("{ws}{k}{ws}:{ws}{v}{ws}")).collect();
                format!("{{{}}}", parts.join(","))
            })
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn same_as_serde_json(text in object_text(2), dup in any::<bool>()) {
            // A duplicated member: the later one wins in both.
            let text = if dup && text.len() > 2 {
                format!("{}, \"dup\": 1, \"dup\": [2]}}", &text[..text.len() - 1]).replace("{,", "{")
            } else {
                text
            };
            let reference: Value = serde_json::from_str(&text).unwrap();
            let members = Members::parse(&text).unwrap();
            prop_assert_eq!(members.canonical(), serde_json::to_string(&reference).unwrap());
            let obj = reference.as_object().unwrap();
            prop_assert_eq!(members.len(), obj.len());
            for (k, v) in obj {
                let m = members.get(k).unwrap();
                let back = match m {
                    Member::Null => Value::Null,
                    Member::Bool(b) => Value::Bool(b),
                    Member::Number(n) => Value::Number(n),
                    Member::Str(s) => Value::String(s.into_owned()),
                    Member::Nested(v) => v.into_owned(),
                };
                prop_assert_eq!(Member::from_value(v), members.get(k).unwrap());
                prop_assert_eq!(&back, v);
            }
        }

        #[test]
        fn not_an_object_is_an_error(text in value_text(1)) {
            prop_assume!(!text.starts_with('{'));
            prop_assert!(Members::parse(&text).is_err());
        }
    }

    #[test]
    fn a_department_record() {
        let line = r#"{"orderNum": "HZ12345-2025-0000001", "callTime": "2025年7月29日 9时7分", "lng": 119.928741, "lat": "北纬30.81", "n": 7, "ok": true, "x": null, "q": "a\"b"}"#;
        let m = Members::parse(line).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(m.canonical(), v.to_string());
        assert_eq!(m.get("lat"), Some(Member::Str(Cow::Borrowed("北纬30.81"))));
        assert_eq!(m.get("q"), Some(Member::Str(Cow::Owned("a\"b".into()))));
        assert!(m.get("missing").is_none());
        assert!(Members::parse("[1]").is_err());
        assert!(Members::parse(r#"{"a": 1"#).is_err());
    }
}
