//! Library history written before personal data was classified (issue 11,
//! item 1), read through the new rules.
//!
//! Rows written by the mapping versions listed in [`LEGACY`] carry personal
//! data in columns that are not labelled personal: person and vehicle ids
//! in clear (`element.element_id`, `matter.party_element_id` = `cid:<citizen
//! ID>` / `plate:<plate>`), the whole source record in `attributes`, and
//! party names in `matter.title` / `matter.content`. Nothing is rewritten on
//! disk (history is never destroyed, and the raw tables keep every record);
//! instead every query session reads `element_history` and `matter_history`
//! through a view ([`history_view`]) that, for those rows only:
//!
//! * replaces `cid:<id>` / `plate:<plate>` ids by the keyed token of the id
//!   ([`crate::mapping::personal`]: `pt:<hex>`, so an old row joins the new
//!   rows of the same person when the hub key is the same);
//! * removes the mapping's personal fields from `attributes`;
//! * rewrites titles and contents built from a party's name as the new
//!   mappings do (`个人涉嫌<violation>案`, `个人违法用地案`).
//!
//! Rows written by the mapping versions listed in [`LEGACY_FREE_TEXT`]
//! (before their free text was labelled `free_text`) carry IDs, phones and
//! plates inside text: their `attributes` free-text fields, `matter.title`,
//! `matter.content` and `matter_event.note` are read scrubbed
//! ([`crate::mapping::personal::scrub`]; in `attributes` also of the
//! record's own personal values found beside them).
//!
//! The view's scan keeps the table's name, so the policy rewrite applies the
//! table's row filters and masks to it as before (the view is inlined);
//! the functions of the view are not registered in the session, so a query
//! cannot call them (the token would otherwise be an oracle).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::col;

use crate::PipelineError;
use crate::mapping::personal::{self, KeyScope, PersonalFields, PersonalKind};

/// Mapping versions that wrote personal data outside personal columns:
/// (mapping, versions, the raw fields that are personal).
pub const LEGACY: &[(&str, &[&str], &[&str])] = &[
    ("police_110", &["1"], &["bjrxm", "bjrsfzh", "bjrdh", "bjrzz", "cph"]),
    // v2 rows may carry the handler (承办人) in `attributes`: declared personal in v3.
    ("hotline_12345", &["1", "2"], &["caller_name", "caller_phone", "caller_address", "handler"]),
    ("hotline_12345_orders", &["1"], &["callerName", "callerPhone", "enterpriseName"]),
    ("market_enterprise", &["1"], &["legal_rep"]),
    ("law_enforcement_case", &["1"], &["case_name", "party_name", "party_id_card", "party_phone", "party_address"]),
    ("nr_land_violation", &["1"], &["wfzt", "sfzh"]),
];

/// Mapping versions written before their free text was labelled
/// `free_text`: (mapping, versions, the free-text fields).
pub const LEGACY_FREE_TEXT: &[(&str, &[&str], &[&str])] = &[
    ("police_110", &["1", "2", "3", "4", "5", "6", "7", "8"], &["bjnr"]),
    ("hotline_12345", &["1", "2", "3", "4", "5", "6"], &["title", "content", "reply"]),
    ("hotline_12345_orders", &["1"], &["title", "content"]),
    ("env_complaint", &["1", "2", "3", "4"], &["content", "reject_reason"]),
    ("law_enforcement_case", &["1", "2", "3", "4", "5", "6"], &["violation"]),
    ("irs_market_penalty", &["1", "2", "3"], &["cfnr"]),
];

/// What a legacy `mapping_version` (`name@version`) needs fixed.
struct Legacy {
    mapping: &'static str,
    /// Personal fields to remove from `attributes`.
    personal: &'static [&'static str],
    /// Free-text fields to scrub (empty: the version already scrubbed).
    free: &'static [&'static str],
}

/// The legacy entry of a `mapping_version` (`name@version`), if any.
fn legacy_of(mapping_version: &str) -> Option<Legacy> {
    let (name, version) = mapping_version.rsplit_once('@')?;
    let find = |t: &'static [(&'static str, &'static [&'static str], &'static [&'static str])]| {
        t.iter().find(|(n, vs, _)| *n == name && vs.contains(&version)).map(|(n, _, f)| (*n, *f))
    };
    let (personal, free) = (find(LEGACY), find(LEGACY_FREE_TEXT));
    let mapping = personal.or(free)?.0;
    Some(Legacy { mapping, personal: personal.map_or(&[], |p| p.1), free: free.map_or(&[], |f| f.1) })
}

