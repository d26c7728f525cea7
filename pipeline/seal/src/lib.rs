//! Values sealed at rest: per-department data keys, wrapped by a
//! key-encryption key, that seal single column values (text) and whole
//! byte blobs with AES-256-GCM.
//!
//! * A **data key** is 32 random bytes, one per department and version,
//!   kept in its own file `<dir>/<department>.<version>.key` (JSON: the key
//!   wrapped — AES-256-GCM — under the key-encryption key, with the key id as
//!   associated data). Files are created once and never rewritten; a new
//!   version is a new file ([`Keyring::rotate`]), and older versions stay so
//!   that everything they sealed still opens. Rotation never decrypts or
//!   rewrites history.
//! * The **key-encryption key** (KEK) is given by the caller (the hub derives
//!   it from its master key); without it the key files are useless.
//! * A **sealed text value** is `lqe1:<key id>:<base64url(nonce ‖ ciphertext ‖
//!   tag)>` with a random 96-bit nonce; the associated data binds it to its
//!   *context* (the hub uses `<table>.<column>`) and key id, so a value copied
//!   into another column, or its key id edited, does not open.
//! * A **sealed blob** is `LQS1 ‖ len ‖ key id ‖ nonce ‖ ciphertext ‖ tag`, the
//!   same construction for binary values (the embedded bus's batches).
//!
//! Values that do not carry the prefix are returned as they are by
//! [`Keyring::open_text`]: data written before sealing was turned on stays
//! readable.
//!
//! Nothing here formats key bytes; `Debug` of every type holding keys prints
//! `<redacted>`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit, Tag};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Prefix of a sealed text value.
pub const PREFIX: &str = "lqe1:";
/// Magic of a sealed blob.
pub const BLOB_MAGIC: &[u8; 4] = b"LQS1";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What went wrong, naming the key, file or context.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing a key file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A department name that cannot name a key file.
    #[error("department `{0}`: only letters, digits, `_` and `-` may name a data key")]
    BadDepartment(String),
    /// A key file that does not parse or does not unwrap.
    #[error("data key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A sealed value names a key this keyring does not have.
    #[error("data key `{key_id}` is not in {dir} (copied without its keys?)")]
    KeyMissing {
        /// The key id the value names.
        key_id: String,
        /// The key folder.
        dir: String,
    },
    /// The value is not in the sealed format.
    #[error("{context}: not a sealed value: {reason}")]
    Malformed {
        /// Where the value belongs.
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// The tag did not verify.
    #[error(
        "{context}: value sealed under `{key_id}` does not open (altered, moved from another column, or another key-encryption key)"
    )]
    Tampered {
        /// Where the value belongs.
        context: String,
        /// The key id it names.
        key_id: String,
    },
}

/// One data key file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    department: String,
    version: u32,
    /// Unix seconds.
    created_at: u64,
    /// base64url(nonce ‖ wrapped key ‖ tag).
    wrapped: String,
}

/// What [`Keyring::list`] shows of a key (never its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `<department>.<version>`.
    pub key_id: String,
    /// The department whose values it seals.
    pub department: String,
    /// Version (1, 2, …); the highest one seals new values.
    pub version: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// Whether it seals new values.
    pub current: bool,
}

/// A data key ready to seal (cheap to clone).
#[derive(Clone)]
pub struct DataKey {
    id: Arc<str>,
    cipher: Arc<Aes256Gcm>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({}, <redacted>)", self.id)
    }
}

