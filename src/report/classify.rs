//! `classify`: ImageNet-style top-k with class names for a model that still has its classifier (the
//! seed's ResNet50 example), through the same decode/inference pipeline as `extract`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::infer::pipeline::{Event, InputKind, Pipeline};
use crate::infer::runtime::RuntimeConfig;
use crate::onnx::export::CLASSES_KEY;
use crate::report::score::collect_inputs;

/// The 1000 ImageNet-1k class names in the usual output order, one per line (`models/imagenet_classes.txt`,
/// built into the binary).
pub const IMAGENET_CLASSES: &str = include_str!("../../models/imagenet_classes.txt");

#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    pub model: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// One class name per line, in output order; `None`: the ImageNet-1k names built in
    /// ([`IMAGENET_CLASSES`]).
    pub classes: Option<PathBuf>,
    pub top: usize,
    pub batch: usize,
    /// Decoder threads (0: one per core).
    pub decode_threads: usize,
    pub runtime: RuntimeConfig,
    pub overrides: PreprocessOverrides,
}

/// One image's result: `(class index, name, probability)` best first, or the error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Classified {
    pub path: String,
    pub top: Vec<(usize, String, f32)>,
    pub error: Option<String>,
}

/// Softmax of logits; rows that are already probabilities (in [0, 1], summing to 1) are kept.
fn probabilities(row: &[f32]) -> Vec<f32> {
    let sum: f32 = row.iter().sum();
    if row.iter().all(|&v| (0.0..=1.0).contains(&v)) && (sum - 1.0).abs() < 1e-3 {
        return row.to_vec();
    }
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Classifies every image; `on_result` sees each in the order of the inputs (files of a folder
/// sorted), as soon as the images before it are done.
pub fn classify(
    cfg: &ClassifyConfig,
    rep: &dyn Reporter,
    on_result: &mut dyn FnMut(Classified),
) -> Result<()> {
    if cfg.batch == 0 || cfg.top == 0 {
        let what = if cfg.batch == 0 { "batch" } else { "top" };
        return Err(Error::invalid(what, "must be at least 1, got 0"));
    }
    let (text, from) = match &cfg.classes {
        Some(p) => (
            crate::util::paths::check_regular(p)
                .and_then(|_| std::fs::read_to_string(p).map_err(|e| Error::io(p, e)))?,
            p.display().to_string(),
        ),
        None => (
            IMAGENET_CLASSES.to_string(),
            "the built-in ImageNet list".into(),
        ),
    };
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let mut model = BaseModel::open(&cfg.model, &cfg.runtime, None)?;
    model.info.float_input("to classify with")?;
    if let Some(why) = &model.fallback {
        rep.report(Report::Notice(why));
    }
    let pre = resolve_preprocess(&model.info, &cfg.overrides)?.preprocess;
    let files = collect_inputs(&cfg.inputs, rep)?;
    let shown: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let pipeline = Pipeline {
        pre: &pre,
        input: InputKind::F32,
        batch: cfg.batch,
        decode_threads: cfg.decode_threads,
        paths: &files,
        flip: &[],
        augment: &[],
        prefetch: None,
    };
    let pending: Vec<usize> = (0..files.len()).collect();
    let own_classes = model.info.metadata.contains_key(CLASSES_KEY);
    // Decoders finish out of order: results wait here until those before them are out.
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0;
    let mut emit = |i: usize, c: Classified| {
        waiting.insert(i, c);
        while let Some(c) = waiting.remove(&next) {
            on_result(c);
            next += 1;
        }
    };
    pipeline.run(&mut model, &pending, &mut |event| {
        match event {
            Event::Batch(b) => {
                let (k, shape) = (b.width(), b.shape);
                if k != names.len() {
                    let hint = if own_classes {
                        "; the model names its own classes (a headstart export): score it with \
                         `score --model`"
                    } else {
                        "; give the model's class names, one per line, with --classes FILE"
                    };
                    return Err(Error::model(
                        &cfg.model,
                        format!(
                            "output per image {shape:?} has {k} values but {from} lists {} class names{hint}",
                            names.len()
                        ),
                    ));
                }
                for (i, row) in b.rows() {
                    let p = probabilities(row);
                    let mut order: Vec<usize> = (0..k).collect();
                    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                    emit(i, Classified {
                        path: shown[i].clone(),
                        top: order
                            .iter()
                            .take(cfg.top)
                            .map(|&j| (j, names[j].clone(), p[j]))
                            .collect(),
                        error: None,
                    });
                }
            }
            Event::Failed { index, reason } => emit(
                index,
                Classified {
                    path: shown[index].clone(),
                    top: vec![],
                    error: Some(reason),
                },
            ),
        }
        Ok(())
    })?;
    Ok(())
}
