//! Losses on the head's raw outputs (logits), each returning the mean weighted loss and its gradient
//! with respect to the logits. Sigmoid/softmax are fused into the losses for numerical stability.
//! One output column means a binary head (sigmoid); C columns a softmax head.

use ndarray::Array2;

use super::activation::sigmoid;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Binary (1 column) or categorical (C columns) cross-entropy with label smoothing.
    CrossEntropy {
        smoothing: f32,
    },
    /// Focal loss (Lin et al.): `-alpha_t (1 - p_t)^gamma log p_t`.
    Focal {
        gamma: f32,
        alpha: f32,
    },
    /// Hinge on raw scores with targets in {-1, +1} (one-hot to +-1 for C columns, mean over columns).
    Hinge,
    SquaredHinge,
    /// Mean squared error between probabilities and (one-hot) targets.
    Mse,
}

/// Stable `log(1 + exp(x))`.
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn softmax_row(z: &[f32], out: &mut [f32]) -> f32 {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = (v - m).exp();
        s += *o;
    }
    for o in out.iter_mut() {
        *o /= s;
    }
    m + s.ln() // log-sum-exp
}

impl Loss {
    /// The loss as the CLI names it, with its parameters: `cross-entropy`, `cross-entropy(label
    /// smoothing=0.1)`, `focal(gamma=2, alpha=0.25)`, `hinge`, `squared-hinge`, `mse`.
    pub fn describe(&self) -> String {
        match *self {
            Loss::CrossEntropy { smoothing: 0.0 } => "cross-entropy".into(),
            Loss::CrossEntropy { smoothing } => {
                format!("cross-entropy(label smoothing={smoothing})")
            }
            Loss::Focal { gamma, alpha } => format!("focal(gamma={gamma}, alpha={alpha})"),
            Loss::Hinge => "hinge".into(),
            Loss::SquaredHinge => "squared-hinge".into(),
            Loss::Mse => "mse".into(),
        }
    }

    /// Mean of `weights[i] * loss_i` over the batch, and d(mean)/d(logits).
    pub fn compute(
        &self,
        logits: &Array2<f32>,
        labels: &[u32],
        weights: Option<&[f32]>,
    ) -> (f32, Array2<f32>) {
        let (n, k) = logits.dim();
        assert_eq!(labels.len(), n, "one label per row");
        let mut grad = Array2::<f32>::zeros((n, k));
        let mut total = 0f64;
        let mut p = vec![0f32; k];
        for i in 0..n {
            let z = logits.row(i);
            let z = z.as_slice().expect("standard layout");
            let y = labels[i] as usize;
            let w = weights.map_or(1.0, |w| w[i]) / n as f32;
            let g = grad.row_mut(i).into_slice().expect("standard layout");
            let l = if k == 1 {
                self.binary(z[0], y as f32, &mut g[0])
            } else {
                self.categorical(z, y, g, &mut p)
            };
            total += (l * w * n as f32) as f64;
            for v in g.iter_mut() {
                *v *= w;
            }
        }
        ((total / n as f64) as f32, grad)
    }

    /// Multi-label: each of the C columns is its own binary problem against the multi-hot
    /// `targets` (`[n, C]` of 0/1). The mean over all n x C elements of the binary loss (as
    /// PyTorch's `BCEWithLogitsLoss`, reduction mean), a positive element of column j weighted by
    /// `pos_weight[j]` (PyTorch's `pos_weight`), and d(mean)/d(logits).
    pub fn compute_tags(
        &self,
        logits: &Array2<f32>,
        targets: &Array2<f32>,
        pos_weight: Option<&[f32]>,
    ) -> (f32, Array2<f32>) {
        let (n, k) = logits.dim();
        assert_eq!(targets.dim(), (n, k), "one target per logit");
        let mut grad = Array2::<f32>::zeros((n, k));
        let scale = 1.0 / (n * k).max(1) as f32;
        let mut total = 0f64;
        for (j, mut col) in grad.columns_mut().into_iter().enumerate() {
            for (i, g) in col.iter_mut().enumerate() {
                let (z, y) = (logits[[i, j]], targets[[i, j]]);
                let l = self.binary(z, y, g);
                let w = if y > 0.5 {
                    pos_weight.map_or(1.0, |p| p[j])
                } else {
                    1.0
                };
                total += (l * w) as f64;
                *g *= w * scale;
            }
        }
        ((total * scale as f64) as f32, grad)
    }

