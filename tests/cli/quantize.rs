//! CLI tests: int8 quantisation.

use super::*;

#[test]
fn quantize_writes_qdq_int8_that_extracts_close_to_float() {
    let (d, data, m, out) = tiny_setup(6);
    let q = d.path().join("tiny.int8.onnx");
    let log = ok(&[
        "quantize",
        "--model",
        s(&m),
        "--calibrate",
        s(&data.join("train")),
        "--images",
        "8",
        "--preprocess",
        "tf",
        "--out",
        s(&q),
        "-q",
    ]);
    assert!(
        log.contains("quantized 2 nodes to int8") && log.contains("on 8 calibration images"),
        "{log}"
    );
    let proto = headstart::onnx::load(&q).unwrap();
    let ops = headstart::onnx::op_counts(&proto);
    // Q/DQ on the input, both ReLU outputs and both pool outputs (the last one is read by the
    // Identity that names the graph output); DQ also for 2 weights and 2 biases.
    assert_eq!(
        (ops.get("QuantizeLinear"), ops.get("DequantizeLinear")),
        (Some(&5), Some(&9)),
        "{ops:?}"
    );
    let meta = headstart::onnx::metadata(&proto);
    assert_eq!(meta.get("quant_method").map(String::as_str), Some("minmax"));
    assert_eq!(meta.get("quant_images").map(String::as_str), Some("8"));
    assert_eq!(
        meta.get("quant_source_sha256"),
        Some(&headstart::util::hash::sha256_file(&m).unwrap())
    );
    assert!(
        !d.path().join("tiny.int8.calibration.onnx").exists(),
        "the calibration model is removed"
    );

    let qout = d.path().join("q.h5");
    let (a, b) = tf_extract_both((&m, &out), (&q, &qout), &data);
    for split in ["train", "test"] {
        let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
        let w = x.features.len() / x.labels.len();
        for (r, (p, q)) in x.features.chunks(w).zip(y.features.chunks(w)).enumerate() {
            let c = headstart::infer::quantize::cosine(p, q);
            assert!(c > 0.99, "{split} row {r}: cosine {c}");
        }
        assert_ne!(
            x.features, y.features,
            "int8 features are not the float ones"
        );
    }
    fails(
        &[
            "quantize",
            "--model",
            s(&m),
            "--calibrate",
            s(&d.path().join("none")),
            "--out",
            s(&q),
        ],
        &["none"],
    );
    let empty = d.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &[
            "quantize",
            "--model",
            s(&m),
            "--calibrate",
            s(&empty),
            "--preprocess",
            "tf",
            "--out",
            s(&q),
        ],
        &["empty", "no images to calibrate with"],
    );
}

/// EfficientNet-Lite0 loses most of its accuracy with every node in int8 (cosine about 0.9): the
/// search measures each node alone and keeps the most damaging in float until the cosine is 0.99.
#[test]
fn quantize_keeps_the_most_sensitive_nodes_of_efficientnet_lite0_in_float() {
    let sh = shared();
    let d = tmp();
    let m = sh.join("models/efficientnet_lite0_features.onnx");
    let cal = sh.join("data/cats_dogs/train");
    let cosine_in = |log: &str| -> f64 {
        let at = log.find("cosine mean ").expect("a cosine line") + "cosine mean ".len();
        log[at..].split(',').next().unwrap().parse().unwrap()
    };
    // `quantize` with these extra flags: its log, or with `refused`, the words its error must hold.
    let run_q = |out: &Path, extra: &[&str], refused: Option<&[&str]>| {
        let mut args = vec![
            "quantize",
            "--model",
            s(&m),
            "--calibrate",
            s(&cal),
            "--images",
            "8",
            "--out",
            s(out),
            "--progress",
            "none",
        ];
        args.extend_from_slice(extra);
        match refused {
            None => ok(&args),
            Some(want) => fails(&args, want),
        }
    };
    let quant = |out: &Path, extra: &[&str]| run_q(out, extra, None);
    let all = d.path().join("all.onnx");
    let log = quant(&all, &["--all-int8"]);
    let all_cos = cosine_in(&log);
    assert!(
        log.contains("quantized 49 nodes to int8 (0 kept in float)"),
        "{log}"
    );
    // The default target (0.99) is above what every node in int8 gives with ONNX Runtime's AVX2
    // kernels; its VNNI kernels lose less, so there the target is set halfway to 1 (rounded down to
    // 0.001) to make the search keep nodes in float all the same.
    let target = if all_cos < 0.99 {
        "0.99".to_string()
    } else {
        format!("{:.3}", ((all_cos + 1.0) / 2.0 * 1000.0).floor() / 1000.0)
    };
    let target_v: f64 = target.parse().unwrap();
    assert!(
        all_cos < target_v,
        "every node in int8: cosine {all_cos}\n{log}"
    );

    let auto = d.path().join("auto.onnx");
    let log = quant(&auto, &["--target-cosine", &target]);
    let cos = cosine_in(&log);
    assert!(
        cos >= target_v,
        "cosine {cos} below the target {target}\n{log}"
    );
    assert!(
        log.contains(&format!(
            "every node in int8 gave cosine {all_cos:.5}, below --target-cosine {target}"
        )),
        "{log}"
    );
    let meta = onnx::metadata(&onnx::load(&auto).unwrap());
    let kept: Vec<&str> = meta["quant_kept_float"].split(',').collect();
    assert!(
        !kept.is_empty() && kept.len() < 49 / 4 && kept.contains(&"/_conv_stem/Conv"),
        "{kept:?}"
    );
    assert!(
        log.contains(&format!(
            "quantized {} nodes to int8 ({} kept in float)",
            49 - kept.len(),
            kept.len()
        )),
        "{log}"
    );
    for k in &kept {
        assert!(
            log.contains(&format!("  {k}  0.")),
            "{k} listed with its cosine:\n{log}"
        );
    }
    assert_eq!(meta["quant_target_cosine"], target);
    let refused = |extra: &[&str], want: &[&str]| run_q(&auto, extra, Some(want));
    refused(
        &["--target-cosine", "1.5"],
        &["--target-cosine: 1.5 is not in [0, 1]"],
    );
    refused(
        &["--all-int8", "--target-cosine", "0.9"],
        &["--all-int8 runs no search"],
    );
    // A target only the float model meets leaves no node in int8: refused, nothing written.
    refused(&["--target-cosine", "1"], &["no node left to quantize"]);
}

