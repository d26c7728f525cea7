//! Users (`users.toml`), principals and password verification.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use serde::Deserialize;

use crate::PolicyError;
use crate::rules::{DEPARTMENTS, is_ident};

/// An authenticated (or looked-up) user, as the policy sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Login name (unique).
    pub name: String,
    /// Display name, if given.
    pub display_name: Option<String>,
    /// Department code (schemas/codes/department.toml); the casbin domain.
    pub department: String,
    /// Roles held in the department (as listed in users.toml; the implicit
    /// role `everyone` is not listed).
    pub roles: Vec<String>,
    /// Police stations (警务站) the user belongs to; used by `@stations`.
    pub stations: Vec<String>,
    /// Division codes (GB/T 2260) the user covers; used by `@divisions`.
    pub divisions: Vec<String>,
    /// Whether an `admin` rule grants this user administration (DDL, DML, SET,
    /// information_schema). Computed by casbin when the principal is built.
    pub admin: bool,
}

/// One `[[user]]` entry of users.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserEntry {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub department: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub stations: Vec<String>,
    #[serde(default)]
    pub divisions: Vec<String>,
    pub password_hash: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<toml::Spanned<UserEntry>>,
}

/// A user with the line their entry starts on.
#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    pub entry: UserEntry,
    pub line: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len())).map(|s| s.matches('\n').count() + 1).unwrap_or(1)
}

fn err(file: &str, line: usize, message: impl Into<String>) -> PolicyError {
    PolicyError::File { file: file.to_string(), line, message: message.into() }
}

/// Parse and validate users.toml. Errors name the line.
pub(crate) fn parse_users(text: &str, file: &str) -> Result<BTreeMap<String, UserRecord>, PolicyError> {
    let parsed: UsersFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        err(file, line, e.message().trim().to_string())
    })?;
    let mut out = BTreeMap::new();
    for sp in parsed.user {
        let line = line_of(text, sp.span().start);
        let u = sp.into_inner();
        if !is_ident(&u.name) {
            return Err(err(file, line, format!("bad user name {:?}", u.name)));
        }
        if !DEPARTMENTS.contains(&u.department.as_str()) {
            return Err(err(file, line, format!("user {:?}: unknown department {:?} (expected one of {DEPARTMENTS:?})", u.name, u.department)));
        }
        if u.roles.is_empty() {
            return Err(err(file, line, format!("user {:?} has no roles", u.name)));
        }
        for r in &u.roles {
            if !is_ident(r) {
                return Err(err(file, line, format!("user {:?}: bad role name {r:?}", u.name)));
            }
        }
        for d in &u.divisions {
            if d.len() != 6 || !d.chars().all(|c| c.is_ascii_digit()) {
                return Err(err(file, line, format!("user {:?}: division {d:?} is not a 6-digit GB/T 2260 code", u.name)));
            }
        }
        for s in &u.stations {
            if !is_ident(s) {
                return Err(err(file, line, format!("user {:?}: bad station code {s:?}", u.name)));
            }
        }
        match PasswordHash::new(&u.password_hash) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => {}
            Ok(h) => {
                return Err(err(file, line, format!("user {:?}: password hash must be argon2id, found {}", u.name, h.algorithm)));
            }
            Err(e) => return Err(err(file, line, format!("user {:?}: bad password hash: {e}", u.name))),
        }
        if out.contains_key(&u.name) {
            return Err(err(file, line, format!("duplicate user {:?}", u.name)));
        }
        out.insert(u.name.clone(), UserRecord { entry: u, line });
    }
    Ok(out)
}

/// Verify a password against a PHC-format argon2id hash. Any error → false.
pub(crate) fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Hash a password with argon2id (default parameters, random salt), in PHC
/// format, for users.toml. Used by `examples/hash_password.rs`.
pub fn hash_password(password: &str) -> Result<String, PolicyError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PolicyError::Enforce(format!("cannot hash password: {e}")))
}

/// A fixed argon2id hash verified against when the user is unknown, so an
/// unknown user costs the same time as a wrong password.
pub(crate) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$isN65VvQTuOMbCiTTNMtXQ$YXR+ENuog2dlzBslHI8va5QK+7uOR+4aLyznJq0cdMs";
