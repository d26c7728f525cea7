//! Outbound flows filtered per department (§7.3.5): whatever leaves the hub
//! for a department carries only the rows and columns that department's
//! principal may see.
//!
//! * **Change flows** (`[[flows]]` in the hub config): after each library
//!   commit the hub hands the committed rows to [`Flows::deliver`], which
//!   runs them through the same secured plan as `lianqin sql --as USER`
//!   (row filter, column masks; deny by default) under the flow's user and
//!   appends the visible rows as JSON lines to the flow's sink file. Each
//!   delivery is an audit `flow` entry (user, department, table, rows,
//!   destination). Guarantee: at-least-once, in order per key (the same as
//!   the `changes.<library>` topics: after a crash the rows of the replayed
//!   batch are delivered again; dedupe by `content_hash`).
//!   The sink file is the flow's **outbox**, one event per line, each
//!   sealed with the receiving department's data key ([`crate::sealed`];
//!   [`open_line`] reads it back): the data dir holds no event in clear.
//!   With `topic` the same events
//!   also go to the department's own bus topic (`feeds.<department>`, a
//!   change feed filtered like the file), and with `[flows.push]` a
//!   [`push::Pusher`] delivers the outbox into the department's system
//!   (HTTP, PostgreSQL, MySQL) from a saved cursor — at-least-once with
//!   idempotent writes, every delivery audited and its receipt kept; a
//!   department that is down gets everything once it is back.
//!   [`receipt`] writes the signed daily reconciliation receipts (what was
//!   sent vs what the hub holds for that account).
//! * **Exports** ([`export`], `lianqin export --as USER`): one secured query
//!   written to a CSV or JSON-lines file, audited as a `query` entry plus one
//!   `export` entry naming user, department, tables, row count and
//!   destination.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use lianqin_policies::{PolicyEngine, Principal};
use tokio::sync::Mutex;

pub mod push;
pub mod receipt;
mod sql_target;

use crate::PipelineError;
use crate::audit::Audit;
use crate::query::{OutputFormat, Querier, QueryEngine, columns_of, format_batches};
use crate::schema::Catalog;

pub use crate::config::{FlowConfig, PushConfig};

/// Loads the policies for `data_dir` (see [`crate::policy::load`]).
pub async fn load_policies(data_dir: &Path) -> Result<PolicyEngine, PipelineError> {
    crate::policy::load(data_dir).await
}

struct Flow {
    cfg: FlowConfig,
    who: Principal,
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// `<prefix><topic>` when the flow also feeds a bus topic.
    topic: Option<String>,
}

/// The configured change flows of a hub.
pub struct Flows {
    flows: Vec<Flow>,
    policy: Arc<PolicyEngine>,
    catalog: Arc<Catalog>,
    audit: Audit,
    bus: Option<Arc<dyn lianqin_bus::Bus>>,
    /// Seals the outbox lines.
    keys: crate::sealed::Keys,
}

/// What an outbox line of flow `flow` is bound to.
fn line_context(flow: &str) -> String {
    format!("flow/{flow}")
}

/// An outbox line of flow `flow` in clear (a sealed line opened with the
/// data dir's keys; a line written before sealing as it is).
pub fn open_line(keys: &crate::sealed::Keys, flow: &str, line: String) -> Result<String, PipelineError> {
    if !lianqin_seal::is_sealed(&line) {
        return Ok(line);
    }
    let ring = keys.ring(false)?;
    let clear = ring
        .open_text(&line_context(flow), &line)
        .map_err(|e| PipelineError::Internal(format!("flow {flow}: outbox line: {e}")))?;
    Ok(clear.into_owned())
}

/// The outbox file of flow `cfg` on `data_dir` (its `sink`).
pub fn outbox_path(cfg: &FlowConfig, data_dir: &Path) -> PathBuf {
    if cfg.sink.is_absolute() { cfg.sink.clone() } else { data_dir.join(&cfg.sink) }
}

