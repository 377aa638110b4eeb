//! `quantize`: static int8 quantisation of a base model, calibrated on the user's own images
//! through the model's own preprocessing. The ranges of the activations that feed and leave each
//! convolution and matrix product are measured by running a copy of the model that also outputs
//! them; the graph is then rewritten in the QDQ format ([`crate::onnx::qdq`]), which ONNX Runtime
//! runs with its int8 kernels. The file records how it was made in `metadata_props` and keeps the
//! source's preprocessing metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::preprocess::{decode_for, Preprocess, Preprocessor};
use crate::data::scan::image_files_checked;
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::runtime::RuntimeConfig;
use crate::onnx::qdq::{self, QParams};
use crate::util::hash::sha256_file;

/// How an activation's range is taken from the calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The given lower and upper percentiles of a sample of the values (outliers clipped).
    Percentile(f64),
}

impl Calibration {
    pub fn name(&self) -> String {
        match self {
            Calibration::MinMax => "minmax".into(),
            Calibration::Percentile(p) => format!("percentile {p}"),
        }
    }
}

/// Everything `quantize` needs.
#[derive(Debug, Clone)]
pub struct QuantizeConfig {
    pub model: PathBuf,
    /// Folder of calibration images (searched recursively).
    pub calibrate: PathBuf,
    /// At most this many calibration images, spread evenly over the sorted list.
    pub images: usize,
    pub method: Calibration,
    pub out: PathBuf,
    /// Nodes (by name) kept in float.
    pub keep_float: Vec<String>,
    pub overrides: PreprocessOverrides,
    pub runtime: RuntimeConfig,
    pub batch: usize,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    pub out: PathBuf,
    pub quantized_nodes: usize,
    pub kept_float: usize,
    pub images: usize,
    /// Cosine between the float and the int8 model's outputs on the calibration images: mean, min.
    pub cosine: (f64, f64),
    pub seconds: f64,
}

/// Values kept per tensor for percentiles (a strided sample).
const SAMPLE: usize = 200_000;

#[derive(Default)]
struct Stats {
    lo: f32,
    hi: f32,
    sample: Vec<f32>,
    seen: usize,
}

impl Stats {
    fn add(&mut self, v: &[f32], keep_sample: bool) {
        if self.seen == 0 {
            (self.lo, self.hi) = (f32::INFINITY, f32::NEG_INFINITY);
        }
        for &x in v {
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
        if keep_sample {
            let step = (v.len() / 4096).max(1);
            self.sample.extend(v.iter().step_by(step));
            if self.sample.len() > SAMPLE {
                let half: Vec<f32> = self.sample.iter().step_by(2).copied().collect();
                self.sample = half;
            }
        }
        self.seen += v.len();
    }

    fn range(&mut self, method: Calibration) -> (f32, f32) {
        match method {
            Calibration::MinMax => (self.lo, self.hi),
            Calibration::Percentile(p) => {
                self.sample.sort_by(f32::total_cmp);
                let n = self.sample.len();
                if n == 0 {
                    return (self.lo, self.hi);
                }
                let at = |q: f64| self.sample[((q / 100.0) * (n - 1) as f64).round() as usize];
                (at(100.0 - p), at(p))
            }
        }
    }
}

/// Calibration images: the sorted list, thinned evenly to at most `n`.
pub fn calibration_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let (files, _) = image_files_checked(dir)?;
    if files.is_empty() {
        return Err(Error::dataset(dir, "no images to calibrate with"));
    }
    let n = n.min(files.len());
    Ok((0..n).map(|i| files[i * files.len() / n].clone()).collect())
}

