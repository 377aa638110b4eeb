//! The top of an ONNX graph, from a split tensor to the model output, as candle operations whose
//! weights are trainable variables; the trained weights are written back into the model's
//! initializers.
//!
//! Supported ops: Conv (grouped and depthwise, asymmetric pads), Relu, Clip/Relu6, MaxPool,
//! AveragePool, GlobalAveragePool, ReduceMean, BatchNormalization (inference mode, frozen
//! statistics, trainable scale and bias), Add, Sub, Mul, Div, Concat, Flatten, Reshape, Transpose,
//! Gemm, MatMul, Sigmoid, Softmax, Identity and Dropout. Anything else stops the translation with an
//! error naming the op and the node.

use crate::cache::tokens::{TokenPool, Tokens};
use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};

use super::ops;
use super::translate::{translate_op, Op};
use crate::onnx::edit::{attr, float_values};
use crate::onnx::proto::{data_type, ModelProto, NodeProto, TensorProto};

type CResult<T> = candle_core::Result<T>;

#[derive(Debug, Clone)]
struct Node {
    name: String,
    op_type: String,
    op: Op,
    inputs: Vec<String>,
    output: String,
}

/// The translated top of a model.
pub struct TopGraph {
    nodes: Vec<Node>,
    /// Trainable initializers, in graph order.
    params: Vec<(String, Var)>,
    consts: HashMap<String, Tensor>,
    pub input: String,
    pub output: String,
    pub dtype: DType,
    /// How the output's tokens are pooled before the head (a transformer's; none otherwise).
    pub tokens: Tokens,
}

/// Which inputs of an op hold trainable weights (when they are initializers).
fn trainable_inputs(op_type: &str) -> &'static [usize] {
    match op_type {
        "Conv" => &[1, 2],
        "Gemm" => &[1, 2],
        "MatMul" => &[1],
        "BatchNormalization" | "LayerNormalization" => &[1, 2],
        _ => &[],
    }
}

/// The graph's constant tensors: initializers and the outputs of Constant nodes.
pub(super) struct Values<'a> {
    inits: HashMap<&'a str, &'a TensorProto>,
    constants: HashMap<String, TensorProto>,
}

impl<'a> Values<'a> {
    fn new(graph: &'a crate::onnx::proto::GraphProto) -> Self {
        let inits = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        // Constant nodes are initializers by another name.
        let mut constants = HashMap::new();
        for n in &graph.node {
            if n.op_type == "Constant" {
                if let (Some(t), Some(out)) =
                    (attr(n, "value").and_then(|a| a.t.clone()), n.output.first())
                {
                    constants.insert(out.clone(), t);
                }
            }
        }
        Values { inits, constants }
    }

    fn get(&self, name: &str) -> Option<&TensorProto> {
        self.inits
            .get(name)
            .copied()
            .or_else(|| self.constants.get(name))
    }

    /// Input `k` of `n` as constant integers (a Reshape's shape, ReduceMean's axes).
    pub(super) fn ints_input(&self, n: &NodeProto, k: usize) -> Option<Vec<i64>> {
        n.input
            .get(k)
            .filter(|s| !s.is_empty())
            .and_then(|s| self.get(s))
            .and_then(crate::onnx::edit::int_values)
    }

    /// Input `k` of `n` as a constant scalar (Clip's bounds), or None when it is not given.
    pub(super) fn scalar_input(&self, n: &NodeProto, k: usize) -> Result<Option<f64>, String> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => {
                let t = self
                    .get(s)
                    .ok_or_else(|| format!("node '{}': input '{s}' is not a constant", n.name))?;
                Ok(float_values(t)?.first().map(|&v| v as f64))
            }
        }
    }
}

