//! `headstart finetune`: unfreeze the top of the base and train it with the head, with candle.
//!
//! The graph is split at one tensor. The frozen lower part runs once in ONNX Runtime and its outputs
//! are cached in HDF5 by [`crate::infer::extract`] (resumable, a cache hit when nothing changed; with
//! `--augment flip` mirrored train images too). The upper part is translated into candle operations
//! ([`graph`]) whose initializers become trainable variables. Without `--head`, phase 1 trains a new
//! head on the frozen top's outputs ([`crate::head::fit::fit`]); phase 2 trains top and head
//! together at a low learning rate. The trained weights are written back into the model's
//! initializers and exported with the head as one ONNX file ([`crate::onnx::export`]), which is then run
//! in ONNX Runtime and compared with the candle forward pass.

pub mod checkpoint;
pub mod graph;
pub mod head;
pub mod ops;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use ndarray::Array2;

use crate::cache::{CacheMeta, FeatureCache, SplitData};
use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::file::{Head, HeadKind};
use crate::head::fit::{
    fit, output_units, predicted, EpochRecord, History, OptimizerKind, OptimizerSpec, TrainConfig,
    TrainData,
};
use crate::head::net::{spec_string, Network, Pool};
use crate::head::train_head::{table_header, table_row, validation_rows};
use crate::infer::extract::{self, ExtractConfig, FLIP_SPLIT};
use crate::infer::model::BaseModel;
use crate::onnx::proto::ModelProto;
use crate::util::hash::sha256_file;
use crate::util::rng::Rng;

pub use checkpoint::Checkpoint;
pub use graph::TopGraph;

pub use head::CandleHead;

/// Where the trainable part starts.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitPoint {
    /// A block name of the model's preset (`vgg16`: `block5`; `efficientnet_lite0`: `stage7`).
    Block(String),
    /// The first node to train: its name, a part of its name, or the tensor it computes.
    FromLayer(String),
}

/// Everything `finetune` needs.
#[derive(Debug, Clone)]
pub struct FinetuneConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub split: SplitPoint,
    /// A head trained on this model's features (`train-head`); without it phase 1 trains one.
    pub head: Option<PathBuf>,
    /// Phase 1: the head spec, its optimizer and `--freeze-epochs` as its epochs.
    pub head_train: TrainConfig,
    pub pool: Pool,
    /// Phase 2 epochs, batch size and optimizer (RMSprop 1e-5 by default, as the Keras recipe).
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerSpec,
    pub seed: u64,
    pub val_split: f64,
    /// Phase 2: keep the weights of the epoch with the lowest validation loss.
    pub restore_best: bool,
    /// Phase 2: stop after this many epochs without a lower validation loss.
    pub patience: Option<usize>,
    /// The cache of the lower part's outputs (default `<out>.inputs.h5`).
    pub cache: PathBuf,
    /// Extraction settings of the lower part (model, data and out are set by finetune).
    pub extract: ExtractConfig,
}

impl FinetuneConfig {
    /// Command-line defaults: the seed head, 5 head epochs then 10 fine-tune epochs of 20 with
    /// RMSprop 1e-5.
    pub fn new(
        model: impl Into<PathBuf>,
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        split: SplitPoint,
    ) -> Self {
        let (model, data, out) = (model.into(), data.into(), out.into());
        let head_train = TrainConfig {
            epochs: 5,
            ..TrainConfig::default()
        };
        FinetuneConfig {
            cache: sibling(&out, ".inputs.h5"),
            extract: ExtractConfig::new(&model, &data, sibling(&out, ".inputs.h5")),
            model,
            data,
            out,
            split,
            head: None,
            head_train,
            pool: Pool::Flatten,
            epochs: 10,
            batch_size: 20,
            optimizer: OptimizerSpec {
                kind: OptimizerKind::RmsProp,
                lr: 1e-5,
                weight_decay: 0.0,
            },
            seed: 42,
            val_split: 0.2,
            restore_best: false,
            patience: None,
        }
    }
}

