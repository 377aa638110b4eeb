//! `headstart make-model`: a random-weight model as ONNX: a VGG-16 conv base or a tiny test CNN,
//! or a vision transformer (a tiny one for tests, or ViT-S/14's shape for speed runs) in the
//! torch-export or the hub-export layout.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use headstart::data::preprocess::Layout;
use headstart::error::{Error, Result};
use headstart::onnx::generate::vit::{externalize, vit, Style, VitSpec};
use headstart::onnx::{self, generate::CnnSpec};
use headstart::util::output::{write_together, Output, Replace, WriteTmp};
use headstart::util::paths::resolve;

use crate::common::{size_arg, LayoutArg};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ArchArg {
    Vgg16,
    Tiny,
    /// A tiny ViT: 32 px, patches of 8, width 32, 2 blocks.
    Vit,
    /// A ViT with DINOv2 ViT-S/14's shape (224 px, 257 tokens of 384, 12 blocks).
    VitS14,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum StyleArg {
    /// As torch.onnx.export writes it: LayerNormalization nodes, constant reshapes.
    Torch,
    /// As the hub's transformers.js exports: pixel_values, layer norm spelled out, Shape chains,
    /// outputs last_hidden_state and pooler_output.
    Hub,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_enum)]
    pub arch: ArchArg,
    #[arg(long, value_enum, default_value = "nchw")]
    pub layout: LayoutArg,
    /// Input size WxH (tiny only; "dynamic" for a dynamic size).
    #[arg(long)]
    pub size: Option<String>,
    /// Weight seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append a global average pool (features [N, C]).
    #[arg(long)]
    pub pool: bool,
    /// metadata_props entries KEY=VALUE.
    #[arg(long = "meta")]
    pub metadata: Vec<String>,
    /// ViTs: the exporter's layout.
    #[arg(long, value_enum, default_value = "torch")]
    pub style: StyleArg,
    /// ViTs: register tokens after the class token.
    #[arg(long, default_value_t = 0)]
    pub registers: usize,
    /// ViTs: a classifier on the class token with this many classes (output `logits`).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Keep the weights in an external data file beside the model (`<out>_data`), as exporters do
    /// for large models.
    #[arg(long)]
    pub external_data: bool,
    #[arg(long)]
    pub out: PathBuf,
}

impl Args {
    fn to_spec(&self) -> Result<CnnSpec> {
        let layout = Layout::from(self.layout);
        let mut spec = match self.arch {
            ArchArg::Vgg16 => CnnSpec::vgg16(layout),
            _ => CnnSpec::tiny(layout, Some((32, 32))),
        };
        if let Some(s) = &self.size {
            spec.size = if s == "dynamic" {
                None
            } else {
                let (h, w) = size_arg("--size", s)?;
                Some((h as usize, w as usize))
            };
        }
        if let Some(seed) = self.seed {
            spec.seed = seed;
        }
        spec.global_pool = self.pool;
        spec.metadata = self.meta()?;
        Ok(spec)
    }
}

impl Args {
    /// The `--meta KEY=VALUE` entries.
    fn meta(&self) -> Result<Vec<(String, String)>> {
        self.metadata
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| Error::Config(format!("--meta '{kv}': expected KEY=VALUE")))
            })
            .collect()
    }

    fn vit_spec(&self) -> Result<Option<VitSpec>> {
        let style = match self.style {
            StyleArg::Torch => Style::Torch,
            StyleArg::Hub => Style::Hub,
        };
        let mut spec = match self.arch {
            ArchArg::Vit => VitSpec::tiny(style),
            ArchArg::VitS14 => VitSpec::small14(style),
            _ => return Ok(None),
        };
        if let Some(s) = &self.size {
            let (h, w) = size_arg("--size", s)?;
            if h != w {
                return Err(Error::Config(format!("--size {s}: a ViT here is square")));
            }
            spec.size = h as usize;
        }
        if let Some(seed) = self.seed {
            spec.seed = seed;
        }
        spec.registers = self.registers;
        spec.classes = self.classes;
        spec.metadata = self.meta()?;
        Ok(Some(spec))
    }
}

pub fn run(a: &Args) -> Result<()> {
    // The model and its data file are written together: a failure of either leaves both as they
    // were (the old model used to be left pointing at new weights). Checked before any work.
    let out = Output::new(&a.out).replace(onnx::replace_model());
    out.check()?;
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let data_path = a.out.with_file_name(format!("{name}_data"));
    // Replaced only when it is the data file of the model being replaced.
    let own = onnx::external_data_files(&a.out)
        .iter()
        .any(|f| resolve(f) == resolve(&data_path));
    let data_out = Output::new(&data_path)
        .input(&a.out)
        .replace(if own { Replace::Always } else { Replace::Never })
        .hint("it is not the data file of the model at --out (remove it if it is a leftover)");
    if a.external_data {
        data_out.check()?;
    }
    let mut model = match a.vit_spec()? {
        Some(spec) => vit(&spec).map_err(Error::Config)?,
        None => onnx::generate::cnn(&a.to_spec()?),
    };
    let data = a
        .external_data
        .then(|| externalize(&mut model, &format!("{name}_data")));
    let bytes = onnx::encode(&model);
    let mut parts: Vec<(&Output, WriteTmp)> = Vec::new();
    if let Some(d) = &data {
        parts.push((
            &data_out,
            Box::new(move |tmp: &Path| std::fs::write(tmp, d).map_err(|e| Error::io(tmp, e))),
        ));
    }
    parts.push((
        &out,
        Box::new(|tmp: &Path| std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))),
    ));
    write_together(parts)?;
    println!(
        "wrote {} ({:.1} MB)",
        a.out.display(),
        std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}
