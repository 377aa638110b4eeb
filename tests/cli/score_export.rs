//! CLI tests: score and export.

use super::*;

/// Probabilities per path from a `score` output (CSV with p_<class> columns, or JSON lines).
pub(crate) fn scored(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let probs = v["probabilities"].as_object().unwrap();
            out.insert(
                v["path"].as_str().unwrap().to_string(),
                probs.values().map(|p| p.as_f64().unwrap() as f32).collect(),
            );
        }
    } else {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let cols: Vec<usize> = (0..header.len())
            .filter(|&i| header[i].starts_with("p_"))
            .collect();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            out.insert(
                f[0].to_string(),
                cols.iter().map(|&i| f[i].parse().unwrap()).collect(),
            );
        }
    }
    out
}

pub(crate) fn max_diff(
    a: &std::collections::BTreeMap<String, Vec<f32>>,
    b: &std::collections::BTreeMap<String, Vec<f32>>,
) -> f32 {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different files"
    );
    a.iter()
        .flat_map(|(k, v)| v.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

/// An export keeps the JPEG decode its head was trained with (`--decode exact`): scoring it gives
/// the base + head's numbers (it fell back to the fast DCT-scaled decode, 0.016 off on photos).
#[test]
fn an_export_decodes_as_its_head_was_trained() {
    let d = tmp();
    let data = d.path().join("big");
    for (c, class) in ["a", "b"].iter().enumerate() {
        let dir = data.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..3u32 {
            // Large, detailed JPEGs: a DCT-scaled decode of them differs from the full one.
            let img = image::RgbImage::from_fn(1203, 901, |x, y| {
                let v = (x * 7 + y * 13 + k * 31 + c as u32 * 50) ^ (x * y / 3);
                image::Rgb([v as u8, (v >> 3) as u8, (x ^ y) as u8])
            });
            img.save(dir.join(format!("p{k}.jpg"))).unwrap();
        }
    }
    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let cache = d.path().join("f.h5");
    extract(
        &model,
        &data,
        &cache,
        &["--preprocess", "tf", "--decode", "exact", "-q"],
    );
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--head",
        "none",
        "--epochs",
        "2",
        "--val-split",
        "0",
        "-q",
    ]);
    let exp = d.path().join("exp.onnx");
    ok(&[
        "export",
        "--model",
        s(&model),
        "--head",
        s(&head),
        "--out",
        s(&exp),
    ]);
    let score = |extra: &[&str], name: &str| {
        let out = d.path().join(name);
        ok(&[&["score", s(&data), "--out", s(&out), "-q"], extra].concat());
        scored(&out)
    };
    let two_stage = score(&["--model", s(&model), "--head", s(&head)], "two.csv");
    let exported = score(&["--model", s(&exp)], "exp.csv");
    assert!(
        max_diff(&two_stage, &exported) < 1e-5,
        "{two_stage:?} {exported:?}"
    );
    // The check can tell: the fast decode gives other numbers.
    let fast = score(&["--model", s(&exp), "--decode", "fast"], "fast.csv");
    assert!(max_diff(&two_stage, &fast) > 1e-4, "{two_stage:?} {fast:?}");
}

