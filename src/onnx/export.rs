//! `export`: one deployable ONNX file, the base model with the trained head appended as ONNX ops
//! (pooling/flatten, Gemm, activations, batch norm folded to Mul/Add, Sigmoid or Softmax; dropout
//! removed), class names and preprocessing in `metadata_props`. With `with_preprocessing` the graph
//! takes uint8 NHWC RGB images at the model's input size and normalises them inside.

use std::path::{Path, PathBuf};

use crate::cache::tokens::{TokenPool, Tokens};
use crate::data::preprocess::{ColorOrder, Layout, Preprocess, ResizeMode};
use crate::error::{Error, Result};
use crate::head::activation::Activation;
use crate::head::file::Head;
use crate::head::net::{Layer, Pool};
use crate::onnx::generate::{
    dim, f32_tensor, float_attr, i64_tensor, int_attr, ints, node, value_info,
};
use crate::onnx::proto::{
    data_type, AttributeProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto,
    TensorProto,
};

/// Name of the exported graph's output: `[N, classes]` probabilities.
pub const OUTPUT: &str = "probabilities";
/// Name of the uint8 image input of a `--with-preprocessing` export.
pub const IMAGE_INPUT: &str = "image";
/// Metadata key set to `flip` when the graph averages each image with its mirror (`--tta flip`).
pub const TTA_KEY: &str = "headstart_tta";
/// Metadata key holding the class names (JSON list); its presence marks a headstart export.
pub const CLASSES_KEY: &str = "headstart_classes";
/// Metadata key of a multi-label model's per-class thresholds (a JSON list, in class order): its
/// outputs are one sigmoid per class, and a class is predicted at a probability of at least its
/// threshold.
pub const THRESHOLDS_KEY: &str = "headstart_thresholds";

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub model: PathBuf,
    pub head: PathBuf,
    pub out: PathBuf,
    pub with_preprocessing: bool,
    /// Test-time augmentation inside the graph: the batch and its left-right mirror go through the
    /// base and head, and the two probabilities are averaged (as `evaluate` and `score --tta flip`).
    pub tta_flip: bool,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub nodes_added: usize,
    pub classes: Vec<String>,
    pub bytes: u64,
}

/// Appends nodes and initializers under a common name prefix.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    count: usize,
}

impl Builder {
    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("headstart/{what}_{}", self.count)
    }
    fn constant(&mut self, what: &str, dims: Vec<i64>, data: &[f32]) -> String {
        let n = self.name(what);
        self.inits.push(f32_tensor(&n, dims, data));
        n
    }
    fn ints(&mut self, what: &str, dims: Vec<i64>, v: &[i64]) -> String {
        let n = self.name(what);
        self.inits.push(i64_tensor(&n, dims, v));
        n
    }
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.name(&op.to_ascii_lowercase());
        self.nodes.push(node(op, &out, inputs, &out, attrs));
        out
    }
}

