//! The hub's TOML configuration (`lianqin run --config FILE`).
//!
//! Unknown keys are errors (`deny_unknown_fields`), and every error names the
//! file, the line and the key. See `lianqin.example.toml` for every option.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lianqin_connectors::ConnectorConfig;
use serde::Deserialize;

use crate::PipelineError;

/// Which bus implementation to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Embedded durable store under the data dir (no services needed).
    #[default]
    Embedded,
    /// Apache Kafka (`[bus.kafka]`).
    Kafka,
}

/// `[bus]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `embedded` (default) or `kafka`.
    #[serde(default)]
    pub kind: BusKind,
    /// Prefix of every topic name (default `lianqin.`).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Partitions of each raw topic (default 1 embedded; Kafka uses its own setting).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Kafka settings when `kind = "kafka"`.
    #[cfg(feature = "kafka")]
    #[serde(default)]
    pub kafka: Option<lianqin_bus::kafka::KafkaBusConfig>,
}

fn default_prefix() -> String {
    "lianqin.".into()
}
fn default_partitions() -> u32 {
    1
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            topic_prefix: default_prefix(),
            partitions: default_partitions(),
            #[cfg(feature = "kafka")]
            kafka: None,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Consumer group of the pipeline workers (default `lianqin-pipeline`).
    #[serde(default = "default_group")]
    pub group: String,
    /// Most records per micro-batch (default 50 000).
    #[serde(default = "default_batch")]
    pub batch_max_records: usize,
    /// How long a worker waits for records when idle, ms (default 200).
    #[serde(default = "default_wait")]
    pub batch_wait_ms: u64,
    /// Publish library change events to `changes.<library>` topics. Default:
    /// on with `bus.kind = "kafka"` (other systems subscribe there), off with
    /// the embedded bus, which no other process can read (outbound `[[flows]]`
    /// deliver from the committed batches either way). See
    /// [`PipelineConfig::change_feeds_on`].
    #[serde(default)]
    pub change_feeds: Option<bool>,
    /// Compact small Delta files every this many seconds (0 = never; default 3600).
    #[serde(default = "default_compact")]
    pub compact_every_secs: u64,
}

fn default_compact() -> u64 {
    3600
}

fn default_group() -> String {
    "lianqin-pipeline".into()
}
fn default_batch() -> usize {
    50_000
}
fn default_wait() -> u64 {
    200
}

impl PipelineConfig {
    /// Whether change feeds are published on a bus of this kind
    /// (`"kafka"` or `"embedded"`): the explicit setting, else on for Kafka only.
    pub fn change_feeds_on(&self, bus_kind: &str) -> bool {
        self.change_feeds.unwrap_or(bus_kind == "kafka")
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            group: default_group(),
            batch_max_records: default_batch(),
            batch_wait_ms: default_wait(),
            change_feeds: None,
            compact_every_secs: default_compact(),
        }
    }
}

/// One `[[sources]]` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source id: lower-case letters, digits and `_` (names the raw topic and table).
    pub id: String,
    /// Owning department (code table `department`).
    pub department: String,
    /// Mapping: a file path (relative to the config file) or a built-in name.
    pub mapping: String,
    /// Seconds between sync passes (schedule sync, §7.3.2). Default 10.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Set false to keep the block but not run it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The connector.
    pub connector: ConnectorConfig,
}

fn default_interval() -> u64 {
    10
}
fn yes() -> bool {
    true
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Data directory (all state); `--data-dir` overrides it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Node name recorded in audit entries (default: host name or `hub`).
    #[serde(default)]
    pub node: Option<String>,
    /// Bus.
    #[serde(default)]
    pub bus: BusConfig,
    /// Pipeline.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Sources.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Outbound change flows filtered per department (`[[flows]]`, run by `crate::flows`).
    #[serde(default)]
    pub flows: Vec<FlowConfig>,
    /// Postgres wire server run by `lianqin run` (`[server]`, see [`crate::server`]).
    #[serde(default)]
    pub server: Option<ServerSection>,
    /// Audit trail settings (`[audit]`).
    #[serde(default)]
    pub audit: AuditSection,
    /// Prometheus `/metrics` served by `lianqin run` (`[metrics]`, see
    /// [`crate::metrics`]).
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    /// The web console served by `lianqin run` (`[console]`, see
    /// [`crate::console`]).
    #[serde(default)]
    pub console: Option<ConsoleSection>,
    /// Directory the config came from (mapping paths are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[metrics]`: where `lianqin run` serves `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to listen on (e.g. `127.0.0.1:9464`; port 0 picks one).
    pub listen: std::net::SocketAddr,
}

