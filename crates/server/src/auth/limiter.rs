//! Throttling of failed logins, per client address and per user name: each key has a bucket
//! that fills by one per failure and drains by one every `refill`; a key whose bucket is
//! full is refused (429 with `Retry-After`) before its password is even checked, so a
//! brute-force attempt costs the attacker time and the server no bcrypt work.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Keys kept at most; beyond that, drained buckets are dropped.
const MAX_KEYS: usize = 100_000;

/// Each key's level and when it was last counted.
type Buckets = HashMap<String, (f64, Instant)>;

pub struct Limiter {
    refill: Duration,
    // A std Mutex: held for a map operation only, never across an await.
    buckets: Mutex<Buckets>,
}

impl Limiter {
    pub fn new(refill: Duration) -> Limiter {
        Limiter {
            refill,
            buckets: Mutex::default(),
        }
    }

    /// The locked buckets and `key`'s level now (0 for a key with none).
    fn bucket(&self, key: &str) -> (MutexGuard<'_, Buckets>, f64, Instant) {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = buckets.get(key).map_or(0.0, |&(level, at)| {
            let drained = now.duration_since(at).as_secs_f64() / self.refill.as_secs_f64();
            (level - drained).max(0.0)
        });
        (buckets, level, now)
    }

    /// `Err(wait)` when one more in a bucket at `level` would pass `burst`.
    fn room(&self, level: f64, burst: u32) -> Result<(), Duration> {
        if level + 1.0 > f64::from(burst) {
            let wait = (level + 1.0 - f64::from(burst)) * self.refill.as_secs_f64();
            return Err(Duration::from_secs_f64(wait.max(1.0)));
        }
        Ok(())
    }

    /// Puts `key`'s bucket at one more than `level`, dropping drained buckets when full.
    fn count(&self, buckets: &mut Buckets, key: &str, level: f64, now: Instant) {
        if buckets.len() >= MAX_KEYS {
            let refill = self.refill;
            buckets.retain(|_, (level, at)| {
                *level > now.duration_since(*at).as_secs_f64() / refill.as_secs_f64()
            });
        }
        buckets.insert(key.to_owned(), (level + 1.0, now));
    }

    /// `Err(wait)` when `key` has failed `burst` times recently: come back after `wait`.
    pub fn check(&self, key: &str, burst: u32) -> Result<(), Duration> {
        let (_buckets, level, _) = self.bucket(key);
        self.room(level, burst)
    }

    /// Checks and counts in one step (no other caller slips in between): `Ok` and one more
    /// in `key`'s bucket, or `Err(wait)` and nothing counted.
    pub fn take(&self, key: &str, burst: u32) -> Result<(), Duration> {
        let (mut buckets, level, now) = self.bucket(key);
        self.room(level, burst)?;
        self.count(&mut buckets, key, level, now);
        Ok(())
    }

    /// Counts a failure against `key`.
    pub fn fail(&self, key: &str) {
        let (mut buckets, level, now) = self.bucket(key);
        self.count(&mut buckets, key, level, now);
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