/// Cuts an unterminated last line (a write cut by a crash) off the outbox
/// at `path`, so the next event starts on a line of its own. The batch it
/// belonged to is delivered again after the restart (at-least-once).
fn cut_torn_tail(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Walk back in blocks to the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                tracing::warn!(outbox = %path.display(), cut = len - keep, "flow outbox: cut an unterminated last line");
                f.set_len(keep)?;
                f.sync_all()?;
            }
            return Ok(());
        }
        if start == 0 {
            f.set_len(0)?;
            return f.sync_all();
        }
        end = start;
    }
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.flows.iter().map(|f| &f.cfg.name)).finish()
    }
}

impl Flows {
    /// Opens the sinks of `cfgs` (none → `None`). Unknown users and
    /// libraries are config errors naming the flow.
    pub async fn open(
        cfgs: &[FlowConfig],
        data_dir: &Path,
        catalog: Arc<Catalog>,
        audit: Audit,
    ) -> Result<Option<Flows>, PipelineError> {
        if cfgs.is_empty() {
            return Ok(None);
        }
        let policy = Arc::new(load_policies(data_dir).await?);
        Flows::open_with_policy(cfgs, data_dir, catalog, audit, policy).await.map(Some)
    }

    /// Opens the sinks of `cfgs` under `policy` (the loaded policy of the
    /// data dir, or a test's).
    pub async fn open_with_policy(
        cfgs: &[FlowConfig],
        data_dir: &Path,
        catalog: Arc<Catalog>,
        audit: Audit,
        policy: Arc<PolicyEngine>,
    ) -> Result<Flows, PipelineError> {
        let mut flows = Vec::new();
        for c in cfgs {
            let who = policy.principal(&c.user).ok_or_else(|| {
                PipelineError::Config(format!("flow `{}`: unknown user `{}` (policies/users.toml)", c.name, c.user))
            })?;
            for l in &c.libraries {
                if !crate::config::flow_libraries().contains(l) {
                    return Err(PipelineError::Config(format!("flow `{}`: unknown library `{l}`", c.name)));
                }
            }
            let path = outbox_path(c, data_dir);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| PipelineError::Config(format!("flow `{}`: {}: {e}", c.name, dir.display())))?;
            }
            cut_torn_tail(&path)
                .map_err(|e| PipelineError::Config(format!("flow `{}`: {}: {e}", c.name, path.display())))?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| PipelineError::Config(format!("flow `{}`: {}: {e}", c.name, path.display())))?;
            flows.push(Flow { cfg: c.clone(), who, path, file: Mutex::new(file), topic: None });
        }
        Ok(Flows { flows, policy, catalog, audit, bus: None, keys: crate::sealed::Keys::new(data_dir) })
    }

    /// Also publishes the events of every flow with a `topic` to
    /// `<prefix><topic>` on `bus` (created with `partitions` when missing).
    pub async fn with_bus(
        mut self,
        bus: Arc<dyn lianqin_bus::Bus>,
        prefix: &str,
        partitions: u32,
    ) -> Result<Flows, PipelineError> {
        for f in &mut self.flows {
            if let Some(t) = &f.cfg.topic {
                let topic = format!("{prefix}{t}");
                bus.ensure_topic(&topic, partitions).await.map_err(PipelineError::Bus)?;
                f.topic = Some(topic);
            }
        }
        self.bus = Some(bus);
        Ok(self)
    }

    /// Delivers the committed rows `batch` of `library` to every flow that
    /// takes it, filtered and masked under the flow's principal. Called by
    /// the hub after each library commit, before the raw table commit, so a
    /// crash replays (at-least-once).
    pub async fn deliver(&self, library: &str, batch: &RecordBatch) -> Result<(), PipelineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for f in self.flows.iter().filter(|f| f.cfg.libraries.iter().any(|l| l == library)) {
            let table = format!("{library}_history");
            let res = secured_rows(&self.policy, &self.catalog, &f.who, &table, batch).await;
            use lianqin_audit::{AuditEvent, EventKind, Outcome};
            let (outcome, rows, detail) = match &res {
                Ok(b) => {
                    let n: usize = b.iter().map(RecordBatch::num_rows).sum();
                    if n > 0 {
                        let at = receipt::committed_at(batch);
                        let items = write_events(f, library, &self.catalog, &self.keys, b, at.as_deref()).await?;
                        if let (Some(topic), Some(bus)) = (&f.topic, &self.bus) {
                            bus.publish_raw(topic, &items).await.map_err(PipelineError::Bus)?;
                        }
                    }
                    let mut d = serde_json::json!({"flow": f.cfg.name, "destination": f.path.display().to_string(), "offered": batch.num_rows()});
                    if let Some(t) = &f.topic {
                        d["topic"] = serde_json::json!(t);
                    }
                    (Outcome::Success, n as u64, d)
                }
                Err(e) => (
                    Outcome::Deny,
                    0,
                    serde_json::json!({"flow": f.cfg.name, "destination": f.path.display().to_string(), "error": e.to_string()}),
                ),
            };
            let mut ev = AuditEvent::new(EventKind::Flow, &f.who.name, &f.who.department, outcome);
            ev.tables = vec![table];
            ev.rows = Some(rows);
            ev.rule = Some("policies/policy.csv".into());
            ev.rule_version = Some(self.policy.version());
            ev.detail = detail;
            self.audit.record(ev)?;
        }
        Ok(())
    }
}

