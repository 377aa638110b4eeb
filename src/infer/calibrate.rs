//! Activation ranges for int8 calibration: the values a tensor took on the calibration images are
//! summarised ([`Stats`]: min, max and a strided sample) and turned into the range that uint8
//! quantisation will cover, by one of three methods ([`Calibration`]).
//!
//! The entropy method is TensorRT's: of the candidate thresholds `T` (the first `levels..=2048` bins
//! of a 2048-bin histogram of the non-zero `|x|`), take the one whose quantised distribution (the
//! bins up to `T` merged into `levels` groups: 255 for a tensor that is never negative, 128 for a
//! signed one; outliers folded into the last bin) loses the least information against the
//! original: the smallest KL divergence.

/// How an activation's range is taken from the calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The given lower and upper percentiles of a sample of the values (outliers clipped).
    Percentile(f64),
    /// The threshold with the smallest KL divergence between the values and their quantised copy.
    Entropy,
}

impl Calibration {
    pub fn name(&self) -> String {
        match self {
            Calibration::MinMax => "minmax".into(),
            Calibration::Percentile(p) => format!("percentile {p}"),
            Calibration::Entropy => "entropy".into(),
        }
    }

    /// Whether the method needs a sample of the values, not just their extremes.
    pub fn needs_sample(&self) -> bool {
        !matches!(self, Calibration::MinMax)
    }
}

/// Values kept per tensor (a strided sample).
const SAMPLE: usize = 200_000;
/// Histogram bins over `[0, max |x|]` for the entropy method.
const BINS: usize = 2048;

/// What calibration saw of one tensor.
#[derive(Default)]
pub struct Stats {
    lo: f32,
    hi: f32,
    sample: Vec<f32>,
    seen: usize,
}

