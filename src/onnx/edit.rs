//! Graph reading and editing: tensor shapes by a small shape inference for the ops CNNs and
//! exported transformers use, parameter and multiply-add counts, and cutting a model at any tensor
//! (it becomes the output; nodes that no longer feed it are pruned, with their initializers and
//! inputs; [`cut`] has a file of its own, and so has the default cut point, [`default_cut`]).

mod cut;
mod cut_point;
pub mod rename;
pub use cut::cut;
pub use cut_point::{default_cut, last_attention};
use std::collections::HashMap;

use super::proto::{data_type, AttributeProto, ModelProto, NodeProto, TensorProto};

/// Shapes with `-1` for unknown dimensions; the batch dimension is computed as 1.
pub type Shapes = HashMap<String, Vec<i64>>;

/// The attribute `name` of a node.
pub(crate) fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// An integer-list attribute.
pub(crate) fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// An integer attribute, or `default`.
pub(crate) fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

/// Values of an integer initializer (shape/axes/pads inputs).
pub fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    match t.data_type {
        data_type::INT64 if !t.int64_data.is_empty() => Some(t.int64_data.clone()),
        data_type::INT64 => Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        6 /* INT32 */ if !t.int32_data.is_empty() => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
        _ => None,
    }
}

/// Values of a float initializer held in the file: float32 (`float_data` or raw little-endian
/// bytes), or float64 `double_data` narrowed to f32. Errors name the initializer.
pub fn float_values(t: &TensorProto) -> Result<Vec<f32>, String> {
    if !t.external_data.is_empty() || t.data_location == 1 {
        return Err(format!(
            "initializer '{}' keeps its data in an external file",
            t.name
        ));
    }
    match t.data_type {
        data_type::FLOAT if !t.float_data.is_empty() => Ok(t.float_data.clone()),
        data_type::FLOAT => Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()),
        11 /* DOUBLE */ if !t.double_data.is_empty() => {
            Ok(t.double_data.iter().map(|&v| v as f32).collect())
        }
        other => Err(format!(
            "initializer '{}' has ONNX data type {other}, not float32",
            t.name
        )),
    }
}

/// Element count of a tensor with these dims.
fn numel(dims: &[i64]) -> i64 {
    dims.iter().fold(1i64, |a, &d| a.saturating_mul(d))
}

fn broadcast(a: &[i64], b: &[i64]) -> Vec<i64> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            if x == 1 {
                y
            } else {
                x
            }
        })
        .collect()
}

/// Output size of a sliding window along one axis.
fn window(size: i64, k: i64, stride: i64, pad: i64, dilation: i64, ceil: bool) -> i64 {
    // A stride of 0 or less is a broken model: its size is unknown, never a division by zero.
    if size < 0 || stride <= 0 {
        return -1;
    }
    let eff = (k - 1) * dilation + 1;
    let span = size + pad - eff;
    if ceil {
        (span + stride - 1).div_euclid(stride) + 1
    } else {
        span.div_euclid(stride) + 1
    }
}

/// Infers the shapes of every tensor it can from the graph input shapes (`-1`/dynamic batch -> 1;
/// other dynamic dims can be fixed with `size` = (height, width) for a 4-D image input).
pub fn infer_shapes(model: &ModelProto, size: Option<(i64, i64)>) -> Shapes {
    let mut s = Shapes::new();
    let Some(g) = &model.graph else { return s };
    // Values of the small integer tensors that shapes are computed from: int initializers,
    // Constant nodes, and what Shape -> Gather -> Unsqueeze -> Concat chains make of them.
    let mut vals: Values = g
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone(), int_values(t)?)))
        .collect();
    for t in &g.initializer {
        s.insert(t.name.clone(), t.dims.clone());
    }
    for i in &g.input {
        if s.contains_key(&i.name) {
            continue;
        }
        let dims = value_dims(i);
        let mut dims: Vec<i64> = dims
            .into_iter()
            .enumerate()
            .map(|(k, d)| if k == 0 && d < 0 { 1 } else { d })
            .collect();
        if let (Some((h, w)), 4) = (size, dims.len()) {
            // Fill dynamic spatial dims: NCHW if dim 1 is 3 channels, else NHWC.
            let (hi, wi) = if dims[1] == 3 { (2, 3) } else { (1, 2) };
            if dims[hi] < 0 {
                dims[hi] = h;
            }
            if dims[wi] < 0 {
                dims[wi] = w;
            }
        }
        s.insert(i.name.clone(), dims);
    }
    for n in &g.node {
        if let (Some(o), Some(v)) = (n.output.first(), node_values(n, &s, &vals)) {
            vals.insert(o.clone(), v);
        }
        if let Some(out) = node_shape(n, &s, &vals) {
            if let Some(o) = n.output.first() {
                s.insert(o.clone(), out);
            }
        }
    }
    s
}

