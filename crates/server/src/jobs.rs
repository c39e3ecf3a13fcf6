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
/// How often the storage gauges are recomputed, at most.
const REFRESH_GAUGES: Duration = Duration::from_secs(30);
/// The storage gauges' share of the time is at most one part in this.
const GAUGES_SPREAD: u32 = 20;

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
/// A run is also followed by `spread` times its own duration before the next one starts:
/// work that grows with the registry (the storage gauges read every repository's figures)
/// then takes at most a `1 / spread` share of the time, however large the registry grows.
fn every<F, Fut>(every: Duration, spread: u32, what: &'static str, run: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = berth_registry::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + every;
        loop {
            tokio::time::sleep_until(next).await;
            let started = tokio::time::Instant::now();
            if let Err(e) = run().await {
                tracing::error!(error = %e, "{what} failed");
            }
            next = started + every.max(started.elapsed() * spread);
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
    jobs.push(every(FLUSH_PULLS, 1, "writing pull times", move || {
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
        GAUGES_SPREAD,
        "computing storage gauges",
        refresh.clone(),
    ));
    if let Some(period) = gc {
        let r = registry.clone();
        jobs.push(every(
            period,
            1,
            "scheduled garbage collection",
            move || {
                let (r, refresh) = (r.clone(), refresh.clone());
                async move {
                    r.collect(GcRequest::default()).await?;
                    refresh().await
                }
            },
        ));
    }
    if let Some(period) = reconcile {
        let r = registry.clone();
        jobs.push(every(period, 1, "scheduled reconciliation", move || {
            let r = r.clone();
            async move { r.reconcile(GcRequest::default()).await.map(drop) }
        }));
    }
    Jobs(jobs)
}
