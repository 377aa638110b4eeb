//! Known architectures, one JSON file each in `models/presets/` (embedded at build time): input size,
//! preprocessing and conv-base output per source (Keras applications, torchvision), resize policy,
//! fine-tune split points and the published figures. A preset is matched to a model by its
//! `metadata_props` (`preset`, `source`) or by the op counts of its graph, or forced with `--preset`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::data::preprocess::{ColorOrder, Interpolation, Mode, Normalize, ResizeMode};

/// The preset files, in table order.
const FILES: &[&str] = &[
    include_str!("../../models/presets/vgg16.json"),
    include_str!("../../models/presets/vgg19.json"),
    include_str!("../../models/presets/resnet50.json"),
    include_str!("../../models/presets/resnet101.json"),
    include_str!("../../models/presets/resnet152.json"),
    include_str!("../../models/presets/resnet50v2.json"),
    include_str!("../../models/presets/resnet101v2.json"),
    include_str!("../../models/presets/resnet152v2.json"),
    include_str!("../../models/presets/inceptionv3.json"),
    include_str!("../../models/presets/inceptionresnetv2.json"),
    include_str!("../../models/presets/xception.json"),
    include_str!("../../models/presets/mobilenet.json"),
    include_str!("../../models/presets/mobilenetv2.json"),
    include_str!("../../models/presets/densenet121.json"),
    include_str!("../../models/presets/densenet169.json"),
    include_str!("../../models/presets/densenet201.json"),
    include_str!("../../models/presets/nasnetmobile.json"),
    include_str!("../../models/presets/nasnetlarge.json"),
    include_str!("../../models/presets/efficientnet_lite0.json"),
    include_str!("../../models/presets/efficientnet_lite1.json"),
    include_str!("../../models/presets/efficientnet_lite2.json"),
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum ResizeSpec {
    Named(String),
    Crop { crop: f32 },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum NormSpec {
    Mode(String),
    MeanStd {
        mean: [f32; 3],
        std: [f32; 3],
        color: String,
    },
}

/// One source of weights for an architecture (its layout and preprocessing).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Source {
    pub layout: String,
    preprocess: NormSpec,
    pub conv_base_output: Option<String>,
    pub output_shape: Vec<usize>,
    pub fine_tune_from: Option<String>,
    resize: Option<ResizeSpec>,
    interpolation: Option<String>,
}

/// The published figures of the architecture (Keras applications table).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Figures {
    pub size_mb: f64,
    pub top1: Option<f64>,
    pub top5: Option<f64>,
    pub parameters_m: f64,
    pub depth: Option<u32>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct File {
    name: String,
    display: String,
    input_size: [u32; 2],
    resize: ResizeSpec,
    interpolation: String,
    sources: BTreeMap<String, Source>,
    figures: Figures,
    #[serde(default)]
    signature: BTreeMap<String, usize>,
    /// Fine-tune split points: block name -> the first node to train, one name per naming convention
    /// (Keras/tf2onnx, torchvision): a node name or a `/`-separated part of one.
    #[serde(default)]
    unfreeze: BTreeMap<String, Vec<String>>,
}

/// Input size and preprocessing of a known architecture, for one source of weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: String,
    pub display: String,
    /// (height, width)
    pub size: (u32, u32),
    /// The source whose preprocessing applies (`keras` unless metadata names another).
    pub source: String,
    pub normalize: Normalize,
    pub resize: ResizeMode,
    pub interpolation: Interpolation,
    pub sources: BTreeMap<String, Source>,
    pub figures: Figures,
    /// Graph signature: op counts that must all match (empty: matched by metadata or name only).
    pub signature: BTreeMap<String, usize>,
    /// `finetune --unfreeze BLOCK` split points: block name -> first node to train (candidates).
    pub unfreeze: BTreeMap<String, Vec<String>>,
}

fn resize(r: &ResizeSpec) -> ResizeMode {
    match r {
        ResizeSpec::Crop { crop } => ResizeMode::Crop { fraction: *crop },
        ResizeSpec::Named(_) => ResizeMode::Squash,
    }
}

fn normalize(n: &NormSpec) -> Normalize {
    match n {
        NormSpec::Mode(m) => Mode::parse(m).unwrap_or(Mode::Raw).normalize(),
        NormSpec::MeanStd { mean, std, color } => Normalize {
            color: if color.eq_ignore_ascii_case("bgr") {
                ColorOrder::Bgr
            } else {
                ColorOrder::Rgb
            },
            mean: *mean,
            std: *std,
        },
    }
}