/// Writes `cfg.out`; refuses a base model other than the one the head was trained on.
pub fn export(cfg: &ExportConfig) -> Result<ExportSummary> {
    let head = Head::load(&cfg.head)?;
    let sha = crate::onnx::model_sha256(&cfg.model)?;
    if sha != head.base.model_sha256 {
        return Err(Error::Config(format!(
            "base models differ: head {} was trained on {} (sha256 {}), --model {} has sha256 {sha}",
            cfg.head.display(),
            head.base.model_file,
            head.base.model_sha256,
            cfg.model.display()
        )));
    }
    let pre = head
        .base
        .preprocess()
        .map_err(|e| Error::cache(&cfg.head, e))?;
    let mut model = crate::onnx::load_inlined(&cfg.model)?;
    if !model.functions.is_empty() {
        return Err(Error::model(
            &cfg.model,
            "uses ONNX local functions, which export cannot carry over",
        ));
    }
    if model
        .graph
        .as_ref()
        .is_some_and(|g| !g.sparse_initializer.is_empty())
    {
        return Err(Error::model(
            &cfg.model,
            "keeps weights as sparse initializers, which export cannot carry over",
        ));
    }
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| Error::model(&cfg.model, "no graph"))?;
    // The base's names that would clash with the ones added (the `image` input, the
    // `probabilities` output, `headstart/...` nodes of an earlier export) move under `base/`:
    // the file was written and then refused by every runtime.
    let clash = |n: &str| {
        n == OUTPUT || (cfg.with_preprocessing && n == IMAGE_INPUT) || n.starts_with("headstart/")
    };
    let renamed = crate::onnx::edit::rename::clear_of(graph, clash);
    crate::onnx::edit::rename::rename(graph, &renamed);
    let feature = head.base.output_name.clone();
    let feature = renamed.get(&feature).cloned().unwrap_or(feature);
    if !graph.output.iter().any(|o| o.name == feature) {
        return Err(Error::model(
            &cfg.model,
            format!("has no output '{feature}' (the head was trained on it)"),
        ));
    }
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    if opset < 11 {
        return Err(Error::model(
            &cfg.model,
            format!("opset {opset}: export needs opset 11 or newer"),
        ));
    }
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 0,
    };
    let pooled = pool_tokens(&mut b, head.base.tokens, &feature, opset);
    let probs = append_head(&mut b, &head, &pooled)?;
    let added = b.nodes.len();
    let graph = model.graph.as_mut().expect("checked above");
    graph.output = vec![value_info(
        OUTPUT,
        vec![dim(None, "N"), dim(Some(head.classes.len()), "")],
    )];
    graph.node.extend(b.nodes);
    graph.initializer.extend(b.inits);
    let probs = if cfg.tta_flip {
        let w_axis = if pre.layout == Layout::Nhwc { 2 } else { 3 };
        flip_tta(graph, &probs, w_axis, head.classes.len())
    } else {
        probs
    };
    let id = node("Identity", "headstart/output", &[&probs], OUTPUT, vec![]);
    graph.node.push(id);
    if cfg.with_preprocessing {
        add_preprocessing(graph, &pre, &cfg.model)?;
    }
    set_metadata(&mut model, &head, &pre, cfg.with_preprocessing);
    if cfg.tta_flip {
        model.metadata_props.push(StringStringEntryProto {
            key: TTA_KEY.into(),
            value: "flip".into(),
        });
    }
    crate::onnx::save_to(
        &model,
        &crate::util::output::Output::new(&cfg.out)
            .input(&cfg.model)
            .input(&cfg.head)
            .inputs(crate::onnx::external_data_files(&cfg.model))
            .replace(crate::onnx::replace_model()),
    )?;
    Ok(ExportSummary {
        out: cfg.out.clone(),
        nodes_added: added + 1,
        classes: head.classes.clone(),
        bytes: std::fs::metadata(&cfg.out).map(|m| m.len()).unwrap_or(0),
    })
}

