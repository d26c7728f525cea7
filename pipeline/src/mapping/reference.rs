//! Reference tables: small registries kept as files beside the mappings
//! (e.g. `schemas/reference/hj212_station.csv`: device → site, water body,
//! target class), declared by a mapping and joined by its SQL by name.
//!
//! ```toml
//! [[references]]
//! name = "hj212_station"                    # the SQL table name
//! file = "../reference/hj212_station.csv"   # relative to the mapping file
//! key = "mn"                                # unique, never empty
//! columns = { mn = "utf8", site = "utf8", lon = "float64", lat = "float64" }
//! ```
//!
//! The file is UTF-8 CSV (RFC 4180 quoting; `#` comment lines and blank
//! lines are skipped) whose header names exactly the declared columns, in
//! any order. Cells are read like raw fields (numbers as text are numbers,
//! `""`/`无`/`-`/… are NULL). A missing file, an undeclared or missing
//! column, a cell of the wrong type, an empty or duplicate key are errors
//! naming `file:line` and the key, found when the mapping is loaded (so by
//! `lianqin check` too).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use lianqin_bus::Member;
use serde::Deserialize;

use super::{ColBuilder, Conv, convert};
use crate::PipelineError;
use crate::schema::ColumnType;

/// Reference files shipped in `schemas/reference/` (compiled in), for
/// built-in mappings, by file name.
pub const BUILTIN_REFERENCES: &[(&str, &str)] = &[
    ("hj212_station.csv", include_str!("../../../schemas/reference/hj212_station.csv")),
    ("water_sensor.csv", include_str!("../../../schemas/reference/water_sensor.csv")),
];

/// A `[[references]]` entry of a mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// Table name in the mapping's SQL.
    pub name: String,
    /// The CSV file, relative to the mapping file.
    pub file: String,
    /// The key column: unique and never empty.
    pub key: String,
    /// Column name → type.
    pub columns: BTreeMap<String, ColumnType>,
}

/// A loaded reference table.
#[derive(Debug, Clone)]
pub struct ReferenceTable {
    /// Table name in SQL.
    pub name: String,
    /// Where it was read from (for messages).
    pub origin: String,
    /// Its rows, columns in the file's header order.
    pub batch: RecordBatch,
}

impl ReferenceSpec {
    /// Checks the declaration itself (`mapping` names the mapping in errors).
    pub(crate) fn validate(&self, mapping: &str) -> Result<(), PipelineError> {
        let bad = |why: String| PipelineError::Config(format!("mapping {mapping}: reference `{}`: {why}", self.name));
        let ident = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident(&self.name) || self.name == "raw" {
            return Err(bad("the name must be a lowercase SQL identifier other than `raw`".into()));
        }
        if self.columns.is_empty() {
            return Err(bad("no columns declared".into()));
        }
        if !self.columns.contains_key(&self.key) {
            return Err(bad(format!("key `{}` is not a declared column", self.key)));
        }
        Ok(())
    }

