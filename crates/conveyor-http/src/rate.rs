//! Token buckets in memory: one per direct URL (process) and one per API key. A bucket
//! holds up to `burst` tokens and gains `per_second` a second; a request takes one, and
//! with none left it is answered 429 with `Retry-After`. Keys are process ids and API
//! logins that exist, so the map is as large as those lists at most.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate: `per_second` on average, up to `burst` at once. `per_second` 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

pub(crate) struct Buckets {
    rate: Rate,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    pub(crate) fn new(rate: Rate) -> Buckets {
        Buckets {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for `key`; else how long until one is there.
    pub(crate) fn take(&self, key: u64, now: Instant) -> Result<(), Duration> {
        let Rate { per_second, burst } = self.rate;
        if per_second <= 0.0 || !per_second.is_finite() {
            return Ok(());
        }
        let burst = burst.max(1.0);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let buckets = Buckets::new(Rate {
            per_second: 10.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take(1, t0).is_ok());
        }
        let wait = buckets.take(1, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // Another key has its own bucket.
        assert!(buckets.take(2, t0).is_ok());
        // A tenth of a second later, one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(buckets.take(1, t1).is_ok());
        assert!(buckets.take(1, t1).is_err());
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(buckets.take(1, t2).is_ok());
        }
        assert!(buckets.take(1, t2).is_err());
    }

    #[test]
    fn rate_zero_is_no_limit() {
        let buckets = Buckets::new(Rate {
            per_second: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(buckets.take(1, t0).is_ok());
        }
    }
}
