//! MySQL/MariaDB sources of the [`sql`](super) connector (`mysql://` or
//! `mariadb://` URLs), with the same semantics as the PostgreSQL path: a
//! keyset walk over (watermark, key), one publish + checkpoint per page,
//! the checkpoint kept in the server's own text form.
//!
//! Each page is
//! ``SELECT src.*, CAST(wm AS CHAR), CAST(key AS CHAR) FROM (<table or query>) AS src
//! WHERE (wm > ? OR (wm = ? AND key > ?)) ORDER BY wm, key LIMIT n``
//! — the expanded form of `(wm, key) > (?, ?)`, which MySQL and MariaDB can
//! serve from an index on (wm, key). Integer and decimal parameters are
//! `CAST` to the column's type so that they compare exactly (a string
//! against a number would compare as a double); date/time and string
//! parameters are compared in the column's own type and collation.
//! Floating-point watermark or key columns are refused (they cannot be
//! compared exactly).
//!
//! The session: `utf8mb4`, `time_zone = '+00:00'`, read-only transactions,
//! and a per-statement time limit (`max_execution_time` on MySQL,
//! `max_statement_time` on MariaDB). Plain TCP, no TLS.
//!
//! JSON: MySQL reports JSON columns as such; MariaDB's `JSON` is a
//! `LONGTEXT` with a `json_valid(col)` check constraint, which is looked up
//! in `information_schema.CHECK_CONSTRAINTS` for the columns of the source
//! (a column of a view or an expression stays text).

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone, Utc};
use lianqin_model::Envelope;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, OptsBuilder, Row, Value as My};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::{KEY_ALIAS, SqlCheckpoint, SqlConfig, WM_ALIAS};
use crate::{ConnectorError, expand_env};

/// Whether a connection string is for MySQL/MariaDB.
pub(super) fn is_mysql_url(url: &str) -> bool {
    let l = url.trim().to_ascii_lowercase();
    l.starts_with("mysql://") || l.starts_with("mariadb://")
}

/// Parses a `mysql://` / `mariadb://` URL (the password, if any, stays
/// inside the returned options; the message never repeats the URL).
pub(super) fn parse_url(url: &str) -> Result<Opts, String> {
    let t = url.trim();
    let rest = t.split_once("://").map(|(_, r)| r).unwrap_or(t);
    Opts::from_url(&format!("mysql://{rest}"))
        .map_err(|e| format!("`url` is not a MySQL/MariaDB connection URL (mysql://user:password@host:port/db): {e}"))
}

/// Scheme, host, port and database — no user, no password.
fn describe_target(url: &str, opts: &Opts) -> String {
    let scheme = if url.trim().to_ascii_lowercase().starts_with("mariadb://") { "mariadb" } else { "mysql" };
    format!("{scheme}://{}:{}/{}", opts.ip_or_hostname(), opts.tcp_port(), opts.db_name().unwrap_or("?"))
}

