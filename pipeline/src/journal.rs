//! Append-only JSON-lines journals for operator decisions that must never be
//! destroyed (§7.4.3): joint-matter confirmations and splits
//! ([`crate::joint`]), person merges and splits ([`crate::persons`]), both
//! as [`Decided`] entries, second-callback draws and results
//! ([`crate::recheck`]).
//!
//! One entry per line, appended with fsync and never rewritten. An
//! unterminated last line (a crash while appending: its command never said
//! it was done) is ignored when read and cut off before the next append, as a write-ahead
//! log does; any other unreadable line is an error naming the file and line.

use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// One operator decision as a journal keeps it: when, who, what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decided<D> {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who decided (the officer named with `--by`).
    pub by: String,
    /// The decision.
    pub decision: D,
}

impl<D> Decided<D> {
    /// `decision` by `by`, now.
    pub fn now(by: &str, decision: D) -> Self {
        Decided { at: chrono::Utc::now().to_rfc3339(), by: by.trim().to_string(), decision }
    }
}

/// The reason an operator decision keeps, `<by>: <reason>`; both are
/// required.
pub fn operator_reason(by: &str, reason: &str) -> Result<String, PipelineError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(PipelineError::Config("a decision needs --by (who decides) and --reason".into()));
    }
    Ok(format!("{}: {}", by.trim(), reason.trim()))
}

/// Reads every entry of the journal at `path` (none when it does not exist).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, PipelineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PipelineError::Config(format!("{}: {e}", path.display()))),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // An entry is complete with its newline: an unterminated last line
        // was never acknowledged (and the next append cuts it off), even
        // when what was written happens to parse.
        if i + 1 == lines.len() && !complete {
            break;
        }
        match serde_json::from_str::<T>(line) {
            Ok(d) => out.push(d),
            Err(e) => return Err(PipelineError::Config(format!("{}:{}: {e}", path.display(), i + 1))),
        }
    }
    Ok(out)
}

/// Appends `entry` to the journal at `path` durably (fsync), creating the
/// folder and file when needed.
pub fn append<T: Serialize>(path: &Path, entry: &T) -> Result<(), PipelineError> {
    let err = |e: std::io::Error| PipelineError::Config(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if let Ok(bytes) = std::fs::read(path)
        && !bytes.is_empty()
        && !bytes.ends_with(b"\n")
    {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(err)?;
        f.set_len(keep as u64).and_then(|_| f.sync_all()).map_err(err)?;
        tracing::warn!(file = %path.display(), "journal: an incomplete last line was cut off");
    }
    let mut line = serde_json::to_string(entry).map_err(|e| PipelineError::Internal(e.to_string()))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
    f.write_all(line.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored_then_cut_off_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j/log.jsonl");
        assert!(load::<u32>(&p).unwrap().is_empty());
        append(&p, &1u32).unwrap();
        append(&p, &2u32).unwrap();
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"3").unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 2], "torn line ignored");
        append(&p, &4u32).unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 2, 4]);
        std::fs::write(&p, "1\nx\n2\n").unwrap();
        let e = load::<u32>(&p).unwrap_err().to_string();
        assert!(e.contains("log.jsonl:2"), "{e}");
    }
}
