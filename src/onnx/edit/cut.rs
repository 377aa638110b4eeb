//! Cutting a model at a tensor: it becomes the only output; the nodes that no longer feed it are
//! pruned with their initializers and inputs, and the metadata of a head cut away goes with it.

use std::collections::{HashMap, HashSet};

use super::{infer_shapes, set_metadata};
use crate::onnx::export;
use crate::onnx::generate::{dim, value_info};
use crate::onnx::proto::{data_type, ModelProto};

/// A copy of `model` whose only output is `tensor`, without the nodes, initializers and inputs that no
/// longer feed it. Errors name the tensor and list some that exist.
pub fn cut(model: &ModelProto, tensor: &str) -> Result<ModelProto, String> {
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    if !g.sparse_initializer.is_empty() {
        return Err("keeps weights as sparse initializers, which cut cannot carry over".into());
    }
    let producer: HashMap<&str, usize> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let is_input = g.input.iter().any(|i| i.name == tensor);
    if !producer.contains_key(tensor) && !is_input {
        let some: Vec<&str> = g
            .node
            .iter()
            .rev()
            .take(8)
            .filter_map(|n| n.output.first().map(|s| s.as_str()))
            .collect();
        return Err(format!(
            "no tensor named '{tensor}' (the last node outputs are: {}; `headstart inspect --layers` lists all)",
            some.join(", ")
        ));
    }
    let mut keep = HashSet::new();
    let mut stack = vec![tensor.to_string()];
    let mut needed: HashSet<String> = HashSet::new();
    while let Some(t) = stack.pop() {
        if !needed.insert(t.clone()) {
            continue;
        }
        if let Some(&i) = producer.get(t.as_str()) {
            if keep.insert(i) {
                for inp in &g.node[i].input {
                    if !inp.is_empty() {
                        stack.push(inp.clone());
                    }
                }
                // Subgraph attributes (If/Loop bodies) may read outer tensors.
                for a in &g.node[i].attribute {
                    for sub in a.g.iter().map(|b| b.as_ref()).chain(a.graphs.iter()) {
                        for n in &sub.node {
                            stack.extend(n.input.iter().filter(|x| !x.is_empty()).cloned());
                        }
                    }
                }
            }
        }
    }
    let shapes = infer_shapes(model, None);
    let mut out = model.clone();
    let og = out.graph.as_mut().expect("checked");
    og.node = g
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, n)| n.clone())
        .collect();
    og.initializer.retain(|t| needed.contains(&t.name));
    og.input.retain(|i| needed.contains(&i.name));
    og.value_info
        .retain(|v| needed.contains(&v.name) && v.name != tensor);
    let elem = g
        .value_info
        .iter()
        .chain(&g.output)
        .find(|v| v.name == tensor)
        .and_then(|v| v.r#type.as_ref())
        .and_then(|t| t.tensor_type.as_ref())
        .map_or(data_type::FLOAT, |t| t.elem_type);
    let dims: Vec<_> = match shapes.get(tensor) {
        Some(d) => d
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i == 0 {
                    dim(None, "N")
                } else {
                    dim((v > 0).then_some(v as usize), "")
                }
            })
            .collect(),
        None => vec![],
    };
    let mut vi = value_info(tensor, dims);
    if let Some(t) = vi.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
        t.elem_type = elem;
        if t.shape.as_ref().is_some_and(|s| s.dim.is_empty()) {
            t.shape = None;
        }
    }
    og.output = vec![vi];
    let tail = g.output.iter().any(|o| o.name == tensor);
    cut_metadata(model, &mut out, tail)?;
    Ok(out)
}

/// The metadata of `out`, cut from `model`: cut below an export's output (`tail` false), the graph
/// no longer ends in the head's probabilities, so the head's keys go (no reader takes what it
/// outputs for them), and a `--tta flip` export is refused (its mirrored batch stays in the base);
/// the matched preset is named, as the cut graph loses the full model's op signature.
fn cut_metadata(model: &ModelProto, out: &mut ModelProto, tail: bool) -> Result<(), String> {
    let tta = model
        .metadata_props
        .iter()
        .any(|p| p.key == export::TTA_KEY && p.value == "flip");
    if tta && !tail {
        return Err("is a --tta flip export (each image runs beside its mirror, twice the batch): cut the base model, or an export made without --tta".into());
    }
    if !tail {
        let head_keys = [
            export::CLASSES_KEY,
            export::THRESHOLDS_KEY,
            export::TTA_KEY,
            "headstart_head_spec",
        ];
        out.metadata_props
            .retain(|p| !head_keys.contains(&p.key.as_str()));
    }
    let meta = crate::onnx::metadata(model);
    if !meta.contains_key("preset") {
        if let Some(p) = crate::data::presets::detect(&meta, &crate::onnx::op_counts(model)) {
            set_metadata(
                out,
                &[("preset", p.name.clone()), ("source", p.source.clone())],
            );
        }
    }
    Ok(())
}
