//! Seeded random feature caches (no model involved), for benchmarks and tests of `train-head`:
//! in memory ([`synthetic`]) or written block by block, at any size the disk holds
//! ([`write_synthetic`]). Both draw the same values for the same spec.

use crate::cache::h5::{chunk_rows, write_lists, FeatureWriter};
use crate::cache::{write_meta, CacheMeta, Dtype, SplitData};
use crate::error::{Error, Result};
use crate::util::output::Output;
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
    /// How the features are stored (the values are drawn as float32 either way).
    pub dtype: Dtype,
}

/// Values a cache held in memory may have (16 GiB of float32).
const MEMORY_VALUES: usize = 1 << 32;
/// Values a cache written block by block may have (512 GiB of float16).
const STREAMED_VALUES: usize = 1 << 38;

/// The feature values: class `c` adds `separation` to every `classes`-th feature starting at `c`.
struct Draw {
    rng: Rng,
    row: usize,
    classes: usize,
    separation: f32,
}

impl Draw {
    /// Appends one ReLU-like row per label to `out`.
    fn rows(&mut self, labels: &[u32], out: &mut Vec<f32>) {
        for &l in labels {
            for j in 0..self.row {
                let shift = if j % self.classes == l as usize {
                    self.separation
                } else {
                    0.0
                };
                out.push((self.rng.normal() + shift).max(0.0));
            }
        }
    }
}

impl SyntheticSpec {
    /// Checks the spec (at most `max_values` values in all); the values' drawer.
    fn check(&self, max_values: usize) -> Result<Draw> {
        use crate::util::limits::check;
        check("classes", self.classes, 2, 100_000)?;
        if self.shape.is_empty() || self.shape.contains(&0) {
            return Err(Error::invalid(
                "shape",
                format!("{:?}: expected positive dimensions", self.shape),
            ));
        }
        let row = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        let rows = self
            .splits
            .iter()
            .try_fold(0usize, |a, (_, n)| a.checked_add(*n))
            .unwrap_or(usize::MAX);
        let values = row.saturating_mul(rows.max(1));
        if values > max_values {
            return Err(Error::invalid(
                "shape",
                format!(
                    "{:?} x {rows} rows is {values} values; a synthetic cache holds at most {max_values}",
                    self.shape
                ),
            ));
        }
        Ok(Draw {
            rng: Rng(self.seed),
            row,
            classes: self.classes,
            separation: self.separation,
        })
    }

    fn class_names(&self) -> Vec<String> {
        (0..self.classes).map(|c| format!("class{c}")).collect()
    }

    /// Split `name`'s `n` labels (cycling through the classes) and paths.
    fn lists(&self, name: &str, n: usize, classes: &[String]) -> (Vec<u32>, Vec<String>) {
        let labels: Vec<u32> = (0..n).map(|i| (i % self.classes) as u32).collect();
        let paths = (0..n)
            .map(|i| format!("{name}/{}/{i}.jpg", classes[labels[i] as usize]))
            .collect();
        (labels, paths)
    }

    fn meta(&self, classes: Vec<String>) -> CacheMeta {
        CacheMeta {
            classes,
            model_file: "synthetic".into(),
            model_sha256: format!("synthetic-seed-{}", self.seed),
            source_sha256: format!("synthetic-seed-{}", self.seed),
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
            feature_shape: self.shape.clone(),
            dtype: self.dtype,
            headstart_version: env!("CARGO_PKG_VERSION").into(),
            fingerprint: String::new(),
            data_root: String::new(),
            splits: self.splits.iter().map(|(s, _)| s.clone()).collect(),
            multi_label: false,
            tokens: super::Tokens::NONE,
        }
    }
}

