//! Tests of [`super`]: injected label flips and duplicates are found, and the out-of-fold
//! probabilities are out of fold.

use super::*;
use crate::cache::synthetic::{synthetic, SyntheticSpec};
use crate::cache::write_arrays;
use crate::events::Silent;
use crate::head::file::probabilities_from_logits;
use crate::head::logistic::fit_logistic;
use crate::util::rng::Rng;
use folds::capped;

/// A separable 3-class cache (train 300, test 90) with 15 train labels flipped to the next class
/// and 5 train photos copied into test with a little noise (leakage): the flips are flagged with
/// their true class suggested, and the copies as leakage pairs; by the exact audit and by the
/// approximate one alike.
#[test]
fn injected_flips_and_leaked_copies_are_found() {
    injected_flips_and_leaked_copies(false);
    injected_flips_and_leaked_copies(true);
}

fn injected_flips_and_leaked_copies(approximate: bool) {
    let d = tempfile::tempdir().unwrap();
    let (meta, mut splits) = synthetic(&SyntheticSpec {
        shape: vec![24],
        splits: vec![("train".into(), 300), ("test".into(), 90)],
        classes: 3,
        separation: 3.0,
        seed: 5,
        dtype: crate::cache::Dtype::F32,
    })
    .unwrap();
    let flipped: Vec<usize> = (0..15).map(|k| 7 + k * 19).collect();
    let truth: Vec<u32> = flipped.iter().map(|&i| splits[0].labels[i]).collect();
    for &i in &flipped {
        splits[0].labels[i] = (splits[0].labels[i] + 1) % 3;
    }
    let mut rng = Rng(1);
    let copied = [3usize, 50, 101, 160, 222];
    for (k, &i) in copied.iter().enumerate() {
        let row: Vec<f32> = splits[0].features[i * 24..(i + 1) * 24]
            .iter()
            .map(|v| v + 0.01 * rng.normal())
            .collect();
        splits[1].features[k * 24..(k + 1) * 24].copy_from_slice(&row);
        splits[1].labels[k] = splits[0].labels[i];
    }
    let path = d.path().join("c.h5");
    write_arrays(&crate::util::output::Output::new(&path), &meta, &splits).unwrap();
    let mut cfg = AuditConfig::new(&path);
    cfg.near = 0.999;
    cfg.approximate = approximate;
    let s = audit(&cfg, &Silent).unwrap();
    let flagged: Vec<&Finding> = s.findings.iter().filter(|f| f.issue == "label").collect();
    let hits = flipped
        .iter()
        .zip(&truth)
        .filter(|(&i, &t)| {
            flagged
                .iter()
                .any(|f| f.file == splits[0].paths[i] && f.suggested == meta.classes[t as usize])
        })
        .count();
    assert!(hits >= 13, "{hits} of 15 flips found: {flagged:?}");
    assert!(
        flagged.len() <= 18,
        "{} flagged for 15 flips",
        flagged.len()
    );
    let leaks: Vec<&Finding> = s.findings.iter().filter(|f| f.issue == "leakage").collect();
    for (k, &i) in copied.iter().enumerate() {
        let pair = splits[0].paths[i].clone();
        assert!(
            leaks
                .iter()
                .any(|f| f.file == splits[1].paths[k] && f.pair == pair),
            "copy {k} of train row {i}: {leaks:?}"
        );
    }
    assert_eq!(s.leakage, 5, "{leaks:?}");
    let tsv = std::fs::read_to_string(d.path().join("c.audit").join("audit.tsv")).unwrap();
    assert!(tsv.starts_with(HEADER));
    assert_eq!(tsv.lines().count(), s.findings.len() + 1);
    let oof = std::fs::read_to_string(d.path().join("c.audit").join("out_of_fold.csv")).unwrap();
    assert_eq!(oof.lines().count(), 391);
    assert!(oof.starts_with("split,file,label,p_"), "{oof}");
    // A second audit replaces its own table; a file that is not one is refused.
    audit(&cfg, &Silent).unwrap();
    std::fs::write(d.path().join("c.audit").join("audit.tsv"), "mine").unwrap();
    let e = audit(&cfg, &Silent).unwrap_err().to_string();
    assert!(e.contains("audit.tsv"), "{e}");
    std::fs::remove_file(d.path().join("c.audit").join("audit.tsv")).unwrap();
    // So is an out_of_fold.csv that is not one, before any work.
    let oof_path = d.path().join("c.audit").join("out_of_fold.csv");
    std::fs::write(&oof_path, "mine").unwrap();
    let e = audit(&cfg, &Silent).unwrap_err().to_string();
    assert!(e.contains("out_of_fold.csv"), "{e}");
    std::fs::remove_file(&oof_path).unwrap();
    // Under a budget too small for either audit, the refusal gives the sizes.
    cfg.memory = Some(10_000);
    let e = audit(&cfg, &Silent).unwrap_err().to_string();
    assert!(
        e.contains("approximate audit of 390 photos") && e.contains("--memory"),
        "{e}"
    );
}

