//! `headstart quantize`: a static int8 (QDQ) copy of a base model, calibrated on your images.

use std::path::PathBuf;

use clap::ValueEnum;
use headstart::error::{Error, Result};
use headstart::infer::quantize::{quantize, Calibration, QuantizeConfig};

use crate::common::{model_path, DisplayArgs, ModelRunArgs};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The float ONNX base model: a file, or a name headstart fetches.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder of calibration images (your own data; searched recursively).
    #[arg(long)]
    pub calibrate: PathBuf,
    /// At most this many calibration images, spread over the folder.
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// How activation ranges are taken: minmax; percentile (clips outliers; see --percentile); or
    /// entropy (the clipping threshold with the smallest KL divergence, as TensorRT calibrates).
    #[arg(long, value_enum, default_value = "minmax")]
    pub method: MethodArg,
    /// The upper percentile kept with --method percentile (the lower one mirrors it).
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = 99.999)]
    pub percentile: f64,
    /// Node names kept in float (comma-separated), e.g. a first convolution that loses accuracy.
    #[arg(long)]
    pub keep_float: Option<String>,
    /// When the float vs int8 output cosine (mean over up to 64 calibration images) is below this,
    /// measure each node alone in int8 and keep the most damaging ones in float until it is reached.
    #[arg(value_parser = crate::common::finite_f64, long, default_value_t = headstart::infer::quantize::DEFAULT_TARGET_COSINE)]
    pub target_cosine: f64,
    /// Quantise every node (no automatic search; --keep-float still applies).
    #[arg(long)]
    pub all_int8: bool,
    /// The int8 model to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub model_run: ModelRunArgs,
    #[command(flatten)]
    pub display: DisplayArgs,
}

pub fn run(a: &Args) -> Result<()> {
    if !matches!(a.method, MethodArg::Percentile) && a.percentile != 99.999 {
        return Err(Error::Config(
            "--percentile goes with --method percentile".into(),
        ));
    }
    if a.all_int8 && a.target_cosine != headstart::infer::quantize::DEFAULT_TARGET_COSINE {
        return Err(Error::Config(
            "--target-cosine and --all-int8 contradict each other: --all-int8 runs no search"
                .into(),
        ));
    }
    let cfg = QuantizeConfig {
        model: model_path(&a.model)?,
        calibrate: a.calibrate.clone(),
        images: a.images,
        method: match a.method {
            MethodArg::Minmax => Calibration::MinMax,
            MethodArg::Percentile => Calibration::Percentile(a.percentile),
            MethodArg::Entropy => Calibration::Entropy,
        },
        out: a.out.clone(),
        keep_float: a
            .keep_float
            .as_deref()
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default(),
        target_cosine: (!a.all_int8).then_some(a.target_cosine),
        overrides: a.model_run.pre.to_overrides()?,
        runtime: a.model_run.runtime.to_config(),
        batch: a.model_run.batch,
    };
    let s = quantize(&cfg, &a.display.term())?;
    println!(
        "quantized {} nodes to int8 ({} kept in float) on {} calibration images in {:.1} s -> {}",
        s.quantized_nodes,
        s.kept_float.len(),
        s.images,
        s.seconds,
        s.out.display()
    );
    if let Some(c) = s.all_int8_cosine {
        println!(
            "every node in int8 gave cosine {c:.5}, below --target-cosine {}; kept in float, most damaging first (cosine with the node alone in int8):",
            a.target_cosine
        );
        for (name, c) in &s.auto_kept {
            println!("  {name}  {c:.5}");
        }
    }
    println!(
        "float vs int8 output on the calibration images: cosine mean {:.5}, min {:.5}",
        s.cosine.0, s.cosine.1
    );
    Ok(())
}
