//! What fine-tuning trains on: the split tensor, the frozen part's outputs cached by `extract`
//! (train, test and mirrored train rows), the head given with `--head`, and the run's fingerprint.

use std::path::Path;

use ndarray::Array2;

use crate::cache::FLIP_SPLIT;
use crate::cache::{CacheMeta, FeatureCache, SplitData};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::file::Head;
use crate::head::validation::validation_rows;
use crate::infer::extract;
use crate::onnx::proto::ModelProto;
use crate::util::hash::sha256_file;

use super::*;

/// Resolves the split tensor: the first input of the first node to train.
pub fn split_tensor(model: &ModelProto, path: &Path, split: &SplitPoint) -> Result<String> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::model(path, "no graph"))?;
    let candidates: Vec<String> = match split {
        SplitPoint::FromLayer(n) => vec![n.clone()],
        SplitPoint::Block(b) => {
            let preset = crate::data::presets::detect(
                &crate::onnx::metadata(model),
                &crate::onnx::op_counts(model),
            )
            .ok_or_else(|| {
                Error::model(
                    path,
                    format!("--unfreeze {b}: the model matches no preset with named blocks; use --from-layer NODE (headstart inspect --layers lists them)"),
                )
            })?;
            preset.unfreeze.get(b).cloned().ok_or_else(|| {
                let known: Vec<&String> = preset.unfreeze.keys().collect();
                Error::model(
                    path,
                    format!(
                        "--unfreeze {b}: preset {} names the blocks {known:?}; use one of them or --from-layer NODE",
                        preset.name
                    ),
                )
            })?
        }
    };
    let find = |name: &str| {
        let segment = |n: &str| n.split(['/', ':']).any(|part| part == name);
        graph
            .node
            .iter()
            .find(|n| n.name == name)
            .or_else(|| graph.node.iter().find(|n| segment(&n.name)))
            .or_else(|| {
                graph
                    .node
                    .iter()
                    .find(|n| n.output.iter().any(|o| o == name))
            })
    };
    let node = candidates.iter().find_map(|c| find(c)).ok_or_else(|| {
        Error::model(
            path,
            format!(
                "no node named '{}' (headstart inspect --layers lists the nodes)",
                candidates.join("' or '")
            ),
        )
    })?;
    node.input
        .first()
        .filter(|i| !i.is_empty())
        .cloned()
        .ok_or_else(|| Error::model(path, format!("node '{}' has no input", node.name)))
}

/// The `--head` file, checked against the model it must have been trained on; a head refit on its
/// validation rows is warned of.
pub(super) fn given_head(
    cfg: &FinetuneConfig,
    model_sha: &str,
    rep: &dyn Reporter,
) -> Result<Option<Head>> {
    let Some(p) = &cfg.head else {
        return Ok(None);
    };
    let h = Head::load(p)?;
    if h.multi_label() {
        return Err(Error::cache(
            p,
            "a multi-label head; finetune trains single-label heads on class folders",
        ));
    }
    if h.base.model_sha256 != model_sha {
        return Err(Error::Config(format!(
            "base models differ: head {} was trained on {} (sha256 {}), --model {} has sha256 {model_sha}",
            p.display(),
            h.base.model_file,
            h.base.model_sha256,
            cfg.model.display()
        )));
    }
    if h.trained_on_validation() {
        rep.report(Report::Warning(&format!(
            "{}: this head was refit on train + validation rows (train-head's auto recipe), so \
             phase 2's validation numbers are on rows it has seen; a head trained with \
             --recipe seed keeps them held out",
            p.display()
        )));
    }
    Ok(Some(h))
}

/// The cached outputs of the frozen part, arranged for training.
pub(super) struct Inputs {
    pub(super) meta: CacheMeta,
    /// Per-row shape and length of the cached tensors.
    pub(super) shape: Vec<usize>,
    pub(super) row: usize,
    /// `train`, then the mirrored copies of `train` when the cache has them.
    pub(super) all: SplitData,
    /// The `val` split when the validation rows come from it.
    pub(super) val: Option<SplitData>,
    pub(super) test: Option<SplitData>,
    /// Validation rows: into `val` when it is set, else into `all`.
    pub(super) val_idx: Vec<usize>,
    /// The training rows plus the mirrored copies of those rows (never of validation rows).
    pub(super) fit_idx: Vec<usize>,
    pub(super) flipped: bool,
}

