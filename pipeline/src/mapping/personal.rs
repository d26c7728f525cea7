//! Personal data, classified where it enters (issue 11, item 1).
//!
//! A mapping declares which raw fields are personal, with a semantic label:
//!
//! ```toml
//! [fields]
//! bjrsfzh = { type = "utf8", personal = "citizen_id" }
//! ```
//!
//! Labels: [`PersonalKind`] (`citizen_id`, `phone`, `name`, `address`,
//! `plate`, and `free_text` for text that may *contain* such values). What
//! follows from a declaration:
//!
//! * **Ids are keyed tokens.** `person_token(value)` (a SQL function in every
//!   mapping and query session) is `pt:` + lowercase hex of
//!   HMAC-SHA256(hub secret, the value trimmed, NFKC-normalized and
//!   upper-cased), the same keyed token as the policy's `hash` mask
//!   ([`lianqin_policies::token_value`]). The same person gets the same id in
//!   every department, and without the secret a guessed ID cannot be
//!   confirmed. Mappings build person element ids and `party_element_id`
//!   with it, never from the clear value.
//! * **`attributes` keeps no personal field.** The raw table `raw` of a
//!   mapping has a column `_public_payload`: the record as JSON text with the
//!   declared personal fields removed (at top level by name, or at their
//!   JSON pointer). Mappings select `_public_payload AS attributes`; the
//!   whole record stays in the department's raw table (`payload`, labelled
//!   sensitive). It is computed only when an output query mentions it.
//! * **Free text is scrubbed, not removed.** A `free_text` field (报警内容,
//!   工单内容, 违法事实 …) is what other departments need to read, but people
//!   write IDs, phones and plates into it. Its value — in the mapping's
//!   column of that name *and* in `_public_payload` — is the text with every
//!   citizen ID, mobile, landline and plate masked, and every occurrence of
//!   the record's own personal values (the caller's name from `bjrxm`, …)
//!   masked too ([`lianqin_domain::scrub_personal_text`]). The clear text
//!   stays in the department's raw table only. Mapping versions that wrote
//!   such text before it was labelled are scrubbed on read
//!   ([`crate::legacy`]).
//!
//! ## The hub secret
//!
//! Each hub has its own secret, kept beside its libraries:
//! [`data_dir_key`] resolves, in order, a key installed with [`install_key`]
//! (embedding, deterministic tests); the environment variable
//! `LIANQIN_TOKEN_KEY` (its UTF-8 bytes; one secret for several data dirs);
//! `<data dir>/secrets/token.key` (32 random bytes hex-encoded, created with
//! mode 0600 on first use, so `lianqin demo` and `lianqin run` work out of
//! the box and a data dir keeps its tokens across restarts). Hubs of one
//! process on different data dirs get different keys. The mapping sessions
//! of a hub ([`crate::normalize::Normalizer::new_in`]), its query sessions
//! (the legacy view, the policy's `hash` mask: [`crate::policy`]) and
//! `lianqin token` use that key. Code without a data dir (`lianqin check`,
//! a mapping tried alone) uses [`token_key`]: installed key, environment,
//! then the per-user key `$LIANQIN_HOME/token.key` (default
//! `$HOME/.lianqin/token.key`). The key is never logged or printed;
//! [`TokenKey`]'s `Debug` shows only where it came from. Changing the key
//! changes every token: person elements would no longer merge with those
//! written before.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use serde::Deserialize;
use serde_json::Value;

use super::Mapping;
use crate::PipelineError;

/// Semantic label of a personal field (the `personal = "…"` of a mapping
/// field). The names are the policy semantics (`sem:<label>` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalKind {
    /// Resident identity card number (GB 11643).
    CitizenId,
    /// Telephone number.
    Phone,
    /// A natural person's name.
    Name,
    /// Home or contact address of a person.
    Address,
    /// Vehicle plate number.
    Plate,
    /// Free text that may contain any of the above (kept, scrubbed).
    FreeText,
}

impl PersonalKind {
    /// Every label, as written in mappings and schemas.
    pub const ALL: [PersonalKind; 6] = [
        PersonalKind::CitizenId,
        PersonalKind::Phone,
        PersonalKind::Name,
        PersonalKind::Address,
        PersonalKind::Plate,
        PersonalKind::FreeText,
    ];

