//! Shared helpers for Lianqin's end-to-end tests (`tests/it`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lianqin_pipeline::library::LibraryStore;
use lianqin_pipeline::query::QueryEngine;
use lianqin_pipeline::schema::Catalog;

/// Path of the `lianqin` binary next to the test binary
/// (`target/debug/deps/it-*` → `target/debug/lianqin`), or `$LIANQIN_BIN`.
pub fn lianqin_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LIANQIN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("lianqin");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p lianqin-pipeline --bin lianqin`) or set LIANQIN_BIN",
        bin.display()
    );
    bin
}

/// Opens a fresh query session over a data dir (sees the latest commits).
pub async fn engine(data_dir: &Path) -> QueryEngine {
    let catalog = Catalog::builtin().expect("catalog");
    let store = LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await.expect("store");
    QueryEngine::new(&store, &catalog).await.expect("engine")
}

/// Like [`engine`], but reports failures (e.g. while a hub is committing).
pub async fn try_engine(data_dir: &Path) -> Result<QueryEngine, String> {
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    let store = LibraryStore::open_existing(data_dir, Arc::clone(&catalog)).await.map_err(|e| e.to_string())?;
    QueryEngine::new(&store, &catalog).await.map_err(|e| e.to_string())
}

/// `SELECT count(*)`-style query → i64.
pub async fn count(data_dir: &Path, sql: &str) -> i64 {
    engine(data_dir).await.scalar_i64(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}
