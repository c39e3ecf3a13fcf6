//! The HTTP front of the registry. It parses requests, calls the domain, and writes
//! responses; it picks the storage backends from the configuration.
//!
//! - [`admin`]: Berth's administration API (collection, reconciliation, usage).
//! - [`auth`]: who the caller is and what they may do; the token endpoint.
//! - [`backends`]: the blob and metadata stores the configuration names.
//! - [`config`]: the TOML configuration and its defaults.
//! - [`conn`]: the accept loop: header timeout, connection cap, draining on shutdown.
//! - [`dispatch`]: the `/v2/` path parser (repository names contain `/`).
//! - [`handlers`]: one thin handler per endpoint, by resource.
//! - [`headers`]: response building blocks every handler shares (the bottom module).
//! - [`host`]: the `Host` header rule every request must meet.
//! - [`jobs`]: scheduled work: pull times, storage gauges, collection, reconciliation.
//! - [`error`]: the only mapping from errors to responses.
//! - [`metrics`]: the metrics Berth records and the per-request log line.
//! - [`request`]: reading a request: query, lengths and ranges, body, peer.
//! - [`sendfile`]: connections that send blob files with sendfile(2).
//! - [`state`]: what every handler shares, and who is asking.
//! - [`tls`]: TLS connections, with certificates reloaded when their files change.

pub mod admin;
pub mod auth;
pub mod backends;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod error;
pub mod handlers;
pub mod headers;
pub mod host;
pub mod jobs;
pub mod metrics;
pub mod request;
pub mod sendfile;
pub mod state;
pub mod tls;

use anyhow::Context;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::{any, get};
use axum::Router;
use berth_registry::Registry;
use config::{Config, LogFormat};
use state::AppState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Level;
use tracing_subscriber::filter::Targets;

static API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Sets up logging to stderr as the configuration says (`RUST_LOG` wins when set and valid).
///
/// The filter is a list of levels per target (`info`, `berth_server=debug,warn`), not
/// tracing's `EnvFilter`: that one compiles regular expressions at start-up, and its code
/// alone was a megabyte of the idle server's memory, for span and field filters nobody sets
/// on a registry.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::prelude::*;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let env_filter = from_env.as_deref().map(str::parse::<Targets>);
    let filter = match &env_filter {
        Some(Ok(f)) => f.clone(),
        // Checked by `Config::validate`; the default level otherwise.
        _ => log_filter(&config.log.level)
            .unwrap_or_else(|_| Targets::new().with_default(Level::INFO)),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.log.format {
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init()
        .is_ok();
    if let (true, Some(Err(e))) = (installed, env_filter) {
        tracing::warn!(error = %e, "RUST_LOG is not a list of levels per target; using [log] level");
    }
}

pub use config::log_filter;

pub use backends::open_registry;

/// The application: `/v2/` and everything under it, and `/metrics`. A request body that
/// sends nothing for `body_idle` fails (see [`conn::IdleTimeout`]).
pub fn app(state: AppState, body_idle: Duration) -> Router {
    Router::new()
        .route("/v2", any(handlers::v2))
        .route("/v2/", any(handlers::v2))
        .route("/v2/{*rest}", any(handlers::v2))
        .route("/metrics", get(handlers::metrics_page))
        .route("/token", get(handlers::token).post(handlers::token))
        .route("/api/v1/{*rest}", any(admin::api))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            |req, next: axum::middleware::Next| async move {
                let mut r = next.run(req).await;
                r.headers_mut().insert(
                    API_VERSION.clone(),
                    HeaderValue::from_static("registry/2.0"),
                );
                r
            },
        ))
        .layer(axum::middleware::from_fn_with_state((), metrics::track))
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| async move {
                // Most requests have no body: nothing to watch.
                if http_body::Body::is_end_stream(req.body()) {
                    return req;
                }
                req.map(|b| axum::body::Body::new(conn::IdleTimeout::new(b, body_idle)))
            },
        ))
        .layer(axum::middleware::from_fn(host::check))
}

/// Serves `registry` on `listener` until `shutdown` resolves, then gives in-flight requests
/// up to the configured time to finish.
pub async fn serve(
    config: &Config,
    registry: Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = metrics::install().ok();
    let auth = Arc::new(auth::Auth::from_config(config)?);
    if auth.is_on() {
        tracing::info!("authentication on: token endpoint at /token");
    }
    let storage = Arc::new(metrics::StorageGauges::new(config.limits.repository_gauges));
    let (gc, reconcile) = config.schedules()?;
    let _jobs = jobs::start(&registry, &storage, gc, reconcile);
    let limits = config.conn_limits();
    let app = app(
        AppState {
            registry,
            metrics,
            auth,
            storage,
            uploads: Arc::new(auth::uploads::UploadLimit::new(
                config.limits.uploads_per_client_burst,
                config.limits.uploads_per_client_per_sec,
            )),
        },
        Duration::from_secs(config.limits.body_timeout_secs),
    );
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    match &config.tls {
        Some(tls) => {
            let listener = tls::TlsListener::start(listener, tls.cert.clone(), tls.key.clone())?;
            tracing::info!("TLS on, certificate {}", tls.cert.display());
            conn::serve(listener, app, limits, grace, shutdown).await
        }
        None => {
            let listener = sendfile::SendfileListener(listener);
            conn::serve(listener, app, limits, grace, shutdown).await
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the backends, then serves on `listener` (the entry point tests and `main` share).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = open_registry(&config).await?;
    serve(&config, registry, listener, shutdown).await
}

/// Registers for SIGTERM and SIGINT now (so a signal that arrives before the server is
/// polled is not lost) and returns a future that resolves on either.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
