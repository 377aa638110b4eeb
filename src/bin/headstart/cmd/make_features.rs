//! `headstart make-features`: a cache of seeded random features (benchmarks and tests; no model).

use std::path::PathBuf;

use headstart::cache::synthetic::{write_synthetic, SyntheticSpec};
use headstart::error::{Error, Result};

use crate::cmd::extract::DtypeArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Per-image feature shape, e.g. 512,7,7 (VGG-16's conv base, NCHW) or 1280.
    #[arg(long, default_value = "512,7,7")]
    pub shape: String,
    /// Images of one split as NAME=N; repeat it for more splits: --split train=2000 --split val=1000.
    #[arg(long = "split", default_values = ["train=2000", "val=1000"])]
    pub splits: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
    /// How far apart the classes are (0: pure noise).
    #[arg(value_parser = crate::common::finite_f32, long, default_value_t = 0.05)]
    pub separation: f32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Feature storage type (f16 halves the file).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing feature cache that is not a synthetic one (extracted from photos).
    #[arg(long)]
    pub force: bool,
}

impl Args {
    fn to_spec(&self) -> Result<SyntheticSpec> {
        let shape: Vec<usize> = self
            .shape
            .split(',')
            .map(|d| d.trim().parse().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::Config(format!(
                    "--shape '{}': expected positive integers like 512,7,7",
                    self.shape
                ))
            })?;
        let splits = self
            .splits
            .iter()
            .map(|sp| {
                sp.split_once('=')
                    .and_then(|(k, v)| Some((k.to_string(), v.parse::<usize>().ok()?)))
                    .ok_or_else(|| Error::Config(format!("--split '{sp}': expected NAME=N")))
            })
            .collect::<Result<_>>()?;
        Ok(SyntheticSpec {
            shape,
            splits,
            classes: self.classes,
            separation: self.separation,
            seed: self.seed,
            dtype: self.dtype.dtype(),
        })
    }
}

pub fn run(a: &Args) -> Result<()> {
    use headstart::util::output::{Output, Replace};
    // Random features replace random features: a cache extracted from photos (minutes or hours of
    // work) only with --force.
    let rule = if a.force {
        headstart::cache::replace_cache()
    } else {
        Replace::If {
            what: "a feature cache made by make-features (one extracted from photos is replaced only with --force)",
            check: &is_synthetic,
        }
    };
    let out = Output::new(&a.out).replace(rule);
    let meta = write_synthetic(&out, &a.to_spec()?)?;
    println!(
        "wrote {} ({} splits, shape {:?}, {})",
        a.out.display(),
        meta.splits.len(),
        meta.feature_shape,
        meta.dtype.name()
    );
    Ok(())
}

/// Whether `p` is a cache that `make-features` wrote.
fn is_synthetic(p: &std::path::Path) -> bool {
    headstart::cache::FeatureCache::open(p).is_ok_and(|c| c.meta.model_file == "synthetic")
}
