//! `lianqin audit …`: the security officers' tools over the encrypted audit
//! trail — verify, mirror from the replicated topic, search, export, prove,
//! check a proof, tail. Reading the trail is itself audited (`audit_read`);
//! a named reader (`--as`) logs in and must hold the auditor role
//! ([`super::session::auditor_login`]: password as for `sql --as`, then the auditor role).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lianqin_audit::{EventKind, Outcome};

use super::ExportFormat;
use super::session::{Credential, auditor_login, os_user};

/// `--kind` of the audit filters (the event kinds, snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KindArg {
    /// A login or failed login.
    Login,
    /// A SQL query.
    Query,
    /// An access denied by policy.
    Denial,
    /// An outbound flow delivery.
    Flow,
    /// An export.
    Export,
    /// A policy change.
    PolicyChange,
    /// A config change.
    ConfigChange,
    /// A connector run.
    ConnectorRun,
    /// A quarantined record.
    Quarantine,
    /// A read of the audit trail.
    AuditRead,
    /// Anything else.
    Other,
}

impl KindArg {
    /// The audit crate's kind.
    pub fn kind(self) -> EventKind {
        match self {
            KindArg::Login => EventKind::Login,
            KindArg::Query => EventKind::Query,
            KindArg::Denial => EventKind::Denial,
            KindArg::Flow => EventKind::Flow,
            KindArg::Export => EventKind::Export,
            KindArg::PolicyChange => EventKind::PolicyChange,
            KindArg::ConfigChange => EventKind::ConfigChange,
            KindArg::ConnectorRun => EventKind::ConnectorRun,
            KindArg::Quarantine => EventKind::Quarantine,
            KindArg::AuditRead => EventKind::AuditRead,
            KindArg::Other => EventKind::Other,
        }
    }
}

/// `--decision` of the audit filters (the outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecisionArg {
    /// Allowed by policy.
    Allow,
    /// Denied by policy.
    Deny,
    /// Succeeded.
    Success,
    /// Failed.
    Failure,
}

impl DecisionArg {
    /// The audit crate's outcome.
    pub fn outcome(self) -> Outcome {
        match self {
            DecisionArg::Allow => Outcome::Allow,
            DecisionArg::Deny => Outcome::Deny,
            DecisionArg::Success => Outcome::Success,
            DecisionArg::Failure => Outcome::Failure,
        }
    }
}

/// Filters shared by `audit search` and `audit export`.
#[derive(clap::Args, Debug, Default)]
pub struct AuditFilterArgs {
    /// Entries at or after this time (RFC 3339 or `YYYY-MM-DD HH:MM:SS`, Beijing time).
    #[arg(long)]
    pub from: Option<String>,
    /// Entries before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this department.
    #[arg(long)]
    pub department: Option<String>,
    /// Only entries touching this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Only this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only this outcome.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// Entries whose text contains this.
    #[arg(long)]
    pub text: Option<String>,
}

