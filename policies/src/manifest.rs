//! The policy manifest: a policy folder is loaded only as a sealed set.
//!
//! `policy.manifest` lists each policy file (`model.conf`, `policy.csv`,
//! `users.toml`) with its SHA-256, and the version of the set. An
//! administrator edits the files, then seals them ([`seal`], `lianqin policy
//! seal --dir D`), which checks that the set loads and writes the manifest
//! atomically (temporary file, then rename). [`load_sealed`] reads each file
//! once, refuses a folder without a manifest or whose files do not match it
//! (naming the file with the expected and actual hashes) and builds the
//! engine from exactly the bytes it checked — so a half-written file, or an
//! edit not yet sealed, is never in force. The built-in files are compiled
//! into the binary and need no manifest to load; `policies/` carries one
//! all the same, so a copy of it is a sealed folder (a unit test keeps it
//! current).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::mask::MaskFunctions;
use crate::{PolicyEngine, PolicyError};

/// Name of the manifest file in a policy folder.
pub const MANIFEST: &str = "policy.manifest";

/// The files a policy set consists of, in load order.
pub const POLICY_FILES: [&str; 3] = ["model.conf", "policy.csv", "users.toml"];

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// Version of the set: the engine version (`sha256:` over the files).
    version: String,
    /// SHA-256 (hex) per file name.
    files: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, PolicyError> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|source| PolicyError::Io { file: p.display().to_string(), source })
}

