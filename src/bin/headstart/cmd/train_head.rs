//! `headstart train-head`: train a dense head (or the logistic baseline) on a feature cache, with
//! learning-curve plots and a markdown report on request.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::error::Result;
use headstart::head::fit::Monitor;
use headstart::head::settings::{LossName, Recipe, ScheduleName, TrainSettings};
use headstart::head::train_head::{history_path, train_head, HeadChoice, TrainHeadConfig};
use headstart::report::markdown;

use crate::common::{term, OptimizerArg, PoolArg, ProgressArg};

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
    /// Output head file [default: <cache name>.head.h5 beside the cache].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Per-epoch history CSV [default: <head name>.history.csv].
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Hidden layers, e.g. "dense:256:relu,dropout:0.5,dense:64:relu" (items: dense:UNITS[:ACT],
    /// dropout:RATE, batchnorm, or an activation; "none" for a linear head); or "logistic" for the
    /// linfa-logistic baseline. The output layer (1 sigmoid for 2 classes, C softmax) is added.
    /// [default: dense:256:relu,dropout:0.5]
    #[arg(long)]
    pub head: Option<String>,
    /// How spatial features become a vector: Keras Flatten, GlobalAveragePooling2D or max pooling.
    #[arg(long, value_enum, default_value = "flatten")]
    pub pool: PoolArg,
    /// Passes over the train rows [default: 30].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Rows per step [default: 20].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of weight init, shuffling, dropout and the validation split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of train held out for validation (stratified) when the cache has no val split.
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Multi-label caches: predict a class at a probability of at least this, for every class
    /// [default: per class, the F1-best cut on the validation rows].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub threshold: Option<f32>,
    /// Leave out the photos listed in FILE (an audit.tsv, or paths one a line, relative to the
    /// data folder) from the train and validation rows; nothing is deleted.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    /// Memory budget (e.g. 2G, 512M): a train split larger than this as float32 is streamed from
    /// the cache block by block instead of read whole (a layer-spec head; --head) [default: half
    /// the machine's available memory].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Rows per block when streaming [default: from --memory].
    #[arg(long, value_name = "ROWS")]
    pub block_rows: Option<usize>,
    /// [default: cross-entropy]
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Label smoothing of the cross-entropy [default: 0].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub label_smoothing: Option<f32>,
    /// Focal loss gamma [default: 2].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub focal_gamma: Option<f32>,
    /// Focal loss alpha, the weight of the positive class [default: 0.25].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub focal_alpha: Option<f32>,
    /// Optimizer (the seed recipe: rmsprop at 2e-5) [default: rmsprop].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Learning rate [default: rmsprop 2e-5 (the seed), adam/adamw 1e-3, sgd 0.01 (Keras)].
    #[arg(value_parser = crate::common::finite_f64, long)]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub momentum: Option<f32>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// SGD inverse-time decay per step (Keras `decay`): lr / (1 + decay * step) [default: 0].
    #[arg(value_parser = crate::common::finite_f64, long)]
    pub decay: Option<f64>,
    /// L2 weight decay, decoupled for adamw [default: 0].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub weight_decay: Option<f32>,
    /// [default: constant]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Step schedule: epochs between rate drops [default: 10].
    #[arg(long)]
    pub step_every: Option<usize>,
    /// Step schedule: factor per drop [default: 0.1].
    #[arg(value_parser = crate::common::finite_f64, long)]
    pub step_gamma: Option<f64>,
    /// Cosine schedule: final rate [default: 0].
    #[arg(value_parser = crate::common::finite_f64, long)]
    pub min_lr: Option<f64>,
    /// Stop after this many epochs without improvement of --monitor (off when unset).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Smallest change that counts as an improvement [default: 0].
    #[arg(value_parser = crate::common::finite_f64, long)]
    pub min_delta: Option<f64>,
    /// [default: val-loss]
    #[arg(long, value_enum)]
    pub monitor: Option<MonitorArg>,
    /// Keep the weights of the best epoch by --monitor instead of the last.
    #[arg(long)]
    pub restore_best: bool,
    /// Rescale gradients to at most this global L2 norm.
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub clip_norm: Option<f32>,
    /// Clamp each gradient value to [-v, v].
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub clip_value: Option<f32>,
    /// [default: none]
    #[arg(long, value_enum)]
    pub class_weight: Option<ClassWeightArg>,
    /// Logistic baseline: inverse L2 strength, scikit-learn's C [default: 1].
    #[arg(value_parser = crate::common::finite_f64, long = "C")]
    pub c: Option<f64>,
    /// Logistic baseline: solver iterations [default: 100].
    #[arg(long)]
    pub max_iter: Option<u64>,
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
    /// The training settings given on the command line.
    fn settings(&self) -> TrainSettings {
        TrainSettings {
            head: self.head.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            loss: self.loss.map(|l| match l {
                LossArg::CrossEntropy => LossName::CrossEntropy,
                LossArg::Focal => LossName::Focal,
                LossArg::Hinge => LossName::Hinge,
                LossArg::SquaredHinge => LossName::SquaredHinge,
                LossArg::Mse => LossName::Mse,
            }),
            label_smoothing: self.label_smoothing,
            focal_gamma: self.focal_gamma,
            focal_alpha: self.focal_alpha,
            optimizer: self.optimizer.map(Into::into),
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            decay: self.decay,
            weight_decay: self.weight_decay,
            schedule: self.schedule.map(|s| match s {
                ScheduleArg::Constant => ScheduleName::Constant,
                ScheduleArg::Step => ScheduleName::Step,
                ScheduleArg::Cosine => ScheduleName::Cosine,
            }),
            step_every: self.step_every,
            step_gamma: self.step_gamma,
            min_lr: self.min_lr,
            patience: self.patience,
            min_delta: self.min_delta,
            monitor: self.monitor.map(|m| match m {
                MonitorArg::ValLoss => Monitor::ValLoss,
                MonitorArg::ValAccuracy => Monitor::ValAccuracy,
                MonitorArg::Loss => Monitor::Loss,
                MonitorArg::Accuracy => Monitor::Accuracy,
            }),
            restore_best: self.restore_best,
            clip_norm: self.clip_norm,
            clip_value: self.clip_value,
            class_weight: self.class_weight.map(|c| c == ClassWeightArg::Balanced),
            plain_step: self.plain_step,
            c: self.c,
            max_iter: self.max_iter,
        }
    }

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
        cfg.threshold = self.threshold;
        cfg.exclude = self.exclude.clone();
        cfg.memory = crate::common::memory_budget(self.memory.as_deref())?;
        cfg.block_rows = match self.block_rows {
            Some(0) => {
                return Err(headstart::error::Error::Config(
                    "--block-rows must be at least 1".into(),
                ))
            }
            b => b,
        };
        cfg.seed = self.seed;
        let recipe = match self.recipe {
            RecipeArg::Auto => Recipe::Auto,
            RecipeArg::Seed => Recipe::Seed,
        };
        cfg.head = self.settings().choose(recipe, self.seed, self.threads)?;
        Ok(cfg)
    }
}

