//! A whole audit root (`<data-dir>/audit/`): every stream directory, the
//! signed stream registry and anchors kept outside the data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{CryptoSuite, Hash, MasterKey};
use crate::error::{AuditError, Result};
use crate::format::{CHECKPOINTS_FILE, Checkpoint, LogHeader, hex_array, hex_array16, hex_vec};
use crate::registry::{
    REGISTRY_FILE, RegisteredStream, RegistryEntry, RegistryRef, RegistryWriter, ScanEnd, Scanner, scan_file,
};
use crate::verify::{Problem, ProblemKind, TornTail, VerifyOptions, VerifyReport, verify_with};

/// Value of [`Anchor::format`].
pub const ANCHOR_FORMAT: &str = "lianqin-audit-anchor/v1";

/// The registry's position, as kept in an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryHead {
    /// Registry id (hex in JSON).
    #[serde(with = "hex_array16")]
    pub registry_id: [u8; 16],
    /// The registry's suite.
    pub suite: CryptoSuite,
    /// The registry's signature verification key (hex).
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// Number of records at anchoring time.
    pub records: u64,
    /// Registry chain head after those records (hex).
    #[serde(with = "hex_array")]
    pub head: Hash,
}

/// One stream in an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchoredStream {
    /// The stream's log id (hex).
    #[serde(with = "hex_array16")]
    pub log_id: [u8; 16],
    /// The stream's suite.
    pub suite: CryptoSuite,
    /// The stream's checkpoint verification key (hex): lets a third party check `checkpoint`.
    #[serde(with = "hex_vec")]
    pub public_key: Vec<u8>,
    /// The latest durable signed checkpoint (none for a stream without entries).
    pub checkpoint: Option<Checkpoint>,
}

/// The latest signed checkpoints of every stream of an audit root and the
/// registry head, to be kept where the audited host cannot rewrite it (a
/// path or URL the security officer controls, the Kafka audit topic). JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Always [`ANCHOR_FORMAT`].
    pub format: String,
    /// When the anchor was taken.
    pub created: DateTime<Utc>,
    /// The registry head (none when the root had no registry).
    pub registry: Option<RegistryHead>,
    /// Streams by name.
    pub streams: BTreeMap<String, AnchoredStream>,
}

impl Anchor {
    /// The JSON text of the anchor.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses an anchor from JSON.
    pub fn from_json(text: &str) -> Result<Anchor> {
        let a: Anchor = serde_json::from_str(text)
            .map_err(|e| AuditError::Invalid { reason: format!("not an audit anchor: {e}") })?;
        if a.format != ANCHOR_FORMAT {
            return Err(AuditError::Invalid { reason: format!("unsupported anchor format {:?}", a.format) });
        }
        Ok(a)
    }

    /// Reads an anchor file.
    pub fn read(path: impl AsRef<Path>) -> Result<Anchor> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, "reading anchor", e))?;
        Self::from_json(&text)
    }

    /// Writes the anchor to `path` atomically (temporary file, fsync, rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "anchor".into());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        })()
        .map_err(|e| AuditError::io(path, "writing anchor", e))
    }
}

/// The registry as found by [`verify_root`].
#[derive(Debug, Clone, Serialize)]
pub struct RegistrySummary {
    /// The registry file.
    pub path: PathBuf,
    /// Registry id (hex), when record 0 was readable.
    pub registry_id: Option<String>,
    /// Valid records.
    pub records: u64,
    /// Streams registered and not retired.
    pub active_streams: usize,
    /// Streams retired by an officer.
    pub retired_streams: Vec<String>,
    /// A torn final record (crash mid-append, or an append under way): not a problem.
    pub torn_tail: Option<TornTail>,
}

/// The verification of one stream of the root.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Listed in the registry.
    pub registered: bool,
    /// The stream's own verification (with the registry's and the anchor's checkpoints as anchors).
    pub report: VerifyReport,
}

/// Result of [`verify_root`] / [`verify_with_anchor`].
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    /// The audit root.
    pub root: PathBuf,
    /// The registry, when there is one.
    pub registry: Option<RegistrySummary>,
    /// Findings that are not failures, e.g. "no registry yet" on a data dir
    /// written before the registry existed.
    pub warnings: Vec<String>,
    /// Each stream directory that holds a log.
    pub streams: Vec<StreamReport>,
    /// Root-level problems: missing, replaced or unregistered streams, a
    /// damaged, missing or rolled-back registry, checkpoints missing from a
    /// stream's `checkpoints.log`.
    pub problems: Vec<Problem>,
}