    /// The label as written (`citizen_id`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            PersonalKind::CitizenId => "citizen_id",
            PersonalKind::Phone => "phone",
            PersonalKind::Name => "name",
            PersonalKind::Address => "address",
            PersonalKind::Plate => "plate",
            PersonalKind::FreeText => "free_text",
        }
    }

    /// Parses a label; the error lists the valid ones.
    pub fn parse(s: &str) -> Result<PersonalKind, String> {
        PersonalKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!(
                "unknown personal label {s:?} (expected one of {})",
                PersonalKind::ALL.map(PersonalKind::as_str).join(", ")
            )
        })
    }
}

/// Prefix of person tokens.
pub const TOKEN_PREFIX: &str = "pt:";

/// Environment variable holding the hub token secret.
pub const TOKEN_KEY_ENV: &str = "LIANQIN_TOKEN_KEY";

/// Where the token key came from (never the key itself).
#[derive(Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `LIANQIN_TOKEN_KEY`.
    Env,
    /// A key file (data dir or per-user).
    File(PathBuf),
}

/// The hub token secret. `Debug` prints only its origin.
#[derive(Clone)]
pub struct TokenKey {
    key: Arc<Vec<u8>>,
    origin: KeyOrigin,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = match &self.origin {
            KeyOrigin::Env => TOKEN_KEY_ENV.to_string(),
            KeyOrigin::File(p) => p.display().to_string(),
        };
        f.debug_struct("TokenKey").field("origin", &origin).finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key from bytes (tests, embedding).
    pub fn from_bytes(key: &[u8]) -> TokenKey {
        TokenKey { key: Arc::new(key.to_vec()), origin: KeyOrigin::Env }
    }

    /// Where it came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    /// The key bytes, for [`lianqin_policies::MaskFunctions::new`] (so the
    /// policy's `hash` mask and `person_token` agree).
    pub fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// `pt:<hex>` of a value (trimmed, NFKC, upper-cased); `None` for an
    /// empty value.
    pub fn token(&self, value: &str) -> Option<String> {
        let v = normalize(value);
        if v.is_empty() {
            return None;
        }
        Some(format!("{TOKEN_PREFIX}{}", lianqin_policies::token_value(&self.key, &v)))
    }
}

/// The form of a value that is tokenized: trimmed, NFKC (full-width →
/// half-width), upper-case (the `x` of a citizen ID check digit).
pub fn normalize(value: &str) -> String {
    lianqin_domain::normalize_text(value).to_uppercase()
}

/// The per-user key, once loaded.
static USER_KEY: RwLock<Option<TokenKey>> = RwLock::new(None);
static EXPLICIT: RwLock<Option<TokenKey>> = RwLock::new(None);
/// Data-dir keys already read, by key file path.
static DATA_DIR_KEYS: RwLock<BTreeMap<PathBuf, TokenKey>> = RwLock::new(BTreeMap::new());

/// Makes `key` the key of this process, before `LIANQIN_TOKEN_KEY` and key
/// files (embedding, deterministic tests).
pub fn install_key(key: TokenKey) {
    *EXPLICIT.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
}

/// The key file of a data dir: `<data_dir>/secrets/token.key`.
pub fn data_dir_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("token.key")
}

/// The key of the hub on `data_dir` (see the module docs for the order):
/// an installed key, `LIANQIN_TOKEN_KEY`, else `<data_dir>/secrets/token.key`,
/// created (mode 0600) on first use. Read once per process and data dir.
pub fn data_dir_key(data_dir: &Path) -> Result<TokenKey, PipelineError> {
    if let Some(k) = EXPLICIT.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(k);
    }
    if let Some(k) = env_key() {
        return Ok(k);
    }
    let path = data_dir_key_path(data_dir);
    if let Some(k) = DATA_DIR_KEYS.read().unwrap_or_else(|e| e.into_inner()).get(&path) {
        return Ok(k.clone());
    }
    let k = load_or_create(&path)?;
    DATA_DIR_KEYS.write().unwrap_or_else(|e| e.into_inner()).insert(path, k.clone());
    Ok(k)
}

/// Where a session takes its person-token key from: a data dir's key
/// ([`data_dir_key`]) or, without one, the process key ([`token_key`]).
/// Resolved when first needed, so planning never needs the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// [`data_dir_key`] of this folder.
    DataDir(PathBuf),
    /// [`token_key`].
    Process,
}

impl KeyScope {
    /// The key of this scope.
    pub fn key(&self) -> Result<TokenKey, PipelineError> {
        match self {
            KeyScope::DataDir(d) => data_dir_key(d),
            KeyScope::Process => token_key(),
        }
    }
}

fn env_key() -> Option<TokenKey> {
    match std::env::var(TOKEN_KEY_ENV) {
        Ok(k) if !k.is_empty() => Some(TokenKey { key: Arc::new(k.into_bytes()), origin: KeyOrigin::Env }),
        _ => None,
    }
}