/// The cache of `spec`, in memory (at most 2^32 values). Labels cycle through the classes.
pub fn synthetic(spec: &SyntheticSpec) -> Result<(CacheMeta, Vec<SplitData>)> {
    let mut draw = spec.check(MEMORY_VALUES)?;
    let classes = spec.class_names();
    let mut splits = Vec::new();
    for (name, n) in &spec.splits {
        let (labels, paths) = spec.lists(name, *n, &classes);
        let mut features = Vec::with_capacity(n * draw.row);
        draw.rows(&labels, &mut features);
        splits.push(SplitData {
            name: name.clone(),
            features,
            labels,
            paths,
            skipped: vec![],
            tags: vec![],
        });
    }
    Ok((spec.meta(classes), splits))
}

/// Writes the cache of `spec` through `out`, one chunk of rows at a time (memory: one chunk and
/// the row lists; at most 2^38 values). The values equal [`synthetic`]'s.
pub fn write_synthetic(out: &Output, spec: &SyntheticSpec) -> Result<CacheMeta> {
    let mut draw = spec.check(STREAMED_VALUES)?;
    let classes = spec.class_names();
    let meta = spec.meta(classes.clone());
    crate::cache::save_via_tmp(out, |tmp| {
        let file = crate::cache::create_h5(tmp)?;
        for (name, n) in &spec.splits {
            let g = file.create_group(name)?;
            let (labels, paths) = spec.lists(name, *n, &classes);
            let w = FeatureWriter::create(&g, spec.dtype, *n, &spec.shape)?;
            let block = chunk_rows(spec.dtype, &spec.shape, *n);
            let mut values = Vec::with_capacity(block * draw.row);
            for start in (0..*n).step_by(block) {
                values.clear();
                draw.rows(&labels[start..(start + block).min(*n)], &mut values);
                w.write(start, &values)?;
            }
            let l: Vec<i32> = labels.iter().map(|&v| v as i32).collect();
            write_lists(&g, &l, &paths, &[], &[])?;
        }
        write_meta(&file, &meta)?;
        file.close()
    })?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::FeatureCache;

    /// Written in several chunks, the cache holds the in-memory cache's values (float16: rounded
    /// once), labels and paths, and a damaged chunk is named by its rows.
    #[test]
    fn written_block_by_block_equals_in_memory() {
        let d = tempfile::tempdir().unwrap();
        for dtype in [Dtype::F32, Dtype::F16] {
            let spec = SyntheticSpec {
                shape: vec![700],
                splits: vec![("train".into(), 2000), ("val".into(), 7)],
                classes: 3,
                separation: 1.0,
                seed: 9,
                dtype,
            };
            assert!(
                chunk_rows(dtype, &spec.shape, 2000) < 1000,
                "several chunks"
            );
            let path = d.path().join(format!("{}.h5", dtype.name()));
            write_synthetic(&Output::new(&path), &spec).unwrap();
            let (_, want) = synthetic(&spec).unwrap();
            let c = FeatureCache::open(&path).unwrap();
            assert_eq!(c.meta.dtype, dtype);
            for w in &want {
                let got = c.read_split(&w.name).unwrap();
                assert_eq!((&got.labels, &got.paths), (&w.labels, &w.paths));
                let round = |v: f32| match dtype {
                    Dtype::F32 => v,
                    Dtype::F16 => f32::from(half::f16::from_f32(v)),
                };
                assert!(got
                    .features
                    .iter()
                    .zip(&w.features)
                    .all(|(&a, &b)| a == round(b)));
                assert_eq!(got.features.len(), w.features.len());
                // Blocks of one, two and many chunks, and rows that start inside a chunk, give
                // the same rows in order.
                for bytes in [1, 2 * 700 * 4 * 400, 1 << 30] {
                    let mut joined = Vec::new();
                    c.for_each_block(&w.name, w.len(), bytes, |start, rows| {
                        assert_eq!(start * 700, joined.len());
                        joined.extend(rows);
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(joined, got.features);
                }
                if w.len() > 933 {
                    let mid = c.read_rows(&w.name, 333, 600).unwrap();
                    assert_eq!(mid, got.features[333 * 700..933 * 700]);
                }
            }
        }
    }
}
