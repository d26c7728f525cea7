//! Source mappings: how one source's raw records become library rows.
//!
//! A mapping is a TOML file in `schemas/mappings/` (see the README there):
//! the raw fields to read, with their types, and one SQL query per output
//! library, run by DataFusion over the micro-batch table `raw`.
//!
//! ```toml
//! name = "police_110"
//! version = "3"
//! key_field = "jjdbh"
//! [fields]
//! jjdbh = { type = "utf8", required = true }
//! jd = "float64"
//! [[outputs]]
//! library = "matter"
//! sql = "SELECT _row, '110:' || jjdbh AS matter_id, ... FROM raw"
//! ```
//!
//! Besides the declared fields, `raw` has `_row` (the record's index in the
//! batch; every output must select it so rows can be traced back),
//! `_key`, `_op` (`upsert`/`delete`), `_source_time`, `_department`,
//! `_payload` (the whole record as JSON text; filled only when an output
//! query names it), `_flags` (JSON array of
//! `type.<field>` for each field whose value could not be read and became
//! NULL — by default every field but the key and the `required` ones, see
//! [`OnError`]) and,
//! last, `_public_payload` (the record without its personal fields).
//!
//! A field carrying personal data says so with a semantic label
//! (`personal = "citizen_id"`, see [`personal`]): ids built from it use
//! `person_token(...)`, and `attributes` is `_public_payload`, never
//! `_payload`; [`Mapping::parse`] refuses an output that selects `_payload`
//! when the mapping has personal fields.
//!
//! A mapping may also declare reference tables (`[[references]]`, CSV files
//! beside the mappings, see [`reference`]); each is a table its SQL can
//! join by name, loaded and checked with the mapping.

pub mod personal;
pub mod reference;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lianqin_bus::{Envelope, Member, Members};
use serde::Deserialize;
use serde_json::Value;

use self::personal::{PersonalFields, PersonalKind};
use self::reference::{ReferenceSpec, ReferenceTable};
use crate::PipelineError;
use crate::schema::ColumnType;
use crate::time::parse_time_utc_micros;

/// What to do when a field's value cannot be read as its type.
///
/// Unless a field says otherwise, a secondary field never costs the record:
/// a field that is neither `required` nor the mapping's `key_field` becomes
/// NULL and the record carries the flag `type.<field>` ([`OnError::Flag`]);
/// the key and required fields send the record to quarantine
/// ([`OnError::Quarantine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The record goes to quarantine (default for the key and required fields).
    Quarantine,
    /// The field becomes null and the record carries a flag (default for
    /// every other field).
    Flag,
}

/// One raw field read from the record.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FieldSpec {
    /// `name = "float64"`.
    Short(ColumnType),
    /// `name = { type = "float64", required = true, on_error = "flag", path = "/a/b", personal = "phone" }`.
    Full {
        /// Type.
        #[serde(rename = "type")]
        ty: ColumnType,
        /// Missing or null sends the record to quarantine.
        #[serde(default)]
        required: bool,
        /// Wrong-type handling; when absent, see [`OnError`].
        #[serde(default)]
        on_error: Option<OnError>,
        /// JSON pointer when the field is nested (default: top-level by name).
        #[serde(default)]
        path: Option<String>,
        /// Semantic label when the field is personal data (`citizen_id`,
        /// `phone`, `name`, `address`, `plate`); checked by
        /// [`Mapping::parse`], which names the file and field.
        #[serde(default)]
        personal: Option<String>,
    },
}

