//! Convolution kernels for candle with our own backward passes (CPU, f32 and f64).
//!
//! candle's own `conv2d` backward runs its input gradient through a direct `conv_transpose2d` and
//! splits grouped convolutions into one convolution per group; both are slow for the blocks a
//! fine-tune trains. Here a dense convolution is `im2col` (a custom op whose backward is `col2im`)
//! followed by one matrix product, so candle's GEMM does the work in both directions, and a
//! depthwise convolution is a custom op with direct loops for its forward and both gradients.
//! Inputs arrive padded (padding is a separate, differentiable `pad_with_zeros`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// The numbers our loops need: `f32` for training, `f64` for gradient checks.
trait Num:
    Copy + Send + Sync + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
}
impl Num for f32 {}
impl Num for f64 {}

fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> CResult<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: input is not contiguous"),
    }
}

/// Output size of a window of `k` with `stride` over `size` (no padding: the input is padded).
fn out_len(size: usize, k: usize, stride: usize) -> CResult<usize> {
    if size < k || stride == 0 {
        candle_core::bail!("window {k} (stride {stride}) does not fit in {size}");
    }
    Ok((size - k) / stride + 1)
}

/// Patch geometry of a convolution over a padded `[n, c, h, w]` input.
#[derive(Debug, Clone, Copy)]
pub struct Patches {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
}

impl Patches {
    fn dims(&self, shape: &[usize]) -> CResult<(usize, usize, usize, usize, usize, usize)> {
        let [n, c, h, w] = shape else {
            candle_core::bail!("im2col: expected a 4-D input, got {shape:?}")
        };
        let oh = out_len(*h, self.kh, self.sh)?;
        let ow = out_len(*w, self.kw, self.sw)?;
        Ok((*n, *c, *h, *w, oh, ow))
    }
}

/// `[n, c, h, w]` -> `[n * oh * ow, c * kh * kw]`: one row per output position, columns in the
/// order of an ONNX kernel `[out, c, kh, kw]` flattened.
pub struct Im2Col(pub Patches);

/// The adjoint of [`Im2Col`]: scatters (adds) patch rows back into a `[n, c, h, w]` image.
struct Col2Im {
    p: Patches,
    shape: [usize; 4],
}

fn im2col<T: Num>(x: &[T], p: Patches, dims: (usize, usize, usize, usize, usize, usize)) -> Vec<T> {
    let (n, c, h, w, oh, ow) = dims;
    let k = c * p.kh * p.kw;
    let mut out = vec![T::default(); n * oh * ow * k];
    out.par_chunks_mut(oh * ow * k)
        .enumerate()
        .for_each(|(b, rows)| {
            let img = &x[b * c * h * w..(b + 1) * c * h * w];
            patch_runs(p, (c, h, w, oh, ow), |r, j, at| {
                rows[r * k + j..r * k + j + p.kw].copy_from_slice(&img[at..at + p.kw]);
            });
        });
    out
}

/// The patch rows of one image (`(c, h, w, oh, ow)`): for output position `r` (row-major over
/// `oh x ow`), each run of `p.kw` values at `j` in its row comes from image offset `at`.
fn patch_runs(
    p: Patches,
    (c, h, w, oh, ow): (usize, usize, usize, usize, usize),
    mut run: impl FnMut(usize, usize, usize),
) {
    for y in 0..oh {
        for xo in 0..ow {
            let mut j = 0;
            for ch in 0..c {
                for ky in 0..p.kh {
                    run(y * ow + xo, j, ch * h * w + (y * p.sh + ky) * w + xo * p.sw);
                    j += p.kw;
                }
            }
        }
    }
}

fn col2im<T: Num>(g: &[T], p: Patches, shape: [usize; 4]) -> CResult<Vec<T>> {
    let dims = p.dims(&shape)?;
    let (n, c, h, w, oh, ow) = dims;
    let k = c * p.kh * p.kw;
    if g.len() != n * oh * ow * k {
        candle_core::bail!(
            "col2im: {} values are not {n}x{oh}x{ow} rows of {k}",
            g.len()
        );
    }
    let mut out = vec![T::default(); n * c * h * w];
    out.par_chunks_mut(c * h * w)
        .enumerate()
        .for_each(|(b, img)| {
            let rows = &g[b * oh * ow * k..(b + 1) * oh * ow * k];
            patch_runs(p, (c, h, w, oh, ow), |r, j, at| {
                let src = &rows[r * k + j..r * k + j + p.kw];
                for (d, &v) in img[at..at + p.kw].iter_mut().zip(src) {
                    *d = *d + v;
                }
            });
        });
    Ok(out)
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let dims = self.0.dims(l.dims())?;
        let (n, c, _, _, oh, ow) = dims;
        let shape = Shape::from((n * oh * ow, c * self.0.kh * self.0.kw));
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(im2col(contiguous(v, l, "im2col")?, self.0, dims))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(im2col(contiguous(v, l, "im2col")?, self.0, dims))
            }
            _ => candle_core::bail!("im2col: only f32 and f64"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let d = arg.dims4()?;
        let op = Col2Im {
            p: self.0,
            shape: [d.0, d.1, d.2, d.3],
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(col2im(contiguous(v, l, "col2im")?, self.p, self.shape)?)
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(col2im(contiguous(v, l, "col2im")?, self.p, self.shape)?)
            }
            _ => candle_core::bail!("col2im: only f32 and f64"),
        };
        Ok((out, Shape::from(self.shape.to_vec())))
    }
}

