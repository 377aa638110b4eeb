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

/// `classify` writes its rows in the order of the inputs however the decoders finish: a large photo
/// first, then small ones, one per batch (the small ones used to come out first). A model with
/// another number of outputs than the class list is told how to name its classes.
#[test]
fn classify_rows_come_in_input_order() {
    let d = tmp();
    let model = save_model(
        d.path(),
        "m.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let classes = d.path().join("classes.txt");
    let names: String = (0..16 * 8 * 8).map(|i| format!("c{i}\n")).collect();
    std::fs::write(&classes, names).unwrap();
    let dir = d.path().join("photos");
    gradient(&dir.join("a00.png"), 2500, 2500, 1);
    for k in 1..12 {
        gradient(&dir.join(format!("a{k:02}.png")), 40, 30, k);
    }
    let args = ["classify", "--model", s(&model), "--preprocess", "torch"];
    let out = ok(&[
        &args[..],
        &[
            "--classes",
            s(&classes),
            "--batch",
            "1",
            "--decode-threads",
            "4",
            "--jsonl",
            s(&dir),
        ],
    ]
    .concat());
    let paths: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths.len(), 12, "{out}");
    assert_eq!(paths, sorted);
    fails(
        &[&args[..], &[s(&dir)]].concat(),
        &["1024 values", "1000 class names", "--classes FILE"],
    );
    // The model of inspect, cut and convert is one required choice of two spellings.
    for c in ["inspect", "cut", "convert"] {
        fails(&[c], &["<MODEL|--model <MODEL>>"]);
    }
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
