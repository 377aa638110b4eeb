//! The commands behind the CLI, as library calls that print their results.

use std::time::Instant;

use crate::cache::FeatureCache;
use crate::cli::{size_arg, ArchArg, BenchInferArgs, MakeModelArgs};
use crate::error::{Error, Result};
use crate::extract::{extract, ExtractConfig};
use crate::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use crate::onnx::{self, generate::CnnSpec};
use crate::preprocess::Layout;

/// `headstart extract`: runs extraction and prints the summary line (and the skipped files).
pub fn run_extract(cfg: &ExtractConfig) -> Result<()> {
    let s = extract(cfg)?;
    for (path, reason) in &s.skipped {
        if s.cache_hit {
            eprintln!("warning: skipped {path}: {reason}");
        }
    }
    println!("{}", s.line());
    Ok(())
}

/// `headstart summary`: what a cache holds.
pub fn run_summary(path: &std::path::Path) -> Result<()> {
    let c = FeatureCache::open(path)?;
    let m = &c.meta;
    println!(
        "cache: {} (headstart {})",
        path.display(),
        m.headstart_version
    );
    println!("model: {} sha256 {}", m.model_file, m.model_sha256);
    println!(
        "input: {}x{} {}; output '{}' per image {:?} ({})",
        m.input_size.1,
        m.input_size.0,
        m.layout,
        m.output_name,
        m.feature_shape,
        m.dtype.name()
    );
    println!("preprocess: {}", m.preprocess);
    println!("classes: {}", m.classes.join(", "));
    for s in &m.splits {
        let d = c.read_split(s)?;
        let mut counts = vec![0usize; m.classes.len()];
        for &l in &d.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        let per: Vec<String> = m
            .classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
        for &v in &d.features {
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v as f64;
        }
        let mean = if d.features.is_empty() {
            0.0
        } else {
            sum / d.features.len() as f64
        };
        println!(
            "split {s}: {} images ({}), {} skipped; features min {lo:.4} max {hi:.4} mean {mean:.4}",
            d.len(),
            per.join(", "),
            d.skipped.len()
        );
        for (p, r) in &d.skipped {
            println!("  skipped {p}: {r}");
        }
    }
    Ok(())
}

/// `headstart make-model`.
pub fn run_make_model(a: &MakeModelArgs) -> Result<()> {
    let layout = Layout::from(a.layout);
    let mut spec = match a.arch {
        ArchArg::Vgg16 => CnnSpec::vgg16(layout),
        ArchArg::Tiny => CnnSpec::tiny(layout, Some((32, 32))),
    };
    if let Some(s) = &a.size {
        spec.size = if s == "dynamic" {
            None
        } else {
            {
                let (h, w) = size_arg("--size", s)?;
                Some((h as usize, w as usize))
            }
        };
    }
    if let Some(seed) = a.seed {
        spec.seed = seed;
    }
    spec.global_pool = a.pool;
    for kv in &a.metadata {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--meta '{kv}': expected KEY=VALUE")))?;
        spec.metadata.push((k.to_string(), v.to_string()));
    }
    onnx::save(&onnx::generate::cnn(&spec), &a.out)?;
    println!(
        "wrote {} ({:.1} MB)",
        a.out.display(),
        std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

/// `headstart bench-infer`: ONNX Runtime alone, on random preprocessed tensors in memory.
pub fn run_bench_infer(a: &BenchInferArgs) -> Result<()> {
    let mut model = BaseModel::open(
        &a.model,
        a.runtime.device.into(),
        a.runtime.threads,
        a.runtime.ort_lib.as_deref(),
        None,
    )?;
    let overrides = PreprocessOverrides {
        size: a
            .size
            .as_deref()
            .map(|s| size_arg("--size", s))
            .transpose()?,
        mode: Some(crate::preprocess::Mode::Raw),
        ..Default::default()
    };
    let pre = resolve_preprocess(&model.info, &overrides)?.preprocess;
    let batch = a.batch.max(1);
    let mut state = 0x2545F4914F6CDD1Du64;
    let data: Vec<f32> = (0..batch * pre.len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
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

/// `headstart evaluate`: the metrics report, or one JSON object with `--json`.
pub fn run_evaluate(cfg: &crate::evaluate::EvaluateConfig, json: bool) -> Result<()> {
    let e = crate::evaluate::evaluate(cfg)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&e).map_err(|x| Error::Config(x.to_string()))?
        );
    } else {
        println!(
            "head: {}\nfeatures: {} (split {}, {} images skipped at extraction)",
            e.head, e.features, e.split, e.skipped
        );
        print!("{}", e.metrics.report());
    }
    Ok(())
}