/// The per-user key file: `$LIANQIN_HOME/token.key`, default
/// `$HOME/.lianqin/token.key`.
pub fn user_key_path() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("LIANQIN_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h).join("token.key"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".lianqin").join("token.key"))
}

/// The key of code without a data dir (see the module docs): an installed
/// key, `LIANQIN_TOKEN_KEY`, else the per-user key file.
pub fn token_key() -> Result<TokenKey, PipelineError> {
    if let Some(k) = EXPLICIT.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(k);
    }
    if let Some(k) = env_key() {
        return Ok(k);
    }
    if let Some(k) = USER_KEY.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(k);
    }
    let Some(p) = user_key_path() else {
        return Err(PipelineError::Config(format!(
            "no person-token key: set {TOKEN_KEY_ENV}, or LIANQIN_HOME or HOME for a generated key file"
        )));
    };
    let k = load_or_create(&p)?;
    *USER_KEY.write().unwrap_or_else(|e| e.into_inner()) = Some(k.clone());
    Ok(k)
}

/// The SQL function `person_token(value)` keyed from `scope`: `pt:<hex>`
/// of each value, NULL for NULL or blank. The key is resolved on first use
/// (never at planning), so a mapping checks without one; a missing key fails
/// the batch.
pub fn person_token_udf(scope: KeyScope) -> ScalarUDF {
    ScalarUDF::new_from_impl(PersonTokenUdf { scope, signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PersonTokenUdf {
    scope: KeyScope,
    signature: Signature,
}

impl ScalarUDFImpl for PersonTokenUdf {
    fn name(&self) -> &str {
        "person_token"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a] = arrays.as_slice() else {
            return Err(DataFusionError::Plan("person_token takes one argument".into()));
        };
        let c = arrow::compute::cast(a, &DataType::Utf8)?;
        let s = c.as_any().downcast_ref::<StringArray>().ok_or_else(|| DataFusionError::Internal("text".into()))?;
        let mut b = StringBuilder::with_capacity(n, n * 67);
        let key = if s.null_count() < n {
            Some(self.scope.key().map_err(|e| DataFusionError::Execution(format!("person_token: {e}")))?)
        } else {
            None
        };
        for i in 0..n {
            b.append_option(key.as_ref().filter(|_| s.is_valid(i)).and_then(|k| k.token(s.value(i))));
        }
        Ok(ColumnarValue::Array(Arc::new(b.finish())))
    }
}

/// Reads a hex key file, or creates it (32 random bytes, mode 0600, written
/// to a temporary file then linked into place so concurrent creators agree).
fn load_or_create(path: &Path) -> Result<TokenKey, PipelineError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        PipelineError::Config(format!("person-token key {}: {what}: {e}", path.display()))
    };
    let read = |path: &Path| -> Result<Option<TokenKey>, PipelineError> {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                let key = hex::decode(t.trim()).map_err(|e| err("not hex", &e))?;
                if key.len() < 16 {
                    return Err(err("too short", &format!("{} bytes, want at least 16", key.len())));
                }
                Ok(Some(TokenKey { key: Arc::new(key), origin: KeyOrigin::File(path.to_path_buf()) }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("read", &e)),
        }
    };
    if let Some(k) = read(path)? {
        return Ok(k);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| err("create folder", &e))?;
        // A folder made for the key is the owner's only (0700).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| err("chmod 0700", &e))?;
        }
    }
    let key: [u8; 32] = rand::random();
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err("create", &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("chmod 0600", &e))?;
    }
    tmp.write_all(hex::encode(key).as_bytes()).map_err(|e| err("write", &e))?;
    tmp.as_file().sync_all().map_err(|e| err("sync", &e))?;
    // `persist_noclobber`: whoever links first wins; the others read it.
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err("store", &e.error)),
    }
    read(path)?.ok_or_else(|| err("read", &"vanished after creation"))
}

/// Declared personal fields of a mapping: (field name, JSON pointer or
/// `None` for top level, label).
pub type PersonalFields<'a> = Vec<(&'a str, Option<&'a str>, PersonalKind)>;

/// `payload` (JSON text) without the personal fields (free text scrubbed);
/// non-JSON or non-object payloads give `None` (nothing is passed on that
/// cannot be checked).
pub fn strip_personal(payload: &str, personal: &PersonalFields<'_>) -> Option<String> {
    let v: Value = serde_json::from_str(payload).ok()?;
    public_text(&v, personal, &[])
}

