//! The PostgreSQL dialect of the `sql` connector (tokio-postgres, plain
//! TCP): keyset pages compared in PostgreSQL's own `::text` form, native
//! decoding of the common types and the text form for every other one (see
//! the module docs of [`super`]).

use std::fmt::Write as _;
use std::time::Duration;

use lianqin_model::Envelope;
use serde_json::{Map, Value};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row};
use tracing::warn;

use super::{Dialect, KEY_ALIAS, SqlCheckpoint, SqlConfig, WM_ALIAS, row_envelope};
use crate::{ConnectorError, expand_env};

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

/// The prepared shape of the source's rows.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Page query without a checkpoint (first pass).
    first: String,
    /// Page query after a checkpoint (`$1` = watermark text, `$2` = key text).
    next: String,
    /// Output columns, in order (without the helper columns).
    columns: Vec<String>,
    /// `first` / `next` as a row count (no order, no limit).
    count_first: String,
    count_next: String,
}

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

/// A running PostgreSQL `sql` source.
pub(super) struct PgSource {
    id: String,
    department: String,
    cfg: SqlConfig,
    /// Host, port and database (no user, no password) for messages.
    pub(super) target: String,
    client: Option<Client>,
    plan: Option<Plan>,
    warned_nulls: bool,
}

/// Parses a PostgreSQL connection string (URL or `key=value` form).
pub(super) fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    url.parse().map_err(|e| format!("`url` is not a PostgreSQL connection string: {e}"))
}

/// The SQL of the rows to read, before the keyset condition.
fn base_sql(cfg: &SqlConfig) -> String {
    match (&cfg.table, &cfg.query) {
        (Some(t), _) => format!("SELECT * FROM {}", quote_path(t)),
        (None, Some(q)) => q.trim().trim_end_matches(';').trim().to_string(),
        (None, None) => String::new(),
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

impl PgSource {
    /// Builds the source from the expanded `url` (connects lazily).
    pub(super) fn new(id: &str, department: &str, cfg: SqlConfig, url: &str) -> Result<Self, ConnectorError> {
        let pc = parse_url(url).map_err(|detail| ConnectorError::Config { source_id: id.into(), detail })?;
        Ok(PgSource {
            id: id.into(),
            department: department.into(),
            target: describe_target(&pc),
            cfg,
            client: None,
            plan: None,
            warned_nulls: false,
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

impl Dialect for PgSource {
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
        let base = base_sql(&self.cfg);
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
        let count_head = format!("SELECT count(*) FROM ({base}) AS src");
        let after =
            format!("({wm_q}, {key_q}) > ($1::text::{}, $2::text::{})", type_sql(wm.type_()), type_sql(key.type_()));
        let plan = Plan {
            first: format!("{head} WHERE {wm_q} IS NOT NULL AND {key_q} IS NOT NULL {tail}"),
            next: format!("{head} WHERE {after} {tail}"),
            columns: names,
            count_first: format!("{count_head} WHERE {wm_q} IS NOT NULL AND {key_q} IS NOT NULL"),
            count_next: format!("{count_head} WHERE {after}"),
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
    async fn count(&mut self, plan: &Plan, after: Option<&SqlCheckpoint>) -> Option<u64> {
        let client = self.client.as_ref()?;
        let row = match after {
            None => client.query_one(&plan.count_first, &[]).await,
            Some(cp) => client.query_one(&plan.count_next, &[&cp.wm, &cp.key]).await,
        }
        .ok()?;
        row.try_get::<_, i64>(0).ok().map(|n| n.max(0) as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_path("zfjc.wfyd_case"), "\"zfjc\".\"wfyd_case\"");
        assert_eq!(quote_path("a\"b"), "\"a\"\"b\"");
        let mut c = SqlConfig {
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
        };
        assert_eq!(base_sql(&c), "SELECT * FROM \"zfjc\".\"wfyd_case\"");
        c.table = None;
        c.query = Some("SELECT 1;".into());
        assert_eq!(base_sql(&c), "SELECT 1");
    }
}
