//! Shared fixtures: MemTables shaped like the libraries, the builtin engine,
//! and a `run` helper that plans, secures and executes SQL as a user.
#![allow(dead_code)]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use lianqin_policies::{ColumnMeta, PolicyEngine};

pub const TOKEN_KEY: &[u8] = b"test-token-key";

pub async fn engine() -> PolicyEngine {
    PolicyEngine::builtin().await.expect("builtin policy loads").with_token_key(TOKEN_KEY)
}

/// (element_id, kind, name, id_type, id_value, phone, department, division, category, important)
pub type ElementRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

pub const ELEMENTS: &[ElementRow] = &[
    (
        "cid:330502199001011234",
        "person",
        "张三",
        "cid",
        Some("330502199001011234"),
        Some("13812345678"),
        "police",
        "330502",
        "a",
        false,
    ),
    (
        "cid:330523198505052345",
        "person",
        "李四",
        "cid",
        Some("330523198505052345"),
        Some("13987654321"),
        "ecology",
        "330523",
        "b",
        true,
    ),
    (
        "uscc:91330500MA2B3C4D5E",
        "unit_place",
        "某化工厂",
        "uscc",
        Some("91330500MA2B3C4D5E"),
        Some("05721234567"),
        "market",
        "330502",
        "d",
        false,
    ),
    ("water:西苕溪", "water", "西苕溪", "water", Some("西苕溪"), None, "ecology", "330523", "a", false),
    (
        "cid:33052119700303345X",
        "person",
        "王五",
        "cid",
        Some("33052119700303345X"),
        Some("13700001111"),
        "law_enforcement",
        "330521",
        "e",
        true,
    ),
    ("site:S-001", "forest", "某林地", "site", Some("S-001"), None, "natural_resources", "330522", "c", false),
];

pub fn element_schema() -> Arc<Schema> {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        s("element_id"),
        s("kind"),
        s("name"),
        s("id_type"),
        s("id_value"),
        s("phone"),
        s("department"),
        s("division"),
        s("category"),
        Field::new("important", DataType::Boolean, true),
    ]))
}

pub fn element_meta() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("element_id", "public", None),
        ColumnMeta::new("kind", "public", None),
        ColumnMeta::new("name", "internal", None),
        ColumnMeta::new("id_type", "public", None),
        ColumnMeta::new("id_value", "sensitive", Some("citizen_id")),
        ColumnMeta::new("phone", "sensitive", Some("phone")),
        ColumnMeta::new("department", "public", None),
        ColumnMeta::new("division", "public", None),
        ColumnMeta::new("category", "public", None),
        ColumnMeta::new("important", "public", None),
    ]
}

pub fn element_batch(rows: &[ElementRow]) -> RecordBatch {
    let col = |f: &dyn Fn(&ElementRow) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    RecordBatch::try_new(
        element_schema(),
        vec![
            col(&|r| Some(r.0.into())),
            col(&|r| Some(r.1.into())),
            col(&|r| Some(r.2.into())),
            col(&|r| Some(r.3.into())),
            col(&|r| r.4.map(Into::into)),
            col(&|r| r.5.map(Into::into)),
            col(&|r| Some(r.6.into())),
            col(&|r| Some(r.7.into())),
            col(&|r| Some(r.8.into())),
            Arc::new(rows.iter().map(|r| Some(r.9)).collect::<BooleanArray>()),
        ],
    )
    .expect("batch")
}

/// matter: (matter_id, title, content, category, important, division, station, department, party_element_id)
pub type MatterRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

pub const MATTERS: &[MatterRow] = &[
    (
        "m1",
        "河道排污",
        "举报人张三称某化工厂夜间排污",
        "a",
        true,
        "330502",
        "wuxing-01",
        "hotline_12345",
        "uscc:91330500MA2B3C4D5E",
    ),
    ("m2", "非法捕捞", "太湖非法捕捞", "c", false, "330523", "anji-01", "police", "cid:330502199001011234"),
    ("m3", "过期食品", "超市销售过期食品", "d", false, "330502", "wuxing-02", "market", "uscc:91330500MA2B3C4D5E"),
    (
        "m4",
        "危化品存放",
        "仓库危化品存放不规范",
        "b",
        false,
        "330521",
        "deqing-01",
        "law_enforcement",
        "cid:33052119700303345X",
    ),
    ("m5", "毁林开垦", "山林被毁开垦", "c", true, "330523", "anji-01", "natural_resources", "site:S-001"),
];

