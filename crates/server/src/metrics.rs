//! Prometheus metrics and the per-request log line, both from one middleware.
//!
//! Routes are labelled by endpoint kind (never by repository name, which would make the
//! label set unbounded): handlers put a [`RouteLabel`] in the response's extensions.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::time::{Duration, Instant};

/// The endpoint kind a response came from.
#[derive(Clone, Copy, Debug)]
pub struct RouteLabel(pub &'static str);

/// Upper bounds of every histogram's buckets (request latencies, in seconds).
const BOUNDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder and returns what renders `/metrics`. Its upkeep (which
/// folds recorded samples into the buckets, so they do not pile up between scrapes) runs
/// every few seconds on the runtime this is called from.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&BOUNDS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::describe_counter!(
        "berth_http_requests_total",
        "HTTP requests by route, method and status"
    );
    metrics::describe_histogram!(
        "berth_http_request_duration_seconds",
        "HTTP request latency by route"
    );
    metrics::describe_counter!(
        "berth_bytes_received_total",
        "Blob and manifest bytes received"
    );
    metrics::describe_counter!("berth_bytes_sent_total", "Response body bytes sent");
    metrics::describe_gauge!(
        "berth_uploads_in_flight",
        "Requests currently streaming an upload body"
    );
    Ok(handle)
}

/// Counts uploads in flight for as long as it lives.
pub struct InFlight;

