//! `lianqin flow push|receipt|verify`: deliver a flow's outbox now, make the
//! signed daily reconciliation receipt of a flow, check a receipt.

use std::path::Path;
use std::time::Duration;

use crate::PipelineError;
use crate::audit::Audit;
use crate::config::{FlowConfig, HubConfig};
use crate::flows::{push, receipt};

fn flow<'a>(cfg: &'a HubConfig, name: &str) -> Result<&'a FlowConfig, PipelineError> {
    cfg.flows.iter().find(|f| f.name == name).ok_or_else(|| {
        PipelineError::Config(format!(
            "no flow `{name}` in the config (flows: {})",
            cfg.flows.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Delivers the outbox of every pushed flow (or of `only`) until it holds
/// nothing new; one line per flow. Fails naming the first flow whose
/// target did not acknowledge (what was acknowledged before stays).
pub async fn push(cfg: &HubConfig, data_dir: &Path, only: Option<&str>) -> Result<String, PipelineError> {
    if let Some(n) = only {
        flow(cfg, n)?;
    }
    let flows: Vec<FlowConfig> =
        cfg.flows.iter().filter(|f| only.is_none_or(|n| n == f.name) && f.push.is_some()).cloned().collect();
    if flows.is_empty() {
        return Err(PipelineError::Config("no flow with [flows.push] to deliver".into()));
    }
    let policy = crate::flows::load_policies(data_dir).await?;
    let audit = Audit::open(data_dir, "cli", "cli", Duration::from_secs(3))?;
    let res = async {
        let mut out = String::new();
        for mut p in push::open_all(&flows, data_dir, &policy, &audit)? {
            let n = p.drain().await?;
            out.push_str(&format!(
                "flow {:<20} {n} event(s) delivered to {}; acknowledged up to byte {}\n",
                p.flow(),
                p.destination(),
                p.cursor()?
            ));
        }
        Ok(out)
    }
    .await;
    audit.sync();
    res
}

/// Makes the receipt of flow `name` for `day` (`YYYY-MM-DD`, China time)
/// and returns it as pretty JSON.
pub async fn receipt(cfg: &HubConfig, data_dir: &Path, name: &str, day: &str) -> Result<String, PipelineError> {
    let f = flow(cfg, name)?;
    let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|e| PipelineError::Config(format!("--day {day:?}: expected YYYY-MM-DD: {e}")))?;
    let audit = Audit::open(data_dir, "cli", "cli", Duration::from_secs(3))?;
    // A flow with a feed topic: what the topic carries is counted too.
    let bus = match &f.topic {
        Some(t) => Some(crate::hub::open_bus_reader(cfg, data_dir).await.map_err(|e| {
            PipelineError::Config(format!(
                "flow `{name}` feeds topic `{t}`: the bus could not be opened to count it ({e}); \
                 on the embedded bus make the receipt while `lianqin run` is stopped"
            ))
        })?),
        None => None,
    };
    let feed = bus.as_ref().map(|(b, _)| (b.as_ref(), cfg.bus.topic_prefix.as_str()));
    let r = receipt::make_with_feed(f, data_dir, day, &audit, feed).await;
    audit.sync();
    serde_json::to_string_pretty(&r?).map_err(|e| PipelineError::Internal(e.to_string()))
}

/// Checks the receipt file `path` (and its key against `trusted`); returns
/// a one-line summary.
pub fn verify(path: &Path, trusted: Option<&str>) -> Result<String, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))?;
    let r = receipt::verify(&text, &path.display().to_string(), trusted)
        .map_err(|e| PipelineError::Config(e.to_string()))?;
    let mut s = format!(
        "{}: signature verifies; flow {} to {} for {}: {}",
        path.display(),
        r.flow,
        r.department,
        r.day,
        if r.balanced { "balanced" } else { "NOT balanced" }
    );
    for (lib, t) in &r.libraries {
        let sent = t.acknowledged.as_ref().unwrap_or(&t.written);
        s.push_str(&format!("\n  {lib:<13} held {:>7}  sent {:>7}", t.held.rows, sent.rows));
        if let Some(p) = &t.published {
            s.push_str(&format!("  on the feed topic {:>7}", p.rows));
        }
        if t.held != *sent || t.published.as_ref().is_some_and(|p| *p != t.held) {
            s.push_str("  (differs)");
        }
    }
    Ok(s)
}
