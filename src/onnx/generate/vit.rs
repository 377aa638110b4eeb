//! Random-weight vision transformers written as ONNX, in the two layouts the hub's exports come
//! in, for tests and speed runs of transformer bases:
//! - [`Style::Torch`] (`torch.onnx.export`, opset 17): `LayerNormalization` nodes, reshapes to
//!   constant shapes, output `last_hidden_state`.
//! - [`Style::Hub`] (the transformers.js / optimum exports, e.g. `Xenova/dinov2-small`): input
//!   `pixel_values [batch_size, 3, height, width]`, layer norm spelled out (ReduceMean, Sub, Pow,
//!   Sqrt, Div), reshapes whose batch size comes from a Shape -> Gather -> Unsqueeze -> Concat
//!   chain, outputs `last_hidden_state` and `pooler_output` (the class token).
//!
//! Both: a patch-embedding Conv, the class token and any register tokens expanded to the batch,
//! a position embedding, pre-norm blocks (separate Q/K/V MatMuls, softmax attention, an Erf GELU
//! MLP, DINOv2's LayerScale), and a final norm. Token order: class, registers, patches. With
//! `classes`, a linear classifier on the class token gives `logits` instead (a model to cut).

use super::{dim, f32_tensor, float_attr, i64_tensor, int_attr, ints, model, node, value_info};
use crate::onnx::proto::*;
use crate::util::rng::Rng;

/// Which exporter's spelling of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Torch,
    Hub,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct VitSpec {
    /// Input side in pixels (square).
    pub size: usize,
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp: usize,
    /// Register tokens after the class token (DINOv2 with registers has 4).
    pub registers: usize,
    /// A classifier on the class token with this many classes (output `logits`).
    pub classes: Option<usize>,
    pub style: Style,
    pub seed: u64,
    /// Written to `metadata_props`.
    pub metadata: Vec<(String, String)>,
}

impl VitSpec {
    /// A tiny ViT for tests: 32 px, patches of 8 (16 patch tokens), width 32, 2 blocks of 4 heads.
    pub fn tiny(style: Style) -> Self {
        VitSpec {
            size: 32,
            patch: 8,
            dim: 32,
            depth: 2,
            heads: 4,
            mlp: 64,
            registers: 0,
            classes: None,
            style,
            seed: 7,
            metadata: vec![],
        }
    }

    /// ViT-S/14 at 224 px (DINOv2 small's shape: 257 tokens of 384), for speed runs.
    pub fn small14(style: Style) -> Self {
        VitSpec {
            size: 224,
            patch: 14,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp: 1536,
            ..VitSpec::tiny(style)
        }
    }

    /// Patch tokens per image.
    pub fn patches(&self) -> usize {
        (self.size / self.patch).pow(2)
    }

    /// Tokens per image: the class token, the registers and the patches.
    pub fn tokens(&self) -> usize {
        1 + self.registers + self.patches()
    }

    /// Multiply-adds of one image: the patch Conv, each block's Q/K/V/output projections, the two
    /// attention MatMuls and the MLP, and the classifier.
    pub fn macs(&self) -> i64 {
        let (t, d, m, p) = (
            self.tokens() as i64,
            self.dim as i64,
            self.mlp as i64,
            self.patches() as i64,
        );
        let embed = p * d * 3 * (self.patch as i64).pow(2);
        let block = 4 * t * d * d + 2 * t * t * d + 2 * t * d * m;
        embed + self.depth as i64 * block + self.classes.map_or(0, |c| d * c as i64)
    }

    fn check(&self) -> Result<(), String> {
        if self.patch == 0 || !self.size.is_multiple_of(self.patch) {
            return Err(format!(
                "size {} is not a multiple of the patch {}",
                self.size, self.patch
            ));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(format!(
                "width {} is not a multiple of {} heads",
                self.dim, self.heads
            ));
        }
        if self.depth == 0 || self.mlp == 0 {
            return Err("a ViT needs at least one block and an MLP width".into());
        }
        if self.size > crate::util::limits::MAX_INPUT_SIDE {
            return Err(format!(
                "size {} is over {} pixels",
                self.size,
                crate::util::limits::MAX_INPUT_SIDE
            ));
        }
        // Weights counted before any is drawn: one file holds at most protobuf's 2 GiB.
        let f = |v: usize| v as f64;
        let tokens = f(self.size / self.patch).powi(2) + f(self.registers) + 1.0;
        let weights = f(self.patch).powi(2) * 3.0 * f(self.dim)
            + tokens * f(self.dim)
            + f(self.depth) * (4.0 * f(self.dim).powi(2) + 2.0 * f(self.dim) * f(self.mlp))
            + f(self.classes.unwrap_or(0)) * f(self.dim);
        const MAX_WEIGHTS: f64 = 500e6;
        if weights > MAX_WEIGHTS {
            return Err(format!(
                "{weights:.3e} weights (size, registers, width, depth, classes) are over the {MAX_WEIGHTS:.0e} one ONNX file holds"
            ));
        }
        Ok(())
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    rng: Rng,
    style: Style,
}

impl Graph {
    fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = format!("{name}_output_0");
        self.nodes.push(node(op, name, inputs, &out, attrs));
        out
    }

