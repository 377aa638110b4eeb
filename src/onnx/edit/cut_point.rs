//! Where a classifier's base ends: the tensor `cut` writes by default, for a CNN (before the
//! first Flatten, Gemm or global pool after the last Conv) and for a transformer (the tokens after
//! the last block's norm).

use std::collections::{HashMap, HashSet};

use super::{attr_int, attr_ints, int_values};
use crate::onnx::proto::{ModelProto, NodeProto};

/// The default conv-base cut of a model with a classifier (Keras `include_top=False`): the tensor
/// feeding the first Flatten/Reshape/Gemm/MatMul/global pool (or spatial ReduceMean) that comes after
/// the last Conv; `None` when there is no such op. Returns (tensor, the op that reads it).
///
/// For a transformer (attention's Softmax after the last Conv) it is the token sequence after the
/// last block and its norm, `[N, T, D]`: the tensor that the first node after the last Softmax
/// reading along the token axis (Gather or Slice of the class token, a ReduceMean over tokens)
/// reads. `None` when that tensor is already a graph output (nothing to cut).
pub fn default_cut(model: &ModelProto) -> Option<(String, String)> {
    let g = model.graph.as_ref()?;
    let last_conv = g.node.iter().rposition(|n| n.op_type == "Conv")?;
    if let Some(attn) = last_attention(model) {
        if attn > last_conv {
            let consts: HashMap<&str, Vec<i64>> = g
                .initializer
                .iter()
                .filter_map(|t| Some((t.name.as_str(), int_values(t)?)))
                .collect();
            let on_tokens = |n: &NodeProto| match n.op_type.as_str() {
                "Gather" => attr_int(n, "axis", 0) == 1,
                "Slice" => n.input.get(3).and_then(|a| consts.get(a.as_str())) == Some(&vec![1]),
                "ReduceMean" => {
                    attr_ints(n, "axes")
                        .or_else(|| n.input.get(1).and_then(|a| consts.get(a.as_str())).cloned())
                        == Some(vec![1])
                }
                _ => false,
            };
            let found = g.node[attn + 1..].iter().find(|n| on_tokens(n))?;
            let t = found.input.first()?.clone();
            if g.output.iter().any(|o| o.name == t) {
                return None;
            }
            return Some((t, format!("{} '{}'", found.op_type, found.name)));
        }
    }
    g.node[last_conv + 1..].iter().find_map(|n| {
        let head_op = matches!(
            n.op_type.as_str(),
            "Flatten"
                | "Reshape"
                | "Gemm"
                | "MatMul"
                | "GlobalAveragePool"
                | "GlobalMaxPool"
                | "ReduceMean"
                | "ReduceMax"
        );
        let first = n.input.first().filter(|_| head_op)?;
        Some((first.clone(), format!("{} '{}'", n.op_type, n.name)))
    })
}

/// The index of the last attention node: a Softmax whose output a MatMul reads (probabilities
/// times values), as in every transformer block; a classifier's final Softmax is not one.
pub fn last_attention(model: &ModelProto) -> Option<usize> {
    let g = model.graph.as_ref()?;
    let matmul_inputs: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul")
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    g.node.iter().rposition(|n| {
        n.op_type == "Softmax" && n.output.iter().any(|o| matmul_inputs.contains(o.as_str()))
    })
}