impl Stats {
    /// Adds one batch of the tensor's values.
    pub fn add(&mut self, v: &[f32], keep_sample: bool) {
        if self.seen == 0 {
            (self.lo, self.hi) = (f32::INFINITY, f32::NEG_INFINITY);
        }
        for &x in v {
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
        if keep_sample {
            let step = (v.len() / 4096).max(1);
            self.sample.extend(v.iter().step_by(step));
            if self.sample.len() > SAMPLE {
                let half: Vec<f32> = self.sample.iter().step_by(2).copied().collect();
                self.sample = half;
            }
        }
        self.seen += v.len();
    }

    /// The range to quantise: (lo, hi).
    pub fn range(&mut self, method: Calibration) -> (f32, f32) {
        if self.sample.is_empty() {
            return (self.lo, self.hi);
        }
        match method {
            Calibration::MinMax => (self.lo, self.hi),
            Calibration::Percentile(p) => {
                self.sample.sort_by(f32::total_cmp);
                let n = self.sample.len();
                let at = |q: f64| self.sample[((q / 100.0) * (n - 1) as f64).round() as usize];
                (at(100.0 - p), at(p))
            }
            Calibration::Entropy => {
                // A tensor that is never negative (after a ReLU) spends all 255 uint8 levels on
                // [0, T]; a signed one spends about half on each side of zero.
                let levels = if self.lo >= 0.0 { 255 } else { 128 };
                let t = entropy_threshold(&self.sample, levels);
                (self.lo.max(-t), self.hi.min(t))
            }
        }
    }
}

/// The threshold on `|x|` with the smallest KL divergence between the histogram of `values` cut at
/// it (outliers added to the last bin) and its copy quantised to `levels` levels.
pub fn entropy_threshold(values: &[f32], levels: usize) -> f32 {
    let amax = values.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 || !amax.is_finite() {
        return amax;
    }
    let width = amax / BINS as f32;
    let mut hist = vec![0f64; BINS];
    for x in values.iter().filter(|x| **x != 0.0) {
        hist[((x.abs() / width) as usize).min(BINS - 1)] += 1.0;
    }
    let mut best = (f64::INFINITY, BINS);
    for i in levels..=BINS {
        let kl = kl_cut(&hist, i, levels);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * width
}

/// KL(P || Q) where P is `hist[..i]` with the tail folded into its last bin, and Q spreads each of
/// `levels` merged groups of `hist[..i]` evenly over the group's non-empty bins.
fn kl_cut(hist: &[f64], i: usize, levels: usize) -> f64 {
    let mut p: Vec<f64> = hist[..i].to_vec();
    p[i - 1] += hist[i..].iter().sum::<f64>();
    let mut q = vec![0f64; i];
    let merged = i as f64 / levels as f64;
    for j in 0..levels {
        let start = (j as f64 * merged) as usize;
        let end = if j + 1 == levels {
            i
        } else {
            ((j + 1) as f64 * merged) as usize
        };
        let group = &hist[start..end];
        let nonzero = group.iter().filter(|&&h| h > 0.0).count();
        if nonzero == 0 {
            continue;
        }
        let each = group.iter().sum::<f64>() / nonzero as f64;
        for (k, &h) in group.iter().enumerate() {
            if h > 0.0 {
                q[start + k] = each;
            }
        }
    }
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp == 0.0 || sq == 0.0 {
        return f64::INFINITY;
    }
    // A bin P has and Q lacks (the tail folded into the last bin) costs as if Q held a trace of it.
    let floor = 1e-4 / sq;
    p.iter()
        .zip(&q)
        .filter(|(pv, _)| **pv > 0.0)
        .map(|(pv, qv)| {
            let (a, b) = (pv / sp, (qv / sq).max(floor));
            a * (a / b).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn entropy_clips_rare_outliers_and_keeps_a_uniform_range() {
        let mut rng = Rng(7);
        // Uniform on [0, 6]: nothing to clip; the threshold stays near the maximum.
        let u: Vec<f32> = (0..100_000).map(|_| 6.0 * (rng.uniform() as f32)).collect();
        let t = entropy_threshold(&u, 255);
        assert!(t > 5.7 && t <= 6.0, "uniform: threshold {t}");
        // Laplace(1) with 10 outliers at 1000: minmax would spend the levels on [0, 1000]; the
        // threshold lands in the body of the distribution, past its 99.9th percentile (6.9).
        let mut l: Vec<f32> = (0..100_000)
            .map(|_| {
                let v = (rng.uniform() as f32).max(1e-7);
                let s = if (rng.uniform() as f32) < 0.5 {
                    -1.0
                } else {
                    1.0
                };
                -s * v.ln()
            })
            .collect();
        l.extend([1000.0; 10]);
        let t = entropy_threshold(&l, 128);
        assert!(t > 6.9 && t < 100.0, "laplace: threshold {t}");
        let mut st = Stats::default();
        st.add(&l, true);
        let (lo, hi) = st.range(Calibration::Entropy);
        assert!(
            hi == t && lo < 0.0 && lo >= -t,
            "signed: ({lo}, {hi}) for {t}"
        );
        // A ReLU output keeps 0 as its lower end.
        let mut st = Stats::default();
        st.add(&u, true);
        let (lo, hi) = st.range(Calibration::Entropy);
        assert!(lo >= 0.0 && hi > 5.7, "({lo}, {hi})");
    }

    #[test]
    fn kl_of_a_cut_matches_hand_computed_values() {
        // Two levels over four bins: groups [3, 1] and [2, 2] become Q = [2, 2, 2, 2].
        // P = [3, 1, 2, 2] / 8: KL = 3/8 ln(3/2) + 1/8 ln(1/2) (python3: 0.06540601797056848).
        assert!((kl_cut(&[3.0, 1.0, 2.0, 2.0], 4, 2) - 0.06540601797056848).abs() < 1e-12);
        // A tail bin of 4 folds into the last: P = [3, 1, 2, 6] / 12 against Q = 1/4 each:
        // sum p ln(4p) = 0.18744504820626945 (python3).
        assert!((kl_cut(&[3.0, 1.0, 2.0, 2.0, 4.0], 4, 2) - 0.18744504820626945).abs() < 1e-12);
        // An empty bin stays empty in Q: [4, 0] merges to Q = [4, 0], equal to P.
        assert!(kl_cut(&[4.0, 0.0, 2.0, 2.0], 4, 2).abs() < 1e-12);
    }
}