/// A dense (group 1) convolution of a padded `x` `[n, c, h, w]` with `w` `[o, c, kh, kw]`:
/// `im2col` then one matrix product. Differentiable in both arguments.
pub fn conv2d(x: &Tensor, w: &Tensor, sh: usize, sw: usize) -> CResult<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, wc, kh, kw) = w.dims4()?;
    if wc != c {
        candle_core::bail!("conv: kernel takes {wc} channels, input has {c}");
    }
    let p = Patches { kh, kw, sh, sw };
    let (_, _, _, _, oh, ow) = p.dims(&[n, c, h, wd])?;
    let cols = if kh == 1 && kw == 1 && sh == 1 && sw == 1 {
        // A 1x1 convolution needs no patches: the channels of each pixel are its row.
        x.permute((0, 2, 3, 1))?.reshape((n * h * wd, c))?
    } else {
        x.contiguous()?.apply_op1(Im2Col(p))?
    };
    let w2 = w.reshape((o, c * kh * kw))?;
    let y = if x.track_op() {
        cols.matmul(&w2.t()?)?
    } else {
        // The input is data (the cached split tensor): skip its gradient, one GEMM of three.
        cols.apply_op2(&w2, FrozenLhsMatmul)?
    }; // [n*oh*ow, o]
    y.reshape((n, oh * ow, o))?
        .transpose(1, 2)?
        .reshape((n, o, oh, ow))
}

/// `a [m, k] x w [n, k]^T` whose backward gives `w` its gradient and `a` none: candle's matmul
/// backward computes both, and the input of the first trained layer is data.
struct FrozenLhsMatmul;

impl CustomOp2 for FrozenLhsMatmul {
    fn name(&self) -> &'static str {
        "frozen-lhs-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (&[m, k], &[n, k2]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!(
                "frozen-lhs-matmul: needs two matrices, got {:?} and {:?}",
                l1.dims(),
                l2.dims()
            )
        };
        if k != k2 {
            candle_core::bail!("frozen-lhs-matmul: inner sizes {k} != {k2}");
        }
        let out = s1.matmul(s2, (1, m, n, k), l1, &l2.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(grad.t()?.matmul(a)?)))
    }
}

/// A depthwise convolution (one `kh x kw` filter per channel, `w` `[c, 1, kh, kw]`) of a padded `x`.
pub struct Depthwise {
    pub sh: usize,
    pub sw: usize,
}

/// Geometry shared by the depthwise forward and its gradients.
#[derive(Debug, Clone, Copy)]
struct DwDims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
}

impl DwDims {
    fn new(x: &[usize], k: &[usize], sh: usize, sw: usize) -> CResult<DwDims> {
        let ([n, c, h, w], [kc, 1, kh, kw]) = (x, k) else {
            candle_core::bail!(
                "depthwise conv: input {x:?} and kernel {k:?} are not [n,c,h,w] and [c,1,kh,kw]"
            )
        };
        if kc != c {
            candle_core::bail!("depthwise conv: kernel has {kc} channels, input {c}");
        }
        Ok(DwDims {
            n: *n,
            c: *c,
            h: *h,
            w: *w,
            kh: *kh,
            kw: *kw,
            oh: out_len(*h, *kh, sh)?,
            ow: out_len(*w, *kw, sw)?,
            sh,
            sw,
        })
    }
}

impl DwDims {
    /// Visits every (output, input, tap) index triple of one plane: the one loop nest that the
    /// forward and both gradients share.
    #[inline(always)]
    fn taps(&self, mut visit: impl FnMut(usize, usize, usize)) {
        for y in 0..self.oh {
            for xo in 0..self.ow {
                for ky in 0..self.kh {
                    let at = (y * self.sh + ky) * self.w + xo * self.sw;
                    for kx in 0..self.kw {
                        visit(y * self.ow + xo, at + kx, ky * self.kw + kx);
                    }
                }
            }
        }
    }
}

