//! ONNX nodes translated into [`Op`]s, the operations the candle graph runs: each op's attributes
//! read and checked (pads, strides, groups, epsilon, Gemm's transposes); an op the translation does
//! not know is an error naming it and the node.

use super::graph::Values;
use crate::onnx::edit::{attr, attr_int, attr_ints};
use crate::onnx::proto::NodeProto;

/// One translated node.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Conv {
        pads: [usize; 4],
        stride: (usize, usize),
        dilation: usize,
        group: usize,
    },
    Relu,
    Clip(Option<f64>, Option<f64>),
    MaxPool {
        k: (usize, usize),
        s: (usize, usize),
    },
    AvgPool {
        k: (usize, usize),
        s: (usize, usize),
    },
    GlobalAvgPool,
    ReduceMean {
        axes: Vec<i64>,
        keep: bool,
    },
    BatchNorm {
        eps: f64,
    },
    Binary(char),
    Concat(i64),
    Flatten(i64),
    Reshape(Vec<i64>),
    Transpose(Vec<usize>),
    Gemm {
        alpha: f64,
        beta: f64,
        ta: bool,
        tb: bool,
    },
    MatMul,
    Sigmoid,
    Softmax(i64),
    /// Layer norm over the last axis, then scale and shift (inputs 1 and 2).
    LayerNorm {
        eps: f64,
    },
    Erf,
    Sqrt,
    /// A power with a constant exponent.
    Pow(f64),
    Identity,
}

pub(super) fn attr_f(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map_or(default, |a| a.f as f64)
}

pub(super) fn usize2(v: &[i64], what: &str) -> Result<(usize, usize), String> {
    match v {
        [a, b] if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
        _ => Err(format!("{what} {v:?} is not two positive numbers")),
    }
}

/// The candle operation of one ONNX node, with its attributes checked.
pub(super) fn translate_op(n: &NodeProto, values: &Values) -> Result<Op, String> {
    let bad = |why: String| format!("node '{}' ({}): {why}", n.name, n.op_type);
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return Err(bad(format!(
            "op domain '{}' is not supported for fine-tuning",
            n.domain
        )));
    }
    Ok(match n.op_type.as_str() {
        "Conv" => conv_op(n).map_err(bad)?,
        "Relu" => Op::Relu,
        "Clip" => {
            let (lo, hi) = if n.input.len() > 1 {
                (
                    values.scalar_input(n, 1).map_err(bad)?,
                    values.scalar_input(n, 2).map_err(bad)?,
                )
            } else {
                (
                    attr(n, "min").map(|a| a.f as f64),
                    attr(n, "max").map(|a| a.f as f64),
                )
            };
            Op::Clip(lo, hi)
        }
        "MaxPool" | "AveragePool" => pool_op(n).map_err(bad)?,
        "GlobalAveragePool" => Op::GlobalAvgPool,
        "ReduceMean" => Op::ReduceMean {
            axes: attr_ints(n, "axes")
                .or_else(|| values.ints_input(n, 1))
                .unwrap_or_default(),
            keep: attr_int(n, "keepdims", 1) != 0,
        },
        "BatchNormalization" => {
            if attr_int(n, "training_mode", 0) != 0 || n.output.len() > 1 {
                return Err(bad("training-mode batch norm is not supported".into()));
            }
            Op::BatchNorm {
                eps: attr_f(n, "epsilon", 1e-5),
            }
        }
        "Add" => Op::Binary('+'),
        "Sub" => Op::Binary('-'),
        "Mul" => Op::Binary('*'),
        "Div" => Op::Binary('/'),
        "Concat" => Op::Concat(attr_int(n, "axis", 1)),
        "Flatten" => Op::Flatten(attr_int(n, "axis", 1)),
        "Reshape" => Op::Reshape(
            values
                .ints_input(n, 1)
                .ok_or_else(|| bad("the target shape must be a constant".into()))?,
        ),
        "Transpose" => Op::Transpose(
            attr_ints(n, "perm")
                .ok_or_else(|| bad("needs a perm attribute".into()))?
                .iter()
                .map(|&p| p as usize)
                .collect(),
        ),
        "Gemm" => Op::Gemm {
            alpha: attr_f(n, "alpha", 1.0),
            beta: attr_f(n, "beta", 1.0),
            ta: attr_int(n, "transA", 0) != 0,
            tb: attr_int(n, "transB", 0) != 0,
        },
        "MatMul" => Op::MatMul,
        "Sigmoid" => Op::Sigmoid,
        "Softmax" => Op::Softmax(attr_int(n, "axis", -1)),
        "LayerNormalization" => {
            if attr_int(n, "axis", -1) != -1 || n.output.len() > 1 {
                return Err(bad(
                    "only a layer norm over the last axis with one output is supported".into(),
                ));
            }
            Op::LayerNorm {
                eps: attr_f(n, "epsilon", 1e-5),
            }
        }
        "Erf" => Op::Erf,
        "Sqrt" => Op::Sqrt,
        "Pow" => Op::Pow(
            values
                .scalar_input(n, 1)
                .map_err(bad)?
                .ok_or_else(|| bad("the exponent must be a constant".into()))?,
        ),
        "Identity" | "Dropout" => Op::Identity,
        other => {
            return Err(bad(format!(
                "op {other} is not supported for fine-tuning (supported: Conv, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, ReduceMean, BatchNormalization, LayerNormalization, Add, Sub, Mul, Div, Pow, Sqrt, Erf, Concat, Flatten, Reshape, Transpose, Gemm, MatMul, Sigmoid, Softmax, Identity, Dropout); split later with --from-layer"
            )))
        }
    })
}

