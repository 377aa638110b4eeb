//! `quantize`: static int8 quantisation of a base model, calibrated on the user's own images
//! through the model's own preprocessing. The ranges of the activations that feed and leave each
//! convolution and matrix product are measured by running a copy of the model that also outputs
//! them; the graph is then rewritten in the QDQ format ([`crate::onnx::qdq`]), which ONNX Runtime
//! runs with its int8 kernels. The file records how it was made in `metadata_props` and keeps the
//! source's preprocessing metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::decode::decode_for;
use crate::data::preprocess::{Preprocess, Preprocessor};
use crate::data::scan::image_files_checked;
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
pub use crate::infer::calibrate::Calibration;
use crate::infer::calibrate::Stats;
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::runtime::RuntimeConfig;
use crate::onnx::qdq::{self, QParams};

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
    /// Keep the most sensitive nodes in float until the float vs int8 cosine (mean over the probe
    /// images) reaches this; `None` quantises every node not named in `keep_float`.
    pub target_cosine: Option<f64>,
    pub overrides: PreprocessOverrides,
    pub runtime: RuntimeConfig,
    pub batch: usize,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    pub out: PathBuf,
    pub quantized_nodes: usize,
    /// Every node kept in float: those named, then those the search chose.
    pub kept_float: Vec<String>,
    /// The search's choices: (node, cosine with that node alone in int8), most damaging first.
    pub auto_kept: Vec<(String, f64)>,
    /// The cosine with every node in int8, when the search ran (it is below the target).
    pub all_int8_cosine: Option<f64>,
    pub images: usize,
    /// Cosine between the float and the int8 model's outputs on the calibration images (at most
    /// [`PROBE`] of them): mean, min.
    pub cosine: (f64, f64),
    pub seconds: f64,
}

/// The float vs int8 cosine `quantize` keeps nodes in float for, unless told otherwise.
pub const DEFAULT_TARGET_COSINE: f64 = 0.99;

/// Calibration images on which the float and int8 outputs are compared.
pub const PROBE: usize = 64;
/// Of those, the images used to measure each node's sensitivity alone.
const SENSITIVITY_PROBE: usize = 16;

/// Calibration images: the sorted list, thinned evenly to at most `n`.
pub fn calibration_files(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let (files, _) = image_files_checked(dir)?;
    if files.is_empty() {
        return Err(Error::dataset(dir, "no images to calibrate with"));
    }
    let n = n.min(files.len());
    Ok((0..n).map(|i| files[i * files.len() / n].clone()).collect())
}

impl QuantizeConfig {
    /// The settings' bounds, checked before any work.
    pub fn check(&self) -> Result<()> {
        crate::util::limits::check("batch", self.batch, 1, crate::util::limits::MAX_BATCH)?;
        if self.images == 0 {
            return Err(Error::invalid("images", "must be at least 1, got 0"));
        }
        if let Some(t) = self.target_cosine.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::invalid(
                "target_cosine",
                format!("{t} is not in [0, 1]"),
            ));
        }
        if let Calibration::Percentile(p) = self.method {
            if !(50.0..=100.0).contains(&p) {
                return Err(Error::invalid(
                    "percentile",
                    format!("{p} is not in [50, 100]"),
                ));
            }
        }
        Ok(())
    }
}

/// The nodes to quantise: every quantisable one but `keep_float`'s, each of which must be one (a
/// name that is no such node would keep nothing in float, silently).
fn targets(
    cfg: &QuantizeConfig,
    proto: &crate::onnx::proto::ModelProto,
) -> Result<Vec<qdq::Target>> {
    let all = qdq::targets(proto, &[]);
    if let Some(k) = cfg
        .keep_float
        .iter()
        .find(|k| !all.iter().any(|t| &t.name == *k))
    {
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).take(20).collect();
        return Err(Error::invalid(
            "keep_float",
            format!(
                "{k} is not a node this model would quantise; the nodes are: {}{}",
                names.join(", "),
                if all.len() > names.len() { ", …" } else { "" }
            ),
        ));
    }
    let targets = qdq::targets(proto, &cfg.keep_float);
    let quantised = proto
        .graph
        .as_ref()
        .is_some_and(|g| g.node.iter().any(|n| n.op_type == "DequantizeLinear"));
    let half = proto.graph.as_ref().is_some_and(|g| {
        g.initializer
            .iter()
            .any(|t| t.data_type == crate::onnx::proto::data_type::FLOAT16)
    });
    if targets.is_empty() {
        return Err(Error::model(
            &cfg.model,
            if quantised {
                "is already quantised (int8 QDQ): quantise the float model it was made from"
            } else if half {
                "holds float16 weights (convert --fp16 made it?): quantise the float32 model it was made from"
            } else {
                "no Conv, Gemm or MatMul with float weights to quantise"
            },
        ));
    }
    Ok(targets)
}

