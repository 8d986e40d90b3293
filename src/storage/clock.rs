//! Coarse clock and memcached's expiry rules.
//!
//! Item times (expiry, last access) live in the header as `u32` seconds since the store's epoch.
//! The epoch is `2^31` seconds before the store was built, floored at the Unix epoch: a `u32` then
//! spans from 68 years before to 68 years after construction, which covers every time a caller can
//! plausibly pass (including small synthetic times in tests, while construction happens before 2038).
//!
//! Relative time 0 is reserved for "never expires"; the clock never reads below 1, so "expired at
//! once" can be written as `now`.
//!
//! Wire exptime rules (memcached `realtime()`): 0 = never; 1..=30 days = seconds from now; above =
//! absolute Unix time, already expired when at or before now; negative = expired at once. Values
//! beyond the clock's range saturate (never a panic, never a wrap into the past).

use std::time::{SystemTime, UNIX_EPOCH};

/// Largest wire exptime read as relative seconds (30 days).
pub const MAX_RELATIVE_EXPTIME: i64 = 2_592_000;

/// Relative time meaning "no expiry".
pub(crate) const NEVER: u32 = 0;

/// The store's notion of now, advanced by the caller.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// Unix seconds of relative time 0.
    epoch: u64,
    /// Seconds since `epoch`, at least 1.
    now: u32,
}

impl Clock {
    /// A clock set to the system time; the caller moves it with [`Clock::set`].
    pub(crate) fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut clock = Clock {
            epoch: unix.saturating_sub(1 << 31),
            now: 1,
        };
        clock.set(unix);
        clock
    }

    /// Sets now from Unix seconds (clamped to the clock's range).
    pub(crate) fn set(&mut self, unix_secs: u64) {
        let rel = unix_secs.saturating_sub(self.epoch);
        self.now = rel.clamp(1, u64::from(u32::MAX)) as u32;
    }

    /// Seconds since the epoch (never 0).
    #[inline]
    pub(crate) fn now(&self) -> u32 {
        self.now
    }

    /// Now as Unix seconds.
    pub(crate) fn unix_now(&self) -> u64 {
        self.epoch + u64::from(self.now)
    }

    /// Converts a wire exptime into a relative expiry: [`NEVER`], or a time at or before `now` when
    /// the item is to be expired at once.
    pub(crate) fn expiry(&self, exptime: i64) -> u32 {
        if exptime == 0 {
            return NEVER;
        }
        if exptime < 0 {
            return self.now;
        }
        if exptime <= MAX_RELATIVE_EXPTIME {
            // exptime fits in u32 here, so the sum cannot overflow u64.
            let at = u64::from(self.now) + exptime as u64;
            return at.min(u64::from(u32::MAX)) as u32;
        }
        let abs = exptime as u64;
        if abs <= self.unix_now() {
            return self.now;
        }
        (abs - self.epoch).min(u64::from(u32::MAX)) as u32
    }

    /// Converts an absolute expiry (Unix seconds, 0 = never) into a relative one; `None` when
    /// it is at or before now (already expired).
    pub(crate) fn absolute(&self, unix_secs: u64) -> Option<u32> {
        if unix_secs == 0 {
            return Some(NEVER);
        }
        if unix_secs <= self.unix_now() {
            return None;
        }
        Some((unix_secs - self.epoch).min(u64::from(u32::MAX)) as u32)
    }

    /// A relative time as Unix seconds.
    pub(crate) fn to_unix(&self, rel: u32) -> u64 {
        self.epoch + u64::from(rel)
    }

    /// Whether an item with relative expiry `exp` is expired now.
    #[inline]
    pub(crate) fn is_expired(&self, exp: u32) -> bool {
        exp != NEVER && exp <= self.now
    }

    /// Seconds left before `exp` (None = never expires; Some(0) = expired).
    pub(crate) fn ttl_left(&self, exp: u32) -> Option<u32> {
        if exp == NEVER {
            None
        } else {
            Some(exp.saturating_sub(self.now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn at(unix: u64) -> Clock {
        let mut c = Clock::new();
        c.set(unix);
        c
    }

    #[test]
    fn zero_means_never() {
        let c = at(T0);
        assert_eq!(c.expiry(0), NEVER);
        assert!(!c.is_expired(NEVER));
        assert_eq!(c.ttl_left(NEVER), None);
    }

    #[test]
    fn relative_up_to_thirty_days() {
        let c = at(T0);
        assert_eq!(c.expiry(1), c.now() + 1);
        assert_eq!(c.expiry(MAX_RELATIVE_EXPTIME), c.now() + 2_592_000);
        assert_eq!(c.ttl_left(c.expiry(10)), Some(10));
        assert!(!c.is_expired(c.expiry(1)));
    }

    #[test]
    fn relative_expires_when_the_clock_reaches_it() {
        let mut c = at(T0);
        let exp = c.expiry(5);
        c.set(T0 + 4);
        assert!(!c.is_expired(exp));
        c.set(T0 + 5);
        assert!(c.is_expired(exp));
    }

    #[test]
    fn absolute_in_the_future() {
        let mut c = at(T0);
        let exp = c.expiry((T0 + 100) as i64);
        assert_eq!(c.ttl_left(exp), Some(100));
        c.set(T0 + 100);
        assert!(c.is_expired(exp));
    }

    #[test]
    fn absolute_in_the_past_or_now_is_expired_at_once() {
        let c = at(T0);
        assert!(c.is_expired(c.expiry(T0 as i64)));
        assert!(c.is_expired(c.expiry(T0 as i64 - 1)));
        // Just above the relative range: 1970, long past.
        assert!(c.is_expired(c.expiry(MAX_RELATIVE_EXPTIME + 1)));
    }

    #[test]
    fn negative_is_expired_at_once() {
        let c = at(T0);
        assert!(c.is_expired(c.expiry(-1)));
        assert!(c.is_expired(c.expiry(i64::MIN)));
    }

    #[test]
    fn absurd_values_saturate() {
        let c = at(T0);
        let exp = c.expiry(i64::MAX);
        assert_eq!(exp, u32::MAX);
        assert!(!c.is_expired(exp));
        // Binary protocol's 0xffffffff is year 2106: far future, not expired.
        assert!(!c.is_expired(c.expiry(0xffff_ffff)));
    }

    #[test]
    fn absolute_expiry_round_trips_and_refuses_the_past() {
        let c = at(T0);
        assert_eq!(c.absolute(0), Some(NEVER));
        assert_eq!(c.absolute(T0), None);
        assert_eq!(c.absolute(1), None);
        let exp = c.absolute(T0 + 5).unwrap();
        assert_eq!((c.to_unix(exp), c.ttl_left(exp)), (T0 + 5, Some(5)));
        // Within 30 days too: absolute, unlike a wire exptime.
        assert_eq!(c.absolute(u64::MAX), Some(u32::MAX));
    }

    #[test]
    fn clock_never_reads_zero_and_saturates() {
        let mut c = at(0);
        assert_eq!(c.now(), 1);
        assert!(c.is_expired(c.expiry(-1)));
        c.set(u64::MAX);
        assert_eq!(c.now(), u32::MAX);
        assert!(c.is_expired(c.expiry(-1)));
    }
}
