//! Record confirmation — 效力互认 (§6.4.3; issue 16 item 2): a department
//! confirms one *version* of a matter — the matter as its newest source
//! record says, named by that record's content hash — with an ed25519
//! signature of its own key; other departments can rely on the confirmed
//! version and check who confirmed it.
//!
//! * Keys: `lianqin confirm keygen --department D --out FILE` makes a
//!   department's signing key (kept by the department, file mode 0600) and
//!   registers its public key in `<data dir>/confirm/keys/<D>.pub` (one
//!   hex key per line; a department may add keys, none is removed).
//! * Confirming: `lianqin confirm record --as USER --key FILE --matter ID`
//!   reads the matter through USER's policy (a matter USER may not read
//!   cannot be confirmed), signs [`message`] and appends the confirmation to
//!   the journal `<data dir>/confirm/confirmations.jsonl` (append-only,
//!   fsync; never rewritten, §7.4.3) and the audit trail.
//! * Reading: the SQL table `matter_confirmation` has every confirmation
//!   with `current` — whether the matter still is the confirmed version (a
//!   newer source record needs a new confirmation). Its rows carry the
//!   matter's department, category, division, station and importance at
//!   confirmation time, so the policy's `matter*` row filters apply.
//! * Checking: `lianqin confirm verify` checks every signature against the
//!   department's registered keys; a changed field, a signature by an
//!   unregistered key or by another department fails, naming the entry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// SQL name of the confirmations (a view adding `current`).
pub const TABLE: &str = "matter_confirmation";
/// The journal's rows as a table (what the view reads; filtered as `matter*`).
pub const LOG_TABLE: &str = "matter_confirmation_log";

/// `<data dir>/confirm/confirmations.jsonl`.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("confirm").join("confirmations.jsonl")
}

/// `<data dir>/confirm/keys/<department>.pub`.
pub fn key_path(data_dir: &Path, department: &str) -> PathBuf {
    data_dir.join("confirm").join("keys").join(format!("{department}.pub"))
}

/// One confirmation (a journal line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The matter.
    pub matter_id: String,
    /// The version confirmed: content hash of the matter's newest source record.
    pub content_hash: String,
    /// The matter's owning department, category, division, station and
    /// importance when confirmed (for the policy's row filters).
    pub matter_department: Option<String>,
    /// See `matter_department`.
    pub category: Option<String>,
    /// See `matter_department`.
    pub division: Option<String>,
    /// See `matter_department`.
    pub station: Option<String>,
    /// See `matter_department`.
    pub important: Option<bool>,
    /// The confirming department.
    pub department: String,
    /// The confirming user.
    pub by: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Optional remark.
    pub note: Option<String>,
    /// The signing public key (hex).
    pub public_key: String,
    /// ed25519 signature of [`message`] (hex).
    pub signature: String,
}

/// The bytes a confirmation signs: every field but the signature, one per
/// line, after a version tag.
pub fn message(c: &Confirmation) -> Vec<u8> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        "lianqin-matter-confirmation-v1".to_string(),
        c.matter_id.clone(),
        c.content_hash.clone(),
        opt(&c.matter_department),
        opt(&c.category),
        opt(&c.division),
        opt(&c.station),
        c.important.map(|b| b.to_string()).unwrap_or_default(),
        c.department.clone(),
        c.by.clone(),
        c.at.clone(),
        opt(&c.note),
        c.public_key.clone(),
    ]
    .iter()
    .map(|f| f.replace('\\', "\\\\").replace('\n', "\\n"))
    .collect::<Vec<_>>()
    .join("\n")
    .into_bytes()
}

fn cfg_err(path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Config(format!("{}: {e}", path.display()))
}

/// Makes a signing key for `department`: the private key (hex) to `out`
/// (mode 0600, never overwritten) and the public key registered in the data
/// dir. Returns the public key (hex).
pub fn keygen(data_dir: &Path, department: &str, out: &Path) -> Result<String, PipelineError> {
    if out.exists() {
        return Err(cfg_err(out, "exists; a signing key is never overwritten"));
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public = hex::encode(key.verifying_key().as_bytes());
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(out).map_err(|e| cfg_err(out, e))?;
        f.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| cfg_err(out, e))?;
    }
    let reg = key_path(data_dir, department);
    std::fs::create_dir_all(reg.parent().expect("keys dir")).map_err(|e| cfg_err(&reg, e))?;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&reg).map_err(|e| cfg_err(&reg, e))?;
        f.write_all(format!("{public}\n").as_bytes()).and_then(|_| f.sync_all()).map_err(|e| cfg_err(&reg, e))?;
    }
    Ok(public)
}

