//! The findings of the second adversarial review, each held to its fix: sources that `split`
//! wrote onto, outputs replaced that were not the command's own, runs among the photos, resumes of
//! another run, ties counted right, credentials shown.

use super::*;

/// `split SRC --out OUT --train T --test 1` and `extra`.
fn split_line<'a>(src: &'a Path, out: &'a Path, train: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let line = [
        "split",
        s(src),
        "--out",
        s(out),
        "--train",
        train,
        "--test",
        "1",
        "--progress",
        "none",
    ];
    [&line[..], extra].concat()
}

/// `base` and `extra`, one command line.
fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What a command that succeeds prints on stdout, as JSON.
fn json_of(args: &[&str]) -> serde_json::Value {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sha(p: &Path) -> String {
    headstart::util::hash::sha256_file(p).unwrap()
}

#[test]
fn split_never_writes_onto_a_source_and_keeps_every_photo() {
    let d = tmp();
    let src = d.path().join("src");
    // Two photos of one class with one file name, in two sub-folders.
    gradient(&src.join("cat/a/1.jpg"), 30, 20, 1);
    gradient(&src.join("cat/b/1.jpg"), 30, 20, 2);
    gradient(&src.join("cat/c.jpg"), 30, 20, 3);
    for i in 0..3 {
        gradient(&src.join(format!("dog/{i}.jpg")), 20, 30, 10 + i);
    }
    let before: Vec<String> = ["cat/a/1.jpg", "cat/b/1.jpg"]
        .iter()
        .map(|p| sha(&src.join(p)))
        .collect();
    for mode in ["link", "copy"] {
        let out = d.path().join(format!("out-{mode}"));
        ok(&split_line(&src, &out, "2", &["--mode", mode]));
        let after: Vec<String> = ["cat/a/1.jpg", "cat/b/1.jpg"]
            .iter()
            .map(|p| sha(&src.join(p)))
            .collect();
        assert_eq!(before, after, "{mode}: a source was written onto");
        // Every photo the manifest lists is there, with the bytes it names.
        let manifest = std::fs::read_to_string(out.join("MANIFEST.tsv")).unwrap();
        for line in manifest.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(sha(&out.join(f[2])), f[3], "{mode}: {line}");
        }
        assert_eq!(manifest.lines().count(), 1 + 6, "{mode}: {manifest}");
    }

    // Relative symlinks as sources: the split holds the photos, not links that dangle.
    let store = d.path().join("store");
    let linked = d.path().join("linked");
    for (class, i) in [("cat", 0), ("cat", 1), ("dog", 2), ("dog", 3)] {
        gradient(&store.join(format!("{i}.jpg")), 30, 30, 40 + i);
        std::fs::create_dir_all(linked.join(class)).unwrap();
        std::os::unix::fs::symlink(
            format!("../../store/{i}.jpg"),
            linked.join(format!("{class}/{i}.jpg")),
        )
        .unwrap();
    }
    let out = d.path().join("out-links");
    ok(&split_line(&linked, &out, "1", &[]));
    for e in std::fs::read_dir(out.join("train/cat")).unwrap() {
        let p = e.unwrap().path();
        assert!(p.metadata().is_ok(), "{} dangles", p.display());
    }
}

#[test]
fn split_refuses_a_file_as_its_output_and_its_own_table_inside_it() {
    let d = tmp();
    let src = d.path().join("src");
    for i in 0..4 {
        gradient(&src.join(format!("c{i}.jpg")), 30, 20, i);
        gradient(&src.join(format!("d{i}.jpg")), 20, 30, 10 + i);
    }
    let notes = d.path().join("notes.txt");
    std::fs::write(&notes, "precious").unwrap();
    fails(&split_line(&src, &notes, "2", &[]), &["not a folder"]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "precious");

    let table = d.path().join("t.csv");
    let rows: String = (0..4)
        .map(|i| format!("c{i}.jpg,cat\nd{i}.jpg,dog\n"))
        .collect();
    std::fs::write(&table, format!("path,label\n{rows}")).unwrap();
    let out = d.path().join("out");
    let by_table = |t: &Path| -> Vec<String> {
        [
            "split",
            s(&src),
            "--labels",
            s(t),
            "--out",
            s(&out),
            "-q",
            "--force",
        ]
        .map(String::from)
        .to_vec()
    };
    ok(&refs(&by_table(&table)));
    let own = out.join("labels.csv");
    let kept = std::fs::read(&own).unwrap();
    fails(&refs(&by_table(&own)), &["an input of this split"]);
    assert_eq!(std::fs::read(&own).unwrap(), kept);

    // A tab in a label would shift MANIFEST.tsv's columns: refused where the table is read.
    let tabbed = d.path().join("tab.csv");
    std::fs::write(
        &tabbed,
        format!("path,label\n{}", rows.replace("cat", "\"ca\tt\"")),
    )
    .unwrap();
    fails(
        &refs(&by_table(&tabbed)),
        &["tab.csv", "line 2", "control character"],
    );
}

