//! Tests of [`super`] (fit.rs).

use super::*;
use crate::head::net::parse_spec;

fn blobs(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = Rng(seed);
    let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        rng.normal()
            + if j % classes == y[i] as usize {
                2.0
            } else {
                0.0
            }
    });
    (x, y)
}

#[test]
fn stratified_split_keeps_class_fractions() {
    let labels: Vec<u32> = (0..100).map(|i| (i < 30) as u32).collect();
    let (t, v) = stratified_split(&labels, 0.2, 1);
    assert_eq!(v.len(), 20);
    assert_eq!(v.iter().filter(|&&i| labels[i] == 1).count(), 6);
    let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(stratified_split(&labels, 0.2, 1), (t, v.clone()));
    assert_ne!(stratified_split(&labels, 0.2, 2).1, v);
}

#[test]
fn schedules_hit_their_endpoints() {
    assert_eq!(Schedule::Constant.lr(0.1, 5, 10), 0.1);
    let s = Schedule::Step {
        every: 2,
        gamma: 0.5,
    };
    assert_eq!(
        (s.lr(1.0, 1, 9), s.lr(1.0, 2, 9), s.lr(1.0, 5, 9)),
        (1.0, 0.5, 0.25)
    );
    let c = Schedule::Cosine { min_lr: 0.0 };
    assert_eq!(c.lr(1.0, 0, 10), 1.0);
    assert!((c.lr(1.0, 5, 10) - 0.5).abs() < 1e-12);
}

#[test]
fn clipping_by_value_and_norm() {
    let mut g = vec![vec![3.0, -4.0], vec![0.0]];
    clip(&mut g, None, Some(1.0));
    assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[0][1] + 0.8).abs() < 1e-6);
    let mut g = vec![vec![3.0, -4.0, 0.5]];
    clip(&mut g, Some(1.0), None);
    assert_eq!(g[0], vec![1.0, -1.0, 0.5]);
}

