//! Tests of [`super`] (wide.rs).

use super::*;
use crate::head::kernels::{limit_isa, Isa};

type MakeOptimizer = Box<dyn Fn() -> Box<dyn Optimizer>>;

thread_local! {
    /// The columns past the last full block computed as before `tail_rows`: `tile::<1>` row by
    /// row (the reference the test below holds `tail_rows` to).
    pub(super) static ROW_BY_ROW_TAIL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Seeded random inputs of a step of `dims` (`d, u, n, m`): the batch, its gradient, the next
/// batch and the kernel.
fn step_inputs(dims: (usize, usize, usize, usize), seed: u64) -> [Vec<f32>; 4] {
    let (d, u, n, m) = dims;
    let mut rng = Rng(seed);
    let mut v = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
    [v(n * d), v(n * u), v(m * d), v(d * u)]
}

/// What the path comparisons run: three steps with scaled and clipped gradients, on one thread.
fn three_clipped_steps(
    make: &dyn Fn() -> Box<dyn Optimizer>,
    dims: (usize, usize, usize, usize),
    [x, g, xn, w0]: &[Vec<f32>; 4],
) -> (Vec<f32>, Vec<f32>) {
    run_steps(make, dims, x, g, xn, w0, 3, (0.7, Some(0.4)), 1)
}

/// The narrow columns computed 16 kernel rows at a time (`tail_rows`, with FMA instructions)
/// give the bits of the row-by-row `tile::<1>` they replace: a binary head's one column, and the
/// columns after full blocks; row counts that are and are not multiples of 16; every optimizer,
/// on every instruction set this CPU has.
#[test]
fn narrow_columns_give_the_row_by_row_bits() {
    let opts: Vec<MakeOptimizer> = vec![
        Box::new(|| Box::new(Sgd::new(0.1, 0.9, true, 0.01, 1e-3))),
        Box::new(|| Box::new(RmsProp::new(0.01, 1e-3))),
        Box::new(|| Box::new(Adam::new(0.01, 1e-3, true))),
    ];
    for dims in [(37, 1, 9, 5), (64, 1, 32, 32), (29, 70, 6, 5), (5, 3, 4, 2)] {
        let inputs = step_inputs(dims, 11);
        for make in &opts {
            for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
                if isa > crate::head::kernels::isa() {
                    continue;
                }
                let _limit = limit_isa(isa);
                let run = |old: bool| {
                    ROW_BY_ROW_TAIL.set(old);
                    let r = three_clipped_steps(make.as_ref(), dims, &inputs);
                    ROW_BY_ROW_TAIL.set(false);
                    r
                };
                assert_eq!(run(false), run(true), "{dims:?} {isa:?}");
            }
        }
    }
}

/// Runs `steps` fused steps from `w0` with a fresh optimizer from `make`; returns the kernel
/// and the next batch's pre-activation.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    make: &dyn Fn() -> Box<dyn Optimizer>,
    (d, u, n, m): (usize, usize, usize, usize),
    x: &[f32],
    g: &[f32],
    xn: &[f32],
    w0: &[f32],
    steps: usize,
    (scale, clip_value): (f32, Option<f32>),
    threads: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut o = make();
    let mut w = w0.to_vec();
    let mut z = vec![0f32; m * u];
    for _ in 0..steps {
        let rule = o.begin_step(&[d * u]);
        let (s1, s2) = o.state(0);
        let inp = StepInputs {
            x,
            n,
            g,
            next: Some((xn, m)),
            rule,
            scale,
            clip_value,
        };
        let out = StepOutputs {
            w: &mut w,
            s1,
            s2,
            z: &mut z,
        };
        fused_step(&inp, out, d, u, threads);
    }
    (w, z)
}

/// The SIMD tiles and the portable code sum in the same order with the same fused
/// multiply-adds: with SGD, identical bits, for every instruction set this CPU has (AVX2 too on
/// an AVX-512 machine, through [`limit_isa`]). RMSprop and Adam take an approximate reciprocal
/// square root on AVX-512: within 1e-6 there; AVX2 divides by the exact square root: the same bits.
#[test]
fn simd_and_portable_paths_agree() {
    let dims = (29, 200, 6, 5);
    let inputs = step_inputs(dims, 4);
    let opts: Vec<(bool, MakeOptimizer)> = vec![
        (
            true,
            Box::new(|| Box::new(Sgd::new(0.1, 0.9, true, 0.01, 1e-3))),
        ),
        (false, Box::new(|| Box::new(RmsProp::new(0.01, 1e-3)))),
        (false, Box::new(|| Box::new(Adam::new(0.01, 1e-3, true)))),
    ];
    let isas: Vec<Isa> = [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| i <= crate::head::kernels::isa())
        .collect();
    for (exact, make) in &opts {
        let run = |isa: Isa| {
            let _limit = limit_isa(isa);
            three_clipped_steps(make.as_ref(), dims, &inputs)
        };
        let portable = run(Isa::Portable);
        for &isa in &isas {
            let simd = run(isa);
            if *exact || isa == Isa::Avx2 {
                assert_eq!(portable, simd, "{isa:?}");
            } else {
                for (a, b) in portable
                    .0
                    .iter()
                    .zip(&simd.0)
                    .chain(portable.1.iter().zip(&simd.1))
                {
                    assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} vs {b}");
                }
            }
        }
    }
    assert!(
        !isas.is_empty() || crate::head::kernels::isa() == Isa::Portable,
        "no SIMD path was compared"
    );
}