/// The nodes that run after tensor `split` (in graph order) and every tensor they make. A node that
/// also reads a non-constant tensor computed below the split (a skip connection) is refused.
fn upper_nodes<'g>(
    graph: &'g crate::onnx::proto::GraphProto,
    split: &str,
    values: &Values,
) -> Result<(Vec<&'g NodeProto>, HashSet<String>), String> {
    let produced: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    if !produced.contains(split) && !graph.input.iter().any(|i| i.name == split) {
        return Err(format!("no tensor named '{split}' in the graph"));
    }
    let mut live: HashSet<String> = HashSet::from([split.to_string()]);
    let mut upper = Vec::new();
    for n in &graph.node {
        if n.op_type == "Constant" || !n.input.iter().any(|i| live.contains(i)) {
            continue;
        }
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !live.contains(i) && values.get(i).is_none() {
                return Err(format!(
                    "node '{}' ({}) also reads '{i}', computed below the split at '{split}': choose a split point that every later node depends on only through it",
                    n.name, n.op_type
                ));
            }
        }
        live.extend(n.output.iter().cloned());
        upper.push(n);
    }
    Ok((upper, live))
}

impl TopGraph {
    /// Translates the nodes of `model` that run after tensor `split` (the nodes that depend on it,
    /// up to the graph's first output). Errors name the node and the op.
    pub fn from_model(model: &ModelProto, split: &str, dtype: DType) -> Result<TopGraph, String> {
        let graph = model.graph.as_ref().ok_or("the model has no graph")?;
        let output = graph
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or("the model has no output")?;
        let values = Values::new(graph);
        let (upper, live) = upper_nodes(graph, split, &values)?;
        if !live.contains(&output) {
            return Err(format!(
                "the model output '{output}' does not depend on '{split}'"
            ));
        }
        let mut top = TopGraph {
            nodes: Vec::new(),
            params: Vec::new(),
            consts: HashMap::new(),
            input: split.to_string(),
            output,
            dtype,
            tokens: Tokens::NONE,
        };
        for n in upper {
            let op = translate_op(n, &values)?;
            let inputs = top.take_weights(n, &values)?;
            top.nodes.push(Node {
                name: n.name.clone(),
                op_type: n.op_type.clone(),
                op,
                inputs,
                output: n.output[0].clone(),
            });
        }
        Ok(top)
    }

    /// The inputs of `n` (every input that is not a constant is computed above the split, as
    /// [`upper_nodes`] checked); its trainable constant inputs (weights, biases, batch-norm scale and
    /// shift) become variables, its other float constants constants.
    fn take_weights(&mut self, n: &NodeProto, values: &Values) -> Result<Vec<String>, String> {
        let bad = |why: String| format!("node '{}' ({}): {why}", n.name, n.op_type);
        let tensor = |t: &TensorProto| -> Result<Tensor, String> {
            let v = float_values(t)?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            Tensor::from_vec(v, dims, &Device::Cpu)
                .and_then(|x| x.to_dtype(self.dtype))
                .map_err(|e| format!("initializer '{}': {e}", t.name))
        };
        let trainable = trainable_inputs(&n.op_type);
        let mut inputs = Vec::new();
        for (k, i) in n.input.iter().enumerate() {
            let Some(t) = values.get(i).filter(|_| !i.is_empty()) else {
                inputs.push(i.clone());
                continue;
            };
            let is_float = t.data_type == data_type::FLOAT || t.data_type == 11;
            let bias_of_product = n.op_type == "Add" && k == 1 && t.dims.len() <= 1;
            // A per-channel scale (a spelled-out norm's gamma, a transformer's LayerScale).
            let channel_scale = n.op_type == "Mul" && k == 1 && t.dims.len() == 1 && t.dims[0] > 1;
            let known = self.params.iter().any(|(name, _)| name == i);
            if is_float && (trainable.contains(&k) || bias_of_product || channel_scale) {
                if !known {
                    let var = Var::from_tensor(&tensor(t).map_err(&bad)?)
                        .map_err(|e| bad(e.to_string()))?;
                    self.consts.remove(i);
                    self.params.push((i.clone(), var));
                }
            } else if is_float && !self.consts.contains_key(i) && !known {
                self.consts.insert(i.clone(), tensor(t).map_err(&bad)?);
            }
            inputs.push(i.clone());
        }
        Ok(inputs)
    }

