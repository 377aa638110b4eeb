//! CLI tests: recipes, test-time augmentation and cached augmentation.

use super::*;

/// `--recipe seed` is the seed's head bit for bit (the same bytes as its flags spelled out), any
/// training flag turns `auto` into those flags, and `auto` is deterministic, says what it chose and
/// why, keeps that in the head file, and evaluates well (its standardisation is folded into the
/// first layer, so evaluate and export need nothing else).
#[test]
fn train_head_recipes_seed_and_auto() {
    use headstart::head::file::Head;
    let (d, _data, _model, cache) = tiny_features(&["red", "green", "blue"], 10, 5);
    let head = |name: &str| d.path().join(name);
    // Average-pooled (16 features, not 1,024 flattened): the recipes are the same, the tests'
    // debug build trains them in a fraction of the time.
    let train = |out: &Path, extra: &[&str]| {
        let mut a = vec!["train-head", s(&cache), "--out", s(out), "--pool", "avg"];
        a.extend_from_slice(extra);
        ok(&a)
    };
    train(&head("seed.h5"), &["--recipe", "seed"]);
    let o = train(
        &head("flags.h5"),
        &[
            "--head",
            "dense:256:relu,dropout:0.5",
            "--optimizer",
            "rmsprop",
            "--lr",
            "2e-5",
            "--epochs",
            "30",
            "--batch-size",
            "20",
        ],
    );
    assert!(o.contains("the seed recipe with the flags given"), "{o}");
    let (a, b) = (
        Head::load(&head("seed.h5")).unwrap(),
        Head::load(&head("flags.h5")).unwrap(),
    );
    assert_eq!(a.network, b.network);
    assert_eq!(a.spec, "dense:256:relu,dropout:0.5");

    let o = train(&head("auto.h5"), &[]);
    for want in [
        "auto: ",
        "logistic regression, C=1",
        "linear, L2 1e-2",
        "mlp 256",
        "auto: chose",
        "refit on",
    ] {
        assert!(o.contains(want), "{want}: {o}");
    }
    train(&head("auto2.h5"), &[]);
    let (c, c2) = (
        Head::load(&head("auto.h5")).unwrap(),
        Head::load(&head("auto2.h5")).unwrap(),
    );
    assert_eq!(c.network, c2.network, "auto is deterministic");
    let training: serde_json::Value = serde_json::from_str(&c.training).unwrap();
    assert_eq!(training["settings"]["recipe"], "auto");
    assert_eq!(
        training["settings"]["candidates"].as_array().unwrap().len(),
        5
    );
    assert!(
        training["settings"]["reason"].as_str().unwrap().len() > 10,
        "{training}"
    );
    let e = ok(&[
        "evaluate",
        "--head",
        s(&head("auto.h5")),
        "--features",
        s(&cache),
        "--json",
    ]);
    let acc = json(&e)["metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "auto on separable colours: {acc}");
}

/// `extract --tta flip` caches the mirrored test images in test's order; `evaluate` averages the
/// plain and mirrored probabilities (log loss equal to averaging them by hand), `--no-tta` does not.
#[test]
fn tta_flip_is_cached_and_averaged_by_evaluate() {
    use headstart::head::file::Head;
    let (d, data, m, out) = tiny_setup(4);
    extract(
        &m,
        &data,
        &out,
        &[
            "--preprocess",
            "torch",
            "--augment",
            "flip",
            "--tta",
            "flip",
            "-q",
        ],
    );
    let cache = FeatureCache::open(&out).unwrap();
    for split in ["train", "test", "train_flip", "test_flip"] {
        assert!(
            cache.meta.splits.iter().any(|s| s == split),
            "{split}: {:?}",
            cache.meta.splits
        );
    }
    let (t, f) = (
        cache.read_split("test").unwrap(),
        cache.read_split("test_flip").unwrap(),
    );
    assert_eq!(t.paths, f.paths);
    assert_ne!(
        t.features, f.features,
        "the mirrored gradients give other features"
    );
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&out),
        "--out",
        s(&head),
        "--epochs",
        "3",
        "-q",
    ]);
    let (avg, plain) = (
        evaluate_json(&head, &out, &[]),
        evaluate_json(&head, &out, &["--no-tta"]),
    );
    assert_eq!(avg["tta"], true);
    assert_eq!(plain["tta"], false);
    let h = Head::load(&head).unwrap();
    let n = t.labels.len();
    let p = (h.probabilities(t.features.clone(), n).unwrap()
        + h.probabilities(f.features.clone(), n).unwrap())
        * 0.5;
    let ll: f64 = (0..n)
        .map(|i| -(p[[i, t.labels[i] as usize]].max(1e-7) as f64).ln())
        .sum::<f64>()
        / n as f64;
    let got = avg["metrics"]["log_loss"].as_f64().unwrap();
    assert!((got - ll).abs() < 1e-4, "log loss {got} vs {ll} by hand");
    assert_ne!(avg["metrics"]["log_loss"], plain["metrics"]["log_loss"]);
    // score --features averages the same way: each row's probabilities are the hand-made mean.
    let scores = d.path().join("s.csv");
    let log = ok(&[
        "score",
        "--features",
        s(&out),
        "--head",
        s(&head),
        "--out",
        s(&scores),
    ]);
    assert!(log.contains("averaged with its mirrored copy"), "{log}");
    let text = std::fs::read_to_string(&scores).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), n, "{text}");
    for (i, row) in rows.iter().enumerate() {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols[0], t.paths[i]);
        for c in 0..h.classes.len() {
            let got: f32 = cols[2 + c].parse().unwrap();
            assert!((got - p[[i, c]]).abs() < 1e-5, "{row} vs {:?}", p.row(i));
        }
    }
}