/// `[console]` of the hub config: `lianqin run` serves the web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Address to listen on (e.g. `127.0.0.1:8080`; port 0 picks one).
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure` (default true). Browsers keep
    /// `Secure` cookies over plain HTTP only on loopback addresses; behind
    /// a TLS-terminating proxy keep it on.
    #[serde(default = "yes")]
    pub secure_cookies: bool,
}

/// One `[[flows]]` block of the hub config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Flow name (in audit entries).
    pub name: String,
    /// The users.toml user whose permissions filter the flow (the receiving
    /// department's account).
    pub user: String,
    /// Libraries whose changes flow (default: element, matter, matter_event).
    #[serde(default = "flow_libraries")]
    pub libraries: Vec<String>,
    /// Sink: a JSON-lines file, appended to (relative paths are under the
    /// data dir). It is also the flow's outbox: `push` and `topic` deliver
    /// from it.
    pub sink: PathBuf,
    /// A bus topic that receives the flow's events too: the receiving
    /// department's own change feed (e.g. `feeds.ecology`; the topic prefix
    /// of `[bus]` is put in front). Unlike `changes.<library>`, it carries
    /// only what the flow's user may see.
    #[serde(default)]
    pub topic: Option<String>,
    /// Pushes the outbox into the department's system (`[flows.push]`,
    /// `type = "http" | "postgres" | "mysql"`), see [`crate::flows::push`].
    #[serde(default)]
    pub push: Option<PushConfig>,
}

/// `[flows.push]`: where a flow's outbox is delivered, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushConfig {
    /// POST batches of events to a department endpoint ([`HttpPushConfig`]).
    Http(HttpPushConfig),
    /// Upsert events into a department PostgreSQL table ([`SqlPushConfig`]).
    Postgres(SqlPushConfig),
    /// Upsert events into a department MySQL/MariaDB table ([`SqlPushConfig`]).
    Mysql(SqlPushConfig),
}

impl PushConfig {
    /// Events per delivery.
    pub fn batch_rows(&self) -> usize {
        match self {
            PushConfig::Http(h) => h.batch_rows,
            PushConfig::Postgres(s) | PushConfig::Mysql(s) => s.batch_rows,
        }
        .max(1)
    }
}

/// `type = "http"`: each delivery is one `POST` of a JSON array of events,
/// signed like the `webhook` connector expects (HMAC-SHA256 over
/// `<timestamp>.<body>`), with the delivery id as idempotency key; only a
/// 2xx answer moves the flow on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPushConfig {
    /// Endpoint URL (`${ENV}` allowed).
    pub url: String,
    /// HMAC-SHA256 key shared with the receiver (`${ENV}`; never logged).
    pub secret: String,
    /// Events per POST (default 500).
    #[serde(default = "default_push_rows")]
    pub batch_rows: usize,
    /// Per-request timeout in milliseconds (default 10 000).
    #[serde(default = "default_push_timeout")]
    pub timeout_ms: u64,
    /// Header carrying the signature (default `X-Signature`).
    #[serde(default = "default_sig_header")]
    pub signature_header: String,
    /// Header carrying the unix-seconds timestamp (default `X-Timestamp`).
    #[serde(default = "default_ts_header")]
    pub timestamp_header: String,
    /// Header carrying the delivery id (default `Idempotency-Key`).
    #[serde(default = "default_idem_header")]
    pub idempotency_header: String,
}

/// `type = "postgres" | "mysql"`: each delivery upserts its events into
/// `table` (created when missing) in one transaction, keyed by
/// `(library, id)`: a repeated delivery rewrites the same rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlPushConfig {
    /// Connection string (`postgres://…` or `mysql://…`; `${ENV}` for the
    /// password; never logged).
    pub url: String,
    /// Target table, `name` or `schema.name` (default `lianqin_feed`).
    #[serde(default = "default_push_table")]
    pub table: String,
    /// Events per transaction (default 500).
    #[serde(default = "default_push_rows")]
    pub batch_rows: usize,
    /// Connect timeout in milliseconds (default 10 000).
    #[serde(default = "default_push_timeout")]
    pub timeout_ms: u64,
}