/// The first RMSprop and Adam step from zero weights is `-lr * g / sqrt(...)` itself: the SIMD
/// reciprocal square root (and Adam's reciprocal) must match the exact one to 1e-6 of each
/// value, for gradients over nine orders of magnitude and exact zeros (without the Newton step
/// the 14-bit estimate is off by up to 6e-5).
#[test]
fn approximate_reciprocal_square_roots_are_accurate_to_1e_6() {
    let dims = (7, 64, 3, 1);
    let (d, u, n, m) = dims;
    let mut rng = Rng(8);
    let x: Vec<f32> = (0..n * d)
        .map(|i| if i % 7 == 3 { 0.0 } else { rng.normal() })
        .collect();
    let g: Vec<f32> = (0..n * u)
        .map(|i| rng.normal() * 10f32.powi((i % 10) as i32 - 6))
        .collect();
    let xn = vec![1.0; m * d];
    let w0 = vec![0.0; d * u];
    let opts: Vec<Box<dyn Fn() -> Box<dyn Optimizer>>> = vec![
        Box::new(|| Box::new(RmsProp::new(0.01, 0.0))),
        Box::new(|| Box::new(Adam::new(0.01, 0.0, false))),
    ];
    for make in &opts {
        let exact = {
            let _limit = limit_isa(Isa::Portable);
            run_steps(make.as_ref(), dims, &x, &g, &xn, &w0, 1, (1.0, None), 1).0
        };
        let simd = run_steps(make.as_ref(), dims, &x, &g, &xn, &w0, 1, (1.0, None), 1).0;
        assert!(exact.contains(&0.0) && exact.iter().any(|&v| v != 0.0));
        for (a, b) in exact.iter().zip(&simd) {
            assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} vs {b}");
        }
    }
}
use crate::head::optim::{Adam, Optimizer, RmsProp, Sgd};
use crate::util::rng::Rng;

/// The fused step against the plain three passes (gradient, optimizer, next forward), for
/// each optimizer, odd shapes (column remainder, row remainder) and 1 or 3 threads.
#[test]
fn fused_step_matches_the_plain_passes() {
    let (d, u, n, m) = (13, 70, 5, 3);
    let mut rng = Rng(9);
    let mut v = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
    let (x, g, xn, w0) = (v(n * d), v(n * u), v(m * d), v(d * u));
    let opts: Vec<Box<dyn Fn() -> Box<dyn Optimizer>>> = vec![
        Box::new(|| Box::new(Sgd::new(0.1, 0.9, true, 0.01, 1e-3))),
        Box::new(|| Box::new(Adam::new(0.01, 1e-2, true))),
        Box::new(|| Box::new(RmsProp::new(0.01, 0.0))),
    ];
    for make in &opts {
        for threads in [1, 3] {
            // Plain: gW = x^T g (scaled, clamped), rule, z = xn w.
            let mut plain = make();
            let mut wp = w0.clone();
            let mut gw = vec![0f32; d * u];
            for k in 0..d {
                for j in 0..u {
                    let s: f32 = (0..n).map(|i| x[i * d + k] * g[i * u + j]).sum();
                    gw[k * u + j] = (s * 0.5).clamp(-0.3, 0.3);
                }
            }
            for _ in 0..2 {
                plain.step(&mut [wp.as_mut_slice()], &[gw.as_slice()]);
            }
            let zp: Vec<f32> = (0..m * u)
                .map(|idx| {
                    (0..d)
                        .map(|k| xn[(idx / u) * d + k] * wp[k * u + idx % u])
                        .sum()
                })
                .collect();
            // Fused, two steps as well.
            let mut fused = make();
            let mut wf = w0.clone();
            let mut z = vec![0f32; m * u];
            for _ in 0..2 {
                let rule = fused.begin_step(&[d * u]);
                let (s1, s2) = fused.state(0);
                let inp = StepInputs {
                    x: &x,
                    n,
                    g: &g,
                    next: Some((&xn, m)),
                    rule,
                    scale: 0.5,
                    clip_value: Some(0.3),
                };
                fused_step(
                    &inp,
                    StepOutputs {
                        w: &mut wf,
                        s1,
                        s2,
                        z: &mut z,
                    },
                    d,
                    u,
                    threads,
                );
            }
            for (a, b) in wp.iter().zip(&wf).chain(zp.iter().zip(&z)) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{a} vs {b} ({threads} threads)"
                );
            }
        }
    }
}

#[test]
fn thread_count_does_not_change_a_bit() {
    let (d, u, n, m) = (37, 96, 4, 4);
    let mut rng = Rng(2);
    let mut v = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f32>>();
    let (x, g, xn, w0) = (v(n * d), v(n * u), v(m * d), v(d * u));
    let run = |threads| {
        let mut o = Adam::new(0.01, 0.0, false);
        let mut w = w0.clone();
        let mut z = vec![0f32; m * u];
        let rule = o.begin_step(&[d * u]);
        let (s1, s2) = o.state(0);
        let inp = StepInputs {
            x: &x,
            n,
            g: &g,
            next: Some((&xn, m)),
            rule,
            scale: 1.0,
            clip_value: None,
        };
        fused_step(
            &inp,
            StepOutputs {
                w: &mut w,
                s1,
                s2,
                z: &mut z,
            },
            d,
            u,
            threads,
        );
        (w, z)
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(5));
}