impl FieldSpec {
    fn ty(&self) -> ColumnType {
        match self {
            FieldSpec::Short(t) | FieldSpec::Full { ty: t, .. } => *t,
        }
    }
    fn required(&self) -> bool {
        matches!(self, FieldSpec::Full { required: true, .. })
    }
    /// What a value that cannot be read does: the field's own `on_error`,
    /// else quarantine for the key field (`is_key`) and required fields and
    /// a flag for every other field (see [`OnError`]).
    fn on_error(&self, is_key: bool) -> OnError {
        match self {
            FieldSpec::Full { on_error: Some(e), .. } => *e,
            _ if is_key || self.required() => OnError::Quarantine,
            _ => OnError::Flag,
        }
    }
    fn path(&self) -> Option<&str> {
        match self {
            FieldSpec::Full { path: Some(p), .. } => Some(p),
            _ => None,
        }
    }
    /// The personal label, if the field declares one (valid after parsing).
    pub fn personal(&self) -> Option<PersonalKind> {
        match self {
            FieldSpec::Full { personal: Some(p), .. } => PersonalKind::parse(p).ok(),
            _ => None,
        }
    }
}

/// One output: a SQL query producing rows of a library.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Target library (`element`, `matter`, `matter_event`).
    pub library: String,
    /// The query over `raw`.
    pub sql: String,
}

/// A mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Mapping name.
    pub name: String,
    /// Version; recorded on every row as `mapping_version`.
    pub version: String,
    /// What it maps.
    #[serde(default)]
    pub description: String,
    /// The field holding the record key (for error messages).
    #[serde(default)]
    pub key_field: Option<String>,
    /// Raw fields, in a stable order.
    pub fields: BTreeMap<String, FieldSpec>,
    /// Reference tables the SQL joins (`[[references]]`).
    #[serde(default)]
    pub references: Vec<ReferenceSpec>,
    /// Outputs.
    pub outputs: Vec<OutputSpec>,
    /// Where it was loaded from.
    #[serde(skip)]
    pub origin: String,
    /// The reference tables, loaded (one per `references` entry).
    #[serde(skip)]
    pub tables: Vec<ReferenceTable>,
}

/// Keys a field table may have (`name = { type = …, … }`).
const FIELD_KEYS: &[&str] = &["type", "required", "on_error", "path", "personal"];

