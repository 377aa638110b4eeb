//! Static int8 quantisation of an ONNX graph in the QDQ format: QuantizeLinear/DequantizeLinear
//! pairs that ONNX Runtime's graph optimiser fuses into its integer kernels (QLinearConv,
//! QLinearMatMul). Weights are int8, symmetric, one scale per output channel; activations are uint8
//! with a zero point, from ranges measured on calibration images (`infer::quantize`); biases are
//! int32 at scale `x_scale * w_scale[c]`. A Relu or Clip(0, ..) right after a convolution stays
//! between the convolution and its QuantizeLinear, where ONNX Runtime drops it (the uint8 range
//! already clips); a MaxPool's output shares its input's scale, so it runs on uint8 too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::edit::{attr_int, float_values};
use super::generate::{int_attr, node};
use super::proto::ValueInfoProto;
use super::proto::{data_type, GraphProto, ModelProto, TensorProto, TensorTypeProto, TypeProto};

const INT8: i32 = 3;
const INT32: i32 = 6;

/// One node whose float weights become int8: Conv (any group), Gemm, MatMul.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: usize,
    pub name: String,
    /// The activation input.
    pub x: String,
    /// The weight initializer, and the axis of its output channels.
    pub weight: String,
    pub axis: usize,
    pub bias: Option<String>,
    /// The tensor quantised after the node: its output, or that of the Relu/Clip right after it.
    pub y: String,
}

/// `model` with each float `Constant` node of its graph (`value` a tensor) made an initializer of
/// the same name, so a Conv whose weights come from one is quantised like the others (it was left
/// in float without a word). Constants that are graph outputs stay nodes.
pub fn constants_as_initializers(mut model: ModelProto) -> ModelProto {
    let Some(g) = model.graph.as_mut() else {
        return model;
    };
    let outputs: BTreeSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut kept = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        let tensor =
            (n.op_type == "Constant" && n.output.len() == 1 && !outputs.contains(&n.output[0]))
                .then(|| {
                    n.attribute
                        .iter()
                        .find(|a| a.name == "value")
                        .and_then(|a| a.t.clone())
                })
                .flatten()
                .filter(|t| t.data_type == data_type::FLOAT);
        match tensor {
            Some(mut t) => {
                t.name = n.output[0].clone();
                g.initializer.push(t);
            }
            None => kept.push(n),
        }
    }
    g.node = kept;
    model
}

/// The quantisable nodes of `model` (float weights held in initializers), minus those named in
/// `keep_float`.
pub fn targets(model: &ModelProto, keep_float: &[String]) -> Vec<Target> {
    let Some(g) = &model.graph else {
        return Vec::new();
    };
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let consumers = consumers(g);
    let mut out = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if keep_float.iter().any(|k| k == &n.name) || n.input.len() < 2 {
            continue;
        }
        let Some(w) = inits.get(n.input[1].as_str()) else {
            continue;
        };
        if w.data_type != data_type::FLOAT || n.input[0].is_empty() {
            continue;
        }
        let (axis, bias) = match n.op_type.as_str() {
            "Conv" if w.dims.len() >= 3 => (0, n.input.get(2)),
            "Gemm"
                if w.dims.len() == 2
                    && attr_int(n, "transA", 0) == 0
                    && super::edit::attr(n, "alpha").is_none_or(|a| a.f == 1.0)
                    && super::edit::attr(n, "beta").is_none_or(|a| a.f == 1.0) =>
            {
                (
                    if attr_int(n, "transB", 0) == 1 { 0 } else { 1 },
                    n.input.get(2),
                )
            }
            "MatMul" if w.dims.len() == 2 => (1, None),
            _ => continue,
        };
        let bias = bias
            .filter(|b| {
                inits
                    .get(b.as_str())
                    .is_some_and(|t| t.data_type == data_type::FLOAT && t.dims.len() == 1)
            })
            .cloned();
        if n.op_type != "Conv" && n.input.get(2).is_some_and(|b| !b.is_empty()) && bias.is_none() {
            continue; // a Gemm bias that is not a plain vector stays float with its node
        }
        let mut y = n.output[0].clone();
        if let [only] = consumers.get(y.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
            let c = &g.node[*only];
            if c.op_type == "Relu" || (c.op_type == "Clip" && clip_min_is_zero(g, c)) {
                y = c.output[0].clone();
            }
        }
        out.push(Target {
            node: i,
            name: n.name.clone(),
            x: n.input[0].clone(),
            weight: n.input[1].clone(),
            axis,
            bias,
            y,
        });
    }
    out
}