    fn weight(&mut self, name: &str, dims: Vec<i64>, std: f32) -> String {
        let n: i64 = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.normal() * std).collect();
        self.inits.push(f32_tensor(name, dims, &v));
        name.to_string()
    }

    fn fill(&mut self, name: &str, dims: Vec<i64>, value: f32) -> String {
        let n: i64 = dims.iter().product();
        self.inits
            .push(f32_tensor(name, dims, &vec![value; n as usize]));
        name.to_string()
    }

    fn ints(&mut self, name: &str, v: &[i64]) -> String {
        self.inits.push(i64_tensor(name, vec![v.len() as i64], v));
        name.to_string()
    }

    /// `x @ w + b` for `x [N, T, cin]`.
    fn linear(&mut self, scope: &str, x: &str, cin: usize, cout: usize) -> String {
        let w = self.weight(
            &format!("{scope}.weight"),
            vec![cin as i64, cout as i64],
            0.02,
        );
        let b = self.fill(&format!("{scope}.bias"), vec![cout as i64], 0.0);
        let y = self.op("MatMul", &format!("/{scope}/MatMul"), &[x, &w], vec![]);
        self.op("Add", &format!("/{scope}/Add"), &[&y, &b], vec![])
    }

    /// Layer norm over the last axis (gamma 1 and beta 0 plus a little noise, so a wrong axis
    /// shows): one node in the torch style, spelled out in the hub style.
    fn norm(&mut self, scope: &str, x: &str, d: usize) -> String {
        let gamma: Vec<f32> = (0..d).map(|_| 1.0 + 0.1 * self.rng.normal()).collect();
        let beta: Vec<f32> = (0..d).map(|_| 0.1 * self.rng.normal()).collect();
        let (g, b) = (format!("{scope}.weight"), format!("{scope}.bias"));
        self.inits.push(f32_tensor(&g, vec![d as i64], &gamma));
        self.inits.push(f32_tensor(&b, vec![d as i64], &beta));
        if self.style == Style::Torch {
            let attrs = vec![int_attr("axis", -1), float_attr("epsilon", 1e-6)];
            return self.op(
                "LayerNormalization",
                &format!("/{scope}/LayerNormalization"),
                &[x, &g, &b],
                attrs,
            );
        }
        let s = |op: &str| format!("/{scope}/{op}");
        let mean = self.op(
            "ReduceMean",
            &s("ReduceMean"),
            &[x],
            vec![ints("axes", &[-1])],
        );
        let centred = self.op("Sub", &s("Sub"), &[x, &mean], vec![]);
        let two = self.fill(&format!("{scope}.two"), vec![], 2.0);
        let sq = self.op("Pow", &s("Pow"), &[&centred, &two], vec![]);
        let var = self.op(
            "ReduceMean",
            &s("ReduceMean_1"),
            &[&sq],
            vec![ints("axes", &[-1])],
        );
        let eps = self.fill(&format!("{scope}.eps"), vec![], 1e-6);
        let var = self.op("Add", &s("Add"), &[&var, &eps], vec![]);
        let sd = self.op("Sqrt", &s("Sqrt"), &[&var], vec![]);
        let normed = self.op("Div", &s("Div"), &[&centred, &sd], vec![]);
        let scaled = self.op("Mul", &s("Mul"), &[&normed, &g], vec![]);
        self.op("Add", &s("Add_1"), &[&scaled, &b], vec![])
    }

    /// The shape `[batch, rest...]` for a Reshape of `like`'s batch: a constant with 0 (copy the
    /// batch) in the torch style, a Shape -> Gather -> Unsqueeze -> Concat chain in the hub style.
    fn batch_shape(&mut self, scope: &str, like: &str, rest: &[i64]) -> String {
        if self.style == Style::Torch {
            let mut v = vec![0];
            v.extend_from_slice(rest);
            return self.ints(&format!("{scope}.shape"), &v);
        }
        let s = |op: &str| format!("/{scope}/{op}");
        let shape = self.op("Shape", &s("Shape"), &[like], vec![]);
        let zero = format!("{scope}.zero");
        self.inits.push(i64_tensor(&zero, vec![], &[0]));
        let n = self.op(
            "Gather",
            &s("Gather"),
            &[&shape, &zero],
            vec![int_attr("axis", 0)],
        );
        let axes = self.ints(&format!("{scope}.axes"), &[0]);
        let n = self.op("Unsqueeze", &s("Unsqueeze"), &[&n, &axes], vec![]);
        let rest = self.ints(&format!("{scope}.rest"), rest);
        self.op(
            "Concat",
            &s("Concat"),
            &[&n, &rest],
            vec![int_attr("axis", 0)],
        )
    }

    /// One pre-norm block on `x [N, T, D]`.
    fn block(&mut self, i: usize, x: &str, spec: &VitSpec) -> String {
        let (t, d, h) = (spec.tokens() as i64, spec.dim, spec.heads);
        let dh = (d / h) as i64;
        let p = format!("encoder.layer.{i}");
        let n1 = self.norm(&format!("{p}.norm1"), x, d);
        let heads = |g: &mut Graph, which: &str, perm: &[i64]| {
            let scope = format!("{p}.attention.attention.{which}");
            let y = g.linear(&scope, &n1, d, d);
            let shape = g.batch_shape(&format!("{scope}.heads"), &y, &[t, h as i64, dh]);
            let y = g.op(
                "Reshape",
                &format!("/{scope}/Reshape"),
                &[&y, &shape],
                vec![],
            );
            g.op(
                "Transpose",
                &format!("/{scope}/Transpose"),
                &[&y],
                vec![ints("perm", perm)],
            )
        };
        let q = heads(self, "query", &[0, 2, 1, 3]);
        let k = heads(self, "key", &[0, 2, 3, 1]);
        let v = heads(self, "value", &[0, 2, 1, 3]);
        let a = format!("/{p}/attention");
        let scores = self.op("MatMul", &format!("{a}/MatMul"), &[&q, &k], vec![]);
        let scale = self.fill(&format!("{p}.scale"), vec![], 1.0 / (dh as f32).sqrt());
        let scores = self.op("Mul", &format!("{a}/Mul"), &[&scores, &scale], vec![]);
        let probs = self.op(
            "Softmax",
            &format!("{a}/Softmax"),
            &[&scores],
            vec![int_attr("axis", -1)],
        );
        let ctx = self.op("MatMul", &format!("{a}/MatMul_1"), &[&probs, &v], vec![]);
        let ctx = self.op(
            "Transpose",
            &format!("{a}/Transpose"),
            &[&ctx],
            vec![ints("perm", &[0, 2, 1, 3])],
        );
        let shape = self.batch_shape(&format!("{p}.merge"), &ctx, &[t, d as i64]);
        let ctx = self.op("Reshape", &format!("{a}/Reshape"), &[&ctx, &shape], vec![]);
        let out = self.linear(&format!("{p}.attention.output.dense"), &ctx, d, d);
        let out = self.layer_scale(&p, 1, &out, d);
        let x = self.op("Add", &format!("/{p}/Add"), &[x, &out], vec![]);
        let n2 = self.norm(&format!("{p}.norm2"), &x, d);
        let up = self.linear(&format!("{p}.mlp.fc1"), &n2, d, spec.mlp);
        let g = self.gelu(&format!("/{p}/mlp/activation"), &up, &p);
        let down = self.linear(&format!("{p}.mlp.fc2"), &g, spec.mlp, d);
        let down = self.layer_scale(&p, 2, &down, d);
        self.op("Add", &format!("/{p}/Add_1"), &[&x, &down], vec![])
    }

    /// DINOv2's LayerScale `k` of block `p`: `x` times a per-channel factor (0.5 here).
    fn layer_scale(&mut self, p: &str, k: usize, x: &str, d: usize) -> String {
        let lambda = self.fill(&format!("{p}.layer_scale{k}.lambda1"), vec![d as i64], 0.5);
        self.op(
            "Mul",
            &format!("/{p}/layer_scale{k}/Mul"),
            &[x, &lambda],
            vec![],
        )
    }

    /// `x * 0.5 * (1 + erf(x / sqrt 2))`, as both exporters write GELU.
    fn gelu(&mut self, scope: &str, x: &str, p: &str) -> String {
        let r2 = self.fill(&format!("{p}.gelu_sqrt2"), vec![], std::f32::consts::SQRT_2);
        let one = self.fill(&format!("{p}.gelu_one"), vec![], 1.0);
        let half = self.fill(&format!("{p}.gelu_half"), vec![], 0.5);
        let y = self.op("Div", &format!("{scope}/Div"), &[x, &r2], vec![]);
        let y = self.op("Erf", &format!("{scope}/Erf"), &[&y], vec![]);
        let y = self.op("Add", &format!("{scope}/Add"), &[&y, &one], vec![]);
        let y = self.op("Mul", &format!("{scope}/Mul"), &[x, &y], vec![]);
        self.op("Mul", &format!("{scope}/Mul_1"), &[&y, &half], vec![])
    }

    /// `param [1, k, D]` repeated over `like`'s batch: `[N, k, D]`.
    fn expand(&mut self, scope: &str, param: &str, like: &str, k: usize, d: usize) -> String {
        let shape = self.batch_shape_always_dynamic(scope, like, &[k as i64, d as i64]);
        self.op(
            "Expand",
            &format!("/{scope}/Expand"),
            &[param, &shape],
            vec![],
        )
    }

    /// Like [`Graph::batch_shape`] but always through Shape (Expand cannot copy a dimension by 0).
    fn batch_shape_always_dynamic(&mut self, scope: &str, like: &str, rest: &[i64]) -> String {
        let style = self.style;
        self.style = Style::Hub;
        let s = self.batch_shape(scope, like, rest);
        self.style = style;
        s
    }
}