/// Field tables are read untagged, which would ignore a misspelt key (a
/// `persnal = "phone"` would silently leave a phone in `attributes`):
/// unknown keys are refused, naming the file, the field and the key.
fn check_field_keys(text: &str, origin: &str) -> Result<(), PipelineError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| PipelineError::Config(format!("mapping {origin}: {e}")))?;
    let Some(toml::Value::Table(fields)) = doc.get("fields") else { return Ok(()) };
    for (name, spec) in fields {
        if let toml::Value::Table(t) = spec
            && let Some(k) = t.keys().find(|k| !FIELD_KEYS.contains(&k.as_str()))
        {
            return Err(PipelineError::Config(format!(
                "mapping {origin}: field `{name}`: unknown key `{k}` (expected one of {})",
                FIELD_KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Mappings shipped in `schemas/mappings/` (compiled in).
pub const BUILTIN_MAPPINGS: &[(&str, &str)] = &[
    ("police_110", include_str!("../../schemas/mappings/police_110.toml")),
    ("hotline_12345", include_str!("../../schemas/mappings/hotline_12345.toml")),
    ("hotline_12345_orders", include_str!("../../schemas/mappings/hotline_12345_orders.toml")),
    ("market_enterprise", include_str!("../../schemas/mappings/market_enterprise.toml")),
    ("law_enforcement_case", include_str!("../../schemas/mappings/law_enforcement_case.toml")),
    ("env_water_quality", include_str!("../../schemas/mappings/env_water_quality.toml")),
    ("env_complaint", include_str!("../../schemas/mappings/env_complaint.toml")),
];

impl Mapping {
    /// Parses mapping text; `origin` names the file in errors. Reference
    /// files are the compiled-in copies from `schemas/reference/`.
    pub fn parse(text: &str, origin: &str) -> Result<Mapping, PipelineError> {
        Mapping::parse_in(text, origin, None)
    }

    /// Parses mapping text whose reference files are relative to `dir`
    /// (the mapping file's folder), or compiled in when `dir` is `None`.
    pub fn parse_in(text: &str, origin: &str, dir: Option<&Path>) -> Result<Mapping, PipelineError> {
        let mut m: Mapping =
            toml::from_str(text).map_err(|e| PipelineError::Config(format!("mapping {origin}: {e}")))?;
        check_field_keys(text, origin)?;
        m.origin = origin.to_string();
        if m.outputs.is_empty() {
            return Err(PipelineError::Config(format!("mapping {origin}: no [[outputs]]")));
        }
        for (name, spec) in &m.fields {
            if name.starts_with('_') {
                return Err(PipelineError::Config(format!(
                    "mapping {origin}: field `{name}`: names starting with '_' are reserved"
                )));
            }
            if let FieldSpec::Full { personal: Some(p), .. } = spec {
                PersonalKind::parse(p)
                    .map_err(|e| PipelineError::Config(format!("mapping {origin}: field `{name}`: personal: {e}")))?;
            }
        }
        personal::check_outputs(&m)?;
        let mut names = std::collections::BTreeSet::new();
        for r in &m.references {
            if !names.insert(r.name.as_str()) {
                return Err(PipelineError::Config(format!("mapping {origin}: reference `{}` declared twice", r.name)));
            }
            m.tables.push(r.load(dir, origin)?);
        }
        Ok(m)
    }

    /// Loads a mapping: a path (relative to `base`) when such a file
    /// exists, otherwise a built-in mapping by name.
    pub fn load(reference: &str, base: &Path) -> Result<Mapping, PipelineError> {
        let p: PathBuf = if Path::new(reference).is_absolute() { reference.into() } else { base.join(reference) };
        if p.is_file() {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| PipelineError::Config(format!("mapping {}: {e}", p.display())))?;
            return Mapping::parse_in(&text, &p.display().to_string(), p.parent());
        }
        let stem = Path::new(reference).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        for (name, text) in BUILTIN_MAPPINGS {
            if *name == reference || *name == stem {
                return Mapping::parse(text, &format!("builtin:{name}"));
            }
        }
        Err(PipelineError::Config(format!(
            "mapping `{reference}`: no file {} and no built-in mapping of that name (built-in: {})",
            p.display(),
            BUILTIN_MAPPINGS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Whether any output query reads `_payload` (the whole record as JSON
    /// text). When none does, the `raw` batch leaves the column NULL instead
    /// of serializing every record once more.
    pub fn uses_payload(&self) -> bool {
        self.outputs.iter().any(|o| o.sql.replace("_public_payload", "").contains("_payload"))
    }

    /// `name@version`.
    pub fn version_tag(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Arrow schema of the `raw` micro-batch table.
    pub fn raw_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("_row", DataType::Int64, false),
            Field::new("_key", DataType::Utf8, true),
            Field::new("_op", DataType::Utf8, true),
            Field::new("_source_time", DataType::Utf8, true),
            Field::new("_department", DataType::Utf8, true),
            Field::new("_payload", DataType::Utf8, true),
            Field::new("_flags", DataType::Utf8, true),
        ];
        for (name, spec) in &self.fields {
            fields.push(Field::new(name, spec.ty().arrow(), true));
        }
        fields.push(Field::new("_public_payload", DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }

    /// The declared personal fields: (name, JSON pointer, label).
    pub fn personal_fields(&self) -> PersonalFields<'_> {
        self.fields.iter().filter_map(|(n, s)| Some((n.as_str(), s.path(), s.personal()?))).collect()
    }
}

/// A record that could not be read, with its reason.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index of the envelope in the batch.
    pub index: usize,
    /// The field at fault, if one.
    pub field: Option<String>,
    /// Reason (names source, key and field).
    pub reason: String,
}

/// Null sentinels departments send for "no value" (domain.md §9.3).
fn is_null_sentinel(s: &str) -> bool {
    matches!(s.trim(), "" | "无" | "/" | "-" | "暂无" | "NULL" | "null" | "N/A")
}

enum Conv<'a> {
    Null,
    Utf8(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(i64),
}

fn convert<'a>(v: Member<'a>, ty: ColumnType) -> Result<Conv<'a>, String> {
    match (ty, v) {
        (_, Member::Null) => Ok(Conv::Null),
        (ColumnType::Utf8, Member::Str(s)) => Ok(if is_null_sentinel(&s) { Conv::Null } else { Conv::Utf8(s) }),
        (ColumnType::Utf8, Member::Number(n)) => Ok(Conv::Utf8(n.to_string().into())),
        (ColumnType::Utf8, Member::Bool(b)) => Ok(Conv::Utf8(b.to_string().into())),
        (ColumnType::Utf8, Member::Nested(v)) => Ok(Conv::Utf8(v.to_string().into())),
        (ColumnType::Int64, Member::Number(n)) => {
            n.as_i64().map(Conv::Int).ok_or_else(|| format!("expected an integer, got {n}"))
        }
        (ColumnType::Int64, Member::Str(s)) if is_null_sentinel(&s) => Ok(Conv::Null),
        (ColumnType::Int64, Member::Str(s)) => {
            s.trim().parse::<i64>().map(Conv::Int).map_err(|_| format!("expected an integer, got {s:?}"))
        }
        (ColumnType::Float64, Member::Number(n)) => {
            n.as_f64().map(Conv::Float).ok_or_else(|| format!("expected a number, got {n}"))
        }
        (ColumnType::Float64, Member::Str(s)) if is_null_sentinel(&s) => Ok(Conv::Null),
        (ColumnType::Float64, Member::Str(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Conv::Float(f)),
            // Coordinates typed as text: `东经120.1度`, `北纬30°30′`.
            _ if s.contains(['度', '°', '经', '纬']) => lianqin_domain::parse_degrees(&s)
                .map(Conv::Float)
                .map_err(|e| format!("expected a number, got {s:?} ({})", e.rule)),
            _ => Err(format!("expected a number, got {s:?}")),
        },
        (ColumnType::Bool, Member::Bool(b)) => Ok(Conv::Bool(b)),
        (ColumnType::Bool, Member::Number(n)) => Ok(Conv::Bool(n.as_f64().unwrap_or(0.0) != 0.0)),
        (ColumnType::Bool, Member::Str(s)) => match s.trim() {
            "1" | "true" | "TRUE" | "是" | "Y" | "y" => Ok(Conv::Bool(true)),
            "0" | "false" | "FALSE" | "否" | "N" | "n" => Ok(Conv::Bool(false)),
            t if is_null_sentinel(t) => Ok(Conv::Null),
            _ => Err(format!("expected a boolean, got {s:?}")),
        },
        (ColumnType::Timestamp, Member::Str(s)) if is_null_sentinel(&s) => Ok(Conv::Null),
        (ColumnType::Timestamp, Member::Str(s)) => parse_time_utc_micros(&s).map(Conv::Ts),
        (ColumnType::Timestamp, Member::Number(n)) => match n.as_i64() {
            // Epoch milliseconds, as gateways send.
            Some(ms) => Ok(Conv::Ts(ms * 1000)),
            None => Err(format!("expected a time, got {n}")),
        },
        (t, other) => Err(format!("expected {}, got {}", t.name(), kind_of(&other))),
    }
}

fn kind_of(v: &Member<'_>) -> String {
    match v {
        Member::Null => "null".into(),
        Member::Bool(b) => format!("boolean {b}"),
        Member::Number(n) => format!("number {n}"),
        Member::Str(s) => format!("text {s:?}"),
        Member::Nested(v) if v.is_array() => "an array".into(),
        Member::Nested(_) => "an object".into(),
    }
}

/// "source `s` record `k`" in a rejection.
struct Who<'a>(&'a str, &'a str);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "source `{}` record `{}`", self.0, if self.1.is_empty() { "?" } else { self.1 })
    }
}

/// ` (locator)` after a record's name in a rejection, or nothing.
struct Where<'a>(Option<&'a str>);

impl std::fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(l) => write!(f, " ({l})"),
            None => Ok(()),
        }
    }
}

