//! `headstart bench-decode`: decoding and preprocessing alone (no model run), images per second for
//! each decode mode and number of worker threads: the ceiling that decoding puts on `extract`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use headstart::data::decode::decode_for;
use headstart::data::preprocess::{Decode, Preprocess, Preprocessor};
use headstart::data::scan::image_files_checked;
use headstart::error::{Error, Result};
use headstart::infer::model::{resolve_preprocess, BaseModel};

use crate::common::{model_path, PreprocessArgs, RuntimeArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model whose preprocessing (input size, resize) is used.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder of images (searched recursively).
    #[arg(long)]
    pub data: PathBuf,
    /// Worker thread counts to time, comma-separated.
    #[arg(long, default_value = "1,2")]
    pub workers: String,
    /// Decode modes to time, comma-separated (fast, exact).
    #[arg(long = "modes", default_value = "exact,fast")]
    pub modes: String,
    /// Time at most this many images per setting.
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn list<T>(flag: &str, s: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(|x| {
            parse(x.trim()).ok_or_else(|| Error::Config(format!("{flag} '{s}': bad entry '{x}'")))
        })
        .collect()
}

pub fn run(a: &Args) -> Result<()> {
    let workers = list("--workers", &a.workers, |x| {
        x.parse::<usize>().ok().filter(|&n| n > 0)
    })?;
    let modes = list("--modes", &a.modes, Decode::parse)?;
    let model = BaseModel::open(&model_path(&a.model)?, &a.runtime.to_config(), None)?;
    let base = resolve_preprocess(&model.info, &a.preprocess.to_overrides()?)?.preprocess;
    let (mut files, _) = image_files_checked(&a.data)?;
    files.truncate(a.images);
    if files.is_empty() {
        return Err(Error::dataset(&a.data, "no image files"));
    }
    println!(
        "decode + resize + normalise of {} images from {} ({}x{}), no model run",
        files.len(),
        a.data.display(),
        base.size.1,
        base.size.0
    );
    for &decode in &modes {
        let pre = Preprocess { decode, ..base };
        for &n in &workers {
            let (secs, failed) = time_decode(&pre, &files, n);
            println!(
                "decode {decode:<5} workers {n:>2}: {:>8.1} img/s  ({} images in {secs:.2} s{})",
                files.len() as f64 / secs,
                files.len(),
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

/// Seconds to decode and preprocess `files` on `workers` threads, and how many failed.
fn time_decode(pre: &Preprocess, files: &[PathBuf], workers: usize) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut pp = Preprocessor::new(*pre);
                let mut out = vec![0f32; pre.len()];
                while let Some(f) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let ok = decode_for(f, pre).and_then(|d| pp.apply_decoded(&d, &mut out));
                    if ok.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (t.elapsed().as_secs_f64(), failed.into_inner())
}
