//! Zipf-distributed ranks in `1..=n` with exponent `s > 0`: P(k) proportional to k^-s.
//!
//! Rejection-inversion sampling (W. Hörmann and G. Derflinger, "Rejection-inversion to generate
//! variates from monotone discrete distributions", 1996), as in Apache Commons RNG: constant memory
//! and O(1) expected time whatever `n`, so a 100 M-key space costs nothing to set up.

use crate::rng::Rng;

/// A Zipf sampler over ranks `1..=n`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    /// A sampler for `n >= 1` elements and exponent `s > 0` (finite).
    pub fn new(n: u64, exponent: f64) -> Result<Zipf, String> {
        if n == 0 {
            return Err("zipf: the number of elements must be at least 1".into());
        }
        if !(exponent.is_finite() && exponent > 0.0) {
            return Err(format!("zipf: exponent must be > 0, got {exponent}"));
        }
        let mut z = Zipf {
            n: n as f64,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        Ok(z)
    }

    /// One rank in `1..=n`; rank 1 is the most frequent.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact probabilities of ranks 1..=n.
    fn exact(n: u64, s: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    }

    /// Samples with a fixed seed and compares the observed frequencies with the exact ones: each
    /// of the 20 most frequent ranks and the tail beyond them within 5 standard deviations, and a
    /// chi-square over about 60 groups of consecutive ranks far below what a wrong distribution
    /// (say, exponent off by 0.05) gives.
    fn check(n: u64, s: f64, seed: u64) {
        const SAMPLES: usize = 400_000;
        let z = Zipf::new(n, s).unwrap();
        let mut rng = Rng::new(seed);
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..SAMPLES {
            let k = z.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            counts[k as usize] += 1;
        }
        let p = exact(n, s);
        // Each count is binomial: within 5 standard deviations of its expectation.
        let within = |obs: f64, p: f64| {
            let exp = p * SAMPLES as f64;
            (obs - exp).abs() <= 5.0 * (exp * (1.0 - p)).sqrt()
        };
        for k in 1..=20.min(n as usize) {
            let observed = counts[k] as f64;
            assert!(
                within(observed, p[k - 1]),
                "n={n} s={s} rank {k}: observed {observed}, expected p {}",
                p[k - 1]
            );
        }
        if n > 20 {
            let tail_obs: u64 = counts[21..].iter().sum();
            let tail_p: f64 = p[20..].iter().sum();
            assert!(
                within(tail_obs as f64, tail_p),
                "n={n} s={s} tail {tail_obs} vs p {tail_p}"
            );
        }
        // Chi-square over groups of consecutive ranks, each with expected count >= ~SAMPLES/60.
        let mut chi2 = 0.0;
        let mut groups = 0;
        let (mut obs, mut exp) = (0.0, 0.0);
        for k in 1..=n as usize {
            obs += counts[k] as f64;
            exp += p[k - 1] * SAMPLES as f64;
            if exp >= SAMPLES as f64 / 60.0 || k == n as usize {
                chi2 += (obs - exp) * (obs - exp) / exp;
                groups += 1;
                (obs, exp) = (0.0, 0.0);
            }
        }
        // For ~60 degrees of freedom the 99.99th percentile of chi-square is about 110.
        assert!(
            chi2 < 2.0 * groups as f64 + 40.0,
            "n={n} s={s}: chi2 {chi2:.1} over {groups} groups"
        );
    }

    #[test]
    fn zipf_matches_exact_distribution_for_common_exponents() {
        check(1000, 0.99, 42);
        check(100_000, 0.99, 43);
        check(1000, 1.0, 44);
        check(1000, 0.5, 45);
        check(50, 1.5, 46);
    }

    #[test]
    fn zipf_check_rejects_a_wrong_exponent() {
        // The check above has teeth: samples drawn with exponent 0.94 fail it for 0.99.
        let wrong = std::panic::catch_unwind(|| {
            let z = Zipf::new(1000, 0.94).unwrap();
            let mut rng = Rng::new(42);
            let mut counts = vec![0u64; 1001];
            for _ in 0..400_000 {
                counts[z.sample(&mut rng) as usize] += 1;
            }
            let p = exact(1000, 0.99);
            let exp = p[0] * 400_000.0;
            assert!((counts[1] as f64 - exp).abs() <= 5.0 * (exp * (1.0 - p[0])).sqrt());
        });
        assert!(wrong.is_err());
    }

    #[test]
    fn zipf_edges() {
        let z = Zipf::new(1, 0.99).unwrap();
        let mut rng = Rng::new(3);
        assert!((0..1000).all(|_| z.sample(&mut rng) == 1));
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(10, 0.0).is_err());
        assert!(Zipf::new(10, -1.0).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
        // A huge key space needs no table and still samples in range.
        let z = Zipf::new(u64::MAX >> 12, 0.99).unwrap();
        assert!((0..1000).all(|_| (1..=u64::MAX >> 12).contains(&z.sample(&mut rng))));
    }
}
