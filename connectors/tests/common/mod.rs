//! Helpers shared by the connector tests that need a service (`mod common;`).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Whether this run is CI (`CI=true`, as CI systems set it, or `CI=1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// The value of `var` (a service address such as `LIANQIN_PG_URL`) when
/// set and not empty. Missing under CI ([`in_ci`]): panics naming the
/// variable, so a test that needs a service cannot pass without it.
/// Elsewhere: prints a SKIPPED note and returns `None`.
pub fn require_service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if in_ci() => panic!(
            "{var} is not set but CI=true: this test needs its service and must not pass without it \
             (tests/run.sh starts the services and sets {var})"
        ),
        _ => {
            eprintln!("\n!!!!! SKIPPED: {var} is not set (tests/run.sh starts the services and sets it) !!!!!\n");
            None
        }
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name no other test shares: `tag`, process id, a per-process counter
/// and the clock. The clock alone is not enough: on a coarse clocksource
/// two tests started on two threads can read the same nanosecond, and two
/// MQTT tests then subscribed to each other's topics.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{tag}-{}-{n}-{nanos}", std::process::id())
}
