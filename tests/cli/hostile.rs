//! CLI tests: hostile inputs.

use super::*;

pub(crate) fn crc32(data: &[u8]) -> u32 {
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
pub(crate) fn png_header_only(path: &Path, w: u32, h: u32) {
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
    let o = run(&extract_line(
        &model,
        &data,
        &out,
        &["--preprocess", "torch"],
    ));
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
    let o = run(&extract_line(
        &model,
        &data,
        &out,
        &["--preprocess", "raw", "-q"],
    ));
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
    extract(&model, &data, &out, &["--preprocess", "raw", "-q"]);
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
    let args = extract_line(
        &m,
        &data,
        &out,
        &[
            "--preprocess",
            "tf",
            "--batch",
            "1",
            "--decode-threads",
            "1",
            "-q",
        ],
    );
    let mut kills = 0;
    let journal = headstart::cache::journal_path(&out);
    let lock = headstart::util::lock::lock_path(&out);
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    // The moments: as soon as the run holds its lock (before any batch), then four times once the
    // journal has grown by one more batch or more.
    for moment in 0..5 {
        let base = len(&journal);
        let mut child = bin()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(60.0, || {
            (if moment == 0 {
                lock.exists()
            } else {
                len(&journal) > base
            }) || child.try_wait().unwrap().is_some()
        });
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
    assert!(kills > 0, "no run was killed mid-way");
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
    assert_eq!(
        headstart::data::decode::decode(&plain)
            .unwrap()
            .dimensions(),
        (40, 20)
    );
    let img = headstart::data::decode::decode(&rotated).unwrap();
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
    extract(&m, &data, &out, &["--preprocess", "raw", "-q"]);
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
    // Each run is killed once it has written more rows than the run before left.
    let rows = |p: &Path| std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
    for _ in 0..3 {
        let base = rows(&out);
        let mut child = bin()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(60.0, || {
            rows(&out) > base + 1 || child.try_wait().unwrap().is_some()
        });
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