/// Known values of small integer tensors, by name.
type Values = HashMap<String, Vec<i64>>;

/// The values a node computes from known integer inputs: Shape of a fully known shape, Constant,
/// Gather (axis 0), Concat, and the ops that keep values (Unsqueeze, Squeeze, Cast, Identity).
fn node_values(n: &NodeProto, s: &Shapes, vals: &Values) -> Option<Vec<i64>> {
    let val = |i: usize| n.input.get(i).and_then(|x| vals.get(x));
    match n.op_type.as_str() {
        "Shape" => {
            let shape = s.get(n.input.first()?)?;
            shape.iter().all(|&d| d >= 0).then(|| shape.clone())
        }
        "Constant" => attr(n, "value")
            .and_then(|a| a.t.as_ref())
            .and_then(int_values),
        "Gather" if attr_int(n, "axis", 0) == 0 => {
            let data = val(0)?;
            val(1)?
                .iter()
                .map(|&i| {
                    data.get(i.rem_euclid(data.len().max(1) as i64) as usize)
                        .copied()
                })
                .collect()
        }
        "Concat" => {
            let mut out = Vec::new();
            for i in 0..n.input.len() {
                out.extend_from_slice(val(i)?);
            }
            Some(out)
        }
        "Unsqueeze" | "Squeeze" | "Cast" | "Identity" => val(0).cloned(),
        _ => None,
    }
}

/// The declared shape of the graph's first output (-1 for dynamic dimensions; empty when none).
pub fn output_dims(model: &ModelProto) -> Vec<i64> {
    model
        .graph
        .as_ref()
        .and_then(|g| g.output.first())
        .map(value_dims)
        .unwrap_or_default()
}

