//! Out-of-fold probabilities, the label check's first step: stratified folds, and per fold a
//! logistic head fitted on the other folds (at most [`MAX_FOLD_ROWS`] rows) that scores it.

use ndarray::{Array2, Axis};

use super::AuditConfig;
use crate::error::Result;
use crate::events::{Event, Reporter};
use crate::head::file::probabilities_from_logits;
use crate::head::logistic::fit_logistic;
use crate::head::validation::stratified_sample;
use crate::util::rng::Rng;

/// Stratified fold of each row: each class shuffled (seeded) and dealt round-robin.
pub fn folds_of(labels: &[u32], classes: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0; labels.len()];
    let mut rng = Rng(seed ^ 0xa0d1);
    let mut next = 0;
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        rng.shuffle(&mut idx);
        for i in idx {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

/// The most rows a fold's head trains on: on a larger cache each fold trains on a seeded,
/// stratified sample of this many of the other folds' rows (every row is still scored out of
/// fold). It keeps the audit of 100,000 photos to minutes on 2 cores, where a full fit per fold took
/// 2-5 minutes (the logistic fit grows with the rows; the ranking needs no more).
pub const MAX_FOLD_ROWS: usize = 20_000;

/// `train` cut to about [`MAX_FOLD_ROWS`] ([`stratified_sample`]).
pub(super) fn capped(train: Vec<usize>, labels: &[u32], classes: usize, seed: u64) -> Vec<usize> {
    stratified_sample(train, labels, classes, MAX_FOLD_ROWS, seed)
}

/// Out-of-fold class probabilities: row i's come from a head fitted on the other folds only
/// (at most [`MAX_FOLD_ROWS`] of them).
pub fn out_of_fold(
    x: &Array2<f32>,
    labels: &[u32],
    classes: usize,
    fold: &[usize],
    k: usize,
    rep: &dyn Reporter,
) -> Result<Array2<f32>> {
    let mut probs = Array2::<f32>::zeros((x.nrows(), classes));
    rep.report(Event::Start {
        task: "folds",
        total: k as u64,
        done: 0,
    });
    // The folds' fits run side by side (each is one thread of linfa's L-BFGS).
    use rayon::prelude::*;
    let scored: Vec<(Vec<usize>, Array2<f32>)> = (0..k)
        .into_par_iter()
        .map(|f| {
            let (held, train): (Vec<usize>, Vec<usize>) =
                (0..x.nrows()).partition(|&i| fold[i] == f);
            if held.is_empty() {
                return Ok((held, Array2::zeros((0, classes))));
            }
            let train = capped(train, labels, classes, 0x0f01d ^ f as u64);
            let net = fit_logistic(x, labels, &train, classes, 1.0, 100)?;
            let p = probabilities_from_logits(&net.logits(&x.select(Axis(0), &held)));
            rep.report(Event::Advance(1));
            Ok((held, p))
        })
        .collect::<Result<_>>()?;
    for (held, p) in scored {
        for (r, &i) in held.iter().enumerate() {
            probs.row_mut(i).assign(&p.row(r));
        }
    }
    rep.report(Event::Finish);
    Ok(probs)
}

/// Folds of the out-of-fold probabilities: `cfg.folds` (default 5), no more than the smallest
/// class has photos, and at least 2.
pub(super) fn fold_count(cfg: &AuditConfig, labels: &[u32], classes: usize) -> usize {
    let smallest = (0..classes)
        .map(|c| labels.iter().filter(|&&l| l as usize == c).count())
        .filter(|&k| k > 0)
        .min()
        .unwrap_or(0);
    cfg.folds.unwrap_or(5).min(smallest.max(2))
}
