//! The trained weights written back into the model's initializers, exported with the head as one
//! ONNX file, and the written file run in ONNX Runtime and compared with the candle forward pass.

use std::path::PathBuf;

use crate::cache::SplitData;
use crate::cache::FLIP_SPLIT;
use crate::error::{Error, Result};
use crate::head::file::{Head, HeadKind};
use crate::head::fit::History;
use crate::infer::model::BaseModel;
use crate::onnx::proto::ModelProto;

use super::*;

/// Writes the base with the trained top, the head file and both as one ONNX file; returns the base's
/// and the head's paths. The caller keeps the three as they were ([`written_together`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_back(
    cfg: &FinetuneConfig,
    proto: &ModelProto,
    top: &TopGraph,
    chead: &CandleHead,
    start: StartHead,
    top_shape: Vec<usize>,
    inp: &Inputs,
    history: &History,
) -> Result<(PathBuf, PathBuf)> {
    let base_path = sibling(&cfg.out, ".base.onnx");
    let head_path = sibling(&cfg.out, ".head.h5");
    let mut tuned = proto.clone();
    top.write_back(&mut tuned)
        .map_err(|e| Error::model(&cfg.model, e))?;
    crate::onnx::save_edited(&tuned, &cfg.model, &base_path)?;
    let mut network = start.network;
    chead.write_back(&mut network).map_err(cerr)?;
    let mut base_meta = inp.meta.clone();
    base_meta.model_file = base_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    base_meta.model_sha256 = crate::onnx::model_sha256(&base_path)?;
    base_meta.feature_shape = top_shape.clone();
    base_meta.output_name = top.output.clone();
    base_meta.tokens = top.tokens;
    base_meta.splits.retain(|s| s != FLIP_SPLIT);
    let training = serde_json::json!({
        "finetune": {
            "model": cfg.model.display().to_string(),
            "split_tensor": top.input,
            "optimizer": cfg.optimizer.describe(),
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "augment_flip": inp.flipped,
        }
    });
    Head {
        kind: HeadKind::Mlp,
        network,
        pool: start.pool,
        classes: inp.meta.classes.clone(),
        feature_shape: top_shape,
        base: base_meta,
        spec: start.spec,
        training: training.to_string(),
        history_csv: history.csv(),
        thresholds: None,
    }
    .save(&head_path)?;
    crate::onnx::export::export(&crate::onnx::export::ExportConfig {
        model: base_path.clone(),
        head: head_path.clone(),
        out: cfg.out.clone(),
        with_preprocessing: false,
        tta_flip: false,
    })?;
    Ok((base_path, head_path))
}

/// Runs `write` (of [`write_back`]) with the base, the head and the model kept as they were, and
/// put back when a write fails: a failed last write used to leave a new base and head beside the
/// old model, which then disagreed.
pub(super) fn written_together<T>(
    cfg: &FinetuneConfig,
    write: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let (base, head) = (
        sibling(&cfg.out, ".base.onnx"),
        sibling(&cfg.out, ".head.h5"),
    );
    let restore = crate::util::output::Restore::keep(&[&base, &head, &cfg.out]);
    match write() {
        Ok(v) => {
            restore.done();
            Ok(v)
        }
        Err(e) => Err(restore.undo(e)),
    }
}

/// Runs up to 8 images of `data` through the written model in ONNX Runtime and through the cached
/// inputs + candle, and returns the largest probability difference.
pub(super) fn parity(
    cfg: &FinetuneConfig,
    meta: &crate::cache::CacheMeta,
    data: &SplitData,
    top: &TopGraph,
    head: &CandleHead,
    row: usize,
    shape: &[usize],
) -> Result<(Option<f32>, usize)> {
    let root = PathBuf::from(&meta.data_root);
    let idx: Vec<usize> = (0..data.len().min(8)).collect();
    if idx.is_empty() {
        return Ok((None, 0));
    }
    let paths: Vec<PathBuf> = idx
        .iter()
        .map(|&i| root.join(crate::util::paths::from_text(&data.paths[i])))
        .collect();
    let pre = meta.preprocess().map_err(|e| Error::cache(&cfg.cache, e))?;
    let mut model = BaseModel::open(&cfg.out, &cfg.extract.runtime, cfg.extract.layout)?;
    let pipeline = crate::infer::pipeline::Pipeline {
        pre: &pre,
        input: crate::infer::pipeline::InputKind::F32,
        batch: idx.len(),
        decode_threads: 1,
        paths: &paths,
        flip: &[],
        augment: &[],
        prefetch: None,
    };
    let pending: Vec<usize> = (0..paths.len()).collect();
    let mut ort_probs = vec![Vec::new(); paths.len()];
    pipeline.run(&mut model, &pending, &mut |ev| {
        if let crate::infer::pipeline::Event::Batch(b) = ev {
            for (i, row) in b.rows() {
                ort_probs[i] = row.to_vec();
            }
        }
        Ok(())
    })?;
    let x = batch_tensor(data, row, shape, &idx)?;
    let z = to_array(&logits(top, head, &x, None)?)?;
    let probs = crate::head::file::probabilities_from_logits(&z);
    let mut worst = 0f32;
    let mut checked = 0;
    for (i, o) in ort_probs.iter().enumerate() {
        if o.is_empty() {
            continue;
        }
        checked += 1;
        for (a, b) in o.iter().zip(probs.row(i)) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(((checked > 0).then_some(worst), checked))
}
