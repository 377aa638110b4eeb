//! `headstart train-head`: train a dense head (or the logistic baseline) on a feature cache, with
//! learning-curve plots and a markdown report on request.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use headstart::error::{Error, Result};
use headstart::head::fit::{EarlyStopping, Monitor, OptimizerSpec, Schedule, TrainConfig};
use headstart::head::loss::Loss;
use headstart::head::net::{parse_spec, DEFAULT_HEAD};
use headstart::head::train_head::{
    history_path, train_head, HeadChoice, TrainHeadConfig, TrainHeadSummary,
};
use headstart::report::plot;

use crate::common::{path_with_suffix, term, OptimizerArg, PoolArg, ProgressArg};

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum LossArg {
    /// Binary (2 classes, sigmoid) or categorical (softmax) cross-entropy.
    CrossEntropy,
    Focal,
    Hinge,
    SquaredHinge,
    Mse,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum ScheduleArg {
    Constant,
    Step,
    Cosine,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum MonitorArg {
    ValLoss,
    ValAccuracy,
    Loss,
    Accuracy,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum ClassWeightArg {
    None,
    Balanced,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum RecipeArg {
    /// Standardised features; linear and MLP candidates scored on validation (on small data by
    /// k-fold, against scikit-learn's default logistic regression, kept unless clearly beaten), the
    /// best refit on train + validation; mirrored train copies used when cached.
    Auto,
    /// The Keras book's head exactly: Dense 256 relu, Dropout 0.5, RMSprop 2e-5, 30 epochs of 20.
    Seed,
}

/// The flags that describe a training run; any of them given turns `--recipe auto` into the seed
/// recipe with those flags (an explicit flag always wins).
const TRAINING_FLAGS: [&str; 25] = [
    "head",
    "epochs",
    "batch_size",
    "loss",
    "label_smoothing",
    "focal_gamma",
    "focal_alpha",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "decay",
    "weight_decay",
    "schedule",
    "step_every",
    "step_gamma",
    "min_lr",
    "patience",
    "min_delta",
    "monitor",
    "restore_best",
    "clip_norm",
    "clip_value",
    "class_weight",
    "plain_step",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The HDF5 feature cache written by `extract`, or a run folder of `extract --run` shards (merged
    /// into RUN/merged.h5 first when that is missing or not the merge of the shards as they are).
    pub features: PathBuf,
    /// auto: a head chosen for this data (default); seed: the Keras book's head exactly. Any
    /// training flag given (--head, --optimizer, --lr, --epochs, ...) wins: with auto, the seed
    /// recipe is then used with those flags.
    #[arg(long, value_enum, default_value = "auto")]
    pub recipe: RecipeArg,
    /// The flags given on the command line (filled in by `main`).
    #[arg(skip)]
    pub explicit: Vec<String>,
    /// Output head file [default: <cache name>.head.h5 beside the cache].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Per-epoch history CSV [default: <head name>.history.csv].
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Hidden layers, e.g. "dense:256:relu,dropout:0.5,dense:64:relu" (items: dense:UNITS[:ACT],
    /// dropout:RATE, batchnorm, or an activation; "none" for a linear head); or "logistic" for the
    /// linfa-logistic baseline. The output layer (1 sigmoid for 2 classes, C softmax) is added.
    #[arg(long, default_value = DEFAULT_HEAD)]
    pub head: String,
    /// How spatial features become a vector: Keras Flatten, GlobalAveragePooling2D or max pooling.
    #[arg(long, value_enum, default_value = "flatten")]
    pub pool: PoolArg,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 20)]
    pub batch_size: usize,
    /// Seed of weight init, shuffling, dropout and the validation split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of train held out for validation (stratified) when the cache has no val split.
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    #[arg(long, value_enum, default_value = "cross-entropy")]
    pub loss: LossArg,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Focal loss gamma.
    #[arg(long, default_value_t = 2.0)]
    pub focal_gamma: f32,
    /// Focal loss alpha (weight of the positive class).
    #[arg(long, default_value_t = 0.25)]
    pub focal_alpha: f32,
    /// Optimizer (the seed recipe: rmsprop at 2e-5).
    #[arg(long, value_enum, default_value = "rmsprop")]
    pub optimizer: OptimizerArg,
    /// Learning rate [default: rmsprop 2e-5 (the seed), adam/adamw 1e-3, sgd 0.01 (Keras)].
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f32,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// SGD inverse-time decay per step (Keras `decay`): lr / (1 + decay * step).
    #[arg(long, default_value_t = 0.0)]
    pub decay: f64,
    /// L2 weight decay (decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    #[arg(long, value_enum, default_value = "constant")]
    pub schedule: ScheduleArg,
    /// Step schedule: epochs between rate drops.
    #[arg(long, default_value_t = 10)]
    pub step_every: usize,
    /// Step schedule: factor per drop.
    #[arg(long, default_value_t = 0.1)]
    pub step_gamma: f64,
    /// Cosine schedule: final rate.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// Stop after this many epochs without improvement of --monitor (off when unset).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Smallest change that counts as an improvement.
    #[arg(long, default_value_t = 0.0)]
    pub min_delta: f64,
    #[arg(long, value_enum, default_value = "val-loss")]
    pub monitor: MonitorArg,
    /// Keep the weights of the best epoch by --monitor instead of the last.
    #[arg(long)]
    pub restore_best: bool,
    /// Rescale gradients to at most this global L2 norm.
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Clamp each gradient value to [-v, v].
    #[arg(long)]
    pub clip_value: Option<f32>,
    #[arg(long, value_enum, default_value = "none")]
    pub class_weight: ClassWeightArg,
    /// Logistic baseline: inverse L2 strength (sklearn's C).
    #[arg(long = "C", default_value_t = 1.0)]
    pub c: f64,
    /// Logistic baseline: solver iterations.
    #[arg(long, default_value_t = 100)]
    pub max_iter: u64,
    /// Threads of the training step (0 = all cores); the weights do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Draw the learning curves to <head name>.curves.png.
    #[arg(long)]
    pub plot: bool,
    /// Write DIR/report.md (settings, history, best epoch) with the learning curves.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Use the plain three-pass step instead of the fused first-layer step (for comparisons).
    #[arg(long)]
    pub plain_step: bool,
    /// Only the final lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl Args {
    /// Validates into a [`TrainHeadConfig`].
    pub fn to_config(&self) -> Result<TrainHeadConfig> {
        let mut cfg = TrainHeadConfig::new(crate::common::features_or_run(&self.features)?);
        if let Some(o) = &self.out {
            cfg.out = o.clone();
            cfg.history = history_path(o);
        }
        if let Some(h) = &self.history {
            cfg.history = h.clone();
        }
        cfg.pool = self.pool.into();
        cfg.val_split = self.val_split;
        cfg.seed = self.seed;
        cfg.head = if self.head.trim() == "logistic" {
            HeadChoice::Logistic {
                c: self.c,
                max_iter: self.max_iter,
            }
        } else if self.recipe == RecipeArg::Auto && self.training_flags().is_empty() {
            HeadChoice::Auto {
                threads: self.threads,
            }
        } else {
            HeadChoice::Mlp(self.train_config()?)
        };
        Ok(cfg)
    }

    /// The training flags given on the command line.
    fn training_flags(&self) -> Vec<&'static str> {
        TRAINING_FLAGS
            .into_iter()
            .filter(|f| self.explicit.iter().any(|e| e == f))
            .collect()
    }

    fn train_config(&self) -> Result<TrainConfig> {
        if self.optimizer != OptimizerArg::Sgd
            && (self.momentum != 0.0 || self.nesterov || self.decay != 0.0)
        {
            return Err(Error::Config(
                "--momentum, --nesterov and --decay apply to --optimizer sgd only".into(),
            ));
        }
        if self.label_smoothing != 0.0 && self.loss != LossArg::CrossEntropy {
            return Err(Error::Config(
                "--label-smoothing applies to --loss cross-entropy only".into(),
            ));
        }
        let kind = self
            .optimizer
            .kind(self.momentum, self.nesterov, self.decay);
        let lr = self.lr.unwrap_or_else(|| kind.default_lr());
        let loss = match self.loss {
            LossArg::CrossEntropy => Loss::CrossEntropy {
                smoothing: self.label_smoothing,
            },
            LossArg::Focal => Loss::Focal {
                gamma: self.focal_gamma,
                alpha: self.focal_alpha,
            },
            LossArg::Hinge => Loss::Hinge,
            LossArg::SquaredHinge => Loss::SquaredHinge,
            LossArg::Mse => Loss::Mse,
        };
        let schedule = match self.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step {
                every: self.step_every,
                gamma: self.step_gamma,
            },
            ScheduleArg::Cosine => Schedule::Cosine {
                min_lr: self.min_lr,
            },
        };
        Ok(TrainConfig {
            spec: parse_spec(&self.head)?,
            loss,
            optimizer: OptimizerSpec {
                kind,
                lr,
                weight_decay: self.weight_decay,
            },
            schedule,
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            monitor: match self.monitor {
                MonitorArg::ValLoss => Monitor::ValLoss,
                MonitorArg::ValAccuracy => Monitor::ValAccuracy,
                MonitorArg::Loss => Monitor::Loss,
                MonitorArg::Accuracy => Monitor::Accuracy,
            },
            early_stopping: self.patience.map(|patience| EarlyStopping {
                patience,
                min_delta: self.min_delta,
            }),
            restore_best: self.restore_best,
            clip_norm: self.clip_norm,
            clip_value: self.clip_value,
            balanced: self.class_weight == ClassWeightArg::Balanced,
            fused: !self.plain_step,
            threads: self.threads,
        })
    }
}

/// Trains, then draws the curves (`--plot`: beside the head file; `--report`: into its folder).
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    let given = a.training_flags();
    if a.recipe == RecipeArg::Auto && !given.is_empty() && !a.quiet {
        println!(
            "recipe: the seed recipe with the flags given (--{}); --recipe auto applies when no training flag is given",
            given.join(", --").replace('_', "-")
        );
    }
    let s = train_head(&cfg, &term(ProgressArg::None, a.quiet))?;
    let mut curves = Vec::new();
    if a.plot {
        curves.push(path_with_suffix(&cfg.out, "curves.png"));
    }
    if let Some(dir) = &a.report {
        std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
        curves.push(dir.join("curves.png"));
    }
    for c in &curves {
        plot::learning_curves(&s.history, c)?;
        eprintln!("wrote {}", c.display());
    }
    if let Some(dir) = &a.report {
        let path = report(&cfg, &s, dir)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `DIR/report.md`: the run, the settings, the curves and the per-epoch table.
fn report(cfg: &TrainHeadConfig, s: &TrainHeadSummary, dir: &Path) -> Result<PathBuf> {
    let head = headstart::head::file::Head::load(&cfg.out)?;
    let training: serde_json::Value = serde_json::from_str(&head.training).unwrap_or_default();
    let table = s.history.markdown();
    let run = format!(
        "- features: `{}`\n- base model: `{}` (sha256 `{}`)\n- preprocessing: {}\n- classes: {}\n- head: `{}` ({}), pool {}\n- rows: {} train, {} validation\n- kept epoch {} of {}{}\n- {:.1} s",
        cfg.features.display(),
        head.base.model_file,
        head.base.model_sha256,
        head.base.preprocess,
        head.classes.join(", "),
        head.spec,
        head.kind.name(),
        head.pool.name(),
        s.train_rows,
        s.val_rows,
        s.history.kept_epoch,
        s.history.epochs.len(),
        if s.history.stopped_early { " (stopped early)" } else { "" },
        s.seconds
    );
    let settings = serde_json::to_string_pretty(&training["settings"]).unwrap_or_default();
    plot::report(
        dir,
        &format!("train-head: {}", cfg.out.display()),
        &[
            ("Run".into(), run),
            ("Settings".into(), format!("```json\n{settings}\n```")),
            ("Learning curves".into(), "![curves](curves.png)".into()),
            ("History".into(), table),
        ],
        false,
    )
}
