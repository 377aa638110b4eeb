//! `headstart export`: one ONNX model, the base with the head appended (optionally the preprocessing).

use std::path::PathBuf;

use headstart::error::Result;
use headstart::onnx::export::{export, ExportConfig, IMAGE_INPUT, OUTPUT};

use crate::common::{model_path, AugmentArg};

#[derive(clap::Args, Debug)]
pub struct Args {
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
    /// Test-time augmentation inside the graph: average each image's probabilities with its
    /// left-right mirror's (as evaluate on `extract --tta flip` caches, and `score --tta flip`).
    #[arg(long, value_enum)]
    pub tta: Option<AugmentArg>,
}

pub fn run(a: &Args) -> Result<()> {
    let s = export(&ExportConfig {
        model: model_path(&a.model)?,
        head: a.head.clone(),
        out: a.out.clone(),
        with_preprocessing: a.with_preprocessing,
        tta_flip: a.tta == Some(AugmentArg::Flip),
    })?;
    println!(
        "wrote {} ({:.1} MB): base + {} head nodes, output '{OUTPUT}' [N, {}] = P({}){}",
        s.out.display(),
        s.bytes as f64 / 1e6,
        s.nodes_added,
        s.classes.len(),
        s.classes.join(", "),
        if a.with_preprocessing {
            format!("; input '{IMAGE_INPUT}' uint8 NHWC RGB")
        } else {
            String::new()
        }
    );
    if a.tta.is_some() {
        println!("each image is averaged with its left-right mirror inside the graph");
    }
    Ok(())
}
