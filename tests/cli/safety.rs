//! CLI tests: never lose a user's data.
//!
//! Each case of the adversarial review (issue 28): outputs onto inputs, racing writers, paths read
//! from files that leave their root, score output rules, panics and hangs, sizes, NaN.

use super::*;

/// Runs `n` copies of `args` at once; returns each one's (success, stdout and stderr, stdout).
pub(crate) fn race(args: &[String], n: usize) -> Vec<(bool, String, String)> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            bin()
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            (o.status.success(), text(&o), stdout)
        })
        .collect()
}

pub(crate) fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A finished two-shard run of the tiny dataset: (dir, data, model, run).
pub(crate) fn two_shard_run() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (d, data, m, _) = tiny_setup(4);
    let run = d.path().join("run");
    super::shards::plan(&data, 2, &run);
    for k in ["0", "1"] {
        succeeds(&mut shard_cmd(&run, &m, &[("HEADSTART_SHARD", k)], &[]));
    }
    (d, data, m, run)
}

/// `DIR/c.h5` extracted from `data` with `m` (`--preprocess tf`) and `DIR/h.h5` trained on it for
/// one epoch: (cache, head).
pub(crate) fn cache_and_head(dir: &Path, m: &Path, data: &Path) -> (PathBuf, PathBuf) {
    let cache = dir.join("c.h5");
    tf_extract(m, data, &cache);
    let head = dir.join("h.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "1",
        "-q",
    ]);
    (cache, head)
}

/// Runs `python -c code args...` in the test venv (h5py), asserting success.
pub(crate) fn py(code: &str, args: &[&str]) {
    let o = Command::new(venv_python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "python failed:\n{}", text(&o));
}