/// Legacy `attributes`: without the personal fields, free text scrubbed of
/// patterns and of the personal values the record held beside it (the
/// same [`personal::public_text`] as new records).
fn fix_attributes(value: &str, l: &Legacy) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(value).ok()?;
    let known: Vec<&str> = l.personal.iter().filter_map(|f| v.get(*f).and_then(|x| x.as_str())).collect();
    let p: PersonalFields<'_> = l
        .personal
        .iter()
        .map(|f| (*f, None, PersonalKind::Name))
        .chain(l.free.iter().map(|f| (*f, None, PersonalKind::FreeText)))
        .collect();
    personal::public_text(&v, &p, &known)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fix {
    /// `(id, mapping_version)` → the id, tokenized when a legacy clear id.
    Id,
    /// `(attributes, mapping_version)` → without the personal fields.
    Attributes,
    /// `(title, mapping_version, party_element_id, content)` → title.
    Title,
    /// `(content, mapping_version, party_element_id)` → content.
    Content,
    /// `(text, mapping_version)` → the text scrubbed when written before
    /// free text was (`matter_event.note`).
    FreeText,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LegacyUdf {
    name: &'static str,
    fix: Fix,
    /// The key of tokens for legacy clear ids (the data dir's).
    key: KeyScope,
    signature: Signature,
}

fn strings(a: &ArrayRef) -> DfResult<StringArray> {
    let c = arrow::compute::cast(a, &DataType::Utf8)?;
    c.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| DataFusionError::Internal("expected text".into()))
}

/// A party that may be a person in a legacy row: anything but a unit code
/// (a masked or hashed id counts as a person: the safe side).
fn person_party(party: Option<&str>) -> bool {
    party.is_none_or(|p| !p.starts_with("uscc:"))
}

impl ScalarUDFImpl for LegacyUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        // Each argument at full length (`values_to_arrays` gives length-1
        // arrays when every argument is a scalar, e.g. a column missing
        // from an older file).
        let arrays: Vec<_> = args.args.iter().map(|a| a.to_array(n)).collect::<DfResult<_>>()?;
        let cols: Vec<StringArray> = arrays.iter().map(strings).collect::<DfResult<_>>()?;
        let get = |c: usize, i: usize| cols.get(c).filter(|a| a.is_valid(i)).map(|a| a.value(i));
        let mut key = None;
        let mut b = StringBuilder::with_capacity(n, n * 32);
        for i in 0..n {
            let value = get(0, i);
            let Some(l) = get(1, i).and_then(legacy_of) else {
                b.append_option(value);
                continue;
            };
            // The party rewrites are for the `LEGACY` versions only.
            let mapping = if l.personal.is_empty() { "" } else { l.mapping };
            let free = !l.free.is_empty();
            let out: Option<String> = match self.fix {
                Fix::Id => match value {
                    Some(v) if v.starts_with("cid:") || v.starts_with("plate:") => {
                        if key.is_none() {
                            key = Some(self.key.key().map_err(|e| DataFusionError::Execution(format!("{e}")))?);
                        }
                        let clear = v.split_once(':').map(|(_, c)| c).unwrap_or_default();
                        key.as_ref().and_then(|k| k.token(clear))
                    }
                    other => other.map(str::to_string),
                },
                Fix::Attributes => value.and_then(|v| fix_attributes(v, &l)),
                Fix::FreeText => value.map(|v| if free { personal::scrub(v, &[]).into_owned() } else { v.to_string() }),
                Fix::Title => match mapping {
                    "law_enforcement_case" if person_party(get(2, i)) => {
                        Some(format!("个人涉嫌{}案", personal::scrub(get(3, i).unwrap_or_default(), &[])))
                    }
                    "nr_land_violation" if person_party(get(2, i)) => Some("个人违法用地案".to_string()),
                    _ if free => value.map(|v| personal::scrub(v, &[]).into_owned()),
                    _ => value.map(str::to_string),
                },
                Fix::Content => match (mapping, value) {
                    ("nr_land_violation", Some(v)) if person_party(get(2, i)) => Some(
                        v.split_once(" 违法用地 ").map(|(_, rest)| format!("个人 违法用地 {rest}")).unwrap_or_default(),
                    ),
                    (_, Some(v)) if free => Some(personal::scrub(v, &[]).into_owned()),
                    (_, v) => v.map(str::to_string),
                },
            };
            b.append_option(out);
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

fn udf(name: &'static str, fix: Fix, key: &KeyScope) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(LegacyUdf {
        name,
        fix,
        key: key.clone(),
        signature: Signature::variadic_any(Volatility::Immutable),
    }))
}

/// The expression a column of `table` (`element` or `matter`) is read
/// through, or `None` when read as stored.
fn fixed(library: &str, column: &str, key: &KeyScope) -> Option<Expr> {
    let mv = || col("mapping_version");
    Some(match (library, column) {
        ("element", "element_id") => udf("lianqin_legacy_id", Fix::Id, key).call(vec![col(column), mv()]),
        ("matter", "party_element_id") => udf("lianqin_legacy_id", Fix::Id, key).call(vec![col(column), mv()]),
        (_, "attributes") => udf("lianqin_legacy_attributes", Fix::Attributes, key).call(vec![col(column), mv()]),
        ("matter", "title") => udf("lianqin_legacy_title", Fix::Title, key).call(vec![
            col(column),
            mv(),
            col("party_element_id"),
            col("content"),
        ]),
        ("matter", "content") => {
            udf("lianqin_legacy_content", Fix::Content, key).call(vec![col(column), mv(), col("party_element_id")])
        }
        ("matter_event", "note") => udf("lianqin_legacy_text", Fix::FreeText, key).call(vec![col(column), mv()]),
        _ => return None,
    })
}

