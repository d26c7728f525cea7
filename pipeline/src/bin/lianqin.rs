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
        /// The query.
        query: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
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
        Cmd::Bench { what: BenchCmd::Ingest { records, batch, data_dir } } => {
            init_tracing("warn");
            let tmp = tempfile::tempdir()?;
            let dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let report = lianqin_pipeline::bench::ingest(&dir, records, batch).await?;
            print!("{}", report.render());
        }
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
            println!("{}: config and {} mapping(s) are valid", config.display(), cfg.enabled_sources().count());
        }
        Cmd::Run { config, data_dir } => {
            init_tracing("info");
            let cfg = HubConfig::load(&config)?;
            let dir = data_dir_of(&cfg, data_dir);
            let hub = Arc::new(Hub::open(cfg, &dir).await?);
            tracing::info!(data_dir = %dir.display(), bus = hub.bus().kind(), "hub started");
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            hub.run(rx).await?;
        }
        Cmd::Sql { data_dir, format, query } => {
            init_tracing("warn");
            if !data_dir.join("lake").is_dir() {
                bail!("{}: no libraries here (run `lianqin demo --once` or `lianqin run` first, or pass --data-dir)", data_dir.display());
            }
            let catalog = Catalog::builtin()?;
            let store = LibraryStore::open_existing(&data_dir, Arc::clone(&catalog)).await?;
            let engine = QueryEngine::new(&store, &catalog).await?;
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
        println!("Lianqin SQL over {} — end statements with ';'. \\d lists tables, \\d NAME describes one, \\q quits.", dir.display());
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
            println!("  {:<18} {:<9} {:<10} {} / {}", c.name, c.ty.name(), format!("{:?}", c.sensitivity).to_lowercase(), c.zh, c.en);
        }
        return;
    }
    match engine.sql(&format!("SELECT * FROM {name} LIMIT 0")).await {
        Ok(b) => {
            if let Some(b) = b.first() {
                for f in b.schema().fields() {
                    println!("  {:<18} {}", f.name(), f.data_type());
                }
            } else {
                println!("{name}: no columns");
            }
        }
        Err(e) => println!("error: {e}"),
    }
}
