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

//!
//! ## Code layout
//! This module holds the configuration, the checkpoint and the pass that
//! every database shares ([`walk`] over the [`Dialect`] trait); each
//! database is one file implementing [`Dialect`]: `postgres.rs`
//! (tokio-postgres) and `mysql.rs` (mysql_async, MySQL and MariaDB).

use lianqin_model::{Envelope, Op};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{Instrument, debug, info, info_span};

use crate::{ConnectorError, PollingSource, RunStats, SourceContext, expand_env};

mod mysql;
mod postgres;

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
        postgres::parse_url(&url).map_err(bad)?;
        Ok(())
    }

    /// What is read, for messages: `table x` or `query `…``.
    pub(super) fn what(&self) -> String {
        match (&self.table, &self.query) {
            (Some(t), _) => format!("table {t}"),
            (_, Some(q)) => format!("query `{}`", q.trim()),
            _ => String::new(),
        }
    }
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

const WM_ALIAS: &str = "__lianqin_wm";
const KEY_ALIAS: &str = "__lianqin_key";

/// A running `sql` source: the PostgreSQL or the MySQL/MariaDB dialect,
/// chosen by the URL's scheme.
pub struct SqlSource {
    db: Db,
}

enum Db {
    Postgres(Box<postgres::PgSource>),
    MySql(Box<mysql::MySqlSource>),
}

impl std::fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.debug_struct("SqlSource").field("id", &self.source_id()).field("target", &self.target()).finish()
    }
}

impl SqlSource {
    /// Builds the source (checks the connection string; connects lazily).
    pub fn new(id: &str, department: &str, cfg: SqlConfig) -> Result<Self, ConnectorError> {
        cfg.validate(id)?;
        let url = expand_env(&cfg.url, id, "url")?;
        let db = if mysql::is_mysql_url(&url) {
            Db::MySql(Box::new(mysql::MySqlSource::new(id, department, cfg)?))
        } else {
            Db::Postgres(Box::new(postgres::PgSource::new(id, department, cfg, &url)?))
        };
        Ok(SqlSource { db })
    }

    fn source_id(&self) -> &str {
        match &self.db {
            Db::Postgres(d) => d.source_id(),
            Db::MySql(d) => d.source_id(),
        }
    }

    /// Scheme, host, port and database (no user, no password), for messages.
    pub fn target(&self) -> &str {
        match &self.db {
            Db::Postgres(d) => &d.target,
            Db::MySql(d) => &d.target,
        }
    }
}

#[async_trait::async_trait]
impl PollingSource for SqlSource {
    fn id(&self) -> &str {
        self.source_id()
    }

    async fn sync_once(&mut self, ctx: &SourceContext) -> Result<RunStats, ConnectorError> {
        match &mut self.db {
            Db::Postgres(d) => walk(d.as_mut(), ctx, "postgres").await,
            Db::MySql(d) => walk(d.as_mut(), ctx, "mysql").await,
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
    /// How many rows the source holds after `after` (the database's own
    /// count for reconciliation); `None` when it cannot be counted.
    fn count(
        &mut self,
        plan: &Self::Plan,
        after: Option<&SqlCheckpoint>,
    ) -> impl std::future::Future<Output = Option<u64>> + Send;
    /// Forgets a broken connection (reconnect on the next pass).
    fn reset(&mut self);
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
        // Reconciliation: the database's count of what this pass should read;
        // keyset pages never deliver a row twice, so the rows published are
        // what it is compared with. Claimed only for a pass read to the end.
        let reported = d.count(&plan, cp.as_ref()).await;
        let mut finished = false;
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
                finished = true;
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
                finished = true;
                break;
            }
        }
        if finished && reported.is_some() {
            stats.reported = reported;
            stats.distinct = stats.records;
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
    fn validation() {
        cfg().validate("s").unwrap();
        let mut c = cfg();
        c.query = Some("SELECT 1;".into());
        assert!(c.validate("s").unwrap_err().to_string().contains("not both"));
        c.table = None;
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
        assert!(matches!(s.db, Db::Postgres(_)));
        assert_eq!(s.target(), "postgres://127.0.0.1:5432/db");
        assert!(!format!("{s:?}").contains(":p@"));
        let mut c = cfg();
        c.url = "mysql://u:secret-pw@10.0.0.7:3306/hjdb".into();
        let s = SqlSource::new("s", "d", c).unwrap();
        assert!(matches!(s.db, Db::MySql(_)));
        assert_eq!(s.target(), "mysql://10.0.0.7:3306/hjdb");
        assert!(!format!("{s:?}").contains("secret-pw"));
    }
}
