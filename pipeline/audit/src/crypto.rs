//! Cryptographic building blocks: the suite abstraction (hash, AEAD,
//! signature), the master key, key derivation and key wrapping.
//!
//! Nothing in this module ever formats key bytes: every type holding
//! secret material implements `Debug` by hand and prints `<redacted>`.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, Aes256Gcm, AesGcm, KeyInit, Tag};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::AuditError;

/// Name of the environment variable holding the master key (hex or base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "LIANQIN_AUDIT_KEY";

/// SM4-GCM with a 96-bit nonce (RustCrypto `AesGcm` instantiated with the SM4 block cipher).
type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

/// SM2 distinguishing identifier used for checkpoint signatures (the GB/T 32918 default).
const SM2_DISTID: &str = "1234567812345678";

/// Length of an AEAD tag (both AES-GCM and SM4-GCM).
pub(crate) const TAG_LEN: usize = 16;
/// Length of an AEAD nonce.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of every hash / chain value (SHA-256 and SM3 are both 32 bytes).
pub(crate) const HASH_LEN: usize = 32;
/// Length of a checkpoint signature (ed25519 and SM2 r‖s are both 64 bytes).
pub(crate) const SIG_LEN: usize = 64;

/// A 32-byte hash value (chain head, leaf hash).
pub type Hash = [u8; HASH_LEN];

/// The cryptographic suite of a log, chosen at creation and recorded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoSuite {
    /// AES-256-GCM for entries and key wrapping, SHA-256 for the chain and
    /// HMAC-SHA-256 for derivation, ed25519 checkpoint signatures.
    Standard,
    /// GM/T suite: SM4-GCM (128-bit keys) for entries and key wrapping, SM3
    /// for the chain and HMAC-SM3 for derivation, SM2 (with SM3, distinguishing
    /// identifier `1234567812345678`) checkpoint signatures.
    Gm,
}

impl CryptoSuite {
    /// Length in bytes of a data key / key-encryption key for this suite.
    pub(crate) fn key_len(self) -> usize {
        match self {
            CryptoSuite::Standard => 32,
            CryptoSuite::Gm => 16,
        }
    }

    /// Hash of the concatenation of `parts` (SHA-256 or SM3).
    pub(crate) fn hash(self, parts: &[&[u8]]) -> Hash {
        match self {
            CryptoSuite::Standard => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().into()
            }
            CryptoSuite::Gm => {
                use sm3::Digest as _;
                let mut h = sm3::Sm3::new();
                for p in parts {
                    h.update(p);
                }
                let out = h.finalize();
                let mut r = [0u8; HASH_LEN];
                r.copy_from_slice(out.as_slice());
                r
            }
        }
    }

    /// HMAC (RFC 2104) with the suite hash; both SHA-256 and SM3 use 64-byte blocks.
    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Hash {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..HASH_LEN].copy_from_slice(&self.hash(&[key]));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for i in 0..64 {
            ipad[i] ^= k[i];
            opad[i] ^= k[i];
        }
        let mut inner_parts: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        inner_parts.push(&ipad);
        inner_parts.extend_from_slice(parts);
        let inner = self.hash(&inner_parts);
        let out = self.hash(&[&opad, &inner]);
        k.zeroize();
        ipad.zeroize();
        opad.zeroize();
        out
    }

    /// RFC 6962-style leaf hash of a frame body: `H(0x00 ‖ body)`.
    pub(crate) fn leaf_hash(self, body: &[u8]) -> Hash {
        self.hash(&[&[0x00], body])
    }

    /// Chain step: `h_n = H(0x01 ‖ h_{n-1} ‖ leaf_n)`.
    pub(crate) fn chain(self, prev: &Hash, leaf: &Hash) -> Hash {
        self.hash(&[&[0x01], prev, leaf])
    }

    /// The chain value before the first entry (`h_0`) of the log `log_id`.
    pub(crate) fn genesis(self, log_id: &[u8; 16]) -> Hash {
        self.hash(&[b"lianqin-audit/v1/genesis", log_id])
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoSuite::Standard => f.write_str("standard (AES-256-GCM, SHA-256, ed25519)"),
            CryptoSuite::Gm => f.write_str("gm (SM4-GCM, SM3, SM2)"),
        }
    }
}

