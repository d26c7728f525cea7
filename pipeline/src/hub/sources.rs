//! Running the sources (connectors): building them from the config, one
//! sync pass of every source, and the per-source tasks of `lianqin run`.
//! Each run is audited as a `connector_run` entry.
//!
//! Polling sources run a pass per interval; streaming sources (HJ 212,
//! webhooks, MQTT) run until shutdown and are audited only when they stop
//! with an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lianqin_bus::{Bus, raw_topic};
use lianqin_connectors::{RunStats, Source, SourceContext};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Hub;
use crate::PipelineError;

impl Hub {
    /// Builds the runtime sources (connectors) from the config.
    pub fn build_sources(&self) -> Result<Vec<(Source, SourceContext, Duration)>, PipelineError> {
        let mut out = Vec::new();
        for s in self.cfg.enabled_sources() {
            let src = s.connector.build(&s.id, &s.department).map_err(|e| PipelineError::Config(e.to_string()))?;
            let ctx = SourceContext {
                bus: Arc::<dyn Bus>::clone(&self.bus),
                topic: raw_topic(&self.cfg.bus.topic_prefix, &s.id),
            };
            out.push((src, ctx, Duration::from_secs(s.interval_secs)));
        }
        Ok(out)
    }

    /// Runs one sync pass of every source. A failing source is reported and
    /// does not stop the others.
    pub async fn sync_sources_once(&self) -> BTreeMap<String, Result<RunStats, String>> {
        let mut out = BTreeMap::new();
        let built = match self.build_sources() {
            Ok(b) => b,
            Err(e) => {
                out.insert("*".into(), Err(e.to_string()));
                return out;
            }
        };
        for (src, ctx, _) in built {
            // Streaming sources (HJ 212, webhooks, MQTT) have no pass to run.
            let Source::Polling(mut src) = src else { continue };
            let id = src.id().to_string();
            let r = src.sync_once(&ctx).await.map_err(|e| e.to_string());
            self.metrics.source_run(&id, r.as_ref().map(|s| (s.records, s.retries)).map_err(|_| ()));
            if let Err(e) = &r {
                warn!(source = %id, "sync failed: {e}");
            }
            let dept = self.cfg.sources.iter().find(|s| s.id == id).map(|s| s.department.clone()).unwrap_or_default();
            if let Err(e) = self.audit.record(crate::audit::connector_run(&id, &dept, &r)) {
                warn!("audit: {e}");
            }
            out.insert(id, r);
        }
        self.audit.sync();
        out
    }

    /// Starts every source (when `sources`) on its schedule until
    /// `shutdown`; returns their tasks. Source failures are logged, audited
    /// and retried on the next tick.
    pub(super) fn spawn_sources(
        &self,
        shutdown: &watch::Receiver<bool>,
        sources: bool,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, PipelineError> {
        let mut tasks = Vec::new();
        let built = if sources { self.build_sources()? } else { Vec::new() };
        for (src, ctx, every) in built {
            let mut stop = shutdown.clone();
            let audit = self.audit.clone();
            let metrics = self.metrics();
            let dept =
                self.cfg.sources.iter().find(|s| s.id == src.id()).map(|s| s.department.clone()).unwrap_or_default();
            tasks.push(tokio::spawn(async move {
                let id = src.id().to_string();
                let mut src = match src {
                    Source::Polling(src) => src,
                    Source::Streaming(mut src) => {
                        // Servers that systems push to (HJ 212, webhooks, MQTT).
                        let r =
                            src.run(&ctx, stop.clone()).await.map(|_| Default::default()).map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            warn!(source = %id, "streaming source stopped: {e}");
                            let _ = audit.record(crate::audit::connector_run(&id, &dept, &r));
                        }
                        return;
                    }
                };
                // Passes without records are audited only after a failure
                // (so the trail shows the recovery).
                let mut failed_before = false;
                loop {
                    let r = src.sync_once(&ctx).await.map_err(|e| e.to_string());
                    metrics.source_run(&id, r.as_ref().map(|s| (s.records, s.retries)).map_err(|_| ()));
                    match &r {
                        Ok(s) if s.records > 0 => {
                            info!(source = %id, records = s.records, retries = s.retries, "sync pass done")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(source = %id, "sync failed (will retry next tick): {e}"),
                    }
                    if (r.as_ref().map(|s| s.records > 0).unwrap_or(true) || failed_before)
                        && let Err(e) = audit.record(crate::audit::connector_run(&id, &dept, &r))
                    {
                        warn!("audit: {e}");
                    }
                    failed_before = r.is_err();
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            }));
        }
        Ok(tasks)
    }
}