#[test]
fn a_run_is_never_planned_among_its_photos_nor_from_a_plan_of_no_shards() {
    let (d, data, m, _) = tiny_setup(2);
    let inside = data.join("run");
    fails(
        &[
            "plan",
            "--data",
            s(&data),
            "--out",
            s(&inside),
            "--shards",
            "1",
        ],
        &["one inside the other"],
    );
    assert!(!inside.exists(), "nothing is made");
    let run = d.path().join("run0");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("plan.json"),
        r#"{"format":"headstart-plan/1","source":"/tmp","shards":0,"images":0,"classes":["a","b"],"splits":[{"name":"train","images":0}],"shard_images":[],"headstart_version":"0.1.0"}"#,
    )
    .unwrap();
    for args in [
        vec!["status", s(&run)],
        vec!["merge", s(&run), "--out", "z.h5"],
        vec![
            "extract",
            "--run",
            s(&run),
            "--shard",
            "0",
            "--model",
            s(&m),
        ],
    ] {
        let o = bin().current_dir(d.path()).args(&args).output().unwrap();
        failed(&o, &["0 shards"]);
    }
}

/// A two-class cache of `rows` test rows and its head, in `d`.
fn cache_head(d: &Path, classes: &str) -> (PathBuf, PathBuf) {
    let (cache, head) = (
        d.join(format!("c{classes}.h5")),
        d.join(format!("h{classes}.h5")),
    );
    ok(&[
        "make-features",
        "--shape",
        "16",
        "--split",
        "train=200",
        "--split",
        "val=50",
        "--split",
        "test=100",
        "--classes",
        classes,
        "--separation",
        "0.5",
        "--out",
        s(&cache),
    ]);
    ok(&["train-head", s(&cache), "--out", s(&head), "-q"]);
    (cache, head)
}

#[test]
fn score_replaces_only_its_own_files_and_resumes_only_its_own_run() {
    let d = tmp();
    let (cache, head) = cache_head(d.path(), "2");
    let score = ["score", "--features", s(&cache), "--head", s(&head), "-q"];
    // --force never replaces what is not a score file: another cache, a label table.
    let other = d.path().join("other.h5");
    std::fs::copy(&cache, &other).unwrap();
    let table = d.path().join("labels.csv");
    std::fs::write(&table, "path,label\na.jpg,cat\n").unwrap();
    for f in [&other, &table] {
        let kept = std::fs::read(f).unwrap();
        fails(
            &with(&score, &["--out", s(f), "--force"]),
            &["not a score file"],
        );
        assert_eq!(std::fs::read(f).unwrap(), kept);
    }
    // It does replace an earlier score file, with the same bytes a fresh run writes.
    let out = d.path().join("s.csv");
    ok(&with(&score, &["--out", s(&out)]));
    let fresh = std::fs::read(&out).unwrap();
    ok(&with(&score, &["--out", s(&out), "--force"]));
    assert_eq!(std::fs::read(&out).unwrap(), fresh);
    // --resume of another split's rows, or of rows another --threshold predicted.
    let val = d.path().join("val.csv");
    ok(&with(&score, &["--split", "val", "--out", s(&val)]));
    // A torn last row as a kill leaves it: refused all the same, and not a byte of it cut.
    let mut torn = std::fs::read(&val).unwrap();
    torn.extend_from_slice(b"half/a/ro");
    std::fs::write(&val, &torn).unwrap();
    fails(
        &with(&score, &["--out", s(&val), "--resume"]),
        &["was written by another run", "split val there, features"],
    );
    assert_eq!(std::fs::read(&val).unwrap(), torn);
    // Without its record (a file of an earlier release), the rows still give it away.
    std::fs::remove_file(d.path().join("val.csv.run.json")).unwrap();
    fails(
        &with(&score, &["--out", s(&val), "--resume"]),
        &["name files this run does not score"],
    );
    assert_eq!(std::fs::read(&val).unwrap(), torn);
    // Rows of another head (or base model) are never continued by this one.
    let other_head = d.path().join("h_other.h5");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&other_head),
        "--seed",
        "7",
        "-q",
    ]);
    let half: String = String::from_utf8(fresh.clone())
        .unwrap()
        .lines()
        .take(20)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&out, &half).unwrap();
    let by_other = [
        "score",
        "--features",
        s(&cache),
        "--head",
        s(&other_head),
        "-q",
    ];
    fails(
        &with(&by_other, &["--out", s(&out), "--resume"]),
        &["was written by another run", "classifier (head sha256)"],
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), half);
    ok(&with(&score, &["--out", s(&out), "--resume"]));
    assert_eq!(std::fs::read(&out).unwrap(), fresh);
    // A record whose file is gone speaks for nothing: a new run starts there.
    std::fs::remove_file(&out).unwrap();
    ok(&with(&by_other, &["--out", s(&out), "--resume"]));
    let sure = d.path().join("sure.csv");
    ok(&with(&score, &["--threshold", "0.999", "--out", s(&sure)]));
    let text = std::fs::read_to_string(&sure).unwrap();
    let cut: String = text.lines().take(40).map(|l| format!("{l}\n")).collect();
    std::fs::write(&sure, &cut).unwrap();
    fails(
        &with(&score, &["--out", s(&sure), "--resume"]),
        &[
            "was written by another run",
            "--threshold: 0.999 there, none now",
        ],
    );
    // A record of an earlier release kept no threshold: the rows themselves tell.
    let rec = d.path().join("sure.csv.run.json");
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    old["format"] = "headstart-score-run/1".into();
    old.as_object_mut().unwrap().remove("threshold");
    std::fs::write(&rec, old.to_string()).unwrap();
    fails(
        &with(&score, &["--out", s(&sure), "--resume"]),
        &["another --threshold"],
    );
    ok(&with(
        &score,
        &["--threshold", "0.999", "--out", s(&sure), "--resume"],
    ));
    assert_eq!(std::fs::read_to_string(&sure).unwrap(), text);
    // --threshold means nothing to a head of three classes.
    let (c3, h3) = cache_head(d.path(), "3");
    fails(
        &[
            "score",
            "--features",
            s(&c3),
            "--head",
            s(&h3),
            "--threshold",
            "0",
        ],
        &["--threshold", "3 classes"],
    );
}

