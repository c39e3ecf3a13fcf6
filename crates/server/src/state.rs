//! What every request handler shares: the registry, authentication and policy, and the
//! metrics; and who is asking, for the handlers whose answer depends on it.

use crate::auth::uploads::UploadLimit;
use crate::auth::{Auth, Caller};
use crate::metrics;
use berth_registry::Registry;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub auth: Arc<Auth>,
    pub storage: Arc<metrics::StorageGauges>,
    pub uploads: Arc<UploadLimit>,
}

/// Who is asking, for the handlers whose answer depends on it (catalog, mounts, uploads).
pub struct Access<'a> {
    pub auth: &'a Auth,
    pub caller: &'a Caller,
    pub peer: IpAddr,
    pub uploads: &'a UploadLimit,
}