/// `<library>_history` as read by queries: the stored table (`provider`,
/// scanned under the name `sql_name` so the policy applies as before) with
/// legacy rows read through the new rules (see the module docs). Other
/// tables are returned unchanged.
pub fn history_view(
    library: &str,
    sql_name: &str,
    provider: Arc<dyn TableProvider>,
    key: &KeyScope,
) -> Result<Arc<dyn TableProvider>, PipelineError> {
    if !matches!(library, "element" | "matter" | "matter_event") {
        return Ok(provider);
    }
    let err = |e: DataFusionError| PipelineError::Query(format!("{sql_name}: legacy view: {e}"));
    let schema = provider.schema();
    let scan = LogicalPlanBuilder::scan(sql_name, provider_as_source(provider), None).map_err(err)?;
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| match fixed(library, f.name(), key) {
            Some(e) if schema.field_with_name("mapping_version").is_ok() => {
                datafusion::logical_expr::cast(e, f.data_type().clone()).alias(f.name())
            }
            _ => col(f.name()),
        })
        .collect();
    let plan = scan.project(exprs).map_err(err)?.build().map_err(err)?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{BUILTIN_MAPPINGS, Mapping};

    /// The legacy field lists are the personal fields the mappings now
    /// declare (a field added there must be stripped from old rows too).
    #[test]
    fn legacy_fields_are_the_declared_personal_fields() {
        let shipped: &[(&str, &str)] = &[
            ("nr_land_violation", include_str!("../../schemas/mappings/nr_land_violation.toml")),
            ("law_enforcement_case", include_str!("../../schemas/mappings/law_enforcement_case.toml")),
        ];
        for (name, text) in BUILTIN_MAPPINGS.iter().chain(shipped) {
            let m = Mapping::parse(text, name).unwrap();
            let declared: Vec<&str> = m
                .personal_fields()
                .iter()
                .filter(|(_, _, k)| *k != PersonalKind::FreeText)
                .map(|(n, _, _)| *n)
                .collect();
            if declared.is_empty() {
                continue;
            }
            let (_, _, legacy) = LEGACY.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("{name}"));
            for d in declared {
                assert!(legacy.contains(&d), "{name}: personal field {d} missing from LEGACY");
            }
        }
    }

    /// Every free-text field is scrubbed in the rows of every earlier
    /// version of its mapping (a field labelled later must be listed).
    #[test]
    fn legacy_free_text_covers_every_earlier_version() {
        let shipped: &[(&str, &str)] =
            &[("irs_market_penalty", include_str!("../../schemas/mappings/irs_market_penalty.toml"))];
        for (name, text) in BUILTIN_MAPPINGS.iter().chain(shipped) {
            let m = Mapping::parse(text, name).unwrap();
            let free: Vec<&str> = m
                .personal_fields()
                .iter()
                .filter(|(_, _, k)| *k == PersonalKind::FreeText)
                .map(|(n, _, _)| *n)
                .collect();
            if free.is_empty() {
                continue;
            }
            let (_, versions, fields) =
                LEGACY_FREE_TEXT.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("{name}"));
            for f in free {
                assert!(fields.contains(&f), "{name}: free-text field {f} missing from LEGACY_FREE_TEXT");
            }
            let current: u32 = m.version.parse().unwrap();
            assert!(!versions.contains(&m.version.as_str()), "{name}: the current version is not legacy");
            for v in 1..current {
                assert!(versions.contains(&v.to_string().as_str()), "{name}: version {v} missing");
            }
        }
    }

    /// Legacy attributes lose personal fields and get free text scrubbed,
    /// also of the caller's name found beside it; current versions pass.
    #[test]
    fn legacy_attributes_and_text_are_scrubbed() {
        let l = legacy_of("police_110@1").unwrap();
        let a = r#"{"bjrxm":"张三","bjnr":"张三报警：浙E12345倾倒","cph":"浙E12345","x":1}"#;
        // The plate is also the record's own `cph`: masked whole.
        assert_eq!(fix_attributes(a, &l).unwrap(), r#"{"bjnr":"**报警：*******倾倒","x":1}"#);
        let l = legacy_of("police_110@5").unwrap();
        assert!(l.personal.is_empty() && l.free == ["bjnr"]);
        let a = r#"{"bjnr":"车辆浙E12345，电话13812345678"}"#;
        assert_eq!(fix_attributes(a, &l).unwrap(), r#"{"bjnr":"车辆浙E*****，电话138****5678"}"#);
        assert!(legacy_of("police_110@9").is_none());
    }
}