#[test]
fn the_audit_counts_no_tie_as_right_and_leaves_no_stale_probabilities() {
    let d = tmp();
    let (cache, _) = cache_head(d.path(), "2");
    let flat = d.path().join("flat.h5");
    std::fs::copy(&cache, &flat).unwrap();
    {
        let f = hdf5::File::open_rw(&flat).unwrap();
        for split in ["train", "val", "test"] {
            let ds = f.dataset(&format!("{split}/features")).unwrap();
            let zeros = ndarray::Array2::<f32>::zeros((ds.shape()[0], ds.shape()[1]));
            ds.write(&zeros).unwrap();
        }
    }
    let out = d.path().join("a");
    let v = json_of(&["audit", s(&flat), "--out", s(&out), "--json", "-q"]);
    let acc = v["out_of_fold_accuracy"].as_f64().unwrap();
    assert!(acc < 0.7, "features that tell nothing apart: {acc}");
    assert!(out.join("out_of_fold.csv").exists());
    // One class of one photo: no label check, so no probabilities and no accuracy.
    let thin = d.path().join("thin.h5");
    std::fs::copy(&cache, &thin).unwrap();
    {
        let f = hdf5::File::open_rw(&thin).unwrap();
        for split in ["train", "val", "test"] {
            let ds = f.dataset(&format!("{split}/labels")).unwrap();
            let mut l = vec![0i32; ds.shape()[0]];
            if split == "train" {
                l[3] = 1;
            }
            ds.write(&l).unwrap();
        }
    }
    let v = json_of(&["audit", s(&thin), "--out", s(&out), "--json", "-q"]);
    assert!(
        v["out_of_fold_accuracy"].is_null() && v["folds"].is_null(),
        "{v}"
    );
    assert!(
        !out.join("out_of_fold.csv").exists(),
        "the earlier audit's is gone"
    );
    // A file as the audit's folder.
    fails(&["audit", s(&cache), "--out", s(&thin)], &["not a folder"]);
}

#[test]
fn reports_never_go_among_the_photos_a_cache_came_from() {
    let (d, data, m, _) = tiny_setup(3);
    let (cache, head) = super::safety::cache_and_head(d.path(), &m, &data);
    let inside = data.join("train/a/report");
    fails(
        &[
            "evaluate",
            "--features",
            s(&cache),
            "--head",
            s(&head),
            "--report",
            s(&inside),
        ],
        &["inside the photos"],
    );
    fails(
        &["audit", s(&cache), "--out", s(&inside)],
        &["inside the photos"],
    );
    let before = std::fs::metadata(&head).unwrap().modified().unwrap();
    fails(
        &[
            "train-head",
            s(&cache),
            "--out",
            s(&head),
            "--epochs",
            "1",
            "--report",
            s(&inside),
        ],
        &["inside the photos"],
    );
    assert_eq!(
        std::fs::metadata(&head).unwrap().modified().unwrap(),
        before,
        "nothing trained"
    );
    assert!(!inside.exists());
}

#[test]
fn urls_with_credentials_are_refused_and_never_shown() {
    let d = tmp();
    let m = save_model(
        d.path(),
        "m.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    for args in [
        vec![
            "extract",
            "--model",
            s(&m),
            "--data",
            "s3://KEY:hunter2@bucket/p",
            "--out",
            "x.h5",
        ],
        vec![
            "plan",
            "--data",
            "http://u:hunter2@127.0.0.1:9/ds",
            "--out",
            "r",
        ],
    ] {
        let o = bin().current_dir(d.path()).args(&args).output().unwrap();
        let t = failed(&o, &["***@", "environment"]);
        assert!(!t.contains("hunter2"), "{t}");
    }
}

