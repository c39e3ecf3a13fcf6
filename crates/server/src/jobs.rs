//! Work the server does on its own schedule, beside requests: writing pull times, refreshing
//! the storage gauges, garbage collection and reconciliation. Each is a task that lives as
//! long as the server; a failed run is logged and the next one comes at its time.

use crate::metrics::StorageGauges;
use berth_registry::gc::GcRequest;
use berth_registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often noted pull times are written.
const FLUSH_PULLS: Duration = Duration::from_secs(5);
/// How often the storage gauges are recomputed.
const REFRESH_GAUGES: Duration = Duration::from_secs(30);

/// The tasks; they stop when the returned handles are dropped through [`Jobs`].
pub struct Jobs(Vec<JoinHandle<()>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for j in &self.0 {
            j.abort();
        }
    }
}

/// Runs `run` every `every`, the first time one period after start (start-up stays fast).
fn every<F, Fut>(every: Duration, what: &'static str, run: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = berth_registry::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run().await {
                tracing::error!(error = %e, "{what} failed");
            }
        }
    })
}

pub fn start(
    registry: &Registry,
    gauges: &Arc<StorageGauges>,
    gc: Option<Duration>,
    reconcile: Option<Duration>,
) -> Jobs {
    let mut jobs = Vec::new();
    let r = registry.clone();
    jobs.push(every(FLUSH_PULLS, "writing pull times", move || {
        let r = r.clone();
        async move { r.flush_pulls().await }
    }));
    let refresh = {
        let (r, g) = (registry.clone(), gauges.clone());
        move || {
            let (r, g) = (r.clone(), g.clone());
            async move { g.refresh(&r).await }
        }
    };
    jobs.push(every(
        REFRESH_GAUGES,
        "computing storage gauges",
        refresh.clone(),
    ));
    if let Some(period) = gc {
        let r = registry.clone();
        jobs.push(every(period, "scheduled garbage collection", move || {
            let (r, refresh) = (r.clone(), refresh.clone());
            async move {
                r.collect(GcRequest::default()).await?;
                refresh().await
            }
        }));
    }
    if let Some(period) = reconcile {
        let r = registry.clone();
        jobs.push(every(period, "scheduled reconciliation", move || {
            let r = r.clone();
            async move { r.reconcile(GcRequest::default()).await.map(drop) }
        }));
    }
    Jobs(jobs)
}
