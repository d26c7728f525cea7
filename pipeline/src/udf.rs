//! SQL functions available in mappings and analyst queries.
//!
//! | function | returns | what |
//! |---|---|---|
//! | `code_of(table, text)` | text | code of a code-table entry given its code, Chinese or English label; NULL if none |
//! | `check(kind, value)` | text | the rule a value breaks (`uscc.check_digit`, …) or NULL; kinds `uscc`, `citizen_id`, `plate`, `phone`, `division` |
//! | `flags(a, b, …)` | text | JSON array of the non-null arguments, NULL when all are NULL |
//! | `nfkc(text)` | text | NFKC: full-width → half-width, trimmed |
//! | `norm_citizen_id(text)` | text | the 18-character citizen ID (whitespace removed, full-width folded, `x` → `X`, 15 → 18 digits); NULL when it breaks a GB 11643 rule — never repaired |
//! | `norm_uscc(text)` | text | the USCC trimmed, full-width folded, upper-cased; NULL unless 18 characters of the GB 32100 alphabet (check characters are `check('uscc', …)`'s job) |
//! | `norm_plate(text)` | text | the plate NFKC-folded, upper-cased, without spaces, dots or hyphens (`浙ｅ·１２３４５` → `浙E12345`) |
//! | `norm_phone(text)` | text | E.164-like digits of the number as dialled in China: `13812345678`, landlines with their area code `05722123456` (`+86`/`0086` forms, spaces, dashes, full-width digits accepted; extension dropped); NULL when it is not a number (a local number without area code included) |
//! | `norm_name(text)` | text | a name NFKC-folded, whitespace collapsed and trimmed |
//! | `org_code_of_uscc(text)` | text | the 9-character GB 11714 organisation code inside a valid USCC (characters 9–17); NULL when the USCC is invalid |
//! | `norm_org_code(text)` | text | a stand-alone organisation code, `XXXXXXXX-X` or `XXXXXXXXX`, as 9 characters; NULL when its check character is wrong — joins `org_code_of_uscc` |
//! | `norm_unit_name(text)` | text | an enterprise's name as people use it: NFKC, no spaces, no administrative prefix or legal form (`湖州市吴兴区鑫达化工有限公司` and `鑫达化工厂` → `鑫达化工`; a branch keeps its label) — see [`lianqin_resolve::normalize::unit_name`] |
//! | `wgs84_lon(lon, lat, crs)` / `wgs84_lat(…)` | float | coordinates converted from `crs` (WGS-84, GCJ-02, BD-09, CGCS2000) to WGS-84 |
//! | `division_from_point(lon, lat)` | text | Huzhou district/county code for a WGS-84 point (approximate) |
//! | `division_from_address(text)` | text | district/county code from an address |
//! | `add_working_days(ts, n)` | timestamp | `n` working days after `ts`'s date (counted from the next day, official calendar with 调休), same time of day; NULL for a year not yet published |
//! | `water_class(code1, v1, code2, v2, …)` | text | GB 3838-2002 class (`I`…`V`, `劣V`) from HJ 212 factor codes and values |
//! | `water_worse(class, target)` | boolean | true when `class` is worse than the target class |
//! | `person_token(value)` | text | `pt:<hex>`, the keyed token of a personal value (mappings only; see [`crate::mapping::personal`]); NULL for NULL or blank |
//!
//! The `norm_*` functions (and `org_code_of_uscc`) give the one form of an
//! identifier records are matched on; each returns NULL for NULL, blank or a
//! null sentinel (`无`, `/`, `暂无`, …) and, where it says so, for invalid
//! input (see [`lianqin_domain`]: `normalize_citizen_id`, `normalize_uscc`,
//! `normalize_plate`, `normalize_phone_digits`, `normalize_name`,
//! `uscc_org_code`, `validate_org_code`).
//!
//! `person_token` is registered for mappings only: in a query session it
//! would be an oracle confirming a guessed ID, so [`forbid_oracles`] removes
//! it there.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Array, Float64Builder, Int64Array, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Datelike, Utc};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use lianqin_domain::geo::Crs;

