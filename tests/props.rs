//! Property tests (proptest, a few hundred cases, run in CI): image decoding and preprocessing never
//! panic and always produce the configured tensor, and the cache reader refuses damaged files with an
//! error instead of crashing.

use std::io::Write;

use headstart::cache::FeatureCache;
use headstart::data::preprocess::{
    Interpolation, Layout, Mode, Preprocess, Preprocessor, ResizeMode,
};
use proptest::prelude::*;

fn encoded(w: u32, h: u32, seed: u8, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8) ^ seed, (y as u8).wrapping_mul(3), seed])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Any image size, crop fraction, target size, layout and filter: the tensor has the configured
    /// length and only finite values.
    #[test]
    fn preprocessing_any_image_gives_the_configured_tensor(
        w in 1u32..300, h in 1u32..300, tw in 1u32..64, th in 1u32..64,
        crop in prop::option::of(0.05f32..1.0), nhwc: bool, filter in 0usize..4, seed: u8,
    ) {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x as u8) ^ seed, y as u8, seed]));
        let cfg = Preprocess {
            size: (th, tw),
            layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
            resize: crop.map_or(ResizeMode::Squash, |fraction| ResizeMode::Crop { fraction }),
            interpolation: [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Lanczos3][filter],
            normalize: Mode::Torch.normalize(),
            decode: headstart::data::preprocess::Decode::Exact,
        };
        let mut out = vec![f32::NAN; cfg.len()];
        Preprocessor::new(cfg).apply(&img, &mut out).unwrap();
        prop_assert_eq!(out.len(), (3 * tw * th) as usize);
        prop_assert!(out.iter().all(|v| v.is_finite()));
    }

    /// Damaged image files (bytes flipped, cut short, or garbage after a valid header) decode or fail
    /// with an error naming the file; they never panic.
    #[test]
    fn damaged_image_files_never_panic(
        w in 1u32..80, h in 1u32..80, seed: u8, fmt in 0usize..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let format = [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::Bmp][fmt];
        let mut bytes = encoded(w, h, seed, format);
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()).max(1));
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        match headstart::data::decode::decode(f.path()) {
            Ok(img) => prop_assert!(img.width() > 0 && img.height() > 0),
            Err(e) => prop_assert!(e.to_string().contains(&f.path().display().to_string()), "{}", e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// A cache cut short at any length is refused with an error naming it.
    #[test]
    fn truncated_caches_are_refused(cut in any::<prop::sample::Index>()) {
        let d = tempfile::tempdir().unwrap();
        let full = d.path().join("f.h5");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
            .args(["make-features", "--shape", "4,2,2", "--split", "train=6", "--split", "test=4", "--out", full.to_str().unwrap()])
            .output()
            .unwrap();
        prop_assert!(o.status.success());
        let bytes = std::fs::read(&full).unwrap();
        let n = cut.index(bytes.len());
        let damaged = d.path().join("cut.h5");
        std::fs::write(&damaged, &bytes[..n]).unwrap();
        match FeatureCache::open(&damaged) {
            Ok(c) => {
                // Opened (the cut spared the metadata): reading must still fail cleanly or succeed.
                let _ = c.read_split("train");
            }
            Err(e) => prop_assert!(e.to_string().contains("cut.h5"), "{}", e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Shards are contiguous, cover every image exactly once, and differ in size by at most one.
    #[test]
    fn shards_cover_every_image_once(total in 1usize..200_000, n_raw in 1usize..3000) {
        use headstart::runs::plan::shard_range;
        let n = n_raw.min(total);
        let mut next = 0;
        let (mut lo, mut hi) = (usize::MAX, 0);
        for k in 0..n {
            let r = shard_range(total, n, k);
            prop_assert_eq!(r.start, next, "shard {} starts where {} ended", k, k.saturating_sub(1));
            next = r.end;
            lo = lo.min(r.len());
            hi = hi.max(r.len());
        }
        prop_assert_eq!(next, total);
        prop_assert!(hi - lo <= 1, "sizes {}..{}", lo, hi);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// The same files created in any order give the same plan and manifests.
    #[test]
    fn plans_do_not_depend_on_listing_order(
        names in prop::collection::btree_set("[a-z0-9]{1,8}", 3..40),
        shards in 1usize..4,
        seed: u64,
    ) {
        use headstart::runs::{plan::manifest_path, write_plan};
        let d = tempfile::tempdir().unwrap();
        let names: Vec<String> = names.into_iter().collect();
        let mut shuffled = names.clone();
        let mut r = headstart::util::rng::Rng(seed | 1);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, (r.uniform() * (i + 1) as f64) as usize % (i + 1));
        }
        let mut manifests = Vec::new();
        for (run, order) in [("one", &names), ("two", &shuffled)] {
            let data = d.path().join(format!("data_{run}"));
            for (i, n) in order.iter().enumerate() {
                let class = if n.len() % 2 == 0 { "even" } else { "odd" };
                let p = data.join(class).join(format!("{n}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, [i as u8]).unwrap();
            }
            for class in ["even", "odd"] {
                std::fs::create_dir_all(data.join(class)).unwrap();
                std::fs::write(data.join(class).join("zz_pad.png"), b"x").unwrap();
            }
            let out = d.path().join(run);
            let plan = write_plan(&data, Some(shards), &out).unwrap();
            let texts: Vec<String> = (0..plan.shards)
                .map(|k| std::fs::read_to_string(manifest_path(&out, k)).unwrap())
                .collect();
            manifests.push((plan.shard_images, plan.classes, texts));
        }
        prop_assert_eq!(&manifests[0], &manifests[1]);
    }
}