/// Rewrites `graph` so its input batch is followed by its left-right mirror (along `w_axis`) on the
/// way into the base, and returns the mean of the two halves of `probs` (`[2N, classes]` -> `[N,
/// classes]`). Uses Slice with a negative step, Concat, Reshape and Gather (opset 11 and newer).
fn flip_tta(graph: &mut GraphProto, probs: &str, w_axis: i64, classes: usize) -> String {
    let input = graph.input[0].name.clone();
    let both = "headstart/tta_batch".to_string();
    for n in &mut graph.node {
        for i in &mut n.input {
            if *i == input {
                *i = both.clone();
            }
        }
    }
    let i64s = |name: &str, v: &[i64]| i64_tensor(name, vec![v.len() as i64], v);
    graph.initializer.extend([
        i64s("headstart/tta_starts", &[-1]),
        i64s("headstart/tta_ends", &[i64::MIN]),
        i64s("headstart/tta_axes", &[w_axis]),
        i64s("headstart/tta_steps", &[-1]),
        i64s("headstart/tta_halves", &[2, -1, classes as i64]),
        i64_tensor("headstart/tta_plain", vec![], &[0]),
        i64_tensor("headstart/tta_mirrored", vec![], &[1]),
        f32_tensor("headstart/tta_half", vec![], &[0.5]),
    ]);
    let mirrored = "headstart/tta_mirror".to_string();
    let mut front = vec![
        node(
            "Slice",
            &mirrored,
            &[
                &input,
                "headstart/tta_starts",
                "headstart/tta_ends",
                "headstart/tta_axes",
                "headstart/tta_steps",
            ],
            &mirrored,
            vec![],
        ),
        node(
            "Concat",
            &both,
            &[&input, &mirrored],
            &both,
            vec![int_attr("axis", 0)],
        ),
    ];
    front.append(&mut graph.node);
    graph.node = front;
    let halves = "headstart/tta_halves_out";
    let (a, b) = ("headstart/tta_p_plain", "headstart/tta_p_mirrored");
    let (sum, mean) = ("headstart/tta_sum", "headstart/tta_mean");
    graph.node.extend([
        node(
            "Reshape",
            halves,
            &[probs, "headstart/tta_halves"],
            halves,
            vec![],
        ),
        node(
            "Gather",
            a,
            &[halves, "headstart/tta_plain"],
            a,
            vec![int_attr("axis", 0)],
        ),
        node(
            "Gather",
            b,
            &[halves, "headstart/tta_mirrored"],
            b,
            vec![int_attr("axis", 0)],
        ),
        node("Add", sum, &[a, b], sum, vec![]),
        node("Mul", mean, &[sum, "headstart/tta_half"], mean, vec![]),
    ]);
    mean.to_string()
}

/// The head's ops on tensor `x` (the base's feature output); returns the probabilities tensor.
/// The pooling the head's features had (`extract --pool`) as graph nodes on the token output `x`
/// `[N, T, D]`: the class token by Gather, the patch mean by Slice and ReduceMean (axes an
/// attribute before opset 18, an input from 18), both by Concat. `x` itself when nothing pools.
fn pool_tokens(b: &mut Builder, tokens: Tokens, x: &str, opset: i64) -> String {
    let mut parts = Vec::new();
    if matches!(tokens.pool, TokenPool::Cls | TokenPool::ClsMean) {
        let zero = b.ints("cls_index", vec![], &[0]);
        parts.push(b.op("Gather", &[x, &zero], vec![int_attr("axis", 1)]));
    }
    if matches!(tokens.pool, TokenPool::Mean | TokenPool::ClsMean) {
        let starts = b.ints("patch_start", vec![1], &[tokens.prefix as i64]);
        let ends = b.ints("patch_end", vec![1], &[i64::MAX]);
        let axes = b.ints("token_axis", vec![1], &[1]);
        let patches = b.op("Slice", &[x, &starts, &ends, &axes], vec![]);
        let keep = int_attr("keepdims", 0);
        parts.push(if opset >= 18 {
            b.op("ReduceMean", &[&patches, &axes], vec![keep])
        } else {
            b.op("ReduceMean", &[&patches], vec![ints("axes", &[1]), keep])
        });
    }
    match parts.as_slice() {
        [] => x.to_string(),
        [one] => one.clone(),
        both => {
            let refs: Vec<&str> = both.iter().map(String::as_str).collect();
            b.op("Concat", &refs, vec![int_attr("axis", 1)])
        }
    }
}