fn clip_min_is_zero(g: &GraphProto, c: &super::proto::NodeProto) -> bool {
    let Some(min) = c.input.get(1) else {
        return super::edit::attr(c, "min").is_some_and(|a| a.f == 0.0);
    };
    g.initializer
        .iter()
        .find(|t| &t.name == min)
        .and_then(|t| float_values(t).ok())
        .is_some_and(|v| v == [0.0])
}

/// Node indices reading each tensor.
fn consumers(g: &GraphProto) -> HashMap<&str, Vec<usize>> {
    let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            m.entry(x.as_str()).or_default().push(i);
        }
    }
    m
}

/// The activation tensors whose ranges calibration must measure: every target's input and
/// quantised output, and the output of a MaxPool fed by one of them (which shares its input's
/// scale). Returns (measured tensors, tied: MaxPool output -> its input).
pub fn activations(
    model: &ModelProto,
    targets: &[Target],
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut set: BTreeSet<String> = BTreeSet::new();
    for t in targets {
        set.insert(t.x.clone());
        set.insert(t.y.clone());
    }
    let mut tied = BTreeMap::new();
    if let Some(g) = &model.graph {
        for n in &g.node {
            if n.op_type == "MaxPool" && n.output.len() == 1 && set.contains(&n.input[0]) {
                tied.insert(n.output[0].clone(), n.input[0].clone());
            }
        }
    }
    let measured = set.into_iter().collect();
    (measured, tied)
}

/// A copy of `model` that also outputs `tensors` (for calibration).
pub fn with_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = &mut m.graph {
        let have: BTreeSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        for t in tensors.iter().filter(|t| !have.contains(*t)) {
            g.output.push(ValueInfoProto {
                name: t.clone(),
                r#type: Some(TypeProto {
                    tensor_type: Some(TensorTypeProto {
                        elem_type: data_type::FLOAT,
                        shape: None,
                    }),
                }),
                doc_string: String::new(),
            });
        }
    }
    m
}

/// uint8 quantisation of an activation: real = (q - zero_point) * scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: u8,
}

impl QParams {
    /// The uint8 parameters covering `[lo, hi]` (widened to include 0, so that 0 is exact).
    pub fn from_range(lo: f32, hi: f32) -> QParams {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        QParams { scale, zero_point }
    }
}

fn tensor(name: String, dims: Vec<i64>, data_type: i32, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims,
        data_type,
        name,
        raw_data,
        ..Default::default()
    }
}

/// The largest int32 bias magnitude written: half of int32's range, leaving the accumulator room.
pub const BIAS_LIMIT: f32 = (1u32 << 30) as f32;