impl DwDims {
    /// Image plane `plane` (batch x channel) of an input-shaped `x`.
    fn input<'a, T>(&self, x: &'a [T], plane: usize) -> &'a [T] {
        &x[plane * self.h * self.w..(plane + 1) * self.h * self.w]
    }

    /// Plane `plane` of an output-shaped `g`.
    fn output<'a, T>(&self, g: &'a [T], plane: usize) -> &'a [T] {
        &g[plane * self.oh * self.ow..(plane + 1) * self.oh * self.ow]
    }

    /// The filter of plane `plane`'s channel.
    fn filter<'a, T>(&self, k: &'a [T], plane: usize) -> &'a [T] {
        let (ch, kk) = (plane % self.c, self.kh * self.kw);
        &k[ch * kk..(ch + 1) * kk]
    }
}

/// A new tensor of `chunks` chunks of `len` values, each filled by `fill(chunk index, chunk)` on
/// the thread pool.
fn filled<T: Num>(chunks: usize, len: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::default(); chunks * len];
    out.par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(i, o)| fill(i, o));
    out
}

fn dw_forward<T: Num>(x: &[T], k: &[T], d: DwDims) -> Vec<T> {
    filled(d.n * d.c, d.oh * d.ow, |plane, o| {
        let (img, f) = (d.input(x, plane), d.filter(k, plane));
        d.taps(|at, i, t| o[at] = o[at] + img[i] * f[t]);
    })
}

/// Gradient of the input: each output gradient spreads over its window.
fn dw_grad_input<T: Num>(g: &[T], k: &[T], d: DwDims) -> Vec<T> {
    filled(d.n * d.c, d.h * d.w, |plane, gx| {
        let (go, f) = (d.output(g, plane), d.filter(k, plane));
        d.taps(|at, i, t| gx[i] = gx[i] + go[at] * f[t]);
    })
}

/// Gradient of the kernel: per channel, the sum over the batch of output gradient x input window.
fn dw_grad_kernel<T: Num>(x: &[T], g: &[T], d: DwDims) -> Vec<T> {
    filled(d.c, d.kh * d.kw, |ch, gk| {
        for b in 0..d.n {
            let plane = b * d.c + ch;
            let (img, go) = (d.input(x, plane), d.output(g, plane));
            d.taps(|at, i, t| gk[t] = gk[t] + go[at] * img[i]);
        }
    })
}

/// Which computation a [`DwOp`] runs: all take two tensors and differ in what they return.
#[derive(Debug, Clone, Copy)]
enum DwKind {
    /// (input gradient, kernel) -> input gradient of an input shaped `x`.
    GradInput { x: [usize; 4] },
    /// (input, output gradient) -> kernel gradient shaped `k`.
    GradKernel { k: [usize; 4] },
}

struct DwOp {
    kind: DwKind,
    sh: usize,
    sw: usize,
}

macro_rules! on_floats {
    ($a:expr, $la:expr, $b:expr, $lb:expr, $name:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let ($x, $y) = (contiguous(a, $la, $name)?, contiguous(b, $lb, $name)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let ($x, $y) = (contiguous(a, $la, $name)?, contiguous(b, $lb, $name)?);
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: only f32 and f64 of one type", $name),
        }
    };
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = DwDims::new(l1.dims(), l2.dims(), self.sh, self.sw)?;
        let out = on_floats!(s1, l1, s2, l2, "depthwise-conv2d", |x, k| dw_forward(
            x, k, d
        ));
        Ok((out, Shape::from((d.n, d.c, d.oh, d.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let xd = x.dims4()?;
        let kd = k.dims4()?;
        let grad = grad.contiguous()?;
        let gi = DwOp {
            kind: DwKind::GradInput {
                x: [xd.0, xd.1, xd.2, xd.3],
            },
            sh: self.sh,
            sw: self.sw,
        };
        let gk = DwOp {
            kind: DwKind::GradKernel {
                k: [kd.0, kd.1, kd.2, kd.3],
            },
            sh: self.sh,
            sw: self.sw,
        };
        let grad_x = grad.apply_op2_no_bwd(&k.contiguous()?, &gi)?;
        let grad_k = x.contiguous()?.apply_op2_no_bwd(&grad, &gk)?;
        Ok((Some(grad_x), Some(grad_k)))
    }
}

impl CustomOp2 for DwOp {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        match self.kind {
            DwKind::GradInput { x } => {
                let d = DwDims::new(&x, l2.dims(), self.sh, self.sw)?;
                let out = on_floats!(s1, l1, s2, l2, "depthwise grad", |g, k| dw_grad_input(
                    g, k, d
                ));
                Ok((out, Shape::from(x.to_vec())))
            }
            DwKind::GradKernel { k } => {
                let d = DwDims::new(l1.dims(), &k, self.sh, self.sw)?;
                let out = on_floats!(s1, l1, s2, l2, "depthwise grad", |x, g| dw_grad_kernel(
                    x, g, d
                ));
                Ok((out, Shape::from(k.to_vec())))
            }
        }
    }
}

/// A depthwise convolution of a padded `x` with `w` `[c, 1, kh, kw]`; differentiable in both.
pub fn depthwise(x: &Tensor, w: &Tensor, sh: usize, sw: usize) -> CResult<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Depthwise { sh, sw })
}

