//! Seeded random feature caches (no model involved), for benchmarks and tests of `train-head`.

use crate::cache::{CacheMeta, Dtype, SplitData};
use crate::error::{Error, Result};
use crate::util::rng::Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Per-image feature shape, e.g. `[512, 7, 7]`.
    pub shape: Vec<usize>,
    /// (split name, images).
    pub splits: Vec<(String, usize)>,
    pub classes: usize,
    /// How far apart the classes are (0: pure noise).
    pub separation: f32,
    pub seed: u64,
}

/// ReLU-like random features: class `c` adds `separation` to every `classes`-th feature starting at
/// `c`, so heads can learn it. Labels cycle through the classes.
pub fn synthetic(spec: &SyntheticSpec) -> Result<(CacheMeta, Vec<SplitData>)> {
    use crate::util::limits::check;
    // Bounded before allocating: the cache is built in memory (at most 2^32 values, 16 GiB).
    check("classes", spec.classes, 2, 100_000)?;
    let row = spec
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    let rows = spec
        .splits
        .iter()
        .try_fold(0usize, |a, (_, n)| a.checked_add(*n))
        .unwrap_or(usize::MAX);
    check("shape", row.saturating_mul(rows.max(1)), 1, 1 << 32).map_err(|_| {
        crate::Error::invalid(
            "shape",
            format!(
                "{:?} x {rows} rows is {} values; a synthetic cache holds at most 2^32",
                spec.shape,
                row.saturating_mul(rows)
            ),
        )
    })?;
    if spec.classes < 2 {
        return Err(Error::invalid(
            "classes",
            format!("must be at least 2, got {}", spec.classes),
        ));
    }
    if spec.shape.is_empty() || spec.shape.contains(&0) {
        return Err(Error::invalid(
            "shape",
            format!("{:?}: expected positive dimensions", spec.shape),
        ));
    }
    let row: usize = spec.shape.iter().product();
    let mut rng = Rng(spec.seed);
    let classes: Vec<String> = (0..spec.classes).map(|c| format!("class{c}")).collect();
    let mut splits = Vec::new();
    for (name, n) in &spec.splits {
        let labels: Vec<u32> = (0..*n).map(|i| (i % spec.classes) as u32).collect();
        let mut features = Vec::with_capacity(n * row);
        for &l in &labels {
            for j in 0..row {
                let shift = if j % spec.classes == l as usize {
                    spec.separation
                } else {
                    0.0
                };
                features.push((rng.normal() + shift).max(0.0));
            }
        }
        let paths = (0..*n)
            .map(|i| format!("{name}/{}/{i}.jpg", classes[labels[i] as usize]))
            .collect();
        splits.push(SplitData {
            name: name.clone(),
            features,
            labels,
            paths,
            skipped: vec![],
            tags: vec![],
        });
    }
    let meta = CacheMeta {
        classes,
        model_file: "synthetic".into(),
        model_sha256: format!("synthetic-seed-{}", spec.seed),
        source_sha256: format!("synthetic-seed-{}", spec.seed),
        input_size: (224, 224),
        layout: "NCHW".into(),
        preprocess: "synthetic".into(),
        color_order: "RGB".into(),
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: "squash".into(),
        interpolation: "bilinear".into(),
        decode: "exact".into(),
        precision: "fp32".into(),
        output_name: "features".into(),
        feature_shape: spec.shape.clone(),
        dtype: Dtype::F32,
        headstart_version: env!("CARGO_PKG_VERSION").into(),
        fingerprint: String::new(),
        data_root: String::new(),
        splits: splits.iter().map(|s| s.name.clone()).collect(),
        multi_label: false,
        tokens: super::Tokens::NONE,
    };
    Ok((meta, splits))
}