/// Reads a signing key file written by [`keygen`].
pub fn read_key(path: &Path) -> Result<SigningKey, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| cfg_err(path, e))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| cfg_err(path, "not a signing key (64 hex digits)"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// The public keys registered for `department` (hex).
pub fn registered_keys(data_dir: &Path, department: &str) -> Result<Vec<String>, PipelineError> {
    let p = key_path(data_dir, department);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(cfg_err(&p, e)),
    }
}

/// Every confirmation in the journal of `data_dir`.
pub fn load(data_dir: &Path) -> Result<Vec<Confirmation>, PipelineError> {
    crate::journal::load(&journal_path(data_dir))
}

/// Signs and appends a confirmation of `matter` (the row as the confirming
/// user reads it: id, content hash, department, category, division,
/// station, important) by `by` of `department` with `key`.
#[allow(clippy::too_many_arguments)]
pub fn sign_and_append(
    data_dir: &Path,
    matter: MatterVersion,
    department: &str,
    by: &str,
    note: Option<String>,
    key: &SigningKey,
) -> Result<Confirmation, PipelineError> {
    let public = hex::encode(key.verifying_key().as_bytes());
    if !registered_keys(data_dir, department)?.contains(&public) {
        return Err(PipelineError::Config(format!(
            "this signing key is not registered for department `{department}` ({}); \
             make one with `lianqin confirm keygen --department {department}`",
            key_path(data_dir, department).display()
        )));
    }
    let mut c = Confirmation {
        matter_id: matter.matter_id,
        content_hash: matter.content_hash,
        matter_department: matter.department,
        category: matter.category,
        division: matter.division,
        station: matter.station,
        important: matter.important,
        department: department.to_string(),
        by: by.to_string(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        note,
        public_key: public,
        signature: String::new(),
    };
    c.signature = hex::encode(key.sign(&message(&c)).to_bytes());
    crate::journal::append(&journal_path(data_dir), &c)?;
    Ok(c)
}

/// The version of a matter being confirmed, as the confirming user reads it.
#[derive(Debug, Clone, Default)]
pub struct MatterVersion {
    /// Matter id.
    pub matter_id: String,
    /// Content hash of its newest source record.
    pub content_hash: String,
    /// Owning department.
    pub department: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Division.
    pub division: Option<String>,
    /// Station.
    pub station: Option<String>,
    /// Important (重大).
    pub important: Option<bool>,
}

/// Why a confirmation does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The key is not registered for the confirming department.
    UnknownKey,
    /// The signature does not match the entry (a field was changed) or is malformed.
    BadSignature,
}

/// A confirmation that fails: its journal line (from 1), the entry, why.
pub type Failure = (usize, Confirmation, Problem);

/// Checks every confirmation against the registered keys: how many there
/// are and each that fails (none: all verify).
pub fn verify(data_dir: &Path) -> Result<(usize, Vec<Failure>), PipelineError> {
    let all = load(data_dir)?;
    let mut bad = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let line = i + 1;
        if !registered_keys(data_dir, &c.department)?.contains(&c.public_key) {
            bad.push((line, c.clone(), Problem::UnknownKey));
            continue;
        }
        let ok = (|| {
            let pk: [u8; 32] = hex::decode(&c.public_key).ok()?.try_into().ok()?;
            let pk = VerifyingKey::from_bytes(&pk).ok()?;
            let sig: [u8; 64] = hex::decode(&c.signature).ok()?.try_into().ok()?;
            pk.verify(&message(c), &Signature::from_bytes(&sig)).ok()
        })();
        if ok.is_none() {
            bad.push((line, c.clone(), Problem::BadSignature));
        }
    }
    Ok((all.len(), bad))
}

