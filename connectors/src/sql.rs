//! The `sql` connector: polls a table, view or query of a departmental
//! PostgreSQL, MySQL or MariaDB database by a watermark column, with the key
//! as tie-breaker.
//!
//! ```toml
//! [[sources]]
//! id = "nr_land_violation"
//! department = "natural_resources"
//! mapping = "schemas/mappings/nr_land_violation.toml"
//! interval_secs = 60
//! [sources.connector]
//! type = "sql"
//! url = "postgres://lianqin_ro:${NR_DB_PASSWORD}@10.0.0.5:5432/nrdb"
//! table = "zfjc.wfyd_case"               # or: query = "SELECT ... FROM ... WHERE ..."
//! watermark_column = "update_time"        # timestamp(tz), date or integer; must grow on every change
//! key_column = "case_no"                  # unique per row; the record key
//! # defaults:
//! # batch_size = 1000                     # rows per page (one publish + checkpoint per page)
//! # delete_column = "is_deleted"          # optional: truthy = tombstone
//! # connect_timeout_ms = 10000
//! # statement_timeout_ms = 60000
//! ```
//!
//! MySQL (5.7.8+, 8.x) and MariaDB (10.2+) sources take the same keys with a
//! `mysql://` or `mariadb://` URL, e.g.
//! `url = "mysql://lianqin_ro:${HJ_DB_PASSWORD}@10.0.0.7:3306/hjdb"` and
//! `table = "hjdb.pwxk"` (`db.table`; quoted with backticks); see
//! [MySQL and MariaDB](#mysql-and-mariadb) below.
//!
//! ## How a pass walks the table
//! Each page is
//! `SELECT … FROM (<table or query>) src WHERE (wm, key) > ($last_wm, $last_key) ORDER BY wm, key LIMIT n`:
//! a keyset walk over the pair (watermark, key). Many rows sharing one
//! watermark value are split across pages by their keys, so no row is
//! skipped and none is read twice. A row updated after it was read gets a
//! newer watermark and is read again (a new version). The checkpoint is the
//! last (watermark, key) of a page, stored in PostgreSQL's own text form so
//! it compares exactly; it is published together with (embedded bus) or
//! after (Kafka) the page's records, so it never passes an unpublished row.
//!
//! Requirements on the source: the watermark must be set on every insert
//! and update (e.g. an `update_time` trigger) and must never go backwards;
//! rows whose watermark or key is NULL are never read (the first pass
//! counts and warns about them). Transactions that commit a watermark older
//! than rows already read (long transactions stamping `now()` at their
//! start) can be missed — have the source stamp at commit time or read a
//! view that lags a few seconds behind.
//!
//! ## Types
//! `bool` → boolean; `int2/int4/int8/oid` → number; `float4/float8` →
//! number; `text/varchar/char/name` → string; `timestamptz` → RFC 3339 in
//! UTC; `timestamp` → `YYYY-MM-DDTHH:MM:SS[.ffffff]` without offset (the
//! mappings read local times as Beijing time); `date` → `YYYY-MM-DD`;
//! `json/jsonb` → JSON. Every other type (`numeric` — kept exact as a
//! string —, `time`, `uuid`, `interval`, arrays, …) arrives as
//! PostgreSQL's text form. A value that cannot be decoded sends its row to
//! quarantine (an unparsable record naming the source, key and column)
//! instead of stopping the source.
//!
//! The connection string may use `${ENV}` for the password and is never
//! logged; errors show only host, port and database. Connections are plain
//! TCP (`sslmode=disable`; no TLS for MySQL either): run the hub on the
//! station network or through a tunnel.
//!
//! ## MySQL and MariaDB
//! Same config, same checkpoint and envelope guarantees. The URL is
//! `mysql://user:password@host:port/db` (or `mariadb://…`; a password with
//! `@`, `:` or `/` must be percent-encoded); always TCP to that host.
//! Each page is
//! `SELECT src.*, CAST(wm AS CHAR), CAST(key AS CHAR) FROM (<table or query>) AS src
//! WHERE (wm > ? OR (wm = ? AND key > ?)) ORDER BY wm, key LIMIT n` — the
//! expanded `(wm, key) > (?, ?)`, which an index on (wm, key) serves on
//! both servers. The checkpoint is the `CAST(… AS CHAR)` text of the last
//! row's watermark and key; integer and decimal parameters are cast back to
//! the column's type, date/time and string ones are compared by the server
//! in the column's own type and collation, so the comparison is exact. A
//! floating-point (or BIT/JSON) watermark or key is refused at start. The
//! session uses `utf8mb4`, `time_zone = '+00:00'`, read-only transactions
//! and a statement time limit (`max_execution_time` on MySQL,
//! `max_statement_time` on MariaDB). Column names match case-insensitively,
//! as in MySQL; a string key must be unique under its collation.
//!
//! MySQL types: `TINYINT(1)`/`BOOL` and `BIT(1)` → boolean (non-zero =
//! true); other integers, `YEAR` and `BIT(n)` → number; `FLOAT/DOUBLE` →
//! number; `DECIMAL` → exact decimal string; `DATETIME` →
//! `YYYY-MM-DDTHH:MM:SS[.ffffff]` without offset (local time, as for
//! PostgreSQL `timestamp`); `TIMESTAMP` → RFC 3339 in UTC; `DATE` →
//! `YYYY-MM-DD`; `TIME` → `[-]HH:MM:SS[.ffffff]` (hours may exceed 24);
//! the zero date `0000-00-00` → null; `JSON` → JSON (on MariaDB, where
//! `JSON` is `LONGTEXT` with a `json_valid` check, for columns of tables
//! found with that check in `information_schema.CHECK_CONSTRAINTS`);
//! `CHAR/VARCHAR/TEXT/ENUM/SET` → string (any charset, converted to
//! UTF-8 by the server); binary strings (`BINARY/VARBINARY/BLOB`,
//! geometry) → the string when it is UTF-8, else `0x` + hex. An invalid
//! date (e.g. `2025-02-30` stored under `ALLOW_INVALID_DATES`) or malformed
//! JSON sends the row to quarantine naming the source, key and column.

