//! The head's layer stack: the `--head` spec grammar, feature pooling, and a network of dense,
//! activation, dropout and batch-norm layers with forward and backward passes on ndarray.
//!
//! Grammar (comma-separated, hidden layers only; the output layer is added for the class count):
//! `dense:UNITS[:ACTIVATION]`, `dropout:RATE`, `batchnorm` (or `bn`), or a bare activation name
//! (`relu`, `leaky_relu`, `gelu`, `tanh`, `sigmoid`, `linear`). `none` (or an empty spec) is a
//! linear (softmax/logistic regression) head. The default is the seed's `dense:256:relu,dropout:0.5`.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::activation::Activation;
use crate::error::{Error, Result};
use crate::util::rng::Rng;

/// The seed recipe's head: Dense 256 relu -> Dropout 0.5 (then the output layer).
pub const DEFAULT_HEAD: &str = "dense:256:relu,dropout:0.5";
/// Keras' BatchNormalization defaults.
pub const BN_MOMENTUM: f32 = 0.99;
pub const BN_EPSILON: f32 = 1e-3;

/// One hidden layer as written in a `--head` spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerSpec {
    Dense {
        units: usize,
        activation: Activation,
    },
    Activation(Activation),
    Dropout(f32),
    BatchNorm,
}

/// Parses a `--head` spec; errors name the item and what was expected.
pub fn parse_spec(spec: &str) -> Result<Vec<LayerSpec>> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "none" {
        return Ok(Vec::new());
    }
    let bad = |item: &str, why: &str| {
        Error::invalid(
            "head",
            format!("item '{item}': {why} (grammar: dense:UNITS[:ACT], dropout:RATE, batchnorm, or an activation: relu, leaky_relu, gelu, tanh, sigmoid, linear)"),
        )
    };
    spec.split(',')
        .map(|item| {
            let item = item.trim();
            let parts: Vec<&str> = item.split(':').map(str::trim).collect();
            match parts.as_slice() {
                ["dense", units, rest @ ..] => {
                    let units: usize = units
                        .parse()
                        .ok()
                        .filter(|&u| u > 0)
                        .ok_or_else(|| bad(item, "units must be a positive integer"))?;
                    if units as u64 > MAX_HEAD_WEIGHTS {
                        return Err(bad(
                            item,
                            &format!("at most {MAX_HEAD_WEIGHTS} units (a head's weights in all)"),
                        ));
                    }
                    let activation = match rest {
                        [] => Activation::Linear,
                        [a] => {
                            Activation::parse(a).ok_or_else(|| bad(item, "unknown activation"))?
                        }
                        _ => return Err(bad(item, "too many ':' parts")),
                    };
                    Ok(LayerSpec::Dense { units, activation })
                }
                ["dropout", rate] => {
                    let r: f32 = rate
                        .parse()
                        .ok()
                        .filter(|r: &f32| (0.0..1.0).contains(r))
                        .ok_or_else(|| bad(item, "rate must be in [0, 1)"))?;
                    Ok(LayerSpec::Dropout(r))
                }
                ["batchnorm"] | ["bn"] => Ok(LayerSpec::BatchNorm),
                [a] => Activation::parse(a)
                    .map(LayerSpec::Activation)
                    .ok_or_else(|| bad(item, "unknown layer")),
                _ => Err(bad(item, "unknown layer")),
            }
        })
        .collect()
}