#[test]
fn racing_merges_and_evaluates_of_one_run_never_leave_a_corrupt_file() {
    let (d, _data, _m, run) = two_shard_run();
    let serial = d.path().join("serial.h5");
    ok(&["merge", s(&run), "--out", s(&serial)]);
    let out = d.path().join("f.h5");
    for round in 0..3 {
        let results = race(&strs(&["merge", s(&run), "--out", s(&out)]), 4);
        assert!(results.iter().any(|r| r.0), "round {round}: {results:?}");
        for (good, log, _) in &results {
            assert!(
                *good || log.contains("another headstart run"),
                "round {round}: {log}"
            );
        }
        same_rows(&out, &serial);
    }
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&serial),
        "--out",
        s(&head),
        "--epochs",
        "2",
        "-q",
    ]);
    let want = evaluate_json(&head, &serial, &[])["accuracy"].clone();
    for round in 0..3 {
        let _ = std::fs::remove_file(run.join("merged.h5"));
        let args = strs(&[
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&run),
            "--json",
        ]);
        for (good, log, stdout) in race(&args, 3) {
            assert!(good, "round {round}: {log}");
            assert_eq!(json(&stdout)["accuracy"], want, "round {round}: {log}");
        }
        same_rows(&run.join("merged.h5"), &serial);
    }
    // A merged file that is not the merge of the shards (here: garbage) is merged again, not reused.
    std::fs::write(run.join("merged.h5"), b"garbage").unwrap();
    assert_eq!(evaluate_json(&head, &run, &[])["accuracy"], want);
    same_rows(&run.join("merged.h5"), &serial);
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .chain(std::fs::read_dir(&run).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn split_never_deletes_its_source_or_a_folder_it_did_not_write() {
    let d = tmp();
    let top = d.path().join("D");
    let dump = top.join("dump");
    pet_images(&dump, 6, 6);
    std::fs::write(top.join("MANIFEST.tsv"), b"anything").unwrap();
    std::fs::write(top.join("notes.txt"), b"mine").unwrap();
    let split = |src: &Path, out: &Path, force: bool| {
        let mut a = strs(&[
            "split",
            s(src),
            "--out",
            s(out),
            "--train",
            "2",
            "--test",
            "1",
            "--progress",
            "none",
        ]);
        if force {
            a.push("--force".into());
        }
        let o = bin().args(&a).output().unwrap();
        (o.status.success(), text(&o))
    };
    let count = |p: &Path| walk(p).len();
    let before = count(&dump);
    // The source inside the output.
    let (good, log) = split(&dump, &top, true);
    assert!(!good && log.contains("is inside the output"), "{log}");
    // The output inside the source through a symlink.
    std::os::unix::fs::symlink(dump.join("Cat"), d.path().join("link")).unwrap();
    let (good, log) = split(&dump, &d.path().join("link/out"), true);
    assert!(!good && log.contains("is inside the source"), "{log}");
    // A folder with a MANIFEST.tsv that no split wrote, and other files.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("MANIFEST.tsv"),
        b"split\tclass\tfile\tsha256\tsource\n",
    )
    .unwrap();
    std::fs::write(other.join("thesis.pdf"), b"years of work").unwrap();
    let (good, log) = split(&dump, &other, true);
    assert!(!good && log.contains("not an earlier split"), "{log}");
    assert_eq!(
        std::fs::read(other.join("thesis.pdf")).unwrap(),
        b"years of work"
    );
    assert_eq!(count(&dump), before);
    assert_eq!(std::fs::read(top.join("notes.txt")).unwrap(), b"mine");
    // An earlier split is replaced with --force.
    let out = d.path().join("out");
    assert!(split(&dump, &out, false).0);
    let (good, log) = split(&dump, &out, true);
    assert!(good, "{log}");
    assert_eq!(manifest(&out).len(), 6);
    assert_eq!(count(&dump), before);
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let (d, data, m, run) = two_shard_run();
    let model_bytes = std::fs::read(&m).unwrap();
    let refused_as = |args: &[&str], file: &Path, why: &str| {
        let before = std::fs::read(file).unwrap();
        fails(args, &[why]);
        assert_eq!(std::fs::read(file).unwrap(), before, "{args:?}");
    };
    let refused =
        |args: &[&str], file: &Path| refused_as(args, file, "is an input of this command");
    let extract = |out: &Path| {
        strs(&[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(out),
            "--preprocess",
            "tf",
            "-q",
        ])
    };
    let a = extract(&m);
    refused(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &m);
    let inside = data.join("train/a/f.h5");
    let a = extract(&inside);
    fails(
        &a.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        &["inside the input folder"],
    );
    assert!(!inside.exists());
    let cache = d.path().join("c.h5");
    tf_extract(&m, &data, &cache);
    refused(&["train-head", s(&cache), "--out", s(&cache), "-q"], &cache);
    refused(
        &["train-head", s(&cache), "--history", s(&cache), "-q"],
        &cache,
    );
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
    let photo = data.join("test/a/img0.png");
    refused_as(
        &[
            "score",
            "--model",
            s(&m),
            "--head",
            s(&head),
            s(&data),
            "--out",
            s(&photo),
            "--force",
        ],
        &photo,
        "inside the input folder",
    );
    refused(
        &[
            "score",
            "--model",
            s(&m),
            "--head",
            s(&head),
            s(&data),
            "--out",
            s(&head),
            "--force",
        ],
        &head,
    );
    let shard = run.join("shards/shard-00001.h5");
    refused(&["merge", s(&run), "--out", s(&shard)], &shard);
    refused(
        &[
            "export",
            "--model",
            s(&m),
            "--head",
            s(&head),
            "--out",
            s(&m),
        ],
        &m,
    );
    // A file that is not of the kind a command writes is not replaced either.
    let notes = d.path().join("notes.txt");
    std::fs::write(&notes, b"mine").unwrap();
    fails(
        &["train-head", s(&cache), "--out", s(&notes), "-q"],
        &["is not a headstart head file"],
    );
    fails(
        &["merge", s(&run), "--out", s(&notes)],
        &["is not a headstart feature cache"],
    );
    assert_eq!(std::fs::read(&notes).unwrap(), b"mine");
    assert_eq!(std::fs::read(&m).unwrap(), model_bytes);
}