use std::fmt::Write as _;
use std::time::Duration;

use lianqin_bus::{Envelope, Op};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{ConnectorError, RunStats, Source, SourceContext, expand_env};

#[path = "sql_mysql.rs"]
mod mysql;

/// Configuration of a `sql` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Connection string: `postgres://user:${PASSWORD}@host:port/db` or the
    /// `key=value` form, or `mysql://` / `mariadb://user:${PASSWORD}@host:port/db`.
    /// `${ENV}` references are expanded; never logged.
    pub url: String,
    /// Table or view to read (`schema.table` allowed). Exactly one of
    /// `table` and `query` is set.
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` to read instead of a table (no trailing `;`, no `LIMIT`);
    /// it becomes a subquery.
    #[serde(default)]
    pub query: Option<String>,
    /// Column that grows whenever a row is inserted or changed.
    pub watermark_column: String,
    /// Column unique per row: the record key and the tie-breaker.
    pub key_column: String,
    /// Rows per page (default 1 000).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Optional column that marks a row deleted at the source (truthy = delete).
    #[serde(default)]
    pub delete_column: Option<String>,
    /// Connect timeout in milliseconds (default 10 000).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Server-side statement timeout per page in milliseconds (default 60 000).
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// Safety limit on pages per pass (default 100 000).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_batch() -> u32 {
    1000
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_statement_timeout() -> u64 {
    60_000
}
fn default_max_pages() -> u32 {
    100_000
}

impl SqlConfig {
    /// Checks the config (including that `${ENV}` secrets resolve) without
    /// connecting.
    pub fn validate(&self, source_id: &str) -> Result<(), ConnectorError> {
        let bad = |detail: String| ConnectorError::Config { source_id: source_id.into(), detail };
        match (&self.table, &self.query) {
            (Some(_), Some(_)) => return Err(bad("set either `table` or `query`, not both".into())),
            (None, None) => return Err(bad("set `table` (a table or view) or `query` (a SELECT)".into())),
            (Some(t), None) if t.trim().is_empty() => return Err(bad("`table` is empty".into())),
            (None, Some(q)) if q.trim().trim_end_matches(';').trim().is_empty() => {
                return Err(bad("`query` is empty".into()));
            }
            _ => {}
        }
        if self.watermark_column.trim().is_empty() {
            return Err(bad("`watermark_column` is empty".into()));
        }
        if self.key_column.trim().is_empty() {
            return Err(bad("`key_column` is empty".into()));
        }
        if self.batch_size == 0 {
            return Err(bad("`batch_size` must be >= 1".into()));
        }
        let url = expand_env(&self.url, source_id, "url")?;
        if mysql::is_mysql_url(&url) {
            mysql::parse_url(&url).map_err(bad)?;
            return Ok(());
        }
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| bad(format!("`url` is not a PostgreSQL connection string: {e}")))?;
        Ok(())
    }

    /// What is read, for messages: `table x` or `query `…``.
    fn what(&self) -> String {
        match (&self.table, &self.query) {
            (Some(t), _) => format!("table {t}"),
            (_, Some(q)) => format!("query `{}`", q.trim()),
            _ => String::new(),
        }
    }

    /// The SQL of the rows to read, before the keyset condition.
    fn base_sql(&self) -> String {
        match (&self.table, &self.query) {
            (Some(t), _) => format!("SELECT * FROM {}", quote_path(t)),
            (None, Some(q)) => q.trim().trim_end_matches(';').trim().to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Quotes an identifier for PostgreSQL.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified name (`schema.table`). Parts that are
/// already quoted are kept.
fn quote_path(s: &str) -> String {
    s.split('.')
        .map(|p| {
            let p = p.trim();
            if p.len() >= 2 && p.starts_with('"') && p.ends_with('"') { p.to_string() } else { quote_ident(p) }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The checkpoint of a `sql` source: the last (watermark, key) published,
/// in the server's text form (PostgreSQL `::text`, MySQL `CAST(… AS CHAR)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlCheckpoint {
    /// Watermark of the last row published.
    pub wm: String,
    /// Key of the last row published.
    pub key: String,
}

