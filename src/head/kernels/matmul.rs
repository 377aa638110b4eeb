//! `x w` for a wide dense kernel (VGG-16's 25,088 flattened features x 256 units) in AVX-512
//! register tiles: validation, `evaluate` and `score` run it on every row, and ndarray's `dot`
//! (matrixmultiply, AVX2) takes twice as long on this shape.
//!
//! Blocking: the kernel is walked in blocks of `KC` rows (one block stays in the second-level
//! cache); for each block, each group of `MR` input rows (in the first-level cache) updates its
//! `MR x 32` output tile held in 24 registers. Each output value is summed over `k` in order with
//! fused multiply-adds in one accumulator, and threads split the input rows: the result does not
//! depend on the thread count.

/// Kernel rows per block: `KC x u` floats (256 KB for u = 256) stay in the second-level cache.
const KC: usize = 256;
/// Input rows per register tile: 12 rows x 2 registers = 24 accumulators of the 32.
const MR: usize = 12;
/// Output columns per register tile (two AVX-512 registers).
const NR: usize = 32;

/// `x w` (`x`: `m x d`, `w`: `d x u`, both row-major) on `threads` threads (0 = all cores), or
/// `None` where this CPU has no AVX-512 or `u` is not a multiple of 32 (the caller falls back).
pub fn matmul_wide(
    x: &[f32],
    m: usize,
    w: &[f32],
    d: usize,
    u: usize,
    threads: usize,
) -> Option<Vec<f32>> {
    assert_eq!(x.len(), m * d, "input size");
    assert_eq!(w.len(), d * u, "kernel size");
    #[cfg(target_arch = "x86_64")]
    if u.is_multiple_of(NR) && u > 0 && super::isa() == super::Isa::Avx512 {
        let mut z = vec![0f32; m * u];
        let blocks = m.div_ceil(MR);
        let threads = super::wide::thread_count(threads).clamp(1, blocks.max(1));
        let rows_per = blocks.div_ceil(threads) * MR;
        let work = |(t, zt): (usize, &mut [f32])| {
            let r0 = t * rows_per;
            let rows = zt.len() / u;
            // SAFETY: AVX-512F (and FMA, which every AVX-512F CPU has) was detected above; `zt` holds rows r0..r0 + rows of the output
            // and the asserts above bound every read of `x` and `w`.
            unsafe { avx512::rows(&x[r0 * d..(r0 + rows) * d], rows, w, d, u, zt) }
        };
        if threads == 1 {
            work((0, &mut z));
        } else {
            use rayon::prelude::*;
            z.par_chunks_mut(rows_per * u).enumerate().for_each(|p| {
                let _ftz = super::FlushDenormals::new();
                work(p)
            });
        }
        return Some(z);
    }
    let _ = threads;
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KC, MR, NR};
    use std::arch::x86_64::*;

    /// All `m` rows of `x` (row-major, `m x d`) times `w` into `z` (`m x u`, zeroed).
    #[target_feature(enable = "avx512f,fma")]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; `x` holds `m` rows of `d`, `w` is `d x u` with `u` a
    /// multiple of 32, and `z` holds `m` rows of `u`.
    pub(super) unsafe fn rows(x: &[f32], m: usize, w: &[f32], d: usize, u: usize, z: &mut [f32]) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            let (xp, wp, zp) = (x.as_ptr(), w.as_ptr(), z.as_mut_ptr());
            let mut kb = 0;
            while kb < d {
                let ke = (kb + KC).min(d);
                let mut i = 0;
                while i + MR <= m {
                    for j in (0..u).step_by(NR) {
                        tile::<MR>(xp.add(i * d), wp.add(j), zp.add(i * u + j), (d, u), kb, ke);
                    }
                    i += MR;
                }
                while i < m {
                    for j in (0..u).step_by(NR) {
                        tile::<1>(xp.add(i * d), wp.add(j), zp.add(i * u + j), (d, u), kb, ke);
                    }
                    i += 1;
                }
                kb = ke;
            }
        }
    }

    /// Adds `x[0..R, kb..ke] w[kb..ke, 0..32]` to `z[0..R, 0..32]` (`x` rows of `d`, `w` and `z`
    /// rows of `u`).
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; the tile's rows and columns must lie inside `x`, `w` and
    /// `z` as [`rows`] passes them.
    unsafe fn tile<const R: usize>(
        x: *const f32,
        w: *const f32,
        z: *mut f32,
        (d, u): (usize, usize),
        kb: usize,
        ke: usize,
    ) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_loadu_ps(z.add(r * u));
                a[1] = _mm512_loadu_ps(z.add(r * u + 16));
            }
            for k in kb..ke {
                let w0 = _mm512_loadu_ps(w.add(k * u));
                let w1 = _mm512_loadu_ps(w.add(k * u + 16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(r * d + k));
                    a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
                    a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(z.add(r * u), a[0]);
                _mm512_storeu_ps(z.add(r * u + 16), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// Against a float64 reference on shapes with remainders everywhere (rows not a multiple of
    /// 12, kernel rows not a multiple of the block), and the same bits on 1, 2 and 5 threads.
    #[test]
    fn matches_a_float64_product_whatever_the_thread_count() {
        let (m, d, u) = (29, 600, 64);
        let mut rng = Rng(3);
        let x: Vec<f32> = (0..m * d).map(|_| rng.normal()).collect();
        let w: Vec<f32> = (0..d * u).map(|_| rng.normal()).collect();
        let Some(z) = matmul_wide(&x, m, &w, d, u, 1) else {
            eprintln!("no AVX-512 here: the fallback is ndarray's dot");
            return;
        };
        for i in 0..m {
            for j in 0..u {
                let r: f64 = (0..d)
                    .map(|k| x[i * d + k] as f64 * w[k * u + j] as f64)
                    .sum();
                let v = z[i * u + j] as f64;
                assert!(
                    (v - r).abs() <= 1e-4 * (1.0 + r.abs()),
                    "{v} vs {r} at {i},{j}"
                );
            }
        }
        for t in [2, 5] {
            assert_eq!(matmul_wide(&x, m, &w, d, u, t), Some(z.clone()));
        }
        assert_eq!(matmul_wide(&x, m, &w[..d * 48], d, 48, 1), None);
    }
}