/// A free-text value scrubbed: strings masked ([`scrub`]), other JSON
/// values (numbers …) scrubbed as their text.
fn scrub_value(v: &Value, known: &[&str]) -> Value {
    match v {
        Value::String(s) => Value::String(scrub(s, known).into_owned()),
        Value::Null => Value::Null,
        Value::Array(_) | Value::Object(_) | Value::Number(_) | Value::Bool(_) => {
            Value::String(scrub(&v.to_string(), known).into_owned())
        }
    }
}

/// Free text with the personal data in it masked, including the record's
/// own personal values `known` (see the module docs).
pub fn scrub<'a>(text: &'a str, known: &[&str]) -> std::borrow::Cow<'a, str> {
    lianqin_domain::scrub_personal_text(text, known)
}

/// [`strip_personal`] of a record already parsed: its canonical JSON text
/// without the personal fields and with its free-text fields scrubbed
/// (`known`: the record's personal values), `None` when it is not an
/// object. Top-level fields are left out while serializing (no copy of the
/// record).
pub fn public_text(payload: &Value, personal: &PersonalFields<'_>, known: &[&str]) -> Option<String> {
    let obj = payload.as_object()?;
    if personal.iter().any(|(_, path, _)| path.is_some()) {
        let mut v = payload.clone();
        for (name, path, kind) in personal {
            match (path, kind) {
                (None, PersonalKind::FreeText) => {
                    if let Some(o) = v.as_object_mut()
                        && let Some(x) = o.get_mut(*name)
                    {
                        *x = scrub_value(x, known);
                    }
                }
                (Some(p), PersonalKind::FreeText) => {
                    if let Some(x) = v.pointer_mut(p) {
                        *x = scrub_value(x, known);
                    }
                }
                (None, _) => {
                    if let Some(o) = v.as_object_mut() {
                        o.remove(*name);
                    }
                }
                (Some(p), _) => remove_pointer(&mut v, p),
            }
        }
        return Some(v.to_string());
    }
    struct Without<'a>(&'a serde_json::Map<String, Value>, &'a PersonalFields<'a>, &'a [&'a str]);
    impl serde::Serialize for Without<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(None)?;
            for (k, v) in self.0 {
                match self.1.iter().find(|(n, _, _)| n == k) {
                    None => m.serialize_entry(k, v)?,
                    Some((_, _, PersonalKind::FreeText)) => m.serialize_entry(k, &scrub_value(v, self.2))?,
                    Some(_) => {}
                }
            }
            m.end()
        }
    }
    serde_json::to_string(&Without(obj, personal, known)).ok()
}

fn remove_pointer(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() { Some(v) } else { v.pointer_mut(parent) };
    match target {
        Some(Value::Object(o)) => {
            o.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a[i] = Value::Null;
            }
        }
        _ => {}
    }
}

/// Whether some output query of `m` reads `_public_payload`.
pub fn uses_public_payload(m: &Mapping) -> bool {
    m.outputs.iter().any(|o| o.sql.contains("_public_payload"))
}