fn aad(context: &str, key_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(context.len() + key_id.len() + 1);
    a.extend_from_slice(context.as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn seal_raw(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let n = aes_gcm::Nonce::<U12>::from(nonce);
    let tag = cipher
        .encrypt_inout_detached(&n, aad, (&mut out[NONCE_LEN..]).into())
        .expect("AES-GCM seals any length the hub writes");
    out.extend_from_slice(tag.as_slice());
    out
}

fn open_raw(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = ct.to_vec();
    let n = aes_gcm::Nonce::<U12>::from(<[u8; NONCE_LEN]>::try_from(nonce).ok()?);
    let t = Tag::try_from(tag).ok()?;
    match cipher.decrypt_inout_detached(&n, aad, (&mut buf[..]).into(), &t) {
        Ok(()) => Some(buf),
        Err(_) => {
            buf.zeroize();
            None
        }
    }
}

impl DataKey {
    /// The key id (`<department>.<version>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for `context` as a text value (`lqe1:…`).
    pub fn seal_text(&self, context: &str, plain: &str) -> String {
        let sealed = seal_raw(&self.cipher, &aad(context, &self.id), plain.as_bytes());
        let mut out = String::with_capacity(PREFIX.len() + self.id.len() + 1 + sealed.len() * 4 / 3 + 4);
        out.push_str(PREFIX);
        out.push_str(&self.id);
        out.push(':');
        B64.encode_string(&sealed, &mut out);
        out
    }

    /// Seals `plain` for `context` as a blob (`LQS1…`).
    pub fn seal_blob(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let sealed = seal_raw(&self.cipher, &aad(context, &self.id), plain);
        let mut out = Vec::with_capacity(4 + 1 + self.id.len() + sealed.len());
        out.extend_from_slice(BLOB_MAGIC);
        out.push(self.id.len() as u8);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&sealed);
        out
    }
}

/// Whether a text value is sealed.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Whether a blob is sealed.
pub fn is_sealed_blob(value: &[u8]) -> bool {
    value.starts_with(BLOB_MAGIC)
}

#[derive(Default)]
struct State {
    /// key id → cipher.
    keys: HashMap<String, DataKey>,
    /// department → (version, key id) of its newest key.
    current: HashMap<String, (u32, String)>,
}

/// The data keys of one key folder (see the crate docs).
pub struct Keyring {
    dir: PathBuf,
    kek: Aes256Gcm,
    state: RwLock<State>,
    /// When the folder was last read (a rotation by another process is
    /// picked up within [`RELOAD_EVERY`]).
    read_at: std::sync::Mutex<std::time::Instant>,
}

/// How often [`Keyring::current`] looks for keys another process created.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("dir", &self.dir).field("keys", &"<redacted>").finish()
    }
}

fn io(path: &Path, source: std::io::Error) -> SealError {
    SealError::Io { path: path.display().to_string(), source }
}

fn check_department(d: &str) -> Result<(), SealError> {
    let ok = !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(SealError::BadDepartment(d.to_string())) }
}