/// The prepared shape of the source's rows.
#[derive(Debug, Clone)]
struct Plan {
    /// Page query without a checkpoint (first pass).
    first: String,
    /// Page query after a checkpoint (`$1` = watermark text, `$2` = key text).
    next: String,
    /// Output columns, in order (without the helper columns).
    columns: Vec<String>,
}

const WM_ALIAS: &str = "__lianqin_wm";
const KEY_ALIAS: &str = "__lianqin_key";

/// Types decoded natively; everything else is selected as `::text`.
fn native(t: &Type) -> bool {
    matches!(
        *t,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::TIMESTAMPTZ
            | Type::TIMESTAMP
            | Type::DATE
            | Type::JSON
            | Type::JSONB
    )
}

fn type_sql(t: &Type) -> String {
    format!("{}.{}", quote_ident(t.schema()), quote_ident(t.name()))
}

/// A running `sql` source.
pub struct SqlSource {
    id: String,
    department: String,
    cfg: SqlConfig,
    /// Host, port and database (no user, no password) for messages.
    target: String,
    client: Option<Client>,
    plan: Option<Plan>,
    warned_nulls: bool,
    /// Set for `mysql://` / `mariadb://` URLs: the MySQL/MariaDB source that
    /// does the work (the PostgreSQL fields stay unused).
    mysql: Option<Box<mysql::MySqlSource>>,
}

impl std::fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.debug_struct("SqlSource").field("id", &self.id).field("target", &self.target).finish()
    }
}

fn describe_target(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            #[allow(unreachable_patterns)]
            _ => "unix socket".to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().or(cfg.get_user()).unwrap_or("?");
    format!("postgres://{host}:{port}/{db}")
}

/// A database error with PostgreSQL's message, detail and hint.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            let _ = write!(s, "; detail: {d}");
        }
        if let Some(h) = db.hint() {
            let _ = write!(s, "; hint: {h}");
        }
        s
    } else {
        let mut s = e.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(c) = cur {
            let _ = write!(s, ": {c}");
            cur = c.source();
        }
        s
    }
}