#[test]
fn a_damaged_head_weight_is_an_error_not_other_numbers() {
    let d = tmp();
    let (cache, head) = cache_head(d.path(), "2");
    let kernel: Vec<f32> = hdf5::File::open(&head)
        .unwrap()
        .dataset("layers/000_dense/kernel")
        .unwrap()
        .read_raw()
        .unwrap();
    let key: Vec<u8> = kernel[..2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = std::fs::read(&head).unwrap();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("the kernel is stored as it is");
    bytes[at + 3] ^= 0x4f;
    let bad = d.path().join("bad.h5");
    std::fs::write(&bad, bytes).unwrap();
    fails(
        &["evaluate", "--features", s(&cache), "--head", s(&bad)],
        &["bad.h5", "checksum"],
    );
}

#[test]
fn names_and_files_that_are_not_what_they_claim_are_refused() {
    let (d, data, m, _) = tiny_setup(2);
    // quantize --keep-float naming no node would keep nothing in float.
    fails(
        &[
            "quantize",
            "--model",
            s(&m),
            "--preprocess",
            "tf",
            "--calibrate",
            s(&data),
            "--out",
            s(&d.path().join("q.onnx")),
            "--keep-float",
            "nosuchnode",
        ],
        &["nosuchnode", "not a node"],
    );
    // A file where a fetched model goes is not taken for the model.
    let dir = d.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("efficientnet_lite0_features.onnx"), "mine").unwrap();
    fails(
        &["fetch", "efficientnet-lite0", "--dir", s(&dir)],
        &["not an ONNX model"],
    );
}

#[test]
fn merge_never_follows_a_shard_link_out_of_its_run() {
    let (d, _, _, run) = super::safety::two_shard_run();
    let shard = run.join("shards/shard-00000.h5");
    let away = d.path().join("away.h5");
    std::fs::rename(&shard, &away).unwrap();
    std::os::unix::fs::symlink(&away, &shard).unwrap();
    fails(
        &["merge", s(&run), "--out", s(&d.path().join("m.h5"))],
        &["outside the run folder"],
    );
}

/// A manifest edited after planning is refused by its shard; with a plan of an earlier release
/// (no manifest hashes), shards whose manifests overlap are refused by merge, not merged twice.
#[test]
fn edited_or_overlapping_manifests_are_refused() {
    let (d, data, m, _) = tiny_setup(4);
    let run = d.path().join("run");
    super::shards::plan(&data, 2, &run);
    let manifest = |k: usize| run.join(format!("manifest/shard-{k:05}.txt"));
    let lines = |k: usize| -> Vec<String> {
        let t = std::fs::read_to_string(manifest(k)).unwrap();
        t.lines().map(String::from).collect()
    };
    let (first, mut second) = (lines(0), lines(1));
    let shard = |k: &str| {
        let mut c = super::shards::shard_cmd(&run, &m, &[("HEADSTART_SHARD", k)], &[]);
        c.output().unwrap()
    };
    second[0] = first[0].clone();
    std::fs::write(manifest(1), second.join("\n") + "\n").unwrap();
    failed(
        &shard("1"),
        &["shard-00001.txt", "changed after `headstart plan`"],
    );

    super::shards::as_earlier_plan(&run);
    for k in ["0", "1"] {
        let o = shard(k);
        assert!(o.status.success(), "{}", text(&o));
    }
    fails(
        &["merge", s(&run), "--out", s(&d.path().join("m.h5"))],
        &["shard 1", "is also in shard 0"],
    );
}

/// The third pass: an output under a file, numbers too large for their flag, a class a table
/// split leaves without train images.
#[test]
fn outputs_under_a_file_huge_numbers_and_classes_without_train_photos_are_named() {
    let d = tmp();
    let (cache, head) = cache_head(d.path(), "2");
    let score = ["score", "--features", s(&cache), "--head", s(&head)];
    let under = format!("{}/scores.csv", s(&cache));
    fails(
        &with(&score, &["--out", &under]),
        &["is a file, not a folder"],
    );
    fails(
        &with(&score, &["--threshold", "1e308"]),
        &["'1e308' is not a finite number of 32-bit range"],
    );
    fails(
        &["train-head", s(&cache), "--lr", "1e400"],
        &["'1e400' is not a finite number"],
    );

    let src = d.path().join("src");
    let mut rows = String::from("path,label\n");
    for i in 0..4 {
        gradient(&src.join(format!("c{i}.jpg")), 30, 20, i);
        gradient(&src.join(format!("d{i}.jpg")), 20, 30, 10 + i);
        rows += &format!("c{i}.jpg,cat\nd{i}.jpg,dog\n");
    }
    gradient(&src.join("e0.jpg"), 24, 24, 40);
    rows += "e0.jpg,eel\n";
    let table = d.path().join("t.csv");
    std::fs::write(&table, rows).unwrap();
    let line = |out: &Path, test: &str| {
        ok(&[
            "split",
            s(&src),
            "--labels",
            s(&table),
            "--out",
            s(out),
            "--val-fraction",
            "0",
            "--test-fraction",
            test,
            "--progress",
            "none",
        ])
    };
    let log = line(&d.path().join("half"), "0.5");
    assert!(
        log.contains("class 'eel' has no train image (1 in all)") && !log.contains("'cat' has no"),
        "{log}"
    );
    let log = line(&d.path().join("some"), "0.25");
    assert!(!log.contains("has no train image"), "{log}");
}

