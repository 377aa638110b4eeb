//! CLI tests: real model, real photos.

use super::*;

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
pub(crate) fn run_known_answer(model: &Path, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
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
pub(crate) fn chelsea_input(shared: &Path) -> Vec<f32> {
    std::fs::read(shared.join("models/testvec/chelsea_input_f32le.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Tolerance against the Python onnxruntime + Pillow reference (scripts/reference_features.py): the
/// JPEG decoders (zune-jpeg vs libjpeg-turbo) and the bicubic resamplers differ by a mean of ~0.2
/// levels each, which moves these features by 2-4% (relative L2); cosine similarity stays >= 0.999.
pub(crate) const REF_MAX_REL_L2: f32 = 0.05;

pub(crate) const REF_MIN_COSINE: f32 = 0.999;

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
    let log = extract(
        &sh.join("models/efficientnet_lite0_features.onnx"),
        &data,
        &out,
        &[],
    );
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