pub fn matter_meta() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("matter_id", "public", None),
        ColumnMeta::new("title", "internal", None),
        ColumnMeta::new("content", "sensitive", None),
        ColumnMeta::new("category", "public", None),
        ColumnMeta::new("important", "public", None),
        ColumnMeta::new("division", "public", None),
        ColumnMeta::new("station", "public", None),
        ColumnMeta::new("department", "public", None),
        ColumnMeta::new("party_element_id", "internal", None),
    ]
}

fn matter_batch() -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        s("matter_id"),
        s("title"),
        s("content"),
        s("category"),
        Field::new("important", DataType::Boolean, false),
        s("division"),
        s("station"),
        s("department"),
        s("party_element_id"),
    ]));
    let m = MATTERS;
    let c = |f: &dyn Fn(usize) -> &'static str| -> ArrayRef {
        Arc::new((0..m.len()).map(|i| Some(f(i))).collect::<StringArray>())
    };
    RecordBatch::try_new(
        schema,
        vec![
            c(&|i| m[i].0),
            c(&|i| m[i].1),
            c(&|i| m[i].2),
            c(&|i| m[i].3),
            Arc::new(m.iter().map(|r| Some(r.4)).collect::<BooleanArray>()),
            c(&|i| m[i].5),
            c(&|i| m[i].6),
            c(&|i| m[i].7),
            c(&|i| m[i].8),
        ],
    )
    .expect("batch")
}

pub fn audit_meta() -> Vec<ColumnMeta> {
    vec![
        ColumnMeta::new("seq", "public", None),
        ColumnMeta::new("user", "internal", None),
        ColumnMeta::new("query", "sensitive", None),
    ]
}

fn audit_batch() -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![s("seq"), s("user"), s("query")]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["1", "2"])),
            Arc::new(StringArray::from(vec!["wang.police", "he.office"])),
            Arc::new(StringArray::from(vec!["SELECT * FROM element", "SELECT count(*) FROM matter"])),
        ],
    )
    .expect("batch")
}

pub fn codes_meta() -> Vec<ColumnMeta> {
    vec![ColumnMeta::new("set", "public", None), ColumnMeta::new("code", "public", None)]
}

fn codes_batch() -> RecordBatch {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![s("set"), s("code")]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["department", "department"])),
            Arc::new(StringArray::from(vec!["police", "ecology"])),
        ],
    )
    .expect("batch")
}

pub fn columns_of(table: &str) -> Vec<ColumnMeta> {
    match table {
        "element" => element_meta(),
        "matter" => matter_meta(),
        "audit" => audit_meta(),
        "codes" => codes_meta(),
        _ => vec![],
    }
}

pub fn register(ctx: &SessionContext, name: &str, batch: RecordBatch) {
    let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("memtable");
    ctx.register_table(name, Arc::new(t)).expect("register");
}

pub fn context() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    register(&ctx, "element", element_batch(ELEMENTS));
    register(&ctx, "matter", matter_batch());
    register(&ctx, "audit", audit_batch());
    register(&ctx, "codes", codes_batch());
    ctx
}

/// Plan `sql`, secure it for `user`, execute.
pub async fn run(
    engine: &PolicyEngine,
    ctx: &SessionContext,
    user: &str,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let who = engine.principal(user).ok_or_else(|| format!("unknown user {user}"))?;
    let plan = ctx.state().create_logical_plan(sql).await.map_err(|e| e.to_string())?;
    let plan = engine.secure_plan(&who, plan, &columns_of).map_err(|e| e.to_string())?;
    let df = ctx.execute_logical_plan(plan).await.map_err(|e| e.to_string())?;
    df.collect().await.map_err(|e| e.to_string())
}

/// Rows as strings ("NULL" for null), sorted.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<ArrayRef> = b.columns().iter().map(|c| cast(c, &DataType::Utf8).expect("cast")).collect();
        for i in 0..b.num_rows() {
            let mut r = Vec::new();
            for c in &cols {
                let sa = c.as_any().downcast_ref::<StringArray>().expect("utf8");
                r.push(if sa.is_null(i) { "NULL".to_string() } else { sa.value(i).to_string() });
            }
            out.push(r);
        }
    }
    out.sort();
    out
}

/// First column of the rows, sorted.
pub fn first_col(batches: &[RecordBatch]) -> Vec<String> {
    rows(batches).into_iter().map(|mut r| r.remove(0)).collect()
}

pub async fn query(engine: &PolicyEngine, ctx: &SessionContext, user: &str, sql: &str) -> Vec<Vec<String>> {
    match run(engine, ctx, user, sql).await {
        Ok(b) => rows(&b),
        Err(e) => panic!("{user}: {sql}: {e}"),
    }
}