/// Random labels on random features wider than the rows: a head memorises its training rows, so
/// probabilities from a fold that trained on the row would give the label nearly 1. Out of fold
/// they stay near chance.
#[test]
fn out_of_fold_probabilities_never_come_from_a_head_that_saw_the_row() {
    let mut rng = Rng(2);
    let n = 80;
    let x = Array2::from_shape_fn((n, 200), |_| rng.normal());
    let labels: Vec<u32> = (0..n).map(|_| (rng.next_u64() % 2) as u32).collect();
    let fold = folds_of(&labels, 2, 5, 1);
    let oof = out_of_fold(&x, &labels, 2, &fold, 5, &Silent).unwrap();
    let mean_given = |p: &Array2<f32>| {
        labels
            .iter()
            .enumerate()
            .map(|(i, &l)| p[[i, l as usize]] as f64)
            .sum::<f64>()
            / n as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let seen = fit_logistic(&x, &labels, &all, 2, 1.0, 100).unwrap();
    let in_sample = probabilities_from_logits(&seen.logits(&x));
    assert!(mean_given(&in_sample) > 0.9, "{}", mean_given(&in_sample));
    assert!(mean_given(&oof) < 0.6, "{}", mean_given(&oof));
    // Every fold is stratified and used.
    for f in 0..5 {
        assert!(fold.iter().filter(|&&k| k == f).count() >= 15);
    }
}

/// What `train-head --exclude` reads back from an audit.tsv: every finding's photo, and a
/// leakage row's pair too.
#[test]
fn an_audit_tsv_reads_back_as_an_exclusion_list() {
    let f = |file: &str, issue: &'static str, pair: &str| Finding {
        file: file.into(),
        split: "test".into(),
        issue,
        score: 0.5,
        given: "cat".into(),
        suggested: String::new(),
        pair: pair.into(),
    };
    let findings = [
        f("train/dog/cat.1.jpg", "label", ""),
        f("test/cat/c.jpg", "leakage", "train/cat/c.jpg"),
        f("train/cat/d2.jpg", "duplicate", "train/cat/d1.jpg"),
        f("val/x.jpg", "outlier", ""),
    ];
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit.tsv");
    std::fs::write(&p, table(&findings)).unwrap();
    assert!(is_audit(&p));
    let ex = crate::data::exclude::Exclusion::read(&p).unwrap();
    let got: Vec<&str> = ex.files.iter().map(String::as_str).collect();
    assert_eq!(
        got,
        [
            "test/cat/c.jpg",
            "train/cat/c.jpg",
            "train/cat/d2.jpg",
            "train/dog/cat.1.jpg",
            "val/x.jpg"
        ]
    );
}