/// A weight two Convs read gets int8 copies of its own per Conv (the names repeated: the probe
/// model was refused with "two nodes with same node name (W_DQ)").
#[test]
fn a_weight_shared_by_two_convs_is_quantized_for_each() {
    use headstart::onnx::proto::NodeProto;
    use prost::Message;
    let (d, data, m, _) = tiny_setup(4);
    let mut p = headstart::onnx::load(&m).unwrap();
    let g = p.graph.as_mut().unwrap();
    let k = g.node.iter().position(|n| n.op_type == "Conv").unwrap();
    let out = g.node[k].output[0].clone();
    g.node[k].output[0] = "a_out".into();
    let mut twin = g.node[k].clone();
    twin.name = "twin_conv".into();
    twin.output[0] = "b_out".into();
    let add = NodeProto {
        op_type: "Add".into(),
        name: "twin_add".into(),
        input: vec!["a_out".into(), "b_out".into()],
        output: vec![out],
        ..Default::default()
    };
    g.node.splice(k + 1..k + 1, [twin, add]);
    let shared = d.path().join("shared.onnx");
    std::fs::write(&shared, p.encode_to_vec()).unwrap();
    let q = d.path().join("shared.int8.onnx");
    let log = ok(&quantize_line(&shared, &data.join("train"), &q));
    assert!(log.contains("quantized 3 nodes to int8"), "{log}");
    let (f, i8) = (d.path().join("f.h5"), d.path().join("q.h5"));
    extract(&shared, &data, &f, &["--preprocess", "tf", "-q"]);
    extract(&q, &data, &i8, &["--preprocess", "tf", "-q"]);
    let (a, b) = (
        FeatureCache::open(&f).unwrap().read_split("train").unwrap(),
        FeatureCache::open(&i8)
            .unwrap()
            .read_split("train")
            .unwrap(),
    );
    let dot: f32 = a.features.iter().zip(&b.features).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = dot / (norm(&a.features) * norm(&b.features));
    assert!(cos > 0.99, "cosine {cos}");
}

/// A Conv whose weights come from a `Constant` node is quantised like the others (it stayed in
/// float, counted nowhere).
#[test]
fn weights_from_a_constant_node_are_quantized() {
    use headstart::onnx::proto::{AttributeProto, NodeProto};
    use prost::Message;
    let (d, data, m, _) = tiny_setup(4);
    let mut p = headstart::onnx::load(&m).unwrap();
    let g = p.graph.as_mut().unwrap();
    let k = g.node.iter().position(|n| n.op_type == "Conv").unwrap();
    let w = g.node[k].input[1].clone();
    let at = g.initializer.iter().position(|t| t.name == w).unwrap();
    let t = g.initializer.remove(at);
    let constant = NodeProto {
        op_type: "Constant".into(),
        name: "w_const".into(),
        output: vec![w],
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: 4, // TENSOR
            t: Some(t),
            ..Default::default()
        }],
        ..Default::default()
    };
    g.node.insert(0, constant);
    let cm = d.path().join("const.onnx");
    std::fs::write(&cm, p.encode_to_vec()).unwrap();
    let q = d.path().join("const.int8.onnx");
    let log = ok(&quantize_line(&cm, &data.join("train"), &q));
    assert!(log.contains("quantized 2 nodes to int8"), "{log}");
    let ops = headstart::onnx::op_counts(&headstart::onnx::load(&q).unwrap());
    assert_eq!(ops.get("Constant"), None, "{ops:?}");
    // A model that lists its initializers among its inputs too (keep_initializers_as_inputs):
    // the weights made int8 leave that list (they read as more image inputs).
    let mut p = headstart::onnx::load(&m).unwrap();
    let g = p.graph.as_mut().unwrap();
    let listed: Vec<_> = g
        .initializer
        .iter()
        .map(|t| headstart::onnx::proto::ValueInfoProto {
            name: t.name.clone(),
            ..Default::default()
        })
        .collect();
    g.input.extend(listed);
    let ki = d.path().join("ki.onnx");
    std::fs::write(&ki, p.encode_to_vec()).unwrap();
    let kq = d.path().join("ki.int8.onnx");
    ok(&quantize_line(&ki, &data.join("train"), &kq));
    extract(
        &kq,
        &data,
        &d.path().join("ki.h5"),
        &["--preprocess", "tf", "-q"],
    );
    // A float16 copy is told to be one (it had "no Conv, Gemm or MatMul with float weights").
    let half = d.path().join("half.onnx");
    ok(&["convert", s(&m), "--fp16", "--out", s(&half)]);
    fails(
        &quantize_line(&half, &data.join("train"), &d.path().join("hq.onnx")),
        &["holds float16 weights"],
    );
}

/// `quantize` of `model` calibrated on `photos` (tf preprocessing) into `out`.
fn quantize_line<'a>(model: &'a Path, photos: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "quantize",
        "--model",
        s(model),
        "--calibrate",
        s(photos),
        "--preprocess",
        "tf",
        "--out",
        s(out),
    ]
}