/// A 2-D convolution's attributes (explicit pads, equal dilations).
pub(super) fn conv_op(n: &NodeProto) -> Result<Op, String> {
    let pad = attr(n, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).to_string());
    if pad
        .as_deref()
        .is_some_and(|p| p != "NOTSET" && p != "VALID")
    {
        return Err(format!(
            "auto_pad {} is not supported; write explicit pads",
            pad.unwrap_or_default()
        ));
    }
    let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
    let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
    let dil = attr_ints(n, "dilations").unwrap_or_else(|| vec![1, 1]);
    if pads.len() != 4 || strides.len() != 2 || dil.len() != 2 {
        return Err("only 2-D convolutions are supported".into());
    }
    if dil[0] != dil[1] || dil[0] < 1 {
        return Err(format!("dilations {dil:?} are not supported"));
    }
    Ok(Op::Conv {
        pads: [
            pads[0] as usize,
            pads[1] as usize,
            pads[2] as usize,
            pads[3] as usize,
        ],
        stride: usize2(&strides, "strides")?,
        dilation: dil[0] as usize,
        group: attr_int(n, "group", 1).max(1) as usize,
    })
}

/// Max or average pooling without pads, ceil mode or dilation.
pub(super) fn pool_op(n: &NodeProto) -> Result<Op, String> {
    let k = usize2(
        &attr_ints(n, "kernel_shape").unwrap_or_default(),
        "kernel_shape",
    )?;
    let s = usize2(
        &attr_ints(n, "strides").unwrap_or_else(|| vec![1, 1]),
        "strides",
    )?;
    let pads = attr_ints(n, "pads").unwrap_or_default();
    if pads.iter().any(|&p| p != 0) || attr_int(n, "ceil_mode", 0) != 0 {
        return Err("pooling with pads or ceil_mode is not supported for fine-tuning".into());
    }
    if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        return Err("dilated pooling is not supported".into());
    }
    if n.op_type == "MaxPool" {
        if n.output.len() > 1 && n.output[1..].iter().any(|o| !o.is_empty()) {
            return Err("MaxPool's indices output is not supported".into());
        }
        Ok(Op::MaxPool { k, s })
    } else {
        Ok(Op::AvgPool { k, s })
    }
}