/// Quantises `cfg.model` into `cfg.out`.
pub fn quantize(cfg: &QuantizeConfig, rep: &dyn Reporter) -> Result<QuantizeSummary> {
    let t0 = Instant::now();
    // Refused before any work: the copy onto the model or inside the calibration photos.
    crate::util::output::Output::new(&cfg.out)
        .input(&cfg.model)
        .input(&cfg.calibrate)
        .replace(crate::onnx::replace_model())
        .check()?;
    cfg.check()?;
    let proto = qdq::constants_as_initializers(crate::onnx::load_inlined(&cfg.model)?);
    let u8_input = proto
        .graph
        .as_ref()
        .and_then(|g| g.input.first())
        .and_then(|i| i.r#type.as_ref())
        .and_then(|t| t.tensor_type.as_ref())
        .is_some_and(|t| t.elem_type == crate::onnx::proto::data_type::UINT8);
    if u8_input {
        return Err(Error::model(
            &cfg.model,
            "takes uint8 images (an export with the preprocessing inside): quantise the float base model",
        ));
    }
    let targets = targets(cfg, &proto)?;
    let (measured, _) = qdq::activations(&proto, &targets);
    let files = calibration_files(&cfg.calibrate, cfg.images)?;
    rep.report(Report::Detail(&format!(
        "quantize: {} nodes to int8, {} activations to calibrate on {} images ({})",
        targets.len(),
        measured.len(),
        files.len(),
        cfg.method.name()
    )));

    // The calibration copy goes to a scratch folder, never beside the output.
    let scratch = crate::util::paths::Scratch::new("quantize")?;
    let calib_path = scratch.path().join("calibration.onnx");
    crate::onnx::save_edited(
        &qdq::with_outputs(&proto, &measured),
        &cfg.model,
        &calib_path,
    )?;
    let stats = run_calibration(cfg, &calib_path, &files, &measured, rep);
    // Gone before the probe writes its copies: one model at a time in the temporary folder.
    drop(scratch);
    let mut stats = stats?;
    let params: BTreeMap<String, QParams> = measured
        .iter()
        .map(|t| {
            let (lo, hi) = stats.get_mut(t).map_or((0.0, 0.0), |s| s.range(cfg.method));
            (t.clone(), QParams::from_range(lo, hi))
        })
        .collect();
    let build = |subset: &[qdq::Target]| -> Result<crate::onnx::proto::ModelProto> {
        let (act, tied) = qdq::activations(&proto, subset);
        let p: BTreeMap<String, QParams> = act.iter().map(|t| (t.clone(), params[t])).collect();
        qdq::rewrite(&proto, subset, &p, &tied).map_err(|e| Error::model(&cfg.model, e))
    };
    let mut probe = Probe::new(cfg, &files[..files.len().min(PROBE)])?;
    let full = build(&targets)?;
    let mut cosine = probe.cosine(&full, PROBE)?;
    let (mut q, mut auto_kept, mut all_int8_cosine) = (full, Vec::new(), None);
    if let Some(target) = cfg.target_cosine.filter(|&t| cosine.0 < t) {
        rep.report(Report::Detail(&format!(
            "quantize: cosine {:.5} with every node in int8, below the target {target}: measuring each node alone",
            cosine.0
        )));
        all_int8_cosine = Some(cosine.0);
        let sens = sensitivities(&targets, &build, &mut probe, rep)?;
        let (k, m, c) = fewest_kept(&targets, &sens, target, &build, &mut probe, rep)?;
        (q, cosine) = (m, c);
        auto_kept = sens[..k]
            .iter()
            .map(|&(i, c)| (targets[i].name.clone(), c))
            .collect();
    }
    some_int8_left(cfg, targets.len() - auto_kept.len(), all_int8_cosine)?;
    let mut kept_float = cfg.keep_float.clone();
    kept_float.extend(auto_kept.iter().map(|(n, _)| n.clone()));
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
            (
                crate::onnx::QUANT_SOURCE_SHA256,
                crate::onnx::model_sha256(&cfg.model)?,
            ),
            ("quant_kept_float", kept_float.join(",")),
            (
                "quant_target_cosine",
                cfg.target_cosine.map_or("none".into(), |t| t.to_string()),
            ),
        ],
    );
    crate::onnx::save_edited(&q, &cfg.model, &cfg.out)?;
    Ok(QuantizeSummary {
        out: cfg.out.clone(),
        quantized_nodes: targets.len() - auto_kept.len(),
        kept_float,
        auto_kept,
        all_int8_cosine,
        images: files.len(),
        cosine,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Each target's cosine with it alone in int8, most damaging (lowest) first: (target index, cosine).
fn sensitivities(
    targets: &[qdq::Target],
    build: &dyn Fn(&[qdq::Target]) -> Result<crate::onnx::proto::ModelProto>,
    probe: &mut Probe,
    rep: &dyn Reporter,
) -> Result<Vec<(usize, f64)>> {
    rep.report(Report::Start {
        task: "sensitivity",
        total: targets.len() as u64,
        done: 0,
    });
    let mut sens = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let alone = build(std::slice::from_ref(t))?;
        sens.push((i, probe.cosine(&alone, SENSITIVITY_PROBE)?.0));
        rep.report(Report::Advance(1));
    }
    rep.report(Report::Finish);
    sens.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(sens)
}

/// The fewest of the most sensitive targets to keep in float for the target cosine: doubling, then
/// halving the interval. Returns (how many kept, the model, its cosine).
fn fewest_kept(
    targets: &[qdq::Target],
    sens: &[(usize, f64)],
    target: f64,
    build: &dyn Fn(&[qdq::Target]) -> Result<crate::onnx::proto::ModelProto>,
    probe: &mut Probe,
    rep: &dyn Reporter,
) -> Result<(usize, crate::onnx::proto::ModelProto, (f64, f64))> {
    let n = targets.len();
    let mut best: Option<(usize, crate::onnx::proto::ModelProto, (f64, f64))> = None;
    let k = smallest_meeting(n, |k| {
        let float: std::collections::BTreeSet<usize> = sens[..k].iter().map(|s| s.0).collect();
        let subset: Vec<qdq::Target> = (0..n)
            .filter(|i| !float.contains(i))
            .map(|i| targets[i].clone())
            .collect();
        let m = build(&subset)?;
        let c = probe.cosine(&m, PROBE)?;
        rep.report(Report::Detail(&format!(
            "quantize: {k} most sensitive nodes in float -> cosine {:.5}",
            c.0
        )));
        // Nothing quantised (k = n) is the float model: it meets any target.
        let meets = c.0 >= target || k == n;
        if meets && best.as_ref().is_none_or(|b| k < b.0) {
            best = Some((k, m, c));
        }
        Ok(meets)
    })?;
    best.filter(|b| b.0 == k).ok_or_else(|| {
        Error::Runtime(format!(
            "quantize: the search for nodes to keep in float ended at {k} without a model"
        ))
    })
}

/// The smallest `k` in `1..=n` for which `meets(k)` holds, assuming it holds from some `k` on:
/// doubling from 1, then halving the interval. `meets(n)` must hold; it is only called when no
/// smaller `k` was found.
fn smallest_meeting(n: usize, mut meets: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    let (mut lo, mut hi) = (0, n); // meets(lo) fails (k = 0 is known below); meets(hi) holds
    let mut found = false;
    let mut k = 1;
    while k < n {
        if meets(k)? {
            (hi, found) = (k, true);
            break;
        }
        lo = k;
        k *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if meets(mid)? {
            (hi, found) = (mid, true);
        } else {
            lo = mid;
        }
    }
    if !found {
        meets(hi)?;
    }
    Ok(hi)
}

/// The probe images, preprocessed once, with the float model's outputs for them.
struct Probe {
    pre: Preprocess,
    runtime: RuntimeConfig,
    /// (preprocessed batch, images in it, the float outputs).
    batches: Vec<(Vec<f32>, usize, Vec<f32>)>,
    /// Where each candidate is written to be run: a scratch folder of its own.
    path: PathBuf,
    _scratch: crate::util::paths::Scratch,
    source: PathBuf,
}

impl Probe {
    fn new(cfg: &QuantizeConfig, files: &[PathBuf]) -> Result<Probe> {
        let mut float = BaseModel::open(&cfg.model, &cfg.runtime, None)?;
        let pre = resolve_preprocess(&float.info, &cfg.overrides)?.preprocess;
        let mut out = Vec::new();
        batches(&pre, files, cfg.batch, |data, k| {
            let (a, _) = float.run(&pre, data, k)?;
            out.push((data.to_vec(), k, a));
            Ok(())
        })?;
        let scratch = crate::util::paths::Scratch::new("quantize-probe")?;
        Ok(Probe {
            pre,
            runtime: cfg.runtime.clone(),
            batches: out,
            path: scratch.path().join("probe.onnx"),
            _scratch: scratch,
            source: cfg.model.clone(),
        })
    }

    /// Mean and min cosine between the float outputs and `model`'s, on the first `limit` images.
    fn cosine(
        &mut self,
        model: &crate::onnx::proto::ModelProto,
        limit: usize,
    ) -> Result<(f64, f64)> {
        crate::onnx::save_edited(model, &self.source, &self.path)?;
        let r = self.run(limit);
        let _ = std::fs::remove_file(&self.path);
        r
    }

    fn run(&self, limit: usize) -> Result<(f64, f64)> {
        let mut m = BaseModel::open(&self.path, &self.runtime, None)?;
        let (mut sum, mut min, mut n) = (0f64, f64::INFINITY, 0usize);
        for (data, k, a) in &self.batches {
            if n >= limit {
                break;
            }
            let (b, _) = m.run(&self.pre, data, *k)?;
            let w = a.len() / k;
            for (x, y) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
                let c = cosine(x, y);
                sum += c;
                min = min.min(c);
                n += 1;
            }
        }
        Ok((sum / n.max(1) as f64, min))
    }
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
    let keep_sample = cfg.method.needs_sample();
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

/// An "int8" model of float nodes only would be the float model under another name: refused
/// when `quantized` nodes are none.
fn some_int8_left(
    cfg: &QuantizeConfig,
    quantized: usize,
    all_int8_cosine: Option<f64>,
) -> Result<()> {
    if quantized == 0 {
        let why = match all_int8_cosine {
            Some(c) => format!(
                "every node in int8 gave cosine {c:.5}, and the target {} is met only with all of them in float",
                cfg.target_cosine.unwrap_or(1.0)
            ),
            None => "every node that could be quantized is kept in float".into(),
        };
        let hint = match all_int8_cosine {
            Some(_) => "lower --target-cosine or try another --method",
            None => "name fewer --keep-float nodes",
        };
        return Err(Error::model(
            &cfg.model,
            format!("no node left to quantize: {why}; {hint}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a table of cosines for k = 0..=n, returning (k, calls made).
    fn search(cos: &[f64], target: f64) -> (usize, Vec<usize>) {
        let mut calls = Vec::new();
        let n = cos.len() - 1;
        let k = smallest_meeting(n, |k| {
            calls.push(k);
            Ok(cos[k] >= target || k == n)
        })
        .unwrap();
        (k, calls)
    }

    #[test]
    fn the_search_finds_the_fewest_nodes_to_keep() {
        // Monotone: the target is met from k = 5 on.
        let cos = [
            0.90, 0.93, 0.95, 0.97, 0.98, 0.991, 0.995, 0.996, 0.997, 0.999, 1.0,
        ];
        let (k, calls) = search(&cos, 0.99);
        assert_eq!(k, 5);
        assert_eq!(calls, vec![1, 2, 4, 8, 6, 5]);
        // Met at once.
        assert_eq!(search(&cos, 0.9), (1, vec![1]));
        // Met only with everything in float: k = n, which is evaluated once, last.
        let (k, calls) = search(&cos, 1.0);
        assert_eq!(k, 10);
        assert_eq!(calls, vec![1, 2, 4, 8, 9, 10]);
        // Not monotone (EfficientNet-Lite0: 1 kept 0.961, 2 kept 0.908, 4 kept 0.992): the answer
        // meets the target, though a smaller k that also meets it can be missed.
        let cos = [0.897, 0.961, 0.908, 0.904, 0.992, 0.993, 0.995];
        let (k, _) = search(&cos, 0.99);
        assert_eq!(k, 4);
        assert!(cos[k] >= 0.99);
    }
}
