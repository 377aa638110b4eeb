//! `headstart extract`: run a frozen base over image folders and cache its features.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::cache::Dtype;
use headstart::data::augment::AugmentSpec;
use headstart::error::{Error, Result};
use headstart::infer::extract::{extract, ExtractConfig};

use crate::common::{model_path, term, AugmentArg, ModelRunArgs, ProgressArg};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX base model: a file, or a name headstart fetches (`headstart models`).
    #[arg(long)]
    pub model: PathBuf,
    /// Image folder: DIR/<class>/* or DIR/{train,val,test}/<class>/*.
    #[arg(long)]
    pub data: PathBuf,
    /// Output HDF5 file.
    #[arg(long, default_value = "features.h5")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: ModelRunArgs,
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
    /// Test-time augmentation: also cache mirrored copies of the val and test images (splits
    /// val_flip, test_flip); evaluate averages the plain and mirrored predictions.
    #[arg(long, value_enum)]
    pub tta: Option<AugmentArg>,
}

impl Args {
    /// Validates into an [`ExtractConfig`].
    pub fn to_config(&self) -> Result<ExtractConfig> {
        let mut cfg = ExtractConfig::new(model_path(&self.model)?, &self.data, &self.out);
        self.run.apply(&mut cfg)?;
        cfg.decode_threads = self.decode_threads;
        cfg.dtype = match self.dtype {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
        };
        cfg.strict = self.strict;
        cfg.force = self.force;
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
        Ok(cfg)
    }
}

/// Extracts, then prints the summary line (and, on a cache hit, the files skipped back then).
pub fn run(a: &Args) -> Result<()> {
    let rep = term(a.progress, a.quiet);
    let s = extract(&a.to_config()?, &rep)?;
    if s.cache_hit {
        for (path, reason) in &s.skipped {
            eprintln!("warning: skipped {path}: {reason}");
        }
    }
    println!("{}", s.line());
    Ok(())
}
