//! Throttling of failed logins, per client address and per user name: each key has a bucket
//! that fills by one per failure and drains by one every `refill`; a key whose bucket is
//! full is refused (429 with `Retry-After`) before its password is even checked, so a
//! brute-force attempt costs the attacker time and the server no bcrypt work.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most; beyond that, drained buckets are dropped.
const MAX_KEYS: usize = 100_000;

pub struct Limiter {
    refill: Duration,
    // A std Mutex: held for a map operation only, never across an await.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(refill: Duration) -> Limiter {
        Limiter {
            refill,
            buckets: Mutex::default(),
        }
    }

    fn level(&self, (level, at): (f64, Instant), now: Instant) -> f64 {
        let drained = now.duration_since(at).as_secs_f64() / self.refill.as_secs_f64();
        (level - drained).max(0.0)
    }

    /// `Err(wait)` when `key` has failed `burst` times recently: come back after `wait`.
    pub fn check(&self, key: &str, burst: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = buckets.get(key) else {
            return Ok(());
        };
        let level = self.level(*b, now);
        if level + 1.0 > f64::from(burst) {
            let wait = (level + 1.0 - f64::from(burst)) * self.refill.as_secs_f64();
            return Err(Duration::from_secs_f64(wait.max(1.0)));
        }
        Ok(())
    }

    /// Checks and counts in one step (no other caller slips in between): `Ok` and one more
    /// in `key`'s bucket, or `Err(wait)` and nothing counted.
    pub fn take(&self, key: &str, burst: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = buckets.get(key).map_or(0.0, |b| self.level(*b, now));
        if level + 1.0 > f64::from(burst) {
            let wait = (level + 1.0 - f64::from(burst)) * self.refill.as_secs_f64();
            return Err(Duration::from_secs_f64(wait.max(1.0)));
        }
        if buckets.len() >= MAX_KEYS {
            let refill = self.refill;
            buckets.retain(|_, (level, at)| {
                *level > now.duration_since(*at).as_secs_f64() / refill.as_secs_f64()
            });
        }
        buckets.insert(key.to_owned(), (level + 1.0, now));
        Ok(())
    }

    /// Counts a failure against `key`.
    pub fn fail(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS {
            let refill = self.refill;
            buckets.retain(|_, (level, at)| {
                *level > now.duration_since(*at).as_secs_f64() / refill.as_secs_f64()
            });
        }
        let level = buckets.get(key).map_or(0.0, |b| self.level(*b, now));
        buckets.insert(key.to_owned(), (level + 1.0, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_then_recovery() {
        let l = Limiter::new(Duration::from_millis(50));
        for _ in 0..3 {
            assert!(l.check("ip:1", 3).is_ok());
            l.fail("ip:1");
        }
        let wait = l.check("ip:1", 3).unwrap_err();
        assert!(
            wait >= Duration::from_secs(1),
            "Retry-After is at least a second"
        );
        assert!(l.check("ip:2", 3).is_ok(), "other keys are not affected");
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            l.check("ip:1", 3).is_ok(),
            "one attempt allowed again after a refill"
        );
    }
}