/// `dir/name.onnx` + suffix -> `dir/name<suffix>`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut p = out.with_extension("").into_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

/// What a run did and measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FinetuneSummary {
    pub out: PathBuf,
    pub base: PathBuf,
    pub head: PathBuf,
    pub split_tensor: String,
    pub trained_nodes: usize,
    pub trained_params: usize,
    pub phase1: Option<History>,
    pub phase2: History,
    /// Test accuracy of the head alone (frozen top) and after fine-tuning, when there is a test split.
    pub test_head_only: Option<(f64, f64)>,
    pub test_finetuned: Option<(f64, f64)>,
    /// Max |candle - ONNX Runtime on the written file| over the checked images' probabilities.
    pub parity_max_abs: Option<f32>,
    pub parity_images: usize,
    pub seconds_per_epoch: f64,
    pub seconds: f64,
}

fn cerr(e: candle_core::Error) -> Error {
    Error::Candle(e)
}

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

/// The rows of `data` at `idx` as one `[n, shape..]` tensor.
fn batch_tensor(data: &SplitData, row: usize, shape: &[usize], idx: &[usize]) -> Result<Tensor> {
    let mut v = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        v.extend_from_slice(&data.features[i * row..(i + 1) * row]);
    }
    let mut dims = vec![idx.len()];
    dims.extend_from_slice(shape);
    Tensor::from_vec(v, dims, &Device::Cpu).map_err(cerr)
}

/// The frozen top's output rows for `idx`, pooled as the head pools them.
fn top_features(
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

/// Mean loss and accuracy of top + head on rows `idx` (inference mode).
fn evaluate(
    top: &TopGraph,
    head: &CandleHead,
    data: &SplitData,
    row: usize,
    shape: &[usize],
    idx: &[usize],
) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0f64, 0usize);
    for chunk in idx.chunks(64) {
        let x = batch_tensor(data, row, shape, chunk)?;
        let y: Vec<u32> = chunk.iter().map(|&i| data.labels[i]).collect();
        let z = logits(top, head, &x, None)?;
        let l = head::cross_entropy(&z, &y)
            .and_then(|l| l.to_scalar::<f32>())
            .map_err(cerr)?;
        loss += l as f64 * chunk.len() as f64;
        correct += count_correct(&z, &y)?;
    }
    let n = idx.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// Logits of top + head on `x`; `dropout` is the generator of a training pass.
fn logits(
    top: &TopGraph,
    head: &CandleHead,
    x: &Tensor,
    dropout: Option<&mut Rng>,
) -> Result<Tensor> {
    head.forward(&top.forward(x).map_err(Error::Runtime)?, dropout)
        .map_err(cerr)
}

/// A `[n, k]` tensor as an ndarray matrix.
fn to_array(z: &Tensor) -> Result<Array2<f32>> {
    let (n, k) = z.dims2().map_err(cerr)?;
    let flat: Vec<f32> = z.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    Array2::from_shape_vec((n, k), flat).map_err(|e| Error::Runtime(e.to_string()))
}

fn count_correct(z: &Tensor, y: &[u32]) -> Result<usize> {
    let z = to_array(z)?;
    Ok(predicted(&z).iter().zip(y).filter(|(p, t)| p == t).count())
}

/// One optimizer step over `vars` from the gradients of `loss`.
fn step(opt: &mut dyn crate::head::optim::Optimizer, vars: &[Var], loss: &Tensor) -> Result<()> {
    let grads = loss.backward().map_err(cerr)?;
    let mut ps: Vec<Vec<f32>> = Vec::with_capacity(vars.len());
    let mut gs: Vec<Vec<f32>> = Vec::with_capacity(vars.len());
    for v in vars {
        ps.push(v.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?);
        gs.push(match grads.get(v) {
            Some(g) => g.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?,
            None => vec![0.0; v.elem_count()],
        });
    }
    {
        let mut pm: Vec<&mut [f32]> = ps.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gr: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
        opt.step(&mut pm, &gr);
    }
    for (v, p) in vars.iter().zip(ps) {
        v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).map_err(cerr)?)
            .map_err(cerr)?;
    }
    Ok(())
}

