//! `headstart extract`: run a frozen base over image folders and cache its features.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::cache::tokens::{TokenPool, TokenRequest};
use headstart::cache::Dtype;
use headstart::data::augment::AugmentSpec;
use headstart::error::{Error, Result};
use headstart::infer::extract::{extract, ExtractConfig, Int8};
use headstart::runs::{extract_shard, ShardOutcome};
use std::path::Path;

use crate::common::{model_path, AugmentArg, DisplayArgs, ModelRunArgs, ShardArgs, TableArgs};
use crate::term::Term;

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
}

impl DtypeArg {
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
        }
    }
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum PrecisionArg {
    Fp32,
    Int8,
}

/// `--pool`: how a transformer's token output becomes one row per image.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum TokenPoolArg {
    /// The class token (token 0).
    Cls,
    /// The mean of the patch tokens.
    Mean,
    /// The class token beside the mean of the patch tokens (twice as wide; DINOv2's linear probe).
    #[value(name = "cls+mean")]
    ClsMean,
    /// Keep every token (a T x D row per image).
    None,
}

impl From<TokenPoolArg> for TokenPool {
    fn from(p: TokenPoolArg) -> TokenPool {
        match p {
            TokenPoolArg::Cls => TokenPool::Cls,
            TokenPoolArg::Mean => TokenPool::Mean,
            TokenPoolArg::ClsMean => TokenPool::ClsMean,
            TokenPoolArg::None => TokenPool::None,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX base model: a file, or a name headstart fetches (`headstart models`).
    #[arg(long)]
    pub model: PathBuf,
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*; or an object-storage URL
    /// laid out the same way (s3://bucket/prefix, gs://, az://, https://; the `cloud` build).
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    pub data: Option<PathBuf>,
    /// Output HDF5 file.
    #[arg(long, default_value = "features.h5", conflicts_with = "run")]
    pub out: PathBuf,
    /// Extract one shard of a planned run (`headstart plan`): the data comes from the plan, the
    /// output goes to RUN/shards/, and a completion marker to RUN/done/. RUN may be an
    /// object-storage URL.
    #[arg(long)]
    pub run: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
    #[command(flatten)]
    pub model_run: ModelRunArgs,
    /// Image decoding threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    /// Feature storage type (f16 halves the file).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Stop at the first unreadable image instead of skipping it; with --labels, also refuse images
    /// that have no row in the table.
    #[arg(long)]
    pub strict: bool,
    /// Extract again even if the cache is up to date.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub display: DisplayArgs,
    /// Cut the model at this tensor first (written to <out>.base.onnx; use that file afterwards).
    #[arg(long)]
    pub layer: Option<String>,
    /// Cached augmentation of the train images. `flip` alone: their left-right mirrors (split
    /// train_flip). With --copies K: K seeded augmented copies of each (split train_aug), each drawn
    /// from the listed transforms: flip, crop, scale, color (e.g. `flip,crop,scale,color`).
    #[arg(long)]
    pub augment: Option<String>,
    /// Augmented copies per train image (with --augment); validation and test images are never
    /// augmented.
    #[arg(long, default_value_t = 0, requires = "augment")]
    pub copies: usize,
    /// Seed of the augmented copies.
    #[arg(long, default_value_t = 42)]
    pub augment_seed: u64,
    /// Feature precision: fp32, or int8 (the model quantised once on --calibrate images with
    /// `headstart quantize`'s defaults, kept in $HEADSTART_HOME/quantized).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: PrecisionArg,
    /// Calibration images for --precision int8 (your own photos, e.g. the train folder).
    #[arg(long)]
    pub calibrate: Option<PathBuf>,
    /// How many calibration images --precision int8 uses.
    #[arg(long, default_value_t = 256)]
    pub calibrate_images: usize,
    #[command(flatten)]
    pub table: TableArgs,
    /// The table's column of split names (train, val, test) [default: every row is train].
    #[arg(long, requires = "labels")]
    pub split_col: Option<String>,
    /// Test-time augmentation: also cache mirrored copies of the val and test images (splits
    /// val_flip, test_flip); evaluate averages the plain and mirrored predictions.
    #[arg(long, value_enum)]
    pub tta: Option<AugmentArg>,
    /// Pooling of a token output [N, T, D] (a ViT's): cls, mean, cls+mean or none [default: the
    /// model's metadata, as `headstart fetch` writes it; a token output without it is refused].
    #[arg(long, value_enum)]
    pub pool: Option<TokenPoolArg>,
    /// Leading tokens that are not patches (the class token and any registers), for --pool mean
    /// and cls+mean [default: the model's metadata].
    #[arg(long)]
    pub prefix_tokens: Option<usize>,
}

impl Args {
    /// Validates into an [`ExtractConfig`].
    pub fn to_config(&self) -> Result<ExtractConfig> {
        let data = self.data.clone().unwrap_or_default();
        let mut cfg = ExtractConfig::new(model_path(&self.model)?, data, &self.out);
        self.model_run.apply(&mut cfg)?;
        cfg.decode_threads = self.decode_threads;
        cfg.dtype = self.dtype.dtype();
        cfg.strict = self.strict;
        cfg.force = self.force;
        cfg.labels = self.table.table().map(|mut t| {
            t.split_col = self.split_col.clone();
            t.strict = self.strict;
            t
        });
        cfg.layer = self.layer.clone();
        match (&self.augment, self.copies) {
            (None, _) => {}
            (Some(a), 0) if a.trim() == "flip" => cfg.augment_flip = true,
            (Some(a), 0) => {
                return Err(Error::Config(format!(
                    "--augment {a}: transforms other than a plain flip need --copies K (augmented copies per train image)"
                )))
            }
            (Some(a), k) => {
                cfg.augment = AugmentSpec::parse(a)
                    .map_err(|e| Error::Config(format!("--augment {a}: {e}")))?;
                cfg.copies = k;
                cfg.augment_seed = self.augment_seed;
            }
        }
        cfg.tta_flip = self.tta == Some(AugmentArg::Flip);
        cfg.tokens = TokenRequest {
            pool: self.pool.map(TokenPool::from),
            prefix: self.prefix_tokens,
        };
        cfg.int8 = match (self.precision, &self.calibrate) {
            (PrecisionArg::Int8, Some(dir)) => Some(Int8 {
                calibrate: dir.clone(),
                images: self.calibrate_images,
            }),
            (PrecisionArg::Int8, None) => {
                return Err(Error::Config(
                    "--precision int8 needs --calibrate DIR: photos like yours to measure activation ranges on".into(),
                ))
            }
            (PrecisionArg::Fp32, Some(_)) => {
                return Err(Error::Config(
                    "--calibrate goes with --precision int8".into(),
                ))
            }
            (PrecisionArg::Fp32, None) => None,
        };
        Ok(cfg)
    }
}

/// Extracts, then prints the summary line (and, on a cache hit, the files skipped back then).
pub fn run(a: &Args) -> Result<()> {
    let rep = a.display.term();
    let mut cfg = a.to_config()?;
    cfg.cancel = Some(crate::signal::stop_on_sigterm());
    if let Some(run) = &a.run {
        return run_shard(a, &cfg, run, &rep);
    }
    let s = extract(&cfg, &rep)?;
    if s.cache_hit {
        for (path, reason) in &s.skipped {
            eprintln!("warning: skipped {path}: {reason}");
        }
    }
    println!("{}", s.line());
    Ok(())
}

/// `extract --run RUN`: one shard, its index from the flag or the scheduler's environment.
fn run_shard(a: &Args, cfg: &ExtractConfig, run: &Path, rep: &Term) -> Result<()> {
    let (k, from) = a.shard.index()?;
    if !a.display.quiet {
        eprintln!("shard {k} (from {from}) of {}", run.display());
    }
    match extract_shard(cfg, run, k, rep)? {
        ShardOutcome::Done(s, m) => {
            println!("{}", s.line());
            println!(
                "shard {k} done: marker {}",
                headstart::runs::plan::marker_path(run, m.shard).display()
            );
        }
        ShardOutcome::AlreadyDone(m) => println!(
            "shard {k} was already done ({} images, marker {}); nothing to do",
            m.images,
            headstart::runs::plan::marker_path(run, k).display()
        ),
    }
    Ok(())
}