/// `lianqin audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Check chain, tags and signatures of every audit stream; exit 0 only when all holds.
    Verify {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Verify the copy on the replicated audit topic (`<prefix>audit`)
        /// instead: read it back with the Kafka settings of this hub config.
        #[arg(long = "from-kafka", value_name = "HUB_CONFIG")]
        from_kafka: Option<PathBuf>,
        /// Also check against an anchor written earlier by `lianqin audit
        /// anchor` (kept outside the data dir): a rolled-back or cut stream fails.
        #[arg(long, value_name = "ANCHOR_JSON")]
        anchor: Option<PathBuf>,
    },
    /// Write the latest signed checkpoints of every stream and the stream
    /// registry's head to a file outside the data dir (an anchor for
    /// `lianqin audit verify --anchor`).
    Anchor {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Where to write the anchor (a path the security officer controls).
        #[arg(long)]
        out: PathBuf,
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
        #[allow(missing_docs)]
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
        #[allow(missing_docs)]
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
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

fn parse_time(s: &Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    match s {
        None => Ok(None),
        Some(t) => crate::time::parse_time(t).map(Some).map_err(|e| anyhow::anyhow!("--from/--to: {e}")),
    }
}

/// The audit crate's filter of the command-line options.
pub fn audit_filter(a: &AuditFilterArgs) -> Result<lianqin_audit::AuditFilter> {
    let kind = a.kind.map(KindArg::kind);
    let outcome = a.decision.map(DecisionArg::outcome);
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

/// Records that `reader` read the audit trail (`audit_read`, `n` entries).
pub fn record_audit_read(dir: &Path, reader: &str, what: &str, filter: &AuditFilterArgs, n: u64) -> Result<()> {
    use lianqin_audit::AuditEvent;
    let audit = crate::audit::Audit::open(dir, "cli", "cli", std::time::Duration::from_secs(3))?;
    let mut ev = AuditEvent::new(EventKind::AuditRead, reader, "", Outcome::Success);
    ev.rows = Some(n);
    ev.tables = vec!["audit".into()];
    ev.detail = serde_json::json!({ "command": what, "filter": format!("{filter:?}") });
    audit.record_durable(ev)?;
    audit.sync();
    Ok(())
}

/// Reads the replicated audit topic of a hub config into `out/audit/`.
fn mirror_topic(config: &Path, out: &Path) -> Result<(Vec<String>, u64)> {
    // Only `[bus]` matters here (a reader need not hold the sources' secrets).
    let text = std::fs::read_to_string(config).with_context(|| format!("{}: cannot read", config.display()))?;
    let doc: toml::Table = toml::from_str(&text).with_context(|| config.display().to_string())?;
    let bus: crate::config::BusConfig = match doc.get("bus") {
        Some(b) => b.clone().try_into().with_context(|| format!("{}: [bus]", config.display()))?,
        None => bail!("{}: no [bus] section", config.display()),
    };
    #[cfg(feature = "kafka")]
    {
        let Some(k) = bus.kafka.clone() else { bail!("{}: no [bus.kafka] section", config.display()) };
        let topic = crate::audit_ship::topic(&bus.topic_prefix);
        Ok(crate::audit_ship::mirror_from_kafka(&k, &topic, out)?)
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (bus, out);
        bail!("this build has no Kafka support (feature `kafka`)")
    }
}

async fn load_configured() -> Result<lianqin_policies::PolicyEngine> {
    lianqin_policies::load_configured().await.context("policies")
}

/// Runs one `lianqin audit` command.
pub async fn run(what: AuditCmd) -> Result<()> {
    use crate::audit::{master_key, streams};
    match what {
        AuditCmd::Mirror { config, out } => {
            let (streams, n) = mirror_topic(&config, &out)?;
            println!("{n} messages, streams {streams:?} → {}", out.join("audit").display());
        }
        AuditCmd::Verify { data_dir, from_kafka, anchor } => {
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
            let root = data_dir.join("audit");
            if streams(&data_dir).is_empty() && !root.join("streams.registry").exists() {
                bail!("{}: no audit streams under audit/", data_dir.display());
            }
            let report = match &anchor {
                Some(path) => {
                    let a = lianqin_audit::Anchor::read(path).with_context(|| format!("anchor {}", path.display()))?;
                    lianqin_audit::verify_with_anchor(&root, &key, &a)?
                }
                None => lianqin_audit::verify_root(&root, &key)?,
            };
            for s in &report.streams {
                let (name, r) = (&s.stream, &s.report);
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
                    println!("FAIL {name:<12} {} problem(s)", r.problems.len());
                    if let Some(p) = &r.first_problem {
                        println!("     first: {p}");
                    }
                }
            }
            for p in &report.problems {
                println!("FAIL {p}");
            }
            for w in &report.warnings {
                println!("note: {w}");
            }
            if !report.is_ok() {
                std::process::exit(1);
            }
        }
        AuditCmd::Anchor { data_dir, out } => {
            let key = master_key(&data_dir, false)?;
            lianqin_audit::anchor(data_dir.join("audit"), &key, &out)?;
            println!("anchor written to {}", out.display());
        }
        AuditCmd::Search { data_dir, filter, as_user } => {
            let key = master_key(&data_dir, false)?;
            if let Some(u) = &as_user {
                auditor_login(&data_dir, &load_configured().await?, u, &Credential::from_env(u))?;
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
                        e.time.with_timezone(&crate::time::beijing()).format("%Y-%m-%d %H:%M:%S"),
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
                auditor_login(&data_dir, &load_configured().await?, u, &Credential::from_env(u))?;
            }
            let f = audit_filter(&filter)?;
            let fmt = format.audit();
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
            auditor_login(&data_dir, &load_configured().await?, &reader, &Credential::from_env(&reader))?;
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
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn filter_values_are_the_audit_names() {
        for k in KindArg::value_variants() {
            assert_eq!(k.to_possible_value().unwrap().get_name(), k.kind().as_str());
        }
        for d in DecisionArg::value_variants() {
            assert_eq!(d.to_possible_value().unwrap().get_name(), d.outcome().as_str());
        }
        let args = AuditFilterArgs { kind: Some(KindArg::PolicyChange), ..Default::default() };
        assert_eq!(audit_filter(&args).unwrap().kind, Some(EventKind::PolicyChange));
        let args = AuditFilterArgs { from: Some("yesterday-ish".into()), ..Default::default() };
        assert!(audit_filter(&args).is_err());
    }
}