    /// Loss of one binary row; writes dl/dz.
    fn binary(&self, z: f32, y: f32, g: &mut f32) -> f32 {
        match *self {
            Loss::CrossEntropy { smoothing } => {
                let t = y * (1.0 - smoothing) + 0.5 * smoothing;
                *g = sigmoid(z) - t;
                softplus(z) - t * z
            }
            Loss::Focal { gamma, alpha } => {
                let s = 2.0 * y - 1.0;
                let pt = sigmoid(s * z);
                let log_pt = -softplus(-s * z);
                let at = y * alpha + (1.0 - y) * (1.0 - alpha);
                let q = (1.0 - pt).max(0.0);
                *g = at * s * q.powf(gamma) * (gamma * pt * log_pt - q);
                -at * q.powf(gamma) * log_pt
            }
            Loss::Hinge | Loss::SquaredHinge => {
                let s = 2.0 * y - 1.0;
                let m = (1.0 - s * z).max(0.0);
                if *self == Loss::Hinge {
                    *g = if m > 0.0 { -s } else { 0.0 };
                    m
                } else {
                    *g = -2.0 * s * m;
                    m * m
                }
            }
            Loss::Mse => {
                let p = sigmoid(z);
                *g = 2.0 * (p - y) * p * (1.0 - p);
                (p - y) * (p - y)
            }
        }
    }

