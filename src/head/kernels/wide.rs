//! The fused step of the head's first dense layer, where nearly all the work is when the input is wide
//! (VGG-16's flattened 7x7x512 = 25,088 features into 256 units: 6.4 M weights).
//!
//! One pass over the kernel `W` (`d x u`, row-major) does, tile by tile while the tile is in cache:
//! the weight gradient `X_b^T G` for the tile, the optimizer's [`Rule`] on the tile and its state,
//! and the next batch's pre-activation `X_next W` with the updated tile. The plain path does the same
//! maths in three passes over 6.4 M weights plus their gradient; this one reads and writes the
//! weights and optimizer state once per step.
//!
//! Threads share out `CHUNKS` fixed row ranges of the kernel, each summing its own partial
//! pre-activation; the partial sums are added in chunk order, so every output value is summed in
//! the same order whatever the thread count: results do not depend on `threads`. Products are
//! accumulated with fused multiply-add, and on AVX-512 RMSprop and Adam use a Newton-refined
//! reciprocal square root, so results differ from the plain path in the last bits (tests bound the
//! differences).

use crate::head::optim::Rule;

/// Columns per block: 64 floats are four AVX-512 or eight AVX2 registers per row.
const CW: usize = 64;

/// Row ranges of the kernel, the threads' unit of work. Their number is fixed, so every output
/// value is summed in the same order (rows in order within a chunk, then the chunks' partial sums
/// in order) whatever the thread count.
const CHUNKS: usize = 8;

/// Everything one fused step reads.
pub struct StepInputs<'a> {
    /// The current batch, `n x d` row-major.
    pub x: &'a [f32],
    pub n: usize,
    /// Gradient of the loss with respect to the layer's pre-activation: `n x u` row-major.
    pub g: &'a [f32],
    /// The next batch, `m x d` row-major, and `m`; its pre-activation (without bias) goes to `z`.
    pub next: Option<(&'a [f32], usize)>,
    pub rule: Rule,
    /// Multiplies the gradient (global-norm clipping); 1 when not clipping.
    pub scale: f32,
    /// Clamp of each gradient value.
    pub clip_value: Option<f32>,
}

/// The layer's tensors the step writes: `w`, `s1`, `s2` are `d x u` (`s2` may be empty), `z` is
/// `m x u` (overwritten).
pub struct StepOutputs<'a> {
    pub w: &'a mut [f32],
    pub s1: &'a mut [f32],
    pub s2: &'a mut [f32],
    pub z: &'a mut [f32],
}

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: the kernel's rows are split into `CHUNKS` fixed, disjoint row ranges; each thread writes
// only rows of the chunks it was given (of `w`, `s1`, `s2`) and only those chunks' own partial
// outputs, and reads the gradient, which nobody writes during the step. (Handing each thread its
// rows as `split_at_mut` slices was measured 4-8% slower per step on this 2-core VM, so the rows
// travel as pointers; `fused_step` asserts every size before any thread starts.)
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