impl Graph {
    /// The patch embedding of `input` (a strided Conv, flattened and transposed to tokens), the
    /// class token and registers expanded to the batch before it, plus the position embedding.
    fn embeddings(&mut self, spec: &VitSpec, input: &str) -> String {
        let (d, g) = (spec.dim, (spec.size / spec.patch) as i64);
        let p = spec.patch as i64;
        let w = self.weight(
            "embeddings.patch_embeddings.projection.weight",
            vec![d as i64, 3, p, p],
            0.02,
        );
        let bias = self.fill(
            "embeddings.patch_embeddings.projection.bias",
            vec![d as i64],
            0.0,
        );
        let conv = self.op(
            "Conv",
            "/embeddings/patch_embeddings/projection/Conv",
            &[input, &w, &bias],
            vec![ints("kernel_shape", &[p, p]), ints("strides", &[p, p])],
        );
        let flat_shape = self.batch_shape("embeddings.flatten", &conv, &[d as i64, g * g]);
        let flat = self.op(
            "Reshape",
            "/embeddings/patch_embeddings/Reshape",
            &[&conv, &flat_shape],
            vec![],
        );
        let patches = self.op(
            "Transpose",
            "/embeddings/patch_embeddings/Transpose",
            &[&flat],
            vec![ints("perm", &[0, 2, 1])],
        );
        let cls = self.weight("embeddings.cls_token", vec![1, 1, d as i64], 0.02);
        let cls = self.expand("embeddings.cls", &cls, &patches, 1, d);
        let mut parts = vec![cls];
        if spec.registers > 0 {
            let r = self.weight(
                "embeddings.register_tokens",
                vec![1, spec.registers as i64, d as i64],
                0.02,
            );
            parts.push(self.expand("embeddings.registers", &r, &patches, spec.registers, d));
        }
        parts.push(patches);
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let tokens = self.op(
            "Concat",
            "/embeddings/Concat",
            &refs,
            vec![int_attr("axis", 1)],
        );
        let pos = self.weight(
            "embeddings.position_embeddings",
            vec![1, spec.tokens() as i64, d as i64],
            0.02,
        );
        self.op("Add", "/embeddings/Add", &[&tokens, &pos], vec![])
    }
}

