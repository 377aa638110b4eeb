//! A trained [`Network`] head as candle operations, trained jointly with the unfrozen block, and
//! copied back into a `Network` afterwards. Batch norm stays in inference mode (frozen statistics),
//! as in the Keras fine-tuning guide; dropout masks come from our seeded generator.

use candle_core::{DType, Device, Tensor, Var};

use crate::head::activation::Activation;
use crate::head::net::{features_channels_first, Layer, Network, Pool};
use crate::util::rng::Rng;

type CResult<T> = candle_core::Result<T>;

enum HLayer {
    Dense {
        w: Var,
        b: Var,
    },
    Act(Activation),
    Dropout(f32),
    Norm {
        gamma: Var,
        beta: Var,
        mean: Tensor,
        var: Tensor,
        eps: f64,
    },
}

/// The head in candle.
pub struct CandleHead {
    layers: Vec<HLayer>,
    pool: Pool,
    layout: String,
}

fn var1(a: &ndarray::Array1<f32>, dtype: DType) -> CResult<Var> {
    Var::from_tensor(
        &Tensor::from_slice(a.as_slice().expect("contiguous"), a.len(), &Device::Cpu)?
            .to_dtype(dtype)?,
    )
}

fn tensor1(a: &ndarray::Array1<f32>, dtype: DType) -> CResult<Tensor> {
    Tensor::from_slice(a.as_slice().expect("contiguous"), a.len(), &Device::Cpu)?.to_dtype(dtype)
}

impl CandleHead {
    /// Copies `net`'s weights into variables; `pool` and `layout` turn the top's output into rows.
    pub fn new(net: &Network, pool: Pool, layout: &str, dtype: DType) -> CResult<CandleHead> {
        let mut layers = Vec::new();
        for l in &net.layers {
            layers.push(match l {
                Layer::Dense(d) => {
                    let w = d.w.as_standard_layout();
                    let w = Tensor::from_slice(
                        w.as_slice().expect("standard"),
                        d.w.dim(),
                        &Device::Cpu,
                    )?
                    .to_dtype(dtype)?;
                    HLayer::Dense {
                        w: Var::from_tensor(&w)?,
                        b: var1(&d.b, dtype)?,
                    }
                }
                Layer::Activation(a) => HLayer::Act(*a),
                Layer::Dropout(r) => HLayer::Dropout(*r),
                Layer::BatchNorm(bn) => HLayer::Norm {
                    gamma: var1(&bn.gamma, dtype)?,
                    beta: var1(&bn.beta, dtype)?,
                    mean: tensor1(&bn.mean, dtype)?,
                    var: tensor1(&bn.var, dtype)?,
                    eps: bn.eps as f64,
                },
            });
        }
        Ok(CandleHead {
            layers,
            pool,
            layout: layout.to_string(),
        })
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = Vec::new();
        for l in &self.layers {
            match l {
                HLayer::Dense { w, b } => v.extend([w.clone(), b.clone()]),
                HLayer::Norm { gamma, beta, .. } => v.extend([gamma.clone(), beta.clone()]),
                _ => {}
            }
        }
        v
    }

    /// Pools the top's output `[n, ...]` into `[n, d]` rows as `Pool::apply` does on cached features.
    pub fn pool(&self, x: &Tensor) -> CResult<Tensor> {
        let dims = x.dims().to_vec();
        if self.pool == Pool::Flatten || dims.len() == 2 {
            return x.flatten_from(1);
        }
        let cf = features_channels_first(&dims[1..], &self.layout);
        let spatial = match (dims.len(), cf) {
            (4, Some(true)) => vec![2, 3],
            (4, Some(false)) => vec![1, 2],
            _ => candle_core::bail!(
                "--pool {}: cannot pool features shaped {:?}",
                self.pool.name(),
                &dims[1..]
            ),
        };
        match self.pool {
            Pool::Avg => x.mean(spatial),
            _ => x.max(spatial[1])?.max(spatial[0]),
        }
    }

    /// Logits of the head on the top's output; `dropout` is the generator of a training pass.
    pub fn forward(&self, x: &Tensor, mut dropout: Option<&mut Rng>) -> CResult<Tensor> {
        let mut h = self.pool(x)?;
        for l in &self.layers {
            h = match l {
                HLayer::Dense { w, b } => h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?,
                HLayer::Act(a) => match a {
                    Activation::Relu => h.relu()?,
                    Activation::LeakyRelu(s) => h.maximum(&(&h * *s as f64)?)?,
                    Activation::Gelu => h.gelu()?,
                    Activation::Tanh => h.tanh()?,
                    Activation::Sigmoid => (h.neg()?.exp()? + 1.0)?.recip()?,
                    Activation::Linear => h,
                },
                HLayer::Dropout(rate) => match dropout.as_deref_mut() {
                    Some(rng) if *rate > 0.0 => {
                        let keep = 1.0 - *rate as f64;
                        let mask: Vec<f32> = (0..h.elem_count())
                            .map(|_| {
                                if rng.uniform() < keep {
                                    (1.0 / keep) as f32
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        let m =
                            Tensor::from_vec(mask, h.dims(), &Device::Cpu)?.to_dtype(h.dtype())?;
                        (h * m)?
                    }
                    _ => h,
                },
                HLayer::Norm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => {
                    let k = ((var + *eps)?.sqrt()?.recip()? * gamma.as_tensor())?;
                    h.broadcast_sub(mean)?
                        .broadcast_mul(&k)?
                        .broadcast_add(beta.as_tensor())?
                }
            };
        }
        Ok(h)
    }

    /// Copies the trained weights back into `net` (the network this head was made from).
    pub fn write_back(&self, net: &mut Network) -> CResult<()> {
        let vals = |v: &Var| -> CResult<Vec<f32>> {
            v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()
        };
        for (l, h) in net.layers.iter_mut().zip(&self.layers) {
            match (l, h) {
                (Layer::Dense(d), HLayer::Dense { w, b }) => {
                    let shape = d.w.dim();
                    d.w = ndarray::Array2::from_shape_vec(shape, vals(w)?)
                        .map_err(candle_core::Error::wrap)?;
                    d.b = ndarray::Array1::from(vals(b)?);
                }
                (Layer::BatchNorm(bn), HLayer::Norm { gamma, beta, .. }) => {
                    bn.gamma = ndarray::Array1::from(vals(gamma)?);
                    bn.beta = ndarray::Array1::from(vals(beta)?);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Mean cross-entropy of `logits` against `labels`: binary (one column, stable log-sigmoid) or
/// softmax.
pub fn cross_entropy(logits: &Tensor, labels: &[u32]) -> CResult<Tensor> {
    let n = labels.len();
    if logits.dim(1)? == 1 {
        let z = logits.flatten_all()?;
        let y: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let y = Tensor::from_vec(y, n, &Device::Cpu)?.to_dtype(z.dtype())?;
        // max(z, 0) - z y + log(1 + exp(-|z|))
        let l = ((z.relu()? - (&z * &y)?)? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
        l.mean_all()
    } else {
        let y = Tensor::from_vec(labels.to_vec(), n, &Device::Cpu)?;
        candle_nn::loss::cross_entropy(logits, &y)
    }
}
