//! Tests of [`super`]: a multi-label split over the memory budget trains streamed, one block giving
//! the in-memory head bit for bit (weights and thresholds), many blocks learning the same tags.

use super::*;
use crate::cache::synthetic::{synthetic, SyntheticSpec};
use crate::cache::write_arrays;
use crate::events::Silent;
use crate::head::tags::macro_ap;

/// A 3-class multi-label cache (train 2000, val 400, 8 features): class c is tagged where feature
/// c is positive, so a linear head can learn every tag.
fn multi_label_cache(dir: &Path) -> PathBuf {
    let (mut meta, mut splits) = synthetic(&SyntheticSpec {
        shape: vec![8],
        splits: vec![("train".into(), 2000), ("val".into(), 400)],
        classes: 3,
        separation: 0.0,
        seed: 4,
        dtype: crate::cache::Dtype::F32,
    })
    .unwrap();
    meta.multi_label = true;
    for sd in &mut splits {
        let mut tags = Vec::new();
        for i in 0..sd.len() {
            for c in 0..3 {
                tags.push(u8::from(sd.features[i * 8 + c] > 0.0));
            }
        }
        sd.tags = tags;
    }
    let path = dir.join("tags.h5");
    write_arrays(&crate::util::output::Output::new(&path), &meta, &splits).unwrap();
    path
}

fn train(features: &Path, out: &str, memory: Option<u64>, block_rows: Option<usize>) -> Head {
    let mut cfg = TrainHeadConfig::new(features);
    cfg.out = features.with_file_name(out);
    cfg.history = history_path(&cfg.out);
    cfg.head = HeadChoice::Mlp(TrainConfig {
        spec: crate::head::net::parse_spec("none").unwrap(),
        optimizer: crate::head::optim::OptimizerSpec {
            kind: crate::head::optim::OptimizerKind::Adam,
            lr: 0.01,
            weight_decay: 0.0,
        },
        epochs: 4,
        batch_size: 32,
        ..TrainConfig::default()
    });
    cfg.memory = memory;
    cfg.block_rows = block_rows;
    train_head(&cfg, &Silent).unwrap();
    Head::load(&cfg.out).unwrap()
}

#[test]
fn a_multi_label_split_over_the_budget_trains_streamed() {
    let d = tempfile::tempdir().unwrap();
    let f = multi_label_cache(d.path());
    let in_memory = train(&f, "a.h5", None, None);
    // 2000 x 8 floats are 64 KB: over a 60 KB budget (their targets, 24 KB, fit half of it).
    let one_block = train(&f, "b.h5", Some(60_000), Some(100_000));
    assert!(
        one_block.training.contains("\"budget_bytes\""),
        "{}",
        one_block.training
    );
    assert!(!in_memory.training.contains("\"budget_bytes\""));
    assert_eq!(
        one_block.network, in_memory.network,
        "one block: the in-memory weights"
    );
    assert_eq!(one_block.thresholds, in_memory.thresholds);
    assert_eq!(in_memory.thresholds.as_ref().map(Vec::len), Some(3));
    let blocks = train(&f, "c.h5", Some(60_000), Some(256));
    assert_ne!(blocks.network, in_memory.network);
    let cache = FeatureCache::open(&f).unwrap();
    let val = cache.read_split("val").unwrap();
    let truth = targets(&val, 3).unwrap();
    for head in [&in_memory, &blocks] {
        let p = head.probabilities(val.features.clone(), val.len()).unwrap();
        let ap = macro_ap(p.view(), truth.view());
        assert!(ap > 0.95, "macro AP {ap}");
    }
}