/// A mapping with personal fields may not pass the whole record
/// (`_payload`) to a library: its outputs read `_public_payload` instead.
/// The error names the mapping file, the output and the personal fields.
pub fn check_outputs(m: &Mapping) -> Result<(), PipelineError> {
    let personal = m.personal_fields();
    if personal.is_empty() {
        return Ok(());
    }
    for (i, o) in m.outputs.iter().enumerate() {
        if o.sql.replace("_public_payload", "").contains("_payload") {
            return Err(PipelineError::Config(format!(
                "mapping {}: output #{} ({}): selects `_payload`, the whole record with personal fields {}; \
                 use `_public_payload` (the record without them)",
                m.origin,
                i + 1,
                o.library,
                personal.iter().map(|(n, _, k)| format!("`{n}` ({})", k.as_str())).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_keyed_and_normalized() {
        let k = TokenKey::from_bytes(b"k1");
        let a = k.token("33050219900101123x").unwrap();
        assert!(a.starts_with("pt:") && a.len() == 3 + 64, "{a}");
        assert_eq!(k.token(" 33050219900101123X ").unwrap(), a);
        assert_ne!(TokenKey::from_bytes(b"k2").token("33050219900101123X").unwrap(), a);
        assert!(!a.contains("330502"));
        assert_eq!(k.token("  "), None);
        assert!(!format!("{k:?}").contains("k1"));
    }

    /// Two hubs in one process on two data dirs: each keys its tokens with
    /// its own secret (kept 0600 in the data dir, the same after a reload).
    #[tokio::test]
    async fn each_data_dir_has_its_own_key() {
        assert!(std::env::var(TOKEN_KEY_ENV).is_err(), "run the tests without {TOKEN_KEY_ENV}");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let token = |dir: PathBuf| async move {
            let ctx = datafusion::prelude::SessionContext::new();
            ctx.register_udf(person_token_udf(KeyScope::DataDir(dir)));
            let b = ctx.sql("SELECT person_token('330502198001011231') AS t").await.unwrap().collect().await.unwrap();
            b[0].column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0).to_string()
        };
        let (ta, tb) = (token(a.path().to_path_buf()).await, token(b.path().to_path_buf()).await);
        assert!(ta.starts_with(TOKEN_PREFIX) && tb.starts_with(TOKEN_PREFIX));
        assert_ne!(ta, tb, "two data dirs, one key");
        assert_eq!(ta, data_dir_key(a.path()).unwrap().token("330502198001011231").unwrap());
        let file = data_dir_key_path(a.path());
        let again = load_or_create(&file).unwrap().token("330502198001011231").unwrap();
        assert_eq!(again, ta, "the key file is what the hub used");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn labels_parse_and_name_the_valid_ones() {
        assert_eq!(PersonalKind::parse("citizen_id").unwrap(), PersonalKind::CitizenId);
        let e = PersonalKind::parse("cid").unwrap_err();
        assert!(e.contains("\"cid\"") && e.contains("citizen_id, phone, name, address, plate, free_text"), "{e}");
    }

    fn mapping(field: &str, sql: &str) -> Result<Mapping, PipelineError> {
        Mapping::parse(
            &format!(
                "name = \"t\"\nversion = \"1\"\n[fields]\n{field}\n[[outputs]]\nlibrary = \"matter\"\nsql = \"{sql}\"\n"
            ),
            "t.toml",
        )
    }

    #[test]
    fn mappings_declare_personal_fields() {
        let m =
            mapping(r#"sfzh = { type = "utf8", personal = "citizen_id" }"#, "SELECT _row, _public_payload FROM raw")
                .unwrap();
        assert_eq!(m.personal_fields(), vec![("sfzh", None, PersonalKind::CitizenId)]);
        let e =
            mapping(r#"sfzh = { type = "utf8", personal = "cid" }"#, "SELECT _row FROM raw").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("field `sfzh`") && e.contains("\"cid\""), "{e}");
        let e = mapping(r#"sfzh = { type = "utf8", personal = "phone" }"#, "SELECT _row, _payload FROM raw")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("output #1") && e.contains("`sfzh` (phone)"), "{e}");
        let e =
            mapping(r#"sfzh = { type = "utf8", persnal = "phone" }"#, "SELECT _row FROM raw").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("field `sfzh`") && e.contains("unknown key `persnal`"), "{e}");
        // Without personal fields `_payload` stays allowed.
        assert!(mapping(r#"x = "utf8""#, "SELECT _row, _payload FROM raw").is_ok());
    }

    #[test]
    fn strips_top_level_and_nested_fields() {
        let p: PersonalFields<'_> =
            vec![("sfzh", None, PersonalKind::CitizenId), ("tel", Some("/caller/tel"), PersonalKind::Phone)];
        let out = strip_personal(r#"{"sfzh":"x","a":1,"caller":{"tel":"13800000000","n":2}}"#, &p).unwrap();
        assert_eq!(out, r#"{"a":1,"caller":{"n":2}}"#);
        assert_eq!(strip_personal("[1]", &p), None);
        // Free text stays, scrubbed, also of the record's own values.
        let p: PersonalFields<'_> = vec![("xm", None, PersonalKind::Name), ("nr", None, PersonalKind::FreeText)];
        let v: Value =
            serde_json::from_str(r#"{"xm":"张三","nr":"张三称浙E12345倾倒，电话13812345678","a":1}"#).unwrap();
        assert_eq!(public_text(&v, &p, &["张三"]).unwrap(), r#"{"a":1,"nr":"**称浙E*****倾倒，电话138****5678"}"#);
        let p: PersonalFields<'_> = vec![("nr", Some("/d/nr"), PersonalKind::FreeText)];
        let v: Value = serde_json::from_str(r#"{"d":{"nr":"浙E12345"}}"#).unwrap();
        assert_eq!(public_text(&v, &p, &[]).unwrap(), r#"{"d":{"nr":"浙E*****"}}"#);
        assert_eq!(strip_personal("not json", &p), None);
    }

    #[test]
    fn key_files_are_created_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secrets").join("token.key");
        let a = load_or_create(&p).unwrap();
        let b = load_or_create(&p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.bytes().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        std::fs::write(&p, "zz").unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("token.key") && e.contains("not hex"), "{e}");
    }
}
