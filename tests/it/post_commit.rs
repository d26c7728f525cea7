//! Post-commit steps: a step whose libraries are independent (the change
//! feeds) runs for a batch's libraries side by side, the hub waits for all
//! of them before the raw commit, and a step that fails fails the batch,
//! which is retried: every row reaches the step at least once, the
//! libraries hold each record exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use async_trait::async_trait;
use lianqin_pipeline::PipelineError;
use lianqin_pipeline::demo;
use lianqin_pipeline::hub::post_commit::PostCommit;
use lianqin_sim::SimConfig;
use lianqin_tests::count;

/// Records what it is handed; slow enough that calls for two libraries
/// overlap when the hub runs them side by side; fails once for `matter`.
#[derive(Default)]
struct Probe {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    fail_matter_once: AtomicBool,
    seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

#[async_trait]
impl PostCommit for Probe {
    fn name(&self) -> &str {
        "probe"
    }

    fn libraries_independent(&self) -> bool {
        true
    }

    async fn after_commit(&self, library: &str, batch: &RecordBatch) -> Result<(), PipelineError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if library == "matter" && self.fail_matter_once.swap(false, Ordering::SeqCst) {
            return Err(PipelineError::Internal("probe: refused the matter rows once".into()));
        }
        let id = if library == "matter_event" { "event_id".to_string() } else { format!("{library}_id") };
        if let Some(ids) = batch.column_by_name(&id).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned()) {
            let mut seen = self.seen.lock().unwrap();
            let set = seen.entry(library.to_string()).or_default();
            set.extend((0..ids.len()).filter(|i| ids.is_valid(*i)).map(|i| ids.value(i).to_string()));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_side_by_side_and_a_failure_retries_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = SimConfig { incidents: 30, tickets: 20, enterprises: 10, cases: 10, env_files: 0, ..Default::default() };
    let sim = demo::start_simulation(d, cfg).await.unwrap();
    let probe = Arc::new(Probe { fail_matter_once: AtomicBool::new(true), ..Default::default() });
    let hub = demo::open_demo_hub(d, &sim).await.unwrap().with_post_commit(Arc::clone(&probe) as Arc<dyn PostCommit>);
    for (src, r) in hub.sync_sources_once().await {
        assert!(r.is_ok(), "{src}: {r:?}");
    }
    // The first pass stops at the refused batch; the next one retries it.
    let mut failures = 0;
    for _ in 0..5 {
        match hub.process_available().await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.to_string().contains("refused the matter rows"), "unexpected error: {e}");
                failures += 1;
            }
        }
    }
    assert!(!probe.fail_matter_once.load(Ordering::SeqCst), "the probe was never handed matter rows");
    assert!(failures >= 1, "the refused batch did not fail");
    assert!(probe.most_in_flight.load(Ordering::SeqCst) >= 2, "the probe never ran for two libraries at once");
    assert_eq!(probe.in_flight.load(Ordering::SeqCst), 0, "a step was still running when the pass returned");
    drop(hub);

    // Exactly once in the libraries, at least once through the step.
    let truth = sim.truth();
    let want_110 = truth
        .incidents
        .iter()
        .filter(|v| v.get("jjdbh").and_then(|k| k.as_str()).is_some_and(|k| !k.is_empty()))
        .count();
    assert_eq!(count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '110:%'").await, want_110 as i64);
    assert_eq!(
        count(d, "SELECT count(*) FROM matter WHERE matter_id LIKE '12345:%'").await,
        truth.tickets.len() as i64
    );
    lianqin_tests::assert_no_doubled_library_rows(d).await;
    let e = lianqin_tests::engine(d).await;
    let seen = probe.seen.lock().unwrap().clone();
    for (lib, id) in [("element", "element_id"), ("matter", "matter_id"), ("matter_event", "event_id")] {
        let batches = e.sql(&format!("SELECT DISTINCT {id} FROM {lib}_history")).await.unwrap();
        let mut want = BTreeSet::new();
        for b in &batches {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let c = c.as_any().downcast_ref::<StringArray>().unwrap();
            want.extend((0..c.len()).map(|i| c.value(i).to_string()));
        }
        assert!(!want.is_empty(), "{lib}: nothing committed");
        let got = seen.get(lib).cloned().unwrap_or_default();
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        assert!(missing.is_empty(), "{lib}: rows the step never saw, e.g. {missing:?}");
    }
    sim.shutdown().await;
}
