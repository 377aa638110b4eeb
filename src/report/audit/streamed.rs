//! The approximate audit, for a cache over the memory budget or past
//! [`super::EXACT_MAX_ROWS`] photos. The features are read twice, block by block, and never held
//! whole; what stays in memory is the photos' projections ([`approx::DIM`] values each), the fold
//! heads' training sample and the rows of candidate pairs.
//!
//! 1. **First read.** Each block is pooled and projected ([`approx::Projection`]). The rows of a
//!    seeded, stratified sample of the photos are kept: the folds' training rows.
//! 2. **Search.** Inverted lists over the projections ([`approx::search`]) give each photo's
//!    nearest-neighbour distance and the candidate pairs: those estimated within [`MARGIN`] of
//!    the `near` threshold. The projections are then freed.
//! 3. **Fold heads.** Head `f` is fitted on the sample's rows outside fold `f` (about
//!    [`MAX_FOLD_ROWS`] of them), as the exact audit fits each fold on at most that many.
//! 4. **Second read.** Each photo is scored by its own fold's head (out-of-fold probabilities), and
//!    the pooled features of the candidate pairs' photos are kept, so that each pair's cosine is
//!    computed exactly and kept only at or above `near`.

use std::collections::HashMap;

use ndarray::{Array2, Axis};

use super::approx::{self, Projection, DIM};
use super::near::{self, Neighbours};
use super::{fits_need, for_each_pooled, too_many_pairs, AuditConfig, Photos, MAX_FOLD_ROWS};
use crate::cache::FeatureCache;
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};
use crate::head::file::probabilities_from_logits;
use crate::head::logistic::fit_logistic;
use crate::head::net::Network;
use crate::head::validation::stratified_sample;
use crate::report::evaluate::BLOCK_BYTES;
use crate::util::limits::size_text;

/// How far below `near` an estimated cosine still makes a candidate pair (the projection's error
/// at a cosine of 0.9 is about 0.01; five times that).
pub const MARGIN: f32 = 0.05;

/// Out-of-fold probabilities (none without `folds`) and neighbours, reading the cache block by
/// block; refused when even this is over `budget` bytes.
pub(super) fn audit(
    cfg: &AuditConfig,
    cache: &FeatureCache,
    ph: &Photos,
    folds: Option<(&[usize], usize)>,
    budget: u64,
    rep: &dyn Reporter,
) -> Result<(Option<Array2<f32>>, Neighbours)> {
    let meta = &cache.meta;
    let (n, classes) = (ph.labels.len(), meta.classes.len());
    let width = cfg.pool.output_dim(&meta.feature_shape, &meta.layout)?;
    let sample = match folds {
        Some((fold, k)) => fold_sample(&ph.labels, classes, (fold, k), MAX_FOLD_ROWS, cfg.seed),
        None => Vec::new(),
    };
    let held = check_budget(cfg, cache, ph, (sample.len(), width), budget)?;

    // 1. First read: projections and the sample's rows.
    let proj = Projection::new(width, cfg.seed);
    let mut z = Array2::<f32>::zeros((n, DIM));
    let mut sampled = Gather::new(&sample, width);
    reading(rep, "features", n, |advance| {
        for_each_pooled(cache, ph, cfg.pool, |at, p| {
            let k = p.nrows();
            z.slice_mut(ndarray::s![at..at + k, ..])
                .assign(&proj.apply(p.view()));
            sampled.take(at, &p);
            advance(k);
            Ok(())
        })
    })?;

    // 2. The search over the projections.
    rep.report(Event::Detail(&format!(
        "neighbours: {n} photos projected to {DIM} dimensions, searched through inverted lists"
    )));
    let lists = approx::lists(&z, cfg.seed);
    let found = approx::search(&z, &lists, cfg.near - MARGIN, 5, near::MAX_PAIRS)
        .map_err(|_| too_many_pairs(cfg, n))?;
    drop((z, lists));
    // The candidates' photos, whose features the second read keeps.
    let mut rows: Vec<usize> = found.pairs.iter().flat_map(|p| [p.0, p.1]).collect();
    rows.sort_unstable();
    rows.dedup();
    let kept_bytes = (rows.len() * width * 4) as u64;
    if held + kept_bytes > budget {
        return Err(Error::invalid(
            "memory",
            format!(
                "{}: the {} photos of the near-duplicate candidates at a cosine of {} hold {} more, over the budget of {}; give a larger --memory or a higher --near",
                cfg.features.display(),
                rows.len(),
                cfg.near,
                size_text(kept_bytes),
                size_text(budget)
            ),
        ));
    }
    let slot: HashMap<usize, usize> = rows.iter().enumerate().map(|(s, &i)| (i, s)).collect();

    // 3. The fold heads, once the projections are freed.
    let heads = fold_heads(&sampled.rows, &sample, &ph.labels, classes, folds)?;
    drop(sampled);

    // 4. Second read: out-of-fold probabilities and the candidates' features.
    let mut probs = folds.map(|_| Array2::<f32>::zeros((n, classes)));
    let mut kept = Gather::new(&rows, width);
    reading(rep, "folds", n, |advance| {
        for_each_pooled(cache, ph, cfg.pool, |at, p| {
            let k = p.nrows();
            if let (Some(probs), Some((fold, _))) = (probs.as_mut(), folds) {
                for (f, head) in heads.iter().enumerate() {
                    let idx: Vec<usize> = (0..k).filter(|&r| fold[at + r] == f).collect();
                    if idx.is_empty() {
                        continue;
                    }
                    let pr = probabilities_from_logits(&head.logits(&p.select(Axis(0), &idx)));
                    for (r, &i) in idx.iter().enumerate() {
                        probs.row_mut(at + i).assign(&pr.row(r));
                    }
                }
            }
            kept.take(at, &p);
            advance(k);
            Ok(())
        })
    })?;
    let mut kept = kept.rows;
    near::normalise_rows(&mut kept);
    let pairs = found
        .pairs
        .iter()
        .filter_map(|&(i, j, _)| {
            let c = kept.row(slot[&i]).dot(&kept.row(slot[&j]));
            (c >= cfg.near).then_some((i, j, c))
        })
        .collect();
    Ok((
        probs,
        Neighbours {
            pairs,
            knn_distance: found.knn_distance,
        },
    ))
}