/// Checks the settings that need no file.
fn check(cfg: &FinetuneConfig) -> Result<()> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::Config(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&cfg.val_split) {
        return Err(Error::Config(format!(
            "--val-split must be in [0, 1), got {}",
            cfg.val_split
        )));
    }
    if (cfg.restore_best || cfg.patience.is_some()) && cfg.val_split == 0.0 {
        return Err(Error::Config(
            "--restore-best and --patience watch the validation loss: --val-split must be above 0"
                .into(),
        ));
    }
    if cfg.out.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return Err(Error::Config(format!(
            "--out {}: the fine-tuned model is an .onnx file",
            cfg.out.display()
        )));
    }
    Ok(())
}

/// The `--head` file, checked against the model it must have been trained on.
fn given_head(cfg: &FinetuneConfig, model_sha: &str) -> Result<Option<Head>> {
    let Some(p) = &cfg.head else {
        return Ok(None);
    };
    let h = Head::load(p)?;
    if h.base.model_sha256 != model_sha {
        return Err(Error::Config(format!(
            "base models differ: head {} was trained on {} (sha256 {}), --model {} has sha256 {model_sha}",
            p.display(),
            h.base.model_file,
            h.base.model_sha256,
            cfg.model.display()
        )));
    }
    Ok(Some(h))
}

/// The cached outputs of the frozen part, arranged for training.
struct Inputs {
    meta: CacheMeta,
    /// Per-row shape and length of the cached tensors.
    shape: Vec<usize>,
    row: usize,
    /// `train`, then the mirrored copies of `train` when the cache has them.
    all: SplitData,
    /// The `val` split when the validation rows come from it.
    val: Option<SplitData>,
    test: Option<SplitData>,
    /// Validation rows: into `val` when it is set, else into `all`.
    val_idx: Vec<usize>,
    /// The training rows plus the mirrored copies of those rows (never of validation rows).
    fit_idx: Vec<usize>,
    flipped: bool,
}

impl Inputs {
    /// The rows validation reads.
    fn val_data(&self) -> &SplitData {
        self.val.as_ref().unwrap_or(&self.all)
    }
}