/// Builds the model `spec` describes, with seeded random weights (ViT's 0.02 normal init).
pub fn vit(spec: &VitSpec) -> Result<ModelProto, String> {
    spec.check()?;
    let d = spec.dim;
    let mut b = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        rng: Rng(spec.seed),
        style: spec.style,
    };
    let (input, side) = match spec.style {
        Style::Torch => (
            "pixels",
            [dim(Some(spec.size), ""), dim(Some(spec.size), "")],
        ),
        Style::Hub => ("pixel_values", [dim(None, "height"), dim(None, "width")]),
    };
    let batch = if spec.style == Style::Hub {
        "batch_size"
    } else {
        "N"
    };
    let mut x = b.embeddings(spec, input);
    for i in 0..spec.depth {
        x = b.block(i, &x, spec);
    }
    let last = b.norm("layernorm", &x, d);
    let t = spec.tokens();
    // The class token's index, for the classifier's or the pooler's Gather.
    let zero = "pooler.index";
    if spec.classes.is_some() || spec.style == Style::Hub {
        b.inits.push(i64_tensor(zero, vec![], &[0]));
    }
    let mut outputs = Vec::new();
    match spec.classes {
        Some(c) => {
            let cls = b.op(
                "Gather",
                "/classifier/Gather",
                &[&last, zero],
                vec![int_attr("axis", 1)],
            );
            let w = b.weight("classifier.weight", vec![d as i64, c as i64], 0.02);
            let bb = b.fill("classifier.bias", vec![c as i64], 0.0);
            let y = b.op("MatMul", "/classifier/MatMul", &[&cls, &w], vec![]);
            b.nodes
                .push(node("Add", "/classifier/Add", &[&y, &bb], "logits", vec![]));
            outputs.push(value_info(
                "logits",
                vec![dim(None, batch), dim(Some(c), "")],
            ));
        }
        None => {
            b.nodes.push(node(
                "Identity",
                "/output",
                &[&last],
                "last_hidden_state",
                vec![],
            ));
            outputs.push(value_info(
                "last_hidden_state",
                vec![dim(None, batch), dim(Some(t), ""), dim(Some(d), "")],
            ));
            if spec.style == Style::Hub {
                b.nodes.push(node(
                    "Gather",
                    "/pooler/Gather",
                    &["last_hidden_state", zero],
                    "pooler_output",
                    vec![int_attr("axis", 1)],
                ));
                outputs.push(value_info(
                    "pooler_output",
                    vec![dim(None, batch), dim(Some(d), "")],
                ));
            }
        }
    }
    let [h, wd] = side;
    let graph = GraphProto {
        name: "vit".into(),
        node: b.nodes,
        initializer: b.inits,
        input: vec![value_info(
            input,
            vec![dim(None, batch), dim(Some(3), ""), h, wd],
        )],
        output: outputs,
        ..Default::default()
    };
    Ok(model(
        graph,
        spec.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Moves every initializer of more than 1 KiB into one external data file named `location`
/// (relative to the model's folder), as exporters do for large models; returns that file's bytes.
pub fn externalize(model: &mut ModelProto, location: &str) -> Vec<u8> {
    let mut data = Vec::new();
    let Some(g) = model.graph.as_mut() else {
        return data;
    };
    for t in g.initializer.iter_mut().filter(|t| t.raw_data.len() > 1024) {
        let offset = data.len();
        data.extend_from_slice(&t.raw_data);
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = 1;
        t.raw_data.clear();
        // Exporters align each tensor to 4 KiB in the data file.
        data.resize(data.len().div_ceil(4096) * 4096, 0);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::edit::{infer_shapes, macs};

    /// Shape inference follows both spellings (including the hub style's Shape chains) to the
    /// token output, and the multiply-adds it counts are the architecture's.
    #[test]
    fn shapes_and_macs_of_both_styles() {
        for style in [Style::Torch, Style::Hub] {
            let mut spec = VitSpec::tiny(style);
            spec.registers = 2;
            let m = vit(&spec).unwrap();
            let s = infer_shapes(&m, Some((32, 32)));
            assert_eq!(s["last_hidden_state"], vec![1, 19, 32], "{style:?}");
            let g = m.graph.as_ref().unwrap();
            let total: i64 = g.node.iter().map(|n| macs(n, &s)).sum();
            assert_eq!(total, spec.macs(), "{style:?}");
        }
        // timm's table gives ViT-S/16 at 224 px (197 tokens) 4.6 G multiply-adds; the same width
        // with patches of 14 (DINOv2 ViT-S/14, 257 tokens) comes to 6.1 G.
        let mut s = VitSpec::small14(Style::Hub);
        s.patch = 16;
        assert!((s.macs() as f64 / 1e9 - 4.6).abs() < 0.05, "{}", s.macs());
        let s = VitSpec::small14(Style::Hub);
        assert!((s.macs() as f64 / 1e9 - 6.1).abs() < 0.05, "{}", s.macs());
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = VitSpec::tiny(Style::Torch);
        s.size = 30;
        assert!(vit(&s).unwrap_err().contains("multiple of the patch"));
        let mut s = VitSpec::tiny(Style::Torch);
        s.heads = 5;
        assert!(vit(&s).unwrap_err().contains("heads"));
    }
}