impl RootReport {
    /// True when neither the root nor any stream has a problem.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.streams.iter().all(|s| s.report.is_ok())
    }

    /// Every problem: root-level first, then each stream's.
    pub fn all_problems(&self) -> Vec<&Problem> {
        self.problems.iter().chain(self.streams.iter().flat_map(|s| s.report.problems.iter())).collect()
    }
}

pub(crate) fn check_stream_name(stream: &str) -> Result<()> {
    let bad = stream.is_empty()
        || stream.len() > 200
        || stream.starts_with('.')
        || stream.contains(['/', '\\', '\0'])
        || stream == REGISTRY_FILE;
    if bad {
        return Err(AuditError::Invalid { reason: format!("bad audit stream name {stream:?}") });
    }
    Ok(())
}

/// Verifies every stream under the audit root `root` and the stream registry.
/// See [`verify_root_with`].
pub fn verify_root(root: impl AsRef<Path>, master: &MasterKey) -> Result<RootReport> {
    verify_root_with(root, master, None, &VerifyOptions::default())
}

/// Like [`verify_root`], and also against an anchor kept outside the data dir
/// (see [`anchor`]): fails when a stream of the anchor is missing or replaced,
/// when a stream's log is shorter than or diverges from its anchored
/// checkpoint, or when the registry is shorter than or diverges from the
/// anchored registry head (the whole directory rolled back).
pub fn verify_with_anchor(root: impl AsRef<Path>, master: &MasterKey, anchor: &Anchor) -> Result<RootReport> {
    verify_root_with(root, master, Some(anchor), &VerifyOptions::default())
}