impl InFlight {
    pub fn start() -> InFlight {
        metrics::gauge!("berth_uploads_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("berth_uploads_in_flight").decrement(1.0);
    }
}

/// A connection over `max_connections`, answered 503.
pub fn refused_connection() {
    metrics::counter!("berth_connections_refused_total").increment(1);
}

pub fn received(n: u64) {
    metrics::counter!("berth_bytes_received_total").increment(n);
}

/// Records the request's metrics and writes its one log line. The path is logged without
/// its query string, which may carry credentials once tokens exist.
pub async fn track(State(()): State<()>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0)
        .unwrap_or("other");
    let status = response.status().as_u16();
    let sent: u64 = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sent = if method == axum::http::Method::HEAD {
        0
    } else {
        sent
    };
    metrics::counter!("berth_http_requests_total", "route" => route, "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    metrics::counter!("berth_bytes_sent_total").increment(sent);
    tracing::info!(
        target: "berth::access",
        method = %method,
        path = %path,
        route,
        status,
        bytes = sent,
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Storage gauges, rendered from the latest usage report. Written as text next to the
/// recorder's output rather than through it: a deleted repository's gauges must vanish, and
/// the recorder can only set a gauge, never remove one.
///
/// Per-repository gauges cover the `repositories` largest by unique bytes, not all: five
/// series a repository, for a million repositories, made the text hundreds of megabytes
/// (kept, and sent at every scrape). The totals count every repository.
pub struct StorageGauges {
    text: std::sync::RwLock<String>,
    repositories: usize,
}

impl StorageGauges {
    pub fn new(repositories: usize) -> StorageGauges {
        StorageGauges {
            text: Default::default(),
            repositories,
        }
    }

    pub fn update(&self, u: &berth_meta::Usage) {
        use std::fmt::Write;
        let mut t = String::new();
        let mut gauge =
            |name: &str, help: &str, values: &mut dyn Iterator<Item = (String, f64)>| {
                let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} gauge");
                for (labels, v) in values {
                    let _ = writeln!(t, "{name}{labels} {v}");
                }
            };
        let totals = [
            (
                "berth_storage_physical_bytes",
                "Bytes stored, each blob once",
                u.physical_bytes as f64,
            ),
            (
                "berth_storage_logical_bytes",
                "Bytes of every image as if nothing were shared",
                u.logical_bytes as f64,
            ),
            (
                "berth_storage_dedup_ratio",
                "Logical bytes over physical bytes",
                berth_registry::usage::dedup_ratio(u),
            ),
            ("berth_storage_blobs", "Blobs stored", u.blobs as f64),
            (
                "berth_repositories",
                "Repositories",
                u.repositories.len() as f64,
            ),
        ];
        for (name, help, v) in totals {
            gauge(name, help, &mut std::iter::once((String::new(), v)));
        }
        type Figure = fn(&berth_meta::RepoUsage) -> u64;
        let per_repo: [(&str, &str, Figure); 5] = [
            (
                "berth_repository_unique_bytes",
                "Bytes only this repository uses (freed if it were deleted)",
                |r| r.unique_bytes,
            ),
            (
                "berth_repository_shared_bytes",
                "Bytes this repository shares with others",
                |r| r.shared_bytes,
            ),
            (
                "berth_repository_logical_bytes",
                "Bytes of this repository's images as if nothing were shared",
                |r| r.logical_bytes,
            ),
            (
                "berth_repository_manifests",
                "Manifests in this repository",
                |r| r.manifests,
            ),
            ("berth_repository_tags", "Tags in this repository", |r| {
                r.tags
            }),
        ];
        let largest = largest(&u.repositories, self.repositories);
        for (name, help, f) in per_repo {
            gauge(
                name,
                help,
                &mut largest
                    .iter()
                    .map(|r| (format!("{{repository=\"{}\"}}", r.name), f(r) as f64)),
            );
        }
        *self.text.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Recomputes them from the registry's figures.
    pub async fn refresh(&self, registry: &berth_registry::Registry) -> berth_registry::Result<()> {
        self.update(&registry.usage_figures().await?);
        Ok(())
    }

    /// The gauges as Prometheus text; computed first if they never were (nothing is computed
    /// at start-up, and the first scrape should not come back without them).
    pub async fn render(&self, registry: &berth_registry::Registry) -> String {
        let empty = self
            .text
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if empty {
            if let Err(e) = self.refresh(registry).await {
                tracing::error!(error = %e, "computing storage gauges failed");
            }
        }
        self.text.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The `n` largest repositories by unique bytes (what deleting them would free), by name.
fn largest(repositories: &[berth_meta::RepoUsage], n: usize) -> Vec<&berth_meta::RepoUsage> {
    let mut largest: Vec<&berth_meta::RepoUsage> = repositories.iter().collect();
    if largest.len() > n {
        let by_size = |a: &&berth_meta::RepoUsage, b: &&berth_meta::RepoUsage| {
            b.unique_bytes
                .cmp(&a.unique_bytes)
                .then_with(|| a.name.cmp(&b.name))
        };
        if n > 0 {
            largest.select_nth_unstable_by(n - 1, by_size);
        }
        largest.truncate(n);
    }
    largest.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    largest
}

#[cfg(test)]
mod tests {
    fn report(unique: &[(&str, u64)]) -> berth_meta::Usage {
        berth_meta::Usage {
            physical_bytes: unique.iter().map(|r| r.1).sum(),
            logical_bytes: 0,
            blobs: 0,
            repositories: unique
                .iter()
                .map(|&(name, unique_bytes)| berth_meta::RepoUsage {
                    name: name.into(),
                    unique_bytes,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn labelled(g: &super::StorageGauges) -> Vec<String> {
        let text = g.text.read().unwrap().clone();
        text.lines()
            .filter_map(|l| l.strip_prefix("berth_repository_unique_bytes{repository=\""))
            .map(|l| l.split('"').next().unwrap().to_owned())
            .collect()
    }

    /// Per-repository series go to the largest repositories only (ties by name), listed by
    /// name; the totals still count every repository.
    #[test]
    fn only_the_largest_repositories_get_gauges() {
        let u = report(&[("d", 5), ("a", 1), ("c", 9), ("b", 5), ("e", 0)]);
        let g = super::StorageGauges::new(3);
        g.update(&u);
        assert_eq!(labelled(&g), ["b", "c", "d"]);
        let text = g.text.read().unwrap().clone();
        assert!(text.contains("\nberth_repositories 5\n"), "{text}");
        assert!(
            text.contains("\nberth_storage_physical_bytes 20\n"),
            "{text}"
        );
        let all = super::StorageGauges::new(5);
        all.update(&u);
        assert_eq!(labelled(&all), ["a", "b", "c", "d", "e"]);
        let none = super::StorageGauges::new(0);
        none.update(&u);
        assert!(labelled(&none).is_empty());
    }
}
