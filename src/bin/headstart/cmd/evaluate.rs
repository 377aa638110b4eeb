//! `headstart evaluate`: a head's metrics on a cached split, or on image folders (extracted on the
//! fly), as text or JSON, with plots, a markdown report and an HTML one on request.

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::infer::extract::ExtractConfig;
use headstart::report::evaluate::{evaluate, EvaluateConfig, Source};
use headstart::report::markdown;

use crate::common::{model_path, term, ModelRunArgs, ProgressArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The head file written by `train-head`.
    #[arg(long)]
    pub head: PathBuf,
    /// A feature cache to evaluate on, or a run folder (its merged cache; or give --model and --data).
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
    /// Ignore the mirrored copies of `extract --tta flip` (by default the plain and mirrored
    /// predictions are averaged when the cache has them).
    #[arg(long)]
    pub no_tta: bool,
    /// Accept features of another precision (int8, fp16) of the model the head was trained on.
    #[arg(long)]
    pub any_precision: bool,
    /// Write DIR/report.md (metrics, confusion matrix, top losses) with the plots.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write one self-contained HTML report: metrics, per-class table, the confusion matrix whose
    /// cells open their photos, the most confidently wrong photos, the learning curves.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub run: ModelRunArgs,
}

impl Args {
    /// Validates into an [`EvaluateConfig`].
    pub fn to_config(&self) -> Result<EvaluateConfig> {
        let source = match (&self.features, &self.model, &self.data) {
            (Some(f), None, None) => Source::Features {
                path: crate::common::features_or_run(f)?,
                split: self.split.clone(),
            },
            (None, Some(m), Some(d)) => {
                let mut ex = ExtractConfig::new(model_path(m)?, d, "features.h5");
                self.run.apply(&mut ex)?;
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
            tta: !self.no_tta,
            any_precision: self.any_precision,
        })
    }
}

/// Evaluates, prints the report (or JSON), then the plots and the report folder.
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    let mut inputs: Vec<&std::path::Path> = [Some(&a.head), a.features.as_ref(), a.data.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| p.as_path())
        .collect();
    // Report folders and pages are outputs: never inside the photos evaluated, nor the photos the
    // cache came from (their pictures would be taken for photos next time), checked before any
    // work.
    let caches: Vec<&std::path::Path> = a.features.iter().map(|p| p.as_path()).collect();
    if let Some(dir) = &a.report {
        headstart::report::folders::check_folder(dir, &inputs, &caches)?;
    }
    if a.plot {
        headstart::report::folders::check_plots_beside(&a.head, &inputs, &caches)?;
    }
    let photos = headstart::report::folders::photo_folders(&caches);
    inputs.extend(photos.iter().map(|p| p.as_path()));
    if let Some(h) = &a.html {
        headstart::report::html::check(h, &inputs)?;
    }
    // Extraction on the fly shows its progress (not with --json) but not its details.
    let progress = if a.json {
        ProgressArg::None
    } else {
        ProgressArg::Auto
    };
    let e = evaluate(&cfg, &term(progress, false).without_details())?;
    if a.json {
        println!("{}", headstart::report::to_json(&e, true)?);
    } else {
        println!(
            "head: {}\nfeatures: {} (split {}{}, {} images skipped at extraction)",
            e.head,
            e.features,
            e.split,
            if e.tta {
                ", averaged with its mirrored copies"
            } else {
                ""
            },
            e.skipped
        );
        print!("{}", e.report());
    }
    if a.plot || a.report.is_some() {
        for p in markdown::evaluation(&cfg.head, &e, a.report.as_deref())? {
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(h) = &a.html {
        let written = headstart::report::html::evaluation::write(&e, h, &inputs)?;
        eprint!("{}", written.line());
    }
    Ok(())
}
