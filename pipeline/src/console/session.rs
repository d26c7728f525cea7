//! Console sessions: a random 256-bit id in an `HttpOnly`, `SameSite=Strict`
//! (and, unless switched off for plain-HTTP deployments behind a proxy,
//! `Secure`) cookie, a per-session CSRF token that every form carries, idle
//! and absolute expiry.
//!
//! Sessions live in memory: a restart logs everyone out. A cookie this
//! process did not issue (forged, stale, from another hub) is unknown and
//! gets nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Name of the session cookie.
pub const COOKIE: &str = "lianqin_session";
/// A session unused this long is ended.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session is ended this long after login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// Login name.
    pub user: String,
    /// The token every POST of this session must carry (`_csrf`).
    pub csrf: String,
    /// Short id for audit entries (`web-<first 12 hex of the id's hash>`):
    /// the cookie value itself is never written anywhere.
    pub audit_id: String,
    created: Instant,
    last: Instant,
}

/// The sessions of one console.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, WebSession>>,
}

fn random_hex() -> String {
    let b: [u8; 32] = rand::random();
    hex::encode(b)
}

impl Sessions {
    /// Starts a session for `user`; returns the cookie value and the session.
    pub fn start(&self, user: &str) -> (String, WebSession) {
        use sha2::{Digest, Sha256};
        let id = random_hex();
        let audit_id = format!("web-{}", &hex::encode(Sha256::digest(id.as_bytes()))[..12]);
        let now = Instant::now();
        let s = WebSession { user: user.to_string(), csrf: random_hex(), audit_id, created: now, last: now };
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| s.last.elapsed() < IDLE && s.created.elapsed() < ABSOLUTE);
        m.insert(id.clone(), s.clone());
        (id, s)
    }

    /// The live session of cookie value `id` (touching it), if any.
    pub fn get(&self, id: &str) -> Option<WebSession> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let alive = m.get(id).is_some_and(|s| s.last.elapsed() < IDLE && s.created.elapsed() < ABSOLUTE);
        if !alive {
            m.remove(id);
            return None;
        }
        let s = m.get_mut(id)?;
        s.last = Instant::now();
        Some(s.clone())
    }

    /// Live sessions now.
    pub fn live(&self) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| s.last.elapsed() < IDLE && s.created.elapsed() < ABSOLUTE);
        m.len()
    }

    /// Ends the session of cookie value `id`.
    pub fn end(&self, id: &str) -> Option<WebSession> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={}", ABSOLUTE.as_secs())
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age=0")
}

/// Compares two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_and_unknown_cookies_get_nothing() {
        let s = Sessions::default();
        let (a, sa) = s.start("xu.ops");
        let (b, _) = s.start("xu.ops");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.get(&a).unwrap().user, "xu.ops");
        assert!(s.get("0".repeat(64).as_str()).is_none());
        assert!(!sa.audit_id.contains(&a[..12]));
        s.end(&a);
        assert!(s.get(&a).is_none(), "ended");
        assert!(s.get(&b).is_some());
        assert_eq!(cookie_value("x=1; lianqin_session=abc; y=2", COOKIE), Some("abc"));
        assert_eq!(cookie_value("lianqin_sessionx=abc", COOKIE), None);
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("abc", "ab"));
        assert!(set_cookie("id", true).contains("HttpOnly; SameSite=Strict; Secure"));
    }
}