/// Verifies the audit root `root` (`<data-dir>/audit`):
/// - the registry: chain, every signature, the master key's key check;
/// - every registered stream (and every stream of `anchor`) still exists and
///   holds the registered log (`StreamMissing`, `StreamReplaced`);
/// - every stream directory is registered (`StreamUnregistered`);
/// - each stream verifies ([`verify_with`] with `opts`), with the
///   checkpoint recorded in the registry and the one in `anchor` as anchors:
///   entries cut together with `checkpoints.log` give `AnchorMismatch`, and
///   a `checkpoints.log` lacking a recorded checkpoint gives `CheckpointSequence`;
/// - a stream directory whose `registry.ref` names a registry that is gone
///   or another one (`RegistryMissing`); the anchored registry head (`RegistryRollback`).
///
/// Without a registry and without any `registry.ref` (data written before
/// the registry existed) the streams are verified one by one and a warning
/// says that deletion of a whole stream cannot be detected yet.
///
/// A wrong master key is an `Err`; everything else is in the report.
pub fn verify_root_with(
    root: impl AsRef<Path>,
    master: &MasterKey,
    anchor: Option<&Anchor>,
    opts: &VerifyOptions,
) -> Result<RootReport> {
    let root = root.as_ref();
    let reg_path = root.join(REGISTRY_FILE);
    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let prob = |kind, file: &Path, seq: Option<u64>, checkpoint: Option<u64>, detail: String| Problem {
        kind,
        file: file.to_path_buf(),
        offset: None,
        seq,
        checkpoint,
        detail,
    };

    // The registry.
    let mut summary = None;
    let scan: Option<Scanner> = match scan_file(root, master, anchor.is_some())? {
        None => None,
        Some((scan, end)) => {
            let mut torn = None;
            match end {
                Ok(ScanEnd::Clean) => {}
                Ok(ScanEnd::Torn { offset, bytes }) => torn = Some(TornTail { file: reg_path.clone(), offset, bytes }),
                Err(e) => problems.push(Problem {
                    kind: ProblemKind::RegistryCorrupt,
                    file: reg_path.clone(),
                    offset: Some(e.offset),
                    seq: None,
                    checkpoint: None,
                    detail: format!("stream registry record #{}: {}", e.index, e.reason),
                }),
            }
            summary = Some(RegistrySummary {
                path: reg_path.clone(),
                registry_id: scan.registry_id().map(hex::encode),
                records: scan.next_index,
                active_streams: scan.streams.values().filter(|s| s.retired.is_none()).count(),
                retired_streams: scan
                    .streams
                    .values()
                    .filter(|s| s.retired.is_some())
                    .map(|s| s.stream.clone())
                    .collect(),
                torn_tail: torn,
            });
            Some(scan)
        }
    };

    // The stream directories.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.path().is_dir()
                && let Some(n) = e.file_name().to_str()
            {
                dirs.insert(n.to_string());
            }
        }
    } else if !root.exists() && scan.is_none() && anchor.is_none() {
        return Err(AuditError::Invalid { reason: format!("{}: no audit root here", root.display()) });
    }

    // Registry markers in the streams.
    let mut markers = 0usize;
    for name in &dirs {
        let dir = root.join(name);
        let Some(r) = RegistryRef::read(&dir) else { continue };
        markers += 1;
        match scan.as_ref().and_then(|s| s.keys.as_ref()) {
            None if scan.is_none() => problems.push(prob(
                ProblemKind::RegistryMissing,
                &reg_path,
                None,
                None,
                format!(
                    "stream {name:?} was registered in registry {} but {} is missing: the registry was deleted",
                    hex::encode(r.registry_id),
                    reg_path.display()
                ),
            )),
            None => problems.push(prob(
                ProblemKind::RegistryMissing,
                &reg_path,
                None,
                None,
                format!(
                    "stream {name:?} was registered in registry {} but {} has no valid header record",
                    hex::encode(r.registry_id),
                    reg_path.display()
                ),
            )),
            Some(k) if !r.verifies(k) => problems.push(prob(
                ProblemKind::RegistryMissing,
                &dir.join(crate::registry::REF_FILE),
                None,
                None,
                format!(
                    "stream {name:?} was registered in registry {}, not in the present one {}: the registry was replaced (or the marker altered)",
                    hex::encode(r.registry_id),
                    hex::encode(k.registry_id)
                ),
            )),
            Some(_) => {}
        }
    }
    if scan.is_none() {
        if anchor.is_some_and(|a| a.registry.is_some()) {
            problems.push(prob(
                ProblemKind::RegistryMissing,
                &reg_path,
                None,
                None,
                "the anchor records a stream registry but it is missing: deleted".into(),
            ));
        } else if markers == 0 {
            warnings.push(format!(
                "no stream registry yet ({} missing): deletion of a whole stream cannot be detected; the next writer creates it and registers the {} stream(s) present",
                reg_path.display(),
                dirs.len()
            ));
        }
    }

    // Registered and anchored streams must exist and hold the same log.
    let registered: BTreeMap<String, RegisteredStream> = scan
        .as_ref()
        .map(|s| s.streams.iter().filter(|(_, r)| r.retired.is_none()).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut expected: Vec<(String, [u8; 16], String)> = Vec::new();
    for (name, r) in &registered {
        expected.push((name.clone(), r.log_id, format!("registered in record #{} of the stream registry", r.record)));
    }
    if let Some(a) = anchor {
        for (name, s) in &a.streams {
            if registered.get(name).is_none_or(|r| r.log_id != s.log_id) {
                expected.push((name.clone(), s.log_id, "recorded in the anchor".into()));
            }
        }
    }
    let mut absent: BTreeSet<String> = BTreeSet::new();
    for (name, log_id, why) in &expected {
        let dir = root.join(name);
        let header = if dir.is_dir() { LogHeader::read(&dir).ok().flatten() } else { None };
        let checked = |what: &str| {
            prob(
                ProblemKind::StreamMissing,
                &dir,
                None,
                None,
                format!("stream {name:?} ({why}, log id {}) {what}", hex::encode(log_id)),
            )
        };
        match header {
            None if !dir.exists() => problems.push(checked("is missing: its directory was deleted")),
            None => problems.push(checked("has no log: its directory was emptied (audit.header missing)")),
            Some(h) if h.log_id != *log_id => problems.push(prob(
                ProblemKind::StreamReplaced,
                &dir,
                None,
                None,
                format!(
                    "stream {name:?} ({why}) had log id {} but the directory holds log {}: replaced",
                    hex::encode(log_id),
                    hex::encode(h.log_id)
                ),
            )),
            Some(_) => continue,
        }
        absent.insert(name.clone());
    }

    // Each stream directory.
    let mut streams = Vec::new();
    for name in &dirs {
        if absent.contains(name) {
            continue;
        }
        let dir = root.join(name);
        let header = match LogHeader::read(&dir) {
            Ok(Some(h)) => h,
            Ok(None) => {
                if !expected.iter().any(|(n, _, _)| n == name) {
                    warnings.push(format!("{}: directory without an audit log, ignored", dir.display()));
                }
                continue;
            }
            Err(e) => {
                problems.push(prob(ProblemKind::StreamReplaced, &dir, None, None, format!("stream {name:?}: {e}")));
                continue;
            }
        };
        let reg = registered.get(name).filter(|r| r.log_id == header.log_id);
        if scan.is_some() && reg.is_none() {
            problems.push(prob(
                ProblemKind::StreamUnregistered,
                &dir,
                None,
                None,
                format!(
                    "stream {name:?} (log id {}) is not in the stream registry: created behind the registry's back, or the registry was cut back",
                    hex::encode(header.log_id)
                ),
            ));
        }
        let mut o = opts.clone();
        let mut floors: Vec<(Checkpoint, &str)> = Vec::new();
        if let Some(cp) = reg.and_then(|r| r.last_checkpoint.clone()) {
            floors.push((cp, "the stream registry"));
        }
        if let Some(cp) = anchor
            .and_then(|a| a.streams.get(name))
            .filter(|s| s.log_id == header.log_id)
            .and_then(|s| s.checkpoint.clone())
        {
            floors.push((cp, "the anchor"));
        }
        o.anchors.extend(floors.iter().map(|(c, _)| c.clone()));
        let report = match verify_with(&dir, master, &o) {
            Ok(r) => r,
            Err(e @ (AuditError::WrongKey { .. } | AuditError::MissingKey { .. } | AuditError::Io { .. })) => {
                return Err(e);
            }
            Err(e) => {
                problems.push(prob(ProblemKind::StreamReplaced, &dir, None, None, format!("stream {name:?}: {e}")));
                continue;
            }
        };
        // A checkpoint recorded outside checkpoints.log must still be in it.
        let cps_path = dir.join(CHECKPOINTS_FILE);
        let have = crate::log::load_checkpoints(&cps_path, false)
            .map(|(c, _)| c.iter().map(|c| c.index).max().unwrap_or(0))
            .unwrap_or(u64::MAX);
        if let Some((cp, from)) = floors.iter().filter(|(c, _)| c.index > have).max_by_key(|(c, _)| c.index) {
            problems.push(prob(
                ProblemKind::CheckpointSequence,
                &cps_path,
                Some(cp.seq),
                Some(cp.index),
                format!(
                    "stream {name:?}: {from} recorded checkpoint #{} (seq {}) but checkpoints.log {}: removed or truncated",
                    cp.index,
                    cp.seq,
                    if have == 0 { "has none".to_string() } else { format!("ends at checkpoint #{have}") }
                ),
            ));
        }
        streams.push(StreamReport { stream: name.clone(), dir, registered: reg.is_some(), report });
    }

    // The anchored registry head.
    if let (Some(a), Some(s)) = (anchor.and_then(|a| a.registry.as_ref()), scan.as_ref()) {
        let what = if s.registry_id() != Some(a.registry_id) {
            Some(format!(
                "the anchor records registry {} but the present one is {}: replaced",
                hex::encode(a.registry_id),
                s.registry_id().map(hex::encode).unwrap_or_else(|| "unreadable".into())
            ))
        } else if s.next_index < a.records {
            Some(format!(
                "the registry has {} records but the anchor recorded {}: truncated or rolled back",
                s.next_index, a.records
            ))
        } else if a.records > 0 && s.heads.as_ref().and_then(|h| h.get((a.records - 1) as usize)) != Some(&a.head) {
            Some(format!("registry record #{} differs from the anchored registry head: rewritten", a.records - 1))
        } else {
            None
        };
        if let Some(w) = what {
            problems.push(prob(ProblemKind::RegistryRollback, &reg_path, None, None, w));
        }
    }

    Ok(RootReport { root: root.to_path_buf(), registry: summary, warnings, streams, problems })
}