    /// Reads the file: relative to `dir` when given, else the compiled-in
    /// copy of `schemas/reference/<file name>`.
    pub(crate) fn load(&self, dir: Option<&Path>, mapping: &str) -> Result<ReferenceTable, PipelineError> {
        self.validate(mapping)?;
        let (origin, text) = match dir {
            Some(dir) => {
                let p = dir.join(&self.file);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    PipelineError::Config(format!("mapping {mapping}: reference `{}`: {}: {e}", self.name, p.display()))
                })?;
                (p.display().to_string(), text)
            }
            None => {
                let base = Path::new(&self.file).file_name().map(|s| s.to_string_lossy().to_string());
                match BUILTIN_REFERENCES.iter().find(|(n, _)| Some(*n) == base.as_deref()) {
                    Some((n, text)) => (format!("builtin:reference/{n}"), text.to_string()),
                    None => {
                        return Err(PipelineError::Config(format!(
                            "mapping {mapping}: reference `{}`: no file {} (a built-in mapping can only use the \
                             shipped reference files: {})",
                            self.name,
                            self.file,
                            BUILTIN_REFERENCES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
        };
        let batch = self.parse(&text, &origin)?;
        Ok(ReferenceTable { name: self.name.clone(), origin, batch })
    }

    /// Parses CSV text; `origin` names the file in errors (`origin:line`).
    pub(crate) fn parse(&self, text: &str, origin: &str) -> Result<RecordBatch, PipelineError> {
        let err = |line: usize, why: String| PipelineError::Config(format!("{origin}:{line}: {why}"));
        let mut rows = csv_records(text).map_err(|(line, why)| err(line, why))?.into_iter();
        let Some((hline, header)) = rows.next() else {
            return Err(err(1, format!("empty file: expected a header with {}", self.column_list())));
        };
        let header: Vec<String> =
            header.into_iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_string()).collect();
        let mut seen = BTreeMap::new();
        for (i, h) in header.iter().enumerate() {
            if !self.columns.contains_key(h) {
                return Err(err(
                    hline,
                    format!("column `{h}` is not declared by reference `{}` ({})", self.name, self.column_list()),
                ));
            }
            if seen.insert(h.clone(), i).is_some() {
                return Err(err(hline, format!("column `{h}` appears twice in the header")));
            }
        }
        if let Some(missing) = self.columns.keys().find(|c| !seen.contains_key(*c)) {
            return Err(err(hline, format!("declared column `{missing}` is missing from the header")));
        }
        let types: Vec<ColumnType> = header.iter().map(|h| self.columns[h]).collect();
        let key_at = seen[&self.key];
        let all: Vec<(usize, Vec<String>)> = rows.collect();
        let mut cols: Vec<ColBuilder> = types.iter().map(|t| ColBuilder::new(*t, all.len())).collect();
        let mut keys: HashMap<String, usize> = HashMap::new();
        for (line, cells) in all {
            if cells.len() != header.len() {
                return Err(err(line, format!("{} cells, the header has {}", cells.len(), header.len())));
            }
            let key = cells[key_at].trim();
            let convs: Vec<Conv> = cells
                .iter()
                .zip(&types)
                .zip(&header)
                .map(|((c, t), h)| {
                    convert(Member::Str(std::borrow::Cow::Borrowed(c.trim())), *t)
                        .map_err(|why| err(line, format!("key `{key}`: column `{h}`: {why}")))
                })
                .collect::<Result<_, _>>()?;
            if matches!(convs[key_at], Conv::Null) {
                return Err(err(line, format!("key column `{}` is empty", self.key)));
            }
            if let Some(first) = keys.insert(key.to_string(), line) {
                return Err(err(line, format!("duplicate key `{key}` (first on line {first})")));
            }
            for (b, c) in cols.iter_mut().zip(convs) {
                b.push(c);
            }
        }
        let fields: Vec<Field> = header.iter().zip(&types).map(|(h, t)| Field::new(h, t.arrow(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(ColBuilder::finish).collect())
            .map_err(|e| PipelineError::Internal(format!("{origin}: {e}")))
    }

    fn column_list(&self) -> String {
        self.columns.iter().map(|(c, t)| format!("{c} {}", t.name())).collect::<Vec<_>>().join(", ")
    }
}

/// A CSV record: the line it starts on (1-based) and its cells.
type CsvRecord = (usize, Vec<String>);

/// Splits CSV text into records with the line each starts on (1-based).
/// RFC 4180: `"` quotes a cell, `""` inside quotes is a quote, quoted cells
/// may hold commas and newlines. Blank lines and lines starting with `#`
/// (outside quotes) are skipped.
fn csv_records(text: &str) -> Result<Vec<CsvRecord>, (usize, String)> {
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let start = line;
        // Skip blank and comment lines.
        match chars.peek() {
            Some('\n') => {
                chars.next();
                line += 1;
                continue;
            }
            Some('\r') => {
                chars.next();
                continue;
            }
            Some('#') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                continue;
            }
            _ => {}
        }
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let mut was_quoted = false;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Err((start, "unterminated quoted cell".into()));
                }
                cells.push(std::mem::take(&mut cell));
                break;
            };
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                (true, '"') => quoted = false,
                (true, '\n') => {
                    line += 1;
                    cell.push('\n');
                }
                (true, c) => cell.push(c),
                (false, '"') if cell.trim().is_empty() && !was_quoted => {
                    cell.clear();
                    quoted = true;
                    was_quoted = true;
                }
                (false, ',') => {
                    cells.push(std::mem::take(&mut cell));
                    was_quoted = false;
                }
                (false, '\r') => {}
                (false, '\n') => {
                    line += 1;
                    cells.push(std::mem::take(&mut cell));
                    break;
                }
                (false, c) => cell.push(c),
            }
        }
        out.push((start, cells));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    fn spec() -> ReferenceSpec {
        toml::from_str(
            r#"
name = "station"
file = "station.csv"
key = "mn"
columns = { mn = "utf8", water = "utf8", lon = "float64", active = "bool" }
"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_typed_columns_in_header_order() {
        let b = spec()
            .parse(
                "# registry\nmn,water,lon,active\nW001,\"西苕溪, 横塘\",119.68,是\n\nW002,东苕溪,-,0\n",
                "station.csv",
            )
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["mn", "water", "lon", "active"]);
        let water = b.column(1).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!(water.value(0), "西苕溪, 横塘");
        let lon = b.column(2).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
        assert_eq!(lon.value(0), 119.68);
        assert!(lon.is_null(1));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let s = spec();
        let e = |text: &str| s.parse(text, "ref/station.csv").unwrap_err().to_string();
        let dup = e("mn,water,lon,active\nW001,a,1,1\nW002,b,2,1\nW001,c,3,1\n");
        assert!(
            dup.contains("ref/station.csv:4") && dup.contains("duplicate key `W001`") && dup.contains("line 2"),
            "{dup}"
        );
        let bad = e("mn,water,lon,active\nW001,a,1,1\nW002,b,东经120,1\n");
        assert!(
            bad.contains("ref/station.csv:3") && bad.contains("key `W002`") && bad.contains("column `lon`"),
            "{bad}"
        );
        let unknown = e("mn,water,lon,active,target\nW001,a,1,1,III\n");
        assert!(
            unknown.contains("ref/station.csv:1") && unknown.contains("column `target` is not declared"),
            "{unknown}"
        );
        let missing = e("mn,water,lon\nW001,a,1\n");
        assert!(missing.contains("declared column `active` is missing"), "{missing}");
        let empty_key = e("mn,water,lon,active\n,a,1,1\n");
        assert!(
            empty_key.contains("ref/station.csv:2") && empty_key.contains("key column `mn` is empty"),
            "{empty_key}"
        );
        let ragged = e("mn,water,lon,active\nW001,a,1\n");
        assert!(ragged.contains("ref/station.csv:2") && ragged.contains("3 cells"), "{ragged}");
        let quote = e("mn,water,lon,active\n\"W001,a,1,1\n");
        assert!(quote.contains("ref/station.csv:2") && quote.contains("unterminated"), "{quote}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = spec().load(Some(dir.path()), "m.toml").unwrap_err().to_string();
        assert!(e.contains("reference `station`") && e.contains("station.csv"), "{e}");
        let e = spec().load(None, "builtin:m").unwrap_err().to_string();
        assert!(e.contains("no file station.csv"), "{e}");
    }

    #[test]
    fn bad_declarations() {
        let mut s = spec();
        s.key = "site".into();
        assert!(s.validate("m").unwrap_err().to_string().contains("key `site` is not a declared column"));
        let mut s = spec();
        s.name = "raw".into();
        assert!(s.validate("m").is_err());
        let r: Result<ReferenceSpec, _> =
            toml::from_str("name = \"a\"\nfile = \"a.csv\"\nkey = \"k\"\ncolumns = { k = \"utf8\" }\nsep = \";\"\n");
        assert!(r.unwrap_err().to_string().contains("unknown field `sep`"));
        let r: Result<ReferenceSpec, _> =
            toml::from_str("name = \"a\"\nfile = \"a.csv\"\nkey = \"k\"\ncolumns = { k = \"text\" }\n");
        assert!(r.is_err());
    }

    const MAPPING: &str = r#"
name = "m"
version = "1"
key_field = "mn"
[[references]]
name = "station"
file = "ref/station.csv"
key = "mn"
columns = { mn = "utf8", water = "utf8", lon = "float64", active = "bool" }
[fields]
mn = { type = "utf8", required = true }
[[outputs]]
library = "element"
sql = "SELECT _row, 'water:' || s.water AS element_id, 'water' AS kind, s.water AS name, 'water' AS id_type, s.water AS id_value, false AS deleted FROM raw r JOIN station s ON upper(r.mn) = s.mn"
"#;

    /// The table is loaded relative to the mapping file, registered beside
    /// `raw` and joined; the same checks run when the hub or `lianqin check`
    /// builds the normalizer.
    #[tokio::test]
    async fn a_mapping_joins_its_reference_table() {
        use crate::normalize::Normalizer;
        use crate::schema::Catalog;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ref")).unwrap();
        std::fs::write(dir.path().join("ref/station.csv"), "mn,water,lon,active\nW001,西苕溪,119.68,1\n").unwrap();
        std::fs::write(dir.path().join("m.toml"), MAPPING).unwrap();
        let m = crate::mapping::Mapping::load("m.toml", dir.path()).unwrap();
        assert_eq!(m.tables.len(), 1);
        let n = Normalizer::new(Catalog::builtin().unwrap(), Arc::new(m), "s").await.unwrap();
        let rec = |k: &str| lianqin_bus::BusRecord {
            topic: "raw.s".into(),
            partition: 0,
            offset: 0,
            envelope: lianqin_bus::Envelope::upsert("s", "ecology", k, serde_json::json!({ "mn": k }), None),
        };
        let (a, b) = (rec("w001"), rec("W999"));
        let out = n.normalize(&[&a, &b], 0).await.unwrap();
        let el = &out.libraries["element"];
        assert_eq!(el.num_rows(), 1, "only the registered station joins");
        let id = el.column_by_name("element_id").unwrap();
        let id = id.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!(id.value(0), "water:西苕溪");

        // A broken registry or a column the file does not declare: errors
        // when the mapping is loaded / checked.
        std::fs::write(dir.path().join("ref/station.csv"), "mn,water,lon,active\nW001,a,1,1\nW001,b,2,1\n").unwrap();
        let e = crate::mapping::Mapping::load("m.toml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("station.csv:3") && e.contains("duplicate key `W001`"), "{e}");
        std::fs::write(dir.path().join("ref/station.csv"), "mn,water,lon,active\nW001,a,1,1\n").unwrap();
        std::fs::write(dir.path().join("m.toml"), MAPPING.replace("s.water AS name", "s.site AS name")).unwrap();
        let m = crate::mapping::Mapping::load("m.toml", dir.path()).unwrap();
        let e = Normalizer::new(Catalog::builtin().unwrap(), Arc::new(m), "s").await.unwrap_err().to_string();
        assert!(e.contains("site"), "{e}");
        std::fs::remove_file(dir.path().join("ref/station.csv")).unwrap();
        let e = crate::mapping::Mapping::load("m.toml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("reference `station`") && e.contains("station.csv"), "{e}");
    }
}