/// Runs one fused step on `threads` threads (0 = all cores). `d`, `u`: kernel shape.
pub fn fused_step(inp: &StepInputs, out: StepOutputs, d: usize, u: usize, threads: usize) {
    let (n, m) = (inp.n, inp.next.map_or(0, |(_, m)| m));
    assert_eq!(out.w.len(), d * u, "kernel size");
    assert_eq!(out.s1.len(), d * u, "optimizer state size");
    assert!(
        out.s2.is_empty() || out.s2.len() == d * u,
        "optimizer state size"
    );
    assert_eq!(inp.x.len(), inp.n * d, "batch size");
    assert_eq!(inp.g.len(), inp.n * u, "gradient size");
    assert_eq!(out.z.len(), m * u, "output size");
    if let Some((x, m)) = inp.next {
        assert_eq!(x.len(), m * d, "next batch size");
    }
    let isa = super::isa();
    let has_s2 = !out.s2.is_empty();
    let (w, s1, s2) = (
        Ptr(out.w.as_mut_ptr()),
        Ptr(out.s1.as_mut_ptr()),
        Ptr(out.s2.as_mut_ptr()),
    );
    // Blocks of CW columns, then single columns for the remainder.
    let full = u / CW;
    let blocks: Vec<(usize, usize)> = (0..full)
        .map(|b| (b * CW, CW))
        .chain((full * CW..u).map(|c| (c, 1)))
        .collect();
    let chunks = CHUNKS.min(d).max(1);
    let threads = thread_count(threads).clamp(1, chunks);
    // The gradient in cache-aligned rows, read by every thread.
    let mut gbuf = Aligned::zeroed(n * u);
    gbuf.as_mut().copy_from_slice(inp.g);
    let gp = Ptr(gbuf.as_mut().as_mut_ptr());
    // One partial pre-activation per chunk, each on its own cache lines: `z` is written for every
    // tile, and lines shared between cores would bounce between them.
    let zlen = (m * u).next_multiple_of(16);
    let mut zparts = Aligned::zeroed(chunks * zlen);
    let zp = Ptr(zparts.as_mut().as_mut_ptr());
    // Each thread takes a contiguous run of chunks and walks their kernel rows in order, so its
    // reads and writes of `w` and the optimizer state are one sequential run.
    let work = |t: usize| {
        let (gp, zp) = (gp, zp);
        for ch in t * chunks / threads..(t + 1) * chunks / threads {
            let (k0, k1) = (ch * d / chunks, (ch + 1) * d / chunks);
            let ctx = |&(c0, _): &(usize, usize)| Ctx {
                inp,
                d,
                u,
                m,
                c0,
                w,
                s1,
                s2: has_s2.then_some(s2),
                // Inside the buffers when they have rows (n, m > 0); with none they are never read,
                // and wrapping arithmetic keeps the empty case defined.
                g: gp.0.wrapping_add(c0),
                z: Ptr(zp.0.wrapping_add(ch * zlen + c0)),
            };
            let full: Vec<Ctx> = blocks.iter().filter(|b| b.1 == CW).map(ctx).collect();
            let tail: Vec<Ctx> = blocks.iter().filter(|b| b.1 != CW).map(ctx).collect();
            // SAFETY: chunks are disjoint row ranges (k0..k1) of w/s1/s2 and of the partial
            // outputs; the kernels touch only rows k0..k1 and columns c0..c0 + width < u of them,
            // within the sizes asserted above; `isa` was detected on this CPU.
            unsafe {
                dispatch(&full, k0, k1, isa);
                for c in &tail {
                    #[cfg(test)]
                    if tests::ROW_BY_ROW_TAIL.get() {
                        (k0..k1).for_each(|k| tile::<1>(c, k));
                        continue;
                    }
                    tail_column(c, k0, k1, isa);
                }
            }
        }
    };
    if threads == 1 {
        work(0);
    } else {
        // rayon's pool threads live for the whole run: spawning threads per step costs stack
        // mappings and cross-core TLB flushes, which a virtual machine makes expensive.
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(|t| {
            let _ftz = super::FlushDenormals::new();
            work(t)
        });
    }
    let parts = zparts.as_mut();
    out.z.copy_from_slice(&parts[..m * u]);
    for ch in 1..chunks {
        for (o, p) in out.z.iter_mut().zip(&parts[ch * zlen..ch * zlen + m * u]) {
            *o += p;
        }
    }
}

/// `threads`, or every core for 0.
pub(super) fn thread_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
}

/// A zeroed `f32` buffer whose first element sits on a 64-byte boundary (a cache line, and one
/// AVX-512 register).
struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let start = buf.as_ptr().align_offset(64).min(16);
        Aligned { buf, start, len }
    }
    fn as_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

struct Ctx<'a, 'b> {
    inp: &'a StepInputs<'b>,
    d: usize,
    u: usize,
    m: usize,
    c0: usize,
    /// Row 0 of the kernel and of the optimizer state (only the chunk's rows are accessed).
    w: Ptr,
    s1: Ptr,
    s2: Option<Ptr>,
    /// This block's first column of the aligned gradient (`n` rows of `u`).
    g: *const f32,
    /// This block's first column of its chunk's partial output (`m` rows of `u`).
    z: Ptr,
}

