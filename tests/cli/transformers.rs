//! Transformer bases: tiny ViTs in both exporters' layouts (torch.onnx, and the hub's
//! transformers.js exports with an external data file) through extract's token pooling,
//! train-head, score, export, inspect and cut, checked against ONNX Runtime's Python API on the
//! same files.

use super::*;
use headstart::cache::tokens::{TokenPool, Tokens, POOL_META, PREFIX_META};
use headstart::onnx::generate::vit::{externalize, vit, Style, VitSpec};

/// Writes `spec` as `dir/name` (with `name_data` beside it when `external`).
pub(crate) fn save_vit(dir: &Path, name: &str, spec: &VitSpec, external: bool) -> PathBuf {
    let mut m = vit(spec).unwrap();
    let p = dir.join(name);
    if external {
        let data = externalize(&mut m, &format!("{name}_data"));
        assert!(data.len() > 50_000, "the weights went to the data file");
        std::fs::write(dir.join(format!("{name}_data")), data).unwrap();
    }
    onnx::save(&m, &p).unwrap();
    p
}

/// A temp folder with a tiny dataset (4 images a class and split) and a torch-layout tiny ViT
/// `vit.onnx` whose metadata pools its tokens as class token + patch mean, plus `extra` metadata:
/// (dir, data, spec, model).
fn pooled_vit_setup(extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, VitSpec, PathBuf) {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 4);
    let mut spec = VitSpec::tiny(Style::Torch);
    spec.metadata = [(POOL_META, "cls+mean"), (PREFIX_META, "1")]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let m = save_vit(d.path(), "vit.onnx", &spec, false);
    (d, data, spec, m)
}

/// The cache's preprocessed inputs of `split`, in its row order, as one float32 file for Python.
fn inputs_of(cache: &FeatureCache, data: &Path, split: &str, out: &Path) -> usize {
    let pre = cache.meta.preprocess().unwrap();
    let rows = cache.read_split(split).unwrap();
    let mut bytes = Vec::new();
    for p in &rows.paths {
        let img = headstart::data::decode::decode(&data.join(p)).unwrap();
        let mut x = vec![0f32; pre.len()];
        preprocess::Preprocessor::new(pre)
            .apply(&img, &mut x)
            .unwrap();
        bytes.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(out, bytes).unwrap();
    rows.paths.len()
}

/// ONNX Runtime (Python) on `model` over `n` inputs of 3x32x32 in `inputs`: output `output`,
/// pooled by numpy as `pool` with `prefix` leading tokens ("none" keeps it as it is).
fn onnxruntime_python(
    model: &Path,
    inputs: &Path,
    n: usize,
    output: &str,
    pool: &str,
    prefix: usize,
) -> Vec<f32> {
    let out = inputs.with_extension("ref");
    let script = r#"
import sys, numpy as np, onnxruntime as ort
model, inputs, n, output, pool, prefix, out = sys.argv[1:]
n, prefix = int(n), int(prefix)
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
x = np.fromfile(inputs, dtype=np.float32).reshape(n, 3, 32, 32)
y = s.run([output], {s.get_inputs()[0].name: x})[0]
if pool == "cls":
    y = y[:, 0]
elif pool == "mean":
    y = y[:, prefix:].mean(1)
elif pool == "cls+mean":
    y = np.concatenate([y[:, 0], y[:, prefix:].mean(1)], 1)
y.astype(np.float32).tofile(out)
"#;
    let o = Command::new(super::fetch::venv_python())
        .args([
            "-c",
            script,
            s(model),
            s(inputs),
            &n.to_string(),
            output,
            pool,
            &prefix.to_string(),
            s(&out),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    super::fetch::f32s(&std::fs::read(&out).unwrap())
}

/// A hub-layout ViT with two registers and its weights in an external file: a token output without
/// a pooling, or a mean without the count of class and register tokens, is refused before any
/// output; pooled, the cache holds ONNX Runtime (Python)'s tokens pooled by numpy, and records how.
#[test]
fn token_outputs_are_pooled_as_onnxruntime_python_gives_them() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 3);
    let mut spec = VitSpec::tiny(Style::Hub);
    spec.registers = 2;
    let m = save_vit(d.path(), "model.onnx", &spec, true);
    let out = d.path().join("f.h5");
    let base = ["--preprocess", "torch", "--size", "32x32"];
    let line = |extra: &[&str]| -> Vec<String> {
        extract_line(&m, &data, &out, &[&base[..], extra].concat())
            .into_iter()
            .map(String::from)
            .collect()
    };
    let run_line = |l: Vec<String>| run(&l.iter().map(String::as_str).collect::<Vec<_>>());
    failed(
        &run_line(line(&[])),
        &[
            "model.onnx",
            "'last_hidden_state' is a token sequence [?, 19, 32]",
            "--pool",
        ],
    );
    failed(&run_line(line(&["--pool", "mean"])), &["--prefix-tokens"]);
    failed(
        &run_line(line(&["--pool", "mean", "--prefix-tokens", "19"])),
        &["no patch tokens"],
    );
    assert!(!out.exists());

    for (pool, prefix, width) in [("cls+mean", 3, 64), ("mean", 3, 32), ("cls", 1, 32)] {
        let o = run_line(line(&[
            "--pool",
            pool,
            "--prefix-tokens",
            &prefix.to_string(),
        ]));
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("tokens: {pool} ({prefix} prefix token")),
            "{}",
            text(&o)
        );
        let cache = FeatureCache::open(&out).unwrap();
        let want = Tokens {
            pool: TokenPool::parse(pool).unwrap(),
            prefix,
        };
        assert_eq!(
            (cache.meta.tokens, cache.meta.feature_shape.clone()),
            (want, vec![width])
        );
        let inputs = d.path().join("inputs.f32");
        let n = inputs_of(&cache, &data, "train", &inputs);
        let reference = onnxruntime_python(&m, &inputs, n, "last_hidden_state", pool, prefix);
        close(
            &cache.read_split("train").unwrap().features,
            &reference,
            1e-5,
        );
    }
    // Kept whole, the rows are ONNX Runtime's tokens as they are.
    extract(&m, &data, &out, &[&base[..], &["--pool", "none"]].concat());
    let cache = FeatureCache::open(&out).unwrap();
    assert_eq!(
        (cache.meta.tokens, cache.meta.feature_shape.clone()),
        (Tokens::NONE, vec![19, 32])
    );
    let inputs = d.path().join("inputs.f32");
    let n = inputs_of(&cache, &data, "test", &inputs);
    let reference = onnxruntime_python(&m, &inputs, n, "last_hidden_state", "none", 0);
    close(
        &cache.read_split("test").unwrap().features,
        &reference,
        1e-5,
    );
}