/// Extracts (or finds cached) the frozen part's outputs and reads them into [`Inputs`].
fn inputs(cfg: &FinetuneConfig, split: &str, rep: &dyn Reporter) -> Result<Inputs> {
    let mut ex = cfg.extract.clone();
    ex.model = cfg.model.clone();
    ex.data = cfg.data.clone();
    ex.out = cfg.cache.clone();
    ex.layer = Some(split.to_string());
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
fn run_fingerprint(
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

/// The checkpoint of an interrupted phase 2 with the same settings, if there is one.
fn load_checkpoint(path: &Path, fingerprint: &str, rep: &dyn Reporter) -> Option<Checkpoint> {
    if !path.exists() {
        return None;
    }
    match Checkpoint::load(path) {
        Ok(c) if c.fingerprint == fingerprint => Some(c),
        Ok(_) => {
            rep.report(Report::Line(&format!(
                "{} is from a run with other settings: starting over",
                path.display()
            )));
            None
        }
        Err(e) => {
            rep.report(Report::Line(&format!("{e}: starting over")));
            None
        }
    }
}

/// The head phase 2 starts from.
struct StartHead {
    network: Network,
    pool: Pool,
    spec: String,
    /// Phase 1's history, when it ran now.
    phase1: Option<History>,
}

/// The head: the given one, or (phase 1) a new one trained on the frozen top's outputs. When phase 2
/// resumes, phase 1 is not run again: its weights are in the checkpoint.
fn start_head(
    cfg: &FinetuneConfig,
    top: &TopGraph,
    inp: &Inputs,
    given: Option<Head>,
    resuming: bool,
    rep: &dyn Reporter,
) -> Result<(StartHead, Vec<usize>)> {
    let probe = top
        .forward(&batch_tensor(&inp.all, inp.row, &inp.shape, &[0])?)
        .map_err(|e| Error::model(&cfg.model, e))?;
    let top_shape: Vec<usize> = probe.dims()[1..].to_vec();
    let classes = inp.meta.classes.len();
    let start = match given {
        Some(h) => {
            if h.classes != inp.meta.classes {
                return Err(Error::Config(format!(
                    "class lists differ: head has [{}], {} has [{}]",
                    h.classes.join(", "),
                    cfg.data.display(),
                    inp.meta.classes.join(", ")
                )));
            }
            if h.feature_shape != top_shape {
                return Err(Error::Config(format!(
                    "feature shapes differ: head has {:?}, the model's output is {top_shape:?}",
                    h.feature_shape
                )));
            }
            StartHead {
                network: h.network,
                pool: h.pool,
                spec: h.spec,
                phase1: None,
            }
        }
        None if resuming => {
            let dim = cfg.pool.output_dim(&top_shape, &inp.meta.layout)?;
            StartHead {
                network: Network::new(
                    dim,
                    &cfg.head_train.spec,
                    output_units(classes),
                    cfg.head_train.seed,
                ),
                pool: cfg.pool,
                spec: spec_string(&cfg.head_train.spec),
                phase1: None,
            }
        }
        None => phase1(cfg, top, inp, rep)?,
    };
    if start.network.output_dim() != Some(output_units(classes)) {
        return Err(Error::Config(format!(
            "the head has {:?} outputs, {classes} classes need {}",
            start.network.output_dim(),
            output_units(classes)
        )));
    }
    Ok((start, top_shape))
}

/// Phase 1: a new head trained on the frozen top's pooled outputs.
fn phase1(
    cfg: &FinetuneConfig,
    top: &TopGraph,
    inp: &Inputs,
    rep: &dyn Reporter,
) -> Result<StartHead> {
    let say = |s: String| rep.report(Report::Line(&s));
    let pooler = CandleHead::new(
        &Network { layers: vec![] },
        cfg.pool,
        &inp.meta.layout,
        DType::F32,
    )
    .map_err(cerr)?;
    let every: Vec<usize> = (0..inp.all.len()).collect();
    let x = top_features(top, &pooler, &inp.all, inp.row, &inp.shape, &every)?;
    let vx = match &inp.val {
        Some(v) => Some(top_features(
            top,
            &pooler,
            v,
            inp.row,
            &inp.shape,
            &inp.val_idx,
        )?),
        None => None,
    };
    let y = inp.all.labels.clone();
    let (vxr, vyr, vidx): (&Array2<f32>, &[u32], Vec<usize>) = match (&vx, &inp.val) {
        (Some(vx), Some(v)) => (vx, &v.labels, (0..v.len()).collect()),
        _ => (&x, &y, inp.val_idx.clone()),
    };
    say(format!(
        "phase 1: head {} -> {} on the frozen top, {} epochs of {}, {}",
        cfg.pool.name(),
        spec_string(&cfg.head_train.spec),
        cfg.head_train.epochs,
        cfg.head_train.batch_size,
        cfg.head_train.optimizer.describe()
    ));
    say(table_header());
    let data = TrainData {
        x: &x,
        y: &y,
        train: inp.fit_idx.clone(),
        val: (!vidx.is_empty()).then(|| (vxr, vyr, vidx.clone())),
        classes: inp.meta.classes.len(),
    };
    let (network, h) = fit(&cfg.head_train, &data, |r| say(table_row(r)))?;
    let hist = sibling(&cfg.out, ".phase1.history.csv");
    History::output(&hist).write_bytes(h.csv().as_bytes())?;
    Ok(StartHead {
        network,
        pool: cfg.pool,
        spec: spec_string(&cfg.head_train.spec),
        phase1: Some(h),
    })
}

/// The state phase 2 trains: the top's and the head's variables, the optimizer and the generators.
struct Phase2<'a> {
    cfg: &'a FinetuneConfig,
    top: &'a TopGraph,
    head: &'a CandleHead,
    inp: &'a Inputs,
    vars: Vec<Var>,
    opt: Box<dyn crate::head::optim::Optimizer>,
    shuffle: Rng,
    dropout: Rng,
    history: History,
    /// The first epoch to run (after a resumed checkpoint's last).
    first: usize,
}

impl<'a> Phase2<'a> {
    fn new(
        cfg: &'a FinetuneConfig,
        top: &'a TopGraph,
        head: &'a CandleHead,
        inp: &'a Inputs,
    ) -> Self {
        let mut vars: Vec<Var> = top.params().iter().map(|(_, v)| v.clone()).collect();
        vars.extend(head.vars());
        Phase2 {
            cfg,
            top,
            head,
            inp,
            vars,
            opt: cfg.optimizer.build(),
            shuffle: Rng(cfg.seed.wrapping_add(0x0f1e_2d3c)),
            dropout: Rng(cfg.seed.wrapping_add(0x4b5a_6978)),
            history: History::default(),
            first: 1,
        }
    }

    /// Continues from a checkpoint: weights, optimizer state, generators and history.
    fn resume(&mut self, c: Checkpoint, path: &Path, rep: &dyn Reporter) -> Result<()> {
        let sizes_ok = c.vars.len() == self.vars.len()
            && c.vars
                .iter()
                .zip(&self.vars)
                .all(|(a, v)| a.len() == v.elem_count());
        if !sizes_ok {
            return Err(Error::cache(
                path,
                "holds other tensors than this model's top and head: delete it to start over",
            ));
        }
        for (v, a) in self.vars.iter().zip(c.vars) {
            v.set(&Tensor::from_vec(a, v.shape(), &Device::Cpu).map_err(cerr)?)
                .map_err(cerr)?;
        }
        self.opt.restore(c.opt_steps, c.opt_slots);
        self.shuffle.0 = c.rngs[0];
        self.dropout.0 = c.rngs[1];
        self.history = c.history;
        self.first = c.epoch + 1;
        rep.report(Report::Line(&format!(
            "resuming phase 2 after epoch {} from {}",
            c.epoch,
            path.display()
        )));
        for r in &self.history.epochs {
            rep.report(Report::Line(&table_row(r)));
        }
        Ok(())
    }

    /// One pass over the training rows; returns mean loss and accuracy.
    fn train_epoch(&mut self, epoch: usize, rep: &dyn Reporter) -> Result<(f64, f64)> {
        let inp = self.inp;
        let mut order = inp.fit_idx.clone();
        self.shuffle.shuffle(&mut order);
        let task = format!("epoch {epoch}");
        rep.report(Report::Start {
            task: &task,
            total: order.len() as u64,
            done: 0,
        });
        let (mut total, mut correct) = (0f64, 0usize);
        for chunk in order.chunks(self.cfg.batch_size) {
            let x = batch_tensor(&inp.all, inp.row, &inp.shape, chunk)?;
            let y: Vec<u32> = chunk.iter().map(|&i| inp.all.labels[i]).collect();
            let z = logits(self.top, self.head, &x, Some(&mut self.dropout))?;
            let loss = head::cross_entropy(&z, &y).map_err(cerr)?;
            let lv = loss.to_scalar::<f32>().map_err(cerr)? as f64;
            if !lv.is_finite() {
                return Err(Error::Runtime(format!(
                    "phase 2 epoch {epoch}: the loss is {lv}; lower --lr (now {})",
                    self.opt.learning_rate()
                )));
            }
            total += lv * chunk.len() as f64;
            correct += count_correct(&z, &y)?;
            step(self.opt.as_mut(), &self.vars, &loss)?;
            rep.report(Report::Advance(chunk.len() as u64));
        }
        rep.report(Report::Finish);
        let n = order.len().max(1) as f64;
        Ok((total / n, correct as f64 / n))
    }

    /// Saves the state after `epoch` (written to a temporary file, then renamed).
    fn checkpoint(&self, epoch: usize, fingerprint: &str, path: &Path) -> Result<()> {
        let (opt_steps, opt_slots) = self.opt.snapshot();
        Checkpoint {
            fingerprint: fingerprint.to_string(),
            epoch,
            vars: self
                .vars
                .iter()
                .map(|v| v.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                .collect::<candle_core::Result<_>>()
                .map_err(cerr)?,
            opt_steps,
            opt_slots,
            rngs: [self.shuffle.0, self.dropout.0],
            history: self.history.clone(),
        }
        .save(path)
    }

    /// Runs the remaining epochs with checkpoints, early stopping and `--restore-best`; returns the
    /// seconds per epoch run.
    fn run(&mut self, fingerprint: &str, ckpt: &Path, rep: &dyn Reporter) -> Result<f64> {
        let cfg = self.cfg;
        let hist_path = sibling(&cfg.out, ".phase2.history.csv");
        let t_train = Instant::now();
        let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
        for epoch in self.first..=cfg.epochs {
            let te = Instant::now();
            let (loss, accuracy) = self.train_epoch(epoch, rep)?;
            let (val_loss, val_accuracy) = if self.inp.val_idx.is_empty() {
                (None, None)
            } else {
                let inp = self.inp;
                let (l, a) = evaluate(
                    self.top,
                    self.head,
                    inp.val_data(),
                    inp.row,
                    &inp.shape,
                    &inp.val_idx,
                )?;
                (Some(l), Some(a))
            };
            let rec = EpochRecord {
                epoch,
                loss,
                accuracy,
                val_loss,
                val_accuracy,
                lr: self.opt.learning_rate(),
                seconds: te.elapsed().as_secs_f64(),
            };
            rep.report(Report::Line(&table_row(&rec)));
            let improved = val_loss.is_some_and(|l| best.as_ref().is_none_or(|(b, _, _)| l < *b));
            if improved {
                let snapshot = if cfg.restore_best {
                    self.vars
                        .iter()
                        .map(|v| v.as_tensor().copy())
                        .collect::<candle_core::Result<Vec<_>>>()
                        .map_err(cerr)?
                } else {
                    Vec::new()
                };
                best = Some((val_loss.unwrap_or(f64::INFINITY), epoch, snapshot));
            }
            self.history.epochs.push(rec);
            self.history.kept_epoch = epoch;
            History::output(&hist_path).write_bytes(self.history.csv().as_bytes())?;
            self.checkpoint(epoch, fingerprint, ckpt)?;
            rep.report(Report::Checkpoint {
                task: "finetune",
                count: epoch,
            });
            if let (Some(p), Some((_, b, _))) = (cfg.patience, &best) {
                if epoch - b >= p && epoch < cfg.epochs {
                    rep.report(Report::Line(&format!(
                        "early stop: no lower val_loss for {p} epochs (best: epoch {b})"
                    )));
                    self.history.stopped_early = true;
                    break;
                }
            }
        }
        if cfg.restore_best {
            if let Some((l, b, snapshot)) = best.take() {
                if b != self.history.epochs.len() {
                    for (v, t) in self.vars.iter().zip(&snapshot) {
                        v.set(t).map_err(cerr)?;
                    }
                    rep.report(Report::Line(&format!(
                        "restored the weights of epoch {b} (val_loss {l:.4})"
                    )));
                }
                self.history.kept_epoch = b;
            }
        }
        let run_epochs = (self.history.epochs.len() + 1)
            .saturating_sub(self.first)
            .max(1);
        Ok(t_train.elapsed().as_secs_f64() / run_epochs as f64)
    }
}

/// Writes the base with the trained top, the head file and both as one ONNX file; returns the base's
/// and the head's paths.
#[allow(clippy::too_many_arguments)]
fn write_back(
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

/// Runs the whole fine-tune as configured: check, translate the top, cache the frozen part's outputs,
/// get a head (given, or phase 1), train top and head (phase 2, checkpointed every epoch), write the
/// model back and check it in ONNX Runtime. Tables and progress go to `rep`.
pub fn finetune(cfg: &FinetuneConfig, rep: &dyn Reporter) -> Result<FinetuneSummary> {
    let t0 = Instant::now();
    check(cfg)?;
    let say = |s: String| rep.report(Report::Line(&s));
    let proto = crate::onnx::load(&cfg.model)?;
    let split = split_tensor(&proto, &cfg.model, &cfg.split)?;
    // Translate before any extraction, so an unsupported op fails at once.
    let top = TopGraph::from_model(&proto, &split, DType::F32)
        .map_err(|e| Error::model(&cfg.model, e))?;
    say(format!(
        "finetune: {} split at '{split}': {} nodes, {} trainable values in {} tensors",
        cfg.model.display(),
        top.describe().len(),
        top.param_count(),
        top.params().len()
    ));
    let model_sha = crate::onnx::model_sha256(&cfg.model)?;
    let given = given_head(cfg, &model_sha)?;
    let inp = inputs(cfg, &split, rep)?;
    let ckpt_path = sibling(&cfg.out, ".ckpt.h5");
    let fingerprint = run_fingerprint(cfg, &model_sha, &split, &inp)?;
    let resume = load_checkpoint(&ckpt_path, &fingerprint, rep);
    let (start, top_shape) = start_head(cfg, &top, &inp, given, resume.is_some(), rep)?;
    let chead =
        CandleHead::new(&start.network, start.pool, &inp.meta.layout, DType::F32).map_err(cerr)?;
    let test_idx: Vec<usize> = inp.test.as_ref().map_or(vec![], |t| (0..t.len()).collect());
    let test_score = |tag: &str| -> Result<Option<(f64, f64)>> {
        let Some(t) = inp.test.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let (l, a) = evaluate(&top, &chead, t, inp.row, &inp.shape, &test_idx)?;
        say(format!("{tag}: test loss {l:.4}, test accuracy {a:.4}"));
        Ok(Some((l, a)))
    };
    let test_head_only = match resume {
        None => test_score("head only (frozen top)")?,
        Some(_) => None,
    };

    say(format!(
        "phase 2: fine-tune {} values of the top + the head, {} epochs of {}, {}",
        top.param_count(),
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer.describe()
    ));
    say(table_header());
    let mut p2 = Phase2::new(cfg, &top, &chead, &inp);
    if let Some(c) = resume {
        p2.resume(c, &ckpt_path, rep)?;
    }
    let seconds_per_epoch = p2.run(&fingerprint, &ckpt_path, rep)?;
    let history = p2.history;
    let test_finetuned = test_score("fine-tuned")?;

    let phase1 = start.phase1.clone();
    let (base_path, head_path) =
        write_back(cfg, &proto, &top, &chead, start, top_shape, &inp, &history)?;
    // Parity: ONNX Runtime on the written file vs candle, on a few real images.
    let check = inp
        .test
        .as_ref()
        .filter(|t| !t.is_empty())
        .unwrap_or(inp.val_data());
    let (parity_max_abs, parity_images) =
        parity(cfg, &inp.meta, check, &top, &chead, inp.row, &inp.shape)?;
    if let Some(d) = parity_max_abs {
        say(format!(
            "parity: {} vs candle on {parity_images} images: max abs diff {d:.2e}",
            cfg.out.display()
        ));
    }
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path).map_err(|e| Error::io(&ckpt_path, e))?;
    }
    say(format!(
        "wrote {} (base {} + head {})",
        cfg.out.display(),
        base_path.display(),
        head_path.display()
    ));
    Ok(FinetuneSummary {
        out: cfg.out.clone(),
        base: base_path,
        head: head_path,
        split_tensor: top.input.clone(),
        trained_nodes: top.describe().len(),
        trained_params: top.param_count(),
        phase1,
        phase2: history,
        test_head_only,
        test_finetuned,
        parity_max_abs,
        parity_images,
        seconds_per_epoch,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Runs up to 8 images of `data` through the written model in ONNX Runtime and through the cached
/// inputs + candle, and returns the largest probability difference.
fn parity(
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
