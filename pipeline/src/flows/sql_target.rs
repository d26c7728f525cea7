//! SQL targets of `[flows.push]`: a department's PostgreSQL or
//! MySQL/MariaDB table that receives the flow's events as upserts.
//!
//! The table (created when missing) holds one row per library record the
//! department may see:
//!
//! | column | |
//! |---|---|
//! | `library` | `element`, `matter`, `matter_event` |
//! | `id` | the record's id as the flow shows it |
//! | `op` | `upsert` or `delete` (a tombstone row: nothing is deleted) |
//! | `content_hash` | the version's content hash |
//! | `row_json` | the row as the flow shows it (masked columns masked) |
//! | `delivery` | the delivery that wrote it last |
//! | `delivered_at` | when |
//!
//! Primary key `(library, id)`. A delivery is one transaction; within it a
//! record that appears twice keeps its last version (outbox order), so a
//! repeated delivery rewrites the same rows — idempotent.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;

use super::push::{Delivery, PushError, Target, redact_url};
use crate::PipelineError;
use crate::config::SqlPushConfig;

/// One row to upsert.
struct Row {
    library: String,
    id: String,
    op: String,
    hash: Option<String>,
    row: String,
}

/// The events of `d` as rows, the last version per `(library, id)`.
fn rows_of(d: &Delivery) -> Result<Vec<Row>, PushError> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut last: HashMap<(String, String), Row> = HashMap::new();
    for (i, e) in d.events.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(e).map_err(|err| PushError::Refused {
            destination: "outbox".into(),
            delivery: d.id.clone(),
            detail: format!("event {i} is not JSON: {err}"),
        })?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let library = s("library").unwrap_or_default();
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let row = Row {
            op: s("op").unwrap_or_else(|| "upsert".into()),
            hash: v.get("row").and_then(|r| r.get("content_hash")).and_then(|h| h.as_str()).map(str::to_string),
            row: v.get("row").map(|r| r.to_string()).unwrap_or_else(|| "null".into()),
            library: library.clone(),
            id: id.clone(),
        };
        let k = (library, id);
        if !last.contains_key(&k) {
            order.push(k.clone());
        }
        last.insert(k, row);
    }
    Ok(order.into_iter().filter_map(|k| last.remove(&k)).collect())
}

/// `table` split as (`schema`?, `name`), checked by the config.
fn quoted(table: &str, q: char) -> String {
    table.split('.').map(|p| format!("{q}{p}{q}")).collect::<Vec<_>>().join(".")
}

/// `type = "postgres"`.
pub struct PgTarget {
    url: String,
    destination: String,
    table: String,
    timeout: Duration,
    client: Option<tokio_postgres::Client>,
}

impl PgTarget {
    /// Checks the settings (connects on the first delivery).
    pub fn new(flow: &str, cfg: &SqlPushConfig) -> Result<PgTarget, PipelineError> {
        let url = lianqin_connectors::expand_env(&cfg.url, &format!("flow {flow}"), "push.url")
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        let pc: tokio_postgres::Config = url.parse().map_err(|e| {
            PipelineError::Config(format!(
                "flow `{flow}`: [flows.push] `url` is not a PostgreSQL connection string: {e}"
            ))
        })?;
        let host = pc
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let destination = format!(
            "postgres://{host}:{}/{} table {}",
            pc.get_ports().first().copied().unwrap_or(5432),
            pc.get_dbname().unwrap_or(""),
            cfg.table
        );
        Ok(PgTarget {
            url,
            destination,
            table: quoted(&cfg.table, '"'),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            client: None,
        })
    }

    async fn connect(&mut self) -> Result<&mut tokio_postgres::Client, PushError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(self.client.as_mut().expect("checked"));
        }
        let unreachable = |detail: String| PushError::Unreachable { destination: self.destination.clone(), detail };
        let mut pc: tokio_postgres::Config = self.url.parse().map_err(|e| unreachable(format!("{e}")))?;
        pc.connect_timeout(self.timeout);
        if pc.get_application_name().is_none() {
            pc.application_name("lianqin-flow");
        }
        let (client, conn) = pc.connect(tokio_postgres::NoTls).await.map_err(|e| unreachable(pg_detail(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("flow target connection closed: {e}");
            }
        });
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (library text NOT NULL, id text NOT NULL, op text NOT NULL, \
             content_hash text, row_json jsonb NOT NULL, delivery text NOT NULL, \
             delivered_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (library, id))",
            self.table
        );
        client.batch_execute(&ddl).await.map_err(|e| unreachable(format!("creating the table: {}", pg_detail(&e))))?;
        self.client = Some(client);
        Ok(self.client.as_mut().expect("set"))
    }
}

fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[async_trait]
impl Target for PgTarget {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    async fn deliver(&mut self, d: &Delivery) -> Result<serde_json::Value, PushError> {
        let rows = rows_of(d)?;
        let sql = format!(
            "INSERT INTO {t} (library, id, op, content_hash, row_json, delivery) \
             SELECT l, i, o, h, r::jsonb, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
             AS u(l, i, o, h, r) \
             ON CONFLICT (library, id) DO UPDATE SET op = EXCLUDED.op, content_hash = EXCLUDED.content_hash, \
             row_json = EXCLUDED.row_json, delivery = EXCLUDED.delivery, delivered_at = now()",
            t = self.table
        );
        let dest = self.destination.clone();
        let cols: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<Option<&str>>, Vec<&str>) = (
            rows.iter().map(|r| r.library.as_str()).collect(),
            rows.iter().map(|r| r.id.as_str()).collect(),
            rows.iter().map(|r| r.op.as_str()).collect(),
            rows.iter().map(|r| r.hash.as_deref()).collect(),
            rows.iter().map(|r| r.row.as_str()).collect(),
        );
        let client = self.connect().await?;
        let res = async {
            let tx = client.transaction().await?;
            let n = tx.execute(&sql, &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &d.id]).await?;
            tx.commit().await?;
            Ok::<u64, tokio_postgres::Error>(n)
        }
        .await;
        match res {
            Ok(n) => Ok(serde_json::json!({"committed": true, "rows_written": n})),
            Err(e) => {
                let closed = self.client.as_ref().is_none_or(|c| c.is_closed());
                if closed || e.as_db_error().is_none() {
                    self.client = None;
                    Err(PushError::Unreachable { destination: dest, detail: pg_detail(&e) })
                } else {
                    Err(PushError::Refused { destination: dest, delivery: d.id.clone(), detail: pg_detail(&e) })
                }
            }
        }
    }
}