use crate::schema::Catalog;
use crate::time::beijing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    CodeOf,
    Check,
    Flags,
    Nfkc,
    NormCitizenId,
    NormUscc,
    NormPlate,
    NormPhone,
    NormName,
    OrgCodeOfUscc,
    NormOrgCode,
    NormUnitName,
    Wgs84Lon,
    Wgs84Lat,
    DivisionFromPoint,
    DivisionFromAddress,
    AddWorkingDays,
    WaterClass,
    WaterWorse,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LianqinUdf {
    name: &'static str,
    kind: Kind,
    signature: Signature,
    /// code table → (label or code → code), for `code_of`.
    codes: BTreeMap<String, BTreeMap<String, String>>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl ScalarUDFImpl for LianqinUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Wgs84Lon | Kind::Wgs84Lat => DataType::Float64,
            Kind::AddWorkingDays => ts_type(),
            Kind::WaterWorse => DataType::Boolean,
            _ => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let arity = |want: usize| -> Result<()> {
            if arrays.len() != want {
                return Err(DataFusionError::Plan(format!(
                    "{} takes {want} arguments, got {}",
                    self.name,
                    arrays.len()
                )));
            }
            Ok(())
        };
        let out: ArrayRef = match self.kind {
            Kind::CodeOf => {
                arity(2)?;
                let (t, v) = (utf8(&arrays[0])?, utf8(&arrays[1])?);
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for i in 0..n {
                    let code = (t.is_valid(i) && v.is_valid(i))
                        .then(|| self.codes.get(t.value(i)).and_then(|m| m.get(v.value(i).trim())))
                        .flatten();
                    b.append_option(code);
                }
                Arc::new(b.finish())
            }
            Kind::Check => {
                arity(2)?;
                let (k, v) = (utf8(&arrays[0])?, utf8(&arrays[1])?);
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for i in 0..n {
                    if k.is_valid(i) && v.is_valid(i) {
                        b.append_option(lianqin_domain::check_field(k.value(i), v.value(i)).map(|x| x.rule));
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Flags => {
                let cols: Vec<StringArray> = arrays.iter().map(utf8).collect::<Result<_>>()?;
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for i in 0..n {
                    let v: Vec<&str> =
                        cols.iter().filter(|c| c.is_valid(i) && !c.value(i).is_empty()).map(|c| c.value(i)).collect();
                    if v.is_empty() {
                        b.append_null();
                    } else {
                        b.append_value(serde_json::to_string(&v).unwrap_or_default());
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Nfkc => {
                arity(1)?;
                let s = utf8(&arrays[0])?;
                let mut b = StringBuilder::with_capacity(n, n * 16);
                for i in 0..n {
                    b.append_option(s.is_valid(i).then(|| lianqin_domain::normalize_text(s.value(i))));
                }
                Arc::new(b.finish())
            }
            Kind::Wgs84Lon | Kind::Wgs84Lat => {
                arity(3)?;
                let (lon, lat, crs) = (f64s(&arrays[0])?, f64s(&arrays[1])?, utf8(&arrays[2])?);
                let mut b = Float64Builder::with_capacity(n);
                for i in 0..n {
                    if !(lon.is_valid(i) && lat.is_valid(i)) {
                        b.append_null();
                        continue;
                    }
                    let c: Option<Crs> = if crs.is_valid(i) { crs.value(i).parse().ok() } else { Some(Crs::Wgs84) };
                    match c {
                        Some(c) => {
                            let (x, y) = lianqin_domain::to_wgs84(lon.value(i), lat.value(i), c);
                            b.append_value(if self.kind == Kind::Wgs84Lon { x } else { y });
                        }
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::DivisionFromPoint => {
                arity(2)?;
                let (lon, lat) = (f64s(&arrays[0])?, f64s(&arrays[1])?);
                let mut b = StringBuilder::with_capacity(n, n * 6);
                for i in 0..n {
                    b.append_option(
                        (lon.is_valid(i) && lat.is_valid(i))
                            .then(|| lianqin_domain::division_from_point(lon.value(i), lat.value(i)))
                            .flatten(),
                    );
                }
                Arc::new(b.finish())
            }
            Kind::DivisionFromAddress => {
                arity(1)?;
                let s = utf8(&arrays[0])?;
                let mut b = StringBuilder::with_capacity(n, n * 6);
                for i in 0..n {
                    b.append_option(s.is_valid(i).then(|| lianqin_domain::division_from_address(s.value(i))).flatten());
                }
                Arc::new(b.finish())
            }
            Kind::AddWorkingDays => {
                arity(2)?;
                let ts = cast(&arrays[0], &ts_type())?;
                let ts = ts.as_any().downcast_ref::<TimestampMicrosecondArray>().ok_or_else(|| {
                    DataFusionError::Plan("add_working_days: first argument must be a timestamp".into())
                })?;
                let days = cast(&arrays[1], &DataType::Int64)?;
                let days =
                    days.as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::from(vec![0; n]));
                let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                for i in 0..n {
                    if !(ts.is_valid(i) && days.is_valid(i)) || days.value(i) < 0 {
                        b.append_null();
                        continue;
                    }
                    let Some(t) = DateTime::<Utc>::from_timestamp_micros(ts.value(i)) else {
                        b.append_null();
                        continue;
                    };
                    let local = t.with_timezone(&beijing());
                    match lianqin_domain::add_working_days(local.date_naive(), days.value(i) as u32) {
                        Ok(d) => {
                            let shift = d.num_days_from_ce() - local.date_naive().num_days_from_ce();
                            b.append_value(ts.value(i) + i64::from(shift) * 86_400_000_000);
                        }
                        Err(_) => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::WaterClass => {
                if arrays.len() % 2 != 0 || arrays.is_empty() {
                    return Err(DataFusionError::Plan("water_class takes pairs (factor code, value)".into()));
                }
                let codes: Vec<StringArray> = arrays.iter().step_by(2).map(utf8).collect::<Result<_>>()?;
                let vals: Vec<Float64Array> = arrays.iter().skip(1).step_by(2).map(f64s).collect::<Result<_>>()?;
                let mut b = StringBuilder::with_capacity(n, n * 3);
                for i in 0..n {
                    let readings: Vec<lianqin_domain::water::Reading> = codes
                        .iter()
                        .zip(&vals)
                        .filter(|(c, v)| c.is_valid(i) && v.is_valid(i))
                        .filter_map(|(c, v)| lianqin_domain::water::Reading::from_hj212(c.value(i), v.value(i)))
                        .collect();
                    b.append_option(lianqin_domain::classify(&readings).map(|c| c.as_str()));
                }
                Arc::new(b.finish())
            }
            Kind::WaterWorse => {
                arity(2)?;
                let (c, t) = (utf8(&arrays[0])?, utf8(&arrays[1])?);
                let mut b = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    let parsed = (c.is_valid(i) && t.is_valid(i))
                        .then(|| {
                            let a: Option<lianqin_domain::WaterClass> = c.value(i).parse().ok();
                            let z: Option<lianqin_domain::WaterClass> = t.value(i).parse().ok();
                            a.zip(z)
                        })
                        .flatten();
                    b.append_option(parsed.map(|(a, z)| lianqin_domain::worse_than_target(a, z)));
                }
                Arc::new(b.finish())
            }
            Kind::NormCitizenId
            | Kind::NormUscc
            | Kind::NormPlate
            | Kind::NormPhone
            | Kind::NormName
            | Kind::OrgCodeOfUscc
            | Kind::NormOrgCode
            | Kind::NormUnitName => {
                arity(1)?;
                let s = utf8(&arrays[0])?;
                let mut b = StringBuilder::with_capacity(n, n * 18);
                for i in 0..n {
                    b.append_option(s.is_valid(i).then(|| normalized(self.kind, s.value(i))).flatten());
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The matching form of one identifier (the `norm_*` functions): `None` for
/// a blank value, a null sentinel, or a value the rule rejects.
fn normalized(kind: Kind, v: &str) -> Option<String> {
    if lianqin_domain::text::is_null_sentinel(v) {
        return None;
    }
    let out = match kind {
        Kind::NormCitizenId => lianqin_domain::normalize_citizen_id(v).ok(),
        Kind::NormUscc => lianqin_domain::normalize_uscc(v).ok(),
        Kind::NormPlate => Some(lianqin_domain::normalize_plate(v)),
        Kind::NormPhone => lianqin_domain::normalize_phone_digits(v).ok(),
        Kind::NormName => Some(lianqin_domain::normalize_name(v)),
        Kind::OrgCodeOfUscc => lianqin_domain::uscc_org_code(v).ok(),
        Kind::NormOrgCode => lianqin_domain::validate_org_code(v).ok(),
        Kind::NormUnitName => lianqin_resolve::normalize::unit_name(v),
        _ => None,
    };
    out.filter(|s| !s.is_empty())
}

fn utf8(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    c.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| DataFusionError::Plan("expected text".into()))
}

fn f64s(a: &ArrayRef) -> Result<Float64Array> {
    let c = cast(a, &DataType::Float64)?;
    c.as_any().downcast_ref::<Float64Array>().cloned().ok_or_else(|| DataFusionError::Plan("expected a number".into()))
}

/// Registers every Lianqin SQL function on a session.
pub fn register(ctx: &SessionContext, catalog: &Catalog) {
    let mut codes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for t in catalog.codes.values() {
        let m = codes.entry(t.name.clone()).or_default();
        for c in &t.codes {
            m.insert(c.code.clone(), c.code.clone());
            m.insert(c.zh.clone(), c.code.clone());
            m.insert(c.en.clone(), c.code.clone());
        }
    }
    let any = |n: usize| Signature::any(n, Volatility::Immutable);
    let defs: Vec<(&'static str, Kind, Signature)> = vec![
        ("code_of", Kind::CodeOf, any(2)),
        ("check", Kind::Check, any(2)),
        ("flags", Kind::Flags, Signature::variadic_any(Volatility::Immutable)),
        ("nfkc", Kind::Nfkc, any(1)),
        ("norm_citizen_id", Kind::NormCitizenId, any(1)),
        ("norm_uscc", Kind::NormUscc, any(1)),
        ("norm_plate", Kind::NormPlate, any(1)),
        ("norm_phone", Kind::NormPhone, any(1)),
        ("norm_name", Kind::NormName, any(1)),
        ("org_code_of_uscc", Kind::OrgCodeOfUscc, any(1)),
        ("norm_org_code", Kind::NormOrgCode, any(1)),
        ("norm_unit_name", Kind::NormUnitName, any(1)),
        ("wgs84_lon", Kind::Wgs84Lon, any(3)),
        ("wgs84_lat", Kind::Wgs84Lat, any(3)),
        ("division_from_point", Kind::DivisionFromPoint, any(2)),
        ("division_from_address", Kind::DivisionFromAddress, any(1)),
        ("add_working_days", Kind::AddWorkingDays, any(2)),
        ("water_class", Kind::WaterClass, Signature::variadic_any(Volatility::Immutable)),
        ("water_worse", Kind::WaterWorse, any(2)),
    ];
    for (name, kind, signature) in defs {
        let codes = if kind == Kind::CodeOf { codes.clone() } else { BTreeMap::new() };
        ctx.register_udf(ScalarUDF::new_from_impl(LianqinUdf { name, kind, signature, codes }));
    }
    // Keyed with the process key; a hub's mapping sessions re-register it
    // with their data dir's key (`Normalizer::new_in`).
    ctx.register_udf(crate::mapping::personal::person_token_udf(crate::mapping::personal::KeyScope::Process));
}

/// Functions of mapping sessions that must not be callable in a query
/// session (oracles over keyed tokens): `person_token`.
pub const MAPPING_ONLY: &[&str] = &["person_token"];

/// Removes [`MAPPING_ONLY`] functions from a query session.
pub fn forbid_oracles(ctx: &SessionContext) {
    for f in MAPPING_ONLY {
        ctx.deregister_udf(f);
    }
}

#[cfg(test)]
mod norm_tests {
    use super::*;

    /// The `norm_*` functions over one row each: SQL text → value (NULL as `None`).
    async fn one(sql_expr: &str) -> Option<String> {
        let ctx = SessionContext::new();
        register(&ctx, &Catalog::builtin().unwrap());
        let batches = ctx.sql(&format!("SELECT {sql_expr} AS v")).await.unwrap().collect().await.unwrap();
        let col = cast(batches[0].column(0), &DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        col.is_valid(0).then(|| col.value(0).to_string())
    }

    #[tokio::test]
    async fn norm_functions() {
        for (expr, want) in [
            ("norm_citizen_id('110105491231002')", Some("11010519491231002X")),
            ("norm_citizen_id(' １１０１０５１９４９１２３１００２ｘ ')", Some("11010519491231002X")),
            ("norm_citizen_id('110105194912310021')", None),
            ("norm_citizen_id('  ')", None),
            ("norm_citizen_id(NULL)", None),
            ("norm_uscc(' ９１３５０２００７７６０４９６５３ａ')", Some("91350200776049653A")),
            ("norm_uscc('91350203m0001qay9b')", Some("91350203M0001QAY9B")),
            ("norm_uscc('暂无')", None),
            ("norm_uscc('913502007760')", None),
            ("norm_plate('浙ｅ·１２３４５')", Some("浙E12345")),
            ("norm_plate(' 浙E 12345 ')", Some("浙E12345")),
            ("norm_plate('')", None),
            ("norm_phone('+86 138-1234-5678')", Some("13812345678")),
            ("norm_phone('0572-2123456')", Some("05722123456")),
            ("norm_phone('2123456')", None),
            ("norm_phone('/')", None),
            ("norm_name('\u{3000}张\u{3000}三 ')", Some("张 三")),
            ("norm_name('无')", None),
            ("org_code_of_uscc('91350200776049653A')", Some("776049653")),
            ("org_code_of_uscc('91350203M0001QAY9B')", None),
            ("norm_org_code('77604965-3')", Some("776049653")),
            ("norm_org_code('776049654')", None),
            ("norm_org_code('77604965-3') = org_code_of_uscc('91350200776049653A')", Some("true")),
            ("norm_unit_name('湖州市吴兴区鑫达化工有限公司')", Some("鑫达化工")),
            ("norm_unit_name('鑫达化工厂') = norm_unit_name('浙江鑫达化工股份有限公司')", Some("true")),
            ("norm_unit_name('无')", None),
        ] {
            assert_eq!(one(expr).await.as_deref(), want, "{expr}");
        }
    }
}
