//! The sandbox's own clock: system time plus an offset that only grows.
//!
//! Tests move it forward (`advance`) so that a 30-second authorization code or a
//! one-hour access token expires without anybody sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// Milliseconds added to the system time.
    offset_ms: AtomicI64,
}

impl Clock {
    /// The sandbox's time, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        system.saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }

    /// The sandbox's time, in whole seconds since the Unix epoch.
    pub(crate) fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves the clock forward; returns the new offset in seconds.
    pub(crate) fn advance(&self, seconds: u64) -> i64 {
        let ms = i64::try_from(seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let old = self.offset_ms.fetch_add(ms, Ordering::SeqCst);
        old.saturating_add(ms).div_euclid(1000)
    }

    /// The offset from system time, in seconds.
    pub(crate) fn offset_secs(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst).div_euclid(1000)
    }

    /// Sets the offset back to zero.
    pub(crate) fn reset(&self) {
        self.offset_ms.store(0, Ordering::SeqCst);
    }
}

/// A unix time in milliseconds as a UTC date-time (the epoch if out of range).
fn datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `2024-10-08T17:48:17+00:00` (ISO 8601, as Bitrix24 and MessageBird write dates).
pub(crate) fn iso8601(ms: i64) -> String {
    datetime(ms).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `Tue, 08 Oct 2024 17:48:17 +0000` (RFC 2822, as Twilio writes dates).
pub(crate) fn rfc2822(ms: i64) -> String {
    datetime(ms).to_rfc2822()
}
