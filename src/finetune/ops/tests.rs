//! Tests of [`super`] (ops.rs).

use super::*;
use candle_core::{DType, Device, Var};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = crate::util::rng::Rng(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// candle's own conv2d (direct im2col forward) as the reference for the forward pass.
#[test]
fn im2col_conv_and_depthwise_match_candle_conv2d() {
    for &(c, o, k, s, h) in &[
        (3, 4, 3, 1, 6),
        (2, 5, 3, 2, 7),
        (4, 3, 1, 1, 5),
        (3, 2, 5, 2, 9),
    ] {
        let x = rand(&[2, c, h, h], 1);
        let w = rand(&[o, c, k, k], 2);
        let ours = conv2d(&x, &w, s, s).unwrap();
        let theirs = x.conv2d(&w, 0, s, 1, 1).unwrap();
        let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            d.to_scalar::<f64>().unwrap() < 1e-12,
            "conv c{c} o{o} k{k} s{s}"
        );
        let wd = rand(&[c, 1, k, k], 3);
        let ours = depthwise(&x, &wd, s, s).unwrap();
        let theirs = x.conv2d(&wd, 0, s, 1, c).unwrap();
        let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            d.to_scalar::<f64>().unwrap() < 1e-12,
            "depthwise c{c} k{k} s{s}"
        );
    }
}

/// Checks every `step`-th value of `var`'s gradient in `grads` against central differences of
/// `loss` evaluated at `var`'s values with one of them moved (f64, eps 1e-6).
pub(crate) fn check_gradient(
    what: &str,
    var: &Var,
    grads: &candle_core::backprop::GradStore,
    step: usize,
    loss: impl Fn(&Tensor) -> f64,
) {
    let g: Vec<f64> = grads
        .get(var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-6;
    for i in (0..base.len()).step_by(step) {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            loss(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "{what}[{i}]: fd {fd} vs {}",
            g[i]
        );
    }
}

/// Central finite differences in f64 against the analytic gradients of `sum(y * r)`.
#[test]
fn gradients_match_finite_differences() {
    type F = fn(&Tensor, &Tensor) -> CResult<Tensor>;
    let cases: [(&str, F, [usize; 4], [usize; 4]); 6] = [
        (
            "conv 3x3 s1",
            |x, w| conv2d(x, w, 1, 1),
            [2, 3, 5, 5],
            [4, 3, 3, 3],
        ),
        (
            "conv 3x3 s2 odd",
            |x, w| conv2d(x, w, 2, 2),
            [2, 2, 7, 6],
            [3, 2, 3, 3],
        ),
        (
            "conv 1x1",
            |x, w| conv2d(x, w, 1, 1),
            [2, 3, 4, 4],
            [5, 3, 1, 1],
        ),
        (
            "depthwise 3x3 s2",
            |x, w| depthwise(x, w, 2, 2),
            [2, 3, 7, 7],
            [3, 1, 3, 3],
        ),
        // w only scales the pooled input, so both gradients go through the pool.
        (
            "max pool 3x3 s2",
            |x, w| pool2d(&x.broadcast_mul(w)?, true, (3, 3), (2, 2)),
            [2, 3, 7, 7],
            [1, 3, 1, 1],
        ),
        (
            "avg pool 2x2 s2 odd",
            |x, w| pool2d(&x.broadcast_mul(w)?, false, (2, 2), (2, 2)),
            [2, 3, 7, 5],
            [1, 3, 1, 1],
        ),
    ];
    for (name, f, xs, ws) in cases {
        let x = Var::from_tensor(&rand(&xs, 5)).unwrap();
        let w = Var::from_tensor(&rand(&ws, 6)).unwrap();
        let y = f(x.as_tensor(), w.as_tensor()).unwrap();
        let r = rand(y.dims(), 7);
        let loss = |x: &Tensor, w: &Tensor| -> f64 {
            (f(x, w).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (which, var) in [("x", &x), ("w", &w)] {
            check_gradient(&format!("{name} d{which}"), var, &grads, 7, |t| {
                if which == "x" {
                    loss(t, w.as_tensor())
                } else {
                    loss(x.as_tensor(), t)
                }
            });
        }
        assert_eq!(x.dtype(), DType::F64);
    }
}
