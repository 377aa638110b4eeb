//! `headstart evaluate`: a head's metrics on a cached split, or on image folders (extracted on the
//! fly), as text or JSON, with plots and a markdown report on request.

use std::path::{Path, PathBuf};

use headstart::error::{Error, Result};
use headstart::infer::extract::ExtractConfig;
use headstart::report::evaluate::{evaluate, EvaluateConfig, Evaluation, Source};
use headstart::report::plot;

use crate::common::{model_path, path_with_suffix, term, to_json, ModelRunArgs, ProgressArg};

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
    // The report folder is an output: never inside the photos evaluated (its pictures would be
    // taken for photos next time), checked before any work.
    if let (Some(dir), Some(data)) = (&a.report, &a.data) {
        headstart::util::output::Output::new(&dir.join("report.md"))
            .input(data)
            .replace(headstart::util::output::Replace::Always)
            .check()
            .or_else(|e| match e {
                Error::Output { msg, .. } if msg.contains("does not exist") => Ok(()),
                e => Err(e),
            })?;
    }
    // Extraction on the fly shows its progress (not with --json) but not its details.
    let progress = if a.json {
        ProgressArg::None
    } else {
        ProgressArg::Auto
    };
    let e = evaluate(&cfg, &term(progress, false).without_details())?;
    if a.json {
        println!("{}", to_json(&e, true)?);
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
        print!("{}", e.metrics.report());
    }
    let mut pictures = Vec::new();
    if a.plot || a.report.is_some() {
        pictures = draw(&cfg.head, &e, a.report.as_deref())?;
        for p in &pictures {
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(dir) = &a.report {
        let path = report(&e, &pictures, dir)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The confusion matrix, (two classes) the ROC curve and the most confidently wrong images: into the
/// report folder, else beside the head file as `<head>.<split>.confusion.png` and so on.
fn draw(head: &Path, e: &Evaluation, report: Option<&Path>) -> Result<Vec<PathBuf>> {
    let place = |what: &str| match report {
        Some(dir) => dir.join(format!("evaluate.{}.{what}", e.split)),
        None => path_with_suffix(head, &format!("{}.{what}", e.split)),
    };
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    }
    let mut pictures = Vec::new();
    let cm = place("confusion.png");
    plot::confusion(&e.metrics, &cm)?;
    pictures.push(cm);
    if let (Some(auc), false) = (e.metrics.roc_auc, e.scores.is_empty()) {
        let roc = place("roc.png");
        let (s, p): (Vec<f64>, Vec<bool>) = e.scores.iter().copied().unzip();
        let class = e.metrics.per_class.get(1).map_or("1", |c| c.class.as_str());
        plot::roc(&s, &p, auc, class, &roc)?;
        pictures.push(roc);
    }
    if !e.metrics.top_losses.is_empty() {
        let top = place("top_losses.png");
        plot::top_losses(&e.metrics, Path::new(&e.data_root), &top)?;
        pictures.push(top);
    }
    Ok(pictures)
}

/// `DIR/report.md`: metrics, pictures and the JSON.
fn report(e: &Evaluation, pictures: &[PathBuf], dir: &Path) -> Result<PathBuf> {
    let imgs: String = pictures
        .iter()
        .map(|p| {
            format!(
                "![{0}]({0})\n",
                p.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    let json = to_json(e, true)?;
    plot::report(
        dir,
        &format!("Evaluation of {} on {} ({})", e.head, e.features, e.split),
        &[
            (
                "Metrics".into(),
                format!("```text\n{}```", e.metrics.report()),
            ),
            ("Pictures".into(), imgs),
            ("As JSON".into(), format!("```json\n{json}\n```")),
        ],
        true,
    )
}