/// `type = "mysql"` (MySQL or MariaDB).
pub struct MyTarget {
    opts: mysql_async::Opts,
    destination: String,
    table: String,
    timeout: Duration,
    conn: Option<mysql_async::Conn>,
}

impl MyTarget {
    /// Checks the settings (connects on the first delivery).
    pub fn new(flow: &str, cfg: &SqlPushConfig) -> Result<MyTarget, PipelineError> {
        let url = lianqin_connectors::expand_env(&cfg.url, &format!("flow {flow}"), "push.url")
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        let url = url.strip_prefix("mariadb://").map(|r| format!("mysql://{r}")).unwrap_or(url);
        let opts = mysql_async::Opts::from_url(&url).map_err(|e| {
            PipelineError::Config(format!("flow `{flow}`: [flows.push] `url` is not a MySQL connection string: {e}"))
        })?;
        let destination = format!("{} table {}", redact_url(&url).trim_end_matches('/'), cfg.table);
        let opts = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false).tcp_nodelay(true).into();
        Ok(MyTarget {
            opts,
            destination,
            table: quoted(&cfg.table, '`'),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            conn: None,
        })
    }

    async fn connect(&mut self) -> Result<&mut mysql_async::Conn, PushError> {
        if self.conn.is_none() {
            let unreachable = |detail: String| PushError::Unreachable { destination: self.destination.clone(), detail };
            let mut conn = match tokio::time::timeout(self.timeout, mysql_async::Conn::new(self.opts.clone())).await {
                Err(_) => return Err(unreachable(format!("no answer within {} ms", self.timeout.as_millis()))),
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Ok(Ok(c)) => c,
            };
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} (library VARCHAR(32) NOT NULL, id VARCHAR(255) NOT NULL, \
                 op VARCHAR(16) NOT NULL, content_hash VARCHAR(64) NULL, row_json LONGTEXT NOT NULL, \
                 delivery VARCHAR(255) NOT NULL, delivered_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 PRIMARY KEY (library, id)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                self.table
            );
            conn.query_drop(ddl).await.map_err(|e| unreachable(format!("creating the table: {e}")))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set"))
    }
}

#[async_trait]
impl Target for MyTarget {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    async fn deliver(&mut self, d: &Delivery) -> Result<serde_json::Value, PushError> {
        let rows = rows_of(d)?;
        let dest = self.destination.clone();
        let table = self.table.clone();
        let conn = self.connect().await?;
        let res = async {
            let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
            let mut written = 0u64;
            // 6 parameters a row; 500 rows a statement stays far below the
            // protocol's 65 535 placeholders.
            for chunk in rows.chunks(500) {
                let values = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO {table} (library, id, op, content_hash, row_json, delivery) VALUES {values} \
                     ON DUPLICATE KEY UPDATE op = VALUES(op), content_hash = VALUES(content_hash), \
                     row_json = VALUES(row_json), delivery = VALUES(delivery), delivered_at = CURRENT_TIMESTAMP(6)"
                );
                let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 6);
                for r in chunk {
                    params.push(r.library.clone().into());
                    params.push(r.id.clone().into());
                    params.push(r.op.clone().into());
                    params.push(r.hash.clone().into());
                    params.push(r.row.clone().into());
                    params.push(d.id.clone().into());
                }
                tx.exec_drop(sql, mysql_async::Params::Positional(params)).await?;
                written += tx.affected_rows();
            }
            tx.commit().await?;
            Ok::<u64, mysql_async::Error>(written)
        }
        .await;
        match res {
            Ok(n) => Ok(serde_json::json!({"committed": true, "rows_written": n})),
            Err(e) => {
                let server = matches!(e, mysql_async::Error::Server(_));
                if !server {
                    self.conn = None;
                    Err(PushError::Unreachable { destination: dest, detail: e.to_string() })
                } else {
                    Err(PushError::Refused { destination: dest, delivery: d.id.clone(), detail: e.to_string() })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_keeps_the_last_version_of_each_record() {
        let d = Delivery {
            id: "f:0-1".into(),
            start: 0,
            end: 1,
            events: vec![
                r#"{"library":"matter","id":"m1","op":"upsert","row":{"content_hash":"a"}}"#.into(),
                r#"{"library":"matter","id":"m2","op":"upsert","row":{"content_hash":"b"}}"#.into(),
                r#"{"library":"matter","id":"m1","op":"delete","row":{"content_hash":"c"}}"#.into(),
                r#"{"library":"element","id":"m1","op":"upsert","row":{"content_hash":"d"}}"#.into(),
            ],
        };
        let rows = rows_of(&d).unwrap();
        let got: Vec<(&str, &str, &str, Option<&str>)> =
            rows.iter().map(|r| (r.library.as_str(), r.id.as_str(), r.op.as_str(), r.hash.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("matter", "m1", "delete", Some("c")),
                ("matter", "m2", "upsert", Some("b")),
                ("element", "m1", "upsert", Some("d"))
            ]
        );
    }
}