    /// The trainable variables with their initializer names.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Names and ops of the translated nodes.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.op_type.clone()))
            .collect()
    }

    /// Runs the top on `x` (the split tensor's values). Errors name the node.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, String> {
        let mut env: HashMap<&str, Tensor> = HashMap::new();
        env.insert(self.input.as_str(), x.clone());
        for n in &self.nodes {
            let get = |k: usize| -> Result<Tensor, String> {
                let name = n.inputs.get(k).filter(|s| !s.is_empty()).ok_or_else(|| {
                    format!("node '{}' ({}): input {k} is missing", n.name, n.op_type)
                })?;
                if let Some(t) = env.get(name.as_str()) {
                    return Ok(t.clone());
                }
                if let Some((_, v)) = self.params.iter().find(|(p, _)| p == name) {
                    return Ok(v.as_tensor().clone());
                }
                self.consts
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("node '{}': no value for '{name}'", n.name))
            };
            let has = |k: usize| n.inputs.get(k).is_some_and(|s| !s.is_empty());
            let y = run(&n.op, &get, has)
                .map_err(|e| format!("node '{}' ({}): {e}", n.name, n.op_type))?;
            env.insert(n.output.as_str(), y);
        }
        let y = env
            .remove(self.output.as_str())
            .ok_or_else(|| format!("the graph never computed '{}'", self.output))?;
        pool_tokens(y, self.tokens).map_err(|e| format!("pooling the output's tokens: {e}"))
    }

    /// The current weights as f32 values, by initializer name.
    pub fn weights(&self) -> CResult<Vec<(String, Vec<f32>)>> {
        self.params
            .iter()
            .map(|(n, v)| {
                Ok((
                    n.clone(),
                    v.as_tensor()
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    /// Writes the current weights into `model`'s initializers (same names, float32 raw data).
    pub fn write_back(&self, model: &mut ModelProto) -> Result<usize, String> {
        let weights = self.weights().map_err(|e| e.to_string())?;
        let graph = model.graph.as_mut().ok_or("the model has no graph")?;
        let mut written = 0;
        for (name, values) in weights {
            let t = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| format!("initializer '{name}' is not in the model"))?;
            t.data_type = data_type::FLOAT;
            t.float_data.clear();
            t.double_data.clear();
            t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            written += 1;
        }
        Ok(written)
    }
}

/// A convolution (padded, then dense im2col, depthwise, or candle's grouped one) plus its bias.
fn conv(
    x: &Tensor,
    get: &dyn Fn(usize) -> Result<Tensor, String>,
    has: &dyn Fn(usize) -> bool,
    (pads, stride, dilation, group): ([usize; 4], (usize, usize), usize, usize),
) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    let w = get(1)?;
    let (_, c, _, _) = x.dims4().map_err(e)?;
    let (o, wc, _, _) = w.dims4().map_err(e)?;
    let xp = x
        .pad_with_zeros(2, pads[0], pads[2])
        .and_then(|t| t.pad_with_zeros(3, pads[1], pads[3]))
        .map_err(e)?;
    let y = if group == 1 && dilation == 1 {
        ops::conv2d(&xp, &w, stride.0, stride.1)
    } else if group == c && wc == 1 && o == c && dilation == 1 {
        ops::depthwise(&xp, &w, stride.0, stride.1)
    } else if stride.0 == stride.1 {
        xp.conv2d(&w, 0, stride.0, dilation, group)
    } else {
        return Err(format!(
            "group {group} with strides {stride:?} is not supported"
        ));
    }
    .map_err(e)?;
    if !has(2) {
        return Ok(y);
    }
    let b = get(2)?;
    y.broadcast_add(&b.reshape((1, o, 1, 1)).map_err(e)?)
        .map_err(e)
}

/// Resolves negative axes against `rank`.
fn axis(a: i64, rank: usize) -> CResult<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if !(0..r).contains(&v) {
        candle_core::bail!("axis {a} is out of range for rank {rank}");
    }
    Ok(v as usize)
}

/// ONNX BatchNormalization (inference): `x * k + (bias - mean * k)`, `k = scale / sqrt(var + eps)`,
/// per channel (axis 1); inputs 1..4 are scale, bias, mean, var.
fn batch_norm(
    x: &Tensor,
    get: &dyn Fn(usize) -> Result<Tensor, String>,
    eps: f64,
) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let c = scale.elem_count();
    let mut shape = vec![1usize; x.rank()];
    if shape.len() < 2 {
        return Err("batch norm needs [N, C, ...] input".into());
    }
    shape[1] = c;
    let k = (var + eps)
        .and_then(|v| v.sqrt())
        .and_then(|v| v.recip())
        .and_then(|inv| inv.mul(&scale))
        .map_err(e)?;
    let shift = bias.sub(&mean.mul(&k).map_err(e)?).map_err(e)?;
    x.broadcast_mul(&k.reshape(shape.clone()).map_err(e)?)
        .and_then(|y| y.broadcast_add(&shift.reshape(shape)?))
        .map_err(e)
}

