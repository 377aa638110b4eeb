//! Known architectures: their input size and preprocessing, matched to a model by metadata or by the
//! shape of its graph (op counts). The full table of the Keras applications grows here.

use std::collections::BTreeMap;

use crate::preprocess::{Interpolation, Mode, Normalize, ResizeMode, DEFAULT_CROP_FRACTION};

/// Input size and preprocessing of a known architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub size: (u32, u32),
    pub normalize: Normalize,
    pub resize: ResizeMode,
    pub interpolation: Interpolation,
    /// Graph signature: (op type, count) pairs that must all match exactly.
    pub signature: &'static [(&'static str, usize)],
}

/// All presets.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "vgg16",
            size: (224, 224),
            normalize: Mode::Caffe.normalize(),
            resize: ResizeMode::Squash,
            interpolation: Interpolation::Bilinear,
            signature: &[("Conv", 13), ("MaxPool", 5)],
        },
        Preset {
            name: "vgg19",
            size: (224, 224),
            normalize: Mode::Caffe.normalize(),
            resize: ResizeMode::Squash,
            interpolation: Interpolation::Bilinear,
            signature: &[("Conv", 16), ("MaxPool", 5)],
        },
        Preset {
            name: "efficientnet_lite0",
            size: (224, 224),
            normalize: Normalize {
                color: crate::preprocess::ColorOrder::Rgb,
                mean: [127.0; 3],
                std: [128.0; 3],
            },
            resize: ResizeMode::Crop {
                fraction: DEFAULT_CROP_FRACTION,
            },
            interpolation: Interpolation::Bicubic,
            signature: &[("Conv", 49), ("Clip", 33)],
        },
    ]
}

/// Finds a preset by name (case-insensitive, `-` and `_` alike).
pub fn by_name(name: &str) -> Option<Preset> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    all().into_iter().find(|p| norm(p.name) == norm(name))
}

/// The preset whose signature matches the op counts of a graph (`metadata["preset"]` wins).
pub fn detect(
    metadata: &BTreeMap<String, String>,
    ops: &BTreeMap<String, usize>,
) -> Option<Preset> {
    if let Some(p) = metadata.get("preset").and_then(|n| by_name(n)) {
        return Some(p);
    }
    all().into_iter().find(|p| {
        p.signature
            .iter()
            .all(|(op, n)| ops.get(*op).copied().unwrap_or(0) == *n)
    })
}
