//! CLI tests: inspect and cut.

use super::*;

/// Cutting the shared classifier at the tensor that feeds its Gemm gives the features model's output.
#[test]
fn cutting_the_imagenet_model_before_its_gemm_gives_the_features_model() {
    let sh = shared();
    let d = tmp();
    let full = sh.join("models/efficientnet_lite0_imagenet.onnx");
    let proto = onnx::load(&full).unwrap();
    let gemm = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type == "Gemm")
        .unwrap();
    let cut = d.path().join("cut.onnx");
    let log = ok(&["cut", s(&full), "--layer", &gemm.input[0], "--out", s(&cut)]);
    assert!(log.contains("output [N,1280]"), "{log}");
    let x = chelsea_input(&sh);
    let run = |m: &Path| run_known_answer(m, &x);
    let (a, sa) = run(&cut);
    let (b, sb) = run(&sh.join("models/efficientnet_lite0_features.onnx"));
    assert_eq!((sa, sb), (vec![1280], vec![1280]));
    close(&a, &b, 1e-5);
    // The default cut is the spatial map before the pool (include_top=False, pooling=None).
    let log = ok(&["cut", s(&full), "--out", s(&d.path().join("base.onnx"))]);
    assert!(
        log.contains("[N,1280,7,7]") && log.contains("ReduceMean"),
        "{log}"
    );
    let log = ok(&["inspect", s(&full)]);
    for want in [
        "parameters: 4.63 M",
        "multiply-adds at 224x224: 0.385 G",
        "Gemm 1",
        "preset: efficientnet_lite0",
        "conv base (include_top=False)",
    ] {
        assert!(log.contains(want), "'{want}' not in:\n{log}");
    }
}

#[test]
fn extract_layer_cuts_on_the_fly_and_inspect_lists_layers() {
    let (d, data, _m, out) = tiny_setup(2);
    let mut spec = CnnSpec::tiny(Layout::Nhwc, Some((32, 32)));
    spec.global_pool = true;
    let model = save_model(d.path(), "pooled.onnx", &spec);
    let log = ok(&["inspect", s(&model), "--layers"]);
    assert!(log.contains("conv1") || log.contains("Conv"), "{log}");
    assert!(log.contains("[N,16]"), "pooled output shape listed:\n{log}");
    // Cut before the global pool: the cache holds the NHWC spatial map.
    let proto = onnx::load(&model).unwrap();
    let gap = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    let log = extract(
        &model,
        &data,
        &out,
        &["--layer", &gap.input[0], "--preprocess", "tf"],
    );
    assert!(log.contains("f.base.onnx"), "{log}");
    let c = FeatureCache::open(&out).unwrap();
    assert_eq!(c.meta.feature_shape.len(), 3, "{:?}", c.meta.feature_shape);
    assert_eq!(
        c.meta.model_sha256,
        headstart::util::hash::sha256_file(&d.path().join("f.base.onnx")).unwrap()
    );
    fails(
        &[
            "cut",
            s(&model),
            "--layer",
            "no_such_tensor",
            "--out",
            s(&d.path().join("x.onnx")),
        ],
        &["no tensor named 'no_such_tensor'"],
    );
}

#[test]
fn classify_names_imagenet_classes_of_real_photos() {
    let sh = shared();
    let model = sh.join("models/efficientnet_lite0_imagenet.onnx");
    // Photos the model is sure of (most are, not all: scripts/classify_rate.sh gives the rates).
    let photos = [
        "cat/cat.4406.jpg",
        "cat/cat.4377.jpg",
        "dog/dog.4355.jpg",
        "dog/dog.4050.jpg",
    ];
    let args: Vec<String> = photos
        .iter()
        .map(|p| s(&sh.join("data/cats_dogs/test").join(p)).to_string())
        .collect();
    let mut cmd = vec!["classify", "--model", s(&model), "--jsonl"];
    cmd.extend(args.iter().map(|a| a.as_str()));
    let out = ok(&cmd);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows {
        let top = &r["top"][0];
        let idx = top[0].as_u64().unwrap();
        let path = r["path"].as_str().unwrap();
        let want = if path.contains("/cat/") {
            281..=285
        } else {
            151..=268
        };
        assert!(want.contains(&idx), "{path}: top-1 {top}");
        assert_eq!(r["top"].as_array().unwrap().len(), 5);
    }
    // Names come from models/imagenet_classes.txt (282 = tiger cat, as the shared README says).
    let names = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imagenet_classes.txt"),
    )
    .unwrap();
    assert_eq!(names.lines().nth(282), Some("tiger cat"));
}

/// A model whose weights live in an external data file can be cut (into its own folder) and used.
/// The tiny model with its weights in `dir/weights.bin` (ONNX external data) as `dir/m.onnx`:
/// (proto, model path, weights bytes).
pub(crate) fn external_data_model(dir: &Path) -> (onnx::ModelProto, PathBuf, Vec<u8>) {
    let mut proto = onnx::generate::cnn(&CnnSpec::tiny(Layout::Nchw, Some((32, 32))));
    let mut blob = Vec::new();
    for t in &mut proto.graph.as_mut().unwrap().initializer {
        if t.raw_data.is_empty() {
            continue;
        }
        let entry = |k: &str, v: String| headstart::onnx::proto::StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        t.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", blob.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = 1;
        blob.append(&mut t.raw_data);
    }
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    let model = dir.join("m.onnx");
    onnx::save(&proto, &model).unwrap();
    (proto, model, blob)
}

#[test]
fn external_data_models_are_cut_beside_their_data() {
    let (d, data, _m, out) = tiny_setup(2);
    let dir = d.path().join("ext");
    std::fs::create_dir_all(&dir).unwrap();
    let (proto, model, _) = external_data_model(&dir);
    let first = proto.graph.as_ref().unwrap().node[2].output[0].clone();
    fails(
        &[
            "cut",
            s(&model),
            "--layer",
            &first,
            "--out",
            s(&d.path().join("elsewhere.onnx")),
        ],
        &["external data"],
    );
    let cut = dir.join("cut.onnx");
    ok(&["cut", s(&model), "--layer", &first, "--out", s(&cut)]);
    extract(&cut, &data, &out, &["--preprocess", "raw", "-q"]);
    assert_eq!(
        FeatureCache::open(&out).unwrap().meta.feature_shape.len(),
        3
    );
}
