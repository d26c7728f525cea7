//! `lianqin` — the hub's command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lianqin_pipeline::config::HubConfig;
use lianqin_pipeline::hub::Hub;
use lianqin_pipeline::library::LibraryStore;
use lianqin_pipeline::query::{OutputFormat, QueryEngine, format_batches};
use lianqin_pipeline::schema::Catalog;
use tokio::sync::watch;

/// Lianqin (联勤): cross-department data-integration hub for ecological joint police stations.
#[derive(Parser, Debug)]
#[command(name = "lianqin", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start simulated department systems and run the hub against them.
    Demo {
        /// Ingest once, print the summary and exit.
        #[arg(long)]
        once: bool,
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Scale of the simulated data (records per source ≈ 300 × scale).
        #[arg(long, default_value_t = 1)]
        scale: usize,
    },
    /// Run the hub from a config file until Ctrl-C.
    Run {
        /// The hub config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Folder holding all state (overrides `data_dir` in the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// What this process runs: `all`, `sources` (connectors only) or
        /// `worker` (pipeline worker only; several share Kafka partitions).
        #[arg(long, default_value = "all")]
        role: String,
        /// Node name (overrides `node` in the config); names this process's
        /// connector checkpoints and audit stream.
        #[arg(long)]
        node: Option<String>,
    },
    /// Validate a config and its mappings without starting anything.
    Check {
        /// The hub config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Benchmarks (figures for BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Run SQL over the libraries; without a query, an interactive shell.
    Sql {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Query as this user (default: the OS user); recorded in the audit trail.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// The query.
        query: Option<String>,
    },
    /// Cross-department permissions: explain which rules apply to a user and table.
    Policy {
        #[command(subcommand)]
        what: PolicyCmd,
    },
    /// Compact the libraries' small files now (history is kept; nothing is vacuumed).
    Compact {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
    },
    /// Serve the libraries over the Postgres wire protocol (psql, DBeaver,
    /// psycopg): SCRAM-SHA-256 logins from policies/users.toml, every query
    /// with the user's permissions, logins and queries audited.
    Serve {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: std::net::SocketAddr,
        /// PEM certificate (chain) for TLS; with --tls-key. Plain-text logins are then refused.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Export a table or query with USER's permissions to a file (audited).
    Export {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Export as this user (policies/users.toml): their rows and masks only.
        #[arg(long = "as")]
        as_user: String,
        /// Table to export (with --where); or use --sql.
        #[arg(long, conflicts_with = "sql")]
        table: Option<String>,
        /// Row condition (SQL) for --table.
        #[arg(long = "where", requires = "table")]
        where_: Option<String>,
        /// Free SQL query instead of --table.
        #[arg(long)]
        sql: Option<String>,
        /// `csv` or `jsonl`.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Destination file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Security officers' tools over the encrypted audit trail.
    Audit {
        #[command(subcommand)]
        what: AuditCmd,
    },
}

#[derive(clap::Args, Debug, Default)]
struct AuditFilterArgs {
    /// Entries at or after this time (RFC 3339 or `YYYY-MM-DD HH:MM:SS`, Beijing time).
    #[arg(long)]
    from: Option<String>,
    /// Entries before this time.
    #[arg(long)]
    to: Option<String>,
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only this department.
    #[arg(long)]
    department: Option<String>,
    /// Only entries touching this table.
    #[arg(long)]
    table: Option<String>,
    /// Only this kind (login, query, denial, flow, export, policy_change, config_change, connector_run, quarantine, audit_read).
    #[arg(long)]
    kind: Option<String>,
    /// Only this outcome (allow, deny, success, failure).
    #[arg(long)]
    decision: Option<String>,
    /// Entries whose text contains this.
    #[arg(long)]
    text: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check chain, tags and signatures of every audit stream; exit 0 only when all holds.
    Verify {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Verify the copy on the replicated audit topic (`<prefix>audit`)
        /// instead: read it back with the Kafka settings of this hub config.
        #[arg(long = "from-kafka", value_name = "HUB_CONFIG")]
        from_kafka: Option<PathBuf>,
    },
    /// Rebuild the audit streams from the replicated audit topic into
    /// OUT/audit/ (then `lianqin audit verify --data-dir OUT`).
    Mirror {
        /// Hub config whose `[bus]` names the brokers and topic prefix.
        #[arg(long)]
        config: PathBuf,
        /// Where to write the copy.
        #[arg(long)]
        out: PathBuf,
    },
    /// Search entries (decrypted).
    Search {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Reader (recorded: reading the audit is audited).
        #[arg(long = "as")]
        as_user: Option<String>,
    },
    /// Export entries as CSV or JSON lines (decrypted).
    Export {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// `csv` or `jsonl`.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Reader (recorded).
        #[arg(long = "as")]
        as_user: Option<String>,
    },
    /// Export entries SEQ_FROM..=SEQ_TO of one stream with a proof (JSON) that
    /// an inspector checks against a signed checkpoint without the whole log
    /// (`lianqin audit check-proof`); prints the stream's public key to stderr.
    Prove {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Stream (directory under audit/, e.g. `hub`, `cli`, `demo-hub`).
        #[arg(long)]
        stream: String,
        /// First sequence number.
        #[arg(long)]
        from_seq: u64,
        /// Last sequence number (a signed checkpoint must cover it).
        #[arg(long)]
        to_seq: u64,
        /// Reader (recorded).
        #[arg(long = "as")]
        as_user: Option<String>,
    },
    /// Check an exported proof against the stream's public key (no master
    /// key needed); prints the entries; exit 0 only when the proof holds.
    CheckProof {
        /// The proof file (from `lianqin audit prove`).
        #[arg(long)]
        proof: PathBuf,
        /// The stream's checkpoint public key (hex), obtained out of band.
        #[arg(long)]
        public_key: String,
    },
    /// Follow new entries of the hub's stream.
    Tail {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Keep following (like tail -f).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Stream: the node name of the hub process (default `hub`; the demo's is `demo-hub`).
        #[arg(long, default_value = "hub")]
        stream: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Print which rules apply to USER on TABLE and why (policies from
    /// `$LIANQIN_POLICIES` or the built-in `policies/` files).
    Explain {
        /// User name (policies/users.toml).
        #[arg(long)]
        user: String,
        /// Table (e.g. element_history, matter_history, raw_police_110).
        #[arg(long)]
        table: String,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Throughput and freshness (fetch → committed, p50/p99) through Apache Kafka.
    Kafka {
        /// Bootstrap servers.
        #[arg(long, env = "LIANQIN_KAFKA_BROKERS")]
        brokers: String,
        /// Records for the throughput run.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Records per micro-batch.
        #[arg(long, default_value_t = 50_000)]
        batch: usize,
    },
    /// End-to-end ingest on the embedded bus: parse, publish durably, normalize, commit.
    Ingest {
        /// Records to ingest.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Records per micro-batch.
        #[arg(long, default_value_t = 50_000)]
        batch: usize,
        /// Folder for the run (default: a temporary folder, removed after).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also publish change-feed events (off by default on the embedded bus).
        #[arg(long)]
        change_feeds: bool,
        /// Publish and process side by side, as `lianqin run` does (default:
        /// publish everything, then process, and report each stage).
        #[arg(long)]
        pipelined: bool,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn data_dir_of(cfg: &HubConfig, cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| cfg.data_dir.clone()).unwrap_or_else(|| PathBuf::from("lianqin-data"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        #[cfg(feature = "demo")]
        Cmd::Demo { once, data_dir, scale } => {
            init_tracing("warn");
            let cfg = lianqin_sim::SimConfig {
                incidents: 300 * scale,
                tickets: 300 * scale,
                enterprises: 200 * scale,
                cases: 150 * scale,
                env_rows_per_file: 100 * scale,
                ..Default::default()
            };
            let text = lianqin_pipeline::demo::run_demo(&data_dir, once, cfg).await?;
            println!("{text}");
        }
        #[cfg(feature = "demo")]
        Cmd::Bench { what: BenchCmd::Kafka { brokers, records, batch } } => {
            init_tracing("warn");
            let tmp = tempfile::tempdir()?;
            let r = lianqin_pipeline::bench::kafka(tmp.path(), &brokers, records, batch).await?;
            print!("{}", r.ingest.render());
            println!("freshness samples  {}", r.samples);
            println!("fetch → committed  p50 {:.0} ms, p99 {:.0} ms", r.p50_ms, r.p99_ms);
        }
        #[cfg(feature = "demo")]
        Cmd::Bench { what: BenchCmd::Ingest { records, batch, data_dir, change_feeds, pipelined } } => {
            init_tracing("warn");
            let tmp = tempfile::tempdir()?;
            let dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let opts = lianqin_pipeline::bench::IngestOptions { change_feeds, pipelined };
            let report = lianqin_pipeline::bench::ingest(&dir, records, batch, opts).await?;
            print!("{}", report.render());
        }
        #[cfg(not(feature = "demo"))]
        Cmd::Demo { .. } | Cmd::Bench { .. } => bail!(lianqin_pipeline::NO_DEMO),
        Cmd::Check { config } => {
            init_tracing("warn");
            let cfg = HubConfig::load(&config)?;
            let catalog = Catalog::builtin()?;
            for s in cfg.enabled_sources() {
                let m = lianqin_pipeline::mapping::Mapping::load(&s.mapping, &cfg.base_dir)?;
                lianqin_pipeline::normalize::Normalizer::new(Arc::clone(&catalog), Arc::new(m), &s.id)
                    .await
                    .with_context(|| format!("source `{}`", s.id))?;
                println!("ok  source {:<24} {:<5} mapping {}", s.id, s.connector.kind(), s.mapping);
            }
            if !cfg.flows.is_empty() {
                let policy = load_policies().await?;
                for f in &cfg.flows {
                    if policy.principal(&f.user).is_none() {
                        bail!(
                            "{}: flow `{}`: unknown user `{}` (policies/users.toml)",
                            config.display(),
                            f.name,
                            f.user
                        );
                    }
                    println!("ok  flow   {:<24} as {:<14} → {}", f.name, f.user, f.sink.display());
                }
            }
            println!("{}: config and {} mapping(s) are valid", config.display(), cfg.enabled_sources().count());
        }
        Cmd::Run { config, data_dir, role, node } => {
            init_tracing("info");
            let mut cfg = HubConfig::load(&config)?;
            if node.is_some() {
                cfg.node = node;
            }
            let (sources, worker) = match role.as_str() {
                "all" => (true, true),
                "sources" => (true, false),
                "worker" => (false, true),
                other => bail!("--role {other}: use all, sources or worker"),
            };
            let dir = data_dir_of(&cfg, data_dir);
            let server = cfg.server.as_ref().map(|s| s.resolve(&cfg.base_dir));
            let hub = Arc::new(Hub::open(cfg, &dir).await?);
            tracing::info!(data_dir = %dir.display(), bus = hub.bus().kind(), "hub started");
            let (tx, rx) = watch::channel(false);
            if let Some(scfg) = server {
                // `[server]`: also serve the libraries over the Postgres protocol.
                let policy = Arc::new(load_policies().await?);
                let pg = lianqin_pipeline::pgserver::PgServer::new(&scfg, &dir, policy)?;
                let listener = tokio::net::TcpListener::bind(scfg.listen)
                    .await
                    .with_context(|| format!("[server] listen on {}", scfg.listen))?;
                let stop = rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = pg.serve(listener, stop).await {
                        tracing::error!("Postgres wire server stopped: {e}");
                    }
                });
            }
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            hub.run_roles(rx, sources, worker).await?;
        }
        Cmd::Policy { what: PolicyCmd::Explain { user, table } } => {
            init_tracing("warn");
            let policy = load_policies().await?;
            let catalog = Catalog::builtin()?;
            let Some(who) = policy.principal(&user) else { bail!("unknown user `{user}` (see policies/users.toml)") };
            let cols = lianqin_pipeline::query::columns_of(&catalog, &table);
            println!("{}", policy.explain(&who, &table, &cols));
        }
        Cmd::Compact { data_dir } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let store = LibraryStore::open_existing(&data_dir, Arc::clone(&catalog)).await?;
            for (t, removed, added) in store.compact().await? {
                println!("{t:<28} {removed:>5} small files → {added:>3} (history kept)");
            }
        }
        Cmd::Serve { data_dir, listen, tls_cert, tls_key } => {
            init_tracing("info");
            if !data_dir.join("lake").is_dir() {
                bail!(
                    "{}: no libraries here (run `lianqin demo --once` or `lianqin run` first, or pass --data-dir)",
                    data_dir.display()
                );
            }
            let policy = Arc::new(load_policies().await?);
            let cfg = lianqin_pipeline::pgserver::PgServerConfig { listen, tls_cert, tls_key };
            let server = lianqin_pipeline::pgserver::PgServer::new(&cfg, &data_dir, policy)?;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            eprintln!("lianqin: Postgres wire server on {} (data dir {})", listener.local_addr()?, data_dir.display());
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            server.serve(listener, rx).await?;
        }
        Cmd::Export { data_dir, as_user, table, where_, sql, format, out } => {
            init_tracing("warn");
            let query = match (table, sql) {
                (Some(t), None) => {
                    if !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        bail!("--table {t}: not a table name");
                    }
                    match where_ {
                        Some(w) => format!("SELECT * FROM {t} WHERE {w}"),
                        None => format!("SELECT * FROM {t}"),
                    }
                }
                (None, Some(q)) => q,
                _ => bail!("give --table (optionally with --where) or --sql"),
            };
            let format = match format.as_str() {
                "csv" => OutputFormat::Csv,
                "jsonl" | "json" => OutputFormat::Json,
                other => bail!("--format {other}: use csv or jsonl"),
            };
            let req = lianqin_pipeline::flows::ExportRequest { sql: query, format, out: out.clone() };
            let n = lianqin_pipeline::flows::export(&data_dir, &as_user, &req).await?;
            eprintln!("exported {n} rows to {}", out.display());
        }
        Cmd::Audit { what } => {
            init_tracing("warn");
            return audit_cmd(what);
        }
        Cmd::Sql { data_dir, format, query, as_user } => {
            init_tracing("warn");
            if !data_dir.join("lake").is_dir() {
                bail!(
                    "{}: no libraries here (run `lianqin demo --once` or `lianqin run` first, or pass --data-dir)",
                    data_dir.display()
                );
            }
            let catalog = Catalog::builtin()?;
            let store = LibraryStore::open_existing(&data_dir, Arc::clone(&catalog)).await?;
            let audit =
                lianqin_pipeline::audit::Audit::open(&data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
            let mut engine = QueryEngine::new(&store, &catalog).await?;
            // `--as USER` queries with USER's permissions (policies/); without
            // it the local operator, who can read the data dir's files
            // anyway, queries unrestricted (recorded as local:<os user>).
            let (user, department) = match as_user {
                Some(u) => {
                    let policy = Arc::new(load_policies().await?);
                    // Policy files changed since the last recorded version → policy_change.
                    lianqin_pipeline::audit::note_version(
                        &audit,
                        "policy",
                        &policy.version(),
                        serde_json::Value::Null,
                    )?;
                    let session = format!("cli-{}", std::process::id());
                    let login = |outcome, dept: &str, method: &str, reason: Option<&str>| {
                        let mut ev = lianqin_audit::AuditEvent::new(lianqin_audit::EventKind::Login, &u, dept, outcome);
                        ev.session = Some(session.clone());
                        ev.client_addr = Some("local".into());
                        ev.rule_version = Some(policy.version());
                        ev.detail = serde_json::json!({"method": method, "reason": reason});
                        audit.record_durable(ev)
                    };
                    // With LIANQIN_PASSWORD the user's password is checked
                    // (argon2id); without it the OS account that can run
                    // this binary on the data dir vouches for the name.
                    let method = if std::env::var_os("LIANQIN_PASSWORD").is_some() {
                        "password"
                    } else {
                        "local operator (--as)"
                    };
                    let who = match std::env::var("LIANQIN_PASSWORD") {
                        Ok(pw) => policy.authenticate(&u, &pw).ok(),
                        Err(_) => policy.principal(&u),
                    };
                    let Some(who) = who else {
                        let reason = if policy.principal(&u).is_some() { "wrong password" } else { "unknown user" };
                        login(lianqin_audit::Outcome::Failure, "", method, Some(reason))?;
                        let mut ev = lianqin_audit::AuditEvent::new(
                            lianqin_audit::EventKind::Denial,
                            &u,
                            "",
                            lianqin_audit::Outcome::Deny,
                        );
                        ev.detail = serde_json::json!({"reason": reason});
                        audit.record_durable(ev)?;
                        if reason == "wrong password" {
                            bail!("login failed for `{u}`");
                        }
                        bail!("permission denied: unknown user `{u}` (see policies/users.toml)");
                    };
                    login(lianqin_audit::Outcome::Success, &who.department, method, None)?;
                    let dept = who.department.clone();
                    engine = engine.with_policy(policy, who);
                    (u, dept)
                }
                None => (format!("local:{}", os_user()), String::new()),
            };
            let who = lianqin_pipeline::query::Querier {
                user,
                department,
                session: Some(format!("cli-{}", std::process::id())),
                client_addr: Some("local".into()),
            };
            let engine = engine.with_audit(audit.clone(), who);
            let _sync = SyncOnDrop(audit);
            match query {
                Some(q) => {
                    let batches = engine.sql(&q).await?;
                    print!("{}", format_batches(&batches, format)?);
                    if format == OutputFormat::Table {
                        println!();
                    }
                }
                None => shell(&engine, &catalog, format, &data_dir).await?,
            }
        }
    }
    Ok(())
}

async fn shell(engine: &QueryEngine, catalog: &Catalog, format: OutputFormat, dir: &Path) -> Result<()> {
    let tty = std::io::stdin().is_terminal();
    if tty {
        println!(
            "Lianqin SQL over {} — end statements with ';'. \\d lists tables, \\d NAME describes one, \\q quits.",
            dir.display()
        );
    }
    let stdin = std::io::stdin();
    let mut buf = String::new();
    loop {
        if tty {
            print!("{}", if buf.is_empty() { "lianqin> " } else { "     ..> " });
            std::io::stdout().flush().ok();
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let t = line.trim();
        if buf.is_empty() && t.starts_with('\\') {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("\\q"), _) => break,
                (Some("\\d"), None) => {
                    for name in engine.tables() {
                        println!("{name}");
                    }
                }
                (Some("\\d"), Some(name)) => describe(catalog, engine, name).await,
                _ => println!("unknown command {t}"),
            }
            continue;
        }
        buf.push_str(&line);
        if t.ends_with(';') {
            let q = buf.trim().trim_end_matches(';').to_string();
            buf.clear();
            match engine.sql(&q).await {
                Ok(b) => println!("{}", format_batches(&b, format).unwrap_or_default()),
                Err(e) => println!("error: {e}"),
            }
        }
    }
    Ok(())
}

async fn describe(catalog: &Catalog, engine: &QueryEngine, name: &str) {
    let base = name.trim_end_matches("_history");
    if let Ok(lib) = catalog.library(base) {
        println!("{} — {} {}", name, lib.zh, lib.en);
        for c in lib.all_columns(&catalog.provenance) {
            println!(
                "  {:<18} {:<9} {:<10} {} / {}",
                c.name,
                c.ty.name(),
                format!("{:?}", c.sensitivity).to_lowercase(),
                c.zh,
                c.en
            );
        }
        return;
    }
    match engine.context().table(name).await {
        Ok(df) => {
            for f in df.schema().fields() {
                println!("  {:<18} {}", f.name(), f.data_type());
            }
        }
        Err(e) => println!("error: {e}"),
    }
}

/// Flushes the audit stream when the command ends.
struct SyncOnDrop(lianqin_pipeline::audit::Audit);
impl Drop for SyncOnDrop {
    fn drop(&mut self) {
        self.0.sync();
    }
}

async fn load_policies() -> Result<lianqin_policies::PolicyEngine> {
    Ok(match std::env::var("LIANQIN_POLICIES") {
        Ok(dir) => lianqin_policies::PolicyEngine::load(Path::new(&dir)).await?,
        Err(_) => lianqin_policies::PolicyEngine::builtin().await?,
    })
}

fn os_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into())
}

fn parse_time(s: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    match s {
        None => Ok(None),
        Some(t) => lianqin_pipeline::time::parse_time(t).map(Some).map_err(|e| anyhow::anyhow!("--from/--to: {e}")),
    }
}

fn audit_filter(a: &AuditFilterArgs) -> Result<lianqin_audit::AuditFilter> {
    use lianqin_audit::{EventKind, Outcome};
    let kind = match a.kind.as_deref() {
        None => None,
        Some(k) => Some(
            serde_json::from_value::<EventKind>(serde_json::Value::String(k.to_string()))
                .map_err(|_| anyhow::anyhow!("--kind {k}: unknown kind"))?,
        ),
    };
    let outcome = match a.decision.as_deref() {
        None => None,
        Some(k) => Some(
            serde_json::from_value::<Outcome>(serde_json::Value::String(k.to_string()))
                .map_err(|_| anyhow::anyhow!("--decision {k}: unknown outcome"))?,
        ),
    };
    Ok(lianqin_audit::AuditFilter {
        from: parse_time(&a.from)?,
        to: parse_time(&a.to)?,
        user: a.user.clone(),
        department: a.department.clone(),
        table: a.table.clone(),
        kind,
        outcome,
        text: a.text.clone(),
        ..Default::default()
    })
}

fn record_audit_read(dir: &Path, reader: &str, what: &str, filter: &AuditFilterArgs, n: u64) -> Result<()> {
    use lianqin_audit::{AuditEvent, EventKind, Outcome};
    let audit = lianqin_pipeline::audit::Audit::open(dir, "cli", "cli", std::time::Duration::from_secs(3))?;
    let mut ev = AuditEvent::new(EventKind::AuditRead, reader, "", Outcome::Success);
    ev.rows = Some(n);
    ev.tables = vec!["audit".into()];
    ev.detail = serde_json::json!({ "command": what, "filter": format!("{filter:?}") });
    audit.record_durable(ev)?;
    audit.sync();
    Ok(())
}

/// A named reader of the audit (`--as NAME`) must hold the auditor role
/// (policies: read on the `audit` table); a refusal is a `denial` entry. The
/// unnamed local operator holds the key already and is recorded as the OS user.
fn check_auditor(dir: &Path, user: &str) -> Result<()> {
    // Called from the (multi-thread) runtime of `main`.
    let policy = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(lianqin_pipeline::audit::policy_engine())
    })?;
    let allowed = match policy.principal(user) {
        Some(p) => {
            policy.decide_sync(&p, lianqin_pipeline::audit_table::TABLE, &lianqin_pipeline::audit_table::column_meta())
        }
        None => lianqin_policies::TableDecision::deny(format!("unknown user `{user}`")),
    };
    if allowed.allowed {
        return Ok(());
    }
    let audit = lianqin_pipeline::audit::Audit::open(dir, "cli", "cli", std::time::Duration::from_secs(3))?;
    let mut ev =
        lianqin_audit::AuditEvent::new(lianqin_audit::EventKind::Denial, user, "", lianqin_audit::Outcome::Deny);
    ev.tables = vec!["audit".into()];
    ev.rule = Some(allowed.reason.clone());
    ev.rule_version = Some(policy.version());
    audit.record_durable(ev)?;
    audit.sync();
    bail!("permission denied: {user} may not read the audit trail ({})", allowed.reason)
}