/// Kernel rows `k0..k1` of full-width blocks, with `isa` (what [`super::isa`] gave the caller).
///
/// # Safety
/// Every block's pointers must cover rows `k0..k1` and columns `c0..c0 + CW` of their matrices (as
/// [`fused_step`] builds them), no other thread may touch those rows, and `isa` must be supported by
/// this CPU.
unsafe fn dispatch(blocks: &[Ctx], k0: usize, k1: usize, isa: super::Isa) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the CPU has the instruction set (`isa` comes from detection); bounds as above.
        super::Isa::Avx512 => return unsafe { simd::blocks_avx512(blocks, k0, k1) },
        super::Isa::Avx2 => return unsafe { simd::blocks_avx2(blocks, k0, k1) },
        super::Isa::Portable => {}
    }
    let _ = isa;
    for k in k0..k1 {
        for c in blocks {
            // SAFETY: as the caller promised.
            unsafe { tile::<CW>(c, k) };
        }
    }
}

/// Scales/clamps one row of the gradient tile and applies the optimizer rule to kernel row `k`.
#[inline(always)]
///
/// # Safety
/// `c` must point into its chunk (as [`fused_step`] builds it) and `k` be one of the chunk's rows;
/// no other reference to those elements may be alive.
unsafe fn update_row<const W: usize>(c: &Ctx, k: usize, a: &mut [f32; W]) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let inp = c.inp;
        if inp.scale != 1.0 {
            for v in a.iter_mut() {
                *v *= inp.scale;
            }
        }
        if let Some(cv) = inp.clip_value {
            for v in a.iter_mut() {
                *v = v.clamp(-cv, cv);
            }
        }
        let s2: &mut [f32] = match c.s2 {
            Some(p) => c.row(p, k, W),
            None => &mut [],
        };
        inp.rule.apply(c.row(c.w, k, W), a, c.row(c.s1, k, W), s2);
    }
}

impl Ctx<'_, '_> {
    /// Columns `c0..c0 + w` of kernel row `k` of a `* x u` matrix.
    ///
    /// # Safety
    /// `k` must be one of the chunk's rows (`k0..k1`), `c0 + w <= u`, and no other reference to
    /// those elements may be alive while the returned one is.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, p: Ptr, k: usize, w: usize) -> &mut [f32] {
        // SAFETY: as the caller promised, the range lies inside the matrix, in the chunk's rows.
        unsafe { std::slice::from_raw_parts_mut(p.0.add(k * self.u + self.c0), w) }
    }
}

/// Portable version of one kernel row (`W` columns): the same sums in the same order as the SIMD
/// versions, so every path gives the same bits.
///
/// # Safety
/// `c` must point into its chunk (as [`fused_step`] builds it), `k` be one of the chunk's rows and
/// `c0 + W <= u`.
unsafe fn tile<const W: usize>(c: &Ctx, k: usize) {
    // SAFETY: the caller upholds this function's contract (# Safety above).
    unsafe {
        let inp = c.inp;
        let n = inp.n;
        let mut a = [0f32; W];
        for i in 0..n {
            let x = inp.x[i * c.d + k];
            for (j, v) in a.iter_mut().enumerate() {
                *v = x.mul_add(*c.g.add(i * c.u + j), *v);
            }
        }
        update_row::<W>(c, k, &mut a);
        if let Some((xn, _)) = inp.next {
            let w: &[f32] = c.row(c.w, k, W);
            for i in 0..c.m {
                let x = xn[i * c.d + k];
                let zi = std::slice::from_raw_parts_mut(c.z.0.add(i * c.u), W);
                for j in 0..W {
                    zi[j] = x.mul_add(w[j], zi[j]);
                }
            }
        }
    }
}

/// AVX-512 and AVX2+FMA versions of a `CW`-column (64) block: the gradient tile and the next batch's
/// accumulation are kept in registers, `R` kernel rows at a time.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles read best with explicit lane indices
mod simd {
    use super::{update_row, Ctx, Rule, CW};
    use std::arch::x86_64::*;

    /// Rows ahead of the current tile whose kernel and state are prefetched (the weights stream
    /// from the last-level cache or memory; hardware prefetch alone leaves the loop waiting).
    const PREFETCH_ROWS: usize = 16;