/// A torch-layout ViT whose metadata names its pooling: extract pools without flags; a head on
/// those features scores images through the base with the same pooling, and its export carries
/// the pooling in the graph (the same probabilities, and ONNX Runtime (Python) agrees on the
/// exported file). A head is refused features pooled another way.
#[test]
fn a_head_on_pooled_tokens_scores_and_exports_with_the_pooling_in_the_graph() {
    let (d, data, _, m) = pooled_vit_setup(&[
        ("mean", "123.675,116.28,103.53"),
        ("std", "58.395,57.12,57.375"),
        ("pixel_scale", "0..255"),
    ]);
    let (cache, head) = (d.path().join("f.h5"), d.path().join("head.h5"));
    let log = extract(&m, &data, &cache, &[]);
    assert!(log.contains("tokens: cls+mean (1 prefix token)"), "{log}");
    train_head(&cache, &head, &["--epochs", "5"]);
    let (s1, s2, e) = (
        d.path().join("s1.csv"),
        d.path().join("s2.csv"),
        d.path().join("e.onnx"),
    );
    let test = data.join("test");
    ok(&[
        "score",
        "--model",
        s(&m),
        "--head",
        s(&head),
        s(&test),
        "--out",
        s(&s1),
    ]);
    ok(&[
        "export",
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--out",
        s(&e),
    ]);
    ok(&["score", "--model", s(&e), s(&test), "--out", s(&s2)]);
    let probs = |p: &Path| -> Vec<(String, Vec<f32>)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (
                    f[0].to_string(),
                    f[2..4].iter().map(|v| v.parse().unwrap()).collect(),
                )
            })
            .collect()
    };
    let (a, b) = (probs(&s1), probs(&s2));
    assert_eq!(a.len(), 8);
    for ((pa, va), (pb, vb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        close(va, vb, 1e-5);
    }
    // The exported file in ONNX Runtime (Python), on the cache's own test inputs.
    let fc = FeatureCache::open(&cache).unwrap();
    let inputs = d.path().join("inputs.f32");
    let n = inputs_of(&fc, &data, "test", &inputs);
    let reference = onnxruntime_python(&e, &inputs, n, "probabilities", "none", 0);
    let rows = fc.read_split("test").unwrap();
    for (i, p) in rows.paths.iter().enumerate() {
        let (_, v) = a.iter().find(|(q, _)| q.ends_with(p.as_str())).unwrap();
        close(v, &reference[2 * i..2 * i + 2], 1e-5);
    }
    // The same width pooled another way is not what the head learnt on.
    let other = d.path().join("other.h5");
    extract(&m, &data, &other, &["--pool", "mean"]);
    let mean = FeatureCache::open(&other).unwrap();
    assert_eq!(
        mean.meta.tokens,
        Tokens {
            pool: TokenPool::Mean,
            prefix: 1
        }
    );
    let other_head = d.path().join("other_head.h5");
    train_head(&other, &other_head, &["--epochs", "1"]);
    fails(
        &[
            "evaluate",
            "--features",
            s(&cache),
            "--head",
            s(&other_head),
        ],
        &[
            "token poolings differ",
            "mean (1 prefix token)",
            "cls+mean (1 prefix token)",
        ],
    );
}