/// The 32-byte master key. Data keys are wrapped under a key derived from it
/// and the checkpoint signing key pair is derived from it.
///
/// `Debug` never prints the key; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl MasterKey {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Generates a fresh random master key (for tests and for provisioning).
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        MasterKey(b)
    }

    /// Parses a key given as 64 hex digits or as base64 (standard alphabet,
    /// padded or not) of exactly 32 bytes. Surrounding whitespace is ignored.
    ///
    /// The error never contains the input text.
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AuditError::MissingKey { source_name: "empty key text".into() });
        }
        let mut out = [0u8; 32];
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) && hex::decode_to_slice(t, &mut out).is_ok() {
            return Ok(MasterKey(out));
        }
        let engines = [
            base64::engine::general_purpose::STANDARD.decode(t),
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(t),
        ];
        for mut v in engines.into_iter().flatten() {
            if v.len() == 32 {
                out.copy_from_slice(&v);
                v.zeroize();
                return Ok(MasterKey(out));
            }
            v.zeroize();
        }
        Err(AuditError::BadKeyFormat {
            reason: format!("expected 64 hex digits or base64 of 32 bytes, got {} characters", t.len()),
        })
    }

    /// Reads the key from the environment variable [`MASTER_KEY_ENV`] (`LIANQIN_AUDIT_KEY`).
    /// Returns [`AuditError::MissingKey`] when it is unset or empty.
    pub fn from_env() -> Result<Self, AuditError> {
        Self::from_env_var(MASTER_KEY_ENV)
    }

    /// Reads the key from the named environment variable.
    pub fn from_env_var(name: &str) -> Result<Self, AuditError> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Err(AuditError::MissingKey { source_name: format!("environment variable {name}") }),
        }
    }

    /// Reads the key from a file containing either 32 raw bytes or the hex /
    /// base64 text form. A missing file gives [`AuditError::MissingKey`].
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let mut data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuditError::MissingKey { source_name: format!("key file {}", path.display()) });
            }
            Err(e) => return Err(AuditError::io(path, "reading master key file", e)),
        };
        let r = if data.len() == 32 {
            let mut b = [0u8; 32];
            b.copy_from_slice(&data);
            Ok(MasterKey(b))
        } else {
            match std::str::from_utf8(&data) {
                Ok(s) => Self::parse(s),
                Err(_) => Err(AuditError::BadKeyFormat {
                    reason: format!("key file {} is neither 32 raw bytes nor text", path.display()),
                }),
            }
        };
        data.zeroize();
        r
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A 32-byte key for another purpose (`label`), derived with
    /// HMAC-SHA-256 over `lianqin/v1/subkey/<label>`: distinct labels give
    /// independent keys, and none equals a key the audit log derives.
    pub fn derive_subkey(&self, label: &str) -> [u8; 32] {
        CryptoSuite::Standard.hmac(&self.0, &[b"lianqin/v1/subkey/", label.as_bytes()])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// An AEAD instance for one key (a data key or the key-encryption key).
pub(crate) enum Cipher {
    Aes(Box<Aes256Gcm>),
    Sm4(Box<Sm4Gcm>),
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    pub(crate) fn new(suite: CryptoSuite, key: &[u8]) -> Option<Cipher> {
        match suite {
            CryptoSuite::Standard => Aes256Gcm::new_from_slice(key).ok().map(|c| Cipher::Aes(Box::new(c))),
            CryptoSuite::Gm => Sm4Gcm::new_from_slice(key).ok().map(|c| Cipher::Sm4(Box::new(c))),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(crate) fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        let n = aes_gcm::Nonce::<U12>::from(*nonce);
        let tag = match self {
            Cipher::Aes(c) => c.encrypt_inout_detached(&n, aad, buf.into()).ok()?,
            Cipher::Sm4(c) => c.encrypt_inout_detached(&n, aad, buf.into()).ok()?,
        };
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_slice());
        Some(t)
    }

    /// Decrypts `buf` in place; `false` when the tag does not verify.
    pub(crate) fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let n = aes_gcm::Nonce::<U12>::from(*nonce);
        let Ok(t) = Tag::try_from(tag) else { return false };
        match self {
            Cipher::Aes(c) => c.decrypt_inout_detached(&n, aad, buf.into(), &t).is_ok(),
            Cipher::Sm4(c) => c.decrypt_inout_detached(&n, aad, buf.into(), &t).is_ok(),
        }
    }
}

