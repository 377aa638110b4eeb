//! CLI tests: train-head and evaluate.

use super::*;

/// DIR/{train,test}/<class>/ of noisy images whose colour depends on the class (separable by a
/// tiny random CNN), `per_class` images per class and split.
pub(crate) fn colour_dataset(root: &Path, classes: &[&str], per_class: u32) {
    let tints = [
        [200u32, 60, 60],
        [60, 60, 200],
        [60, 190, 60],
        [200, 200, 60],
    ];
    for split in ["train", "test"] {
        for (ci, class) in classes.iter().enumerate() {
            for k in 0..per_class {
                let p = root.join(split).join(class).join(format!("{class}{k}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let t = tints[ci % tints.len()];
                let seed = k * 7 + ci as u32 * 101 + (split == "test") as u32 * 1000;
                image::RgbImage::from_fn(36, 36, |x, y| {
                    let n = (x * 31 + y * 17 + seed * 13) % 50;
                    image::Rgb([(t[0] + n) as u8, (t[1] + n) as u8, (t[2] + n) as u8])
                })
                .save(&p)
                .unwrap();
            }
        }
    }
}

/// Extracts a colour dataset with the tiny model (weight seed `seed`): (dir, data, model, cache).
pub(crate) fn tiny_features(
    classes: &[&str],
    per_class: u32,
    seed: u64,
) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let d = tmp();
    let data = d.path().join("data");
    colour_dataset(&data, classes, per_class);
    let mut spec = CnnSpec::tiny(Layout::Nchw, Some((32, 32)));
    spec.seed = seed;
    let model = save_model(d.path(), "tiny.onnx", &spec);
    let cache = d.path().join("f.h5");
    extract(&model, &data, &cache, &["--preprocess", "torch", "-q"]);
    (d, data, model, cache)
}

pub(crate) fn json(out: &str) -> serde_json::Value {
    let start = out.find('{').expect("a JSON object in the output");
    serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `evaluate --head HEAD --features FEATURES --json EXTRA...`, parsed.
pub(crate) fn evaluate_json(head: &Path, features: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "evaluate",
        "--head",
        s(head),
        "--features",
        s(features),
        "--json",
    ];
    a.extend_from_slice(extra);
    let o = run(&a);
    assert!(o.status.success(), "headstart {a:?} failed:\n{}", text(&o));
    json(&String::from_utf8_lossy(&o.stdout))
}

#[test]
fn train_head_then_evaluate_on_cache_and_on_images_agree() {
    let (d, data, model, cache) = tiny_features(&["cat", "dog"], 12, 1);
    let head = d.path().join("h.h5");
    let log = ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--head",
        "dense:16:relu,dropout:0.2",
        "--optimizer",
        "adam",
        "--epochs",
        "25",
        "--batch-size",
        "4",
        "--val-split",
        "0.25",
    ]);
    assert!(log.contains("train 18 rows, validation 6 rows"), "{log}");
    assert!(log.contains("kept epoch 25 of 25"), "{log}");
    let csv = std::fs::read_to_string(d.path().join("h.history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 26, "{csv}");
    assert!(csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"));
    let first: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let last: f64 = csv
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last < first,
        "training loss did not fall: {first} -> {last}"
    );

    let on_cache = json(&ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--json",
    ]));
    assert_eq!(on_cache["split"], "test");
    let m = &on_cache["metrics"];
    assert_eq!(m["n"], 24);
    assert!(m["accuracy"].as_f64().unwrap() >= 0.9, "{m}");
    let conf: u64 = m["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(conf, 24);
    let on_images = json(&ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--preprocess",
        "torch",
        "--json",
    ]));
    assert_eq!(on_images["metrics"], on_cache["metrics"]);
    let text = ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--split",
        "train",
    ]);
    assert!(
        text.contains("accuracy:") && text.contains("confusion (rows: true"),
        "{text}"
    );
}

