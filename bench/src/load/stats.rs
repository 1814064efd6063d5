//! Latency samples and their percentiles.
//!
//! Every sample is kept (microseconds, 4 bytes each) and sorted once at the end: a run
//! records at most a few million round trips, so exact percentiles cost a few megabytes
//! and no histogram bucketing error near the 2 ms and 5 ms targets.

use std::time::Duration;

use serde::Serialize;

/// Latency samples, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u32>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(mut self) -> Summary {
        self.0.sort_unstable();
        let v = &self.0;
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest sample with at least p% of samples at or below it.
            // In thousandths of a percent, in integers: 99.9 % of 1000 is exactly 999.
            let per_100k = (p * 1000.0).round() as usize;
            let rank = (per_100k * v.len()).div_ceil(100_000).max(1);
            f64::from(v[rank.min(v.len()) - 1]) / 1000.0
        };
        let mean = if v.is_empty() {
            f64::NAN
        } else {
            v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 / 1000.0
        };
        Summary {
            count: v.len(),
            mean_ms: mean,
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
            max_ms: pct(100.0),
        }
    }
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The median of some figures (the mean of the middle two for an even count), ignoring
/// any that is not finite; `None` when none is.
pub fn median(figures: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = figures.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([1.5, 1.25, 1.375]), Some(1.375));
        assert_eq!(median([1.5, 1.25]), Some(1.375));
        assert_eq!(median([f64::NAN, 2.0, f64::INFINITY]), Some(2.0));
        assert_eq!(median([]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for us in 1..=1000 {
            s.push(Duration::from_micros(us));
        }
        let sum = s.summary();
        assert_eq!(sum.count, 1000);
        assert_eq!(sum.p50_ms, 0.5);
        assert_eq!(sum.p99_ms, 0.99);
        assert_eq!(sum.p999_ms, 0.999);
        assert_eq!(sum.max_ms, 1.0);
        assert!(Samples::default().summary().p99_ms.is_nan());
    }
}