fn value_dims(v: &super::proto::ValueInfoProto) -> Vec<i64> {
    v.r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|sh| {
            sh.dim
                .iter()
                .map(|d| match &d.value {
                    Some(super::proto::DimValue::DimValue(v)) => *v,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The output shape of one node from its inputs' shapes (and constant inputs), or None when an input
/// shape is unknown or the op is not one headstart knows.
fn node_shape(n: &NodeProto, s: &Shapes, vals: &Values) -> Option<Vec<i64>> {
    let input = |i: usize| {
        n.input
            .get(i)
            .filter(|x| !x.is_empty())
            .and_then(|x| s.get(x))
            .cloned()
    };
    if n.op_type == "Constant" {
        return attr(n, "value")
            .and_then(|a| a.t.as_ref())
            .map(|t| t.dims.clone());
    }
    let x = input(0)?;
    let ints_input = |i: usize| n.input.get(i).and_then(|x| vals.get(x)).cloned();
    Some(match n.op_type.as_str() {
        "Conv" => conv_shape(n, &x, &input(1)?),
        "MaxPool" | "AveragePool" => pool_shape(n, &x)?,
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let mut out = x[..2].to_vec();
            out.extend(std::iter::repeat_n(1, x.len() - 2));
            out
        }
        "ReduceMean" | "ReduceMax" | "ReduceSum" | "ReduceMin" => {
            reduce_shape(n, &x, ints_input(1))
        }
        op if SAME_SHAPE_OPS.contains(&op) => x,
        "Add" | "Mul" | "Sub" | "Div" | "Pow" | "Max" | "Min" | "Where" => {
            let mut out = x;
            for i in 1..n.input.len() {
                out = broadcast(&out, &input(i)?);
            }
            out
        }
        "Concat" => {
            let axis = attr_int(n, "axis", 1).rem_euclid(x.len() as i64) as usize;
            let mut out = x;
            for i in 1..n.input.len() {
                out[axis] += input(i)?[axis];
            }
            out
        }
        "Flatten" => {
            let axis = attr_int(n, "axis", 1).rem_euclid(x.len() as i64 + 1) as usize;
            vec![numel(&x[..axis]), numel(&x[axis..])]
        }
        "Reshape" => reshape_shape(&x, ints_input(1)?)?,
        "Shape" => vec![x.len() as i64],
        "Expand" => broadcast(&x, &ints_input(1)?),
        "Gather" => {
            if x.is_empty() {
                return None;
            }
            let axis = attr_int(n, "axis", 0).rem_euclid(x.len() as i64) as usize;
            let mut out = x[..axis].to_vec();
            out.extend(input(1)?);
            out.extend_from_slice(&x[axis + 1..]);
            out
        }
        "Gemm" => {
            let b = input(1)?;
            let m = if attr_int(n, "transA", 0) == 1 {
                x[1]
            } else {
                x[0]
            };
            let nn = if attr_int(n, "transB", 0) == 1 {
                b[0]
            } else {
                b[1]
            };
            vec![m, nn]
        }
        "MatMul" => {
            let b = input(1)?;
            let mut out = x[..x.len() - 1].to_vec();
            out.push(*b.last()?);
            out
        }
        "Transpose" => {
            let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            perm.iter()
                .map(|&p| usize::try_from(p).ok().and_then(|p| x.get(p).copied()))
                .collect::<Option<Vec<i64>>>()?
        }
        "Squeeze" => squeeze_shape(n, &x, ints_input(1)),
        "Unsqueeze" => {
            let axes = attr_ints(n, "axes").or_else(|| ints_input(1))?;
            let rank = x.len() as i64 + axes.len() as i64;
            let mut axes: Vec<i64> = axes.into_iter().map(|a| a.rem_euclid(rank)).collect();
            axes.sort();
            let mut out = x;
            for a in axes {
                out.insert(a as usize, 1);
            }
            out
        }
        "Pad" => {
            let pads = attr_ints(n, "pads").or_else(|| ints_input(1))?;
            let r = x.len();
            // Pads of some axes only (Pad-18's `axes`): the shape is left unknown.
            if pads.len() != 2 * r {
                return None;
            }
            (0..r)
                .map(|i| {
                    if x[i] < 0 {
                        -1
                    } else {
                        x[i] + pads[i] + pads[i + r]
                    }
                })
                .collect()
        }
        _ => return None,
    })
}

/// Element-wise ops: the output has the input's shape.
const SAME_SHAPE_OPS: [&str; 28] = [
    "LayerNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Softmax",
    "Cast",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Erf",
    "LRN",
    "InstanceNormalization",
    "PRelu",
    "Gelu",
    "Mish",
    "Softplus",
    "Reciprocal",
];

/// A convolution's output: batch, the kernel's output channels, each spatial axis windowed.
fn conv_shape(n: &NodeProto, x: &[i64], w: &[i64]) -> Vec<i64> {
    let k = attr_ints(n, "kernel_shape").unwrap_or_else(|| w[2..].to_vec());
    let sp = k.len();
    let strides = attr_ints(n, "strides").unwrap_or(vec![1; sp]);
    let dil = attr_ints(n, "dilations").unwrap_or(vec![1; sp]);
    let pads = attr_ints(n, "pads").unwrap_or(vec![0; 2 * sp]);
    let auto = attr(n, "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default();
    let mut out = vec![x[0], w[0]];
    for a in 0..sp {
        out.push(if auto.starts_with("SAME") {
            (x[2 + a] + strides[a] - 1) / strides[a]
        } else {
            window(
                x[2 + a],
                k[a],
                strides[a],
                pads[a] + pads[a + sp],
                dil[a],
                false,
            )
        });
    }
    out
}

/// Max or average pooling: batch and channels kept, each spatial axis windowed.
fn pool_shape(n: &NodeProto, x: &[i64]) -> Option<Vec<i64>> {
    let k = attr_ints(n, "kernel_shape")?;
    let sp = k.len();
    let strides = attr_ints(n, "strides").unwrap_or(vec![1; sp]);
    let pads = attr_ints(n, "pads").unwrap_or(vec![0; 2 * sp]);
    let ceil = attr_int(n, "ceil_mode", 0) == 1;
    let mut out = x[..2].to_vec();
    for a in 0..sp {
        out.push(window(
            x[2 + a],
            k[a],
            strides[a],
            pads[a] + pads[a + sp],
            1,
            ceil,
        ));
    }
    Some(out)
}

/// A reduction over `axes` (attribute, else the second input, else all), kept as 1 or dropped.
fn reduce_shape(n: &NodeProto, x: &[i64], axes_input: Option<Vec<i64>>) -> Vec<i64> {
    let rank = x.len() as i64;
    let axes: Vec<i64> = attr_ints(n, "axes")
        .or(axes_input)
        .unwrap_or_else(|| (0..rank).collect())
        .into_iter()
        .map(|a| a.rem_euclid(rank))
        .collect();
    let keep = attr_int(n, "keepdims", 1) == 1;
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&(i as i64)), keep) {
            (true, true) => Some(1),
            (true, false) => None,
            _ => Some(d),
        })
        .collect()
}

/// Squeeze: the given axes, or every axis of size 1.
fn squeeze_shape(n: &NodeProto, x: &[i64], axes_input: Option<Vec<i64>>) -> Vec<i64> {
    let rank = x.len() as i64;
    let axes: Vec<i64> = attr_ints(n, "axes")
        .or(axes_input)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.rem_euclid(rank))
        .collect();
    x.iter()
        .enumerate()
        .filter(|(i, &d)| {
            if axes.is_empty() {
                d != 1
            } else {
                !axes.contains(&(*i as i64))
            }
        })
        .map(|(_, &d)| d)
        .collect()
}

