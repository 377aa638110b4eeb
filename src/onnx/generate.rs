//! Random-weight CNNs written as ONNX (ViTs: [`vit`]): tiny VGG-like nets for tests and a VGG-16-shaped conv base for
//! benchmarks (the same layer shapes as `keras.applications.VGG16(include_top=False)`), in NCHW or NHWC.
//! Weights are He-normal from a seeded generator, so the same arguments always give the same bytes.

pub mod vit;

use super::proto::*;
use crate::data::preprocess::Layout;
use crate::util::rng::Rng;

/// The VGG-16 conv base: channels of each 3x3 conv, `0` marks a 2x2 max pool.
pub const VGG16_BLOCKS: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];

/// The VGG-19 conv base (four convs in blocks 3 to 5).
pub const VGG19_BLOCKS: [usize; 21] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct CnnSpec {
    /// Conv output channels; `0` is a 2x2/2 max pool. Every conv is 3x3, pad 1, followed by ReLU.
    pub blocks: Vec<usize>,
    /// Input height and width; `None` makes them dynamic (`H`, `W`).
    pub size: Option<(usize, usize)>,
    pub layout: Layout,
    /// Append a global average pool (output `[N, C]`).
    pub global_pool: bool,
    pub seed: u64,
    /// Written to `metadata_props`.
    pub metadata: Vec<(String, String)>,
}

impl CnnSpec {
    /// The VGG-16 conv base at 224x224.
    pub fn vgg16(layout: Layout) -> Self {
        CnnSpec {
            blocks: VGG16_BLOCKS.to_vec(),
            size: Some((224, 224)),
            layout,
            global_pool: false,
            seed: 16,
            metadata: vec![],
        }
    }

    /// A tiny VGG-like net (conv 8, pool, conv 16, pool) for tests.
    pub fn tiny(layout: Layout, size: Option<(usize, usize)>) -> Self {
        CnnSpec {
            blocks: vec![8, 0, 16, 0],
            size,
            layout,
            global_pool: false,
            seed: 1,
            metadata: vec![],
        }
    }
}

pub fn dim(d: Option<usize>, param: &str) -> Dimension {
    Dimension {
        value: Some(match d {
            Some(v) => DimValue::DimValue(v as i64),
            None => DimValue::DimParam(param.to_string()),
        }),
    }
}

pub fn value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        doc_string: String::new(),
    }
}

pub(crate) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

pub(crate) fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

pub(crate) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op.to_string(),
        attribute: attrs,
        ..Default::default()
    }
}