fn append_head(b: &mut Builder, head: &Head, x: &str) -> Result<String> {
    let shape = &head.feature_shape;
    let nhwc = crate::head::net::features_channels_first(shape, &head.base.layout) == Some(false);
    let mut cur = x.to_string();
    if shape.len() == 3 && head.pool != Pool::Flatten {
        if nhwc {
            cur = b.op("Transpose", &[&cur], vec![ints("perm", &[0, 3, 1, 2])]);
        }
        let op = if head.pool == Pool::Avg {
            "GlobalAveragePool"
        } else {
            "GlobalMaxPool"
        };
        cur = b.op(op, &[&cur], vec![]);
    }
    cur = b.op("Flatten", &[&cur], vec![int_attr("axis", 1)]);
    for l in &head.network.layers {
        cur = match l {
            Layer::Dense(d) => {
                let (i, o) = d.w.dim();
                let w = b.constant(
                    "kernel",
                    vec![i as i64, o as i64],
                    d.w.as_slice().expect("standard layout"),
                );
                let bias = b.constant("bias", vec![o as i64], d.b.as_slice().expect("standard"));
                b.op("Gemm", &[&cur, &w, &bias], vec![])
            }
            Layer::Activation(a) => activation(b, *a, &cur),
            Layer::Dropout(_) => continue,
            Layer::BatchNorm(bn) => {
                let scale: Vec<f32> = bn
                    .gamma
                    .iter()
                    .zip(&bn.var)
                    .map(|(g, v)| g / (v + bn.eps).sqrt())
                    .collect();
                let shift: Vec<f32> = bn
                    .beta
                    .iter()
                    .zip(&bn.mean)
                    .zip(&scale)
                    .map(|((b, m), s)| b - m * s)
                    .collect();
                let n = scale.len() as i64;
                let s = b.constant("bn_scale", vec![n], &scale);
                let t = b.constant("bn_shift", vec![n], &shift);
                let m = b.op("Mul", &[&cur, &s], vec![]);
                b.op("Add", &[&m, &t], vec![])
            }
        };
    }
    if head.multi_label() {
        Ok(b.op("Sigmoid", &[&cur], vec![]))
    } else if head.network.output_dim() == Some(1) {
        let p = b.op("Sigmoid", &[&cur], vec![]);
        let one = b.constant("one", vec![1], &[1.0]);
        let q = b.op("Sub", &[&one, &p], vec![]);
        Ok(b.op("Concat", &[&q, &p], vec![int_attr("axis", 1)]))
    } else {
        Ok(b.op("Softmax", &[&cur], vec![int_attr("axis", 1)]))
    }
}

fn activation(b: &mut Builder, a: Activation, x: &str) -> String {
    match a {
        Activation::Relu => b.op("Relu", &[x], vec![]),
        Activation::LeakyRelu(s) => b.op("LeakyRelu", &[x], vec![float_attr("alpha", s)]),
        Activation::Tanh => b.op("Tanh", &[x], vec![]),
        Activation::Sigmoid => b.op("Sigmoid", &[x], vec![]),
        Activation::Linear => b.op("Identity", &[x], vec![]),
        Activation::Gelu => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as in activation.rs.
            let c = b.constant("gelu_c", vec![1], &[0.797_884_6]);
            let k = b.constant("gelu_k", vec![1], &[0.044715]);
            let one = b.constant("one", vec![1], &[1.0]);
            let half = b.constant("half", vec![1], &[0.5]);
            let x2 = b.op("Mul", &[x, x], vec![]);
            let x3 = b.op("Mul", &[&x2, x], vec![]);
            let kx3 = b.op("Mul", &[&x3, &k], vec![]);
            let inner = b.op("Add", &[x, &kx3], vec![]);
            let u = b.op("Mul", &[&inner, &c], vec![]);
            let t = b.op("Tanh", &[&u], vec![]);
            let t1 = b.op("Add", &[&t, &one], vec![]);
            let xt = b.op("Mul", &[x, &t1], vec![]);
            b.op("Mul", &[&xt, &half], vec![])
        }
    }
}