#[test]
fn paths_read_from_markers_and_manifests_stay_inside_the_run() {
    let (d, data, m, run) = two_shard_run();
    let out = d.path().join("f.h5");
    let marker = run.join("done/00001.json");
    let original = std::fs::read_to_string(&marker).unwrap();
    let with = |field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        v[field] = value.into();
        std::fs::write(&marker, v.to_string()).unwrap();
    };
    let elsewhere = d.path().join("x.h5");
    std::fs::copy(run.join("shards/shard-00001.h5"), &elsewhere).unwrap();
    for (output, why) in [
        ("../x.h5", "leaves its root"),
        (s(&elsewhere), "is absolute"),
        ("shards/shard-00000.h5", "this marker's shard writes"),
    ] {
        with("output", output);
        if output.ends_with("00000.h5") {
            // Another shard's file, with that file's hash: still refused.
            let sha = headstart::util::hash::sha256_file(&run.join(output)).unwrap();
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
            v["output_sha256"] = sha.into();
            std::fs::write(&marker, v.to_string()).unwrap();
        }
        fails(
            &["merge", s(&run), "--out", s(&out)],
            &["done/00001.json", "field 'output'", why],
        );
        assert!(!out.exists());
    }
    std::fs::write(&marker, &original).unwrap();
    ok(&["merge", s(&run), "--out", s(&out)]);
    // A manifest line that climbs out of the source, or is absolute, is refused naming the line.
    let run2 = d.path().join("run2");
    super::shards::plan(&data, 1, &run2);
    super::shards::as_earlier_plan(&run2);
    let manifest = run2.join("manifest/shard-00000.txt");
    let lines = std::fs::read_to_string(&manifest).unwrap();
    for bad in ["../../../etc/passwd", "/etc/passwd"] {
        let mut v: Vec<String> = lines.lines().map(str::to_string).collect();
        v[2] = serde_json::to_string(&("train", 0, bad)).unwrap();
        std::fs::write(&manifest, v.join("\n") + "\n").unwrap();
        let o = shard_cmd(&run2, &m, &[("HEADSTART_SHARD", "0")], &[])
            .output()
            .unwrap();
        let t = failed(&o, &[]);
        assert!(
            t.contains("shard-00000.txt") && t.contains("line 3") && t.contains("inside its root"),
            "{t}"
        );
    }
}