impl Preset {
    fn from_file(f: File, source: Option<&str>) -> Preset {
        let (sname, src) = source
            .and_then(|s| f.sources.get_key_value(s))
            .or_else(|| f.sources.iter().next())
            .expect("every preset has a source");
        Preset {
            name: f.name.clone(),
            display: f.display.clone(),
            size: (f.input_size[0], f.input_size[1]),
            source: sname.clone(),
            normalize: normalize(&src.preprocess),
            resize: resize(src.resize.as_ref().unwrap_or(&f.resize)),
            interpolation: src
                .interpolation
                .as_deref()
                .and_then(Interpolation::parse)
                .or_else(|| Interpolation::parse(&f.interpolation))
                .unwrap_or(Interpolation::Bilinear),
            sources: f.sources.clone(),
            figures: f.figures,
            signature: f.signature,
            unfreeze: f.unfreeze,
        }
    }
}

fn files() -> Vec<File> {
    FILES
        .iter()
        .map(|s| {
            serde_json::from_str(s)
                .expect("models/presets/*.json are valid (a unit test reads them)")
        })
        .collect()
}

/// All presets (default source each).
pub fn all() -> Vec<Preset> {
    files()
        .into_iter()
        .map(|f| Preset::from_file(f, None))
        .collect()
}

fn norm(s: &str) -> String {
    s.to_ascii_lowercase().replace(['-', '_'], "")
}

/// Finds a preset by name (case-insensitive, `-`/`_` ignored), optionally for a named source.
pub fn by_name_source(name: &str, source: Option<&str>) -> Option<Preset> {
    files()
        .into_iter()
        .find(|f| norm(&f.name) == norm(name) || norm(&f.display) == norm(name))
        .map(|f| Preset::from_file(f, source))
}

/// Finds a preset by name with its default source.
pub fn by_name(name: &str) -> Option<Preset> {
    by_name_source(name, None)
}

/// The preset named by `metadata["preset"]` (with `metadata["source"]`), else the one whose
/// signature matches the graph's op counts.
pub fn detect(
    metadata: &BTreeMap<String, String>,
    ops: &BTreeMap<String, usize>,
) -> Option<Preset> {
    let source = metadata.get("source").map(|s| s.as_str());
    if let Some(p) = metadata
        .get("preset")
        .and_then(|n| by_name_source(n, source))
    {
        return Some(p);
    }
    files()
        .into_iter()
        .find(|f| {
            !f.signature.is_empty()
                && f.signature
                    .iter()
                    .all(|(op, n)| ops.get(op).copied().unwrap_or(0) == *n)
        })
        .map(|f| Preset::from_file(f, source))
}

/// The `headstart models` table.
pub fn table() -> String {
    let mut s = format!(
        "{:<20} {:>7} {:>9} {:>6} {:>6} {:>8} {:>6}  {:<12} {:<40} {}\n",
        "model",
        "input",
        "size MB",
        "top-1",
        "top-5",
        "params M",
        "depth",
        "source",
        "preprocess / resize / conv base",
        "fine-tune from"
    );
    for f in files() {
        for (sname, src) in &f.sources {
            let p = Preset::from_file(f.clone(), Some(sname));
            let fig = &f.figures;
            let o = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            let pre = match &src.preprocess {
                NormSpec::Mode(m) => m.clone(),
                NormSpec::MeanStd { mean, std, .. } => format!("mean {} std {}", mean[0], std[0]),
            };
            let conv = format!(
                "{pre} / {} / {} {:?}",
                p.resize,
                src.conv_base_output.as_deref().unwrap_or("?"),
                src.output_shape
            );
            s += &format!(
                "{:<20} {:>7} {:>9} {:>6} {:>6} {:>8} {:>6}  {:<12} {:<40} {}\n",
                f.display,
                format!("{}x{}", f.input_size[1], f.input_size[0]),
                fig.size_mb,
                o(fig.top1),
                o(fig.top5),
                fig.parameters_m,
                fig.depth.map_or("-".into(), |d| d.to_string()),
                format!("{sname} {}", src.layout),
                conv,
                src.fine_tune_from.as_deref().unwrap_or("-")
            );
        }
    }
    s + "figures: keras.io/api/applications (quoted); EfficientNet-Lite0: the EfficientNet-Lite README of tensorflow/tpu (top-1), parameters counted by headstart inspect\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_file_parses_and_names_are_unique() {
        let all = all();
        assert_eq!(all.len(), FILES.len());
        let mut names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
        let vgg = by_name("VGG16").unwrap();
        assert_eq!(
            (vgg.source.as_str(), vgg.normalize),
            ("keras", Mode::Caffe.normalize())
        );
        let tv = by_name_source("vgg16", Some("torchvision")).unwrap();
        assert_eq!(tv.normalize, Mode::Torch.normalize());
        assert!(matches!(tv.resize, ResizeMode::Crop { .. }));
        assert_eq!(by_name("inception-v3").unwrap().size, (299, 299));
        assert!(table().lines().count() > FILES.len());
    }
}
