//! Library schemas and code tables, loaded from the data files in `schemas/`.
//!
//! The files are compiled into the binary (so a bare `lianqin` works
//! anywhere); `schemas/` in the repository is their single source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::PipelineError;

/// Sensitivity label of a column (§7.1.1 confidentiality management).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Anyone in the hub may see it.
    Public,
    /// Inside the departments of the hub.
    Internal,
    /// Personal or case-sensitive information.
    Sensitive,
    /// Classified; never leaves its department.
    Secret,
}

/// Column types used by library schemas and mapping fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text.
    Utf8,
    /// 64-bit integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Bool,
    /// UTC timestamp, microseconds.
    Timestamp,
}

impl ColumnType {
    /// The Arrow type.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// Name as written in schema files.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "utf8",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// One column of a library table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Chinese label.
    pub zh: String,
    /// English label.
    pub en: String,
    /// Sensitivity label.
    pub sensitivity: Sensitivity,
    /// Semantic label of personal content (`citizen_id`, `phone`, `name`,
    /// `address`, `plate`; see [`crate::mapping::personal`]): the column
    /// holds, or derives from, personal fields of mappings. Policies mask by
    /// it (`sem:<label>` rules); such a column must be `sensitive` or
    /// `secret`.
    #[serde(default)]
    pub personal: Option<String>,
    /// Must be non-null.
    #[serde(default)]
    pub required: bool,
    /// Code table the value must belong to.
    #[serde(default)]
    pub codes: Option<String>,
    /// Description.
    pub description: String,
}

/// A library table's schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibrarySchema {
    /// Table name.
    pub table: String,
    /// Chinese label.
    pub zh: String,
    /// English label.
    pub en: String,
    /// The library id column.
    pub key: String,
    /// Columns defined by the library (provenance columns are added).
    pub columns: Vec<ColumnDef>,
}

impl LibrarySchema {
    /// All columns: the library's own, then provenance.
    pub fn all_columns<'a>(&'a self, prov: &'a LibrarySchema) -> impl Iterator<Item = &'a ColumnDef> {
        self.columns.iter().chain(prov.columns.iter())
    }

    /// Looks up a column.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One code in a code table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    /// Machine code stored in tables.
    pub code: String,
    /// Chinese label.
    pub zh: String,
    /// English label.
    pub en: String,
    /// Order (stages).
    #[serde(default)]
    pub order: Option<u32>,
}

/// A code table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTable {
    /// Name.
    pub name: String,
    /// Chinese label.
    pub zh: String,
    /// English description.
    pub en: String,
    /// Codes.
    pub codes: Vec<Code>,
}

impl CodeTable {
    /// True when `code` is a code of this table.
    pub fn contains(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c.code == code)
    }

    /// Finds a code by its code, Chinese or English label.
    pub fn lookup(&self, text: &str) -> Option<&Code> {
        let t = text.trim();
        self.codes.iter().find(|c| c.code == t || c.zh == t || c.en.eq_ignore_ascii_case(t))
    }
}

/// The libraries the pipeline writes.
pub const LIBRARIES: [&str; 4] = ["element", "matter", "matter_event", "quarantine"];

const BUILTIN_LIBRARIES: &[(&str, &str)] = &[
    ("element", include_str!("../../schemas/libraries/element.toml")),
    ("matter", include_str!("../../schemas/libraries/matter.toml")),
    ("matter_event", include_str!("../../schemas/libraries/matter_event.toml")),
    ("quarantine", include_str!("../../schemas/libraries/quarantine.toml")),
];
const PROVENANCE: &str = include_str!("../../schemas/libraries/provenance.toml");
const BUILTIN_CODES: &[&str] = &[
    include_str!("../../schemas/codes/element_kind.toml"),
    include_str!("../../schemas/codes/matter_stage.toml"),
    include_str!("../../schemas/codes/case_outcome.toml"),
    include_str!("../../schemas/codes/material_category.toml"),
    include_str!("../../schemas/codes/department.toml"),
    include_str!("../../schemas/codes/division.toml"),
    include_str!("../../schemas/codes/id_type.toml"),
    include_str!("../../schemas/codes/satisfaction.toml"),
];

/// The schema catalog: libraries, provenance and code tables.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Library schemas by table name.
    pub libraries: BTreeMap<String, LibrarySchema>,
    /// Provenance columns added to every library row.
    pub provenance: LibrarySchema,
    /// Code tables by name.
    pub codes: BTreeMap<String, CodeTable>,
}

impl Catalog {
    /// The built-in catalog (the files under `schemas/`).
    pub fn builtin() -> Result<Arc<Catalog>, PipelineError> {
        let parse = |name: &str, text: &str| -> Result<LibrarySchema, PipelineError> {
            toml::from_str(text).map_err(|e| PipelineError::Schema(format!("schemas/libraries/{name}.toml: {e}")))
        };
        let mut libraries = BTreeMap::new();
        for (name, text) in BUILTIN_LIBRARIES {
            libraries.insert(name.to_string(), parse(name, text)?);
        }
        let provenance = parse("provenance", PROVENANCE)?;
        let mut codes = BTreeMap::new();
        for text in BUILTIN_CODES {
            let t: CodeTable =
                toml::from_str(text).map_err(|e| PipelineError::Schema(format!("schemas/codes: {e}")))?;
            codes.insert(t.name.clone(), t);
        }
        let cat = Catalog { libraries, provenance, codes };
        cat.check()?;
        Ok(Arc::new(cat))
    }

