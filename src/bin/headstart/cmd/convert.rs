//! `headstart convert`: a float16 copy of a model for GPUs (`--fp16`), inputs and outputs kept float32.

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::onnx::fp16;

use crate::common::ModelArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// Write float16 weights and activations (the only conversion so far; required).
    #[arg(long)]
    pub fp16: bool,
    /// The model to write.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    if !a.fp16 {
        return Err(Error::Config(
            "convert needs a target precision: --fp16".into(),
        ));
    }
    let model = a.model.path()?;
    if model.canonicalize().ok() == a.out.canonicalize().ok() {
        return Err(Error::Config(format!(
            "--out {} is the model itself: write the float16 copy to another file",
            a.out.display()
        )));
    }
    let s = fp16::convert_file(&model, &a.out)?;
    println!(
        "float16: {} tensors converted, {} kept float32, {} casts at the inputs and outputs, {} nodes in float32 (norm statistics, softmax){} -> {}",
        s.converted,
        s.kept_float,
        s.casts,
        s.float32_nodes,
        if s.clamped > 0 {
            format!(", {} weights beyond ±65504 clamped", s.clamped)
        } else {
            String::new()
        },
        a.out.display()
    );
    Ok(())
}