fn text(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<String, PolicyError> {
    String::from_utf8(bytes).map_err(|_| PolicyError::File {
        file: dir.join(name).display().to_string(),
        line: 0,
        message: "not UTF-8".into(),
    })
}

/// Loads the policy folder `dir` as a sealed set (see the module docs).
pub async fn load_sealed(dir: &Path, masks: MaskFunctions) -> Result<PolicyEngine, PolicyError> {
    let mpath = dir.join(MANIFEST);
    let mtext = match std::fs::read_to_string(&mpath) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PolicyError::Unsealed { dir: dir.display().to_string(), reason: format!("no {MANIFEST}") });
        }
        Err(source) => return Err(PolicyError::Io { file: mpath.display().to_string(), source }),
    };
    let manifest: Manifest = toml::from_str(&mtext).map_err(|e| PolicyError::File {
        file: mpath.display().to_string(),
        line: e.span().map(|s| mtext[..s.start.min(mtext.len())].lines().count().max(1)).unwrap_or(0),
        message: format!("unreadable manifest: {}", e.message()),
    })?;
    let listed: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
    let mut want = POLICY_FILES.to_vec();
    want.sort_unstable();
    if listed != want {
        return Err(PolicyError::Unsealed {
            dir: dir.display().to_string(),
            reason: format!("{MANIFEST} lists {listed:?}, expected exactly {want:?}"),
        });
    }
    let mut texts = Vec::new();
    for name in POLICY_FILES {
        let bytes = read_file(dir, name)?;
        let actual = sha256_hex(&bytes);
        let expected = &manifest.files[name];
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(PolicyError::ManifestMismatch {
                file: dir.join(name).display().to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        texts.push(text(dir, name, bytes)?);
    }
    let engine = PolicyEngine::from_texts(&texts[0], &texts[1], &texts[2], masks).await?;
    if engine.version() != manifest.version {
        return Err(PolicyError::Unsealed {
            dir: dir.display().to_string(),
            reason: format!("{MANIFEST} names version {} but the files are {}", manifest.version, engine.version()),
        });
    }
    Ok(engine)
}

/// Seals the policy folder `dir` after an edit: checks that its files load
/// as a policy (a set that does not load is refused, the old manifest
/// stays), then writes `policy.manifest` with each file's SHA-256 and the
/// set's version, atomically. Returns the version.
pub async fn seal(dir: &Path) -> Result<String, PolicyError> {
    let mut files = BTreeMap::new();
    let mut texts = Vec::new();
    for name in POLICY_FILES {
        let bytes = read_file(dir, name)?;
        files.insert(name.to_string(), sha256_hex(&bytes));
        texts.push(text(dir, name, bytes)?);
    }
    let engine = PolicyEngine::from_texts(&texts[0], &texts[1], &texts[2], MaskFunctions::from_env()).await?;
    let version = engine.version();
    let body = toml::to_string(&Manifest { version: version.clone(), files })
        .map_err(|e| PolicyError::Casbin(format!("{MANIFEST}: {e}")))?;
    let text = format!(
        "# Written by `lianqin policy seal`: the policy files in force and their SHA-256.\n\
         # Edit the files, then seal again; an unsealed edit is never loaded.\n{body}"
    );
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    let io = |p: &Path| {
        let file = p.display().to_string();
        move |source| PolicyError::Io { file, source }
    };
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io(&dir.join(MANIFEST)))?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in POLICY_FILES {
            std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn only_a_sealed_set_loads() {
        let dir = folder();
        let d = dir.path();
        let e = load_sealed(d, MaskFunctions::from_env()).await.unwrap_err();
        assert!(matches!(e, PolicyError::Unsealed { .. }), "{e}");
        assert!(e.to_string().contains("lianqin policy seal"), "{e}");
        let v = seal(d).await.unwrap();
        assert_eq!(load_sealed(d, MaskFunctions::from_env()).await.unwrap().version(), v);

        // A truncated policy.csv (the final lines missing) is refused,
        // although what is left parses.
        let full = std::fs::read_to_string(d.join("policy.csv")).unwrap();
        let cut: String = full.lines().take(full.lines().count() / 2).map(|l| format!("{l}\n")).collect();
        std::fs::write(d.join("policy.csv"), &cut).unwrap();
        let e = load_sealed(d, MaskFunctions::from_env()).await.unwrap_err();
        let PolicyError::ManifestMismatch { file, expected, actual } = &e else { panic!("{e}") };
        assert!(file.ends_with("policy.csv"));
        assert_ne!(expected, actual);
        assert!(e.to_string().contains("policy.csv") && e.to_string().contains(expected.as_str()), "{e}");

        // Sealing a set that does not load is refused; the manifest stays.
        std::fs::write(d.join("policy.csv"), "p, nonsense\n").unwrap();
        let before = std::fs::read_to_string(d.join(MANIFEST)).unwrap();
        assert!(seal(d).await.is_err());
        assert_eq!(std::fs::read_to_string(d.join(MANIFEST)).unwrap(), before);

        // The edit, sealed, loads with a new version.
        std::fs::write(d.join("policy.csv"), &cut).unwrap();
        if PolicyEngine::from_texts(
            &std::fs::read_to_string(d.join("model.conf")).unwrap(),
            &cut,
            &std::fs::read_to_string(d.join("users.toml")).unwrap(),
            MaskFunctions::from_env(),
        )
        .await
        .is_ok()
        {
            let v2 = seal(d).await.unwrap();
            assert_ne!(v2, v);
            assert_eq!(load_sealed(d, MaskFunctions::from_env()).await.unwrap().version(), v2);
        }
    }

    /// `policies/` is sealed too (so `LIANQIN_POLICIES=policies` and copies
    /// of it load): an edit of the built-in files must be sealed with them.
    #[tokio::test]
    async fn the_shipped_folder_is_sealed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let e = load_sealed(root, MaskFunctions::from_env())
            .await
            .unwrap_or_else(|e| panic!("{e}\n(after editing policies/*, run `lianqin policy seal --dir policies`)"));
        assert_eq!(e.version(), PolicyEngine::builtin().await.unwrap().version());
    }

    #[tokio::test]
    async fn a_manifest_listing_other_files_or_garbage_is_refused() {
        let dir = folder();
        let d = dir.path();
        seal(d).await.unwrap();
        let m = std::fs::read_to_string(d.join(MANIFEST)).unwrap();
        let dropped: String = m.lines().filter(|l| !l.contains("users.toml")).map(|l| format!("{l}\n")).collect();
        std::fs::write(d.join(MANIFEST), dropped).unwrap();
        assert!(matches!(load_sealed(d, MaskFunctions::from_env()).await, Err(PolicyError::Unsealed { .. })));
        std::fs::write(d.join(MANIFEST), &m[..m.len() / 2]).unwrap();
        assert!(load_sealed(d, MaskFunctions::from_env()).await.is_err());
    }
}
