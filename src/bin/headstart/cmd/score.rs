//! `headstart score`: one row of class probabilities per image, from base + head or an exported model.

use std::path::PathBuf;

use headstart::data::preprocess::Layout;
use headstart::error::{Error, Result};
use headstart::report::score::{score, ScoreConfig};
use headstart::runs::{score_shard, ShardOutcome};

use crate::common::{model_path, AugmentArg, DisplayArgs, ModelRunArgs, ShardArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX base model (or a model written by `export`, then without --head).
    #[arg(long, required_unless_present = "features")]
    pub model: Option<PathBuf>,
    /// The head file written by `train-head`.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Image files and folders (walked recursively).
    #[arg(required_unless_present_any = ["run", "features"], conflicts_with_all = ["run", "features"])]
    pub paths: Vec<PathBuf>,
    /// Score the rows of a feature cache (or a run folder's merged cache) with --head instead of
    /// images: no model runs; rows are named by the cache's paths, read and written block by block.
    #[arg(
        long,
        value_name = "CACHE",
        requires = "head",
        conflicts_with_all = ["model", "run", "tta", "decode_threads", "batch", "PreprocessArgs", "RuntimeArgs", "ShardArgs"]
    )]
    pub features: Option<PathBuf>,
    /// With --features: the split scored [default: test, else val, else train].
    #[arg(long, requires = "features")]
    pub split: Option<String>,
    /// With --features: accept features of another precision (int8, fp16) of the model the head
    /// was trained on.
    #[arg(long, requires = "features")]
    pub any_precision: bool,
    /// Output file: .csv, or .jsonl for JSON lines [default: CSV on stdout].
    #[arg(long, conflicts_with = "run")]
    pub out: Option<PathBuf>,
    /// Score one shard of a planned run (`headstart plan`): rows go to RUN/scores/shard-KKKKK.csv
    /// (an interrupted attempt continues), a marker to RUN/scored/; `merge RUN --scores F` joins them.
    #[arg(long)]
    pub run: Option<PathBuf>,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Write only the K most probable classes of each image.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Two classes: predict the second when its probability is at least this (default: the larger).
    #[arg(value_parser = crate::common::finite_f32, long)]
    pub threshold: Option<f32>,
    /// Skip the files already in --out (an interrupted run continues).
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Replace an existing --out (without it, or --resume, an existing file is refused).
    #[arg(long, requires = "out", conflicts_with = "resume")]
    pub force: bool,
    /// Test-time augmentation: score each image and its left-right mirror and write the mean (for a
    /// head; an export made with `--tta flip` does this inside).
    #[arg(long, value_enum)]
    pub tta: Option<AugmentArg>,
    #[command(flatten)]
    pub model_run: ModelRunArgs,
    /// Image decoding threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    #[command(flatten)]
    pub display: DisplayArgs,
}

impl Args {
    /// Validates into a [`ScoreConfig`].
    pub fn to_config(&self) -> Result<ScoreConfig> {
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
        let model = match &self.model {
            Some(m) => model_path(m)?,
            None => PathBuf::new(),
        };
        let mut cfg = ScoreConfig::new(model, self.head.clone(), self.paths.clone());
        if let Some(f) = &self.features {
            cfg.features = Some(crate::common::features_or_run(f)?);
            cfg.split = self.split.clone();
            cfg.any_precision = self.any_precision;
        }
        cfg.out = self.out.clone();
        cfg.top_k = self.top_k;
        cfg.threshold = self.threshold;
        cfg.resume = self.resume;
        cfg.force = self.force;
        cfg.tta_flip = self.tta == Some(AugmentArg::Flip);
        cfg.batch = self.model_run.batch;
        cfg.runtime = self.model_run.runtime.to_config();
        cfg.decode_threads = self.decode_threads;
        cfg.overrides = self.model_run.pre.to_overrides()?;
        cfg.layout = self.model_run.pre.layout.map(Layout::from);
        Ok(cfg)
    }
}

/// Scores: rows to the output, the summary line to stderr.
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    if let Some(run) = &a.run {
        let (k, from) = a.shard.index()?;
        match score_shard(&cfg, run, k, &a.display.term())? {
            ShardOutcome::Done(s, m) => eprintln!(
                "{} (shard {k}, from {from})",
                s.line(Some(&run.join(&m.output)))
            ),
            ShardOutcome::AlreadyDone(m) => eprintln!(
                "shard {k} was already scored ({} images); nothing to do",
                m.images
            ),
        }
        return Ok(());
    }
    let s = score(&cfg, &a.display.term())?;
    eprintln!("{}", s.line(cfg.out.as_deref()));
    Ok(())
}