impl Keyring {
    /// The keys in `dir` (created when the first key is), wrapped under
    /// `kek`. Every key file there is read and unwrapped now, so a wrong
    /// key-encryption key is an error here, not at the first value.
    pub fn open(dir: impl Into<PathBuf>, mut kek: [u8; 32]) -> Result<Keyring, SealError> {
        let cipher = Aes256Gcm::new_from_slice(&kek).expect("32-byte key");
        kek.zeroize();
        let ring = Keyring {
            dir: dir.into(),
            kek: cipher,
            state: RwLock::new(State::default()),
            read_at: std::sync::Mutex::new(std::time::Instant::now()),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// The key folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_files(&self) -> Result<Vec<(PathBuf, KeyFile)>, SealError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| io(&self.dir, e))?;
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("key") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let kf: KeyFile = serde_json::from_str(&text)
                .map_err(|e| SealError::KeyFile { path: path.display().to_string(), reason: e.to_string() })?;
            let expected = format!("{}.{}.key", kf.department, kf.version);
            if kf.key_id != format!("{}.{}", kf.department, kf.version)
                || path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str())
            {
                return Err(SealError::KeyFile {
                    path: path.display().to_string(),
                    reason: format!("names key `{}`, expected the file to be {expected}", kf.key_id),
                });
            }
            out.push((path, kf));
        }
        Ok(out)
    }

    fn unwrap_key(&self, path: &Path, kf: &KeyFile) -> Result<DataKey, SealError> {
        let bad = |reason: &str| SealError::KeyFile { path: path.display().to_string(), reason: reason.to_string() };
        let wrapped = B64.decode(kf.wrapped.as_bytes()).map_err(|_| bad("`wrapped` is not base64url"))?;
        let mut key = open_raw(&self.kek, &wrap_aad(&kf.key_id), &wrapped)
            .ok_or_else(|| bad("does not unwrap: another master key, or the file was altered"))?;
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| bad("wrapped key is not 32 bytes"));
        key.zeroize();
        Ok(DataKey { id: Arc::from(kf.key_id.as_str()), cipher: Arc::new(cipher?) })
    }

    /// Reads the key folder again (keys another process created).
    pub fn reload(&self) -> Result<(), SealError> {
        if let Ok(mut t) = self.read_at.lock() {
            *t = std::time::Instant::now();
        }
        let files = self.read_files()?;
        let mut fresh = Vec::new();
        {
            let st = self.state.read().expect("keyring lock");
            for (path, kf) in &files {
                if !st.keys.contains_key(&kf.key_id) {
                    fresh.push((self.unwrap_key(path, kf)?, kf.department.clone(), kf.version));
                }
            }
        }
        let mut st = self.state.write().expect("keyring lock");
        for (key, dept, version) in fresh {
            let id = key.id.to_string();
            st.keys.insert(id.clone(), key);
            let cur = st.current.entry(dept).or_insert((version, id.clone()));
            if version > cur.0 {
                *cur = (version, id);
            }
        }
        Ok(())
    }

    /// The key that seals `department`'s new values, created (version 1)
    /// when the department has none. A key rotated by another process
    /// (`lianqin keys rotate` beside a running hub) is used from at most
    /// [`RELOAD_EVERY`] later.
    pub fn current(&self, department: &str) -> Result<DataKey, SealError> {
        if self.read_at.lock().is_ok_and(|t| t.elapsed() >= RELOAD_EVERY) {
            self.reload()?;
        }
        {
            let st = self.state.read().expect("keyring lock");
            if let Some((_, id)) = st.current.get(department) {
                return Ok(st.keys[id].clone());
            }
        }
        check_department(department)?;
        self.create(department, 1)?;
        let st = self.state.read().expect("keyring lock");
        let (_, id) = st.current.get(department).expect("created or loaded");
        Ok(st.keys[id].clone())
    }

    /// Creates `<department>.<version>.key` unless it exists (another
    /// process may create it at the same moment: the first file wins and
    /// both use it), then reloads.
    fn create(&self, department: &str, version: u32) -> Result<(), SealError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let key_id = format!("{department}.{version}");
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let wrapped = seal_raw(&self.kek, &wrap_aad(&key_id), &key);
        key.zeroize();
        let created_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let kf = KeyFile {
            key_id: key_id.clone(),
            department: department.to_string(),
            version,
            created_at,
            wrapped: B64.encode(&wrapped),
        };
        let text = serde_json::to_string_pretty(&kf).expect("key file serializes");
        let path = self.dir.join(format!("{key_id}.key"));
        let tmp = self.dir.join(format!(".{key_id}.{}.{}.tmp", std::process::id(), rand::random::<u64>()));
        {
            let mut f = private_file(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
        }
        // A hard link creates the name only if it does not exist yet.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&path, e)),
        }
        self.reload()
    }

    /// Starts a new key version for `department`: new values are sealed
    /// with it, older ones keep opening with theirs.
    pub fn rotate(&self, department: &str) -> Result<KeyInfo, SealError> {
        check_department(department)?;
        self.reload()?;
        let next = self.state.read().expect("keyring lock").current.get(department).map_or(1, |(v, _)| v + 1);
        self.create(department, next)?;
        let st = self.state.read().expect("keyring lock");
        let (v, id) = st.current.get(department).cloned().expect("created");
        drop(st);
        Ok(self.list()?.into_iter().find(|k| k.key_id == id && k.version == v).expect("listed"))
    }

    /// Every key in the folder, by department then version.
    pub fn list(&self) -> Result<Vec<KeyInfo>, SealError> {
        self.reload()?;
        let st = self.state.read().expect("keyring lock");
        let mut out: Vec<KeyInfo> = self
            .read_files()?
            .into_iter()
            .map(|(_, kf)| KeyInfo {
                current: st.current.get(&kf.department).is_some_and(|(_, id)| *id == kf.key_id),
                key_id: kf.key_id,
                department: kf.department,
                version: kf.version,
                created_at: kf.created_at,
            })
            .collect();
        out.sort_by(|a, b| (&a.department, a.version).cmp(&(&b.department, b.version)));
        Ok(out)
    }

    fn key(&self, key_id: &str) -> Result<DataKey, SealError> {
        if let Some(k) = self.state.read().expect("keyring lock").keys.get(key_id) {
            return Ok(k.clone());
        }
        self.reload()?;
        self.state
            .read()
            .expect("keyring lock")
            .keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| SealError::KeyMissing { key_id: key_id.to_string(), dir: self.dir.display().to_string() })
    }

    /// Seals `plain` for `context` with `department`'s current key.
    pub fn seal_text(&self, department: &str, context: &str, plain: &str) -> Result<String, SealError> {
        Ok(self.current(department)?.seal_text(context, plain))
    }

    /// The clear text of a value: a sealed value opened (its tag checked
    /// against `context`), any other value as it is.
    pub fn open_text<'a>(&self, context: &str, value: &'a str) -> Result<std::borrow::Cow<'a, str>, SealError> {
        let Some(rest) = value.strip_prefix(PREFIX) else { return Ok(std::borrow::Cow::Borrowed(value)) };
        let malformed = |reason: &str| SealError::Malformed { context: context.to_string(), reason: reason.into() };
        let (key_id, b64) = rest.split_once(':').ok_or_else(|| malformed("no key id"))?;
        let sealed = B64.decode(b64.as_bytes()).map_err(|_| malformed("body is not base64url"))?;
        let key = self.key(key_id)?;
        let plain = open_raw(&key.cipher, &aad(context, key_id), &sealed)
            .ok_or_else(|| SealError::Tampered { context: context.to_string(), key_id: key_id.to_string() })?;
        String::from_utf8(plain).map(std::borrow::Cow::Owned).map_err(|_| malformed("clear text is not UTF-8"))
    }

    /// Seals a blob for `context` with `department`'s current key.
    pub fn seal_blob(&self, department: &str, context: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(self.current(department)?.seal_blob(context, plain))
    }

    /// The clear bytes of a blob: a sealed blob opened, any other as it is.
    pub fn open_blob<'a>(&self, context: &str, value: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, SealError> {
        let Some(rest) = value.strip_prefix(BLOB_MAGIC.as_slice()) else {
            return Ok(std::borrow::Cow::Borrowed(value));
        };
        let malformed = |reason: &str| SealError::Malformed { context: context.to_string(), reason: reason.into() };
        let (&n, rest) = rest.split_first().ok_or_else(|| malformed("cut short"))?;
        if rest.len() < n as usize {
            return Err(malformed("cut short"));
        }
        let (id, sealed) = rest.split_at(n as usize);
        let key_id = std::str::from_utf8(id).map_err(|_| malformed("key id is not UTF-8"))?;
        let key = self.key(key_id)?;
        open_raw(&key.cipher, &aad(context, key_id), sealed)
            .map(std::borrow::Cow::Owned)
            .ok_or_else(|| SealError::Tampered { context: context.to_string(), key_id: key_id.to_string() })
    }
}