/// Test-time flips agree everywhere: `score --tta flip` with base + head, the `export --tta flip`
/// model (with and without preprocessing inside) and the averaged cached features of `extract --tta
/// flip` give the same probabilities, in both layouts. The centre crop is off-centre by a pixel on
/// photos 43 and 49 wide (a crop of 26 from 43 leaves 8 and 9), where mirroring the photo before
/// the crop moved the box and the export disagreed.
#[test]
fn tta_flip_agrees_in_score_export_and_the_cache() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let (d, data, _, cache) = tiny_setup(4);
        let model = save_model(d.path(), "m.onnx", &CnnSpec::tiny(layout, Some((32, 32))));
        extract(
            &model,
            &data,
            &cache,
            &[
                "--preprocess",
                "torch",
                "--resize",
                "crop",
                "--crop-fraction",
                "0.875",
                "--tta",
                "flip",
                "-q",
            ],
        );
        let head = d.path().join("h.h5");
        // A head still unsure after 3 epochs, so the mirror moves its probabilities.
        ok(&[
            "train-head",
            s(&cache),
            "--out",
            s(&head),
            "--recipe",
            "seed",
            "--epochs",
            "3",
            "-q",
        ]);
        let (exp, exp8) = (d.path().join("t.onnx"), d.path().join("t8.onnx"));
        let base = [
            "export",
            "--model",
            s(&model),
            "--head",
            s(&head),
            "--tta",
            "flip",
            "--out",
        ];
        ok(&[&base[..], &[s(&exp)]].concat());
        ok(&[&base[..], &[s(&exp8), "--with-preprocessing"]].concat());
        let test = data.join("test");
        let out = |name: &str| d.path().join(name);
        let score = |extra: &[&str], o: &Path| {
            let mut a = vec!["score", s(&test), "--out", s(o), "-q"];
            a.extend_from_slice(extra);
            ok(&a);
            scored(o)
        };
        let a = score(
            &["--model", s(&model), "--head", s(&head), "--tta", "flip"],
            &out("a.csv"),
        );
        let plain = score(&["--model", s(&model), "--head", s(&head)], &out("p.csv"));
        let b = score(&["--model", s(&exp)], &out("b.csv"));
        let c = score(&["--model", s(&exp8)], &out("c.csv"));
        assert_eq!(a.len(), 8);
        for (what, other) in [("export", &b), ("export with preprocessing", &c)] {
            let diff = max_diff(&a, other);
            assert!(diff < 1e-5, "{layout:?}: {what} differs by {diff}");
        }
        let moved = max_diff(&a, &plain);
        assert!(moved > 1e-3, "the mirror changes the numbers: {moved}");
        let h = headstart::head::file::Head::load(&head).unwrap();
        let f = FeatureCache::open(&cache).unwrap();
        let (t, tf) = (
            f.read_split("test").unwrap(),
            f.read_split("test_flip").unwrap(),
        );
        let n = t.len();
        let p = (h.probabilities(t.features.clone(), n).unwrap()
            + h.probabilities(tf.features.clone(), n).unwrap())
            * 0.5;
        for (i, path) in t.paths.iter().enumerate() {
            close(&a[s(&data.join(path))], p.row(i).as_slice().unwrap(), 1e-5);
        }
    }
}