/// Writes a spec back in the grammar [`parse_spec`] reads.
pub fn spec_string(layers: &[LayerSpec]) -> String {
    if layers.is_empty() {
        return "none".into();
    }
    layers
        .iter()
        .map(|l| match l {
            LayerSpec::Dense { units, activation } => {
                format!("dense:{units}:{}", activation.name())
            }
            LayerSpec::Activation(a) => a.name().to_string(),
            LayerSpec::Dropout(r) => format!("dropout:{r}"),
            LayerSpec::BatchNorm => "batchnorm".into(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How spatial features `[C,H,W]` / `[H,W,C]` become one vector per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Keras `Flatten` (row-major over the stored shape).
    Flatten,
    /// `GlobalAveragePooling2D`.
    Avg,
    /// `pooling="max"`.
    Max,
}

impl Pool {
    pub fn parse(s: &str) -> Option<Pool> {
        match s {
            "flatten" => Some(Pool::Flatten),
            "avg" => Some(Pool::Avg),
            "max" => Some(Pool::Max),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Pool::Flatten => "flatten",
            Pool::Avg => "avg",
            Pool::Max => "max",
        }
    }

    /// Width of one pooled row for features of `shape` stored in `layout` ("nchw" or "nhwc").
    pub fn output_dim(self, shape: &[usize], layout: &str) -> Result<usize> {
        Ok(match self {
            Pool::Flatten => shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| Error::Config(format!("feature shape {shape:?} overflows")))?,
            _ => spatial(shape, layout, self)?.0,
        })
    }

    /// Pools `n` rows of `data` (row-major `[n, shape..]`) into an `(n, dim)` matrix. Flatten reuses
    /// the buffer without copying.
    pub fn apply(
        self,
        data: Vec<f32>,
        n: usize,
        shape: &[usize],
        layout: &str,
    ) -> Result<Array2<f32>> {
        let row: usize = shape.iter().product();
        if data.len() != n * row {
            return Err(Error::Config(format!(
                "{} feature values are not {n} rows of {shape:?}",
                data.len()
            )));
        }
        if self == Pool::Flatten {
            return Array2::from_shape_vec((n, row), data)
                .map_err(|e| Error::Config(e.to_string()));
        }
        let (c, hw, channels_first) = spatial(shape, layout, self)?;
        let mut out = Array2::<f32>::zeros((n, c));
        for (i, mut o) in out.outer_iter_mut().enumerate() {
            let x = &data[i * row..(i + 1) * row];
            for (ch, v) in o.iter_mut().enumerate() {
                let vals = (0..hw).map(|s| {
                    if channels_first {
                        x[ch * hw + s]
                    } else {
                        x[s * c + ch]
                    }
                });
                *v = match self {
                    Pool::Avg => vals.sum::<f32>() / hw as f32,
                    _ => vals.fold(f32::NEG_INFINITY, f32::max),
                };
            }
        }
        Ok(out)
    }
}

/// Whether 3-D features `shape` are `[C,H,W]`: read from a square spatial map when the shape says
/// (converters such as tf2onnx turn NHWC models' insides NCHW, so a cut NHWC model can give
/// `[1280,7,7]`), else the model's input layout. `None` for other ranks or unknown layouts.
pub fn features_channels_first(shape: &[usize], layout: &str) -> Option<bool> {
    match shape {
        [a, b, c] if b == c && a != b => Some(true),
        [a, b, c] if a == b && b != c => Some(false),
        [_, _, _] => match layout.to_ascii_lowercase().as_str() {
            "nchw" => Some(true),
            "nhwc" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// (channels, spatial positions, channels-first) of a 3-D feature shape.
fn spatial(shape: &[usize], layout: &str, pool: Pool) -> Result<(usize, usize, bool)> {
    match (shape, features_channels_first(shape, layout)) {
        ([c, h, w], Some(true)) => Ok((*c, h * w, true)),
        ([h, w, c], Some(false)) => Ok((*c, h * w, false)),
        ([c], _) => Ok((*c, 1, true)),
        _ => Err(Error::invalid(
            "pool",
            format!(
                "{}: needs features shaped [C,H,W] (nchw) or [H,W,C] (nhwc), the cache has {shape:?} ({layout})",
                pool.name()
            ),
        )),
    }
}

/// A fully connected layer: `y = x W + b`, `W` is `(inputs, units)` as in Keras' kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub w: Array2<f32>,
    pub b: Array1<f32>,
}

/// Kernels with at least this many weights multiply through [`crate::head::kernels::matmul::matmul_wide`].
const WIDE_WEIGHTS: usize = 1 << 18;

impl Dense {
    /// `x w + b`.
    pub fn apply(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let (d, u) = self.w.dim();
        if d * u >= WIDE_WEIGHTS && x.ncols() == d {
            if let (Some(xs), Some(ws)) = (x.as_slice(), self.w.as_slice()) {
                if let Some(z) =
                    crate::head::kernels::matmul::matmul_wide(xs, x.nrows(), ws, d, u, 0)
                {
                    return Array2::from_shape_vec((x.nrows(), u), z).expect("m x u") + &self.b;
                }
            }
        }
        x.dot(&self.w) + &self.b
    }
}

/// Batch normalisation over the feature axis (Keras semantics, biased batch variance).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub gamma: Array1<f32>,
    pub beta: Array1<f32>,
    pub mean: Array1<f32>,
    pub var: Array1<f32>,
    pub eps: f32,
    pub momentum: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Dense(Dense),
    Activation(Activation),
    Dropout(f32),
    BatchNorm(BatchNorm),
}

/// The head: hidden layers then an output `Dense` whose logits feed sigmoid (1 unit) or softmax.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub layers: Vec<Layer>,
}

/// What a training forward pass keeps for the backward pass, per layer.
enum Saved {
    Input(Array2<f32>),
    Mask(Array2<f32>),
    Norm {
        xhat: Array2<f32>,
        inv_std: Array1<f32>,
    },
    None,
}

/// Per-layer gradients, in the same order as [`Network::params_mut`].
pub type Grads = Vec<Vec<f32>>;

/// Weights (and biases) a head may have: 2^28 float32 values are 1 GiB, and training holds a few
/// times that (gradients, optimizer state).
pub const MAX_HEAD_WEIGHTS: u64 = 1 << 28;

/// Refuses `spec` on `inputs` features with `outputs` units when its weights would pass
/// [`MAX_HEAD_WEIGHTS`]: checked before anything is allocated for them.
pub fn check_size(inputs: usize, spec: &[LayerSpec], outputs: usize) -> Result<()> {
    let (mut width, mut total) = (inputs as u64, 0u64);
    let units = spec.iter().filter_map(|s| match s {
        LayerSpec::Dense { units, .. } => Some(*units as u64),
        _ => None,
    });
    for u in units.chain([outputs as u64]) {
        total = total.saturating_add(width.saturating_mul(u).saturating_add(u));
        width = u;
    }
    if total > MAX_HEAD_WEIGHTS {
        return Err(Error::invalid(
            "head",
            format!(
                "'{}' on {inputs} features with {outputs} outputs has {total} weights; a head has at most {MAX_HEAD_WEIGHTS}",
                spec_string(spec)
            ),
        ));
    }
    Ok(())
}

impl Network {
    /// Builds `spec` on `inputs` features with an output layer of `outputs` units; Glorot-uniform
    /// kernels (Keras' default) and zero biases from `seed`.
    pub fn new(inputs: usize, spec: &[LayerSpec], outputs: usize, seed: u64) -> Network {
        let mut rng = Rng(seed);
        let mut layers = Vec::new();
        let mut width = inputs;
        let dense = |rng: &mut Rng, i: usize, o: usize| {
            let limit = (6.0 / (i + o) as f64).sqrt();
            let w = Array2::from_shape_fn((i, o), |_| ((rng.uniform() * 2.0 - 1.0) * limit) as f32);
            Layer::Dense(Dense {
                w,
                b: Array1::zeros(o),
            })
        };
        for s in spec {
            match *s {
                LayerSpec::Dense { units, activation } => {
                    layers.push(dense(&mut rng, width, units));
                    if activation != Activation::Linear {
                        layers.push(Layer::Activation(activation));
                    }
                    width = units;
                }
                LayerSpec::Activation(a) => layers.push(Layer::Activation(a)),
                LayerSpec::Dropout(r) => layers.push(Layer::Dropout(r)),
                LayerSpec::BatchNorm => layers.push(Layer::BatchNorm(BatchNorm {
                    gamma: Array1::ones(width),
                    beta: Array1::zeros(width),
                    mean: Array1::zeros(width),
                    var: Array1::ones(width),
                    eps: BN_EPSILON,
                    momentum: BN_MOMENTUM,
                })),
            }
        }
        layers.push(dense(&mut rng, width, outputs));
        Network { layers }
    }

    /// Input width (rows of the first dense kernel, or of the first batch norm).
    pub fn input_dim(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| match l {
            Layer::Dense(d) => Some(d.w.nrows()),
            Layer::BatchNorm(b) => Some(b.gamma.len()),
            _ => None,
        })
    }

    /// Output width (units of the last dense layer).
    pub fn output_dim(&self) -> Option<usize> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Dense(d) => Some(d.w.ncols()),
            _ => None,
        })
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// Trainable tensors, flattened: kernel and bias of each dense layer, gamma and beta of each batch norm.
    pub fn params(&self) -> Vec<&[f32]> {
        let mut v = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Dense(d) => {
                    v.push(d.w.as_slice().expect("standard layout"));
                    v.push(d.b.as_slice().expect("standard layout"));
                }
                Layer::BatchNorm(b) => {
                    v.push(b.gamma.as_slice().expect("standard layout"));
                    v.push(b.beta.as_slice().expect("standard layout"));
                }
                _ => {}
            }
        }
        v
    }

    /// Mutable view of [`Network::params`], in the same order.
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        let mut v = Vec::new();
        for l in &mut self.layers {
            match l {
                Layer::Dense(d) => {
                    v.push(d.w.as_slice_mut().expect("standard layout"));
                    v.push(d.b.as_slice_mut().expect("standard layout"));
                }
                Layer::BatchNorm(b) => {
                    v.push(b.gamma.as_slice_mut().expect("standard layout"));
                    v.push(b.beta.as_slice_mut().expect("standard layout"));
                }
                _ => {}
            }
        }
        v
    }

    /// Inference: logits for each row of `x` (dropout off, batch norm on moving statistics).
    pub fn logits(&self, x: &Array2<f32>) -> Array2<f32> {
        let mut h: Option<Array2<f32>> = None;
        for l in &self.layers {
            let input = h.as_ref().unwrap_or(x);
            h = match l {
                Layer::Dense(d) => Some(d.apply(input.view())),
                Layer::Activation(a) => Some(a.forward(input)),
                Layer::Dropout(_) => continue,
                Layer::BatchNorm(b) => {
                    let scale = &b.gamma / &b.var.mapv(|v| (v + b.eps).sqrt());
                    let shift = &b.beta - &(&b.mean * &scale);
                    Some(input * &scale + &shift)
                }
            };
        }
        h.unwrap_or_else(|| x.clone())
    }

    /// Inference in chunks of `batch` rows (bounded memory for big feature matrices).
    pub fn logits_batched(&self, x: &Array2<f32>, batch: usize) -> Array2<f32> {
        let k = self.output_dim().unwrap_or(1);
        let mut out = Array2::<f32>::zeros((x.nrows(), k));
        for (xc, mut oc) in x
            .axis_chunks_iter(Axis(0), batch.max(1))
            .zip(out.axis_chunks_iter_mut(Axis(0), batch.max(1)))
        {
            oc.assign(&self.logits(&xc.to_owned()));
        }
        out
    }

    /// One training step's forward and backward pass: (loss, logits, gradients of every parameter).
    /// `loss_grad` maps the logits to (loss, d loss / d logits).
    pub fn forward_backward(
        &mut self,
        x: Array2<f32>,
        rng: &mut Rng,
        loss_grad: impl FnOnce(&Array2<f32>) -> (f32, Array2<f32>),
    ) -> (f32, Array2<f32>, Grads) {
        let (loss, logits, grads, _) = self.forward_backward_from(0, x, rng, loss_grad, false);
        (loss, logits, grads)
    }

    /// The same from layer `start` on, `h` being the output of layer `start - 1`; the gradients are
    /// those of the parameters of layers `start..`, and with `input_grad` also d loss / d `h`.
    pub fn forward_backward_from(
        &mut self,
        start: usize,
        h: Array2<f32>,
        rng: &mut Rng,
        loss_grad: impl FnOnce(&Array2<f32>) -> (f32, Array2<f32>),
        input_grad: bool,
    ) -> (f32, Array2<f32>, Grads, Option<Array2<f32>>) {
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut h = h;
        for l in &mut self.layers[start..] {
            match l {
                Layer::Dense(d) => {
                    let y = d.apply(h.view());
                    saved.push(Saved::Input(h));
                    h = y;
                }
                Layer::Activation(a) => {
                    let y = a.forward(&h);
                    saved.push(Saved::Input(h));
                    h = y;
                }
                Layer::Dropout(rate) => {
                    if *rate > 0.0 {
                        let keep = 1.0 - *rate;
                        let mask = h.mapv(|_| {
                            if rng.uniform() < keep as f64 {
                                1.0 / keep
                            } else {
                                0.0
                            }
                        });
                        h *= &mask;
                        saved.push(Saved::Mask(mask));
                    } else {
                        saved.push(Saved::None);
                    }
                }
                Layer::BatchNorm(b) => {
                    let n = h.nrows() as f32;
                    let mean = h.mean_axis(Axis(0)).expect("non-empty batch");
                    let centered = &h - &mean;
                    let var = centered.mapv(|v| v * v).sum_axis(Axis(0)) / n;
                    let inv_std = var.mapv(|v| 1.0 / (v + b.eps).sqrt());
                    let xhat = &centered * &inv_std;
                    h = &xhat * &b.gamma + &b.beta;
                    b.mean = &b.mean * b.momentum + &(&mean * (1.0 - b.momentum));
                    b.var = &b.var * b.momentum + &(&var * (1.0 - b.momentum));
                    saved.push(Saved::Norm { xhat, inv_std });
                }
            }
        }
        let logits = h;
        let (loss, mut g) = loss_grad(&logits);
        let mut grads: Vec<Vec<f32>> = Vec::new();
        let first_param_layer = self.layers[start..]
            .iter()
            .position(|l| matches!(l, Layer::Dense(_) | Layer::BatchNorm(_)));
        for (i, (l, s)) in self.layers[start..].iter().zip(saved).enumerate().rev() {
            let need_input_grad = input_grad || first_param_layer.is_some_and(|f| i > f);
            match (l, s) {
                (Layer::Dense(d), Saved::Input(x)) => {
                    let gb = g.sum_axis(Axis(0));
                    let gw = x.t().dot(&g);
                    grads.push(row_major(gb));
                    grads.push(row_major(gw));
                    if need_input_grad {
                        g = g.dot(&d.w.t());
                    }
                }
                (Layer::Activation(a), Saved::Input(x)) => g = a.backward(&x, &g),
                (Layer::Dropout(_), Saved::Mask(m)) => g *= &m,
                (Layer::BatchNorm(b), Saved::Norm { xhat, inv_std }) => {
                    let n = g.nrows() as f32;
                    let gbeta = g.sum_axis(Axis(0));
                    let ggamma = (&g * &xhat).sum_axis(Axis(0));
                    if need_input_grad {
                        let dxhat = &g * &b.gamma;
                        let s1 = dxhat.sum_axis(Axis(0));
                        let s2 = (&dxhat * &xhat).sum_axis(Axis(0));
                        g = (&(&(&dxhat * n) - &s1) - &(&xhat * &s2)) * &(&inv_std / n);
                    }
                    grads.push(row_major(gbeta));
                    grads.push(row_major(ggamma));
                }
                _ => {}
            }
        }
        grads.reverse();
        (loss, logits, grads, input_grad.then_some(g))
    }
}