/// A base whose names are the ones export adds (an input called `image`, an earlier export's
/// `probabilities` output and `headstart/...` nodes) still exports to a model that loads and
/// scores as base + head (it was written, then refused by every runtime).
#[test]
fn an_export_of_a_base_with_the_exports_own_names_loads_and_agrees() {
    use prost::Message;
    let d = tmp();
    let data = d.path().join("data");
    colour_dataset(&data, &["cat", "dog"], 4);
    let tiny = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    // The tiny model with its input called `image`.
    let mut m = headstart::onnx::load(&tiny).unwrap();
    let g = m.graph.as_mut().unwrap();
    let old = g.input[0].name.clone();
    g.input[0].name = "image".into();
    for n in &mut g.node {
        for i in &mut n.input {
            if *i == old {
                *i = "image".into();
            }
        }
    }
    let named = d.path().join("image_in.onnx");
    std::fs::write(&named, m.encode_to_vec()).unwrap();
    let head_on = |base: &Path, name: &str| {
        let cache = d.path().join(format!("{name}.h5"));
        extract(base, &data, &cache, &["--preprocess", "tf", "-q"]);
        let head = d.path().join(format!("{name}.head.h5"));
        ok(&[
            "train-head",
            s(&cache),
            "--out",
            s(&head),
            "--head",
            "dense:4:relu",
            "--epochs",
            "2",
            "-q",
        ]);
        head
    };
    let score = |extra: &[&str], name: &str| {
        let out = d.path().join(name);
        ok(&[&["score", s(&data), "--out", s(&out), "-q"], extra].concat());
        scored(&out)
    };
    // 1. `image` input, exported with the preprocessing (whose input is `image`).
    let h1 = head_on(&named, "named");
    let e1 = d.path().join("e1.onnx");
    ok(&[
        "export",
        "--model",
        s(&named),
        "--head",
        s(&h1),
        "--with-preprocessing",
        "--out",
        s(&e1),
    ]);
    let a = score(&["--model", s(&named), "--head", s(&h1)], "a.csv");
    let b = score(&["--model", s(&e1)], "b.csv");
    assert!(max_diff(&a, &b) < 1e-5, "{a:?} {b:?}");
    // 2. An export as the base of another (its output `probabilities`, its `headstart/` nodes).
    let e0 = d.path().join("e0.onnx");
    let h0 = head_on(&tiny, "tiny");
    ok(&[
        "export",
        "--model",
        s(&tiny),
        "--head",
        s(&h0),
        "--out",
        s(&e0),
    ]);
    let h2 = head_on(&e0, "stacked");
    let e2 = d.path().join("e2.onnx");
    ok(&[
        "export",
        "--model",
        s(&e0),
        "--head",
        s(&h2),
        "--tta",
        "flip",
        "--with-preprocessing",
        "--out",
        s(&e2),
    ]);
    let a = score(
        &["--model", s(&e0), "--head", s(&h2), "--tta", "flip"],
        "c.csv",
    );
    let b = score(&["--model", s(&e2)], "d.csv");
    assert!(max_diff(&a, &b) < 1e-5, "{a:?} {b:?}");
}

/// Base + head, the exported model and the exported model with preprocessing inside give the same
/// probabilities (< 1e-5), equal to the head on the cached features; in both layouts, flatten and
/// average pooling, sigmoid and softmax heads with every layer kind.
#[test]
fn export_and_score_match_the_two_stage_path() {
    for (layout, classes, pool, spec) in [
        (
            Layout::Nchw,
            vec!["cat", "dog"],
            "flatten",
            "dense:12:gelu,bn,dropout:0.3,dense:6:leaky_relu",
        ),
        (
            Layout::Nhwc,
            vec!["a", "b", "c"],
            "avg",
            "dense:8:tanh,dense:5:sigmoid,relu",
        ),
    ] {
        let d = tmp();
        let data = d.path().join("data");
        colour_dataset(&data, &classes, 5);
        let model = save_model(
            d.path(),
            "tiny.onnx",
            &CnnSpec::tiny(layout, Some((32, 32))),
        );
        let cache = d.path().join("f.h5");
        extract(&model, &data, &cache, &["--preprocess", "caffe", "-q"]);
        let head = d.path().join("h.h5");
        ok(&[
            "train-head",
            s(&cache),
            "--out",
            s(&head),
            "--head",
            spec,
            "--pool",
            pool,
            "--epochs",
            "3",
            "--optimizer",
            "adam",
            "-q",
        ]);
        let exp = d.path().join("exp.onnx");
        let exp8 = d.path().join("exp8.onnx");
        let log = ok(&[
            "export",
            "--model",
            s(&model),
            "--head",
            s(&head),
            "--out",
            s(&exp),
        ]);
        assert!(log.contains("output 'probabilities'"), "{log}");
        ok(&[
            "export",
            "--model",
            s(&model),
            "--head",
            s(&head),
            "--out",
            s(&exp8),
            "--with-preprocessing",
        ]);
        let test = data.join("test");
        let (o1, o2, o3) = (
            d.path().join("a.csv"),
            d.path().join("b.csv"),
            d.path().join("c.jsonl"),
        );
        ok(&[
            "score",
            "--model",
            s(&model),
            "--head",
            s(&head),
            s(&test),
            "--out",
            s(&o1),
            "-q",
        ]);
        ok(&["score", "--model", s(&exp), s(&test), "--out", s(&o2), "-q"]);
        ok(&[
            "score",
            "--model",
            s(&exp8),
            s(&test),
            "--out",
            s(&o3),
            "-q",
        ]);
        let (a, b, c) = (scored(&o1), scored(&o2), scored(&o3));
        assert_eq!(a.len(), 5 * classes.len());
        assert!(
            max_diff(&a, &b) < 1e-5,
            "{layout:?}: export differs by {}",
            max_diff(&a, &b)
        );
        assert!(
            max_diff(&a, &c) < 1e-5,
            "{layout:?}: export with preprocessing differs by {}",
            max_diff(&a, &c)
        );
        // The same numbers as the head on the cached features.
        let h = headstart::head::file::Head::load(&head).unwrap();
        let split = FeatureCache::open(&cache)
            .unwrap()
            .read_split("test")
            .unwrap();
        let n = split.len();
        let probs = h.probabilities(split.features, n).unwrap();
        for (i, p) in split.paths.iter().enumerate() {
            let row = &a[s(&data.join(p))];
            close(row, probs.row(i).as_slice().unwrap(), 1e-6);
        }
    }
}