    /// Loss of one softmax row; writes dl/dz into `g`.
    fn categorical(&self, z: &[f32], y: usize, g: &mut [f32], p: &mut [f32]) -> f32 {
        let k = z.len();
        match *self {
            Loss::CrossEntropy { smoothing } => {
                let lse = softmax_row(z, p);
                let mut l = 0.0;
                for j in 0..k {
                    let t = if j == y { 1.0 - smoothing } else { 0.0 } + smoothing / k as f32;
                    g[j] = p[j] - t;
                    l += t * (lse - z[j]);
                }
                l
            }
            Loss::Focal { gamma, alpha } => {
                let lse = softmax_row(z, p);
                let log_pt = z[y] - lse;
                let pt = p[y];
                let q = (1.0 - pt).max(1e-12);
                // dl/dz_j = alpha (1-pt)^(gamma-1) [gamma pt log pt - (1-pt)] (delta_jy - p_j)
                let c = alpha * q.powf(gamma - 1.0) * (gamma * pt * log_pt - q);
                for j in 0..k {
                    g[j] = c * (if j == y { 1.0 } else { 0.0 } - p[j]);
                }
                -alpha * q.powf(gamma) * log_pt
            }
            Loss::Hinge | Loss::SquaredHinge => {
                let mut l = 0.0;
                for j in 0..k {
                    let s = if j == y { 1.0 } else { -1.0 };
                    let m = (1.0 - s * z[j]).max(0.0);
                    if *self == Loss::Hinge {
                        g[j] = if m > 0.0 { -s / k as f32 } else { 0.0 };
                        l += m;
                    } else {
                        g[j] = -2.0 * s * m / k as f32;
                        l += m * m;
                    }
                }
                l / k as f32
            }
            Loss::Mse => {
                softmax_row(z, p);
                let mut l = 0.0;
                let mut dot = 0.0;
                let gp: Vec<f32> = (0..k)
                    .map(|j| {
                        let d = p[j] - if j == y { 1.0 } else { 0.0 };
                        l += d * d;
                        2.0 * d / k as f32
                    })
                    .collect();
                for j in 0..k {
                    dot += gp[j] * p[j];
                }
                for j in 0..k {
                    g[j] = p[j] * (gp[j] - dot);
                }
                l / k as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_losses() -> Vec<Loss> {
        vec![
            Loss::CrossEntropy { smoothing: 0.0 },
            Loss::CrossEntropy { smoothing: 0.1 },
            Loss::Focal {
                gamma: 2.0,
                alpha: 0.25,
            },
            Loss::Focal {
                gamma: 0.5,
                alpha: 0.7,
            },
            Loss::Hinge,
            Loss::SquaredHinge,
            Loss::Mse,
        ]
    }

    /// Central differences in f64-ish precision on f32 maths: h = 1e-2 with a loose tolerance.
    fn check_fd(loss: Loss, z: Array2<f32>, labels: &[u32], w: Option<&[f32]>) {
        let (_, g) = loss.compute(&z, labels, w);
        let h = 1e-2f32;
        for idx in ndarray::indices(z.dim()) {
            let mut zp = z.clone();
            zp[idx] += h;
            let mut zm = z.clone();
            zm[idx] -= h;
            let fd = (loss.compute(&zp, labels, w).0 - loss.compute(&zm, labels, w).0) / (2.0 * h);
            assert!(
                (fd - g[idx]).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "{loss:?} at {idx:?}: analytic {} vs fd {fd}",
                g[idx]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences_binary_and_categorical() {
        // Values chosen away from the hinge kinks (|1 - s z| > h).
        let zb = Array2::from_shape_vec((4, 1), vec![0.3, -1.7, 2.4, -0.4]).unwrap();
        let zc = Array2::from_shape_vec(
            (3, 3),
            vec![0.3, -1.2, 2.2, 1.5, 0.4, -0.6, -2.5, 0.7, 0.35],
        )
        .unwrap();
        for loss in all_losses() {
            check_fd(loss, zb.clone(), &[1, 0, 0, 1], None);
            check_fd(loss, zb.clone(), &[1, 0, 0, 1], Some(&[1.0, 2.0, 0.5, 1.5]));
            check_fd(loss, zc.clone(), &[2, 0, 1], None);
        }
    }

    /// Multi-label losses: every element its own binary problem, positives weighted by column.
    #[test]
    fn tag_losses_match_finite_differences_and_pytorch_bce_with_pos_weight() {
        let z = Array2::from_shape_vec((2, 3), vec![0.3, -1.7, 2.4, -0.4, 1.1, -2.2]).unwrap();
        let y = Array2::from_shape_vec((2, 3), vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
        let pw = [2.0, 0.5, 1.5];
        for loss in all_losses() {
            for w in [None, Some(&pw[..])] {
                let (_, g) = loss.compute_tags(&z, &y, w);
                let h = 1e-2f32;
                for idx in ndarray::indices(z.dim()) {
                    let (mut zp, mut zm) = (z.clone(), z.clone());
                    zp[idx] += h;
                    zm[idx] -= h;
                    let fd = (loss.compute_tags(&zp, &y, w).0 - loss.compute_tags(&zm, &y, w).0)
                        / (2.0 * h);
                    assert!(
                        (fd - g[idx]).abs() <= 2e-3 + 2e-2 * fd.abs(),
                        "{loss:?} {w:?} at {idx:?}: analytic {} vs fd {fd}",
                        g[idx]
                    );
                }
            }
        }
        // PyTorch's BCEWithLogitsLoss(pos_weight=pw) is mean(pw*y*softplus(-z) + (1-y)*softplus(z));
        // numpy: z = [[0.3, -1.7], [2.0, 0.5]], y = [[1, 0], [1, 1]], pw = [2.0, 0.5]
        //   -> 0.441848 (0.330787 without pos_weight)
        let z = Array2::from_shape_vec((2, 2), vec![0.3, -1.7, 2.0, 0.5]).unwrap();
        let y = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 1.0, 1.0]).unwrap();
        let ce = Loss::CrossEntropy { smoothing: 0.0 };
        let (with, _) = ce.compute_tags(&z, &y, Some(&[2.0, 0.5]));
        let (without, _) = ce.compute_tags(&z, &y, None);
        assert!((with - 0.441848).abs() < 1e-5, "{with}");
        assert!((without - 0.330787).abs() < 1e-5, "{without}");
    }

    #[test]
    fn reference_values() {
        // Reference numbers, computed with numpy from the textbook formulas:
        //   z = [0.3, -1.7]; y = [1, 0]
        //   bce = mean(log1p(exp(-z)) * y + log1p(exp(z)) * (1 - y))            -> 0.361071
        //   smoothing 0.2: t = y * 0.8 + 0.1; mean(softplus(z) - t * z)         -> 0.461071
        //   hinge = mean(max(0, 1 - s z)), s = 2y - 1                          -> 0.35
        //   z3 = [[1, 2, 3]], y = 2: cce = logsumexp(z3) - 3                    -> 0.407606
        let z = Array2::from_shape_vec((2, 1), vec![0.3, -1.7]).unwrap();
        let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        close(
            Loss::CrossEntropy { smoothing: 0.0 }
                .compute(&z, &[1, 0], None)
                .0,
            0.361071,
        );
        close(
            Loss::CrossEntropy { smoothing: 0.2 }
                .compute(&z, &[1, 0], None)
                .0,
            0.461071,
        );
        close(Loss::Hinge.compute(&z, &[1, 0], None).0, 0.35);
        let z3 = Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap();
        close(
            Loss::CrossEntropy { smoothing: 0.0 }
                .compute(&z3, &[2], None)
                .0,
            0.407606,
        );
        // Focal with gamma 0 and alpha 0.5 is half the cross-entropy.
        close(
            Loss::Focal {
                gamma: 0.0,
                alpha: 0.5,
            }
            .compute(&z, &[1, 0], None)
            .0,
            0.361071 / 2.0,
        );
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let z = Array2::from_shape_vec((2, 1), vec![80.0, -80.0]).unwrap();
        for loss in all_losses() {
            let (l, g) = loss.compute(&z, &[0, 1], None);
            assert!(
                l.is_finite() && g.iter().all(|v| v.is_finite()),
                "{loss:?}: {l} {g:?}"
            );
        }
        let z = Array2::from_shape_vec((1, 3), vec![100.0, -100.0, 0.0]).unwrap();
        for loss in all_losses() {
            let (l, g) = loss.compute(&z, &[1], None);
            assert!(
                l.is_finite() && g.iter().all(|v| v.is_finite()),
                "{loss:?}: {l} {g:?}"
            );
        }
    }
}