fn default_push_rows() -> usize {
    500
}
fn default_push_timeout() -> u64 {
    10_000
}
fn default_sig_header() -> String {
    "X-Signature".into()
}
fn default_ts_header() -> String {
    "X-Timestamp".into()
}
fn default_idem_header() -> String {
    "Idempotency-Key".into()
}
fn default_push_table() -> String {
    "lianqin_feed".into()
}

/// The libraries a flow may take (the default of `libraries`).
pub fn flow_libraries() -> Vec<String> {
    ["element", "matter", "matter_event"].map(String::from).to_vec()
}

/// Settings of the Postgres wire server ([`crate::server::PgServer`]).
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS.
    pub tls_key: Option<PathBuf>,
}

/// `[server]` of the hub config: `lianqin run` then also serves the
/// libraries over the Postgres protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on (default `127.0.0.1:5433`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate (chain) for TLS; relative to the config file.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS; relative to the config file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5433))
}

impl ServerSection {
    /// The server settings, with TLS paths resolved against `base` (the
    /// config file's directory).
    pub fn resolve(&self, base: &Path) -> PgServerConfig {
        let abs = |p: &Option<PathBuf>| p.as_ref().map(|p| if p.is_absolute() { p.clone() } else { base.join(p) });
        PgServerConfig { listen: self.listen, tls_cert: abs(&self.tls_cert), tls_key: abs(&self.tls_key) }
    }
}

/// `[audit]`: settings of the hub's audit stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Cryptographic suite of a *new* audit stream: `standard` (AES-256-GCM,
    /// SHA-256, ed25519) or `gm` (SM4-GCM, SM3, SM2 for GB/T 39786-2021
    /// deployments). Unset: `LIANQIN_AUDIT_SUITE`, else `standard`. An
    /// existing stream keeps the suite recorded in its header.
    #[serde(default)]
    pub suite: Option<AuditSuite>,
}

/// The audit suite named in `[audit] suite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSuite {
    /// AES-256-GCM, SHA-256, ed25519.
    Standard,
    /// SM4-GCM, SM3, SM2.
    Gm,
}

impl AuditSuite {
    /// The audit crate's suite.
    pub fn crypto(self) -> lianqin_audit::CryptoSuite {
        match self {
            AuditSuite::Standard => lianqin_audit::CryptoSuite::Standard,
            AuditSuite::Gm => lianqin_audit::CryptoSuite::Gm,
        }
    }
}

