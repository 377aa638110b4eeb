//! `headstart cut`: cut an ONNX model at a tensor (default: the conv base of a classifier).

use std::path::PathBuf;

use headstart::error::{Error, Result};
use headstart::onnx::{self, edit};

use crate::common::ModelArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArg,
    /// Tensor to make the output [default: the tensor feeding the classifier (include_top=False)].
    #[arg(long)]
    pub layer: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let model = a.model.path()?;
    let proto = onnx::load(&model)?;
    let (tensor, why) = match &a.layer {
        Some(l) => (l.clone(), "--layer".to_string()),
        None => edit::default_cut(&proto)
            .map(|(t, by)| (t, format!("default: the tensor read by {by}, the classifier's first op")))
            .ok_or_else(|| Error::model(&model, "no classifier head found after the last Conv; name a tensor with --layer (see `headstart inspect --layers`)"))?,
    };
    let cut = edit::cut(&proto, &tensor).map_err(|e| Error::model(&model, e))?;
    let before = proto.graph.as_ref().map_or(0, |g| g.node.len());
    let after = cut.graph.as_ref().map_or(0, |g| g.node.len());
    onnx::save_edited(&cut, &model, &a.out)?;
    let shapes = edit::infer_shapes(&cut, None);
    println!(
        "cut at '{tensor}' ({why}): {after} of {before} nodes kept, output {} -> {}",
        shapes
            .get(&tensor)
            .map(|d| edit::dims_text(d))
            .unwrap_or_else(|| "[?]".into()),
        a.out.display()
    );
    Ok(())
}