/// The third review's extract findings: a journal or lock path that holds a user's file, a
/// `report.md` of the user's, report folders named from another folder, `--strict` after a run
/// that skipped.
#[test]
fn files_beside_an_output_and_reports_of_others_are_never_touched() {
    let (d, data, m, _) = tiny_setup(3);
    // <out>.journal and <out>.lock holding something else: refused, kept.
    for side in [".journal", ".lock"] {
        let out = d.path().join(format!("o{side}.h5"));
        let beside = PathBuf::from(format!("{}{side}", out.display()));
        std::fs::copy(&m, &beside).unwrap();
        fails(
            &extract_line(&m, &data, &out, &["--preprocess", "tf"]),
            &[&format!("o{side}.h5{side}"), "holds something else"],
        );
        assert_eq!(std::fs::read(&beside).unwrap(), std::fs::read(&m).unwrap());
        assert!(!out.exists());
    }
    let (cache, head) = super::safety::cache_and_head(d.path(), &m, &data);
    // A report.md of the user's is neither replaced nor appended to.
    let notes = d.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("report.md"), "# My notes\n\nkeep me\n").unwrap();
    let report = ["--report", s(&notes)];
    fails(
        &with(
            &train_line(&cache, &d.path().join("h2.h5"), &["--epochs", "1"]),
            &report,
        ),
        &["report.md"],
    );
    fails(
        &with(
            &["evaluate", "--features", s(&cache), "--head", s(&head)],
            &report,
        ),
        &["report.md"],
    );
    assert_eq!(
        std::fs::read_to_string(notes.join("report.md")).unwrap(),
        "# My notes\n\nkeep me\n"
    );
    // A cache extracted with a relative --data, then a report folder among its photos named from
    // another folder: still refused.
    let rel = d.path().join("rel.h5");
    let o = bin()
        .current_dir(d.path())
        .args(extract_line(
            &m,
            Path::new("data"),
            &rel,
            &["--preprocess", "tf", "-q"],
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cache = rel;
    let o = bin()
        .current_dir(&data)
        .args([
            "evaluate",
            "--features",
            s(&cache),
            "--head",
            s(&head),
            "--report",
            "train/a",
        ])
        .output()
        .unwrap();
    failed(&o, &["inside the photos"]);
    assert!(!data.join("train/a/report.md").exists());
}

#[test]
fn strict_tries_again_what_an_earlier_run_skipped() {
    let (d, data, m, out) = tiny_setup(2);
    let bad = data.join("train/a/bad.jpg");
    std::fs::write(&bad, b"x").unwrap();
    let line = extract_line(&m, &data, &out, &["--preprocess", "tf", "--strict"]);
    fails(&line, &["bad.jpg", "--strict"]);
    fails(&line, &["bad.jpg", "--strict"]);
    // A cache that skipped it is no answer to --strict either.
    let lenient = d.path().join("lenient.h5");
    extract(&m, &data, &lenient, &["--preprocess", "tf", "-q"]);
    fails(
        &extract_line(&m, &data, &lenient, &["--preprocess", "tf", "--strict"]),
        &["bad.jpg", "--strict"],
    );
    // Mended, the strict run finishes with every image.
    gradient(&bad, 30, 30, 7);
    let log = ok(&line);
    assert!(log.contains("0 skipped"), "{log}");
}

/// A link inside a class folder to a folder above it, or to another class, is not walked: no
/// photo is cached under a label that is not its own.
#[test]
fn links_up_the_tree_or_into_another_class_are_not_walked() {
    let (_d, data, m, out) = tiny_setup(3);
    std::os::unix::fs::symlink("..", data.join("train/a/up")).unwrap();
    std::os::unix::fs::symlink("../b", data.join("train/a/bees")).unwrap();
    let log = extract(&m, &data, &out, &["--preprocess", "tf"]);
    assert!(
        log.contains("a link to a folder above it")
            && log.contains("a link to another folder of the dataset"),
        "{log}"
    );
    let c = FeatureCache::open(&out).unwrap();
    let train = c.read_split("train").unwrap();
    let a = train.labels.iter().filter(|&&l| l == 0).count();
    assert_eq!((a, train.labels.len()), (3, 6), "{:?}", train.paths);
}

/// The third review's model findings: files beside an output that are not the command's, int8
/// models converted to float16, cut exports read as probabilities, data files through links,
/// FIFOs as outputs, sizes past their bound.
#[test]
fn model_commands_touch_only_their_own_files_and_refuse_what_they_cannot_carry() {
    let (d, data, m, _) = tiny_setup(3);
    let at = |n: &str| d.path().join(n);
    // make-model's <out>_data onto a link to a photo, or onto a file of the user's.
    let photo = data.join("train/a/img0.png");
    let kept = std::fs::read(&photo).unwrap();
    std::os::unix::fs::symlink(&photo, at("m2.onnx_data")).unwrap();
    let make = |out: &Path| ok_or_fail(&["make-model", "tiny", "--external-data", "--out", s(out)]);
    assert!(!make(&at("m2.onnx")));
    assert_eq!(std::fs::read(&photo).unwrap(), kept);
    assert!(!at("m2.onnx").exists());
    // quantize keeps its calibration copy to itself: a model named like it is kept.
    let calib = at("q.calibration.onnx");
    std::fs::copy(&m, &calib).unwrap();
    let q = at("q.onnx");
    ok(&[
        "quantize",
        "--model",
        s(&m),
        "--calibrate",
        s(&data.join("train")),
        "--images",
        "4",
        "--preprocess",
        "tf",
        "--out",
        s(&q),
        "-q",
    ]);
    assert_eq!(std::fs::read(&calib).unwrap(), std::fs::read(&m).unwrap());
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("probe")), "{names:?}");
    fails(
        &["convert", s(&q), "--fp16", "--out", s(&at("q16.onnx"))],
        &["int8 (QDQ)"],
    );
    // A cut export ends in features, not probabilities: score does not read it as them.
    let (_, head) = super::safety::cache_and_head(d.path(), &m, &data);
    let exp = at("e.onnx");
    ok(&[
        "export",
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--out",
        s(&exp),
    ]);
    let cut = at("cut.onnx");
    ok(&["cut", s(&exp), "--layer", "features", "--out", s(&cut)]);
    fails(
        &["score", "--model", s(&cut), s(&data.join("test"))],
        &["headstart_classes"],
    );
    // A --tta export's base runs each image beside its mirror: not cut; a uint8 export is no
    // base to classify or quantise with.
    let tta = at("tta.onnx");
    ok(&[
        "export",
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--tta",
        "flip",
        "--out",
        s(&tta),
    ]);
    fails(
        &[
            "cut",
            s(&tta),
            "--layer",
            "features",
            "--out",
            s(&at("tcut.onnx")),
        ],
        &["--tta flip export"],
    );
    let u8 = at("u8.onnx");
    ok(&[
        "export",
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--with-preprocessing",
        "--out",
        s(&u8),
    ]);
    fails(
        &["classify", "--model", s(&u8), s(&data.join("test"))],
        &["takes uint8 images"],
    );
    // External data through a link out of the model's folder.
    let sub = at("sub");
    std::fs::create_dir_all(&sub).unwrap();
    assert!(make(&sub.join("x.onnx")));
    let outside = at("outside.bin");
    std::fs::rename(sub.join("x.onnx_data"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, sub.join("x.onnx_data")).unwrap();
    fails(
        &[
            "convert",
            s(&sub.join("x.onnx")),
            "--fp16",
            "--out",
            s(&sub.join("h.onnx")),
        ],
        &["leads out of the model's folder"],
    );
    // A FIFO as the output is refused, not opened.
    let fifo = at("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fails(
        &["convert", s(&m), "--fp16", "--out", s(&fifo)],
        &["not a regular file"],
    );
    fails(
        &["inspect", s(&m), "--size", "4000000000x1"],
        &["each side must be 1 to 16384"],
    );
    fails(
        &[
            "make-model",
            "vit",
            "--classes",
            "4000000000",
            "--out",
            s(&at("v.onnx")),
        ],
        &["weights"],
    );
}