/// Reshape to `shape`: 0 copies the input's dimension, one -1 takes what is left.
fn reshape_shape(x: &[i64], mut shape: Vec<i64>) -> Option<Vec<i64>> {
    let total = numel(x);
    for (i, d) in shape.iter_mut().enumerate() {
        if *d == 0 {
            *d = *x.get(i)?;
        }
    }
    if let Some(p) = shape.iter().position(|&d| d == -1) {
        let known: i64 = shape.iter().filter(|&&d| d != -1).product();
        shape[p] = if known > 0 { total / known } else { -1 };
    }
    Some(shape)
}

/// Multiply-adds of one node at the inferred shapes (batch 1).
pub fn macs(n: &NodeProto, s: &Shapes) -> i64 {
    let get = |i: usize| n.input.get(i).and_then(|x| s.get(x));
    let out = n.output.first().and_then(|o| s.get(o));
    match (n.op_type.as_str(), out) {
        ("Conv", Some(o)) if o.iter().all(|&d| d > 0) => {
            get(1).map_or(0, |w| numel(o) * numel(&w[1..]))
        }
        ("Gemm", Some(o)) => get(0).map_or(0, |a| {
            let k = if attr_int(n, "transA", 0) == 1 {
                a[0]
            } else {
                a[1]
            };
            numel(o) * k
        }),
        ("MatMul", Some(o)) => get(0).and_then(|a| a.last()).map_or(0, |k| numel(o) * k),
        _ => 0,
    }
}

