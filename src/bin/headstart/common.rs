//! Flags shared by several commands (runtime, preprocessing, progress, optimizer, pooling) and their
//! validation into the library's types. Each check is made here once.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use headstart::data::preprocess::{
    ColorOrder, Decode, Interpolation, Layout, Mode, ResizeMode, DEFAULT_CROP_FRACTION,
};
use headstart::error::{Error, Result};
use headstart::head::net::Pool;
use headstart::head::settings::OptimizerName;
use headstart::infer::extract::ExtractConfig;
use headstart::infer::model::{parse_size, PreprocessOverrides};
use headstart::infer::runtime::{Device, RuntimeConfig};

use crate::term::{ProgressMode, Term};

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

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DecodeArg {
    Fast,
    Exact,
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
pub enum ProgressArg {
    Auto,
    Bar,
    Json,
    None,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum AugmentArg {
    /// Left-right mirrored copies (of the train images with --augment, of val and test with --tta).
    Flip,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum PoolArg {
    Flatten,
    Avg,
    Max,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
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

impl From<PoolArg> for Pool {
    fn from(p: PoolArg) -> Pool {
        match p {
            PoolArg::Flatten => Pool::Flatten,
            PoolArg::Avg => Pool::Avg,
            PoolArg::Max => Pool::Max,
        }
    }
}

impl From<OptimizerArg> for OptimizerName {
    fn from(o: OptimizerArg) -> OptimizerName {
        match o {
            OptimizerArg::Sgd => OptimizerName::Sgd,
            OptimizerArg::Adam => OptimizerName::Adam,
            OptimizerArg::Adamw => OptimizerName::AdamW,
            OptimizerArg::Rmsprop => OptimizerName::RmsProp,
        }
    }
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
    /// With --device cuda: plain float32 convolutions and matrix products (no TF32 tensor-core
    /// rounding; slower, and closest to the CPU's numbers).
    #[arg(long)]
    pub no_tf32: bool,
    /// With --device cuda: ONNX Runtime's NHWC convolution kernels (can be faster for float16).
    #[arg(long)]
    pub cuda_nhwc: bool,
    /// Bind the model's input and output to tensors allocated once (pinned host memory and device
    /// tensors on CUDA) instead of new ones every batch.
    #[arg(long)]
    pub io_binding: bool,
    /// With --device cuda: capture the model as a CUDA graph on the first batch and replay it
    /// (implies --io-binding; every batch is padded to the first one's size).
    #[arg(long)]
    pub cuda_graph: bool,
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
    #[arg(long, value_parser = finite_f32)]
    pub crop_fraction: Option<f32>,
    /// Resampling filter.
    #[arg(long, value_enum)]
    pub interpolation: Option<InterpArg>,
    /// JPEG decoding: fast (large photos decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, never
    /// below the input size) or exact (always full size). Default fast.
    #[arg(long, value_enum)]
    pub decode: Option<DecodeArg>,
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

impl RuntimeArgs {
    pub fn to_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            device: self.device.into(),
            threads: self.threads,
            ort_lib: self.ort_lib.clone(),
            no_tf32: self.no_tf32,
            cuda_nhwc: self.cuda_nhwc,
            io_binding: self.io_binding,
            cuda_graph: self.cuda_graph,
        }
    }
}

/// A number flag's value parser: a finite number, as typed; `inf`, `NaN` and values too large for
/// the type (`1e308` for a 32-bit float) are refused with the text given, not as `inf`.
fn finite<T: std::str::FromStr + Copy + Into<f64>>(s: &str) -> std::result::Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if v.into().is_finite() {
        Ok(v)
    } else {
        Err(format!(
            "'{s}' is not a finite number{}",
            if s.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                " of 32-bit range (at most about 3.4e38)"
            } else {
                ""
            }
        ))
    }
}

/// [`finite`] for 32-bit flags.
pub fn finite_f32(s: &str) -> std::result::Result<f32, String> {
    finite(s)
}

/// [`finite`] for 64-bit flags.
pub fn finite_f64(s: &str) -> std::result::Result<f64, String> {
    finite(s)
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
    let (w, h) = parse_size(s)
        .ok_or_else(|| Error::Config(format!("{flag} '{s}': expected WxH like 224x224")))?;
    let max = headstart::util::limits::MAX_INPUT_SIDE;
    if w == 0 || h == 0 || w as usize > max || h as usize > max {
        return Err(Error::Config(format!(
            "{flag} '{s}': each side must be 1 to {max} pixels"
        )));
    }
    Ok((w, h))
}

/// An optional "WxH" flag.
pub fn opt_size(flag: &str, s: Option<&str>) -> Result<Option<(u32, u32)>> {
    s.map(|s| size_arg(flag, s)).transpose()
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
            decode: self.decode.map(|d| match d {
                DecodeArg::Fast => Decode::Fast,
                DecodeArg::Exact => Decode::Exact,
            }),
            size: opt_size("--size", self.size.as_deref())?,
            preset: self.preset.clone(),
        })
    }
}