/// Builds the anchor of an audit root: the registry head and, for every
/// stream, the latest durable signed checkpoint. Refuses (`Err`) when the
/// registry is damaged or a registered stream is missing: verify first.
pub fn build_anchor(root: impl AsRef<Path>, master: &MasterKey) -> Result<Anchor> {
    let root = root.as_ref();
    let reg_path = root.join(REGISTRY_FILE);
    let scan = match scan_file(root, master, false)? {
        None => None,
        Some((_, Err(e))) => {
            return Err(AuditError::Registry {
                path: reg_path,
                reason: format!("record #{} at offset {}: {}", e.index, e.offset, e.reason),
            });
        }
        Some((s, Ok(_))) => Some(s),
    };
    let registry = scan.as_ref().and_then(|s| {
        let k = s.keys.as_ref()?;
        Some(RegistryHead {
            registry_id: k.registry_id,
            suite: k.suite,
            public_key: s.public_key.clone(),
            records: s.next_index,
            head: s.head,
        })
    });
    let mut streams = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.path().is_dir()
                && let Some(n) = e.file_name().to_str()
            {
                names.insert(n.to_string());
            }
        }
    }
    if let Some(s) = &scan {
        for (name, r) in s.streams.iter().filter(|(_, r)| r.retired.is_none()) {
            if LogHeader::read(&root.join(name)).ok().flatten().is_none_or(|h| h.log_id != r.log_id) {
                return Err(AuditError::Registry {
                    path: root.join(name),
                    reason: format!("registered stream {name:?} is missing or replaced: run verify"),
                });
            }
        }
    }
    for name in names {
        let dir = root.join(&name);
        let Some(h) = LogHeader::read(&dir)? else { continue };
        h.authenticate(&dir, master)?;
        let (cps, _) = crate::log::load_checkpoints(&dir.join(CHECKPOINTS_FILE), false)?;
        let mut cp = cps.into_iter().rev().find(|c| c.verify_signature(h.suite, &h.log_id, &h.public_key));
        if let Some(rc) = scan
            .as_ref()
            .and_then(|s| s.active(&name))
            .filter(|r| r.log_id == h.log_id)
            .and_then(|r| r.last_checkpoint.clone())
            && cp.as_ref().is_none_or(|c| c.seq < rc.seq)
        {
            cp = Some(rc);
        }
        streams.insert(
            name,
            AnchoredStream { log_id: h.log_id, suite: h.suite, public_key: h.public_key.clone(), checkpoint: cp },
        );
    }
    let created = Utc::now();
    Ok(Anchor { format: ANCHOR_FORMAT.into(), created, registry, streams })
}