/// `extract --augment flip,crop,scale,color --copies K` caches K seeded augmented copies of each train
/// image (split train_aug, copy j of row i at j * n + i) and nothing for test; a rerun gives the same
/// rows; `train-head` (auto) trains on them, and says so; other transforms without --copies are refused.
#[test]
fn augmented_copies_are_cached_seeded_and_used_by_auto() {
    let (d, data, m, out) = tiny_setup(4);
    let args = |out: &Path| {
        vec![
            "extract".to_string(),
            "--model".into(),
            s(&m).into(),
            "--data".into(),
            s(&data).into(),
            "--out".into(),
            s(out).into(),
            "--preprocess".into(),
            "torch".into(),
            "--augment".into(),
            "flip,crop,scale,color".into(),
            "--copies".into(),
            "3".into(),
            "-q".into(),
        ]
    };
    assert!(bin().args(args(&out)).output().unwrap().status.success());
    let again = d.path().join("again.h5");
    assert!(bin().args(args(&again)).output().unwrap().status.success());
    let (c, c2) = (
        FeatureCache::open(&out).unwrap(),
        FeatureCache::open(&again).unwrap(),
    );
    assert!(!c
        .meta
        .splits
        .iter()
        .any(|s| s == "test_aug" || s == "train_flip"));
    let (train, aug) = (
        c.read_split("train").unwrap(),
        c.read_split("train_aug").unwrap(),
    );
    let n = train.len();
    assert_eq!(aug.len(), 3 * n);
    assert_eq!(aug.paths[2 * n..], train.paths[..]);
    assert_eq!(
        aug.features,
        c2.read_split("train_aug").unwrap().features,
        "seeded"
    );
    let w = train.features.len() / n;
    for j in 0..3 {
        assert_ne!(
            aug.features[j * n * w..(j + 1) * n * w],
            train.features[..],
            "copy {j} is augmented"
        );
    }
    let o = ok(&["train-head", s(&out), "--out", s(&d.path().join("h.h5"))]);
    // Three copies of each row trained on (the validation rows held out of train get none).
    let rows = o
        .split("train ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap();
    let trained: usize = rows.parse().unwrap();
    assert!(trained < n, "{o}");
    assert!(
        o.contains(&format!("+ {} augmented train rows", 3 * trained)),
        "{o}"
    );
    let x = d.path().join("x.h5");
    let refused = |extra: &[&str], want: &str| {
        let mut a = vec![
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&x),
            "--preprocess",
            "torch",
        ];
        a.extend_from_slice(extra);
        fails(&a, &[want]);
    };
    refused(&["--augment", "crop"], "need --copies");
    refused(
        &["--augment", "rotate", "--copies", "2"],
        "unknown augmentation 'rotate'",
    );
}