/// An int64 initializer (shapes, axes, indices) of `dims` (`vec![]` for a scalar).
pub(crate) fn i64_tensor(name: &str, dims: Vec<i64>, v: &[i64]) -> TensorProto {
    TensorProto {
        dims,
        data_type: data_type::INT64,
        name: name.into(),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn f32_tensor(name: &str, dims: Vec<i64>, data: &[f32]) -> TensorProto {
    TensorProto {
        dims,
        data_type: data_type::FLOAT,
        name: name.to_string(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A 3x3 conv's weights: the given ones after a size check, else He-normal from `rng`.
fn conv_weights(
    given: Option<&ConvWeights>,
    name: &str,
    (c, in_ch): (usize, usize),
    rng: &mut Rng,
) -> Result<ConvWeights, String> {
    let fan_in = in_ch * 9;
    match given {
        Some((w, b)) => {
            if w.len() != c * fan_in || b.len() != c {
                return Err(format!(
                    "{name}: {} kernel and {} bias values given, expected {} ([{c}, {in_ch}, 3, 3]) and {c}",
                    w.len(),
                    b.len(),
                    c * fan_in
                ));
            }
            Ok((w.clone(), b.clone()))
        }
        None => {
            let std = (2.0 / fan_in as f32).sqrt();
            let w: Vec<f32> = (0..c * fan_in).map(|_| rng.normal() * std).collect();
            Ok((w, vec![0.0f32; c]))
        }
    }
}

/// Builds the model described by `spec`, with seeded random weights.
pub fn cnn(spec: &CnnSpec) -> ModelProto {
    cnn_with(spec, None).expect("random weights always have the spec's shapes")
}

/// One 3x3 convolution's weights: the kernel in ONNX's OIHW order and the bias.
pub type ConvWeights = (Vec<f32>, Vec<f32>);

/// Builds the model described by `spec` with the given weights (one entry per conv, in order), or
/// seeded random ones when `given` is `None`. Given weights of the wrong count or size are an error.
pub fn cnn_with(spec: &CnnSpec, given: Option<&[ConvWeights]>) -> Result<ModelProto, String> {
    let convs = spec.blocks.iter().filter(|&&c| c != 0).count();
    if let Some(g) = given {
        if g.len() != convs {
            return Err(format!(
                "{} convolutions' weights given, the architecture has {convs}",
                g.len()
            ));
        }
    }
    let mut rng = Rng(spec.seed);
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let (h, w) = match spec.size {
        Some((h, w)) => (Some(h), Some(w)),
        None => (None, None),
    };
    let input_dims = match spec.layout {
        Layout::Nchw => vec![dim(None, "N"), dim(Some(3), ""), dim(h, "H"), dim(w, "W")],
        Layout::Nhwc => vec![dim(None, "N"), dim(h, "H"), dim(w, "W"), dim(Some(3), "")],
    };
    let mut cur = "input".to_string();
    if spec.layout == Layout::Nhwc {
        nodes.push(node(
            "Transpose",
            "to_nchw",
            &["input"],
            "x_nchw",
            vec![ints("perm", &[0, 3, 1, 2])],
        ));
        cur = "x_nchw".into();
    }
    let (mut in_ch, mut sh, mut sw) = (3usize, h, w);
    let (mut block, mut conv, mut index) = (1, 1, 0);
    for &c in &spec.blocks {
        if c == 0 {
            let out = format!("block{block}_pool");
            nodes.push(node(
                "MaxPool",
                &out,
                &[&cur],
                &out,
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ));
            cur = out;
            sh = sh.map(|v| v / 2);
            sw = sw.map(|v| v / 2);
            block += 1;
            conv = 1;
            continue;
        }
        let name = format!("block{block}_conv{conv}");
        let (weights, bias) = conv_weights(given.map(|g| &g[index]), &name, (c, in_ch), &mut rng)?;
        index += 1;
        inits.push(f32_tensor(
            &format!("{name}_W"),
            vec![c as i64, in_ch as i64, 3, 3],
            &weights,
        ));
        inits.push(f32_tensor(&format!("{name}_B"), vec![c as i64], &bias));
        let conv_out = format!("{name}_pre");
        nodes.push(node(
            "Conv",
            &name,
            &[&cur, &format!("{name}_W"), &format!("{name}_B")],
            &conv_out,
            vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
        ));
        nodes.push(node(
            "Relu",
            &format!("{name}_relu"),
            &[&conv_out],
            &name,
            vec![],
        ));
        cur = name;
        in_ch = c;
        conv += 1;
    }
    let output_dims = features_output(spec, (&mut nodes, &mut inits), &cur, in_ch, (sh, sw));
    Ok(model(
        GraphProto {
            node: nodes,
            name: "cnn".into(),
            initializer: inits,
            input: vec![value_info("input", input_dims)],
            output: vec![value_info("features", output_dims)],
            ..Default::default()
        },
        spec.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// The graph's end after the last block (`cur`, `ch` channels, `sh` x `sw` when known): a global
/// average pool and a flatten, or the feature map as it is (transposed back for NHWC). Appends the
/// nodes and initializers; returns the output's dimensions.
fn features_output(
    spec: &CnnSpec,
    (nodes, inits): (&mut Vec<NodeProto>, &mut Vec<TensorProto>),
    cur: &str,
    in_ch: usize,
    (sh, sw): (Option<usize>, Option<usize>),
) -> Vec<Dimension> {
    if spec.global_pool {
        nodes.push(node("GlobalAveragePool", "gap", &[cur], "gap", vec![]));
        inits.push(i64_tensor("flat_shape", vec![2], &[0, -1]));
        nodes.push(node(
            "Reshape",
            "flatten",
            &["gap", "flat_shape"],
            "features",
            vec![],
        ));
        vec![dim(None, "N"), dim(Some(in_ch), "")]
    } else {
        match spec.layout {
            Layout::Nchw => {
                nodes.push(node("Identity", "features", &[cur], "features", vec![]));
                vec![
                    dim(None, "N"),
                    dim(Some(in_ch), ""),
                    dim(sh, "h"),
                    dim(sw, "w"),
                ]
            }
            Layout::Nhwc => {
                nodes.push(node(
                    "Transpose",
                    "to_nhwc",
                    &[cur],
                    "features",
                    vec![ints("perm", &[0, 2, 3, 1])],
                ));
                vec![
                    dim(None, "N"),
                    dim(sh, "h"),
                    dim(sw, "w"),
                    dim(Some(in_ch), ""),
                ]
            }
        }
    }
}

/// A model around `graph` (opset 17, IR 8, produced by headstart) with `metadata_props`.
pub fn model<'a>(
    graph: GraphProto,
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "headstart".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}