/// Quantises `cfg.model` into `cfg.out`.
pub fn quantize(cfg: &QuantizeConfig, rep: &dyn Reporter) -> Result<QuantizeSummary> {
    let t0 = Instant::now();
    if cfg.batch == 0 || cfg.images == 0 {
        return Err(Error::Config(
            "--batch and --images must be at least 1".into(),
        ));
    }
    if let Calibration::Percentile(p) = cfg.method {
        if !(50.0..=100.0).contains(&p) {
            return Err(Error::Config(format!(
                "--percentile {p}: must be in [50, 100]"
            )));
        }
    }
    let proto = crate::onnx::load(&cfg.model)?;
    let targets = qdq::targets(&proto, &cfg.keep_float);
    if targets.is_empty() {
        return Err(Error::model(
            &cfg.model,
            "no Conv, Gemm or MatMul with float weights to quantise",
        ));
    }
    let (measured, tied) = qdq::activations(&proto, &targets);
    let files = calibration_files(&cfg.calibrate, cfg.images)?;
    rep.report(Report::Detail(&format!(
        "quantize: {} nodes to int8, {} activations to calibrate on {} images ({})",
        targets.len(),
        measured.len(),
        files.len(),
        cfg.method.name()
    )));

    let calib_path = sibling(&cfg.out, "calibration.onnx");
    crate::onnx::save_edited(
        &qdq::with_outputs(&proto, &measured),
        &cfg.model,
        &calib_path,
    )?;
    let stats = run_calibration(cfg, &calib_path, &files, &measured, rep);
    let _ = std::fs::remove_file(&calib_path);
    let mut stats = stats?;
    let params: BTreeMap<String, QParams> = measured
        .iter()
        .map(|t| {
            let (lo, hi) = stats.get_mut(t).map_or((0.0, 0.0), |s| s.range(cfg.method));
            (t.clone(), QParams::from_range(lo, hi))
        })
        .collect();
    let mut q =
        qdq::rewrite(&proto, &targets, &params, &tied).map_err(|e| Error::model(&cfg.model, e))?;
    crate::onnx::edit::set_metadata(
        &mut q,
        &[
            ("headstart_precision", "int8".into()),
            (
                "quantization",
                "static QDQ: int8 per-channel symmetric weights, uint8 activations".into(),
            ),
            ("quant_method", cfg.method.name()),
            ("quant_images", files.len().to_string()),
            (crate::onnx::QUANT_SOURCE_SHA256, sha256_file(&cfg.model)?),
            ("quant_kept_float", cfg.keep_float.join(",")),
        ],
    );
    crate::onnx::save_edited(&q, &cfg.model, &cfg.out)?;
    let cosine = compare(cfg, &files)?;
    Ok(QuantizeSummary {
        out: cfg.out.clone(),
        quantized_nodes: targets.len(),
        kept_float: cfg.keep_float.len(),
        images: files.len(),
        cosine,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `<out without .onnx>.<suffix>`, beside `out`.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.with_extension("").into_os_string();
    p.push(".");
    p.push(suffix);
    PathBuf::from(p)
}

/// Decodes and preprocesses `files` in batches, calling `f` with each batch.
fn batches(
    pre: &Preprocess,
    files: &[PathBuf],
    batch: usize,
    mut f: impl FnMut(&[f32], usize) -> Result<()>,
) -> Result<()> {
    let mut pp = Preprocessor::new(*pre);
    for chunk in files.chunks(batch) {
        let mut data = vec![0f32; chunk.len() * pre.len()];
        for (file, out) in chunk.iter().zip(data.chunks_exact_mut(pre.len())) {
            let d = decode_for(file, pre)?;
            pp.apply_decoded(&d, out)?;
        }
        f(&data, chunk.len())?;
    }
    Ok(())
}

fn run_calibration(
    cfg: &QuantizeConfig,
    calib: &Path,
    files: &[PathBuf],
    measured: &[String],
    rep: &dyn Reporter,
) -> Result<BTreeMap<String, Stats>> {
    let mut model = BaseModel::open(calib, &cfg.runtime, None)?;
    let pre = resolve_preprocess(&model.info, &cfg.overrides)?.preprocess;
    let keep_sample = matches!(cfg.method, Calibration::Percentile(_));
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    rep.report(Report::Start {
        task: "calibrate",
        total: files.len() as u64,
        done: 0,
    });
    batches(&pre, files, cfg.batch, |data, n| {
        model.run_outputs(&pre, data, n, measured, &mut |name, v| {
            stats
                .entry(name.to_string())
                .or_default()
                .add(v, keep_sample)
        })?;
        rep.report(Report::Advance(n as u64));
        Ok(())
    })?;
    rep.report(Report::Finish);
    Ok(stats)
}

/// Cosine between the float and the quantised model's first output, per image (at most 64).
fn compare(cfg: &QuantizeConfig, files: &[PathBuf]) -> Result<(f64, f64)> {
    let mut float = BaseModel::open(&cfg.model, &cfg.runtime, None)?;
    let mut int8 = BaseModel::open(&cfg.out, &cfg.runtime, None)?;
    let pre = resolve_preprocess(&float.info, &cfg.overrides)?.preprocess;
    let (mut sum, mut min, mut n) = (0f64, f64::INFINITY, 0usize);
    let few = &files[..files.len().min(64)];
    batches(&pre, few, cfg.batch, |data, k| {
        let (a, _) = float.run(&pre, data, k)?;
        let (b, _) = int8.run(&pre, data, k)?;
        let w = a.len() / k;
        for (x, y) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
            let c = cosine(x, y);
            sum += c;
            min = min.min(c);
            n += 1;
        }
        Ok(())
    })?;
    Ok((sum / n.max(1) as f64, min))
}

/// Cosine similarity (1 when either vector is all zeros and so is the other).
pub fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
    let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
    if nx > 0.0 && ny > 0.0 {
        dot / (nx * ny)
    } else if nx == ny {
        1.0
    } else {
        0.0
    }
}