#[test]
fn same_seed_gives_bit_identical_heads_and_python_reads_them() {
    let (d, _data, _model, cache) = tiny_features(&["a", "b", "c"], 6, 1);
    // One thread for matrixmultiply too when `one_thread`.
    let train = |name: &str, seed: &str, one_thread: bool| {
        let out = d.path().join(name);
        let mut args = vec![
            "train-head",
            s(&cache),
            "--out",
            s(&out),
            "--seed",
            seed,
            "--epochs",
            "4",
            "-q",
            "--head",
            "dense:8:gelu,bn,dropout:0.3,dense:4:leaky_relu",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
            "--nesterov",
            "--decay",
            "0.01",
        ];
        let mut cmd = bin();
        if one_thread {
            args.extend_from_slice(&["--threads", "1"]);
            cmd.env("MATMUL_NUM_THREADS", "1");
        }
        let o = cmd.args(&args).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        // --quiet keeps the closing lines only (it used to print nothing at all).
        let stdout = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        assert!(
            lines[0].starts_with("kept epoch 4 of 4: val_loss"),
            "{stdout}"
        );
        assert!(lines[1].starts_with("best: val_loss"), "{stdout}");
        assert!(
            lines[2].starts_with("wrote ") && lines[2].contains(name),
            "{stdout}"
        );
        headstart::head::file::Head::load(&out).unwrap()
    };
    let a = train("a.h5", "7", false);
    let b = train("b.h5", "7", false);
    let c = train("c.h5", "8", false);
    assert_eq!(a.network, b.network, "same seed, different weights");
    assert_ne!(a.network, c.network, "the seed changed nothing");
    assert_eq!(
        a.network.output_dim(),
        Some(3),
        "three classes need a softmax of 3"
    );
    // Same numbers on one thread (ours and matrixmultiply's) or several.
    let one = train("one.h5", "7", true);
    assert_eq!(one.network, a.network);

    // The README's Python reader (h5py + numpy) gives headstart's probabilities.
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    let o = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/head_predict.py"))
        .args([s(&d.path().join("a.h5")), s(&cache), "test"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["classes"], serde_json::json!(["a", "b", "c"]));
    let py_probs: Vec<f32> = v["probs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let split = FeatureCache::open(&cache)
        .unwrap()
        .read_split("test")
        .unwrap();
    let n = split.len();
    let ours = a.probabilities(split.features, n).unwrap();
    close(ours.as_slice().unwrap(), &py_probs, 1e-5);
}

#[test]
fn logistic_baseline_and_pooling_options() {
    let (d, _data, _model, cache) = tiny_features(&["cat", "dog"], 10, 1);
    let out = d.path().join("lr.h5");
    let log = ok(&[
        "train-head",
        s(&cache),
        "--head",
        "logistic",
        "--C",
        "0.5",
        "--pool",
        "avg",
        "--out",
        s(&out),
    ]);
    assert!(log.contains("linfa-logistic (C=0.5"), "{log}");
    assert!(log.contains("avg [16, 8, 8] -> 16"), "{log}");
    let m = json(&ok(&[
        "evaluate",
        "--head",
        s(&out),
        "--features",
        s(&cache),
        "--json",
    ]));
    assert!(m["metrics"]["accuracy"].as_f64().unwrap() >= 0.9, "{m}");
    assert!(m["metrics"]["roc_auc"].as_f64().is_some());
    let h = headstart::head::file::Head::load(&out).unwrap();
    assert_eq!(
        (h.kind, h.pool),
        (
            headstart::head::file::HeadKind::Logistic,
            headstart::head::net::Pool::Avg
        )
    );
    // Max pooling, early stopping on the training loss, clipping, schedule and class weights.
    let log = ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&d.path().join("m.h5")),
        "--pool",
        "max",
        "--head",
        "none",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.01",
        "--epochs",
        "50",
        "--patience",
        "2",
        "--monitor",
        "loss",
        "--min-delta",
        "0.5",
        "--restore-best",
        "--clip-norm",
        "1",
        "--clip-value",
        "0.5",
        "--schedule",
        "cosine",
        "--class-weight",
        "balanced",
        "--loss",
        "focal",
        "--val-split",
        "0",
    ]);
    assert!(
        log.contains("max [16, 8, 8] -> 16 -> none -> 1 sigmoid"),
        "{log}"
    );
    assert!(log.contains("stopped early"), "{log}");
}

