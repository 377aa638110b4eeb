//! CLI tests: extraction end to end.

use super::*;

#[test]
fn extract_tiny_model_writes_all_splits_and_rerun_is_a_cache_hit() {
    let (_d, data, model, out) = tiny_setup(3);
    std::fs::write(data.join("train/a/.hidden.png"), b"not an image").unwrap();
    std::fs::write(data.join("train/a/notes.txt"), b"ignored").unwrap();
    let log = extract(&model, &data, &out, &["--preprocess", "tf", "--batch", "4"]);
    assert!(log.contains("12 of 12 images, 0 skipped"), "{log}");
    assert!(log.contains("input 'input' [?x3x32x32] NCHW"), "{log}");

    let c = FeatureCache::open(&out).unwrap();
    assert_eq!(c.meta.classes, vec!["a", "b"]);
    assert_eq!(c.meta.splits, vec!["train", "test"]);
    assert_eq!(c.meta.feature_shape, vec![16, 8, 8]);
    assert_eq!(c.meta.layout, "NCHW");
    assert_eq!(c.meta.input_size, (32, 32));
    assert_eq!(c.meta.mean, [127.5; 3]);
    let train = c.read_split("train").unwrap();
    assert_eq!(train.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(train.paths[0], "train/a/img0.png");
    assert_eq!(train.paths[1], "train/a/img1.JPG");
    assert_eq!(train.features.len(), 6 * 16 * 8 * 8);
    assert!(
        train.features.iter().all(|v| v.is_finite() && *v >= 0.0),
        "ReLU output"
    );
    assert!(train.features.iter().any(|v| *v > 0.0));
    assert!(!cache_path_leftovers(&out));

    // The same features as running the model directly on the same preprocessing.
    let mut m = BaseModel::open(
        &model,
        &RuntimeConfig {
            threads: 1,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let pre = Preprocess {
        size: (32, 32),
        layout: Layout::Nchw,
        resize: preprocess::ResizeMode::Squash,
        interpolation: preprocess::Interpolation::Bilinear,
        normalize: preprocess::Mode::Tf.normalize(),
        decode: preprocess::Decode::Exact,
    };
    let img = headstart::data::decode::decode(&data.join("train/a/img1.JPG")).unwrap();
    let mut x = vec![0f32; pre.len()];
    preprocess::Preprocessor::new(pre)
        .apply(&img, &mut x)
        .unwrap();
    let (y, shape) = m.run(&pre, &x, 1).unwrap();
    assert_eq!(shape, vec![16, 8, 8]);
    close(&y, &train.features[1024..2048], 1e-5);
    // Batch padding (CUDA's default, switched on here): after a batch of 3, one image runs padded
    // to 3 and only its own output comes back.
    m.set_batch_padding(true);
    let three: Vec<f32> = x.iter().chain(&x).chain(&x).map(|v| v * 0.5).collect();
    let (y3, _) = m.run(&pre, &three, 3).unwrap();
    assert_eq!(y3.len(), 3 * 1024);
    let (y1, shape) = m.run(&pre, &x, 1).unwrap();
    assert_eq!((y1.len(), shape), (1024, vec![16, 8, 8]));
    close(&y1, &y, 1e-6);

    let log = extract(&model, &data, &out, &["--preprocess", "tf", "--batch", "4"]);
    assert!(log.contains("cache hit"), "{log}");
    // A changed option is not a hit.
    let log = extract(&model, &data, &out, &["--preprocess", "torch", "--quiet"]);
    assert!(!log.contains("cache hit"), "{log}");
    assert_eq!(
        FeatureCache::open(&out).unwrap().meta.mean,
        [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0]
    );
}

/// The cache at `out` equals, split by split, an uninterrupted extraction into `dir/full.h5`, and no
/// journal, temporary or lock file is left beside it.
pub(crate) fn same_as_uninterrupted(dir: &Path, model: &Path, data: &Path, out: &Path) {
    let full = dir.join("full.h5");
    tf_extract(model, data, &full);
    let (a, b) = (
        FeatureCache::open(out).unwrap(),
        FeatureCache::open(&full).unwrap(),
    );
    for split in ["train", "test"] {
        let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
        assert_eq!((x.paths, x.labels), (y.paths, y.labels));
        close(&x.features, &y.features, 1e-6);
    }
    assert!(!cache_path_leftovers(out));
}

pub(crate) fn cache_path_leftovers(out: &Path) -> bool {
    let j = headstart::cache::journal_path(out);
    let mut t = out.as_os_str().to_owned();
    t.push(".tmp");
    let mut l = out.as_os_str().to_owned();
    l.push(".lock");
    j.exists() || Path::new(&t).exists() || Path::new(&l).exists()
}

#[test]
fn f16_cache_is_half_the_size_and_close() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 2);
    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let (a, b) = (d.path().join("a.h5"), d.path().join("b.h5"));
    extract(&model, &data, &a, &["--preprocess", "raw", "--quiet"]);
    extract(
        &model,
        &data,
        &b,
        &["--preprocess", "raw", "--dtype", "f16", "--quiet"],
    );
    let (fa, fb) = (
        FeatureCache::open(&a).unwrap(),
        FeatureCache::open(&b).unwrap(),
    );
    assert_eq!(fb.meta.dtype.name(), "f16");
    let (xa, xb) = (
        fa.read_split("train").unwrap().features,
        fb.read_split("train").unwrap().features,
    );
    for (p, q) in xa.iter().zip(&xb) {
        assert!((p - q).abs() <= p.abs() * 1e-3 + 1e-3, "{p} vs {q}");
    }
    // 8 images x 1024 values: f16 saves 2 bytes a value (the rest of the file is the same).
    let saved =
        std::fs::metadata(&a).unwrap().len() as f64 - std::fs::metadata(&b).unwrap().len() as f64;
    assert!(saved >= 0.9 * (8 * 1024 * 2) as f64, "saved {saved} bytes");
}

/// `--io-binding` (the input and output bound once, smaller last batches padded) gives the plain
/// path's features bit for bit, for a model of static output shape and for one whose output shape
/// is learnt from its first batch; a CUDA graph on the CPU is refused, naming the flag.
#[test]
fn io_binding_gives_the_plain_features_bit_for_bit() {
    let (d, data, m, plain) = tiny_setup(5);
    let dynamic = save_model(d.path(), "dyn.onnx", &CnnSpec::tiny(Layout::Nchw, None));
    for (model, size) in [(&m, "32x32"), (&dynamic, "48x24")] {
        let flags = ["--preprocess", "tf", "--size", size, "--batch", "3", "-q"];
        let bound = d.path().join("bound.h5");
        for p in [&plain, &bound] {
            let _ = std::fs::remove_file(p);
        }
        extract(model, &data, &plain, &flags);
        extract(
            model,
            &data,
            &bound,
            &[&flags[..], &["--io-binding"]].concat(),
        );
        super::shards::same_rows(&plain, &bound);
    }
    fails(
        &extract_line(&m, &data, &plain, &["--preprocess", "tf", "--cuda-graph"]),
        &["--cuda-graph", "needs the CUDA device"],
    );
}

/// A model made for batches of exactly one takes any `--batch` (run in pieces; it failed with the
/// runtime's "invalid dimensions"), with the dynamic model's features, bound or not, and
/// calibrates for quantize too.
#[test]
fn a_fixed_batch_of_one_runs_in_pieces() {
    use headstart::onnx::proto::{DimValue, ModelProto};
    use prost::Message;
    let (d, data, m, out) = tiny_setup(3);
    let set_batch = |model: &mut ModelProto, input: Option<i64>, output: Option<i64>| {
        let g = model.graph.as_mut().unwrap();
        for (v, b) in [(&mut g.input[0], input), (&mut g.output[0], output)] {
            if let Some(b) = b {
                let t = v.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
                t.shape.as_mut().unwrap().dim[0].value = Some(DimValue::DimValue(b));
            }
        }
    };
    let mut one = headstart::onnx::load(&m).unwrap();
    set_batch(&mut one, Some(1), Some(1));
    let m1 = d.path().join("batch1.onnx");
    std::fs::write(&m1, one.encode_to_vec()).unwrap();
    let out1 = d.path().join("b1.h5");
    extract(
        &m1,
        &data,
        &out1,
        &["--preprocess", "tf", "--batch", "4", "-q"],
    );
    extract(
        &m,
        &data,
        &out,
        &["--preprocess", "tf", "--batch", "4", "-q"],
    );
    for split in ["train", "test"] {
        let (a, b) = (
            FeatureCache::open(&out1)
                .unwrap()
                .read_split(split)
                .unwrap(),
            FeatureCache::open(&out).unwrap().read_split(split).unwrap(),
        );
        assert_eq!(a.paths, b.paths);
        close(&a.features, &b.features, 1e-6);
    }
    let out2 = d.path().join("b1bound.h5");
    extract(
        &m1,
        &data,
        &out2,
        &["--preprocess", "tf", "--batch", "4", "--io-binding", "-q"],
    );
    let (a, b) = (
        FeatureCache::open(&out2)
            .unwrap()
            .read_split("train")
            .unwrap(),
        FeatureCache::open(&out)
            .unwrap()
            .read_split("train")
            .unwrap(),
    );
    close(&a.features, &b.features, 1e-6);
    ok(&[
        "quantize",
        "--model",
        s(&m1),
        "--calibrate",
        s(&data.join("train")),
        "--preprocess",
        "tf",
        "--batch",
        "4",
        "--out",
        s(&d.path().join("b1.int8.onnx")),
        "-q",
    ]);
}

/// A model that outputs NaN or infinity is named as the fault, with the image (the journal it
/// was written to was blamed, as damaged).
#[test]
fn a_model_that_outputs_nan_is_named_as_the_fault() {
    use headstart::onnx::proto::NodeProto;
    use prost::Message;
    let (d, data, m, out) = tiny_setup(2);
    let mut p = headstart::onnx::load(&m).unwrap();
    let g = p.graph.as_mut().unwrap();
    let y = g.output[0].name.clone();
    for n in &mut g.node {
        for o in &mut n.output {
            if *o == y {
                *o = "pre_nan".into();
            }
        }
    }
    let op = |t: &str, i: &str, o: &str| NodeProto {
        op_type: t.into(),
        name: format!("{t}_nan"),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    // log(-x) of non-negative pooled features: NaN, or -inf at 0.
    g.node.push(op("Neg", "pre_nan", "neg"));
    g.node.push(op("Log", "neg", &y));
    let bad = d.path().join("nan.onnx");
    std::fs::write(&bad, p.encode_to_vec()).unwrap();
    fails(
        &extract_line(&bad, &data, &out, &["--preprocess", "tf"]),
        &["nan.onnx", "the model's output must be finite"],
    );
    // Features past float16's range, for a float16 cache: said, not stored as infinity.
    let mut p = headstart::onnx::load(&m).unwrap();
    let g = p.graph.as_mut().unwrap();
    let y = g.output[0].name.clone();
    for n in &mut g.node {
        for o in &mut n.output {
            if *o == y {
                *o = "pre_big".into();
            }
        }
    }
    g.initializer.push(headstart::onnx::proto::TensorProto {
        name: "million".into(),
        data_type: headstart::onnx::proto::data_type::FLOAT,
        float_data: vec![1e6],
        ..Default::default()
    });
    g.node.push(NodeProto {
        op_type: "Mul".into(),
        name: "big".into(),
        input: vec!["pre_big".into(), "million".into()],
        output: vec![y],
        ..Default::default()
    });
    let big = d.path().join("big.onnx");
    std::fs::write(&big, p.encode_to_vec()).unwrap();
    fails(
        &extract_line(&big, &data, &out, &["--preprocess", "tf", "--dtype", "f16"]),
        &["big.onnx", "past float16's 65504", "--dtype f32"],
    );
}
