//! Command-line arguments (clap) and their validation into the library's config structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cache::Dtype;
use crate::error::{Error, Result};
use crate::extract::ExtractConfig;
use crate::model::{parse_size, PreprocessOverrides};
use crate::preprocess::{
    ColorOrder, Interpolation, Layout, Mode, ResizeMode, DEFAULT_CROP_FRACTION,
};
use crate::progress::ProgressMode;
use crate::runtime::Device;

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
    /// Time ONNX Runtime alone on preprocessed tensors held in memory (benchmark reference).
    BenchInfer(BenchInferArgs),
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

impl ExtractArgs {
    /// Validates into an [`ExtractConfig`].
    pub fn to_config(&self) -> Result<ExtractConfig> {
        if self.batch == 0 {
            return Err(Error::Config("--batch must be at least 1".into()));
        }
        let mut cfg = ExtractConfig::new(&self.model, &self.data, &self.out);
        cfg.overrides = self.pre.to_overrides()?;
        cfg.layout = self.pre.layout.map(Layout::from);
        cfg.batch = self.batch;
        cfg.threads = self.runtime.threads;
        cfg.decode_threads = self.decode_threads;
        cfg.device = self.runtime.device.into();
        cfg.ort_lib = self.runtime.ort_lib.clone();
        cfg.dtype = match self.dtype {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
        };
        cfg.strict = self.strict;
        cfg.force = self.force;
        cfg.verbose = !self.quiet;
        cfg.progress = if self.quiet {
            ProgressMode::None
        } else {
            match self.progress {
                ProgressArg::Auto => ProgressMode::Auto,
                ProgressArg::Bar => ProgressMode::Bar,
                ProgressArg::Json => ProgressMode::Json,
                ProgressArg::None => ProgressMode::None,
            }
        };
        Ok(cfg)
    }
}