/// Checkpoint signing key (secret), derived from the master key.
pub(crate) enum SignKey {
    Ed(Box<ed25519_dalek::SigningKey>),
    Sm2(Box<sm2::dsa::SigningKey>),
}

impl fmt::Debug for SignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignKey(<redacted>)")
    }
}

impl SignKey {
    /// Derives the signing key deterministically from the master key and log id.
    pub(crate) fn derive(suite: CryptoSuite, master: &MasterKey, log_id: &[u8; 16]) -> Option<SignKey> {
        Self::derive_labeled(suite, master, "lianqin-audit/v1/sign", log_id)
    }

    /// Derives a signing key for another purpose (`label` gives domain
    /// separation; the log key uses `lianqin-audit/v1/sign`).
    pub(crate) fn derive_labeled(
        suite: CryptoSuite,
        master: &MasterKey,
        label: &str,
        id: &[u8; 16],
    ) -> Option<SignKey> {
        let ed_label = format!("{label}-ed25519");
        let sm2_label = format!("{label}-sm2");
        let log_id = id;
        match suite {
            CryptoSuite::Standard => {
                let mut seed = suite.hmac(master.bytes(), &[ed_label.as_bytes(), log_id]);
                let k = ed25519_dalek::SigningKey::from_bytes(&seed);
                seed.zeroize();
                Some(SignKey::Ed(Box::new(k)))
            }
            CryptoSuite::Gm => {
                // Rejection sampling: retry with a counter until the scalar is in [1, n-1].
                for ctr in 0u32..64 {
                    let mut seed = suite.hmac(master.bytes(), &[sm2_label.as_bytes(), log_id, &ctr.to_be_bytes()]);
                    let k = sm2::dsa::SigningKey::from_slice(SM2_DISTID, &seed);
                    seed.zeroize();
                    if let Ok(k) = k {
                        return Some(SignKey::Sm2(Box::new(k)));
                    }
                }
                None
            }
        }
    }

    pub(crate) fn public(&self) -> Vec<u8> {
        match self {
            SignKey::Ed(k) => k.verifying_key().to_bytes().to_vec(),
            SignKey::Sm2(k) => k.verifying_key().to_sec1_bytes().to_vec(),
        }
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; SIG_LEN] {
        match self {
            SignKey::Ed(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(msg).to_bytes()
            }
            SignKey::Sm2(k) => {
                use sm2::dsa::signature::Signer as _;
                let s: sm2::dsa::Signature = k.sign(msg);
                let b = s.to_bytes();
                let mut out = [0u8; SIG_LEN];
                out.copy_from_slice(b.as_slice());
                out
            }
        }
    }
}

/// Verifies a checkpoint signature with a public key given as bytes
/// (32-byte ed25519 key, or SEC1-encoded SM2 point).
pub(crate) fn verify_signature(suite: CryptoSuite, public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    match suite {
        CryptoSuite::Standard => {
            let Ok(pk) = <[u8; 32]>::try_from(public) else { return false };
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else { return false };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
            vk.verify_strict(msg, &sig).is_ok()
        }
        CryptoSuite::Gm => {
            use sm2::dsa::signature::Verifier as _;
            let Ok(vk) = sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DISTID, public) else { return false };
            let Ok(sig) = sm2::dsa::Signature::from_slice(sig) else { return false };
            vk.verify(msg, &sig).is_ok()
        }
    }
}

/// Per-log secrets derived from the master key.
pub(crate) struct Keyring {
    pub(crate) suite: CryptoSuite,
    pub(crate) log_id: [u8; 16],
    /// Key-encryption key for wrapping data keys.
    pub(crate) kek: Cipher,
    /// Key used for the header MAC.
    pub(crate) mac_key: Hash,
    /// Key check value stored in the header to recognise the right master key.
    pub(crate) key_check: Hash,
    pub(crate) sign: SignKey,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.mac_key.zeroize();
    }
}