/// Whether the command succeeded.
fn ok_or_fail(args: &[&str]) -> bool {
    run(args).status.success()
}

/// Head files whose numbers are finite but useless are refused, never scored as NaN: a leaky
/// ReLU slope of NaN at load, weights that overflow float32 on the features when predicting; a
/// cache whose feature shape overflows is named, never a panic.
#[test]
fn heads_and_caches_with_numbers_past_float32_are_refused() {
    let d = tmp();
    let (cache, _) = cache_head(d.path(), "2");
    let head = d.path().join("leaky.h5");
    let spec = "dense:4:leaky_relu";
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--head",
        spec,
        "-q",
    ]);
    let copy = |name: &str| {
        let p = d.path().join(name);
        std::fs::copy(&head, &p).unwrap();
        (p.clone(), hdf5::File::open_rw(&p).unwrap())
    };
    let (slope, f) = copy("slope.h5");
    let layers = f.group("layers").unwrap();
    let leaky = layers
        .groups()
        .unwrap()
        .into_iter()
        .find(|g| g.attr("negative_slope").is_ok())
        .expect("a leaky ReLU layer with its slope");
    leaky
        .attr("negative_slope")
        .unwrap()
        .write_scalar(&f32::NAN)
        .unwrap();
    drop((leaky, layers, f));
    let eval = |h: &Path| {
        let args = ["evaluate", "--features", s(&cache), "--head", s(h)];
        bin().args(args).output().unwrap()
    };
    failed(&eval(&slope), &["slope.h5", "slope NaN must be finite"]);
    let (huge, f) = copy("huge.h5");
    let k = f.dataset("layers/000_dense/kernel").unwrap();
    let shape = k.shape();
    k.write(&ndarray::Array2::<f32>::from_elem(
        (shape[0], shape[1]),
        3e38,
    ))
    .unwrap();
    drop((k, f));
    failed(&eval(&huge), &["overflow float32"]);

    let shaped = d.path().join("shaped.h5");
    std::fs::copy(&cache, &shaped).unwrap();
    let f = hdf5::File::open_rw(&shaped).unwrap();
    f.delete_attr("feature_shape").unwrap();
    f.new_attr_builder()
        .with_data(&[1u64 << 32, 1 << 32, 8])
        .create("feature_shape")
        .unwrap();
    drop(f);
    for args in [
        vec!["summary", s(&shaped)],
        vec!["train-head", s(&shaped), "-q"],
        vec!["audit", s(&shaped)],
    ] {
        fails(&args, &["shaped.h5", "[4294967296, 4294967296, 8]"]);
    }
    // A head given where a cache goes is named as one (the HDF5 call that failed was).
    let (_, head) = cache_head(d.path(), "2");
    fails(
        &["summary", s(&head)],
        &["is a head file (train-head's output), not a feature cache"],
    );
}