    /// Prefetches `rows` kernel rows from `k`, before `end` (this block's columns), of the kernel
    /// and its state.
    #[inline(always)]
    ///
    /// # Safety
    /// `c` must point into its chunk and `end` must not pass the chunk's last row (prefetches read
    /// nothing, but the addresses must stay inside the buffers).
    unsafe fn prefetch_rows(c: &Ctx, k: usize, rows: usize, end: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            for r in k..(k + rows).min(end) {
                let off = r * c.u + c.c0;
                for p in [Some(c.w), Some(c.s1), c.s2].into_iter().flatten() {
                    let a = p.0.add(off) as *const i8;
                    for line in 0..CW / 16 {
                        _mm_prefetch::<_MM_HINT_T0>(a.add(64 * line));
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA, and every block must point into its chunk with rows
    /// `k0..d` inside it.
    pub(super) unsafe fn blocks_avx512(blocks: &[Ctx], k0: usize, d: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            // Six rows of four registers: 24 accumulators of the 32 AVX-512 registers (measured 18%
            // faster per step than four rows on this machine).
            //
            // Per block, a group of GROUP tiles first takes its gradients and updates (stored to the
            // kernel, still in the first-level cache), then accumulates the next batch with them: an
            // update's long chain of dependent operations overlaps the next tile's multiply-adds instead
            // of stalling the forward accumulation right behind it. Same operations, same order.
            const GROUP: usize = 8;
            let mut k = k0;
            while k + 6 * GROUP <= d {
                for c in blocks {
                    for t in 0..GROUP {
                        prefetch_rows(c, k + 6 * t + PREFETCH_ROWS, 6, d);
                        step512::<6>(c, k + 6 * t);
                    }
                    for t in 0..GROUP {
                        forward512::<6>(c, k + 6 * t);
                    }
                }
                k += 6 * GROUP;
            }
            while k + 6 <= d {
                for c in blocks {
                    prefetch_rows(c, k + PREFETCH_ROWS, 6, d);
                    step512::<6>(c, k);
                    forward512::<6>(c, k);
                }
                k += 6;
            }
            while k + 4 <= d {
                for c in blocks {
                    step512::<4>(c, k);
                    forward512::<4>(c, k);
                }
                k += 4;
            }
            while k < d {
                for c in blocks {
                    step512::<1>(c, k);
                    forward512::<1>(c, k);
                }
                k += 1;
            }
        }
    }

    /// The gradient of kernel rows `k..k + R` (this block's columns) and their update.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; rows `k..k + R` must lie in `c`'s chunk.
    unsafe fn step512<const R: usize>(c: &Ctx, k: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            const V: usize = CW / 16;
            let inp = c.inp;
            let (n, x) = (inp.n, inp.x.as_ptr());
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for i in 0..n {
                let gp = c.g.add(i * c.u);
                let mut gv = [_mm512_setzero_ps(); V];
                for (q, v) in gv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(gp.add(16 * q));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*x.add(i * c.d + k + r));
                    for q in 0..V {
                        a[q] = _mm512_fmadd_ps(x, gv[q], a[q]);
                    }
                }
            }
            for (r, a) in acc.into_iter().enumerate() {
                update512(c, k + r, a);
            }
        }
    }