/// The output `[N, T, D]` pooled as `extract` pools it ([`Tokens::apply`]), as candle ops so the
/// gradient flows through.
fn pool_tokens(y: Tensor, t: Tokens) -> CResult<Tensor> {
    if !t.pools() {
        return Ok(y);
    }
    let (_, n, _) = y.dims3()?;
    if t.prefix >= n && t.pool != TokenPool::Cls {
        candle_core::bail!("{} prefix tokens leave no patch tokens of {n}", t.prefix);
    }
    let cls = || y.narrow(1, 0, 1).and_then(|c| c.squeeze(1));
    let mean = || y.narrow(1, t.prefix, n - t.prefix).and_then(|p| p.mean(1));
    match t.pool {
        TokenPool::Cls => cls(),
        TokenPool::Mean => mean(),
        _ => Tensor::cat(&[cls()?, mean()?], 1),
    }
}

/// ONNX Reshape: `0` copies the input's dimension, `-1` takes what is left.
fn reshape(x: &Tensor, shape: &[i64]) -> Result<Tensor, String> {
    let dims = x.dims();
    let mut out: Vec<usize> = Vec::new();
    let mut hole = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => out.push(*dims.get(i).ok_or("reshape 0 beyond the input rank")?),
            -1 => {
                hole = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            s => return Err(format!("bad reshape dimension {s}")),
        }
    }
    if let Some(i) = hole {
        let known: usize = out.iter().product();
        out[i] = x.elem_count() / known.max(1);
    }
    x.reshape(out).map_err(|e| e.to_string())
}

/// ONNX ReduceMean over `axes` (all when empty), the reduced axes kept or dropped.
fn reduce_mean(x: &Tensor, axes: &[i64], keep: bool) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    let rank = x.rank();
    let mut dims: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| axis(a, rank))
            .collect::<CResult<_>>()
            .map_err(e)?
    };
    dims.sort_unstable();
    let mut y = x.mean_keepdim(dims.clone()).map_err(e)?;
    if !keep {
        for &d in dims.iter().rev() {
            y = y.squeeze(d).map_err(e)?;
        }
    }
    Ok(y)
}

/// Layer norm over the last axis, then the scale (input 1) and shift (input 2) when given.
fn layer_norm(
    x: &Tensor,
    get: &dyn Fn(usize) -> Result<Tensor, String>,
    has: &impl Fn(usize) -> bool,
    eps: f64,
) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    let last = x
        .rank()
        .checked_sub(1)
        .ok_or("a layer norm needs a tensor")?;
    let centred = x
        .broadcast_sub(&x.mean_keepdim(last).map_err(e)?)
        .map_err(e)?;
    let sd = centred
        .sqr()
        .and_then(|v| v.mean_keepdim(last))
        .and_then(|v| v + eps)
        .and_then(|v| v.sqrt())
        .map_err(e)?;
    let mut y = centred.broadcast_div(&sd).map_err(e)?;
    if has(1) {
        y = y.broadcast_mul(&get(1)?).map_err(e)?;
    }
    if has(2) {
        y = y.broadcast_add(&get(2)?).map_err(e)?;
    }
    Ok(y)
}

