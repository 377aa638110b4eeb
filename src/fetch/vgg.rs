//! VGG-16 and VGG-19 conv bases from published weights: Keras applications' HDF5 files
//! (`include_top=False`, NHWC, caffe preprocessing) and torchvision's state_dict (`features.*`, NCHW,
//! torch preprocessing). The graph is the one `make-model` writes, given these weights.

use crate::data::preprocess::Layout;
use crate::onnx::generate::{self, CnnSpec, ConvWeights};
use crate::onnx::proto::ModelProto;

use super::keras;
use super::torch::StateDict;

/// Which VGG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Vgg16,
    Vgg19,
}

impl Depth {
    pub fn blocks(self) -> &'static [usize] {
        match self {
            Depth::Vgg16 => &generate::VGG16_BLOCKS,
            Depth::Vgg19 => &generate::VGG19_BLOCKS,
        }
    }

    fn preset(self) -> &'static str {
        match self {
            Depth::Vgg16 => "vgg16",
            Depth::Vgg19 => "vgg19",
        }
    }

    /// Keras' layer name of each conv (`block1_conv1`, ...), in order.
    fn keras_names(self) -> Vec<String> {
        let (mut block, mut conv, mut names) = (1, 1, Vec::new());
        for &c in self.blocks() {
            if c == 0 {
                block += 1;
                conv = 1;
            } else {
                names.push(format!("block{block}_conv{conv}"));
                conv += 1;
            }
        }
        names
    }

    /// torchvision's state_dict prefix of each conv (`features.0`, `features.2`, ...) with its
    /// kernel shape: a conv and its ReLU take two indices, a pool one.
    fn torchvision_convs(self) -> Vec<(String, [usize; 4])> {
        let (mut i, mut cin, mut convs) = (0, 3, Vec::new());
        for &c in self.blocks() {
            if c == 0 {
                i += 1;
            } else {
                convs.push((format!("features.{i}"), [c, cin, 3, 3]));
                cin = c;
                i += 2;
            }
        }
        convs
    }
}

fn spec(depth: Depth, layout: Layout, metadata: &[(&str, &str)]) -> CnnSpec {
    CnnSpec {
        blocks: depth.blocks().to_vec(),
        // Any input size, as `include_top=False` allows; `input_size` in the metadata says 224x224.
        size: None,
        layout,
        global_pool: false,
        seed: 0,
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The metadata of a Keras VGG conv base: NHWC input, caffe preprocessing (BGR, ImageNet mean
/// subtracted), squashed to 224x224.
pub fn keras_metadata(depth: Depth) -> Vec<(&'static str, &'static str)> {
    vec![
        ("layout", "NHWC"),
        ("input_size", "224x224"),
        ("preprocess", "caffe"),
        ("resize_mode", "squash"),
        ("interpolation", "bilinear"),
        ("preset", depth.preset()),
        ("source", "keras"),
    ]
}

/// The metadata of a torchvision VGG conv base: NCHW, torch preprocessing, centre crop 0.875.
pub fn torchvision_metadata(depth: Depth) -> Vec<(&'static str, &'static str)> {
    vec![
        ("layout", "NCHW"),
        ("input_size", "224x224"),
        ("preprocess", "torch"),
        ("resize_mode", "crop"),
        ("crop_fraction", "0.875"),
        ("interpolation", "bilinear"),
        ("preset", depth.preset()),
        ("source", "torchvision"),
    ]
}

/// The conv base from a Keras weight file's layers (see [`keras::read_layers`]). Layers are matched
/// by name (`block1_conv1`, ...), as `load_weights(by_name=True)` does; extra layers (a top) are
/// ignored, a missing or misshapen conv is an error naming it.
pub fn from_keras(
    layers: &[keras::Layer],
    depth: Depth,
    metadata: &[(&str, &str)],
) -> Result<ModelProto, String> {
    let convs = keras::conv_weights(
        &layers
            .iter()
            .filter(|(n, _)| n.starts_with("block") && n.contains("_conv"))
            .cloned()
            .collect::<Vec<_>>(),
    )?;
    let mut weights: Vec<ConvWeights> = Vec::new();
    for name in depth.keras_names() {
        let (_, shape, k, b) = convs.iter().find(|c| c.0 == name).ok_or_else(|| {
            format!(
                "no layer '{name}' in the weight file (layers: {}); not a {} file?",
                layers
                    .iter()
                    .map(|l| l.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                depth.preset()
            )
        })?;
        if shape[2..] != [3, 3] {
            return Err(format!("layer '{name}': kernel {shape:?}, expected 3x3"));
        }
        weights.push((k.clone(), b.clone()));
    }
    generate::cnn_with(&spec(depth, Layout::Nhwc, metadata), Some(&weights))
}

/// The conv base from a torchvision state_dict (`features.N.weight` [out, in, 3, 3] and `.bias`);
/// the classifier's tensors are ignored.
pub fn from_torchvision(
    sd: &StateDict,
    depth: Depth,
    metadata: &[(&str, &str)],
) -> Result<ModelProto, String> {
    let mut weights: Vec<ConvWeights> = Vec::new();
    for (name, shape) in depth.torchvision_convs() {
        let w = sd.get_shaped(&format!("{name}.weight"), &shape)?;
        let b = sd.get_shaped(&format!("{name}.bias"), &shape[..1])?;
        weights.push((w.data.clone(), b.data.clone()));
    }
    generate::cnn_with(&spec(depth, Layout::Nchw, metadata), Some(&weights))
}