/// A large fold's training rows are a seeded, stratified sample of the others, of about
/// MAX_FOLD_ROWS; a small fold's are all of them.
#[test]
fn large_folds_train_on_a_stratified_sample() {
    let labels: Vec<u32> = (0..50_000u32)
        .map(|i| u32::from(i % 10 == 0) + u32::from(i % 100 == 0))
        .collect();
    let train: Vec<usize> = (0..50_000).filter(|i| i % 5 != 0).collect();
    let a = capped(train.clone(), &labels, 3, 7);
    assert_eq!(a, capped(train.clone(), &labels, 3, 7), "seeded");
    assert_ne!(a, capped(train.clone(), &labels, 3, 8));
    assert!(
        a.len() <= MAX_FOLD_ROWS + 3 && a.len() >= MAX_FOLD_ROWS,
        "{}",
        a.len()
    );
    assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|i| i % 5 != 0));
    for c in 0..3 {
        let share = |rows: &[usize]| {
            rows.iter().filter(|&&i| labels[i] == c).count() as f64 / rows.len() as f64
        };
        assert!((share(&a) - share(&train)).abs() < 1e-3, "class {c}");
    }
    let small: Vec<usize> = (0..100).collect();
    assert_eq!(capped(small.clone(), &labels, 3, 7), small);
}

/// A cache of `n` photos of 32 features in 3 classes, the last class only `rare` photos.
fn rare_class_cache(dir: &Path, n: usize, rare: usize) -> PathBuf {
    let (meta, mut splits) = synthetic(&SyntheticSpec {
        shape: vec![32],
        splits: vec![("train".into(), n)],
        classes: 3,
        separation: 1.0,
        seed: 8,
        dtype: crate::cache::Dtype::F32,
    })
    .unwrap();
    let mut kept = 0;
    for l in splits[0].labels.iter_mut() {
        if *l == 2 {
            if kept == rare {
                *l = 0;
            } else {
                kept += 1;
            }
        }
    }
    let path = dir.join(format!("rare{n}-{rare}.h5"));
    write_arrays(&crate::util::output::Output::new(&path), &meta, &splits).unwrap();
    path
}

/// The approximate audit's fold sample, on 200,000 photos with a class of 3: each fold's
/// share of the sample holds a photo of it, so no fold's head misses the class (a sample by class
/// alone keeps one photo of it, in one fold); the sample is about the size asked for, ascending.
/// A class of one photo cannot be checked: the audit says so and still looks for duplicates and
/// outliers, exact or approximate.
#[test]
fn rare_classes_are_audited_or_said_to_be_too_few() {
    let n = 200_000;
    let mut labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    for i in [10, 20_000, 150_001] {
        labels[i] = 2;
    }
    let fold = folds_of(&labels, 3, 3, 42);
    let sample = streamed::fold_sample(&labels, 3, (&fold, 3), 20_000, 7);
    assert!(sample.windows(2).all(|w| w[0] < w[1]));
    assert!((30_000..30_020).contains(&sample.len()), "{}", sample.len());
    for f in 0..3 {
        for c in 0..3 {
            assert!(
                sample.iter().any(|&i| fold[i] != f && labels[i] == c),
                "fold {f}'s head has no class {c}"
            );
        }
    }
    let d = tempfile::tempdir().unwrap();
    struct Notices(std::sync::Mutex<Vec<String>>);
    impl Reporter for Notices {
        fn report(&self, e: Event<'_>) {
            if let Event::Notice(m) = e {
                self.0.lock().unwrap().push(m.to_string());
            }
        }
    }
    let one = rare_class_cache(d.path(), 300, 1);
    for approximate in [false, true] {
        let mut cfg = AuditConfig::new(&one);
        cfg.approximate = approximate;
        let said = Notices(Default::default());
        let s = audit(&cfg, &said).unwrap();
        assert_eq!(s.label_issues, 0);
        let said = said.0.into_inner().unwrap();
        assert!(
            said.iter().any(|m| m.contains("fewer than 2 photos")),
            "{said:?}"
        );
        assert!(!cfg.out.join("out_of_fold.csv").exists());
    }
}