impl SqlSource {
    /// Builds the source (checks the connection string; connects lazily).
    pub fn new(id: &str, department: &str, cfg: SqlConfig) -> Result<Self, ConnectorError> {
        cfg.validate(id)?;
        let url = expand_env(&cfg.url, id, "url")?;
        if mysql::is_mysql_url(&url) {
            let m = mysql::MySqlSource::new(id, department, cfg.clone())?;
            return Ok(SqlSource {
                id: id.into(),
                department: department.into(),
                target: m.target.clone(),
                cfg,
                client: None,
                plan: None,
                warned_nulls: false,
                mysql: Some(Box::new(m)),
            });
        }
        let pc: tokio_postgres::Config = url.parse().map_err(|e| ConnectorError::Config {
            source_id: id.into(),
            detail: format!("`url` is not a PostgreSQL connection string: {e}"),
        })?;
        Ok(SqlSource {
            id: id.into(),
            department: department.into(),
            target: describe_target(&pc),
            cfg,
            client: None,
            plan: None,
            warned_nulls: false,
            mysql: None,
        })
    }

    fn what(&self) -> String {
        self.cfg.what()
    }

    fn column_error(&self, page_desc: &str, column: &str, e: tokio_postgres::Error) -> ConnectorError {
        ConnectorError::BadResponse {
            source_id: self.id.clone(),
            location: format!("{} ({page_desc})", self.what()),
            detail: format!("column `{column}`: {}", pg_detail(&e)),
        }
    }
}

/// The envelope of a decoded row: an upsert, or a delete when the delete
/// column is truthy; the source time is the watermark (as decoded, else its
/// text).
fn row_envelope(
    id: &str,
    department: &str,
    obj: Map<String, Value>,
    cp: &SqlCheckpoint,
    watermark_column: &str,
    delete_column: Option<&str>,
) -> Envelope {
    let source_time = match obj.get(watermark_column) {
        Some(Value::String(s)) => s.clone(),
        _ => cp.wm.clone(),
    };
    let deleted = delete_column.is_some_and(|d| truthy(obj.get(d)));
    let mut env = Envelope::upsert(id, department, cp.key.clone(), Value::Object(obj), Some(source_time));
    if deleted {
        env.op = Op::Delete;
    }
    env
}

/// The stored checkpoint of a `sql` source.
async fn load_checkpoint(id: &str, ctx: &SourceContext) -> Result<Option<SqlCheckpoint>, ConnectorError> {
    match ctx.checkpoint(id).await? {
        Some(v) => Ok(Some(serde_json::from_value(v).map_err(|e| ConnectorError::Config {
            source_id: id.into(),
            detail: format!("stored checkpoint unreadable: {e}"),
        })?)),
        None => Ok(None),
    }
}

/// Publishes one page with the checkpoint of its last row, and counts it.
async fn publish_page(
    id: &str,
    ctx: &SourceContext,
    envelopes: &[Envelope],
    last: &SqlCheckpoint,
    stats: &mut RunStats,
) -> Result<(), ConnectorError> {
    let value = serde_json::to_value(last).unwrap_or(Value::Null);
    ctx.publish(id, envelopes, value).await?;
    stats.records += envelopes.len() as u64;
    stats.unparsable += envelopes.iter().filter(|e| e.error.is_some()).count() as u64;
    stats.units += 1;
    debug!(source = %id, n = envelopes.len(), wm = %last.wm, key = %last.key, "page published");
    Ok(())
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => matches!(s.trim(), "1" | "t" | "true" | "Y" | "y" | "是"),
        _ => false,
    }
}

