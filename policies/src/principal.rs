//! Users (`users.toml`), principals and password verification.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use serde::Deserialize;

use crate::PolicyError;
use crate::codes::{departments, is_department};
use crate::rules::is_ident;

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
    /// Optional SCRAM-SHA-256 verifier for Postgres wire logins (see
    /// [`ScramVerifier`]).
    #[serde(default)]
    pub scram: Option<String>,
    /// OS accounts trusted to act as this user on the hub's machine
    /// without the password (`lianqin sql/export --as`); each such login
    /// is audited as a trusted local operator. Empty: the password is
    /// needed (unless the OS account has the user's name).
    #[serde(default)]
    pub local_operators: Vec<String>,
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
        if !is_department(&u.department) {
            return Err(err(
                file,
                line,
                format!(
                    "user {:?}: unknown department {:?} (expected one of {:?})",
                    u.name,
                    u.department,
                    departments()
                ),
            ));
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
                return Err(err(
                    file,
                    line,
                    format!("user {:?}: division {d:?} is not a 6-digit GB/T 2260 code", u.name),
                ));
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
                return Err(err(
                    file,
                    line,
                    format!("user {:?}: password hash must be argon2id, found {}", u.name, h.algorithm),
                ));
            }
            Err(e) => return Err(err(file, line, format!("user {:?}: bad password hash: {e}", u.name))),
        }
        if let Some(v) = &u.scram
            && let Err(e) = ScramVerifier::parse(v)
        {
            return Err(err(file, line, format!("user {:?}: bad scram verifier: {e}", u.name)));
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

/// Minimum PBKDF2 iteration count of a SCRAM verifier (RFC 7677).
pub const SCRAM_MIN_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-256 verifier for Postgres wire logins, stored in users.toml as
/// `scram = "SCRAM-SHA-256$<iterations>$<salt hex>$<salted password hex>"`.
///
/// Argon2id hashes cannot answer a SCRAM exchange, so users who log in over
/// the Postgres protocol need this second verifier. The wire library
/// (pgwire 0.41) verifies client proofs from the *salted password*
/// (`Hi(password, salt, i)`, RFC 5802) rather than from PostgreSQL's
/// StoredKey/ServerKey pair; the salted password is not the password, but it
/// is enough to log in over SCRAM, so users.toml must stay readable only by
/// the hub's service account.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2-HMAC-SHA256 iteration count.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// `Hi(password, salt, iterations)`.
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the salted password.
        f.debug_struct("ScramVerifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Parses the users.toml form.
    pub fn parse(text: &str) -> Result<ScramVerifier, String> {
        let parts: Vec<&str> = text.split('$').collect();
        let [scheme, iters, salt, salted] = parts.as_slice() else {
            return Err("expected SCRAM-SHA-256$<iterations>$<salt hex>$<salted password hex>".into());
        };
        if *scheme != "SCRAM-SHA-256" {
            return Err(format!("scheme must be SCRAM-SHA-256, found {scheme:?}"));
        }
        let iterations: u32 = iters.parse().map_err(|_| format!("bad iteration count {iters:?}"))?;
        if iterations < SCRAM_MIN_ITERATIONS {
            return Err(format!("iteration count {iterations} is below {SCRAM_MIN_ITERATIONS}"));
        }
        let salt = hex::decode(salt).map_err(|_| "salt is not hex".to_string())?;
        let salted_password = hex::decode(salted).map_err(|_| "salted password is not hex".to_string())?;
        if salt.len() < 8 || salted_password.len() != 32 {
            return Err("salt must be at least 8 bytes and the salted password 32 bytes".into());
        }
        Ok(ScramVerifier { iterations, salt, salted_password })
    }

    /// Derives a verifier for `password` with a fresh random salt.
    pub fn generate(password: &str, iterations: u32) -> ScramVerifier {
        use password_hash::rand_core::{OsRng, RngCore};
        let mut salt = vec![0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salted_password = scram_hi(password.as_bytes(), &salt, iterations.max(SCRAM_MIN_ITERATIONS));
        ScramVerifier { iterations: iterations.max(SCRAM_MIN_ITERATIONS), salt, salted_password }
    }

    /// The users.toml form.
    pub fn encode(&self) -> String {
        format!("SCRAM-SHA-256${}${}${}", self.iterations, hex::encode(&self.salt), hex::encode(&self.salted_password))
    }
}

/// `Hi()` of RFC 5802 (PBKDF2-HMAC-SHA256, one block). Passwords are used as
/// given (no SASLprep): identical for ASCII passwords.
fn scram_hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    type H = Hmac<sha2::Sha256>;
    let mac = |data: &[&[u8]]| {
        let mut m = <H as Mac>::new_from_slice(password).expect("HMAC takes any key length");
        for d in data {
            m.update(d);
        }
        m.finalize().into_bytes()
    };
    let mut u = mac(&[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = mac(&[&u]);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out.to_vec()
}

#[cfg(test)]
mod scram_tests {
    use super::*;

    #[test]
    fn hi_matches_rfc7677_example() {
        // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ== (i=4096).
        let salt = [0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81];
        let sp = scram_hi(b"pencil", &salt, 4096);
        assert_eq!(hex::encode(sp), "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d");
        let v = ScramVerifier::generate("x-demo", 4096);
        assert_eq!(ScramVerifier::parse(&v.encode()).unwrap(), v);
    }
}
