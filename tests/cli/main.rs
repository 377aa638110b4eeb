//! Integration tests of the `headstart` binary: tiny generated models and images, plus a few real
//! photos and the shared known-answer vector. One test binary: the helpers every section uses are
//! here; each section of the journey is a module beside this file (`extract`, `shards`,
//! `preprocessing`, `bad_input`, `real_photos`, `train_evaluate`, `score_export`, `quantize`,
//! `inspect_cut`, `labels`, `hostile`, `reports`, `finetune`, `fetch`, `split`, `augment_recipes`,
//! `cloud`, `docs`, `safety`, `review`, `transformers`, `hub`, `streaming`), whose own helpers the others reach through the `use` lines at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use headstart::cache::FeatureCache;
use headstart::data::preprocess::{self, Layout, Preprocess};
use headstart::infer::model::BaseModel;
use headstart::infer::runtime::RuntimeConfig;
use headstart::onnx::{self, generate::CnnSpec};

#[path = "../support/http.rs"]
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
    failed(&run(args), want)
}

/// A finished run that must have failed, saying every `want`; returns its output.
fn failed(o: &Output, want: &[&str]) -> String {
    let t = text(o);
    assert!(!o.status.success(), "should have failed:\n{t}");
    for w in want {
        assert!(t.contains(w), "'{w}' not in:\n{t}");
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

/// `extract --model M --data D --out O` and `extra`: the command line most tests start from.
fn extract_line<'a>(m: &'a Path, data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let line = [
        "extract",
        "--model",
        s(m),
        "--data",
        s(data),
        "--out",
        s(out),
    ];
    [&line[..], extra].concat()
}

/// `train-head CACHE --out HEAD` and `extra`.
fn train_line<'a>(cache: &'a Path, head: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    [&["train-head", s(cache), "--out", s(head)][..], extra].concat()
}

/// Runs [`train_line`] expecting success; returns its output.
fn train_head(cache: &Path, head: &Path, extra: &[&str]) -> String {
    ok(&train_line(cache, head, extra))
}

/// Runs [`extract_line`] expecting success; returns its output.
fn extract(m: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
    ok(&extract_line(m, data, out, extra))
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

/// Polls `cond` every 5 ms until it holds (true) or `seconds` pass (false).
fn wait_until(seconds: f64, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
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

#[cfg(feature = "cloud")]
#[path = "../support/s3.rs"]
mod s3;

mod augment_recipes;
mod bad_input;
#[cfg(feature = "cloud")]
mod cloud;
mod docs;
mod extract;
mod fetch;
#[cfg(feature = "finetune")]
mod finetune;
mod hostile;
mod hub;
mod inspect_cut;
mod labels;
mod outputs;
mod preprocessing;
mod quantize;
mod real_photos;
mod reports;
mod review;
mod safety;
mod score_export;
mod shards;
mod split;
mod streaming;
mod train_evaluate;
mod transformers;

#[allow(unused_imports)]
use augment_recipes::*;
#[allow(unused_imports)]
use bad_input::*;
#[cfg(feature = "cloud")]
#[allow(unused_imports)]
use cloud::*;
#[allow(unused_imports)]
use extract::*;
#[allow(unused_imports)]
use fetch::*;
#[allow(unused_imports)]
#[cfg(feature = "finetune")]
use finetune::*;
#[allow(unused_imports)]
use hostile::*;
#[allow(unused_imports)]
use inspect_cut::*;
#[allow(unused_imports)]
use preprocessing::*;
#[allow(unused_imports)]
use quantize::*;
#[allow(unused_imports)]
use real_photos::*;
#[allow(unused_imports)]
use reports::*;
#[allow(unused_imports)]
use safety::*;
#[allow(unused_imports)]
use score_export::*;
#[allow(unused_imports)]
use shards::*;
#[allow(unused_imports)]
use split::*;
#[allow(unused_imports)]
use train_evaluate::*;