enum ColBuilder {
    Utf8(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    fn new(ty: ColumnType, cap: usize) -> Self {
        match ty {
            ColumnType::Utf8 => ColBuilder::Utf8(StringBuilder::with_capacity(cap, cap * 16)),
            ColumnType::Int64 => ColBuilder::Int(Int64Builder::with_capacity(cap)),
            ColumnType::Float64 => ColBuilder::Float(Float64Builder::with_capacity(cap)),
            ColumnType::Bool => ColBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            ColumnType::Timestamp => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"))
            }
        }
    }
    fn push(&mut self, c: Conv) {
        match (self, c) {
            (ColBuilder::Utf8(b), Conv::Utf8(s)) => b.append_value(s),
            (ColBuilder::Int(b), Conv::Int(i)) => b.append_value(i),
            (ColBuilder::Float(b), Conv::Float(f)) => b.append_value(f),
            (ColBuilder::Bool(b), Conv::Bool(v)) => b.append_value(v),
            (ColBuilder::Ts(b), Conv::Ts(t)) => b.append_value(t),
            (ColBuilder::Utf8(b), _) => b.append_null(),
            (ColBuilder::Int(b), _) => b.append_null(),
            (ColBuilder::Float(b), _) => b.append_null(),
            (ColBuilder::Bool(b), _) => b.append_null(),
            (ColBuilder::Ts(b), _) => b.append_null(),
        }
    }
    fn finish(self) -> ArrayRef {
        match self {
            ColBuilder::Utf8(mut b) => Arc::new(b.finish()),
            ColBuilder::Int(mut b) => Arc::new(b.finish()),
            ColBuilder::Float(mut b) => Arc::new(b.finish()),
            ColBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColBuilder::Ts(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Reads envelopes into the typed `raw` batch. Returns the batch (one row
/// per accepted envelope; `_row` is the envelope's index) and the rejected
/// envelopes with reasons.
pub fn build_raw_batch(
    mapping: &Mapping,
    source: &str,
    envelopes: &[&Envelope],
    indices: &[usize],
) -> Result<(RecordBatch, Vec<Rejection>), PipelineError> {
    let n = envelopes.len();
    let mut row = Int64Builder::with_capacity(n);
    let mut key = StringBuilder::with_capacity(n, n * 16);
    let mut op = StringBuilder::with_capacity(n, n * 6);
    let mut st = StringBuilder::with_capacity(n, n * 20);
    let mut dept = StringBuilder::with_capacity(n, n * 8);
    let mut payload = StringBuilder::with_capacity(n, n * 256);
    let mut flags = StringBuilder::with_capacity(n, n * 4);
    let specs: Vec<(&String, &FieldSpec)> = mapping.fields.iter().collect();
    let mut cols: Vec<ColBuilder> = specs.iter().map(|(_, s)| ColBuilder::new(s.ty(), n)).collect();
    let mut rejections = Vec::new();
    let key_field = mapping.key_field.as_deref().unwrap_or("key");
    let mut convs: Vec<Conv> = Vec::with_capacity(specs.len());
    let with_payload = mapping.uses_payload();
    let with_public = personal::uses_public_payload(mapping);
    let personal = mapping.personal_fields();
    // Free-text fields (by position in `specs`) and the other personal
    // fields whose values are masked inside them.
    let free: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| s.personal() == Some(PersonalKind::FreeText))
        .map(|(i, _)| i)
        .collect();
    let known_of: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| s.personal().is_some_and(|k| k != PersonalKind::FreeText))
        .map(|(i, _)| i)
        .collect();
    let mut public = StringBuilder::with_capacity(n, if with_public { n * 256 } else { 0 });
    // Paths and `_public_payload` read the parsed tree; else members are read
    // straight from the text.
    let tree_needed = with_public || specs.iter().any(|(_, s)| s.path().is_some());
    'records: for (env, &index) in envelopes.iter().zip(indices) {
        // Only rejections print these.
        let who = Who(source, &env.key);
        let where_ = Where(env.locator.as_deref());
        if let Some(err) = &env.error {
            rejections.push(Rejection { index, field: None, reason: format!("{who}: unparsable: {err}") });
            continue;
        }
        // The record's members: read from its canonical text without building
        // a tree, or — for paths into nested members, `_public_payload`, or a
        // text that is not a JSON object — from the parsed tree.
        let members = if tree_needed { None } else { Members::parse(env.payload_text()).ok() };
        let obj = match &members {
            Some(_) => None,
            None => match env.payload() {
                Value::Object(o) => Some(o),
                other => {
                    rejections.push(Rejection {
                        index,
                        field: None,
                        reason: format!(
                            "{who}{where_}: record is {}, not a JSON object",
                            kind_of(&Member::from_value(other))
                        ),
                    });
                    continue;
                }
            },
        };
        if env.key.trim().is_empty() {
            rejections.push(Rejection {
                index,
                field: Some(key_field.to_string()),
                reason: format!("{who}{where_}: missing key field `{key_field}`"),
            });
            continue;
        }
        convs.clear();
        let mut row_flags: Vec<String> = Vec::new();
        for (name, spec) in &specs {
            let v = match (&members, spec.path()) {
                (Some(m), _) => m.get(name),
                (None, Some(p)) => env.payload().pointer(p).map(Member::from_value),
                (None, None) => obj.and_then(|o| o.get(name.as_str())).map(Member::from_value),
            };
            let conv = match v {
                None => Conv::Null,
                Some(v) => match convert(v, spec.ty()) {
                    Ok(c) => c,
                    Err(why) => match spec.on_error(Some(name.as_str()) == mapping.key_field.as_deref()) {
                        OnError::Quarantine => {
                            rejections.push(Rejection {
                                index,
                                field: Some(name.to_string()),
                                reason: format!("{who}{where_}: field `{name}`: {why}"),
                            });
                            continue 'records;
                        }
                        OnError::Flag => {
                            row_flags.push(format!("type.{name}"));
                            Conv::Null
                        }
                    },
                },
            };
            if spec.required() && matches!(conv, Conv::Null) {
                rejections.push(Rejection {
                    index,
                    field: Some(name.to_string()),
                    reason: format!("{who}{where_}: required field `{name}` is missing or empty"),
                });
                continue 'records;
            }
            convs.push(conv);
        }
        // Personal data inside free text (see `personal`): masked in the
        // column the mapping reads and in `_public_payload`.
        let known: Vec<&str> = if free.is_empty() {
            Vec::new()
        } else {
            known_of
                .iter()
                .filter_map(|&i| if let Conv::Utf8(v) = &convs[i] { Some(v.as_ref()) } else { None })
                .collect()
        };
        let scrubbed: Vec<(usize, String)> = free
            .iter()
            .filter_map(|&i| match &convs[i] {
                Conv::Utf8(v) => match personal::scrub(v, &known) {
                    std::borrow::Cow::Owned(s) => Some((i, s)),
                    std::borrow::Cow::Borrowed(_) => None,
                },
                _ => None,
            })
            .collect();
        // Personal data (see `personal`): the record without its personal
        // fields, free text scrubbed.
        public.append_option(if with_public { personal::public_text(env.payload(), &personal, &known) } else { None });
        for (i, s) in scrubbed {
            convs[i] = Conv::Utf8(Cow::Owned(s));
        }
        row.append_value(index as i64);
        key.append_value(&env.key);
        op.append_value(env.op.as_str());
        st.append_option(env.source_time.as_deref());
        dept.append_value(&env.department);
        if with_payload {
            payload.append_value(env.payload_text());
        } else {
            payload.append_null();
        }
        if row_flags.is_empty() {
            flags.append_null();
        } else {
            flags.append_value(serde_json::to_string(&row_flags).unwrap_or_default());
        }
        for (b, c) in cols.iter_mut().zip(convs.drain(..)) {
            b.push(c);
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(row.finish()),
        Arc::new(key.finish()),
        Arc::new(op.finish()),
        Arc::new(st.finish()),
        Arc::new(dept.finish()),
        Arc::new(payload.finish()),
        Arc::new(flags.finish()),
    ];
    arrays.extend(cols.into_iter().map(ColBuilder::finish));
    arrays.push(Arc::new(public.finish()));
    let batch = RecordBatch::try_new(mapping.raw_schema(), arrays)
        .map_err(|e| PipelineError::Internal(format!("raw batch for {source}: {e}")))?;
    Ok((batch, rejections))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_rejections() {
        let m = Mapping::parse(
            r#"
name = "t"
version = "1"
key_field = "id"
[fields]
id = { type = "utf8", required = true }
x = "float64"
y = { type = "float64", on_error = "flag" }
t = "timestamp"
[[outputs]]
library = "matter"
sql = "SELECT _row FROM raw"
"#,
            "test",
        )
        .unwrap();
        let e = |k: &str, v: Value| Envelope::upsert("s", "police", k, v, None);
        let envs = [
            e("1", serde_json::json!({"id": "1", "x": "3.5", "y": "未检出", "t": "2025-03-15 10:30:00"})),
            e("2", serde_json::json!({"id": "2", "x": "东经120度", "t": "2025.03.19"})),
            e("", serde_json::json!({"x": 1})),
            e("4", serde_json::json!({"id": "无"})),
            e("5", serde_json::json!([1, 2])),
        ];
        let refs: Vec<&Envelope> = envs.iter().collect();
        let idx: Vec<usize> = (0..envs.len()).collect();
        let (b, rej) = build_raw_batch(&m, "s", &refs, &idx).unwrap();
        // A secondary field that cannot be read costs the field, not the record.
        assert_eq!(b.num_rows(), 2);
        assert_eq!(rej.len(), 3);
        assert!(rej[0].reason.contains("missing key field `id`"));
        assert!(rej[1].reason.contains("required field `id`"));
        assert!(rej[2].reason.contains("not a JSON object"));
        let flags = b.column_by_name("_flags").unwrap();
        let flags = flags.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!(flags.value(0), r#"["type.y"]"#);
        assert_eq!(flags.value(1), r#"["type.x"]"#);
        let x = b.column_by_name("x").unwrap();
        assert!(x.is_null(1), "东经120度 is not a position: NULL");
        let t = b.column_by_name("t").unwrap();
        let t = t.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().unwrap();
        assert_eq!(t.value(1), parse_time_utc_micros("2025-03-19 00:00:00").unwrap());
    }

    /// The key and required fields still quarantine a record whose value
    /// cannot be read, as does a field that asks for it; coordinates typed
    /// in degrees are read.
    #[test]
    fn key_and_required_fields_still_quarantine() {
        let m = Mapping::parse(
            r#"
name = "t"
version = "1"
key_field = "id"
[fields]
id = "int64"
n = { type = "int64", required = true }
strict = { type = "float64", on_error = "quarantine" }
jd = "float64"
wd = "float64"
[[outputs]]
library = "matter"
sql = "SELECT _row FROM raw"
"#,
            "test",
        )
        .unwrap();
        let e = |k: &str, v: Value| Envelope::upsert("s", "police", k, v, None);
        let envs = [
            e("a", serde_json::json!({"id": "a", "n": 1})),
            e("2", serde_json::json!({"id": 2, "n": "many"})),
            e("3", serde_json::json!({"id": 3, "n": 1, "strict": "x"})),
            e("4", serde_json::json!({"id": 4, "n": 1, "jd": "东经120.1度", "wd": "北纬30°30′"})),
        ];
        let refs: Vec<&Envelope> = envs.iter().collect();
        let idx: Vec<usize> = (0..envs.len()).collect();
        let (b, rej) = build_raw_batch(&m, "s", &refs, &idx).unwrap();
        let fields: Vec<Option<&str>> = rej.iter().map(|r| r.field.as_deref()).collect();
        assert_eq!(fields, [Some("id"), Some("n"), Some("strict")]);
        assert_eq!(b.num_rows(), 1);
        assert!(b.column_by_name("_flags").unwrap().is_null(0));
        let f = |c: &str| {
            b.column_by_name(c).unwrap().as_any().downcast_ref::<arrow::array::Float64Array>().unwrap().value(0)
        };
        assert_eq!((f("jd"), f("wd")), (120.1, 30.5));
    }
}