/// One cell as JSON (NULL → null).
fn cell(row: &Row, i: usize, t: &Type) -> Result<Value, tokio_postgres::Error> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
    fn num<T: Into<serde_json::Number>>(v: Option<T>) -> Value {
        v.map(|x| Value::Number(x.into())).unwrap_or(Value::Null)
    }
    fn float(v: Option<f64>) -> Value {
        match v {
            None => Value::Null,
            Some(x) => {
                serde_json::Number::from_f64(x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string()))
            }
        }
    }
    Ok(match *t {
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool).unwrap_or(Value::Null),
        Type::INT2 => num(row.try_get::<_, Option<i16>>(i)?),
        Type::INT4 => num(row.try_get::<_, Option<i32>>(i)?),
        Type::INT8 => num(row.try_get::<_, Option<i64>>(i)?),
        Type::OID => num(row.try_get::<_, Option<u32>>(i)?),
        Type::FLOAT4 => float(row.try_get::<_, Option<f32>>(i)?.map(f64::from)),
        Type::FLOAT8 => float(row.try_get::<_, Option<f64>>(i)?),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<DateTime<Utc>>>(i)?
            .map(|d| Value::String(d.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
            .unwrap_or(Value::Null),
        Type::TIMESTAMP => row
            .try_get::<_, Option<NaiveDateTime>>(i)?
            .map(|d| Value::String(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
            .unwrap_or(Value::Null),
        Type::DATE => row
            .try_get::<_, Option<NaiveDate>>(i)?
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(Value::Null),
        Type::JSON | Type::JSONB => row.try_get::<_, Option<Value>>(i)?.unwrap_or(Value::Null),
        _ => row.try_get::<_, Option<String>>(i)?.map(Value::String).unwrap_or(Value::Null),
    })
}

#[async_trait::async_trait]
impl Source for SqlSource {
    fn id(&self) -> &str {
        &self.id
    }

    async fn sync_once(&mut self, ctx: &SourceContext) -> Result<RunStats, ConnectorError> {
        match self.mysql.as_mut() {
            Some(m) => walk(m.as_mut(), ctx, "mysql").await,
            None => walk(self, ctx, "postgres").await,
        }
    }
}

/// What a database dialect provides to the shared pass ([`walk`]):
/// connecting, planning the keyset pages, fetching one page and turning a
/// row into an envelope with its checkpoint.
trait Dialect: Send {
    /// The planned statements and column layout.
    type Plan: Send + Sync;
    /// One fetched row.
    type Row: Send + Sync;
    /// The source id (for logs and errors).
    fn source_id(&self) -> &str;
    /// The source's settings.
    fn settings(&self) -> &SqlConfig;
    /// Connects unless connected.
    fn connect(&mut self) -> impl std::future::Future<Output = Result<(), ConnectorError>> + Send;
    /// Plans the pages (cached after the first pass).
    fn plan(&mut self) -> impl std::future::Future<Output = Result<Self::Plan, ConnectorError>> + Send;
    /// The rows after `after` in (watermark, key) order, at most one page.
    fn fetch(
        &mut self,
        plan: &Self::Plan,
        after: Option<&SqlCheckpoint>,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Row>, ConnectorError>> + Send;
    /// One row as an envelope, and the checkpoint just after it.
    fn to_envelope(
        &self,
        row: &Self::Row,
        plan: &Self::Plan,
        page_desc: &str,
    ) -> Result<(Envelope, SqlCheckpoint), ConnectorError>;
    /// Forgets a broken connection (reconnect on the next pass).
    fn reset(&mut self);
}

impl Dialect for SqlSource {
    type Plan = Plan;
    type Row = Row;
    fn source_id(&self) -> &str {
        &self.id
    }
    fn settings(&self) -> &SqlConfig {
        &self.cfg
    }
    async fn connect(&mut self) -> Result<(), ConnectorError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        let url = expand_env(&self.cfg.url, &self.id, "url")?;
        let mut pc: tokio_postgres::Config = url.parse().map_err(|e| ConnectorError::Config {
            source_id: self.id.clone(),
            detail: format!("`url` is not a PostgreSQL connection string: {e}"),
        })?;
        pc.connect_timeout(Duration::from_millis(self.cfg.connect_timeout_ms));
        if pc.get_application_name().is_none() {
            pc.application_name("lianqin");
        }
        let (client, conn) = pc.connect(NoTls).await.map_err(|e| ConnectorError::Unavailable {
            source_id: self.id.clone(),
            what: format!("connecting to {}: {}", self.target, pg_detail(&e)),
        })?;
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                warn!(source = %id, "database connection closed: {e}");
            }
        });
        // Read-only, UTC session; a runaway page is cancelled by the server.
        let setup = format!(
            "SET TIME ZONE 'UTC'; SET statement_timeout = {}; SET default_transaction_read_only = on",
            self.cfg.statement_timeout_ms
        );
        client.batch_execute(&setup).await.map_err(|e| ConnectorError::Unavailable {
            source_id: self.id.clone(),
            what: format!("{}: session setup: {}", self.target, pg_detail(&e)),
        })?;
        self.client = Some(client);
        Ok(())
    }
    /// Prepares the source's query once: checks that it runs and that the
    /// watermark and key columns exist, and builds the page queries.
    async fn plan(&mut self) -> Result<Plan, ConnectorError> {
        if let Some(p) = &self.plan {
            return Ok(p.clone());
        }
        let base = self.cfg.base_sql();
        let client = self.client.as_ref().expect("connected");
        let probe = format!("SELECT * FROM ({base}) AS src LIMIT 0");
        let stmt = client.prepare(&probe).await.map_err(|e| {
            let detail = pg_detail(&e);
            if e.as_db_error().is_some() {
                ConnectorError::Config {
                    source_id: self.id.clone(),
                    detail: format!("{} on {} does not run: {detail}", self.what(), self.target),
                }
            } else {
                ConnectorError::Unavailable { source_id: self.id.clone(), what: format!("{}: {detail}", self.target) }
            }
        })?;
        let cols = stmt.columns();
        let names: Vec<String> = cols.iter().map(|c| c.name().to_string()).collect();
        let find = |name: &str, key: &str| -> Result<&tokio_postgres::Column, ConnectorError> {
            let mut it = cols.iter().filter(|c| c.name() == name);
            let first = it.next().ok_or_else(|| ConnectorError::Config {
                source_id: self.id.clone(),
                detail: format!(
                    "`{key}` = {name:?}: no such column in {} (columns: {})",
                    self.what(),
                    names.join(", ")
                ),
            })?;
            if it.next().is_some() {
                return Err(ConnectorError::Config {
                    source_id: self.id.clone(),
                    detail: format!("`{key}` = {name:?}: the column appears twice in {}", self.what()),
                });
            }
            Ok(first)
        };
        let wm = find(&self.cfg.watermark_column, "watermark_column")?;
        let key = find(&self.cfg.key_column, "key_column")?;
        if let Some(d) = &self.cfg.delete_column {
            find(d, "delete_column")?;
        }
        let wm_q = format!("src.{}", quote_ident(wm.name()));
        let key_q = format!("src.{}", quote_ident(key.name()));
        let mut select = Vec::with_capacity(cols.len() + 2);
        for c in cols {
            let q = format!("src.{}", quote_ident(c.name()));
            if native(c.type_()) {
                select.push(q);
            } else {
                select.push(format!("{q}::text AS {}", quote_ident(c.name())));
            }
        }
        select.push(format!("{wm_q}::text AS {WM_ALIAS}"));
        select.push(format!("{key_q}::text AS {KEY_ALIAS}"));
        let head = format!("SELECT {} FROM ({base}) AS src", select.join(", "));
        let tail = format!("ORDER BY {wm_q}, {key_q} LIMIT {}", self.cfg.batch_size);
        let plan = Plan {
            first: format!("{head} WHERE {wm_q} IS NOT NULL AND {key_q} IS NOT NULL {tail}"),
            next: format!(
                "{head} WHERE ({wm_q}, {key_q}) > ($1::text::{}, $2::text::{}) {tail}",
                type_sql(wm.type_()),
                type_sql(key.type_())
            ),
            columns: names,
        };
        // Prepare both so that a type without a text cast fails now, with the column named.
        for (q, which) in [(&plan.first, "first page"), (&plan.next, "next page")] {
            client.prepare(q).await.map_err(|e| ConnectorError::Config {
                source_id: self.id.clone(),
                detail: format!(
                    "{} on {}: {which} query over watermark `{}` ({}) and key `{}` ({}) does not run: {}",
                    self.what(),
                    self.target,
                    wm.name(),
                    wm.type_().name(),
                    key.name(),
                    key.type_().name(),
                    pg_detail(&e)
                ),
            })?;
        }
        let warn_nulls = !self.warned_nulls;
        if warn_nulls {
            let q = format!("SELECT count(*) FROM ({base}) AS src WHERE {wm_q} IS NULL OR {key_q} IS NULL");
            if let Ok(row) = client.query_one(&q, &[]).await {
                let n: i64 = row.get(0);
                if n > 0 {
                    warn!(source = %self.id, rows = n, watermark = %self.cfg.watermark_column, key = %self.cfg.key_column,
                        "rows with a NULL watermark or key are not read");
                }
            }
        }
        self.warned_nulls = true;
        self.plan = Some(plan.clone());
        Ok(plan)
    }
    async fn fetch(&mut self, plan: &Plan, after: Option<&SqlCheckpoint>) -> Result<Vec<Row>, ConnectorError> {
        let client = self.client.as_ref().expect("connected");
        let res = match after {
            None => client.query(&plan.first, &[]).await,
            Some(cp) => client.query(&plan.next, &[&cp.wm, &cp.key]).await,
        };
        res.map_err(|e| {
            let detail = pg_detail(&e);
            let after = after.map(|c| format!(" after ({}, {})", c.wm, c.key)).unwrap_or_default();
            if e.as_db_error().is_some() {
                ConnectorError::BadResponse {
                    source_id: self.id.clone(),
                    location: format!("{} on {}{after}", self.what(), self.target),
                    detail,
                }
            } else {
                ConnectorError::Unavailable {
                    source_id: self.id.clone(),
                    what: format!("{} on {}{after}: {detail}", self.what(), self.target),
                }
            }
        })
    }
    fn to_envelope(
        &self,
        row: &Row,
        plan: &Plan,
        page_desc: &str,
    ) -> Result<(Envelope, SqlCheckpoint), ConnectorError> {
        let mut obj = Map::with_capacity(plan.columns.len());
        let cp = SqlCheckpoint {
            wm: row
                .try_get::<_, String>(WM_ALIAS)
                .map_err(|e| self.column_error(page_desc, &self.cfg.watermark_column, e))?,
            key: row
                .try_get::<_, String>(KEY_ALIAS)
                .map_err(|e| self.column_error(page_desc, &self.cfg.key_column, e))?,
        };
        let locator = format!("{} {}={}", self.target, self.cfg.key_column, cp.key);
        for (i, col) in row.columns().iter().enumerate().take(plan.columns.len()) {
            match cell(row, i, col.type_()) {
                Ok(v) => {
                    obj.insert(col.name().to_string(), v);
                }
                Err(e) => {
                    // A value we cannot decode: the row goes to quarantine
                    // (with what was read) instead of blocking the source.
                    let reason = format!(
                        "source `{}`: {} ({page_desc}), key {:?}: column `{}` ({}): {}",
                        self.id,
                        self.what(),
                        cp.key,
                        col.name(),
                        col.type_().name(),
                        pg_detail(&e)
                    );
                    let raw = Value::Object(obj).to_string();
                    let env = Envelope::unparsable(&self.id, &self.department, cp.key.clone(), raw, reason)
                        .with_locator(locator);
                    return Ok((env, cp));
                }
            }
        }
        let env = row_envelope(
            &self.id,
            &self.department,
            obj,
            &cp,
            &self.cfg.watermark_column,
            self.cfg.delete_column.as_deref(),
        );
        Ok((env.with_locator(locator), cp))
    }
    fn reset(&mut self) {
        self.client = None;
    }
}