/// Writes the anchor of `root` (see [`build_anchor`]) to `dest` atomically and returns it.
/// `dest` should be outside the data dir, on storage the audited host cannot rewrite.
pub fn anchor(root: impl AsRef<Path>, master: &MasterKey, dest: impl AsRef<Path>) -> Result<Anchor> {
    let a = build_anchor(root, master)?;
    a.write(dest)?;
    Ok(a)
}

/// The streams of the registry of `root` (`None` when there is no registry).
pub fn registered_streams(root: impl AsRef<Path>, master: &MasterKey) -> Result<Option<Vec<RegisteredStream>>> {
    let root = root.as_ref();
    match scan_file(root, master, false)? {
        None => Ok(None),
        Some((_, Err(e))) => Err(AuditError::Registry {
            path: root.join(REGISTRY_FILE),
            reason: format!("record #{} at offset {}: {}", e.index, e.offset, e.reason),
        }),
        Some((s, Ok(_))) => Ok(Some(s.streams.into_values().collect())),
    }
}

/// Records in the registry that an officer retired `stream` (e.g. after it
/// was archived elsewhere, or after its loss was investigated): from then on
/// its absence is not a problem, and a writer may create it anew. The reason
/// is kept in the registry.
pub fn retire_stream(root: impl AsRef<Path>, master: &MasterKey, stream: &str, reason: &str) -> Result<()> {
    let root = root.as_ref();
    check_stream_name(stream)?;
    if !root.join(REGISTRY_FILE).exists() {
        return Err(AuditError::Registry { path: root.join(REGISTRY_FILE), reason: "no stream registry here".into() });
    }
    let mut w = RegistryWriter::open(root, master, CryptoSuite::Standard)?;
    let path = root.join(REGISTRY_FILE);
    w.update(|scan, _| {
        let Some(r) = scan.active(stream) else {
            return Err(AuditError::Registry { path, reason: format!("stream {stream:?} is not registered") });
        };
        let time = Utc::now();
        let time = DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time);
        Ok(vec![RegistryEntry::Retired {
            stream: stream.to_string(),
            log_id: r.log_id,
            time,
            reason: reason.to_string(),
        }])
    })?;
    // The directory may be created anew: its old marker no longer applies.
    let dir = root.join(stream);
    let _ = std::fs::remove_file(dir.join(crate::registry::REF_FILE));
    Ok(())
}