    fn check(&self) -> Result<(), PipelineError> {
        for lib in self.libraries.values() {
            let mut seen = BTreeSet::new();
            for c in lib.all_columns(&self.provenance) {
                if !seen.insert(c.name.as_str()) {
                    return Err(PipelineError::Schema(format!("library {}: duplicate column {}", lib.table, c.name)));
                }
                if let Some(p) = &c.personal {
                    crate::mapping::personal::PersonalKind::parse(p).map_err(|e| {
                        PipelineError::Schema(format!("library {} column {}: personal: {e}", lib.table, c.name))
                    })?;
                    if c.sensitivity < Sensitivity::Sensitive {
                        return Err(PipelineError::Schema(format!(
                            "library {} column {}: personal ({p}) data must be labelled sensitive or secret, not {:?}",
                            lib.table, c.name, c.sensitivity
                        )));
                    }
                }
                if let Some(code) = &c.codes
                    && !self.codes.contains_key(code)
                {
                    return Err(PipelineError::Schema(format!(
                        "library {} column {}: unknown code table {code}",
                        lib.table, c.name
                    )));
                }
            }
            if lib.column(&lib.key).is_none() {
                return Err(PipelineError::Schema(format!("library {}: key {} is not a column", lib.table, lib.key)));
            }
        }
        Ok(())
    }

    /// A library schema by name.
    pub fn library(&self, name: &str) -> Result<&LibrarySchema, PipelineError> {
        self.libraries.get(name).ok_or_else(|| {
            PipelineError::Schema(format!(
                "unknown library `{name}` (known: {})",
                self.libraries.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Arrow schema of a library's stored rows (library columns, provenance,
    /// then `row_seq`, the order of the row within its commit).
    pub fn arrow_schema(&self, name: &str) -> Result<SchemaRef, PipelineError> {
        let lib = self.library(name)?;
        let mut fields: Vec<Field> =
            lib.all_columns(&self.provenance).map(|c| Field::new(&c.name, c.ty.arrow(), true)).collect();
        fields.push(Field::new("row_seq", DataType::Int64, true));
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Arrow schema of a source's raw table.
    pub fn raw_schema() -> SchemaRef {
        let ts = ColumnType::Timestamp.arrow();
        Arc::new(Schema::new(vec![
            Field::new("source_key", DataType::Utf8, true),
            Field::new("op", DataType::Utf8, true),
            Field::new("payload", DataType::Utf8, true),
            Field::new("source_time", DataType::Utf8, true),
            Field::new("error", DataType::Utf8, true),
            Field::new("locator", DataType::Utf8, true),
            Field::new("department", DataType::Utf8, true),
            Field::new("fetched_at", ts.clone(), true),
            Field::new("content_hash", DataType::Utf8, true),
            Field::new("ingested_at", ts, true),
            Field::new("bus_topic", DataType::Utf8, true),
            Field::new("bus_partition", DataType::Int64, true),
            Field::new("bus_offset", DataType::Int64, true),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads() {
        let c = Catalog::builtin().unwrap();
        assert_eq!(c.codes["matter_stage"].codes.len(), 9);
        assert_eq!(c.codes["element_kind"].codes.len(), 10);
        assert_eq!(c.codes["matter_stage"].lookup("研判").unwrap().code, "assessment");
        assert!(c.arrow_schema("element").unwrap().field_with_name("content_hash").is_ok());
        assert!(c.library("nope").is_err());
    }

    #[test]
    fn personal_columns_are_labelled_and_sensitive() {
        let c = Catalog::builtin().unwrap();
        let el = c.library("element").unwrap();
        let label = |n: &str| el.column(n).and_then(|c| c.personal.clone());
        assert_eq!(label("name").as_deref(), Some("name"));
        assert_eq!(label("id_value").as_deref(), Some("citizen_id"));
        assert_eq!(label("phone").as_deref(), Some("phone"));
        assert_eq!(label("element_id"), None, "person ids are keyed tokens");
        // The policy sees the label, not the column name.
        let meta = crate::query::columns_of(&c, "element_history");
        let sem = |n: &str| meta.iter().find(|m| m.name == n).and_then(|m| m.semantic.clone());
        assert_eq!(sem("name").as_deref(), Some("name"));
        assert_eq!(sem("id_value").as_deref(), Some("citizen_id"));

        let mut bad =
            Catalog { libraries: c.libraries.clone(), provenance: c.provenance.clone(), codes: c.codes.clone() };
        let lib = bad.libraries.get_mut("matter").unwrap();
        let col = lib.columns.iter_mut().find(|c| c.name == "title").unwrap();
        col.personal = Some("name".into());
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("library matter column title") && e.contains("sensitive or secret"), "{e}");
        let col = bad.libraries.get_mut("matter").unwrap().columns.iter_mut().find(|c| c.name == "title").unwrap();
        col.sensitivity = Sensitivity::Sensitive;
        col.personal = Some("nick".into());
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("column title") && e.contains("\"nick\""), "{e}");
    }
}
