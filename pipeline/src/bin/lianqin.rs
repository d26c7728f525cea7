//! `lianqin` — the hub's command line: the command tree, and one call into
//! the library per command ([`lianqin_pipeline::cli`] holds the logic).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lianqin_pipeline::cli::audit::AuditCmd;
use lianqin_pipeline::cli::session::{self, Credential};
use lianqin_pipeline::cli::{ExportFormat, Role};
use lianqin_pipeline::config::{HubConfig, PgServerConfig};
use lianqin_pipeline::hub::Hub;
use lianqin_pipeline::library::LibraryStore;
use lianqin_pipeline::query::{OutputFormat, QueryEngine, format_batches};
use lianqin_pipeline::schema::Catalog;
use lianqin_pipeline::server::PgServer;
use lianqin_policies::{PolicySource, load_configured};
use tokio::sync::watch;

/// mimalloc: the hot path allocates and frees many small buffers (JSON
/// values, strings, Arrow builders) across threads; glibc malloc spent about
/// a fifth of the ingest profile in its own bookkeeping (BENCHMARKS.md).
/// Built with `no_thp` (workspace `Cargo.toml`): mimalloc does not ask for
/// transparent huge pages. The hub frees and reallocates buffers of several
/// MiB per batch (Parquet files, sealed columns, bus values), and the kernel
/// zeroing each fresh 2 MiB page took 38–45 % of the ingest profile
/// (BENCHMARKS.md, "Transparent huge pages").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// What this process runs.
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        /// Node name (overrides `node` in the config); names this process's
        /// connector checkpoints and audit stream.
        #[arg(long)]
        node: Option<String>,
        /// Let `[server]` log in the built-in demo users (without
        /// LIANQIN_POLICIES; only on a loopback address) and `[[flows]]`
        /// run as them.
        #[arg(long)]
        demo_users: bool,
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
        /// Query as this user, with their password (LIANQIN_PASSWORD or a
        /// prompt) unless you are the OS account of that name or one of its
        /// trusted local_operators; recorded in the audit trail.
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
    /// Each source's feed: state (FAILING when its last pass failed, with
    /// the error), records in all and today, open quarantine by reason, lag
    /// fetched → committed, when it last brought records. Works while
    /// `lianqin run` is running; reading the run results is audited.
    Status {
        /// The hub config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Folder holding all state (overrides `data_dir` in the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print JSON (one object per source) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Replay a source's quarantined records through its current mapping,
    /// after fixing the mapping or a code table: each open record lands or
    /// is quarantined again with the new reason, exactly once (a run cut
    /// short is finished by running the command again); audited.
    Replay {
        /// The hub config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Folder holding all state (overrides `data_dir` in the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The source whose quarantined records to replay.
        #[arg(long)]
        source: String,
        /// Only records whose quarantine reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Only records quarantined since this time (RFC 3339, or a date in
        /// China time: 2026-12-05).
        #[arg(long)]
        since: Option<String>,
        /// Only publish the records on the bus and leave deciding them to
        /// the running workers (Kafka).
        #[arg(long)]
        publish_only: bool,
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
        /// Log in the built-in demo users (passwords `<user>-demo`) when
        /// LIANQIN_POLICIES is not set; only on a loopback address.
        #[arg(long)]
        demo_users: bool,
        /// Also serve the web console on this address (libraries, SQL, map,
        /// audit; with --config also the Sources pages).
        #[arg(long, value_name = "ADDR")]
        console: Option<std::net::SocketAddr>,
        /// Hub config whose sources the console's Sources pages show.
        #[arg(long, requires = "console")]
        config: Option<PathBuf>,
    },
    /// Export a table or query with USER's permissions to a file (audited).
    Export {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Export as this user (policies/users.toml): their rows and masks
        /// only; their password from LIANQIN_PASSWORD or a prompt (see `sql --as`).
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
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Destination file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Joint matters: reports of one incident from several departments
    /// (the `matter_group` table).
    Matter {
        #[command(subcommand)]
        what: MatterCmd,
    },
    /// Persons: person elements of several departments resolved into one
    /// person (the `element_link` and `element_review` tables).
    Element {
        #[command(subcommand)]
        what: ElementCmd,
    },
    /// The half-yearly second callback (§8.1.3–8.1.4): draw at least 30% of
    /// each station's callback records, record the results, reopen
    /// dissatisfied cases for another handler (the `matter_recheck` table).
    Recheck {
        #[command(subcommand)]
        what: RecheckCmd,
    },
    /// Station reports (§8.2): an XLSX workbook and a PDF in Chinese from the
    /// KPI views, with USER's permissions; audited as an export.
    Report {
        #[command(subcommand)]
        what: ReportCmd,
    },
    /// Outbound flows (`[[flows]]`): deliver the outboxes now, make the
    /// signed daily reconciliation receipt of a flow, verify a receipt.
    Flow {
        #[command(subcommand)]
        what: FlowCmd,
    },
    /// Sharing requests → approval → grants with expiry (申请-审批-授权):
    /// ask another department for its rows; its approver decides; an
    /// approved grant is enforced until it ends or is revoked. Audited.
    Share {
        #[command(subcommand)]
        what: ShareCmd,
    },
    /// Record confirmation (效力互认, §6.4.3): departments sign the version
    /// of a matter they confirm; anyone can verify the signatures.
    Confirm {
        #[command(subcommand)]
        what: ConfirmCmd,
    },
    /// Person tokens (`pt:…` ids of persons and vehicles).
    Token {
        #[command(subcommand)]
        what: TokenCmd,
    },
    /// Security officers' tools over the encrypted audit trail.
    Audit {
        #[command(subcommand)]
        what: AuditCmd,
    },
    /// Data keys sealing sensitive columns at rest (per department).
    Keys {
        #[command(subcommand)]
        what: KeysCmd,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// List the data keys (ids, versions, which seal new values; never key bytes).
    List {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
    },
    /// Start a new data key version for a department: new values use it,
    /// older values keep opening with theirs; nothing is rewritten. Audited.
    Rotate {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Department code (code table `department`), or `_hub` / `_bus`.
        #[arg(long)]
        department: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Print which rules apply to USER on TABLE and why (policies from
    /// `$LIANQIN_POLICIES` or the built-in `policies/` files, plus the
    /// sharing grants in force in the data dir).
    Explain {
        /// Folder holding all state (its sharing grants are shown too).
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// User name (policies/users.toml).
        #[arg(long)]
        user: String,
        /// Table (e.g. element_history, matter_history, raw_police_110).
        #[arg(long)]
        table: String,
    },
    /// Seal a policy folder after editing it: check that its files load,
    /// then write `policy.manifest` (each file's SHA-256 and the version).
    /// Only a sealed folder is loaded (`lianqin serve` applies the edit then).
    Seal {
        /// The policy folder (model.conf, policy.csv, users.toml).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum MatterCmd {
    /// The joint matter of a report (or a group id): every report in time
    /// order and the rule that joined it, as USER's policy shows them.
    Explain {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// As this user (password as for `sql --as`); without it the local
        /// operator, unrestricted, recorded as local:<os user>.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// A matter id (`<source>:<key>`) or a joint matter id (`mg:…`).
        id: String,
    },
    /// Operator decision: reports A and B are one incident (kept, audited).
    Confirm {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The officer who decided.
        #[arg(long)]
        by: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
        /// A matter id.
        a: String,
        /// Another matter id.
        b: String,
    },
    /// Operator decision: report ID is not the incident of the other reports
    /// of its joint matter; it never re-joins them (kept, audited).
    Split {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The officer who decided.
        #[arg(long)]
        by: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
        /// The matter id to split off.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ElementCmd {
    /// The person (or enterprise) of an element or a resolved id: every element, its
    /// department and the rule that joined it, as USER's policy shows them;
    /// without --as (the local operator) also each linked pair's
    /// comparisons and weights.
    Explain {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// What is resolved: persons (`element_link`) or enterprises
        /// (`element_unit_link`, decisions kept apart).
        #[arg(long, value_enum, default_value = "person")]
        kind: EntityKind,
        /// As this user (password as for `sql --as`); without it the local
        /// operator, unrestricted, recorded as local:<os user>.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// An element id (`pt:…`) or a person id (`person:…`).
        id: String,
    },
    /// The review queue: uncertain pairs still apart, strongest first.
    Review {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// What is resolved: persons (`element_link`) or enterprises
        /// (`element_unit_link`, decisions kept apart).
        #[arg(long, value_enum, default_value = "person")]
        kind: EntityKind,
        /// As this user (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// At most this many pairs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Operator decision: elements A and B are one person (or enterprise;
    /// kept, audited).
    Merge {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// What is resolved: persons (`element_link`) or enterprises
        /// (`element_unit_link`, decisions kept apart).
        #[arg(long, value_enum, default_value = "person")]
        kind: EntityKind,
        /// The officer who decided.
        #[arg(long)]
        by: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
        /// An element id.
        a: String,
        /// Another element id.
        b: String,
    },
    /// Operator decision: element ID is not the person of the other
    /// elements of its cluster; it never re-joins them (kept, audited).
    Split {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// What is resolved: persons (`element_link`) or enterprises
        /// (`element_unit_link`, decisions kept apart).
        #[arg(long, value_enum, default_value = "person")]
        kind: EntityKind,
        /// The officer who decided.
        #[arg(long)]
        by: String,
        /// Why (kept with the decision).
        #[arg(long)]
        reason: String,
        /// The element id to split off.
        id: String,
    },
}

/// `--kind` of `lianqin element`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EntityKind {
    /// Persons: `element_link`, `element_review`.
    Person,
    /// Enterprises: `element_unit_link`, `element_unit_review`.
    Unit,
}

impl EntityKind {
    fn entity(self) -> &'static lianqin_pipeline::persons::Entity {
        match self {
            EntityKind::Person => &lianqin_pipeline::persons::PERSONS,
            EntityKind::Unit => &lianqin_pipeline::persons::UNITS,
        }
    }
}

#[derive(Subcommand, Debug)]
enum RecheckCmd {
    /// Draw the second callbacks of a half year: per station ⌈30%⌉ of its
    /// callback records (100% once it has 3 reopened cases), in a seeded
    /// order; a later draw of the same half only adds (new records, 100%).
    Draw {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Half year, Beijing time: 2026H1 or 2026H2.
        #[arg(long)]
        half: String,
        /// Seed of the order (recorded; random when omitted).
        #[arg(long)]
        seed: Option<u64>,
        /// The officer who draws.
        #[arg(long)]
        by: String,
    },
    /// Record the result of a drawn matter's second callback (once; never
    /// changed). `dissatisfied` reopens the case for --handler, who must not
    /// be the original handler.
    Result {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The citizen's answer: satisfied, basically_satisfied, dissatisfied (or 满意, 基本满意, 不满意).
        #[arg(long)]
        answer: String,
        /// The new handler of a reopened case (a name; kept only as a keyed token).
        #[arg(long)]
        handler: Option<String>,
        /// What the citizen said (kept).
        #[arg(long, default_value = "")]
        note: String,
        /// The officer who called back.
        #[arg(long)]
        by: String,
        /// The matter id.
        matter_id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ReportCmd {
    /// A station's month: `<out>/月报-<station>-<month>.xlsx` and `.pdf`.
    Monthly {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// As this user (password as for `sql --as`); without it the local
        /// operator, unrestricted, recorded as local:<os user>.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// The station (as in `matter.station`).
        #[arg(long)]
        station: String,
        /// The month, YYYY-MM (Beijing time, by receipt).
        #[arg(long)]
        month: String,
        /// Folder for the two files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// A half year for the office: every station you may see (or --station).
    HalfYear {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// As this user (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: Option<String>,
        /// The half year, e.g. 2026H2.
        #[arg(long)]
        half: String,
        /// Only this station.
        #[arg(long)]
        station: Option<String>,
        /// Folder for the two files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// The identifier behind a person token, as USER's policy shows it
    /// (masked unless the policy shows the value; audited as a query).
    Resolve {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Resolve as this user (password as for `sql --as`); without it
        /// the local operator, unrestricted, recorded as local:<os user>.
        #[arg(long = "as")]
        as_user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// The token (`pt:` and 64 hex digits, as in element_id).
        token: String,
    },
}

#[derive(Subcommand, Debug)]
enum FlowCmd {
    /// Deliver the outbox of every flow with `[flows.push]` (or of --flow)
    /// until it holds nothing new (`lianqin run` does this continuously).
    Push {
        /// Hub config file.
        #[arg(long, default_value = "lianqin.toml")]
        config: PathBuf,
        /// Folder holding all state (default: the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
    },
    /// The signed reconciliation receipt of a flow for one China day: what
    /// the hub holds for the flow's account vs what was sent/acknowledged.
    Receipt {
        /// Hub config file.
        #[arg(long, default_value = "lianqin.toml")]
        config: PathBuf,
        /// Folder holding all state (default: the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The flow.
        #[arg(long)]
        flow: String,
        /// The day, YYYY-MM-DD (China time, UTC+8).
        #[arg(long)]
        day: String,
        /// Write the receipt here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a receipt's signature (and, with --key, that the hub's
    /// published receipt key made it); exits non-zero when it fails.
    Verify {
        /// The hub's receipt public key (hex, from `<data dir>/keys/receipt.pub`).
        #[arg(long)]
        key: Option<String>,
        /// The receipt file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ShareCmd {
    /// Ask `--from` department for rows of a shared library.
    Request {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The requesting user (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: String,
        /// element, matter or matter_event (a trailing * adds history/current).
        #[arg(long)]
        table: String,
        /// The department whose rows are asked for.
        #[arg(long)]
        from: String,
        /// Extra row condition in the policy's syntax, e.g. `category=a`.
        #[arg(long)]
        rows: Option<String>,
        /// Only these columns (comma-separated, e.g. `matter_id,stage,category`);
        /// the others read as NULL on the granted rows. Default: every column
        /// as your standing column rules show it.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// What the rows are for.
        #[arg(long)]
        purpose: String,
        /// Until when (RFC 3339, or a date: to its end, China time).
        #[arg(long)]
        until: String,
    },
    /// Approve a pending request (a sharing_approver of the asked department).
    Approve {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The approver (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: String,
        /// The request id (`sr-…`).
        id: String,
    },
    /// Reject a pending request, with a reason.
    Reject {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The approver (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The request id.
        id: String,
    },
    /// End a grant now (its approver or its requester), with a reason.
    Revoke {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Who revokes (password as for `sql --as`).
        #[arg(long = "as")]
        as_user: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// The request id.
        id: String,
    },
    /// Every request with its status (pending, granted, rejected, revoked, expired).
    List {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// One JSON object per request.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfirmCmd {
    /// Make a department's signing key: the private key to --out (0600,
    /// kept by the department) and its public key registered in the data dir.
    Keygen {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The department (code table `department`).
        #[arg(long)]
        department: String,
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Confirm the current version of a matter as USER of their department,
    /// signed with the department's key; audited.
    Record {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// The confirming user (password as for `sql --as`); the matter must
        /// be visible to them.
        #[arg(long = "as")]
        as_user: String,
        /// The department's signing key (from `confirm keygen`).
        #[arg(long)]
        key: PathBuf,
        /// A remark kept with the confirmation.
        #[arg(long)]
        note: Option<String>,
        /// The matter id.
        matter_id: String,
    },
    /// Check every confirmation's signature against the departments'
    /// registered keys; exits non-zero naming each one that fails. With
    /// --matter: also that the matter's current version is confirmed.
    Verify {
        /// Folder holding all state.
        #[arg(long, default_value = "lianqin-data")]
        data_dir: PathBuf,
        /// Only this matter: its current version must have a confirmation
        /// that verifies (one of an older version does not count).
        #[arg(long)]
        matter: Option<String>,
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
    /// One work-order file through the real path, as `lianqin run` reads a
    /// drop folder (file connector → durable bus → mapping
    /// `hotline_12345_orders` → Delta libraries).
    File {
        /// JSON-lines file of 12345 work orders (`../shared/bench/gen_tickets.py`).
        #[arg(long)]
        input: PathBuf,
        /// Records per micro-batch.
        #[arg(long, default_value_t = 50_000)]
        batch: usize,
        /// Records the connector reads and publishes at a time.
        #[arg(long, default_value_t = 20_000)]
        chunk: usize,
        /// Then ingest the same records again from a second copy of the
        /// file, through a reopened hub (all repeats), and report that pass.
        #[arg(long)]
        again: bool,
        /// Folder for the run (default: a temporary folder, removed after).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the report as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// The side-by-side ingest benchmark: the DuckDB peer (`peer.sh`) and
    /// `bench file` alternately on the same generated file; prints the
    /// medians and the ratio hub ÷ DuckDB.
    SideBySide {
        /// Work orders to generate.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The peer's folder (with peer.sh).
        #[arg(long, env = "LIANQIN_BENCH_PEER", default_value = "../shared/bench")]
        peer_dir: PathBuf,
        /// Where the generated file and the peer's output go.
        #[arg(long, default_value = "bench-data")]
        out: PathBuf,
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
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes; never a backtrace (see `cli::report`).
            eprintln!("{}", lianqin_pipeline::cli::report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        #[cfg(feature = "demo")]
        Cmd::Demo { once, data_dir, scale } => {
            init_tracing("warn");
            let cfg = lianqin_sim::SimConfig::scaled(scale);
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
        #[cfg(feature = "demo")]
        Cmd::Bench { what: BenchCmd::File { input, batch, chunk, again, data_dir, json } } => {
            init_tracing("warn");
            let tmp = tempfile::tempdir()?;
            let dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let report = lianqin_pipeline::bench::file(&dir, &input, batch, chunk, again).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render());
            }
        }
        #[cfg(feature = "demo")]
        Cmd::Bench { what: BenchCmd::SideBySide { records, runs, peer_dir, out } } => {
            init_tracing("warn");
            let exe = std::env::current_exe()?;
            let report = tokio::task::spawn_blocking(move || {
                lianqin_pipeline::bench::side_by_side(&exe, &peer_dir, records, runs, &out)
            })
            .await??;
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
                let policy = load_configured().await.context("policies")?;
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
        Cmd::Run { config, data_dir, role, node, demo_users } => {
            init_tracing("info");
            let mut cfg = HubConfig::load(&config)?;
            if node.is_some() {
                cfg.node = node;
            }
            let (sources, worker) = role.runs();
            let dir = data_dir_of(&cfg, data_dir);
            let server = cfg.server.as_ref().map(|s| s.resolve(&cfg.base_dir));
            if let Some(scfg) = &server {
                lianqin_pipeline::cli::check_demo_users(&PolicySource::from_env(), scfg.listen, demo_users)
                    .with_context(|| format!("{}: [server]", config.display()))?;
            }
            lianqin_pipeline::cli::check_demo_flows(&PolicySource::from_env(), cfg.flows.len(), demo_users)
                .with_context(|| format!("{}: [[flows]]", config.display()))?;
            let metrics_listen = cfg.metrics.as_ref().map(|m| m.listen);
            let console = cfg.console.clone();
            if let Some(c) = &console {
                lianqin_pipeline::cli::check_demo_users(&PolicySource::from_env(), c.listen, demo_users)
                    .with_context(|| format!("{}: [console]", config.display()))?;
            }
            let console_sources: Vec<lianqin_pipeline::status::SourceRef> = cfg
                .sources
                .iter()
                .map(|s| lianqin_pipeline::status::SourceRef { id: s.id.clone(), department: s.department.clone() })
                .collect();
            let hub = Arc::new(Hub::open(cfg, &dir).await?);
            tracing::info!(data_dir = %dir.display(), bus = hub.bus().kind(), "hub started");
            let (tx, rx) = watch::channel(false);
            if let Some(listen) = metrics_listen {
                // `[metrics]`: Prometheus scrapes GET /metrics.
                let listener = lianqin_pipeline::metrics::bind(listen).await?;
                tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
                let (m, h, stop) =
                    (hub.metrics(), Arc::clone(&hub) as Arc<dyn lianqin_pipeline::metrics::Backlog>, rx.clone());
                tokio::spawn(async move {
                    if let Err(e) = lianqin_pipeline::metrics::serve(m, h, listener, stop).await {
                        tracing::error!("metrics server stopped: {e}");
                    }
                });
            }
            if let Some(ccfg) = console {
                // `[console]`: the web console, with replay through this hub.
                let listener = lianqin_pipeline::console::bind(ccfg.listen).await?;
                tracing::info!(listen = %listener.local_addr()?, "serving the web console");
                let con = Arc::new(
                    lianqin_pipeline::console::Console::new(
                        &dir,
                        &format!("console-{}", hub.config().node.as_deref().unwrap_or("hub")),
                        PolicySource::from_env(),
                        console_sources,
                        Some(Arc::clone(&hub)),
                        ccfg.secure_cookies,
                    )?
                    .with_metrics(hub.metrics()),
                );
                let stop = rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = con.serve(listener, stop).await {
                        tracing::error!("web console stopped: {e}");
                    }
                });
            }
            if let Some(scfg) = server {
                // `[server]`: also serve the libraries over the Postgres protocol.
                let pg = PgServer::new(&scfg, &dir, PolicySource::from_env()).await?.with_metrics(hub.metrics());
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
            if worker && hub.config().flows.iter().any(|f| f.push.is_some()) {
                // `[flows.push]`: deliver each flow's outbox to its department.
                let policy = lianqin_pipeline::flows::load_policies(&dir).await?;
                for p in lianqin_pipeline::flows::push::open_all(&hub.config().flows, &dir, &policy, hub.audit())? {
                    tracing::info!(flow = p.flow(), destination = %p.destination(), "pushing flow");
                    tokio::spawn(p.run(std::time::Duration::from_millis(200), rx.clone()));
                }
            }
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            hub.run_roles(rx, sources, worker).await?;
        }
        Cmd::Flow { what: FlowCmd::Push { config, data_dir, flow } } => {
            init_tracing("warn");
            let cfg = HubConfig::load(&config)?;
            let dir = data_dir_of(&cfg, data_dir);
            print!("{}", lianqin_pipeline::cli::flow::push(&cfg, &dir, flow.as_deref()).await?);
        }
        Cmd::Flow { what: FlowCmd::Receipt { config, data_dir, flow, day, out } } => {
            init_tracing("warn");
            let cfg = HubConfig::load(&config)?;
            let dir = data_dir_of(&cfg, data_dir);
            let text = lianqin_pipeline::cli::flow::receipt(&cfg, &dir, &flow, &day).await?;
            match out {
                Some(p) => {
                    std::fs::write(&p, format!("{text}\n")).with_context(|| p.display().to_string())?;
                    println!("receipt of flow {flow} for {day} written to {}", p.display());
                }
                None => println!("{text}"),
            }
        }
        Cmd::Flow { what: FlowCmd::Verify { key, file } } => {
            init_tracing("warn");
            println!("{}", lianqin_pipeline::cli::flow::verify(&file, key.as_deref())?);
        }
        Cmd::Policy { what: PolicyCmd::Explain { data_dir, user, table } } => {
            init_tracing("warn");
            let policy = if data_dir.is_dir() {
                lianqin_pipeline::policy::load(&data_dir).await?
            } else {
                load_configured().await.context("policies")?
            };
            let catalog = Catalog::builtin()?;
            let Some(who) = policy.principal(&user) else { bail!("unknown user `{user}` (see policies/users.toml)") };
            let cols = lianqin_pipeline::query::columns_of(&catalog, &table);
            println!("{}", policy.explain(&who, &table, &cols));
        }
        Cmd::Policy { what: PolicyCmd::Seal { dir } } => {
            init_tracing("warn");
            let version = lianqin_policies::seal(&dir).await.with_context(|| format!("seal {}", dir.display()))?;
            println!("sealed {}: version {version}", dir.display());
        }
        Cmd::Status { config, data_dir, json } => {
            init_tracing("warn");
            // Only the sources' ids: no secrets needed to look at a feed.
            let sources = lianqin_pipeline::status::sources_of(&config)?;
            let dir = data_dir
                .or_else(|| lianqin_pipeline::status::data_dir_of(&config))
                .unwrap_or_else(|| PathBuf::from("lianqin-data"));
            let catalog = Catalog::builtin()?;
            let store = LibraryStore::open_existing(&dir, Arc::clone(&catalog)).await?;
            let engine = lianqin_pipeline::query::QueryEngine::new(&store, &catalog).await?;
            let runs = lianqin_pipeline::status::connector_runs(&dir)?;
            let who = format!("local:{}", lianqin_pipeline::cli::session::os_user());
            {
                use lianqin_audit::{AuditEvent, EventKind, Outcome};
                let audit =
                    lianqin_pipeline::audit::Audit::open(&dir, "cli", "cli", std::time::Duration::from_secs(3))?;
                let mut ev = AuditEvent::new(EventKind::AuditRead, who, "", Outcome::Success);
                ev.tables = vec!["audit".into()];
                ev.detail = serde_json::json!({ "command": "status", "kind": "connector_run" });
                audit.record_durable(ev)?;
                audit.sync();
            }
            let now = chrono::Utc::now();
            let rows = lianqin_pipeline::status::collect(&engine, &sources, &runs, now).await?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", lianqin_pipeline::status::render(&rows, now));
            }
        }
        Cmd::Replay { config, data_dir, source, reason, since, publish_only } => {
            init_tracing("warn");
            let cfg = HubConfig::load(&config)?;
            let dir = data_dir_of(&cfg, data_dir);
            let filter = lianqin_pipeline::replay::Filter {
                reason,
                since_micros: since.as_deref().map(lianqin_pipeline::replay::parse_since).transpose()?,
            };
            let hub = Hub::open(cfg, &dir).await.with_context(|| {
                format!(
                    "open the hub on {} (on the embedded bus a running `lianqin run` holds it: stop it first; \
                     on Kafka use --publish-only while workers run)",
                    dir.display()
                )
            })?;
            let who = format!("local:{}", lianqin_pipeline::cli::session::os_user());
            let mut bar = lianqin_pipeline::cli::progress::Progress::new(format!("replay {source}: published"), 0);
            let p = lianqin_pipeline::replay::publish(&hub, &who, &source, &filter, |done, total| bar.set(done, total))
                .await?;
            bar.finish();
            let resumed = if p.resumed { " (an unfinished run, taken up again)" } else { "" };
            println!("replay run {}{resumed}: {} record(s) of `{source}` published", p.run, p.published);
            if publish_only {
                println!(
                    "the workers decide them; see: lianqin sql \"SELECT reason, count(*) FROM quarantine WHERE locator LIKE 'replay:{}:%' GROUP BY 1\"",
                    p.run
                );
            } else {
                hub.process_available().await?;
                let engine = lianqin_pipeline::query::QueryEngine::new(&hub.store(), &hub.catalog()).await?;
                let o = lianqin_pipeline::replay::outcome(&engine, &source, &p.run).await?;
                println!("  landed in the libraries:   {}", o.landed());
                println!("  quarantined again:         {}", o.decided - o.landed());
                for (reason, n) in &o.quarantined {
                    println!("    {n:>6}  {reason}");
                }
                println!(
                    "  not decided (stale: the source sent a newer version since): {}",
                    p.published.saturating_sub(o.decided)
                );
            }
        }
        Cmd::Compact { data_dir } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let store = LibraryStore::open_existing(&data_dir, Arc::clone(&catalog)).await?;
            let mut bar = lianqin_pipeline::cli::progress::Progress::new("compact: tables", 0);
            let done = store.compact_with(|i, n, _| bar.set(i as u64, n as u64)).await?;
            bar.set(done.len() as u64, done.len() as u64);
            bar.finish();
            for (t, removed, added) in done {
                println!("{t:<28} {removed:>5} small files → {added:>3} (history kept)");
            }
        }
        Cmd::Serve { data_dir, listen, tls_cert, tls_key, demo_users, console, config } => {
            init_tracing("info");
            lianqin_pipeline::cli::check_demo_users(&PolicySource::from_env(), listen, demo_users)?;
            if let Some(c) = console {
                lianqin_pipeline::cli::check_demo_users(&PolicySource::from_env(), c, demo_users)
                    .context("--console")?;
            }
            if !data_dir.join("lake").is_dir() {
                bail!(
                    "{}: no libraries here (run `lianqin demo --once` or `lianqin run` first, or pass --data-dir)",
                    data_dir.display()
                );
            }
            let cfg = PgServerConfig { listen, tls_cert, tls_key };
            let server = PgServer::new(&cfg, &data_dir, PolicySource::from_env()).await?;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
            eprintln!("lianqin: Postgres wire server on {} (data dir {})", listener.local_addr()?, data_dir.display());
            let (tx, rx) = watch::channel(false);
            if let Some(addr) = console {
                let sources = match &config {
                    Some(c) => lianqin_pipeline::status::sources_of(c)?,
                    None => Vec::new(),
                };
                let con = Arc::new(lianqin_pipeline::console::Console::new(
                    &data_dir,
                    "console",
                    PolicySource::from_env(),
                    sources,
                    None,
                    true,
                )?);
                let l = lianqin_pipeline::console::bind(addr).await?;
                eprintln!("lianqin: web console on http://{}", l.local_addr()?);
                let stop = rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = con.serve(l, stop).await {
                        tracing::error!("web console stopped: {e}");
                    }
                });
            }
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
            });
            server.serve(listener, rx).await?;
        }
        Cmd::Export { data_dir, as_user, table, where_, sql, format, out } => {
            init_tracing("warn");
            let query = lianqin_pipeline::cli::export_query(table.as_deref(), where_.as_deref(), sql.as_deref())?;
            // The exporter proves who they are first (as `sql --as`).
            {
                let policy = lianqin_pipeline::policy::load(&data_dir).await?;
                let audit =
                    lianqin_pipeline::audit::Audit::open(&data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
                let _sync = SyncOnDrop(audit.clone());
                let session = format!("export-{}", std::process::id());
                session::login(&audit, &policy, &as_user, &Credential::from_env(&as_user), &session)?;
            }
            let req = lianqin_pipeline::flows::ExportRequest { sql: query, format: format.output(), out: out.clone() };
            let n = lianqin_pipeline::flows::export(&data_dir, &as_user, &req).await?;
            eprintln!("exported {n} rows to {}", out.display());
        }
        Cmd::Keys { what: KeysCmd::List { data_dir } } => {
            init_tracing("warn");
            print!("{}", lianqin_pipeline::cli::keys::list(&data_dir)?);
        }
        Cmd::Keys { what: KeysCmd::Rotate { data_dir, department } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let known = catalog.codes.get("department").is_some_and(|t| t.contains(&department));
            if !known && !matches!(department.as_str(), "_hub" | "_bus") {
                bail!("department `{department}` is not in code table department (nor `_hub` / `_bus`)");
            }
            let who = format!("local:{}", lianqin_pipeline::cli::session::os_user());
            print!("{}", lianqin_pipeline::cli::keys::rotate(&data_dir, &department, &who)?);
        }
        Cmd::Audit { what } => {
            init_tracing("warn");
            return lianqin_pipeline::cli::audit::run(what).await;
        }
        Cmd::Sql { data_dir, format, query, as_user } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user).await?;
            let _sync = SyncOnDrop(audit);
            match query {
                Some(q) => {
                    let batches = engine.sql(&q).await?;
                    print!("{}", format_batches(&batches, format)?);
                    if format == OutputFormat::Table {
                        println!();
                    }
                }
                None => lianqin_pipeline::cli::shell::shell(&engine, &catalog, format, &data_dir).await?,
            }
        }
        Cmd::Share { what } => share(what).await?,
        Cmd::Confirm { what: ConfirmCmd::Keygen { data_dir, department, out } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            if !catalog.codes.get("department").is_some_and(|t| t.contains(&department)) {
                bail!("department `{department}` is not in code table department");
            }
            let public = lianqin_pipeline::confirm::keygen(&data_dir, &department, &out)?;
            let audit =
                lianqin_pipeline::audit::Audit::open(&data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
            let _sync = SyncOnDrop(audit.clone());
            let mut ev = lianqin_audit::AuditEvent::new(
                lianqin_audit::EventKind::ConfigChange,
                format!("local:{}", session::os_user()),
                &department,
                lianqin_audit::Outcome::Success,
            );
            ev.detail =
                serde_json::json!({ "action": "confirm_keygen", "department": department, "public_key": public });
            audit.record_durable(ev)?;
            println!(
                "signing key for `{department}` written to {} (keep it there: 0600); public key {public} registered",
                out.display()
            );
        }
        Cmd::Confirm { what: ConfirmCmd::Record { data_dir, as_user, key, note, matter_id } } => {
            init_tracing("warn");
            lianqin_pipeline::cli::matter::check_id(&matter_id)?;
            let catalog = Catalog::builtin()?;
            let key = lianqin_pipeline::confirm::read_key(&key)?;
            let (engine, audit) = query_engine(&data_dir, &catalog, Some(as_user.clone())).await?;
            let _sync = SyncOnDrop(audit.clone());
            let policy = lianqin_pipeline::policy::load(&data_dir).await?;
            let department = policy.principal(&as_user).map(|p| p.department.clone()).unwrap_or_default();
            let v = lianqin_pipeline::cli::confirm::matter_version(&engine, &matter_id).await?;
            let c = lianqin_pipeline::confirm::sign_and_append(&data_dir, v, &department, &as_user, note, &key)?;
            let mut ev = lianqin_audit::AuditEvent::new(
                lianqin_audit::EventKind::Other,
                &as_user,
                &department,
                lianqin_audit::Outcome::Success,
            );
            ev.tables = vec![lianqin_pipeline::confirm::TABLE.into()];
            ev.detail = serde_json::json!({ "action": "confirm_record", "matter_id": c.matter_id, "content_hash": c.content_hash, "department": c.department });
            audit.record_durable(ev)?;
            println!(
                "confirmed {} version {} for {} by {} at {}",
                c.matter_id, c.content_hash, c.department, c.by, c.at
            );
        }
        Cmd::Confirm { what: ConfirmCmd::Verify { data_dir, matter: Some(id) } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit);
            for c in lianqin_pipeline::cli::confirm::check_matter(&engine, &data_dir, &id).await? {
                println!(
                    "{id}: version {} confirmed by {} of {} at {} (signature verifies)",
                    c.content_hash, c.by, c.department, c.at
                );
            }
        }
        Cmd::Confirm { what: ConfirmCmd::Verify { data_dir, matter: None } } => {
            init_tracing("warn");
            let (n, bad) = lianqin_pipeline::confirm::verify(&data_dir)?;
            for (line, c, problem) in &bad {
                eprintln!(
                    "{}:{line}: {} confirmed by {} of {}: {}",
                    lianqin_pipeline::confirm::journal_path(&data_dir).display(),
                    c.matter_id,
                    c.by,
                    c.department,
                    match problem {
                        lianqin_pipeline::confirm::Problem::UnknownKey =>
                            "signed with a key not registered for that department",
                        lianqin_pipeline::confirm::Problem::BadSignature =>
                            "the signature does not match the entry (changed after signing)",
                    }
                );
            }
            if !bad.is_empty() {
                bail!("{} of {n} confirmation(s) do not verify", bad.len());
            }
            println!("{n} confirmation(s): every signature verifies");
        }
        Cmd::Matter { what: MatterCmd::Explain { data_dir, as_user, format, id } } => {
            init_tracing("warn");
            lianqin_pipeline::cli::matter::check_id(&id)?;
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user).await?;
            let _sync = SyncOnDrop(audit);
            let batches = lianqin_pipeline::cli::matter::explain(&engine, &id).await?;
            if batches.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
                bail!("{id}: no matter with this id that you may read");
            }
            print!("{}", format_batches(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
        }
        Cmd::Matter { what: MatterCmd::Confirm { data_dir, by, reason, a, b } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let what = lianqin_pipeline::joint::Decide::Confirm { a, b };
            let d = lianqin_pipeline::cli::matter::decide(&engine, &audit, &data_dir, &what, &by, &reason).await?;
            println!("decided: {}", serde_json::to_string(&d)?);
        }
        Cmd::Matter { what: MatterCmd::Split { data_dir, by, reason, id } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let what = lianqin_pipeline::joint::Decide::Split { report: id };
            let d = lianqin_pipeline::cli::matter::decide(&engine, &audit, &data_dir, &what, &by, &reason).await?;
            println!("decided: {}", serde_json::to_string(&d)?);
        }
        Cmd::Element { what: ElementCmd::Explain { data_dir, kind, as_user, format, id } } => {
            init_tracing("warn");
            lianqin_pipeline::cli::element::check_id(&id)?;
            let catalog = Catalog::builtin()?;
            let operator = as_user.is_none();
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user).await?;
            let _sync = SyncOnDrop(audit);
            let batches = lianqin_pipeline::cli::element::explain(&engine, kind.entity(), &id).await?;
            if batches.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
                let what = if kind == EntityKind::Unit { "enterprise" } else { "person" };
                bail!("{id}: no {what} element with this id that you may read");
            }
            print!("{}", format_batches(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
            if operator && format == OutputFormat::Table {
                print!(
                    "{}",
                    lianqin_pipeline::cli::element::explain_weights(&engine, kind.entity(), &data_dir, &id).await?
                );
            }
        }
        Cmd::Element { what: ElementCmd::Review { data_dir, kind, as_user, format, limit } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user).await?;
            let _sync = SyncOnDrop(audit);
            let batches = engine.sql(&lianqin_pipeline::cli::element::review_sql(kind.entity(), limit)).await?;
            print!("{}", format_batches(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
        }
        Cmd::Element { what: ElementCmd::Merge { data_dir, kind, by, reason, a, b } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let what = lianqin_pipeline::persons::Decide::Merge { a, b };
            let d =
                lianqin_pipeline::cli::element::decide(&engine, &audit, kind.entity(), &data_dir, &what, &by, &reason)
                    .await?;
            println!("decided: {}", serde_json::to_string(&d)?);
        }
        Cmd::Element { what: ElementCmd::Split { data_dir, kind, by, reason, id } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let what = lianqin_pipeline::persons::Decide::Split { element: id };
            let d =
                lianqin_pipeline::cli::element::decide(&engine, &audit, kind.entity(), &data_dir, &what, &by, &reason)
                    .await?;
            println!("decided: {}", serde_json::to_string(&d)?);
        }
        Cmd::Recheck { what: RecheckCmd::Draw { data_dir, half, seed, by } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let summary = lianqin_pipeline::cli::recheck::draw(&engine, &audit, &data_dir, &half, seed, &by).await?;
            print!("{}", lianqin_pipeline::cli::recheck::render(&summary));
        }
        Cmd::Recheck { what: RecheckCmd::Result { data_dir, answer, handler, note, by, matter_id } } => {
            init_tracing("warn");
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, None).await?;
            let _sync = SyncOnDrop(audit.clone());
            let e = lianqin_pipeline::cli::recheck::result(
                &engine,
                &audit,
                &data_dir,
                &catalog,
                &matter_id,
                &answer,
                handler.as_deref(),
                &note,
                &by,
            )
            .await?;
            println!("recorded: {}", serde_json::to_string(&e)?);
        }
        Cmd::Report { what } => {
            init_tracing("warn");
            let (data_dir, as_user, scope, out) = match what {
                ReportCmd::Monthly { data_dir, as_user, station, month, out } => {
                    (data_dir, as_user, lianqin_pipeline::report::Scope::Monthly { station, month }, out)
                }
                ReportCmd::HalfYear { data_dir, as_user, half, station, out } => {
                    (data_dir, as_user, lianqin_pipeline::report::Scope::HalfYear { half, station }, out)
                }
            };
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user.clone()).await?;
            let _sync = SyncOnDrop(audit.clone());
            let user = as_user.unwrap_or_else(|| format!("local:{}", session::os_user()));
            let files = lianqin_pipeline::cli::report::write(&engine, &audit, &user, &scope, &out).await?;
            for f in files {
                println!("{}", f.display());
            }
        }
        Cmd::Token { what: TokenCmd::Resolve { data_dir, as_user, format, token } } => {
            init_tracing("warn");
            lianqin_pipeline::cli::token::check_token(&token)?;
            let catalog = Catalog::builtin()?;
            let (engine, audit) = query_engine(&data_dir, &catalog, as_user).await?;
            let _sync = SyncOnDrop(audit);
            let batches = lianqin_pipeline::cli::token::resolve(&engine, &token).await?;
            if batches.iter().map(|b| b.num_rows()).sum::<usize>() == 0 {
                bail!("{token}: no element with this id that you may read");
            }
            print!("{}", format_batches(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
        }
    }
    Ok(())
}

/// A query session over `data_dir`, audited in the `cli` stream: with
/// `--as USER` (logged in as for `sql --as`) under USER's policy; without
/// it the local operator, who can read the data dir's files anyway,
/// unrestricted (recorded as local:<os user>).
/// `lianqin share …`: each step logs the user in (password as for `sql
/// --as`), appends to the sharing journal and writes a durable audit entry.
async fn share(what: ShareCmd) -> Result<()> {
    init_tracing("warn");
    let login = |data_dir: PathBuf, user: String| async move {
        let audit = lianqin_pipeline::audit::Audit::open(&data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
        let policy = Arc::new(lianqin_pipeline::policy::load(&data_dir).await?);
        let who = session::sql_login(&audit, &policy, &user, &Credential::from_env(&user))?;
        anyhow::Ok((data_dir, audit, policy, who))
    };
    use lianqin_pipeline::sharing;
    match what {
        ShareCmd::Request { data_dir, as_user, table, from, rows, columns, purpose, until } => {
            let until = sharing::parse_until(&until)?;
            let (d, audit, policy, who) = login(data_dir, as_user).await?;
            let _sync = SyncOnDrop(audit.clone());
            let r = sharing::request(
                &d,
                &policy,
                &who.name,
                &who.department,
                &table,
                rows,
                columns,
                &from,
                &purpose,
                until,
            )
            .await?;
            audit.record_durable(sharing::audit_event("share_request", &r, None))?;
            let cols = r.columns.as_ref().map(|c| format!(" (columns {})", c.join(", "))).unwrap_or_default();
            println!(
                "request {} filed: {} rows of `{}`{cols} for {} until {} — waiting for a sharing_approver of {}",
                r.id, r.table, r.from_department, r.by, r.until, r.from_department
            );
        }
        ShareCmd::Approve { data_dir, as_user, id } => {
            let (d, audit, policy, who) = login(data_dir, as_user).await?;
            let _sync = SyncOnDrop(audit.clone());
            let (r, dec) = sharing::decide(&d, &policy, &id, &who.name, "approve", None)?;
            audit.record_durable(sharing::audit_event("share_approve", &r, Some(&dec)))?;
            println!(
                "{id} approved by {}: {} may read {} rows of `{}` until {}",
                dec.by, r.by, r.from_department, r.table, r.until
            );
        }
        ShareCmd::Reject { data_dir, as_user, reason, id } => {
            let (d, audit, policy, who) = login(data_dir, as_user).await?;
            let _sync = SyncOnDrop(audit.clone());
            let (r, dec) = sharing::decide(&d, &policy, &id, &who.name, "reject", Some(reason))?;
            audit.record_durable(sharing::audit_event("share_reject", &r, Some(&dec)))?;
            println!("{id} rejected by {}", dec.by);
        }
        ShareCmd::Revoke { data_dir, as_user, reason, id } => {
            let (d, audit, policy, who) = login(data_dir, as_user).await?;
            let _sync = SyncOnDrop(audit.clone());
            let (r, dec) = sharing::decide(&d, &policy, &id, &who.name, "revoke", Some(reason))?;
            audit.record_durable(sharing::audit_event("share_revoke", &r, Some(&dec)))?;
            println!("{id} revoked by {}", dec.by);
        }
        ShareCmd::List { data_dir, json } => {
            let now = chrono::Utc::now();
            for s in sharing::load(&data_dir)? {
                let status = s.status(now);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "status": status, "request": s.request, "decision": s.decision, "revoked": s.revoked })
                    );
                } else {
                    let r = &s.request;
                    println!(
                        "{} {:<8} {} ({}) ← {} `{}`{}{} until {} — {}",
                        r.id,
                        format!("{status:?}").to_lowercase(),
                        r.by,
                        r.department,
                        r.from_department,
                        r.table,
                        r.columns.as_ref().map(|c| format!(" ({})", c.join(", "))).unwrap_or_default(),
                        r.rows.as_deref().map(|x| format!(" where {x}")).unwrap_or_default(),
                        r.until,
                        r.purpose
                    );
                }
            }
        }
    }
    Ok(())
}

async fn query_engine(
    data_dir: &std::path::Path,
    catalog: &Arc<Catalog>,
    as_user: Option<String>,
) -> Result<(QueryEngine, lianqin_pipeline::audit::Audit)> {
    if !data_dir.join("lake").is_dir() {
        bail!(
            "{}: no libraries here (run `lianqin demo --once` or `lianqin run` first, or pass --data-dir)",
            data_dir.display()
        );
    }
    let store = LibraryStore::open_existing(data_dir, Arc::clone(catalog)).await?;
    let audit = lianqin_pipeline::audit::Audit::open(data_dir, "cli", "cli", std::time::Duration::from_secs(3))?;
    let mut engine = QueryEngine::new(&store, catalog).await?;
    let (user, department) = match as_user {
        Some(u) => {
            let policy = Arc::new(lianqin_pipeline::policy::load(data_dir).await?);
            let who = session::sql_login(&audit, &policy, &u, &Credential::from_env(&u))?;
            let dept = who.department.clone();
            engine = engine.with_policy(policy, who);
            (u, dept)
        }
        None => (format!("local:{}", session::os_user()), String::new()),
    };
    let who = lianqin_pipeline::query::Querier {
        user,
        department,
        session: Some(session::cli_session()),
        client_addr: Some("local".into()),
    };
    Ok((engine.with_audit(audit.clone(), who), audit))
}

/// Flushes the audit stream when the command ends.
struct SyncOnDrop(lianqin_pipeline::audit::Audit);
impl Drop for SyncOnDrop {
    fn drop(&mut self) {
        self.0.sync();
    }
}
