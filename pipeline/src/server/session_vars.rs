//! Session statements and parameters: `SET`, `RESET`, `BEGIN`, `COMMIT`,
//! `ROLLBACK`, `DISCARD`, `DEALLOCATE` that drivers send are acknowledged
//! without touching the shared session; `SHOW <param>` answers the usual
//! parameters and `SHOW TABLES` lists only the tables the user may read.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion_postgres::pgwire;
use lianqin_policies::Principal;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};

use super::handler::{Ctx, batches_response};
use super::pg_error;

/// Session statements acknowledged without effect, by leading keyword.
pub(super) fn session_tag(sql: &str) -> Option<String> {
    let up = sql.trim_start().to_ascii_uppercase();
    let first = up.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("");
    Some(match first {
        "SET" | "RESET" => "SET".to_string(),
        "BEGIN" | "START" => "BEGIN".to_string(),
        "COMMIT" | "END" => "COMMIT".to_string(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".to_string(),
        "DISCARD" => "DISCARD ALL".to_string(),
        "DEALLOCATE" => "DEALLOCATE".to_string(),
        _ => return None,
    })
}

/// `SHOW <name>` → the parameter name (lower case).
pub(super) fn show_param(sql: &str) -> Option<String> {
    let t = sql.trim().trim_end_matches(';').trim();
    let mut it = t.split_whitespace();
    if !it.next()?.eq_ignore_ascii_case("show") {
        return None;
    }
    let rest: Vec<&str> = it.collect();
    Some(rest.join(" ").to_ascii_lowercase())
}

pub(super) fn show_value(param: &str) -> Option<&'static str> {
    Some(match param {
        "server_version" => "16.0-lianqin",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" => "on",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "timezone" | "time zone" => "Asia/Shanghai",
        "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "search_path" => "public",
        "max_identifier_length" => "63",
        "integer_datetimes" => "on",
        "application_name" => "",
        "is_superuser" => "off",
        _ => return None,
    })
}

pub(super) fn text_response(column: &str, rows: Vec<String>) -> PgWireResult<QueryResponse> {
    let schema = Schema::new(vec![Field::new(column, DataType::Utf8, true)]);
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(arrow::array::StringArray::from(rows))])
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    batches_response(&schema, vec![batch], &Format::UnifiedText, None)
}

pub(super) fn session_response(tag: &str) -> Response {
    match tag {
        "BEGIN" => Response::TransactionStart(Tag::new("BEGIN")),
        "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag)),
        _ => Response::Execution(Tag::new(tag)),
    }
}

impl Ctx<'_> {
    /// Tables `who` may read (for `SHOW TABLES`).
    pub(super) async fn visible_tables(&self, who: &Principal) -> PgWireResult<Vec<String>> {
        let engine = self.shared.engine().await.map_err(|e| pg_error("58000", e.to_string()))?;
        Ok(self.shared.visible_tables(who, &engine))
    }

    /// Answers `SHOW param` (`SHOW TABLES`: the tables `who` may read).
    pub(super) async fn show(&self, who: &Principal, param: &str) -> PgWireResult<Response> {
        if param == "tables" {
            let t = self.visible_tables(who).await?;
            return Ok(Response::Query(text_response("table_name", t)?));
        }
        match show_value(param) {
            Some(v) => Ok(Response::Query(text_response(param, vec![v.to_string()])?)),
            None => Err(pg_error("42704", format!("unrecognized configuration parameter \"{param}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_and_show() {
        assert_eq!(session_tag("set extra_float_digits = 3").as_deref(), Some("SET"));
        assert_eq!(session_tag("  BEGIN ISOLATION LEVEL READ COMMITTED").as_deref(), Some("BEGIN"));
        assert_eq!(session_tag("SELECT 1"), None);
        assert_eq!(session_tag("settings"), None);
        assert_eq!(show_param("SHOW TABLES").as_deref(), Some("tables"));
        assert_eq!(show_param("show transaction isolation level;").as_deref(), Some("transaction isolation level"));
        assert_eq!(show_param("SELECT 'show'"), None);
        assert_eq!(show_value("server_version"), Some("16.0-lianqin"));
    }
}