impl HubConfig {
    /// Version of this config for the audit trail (`config_change` entries):
    /// SHA-256 over its canonical (parsed) form — node, bus, pipeline and
    /// sources.
    pub fn version(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"lianqin-config/v1\0");
        h.update(format!("{:?}", (&self.node, &self.bus, &self.pipeline, &self.sources)).as_bytes());
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<HubConfig, PipelineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PipelineError::Config(format!("{}: cannot read: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        HubConfig::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<HubConfig, PipelineError> {
        let mut cfg: HubConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(" line {}", text[..s.start.min(text.len())].matches('\n').count() + 1))
                .unwrap_or_default();
            PipelineError::Config(format!("{origin}{line}: {}", e.message()))
        })?;
        cfg.base_dir = base.to_path_buf();
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<(), PipelineError> {
        let departments: BTreeSet<String> = crate::schema::Catalog::builtin()?
            .codes
            .get("department")
            .map(|t| t.codes.iter().map(|c| c.code.clone()).collect())
            .unwrap_or_default();
        let mut ids = BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("{origin}: sources[{i}] (id = {:?})", s.id);
            if s.id.is_empty() || !s.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(PipelineError::Config(format!("{at}: `id` must be lower-case letters, digits and _")));
            }
            if !ids.insert(s.id.clone()) {
                return Err(PipelineError::Config(format!("{at}: duplicate source id")));
            }
            if !departments.contains(&s.department) {
                return Err(PipelineError::Config(format!(
                    "{at}: `department` = {:?} is not in code table department ({})",
                    s.department,
                    departments.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            if s.interval_secs == 0 {
                return Err(PipelineError::Config(format!("{at}: `interval_secs` must be >= 1")));
            }
            s.connector.validate(&s.id).map_err(|e| PipelineError::Config(format!("{origin}: {e}")))?;
        }
        let mut flow_names = BTreeSet::new();
        for (i, f) in self.flows.iter().enumerate() {
            let at = format!("{origin}: flows[{i}] (name = {:?})", f.name);
            if f.name.is_empty() || !f.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(PipelineError::Config(format!("{at}: `name` must be letters, digits, _ and -")));
            }
            if !flow_names.insert(f.name.clone()) {
                return Err(PipelineError::Config(format!("{at}: duplicate flow name")));
            }
            if let Some(t) = &f.topic
                && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
            {
                return Err(PipelineError::Config(format!("{at}: `topic` must be letters, digits, ., _ and -")));
            }
            match &f.push {
                Some(PushConfig::Postgres(q) | PushConfig::Mysql(q)) => {
                    let ok = |p: &str| {
                        p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                            && p.len() <= 63
                    };
                    let parts: Vec<&str> = q.table.split('.').collect();
                    if parts.len() > 2 || !parts.iter().all(|p| ok(p)) {
                        return Err(PipelineError::Config(format!(
                            "{at}: [flows.push] `table` = {:?} must be `name` or `schema.name` (letters, digits, _)",
                            q.table
                        )));
                    }
                }
                Some(PushConfig::Http(h))
                    if !(h.url.starts_with("http://") || h.url.starts_with("https://") || h.url.starts_with("${")) =>
                {
                    return Err(PipelineError::Config(format!(
                        "{at}: [flows.push] `url` must start with http:// or https://"
                    )));
                }
                Some(PushConfig::Http(_)) => {}
                None => {}
            }
        }
        if self.bus.partitions == 0 {
            return Err(PipelineError::Config(format!("{origin}: [bus] partitions must be >= 1")));
        }
        if self.pipeline.batch_max_records == 0 {
            return Err(PipelineError::Config(format!("{origin}: [pipeline] batch_max_records must be >= 1")));
        }
        #[cfg(feature = "kafka")]
        if self.bus.kind == BusKind::Kafka && self.bus.kafka.is_none() {
            return Err(PipelineError::Config(format!("{origin}: [bus] kind = \"kafka\" needs a [bus.kafka] table")));
        }
        Ok(())
    }

    /// Enabled sources.
    pub fn enabled_sources(&self) -> impl Iterator<Item = &SourceConfig> {
        self.sources.iter().filter(|s| s.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_line() {
        let text = "[pipeline]\ngroup = \"g\"\nbatch_size = 3\n";
        let e = HubConfig::parse(text, "hub.toml", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("hub.toml line 3"), "{e}");
        assert!(e.contains("batch_size"), "{e}");
    }

    #[test]
    fn bad_department_and_ids() {
        let text = r#"
[[sources]]
id = "a"
department = "nope"
mapping = "police_110"
[sources.connector]
type = "file"
dir = "/tmp"
key_columns = ["k"]
"#;
        let e = HubConfig::parse(text, "h.toml", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("department"), "{e}");
        let ok = text.replace("nope", "police");
        assert!(HubConfig::parse(&ok, "h.toml", Path::new(".")).is_ok());
        let bad_id = ok.replace("id = \"a\"", "id = \"A-1\"");
        assert!(HubConfig::parse(&bad_id, "h.toml", Path::new(".")).is_err());
    }

    #[test]
    fn flow_push_settings_are_checked_with_their_line() {
        let flow = |push: &str| {
            format!("[[flows]]\nname = \"to-eco\"\nuser = \"chen.ecology\"\nsink = \"f.jsonl\"\n[flows.push]\n{push}")
        };
        let ok = flow("type = \"postgres\"\nurl = \"${PG}\"\ntable = \"dept.feed_1\"\n");
        let cfg = HubConfig::parse(&ok, "h.toml", Path::new(".")).unwrap();
        assert!(matches!(&cfg.flows[0].push, Some(PushConfig::Postgres(s)) if s.batch_rows == 500));
        let e =
            HubConfig::parse(&flow("type = \"mysql\"\nurl = \"x\"\ntable = \"a;drop\"\n"), "h.toml", Path::new("."))
                .unwrap_err()
                .to_string();
        assert!(e.contains("`table`") && e.contains("to-eco"), "{e}");
        let e =
            HubConfig::parse(&flow("type = \"http\"\nurl = \"ftp://x\"\nsecret = \"s\"\n"), "h.toml", Path::new("."))
                .unwrap_err()
                .to_string();
        assert!(e.contains("http://"), "{e}");
        let e = HubConfig::parse(
            &flow("type = \"http\"\nurl = \"http://x\"\nsecret = \"s\"\nretries = 3\n"),
            "h.toml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("h.toml line") && e.contains("retries"), "{e}");
        let twice = format!("{ok}{ok}");
        let e = HubConfig::parse(&twice, "h.toml", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("duplicate flow name"), "{e}");
    }
}
