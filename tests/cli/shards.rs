//! CLI tests: many machines: plan, shards, merge.

use super::*;

/// `extract --run RUN` for one shard, the index given through `env` (a scheduler's variable).
pub(crate) fn shard_cmd(run: &Path, model: &Path, env: &[(&str, &str)], extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["extract", "--run", s(run), "--model", s(model)])
        .args([
            "--preprocess",
            "tf",
            "--batch",
            "2",
            "--decode-threads",
            "1",
        ])
        .args(["--progress", "none"])
        .args(extra);
    for v in headstart::runs::plan::SHARD_ENV {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs headstart (success or not) and returns its output.
/// `headstart plan` of `data` into `shards` shards at `run`; its output.
pub(crate) fn plan(data: &Path, shards: usize, run: &Path) -> String {
    let n = shards.to_string();
    ok(&["plan", "--data", s(data), "--shards", &n, "--out", s(run)])
}

/// Rewrites `RUN/plan.json` as a release before manifest hashes wrote it (so a test can edit a
/// manifest and reach the checks behind the hash).
pub(crate) fn as_earlier_plan(run: &Path) {
    let plan = run.join("plan.json");
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    p.as_object_mut()
        .unwrap()
        .remove("manifest_sha256")
        .unwrap();
    std::fs::write(&plan, p.to_string()).unwrap();
}

pub(crate) fn run_cmd(args: &[&str]) -> String {
    text(&run(args))
}

pub(crate) fn succeeds(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed:\n{}", text(&o));
    text(&o)
}

/// `extract` of `data` into `out` with `--preprocess tf` (the tiny models' preprocessing), quietly.
pub(crate) fn tf_extract(m: &Path, data: &Path, out: &Path) -> String {
    extract(m, data, out, &["--preprocess", "tf", "-q"])
}

/// [`tf_extract`] of `data` with two models, each into its own cache; both caches opened.
pub(crate) fn tf_extract_both(
    (m1, o1): (&Path, &Path),
    (m2, o2): (&Path, &Path),
    data: &Path,
) -> (FeatureCache, FeatureCache) {
    tf_extract(m1, data, o1);
    tf_extract(m2, data, o2);
    (
        FeatureCache::open(o1).unwrap(),
        FeatureCache::open(o2).unwrap(),
    )
}

/// Asserts that two caches hold the same splits, preprocessing, paths, labels, skips and features
/// (bit for bit).
pub(crate) fn same_rows(a: &Path, b: &Path) {
    let (a, b) = (
        FeatureCache::open(a).unwrap(),
        FeatureCache::open(b).unwrap(),
    );
    assert_eq!(a.meta.splits, b.meta.splits);
    assert_eq!(a.meta.preprocess, b.meta.preprocess);
    for split in &a.meta.splits {
        let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
        assert_eq!(
            (&x.paths, &x.labels, &x.skipped),
            (&y.paths, &y.labels, &y.skipped)
        );
        assert_eq!(
            x.features, y.features,
            "{split}: features must be bit for bit"
        );
    }
}

#[test]
fn shards_on_three_schedulers_with_a_kill_and_a_requeue_merge_to_one_extract() {
    let (d, data, m, _) = tiny_setup(5);
    std::fs::write(data.join("train/b/empty.jpg"), b"").unwrap();
    let run = d.path().join("run");
    let log = plan(&data, 4, &run);
    assert!(
        log.contains("21 images") && log.contains("4 shards of 5-6 images"),
        "{log}"
    );
    fails(
        &[
            "plan",
            "--data",
            s(&data),
            "--shards",
            "4",
            "--out",
            s(&run),
        ],
        &["a plan is already there"],
    );
    succeeds(&mut shard_cmd(
        &run,
        &m,
        &[("SLURM_ARRAY_TASK_ID", "0")],
        &[],
    ));
    succeeds(&mut shard_cmd(
        &run,
        &m,
        &[("JOB_COMPLETION_INDEX", "1")],
        &[],
    ));
    // Shard 2 (AWS Batch's variable) is killed after its first batch.
    let o = shard_cmd(
        &run,
        &m,
        &[("AWS_BATCH_JOB_ARRAY_INDEX", "2"), (ABORT_AT, "extract:1")],
        &[],
    )
    .output()
    .unwrap();
    assert!(!o.status.success());
    let st = ok(&["status", s(&run)]);
    assert!(
        st.contains("done:    2 shards") && st.contains("started: 2") && st.contains("missing: 3"),
        "{st}"
    );
    assert!(st.contains("sbatch --array=2-3"), "{st}");
    fails(
        &["merge", s(&run), "--out", s(&d.path().join("m.h5"))],
        &["shard(s) 2-3 of 4"],
    );
    // The requeue: only the unfinished shards run again; shard 2 continues its journal.
    let log = succeeds(&mut shard_cmd(&run, &m, &[("HEADSTART_SHARD", "2")], &[]));
    assert!(
        log.contains("2 of 5 images already in"),
        "shard 2 should resume: {log}"
    );
    // Slurm's offset: array index 1 + offset 2 = shard 3.
    succeeds(&mut shard_cmd(
        &run,
        &m,
        &[("SLURM_ARRAY_TASK_ID", "1")],
        &["--shard-offset", "2"],
    ));
    let log = succeeds(&mut shard_cmd(&run, &m, &[], &["--shard", "3"]));
    assert!(log.contains("already done"), "{log}");
    // The same shard resubmitted with another model is told so, not answered "already done".
    let other = save_model(
        d.path(),
        "other.onnx",
        &CnnSpec {
            seed: 99,
            ..CnnSpec::tiny(Layout::Nchw, Some((32, 32)))
        },
    );
    let o = shard_cmd(&run, &other, &[], &["--shard", "3"])
        .output()
        .unwrap();
    failed(
        &o,
        &[
            "other.onnx",
            "shard 3 of this run was extracted with another model",
        ],
    );
    fails(
        &[
            "extract",
            "--run",
            s(&run),
            "--model",
            s(&m),
            "--shard",
            "4",
        ],
        &["shards 0..3", "comes from the plan"],
    );
    let markers = std::fs::read_dir(run.join("done")).unwrap().count();
    assert_eq!(markers, 4, "one marker per shard, no temporary files");
    assert!(ok(&["status", s(&run)]).contains("all shards are done"));

    // Never among the run's photos (it was written there).
    let among = data.join("m.h5");
    fails(&["merge", s(&run), "--out", s(&among)], &["inside"]);
    assert!(!among.exists());
    let merged = d.path().join("merged.h5");
    let log = ok(&["merge", s(&run), "--out", s(&merged)]);
    assert!(log.contains("20 rows, 1 skipped"), "{log}");
    let single = d.path().join("single.h5");
    tf_extract(&m, &data, &single);
    same_rows(&merged, &single);

    // train-head and evaluate take the run folder: merged once into RUN/merged.h5, then reused.
    let head = d.path().join("head.h5");
    let log = ok(&[
        "train-head",
        s(&run),
        "--recipe",
        "seed",
        "--epochs",
        "1",
        "--out",
        s(&head),
    ]);
    assert!(log.contains("merged 4 shards"), "{log}");
    let merged_at = std::fs::metadata(run.join("merged.h5"))
        .unwrap()
        .modified()
        .unwrap();
    let log = ok(&["evaluate", "--head", s(&head), "--features", s(&run)]);
    assert!(
        !log.contains("merged 4 shards") && log.contains("accuracy"),
        "{log}"
    );
    // RUN/merged.h5 maps the shards' features in place (no copy): the same rows as one extract.
    let linked = run.join("merged.h5");
    same_rows(&linked, &single);
    super::safety::py(
        "import sys, h5py\nf = h5py.File(sys.argv[1])\nassert all(f[s + '/features'].is_virtual for s in ('train', 'test')), 'not linked'\nassert f['train/features'].fillvalue != f['train/features'].fillvalue, 'unread rows must be NaN'",
        &[s(&linked)],
    );
    // A linked cache whose shard is gone, or that names a file outside its folder, is refused
    // when it is opened (HDF5 would read the missing rows as zeros).
    let moved = d.path().join("elsewhere.h5");
    std::fs::copy(&linked, &moved).unwrap();
    fails(
        &["summary", s(&moved)],
        &["elsewhere.h5", "which is missing", "merge RUN --out"],
    );
    let forged = run.join("forged.h5");
    super::safety::py(
        "import sys, h5py, shutil\nshutil.copy(sys.argv[1], sys.argv[2])\nf = h5py.File(sys.argv[2], 'r+')\nds = f['train/features']\nshape, dt = ds.shape, ds.dtype\ndel f['train/features']\nlay = h5py.VirtualLayout(shape=shape, dtype=dt)\nlay[:] = h5py.VirtualSource('../escape.h5', 'train/features', shape=shape)\nf['train'].create_virtual_dataset('features', lay)",
        &[s(&linked), s(&forged)],
    );
    fails(
        &["summary", s(&forged)],
        &["forged.h5", "../escape.h5", "outside its folder"],
    );
    std::fs::remove_file(&forged).unwrap();
    assert_eq!(
        std::fs::metadata(run.join("merged.h5"))
            .unwrap()
            .modified()
            .unwrap(),
        merged_at
    );

    // score --run: each shard's rows, joined by merge --scores, are the rows of one score run.
    for k in 0..4 {
        let o = bin()
            .args([
                "score",
                "--run",
                s(&run),
                "--model",
                s(&m),
                "--head",
                s(&head),
                "-q",
            ])
            .env("SLURM_ARRAY_TASK_ID", k.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let again = run_cmd(&[
        "score",
        "--run",
        s(&run),
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--shard",
        "2",
        "-q",
    ]);
    assert!(again.contains("already scored"), "{again}");
    let st = ok(&["status", s(&run)]);
    assert!(
        st.contains("scored:  4 of 4 shards") && st.contains("not scored: none"),
        "{st}"
    );
    let among = data.join("all.csv");
    fails(&["merge", s(&run), "--scores", s(&among)], &["inside"]);
    assert!(!among.exists());
    let all = d.path().join("all.csv");
    let log = ok(&["merge", s(&run), "--scores", s(&all)]);
    assert!(
        log.contains("21 rows"),
        "{log}\n{}",
        std::fs::read_to_string(&all).unwrap()
    );
    let one = d.path().join("one.csv");
    let canon = data.canonicalize().unwrap();
    ok(&[
        "score",
        s(&canon),
        "--model",
        s(&m),
        "--head",
        s(&head),
        "--out",
        s(&one),
        "-q",
    ]);
    let rows = |p: &Path| {
        let t = std::fs::read_to_string(p).unwrap();
        let mut l: Vec<String> = t.lines().map(String::from).collect();
        let header = l.remove(0);
        l.sort();
        (header, l)
    };
    assert_eq!(rows(&all), rows(&one), "sharded scores equal one score run");
    // A shard asked again with other options is told it was scored by another run, and a shard
    // scored so (its files removed, then scored with --threshold) stops the merge: one header over
    // rows of two runs was written in silence.
    let shard2 = |extra: &[&str]| {
        let a = [
            "score",
            "--run",
            s(&run),
            "--model",
            s(&m),
            "--head",
            s(&head),
            "--shard",
            "2",
            "-q",
        ];
        super::run(&[&a[..], extra].concat())
    };
    failed(
        &shard2(&["--threshold", "0.9"]),
        &[
            "shard 2 of this run was already scored by another run",
            "--threshold: none",
            "0.9",
        ],
    );
    let forget2 = || {
        for f in [
            "scored/00002.json",
            "scores/shard-00002.csv",
            "scores/shard-00002.csv.run.json",
        ] {
            std::fs::remove_file(run.join(f)).unwrap();
        }
    };
    forget2();
    assert!(shard2(&["--threshold", "0.9"]).status.success());
    fails(
        &["merge", s(&run), "--scores", s(&d.path().join("mixed.csv"))],
        &[
            "shards 0 and 2 were scored by different runs",
            "--threshold",
        ],
    );
    assert!(!d.path().join("mixed.csv").exists());
    forget2();
    assert!(shard2(&[]).status.success());
    ok(&["merge", s(&run), "--scores", s(&all)]);
    assert_eq!(rows(&all), rows(&one));

    // A shard's rows changed by hand (its fingerprint kept) are caught by its marker's hash, also
    // by a command that reads the run's own merged.h5.
    super::safety::py(
        "import sys, h5py\nf = h5py.File(sys.argv[1], 'r+')\nds = f['train/features']\nds[0] = ds[0] + 1",
        &[s(&run.join("shards/shard-00002.h5"))],
    );
    fails(
        &["evaluate", "--head", s(&head), "--features", s(&run)],
        &["shard 2: sha256", "its marker says"],
    );
    // A changed shard output is caught by its marker's hash.
    std::fs::copy(
        run.join("shards/shard-00000.h5"),
        run.join("shards/shard-00001.h5"),
    )
    .unwrap();
    fails(
        &["merge", s(&run), "--out", s(&merged)],
        &["shard 1: sha256", "its marker says"],
    );
}

#[test]
fn two_copies_of_a_shard_leave_one_output_and_sigterm_keeps_finished_batches() {
    let (d, data, m, _) = tiny_setup(4);
    let run = d.path().join("run");
    plan(&data, 1, &run);
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            shard_cmd(&run, &m, &[("HEADSTART_SHARD", "0")], &[])
                .spawn()
                .unwrap()
        })
        .collect();
    let oks = kids
        .iter_mut()
        .map(|k| k.wait().unwrap().success())
        .filter(|&ok| ok)
        .count();
    assert!(oks >= 1, "at least one copy finishes");
    assert_eq!(std::fs::read_dir(run.join("done")).unwrap().count(), 1);
    let outs: Vec<_> = std::fs::read_dir(run.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outs,
        vec![std::ffi::OsString::from("shard-00000.h5")],
        "no second output, no leftovers"
    );

    // SIGTERM mid-shard: the batch in flight finishes, the journal keeps it, the rerun continues.
    let run2 = d.path().join("run2");
    plan(&data, 2, &run2);
    let ready = d.path().join("waiting-for-sigterm");
    let mut c = shard_cmd(
        &run2,
        &m,
        &[
            ("HEADSTART_SHARD", "1"),
            ("HEADSTART_TEST_WAIT_FOR_SIGTERM_AT", "extract:2"),
            ("HEADSTART_TEST_READY_FILE", s(&ready)),
        ],
        &[],
    );
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The binary says (a file) when it waits at the checkpoint: the signal comes then.
    assert!(
        wait_until(60.0, || ready.exists()),
        "the shard never reached checkpoint 2"
    );
    sigterm(&child, 1, std::time::Duration::ZERO);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    // Normally after checkpoint 2 (4 images); after 2 if the signal came before the first check.
    let t = text(&o);
    let kept = ["2", "4"]
        .into_iter()
        .find(|n| t.contains(&format!("stopped on request after {n} images")))
        .unwrap_or_else(|| panic!("no stop message: {t}"));
    assert!(ok(&["status", s(&run2)]).contains("started: 1"));
    let log = succeeds(&mut shard_cmd(&run2, &m, &[("HEADSTART_SHARD", "1")], &[]));
    assert!(
        log.contains(&format!("{kept} of 8 images already in")),
        "{log}"
    );
}