#[test]
fn train_head_and_evaluate_refuse_bad_input_with_both_sides() {
    let (d, _data, _model, cache) = tiny_features(&["cat", "dog"], 4, 1);
    let (_d2, _data2, _model2, other_model_cache) = tiny_features(&["cat", "dog"], 4, 2);
    let (_d3, _data3, _model3, other_classes) = tiny_features(&["cat", "fox"], 4, 1);
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "1",
        "-q",
    ]);
    let sha = |c: &Path| FeatureCache::open(c).unwrap().meta.model_sha256;
    fails(
        &[
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&other_model_cache),
        ],
        &["base models differ", &sha(&cache), &sha(&other_model_cache)],
    );
    fails(
        &[
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&other_classes),
        ],
        &["class lists differ", "[cat, dog]", "[cat, fox]"],
    );
    fails(
        &["evaluate", "--head", s(&cache), "--features", s(&cache)],
        &["not a headstart head file"],
    );
    fails(
        &["evaluate", "--head", s(&head), "--features", s(&head)],
        &["is a head file (train-head's output), not a feature cache"],
    );
    fails(
        &[
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&cache),
            "--split",
            "val",
        ],
        &["no split 'val'", "train, test"],
    );
    fails(
        &["train-head", s(&cache), "--head", "dense:0:relu"],
        &["--head", "dense:0:relu", "positive integer"],
    );
    fails(
        &["train-head", s(&d.path().join("missing.h5"))],
        &["missing.h5", "not found"],
    );
    fails(
        &[
            "train-head",
            s(&cache),
            "--patience",
            "2",
            "--val-split",
            "0",
        ],
        &["no validation data"],
    );
    fails(
        &[
            "train-head",
            s(&cache),
            "--optimizer",
            "adam",
            "--momentum",
            "0.9",
        ],
        &["--momentum: applies only when the optimizer is sgd"],
    );
    fails(
        &[
            "train-head",
            s(&cache),
            "--lr",
            "1e30",
            "--optimizer",
            "sgd",
            "--epochs",
            "5",
        ],
        &["diverged", "lower --lr"],
    );
    // A failed run leaves an earlier head untouched.
    let before = std::fs::read(&head).unwrap();
    fails(
        &["train-head", s(&cache), "--out", s(&head), "--epochs", "0"],
        &["--epochs"],
    );
    assert_eq!(std::fs::read(&head).unwrap(), before);
}

/// `train-head --exclude`: an audit.tsv's photos leave the train and validation rows (counted by
/// split), the list's sha256 is kept with the head, and a list naming a photo the cache does not
/// hold is refused naming it.
#[test]
fn train_head_exclude_leaves_listed_rows_out() {
    let (d, _data, _model, cache) = tiny_features(&["cat", "dog"], 12, 1);
    let c = FeatureCache::open(&cache).unwrap();
    let train = c.read_split("train").unwrap().paths;
    let test = c.read_split("test").unwrap().paths;
    let list = d.path().join("audit.tsv");
    std::fs::write(
        &list,
        format!(
            "file\tsplit\tissue\tscore\tgiven\tsuggested\tpair\n{}\ttrain\tlabel\t0.01\tcat\tdog\t\n{}\ttest\tleakage\t0.99\tdog\t\t{}\n",
            train[0], test[0], train[1]
        ),
    )
    .unwrap();
    let rows = |log: &str| -> usize {
        let l = log.lines().find(|l| l.starts_with("train-head:")).unwrap();
        let n = |w: &str| -> usize {
            let at = l.find(w).unwrap() + w.len();
            l[at..].split_whitespace().next().unwrap().parse().unwrap()
        };
        n("; train ") + n("validation ")
    };
    let head = d.path().join("h.h5");
    let all = rows(&train_head(&cache, &head, &["--epochs", "2"]));
    let log = train_head(&cache, &head, &["--epochs", "2", "--exclude", s(&list)]);
    assert!(log.contains("3 listed photos left out"), "{log}");
    assert!(log.contains("(1 are in other splits"), "{log}");
    assert_eq!(rows(&log), all - 2, "{log}");
    let h = headstart::head::file::Head::load(&head).unwrap();
    let t: serde_json::Value = serde_json::from_str(&h.training).unwrap();
    assert_eq!(t["excluded"]["files"], 3, "{t}");
    assert_eq!(t["excluded"]["sha256"].as_str().unwrap().len(), 64, "{t}");
    let bad = d.path().join("bad.txt");
    std::fs::write(&bad, format!("{}\nnot/in/cache.png\n", train[0])).unwrap();
    fails(
        &train_line(&cache, &head, &["--exclude", s(&bad)]),
        &[
            "bad.txt",
            "1 of its 2 files are not in the cache",
            "not/in/cache.png",
        ],
    );
}
