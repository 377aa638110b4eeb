//! CLI tests: outputs that never go through a link, a FIFO input, or a user's file of a sidecar's
//! name (from the adversarial run on output safety of 2026-12-03).

use super::*;

/// `plan` writes its manifests and listing as new files inside the run folder: a link planted at
/// a manifest's name is replaced, not written through (a file outside the run was overwritten by
/// the listing with exit 0), and a manifests folder that is a link is refused.
#[test]
fn plan_never_writes_through_a_link_in_its_run_folder() {
    let (d, data, _, _) = tiny_setup(2);
    let precious = d.path().join("precious.txt");
    std::fs::write(&precious, "precious").unwrap();
    let run = d.path().join("run");
    std::fs::create_dir_all(run.join("manifest")).unwrap();
    std::os::unix::fs::symlink(&precious, run.join("manifest/shard-00000.txt")).unwrap();
    plan(&data, 1, &run);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious");
    let m = run.join("manifest/shard-00000.txt");
    assert!(!std::fs::symlink_metadata(&m)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&m).unwrap().lines().count(), 8);
    let run2 = d.path().join("run2");
    std::fs::create_dir_all(&run2).unwrap();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, run2.join("manifest")).unwrap();
    fails(
        &[
            "plan",
            "--data",
            s(&data),
            "--shards",
            "1",
            "--out",
            s(&run2),
        ],
        &["manifest", "is a link"],
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// `score --out` a dangling link: the link is replaced by the score file, never written through
/// (the scores were created where it pointed, inside the folder being scored); `--resume` through
/// a link is refused.
#[test]
fn score_replaces_a_link_at_its_output_instead_of_following_it() {
    let (d, data, m, _) = tiny_setup(2);
    let (_, head) = cache_and_head(d.path(), &m, &data);
    let out = d.path().join("scores.csv");
    let target = data.join("test/a/new.jpg");
    std::os::unix::fs::symlink(&target, &out).unwrap();
    let test = data.join("test");
    let score = |out: &Path, extra: &str| {
        let a = ["score", s(&test), "--model", s(&m), "--head", s(&head)];
        bin()
            .args(a)
            .args(["--out", s(out), extra])
            .output()
            .unwrap()
    };
    let o = score(&out, "-q");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !target.exists(),
        "nothing is written where the link pointed"
    );
    assert!(!std::fs::symlink_metadata(&out)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(scored(&out).len(), 4);
    let out2 = d.path().join("again.csv");
    std::os::unix::fs::symlink(&out, &out2).unwrap();
    failed(&score(&out2, "--resume"), &["again.csv", "is a link"]);
}

/// Runs headstart, killing it after 20 s: a command that hangs fails the test instead of hanging
/// it. Returns the output.
fn run_bounded(args: &[&str]) -> Output {
    let mut child = bin()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = wait_until(20.0, || child.try_wait().unwrap().is_some());
    if !done {
        child.kill().unwrap();
        let _ = child.wait();
        panic!("headstart {args:?} hung");
    }
    child.wait_with_output().unwrap()
}

/// A FIFO given as a model, a label table, an exclusion list, a cache or a head is refused at once,
/// named as one (opening it waited for a writer forever; caches and heads were "not found").
#[test]
fn a_fifo_as_an_input_is_refused_not_waited_on() {
    let (d, data, m, cache) = tiny_setup(2);
    extract(&m, &data, &cache, &["--preprocess", "torch", "-q"]);
    let fifo = d.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let f = s(&fifo);
    let out = d.path().join("o.h5");
    for args in [
        vec!["inspect", f],
        vec![
            "extract",
            "--model",
            f,
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        vec![
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--labels",
            f,
            "--out",
            s(&out),
        ],
        vec!["train-head", s(&cache), "--exclude", f, "--out", s(&out)],
        vec!["summary", f],
        vec!["evaluate", "--head", f, "--features", s(&cache)],
    ] {
        failed(
            &run_bounded(&args),
            &["pipe", "is a FIFO (named pipe), not a file"],
        );
    }
    // Files found beside an output or in a folder: a run's plan, an earlier split's manifest, a
    // score file's run record, a model's external data.
    let fifo_at = |p: &Path| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
    };
    let run = d.path().join("run");
    fifo_at(&run.join("plan.json"));
    let sp = d.path().join("sp");
    fifo_at(&sp.join("MANIFEST.tsv"));
    let (_, head) = cache_and_head(d.path(), &m, &data);
    let scores = d.path().join("s.csv");
    let score = ["score", s(&data), "--model", s(&m), "--head", s(&head)];
    ok(&[&score[..], &["--out", s(&scores), "-q"]].concat());
    std::fs::remove_file(d.path().join("s.csv.run.json")).unwrap();
    fifo_at(&d.path().join("s.csv.run.json"));
    let ext = d.path().join("ext.onnx");
    ok(&["make-model", "tiny", "--external-data", "--out", s(&ext)]);
    std::fs::remove_file(d.path().join("ext.onnx_data")).unwrap();
    fifo_at(&d.path().join("ext.onnx_data"));
    for (args, name) in [
        (vec!["status", s(&run)], "plan.json"),
        (
            vec![
                "split",
                s(&data.join("train")),
                "--out",
                s(&sp),
                "--train",
                "1",
                "--test",
                "1",
                "--force",
            ],
            "MANIFEST.tsv",
        ),
        (
            [&score[..], &["--out", s(&scores), "--resume"]].concat(),
            "s.csv.run.json",
        ),
        (vec!["inspect", s(&ext)], "ext.onnx_data"),
    ] {
        failed(
            &run_bounded(&args),
            &[name, "is a FIFO (named pipe), not a file"],
        );
    }
    // Inside a class folder, a FIFO or a device named as a photo is a warning naming it, counted
    // (they were passed over without a word).
    fifo_at(&data.join("train/a/pipe.jpg"));
    std::os::unix::fs::symlink("/dev/null", data.join("train/b/null.jpg")).unwrap();
    let o = run_bounded(&extract_line(&m, &data, &out, &["--preprocess", "torch"]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for (name, what) in [
        ("pipe.jpg", "a FIFO (named pipe)"),
        ("null.jpg", "a device"),
    ] {
        assert!(
            t.contains(name) && t.contains(&format!("skipped: is {what}, not a file")),
            "{t}"
        );
    }
    assert!(t.contains("2 scan warnings"), "{t}");
    // Under --strict they are unreadable images: the run stops, naming the first.
    failed(
        &run_bounded(&extract_line(
            &m,
            &data,
            &out,
            &["--preprocess", "torch", "--strict"],
        )),
        &["not a file (--strict)"],
    );
}

/// `make-features` replaces its own random caches, but a cache extracted from photos only with
/// `--force` (it replaced one in silence).
#[test]
fn random_features_never_replace_an_extracted_cache_unasked() {
    let (_d, data, m, cache) = tiny_setup(2);
    extract(&m, &data, &cache, &["--preprocess", "torch", "-q"]);
    let before = std::fs::read(&cache).unwrap();
    let make = [
        "make-features",
        "--shape",
        "4",
        "--split",
        "train=6",
        "--out",
        s(&cache),
    ];
    fails(
        &make,
        &[
            "f.h5",
            "not a feature cache made by make-features",
            "--force",
        ],
    );
    assert_eq!(std::fs::read(&cache).unwrap(), before);
    ok(&[&make[..], &["--force"]].concat());
    ok(&make);
    // Its own cache, again with other rows.
    ok(&[
        "make-features",
        "--split",
        "train=8",
        "--shape",
        "4",
        "--out",
        s(&cache),
    ]);
}

/// A `--tta flip` score file of a release that mirrored the photo before its crop (its record
/// names no mirror) is not continued by `--resume`: its rows would be averaged with another mirror.
#[test]
fn a_tta_score_file_of_the_old_mirror_is_not_resumed() {
    let (d, data, m, _) = tiny_setup(2);
    let (_, head) = cache_and_head(d.path(), &m, &data);
    let out = d.path().join("t.csv");
    let score = ["score", s(&data), "--model", s(&m), "--head", s(&head)];
    let args = [&score[..], &["--tta", "flip", "--out", s(&out), "-q"]].concat();
    ok(&args);
    let record = d.path().join("t.csv.run.json");
    let mut r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(r["mirror"], "input");
    r.as_object_mut().unwrap().remove("mirror");
    std::fs::write(&record, r.to_string()).unwrap();
    fails(
        &[&args[..], &["--resume"]].concat(),
        &["t.csv", "by an earlier release", "--force"],
    );
    ok(&[&args[..], &["--force"]].concat());
}