/// Labels from a table (`extract` and `split`): the file, its columns and the tag delimiter.
#[derive(Args, Debug, Clone)]
pub struct TableArgs {
    /// Labels from a table instead of class folders: a CSV, TSV or JSON Lines file naming each
    /// image below the image folder (with or without its extension) and its class.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The table's column (header name; JSON key) of the image ids [default: the first column].
    #[arg(long, requires = "labels")]
    pub path_col: Option<String>,
    /// The table's column of the labels [default: the first column that is neither the path's nor the split's].
    #[arg(long, requires = "labels")]
    pub label_col: Option<String>,
    /// Multi-label: split each label cell into tags at this character (' ', ';', '|'); the
    /// cache then holds a multi-hot target matrix. A JSON array of tags needs no delimiter.
    #[arg(long, requires = "labels")]
    pub label_delim: Option<char>,
}

impl TableArgs {
    /// The table these flags name, if any.
    pub fn table(&self) -> Option<headstart::data::labels::LabelTable> {
        self.labels.as_ref().map(|file| {
            let mut t = headstart::data::labels::LabelTable::new(file);
            t.path_col = self.path_col.clone();
            t.label_col = self.label_col.clone();
            t.label_delim = self.label_delim;
            t
        })
    }
}

/// `--progress` and `--quiet`, for the commands that show progress.
#[derive(Args, Debug, Clone)]
pub struct DisplayArgs {
    /// Progress: auto (a bar on a terminal), bar, json (lines for scripts) or none.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// No progress and no details: only warnings, errors and the final lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl DisplayArgs {
    /// The terminal reporter these flags ask for.
    pub fn term(&self) -> Term {
        term(self.progress, self.quiet)
    }
}

/// The terminal reporter for `--progress` and `--quiet`.
pub fn term(arg: ProgressArg, quiet: bool) -> Term {
    let mode = match arg {
        ProgressArg::Auto => ProgressMode::Auto,
        ProgressArg::Bar => ProgressMode::Bar,
        ProgressArg::Json => ProgressMode::Json,
        ProgressArg::None => ProgressMode::None,
    };
    Term::new(mode, quiet)
}

/// How a model runs over images: batch size, preprocessing and runtime flags.
#[derive(Args, Debug, Clone)]
pub struct ModelRunArgs {
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub pre: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl ModelRunArgs {
    /// Puts the preprocessing, runtime and batch flags into an extraction config.
    pub fn apply(&self, ex: &mut ExtractConfig) -> Result<()> {
        ex.overrides = self.pre.to_overrides()?;
        ex.layout = self.pre.layout.map(Layout::from);
        ex.batch = self.batch;
        ex.runtime = self.runtime.to_config();
        Ok(())
    }
}

/// The model of `inspect`, `cut` and `convert`: positional (`headstart inspect M.onnx`) or, as every
/// other command takes it, `--model M.onnx`.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct ModelArg {
    /// The ONNX model: a file, or a name headstart fetches (`headstart models`).
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The same as the positional MODEL, as the other commands take it.
    #[arg(long = "model", id = "model_flag", value_name = "MODEL")]
    model_flag: Option<PathBuf>,
}

impl ModelArg {
    /// The model file (a name is fetched first).
    pub fn path(&self) -> Result<PathBuf> {
        match self.model.as_ref().or(self.model_flag.as_ref()) {
            Some(m) => model_path(m),
            None => Err(Error::invalid(
                "model",
                "give the model: MODEL or --model MODEL",
            )),
        }
    }
}

/// Which shard of a planned run (`--run`) a worker takes; shared by `extract` and `score`.
#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// The shard (with --run). Else HEADSTART_SHARD, SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or
    /// AWS_BATCH_JOB_ARRAY_INDEX, whichever is set first.
    #[arg(long, requires = "run")]
    pub shard: Option<usize>,
    /// Added to the shard index (Slurm arrays stop at 1000 by default: submit 1000-1999 as 0-999
    /// with --shard-offset 1000).
    #[arg(long, default_value_t = 0, requires = "run")]
    pub shard_offset: usize,
}

impl ShardArgs {
    /// The shard index and where it came from (the flag or a scheduler's variable).
    pub fn index(&self) -> Result<(usize, String)> {
        headstart::runs::plan::shard_index(self.shard, self.shard_offset, |name| {
            std::env::var(name).ok()
        })
    }
}

/// A feature cache argument: the file as it is, or a run folder's merged cache (merged now, with a
/// line saying so, when missing or out of date).
pub fn features_or_run(p: &Path) -> Result<PathBuf> {
    let (path, merged) = headstart::runs::resolve_features(p)?;
    if let Some(s) = merged {
        eprintln!(
            "merged {} shards of run {} ({} rows, {} skipped) -> {}",
            s.shards,
            p.display(),
            s.rows,
            s.skipped,
            s.out.display()
        );
    }
    Ok(path)
}

/// A `--model` argument: a file as it is, or a name headstart fetches on first use
/// (`headstart models` lists them).
pub fn model_path(p: &Path) -> Result<PathBuf> {
    headstart::fetch::resolve_model(p, &Term::new(ProgressMode::None, false))
}

/// `--memory SIZE` (2G, 512M, 100K or bytes) in bytes; `None` when not given.
pub fn memory_budget(given: Option<&str>) -> Result<Option<u64>> {
    given
        .map(|m| {
            headstart::head::stream::parse_size(m).ok_or_else(|| {
                headstart::error::Error::Config(format!(
                    "--memory '{m}': expected a size such as 2G, 512M or 100K"
                ))
            })
        })
        .transpose()
}