/// The rows of `batch` (rows of `table`) that `who` may see, masked.
pub async fn secured_rows(
    policy: &PolicyEngine,
    catalog: &Catalog,
    who: &Principal,
    table: &str,
    batch: &RecordBatch,
) -> Result<Vec<RecordBatch>, PipelineError> {
    secured_batches(policy, catalog, who, table, std::slice::from_ref(batch)).await
}

/// The rows of `batches` (rows of `table`, one schema) that `who` may see,
/// masked.
pub async fn secured_batches(
    policy: &PolicyEngine,
    catalog: &Catalog,
    who: &Principal,
    table: &str,
    batches: &[RecordBatch],
) -> Result<Vec<RecordBatch>, PipelineError> {
    let Some(first) = batches.first() else { return Ok(vec![]) };
    let ctx = SessionContext::new();
    crate::udf::register(&ctx, catalog);
    crate::udf::forbid_oracles(&ctx);
    policy.mask_functions().register(&ctx);
    let mem =
        MemTable::try_new(first.schema(), vec![batches.to_vec()]).map_err(|e| PipelineError::Query(e.to_string()))?;
    ctx.register_table(table, Arc::new(mem)).map_err(|e| PipelineError::Query(e.to_string()))?;
    let plan = ctx
        .state()
        .create_logical_plan(&format!("SELECT * FROM {table}"))
        .await
        .map_err(|e| PipelineError::Query(e.to_string()))?;
    let plan = policy
        .secure_plan(who, plan, &|t| columns_of(catalog, t))
        .map_err(|e| PipelineError::Query(format!("permission denied: {e}")))?;
    let df = ctx.execute_logical_plan(plan).await.map_err(|e| PipelineError::Query(e.to_string()))?;
    df.collect().await.map_err(|e| PipelineError::Query(e.to_string()))
}