/// One pass of any dialect: pages from the checkpoint until a short page
/// (or `max_pages`), each page published with its checkpoint.
async fn walk<D: Dialect>(d: &mut D, ctx: &SourceContext, db: &'static str) -> Result<RunStats, ConnectorError> {
    let span = info_span!("sync", source = %d.source_id(), kind = "sql", db);
    async move {
        let id = d.source_id().to_string();
        let mut cp = load_checkpoint(&id, ctx).await?;
        d.connect().await?;
        let plan = match d.plan().await {
            Ok(p) => p,
            Err(e) => {
                // A broken connection surfaces as Unavailable; reconnect next time.
                if matches!(e, ConnectorError::Unavailable { .. }) {
                    d.reset();
                }
                return Err(e);
            }
        };
        let (batch_size, max_pages) = (d.settings().batch_size, d.settings().max_pages);
        let mut stats = RunStats::default();
        for page in 0..max_pages {
            let rows = match d.fetch(&plan, cp.as_ref()).await {
                Ok(r) => r,
                Err(e) => {
                    if matches!(e, ConnectorError::Unavailable { .. }) {
                        d.reset();
                    }
                    return Err(e);
                }
            };
            if rows.is_empty() {
                break;
            }
            let desc = format!("page {} of this pass", page + 1);
            let mut envelopes = Vec::with_capacity(rows.len());
            let mut last = None;
            for r in &rows {
                let (env, c) = d.to_envelope(r, &plan, &desc)?;
                envelopes.push(env);
                last = Some(c);
            }
            let Some(last) = last else { break };
            publish_page(&id, ctx, &envelopes, &last, &mut stats).await?;
            let short = (rows.len() as u32) < batch_size;
            cp = Some(last);
            if short {
                break;
            }
        }
        if stats.records > 0 {
            info!(source = %id, records = stats.records, pages = stats.units, "sql pass done");
        }
        Ok(stats)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SqlConfig {
        SqlConfig {
            url: "postgres://u:p@127.0.0.1:5432/db".into(),
            table: Some("zfjc.wfyd_case".into()),
            query: None,
            watermark_column: "update_time".into(),
            key_column: "case_no".into(),
            batch_size: 10,
            delete_column: None,
            connect_timeout_ms: 1000,
            statement_timeout_ms: 1000,
            max_pages: 10,
        }
    }

    #[test]
    fn quoting_and_validation() {
        assert_eq!(quote_path("zfjc.wfyd_case"), "\"zfjc\".\"wfyd_case\"");
        assert_eq!(quote_path("a\"b"), "\"a\"\"b\"");
        assert_eq!(cfg().base_sql(), "SELECT * FROM \"zfjc\".\"wfyd_case\"");
        cfg().validate("s").unwrap();
        let mut c = cfg();
        c.query = Some("SELECT 1;".into());
        assert!(c.validate("s").unwrap_err().to_string().contains("not both"));
        c.table = None;
        assert_eq!(c.base_sql(), "SELECT 1");
        c.url = "mysql://u:p@h/db".into();
        c.validate("s").unwrap();
        c.url = "mariadb://u:p@h:3307/db".into();
        c.validate("s").unwrap();
        c.url = "mysql://u:p@h/db?bogus_param=1".into();
        let e = c.validate("s").unwrap_err().to_string();
        assert!(e.contains("MySQL/MariaDB") && e.contains("bogus_param") && !e.contains(":p@"), "{e}");
        c.url = "postgres://u:${LIANQIN_TEST_SURELY_UNSET_VAR}@h/db".into();
        let e = c.validate("s").unwrap_err().to_string();
        assert!(e.contains("LIANQIN_TEST_SURELY_UNSET_VAR") && e.contains("`url`"), "{e}");
    }

    #[test]
    fn target_hides_credentials() {
        let s = SqlSource::new("s", "d", cfg()).unwrap();
        assert_eq!(s.target, "postgres://127.0.0.1:5432/db");
        assert!(!format!("{s:?}").contains(":p@"));
        let mut c = cfg();
        c.url = "mysql://u:secret-pw@10.0.0.7:3306/hjdb".into();
        let s = SqlSource::new("s", "d", c).unwrap();
        assert!(s.mysql.is_some());
        assert_eq!(s.target, "mysql://10.0.0.7:3306/hjdb");
        assert!(!format!("{s:?}").contains("secret-pw"));
    }
}