/// Max or average pooling over windows of `kh x kw` with strides `sh, sw` (no padding), with the
/// exact backward pass for any window and stride. (candle's own max-pool backward scales the
/// gradient by the fraction of maxima in the window, 1/4 for a 2x2 pool, and both of its pool
/// backwards assume the window equals the stride and divides the size.)
#[derive(Debug, Clone, Copy)]
pub struct Pool2d {
    pub max: bool,
    pub p: Patches,
}

/// (input, output gradient) -> input gradient of a [`Pool2d`].
struct PoolGrad(Pool2d);

/// Offset (within the plane) of the first maximum of the window at output `(y, x)`.
fn argmax<T: Num + PartialOrd>(plane: &[T], w: usize, p: Patches, y: usize, x: usize) -> usize {
    let mut best = (y * p.sh) * w + x * p.sw;
    for ky in 0..p.kh {
        for kx in 0..p.kw {
            let at = (y * p.sh + ky) * w + x * p.sw + kx;
            if plane[at] > plane[best] {
                best = at;
            }
        }
    }
    best
}

trait PoolNum: Num + PartialOrd + std::ops::Div<Output = Self> + From<u16> {}
impl PoolNum for f32 {}
impl PoolNum for f64 {}

/// The window geometry of a pool over planes `d` = (n, c, h, w, oh, ow), as [`DwDims`] (the same
/// walk over windows, without a filter).
fn pool_dims(q: Pool2d, d: (usize, usize, usize, usize, usize, usize)) -> DwDims {
    let (n, c, h, w, oh, ow) = d;
    DwDims {
        n,
        c,
        h,
        w,
        kh: q.p.kh,
        kw: q.p.kw,
        oh,
        ow,
        sh: q.p.sh,
        sw: q.p.sw,
    }
}

fn pool_forward<T: PoolNum>(
    x: &[T],
    q: Pool2d,
    d: (usize, usize, usize, usize, usize, usize),
) -> Vec<T> {
    let d = pool_dims(q, d);
    let area = T::from((q.p.kh * q.p.kw) as u16);
    filled(d.n * d.c, d.oh * d.ow, |k, o| {
        let plane = d.input(x, k);
        if q.max {
            for (at, v) in o.iter_mut().enumerate() {
                *v = plane[argmax(plane, d.w, q.p, at / d.ow, at % d.ow)];
            }
        } else {
            d.taps(|at, i, _| o[at] = o[at] + plane[i]);
            for v in o.iter_mut() {
                *v = *v / area;
            }
        }
    })
}

fn pool_backward<T: PoolNum>(
    x: &[T],
    g: &[T],
    q: Pool2d,
    d: (usize, usize, usize, usize, usize, usize),
) -> Vec<T> {
    let d = pool_dims(q, d);
    let area = T::from((q.p.kh * q.p.kw) as u16);
    filled(d.n * d.c, d.h * d.w, |k, gx| {
        let (plane, go) = (d.input(x, k), d.output(g, k));
        if q.max {
            for (at, &v) in go.iter().enumerate() {
                let i = argmax(plane, d.w, q.p, at / d.ow, at % d.ow);
                gx[i] = gx[i] + v;
            }
        } else {
            d.taps(|at, i, _| gx[i] = gx[i] + go[at] / area);
        }
    })
}

impl CustomOp1 for Pool2d {
    fn name(&self) -> &'static str {
        "pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let d = self.p.dims(l.dims())?;
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(pool_forward(contiguous(v, l, "pool2d")?, *self, d))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(pool_forward(contiguous(v, l, "pool2d")?, *self, d))
            }
            _ => candle_core::bail!("pool2d: only f32 and f64"),
        };
        Ok((out, Shape::from((d.0, d.1, d.4, d.5))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &PoolGrad(*self))?,
        ))
    }
}

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let d = self.0.p.dims(l1.dims())?;
        let q = self.0;
        let out = on_floats!(s1, l1, s2, l2, "pool2d grad", |x, g| pool_backward(
            x, g, q, d
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// Max (or average) pooling of `x` `[n, c, h, w]`; differentiable.
pub fn pool2d(x: &Tensor, max: bool, k: (usize, usize), s: (usize, usize)) -> CResult<Tensor> {
    let p = Patches {
        kh: k.0,
        kw: k.1,
        sh: s.0,
        sw: s.1,
    };
    x.contiguous()?.apply_op1(Pool2d { max, p })
}

#[cfg(test)]
pub(crate) mod tests;