fn run(
    op: &Op,
    get: &dyn Fn(usize) -> Result<Tensor, String>,
    has: impl Fn(usize) -> bool,
) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    let x = get(0)?;
    Ok(match op {
        Op::Conv {
            pads,
            stride,
            dilation,
            group,
        } => conv(&x, get, &has, (*pads, *stride, *dilation, *group))?,
        Op::Relu => x.relu().map_err(e)?,
        Op::Clip(lo, hi) => {
            let mut y = x;
            if let Some(lo) = lo {
                y = y.maximum(*lo).map_err(e)?;
            }
            if let Some(hi) = hi {
                y = y.minimum(*hi).map_err(e)?;
            }
            y
        }
        Op::MaxPool { k, s } => ops::pool2d(&x, true, *k, *s).map_err(e)?,
        Op::AvgPool { k, s } => ops::pool2d(&x, false, *k, *s).map_err(e)?,
        Op::GlobalAvgPool => x
            .mean_keepdim(2)
            .and_then(|t| t.mean_keepdim(3))
            .map_err(e)?,
        Op::ReduceMean { axes, keep } => reduce_mean(&x, axes, *keep)?,
        Op::BatchNorm { eps } => batch_norm(&x, get, *eps)?,
        Op::Binary(c) => {
            let y = get(1)?;
            match c {
                '+' => x.broadcast_add(&y),
                '-' => x.broadcast_sub(&y),
                '*' => x.broadcast_mul(&y),
                _ => x.broadcast_div(&y),
            }
            .map_err(e)?
        }
        Op::Concat(a) => {
            let mut parts = vec![x];
            let mut k = 1;
            while has(k) {
                parts.push(get(k)?);
                k += 1;
            }
            let d = axis(*a, parts[0].rank()).map_err(e)?;
            Tensor::cat(&parts, d).map_err(e)?
        }
        Op::Flatten(a) => {
            let dims = x.dims().to_vec();
            let d = if *a < 0 {
                (*a + dims.len() as i64) as usize
            } else {
                *a as usize
            };
            let lead: usize = dims[..d.min(dims.len())].iter().product();
            x.reshape((lead, x.elem_count() / lead.max(1))).map_err(e)?
        }
        Op::Reshape(shape) => reshape(&x, shape)?,
        Op::Transpose(perm) => x.permute(perm.clone()).map_err(e)?,
        Op::Gemm {
            alpha,
            beta,
            ta,
            tb,
        } => {
            let b = get(1)?;
            let a = if *ta { x.t().map_err(e)? } else { x };
            let b = if *tb { b.t().map_err(e)? } else { b };
            let mut y = a.matmul(&b).map_err(e)?;
            if *alpha != 1.0 {
                y = (y * *alpha).map_err(e)?;
            }
            if has(2) {
                let c = (get(2)? * *beta).map_err(e)?;
                y = y.broadcast_add(&c).map_err(e)?;
            }
            y
        }
        // Heads come out of a Transpose as strided views; the product needs them laid out.
        Op::MatMul => {
            let b = get(1)?.contiguous().map_err(e)?;
            x.contiguous()
                .and_then(|a| a.broadcast_matmul(&b))
                .map_err(e)?
        }
        Op::Sigmoid => x
            .neg()
            .and_then(|t| t.exp())
            .and_then(|t| t + 1.0)
            .and_then(|t| t.recip())
            .map_err(e)?,
        Op::Softmax(a) => {
            let d = axis(*a, x.rank()).map_err(e)?;
            candle_nn::ops::softmax(&x, d).map_err(e)?
        }
        Op::LayerNorm { eps } => layer_norm(&x, get, &has, *eps)?,
        Op::Erf => x.erf().map_err(e)?,
        Op::Sqrt => x.sqrt().map_err(e)?,
        Op::Pow(p) if *p == 2.0 => x.sqr().map_err(e)?,
        Op::Pow(p) => x.powf(*p).map_err(e)?,
        Op::Identity => x,
    })
}