/// Trainable-size count: elements of the float initializers.
pub fn parameter_count(model: &ModelProto) -> i64 {
    model.graph.as_ref().map_or(0, |g| {
        g.initializer
            .iter()
            .filter(|t| t.data_type == data_type::FLOAT || t.data_type == data_type::FLOAT16)
            .map(|t| numel(&t.dims))
            .sum()
    })
}

/// A shape for people: the batch dimension as N, unknown ones as ?.
pub fn dims_text(d: &[i64]) -> String {
    let parts: Vec<String> = d
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i == 0 {
                "N".into()
            } else if v < 0 {
                "?".into()
            } else {
                v.to_string()
            }
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// One row per node: name, op, output shape (batch 1 shown as N), multiply-adds.
pub fn layers(model: &ModelProto, shapes: &Shapes) -> Vec<(String, String, String, i64)> {
    let Some(g) = &model.graph else { return vec![] };
    g.node
        .iter()
        .map(|n| {
            let out = n.output.first().cloned().unwrap_or_default();
            let shape = shapes.get(&out).map_or("?".to_string(), |d| dims_text(d));
            let name = if n.name.is_empty() {
                out.clone()
            } else {
                n.name.clone()
            };
            (
                name,
                n.op_type.clone(),
                format!("{out} {shape}"),
                macs(n, shapes),
            )
        })
        .collect()
}

/// Sets (or replaces) metadata entries.
pub fn set_metadata(model: &mut ModelProto, entries: &[(&str, String)]) {
    for (k, v) in entries {
        model.metadata_props.retain(|p| p.key != *k);
        model
            .metadata_props
            .push(super::proto::StringStringEntryProto {
                key: k.to_string(),
                value: v.clone(),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::Layout;
    use crate::onnx::generate::{cnn, CnnSpec};

    #[test]
    fn shapes_and_macs_of_the_generated_vgg16() {
        let m = cnn(&CnnSpec::vgg16(Layout::Nchw));
        let s = infer_shapes(&m, None);
        assert_eq!(s["features"], vec![1, 512, 7, 7]);
        let total: i64 = m
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| macs(n, &s))
            .sum();
        // Keras' VGG16 conv base: 14.71 M parameters, 15.35 G multiply-adds at 224x224.
        assert_eq!(parameter_count(&m), 14_714_688);
        assert!((total as f64 / 1e9 - 15.35).abs() < 0.01, "{total}");
        let nhwc = cnn(&CnnSpec::vgg16(Layout::Nhwc));
        assert_eq!(infer_shapes(&nhwc, None)["features"], vec![1, 7, 7, 512]);
    }

    #[test]
    fn cut_prunes_what_no_longer_feeds_the_new_output() {
        let mut spec = CnnSpec::tiny(Layout::Nchw, Some((32, 32)));
        spec.global_pool = true;
        let m = cnn(&spec);
        let g = m.graph.as_ref().unwrap();
        // Cut at the first conv's output: only that conv (and its ReLU if named so) remains.
        let first_out = g.node[0].output[0].clone();
        let c = cut(&m, &first_out).unwrap();
        let cg = c.graph.as_ref().unwrap();
        assert_eq!(cg.node.len(), 1);
        assert_eq!(cg.output[0].name, first_out);
        assert!(
            cg.initializer.len() <= 2,
            "only the first conv's weight and bias stay"
        );
        assert!(cg
            .initializer
            .iter()
            .all(|t| g.node[0].input.contains(&t.name)));
        // The default cut of a pooled model is the tensor before the global pool.
        let (t, why) = default_cut(&m).unwrap();
        assert!(why.starts_with("GlobalAveragePool"), "{why}");
        let c = cut(&m, &t).unwrap();
        assert!(c
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .all(|n| n.op_type != "GlobalAveragePool" && n.op_type != "Reshape"));
        assert_eq!(infer_shapes(&c, None)[&t], vec![1, 16, 8, 8]);
        assert!(cut(&m, "nope")
            .unwrap_err()
            .contains("no tensor named 'nope'"));
    }
}
