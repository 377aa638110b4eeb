//! The columns of a kernel narrower than a block of [`super::CW`] (a binary head's one output
//! column, and what is left after the full blocks): kernel rows 16 at a time, so each batch row's
//! inputs are read contiguously, with the same sums in the same order as `tile::<1>` row by row.

use super::{update_row, Ctx};
use crate::head::kernels::Isa;

/// One column narrower than a block (a binary head's only one), kernel rows `k0..k1`: with FMA
/// instructions where `isa` has them (the portable code calls the C library's `fmaf`, one value
/// at a time).
///
/// # Safety
/// As [`tail_rows`]; `isa` must be supported by this CPU.
pub(super) unsafe fn tail_column(c: &Ctx, k0: usize, k1: usize, isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        // SAFETY: AVX2 and FMA are part of both SIMD levels, which `isa` says the CPU has.
        return unsafe { tail_rows_fma(c, k0, k1) };
    }
    let _ = isa;
    // SAFETY: as the caller promised.
    unsafe { tail_rows(c, k0, k1) }
}

/// `super::tile` for one column over kernel rows `k0..k1`, `R` rows at a time so that each batch
/// row's inputs are read contiguously (and vectorise): every value is the same sum in the same
/// order as `tile::<1>` row by row, so the bits do not change.
///
/// # Safety
/// `c` must point into its chunk (as [`super::fused_step`] builds it), `k0..k1` be the chunk's rows and
/// `c.c0 < u`.
#[inline(always)]
unsafe fn tail_rows(c: &Ctx, k0: usize, k1: usize) {
    const R: usize = 16;
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let inp = c.inp;
        let mut k = k0;
        while k < k1 {
            let r = R.min(k1 - k);
            let mut a = [0f32; R];
            for i in 0..inp.n {
                let g = *c.g.add(i * c.u);
                let xs = &inp.x[i * c.d + k..i * c.d + k + r];
                for (v, &x) in a.iter_mut().zip(xs) {
                    *v = x.mul_add(g, *v);
                }
            }
            for (kk, &v) in a.iter().enumerate().take(r) {
                update_row::<1>(c, k + kk, &mut [v]);
            }
            if let Some((xn, _)) = inp.next {
                for i in 0..c.m {
                    let zi = c.z.0.add(i * c.u);
                    let mut z = *zi;
                    for (kk, &x) in xn[i * c.d + k..i * c.d + k + r].iter().enumerate() {
                        z = x.mul_add(*c.w.0.add((k + kk) * c.u + c.c0), z);
                    }
                    *zi = z;
                }
            }
            k += r;
        }
    }
}

/// [`tail_rows`] compiled with FMA instructions.
///
/// # Safety
/// As [`tail_rows`]; the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_rows_fma(c: &Ctx, k0: usize, k1: usize) {
    // SAFETY: as the caller promised.
    unsafe { tail_rows(c, k0, k1) }
}