#[test]
fn every_optimizer_and_loss_learns_separable_blobs() {
    let (x, y) = blobs(300, 6, 3, 1);
    let (train, val) = stratified_split(&y, 0.2, 0);
    let kinds = [
        (
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
                decay: 0.01,
            },
            0.05,
        ),
        (OptimizerKind::Adam, 1e-2),
        (OptimizerKind::AdamW, 1e-2),
        (OptimizerKind::RmsProp, 1e-2),
    ];
    let losses = [
        Loss::CrossEntropy { smoothing: 0.1 },
        Loss::Focal {
            gamma: 2.0,
            alpha: 0.25,
        },
        Loss::Hinge,
        Loss::SquaredHinge,
        Loss::Mse,
    ];
    for (kind, lr) in kinds {
        for loss in losses {
            let cfg = TrainConfig {
                spec: parse_spec("dense:16:relu,bn,dropout:0.1").unwrap(),
                loss,
                optimizer: OptimizerSpec {
                    kind,
                    lr,
                    weight_decay: 1e-4,
                },
                epochs: 15,
                batch_size: 16,
                ..TrainConfig::default()
            };
            let data = TrainData {
                x: &x,
                y: Labels::Classes(&y),
                train: train.clone(),
                val: Some((&x, Labels::Classes(&y), val.clone())),
                classes: 3,
            };
            let (_, h) = fit(&cfg, &data, |_| {}).unwrap();
            let last = h.epochs.last().unwrap();
            assert!(
                last.val_accuracy.unwrap() > 0.9,
                "{kind:?} {loss:?}: {last:?}"
            );
            assert!(
                last.loss < h.epochs[0].loss,
                "{kind:?} {loss:?} did not lower the loss"
            );
        }
    }
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    let (x, y) = blobs(200, 4, 2, 3);
    let (train, val) = stratified_split(&y, 0.3, 0);
    let cfg = TrainConfig {
        spec: parse_spec("dense:8:relu").unwrap(),
        optimizer: OptimizerSpec {
            kind: OptimizerKind::Adam,
            lr: 0.05,
            weight_decay: 0.0,
        },
        epochs: 200,
        early_stopping: Some(EarlyStopping {
            patience: 3,
            min_delta: 0.0,
        }),
        restore_best: true,
        ..TrainConfig::default()
    };
    let data = TrainData {
        x: &x,
        y: Labels::Classes(&y),
        train,
        val: Some((&x, Labels::Classes(&y), val.clone())),
        classes: 2,
    };
    let (net, h) = fit(&cfg, &data, |_| {}).unwrap();
    assert!(h.stopped_early && h.epochs.len() < 200);
    let best = h
        .epochs
        .iter()
        .map(|r| r.val_loss.unwrap())
        .fold(f64::INFINITY, f64::min);
    let kept = &h.epochs[h.kept_epoch - 1];
    assert_eq!(kept.val_loss.unwrap(), best);
    assert_eq!(h.epochs.len(), h.kept_epoch + 4);
    let (l, _) = evaluate_rows(&net, &cfg.loss, &x, Labels::Classes(&y), &val);
    assert!(
        (l - best).abs() < 1e-9,
        "restored weights give val_loss {l}, best {best}"
    );
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let (x, y) = blobs(120, 5, 2, 4);
    let run = |seed| {
        let cfg = TrainConfig {
            seed,
            epochs: 3,
            ..TrainConfig::default()
        };
        let data = TrainData {
            x: &x,
            y: Labels::Classes(&y),
            train: (0..120).collect(),
            val: None,
            classes: 2,
        };
        fit(&cfg, &data, |_| {}).unwrap().0
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// The fused first-layer step trains the same network as the plain three-pass step (up to
/// rounding: fused multiply-add), for every optimizer and with global-norm clipping; its thread
/// count changes nothing.
#[test]
fn fused_and_plain_steps_agree_and_threads_do_not_matter() {
    let (x, y) = blobs(90, 70, 3, 5);
    let kinds = [
        OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
            decay: 0.0,
        },
        OptimizerKind::Adam,
        OptimizerKind::RmsProp,
    ];
    for kind in kinds {
        let run = |fused: bool, threads: usize| {
            let cfg = TrainConfig {
                spec: parse_spec("dense:40:relu,dropout:0.5,dense:8:tanh").unwrap(),
                optimizer: OptimizerSpec {
                    kind,
                    lr: 1e-3,
                    weight_decay: 1e-3,
                },
                epochs: 3,
                batch_size: 7,
                clip_norm: Some(0.5),
                fused,
                threads,
                ..TrainConfig::default()
            };
            let data = TrainData {
                x: &x,
                y: Labels::Classes(&y),
                train: (0..90).collect(),
                val: None,
                classes: 3,
            };
            fit(&cfg, &data, |_| {}).unwrap().0
        };
        let (plain, fused1, fused2) = (run(false, 1), run(true, 1), run(true, 2));
        assert_eq!(fused1, fused2, "{kind:?}: thread count changed the weights");
        for (a, b) in plain.params().iter().zip(fused1.params()) {
            for (u, v) in a.iter().zip(b) {
                assert!(
                    (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                    "{kind:?}: plain {u} fused {v}"
                );
            }
        }
    }
}

#[test]
fn bad_hyperparameters_are_refused_before_training() {
    let mut cfg = TrainConfig {
        epochs: 0,
        ..TrainConfig::default()
    };
    // The setting is named (typed), so the binary can show its flag.
    match cfg.validate(true).unwrap_err() {
        crate::Error::Invalid { what, msg } => {
            assert_eq!(what, "epochs");
            assert!(msg.contains("at least 1"), "{msg}");
        }
        e => panic!("not a typed setting error: {e}"),
    }
    cfg.epochs = 1;
    cfg.schedule = Schedule::Step {
        every: 0,
        gamma: 0.5,
    };
    let e = cfg.validate(true).unwrap_err().to_string();
    assert!(e.contains("step_every"), "{e}");
    cfg.schedule = Schedule::Constant;
    cfg.early_stopping = Some(EarlyStopping {
        patience: 1,
        min_delta: 0.0,
    });
    assert!(cfg
        .validate(false)
        .unwrap_err()
        .to_string()
        .contains("validation"));
}
