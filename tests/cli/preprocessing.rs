//! CLI tests: preprocessing and layout.

use super::*;

/// A model that only averages each channel: its output is the mean of the preprocessed input.
pub(crate) fn mean_model(dir: &Path, layout: Layout, name: &str) -> PathBuf {
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

pub(crate) fn mean_features(dir: &Path, model: &Path, rgb: [u8; 3], extra: &[&str]) -> Vec<f32> {
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
    extract(&a, &data, &fa, &["--preprocess", "caffe", "--quiet"]);
    let log = extract(&b, &data, &fb, &["--preprocess", "caffe"]);
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
    let o = run(&extract_line(&m, &data, &out, &["--preprocess", "tf"]));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("dynamic") && text(&o).contains("--size"),
        "{}",
        text(&o)
    );
    extract(
        &m,
        &data,
        &out,
        &["--preprocess", "tf", "--size", "48x24", "--quiet"],
    );
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
    let log = extract(&m2, &data, &out2, &[]);
    assert!(
        log.contains("resize crop 0.875 bicubic") && log.contains("normalise: model metadata"),
        "{log}"
    );
    assert_eq!(FeatureCache::open(&out2).unwrap().meta.input_size, (40, 40));
    // A value that is there but not understood is refused, naming the key (each fell back to a
    // default in silence); a bracketed mean and `0..1.0` are understood; a flag overrides.
    for (key, value, with) in [
        ("color_order", "BGR ", None),
        ("color_order", "xyz", Some("RGB or BGR")),
        ("pixel_scale", "0-1", None),
        ("pixel_scale", "0..255.0", None),
        ("pixel_scale", "[0, 1.0]", None),
        ("interpolation", "InterpolationMode.BILINEAR", None),
        ("input_size", "(3, 40, 40)", None),
        ("mean", "(0.485, 0.456, 0.406)", None),
        ("pixel_scale", "0..100", Some("0..1 or 0..255")),
        ("resize_mode", "center_crop", Some("squash or crop")),
        ("interpolation", "cubicspline", Some("bicubic")),
        ("jpeg_decode", "quick", Some("fast or exact")),
    ] {
        let mut spec = CnnSpec::tiny(Layout::Nchw, None);
        spec.metadata = vec![
            ("input_size".into(), "40x40".into()),
            ("mean".into(), "[0.485, 0.456, 0.406]".into()),
            ("std".into(), "0.229,0.224,0.225".into()),
            (key.into(), value.into()),
        ];
        let m3 = save_model(d.path(), "odd.onnx", &spec);
        let out3 = d.path().join("odd.h5");
        let args = extract_line(&m3, &data, &out3, &["--force"]);
        match with {
            None => {
                ok(&args);
            }
            Some(want) => {
                // The flag of that part overrides it.
                let flag = match key {
                    "color_order" => ["--color", "rgb"],
                    "pixel_scale" => ["--preprocess", "tf"],
                    "resize_mode" => ["--resize", "squash"],
                    "interpolation" => ["--interpolation", "bilinear"],
                    _ => ["--decode", "exact"],
                };
                ok(&[&args[..], &flag].concat());
                fails(
                    &args,
                    &[
                        "odd.onnx",
                        &format!("metadata {key} '{value}' is not understood"),
                        want,
                    ],
                );
            }
        }
    }
    // A fixed input gives its own size: an input_size key it has is not read.
    let mut spec = CnnSpec::tiny(Layout::Nchw, Some((40, 40)));
    spec.metadata = vec![
        ("input_size".into(), "three by three".into()),
        ("preprocess".into(), "tf".into()),
    ];
    let fixed = save_model(d.path(), "fixed.onnx", &spec);
    extract(&fixed, &data, &d.path().join("fixed.h5"), &[]);
    // 0..1 means and stds are scaled to the 0..255 pixels.
    let mut spec = CnnSpec::tiny(Layout::Nchw, None);
    spec.metadata = vec![
        ("input_size".into(), "40x40".into()),
        ("mean".into(), "0.5".into()),
        ("std".into(), "0.25".into()),
        ("pixel_scale".into(), "0..1.0".into()),
    ];
    let m4 = save_model(d.path(), "unit.onnx", &spec);
    let out4 = d.path().join("unit.h5");
    extract(&m4, &data, &out4, &[]);
    assert_eq!(FeatureCache::open(&out4).unwrap().meta.mean, [127.5; 3]);
    // With the normalisation given by a flag, a metadata mean that is not understood is no matter.
    let mut spec = CnnSpec::tiny(Layout::Nchw, None);
    spec.metadata = vec![
        ("input_size".into(), "40x40".into()),
        ("mean".into(), "a,b".into()),
        ("std".into(), "1".into()),
    ];
    let m5 = save_model(d.path(), "badmean.onnx", &spec);
    let out5 = d.path().join("badmean.h5");
    fails(
        &extract_line(&m5, &data, &out5, &[]),
        &["metadata mean 'a,b'"],
    );
    extract(&m5, &data, &out5, &["--preprocess", "tf"]);
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
    let o = run(&extract_line(&m, &data, &d.path().join("f.h5"), &[]));
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