/// Bytes the approximate audit holds throughout (refused when its peak is over `budget`): the
/// photos' names, folds and probabilities, their neighbour distances and list members, the
/// sample's rows and a block as read and pooled. On top come the projections (and the search's
/// products, a list against its probes on each thread) or, after them, the fits.
fn check_budget(
    cfg: &AuditConfig,
    cache: &FeatureCache,
    ph: &Photos,
    (sample, width): (usize, usize),
    budget: u64,
) -> Result<u64> {
    let meta = &cache.meta;
    let (n, classes) = (ph.labels.len(), meta.classes.len());
    let names: usize = ph
        .names
        .iter()
        .map(|(a, b)| 48 + a.capacity() + b.capacity())
        .sum();
    let per_photo = 8 + 4 * classes + 4 + 8;
    let block = (meta.feature_shape.iter().product::<usize>() * n * 4).min(BLOCK_BYTES) as u64;
    let held = (names + n * per_photo + sample * width * 4) as u64 + 2 * block;
    let search = approx::search_bytes(n) * rayon::current_num_threads() as u64;
    let need = held + ((n * DIM * 4) as u64 + search).max(fits_need(sample, width));
    if need > budget {
        return Err(Error::invalid(
            "memory",
            format!(
                "{}: an approximate audit of {n} photos x {width} features holds about {} in memory, over the budget of {}; give a larger --memory",
                cfg.features.display(),
                size_text(need),
                size_text(budget)
            ),
        ));
    }
    Ok(held)
}

/// Head `f` of each fold, fitted on the rows `xs` of `sample` outside fold `f`, the folds' fits
/// side by side (as in the exact audit); none without folds.
fn fold_heads(
    xs: &Array2<f32>,
    sample: &[usize],
    labels: &[u32],
    classes: usize,
    folds: Option<(&[usize], usize)>,
) -> Result<Vec<Network>> {
    let Some((fold, k)) = folds else {
        return Ok(Vec::new());
    };
    let ys: Vec<u32> = sample.iter().map(|&i| labels[i]).collect();
    use rayon::prelude::*;
    (0..k)
        .into_par_iter()
        .map(|f| {
            let train: Vec<usize> = (0..sample.len())
                .filter(|&p| fold[sample[p]] != f)
                .collect();
            fit_logistic(xs, &ys, &train, classes, 1.0, 100)
        })
        .collect()
}

/// The fold heads' training sample: about `per_fold · k / (k - 1)` rows (so that each head
/// trains on about `per_fold` of the other folds'), ascending, stratified by class and fold, so
/// that every fold's head sees every class however rare: each (class, fold) cell with photos
/// keeps one at the least.
pub(super) fn fold_sample(
    labels: &[u32],
    classes: usize,
    (fold, k): (&[usize], usize),
    per_fold: usize,
    seed: u64,
) -> Vec<usize> {
    let rows = per_fold * k / (k - 1) + 1;
    let cell: Vec<u32> = (0..labels.len())
        .map(|i| (labels[i] as usize * k + fold[i]) as u32)
        .collect();
    stratified_sample(
        (0..labels.len()).collect(),
        &cell,
        classes * k,
        rows,
        seed ^ 0x5a3,
    )
}

/// The rows `wanted` (ascending) of the photos, collected as their blocks are read.
struct Gather<'a> {
    wanted: &'a [usize],
    next: usize,
    rows: Array2<f32>,
}

impl<'a> Gather<'a> {
    fn new(wanted: &'a [usize], width: usize) -> Self {
        Gather {
            wanted,
            next: 0,
            rows: Array2::zeros((wanted.len(), width)),
        }
    }

    /// Takes the wanted rows of the block of photos `at..` (`p`).
    fn take(&mut self, at: usize, p: &Array2<f32>) {
        while self.next < self.wanted.len() && self.wanted[self.next] < at + p.nrows() {
            let i = self.wanted[self.next];
            self.rows.row_mut(self.next).assign(&p.row(i - at));
            self.next += 1;
        }
    }
}

/// A counted read of `n` photos: `read(advance)`, with `advance(k)` after each block.
fn reading(
    rep: &dyn Reporter,
    task: &str,
    n: usize,
    read: impl FnOnce(&mut dyn FnMut(usize)) -> Result<()>,
) -> Result<()> {
    rep.report(Event::Start {
        task,
        total: n as u64,
        done: 0,
    });
    read(&mut |k| rep.report(Event::Advance(k as u64)))?;
    rep.report(Event::Finish);
    Ok(())
}