impl Keyring {
    pub(crate) fn derive(suite: CryptoSuite, master: &MasterKey, log_id: [u8; 16]) -> Result<Keyring, AuditError> {
        let mut kek_bytes = suite.hmac(master.bytes(), &[b"lianqin-audit/v1/kek", &log_id]);
        let kek = Cipher::new(suite, &kek_bytes[..suite.key_len()]);
        kek_bytes.zeroize();
        let kek = kek.ok_or_else(|| AuditError::Crypto { what: "cannot build key-encryption key".into() })?;
        let mac_key = suite.hmac(master.bytes(), &[b"lianqin-audit/v1/header-mac", &log_id]);
        let key_check = suite.hmac(master.bytes(), &[b"lianqin-audit/v1/key-check", &log_id]);
        let sign = SignKey::derive(suite, master, &log_id)
            .ok_or_else(|| AuditError::Crypto { what: "cannot derive signing key".into() })?;
        Ok(Keyring { suite, log_id, kek, mac_key, key_check, sign })
    }

    /// Wraps a data key: returns `nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn wrap(&self, key_id: u32, key: &[u8]) -> Result<Vec<u8>, AuditError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let aad = wrap_aad(&self.log_id, key_id);
        let mut buf = key.to_vec();
        let tag = self
            .kek
            .seal(&nonce, &aad, &mut buf)
            .ok_or_else(|| AuditError::Crypto { what: "key wrap failed".into() })?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Unwraps a data key and builds its cipher; `None` when the wrap does not authenticate.
    pub(crate) fn unwrap(&self, key_id: u32, wrapped: &[u8]) -> Option<(Cipher, Vec<u8>)> {
        let kl = self.suite.key_len();
        if wrapped.len() != NONCE_LEN + kl + TAG_LEN {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = wrapped[NONCE_LEN..NONCE_LEN + kl].to_vec();
        let tag = &wrapped[NONCE_LEN + kl..];
        let aad = wrap_aad(&self.log_id, key_id);
        if !self.kek.open(&nonce, &aad, &mut buf, tag) {
            buf.zeroize();
            return None;
        }
        let c = Cipher::new(self.suite, &buf)?;
        Some((c, buf))
    }
}

fn wrap_aad(log_id: &[u8; 16], key_id: u32) -> [u8; 28] {
    let mut aad = [0u8; 28];
    aad[..8].copy_from_slice(b"LQ-DKEY1");
    aad[8..24].copy_from_slice(log_id);
    aad[24..].copy_from_slice(&key_id.to_be_bytes());
    aad
}

/// Constant-time equality for secrets of equal length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm3_abc_vector() {
        let h = CryptoSuite::Gm.hash(&[b"abc"]);
        assert_eq!(hex::encode(h), "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
    }

    #[test]
    fn hmac_sha256_rfc4231_case2() {
        let h = CryptoSuite::Standard.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(h), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn master_key_parse_forms() {
        let raw = [7u8; 32];
        let hx = hex::encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(MasterKey::parse(&hx).map(|k| *k.bytes()).ok(), Some(raw));
        assert_eq!(MasterKey::parse(&format!(" {b64}\n")).map(|k| *k.bytes()).ok(), Some(raw));
        assert!(matches!(MasterKey::parse("abcd"), Err(AuditError::BadKeyFormat { .. })));
        assert!(matches!(MasterKey::parse(""), Err(AuditError::MissingKey { .. })));
        assert_eq!(format!("{:?}", MasterKey::from_bytes(raw)), "MasterKey(<redacted>)");
    }

    #[test]
    fn sign_verify_both_suites() {
        for suite in [CryptoSuite::Standard, CryptoSuite::Gm] {
            let mk = MasterKey::generate();
            let k = SignKey::derive(suite, &mk, &[1; 16]).expect("derive");
            let sig = k.sign(b"hello");
            assert!(verify_signature(suite, &k.public(), b"hello", &sig));
            assert!(!verify_signature(suite, &k.public(), b"hellp", &sig));
        }
    }

    #[test]
    fn wrap_unwrap() {
        for suite in [CryptoSuite::Standard, CryptoSuite::Gm] {
            let kr = Keyring::derive(suite, &MasterKey::generate(), [3; 16]).expect("kr");
            let key = vec![9u8; suite.key_len()];
            let w = kr.wrap(5, &key).expect("wrap");
            assert!(kr.unwrap(5, &w).is_some());
            assert!(kr.unwrap(6, &w).is_none());
            let other = Keyring::derive(suite, &MasterKey::generate(), [3; 16]).expect("kr");
            assert!(other.unwrap(5, &w).is_none());
        }
    }
}