/// [`LOG_TABLE`] as one batch.
pub fn table_batch(entries: &[Confirmation]) -> Result<RecordBatch, PipelineError> {
    type Column = (&'static str, fn(&Confirmation) -> Option<String>);
    let text: [Column; 12] = [
        ("matter_id", |c| Some(c.matter_id.clone())),
        ("content_hash", |c| Some(c.content_hash.clone())),
        ("department", |c| c.matter_department.clone()),
        ("category", |c| c.category.clone()),
        ("division", |c| c.division.clone()),
        ("station", |c| c.station.clone()),
        ("confirmed_by_department", |c| Some(c.department.clone())),
        ("confirmed_by", |c| Some(c.by.clone())),
        ("confirmed_at", |c| Some(c.at.clone())),
        ("note", |c| c.note.clone()),
        ("public_key", |c| Some(c.public_key.clone())),
        ("signature", |c| Some(c.signature.clone())),
    ];
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (name, get) in text {
        fields.push(Field::new(name, DataType::Utf8, true));
        cols.push(Arc::new(entries.iter().map(get).collect::<StringArray>()));
    }
    fields.insert(6, Field::new("important", DataType::Boolean, true));
    cols.insert(6, Arc::new(entries.iter().map(|c| c.important).collect::<BooleanArray>()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| PipelineError::Internal(format!("{TABLE}: {e}")))
}

/// Columns of [`TABLE`] with their sensitivity label (for the policy).
pub fn column_labels() -> Vec<(&'static str, &'static str)> {
    vec![
        ("matter_id", "public"),
        ("content_hash", "internal"),
        ("department", "public"),
        ("category", "public"),
        ("division", "public"),
        ("station", "public"),
        ("important", "public"),
        ("confirmed_by_department", "public"),
        ("confirmed_by", "internal"),
        ("confirmed_at", "public"),
        ("note", "sensitive"),
        ("public_key", "internal"),
        ("signature", "internal"),
        ("current", "public"),
    ]
}

/// The view over [`LOG_TABLE`] and `matter`: every confirmation and whether
/// the matter still is the confirmed version.
pub fn view_sql() -> String {
    format!(
        "CREATE VIEW {TABLE} AS SELECT c.*, \
         COALESCE(c.content_hash = m.content_hash, false) AS current \
         FROM {LOG_TABLE} c LEFT JOIN matter m ON m.matter_id = c.matter_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> MatterVersion {
        MatterVersion {
            matter_id: "m:1".into(),
            content_hash: "h1".into(),
            department: Some("police".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_confirmation_verifies_and_any_change_fails() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key_file = d.join("police.key");
        keygen(d, "police", &key_file).unwrap();
        assert!(keygen(d, "police", &key_file).is_err(), "a key is never overwritten");
        let key = read_key(&key_file).unwrap();
        sign_and_append(d, version(), "police", "wang", Some("ok\nline".into()), &key).unwrap();
        assert_eq!(verify(d).unwrap(), (1, vec![]));
        // Tamper with each field in turn: it no longer verifies.
        let good = std::fs::read_to_string(journal_path(d)).unwrap();
        for (from, to) in [("\"h1\"", "\"h2\""), ("\"wang\"", "\"li\""), ("\"m:1\"", "\"m:2\""), ("ok\\nline", "ok")] {
            std::fs::write(journal_path(d), good.replace(from, to)).unwrap();
            let (_, bad) = verify(d).unwrap();
            assert_eq!(bad.len(), 1, "{from} → {to}");
            assert_eq!(bad[0].2, Problem::BadSignature);
        }
        // Claimed for another department: its key is not registered there.
        std::fs::write(journal_path(d), good.replace("\"department\":\"police\"", "\"department\":\"ecology\""))
            .unwrap();
        assert_eq!(verify(d).unwrap().1[0].2, Problem::UnknownKey);
        std::fs::write(journal_path(d), &good).unwrap();
        // A key another department made cannot sign for police.
        keygen(d, "ecology", &d.join("eco.key")).unwrap();
        let eco = read_key(&d.join("eco.key")).unwrap();
        assert!(sign_and_append(d, version(), "police", "zhao", None, &eco).is_err());
    }
}