/// Trains, then draws the curves (`--plot`: beside the head file; `--report`: into its folder).
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    let given = a.settings().given();
    if a.recipe == RecipeArg::Auto && !given.is_empty() && !a.quiet {
        let what = match cfg.head {
            HeadChoice::Logistic { .. } => "the logistic baseline",
            _ => "the seed recipe with the flags given",
        };
        println!(
            "recipe: {what} (--{}); --recipe auto applies when no training flag is given",
            given.join(", --").replace('_', "-")
        );
    }
    let features = [cfg.features.as_path()];
    if let Some(dir) = &a.report {
        headstart::report::folders::check_folder(dir, &features, &features)?;
    }
    if a.plot {
        headstart::report::folders::check_plots_beside(&cfg.out, &features, &features)?;
    }
    // A picture that may not be replaced is said before training, not after.
    for p in markdown::train_head_pictures(&cfg.out, a.plot, a.report.as_deref()) {
        headstart::report::plot::check_picture(&p)?;
    }
    let s = train_head(&cfg, &term(ProgressArg::None, a.quiet))?;
    if a.quiet {
        // The report lines are off; the closing ones are what --quiet keeps.
        for line in s.history.summary_lines() {
            println!("{line}");
        }
        println!("wrote {} and {}", cfg.out.display(), cfg.history.display());
    }
    for p in markdown::train_head(&cfg, &s, a.plot, a.report.as_deref())? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
