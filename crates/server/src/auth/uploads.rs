//! Policy on who may open upload sessions how fast: the per-client limit. It is per node:
//! each node counts the sessions opened through it.

use crate::error::ApiError;
use axum::http::{header, HeaderValue};
use berth_oci::ErrorCode;
use std::net::IpAddr;

/// How many upload sessions one client address may open: a burst, then a steady rate. A
/// session costs a record and, once written to, a file; a client opening them in a loop
/// gets 429 with `Retry-After` instead of filling the disk with empty sessions.
pub struct UploadLimit {
    limiter: crate::auth::limiter::Limiter,
    burst: u32,
}

impl UploadLimit {
    pub fn new(burst: u32, per_sec: f64) -> UploadLimit {
        UploadLimit {
            limiter: crate::auth::limiter::Limiter::new(std::time::Duration::from_secs_f64(
                1.0 / per_sec.max(1e-6),
            )),
            burst: burst.max(1),
        }
    }

    /// Counts a session `peer` opens, or refuses it (429) when `peer` has opened its burst
    /// recently. Clients are told apart by address; IPv6 ones by their /64 network, which
    /// one client usually holds whole.
    pub fn open(&self, peer: IpAddr) -> Result<(), ApiError> {
        let key = match peer.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => v4.to_string(),
        };
        self.limiter.take(&key, self.burst).map_err(|wait| {
            ApiError::spec(
                ErrorCode::TooManyRequests,
                "too many upload sessions opened: try again later",
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
            )
        })
    }
}
