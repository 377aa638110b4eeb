//! `headstart bench-infer`: ONNX Runtime alone on random preprocessed tensors held in memory (the
//! reference that `extract`'s end-to-end speed is compared with).

use std::path::PathBuf;
use std::time::Instant;

use headstart::data::preprocess::Mode;
use headstart::error::{Error, Result};
use headstart::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use headstart::util::rng::Rng;

use crate::common::{model_path, opt_size, RuntimeArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Images to time (after one warm-up batch).
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// Input size WxH for dynamic models.
    #[arg(long)]
    pub size: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(a: &Args) -> Result<()> {
    if a.batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let mut model = BaseModel::open(&model_path(&a.model)?, &a.runtime.to_config(), None)?;
    let overrides = PreprocessOverrides {
        size: opt_size("--size", a.size.as_deref())?,
        mode: Some(Mode::Raw),
        ..Default::default()
    };
    let pre = resolve_preprocess(&model.info, &overrides)?.preprocess;
    let batch = a.batch;
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let data: Vec<f32> = (0..batch * pre.len())
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
        .collect();
    model.run(&pre, &data, batch)?; // warm-up
    let t = Instant::now();
    let mut done = 0;
    while done < a.images {
        let n = batch.min(a.images - done);
        model.run(&pre, &data[..n * pre.len()], n)?;
        done += n;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ort-alone: {done} images in {secs:.2} s = {:.2} img/s (batch {batch}, {:?})",
        done as f64 / secs,
        model.device
    );
    Ok(())
}
