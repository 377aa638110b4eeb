//! CLI tests: finetune.

use super::*;

/// `finetune` on the tiny model: phase 1 head, phase 2 lowers the training loss, the exported file
/// matches candle in ONNX Runtime, mirrored copies are cached, and a given head must come from the
/// same base.
#[test]
fn finetune_trains_the_top_block_and_exports_a_matching_model() {
    let (d, data, model, cache) = tiny_features(&["a", "b"], 8, 1);
    let out = d.path().join("ft.onnx");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "finetune",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--from-layer",
            "block2_conv1",
            "--preprocess",
            "torch",
            "--epochs",
            "8",
            "--batch-size",
            "4",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--out",
            s(&out),
            "--json",
            "-q",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let run_json = |extra: &[&str]| {
        let a = args(extra);
        json(&ok(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>()))
    };
    let j = run_json(&["--freeze-epochs", "3", "--augment", "flip"]);
    let losses: Vec<f64> = j["phase2"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 8);
    assert!(
        losses[7] < losses[0],
        "training loss did not fall: {losses:?}"
    );
    assert_eq!(j["phase1"]["epochs"].as_array().unwrap().len(), 3);
    let parity = j["parity_max_abs"].as_f64().unwrap();
    assert!(parity < 1e-4, "ONNX Runtime vs candle: {parity}");
    assert!(j["parity_images"].as_u64().unwrap() > 0);
    assert!(j["test_finetuned"][1].as_f64().unwrap() > 0.5);
    assert_eq!(j["trained_params"].as_u64().unwrap(), 16 * 8 * 9 + 16);
    for f in [
        "ft.base.onnx",
        "ft.head.h5",
        "ft.phase1.history.csv",
        "ft.phase2.history.csv",
    ] {
        assert!(d.path().join(f).exists(), "{f} missing");
    }
    assert!(
        !d.path().join("ft.ckpt.h5").exists(),
        "a finished run removes its checkpoint"
    );
    // Killed after epoch 3 of phase 2 (with the test hooks): the rerun continues from the
    // checkpoint and ends where the uninterrupted run ended.
    let hooks = cfg!(feature = "test-hooks");
    let a = args(&["--freeze-epochs", "3", "--augment", "flip"]);
    if hooks {
        let killed = bin().args(&a).env(ABORT_AT, "finetune:3").output().unwrap();
        assert!(!killed.status.success());
        assert!(d.path().join("ft.ckpt.h5").exists());
        // Continued with fewer epochs than its checkpoint holds: refused, the checkpoint kept.
        let mut fewer = a.clone();
        let at = fewer.iter().position(|x| x == "--epochs").unwrap();
        fewer[at + 1] = "1".into();
        let o = bin().args(&fewer).output().unwrap();
        failed(&o, &["ft.ckpt.h5", "past --epochs 1"]);
        assert!(d.path().join("ft.ckpt.h5").exists());
    }
    let r = bin()
        .args(&a)
        .args(["--progress", "none"])
        .output()
        .unwrap();
    let r = text(&r);
    let j2 = json(&r[r.find("{\"out").expect("json")..]);
    let again: Vec<f64> = j2["phase2"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(again.len(), 8);
    for (x, y) in losses.iter().zip(&again) {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1e-3),
            "{losses:?} vs {again:?}"
        );
    }
    if hooks {
        assert!(j2["phase1"].is_null(), "phase 1 is not run again");
    }
    let inputs = ok(&["summary", s(&d.path().join("ft.inputs.h5"))]);
    assert!(inputs.contains("split train_flip: 16 images"), "{inputs}");
    // The exported model scores images on its own.
    let rows = ok(&["score", "--model", s(&out), s(&data.join("test"))]);
    assert_eq!(
        rows.lines().filter(|l| l.contains(".png")).count(),
        16,
        "{rows}"
    );

    // With a head from train-head on the same base: no phase 1.
    ok(&["train-head", s(&cache), "--epochs", "3", "-q"]);
    let head = d.path().join("f.head.h5");
    let j = run_json(&["--head", s(&head)]);
    assert!(j["phase1"].is_null());
    // A head the auto recipe refit on train + validation is said to have seen the validation rows.
    let auto = d.path().join("auto.head.h5");
    ok(&["train-head", s(&cache), "--out", s(&auto), "-q"]);
    let a = args(&["--head", s(&auto)]);
    let t = text(&bin().args(&a).output().unwrap());
    assert!(
        t.contains("auto.head.h5: this head was refit on train + validation rows"),
        "{t}"
    );
    let a = args(&["--head", s(&head)]);
    let t = text(&bin().args(&a).output().unwrap());
    assert!(!t.contains("refit on train + validation"), "{t}");
    // A head of another base is refused, naming both.
    let mut spec = CnnSpec::tiny(Layout::Nchw, Some((32, 32)));
    spec.seed = 2;
    let other = save_model(d.path(), "other.onnx", &spec);
    let a = args(&["--head", s(&head)]);
    let mut a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    a[2] = s(&other);
    fails(&a, &["base models differ", "other.onnx"]);
    // Blocks come from presets; the tiny model has none.
    let mut a = a.clone();
    a[5] = "--unfreeze";
    a[6] = "block5";
    a[2] = s(&model);
    fails(&a, &["--unfreeze block5", "--from-layer"]);
    let mut a = a.clone();
    a[5] = "--from-layer";
    a[6] = "nowhere";
    fails(&a, &["no node named 'nowhere'"]);
    // A file of the user's named like the checkpoint is refused before any work, and kept (it was
    // overwritten during phase 2, then deleted, with exit 0).
    let ckpt = d.path().join("ft.ckpt.h5");
    std::fs::write(&ckpt, "my notes").unwrap();
    let a = args(&["--head", s(&head)]);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    fails(&a, &["ft.ckpt.h5", "a headstart finetune checkpoint"]);
    assert_eq!(std::fs::read_to_string(&ckpt).unwrap(), "my notes");
}

#[test]
fn finetune_checks_its_settings_before_fetching_a_model_by_name() {
    let d = tmp();
    let o = bin()
        .env("HEADSTART_HOME", d.path())
        .env("HEADSTART_OFFLINE", "1")
        .args([
            "finetune",
            "--model",
            "vgg16",
            "--data",
            s(d.path()),
            "--unfreeze",
            "block5",
            "--out",
            s(&d.path().join("t.onnx")),
            "--lr",
            "0",
        ])
        .output()
        .unwrap();
    let t = failed(&o, &["--lr: must be positive, got 0"]);
    assert!(!t.contains("not downloaded"), "{t}");
    assert!(!d.path().join("models").exists(), "{t}");
}
