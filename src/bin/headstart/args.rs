//! Command-line arguments (clap) and their validation into the library's config structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use headstart::cache::Dtype;
use headstart::error::{Error, Result};
use headstart::report::evaluate::{EvaluateConfig, Source};
use headstart::infer::extract::ExtractConfig;
use headstart::finetune::{FinetuneConfig, SplitPoint};
use headstart::head::fit::{history_path, HeadChoice, TrainHeadConfig};
use headstart::head::loss::Loss;
use headstart::head::net::{parse_spec, Pool, DEFAULT_HEAD};
use headstart::head::train::{
    EarlyStopping, Monitor, OptimizerKind, OptimizerSpec, Schedule, TrainConfig,
};
use headstart::infer::model::{parse_size, PreprocessOverrides};
use headstart::data::preprocess::{
    ColorOrder, Interpolation, Layout, Mode, ResizeMode, DEFAULT_CROP_FRACTION,
};
use headstart::util::progress::ProgressMode;
use headstart::infer::runtime::Device;

#[derive(Parser, Debug)]
#[command(
    name = "headstart",
    version,
    about = "Transfer learning on images: ONNX base -> cached features -> trained head"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a frozen ONNX base over image folders and cache its features in HDF5.
    Extract(ExtractArgs),
    /// Print what a feature cache holds.
    Summary {
        /// The HDF5 feature cache.
        cache: PathBuf,
    },
    /// Write a random-weight CNN as ONNX (VGG-16 conv base, or a tiny one for tests).
    MakeModel(MakeModelArgs),
    /// Write a feature cache of seeded random features (benchmarks and tests; no model involved).
    MakeFeatures(MakeFeaturesArgs),
    /// Time ONNX Runtime alone on preprocessed tensors held in memory (benchmark reference).
    BenchInfer(BenchInferArgs),
    /// Train a dense head (or a logistic-regression baseline) on a feature cache.
    TrainHead(TrainHeadArgs),
    /// Metrics of a head on a cached split, or on image folders (extracted on the fly).
    Evaluate(EvaluateArgs),
    /// Classify image files and folders with base + head (or an exported model), one row per image.
    Score(ScoreArgs),
    /// Write one ONNX model: the base with the head appended (and optionally the preprocessing).
    Export(ExportArgs),
    /// Describe an ONNX model: inputs/outputs, layout, preset, preprocessing, parameters, multiply-adds.
    Inspect(InspectArgs),
    /// Cut an ONNX model at a tensor (default: the conv base of a classifier) and prune the rest.
    Cut(CutArgs),
    /// Top-k ImageNet classes (with names) of images, for a model that still has its classifier.
    Classify(ClassifyArgs),
    /// The architecture presets: input size, preprocessing, conv base, fine-tune split, figures.
    Models,
    /// Unfreeze the top block(s) of the base and train them with the head (candle), then export.
    Finetune(FinetuneArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum PreprocessArg {
    Caffe,
    Torch,
    Tf,
    Raw,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ResizeArg {
    Squash,
    Crop,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum InterpArg {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum LayoutArg {
    Nchw,
    Nhwc,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ColorArg {
    Rgb,
    Bgr,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ProgressArg {
    Auto,
    Bar,
    Json,
    None,
}

/// Runtime options shared by commands that run a model.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Execution device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// ONNX Runtime intra-op threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Path of libonnxruntime.so (else $ORT_DYLIB_PATH, the project cache, the executable's folder).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

/// How images become tensors; unset options come from the model's metadata or a preset.
#[derive(Args, Debug, Clone, Default)]
pub struct PreprocessArgs {
    /// Named normalisation: caffe (BGR minus ImageNet means), torch (/255, ImageNet mean/std), tf ([-1,1]), raw.
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    /// Per-channel mean on the 0..255 scale, in the model's channel order ("R,G,B" or one value).
    #[arg(long)]
    pub mean: Option<String>,
    /// Per-channel std on the 0..255 scale (default 1 with --mean).
    #[arg(long)]
    pub std: Option<String>,
    /// Channel order fed to the model (with --mean; --preprocess sets its own).
    #[arg(long, value_enum)]
    pub color: Option<ColorArg>,
    /// squash: whole image to the input size; crop: centre crop (see --crop-fraction), then resize.
    #[arg(long, value_enum)]
    pub resize: Option<ResizeArg>,
    /// Fraction of the shorter side kept by --resize crop.
    #[arg(long)]
    pub crop_fraction: Option<f32>,
    /// Resampling filter.
    #[arg(long, value_enum)]
    pub interpolation: Option<InterpArg>,
    /// Input size WxH for models with a dynamic input size.
    #[arg(long)]
    pub size: Option<String>,
    /// Force a preset (e.g. vgg16) instead of detecting one.
    #[arg(long)]
    pub preset: Option<String>,
    /// Force the input layout instead of detecting it.
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// The ONNX base model.
    #[arg(long)]
    pub model: PathBuf,
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(long)]
    pub data: PathBuf,
    /// Output HDF5 file.
    #[arg(long, default_value = "features.h5")]
    pub out: PathBuf,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Image decoding threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    /// Feature storage type (f16 halves the file).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Extract again even if the cache is up to date.
    #[arg(long)]
    pub force: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// No progress and no details, only warnings, errors and the summary line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Cut the model at this tensor first (written to <out>.base.onnx; use that file afterwards).
    #[arg(long)]
    pub layer: Option<String>,
    /// Also cache left-right mirrored train images (split train_flip).
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ArchArg {
    Vgg16,
    Tiny,
}

#[derive(Args, Debug)]
pub struct MakeFeaturesArgs {
    /// Per-image feature shape, e.g. 512,7,7 (VGG-16's conv base, NCHW) or 1280.
    #[arg(long, default_value = "512,7,7")]
    pub shape: String,
    /// Images per split as NAME=N, e.g. train=2000 val=1000.
    #[arg(long = "split", default_values = ["train=2000", "val=1000"])]
    pub splits: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
    /// How far apart the classes are (0: pure noise).
    #[arg(long, default_value_t = 0.05)]
    pub separation: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct MakeModelArgs {
    #[arg(value_enum)]
    pub arch: ArchArg,
    #[arg(long, value_enum, default_value = "nchw")]
    pub layout: LayoutArg,
    /// Input size WxH (tiny only; "dynamic" for a dynamic size).
    #[arg(long)]
    pub size: Option<String>,
    /// Weight seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append a global average pool (features [N, C]).
    #[arg(long)]
    pub pool: bool,
    /// metadata_props entries KEY=VALUE.
    #[arg(long = "meta")]
    pub metadata: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct BenchInferArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Images to time (after one warm-up batch).
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// Input size WxH for dynamic models.
    #[arg(long)]
    pub size: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Nchw => Layout::Nchw,
            LayoutArg::Nhwc => Layout::Nhwc,
        }
    }
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
            DeviceArg::Auto => Device::Auto,
        }
    }
}

fn parse_triplet(flag: &str, s: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::Config(format!(
                "{flag} '{s}': expected numbers like 123.7,116.3,103.5"
            ))
        })?;
    match v.as_slice() {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(Error::Config(format!(
            "{flag} '{s}': expected 1 or 3 values, got {}",
            v.len()
        ))),
    }
}

/// Parses "WxH" for a flag.
pub fn size_arg(flag: &str, s: &str) -> Result<(u32, u32)> {
    parse_size(s).ok_or_else(|| Error::Config(format!("{flag} '{s}': expected WxH like 224x224")))
}

impl PreprocessArgs {
    /// Validates into overrides.
    pub fn to_overrides(&self) -> Result<PreprocessOverrides> {
        let std = self
            .std
            .as_deref()
            .map(|s| parse_triplet("--std", s))
            .transpose()?;
        if let Some(s) = std {
            if s.iter().any(|v| *v <= 0.0 || !v.is_finite()) {
                return Err(Error::Config(format!(
                    "--std {s:?}: every value must be > 0"
                )));
            }
        }
        let resize = match (self.resize, self.crop_fraction) {
            (_, Some(f)) if !(f > 0.0 && f <= 1.0) => {
                return Err(Error::Config(format!(
                    "--crop-fraction {f}: must be in (0, 1]"
                )))
            }
            (Some(ResizeArg::Squash), Some(_)) => {
                return Err(Error::Config(
                    "--crop-fraction goes with --resize crop".into(),
                ))
            }
            (Some(ResizeArg::Squash), None) => Some(ResizeMode::Squash),
            (Some(ResizeArg::Crop), f) | (None, f @ Some(_)) => Some(ResizeMode::Crop {
                fraction: f.unwrap_or(DEFAULT_CROP_FRACTION),
            }),
            (None, None) => None,
        };
        Ok(PreprocessOverrides {
            mode: self.preprocess.map(|p| match p {
                PreprocessArg::Caffe => Mode::Caffe,
                PreprocessArg::Torch => Mode::Torch,
                PreprocessArg::Tf => Mode::Tf,
                PreprocessArg::Raw => Mode::Raw,
            }),
            mean: self
                .mean
                .as_deref()
                .map(|s| parse_triplet("--mean", s))
                .transpose()?,
            std,
            color: self.color.map(|c| match c {
                ColorArg::Rgb => ColorOrder::Rgb,
                ColorArg::Bgr => ColorOrder::Bgr,
            }),
            resize,
            interpolation: self.interpolation.map(|i| match i {
                InterpArg::Nearest => Interpolation::Nearest,
                InterpArg::Bilinear => Interpolation::Bilinear,
                InterpArg::Bicubic => Interpolation::Bicubic,
                InterpArg::Lanczos3 => Interpolation::Lanczos3,
            }),
            size: self
                .size
                .as_deref()
                .map(|s| size_arg("--size", s))
                .transpose()?,
            preset: self.preset.clone(),
        })
    }
}

/// `--progress`, with `--quiet` meaning none.
fn progress_mode(arg: ProgressArg, quiet: bool) -> ProgressMode {
    match (quiet, arg) {
        (true, _) | (_, ProgressArg::None) => ProgressMode::None,
        (_, ProgressArg::Auto) => ProgressMode::Auto,
        (_, ProgressArg::Bar) => ProgressMode::Bar,
        (_, ProgressArg::Json) => ProgressMode::Json,
    }
}

/// The base model's preprocessing, runtime and batch flags, shared by every command that extracts.
fn base_settings(
    ex: &mut ExtractConfig,
    pre: &PreprocessArgs,
    runtime: &RuntimeArgs,
    batch: usize,
) -> Result<()> {
    ex.overrides = pre.to_overrides()?;
    ex.layout = pre.layout.map(Layout::from);
    ex.batch = batch;
    ex.threads = runtime.threads;
    ex.device = runtime.device.into();
    ex.ort_lib = runtime.ort_lib.clone();
    Ok(())
}

impl ExtractArgs {
    /// Validates into an [`ExtractConfig`].
    pub fn to_config(&self) -> Result<ExtractConfig> {
        if self.batch == 0 {
            return Err(Error::Config("--batch must be at least 1".into()));
        }
        let mut cfg = ExtractConfig::new(&self.model, &self.data, &self.out);
        base_settings(&mut cfg, &self.pre, &self.runtime, self.batch)?;
        cfg.decode_threads = self.decode_threads;
        cfg.dtype = match self.dtype {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
        };
        cfg.strict = self.strict;
        cfg.force = self.force;
        cfg.layer = self.layer.clone();
        cfg.augment_flip = self.augment == Some(AugmentArg::Flip);
        cfg.verbose = !self.quiet;
        cfg.progress = progress_mode(self.progress, self.quiet);
        Ok(cfg)
    }
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum AugmentArg {
    /// Left-right mirrored copies of the train images.
    Flip,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum PoolArg {
    Flatten,
    Avg,
    Max,
}

impl From<PoolArg> for Pool {
    fn from(p: PoolArg) -> Pool {
        match p {
            PoolArg::Flatten => Pool::Flatten,
            PoolArg::Avg => Pool::Avg,
            PoolArg::Max => Pool::Max,
        }
    }
}

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
pub enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

impl OptimizerArg {
    /// The optimizer with SGD's momentum, Nesterov flag and decay (ignored by the others).
    fn kind(self, momentum: f32, nesterov: bool, decay: f64) -> OptimizerKind {
        match self {
            OptimizerArg::Sgd => OptimizerKind::Sgd {
                momentum,
                nesterov,
                decay,
            },
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Adamw => OptimizerKind::AdamW,
            OptimizerArg::Rmsprop => OptimizerKind::RmsProp,
        }
    }
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

#[derive(Args, Debug)]
pub struct TrainHeadArgs {
    /// The HDF5 feature cache written by `extract`.
    pub features: PathBuf,
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

impl TrainHeadArgs {
    /// Validates into a [`TrainHeadConfig`].
    pub fn to_config(&self) -> Result<TrainHeadConfig> {
        let mut cfg = TrainHeadConfig::new(&self.features);
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
        cfg.verbose = !self.quiet;
        cfg.head = if self.head.trim() == "logistic" {
            HeadChoice::Logistic {
                c: self.c,
                max_iter: self.max_iter,
            }
        } else {
            let kind = self
                .optimizer
                .kind(self.momentum, self.nesterov, self.decay);
            let lr = self.lr.unwrap_or(match self.optimizer {
                OptimizerArg::Rmsprop => 2e-5,
                OptimizerArg::Adam | OptimizerArg::Adamw => 1e-3,
                OptimizerArg::Sgd => 0.01,
            });
            if self.optimizer != OptimizerArg::Sgd
                && (self.momentum != 0.0 || self.nesterov || self.decay != 0.0)
            {
                return Err(Error::Config(
                    "--momentum, --nesterov and --decay apply to --optimizer sgd only".into(),
                ));
            }
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
            if self.label_smoothing != 0.0 && self.loss != LossArg::CrossEntropy {
                return Err(Error::Config(
                    "--label-smoothing applies to --loss cross-entropy only".into(),
                ));
            }
            HeadChoice::Mlp(TrainConfig {
                spec: parse_spec(&self.head)?,
                loss,
                optimizer: OptimizerSpec {
                    kind,
                    lr,
                    weight_decay: self.weight_decay,
                },
                schedule: match self.schedule {
                    ScheduleArg::Constant => Schedule::Constant,
                    ScheduleArg::Step => {
                        if self.step_every == 0 {
                            return Err(Error::Config("--step-every must be at least 1".into()));
                        }
                        Schedule::Step {
                            every: self.step_every,
                            gamma: self.step_gamma,
                        }
                    }
                    ScheduleArg::Cosine => Schedule::Cosine {
                        min_lr: self.min_lr,
                    },
                },
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
        };
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The head file written by `train-head`.
    #[arg(long)]
    pub head: PathBuf,
    /// A feature cache to evaluate on (or give --model and --data).
    #[arg(long, conflicts_with_all = ["model", "data"])]
    pub features: Option<PathBuf>,
    /// Split of the cache [default: test, else val, else train].
    #[arg(long)]
    pub split: Option<String>,
    /// Base model, to evaluate on image folders directly (with --data).
    #[arg(long, requires = "data")]
    pub model: Option<PathBuf>,
    /// Image folder (with --model): features are extracted on the fly.
    #[arg(long, requires = "model")]
    pub data: Option<PathBuf>,
    /// Print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// How many most-confidently-wrong files to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Draw the confusion matrix (and the ROC curve for two classes) beside the head file.
    #[arg(long)]
    pub plot: bool,
    /// Write DIR/report.md (metrics, confusion matrix, top losses) with the plots.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Images per inference batch (with --data).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl EvaluateArgs {
    /// Validates into an [`EvaluateConfig`].
    pub fn to_config(&self) -> Result<EvaluateConfig> {
        let source = match (&self.features, &self.model, &self.data) {
            (Some(f), None, None) => Source::Features {
                path: f.clone(),
                split: self.split.clone(),
            },
            (None, Some(m), Some(d)) => {
                if self.batch == 0 {
                    return Err(Error::Config("--batch must be at least 1".into()));
                }
                let mut ex = ExtractConfig::new(m, d, "features.h5");
                base_settings(&mut ex, &self.pre, &self.runtime, self.batch)?;
                ex.verbose = false;
                ex.progress = if self.json {
                    ProgressMode::None
                } else {
                    ProgressMode::Auto
                };
                Source::Images(Box::new(ex))
            }
            _ => {
                return Err(Error::Config(
                    "evaluate needs --features FILE, or --model M.onnx with --data DIR".into(),
                ))
            }
        };
        Ok(EvaluateConfig {
            head: self.head.clone(),
            source,
            top: self.top,
        })
    }
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The ONNX base model (or a model written by `export`, then without --head).
    #[arg(long)]
    pub model: PathBuf,
    /// The head file written by `train-head`.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Image files and folders (walked recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output file: .csv, or .jsonl for JSON lines [default: CSV on stdout].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write only the K most probable classes of each image.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Two classes: predict the second when its probability is at least this (default: the larger).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Skip the files already in --out (an interrupted run continues).
    #[arg(long, requires = "out")]
    pub resume: bool,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Image decoding threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl ScoreArgs {
    /// Validates into a [`headstart::report::score::ScoreConfig`].
    pub fn to_config(&self) -> Result<headstart::report::score::ScoreConfig> {
        if self.batch == 0 {
            return Err(Error::Config("--batch must be at least 1".into()));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("--top-k must be at least 1".into()));
        }
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::Config(format!(
                    "--threshold must be in [0, 1], got {t}"
                )));
            }
        }
        let mut cfg =
            headstart::report::score::ScoreConfig::new(&self.model, self.head.clone(), self.paths.clone());
        cfg.out = self.out.clone();
        cfg.top_k = self.top_k;
        cfg.threshold = self.threshold;
        cfg.resume = self.resume;
        cfg.batch = self.batch;
        cfg.threads = self.runtime.threads;
        cfg.decode_threads = self.decode_threads;
        cfg.device = self.runtime.device.into();
        cfg.ort_lib = self.runtime.ort_lib.clone();
        cfg.overrides = self.pre.to_overrides()?;
        cfg.layout = self.pre.layout.map(Layout::from);
        cfg.progress = progress_mode(self.progress, self.quiet);
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The ONNX base model the head was trained on.
    #[arg(long)]
    pub model: PathBuf,
    /// The head file written by `train-head`.
    #[arg(long)]
    pub head: PathBuf,
    /// Output ONNX file.
    #[arg(long)]
    pub out: PathBuf,
    /// Take uint8 NHWC RGB images at the model's input size and normalise inside the graph.
    #[arg(long)]
    pub with_preprocessing: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// List every node: name, op, output tensor and shape, multiply-adds.
    #[arg(long)]
    pub layers: bool,
    /// Input size WxH for models with a dynamic size (for shapes and multiply-adds).
    #[arg(long)]
    pub size: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct CutArgs {
    pub model: PathBuf,
    /// Tensor to make the output [default: the tensor feeding the classifier (include_top=False)].
    #[arg(long)]
    pub layer: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// An ONNX model with its classifier (e.g. efficientnet_lite0_imagenet.onnx).
    #[arg(long)]
    pub model: PathBuf,
    /// Image files and folders (walked recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Class names, one per line, in the model's output order.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/imagenet_classes.txt"))]
    pub classes: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per image instead of text.
    #[arg(long)]
    pub jsonl: bool,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The ONNX base model (the same file the head's features came from).
    #[arg(long)]
    pub model: PathBuf,
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(long)]
    pub data: PathBuf,
    /// A head trained on this model's features; without it, phase 1 trains one (--freeze-epochs).
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Unfreeze from a block the model's preset names (vgg16: block5, block4; efficientnet_lite0:
    /// head, stage7, stage6).
    #[arg(
        long,
        conflicts_with = "from_layer",
        required_unless_present = "from_layer"
    )]
    pub unfreeze: Option<String>,
    /// Unfreeze from this node (its name, a part of it such as block5_conv1, or its output tensor).
    #[arg(long)]
    pub from_layer: Option<String>,
    /// Fine-tune epochs (phase 2).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Head-only epochs with the block frozen (phase 1, without --head).
    #[arg(long, default_value_t = 5)]
    pub freeze_epochs: usize,
    #[arg(long, default_value_t = 20)]
    pub batch_size: usize,
    /// Phase 2 optimizer.
    #[arg(long, value_enum, default_value = "rmsprop")]
    pub optimizer: OptimizerArg,
    /// Phase 2 learning rate (low: the top already knows its job).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// SGD momentum (phase 2).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f32,
    /// L2 weight decay (decoupled for adamw), phase 2.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Phase 1 head layers (train-head's grammar).
    #[arg(long = "head-spec", default_value = DEFAULT_HEAD)]
    pub head_spec: String,
    /// Phase 1 learning rate (RMSprop, as train-head).
    #[arg(long, default_value_t = 2e-5)]
    pub head_lr: f64,
    /// How the top's output becomes a vector for a new head.
    #[arg(long, value_enum, default_value = "flatten")]
    pub pool: PoolArg,
    /// Also train on left-right mirrored train images (cached once, no decoding later).
    #[arg(long, value_enum)]
    pub augment: Option<AugmentArg>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of train held out for validation when the data has no val split.
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Keep the phase 2 weights of the epoch with the lowest validation loss.
    #[arg(long)]
    pub restore_best: bool,
    /// Stop phase 2 after this many epochs without a lower validation loss.
    #[arg(long)]
    pub patience: Option<usize>,
    /// The fine-tuned model: base with the trained top + head, as one ONNX file.
    #[arg(long)]
    pub out: PathBuf,
    /// Cache of the frozen part's outputs [default: <out name>.inputs.h5].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Images per inference batch of the frozen part.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Only warnings, errors and the final lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl FinetuneArgs {
    /// Validates into a [`FinetuneConfig`].
    pub fn to_config(&self) -> Result<FinetuneConfig> {
        let split = match (&self.unfreeze, &self.from_layer) {
            (Some(b), None) => SplitPoint::Block(b.clone()),
            (None, Some(l)) => SplitPoint::FromLayer(l.clone()),
            _ => {
                return Err(Error::Config(
                    "give one of --unfreeze BLOCK or --from-layer NODE".into(),
                ))
            }
        };
        if self.batch == 0 || self.batch_size == 0 {
            return Err(Error::Config(
                "--batch and --batch-size must be at least 1".into(),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.head_lr > 0.0 && self.head_lr.is_finite())
        {
            return Err(Error::Config(format!(
                "--lr and --head-lr must be positive, got {} and {}",
                self.lr, self.head_lr
            )));
        }
        if self.momentum != 0.0 && self.optimizer != OptimizerArg::Sgd {
            return Err(Error::Config(
                "--momentum applies to --optimizer sgd only".into(),
            ));
        }
        let mut cfg = FinetuneConfig::new(&self.model, &self.data, &self.out, split);
        if let Some(c) = &self.cache {
            cfg.cache = c.clone();
        }
        cfg.head = self.head.clone();
        cfg.head_train.spec = parse_spec(&self.head_spec)?;
        cfg.head_train.epochs = self.freeze_epochs;
        cfg.head_train.batch_size = self.batch_size;
        cfg.head_train.seed = self.seed;
        cfg.head_train.optimizer.lr = self.head_lr;
        if self.head.is_none() && self.freeze_epochs == 0 {
            return Err(Error::Config(
                "--freeze-epochs must be at least 1 without --head (phase 1 trains the new head)"
                    .into(),
            ));
        }
        cfg.pool = self.pool.into();
        cfg.epochs = self.epochs;
        cfg.batch_size = self.batch_size;
        cfg.optimizer = OptimizerSpec {
            kind: self.optimizer.kind(self.momentum, false, 0.0),
            lr: self.lr,
            weight_decay: self.weight_decay,
        };
        cfg.seed = self.seed;
        cfg.val_split = self.val_split;
        cfg.restore_best = self.restore_best;
        cfg.patience = self.patience;
        cfg.verbose = !self.quiet;
        let ex = &mut cfg.extract;
        base_settings(ex, &self.pre, &self.runtime, self.batch)?;
        ex.augment_flip = self.augment == Some(AugmentArg::Flip);
        ex.verbose = !self.quiet;
        ex.progress = progress_mode(self.progress, self.quiet);
        Ok(cfg)
    }
}