/// Quotes an identifier for MySQL.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quotes a possibly database-qualified name (`db.table`). Parts already in
/// backticks are kept (and may contain dots).
fn quote_path(s: &str) -> String {
    let mut parts = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for ch in s.chars() {
        match ch {
            '`' => {
                quoted = !quoted;
                cur.push(ch);
            }
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| {
            let p = p.trim();
            if p.len() >= 2 && p.starts_with('`') && p.ends_with('`') { p.to_string() } else { quote_ident(p) }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The SQL of the rows to read, before the keyset condition.
fn base_sql(cfg: &SqlConfig) -> String {
    match (&cfg.table, &cfg.query) {
        (Some(t), _) => format!("SELECT * FROM {}", quote_path(t)),
        (None, Some(q)) => q.trim().trim_end_matches(';').trim().to_string(),
        (None, None) => String::new(),
    }
}

/// A server error with its code and SQLSTATE, or the error and its causes.
fn my_detail(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
        other => {
            let mut s = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(c) = cur {
                let t = c.to_string();
                if !s.contains(&t) {
                    s.push_str(": ");
                    s.push_str(&t);
                }
                cur = c.source();
            }
            s
        }
    }
}

/// A short SQL name of a column's type, for messages.
fn type_name(c: &Column) -> String {
    use ColumnType::*;
    let unsigned = if c.flags().contains(ColumnFlags::UNSIGNED_FLAG) { " unsigned" } else { "" };
    let binary = c.character_set() == BINARY_CHARSET;
    let base = match c.column_type() {
        MYSQL_TYPE_TINY if c.column_length() == 1 => "tinyint(1)",
        MYSQL_TYPE_TINY => "tinyint",
        MYSQL_TYPE_SHORT => "smallint",
        MYSQL_TYPE_INT24 => "mediumint",
        MYSQL_TYPE_LONG => "int",
        MYSQL_TYPE_LONGLONG => "bigint",
        MYSQL_TYPE_FLOAT => "float",
        MYSQL_TYPE_DOUBLE => "double",
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => "decimal",
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => "date",
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => "datetime",
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => "timestamp",
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => "time",
        MYSQL_TYPE_YEAR => "year",
        MYSQL_TYPE_BIT => "bit",
        MYSQL_TYPE_JSON => "json",
        MYSQL_TYPE_ENUM => "enum",
        MYSQL_TYPE_SET => "set",
        MYSQL_TYPE_GEOMETRY => "geometry",
        MYSQL_TYPE_NULL => "null",
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => {
            if binary {
                "blob"
            } else {
                "text"
            }
        }
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            if binary {
                "varbinary"
            } else {
                "varchar"
            }
        }
        MYSQL_TYPE_STRING => {
            if c.flags().contains(ColumnFlags::ENUM_FLAG) {
                "enum"
            } else if c.flags().contains(ColumnFlags::SET_FLAG) {
                "set"
            } else if binary {
                "binary"
            } else {
                "char"
            }
        }
        _ => "other",
    };
    format!("{base}{unsigned}")
}

/// Collation id 63: binary strings (BLOB, VARBINARY, numbers, dates).
const BINARY_CHARSET: u16 = 63;

/// How a page query compares a checkpoint text with the column: integers
/// and decimals are cast to the column's type (exact), date/time and strings
/// are converted by the server to the column's own type and collation.
fn param_sql(c: &Column) -> Result<String, String> {
    use ColumnType::*;
    let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    Ok(match c.column_type() {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG
        | MYSQL_TYPE_YEAR => {
            if unsigned {
                "CAST(? AS UNSIGNED)".into()
            } else {
                "CAST(? AS SIGNED)".into()
            }
        }
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => format!("CAST(? AS DECIMAL(65, {}))", c.decimals().min(30)),
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => {
            return Err("a floating-point column cannot be compared exactly; use an integer, decimal, date/time or string column".into());
        }
        MYSQL_TYPE_BIT | MYSQL_TYPE_JSON | MYSQL_TYPE_GEOMETRY => {
            return Err("this type has no usable order; use an integer, decimal, date/time or string column".into());
        }
        _ => "?".into(),
    })
}

/// The prepared shape of the source's rows.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Page query without a checkpoint (first pass).
    first: String,
    /// Page query after a checkpoint (parameters: watermark, watermark, key — as text).
    next: String,
    /// Output columns, in order (without the helper columns).
    columns: Vec<String>,
    /// Per output column: a MariaDB JSON column (text checked by `json_valid`).
    json: Vec<bool>,
    /// `first` / `next` as a row count (no order, no limit).
    count_first: String,
    count_next: String,
    /// The real names of the watermark, key and delete columns.
    wm: String,
    key: String,
    delete: Option<String>,
}

/// A running MySQL/MariaDB `sql` source.
pub(super) struct MySqlSource {
    id: String,
    department: String,
    cfg: SqlConfig,
    /// Scheme, host, port and database for messages.
    pub(super) target: String,
    conn: Option<Conn>,
    mariadb: bool,
    plan: Option<Plan>,
    warned_nulls: bool,
}

impl MySqlSource {
    /// Builds the source (checks the URL; connects lazily).
    pub(super) fn new(id: &str, department: &str, cfg: SqlConfig) -> Result<Self, ConnectorError> {
        let url = expand_env(&cfg.url, id, "url")?;
        let opts = parse_url(&url).map_err(|detail| ConnectorError::Config { source_id: id.into(), detail })?;
        Ok(MySqlSource {
            id: id.into(),
            department: department.into(),
            target: describe_target(&url, &opts),
            cfg,
            conn: None,
            mariadb: false,
            plan: None,
            warned_nulls: false,
        })
    }

    fn what(&self) -> String {
        self.cfg.what()
    }

    fn unavailable(&self, doing: &str, e: &mysql_async::Error) -> ConnectorError {
        ConnectorError::Unavailable {
            source_id: self.id.clone(),
            what: format!("{doing} {}: {}", self.target, my_detail(e)),
        }
    }
}

impl super::Dialect for MySqlSource {
    type Plan = Plan;
    type Row = Row;
    fn source_id(&self) -> &str {
        &self.id
    }
    fn settings(&self) -> &SqlConfig {
        &self.cfg
    }
    async fn connect(&mut self) -> Result<(), ConnectorError> {
        if self.conn.as_ref().is_some_and(|c| !c.is_disconnected()) {
            return Ok(());
        }
        self.conn = None;
        let url = expand_env(&self.cfg.url, &self.id, "url")?;
        let opts = parse_url(&url).map_err(|detail| ConnectorError::Config { source_id: self.id.clone(), detail })?;
        // Always TCP to the host of the URL (never a local socket found via @@socket).
        let opts = OptsBuilder::from_opts(opts).prefer_socket(false).tcp_nodelay(true);
        let ms = self.cfg.connect_timeout_ms;
        let mut conn = match tokio::time::timeout(Duration::from_millis(ms), Conn::new(opts)).await {
            Err(_) => {
                return Err(ConnectorError::Unavailable {
                    source_id: self.id.clone(),
                    what: format!("connecting to {}: no answer within {ms} ms", self.target),
                });
            }
            Ok(Err(e)) => return Err(self.unavailable("connecting to", &e)),
            Ok(Ok(c)) => c,
        };
        let version: String = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| self.unavailable("session setup on", &e))?
            .unwrap_or_default();
        self.mariadb = version.to_ascii_lowercase().contains("mariadb");
        // utf8mb4, UTC (TIMESTAMP values and CAST texts), read-only.
        for s in ["SET NAMES utf8mb4", "SET time_zone = '+00:00'", "SET SESSION TRANSACTION READ ONLY"] {
            conn.query_drop(s).await.map_err(|e| self.unavailable(&format!("session setup (`{s}`) on"), &e))?;
        }
        // A runaway page is cancelled by the server (MySQL 5.7.8+, MariaDB 10.1+).
        let limit = if self.mariadb {
            format!("SET SESSION max_statement_time = {:.3}", self.cfg.statement_timeout_ms as f64 / 1000.0)
        } else {
            format!("SET SESSION max_execution_time = {}", self.cfg.statement_timeout_ms)
        };
        if let Err(e) = conn.query_drop(&limit).await {
            warn!(source = %self.id, server = %version, "no statement time limit on this server: {}", my_detail(&e));
        }
        debug!(source = %self.id, target = %self.target, server = %version, "connected");
        self.conn = Some(conn);
        Ok(())
    }
    /// Prepares the source's query once: checks that it runs and that the
    /// watermark and key columns exist, and builds the page queries.
    async fn plan(&mut self) -> Result<Plan, ConnectorError> {
        if let Some(p) = &self.plan {
            return Ok(p.clone());
        }
        let base = base_sql(&self.cfg);
        let what = self.what();
        let id = self.id.clone();
        let target = self.target.clone();
        let conn = self.conn.as_mut().expect("connected");
        let prep_error = |e: mysql_async::Error, doing: &str| match e {
            mysql_async::Error::Server(_) => ConnectorError::Config {
                source_id: id.clone(),
                detail: format!("{what} on {target}{doing} does not run: {}", my_detail(&e)),
            },
            other => {
                ConnectorError::Unavailable { source_id: id.clone(), what: format!("{target}: {}", my_detail(&other)) }
            }
        };
        let probe = format!("SELECT * FROM ({base}) AS src LIMIT 0");
        let stmt = conn.prep(&probe).await.map_err(|e| prep_error(e, ""))?;
        let cols = stmt.columns();
        let names: Vec<String> = cols.iter().map(|c| c.name_str().into_owned()).collect();
        // Column names are case-insensitive in MySQL: an exact match first.
        let find = |name: &str, key: &str| -> Result<&Column, ConnectorError> {
            let exact: Vec<&Column> = cols.iter().filter(|c| c.name_str() == name).collect();
            let found: Vec<&Column> = if exact.is_empty() {
                cols.iter().filter(|c| c.name_str().eq_ignore_ascii_case(name)).collect()
            } else {
                exact
            };
            match found.as_slice() {
                [] => Err(ConnectorError::Config {
                    source_id: id.clone(),
                    detail: format!("`{key}` = {name:?}: no such column in {what} (columns: {})", names.join(", ")),
                }),
                [c] => Ok(c),
                _ => Err(ConnectorError::Config {
                    source_id: id.clone(),
                    detail: format!("`{key}` = {name:?}: the column appears twice in {what}"),
                }),
            }
        };
        let wm = find(&self.cfg.watermark_column, "watermark_column")?;
        let key = find(&self.cfg.key_column, "key_column")?;
        let delete = match &self.cfg.delete_column {
            Some(d) => Some(find(d, "delete_column")?.name_str().into_owned()),
            None => None,
        };
        let mut params = Vec::with_capacity(2);
        for (c, cfg_key) in [(wm, "watermark_column"), (key, "key_column")] {
            params.push(param_sql(c).map_err(|why| ConnectorError::Config {
                source_id: id.clone(),
                detail: format!("`{cfg_key}` = {:?} ({}) in {what}: {why}", c.name_str(), type_name(c)),
            })?);
        }
        let wm_q = format!("src.{}", quote_ident(&wm.name_str()));
        let key_q = format!("src.{}", quote_ident(&key.name_str()));
        let mut select: Vec<String> = cols.iter().map(|c| format!("src.{}", quote_ident(&c.name_str()))).collect();
        select.push(format!("CAST({wm_q} AS CHAR) AS {}", quote_ident(WM_ALIAS)));
        select.push(format!("CAST({key_q} AS CHAR) AS {}", quote_ident(KEY_ALIAS)));
        let head = format!("SELECT {} FROM ({base}) AS src", select.join(", "));
        let tail = format!("ORDER BY {wm_q}, {key_q} LIMIT {}", self.cfg.batch_size);
        let (pw, pk) = (&params[0], &params[1]);
        let wm_desc = format!(
            "watermark `{}` ({}) and key `{}` ({})",
            wm.name_str(),
            type_name(wm),
            key.name_str(),
            type_name(key)
        );
        let count_head = format!("SELECT COUNT(*) FROM ({base}) AS src");
        let mut plan = Plan {
            count_first: format!("{count_head} WHERE {wm_q} IS NOT NULL AND {key_q} IS NOT NULL"),
            count_next: format!("{count_head} WHERE ({wm_q} > {pw} OR ({wm_q} = {pw} AND {key_q} > {pk}))"),
            first: format!("{head} WHERE {wm_q} IS NOT NULL AND {key_q} IS NOT NULL {tail}"),
            next: format!("{head} WHERE ({wm_q} > {pw} OR ({wm_q} = {pw} AND {key_q} > {pk})) {tail}"),
            columns: names,
            json: vec![false; cols.len()],
            wm: wm.name_str().into_owned(),
            key: key.name_str().into_owned(),
            delete,
        };
        // Prepare both now so that a problem shows at start, with the columns named.
        for (q, which) in [(&plan.first, "first page"), (&plan.next, "next page")] {
            let s =
                conn.prep(q.as_str()).await.map_err(|e| prep_error(e, &format!(": {which} query over {wm_desc}")))?;
            let _ = conn.close(s).await;
        }
        if self.mariadb {
            plan.json = mariadb_json_columns(conn, &base, &cols).await;
        }
        let _ = conn.close(stmt).await;
        if !self.warned_nulls {
            let q = format!("SELECT COUNT(*) FROM ({base}) AS src WHERE {wm_q} IS NULL OR {key_q} IS NULL");
            if let Ok(Some(n)) = conn.query_first::<i64, _>(q).await
                && n > 0
            {
                warn!(source = %self.id, rows = n, watermark = %self.cfg.watermark_column, key = %self.cfg.key_column,
                    "rows with a NULL watermark or key are not read");
            }
            self.warned_nulls = true;
        }
        self.plan = Some(plan.clone());
        Ok(plan)
    }
    async fn count(&mut self, plan: &Plan, after: Option<&SqlCheckpoint>) -> Option<u64> {
        let conn = self.conn.as_mut()?;
        let n: Option<i64> = match after {
            None => conn.exec_first(plan.count_first.as_str(), ()).await,
            Some(cp) => {
                conn.exec_first(plan.count_next.as_str(), (cp.wm.as_str(), cp.wm.as_str(), cp.key.as_str())).await
            }
        }
        .ok()?;
        n.map(|n| n.max(0) as u64)
    }
    async fn fetch(&mut self, plan: &Plan, after: Option<&SqlCheckpoint>) -> Result<Vec<Row>, ConnectorError> {
        let conn = self.conn.as_mut().expect("connected");
        let res: Result<Vec<Row>, _> = match after {
            None => conn.exec(plan.first.as_str(), ()).await,
            Some(cp) => conn.exec(plan.next.as_str(), (cp.wm.as_str(), cp.wm.as_str(), cp.key.as_str())).await,
        };
        res.map_err(|e| {
            let after = after.map(|c| format!(" after ({}, {})", c.wm, c.key)).unwrap_or_default();
            match e {
                mysql_async::Error::Server(_) => ConnectorError::BadResponse {
                    source_id: self.id.clone(),
                    location: format!("{} on {}{after}", self.what(), self.target),
                    detail: my_detail(&e),
                },
                other => ConnectorError::Unavailable {
                    source_id: self.id.clone(),
                    what: format!("{} on {}{after}: {}", self.what(), self.target, my_detail(&other)),
                },
            }
        })
    }
    fn to_envelope(
        &self,
        row: &Row,
        plan: &Plan,
        page_desc: &str,
    ) -> Result<(Envelope, SqlCheckpoint), ConnectorError> {
        let n = plan.columns.len();
        let helper = |i: usize, column: &str| {
            text(row.as_ref(i)).map_err(|detail| ConnectorError::BadResponse {
                source_id: self.id.clone(),
                location: format!("{} ({page_desc})", self.what()),
                detail: format!("column `{column}`: {detail}"),
            })
        };
        let cp = SqlCheckpoint { wm: helper(n, &plan.wm)?, key: helper(n + 1, &plan.key)? };
        let locator = format!("{} {}={}", self.target, self.cfg.key_column, cp.key);
        let mut obj = Map::with_capacity(n);
        for (i, col) in row.columns_ref().iter().enumerate().take(n) {
            match cell(row.as_ref(i), col, plan.json.get(i).copied().unwrap_or(false)) {
                Ok(v) => {
                    obj.insert(col.name_str().into_owned(), v);
                }
                Err(e) => {
                    // A value we cannot decode: the row goes to quarantine
                    // (with what was read) instead of blocking the source.
                    let reason = format!(
                        "source `{}`: {} ({page_desc}), key {:?}: column `{}` ({}): {e}",
                        self.id,
                        self.what(),
                        cp.key,
                        col.name_str(),
                        type_name(col),
                    );
                    let raw = Value::Object(obj).to_string();
                    let env = Envelope::unparsable(&self.id, &self.department, cp.key.clone(), raw, reason)
                        .with_locator(locator);
                    return Ok((env, cp));
                }
            }
        }
        let env = super::row_envelope(&self.id, &self.department, obj, &cp, &plan.wm, plan.delete.as_deref());
        Ok((env.with_locator(locator), cp))
    }
    fn reset(&mut self) {
        self.conn = None;
    }
}

