//! `headstart make-model`: a random-weight CNN as ONNX (a VGG-16 conv base, or a tiny test net).

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::data::preprocess::Layout;
use headstart::error::{Error, Result};
use headstart::onnx::{self, generate::CnnSpec};

use crate::common::{size_arg, LayoutArg};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ArchArg {
    Vgg16,
    Tiny,
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
    #[arg(long)]
    pub out: PathBuf,
}

impl Args {
    fn to_spec(&self) -> Result<CnnSpec> {
        let layout = Layout::from(self.layout);
        let mut spec = match self.arch {
            ArchArg::Vgg16 => CnnSpec::vgg16(layout),
            ArchArg::Tiny => CnnSpec::tiny(layout, Some((32, 32))),
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
        for kv in &self.metadata {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("--meta '{kv}': expected KEY=VALUE")))?;
            spec.metadata.push((k.to_string(), v.to_string()));
        }
        Ok(spec)
    }
}

pub fn run(a: &Args) -> Result<()> {
    onnx::save(&onnx::generate::cnn(&a.to_spec()?), &a.out)?;
    println!(
        "wrote {} ({:.1} MB)",
        a.out.display(),
        std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}
