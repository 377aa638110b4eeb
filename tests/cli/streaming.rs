//! train-head on a cache over its memory budget: the train split streamed block by block. One
//! block holding every row gives the in-memory run's weights bit for bit; many blocks learn the
//! same separable data and rerun identically; the default recipe scores its candidates on a
//! subsample and trains the winner streamed; what cannot stream is refused naming the flag; a
//! damaged chunk names the file, the split and the rows, and writes no head.

use super::*;

/// Every float dataset of a head file, by name (read by h5py, as users read heads).
fn head_floats(path: &Path) -> String {
    let o = Command::new(super::fetch::venv_python())
        .args([
            "-c",
            "import sys, h5py, hashlib\n\
             f = h5py.File(sys.argv[1])\n\
             out = []\n\
             f.visititems(lambda n, o: out.append(n + ' ' + hashlib.sha256(o[()].tobytes()).hexdigest()) if isinstance(o, h5py.Dataset) and o.dtype.kind == 'f' else None)\n\
             print('\\n'.join(sorted(out)))",
            s(path),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// `make-features --out P` with `args`.
fn make_features(p: &Path, args: &[&str]) {
    ok(&[&["make-features", "--out", s(p)][..], args].concat());
}

/// The accuracy `evaluate` printed.
fn accuracy(log: &str) -> f64 {
    log.lines()
        .find_map(|l| l.strip_prefix("accuracy: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {log}"))
}

fn features(d: &Path, name: &str, rows: usize, separation: &str) -> PathBuf {
    let p = d.join(name);
    let split = format!("train={rows}");
    make_features(
        &p,
        &[
            "--shape",
            "4,4,4",
            "--split",
            &split,
            "--separation",
            separation,
        ],
    );
    p
}

#[test]
fn a_split_over_the_budget_streams_and_one_block_gives_the_in_memory_weights() {
    let d = tmp();
    let f = features(d.path(), "f.h5", 3000, "1.0");
    let head = [
        "--head",
        "dense:16:relu",
        "--epochs",
        "3",
        "--seed",
        "3",
        "--pool",
        "avg",
    ];
    let (a, b, c, c2) = (
        d.path().join("a.h5"),
        d.path().join("b.h5"),
        d.path().join("c.h5"),
        d.path().join("c2.h5"),
    );
    let log = train_head(&f, &a, &head);
    assert!(!log.contains("streamed"), "{log}");
    // 3000 x 64 floats is 0.77 MB: over a 600K budget.
    let log = train_head(
        &f,
        &b,
        &[&head[..], &["--memory", "600K", "--block-rows", "100000"]].concat(),
    );
    assert!(
        log.contains("streamed: the train split")
            && log.contains("1 blocks of 100000 rows")
            && log.contains("--block-rows 100000: two blocks and their pooled copies hold"),
        "{log}"
    );
    let want = head_floats(&a);
    assert!(want.lines().count() >= 4, "{want}");
    assert_eq!(head_floats(&b), want, "one block: the in-memory weights");
    // Many blocks: other shuffles, the same data learnt; a rerun is identical.
    let fast = [
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--epochs",
        "5",
        "--head",
        "dense:16:relu",
    ];
    for out in [&c, &c2] {
        let log = train_head(
            &f,
            out,
            &[&fast[..], &["--memory", "600K", "--block-rows", "256"]].concat(),
        );
        assert!(
            log.contains("in 12 blocks of 256 rows") && !log.contains("--block-rows 256:"),
            "{log}"
        );
    }
    assert_ne!(head_floats(&c), want);
    assert_eq!(head_floats(&c), head_floats(&c2));
    let m = d.path().join("m.h5");
    train_head(&f, &m, &fast);
    let acc = |h: &Path| -> f64 {
        accuracy(&ok(&[
            "evaluate",
            "--features",
            s(&f),
            "--head",
            s(h),
            "--split",
            "train",
        ]))
    };
    let (streamed, in_memory) = (acc(&c), acc(&m));
    assert!(
        streamed > 0.95 && (streamed - in_memory).abs() < 0.02,
        "{streamed} vs {in_memory}"
    );
}

#[test]
fn what_cannot_stream_is_refused_and_a_corrupt_block_names_its_rows() {
    let d = tmp();
    let f = features(d.path(), "f.h5", 20000, "0.3");
    let out = d.path().join("h.h5");
    fails(
        &train_line(&f, &out, &["--memory", "1M", "--head", "logistic"]),
        &[
            "--memory",
            "over the memory budget",
            "logistic baseline",
            "layer spec",
        ],
    );
    fails(
        &train_line(&f, &out, &["--memory", "1M"]),
        &["--memory", "validation rows do not fit", "--val-split"],
    );
    fails(
        &train_line(&f, &out, &["--memory", "lots"]),
        &["--memory 'lots'"],
    );
    fails(
        &train_line(&f, &out, &["--head", "dense:8", "--block-rows", "0"]),
        &["--block-rows"],
    );
    // Bytes in the middle of the features overwritten with plausible numbers (0x3f3f3f3f is
    // 0.747): only the chunk's checksum can tell; streamed and in memory, the damaged chunk's rows
    // are named and no head is written.
    let bad = d.path().join("bad.h5");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 1024].fill(0x3f);
    std::fs::write(&bad, bytes).unwrap();
    for memory in ["1M", "1G"] {
        let e = fails(
            &train_line(
                &bad,
                &out,
                &["--head", "dense:8", "--epochs", "1", "--memory", memory],
            ),
            &["bad.h5", "split 'train' rows", "checksum", "damaged"],
        );
        assert!(!out.exists(), "{e}");
    }
}

/// The default recipe on a split over the budget: the candidates are scored on a subsample that
/// fits a quarter of it, the winner is trained on every row streamed, and the choice and the
/// subsample size are printed and stored in the head; the head learns the data.
#[test]
fn auto_scores_on_a_subsample_and_trains_the_winner_streamed() {
    let d = tmp();
    let f = d.path().join("f.h5");
    let splits = ["--split", "train=30000", "--split", "val=2000"];
    let rest = ["--shape", "16", "--separation", "1.0", "--dtype", "f16"];
    make_features(&f, &[&splits[..], &rest].concat());
    let h = d.path().join("h.h5");
    // 30000 x 16 float32 rows are 1.9 MB; a quarter of 1M holds 4096 pooled rows.
    let log = train_head(&f, &h, &["--memory", "1M"]);
    for want in [
        "streamed: the train split",
        "subsample of 4096 of the 30000 train rows",
        "auto: chose",
        "on all 30000 train rows streamed",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    super::safety::py(
        "import sys, h5py, json\nt = json.loads(h5py.File(sys.argv[1]).attrs['training'])['settings']\nassert t['subsample_rows'] == 4096, t\nassert t['recipe'] == 'auto', t",
        &[s(&h)],
    );
    let e = ok(&["evaluate", "--features", s(&f), "--head", s(&h)]);
    assert!(accuracy(&e) > 0.95, "{e}");
}

/// A budget too small even for the approximate audit is refused before anything is read, with the
/// sizes and the flag, and writes nothing; `--approximate` audits and says so.
#[test]
fn an_audit_over_its_memory_budget_is_refused_with_the_sizes() {
    let d = tmp();
    let f = features(d.path(), "f.h5", 2000, "1.0");
    let out = d.path().join("a");
    fails(
        &["audit", s(&f), "--out", s(&out), "--memory", "50K"],
        &[
            "f.h5",
            "2000 photos x 4 features",
            "over the budget",
            "--memory",
        ],
    );
    assert!(!out.join("audit.tsv").exists());
    let exact = ok(&["audit", s(&f), "--out", s(&out), "--memory", "1G"]);
    assert!(out.join("audit.tsv").exists());
    assert!(
        exact.contains("neighbours exact") && !exact.contains("searched approximately"),
        "{exact}"
    );
    let approx = ok(&["audit", s(&f), "--out", s(&out), "--approximate"]);
    assert!(
        approx.contains(" (searched approximately)\nleakage"),
        "{approx}"
    );
    // --json: stdout is the JSON summary alone.
    let o = run(&["audit", s(&f), "--out", s(&out), "--approximate", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(v["approximate"], true, "{v}");
    assert_eq!(v["photos"], 2000, "{v}");
}

/// `score --features`: one row per photo of the split, named by the cache's paths, predicting
/// what `evaluate` counts as right; `--resume` after a cut gives the same file; the cache is
/// never the output, and the head is required.
#[test]
fn score_features_writes_a_row_per_cached_photo_as_evaluate_scores_them() {
    let d = tmp();
    let f = d.path().join("f.h5");
    let splits = ["--split", "train=600", "--split", "test=300"];
    make_features(
        &f,
        &[&["--shape", "16", "--separation", "1.0"][..], &splits].concat(),
    );
    let h = d.path().join("h.h5");
    let fit = [
        "--head",
        "none",
        "--epochs",
        "3",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
    ];
    train_head(&f, &h, &fit);
    let out = d.path().join("p.csv");
    let score = ["score", "--features", s(&f), "--head", s(&h)];
    let log = ok(&[&score[..], &["--out", s(&out)]].concat());
    assert!(log.contains("scored 300 images"), "{log}");
    let csv = std::fs::read_to_string(&out).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "path", "{header:?}");
    let at = header
        .iter()
        .position(|c| *c == "predicted")
        .expect("predicted column");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 300);
    assert!(
        rows[0][0].starts_with("test/class") && rows[0][0].ends_with("/0.jpg"),
        "{:?}",
        rows[0]
    );
    let right = rows
        .iter()
        .filter(|r| r[0].split('/').nth(1) == Some(r[at]))
        .count();
    let eval = ok(&[
        "evaluate",
        "--features",
        s(&f),
        "--head",
        s(&h),
        "--split",
        "test",
    ]);
    let acc = accuracy(&eval);
    assert!(acc > 0.7 && acc < 0.99, "{eval}");
    // evaluate prints 4 decimals.
    assert!(
        (right as f64 / 300.0 - acc).abs() <= 5e-5,
        "{right} right, evaluate {acc}"
    );
    // An interrupted file (cut inside a row) continues to the same bytes.
    let cut = csv.len() / 2;
    std::fs::write(&out, &csv[..cut]).unwrap();
    let log = ok(&[&score[..], &["--out", s(&out), "--resume"]].concat());
    assert!(log.contains("already in the output"), "{log}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), csv);
    // The train split on request; the cache is never the output; no head, no scoring.
    let train = ok(&[&score[..], &["--split", "train"]].concat());
    assert_eq!(
        train.lines().filter(|l| l.starts_with("train/")).count(),
        600
    );
    fails(
        &[&score[..], &["--out", s(&f), "--force"]].concat(),
        &["is an input"],
    );
    fails(&["score", "--features", s(&f)], &["--head"]);
    fails(
        &[&score[..], &["--split", "val"]].concat(),
        &["no split 'val'"],
    );
    // The flags of a model run mean nothing here, and are refused rather than ignored.
    for flag in [
        &["--batch", "4"][..],
        &["--preprocess", "caffe"],
        &["--shard", "1"],
    ] {
        fails(&[&score[..], flag].concat(), &["cannot be used with"]);
    }
}