/// MariaDB stores `JSON` as `LONGTEXT` with a `json_valid(col)` check: finds
/// which of the source's columns are such columns of a table. Best effort:
/// anything unexpected leaves the columns as text.
async fn mariadb_json_columns(conn: &mut Conn, base: &str, cols: &[Column]) -> Vec<bool> {
    let mut json = vec![false; cols.len()];
    // The base query's own metadata names the originating tables and columns.
    let Ok(stmt) = conn.prep(base).await else { return json };
    let origin = stmt.columns();
    let _ = conn.close(stmt).await;
    if origin.len() != cols.len() {
        return json;
    }
    let mut checked: Vec<((String, String), Vec<String>)> = Vec::new();
    for (i, c) in origin.iter().enumerate() {
        let texty = matches!(
            c.column_type(),
            ColumnType::MYSQL_TYPE_BLOB
                | ColumnType::MYSQL_TYPE_LONG_BLOB
                | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
                | ColumnType::MYSQL_TYPE_TINY_BLOB
                | ColumnType::MYSQL_TYPE_VAR_STRING
                | ColumnType::MYSQL_TYPE_STRING
        ) && c.character_set() != BINARY_CHARSET;
        let (schema, table, name) =
            (c.schema_str().into_owned(), c.org_table_str().into_owned(), c.org_name_str().into_owned());
        if !texty || schema.is_empty() || table.is_empty() || name.is_empty() {
            continue;
        }
        let key = (schema, table);
        let clauses = match checked.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => v.clone(),
            None => {
                let q = "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                         WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";
                let v: Vec<String> = conn.exec(q, (key.0.as_str(), key.1.as_str())).await.unwrap_or_default();
                let v: Vec<String> =
                    v.into_iter().map(|s| s.split_whitespace().collect::<String>().to_ascii_lowercase()).collect();
                checked.push((key, v.clone()));
                v
            }
        };
        let want = format!("json_valid({})", quote_ident(&name)).to_ascii_lowercase();
        json[i] = clauses.contains(&want);
    }
    json
}

