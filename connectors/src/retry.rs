//! Retries with exponential backoff and full jitter.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// How a connector retries transient failures (5xx, 429, timeouts, refused
/// connections).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request before the pass fails (default 8).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff in milliseconds (default 100).
    #[serde(default = "default_base")]
    pub base_ms: u64,
    /// Backoff cap in milliseconds (default 10 000).
    #[serde(default = "default_max")]
    pub max_ms: u64,
}

fn default_attempts() -> u32 {
    8
}
fn default_base() -> u64 {
    100
}
fn default_max() -> u64 {
    10_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_attempts: default_attempts(), base_ms: default_base(), max_ms: default_max() }
    }
}

impl RetryConfig {
    /// Backoff before retry number `attempt` (1-based): a random duration in
    /// `[0, min(max, base * 2^(attempt-1))]` ("full jitter"), but at least
    /// `floor` (e.g. a server's Retry-After).
    pub fn backoff(&self, attempt: u32, floor: Option<Duration>) -> Duration {
        let exp = self.base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_ms).max(1);
        let ms = rand::rng().random_range(0..=cap);
        let d = Duration::from_millis(ms);
        match floor {
            Some(f) if f > d => f.min(Duration::from_millis(self.max_ms.max(1))),
            _ => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_honours_floor() {
        let r = RetryConfig { max_attempts: 5, base_ms: 100, max_ms: 1000 };
        for a in 1..30 {
            assert!(r.backoff(a, None) <= Duration::from_millis(1000));
        }
        assert!(r.backoff(1, Some(Duration::from_millis(500))) >= Duration::from_millis(500));
    }
}