/// Appends the events of `batches` to the outbox of `f` (fsynced) and
/// returns them as (key, event) for the flow's topic.
async fn write_events(
    f: &Flow,
    library: &str,
    catalog: &Catalog,
    keys: &crate::sealed::Keys,
    batches: &[RecordBatch],
    committed_at: Option<&str>,
) -> Result<Vec<(String, Vec<u8>)>, PipelineError> {
    let key = catalog.library(library)?.key.clone();
    let seal = keys
        .ring(true)?
        .current(&f.who.department)
        .map_err(|e| PipelineError::Config(format!("flow {}: data key: {e}", f.cfg.name)))?;
    let context = line_context(&f.cfg.name);
    let text = format_batches(batches, OutputFormat::Json)?;
    let mut out = Vec::with_capacity(text.len() + 64 * batches.len());
    let mut items = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| PipelineError::Internal(format!("flow {}: {e}", f.cfg.name)))?;
        let id = row.get(&key).cloned().unwrap_or(serde_json::Value::Null);
        let op = if row.get("deleted").and_then(|d| d.as_bool()) == Some(true) { "delete" } else { "upsert" };
        let ev = serde_json::json!({
            "flow": f.cfg.name, "library": library, "id": id, "op": op, "committed_at": committed_at, "row": row,
        });
        let text = ev.to_string();
        out.extend_from_slice(seal.seal_text(&context, &text).as_bytes());
        out.push(b'\n');
        if f.topic.is_some() {
            let k = match &id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            items.push((k, text.into_bytes()));
        }
    }
    let mut file = f.file.lock().await;
    file.write_all(&out)
        .and_then(|_| file.sync_data())
        .map_err(|e| PipelineError::Internal(format!("flow {}: {}: {e}", f.cfg.name, f.path.display())))?;
    Ok(items)
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The query (`SELECT * FROM table [WHERE ...]` or free SQL).
    pub sql: String,
    /// `Csv` or `Json` (JSON lines).
    pub format: OutputFormat,
    /// Destination file.
    pub out: PathBuf,
}

/// Runs `req.sql` as `user` with their permissions over `data_dir`, writes
/// the result to `req.out`, and audits the query and an `export` entry.
/// Returns the number of rows written.
pub async fn export(data_dir: &Path, user: &str, req: &ExportRequest) -> Result<u64, PipelineError> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let catalog = Catalog::builtin()?;
    let policy = Arc::new(load_policies(data_dir).await?);
    let audit = Audit::open(data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
    let Some(who) = policy.principal(user) else {
        let mut ev = AuditEvent::new(EventKind::Export, user, "", Outcome::Deny);
        ev.detail = serde_json::json!({"reason": "unknown user", "destination": req.out.display().to_string()});
        audit.record_durable(ev)?;
        audit.sync();
        return Err(PipelineError::Query(format!(
            "permission denied: unknown user `{user}` (see policies/users.toml)"
        )));
    };
    let store = crate::library::LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await?;
    let querier = Querier {
        user: who.name.clone(),
        department: who.department.clone(),
        session: Some(format!("export-{}", std::process::id())),
        client_addr: Some("local".into()),
    };
    let dept = who.department.clone();
    let engine = QueryEngine::new(&store, &catalog)
        .await?
        .with_policy(Arc::clone(&policy), who)
        .with_audit(audit.clone(), querier);
    let res = async {
        let batches = engine.sql(&req.sql).await?;
        let text = format_batches(&batches, req.format)?;
        std::fs::write(&req.out, text).map_err(|e| PipelineError::Internal(format!("{}: {e}", req.out.display())))?;
        Ok::<_, PipelineError>(batches)
    }
    .await;
    let plan_tables = match engine.context().state().create_logical_plan(&req.sql).await {
        Ok(p) => crate::query::tables_of(&p),
        Err(_) => vec![],
    };
    let mut ev =
        AuditEvent::new(EventKind::Export, user, &dept, if res.is_ok() { Outcome::Success } else { Outcome::Failure });
    ev.tables = plan_tables;
    ev.sql = Some(req.sql.clone());
    ev.rule_version = Some(policy.version());
    ev.session = Some(format!("export-{}", std::process::id()));
    ev.client_addr = Some("local".into());
    let rows = res.as_ref().map(|b| b.iter().map(|b| b.num_rows() as u64).sum::<u64>()).unwrap_or(0);
    ev.rows = Some(rows);
    ev.detail = match &res {
        Ok(_) => {
            serde_json::json!({"destination": req.out.display().to_string(), "format": format!("{:?}", req.format).to_lowercase()})
        }
        Err(e) => serde_json::json!({"destination": req.out.display().to_string(), "error": e.to_string()}),
    };
    audit.record_durable(ev)?;
    audit.sync();
    res.map(|_| rows)
}