/// Per-channel symmetric int8 weights: (values, one scale per channel along `axis`), with a floor
/// under each channel's scale (`min_scale[c]`; none when `min_scale` is empty). A channel whose
/// weights are almost zero (a dead channel after batch-norm folding: 1e-8 in EfficientNet-Lite0)
/// would get a scale so small that its bias, quantised at `x_scale * w_scale`, overflows int32 and
/// is clamped: the channel's constant output is lost. The floor keeps the bias exact at the cost of
/// rounding such near-zero weights to zero.
pub fn quantize_weights(
    w: &[f32],
    dims: &[i64],
    axis: usize,
    min_scale: &[f32],
) -> (Vec<i8>, Vec<f32>) {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    let channels = d[axis];
    let inner: usize = d[axis + 1..].iter().product();
    let channel = |i: usize| (i / inner) % channels;
    let mut amax = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = channel(i);
        amax[c] = amax[c].max(v.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .enumerate()
        .map(|(c, &a)| {
            let s = (a / 127.0).max(min_scale.get(c).copied().unwrap_or(0.0));
            if s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Rewrites `model` with QDQ pairs for `targets`, given each measured activation's parameters
/// (`params`; tied tensors take their source's). Errors name what is missing.
pub fn rewrite(
    model: &ModelProto,
    targets: &[Target],
    params: &BTreeMap<String, QParams>,
    tied: &BTreeMap<String, String>,
) -> Result<ModelProto, String> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < 13 {
        return Err(format!(
            "opset {opset}: per-channel QuantizeLinear/DequantizeLinear need opset 13 or later (re-export the model with a newer opset)"
        ));
    }
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or("the model has no graph")?;
    let inits: HashMap<String, TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let mut qp = params.clone();
    for (out, src) in tied {
        if let Some(p) = params.get(src) {
            qp.insert(out.clone(), *p);
        }
    }
    // A tensor no node reads (a graph output only) gets no Q/DQ: it would be dead code.
    let read: BTreeSet<String> = consumers(g).into_keys().map(String::from).collect();
    qp.retain(|t, _| read.contains(t));
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut pairs: BTreeMap<String, String> = BTreeMap::new(); // tensor -> its DQ output
    let qdq_nodes = |t: &str, new_inits: &mut Vec<TensorProto>| -> Vec<super::proto::NodeProto> {
        let p = qp[t];
        let (s, z) = (format!("{t}_qscale"), format!("{t}_qzero"));
        new_inits.push(tensor(
            s.clone(),
            vec![],
            data_type::FLOAT,
            p.scale.to_le_bytes().to_vec(),
        ));
        new_inits.push(tensor(
            z.clone(),
            vec![],
            data_type::UINT8,
            vec![p.zero_point],
        ));
        vec![
            node(
                "QuantizeLinear",
                &format!("{t}_Q"),
                &[t, &s, &z],
                &format!("{t}_q"),
                vec![],
            ),
            node(
                "DequantizeLinear",
                &format!("{t}_DQ"),
                &[&format!("{t}_q"), &s, &z],
                &format!("{t}_dq"),
                vec![],
            ),
        ]
    };
    let by_node: HashMap<usize, &Target> = targets.iter().map(|t| (t.node, t)).collect();
    let shared = shared_weights(targets);
    let mut nodes = Vec::with_capacity(g.node.len() * 3);
    let graph_inputs: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    for t in graph_inputs.iter().filter(|t| qp.contains_key(*t)) {
        nodes.extend(qdq_nodes(t, &mut new_inits));
        pairs.insert(t.clone(), format!("{t}_dq"));
    }
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for (i, n) in g.node.iter().enumerate() {
        let mut n = n.clone();
        for x in n.input.iter_mut() {
            if let Some(dq) = pairs.get(x) {
                *x = dq.clone();
            }
        }
        if let Some(t) = by_node.get(&i) {
            let x_scale = qp
                .get(&t.x)
                .ok_or_else(|| {
                    format!("no calibrated range for '{}' (input of '{}')", t.x, t.name)
                })?
                .scale;
            // A weight (or bias) two nodes read gets int8 copies of its own per node: each
            // node's bias scale is its input's, and the names must not repeat.
            let tag = if shared.contains(&t.weight)
                || t.bias.as_ref().is_some_and(|b| shared.contains(b))
            {
                format!("_n{i}")
            } else {
                String::new()
            };
            let (wdq, bdq, dq_nodes) = quantize_target(t, &inits, x_scale, &tag, &mut new_inits)?;
            nodes.extend(dq_nodes);
            n.input[1] = wdq;
            dropped.insert(t.weight.clone());
            if let (Some(b), Some(bdq)) = (&t.bias, bdq) {
                n.input[2] = bdq;
                dropped.insert(b.clone());
            }
        }
        let outs = n.output.clone();
        nodes.push(n);
        for o in outs.iter().filter(|o| qp.contains_key(*o)) {
            nodes.extend(qdq_nodes(o, &mut new_inits));
            pairs.insert(o.clone(), format!("{o}_dq"));
        }
    }
    drop_replaced(g, &nodes, &dropped);
    g.initializer.extend(new_inits);
    g.node = nodes;
    Ok(m)
}

/// Drops from `g` the float weights in `dropped` that none of `nodes` reads any more, from its
/// initializers and from its inputs too (models that list their initializers there as well,
/// `keep_initializers_as_inputs`: a weight left there reads as a second image input).
fn drop_replaced(
    g: &mut GraphProto,
    nodes: &[super::proto::NodeProto],
    dropped: &BTreeSet<String>,
) {
    // Float weights still read by a node that was not quantised stay.
    let still_read: BTreeSet<&String> = nodes.iter().flat_map(|n| n.input.iter()).collect();
    g.initializer
        .retain(|t| !dropped.contains(&t.name) || still_read.contains(&t.name));
    let kept: BTreeSet<&String> = g.initializer.iter().map(|t| &t.name).collect();
    g.input
        .retain(|i| !dropped.contains(&i.name) || kept.contains(&i.name));
}

/// The weights and biases that more than one of `targets` reads.
fn shared_weights(targets: &[Target]) -> BTreeSet<String> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for t in targets {
        for w in std::iter::once(&t.weight).chain(&t.bias) {
            *uses.entry(w.as_str()).or_default() += 1;
        }
    }
    uses.into_iter()
        .filter(|&(_, k)| k > 1)
        .map(|(w, _)| w.to_string())
        .collect()
}

/// The int8 weights (and int32 bias) of one target as initializers in `new_inits`, and the
/// DequantizeLinear nodes that feed them to the node: (weight DQ output, bias DQ output, nodes).
/// `tag` goes into every new name (a weight shared by several nodes).
fn quantize_target(
    t: &Target,
    inits: &HashMap<String, TensorProto>,
    x_scale: f32,
    tag: &str,
    new_inits: &mut Vec<TensorProto>,
) -> Result<(String, Option<String>, Vec<super::proto::NodeProto>), String> {
    let w = &inits[&t.weight];
    let bv = match &t.bias {
        Some(b) => float_values(&inits[b])?,
        None => Vec::new(),
    };
    // The bias must fit: |b| / (x_scale * w_scale) <= BIAS_LIMIT.
    let floor: Vec<f32> = bv
        .iter()
        .map(|b| b.abs() / (x_scale * BIAS_LIMIT))
        .collect();
    let (q, scales) = quantize_weights(&float_values(w)?, &w.dims, t.axis, &floor);
    let (wq, ws, wz) = (
        format!("{}{tag}_int8", t.weight),
        format!("{}{tag}_scale", t.weight),
        format!("{}{tag}_zero", t.weight),
    );
    let c = scales.len() as i64;
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|s| s.to_le_bytes()).collect() };
    new_inits.push(tensor(
        wq.clone(),
        w.dims.clone(),
        INT8,
        q.iter().map(|&v| v as u8).collect(),
    ));
    new_inits.push(tensor(
        ws.clone(),
        vec![c],
        data_type::FLOAT,
        f32_bytes(&scales),
    ));
    new_inits.push(tensor(wz.clone(), vec![c], INT8, vec![0; c as usize]));
    let wdq = format!("{}{tag}_dq", t.weight);
    let mut nodes = vec![node(
        "DequantizeLinear",
        &format!("{}{tag}_DQ", t.weight),
        &[&wq, &ws, &wz],
        &wdq,
        vec![int_attr("axis", t.axis as i64)],
    )];
    let Some(b) = &t.bias else {
        return Ok((wdq, None, nodes));
    };
    if bv.len() != scales.len() {
        return Err(format!(
            "bias '{b}' has {} values for {} channels",
            bv.len(),
            scales.len()
        ));
    }
    let bs: Vec<f32> = scales.iter().map(|s| s * x_scale).collect();
    let bq: Vec<i32> = bv
        .iter()
        .zip(&bs)
        .map(|(v, s)| (v / s).round().clamp(-BIAS_LIMIT, BIAS_LIMIT) as i32)
        .collect();
    let (bqn, bsn, bzn) = (
        format!("{b}{tag}_int32"),
        format!("{b}{tag}_scale"),
        format!("{b}{tag}_zero"),
    );
    new_inits.push(tensor(
        bqn.clone(),
        vec![c],
        INT32,
        bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    new_inits.push(tensor(
        bsn.clone(),
        vec![c],
        data_type::FLOAT,
        f32_bytes(&bs),
    ));
    new_inits.push(tensor(bzn.clone(), vec![c], INT32, vec![0; 4 * c as usize]));
    let bdq = format!("{b}{tag}_dq");
    nodes.push(node(
        "DequantizeLinear",
        &format!("{b}{tag}_DQ"),
        &[&bqn, &bsn, &bzn],
        &bdq,
        vec![int_attr("axis", 0)],
    ));
    Ok((wdq, Some(bdq), nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qparams_cover_the_range_and_keep_zero_exact() {
        let p = QParams::from_range(-1.0, 3.0);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(p.zero_point, 64); // round(1 / (4/255)) = round(63.75)
        let relu = QParams::from_range(0.5, 6.0); // widened to [0, 6]
        assert_eq!(relu.zero_point, 0);
        assert!((relu.scale - 6.0 / 255.0).abs() < 1e-7);
        assert_eq!(QParams::from_range(0.0, 0.0).scale, 1.0);
    }

    #[test]
    fn weights_get_one_symmetric_scale_per_channel() {
        // Two output channels of a [2, 1, 1, 2] kernel: channel 1 is ten times larger.
        let w = [0.5, -1.0, 5.0, 10.0];
        let (q, s) = quantize_weights(&w, &[2, 1, 1, 2], 0, &[]);
        assert_eq!(s, vec![1.0 / 127.0, 10.0 / 127.0]);
        assert_eq!(q, vec![64, -127, 64, 127]);
        // Axis 1 of a [2, 3] MatMul weight: channels are columns.
        let (q, s) = quantize_weights(&[1.0, 2.0, -4.0, -1.0, 1.0, 2.0], &[2, 3], 1, &[]);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(q, vec![127, 127, -127, -127, 64, 64]);
    }

    #[test]
    fn a_dead_channel_keeps_its_bias() {
        // Channel 0 is live; channel 1 is dead (weights 1e-8) with bias 3: at the weights' own
        // scale (1e-8 / 127) its int32 bias would be 3 / (0.02 * 7.9e-11) = 1.9e12 and clamp.
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut inits = HashMap::new();
        let w = [0.5f32, -0.25, 1e-8, -1e-8];
        inits.insert(
            "w".into(),
            tensor("w".into(), vec![2, 1, 1, 2], data_type::FLOAT, f32s(&w)),
        );
        inits.insert(
            "b".into(),
            tensor("b".into(), vec![2], data_type::FLOAT, f32s(&[0.1, 3.0])),
        );
        let t = Target {
            node: 0,
            name: "conv".into(),
            x: "x".into(),
            weight: "w".into(),
            axis: 0,
            bias: Some("b".into()),
            y: "y".into(),
        };
        let x_scale = 0.02;
        let mut new = Vec::new();
        quantize_target(&t, &inits, x_scale, "", &mut new).unwrap();
        let get = |n: &str| new.iter().find(|t| t.name == n).unwrap().raw_data.clone();
        let ints: Vec<i32> = get("b_int32")
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let scales: Vec<f32> = get("b_scale")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for (k, want) in [0.1f32, 3.0].iter().enumerate() {
            let got = ints[k] as f32 * scales[k];
            assert!((got - want).abs() < 1e-6, "bias {k}: {got} for {want}");
            assert!((ints[k] as f32).abs() <= BIAS_LIMIT);
        }
        // The live channel keeps its weights' scale; the dead one's weights round to zero.
        let wscale: Vec<f32> = get("w_scale")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(wscale[0], 0.5 / 127.0);
        assert!(wscale[1] >= 3.0 / (x_scale * BIAS_LIMIT));
        assert_eq!(get("w_int8"), vec![127, (-64i8) as u8, 0, 0]);
    }
}