/// Replaces the float input by a uint8 NHWC RGB image input and the normalisation ops.
fn add_preprocessing(graph: &mut GraphProto, pre: &Preprocess, model: &Path) -> Result<()> {
    // Older exporters list initializers among the inputs too.
    let real: Vec<usize> = (0..graph.input.len())
        .filter(|&i| {
            !graph
                .initializer
                .iter()
                .any(|t| t.name == graph.input[i].name)
        })
        .collect();
    let [pos] = real[..] else {
        return Err(Error::model(
            model,
            format!(
                "--with-preprocessing needs a model with one input, it has {}",
                real.len()
            ),
        ));
    };
    let base_input = graph.input[pos].name.clone();
    let (h, w) = (pre.size.0 as usize, pre.size.1 as usize);
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
        count: 100_000,
    };
    let mut cur = b.op(
        "Cast",
        &[IMAGE_INPUT],
        vec![int_attr("to", data_type::FLOAT as i64)],
    );
    if pre.normalize.color == ColorOrder::Bgr {
        let idx = b.ints("bgr_index", vec![3], &[2, 1, 0]);
        cur = b.op("Gather", &[&cur, &idx], vec![int_attr("axis", 3)]);
    }
    // Same arithmetic as preprocess::normalize_into: (pixel - mean) * (1 / std), in f32.
    let mean = b.constant("mean", vec![1, 1, 1, 3], &pre.normalize.mean);
    let inv: Vec<f32> = pre.normalize.std.iter().map(|s| 1.0 / s).collect();
    let inv = b.constant("inv_std", vec![1, 1, 1, 3], &inv);
    let centred = b.op("Sub", &[&cur, &mean], vec![]);
    let scaled = b.op("Mul", &[&centred, &inv], vec![]);
    // The last op writes the tensor the base's first layer reads.
    if pre.layout == Layout::Nchw {
        b.nodes.push(node(
            "Transpose",
            "headstart/to_nchw",
            &[&scaled],
            &base_input,
            vec![ints("perm", &[0, 3, 1, 2])],
        ));
    } else {
        b.nodes.push(node(
            "Identity",
            "headstart/to_input",
            &[&scaled],
            &base_input,
            vec![],
        ));
    }
    let mut input = value_info(
        IMAGE_INPUT,
        vec![
            dim(None, "N"),
            dim(Some(h), ""),
            dim(Some(w), ""),
            dim(Some(3), ""),
        ],
    );
    if let Some(tt) = input.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
        tt.elem_type = data_type::UINT8;
    }
    input.doc_string = format!("uint8 RGB images, {w}x{h}, NHWC");
    graph.input[pos] = input;
    let mut nodes = b.nodes;
    nodes.append(&mut graph.node);
    graph.node = nodes;
    graph.initializer.extend(b.inits);
    Ok(())
}

fn set_metadata(model: &mut ModelProto, head: &Head, pre: &Preprocess, in_graph: bool) {
    let keys = [
        CLASSES_KEY,
        THRESHOLDS_KEY,
        "headstart_version",
        "headstart_head_spec",
        "headstart_preprocessing_in_graph",
        "mean",
        "std",
        "color_order",
        "pixel_scale",
        "preprocess",
        "resize_mode",
        "crop_fraction",
        "interpolation",
        "input_size",
        "layout",
        "jpeg_decode",
        TTA_KEY,
    ];
    model
        .metadata_props
        .retain(|p| !keys.contains(&p.key.as_str()));
    let mut put = |k: &str, v: String| {
        model.metadata_props.push(StringStringEntryProto {
            key: k.into(),
            value: v,
        })
    };
    put(
        CLASSES_KEY,
        serde_json::to_string(&head.classes).unwrap_or_default(),
    );
    if let Some(t) = &head.thresholds {
        put(THRESHOLDS_KEY, serde_json::to_string(t).unwrap_or_default());
    }
    put("headstart_version", env!("CARGO_PKG_VERSION").into());
    put("headstart_head_spec", head.spec.clone());
    put("headstart_preprocessing_in_graph", in_graph.to_string());
    let f3 = |v: [f32; 3]| v.map(|x| x.to_string()).join(",");
    if in_graph {
        // Raw uint8 RGB in: the graph normalises.
        put("layout", "NHWC".into());
    } else {
        put("mean", f3(pre.normalize.mean));
        put("std", f3(pre.normalize.std));
        put("color_order", pre.normalize.color.to_string());
        put("layout", pre.layout.to_string());
    }
    match pre.resize {
        ResizeMode::Squash => put("resize_mode", "squash".into()),
        ResizeMode::Crop { fraction } => {
            put("resize_mode", "crop".into());
            put("crop_fraction", fraction.to_string());
        }
    }
    put("interpolation", pre.interpolation.to_string());
    put("input_size", format!("{}x{}", pre.size.1, pre.size.0));
    // Decoding happens before the graph, in or out: the head's own.
    put("jpeg_decode", pre.decode.to_string());
}
