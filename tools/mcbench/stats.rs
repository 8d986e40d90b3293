//! Per-thread counters and latency histograms, merged once at the end of a run.

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks (larger values are clamped to it): 60 s in nanoseconds.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// What one thread (or, merged, the whole run) observed.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Gets completed.
    pub gets: u64,
    /// Sets completed.
    pub sets: u64,
    /// Gets that returned a value.
    pub hits: u64,
    /// Gets that found nothing.
    pub misses: u64,
    /// Misses on keys this connection had written this run (eviction, or a lost write).
    pub lost: u64,
    /// Replies with an error status (set refused, out of memory, ...).
    pub errors: u64,
    /// Values that failed verification.
    pub verify_errors: u64,
    /// First verification failure, for the report.
    pub first_verify_error: Option<String>,
    /// Get latencies.
    pub get_latency: Histogram<u64>,
    /// Set latencies.
    pub set_latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            gets: 0,
            sets: 0,
            hits: 0,
            misses: 0,
            lost: 0,
            errors: 0,
            verify_errors: 0,
            first_verify_error: None,
            get_latency: new_histogram(),
            set_latency: new_histogram(),
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Summary of `h` (nanoseconds) in microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

impl Stats {
    /// Records a completed get.
    #[inline]
    pub fn record_get(&mut self, latency_ns: u64) {
        self.gets += 1;
        self.get_latency.saturating_record(latency_ns.max(1));
    }

    /// Records a completed set.
    #[inline]
    pub fn record_set(&mut self, latency_ns: u64) {
        self.sets += 1;
        self.set_latency.saturating_record(latency_ns.max(1));
    }

    /// Notes a verification failure.
    pub fn verify_failed(&mut self, what: String) {
        self.verify_errors += 1;
        if self.first_verify_error.is_none() {
            self.first_verify_error = Some(what);
        }
    }

    /// Adds `other` into `self`: counters summed, histograms merged.
    pub fn merge(&mut self, other: &Stats) {
        self.gets += other.gets;
        self.sets += other.sets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.lost += other.lost;
        self.errors += other.errors;
        self.verify_errors += other.verify_errors;
        if self.first_verify_error.is_none() {
            self.first_verify_error
                .clone_from(&other.first_verify_error);
        }
        self.get_latency
            .add(&other.get_latency)
            .expect("same bounds");
        self.set_latency
            .add(&other.set_latency)
            .expect("same bounds");
    }

    /// All requests completed.
    pub fn requests(&self) -> u64 {
        self.gets + self.sets
    }

    /// Latency over gets and sets together.
    pub fn all_latency(&self) -> Histogram<u64> {
        let mut h = self.get_latency.clone();
        h.add(&self.set_latency).expect("same bounds");
        h
    }

    /// Forgets everything (end of warm-up).
    pub fn reset(&mut self) {
        *self = Stats::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut rng = Rng::new(11);
        let mut parts: Vec<Stats> = (0..4).map(|_| Stats::default()).collect();
        let mut whole = Stats::default();
        for i in 0..40_000u64 {
            // A long-tailed mix: mostly ~100 µs, some ms, a few 10s of ms.
            let base = 50_000 + rng.below(100_000);
            let lat = if i % 100 == 0 {
                base * 100
            } else if i % 10 == 0 {
                base * 10
            } else {
                base
            };
            let part = &mut parts[(i % 4) as usize];
            if i % 11 == 0 {
                part.record_set(lat);
                whole.record_set(lat);
            } else {
                part.record_get(lat);
                part.hits += 1;
                whole.record_get(lat);
                whole.hits += 1;
            }
        }
        parts[2].verify_failed("first".into());
        parts[3].verify_failed("second".into());
        let mut merged = Stats::default();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(merged.requests(), 40_000);
        assert_eq!(
            (merged.gets, merged.sets, merged.hits),
            (whole.gets, whole.sets, whole.hits)
        );
        assert_eq!(merged.verify_errors, 2);
        assert_eq!(merged.first_verify_error.as_deref(), Some("first"));
        assert_eq!(
            Latency::of(&merged.get_latency),
            Latency::of(&whole.get_latency)
        );
        assert_eq!(
            Latency::of(&merged.set_latency),
            Latency::of(&whole.set_latency)
        );
        assert_eq!(
            Latency::of(&merged.all_latency()),
            Latency::of(&whole.all_latency())
        );
        let all = Latency::of(&merged.all_latency());
        assert_eq!(all.count, 40_000);
        assert!(
            all.p50 < all.p90 && all.p90 < all.p99 && all.p99 <= all.p999 && all.p999 <= all.max
        );
        // 1 % of samples are ~100x: p99.9 lands in that tail, p50 does not.
        assert!((50.0..150.1).contains(&all.p50), "{all:?}");
        assert!(all.p999 > 5_000.0, "{all:?}");
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut s = Stats::default();
        s.record_get(0);
        s.record_get(u64::MAX);
        assert_eq!(s.get_latency.len(), 2);
        assert!(Latency::of(&s.get_latency).max >= MAX_LATENCY_NS as f64 / 1000.0 * 0.99);
        s.reset();
        assert_eq!(s.requests(), 0);
        assert!(s.get_latency.is_empty());
    }
}
