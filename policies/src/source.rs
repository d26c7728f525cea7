//! Where the policy comes from: the one place that reads `$LIANQIN_POLICIES`.
//!
//! Every process — `lianqin sql`/`export`/`audit`, the hub's flows, the
//! Postgres wire server — loads its policy through [`PolicySource`] (or
//! [`load_configured`]). The wire server also watches the folder for edits
//! with [`PolicySource::files_hash`].

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{PolicyEngine, PolicyError};

/// The environment variable naming a policy folder (`model.conf`,
/// `policy.csv`, `users.toml`, sealed by `policy.manifest`); unset: the
/// built-in files.
pub const POLICIES_ENV: &str = "LIANQIN_POLICIES";

/// Where the policy files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The starter files compiled into this crate (never change).
    Builtin,
    /// A folder holding `model.conf`, `policy.csv`, `users.toml` and the
    /// `policy.manifest` that seals them.
    Dir(PathBuf),
}

impl PolicySource {
    /// `$LIANQIN_POLICIES` when set, else the built-in files.
    pub fn from_env() -> PolicySource {
        match std::env::var_os(POLICIES_ENV) {
            Some(dir) => PolicySource::Dir(PathBuf::from(dir)),
            None => PolicySource::Builtin,
        }
    }

    /// Loads the policy. A folder must be a sealed set: without
    /// `policy.manifest`, or with a file that does not match it (truncated,
    /// half-written, edited without `lianqin policy seal`), it is refused
    /// and nothing of it is used.
    pub async fn load(&self) -> Result<PolicyEngine, PolicyError> {
        match self {
            PolicySource::Builtin => PolicyEngine::builtin().await,
            PolicySource::Dir(dir) => PolicyEngine::load(dir).await,
        }
    }

    /// The folder, when the policy comes from one (only a folder can change).
    pub fn dir(&self) -> Option<&Path> {
        match self {
            PolicySource::Builtin => None,
            PolicySource::Dir(d) => Some(d),
        }
    }

    /// SHA-256 over the names and contents of the files in the folder (""
    /// for an unreadable folder), to notice edits cheaply; `None` for the
    /// built-in files.
    pub fn files_hash(&self) -> Option<String> {
        self.dir().map(files_hash)
    }
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Builtin => f.write_str("built-in policies"),
            PolicySource::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

/// Loads the configured policy: `$LIANQIN_POLICIES` or the built-in files
/// (`PolicySource::from_env().load()`).
pub async fn load_configured() -> Result<PolicyEngine, PolicyError> {
    PolicySource::from_env().load().await
}

fn files_hash(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default());
        h.update([0]);
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_folder_loads_and_its_edits_change_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in ["model.conf", "policy.csv", "users.toml"] {
            std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
        }
        let src = PolicySource::Dir(dir.path().to_path_buf());
        // Not sealed yet: refused.
        assert!(matches!(src.load().await, Err(PolicyError::Unsealed { .. })));
        crate::seal(dir.path()).await.unwrap();
        let builtin = PolicySource::Builtin.load().await.unwrap();
        assert_eq!(src.load().await.unwrap().version(), builtin.version());
        assert_eq!(PolicySource::Builtin.files_hash(), None);
        let before = src.files_hash().unwrap();
        assert_eq!(src.files_hash().unwrap(), before);
        std::fs::write(dir.path().join("policy.csv"), "not a policy\n").unwrap();
        assert_ne!(src.files_hash().unwrap(), before);
        assert!(src.load().await.is_err());
        let missing = PolicySource::Dir(dir.path().join("nope"));
        assert!(matches!(missing.load().await, Err(PolicyError::Unsealed { .. } | PolicyError::Io { .. })));
    }
}