/// Reads the replicated audit topic of a hub config into `out/audit/`.
fn mirror_topic(config: &Path, out: &Path) -> Result<(Vec<String>, u64)> {
    // Only `[bus]` matters here (a reader need not hold the sources' secrets).
    let text = std::fs::read_to_string(config).with_context(|| format!("{}: cannot read", config.display()))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| config.display().to_string())?;
    let bus: lianqin_pipeline::config::BusConfig = match doc.get("bus") {
        Some(b) => b.clone().try_into().with_context(|| format!("{}: [bus]", config.display()))?,
        None => bail!("{}: no [bus] section", config.display()),
    };
    #[cfg(feature = "kafka")]
    {
        let Some(k) = bus.kafka.clone() else { bail!("{}: no [bus.kafka] section", config.display()) };
        let topic = lianqin_pipeline::audit_ship::topic(&bus.topic_prefix);
        Ok(lianqin_pipeline::audit_ship::mirror_from_kafka(&k, &topic, out)?)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (bus, out);
        bail!("this build has no Kafka support (feature `kafka`)")
    }
}

fn audit_cmd(what: AuditCmd) -> Result<()> {
    use lianqin_pipeline::audit::{master_key, streams};
    match what {
        AuditCmd::Mirror { config, out } => {
            let (streams, n) = mirror_topic(&config, &out)?;
            println!("{n} messages, streams {streams:?} → {}", out.join("audit").display());
        }
        AuditCmd::Verify { data_dir, from_kafka } => {
            let key = master_key(&data_dir, false)?;
            let tmp = tempfile::tempdir()?;
            let data_dir = match from_kafka {
                Some(cfg) => {
                    let (streams, n) = mirror_topic(&cfg, tmp.path())?;
                    println!("read {n} messages of {} stream(s) back from the audit topic", streams.len());
                    tmp.path().to_path_buf()
                }
                None => data_dir,
            };
            let all = streams(&data_dir);
            if all.is_empty() {
                bail!("{}: no audit streams under audit/", data_dir.display());
            }
            let mut bad = 0;
            for dir in all {
                let r = lianqin_audit::verify(&dir, &key)?;
                let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
                if r.is_ok() {
                    println!(
                        "ok   {name:<12} {} entries ({} tags checked), {} segments, {} signed checkpoints, head {}",
                        r.entries,
                        r.decrypted,
                        r.segments,
                        r.checkpoints,
                        &r.head[..r.head.len().min(16)]
                    );
                    if let Some(t) = &r.torn_tail {
                        println!("     note: torn final frame after a crash: {t:?}");
                    }
                } else {
                    bad += 1;
                    println!("FAIL {name:<12} {} problem(s)", r.problems.len());
                    if let Some(p) = &r.first_problem {
                        println!("     first: {p}");
                    }
                }
            }
            if bad > 0 {
                std::process::exit(1);
            }
        }
        AuditCmd::Search { data_dir, filter, as_user } => {
            let key = master_key(&data_dir, false)?;
            if let Some(u) = &as_user {
                check_auditor(&data_dir, u)?;
            }
            let f = audit_filter(&filter)?;
            let mut n = 0u64;
            for dir in streams(&data_dir) {
                for rec in lianqin_audit::read(&dir, &key, f.clone())? {
                    let rec = rec?;
                    n += 1;
                    let e = &rec.event;
                    println!(
                        "{} #{:<6} {} {:<13} {:<8} user={} dept={} tables={:?}{}{}",
                        e.time.with_timezone(&lianqin_pipeline::time::beijing()).format("%Y-%m-%d %H:%M:%S"),
                        rec.seq,
                        dir.file_name().unwrap_or_default().to_string_lossy(),
                        e.kind.as_str(),
                        e.outcome.as_str(),
                        e.user,
                        e.department,
                        e.tables,
                        e.sql.as_ref().map(|s| format!(" sql={s:?}")).unwrap_or_default(),
                        if e.detail.is_null() { String::new() } else { format!(" {}", e.detail) }
                    );
                }
            }
            record_audit_read(&data_dir, &as_user.unwrap_or_else(os_user), "search", &filter, n)?;
        }
        AuditCmd::Export { data_dir, filter, format, as_user } => {
            let key = master_key(&data_dir, false)?;
            if let Some(u) = &as_user {
                check_auditor(&data_dir, u)?;
            }
            let f = audit_filter(&filter)?;
            let fmt = match format.as_str() {
                "csv" => lianqin_audit::ExportFormat::Csv,
                "jsonl" | "json" => lianqin_audit::ExportFormat::JsonLines,
                other => bail!("--format {other}: use csv or jsonl"),
            };
            let mut n = 0;
            let stdout = std::io::stdout();
            for dir in streams(&data_dir) {
                n += lianqin_audit::export(&dir, &key, f.clone(), fmt, stdout.lock())?;
            }
            record_audit_read(&data_dir, &as_user.unwrap_or_else(os_user), "export", &filter, n)?;
        }
        AuditCmd::Prove { data_dir, stream, from_seq, to_seq, as_user } => {
            let key = master_key(&data_dir, false)?;
            let reader = as_user.unwrap_or_else(os_user);
            check_auditor(&data_dir, &reader)?;
            let dir = data_dir.join("audit").join(&stream);
            let proof = lianqin_audit::export_with_proof(&dir, &key, from_seq, to_seq)
                .with_context(|| format!("audit stream {stream}"))?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
            eprintln!(
                "public key of stream {stream} (give it to the inspector out of band): {}",
                hex::encode(&proof.public_key)
            );
            let none = AuditFilterArgs::default();
            record_audit_read(
                &data_dir,
                &reader,
                &format!("prove {stream} {from_seq}..={to_seq}"),
                &none,
                to_seq + 1 - from_seq,
            )?;
        }
        AuditCmd::CheckProof { proof, public_key } => {
            let text = std::fs::read_to_string(&proof).with_context(|| format!("{}: cannot read", proof.display()))?;
            let p: lianqin_audit::ExportProof =
                serde_json::from_str(&text).with_context(|| proof.display().to_string())?;
            let pk = hex::decode(public_key.trim()).context("--public-key: not hex")?;
            match lianqin_audit::verify_export(&p, &pk) {
                Ok(recs) => {
                    for r in &recs {
                        println!("{}", serde_json::to_string(r)?);
                    }
                    eprintln!(
                        "ok: {} entries ({}..={}) proven by signed checkpoint #{} at seq {}",
                        recs.len(),
                        p.from_seq,
                        p.to_seq,
                        p.checkpoint.index,
                        p.checkpoint.seq
                    );
                }
                Err(e) => {
                    eprintln!("FAIL: {e}");
                    std::process::exit(1);
                }
            }
        }
        AuditCmd::Tail { data_dir, follow, stream } => {
            let key = master_key(&data_dir, false)?;
            let none = AuditFilterArgs::default();
            record_audit_read(&data_dir, &os_user(), &format!("tail {stream}"), &none, 0)?;
            let dir = data_dir.join("audit").join(&stream);
            let mut tail = lianqin_audit::Tail::open(&dir, &key, 0)?;
            loop {
                let recs = tail.poll(1000)?;
                for rec in &recs {
                    println!("{}", serde_json::to_string(&rec.event).unwrap_or_default());
                }
                if recs.is_empty() {
                    if !follow {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
    }
    Ok(())
}
