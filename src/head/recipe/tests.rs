//! Tests of [`super`] (recipe.rs).

use super::*;
use crate::head::net::Dense;

/// Tiny data trains for at least 600 steps, ordinary data for 40 epochs, wide data for 20.
#[test]
fn training_length_follows_rows_and_width() {
    assert_eq!(schedule(40, 1280), (300, 30));
    assert_eq!(schedule(1600, 1280), (MAX_EPOCHS, PATIENCE));
    assert_eq!(schedule(2000, 25088), (WIDE_MAX_EPOCHS, PATIENCE));
    assert_eq!(schedule(1, 8), (400, 60));
}

fn scored(name: &'static str, val_accuracy: f64, val_loss: f64) -> Scored {
    Scored {
        candidate: Candidate {
            name,
            spec: "none",
            solver: Solver::Adam {
                lr: 1e-3,
                weight_decay: 0.0,
            },
        },
        val_loss,
        val_accuracy,
        epochs: 1,
    }
}

/// `n` rows, all correct but those in `wrong`.
fn rows(n: usize, wrong: &[usize]) -> Vec<bool> {
    (0..n).map(|i| !wrong.contains(&i)).collect()
}

/// The baseline stays unless a candidate beats it by more than one standard error of the paired
/// differences. By hand, 100 rows: one more right, none worse: mean 0.01, sample variance
/// (0.99^2 + 99 * 0.01^2) / 99 = 0.01, standard error 0.01, not above it. Three more right:
/// mean 0.03, variance (3 * 0.97^2 + 97 * 0.03^2) / 99 = 0.029394, standard error 0.017145.
#[test]
fn the_baseline_is_replaced_only_by_a_clear_gain() {
    let base = rows(100, &[1, 2, 3, 4]);
    let one = rows(100, &[2, 3, 4]);
    let three = rows(100, &[4]);
    let traded = rows(100, &[10, 11, 12, 13, 14, 4]); // 3 fixed, 5 broken
    let s = [
        scored(BASELINE, 0.96, 0.2),
        scored("one", 0.97, 0.1),
        scored("three", 0.99, 0.3),
    ];
    let (i, why) = choose(&s, &[base.clone(), one.clone(), three.clone()], Some(0));
    assert_eq!(i, 2, "{why}");
    assert!(why.contains("+0.0300") && why.contains("0.0171"), "{why}");
    let (i, why) = choose(&s[..2], &[base.clone(), one.clone()], Some(0));
    assert_eq!(i, 0, "{why}");
    assert!(why.contains("no candidate"), "{why}");
    let t = [scored(BASELINE, 0.96, 0.2), scored("traded", 0.94, 0.1)];
    assert_eq!(choose(&t, &[base.clone(), traded], Some(0)).0, 0);
    // Two clear gains: the higher accuracy; equal accuracy: the lower loss.
    let s2 = [
        scored(BASELINE, 0.96, 0.2),
        scored("a", 0.99, 0.3),
        scored("b", 0.99, 0.1),
    ];
    let c = [base.clone(), three.clone(), three.clone()];
    assert_eq!(choose(&s2, &c, Some(0)).0, 2);
    // No baseline (wide data): the highest accuracy, then the lowest loss.
    assert_eq!(choose(&s, &[base, one, three], None).0, 2);
    assert_eq!(choose(&s2[1..], &c[1..], None).0, 1);
}

/// The baseline leads the candidates when it is in.
#[test]
fn the_baseline_leads_the_candidates_when_asked_for() {
    let names = |w| candidates(w).iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(true)[0], BASELINE);
    assert_eq!(names(true).len(), 5);
    assert!(!names(false).contains(&BASELINE));
    assert_eq!(names(false).len(), 4);
}

/// A network on standardised inputs and its folded version give the same logits.
#[test]
fn folded_standardisation_equals_standardising_the_input() {
    let mut rng = Rng(3);
    let (n, d, u) = (5, 4, 3);
    let x = Array2::from_shape_fn((n, d), |_| rng.normal() * 3.0 + 1.5);
    let mean = Array1::from_shape_fn(d, |_| rng.normal());
    let std = Array1::from_shape_fn(d, |_| 0.5 + rng.uniform() as f32);
    let dense = Dense {
        w: Array2::from_shape_fn((d, u), |_| rng.normal()),
        b: Array1::from_shape_fn(u, |_| rng.normal()),
    };
    let want = dense.apply(((&x - &mean) / &std).view());
    let mut net = Network {
        layers: vec![Layer::Dense(dense)],
    };
    fold_standardization(&mut net, &mean, &std).unwrap();
    let Layer::Dense(folded) = &net.layers[0] else {
        unreachable!()
    };
    let got = folded.apply(x.view());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

/// The pool built in the rows' own memory (owned rows, sorted train rows) equals the one built
/// as a copy, with a separate validation matrix and augmented copies; unsorted train rows fall
/// back to the copy.
#[test]
fn a_pool_built_in_place_equals_the_copy() {
    let mut rng = Rng(3);
    let x = Array2::from_shape_fn((9, 4), |_| rng.normal());
    let flip = Array2::from_shape_fn((9, 4), |_| rng.normal());
    let vx = Array2::from_shape_fn((3, 4), |_| rng.normal());
    let y: Vec<u32> = (0..9).map(|i| i % 2).collect();
    let vy = vec![0, 1, 1];
    let extra = [flip];
    for train in [vec![0, 2, 3, 5, 8], vec![1, 0, 4]] {
        let data = AutoData {
            x: Cow::Borrowed(&x),
            y: &y,
            train: &train,
            val: Some((&vx, &vy, &[2, 0])),
            extra: &extra,
            classes: 2,
            seed: 1,
            threads: 1,
        };
        let copy = Pool::new(Cow::Borrowed(&x), &data);
        let moved = Pool::new(Cow::Owned(x.clone()), &data);
        assert_eq!(copy.x, moved.x, "{train:?}");
        assert_eq!((copy.y, copy.n), (moved.y, moved.n));
        assert_eq!(copy.x.nrows(), train.len() * 2 + 2);
    }
}