/// A train split with photos of one class is refused by train-head, naming each class's count; a
/// cache of one class is still audited for duplicates and outliers (that used to panic).
#[test]
fn one_class_train_splits_are_named_and_one_class_caches_audited() {
    let (d, data, m, out) = tiny_setup(4);
    // Class b's train photos all unreadable: skipped, so the cache's train split holds only a.
    std::fs::remove_dir_all(data.join("train/b")).unwrap();
    std::fs::create_dir(data.join("train/b")).unwrap();
    std::fs::write(data.join("train/b/broken.jpg"), b"").unwrap();
    super::shards::tf_extract(&m, &data, &out);
    fails(
        &["train-head", s(&out), "-q"],
        &["f.h5", "fewer than 2 classes (a: 4, b: 0)"],
    );
    // With a third class that has train photos, b is only warned of.
    for split in ["train", "test"] {
        std::fs::create_dir_all(data.join(split).join("c")).unwrap();
        std::fs::copy(
            data.join("test/a/img0.png"),
            data.join(split).join("c/x.png"),
        )
        .unwrap();
    }
    let three = d.path().join("three.h5");
    super::shards::tf_extract(&m, &data, &three);
    let log = ok(&["train-head", s(&three), "--epochs", "1"]);
    assert!(log.contains("class(es) b have no training rows"), "{log}");
    for split in ["train", "test"] {
        std::fs::remove_dir_all(data.join(split).join("c")).unwrap();
    }
    for split in ["train", "test"] {
        std::fs::remove_dir_all(data.join(split).join("b")).unwrap();
    }
    let one = d.path().join("one.h5");
    super::shards::tf_extract(&m, &data, &one);
    let report = d.path().join("audit");
    let log = ok(&["audit", s(&one), "--out", s(&report)]);
    assert!(log.contains("outliers"), "{log}");
    let tsv = std::fs::read_to_string(report.join("audit.tsv")).unwrap();
    assert!(tsv.starts_with("file\tsplit\tissue"), "{tsv}");

    // Crafted class lists: a head of one class, a cache with a name twice or an empty one.
    let (cache, head) = cache_head(d.path(), "2");
    let set = |file: &Path, names: &str| {
        let code = format!(
            "import sys, h5py\nf = h5py.File(sys.argv[1], 'r+')\nf.attrs['classes'] = {names}"
        );
        super::safety::py(&code, &[s(file)]);
    };
    set(&head, "[h5py.string_dtype().type('a')]");
    fails(
        &["evaluate", "--features", s(&cache), "--head", s(&head)],
        &["h2.h5", "1 classes; a head has at least 2"],
    );
    for names in ["['a', 'a']", "['a', '']"] {
        set(&cache, &format!("[n for n in {names}]"));
        fails(
            &["summary", s(&cache)],
            &["c2.h5", "is empty or listed twice"],
        );
    }
}