/// The values of `a` in logical (row-major) order; `x.t().dot(g)` can come back column-major.
fn row_major<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> Vec<f32> {
    if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::loss::Loss;

    #[test]
    fn spec_grammar_round_trips_and_rejects() {
        let s = parse_spec("dense:256:relu, dropout:0.5,bn,dense:64,gelu").unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            spec_string(&s),
            "dense:256:relu,dropout:0.5,batchnorm,dense:64:linear,gelu"
        );
        assert_eq!(parse_spec(&spec_string(&s)).unwrap(), s);
        assert!(parse_spec("none").unwrap().is_empty());
        for bad in [
            "dense:0",
            "dense:x",
            "dropout:1.5",
            "conv:3",
            "dense:4:swish",
            "dense:4:relu:x",
        ] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn pooling_matches_hand_values_in_both_layouts() {
        // 2 channels, 2x2 spatial. NCHW: channel 0 = 1,2,3,4 ; channel 1 = 5,6,7,-8.
        let nchw = vec![1., 2., 3., 4., 5., 6., 7., -8.];
        let nhwc = vec![1., 5., 2., 6., 3., 7., 4., -8.];
        let a = Pool::Avg
            .apply(nchw.clone(), 1, &[2, 2, 2], "nchw")
            .unwrap();
        let b = Pool::Avg
            .apply(nhwc.clone(), 1, &[2, 2, 2], "nhwc")
            .unwrap();
        assert_eq!(a.as_slice().unwrap(), &[2.5, 2.5]);
        assert_eq!(a, b);
        let m = Pool::Max.apply(nhwc, 1, &[2, 2, 2], "nhwc").unwrap();
        assert_eq!(m.as_slice().unwrap(), &[4.0, 7.0]);
        let f = Pool::Flatten.apply(nchw, 1, &[2, 2, 2], "nchw").unwrap();
        // The shape wins over the input layout when it is unambiguous.
        assert_eq!(features_channels_first(&[1280, 7, 7], "NHWC"), Some(true));
        assert_eq!(features_channels_first(&[7, 7, 512], "NCHW"), Some(false));
        assert_eq!(f.ncols(), 8);
        assert!(Pool::Avg.apply(vec![0.; 4], 1, &[2, 2], "nchw").is_err());
    }

    /// Central finite differences of the summed loss against the analytic gradient of every
    /// parameter, through dense, every activation, batch norm and (fixed-mask) dropout.
    #[test]
    fn gradients_match_finite_differences() {
        let spec = parse_spec(
            "dense:5:tanh,bn,dense:4:gelu,dense:4:leaky_relu,dense:3:sigmoid,dropout:0.3,relu",
        )
        .unwrap();
        for outputs in [1usize, 3] {
            let net = Network::new(4, &spec, outputs, 7);
            let mut rng = Rng(3);
            let x = Array2::from_shape_fn((6, 4), |_| rng.normal());
            let labels: Vec<u32> = (0..6).map(|i| (i % outputs.max(2)) as u32).collect();
            let loss = Loss::CrossEntropy { smoothing: 0.1 };
            let eval = |n: &Network| {
                let mut n = n.clone();
                let mut r = Rng(11); // same dropout mask every call
                n.forward_backward(x.clone(), &mut r, |z| loss.compute(z, &labels, None))
                    .0
            };
            let mut n0 = net.clone();
            let (_, _, grads) =
                n0.forward_backward(x.clone(), &mut Rng(11), |z| loss.compute(z, &labels, None));
            let count = net.params().len();
            assert_eq!(grads.len(), count);
            for (p, gp) in grads.iter().enumerate() {
                for (j, &an) in gp.iter().enumerate() {
                    let h = 1e-3f32;
                    let mut plus = net.clone();
                    plus.params_mut()[p][j] += h;
                    let mut minus = net.clone();
                    minus.params_mut()[p][j] -= h;
                    let fd = (eval(&plus) - eval(&minus)) / (2.0 * h);
                    assert!(
                        (fd - an).abs() < 2e-3 + 2e-2 * an.abs(),
                        "outputs {outputs} param {p}[{j}]: fd {fd} analytic {an}"
                    );
                }
            }
        }
    }

    #[test]
    fn inference_equals_training_forward_without_dropout_and_with_frozen_stats() {
        let spec = parse_spec("dense:6:relu,dense:3:tanh").unwrap();
        let mut net = Network::new(5, &spec, 2, 1);
        let mut rng = Rng(2);
        let x = Array2::from_shape_fn((4, 5), |_| rng.normal());
        let inf = net.logits(&x);
        let (_, train, _) =
            net.forward_backward(x.clone(), &mut rng, |z| (0.0, Array2::zeros(z.dim())));
        assert_eq!(inf, train);
        assert_eq!(net.logits_batched(&x, 3), inf);
        assert_eq!(net.param_count(), 5 * 6 + 6 + 6 * 3 + 3 + 3 * 2 + 2);
    }
}