/// inspect counts every MatMul of attention and the MLP (the architecture's figure) in both
/// layouts, and finds a classifier ViT's token tensor; cut writes it, and extract pools the cut
/// model's output as ONNX Runtime (Python) computes it.
#[test]
fn inspect_counts_attention_and_cut_keeps_the_tokens() {
    let d = tmp();
    let mut spec = VitSpec::tiny(Style::Torch);
    spec.classes = Some(5);
    let c = save_vit(d.path(), "classifier.onnx", &spec, false);
    let log = ok(&["inspect", s(&c)]);
    let macs = format!("multiply-adds at 32x32: {:.3} M", spec.macs() as f64 / 1e6);
    assert!(log.contains(&macs), "{macs} not in {log}");
    assert!(log.contains("transformer base: tokens '/layernorm/LayerNormalization_output_0' [N,17,32] (read by Gather '/classifier/Gather')"), "{log}");
    let hub = save_vit(d.path(), "hub.onnx", &VitSpec::tiny(Style::Hub), true);
    let log = ok(&["inspect", s(&hub), "--size", "32x32"]);
    let macs = format!(
        "multiply-adds at 32x32: {:.3} M",
        VitSpec::tiny(Style::Hub).macs() as f64 / 1e6
    );
    assert!(
        log.contains(&macs) && log.contains("already a feature extractor"),
        "{log}"
    );

    let cut = d.path().join("base.onnx");
    let log = ok(&["cut", s(&c), "--out", s(&cut)]);
    assert!(log.contains("output [N,17,32]"), "{log}");
    let data = d.path().join("data");
    tiny_dataset(&data, 2);
    let out = d.path().join("f.h5");
    extract(&cut, &data, &out, &["--preprocess", "tf", "--pool", "cls"]);
    let cache = FeatureCache::open(&out).unwrap();
    let inputs = d.path().join("inputs.f32");
    let n = inputs_of(&cache, &data, "train", &inputs);
    // A head on those features evaluates photos through the cut model (no pooling metadata): the
    // head's own pooling is applied.
    let head = d.path().join("head.h5");
    train_head(&out, &head, &["--epochs", "1"]);
    let log = ok(&[
        "evaluate",
        "--model",
        s(&cut),
        "--head",
        s(&head),
        "--data",
        s(&data),
        "--preprocess",
        "tf",
    ]);
    assert!(log.contains("accuracy: "), "{log}");
    let reference = onnxruntime_python(
        &cut,
        &inputs,
        n,
        "/layernorm/LayerNormalization_output_0",
        "cls",
        1,
    );
    close(
        &cache.read_split("train").unwrap().features,
        &reference,
        1e-5,
    );
}