#[test]
fn score_reports_bad_files_resumes_and_formats() {
    let (d, data, model, cache) = tiny_features(&["cat", "dog"], 4, 1);
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "2",
        "-q",
    ]);
    let test = data.join("test");
    std::fs::write(test.join("cat/broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    std::fs::write(
        test.join("dog/with, comma.png"),
        std::fs::read(test.join("dog/dog0.png")).unwrap(),
    )
    .unwrap();
    let out = d.path().join("s.csv");
    let o = run(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        s(&test),
        "--out",
        s(&out),
        "-q",
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("scored 9 images (1 failed)") && log.contains("broken.png"),
        "{log}"
    );
    let full = std::fs::read_to_string(&out).unwrap();
    assert_eq!(full.lines().count(), 11, "{full}");
    let bad = full.lines().find(|l| l.contains("broken.png")).unwrap();
    assert!(
        bad.ends_with(|c: char| c.is_alphanumeric() || c == ')' || c == '"') && bad.contains(",,,"),
        "{bad}"
    );
    assert!(
        full.contains("\"") && full.contains("with, comma.png"),
        "{full}"
    );
    // A path that is not there gets its row too (it stopped the run), unless none is there.
    let gone = d.path().join("gone.jpg");
    let two = ok(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        s(&gone),
        s(&test.join("dog/dog0.png")),
        "-q",
    ]);
    let row = two
        .lines()
        .find(|l| l.contains("gone.jpg"))
        .unwrap_or_else(|| panic!("{two}"));
    assert!(row.contains("No such file"), "{two}");
    assert!(
        two.lines()
            .any(|l| l.contains("dog0.png") && !l.contains("No such")),
        "{two}"
    );
    fails(
        &["score", "--model", s(&model), "--head", s(&head), s(&gone)],
        &["gone.jpg", "No such file"],
    );
    // Interrupted after 4 rows and half a line: --resume writes only the rest, once each.
    let keep: Vec<&str> = full.lines().take(5).collect();
    std::fs::write(&out, format!("{}\n{}", keep.join("\n"), "torn,li")).unwrap();
    let log = ok(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        s(&test),
        "--out",
        s(&out),
        "--resume",
        "-q",
    ]);
    assert!(log.contains("4 already in the output"), "{log}");
    let resumed = std::fs::read_to_string(&out).unwrap();
    let mut a: Vec<&str> = resumed.lines().collect();
    let mut b: Vec<&str> = full.lines().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // --top-k and --threshold; JSON lines.
    let j = d.path().join("s.jsonl");
    ok(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        s(&test.join("cat")),
        "--out",
        s(&j),
        "--top-k",
        "1",
        "--threshold",
        "0.0",
        "-q",
    ]);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&j)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .any(|r| r["error"].is_string() && r["path"].as_str().unwrap().ends_with("broken.png")));
    let first = rows.iter().find(|r| r["predicted"].is_string()).unwrap();
    assert_eq!(
        first["predicted"], "dog",
        "threshold 0 makes every image the second class"
    );
    assert_eq!(first["top"].as_array().unwrap().len(), 1);
    // Refusals: another base model; an exported model given a head is fine, a base without one is not.
    let other = save_model(d.path(), "other.onnx", &{
        let mut sp = CnnSpec::tiny(Layout::Nchw, Some((32, 32)));
        sp.seed = 9;
        sp
    });
    fails(
        &["score", "--model", s(&other), "--head", s(&head), s(&test)],
        &["base models differ"],
    );
    fails(
        &[
            "export",
            "--model",
            s(&other),
            "--head",
            s(&head),
            "--out",
            s(&d.path().join("x.onnx")),
        ],
        &["base models differ"],
    );
    fails(
        &["score", "--model", s(&model), s(&test)],
        &["no --head given"],
    );
}
