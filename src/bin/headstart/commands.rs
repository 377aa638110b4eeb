//! The commands behind the CLI, as library calls that print their results.

use std::time::Instant;

use headstart::cache::FeatureCache;
use crate::args::{size_arg, ArchArg, BenchInferArgs, MakeFeaturesArgs, MakeModelArgs};
use headstart::error::{Error, Result};
use headstart::infer::extract::{extract, ExtractConfig};
use headstart::infer::model::{resolve_preprocess, BaseModel, PreprocessOverrides};
use headstart::onnx::{self, generate::CnnSpec};
use headstart::data::preprocess::Layout;

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
        mode: Some(headstart::data::preprocess::Mode::Raw),
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

/// `headstart evaluate`: the metrics report, or one JSON object with `--json`; plots and a report.
pub fn run_evaluate(
    cfg: &headstart::report::evaluate::EvaluateConfig,
    json: bool,
    plot: bool,
    report: Option<&std::path::Path>,
) -> Result<()> {
    let e = headstart::report::evaluate::evaluate(cfg)?;
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
    let mut pictures = Vec::new();
    if plot || report.is_some() {
        // Into the report folder, else beside the head file: <head>.<split>.confusion.png.
        let place = |what: &str| match report {
            Some(dir) => dir.join(format!("evaluate.{}.{what}", e.split)),
            None => path_with_suffix(&cfg.head, &format!("{}.{what}", e.split)),
        };
        if let Some(dir) = report {
            std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
        }
        let cm = place("confusion.png");
        headstart::report::plot::confusion(&e.metrics, &cm)?;
        pictures.push(cm);
        if let (Some(auc), false) = (e.metrics.roc_auc, e.scores.is_empty()) {
            let roc = place("roc.png");
            let (s, p): (Vec<f64>, Vec<bool>) = e.scores.iter().copied().unzip();
            let class = e.metrics.per_class.get(1).map_or("1", |c| c.class.as_str());
            headstart::report::plot::roc(&s, &p, auc, class, &roc)?;
            pictures.push(roc);
        }
        for p in &pictures {
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(dir) = report {
        let imgs: String = pictures
            .iter()
            .map(|p| {
                format!(
                    "![{0}]({0})\n",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
            .collect();
        let json = serde_json::to_string_pretty(&e).map_err(|x| Error::Config(x.to_string()))?;
        let path = headstart::report::plot::report(
            dir,
            &format!("Evaluation of {} on {} ({})", e.head, e.features, e.split),
            &[
                (
                    "Metrics".into(),
                    format!("```text\n{}```", e.metrics.report()),
                ),
                ("Pictures".into(), imgs),
                ("As JSON".into(), format!("```json\n{json}\n```")),
            ],
            true,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `head.h5` + `x.png` -> `head.x.png` beside it.
fn path_with_suffix(p: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!("{stem}.{suffix}"))
}

/// `headstart train-head`, with `--plot` and `--report`.
pub fn run_train_head(
    cfg: &headstart::head::fit::TrainHeadConfig,
    plot: bool,
    report: Option<&std::path::Path>,
) -> Result<()> {
    let s = headstart::head::fit::train_head(cfg)?;
    // --plot: beside the head file; --report: into its folder (both when both are given).
    let mut curves = Vec::new();
    if plot {
        curves.push(path_with_suffix(&cfg.out, "curves.png"));
    }
    if let Some(dir) = report {
        std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
        curves.push(dir.join("curves.png"));
    }
    for c in &curves {
        headstart::report::plot::learning_curves(&s.history, c)?;
        eprintln!("wrote {}", c.display());
    }
    if let Some(dir) = report {
        let head = headstart::head::file::Head::load(&cfg.out)?;
        let training: serde_json::Value = serde_json::from_str(&head.training).unwrap_or_default();
        let mut table = String::from("| epoch | loss | accuracy | val_loss | val_accuracy | lr | seconds |\n|---|---|---|---|---|---|---|\n");
        let o = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        for r in &s.history.epochs {
            table += &format!(
                "| {} | {:.4} | {:.4} | {} | {} | {:.2e} | {:.2} |\n",
                r.epoch,
                r.loss,
                r.accuracy,
                o(r.val_loss),
                o(r.val_accuracy),
                r.lr,
                r.seconds
            );
        }
        let path = headstart::report::plot::report(
            dir,
            &format!("train-head: {}", cfg.out.display()),
            &[
                (
                    "Run".into(),
                    format!(
                        "- features: `{}`\n- base model: `{}` (sha256 `{}`)\n- preprocessing: {}\n- classes: {}\n- head: `{}` ({}), pool {}\n- rows: {} train, {} validation\n- kept epoch {} of {}{}\n- {:.1} s",
                        cfg.features.display(),
                        head.base.model_file,
                        head.base.model_sha256,
                        head.base.preprocess,
                        head.classes.join(", "),
                        head.spec,
                        head.kind.name(),
                        head.pool.name(),
                        s.train_rows,
                        s.val_rows,
                        s.history.kept_epoch,
                        s.history.epochs.len(),
                        if s.history.stopped_early { " (stopped early)" } else { "" },
                        s.seconds
                    ),
                ),
                ("Settings".into(), format!("```json\n{}\n```", serde_json::to_string_pretty(&training["settings"]).unwrap_or_default())),
                ("Learning curves".into(), "![curves](curves.png)".into()),
                ("History".into(), table),
            ],
            false,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `headstart score`: rows to the output, the summary line to stderr.
pub fn run_score(cfg: &headstart::report::score::ScoreConfig) -> Result<()> {
    let s = headstart::report::score::score(cfg)?;
    eprintln!("{}", s.line(cfg.out.as_deref()));
    Ok(())
}

/// `headstart export`.
pub fn run_export(a: &crate::args::ExportArgs) -> Result<()> {
    let s = headstart::onnx::export::export(&headstart::onnx::export::ExportConfig {
        model: a.model.clone(),
        head: a.head.clone(),
        out: a.out.clone(),
        with_preprocessing: a.with_preprocessing,
    })?;
    println!(
        "wrote {} ({:.1} MB): base + {} head nodes, output '{}' [N, {}] = P({}){}",
        s.out.display(),
        s.bytes as f64 / 1e6,
        s.nodes_added,
        headstart::onnx::export::OUTPUT,
        s.classes.len(),
        s.classes.join(", "),
        if a.with_preprocessing {
            format!("; input '{}' uint8 NHWC RGB", headstart::onnx::export::IMAGE_INPUT)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `headstart inspect`.
pub fn run_inspect(a: &crate::args::InspectArgs) -> Result<()> {
    use headstart::onnx::edit;
    let proto = onnx::load(&a.model)?;
    let size = a
        .size
        .as_deref()
        .map(|s| size_arg("--size", s))
        .transpose()?;
    let model = BaseModel::open(
        &a.model,
        headstart::infer::runtime::Device::Cpu,
        a.runtime.threads,
        a.runtime.ort_lib.as_deref(),
        None,
    )?;
    let info = &model.info;
    let shapes = edit::infer_shapes(
        &proto,
        size.or(info.size).map(|(h, w)| (h as i64, w as i64)),
    );
    let opset = proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty())
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    println!(
        "model: {} ({:.1} MB, opset {opset}, IR {}, producer '{}')",
        a.model.display(),
        std::fs::metadata(&a.model).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        proto.ir_version,
        proto.producer_name
    );
    println!("{}", info.describe());
    match &info.preset {
        Some(p) => println!(
            "preset: {} (matched by {})",
            p.name,
            if info.metadata.is_empty() {
                "graph signature"
            } else {
                "metadata or graph signature"
            }
        ),
        None => println!("preset: none matched"),
    }
    match resolve_preprocess(
        info,
        &PreprocessOverrides {
            size,
            ..Default::default()
        },
    ) {
        Ok(r) => println!(
            "preprocessing: {}  [{}]",
            r.preprocess.describe(),
            r.sources.join("; ")
        ),
        Err(e) => println!("preprocessing: unknown ({e})"),
    }
    let g = proto.graph.as_ref();
    let nodes = g.map_or(0, |g| g.node.len());
    let total_macs: i64 = g.map_or(0, |g| g.node.iter().map(|n| edit::macs(n, &shapes)).sum());
    let at = size
        .or(info.size)
        .map_or("the graph's input size".to_string(), |(h, w)| {
            format!("{w}x{h}")
        });
    println!(
        "parameters: {:.2} M; multiply-adds at {at}: {:.3} G; {nodes} nodes",
        edit::parameter_count(&proto) as f64 / 1e6,
        total_macs as f64 / 1e9
    );
    let mut ops: Vec<(String, usize)> = onnx::op_counts(&proto).into_iter().collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1));
    println!(
        "ops: {}",
        ops.iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match edit::default_cut(&proto) {
        Some((t, by)) => println!(
            "conv base (include_top=False): tensor '{t}' {} (read by {by}); `headstart cut` writes it",
            shapes.get(&t).map(|d| headstart::onnx::edit::dims_text(d)).unwrap_or_default()
        ),
        None => println!("conv base: no classifier head found after the last Conv (already a feature extractor)"),
    }
    if !info.metadata.is_empty() {
        println!("metadata_props:");
        for (k, v) in &info.metadata {
            println!("  {k} = {v}");
        }
    }
    if a.layers {
        println!(
            "\n{:<40} {:<20} {:<52} {:>12}",
            "node", "op", "output [shape]", "mult-adds"
        );
        for (name, op, out, m) in edit::layers(&proto, &shapes) {
            println!("{name:<40} {op:<20} {out:<52} {m:>12}");
        }
    }
    Ok(())
}

/// `headstart cut`.
pub fn run_cut(a: &crate::args::CutArgs) -> Result<()> {
    use headstart::onnx::edit;
    let proto = onnx::load(&a.model)?;
    let (tensor, why) = match &a.layer {
        Some(l) => (l.clone(), "--layer".to_string()),
        None => edit::default_cut(&proto)
            .map(|(t, by)| (t, format!("default: the tensor read by {by}, the classifier's first op")))
            .ok_or_else(|| Error::model(&a.model, "no classifier head found after the last Conv; name a tensor with --layer (see `headstart inspect --layers`)"))?,
    };
    let cut = edit::cut(&proto, &tensor).map_err(|e| Error::model(&a.model, e))?;
    let before = proto.graph.as_ref().map_or(0, |g| g.node.len());
    let after = cut.graph.as_ref().map_or(0, |g| g.node.len());
    onnx::save_edited(&cut, &a.model, &a.out)?;
    let shapes = edit::infer_shapes(&cut, None);
    println!(
        "cut at '{tensor}' ({why}): {after} of {before} nodes kept, output {} -> {}",
        shapes
            .get(&tensor)
            .map(|d| headstart::onnx::edit::dims_text(d))
            .unwrap_or_else(|| "[?]".into()),
        a.out.display()
    );
    Ok(())
}

/// `headstart classify`: one line (or JSON object) per image.
pub fn run_classify(a: &crate::args::ClassifyArgs) -> Result<()> {
    if a.batch == 0 || a.top == 0 {
        return Err(Error::Config("--batch and --top must be at least 1".into()));
    }
    let cfg = headstart::report::classify::ClassifyConfig {
        model: a.model.clone(),
        inputs: a.paths.clone(),
        classes: a.classes.clone(),
        top: a.top,
        batch: a.batch,
        threads: a.runtime.threads,
        device: a.runtime.device.into(),
        ort_lib: a.runtime.ort_lib.clone(),
        overrides: a.pre.to_overrides()?,
    };
    let mut failed = 0;
    headstart::report::classify::classify(&cfg, &mut |c| {
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
/// `headstart make-features`: a cache of seeded random ReLU-like features; class `c` adds
/// `separation` to every `classes`-th feature starting at `c`, so heads can learn it.
pub fn run_make_features(a: &MakeFeaturesArgs) -> Result<()> {
    let shape: Vec<usize> = a
        .shape
        .split(',')
        .map(|d| d.trim().parse().ok().filter(|&d| d > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            Error::Config(format!(
                "--shape '{}': expected positive integers like 512,7,7",
                a.shape
            ))
        })?;
    if a.classes < 2 {
        return Err(Error::Config("--classes must be at least 2".into()));
    }
    let row: usize = shape.iter().product();
    let mut rng = headstart::util::rng::Rng(a.seed);
    let classes: Vec<String> = (0..a.classes).map(|c| format!("class{c}")).collect();
    let mut splits = Vec::new();
    for sp in &a.splits {
        let (name, n) = sp
            .split_once('=')
            .and_then(|(k, v)| Some((k.to_string(), v.parse::<usize>().ok()?)))
            .ok_or_else(|| Error::Config(format!("--split '{sp}': expected NAME=N")))?;
        let labels: Vec<u32> = (0..n).map(|i| (i % a.classes) as u32).collect();
        let mut features = Vec::with_capacity(n * row);
        for &l in &labels {
            for j in 0..row {
                let shift = if j % a.classes == l as usize {
                    a.separation
                } else {
                    0.0
                };
                features.push((rng.normal() + shift).max(0.0));
            }
        }
        let paths = (0..n)
            .map(|i| format!("{name}/{}/{i}.jpg", classes[labels[i] as usize]))
            .collect();
        splits.push(headstart::cache::SplitData {
            name,
            features,
            labels,
            paths,
            skipped: vec![],
        });
    }
    let meta = headstart::cache::CacheMeta {
        classes,
        model_file: "synthetic".into(),
        model_sha256: format!("synthetic-seed-{}", a.seed),
        input_size: (224, 224),
        layout: "NCHW".into(),
        preprocess: "synthetic".into(),
        color_order: "RGB".into(),
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: "squash".into(),
        interpolation: "bilinear".into(),
        output_name: "features".into(),
        feature_shape: shape,
        dtype: headstart::cache::Dtype::F32,
        headstart_version: env!("CARGO_PKG_VERSION").into(),
        fingerprint: String::new(),
        data_root: String::new(),
        splits: splits.iter().map(|s| s.name.clone()).collect(),
    };
    headstart::cache::write_arrays(&a.out, &meta, &splits)?;
    println!(
        "wrote {} ({} splits, shape {:?})",
        a.out.display(),
        splits.len(),
        meta.feature_shape
    );
    Ok(())
}

/// `headstart finetune`: runs the fine-tune (it prints its own tables) and a closing summary.
pub fn run_finetune(cfg: &headstart::finetune::FinetuneConfig, json: bool) -> Result<()> {
    keep_freed_memory();
    let s = headstart::finetune::finetune(cfg)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&s).map_err(|e| Error::Runtime(e.to_string()))?
        );
        return Ok(());
    }
    let acc = |v: Option<(f64, f64)>| v.map_or("-".to_string(), |(_, a)| format!("{a:.4}"));
    println!(
        "finetune: {} values from '{}' trained, {:.1} s per epoch; test accuracy head only {}, fine-tuned {}; parity {} -> {}",
        s.trained_params,
        s.split_tensor,
        s.seconds_per_epoch,
        acc(s.test_head_only),
        acc(s.test_finetuned),
        s.parity_max_abs.map_or("-".to_string(), |d| format!("{d:.1e}")),
        s.out.display()
    );
    Ok(())
}

/// glibc hands large freed buffers back to the kernel and maps fresh, zeroed pages for the next one;
/// a training step allocates the same large tensors every time, so keep them in the heap instead
/// (10-20% faster steps on the VGG block measured here). Process-wide, so done here, not in the library.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is thread-safe and only changes allocator thresholds.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