/// A helper column's text (the watermark or key `CAST(… AS CHAR)`).
fn text(v: Option<&My>) -> Result<String, String> {
    match v {
        Some(My::Bytes(b)) => String::from_utf8(b.clone()).map_err(|_| "the text is not valid UTF-8".to_string()),
        Some(My::Int(i)) => Ok(i.to_string()),
        Some(My::UInt(u)) => Ok(u.to_string()),
        Some(My::NULL) | None => Err("NULL".into()),
        Some(other) => Ok(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| format!("not valid UTF-8 ({e})"))
}

fn hex_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02X}"));
    }
    s
}

/// Parses a value that arrived as text (text protocol) into a number.
fn parse_num(b: &[u8]) -> Result<Value, String> {
    let s = std::str::from_utf8(b).map_err(|_| "number is not UTF-8".to_string())?;
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Ok(Value::from(u));
    }
    s.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string()))
}

/// A DATE/DATETIME/TIMESTAMP value; `None` for MySQL's zero date.
fn datetime(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Result<Option<NaiveDateTime>, String> {
    if (y, mo, d, h, mi, s, us) == (0, 0, 0, 0, 0, 0, 0) {
        return Ok(None);
    }
    let date = NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
        .ok_or_else(|| format!("{y:04}-{mo:02}-{d:02} is not a valid date"))?;
    let time = NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), us)
        .ok_or_else(|| format!("{h:02}:{mi:02}:{s:02}.{us:06} is not a valid time of day"))?;
    Ok(Some(date.and_time(time)))
}