impl Inputs {
    /// The rows validation reads.
    pub(super) fn val_data(&self) -> &SplitData {
        self.val.as_ref().unwrap_or(&self.all)
    }
}

/// Extracts (or finds cached) the frozen part's outputs and reads them into [`Inputs`].
pub(super) fn inputs(cfg: &FinetuneConfig, split: &str, rep: &dyn Reporter) -> Result<Inputs> {
    let mut ex = cfg.extract.clone();
    ex.model = cfg.model.clone();
    ex.data = cfg.data.clone();
    ex.out = cfg.cache.clone();
    ex.layer = Some(split.to_string());
    // The split tensor is cached as it is; the tokens are pooled after the top.
    ex.tokens = crate::cache::tokens::TokenRequest {
        pool: Some(crate::cache::tokens::TokenPool::None),
        prefix: None,
    };
    let ex_summary = extract::extract(&ex, rep)?;
    rep.report(Report::Line(&format!("inputs: {}", ex_summary.line())));
    let cache = FeatureCache::open(&cfg.cache)?;
    let meta = cache.meta.clone();
    let classes = meta.classes.len();
    if classes < 2 {
        return Err(Error::cache(
            &cfg.cache,
            format!("needs at least 2 classes, has {classes}"),
        ));
    }
    let mut all = cache.read_split("train")?;
    let n_train = all.len();
    let v = validation_rows(&cache, &all.labels, cfg.val_split, cfg.seed)?;
    let has = |s: &str| meta.splits.iter().any(|x| x == s);
    let test = if has("test") {
        Some(cache.read_split("test")?)
    } else {
        None
    };
    let mut fit_idx = v.train.clone();
    let flipped = has(FLIP_SPLIT);
    if flipped {
        let f = cache.read_split(FLIP_SPLIT)?;
        let pos: std::collections::HashMap<&str, usize> = f
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        for &i in &v.train {
            if let Some(&j) = pos.get(all.paths[i].as_str()) {
                fit_idx.push(n_train + j);
            }
        }
        all.features.extend_from_slice(&f.features);
        all.labels.extend_from_slice(&f.labels);
        all.paths.extend(f.paths.iter().cloned());
    }
    let shape = meta.feature_shape.clone();
    rep.report(Report::Line(&format!(
        "data: train {} rows{}, validation {} rows, test {} rows; inputs {shape:?}",
        v.train.len(),
        if flipped {
            format!(" + {} mirrored", fit_idx.len() - v.train.len())
        } else {
            String::new()
        },
        v.val.len(),
        test.as_ref().map_or(0, |t| t.len())
    )));
    Ok(Inputs {
        row: shape.iter().product(),
        shape,
        meta,
        all,
        val: v.split,
        test,
        val_idx: v.val,
        fit_idx,
        flipped,
    })
}

/// Identifies a phase 2 run: a checkpoint continues only a run with the same fingerprint.
pub(super) fn run_fingerprint(
    cfg: &FinetuneConfig,
    model_sha: &str,
    split: &str,
    inp: &Inputs,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let head_sha = match &cfg.head {
        Some(p) => sha256_file(p)?,
        None => String::new(),
    };
    let mut h = Sha256::new();
    h.update(format!(
        "{}|{model_sha}|{split}|{}|{head_sha}|{:?}|{}|{}|{}|{}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        inp.meta.fingerprint,
        cfg.head_train,
        cfg.pool.name(),
        cfg.optimizer.describe(),
        cfg.batch_size,
        cfg.seed,
        cfg.val_split,
        inp.flipped,
        cfg.restore_best,
    ));
    Ok(format!("{:x}", h.finalize()))
}

/// The frozen top's output rows for `idx`, pooled as the head pools them.
pub(super) fn top_features(
    top: &TopGraph,
    head_pool: &CandleHead,
    data: &SplitData,
    row: usize,
    shape: &[usize],
    idx: &[usize],
) -> Result<Array2<f32>> {
    let mut out: Vec<f32> = Vec::new();
    let mut dim = 0;
    for chunk in idx.chunks(64) {
        let x = batch_tensor(data, row, shape, chunk)?;
        let y = top.forward(&x).map_err(Error::Runtime)?;
        let p = head_pool.pool(&y).map_err(cerr)?;
        dim = p.dim(1).map_err(cerr)?;
        out.extend(
            p.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?,
        );
    }
    Array2::from_shape_vec((idx.len(), dim), out).map_err(|e| Error::Runtime(e.to_string()))
}