/// Lists and attributes of a cache that HDF5 (or a lenient reader) would take in silence are
/// refused: float labels (fractions dropped), labels or paths in two axes, skipped paths without
/// their reasons, an unknown dtype, float32 rows declared float16, a multi_label flag of 2.
#[test]
fn labels_of_another_type_or_shape_and_unpaired_skips_are_refused() {
    let d = tmp();
    let (cache, _) = cache_head(d.path(), "2");
    for (name, code) in [
        (
            "floats.h5",
            "l = g['labels'][()]; del g['labels']; g['labels'] = l + 0.7",
        ),
        (
            "square.h5",
            "l = g['labels'][()]; del g['labels']; g['labels'] = l.reshape(-1, 2)",
        ),
        (
            "unpaired.h5",
            "del g['skipped_reasons']; g['skipped_reasons'] = ['x']",
        ),
        (
            "table.h5",
            "p = g['paths'][()]; del g['paths']; g['paths'] = p.reshape(-1, 2)",
        ),
        ("bf16.h5", "f.attrs['dtype'] = 'bf16'"),
        ("halves.h5", "f.attrs['dtype'] = 'f16'"),
        ("tags.h5", "f.attrs['multi_label'] = np.uint8(2)"),
    ] {
        let p = d.path().join(name);
        std::fs::copy(&cache, &p).unwrap();
        let code = format!(
            "import sys, h5py, numpy as np\nf = h5py.File(sys.argv[1], 'r+')\ng = f['train']\n{code}"
        );
        super::safety::py(&code, &[s(&p)]);
        let want = match name {
            "unpaired.h5" => "split 'train': 0 skipped paths and 1 reasons",
            "table.h5" => "split 'train': dataset 'paths' has 2 axes",
            "bf16.h5" => "dtype 'bf16' is not f32 or f16",
            "halves.h5" => "stored as float32, the cache declares f16",
            "tags.h5" => "multi_label is 2, not 0 or 1",
            "square.h5" => "dataset 'labels' holds int32 in 2 axes; a cache stores integers in 1",
            _ => "split 'train': dataset 'labels' holds float64 in 1 axes; a cache stores integers in 1",
        };
        fails(&["train-head", s(&p), "-q"], &[name, want]);
    }
}

/// Training settings that would train a wrong head with exit 0 are refused, naming the flag:
/// a negative focal gamma (an inverted head), a focal alpha outside [0, 1], a negative or too
/// large cosine floor, a step gamma that grows the rate; and heads too large to allocate (this
/// used to panic, abort, or allocate 13 GB).
#[test]
fn settings_that_train_a_wrong_or_huge_head_are_refused() {
    let d = tmp();
    let (cache, _) = cache_head(d.path(), "2");
    for (flags, want) in [
        (
            &["--loss", "focal", "--focal-gamma=-5"][..],
            "--focal-gamma",
        ),
        (&["--loss", "focal", "--focal-alpha", "5"], "--focal-alpha"),
        (&["--schedule", "cosine", "--min-lr=-1"], "--min-lr"),
        (
            &["--schedule", "cosine", "--lr", "0.01", "--min-lr", "0.1"],
            "--min-lr",
        ),
        (&["--schedule", "step", "--step-gamma", "5"], "--step-gamma"),
        (&["--head", "dense:18446744073709551615"], "units"),
        (&["--head", "dense:4000000000"], "units"),
        (
            &["--head", "dense:100000000"],
            "weights; a head has at most",
        ),
    ] {
        let line = [&["train-head", s(&cache), "-q", "--epochs", "1"][..], flags].concat();
        fails(&line, &[want]);
    }
    ok(&[
        "train-head",
        s(&cache),
        "-q",
        "--epochs",
        "1",
        "--loss",
        "focal",
        "--focal-gamma",
        "0",
    ]);
}

/// `--plot` draws beside the head: never when the head lies among the photos its features came
/// from (the next extract took the curves for a photo of that class).
#[test]
fn plots_are_never_drawn_among_the_photos() {
    let (_d, data, m, out) = tiny_setup(3);
    super::shards::tf_extract(&m, &data, &out);
    let head = data.join("train/a/h.h5");
    fails(
        &["train-head", s(&out), "--out", s(&head), "--plot", "-q"],
        &["h.h5", "--plot would draw its pictures beside it", "photos"],
    );
    ok(&["train-head", s(&out), "--out", s(&head), "-q"]);
    fails(
        &[
            "evaluate",
            "--features",
            s(&out),
            "--head",
            s(&head),
            "--plot",
        ],
        &["--plot would draw its pictures beside it"],
    );
    let pngs = std::fs::read_dir(data.join("train/a"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".png")
        })
        .count();
    assert_eq!(pngs, 2, "the PNGs are the photos img0 and img2, no plot");
}

/// Features that do not tell photos apart (all zero) are warned of by audit, not given a clean
/// result in silence; real features are not.
#[test]
fn an_audit_of_features_that_tell_nothing_apart_says_so() {
    let d = tmp();
    let (cache, _) = cache_head(d.path(), "2");
    let warning = "the features do not tell the photos apart";
    let log = ok(&["audit", s(&cache), "--out", s(&d.path().join("a"))]);
    assert!(!log.contains(warning), "{log}");
    let zero = d.path().join("zero.h5");
    std::fs::copy(&cache, &zero).unwrap();
    super::safety::py(
        "import sys, h5py\nf = h5py.File(sys.argv[1], 'r+')\nfor s in ('train', 'val', 'test'):\n    f[s + '/features'][...] = 0",
        &[s(&zero)],
    );
    let log = ok(&["audit", s(&zero), "--out", s(&d.path().join("z"))]);
    assert!(log.contains(warning), "{log}");
}