/// Text of a DATE/DATETIME/TIMESTAMP that arrived as text (text protocol).
fn datetime_from_text(b: &[u8]) -> Result<Option<NaiveDateTime>, String> {
    let s = std::str::from_utf8(b).map_err(|_| "date is not UTF-8".to_string())?;
    if s.trim_start_matches(['0', '-', ' ', ':', '.']).is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .map(Some)
        .map_err(|_| format!("{s:?} is not a valid date/time"))
}

/// One cell as JSON (NULL → null); `Err` names what could not be decoded.
fn cell(v: Option<&My>, col: &Column, mariadb_json: bool) -> Result<Value, String> {
    use ColumnType::*;
    let Some(v) = v else { return Ok(Value::Null) };
    if matches!(v, My::NULL) {
        return Ok(Value::Null);
    }
    let ty = col.column_type();
    let boolish = col.column_length() == 1 && matches!(ty, MYSQL_TYPE_TINY | MYSQL_TYPE_BIT);
    Ok(match (ty, v) {
        // TINYINT(1) (MySQL's BOOL) and BIT(1) → boolean (non-zero = true).
        (MYSQL_TYPE_TINY, My::Int(i)) if boolish => Value::Bool(*i != 0),
        (MYSQL_TYPE_TINY, My::UInt(u)) if boolish => Value::Bool(*u != 0),
        (MYSQL_TYPE_BIT, My::Bytes(b)) => {
            if b.len() > 8 {
                return Err(format!("BIT value of {} bytes does not fit 64 bits", b.len()));
            }
            let n = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            if boolish { Value::Bool(n != 0) } else { Value::from(n) }
        }
        (_, My::Int(i)) => Value::from(*i),
        (_, My::UInt(u)) => Value::from(*u),
        (_, My::Float(f)) => float(f64::from(*f)),
        (_, My::Double(f)) => float(*f),
        (MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2, My::Date(y, mo, d, h, mi, s, us)) => {
            match datetime(*y, *mo, *d, *h, *mi, *s, *us)? {
                None => Value::Null,
                Some(dt) => Value::String(Utc.from_utc_datetime(&dt).to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            }
        }
        (MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE, My::Date(y, mo, d, h, mi, s, us)) => {
            match datetime(*y, *mo, *d, *h, *mi, *s, *us)? {
                None => Value::Null,
                Some(dt) => Value::String(dt.format("%Y-%m-%d").to_string()),
            }
        }
        (_, My::Date(y, mo, d, h, mi, s, us)) => match datetime(*y, *mo, *d, *h, *mi, *s, *us)? {
            None => Value::Null,
            Some(dt) => Value::String(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        },
        (_, My::Time(neg, days, h, mi, s, us)) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let mut t = format!("{}{hours:02}:{mi:02}:{s:02}", if *neg { "-" } else { "" });
            if *us > 0 {
                t.push_str(format!(".{us:06}").trim_end_matches('0'));
            }
            Value::String(t)
        }
        // Text protocol or servers that send numbers and dates as text.
        (
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_YEAR | MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE,
            My::Bytes(b),
        ) => {
            let n = parse_num(b)?;
            if boolish { Value::Bool(n.as_f64().is_some_and(|x| x != 0.0)) } else { n }
        }
        (MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2, My::Bytes(b)) => match datetime_from_text(b)? {
            None => Value::Null,
            Some(dt) => Value::String(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        },
        (MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2, My::Bytes(b)) => match datetime_from_text(b)? {
            None => Value::Null,
            Some(dt) => Value::String(Utc.from_utc_datetime(&dt).to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        },
        (MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE, My::Bytes(b)) => match datetime_from_text(b)? {
            None => Value::Null,
            Some(dt) => Value::String(dt.format("%Y-%m-%d").to_string()),
        },
        // DECIMAL: exact, as text.
        (MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL, My::Bytes(b)) => Value::String(utf8(b)?),
        (MYSQL_TYPE_JSON, My::Bytes(b)) => serde_json::from_slice(b).map_err(|e| format!("invalid JSON: {e}"))?,
        (_, My::Bytes(b)) if mariadb_json => serde_json::from_slice(b).map_err(|e| format!("invalid JSON: {e}"))?,
        // Binary strings (BLOB, VARBINARY, GEOMETRY): UTF-8 text when they
        // are, else 0x-hex; character strings must be valid UTF-8.
        (_, My::Bytes(b)) if col.character_set() == BINARY_CHARSET => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(hex_text(b)),
        },
        (_, My::Bytes(b)) => Value::String(utf8(b)?),
        (_, My::NULL) => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_quoting_and_targets() {
        assert!(is_mysql_url("mysql://u:p@h/db") && is_mysql_url(" MariaDB://u:p@h/db"));
        assert!(!is_mysql_url("postgres://u:p@h/db"));
        let url = "mariadb://lianqin_ro:s%40cret@10.0.0.7:3307/hjdb";
        let o = parse_url(url).unwrap();
        assert_eq!(o.pass(), Some("s@cret"));
        assert_eq!(describe_target(url, &o), "mariadb://10.0.0.7:3307/hjdb");
        let o = parse_url("mysql://u:p@h/db").unwrap();
        assert_eq!(describe_target("mysql://u:p@h/db", &o), "mysql://h:3306/db");
        assert!(parse_url("mysql://u:p@h/db?no_such_param=1").is_err());
        assert_eq!(quote_path("hj.`a.b`"), "`hj`.`a.b`");
        assert_eq!(quote_path("we`ird"), "`we``ird`");
    }

    #[test]
    fn dates_and_zero_dates() {
        assert_eq!(datetime(0, 0, 0, 0, 0, 0, 0).unwrap(), None);
        assert!(datetime(2025, 2, 30, 0, 0, 0, 0).unwrap_err().contains("2025-02-30"));
        let dt = datetime(2025, 3, 15, 10, 30, 0, 500_000).unwrap().unwrap();
        assert_eq!(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string(), "2025-03-15T10:30:00.500");
        assert_eq!(datetime_from_text(b"0000-00-00 00:00:00").unwrap(), None);
        assert_eq!(datetime_from_text(b"2025-03-15 10:30:00.5").unwrap(), Some(dt));
    }
}