/// `finetune` trains the top block of a torch-layout ViT whose metadata names its pooling: the
/// split tensor is cached whole, the tokens are pooled after the top as extract pools them, and
/// the written model scores as candle computed it (finetune's own parity check) and through the
/// pooling extract applies. A hub-layout ViT (reshapes computed through Shape) is refused before
/// any extraction, naming the op.
#[cfg(feature = "finetune")]
#[test]
fn finetune_trains_the_top_block_of_a_vit() {
    let (d, data, spec, m) = pooled_vit_setup(&[]);
    let (cache, head, out) = (
        d.path().join("f.h5"),
        d.path().join("head.h5"),
        d.path().join("ft.onnx"),
    );
    extract(&m, &data, &cache, &["--preprocess", "torch"]);
    train_head(&cache, &head, &["--epochs", "3"]);
    let line = |model: &Path, out: &Path| -> Vec<String> {
        [
            "finetune",
            "--model",
            s(model),
            "--data",
            s(&data),
            "--head",
            s(&head),
            "--from-layer",
            "/encoder.layer.1/Add_output_0",
            "--epochs",
            "2",
            "--out",
            s(out),
            "--preprocess",
            "torch",
        ]
        .map(String::from)
        .to_vec()
    };
    let l = line(&m, &out);
    let log = ok(&l.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        log.contains("inputs [17, 32]"),
        "the split tensor is cached whole: {log}"
    );
    let parity: f64 = log
        .split("parity: ")
        .nth(1)
        .and_then(|r| r.split("max abs diff ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no parity line in {log}"));
    assert!(parity < 1e-4, "{log}");
    // The fine-tuned base pools as the original did.
    let base = d.path().join("ft.base.onnx");
    let tuned = d.path().join("tuned.h5");
    extract(&base, &data, &tuned, &["--preprocess", "torch"]);
    let c = FeatureCache::open(&tuned).unwrap();
    assert_eq!(
        (c.meta.tokens, c.meta.feature_shape.clone()),
        (
            Tokens {
                pool: TokenPool::ClsMean,
                prefix: 1
            },
            vec![64]
        )
    );

    let mut hub = VitSpec::tiny(Style::Hub);
    hub.metadata = spec.metadata.clone();
    let hm = save_vit(d.path(), "hub.onnx", &hub, false);
    let hub_out = d.path().join("hub_ft.onnx");
    let l = line(&hm, &hub_out);
    fails(
        &l.iter().map(String::as_str).collect::<Vec<_>>(),
        &["(Shape)", "not supported for fine-tuning"],
    );
    assert!(
        !d.path().join("hub_ft.inputs.h5").exists(),
        "refused after extracting"
    );
}

/// quantize and convert --fp16 on a hub-layout ViT that keeps its weights in an external data
/// file: the weights are read in (the outputs are single files), quantize puts the patch Conv and
/// the 12 weight MatMuls in int8 and reports the cosine, the float16 copy gives the float32
/// tokens back closely; a data file cut short is refused naming the byte range.
#[test]
fn quantize_and_fp16_read_external_weights_of_a_vit() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 3);
    let m = save_vit(d.path(), "model.onnx", &VitSpec::tiny(Style::Hub), true);
    let (q, h) = (d.path().join("q.onnx"), d.path().join("h.onnx"));
    let pre = ["--preprocess", "torch", "--size", "32x32"];
    let log = ok(&[
        &[
            "quantize",
            "--model",
            s(&m),
            "--calibrate",
            s(&data),
            "--out",
            s(&q),
        ][..],
        &pre,
    ]
    .concat());
    assert!(log.contains("quantized 13 nodes to int8"), "{log}");
    let cosine: f64 = log
        .split("cosine mean ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cosine in {log}"));
    assert!(cosine > 0.99, "{log}");
    ok(&["convert", s(&m), "--fp16", "--out", s(&h)]);
    for out in [&q, &h] {
        let model = onnx::load(out).unwrap();
        assert!(
            !onnx::uses_external_data(&model),
            "{} should be one file",
            out.display()
        );
    }
    let feats = |model: &Path, name: &str| {
        let out = d.path().join(name);
        extract(model, &data, &out, &[&pre[..], &["--pool", "cls"]].concat());
        FeatureCache::open(&out)
            .unwrap()
            .read_split("train")
            .unwrap()
            .features
    };
    let (a, b) = (feats(&m, "f32.h5"), feats(&h, "f16.h5"));
    let dot: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(dot / (norm(&a) * norm(&b)) > 0.999);

    let data_file = d.path().join("model.onnx_data");
    let bytes = std::fs::read(&data_file).unwrap();
    std::fs::write(&data_file, &bytes[..bytes.len() / 2]).unwrap();
    fails(
        &[
            "convert",
            s(&m),
            "--fp16",
            "--out",
            s(&d.path().join("h2.onnx")),
        ],
        &["model.onnx", "lie beyond", "model.onnx_data"],
    );
}