#[test]
fn score_refuses_to_overwrite_or_append_to_a_foreign_file_and_keeps_names_and_order() {
    let (d, data, m, _) = tiny_setup(6);
    let (_, head) = cache_and_head(d.path(), &m, &data);
    // Two file names that are not UTF-8 and differ only in the bad byte.
    use std::os::unix::ffi::OsStrExt;
    let odd = data.join("test/a");
    for b in [b'\xff', b'\xfe'] {
        let bytes = [b'x', b, b'.', b'p', b'n', b'g'];
        let name = std::ffi::OsStr::from_bytes(&bytes);
        std::fs::copy(odd.join("img0.png"), odd.join(name)).unwrap();
    }
    let score = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "score",
            "--model",
            s(&m),
            "--head",
            s(&head),
            s(&data),
            "--out",
            s(out),
            "--batch",
            "3",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let out = d.path().join("s.csv");
    // With a head, preprocessing settings would be ignored: refused, naming the flag.
    for flag in [&["--preprocess", "caffe"][..], &["--resize", "crop"]] {
        failed(
            &score(&out, flag),
            &[flag[0], "apply to exported models only"],
        );
    }
    assert!(!out.exists());
    assert!(score(&out, &["--decode-threads", "1"]).status.success());
    let first = std::fs::read(&out).unwrap();
    let t = String::from_utf8_lossy(&first).into_owned();
    assert!(t.contains("x\\xff.png") && t.contains("x\\xfe.png"), "{t}");
    assert!(!t.contains('\u{fffd}'), "{t}");
    // An existing output is refused without --force or --resume.
    let o = score(&out, &[]);
    failed(&o, &["--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), first);
    // Several decode threads: the same rows in the same order.
    for threads in ["2", "4"] {
        let o = score(&out, &["--force", "--decode-threads", threads]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(&out).unwrap(), first, "{threads} threads");
    }
    // --resume skips every row, including both odd names.
    let o = score(&out, &["--resume"]);
    assert!(text(&o).contains("scored 0 images"), "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), first);
    // --resume onto another head's columns, or onto a file that is not a score file, is refused.
    let other = d.path().join("other.csv");
    std::fs::write(
        &other,
        "path,predicted,p_cat,p_dog,error\nz.png,cat,0.5,0.5,\n",
    )
    .unwrap();
    let o = score(&other, &["--resume"]);
    failed(&o, &["header"]);
    std::fs::write(&other, b"\x00\x01garbage without a header").unwrap();
    let o = score(&other, &["--resume"]);
    failed(&o, &["--resume"]);
    assert_eq!(
        std::fs::read(&other).unwrap(),
        b"\x00\x01garbage without a header"
    );
    let jl = d.path().join("s.jsonl");
    std::fs::write(
        &jl,
        "{\"path\":\"z.png\",\"predicted\":\"cat\",\"probabilities\":{\"cat\":1}}\n",
    )
    .unwrap();
    let o = score(&jl, &["--resume"]);
    failed(&o, &["line 1"]);
    // --top-k beyond the class count is an error, not a header of 10^11 columns.
    let o = score(&d.path().join("k.csv"), &["--top-k", "99999999999"]);
    failed(&o, &["top-k"]);
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (d, data, m, _) = tiny_setup(2);
    let (cache, head) = cache_and_head(d.path(), &m, &data);
    let run_dir = d.path().join("run");
    super::shards::plan(&data, 2, &run_dir);
    for args in [
        vec!["status", s(&run_dir)],
        vec!["summary", s(&cache)],
        vec!["models"],
        vec!["inspect", s(&m), "--layers"],
        vec!["evaluate", "--head", s(&head), "--features", s(&cache)],
    ] {
        // The reading end is closed before the command writes.
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let o = bin()
            .args(&args)
            .stdout(w)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(libc_sigpipe()),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

pub(crate) fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn labels_outside_the_classes_and_non_finite_features_are_errors_not_panics_or_hangs() {
    let (d, data, m, _) = tiny_setup(3);
    let (cache, head) = cache_and_head(d.path(), &m, &data);
    let edit = |code: &str| {
        let c = d.path().join("edited.h5");
        std::fs::copy(&cache, &c).unwrap();
        py(code, &[s(&c)]);
        c
    };
    let set_label = |v: i32| {
        edit(&format!(
            "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nl = f['train/labels'][:]\nl[1] = {v}\nf['train/labels'][:] = l\nf['test/labels'][:] = l[:len(f['test/labels'])]"
        ))
    };
    for bad in [7, -1] {
        let c = set_label(bad);
        fails(
            &["evaluate", "--head", s(&head), "--features", s(&c)],
            &["row 1", &format!("label {bad}"), "2 classes"],
        );
        // train-head must stop with the same error (it looped for ever on -1).
        let mut child = bin()
            .args([
                "train-head",
                s(&c),
                "--out",
                s(&d.path().join("x.h5")),
                "-q",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed().as_secs() > 120 {
                child.kill().unwrap();
                panic!("train-head hangs on label {bad}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("label {bad}")));
    }
    let c = edit(
        "import h5py, sys, numpy as np\nf = h5py.File(sys.argv[1], 'r+')\nx = f['test/features'][:]\nx[2, 0] = np.nan\nf['test/features'][:] = x",
    );
    fails(
        &["evaluate", "--head", s(&head), "--features", s(&c)],
        &["split 'test' row 2", "NaN"],
    );
}

#[test]
fn sizes_from_files_and_flags_are_bounded_before_allocating() {
    let (d, data, m, _) = tiny_setup(2);
    let (cache, head) = cache_and_head(d.path(), &m, &data);
    // A model whose input declares 10^6 x 10^6 pixels.
    let huge = save_model(
        d.path(),
        "huge.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((1_000_000, 1_000_000))),
    );
    fails(
        &[
            "extract",
            "--model",
            s(&huge),
            "--data",
            s(&data),
            "--out",
            s(&d.path().join("x.h5")),
            "--preprocess",
            "tf",
        ],
        &["1000000x1000000", "16384"],
    );
    // A cache whose train split claims 10^12 rows; a head whose kernel claims 10^6 x 10^6 values.
    let forged = d.path().join("forged.h5");
    std::fs::copy(&cache, &forged).unwrap();
    py(
        "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nrow = f['train/features'].shape[1:]\ndel f['train/features']\nf['train'].create_dataset('features', shape=(10**12,) + row, dtype='f4', chunks=(1,) + row)",
        &[s(&forged)],
    );
    fails(
        &[
            "train-head",
            s(&forged),
            "--out",
            s(&d.path().join("y.h5")),
            "-q",
        ],
        &["forged.h5", "declares", "refused before reading"],
    );
    let forged_head = d.path().join("forged_head.h5");
    std::fs::copy(&head, &forged_head).unwrap();
    py(
        "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\ng = f['layers'][sorted(f['layers'])[0]]\ndel g['kernel']\ng.create_dataset('kernel', shape=(10**6, 10**6), dtype='f4', chunks=(1, 1024))",
        &[s(&forged_head)],
    );
    fails(
        &[
            "evaluate",
            "--head",
            s(&forged_head),
            "--features",
            s(&cache),
        ],
        &["forged_head.h5", "[1000000, 1000000]", "previous width"],
    );
    // Flags past their bounds.
    let ex = |flag: &str, v: &str| {
        let o = run(&extract_line(
            &m,
            &data,
            &d.path().join("z.h5"),
            &["--preprocess", "tf", "--force", flag, v],
        ));
        text(&o)
    };
    assert!(ex("--batch", "100000000").contains("4096"));
    assert!(ex("--threads", "100000").contains("1024"));
    let o = run(&extract_line(
        &m,
        &data,
        &d.path().join("z.h5"),
        &[
            "--preprocess",
            "tf",
            "--augment",
            "flip",
            "--copies",
            "4000000000",
        ],
    ));
    failed(&o, &["1000"]);
}

#[test]
fn impossible_preprocessing_and_head_values_are_refused() {
    let (d, data, m, _) = tiny_setup(2);
    let x = d.path().join("x.h5");
    let extract = |model: &Path, extra: &[&str]| {
        let mut a = vec![
            "extract",
            "--model",
            s(model),
            "--data",
            s(&data),
            "--out",
            s(&x),
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = extract(&m, &["--mean", "nan,0,0", "--std", "1,1,1"]);
    failed(&o, &["finite"]);
    for (key, value, want) in [
        ("mean", "nan,0.5,0.5", "finite"),
        ("std", "0,0,0", "non-zero"),
        ("crop_fraction", "-3", "crop fraction -3"),
    ] {
        let mut proto = onnx::load(&m).unwrap();
        let mut props = vec![
            ("input_size", "32x32"),
            ("mean", "0.5,0.5,0.5"),
            ("std", "0.25,0.25,0.25"),
        ];
        if key == "crop_fraction" {
            props.push(("resize_mode", "crop"));
        }
        props.retain(|p| p.0 != key);
        props.push((key, value));
        onnx::edit::set_metadata(
            &mut proto,
            &props
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect::<Vec<_>>(),
        );
        let meta_model = d.path().join(format!("meta_{key}.onnx"));
        onnx::save(&proto, &meta_model).unwrap();
        let o = extract(&meta_model, &[]);
        assert!(!o.status.success(), "{key}: {}", text(&o));
        assert!(text(&o).contains(want), "{key}: {}", text(&o));
    }
    // A head with a negative batch-norm variance.
    let cache = d.path().join("c.h5");
    tf_extract(&m, &data, &cache);
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "1",
        "--head",
        "dense:8:relu,batchnorm",
        "-q",
    ]);
    py(
        "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nfor n in f['layers']:\n    g = f['layers'][n]\n    if 'moving_variance' in g:\n        v = g['moving_variance'][:]\n        v[0] = -1\n        g['moving_variance'][:] = v",
        &[s(&head)],
    );
    fails(
        &["evaluate", "--head", s(&head), "--features", s(&cache)],
        &["h.h5", "variance -1", "negative"],
    );
}

#[test]
fn a_changed_external_weights_file_is_a_new_model() {
    let (d, data, _m, out) = tiny_setup(2);
    let (_, model, blob) = external_data_model(d.path());
    let weights = d.path().join("weights.bin");
    let before = tf_extract(&model, &data, &out);
    assert!(!before.contains("cache hit"));
    assert!(tf_extract(&model, &data, &out).contains("cache hit"));
    let sha1 = FeatureCache::open(&out).unwrap().meta.model_sha256;
    // Same model file, other weights.
    let mut blob2 = blob.clone();
    for v in blob2.iter_mut().step_by(4) {
        *v = v.wrapping_add(1);
    }
    std::fs::write(&weights, &blob2).unwrap();
    let after = tf_extract(&model, &data, &out);
    assert!(!after.contains("cache hit"), "{after}");
    let sha2 = FeatureCache::open(&out).unwrap().meta.model_sha256;
    assert_ne!(sha1, sha2);
    // The weights file is an input: the cache may not be written onto it.
    fails(
        &[
            "extract",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&weights),
            "--preprocess",
            "tf",
        ],
        &["is an input"],
    );
}

/// Found by an adversarial run of the release binary: links planted at `<out>.lock` and
/// `<out>.journal` were written through (onto a model), a killed writer's temporary file stayed, a
/// missing folder was reported as the lock file.
#[test]
fn links_and_leftovers_beside_an_output_are_never_written_through() {
    let (d, data, m, _) = tiny_setup(2);
    let keep = d.path().join("keep.onnx");
    std::fs::copy(&m, &keep).unwrap();
    let before = std::fs::read(&keep).unwrap();
    let out = d.path().join("q.h5");
    std::os::unix::fs::symlink(&keep, d.path().join("q.h5.lock")).unwrap();
    std::fs::hard_link(&keep, d.path().join("q.h5.journal")).unwrap();
    // A temporary file of a writer that died (pid 999999999 is not a process).
    let stale = d.path().join(".q.h5.999999999.0.tmp");
    std::fs::write(&stale, b"half a cache").unwrap();
    tf_extract(&m, &data, &out);
    assert_eq!(
        std::fs::read(&keep).unwrap(),
        before,
        "the model was written through a link"
    );
    FeatureCache::open(&out).unwrap();
    assert!(!stale.exists(), "a dead writer's temporary file is removed");
    fails(
        &[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&d.path().join("nodir/x.h5")),
            "--preprocess",
            "tf",
        ],
        &["the folder", "nodir", "does not exist"],
    );
}

/// More outputs that are inputs or of another kind, each refused before any work.
#[test]
fn derived_outputs_report_folders_and_pictures_follow_the_rules() {
    let (d, data, m, _) = tiny_setup(3);
    let (cache, head) = cache_and_head(d.path(), &m, &data);
    // finetune onto its own model, or with its cache named as its output.
    let model_bytes = std::fs::read(&m).unwrap();
    for extra in [
        vec!["--out", s(&m)],
        vec!["--out", "ft.onnx", "--cache", "ft.onnx"],
    ] {
        let mut a = vec![
            "finetune",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--from-layer",
            "block2_conv1",
            "--preprocess",
            "tf",
            "--epochs",
            "1",
            "-q",
        ];
        a.extend(extra);
        let o = bin().current_dir(d.path()).args(&a).output().unwrap();
        let t = text(&o);
        assert!(!o.status.success(), "{a:?}: {t}");
        assert!(
            t.contains("is an input") || t.contains("is also the output"),
            "{a:?}: {t}"
        );
    }
    assert_eq!(std::fs::read(&m).unwrap(), model_bytes);
    assert!(
        !d.path().join("ft.base.onnx").exists(),
        "nothing was written"
    );
    // evaluate --report inside the photos; quantize --out inside its calibration photos.
    fails(
        &[
            "evaluate",
            "--head",
            s(&head),
            "--model",
            s(&m),
            "--preprocess",
            "tf",
            "--data",
            s(&data),
            "--report",
            s(&data.join("test/a")),
        ],
        &["inside the input folder"],
    );
    fails(
        &[
            "quantize",
            "--model",
            s(&m),
            "--preprocess",
            "tf",
            "--calibrate",
            s(&data),
            "--images",
            "4",
            "--out",
            s(&data.join("q.onnx")),
        ],
        &["inside the input folder"],
    );
    // A plot over a file that is not a picture is refused.
    let curves = d.path().join("h2.curves.png");
    std::fs::copy(&m, &curves).unwrap();
    fails(
        &[
            "train-head",
            s(&cache),
            "--out",
            s(&d.path().join("h2.h5")),
            "--epochs",
            "1",
            "--plot",
            "-q",
        ],
        &["is not a picture headstart drew"],
    );
    assert_eq!(std::fs::read(&curves).unwrap(), model_bytes);
    assert!(
        !d.path().join("h2.h5").exists(),
        "refused before training, not after"
    );
    // split --force onto an earlier split with a photo of the user's added inside it.
    let src = d.path().join("PetImages");
    pet_images(&src, 6, 6);
    let out = d.path().join("split");
    let split = |force: bool| {
        let mut a = vec![
            "split",
            s(&src),
            "--out",
            s(&out),
            "--train",
            "2",
            "--test",
            "1",
            "-q",
        ];
        if force {
            a.push("--force");
        }
        run(&a)
    };
    assert!(split(false).status.success());
    let mine = out.join("train/Cat/my_own_photo.jpg");
    std::fs::copy(src.join("Cat/1.jpg"), &mine).unwrap();
    let o = split(true);
    failed(&o, &["does not list"]);
    assert!(mine.exists());
}