fn wrap_aad(key_id: &str) -> Vec<u8> {
    format!("lianqin-seal/v1/data-key\0{key_id}").into_bytes()
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path, kek: u8) -> Keyring {
        Keyring::open(dir.join("keys"), [kek; 32]).unwrap()
    }

    #[test]
    fn seal_open_rotate_and_refuse() {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path(), 7);
        let v1 = r.seal_text("police", "element.id_value", "330502199001011234").unwrap();
        assert!(v1.starts_with("lqe1:police.1:") && !v1.contains("3305021990"), "{v1}");
        assert_eq!(r.open_text("element.id_value", &v1).unwrap(), "330502199001011234");
        // Another column's context, or an edited key id, does not open.
        assert!(matches!(r.open_text("element.phone", &v1), Err(SealError::Tampered { .. })));
        let edited = v1.replace("police.1", "police.2");
        assert!(r.open_text("element.id_value", &edited).is_err());
        // Clear values pass as they are.
        assert_eq!(r.open_text("element.id_value", "plain").unwrap(), "plain");
        // Rotation: new values under .2, old ones still open.
        let k = r.rotate("police").unwrap();
        assert_eq!((k.key_id.as_str(), k.current), ("police.2", true));
        let v2 = r.seal_text("police", "element.id_value", "x").unwrap();
        assert!(v2.starts_with("lqe1:police.2:"));
        assert_eq!(r.open_text("element.id_value", &v1).unwrap(), "330502199001011234");
        // Another process sees the new key; a wrong KEK is refused at open.
        let r2 = ring(d.path(), 7);
        assert_eq!(r2.open_text("element.id_value", &v2).unwrap(), "x");
        let e = Keyring::open(d.path().join("keys"), [8; 32]).unwrap_err().to_string();
        assert!(e.contains("does not unwrap"), "{e}");
        let list = r2.list().unwrap();
        assert_eq!(
            list.iter().map(|k| (k.key_id.as_str(), k.current)).collect::<Vec<_>>(),
            [("police.1", false), ("police.2", true)]
        );
        assert!(r.seal_text("../x", "c", "v").is_err());
    }

    #[test]
    fn blobs_round_trip_and_detect_tampering() {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path(), 1);
        let b = r.seal_blob("_bus", "bus", b"hello 13812345678").unwrap();
        assert!(is_sealed_blob(&b));
        assert_eq!(&*r.open_blob("bus", &b).unwrap(), b"hello 13812345678");
        let mut t = b.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(r.open_blob("bus", &t).is_err());
        assert_eq!(&*r.open_blob("bus", b"plain").unwrap(), b"plain");
    }

    #[test]
    fn key_files_are_created_once() {
        let d = tempfile::tempdir().unwrap();
        let a = ring(d.path(), 3);
        let b = ring(d.path(), 3);
        // Two keyrings creating the same department's first key agree.
        let va = a.seal_text("env", "c", "1").unwrap();
        let vb = b.seal_text("env", "c", "2").unwrap();
        assert_eq!(b.open_text("c", &va).unwrap(), "1");
        assert_eq!(a.open_text("c", &vb).unwrap(), "2");
        assert_eq!(a.list().unwrap().len(), 1);
    }
}
