//! `headstart classify`: top-k ImageNet classes (with names) of images, for a full classifier.

use std::path::PathBuf;

use headstart::error::Result;
use headstart::report::classify::{classify, ClassifyConfig};

use crate::common::{model_path, term, ModelRunArgs, ProgressArg};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An ONNX model with its classifier (e.g. efficientnet_lite0_imagenet.onnx).
    #[arg(long)]
    pub model: PathBuf,
    /// Image files and folders (walked recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Class names, one per line, in the model's output order [default: the ImageNet-1k names, built
    /// in].
    #[arg(long)]
    pub classes: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per image instead of text.
    #[arg(long)]
    pub jsonl: bool,
    /// Decoder threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub decode_threads: usize,
    #[command(flatten)]
    pub run: ModelRunArgs,
}

impl Args {
    /// Validates into a [`ClassifyConfig`].
    pub fn to_config(&self) -> Result<ClassifyConfig> {
        Ok(ClassifyConfig {
            model: model_path(&self.model)?,
            inputs: self.paths.clone(),
            classes: self.classes.clone(),
            top: self.top,
            batch: self.run.batch,
            decode_threads: self.decode_threads,
            runtime: self.run.runtime.to_config(),
            overrides: self.run.pre.to_overrides()?,
        })
    }
}

/// One line (or JSON object) per image; unreadable images are warnings and counted at the end.
pub fn run(a: &Args) -> Result<()> {
    let cfg = a.to_config()?;
    let mut failed = 0;
    classify(&cfg, &term(ProgressArg::None, false), &mut |c| {
        if a.jsonl {
            println!("{}", serde_json::to_string(&c).unwrap_or_default());
        } else if let Some(e) = &c.error {
            eprintln!("warning: {}: {e}", c.path);
        } else {
            let top: Vec<String> = c
                .top
                .iter()
                .map(|(i, n, p)| format!("{i} {n} {p:.3}"))
                .collect();
            println!("{}: {}", c.path, top.join(" | "));
        }
        failed += c.error.is_some() as usize;
    })?;
    if failed > 0 {
        eprintln!("{failed} images could not be read");
    }
    Ok(())
}