    /// Adds the next batch's products with the (updated) kernel rows `k..k + R` to the output.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; rows `k..k + R` must lie in `c`'s chunk.
    unsafe fn forward512<const R: usize>(c: &Ctx, k: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            const V: usize = CW / 16;
            let Some((xn, _)) = c.inp.next else {
                return;
            };
            let mut wt = [[_mm512_setzero_ps(); V]; R];
            for (r, t) in wt.iter_mut().enumerate() {
                let w = c.row(c.w, k + r, CW).as_ptr();
                for (q, v) in t.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(w.add(16 * q));
                }
            }
            let xn = xn.as_ptr();
            for i in 0..c.m {
                let zp = c.z.0.add(i * c.u);
                let mut z = [_mm512_setzero_ps(); V];
                for (q, v) in z.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(zp.add(16 * q));
                }
                for (r, t) in wt.iter().enumerate() {
                    let x = _mm512_set1_ps(*xn.add(i * c.d + k + r));
                    for q in 0..V {
                        z[q] = _mm512_fmadd_ps(x, t[q], z[q]);
                    }
                }
                for (q, v) in z.iter().enumerate() {
                    _mm512_storeu_ps(zp.add(16 * q), *v);
                }
            }
        }
    }

    /// Scales and clamps the gradient registers of kernel row `k`, applies the optimizer's rule and
    /// returns the updated kernel values.
    ///
    /// RMSprop's `1 / sqrt(v + eps)` and Adam's `1 / (sqrt(v) + eps)` use the 14-bit
    /// reciprocal (square root) instructions refined by one Newton step, as Eigen does for
    /// TensorFlow's CPU kernels (relative error about 3e-7): a square root and a division per value
    /// cost more divider cycles than all of the tile's multiply-adds together. SGD goes through
    /// [`Rule::apply`].
    ///
    /// Inlined into its `avx512f` caller (a `target_feature` function cannot be `inline(always)`).
    #[inline(always)]
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; row `k` must lie in `c`'s chunk.
    unsafe fn update512<const V: usize>(c: &Ctx, k: usize, mut a: [__m512; V]) -> [__m512; V] {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            let inp = c.inp;
            if inp.scale != 1.0 {
                let s = _mm512_set1_ps(inp.scale);
                for v in a.iter_mut() {
                    *v = _mm512_mul_ps(*v, s);
                }
            }
            if let Some(cv) = inp.clip_value {
                let (lo, hi) = (_mm512_set1_ps(-cv), _mm512_set1_ps(cv));
                for v in a.iter_mut() {
                    *v = _mm512_min_ps(_mm512_max_ps(*v, lo), hi);
                }
            }
            let w = c.row(c.w, k, 16 * V).as_mut_ptr();
            let s1 = c.row(c.s1, k, 16 * V).as_mut_ptr();
            let mut out = [_mm512_setzero_ps(); V];
            match inp.rule {
                Rule::RmsProp { lr, rho, eps, wd } => {
                    let (lr, rho, rho1) = (
                        _mm512_set1_ps(lr),
                        _mm512_set1_ps(rho),
                        _mm512_set1_ps(1.0 - rho),
                    );
                    let (eps, wd) = (_mm512_set1_ps(eps), _mm512_set1_ps(wd));
                    for q in 0..V {
                        let p = _mm512_loadu_ps(w.add(16 * q));
                        let g = _mm512_fmadd_ps(wd, p, a[q]);
                        let v = _mm512_fmadd_ps(
                            rho,
                            _mm512_loadu_ps(s1.add(16 * q)),
                            _mm512_mul_ps(_mm512_mul_ps(rho1, g), g),
                        );
                        _mm512_storeu_ps(s1.add(16 * q), v);
                        let y = rsqrt512(_mm512_add_ps(v, eps));
                        out[q] = _mm512_fnmadd_ps(_mm512_mul_ps(lr, g), y, p);
                        _mm512_storeu_ps(w.add(16 * q), out[q]);
                    }
                }
                Rule::Adam {
                    lr,
                    alpha,
                    beta1,
                    beta2,
                    eps,
                    wd,
                    decoupled,
                } => {
                    let s2 = c
                        .row(c.s2.expect("Adam keeps two state slots"), k, 16 * V)
                        .as_mut_ptr();
                    let (b1, b2) = (_mm512_set1_ps(1.0 - beta1), _mm512_set1_ps(1.0 - beta2));
                    let lr_wd = _mm512_set1_ps(lr * wd);
                    let (alpha, eps, wd) = (
                        _mm512_set1_ps(alpha),
                        _mm512_set1_ps(eps),
                        _mm512_set1_ps(wd),
                    );
                    for q in 0..V {
                        let mut p = _mm512_loadu_ps(w.add(16 * q));
                        let mut g = a[q];
                        if decoupled {
                            p = _mm512_fnmadd_ps(lr_wd, p, p);
                        } else {
                            g = _mm512_fmadd_ps(wd, p, g);
                        }
                        let m = _mm512_loadu_ps(s1.add(16 * q));
                        let m = _mm512_fmadd_ps(_mm512_sub_ps(g, m), b1, m);
                        let v = _mm512_loadu_ps(s2.add(16 * q));
                        let v = _mm512_fmadd_ps(_mm512_fmsub_ps(g, g, v), b2, v);
                        _mm512_storeu_ps(s1.add(16 * q), m);
                        _mm512_storeu_ps(s2.add(16 * q), v);
                        // sqrt(v) = v / sqrt(v); v = 0 gives 0 through the lower bound.
                        let root = _mm512_mul_ps(
                            v,
                            rsqrt512(_mm512_max_ps(v, _mm512_set1_ps(f32::MIN_POSITIVE))),
                        );
                        let den = _mm512_add_ps(root, eps);
                        let r0 = _mm512_rcp14_ps(den);
                        let r = _mm512_mul_ps(r0, _mm512_fnmadd_ps(den, r0, _mm512_set1_ps(2.0)));
                        out[q] = _mm512_fnmadd_ps(_mm512_mul_ps(alpha, m), r, p);
                        _mm512_storeu_ps(w.add(16 * q), out[q]);
                    }
                }
                Rule::Sgd { .. } => {
                    let mut row = [0f32; CW];
                    for q in 0..V {
                        _mm512_storeu_ps(row.as_mut_ptr().add(16 * q), a[q]);
                    }
                    inp.rule
                        .apply(c.row(c.w, k, CW), &row, c.row(c.s1, k, CW), &mut []);
                    for q in 0..V {
                        out[q] = _mm512_loadu_ps(w.add(16 * q));
                    }
                }
            }
            out
        }
    }

    /// `1 / sqrt(x)`: VRSQRT14PS and one Newton step, `y (1.5 - 0.5 x y^2)`.
    #[inline(always)]
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    unsafe fn rsqrt512(x: __m512) -> __m512 {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            let y = _mm512_rsqrt14_ps(x);
            let hy = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), y);
            _mm512_mul_ps(y, _mm512_fnmadd_ps(hy, y, _mm512_set1_ps(1.5)))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and every block must point into its chunk with rows `k0..d`
    /// inside it.
    pub(super) unsafe fn blocks_avx2(blocks: &[Ctx], k0: usize, d: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            let mut k = k0;
            while k + 2 <= d {
                for c in blocks {
                    prefetch_rows(c, k + PREFETCH_ROWS, 2, d);
                    tile256::<1>(c, k);
                    tile256::<1>(c, k + 1);
                }
                k += 2;
            }
            while k < d {
                for c in blocks {
                    tile256::<1>(c, k);
                }
                k += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; rows `k..k + R` must lie in `c`'s chunk.
    unsafe fn tile256<const R: usize>(c: &Ctx, k: usize) {
        // SAFETY: the caller upholds this function's contract (# Safety above).
        unsafe {
            const V: usize = CW / 8;
            let inp = c.inp;
            let (n, x) = (inp.n, inp.x.as_ptr());
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for i in 0..n {
                let gp = c.g.add(i * c.u);
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*x.add(i * c.d + k + r));
                    for q in 0..V {
                        a[q] = _mm256_fmadd_ps(x, _mm256_loadu_ps(gp.add(8 * q)), a[q]);
                    }
                }
            }
            let mut wt = [[_mm256_setzero_ps(); V]; R];
            for (r, a) in acc.iter().enumerate() {
                let mut row = [0f32; CW];
                for q in 0..V {
                    _mm256_storeu_ps(row.as_mut_ptr().add(8 * q), a[q]);
                }
                update_row::<CW>(c, k + r, &mut row);
                let w = c.row(c.w, k + r, CW).as_ptr();
                for q in 0..V {
                    wt[r][q] = _mm256_loadu_ps(w.add(8 * q));
                }
            }
            if let Some((xn, _)) = inp.next {
                let xn = xn.as_ptr();
                for i in 0..c.m {
                    let zp = c.z.0.add(i * c.u);
                    let mut z = [_mm256_setzero_ps(); V];
                    for (q, v) in z.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(zp.add(8 * q));
                    }
                    for (r, t) in wt.iter().enumerate() {
                        let x = _mm256_set1_ps(*xn.add(i * c.d + k + r));
                        for q in 0..V {
                            z[q] = _mm256_fmadd_ps(x, t[q], z[q]);
                        }
                    }
                    for (q, v) in z.iter().enumerate() {
                        _mm256_storeu_ps(zp.add(8 * q), *v);
                    }
                }
            }
        }
    }
}

mod tail;
use tail::tail_column;

#[cfg(test)]
mod tests;
