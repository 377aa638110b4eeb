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
//!
//! Files: the settings and the run in order here; `inputs` (the split tensor, the cached frozen
//! outputs, the fingerprint), `batches` (tensors, forward pass, loss, a step), `phase1` (a new
//! head), `phase2` (top and head together, checkpoints), `write_back` (weights into the model,
//! export, parity); the candle graph in [`graph`] (with `translate`, ONNX nodes to ops) and [`ops`], the head in [`head`], the checkpoint
//! file in [`checkpoint`].

mod batches;
pub mod checkpoint;
pub mod graph;
pub mod head;
mod inputs;
pub mod ops;
mod phase1;
mod phase2;
#[cfg(test)]
mod tests;
mod translate;
mod write_back;

use batches::*;
use inputs::*;
use phase1::*;
use phase2::*;
use write_back::*;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::events::{Event as Report, Reporter};
use crate::head::fit::{History, OptimizerKind, OptimizerSpec, TrainConfig};
use crate::head::net::Pool;
use crate::head::train_head::table_header;
use crate::infer::extract::ExtractConfig;

pub use checkpoint::Checkpoint;
pub use graph::TopGraph;

pub use head::CandleHead;
pub use inputs::split_tensor;

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

impl FinetuneConfig {
    /// Checks the settings that need no file (before a model named is fetched).
    pub fn validate(&self) -> Result<()> {
        check(self)
    }
}

/// Checks the settings that need no file.
fn check(cfg: &FinetuneConfig) -> Result<()> {
    if cfg.epochs == 0 {
        return Err(Error::invalid("epochs", "must be at least 1, got 0"));
    }
    if cfg.batch_size == 0 {
        return Err(Error::invalid("batch_size", "must be at least 1, got 0"));
    }
    for (what, lr) in [
        ("lr", cfg.optimizer.lr),
        ("head_lr", cfg.head_train.optimizer.lr),
    ] {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::invalid(what, format!("must be positive, got {lr}")));
        }
    }
    if cfg.head.is_none() && cfg.head_train.epochs == 0 {
        return Err(Error::invalid(
            "freeze_epochs",
            "must be at least 1 without a head (phase 1 trains the new head)",
        ));
    }
    crate::head::validation::check_val_split(cfg.val_split)?;
    if (cfg.restore_best || cfg.patience.is_some()) && cfg.val_split == 0.0 {
        return Err(Error::invalid(
            "val_split",
            "must be above 0: restore-best and patience watch the validation loss",
        ));
    }
    if cfg.out.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return Err(Error::invalid(
            "out",
            format!(
                "{}: the fine-tuned model is an .onnx file",
                cfg.out.display()
            ),
        ));
    }
    Ok(())
}

/// Every file a fine-tune writes, checked before any work: none is an input (the model, its
/// external data, the photos, a given head), each is of the kind it replaces, and no two are the
/// same file.
fn check_outputs(cfg: &FinetuneConfig) -> Result<()> {
    use crate::util::output::{Output, Replace};
    let model = crate::onnx::replace_model;
    let outs: Vec<(PathBuf, Replace)> = vec![
        (cfg.out.clone(), model()),
        (sibling(&cfg.out, ".base.onnx"), model()),
        (
            sibling(&cfg.out, ".head.h5"),
            crate::head::file::replace_head(),
        ),
        (cfg.cache.clone(), crate::cache::replace_cache()),
        (
            sibling(&cfg.out, ".ckpt.h5"),
            checkpoint::replace_checkpoint(),
        ),
        (sibling(&cfg.out, ".phase1.history.csv"), History::replace()),
        (sibling(&cfg.out, ".phase2.history.csv"), History::replace()),
    ];
    let model_data = crate::onnx::external_data_files(&cfg.model);
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    for (path, rule) in &outs {
        let resolved = crate::util::paths::resolve(path);
        if let Some((_, first)) = seen.iter().find(|(r, _)| *r == resolved) {
            return Err(Error::output(
                path,
                format!(
                    "is also the output {}; give the outputs different names",
                    first.display()
                ),
            ));
        }
        seen.push((resolved, path));
        let mut out = Output::new(path)
            .input(&cfg.model)
            .inputs(&model_data)
            .inputs(&cfg.head)
            .replace(*rule);
        if !crate::data::remote::is_url_path(&cfg.data) {
            out = out.input(&cfg.data);
        }
        out.check()?;
    }
    Ok(())
}

/// Runs the whole fine-tune as configured: check, translate the top, cache the frozen part's outputs,
/// get a head (given, or phase 1), train top and head (phase 2, checkpointed every epoch), write the
/// model back and check it in ONNX Runtime. Tables and progress go to `rep`.
pub fn finetune(cfg: &FinetuneConfig, rep: &dyn Reporter) -> Result<FinetuneSummary> {
    let t0 = Instant::now();
    check(cfg)?;
    check_outputs(cfg)?;
    let say = |s: String| rep.report(Report::Line(&s));
    let proto = crate::onnx::load(&cfg.model)?;
    let split = split_tensor(&proto, &cfg.model, &cfg.split)?;
    // Translate before any extraction, so an unsupported op fails at once.
    let mut top = TopGraph::from_model(&proto, &split, DType::F32)
        .map_err(|e| Error::model(&cfg.model, e))?;
    let model_sha = crate::onnx::model_sha256(&cfg.model)?;
    let given = given_head(cfg, &model_sha, rep)?;
    // A transformer's tokens are pooled after the top, as extract pools the whole model's output:
    // as a given head's features were pooled, else as the model's metadata says.
    let request = given
        .as_ref()
        .map_or(cfg.extract.tokens, |h| h.base.tokens.request());
    top.tokens = crate::cache::tokens::Tokens::resolve(
        request,
        &crate::onnx::metadata(&proto),
        &top.output,
        &crate::onnx::edit::output_dims(&proto),
        &cfg.model,
    )?;
    say(format!(
        "finetune: {} split at '{split}': {} nodes, {} trainable values in {} tensors",
        cfg.model.display(),
        top.describe().len(),
        top.param_count(),
        top.params().len()
    ));
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
    let (base_path, head_path) = written_together(cfg, || {
        write_back(cfg, &proto, &top, &chead, start, top_shape, &inp, &history)
    })?;
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
    if checkpoint::is_checkpoint(&ckpt_path) {
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
